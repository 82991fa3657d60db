//! An OFREP evaluation context, read into the engine's [`Context`] (DESIGN.md section 10).
//!
//! `targetingKey` is the context key (absent or `null`: the empty key). Every other member is
//! an attribute: a string, number, boolean or an array of those (`null` is a missing attribute
//! and is dropped from arrays). Nested objects are flattened with dotted names:
//! `{"user": {"plan": "pro"}}` is the attribute `user.plan`. A name has at most
//! [`MAX_DEPTH`] parts (`user.plan` has two); deeper nesting, arrays holding objects or arrays,
//! a name given twice (`"user.plan"` beside `{"user": {"plan": …}}`) and anything over the
//! limits of DESIGN.md section 4a are `INVALID_CONTEXT`, naming the attribute. An attribute
//! named `key` is ignored, as everywhere in Flagstaff: the key is `targetingKey`.

use std::borrow::Cow;

use flagstaff_engine::{
    quote, AttrInput, AttrValue, Context, MAX_CONTEXT_ATTRIBUTES, MAX_CONTEXT_STRING_BYTES,
    MAX_NAME_BYTES,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The most parts a flattened attribute name has: objects nest at most this deep.
pub(crate) const MAX_DEPTH: usize = 8;

/// A context read from a request, borrowing its strings from the request's JSON.
#[derive(Debug)]
pub(crate) struct RequestContext<'a> {
    /// The context to evaluate with.
    pub(crate) context: Context<'a>,
    /// The attributes as given, flattened and sorted by name: the canonical form the bulk
    /// endpoint's ETag is derived from.
    canonical: Vec<(Cow<'a, str>, &'a Value)>,
    key: &'a str,
}

impl<'a> RequestContext<'a> {
    /// Reads the `context` member of a request body. The error says what is wrong, naming the
    /// attribute.
    pub(crate) fn read(context: &'a Value) -> Result<RequestContext<'a>, String> {
        let Value::Object(members) = context else {
            return Err(format!(
                "the context must be a JSON object, not {}",
                json_type(context)
            ));
        };
        let key = match members.get("targetingKey") {
            None | Some(Value::Null) => "",
            Some(Value::String(key)) => {
                if key.len() > MAX_CONTEXT_STRING_BYTES {
                    return Err(format!(
                        "targetingKey: {} is {} bytes, over the limit of {} KiB",
                        quote(key),
                        key.len(),
                        MAX_CONTEXT_STRING_BYTES >> 10
                    ));
                }
                key
            }
            Some(other) => {
                return Err(format!(
                    "targetingKey must be a string, not {}",
                    json_type(other)
                ))
            }
        };
        let mut attributes = Vec::new();
        for (name, value) in members {
            if name != "targetingKey" {
                flatten(Cow::Borrowed(name), value, 1, &mut attributes)?;
            }
        }
        attributes.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = attributes.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(format!(
                "attribute {} is given twice (as a dotted name and as a nested object)",
                quote(&pair[0].0)
            ));
        }
        let inputs = attributes
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), input(value)?)));
        let context = Context::from_attributes(key, inputs);
        Ok(RequestContext {
            context,
            canonical: attributes,
            key,
        })
    }

    /// A digest of the context in canonical form: equal for contexts that evaluate alike
    /// however their members were ordered or nested.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key.len().to_le_bytes());
        hasher.update(self.key.as_bytes());
        for (name, value) in &self.canonical {
            if value.is_null() {
                continue;
            }
            hasher.update(name.len().to_le_bytes());
            hasher.update(name.as_bytes());
            // serde_json writes a value the same way every time; a number as it was read.
            let text = value.to_string();
            hasher.update(text.len().to_le_bytes());
            hasher.update(text.as_bytes());
        }
        hasher.finalize().into()
    }
}

/// Adds `value` under `name` (a name of `depth` parts) to `out`, objects flattened.
fn flatten<'a>(
    name: Cow<'a, str>,
    value: &'a Value,
    depth: usize,
    out: &mut Vec<(Cow<'a, str>, &'a Value)>,
) -> Result<(), String> {
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "attribute name {} is {} bytes, over the limit of {MAX_NAME_BYTES}",
            quote(&name),
            name.len()
        ));
    }
    match value {
        Value::Object(members) => {
            if depth >= MAX_DEPTH && !members.is_empty() {
                return Err(format!(
                    "attribute {} nests objects deeper than {MAX_DEPTH} levels",
                    quote(&name)
                ));
            }
            for (member, value) in members {
                flatten(
                    Cow::Owned(format!("{name}.{member}")),
                    value,
                    depth + 1,
                    out,
                )?;
            }
        }
        Value::String(s) => check_string(&name, s)?,
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(s) => check_string(&name, s)?,
                    Value::Object(_) | Value::Array(_) => {
                        return Err(format!(
                            "attribute {}: a list may hold strings, numbers and booleans, not {}",
                            quote(&name),
                            json_type(item)
                        ))
                    }
                    _ => {}
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    if !value.is_object() {
        if out.len() == MAX_CONTEXT_ATTRIBUTES {
            return Err(format!(
                "the context has more than {MAX_CONTEXT_ATTRIBUTES} attributes (at {})",
                quote(&name)
            ));
        }
        out.push((name, value));
    }
    Ok(())
}

