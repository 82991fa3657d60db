//! Environments in memory: each one's compiled snapshot and revision, read without locks and
//! replaced after every committed change.
//!
//! Every write goes through [`Environments::write`]: it takes the environment's writer lock,
//! builds the change against the current snapshot, validates it by compiling the next
//! snapshot, commits it durably, and only then publishes the next snapshot. So readers see a
//! change only once it is on disk, and a change that fails anywhere leaves both the store and
//! memory as they were. Writes block (compilation, sled, fsync): async callers run them in
//! `spawn_blocking`.
//!
//! Expected versions are checked by [`crate::versions`]. What a commit does to rollout plans
//! (a manual edit pauses its flag's running plan) it asks of `crate::rollout::hook` alone;
//! the plans' operations (`crate::rollout`) build on this module, not the other way round.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use flagstaff_engine::{ChangeSet, Document, Flag, KeyPatch, Segment, Snapshot};
use flagstaff_proto::watch::{snapshot_chunks, WatchMessage, CHUNK_BUDGET};

use crate::clock::{Clock, SystemClock};
use crate::error::ServerError;
use crate::feed::{Event, Feed, DEFAULT_FEED_CAPACITY};
use crate::rollout::hook::{made_no_revision, paused_by_edit};
use crate::rollout::no_plan;
use crate::storage::{
    now_ms, random_id, AuditChange, AuditEntry, BackupRecord, Change, Damage, EnvironmentRecord,
    FlagUsage, Leadership, Lease, RolloutRecord, Store, StoreError,
};
use crate::versions::{check_versions, At};

/// An environment's state as readers see it.
#[derive(Debug)]
pub struct Current {
    /// The revision of the last committed change.
    pub revision: u64,
    /// The documents as of `revision`, compiled.
    pub snapshot: Arc<Snapshot>,
    /// The snapshot's Watch chunks, encoded when a stream first needs them.
    chunks: tokio::sync::OnceCell<Box<[WatchMessage]>>,
}

impl Current {
    /// The state at `revision`.
    pub fn new(revision: u64, snapshot: Arc<Snapshot>) -> Current {
        Current {
            revision,
            snapshot,
            chunks: tokio::sync::OnceCell::new(),
        }
    }

    /// The SnapshotChunk messages of the snapshot, encoded by the first stream that sends a
    /// snapshot at this revision and shared by every stream after it: a fleet reconnecting at
    /// once costs one encoding, not one per instance. The encoding runs on the blocking pool
    /// (a large environment takes milliseconds), and the streams that ask meanwhile wait for
    /// it without holding a runtime thread.
    pub async fn snapshot_chunks(&self) -> &[WatchMessage] {
        self.chunks
            .get_or_init(|| async {
                let snapshot = self.snapshot.clone();
                tokio::task::spawn_blocking(move || encode_chunks(&snapshot))
                    .await
                    // Only if the blocking pool is shutting down: encode here instead.
                    .unwrap_or_else(|_| encode_chunks(&self.snapshot))
            })
            .await
    }
}

/// The SnapshotChunk messages of `snapshot`, encoded.
fn encode_chunks(snapshot: &Snapshot) -> Box<[WatchMessage]> {
    snapshot_chunks(snapshot.flags(), snapshot.segments(), CHUNK_BUDGET)
        .map(|chunk| WatchMessage::encoded(&chunk))
        .collect()
}

/// One environment.
#[derive(Debug)]
pub struct Environment {
    /// Its key.
    pub key: String,
    /// Its epoch (see [`EnvironmentRecord::epoch`]).
    pub epoch: String,
    /// Whether writes need confirmation.
    pub protected: bool,
    /// When it was created, in Unix milliseconds.
    pub created_ms: u64,
    current: ArcSwap<Current>,
    /// Changes committed since this process loaded or created the environment, for the
    /// metrics endpoint. An atomic, so counting costs a write nothing and reading it takes
    /// no lock; it only ever grows (it restarts at 0 with the process, as Prometheus counters
    /// do).
    writes: AtomicU64,
    /// How many plan writes the store had counted for the environment when this flagstaffd
    /// last read its plans under the environment's lock ([`Locked::plan_writes`]).
    plan_writes: AtomicU64,
    /// Serialises writes so each is built against the state it commits onto. A std mutex: it
    /// is held on a blocking thread for one write and never across an await.
    writer: Mutex<()>,
    /// Every committed revision, for Watch streams and audit tails.
    feed: Feed,
    /// Each flag's most recent rollout plan, as stored. Changed only by a writer (holding
    /// `writer`), after the store has it.
    rollouts: Mutex<BTreeMap<String, RolloutRecord>>,
    /// How SDKs have used each flag, as reported; written through to the store.
    usage: Mutex<HashMap<String, FlagUsage>>,
}

