//! A connected client's one background task: the Watch stream that keeps the snapshot fresh
//! ([`stream`], moving between endpoints with [`rotation`] and backing off with [`backoff`])
//! and the reporter of usage metrics ([`report`]), side by side, sharing the stream's
//! connection ([`LatestChannel`]).

mod backoff;
mod report;
mod rotation;
mod stream;

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use crate::config::Settings;
use crate::core::Core;
use crate::status::State;
use crate::usage::Flush;

/// Runs until `stop` turns true, then reports usage metrics a last time and marks the client
/// closed.
pub(crate) async fn run(
    core: Arc<Core>,
    settings: Settings,
    stop: watch::Receiver<bool>,
    flushes: mpsc::Receiver<Flush>,
) {
    let latest = LatestChannel::default();
    tokio::join!(
        stream::keep_fresh(&core, &settings, &latest, stop.clone()),
        report::run(&core, &settings, &latest, stop, flushes),
    );
    core.status.send_modify(|s| s.state = State::Closed);
    tracing::debug!("flagstaff client closed");
}

/// The channel of the latest Watch connection, which reports use too (while the stream is
/// down, the last one, which reconnects by itself for a unary call). A std mutex, held only to
/// clone or replace the channel, never across an `.await`.
#[derive(Debug, Default)]
struct LatestChannel(Mutex<Option<Channel>>);

impl LatestChannel {
    fn set(&self, channel: Channel) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(channel);
    }

    fn get(&self) -> Option<Channel> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
