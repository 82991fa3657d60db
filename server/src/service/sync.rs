//! `flagstaff.v1.Sync`: the SDKs' Watch stream (see [`watch`](super::watch)) and their
//! metrics reports.

use std::sync::Arc;

use flagstaff_proto::pb;
use tonic::{Request, Response, Status, Streaming};

use super::watch::{WatchStream, Watcher};
use super::{authenticate, permission_denied, wire};
use crate::auth::Access;
use crate::storage::Store;
use crate::usage::{Attributed, Evaluations, MetricsReport};

/// The Sync service.
#[derive(Debug)]
pub struct SyncService<S> {
    watcher: Arc<Watcher<S>>,
}

impl<S: Store> SyncService<S> {
    /// The service serving Watch streams with `watcher`.
    pub fn new(watcher: Watcher<S>) -> SyncService<S> {
        SyncService {
            watcher: Arc::new(watcher),
        }
    }
}

#[tonic::async_trait]
impl<S: Store> pb::sync_server::Sync for SyncService<S> {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.watcher.watch(request).await
    }

    async fn report_metrics(
        &self,
        request: Request<pb::ReportMetricsRequest>,
    ) -> Result<Response<pb::ReportMetricsResponse>, Status> {
        let token = authenticate(self.watcher.tokens(), &request).await?;
        let req = request.into_inner();
        let environment = match (&token.environment, req.environment.as_str()) {
            (Some(own), "") => own.clone(),
            (_, "") => return Err(wire::missing("environment").into()),
            (_, named) => named.to_owned(),
        };
        if !token.allows(Access::Sync(&environment)) {
            return Err(permission_denied(&token, Access::Sync(&environment)));
        }
        let report = metrics_report(&req)?;
        if req.dropped > 0 {
            tracing::info!(
                environment,
                instance = req.instance_id,
                dropped = req.dropped,
                "an SDK dropped metrics it could not report"
            );
        }
        let envs = self.watcher.environments().clone();
        let outcome =
            tokio::task::spawn_blocking(move || envs.record_metrics(&environment, &report))
                .await
                .map_err(|e| Status::internal(format!("a blocking task failed: {e}")))??;
        Ok(Response::new(pb::ReportMetricsResponse {
            guards: outcome
                .guards
                .into_iter()
                .map(|(flag, event)| pb::GuardedFlag { flag, event })
                .collect(),
        }))
    }
}

/// The most windows one report may carry: an SDK keeps fewer.
const MAX_WINDOWS: usize = 1_000;

/// The most counts (evaluations and attributions) one report may carry.
const MAX_COUNTS: usize = 1_000_000;

/// The report in the server's terms, or what is wrong with it.
fn metrics_report(req: &pb::ReportMetricsRequest) -> Result<MetricsReport, Status> {
    if req.windows.len() > MAX_WINDOWS {
        return Err(Status::invalid_argument(format!(
            "windows: {} windows in one report, at most {MAX_WINDOWS}",
            req.windows.len()
        )));
    }
    let counts: usize = req
        .windows
        .iter()
        .map(|w| {
            w.evaluations.len()
                + w.events
                    .iter()
                    .map(|e| 1 + e.attributions.len())
                    .sum::<usize>()
        })
        .sum();
    if counts > MAX_COUNTS {
        return Err(Status::invalid_argument(format!(
            "windows: {counts} counts in one report, at most {MAX_COUNTS}"
        )));
    }
    let mut report = MetricsReport::default();
    for (i, window) in req.windows.iter().enumerate() {
        if window.start_unix_ms < 0 || window.end_unix_ms < window.start_unix_ms {
            return Err(Status::invalid_argument(format!(
                "windows[{i}]: ends at {} before it starts at {}",
                window.end_unix_ms, window.start_unix_ms
            )));
        }
        let window_end_ms = window.end_unix_ms as u64;
        for (j, e) in window.evaluations.iter().enumerate() {
            if e.flag.is_empty() {
                return Err(wire::missing(&format!("windows[{i}].evaluations[{j}].flag")).into());
            }
            report.evaluations.push(Evaluations {
                flag: e.flag.clone(),
                variant: e.variant.clone(),
                version: e.version,
                count: e.count,
                window_end_ms,
            });
        }
        for (j, event) in window.events.iter().enumerate() {
            if event.event.is_empty() {
                return Err(wire::missing(&format!("windows[{i}].events[{j}].event")).into());
            }
            for (k, a) in event.attributions.iter().enumerate() {
                let path = format!("windows[{i}].events[{j}].attributions[{k}]");
                if a.flag.is_empty() {
                    return Err(wire::missing(&format!("{path}.flag")).into());
                }
                if a.variant.is_empty() {
                    return Err(wire::missing(&format!("{path}.variant")).into());
                }
                report.attributions.push(Attributed {
                    event: event.event.clone(),
                    flag: a.flag.clone(),
                    variant: a.variant.clone(),
                    version: a.version,
                    count: a.count,
                });
            }
        }
    }
    Ok(report)
}
