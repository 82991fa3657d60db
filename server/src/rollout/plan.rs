//! A rollout plan's arithmetic, pure: checking a request (stages, guard), the plan it makes
//! for a flag as it is, what a plan's scope serves at a percentage, entering a stage, adopting
//! a flag edited by hand, and the plan events of every step. No store and no environments:
//! [`operations`](super::operations) commits what this computes.
//!
//! A plan moves one split of a flag (its default serve or one rule's) from a baseline
//! variant to a target variant. The split lists the target first and the baseline right
//! after it, and every stage moves only the boundary between those two, so a context that got
//! the target keeps it and no other variant's contexts move.

use std::collections::BTreeMap;

use flagstaff_engine::{format_percent, move_boundary, Flag, Serve, Split, Weight, BUCKETS};

use crate::error::ServerError;
use crate::storage::{
    GuardRecord, GuardTally, RolloutEvent, RolloutEventKind, RolloutRecord, RolloutStage,
    RolloutState,
};

/// What a request to start a plan asks for.
#[derive(Debug, Clone)]
pub struct StartPlan {
    /// The flag's key.
    pub flag: String,
    /// The rule whose serve to move; `None` for the default serve.
    pub rule_id: Option<String>,
    /// The variant to roll out.
    pub target: String,
    /// The variant it replaces; `None` for the one the scope serves now.
    pub baseline: Option<String>,
    /// The attribute to bucket by; `None` for the live split's, or `key`.
    pub bucket_by: Option<String>,
    /// The stages.
    pub stages: Vec<RolloutStage>,
    /// Allows reordering a live split or changing its bucketing attribute.
    pub force: bool,
    /// The version the flag must have; `None` for no check.
    pub expected_version: Option<u64>,
    /// A guard; `None` for none.
    pub guard: Option<GuardSpec>,
}

/// What a plan's guard watches.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSpec {
    /// The application event, e.g. `checkout_error`.
    pub event: String,
    /// The largest acceptable ratio of the target's event rate to the baseline's; at least 1.
    pub max_ratio: f64,
    /// Events a stage must have seen before the guard decides anything.
    pub min_events: u64,
}

/// Checks a guard: an event key people can type, and a ratio of at least 1.
pub(crate) fn check_guard(guard: &GuardSpec) -> Result<(), ServerError> {
    let event = &guard.event;
    if event.is_empty()
        || event.len() > 128
        || !event
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))
    {
        return Err(ServerError::Invalid(format!(
            "guard.event: {event:?} is not an event key: use 1 to 128 letters, digits, \
             '_', '-', '.', ':' or '/'"
        )));
    }
    if !guard.max_ratio.is_finite() || guard.max_ratio < 1.0 {
        return Err(ServerError::Invalid(format!(
            "guard.max_ratio: {} must be a number of at least 1 (1.5 allows the target a 50% \
             higher event rate than the baseline)",
            guard.max_ratio
        )));
    }
    Ok(())
}

/// The actor of a plan's own steps.
pub fn actor(flag: &str) -> String {
    format!("rollout:{flag}")
}

/// The event of `plan`'s step `kind` by `actor` at `now`, in `revision` (0 for none).
pub(crate) fn event(
    plan: &RolloutRecord,
    now: u64,
    actor: &str,
    kind: RolloutEventKind,
    revision: u64,
    comment: &str,
) -> RolloutEvent {
    RolloutEvent {
        time_ms: now,
        actor: actor.to_owned(),
        kind,
        stage_index: plan.stage_index,
        percent: plan.percent,
        revision,
        comment: comment.to_owned(),
    }
}

/// The serve a plan's scope has: the flag's default, or the serve of rule `rule_id`.
pub(crate) fn scope<'a>(flag: &'a Flag, rule_id: Option<&str>) -> Result<&'a Serve, ServerError> {
    match rule_id {
        None => Ok(&flag.default),
        Some(id) => flag
            .rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| &r.serve)
            .ok_or_else(|| {
                ServerError::NotFound(format!("flag {:?} has no rule {id:?}", flag.key))
            }),
    }
}

