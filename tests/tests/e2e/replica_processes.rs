//! Three real flagstaffd processes on one PostgreSQL database, and what losing one does
//! (DESIGN.md section 7): a replica killed with `kill -9` under a write load loses no
//! acknowledged write and its SDK clients resume on another without a snapshot; a leader
//! killed, or frozen with `SIGSTOP` and later let go on, is replaced, and every stage of a
//! rollout plan advances exactly once. On sled these tests do nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flagstaff::{Client, Context};
use flagstaff_proto::pb;
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::process::Flagstaffd;
use flagstaff_tests::watcher::{subscribe, State, Watcher};
use flagstaff_tests::{eventually_within, store_kind, Admin, StoreKind, PATIENCE};

use super::fixtures::*;

/// The SDK clients connected to the replica that is killed.
const CLIENTS: usize = 50;
/// Flags the write load toggles.
const FLAGS: usize = 4;
/// Within how long another replica leads once the leader is gone: the lease expires 6 s
/// after its last renewal, and the others try for it every 2 s.
const TAKEOVER: Duration = Duration::from_secs(10);
/// What the leaders log when leadership changes.
const LEADS: &str = "this flagstaffd leads";
const FOLLOWS: &str = "another flagstaffd leads";

/// Three flagstaffd processes on one fresh database, the first having created
/// `production`; `None` on sled, or when PostgreSQL is skipped.
async fn replicas() -> Option<Vec<Flagstaffd>> {
    if store_kind() != StoreKind::Postgres {
        return None;
    }
    let url = fresh_database()?;
    let first = Flagstaffd::start(&url, None, &[]);
    create_environment(&mut first.admin().await, "production").await;
    let token = first.admin_token();
    let mut replicas = vec![first];
    for _ in 1..3 {
        replicas.push(Flagstaffd::start(&url, Some(&token), &[]));
    }
    Some(replicas)
}

