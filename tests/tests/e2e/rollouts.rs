//! Staged rollout plans against the real server, on a manual clock: plans run start to
//! finish, stay sticky for real SDK clients, pause on a manual edit, and roll back on command.

use std::sync::Arc;
use std::time::Duration;

use flagstaff::Context;
use flagstaff_proto::pb;
use flagstaff_server::clock::ManualClock;
use flagstaff_tests::Admin;
use serde_json::json;
use tonic::Code;

use super::fixtures::*;

const HOUR: u64 = 3_600_000;

fn stages(spec: &[(u32, u64)]) -> Vec<pb::RolloutStage> {
    spec.iter()
        .map(|&(percent, hold_ms)| pb::RolloutStage { percent, hold_ms })
        .collect()
}

fn start(flag: &str, target: &str, stages: Vec<pb::RolloutStage>) -> pb::StartRolloutRequest {
    pb::StartRolloutRequest {
        environment: "production".into(),
        flag: flag.into(),
        target_variant: target.into(),
        stages,
        ..Default::default()
    }
}

/// Waits until the plan of `flag` is at `stage` in `state`.
async fn reaches(admin: &mut Admin, flag: &str, stage: u32, state: pb::RolloutState) {
    let what = format!("the plan of {flag} to reach stage {stage} ({state:?})");
    eventually(&what, async || {
        let p = plan(admin, flag).await;
        p.stage_index == stage && p.state == state as i32
    })
    .await;
}

/// What each of `keys` gets from `flag`, once the client has `revision`.
async fn served(
    client: &flagstaff::Client,
    flag: &str,
    revision: u64,
    keys: &[String],
) -> Vec<String> {
    eventually("the revision", async || {
        client.status().revision >= revision
    })
    .await;
    keys.iter()
        .map(|k| client.string_value(flag, &Context::new(k.as_str()), "?"))
        .collect()
}

