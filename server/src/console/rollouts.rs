//! `/envs/{env}/rollouts`: every rollout plan of an environment, active ones first: its
//! state, its stages as a timeline, and its guard's counts and verdict as the Admin API's
//! `GetRollout` answers them (the counts every replica on a shared database summed,
//! [`Environments::plans_as_counted`](crate::environments::Environments), and the test of
//! [`guard::of_plan`]).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use flagstaff_engine::format_percent;
use serde::Deserialize;

use crate::rollout::guard::{self, State as GuardState};
use crate::rollout::state_name;
use crate::storage::{GuardTally, RolloutRecord, RolloutState, Store};

use super::proxy::Proxied;
use super::{
    bad_query, encode, environment_page, off_thread, page, span, unavailable, utc, Console, Paging,
    Who,
};

/// Plans shown on one page.
pub const PLANS_PER_PAGE: usize = 20;

/// What the rollouts page is asked for.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RolloutQuery {
    #[serde(default)]
    page: Option<usize>,
}

/// A plan as the page shows it.
struct PlanView {
    flag: String,
    /// Where the flag's page is.
    flag_href: String,
    /// `the default serve` or `rule eu`.
    scope: String,
    target: String,
    baseline: String,
    bucket_by: String,
    /// `running`, `paused`, `completed`, `rolled back`.
    state: &'static str,
    /// The state as a class name: `running`, `rolled-back`.
    state_class: String,
    /// Why it is in its state (who paused it, what edit paused it, and the comment of the
    /// step that put it there); may be empty.
    why: String,
    /// The target's share now.
    share: String,
    stages: Vec<StageView>,
    /// When the next stage is due, while running: `50% at 2026-12-08 10:30 UTC (in 59m 58s)`.
    next: Option<String>,
    started: String,
    started_by: String,
    guard: Option<GuardView>,
}

/// One stage of a plan's timeline.
struct StageView {
    number: usize,
    share: String,
    /// `1h`, or `-` for the last stage, which holds no time.
    hold: String,
    /// `done`, `current`, `to come`, `rolled back here`, `skipped`.
    status: &'static str,
    current: bool,
}

/// A plan's guard: what it watches, the counts, and where its test stands.
struct GuardView {
    event: String,
    max_ratio: String,
    min_events: u64,
    flag_version: u64,
    target_exposures: u64,
    target_events: u64,
    target_rate: String,
    baseline_exposures: u64,
    baseline_events: u64,
    baseline_rate: String,
    /// The target's share of the pair's events.
    observed_share: String,
    /// The most the target's share may be.
    null_share: String,
    statistic: String,
    threshold: String,
    /// `healthy`, `collecting`, `rejected`, `passed`, `not decided`: a word for the eye.
    verdict: &'static str,
    /// The verdict as a class name: `healthy`, `not-decided`.
    verdict_class: String,
    /// The verdict in a sentence.
    verdict_detail: String,
}

#[derive(Template)]
#[template(path = "console/rollouts.html")]
struct RolloutsPage {
    who: Option<Who>,
    environment: String,
    /// The environment's page this is, for its navigation.
    section: &'static str,
    plans: Vec<PlanView>,
    active: usize,
    total: usize,
    shown_from: usize,
    shown_to: usize,
    paging: Paging,
    previous: Option<String>,
    next: Option<String>,
}

