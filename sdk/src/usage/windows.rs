//! The windows of usage metrics: the current one, into which evaluation counts are read and
//! application events counted, and the closed ones not reported yet; and what a report sends.
//!
//! [`Windows::track`] counts application events, at most [`EVENTS_PER_CONTEXT_PER_MINUTE`] of
//! one event key per context key per minute (the rest are `capped_events`, see [`EventCap`]),
//! and attributes each to the variant every flag guarded on that event (as the server's last
//! answer named them) serves the context now.
//!
//! Every report closes the current window (an empty one is skipped) and sends every window
//! kept, oldest first ([`Windows::request`]); a failed report keeps them for the next, at most
//! [`MAX_WINDOWS`], the oldest dropped beyond. What a bound drops is counted in the request's
//! `dropped`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use flagstaff_engine::{Context, Snapshot};
use flagstaff_proto::pb;

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

/// The current window, the closed ones not reported yet, and the per-context cap.
#[derive(Debug)]
pub(crate) struct Windows {
    start_ms: i64,
    /// Flag key → (version, variant, count).
    evaluations: HashMap<String, Vec<(u64, String, u64)>>,
    evaluation_entries: usize,
    events: HashMap<String, EventCounts>,
    closed: VecDeque<(u64, pb::MetricsWindow)>,
    next_window: u64,
    /// Dropped and capped since the last successful report, for the next request.
    dropped: u64,
    capped: u64,
    /// The same since the client started, for [`crate::Stats`].
    pub(crate) dropped_total: u64,
    pub(crate) capped_total: u64,
    event_cap: EventCap,
    /// Event key → the flags guarded on it, from the server's last answer.
    guards: HashMap<String, Vec<String>>,
    /// Whether the server has answered a report yet.
    guards_known: bool,
}

/// One event key's count in the current window, and its attributions.
#[derive(Debug, Default)]
struct EventCounts {
    count: u64,
    /// (flag, version, variant, count).
    attributions: Vec<(String, u64, String, u64)>,
}

/// How many events of each key each context tracked in the current minute.
#[derive(Debug)]
pub(crate) struct EventCap {
    since: Instant,
    counts: HashMap<String, HashMap<Box<str>, u32>>,
    entries: usize,
}

/// What [`EventCap::admit`] decided.
enum Admission {
    /// Counted.
    Counted,
    /// Over the per-minute cap of its context.
    Capped,
    /// The cap remembers as many contexts as it may: dropped.
    Full,
}

impl EventCap {
    /// Whether one more event `event` of `context` counts, at `now`.
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

impl Windows {
    pub(crate) fn new() -> Windows {
        Windows {
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
            event_cap: EventCap {
                since: Instant::now(),
                counts: HashMap::new(),
                entries: 0,
            },
            guards: HashMap::new(),
            guards_known: false,
        }
    }

    /// Counts application event `event` for `ctx`, and attributes it to what each flag
    /// guarded on it serves `ctx` in `snapshot`.
    pub(crate) fn track(&mut self, event: &str, ctx: &Context<'_>, snapshot: Option<&Snapshot>) {
        if event.is_empty() || event.len() > MAX_EVENT_KEY_BYTES {
            self.drop_counts(1);
            return;
        }
        match self.event_cap.admit(event, ctx.key(), Instant::now()) {
            Admission::Counted => {}
            Admission::Capped => {
                self.capped += 1;
                self.capped_total += 1;
                return;
            }
            Admission::Full => {
                self.drop_counts(1);
                return;
            }
        }
        if !self.events.contains_key(event) {
            if self.events.len() >= MAX_EVENT_KEYS {
                self.drop_counts(1);
                return;
            }
            self.events.insert(event.to_owned(), EventCounts::default());
        }
        let Some(tally) = self.events.get_mut(event) else {
            return;
        };
        tally.count += 1;
        let mut dropped = 0;
        if let (Some(flags), Some(snapshot)) = (self.guards.get(event), snapshot) {
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
        self.drop_counts(dropped);
    }

    /// The request reporting the windows kept (as many as fit one request), `dropped` and
    /// `capped_events`; `None` when there is nothing to report, unless `always`. A client
    /// whose reports the server never answered sends one anyway, to learn the guards.
    pub(crate) fn request(
        &self,
        instance_id: &str,
        always: bool,
    ) -> Option<(pb::ReportMetricsRequest, Sent)> {
        if !always
            && self.closed.is_empty()
            && self.dropped == 0
            && self.capped == 0
            && self.guards_known
        {
            return None;
        }
        let mut windows = Vec::new();
        let mut bytes = 0;
        let mut through = None;
        for (seq, window) in &self.closed {
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
            dropped: self.dropped,
            capped: self.capped,
            more: windows.len() < self.closed.len(),
        };
        let request = pb::ReportMetricsRequest {
            instance_id: instance_id.to_owned(),
            // The sdk token names the environment.
            environment: String::new(),
            windows,
            dropped: self.dropped,
            capped_events: self.capped,
        };
        Some((request, sent))
    }

    /// The server has what `sent` carried, and guards `guards` from now on.
    pub(crate) fn reported(&mut self, sent: Sent, guards: Vec<pb::GuardedFlag>) {
        if let Some(through) = sent.through {
            while self.closed.front().is_some_and(|(seq, _)| *seq <= through) {
                self.closed.pop_front();
            }
        }
        self.dropped = self.dropped.saturating_sub(sent.dropped);
        self.capped = self.capped.saturating_sub(sent.capped);
        let mut by_event: HashMap<String, Vec<String>> = HashMap::new();
        for guard in guards {
            let flags = by_event.entry(guard.event).or_default();
            if !flags.contains(&guard.flag) {
                flags.push(guard.flag);
            }
        }
        self.guards = by_event;
        self.guards_known = true;
    }

    /// Takes every closed window, as a report would send them, with the `dropped` and
    /// `capped_events` counts: for tests.
    #[cfg(test)]
    pub(crate) fn take(&mut self) -> (Vec<pb::MetricsWindow>, u64, u64) {
        let windows = self.closed.drain(..).map(|(_, w)| w).collect();
        let taken = (windows, self.dropped, self.capped);
        self.dropped = 0;
        self.capped = 0;
        taken
    }

    /// Counts `n` evaluations of `flag` at `version` that served `variant`.
    pub(crate) fn count(&mut self, flag: &str, version: u64, variant: &str, n: u64) {
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

    /// Counts `n` counts dropped.
    pub(crate) fn drop_counts(&mut self, n: u64) {
        self.dropped += n;
        self.dropped_total += n;
    }

    /// Closes the current window at `now_ms`; an empty one is not kept.
    pub(crate) fn close(&mut self, now_ms: i64) {
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
