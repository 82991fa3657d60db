//! PostgreSQL going away under a running flagstaffd: writes fail with `UNAVAILABLE` naming the
//! database and change nothing, SDKs keep evaluating from the Watch stream, flagstaffd
//! reconnects by itself; a commit whose reply is lost is `outcome unknown` and, having been
//! committed, reaches SDKs through the change log; a commit the database refuses publishes
//! nothing. The database is reached through a fault-injecting proxy.

use std::time::Instant;

use flagstaff::Context;
use flagstaff_proto::pb;
use flagstaff_server::storage::CALL_TIMEOUT;
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::proxy::{FaultProxy, Mode};
use flagstaff_tests::{eventually, store_kind, Admin, StoreKind, TestServer, PATIENCE};
use tonic::Code;

use crate::fixtures::{boolean_flag, create_environment, create_flag, sdk_client, sdk_token};

/// A server on a fresh database reached through a proxy, with `checkout` (off) in
/// `production`; `None` when PostgreSQL is skipped or this binary runs on sled.
async fn behind_a_proxy() -> Option<(TestServer, FaultProxy, String)> {
    if store_kind() != StoreKind::Postgres {
        return None;
    }
    let url = fresh_database()?;
    let (proxy, proxied) = FaultProxy::in_front_of_database(&url).await;
    let server = TestServer::builder()
        .database_url(proxied.clone())
        .start()
        .await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    // How the store names the database in its errors: host:port/database.
    let named = proxied
        .strip_prefix("postgres://postgres@")
        .expect("the proxied URL")
        .to_owned();
    Some((server, proxy, named))
}

/// An SDK client of `production`, ready and serving `checkout` off; the context it evaluates
/// for; and what the server holds before the test changes anything.
async fn watching(
    server: &TestServer,
) -> (flagstaff::Client, Context<'static>, (u64, Option<u64>)) {
    let sdk = sdk_token(server, "checkout-service", "production").await;
    let client = sdk_client(server.endpoint(), &sdk, "faults");
    client.wait_ready(PATIENCE).await.expect("ready");
    let ctx = Context::new("user-1");
    assert!(!client.bool_value("checkout", &ctx, true), "serves off");
    (client, ctx, held(server))
}

