//! Following the store: on PostgreSQL, several flagstaffd processes share one database, and
//! each applies what the others commit (DESIGN.md section 7): the environments' changes, the
//! environments themselves (created, deleted) and the tokens (created, revoked). The store announces commits
//! (`pg_notify` after each); on each announcement, when the store starts listening again
//! after losing its connection, and every [`SAFETY_NET`] in case an announcement was lost,
//! the environments behind the store apply its change log, in order, and publish it to their
//! Watch streams as their own writes are.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Tokens;
use crate::environments::Environments;
use crate::storage::{Announcement, Announcements, Store};

/// How often every environment is compared with the store, whatever was announced.
pub const SAFETY_NET: Duration = Duration::from_secs(5);

/// Whether this flagstaffd is up to date with the store it shares, as load balancers are told
/// (`/readyz`, the health of `flagstaff.v1.Admin`): writes need the database, and a replica
/// catching up serves old state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Following the store.
    Ready,
    /// The database cannot be reached.
    Unreachable,
    /// Listening again after an outage, and not caught up yet.
    CatchingUp,
}

/// What the follower does next.
enum Next {
    /// What the store announced.
    Announced(Announcement),
    /// The periodic look at everything.
    SafetyNet,
}

/// Follows `announcements` until `stopped` completes or the store stops announcing, and says
/// how it goes in `ready`. Each catch-up runs on a blocking thread (it reads the store), one at
/// a time, in order.
pub async fn follow<S: Store>(
    environments: Arc<Environments<S>>,
    tokens: Arc<Tokens<S>>,
    mut announcements: Announcements,
    ready: tokio::sync::watch::Sender<Readiness>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut safety_net = tokio::time::interval(SAFETY_NET);
    safety_net.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The store has just connected: flagstaffd loaded everything from it.
    let mut listening = true;
    loop {
        let next = tokio::select! {
            announced = announcements.recv() => match announced {
                Some(announced) => Next::Announced(announced),
                None => return,
            },
            _ = safety_net.tick() => Next::SafetyNet,
            () = &mut stopped => return,
        };
        let everything = match &next {
            Next::Announced(Announcement::Lost) => {
                listening = false;
                ready.send_replace(Readiness::Unreachable);
                continue;
            }
            Next::Announced(Announcement::Listening) => {
                listening = true;
                ready.send_replace(Readiness::CatchingUp);
                true
            }
            Next::SafetyNet => true,
            Next::Announced(_) => false,
        };
        let (envs, tokens) = (environments.clone(), tokens.clone());
        let caught_up = tokio::task::spawn_blocking(move || match next {
            Next::Announced(Announcement::Committed {
                environment,
                revision,
            }) => envs.follow(&environment, revision),
            Next::Announced(Announcement::Environments) => envs.follow_all(),
            Next::Announced(Announcement::Rollouts { environment }) => {
                envs.reload_rollouts(&environment)
            }
            Next::Announced(Announcement::Tokens) => tokens.reload(),
            Next::Announced(Announcement::Listening | Announcement::Lost) | Next::SafetyNet => {
                tokens.reload().and_then(|()| envs.follow_all())?;
                // Plans paused or resumed without a revision, whose notification was lost.
                envs.reload_all_rollouts()
            }
        })
        .await;
        let caught_up = match caught_up {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot catch up with the store");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "catching up with the store panicked");
                false
            }
        };
        // Only a look at everything says whether this flagstaffd is up to date.
        if everything {
            ready.send_replace(match (caught_up, listening) {
                (true, true) => Readiness::Ready,
                (true, false) | (false, _) => Readiness::Unreachable,
            });
        }
    }
}
