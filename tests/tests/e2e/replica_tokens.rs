//! Tokens across several flagstaffd on one PostgreSQL database (DESIGN.md section 7): a token
//! another replica stored works on every one at once, even before it is announced, and a
//! revoked one is refused; garbage tokens reach the database a bounded number of times; and
//! revoking a token or deleting an environment through one replica ends the streams of every
//! other within a second. On sled (one process per data directory) these tests do nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flagstaff_proto::pb;
use flagstaff_server::auth::{hash, LOOKUPS_PER_SECOND, REMEMBER_UNKNOWN};
use flagstaff_server::storage::{now_ms, random_id, Role, TokenRecord};
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::watcher::{subscribe, State, Watcher};
use flagstaff_tests::{eventually, store_kind, StoreKind, TestServer};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tonic::{Code, Request};

use super::fixtures::*;
use super::watch_model::{prepare, server_state};

const REPLICAS: usize = 3;
const LIMIT: Duration = Duration::from_secs(30);

/// How soon revocation and environment deletion end streams on every replica.
const EVERYWHERE_WITHIN: Duration = Duration::from_secs(1);

/// Replicas on one fresh database, each serving metrics, `production` prepared through the
/// first; `None` on sled, or when PostgreSQL is skipped.
struct Replicas {
    servers: Vec<TestServer>,
    /// A connection of the test's own to the database.
    db: tokio_postgres::Client,
}

async fn replicas() -> Option<Replicas> {
    if store_kind() != StoreKind::Postgres {
        return None;
    }
    let url = fresh_database()?;
    let first = TestServer::builder()
        .database_url(url.clone())
        .metrics()
        .start()
        .await;
    prepare(&first).await;
    let mut servers = vec![first];
    for _ in 1..REPLICAS {
        let server = another_replica(&servers[0], TestServer::builder().metrics()).await;
        servers.push(server);
    }
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    Some(Replicas { servers, db })
}

/// Stores a token of `role` for `production` straight into the database, as another
/// flagstaffd would before its announcement arrives: no replica is told, so none hears of it
/// before its next look at everything (every 5 s). Returns its secret.
async fn store_unannounced(db: &tokio_postgres::Client, role: Role, revoked: bool) -> String {
    stored_unannounced(db, role, revoked).await.1
}

/// [`store_unannounced`], returning the token's id and secret.
async fn stored_unannounced(
    db: &tokio_postgres::Client,
    role: Role,
    revoked: bool,
) -> (String, String) {
    let secret = format!("fs_{}{}", random_id(), random_id());
    let record = TokenRecord {
        id: random_id(),
        name: format!("unannounced-{}", random_id()),
        role,
        environment: Some("production".to_owned()),
        hash: hash(&secret),
        created_ms: now_ms(),
        revoked,
        created_by: String::new(),
        client_secret: (role == Role::Client).then(|| secret.clone()),
    };
    let text = serde_json::to_string(&record).expect("JSON");
    db.execute(
        "INSERT INTO tokens (id, record) VALUES ($1, $2::text::json)",
        &[&record.id, &text],
    )
    .await
    .expect("token stored");
    (record.id, secret)
}

