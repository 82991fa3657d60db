//! Usage metrics: what a client evaluated and which application events it saw, kept in time
//! windows until the server has them (`Sync.ReportMetrics`, proto/flagstaff/v1/sync.proto).
//!
//! Evaluations are counted per thread, each on a [`Tally`] ([`tally`]; which tally a thread
//! counts on is the evaluation's business: `evaluation::per_thread`). [`Usage`], the collector, keeps
//! the registry of every thread's tallies and reads them into the current window, naming each
//! counted variant id by the snapshot that served it: one `EvaluationCount` per flag, version
//! and variant. Evaluations that served the caller's default are counted too, with an empty
//! variant and version 0 when the flag was not found (or the client had no data yet), else the
//! flag's version. [`Usage::track`] counts application events ([`windows`] holds the windows,
//! the events, their per-context cap and the reports' contents).
//!
//! The background task's reporter (`sync::report`) closes the current window every
//! interval and sends what [`Usage::request`] gives it.
//!
//! Two mutexes, never held across an `.await`, always taken in this order: the registry of
//! tallies (taken when a thread starts a tally, and by the collector) and the windows (taken
//! by the collector, by `track` and by reports).

pub(crate) mod tally;
pub(crate) mod windows;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use flagstaff_engine::counting;
use flagstaff_engine::{Context, Snapshot};
use flagstaff_proto::pb;
use tokio::sync::{mpsc, oneshot};

use self::tally::Tally;
use self::windows::{Sent, Windows};

/// Tallies the registry holds before it checks for those their threads let go of, at least.
const PRUNE_AT: usize = 64;

/// A request to report now, answered with the outcome.
pub(crate) type Flush = oneshot::Sender<Result<(), String>>;

/// A client's usage metrics: every thread's tallies, and the windows they are read into.
pub(crate) struct Usage {
    registry: Mutex<Registry>,
    windows: Mutex<Windows>,
    /// To the background task's reporter; `None` for a client without a server.
    flushes: Option<mpsc::Sender<Flush>>,
    reports: AtomicU64,
    report_failures: AtomicU64,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage")
            .field("reports", &self.reports.load(Ordering::Relaxed))
            .field(
                "report_failures",
                &self.report_failures.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// The tallies of every thread, and what was read from each so far.
#[derive(Debug)]
struct Registry {
    registered: Vec<Registered>,
    prune_at: usize,
}

/// A registered tally, with what the collector read from it so far.
#[derive(Debug)]
struct Registered {
    tally: Arc<Tally>,
    /// The count of each table slot at the last read.
    seen: Box<[u64]>,
}

/// Counters of [`crate::Stats`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) reports: u64,
    pub(crate) report_failures: u64,
    pub(crate) dropped: u64,
    pub(crate) capped: u64,
}

impl Usage {
    pub(crate) fn new(flushes: Option<mpsc::Sender<Flush>>) -> Usage {
        Usage {
            registry: Mutex::new(Registry {
                registered: Vec::new(),
                prune_at: PRUNE_AT,
            }),
            windows: Mutex::new(Windows::new()),
            flushes,
            reports: AtomicU64::new(0),
            report_failures: AtomicU64::new(0),
        }
    }