#[tokio::test]
async fn a_plan_runs_to_completion_and_no_context_ever_moves_back_or_sideways() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (server, mut admin) = server_on(&clock).await;
    // Three variants: `new` is rolled out over `old`; `legacy` keeps its 20%.
    let flag = flag(json!({
        "key": "checkout", "kind": "string",
        "variants": {"new": "new", "old": "old", "legacy": "legacy"},
        "off_variant": "old", "enabled": true,
        "default": {"split": {"bucket_by": "key", "weights": [
            {"variant": "new", "weight": 0}, {"variant": "old", "weight": 80000},
            {"variant": "legacy", "weight": 20000}]}},
    }));
    create_flag(&mut admin, "production", flag).await;
    let token = sdk_token(&server, "service", "production").await;
    let client = sdk_client(server.endpoint(), &token, "checkout-service");
    client.wait_ready(PATIENCE).await.expect("ready");
    let keys: Vec<String> = (0..3000).map(|i| format!("user-{i}")).collect();
    let before = served(&client, "checkout", 0, &keys).await;

    let started = admin
        .start_rollout(start(
            "checkout",
            "new",
            stages(&[
                (5_000, HOUR),
                (25_000, 2 * HOUR),
                (60_000, HOUR),
                (100_000, 0),
            ]),
        ))
        .await
        .expect("started")
        .into_inner();
    let p = started.plan.expect("plan");
    assert_eq!(p.state, pb::RolloutState::Running as i32);
    assert_eq!((p.stage_index, p.percent), (0, 5_000));
    assert_eq!(p.baseline_variant, "old");
    assert_eq!(p.next_stage_unix_ms - p.stage_started_unix_ms, HOUR as i64);
    assert_eq!(p.flag_version, started.revision);

    let mut last = served(&client, "checkout", started.revision, &keys).await;
    let check = |was: &[String], now: &[String], stage: &str| {
        for ((key, a), b) in keys.iter().zip(was).zip(now) {
            assert!(a != "new" || b == "new", "{key} lost the target at {stage}");
            assert!(
                (a == "legacy") == (b == "legacy"),
                "{key} moved from or to legacy at {stage}"
            );
        }
    };
    check(&before, &last, "stage 1");
    let share = |v: &[String]| v.iter().filter(|s| *s == "new").count();
    assert!(
        (60..=250).contains(&share(&last)),
        "about 5%: {}",
        share(&last)
    );

    // Not yet due: nothing moves.
    clock.advance(Duration::from_millis(HOUR - 1));
    // Real time: the scheduler runs on the server's tasks, and proving it does not move needs
    // a moment in which it could have.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(plan(&mut admin, "checkout").await.stage_index, 0);

    // Each stage falls due when the one before it has been held for its time.
    for (stage, wait) in [(1, 1), (2, 2 * HOUR)] {
        clock.advance(Duration::from_millis(wait));
        reaches(&mut admin, "checkout", stage, pb::RolloutState::Running).await;
        let p = plan(&mut admin, "checkout").await;
        let now = served(&client, "checkout", p.flag_version, &keys).await;
        check(&last, &now, &format!("stage {}", stage + 1));
        last = now;
    }
    assert!(
        (1500..=2100).contains(&share(&last)),
        "about 60%: {}",
        share(&last)
    );

    clock.advance(Duration::from_millis(HOUR));
    reaches(&mut admin, "checkout", 3, pb::RolloutState::Completed).await;
    let p = plan(&mut admin, "checkout").await;
    let flag = get_flag(&mut admin, "production", "checkout").await;
    assert_eq!(
        flag.default.and_then(|d| d.serve),
        Some(pb::serve::Serve::Variant("new".into())),
        "completion writes a fixed variant"
    );
    let kinds: Vec<i32> = p.history.iter().map(|e| e.kind).collect();
    use pb::RolloutEventKind as K;
    assert_eq!(
        kinds,
        [K::Started, K::Advanced, K::Advanced, K::Completed].map(|k| k as i32)
    );
    // Every step is an audited change by the plan.
    let history = admin
        .list_history(pb::ListHistoryRequest {
            environment: "production".into(),
            flag: "checkout".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    let actors: Vec<&str> = history.entries.iter().map(|e| e.actor.as_str()).collect();
    assert_eq!(actors[..3], ["rollout:checkout"; 3]);
    let operations: Vec<&str> = history
        .entries
        .iter()
        .map(|e| e.operation.as_str())
        .collect();
    assert_eq!(
        operations[..5],
        [
            "RolloutComplete",
            "RolloutAdvance",
            "RolloutAdvance",
            "StartRollout",
            "CreateFlag"
        ]
    );
}

#[tokio::test]
async fn a_manual_edit_pauses_the_plan_and_a_rollback_wins_over_a_due_advance() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (_server, mut admin) = server_on(&clock).await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    admin
        .start_rollout(start(
            "banner",
            "on",
            stages(&[(10_000, HOUR), (50_000, HOUR), (100_000, 0)]),
        ))
        .await
        .expect("started");

    // Someone turns the flag off by hand: the plan pauses and says why.
    let edit = admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "production".into(),
            key: "banner".into(),
            enabled: false,
            ..Default::default()
        })
        .await
        .expect("edited")
        .into_inner();
    let p = plan(&mut admin, "banner").await;
    assert_eq!(p.state, pb::RolloutState::Paused as i32);
    assert_eq!(
        p.state_message,
        format!(
            "paused: the flag was edited by admin at revision {}",
            edit.revision
        )
    );
    clock.advance(Duration::from_millis(2 * HOUR));
    // Real time, to prove the scheduler does not advance a paused plan.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        plan(&mut admin, "banner").await.stage_index,
        0,
        "a paused plan holds"
    );

    // Resumed: the stage gets its full hold again, then advances.
    let resumed = admin
        .resume_rollout(pb::ResumeRolloutRequest {
            environment: "production".into(),
            flag: "banner".into(),
            ..Default::default()
        })
        .await
        .expect("resumed")
        .into_inner()
        .plan
        .expect("plan");
    assert_eq!(
        resumed.next_stage_unix_ms,
        resumed.stage_started_unix_ms + HOUR as i64
    );
    assert_eq!(
        resumed.flag_version, edit.revision,
        "the plan takes the edited flag"
    );
    clock.advance(Duration::from_millis(HOUR));
    reaches(&mut admin, "banner", 1, pb::RolloutState::Running).await;

    // A rollback serves the baseline; an advance that falls due after it does nothing.
    let rolled_back = admin
        .rollback_rollout(pb::RollbackRolloutRequest {
            environment: "production".into(),
            flag: "banner".into(),
            comment: "errors up".into(),
            ..Default::default()
        })
        .await
        .expect("rolled back")
        .into_inner();
    assert_eq!(
        rolled_back
            .flag
            .and_then(|f| f.default)
            .and_then(|d| d.serve),
        Some(pb::serve::Serve::Variant("off".into()))
    );
    clock.advance(Duration::from_millis(3 * HOUR));
    // Real time, to prove the scheduler writes nothing after a rollback.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p = plan(&mut admin, "banner").await;
    assert_eq!(p.state, pb::RolloutState::RolledBack as i32);
    assert_eq!(
        p.history.last().map(|e| e.comment.as_str()),
        Some("errors up")
    );
    assert_eq!(
        revision(&mut admin, "production").await,
        rolled_back.revision,
        "nothing was written after the rollback"
    );
}

