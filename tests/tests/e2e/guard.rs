//! `Sync.ReportMetrics` and rollout guards against the real server: reports feed flag usage
//! and a guarded plan's counts, and a guard that rejects the target rolls the plan back at
//! once, with its counts and statistic in the audit log.

use std::sync::Arc;

use flagstaff_proto::pb;
use flagstaff_server::clock::ManualClock;
use flagstaff_tests::{Sync, TestServer};
use tonic::Code;

use super::fixtures::*;

const HOUR: u64 = 3_600_000;

/// One window of `checkout` at `version`: exposures and `checkout_error` events of the target
/// (`on`) and the baseline (`off`).
pub(super) fn window(version: u64, exposures: (u64, u64), events: (u64, u64)) -> pb::MetricsWindow {
    let evaluation = |variant: &str, count| pb::EvaluationCount {
        flag: "checkout".into(),
        variant: variant.into(),
        version,
        count,
    };
    let attribution = |variant: &str, count| pb::EventAttribution {
        flag: "checkout".into(),
        variant: variant.into(),
        version,
        count,
    };
    pb::MetricsWindow {
        start_unix_ms: 1_800_000_000_000,
        end_unix_ms: 1_800_000_010_000,
        evaluations: vec![
            evaluation("on", exposures.0),
            evaluation("off", exposures.1),
        ],
        events: vec![pb::EventCount {
            event: "checkout_error".into(),
            count: events.0 + events.1,
            attributions: vec![attribution("on", events.0), attribution("off", events.1)],
        }],
    }
}

async fn report(sync: &mut Sync, windows: Vec<pb::MetricsWindow>) -> pb::ReportMetricsResponse {
    sync.report_metrics(pb::ReportMetricsRequest {
        instance_id: "instance-1".into(),
        windows,
        ..Default::default()
    })
    .await
    .expect("report accepted")
    .into_inner()
}

#[tokio::test]
async fn a_guard_rolls_back_a_target_with_too_many_events_and_records_why() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (server, mut admin) = server_on(&clock).await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let started = start_guarded(&mut admin).await;
    let version = started.flag_version;
    let token = sdk_token(&server, "checkout-service", "production").await;
    let mut sync = server.sync_with(&token).await;

    // Equal rates (1% each): the guard watches and says nothing.
    let answer = report(&mut sync, vec![window(version, (1_000, 9_000), (10, 90))]).await;
    assert_eq!(
        answer.guards,
        vec![pb::GuardedFlag {
            flag: "checkout".into(),
            event: "checkout_error".into()
        }]
    );
    let watched = plan(&mut admin, "checkout").await;
    assert_eq!(watched.state, pb::RolloutState::Running as i32);
    let status = watched.guard_status.expect("a guard status");
    assert_eq!(
        (
            status.flag_version,
            status.target_exposures,
            status.baseline_exposures,
            status.target_events,
            status.baseline_events
        ),
        (version, 1_000, 9_000, 10, 90)
    );
    assert_eq!(status.state, pb::GuardState::Monitoring as i32);
    assert!(
        (status.null_share - 15.0 / 105.0).abs() < 1e-9,
        "{status:?}"
    );
    assert!(status.statistic < 1.0, "{status:?}");
    assert_eq!(status.threshold, 40.0, "two tested stages at 5% in all");

    // Counts of another version are not this stage's.
    report(&mut sync, vec![window(version - 1, (0, 0), (500, 0))]).await;
    let status = plan(&mut admin, "checkout")
        .await
        .guard_status
        .expect("a guard status");
    assert_eq!(
        status.target_events, 10,
        "another version's events are ignored"
    );

    // The target at 6% against the baseline's 1%: rolled back by this very report.
    let answer = report(&mut sync, vec![window(version, (1_000, 9_000), (60, 90))]).await;
    assert!(answer.guards.is_empty(), "{answer:?}");
    let rolled_back = plan(&mut admin, "checkout").await;
    assert_eq!(rolled_back.state, pb::RolloutState::RolledBack as i32);
    let status = rolled_back.guard_status.expect("a guard status");
    assert_eq!(status.state, pb::GuardState::Rejected as i32);
    assert_eq!((status.target_events, status.baseline_events), (70, 180));
    assert!(status.statistic >= status.threshold, "{status:?}");
    let flag = get_flag(&mut admin, "production", "checkout").await;
    assert_eq!(
        flag.default.and_then(|s| s.serve),
        Some(pb::serve::Serve::Variant("off".into())),
        "the baseline is served to everyone"
    );
    let last = rolled_back.history.last().expect("history");
    assert_eq!(last.kind, pb::RolloutEventKind::RolledBack as i32);
    assert_eq!(last.actor, "rollout:checkout");

    let history = admin
        .list_history(pb::ListHistoryRequest {
            environment: "production".into(),
            flag: "checkout".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    let entry = history.entries.first().expect("an entry");
    assert_eq!(entry.operation, "RolloutGuardRollback");
    assert_eq!(entry.actor, "rollout:checkout");
    for part in [
        "guard \"checkout_error\" rejected the target",
        "target 70 events (3.500% of 2000 exposures)",
        "baseline 180 events (1.000% of 18000 exposures)",
        "statistic",
    ] {
        assert!(
            entry.comment.contains(part),
            "{part:?} in {}",
            entry.comment
        );
    }

    // Later reports change nothing.
    let revision_after = revision(&mut admin, "production").await;
    report(&mut sync, vec![window(version, (1_000, 9_000), (600, 0))]).await;
    assert_eq!(revision(&mut admin, "production").await, revision_after);
}

#[tokio::test]
async fn counts_start_again_at_each_stage() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (server, mut admin) = server_on(&clock).await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let first = start_guarded(&mut admin).await.flag_version;
    let token = sdk_token(&server, "checkout-service", "production").await;
    let mut sync = server.sync_with(&token).await;
    report(&mut sync, vec![window(first, (1_000, 9_000), (20, 100))]).await;

    clock.advance(std::time::Duration::from_millis(HOUR));
    let second = eventually("the advance to 50%", async || {
        let p = plan(&mut admin, "checkout").await;
        (p.stage_index == 1).then_some(p)
    })
    .await;
    assert_eq!(second.stage_index, 1, "advanced to 50%");
    let status = second.guard_status.expect("a guard status");
    assert_eq!(
        (
            status.flag_version,
            status.target_events,
            status.baseline_events
        ),
        (second.flag_version, 0, 0)
    );
    assert_eq!(status.state, pb::GuardState::Collecting as i32);
    // 50% against 50% at a ratio of 1.5: 0.6.
    assert!((status.null_share - 0.6).abs() < 1e-9, "{status:?}");

    // A late report of the first stage does not count in the second.
    report(&mut sync, vec![window(first, (1_000, 9_000), (20, 100))]).await;
    report(
        &mut sync,
        vec![window(second.flag_version, (5_000, 5_000), (30, 30))],
    )
    .await;
    let status = plan(&mut admin, "checkout")
        .await
        .guard_status
        .expect("a guard status");
    assert_eq!((status.target_events, status.baseline_events), (30, 30));
    assert_eq!(status.state, pb::GuardState::Monitoring as i32);
}