    /// Where flush requests go; `None` for a client without a server.
    pub(crate) fn flushes(&self) -> Option<&mpsc::Sender<Flush>> {
        self.flushes.as_ref()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn windows(&self) -> MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a thread's new tally to those the collector reads. Every so often it also reads
    /// and forgets the tallies their threads have let go of, so that a client that never
    /// reports (or whose threads come and go quickly) holds a bounded number.
    pub(crate) fn register(&self, tally: &Arc<Tally>) {
        let mut registry = self.registry();
        registry.registered.push(Registered {
            tally: tally.clone(),
            seen: vec![0; tally.slots()].into_boxed_slice(),
        });
        if registry.registered.len() >= registry.prune_at {
            self.read(&mut registry, true);
            registry.prune_at = PRUNE_AT.max(registry.registered.len() * 2);
        }
    }

    /// Reads the registered tallies (or only those their threads let go of) into the current
    /// window, and forgets those their threads let go of.
    fn read(&self, registry: &mut Registry, finished_only: bool) {
        let mut groups: Vec<(Arc<Snapshot>, HashMap<usize, u64>)> = Vec::new();
        let mut defaults: Vec<(Box<str>, u64, u64)> = Vec::new();
        let mut dropped = 0;
        registry.registered.retain_mut(|registered| {
            // Acquire, when unique: the thread's last counts are visible.
            let finished = Arc::get_mut(&mut registered.tally).is_some();
            if finished_only && !finished {
                return true;
            }
            let tally = &registered.tally;
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
            tally.read(&mut registered.seen, &mut add);
            let mut locked = tally.locked();
            for (id, n) in locked.ids.drain() {
                add(id, n);
            }
            // The keys stay, so that the thread counts them again without allocating.
            for (key, versions) in &mut locked.defaults {
                for (version, n) in versions.iter_mut().filter(|(_, n)| *n > 0) {
                    defaults.push((key.clone(), *version, std::mem::take(n)));
                }
            }
            dropped += std::mem::take(&mut locked.dropped);
            drop(locked);
            !finished
        });
        if groups.is_empty() && defaults.is_empty() && dropped == 0 {
            return;
        }
        let mut windows = self.windows();
        for (snapshot, mut counts) in groups {
            for (id, flag, version, variant) in counting::variant_ids(&snapshot) {
                if counts.is_empty() {
                    break;
                }
                if let Some(n) = counts.remove(&id.get()) {
                    windows.count(flag, version.unwrap_or(0), variant, n);
                }
            }
            // Every id counted was served by this snapshot, so none is left.
            dropped += counts.values().sum::<u64>();
        }
        for (flag, version, n) in defaults {
            windows.count(&flag, version, "", n);
        }
        windows.drop_counts(dropped);
    }

    /// Reads every tally and closes the current window at `now_ms` (unless it is empty).
    pub(crate) fn close_window(&self, now_ms: i64) {
        {
            let mut registry = self.registry();
            self.read(&mut registry, false);
        }
        self.windows().close(now_ms);
    }

    /// Counts application event `event` for `ctx`, and attributes it to what each flag
    /// guarded on it serves `ctx` in `snapshot` (see [`Windows::track`]).
    pub(crate) fn track(&self, event: &str, ctx: &Context<'_>, snapshot: Option<&Snapshot>) {
        self.windows().track(event, ctx, snapshot);
    }

    /// The request reporting the windows kept (see [`Windows::request`]).
    pub(crate) fn request(
        &self,
        instance_id: &str,
        always: bool,
    ) -> Option<(pb::ReportMetricsRequest, Sent)> {
        self.windows().request(instance_id, always)
    }

    /// The server has what `sent` carried, and guards `guards` from now on.
    pub(crate) fn reported(&self, sent: Sent, guards: Vec<pb::GuardedFlag>) {
        self.windows().reported(sent, guards);
        self.reports.fetch_add(1, Ordering::Relaxed);
    }

    /// A report failed: its windows stay for the next.
    pub(crate) fn failed(&self) {
        self.report_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters of [`crate::Stats`] that usage metrics keep.
    pub(crate) fn totals(&self) -> Totals {
        let windows = self.windows();
        Totals {
            reports: self.reports.load(Ordering::Relaxed),
            report_failures: self.report_failures.load(Ordering::Relaxed),
            dropped: windows.dropped_total,
            capped: windows.capped_total,
        }
    }

    /// Closes the current window and takes every window kept, as a report would send them,
    /// with the `dropped` and `capped_events` counts: for tests.
    #[cfg(test)]
    pub(crate) fn take(&self) -> (Vec<pb::MetricsWindow>, u64, u64) {
        self.close_window(windows::unix_ms());
        self.windows().take()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Barrier;

    use flagstaff_engine::Snapshot;

    use super::*;
    use crate::core::Core;
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
        let (windows, dropped, capped) = client.core().usage.take();
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
        let (windows, dropped, _) = client.core().usage.take();
        assert_eq!(dropped, 0);
        assert_eq!(evaluations(&windows), want);
        let registry = client.core().usage.registry();
        let largest = registry.registered.iter().map(|t| t.tally.slots()).max();
        assert_eq!(largest, Some(tally::MAX_SLOTS), "the table grew");
        assert!(
            registry
                .registered
                .iter()
                .all(|t| t.tally.locked().ids.is_empty()),
            "the locked counts were read"
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
        let (windows, ..) = client.core().usage.take();
        let counts = evaluations(&windows);
        assert_eq!(counts.get(&("missing".into(), 0, String::new())), Some(&2));
        assert_eq!(counts.get(&("f0".into(), 9, String::new())), Some(&2));

        // A client without data yet.
        let status = Status::starting(Source::None);
        let waiting = Client::sharing(Arc::new(Core::new(None, status, None, None)));
        assert!(waiting.bool_value("f0", &ctx, true));
        let detail = waiting.bool_detail("f0", &ctx, true);
        assert_eq!(detail.reason.to_string(), "ERROR(CLIENT_NOT_READY)");
        let (windows, ..) = waiting.core().usage.take();
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
            let (windows, ..) = client.core().usage.take();
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
        let (windows, dropped, capped) = client.core().usage.take();
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
        let usage = &client.core().usage;
        let (nl, us) = (
            Context::new("a").with("country", "NL"),
            Context::new("b").with("country", "US"),
        );
        // Before the server names a guard, events are counted only.
        client.track("checkout_error", &nl);
        let (_, sent) = usage.request("instance", true).expect("a request");
        usage.reported(
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
        let (windows, ..) = usage.take();
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
        let usage = &client.core().usage;
        let ctx = Context::new("user-1");
        for window in 0..(windows::MAX_WINDOWS as i64 + 5) {
            client.bool_value("f0", &ctx, false);
            client.bool_value("f0", &ctx, false);
            usage.close_window(1_000 + window);
        }
        // An empty window is skipped.
        usage.close_window(5_000);
        let (request, _) = usage.request("instance", false).expect("a request");
        assert_eq!(request.windows.len(), windows::MAX_WINDOWS);
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
        let (windows, ..) = client.core().usage.take();
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
        let tracked = client.core().usage.registry().registered.len();
        assert!(tracked <= 2 * PRUNE_AT, "{tracked} tallies tracked");
        let (windows, ..) = client.core().usage.take();
        assert_eq!(evaluations(&windows).values().sum::<u64>(), 200);
    }
}
