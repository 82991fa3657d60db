//! Evaluation (DESIGN.md sections 2 and 3): which variant a context gets, and why.
//!
//! Evaluation never fails loudly: every outcome is a value and a [`Reason`]. The typed calls
//! borrow variant keys, rule ids and string values from the snapshot, so evaluating a boolean,
//! string or number flag allocates nothing and takes no lock. `json_value` clones its value.

use std::fmt;

use serde_json::Value;

use self::counting::VariantId;
use crate::compiled::{CompiledFlag, CompiledServe, CompiledVariant, VariantValue};
use crate::context::Context;
use crate::model::Kind;
use crate::resolution::{Resolution, Why, NO_BUCKET};
use crate::snapshot::Snapshot;

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

/// As in the conformance vectors: `{"kind": "RULE_MATCH", "rule_index": 0, "rule_id": "staff"}`,
/// `{"kind": "PREREQUISITE_FAILED", "prerequisite": "payments"}`,
/// `{"kind": "ERROR", "error": "FLAG_NOT_FOUND"}`, `{"kind": "OFF"}`.
impl serde::Serialize for Reason<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", self.kind())?;
        match self {
            Reason::RuleMatch { index, id } => {
                map.serialize_entry("rule_index", index)?;
                map.serialize_entry("rule_id", id)?;
            }
            Reason::PrerequisiteFailed { prerequisite } => {
                map.serialize_entry("prerequisite", prerequisite)?;
            }
            Reason::Error(e) => map.serialize_entry("error", e.as_str())?,
            Reason::Off | Reason::Default => {}
        }
        map.end()
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

impl CompiledFlag {
    fn resolve(&self, ctx: &Context<'_>) -> Resolution {
        if let Some(fixed) = self.fixed {
            return fixed;
        }
        self.resolve_rules(ctx)
    }

    /// [`CompiledFlag::resolve`] for a flag whose answer depends on the context.
    fn resolve_rules(&self, ctx: &Context<'_>) -> Resolution {
        let off = |why| Resolution::new(self.off_variant, why, NO_BUCKET);
        if !self.prerequisites.is_empty() {
            if let Some(failed) = self.failed_prerequisite(ctx) {
                return off(Why::Prerequisite(failed));
            }
        }
        // One call of `serve`, so that it is inlined. (`position` then indexing compiles to less
        // than `find` on the enumerated rules, with no bounds check left.)
        let (serve, why) = match self.rules.iter().position(|rule| rule.matches(ctx)) {
            Some(index) => (&self.rules[index].serve, Why::Rule(index as u32)),
            None => (&self.default, Why::Default),
        };
        self.serve(serve, why, ctx)
    }

    /// The index of the first prerequisite not satisfied, if any. Out of line: most flags
    /// have none, and the loop would cost them instructions on every evaluation.
    #[inline(never)]
    fn failed_prerequisite(&self, ctx: &Context<'_>) -> Option<u32> {
        self.prerequisites
            .iter()
            .position(|prerequisite| {
                // Validation bounds chains to 8 links, so this recursion is at most 8 deep.
                let served = prerequisite.flag.resolve(ctx).variant();
                !prerequisite.allowed.get(served).copied().unwrap_or(false)
            })
            .map(|i| i as u32)
    }

    #[inline]
    fn serve(&self, serve: &CompiledServe, why: Why, ctx: &Context<'_>) -> Resolution {
        match serve {
            CompiledServe::Variant(variant) => Resolution::new(*variant, why, NO_BUCKET),
            CompiledServe::Split { bucket_by, ranges } => {
                match ctx
                    .select(bucket_by)
                    .and_then(|v| self.hasher.bucket_raw(v))
                {
                    None => Resolution::new(self.off_variant, Why::MissingBucket, NO_BUCKET),
                    Some(bucket) => {
                        let variant = ranges
                            .iter()
                            .find(|(upper, _)| bucket < *upper)
                            .map_or(self.off_variant, |(_, v)| *v);
                        Resolution::new(variant, why, bucket)
                    }
                }
            }
        }
    }