/// `flag` with its scope serving `serve`, version cleared (so the write's own check applies).
pub(crate) fn with_scope(flag: &Flag, rule_id: Option<&str>, serve: Serve) -> Flag {
    let mut flag = Flag {
        version: None,
        ..flag.clone()
    };
    match rule_id {
        None => flag.default = serve,
        Some(id) => {
            if let Some(rule) = flag.rules.iter_mut().find(|r| r.id == id) {
                rule.serve = serve;
            }
        }
    }
    flag
}

/// What a plan's scope serves at `percent` of the target; `None` when that is more than the
/// target and baseline share (the split's other variants keep their weights).
pub(crate) fn serve_at(plan: &RolloutRecord, percent: u32) -> Option<Serve> {
    if percent >= BUCKETS {
        return Some(Serve::Variant(plan.target.clone()));
    }
    let mut weights = vec![
        Weight {
            variant: plan.target.clone(),
            weight: 0,
        },
        Weight {
            variant: plan.baseline.clone(),
            weight: pair_weight(plan),
        },
    ];
    weights.extend(plan.others.iter().map(|(variant, weight)| Weight {
        variant: variant.clone(),
        weight: *weight,
    }));
    let split = Split {
        bucket_by: plan.bucket_by.clone(),
        weights,
    };
    move_boundary(&split, percent)
}

/// [`serve_at`] the plan's current percentage, for a write.
pub(crate) fn current_serve(plan: &RolloutRecord) -> Result<Serve, ServerError> {
    serve_at(plan, plan.percent).ok_or_else(|| {
        ServerError::Precondition(format!(
            "the split of flag {:?} also serves {} to other variants: {:?} can have at most {}, not {}",
            plan.flag,
            format_percent(BUCKETS - pair_weight(plan)),
            plan.target,
            format_percent(pair_weight(plan)),
            format_percent(plan.percent)
        ))
    })
}

/// The weight the target and baseline share: all but the other variants'.
pub(crate) fn pair_weight(plan: &RolloutRecord) -> u32 {
    BUCKETS - plan.others.iter().map(|(_, w)| w).sum::<u32>()
}

/// Checks stages: at least one; percents strictly increasing, above 0, up to 100%, the last
/// exactly 100% with no hold; every other stage held for some time.
pub(crate) fn check_stages(stages: &[RolloutStage]) -> Result<(), ServerError> {
    let invalid = |why: String| Err(ServerError::Invalid(format!("stages: {why}")));
    let Some(last) = stages.last() else {
        return invalid("a plan needs at least one stage".to_owned());
    };
    if last.percent != BUCKETS {
        return invalid(format!(
            "the last stage must be 100%, not {}",
            format_percent(last.percent)
        ));
    }
    if last.hold_ms != 0 {
        return invalid(
            "the last stage (100%) completes the plan at once: its hold must be 0".to_owned(),
        );
    }
    let mut previous = 0;
    for (i, stage) in stages.iter().enumerate() {
        if stage.percent <= previous {
            return invalid(format!(
                "stage {} ({}) must be above the stage before it ({}) and above 0%",
                i + 1,
                format_percent(stage.percent),
                format_percent(previous)
            ));
        }
        if stage.percent < BUCKETS && stage.hold_ms == 0 {
            return invalid(format!("stage {} needs a hold longer than 0", i + 1));
        }
        previous = stage.percent;
    }
    Ok(())
}

