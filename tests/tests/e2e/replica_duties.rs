//! The exactly-one duties of several flagstaffd on one PostgreSQL database (DESIGN.md section
//! 7): one replica holds the leader's lease and alone advances rollout plans and decides
//! guards; another takes over when it stops; a plan's state is compare-and-set on its own
//! version, so a pause through any replica beats a due advance on the leader; and a guard
//! decides on what SDKs reported through every replica. On sled these tests do nothing.

use std::sync::Arc;
use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_server::clock::ManualClock;
use flagstaff_server::storage::{
    AuditEntry, Change, EnvironmentRecord, Lease, PgStore, RolloutRecord, Store, StoreError,
};
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::{eventually_within, store_kind, Admin, StoreKind, TestServer};

use super::fixtures::*;
use super::guard::window;

const HOUR: u64 = 3_600_000;
const REPLICAS: usize = 3;
/// Within how long another replica leads once the leader stopped: it gives the lease up as
/// it stops, and the others try for it every 2 s.
const TAKEOVER: Duration = Duration::from_secs(10);
/// Within how long another replica leads once the leader stopped cleanly, giving the lease up.
const GIVEN_UP: Duration = Duration::from_secs(4);

/// `REPLICAS` servers on one fresh database going by `clock`, with the environment
/// `production`; `None` on sled, or when PostgreSQL is skipped.
async fn replicas(clock: &Arc<ManualClock>) -> Option<Vec<TestServer>> {
    if store_kind() != StoreKind::Postgres {
        return None;
    }
    let url = fresh_database()?;
    let first = TestServer::builder()
        .database_url(url.clone())
        .clock(clock.clone())
        .start()
        .await;
    create_environment(&mut first.admin().await, "production").await;
    let mut servers = vec![first];
    for _ in 1..REPLICAS {
        let server = another_replica(&servers[0], TestServer::builder().clock(clock.clone())).await;
        servers.push(server);
    }
    Some(servers)
}

/// The index of the one replica that leads, once exactly one does.
async fn leader(servers: &[TestServer]) -> usize {
    leader_within(servers, TAKEOVER).await
}

/// [`leader`], within `limit`.
async fn leader_within(servers: &[TestServer], limit: Duration) -> usize {
    eventually_within("exactly one replica to lead", limit, async || {
        let leading: Vec<usize> = (0..servers.len())
            .filter(|&i| servers[i].environments.leads())
            .collect();
        (leading.len() == 1).then(|| leading[0])
    })
    .await
}

/// Starts a plan rolling `on` out to `flag`: 10% then 50% for an hour each, then 100%.
async fn start_plan(admin: &mut Admin, flag: &str) -> pb::RolloutPlan {
    let stage = |percent, hold_ms| pb::RolloutStage { percent, hold_ms };
    admin
        .start_rollout(pb::StartRolloutRequest {
            environment: "production".into(),
            flag: flag.into(),
            target_variant: "on".into(),
            stages: vec![stage(10_000, HOUR), stage(50_000, HOUR), stage(100_000, 0)],
            ..Default::default()
        })
        .await
        .expect("plan started")
        .into_inner()
        .plan
        .expect("a plan")
}

