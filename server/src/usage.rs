//! What SDKs report (`Sync.ReportMetrics`): flag usage for `flag list` and `flag stale`, and
//! the counts rollout guards test.

use std::collections::HashMap;

use crate::environments::{Environment, Environments, WriteContext};
use crate::error::ServerError;
use crate::rollout;
use crate::rollout::guard::{self, State};
use crate::storage::{FlagUsage, GuardTally, RolloutRecord, RolloutState, Store, StoreError};

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
        // Added in the store, where every flagstaffd sharing it adds its own SDKs' reports,
        // then here, once stored.
        let added: Vec<(&str, FlagUsage)> = used.into_iter().collect();
        self.store().add_usage(&env.key, &added)?;
        let mut usage = env.lock_usage();
        for (flag, add) in added {
            let u = usage.entry(flag.to_owned()).or_default();
            u.evaluations = u.evaluations.saturating_add(add.evaluations);
            u.last_evaluated_ms = u.last_evaluated_ms.max(add.last_evaluated_ms);
        }
        Ok(())
    }

    /// How SDKs have used each of `flags` of `env` (no evaluations for a flag none reported):
    /// on a store several flagstaffd share, as stored, every one's reports added up; otherwise
    /// as this process holds it. May read the store: call it on a blocking thread.
    pub fn usage_of(
        &self,
        env: &Environment,
        flags: &[&str],
    ) -> Result<Vec<FlagUsage>, ServerError> {
        if !self.store().is_shared() {
            return Ok(flags
                .iter()
                .map(|flag| env.usage(flag).unwrap_or_default())
                .collect());
        }
        let stored: HashMap<String, FlagUsage> =
            self.store().usage(&env.key)?.into_iter().collect();
        Ok(flags
            .iter()
            .map(|flag| stored.get(*flag).copied().unwrap_or_default())
            .collect())
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

        // What the report adds to each running guarded plan's counts: for the flag version
        // the plan's stage wrote.
        let mut guards = Vec::new();
        let mut added = Vec::new();
        for plan in env.lock_rollouts().values() {
            if plan.state != RolloutState::Running {
                continue;
            }
            let Some(g) = plan.guard.as_ref() else {
                continue;
            };
            guards.push((plan.flag.clone(), g.event.clone()));
            let counts = report_counts(plan, &g.event, report);
            if counts.target_events + counts.baseline_events > 0
                || counts.target_exposures + counts.baseline_exposures > 0
            {
                added.push((plan.flag.clone(), counts));
            }
        }
        // Summed in the store with what every flagstaffd on the database counted; on a
        // store of its own, in memory.
        let mut sums = Vec::with_capacity(added.len());
        for (flag, counts) in added {
            let sum = self.store().add_guard_counts(&env.key, &flag, &counts)?;
            sums.push((flag, counts, sum));
        }
        // Deciding is the leader's duty: on another flagstaffd, the leader decides on the
        // sums within a second (see `check_guards`), and this one marks nothing rejected.
        let leads = self.leads();
        let mut rejected = Vec::new();
        {
            // Under the writer lock, so no plan write in between loses the counts; kept in
            // memory and stored with the plan's next write.
            let _writing = env.lock_writer();
            let mut plans = env.lock_rollouts();
            for (flag, counts, sum) in sums {
                let Some(plan) = plans.get_mut(&flag) else {
                    continue;
                };
                if plan.state != RolloutState::Running || plan.flag_version != counts.flag_version {
                    continue;
                }
                let fresh = guard::stage_tally(plan);
                let Some(g) = plan.guard.as_mut() else {
                    continue;
                };
                if g.tally.flag_version != counts.flag_version {
                    g.tally = fresh;
                }
                g.tally = match sum {
                    Some(sum) => GuardTally {
                        target_weight: fresh.target_weight,
                        baseline_weight: fresh.baseline_weight,
                        ..sum
                    },
                    None => added_to(g.tally, &counts),
                };
                if !leads || counts.target_events + counts.baseline_events == 0 {
                    continue;
                }
                if let Some(decided) = rejects(plan) {
                    rejected.push(decided);
                }
            }
        }
        let mut outcome = ReportOutcome {
            guards,
            rolled_back: Vec::new(),
        };
        // The report is counted: a rollback that fails now is tried again by the leader's
        // look at the sums every second, and the SDK is not told to send its counts again.
        match self.roll_back_rejected(environment, rejected) {
            Ok(rolled_back) => outcome.rolled_back = rolled_back,
            Err(e) => {
                tracing::warn!(environment, error = %e, "a guard's rollback failed; the next look at the guards tries again");
            }
        }
        outcome
            .guards
            .retain(|(f, _)| !outcome.rolled_back.contains(f));
        Ok(outcome)
    }

    /// Looks at the counts every flagstaffd on the database summed for each running guarded
    /// plan, and rolls back those whose guard now rejects its target: the leader's duty, done
    /// every second. On a store of its own, the counts are those in memory.
    pub fn check_guards(&self) -> Result<Vec<(String, String)>, ServerError> {
        let mut rolled_back = Vec::new();
        for env in self.list() {
            let guarded = env
                .lock_rollouts()
                .values()
                .any(|p| p.state == RolloutState::Running && p.guard.is_some());
            if !guarded {
                continue;
            }
            let sums = self.store().guard_counts(&env.key)?;
            let mut rejected = Vec::new();
            {
                let _writing = env.lock_writer();
                let mut plans = env.lock_rollouts();
                summed(&mut plans, sums);
                for plan in plans.values_mut() {
                    if plan.state == RolloutState::Running {
                        rejected.extend(rejects(plan));
                    }
                }
            }
            for flag in self.roll_back_rejected(&env.key, rejected)? {
                rolled_back.push((env.key.clone(), flag));
            }
        }
        Ok(rolled_back)
    }

    /// `environment`'s rollout plans as the Admin API shows them: on a database several
    /// flagstaffd share, each running guard with the counts summed there, which include the
    /// reports other replicas received (this one holds only the sums of its own reports').
    pub fn plans_as_counted(
        &self,
        environment: &str,
    ) -> Result<std::collections::BTreeMap<String, RolloutRecord>, ServerError> {
        let mut plans = self.get(environment)?.rollouts();
        let guarded = plans
            .values()
            .any(|p| p.state == RolloutState::Running && p.guard.is_some());
        if !guarded || !self.store().is_shared() {
            return Ok(plans);
        }
        summed(&mut plans, self.store().guard_counts(environment)?);
        Ok(plans)
    }

    /// Rolls back the plans of `environment` whose guards rejected their targets, each with
    /// its comment for the audit log; returns the flags rolled back.
    fn roll_back_rejected(
        &self,
        environment: &str,
        rejected: Vec<(String, String)>,
    ) -> Result<Vec<String>, ServerError> {
        let mut rolled_back = Vec::new();
        for (flag, comment) in rejected {
            let actor = rollout::actor(&flag);
            let ctx = WriteContext {
                environment,
                actor: &actor,
                operation: "RolloutGuardRollback",
                comment: &comment,
                // The person who started the plan confirmed its guard.
                confirmed: true,
                duty: true,
            };
            match self.rollback_rollout(ctx, &flag) {
                Ok(step) => {
                    tracing::warn!(
                        environment,
                        flag,
                        revision = step.committed.revision,
                        "{comment}; rolled back"
                    );
                    rolled_back.push(flag);
                }
                // Rolled back or promoted meanwhile: nothing left to do.
                Err(ServerError::Precondition(_) | ServerError::NotFound(_)) => {}
                // Another flagstaffd took the lease meanwhile: it decides on the same sums.
                Err(ServerError::Store(StoreError::LeaseLost)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(rolled_back)
    }
}

/// What `report` counts for `plan`'s guard (watching `event`) in the plan's current stage.
fn report_counts(plan: &RolloutRecord, event: &str, report: &MetricsReport) -> GuardTally {
    let mut counts = guard::stage_tally(plan);
    let (flag, version) = (&plan.flag, plan.flag_version);
    let (target, baseline) = (&plan.target, &plan.baseline);
    for e in &report.evaluations {
        if e.flag == *flag && e.version == version {
            if e.variant == *target {
                counts.target_exposures = counts.target_exposures.saturating_add(e.count);
            } else if e.variant == *baseline {
                counts.baseline_exposures = counts.baseline_exposures.saturating_add(e.count);
            }
        }
    }
    for a in &report.attributions {
        if a.flag == *flag && a.version == version && a.event == event {
            if a.variant == *target {
                counts.target_events = counts.target_events.saturating_add(a.count);
            } else if a.variant == *baseline {
                counts.baseline_events = counts.baseline_events.saturating_add(a.count);
            }
        }
    }
    counts
}

/// The running plans of `plans` with the guard counts of `sums` (by flag) for the flag
/// version each plan's stage serves, in the stage's weights.
fn summed(
    plans: &mut std::collections::BTreeMap<String, RolloutRecord>,
    sums: Vec<(String, GuardTally)>,
) {
    for (flag, sum) in sums {
        let Some(plan) = plans.get_mut(&flag) else {
            continue;
        };
        if plan.state != RolloutState::Running || plan.flag_version != sum.flag_version {
            continue;
        }
        let stage = guard::stage_tally(plan);
        if let Some(g) = plan.guard.as_mut() {
            g.tally = GuardTally {
                target_weight: stage.target_weight,
                baseline_weight: stage.baseline_weight,
                ..sum
            };
        }
    }
}

/// `tally` with `counts` added.
fn added_to(tally: GuardTally, counts: &GuardTally) -> GuardTally {
    GuardTally {
        target_exposures: tally
            .target_exposures
            .saturating_add(counts.target_exposures),
        baseline_exposures: tally
            .baseline_exposures
            .saturating_add(counts.baseline_exposures),
        target_events: tally.target_events.saturating_add(counts.target_events),
        baseline_events: tally.baseline_events.saturating_add(counts.baseline_events),
        ..tally
    }
}

/// Whether `plan`'s guard rejects its target on the counts held: if so, marks it rejected
/// and returns the flag with the audit comment of its rollback.
fn rejects(plan: &mut RolloutRecord) -> Option<(String, String)> {
    let (_, verdict) = guard::of_plan(plan)?;
    if verdict.state != State::Rejected {
        return None;
    }
    let g = plan.guard.as_mut()?;
    g.rejected = true;
    Some((
        plan.flag.clone(),
        guard::describe(&g.tally, &g.event, &verdict),
    ))
}
