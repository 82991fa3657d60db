//! The evaluation context a calling service passes in: a key and typed attributes.
//!
//! Services build a context per request, so building one is on the hot path too. A context
//! borrows the caller's strings rather than copying them and keeps up to three attributes
//! inline, so building a typical one allocates nothing. Evaluation reads string attributes as
//! bytes ([`Raw`]): every operator except semver and date comparisons works on bytes.

use std::borrow::Cow;
use std::fmt;
use std::mem::ManuallyDrop;

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

/// An attribute value as a context holds it: strings and lists either borrowed from the
/// caller (no allocation, no copy) or owned. Anything [`Context::with`] and [`Context::set`]
/// accept converts into it: `&str`, `String`, numbers, `bool`, an [`AttrValue`] or a `Vec`.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrInput<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A list.
    List(Cow<'a, [AttrValue]>),
}

impl AttrInput<'_> {
    /// A borrowed view.
    pub fn as_ref(&self) -> AttrRef<'_> {
        match self {
            AttrInput::Str(s) => AttrRef::Str(s),
            AttrInput::Number(n) => AttrRef::Number(*n),
            AttrInput::Bool(b) => AttrRef::Bool(*b),
            AttrInput::List(items) => AttrRef::List(items),
        }
    }

    /// As evaluation reads it.
    #[inline(always)]
    fn raw(&self) -> Raw<'_> {
        match self {
            AttrInput::Str(s) => Raw::Str(s.as_bytes()),
            AttrInput::Number(n) => Raw::Number(*n),
            AttrInput::Bool(b) => Raw::Bool(*b),
            AttrInput::List(items) => Raw::List(items),
        }
    }

    /// Whether the value holds memory of its own.
    #[inline(always)]
    fn is_owned(&self) -> bool {
        matches!(
            self,
            AttrInput::Str(Cow::Owned(_)) | AttrInput::List(Cow::Owned(_))
        )
    }

    /// The same value owning its data.
    pub fn into_owned(self) -> AttrInput<'static> {
        match self {
            AttrInput::Str(s) => AttrInput::Str(Cow::Owned(s.into_owned())),
            AttrInput::Number(n) => AttrInput::Number(n),
            AttrInput::Bool(b) => AttrInput::Bool(b),
            AttrInput::List(items) => AttrInput::List(Cow::Owned(items.into_owned())),
        }
    }
}

impl<'a> From<&'a str> for AttrInput<'a> {
    fn from(s: &'a str) -> Self {
        AttrInput::Str(Cow::Borrowed(s))
    }
}

impl<'a> From<&'a String> for AttrInput<'a> {
    fn from(s: &'a String) -> Self {
        AttrInput::Str(Cow::Borrowed(s))
    }
}

impl From<String> for AttrInput<'_> {
    fn from(s: String) -> Self {
        AttrInput::Str(Cow::Owned(s))
    }
}

impl<'a> From<Cow<'a, str>> for AttrInput<'a> {
    fn from(s: Cow<'a, str>) -> Self {
        AttrInput::Str(s)
    }
}

impl From<bool> for AttrInput<'_> {
    fn from(b: bool) -> Self {
        AttrInput::Bool(b)
    }
}

macro_rules! number_input {
    ($($t:ty),*) => {$(
        impl From<$t> for AttrInput<'_> {
            fn from(n: $t) -> Self {
                AttrInput::Number(n as f64)
            }
        }
    )*};
}
number_input!(f64, f32, i64, i32, u64, u32, usize);

impl From<AttrValue> for AttrInput<'_> {
    fn from(v: AttrValue) -> Self {
        match v {
            AttrValue::String(s) => AttrInput::Str(Cow::Owned(s)),
            AttrValue::Number(n) => AttrInput::Number(n),
            AttrValue::Bool(b) => AttrInput::Bool(b),
            AttrValue::List(items) => AttrInput::List(Cow::Owned(items)),
        }
    }
}

impl<'a> From<AttrRef<'a>> for AttrInput<'a> {
    fn from(v: AttrRef<'a>) -> Self {
        match v {
            AttrRef::Str(s) => AttrInput::Str(Cow::Borrowed(s)),
            AttrRef::Number(n) => AttrInput::Number(n),
            AttrRef::Bool(b) => AttrInput::Bool(b),
            AttrRef::List(items) => AttrInput::List(Cow::Borrowed(items)),
        }
    }
}

impl<'a> From<&'a AttrValue> for AttrInput<'a> {
    fn from(v: &'a AttrValue) -> Self {
        v.as_ref().into()
    }
}

