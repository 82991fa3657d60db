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

/// Parses JSON or YAML text into a value tree.
pub fn parse_value(text: &str) -> Result<Value, ValidationError> {
    match Format::detect(text) {
        Format::Json => serde_json::from_str(text)
            .map_err(|e| ValidationError::single("", format!("invalid JSON: {e}"))),
        Format::Yaml => serde_yaml_ng::from_str(text)
            .map_err(|e| ValidationError::single("", format!("invalid YAML: {e}"))),
    }
}

/// Decodes an export document from a value tree, reporting every structural problem.
pub fn document_from_value(value: &Value) -> Result<Document, ValidationError> {
    let mut problems = Problems::default();
    let doc = decode::decode_document(value, &mut problems);
    problems.into_result()?;
    doc.ok_or_else(|| ValidationError::single("", "not an export document"))
}

/// Parses an export document (`{environment, flags, segments}`) from JSON or YAML.
pub fn parse_document(text: &str) -> Result<Document, ValidationError> {
    document_from_value(&parse_value(text)?)
}

/// Decodes one flag document; `path` prefixes problem paths (e.g. `flags[checkout-v2]`).
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