    fn reason(&self, why: Why) -> Reason<'_> {
        match why {
            Why::Off => Reason::Off,
            Why::Default => Reason::Default,
            Why::MissingBucket => Reason::Error(ErrorKind::MissingBucketingAttribute),
            Why::Rule(i) => Reason::RuleMatch {
                index: i as usize,
                id: self.rules.get(i as usize).map_or("", |r| &r.id),
            },
            Why::Prerequisite(i) => Reason::PrerequisiteFailed {
                prerequisite: self
                    .prerequisites
                    .get(i as usize)
                    .map_or("", |p| &p.flag.doc.key),
            },
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
            // Whole numbers print as integers (`10`, not `10.0`), as they were written.
            VariantValue::Number(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
                Value::from(*n as i64)
            }
            VariantValue::Number(n) => {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
            VariantValue::Json(v) => v.clone(),
        }
    }
}

/// What a flag serves a context.
struct Served<'a, T> {
    flag: &'a CompiledFlag,
    variant: &'a CompiledVariant,
    resolution: Resolution,
    value: T,
}

/// Why the caller's default is served, and the flag's version when the flag exists.
type Unserved = (ErrorKind, Option<u64>);

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
    /// The flag, the variant it serves `ctx` and that variant's value; or why the caller's
    /// default is served, with the flag's version when it exists.
    #[inline(always)]
    fn served<'a, T: Typed<'a>>(
        &'a self,
        key: &str,
        ctx: &Context<'_>,
    ) -> Result<Served<'a, T>, Unserved> {
        let flag = self.flags.get(key).ok_or((ErrorKind::FlagNotFound, None))?;
        let mismatch = (ErrorKind::TypeMismatch, flag.version);
        if flag.kind != T::KIND {
            return Err(mismatch);
        }
        // The fixed answer is checked here, inline, so the commonest flags skip a call.
        let resolution = match flag.fixed {
            Some(fixed) => fixed,
            None => flag.resolve_rules(ctx),
        };
        // Neither can fail: compilation resolves every variant reference to a valid index and
        // types every value by the flag's kind.
        let variant = flag.variants.get(resolution.variant()).ok_or(mismatch)?;
        let value = T::from_variant(&variant.value).ok_or(mismatch)?;
        Ok(Served {
            flag,
            variant,
            resolution,
            value,
        })
    }

    #[inline]
    fn value<'a, T: Typed<'a>>(&'a self, key: &str, ctx: &Context<'_>, default: T) -> T {
        self.served(key, ctx).map_or(default, |s| s.value)
    }

    #[inline]
    fn value_id<'a, T: Typed<'a>>(
        &'a self,
        key: &str,
        ctx: &Context<'_>,
        default: T,
    ) -> (T, Option<VariantId>) {
        match self.served(key, ctx) {
            Ok(s) => (s.value, Some(VariantId::of(s.variant))),
            Err(_) => (default, None),
        }
    }

    #[inline]
    fn typed<'a, T: Typed<'a>>(
        &'a self,
        key: &str,
        ctx: &Context<'_>,
        default: T,
    ) -> Detail<'a, T> {
        self.typed_id(key, ctx, default).0
    }

    #[inline]
    fn typed_id<'a, T: Typed<'a>>(
        &'a self,
        key: &str,
        ctx: &Context<'_>,
        default: T,
    ) -> (Detail<'a, T>, Option<VariantId>) {
        match self.served(key, ctx) {
            Ok(s) => (
                Detail {
                    value: s.value,
                    variant: Some(&s.variant.key),
                    reason: s.flag.reason(s.resolution.why()),
                    version: s.flag.version,
                    bucket: s.resolution.bucket(),
                },
                Some(VariantId::of(s.variant)),
            ),
            Err((error, version)) => (caller_default(default, error, version), None),
        }
    }

    /// The boolean value of flag `key` for `ctx`, or `default`.
    #[inline]
    pub fn bool_value(&self, key: &str, ctx: &Context<'_>, default: bool) -> bool {
        self.value(key, ctx, default)
    }

    /// The boolean value with the variant, reason, version and bucket.
    #[inline]
    pub fn bool_detail(&self, key: &str, ctx: &Context<'_>, default: bool) -> Detail<'_, bool> {
        self.typed(key, ctx, default)
    }

    /// The string value of flag `key` for `ctx`, or `default`.
    #[inline]
    pub fn string_value<'a>(&'a self, key: &str, ctx: &Context<'_>, default: &'a str) -> &'a str {
        self.value(key, ctx, default)
    }

    /// The string value with the variant, reason, version and bucket.
    #[inline]
    pub fn string_detail<'a>(
        &'a self,
        key: &str,
        ctx: &Context<'_>,
        default: &'a str,
    ) -> Detail<'a, &'a str> {
        self.typed(key, ctx, default)
    }

    /// The number value of flag `key` for `ctx`, or `default`.
    #[inline]
    pub fn number_value(&self, key: &str, ctx: &Context<'_>, default: f64) -> f64 {
        self.value(key, ctx, default)
    }

    /// The number value with the variant, reason, version and bucket.
    #[inline]
    pub fn number_detail(&self, key: &str, ctx: &Context<'_>, default: f64) -> Detail<'_, f64> {
        self.typed(key, ctx, default)
    }

    /// The JSON value of flag `key` for `ctx`, or `default`. Clones the value.
    pub fn json_value(&self, key: &str, ctx: &Context<'_>, default: Value) -> Value {
        match self.served::<&Value>(key, ctx) {
            Ok(s) => s.value.clone(),
            Err(_) => default,
        }
    }

    /// The JSON value with the variant, reason, version and bucket, borrowed from the snapshot.
    pub fn json_detail<'a>(
        &'a self,
        key: &str,
        ctx: &Context<'_>,
        default: &'a Value,
    ) -> Detail<'a, &'a Value> {
        self.typed(key, ctx, default)
    }

    /// Evaluates flag `key` whatever its kind, with the value as JSON; `Value::Null` and
    /// `FLAG_NOT_FOUND` when there is no such flag. For debugging tools, not the hot path.
    pub fn evaluate(&self, key: &str, ctx: &Context<'_>) -> Detail<'_, Value> {
        let Some(flag) = self.flags.get(key) else {
            return caller_default(Value::Null, ErrorKind::FlagNotFound, None);
        };
        let resolution = flag.resolve(ctx);
        let Some(variant) = flag.variants.get(resolution.variant()) else {
            return caller_default(Value::Null, ErrorKind::TypeMismatch, flag.version);
        };
        Detail {
            value: variant.value.to_json(),
            variant: Some(&variant.key),
            reason: flag.reason(resolution.why()),
            version: flag.version,
            bucket: resolution.bucket(),
        }
    }
}

