//! What a client, its clones and its background task share ([`Core`]): the snapshot served
//! and its generation, the client's status and counters, its change listeners, its usage
//! metrics, and where the last good snapshot is cached.
//!
//! Every way of changing the snapshot goes through [`Core::swap_snapshot`] (the Watch stream
//! through [`Core::publish`]), which moves the generation on, so that evaluating threads load
//! the new snapshot at their next evaluation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use flagstaff_engine::Snapshot;
use tokio::sync::{mpsc, watch};

use crate::cache;
use crate::listeners::Listeners;
use crate::status::{Source, State, Status};
use crate::usage::{Flush, Usage};

/// Generations are drawn from one counter, so no two clients (nor two snapshots of one) share
/// one: a thread's entry matches a client's generation only if it is that client's entry for
/// its current snapshot. 0 is never drawn.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// What the client and its background task share.
#[derive(Debug)]
pub(crate) struct Core {
    /// Readers load it without a lock; an update builds a new snapshot off the hot path and
    /// swaps it in (with [`Core::swap_snapshot`]), so no reader ever sees half of a change.
    /// `None` until there is data. Evaluating threads keep the snapshot of the current
    /// generation in a thread-local entry (`evaluation::per_thread`) and load it again only
    /// after a swap.
    pub(crate) snapshot: ArcSwapOption<Snapshot>,
    /// A new value, unique across clients, after every snapshot swap: an evaluating thread
    /// whose copy of the snapshot is of another generation loads it again.
    generation: AtomicU64,
    /// Tells this client's entries apart in each thread's list.
    pub(crate) id: u64,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) stats: SyncCounters,
    pub(crate) listeners: Listeners,
    /// Evaluation counts and events, until reported.
    pub(crate) usage: Usage,
    /// Why the last attempt to get the server's data failed; `None` once data arrives.
    /// [`Client::wait_ready`](crate::Client::wait_ready) reports it.
    pub(crate) failure: watch::Sender<Option<Failure>>,
    /// Where the last good snapshot is kept between runs, if anywhere.
    cache: Option<cache::Writer>,
}

/// Why an attempt to get the server's data failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The error and its causes.
    pub(crate) reason: String,
    /// The server refused the sdk key: waiting longer will not help.
    pub(crate) refused: bool,
}

/// The [`Stats`](crate::Stats) the background task counts.
#[derive(Debug, Default)]
pub(crate) struct SyncCounters {
    pub(crate) snapshots: AtomicU64,
    pub(crate) deltas: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) failovers: AtomicU64,
}

impl Core {
    pub(crate) fn new(
        snapshot: Option<Arc<Snapshot>>,
        status: Status,
        cache: Option<cache::Writer>,
        flushes: Option<mpsc::Sender<Flush>>,
    ) -> Core {
        static CLIENTS: AtomicU64 = AtomicU64::new(1);
        Core {
            snapshot: ArcSwapOption::new(snapshot),
            generation: AtomicU64::new(GENERATIONS.fetch_add(1, Ordering::Relaxed)),
            id: CLIENTS.fetch_add(1, Ordering::Relaxed),
            status: watch::Sender::new(status),
            stats: SyncCounters::default(),
            listeners: Listeners::default(),
            usage: Usage::new(flushes),
            failure: watch::Sender::new(None),
            cache,
        }
    }

    /// Serves `snapshot` from now on; returns the one it replaces.
    pub(crate) fn swap_snapshot(&self, snapshot: Arc<Snapshot>) -> Option<Arc<Snapshot>> {
        let before = self.snapshot.swap(Some(snapshot));
        // After the store: a thread that sees the new generation loads the new snapshot.
        self.advance();
        before
    }

    /// The generation of the snapshot served. Acquire: a reader that sees a generation sees
    /// the snapshot stored before it was bumped.
    #[inline(always)]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// After a snapshot swap: threads reload the snapshot at their next evaluation.
    ///
    /// A read-modify-write with release ordering, so that every update of the generation
    /// continues the release sequences of those before it: a reader that sees the last value
    /// sees every swap made before any advance, also when two swaps race.
    fn advance(&self) {
        let next = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        self.generation.swap(next, Ordering::AcqRel);
    }

    /// Records that the server confirmed (by a heartbeat) that the client holds its current
    /// `revision` of `epoch`: after a resume that missed nothing, the client is ready again.
    pub(crate) fn confirm(&self, epoch: &str, revision: u64) {
        self.status.send_if_modified(|s| {
            if s.state == State::Ready || s.epoch != epoch || s.revision != revision {
                return false;
            }
            tracing::info!(revision, epoch, "flagstaff client ready: up to date");
            self.failure.send_if_modified(|f| f.take().is_some());
            s.state = State::Ready;
            s.source = Source::Server;
            true
        });
    }

    /// Serves `snapshot`, the server's `revision` of `epoch`, from now on; returns the snapshot
    /// it replaces, for [`Listeners::changed`].
    pub(crate) fn publish(
        &self,
        snapshot: Arc<Snapshot>,
        epoch: &str,
        revision: u64,
    ) -> Option<Arc<Snapshot>> {
        let before = self.swap_snapshot(snapshot.clone());
        self.failure.send_if_modified(|f| f.take().is_some());
        if let Some(cache) = &self.cache {
            cache.save(snapshot, epoch, revision);
        }
        self.status.send_if_modified(|s| {
            let became_ready = s.state != State::Ready;
            if became_ready {
                tracing::info!(revision, epoch, "flagstaff client ready");
            }
            s.state = State::Ready;
            s.source = Source::Server;
            if s.epoch != epoch {
                s.epoch = epoch.to_owned();
            }
            s.revision = revision;
            true
        });
        before
    }
}
