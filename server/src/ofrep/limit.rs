//! Rate limits and stream caps for OFREP (DESIGN.md section 10): a `client` token is public,
//! embedded in every page of a site, so whoever holds it is limited per token and per address,
//! and may hold only so many event streams open.
//!
//! # Rates
//!
//! Each token and each client address has a token bucket, kept as one instant per key (the
//! generic cell rate algorithm, GCRA): a request is let through when the bucket has a request
//! left, and takes one; the bucket earns one back every [`Rate::interval`], up to
//! [`Rate::burst`]. A refused request takes nothing, so a client that keeps knocking gets
//! through at exactly its rate. A request must pass both its token's and its address's bucket,
//! and takes from neither when either refuses it; the answer is a [`RetryAfter`]: the whole
//! seconds (at least 1) until it would pass, for HTTP's `Retry-After`.
//!
//! IPv4 addresses are limited one by one (an IPv4 address mapped into IPv6, as a dual-stack
//! listener reports it, counts as that IPv4 address); IPv6 addresses by their /64, the
//! smallest block one subscriber is given, so that one machine cannot pose as 2^64 clients.
//!
//! # Memory
//!
//! A bucket that has earned back its whole burst carries no state: it is the same as a bucket
//! never seen, so it can be forgotten. Each table (addresses, tokens) holds at most
//! [`RateLimits::max_tracked`] buckets. When a new key finds its table full, buckets that are
//! full again are forgotten first; if more than half the table is still in use, the buckets
//! closest to full are forgotten until half of it is free. Forgetting a bucket early only
//! gives its key a fresh burst, and those closest to full are the ones that lose least: a
//! flooding address keeps its debt while an attacker cycling through fresh addresses (each
//! sending one request) pushes out only its own. An address bucket is an address and an
//! instant, about 55 bytes in the hash table, so at the default of 100,000 the address table
//! stays under 8 MiB (a cleaning's scratch list included) whatever arrives. A full table is
//! cleaned in one pass over it, after which at least half of it is free, so cleaning costs
//! O(1) per new key on average. The tables hash with std's keyed SipHash: addresses are
//! chosen by the attacker, and a predictable hash would let them collide.
//!
//! Unknown tokens are refused (401) before they are limited, so the token table holds only
//! tokens that exist.
//!
//! # Streams
//!
//! [`StreamCaps`] counts each token's open event streams; [`StreamCaps::acquire`] gives a
//! [`StreamPermit`] that holds one slot until dropped, or `None` when the token is at its cap
//! (the handler answers 429).
//!
//! Everything here is synchronous: each check takes one std mutex for a few hash-map
//! operations and never awaits while holding it. Time is passed in (`now`), a
//! [`tokio::time::Instant`], so tests with paused time need no sleeping.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The longest time to earn back one request: a day. It keeps a bucket's arithmetic far from
/// overflowing an instant whatever the configuration (a day's interval times the largest burst
/// is millions of years, not billions).
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// A rate: `burst` requests at once, then one every `per / requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests earned back per `per`; 0 turns the limit off.
    pub requests: u32,
    /// The period `requests` are earned back in.
    pub per: Duration,
    /// The most requests let through at once (at least 1).
    pub burst: u32,
}

impl Rate {
    /// `requests` per second, up to `burst` at once.
    pub const fn per_second(requests: u32, burst: u32) -> Rate {
        Rate {
            requests,
            per: Duration::from_secs(1),
            burst,
        }
    }

    /// The time to earn back one request, between 1 ns and [`MAX_INTERVAL`]; `None` when the
    /// limit is off.
    pub fn interval(&self) -> Option<Duration> {
        (self.requests > 0)
            .then(|| (self.per / self.requests).clamp(Duration::from_nanos(1), MAX_INTERVAL))
    }
}

