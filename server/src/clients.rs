//! The SDK instances that watch each environment, and the revision each has applied.
//!
//! A Watch stream registers its instance when it subscribes and records every acknowledgement;
//! dropping the stream's [`Connection`] marks the instance disconnected. Instances seen in the
//! last 24 hours are kept, so "has every service applied my change?" can name the ones that
//! went away.
//!
//! On a store several flagstaffd share (PostgreSQL; DESIGN.md section 7) each is a replica,
//! with an id of its own: [`share`] writes its instances whose state changed, at most every
//! [`WRITE_EVERY`], and keeps its record alive; [`Clients::everywhere`] merges its instances
//! with every other replica's, one per instance, those of a replica silent for
//! [`REPLICA_SILENCE`] shown disconnected.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::storage::{now_ms, random_id, Store, StoreError};
pub use crate::storage::{Identity, Instance};

/// How long an instance is remembered after its last stream closed.
pub const REMEMBER_MS: u64 = 24 * 60 * 60 * 1000;

/// How often, at most, a replica writes its instances' changes to a shared store.
pub const WRITE_EVERY: Duration = Duration::from_millis(100);

/// How long a replica may go without writing to a shared store before the others show its
/// instances disconnected. It writes at least every sixth of that, changes or not.
pub const REPLICA_SILENCE: Duration = Duration::from_secs(30);

/// How often a replica removes from a shared store what has been gone for 24 hours.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The most instances one write to a shared store carries; the rest go in the next.
const MOST_WRITTEN: usize = 10_000;

type Key = (String, String);

/// This replica's instances.
#[derive(Debug, Default)]
struct Local {
    instances: HashMap<Key, Instance>,
    /// The instances whose state changed since [`share`] last wrote them.
    unwritten: HashSet<Key>,
}

impl Local {
    /// Marks `key` changed, for [`share`].
    fn changed(&mut self, key: &Key) {
        if !self.unwritten.contains(key) {
            self.unwritten.insert(key.clone());
        }
    }
}

/// Every SDK instance seen recently.
#[derive(Debug)]
pub struct Clients {
    local: Mutex<Local>,
    /// Bumped whenever an instance connects, acknowledges or disconnects, for waiters and for
    /// [`share`].
    changes: watch::Sender<u64>,
    /// This process's id among the replicas of a shared store: random, new at each start.
    replica: String,
    /// How long another replica may be silent before its instances are shown disconnected.
    silence: Duration,
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new()
    }
}

impl Clients {
    /// No instances; other replicas' shown disconnected after [`REPLICA_SILENCE`].
    pub fn new() -> Clients {
        Clients::with_silence(REPLICA_SILENCE)
    }

    /// No instances; other replicas' shown disconnected once their replica has not written
    /// for `silence`, and this one's written at least every sixth of it.
    pub fn with_silence(silence: Duration) -> Clients {
        Clients {
            local: Mutex::new(Local::default()),
            changes: watch::Sender::new(0),
            replica: random_id(),
            silence,
        }
    }

    /// This process's id among the replicas of a shared store.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// A receiver woken whenever an instance connects, acknowledges or disconnects.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        // Every update is a whole field assignment: a panic cannot leave one half-made. Never
        // held across an await.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut local = self.lock();
        let Local {
            instances,
            unwritten,
        } = &mut *local;
        instances.retain(|key, i| {
            let kept = i
                .disconnected_ms
                .is_none_or(|gone| now.saturating_sub(gone) < REMEMBER_MS);
            if !kept {
                unwritten.remove(key);
            }
            kept
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
        local.changed(&key);
        drop(local);
        self.changed();
        Connection {
            clients: self.clone(),
            key,
        }
    }

    /// Every instance of `environment` seen here in the last 24 hours, by instance id.
    pub fn list(&self, environment: &str) -> Vec<Instance> {
        let mut all: Vec<Instance> = self
            .lock()
            .instances
            .values()
            .filter(|i| i.environment == environment)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.identity.instance_id.cmp(&b.identity.instance_id));
        all
    }

