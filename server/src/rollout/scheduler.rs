//! The scheduler: finds the rollout plans due and advances each on a blocking thread, waking
//! when the next one falls due or a plan changes.

use std::future::Future;
use std::sync::Arc;

use flagstaff_engine::format_percent;

use super::plan::state_name;
use crate::environments::Environments;
use crate::storage::{RolloutState, Store};

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
