//! Staged rollout plans (DESIGN.md section 6, docs/rollouts.md): starting, pausing,
//! resuming, rolling back and promoting them, and the scheduler that advances them.
//!
//! A plan moves one split of a flag (its default serve or one rule's) from a baseline
//! variant to a target variant. The split lists the target first and the baseline right
//! after it, and every stage moves only the boundary between those two, so a context that got
//! the target keeps it and no other variant's contexts move. Every step that changes the flag
//! is an ordinary audited write (actor `rollout:<flag>`) committed together with the plan's
//! new state, checked against the flag version the plan last wrote: a manual edit of the flag
//! pauses the plan instead of being overwritten (see [`paused_by_edit`]). A rollback or pause
//! takes the environment's writer lock like an advance, and an advance re-checks the plan
//! under that lock, so whichever comes second sees the first: a rollback or pause always wins
//! over an advance that was due.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flagstaff_engine::{
    format_percent, move_boundary, ChangeSet, Flag, Serve, Split, Weight, BUCKETS,
};

use crate::environments::{At, Committed, Environments, WriteContext};
use crate::error::ServerError;
use crate::operations::{existing_flag, flag_in, flags_only};
use crate::storage::{
    now_ms, GuardRecord, GuardTally, RolloutEvent, RolloutEventKind, RolloutRecord, RolloutStage,
    RolloutState, Store,
};

