//! A flag update's full round trip through flagstaffd, durable sync included:
//! `cargo bench -p flagstaff-server --bench rpc`.
//!
//! An in-process server on loopback with a temporary data directory holds one environment of
//! 1,000 flags; clients flip flags with `SetFlagEnabled` over gRPC. Reported: p50, p99 and
//! max for one client, and for 8 clients at once (each on its own connection and flag).

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstaff_proto::pb;
use flagstaff_proto::pb::admin_client::AdminClient;
use flagstaff_server::{Config, Server};
use tonic::transport::Channel;
use tonic::Request;

fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

fn flag(key: &str) -> pb::Flag {
    let flag = flagstaff_engine::flag_from_value(&serde_json::json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "on"},
    }))
    .expect("flag");
    pb::Flag::from(&flag)
}

async fn flips(
    mut client: AdminClient<Channel>,
    token: Arc<String>,
    key: String,
    n: usize,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let request = pb::SetFlagEnabledRequest {
            environment: "bench".into(),
            key: key.clone(),
            enabled: i % 2 == 1,
            ..Default::default()
        };
        let start = Instant::now();
        client
            .set_flag_enabled(authorized(request, &token))
            .await
            .expect("flip");
        samples.push(start.elapsed());
    }
    samples
}

fn report(name: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<22} n={:<5} p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  {:>6.0} writes/s",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        samples.len() as f64 / wall.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("data dir");
    let server = Server::open(&Config::new(dir.path())).expect("server");
    let token = Arc::new(
        std::fs::read_to_string(dir.path().join("admin.token"))
            .expect("token")
            .trim()
            .to_owned(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    let connect = || AdminClient::connect(format!("http://{addr}"));
    let mut client = connect().await.expect("connect");
    client
        .create_environment(authorized(
            pb::CreateEnvironmentRequest {
                environment: "bench".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("environment");
    let flags = (0..1000).map(|i| flag(&format!("flag-{i:04}"))).collect();
    let apply = pb::ApplyRequest {
        environment: "bench".into(),
        source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
            flags,
            segments: vec![],
        })),
        ..Default::default()
    };
    client
        .apply(authorized(apply, &token))
        .await
        .expect("seed 1,000 flags");

    let start = Instant::now();
    let samples = flips(client.clone(), token.clone(), "flag-0000".into(), 500).await;
    report("1 client", samples, start.elapsed());

    let start = Instant::now();
    let mut clients = Vec::new();
    for c in 0..8 {
        let client = connect().await.expect("connect");
        clients.push(tokio::spawn(flips(
            client,
            token.clone(),
            format!("flag-{:04}", c + 1),
            100,
        )));
    }
    let mut samples = Vec::new();
    for c in clients {
        samples.extend(c.await.expect("client"));
    }
    report("8 clients at once", samples, start.elapsed());

    let _ = stop.send(());
    serving.await.expect("server task").expect("served");
}
