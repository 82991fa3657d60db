//! Evaluation (DESIGN.md sections 2 and 3): which variant a context gets, and why.
//!
//! Evaluation never fails loudly: every outcome is a value and a [`Reason`]. The typed calls
//! borrow variant keys, rule ids and string values from the snapshot, so evaluating a boolean,
//! string or number flag allocates nothing and takes no lock. `json_value` clones its value.

use std::fmt;

use serde_json::Value;

use crate::context::Context;
use crate::model::Kind;
use crate::snapshot::{CompiledFlag, CompiledServe, Snapshot, VariantValue};

/// Why an evaluation could not proceed normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No flag has the requested key; the caller's default was served.
    FlagNotFound,
    /// The flag's kind is not the type asked for; the caller's default was served.
    TypeMismatch,
    /// A split's bucketing attribute is missing, empty, a bool or a list; the off variant was
    /// served.
    MissingBucketingAttribute,
    /// The SDK has no data yet; the caller's default was served.
    ClientNotReady,
}

impl ErrorKind {
    /// The name used in reasons and conformance vectors, e.g. `FLAG_NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorKind::TypeMismatch => "TYPE_MISMATCH",
            ErrorKind::MissingBucketingAttribute => "MISSING_BUCKETING_ATTRIBUTE",
            ErrorKind::ClientNotReady => "CLIENT_NOT_READY",
        }
    }
}

/// Why a value was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason<'a> {
    /// The flag is disabled: its off variant.
    Off,
    /// The rule at `index` (0-based) with id `id` matched.
    RuleMatch {
        /// Position of the rule in the flag's rules.
        index: usize,
        /// The rule's id.
        id: &'a str,
    },
    /// No rule matched: the flag's default.
    Default,
    /// A direct prerequisite did not serve one of its listed variants: the off variant.
    PrerequisiteFailed {
        /// The key of that prerequisite flag.
        prerequisite: &'a str,
    },
    /// Something prevented normal evaluation.
    Error(ErrorKind),
}

impl Reason<'_> {
    /// The reason's kind: `OFF`, `RULE_MATCH`, `DEFAULT`, `PREREQUISITE_FAILED` or `ERROR`.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Off => "OFF",
            Reason::RuleMatch { .. } => "RULE_MATCH",
            Reason::Default => "DEFAULT",
            Reason::PrerequisiteFailed { .. } => "PREREQUISITE_FAILED",
            Reason::Error(_) => "ERROR",
        }
    }
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::RuleMatch { index, id } => write!(f, "RULE_MATCH({index}, {id})"),
            Reason::PrerequisiteFailed { prerequisite } => {
                write!(f, "PREREQUISITE_FAILED({prerequisite})")
            }
            Reason::Error(e) => write!(f, "ERROR({})", e.as_str()),
            other => f.write_str(other.kind()),
        }
    }
}

/// The full result of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Detail<'a, T> {
    /// The value served.
    pub value: T,
    /// The variant served; `None` when the caller's default was served.
    pub variant: Option<&'a str>,
    /// Why.
    pub reason: Reason<'a>,
    /// The flag's version, when the flag exists and carries one.
    pub version: Option<u64>,
    /// The bucket (0..99999), when a split decided the variant.
    pub bucket: Option<u32>,
}

/// Which variant a flag serves a context, before it is turned into a typed value.
#[derive(Debug, Clone, Copy)]
struct Resolution<'a> {
    variant: usize,
    reason: Reason<'a>,
    bucket: Option<u32>,
}

impl CompiledFlag {
    fn resolve<'a>(&'a self, ctx: &Context) -> Resolution<'a> {
        let off = |reason| Resolution {
            variant: self.off_variant,
            reason,
            bucket: None,
        };
        if !self.enabled {
            return off(Reason::Off);
        }
        for prerequisite in self.prerequisites.iter() {
            // Validation bounds chains to 8 links, so this recursion is at most 8 deep.
            let served = prerequisite.flag.resolve(ctx).variant;
            if !prerequisite.allowed.get(served).copied().unwrap_or(false) {
                return off(Reason::PrerequisiteFailed {
                    prerequisite: &prerequisite.flag.doc.key,
                });
            }
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.conditions.iter().all(|c| c.matches(ctx)) {
                return self.serve(
                    &rule.serve,
                    Reason::RuleMatch {
                        index,
                        id: &rule.id,
                    },
                    ctx,
                );
            }
        }
        self.serve(&self.default, Reason::Default, ctx)
    }

    #[inline]
    fn serve<'a>(
        &'a self,
        serve: &CompiledServe,
        reason: Reason<'a>,
        ctx: &Context,
    ) -> Resolution<'a> {
        match serve {
            CompiledServe::Variant(variant) => Resolution {
                variant: *variant,
                reason,
                bucket: None,
            },
            CompiledServe::Split { bucket_by, ranges } => {
                match ctx.get(bucket_by).and_then(|v| self.hasher.bucket(v)) {
                    None => Resolution {
                        variant: self.off_variant,
                        reason: Reason::Error(ErrorKind::MissingBucketingAttribute),
                        bucket: None,
                    },
                    Some(bucket) => {
                        let variant = ranges
                            .iter()
                            .find(|(upper, _)| bucket < *upper)
                            .map_or(self.off_variant, |(_, v)| *v);
                        Resolution {
                            variant,
                            reason,
                            bucket: Some(bucket),
                        }
                    }
                }
            }
        }
    }
}

