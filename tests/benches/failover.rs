//! Failover after `kill -9` of a replica:
//! `cargo build --release -p flagstaff-server --bin flagstaffd && cargo bench -p flagstaff-tests --bench failover`.
//!
//! Three flagstaffd processes (the release binary) on one fresh database of a PostgreSQL
//! cluster the test harness starts. 100 SDK clients with the SDK's default settings are given
//! the three replicas' addresses, the first first, and stream from it. The first is killed
//! with `kill -9`, a change is written through the second at once, and the clock runs until
//! every client streams from a surviving replica and until every client applied the change.
//! Five rounds, each on a fresh database and fresh processes.

use std::time::{Duration, Instant};

use flagstaff_proto::pb;
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::process::Flagstaffd;

// The SDK clients here are given several endpoints: `common::watching` is not used.
#[allow(dead_code)]
mod common;
use common::{flag, percentiles};

const CLIENTS: usize = 100;
const ROUNDS: usize = 5;

/// One round: how long after the kill the last client streamed from another replica, and
/// applied the change written there.
async fn round() -> (Duration, Duration) {
    let url = fresh_database().expect("PostgreSQL for the benchmark");
    let first = Flagstaffd::start(&url, None, &[]);
    let token = first.admin_token();
    let mut admin = first.admin().await;
    admin
        .create_environment(pb::CreateEnvironmentRequest {
            environment: "bench".into(),
            protected: false,
        })
        .await
        .expect("environment");
    admin
        .create_flag(pb::CreateFlagRequest {
            environment: "bench".into(),
            flag: Some(flag("checkout")),
            ..Default::default()
        })
        .await
        .expect("flag");
    let sdk = admin
        .create_token(pb::CreateTokenRequest {
            name: "bench".into(),
            role: pb::Role::Sdk as i32,
            environment: "bench".into(),
        })
        .await
        .expect("token")
        .into_inner()
        .secret;
    let second = Flagstaffd::start(&url, Some(&token), &[]);
    let third = Flagstaffd::start(&url, Some(&token), &[]);
    let killed = first.endpoint().to_owned();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let client = flagstaff::Client::builder(killed.clone(), sdk.clone())
            .application("bench-failover")
            .fallback_endpoint(second.endpoint())
            .fallback_endpoint(third.endpoint())
            .build()
            .expect("client");
        client
            .wait_ready(Duration::from_secs(60))
            .await
            .expect("every client gets its snapshot");
        clients.push(client);
    }
    let mut writer = second.admin().await;

    let killed_at = Instant::now();
    first.kill();
    let revision = writer
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "bench".into(),
            key: "checkout".into(),
            enabled: false,
            ..Default::default()
        })
        .await
        .expect("a write through a surviving replica")
        .into_inner()
        .revision;
    let (mut moved, mut applied) = (None, None);
    let deadline = killed_at + Duration::from_secs(120);
    while moved.is_none() || applied.is_none() {
        assert!(Instant::now() < deadline, "every client fails over");
        if moved.is_none()
            && clients
                .iter()
                .all(|c| c.status().endpoint.as_deref().is_some_and(|e| e != killed))
        {
            moved = Some(killed_at.elapsed());
        }
        if applied.is_none() && clients.iter().all(|c| c.status().revision >= revision) {
            applied = Some(killed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for c in &clients {
        assert_eq!(c.stats().snapshots, 1, "resumed without a snapshot");
    }
    (moved.unwrap_or_default(), applied.unwrap_or_default())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("failover after kill -9 of the replica {CLIENTS} SDK clients (default settings) stream from; a change written through another at once");
    let (mut moved, mut applied) = (Vec::new(), Vec::new());
    for n in 1..=ROUNDS {
        let (m, a) = round().await;
        println!(
            "round {n}: every client streaming from another replica {:.0} ms after the kill, every client applied the change {:.0} ms after",
            m.as_secs_f64() * 1e3,
            a.as_secs_f64() * 1e3
        );
        moved.push(m);
        applied.push(a);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let worst = |samples: &[Duration]| samples.iter().copied().max().unwrap_or_default();
    let (moved_p50, _) = percentiles(moved.clone());
    let (applied_p50, _) = percentiles(applied.clone());
    println!(
        "over {ROUNDS} rounds: all moved in {:.0} ms median, {:.0} ms worst; all applied the change in {:.0} ms median, {:.0} ms worst (target: under 5 s)",
        ms(moved_p50),
        ms(worst(&moved)),
        ms(applied_p50),
        ms(worst(&applied))
    );
}
