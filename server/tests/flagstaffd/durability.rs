//! Every acknowledged write survives a SIGKILL; a second server on the same data directory is
//! refused; `admin-token` mints a token offline. (An in-process restart proves nothing: sled
//! flushes when it is dropped.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;

fn flag(key: &str) -> pb::Flag {
    let flag = flagstaff_engine::flag_from_value(&serde_json::json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "on"},
    }))
    .expect("flag");
    pb::Flag::from(&flag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_a_sigkill() {
    let dir = tempfile::tempdir().expect("data dir");
    let daemon = Daemon::start(dir.path(), &[], &[]);
    // Once it serves, its admin token file exists.
    let mut client = daemon.client().await;
    let token = token(dir.path());
    client
        .create_environment(authorized(
            pb::CreateEnvironmentRequest {
                environment: "production".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("environment");

    // Four writers create flags as fast as they are acknowledged, until the server is killed
    // mid-stream, once enough writes are acknowledged to make the check meaningful.
    let acknowledged_so_far = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (mut client, token) = (client.clone(), token.clone());
            let acknowledged_so_far = acknowledged_so_far.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let key = format!("w{w}-flag-{i}");
                    let request = pb::CreateFlagRequest {
                        environment: "production".into(),
                        flag: Some(flag(&key)),
                        ..Default::default()
                    };
                    match client.create_flag(authorized(request, &token)).await {
                        Ok(_) => {
                            acknowledged.push(key);
                            acknowledged_so_far.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    while acknowledged_so_far.load(Ordering::Relaxed) < 100
        && !writers.iter().all(|w| w.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.kill();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(acknowledged.len() >= 100, "{} writes", acknowledged.len());

    let daemon = Daemon::start(dir.path(), &[], &[]);
    let mut client = daemon.client().await;
    for key in &acknowledged {
        let request = pb::GetFlagRequest {
            environment: "production".into(),
            key: key.clone(),
        };
        client
            .get_flag(authorized(request, &token))
            .await
            .unwrap_or_else(|e| panic!("acknowledged flag {key} lost after SIGKILL: {e}"));
    }
    daemon.kill();
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("data dir");
    let daemon = Daemon::start(dir.path(), &[], &[]);
    // Serving means it holds the data directory.
    daemon.logged("address");
    let second = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    daemon.kill();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "error: another flagstaffd holds the data directory {}",
            dir.path().display()
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn admin_token_mints_a_working_token_offline() {
    let dir = tempfile::tempdir().expect("data dir");
    let first = Daemon::start(dir.path(), &[], &[]);
    first.logged("address");
    first.kill();
    let old = token(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("admin-token")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = token(dir.path());
    assert_ne!(new, old);

    let daemon = Daemon::start(dir.path(), &[], &[]);
    let mut client = daemon.client().await;
    for token in [&new, &old] {
        client
            .list_environments(authorized(pb::ListEnvironmentsRequest::default(), token))
            .await
            .expect("both admin tokens work");
    }
    daemon.kill();
}
