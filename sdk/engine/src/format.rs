//! Reading and writing documents as JSON or YAML text.

use serde::Serialize;
use serde_json::Value;

use crate::decode;
use crate::model::{Document, Flag, Segment};
use crate::problem::{Problems, ValidationError};

/// A text format for documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// YAML 1.2; output quotes strings YAML 1.1 readers would take for booleans.
    Yaml,
}

impl Format {
    /// JSON when the text starts with `{` or `[`, else YAML.
    pub fn detect(text: &str) -> Format {
        match text.trim_start().as_bytes().first() {
            Some(b'{' | b'[') => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// What a file given to `apply` holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A whole environment.
    Document(Document),
    /// One flag.
    Flag(Flag),
    /// One segment.
    Segment(Segment),
}

/// Parses JSON or YAML text into a value tree. A key repeated in one object is an error (both
/// parsers would silently keep the last), as a typo'd field would be.
pub fn parse_value(text: &str) -> Result<Value, ValidationError> {
    match Format::detect(text) {
        Format::Json => serde_json::from_str::<Strict>(text)
            .map(|s| s.0)
            .map_err(|e| ValidationError::single("", format!("invalid JSON: {e}"))),
        Format::Yaml => serde_yaml_ng::from_str::<Strict>(text)
            .map(|s| s.0)
            .map_err(|e| ValidationError::single("", format!("invalid YAML: {e}"))),
    }
}

/// Parses JSON text (RFC 8259) into a value, refusing an object member name repeated in one
/// object, which a value tree cannot hold.
pub fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Strict>(text).map(|s| s.0)
}

/// A JSON value deserialised from any format, refusing duplicate keys.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON-compatible value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate field \"{key}\""
                )));
            }
            let Strict(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Decodes an export document from a value tree, reporting every structural problem. This
/// does not validate it; [`crate::Snapshot::from_value`] does both.
pub fn document_from_value(value: &Value) -> Result<Document, ValidationError> {
    let mut problems = Problems::default();
    let doc = decode::decode_document(value, &mut problems);
    problems.into_result()?;
    doc.map(|(doc, _)| doc)
        .ok_or_else(|| ValidationError::single("", "not an export document"))
}

/// Parses an export document (`{environment, flags, segments}`) from JSON or YAML.
pub fn parse_document(text: &str) -> Result<Document, ValidationError> {
    document_from_value(&parse_value(text)?)
}

/// Decodes one flag document; problem paths start `flags[KEY]`.
pub fn flag_from_value(value: &Value) -> Result<Flag, ValidationError> {
    let mut problems = Problems::default();
    let flag = decode::decode_flag(value, &decode::keyed_path("flags", 0, value), &mut problems);
    problems.into_result()?;
    flag.ok_or_else(|| ValidationError::single("", "not a flag document"))
}

/// Decodes one segment document.
pub fn segment_from_value(value: &Value) -> Result<Segment, ValidationError> {
    let mut problems = Problems::default();
    let segment = decode::decode_segment(
        value,
        &decode::keyed_path("segments", 0, value),
        &mut problems,
    );
    problems.into_result()?;
    segment.ok_or_else(|| ValidationError::single("", "not a segment document"))
}

/// Parses an export document, a flag or a segment: an object with `environment`, `flags` or
/// `segments` is a document, one with `kind` or `variants` a flag, anything else a segment.
pub fn parse_input(text: &str) -> Result<Input, ValidationError> {
    let value = parse_value(text)?;
    let has = |field: &str| value.get(field).is_some();
    if has("environment") || has("flags") || has("segments") {
        document_from_value(&value).map(Input::Document)
    } else if has("kind") || has("variants") {
        flag_from_value(&value).map(Input::Flag)
    } else {
        segment_from_value(&value).map(Input::Segment)
    }
}

/// Writes a document as text in the given format.
pub fn to_text<T: Serialize>(value: &T, format: Format) -> String {
    match format {
        // Serialising the model cannot fail: every map key is a string.
        Format::Json => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
        Format::Yaml => crate::yaml::to_string(&serde_json::to_value(value).unwrap_or_default()),
    }
}

/// Deserialising goes through the same decoder as [`parse_document`], so unknown fields are
/// rejected and every structural problem is reported.
macro_rules! deserialize_via_decoder {
    ($ty:ty, $decode:path) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let Strict(value) = Strict::deserialize(d)?;
                $decode(&value).map_err(serde::de::Error::custom)
            }
        }
    };
}

deserialize_via_decoder!(Flag, flag_from_value);
deserialize_via_decoder!(Segment, segment_from_value);
deserialize_via_decoder!(Document, document_from_value);
