//! `Sync/Watch` and `Admin/WatchChanges` against the real server: snapshots, deltas,
//! resumption, big segments, heartbeats, slow consumers, revocation and shutdown.

use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_proto::watch::CHUNK_BUDGET;
use flagstaff_tests::watcher::{subscribe, State, Watcher};
use flagstaff_tests::{Admin, TestServer, TestServerBuilder};
use serde_json::json;
use tonic::Code;

use super::fixtures::*;

const LIMIT: Duration = Duration::from_secs(20);

/// What the server holds for `environment` now.
fn server_state(server: &TestServer, environment: &str) -> State {
    let env = server
        .environments
        .get(environment)
        .expect("the environment exists");
    let current = env.current();
    State::of(&env.epoch, current.revision, &current.snapshot)
}

/// Opens a watcher for `environment` from `state` with a fresh sdk token.
async fn open(server: &TestServer, token: &str, id: &str, state: State) -> Watcher {
    let mut sync = server.sync_with(token).await;
    Watcher::open(&mut sync, subscribe(id, "", &state), state)
        .await
        .expect("the stream opens")
}

async fn set_enabled(admin: &mut Admin, key: &str, enabled: bool) -> u64 {
    admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "production".into(),
            key: key.into(),
            enabled,
            ..Default::default()
        })
        .await
        .expect("flag switched")
        .into_inner()
        .revision
}