/// The limits OFREP applies to `client` tokens.
///
/// The defaults assume one public token shared by every visitor of a busy site, where a page
/// view costs an OFREP provider one bulk evaluation (plus one more per change event):
///
/// - **per token, 1,000/s, burst 2,000**: 3.6 million page views an hour, more than most sites
///   serve, while a leaked token cannot make one server evaluate without bound. A bigger site
///   raises it.
/// - **per address, 20/s, burst 60**: a browser needs a few requests per page; 60 at once
///   covers a burst of tabs or a few dozen people behind one NAT opening the site together,
///   and 20/s a whole office browsing. One script on one machine gets no further.
/// - **10,000 streams per token**: one event stream per open tab. flagstaffd is sized for ten
///   thousand Watch streams (DESIGN.md section 7), and an SSE stream costs less than one.
/// - **100 streams per address**: tabs of one browser, or a NAT of an office, while one
///   script holding a leaked ticket cannot take a token's whole cap from real visitors.
/// - **100,000 buckets per table**: the most addresses (and tokens) remembered at once; see
///   the module docs for why that bounds memory and what forgetting costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Each token's rate.
    pub per_token: Rate,
    /// Each client address's rate (IPv6 by /64).
    pub per_address: Rate,
    /// Event streams one token may hold open at once.
    pub streams_per_token: usize,
    /// Event streams one client address (IPv6 by /64) may hold open at once, all tokens
    /// together.
    pub streams_per_address: usize,
    /// Buckets each table (addresses, tokens) keeps at most.
    pub max_tracked: usize,
}

impl Default for RateLimits {
    fn default() -> RateLimits {
        RateLimits {
            per_token: Rate::per_second(1_000, 2_000),
            per_address: Rate::per_second(20, 60),
            streams_per_token: 10_000,
            streams_per_address: 100,
            max_tracked: 100_000,
        }
    }
}

/// How long a refused client should wait before asking again: whole seconds, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(u64);

impl RetryAfter {
    /// Seconds to wait (the value of a `Retry-After` header).
    pub fn seconds(self) -> u64 {
        self.0
    }

    /// The whole seconds that cover `wait`, at least 1.
    fn covering(wait: Duration) -> RetryAfter {
        let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        RetryAfter(whole.max(1))
    }
}

impl std::fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The key an address is limited by: IPv4 alone, IPv6 by its /64.
pub(crate) fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// The buckets of one kind of key, each as its theoretical arrival time (TAT): the instant at
/// which it would be full again. A key absent, or whose TAT has passed, has a full bucket.
#[derive(Debug)]
struct Table<K> {
    tats: HashMap<K, Instant>,
    cap: usize,
}

/// A request's outcome in one table: the key's next TAT, or how long until it would pass.
type Outcome = Result<Option<Instant>, Duration>;

impl<K: Hash + Eq> Table<K> {
    fn new(cap: usize) -> Table<K> {
        Table {
            tats: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Whether a request of `key` passes at `now`: `Ok(Some(tat))` to record if it does
    /// (`Ok(None)` for a limit that is off), else how long until it would.
    fn check<Q>(&self, key: &Q, rate: &Rate, now: Instant) -> Outcome
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(interval) = rate.interval() else {
            return Ok(None);
        };
        let tat = self.tats.get(key).map_or(now, |&tat| tat.max(now));
        let next = tat + interval;
        let allowed_until = now + interval.saturating_mul(rate.burst.max(1));
        if next <= allowed_until {
            Ok(Some(next))
        } else {
            Err(next - allowed_until)
        }
    }

    /// Records `key`'s new TAT, making room first if it is new and the table full.
    fn record<Q>(&mut self, key: &Q, tat: Instant, now: Instant)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(slot) = self.tats.get_mut(key) {
            *slot = tat;
            return;
        }
        if self.tats.len() >= self.cap {
            self.make_room(now);
        }
        self.tats.insert(key.to_owned(), tat);
    }

    /// Forgets the buckets that are full again, then, while more than half the table is in
    /// use, those closest to full (see the module docs).
    fn make_room(&mut self, now: Instant) {
        self.tats.retain(|_, tat| *tat > now);
        let keep = self.cap / 2;
        if self.tats.len() > keep {
            let mut tats: Vec<Instant> = self.tats.values().copied().collect();
            let forget = tats.len() - keep;
            let (_, &mut threshold, _) = tats.select_nth_unstable(forget - 1);
            // Ties at the threshold go too: the table only ends up emptier.
            self.tats.retain(|_, tat| *tat > threshold);
        }
    }
}

/// The buckets, under one lock.
#[derive(Debug)]
struct Buckets {
    tokens: Table<String>,
    addresses: Table<IpAddr>,
}

/// Per-token and per-address rate limits. Cheap to share (`Arc`), and safe from any thread.
#[derive(Debug)]
pub struct Limiter {
    limits: RateLimits,
    /// A std mutex: held for a few hash-map operations, never across an await.
    buckets: Mutex<Buckets>,
}

impl Limiter {
    /// A limiter with no history.
    pub fn new(limits: RateLimits) -> Limiter {
        Limiter {
            limits,
            buckets: Mutex::new(Buckets {
                tokens: Table::new(limits.max_tracked),
                addresses: Table::new(limits.max_tracked),
            }),
        }
    }

