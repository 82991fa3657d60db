//! A rollout guard's test (DESIGN.md section 6; docs/rollouts.md explains it for people).
//!
//! With the target at weight `w_t` and the baseline at `w_b`, an arm's event rate is its events
//! divided by its weight. If the target's rate is at most `max_ratio` times the baseline's (the
//! null hypothesis), the target's share of the pair's events is at most
//! `p0 = max_ratio·w_t / (max_ratio·w_t + w_b)`. The test is a mixture sequential probability
//! ratio test on those binomial counts: the likelihood of the counts under a set of
//! alternatives (the target `m` times worse than allowed, for several `m > 1`), averaged, divided
//! by their likelihood at `p0`. Under the null that ratio is a nonnegative supermartingale
//! starting at 1, so by Ville's inequality the chance that it *ever* reaches `1/α` is at most
//! `α`: it may be checked after every report without inflating false alarms.
//!
//! Counts start again at every stage (the weights change), and each stage's test gets an equal
//! part of the plan's false-alarm probability [`FALSE_ALARM`], so a whole plan rolls back
//! by mistake with a probability of at most 5%.

use flagstaff_engine::BUCKETS;

use super::plan::pair_weight;
use crate::storage::{GuardTally, RolloutRecord};

/// The probability that a plan whose target is no worse than allowed is rolled back by its
/// guard at some stage.
pub const FALSE_ALARM: f64 = 0.05;

/// The alternatives mixed, as multiples of `max_ratio`: how much worse than allowed the target
/// may be. Equal weights; a spread from barely to far worse keeps the test quick for large
/// effects and still able to find small ones.
const WORSE_BY: [f64; 8] = [1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0];

/// Where a guard's test stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Fewer events in the stage than the guard's `min_events`: nothing decided yet.
    Collecting,
    /// Testing; no evidence yet that the target does worse than allowed.
    Monitoring,
    /// The target does worse than allowed: roll the plan back.
    Rejected,
}

/// The test's state for one stage's counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The largest share of the pair's events the target may have under the null.
    pub null_share: f64,
    /// The target's share of the pair's events; 0 before any event.
    pub observed_share: f64,
    /// The mixture likelihood ratio against the null.
    pub statistic: f64,
    /// The statistic's rejection threshold in this stage.
    pub threshold: f64,
    /// Where the test stands.
    pub state: State,
}

/// The test for `tally`, counted while the target had weight `target_weight` and the baseline
/// `baseline_weight` (1/1000 of a percent each), in a plan whose guard tests `stages` stages.
pub fn test(
    tally: &GuardTally,
    max_ratio: f64,
    min_events: u64,
    target_weight: u32,
    baseline_weight: u32,
    stages: usize,
) -> Verdict {
    let threshold = stages.max(1) as f64 / FALSE_ALARM;
    let x = tally.target_events as f64;
    let n = (tally.target_events + tally.baseline_events) as f64;
    let observed_share = if n > 0.0 { x / n } else { 0.0 };
    let share = |ratio: f64| {
        let t = ratio * f64::from(target_weight);
        t / (t + f64::from(baseline_weight))
    };
    let null_share = share(max_ratio);
    let mut verdict = Verdict {
        null_share,
        observed_share,
        statistic: 1.0,
        threshold,
        state: State::Collecting,
    };
    if target_weight == 0 || baseline_weight == 0 {
        // One arm gets nobody: there is nothing to compare.
        return verdict;
    }
    // log of each alternative's likelihood ratio, then their average, kept in logs until the
    // end so that thousands of events do not overflow.
    let logs: Vec<f64> = WORSE_BY
        .iter()
        .map(|m| {
            let p = share(max_ratio * m);
            x * (p / null_share).ln() + (n - x) * ((1.0 - p) / (1.0 - null_share)).ln()
        })
        .collect();
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = logs.iter().map(|l| (l - top).exp()).sum::<f64>() / logs.len() as f64;
    let log_statistic = top + mean.ln();
    verdict.statistic = log_statistic.exp().min(f64::MAX);
    verdict.state = if tally.target_events + tally.baseline_events < min_events {
        State::Collecting
    } else if log_statistic >= threshold.ln() {
        State::Rejected
    } else {
        State::Monitoring
    };
    verdict
}