#[tokio::test]
async fn bad_plans_are_refused_and_change_nothing() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (_server, mut admin) = server_on(&clock).await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    let base = admin.clone();
    let refuse = move |request: pb::StartRolloutRequest, code: Code| {
        let mut admin = base.clone();
        async move { refused(admin.start_rollout(request).await, code) }
    };
    let bad_end = refuse(
        start("banner", "on", stages(&[(10_000, HOUR)])),
        Code::InvalidArgument,
    )
    .await;
    assert!(bad_end.contains("the last stage must be 100%"), "{bad_end}");
    let not_up = refuse(
        start(
            "banner",
            "on",
            stages(&[(10_000, HOUR), (5_000, HOUR), (100_000, 0)]),
        ),
        Code::InvalidArgument,
    )
    .await;
    assert!(
        not_up.contains("must be above the stage before it"),
        "{not_up}"
    );
    let no_hold = refuse(
        start("banner", "on", stages(&[(10_000, 0), (100_000, 0)])),
        Code::InvalidArgument,
    )
    .await;
    assert!(no_hold.contains("needs a hold"), "{no_hold}");
    let unknown = refuse(
        start("banner", "maybe", stages(&[(100_000, 0)])),
        Code::InvalidArgument,
    )
    .await;
    assert!(unknown.contains("no variant \"maybe\""), "{unknown}");
    let missing = refuse(start("nope", "on", stages(&[(100_000, 0)])), Code::NotFound).await;
    assert!(missing.contains("nope"), "{missing}");
    let guarded = |event: &str, max_ratio: f64| {
        let mut request = start("banner", "on", stages(&[(10_000, HOUR), (100_000, 0)]));
        request.guard = Some(pb::RolloutGuard {
            event: event.into(),
            max_ratio,
            min_events: 100,
        });
        request
    };
    let below_one = refuse(guarded("checkout_error", 0.5), Code::InvalidArgument).await;
    assert!(
        below_one.contains("guard.max_ratio: 0.5 must be a number of at least 1"),
        "{below_one}"
    );
    let not_a_number = refuse(guarded("checkout_error", f64::NAN), Code::InvalidArgument).await;
    assert!(not_a_number.contains("guard.max_ratio"), "{not_a_number}");
    let no_event = refuse(guarded("", 1.5), Code::InvalidArgument).await;
    assert!(no_event.contains("guard.event"), "{no_event}");
    let bad_event = refuse(guarded("checkout error", 1.5), Code::InvalidArgument).await;
    assert!(
        bad_event.contains("guard.event: \"checkout error\" is not an event key"),
        "{bad_event}"
    );
    assert_eq!(
        revision(&mut admin, "production").await,
        1,
        "nothing was written"
    );

    // A live split in another order is reshuffled only when forced.
    admin
        .set_default_serve(pb::SetDefaultServeRequest {
            environment: "production".into(),
            key: "banner".into(),
            serve: Some(split(&[("off", 90_000), ("on", 10_000)])),
            ..Default::default()
        })
        .await
        .expect("split");
    let reorder = refuse(
        start("banner", "on", stages(&[(20_000, HOUR), (100_000, 0)])),
        Code::FailedPrecondition,
    )
    .await;
    assert!(reorder.contains("reshuffle"), "{reorder}");
    let mut forced = start("banner", "on", stages(&[(20_000, HOUR), (100_000, 0)]));
    forced.force = true;
    admin.start_rollout(forced.clone()).await.expect("forced");
    // One plan per flag at a time.
    let twice = refuse(forced, Code::FailedPrecondition).await;
    assert!(twice.contains("already has a running plan"), "{twice}");
}