    /// Every instance of `environment`, by instance id: this replica's, and on a shared
    /// `store` every other replica's too, merged ([`merge`]). Reads the store: call it on a
    /// blocking thread.
    pub fn everywhere<S: Store + ?Sized>(
        &self,
        store: &S,
        environment: &str,
    ) -> Result<Vec<Instance>, StoreError> {
        let local = self.list(environment);
        if !store.is_shared() {
            return Ok(local);
        }
        let others = store.replica_instances(environment, &self.replica, self.silence)?;
        Ok(merge(local, others))
    }

    /// How many instances of `environment` have a stream open here.
    pub fn connected(&self, environment: &str) -> usize {
        self.lock()
            .instances
            .values()
            .filter(|i| i.environment == environment && i.streams > 0)
            .count()
    }

    /// The instances that changed since they were last taken, at most [`MOST_WRITTEN`]; they
    /// count as written.
    fn unwritten(&self) -> Vec<Instance> {
        let mut local = self.lock();
        let keys: Vec<Key> = local.unwritten.iter().take(MOST_WRITTEN).cloned().collect();
        let mut taken = Vec::with_capacity(keys.len());
        for key in keys {
            local.unwritten.remove(&key);
            if let Some(instance) = local.instances.get(&key) {
                taken.push(instance.clone());
            }
        }
        taken
    }

    /// Whether some instances changed since they were last taken.
    fn has_unwritten(&self) -> bool {
        !self.lock().unwritten.is_empty()
    }

    /// Marks `instances`, taken by [`unwritten`](Self::unwritten) but not written, changed
    /// again.
    fn unwritten_again(&self, instances: &[Instance]) {
        let mut local = self.lock();
        for i in instances {
            let key = (i.environment.clone(), i.identity.instance_id.clone());
            if local.instances.contains_key(&key) {
                local.changed(&key);
            }
        }
    }

    /// Marks every instance changed: the store has none of them.
    fn all_unwritten(&self) {
        let mut local = self.lock();
        let keys: Vec<Key> = local.instances.keys().cloned().collect();
        local.unwritten.extend(keys);
    }
}

/// Every SDK instance of `environment`, in the order `ListClients` lists them ([`sort`]):
/// this flagstaffd's, and on a shared `store` every other replica's too, merged
/// ([`Clients::everywhere`], on a blocking thread).
pub async fn of_environment<S: Store>(
    clients: &Arc<Clients>,
    store: &Arc<S>,
    environment: &str,
) -> Result<Vec<Instance>, crate::error::ServerError> {
    let mut instances = if store.is_shared() {
        let (clients, store, environment) =
            (clients.clone(), store.clone(), environment.to_owned());
        tokio::task::spawn_blocking(move || clients.everywhere(&*store, &environment))
            .await
            .map_err(|e| {
                crate::error::ServerError::Unavailable(format!("a blocking task failed: {e}"))
            })??
    } else {
        clients.list(environment)
    };
    sort(&mut instances);
    Ok(instances)
}

/// `instances` as people read them: connected ones first, then by application, host and
/// instance id.
pub fn sort(instances: &mut [Instance]) {
    instances.sort_by(|a, b| {
        (
            b.streams > 0,
            &a.identity.application,
            &a.identity.host,
            &a.identity.instance_id,
        )
            .cmp(&(
                a.streams > 0,
                &b.identity.application,
                &b.identity.host,
                &b.identity.instance_id,
            ))
    });
}

/// Whether `instance` has applied `revision` of the environment in its epoch `epoch` (a
/// revision of an environment of the same name deleted and created again does not count).
pub fn has_applied(instance: &Instance, epoch: &str, revision: u64) -> bool {
    instance.epoch == epoch && instance.applied_revision >= revision
}

