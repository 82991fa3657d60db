//! The one place wire messages become domain types and back.
//!
//! Domain to wire cannot fail. Wire to domain fails only where a message has no domain form;
//! everything a document can get wrong in its own terms (an unknown variant, weights that do
//! not sum to 100000, a condition value of the wrong type) is left to the engine's validation,
//! so it is reported the same way whichever way a document arrived.
//!
//! What converts: flags, segments and documents both ways; a serve both ways, for requests
//! that carry one alone; a segment key patch (`SegmentKeyPatch`, the engine's `KeyPatch`) both
//! ways, which never fails; contexts and reasons (below). Whoever sends or receives these
//! types (the server, the SDK, the Watch framing in `watch`) converts them here and nowhere
//! else.
//!
//! Values: a variant value or a condition value is a JSON value in the domain. Booleans,
//! strings and numbers map to the typed alternatives of the wire messages; numbers travel as
//! doubles, and a whole double within ±2^53 comes back as an integer, so `18` stays `18` (and
//! `18.0` becomes `18`, the same number). Variant values a double cannot carry (null, arrays,
//! objects, integers beyond ±2^53) travel as JSON text.
//!
//! Evaluation: a context converts both ways and never fails (the wire context borrows into the
//! engine's); a reason converts to its wire form, for the server's `Evaluate`.

use std::borrow::Cow;
use std::fmt;

use flagstaff_engine::{
    AttrInput, AttrRef, AttrValue, Condition, Context, Document, ErrorKind, Flag, KeyPatch, Kind,
    Op, Prerequisite, Reason, Rule, Segment, SegmentRule, Serve, Split, Variants, Weight,
};
use serde_json::{Number, Value};

use crate::pb;

/// Why a wire message could not become a domain document: it lacks something every document
/// has, or holds a value the domain cannot represent. The message names the field, with the
/// same paths the engine's validation uses, e.g.
/// `flags[checkout-v2].rules[0].conditions[1].op: must be set, got OP_UNSPECIFIED`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// A required message field is not set.
    #[error("{path}: missing required field \"{field}\"")]
    MissingField {
        /// The message that lacks the field.
        path: String,
        /// The field's name in the `.proto` file.
        field: &'static str,
    },
    /// A oneof has none of its alternatives set.
    #[error("{path}: must have one of {alternatives}, got none")]
    EmptyOneof {
        /// The message holding the oneof.
        path: String,
        /// The alternatives, e.g. `variant or split`.
        alternatives: &'static str,
    },
    /// An enum field holds its `UNSPECIFIED` value (or was never set).
    #[error("{path}: must be set, got {name}")]
    Unspecified {
        /// The field.
        path: String,
        /// The enum value's name in the `.proto` file, e.g. `OP_UNSPECIFIED`.
        name: &'static str,
    },
    /// An enum field holds a number this version of the contract does not define.
    #[error("{path}: unknown value {value}")]
    UnknownEnumValue {
        /// The field.
        path: String,
        /// The number received.
        value: i32,
    },
    /// A number is NaN or infinite, which JSON cannot represent.
    #[error("{path}: {value} is not a finite number")]
    NotFinite {
        /// The field.
        path: String,
        /// The number received.
        value: f64,
    },
    /// `json_value` holds text that is not one JSON value.
    #[error("{path}: invalid JSON text: {detail}")]
    InvalidJson {
        /// The field.
        path: String,
        /// What the JSON parser said.
        detail: String,
    },
}

/// Integers up to this magnitude are exact in a double.
const MAX_SAFE_INTEGER: u64 = 1 << 53;

// ---------------------------------------------------------------------------------------------
// Paths, built only when an error needs one.

/// A path into a message, e.g. `flags[checkout-v2].rules[0].serve`: a chain on the stack, so
/// converting a valid document allocates no path strings.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'static str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

impl<'a> Path<'a> {
    fn field(&'a self, name: &'static str) -> Path<'a> {
        Path::Field(self, name)
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }

    /// An element of a keyed list, named by its key when it has one, as the engine does.
    fn keyed(&'a self, key: &'a str, index: usize) -> Path<'a> {
        if key.is_empty() {
            Path::Index(self, index)
        } else {
            Path::Key(self, key)
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
            Path::Key(parent, key) => write!(f, "{parent}[{}]", flagstaff_engine::clip(key)),
        }
    }
}