    /// The limits applied.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Buckets> {
        // Each bucket is one instant, replaced whole: a panic cannot leave one half-written.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a request of token `token_id` from `addr` through at `now`, taking one from both
    /// buckets, or refuses it, taking nothing, with how long to wait.
    pub fn check(&self, token_id: &str, addr: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        let address = address_key(addr);
        let mut buckets = self.lock();
        let by_token = buckets.tokens.check(token_id, &self.limits.per_token, now);
        let by_address = buckets
            .addresses
            .check(&address, &self.limits.per_address, now);
        match (by_token, by_address) {
            (Ok(token_tat), Ok(address_tat)) => {
                if let Some(tat) = token_tat {
                    buckets.tokens.record(token_id, tat, now);
                }
                if let Some(tat) = address_tat {
                    buckets.addresses.record(&address, tat, now);
                }
                Ok(())
            }
            (Err(wait), Ok(_)) | (Ok(_), Err(wait)) => Err(RetryAfter::covering(wait)),
            (Err(a), Err(b)) => Err(RetryAfter::covering(a.max(b))),
        }
    }

    /// How many address buckets are kept (at most [`RateLimits::max_tracked`]).
    pub fn tracked_addresses(&self) -> usize {
        self.lock().addresses.tats.len()
    }

    /// How many token buckets are kept (at most [`RateLimits::max_tracked`]).
    pub fn tracked_tokens(&self) -> usize {
        self.lock().tokens.tats.len()
    }
}

/// Open streams by token id; a token with none has no entry.
type Open = Arc<Mutex<HashMap<String, usize>>>;

fn lock_open(open: &Open) -> MutexGuard<'_, HashMap<String, usize>> {
    // Counts are changed by one whole step: a panic cannot leave one half-changed.
    open.lock().unwrap_or_else(|p| p.into_inner())
}

/// Caps the event streams each token holds open. Its map holds one entry per token with a
/// stream open, so it is bounded by the streams themselves.
#[derive(Debug)]
pub struct StreamCaps {
    per_token: usize,
    /// A std mutex: held for one hash-map operation, never across an await.
    open: Open,
}

impl StreamCaps {
    /// At most `per_token` open streams per token (or whatever else the key names: an
    /// address).
    pub fn new(per_token: usize) -> StreamCaps {
        StreamCaps {
            per_token,
            open: Arc::default(),
        }
    }

    /// A slot for one more stream of `token_id`, held until the permit is dropped; `None`
    /// when the token already holds its cap.
    pub fn acquire(&self, token_id: &str) -> Option<StreamPermit> {
        let mut open = lock_open(&self.open);
        match open.get_mut(token_id) {
            Some(count) if *count >= self.per_token => return None,
            Some(count) => *count += 1,
            None if self.per_token == 0 => return None,
            None => {
                open.insert(token_id.to_owned(), 1);
            }
        }
        Some(StreamPermit {
            open: self.open.clone(),
            token_id: token_id.to_owned(),
        })
    }

    /// How many streams `token_id` holds open.
    pub fn open(&self, token_id: &str) -> usize {
        lock_open(&self.open).get(token_id).copied().unwrap_or(0)
    }
}