/// The time rollout plans go by: the system's, or one a test moves by hand.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> u64;

    /// Completes once `now_ms() >= deadline_ms`.
    fn sleep_until(&self, deadline_ms: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn sleep_until(&self, deadline_ms: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to, so tests run whole plans in milliseconds.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicU64,
    moved: tokio::sync::watch::Sender<u64>,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            now: AtomicU64::new(start_ms),
            moved: tokio::sync::watch::Sender::new(start_ms),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let now = self.now.fetch_add(by, Ordering::SeqCst) + by;
        self.moved.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline_ms: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut moved = self.moved.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, which outlives this borrow.
            let _ = moved.wait_for(|now| *now >= deadline_ms).await;
        })
    }
}

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
fn check_guard(guard: &GuardSpec) -> Result<(), ServerError> {
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

/// A plan's step that wrote the flag: the write and the plan afterwards.
#[derive(Debug)]
pub struct Step {
    /// The flag change (nothing when the flag already served what the step writes).
    pub committed: Committed,
    /// The plan after the step.
    pub plan: RolloutRecord,
}

/// The actor of a plan's own steps.
pub fn actor(flag: &str) -> String {
    format!("rollout:{flag}")
}

/// Plans paused because `changes`, made by `actor` at `revision`, edit or delete their flag
/// while they run; `stepping` is the flag whose plan makes the change itself.
pub(crate) fn paused_by_edit(
    plans: &BTreeMap<String, RolloutRecord>,
    changes: &ChangeSet,
    stepping: Option<&str>,
    actor: &str,
    revision: u64,
    now: u64,
) -> Vec<RolloutRecord> {
    let edited = changes.flags.iter().map(|f| (f.key.as_str(), "edited"));
    let deleted = changes
        .deleted_flags
        .iter()
        .map(|k| (k.as_str(), "deleted"));
    edited
        .chain(deleted)
        .filter(|(key, _)| Some(*key) != stepping)
        .filter_map(|(key, how)| plans.get(key).map(|plan| (plan, how)))
        .filter(|(plan, _)| plan.state == RolloutState::Running)
        .map(|(plan, how)| {
            let message = format!("paused: the flag was {how} by {actor} at revision {revision}");
            let mut plan = plan.clone();
            plan.state = RolloutState::Paused;
            plan.next_stage_ms = 0;
            plan.state_message = message.clone();
            plan.history.push(event(
                &plan,
                now,
                actor,
                RolloutEventKind::Paused,
                0,
                &message,
            ));
            plan
        })
        .collect()
}

fn event(
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
fn scope<'a>(flag: &'a Flag, rule_id: Option<&str>) -> Result<&'a Serve, ServerError> {
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
fn with_scope(flag: &Flag, rule_id: Option<&str>, serve: Serve) -> Flag {
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
fn serve_at(plan: &RolloutRecord, percent: u32) -> Option<Serve> {
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
fn current_serve(plan: &RolloutRecord) -> Result<Serve, ServerError> {
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
fn check_stages(stages: &[RolloutStage]) -> Result<(), ServerError> {
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
fn plan_for(
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
fn enter_stage(plan: &mut RolloutRecord, index: usize, now: u64) {
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
fn adopt(plan: &mut RolloutRecord, flag: &Flag) -> Result<(), ServerError> {
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
            let pair = pair_weight(plan);
            if let Some(stage) = plan.stages[plan.stage_index..]
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

impl<S: Store> Environments<S> {
    /// Starts a plan and applies its first stage.
    pub fn start_rollout(
        &self,
        ctx: WriteContext<'_>,
        request: &StartPlan,
    ) -> Result<Step, ServerError> {
        let now = self.clock().now_ms();
        let (committed, plan) = self.write_with_rollout(ctx, |current, plans, revision| {
            if let Some(plan) = plans.get(&request.flag).filter(|p| p.is_active()) {
                return Err(ServerError::Precondition(format!(
                    "flag {:?} already has a {} plan; roll it back or promote it first",
                    request.flag,
                    state_name(plan.state)
                )));
            }
            let at = At {
                environment: ctx.environment,
                revision: revision - 1,
            };
            let flag = existing_flag(current, &request.flag, at, request.expected_version)?;
            let mut plan = plan_for(flag, request, ctx.actor, now)?;
            plan.flag_version = revision;
            let changes = flags_only(vec![with_scope(
                flag,
                plan.rule_id.as_deref(),
                current_serve(&plan)?,
            )]);
            let kind = RolloutEventKind::Started;
            plan.history
                .push(event(&plan, now, ctx.actor, kind, revision, ctx.comment));
            if plan.state == RolloutState::Completed {
                plan.history.push(event(
                    &plan,
                    now,
                    ctx.actor,
                    RolloutEventKind::Completed,
                    revision,
                    "",
                ));
            }
            Ok((changes, Some(plan)))
        })?;
        step(committed, plan)
    }

    /// Rolls a plan back: its scope serves the baseline.
    pub fn rollback_rollout(&self, ctx: WriteContext<'_>, flag: &str) -> Result<Step, ServerError> {
        self.finish(ctx, flag, RolloutState::RolledBack)
    }

    /// Promotes a plan: its scope serves the target now.
    pub fn promote_rollout(&self, ctx: WriteContext<'_>, flag: &str) -> Result<Step, ServerError> {
        self.finish(ctx, flag, RolloutState::Completed)
    }

    /// Ends an active plan of `flag` with a fixed serve: the baseline or the target.
    fn finish(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        state: RolloutState,
    ) -> Result<Step, ServerError> {
        let now = self.clock().now_ms();
        let (committed, plan) = self.write_with_rollout(ctx, |current, plans, revision| {
            let mut plan = active_plan(plans, key, ctx.environment)?;
            // A manual edit made while paused is overwritten only in the plan's scope.
            let flag = flag_in(current, key, ctx.environment)?;
            let (percent, serve, kind) = match state {
                RolloutState::RolledBack => (
                    0,
                    Serve::Variant(plan.baseline.clone()),
                    RolloutEventKind::RolledBack,
                ),
                _ => (
                    BUCKETS,
                    Serve::Variant(plan.target.clone()),
                    RolloutEventKind::Promoted,
                ),
            };
            scope(flag, plan.rule_id.as_deref())?;
            plan.state = state;
            plan.percent = percent;
            plan.next_stage_ms = 0;
            plan.state_message = String::new();
            plan.flag_version = revision;
            plan.history
                .push(event(&plan, now, ctx.actor, kind, revision, ctx.comment));
            let changes = flags_only(vec![with_scope(flag, plan.rule_id.as_deref(), serve)]);
            Ok((changes, Some(plan)))
        })?;
        step(committed, plan)
    }

    /// Pauses a running plan: it holds its stage until resumed.
    pub fn pause_rollout(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
    ) -> Result<RolloutRecord, ServerError> {
        let now = self.clock().now_ms();
        self.update_rollout(ctx, key, |_, plan| {
            let mut plan = plan.cloned().ok_or_else(|| no_plan(key, ctx.environment))?;
            if plan.state != RolloutState::Running {
                return Err(ServerError::Precondition(format!(
                    "the plan of flag {key:?} is {}, not running",
                    state_name(plan.state)
                )));
            }
            plan.state = RolloutState::Paused;
            plan.next_stage_ms = 0;
            plan.state_message = format!("paused by {}", ctx.actor);
            plan.history.push(event(
                &plan,
                now,
                ctx.actor,
                RolloutEventKind::Paused,
                0,
                ctx.comment,
            ));
            Ok(plan)
        })
    }

    /// Resumes a paused plan: its current stage gets its full hold again. After a manual edit
    /// the plan takes the flag as it is now, if its split still has the plan's shape.
    pub fn resume_rollout(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
    ) -> Result<RolloutRecord, ServerError> {
        let now = self.clock().now_ms();
        self.update_rollout(ctx, key, |current, plan| {
            let mut plan = plan.cloned().ok_or_else(|| no_plan(key, ctx.environment))?;
            if plan.state != RolloutState::Paused {
                return Err(ServerError::Precondition(format!(
                    "the plan of flag {key:?} is {}, not paused",
                    state_name(plan.state)
                )));
            }
            let flag = flag_in(current, key, ctx.environment)?;
            adopt(&mut plan, flag)?;
            plan.state = RolloutState::Running;
            plan.state_message = String::new();
            plan.stage_started_ms = now;
            plan.next_stage_ms = now.saturating_add(plan.stages[plan.stage_index].hold_ms);
            plan.history.push(event(
                &plan,
                now,
                ctx.actor,
                RolloutEventKind::Resumed,
                0,
                ctx.comment,
            ));
            Ok(plan)
        })
    }

    /// Moves the plan of `key` to its next stage if it is running and due at `now`; `None`
    /// when it was not (paused, rolled back or moved meanwhile: those win).
    pub fn advance_rollout(
        &self,
        environment: &str,
        key: &str,
        now: u64,
    ) -> Result<Option<Step>, ServerError> {
        let actor = actor(key);
        let env = self.get(environment)?;
        // Read again under the writer lock below; this only names the step for the log.
        let completes = env
            .rollout(key)
            .is_some_and(|p| p.stage_index + 2 >= p.stages.len());
        let mut due = false;
        let result = self.write_with_rollout(
            WriteContext {
                environment,
                actor: &actor,
                operation: if completes {
                    "RolloutComplete"
                } else {
                    "RolloutAdvance"
                },
                comment: "",
                // The person who started the plan confirmed its steps.
                confirmed: true,
            },
            |current, plans, revision| {
                let Some(mut plan) = plans
                    .get(key)
                    .filter(|p| p.state == RolloutState::Running && p.next_stage_ms <= now)
                    .cloned()
                else {
                    return Ok((ChangeSet::default(), None));
                };
                due = true;
                let Some(flag) = current.flag(key) else {
                    return Ok((
                        ChangeSet::default(),
                        Some(pause(
                            plan,
                            now,
                            &actor,
                            "paused: the flag no longer exists",
                        )),
                    ));
                };
                if flag.version != Some(plan.flag_version) {
                    let message = format!(
                        "paused: the flag is at version {}, not {} as the plan left it",
                        flag.version.unwrap_or(0),
                        plan.flag_version
                    );
                    return Ok((
                        ChangeSet::default(),
                        Some(pause(plan, now, &actor, &message)),
                    ));
                }
                let next = plan.stage_index + 1;
                enter_stage(&mut plan, next, now);
                plan.flag_version = revision;
                let comment = format!(
                    "stage {} of {}: {}",
                    next + 1,
                    plan.stages.len(),
                    format_percent(plan.percent)
                );
                let kind = if plan.state == RolloutState::Completed {
                    RolloutEventKind::Completed
                } else {
                    RolloutEventKind::Advanced
                };
                plan.history
                    .push(event(&plan, now, &actor, kind, revision, &comment));
                let changes = flags_only(vec![with_scope(
                    flag,
                    plan.rule_id.as_deref(),
                    current_serve(&plan)?,
                )]);
                Ok((changes, Some(plan)))
            },
        );
        let (committed, plan) = result?;
        match (due, plan) {
            (true, Some(plan)) => Ok(Some(Step { committed, plan })),
            _ => Ok(None),
        }
    }

    /// Plans due at `now`, as (environment, flag); and the earliest time one will be.
    pub fn due_rollouts(&self, now: u64) -> (Vec<(String, String)>, Option<u64>) {
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for env in self.list() {
            for plan in env.rollouts().into_values() {
                if plan.state != RolloutState::Running {
                    continue;
                }
                if plan.next_stage_ms <= now {
                    due.push((env.key.clone(), plan.flag.clone()));
                } else {
                    next = Some(next.map_or(plan.next_stage_ms, |n| n.min(plan.next_stage_ms)));
                }
            }
        }
        (due, next)
    }
}

/// Advances plans as they fall due, until `stopped` completes. Each advance runs on a
/// blocking thread (it commits to the store).
pub async fn schedule<S: Store>(
    environments: Arc<Environments<S>>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let clock = environments.clock().clone();
    let changed = environments.rollouts_changed().clone();
    loop {
        let now = clock.now_ms();
        let (due, next) = environments.due_rollouts(now);
        for (environment, flag) in due {
            let envs = environments.clone();
            let result = tokio::task::spawn_blocking(move || {
                let outcome = envs.advance_rollout(&environment, &flag, now);
                (environment, flag, outcome)
            })
            .await;
            match result {
                Ok((environment, flag, Ok(Some(step)))) => tracing::info!(
                    environment,
                    flag,
                    stage = step.plan.stage_index + 1,
                    percent = %format_percent(step.plan.percent),
                    revision = step.committed.revision,
                    state = state_name(step.plan.state),
                    "rollout plan stepped"
                ),
                Ok((_, _, Ok(None))) => {}
                Ok((environment, flag, Err(e))) => {
                    tracing::error!(environment, flag, error = %e, "rollout plan could not advance; retrying in 1 s");
                    tokio::select! {
                        () = clock.sleep_until(clock.now_ms() + 1000) => {}
                        () = &mut stopped => return,
                    }
                }
                Err(e) => tracing::error!(error = %e, "rollout step panicked"),
            }
        }
        let wake = async {
            match next {
                Some(at) => clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wake => {}
            () = changed.notified() => {}
            () = &mut stopped => return,
        }
    }
}

fn pause(mut plan: RolloutRecord, now: u64, actor: &str, message: &str) -> RolloutRecord {
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

/// The step's plan: every step returns one.
fn step(committed: Committed, plan: Option<RolloutRecord>) -> Result<Step, ServerError> {
    let plan = plan
        .ok_or_else(|| ServerError::Precondition("the rollout step produced no plan".to_owned()))?;
    Ok(Step { committed, plan })
}

fn active_plan(
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

fn no_plan(key: &str, environment: &str) -> ServerError {
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