pub(super) async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    query: Result<Query<RolloutQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (session, environment) = match environment_page(&console, &headers, proxied, &env).await {
        Ok(opened) => opened,
        Err(response) => return *response,
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return bad_query(&session, &e),
    };
    let (envs, key) = (console.envs.clone(), environment.key.clone());
    let plans = match off_thread(move || envs.plans_as_counted(&key)).await {
        Ok(plans) => plans,
        Err(e) => return unavailable(&e),
    };
    let mut plans: Vec<RolloutRecord> = plans.into_values().collect();
    // Active plans first, then by flag.
    plans.sort_by(|a, b| (!a.is_active(), &a.flag).cmp(&(!b.is_active(), &b.flag)));
    let paging = Paging::of(plans.len(), PLANS_PER_PAGE, query.page);
    let now = console.envs.clock().now_ms();
    let shown: Vec<PlanView> = paging
        .of_items(&plans)
        .map(|plan| view(&env, plan, now))
        .collect();
    let link = |n: usize| format!("/envs/{env}/rollouts?page={n}");
    page(
        StatusCode::OK,
        &RolloutsPage {
            who: Some(Who::of(&session)),
            environment: env.clone(),
            section: "rollouts",
            active: plans.iter().filter(|p| p.is_active()).count(),
            total: plans.len(),
            shown_from: paging.skip() + usize::from(!shown.is_empty()),
            shown_to: paging.skip() + shown.len(),
            plans: shown,
            paging,
            previous: paging.previous().map(link),
            next: paging.next().map(link),
        },
    )
}

/// `plan` of environment `env` as the page shows it at `now`.
fn view(env: &str, plan: &RolloutRecord, now: u64) -> PlanView {
    PlanView {
        flag: plan.flag.clone(),
        flag_href: format!("/envs/{env}/flags/{}", encode(&plan.flag)),
        scope: plan
            .rule_id
            .as_ref()
            .map_or("the default serve".to_owned(), |r| format!("rule {r}")),
        target: plan.target.clone(),
        baseline: plan.baseline.clone(),
        bucket_by: plan.bucket_by.clone(),
        state: state_name(plan.state),
        state_class: state_name(plan.state).replace(' ', "-"),
        why: why(plan),
        share: format_percent(plan.percent),
        stages: plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| StageView {
                number: i + 1,
                share: format_percent(s.percent),
                hold: if s.hold_ms == 0 {
                    "-".to_owned()
                } else {
                    hold_text(s.hold_ms)
                },
                status: stage_status(plan, i),
                current: plan.is_active() && i == plan.stage_index,
            })
            .collect(),
        next: next_step(plan, now),
        started: utc(plan.created_ms),
        started_by: plan.created_by.clone(),
        guard: guard_view(plan),
    }
}

/// Why `plan` is in its state: its state's message and, unless it runs, the comment given
/// with the step that stopped it (a pause's reason, a guard's counts), each when there is one.
fn why(plan: &RolloutRecord) -> String {
    let comment = match plan.state {
        RolloutState::Running => "",
        _ => plan.history.last().map_or("", |e| e.comment.as_str()),
    };
    match (plan.state_message.as_str(), comment) {
        (message, "") => message.to_owned(),
        ("", comment) => comment.to_owned(),
        (message, comment) if message == comment => message.to_owned(),
        (message, comment) => format!("{message}: {comment}"),
    }
}

/// Where stage `index` of `plan` stands.
fn stage_status(plan: &RolloutRecord, index: usize) -> &'static str {
    let last = plan.stages.len().saturating_sub(1);
    match plan.state {
        _ if index < plan.stage_index => "done",
        RolloutState::Running | RolloutState::Paused if index == plan.stage_index => "current",
        RolloutState::Running | RolloutState::Paused => "to come",
        RolloutState::RolledBack if index == plan.stage_index => "rolled back here",
        RolloutState::RolledBack => "not reached",
        // Promoted from an earlier stage: the target serves everyone, the last stage's share.
        RolloutState::Completed if index == plan.stage_index || index == last => "done",
        RolloutState::Completed => "skipped (promoted)",
    }
}

/// When a running plan's next stage is due, seen at `now`.
fn next_step(plan: &RolloutRecord, now: u64) -> Option<String> {
    if plan.state != RolloutState::Running || plan.next_stage_ms == 0 {
        return None;
    }
    let share = plan
        .stages
        .get(plan.stage_index + 1)
        .map_or(String::new(), |s| format!("{} ", format_percent(s.percent)));
    let due = utc(plan.next_stage_ms);
    Some(match plan.next_stage_ms.checked_sub(now) {
        Some(left) if left > 0 => format!("{share}at {due} (in {})", span(left)),
        _ => format!("{share}due now (since {due})"),
    })
}

