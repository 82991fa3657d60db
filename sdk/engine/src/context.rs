//! The evaluation context a calling service passes in: a key and typed attributes.
//!
//! Services build a context per request, so building one is on the hot path too. The key,
//! attribute names and string values share one buffer, and up to three attributes live inline,
//! so a context with a key and a few string attributes costs one allocation (an allocation and
//! its free cost more than the rest of building a context) and sits in a few adjacent cache
//! lines. (Holding the text inline as well was measured: the larger struct made the builder's
//! moves and copies cost more than the allocation saved.)
//!
//! Evaluation reads string attributes as bytes ([`Raw`]): every operator except semver and
//! date comparisons works on bytes, and the buffer only ever receives whole `str`s, so it is
//! valid UTF-8 by construction and nothing needs re-checking on the hot path.

use smallvec::SmallVec;

use crate::keys;

/// An owned attribute value: a string, number, bool or a list of those.
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
    /// Converts a JSON value; `null` is `None` (a missing attribute; also dropped from lists),
    /// objects are an error.
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

    /// A borrowed view of the value.
    pub fn as_ref(&self) -> AttrRef<'_> {
        match self {
            AttrValue::String(s) => AttrRef::Str(s),
            AttrValue::Number(n) => AttrRef::Number(*n),
            AttrValue::Bool(b) => AttrRef::Bool(*b),
            AttrValue::List(items) => AttrRef::List(items),
        }
    }
}

/// A borrowed attribute value, as [`Context::get`] returns it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrRef<'a> {
    /// A string.
    Str(&'a str),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A list.
    List(&'a [AttrValue]),
}

impl<'a> AttrRef<'a> {
    /// The string, if this is one.
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            AttrRef::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(self) -> Option<f64> {
        match self {
            AttrRef::Number(n) => Some(n),
            _ => None,
        }
    }

    /// An owned copy.
    pub fn to_owned_value(self) -> AttrValue {
        match self {
            AttrRef::Str(s) => AttrValue::String(s.to_owned()),
            AttrRef::Number(n) => AttrValue::Number(n),
            AttrRef::Bool(b) => AttrValue::Bool(b),
            AttrRef::List(items) => AttrValue::List(items.to_vec()),
        }
    }
}

/// Anything [`Context::with`] and [`Context::set`] accept as a value: `&str`, `String`, numbers,
/// `bool`, an [`AttrValue`] or a `Vec` of those. Borrowed strings are copied straight into the
/// context's buffer without an intermediate `String`.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrInput<'a> {
    /// A borrowed value.
    Borrowed(AttrRef<'a>),
    /// An owned value.
    Owned(AttrValue),
}

impl<'a> From<&'a str> for AttrInput<'a> {
    fn from(s: &'a str) -> Self {
        AttrInput::Borrowed(AttrRef::Str(s))
    }
}

impl<'a> From<&'a String> for AttrInput<'a> {
    fn from(s: &'a String) -> Self {
        AttrInput::Borrowed(AttrRef::Str(s))
    }
}

impl From<String> for AttrInput<'_> {
    fn from(s: String) -> Self {
        AttrInput::Owned(AttrValue::String(s))
    }
}

impl From<bool> for AttrInput<'_> {
    fn from(b: bool) -> Self {
        AttrInput::Borrowed(AttrRef::Bool(b))
    }
}

macro_rules! number_input {
    ($($t:ty),*) => {$(
        impl From<$t> for AttrInput<'_> {
            fn from(n: $t) -> Self {
                AttrInput::Borrowed(AttrRef::Number(n as f64))
            }
        }
    )*};
}
number_input!(f64, f32, i64, i32, u64, u32, usize);

impl From<AttrValue> for AttrInput<'_> {
    fn from(v: AttrValue) -> Self {
        AttrInput::Owned(v)
    }
}

impl<'a> From<AttrRef<'a>> for AttrInput<'a> {
    fn from(v: AttrRef<'a>) -> Self {
        AttrInput::Borrowed(v)
    }
}

impl<'a> From<&'a AttrValue> for AttrInput<'a> {
    fn from(v: &'a AttrValue) -> Self {
        AttrInput::Borrowed(v.as_ref())
    }
}

impl<T: Into<AttrValue>> From<Vec<T>> for AttrInput<'_> {
    fn from(items: Vec<T>) -> Self {
        AttrInput::Owned(AttrValue::List(items.into_iter().map(Into::into).collect()))
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

/// An attribute name resolved when a snapshot is compiled: `key` is the context key, so the
/// comparison with `"key"` happens once there rather than on every lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    Key,
    Name(Box<str>),
}

impl Selector {
    pub(crate) fn new(name: &str) -> Selector {
        if name == "key" {
            Selector::Key
        } else {
            Selector::Name(name.into())
        }
    }
}

