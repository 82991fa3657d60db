//! Propagation across replicas: `cargo bench -p flagstaff-tests --bench replicas`.
//!
//! Three in-process flagstaffd on one fresh database of a PostgreSQL cluster the test harness
//! starts (`fsync` and `synchronous_commit` on), with an environment of 100 flags. SDK clients
//! (the `flagstaff` crate) watch replica B; a writer flips flags on replica A, one change after
//! the other, and a thread reads what B holds and every client's applied revision until all
//! have it. Reported for 1 and for 100 clients, p50 and p99: from the write's sending to A's
//! answer (the commit), to B holding it in memory (the database's notification and B's
//! catching up), and to each client applying it, and to the last client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstaff_proto::pb;
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::TestServer;

mod common;
use common::{flag, percentiles, watching};

const FLAGS: usize = 100;
const CHANGES: usize = 200;

/// `CHANGES` writes on `a`, each followed until `b` and every client hold it.
async fn propagate(a: &TestServer, b: &TestServer, clients: usize, sdk: &str) {
    let watching = Arc::new(watching(b.endpoint(), sdk, clients, "bench-replicas").await);
    let mut admin = a.admin().await;
    let (mut committed, mut held, mut applied, mut last) = (vec![], vec![], vec![], vec![]);
    for i in 0..CHANGES {
        let sent = Instant::now();
        let revision = admin
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: "bench".into(),
                key: format!("flag-{:03}", i % FLAGS),
                enabled: i % 2 == 1,
                ..Default::default()
            })
            .await
            .expect("change")
            .into_inner()
            .revision;
        committed.push(sent.elapsed());
        let (envs, clients) = (b.environments.clone(), watching.clone());
        let (on_b, seen) = tokio::task::spawn_blocking(move || {
            let env = envs.get("bench").expect("environment");
            let mut on_b = None;
            let mut seen: Vec<Option<Duration>> = vec![None; clients.len()];
            let deadline = Instant::now() + Duration::from_secs(60);
            while on_b.is_none() || seen.iter().any(Option::is_none) {
                assert!(
                    Instant::now() < deadline,
                    "B and every client apply the change"
                );
                if on_b.is_none() && env.current().revision >= revision {
                    on_b = Some(sent.elapsed());
                }
                for (client, seen) in clients.iter().zip(seen.iter_mut()) {
                    if seen.is_none() && client.status().revision >= revision {
                        *seen = Some(sent.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            (
                on_b.unwrap_or_default(),
                seen.into_iter().flatten().collect::<Vec<_>>(),
            )
        })
        .await
        .expect("poller");
        held.push(on_b);
        last.push(seen.iter().copied().max().unwrap_or_default());
        applied.extend(seen);
    }
    let (c, h, a, l) = (
        percentiles(committed),
        percentiles(held),
        percentiles(applied),
        percentiles(last),
    );
    println!(
        "{clients:>3} clients on B, write on A: committed p50 {:>8.2?} p99 {:>8.2?}; held by B \
         p50 {:>8.2?} p99 {:>8.2?}; applied per client p50 {:>8.2?} p99 {:>8.2?}; last client \
         p50 {:>8.2?} p99 {:>8.2?}",
        c.0, c.1, h.0, h.1, a.0, a.1, l.0, l.1
    );
    for client in watching.iter() {
        client.close();
    }
}

#[tokio::main]
async fn main() {
    let Some(url) = fresh_database() else {
        println!("replicas: skipped (no PostgreSQL binaries; see the line above)");
        return;
    };
    let a = TestServer::builder()
        .database_url(url.clone())
        .start()
        .await;
    let mut admin = a.admin().await;
    admin
        .create_environment(pb::CreateEnvironmentRequest {
            environment: "bench".into(),
            ..Default::default()
        })
        .await
        .expect("environment");
    let flags = (0..FLAGS).map(|i| flag(&format!("flag-{i:03}"))).collect();
    admin
        .apply(pb::ApplyRequest {
            environment: "bench".into(),
            source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                flags,
                segments: vec![],
            })),
            ..Default::default()
        })
        .await
        .expect("seed the flags");
    let sdk = admin
        .create_token(pb::CreateTokenRequest {
            name: "bench-sdk".into(),
            role: pb::Role::Sdk.into(),
            environment: "bench".into(),
        })
        .await
        .expect("sdk token")
        .into_inner()
        .secret;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().expect("a data directory");
        std::fs::write(dir.path().join("admin.token"), &a.admin_token).expect("admin token");
        replicas.push(
            TestServer::builder()
                .database_url(url.clone())
                .data_dir(dir)
                .start()
                .await,
        );
    }
    for clients in [1, 100] {
        propagate(&a, &replicas[0], clients, &sdk).await;
    }
}
