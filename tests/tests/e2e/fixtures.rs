//! What the tests build on: documents written as JSON, environments, tokens, and a check of
//! a refused call's status.

use std::fmt::Debug;
use std::time::Duration;

use flagstaff_proto::pb;
pub use flagstaff_tests::{eventually, eventually_within, PATIENCE};
use flagstaff_tests::{Admin, TestServer, TestServerBuilder, TestTls};
use serde_json::{json, Value};
use tonic::{Code, Response, Status};

/// A flag from its canonical JSON document.
pub fn flag(document: Value) -> pb::Flag {
    let flag = flagstaff_engine::flag_from_value(&document).expect("a flag document");
    pb::Flag::from(&flag)
}

/// A boolean flag, enabled, serving `off` by default.
pub fn boolean_flag(key: &str) -> pb::Flag {
    flag(json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "off"},
    }))
}

/// A boolean flag of about `bytes` bytes, serving `off`: a rule matching no context holds a
/// long value, which ends with `marker` (so that documents of the same size can differ).
pub fn bulky_flag(key: &str, bytes: usize, marker: &str) -> pb::Flag {
    flag(json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "off"},
        "rules": [{"id": "bulk", "serve": {"variant": "on"}, "conditions": [
            {"attribute": "bulk", "op": "in", "values": [format!("{}{marker}", "x".repeat(bytes))]}
        ]}],
    }))
}

/// A boolean flag that needs `prerequisite` to serve `on`.
pub fn requiring(key: &str, prerequisite: &str) -> pb::Flag {
    flag(json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "on"},
        "prerequisites": [{"flag": prerequisite, "variants": ["on"]}],
    }))
}

/// A boolean flag serving `on` to the members of `segment`.
pub fn targeting(key: &str, segment: &str) -> pb::Flag {
    flag(json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "off"},
        "rules": [{"id": "members", "conditions": [{"op": "in_segment", "values": [segment]}],
                   "serve": {"variant": "on"}}],
    }))
}

/// A segment of context keys.
pub fn segment(key: &str, included: &[&str]) -> pb::Segment {
    let segment = flagstaff_engine::segment_from_value(&json!({"key": key, "included": included}))
        .expect("a segment document");
    pb::Segment::from(&segment)
}

/// A split serve: (variant, weight in 1/1000 of a percent), in order.
pub fn split(weights: &[(&str, u32)]) -> pb::Serve {
    pb::Serve {
        serve: Some(pb::serve::Serve::Split(pb::Split {
            bucket_by: None,
            weights: weights
                .iter()
                .map(|(variant, weight)| pb::Weight {
                    variant: (*variant).to_owned(),
                    weight: *weight,
                })
                .collect(),
        })),
    }
}

/// Creates an environment that is not protected.
pub async fn create_environment(admin: &mut Admin, key: &str) {
    admin
        .create_environment(pb::CreateEnvironmentRequest {
            environment: key.into(),
            protected: false,
        })
        .await
        .expect("environment created");
}

/// Creates a flag in `environment`, returning the revision the creation made.
pub async fn create_flag(client: &mut Admin, environment: &str, flag: pb::Flag) -> u64 {
    client
        .create_flag(pb::CreateFlagRequest {
            environment: environment.into(),
            flag: Some(flag),
            ..Default::default()
        })
        .await
        .expect("flag created")
        .into_inner()
        .revision
}

/// Creates a segment in `environment`.
pub async fn create_segment(client: &mut Admin, environment: &str, segment: pb::Segment) {
    client
        .create_segment(pb::CreateSegmentRequest {
            environment: environment.into(),
            segment: Some(segment),
            ..Default::default()
        })
        .await
        .expect("segment created");
}

/// A flag as stored.
pub async fn get_flag(client: &mut Admin, environment: &str, key: &str) -> pb::Flag {
    client
        .get_flag(pb::GetFlagRequest {
            environment: environment.into(),
            key: key.into(),
        })
        .await
        .expect("flag read")
        .into_inner()
        .flag
        .expect("a flag")
}

/// An environment's current revision.
pub async fn revision(client: &mut Admin, environment: &str) -> u64 {
    client
        .export(pb::ExportRequest {
            environment: environment.into(),
        })
        .await
        .expect("export")
        .into_inner()
        .revision
}

/// The rollout plan of flag `flag` of `production`.
pub async fn plan(admin: &mut Admin, flag: &str) -> pb::RolloutPlan {
    admin
        .get_rollout(pb::GetRolloutRequest {
            environment: "production".into(),
            flag: flag.into(),
        })
        .await
        .expect("a plan")
        .into_inner()
        .plan
        .expect("a plan")
}

