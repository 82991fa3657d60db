//! Following the store: on PostgreSQL, several flagstaffd processes share one database, and
//! each applies what the others commit (DESIGN.md section 7). The store announces commits
//! (`pg_notify` after each); on each announcement, when the store starts listening again
//! after losing its connection, and every [`SAFETY_NET`] in case an announcement was lost,
//! the environments behind the store apply its change log, in order, and publish it to their
//! Watch streams as their own writes are.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::environments::Environments;
use crate::storage::{Announcement, Announcements, Store};

/// How often every environment is compared with the store, whatever was announced.
pub const SAFETY_NET: Duration = Duration::from_secs(5);

/// Follows `announcements` until `stopped` completes or the store stops announcing. Each
/// catch-up runs on a blocking thread (it reads the store), one at a time, in order.
pub async fn follow<S: Store>(
    environments: Arc<Environments<S>>,
    mut announcements: Announcements,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut safety_net = tokio::time::interval(SAFETY_NET);
    safety_net.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let announced = tokio::select! {
            announced = announcements.recv() => match announced {
                Some(announced) => announced,
                None => return,
            },
            _ = safety_net.tick() => Announcement::Listening,
            () = &mut stopped => return,
        };
        let envs = environments.clone();
        let caught_up = tokio::task::spawn_blocking(move || match &announced {
            Announcement::Committed {
                environment,
                revision,
            } => envs.follow(environment, *revision),
            Announcement::Listening => envs.follow_all(),
        })
        .await;
        match caught_up {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot catch up with the store"),
            Err(e) => tracing::error!(error = %e, "catching up with the store panicked"),
        }
    }
}
