//! Evaluation counts on the hot path: one tally per thread, client and snapshot.
//!
//! Each thread keeps, in a thread-local list, an [`Entry`] per client it evaluates with: the
//! client's snapshot as of one of the client's generations, and a [`Tally`] of what that
//! snapshot served on this thread. A client's generation takes a new value, unique across
//! clients, whenever its snapshot is swapped. An evaluation compares the client's generation
//! with the thread's first entry's; when they agree it evaluates on the entry's snapshot, so
//! the hot path has no `ArcSwap` load, and counts the served variant in the entry's tally: a
//! probe of a small open-addressing table, and a load and a store of a counter only this
//! thread writes. No lock, no allocation, no read-modify-write of memory another thread
//! writes.
//!
//! When the generation moved on, the entry loads the new snapshot and starts a new tally for
//! it (allocating, once per snapshot change per thread), registered with the client's
//! [`Metrics`](crate::metrics::Metrics). A tally holds its snapshot, so the [`VariantId`]s it
//! counts stay valid (and unique) until the collector has named them. The collector reads
//! every registered tally, and drops those the thread has let go of (the registry then holds
//! the last reference) after a final read: a thread that stops evaluating keeps the snapshot
//! it last evaluated on alive until it evaluates with that client again or exits.
//!
//! A tally's table starts small; once it is half full the thread replaces the tally with one
//! twice the size (to [`MAX_SLOTS`]). Ids beyond the largest table go to a map behind the
//! tally's mutex, which only its thread and the collector take. Evaluations that serve the
//! caller's default (no such flag, another type, no data yet) carry no id: they are counted
//! in that map too, by flag key, which costs a lock and a hash lookup.
//!
//! The entry the thread used last sits in the thread-local itself, the others in a list behind
//! it. The thread-local has no destructor of its own, so reaching it costs no check of whether
//! it still exists: a second thread-local, registered by the thread's first entry, empties it
//! when the thread exits.
//!
//! Evaluations borrow the thread's entries shared, also while a callback form (`with_string`,
//! `with_bool_detail`) runs the caller's code, which may evaluate again: only making or
//! replacing an entry borrows it mutably. An evaluation nested in such a callback that needs
//! that, or one on a thread whose thread-locals are being destroyed, counts on a one-off tally
//! (allocated for it) instead.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use flagstaff_engine::{Snapshot, VariantId};

use crate::client::Core;

/// Table slots of a thread's first tally for a client.
const FIRST_SLOTS: usize = 64;

/// The largest table a tally grows to: 4,096 slots of 16 bytes, 64 KiB.
pub(crate) const MAX_SLOTS: usize = 4096;

/// Clients a thread keeps an entry for; a thread evaluating with more evicts the one it used
/// longest ago (roughly).
const MAX_ENTRIES: usize = 8;

/// Flag keys a tally counts served defaults for; evaluations of further keys that serve the
/// default are dropped (and counted as dropped).
const MAX_DEFAULT_KEYS: usize = 256;

/// What one thread's evaluations on one snapshot served.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Keeps the counted ids valid until the collector names them.
    snapshot: Arc<Snapshot>,
    /// The counts; the thread's [`Entry`] holds the table too, and counts on it directly.
    table: Table,
    /// Counts that do not fit the table, and served defaults. Taken by the owning thread on
    /// those slower paths and by the collector; never held across an `.await`.
    spill: Mutex<Spill>,
}

/// Open addressing, linear probing; written by the owning thread only. A power of two of
/// slots, between [`PAD`] unused slots on either side: every cache line holding a slot in use
/// lies inside the table's own allocation, so no other thread's data shares a line with the
/// counts this thread writes.
#[derive(Debug, Clone)]
struct Table(Arc<[Slot]>);

/// Unused slots before and after a table's: one cache line.
const PAD: usize = 4;

/// A variant's count. `id` is 0 while the slot is free; once set it never changes.
#[derive(Debug, Default)]
struct Slot {
    id: AtomicUsize,
    count: AtomicU64,
}

