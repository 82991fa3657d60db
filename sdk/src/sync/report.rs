//! The reporter of usage metrics to flagstaffd (`Sync.ReportMetrics`), inside the client's
//! one background task, next to the Watch stream. What a report carries is
//! [`crate::usage`]'s business.
//!
//! Every metrics interval (and on [`Client::flush_metrics`](crate::Client::flush_metrics)) the
//! reporter closes the current window and sends the windows kept, on the channel of the
//! current (or, while the stream is down, the last) Watch connection, which reconnects by
//! itself for a unary call. A failed report keeps its windows for the next one. When the
//! client closes, one last report, with a short timeout.

use std::sync::Arc;
use std::time::Duration;

use flagstaff_proto::pb;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Request;

use super::LatestChannel;
use crate::config::Settings;
use crate::core::Core;
use crate::usage::windows::unix_ms;
use crate::usage::Flush;

/// How long a report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the last report, when the client closes, may take.
const FINAL_REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Reports every `settings.metrics_interval` and on request, until `stop` turns true; then
/// reports once more.
pub(super) async fn run(
    core: &Arc<Core>,
    settings: &Settings,
    latest: &LatestChannel,
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
        let result = report(core, settings, latest, flush.is_some(), REPORT_TIMEOUT).await;
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
    if let Err(why) = report(core, settings, latest, false, FINAL_REPORT_TIMEOUT).await {
        tracing::debug!(reason = %why, "flagstaff's last usage report failed");
    }
}

/// Closes the current window and sends the windows kept, in as many requests as they need.
/// With `always`, sends a request even with nothing to report (its answer names the guards).
async fn report(
    core: &Core,
    settings: &Settings,
    latest: &LatestChannel,
    always: bool,
    timeout: Duration,
) -> Result<(), String> {
    let usage = &core.usage;
    usage.close_window(unix_ms());
    let mut always = always;
    loop {
        let Some((request, sent)) = usage.request(&settings.instance_id, always) else {
            return Ok(());
        };
        always = false;
        let Some(channel) = latest.get() else {
            usage.failed();
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
                usage.reported(sent, response.into_inner().guards);
                if !sent.more {
                    return Ok(());
                }
            }
            Ok(Err(status)) => {
                usage.failed();
                return Err(format!("{}: {}", status.code(), status.message()));
            }
            Err(_) => {
                usage.failed();
                return Err(format!("no answer within {timeout:?}"));
            }
        }
    }
}
