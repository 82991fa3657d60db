//! The reconnection backoff of the Watch stream: capped, exponential, with full jitter.

use std::time::Duration;

/// Full jitter for the reconnection backoff: a delay drawn uniformly below the capped
/// exponential, so a fleet that lost the server together does not return together.
#[derive(Debug)]
pub(super) struct Jitter(u64);

impl Jitter {
    pub(super) fn new(seed: &str) -> Jitter {
        // FNV-1a of the instance id: instances differ, and the generator needs a non-zero state.
        let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Jitter(hash | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The delay before reconnection attempt `failures` (0 for the first).
    pub(super) fn backoff(&mut self, base: Duration, cap: Duration, failures: u32) -> Duration {
        let ceiling = base
            .saturating_mul(1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX))
            .min(cap);
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(self.next() % millis + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_is_jittered() {
        let mut jitter = Jitter::new("instance");
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        for failures in 0..30 {
            let ceiling = (base * 2u32.pow(failures.min(20))).min(cap);
            let delays: Vec<Duration> = (0..50)
                .map(|_| jitter.backoff(base, cap, failures))
                .collect();
            assert!(delays
                .iter()
                .all(|d| *d <= ceiling + Duration::from_millis(1)));
            assert!(delays.iter().any(|d| *d != delays[0]), "jittered");
        }
    }
}