/// The plan's events of `kind`.
fn events(plan: &pb::RolloutPlan, kind: pb::RolloutEventKind) -> usize {
    plan.history
        .iter()
        .filter(|e| e.kind == kind as i32)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_another_takes_over_when_it_stops() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let Some(mut servers) = replicas(&clock).await else {
        return;
    };
    let first = leader(&servers).await;
    let stopped = servers.remove(first);
    stopped.stop().await;
    // It gave the lease up as it stopped: another takes it at its next try (every 2 s), not
    // after the lease expired (6 s after its last renewal).
    let next = leader_within(&servers, GIVEN_UP).await;

    // The new leader runs the plans: one started through the other replica advances.
    let other = 1 - next;
    let mut admin = servers[other].admin().await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    start_plan(&mut admin, "banner").await;
    clock.advance(Duration::from_millis(HOUR));
    let advanced = eventually_within("the plan to advance", TAKEOVER, async || {
        let p = plan(&mut admin, "banner").await;
        (p.stage_index == 1).then_some(p)
    })
    .await;
    assert_eq!(events(&advanced, pb::RolloutEventKind::Advanced), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stage_advances_once_with_plans_started_on_every_replica() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let Some(servers) = replicas(&clock).await else {
        return;
    };
    leader(&servers).await;
    let mut admins = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let mut admin = server.admin().await;
        let flag = format!("banner-{i}");
        create_flag(&mut admin, "production", boolean_flag(&flag)).await;
        start_plan(&mut admin, &flag).await;
        admins.push(admin);
    }
    for stage in 1..=2u32 {
        clock.advance(Duration::from_millis(HOUR));
        for (i, admin) in admins.iter_mut().enumerate() {
            let flag = format!("banner-{i}");
            eventually_within("the plan's next stage", TAKEOVER, async || {
                plan(admin, &flag).await.stage_index == stage
            })
            .await;
        }
    }
    for (i, admin) in admins.iter_mut().enumerate() {
        let p = plan(admin, &format!("banner-{i}")).await;
        assert_eq!(p.state, pb::RolloutState::Completed as i32, "{p:?}");
        assert_eq!(events(&p, pb::RolloutEventKind::Advanced), 1, "{p:?}");
        assert_eq!(events(&p, pb::RolloutEventKind::Completed), 1, "{p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_through_any_replica_beats_a_due_advance_on_the_leader() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let Some(servers) = replicas(&clock).await else {
        return;
    };
    let lead = leader(&servers).await;
    let other = (lead + 1) % REPLICAS;
    let mut admin = servers[other].admin().await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    start_plan(&mut admin, "banner").await;
    let url = servers[0].database_url.clone().expect("a database");
    for round in 0..5 {
        // Every replica's listening connection cut: the leader hears of the pause only
        // after it reconnects, while the advance falls due at once.
        cut_listening_connections(&url).await;
        let paused = admin
            .pause_rollout(pb::PauseRolloutRequest {
                environment: "production".into(),
                flag: "banner".into(),
                ..Default::default()
            })
            .await
            .expect("paused")
            .into_inner()
            .plan
            .expect("a plan");
        clock.advance(Duration::from_millis(HOUR));
        tokio::time::sleep(Duration::from_millis(500)).await;
        for server in &servers {
            let p = plan(&mut server.admin().await, "banner").await;
            assert_eq!(
                p.state,
                pb::RolloutState::Paused as i32,
                "round {round}: {p:?}"
            );
            assert_eq!(p.stage_index, paused.stage_index, "round {round}: {p:?}");
        }
        admin
            .resume_rollout(pb::ResumeRolloutRequest {
                environment: "production".into(),
                flag: "banner".into(),
                ..Default::default()
            })
            .await
            .expect("resumed");
    }
    let p = plan(&mut admin, "banner").await;
    assert_eq!(events(&p, pb::RolloutEventKind::Advanced), 0, "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_right_after_a_resume_through_another_replica_pauses_the_plan() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let Some(servers) = replicas(&clock).await else {
        return;
    };
    let (mut a, mut b) = (servers[0].admin().await, servers[1].admin().await);
    create_flag(&mut a, "production", boolean_flag("banner")).await;
    start_plan(&mut a, "banner").await;
    let flag_rollout = pb::PauseRolloutRequest {
        environment: "production".into(),
        flag: "banner".into(),
        ..Default::default()
    };
    a.pause_rollout(flag_rollout).await.expect("paused");
    eventually_within("B to hold the paused plan", TAKEOVER, async || {
        servers[1]
            .environments
            .get("production")
            .ok()
            .and_then(|env| env.rollout("banner"))
            .is_some_and(|p| p.state == flagstaff_server::storage::RolloutState::Paused)
    })
    .await;

    // Resumed through A while B hears nothing (its listening connection cut), then edited
    // by hand through B at once: the edit pauses the plan, as on one server.
    cut_listening_connections(servers[0].database_url.as_deref().expect("a database")).await;
    a.resume_rollout(pb::ResumeRolloutRequest {
        environment: "production".into(),
        flag: "banner".into(),
        ..Default::default()
    })
    .await
    .expect("resumed");
    let edited = b
        .set_default_serve(pb::SetDefaultServeRequest {
            environment: "production".into(),
            key: "banner".into(),
            serve: Some(split(&[("on", 30_000), ("off", 70_000)])),
            ..Default::default()
        })
        .await
        .expect("edited")
        .into_inner();
    assert_eq!(edited.paused_rollouts, vec!["banner".to_owned()]);
    eventually_within("A to show the plan paused", TAKEOVER, async || {
        plan(&mut a, "banner").await.state == pb::RolloutState::Paused as i32
    })
    .await;
}

/// Ends every connection listening for commits on the database at `url`.
async fn cut_listening_connections(url: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("a connection to the database");
    tokio::spawn(connection);
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .expect("listening connections ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_decides_on_what_sdks_reported_through_every_replica() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let Some(servers) = replicas(&clock).await else {
        return;
    };
    let lead = leader(&servers).await;
    let mut admin = servers[lead].admin().await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let version = start_guarded(&mut admin).await.flag_version;
    let token = sdk_token(&servers[0], "checkout-service", "production").await;

    // Each of the two other replicas hears half of a bad stage: 40 events of the 50 the
    // guard needs before it decides anything, the target at 4% against the baseline's
    // 0.44%.
    let others: Vec<usize> = (0..REPLICAS).filter(|&n| n != lead).collect();
    for (reported, &n) in others.iter().enumerate() {
        let server = &servers[n];
        // As an SDK reports for the flag version it got from this replica's stream, which
        // has then applied the plan's start.
        eventually_within("the replica to hold the plan", TAKEOVER, async || {
            server
                .environments
                .get("production")
                .ok()
                .and_then(|env| env.rollout("checkout"))
                .is_some()
        })
        .await;
        let mut sync = server.sync_with(&token).await;
        let request = pb::ReportMetricsRequest {
            instance_id: format!("instance-{n}"),
            windows: vec![window(version, (500, 4_500), (20, 20))],
            ..Default::default()
        };
        // Refused, and so counting nothing, until the replica heard of the token.
        let answer = eventually_within("the report accepted", TAKEOVER, async || {
            sync.report_metrics(request.clone())
                .await
                .ok()
                .map(tonic::Response::into_inner)
        })
        .await;
        assert_eq!(answer.guards.len(), 1, "not decided here: {answer:?}");
        if reported == 0 {
            // Any replica shows the counts summed so far, also one that heard no report.
            let mut elsewhere = servers[others[1]].admin().await;
            let status = plan(&mut elsewhere, "checkout")
                .await
                .guard_status
                .expect("a guard status");
            assert_eq!((status.target_events, status.baseline_events), (20, 20));
            assert_eq!(status.state, pb::GuardState::Collecting as i32);
        }
    }
    let rolled_back = eventually_within("the guard's rollback", TAKEOVER, async || {
        let p = plan(&mut admin, "checkout").await;
        (p.state == pb::RolloutState::RolledBack as i32).then_some(p)
    })
    .await;
    let status = rolled_back.guard_status.expect("a guard status");
    assert_eq!((status.target_events, status.baseline_events), (40, 40));
    assert_eq!(
        (status.target_exposures, status.baseline_exposures),
        (1_000, 9_000)
    );
    assert_eq!(status.state, pb::GuardState::Rejected as i32);
}

/// A store of its own on a fresh database, with the environment `production`.
fn store() -> Option<(PgStore, String)> {
    if store_kind() != StoreKind::Postgres {
        return None;
    }
    let url = fresh_database()?;
    let store = PgStore::open(&url, None, 1_000).expect("the store opens");
    store
        .create_environment(&EnvironmentRecord {
            key: "production".to_owned(),
            epoch: "epoch-1".to_owned(),
            revision: 0,
            protected: false,
            created_ms: 0,
        })
        .expect("environment");
    Some((store, url))
}

/// An empty change making `revision`, by `actor`.
fn change(revision: u64, actor: &str) -> (Change, AuditEntry) {
    let change = Change {
        revision,
        ..Change::default()
    };
    let audit = AuditEntry {
        revision,
        time_ms: 0,
        actor: actor.to_owned(),
        comment: String::new(),
        operation: "Test".to_owned(),
        changes: Vec::new(),
    };
    (change, audit)
}

#[test]
fn a_duty_committed_after_the_lease_changed_hands_writes_nothing() {
    let Some((store, url)) = store() else {
        return;
    };
    let mut leadership = store.lead().expect("a leadership");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let lease: Lease = runtime.block_on(async {
        let held = tokio::time::timeout(TAKEOVER, leadership.wait_for(Option::is_some))
            .await
            .expect("the lease in time")
            .expect("the lease");
        held.expect("held")
    });

    // Held: a duty commits.
    let mut locked = store.lock_environment("production").expect("locked");
    locked.hold(lease);
    let (first, audit) = change(1, "rollout:banner");
    locked
        .commit(&first, &[], &audit, &[])
        .expect("a duty of the lease held");

    // The lease taken by another flagstaffd (as after this one froze past its term).
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("a connection");
        tokio::spawn(connection);
        client
            .execute(
                "UPDATE leases SET holder = 'another', generation = generation + 1",
                &[],
            )
            .await
            .expect("the lease taken");
    });
    let mut locked = store.lock_environment("production").expect("locked");
    locked.hold(lease);
    let (second, audit) = change(2, "rollout:banner");
    let refused = locked.commit(&second, &[], &audit, &[]);
    assert!(matches!(refused, Err(StoreError::LeaseLost)), "{refused:?}");
    assert_eq!(store.environment("production").expect("env").revision, 1);

    // Not a duty: any flagstaffd commits.
    let locked = store.lock_environment("production").expect("locked");
    let (second, audit) = change(2, "alice");
    locked.commit(&second, &[], &audit, &[]).expect("a write");
    drop(leadership);
}