/// Serves `on` (or `off`) by default for `checkout`: what SDKs evaluate changes with it.
async fn serve(admin: &mut Admin, on: bool) -> Result<u64, tonic::Status> {
    admin
        .set_default_serve(pb::SetDefaultServeRequest {
            environment: "production".into(),
            key: "checkout".into(),
            serve: Some(pb::Serve {
                serve: Some(pb::serve::Serve::Variant(
                    if on { "on" } else { "off" }.to_owned(),
                )),
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().revision)
}

/// The revision, and the version of `checkout`, as the server holds them in memory.
fn held(server: &TestServer) -> (u64, Option<u64>) {
    let env = server.environments.get("production").expect("production");
    let current = env.current();
    let version = current.snapshot.flag("checkout").expect("checkout").version;
    (current.revision, version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_naming_the_database_while_it_is_down_and_work_again_when_it_is_back() {
    let Some((server, proxy, named)) = behind_a_proxy().await else {
        return;
    };
    let mut admin = server.admin().await;
    let (client, ctx, before) = watching(&server).await;

    // Down: connections cut, new ones refused, as while PostgreSQL restarts.
    proxy.set(Mode::Refuse);
    proxy.drop_connections();
    let started = Instant::now();
    let refused = serve(&mut admin, true).await.expect_err("no database");
    assert_eq!(refused.code(), Code::Unavailable, "{}", refused.message());
    assert!(
        refused
            .message()
            .contains(&format!("the database {named} is unavailable")),
        "{}",
        refused.message()
    );
    assert!(started.elapsed() < CALL_TIMEOUT, "{:?}", started.elapsed());
    assert_eq!(held(&server), before, "nothing changed in memory");
    // The SDK keeps its flags.
    assert!(!client.bool_value("checkout", &ctx, true));

    // Silent: the database's host stops answering. The write gives up, it does not hang.
    proxy.set(Mode::Stall);
    let started = Instant::now();
    let stalled = serve(&mut admin, true).await.expect_err("no answer");
    assert_eq!(stalled.code(), Code::Unavailable, "{}", stalled.message());
    assert!(stalled.message().contains(&named), "{}", stalled.message());
    assert!(
        started.elapsed() < CALL_TIMEOUT * 2,
        "gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(held(&server), before);

    // Back: flagstaffd reconnects by itself, and the SDK gets the change on the stream it
    // kept.
    proxy.set(Mode::Pass);
    proxy.drop_connections();
    let revision = eventually("a write once the database is back", async || {
        serve(&mut admin, true).await.ok()
    })
    .await;
    assert_eq!(revision, before.0 + 1, "the failed writes left no revision");
    eventually("the SDK sees the change", async || {
        client.bool_value("checkout", &ctx, false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_reply_is_lost_is_outcome_unknown_and_reaches_sdks_from_the_change_log() {
    let Some((server, proxy, named)) = behind_a_proxy().await else {
        return;
    };
    let mut admin = server.admin().await;
    let (client, ctx, before) = watching(&server).await;

    // COMMIT reaches the database, which commits; its reply never comes back.
    proxy.set(Mode::CutAfterClientSends(b"COMMIT\0"));
    let lost = serve(&mut admin, true).await.expect_err("reply lost");
    proxy.set(Mode::Pass);
    assert_eq!(lost.code(), Code::Unavailable, "{}", lost.message());
    assert!(
        lost.message().starts_with("outcome unknown") && lost.message().contains(&named),
        "{}",
        lost.message()
    );

    // It was committed: flagstaffd read it back from the change log and sent it to SDKs.
    assert_eq!(held(&server), (before.0 + 1, Some(before.0 + 1)));
    eventually("the SDK gets the committed change", async || {
        client.bool_value("checkout", &ctx, false)
    })
    .await;
    let history = admin
        .list_history(pb::ListHistoryRequest {
            environment: "production".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .entries;
    assert_eq!(history[0].revision, before.0 + 1);
    assert_eq!(history[0].operation, "SetDefaultServe");
    // And the next write follows it.
    assert_eq!(
        serve(&mut admin, false).await.expect("written"),
        before.0 + 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_database_refuses_is_reported_and_publishes_nothing() {
    let Some((server, _proxy, _)) = behind_a_proxy().await else {
        return;
    };
    let mut admin = server.admin().await;
    let (client, ctx, before) = watching(&server).await;

    // A constraint checked at COMMIT that fails: the database refuses the whole transaction
    // at its last step.
    let url = server.database_url.clone().expect("on PostgreSQL");
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    db.batch_execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
         CREATE CONSTRAINT TRIGGER refuse_changes AFTER INSERT ON changes
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .await
    .expect("the trigger");
    let refused = serve(&mut admin, true).await.expect_err("refused");
    assert_eq!(refused.code(), Code::Internal, "{}", refused.message());
    assert!(
        refused.message().contains("refused at commit"),
        "{}",
        refused.message()
    );
    assert_eq!(held(&server), before, "nothing changed in memory");
    let stored: i64 = db
        .query_one(
            "SELECT revision FROM environments WHERE key = 'production'",
            &[],
        )
        .await
        .expect("revision")
        .get(0);
    assert_eq!(stored as u64, before.0, "nothing was committed");

    db.batch_execute("DROP TRIGGER refuse_changes ON changes")
        .await
        .expect("dropped");
    assert_eq!(
        serve(&mut admin, true).await.expect("written"),
        before.0 + 1
    );
    eventually("the SDK gets the change once it is committed", async || {
        client.bool_value("checkout", &ctx, false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancers_are_told_while_the_database_is_unreachable() {
    let Some((server, proxy, _)) = behind_a_proxy().await else {
        return;
    };
    let http = reqwest::Client::new();
    let readyz = async || {
        let answer = http
            .get(format!("http://{}/readyz", server.addr))
            .send()
            .await
            .expect("an answer");
        (
            answer.status().as_u16(),
            answer.text().await.expect("a body"),
        )
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let mut status = async |service: &str| {
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status
    };
    let (serving, not_serving) = (
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32,
    );
    eventually("/readyz says ready", async || {
        (readyz().await == (200, "ready\n".to_owned())).then_some(())
    })
    .await;

    // The database goes away: writes cannot work, so the load balancer is told; evaluation
    // goes on from memory.
    proxy.set(Mode::Refuse);
    proxy.drop_connections();
    eventually("/readyz says the database is unreachable", async || {
        (readyz().await == (503, "the database is unreachable\n".to_owned())).then_some(())
    })
    .await;
    eventually("Admin's health says NOT_SERVING", async || {
        (status("flagstaff.v1.Admin").await == not_serving).then_some(())
    })
    .await;
    assert_eq!(status("flagstaff.v1.Sync").await, serving);

    // Back: ready again once caught up, by itself.
    proxy.set(Mode::Pass);
    eventually("/readyz says ready again", async || {
        (readyz().await.0 == 200).then_some(())
    })
    .await;
    eventually("Admin's health says SERVING again", async || {
        (status("flagstaff.v1.Admin").await == serving).then_some(())
    })
    .await;
}