fn check_string(name: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_CONTEXT_STRING_BYTES {
        return Err(format!(
            "attribute {}: {} is {} bytes, over the limit of {} KiB",
            quote(name),
            quote(s),
            s.len(),
            MAX_CONTEXT_STRING_BYTES >> 10
        ));
    }
    Ok(())
}

/// The engine's form of a checked attribute value; `None` for `null`.
fn input(value: &Value) -> Option<AttrInput<'_>> {
    match value {
        Value::Null | Value::Object(_) => None,
        Value::String(s) => Some(AttrInput::Str(Cow::Borrowed(s))),
        Value::Bool(b) => Some(AttrInput::Bool(*b)),
        Value::Number(n) => Some(AttrInput::Number(n.as_f64().unwrap_or(f64::NAN))),
        Value::Array(items) => Some(AttrInput::List(Cow::Owned(
            items
                .iter()
                .filter_map(|item| match item {
                    Value::String(s) => Some(AttrValue::String(s.clone())),
                    Value::Bool(b) => Some(AttrValue::Bool(*b)),
                    Value::Number(n) => Some(AttrValue::Number(n.as_f64().unwrap_or(f64::NAN))),
                    _ => None,
                })
                .collect(),
        ))),
    }
}

/// How a JSON value's type reads in an error message.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use flagstaff_engine::AttrRef;
    use serde_json::json;

    use super::*;

    fn read(value: &Value) -> Result<RequestContext<'_>, String> {
        RequestContext::read(value)
    }

    #[test]
    fn the_targeting_key_is_the_key_and_nested_objects_are_dotted_names() {
        let body = json!({
            "targetingKey": "user-1",
            "country": "NL",
            "age": 42,
            "beta": true,
            "tags": ["a", null, 2],
            "missing": null,
            "user": {"plan": "pro", "org": {"id": 7}},
        });
        let ctx = read(&body).expect("valid");
        let c = &ctx.context;
        assert_eq!(c.key(), "user-1");
        assert_eq!(c.get("country"), Some(AttrRef::Str("NL")));
        assert_eq!(c.get("age").and_then(AttrRef::as_f64), Some(42.0));
        assert_eq!(c.get("beta"), Some(AttrRef::Bool(true)));
        assert_eq!(c.get("user.plan"), Some(AttrRef::Str("pro")));
        assert_eq!(c.get("user.org.id").and_then(AttrRef::as_f64), Some(7.0));
        assert_eq!(c.get("missing"), None);
        assert_eq!(c.get("user"), None);
        assert_eq!(
            c.get("tags").map(AttrRef::to_owned_value),
            Some(AttrValue::List(vec![
                AttrValue::String("a".into()),
                AttrValue::Number(2.0)
            ]))
        );
        assert_eq!(read(&json!({})).expect("empty").context.key(), "");
        assert_eq!(
            read(&json!({"targetingKey": null}))
                .expect("null")
                .context
                .key(),
            ""
        );
    }

    #[test]
    fn the_digest_ignores_order_and_nesting_but_not_values() {
        let a = json!({"targetingKey": "u", "a": 1, "user": {"plan": "pro"}});
        let b = json!({"user.plan": "pro", "a": 1, "targetingKey": "u", "gone": null});
        let c = json!({"targetingKey": "u", "a": 2, "user": {"plan": "pro"}});
        let d = json!({"targetingKey": "v", "a": 1, "user": {"plan": "pro"}});
        let digest = |v: &Value| read(v).expect("valid").digest();
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
        assert_ne!(digest(&a), digest(&d));
    }

    #[test]
    fn what_cannot_be_evaluated_is_refused_naming_the_attribute() {
        let refused = |v: Value| read(&v).expect_err("refused");
        assert_eq!(
            refused(json!({"targetingKey": 5})),
            "targetingKey must be a string, not a number"
        );
        assert_eq!(
            refused(json!(["a"])),
            "the context must be a JSON object, not an array"
        );
        assert_eq!(
            refused(json!({"tags": [{"a": 1}]})),
            "attribute \"tags\": a list may hold strings, numbers and booleans, not an object"
        );
        assert_eq!(
            refused(json!({"user.plan": "a", "user": {"plan": "b"}})),
            "attribute \"user.plan\" is given twice (as a dotted name and as a nested object)"
        );
        let deep = json!({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}});
        assert_eq!(
            refused(deep),
            "attribute \"a.b.c.d.e.f.g.h\" nests objects deeper than 8 levels"
        );
        let eight = json!({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}});
        assert!(read(&eight).is_ok());
        let long = "x".repeat(MAX_CONTEXT_STRING_BYTES + 1);
        assert!(refused(json!({"s": long})).starts_with("attribute \"s\": \"xxx"));
        assert!(refused(json!({"targetingKey": long})).starts_with("targetingKey: "));
        let name = "n".repeat(MAX_NAME_BYTES + 1);
        assert!(refused(json!({ name: 1 })).starts_with("attribute name \"nnn"));
        let many: serde_json::Map<String, Value> = (0..=MAX_CONTEXT_ATTRIBUTES)
            .map(|i| (format!("a{i}"), json!(i)))
            .collect();
        assert!(refused(Value::Object(many)).starts_with("the context has more than 1000"));
    }
}