/// The counts a tally keeps behind its mutex.
#[derive(Debug, Default)]
pub(crate) struct Spill {
    /// Counts by variant id, for ids beyond the table.
    pub(crate) ids: HashMap<usize, u64>,
    /// Evaluations that served the caller's default: by flag key, (flag version or 0, count).
    pub(crate) defaults: HashMap<Box<str>, Vec<(u64, u64)>>,
    /// Evaluations not counted because `defaults` was full.
    pub(crate) dropped: u64,
}

impl Table {
    /// A table of at least `slots` slots (a power of two, at least a cache line's worth).
    fn new(slots: usize) -> Table {
        let slots = slots.max(PAD).next_power_of_two();
        Table((0..slots + 2 * PAD).map(|_| Slot::default()).collect())
    }

    /// How many slots it has.
    #[inline(always)]
    fn slots(&self) -> usize {
        self.0.len() - 2 * PAD
    }

    /// The slots in use, without the padding.
    fn in_use(&self) -> &[Slot] {
        &self.0[PAD..self.0.len() - PAD]
    }

    #[inline(always)]
    fn home(&self, id: usize) -> usize {
        // Fibonacci hashing of the address; its high bits are well mixed.
        let mixed = (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> 40) as usize & (self.slots() - 1)
    }

    /// Adds one to `id`'s count if the table holds it; false if it does not.
    #[inline(always)]
    fn bump(&self, id: usize) -> bool {
        let mask = self.slots() - 1;
        let mut i = self.home(id);
        // The table always keeps a free slot (see `Entry::add`), so the probe ends.
        while let Some(slot) = self.0.get(PAD + i) {
            let held = slot.id.load(Ordering::Relaxed);
            if held == id {
                // Only this thread writes the count: a load and a store, no read-modify-write.
                let count = slot.count.load(Ordering::Relaxed);
                slot.count.store(count + 1, Ordering::Relaxed);
                return true;
            }
            if held == 0 {
                return false;
            }
            i = (i + 1) & mask;
        }
        false
    }