#[doc(hidden)]
pub mod counting {
    //! Evaluation with the id of the variant served, for the SDK's usage counts: hidden from the
    //! engine's documentation, and not part of its API.
    //!
    //! [`evaluate`] evaluates a flag as the typed calls do ([`Snapshot::bool_value`],
    //! [`Snapshot::bool_detail`] and the like; the [`Outcome`] asked for picks which) and also
    //! returns the [`VariantId`] of the variant served, or `None` when the caller's default was
    //! served; [`variant_ids`] names a snapshot's ids, off the hot path.

    use std::num::NonZeroUsize;
    use std::ptr::NonNull;

    use serde_json::Value;

    use super::Detail;
    use crate::compiled::CompiledVariant;
    use crate::context::Context;
    use crate::snapshot::Snapshot;

    /// Which compiled variant of which flag served an evaluation: the address of that variant
    /// in the snapshot, so learning it costs nothing on the hot path.
    ///
    /// An id is unique and stable while the snapshot that served it lives (hold the
    /// snapshot's `Arc` to keep ids meaningful); [`variant_ids`] names the ids of a snapshot.
    /// Every compilation of a flag gets new ids, so a flag's new version never shares an id
    /// with its old one; a snapshot applied from another shares the ids of the flags the
    /// change did not recompile. Once every snapshot holding a variant is dropped, its id may
    /// be reused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct VariantId(NonZeroUsize);

