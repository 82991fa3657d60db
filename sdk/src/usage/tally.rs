//! A tally: what one thread's evaluations on one snapshot served, counted without a lock.
//!
//! The evaluating thread counts each served variant, by its
//! [`VariantId`](flagstaff_engine::counting::VariantId), in the tally's
//! [`CountTable`]: a probe of a small open-addressing table, and a load and a store of a
//! counter only this thread writes. No lock, no allocation, no read-modify-write of memory
//! another thread writes. Ids beyond the table, and evaluations that served the caller's
//! default (which carry no id), are counted in [`LockedCounts`] behind the tally's mutex,
//! which only its thread and the collector (the client's `Usage`) take.
//!
//! A tally holds its snapshot, so the ids it counts stay valid (and unique) until the
//! collector has named them. Which thread counts on which tally, and when a thread starts a
//! new one, is the evaluation's business (`evaluation::per_thread`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use flagstaff_engine::Snapshot;

/// The largest table a tally grows to: 4,096 slots of 16 bytes, 64 KiB.
pub(crate) const MAX_SLOTS: usize = 4096;

/// Flag keys a tally counts served defaults for; evaluations of further keys that serve the
/// default are dropped (and counted as dropped).
const MAX_DEFAULT_KEYS: usize = 256;

/// What one thread's evaluations on one snapshot served.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Keeps the counted ids valid until the collector names them.
    snapshot: Arc<Snapshot>,
    /// The counts; the evaluating thread holds the table too, and counts on it directly.
    table: CountTable,
    /// Counts that do not fit the table, and served defaults. Taken by the owning thread on
    /// those slower paths and by the collector; never held across an `.await`.
    locked: Mutex<LockedCounts>,
}

/// Open addressing, linear probing; written by the owning thread only. A power of two of
/// slots, between [`PAD`] unused slots on either side: every cache line holding a slot in use
/// lies inside the table's own allocation, so no other thread's data shares a line with the
/// counts this thread writes.
#[derive(Debug, Clone)]
pub(crate) struct CountTable(Arc<[Slot]>);

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
pub(crate) struct LockedCounts {
    /// Counts by variant id, for ids beyond the table.
    pub(crate) ids: HashMap<usize, u64>,
    /// Evaluations that served the caller's default: by flag key, (flag version or 0, count).
    pub(crate) defaults: HashMap<Box<str>, Vec<(u64, u64)>>,
    /// Evaluations not counted because `defaults` was full.
    pub(crate) dropped: u64,
}

impl CountTable {
    /// A table of at least `slots` slots (a power of two, at least a cache line's worth).
    pub(crate) fn new(slots: usize) -> CountTable {
        let slots = slots.max(PAD).next_power_of_two();
        CountTable((0..slots + 2 * PAD).map(|_| Slot::default()).collect())
    }

    /// How many slots it has.
    #[inline(always)]
    pub(crate) fn slots(&self) -> usize {
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
    pub(crate) fn bump(&self, id: usize) -> bool {
        let mask = self.slots() - 1;
        let mut i = self.home(id);
        // The table always keeps a free slot (see `insert`), so the probe ends.
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

    /// Puts `id` with count 1 in its free slot; `bump` found it absent. The caller keeps a
    /// free slot in the table (it fills at most three quarters), so that probes end.
    pub(crate) fn insert(&self, id: usize) {
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
    /// A tally of at least `slots` slots (see [`CountTable::new`]).
    pub(crate) fn new(snapshot: Arc<Snapshot>, slots: usize) -> Tally {
        Tally {
            snapshot,
            table: CountTable::new(slots),
            locked: Mutex::new(LockedCounts::default()),
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

    /// Its table, for the evaluating thread to count on.
    pub(crate) fn table(&self) -> &CountTable {
        &self.table
    }

    /// The counts kept behind the mutex.
    pub(crate) fn locked(&self) -> MutexGuard<'_, LockedCounts> {
        self.locked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `each(id, new counts)` for every id counted since `seen`, which it updates.
    pub(crate) fn read(&self, seen: &mut [u64], each: impl FnMut(usize, u64)) {
        self.table.read(seen, each);
    }

    /// Counts an evaluation of flag `key` that served the caller's default.
    #[inline(never)]
    pub(crate) fn count_default(&self, key: &str) {
        let version = self.snapshot.flag(key).and_then(|f| f.version).unwrap_or(0);
        let mut locked = self.locked();
        if let Some(versions) = locked.defaults.get_mut(key) {
            match versions.iter_mut().find(|(v, _)| *v == version) {
                Some((_, count)) => *count += 1,
                None => versions.push((version, 1)),
            }
        } else if locked.defaults.len() < MAX_DEFAULT_KEYS {
            locked.defaults.insert(key.into(), vec![(version, 1)]);
        } else {
            locked.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_counts_each_id_in_its_slot() {
        let table = CountTable::new(8);
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
        let table = CountTable::new(1);
        assert_eq!(table.slots(), 4);
        assert_eq!(PAD * std::mem::size_of::<Slot>(), 64);
        assert_eq!(table.0.len(), 4 + 2 * PAD);
        for id in [8, 16, 24, 32] {
            table.insert(id);
            assert!(table.bump(id));
        }
        let mut pads = table.0[..PAD].iter().chain(&table.0[PAD + 4..]);
        assert!(pads.all(|s| s.id.load(Ordering::Relaxed) == 0));
        let table = CountTable::new(1);
        for id in [8, 16, 24] {
            table.insert(id);
        }
        assert!(!table.bump(32), "a free slot ends the probe");
        assert!(table.bump(24));
    }
}
