//! SDK instances and usage across several flagstaffd on one PostgreSQL database (DESIGN.md
//! section 7): `ListClients` and `WaitForRevision` on any replica see the SDKs of every one, a
//! replica that stops, or goes silent, has its SDKs shown disconnected, and usage reported
//! through several replicas adds up. On sled (one process per data directory) these tests do
//! nothing.

use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::proxy::{FaultProxy, Mode};
use flagstaff_tests::{eventually, store_kind, Admin, StoreKind, TestServer, PATIENCE};
use futures_util::future::join_all;

use super::fixtures::*;

/// Three replicas on one fresh database holding `production` with the boolean flag
/// `checkout`, and a secret of an sdk token of it; the last replica reaches the database
/// through `database`, a proxy that passes until told otherwise.
struct Replicas {
    servers: Vec<TestServer>,
    sdk: String,
    database: FaultProxy,
}

/// [`Replicas`], each showing another's SDKs disconnected once it has not written for
/// `silence`; `None` on sled, or when PostgreSQL is skipped.
async fn replicas(silence: Option<Duration>) -> Option<Replicas> {
    if store_kind() != StoreKind::Postgres {
        return None;
    }
    let url = fresh_database()?;
    let (database, proxied) = FaultProxy::in_front_of_database(&url).await;

    let start = |url: String, dir: Option<tempfile::TempDir>| {
        let mut builder = TestServer::builder().database_url(url);
        if let Some(dir) = dir {
            builder = builder.data_dir(dir);
        }
        if let Some(silence) = silence {
            builder = builder.replica_silence(silence);
        }
        builder.start()
    };
    let first = start(url.clone(), None).await;
    let mut admin = first.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let sdk = sdk_token(&first, "checkout-sdk", "production").await;
    let mut servers = vec![first];
    for url in [url, proxied] {
        // The admin token is the database's; each replica's data directory holds a copy.
        let dir = tempfile::tempdir().expect("a data directory");
        std::fs::write(dir.path().join("admin.token"), &servers[0].admin_token)
            .expect("the admin token");
        servers.push(start(url, Some(dir)).await);
    }
    Some(Replicas {
        servers,
        sdk,
        database,
    })
}

async fn list(admin: &mut Admin) -> pb::ListClientsResponse {
    admin
        .list_clients(pb::ListClientsRequest {
            environment: "production".into(),
        })
        .await
        .expect("listed")
        .into_inner()
}

async fn wait(admin: &mut Admin, revision: u64, timeout: Duration) -> pb::WaitForRevisionResponse {
    admin
        .wait_for_revision(pb::WaitForRevisionRequest {
            environment: "production".into(),
            revision,
            timeout_ms: timeout.as_millis() as u64,
        })
        .await
        .expect("an answer, also on timeout")
        .into_inner()
}

/// The applications of `clients`, in the order given.
fn applications(clients: &[pb::ClientInstance]) -> Vec<&str> {
    clients.iter().map(|c| c.application.as_str()).collect()
}