    /// Puts `id` with count 1 in its free slot; `bump` found it absent.
    fn insert(&self, id: usize) {
        let mask = self.slots() - 1;
        let mut i = self.home(id);
        while let Some(slot) = self.0.get(PAD + i) {
            if slot.id.load(Ordering::Relaxed) == 0 {
                slot.count.store(1, Ordering::Relaxed);
                // Release: a collector that sees the id sees its first count.
                slot.id.store(id, Ordering::Release);
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Calls `each(id, new counts)` for every id counted since `seen`, which it updates.
    fn read(&self, seen: &mut [u64], mut each: impl FnMut(usize, u64)) {
        for (slot, seen) in self.in_use().iter().zip(seen) {
            let id = slot.id.load(Ordering::Acquire);
            if id == 0 {
                continue;
            }
            let count = slot.count.load(Ordering::Relaxed);
            if count > *seen {
                each(id, count - *seen);
                *seen = count;
            }
        }
    }
}

impl Tally {
    /// A tally of at least `slots` slots (see [`Table::new`]).
    fn new(snapshot: Arc<Snapshot>, slots: usize) -> Tally {
        Tally {
            snapshot,
            table: Table::new(slots),
            spill: Mutex::new(Spill::default()),
        }
    }

    /// The snapshot whose variant ids this tally counts.
    pub(crate) fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// How many table slots it has.
    pub(crate) fn slots(&self) -> usize {
        self.table.slots()
    }

    pub(crate) fn spill(&self) -> MutexGuard<'_, Spill> {
        self.spill.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `each(id, new counts)` for every id counted since `seen`, which it updates.
    pub(crate) fn read(&self, seen: &mut [u64], each: impl FnMut(usize, u64)) {
        self.table.read(seen, each);
    }

    #[inline(never)]
    fn count_default(&self, key: &str) {
        let version = self.snapshot.flag(key).and_then(|f| f.version).unwrap_or(0);
        let mut spill = self.spill();
        if let Some(versions) = spill.defaults.get_mut(key) {
            match versions.iter_mut().find(|(v, _)| *v == version) {
                Some((_, count)) => *count += 1,
                None => versions.push((version, 1)),
            }
        } else if spill.defaults.len() < MAX_DEFAULT_KEYS {
            spill.defaults.insert(key.into(), vec![(version, 1)]);
        } else {
            spill.dropped += 1;
        }
    }
}

/// What a thread holds for one client.
#[derive(Debug)]
struct Entry {
    /// `loaded`, or 0 (never a generation) while the entry needs [`refresh`]: its table is
    /// half full.
    generation: Cell<u64>,
    snapshot: Arc<Snapshot>,
    /// The tally's table.
    table: Table,
    /// Whether the client had data (else the snapshot is empty).
    ready: bool,
    /// Table slots this thread has filled.
    used: Cell<usize>,
    /// The client's generation when the snapshot was loaded (unique across clients).
    loaded: u64,
    client: u64,
    /// To forget the entries of clients that are gone.
    owner: Weak<Core>,
    tally: Arc<Tally>,
}

impl Entry {
    fn new(core: &Arc<Core>, generation: u64, slots: usize) -> Entry {
        let (snapshot, ready) = match core.snapshot.load_full() {
            Some(snapshot) => (snapshot, true),
            None => (empty(), false),
        };
        let tally = Arc::new(Tally::new(snapshot.clone(), slots));
        core.metrics.register(&tally);
        Entry {
            generation: Cell::new(generation),
            snapshot,
            table: tally.table.clone(),
            ready,
            used: Cell::new(0),
            loaded: generation,
            client: core.metrics.id(),
            owner: Arc::downgrade(core),
            tally,
        }
    }

    /// Whether this is the entry of the client whose generation is `generation` (generations
    /// are unique across clients), ready to count.
    #[inline(always)]
    fn current(&self, generation: u64) -> bool {
        self.generation.get() == generation
    }

    #[inline(always)]
    fn count(&self, key: &str, id: Option<VariantId>) {
        match id {
            Some(id) => {
                if !self.table.bump(id.get()) {
                    self.add(id.get());
                }
            }
            None => self.tally.count_default(key),
        }
    }

    /// A variant this tally has not counted yet: into the table up to three quarters full,
    /// else into the spill map. Once the table is half full (and not at its largest), the
    /// next evaluation replaces the tally with one twice the size (see [`refresh`]).
    #[cold]
    #[inline(never)]
    fn add(&self, id: usize) {
        let (slots, used) = (self.table.slots(), self.used.get());
        if used * 2 >= slots && slots < MAX_SLOTS {
            self.generation.set(0);
        }
        if (used + 1) * 4 <= slots * 3 {
            self.table.insert(id);
            self.used.set(used + 1);
        } else {
            *self.tally.spill().ids.entry(id).or_insert(0) += 1;
        }
    }

    /// Counts on a tally twice the size from now on; its table is half full.
    fn grow(&mut self, core: &Core) {
        let bigger = Arc::new(Tally::new(self.snapshot.clone(), self.tally.slots() * 2));
        core.metrics.register(&bigger);
        self.table = bigger.table.clone();
        self.tally = bigger;
        self.used.set(0);
        self.generation.set(self.loaded);
    }
}

/// Counts what one evaluation served, on the evaluating thread's tally.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counting<'e> {
    key: &'e str,
    entry: &'e Entry,
}

impl Counting<'_> {
    /// Counts one evaluation of the flag that `id` served (`None`: the caller's default).
    #[inline(always)]
    pub(crate) fn count(self, id: Option<VariantId>) {
        self.entry.count(self.key, id);
    }
}

/// The snapshot of a client without data: every evaluation serves the caller's default.
fn empty() -> Arc<Snapshot> {
    static EMPTY: OnceLock<Arc<Snapshot>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::new(Snapshot::new())).clone()
}

