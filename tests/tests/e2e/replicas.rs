//! Several flagstaffd on one PostgreSQL database (DESIGN.md section 7): each follows what the
//! others commit and sends it to its own Watch streams; a write on any of them is built
//! against what the database holds, so one made right after another replica's never misses
//! it. On sled (one process per data directory) these tests do nothing.

use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::proxy::{FaultProxy, Mode};
use flagstaff_tests::watcher::{subscribe, State, Watcher};
use flagstaff_tests::{eventually, store_kind, StoreKind, TestServer};
use futures_util::future::join_all;

use super::fixtures::*;
use super::watch_model::{prepare, server_state, write, Rng};

const REPLICAS: usize = 3;
const WATCHERS_PER_REPLICA: usize = 2;
const WRITES_PER_REPLICA: usize = 30;
const LIMIT: Duration = Duration::from_secs(30);

/// `REPLICAS` servers on one fresh database, the first of them prepared by `prepare` before
/// the others start; `None` on sled, or when PostgreSQL is skipped.
async fn replicas() -> Option<(Vec<TestServer>, String)> {
    if store_kind() != StoreKind::Postgres {
        return None;
    }
    let url = fresh_database()?;
    let first = TestServer::builder()
        .database_url(url.clone())
        .start()
        .await;
    let sdk = prepare(&first).await;
    let mut servers = vec![first];
    for _ in 1..REPLICAS {
        let server = another_replica(&servers[0], TestServer::builder()).await;
        servers.push(server);
    }
    Some((servers, sdk))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_every_replica_reach_every_watcher_once_and_in_order() {
    let Some((servers, sdk)) = replicas().await else {
        return;
    };
    let mut watchers = Vec::new();
    for (r, server) in servers.iter().enumerate() {
        for w in 0..WATCHERS_PER_REPLICA {
            let mut sync = server.sync_with(&sdk).await;
            let id = format!("replica-{r}-watcher-{w}");
            let start = subscribe(&id, "production", &State::default());
            let watcher = Watcher::open(&mut sync, start, State::default())
                .await
                .expect("watching");
            watchers.push(watcher);
        }
    }

    // One writer on each replica, all at once, on the same flags and segment.
    let write_half = |half: usize| {
        let servers = &servers;
        join_all(
            servers
                .iter()
                .enumerate()
                .map(move |(r, server)| async move {
                    let mut admin = server.admin().await;
                    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ ((r + 3 * half) as u64 + 1));
                    for n in 0..WRITES_PER_REPLICA / 2 {
                        write(&mut admin, &mut rng, r, half * WRITES_PER_REPLICA + n).await;
                    }
                }),
        )
    };
    write_half(0).await;

    // Every watcher moves to the next replica, resuming from what it holds: inside the log,
    // so without a snapshot.
    let halfway = server_state(&open_database(&servers[0])).revision;
    let mut moved = Vec::new();
    for (i, watcher) in watchers.iter_mut().enumerate() {
        watcher.until(halfway, LIMIT).await;
        let (r, w) = (i / WATCHERS_PER_REPLICA, i % WATCHERS_PER_REPLICA);
        let next = &servers[(r + 1) % REPLICAS];
        let held = watcher.state.clone();
        let mut sync = next.sync_with(&sdk).await;
        let resume = subscribe(&format!("replica-{r}-watcher-{w}"), "production", &held);
        let resumed = Watcher::open(&mut sync, resume, held.clone())
            .await
            .expect("resumed on the next replica");
        moved.push((held.revision, resumed));
    }
    write_half(1).await;

    // Every replica ends holding what the database holds.
    let stored = server_state(&open_database(&servers[0]));
    for (r, server) in servers.iter().enumerate() {
        eventually("the replica holds what the database holds", async || {
            (server_state(&server.environments) == stored).then_some(())
        })
        .await;
        assert_eq!(server_state(&server.environments), stored, "replica {r}");
    }
    // Every watcher, on whichever replica, got every revision once, in order, and holds the
    // database's documents.
    for (i, (from, watcher)) in moved.iter_mut().enumerate() {
        watcher.until(stored.revision, LIMIT).await;
        assert_eq!(watcher.state, stored, "watcher {i}");
        let deltas = &watcher.received.deltas;
        assert!(
            deltas.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "watcher {i} applied {deltas:?}"
        );
        assert!(
            deltas.first().is_none_or(|first| *first == *from + 1),
            "watcher {i} resumed after {from}: {deltas:?}"
        );
        assert_eq!(deltas.last(), Some(&stored.revision), "watcher {i}");
        assert_eq!(
            watcher.received.snapshots, 0,
            "watcher {i} resumed in the log"
        );
    }
    // Before moving, each got every revision it saw once, in order, from one snapshot.
    for (i, watcher) in watchers.iter().enumerate() {
        let deltas = &watcher.received.deltas;
        assert!(
            deltas.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "watcher {i} applied {deltas:?}"
        );
        assert_eq!(watcher.received.snapshots, 1, "watcher {i}");
    }
}

