//! An SDK client given several endpoints moves to the next when the one it streams from stops,
//! refuses connections or stalls, and resumes there from the epoch and revision it holds
//! (DESIGN.md section 7). On PostgreSQL the two servers are replicas on one database, so the
//! client resumes without a snapshot. On sled each server has a store of its own, restored
//! from a backup of the other's so that both know the client's sdk key: the epochs differ,
//! and the client takes one snapshot from the server it moves to.

use std::time::{Duration, Instant};

use flagstaff::{Client, Context};
use flagstaff_server::backup;
use flagstaff_server::storage::SledStore;
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::proxy::{FaultProxy, Mode};
use flagstaff_tests::{eventually, store_kind, StoreKind, TestServer, TestTls, PATIENCE};

use crate::fixtures::{
    boolean_flag, create_environment, create_flag, sdk_builder, sdk_token, serve_on,
};

/// The servers' heartbeat interval: a stream silent for three of them is stalled.
const HEARTBEAT: Duration = Duration::from_millis(200);

/// Two servers serving `production` with `checkout` (off) to the same sdk key.
struct Pair {
    first: TestServer,
    second: TestServer,
    sdk: String,
    /// Replicas on one PostgreSQL database, sharing epochs and revisions; on sled, two stores
    /// with the same documents and tokens, under different epochs.
    shared: bool,
}

impl Pair {
    /// The full snapshots a client that failed over once has taken: none more between
    /// replicas, one more between servers with different epochs.
    fn snapshots_after_a_failover(&self) -> u64 {
        if self.shared {
            1
        } else {
            2
        }
    }
}

async fn pair() -> Option<Pair> {
    match store_kind() {
        StoreKind::Postgres => replicas().await,
        StoreKind::Sled => Some(restored_copy().await),
    }
}

/// Two replicas on one fresh database; the environment, flag and token are created before the
/// second starts, which then knows them. `None` when PostgreSQL is skipped.
async fn replicas() -> Option<Pair> {
    let url = fresh_database()?;
    let first = TestServer::builder()
        .database_url(url.clone())
        .heartbeat(HEARTBEAT)
        .start()
        .await;
    let sdk = prepare(&first).await;
    // The admin token is the database's; each replica's data directory holds a copy.
    let dir = tempfile::tempdir().expect("a data directory");
    std::fs::write(dir.path().join("admin.token"), &first.admin_token).expect("the admin token");
    let second = TestServer::builder()
        .database_url(url)
        .data_dir(dir)
        .heartbeat(HEARTBEAT)
        .start()
        .await;
    Some(Pair {
        first,
        second,
        sdk,
        shared: true,
    })
}

/// A sled server, and a second one on a store restored from its backup.
async fn restored_copy() -> Pair {
    let first = TestServer::builder().heartbeat(HEARTBEAT).start().await;
    let sdk = prepare(&first).await;
    let admin_token = first.admin_token.clone();
    let first_dir = first.stop().await;
    let file = tempfile::tempdir().expect("backup directory");
    let path = file.path().join("first.backup");
    let store = SledStore::open(first_dir.path(), 10_000).expect("the first's store");
    backup::write(&store, "sled", &path).expect("backed up");
    drop(store);
    let read = backup::read(std::io::BufReader::new(
        std::fs::File::open(&path).expect("the backup"),
    ))
    .expect("reads back");
    let second_dir = tempfile::tempdir().expect("a data directory");
    std::fs::write(second_dir.path().join("admin.token"), admin_token).expect("the admin token");
    let store = SledStore::open(second_dir.path(), 10_000).expect("a new store");
    backup::restore(&store, &read).expect("restored");
    drop(store);
    let first = TestServer::builder()
        .data_dir(first_dir)
        .heartbeat(HEARTBEAT)
        .start()
        .await;
    let second = TestServer::builder()
        .data_dir(second_dir)
        .heartbeat(HEARTBEAT)
        .start()
        .await;
    Pair {
        first,
        second,
        sdk,
        shared: false,
    }
}

/// `production` with `checkout` (off) on `server`, and an sdk token of it.
async fn prepare(server: &TestServer) -> String {
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    sdk_token(server, "checkout-service", "production").await
}

/// A client of `endpoints` (the first tried first), ready, serving `checkout` off from the
/// first endpoint.
async fn ready_client(endpoints: &[String], sdk: &str) -> Client {
    let mut builder = sdk_builder(endpoints[0].clone(), sdk, "failover");
    for endpoint in &endpoints[1..] {
        builder = builder.fallback_endpoint(endpoint);
    }
    let client = builder.build().expect("client");
    client.wait_ready(PATIENCE).await.expect("ready");
    assert_eq!(client.status().endpoint.as_ref(), Some(&endpoints[0]));
    assert!(!client.bool_value("checkout", &Context::new("user-1"), true));
    client
}

