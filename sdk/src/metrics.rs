//! Usage metrics: what a client evaluated and which application events it saw, kept in time
//! windows until the server has them (`Sync.ReportMetrics`, proto/flagstaff/v1/sync.proto).
//!
//! Evaluations are counted per thread ([`crate::tally`]); the collector reads those tallies
//! into the current window, naming each counted variant id by the snapshot that served it:
//! one `EvaluationCount` per flag, version and variant. Evaluations that served the caller's
//! default are counted too, with an empty variant and version 0 when the flag was not found
//! (or the client had no data yet), else the flag's version. [`Metrics::track`] counts
//! application events, at most [`EVENTS_PER_CONTEXT_PER_MINUTE`] of one event key per context
//! key per minute (the rest are `capped_events`), and attributes each to the variant every
//! flag guarded on that event (as the server's last answer named them) serves the context now.
//!
//! Every report closes the current window (an empty one is skipped) and sends every window
//! kept, oldest first; a failed report keeps them for the next, at most [`MAX_WINDOWS`], the
//! oldest dropped beyond. What a bound drops is counted in the request's `dropped`.
//!
//! Two mutexes, never held across an `.await`, always taken in this order: the registry of
//! tallies (taken when a thread starts a tally, and by the collector) and the book of windows
//! (taken by the collector, by `track` and by reports).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use flagstaff_engine::{Context, Snapshot};
use flagstaff_proto::pb;
use tokio::sync::{mpsc, oneshot};

use crate::tally::Tally;

/// Windows kept while reports fail: ten minutes at the default interval.
pub(crate) const MAX_WINDOWS: usize = 60;

/// Distinct (flag, version, variant) counts in one window; counts of further ones are
/// dropped.
pub(crate) const MAX_EVALUATION_ENTRIES: usize = 10_000;

/// Distinct event keys in one window; events of further keys are dropped.
pub(crate) const MAX_EVENT_KEYS: usize = 1_000;

/// Distinct (flag, version, variant) attributions of one event key in one window.
const MAX_ATTRIBUTIONS: usize = 1_000;

/// The longest event key accepted, in bytes; longer (and empty) keys are dropped.
pub(crate) const MAX_EVENT_KEY_BYTES: usize = 256;

/// Events of one key counted per context key per minute.
pub(crate) const EVENTS_PER_CONTEXT_PER_MINUTE: u32 = 10;

/// (event, context) pairs the per-minute cap remembers; events of further pairs are dropped.
pub(crate) const MAX_CAPPED_CONTEXTS: usize = 100_000;

/// About how many bytes of windows one request carries; further windows go in the next.
const REQUEST_BYTES: usize = 1 << 20;

/// Tallies the registry holds before it checks for those their threads let go of, at least.
const PRUNE_AT: usize = 64;

/// A request to report now, answered with the outcome.
pub(crate) type Flush = oneshot::Sender<Result<(), String>>;