/// The environments of `server`'s database as read from it afresh: a store of its own,
/// loaded the way a starting flagstaffd loads it.
fn open_database(
    server: &TestServer,
) -> std::sync::Arc<flagstaff_server::Environments<flagstaff_server::storage::Backend>> {
    let url = server.database_url.clone().expect("on PostgreSQL");
    let store = flagstaff_server::storage::PgStore::open(&url, None, 1_000).expect("the database");
    let store = std::sync::Arc::new(flagstaff_server::storage::Backend::Postgres(store));
    std::sync::Arc::new(flagstaff_server::Environments::load(store).expect("loaded"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_right_after_another_replicas_builds_on_it() {
    let Some((servers, _)) = replicas().await else {
        return;
    };
    let (mut a, mut b) = (servers[0].admin().await, servers[1].admin().await);
    for i in 0..20 {
        // A segment created on one replica is there for a flag written on another at once:
        // no "unknown segment".
        let key = format!("fresh-{i}");
        create_segment(&mut a, "production", segment(&key, &["u1"])).await;
        create_flag(&mut b, "production", targeting(&format!("t-{i}"), &key)).await;

        // A flag edited on one replica is edited again on another, naming the version the
        // first made: no spurious conflict.
        let mut flag = boolean_flag("f0");
        flag.description = Some(format!("first {i}"));
        let version = a
            .update_flag(pb::UpdateFlagRequest {
                environment: "production".into(),
                flag: Some(flag),
                ..Default::default()
            })
            .await
            .expect("edited on the first replica")
            .into_inner()
            .revision;
        let mut flag = boolean_flag("f0");
        flag.description = Some(format!("second {i}"));
        flag.version = Some(version);
        b.update_flag(pb::UpdateFlagRequest {
            environment: "production".into(),
            flag: Some(flag),
            ..Default::default()
        })
        .await
        .expect("edited on the second replica against the first's version");
    }
    // And the first replica follows the second.
    eventually("the first replica has the second's edit", async || {
        let on_a = get_flag(&mut a.clone(), "production", "f0").await;
        (on_a.description.as_deref() == Some("second 19")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_listening_connection_dies_listens_again_and_catches_up() {
    let Some((servers, _)) = replicas().await else {
        return;
    };
    let url = servers[0].database_url.clone().expect("on PostgreSQL");
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    let listeners = || async {
        db.query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .expect("listeners")
        .get::<_, i64>(0)
    };
    eventually("every replica listens", async || {
        (listeners().await == REPLICAS as i64).then_some(())
    })
    .await;
    db.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .await
    .expect("listeners terminated");

    let mut admin = servers[0].admin().await;
    let revision = serve_on(&mut admin, "f1", true).await;
    for server in &servers[1..] {
        eventually("the replica catches up", async || {
            (server_state(&server.environments).revision >= revision).then_some(())
        })
        .await;
    }
    eventually("every replica listens again", async || {
        (listeners().await == REPLICAS as i64).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_naming_another_replicas_revision_is_served_from_it() {
    let Some((servers, sdk)) = replicas().await else {
        return;
    };
    let (mut a, mut b) = (servers[0].admin().await, servers[1].admin().await);
    for i in 0..20 {
        // An SDK that applied a revision on one replica moves to another at once: it resumes
        // there from that revision, without a snapshot of an older one.
        serve_on(&mut a, "f1", i % 2 == 0).await;
        let held = server_state(&servers[0].environments);
        let mut sync = servers[1].sync_with(&sdk).await;
        let resume = subscribe(&format!("mover-{i}"), "production", &held);
        let mut watcher = Watcher::open(&mut sync, resume, held.clone())
            .await
            .expect("watching");
        tokio::time::timeout(LIMIT, watcher.step())
            .await
            .expect("an answer")
            .expect("the stream")
            .expect("a message");
        assert_eq!(watcher.received.snapshots, 0, "resumed, at {i}");
        assert_eq!(watcher.received.heartbeats, 1, "told it is current, at {i}");

        // Waiting on another replica for a revision just committed is not "ahead".
        let revision = serve_on(&mut a, "f1", i % 2 == 1).await;
        let waited = b
            .wait_for_revision(pb::WaitForRevisionRequest {
                environment: "production".into(),
                revision,
                timeout_ms: 1,
            })
            .await
            .expect("the revision is known on every replica");
        assert_eq!(waited.into_inner().revision, revision);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_environments_made_on_one_replica_hold_on_every_other() {
    let Some((servers, _)) = replicas().await else {
        return;
    };
    let mut a = servers[0].admin().await;

    // An environment created on one replica is served by the others, and so is a token
    // created on it.
    create_environment(&mut a, "staging").await;
    let revision = create_flag(&mut a, "staging", boolean_flag("search")).await;
    let sdk = sdk_token(&servers[0], "staging-sdk", "staging").await;
    let mut watchers = Vec::new();
    for (r, server) in servers.iter().enumerate().skip(1) {
        let watcher = eventually("the replica serves the new environment", async || {
            let mut sync = server.sync_with(&sdk).await;
            let start = subscribe(&format!("staging-{r}"), "staging", &State::default());
            let mut watcher = Watcher::open(&mut sync, start, State::default())
                .await
                .ok()?;
            let first = tokio::time::timeout(LIMIT, watcher.step()).await.ok()?;
            first.ok().flatten()?;
            Some(watcher)
        })
        .await;
        let mut watcher = watcher;
        watcher.until(revision, LIMIT).await;
        assert!(
            watcher.state.flags.contains_key("search"),
            "replica {r} holds the environment's flags"
        );
        watchers.push(watcher);
    }

    // A token revoked on one replica ends its streams on the others.
    revoke_named(&mut a, "staging-sdk").await;
    for (i, watcher) in watchers.iter_mut().enumerate() {
        let ended = watcher.until_end(LIMIT).await;
        assert_eq!(
            ended.code(),
            tonic::Code::Unauthenticated,
            "watcher {i}: {ended}"
        );
    }

    // An environment deleted on one replica is gone from the others.
    a.delete_flag(pb::DeleteFlagRequest {
        environment: "staging".into(),
        key: "search".into(),
        ..Default::default()
    })
    .await
    .expect("flag deleted");
    a.delete_environment(pb::DeleteEnvironmentRequest {
        environment: "staging".into(),
        ..Default::default()
    })
    .await
    .expect("environment deleted");
    for server in &servers[1..] {
        eventually("the replica drops the deleted environment", async || {
            server.environments.get("staging").is_err().then_some(())
        })
        .await;
    }

    // A token created on one replica, its environment deleted at once through another (which
    // may not have heard of the token yet): it never works again, on any replica, not even
    // for an environment of the same name created afterwards.
    create_environment(&mut a, "qa").await;
    let b = &servers[1];
    eventually("the second replica serves qa", async || {
        b.environments.get("qa").is_ok().then_some(())
    })
    .await;
    let orphan = sdk_token(b, "qa-sdk", "qa").await;
    a.delete_environment(pb::DeleteEnvironmentRequest {
        environment: "qa".into(),
        ..Default::default()
    })
    .await
    .expect("environment deleted");
    create_environment(&mut a, "qa").await;
    for (r, server) in servers.iter().enumerate() {
        eventually("the orphaned token is refused", async || {
            refused(server, &orphan, "qa", r)
                .await
                .filter(|status| status.code() == tonic::Code::Unauthenticated)
        })
        .await;
    }
}

/// How a Watch stream of `environment` with `token` on `server` is refused, if it is: when
/// opened, or at its first message.
async fn refused(
    server: &TestServer,
    token: &str,
    environment: &str,
    n: usize,
) -> Option<tonic::Status> {
    let mut sync = server.sync_with(token).await;
    let start = subscribe(&format!("probe-{n}"), environment, &State::default());
    let mut watcher = match Watcher::open(&mut sync, start, State::default()).await {
        Ok(watcher) => watcher,
        Err(status) => return Some(status),
    };
    match tokio::time::timeout(LIMIT, watcher.step()).await {
        Ok(Err(status)) => Some(status),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_recover_by_themselves_from_a_database_restart_under_writes_without_a_gap() {
    if store_kind() != StoreKind::Postgres {
        return;
    }
    let Some(url) = fresh_database() else {
        return;
    };
    // Every replica reaches the database through the proxy, which restarts it (cuts every
    // connection and refuses new ones for a while) when told.
    let (proxy, proxied) = FaultProxy::in_front_of_database(&url).await;
    let first = TestServer::builder()
        .database_url(proxied.clone())
        .start()
        .await;
    let sdk = prepare(&first).await;
    let mut servers = vec![first];
    for _ in 1..REPLICAS {
        let server = another_replica(&servers[0], TestServer::builder()).await;
        servers.push(server);
    }
    let mut watchers = Vec::new();
    for (r, server) in servers.iter().enumerate() {
        let mut sync = server.sync_with(&sdk).await;
        let start = subscribe(&format!("replica-{r}"), "production", &State::default());
        let watcher = Watcher::open(&mut sync, start, State::default())
            .await
            .expect("watching");
        watchers.push(watcher);
    }

    // A writer on each replica for three seconds; the database restarts in the middle.
    // Writes fail while it is down (or their outcome is unknown), and work again after.
    let writers = servers.iter().enumerate().map(|(r, server)| async move {
        let mut admin = server.admin().await;
        let mut written = 0;
        let started = std::time::Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(3) {
            let toggled = admin
                .set_flag_enabled(pb::SetFlagEnabledRequest {
                    environment: "production".into(),
                    key: format!("f{r}"),
                    enabled: n % 2 == 1,
                    ..Default::default()
                })
                .await;
            match toggled {
                Ok(_) => written += 1,
                Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
            }
            n += 1;
        }
        written
    });
    let restart = async {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        proxy.set(Mode::Refuse);
        proxy.drop_connections();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        proxy.set(Mode::Pass);
    };
    let (written, ()) = tokio::join!(join_all(writers), restart);
    assert!(written.iter().all(|&w| w > 0), "{written:?}");

    // Each replica, by itself, holds what the database holds and takes writes again.
    for server in &servers {
        let mut admin = server.admin().await;
        eventually("a write once the database is back", async || {
            admin
                .set_flag_enabled(pb::SetFlagEnabledRequest {
                    environment: "production".into(),
                    key: "t".into(),
                    enabled: false,
                    ..Default::default()
                })
                .await
                .ok()
        })
        .await;
    }
    let stored = server_state(&open_database(&servers[0]));
    for (r, server) in servers.iter().enumerate() {
        eventually("the replica holds what the database holds", async || {
            (server_state(&server.environments) == stored).then_some(())
        })
        .await;
        assert_eq!(server_state(&server.environments), stored, "replica {r}");
    }
    // No stream lost a revision, or had to start again from a snapshot.
    for (i, watcher) in watchers.iter_mut().enumerate() {
        watcher.until(stored.revision, LIMIT).await;
        assert_eq!(watcher.state, stored, "watcher {i}");
        let deltas = &watcher.received.deltas;
        assert!(
            deltas.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "watcher {i} applied {deltas:?}"
        );
        assert_eq!(watcher.received.snapshots, 1, "watcher {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_for_longer_than_the_change_log_keeps_loads_the_environment_again() {
    if store_kind() != StoreKind::Postgres {
        return;
    }
    let Some(url) = fresh_database() else {
        return;
    };
    // Both keep the last 2 change-log entries of an environment.
    let a = TestServer::builder()
        .database_url(url.clone())
        .retention(2)
        .start()
        .await;
    let sdk = prepare(&a).await;
    let (proxy, proxied) = FaultProxy::in_front_of_database(&url).await;
    let dir = tempfile::tempdir().expect("a data directory");
    std::fs::write(dir.path().join("admin.token"), &a.admin_token).expect("the admin token");
    let b = TestServer::builder()
        .database_url(proxied)
        .data_dir(dir)
        .retention(2)
        .start()
        .await;
    let mut sync = b.sync_with(&sdk).await;
    let start = subscribe("cut-off", "production", &State::default());
    let mut watcher = Watcher::open(&mut sync, start, State::default())
        .await
        .expect("watching");
    let before = b
        .environments
        .get("production")
        .expect("held")
        .current()
        .revision;
    watcher.until(before, LIMIT).await;

    // B cut off while ten changes are made through A: the log keeps the last two.
    proxy.set(Mode::Refuse);
    proxy.drop_connections();
    let mut admin = a.admin().await;
    for n in 0..10 {
        admin
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: "production".into(),
                key: "f0".into(),
                enabled: n % 2 == 1,
                ..Default::default()
            })
            .await
            .expect("written through A");
    }
    proxy.set(Mode::Pass);

    // B loads the environment again, by itself, and its SDKs get it from a snapshot.
    let stored = server_state(&open_database(&a));
    assert!(stored.revision >= before + 10);
    eventually("B holds what the database holds", async || {
        (server_state(&b.environments) == stored).then_some(())
    })
    .await;
    // Its stream ends with the environment it watched.
    watcher.until_end(LIMIT).await;
    let resume = subscribe("cut-off", "production", &watcher.state);
    let mut resumed = Watcher::open(&mut sync, resume, watcher.state.clone())
        .await
        .expect("resumed");
    resumed.until(stored.revision, LIMIT).await;
    assert_eq!(resumed.state, stored);
    assert_eq!(
        resumed.received.snapshots, 1,
        "the log no longer had what it lacked"
    );
}
