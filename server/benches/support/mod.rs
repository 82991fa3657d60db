//! What the benchmarks that run flagstaffd as its own process share: the process helper of
//! the tests, and a server holding environment `bench` with 100 flags and an sdk token.

#[path = "../../tests/flagstaffd/daemon.rs"]
#[allow(dead_code)] // The tests' process helper: only part of it is used here.
pub mod daemon;

use daemon::{authorized, Daemon};
use flagstaff_proto::pb;
use flagstaff_proto::pb::admin_client::AdminClient;
use tonic::transport::Channel;

/// A boolean flag `key`, enabled, serving `on`.
pub fn flag(key: &str) -> pb::Flag {
    let flag = flagstaff_engine::flag_from_value(&serde_json::json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "on"},
    }))
    .expect("flag");
    pb::Flag::from(&flag)
}

/// A running flagstaffd (the release binary) with environment `bench` holding 100 flags,
/// `flag-0` to `flag-99`.
pub struct Bench {
    /// The server process (its memory is what the idle-streams benchmark reads).
    #[allow(dead_code)] // Not every benchmark looks at the process.
    pub daemon: Daemon,
    /// Removed when the benchmark ends (after the server).
    _dir: tempfile::TempDir,
    pub admin: AdminClient<Channel>,
    /// The admin token.
    pub token: String,
    /// Where clients connect.
    pub endpoint: String,
    /// An sdk token for `bench`.
    pub sdk: String,
}

/// Starts flagstaffd on a temporary data directory and fills `bench`.
pub async fn server() -> Bench {
    let dir = tempfile::tempdir().expect("data dir");
    let daemon = Daemon::start(dir.path(), &[], &[]);
    let addr = daemon.logged("address");
    let mut admin = AdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let token = daemon::token(dir.path());
    admin
        .create_environment(authorized(
            pb::CreateEnvironmentRequest {
                environment: "bench".into(),
                protected: false,
            },
            &token,
        ))
        .await
        .expect("environment");
    for i in 0..100 {
        admin
            .create_flag(authorized(
                pb::CreateFlagRequest {
                    environment: "bench".into(),
                    flag: Some(flag(&format!("flag-{i}"))),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("flag");
    }
    let sdk = admin
        .create_token(authorized(
            pb::CreateTokenRequest {
                name: "bench-sdk".into(),
                role: pb::Role::Sdk as i32,
                environment: "bench".into(),
            },
            &token,
        ))
        .await
        .expect("token")
        .into_inner()
        .secret;
    Bench {
        daemon,
        _dir: dir,
        admin,
        token,
        endpoint: format!("http://{addr}"),
        sdk,
    }
}
