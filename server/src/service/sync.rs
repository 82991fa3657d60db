//! `flagstaff.v1.Sync`: the SDKs' Watch stream (see [`watch`](super::watch)).

use std::sync::Arc;

use flagstaff_proto::pb;
use tonic::{Request, Response, Status, Streaming};

use super::watch::{WatchStream, Watcher};
use crate::storage::Store;

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
        self.watcher.watch(request)
    }

    async fn report_metrics(
        &self,
        _request: Request<pb::ReportMetricsRequest>,
    ) -> Result<Response<pb::ReportMetricsResponse>, Status> {
        Err(Status::unimplemented(
            "this flagstaffd does not collect SDK metrics yet",
        ))
    }
}