/// The plan `request` describes for `flag` as it is now: its baseline, bucketing attribute
/// and the split's other variants. Refuses a plan that would reshuffle contexts unless forced.
pub(crate) fn plan_for(
    flag: &Flag,
    request: &StartPlan,
    actor: &str,
    now: u64,
) -> Result<RolloutRecord, ServerError> {
    let key = &flag.key;
    let has = |v: &str| flag.variants.0.iter().any(|(name, _)| name == v);
    if !has(&request.target) {
        return Err(ServerError::Invalid(format!(
            "flag {key:?} has no variant {:?}",
            request.target
        )));
    }
    if let Some(baseline) = &request.baseline {
        if !has(baseline) {
            return Err(ServerError::Invalid(format!(
                "flag {key:?} has no variant {baseline:?}"
            )));
        }
        if *baseline == request.target {
            return Err(ServerError::Invalid(
                "the baseline must be another variant than the target".to_owned(),
            ));
        }
    }
    check_stages(&request.stages)?;
    if let Some(guard) = &request.guard {
        check_guard(guard)?;
    }
    let reshuffles = |why: String| -> Result<(), ServerError> {
        if request.force {
            Ok(())
        } else {
            Err(ServerError::Precondition(format!(
                "the plan would reshuffle contexts of flag {key:?}: {why}; set force to start it anyway"
            )))
        }
    };
    let (baseline, bucket_by, others) = match scope(flag, request.rule_id.as_deref())? {
        Serve::Variant(serving) => {
            let baseline = match &request.baseline {
                Some(b) => b.clone(),
                None if *serving != request.target => serving.clone(),
                None => {
                    return Err(ServerError::Precondition(format!(
                        "flag {key:?} already serves {:?}; name the baseline to roll out from",
                        request.target
                    )))
                }
            };
            let bucket_by = request
                .bucket_by
                .clone()
                .unwrap_or_else(|| "key".to_owned());
            (baseline, bucket_by, Vec::new())
        }
        Serve::Split(split) => {
            let pos = |v: &str| split.weights.iter().position(|w| w.variant == v);
            let baseline = match &request.baseline {
                Some(b) => b.clone(),
                None => match pos(&request.target) {
                    Some(i) => split
                        .weights
                        .get(i + 1)
                        .or_else(|| split.weights.iter().find(|w| w.variant != request.target))
                        .map(|w| w.variant.clone())
                        .ok_or_else(|| {
                            ServerError::Precondition(format!(
                                "the split of flag {key:?} serves only {:?}",
                                request.target
                            ))
                        })?,
                    None => split.weights[0].variant.clone(),
                },
            };
            if pos(&request.target) != Some(0) || pos(&baseline) != Some(1) {
                reshuffles(format!(
                    "its live split lists {}; the plan needs {} first and {baseline} second",
                    split
                        .weights
                        .iter()
                        .map(|w| w.variant.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    request.target
                ))?;
            }
            let bucket_by = request
                .bucket_by
                .clone()
                .unwrap_or_else(|| split.bucket_by.clone());
            if bucket_by != split.bucket_by {
                reshuffles(format!(
                    "it buckets by {bucket_by:?} instead of {:?}",
                    split.bucket_by
                ))?;
            }
            let others: Vec<(String, u32)> = split
                .weights
                .iter()
                .filter(|w| w.variant != request.target && w.variant != baseline)
                .map(|w| (w.variant.clone(), w.weight))
                .collect();
            (baseline, bucket_by, others)
        }
    };
    let mut plan = RolloutRecord {
        flag: key.clone(),
        rule_id: request.rule_id.clone(),
        target: request.target.clone(),
        baseline,
        bucket_by,
        others,
        stages: request.stages.clone(),
        state: RolloutState::Running,
        stage_index: 0,
        percent: 0,
        stage_started_ms: now,
        next_stage_ms: 0,
        state_message: String::new(),
        flag_version: 0,
        created_ms: now,
        created_by: actor.to_owned(),
        history: Vec::new(),
        guard: request.guard.as_ref().map(|g| GuardRecord {
            event: g.event.clone(),
            max_ratio: g.max_ratio,
            min_events: g.min_events,
            tally: GuardTally::default(),
            rejected: false,
        }),
        version: 0,
    };
    let pair = pair_weight(&plan);
    if let Some(stage) = plan
        .stages
        .iter()
        .find(|s| s.percent < BUCKETS && s.percent > pair)
    {
        return Err(ServerError::Precondition(format!(
            "the split also serves {} to other variants: stages before the last can give {:?} at most {pair}, not {}",
            BUCKETS - pair,
            plan.target,
            stage.percent
        )));
    }
    enter_stage(&mut plan, 0, now);
    Ok(plan)
}

/// Puts `plan` at stage `index`, begun at `now`: completed when it is the last (100%).
pub(crate) fn enter_stage(plan: &mut RolloutRecord, index: usize, now: u64) {
    let stage = plan.stages[index];
    plan.stage_index = index;
    plan.percent = stage.percent;
    plan.stage_started_ms = now;
    if stage.percent >= BUCKETS {
        plan.state = RolloutState::Completed;
        plan.next_stage_ms = 0;
    } else {
        plan.next_stage_ms = now.saturating_add(stage.hold_ms);
    }
}

/// Checks that `plan` can still drive `flag`: the flag is at the version it wrote, or (after
/// a manual edit, on resume) its scope still lists the target first and the baseline second.
pub(crate) fn adopt(plan: &mut RolloutRecord, flag: &Flag) -> Result<(), ServerError> {
    if flag.version == Some(plan.flag_version) {
        return Ok(());
    }
    let key = &flag.key;
    match scope(flag, plan.rule_id.as_deref())? {
        Serve::Split(split)
            if split.weights.len() >= 2
                && split.weights[0].variant == plan.target
                && split.weights[1].variant == plan.baseline
                && split.bucket_by == plan.bucket_by =>
        {
            plan.others = split.weights[2..]
                .iter()
                .map(|w| (w.variant.clone(), w.weight))
                .collect();
            plan.percent = split.weights[0].weight;
            // The stages still to come must fit beside the other variants (the last, 100%,
            // serves the target alone and always does).
            let pair = pair_weight(plan);
            if let Some(stage) = plan.stages[plan.stage_index + 1..]
                .iter()
                .find(|s| s.percent < BUCKETS && s.percent > pair)
            {
                return Err(ServerError::Precondition(format!(
                    "flag {key:?} was edited so that its split also serves {} to other variants: \
                     {:?} can have at most {}, not the {} of a stage to come; \
                     roll the plan back or start a new one",
                    format_percent(BUCKETS - pair),
                    plan.target,
                    format_percent(pair),
                    format_percent(stage.percent)
                )));
            }
        }
        Serve::Variant(v) if *v == plan.baseline => plan.percent = 0,
        _ => {
            return Err(ServerError::Precondition(format!(
                "flag {key:?} was edited so that its split no longer lists {:?} then {:?} by {:?}; \
                 roll the plan back or start a new one",
                plan.target, plan.baseline, plan.bucket_by
            )))
        }
    }
    plan.flag_version = flag.version.unwrap_or(0);
    Ok(())
}

/// `plan`, paused at `now` by `actor` with `message`.
pub(crate) fn pause(
    mut plan: RolloutRecord,
    now: u64,
    actor: &str,
    message: &str,
) -> RolloutRecord {
    plan.state = RolloutState::Paused;
    plan.next_stage_ms = 0;
    plan.state_message = message.to_owned();
    plan.history.push(event(
        &plan,
        now,
        actor,
        RolloutEventKind::Paused,
        0,
        message,
    ));
    plan
}

pub(crate) fn active_plan(
    plans: &BTreeMap<String, RolloutRecord>,
    key: &str,
    environment: &str,
) -> Result<RolloutRecord, ServerError> {
    let plan = plans.get(key).ok_or_else(|| no_plan(key, environment))?;
    if !plan.is_active() {
        return Err(ServerError::Precondition(format!(
            "the plan of flag {key:?} is {} already",
            state_name(plan.state)
        )));
    }
    Ok(plan.clone())
}

pub(crate) fn no_plan(key: &str, environment: &str) -> ServerError {
    ServerError::NotFound(format!(
        "flag {key:?} has no rollout plan in environment {environment:?}"
    ))
}

/// `running`, `paused`, `completed`, `rolled back`.
pub fn state_name(state: RolloutState) -> &'static str {
    match state {
        RolloutState::Running => "running",
        RolloutState::Paused => "paused",
        RolloutState::Completed => "completed",
        RolloutState::RolledBack => "rolled back",
    }
}
