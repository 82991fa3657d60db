//! SDK clients behind a fault-injecting proxy: dropped, stalled, reset and delayed
//! connections. Through every fault the clients keep serving their last snapshot and report
//! stale; after it they recover, resuming without a snapshot when the server still holds
//! what they missed.

use std::time::Duration;

use flagstaff::{Client, Context, State};
use flagstaff_proto::pb;
use flagstaff_tests::proxy::{FaultProxy, Mode};
use flagstaff_tests::{Admin, TestServer};
use serde_json::json;

use super::fixtures::*;

/// A server with quick heartbeats (so a stalled stream is noticed in well under a second),
/// `production` holding the flag `checkout` serving `off`, and an sdk token.
async fn setup() -> (TestServer, Admin, String) {
    let server = TestServer::builder()
        .heartbeat(Duration::from_millis(100))
        .start()
        .await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let token = sdk_token(&server, "service", "production").await;
    (server, admin, token)
}

fn is_stale(client: &Client) -> bool {
    matches!(client.status().state, State::Stale { .. })
}

fn serves(client: &Client, on: bool) -> bool {
    client.bool_value("checkout", &Context::new("u"), !on) == on
}

/// While the fault lasts the client is stale and serves what it had; a change made meanwhile
/// arrives once the fault is over, as a delta.
async fn survives(fault: Mode, proxy: &FaultProxy, admin: &mut Admin, client: &Client, on: bool) {
    proxy.set(fault);
    proxy.drop_connections();
    eventually("stale", async || is_stale(client)).await;
    let revision = serve_on(admin, "checkout", on).await;
    // Real time: the client must not recover while the fault lasts, which takes a while to
    // show (its retries run on real sockets and timers).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        is_stale(client),
        "{fault:?}: still stale while the fault lasts"
    );
    assert!(
        serves(client, !on),
        "{fault:?}: the last snapshot keeps serving"
    );
    proxy.set(Mode::Pass);
    eventually("recovery", async || {
        client.status().state == State::Ready && client.status().revision == revision
    })
    .await;
    assert!(serves(client, on));
}

#[tokio::test]
async fn clients_serve_through_drops_refusals_and_stalls_and_resume_without_a_snapshot() {
    let (server, mut admin, token) = setup().await;
    let proxy = FaultProxy::start(server.addr).await;
    let client = sdk_client(proxy.endpoint(), &token, "service");
    client.wait_ready(PATIENCE).await.expect("ready");

    // Dropped, and every reconnection refused for a while.
    survives(Mode::Refuse, &proxy, &mut admin, &client, true).await;
    // Dropped, and new connections stalled silently (no FIN, no RST): the client gives up on
    // a stream silent for three heartbeat intervals.
    survives(Mode::Stall, &proxy, &mut admin, &client, false).await;
    assert_eq!(
        client.stats().snapshots,
        1,
        "every resume was inside the log"
    );
    assert!(client.stats().connections >= 3);

    // An established stream stalled silently, without being dropped.
    proxy.set(Mode::Stall);
    eventually("stale after silence", async || is_stale(&client)).await;
    proxy.set(Mode::Pass);
    eventually("ready", async || client.status().state == State::Ready).await;
    assert_eq!(client.stats().snapshots, 1);
}

#[tokio::test]
async fn a_reset_in_the_middle_of_a_snapshot_is_never_half_applied() {
    let (server, mut admin, token) = setup().await;
    // A snapshot of about 2 MB: a segment of 100,000 keys.
    let keys: Vec<String> = (0..100_000).map(|i| format!("user-{i:08}")).collect();
    let big = flagstaff_engine::segment_from_value(&json!({"key": "everyone", "included": keys}))
        .expect("segment");
    create_segment(&mut admin, "production", pb::Segment::from(&big)).await;
    let proxy = FaultProxy::start(server.addr).await;
    // Every connection is reset after 200 kB from the server, well inside the snapshot.
    proxy.set(Mode::ResetAfter(200_000));
    let client = sdk_client(proxy.endpoint(), &token, "service");
    eventually("several attempts", async || proxy.accepted() >= 3).await;
    assert!(
        !client.status().has_data(),
        "no half snapshot is ever served"
    );
    assert!(
        client.bool_value("checkout", &Context::new("u"), true),
        "defaults meanwhile"
    );
    assert_eq!(client.stats().snapshots, 0);

    proxy.set(Mode::Pass);
    client
        .wait_ready(PATIENCE)
        .await
        .expect("ready once the path is clean");
    assert_eq!(client.stats().snapshots, 1);
    assert_eq!(
        client
            .snapshot()
            .segment("everyone")
            .map(|s| s.included.len()),
        Some(100_000)
    );
}

#[tokio::test]
async fn a_slow_path_delays_but_does_not_break_the_stream() {
    let (server, mut admin, token) = setup().await;
    let proxy = FaultProxy::start(server.addr).await;
    let client = sdk_client(proxy.endpoint(), &token, "service");
    client.wait_ready(PATIENCE).await.expect("ready");
    // 30 ms per chunk each way, below the 300 ms the client allows for silence.
    proxy.set(Mode::Delay(Duration::from_millis(30)));
    for on in [true, false, true] {
        let revision = serve_on(&mut admin, "checkout", on).await;
        eventually("the flip", async || client.status().revision == revision).await;
        assert!(serves(&client, on));
    }
    assert_eq!(client.stats().snapshots, 1);
    assert_eq!(client.stats().connections, 1, "no reconnection was needed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flip_reaches_fifty_clients() {
    let (server, mut admin, token) = setup().await;
    let clients: Vec<Client> = (0..50)
        .map(|_| sdk_client(server.endpoint(), &token, "service"))
        .collect();
    for c in &clients {
        c.wait_ready(PATIENCE).await.expect("ready");
    }
    let revision = serve_on(&mut admin, "checkout", true).await;
    for c in &clients {
        eventually("the flip", async || c.status().revision == revision).await;
        assert!(serves(c, true));
    }
    eventually("every acknowledgement", async || {
        let instances = server.clients.list("production");
        instances.len() == 50 && instances.iter().all(|i| i.applied_revision == revision)
    })
    .await;
}
