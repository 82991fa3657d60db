//! Waiting for what a test expects to happen: [`eventually`] polls a condition and returns as
//! soon as it holds, so a test takes as long as the system under test needs rather than a
//! guessed sleep, and fails with a message naming what never happened.

use std::time::{Duration, Instant};

/// How long a test waits for something that should happen promptly before it fails: long
/// enough for a loaded machine, and reached only when something is wrong.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often [`eventually`] checks again.
const POLL: Duration = Duration::from_millis(5);

/// What a check of [`eventually`] answers: a `bool` (whether it holds), or an `Option` (the
/// value it waited for, once there is one).
pub trait Condition {
    /// What [`eventually`] returns once the condition holds.
    type Value;

    /// `Some` once the condition holds.
    fn holds(self) -> Option<Self::Value>;
}

impl Condition for bool {
    type Value = ();

    fn holds(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Condition for Option<T> {
    type Value = T;

    fn holds(self) -> Option<T> {
        self
    }
}

/// Checks `check` until it holds and returns what it found; panics, naming `what`, after
/// [`PATIENCE`].
///
/// The check is an async closure, so it may call the server: `eventually("the plan's second
/// stage", async || plan(&mut admin).await.stage == 1).await`. The deadline is real time, not
/// tokio's: under paused time a sleep returns at once, and a deadline in tokio's time would
/// pass before anything real had a chance to happen.
pub async fn eventually<C: Condition>(what: &str, check: impl AsyncFnMut() -> C) -> C::Value {
    eventually_within(what, PATIENCE, check).await
}

/// [`eventually`] with a patience of `limit`, for what takes long by design (a simulation of
/// many clients).
pub async fn eventually_within<C: Condition>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> C,
) -> C::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await.holds() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
