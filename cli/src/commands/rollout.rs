//! `flagstaff rollout ...`: staged rollout plans (docs/rollouts.md).

use std::time::Duration;

use anyhow::{anyhow, bail};
use flagstaff_engine::{format_percent, parse_percent, BUCKETS};
use flagstaff_proto::pb;
use serde_json::{json, Value};

use crate::args::{RolloutActionArgs, RolloutCommand, RolloutStartArgs};
use crate::output::{self, now_ms};
use crate::session::Session;

pub async fn run(session: &mut Session, command: &RolloutCommand) -> anyhow::Result<String> {
    match command {
        RolloutCommand::Start(args) => start(session, args).await,
        RolloutCommand::Status { key, watch: false } => {
            let plan = get(session, key).await?;
            Ok(render(&plan, session.output, now_ms()))
        }
        RolloutCommand::Status { key, watch: true } => watch(session, key).await,
        RolloutCommand::Pause(args) => act(session, Action::Pause, args).await,
        RolloutCommand::Resume(args) => act(session, Action::Resume, args).await,
        RolloutCommand::Rollback(args) => act(session, Action::Rollback, args).await,
        RolloutCommand::Promote(args) => act(session, Action::Promote, args).await,
        RolloutCommand::List { all } => list(session, *all).await,
    }
}

/// `1%:10m,5%:30m,25%:1h,100%` → stages; every stage but the last needs a hold, the last is
/// 100% with none.
pub(crate) fn parse_stages(spec: &str) -> anyhow::Result<Vec<pb::RolloutStage>> {
    let mut stages = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let (share, hold) = match part.split_once(':') {
            Some((share, hold)) => (share, Some(hold)),
            None => (part, None),
        };
        let weight = parse_percent(share).map_err(|_| {
            anyhow!("--stages: {share:?} is not a percentage (e.g. 5 or 5%) in {part:?}")
        })?;
        let hold_ms = match hold {
            Some(hold) => parse_hold(hold).ok_or_else(|| {
                anyhow!("--stages: {hold:?} is not a hold such as 30s, 10m, 1h or 2d, in {part:?}")
            })?,
            None => 0,
        };
        stages.push(pb::RolloutStage {
            percent: weight,
            hold_ms,
        });
    }
    let Some(last) = stages.last() else {
        bail!("--stages is empty");
    };
    if last.percent != BUCKETS || last.hold_ms != 0 {
        bail!("--stages must end with 100% (no hold): e.g. 1%:10m,5%:30m,100%");
    }
    let mut previous = 0;
    for stage in &stages {
        if stage.percent <= previous {
            bail!(
                "--stages: {} must be above the stage before it ({}): stages only grow",
                format_percent(stage.percent),
                format_percent(previous)
            );
        }
        previous = stage.percent;
    }
    if let Some(stage) = stages[..stages.len() - 1].iter().find(|s| s.hold_ms == 0) {
        bail!(
            "--stages: the {} stage needs a hold, e.g. {}:10m",
            format_percent(stage.percent),
            format_percent(stage.percent)
        );
    }
    Ok(stages)
}

/// `30s`, `10m`, `1h`, `2d` → milliseconds.
fn parse_hold(text: &str) -> Option<u64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    number.checked_mul(seconds * 1000).filter(|ms| *ms > 0)
}

async fn start(session: &mut Session, args: &RolloutStartArgs) -> anyhow::Result<String> {
    let environment = session.env()?;
    let stages = parse_stages(&args.stages)?;
    let request = pb::StartRolloutRequest {
        environment: environment.clone(),
        flag: args.key.clone(),
        rule_id: args.rule.clone(),
        target_variant: args.to.clone(),
        baseline_variant: args.from.clone(),
        bucket_by: args.bucket_by.clone(),
        stages,
        force: args.force,
        guard: args.guard.as_ref().map(|g| pb::RolloutGuard {
            event: g.event.clone(),
            max_ratio: g.max_ratio,
            min_events: g.min_events,
        }),
        comment: args.message.clone().unwrap_or_default(),
        ..Default::default()
    };
    let response = session
        .write("Start the rollout", |mut admin, confirm_protected| {
            let request = pb::StartRolloutRequest {
                confirm_protected,
                ..request.clone()
            };
            async move { admin.start_rollout(request).await }
        })
        .await?;
    let plan = response.plan.unwrap_or_default();
    if session.output != crate::args::Output::Table {
        return Ok(render(&plan, session.output, now_ms()));
    }
    // As `flag rollout` says it.
    let off = if response.flag.as_ref().is_some_and(|f| !f.enabled) {
        " (the flag is off: it serves its off variant until `flag on`)"
    } else {
        ""
    };
    Ok(format!(
        "started rolling out {} of {} in {environment} (revision {}): {}{off}\n",
        plan.target_variant,
        plan.flag,
        response.revision,
        headline(&plan, now_ms())
    ))
}