/// Starts a plan rolling `on` out to `checkout` at 10% then 50%, guarded by `checkout_error`
/// at a ratio of 1.5, deciding after 50 events; each stage holds for an hour.
pub async fn start_guarded(admin: &mut Admin) -> pb::RolloutPlan {
    admin
        .start_rollout(pb::StartRolloutRequest {
            environment: "production".into(),
            flag: "checkout".into(),
            target_variant: "on".into(),
            stages: vec![
                pb::RolloutStage {
                    percent: 10_000,
                    hold_ms: 3_600_000,
                },
                pb::RolloutStage {
                    percent: 50_000,
                    hold_ms: 3_600_000,
                },
                pb::RolloutStage {
                    percent: 100_000,
                    hold_ms: 0,
                },
            ],
            guard: Some(pb::RolloutGuard {
                event: "checkout_error".into(),
                max_ratio: 1.5,
                min_events: 50,
            }),
            ..Default::default()
        })
        .await
        .expect("plan started")
        .into_inner()
        .plan
        .expect("a plan")
}

/// The usage `ListFlags` reports for flag `key` of `production`.
pub async fn usage(admin: &mut Admin, key: &str) -> pb::FlagUsage {
    admin
        .list_flags(pb::ListFlagsRequest {
            environment: "production".into(),
            ..Default::default()
        })
        .await
        .expect("flags")
        .into_inner()
        .flags
        .into_iter()
        .find(|e| e.flag.as_ref().is_some_and(|f| f.key == key))
        .and_then(|e| e.usage)
        .expect("usage")
}

/// A server whose rollout plans go by `clock`, with environment `production`.
pub async fn server_on(
    clock: &std::sync::Arc<flagstaff_server::clock::ManualClock>,
) -> (TestServer, Admin) {
    let server = TestServer::builder().clock(clock.clone()).start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    (server, admin)
}

/// Creates a token and returns a client that sends it.
pub async fn client_with_token(
    server: &TestServer,
    name: &str,
    role: pb::Role,
    environment: &str,
) -> Admin {
    let secret = token_of(server, name, role, environment).await;
    server.admin_with(Some(&secret)).await
}

/// The message of a call that must fail with `code`.
pub fn refused<T: Debug>(result: Result<Response<T>, Status>, code: Code) -> String {
    let status = result.expect_err("the call is refused");
    assert_eq!(status.code(), code, "{}", status.message());
    status.message().to_owned()
}

/// A self-signed certificate for `localhost` and 127.0.0.1.
pub fn self_signed() -> TestTls {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("self-signed certificate");
    TestTls {
        cert: certified.cert.pem(),
        key: certified.signing_key.serialize_pem(),
    }
}

/// Creates an sdk token named `name` for `environment` and returns its secret.
pub async fn sdk_token(server: &TestServer, name: &str, environment: &str) -> String {
    token_of(server, name, pb::Role::Sdk, environment).await
}

/// Creates a token named `name` of `role` for `environment` and returns its secret.
pub async fn token_of(
    server: &TestServer,
    name: &str,
    role: pb::Role,
    environment: &str,
) -> String {
    server
        .admin()
        .await
        .create_token(pb::CreateTokenRequest {
            name: name.into(),
            role: role as i32,
            environment: environment.into(),
        })
        .await
        .expect("token created")
        .into_inner()
        .secret
}

/// Revokes the token named `name`.
pub async fn revoke_named(admin: &mut Admin, name: &str) {
    let id = admin
        .list_tokens(pb::ListTokensRequest::default())
        .await
        .expect("tokens")
        .into_inner()
        .tokens
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no token {name:?}"))
        .id;
    admin
        .revoke_token(pb::RevokeTokenRequest { id })
        .await
        .expect("revoked");
}

/// Makes the boolean flag `key` of `production` serve `on` (or `off`) by default; returns the
/// revision.
pub async fn serve_on(admin: &mut Admin, key: &str, on: bool) -> u64 {
    admin
        .set_default_serve(pb::SetDefaultServeRequest {
            environment: "production".into(),
            key: key.into(),
            serve: Some(pb::Serve {
                serve: Some(pb::serve::Serve::Variant(
                    if on { "on" } else { "off" }.to_owned(),
                )),
            }),
            ..Default::default()
        })
        .await
        .expect("served")
        .into_inner()
        .revision
}

/// An SDK client of `endpoint` that gives up on a connection attempt after 500 ms and retries
/// quickly, so fault tests run in moments.
pub fn sdk_client(endpoint: String, token: &str, application: &str) -> flagstaff::Client {
    sdk_builder(endpoint, token, application)
        .build()
        .expect("client")
}

/// The builder of [`sdk_client`], for a test that sets more.
pub fn sdk_builder(endpoint: String, token: &str, application: &str) -> flagstaff::ClientBuilder {
    flagstaff::Client::builder(endpoint, token)
        .application(application)
        .connect_timeout(Duration::from_millis(500))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// One more replica on the PostgreSQL database `first` runs on, started by `builder`: the
/// admin token is the database's, and its data directory holds a copy of `first`'s.
pub async fn another_replica(first: &TestServer, builder: TestServerBuilder) -> TestServer {
    let dir = tempfile::tempdir().expect("a data directory");
    std::fs::write(dir.path().join("admin.token"), &first.admin_token).expect("the admin token");
    let url = first.database_url.clone().expect("on PostgreSQL");
    builder.database_url(url).data_dir(dir).start().await
}