/// The one replica that leads, once exactly one says so (having said nothing since).
fn leader(replicas: &[Flagstaffd]) -> usize {
    let deadline = Instant::now() + TAKEOVER;
    loop {
        let leading: Vec<usize> = (0..replicas.len())
            .filter(|&i| leads(&replicas[i]))
            .collect();
        if let [one] = leading[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no single leader: {leading:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the last thing `replica` logged about leadership is that it leads.
fn leads(replica: &Flagstaffd) -> bool {
    replica
        .lines()
        .iter()
        .rev()
        .find(|l| l.contains(LEADS) || l.contains(FOLLOWS))
        .is_some_and(|l| l.contains(LEADS))
}

/// An SDK client of `production` trying `endpoints` in order, ready.
async fn client(endpoints: &[&str], token: &str, n: usize) -> Client {
    let mut builder = sdk_builder(endpoints[0].to_owned(), token, &format!("service-{n}"));
    for endpoint in &endpoints[1..] {
        builder = builder.fallback_endpoint(*endpoint);
    }
    let client = builder.build().expect("client");
    client.wait_ready(PATIENCE).await.expect("ready");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_replica_killed_under_writes_resume_on_another_and_no_write_is_lost() {
    let Some(mut replicas) = replicas().await else {
        return;
    };
    let mut admin = replicas[1].admin().await;
    for i in 0..FLAGS {
        create_flag(&mut admin, "production", boolean_flag(&format!("w{i}"))).await;
    }
    // Made through the replica the clients connect to, which then knows it at once.
    let token = sdk_token_of(&mut replicas[0].admin().await).await;
    let endpoints: Vec<String> = replicas.iter().map(|r| r.endpoint().to_owned()).collect();
    let killed = endpoints[0].clone();
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        // Every client streams from the replica about to be killed, the others behind it.
        let order: Vec<&str> = endpoints.iter().map(String::as_str).collect();
        clients.push(client(&order, &token, n).await);
    }
    for c in &clients {
        assert_eq!(c.status().endpoint.as_deref(), Some(killed.as_str()));
    }
    // And one more instance on that replica, which applies the revision it has and no other:
    // it does not fail over, as an SDK partitioned from the others would not.
    let mut sync = replicas[0].sync_with(&token).await;
    let start = subscribe("stuck", "production", &State::default());
    let mut stuck = Watcher::open(&mut sync, start, State::default())
        .await
        .expect("watching");
    let revision = clients[0].status().revision;
    stuck.until(revision, PATIENCE).await;

    // Writes through the second replica, before, during and after the kill; each
    // acknowledged one is remembered.
    let writer = tokio::spawn(async move {
        let mut acknowledged: HashMap<String, bool> = HashMap::new();
        let mut last = 0;
        let started = Instant::now();
        for n in 0.. {
            if started.elapsed() > Duration::from_secs(4) {
                break;
            }
            let key = format!("w{}", n % FLAGS);
            let on = (n / FLAGS).is_multiple_of(2);
            if let Ok(revision) = try_serve(&mut admin, &key, on).await {
                acknowledged.insert(key, on);
                last = last.max(revision);
            }
        }
        (acknowledged, last)
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let killed_at = Instant::now();
    replicas.remove(0).kill();
    let mut moved = Duration::ZERO;
    for c in &clients {
        eventually_within(
            "the client streaming from a surviving replica",
            PATIENCE,
            async || c.status().endpoint.as_deref().is_some_and(|e| e != killed),
        )
        .await;
        moved = killed_at.elapsed();
    }
    let (acknowledged, last) = writer.await.expect("the writer");
    drop(stuck);
    println!("kill -9 under writes: {CLIENTS} clients on surviving replicas {moved:?} after the kill; {} flags written, last revision {last}", acknowledged.len());
    assert_eq!(acknowledged.len(), FLAGS, "every flag written");

    for (n, c) in clients.iter().enumerate() {
        eventually_within("the client at the last revision", PATIENCE, async || {
            c.status().revision >= last
        })
        .await;
        for (key, on) in &acknowledged {
            assert_eq!(
                c.bool_value(key, &Context::new("user-1"), !on),
                *on,
                "client {n}: {key}"
            );
        }
        let stats = c.stats();
        assert_eq!(stats.failovers, 1, "client {n}: {stats:?}");
        assert_eq!(
            stats.snapshots, 1,
            "client {n} resumed without one: {stats:?}"
        );
        assert_eq!(stats.resyncs, 0, "client {n}: {stats:?}");
    }
    // `--wait` through a surviving replica names the instance that has not applied the last
    // revision: the killed replica's, shown connected until it has been silent for 30 s.
    let mut admin = replicas[0].admin().await;
    let waited = admin
        .wait_for_revision(pb::WaitForRevisionRequest {
            environment: "production".into(),
            revision: last,
            timeout_ms: 500,
        })
        .await
        .expect("waited")
        .into_inner();
    assert!(!waited.complete, "{waited:?}");
    let pending: Vec<&str> = waited
        .pending
        .iter()
        .map(|p| p.instance_id.as_str())
        .collect();
    assert_eq!(pending, vec!["stuck"], "{waited:?}");
    assert_eq!(waited.applied as usize, CLIENTS, "{waited:?}");

    // And what the database holds is what was acknowledged.
    for (key, on) in &acknowledged {
        let flag = get_flag(&mut admin, key).await;
        let serves = flag.default.and_then(|s| s.serve).expect("a default serve");
        let want = if *on { "on" } else { "off" };
        assert_eq!(serves, pb::serve::Serve::Variant(want.to_owned()), "{key}");
    }
}

/// Sets `key`'s default serve; the revision it made, or why it failed.
async fn try_serve(admin: &mut Admin, key: &str, on: bool) -> Result<u64, tonic::Status> {
    let variant = if on { "on" } else { "off" }.to_owned();
    admin
        .set_default_serve(pb::SetDefaultServeRequest {
            environment: "production".into(),
            key: key.into(),
            serve: Some(pb::Serve {
                serve: Some(pb::serve::Serve::Variant(variant)),
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().revision)
}

async fn sdk_token_of(admin: &mut Admin) -> String {
    admin
        .create_token(pb::CreateTokenRequest {
            name: "sdk".into(),
            role: pb::Role::Sdk as i32,
            environment: "production".into(),
        })
        .await
        .expect("token")
        .into_inner()
        .secret
}

async fn get_flag(admin: &mut Admin, key: &str) -> pb::Flag {
    admin
        .get_flag(pb::GetFlagRequest {
            environment: "production".into(),
            key: key.into(),
        })
        .await
        .expect("the flag")
        .into_inner()
        .flag
        .expect("a flag")
}

/// Starts a plan of `banner` through `admin`: 10% and 50%, each held `hold`, then 100%.
async fn start_plan(admin: &mut Admin, hold: Duration) {
    let hold_ms = u64::try_from(hold.as_millis()).expect("a hold");
    let stage = |percent, hold_ms| pb::RolloutStage { percent, hold_ms };
    admin
        .start_rollout(pb::StartRolloutRequest {
            environment: "production".into(),
            flag: "banner".into(),
            target_variant: "on".into(),
            stages: vec![
                stage(10_000, hold_ms),
                stage(50_000, hold_ms),
                stage(100_000, 0),
            ],
            ..Default::default()
        })
        .await
        .expect("plan started");
}

/// Waits until the plan of `banner` completed; checks every step happened once.
async fn completes_once(admin: &mut Admin, limit: Duration) {
    let done = eventually_within("the plan to complete", limit, async || {
        let p = plan(admin, "banner").await;
        (p.state == pb::RolloutState::Completed as i32).then_some(p)
    })
    .await;
    let kinds: Vec<i32> = done.history.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            pb::RolloutEventKind::Started as i32,
            pb::RolloutEventKind::Advanced as i32,
            pb::RolloutEventKind::Completed as i32,
        ],
        "{done:?}"
    );
    // One flag write per step in the audit log.
    let history = admin
        .list_history(pb::ListHistoryRequest {
            environment: "production".into(),
            flag: "banner".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    let steps = history
        .entries
        .iter()
        .filter(|e| e.actor == "rollout:banner")
        .count();
    assert_eq!(steps, 2, "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leaders_plan_advances_once_on_the_replica_that_takes_over() {
    let Some(mut replicas) = replicas().await else {
        return;
    };
    let lead = leader(&replicas);
    let mut admin = replicas[(lead + 1) % 3].admin().await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    start_plan(&mut admin, Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    replicas.remove(lead).kill();
    let next = leader(&replicas);
    println!(
        "kill -9 of the leader: another replica leads {:?} after",
        killed_at.elapsed()
    );
    completes_once(&mut admin, TAKEOVER + PATIENCE).await;
    assert!(leads(&replicas[next]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_once_thawed_changes_nothing() {
    let Some(replicas) = replicas().await else {
        return;
    };
    let lead = leader(&replicas);
    let mut admin = replicas[(lead + 1) % 3].admin().await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    start_plan(&mut admin, Duration::from_secs(2)).await;
    let frozen_at = Instant::now();
    replicas[lead].freeze();
    let others: Vec<&Flagstaffd> = (0..3)
        .filter(|&i| i != lead)
        .map(|i| &replicas[i])
        .collect();
    let deadline = Instant::now() + TAKEOVER;
    while !others.iter().any(|r| leads(r)) {
        assert!(
            Instant::now() < deadline,
            "no replica took over the frozen leader's lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "SIGSTOP of the leader: another replica leads {:?} after",
        frozen_at.elapsed()
    );
    completes_once(&mut admin, PATIENCE).await;

    // Let go on, the old leader finds it no longer leads, and writes nothing more.
    replicas[lead].thaw();
    replicas[lead].wait_for_line(FOLLOWS);
    tokio::time::sleep(Duration::from_secs(3)).await;
    completes_once(&mut admin, PATIENCE).await;
    assert_ne!(
        leader(&replicas),
        lead,
        "the lease stays with the replica that took it"
    );
}