#[test]
fn a_plan_written_over_a_version_it_was_not_built_on_is_refused() {
    let Some((store, _)) = store() else {
        return;
    };
    let plan = |version: u64, message: &str| RolloutRecord {
        version,
        state_message: message.to_owned(),
        ..sample_plan()
    };
    let locked = store.lock_environment("production").expect("locked");
    locked
        .commit_plans(&[plan(1, "first")])
        .expect("the first version");
    let locked = store.lock_environment("production").expect("locked");
    locked
        .commit_plans(&[plan(2, "paused")])
        .expect("the second version");

    // Built on version 1, as by a flagstaffd that had not heard of version 2.
    let locked = store.lock_environment("production").expect("locked");
    let refused = locked.commit_plans(&[plan(2, "advanced")]);
    assert!(
        matches!(&refused, Err(StoreError::PlanConflict { flag, .. }) if flag == "banner"),
        "{refused:?}"
    );
    // Also with a change: nothing of it is written.
    let locked = store.lock_environment("production").expect("locked");
    let (first, audit) = change(1, "rollout:banner");
    let refused = locked.commit(&first, &[], &audit, &[plan(2, "advanced")]);
    assert!(
        matches!(refused, Err(StoreError::PlanConflict { .. })),
        "{refused:?}"
    );
    assert_eq!(store.environment("production").expect("env").revision, 0);
    let stored = store.rollouts("production").expect("plans");
    assert_eq!(
        stored
            .iter()
            .map(|p| (p.version, p.state_message.as_str()))
            .collect::<Vec<_>>(),
        vec![(2, "paused")]
    );
}

/// A running plan of `banner`, as stored.
fn sample_plan() -> RolloutRecord {
    serde_json::from_value(serde_json::json!({
        "flag": "banner", "rule_id": null, "target": "on", "baseline": "off",
        "bucket_by": "key", "others": [],
        "stages": [{"percent": 10000, "hold_ms": 1000}, {"percent": 100000, "hold_ms": 0}],
        "state": "running", "stage_index": 0, "percent": 10000, "stage_started_ms": 0,
        "next_stage_ms": 1000, "state_message": "", "flag_version": 1, "created_ms": 0,
        "created_by": "alice", "history": [],
    }))
    .expect("a plan")
}