#[derive(Clone, Copy)]
enum Action {
    Pause,
    Resume,
    Rollback,
    Promote,
}

async fn act(
    session: &mut Session,
    action: Action,
    args: &RolloutActionArgs,
) -> anyhow::Result<String> {
    let environment = session.env()?;
    let flag = args.key.clone();
    let comment = args.message.clone().unwrap_or_default();
    let what = match action {
        Action::Pause => "Pause the rollout",
        Action::Resume => "Resume the rollout",
        Action::Rollback => "Roll the flag back to its baseline",
        Action::Promote => "Serve the target to everyone",
    };
    let (plan, revision) = session
        .write(what, |mut admin, confirm_protected| {
            let (environment, flag, comment) = (environment.clone(), flag.clone(), comment.clone());
            async move {
                let answer = match action {
                    Action::Pause => admin
                        .pause_rollout(pb::PauseRolloutRequest {
                            environment,
                            flag,
                            comment,
                            confirm_protected,
                        })
                        .await
                        .map(|r| (r.into_inner().plan, None)),
                    Action::Resume => admin
                        .resume_rollout(pb::ResumeRolloutRequest {
                            environment,
                            flag,
                            comment,
                            confirm_protected,
                        })
                        .await
                        .map(|r| (r.into_inner().plan, None)),
                    Action::Rollback => admin
                        .rollback_rollout(pb::RollbackRolloutRequest {
                            environment,
                            flag,
                            comment,
                            confirm_protected,
                        })
                        .await
                        .map(|r| {
                            let r = r.into_inner();
                            (r.plan, Some(r.revision))
                        }),
                    Action::Promote => admin
                        .promote_rollout(pb::PromoteRolloutRequest {
                            environment,
                            flag,
                            comment,
                            confirm_protected,
                        })
                        .await
                        .map(|r| {
                            let r = r.into_inner();
                            (r.plan, Some(r.revision))
                        }),
                };
                answer.map(tonic::Response::new)
            }
        })
        .await?;
    let plan = plan.unwrap_or_default();
    if session.output != crate::args::Output::Table {
        return Ok(render(&plan, session.output, now_ms()));
    }
    let done = match action {
        Action::Pause => "paused",
        Action::Resume => "resumed",
        Action::Rollback => "rolled back",
        Action::Promote => "promoted",
    };
    let revision = revision.map_or(String::new(), |r| format!(" (revision {r})"));
    Ok(format!(
        "{done} the rollout of {} in {environment}{revision}: {}\n",
        plan.flag,
        headline(&plan, now_ms())
    ))
}

async fn get(session: &mut Session, key: &str) -> anyhow::Result<pb::RolloutPlan> {
    let environment = session.env()?;
    session
        .admin
        .get_rollout(pb::GetRolloutRequest {
            environment,
            flag: key.to_owned(),
        })
        .await
        .map_err(|s| session.error(s))?
        .into_inner()
        .plan
        .ok_or_else(|| anyhow!("the server sent no plan"))
}

async fn list(session: &mut Session, all: bool) -> anyhow::Result<String> {
    let environment = session.env()?;
    let plans = session
        .admin
        .list_rollouts(pb::ListRolloutsRequest {
            environment,
            include_finished: all,
        })
        .await
        .map_err(|s| session.error(s))?
        .into_inner()
        .plans;
    let now = now_ms();
    let document = Value::Array(plans.iter().map(|p| plan_json(p, now)).collect());
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    let rows: Vec<Vec<String>> = plans
        .iter()
        .map(|p| {
            vec![
                p.flag.clone(),
                state(p).to_owned(),
                format!("{} of {}", p.stage_index + 1, p.stages.len()),
                format!("{} {}", p.target_variant, format_percent(p.percent)),
                next(p, now),
            ]
        })
        .collect();
    Ok(output::table(
        &["FLAG", "STATE", "STAGE", "NOW", "NEXT"],
        &rows,
    ))
}

/// `--watch`: the status, then a line for each change, until the plan finishes.
async fn watch(session: &mut Session, key: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut plan = get(session, key).await?;
    print!("{}", render(&plan, session.output, now_ms()));
    let _ = std::io::stdout().flush();
    let mut seen = plan.history.len();
    while matches!(
        pb::RolloutState::try_from(plan.state),
        Ok(pb::RolloutState::Running | pb::RolloutState::Paused)
    ) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        plan = get(session, key).await?;
        for event in plan.history.iter().skip(seen) {
            println!("  {}", event_line(event));
        }
        seen = plan.history.len();
        let _ = std::io::stdout().flush();
    }
    Ok(format!("{}\n", headline(&plan, now_ms())))
}

