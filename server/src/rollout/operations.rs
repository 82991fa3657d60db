//! Rollout plans' operations on [`Environments`]: starting, pausing, resuming, rolling back,
//! promoting and advancing a plan.
//!
//! Every step that changes the flag is an ordinary audited write (actor `rollout:<flag>`)
//! committed together with the plan's new state, checked against the flag version the plan
//! last wrote: a manual edit of the flag pauses the plan instead of being overwritten (see
//! [`paused_by_edit`](super::hook::paused_by_edit)). A rollback or pause takes the
//! environment's writer lock like an advance, and an advance re-checks the plan under that
//! lock, so whichever comes second sees the first: a rollback or pause always wins over an
//! advance that was due.

use flagstaff_engine::{format_percent, ChangeSet, Serve, BUCKETS};

use super::plan::{
    active_plan, actor, adopt, current_serve, enter_stage, event, no_plan, pause, plan_for, scope,
    state_name, with_scope, StartPlan,
};
use crate::environments::{Committed, Environments, WriteContext};
use crate::error::ServerError;
use crate::operations::{existing_flag, flag_in, flags_only};
use crate::storage::{RolloutEventKind, RolloutRecord, RolloutState, Store, StoreError};
use crate::versions::At;

/// A plan's step that wrote the flag: the write and the plan afterwards.
#[derive(Debug)]
pub struct Step {
    /// The flag change (nothing when the flag already served what the step writes).
    pub committed: Committed,
    /// The plan after the step.
    pub plan: RolloutRecord,
}

impl<S: Store> Environments<S> {
    /// Starts a plan and applies its first stage.
    pub fn start_rollout(
        &self,
        ctx: WriteContext<'_>,
        request: &StartPlan,
    ) -> Result<Step, ServerError> {
        let now = self.clock().now_ms();
        let (committed, plan) = retried(|| {
            self.write_with_rollout(ctx, |current, plans, revision| {
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
            })
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
        let (committed, plan) = retried(|| {
            self.write_with_rollout(ctx, |current, plans, revision| {
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
            })
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
        retried(|| {
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
        retried(|| {
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
        let result = retried(|| {
            self.write_with_rollout(
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
                    duty: true,
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
            )
        });
        let (committed, plan) = result?;
        match (due, plan) {
            (true, Some(plan)) => Ok(Some(Step { committed, plan })),
            _ => Ok(None),
        }
    }
}

/// How many times a plan's operation is tried when the plan was changed through another
/// flagstaffd on the database first: each try reads the plans again, so a pause there is
/// seen here (and an advance no longer due is not made).
const ATTEMPTS: u32 = 3;

/// `attempt`, tried again (up to [`ATTEMPTS`]) while it fails on a plan changed elsewhere.
fn retried<T>(mut attempt: impl FnMut() -> Result<T, ServerError>) -> Result<T, ServerError> {
    let mut tried = 1;
    loop {
        match attempt() {
            Err(ServerError::Store(StoreError::PlanConflict { .. })) if tried < ATTEMPTS => {
                tried += 1;
            }
            other => return other,
        }
    }
}

/// The step's plan: every step returns one.
fn step(committed: Committed, plan: Option<RolloutRecord>) -> Result<Step, ServerError> {
    let plan = plan
        .ok_or_else(|| ServerError::Precondition("the rollout step produced no plan".to_owned()))?;
    Ok(Step { committed, plan })
}
