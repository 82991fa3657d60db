//! The evaluation context a calling service passes in: a key and typed attributes.

use std::borrow::Cow;

/// An attribute value: a string, number, bool or a list of those.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    String(String),
    /// A number; integers and floats compare by value.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A list; an operator matches when it matches any element.
    List(Vec<AttrValue>),
}

impl AttrValue {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Converts a JSON value; `null` is `None` (a missing attribute), objects are an error.
    pub fn from_json(value: &serde_json::Value) -> Result<Option<AttrValue>, String> {
        use serde_json::Value;
        Ok(Some(match value {
            Value::Null => return Ok(None),
            Value::Bool(b) => AttrValue::Bool(*b),
            Value::Number(n) => AttrValue::Number(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => AttrValue::String(s.clone()),
            Value::Array(items) => AttrValue::List(
                items
                    .iter()
                    .filter_map(|v| AttrValue::from_json(v).transpose())
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(_) => {
                return Err(
                    "an attribute value must be a string, number, bool or a list of those, \
                            not an object"
                        .to_owned(),
                )
            }
        }))
    }
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::String(s.to_owned())
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::String(s)
    }
}

impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        AttrValue::Bool(b)
    }
}

impl From<f64> for AttrValue {
    fn from(n: f64) -> Self {
        AttrValue::Number(n)
    }
}

impl From<i64> for AttrValue {
    fn from(n: i64) -> Self {
        AttrValue::Number(n as f64)
    }
}

impl From<i32> for AttrValue {
    fn from(n: i32) -> Self {
        AttrValue::Number(f64::from(n))
    }
}

impl From<u32> for AttrValue {
    fn from(n: u32) -> Self {
        AttrValue::Number(f64::from(n))
    }
}

impl<T: Into<AttrValue>> From<Vec<T>> for AttrValue {
    fn from(items: Vec<T>) -> Self {
        AttrValue::List(items.into_iter().map(Into::into).collect())
    }
}

/// Who a flag is evaluated for.
///
/// The key is the default bucketing attribute and is always present, possibly empty. The
/// attribute name `key` always means the context key: setting an attribute named `key` has no
/// effect. Attribute names are usually literals, so they are taken as `Cow<'static, str>` and
/// cost no allocation.
///
/// ```
/// use flagstaff_engine::Context;
/// let ctx = Context::new("user-42").with("country", "NL").with("plan", "enterprise");
/// assert_eq!(ctx.get("country").and_then(|v| v.as_str()), Some("NL"));
/// assert_eq!(ctx.get("key").and_then(|v| v.as_str()), Some("user-42"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// Always `AttrValue::String`, so `get("key")` can hand out a reference like any attribute.
    key: AttrValue,
    /// Sorted by name for binary search; never holds `key`.
    attributes: Vec<(Cow<'static, str>, AttrValue)>,
}

impl Context {
    /// A context with this key and no attributes.
    pub fn new(key: impl Into<String>) -> Context {
        Context {
            key: AttrValue::String(key.into()),
            attributes: Vec::new(),
        }
    }

    /// Sets an attribute and returns the context (builder style).
    pub fn with(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets an attribute, replacing an earlier value of the same name. `key` is ignored.
    pub fn set(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) {
        let name = name.into();
        if name == "key" {
            return;
        }
        let value = value.into();
        match self
            .attributes
            .binary_search_by(|(n, _)| n.as_ref().cmp(name.as_ref()))
        {
            Ok(i) => self.attributes[i].1 = value,
            Err(i) => self.attributes.insert(i, (name, value)),
        }
    }

    /// Removes an attribute.
    pub fn remove(&mut self, name: &str) -> Option<AttrValue> {
        let i = self
            .attributes
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()?;
        Some(self.attributes.remove(i).1)
    }

    /// The context key.
    pub fn key(&self) -> &str {
        self.key.as_str().unwrap_or_default()
    }

    /// An attribute by name; `key` is the context key.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&AttrValue> {
        if name == "key" {
            return Some(&self.key);
        }
        self.attributes
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|i| &self.attributes[i].1)
    }

    /// The attributes other than the key, sorted by name.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &AttrValue)> {
        self.attributes.iter().map(|(n, v)| (n.as_ref(), v))
    }

    /// Reads `{"key": "...", "attributes": {...}}`. A missing key is the empty key; `null`
    /// attributes are missing; an attribute named `key` is ignored.
    pub fn from_json(value: &serde_json::Value) -> Result<Context, String> {
        let Some(obj) = value.as_object() else {
            return Err("a context must be an object with \"key\" and \"attributes\"".to_owned());
        };
        if let Some(unknown) = obj.keys().find(|k| *k != "key" && *k != "attributes") {
            return Err(format!(
                "unknown context field \"{unknown}\"; a context has \"key\" and \"attributes\""
            ));
        }
        let key = match obj.get("key") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err("the context key must be a string".to_owned()),
        };
        let mut ctx = Context::new(key);
        match obj.get("attributes") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(attrs)) => {
                for (name, v) in attrs {
                    let value =
                        AttrValue::from_json(v).map_err(|e| format!("attribute {name}: {e}"))?;
                    if let Some(value) = value {
                        ctx.set(name.clone(), value);
                    }
                }
            }
            Some(_) => return Err("context attributes must be an object".to_owned()),
        }
        Ok(ctx)
    }
}
