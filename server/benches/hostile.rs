//! What requests a careless or hostile client holding a valid token can send cost flagstaffd:
//! `cargo bench -p flagstaff-server --bench hostile`.
//!
//! An in-process server on loopback with a temporary data directory. Reported:
//! - ListFlags with page_size 1000 after one Apply of 5,000 flags (each with ten rules, so the
//!   Apply's audit entry is megabytes): the time of each of the first five pages.
//! - CreateFlag of one 3.7 KB flag with 100 conditions `matches "(?:\w{60}){3}"`: the time to
//!   the answer, the answer's code, and the process's resident memory before and after.
//! - Evaluate of every flag of a small environment for a context of 1,000 attributes (the
//!   limit), and the answer to one of 100,000 attributes.

use std::time::Instant;

use flagstaff_proto::pb;
use flagstaff_proto::pb::admin_client::AdminClient;
use flagstaff_server::{Config, Server};
use serde_json::json;
use tonic::transport::Channel;
use tonic::Request;

fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

fn flag(document: serde_json::Value) -> pb::Flag {
    pb::Flag::from(&flagstaff_engine::flag_from_value(&document).expect("flag"))
}

/// A boolean flag with ten rules on `country`.
fn ruled(key: &str) -> pb::Flag {
    let rules: Vec<_> = (0..10)
        .map(|i| {
            json!({"id": format!("r{i}"), "serve": {"variant": "on"},
                   "conditions": [{"attribute": "country", "op": "in",
                                   "values": ["NL", "DE", "FR", format!("C{i}")]}]})
        })
        .collect();
    flag(json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "off"}, "rules": rules,
    }))
}

/// The process's resident memory, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn context(attributes: usize) -> pb::Context {
    pb::Context {
        key: "user-1".into(),
        attributes: (0..attributes)
            .map(|i| pb::Attribute {
                name: format!("attribute-{i}"),
                value: Some(pb::AttributeValue {
                    value: Some(pb::attribute_value::Value::StringValue(format!("v{i}"))),
                }),
            })
            .collect(),
    }
}

async fn environment(client: &mut AdminClient<Channel>, token: &str, name: &str) {
    client
        .create_environment(authorized(
            pb::CreateEnvironmentRequest {
                environment: name.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("environment");
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("data dir");
    let server = Server::open(&Config::new(dir.path())).expect("server");
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .expect("token")
        .trim()
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let mut client = AdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);

    // ListFlags after a large import.
    environment(&mut client, &token, "imported").await;
    let flags: Vec<pb::Flag> = (0..5000).map(|i| ruled(&format!("flag-{i:04}"))).collect();
    let start = Instant::now();
    client
        .apply(authorized(
            pb::ApplyRequest {
                environment: "imported".into(),
                source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                    flags,
                    segments: vec![],
                })),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("import");
    println!("apply of 5,000 flags            {:>10.1?}", start.elapsed());
    let mut page_token = String::new();
    for page in 1..=5 {
        let start = Instant::now();
        let listed = client
            .list_flags(authorized(
                pb::ListFlagsRequest {
                    environment: "imported".into(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("listed")
            .into_inner();
        println!(
            "list_flags page {page} ({} flags)      {:>10.1?}",
            listed.flags.len(),
            start.elapsed()
        );
        page_token = listed.next_page_token;
    }

    // Regex compile amplification.
    environment(&mut client, &token, "regexes").await;
    let conditions: Vec<_> = (0..100)
        .map(|_| json!({"attribute": "a", "op": "matches", "values": ["(?:\\w{60}){3}"]}))
        .collect();
    let amplifying = flag(json!({
        "key": "regexes", "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "off"},
        "rules": [{"id": "r", "conditions": conditions, "serve": {"variant": "on"}}],
    }));
    let before = rss_mib();
    let start = Instant::now();
    let answer = client
        .create_flag(authorized(
            pb::CreateFlagRequest {
                environment: "regexes".into(),
                flag: Some(amplifying),
                ..Default::default()
            },
            &token,
        ))
        .await;
    println!(
        "create of 100 x (?:\\w{{60}}){{3}}   {:>10.1?}  {:?}  rss {before:.0} -> {:.0} MiB",
        start.elapsed(),
        answer.map(|_| tonic::Code::Ok).unwrap_or_else(|s| s.code()),
        rss_mib()
    );

    // Wide contexts.
    environment(&mut client, &token, "small").await;
    for i in 0..20 {
        client
            .create_flag(authorized(
                pb::CreateFlagRequest {
                    environment: "small".into(),
                    flag: Some(ruled(&format!("flag-{i}"))),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("flag");
    }
    for attributes in [1_000, 100_000] {
        let start = Instant::now();
        let answer = client
            .evaluate(authorized(
                pb::EvaluateRequest {
                    environment: "small".into(),
                    flag: String::new(),
                    context: Some(context(attributes)),
                },
                &token,
            ))
            .await;
        println!(
            "evaluate, {attributes:>7} attributes  {:>10.1?}  {:?}",
            start.elapsed(),
            answer.map(|_| tonic::Code::Ok).unwrap_or_else(|s| s.code()),
        );
    }

    let _ = stop.send(());
    serving.await.expect("server task").expect("served");
}
