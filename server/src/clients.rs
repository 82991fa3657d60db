//! The SDK instances that watch each environment, and the revision each has applied.
//!
//! A Watch stream registers its instance when it subscribes and records every acknowledgement;
//! dropping the stream's [`Connection`] marks the instance disconnected. Instances seen in the
//! last 24 hours are kept, so "has every service applied my change?" can name the ones that
//! went away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::storage::now_ms;

/// How long an instance is remembered after its last stream closed.
pub const REMEMBER_MS: u64 = 24 * 60 * 60 * 1000;

/// Who an SDK instance says it is, from its Subscribe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Random, fixed for the life of one client.
    pub instance_id: String,
    /// The application embedding the SDK.
    pub application: String,
    /// The SDK's name and version.
    pub sdk_version: String,
    /// The host it runs on.
    pub host: String,
}

/// An SDK instance as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The environment it watches.
    pub environment: String,
    /// Who it is.
    pub identity: Identity,
    /// The name of the token its stream authenticated with.
    pub token: String,
    /// Its open Watch streams (usually 0 or 1).
    pub streams: u32,
    /// When its current stream connected, or its last one did.
    pub connected_ms: u64,
    /// When its last stream closed; `None` while one is open.
    pub disconnected_ms: Option<u64>,
    /// The epoch of the revision it last acknowledged (empty before its first).
    pub epoch: String,
    /// The revision it last acknowledged (0 before its first).
    pub applied_revision: u64,
    /// When it last acknowledged one.
    pub applied_ms: u64,
}

type Key = (String, String);

/// Every SDK instance seen recently.
#[derive(Debug)]
pub struct Clients {
    instances: Mutex<HashMap<Key, Instance>>,
    /// Bumped whenever an instance connects, acknowledges or disconnects, for waiters.
    changes: watch::Sender<u64>,
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new()
    }
}

impl Clients {
    /// No instances.
    pub fn new() -> Clients {
        Clients {
            instances: Mutex::new(HashMap::new()),
            changes: watch::Sender::new(0),
        }
    }

    /// A receiver woken whenever an instance connects, acknowledges or disconnects.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Instance>> {
        // Every update is a whole field assignment: a panic cannot leave one half-made.
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a stream of `identity` on `environment`, authenticated with the token named
    /// `token`; the instance counts as connected until the returned connection is dropped.
    pub fn connect(
        self: &Arc<Self>,
        environment: &str,
        identity: Identity,
        token: &str,
    ) -> Connection {
        let key = (environment.to_owned(), identity.instance_id.clone());
        let now = now_ms();
        let mut instances = self.lock();
        instances.retain(|_, i| {
            i.disconnected_ms
                .is_none_or(|gone| now.saturating_sub(gone) < REMEMBER_MS)
        });
        let instance = instances.entry(key.clone()).or_insert_with(|| Instance {
            environment: environment.to_owned(),
            identity: identity.clone(),
            token: String::new(),
            streams: 0,
            connected_ms: now,
            disconnected_ms: None,
            epoch: String::new(),
            applied_revision: 0,
            applied_ms: 0,
        });
        instance.identity = identity;
        token.clone_into(&mut instance.token);
        instance.streams += 1;
        instance.connected_ms = now;
        instance.disconnected_ms = None;
        drop(instances);
        self.changed();
        Connection {
            clients: self.clone(),
            key,
        }
    }

    /// Every instance of `environment` seen in the last 24 hours, by instance id.
    pub fn list(&self, environment: &str) -> Vec<Instance> {
        let mut all: Vec<Instance> = self
            .lock()
            .values()
            .filter(|i| i.environment == environment)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.identity.instance_id.cmp(&b.identity.instance_id));
        all
    }

    /// How many instances of `environment` have a stream open.
    pub fn connected(&self, environment: &str) -> usize {
        self.lock()
            .values()
            .filter(|i| i.environment == environment && i.streams > 0)
            .count()
    }
}

/// An open Watch stream's registration.
#[derive(Debug)]
pub struct Connection {
    clients: Arc<Clients>,
    key: Key,
}

impl Connection {
    /// Records that the instance applied `revision` of `epoch`.
    pub fn applied(&self, epoch: &str, revision: u64) {
        if let Some(instance) = self.clients.lock().get_mut(&self.key) {
            instance.epoch = epoch.to_owned();
            instance.applied_revision = revision;
            instance.applied_ms = now_ms();
        }
        self.clients.changed();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(instance) = self.clients.lock().get_mut(&self.key) {
            instance.streams = instance.streams.saturating_sub(1);
            if instance.streams == 0 {
                instance.disconnected_ms = Some(now_ms());
            }
        }
        self.clients.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(id: &str) -> Identity {
        Identity {
            instance_id: id.into(),
            application: "checkout".into(),
            ..Identity::default()
        }
    }

    #[test]
    fn tracks_streams_acknowledgements_and_disconnections() {
        let clients = Arc::new(Clients::new());
        let a = clients.connect("prod", identity("a"), "sdk");
        let b = clients.connect("prod", identity("b"), "sdk");
        let _other = clients.connect("staging", identity("a"), "sdk");
        assert_eq!(clients.connected("prod"), 2);
        a.applied("e1", 7);
        drop(b);
        let listed = clients.list("prod");
        assert_eq!(listed.len(), 2);
        assert_eq!(
            (listed[0].epoch.as_str(), listed[0].applied_revision),
            ("e1", 7)
        );
        assert_eq!(listed[0].disconnected_ms, None);
        assert!(listed[1].disconnected_ms.is_some());
        assert_eq!(clients.connected("prod"), 1);
        // A reconnection of the same instance is the same entry, connected again.
        let _b = clients.connect("prod", identity("b"), "sdk");
        assert_eq!(clients.connected("prod"), 2);
        assert_eq!(clients.list("prod").len(), 2);
    }
}
