//! Staged rollout plans (DESIGN.md section 6, docs/rollouts.md), from the bottom up:
//!
//! - `plan`: a plan's pure arithmetic (stages, the plan for a flag, what it serves at a
//!   percentage, entering a stage, adopting a flag edited by hand);
//! - `hook`: what every commit does to the plans (an edit pauses its flag's running plan),
//!   the one thing [`Environments`](crate::Environments) asks of this module;
//! - `guard`: the statistics a plan's guard decides on;
//! - `operations`: starting, pausing, resuming, rolling back, promoting and advancing a plan
//!   as writes to [`Environments`](crate::Environments);
//! - `scheduler`: the task that advances plans as they fall due.
//!
//! The time plans go by is [`crate::clock`].

pub mod guard;
pub(crate) mod hook;
mod operations;
mod plan;
mod scheduler;

pub use operations::Step;
pub(crate) use plan::no_plan;
pub use plan::{actor, state_name, GuardSpec, StartPlan};
pub use scheduler::schedule;