impl<T: Into<AttrValue>> From<Vec<T>> for AttrInput<'_> {
    fn from(items: Vec<T>) -> Self {
        AttrInput::List(Cow::Owned(items.into_iter().map(Into::into).collect()))
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

/// A context's attributes: names and values, three inline.
type Attributes<'a> = SmallVec<[(Cow<'a, str>, AttrInput<'a>); 3]>;

/// Who a flag is evaluated for.
///
/// The key is the default bucketing attribute and is always present, possibly empty. The
/// attribute name `key` always means the context key: setting an attribute named `key` has no
/// effect.
///
/// A context borrows what it can: `Context::new(&request.user_id).with("country", &request.country)`
/// copies no string and allocates nothing, so building one per request costs a few nanoseconds.
/// Owned strings (`String`) are kept as they are; [`Context::into_owned`] makes a context that
/// outlives what it borrowed.
///
/// ```
/// use flagstaff_engine::Context;
/// let user = String::from("user-42");
/// let ctx = Context::new(&user).with("country", "NL").with("age", 41);
/// assert_eq!(ctx.get("country").and_then(|v| v.as_str()), Some("NL"));
/// assert_eq!(ctx.get("age").and_then(|v| v.as_f64()), Some(41.0));
/// assert_eq!(ctx.key(), "user-42");
/// let owned: flagstaff_engine::Context<'static> = ctx.into_owned();
/// ```
#[derive(Clone)]
pub struct Context<'a> {
    key: Cow<'a, str>,
    /// In the order first set; never holds `key`. Contexts have a handful of attributes, for
    /// which a scan with [`keys::eq`] beats hashing or ordered comparisons; three live inline.
    /// Dropped by [`Context`]'s `Drop`, only when there can be something to free.
    attrs: ManuallyDrop<Attributes<'a>>,
    /// Whether an attribute name or value was ever owned (it may be replaced since).
    owns: bool,
}

/// A context whose attributes all borrow and fit inline owns nothing: dropping it skips the
/// checks of every name and value for memory to free, a third of the cost of a small context.
impl Drop for Context<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.owns || self.attrs.spilled() {
            drop(std::mem::take(&mut *self.attrs));
        }
    }
}

/// Equal keys and equal attributes in the same order; whether a string is borrowed or owned
/// does not matter.
impl PartialEq for Context<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && *self.attrs == *other.attrs
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("key", &self.key)
            .field("attrs", &*self.attrs)
            .finish()
    }
}

impl<'a> Context<'a> {
    /// A context with this key and no attributes.
    #[inline(always)]
    pub fn new(key: impl Into<Cow<'a, str>>) -> Context<'a> {
        Context {
            key: key.into(),
            attrs: ManuallyDrop::new(SmallVec::new()),
            owns: false,
        }
    }

    /// A context of `key` and `attributes`, built in time linear in their number (setting
    /// them one by one compares each name with every name before it, which is fastest for the
    /// handful of attributes a context usually has). As with [`set`](Self::set), a repeated
    /// name keeps its last value at its first position, and `key` is ignored.
    pub fn from_attributes(
        key: impl Into<Cow<'a, str>>,
        attributes: impl IntoIterator<Item = (Cow<'a, str>, AttrInput<'a>)>,
    ) -> Context<'a> {
        let mut ctx = Context::new(key);
        let mut index: rustc_hash::FxHashMap<Cow<'a, str>, usize> = Default::default();
        for (name, value) in attributes {
            if name == "key" {
                continue;
            }
            ctx.owns |= matches!(name, Cow::Owned(_)) || value.is_owned();
            match index.entry(name) {
                std::collections::hash_map::Entry::Occupied(at) => ctx.attrs[*at.get()].1 = value,
                std::collections::hash_map::Entry::Vacant(at) => {
                    ctx.attrs.push((at.key().clone(), value));
                    at.insert(ctx.attrs.len() - 1);
                }
            }
        }
        ctx
    }