/// A thread's entries, at most `MAX_ENTRIES`: the one used last in place, so that an
/// evaluation reads it at a fixed offset from the thread's base, the others in a list.
#[derive(Debug)]
struct Entries {
    first: Option<Entry>,
    /// The one used longest ago first.
    rest: Vec<Entry>,
}

impl Entries {
    const NONE: Entries = Entries {
        first: None,
        rest: Vec::new(),
    };

    /// The entry of generation `generation`, wherever it is.
    fn find(&self, generation: u64) -> Option<&Entry> {
        self.first
            .iter()
            .chain(&self.rest)
            .find(|e| e.loaded == generation)
    }
}

thread_local! {
    /// This thread's entries. Evaluations borrow them shared (also while a callback form runs
    /// user code, which may evaluate again); only the rare changes of an entry borrow them
    /// mutably. Not dropped by the thread-local machinery, so that an evaluation reaches them
    /// without first checking whether they still exist: [`RELEASE`] empties them instead.
    static ENTRIES: ManuallyDrop<RefCell<Entries>> = const {
        ManuallyDrop::new(RefCell::new(Entries::NONE))
    };

    /// Empties [`ENTRIES`] when the thread exits. Its destructor is registered by the first
    /// entry the thread makes; once it has run, the thread makes no more.
    static RELEASE: Release = const { Release };
}

/// Drops the thread's entries (and with them its hold on their snapshots and tallies).
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let entries = ENTRIES.with(|cell| match cell.try_borrow_mut() {
            Ok(mut entries) => std::mem::replace(&mut *entries, Entries::NONE),
            Err(_) => Entries::NONE,
        });
        drop(entries);
    }
}

