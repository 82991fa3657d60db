//! What SDKs report (`Sync.ReportMetrics`): flag usage for `flag list` and `flag stale`, and
//! the counts rollout guards test.

use std::collections::HashMap;

use crate::environments::{Environment, Environments, WriteContext};
use crate::error::ServerError;
use crate::rollout;
use crate::rollout::guard::{self, State};
use crate::storage::{FlagUsage, RolloutState, Store};

/// One SDK instance's report, in the server's terms.
#[derive(Debug, Clone, Default)]
pub struct MetricsReport {
    /// Evaluation counts.
    pub evaluations: Vec<Evaluations>,
    /// Application events attributed to the variants of guarded flags.
    pub attributions: Vec<Attributed>,
}

/// How often a flag's version served a variant in a window ending at `window_end_ms`.
#[derive(Debug, Clone)]
pub struct Evaluations {
    /// The flag.
    pub flag: String,
    /// The variant served; empty for the caller's default.
    pub variant: String,
    /// The flag version that served.
    pub version: u64,
    /// How many evaluations.
    pub count: u64,
    /// The end of the window they were counted in, in Unix milliseconds.
    pub window_end_ms: u64,
}

/// Application events of one key from contexts a flag's version served a variant.
#[derive(Debug, Clone)]
pub struct Attributed {
    /// The event's key.
    pub event: String,
    /// The flag.
    pub flag: String,
    /// The variant the contexts got.
    pub variant: String,
    /// The flag version that served it.
    pub version: u64,
    /// How many events.
    pub count: u64,
}

/// What the server answers a report with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportOutcome {
    /// The flags under a running guarded plan and the event each guard watches, by flag.
    pub guards: Vec<(String, String)>,
    /// The flags whose plans this report's counts made their guards roll back.
    pub rolled_back: Vec<String>,
}

impl<S: Store> Environments<S> {
    /// Adds evaluations to the usage of `env`'s flags: `(flag, count, last evaluated in Unix
    /// milliseconds)` each, from SDK reports or from OFREP.
    pub fn record_usage<'a>(
        &self,
        env: &Environment,
        evaluations: impl IntoIterator<Item = (&'a str, u64, u64)>,
    ) -> Result<(), ServerError> {
        // Usage is kept for the environment's flags only: counts of names that are no flag
        // (a stale SDK's, or made up) would grow the store without bound.
        let current = env.current();
        let mut used: HashMap<&str, FlagUsage> = HashMap::new();
        for (flag, count, at_ms) in evaluations {
            if count == 0 || current.snapshot.flag(flag).is_none() {
                continue;
            }
            let u = used.entry(flag).or_default();
            u.evaluations = u.evaluations.saturating_add(count);
            u.last_evaluated_ms = u.last_evaluated_ms.max(at_ms);
        }
        if used.is_empty() {
            return Ok(());
        }
        let merged: Vec<(&str, FlagUsage)> = {
            let mut usage = env.lock_usage();
            used.iter()
                .map(|(flag, add)| {
                    let u = usage.entry((*flag).to_owned()).or_default();
                    u.evaluations = u.evaluations.saturating_add(add.evaluations);
                    u.last_evaluated_ms = u.last_evaluated_ms.max(add.last_evaluated_ms);
                    (*flag, *u)
                })
                .collect()
        };
        self.store().put_usage(&env.key, &merged)?;
        Ok(())
    }

    /// Records `report` from an SDK of `environment`: flag usage, and the counts of guarded
    /// plans; rolls back every plan whose guard now rejects its target.
    pub fn record_metrics(
        &self,
        environment: &str,
        report: &MetricsReport,
    ) -> Result<ReportOutcome, ServerError> {
        let env = self.get(environment)?;
        self.record_usage(
            &env,
            report
                .evaluations
                .iter()
                .map(|e| (e.flag.as_str(), e.count, e.window_end_ms)),
        )?;

        // Guard counts, under the writer lock so no plan write in between loses them; kept in
        // memory and stored with the plan's next write.
        let mut rejected = Vec::new();
        let mut guards = Vec::new();
        {
            let _writing = env.lock_writer();
            let mut plans = env.lock_rollouts();
            for plan in plans.values_mut() {
                if plan.state != RolloutState::Running {
                    continue;
                }
                let version = plan.flag_version;
                let Some(event) = plan.guard.as_ref().map(|g| g.event.clone()) else {
                    continue;
                };
                guards.push((plan.flag.clone(), event));
                let fresh = guard::stage_tally(plan);
                let Some(g) = plan.guard.as_mut() else {
                    continue;
                };
                if g.tally.flag_version != version {
                    g.tally = fresh;
                }
                let (flag, target, baseline) = (&plan.flag, &plan.target, &plan.baseline);
                let mut counted = false;
                for e in &report.evaluations {
                    if e.flag == *flag && e.version == version {
                        if e.variant == *target {
                            g.tally.target_exposures =
                                g.tally.target_exposures.saturating_add(e.count);
                        } else if e.variant == *baseline {
                            g.tally.baseline_exposures =
                                g.tally.baseline_exposures.saturating_add(e.count);
                        }
                    }
                }
                for a in &report.attributions {
                    if a.flag == *flag && a.version == version && a.event == g.event {
                        if a.variant == *target {
                            g.tally.target_events = g.tally.target_events.saturating_add(a.count);
                            counted = true;
                        } else if a.variant == *baseline {
                            g.tally.baseline_events =
                                g.tally.baseline_events.saturating_add(a.count);
                            counted = true;
                        }
                    }
                }
                if !counted {
                    continue;
                }
                let Some((_, verdict)) = guard::of_plan(plan) else {
                    continue;
                };
                if verdict.state == State::Rejected {
                    if let Some(g) = plan.guard.as_mut() {
                        g.rejected = true;
                        rejected.push((
                            plan.flag.clone(),
                            guard::describe(&g.tally, &g.event, &verdict),
                        ));
                    }
                }
            }
        }

        let mut outcome = ReportOutcome {
            guards,
            rolled_back: Vec::new(),
        };
        for (flag, comment) in rejected {
            let actor = rollout::actor(&flag);
            let ctx = WriteContext {
                environment,
                actor: &actor,
                operation: "RolloutGuardRollback",
                comment: &comment,
                // The person who started the plan confirmed its guard.
                confirmed: true,
            };
            match self.rollback_rollout(ctx, &flag) {
                Ok(step) => {
                    tracing::warn!(
                        environment,
                        flag,
                        revision = step.committed.revision,
                        "{comment}; rolled back"
                    );
                    outcome.guards.retain(|(f, _)| *f != flag);
                    outcome.rolled_back.push(flag);
                }
                // Rolled back or promoted meanwhile: nothing left to do.
                Err(ServerError::Precondition(_) | ServerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(outcome)
    }
}