fn state(plan: &pb::RolloutPlan) -> &'static str {
    match pb::RolloutState::try_from(plan.state) {
        Ok(pb::RolloutState::Running) => "running",
        Ok(pb::RolloutState::Paused) => "paused",
        Ok(pb::RolloutState::Completed) => "completed",
        Ok(pb::RolloutState::RolledBack) => "rolled back",
        _ => "unknown",
    }
}

/// When the next stage is due, from `now`: `in 9m 58s`, `due now`, or `-`.
fn next(plan: &pb::RolloutPlan, now: i64) -> String {
    if plan.next_stage_unix_ms == 0 {
        return "-".to_owned();
    }
    let stage = plan
        .stages
        .get(plan.stage_index as usize + 1)
        .map_or(String::new(), |s| format!("{} ", format_percent(s.percent)));
    let left = plan.next_stage_unix_ms - now;
    if left <= 0 {
        return format!("{stage}due now");
    }
    format!("{stage}in {}", span(left as u64))
}

/// Milliseconds as `1h 5m`, `9m 58s`, `12s`.
fn span(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// A hold as the largest unit that states it exactly: `10m`, `1h`, `2d`, `90s`.
fn hold_text(ms: u64) -> String {
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    for (size, unit) in units {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// One line: `running, stage 2 of 4: on 5%, next 25% in 29m 58s`.
fn headline(plan: &pb::RolloutPlan, now: i64) -> String {
    let mut line = format!(
        "{}, stage {} of {}: {} {}",
        state(plan),
        plan.stage_index + 1,
        plan.stages.len(),
        plan.target_variant,
        format_percent(plan.percent)
    );
    if plan.next_stage_unix_ms != 0 {
        line.push_str(&format!(", next {}", next(plan, now)));
    }
    if !plan.state_message.is_empty() {
        line.push_str(&format!(" ({})", plan.state_message));
    }
    line
}

fn event_kind(e: &pb::RolloutEvent) -> &'static str {
    match pb::RolloutEventKind::try_from(e.kind) {
        Ok(pb::RolloutEventKind::Started) => "started",
        Ok(pb::RolloutEventKind::Advanced) => "advanced",
        Ok(pb::RolloutEventKind::Paused) => "paused",
        Ok(pb::RolloutEventKind::Resumed) => "resumed",
        Ok(pb::RolloutEventKind::RolledBack) => "rolled back",
        Ok(pb::RolloutEventKind::Promoted) => "promoted",
        Ok(pb::RolloutEventKind::Completed) => "completed",
        _ => "unknown",
    }
}

fn event_line(e: &pb::RolloutEvent) -> String {
    let kind = event_kind(e);
    let revision = if e.revision == 0 {
        String::new()
    } else {
        format!("  revision {}", e.revision)
    };
    let comment = if e.comment.is_empty() {
        String::new()
    } else {
        format!("  {}", e.comment)
    };
    format!(
        "{}  {kind:<11}  stage {}  {:>7}  by {}{revision}{comment}",
        output::timestamp(e.time_unix_ms),
        e.stage_index + 1,
        format_percent(e.percent),
        e.actor
    )
}

fn render(plan: &pb::RolloutPlan, out: crate::args::Output, now: i64) -> String {
    if let Some(text) = output::structured(&plan_json(plan, now), out) {
        return text;
    }
    let scope = plan
        .rule_id
        .as_ref()
        .map_or("default serve".to_owned(), |r| format!("rule {r}"));
    let stages: Vec<String> = plan
        .stages
        .iter()
        .map(|s| {
            if s.hold_ms == 0 {
                format_percent(s.percent)
            } else {
                format!("{}:{}", format_percent(s.percent), hold_text(s.hold_ms))
            }
        })
        .collect();
    let mut text = format!(
        "{}: {}\n  {} over {} in the {scope}, bucketed by {}; stages {}\n  started {} by {}\nhistory:\n",
        plan.flag,
        headline(plan, now),
        plan.target_variant,
        plan.baseline_variant,
        plan.bucket_by,
        stages.join(","),
        output::timestamp(plan.created_unix_ms),
        plan.created_by
    );
    for event in &plan.history {
        text.push_str("  ");
        text.push_str(&event_line(event));
        text.push('\n');
    }
    if let (Some(guard), Some(status)) = (&plan.guard, &plan.guard_status) {
        text.push_str(&guard_text(guard, status, plan));
    }
    text
}

/// The guard's counts in the current stage and where its test stands:
///
/// ```text
/// guard: checkout_error, at most 1.5x the baseline's rate, deciding after 100 events
///   VARIANT   EXPOSURES  EVENTS  RATE
///   new       1200       30      2.500%
///   old       10800      110     1.019%
///   target share of events 0.214 (at most 0.143 allowed); statistic 3.2 of 40.0: monitoring
/// ```
fn guard_text(
    guard: &pb::RolloutGuard,
    status: &pb::GuardStatus,
    plan: &pb::RolloutPlan,
) -> String {
    let (target, baseline) = (&plan.target_variant, &plan.baseline_variant);
    let rate = |events: u64, exposures: u64| {
        if exposures == 0 {
            "-".to_owned()
        } else {
            format!("{:.3}%", 100.0 * events as f64 / exposures as f64)
        }
    };
    let rows = vec![
        vec![
            target.to_owned(),
            status.target_exposures.to_string(),
            status.target_events.to_string(),
            rate(status.target_events, status.target_exposures),
        ],
        vec![
            baseline.to_owned(),
            status.baseline_exposures.to_string(),
            status.baseline_events.to_string(),
            rate(status.baseline_events, status.baseline_exposures),
        ],
    ];
    let mut text = format!(
        "guard: {}, at most {}x the baseline's rate, deciding after {} events (counts of flag version {})\n",
        guard.event, guard.max_ratio, guard.min_events, status.flag_version
    );
    for line in output::table(&["VARIANT", "EXPOSURES", "EVENTS", "RATE"], &rows).lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!(
        "  target share of events {:.3} (at most {:.3} allowed); statistic {} of {}: {}\n",
        status.observed_share,
        status.null_share,
        statistic(status.statistic),
        statistic(status.threshold),
        verdict(plan, status)
    ));
    text
}

/// The guard's statistic as people read it: `3.2`, `40.0`, and beyond a million (where the
/// exact value says nothing more: the test rejected long before) `> 10^6`.
fn statistic(value: f64) -> String {
    if value.is_nan() {
        "-".to_owned()
    } else if value >= 1e6 {
        "> 10^6".to_owned()
    } else {
        format!("{value:.1}")
    }
}

/// Where the guard stands, or for a finished plan, its final verdict.
fn verdict(plan: &pb::RolloutPlan, status: &pb::GuardStatus) -> &'static str {
    let rejected = status.state == pb::GuardState::Rejected as i32;
    match pb::RolloutState::try_from(plan.state) {
        Ok(pb::RolloutState::Completed) => {
            "passed: the plan completed without the guard finding the target worse than allowed"
        }
        Ok(pb::RolloutState::RolledBack) if rejected => {
            "rejected: the target did worse than allowed, so the plan rolled back"
        }
        Ok(pb::RolloutState::RolledBack) => {
            "not decided: the plan was rolled back before the guard found the target worse"
        }
        _ => guard_state(status),
    }
}

