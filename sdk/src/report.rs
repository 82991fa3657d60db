//! Reporting usage metrics to flagstaffd (`Sync.ReportMetrics`), inside the client's one
//! background task, next to the Watch stream.
//!
//! Every metrics interval (and on [`Client::flush_metrics`](crate::Client::flush_metrics)) the
//! reporter closes the current window and sends the windows kept, on the channel of the
//! current (or, while the stream is down, the last) Watch connection, which reconnects by
//! itself for a unary call. A failed report keeps its windows for the next one. When the
//! client closes, one last report, with a short timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagstaff_proto::pb;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::transport::Channel;
use tonic::Request;

use crate::client::Core;
use crate::live::Settings;
use crate::metrics::{unix_ms, Flush};

/// How long a report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the last report, when the client closes, may take.
const FINAL_REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// The channel of the latest Watch connection, which reports use too. A std mutex, held only
/// to clone or replace the channel, never across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Link(Mutex<Option<Channel>>);

impl Link {
    pub(crate) fn set(&self, channel: Channel) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(channel);
    }

    fn get(&self) -> Option<Channel> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Reports every `settings.metrics_interval` and on request, until `stop` turns true; then
/// reports once more.
pub(crate) async fn run(
    core: &Arc<Core>,
    settings: &Settings,
    link: &Link,
    mut stop: watch::Receiver<bool>,
    mut flushes: mpsc::Receiver<Flush>,
) {
    let interval = settings.metrics_interval;
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let flush = tokio::select! {
            _ = ticks.tick() => None,
            Some(flush) = flushes.recv() => Some(flush),
            _ = stop.wait_for(|s| *s) => break,
        };
        let result = report(core, settings, link, flush.is_some(), REPORT_TIMEOUT).await;
        if let Some(flush) = flush {
            let _ = flush.send(result.clone());
        }
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("flagstaff usage metrics reported again");
            }
            Err(why) if !failing => {
                failing = true;
                tracing::warn!(reason = %why, "flagstaff usage metrics not reported; keeping them for the next report");
            }
            _ => {}
        }
    }
    if let Err(why) = report(core, settings, link, false, FINAL_REPORT_TIMEOUT).await {
        tracing::debug!(reason = %why, "flagstaff's last usage report failed");
    }
}

/// Closes the current window and sends the windows kept, in as many requests as they need.
/// With `always`, sends a request even with nothing to report (its answer names the guards).
async fn report(
    core: &Core,
    settings: &Settings,
    link: &Link,
    always: bool,
    timeout: Duration,
) -> Result<(), String> {
    let metrics = &core.metrics;
    metrics.close_window(unix_ms());
    let mut always = always;
    loop {
        let Some((request, sent)) = metrics.request(&settings.instance_id, always) else {
            return Ok(());
        };
        always = false;
        let Some(channel) = link.get() else {
            metrics.failed();
            return Err("not connected to flagstaffd yet".to_owned());
        };
        let mut request = Request::new(request);
        match format!("Bearer {}", settings.sdk_key).parse() {
            Ok(value) => {
                request.metadata_mut().insert("authorization", value);
            }
            // `build` checked the key; this cannot happen.
            Err(_) => return Err("the sdk key cannot be sent".to_owned()),
        }
        request.set_timeout(timeout);
        let mut client = pb::sync_client::SyncClient::new(channel);
        match tokio::time::timeout(timeout, client.report_metrics(request)).await {
            Ok(Ok(response)) => {
                metrics.reported(sent, response.into_inner().guards);
                if !sent.more {
                    return Ok(());
                }
            }
            Ok(Err(status)) => {
                metrics.failed();
                return Err(format!("{}: {}", status.code(), status.message()));
            }
            Err(_) => {
                metrics.failed();
                return Err(format!("no answer within {timeout:?}"));
            }
        }
    }
}