fn missing(path: &Path<'_>, field: &'static str) -> ConvertError {
    ConvertError::MissingField {
        path: path.to_string(),
        field,
    }
}

// ---------------------------------------------------------------------------------------------
// Domain to wire.

impl From<&Flag> for pb::Flag {
    fn from(flag: &Flag) -> Self {
        pb::Flag {
            key: flag.key.clone(),
            description: flag.description.clone(),
            kind: kind_to_pb(flag.kind) as i32,
            variants: flag
                .variants
                .0
                .iter()
                .map(|(key, value)| pb::Variant {
                    key: key.clone(),
                    value: Some(variant_value_to_pb(value)),
                })
                .collect(),
            off_variant: flag.off_variant.clone(),
            enabled: flag.enabled,
            salt: flag.salt.clone(),
            prerequisites: flag
                .prerequisites
                .iter()
                .map(|p| pb::Prerequisite {
                    flag: p.flag.clone(),
                    variants: p.variants.clone(),
                })
                .collect(),
            rules: flag
                .rules
                .iter()
                .map(|rule| pb::Rule {
                    id: rule.id.clone(),
                    conditions: rule.conditions.iter().map(condition_to_pb).collect(),
                    serve: Some(serve_to_pb(&rule.serve)),
                })
                .collect(),
            default: Some(serve_to_pb(&flag.default)),
            tags: flag.tags.clone(),
            owner: flag.owner.clone(),
            temporary: flag.temporary,
            client_side: flag.client_side,
            version: flag.version,
        }
    }
}

impl From<&Segment> for pb::Segment {
    fn from(segment: &Segment) -> Self {
        pb::Segment {
            key: segment.key.clone(),
            description: segment.description.clone(),
            included: segment.included.clone(),
            excluded: segment.excluded.clone(),
            rules: segment
                .rules
                .iter()
                .map(|rule| pb::SegmentRule {
                    conditions: rule.conditions.iter().map(condition_to_pb).collect(),
                })
                .collect(),
            version: segment.version,
        }
    }
}

impl From<&Document> for pb::Document {
    fn from(document: &Document) -> Self {
        pb::Document {
            environment: document.environment.clone(),
            flags: document.flags.iter().map(pb::Flag::from).collect(),
            segments: document.segments.iter().map(pb::Segment::from).collect(),
        }
    }
}

fn kind_to_pb(kind: Kind) -> pb::Kind {
    match kind {
        Kind::Boolean => pb::Kind::Boolean,
        Kind::String => pb::Kind::String,
        Kind::Number => pb::Kind::Number,
        Kind::Json => pb::Kind::Json,
    }
}

fn op_to_pb(op: Op) -> pb::Op {
    match op {
        Op::In => pb::Op::In,
        Op::StartsWith => pb::Op::StartsWith,
        Op::EndsWith => pb::Op::EndsWith,
        Op::Contains => pb::Op::Contains,
        Op::Matches => pb::Op::Matches,
        Op::Lt => pb::Op::Lt,
        Op::Lte => pb::Op::Lte,
        Op::Gt => pb::Op::Gt,
        Op::Gte => pb::Op::Gte,
        Op::SemverEq => pb::Op::SemverEq,
        Op::SemverLt => pb::Op::SemverLt,
        Op::SemverGt => pb::Op::SemverGt,
        Op::Before => pb::Op::Before,
        Op::After => pb::Op::After,
        Op::Exists => pb::Op::Exists,
        Op::InSegment => pb::Op::InSegment,
    }
}

/// A number as a double when the double is exactly that number.
fn exact_f64(n: &Number) -> Option<f64> {
    if let Some(u) = n.as_u64() {
        (u <= MAX_SAFE_INTEGER).then_some(u as f64)
    } else if let Some(i) = n.as_i64() {
        (i.unsigned_abs() <= MAX_SAFE_INTEGER).then_some(i as f64)
    } else {
        n.as_f64()
    }
}