impl Environment {
    /// Reads an environment's documents, rollout plans and usage from `store` and compiles
    /// its snapshot; the first record that cannot be read (or documents that no longer
    /// validate together) is the damage that keeps it from being served.
    fn load<S: Store>(
        store: &S,
        record: &EnvironmentRecord,
        feed_capacity: usize,
    ) -> Result<Environment, Damage> {
        let key = record.key.as_str();
        let damage = |err: StoreError| {
            Damage::of(Some(key), &err).unwrap_or_else(|| Damage {
                environment: Some(key.to_owned()),
                record: format!("environments/{key}"),
                detail: err.to_string(),
            })
        };
        let docs = store.documents(key).map_err(damage)?;
        // The revision the documents are at, which a commit made since `record` was read
        // (through another flagstaffd on the database) may have moved.
        let record = &EnvironmentRecord {
            revision: docs.revision,
            ..record.clone()
        };
        let doc = Document {
            environment: key.to_owned(),
            flags: docs.flags,
            segments: docs.segments,
        };
        let snapshot = Snapshot::from_document(doc).map_err(|e| Damage {
            environment: Some(key.to_owned()),
            record: format!("environments/{key}"),
            detail: format!("its documents do not validate together: {e}"),
        })?;
        let env = Environment::new(record, snapshot, feed_capacity);
        *env.lock_rollouts() = store
            .rollouts(key)
            .map_err(damage)?
            .into_iter()
            .map(|plan| (plan.flag.clone(), plan))
            .collect();
        *env.lock_usage() = store.usage(key).map_err(damage)?.into_iter().collect();
        Ok(env)
    }

    /// The current revision and snapshot, without locking.
    pub fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    /// How many changes were committed to this environment since this process loaded or
    /// created it. A write that changed nothing, or failed, is not counted.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The feed of revisions committed from now on.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Each flag's most recent rollout plan, by flag key.
    pub fn rollouts(&self) -> BTreeMap<String, RolloutRecord> {
        self.lock_rollouts().clone()
    }

    /// The most recent rollout plan of `flag`.
    pub fn rollout(&self, flag: &str) -> Option<RolloutRecord> {
        self.lock_rollouts().get(flag).cloned()
    }

    /// How SDKs have used flag `key`; `None` when no SDK has reported an evaluation of it.
    pub fn usage(&self, key: &str) -> Option<FlagUsage> {
        self.lock_usage().get(key).copied()
    }

    pub(crate) fn lock_usage(&self) -> std::sync::MutexGuard<'_, HashMap<String, FlagUsage>> {
        // Entries are replaced whole.
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_rollouts(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, RolloutRecord>> {
        // Records are replaced whole: a panicking holder left the map consistent.
        self.rollouts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who is writing, why, and whether a protected environment's write was confirmed.
#[derive(Debug, Clone, Copy)]
pub struct WriteContext<'a> {
    /// The environment written to.
    pub environment: &'a str,
    /// The token name, for the audit log.
    pub actor: &'a str,
    /// What made the change, for the audit log: the Admin rpc's name, or a rollout step's.
    pub operation: &'a str,
    /// The reason given, for the audit log.
    pub comment: &'a str,
    /// The caller confirmed a write to a protected environment.
    pub confirmed: bool,
    /// The write is a duty of the leader (a scheduled step, a guard's decision): it commits
    /// only while this flagstaffd holds the leader's lease (DESIGN.md section 7).
    pub duty: bool,
}

/// What a committed write produced (or, from [`Environments::plan`], would produce).
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The environment's revision after the write (unchanged when the write changed nothing,
    /// and for a plan).
    pub revision: u64,
    /// The flags written, with their new versions.
    pub flags: Vec<Flag>,
    /// The segments written, with their new versions.
    pub segments: Vec<Segment>,
    /// Every document created, replaced or deleted, as the audit entry records it: flags
    /// first, then segments, each by key. Empty when the write changed nothing.
    pub changes: Vec<AuditChange>,
    /// The flags whose running rollout plan the write paused, by editing them by hand.
    pub paused_rollouts: Vec<String>,
}

impl Committed {
    /// Whether the write changed anything.
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }

    fn nothing(revision: u64) -> Committed {
        Committed {
            revision,
            flags: Vec::new(),
            segments: Vec::new(),
            changes: Vec::new(),
            paused_rollouts: Vec::new(),
        }
    }
}

/// A change built, version-checked and validated against an environment's current state,
/// ready to commit.
struct Staged {
    /// The revision it makes.
    revision: u64,
    changes: ChangeSet,
    next: Snapshot,
    audit: Vec<AuditChange>,
}

/// Every environment, backed by a store.
#[derive(Debug)]
pub struct Environments<S> {
    store: Arc<S>,
    /// Held only to look up, add or remove an environment, never during a write.
    map: RwLock<HashMap<String, Arc<Environment>>>,
    /// How many recent revisions each environment's feed keeps in memory.
    feed_capacity: usize,
    /// The time rollout plans go by (a manual clock in tests).
    clock: Arc<dyn Clock>,
    /// Woken whenever a rollout plan changes, so the scheduler looks again.
    rollouts_changed: Arc<tokio::sync::Notify>,
    /// Whether this flagstaffd holds the leader's lease, once it follows a store other
    /// processes write; unset, it leads.
    leadership: Mutex<Option<Leadership>>,
    /// Environments not served because a record of theirs could not be read at start, with
    /// the first such record (DESIGN.md section 4a). Fixed at start: `flagstaffd repair`
    /// works on a stopped server.
    damaged: BTreeMap<String, Damage>,
}

/// How long [`Environments::reach`] may take.
pub const REACH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

impl<S: Store> Environments<S> {
    /// Loads every environment from `store` and compiles its snapshot.
    pub fn load(store: Arc<S>) -> Result<Environments<S>, ServerError> {
        Environments::load_with(store, DEFAULT_FEED_CAPACITY)
    }

    /// Like [`load`](Self::load), keeping the last `feed_capacity` revisions of each
    /// environment in memory for Watch streams.
    pub fn load_with(store: Arc<S>, feed_capacity: usize) -> Result<Environments<S>, ServerError> {
        Environments::load_with_clock(store, feed_capacity, Arc::new(SystemClock))
    }

