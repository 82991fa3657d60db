//! The canonical documents: flags, segments and the export document.
//!
//! These types are what users write in JSON or YAML and what the server stores. They carry no
//! compiled state; [`crate::Snapshot`] compiles them. Deserialisation goes through the
//! structural decoder (`decode.rs`), which rejects unknown fields and reports every structural
//! problem of a document at once; serialisation writes the canonical shape of DESIGN.md,
//! keeping the order of variants, rules and weights.

use serde::{Serialize, Serializer};
use serde_json::Value;

/// The type every variant value of a flag has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `true` / `false`.
    Boolean,
    /// A UTF-8 string.
    String,
    /// A JSON number (an `f64`).
    Number,
    /// Any JSON value.
    Json,
}

impl Kind {
    /// The name used in documents: `boolean`, `string`, `number` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Boolean => "boolean",
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Json => "json",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "boolean" => Kind::Boolean,
            "string" => Kind::String,
            "number" => Kind::Number,
            "json" => Kind::Json,
            _ => return None,
        })
    }

    /// Whether `value` is a valid variant value for this kind.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            Kind::Boolean => value.is_boolean(),
            Kind::String => value.is_string(),
            Kind::Number => value.is_number(),
            Kind::Json => true,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A flag's variants: an ordered list of (key, value), serialised as an ordered map.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Variants(pub Vec<(String, Value)>);

impl Variants {
    /// The value of the variant `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether a variant named `key` exists.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The variant keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

impl Serialize for Variants {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A flag: variants, targeting rules and the kill switch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    /// The flag's key, unique in its environment.
    pub key: String,
    /// What the flag is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The type of every variant value.
    pub kind: Kind,
    /// The variants, in order.
    pub variants: Variants,
    /// Served when the flag is disabled or evaluation cannot proceed.
    pub off_variant: String,
    /// The kill switch: `false` serves `off_variant` to everyone.
    pub enabled: bool,
    /// Bucketing salt; the flag key when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Flags that must serve one of the listed variants, else `off_variant` is served.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<Prerequisite>,
    /// Targeting rules; the first whose conditions all match serves.
    pub rules: Vec<Rule>,
    /// Served when no rule matches (the fallthrough).
    pub default: Serve,
    /// Free-form labels for finding flags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Who owns the flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// A release flag expected to be removed (`true`) or a permanent one (`false`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub temporary: bool,
    /// Whether `client` tokens may evaluate the flag over OFREP: code on users' devices sees
    /// only flags marked `client_side`. Written only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub client_side: bool,
    /// The environment revision of the flag's last change; on input, the expected version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl Flag {
    /// The bucketing salt: `salt` or, when absent, the flag key.
    pub fn effective_salt(&self) -> &str {
        self.salt.as_deref().unwrap_or(&self.key)
    }

    /// The keys of the segments this flag's rules name.
    pub fn segment_refs(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.conditions.iter())
            .filter(|c| c.op == Op::InSegment)
            .flat_map(|c| c.values.iter().filter_map(Value::as_str))
    }
}

/// A prerequisite: `flag` must serve one of `variants`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prerequisite {
    /// The key of the prerequisite flag.
    pub flag: String,
    /// The variants of that flag that satisfy the prerequisite.
    pub variants: Vec<String>,
}

/// A targeting rule: when all conditions match, `serve` decides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Unique within the flag; named in evaluation reasons and by rollout plans.
    pub id: String,
    /// All must match; an empty list matches every context.
    pub conditions: Vec<Condition>,
    /// What a matching context gets.
    pub serve: Serve,
}

/// One test of a context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    /// The context attribute tested (`key` is the context key); absent for `in_segment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The operator.
    pub op: Op,
    /// The operands; the condition holds when the op holds for one of them.
    pub values: Vec<Value>,
    /// Inverts the result (a missing attribute stays false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
}

/// Condition operators (DESIGN.md section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal to one of the values, type-aware.
    In,
    /// String prefix.
    StartsWith,
    /// String suffix.
    EndsWith,
    /// Substring.
    Contains,
    /// Regex search.
    Matches,
    /// Number less than.
    Lt,
    /// Number less than or equal.
    Lte,
    /// Number greater than.
    Gt,
    /// Number greater than or equal.
    Gte,
    /// Semver precedence equal.
    SemverEq,
    /// Semver precedence lower.
    SemverLt,
    /// Semver precedence higher.
    SemverGt,
    /// Time before.
    Before,
    /// Time after.
    After,
    /// The attribute is present.
    Exists,
    /// The context is in one of the named segments.
    InSegment,
}

impl Op {
    /// Every operator, in documentation order.
    pub const ALL: [Op; 16] = [
        Op::In,
        Op::StartsWith,
        Op::EndsWith,
        Op::Contains,
        Op::Matches,
        Op::Lt,
        Op::Lte,
        Op::Gt,
        Op::Gte,
        Op::SemverEq,
        Op::SemverLt,
        Op::SemverGt,
        Op::Before,
        Op::After,
        Op::Exists,
        Op::InSegment,
    ];

    /// The name used in documents, e.g. `starts_with`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::In => "in",
            Op::StartsWith => "starts_with",
            Op::EndsWith => "ends_with",
            Op::Contains => "contains",
            Op::Matches => "matches",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::SemverEq => "semver_eq",
            Op::SemverLt => "semver_lt",
            Op::SemverGt => "semver_gt",
            Op::Before => "before",
            Op::After => "after",
            Op::Exists => "exists",
            Op::InSegment => "in_segment",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule or the default serves: one variant, or a percentage split.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Serve {
    /// Always this variant.
    Variant(String),
    /// A split by bucket.
    Split(Split),
}

/// A percentage split: the bucket of `bucket_by` picks a variant by cumulative weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    /// The context attribute hashed; `key` by default.
    pub bucket_by: String,
    /// Ordered weights in 1/1000 of a percent, summing to 100000.
    pub weights: Vec<Weight>,
}

/// One variant's share of a split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Weight {
    /// The variant served for buckets in this range.
    pub variant: String,
    /// The range's width in 1/1000 of a percent.
    pub weight: u32,
}

/// A reusable set of contexts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// The segment's key, unique in its environment.
    pub key: String,
    /// What the segment is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Context keys always in the segment.
    pub included: Vec<String>,
    /// Context keys never in the segment; wins over `included` and rules.
    pub excluded: Vec<String>,
    /// A context is in the segment when any rule matches.
    pub rules: Vec<SegmentRule>,
    /// The environment revision of the segment's last change; on input, the expected version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// A segment rule: an AND of conditions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentRule {
    /// All must match.
    pub conditions: Vec<Condition>,
}

/// One environment as a single document: the export format (DESIGN.md 6a).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Document {
    /// The environment's key.
    pub environment: String,
    /// The flags.
    pub flags: Vec<Flag>,
    /// The segments.
    pub segments: Vec<Segment>,
}