/// The listed instance of `application`.
fn of<'a>(listed: &'a pb::ListClientsResponse, application: &str) -> &'a pb::ClientInstance {
    listed
        .clients
        .iter()
        .find(|c| c.application == application)
        .unwrap_or_else(|| panic!("{application} is not listed: {listed:?}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_lists_and_waits_for_the_sdks_of_every_replica() {
    let Some(Replicas {
        mut servers,
        sdk,
        database: _database,
    }) = replicas(None).await
    else {
        return;
    };
    let path = FaultProxy::start(servers[2].addr).await;
    let clients = [
        sdk_client(servers[0].endpoint(), &sdk, "on-a"),
        sdk_client(servers[1].endpoint(), &sdk, "on-b"),
        sdk_client(servers[2].endpoint(), &sdk, "on-c"),
        sdk_client(path.endpoint(), &sdk, "frozen-on-c"),
    ];
    for client in &clients {
        client.wait_ready(PATIENCE).await.expect("ready");
    }
    let (mut a, mut b) = (servers[0].admin().await, servers[1].admin().await);

    // The first replica lists every replica's SDKs, each at the revision it applied.
    let listed = eventually("every SDK listed on the first replica", async || {
        let listed = list(&mut a).await;
        let all = listed.clients.len() == 4
            && listed
                .clients
                .iter()
                .all(|c| c.connected && c.applied_revision == listed.revision);
        all.then_some(listed)
    })
    .await;
    assert_eq!(
        applications(&listed.clients),
        ["frozen-on-c", "on-a", "on-b", "on-c"]
    );
    assert!(listed.clients.iter().all(|c| c.token == "checkout-sdk"));

    // A write through the first replica, waited for on the second: the SDK whose path froze,
    // on the third, keeps the wait from completing and is named.
    path.set(Mode::Stall);
    let revision = serve_on(&mut a, "checkout", true).await;
    let answer = wait(&mut b, revision, Duration::from_millis(1500)).await;
    assert!(!answer.complete, "{answer:?}");
    assert_eq!((answer.applied, answer.connected), (3, 4), "{answer:?}");
    assert_eq!(applications(&answer.pending), ["frozen-on-c"]);
    assert!(answer.elapsed_ms >= 1500);

    // The path thaws: the wait completes once the third replica's SDK acknowledged too,
    // without waiting out its timeout.
    path.set(Mode::Pass);
    let answer = wait(&mut b, revision, PATIENCE).await;
    assert!(answer.complete, "{answer:?}");
    assert!(
        answer.elapsed_ms < PATIENCE.as_millis() as u64,
        "{answer:?}"
    );
    assert_eq!((answer.applied, answer.connected), (4, 4), "{answer:?}");
    let listed = list(&mut servers[2].admin().await).await;
    assert!(
        listed
            .clients
            .iter()
            .all(|c| c.applied_revision >= revision),
        "{listed:?}"
    );

    // A replica that stops writes its SDKs' disconnections as it stops: well before its 30 s
    // of silence would.
    let c = servers.pop().expect("the third replica");
    c.stop().await;
    let listed = eventually("the stopped replica's SDKs disconnected", async || {
        let listed = list(&mut a).await;
        let gone = ["on-c", "frozen-on-c"]
            .iter()
            .all(|app| !of(&listed, app).connected);
        gone.then_some(listed)
    })
    .await;
    assert!(of(&listed, "on-a").connected && of(&listed, "on-b").connected);
    assert!(of(&listed, "on-c").disconnected_unix_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_replica_has_its_sdks_shown_disconnected_since_it_last_wrote() {
    const SILENCE: Duration = Duration::from_secs(2);
    let Some(Replicas {
        servers,
        sdk,
        database,
    }) = replicas(Some(SILENCE)).await
    else {
        return;
    };
    let clients = [
        sdk_client(servers[1].endpoint(), &sdk, "on-b"),
        sdk_client(servers[2].endpoint(), &sdk, "on-c"),
    ];
    for client in &clients {
        client.wait_ready(PATIENCE).await.expect("ready");
    }
    let mut a = servers[0].admin().await;
    eventually("both SDKs connected", async || {
        let listed = list(&mut a).await;
        (listed.clients.len() == 2 && listed.clients.iter().all(|c| c.connected)).then_some(())
    })
    .await;

    // The third replica loses the database without a word: its SDK is still connected to it,
    // but nobody can tell any more whether it applies what is written.
    let stalled_ms = now_ms();
    database.set(Mode::Stall);
    let listed = eventually("the silent replica's SDK disconnected", async || {
        let listed = list(&mut a).await;
        (!of(&listed, "on-c").connected).then_some(listed)
    })
    .await;
    assert!(of(&listed, "on-b").connected);
    let since = of(&listed, "on-c").disconnected_unix_ms as u64;
    assert!(
        since + SILENCE.as_millis() as u64 >= stalled_ms && since <= stalled_ms + 1000,
        "disconnected at {since}, the replica's last write; the database stalled at {stalled_ms}"
    );

    // A wait does not hang on it: it is named among the disconnected.
    let revision = serve_on(&mut a, "checkout", true).await;
    let answer = wait(&mut a, revision, PATIENCE).await;
    assert!(answer.complete, "{answer:?}");
    assert_eq!((answer.applied, answer.connected), (1, 1), "{answer:?}");
    assert_eq!(applications(&answer.disconnected), ["on-c"]);
    database.set(Mode::Pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reported_through_several_replicas_adds_up() {
    let Some(Replicas {
        servers,
        sdk,
        database: _database,
    }) = replicas(None).await
    else {
        return;
    };
    const REPORTS: u64 = 20;
    let start_ms = now_ms();
    // Reports through the first two replicas at once, each of one evaluation.
    let reporters = servers[..2].iter().enumerate().map(|(r, server)| {
        let sdk = sdk.clone();
        async move {
            let mut sync = server.sync_with(&sdk).await;
            for n in 0..REPORTS {
                let end = (start_ms + 10 * n + r as u64) as i64;
                sync.report_metrics(pb::ReportMetricsRequest {
                    instance_id: format!("reporter-{r}"),
                    windows: vec![pb::MetricsWindow {
                        start_unix_ms: end - 10,
                        end_unix_ms: end,
                        evaluations: vec![pb::EvaluationCount {
                            flag: "checkout".into(),
                            variant: "off".into(),
                            version: 1,
                            count: 1,
                        }],
                        events: vec![],
                    }],
                    ..Default::default()
                })
                .await
                .expect("reported");
            }
        }
    });
    join_all(reporters).await;

    // Every replica lists the sum, and the latest report's time.
    let last_ms = start_ms + 10 * (REPORTS - 1) + 1;
    for server in &servers {
        let used = usage(&mut server.admin().await, "checkout").await;
        assert_eq!(used.evaluations, 2 * REPORTS);
        assert_eq!(used.last_evaluated_unix_ms, last_ms as i64);
    }
}
