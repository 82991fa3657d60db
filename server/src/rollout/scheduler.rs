//! The scheduler: finds the rollout plans due and advances each on a blocking thread, waking
//! when the next one falls due or a plan changes; and checks the plans' guards every second.
//! Both are the leader's duties when several flagstaffd share a database.

use std::future::Future;
use std::sync::Arc;

use flagstaff_engine::format_percent;

use super::plan::state_name;
use crate::environments::Environments;
use crate::error::ServerError;
use crate::storage::{Leadership, RolloutState, Store, StoreError};

impl<S: Store> Environments<S> {
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

/// How often the leader looks at the guard counts every flagstaffd on the database summed.
const GUARD_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Advances plans as they fall due, and rolls back those whose guards reject their targets,
/// until `stopped` completes: while this flagstaffd leads (DESIGN.md section 7; always, on a
/// store of its own). Each step runs on a blocking thread (it commits to the store).
pub async fn schedule<S: Store>(
    environments: Arc<Environments<S>>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let clock = environments.clock().clone();
    let changed = environments.rollouts_changed().clone();
    let mut leadership = environments.leadership();
    let mut guards = tokio::time::interval(GUARD_CHECK);
    guards.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Told when it changes; on a store of its own, it always leads and nothing is told.
    let mut leading = leadership.is_none();
    loop {
        if !environments.leads() {
            if leading {
                tracing::info!("another flagstaffd leads: it runs the rollout plans and guards");
            }
            leading = false;
            tokio::select! {
                () = led(&mut leadership) => {}
                () = &mut stopped => return,
            }
            continue;
        }
        if !leading {
            tracing::info!("this flagstaffd leads: it runs the rollout plans and guards");
            leading = true;
        }
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
                // Another flagstaffd took the lease: it advances the plan.
                Ok((_, _, Err(ServerError::Store(StoreError::LeaseLost)))) => break,
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
            () = lost(&mut leadership) => {}
            _ = guards.tick() => check_guards(&environments).await,
            () = &mut stopped => return,
        }
    }
}

/// Rolls back the plans whose guards reject their targets on the counts summed so far.
async fn check_guards<S: Store>(environments: &Arc<Environments<S>>) {
    let envs = environments.clone();
    match tokio::task::spawn_blocking(move || envs.check_guards()).await {
        Ok(Ok(_)) | Ok(Err(ServerError::Store(StoreError::LeaseLost))) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot check the rollout guards"),
        Err(e) => tracing::error!(error = %e, "checking the rollout guards panicked"),
    }
}

/// Completes once `leadership` says this flagstaffd leads; never without one.
async fn led(leadership: &mut Option<Leadership>) {
    match leadership {
        Some(l) => {
            if l.wait_for(Option::is_some).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Completes once `leadership` says this flagstaffd no longer leads; never without one.
async fn lost(leadership: &mut Option<Leadership>) {
    match leadership {
        Some(l) => {
            if l.wait_for(Option::is_none).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