/// Waits until `client` streams from `endpoint`; how long that took since `since`.
async fn until_served_by(client: &Client, endpoint: &str, since: Instant) -> Duration {
    eventually("the client streams from the other endpoint", async || {
        (client.status().endpoint.as_deref() == Some(endpoint)).then_some(())
    })
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_server_stops_moves_to_the_next_endpoint_and_resumes_there() {
    let Some(pair) = pair().await else {
        return;
    };
    let (first, second) = (pair.first.endpoint(), pair.second.endpoint());
    let client = ready_client(&[first, second.clone()], &pair.sdk).await;
    assert_eq!(client.stats().failovers, 0);
    assert_eq!(client.stats().snapshots, 1);

    let stopped = Instant::now();
    let snapshots = pair.snapshots_after_a_failover();
    pair.first.stop().await;
    let moved = until_served_by(&client, &second, stopped).await;
    let mut admin = pair.second.admin().await;
    let written = Instant::now();
    let revision = serve_on(&mut admin, "checkout", true).await;
    eventually("the change written on the other endpoint", async || {
        client.bool_value("checkout", &Context::new("user-1"), false)
    })
    .await;
    let applied = written.elapsed();
    println!("failover after a stop: streaming from the other endpoint {moved:?} after the stop; a change written there applied in {applied:?}");

    assert_eq!(client.status().revision, revision);
    let stats = client.stats();
    assert_eq!(stats.failovers, 1);
    assert_eq!(stats.snapshots, snapshots, "shared epochs: {}", pair.shared);
    assert_eq!(stats.resyncs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_makes_the_client_move_to_the_next_endpoint() {
    let Some(pair) = pair().await else {
        return;
    };
    let proxy = FaultProxy::start(pair.first.addr).await;
    let second = pair.second.endpoint();
    let client = ready_client(&[proxy.endpoint(), second.clone()], &pair.sdk).await;

    // The path to the first server goes silent without closing: only the heartbeats, missing,
    // tell.
    let stalled = Instant::now();
    proxy.set(Mode::Stall);
    let moved = until_served_by(&client, &second, stalled).await;
    println!(
        "failover after a stall: streaming from the other endpoint {moved:?} after the stall \
         (heartbeat {HEARTBEAT:?}, taken for dead after three)"
    );
    let revision = serve_on(&mut pair.second.admin().await, "checkout", true).await;
    eventually("the change written on the other endpoint", async || {
        client.bool_value("checkout", &Context::new("user-1"), false)
    })
    .await;
    assert_eq!(client.status().revision, revision);
    assert_eq!(client.stats().failovers, 1);
    assert_eq!(client.stats().snapshots, pair.snapshots_after_a_failover());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_refuses_connections_is_passed_over_at_once() {
    let Some(pair) = pair().await else {
        return;
    };
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = format!("http://{}", unused.local_addr().expect("addr"));
    drop(unused);
    // A backoff longer than the test waits: the client reaches the second endpoint without it.
    let client = sdk_builder(nowhere, &pair.sdk, "failover")
        .fallback_endpoint(pair.first.endpoint())
        .backoff(Duration::from_secs(600), Duration::from_secs(600))
        .build()
        .expect("client");
    let started = Instant::now();
    client.wait_ready(PATIENCE).await.expect("ready");
    println!(
        "a refused endpoint passed over: ready through the next in {:?}",
        started.elapsed()
    );
    let status = client.status();
    assert_eq!(status.endpoint, Some(pair.first.endpoint()));
    assert_eq!(status.address, Some(pair.first.addr));
    // The first stream a server answered is no failover.
    assert_eq!(client.stats().failovers, 0);
    assert_eq!(client.stats().connections, 1);
}

#[tokio::test]
async fn a_host_name_is_resolved_by_the_client_and_tls_still_checks_the_name() {
    // A certificate for the name alone: a client that checked it against the address it
    // connects to would refuse it.
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let tls = TestTls {
        cert: certified.cert.pem(),
        key: certified.signing_key.serialize_pem(),
    };
    let server = TestServer::builder().tls(tls.clone()).start().await;
    let sdk = prepare(&server).await;
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = format!(
        "https://localhost:{}",
        unused.local_addr().expect("addr").port()
    );
    drop(unused);
    let endpoint = format!("https://localhost:{}", server.addr.port());
    let client = sdk_builder(nowhere, &sdk, "failover")
        .fallback_endpoint(&endpoint)
        .tls_ca_certificate(tls.cert)
        .build()
        .expect("client");
    client.wait_ready(PATIENCE).await.expect("ready over TLS");
    let status = client.status();
    assert_eq!(status.endpoint, Some(endpoint));
    assert_eq!(status.address.map(|a| a.port()), Some(server.addr.port()));
    assert!(status.address.is_some_and(|a| a.ip().is_loopback()));
}