#[tokio::test]
async fn a_first_stage_the_flag_already_serves_writes_nothing() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (_server, mut admin) = server_on(&clock).await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    let before = admin
        .set_default_serve(pb::SetDefaultServeRequest {
            environment: "production".into(),
            key: "banner".into(),
            serve: Some(split(&[("on", 10_000), ("off", 90_000)])),
            ..Default::default()
        })
        .await
        .expect("split")
        .into_inner()
        .revision;
    let started = admin
        .start_rollout(start(
            "banner",
            "on",
            stages(&[(10_000, HOUR), (100_000, 0)]),
        ))
        .await
        .expect("started")
        .into_inner();
    assert_eq!(started.revision, before, "no revision");
    let p = started.plan.expect("plan");
    assert_eq!(p.flag_version, before, "the plan takes the flag's version");
    assert_eq!(p.history[0].revision, 0, "the start made no revision");
    // And it advances from there.
    clock.advance(Duration::from_millis(HOUR));
    reaches(&mut admin, "banner", 1, pb::RolloutState::Completed).await;
}

#[tokio::test]
async fn a_plan_does_not_resume_on_a_split_whose_other_variants_took_its_later_stages() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (_server, mut admin) = server_on(&clock).await;
    let flag = flag(json!({
        "key": "checkout", "kind": "string",
        "variants": {"new": "new", "old": "old", "legacy": "legacy"},
        "off_variant": "old", "enabled": true,
        "default": {"variant": "old"},
    }));
    create_flag(&mut admin, "production", flag).await;
    admin
        .start_rollout(start(
            "checkout",
            "new",
            stages(&[(10_000, HOUR), (75_000, HOUR), (100_000, 0)]),
        ))
        .await
        .expect("started");

    // By hand, half of the contexts go to `legacy`: the plan pauses, and its next stage (75%)
    // no longer fits beside legacy's 50%.
    admin
        .set_default_serve(pb::SetDefaultServeRequest {
            environment: "production".into(),
            key: "checkout".into(),
            serve: Some(split(&[
                ("new", 10_000),
                ("old", 40_000),
                ("legacy", 50_000),
            ])),
            ..Default::default()
        })
        .await
        .expect("edited");
    assert_eq!(
        plan(&mut admin, "checkout").await.state,
        pb::RolloutState::Paused as i32
    );
    let refused = refused(
        admin
            .resume_rollout(pb::ResumeRolloutRequest {
                environment: "production".into(),
                flag: "checkout".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.contains("also serves 50% to other variants")
            && refused.contains("at most 50%, not the 75%"),
        "{refused}"
    );
    let p = plan(&mut admin, "checkout").await;
    assert_eq!(
        (p.state, p.stage_index),
        (pb::RolloutState::Paused as i32, 0)
    );
}
