//! [`TestData`]: flags for unit tests, without a server.

use std::sync::{Arc, Mutex};

use flagstaff_engine::{ChangeSet, Input, Snapshot};
use serde_json::{json, Value};

use crate::client::Client;
use crate::core::Core;
use crate::status::{Source, State, Status};
use crate::Error;

/// An in-memory source of flags for testing code behind flags: every [`Client`] it hands out
/// evaluates its flags, and sees each change at once, as a client connected to flagstaffd sees
/// the server's.
///
/// ```
/// use flagstaff::{Context, TestData};
///
/// let data = TestData::new();
/// let client = data.client();
/// let ctx = Context::new("user-1").with("country", "NL");
/// assert!(!client.bool_value("checkout-v2", &ctx, false));
///
/// data.set_bool("checkout-v2", true);
/// assert!(client.bool_value("checkout-v2", &ctx, false));
///
/// // Whole flag documents (JSON or YAML) for rules, splits and prerequisites.
/// data.set_flag_text(r#"
/// key: checkout-v2
/// kind: boolean
/// variants: { "on": true, "off": false }
/// off_variant: "off"
/// enabled: true
/// rules:
///   - id: eu
///     conditions: [{ attribute: country, op: in, values: [NL, DE] }]
///     serve: { variant: "on" }
/// default: { variant: "off" }
/// "#)?;
/// assert!(client.bool_value("checkout-v2", &ctx, false));
/// assert!(!client.bool_value("checkout-v2", &Context::new("user-2"), true));
/// # Ok::<(), flagstaff::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TestData {
    core: Arc<Core>,
    /// Serialises changes, so each builds on the one before.
    writing: Arc<Mutex<()>>,
}

impl Default for TestData {
    fn default() -> Self {
        TestData::new()
    }
}

impl TestData {
    /// No flags: evaluations serve the caller's defaults (reason `FLAG_NOT_FOUND`).
    pub fn new() -> TestData {
        let status = Status {
            state: State::Ready,
            ..Status::starting(Source::Bootstrap)
        };
        TestData {
            core: Arc::new(Core::new(
                Some(Arc::new(Snapshot::new())),
                status,
                None,
                None,
            )),
            writing: Arc::new(Mutex::new(())),
        }
    }

    /// A client serving these flags.
    pub fn client(&self) -> Client {
        Client::sharing(self.core.clone())
    }

    /// Makes the boolean flag `key` serve `value` to everyone.
    pub fn set_bool(&self, key: &str, value: bool) {
        self.set_constant(key, "boolean", json!(value));
    }

    /// Makes the string flag `key` serve `value` to everyone.
    pub fn set_string(&self, key: &str, value: &str) {
        self.set_constant(key, "string", json!(value));
    }

    /// Makes the number flag `key` serve `value` to everyone.
    pub fn set_number(&self, key: &str, value: f64) {
        self.set_constant(key, "number", json!(value));
    }

    /// Makes the JSON flag `key` serve `value` to everyone.
    pub fn set_json(&self, key: &str, value: Value) {
        self.set_constant(key, "json", value);
    }

    fn set_constant(&self, key: &str, kind: &str, value: Value) {
        let document = json!({
            "key": key, "kind": kind, "variants": {"value": value},
            "off_variant": "value", "enabled": true, "default": {"variant": "value"},
        });
        let result = flagstaff_engine::flag_from_value(&document)
            .map_err(Error::from)
            .and_then(|flag| {
                self.change(ChangeSet {
                    flags: vec![flag],
                    ..ChangeSet::default()
                })
            });
        if let Err(e) = result {
            // Only a key that is not a valid flag key gets here: a mistake in the test itself.
            panic!("TestData cannot set flag {key:?}: {e}");
        }
    }

    /// Adds or replaces a flag, a segment, or every flag and segment of an export document,
    /// given as JSON or YAML; checked as the server checks them.
    pub fn set_flag_text(&self, text: &str) -> Result<(), Error> {
        let changes = match flagstaff_engine::parse_input(text)? {
            Input::Flag(flag) => ChangeSet {
                flags: vec![flag],
                ..ChangeSet::default()
            },
            Input::Segment(segment) => ChangeSet {
                segments: vec![segment],
                ..ChangeSet::default()
            },
            Input::Document(document) => ChangeSet::from(document),
        };
        self.change(changes)
    }

    /// Removes the flag `key`; evaluations of it serve the caller's default again.
    pub fn remove(&self, key: &str) -> Result<(), Error> {
        self.change(ChangeSet {
            deleted_flags: vec![key.to_owned()],
            ..ChangeSet::default()
        })
    }

    fn change(&self, changes: ChangeSet) -> Result<(), Error> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.core.snapshot.load_full().unwrap_or_default();
        let next = Arc::new(current.apply(changes)?);
        self.core.swap_snapshot(next.clone());
        let mut revision = 0;
        self.core.status.send_modify(|s| {
            s.revision += 1;
            revision = s.revision;
        });
        self.core.listeners.changed(Some(&current), &next, revision);
        Ok(())
    }
}