    /// Sets an attribute and returns the context (builder style).
    #[inline(always)]
    pub fn with(mut self, name: impl Into<Cow<'a, str>>, value: impl Into<AttrInput<'a>>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets an attribute, replacing an earlier value of the same name. `key` is ignored.
    // Inlined into the builder chain, a context under construction stays in place instead of
    // being copied out and back for every call.
    #[inline(always)]
    pub fn set(&mut self, name: impl Into<Cow<'a, str>>, value: impl Into<AttrInput<'a>>) {
        self.set_value(name.into(), value.into());
    }

    // Inlined: passed through memory to an outlined call, the name and value were written
    // word by word and read back as vectors, stalling on store forwarding.
    #[inline(always)]
    fn set_value(&mut self, name: Cow<'a, str>, value: AttrInput<'a>) {
        if name == "key" {
            return;
        }
        self.owns |= matches!(name, Cow::Owned(_)) || value.is_owned();
        // A plain loop: `Iterator::find` with a closure was left out of line, a call per set.
        for (n, slot) in self.attrs.iter_mut() {
            if keys::eq(n, &name) {
                *slot = value;
                return;
            }
        }
        self.attrs.push((name, value));
    }

    /// Replaces the key.
    pub fn set_key(&mut self, key: impl Into<Cow<'a, str>>) {
        self.key = key.into();
    }

    /// Removes an attribute; returns whether it was set.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.attrs.iter().position(|(n, _)| keys::eq(n, name)) {
            Some(i) => {
                self.attrs.remove(i);
                true
            }
            None => false,
        }
    }

    /// The context key.
    #[inline]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// An attribute by name; `key` is the context key.
    pub fn get(&self, name: &str) -> Option<AttrRef<'_>> {
        if name == "key" {
            return Some(AttrRef::Str(&self.key));
        }
        self.find(name).map(AttrInput::as_ref)
    }

    #[inline(always)]
    fn find(&self, name: &str) -> Option<&AttrInput<'a>> {
        // A plain loop: `Iterator::find` with a closure was left out of line, a call per lookup.
        for (n, v) in self.attrs.iter() {
            if keys::eq(n, name) {
                return Some(v);
            }
        }
        None
    }

    /// The attribute a compiled condition or split names, as evaluation reads it.
    #[inline(always)]
    pub(crate) fn select(&self, selector: &Selector) -> Option<Raw<'_>> {
        match selector {
            Selector::Key => Some(Raw::Str(self.key.as_bytes())),
            Selector::Name(name) => self.find(name).map(AttrInput::raw),
        }
    }

    /// The attributes other than the key, in the order first set.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, AttrRef<'_>)> {
        self.attrs.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// The same context owning all its strings, free of any borrow.
    pub fn into_owned(mut self) -> Context<'static> {
        let attrs = std::mem::take(&mut *self.attrs);
        Context {
            key: Cow::Owned(std::mem::take(&mut self.key).into_owned()),
            attrs: ManuallyDrop::new(
                attrs
                    .into_iter()
                    .map(|(n, v)| (Cow::Owned(n.into_owned()), v.into_owned()))
                    .collect(),
            ),
            owns: true,
        }
    }

    /// Reads `{"key": "...", "attributes": {...}}`, borrowing its strings. A missing key is the
    /// empty key; `null` attributes are missing; an attribute named `key` is ignored.
    pub fn from_json(value: &'a serde_json::Value) -> Result<Context<'a>, String> {
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
        let mut attributes = Vec::new();
        match obj.get("attributes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(attrs)) => {
                for (name, v) in attrs {
                    let value = match v {
                        Value::String(s) => Some(AttrInput::Str(Cow::Borrowed(s))),
                        other => AttrValue::from_json(other)
                            .map_err(|e| format!("attribute {name}: {e}"))?
                            .map(AttrInput::from),
                    };
                    if let Some(value) = value {
                        attributes.push((Cow::Borrowed(name.as_str()), value));
                    }
                }
            }
            Some(_) => return Err("context attributes must be an object".to_owned()),
        }
        Ok(Context::from_attributes(key, attributes))
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
        ctx.set(String::from("f"), 2.5);
        let names: Vec<_> = ctx.attributes().map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "a", "c", "d", "e", "f"]);
        assert_eq!(ctx.get("b"), Some(AttrRef::Str("longer value")));
        assert_eq!(ctx.get("a"), Some(AttrRef::Number(1.0)));
        assert_eq!(ctx.get("e"), Some(AttrRef::Str("owned")));
        assert_eq!(ctx.get("key"), Some(AttrRef::Str("k")));
        assert!(matches!(ctx.get("c"), Some(AttrRef::List(items)) if items.len() == 2));
        assert!(ctx.remove("a"));
        assert!(!ctx.remove("a"));
        assert_eq!(ctx.get("a"), None);
        let owned: Context<'static> = ctx.clone().into_owned();
        assert_eq!(owned, ctx);
    }

    #[test]
    fn from_attributes_is_set_one_by_one() {
        let attributes = [("b", "1"), ("key", "x"), ("a", "2"), ("b", "3"), ("c", "4")];
        let built = Context::from_attributes(
            "k",
            attributes
                .iter()
                .map(|(n, v)| (Cow::Borrowed(*n), AttrInput::from(*v))),
        );
        let mut set = Context::new("k");
        for (name, value) in attributes {
            set.set(name, value);
        }
        assert_eq!(built, set);
        assert_eq!(built.get("b"), Some(AttrRef::Str("3")));
        assert_eq!(built.get("key"), Some(AttrRef::Str("k")));

        // Many attributes, each name twice: linear, and the same as setting them one by one.
        let many: Vec<(String, String)> = (0..20_000)
            .map(|i| (format!("n{}", i % 10_000), format!("v{i}")))
            .collect();
        let built = Context::from_attributes(
            "k",
            many.iter()
                .map(|(n, v)| (Cow::Borrowed(n.as_str()), AttrInput::from(v.as_str()))),
        );
        assert_eq!(built.attributes().count(), 10_000);
        assert_eq!(built.get("n7"), Some(AttrRef::Str("v10007")));
    }

    #[test]
    fn from_json_drops_nulls_and_rejects_objects() {
        let json = serde_json::json!({
            "key": "u", "attributes": {"a": null, "b": [1, null, "x"], "key": "other"}
        });
        let ctx = Context::from_json(&json).expect("valid context");
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
