//! Where an evaluation runs: each thread's copy of each client's snapshot, and the tally it
//! counts that snapshot's evaluations on. This is the client's hot path.
//!
//! Each thread keeps, in a thread-local list, an [`Entry`] per client it evaluates with: the
//! client's snapshot as of one of the client's generations ([`Core::generation`]), and a
//! [`Tally`] of what that snapshot served on this thread. A client's generation takes a new
//! value, unique across clients, whenever its snapshot is swapped. An evaluation compares the
//! client's generation with the thread's first entry's; when they agree it evaluates on the
//! entry's snapshot, so the hot path has no `ArcSwap` load, and counts the served variant in
//! the entry's tally (see [`crate::usage::tally`]: no lock, no allocation, no
//! read-modify-write of memory another thread writes).
//!
//! When the generation moved on, the entry loads the new snapshot and starts a new tally for
//! it (allocating, once per snapshot change per thread), registered with the client's
//! [`Usage`](crate::usage::Usage). The collector reads every registered tally, and drops
//! those the thread has let go of (the registry then holds the last reference) after a final
//! read: a thread that stops evaluating keeps the snapshot it last evaluated on alive until it
//! evaluates with that client again or exits.
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
use std::mem::ManuallyDrop;
use std::sync::{Arc, OnceLock, Weak};

use flagstaff_engine::counting::VariantId;
use flagstaff_engine::Snapshot;

use crate::core::Core;
use crate::usage::tally::{CountTable, Tally, MAX_SLOTS};

/// Table slots of a thread's first tally for a client.
const FIRST_SLOTS: usize = 64;

/// Clients a thread keeps an entry for; a thread evaluating with more evicts the one it used
/// longest ago (roughly).
const MAX_ENTRIES: usize = 8;

/// What a thread holds for one client.
#[derive(Debug)]
struct Entry {
    /// `loaded`, or 0 (never a generation) while the entry needs [`refresh`]: its table is
    /// half full.
    generation: Cell<u64>,
    snapshot: Arc<Snapshot>,
    /// The tally's table.
    table: CountTable,
    /// Whether the client had data (else the snapshot is empty).
    ready: bool,
    /// Table slots this thread has filled.
    used: Cell<usize>,
    /// The client's generation when the snapshot was loaded (unique across clients).
    loaded: u64,
    client: u64,
    /// The client's shared state, to forget the entries of clients that are gone.
    core: Weak<Core>,
    tally: Arc<Tally>,
}

impl Entry {
    fn new(core: &Arc<Core>, generation: u64, slots: usize) -> Entry {
        let (snapshot, ready) = match core.snapshot.load_full() {
            Some(snapshot) => (snapshot, true),
            None => (empty(), false),
        };
        let tally = Arc::new(Tally::new(snapshot.clone(), slots));
        core.usage.register(&tally);
        Entry {
            generation: Cell::new(generation),
            snapshot,
            table: tally.table().clone(),
            ready,
            used: Cell::new(0),
            loaded: generation,
            client: core.id,
            core: Arc::downgrade(core),
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
    /// else into the tally's locked counts. Once the table is half full (and not at its
    /// largest), the next evaluation replaces the tally with one twice the size (see
    /// [`refresh`]).
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
            *self.tally.locked().ids.entry(id).or_insert(0) += 1;
        }
    }

    /// Counts on a tally twice the size from now on; its table is half full.
    fn grow(&mut self, core: &Core) {
        let bigger = Arc::new(Tally::new(self.snapshot.clone(), self.tally.slots() * 2));
        core.usage.register(&bigger);
        self.table = bigger.table().clone();
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
    let generation = core.generation();
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
    let generation = core.generation();
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
    let client = core.id;
    if first.as_ref().is_none_or(|e| e.client != client) {
        let found = rest.iter().position(|e| e.client == client);
        let mine = match found {
            Some(i) => Some(rest.remove(i)),
            None => {
                rest.retain(|e| e.core.strong_count() > 0);
                None
            }
        };
        if let Some(previous) = std::mem::replace(first, mine) {
            if previous.core.strong_count() > 0 {
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