#[tokio::test]
async fn reports_feed_flag_usage() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (server, mut admin) = server_on(&clock).await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    create_flag(&mut admin, "production", boolean_flag("unused")).await;
    let token = sdk_token(&server, "checkout-service", "production").await;
    let mut sync = server.sync_with(&token).await;
    let answer = report(&mut sync, vec![window(2, (3, 4), (0, 0)); 2]).await;
    assert!(answer.guards.is_empty());

    assert_eq!(
        usage(&mut admin, "checkout").await,
        pb::FlagUsage {
            evaluations: 14,
            last_evaluated_unix_ms: 1_800_000_010_000
        }
    );
    assert_eq!(usage(&mut admin, "unused").await, pb::FlagUsage::default());

    // Usage survives a restart.
    let data = server.stop().await;
    let server = TestServer::builder()
        .data_dir(data)
        .clock(clock.clone())
        .start()
        .await;
    let checkout = usage(&mut server.admin().await, "checkout").await;
    assert_eq!(checkout.evaluations, 14);
}

#[tokio::test]
async fn bad_reports_are_refused_and_count_nothing() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (server, mut admin) = server_on(&clock).await;
    create_environment(&mut admin, "staging").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let token = sdk_token(&server, "checkout-service", "production").await;
    let mut sync = server.sync_with(&token).await;
    let send = |windows: Vec<pb::MetricsWindow>, environment: &str| pb::ReportMetricsRequest {
        instance_id: "instance-1".into(),
        environment: environment.into(),
        windows,
        ..Default::default()
    };

    let mut backwards = window(2, (1, 1), (0, 0));
    backwards.end_unix_ms = backwards.start_unix_ms - 1;
    let message = refused(
        sync.report_metrics(send(vec![window(2, (5, 5), (0, 0)), backwards], ""))
            .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("windows[1]: ends at"), "{message}");

    let mut unnamed = window(2, (1, 1), (0, 0));
    unnamed.evaluations[1].flag.clear();
    let message = refused(
        sync.report_metrics(send(vec![unnamed], "")).await,
        Code::InvalidArgument,
    );
    assert!(
        message.contains("windows[0].evaluations[1].flag"),
        "{message}"
    );

    let mut no_variant = window(2, (1, 1), (1, 1));
    no_variant.events[0].attributions[0].variant.clear();
    let message = refused(
        sync.report_metrics(send(vec![no_variant], "")).await,
        Code::InvalidArgument,
    );
    assert!(
        message.contains("windows[0].events[0].attributions[0].variant"),
        "{message}"
    );

    let message = refused(
        sync.report_metrics(send(vec![window(2, (1, 1), (0, 0))], "staging"))
            .await,
        Code::PermissionDenied,
    );
    assert!(message.contains("staging"), "{message}");

    let mut stranger = server.sync_with("fs_not_a_token").await;
    refused(
        stranger
            .report_metrics(send(vec![window(2, (1, 1), (0, 0))], ""))
            .await,
        Code::Unauthenticated,
    );

    assert_eq!(
        usage(&mut admin, "checkout").await,
        pb::FlagUsage::default(),
        "nothing of a refused report was counted"
    );
}