    impl VariantId {
        #[inline(always)]
        pub(super) fn of(variant: &CompiledVariant) -> VariantId {
            VariantId(NonNull::from(variant).addr())
        }

        /// The id as a number, never 0: e.g. a key for a table of counts.
        #[inline(always)]
        pub fn get(self) -> usize {
            self.0.get()
        }
    }

    /// What a counted evaluation returns: a flag's value (`bool`, `&str`, `f64` or `&Value`,
    /// borrowed from the snapshot) as [`Snapshot::bool_value`] and the like return it, or its
    /// [`Detail`] as [`Snapshot::bool_detail`] and the like do.
    pub trait Outcome<'a>: Sized {
        /// The caller's default: a value of the flag's type.
        type Default;

        /// See [`evaluate`].
        fn evaluate(
            snapshot: &'a Snapshot,
            key: &str,
            ctx: &Context<'_>,
            default: Self::Default,
        ) -> (Self, Option<VariantId>);
    }

    macro_rules! outcomes {
        ($($value:ty),*) => {$(
            impl<'a> Outcome<'a> for $value {
                type Default = $value;

                #[inline(always)]
                fn evaluate(
                    snapshot: &'a Snapshot,
                    key: &str,
                    ctx: &Context<'_>,
                    default: $value,
                ) -> ($value, Option<VariantId>) {
                    snapshot.value_id(key, ctx, default)
                }
            }

            impl<'a> Outcome<'a> for Detail<'a, $value> {
                type Default = $value;

                #[inline(always)]
                fn evaluate(
                    snapshot: &'a Snapshot,
                    key: &str,
                    ctx: &Context<'_>,
                    default: $value,
                ) -> (Detail<'a, $value>, Option<VariantId>) {
                    snapshot.typed_id(key, ctx, default)
                }
            }
        )*};
    }

    outcomes!(bool, &'a str, f64, &'a Value);

    /// Evaluates flag `key` for `ctx` as the typed calls do (`T` picks the type, and the value
    /// or the detail), with the [`VariantId`] of the variant served; `None` when `default` was
    /// served (no such flag, or not of that type).
    ///
    /// Always inlined, with the lookup and resolution it shares with the other forms: the
    /// SDK's client evaluates and counts in one function, with one prologue (19 instructions
    /// fewer per evaluation than calling it out of line).
    #[inline(always)]
    pub fn evaluate<'a, T: Outcome<'a>>(
        snapshot: &'a Snapshot,
        key: &str,
        ctx: &Context<'_>,
        default: T::Default,
    ) -> (T, Option<VariantId>) {
        T::evaluate(snapshot, key, ctx, default)
    }

    /// Every variant of every flag, with its [`VariantId`]: `(id, flag key, flag version,
    /// variant key)`, in no particular order. For naming the ids an evaluation returned, off
    /// the hot path.
    pub fn variant_ids(
        snapshot: &Snapshot,
    ) -> impl Iterator<Item = (VariantId, &str, Option<u64>, &str)> {
        snapshot.flags.values().flat_map(|flag| {
            flag.variants
                .iter()
                .map(move |v| (VariantId::of(v), &*flag.key, flag.version, &*v.key))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::counting::{evaluate, variant_ids};
    use super::*;

    #[test]
    fn a_resolution_gives_back_what_it_was_made_of() {
        let whys = [
            Why::Off,
            Why::Default,
            Why::MissingBucket,
            Why::Rule(0),
            Why::Rule(u32::MAX),
            Why::Prerequisite(7),
            Why::Prerequisite(u32::MAX),
        ];
        for why in whys {
            for (variant, bucket) in [(0, NO_BUCKET), (3, 0), (u32::MAX as usize, 99_999)] {
                let r = Resolution::new(variant, why, bucket);
                assert_eq!((r.variant(), r.why()), (variant, why));
                assert_eq!(r.bucket(), (bucket != NO_BUCKET).then_some(bucket));
            }
        }
    }

    fn two_flags(banner_version: u64) -> Snapshot {
        Snapshot::from_text(&format!(
            r#"
environment: test
flags:
  - key: gate
    kind: boolean
    version: 3
    variants: {{ "on": true, "off": false }}
    off_variant: "off"
    enabled: true
    rules:
      - id: staff
        conditions: [{{ attribute: staff, op: in, values: [yes] }}]
        serve: {{ variant: "on" }}
    default: {{ variant: "off" }}
  - key: banner
    kind: string
    version: {banner_version}
    variants: {{ control: Welcome, a: Hello }}
    off_variant: control
    enabled: true
    default: {{ variant: a }}
"#
        ))
        .expect("valid document")
    }

    #[test]
    fn variant_ids_tell_served_variants_apart_and_name_them() {
        let snapshot = two_flags(7);
        let staff = Context::new("u1").with("staff", "yes");
        let other = Context::new("u2");
        let (on, on_id) = evaluate::<bool>(&snapshot, "gate", &staff, false);
        let (off, off_id) = evaluate::<bool>(&snapshot, "gate", &other, true);
        assert!(on && !off);
        let (on_id, off_id) = (on_id.expect("served"), off_id.expect("served"));
        assert_ne!(on_id, off_id);
        assert_eq!(
            evaluate::<bool>(&snapshot, "gate", &staff, false).1,
            Some(on_id)
        );
        assert_eq!(
            evaluate::<Detail<'_, bool>>(&snapshot, "gate", &staff, false).1,
            Some(on_id)
        );
        let (banner, banner_id) = evaluate::<&str>(&snapshot, "banner", &other, "");
        assert_eq!(banner, "Hello");
        let (detail, detail_id) = evaluate::<Detail<'_, &str>>(&snapshot, "banner", &other, "");
        assert_eq!((detail.variant, detail_id), (Some("a"), banner_id));

        // The caller's default has no id.
        assert_eq!(
            evaluate::<bool>(&snapshot, "missing", &staff, true),
            (true, None)
        );
        assert_eq!(evaluate::<f64>(&snapshot, "gate", &staff, 1.0), (1.0, None));
        let (value, id) = evaluate::<&Value>(&snapshot, "banner", &staff, &Value::Null);
        assert_eq!((value, id), (&Value::Null, None));

        let names: Vec<_> = variant_ids(&snapshot).collect();
        assert_eq!(names.len(), 4);
        let name = |id: VariantId| {
            names
                .iter()
                .find(|(i, ..)| *i == id)
                .map(|(_, flag, version, variant)| (*flag, *version, *variant))
        };
        assert_eq!(name(on_id), Some(("gate", Some(3), "on")));
        assert_eq!(name(off_id), Some(("gate", Some(3), "off")));
        assert_eq!(
            name(banner_id.expect("served")),
            Some(("banner", Some(7), "a"))
        );
    }

    #[test]
    fn a_recompiled_flag_gets_new_ids_and_an_unchanged_one_keeps_them() {
        let before = two_flags(7);
        let after = before
            .apply(crate::ChangeSet {
                flags: two_flags(8).flag("banner").cloned().into_iter().collect(),
                ..crate::ChangeSet::default()
            })
            .expect("applies");
        let ctx = Context::new("u1");
        assert_eq!(
            evaluate::<bool>(&before, "gate", &ctx, false).1,
            evaluate::<bool>(&after, "gate", &ctx, false).1
        );
        let (old, new) = (
            evaluate::<&str>(&before, "banner", &ctx, "").1,
            evaluate::<&str>(&after, "banner", &ctx, "").1,
        );
        assert!(old.is_some() && new.is_some());
        assert_ne!(old, new);
    }
}