/// A hold as the largest unit that states it exactly: `10m`, `1h`, `2d`, `90s`.
fn hold_text(ms: u64) -> String {
    for (size, unit) in [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// `plan`'s guard with the Admin API's counts and test ([`guard::of_plan`]); `None` without
/// a guard.
fn guard_view(plan: &RolloutRecord) -> Option<GuardView> {
    let g = plan.guard.as_ref()?;
    let (tally, verdict) = guard::of_plan(plan)?;
    let (word, detail) = verdict_words(plan, &tally, g.min_events, verdict.state);
    Some(GuardView {
        event: g.event.clone(),
        max_ratio: format!("{}", g.max_ratio),
        min_events: g.min_events,
        flag_version: tally.flag_version,
        target_exposures: tally.target_exposures,
        target_events: tally.target_events,
        target_rate: rate(tally.target_events, tally.target_exposures),
        baseline_exposures: tally.baseline_exposures,
        baseline_events: tally.baseline_events,
        baseline_rate: rate(tally.baseline_events, tally.baseline_exposures),
        observed_share: format!("{:.3}", verdict.observed_share),
        null_share: format!("{:.3}", verdict.null_share),
        statistic: guard::statistic(verdict.statistic),
        threshold: guard::statistic(verdict.threshold),
        verdict: word,
        verdict_class: word.replace(' ', "-"),
        verdict_detail: detail,
    })
}

/// The guard's verdict: a word, and a sentence. For a finished plan, how the guard ended. The
/// statistic may reach its threshold before the guard acts (it looks now and then, on running
/// plans alone): "rolled back" is said only of a plan that was.
fn verdict_words(
    plan: &RolloutRecord,
    tally: &GuardTally,
    min_events: u64,
    state: GuardState,
) -> (&'static str, String) {
    let events = tally.target_events.saturating_add(tally.baseline_events);
    let rolled_back_by_guard = plan.guard.as_ref().is_some_and(|g| g.rejected);
    const WORSE: &str = "the target did worse than allowed: the statistic reached its threshold";
    match (plan.state, state) {
        _ if rolled_back_by_guard => ("rejected", format!("{WORSE}, so the plan was rolled back")),
        (RolloutState::RolledBack, GuardState::Rejected) => {
            ("rejected", format!("{WORSE}, and the plan was rolled back"))
        }
        (RolloutState::Completed, GuardState::Rejected) => (
            "threshold reached",
            "the statistic reached its threshold, but the plan completed before the guard \
             rolled it back"
                .to_owned(),
        ),
        (RolloutState::Completed, _) => (
            "passed",
            "the plan completed without the guard finding the target worse than allowed".to_owned(),
        ),
        (RolloutState::RolledBack, _) => (
            "not decided",
            "the plan was rolled back before the guard found the target worse".to_owned(),
        ),
        (RolloutState::Paused, GuardState::Rejected) => (
            "threshold reached",
            format!("{WORSE}; the guard rolls back running plans alone, and this one is paused"),
        ),
        (RolloutState::Running, GuardState::Rejected) => (
            "threshold reached",
            format!("{WORSE}; the leader rolls the plan back at its next look"),
        ),
        (_, GuardState::Collecting) => (
            "collecting",
            format!("{events} of the {min_events} events the test needs before it decides"),
        ),
        (_, GuardState::Monitoring) => (
            "healthy",
            "within the threshold: no evidence that the target does worse than allowed".to_owned(),
        ),
    }
}

/// Events per exposure as a percentage: `2.500%`, or `-` without exposures.
fn rate(events: u64, exposures: u64) -> String {
    if exposures == 0 {
        "-".to_owned()
    } else {
        format!("{:.3}%", 100.0 * events as f64 / exposures as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{GuardRecord, RolloutStage};

    fn plan(state: RolloutState, stage_index: usize) -> RolloutRecord {
        RolloutRecord {
            flag: "checkout".into(),
            rule_id: None,
            target: "on".into(),
            baseline: "off".into(),
            bucket_by: "key".into(),
            others: Vec::new(),
            stages: [10_000, 50_000, 100_000]
                .into_iter()
                .map(|percent| RolloutStage {
                    percent,
                    hold_ms: 3_600_000,
                })
                .collect(),
            state,
            stage_index,
            percent: 10_000,
            stage_started_ms: 0,
            next_stage_ms: 3_600_000,
            state_message: String::new(),
            flag_version: 1,
            created_ms: 0,
            created_by: "alice".into(),
            history: Vec::new(),
            guard: None,
            version: 1,
        }
    }

    #[test]
    fn stages_are_done_current_or_to_come() {
        let statuses = |p: &RolloutRecord| (0..3).map(|i| stage_status(p, i)).collect::<Vec<_>>();
        assert_eq!(
            statuses(&plan(RolloutState::Running, 1)),
            ["done", "current", "to come"]
        );
        assert_eq!(
            statuses(&plan(RolloutState::RolledBack, 1)),
            ["done", "rolled back here", "not reached"]
        );
        assert_eq!(
            statuses(&plan(RolloutState::Completed, 0)),
            ["done", "skipped (promoted)", "done"]
        );
    }

    #[test]
    fn the_next_stage_is_due_at_a_time_and_in_a_while() {
        let running = plan(RolloutState::Running, 0);
        assert_eq!(
            next_step(&running, 1_000).as_deref(),
            Some("50% at 1970-01-01 01:00 UTC (in 59m 59s)")
        );
        assert_eq!(
            next_step(&running, 4_000_000).as_deref(),
            Some("50% due now (since 1970-01-01 01:00 UTC)")
        );
        assert_eq!(next_step(&plan(RolloutState::Paused, 0), 0), None);
    }

    #[test]
    fn rolled_back_is_said_only_of_a_plan_that_was() {
        let tally = GuardTally::default();
        let guarded = |state: RolloutState, rejected: bool| {
            let mut p = plan(state, 1);
            p.guard = Some(GuardRecord {
                event: "checkout_error".into(),
                max_ratio: 1.5,
                min_events: 100,
                tally,
                rejected,
            });
            p
        };
        let words = |p: &RolloutRecord, state| verdict_words(p, &tally, 100, state);

        // The statistic at its threshold before the guard's next look.
        let (word, detail) = words(&guarded(RolloutState::Running, false), GuardState::Rejected);
        assert_eq!(word, "threshold reached");
        assert!(!detail.contains("was rolled back"), "{detail}");
        assert!(detail.contains("at its next look"), "{detail}");
        let (word, detail) = words(&guarded(RolloutState::Paused, false), GuardState::Rejected);
        assert_eq!(word, "threshold reached");
        assert!(!detail.contains("was rolled back"), "{detail}");
        let (word, detail) = words(
            &guarded(RolloutState::Completed, false),
            GuardState::Rejected,
        );
        assert_eq!(word, "threshold reached");
        assert!(!detail.contains("was rolled back"), "{detail}");

        // Rolled back: by the guard, or by someone while the statistic was at its threshold.
        let (word, detail) = words(
            &guarded(RolloutState::RolledBack, true),
            GuardState::Rejected,
        );
        assert_eq!(word, "rejected");
        assert!(detail.ends_with("so the plan was rolled back"), "{detail}");
        let (word, detail) = words(
            &guarded(RolloutState::RolledBack, false),
            GuardState::Rejected,
        );
        assert_eq!(word, "rejected");
        assert!(detail.contains("the plan was rolled back"), "{detail}");

        assert_eq!(
            words(
                &guarded(RolloutState::Running, false),
                GuardState::Monitoring
            )
            .0,
            "healthy"
        );
        assert_eq!(
            words(
                &guarded(RolloutState::Completed, false),
                GuardState::Monitoring
            )
            .0,
            "passed"
        );
    }
}