async fn patch_keys(admin: &mut Admin, segment: &str, add: &[&str], remove: &[&str]) -> u64 {
    admin
        .patch_segment_keys(pb::PatchSegmentKeysRequest {
            environment: "production".into(),
            patch: Some(pb::SegmentKeyPatch {
                segment: segment.into(),
                add_included: add.iter().map(|k| k.to_string()).collect(),
                remove_included: remove.iter().map(|k| k.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("keys patched")
        .into_inner()
        .revision
}

/// A server with `production` holding two flags and a segment.
async fn populated(server: TestServerBuilder) -> (TestServer, Admin) {
    let server = server.start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_segment(&mut admin, "production", segment("beta", &["u1", "u2"])).await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    create_flag(&mut admin, "production", targeting("search", "beta")).await;
    (server, admin)
}

#[tokio::test]
async fn a_new_subscriber_gets_a_snapshot_then_every_change_in_order() {
    let (server, mut admin) = populated(TestServer::builder()).await;
    let token = sdk_token(&server, "checkout-sdk", "production").await;
    let mut watcher = open(&server, &token, "instance-1", State::default()).await;
    watcher.until(3, LIMIT).await;
    assert_eq!(watcher.state, server_state(&server, "production"));
    assert_eq!(watcher.received.snapshots, 1);
    assert_eq!(watcher.heartbeat_interval_ms, 15_000);

    set_enabled(&mut admin, "checkout", false).await;
    patch_keys(&mut admin, "beta", &["u3"], &["u1"]).await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    let last = admin
        .delete_flag(pb::DeleteFlagRequest {
            environment: "production".into(),
            key: "banner".into(),
            ..Default::default()
        })
        .await
        .expect("deleted")
        .into_inner()
        .revision;
    watcher.until(last, LIMIT).await;
    assert_eq!(watcher.received.deltas, vec![4, 5, 6, 7]);
    assert_eq!(watcher.received.snapshots, 1);
    assert_eq!(watcher.state, server_state(&server, "production"));
    assert_eq!(watcher.state.segments["beta"].included, ["u2", "u3"]);

    // The server recorded the instance and, once its ack arrives, the revision it applied.
    eventually("the acknowledgement of the last revision", async || {
        let instances = server.clients.list("production");
        assert_eq!(instances.len(), 1);
        assert_eq!(instances[0].identity.instance_id, "instance-1");
        instances[0].applied_revision == last
    })
    .await;
    assert_eq!(server.clients.connected("production"), 1);
    drop(watcher);
}

#[tokio::test]
async fn a_resume_inside_the_log_gets_only_the_missed_deltas_also_after_a_restart() {
    let (server, mut admin) = populated(TestServer::builder()).await;
    let token = sdk_token(&server, "sdk", "production").await;
    let mut watcher = open(&server, &token, "i", State::default()).await;
    watcher.until(3, LIMIT).await;
    let held = watcher.state.clone();
    drop(watcher);

    set_enabled(&mut admin, "checkout", false).await;
    patch_keys(&mut admin, "beta", &["u9"], &[]).await;
    let mut watcher = open(&server, &token, "i", held).await;
    watcher.until(5, LIMIT).await;
    assert_eq!(
        watcher.received.snapshots, 0,
        "a resume in the feed needs no snapshot"
    );
    assert_eq!(watcher.received.deltas, vec![4, 5]);
    assert_eq!(watcher.state, server_state(&server, "production"));
    let held = watcher.state.clone();
    drop(watcher);

    // After a restart the feed is empty: the missed deltas come from the stored change log.
    let dir = server.stop().await;
    let server = TestServer::builder().data_dir(dir).start().await;
    let mut admin = server.admin().await;
    set_enabled(&mut admin, "checkout", true).await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    let mut watcher = open(&server, &token, "i", held).await;
    watcher.until(7, LIMIT).await;
    assert_eq!(
        watcher.received.snapshots, 0,
        "a resume in the log needs no snapshot"
    );
    assert_eq!(watcher.received.deltas, vec![6, 7]);
    assert_eq!(watcher.state, server_state(&server, "production"));

    // Live changes follow the replayed ones.
    set_enabled(&mut admin, "banner", false).await;
    watcher.until(8, LIMIT).await;
    assert_eq!(watcher.state, server_state(&server, "production"));
}

#[tokio::test]
async fn a_resume_from_the_log_costs_no_snapshot_while_writes_outrun_the_feed() {
    // A feed of two revisions, and 100 stored revisions of a 64 KB flag each: more than the
    // stream's buffer and the client's HTTP/2 window hold, so the server is still sending them,
    // waiting on a client that does not read yet, when five more writes land and the feed
    // moves past them all.
    let (server, mut admin) = populated(TestServer::builder().feed_capacity(2)).await;
    let token = sdk_token(&server, "sdk", "production").await;
    let mut watcher = open(&server, &token, "i", State::default()).await;
    let start = server_state(&server, "production").revision;
    watcher.until(start, LIMIT).await;
    let held = watcher.state.clone();
    drop(watcher);

    for i in 0..100 {
        let flag = bulky_flag(&format!("big-{i}"), 64 * 1024, "");
        create_flag(&mut admin, "production", flag).await;
    }
    let mut watcher = open(&server, &token, "i", held).await;
    // A first message means the server has started sending the stored revisions; it stops
    // once the buffers are full, and the writes land while it waits.
    watcher.step().await.expect("the resume starts");
    for i in 0..5 {
        set_enabled(&mut admin, "checkout", i % 2 == 1).await;
    }
    let end = server_state(&server, "production").revision;
    watcher.until(end, LIMIT).await;
    assert_eq!(
        watcher.received.snapshots, 0,
        "a resume inside the log needs no snapshot"
    );
    assert_eq!(
        watcher.received.deltas,
        (start + 1..=end).collect::<Vec<u64>>()
    );
    assert_eq!(watcher.state, server_state(&server, "production"));
}

#[tokio::test]
async fn another_epoch_a_trimmed_log_or_a_future_revision_gets_a_snapshot() {
    let (server, mut admin) = populated(TestServer::builder().retention(3).feed_capacity(2)).await;
    let token = sdk_token(&server, "sdk", "production").await;
    for _ in 0..3 {
        set_enabled(&mut admin, "checkout", false).await;
        set_enabled(&mut admin, "checkout", true).await;
    }
    let now = server_state(&server, "production");
    assert_eq!(now.revision, 9);
    let cases = [
        ("another epoch", "0123", 8),
        ("revision 0", now.epoch.as_str(), 0),
        ("older than the log", now.epoch.as_str(), 2),
        ("ahead of the server", now.epoch.as_str(), 12),
    ];
    for (case, epoch, revision) in cases {
        let held = State {
            epoch: epoch.to_owned(),
            revision,
            ..State::default()
        };
        let mut watcher = open(&server, &token, case, held).await;
        watcher.until(9, LIMIT).await;
        assert_eq!(watcher.received.snapshots, 1, "{case}");
        assert_eq!(watcher.state, now, "{case}");
    }
    // Inside the log (7, 8 and 9 are kept) but out of the feed (8 and 9): no snapshot.
    let held = State {
        revision: 6,
        ..now.clone()
    };
    let mut watcher = open(&server, &token, "in the log", held).await;
    watcher.until(9, LIMIT).await;
    assert_eq!(watcher.received.snapshots, 0);
    assert_eq!(watcher.received.deltas, vec![7, 8, 9]);
}

#[tokio::test]
async fn a_segment_of_100000_keys_arrives_in_chunks_and_its_changes_as_patches() {
    let (server, mut admin) = populated(TestServer::builder()).await;
    let keys: Vec<String> = (0..100_000).map(|i| format!("user-{i:08}")).collect();
    let big = flagstaff_engine::segment_from_value(&json!({"key": "everyone", "included": keys}))
        .expect("segment");
    let token = sdk_token(&server, "sdk", "production").await;
    let mut live = open(&server, &token, "live", State::default()).await;
    live.until(3, LIMIT).await;

    create_segment(&mut admin, "production", pb::Segment::from(&big)).await;
    live.until(4, LIMIT).await;
    assert_eq!(live.state, server_state(&server, "production"));
    assert!(
        live.received.largest_message <= CHUNK_BUDGET,
        "{:?}",
        live.received
    );

    let fresh_at = live.received.messages;
    let mut fresh = open(&server, &token, "fresh", State::default()).await;
    fresh.until(4, LIMIT).await;
    assert_eq!(fresh.state, server_state(&server, "production"));
    assert!(
        fresh.received.messages > 3,
        "the snapshot came in several chunks"
    );
    assert!(
        fresh.received.largest_message <= CHUNK_BUDGET,
        "{:?}",
        fresh.received
    );

    // One key added and one removed: a delta of a few dozen bytes, not 2 MB.
    patch_keys(&mut admin, "everyone", &["new-user"], &["user-00000007"]).await;
    live.until(5, LIMIT).await;
    fresh.until(5, LIMIT).await;
    assert_eq!(live.received.messages, fresh_at + 1);
    assert_eq!(live.state, server_state(&server, "production"));
    assert_eq!(fresh.state, server_state(&server, "production"));
    let everyone = &live.state.segments["everyone"];
    assert_eq!(everyone.included.len(), 100_000);
    assert_eq!(
        everyone.included.last().map(String::as_str),
        Some("new-user")
    );
    assert_eq!(everyone.version, Some(5));
    // The change log recorded a patch, not the segment.
    let logged = server
        .environments
        .store()
        .changes_since("production", 4)
        .ok()
        .flatten()
        .expect("logged");
    use flagstaff_server::storage::Store as _;
    assert!(logged[0].segments.is_empty());
    assert_eq!(logged[0].segment_patches.len(), 1);
}

#[tokio::test]
async fn quiet_streams_get_heartbeats_at_the_announced_interval() {
    let (server, _admin) =
        populated(TestServer::builder().heartbeat(Duration::from_millis(50))).await;
    let token = sdk_token(&server, "sdk", "production").await;
    let mut watcher = open(&server, &token, "i", State::default()).await;
    watcher.until(3, LIMIT).await;
    assert_eq!(watcher.heartbeat_interval_ms, 50);
    while watcher.received.heartbeats < 3 {
        watcher.step().await.expect("open").expect("not ended");
    }
    // Heartbeats carry the revision the client holds (checked in `step`).
    assert_eq!(watcher.state.revision, 3);
}

#[tokio::test]
async fn a_slow_consumer_gets_a_fresh_snapshot_and_slows_nobody() {
    let (server, mut admin) = populated(TestServer::builder().feed_capacity(8)).await;
    let token = sdk_token(&server, "sdk", "production").await;
    let mut stalled = open(&server, &token, "stalled", State::default()).await;
    stalled.until(3, LIMIT).await;
    let mut reader = open(&server, &token, "reader", State::default()).await;
    reader.until(3, LIMIT).await;

    // Big flags (100 kB), so the stalled stream's HTTP/2 windows (2 MB per stream with
    // tonic's defaults) and its buffer fill quickly.
    let mut last = 0;
    for i in 0..120 {
        let flag = bulky_flag("checkout", 100_000, &i.to_string());
        last = admin
            .update_flag(pb::UpdateFlagRequest {
                environment: "production".into(),
                flag: Some(flag),
                ..Default::default()
            })
            .await
            .expect("every write is acknowledged while a stream is stalled")
            .into_inner()
            .revision;
        // The reading stream keeps up with deltas only.
        reader.until(last, LIMIT).await;
    }
    assert_eq!(reader.received.snapshots, 1);
    assert_eq!(reader.received.deltas.len(), 120);

    stalled.until(last, LIMIT).await;
    assert_eq!(
        stalled.received.snapshots, 2,
        "caught up with a fresh snapshot"
    );
    assert!(stalled.received.deltas.len() < 120);
    assert_eq!(stalled.state, server_state(&server, "production"));
}

#[tokio::test]
async fn revoking_a_token_closes_its_streams_and_only_its_own() {
    let (server, mut admin) = populated(TestServer::builder()).await;
    let doomed = sdk_token(&server, "doomed", "production").await;
    let kept = sdk_token(&server, "kept", "production").await;
    let mut a = open(&server, &doomed, "a", State::default()).await;
    let mut b = open(&server, &kept, "b", State::default()).await;
    a.until(3, LIMIT).await;
    b.until(3, LIMIT).await;
    revoke_named(&mut admin, "doomed").await;
    let end = a.until_end(LIMIT).await;
    assert_eq!(end.code(), Code::Unauthenticated, "{}", end.message());
    assert!(end.message().contains("revoked"), "{}", end.message());

    set_enabled(&mut admin, "checkout", false).await;
    b.until(4, LIMIT).await;
    // And the revoked token cannot open a new one.
    let mut sync = server.sync_with(&doomed).await;
    let status = match Watcher::open(
        &mut sync,
        subscribe("a", "", &State::default()),
        State::default(),
    )
    .await
    {
        Ok(mut watcher) => watcher.until_end(LIMIT).await,
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn shutdown_ends_streams_with_unavailable() {
    let (server, _admin) = populated(TestServer::builder()).await;
    let token = sdk_token(&server, "sdk", "production").await;
    let mut watcher = open(&server, &token, "i", State::default()).await;
    watcher.until(3, LIMIT).await;
    let stopping = tokio::spawn(server.stop());
    let end = watcher.until_end(LIMIT).await;
    assert_eq!(end.code(), Code::Unavailable, "{}", end.message());
    // The server finished stopping although a stream was open.
    tokio::time::timeout(LIMIT, stopping)
        .await
        .expect("stopped in time")
        .expect("stopped");
}

#[tokio::test]
async fn bad_subscriptions_are_refused_with_a_reason() {
    let (server, mut admin) = populated(TestServer::builder()).await;
    create_environment(&mut admin, "staging").await;
    let token = sdk_token(&server, "sdk", "production").await;
    let editor = server
        .admin()
        .await
        .create_token(pb::CreateTokenRequest {
            name: "editor".into(),
            role: pb::Role::Editor as i32,
            environment: "production".into(),
        })
        .await
        .expect("token created")
        .into_inner()
        .secret;
    let fresh = State::default();
    async fn status_of(
        server: &TestServer,
        token: &str,
        first: Option<pb::watch_request::Request>,
        then: Option<pb::watch_request::Request>,
    ) -> tonic::Status {
        let mut sync = server.sync_with(token).await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if let Some(first) = first {
            tx.send(pb::WatchRequest {
                request: Some(first),
            })
            .expect("open");
        }
        if let Some(then) = then {
            tx.send(pb::WatchRequest {
                request: Some(then),
            })
            .expect("open");
        }
        let mut inbound = match sync
            .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return status,
        };
        loop {
            match tokio::time::timeout(LIMIT, inbound.message()).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => panic!("the stream ended without an error"),
                Ok(Err(status)) => return status,
                Err(_) => panic!("no error within {LIMIT:?}"),
            }
        }
    }
    use pb::watch_request::Request::{Ack, Subscribe};
    let sub = |id: &str, env: &str| Subscribe(subscribe(id, env, &fresh));
    let ack = || {
        Ack(pb::Ack {
            epoch: String::new(),
            revision: 1,
        })
    };
    let cases = [
        (
            token.as_str(),
            Some(ack()),
            None,
            Code::InvalidArgument,
            "must be a Subscribe",
        ),
        (
            &token,
            Some(sub("", "")),
            None,
            Code::InvalidArgument,
            "instance_id",
        ),
        (
            &token,
            Some(sub("i", "staging")),
            None,
            Code::PermissionDenied,
            "sync environment \"staging\"",
        ),
        (
            &token,
            Some(sub("i", "")),
            Some(sub("i", "")),
            Code::InvalidArgument,
            "one Subscribe",
        ),
        (
            &server.admin_token,
            Some(sub("i", "")),
            None,
            Code::InvalidArgument,
            "environment",
        ),
        (
            &server.admin_token,
            Some(sub("i", "nowhere")),
            None,
            Code::NotFound,
            "nowhere",
        ),
        (
            "fs_not-a-token",
            Some(sub("i", "")),
            None,
            Code::Unauthenticated,
            "unknown token",
        ),
        (
            &editor,
            Some(sub("i", "production")),
            None,
            Code::PermissionDenied,
            "may not sync",
        ),
    ];
    for (token, first, then, code, needle) in cases {
        let status = status_of(&server, token, first, then).await;
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().contains(needle),
            "{needle:?} in {:?}",
            status.message()
        );
    }
    // An admin token may watch any environment it names.
    let mut sync = server.sync_with(&server.admin_token).await;
    let mut watcher = Watcher::open(&mut sync, subscribe("admin", "production", &fresh), fresh)
        .await
        .expect("open");
    watcher.until(3, LIMIT).await;
}

#[tokio::test]
async fn watch_changes_tails_the_audit_log() {
    let (server, mut admin) = populated(TestServer::builder().feed_capacity(2)).await;
    // From revision 1: the stored entries 2 and 3 (older than the feed holds), then live.
    let mut tail = admin
        .watch_changes(pb::WatchChangesRequest {
            environment: "production".into(),
            since_revision: 1,
        })
        .await
        .expect("tail")
        .into_inner();
    let mut live = server
        .admin()
        .await
        .watch_changes(pb::WatchChangesRequest {
            environment: "production".into(),
            since_revision: 0,
        })
        .await
        .expect("tail")
        .into_inner();
    let next = async |stream: &mut tonic::Streaming<pb::WatchChangesResponse>| {
        tokio::time::timeout(LIMIT, stream.message())
            .await
            .expect("in time")
            .expect("open")
            .expect("not ended")
            .entry
            .expect("an entry")
    };
    assert_eq!(next(&mut tail).await.revision, 2);
    assert_eq!(next(&mut tail).await.revision, 3);
    let mut admin2 = server.admin().await;
    set_enabled(&mut admin2, "checkout", false).await;
    let entry = next(&mut tail).await;
    assert_eq!(entry.revision, 4);
    assert_eq!(entry.actor, "admin");
    assert_eq!(next(&mut live).await.revision, 4);

    // Editors may tail their environment; sdk tokens may not.
    let mut editor = client_with_token(&server, "ed", pb::Role::Editor, "production").await;
    editor
        .watch_changes(pb::WatchChangesRequest {
            environment: "production".into(),
            since_revision: 3,
        })
        .await
        .expect("editor may tail");
    let token = sdk_token(&server, "sdk", "production").await;
    let mut sdk = server.admin_with(Some(&token)).await;
    refused(
        sdk.watch_changes(pb::WatchChangesRequest {
            environment: "production".into(),
            since_revision: 0,
        })
        .await,
        Code::PermissionDenied,
    );
}