fn variant_value_to_pb(value: &Value) -> pb::VariantValue {
    use pb::variant_value::Value as V;
    let value = match value {
        Value::Bool(b) => V::BoolValue(*b),
        Value::String(s) => V::StringValue(s.clone()),
        Value::Number(n) => match exact_f64(n) {
            Some(f) => V::NumberValue(f),
            // An integer beyond ±2^53: its JSON text keeps every digit.
            None => V::JsonValue(n.to_string()),
        },
        // Null, arrays and objects. `Value`'s Display writes compact JSON and cannot fail.
        other => V::JsonValue(other.to_string()),
    };
    pb::VariantValue { value: Some(value) }
}

/// A condition value. Validation only lets strings, numbers and booleans through; anything
/// else (in a document not yet validated) has no wire form and is sent as a value with no
/// alternative set, which the receiver rejects. Integers beyond ±2^53 are rounded to the
/// nearest double, which is how evaluation compares them anyway.
fn condition_value_to_pb(value: &Value) -> pb::ConditionValue {
    use pb::condition_value::Value as V;
    let value = match value {
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::String(s) => Some(V::StringValue(s.clone())),
        Value::Number(n) => n.as_f64().map(V::NumberValue),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    };
    pb::ConditionValue { value }
}

fn condition_to_pb(condition: &Condition) -> pb::Condition {
    pb::Condition {
        attribute: condition.attribute.clone(),
        op: op_to_pb(condition.op) as i32,
        values: condition.values.iter().map(condition_value_to_pb).collect(),
        negate: condition.negate,
    }
}

impl From<&Serve> for pb::Serve {
    fn from(serve: &Serve) -> pb::Serve {
        serve_to_pb(serve)
    }
}

fn serve_to_pb(serve: &Serve) -> pb::Serve {
    let serve = match serve {
        Serve::Variant(variant) => pb::serve::Serve::Variant(variant.clone()),
        Serve::Split(split) => pb::serve::Serve::Split(pb::Split {
            bucket_by: Some(split.bucket_by.clone()),
            weights: split
                .weights
                .iter()
                .map(|w| pb::Weight {
                    variant: w.variant.clone(),
                    weight: w.weight,
                })
                .collect(),
        }),
    };
    pb::Serve { serve: Some(serve) }
}