/// One instance per instance id of `local` (this replica's instances of an environment) and
/// `others` (other replicas' of it, one per replica an instance used), by instance id. An
/// instance is connected while a stream of it is open on any replica (its streams summed),
/// and otherwise disconnected since its last stream closed; it is who it said it was in its
/// latest connection, and holds the revision it acknowledged last.
pub fn merge(local: Vec<Instance>, others: Vec<Instance>) -> Vec<Instance> {
    let mut merged: BTreeMap<String, Instance> = BTreeMap::new();
    for instance in local.into_iter().chain(others) {
        match merged.entry(instance.identity.instance_id.clone()) {
            Entry::Vacant(entry) => {
                entry.insert(instance);
            }
            Entry::Occupied(mut entry) => {
                let known = entry.get().clone();
                entry.insert(combine(known, instance));
            }
        }
    }
    merged.into_values().collect()
}

/// One instance as two replicas know it.
fn combine(a: Instance, b: Instance) -> Instance {
    let streams = a.streams.saturating_add(b.streams);
    // The connection that counts: an open one before a closed one, then the later.
    let (latest, other) = match (b.streams > 0, b.connected_ms) > (a.streams > 0, a.connected_ms) {
        true => (b, a),
        false => (a, b),
    };
    let acknowledged = match (other.applied_ms, other.applied_revision)
        > (latest.applied_ms, latest.applied_revision)
    {
        true => &other,
        false => &latest,
    };
    let (epoch, applied_revision, applied_ms) = (
        acknowledged.epoch.clone(),
        acknowledged.applied_revision,
        acknowledged.applied_ms,
    );
    let disconnected_ms = match streams {
        0 => latest.disconnected_ms.max(other.disconnected_ms),
        _ => None,
    };
    Instance {
        streams,
        disconnected_ms,
        epoch,
        applied_revision,
        applied_ms,
        ..latest
    }
}

/// Writes this replica's instances to `store`, which other flagstaffd processes share, until
/// `stopped` completes: those whose state changed, at most every [`WRITE_EVERY`], in one
/// statement; its record at least every sixth of its silence, changes or not, so that the
/// others do not take it for gone. Once `stopped` has completed (after the streams closed at
/// shutdown), it writes what changed last. Every [`PRUNE_EVERY`] it removes from the store
/// what has been gone for 24 hours.
pub async fn share<S: Store>(
    clients: Arc<Clients>,
    store: Arc<S>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut changes = clients.changes();
    let alive_every = (clients.silence / 6).max(WRITE_EVERY);
    let mut writer = Writer {
        clients,
        store,
        failing: false,
    };
    let mut pruned: Option<tokio::time::Instant> = None;
    loop {
        let written = tokio::time::Instant::now();
        writer.write().await;
        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            writer.prune().await;
            pruned = Some(tokio::time::Instant::now());
        }
        // More than one write holds waits only for the pace of writes.
        let more = !writer.failing && writer.clients.has_unwritten();
        if !more {
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(written + alive_every) => {}
                () = &mut stopped => break,
            }
        }
        // What changes meanwhile goes in the same write.
        tokio::select! {
            () = tokio::time::sleep_until(written + WRITE_EVERY) => {}
            () = &mut stopped => break,
        }
    }
    writer.write().await;
}

/// [`share`]'s writes.
struct Writer<S> {
    clients: Arc<Clients>,
    store: Arc<S>,
    /// Whether the last write failed: said once per outage.
    failing: bool,
}

impl<S: Store> Writer<S> {
    /// Writes the instances that changed, and the replica's record.
    async fn write(&mut self) {
        let batch = self.clients.unwritten();
        let (store, replica) = (self.store.clone(), self.clients.replica.clone());
        let written = tokio::task::spawn_blocking(move || {
            let written = store.put_instances(&replica, &batch);
            (batch, written)
        })
        .await;
        let failure = match written {
            Ok((_, Ok(fresh))) => {
                if fresh {
                    // The first write, or the store forgot this replica after a long silence.
                    self.clients.all_unwritten();
                }
                if self.failing {
                    tracing::info!("SDK instances are written to the database again");
                }
                self.failing = false;
                return;
            }
            Ok((batch, Err(e))) => {
                self.clients.unwritten_again(&batch);
                e.to_string()
            }
            Err(e) => {
                self.clients.all_unwritten();
                e.to_string()
            }
        };
        if !self.failing {
            tracing::warn!(
                error = failure,
                "cannot write SDK instances to the database; other flagstaffd show them \
                 disconnected if this lasts {:?}",
                self.clients.silence
            );
        }
        self.failing = true;
    }