/// The counts of `plan`'s current stage (of the stage its guard rejected, once it has) and
/// the test on them; `None` when the plan has no guard.
pub fn of_plan(plan: &RolloutRecord) -> Option<(GuardTally, Verdict)> {
    let guard = plan.guard.as_ref()?;
    let tested = plan.stages.iter().filter(|s| s.percent < BUCKETS).count();
    let tally = if guard.rejected || guard.tally.flag_version == plan.flag_version {
        guard.tally
    } else {
        // The counts are an earlier stage's.
        stage_tally(plan)
    };
    let mut verdict = test(
        &tally,
        guard.max_ratio,
        guard.min_events,
        tally.target_weight,
        tally.baseline_weight,
        tested,
    );
    if guard.rejected {
        verdict.state = State::Rejected;
    }
    Some((tally, verdict))
}

/// Empty counts for `plan`'s current stage.
pub fn stage_tally(plan: &RolloutRecord) -> GuardTally {
    GuardTally {
        flag_version: plan.flag_version,
        target_weight: plan.percent,
        baseline_weight: pair_weight(plan).saturating_sub(plan.percent),
        ..GuardTally::default()
    }
}

/// The guard's counts and statistic in one line, for the audit entry of its rollback.
pub fn describe(tally: &GuardTally, event: &str, verdict: &Verdict) -> String {
    let rate = |events: u64, exposures: u64| {
        if exposures == 0 {
            "no exposures".to_owned()
        } else {
            format!(
                "{:.3}% of {exposures} exposures",
                100.0 * events as f64 / exposures as f64
            )
        }
    };
    format!(
        "guard {event:?} rejected the target: target {} events ({}), baseline {} events ({}); \
         target share {:.4} against at most {:.4}; statistic {} of {}",
        tally.target_events,
        rate(tally.target_events, tally.target_exposures),
        tally.baseline_events,
        rate(tally.baseline_events, tally.baseline_exposures),
        verdict.observed_share,
        verdict.null_share,
        statistic(verdict.statistic),
        statistic(verdict.threshold),
    )
}