impl From<&KeyPatch> for pb::SegmentKeyPatch {
    fn from(patch: &KeyPatch) -> Self {
        pb::SegmentKeyPatch {
            segment: patch.segment.clone(),
            add_included: patch.add_included.clone(),
            remove_included: patch.remove_included.clone(),
            add_excluded: patch.add_excluded.clone(),
            remove_excluded: patch.remove_excluded.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire to domain.

impl TryFrom<pb::Flag> for Flag {
    type Error = ConvertError;

    /// Converts a flag; error paths start `flags[KEY]`, as the engine's do.
    fn try_from(flag: pb::Flag) -> Result<Self, ConvertError> {
        flag_from_pb(flag, &Path::Root.field("flags"), 0)
    }
}

impl TryFrom<pb::Segment> for Segment {
    type Error = ConvertError;

    /// Converts a segment; error paths start `segments[KEY]`, as the engine's do.
    fn try_from(segment: pb::Segment) -> Result<Self, ConvertError> {
        segment_from_pb(segment, &Path::Root.field("segments"), 0)
    }
}

impl TryFrom<pb::Document> for Document {
    type Error = ConvertError;

    /// Converts a document, stopping at the first flag or segment that does not convert.
    fn try_from(document: pb::Document) -> Result<Self, ConvertError> {
        let flags_path = Path::Root.field("flags");
        let segments_path = Path::Root.field("segments");
        Ok(Document {
            environment: document.environment,
            flags: document
                .flags
                .into_iter()
                .enumerate()
                .map(|(i, flag)| flag_from_pb(flag, &flags_path, i))
                .collect::<Result<_, _>>()?,
            segments: document
                .segments
                .into_iter()
                .enumerate()
                .map(|(i, segment)| segment_from_pb(segment, &segments_path, i))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl TryFrom<pb::Serve> for Serve {
    type Error = ConvertError;

    /// Converts a serve sent alone (as `SetDefaultServeRequest.serve`); error paths start
    /// `serve`.
    fn try_from(serve: pb::Serve) -> Result<Self, ConvertError> {
        serve_from_pb(serve, &Path::Root.field("serve"))
    }
}

impl From<pb::SegmentKeyPatch> for KeyPatch {
    /// Cannot fail: every list of keys is a list of keys.
    fn from(patch: pb::SegmentKeyPatch) -> Self {
        KeyPatch {
            segment: patch.segment,
            add_included: patch.add_included,
            remove_included: patch.remove_included,
            add_excluded: patch.add_excluded,
            remove_excluded: patch.remove_excluded,
        }
    }
}

fn flag_from_pb(flag: pb::Flag, list: &Path<'_>, index: usize) -> Result<Flag, ConvertError> {
    let pb::Flag {
        key,
        description,
        kind,
        variants,
        off_variant,
        enabled,
        salt,
        prerequisites,
        rules,
        default,
        tags,
        owner,
        temporary,
        client_side,
        version,
    } = flag;
    let path = list.keyed(&key, index);

    let kind = kind_from_pb(kind, &path.field("kind"))?;
    let variants_path = path.field("variants");
    let variants = variants
        .into_iter()
        .enumerate()
        .map(|(i, variant)| {
            let path = variants_path.index(i);
            let value = variant.value.ok_or_else(|| missing(&path, "value"))?;
            Ok((
                variant.key,
                variant_value_from_pb(value, &path.field("value"))?,
            ))
        })
        .collect::<Result<_, ConvertError>>()?;
    let rules_path = path.field("rules");
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let path = rules_path.index(i);
            let serve = rule.serve.ok_or_else(|| missing(&path, "serve"))?;
            Ok(Rule {
                id: rule.id,
                conditions: conditions_from_pb(rule.conditions, &path.field("conditions"))?,
                serve: serve_from_pb(serve, &path.field("serve"))?,
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    let default = default.ok_or_else(|| missing(&path, "default"))?;
    let default = serve_from_pb(default, &path.field("default"))?;

    Ok(Flag {
        description,
        kind,
        variants: Variants(variants),
        off_variant,
        enabled,
        salt,
        prerequisites: prerequisites
            .into_iter()
            .map(|p| Prerequisite {
                flag: p.flag,
                variants: p.variants,
            })
            .collect(),
        rules,
        default,
        tags,
        owner,
        temporary,
        client_side,
        version,
        key,
    })
}

fn segment_from_pb(
    segment: pb::Segment,
    list: &Path<'_>,
    index: usize,
) -> Result<Segment, ConvertError> {
    let pb::Segment {
        key,
        description,
        included,
        excluded,
        rules,
        version,
    } = segment;
    let path = list.keyed(&key, index);
    let rules_path = path.field("rules");
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let path = rules_path.index(i);
            Ok(SegmentRule {
                conditions: conditions_from_pb(rule.conditions, &path.field("conditions"))?,
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(Segment {
        description,
        included,
        excluded,
        rules,
        version,
        key,
    })
}

fn kind_from_pb(kind: i32, path: &Path<'_>) -> Result<Kind, ConvertError> {
    match pb::Kind::try_from(kind) {
        Ok(pb::Kind::Unspecified) => Err(ConvertError::Unspecified {
            path: path.to_string(),
            name: pb::Kind::Unspecified.as_str_name(),
        }),
        Ok(pb::Kind::Boolean) => Ok(Kind::Boolean),
        Ok(pb::Kind::String) => Ok(Kind::String),
        Ok(pb::Kind::Number) => Ok(Kind::Number),
        Ok(pb::Kind::Json) => Ok(Kind::Json),
        Err(_) => Err(ConvertError::UnknownEnumValue {
            path: path.to_string(),
            value: kind,
        }),
    }
}

fn op_from_pb(op: i32, path: &Path<'_>) -> Result<Op, ConvertError> {
    Ok(match pb::Op::try_from(op) {
        Ok(pb::Op::Unspecified) => {
            return Err(ConvertError::Unspecified {
                path: path.to_string(),
                name: pb::Op::Unspecified.as_str_name(),
            })
        }
        Ok(pb::Op::In) => Op::In,
        Ok(pb::Op::StartsWith) => Op::StartsWith,
        Ok(pb::Op::EndsWith) => Op::EndsWith,
        Ok(pb::Op::Contains) => Op::Contains,
        Ok(pb::Op::Matches) => Op::Matches,
        Ok(pb::Op::Lt) => Op::Lt,
        Ok(pb::Op::Lte) => Op::Lte,
        Ok(pb::Op::Gt) => Op::Gt,
        Ok(pb::Op::Gte) => Op::Gte,
        Ok(pb::Op::SemverEq) => Op::SemverEq,
        Ok(pb::Op::SemverLt) => Op::SemverLt,
        Ok(pb::Op::SemverGt) => Op::SemverGt,
        Ok(pb::Op::Before) => Op::Before,
        Ok(pb::Op::After) => Op::After,
        Ok(pb::Op::Exists) => Op::Exists,
        Ok(pb::Op::InSegment) => Op::InSegment,
        Err(_) => {
            return Err(ConvertError::UnknownEnumValue {
                path: path.to_string(),
                value: op,
            })
        }
    })
}

/// A double as a JSON number: whole numbers within ±2^53 as integers, so `18` stays `18`.
fn number_from_f64(value: f64, path: &Path<'_>) -> Result<Number, ConvertError> {
    if value.fract() == 0.0 && value.abs() <= MAX_SAFE_INTEGER as f64 {
        // Whole and within ±2^53, so the cast is exact (and -0.0 becomes 0).
        Ok(Number::from(value as i64))
    } else {
        Number::from_f64(value).ok_or_else(|| ConvertError::NotFinite {
            path: path.to_string(),
            value,
        })
    }
}

fn variant_value_from_pb(value: pb::VariantValue, path: &Path<'_>) -> Result<Value, ConvertError> {
    use pb::variant_value::Value as V;
    match value.value {
        Some(V::BoolValue(b)) => Ok(Value::Bool(b)),
        Some(V::StringValue(s)) => Ok(Value::String(s)),
        Some(V::NumberValue(n)) => {
            number_from_f64(n, &path.field("number_value")).map(Value::Number)
        }
        Some(V::JsonValue(text)) => {
            flagstaff_engine::parse_json(&text).map_err(|e| ConvertError::InvalidJson {
                path: path.field("json_value").to_string(),
                detail: e.to_string(),
            })
        }
        None => Err(ConvertError::EmptyOneof {
            path: path.to_string(),
            alternatives: "bool_value, string_value, number_value or json_value",
        }),
    }
}

fn conditions_from_pb(
    conditions: Vec<pb::Condition>,
    list: &Path<'_>,
) -> Result<Vec<Condition>, ConvertError> {
    conditions
        .into_iter()
        .enumerate()
        .map(|(i, condition)| {
            let path = list.index(i);
            let values_path = path.field("values");
            Ok(Condition {
                attribute: condition.attribute,
                op: op_from_pb(condition.op, &path.field("op"))?,
                values: condition
                    .values
                    .into_iter()
                    .enumerate()
                    .map(|(j, value)| condition_value_from_pb(value, &values_path.index(j)))
                    .collect::<Result<_, _>>()?,
                negate: condition.negate,
            })
        })
        .collect()
}

fn condition_value_from_pb(
    value: pb::ConditionValue,
    path: &Path<'_>,
) -> Result<Value, ConvertError> {
    use pb::condition_value::Value as V;
    match value.value {
        Some(V::BoolValue(b)) => Ok(Value::Bool(b)),
        Some(V::StringValue(s)) => Ok(Value::String(s)),
        Some(V::NumberValue(n)) => {
            number_from_f64(n, &path.field("number_value")).map(Value::Number)
        }
        None => Err(ConvertError::EmptyOneof {
            path: path.to_string(),
            alternatives: "bool_value, string_value or number_value",
        }),
    }
}

fn serve_from_pb(serve: pb::Serve, path: &Path<'_>) -> Result<Serve, ConvertError> {
    match serve.serve {
        Some(pb::serve::Serve::Variant(variant)) => Ok(Serve::Variant(variant)),
        Some(pb::serve::Serve::Split(split)) => Ok(Serve::Split(Split {
            bucket_by: split.bucket_by.unwrap_or_else(|| "key".to_owned()),
            weights: split
                .weights
                .into_iter()
                .map(|w| Weight {
                    variant: w.variant,
                    weight: w.weight,
                })
                .collect(),
        })),
        None => Err(ConvertError::EmptyOneof {
            path: path.to_string(),
            alternatives: "variant or split",
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation: contexts both ways, reasons to the wire.

impl<'a> From<&'a pb::Context> for Context<'a> {
    /// Borrows the message's strings, as a context built by a calling service does. Cannot
    /// fail: an attribute without a value is missing (like JSON `null`), list elements without
    /// one are left out, and an attribute named `key` is ignored.
    fn from(context: &'a pb::Context) -> Self {
        Context::from_attributes(
            context.key.as_str(),
            context.attributes.iter().filter_map(|attribute| {
                let value = attribute.value.as_ref().and_then(attr_input_from_pb)?;
                Some((Cow::Borrowed(attribute.name.as_str()), value))
            }),
        )
    }
}

impl From<&Context<'_>> for pb::Context {
    fn from(context: &Context<'_>) -> Self {
        pb::Context {
            key: context.key().to_owned(),
            attributes: context
                .attributes()
                .map(|(name, value)| pb::Attribute {
                    name: name.to_owned(),
                    value: Some(attr_to_pb(value)),
                })
                .collect(),
        }
    }
}

fn attr_input_from_pb(value: &pb::AttributeValue) -> Option<AttrInput<'_>> {
    use pb::attribute_value::Value as V;
    Some(match value.value.as_ref()? {
        V::StringValue(s) => AttrInput::Str(Cow::Borrowed(s)),
        V::NumberValue(n) => AttrInput::Number(*n),
        V::BoolValue(b) => AttrInput::Bool(*b),
        V::ListValue(list) => AttrInput::List(Cow::Owned(attr_list_from_pb(list))),
    })
}

fn attr_list_from_pb(list: &pb::AttributeList) -> Vec<AttrValue> {
    use pb::attribute_value::Value as V;
    list.values
        .iter()
        .filter_map(|value| {
            Some(match value.value.as_ref()? {
                V::StringValue(s) => AttrValue::String(s.clone()),
                V::NumberValue(n) => AttrValue::Number(*n),
                V::BoolValue(b) => AttrValue::Bool(*b),
                V::ListValue(list) => AttrValue::List(attr_list_from_pb(list)),
            })
        })
        .collect()
}

fn attr_to_pb(value: AttrRef<'_>) -> pb::AttributeValue {
    use pb::attribute_value::Value as V;
    let value = match value {
        AttrRef::Str(s) => V::StringValue(s.to_owned()),
        AttrRef::Number(n) => V::NumberValue(n),
        AttrRef::Bool(b) => V::BoolValue(b),
        AttrRef::List(items) => V::ListValue(pb::AttributeList {
            values: items.iter().map(|item| attr_to_pb(item.as_ref())).collect(),
        }),
    };
    pb::AttributeValue { value: Some(value) }
}

impl From<Reason<'_>> for pb::Reason {
    fn from(reason: Reason<'_>) -> Self {
        let kind = match reason {
            Reason::Off => pb::ReasonKind::Off,
            Reason::RuleMatch { .. } => pb::ReasonKind::RuleMatch,
            Reason::Default => pb::ReasonKind::Default,
            Reason::PrerequisiteFailed { .. } => pb::ReasonKind::PrerequisiteFailed,
            Reason::Error(_) => pb::ReasonKind::Error,
        };
        let mut wire = pb::Reason {
            kind: kind as i32,
            ..pb::Reason::default()
        };
        match reason {
            Reason::RuleMatch { index, id } => {
                // Validation bounds the rules of a flag far below u32::MAX.
                wire.rule_index = u32::try_from(index).unwrap_or(u32::MAX);
                wire.rule_id = id.to_owned();
            }
            Reason::PrerequisiteFailed { prerequisite } => {
                wire.prerequisite = prerequisite.to_owned();
            }
            Reason::Error(error) => wire.error_kind = error_kind_to_pb(error) as i32,
            Reason::Off | Reason::Default => {}
        }
        wire
    }
}

fn error_kind_to_pb(error: ErrorKind) -> pb::ErrorKind {
    match error {
        ErrorKind::FlagNotFound => pb::ErrorKind::FlagNotFound,
        ErrorKind::TypeMismatch => pb::ErrorKind::TypeMismatch,
        ErrorKind::MissingBucketingAttribute => pb::ErrorKind::MissingBucketingAttribute,
        ErrorKind::ClientNotReady => pb::ErrorKind::ClientNotReady,
        // An error kind added to the engine after this contract version: the kind stays
        // REASON_KIND_ERROR, unnamed, until the contract names it.
        _ => pb::ErrorKind::Unspecified,
    }
}
