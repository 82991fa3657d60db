//! Flagstaff's evaluation engine: the flag model, validation, compiled snapshots, evaluation and
//! bucketing. Pure and synchronous: no I/O, no async runtime, no wire types.
//!
//! ```
//! use flagstaff_engine::{Context, Reason, Snapshot};
//!
//! let snapshot = Snapshot::from_text(r#"
//! environment: production
//! flags:
//!   - key: checkout-v2
//!     kind: boolean
//!     variants: { on: true, off: false }
//!     off_variant: off
//!     enabled: true
//!     rules:
//!       - id: eu
//!         conditions: [{ attribute: country, op: in, values: [NL, DE] }]
//!         serve: { variant: on }
//!     default: { variant: off }
//! "#).expect("valid document");
//!
//! let ctx = Context::new("user-1").with("country", "NL");
//! let detail = snapshot.bool_detail("checkout-v2", &ctx, false);
//! assert!(detail.value);
//! assert_eq!(detail.reason, Reason::RuleMatch { index: 0, id: "eu" });
//! ```
//!
//! # Where things are
//!
//! Modules from the bottom up; each uses only modules listed before it.
//!
//! | module | holds |
//! |---|---|
//! | `keys` | equality for the short strings evaluation compares |
//! | `limits` | the limits a written document must keep, and how messages quote values |
//! | `problem` | validation problems: a path and a sentence; [`ValidationError`] |
//! | `model` | the documents users write: [`Flag`], [`Segment`], [`Document`] |
//! | `operand` | condition operands: semver versions, times, regexes |
//! | `yaml` | the YAML emitter for document trees |
//! | `patch` | [`KeyPatch`]: changes to a segment's key lists |
//! | `context` | the evaluation [`Context`] and attribute values |
//! | `bucket` | bucketing: [`bucket()`], the salted MurmurHash3 |
//! | `split` | percentages and split arithmetic for rollouts and the CLI |
//! | `table` | compiled flags or segments by key |
//! | `resolution` | the compact result of resolving a flag: variant, bucket, why |
//! | `dependents` | reverse edges: which flags use a segment or require a flag |
//! | `validate` | semantic validation: one document, write limits, references across documents |
//! | `decode` | structural decoding of a JSON value tree into the model |
//! | `format` | reading and writing documents as JSON or YAML text |
//! | `condition` | compiled conditions and compiled segments |
//! | `compiled` | compiled flags |
//! | `snapshot` | [`Snapshot`] and [`ChangeSet`]: checking and applying changes |
//! | `eval` | evaluation: typed values, [`Detail`] and [`Reason`] |
//! | `diff` | which flags two snapshots evaluate differently |
//! | `openfeature` | an evaluation in OpenFeature's terms: reasons and flag metadata |
//! | `words` | conditions in plain words, for people reading targeting |
//! | `describe` | flags in words: targeting step by step, what a change did, stale flags' one variant |
#![deny(missing_docs)]

mod bucket;
mod compiled;
mod condition;
mod context;
mod decode;
mod dependents;
mod describe;
mod diff;
mod eval;
mod format;
mod keys;
mod limits;
mod model;
mod openfeature;
mod operand;
mod patch;
mod problem;
mod resolution;
mod snapshot;
mod split;
mod table;
mod validate;
mod words;
mod yaml;

pub use bucket::{bucket, BUCKETS};
pub use context::{AttrInput, AttrRef, AttrValue, Context};
pub use describe::{
    flag_change_details, single_variant, staleness, targeting_steps, Staleness, Step,
};
#[doc(hidden)]
pub use eval::counting;
pub use eval::{Detail, ErrorKind, Reason};
pub use format::{
    document_from_value, flag_from_value, parse_document, parse_input, parse_json, parse_value,
    segment_from_value, to_text, Format, Input,
};
pub use limits::{
    clip, name_problem, quote, text_problem, MAX_CONDITIONS, MAX_CONDITION_VALUES,
    MAX_CONTEXT_ATTRIBUTES, MAX_CONTEXT_STRING_BYTES, MAX_DOCUMENT_REGEX_BYTES,
    MAX_ENVIRONMENT_REGEX_BYTES, MAX_JSON_DEPTH, MAX_NAME_BYTES, MAX_PREREQUISITES,
    MAX_REGEX_BYTES, MAX_RULES, MAX_TAGS, MAX_TEXT_BYTES, MAX_VARIANTS, QUOTE_BYTES,
};
pub use model::{
    Condition, Document, Flag, Kind, Op, Prerequisite, Rule, Segment, SegmentRule, Serve, Split,
    Variants, Weight,
};
pub use openfeature::{OpenFeatureOutcome, OpenFeatureReason};
pub use patch::KeyPatch;
pub use problem::{Problem, ValidationError};
pub use snapshot::{ChangeSet, Snapshot};
pub use split::{
    format_percent, move_boundary, pair_weight, parse_percent, reshuffle, serve_summary,
    InvalidPercent,
};
pub use validate::{is_valid_key, MAX_FLAG_BYTES, MAX_PREREQUISITE_LINKS, MAX_SEGMENT_KEYS};
pub use words::{describe_condition, describe_conditions, describe_value, DESCRIBED_VALUES};

/// Not part of the API: the hashing internals behind [`bucket()`], public only so that the
/// crate's own tests can check them against a reference implementation and the conformance
/// vectors. They may change in any release.
#[doc(hidden)]
pub mod __internal {
    pub use crate::bucket::{murmur3_x86_32, write_number, Murmur3, SaltedHasher};
}
