//! Owned evaluation details, for callers that keep or send them on (logs, responses):
//! [`EvaluationDetail`] and [`EvaluationReason`] are the owned forms of the engine's
//! [`Detail`] and [`Reason`], which borrow the variant key, rule id and prerequisite from the
//! snapshot (the client's `with_*_detail` methods hand those out, allocating nothing). The
//! owned form is made from the borrowed one in one place, [`EvaluationDetail::from_engine`];
//! [`EvaluationReason::as_reason`] goes back.

use std::fmt;

use flagstaff_engine::{Detail, ErrorKind, Reason};

/// Why a variant was served, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvaluationReason {
    /// The flag is disabled: its off variant.
    Off,
    /// The rule at `index` (0-based) with id `id` matched.
    RuleMatch {
        /// Position of the rule in the flag's rules.
        index: usize,
        /// The rule's id.
        id: String,
    },
    /// No rule matched: the flag's default.
    Default,
    /// A direct prerequisite did not serve one of its listed variants: the off variant.
    PrerequisiteFailed {
        /// The key of that prerequisite flag.
        prerequisite: String,
    },
    /// Something prevented normal evaluation (a missing flag, a type mismatch, no data yet).
    Error(ErrorKind),
}

impl From<Reason<'_>> for EvaluationReason {
    fn from(reason: Reason<'_>) -> EvaluationReason {
        match reason {
            Reason::Off => EvaluationReason::Off,
            Reason::RuleMatch { index, id } => EvaluationReason::RuleMatch {
                index,
                id: id.to_owned(),
            },
            Reason::Default => EvaluationReason::Default,
            Reason::PrerequisiteFailed { prerequisite } => EvaluationReason::PrerequisiteFailed {
                prerequisite: prerequisite.to_owned(),
            },
            Reason::Error(kind) => EvaluationReason::Error(kind),
        }
    }
}

impl EvaluationReason {
    /// The engine's borrowed form, e.g. to format or serialise it the engine's way.
    pub fn as_reason(&self) -> Reason<'_> {
        match self {
            EvaluationReason::Off => Reason::Off,
            EvaluationReason::RuleMatch { index, id } => Reason::RuleMatch { index: *index, id },
            EvaluationReason::Default => Reason::Default,
            EvaluationReason::PrerequisiteFailed { prerequisite } => {
                Reason::PrerequisiteFailed { prerequisite }
            }
            EvaluationReason::Error(kind) => Reason::Error(*kind),
        }
    }
}

/// As the engine writes reasons: `RULE_MATCH(0, staff)`, `ERROR(CLIENT_NOT_READY)`, `OFF`.
impl fmt::Display for EvaluationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_reason().fmt(f)
    }
}

/// The full result of an evaluation, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationDetail<T> {
    /// The value served.
    pub value: T,
    /// The variant served; `None` when the caller's default was served.
    pub variant: Option<String>,
    /// Why.
    pub reason: EvaluationReason,
    /// The flag's version, when the flag exists.
    pub version: Option<u64>,
    /// The bucket (0..99999), when a split decided the variant.
    pub bucket: Option<u32>,
}

impl<T> EvaluationDetail<T> {
    /// The owned form of the engine's `detail`, with its value turned by `value`.
    pub(crate) fn from_engine<V>(detail: Detail<'_, V>, value: impl FnOnce(V) -> T) -> Self {
        EvaluationDetail {
            value: value(detail.value),
            variant: detail.variant.map(str::to_owned),
            reason: detail.reason.into(),
            version: detail.version,
            bucket: detail.bucket,
        }
    }
}