    /// Like [`load_with`](Self::load_with), with rollout plans going by `clock`.
    pub fn load_with_clock(
        store: Arc<S>,
        feed_capacity: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Environments<S>, ServerError> {
        let mut map = HashMap::new();
        let mut damaged = BTreeMap::new();
        for (key, record) in store.environment_records()? {
            let loaded = record.and_then(|record| {
                Environment::load(&*store, &record, feed_capacity).map(|env| (record, env))
            });
            match loaded {
                Ok((record, env)) => {
                    map.insert(record.key.clone(), Arc::new(env));
                }
                Err(damage) => {
                    tracing::error!(
                        environment = %key,
                        record = %damage.record,
                        error = %damage.detail,
                        "a damaged record: the environment is not served; `flagstaffd check` \
                         lists what is damaged and `flagstaffd repair` restores it"
                    );
                    damaged.insert(key, damage);
                }
            }
        }
        Ok(Environments {
            store,
            map: RwLock::new(map),
            feed_capacity,
            clock,
            rollouts_changed: Arc::new(tokio::sync::Notify::new()),
            leadership: Mutex::new(None),
            damaged,
        })
    }

    /// The environments not served because a record of theirs is damaged, each with the first
    /// damaged record found.
    pub fn damaged(&self) -> &BTreeMap<String, Damage> {
        &self.damaged
    }

    /// The clock rollout plans go by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Runs the exactly-one duties only while `leadership` says this flagstaffd holds the
    /// leader's lease (several flagstaffd on one database).
    pub fn follow_leadership(&self, leadership: Leadership) {
        *self.lock_leadership() = Some(leadership);
    }

    /// Stops leading for good (flagstaffd stops): the lease is given up once nothing else
    /// waits on it, so another flagstaffd takes it at once.
    pub fn resign(&self) {
        let mut leadership = self.lock_leadership();
        if leadership.is_some() {
            *leadership = Some(tokio::sync::watch::channel(None).1);
        }
    }

    fn lock_leadership(&self) -> std::sync::MutexGuard<'_, Option<Leadership>> {
        self.leadership.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this flagstaffd holds the leader's lease, as far as it knows, and so runs the
    /// duties; always, unless it follows a leadership.
    pub fn leads(&self) -> bool {
        self.lease().is_ok()
    }

    /// The leadership followed, if any: what the duties wait on.
    pub fn leadership(&self) -> Option<Leadership> {
        self.lock_leadership().clone()
    }

    /// The lease a duty's write carries: `None` when there is none to check (one flagstaffd
    /// alone); [`StoreError::LeaseLost`] when another flagstaffd leads.
    fn lease(&self) -> Result<Option<Lease>, ServerError> {
        let Some(held) = self.lock_leadership().as_ref().map(|l| *l.borrow()) else {
            return Ok(None);
        };
        held.map(Some).ok_or_else(|| StoreError::LeaseLost.into())
    }

    /// Notified whenever a rollout plan changes.
    pub fn rollouts_changed(&self) -> &Arc<tokio::sync::Notify> {
        &self.rollouts_changed
    }

    /// The store behind these environments.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Environment>>> {
        // The map is only ever replaced entry by entry; a writer that panicked left it whole.
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Environment>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The environment `key`.
    pub fn get(&self, key: &str) -> Result<Arc<Environment>, ServerError> {
        if let Some(env) = self.read_map().get(key) {
            return Ok(env.clone());
        }
        Err(match self.damaged.get(key) {
            Some(damage) => ServerError::Unavailable(format!(
                "environment {key:?} is not served: its record {} is damaged ({}); an operator \
                 runs `flagstaffd check` and `flagstaffd repair`",
                damage.record, damage.detail
            )),
            None => ServerError::NotFound(format!("no environment {key:?}")),
        })
    }

    /// Every environment, sorted by key.
    pub fn list(&self) -> Vec<Arc<Environment>> {
        let mut all: Vec<_> = self.read_map().values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Creates an empty environment with a new epoch.
    pub fn create(&self, key: &str, protected: bool) -> Result<Arc<Environment>, ServerError> {
        if !flagstaff_engine::is_valid_key(key) {
            return Err(ServerError::Invalid(format!(
                "{key:?} is not a valid environment key: use 1 to 128 lower-case letters, \
                 digits, '.', '_' or '-', starting with a letter or digit"
            )));
        }
        let record = EnvironmentRecord {
            key: key.to_owned(),
            epoch: random_id(),
            revision: 0,
            protected,
            created_ms: now_ms(),
        };
        self.store
            .create_environment(&record)
            .map_err(|e| match e {
                StoreError::EnvironmentExists(_) => {
                    ServerError::AlreadyExists(format!("environment {key:?} already exists"))
                }
                other => other.into(),
            })?;
        let env = Arc::new(Environment::new(
            &record,
            Snapshot::new(),
            self.feed_capacity,
        ));
        self.write_map().insert(key.to_owned(), env.clone());
        Ok(env)
    }

    /// Runs `work` while the environment `key` exists and cannot be deleted (its writes wait
    /// meanwhile): what `work` creates for it, such as a token, is never left behind by a
    /// deletion that ran at the same time.
    pub fn while_exists<T>(
        &self,
        key: &str,
        work: impl FnOnce() -> Result<T, ServerError>,
    ) -> Result<T, ServerError> {
        let env = self.get(key)?;
        let _writing = env.lock_writer();
        // Deleted (or deleted and created again) while this waited for the lock.
        match self.get(key) {
            Ok(now) if Arc::ptr_eq(&now, &env) => work(),
            Ok(_) | Err(_) => Err(ServerError::NotFound(format!("no environment {key:?}"))),
        }
    }

    /// Deletes an environment that holds no flags and no segments.
    pub fn delete(&self, key: &str) -> Result<(), ServerError> {
        self.delete_with(key, || Ok(()))
    }

    /// Deletes an environment that holds no flags and no segments, running `before` once it
    /// is known to be deletable and before it is deleted (the environment's writes wait
    /// meanwhile); an error from `before` keeps the environment.
    pub fn delete_with(
        &self,
        key: &str,
        before: impl FnOnce() -> Result<(), ServerError>,
    ) -> Result<(), ServerError> {
        let env = self.get(key)?;
        let _writing = env.lock_writer();
        let current = env.current();
        let (flags, segments) = (current.snapshot.len(), current.snapshot.segments().count());
        if flags + segments > 0 {
            return Err(ServerError::Precondition(format!(
                "environment {key:?} still holds {flags} flags and {segments} segments; delete them first"
            )));
        }
        before()?;
        self.store.delete_environment(key)?;
        self.write_map().remove(key);
        env.feed.close();
        Ok(())
    }

    /// Builds a change with `build` from the environment's current snapshot, checks expected
    /// versions, validates, commits durably and publishes it, as one revision.
    ///
    /// Documents in the change that carry a `version` are checked against the current one
    /// (absent means "must not exist yet" when it is 0); every document written gets the new
    /// revision as its version. Documents identical to the current ones are left out; a change
    /// that leaves nothing is not committed and returns the current revision.
    pub fn write(
        &self,
        ctx: WriteContext<'_>,
        build: impl FnOnce(&Snapshot) -> Result<ChangeSet, ServerError>,
    ) -> Result<Committed, ServerError> {
        self.write_with_rollout(ctx, |current, _, _| Ok((build(current)?, None)))
            .map(|(committed, _)| committed)
    }

    /// [`write`](Self::write), where `build` also gets the environment and its current
    /// revision, to check expected versions against.
    pub(crate) fn write_at(
        &self,
        ctx: WriteContext<'_>,
        build: impl FnOnce(&Snapshot, At<'_>) -> Result<ChangeSet, ServerError>,
    ) -> Result<Committed, ServerError> {
        self.write_with_rollout(ctx, |current, _, next| {
            let at = At {
                environment: ctx.environment,
                revision: next - 1,
            };
            Ok((build(current, at)?, None))
        })
        .map(|(committed, _)| committed)
    }

    /// [`write`](Self::write), where `build` also sees the environment's rollout plans and
    /// the revision the change will make, and may return a plan to store in the same
    /// transaction as the change (a plan's step). A change by anyone else to a flag whose
    /// plan is running pauses that plan, in the same transaction. A plan returned with no
    /// change is stored on its own; one whose change turns out to change nothing is stored
    /// with the version the flag has.
    pub(crate) fn write_with_rollout(
        &self,
        ctx: WriteContext<'_>,
        build: impl FnOnce(
            &Snapshot,
            &BTreeMap<String, RolloutRecord>,
            u64,
        ) -> Result<(ChangeSet, Option<RolloutRecord>), ServerError>,
    ) -> Result<(Committed, Option<RolloutRecord>), ServerError> {
        let env = self.get(ctx.environment)?;
        if env.protected && !ctx.confirmed {
            return Err(unconfirmed(&env.key));
        }
        let _writing = env.lock_writer();
        // Held until the commit: nobody else commits to the environment meanwhile. Behind the
        // store (another flagstaffd on the database committed), this one catches up first, so
        // the change is built and validated against what is stored.
        let mut locked = self.store.lock_environment(&env.key)?;
        if locked.epoch() != env.epoch {
            return Err(ServerError::Unavailable(format!(
                "environment {:?} was deleted and created again through another flagstaffd on \
                 the database; nothing was changed: retry",
                env.key
            )));
        }
        if ctx.duty {
            if let Some(lease) = self.lease()? {
                locked.hold(lease);
            }
        }
        let known = env.current().revision;
        if locked.revision() != known {
            let changes = locked.changes_since(known)?;
            self.apply_logged(&env, changes)?;
        }
        // Plans paused or resumed through another flagstaffd make no revision: read again
        // when the store counted plan writes this one has not seen.
        let plan_writes_seen = locked.plan_writes();
        if plan_writes_seen != env.plan_writes.load(Ordering::Acquire) {
            self.reload_rollouts_of(&env)?;
            env.plan_writes.store(plan_writes_seen, Ordering::Release);
        }
        let current = env.current();
        let plans = env.rollouts();
        let mut plan = None;
        let mut changing = false;
        let staged = stage(&current, &env.key, |snapshot| {
            let (changes, p) = build(snapshot, &plans, current.revision + 1)?;
            plan = p;
            changing = !changes.is_empty();
            Ok(changes)
        })?;
        if let Some(plan) = &mut plan {
            plan.version = next_version(&plans, &plan.flag);
        }
        let Some(staged) = staged else {
            let Some(plan) = &mut plan else {
                return Ok((Committed::nothing(current.revision), None));
            };
            if changing {
                let version = current.snapshot.flag(&plan.flag).and_then(|f| f.version);
                made_no_revision(plan, current.revision + 1, version.unwrap_or(0));
            }
            let written = locked.commit_plans(std::slice::from_ref(plan));
            self.plans_written(&env, written, std::slice::from_ref(plan))?;
            self.count_plan_writes(&env, plan_writes_seen, 1);
            return Ok((Committed::nothing(current.revision), Some(plan.clone())));
        };
        let revision = staged.revision;
        let time_ms = now_ms();
        let audit = AuditEntry {
            revision,
            time_ms,
            actor: ctx.actor.to_owned(),
            comment: ctx.comment.to_owned(),
            operation: ctx.operation.to_owned(),
            changes: staged.audit,
        };
        let mut paused = paused_by_edit(
            &plans,
            &staged.changes,
            plan.as_ref().map(|p| p.flag.as_str()),
            ctx.actor,
            revision,
            self.clock.now_ms(),
        );
        for p in &mut paused {
            p.version = next_version(&plans, &p.flag);
        }
        let paused_rollouts: Vec<String> = paused.iter().map(|p| p.flag.clone()).collect();
        let mut plan_writes: Vec<RolloutRecord> = plan.iter().cloned().collect();
        plan_writes.extend(paused);
        let (segments, segment_patches, patched) =
            as_patches(&current.snapshot, staged.changes.segments);
        let change = Change {
            revision,
            flags: staged.changes.flags,
            deleted_flags: staged.changes.deleted_flags,
            segments,
            deleted_segments: staged.changes.deleted_segments,
            segment_patches,
        };
        let committed = locked.commit(&change, &patched, &audit, &plan_writes);
        match committed {
            Ok(()) => {}
            // The store is ahead of this server's memory: a commit whose answer was lost took
            // effect after all. Catch up from the change log, so that the next write starts
            // from what is stored, and have this one retried.
            Err(StoreError::RevisionConflict { actual, .. }) => {
                self.catch_up(&env)?;
                return Err(ServerError::Unavailable(format!(
                    "environment {:?} moved to revision {actual} while this change was \
                     prepared; nothing was changed: retry",
                    env.key
                )));
            }
            Err(err @ StoreError::OutcomeUnknown { .. }) => {
                if let Err(e) = self.catch_up(&env) {
                    tracing::warn!(environment = %env.key, error = %e, "cannot catch up after a commit of unknown outcome; the next write will");
                }
                return Err(err.into());
            }
            Err(err @ StoreError::PlanConflict { .. }) => return Err(self.conflicted(&env, err)),
            Err(err) => return Err(err.into()),
        }
        env.current
            .store(Arc::new(Current::new(revision, Arc::new(staged.next))));
        self.count_plan_writes(&env, plan_writes_seen, plan_writes.len());
        if !plan_writes.is_empty() {
            let mut stored = env.lock_rollouts();
            for p in &plan_writes {
                stored.insert(p.flag.clone(), p.clone());
            }
            drop(stored);
            self.rollouts_changed.notify_one();
        }
        // Relaxed: the count orders nothing else; a scrape racing this write may see either.
        env.writes.fetch_add(1, Ordering::Relaxed);
        let committed = Committed {
            revision,
            flags: change.flags.clone(),
            segments: change.segments.iter().chain(&patched).cloned().collect(),
            changes: audit.changes.clone(),
            paused_rollouts,
        };
        env.feed.publish(Event::new(change, audit));
        Ok((committed, plan))
    }

    /// Brings `environment` up to `revision`, which the store announced as committed (by
    /// another flagstaffd on the database, or this one): the change log above what this one
    /// holds is applied and published. An environment this one does not hold is left alone.
    pub fn follow(&self, environment: &str, revision: u64) -> Result<(), ServerError> {
        let Ok(env) = self.get(environment) else {
            return Ok(());
        };
        if env.current().revision >= revision {
            return Ok(());
        }
        let _writing = env.lock_writer();
        if env.current().revision >= revision {
            return Ok(());
        }
        // Deleted and created again meanwhile: its log is another epoch's.
        if self.store.environment(&env.key)?.epoch != env.epoch {
            drop(_writing);
            return self.follow_all();
        }
        match self.catch_up(&env) {
            // Too far behind for the change log: loaded again whole, which is following.
            Err(_) if self.replaced(&env) => Ok(()),
            caught_up => caught_up,
        }
    }

    /// Whether `env` is no longer the one held under its key (loaded again, or dropped).
    fn replaced(&self, env: &Arc<Environment>) -> bool {
        self.read_map()
            .get(&env.key)
            .is_none_or(|held| !Arc::ptr_eq(held, env))
    }

    /// Whether `environment` is at `revision` or beyond, once brought up to date from the
    /// store if it was not: on a database several flagstaffd share, a client may name a
    /// revision another one committed before this one heard of it. At most
    /// [`REACH_LIMIT`]; false if the revision is not in the store either, or on failure.
    pub async fn reach(self: &Arc<Self>, environment: &str, revision: u64) -> bool {
        let Ok(env) = self.get(environment) else {
            return false;
        };
        if env.current().revision >= revision {
            return true;
        }
        let envs = self.clone();
        let caught_up = tokio::task::spawn_blocking(move || {
            let _writing = env.lock_writer();
            if env.current().revision < revision {
                if let Err(e) = envs.catch_up(&env) {
                    tracing::warn!(environment = %env.key, error = %e, "cannot catch up with the store");
                }
            }
            // The one held now: loaded again, when the change log no longer reached.
            envs.get(&env.key)
                .is_ok_and(|held| held.current().revision >= revision)
        });
        matches!(
            tokio::time::timeout(REACH_LIMIT, caught_up).await,
            Ok(Ok(true))
        )
    }

    /// Compares every environment with the store: those behind it [`follow`](Self::follow)
    /// it, those created by another flagstaffd on the database are loaded, and those deleted
    /// (or deleted and created again, with a new epoch) are dropped, their Watch streams
    /// ended. One that cannot be brought up to date is logged, and the others still are.
    pub fn follow_all(&self) -> Result<(), ServerError> {
        let mut stored = std::collections::HashSet::new();
        for (key, record) in self.store.environment_records()? {
            stored.insert(key.clone());
            let Ok(record) = record else { continue };
            let held = self.read_map().get(&key).cloned();
            match held {
                Some(env) if env.epoch == record.epoch => {
                    if let Err(e) = self.follow(&key, record.revision) {
                        tracing::warn!(environment = %key, error = %e, "cannot catch up with the store");
                    }
                }
                held => self.load_from_store(&record, held.as_ref()),
            }
        }
        let gone: Vec<Arc<Environment>> = self
            .read_map()
            .iter()
            .filter(|(key, _)| !stored.contains(*key))
            .map(|(_, env)| env.clone())
            .collect();
        for env in gone {
            // Created by this flagstaffd after the list was read: still there.
            if !matches!(
                self.store.environment(&env.key),
                Err(StoreError::NoEnvironment(_))
            ) {
                continue;
            }
            let mut map = self.write_map();
            if map.get(&env.key).is_some_and(|now| Arc::ptr_eq(now, &env)) {
                map.remove(&env.key);
                drop(map);
                env.feed.close();
                tracing::info!(environment = %env.key, "an environment deleted in the store is dropped");
            }
        }
        Ok(())
    }

    /// Loads `record`'s environment from the store in place of `held` (`None`: one not held
    /// yet), unless this flagstaffd replaced or added it meanwhile. The Watch streams of the
    /// one replaced end; their clients resume on the new one, from a snapshot if the change
    /// log no longer has what they lack. A record that cannot be read is logged and skipped.
    fn load_from_store(&self, record: &EnvironmentRecord, held: Option<&Arc<Environment>>) {
        let key = &record.key;
        let env = match Environment::load(&*self.store, record, self.feed_capacity) {
            Ok(env) => Arc::new(env),
            Err(damage) => {
                tracing::warn!(environment = %key, record = %damage.record, error = %damage.detail, "cannot load an environment from the store");
                return;
            }
        };
        let mut map = self.write_map();
        let current = map.get(key).cloned();
        if current.as_ref().map(Arc::as_ptr) != held.map(Arc::as_ptr) {
            return;
        }
        map.insert(key.clone(), env);
        drop(map);
        if let Some(old) = held {
            old.feed.close();
        }
        tracing::info!(environment = %key, epoch = %record.epoch, "loaded an environment from the store");
    }

    /// Brings `env`'s memory up to what the store holds: the change-log entries above its
    /// revision are applied in order and published to its Watch streams, each with its audit
    /// entry, and its rollout plans are read again. Called under the environment's writer
    /// lock.
    fn catch_up(&self, env: &Arc<Environment>) -> Result<(), ServerError> {
        let changes = self.store.changes_since(&env.key, env.current().revision)?;
        self.apply_logged(env, changes)
    }

    /// Applies `changes`, the change log above `env`'s revision (`None`: not all of it is
    /// retained), as [`catch_up`](Self::catch_up) does.
    /// When the log no longer has every change above `env`'s revision (this flagstaffd was
    /// cut off from the database for longer than the log's retention), the environment is
    /// loaded again whole in place of `env`, and the caller told to retry on it.
    fn apply_logged(
        &self,
        env: &Arc<Environment>,
        changes: Option<Vec<Change>>,
    ) -> Result<(), ServerError> {
        let current = env.current();
        let Some(changes) = changes else {
            tracing::warn!(environment = %env.key, revision = current.revision, "behind the database by more than its change log keeps: loading the environment again");
            self.load_from_store(&self.store.environment(&env.key)?, Some(env));
            return Err(ServerError::Unavailable(format!(
                "environment {:?} was behind the database by more than its change log keeps, \
                 and is loaded again from it; nothing was changed: retry",
                env.key
            )));
        };
        let Some(last) = changes.last().map(|c| c.revision) else {
            return Ok(());
        };
        let audits: HashMap<u64, AuditEntry> = self
            .store
            .history(&env.key, None, Some(last + 1), changes.len())?
            .into_iter()
            .map(|a| (a.revision, a))
            .collect();
        let mut snapshot = current.snapshot.clone();
        for change in changes {
            let mut segments = change.segments.clone();
            for patch in &change.segment_patches {
                if let Some(segment) = snapshot.segment(&patch.segment) {
                    segments.push(Segment {
                        version: Some(change.revision),
                        ..patch.apply(segment)
                    });
                }
            }
            let set = ChangeSet {
                flags: change.flags.clone(),
                deleted_flags: change.deleted_flags.clone(),
                segments,
                deleted_segments: change.deleted_segments.clone(),
            };
            snapshot = Arc::new(snapshot.apply(set)?);
            env.current
                .store(Arc::new(Current::new(change.revision, snapshot.clone())));
            let audit = audits.get(&change.revision).cloned().unwrap_or(AuditEntry {
                revision: change.revision,
                time_ms: 0,
                actor: String::new(),
                comment: String::new(),
                operation: String::new(),
                changes: Vec::new(),
            });
            tracing::info!(environment = %env.key, revision = change.revision, "caught up with a change the store holds");
            env.feed.publish(Event::new(change, audit));
        }
        self.reload_rollouts_of(env)
    }

    /// Every record a backup carries, passed to `visit`: each environment as of one revision
    /// (its writer lock held while it is read from the store, so no change lands halfway),
    /// then the tokens of those environments and those of no environment.
    /// Writes to other environments go on meanwhile. Refused while an environment holds a
    /// damaged record: `flagstaffd repair` first.
    pub fn backup(
        &self,
        visit: &mut dyn FnMut(BackupRecord) -> Result<(), StoreError>,
    ) -> Result<(), ServerError> {
        if let Some((key, damage)) = self.damaged().iter().next() {
            return Err(ServerError::Precondition(format!(
                "environment {key:?} holds a damaged record ({damage}): repair it first \
                 (flagstaffd repair), then back up"
            )));
        }
        let mut listed = self.list();
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        let mut backed_up = std::collections::HashSet::new();
        for env in listed {
            // Read into memory under the lock, handed on after it: however slowly the backup
            // is taken away, writes wait only for the reading.
            let mut records = Vec::new();
            let read = {
                let _writing = env.lock_writer();
                self.store.dump_environment(&env.key, &mut |record| {
                    records.push(record);
                    Ok(())
                })
            };
            match read {
                // Deleted since it was listed: not part of the backup.
                Err(StoreError::NoEnvironment(_)) => continue,
                other => other?,
            }
            backed_up.insert(env.key.clone());
            for record in records {
                visit(record)?;
            }
        }
        // The tokens of the environments backed up (one created since the listing is not).
        for token in self.store.tokens()? {
            if token
                .environment
                .as_ref()
                .is_none_or(|key| backed_up.contains(key))
            {
                visit(BackupRecord::Token(token))?;
            }
        }
        Ok(())
    }

    /// Stores a change of `flag`'s rollout plan that writes no flag (a pause, a resume), as
    /// [`write_with_rollout`](Self::write_with_rollout) stores a plan: `update` gets the
    /// current snapshot and plan.
    pub(crate) fn update_rollout(
        &self,
        ctx: WriteContext<'_>,
        flag: &str,
        update: impl FnOnce(&Snapshot, Option<&RolloutRecord>) -> Result<RolloutRecord, ServerError>,
    ) -> Result<RolloutRecord, ServerError> {
        let (_, plan) = self.write_with_rollout(ctx, |current, plans, _| {
            Ok((
                ChangeSet::default(),
                Some(update(current, plans.get(flag))?),
            ))
        })?;
        plan.ok_or_else(|| no_plan(flag, ctx.environment))
    }

    /// After plans were written (`written`), keeps them in memory and wakes the scheduler.
    /// When another flagstaffd changed one of them first, nothing was written: the plans are
    /// read again from the store, and the conflict returned for the caller to retry.
    fn plans_written(
        &self,
        env: &Environment,
        written: Result<(), StoreError>,
        plans: &[RolloutRecord],
    ) -> Result<(), ServerError> {
        match written {
            Ok(()) => {
                let mut stored = env.lock_rollouts();
                for p in plans {
                    stored.insert(p.flag.clone(), p.clone());
                }
                drop(stored);
                self.rollouts_changed.notify_one();
                Ok(())
            }
            Err(err @ StoreError::PlanConflict { .. }) => Err(self.conflicted(env, err)),
            Err(err) => Err(err.into()),
        }
    }

    /// Counts this flagstaffd's own `written` plan writes on top of the `seen` it committed
    /// over, as the store did: its memory holds them, so they are no reason to read again.
    fn count_plan_writes(&self, env: &Environment, seen: u64, written: usize) {
        if written > 0 && self.store.is_shared() {
            let written = u64::try_from(written).unwrap_or(u64::MAX);
            env.plan_writes
                .store(seen.saturating_add(written), Ordering::Release);
        }
    }

    /// `err`, a plan changed through another flagstaffd first, once `env`'s plans were read
    /// again from the store.
    fn conflicted(&self, env: &Environment, err: StoreError) -> ServerError {
        if let Err(e) = self.reload_rollouts_of(env) {
            tracing::warn!(environment = %env.key, error = %e, "cannot read the rollout plans again");
        }
        err.into()
    }

    /// Reads `environment`'s rollout plans again from the store, where another flagstaffd
    /// on the database changed one without a revision (a pause, a resume).
    pub fn reload_rollouts(&self, environment: &str) -> Result<(), ServerError> {
        let Ok(env) = self.get(environment) else {
            return Ok(());
        };
        let _writing = env.lock_writer();
        self.reload_rollouts_of(&env)
    }

    /// [`reload_rollouts`](Self::reload_rollouts) of every environment.
    pub fn reload_all_rollouts(&self) -> Result<(), ServerError> {
        for env in self.list() {
            if let Err(e) = self.reload_rollouts(&env.key) {
                tracing::warn!(environment = %env.key, error = %e, "cannot read the rollout plans again");
            }
        }
        Ok(())
    }

    /// The plans of `env` as stored, except the guard counts of a stage still running the
    /// same flag version: those are kept from memory until the plan's next write. Called
    /// under the environment's writer lock.
    fn reload_rollouts_of(&self, env: &Environment) -> Result<(), ServerError> {
        let stored = self.store.rollouts(&env.key)?;
        let mut plans = env.lock_rollouts();
        let mut next = BTreeMap::new();
        for mut plan in stored {
            let kept = plans
                .get(&plan.flag)
                .filter(|p| p.flag_version == plan.flag_version);
            if let (Some(guard), Some(kept)) =
                (plan.guard.as_mut(), kept.and_then(|p| p.guard.as_ref()))
            {
                guard.tally = kept.tally;
            }
            next.insert(plan.flag.clone(), plan);
        }
        *plans = next;
        drop(plans);
        self.rollouts_changed.notify_one();
        Ok(())
    }

    /// Runs everything [`write`](Self::write) does except the commit: builds the change,
    /// checks expected versions and validates it, and reports what it would write, with the
    /// versions it would get. Nothing is stored or published, so it needs no confirmation
    /// for a protected environment; the returned revision is the current one.
    pub fn plan(
        &self,
        environment: &str,
        build: impl FnOnce(&Snapshot) -> Result<ChangeSet, ServerError>,
    ) -> Result<Committed, ServerError> {
        let current = self.get(environment)?.current();
        let Some(staged) = stage(&current, environment, build)? else {
            return Ok(Committed::nothing(current.revision));
        };
        Ok(Committed {
            revision: current.revision,
            flags: staged.changes.flags,
            segments: staged.changes.segments,
            changes: staged.audit,
            // A plan is a dry run: nothing is paused.
            paused_rollouts: Vec::new(),
        })
    }
}

/// Builds the change onto `current`, checks its expected versions, leaves out what it would
/// not change, versions and validates the rest; `None` when nothing would change.
fn stage(
    current: &Current,
    environment: &str,
    build: impl FnOnce(&Snapshot) -> Result<ChangeSet, ServerError>,
) -> Result<Option<Staged>, ServerError> {
    let before = &current.snapshot;
    let mut changes = build(before)?;
    let at = At {
        environment,
        revision: current.revision,
    };
    check_versions(before, &changes, at)?;
    drop_unchanged(before, &mut changes);
    if changes.is_empty() {
        return Ok(None);
    }
    let revision = current.revision + 1;
    for flag in &mut changes.flags {
        flag.version = Some(revision);
    }
    for segment in &mut changes.segments {
        segment.version = Some(revision);
    }
    let next = before.apply_within_limits(changes.clone())?;
    let audit = audit_changes(before, &changes);
    Ok(Some(Staged {
        revision,
        changes,
        next,
        audit,
    }))
}

/// Splits written segments into those recorded whole and those whose key lists alone changed,
/// recorded as patches (with their whole new documents, which the store still needs).
fn as_patches(
    before: &Snapshot,
    segments: Vec<Segment>,
) -> (Vec<Segment>, Vec<KeyPatch>, Vec<Segment>) {
    let (mut whole, mut patches, mut patched) = (Vec::new(), Vec::new(), Vec::new());
    for segment in segments {
        let patch = before
            .segment(&segment.key)
            .and_then(|old| KeyPatch::between(old, &segment))
            .filter(|p| p.len() <= segment.included.len() + segment.excluded.len());
        match patch {
            Some(patch) => {
                patches.push(patch);
                patched.push(segment);
            }
            None => whole.push(segment),
        }
    }
    (whole, patches, patched)
}

impl Environment {
    fn new(record: &EnvironmentRecord, snapshot: Snapshot, feed_capacity: usize) -> Environment {
        Environment {
            key: record.key.clone(),
            epoch: record.epoch.clone(),
            protected: record.protected,
            created_ms: record.created_ms,
            current: ArcSwap::from_pointee(Current::new(record.revision, Arc::new(snapshot))),
            writes: AtomicU64::new(0),
            plan_writes: AtomicU64::new(0),
            writer: Mutex::new(()),
            feed: Feed::new(record.revision, feed_capacity),
            rollouts: Mutex::new(BTreeMap::new()),
            usage: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded state is the commit order, which a panicking writer cannot corrupt:
        // its change was either committed and published or not at all.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The refusal of an unconfirmed write to the protected environment `key`.
/// The version a write of `flag`'s plan gives it: one above the plan held.
fn next_version(plans: &BTreeMap<String, RolloutRecord>, flag: &str) -> u64 {
    plans.get(flag).map_or(0, |p| p.version) + 1
}

pub(crate) fn unconfirmed(key: &str) -> ServerError {
    ServerError::Precondition(format!(
        "environment {key:?} is protected: confirm the write (the CLI asks, or takes --yes)"
    ))
}

/// Removes upserts identical (apart from `version`) to the current documents.
fn drop_unchanged(current: &Snapshot, changes: &mut ChangeSet) {
    changes.flags.retain(|f| {
        current.flag(&f.key).is_none_or(|c| {
            Flag {
                version: c.version,
                ..f.clone()
            } != *c
        })
    });
    changes.segments.retain(|s| {
        current.segment(&s.key).is_none_or(|c| {
            Segment {
                version: c.version,
                ..s.clone()
            } != *c
        })
    });
}

fn audit_changes(before: &Snapshot, changes: &ChangeSet) -> Vec<AuditChange> {
    // Sorted by key so entries read the same however the change listed them.
    let mut flags: BTreeMap<&str, AuditChange> = BTreeMap::new();
    for flag in &changes.flags {
        flags.insert(
            &flag.key,
            AuditChange::flag(&flag.key, before.flag(&flag.key), Some(flag)),
        );
    }
    for key in &changes.deleted_flags {
        flags.insert(key, AuditChange::flag(key, before.flag(key), None));
    }
    let mut segments: BTreeMap<&str, AuditChange> = BTreeMap::new();
    for segment in &changes.segments {
        segments.insert(
            &segment.key,
            AuditChange::segment(&segment.key, before.segment(&segment.key), Some(segment)),
        );
    }
    for key in &changes.deleted_segments {
        segments.insert(key, AuditChange::segment(key, before.segment(key), None));
    }
    flags.into_values().chain(segments.into_values()).collect()
}