/// An attribute as evaluation reads it: strings as their UTF-8 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Raw<'a> {
    Str(&'a [u8]),
    Number(f64),
    Bool(bool),
    List(&'a [AttrValue]),
}

impl<'a> From<AttrRef<'a>> for Raw<'a> {
    #[inline]
    fn from(value: AttrRef<'a>) -> Raw<'a> {
        match value {
            AttrRef::Str(s) => Raw::Str(s.as_bytes()),
            AttrRef::Number(n) => Raw::Number(n),
            AttrRef::Bool(b) => Raw::Bool(b),
            AttrRef::List(items) => Raw::List(items),
        }
    }
}

/// A range of the context's text buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    start: u32,
    end: u32,
}

/// Where an attribute's value is: strings are spans of the text buffer, lists spans of the
/// list buffer. Nothing here owns memory, so dropping a context frees its buffers and nothing
/// else.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Str(Span),
    Number(f64),
    Bool(bool),
    List(Span),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Attr {
    name: Span,
    value: Slot,
}

/// Who a flag is evaluated for.
///
/// The key is the default bucketing attribute and is always present, possibly empty. The
/// attribute name `key` always means the context key: setting an attribute named `key` has no
/// effect.
///
/// ```
/// use flagstaff_engine::Context;
/// let ctx = Context::new("user-42").with("country", "NL").with("age", 41);
/// assert_eq!(ctx.get("country").and_then(|v| v.as_str()), Some("NL"));
/// assert_eq!(ctx.get("age").and_then(|v| v.as_f64()), Some(41.0));
/// assert_eq!(ctx.key(), "user-42");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// The key, then attribute names and string values, back to back. Only whole `str`s are
    /// appended, so it is valid UTF-8 and every span in it falls on character boundaries.
    text: String,
    key_len: u32,
    /// In the order first set; never holds `key`. Contexts have a handful of attributes, for
    /// which a scan with [`keys::eq`] beats hashing or ordered comparisons. Three inline keep
    /// the whole context small enough that the builder's moves are a few register copies.
    attrs: SmallVec<[Attr; 3]>,
    /// Elements of list attributes; rare, so boxed to keep the context small (8 bytes rather
    /// than a `Vec`'s 24, which the builder would move on every call).
    #[allow(clippy::box_collection)]
    lists: Option<Box<Vec<AttrValue>>>,
}

/// Room reserved after the key for attribute names and string values, so the usual few fit
/// without growing the buffer.
const TEXT_RESERVE: usize = 64;

impl Context {
    /// A context with this key and no attributes.
    #[inline(always)]
    pub fn new(key: impl AsRef<str>) -> Context {
        let key = key.as_ref();
        let mut text = String::with_capacity(key.len() + TEXT_RESERVE);
        text.push_str(key);
        Context {
            text,
            key_len: key.len() as u32,
            attrs: SmallVec::new(),
            lists: None,
        }
    }