/// One open stream's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamPermit {
    open: Open,
    token_id: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = lock_open(&self.open);
        if let Some(count) = open.get_mut(&self.token_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.token_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
    }

    fn limits(per_token: Rate, per_address: Rate) -> RateLimits {
        RateLimits {
            per_token,
            per_address,
            ..RateLimits::default()
        }
    }

    const OFF: Rate = Rate::per_second(0, 0);

    /// How many of `n` requests at `now` pass.
    fn passed(limiter: &Limiter, token: &str, addr: IpAddr, n: usize, now: Instant) -> usize {
        (0..n)
            .filter(|_| limiter.check(token, addr, now).is_ok())
            .count()
    }

    #[test]
    fn a_burst_passes_then_requests_wait_for_the_rate() {
        let limiter = Limiter::new(RateLimits::default());
        let now = Instant::now();
        // The address's burst of 60, then 20 a second.
        assert_eq!(passed(&limiter, TOKEN, v4(1), 60, now), 60);
        assert_eq!(limiter.check(TOKEN, v4(1), now), Err(RetryAfter(1)));
        let later = now + Duration::from_millis(500);
        assert_eq!(passed(&limiter, TOKEN, v4(1), 100, later), 10);
        let later = now + Duration::from_secs(60);
        assert_eq!(passed(&limiter, TOKEN, v4(1), 100, later), 60);
    }

    #[test]
    fn retry_after_counts_the_whole_seconds_until_a_request_would_pass() {
        // Two at once, then one every 10 s.
        let rate = Rate {
            requests: 1,
            per: Duration::from_secs(10),
            burst: 2,
        };
        let limiter = Limiter::new(limits(OFF, rate));
        let start = Instant::now();
        assert_eq!(passed(&limiter, TOKEN, v4(1), 2, start), 2);
        assert_eq!(limiter.check(TOKEN, v4(1), start), Err(RetryAfter(10)));
        // Refusals take nothing: the wait shrinks with time alone.
        let at = start + Duration::from_millis(4_500);
        assert_eq!(limiter.check(TOKEN, v4(1), at), Err(RetryAfter(6)));
        let at = start + Duration::from_millis(9_999);
        assert_eq!(limiter.check(TOKEN, v4(1), at), Err(RetryAfter(1)));
        let at = start + Duration::from_secs(10);
        assert_eq!(limiter.check(TOKEN, v4(1), at), Ok(()));
        assert_eq!(limiter.check(TOKEN, v4(1), at), Err(RetryAfter(10)));
        assert_eq!(RetryAfter(7).to_string(), "7");
        // However long the configured period, a bucket's arithmetic stays in range.
        let slow = Rate {
            requests: 1,
            per: Duration::MAX,
            burst: u32::MAX,
        };
        assert_eq!(slow.interval(), Some(MAX_INTERVAL));
        let limiter = Limiter::new(limits(slow, slow));
        assert_eq!(limiter.check(TOKEN, v4(1), start), Ok(()));
        assert_eq!(RetryAfter::covering(Duration::ZERO).seconds(), 1);
        assert_eq!(RetryAfter::covering(Duration::from_millis(1)).seconds(), 1);
        assert_eq!(
            RetryAfter::covering(Duration::from_millis(2_001)).seconds(),
            3
        );
    }

    #[test]
    fn the_token_limits_every_address_together() {
        let limiter = Limiter::new(limits(Rate::per_second(10, 100), OFF));
        let now = Instant::now();
        let passed_total: usize = (0..=255)
            .map(|last| passed(&limiter, TOKEN, v4(last), 1, now))
            .sum();
        assert_eq!(passed_total, 100);
        assert_eq!(limiter.check(TOKEN, v4(7), now), Err(RetryAfter(1)));
        // Another token is not affected.
        assert_eq!(passed(&limiter, "other", v4(7), 100, now), 100);
    }

    #[test]
    fn addresses_are_limited_apart_and_a_refusal_takes_from_neither_bucket() {
        let limiter = Limiter::new(limits(Rate::per_second(1, 10), Rate::per_second(1, 3)));
        let now = Instant::now();
        assert_eq!(passed(&limiter, TOKEN, v4(1), 5, now), 3);
        // The address's refusals did not spend the token's burst: 7 remain, for others.
        assert_eq!(passed(&limiter, TOKEN, v4(2), 3, now), 3);
        assert_eq!(passed(&limiter, TOKEN, v4(3), 3, now), 3);
        assert_eq!(passed(&limiter, TOKEN, v4(4), 3, now), 1);
        // The token refused these: the address 5 still has its burst.
        assert_eq!(limiter.check(TOKEN, v4(5), now), Err(RetryAfter(1)));
        assert_eq!(passed(&limiter, "other", v4(5), 3, now), 3);
    }

    #[test]
    fn ipv6_addresses_are_limited_by_their_64_and_mapped_ipv4_as_ipv4() {
        let limiter = Limiter::new(limits(OFF, Rate::per_second(1, 2)));
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("address");
        let same_64: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().expect("address");
        let next_64: IpAddr = "2001:db8:1:3::1".parse().expect("address");
        assert_eq!(passed(&limiter, TOKEN, a, 1, now), 1);
        assert_eq!(passed(&limiter, TOKEN, same_64, 5, now), 1);
        assert_eq!(passed(&limiter, TOKEN, next_64, 5, now), 2);
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().expect("address");
        assert_eq!(passed(&limiter, TOKEN, v4(9), 1, now), 1);
        assert_eq!(passed(&limiter, TOKEN, mapped, 5, now), 1);
        assert_eq!(limiter.tracked_addresses(), 3);
    }

    #[test]
    fn the_address_table_stays_within_its_cap_and_keeps_the_flooders() {
        let limiter = Limiter::new(limits(OFF, RateLimits::default().per_address));
        let cap = limiter.limits().max_tracked;
        let start = Instant::now();
        let flooder = v4(1);
        assert_eq!(passed(&limiter, TOKEN, flooder, 100, start), 60);
        // A million distinct addresses within one second (a /64 each). Every 100 ms the
        // flooder gets exactly the 2 requests its bucket earned back: it was never forgotten,
        // which would have given it a fresh burst.
        for i in 0..1_000_000u64 {
            let addr = IpAddr::V6(Ipv6Addr::from((u128::from(i) + 1) << 64));
            let now = start + Duration::from_micros(i);
            assert_eq!(limiter.check(TOKEN, addr, now), Ok(()), "address {i}");
            assert!(limiter.tracked_addresses() <= cap);
            if i % 100_000 == 0 {
                let earned = if i == 0 { 0 } else { 2 };
                assert_eq!(passed(&limiter, TOKEN, flooder, 10, now), earned, "at {i}");
            }
        }
        assert!(limiter.tracked_addresses() <= cap);
        let now = start + Duration::from_secs(1);
        assert_eq!(passed(&limiter, TOKEN, flooder, 10, now), 2);
        // Once everything has refilled, a cleaning forgets every bucket.
        let much_later = start + Duration::from_secs(3_600);
        let mut buckets = limiter.lock();
        buckets.addresses.make_room(much_later);
        assert_eq!(buckets.addresses.tats.len(), 0);
    }

    #[test]
    fn a_table_of_busy_buckets_forgets_those_closest_to_full() {
        let mut table: Table<u32> = Table::new(4);
        let now = Instant::now();
        for (key, ahead) in [(1, 40), (2, 10), (3, 30), (4, 20)] {
            table.record(&key, now + Duration::from_secs(ahead), now);
        }
        table.record(&5, now + Duration::from_secs(1), now);
        let mut kept: Vec<u32> = table.tats.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![1, 3, 5]);
    }

    #[test]
    fn a_cap_of_one_still_limits() {
        let limiter = Limiter::new(RateLimits {
            max_tracked: 0,
            ..limits(OFF, Rate::per_second(1, 1))
        });
        let now = Instant::now();
        assert_eq!(passed(&limiter, TOKEN, v4(1), 3, now), 1);
        assert_eq!(limiter.tracked_addresses(), 1);
        assert_eq!(passed(&limiter, TOKEN, v4(2), 3, now), 1);
        assert_eq!(limiter.tracked_addresses(), 1);
    }

    #[test]
    fn a_limit_that_is_off_keeps_no_buckets() {
        let limiter = Limiter::new(limits(OFF, OFF));
        let now = Instant::now();
        assert_eq!(passed(&limiter, TOKEN, v4(1), 10_000, now), 10_000);
        assert_eq!(
            (limiter.tracked_tokens(), limiter.tracked_addresses()),
            (0, 0)
        );
    }

    #[test]
    fn stream_permits_are_capped_per_token_and_freed_on_drop() {
        let caps = StreamCaps::new(2);
        let first = caps.acquire(TOKEN).expect("one");
        let second = caps.acquire(TOKEN).expect("two");
        assert!(caps.acquire(TOKEN).is_none());
        assert_eq!(caps.open(TOKEN), 2);
        // Another token has its own slots.
        let other = caps.acquire("other").expect("another token's");
        drop(first);
        assert_eq!(caps.open(TOKEN), 1);
        let third = caps.acquire(TOKEN).expect("a freed slot");
        assert!(caps.acquire(TOKEN).is_none());
        drop((second, third, other));
        assert_eq!((caps.open(TOKEN), caps.open("other")), (0, 0));
        assert!(
            lock_open(&caps.open).is_empty(),
            "no entry kept for idle tokens"
        );
        assert!(StreamCaps::new(0).acquire(TOKEN).is_none());
    }

    #[test]
    fn permits_are_freed_from_other_threads() {
        let caps = Arc::new(StreamCaps::new(100));
        let permits: Vec<StreamPermit> = (0..100)
            .map(|_| caps.acquire(TOKEN).expect("a slot"))
            .collect();
        std::thread::scope(|scope| {
            for permit in permits {
                scope.spawn(move || drop(permit));
            }
        });
        assert_eq!(caps.open(TOKEN), 0);
    }
}
