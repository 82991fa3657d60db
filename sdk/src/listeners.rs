//! Change listeners: callbacks told which flags changed, run on a thread of their own.
//!
//! The stream task (or a [`TestData`](crate::TestData) change) swaps the new snapshot in,
//! acknowledges it, and only then works out which flags changed, if anyone listens. It hands
//! them to the listeners' thread through a bounded queue without ever waiting: when the queue
//! is full (a callback is slow or stuck), the notification is dropped, counted in
//! [`Stats::dropped_notifications`](crate::Stats) and logged. Evaluations never touch any of it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use flagstaff_engine::Snapshot;

/// Updates (each one revision's changed flags) waiting for the listeners' thread, at most.
pub const QUEUE_CAPACITY: usize = 256;

/// A flag that may now evaluate differently: it was added, edited or removed, or a segment or
/// prerequisite flag it uses changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagChange {
    /// The flag's key.
    pub key: String,
    /// The revision that changed it: the server's revision, or for a
    /// [`TestData`](crate::TestData) source the number of its changes so far.
    pub revision: u64,
    /// Whether the flag no longer exists (evaluations serve the caller's default).
    pub removed: bool,
}

/// The flags one revision changed, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) revision: u64,
    pub(crate) flags: Vec<FlagChange>,
}

type EachFlag = Arc<dyn Fn(&FlagChange) + Send + Sync>;
type EachUpdate = Arc<dyn Fn(&Changes) + Send + Sync>;

#[derive(Clone)]
enum Callback {
    /// Called once per changed flag, or only for one flag's changes.
    Flag { only: Option<String>, f: EachFlag },
    /// Called once per revision with all its changes.
    #[cfg_attr(not(feature = "openfeature"), allow(dead_code))]
    Update(EachUpdate),
}

#[derive(Default)]
struct Registry {
    /// How many listeners are registered: with none, no change is worked out.
    active: AtomicUsize,
    next_id: AtomicU64,
    entries: Mutex<Vec<(u64, Callback)>>,
}

impl Registry {
    fn entries(&self) -> Vec<(u64, Callback)> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A client's listeners and the queue to their thread, started with the first listener.
#[derive(Default)]
pub(crate) struct Listeners {
    registry: Arc<Registry>,
    queue: OnceLock<SyncSender<Changes>>,
    pub(crate) dropped: AtomicU64,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("active", &self.registry.active.load(Ordering::Relaxed))
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

impl Listeners {
    /// Registers a callback for every changed flag, or for flag `only`.
    pub(crate) fn on_flag(
        &self,
        only: Option<String>,
        f: impl Fn(&FlagChange) + Send + Sync + 'static,
    ) -> Subscription {
        self.register(Callback::Flag {
            only,
            f: Arc::new(f),
        })
    }

    /// Registers a callback for every revision that changed flags.
    #[cfg_attr(not(feature = "openfeature"), allow(dead_code))]
    pub(crate) fn on_update(&self, f: impl Fn(&Changes) + Send + Sync + 'static) -> Subscription {
        self.register(Callback::Update(Arc::new(f)))
    }

    fn register(&self, callback: Callback) -> Subscription {
        self.queue.get_or_init(|| self.start());
        let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, callback));
        self.registry.active.fetch_add(1, Ordering::Release);
        Subscription {
            registry: Arc::downgrade(&self.registry),
            id,
        }
    }

    /// Starts the listeners' thread. It ends when the client's last part is dropped, which
    /// closes the queue.
    fn start(&self) -> SyncSender<Changes> {
        let (tx, rx) = mpsc::sync_channel::<Changes>(QUEUE_CAPACITY);
        let registry = self.registry.clone();
        let spawned = std::thread::Builder::new()
            .name("flagstaff-listeners".to_owned())
            .spawn(move || {
                for changes in rx {
                    dispatch(&registry, &changes);
                }
            });
        if let Err(e) = spawned {
            // The receiver is gone with the closure, so every notification counts as dropped.
            tracing::error!(error = %e, "flagstaff cannot start its change listeners' thread");
        }
        tx
    }

    /// Tells the listeners which flags `after` (the given revision) changed from `before`.
    /// Never waits: with the queue full, the notification is dropped and counted.
    pub(crate) fn changed(&self, before: Option<&Snapshot>, after: &Snapshot, revision: u64) {
        if self.registry.active.load(Ordering::Acquire) == 0 {
            return;
        }
        let (Some(before), Some(queue)) = (before, self.queue.get()) else {
            return;
        };
        let flags: Vec<FlagChange> = after
            .changed_flags(before)
            .into_iter()
            .map(|key| FlagChange {
                removed: after.flag(&key).is_none(),
                key,
                revision,
            })
            .collect();
        if flags.is_empty() {
            return;
        }
        let count = flags.len() as u64;
        match queue.try_send(Changes { revision, flags }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let total = self.dropped.fetch_add(count, Ordering::Relaxed) + count;
                tracing::warn!(
                    revision,
                    flags = count,
                    dropped_in_all = total,
                    "flagstaff change listeners are behind: notifications dropped"
                );
            }
        }
    }
}

/// Calls every listener interested in `changes`; a listener that panics is logged and kept.
fn dispatch(registry: &Registry, changes: &Changes) {
    for (id, callback) in registry.entries() {
        let call = || match &callback {
            Callback::Update(f) => f(changes),
            Callback::Flag { only: None, f } => changes.flags.iter().for_each(|c| f(c)),
            Callback::Flag { only: Some(key), f } => changes
                .flags
                .iter()
                .filter(|c| &c.key == key)
                .for_each(|c| f(c)),
        };
        if catch_unwind(AssertUnwindSafe(call)).is_err() {
            tracing::error!(
                listener = id,
                revision = changes.revision,
                "a flagstaff change listener panicked"
            );
        }
    }
}

/// A registered change listener; dropping it unregisters the callback.
#[must_use = "the listener is unregistered when the subscription is dropped"]
#[derive(Debug)]
pub struct Subscription {
    registry: Weak<Registry>,
    id: u64,
}

impl Subscription {
    /// Keeps the listener registered for as long as the client lives.
    pub fn detach(mut self) {
        self.registry = Weak::new();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut entries = registry.entries.lock().unwrap_or_else(|p| p.into_inner());
        let before = entries.len();
        entries.retain(|(id, _)| *id != self.id);
        if entries.len() < before {
            registry.active.fetch_sub(1, Ordering::Release);
        }
    }
}