/// A client's usage metrics.
pub(crate) struct Metrics {
    /// Tells this client's entries apart in each thread's list.
    id: u64,
    /// A new value, unique across clients, after every snapshot swap; see [`crate::tally`].
    generation: AtomicU64,
    registry: Mutex<Registry>,
    book: Mutex<Book>,
    /// To the background task's reporter; `None` for a client without a server.
    flushes: Option<mpsc::Sender<Flush>>,
    reports: AtomicU64,
    report_failures: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("id", &self.id)
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("reports", &self.reports.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The tallies of every thread, and what was read from each so far.
#[derive(Debug)]
struct Registry {
    tracked: Vec<Tracked>,
    prune_at: usize,
}

#[derive(Debug)]
struct Tracked {
    tally: Arc<Tally>,
    /// The count of each table slot at the last read.
    seen: Box<[u64]>,
}

/// The current window, the closed ones not reported yet, and the per-context cap.
#[derive(Debug)]
struct Book {
    start_ms: i64,
    /// Flag key → (version, variant, count).
    evaluations: HashMap<String, Vec<(u64, String, u64)>>,
    evaluation_entries: usize,
    events: HashMap<String, EventTally>,
    closed: VecDeque<(u64, pb::MetricsWindow)>,
    next_window: u64,
    /// Dropped and capped since the last successful report, for the next request.
    dropped: u64,
    capped: u64,
    /// The same since the client started, for [`crate::Stats`].
    dropped_total: u64,
    capped_total: u64,
    per_context: PerContext,
    /// Event key → the flags guarded on it, from the server's last answer.
    guards: HashMap<String, Vec<String>>,
    /// Whether the server has answered a report yet.
    guards_known: bool,
}

#[derive(Debug, Default)]
struct EventTally {
    count: u64,
    /// (flag, version, variant, count).
    attributions: Vec<(String, u64, String, u64)>,
}

/// How many events of each key each context tracked in the current minute.
#[derive(Debug)]
struct PerContext {
    since: Instant,
    counts: HashMap<String, HashMap<Box<str>, u32>>,
    entries: usize,
}

enum Admission {
    Counted,
    Capped,
    Full,
}

impl PerContext {
    fn admit(&mut self, event: &str, context: &str, now: Instant) -> Admission {
        if now.duration_since(self.since) >= Duration::from_secs(60) {
            self.counts.clear();
            self.entries = 0;
            self.since = now;
        }
        if let Some(n) = self.counts.get_mut(event).and_then(|c| c.get_mut(context)) {
            if *n >= EVENTS_PER_CONTEXT_PER_MINUTE {
                return Admission::Capped;
            }
            *n += 1;
            return Admission::Counted;
        }
        if self.entries >= MAX_CAPPED_CONTEXTS {
            return Admission::Full;
        }
        self.entries += 1;
        match self.counts.get_mut(event) {
            Some(contexts) => {
                contexts.insert(context.into(), 1);
            }
            None => {
                self.counts
                    .insert(event.to_owned(), HashMap::from([(context.into(), 1)]));
            }
        }
        Admission::Counted
    }
}

/// What a request carried, to forget once the server has it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    /// The last window sent, if any.
    through: Option<u64>,
    dropped: u64,
    capped: u64,
    /// Whether windows are left for another request.
    pub(crate) more: bool,
}

/// Counters of [`crate::Stats`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) reports: u64,
    pub(crate) report_failures: u64,
    pub(crate) dropped: u64,
    pub(crate) capped: u64,
}