/// A statistic as people read it, the way `flagstaff rollout status` shows it: `3.2`,
/// `40.0`, and from a million on (where the exact value, up to 309 digits, says nothing more:
/// the test rejected long before) `> 10^6`.
pub fn statistic(value: f64) -> String {
    if value.is_nan() {
        "-".to_owned()
    } else if value >= 1e6 {
        "> 10^6".to_owned()
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(target_events: u64, baseline_events: u64) -> GuardTally {
        GuardTally {
            target_events,
            baseline_events,
            ..GuardTally::default()
        }
    }

    #[test]
    fn the_null_share_follows_the_weights_and_the_ratio() {
        // 10% against 90%, at most 1.5 times the rate: 15 / (15 + 90).
        let v = test(&tally(0, 0), 1.5, 0, 10_000, 90_000, 1);
        assert!((v.null_share - 15.0 / 105.0).abs() < 1e-12);
        assert_eq!(v.statistic, 1.0);
        assert_eq!(v.threshold, 20.0);
    }

    #[test]
    fn events_in_proportion_to_the_weights_are_no_evidence() {
        // Equal rates: the target's share is its weight's, 10%.
        let v = test(&tally(100, 900), 1.5, 100, 10_000, 90_000, 1);
        assert_eq!(v.state, State::Monitoring);
        assert!(v.statistic < 1.0, "{v:?}");
    }

    #[test]
    fn a_target_three_times_worse_is_rejected() {
        // 3× the rate at 10%: a share of 30 / 120 = 25%.
        let v = test(&tally(250, 750), 1.5, 100, 10_000, 90_000, 3);
        assert_eq!(v.state, State::Rejected, "{v:?}");
        assert!(v.statistic >= 60.0);
    }

    #[test]
    fn nothing_is_decided_before_min_events() {
        let v = test(&tally(250, 750), 1.5, 1001, 10_000, 90_000, 1);
        assert_eq!(v.state, State::Collecting);
        assert!(
            v.statistic > v.threshold,
            "the evidence is there, the decision waits"
        );
    }

    #[test]
    fn more_stages_need_more_evidence() {
        let one = test(&tally(40, 200), 1.5, 0, 10_000, 90_000, 1);
        let four = test(&tally(40, 200), 1.5, 0, 10_000, 90_000, 4);
        assert_eq!(one.statistic, four.statistic);
        assert_eq!(four.threshold, 4.0 * one.threshold);
    }

    #[test]
    fn the_audit_comment_shows_huge_statistics_readably() {
        let t = GuardTally {
            target_exposures: 2000,
            baseline_exposures: 18_000,
            ..tally(2000, 0)
        };
        let v = test(&t, 1.5, 100, 10_000, 90_000, 1);
        assert!(v.statistic > 1e100, "{v:?}");
        let comment = describe(&t, "checkout_error", &v);
        assert!(comment.ends_with("; statistic > 10^6 of 20.0"), "{comment}");
        assert!(comment.len() < 300, "{comment}");
        let v = test(&tally(40, 200), 1.5, 100, 10_000, 90_000, 3);
        assert!(v.statistic < 1e6, "{v:?}");
        let comment = describe(&tally(40, 200), "e", &v);
        assert!(
            comment.ends_with(&format!("; statistic {:.1} of 60.0", v.statistic)),
            "{comment}"
        );
        assert_eq!(statistic(f64::MAX), "> 10^6");
        assert_eq!(statistic(999_999.94), "999999.9");
        assert_eq!(statistic(f64::NAN), "-");
    }

    #[test]
    fn huge_counts_stay_finite() {
        let v = test(&tally(5_000_000, 5_000_000), 1.5, 0, 10_000, 90_000, 1);
        assert_eq!(v.state, State::Rejected);
        assert!(v.statistic.is_finite());
        let v = test(&tally(0, 10_000_000), 1.5, 0, 10_000, 90_000, 1);
        assert_eq!(v.state, State::Monitoring);
        assert!(v.statistic.is_finite());
    }

    /// The share of `runs` sequences of `events` events (target share `share`, fixed seed)
    /// in which a test checked after every event ever rejects.
    fn false_alarm_rate(share: f64, max_ratio: f64, runs: u32, events: u32) -> f64 {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut rejected = 0;
        for _ in 0..runs {
            let mut t = tally(0, 0);
            for _ in 0..events {
                if next() < share {
                    t.target_events += 1;
                } else {
                    t.baseline_events += 1;
                }
                if test(&t, max_ratio, 0, 20_000, 80_000, 1).state == State::Rejected {
                    rejected += 1;
                    break;
                }
            }
        }
        f64::from(rejected) / f64::from(runs)
    }

    #[test]
    fn false_alarms_stay_under_the_bound_when_checked_after_every_event() {
        // At the edge of the null (the target exactly max_ratio times worse), the bound is
        // reached at most: allow three standard errors of 500 runs for sampling.
        let edge = false_alarm_rate(0.2, 1.0, 500, 3000);
        let tolerance = 3.0 * (FALSE_ALARM * (1.0 - FALSE_ALARM) / 500.0).sqrt();
        assert!(edge < FALSE_ALARM + tolerance, "false alarms {edge}");
        // Equal rates under a 1.5 guard, the real case: far below it.
        let equal = false_alarm_rate(0.2, 1.5, 500, 3000);
        assert!(equal < 0.01, "false alarms {equal}");
    }
}
