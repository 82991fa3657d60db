//! The limits every document must keep (DESIGN.md section 4a), and how messages quote what
//! they reject.
//!
//! Limits apply to what is written: [`crate::Snapshot::apply`] and the other validating entry
//! points check them, so a server refuses a document over a limit before storing it. Loading
//! what is already stored (a snapshot from the wire, a restart) does not check them, so data
//! accepted before a limit existed still loads. The checks themselves are in
//! `validate/limits.rs`.

use std::borrow::Cow;

use serde_json::Value;

/// Most variants in a flag.
pub const MAX_VARIANTS: usize = 1_000;
/// Most prerequisites of a flag.
pub const MAX_PREREQUISITES: usize = 1_000;
/// Most rules in a flag or a segment.
pub const MAX_RULES: usize = 1_000;
/// Most conditions in one rule.
pub const MAX_CONDITIONS: usize = 100;
/// Most values in one condition.
pub const MAX_CONDITION_VALUES: usize = 10_000;
/// Most levels of nesting of a JSON value (a variant value of a `json` flag): `[1]` has one.
pub const MAX_JSON_DEPTH: usize = 64;
/// Largest compiled form of one regex.
pub const MAX_REGEX_BYTES: usize = 1024 * 1024;
/// Largest compiled form of all the regexes of one flag or segment.
pub const MAX_DOCUMENT_REGEX_BYTES: usize = 8 * 1024 * 1024;
/// Largest compiled form of all the regexes of one environment's flags and segments.
pub const MAX_ENVIRONMENT_REGEX_BYTES: usize = 64 * 1024 * 1024;
/// Longest description, owner or tag, and longest comment on a change.
pub const MAX_TEXT_BYTES: usize = 4 * 1024;
/// Most tags on a flag.
pub const MAX_TAGS: usize = 64;
/// Longest context key in a segment's lists, attribute name, `bucket_by` and salt.
pub const MAX_NAME_BYTES: usize = 256;

/// Most attributes of a context a server evaluates for a request.
pub const MAX_CONTEXT_ATTRIBUTES: usize = 1_000;
/// Longest string in a context a server evaluates for a request (its key, a value, a list
/// element).
pub const MAX_CONTEXT_STRING_BYTES: usize = 64 * 1024;

/// At most this many bytes of an offending value are quoted in a message.
pub const QUOTE_BYTES: usize = 64;

/// `s` cut to at most [`QUOTE_BYTES`] bytes at a character boundary, with `…` when cut.
pub fn clip(s: &str) -> Cow<'_, str> {
    if s.len() <= QUOTE_BYTES {
        return Cow::Borrowed(s);
    }
    let mut end = QUOTE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// `s` for a message: quoted and escaped like Rust's `{:?}`, at most [`QUOTE_BYTES`] bytes of
/// it, and its length when it was cut, e.g. `"aaaa…" (10240 bytes)`.
pub fn quote(s: &str) -> String {
    if s.len() <= QUOTE_BYTES {
        format!("{s:?}")
    } else {
        format!("{:?} ({} bytes)", clip(s), s.len())
    }
}

/// The depth of a JSON value: 0 for a scalar, one more than its deepest element for a list or
/// an object. Iterative, so a hostile value cannot overflow the stack.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// What is wrong with a piece of free text (a description, an owner, a tag, a comment): over
/// `max` bytes or holding a NUL character, which some stores cannot keep.
pub fn text_problem(text: &str, max: usize) -> Option<String> {
    if text.len() > max {
        Some(format!(
            "{} is {} bytes, over the limit of {max}",
            quote(text),
            text.len()
        ))
    } else if text.contains('\0') {
        Some(format!("{} contains a NUL character", quote(text)))
    } else {
        None
    }
}

/// What is wrong with a name (an attribute, `bucket_by`, a salt, a segment's context key):
/// empty, over [`MAX_NAME_BYTES`] or holding a control character.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!(
            "{} is {} bytes, over the limit of {MAX_NAME_BYTES}",
            quote(name),
            name.len()
        ))
    } else if name.chars().any(char::is_control) {
        Some(format!("{} contains a control character", quote(name)))
    } else {
        None
    }
}

/// What is wrong with a JSON value's strings and nesting: deeper than [`MAX_JSON_DEPTH`], or a
/// string (or object member name) holding a NUL character.
pub fn json_problem(value: &Value) -> Option<String> {
    let depth = json_depth(value);
    if depth > MAX_JSON_DEPTH {
        return Some(format!(
            "the value is nested {depth} levels deep, over the limit of {MAX_JSON_DEPTH}"
        ));
    }
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) if s.contains('\0') => {
                return Some(format!("string {} contains a NUL character", quote(s)))
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if let Some(name) = map.keys().find(|k| k.contains('\0')) {
                    return Some(format!(
                        "member name {} contains a NUL character",
                        quote(name)
                    ));
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        let s = "é".repeat(40);
        let clipped = clip(&s);
        assert!(clipped.len() <= QUOTE_BYTES + "…".len());
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short"), "short");
        assert_eq!(
            quote(&"a".repeat(100)),
            format!("\"{}…\" (100 bytes)", "a".repeat(64))
        );
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(json_depth(&serde_json::json!(1)), 0);
        assert_eq!(json_depth(&serde_json::json!([1])), 1);
        assert_eq!(json_depth(&serde_json::json!({"a": [[1], 2]})), 3);
        let mut deep = serde_json::json!(0);
        for _ in 0..1_000 {
            deep = Value::Array(vec![deep]);
        }
        assert_eq!(json_depth(&deep), 1_000);
    }
}