/// Evaluates with `eval` on the client's current snapshot, for flag `key`: `eval` gets the
/// snapshot, whether the client has data, and the [`Counting`] to count what it served with.
#[inline(always)]
pub(crate) fn evaluate<R, F>(core: &Arc<Core>, key: &str, eval: F) -> R
where
    F: FnOnce(&Snapshot, bool, Counting<'_>) -> R,
{
    match evaluate_quickly(core, key, eval) {
        Ok(value) => value,
        Err(eval) => evaluate_slowly(core, key, eval),
    }
}

/// The hot path of [`evaluate`]: when the thread's first entry is the client's, for the
/// current generation. Else `eval` comes back, for [`evaluate_slowly`] (out of line, so that
/// the hot path keeps few values live across the evaluation).
#[inline(always)]
pub(crate) fn evaluate_quickly<R, F>(core: &Arc<Core>, key: &str, eval: F) -> Result<R, F>
where
    F: FnOnce(&Snapshot, bool, Counting<'_>) -> R,
{
    let generation = core.metrics.generation();
    let mut eval = Some(eval);
    let done = ENTRIES.try_with(|cell| {
        let entries = cell.try_borrow().ok()?;
        let entry = entries.first.as_ref()?;
        if !entry.current(generation) {
            return None;
        }
        let eval = eval.take()?;
        Some(eval(&entry.snapshot, entry.ready, Counting { key, entry }))
    });
    match (done, eval) {
        (Ok(Some(value)), _) => Ok(value),
        (_, Some(eval)) => Err(eval),
        // `eval` is taken only just before it runs and returns a value.
        (_, None) => unreachable!("the evaluation ran but returned nothing"),
    }
}

/// [`evaluate`] when the thread's first entry is not the client's current one: the entry is
/// made or replaced first (see [`refresh`]). An evaluation nested in a callback, which cannot
/// change the entries, uses the client's entry wherever it is; if there is none for the
/// current generation, or the thread's entries are gone (it is exiting), it counts on a
/// one-off entry instead.
#[cold]
#[inline(never)]
pub(crate) fn evaluate_slowly<R>(
    core: &Arc<Core>,
    key: &str,
    eval: impl FnOnce(&Snapshot, bool, Counting<'_>) -> R,
) -> R {
    let generation = core.metrics.generation();
    let mut eval = Some(eval);
    let done = ENTRIES.try_with(|cell| {
        refresh(core, cell, generation);
        let entries = cell.try_borrow().ok()?;
        let entry = entries.find(generation)?;
        let eval = eval.take()?;
        Some(eval(&entry.snapshot, entry.ready, Counting { key, entry }))
    });
    match (done, eval) {
        (Ok(Some(value)), _) => value,
        (_, Some(eval)) => once(core, key, generation, eval),
        (_, None) => unreachable!("the evaluation ran but returned nothing"),
    }
}

/// Puts this thread's entry for `core` first: moved there, replaced by a new one (with a new
/// tally) if the client's snapshot changed since it was made, given a tally twice the size if
/// its table filled up, or made. Does nothing while the entries are borrowed (an evaluation
/// nested in a callback), or once the thread has begun to exit.
#[cold]
#[inline(never)]
fn refresh(core: &Arc<Core>, entries: &RefCell<Entries>, generation: u64) {
    if RELEASE.try_with(|_| ()).is_err() {
        return;
    }
    let Ok(mut entries) = entries.try_borrow_mut() else {
        return;
    };
    let Entries { first, rest } = &mut *entries;
    let client = core.metrics.id();
    if first.as_ref().is_none_or(|e| e.client != client) {
        let found = rest.iter().position(|e| e.client == client);
        let mine = match found {
            Some(i) => Some(rest.remove(i)),
            None => {
                rest.retain(|e| e.owner.strong_count() > 0);
                None
            }
        };
        if let Some(previous) = std::mem::replace(first, mine) {
            if previous.owner.strong_count() > 0 {
                if rest.len() + 1 >= MAX_ENTRIES {
                    rest.remove(0);
                }
                rest.push(previous);
            }
        }
    }
    match first {
        Some(entry) if entry.loaded != generation => {
            // The thread needs about as many slots as on the previous snapshot.
            let slots = entry.tally.slots().max(FIRST_SLOTS);
            *entry = Entry::new(core, generation, slots);
        }
        // Its table is half full.
        Some(entry) if entry.generation.get() != generation => entry.grow(core),
        Some(_) => {}
        None => *first = Some(Entry::new(core, generation, FIRST_SLOTS)),
    }
}

/// An evaluation on a one-off entry, with a tally of one cache line.
#[cold]
#[inline(never)]
fn once<R>(
    core: &Arc<Core>,
    key: &str,
    generation: u64,
    eval: impl FnOnce(&Snapshot, bool, Counting<'_>) -> R,
) -> R {
    let entry = Entry::new(core, generation, 1);
    eval(
        &entry.snapshot,
        entry.ready,
        Counting { key, entry: &entry },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_counts_each_id_in_its_slot() {
        let table = Table::new(8);
        for id in [8usize, 16, 24] {
            assert!(!table.bump(id));
            table.insert(id);
            assert!(table.bump(id));
        }
        let mut seen = vec![0; table.slots()];
        let mut counts = Vec::new();
        table.read(&mut seen, |id, n| counts.push((id, n)));
        counts.sort_unstable();
        assert_eq!(counts, [(8, 2), (16, 2), (24, 2)]);
        assert!(table.bump(16));
        let mut again = Vec::new();
        table.read(&mut seen, |id, n| again.push((id, n)));
        assert_eq!(again, [(16, 1)], "only what is new since the last read");
    }

    #[test]
    fn a_table_keeps_a_cache_line_free_on_either_side_and_the_probe_ends() {
        let table = Table::new(1);
        assert_eq!(table.slots(), 4);
        assert_eq!(PAD * std::mem::size_of::<Slot>(), 64);
        assert_eq!(table.0.len(), 4 + 2 * PAD);
        for id in [8, 16, 24, 32] {
            table.insert(id);
            assert!(table.bump(id));
        }
        let mut pads = table.0[..PAD].iter().chain(&table.0[PAD + 4..]);
        assert!(pads.all(|s| s.id.load(Ordering::Relaxed) == 0));
        let table = Table::new(1);
        for id in [8, 16, 24] {
            table.insert(id);
        }
        assert!(!table.bump(32), "a free slot ends the probe");
        assert!(table.bump(24));
    }
}
