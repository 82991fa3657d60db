//! The commit hook: what every commit to an environment does to its rollout plans, asked
//! through these two functions only, so that the commit ([`Environments`](crate::Environments))
//! depends on nothing of the plans' operations above it. A change by anyone but a plan's own
//! step to a flag whose plan is running pauses that plan in the same transaction; a step whose
//! change turns out to change nothing is stored without a revision.

use std::collections::BTreeMap;

use flagstaff_engine::ChangeSet;

use super::plan::event;
use crate::storage::{RolloutEventKind, RolloutRecord, RolloutState};

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

/// `plan` after its step's change, meant as revision `revision`, turned out to change nothing:
/// its events name no revision, and it goes by the flag's version as it is, `flag_version`.
pub(crate) fn made_no_revision(plan: &mut RolloutRecord, revision: u64, flag_version: u64) {
    for event in &mut plan.history {
        if event.revision == revision {
            event.revision = 0;
        }
    }
    plan.flag_version = flag_version;
}
