//! The web console's pages, served and weighed: `cargo bench -p flagstaff-tests --bench console`.
//!
//! An in-process flagstaffd on loopback (sled in a temporary directory) holds an environment
//! of 10,000 flags, each with a description, two tags and an owner, and one flag with 50
//! rules of three conditions each and ten changes in its history. Signed in with an admin
//! token, a client asks for each page 200 times, one request at a time, over a kept-alive
//! HTTP/1.1 connection; reported are the round trip's p50 and p99 (which bound the server's
//! time: loopback and the client add tens of microseconds) and the page's weight in bytes as
//! sent (the console sends pages uncompressed).

use std::time::{Duration, Instant};

use flagstaff_proto::pb;
use flagstaff_tests::TestServer;
use reqwest::header::{LOCATION, SET_COOKIE};

// Only the percentiles are used here.
#[allow(dead_code)]
mod common;
use common::percentiles;

/// Flags in the environment.
const FLAGS: usize = 10_000;
/// Requests per page.
const REQUESTS: usize = 200;
/// Rules of the big flag.
const RULES: usize = 50;

/// A flag of the list: described, tagged and owned, as flags in real use are.
fn listed_flag(i: usize) -> pb::Flag {
    let flag = flagstaff_engine::flag_from_value(&serde_json::json!({
        "key": format!("team-{:02}-feature-{i:05}", i % 40),
        "description": format!("Feature {i} of team {}: a sentence or two of what it is for", i % 40),
        "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": !i.is_multiple_of(3),
        "tags": [format!("team-{:02}", i % 40), if i.is_multiple_of(2) { "web" } else { "mobile" }],
        "owner": format!("owner-{}@example.com", i % 40),
        "temporary": i.is_multiple_of(4),
        "default": if i.is_multiple_of(5) {
            serde_json::json!({"split": {"bucket_by": "key", "weights": [
                {"variant": "on", "weight": 10_000}, {"variant": "off", "weight": 90_000}]}})
        } else {
            serde_json::json!({"variant": "on"})
        },
    }))
    .expect("flag");
    pb::Flag::from(&flag)
}

/// The flag with [`RULES`] rules of three conditions each.
fn big_flag(enabled: bool) -> pb::Flag {
    let rules: Vec<serde_json::Value> = (0..RULES)
        .map(|r| {
            serde_json::json!({
                "id": format!("rule-{r}"),
                "conditions": [
                    {"attribute": "country", "op": "in",
                     "values": (0..20).map(|c| format!("C{r}-{c}")).collect::<Vec<_>>()},
                    {"attribute": "plan", "op": "in", "values": ["free"], "negate": true},
                    {"attribute": "version", "op": "semver_gt", "values": [format!("{r}.0.0")]},
                ],
                "serve": if r.is_multiple_of(2) {
                    serde_json::json!({"variant": "on"})
                } else {
                    serde_json::json!({"split": {"bucket_by": "key", "weights": [
                        {"variant": "on", "weight": 50_000}, {"variant": "off", "weight": 50_000}]}})
                },
            })
        })
        .collect();
    let flag = flagstaff_engine::flag_from_value(&serde_json::json!({
        "key": "big", "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": enabled, "rules": rules,
        "default": {"variant": "off"},
    }))
    .expect("flag");
    pb::Flag::from(&flag)
}

/// A signed-in browser's client and cookie.
struct Signed {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

/// The `name=value` of the cookie `name` that `response` sets.
fn cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .expect("the cookie")
        .to_owned()
}

/// `value` percent-encoded for a form body.
fn form_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn sign_in(server: &TestServer) -> Signed {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = format!("http://{}", server.addr);
    let form = client
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("form");
    let login = cookie(&form, "flagstaff_login");
    let body = form.text().await.expect("body");
    let at = body.find("name=\"csrf\" value=\"").expect("csrf") + 19;
    let csrf = &body[at..at + body[at..].find('"').expect("end")];
    let signed = client
        .post(format!("{base}/login"))
        .header("cookie", login)
        .header("origin", &base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "token={}&csrf={}",
            form_encoded(&server.admin_token),
            form_encoded(csrf)
        ))
        .send()
        .await
        .expect("signed in");
    assert_eq!(signed.headers()[LOCATION], "/envs");
    let cookie = cookie(&signed, "flagstaff_session");
    Signed {
        client,
        base,
        cookie,
    }
}

/// p50, p99 and the weight of `path`, asked for [`REQUESTS`] times.
async fn measure(signed: &Signed, path: &str, expect: &str) -> (Duration, Duration, usize) {
    let mut samples = Vec::with_capacity(REQUESTS);
    let mut bytes = 0;
    for _ in 0..REQUESTS {
        let started = Instant::now();
        let response = signed
            .client
            .get(format!("{}{path}", signed.base))
            .header("cookie", &signed.cookie)
            .send()
            .await
            .expect("page");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        samples.push(started.elapsed());
        assert!(status.is_success(), "{path}: {status}");
        bytes = body.len();
        assert!(
            String::from_utf8_lossy(&body).contains(expect),
            "{path} shows {expect:?}"
        );
    }
    let (p50, p99) = percentiles(samples);
    (p50, p99, bytes)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = TestServer::start().await;
        let mut admin = server.admin().await;
        admin
            .create_environment(pb::CreateEnvironmentRequest {
                environment: "bench".into(),
                protected: false,
            })
            .await
            .expect("environment");
        for chunk in (0..FLAGS).collect::<Vec<_>>().chunks(1_000) {
            admin
                .apply(pb::ApplyRequest {
                    environment: "bench".into(),
                    source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                        flags: chunk.iter().map(|&i| listed_flag(i)).collect(),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .await
                .expect("flags");
        }
        admin
            .create_flag(pb::CreateFlagRequest {
                environment: "bench".into(),
                flag: Some(big_flag(false)),
                ..Default::default()
            })
            .await
            .expect("big flag");
        for i in 0..10 {
            admin
                .set_flag_enabled(pb::SetFlagEnabledRequest {
                    environment: "bench".into(),
                    key: "big".into(),
                    enabled: i % 2 == 1,
                    ..Default::default()
                })
                .await
                .expect("flip");
        }
        let signed = sign_in(&server).await;
        println!(
            "console pages, {} flags, {REQUESTS} requests each (p50 / p99 round trip, weight):",
            FLAGS + 1
        );
        for (name, path, expect) in [
            ("flag list, page 1", "/envs/bench/flags", "of 10001 flags, page 1 of 201"),
            ("flag list, page 200", "/envs/bench/flags?page=200", "page 200 of 201"),
            ("flag list, search", "/envs/bench/flags?q=team-07", "250 of 10001 flags"),
            (
                "flag list, filtered",
                "/envs/bench/flags?state=off&temporary=1",
                "of 10001 flags",
            ),
            ("flag with 50 rules", "/envs/bench/flags/big", "rule-49"),
            (
                "flag with 50 rules, evaluated",
                "/envs/bench/flags/big?context=%7B%22targetingKey%22%3A%22u%22%2C%22country%22%3A%22C49-3%22%2C%22plan%22%3A%22pro%22%2C%22version%22%3A%2250.0.0%22%7D",
                "rule 50 (rule-49) matched",
            ),
            ("history, page 1", "/envs/bench/history", "Revision"),
            ("stale flags", "/envs/bench/stale", "flags are stale"),
        ] {
            let (p50, p99, bytes) = measure(&signed, path, expect).await;
            println!(
                "  {name:32} p50 {:>7.2} ms  p99 {:>7.2} ms  {:>7} bytes",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                bytes
            );
        }
    });
}