/// A Rust type a flag kind's values convert to without allocating.
trait Typed<'a>: Sized {
    const KIND: Kind;
    fn from_variant(value: &'a VariantValue) -> Option<Self>;
}

impl<'a> Typed<'a> for bool {
    const KIND: Kind = Kind::Boolean;
    fn from_variant(value: &'a VariantValue) -> Option<bool> {
        match value {
            VariantValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl<'a> Typed<'a> for &'a str {
    const KIND: Kind = Kind::String;
    fn from_variant(value: &'a VariantValue) -> Option<&'a str> {
        match value {
            VariantValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'a> Typed<'a> for f64 {
    const KIND: Kind = Kind::Number;
    fn from_variant(value: &'a VariantValue) -> Option<f64> {
        match value {
            VariantValue::Number(n) => Some(*n),
            _ => None,
        }
    }
}

impl<'a> Typed<'a> for &'a Value {
    const KIND: Kind = Kind::Json;
    fn from_variant(value: &'a VariantValue) -> Option<&'a Value> {
        match value {
            VariantValue::Json(v) => Some(v),
            _ => None,
        }
    }
}

impl VariantValue {
    /// The value as JSON, for kind-agnostic callers (server-side evaluation, the CLI).
    fn to_json(&self) -> Value {
        match self {
            VariantValue::Bool(b) => Value::Bool(*b),
            VariantValue::String(s) => Value::String(s.to_string()),
            VariantValue::Number(n) => {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
            VariantValue::Json(v) => v.clone(),
        }
    }
}

fn caller_default<'a, T>(value: T, error: ErrorKind, version: Option<u64>) -> Detail<'a, T> {
    Detail {
        value,
        variant: None,
        reason: Reason::Error(error),
        version,
        bucket: None,
    }
}

impl Snapshot {
    #[inline]
    fn typed<'a, T: Typed<'a>>(&'a self, key: &str, ctx: &Context, default: T) -> Detail<'a, T> {
        let Some(flag) = self.flags.get(key) else {
            return caller_default(default, ErrorKind::FlagNotFound, None);
        };
        if flag.kind != T::KIND {
            return caller_default(default, ErrorKind::TypeMismatch, flag.version);
        }
        let resolution = flag.resolve(ctx);
        let variant = &flag.variants[resolution.variant];
        match T::from_variant(&variant.value) {
            Some(value) => Detail {
                value,
                variant: Some(&variant.key),
                reason: resolution.reason,
                version: flag.version,
                bucket: resolution.bucket,
            },
            // Unreachable: compilation types every value by the flag's kind.
            None => caller_default(default, ErrorKind::TypeMismatch, flag.version),
        }
    }

    /// The boolean value of flag `key` for `ctx`, or `default`.
    #[inline]
    pub fn bool_value(&self, key: &str, ctx: &Context, default: bool) -> bool {
        self.typed(key, ctx, default).value
    }

    /// The boolean value with the variant, reason, version and bucket.
    #[inline]
    pub fn bool_detail(&self, key: &str, ctx: &Context, default: bool) -> Detail<'_, bool> {
        self.typed(key, ctx, default)
    }

    /// The string value of flag `key` for `ctx`, or `default`.
    #[inline]
    pub fn string_value<'a>(&'a self, key: &str, ctx: &Context, default: &'a str) -> &'a str {
        self.typed(key, ctx, default).value
    }

    /// The string value with the variant, reason, version and bucket.
    #[inline]
    pub fn string_detail<'a>(
        &'a self,
        key: &str,
        ctx: &Context,
        default: &'a str,
    ) -> Detail<'a, &'a str> {
        self.typed(key, ctx, default)
    }

    /// The number value of flag `key` for `ctx`, or `default`.
    #[inline]
    pub fn number_value(&self, key: &str, ctx: &Context, default: f64) -> f64 {
        self.typed(key, ctx, default).value
    }

    /// The number value with the variant, reason, version and bucket.
    #[inline]
    pub fn number_detail(&self, key: &str, ctx: &Context, default: f64) -> Detail<'_, f64> {
        self.typed(key, ctx, default)
    }

    /// The JSON value of flag `key` for `ctx`, or `default`. Clones the value.
    pub fn json_value(&self, key: &str, ctx: &Context, default: Value) -> Value {
        let detail = self.typed(key, ctx, &Value::Null);
        match detail.variant {
            Some(_) => detail.value.clone(),
            None => default,
        }
    }

    /// The JSON value with the variant, reason, version and bucket, borrowed from the snapshot.
    pub fn json_detail<'a>(
        &'a self,
        key: &str,
        ctx: &Context,
        default: &'a Value,
    ) -> Detail<'a, &'a Value> {
        self.typed(key, ctx, default)
    }

    /// Evaluates flag `key` whatever its kind, with the value as JSON; `Value::Null` and
    /// `FLAG_NOT_FOUND` when there is no such flag. For debugging tools, not the hot path.
    pub fn evaluate(&self, key: &str, ctx: &Context) -> Detail<'_, Value> {
        let Some(flag) = self.flags.get(key) else {
            return caller_default(Value::Null, ErrorKind::FlagNotFound, None);
        };
        let resolution = flag.resolve(ctx);
        let variant = &flag.variants[resolution.variant];
        Detail {
            value: variant.value.to_json(),
            variant: Some(&variant.key),
            reason: resolution.reason,
            version: flag.version,
            bucket: resolution.bucket,
        }
    }
}
