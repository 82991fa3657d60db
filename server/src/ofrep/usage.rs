//! OFREP evaluations counted toward flag usage (`flag list`, `flag stale`), like an SDK's
//! (DESIGN.md section 10): counted in memory per request, recorded in the store every
//! [`FLUSH_INTERVAL`] and once more at shutdown, so a busy endpoint costs one store write per
//! interval and environment, not one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::environments::Environments;
use crate::storage::{now_ms, Store};

/// How often counted evaluations are recorded.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The most distinct flags counted per environment between two flushes; further flags wait
/// for the next interval. Only flags that exist are counted, so this bounds nothing an honest
/// client reaches; it keeps memory bounded whatever happens.
const MAX_COUNTED_FLAGS: usize = 100_000;

/// Evaluations since the last flush, by environment and flag.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    counts: Mutex<HashMap<String, HashMap<String, u64>>>,
}

impl Tally {
    /// Counts one evaluation of each of `flags` in `environment`.
    pub(crate) fn count<'a>(&self, environment: &str, flags: impl IntoIterator<Item = &'a str>) {
        // Counting cannot leave the map half-changed: a poisoned lock is still usable.
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let per_flag = match counts.get_mut(environment) {
            Some(per_flag) => per_flag,
            None => counts.entry(environment.to_owned()).or_default(),
        };
        for flag in flags {
            if let Some(n) = per_flag.get_mut(flag) {
                *n += 1;
            } else if per_flag.len() < MAX_COUNTED_FLAGS {
                per_flag.insert(flag.to_owned(), 1);
            }
        }
    }

    /// Takes the counts, leaving none.
    fn take(&self) -> HashMap<String, HashMap<String, u64>> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records the counts as usage of their flags (on a blocking thread: it writes the store).
    pub(crate) async fn flush<S: Store>(&self, envs: &Arc<Environments<S>>) {
        let counts = self.take();
        if counts.is_empty() {
            return;
        }
        let envs = envs.clone();
        let done = tokio::task::spawn_blocking(move || {
            let at = now_ms();
            for (environment, per_flag) in &counts {
                // An environment deleted meanwhile has no usage to keep.
                let Ok(env) = envs.get(environment) else {
                    continue;
                };
                let evaluations = per_flag.iter().map(|(f, n)| (f.as_str(), *n, at));
                if let Err(e) = envs.record_usage(&env, evaluations) {
                    tracing::warn!(environment, error = %e, "recording OFREP usage failed");
                }
            }
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "recording OFREP usage failed");
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] until `stopped` completes, then once more.
    pub(crate) async fn run<S: Store>(
        self: Arc<Self>,
        envs: Arc<Environments<S>>,
        stopped: impl std::future::Future<Output = ()>,
    ) {
        let mut stopped = std::pin::pin!(stopped);
        let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.flush(&envs).await,
                () = &mut stopped => break,
            }
        }
        self.flush(&envs).await;
    }
}