    /// Removes what has been gone for 24 hours.
    async fn prune(&self) {
        let store = self.store.clone();
        let remember = Duration::from_millis(REMEMBER_MS);
        match tokio::task::spawn_blocking(move || store.prune_instances(remember)).await {
            Ok(Ok(())) => {}
            // Tried again at the next prune; a failing database is reported by the writes.
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot prune SDK instances"),
            Err(e) => tracing::error!(error = %e, "pruning SDK instances failed"),
        }
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
        let mut local = self.clients.lock();
        if let Some(instance) = local.instances.get_mut(&self.key) {
            instance.epoch = epoch.to_owned();
            instance.applied_revision = revision;
            instance.applied_ms = now_ms();
            local.changed(&self.key);
        }
        drop(local);
        self.clients.changed();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut local = self.clients.lock();
        if let Some(instance) = local.instances.get_mut(&self.key) {
            instance.streams = instance.streams.saturating_sub(1);
            if instance.streams == 0 {
                instance.disconnected_ms = Some(now_ms());
            }
            local.changed(&self.key);
        }
        drop(local);
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

    #[test]
    fn changed_instances_are_taken_once_for_writing() {
        let clients = Arc::new(Clients::new());
        let a = clients.connect("prod", identity("a"), "sdk");
        assert_eq!(clients.unwritten().len(), 1);
        assert!(clients.unwritten().is_empty(), "taken");
        a.applied("e1", 3);
        let taken = clients.unwritten();
        assert_eq!(taken[0].applied_revision, 3);
        clients.unwritten_again(&taken);
        assert_eq!(
            clients.unwritten().len(),
            1,
            "a failed write is written again"
        );
        drop(a);
        assert!(clients.unwritten()[0].disconnected_ms.is_some());
    }

    fn instance(id: &str, streams: u32, connected_ms: u64, applied: (u64, u64)) -> Instance {
        Instance {
            environment: "prod".into(),
            identity: identity(id),
            token: format!("token-{connected_ms}"),
            streams,
            connected_ms,
            disconnected_ms: (streams == 0).then_some(connected_ms + 1),
            epoch: "e1".into(),
            applied_revision: applied.0,
            applied_ms: applied.1,
        }
    }

    #[test]
    fn an_instance_on_several_replicas_is_one_connected_while_any_stream_is_open() {
        // "a" moved from this replica to another, and applied more there; "b" is here alone;
        // "c" is on another replica alone.
        let local = vec![
            instance("a", 0, 100, (5, 150)),
            instance("b", 1, 100, (5, 150)),
        ];
        let others = vec![
            instance("a", 1, 200, (7, 250)),
            instance("c", 0, 300, (6, 310)),
        ];
        let merged = merge(local, others);
        let ids: Vec<&str> = merged
            .iter()
            .map(|i| i.identity.instance_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let a = &merged[0];
        assert_eq!((a.streams, a.disconnected_ms), (1, None));
        assert_eq!((a.applied_revision, a.connected_ms), (7, 200));
        assert_eq!(a.token, "token-200", "who it said it was last");

        // Closed everywhere: disconnected since its last stream closed, and still at the
        // revision it acknowledged last, wherever that was.
        let merged = merge(
            vec![instance("a", 0, 200, (9, 400))],
            vec![instance("a", 0, 300, (8, 350))],
        );
        assert_eq!(merged.len(), 1);
        assert_eq!(
            (merged[0].streams, merged[0].disconnected_ms),
            (0, Some(301))
        );
        assert_eq!(merged[0].applied_revision, 9);
    }
}