/// `ListFlags` of `production` on `server`, over `admin`, with `token`.
async fn list_flags(admin: &mut flagstaff_tests::Admin, token: &str) -> Result<(), tonic::Status> {
    let mut request = Request::new(pb::ListFlagsRequest {
        environment: "production".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    admin.list_flags(request).await.map(drop)
}

/// A bulk OFREP evaluation of `production` on `server` with `token`: its status and body.
async fn bulk(server: &TestServer, token: &str) -> (StatusCode, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/ofrep/v1/evaluate/flags", server.endpoint()))
        .bearer_auth(token)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .expect("answered");
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

/// A Watch stream of `environment` on `server` with `token`, past its first message.
async fn watching(server: &TestServer, token: &str, environment: &str) -> Watcher {
    let mut sync = server.sync_with(token).await;
    let start = subscribe(&random_id(), environment, &State::default());
    let mut watcher = Watcher::open(&mut sync, start, State::default())
        .await
        .expect("watching");
    tokio::time::timeout(LIMIT, watcher.step())
        .await
        .expect("a first message in time")
        .expect("the stream")
        .expect("a message");
    watcher
}

/// The OFREP event stream a bulk evaluation on `evaluated` with `token` advertises, opened on
/// `opened` (a load balancer may send the two requests to different replicas).
async fn event_stream(
    evaluated: &TestServer,
    opened: &TestServer,
    token: &str,
) -> reqwest::Response {
    let (status, body) = bulk(evaluated, token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let uri = body["eventStreams"][0]["endpoint"]["requestUri"]
        .as_str()
        .expect("an event stream advertised");
    let response = reqwest::Client::new()
        .get(format!("{}{uri}", opened.endpoint()))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// Reads `stream` until it ends.
async fn stream_end(stream: &mut reqwest::Response) {
    while let Ok(Some(_)) = stream.chunk().await {}
}

/// The server's `flagstaff_token_lookups_total`, by outcome (an outcome that never happened
/// is not listed).
async fn lookups(server: &TestServer) -> HashMap<String, u64> {
    let addr = server.metrics_addr.expect("metrics served");
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scraped")
        .text()
        .await
        .expect("metrics");
    text.lines()
        .filter_map(|line| line.strip_prefix("flagstaff_token_lookups_total{outcome=\""))
        .map(|rest| {
            let (outcome, value) = rest.split_once("\"} ").expect("a sample");
            (outcome.to_owned(), value.parse().expect("a count"))
        })
        .collect()
}

/// The count of `outcome` in `counts`.
fn count(counts: &HashMap<String, u64>, outcome: &str) -> u64 {
    counts.get(outcome).copied().unwrap_or(0)
}

/// Lookups that asked the database between `before` and `after`.
fn asked(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> u64 {
    ["found", "unknown", "failed"]
        .iter()
        .map(|outcome| count(after, outcome) - count(before, outcome))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_only_the_database_holds_works_at_once_on_every_replica() {
    let Some(Replicas { servers, db }) = replicas().await else {
        return;
    };
    for (r, server) in servers.iter().enumerate() {
        // Each used within milliseconds of being stored: long before the replica's next look
        // at everything, were it not looked up.
        let sdk = store_unannounced(&db, Role::Sdk, false).await;
        let mut watcher = watching(server, &sdk, "production").await;
        let held = server_state(&server.environments);
        watcher.until(held.revision, LIMIT).await;
        assert_eq!(watcher.state, held, "replica {r}");

        // Evaluated over OFREP here, its event stream opened on the next replica: its ticket
        // names a token that replica has not heard of either.
        let sdk = store_unannounced(&db, Role::Sdk, false).await;
        event_stream(server, &servers[(r + 1) % REPLICAS], &sdk).await;

        let editor = store_unannounced(&db, Role::Editor, false).await;
        let mut admin = server.admin_with(None).await;
        list_flags(&mut admin, &editor)
            .await
            .unwrap_or_else(|e| panic!("replica {r}: {e}"));
        // Held from then on: asked again, the database is not.
        let before = lookups(server).await;
        list_flags(&mut admin, &editor).await.expect("held");
        assert_eq!(asked(&before, &lookups(server).await), 0, "replica {r}");
        assert!(count(&before, "found") >= 3, "replica {r}: {before:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_only_the_database_holds_is_refused_as_revoked() {
    let Some(Replicas { servers, db }) = replicas().await else {
        return;
    };
    let b = &servers[1];
    let mut admin = b.admin_with(None).await;
    let revoked = store_unannounced(&db, Role::Editor, true).await;
    for _ in 0..2 {
        // Looked up the first time, held the second.
        let refused = list_flags(&mut admin, &revoked).await.expect_err("refused");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(refused.message(), "the token has been revoked");
    }
    let revoked = store_unannounced(&db, Role::Sdk, true).await;
    let (status, body) = bulk(b, &revoked).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errorDetails"], "the token has been revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_only_the_database_holds_is_shown_and_revoked_through_any_replica() {
    let Some(Replicas { servers, db }) = replicas().await else {
        return;
    };
    let b = &servers[1];
    let mut admin = b.admin().await;
    let (id, secret) = stored_unannounced(&db, Role::Client, false).await;
    let shown = admin
        .get_client_token(pb::GetClientTokenRequest { id: id.clone() })
        .await
        .expect("shown")
        .into_inner();
    assert_eq!(shown.secret, secret);
    admin
        .revoke_token(pb::RevokeTokenRequest { id })
        .await
        .expect("revoked");
    for server in &servers {
        eventually("the token is refused everywhere", async || {
            let (status, body) = bulk(server, &secret).await;
            (status == StatusCode::UNAUTHORIZED).then_some(body)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tokens_are_refused_and_reach_the_database_a_bounded_number_of_times() {
    let Some(Replicas { servers, db }) = replicas().await else {
        return;
    };
    let b = &servers[1];
    let admin = b.admin_with(None).await;

    // One garbage token, again and again: the database is asked about it once per
    // REMEMBER_UNKNOWN at most.
    let before = lookups(b).await;
    let started = Instant::now();
    let garbage = format!("fs_garbage_{}", random_id());
    for _ in 0..50 {
        let refused = list_flags(&mut admin.clone(), &garbage)
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(refused.message(), "unknown token");
    }
    let periods = started.elapsed().as_secs_f64() / REMEMBER_UNKNOWN.as_secs_f64();
    let after = lookups(b).await;
    let asked_once = asked(&before, &after);
    assert!(
        asked_once >= 1 && asked_once as f64 <= 1.0 + periods.ceil(),
        "asked {asked_once} times over {periods:.1} periods"
    );

    // Many garbage tokens at once: at most LOOKUPS_PER_SECOND a second (and as many at once)
    // reach the database; the others are refused at once, saying why.
    let started = Instant::now();
    let refusals = join_all((0..200).map(|i| {
        let mut admin = admin.clone();
        async move {
            list_flags(&mut admin, &format!("fs_garbage_{i}"))
                .await
                .expect_err("refused")
        }
    }))
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let flooded = lookups(b).await;
    let asked_flood = asked(&after, &flooded);
    let rate = f64::from(LOOKUPS_PER_SECOND);
    assert!(
        asked_flood as f64 <= rate + (rate * seconds).ceil(),
        "asked {asked_flood} times in {seconds:.2} s"
    );
    assert!(refusals.iter().all(|s| s.code() == Code::Unauthenticated));
    let busy = refusals
        .iter()
        .filter(|s| s.message().contains("too many unknown tokens"))
        .count();
    assert!(busy > 0, "none refused for too many lookups");
    assert_eq!(
        count(&flooded, "busy") - count(&after, "busy"),
        busy as u64,
        "{refusals:?}"
    );

    // A real token stored meanwhile still works once the budget allows.
    let editor = store_unannounced(&db, Role::Editor, false).await;
    eventually("the new token works", async || {
        list_flags(&mut admin.clone(), &editor).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_deletion_through_one_replica_end_streams_on_the_others_within_a_second() {
    let Some(Replicas { servers, .. }) = replicas().await else {
        return;
    };
    let (a, others) = (&servers[0], &servers[1..]);
    let mut admin = a.admin().await;

    // A token revoked through the first replica: its Watch and OFREP event streams on the
    // others end.
    let sdk = sdk_token(a, "streamer", "production").await;
    let mut watchers = Vec::new();
    let mut events = Vec::new();
    for server in others {
        watchers.push(watching(server, &sdk, "production").await);
        events.push(event_stream(server, server, &sdk).await);
    }
    revoke_named(&mut admin, "streamer").await;
    let deadline = tokio::time::Instant::now() + EVERYWHERE_WITHIN;
    for (i, watcher) in watchers.iter_mut().enumerate() {
        let ended = tokio::time::timeout_at(deadline, watcher.until_end(LIMIT))
            .await
            .unwrap_or_else(|_| panic!("watcher {i} still open {EVERYWHERE_WITHIN:?} after"));
        assert_eq!(ended.code(), Code::Unauthenticated, "watcher {i}: {ended}");
    }
    for (i, stream) in events.iter_mut().enumerate() {
        tokio::time::timeout_at(deadline, stream_end(stream))
            .await
            .unwrap_or_else(|_| panic!("event stream {i} still open {EVERYWHERE_WITHIN:?} after"));
    }

    // An environment deleted through the first replica: its streams on the others end. The
    // Watch streams hold the admin token, which outlives the environment.
    create_environment(&mut admin, "staging").await;
    let staging = sdk_token(a, "staging-sdk", "staging").await;
    let mut watchers = Vec::new();
    let mut events = Vec::new();
    for server in others {
        eventually("the replica serves staging", async || {
            server.environments.get("staging").is_ok().then_some(())
        })
        .await;
        watchers.push(watching(server, &a.admin_token, "staging").await);
        events.push(event_stream(server, server, &staging).await);
    }
    admin
        .delete_environment(pb::DeleteEnvironmentRequest {
            environment: "staging".into(),
            ..Default::default()
        })
        .await
        .expect("environment deleted");
    let deadline = tokio::time::Instant::now() + EVERYWHERE_WITHIN;
    for (i, watcher) in watchers.iter_mut().enumerate() {
        tokio::time::timeout_at(deadline, watcher.until_end(LIMIT))
            .await
            .unwrap_or_else(|_| panic!("watcher {i} still open {EVERYWHERE_WITHIN:?} after"));
    }
    for (i, stream) in events.iter_mut().enumerate() {
        tokio::time::timeout_at(deadline, stream_end(stream))
            .await
            .unwrap_or_else(|_| panic!("event stream {i} still open {EVERYWHERE_WITHIN:?} after"));
    }
}