/// Generations are drawn from one counter, so no two clients (nor two snapshots of one) share
/// one: a thread's entry matches a client's generation only if it is that client's entry for
/// its current snapshot. 0 is never drawn.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Metrics {
    pub(crate) fn new(flushes: Option<mpsc::Sender<Flush>>) -> Metrics {
        static CLIENTS: AtomicU64 = AtomicU64::new(1);
        Metrics {
            id: CLIENTS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(GENERATIONS.fetch_add(1, Ordering::Relaxed)),
            registry: Mutex::new(Registry {
                tracked: Vec::new(),
                prune_at: PRUNE_AT,
            }),
            book: Mutex::new(Book {
                start_ms: unix_ms(),
                evaluations: HashMap::new(),
                evaluation_entries: 0,
                events: HashMap::new(),
                closed: VecDeque::new(),
                next_window: 0,
                dropped: 0,
                capped: 0,
                dropped_total: 0,
                capped_total: 0,
                per_context: PerContext {
                    since: Instant::now(),
                    counts: HashMap::new(),
                    entries: 0,
                },
                guards: HashMap::new(),
                guards_known: false,
            }),
            flushes,
            reports: AtomicU64::new(0),
            report_failures: AtomicU64::new(0),
        }
    }

    #[inline(always)]
    pub(crate) fn id(&self) -> u64 {
        self.id
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
    pub(crate) fn advance(&self) {
        let next = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        self.generation.swap(next, Ordering::AcqRel);
    }

    /// Where flush requests go; `None` for a client without a server.
    pub(crate) fn flushes(&self) -> Option<&mpsc::Sender<Flush>> {
        self.flushes.as_ref()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a thread's new tally to those the collector reads. Every so often it also reads
    /// and forgets the tallies their threads have let go of, so that a client that never
    /// reports (or whose threads come and go quickly) holds a bounded number.
    pub(crate) fn register(&self, tally: &Arc<Tally>) {
        let mut registry = self.registry();
        registry.tracked.push(Tracked {
            tally: tally.clone(),
            seen: vec![0; tally.slots()].into_boxed_slice(),
        });
        if registry.tracked.len() >= registry.prune_at {
            self.read(&mut registry, true);
            registry.prune_at = PRUNE_AT.max(registry.tracked.len() * 2);
        }
    }

    /// Reads the registered tallies (or only those their threads let go of) into the current
    /// window, and forgets those their threads let go of.
    fn read(&self, registry: &mut Registry, finished_only: bool) {
        let mut groups: Vec<(Arc<Snapshot>, HashMap<usize, u64>)> = Vec::new();
        let mut defaults: Vec<(Box<str>, u64, u64)> = Vec::new();
        let mut dropped = 0;
        registry.tracked.retain_mut(|tracked| {
            // Acquire, when unique: the thread's last counts are visible.
            let finished = Arc::get_mut(&mut tracked.tally).is_some();
            if finished_only && !finished {
                return true;
            }
            let tally = &tracked.tally;
            // The group of the tally's snapshot, found (or started) at its first count.
            let mut group: Option<usize> = None;
            let mut add = |id: usize, n: u64| {
                let i = *group.get_or_insert_with(|| {
                    groups
                        .iter()
                        .position(|(s, _)| Arc::ptr_eq(s, tally.snapshot()))
                        .unwrap_or_else(|| {
                            groups.push((tally.snapshot().clone(), HashMap::new()));
                            groups.len() - 1
                        })
                });
                *groups[i].1.entry(id).or_insert(0) += n;
            };
            tally.read(&mut tracked.seen, &mut add);
            let mut spill = tally.spill();
            for (id, n) in spill.ids.drain() {
                add(id, n);
            }
            // The keys stay, so that the thread counts them again without allocating.
            for (key, versions) in &mut spill.defaults {
                for (version, n) in versions.iter_mut().filter(|(_, n)| *n > 0) {
                    defaults.push((key.clone(), *version, std::mem::take(n)));
                }
            }
            dropped += std::mem::take(&mut spill.dropped);
            drop(spill);
            !finished
        });
        if groups.is_empty() && defaults.is_empty() && dropped == 0 {
            return;
        }
        let mut book = self.book();
        for (snapshot, mut counts) in groups {
            for (id, flag, version, variant) in snapshot.variant_ids() {
                if counts.is_empty() {
                    break;
                }
                if let Some(n) = counts.remove(&id.get()) {
                    book.count(flag, version.unwrap_or(0), variant, n);
                }
            }
            // Every id counted was served by this snapshot, so none is left.
            dropped += counts.values().sum::<u64>();
        }
        for (flag, version, n) in defaults {
            book.count(&flag, version, "", n);
        }
        book.drop_counts(dropped);
    }

    /// Counts application event `event` for `ctx`, and attributes it to what each flag
    /// guarded on it serves `ctx` in `snapshot`.
    pub(crate) fn track(&self, event: &str, ctx: &Context<'_>, snapshot: Option<&Snapshot>) {
        let mut book = self.book();
        let book = &mut *book;
        if event.is_empty() || event.len() > MAX_EVENT_KEY_BYTES {
            book.drop_counts(1);
            return;
        }
        match book.per_context.admit(event, ctx.key(), Instant::now()) {
            Admission::Counted => {}
            Admission::Capped => {
                book.capped += 1;
                book.capped_total += 1;
                return;
            }
            Admission::Full => {
                book.drop_counts(1);
                return;
            }
        }
        if !book.events.contains_key(event) {
            if book.events.len() >= MAX_EVENT_KEYS {
                book.drop_counts(1);
                return;
            }
            book.events.insert(event.to_owned(), EventTally::default());
        }
        let Some(tally) = book.events.get_mut(event) else {
            return;
        };
        tally.count += 1;
        let mut dropped = 0;
        if let (Some(flags), Some(snapshot)) = (book.guards.get(event), snapshot) {
            for flag in flags {
                let detail = snapshot.evaluate(flag, ctx);
                let Some(variant) = detail.variant else {
                    continue;
                };
                let version = detail.version.unwrap_or(0);
                let attributions = &mut tally.attributions;
                let known = attributions
                    .iter()
                    .position(|(f, v, var, _)| f == flag && *v == version && var == variant);
                match known {
                    Some(i) => attributions[i].3 += 1,
                    None if attributions.len() < MAX_ATTRIBUTIONS => {
                        attributions.push((flag.clone(), version, variant.to_owned(), 1));
                    }
                    None => dropped += 1,
                }
            }
        }
        book.drop_counts(dropped);
    }

    /// Reads every tally and closes the current window at `now_ms` (unless it is empty).
    pub(crate) fn close_window(&self, now_ms: i64) {
        {
            let mut registry = self.registry();
            self.read(&mut registry, false);
        }
        self.book().close(now_ms);
    }

    /// The request reporting the windows kept (as many as fit one request), `dropped` and
    /// `capped_events`; `None` when there is nothing to report, unless `always`. A client
    /// whose reports the server never answered sends one anyway, to learn the guards.
    pub(crate) fn request(
        &self,
        instance_id: &str,
        always: bool,
    ) -> Option<(pb::ReportMetricsRequest, Sent)> {
        let book = self.book();
        if !always
            && book.closed.is_empty()
            && book.dropped == 0
            && book.capped == 0
            && book.guards_known
        {
            return None;
        }
        let mut windows = Vec::new();
        let mut bytes = 0;
        let mut through = None;
        for (seq, window) in &book.closed {
            let size = encoded_size(window);
            if !windows.is_empty() && bytes + size > REQUEST_BYTES {
                break;
            }
            bytes += size;
            windows.push(window.clone());
            through = Some(*seq);
        }
        let sent = Sent {
            through,
            dropped: book.dropped,
            capped: book.capped,
            more: windows.len() < book.closed.len(),
        };
        let request = pb::ReportMetricsRequest {
            instance_id: instance_id.to_owned(),
            // The sdk token names the environment.
            environment: String::new(),
            windows,
            dropped: book.dropped,
            capped_events: book.capped,
        };
        Some((request, sent))
    }

    /// The server has what `sent` carried, and guards `guards` from now on.
    pub(crate) fn reported(&self, sent: Sent, guards: Vec<pb::GuardedFlag>) {
        let mut book = self.book();
        if let Some(through) = sent.through {
            while book.closed.front().is_some_and(|(seq, _)| *seq <= through) {
                book.closed.pop_front();
            }
        }
        book.dropped = book.dropped.saturating_sub(sent.dropped);
        book.capped = book.capped.saturating_sub(sent.capped);
        let mut by_event: HashMap<String, Vec<String>> = HashMap::new();
        for guard in guards {
            let flags = by_event.entry(guard.event).or_default();
            if !flags.contains(&guard.flag) {
                flags.push(guard.flag);
            }
        }
        book.guards = by_event;
        book.guards_known = true;
        self.reports.fetch_add(1, Ordering::Relaxed);
    }

    /// A report failed: its windows stay for the next.
    pub(crate) fn failed(&self) {
        self.report_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn totals(&self) -> Totals {
        let book = self.book();
        Totals {
            reports: self.reports.load(Ordering::Relaxed),
            report_failures: self.report_failures.load(Ordering::Relaxed),
            dropped: book.dropped_total,
            capped: book.capped_total,
        }
    }

    /// Closes the current window and takes every window kept, as a report would send them,
    /// with the `dropped` and `capped_events` counts: for tests.
    #[cfg(test)]
    pub(crate) fn take(&self) -> (Vec<pb::MetricsWindow>, u64, u64) {
        self.close_window(unix_ms());
        let mut book = self.book();
        let windows = book.closed.drain(..).map(|(_, w)| w).collect();
        let taken = (windows, book.dropped, book.capped);
        book.dropped = 0;
        book.capped = 0;
        taken
    }
}

impl Book {
    fn count(&mut self, flag: &str, version: u64, variant: &str, n: u64) {
        if let Some(counts) = self.evaluations.get_mut(flag) {
            if let Some((.., count)) = counts
                .iter_mut()
                .find(|(v, var, _)| *v == version && var == variant)
            {
                *count += n;
                return;
            }
        }
        if self.evaluation_entries >= MAX_EVALUATION_ENTRIES {
            self.drop_counts(n);
            return;
        }
        self.evaluation_entries += 1;
        self.evaluations
            .entry(flag.to_owned())
            .or_default()
            .push((version, variant.to_owned(), n));
    }

    fn drop_counts(&mut self, n: u64) {
        self.dropped += n;
        self.dropped_total += n;
    }

    /// Closes the current window at `now_ms`; an empty one is not kept.
    fn close(&mut self, now_ms: i64) {
        let start = std::mem::replace(&mut self.start_ms, now_ms);
        if self.evaluations.is_empty() && self.events.is_empty() {
            return;
        }
        let mut evaluations: Vec<pb::EvaluationCount> = Vec::with_capacity(self.evaluation_entries);
        for (flag, counts) in self.evaluations.drain() {
            for (version, variant, count) in counts {
                evaluations.push(pb::EvaluationCount {
                    flag: flag.clone(),
                    variant,
                    version,
                    count,
                });
            }
        }
        evaluations.sort_by(|a, b| {
            (&a.flag, a.version, &a.variant).cmp(&(&b.flag, b.version, &b.variant))
        });
        self.evaluation_entries = 0;
        let mut events: Vec<pb::EventCount> = self
            .events
            .drain()
            .map(|(event, tally)| {
                let mut attributions: Vec<pb::EventAttribution> = tally
                    .attributions
                    .into_iter()
                    .map(|(flag, version, variant, count)| pb::EventAttribution {
                        flag,
                        variant,
                        version,
                        count,
                    })
                    .collect();
                attributions.sort_by(|a, b| {
                    (&a.flag, a.version, &a.variant).cmp(&(&b.flag, b.version, &b.variant))
                });
                pb::EventCount {
                    event,
                    count: tally.count,
                    attributions,
                }
            })
            .collect();
        events.sort_by(|a, b| a.event.cmp(&b.event));
        let window = pb::MetricsWindow {
            start_unix_ms: start,
            end_unix_ms: now_ms.max(start),
            evaluations,
            events,
        };
        self.closed.push_back((self.next_window, window));
        self.next_window += 1;
        while self.closed.len() > MAX_WINDOWS {
            if let Some((_, oldest)) = self.closed.pop_front() {
                let counted = oldest.evaluations.iter().map(|e| e.count).sum::<u64>()
                    + oldest.events.iter().map(|e| e.count).sum::<u64>();
                self.drop_counts(counted);
            }
        }
    }
}

/// About the encoded size of `window`, for keeping requests small.
fn encoded_size(window: &pb::MetricsWindow) -> usize {
    let evaluations: usize = window
        .evaluations
        .iter()
        .map(|e| e.flag.len() + e.variant.len() + 32)
        .sum();
    let events: usize = window
        .events
        .iter()
        .map(|e| {
            e.event.len()
                + 16
                + e.attributions
                    .iter()
                    .map(|a| a.flag.len() + a.variant.len() + 32)
                    .sum::<usize>()
        })
        .sum();
    evaluations + events + 32
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Barrier;

    use flagstaff_engine::Snapshot;

    use super::*;
    use crate::client::Core;
    use crate::status::{Source, Status};
    use crate::{Client, TestData};

    /// `flags` boolean flags `f0`, `f1`, ..., each a 50/50 split, at `version`.
    fn splits(flags: usize, version: u64) -> Snapshot {
        let flags: Vec<serde_json::Value> = (0..flags)
            .map(|i| {
                serde_json::json!({
                    "key": format!("f{i}"), "kind": "boolean", "version": version,
                    "variants": {"on": true, "off": false}, "off_variant": "off",
                    "enabled": true,
                    "default": {"split": {"weights": [
                        {"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}},
                })
            })
            .collect();
        Snapshot::from_value(&serde_json::json!({"environment": "test", "flags": flags}))
            .expect("valid document")
    }

    /// Counts by (flag, version, variant), summed over `windows`.
    fn evaluations(windows: &[pb::MetricsWindow]) -> BTreeMap<(String, u64, String), u64> {
        let mut counts = BTreeMap::new();
        for window in windows {
            assert!(window.start_unix_ms <= window.end_unix_ms);
            for e in &window.evaluations {
                *counts
                    .entry((e.flag.clone(), e.version, e.variant.clone()))
                    .or_insert(0) += e.count;
            }
        }
        counts
    }

    /// What evaluating `flags` flags for contexts `user-0..n` on `snapshot` serves, counted.
    fn expected(
        snapshot: &Snapshot,
        flags: usize,
        n: usize,
        times: u64,
        counts: &mut BTreeMap<(String, u64, String), u64>,
    ) {
        for i in 0..n {
            let ctx = Context::new(format!("user-{i}"));
            for f in 0..flags {
                let key = format!("f{f}");
                let detail = snapshot.bool_detail(&key, &ctx, false);
                let entry = (
                    key,
                    detail.version.unwrap_or(0),
                    detail.variant.unwrap_or("").to_owned(),
                );
                *counts.entry(entry).or_insert(0) += times;
            }
        }
    }

    #[test]
    fn counts_are_exact_across_threads_and_snapshot_swaps() {
        const THREADS: usize = 4;
        const CONTEXTS: usize = 500;
        let (v1, v2) = (splits(3, 1), splits(3, 2));
        let mut want = BTreeMap::new();
        expected(&v1, 3, CONTEXTS, THREADS as u64, &mut want);
        expected(&v2, 3, CONTEXTS, THREADS as u64, &mut want);
        let client = Client::from_snapshot(v1);
        let barrier = Barrier::new(THREADS + 1);
        let evaluate = |client: &Client| {
            for i in 0..CONTEXTS {
                let ctx = Context::new(format!("user-{i}"));
                for f in 0..3 {
                    let key = format!("f{f}");
                    // Each typed form counts alike.
                    let on = match (i + f) % 3 {
                        0 => client.bool_value(&key, &ctx, false),
                        1 => client.bool_detail(&key, &ctx, false).value,
                        _ => client.with_bool_detail(&key, &ctx, false, |d| d.value),
                    };
                    std::hint::black_box(on);
                }
            }
        };
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                let client = client.clone();
                let (barrier, evaluate) = (&barrier, &evaluate);
                scope.spawn(move || {
                    evaluate(&client);
                    barrier.wait(); // all counted on version 1
                    barrier.wait(); // version 2 served
                    evaluate(&client);
                });
            }
            barrier.wait();
            client.replace_snapshot(splits(3, 2));
            barrier.wait();
        });
        let (windows, dropped, capped) = client.core().metrics.take();
        assert_eq!((dropped, capped), (0, 0));
        assert_eq!(evaluations(&windows), want);
    }

    #[test]
    fn a_thread_evaluating_thousands_of_variants_counts_every_one() {
        // 2,500 flags of two variants each: the tally's table grows to its largest, then
        // spills.
        const FLAGS: usize = 2_500;
        let snapshot = splits(FLAGS, 4);
        let mut want = BTreeMap::new();
        expected(&snapshot, FLAGS, 8, 2, &mut want);
        let client = Client::from_snapshot(snapshot);
        for _ in 0..2 {
            for i in 0..8 {
                let ctx = Context::new(format!("user-{i}"));
                for f in 0..FLAGS {
                    client.bool_value(&format!("f{f}"), &ctx, false);
                }
            }
        }
        let (windows, dropped, _) = client.core().metrics.take();
        assert_eq!(dropped, 0);
        assert_eq!(evaluations(&windows), want);
        let registry = client.core().metrics.registry();
        let largest = registry.tracked.iter().map(|t| t.tally.slots()).max();
        assert_eq!(largest, Some(crate::tally::MAX_SLOTS), "the table grew");
        assert!(
            registry
                .tracked
                .iter()
                .all(|t| t.tally.spill().ids.is_empty()),
            "the spill was read"
        );
    }

    #[test]
    fn defaults_are_counted_with_an_empty_variant() {
        let client = Client::from_snapshot(splits(1, 9));
        let ctx = Context::new("user-1");
        client.bool_value("missing", &ctx, true);
        client.bool_value("missing", &ctx, true);
        client.string_value("f0", &ctx, "type mismatch");
        client.with_string("f0", &ctx, "", str::len);
        let (windows, ..) = client.core().metrics.take();
        let counts = evaluations(&windows);
        assert_eq!(counts.get(&("missing".into(), 0, String::new())), Some(&2));
        assert_eq!(counts.get(&("f0".into(), 9, String::new())), Some(&2));

        // A client without data yet.
        let status = Status::starting(Source::None);
        let waiting = Client::sharing(Arc::new(Core::new(None, status, None, None)));
        assert!(waiting.bool_value("f0", &ctx, true));
        let detail = waiting.bool_detail("f0", &ctx, true);
        assert_eq!(detail.reason.to_string(), "ERROR(CLIENT_NOT_READY)");
        let (windows, ..) = waiting.core().metrics.take();
        assert_eq!(
            evaluations(&windows),
            BTreeMap::from([(("f0".into(), 0, String::new()), 2)])
        );
    }

    #[test]
    fn nested_evaluations_and_many_clients_on_one_thread_are_all_counted() {
        let clients: Vec<Client> = (0..12)
            .map(|_| Client::from_snapshot(splits(2, 1)))
            .collect();
        let ctx = Context::new("user-3");
        for _ in 0..3 {
            for client in &clients {
                client.with_bool_detail("f0", &ctx, false, |_| {
                    // A callback evaluating again, with the same client and another.
                    client.bool_value("f1", &ctx, false);
                    clients[0].bool_value("f1", &ctx, false);
                    client.with_string("f1", &ctx, "", |_| client.bool_value("f0", &ctx, false))
                });
            }
        }
        for (i, client) in clients.iter().enumerate() {
            let (windows, ..) = client.core().metrics.take();
            let per_flag = evaluations(&windows).into_iter().fold(
                BTreeMap::new(),
                |mut per_flag, ((flag, ..), n)| {
                    *per_flag.entry(flag).or_insert(0) += n;
                    per_flag
                },
            );
            let f1 = if i == 0 { 3 + 3 * 12 + 3 } else { 3 + 3 };
            assert_eq!(
                per_flag,
                BTreeMap::from([("f0".to_owned(), 6), ("f1".to_owned(), f1)]),
                "client {i}"
            );
        }
    }

    #[test]
    fn one_context_counts_ten_events_of_a_key_per_minute() {
        let client = TestData::new().client();
        let (noisy, quiet) = (Context::new("noisy"), Context::new("quiet"));
        for _ in 0..15 {
            client.track("checkout_error", &noisy);
        }
        client.track("checkout_error", &quiet);
        for _ in 0..3 {
            client.track("signup", &noisy);
        }
        client.track("", &quiet);
        let (windows, dropped, capped) = client.core().metrics.take();
        assert_eq!((dropped, capped), (1, 5));
        let events: Vec<(String, u64)> = windows[0]
            .events
            .iter()
            .map(|e| (e.event.clone(), e.count))
            .collect();
        assert_eq!(
            events,
            [("checkout_error".to_owned(), 11), ("signup".to_owned(), 3)]
        );
        let stats = client.stats();
        assert_eq!((stats.capped_events, stats.metrics_dropped), (5, 1));
    }

    #[test]
    fn events_are_attributed_to_the_variants_of_guarded_flags() {
        let data = TestData::new();
        data.set_flag_text(
            r#"
key: checkout-v2
kind: boolean
variants: { "on": true, "off": false }
off_variant: "off"
enabled: true
rules:
  - id: eu
    conditions: [{ attribute: country, op: in, values: [NL] }]
    serve: { variant: "on" }
default: { variant: "off" }
"#,
        )
        .expect("valid flag");
        let client = data.client();
        let metrics = &client.core().metrics;
        let (nl, us) = (
            Context::new("a").with("country", "NL"),
            Context::new("b").with("country", "US"),
        );
        // Before the server names a guard, events are counted only.
        client.track("checkout_error", &nl);
        let (_, sent) = metrics.request("instance", true).expect("a request");
        metrics.reported(
            sent,
            vec![
                pb::GuardedFlag {
                    flag: "checkout-v2".into(),
                    event: "checkout_error".into(),
                },
                pb::GuardedFlag {
                    flag: "removed-flag".into(),
                    event: "checkout_error".into(),
                },
            ],
        );
        client.track("checkout_error", &nl);
        client.track("checkout_error", &nl);
        client.track("checkout_error", &us);
        client.track("other_event", &us);
        let (windows, ..) = metrics.take();
        assert_eq!(windows.len(), 1, "the reported window was taken");
        let event = |key: &str| {
            windows[0]
                .events
                .iter()
                .find(|e| e.event == key)
                .cloned()
                .expect("event counted")
        };
        let errors = event("checkout_error");
        assert_eq!(errors.count, 4);
        let attributions: Vec<(String, String, u64)> = errors
            .attributions
            .iter()
            .map(|a| (a.flag.clone(), a.variant.clone(), a.count))
            .collect();
        assert_eq!(
            attributions,
            [
                ("checkout-v2".to_owned(), "off".to_owned(), 1),
                ("checkout-v2".to_owned(), "on".to_owned(), 2)
            ]
        );
        assert!(event("other_event").attributions.is_empty());
    }

    #[test]
    fn windows_kept_are_bounded_and_the_oldest_counted_as_dropped() {
        let client = Client::from_snapshot(splits(1, 1));
        let metrics = &client.core().metrics;
        let ctx = Context::new("user-1");
        for window in 0..(MAX_WINDOWS as i64 + 5) {
            client.bool_value("f0", &ctx, false);
            client.bool_value("f0", &ctx, false);
            metrics.close_window(1_000 + window);
        }
        // An empty window is skipped.
        metrics.close_window(5_000);
        let (request, _) = metrics.request("instance", false).expect("a request");
        assert_eq!(request.windows.len(), MAX_WINDOWS);
        assert_eq!(request.dropped, 10);
        assert_eq!(request.windows[0].start_unix_ms, 1_004);
        assert_eq!(client.stats().metrics_dropped, 10);
    }

    /// Evaluates once when dropped: kept in a thread-local, it evaluates while the thread's
    /// thread-locals are destroyed.
    struct EvaluatesOnDrop(Client);

    impl Drop for EvaluatesOnDrop {
        fn drop(&mut self) {
            self.0.bool_value("f0", &Context::new("u"), false);
        }
    }

    thread_local! {
        static LATE: std::cell::RefCell<Option<EvaluatesOnDrop>> =
            const { std::cell::RefCell::new(None) };
    }

    #[test]
    fn evaluations_while_a_thread_exits_are_counted() {
        let client = Client::from_snapshot(splits(1, 1));
        // Destructors run in the reverse order of registration: the late evaluation comes
        // after the thread's entries were emptied when `LATE` is registered first, and before
        // when the thread evaluated first.
        for late_registered_first in [true, false] {
            let client = client.clone();
            std::thread::spawn(move || {
                let late = EvaluatesOnDrop(client.clone());
                if late_registered_first {
                    LATE.with(|l| *l.borrow_mut() = Some(late));
                    client.bool_value("f0", &Context::new("u"), false);
                } else {
                    client.bool_value("f0", &Context::new("u"), false);
                    LATE.with(|l| *l.borrow_mut() = Some(late));
                }
            })
            .join()
            .expect("thread");
        }
        let (windows, ..) = client.core().metrics.take();
        assert_eq!(evaluations(&windows).values().sum::<u64>(), 4);
    }

    #[test]
    fn the_registry_forgets_the_tallies_of_threads_that_are_gone() {
        let client = Client::from_snapshot(splits(1, 1));
        for _ in 0..200 {
            let client = client.clone();
            std::thread::spawn(move || client.bool_value("f0", &Context::new("u"), false))
                .join()
                .expect("thread");
        }
        let tracked = client.core().metrics.registry().tracked.len();
        assert!(tracked <= 2 * PRUNE_AT, "{tracked} tallies tracked");
        let (windows, ..) = client.core().metrics.take();
        assert_eq!(evaluations(&windows).values().sum::<u64>(), 200);
    }
}