fn guard_state(status: &pb::GuardStatus) -> &'static str {
    match pb::GuardState::try_from(status.state) {
        Ok(pb::GuardState::Collecting) => "collecting events",
        Ok(pb::GuardState::Monitoring) => "monitoring",
        Ok(pb::GuardState::Rejected) => "rejected: the target does worse than allowed",
        _ => "unknown",
    }
}

fn plan_json(plan: &pb::RolloutPlan, now: i64) -> Value {
    json!({
        "flag": plan.flag,
        "rule_id": plan.rule_id,
        "target": plan.target_variant,
        "baseline": plan.baseline_variant,
        "bucket_by": plan.bucket_by,
        "state": state(plan),
        "state_message": plan.state_message,
        "stage": plan.stage_index + 1,
        "stages": plan.stages.iter().map(|s| json!({"percent": f64::from(s.percent) / 1000.0, "hold_ms": s.hold_ms})).collect::<Vec<_>>(),
        "percent": f64::from(plan.percent) / 1000.0,
        "stage_started_unix_ms": plan.stage_started_unix_ms,
        "next_stage_unix_ms": (plan.next_stage_unix_ms != 0).then_some(plan.next_stage_unix_ms),
        "next_stage_in_ms": (plan.next_stage_unix_ms != 0).then(|| (plan.next_stage_unix_ms - now).max(0)),
        "flag_version": plan.flag_version,
        "created_unix_ms": plan.created_unix_ms,
        "created_by": plan.created_by,
        "guard": plan.guard.as_ref().map(|g| json!({
            "event": g.event,
            "max_ratio": g.max_ratio,
            "min_events": g.min_events,
            "status": plan.guard_status.as_ref().map(|s| json!({
                "flag_version": s.flag_version,
                "target_exposures": s.target_exposures,
                "baseline_exposures": s.baseline_exposures,
                "target_events": s.target_events,
                "baseline_events": s.baseline_events,
                "null_share": s.null_share,
                "observed_share": s.observed_share,
                "statistic": s.statistic,
                "threshold": s.threshold,
                "state": guard_state(s),
            })),
        })),
        "history": plan.history.iter().map(|e| json!({
            "time_unix_ms": e.time_unix_ms,
            "actor": e.actor,
            "event": event_kind(e),
            "stage": e.stage_index + 1,
            "percent": f64::from(e.percent) / 1000.0,
            "revision": e.revision,
            "comment": e.comment,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_specs() {
        let stages = parse_stages("1%:10m,5%:30m,25%:1h,100%").expect("valid");
        let pairs: Vec<(u32, u64)> = stages.iter().map(|s| (s.percent, s.hold_ms)).collect();
        assert_eq!(
            pairs,
            [
                (1_000, 600_000),
                (5_000, 1_800_000),
                (25_000, 3_600_000),
                (BUCKETS, 0)
            ]
        );
        assert_eq!(
            parse_stages("12.5:2d, 100").expect("valid")[0].hold_ms,
            172_800_000
        );
        assert_eq!(
            parse_stages("10%:5s,100%").expect("valid")[0].hold_ms,
            5_000
        );
        for (bad, says) in [
            ("1%:10m,50%:1h", "must end with 100%"),
            ("1%,100%", "needs a hold"),
            ("1%:10x,100%", "not a hold"),
            ("1%:0s,100%", "not a hold"),
            ("ten:1h,100%", "not a percentage"),
            ("", "not a percentage"),
            ("1%:1h,100%:1h", "must end with 100%"),
            (
                "10%:1h,5%:1h,100%",
                "--stages: 5% must be above the stage before it (10%): stages only grow",
            ),
            ("0%:1h,100%", "0% must be above the stage before it (0%)"),
        ] {
            let error = parse_stages(bad).expect_err(bad).to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn finished_plans_show_the_guards_verdict_and_big_statistics_read_well() {
        let guard = pb::RolloutGuard {
            event: "checkout_error".into(),
            max_ratio: 1.5,
            min_events: 40,
        };
        let status = |state: pb::GuardState, statistic: f64| pb::GuardStatus {
            state: state as i32,
            statistic,
            threshold: 40.0,
            ..Default::default()
        };
        let plan = |state: pb::RolloutState| pb::RolloutPlan {
            state: state as i32,
            target_variant: "on".into(),
            baseline_variant: "off".into(),
            ..Default::default()
        };
        let last = |text: String| text.lines().last().unwrap_or_default().to_owned();
        let completed = guard_text(
            &guard,
            &status(pb::GuardState::Collecting, 1.0),
            &plan(pb::RolloutState::Completed),
        );
        assert_eq!(
            last(completed),
            "  target share of events 0.000 (at most 0.000 allowed); statistic 1.0 of 40.0: \
             passed: the plan completed without the guard finding the target worse than allowed"
        );
        let rejected = guard_text(
            &guard,
            &status(pb::GuardState::Rejected, 19_692_689_226_718.8),
            &plan(pb::RolloutState::RolledBack),
        );
        assert_eq!(
            last(rejected),
            "  target share of events 0.000 (at most 0.000 allowed); statistic > 10^6 of 40.0: \
             rejected: the target did worse than allowed, so the plan rolled back"
        );
        let running = guard_text(
            &guard,
            &status(pb::GuardState::Monitoring, 3.25),
            &plan(pb::RolloutState::Running),
        );
        assert!(last(running).ends_with("statistic 3.2 of 40.0: monitoring"));
        assert_eq!(statistic(999_999.0), "999999.0");
    }

    #[test]
    fn holds() {
        assert_eq!(hold_text(600_000), "10m");
        assert_eq!(hold_text(5_400_000), "90m");
        assert_eq!(hold_text(172_800_000), "2d");
        assert_eq!(hold_text(1_500), "1500ms");
    }

    #[test]
    fn spans() {
        assert_eq!(span(12_000), "12s");
        assert_eq!(span(598_001), "9m 59s");
        assert_eq!(span(3_900_000), "1h 5m");
        assert_eq!(span(90_000_000), "1d 1h");
    }
}
