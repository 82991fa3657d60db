//! Looking up in the store a token this flagstaffd has not heard of (DESIGN.md section 7): on
//! a database several flagstaffd share, a token created through one is announced to the others
//! within milliseconds, or within the 5 s safety net when an announcement is lost, and is
//! looked up meanwhile rather than refused.
//!
//! Anyone can present garbage tokens, so lookups are bounded: a key the store did not hold is
//! answered as unknown for [`REMEMBER_UNKNOWN`] without asking again; at most
//! [`CONCURRENT_LOOKUPS`] run at once and [`LOOKUPS_PER_SECOND`] begin per second (as many at
//! once after a quiet second), beyond which an unknown token is refused at once; and requests
//! presenting a token whose lookup is under way wait for that one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::storage::{TokenKey, TokenRecord};

/// Lookups begun per second at most, on average.
pub const LOOKUPS_PER_SECOND: u32 = 20;

/// Lookups under way at once at most, so that garbage tokens never take more than these of
/// the store's connections.
pub const CONCURRENT_LOOKUPS: usize = 4;

/// How long a token the store did not hold is answered as unknown without asking it again.
/// Short: a secret is only shown once its token is stored, so a token cannot be presented
/// before it exists, but a token restored into the database must not wait long.
pub const REMEMBER_UNKNOWN: Duration = Duration::from_secs(2);

/// Unknown tokens remembered at most. Lookups fill it no faster than
/// [`LOOKUPS_PER_SECOND`], so it holds about 60 at most; the bound is a safeguard.
const UNKNOWN_CAPACITY: usize = 1024;

/// A token as it is looked up: by its id, or by the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// Its id.
    Id(String),
    /// The SHA-256 of its secret, lower-case hex.
    Hash(String),
}

impl Key {
    /// The key as the store takes it.
    pub(crate) fn as_store(&self) -> TokenKey<'_> {
        match self {
            Key::Id(id) => TokenKey::Id(id),
            Key::Hash(hash) => TokenKey::Hash(hash),
        }
    }
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    /// The token, revoked or not, as held in memory since.
    Token(TokenRecord),
    /// The store holds no such token.
    Unknown,
    /// The store could not be asked: why.
    Failed(String),
}

/// What to do about a token not held in memory.
pub(crate) enum Next {
    /// Unknown: the store did not hold it a moment ago.
    RecentlyUnknown,
    /// Refused unasked: too many lookups are under way, or began this second.
    Busy,
    /// Wait for the lookup of this token already under way.
    Wait(watch::Receiver<Option<Found>>),
    /// Look it up, and [`finish`](Lookup::finish).
    Lead(Lookup),
}

/// How many tokens were looked up and how it went, since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupCounts {
    /// Found in the store (revoked or not).
    pub found: u64,
    /// Not in the store.
    pub unknown: u64,
    /// The store could not be asked.
    pub failed: u64,
    /// Answered as unknown without asking the store: it did not hold them a moment ago.
    pub recently_unknown: u64,
    /// Refused without asking the store: too many lookups.
    pub busy: u64,
}

/// The lookups of one [`Tokens`](super::Tokens): those under way, the tokens recently found
/// unknown, and the budget.
#[derive(Debug)]
pub(crate) struct Lookups {
    state: Mutex<State>,
    /// Permits for the lookups under way.
    running: Arc<Semaphore>,
    found: AtomicU64,
    unknown: AtomicU64,
    failed: AtomicU64,
    recently_unknown: AtomicU64,
    busy: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// The lookups under way, whose answer later requests for the same token wait for.
    under_way: HashMap<Key, watch::Receiver<Option<Found>>>,
    /// Tokens the store did not hold, until when they are answered as unknown unasked.
    unknown: HashMap<Key, Instant>,
    /// Lookups that may begin now (a token bucket of [`LOOKUPS_PER_SECOND`]).
    budget: f64,
    /// When `budget` was last refilled.
    refilled: Instant,
}

impl Lookups {
    /// No lookup made yet, and a full second's budget.
    pub(crate) fn new() -> Lookups {
        Lookups {
            state: Mutex::new(State {
                under_way: HashMap::new(),
                unknown: HashMap::new(),
                budget: f64::from(LOOKUPS_PER_SECOND),
                refilled: Instant::now(),
            }),
            running: Arc::new(Semaphore::new(CONCURRENT_LOOKUPS)),
            found: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            recently_unknown: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        }
    }

