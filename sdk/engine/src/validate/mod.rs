//! Semantic validation (DESIGN.md section 1): every rule a decoded document must also satisfy.
//!
//! Checks are split by what they need: [`check_flag`] and [`check_segment`] look at one
//! document (`document.rs`); [`check_flag_limits`] and [`check_segment_limits`] check the
//! limits a write must also keep (`limits.rs`); [`check_references`] and [`PrerequisiteGraph`]
//! look across documents through a [`Resolve`] (`references.rs`), so a change can be checked
//! against an existing snapshot without rebuilding it. The cross-document and limit checks
//! reuse a few helpers of the one-document checks; nothing here uses them back.

mod document;
mod limits;
mod references;

pub(crate) use document::{check_flag, check_key, check_segment};
pub use document::{is_valid_key, MAX_FLAG_BYTES, MAX_SEGMENT_KEYS};
pub(crate) use limits::{check_flag_limits, check_segment_limits};
pub use references::MAX_PREREQUISITE_LINKS;
pub(crate) use references::{check_references, PrerequisiteGraph, Resolve};
