//! The client: a snapshot behind an `ArcSwap`, evaluated locally.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use flagstaff_engine::{Context, Detail, Snapshot};

use crate::Error;

/// Evaluates flags from the latest snapshot. Cheap to clone: clones share the snapshot.
#[derive(Debug, Clone)]
pub struct Client {
    /// Readers load it without a lock; an update builds a new snapshot off the hot path and
    /// swaps it in, so no reader ever sees half of a change.
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl Client {
    /// A client serving `snapshot`.
    pub fn from_snapshot(snapshot: Snapshot) -> Client {
        Client {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
        }
    }

    /// A client serving an export document (JSON or YAML) read from `path`.
    pub fn from_export_file(path: impl AsRef<Path>) -> Result<Client, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Client::from_export_text(&text)
    }

    /// A client serving an export document given as JSON or YAML text.
    pub fn from_export_text(text: &str) -> Result<Client, Error> {
        Ok(Client::from_snapshot(Snapshot::from_text(text)?))
    }

    /// Replaces the snapshot every clone of this client serves; evaluations in progress finish
    /// on the one they started with.
    pub fn replace_snapshot(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// The snapshot now served, for detailed or repeated evaluations against one consistent
    /// state (`snapshot().bool_detail(...)`).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The boolean value of flag `key` for `ctx`, or `default` when the flag is missing or not
    /// boolean.
    #[inline]
    pub fn bool_value(&self, key: &str, ctx: &Context<'_>, default: bool) -> bool {
        self.snapshot.load().bool_value(key, ctx, default)
    }

    /// The number value of flag `key` for `ctx`, or `default`.
    #[inline]
    pub fn number_value(&self, key: &str, ctx: &Context<'_>, default: f64) -> f64 {
        self.snapshot.load().number_value(key, ctx, default)
    }

    /// The string value of flag `key` for `ctx`, or `default`. Allocates the returned string;
    /// [`Client::with_string`] does not.
    pub fn string_value(&self, key: &str, ctx: &Context<'_>, default: &str) -> String {
        self.snapshot
            .load()
            .string_value(key, ctx, default)
            .to_owned()
    }

    /// Calls `f` with the string value of flag `key` for `ctx` (or `default`), borrowed from
    /// the snapshot: no allocation.
    #[inline]
    pub fn with_string<R>(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: &str,
        f: impl FnOnce(&str) -> R,
    ) -> R {
        f(self.snapshot.load().string_value(key, ctx, default))
    }

    /// The JSON value of flag `key` for `ctx`, or `default`. Clones the value.
    pub fn json_value(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: serde_json::Value,
    ) -> serde_json::Value {
        self.snapshot.load().json_value(key, ctx, default)
    }

    /// Calls `f` with the full detail of a boolean evaluation (variant, reason, version,
    /// bucket), borrowed from the snapshot.
    pub fn with_bool_detail<R>(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: bool,
        f: impl FnOnce(Detail<'_, bool>) -> R,
    ) -> R {
        f(self.snapshot.load().bool_detail(key, ctx, default))
    }
}