    /// What to do about `key`, which is not held in memory.
    pub(crate) fn begin(self: &Arc<Self>, key: Key) -> Next {
        // Nothing is left half-done by a panic under this lock: a poisoned one is still usable.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(answer) = state.under_way.get(&key) {
            return Next::Wait(answer.clone());
        }
        let now = Instant::now();
        match state.unknown.get(&key) {
            Some(until) if *until > now => {
                self.recently_unknown.fetch_add(1, Ordering::Relaxed);
                return Next::RecentlyUnknown;
            }
            Some(_) => {
                state.unknown.remove(&key);
            }
            None => {}
        }
        let Some(permit) = self.take_budget(&mut state, now) else {
            self.busy.fetch_add(1, Ordering::Relaxed);
            return Next::Busy;
        };
        let (answer, answered) = watch::channel(None);
        state.under_way.insert(key.clone(), answered);
        Next::Lead(Lookup {
            key,
            answer,
            lookups: self.clone(),
            _permit: permit,
        })
    }

    /// A permit to look up now, if one is free and the second's budget allows.
    fn take_budget(&self, state: &mut State, now: Instant) -> Option<OwnedSemaphorePermit> {
        let permit = self.running.clone().try_acquire_owned().ok()?;
        let rate = f64::from(LOOKUPS_PER_SECOND);
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        state.budget = (state.budget + elapsed * rate).min(rate);
        state.refilled = now;
        if state.budget < 1.0 {
            return None;
        }
        state.budget -= 1.0;
        Some(permit)
    }

    /// Records what the lookup of `key` found.
    fn finished(&self, key: &Key, found: &Found) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.under_way.remove(key);
        let counter = match found {
            Found::Token(_) => &self.found,
            Found::Failed(_) => &self.failed,
            Found::Unknown => {
                let now = Instant::now();
                if state.unknown.len() >= UNKNOWN_CAPACITY {
                    state.unknown.retain(|_, until| *until > now);
                }
                if state.unknown.len() < UNKNOWN_CAPACITY {
                    state.unknown.insert(key.clone(), now + REMEMBER_UNKNOWN);
                }
                &self.unknown
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> LookupCounts {
        LookupCounts {
            found: self.found.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            recently_unknown: self.recently_unknown.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
        }
    }
}

/// One lookup to make: whoever holds it asks the store, then [`finish`](Self::finish)es it.
pub(crate) struct Lookup {
    key: Key,
    answer: watch::Sender<Option<Found>>,
    lookups: Arc<Lookups>,
    /// Held until the lookup is finished (or abandoned).
    _permit: OwnedSemaphorePermit,
}

impl Lookup {
    /// The token looked up.
    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    /// Where its answer will be.
    pub(crate) fn answer(&self) -> watch::Receiver<Option<Found>> {
        self.answer.subscribe()
    }

    /// Tells every request waiting what was found.
    pub(crate) fn finish(self, found: Found) {
        self.lookups.finished(&self.key, &found);
        self.answer.send_replace(Some(found));
    }
}

impl Drop for Lookup {
    fn drop(&mut self) {
        // Abandoned without an answer (a panic): the next request looks up again, and those
        // waiting see the sender gone.
        if self.answer.borrow().is_none() {
            let mut state = self.lookups.state.lock().unwrap_or_else(|p| p.into_inner());
            state.under_way.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(lookups: &Arc<Lookups>, key: &str) -> Lookup {
        match lookups.begin(Key::Hash(key.to_owned())) {
            Next::Lead(lookup) => lookup,
            _ => panic!("{key} is not looked up"),
        }
    }

    #[test]
    fn an_unknown_token_is_not_asked_about_again_for_a_while() {
        let lookups = Arc::new(Lookups::new());
        lead(&lookups, "a").finish(Found::Unknown);
        assert!(matches!(
            lookups.begin(Key::Hash("a".to_owned())),
            Next::RecentlyUnknown
        ));
        // Another token is looked up; a found one is not remembered here (memory holds it).
        lead(&lookups, "b").finish(Found::Failed("down".to_owned()));
        lead(&lookups, "b").finish(Found::Unknown);
        let counts = lookups.counts();
        assert_eq!(
            (counts.unknown, counts.failed, counts.recently_unknown),
            (2, 1, 1)
        );
    }

    #[test]
    fn requests_for_a_token_under_way_wait_for_its_lookup() {
        let lookups = Arc::new(Lookups::new());
        let lookup = lead(&lookups, "a");
        let Next::Wait(mut answer) = lookups.begin(Key::Hash("a".to_owned())) else {
            panic!("a second lookup of the same token");
        };
        lookup.finish(Found::Unknown);
        assert!(matches!(*answer.borrow_and_update(), Some(Found::Unknown)));
        // Abandoned: the next request looks up again.
        drop(lead(&lookups, "b"));
        drop(lead(&lookups, "b"));
    }

    #[test]
    fn lookups_are_bounded_at_once_and_per_second() {
        let lookups = Arc::new(Lookups::new());
        let running: Vec<Lookup> = (0..CONCURRENT_LOOKUPS)
            .map(|i| lead(&lookups, &format!("t{i}")))
            .collect();
        assert!(matches!(
            lookups.begin(Key::Hash("one-too-many".to_owned())),
            Next::Busy
        ));
        for lookup in running {
            lookup.finish(Found::Unknown);
        }
        // One second's budget, then none until time passes.
        let mut begun = CONCURRENT_LOOKUPS;
        while let Next::Lead(lookup) = lookups.begin(Key::Hash(format!("t{begun}"))) {
            lookup.finish(Found::Unknown);
            begun += 1;
            assert!(begun <= 2 * LOOKUPS_PER_SECOND as usize, "unbounded");
        }
        assert!(begun >= LOOKUPS_PER_SECOND as usize, "{begun}");
        assert_eq!(lookups.counts().busy, 2);
    }
}