    /// Sets an attribute and returns the context (builder style).
    #[inline(always)]
    pub fn with<'v>(mut self, name: impl AsRef<str>, value: impl Into<AttrInput<'v>>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets an attribute, replacing an earlier value of the same name. `key` is ignored.
    #[inline]
    pub fn set<'v>(&mut self, name: impl AsRef<str>, value: impl Into<AttrInput<'v>>) {
        match value.into() {
            AttrInput::Borrowed(v) => self.set_ref(name.as_ref(), v),
            AttrInput::Owned(v) => self.set_ref(name.as_ref(), v.as_ref()),
        }
    }

    fn set_ref(&mut self, name: &str, value: AttrRef<'_>) {
        if name == "key" {
            return;
        }
        let value = match value {
            AttrRef::Str(s) => Slot::Str(self.push_text(s)),
            AttrRef::Number(n) => Slot::Number(n),
            AttrRef::Bool(b) => Slot::Bool(b),
            AttrRef::List(items) => {
                let lists = self.lists.get_or_insert_with(Box::default);
                let start = lists.len() as u32;
                lists.extend_from_slice(items);
                Slot::List(Span {
                    start,
                    end: lists.len() as u32,
                })
            }
        };
        match self.attrs.iter().position(|a| self.is_named(a.name, name)) {
            Some(i) => self.attrs[i].value = value,
            None => {
                let name = self.push_text(name);
                self.attrs.push(Attr { name, value });
            }
        }
    }

    #[inline]
    fn push_text(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span {
            start,
            end: self.text.len() as u32,
        }
    }

    #[inline(always)]
    fn bytes(&self, span: Span) -> &[u8] {
        self.text
            .as_bytes()
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }

    /// A span as `str`; the boundary check it costs is paid only by callers outside evaluation.
    fn str(&self, span: Span) -> &str {
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }

    /// Whether the attribute named by `span` is `name`.
    #[inline(always)]
    fn is_named(&self, span: Span, name: &str) -> bool {
        keys::eq_bytes(self.bytes(span), name.as_bytes())
    }

    /// Removes an attribute; returns whether it was set.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.attrs.iter().position(|a| self.is_named(a.name, name)) {
            Some(i) => {
                self.attrs.remove(i);
                true
            }
            None => false,
        }
    }

    /// The context key.
    pub fn key(&self) -> &str {
        self.str(self.key_span())
    }

    #[inline(always)]
    fn key_span(&self) -> Span {
        Span {
            start: 0,
            end: self.key_len,
        }
    }

    /// The context key's bytes.
    #[inline(always)]
    pub(crate) fn key_bytes(&self) -> &[u8] {
        self.bytes(self.key_span())
    }

    /// An attribute by name; `key` is the context key.
    pub fn get(&self, name: &str) -> Option<AttrRef<'_>> {
        if name == "key" {
            return Some(AttrRef::Str(self.key()));
        }
        let attr = self.find(name)?;
        Some(self.view(attr.value))
    }

    #[inline(always)]
    fn find(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| self.is_named(a.name, name))
    }

    /// The attribute a compiled condition or split names, as evaluation reads it.
    #[inline(always)]
    pub(crate) fn select(&self, selector: &Selector) -> Option<Raw<'_>> {
        match selector {
            Selector::Key => Some(Raw::Str(self.key_bytes())),
            Selector::Name(name) => self.find(name).map(|attr| self.raw(attr.value)),
        }
    }

    #[inline(always)]
    fn raw(&self, slot: Slot) -> Raw<'_> {
        match slot {
            Slot::Str(span) => Raw::Str(self.bytes(span)),
            Slot::Number(n) => Raw::Number(n),
            Slot::Bool(b) => Raw::Bool(b),
            Slot::List(span) => Raw::List(self.list(span)),
        }
    }

    fn view(&self, slot: Slot) -> AttrRef<'_> {
        match slot {
            Slot::Str(span) => AttrRef::Str(self.str(span)),
            Slot::Number(n) => AttrRef::Number(n),
            Slot::Bool(b) => AttrRef::Bool(b),
            Slot::List(span) => AttrRef::List(self.list(span)),
        }
    }

    fn list(&self, span: Span) -> &[AttrValue] {
        self.lists
            .as_deref()
            .and_then(|l| l.get(span.start as usize..span.end as usize))
            .unwrap_or_default()
    }

    /// The attributes other than the key, in the order first set.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, AttrRef<'_>)> {
        self.attrs
            .iter()
            .map(|a| (self.str(a.name), self.view(a.value)))
    }

    /// Reads `{"key": "...", "attributes": {...}}`. A missing key is the empty key; `null`
    /// attributes are missing; an attribute named `key` is ignored.
    pub fn from_json(value: &serde_json::Value) -> Result<Context, String> {
        use serde_json::Value;
        let Some(obj) = value.as_object() else {
            return Err("a context must be an object with \"key\" and \"attributes\"".to_owned());
        };
        if let Some(unknown) = obj.keys().find(|k| *k != "key" && *k != "attributes") {
            return Err(format!(
                "unknown context field \"{unknown}\"; a context has \"key\" and \"attributes\""
            ));
        }
        let key = match obj.get("key") {
            None | Some(Value::Null) => "",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err("the context key must be a string".to_owned()),
        };
        let mut ctx = Context::new(key);
        match obj.get("attributes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(attrs)) => {
                for (name, v) in attrs {
                    let value =
                        AttrValue::from_json(v).map_err(|e| format!("attribute {name}: {e}"))?;
                    if let Some(value) = value {
                        ctx.set(name, value);
                    }
                }
            }
            Some(_) => return Err("context attributes must be an object".to_owned()),
        }
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_set_replaced_and_removed() {
        let mut ctx = Context::new("k")
            .with("b", "x")
            .with("a", 1)
            .with("key", "ignored");
        ctx.set("b", "longer value");
        ctx.set("c", vec!["p", "q"]);
        ctx.set("d", true);
        ctx.set("e", String::from("owned"));
        let names: Vec<_> = ctx.attributes().map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "a", "c", "d", "e"]);
        assert_eq!(ctx.get("b"), Some(AttrRef::Str("longer value")));
        assert_eq!(ctx.get("a"), Some(AttrRef::Number(1.0)));
        assert_eq!(ctx.get("e"), Some(AttrRef::Str("owned")));
        assert_eq!(ctx.get("key"), Some(AttrRef::Str("k")));
        assert!(matches!(ctx.get("c"), Some(AttrRef::List(items)) if items.len() == 2));
        assert!(ctx.remove("a"));
        assert!(!ctx.remove("a"));
        assert_eq!(ctx.get("a"), None);
    }

    #[test]
    fn from_json_drops_nulls_and_rejects_objects() {
        let ctx = Context::from_json(&serde_json::json!({
            "key": "u", "attributes": {"a": null, "b": [1, null, "x"], "key": "other"}
        }))
        .expect("valid context");
        assert_eq!(ctx.key(), "u");
        assert_eq!(ctx.get("a"), None);
        assert_eq!(
            ctx.get("b").map(AttrRef::to_owned_value),
            Some(AttrValue::List(vec![
                AttrValue::Number(1.0),
                AttrValue::String("x".into())
            ]))
        );
        assert!(
            Context::from_json(&serde_json::json!({"key": "u", "attributes": {"o": {}}})).is_err()
        );
        assert!(Context::from_json(&serde_json::json!({"key": 5})).is_err());
    }
}
