//! `grpc.health.v1.Health`: tonic-health's service, except that `Watch` streams end when the
//! server stops. (tonic-health's own streams end only when its status table is dropped,
//! which the server holds until every stream has ended: a watcher would hold up a graceful
//! shutdown forever.) On shutdown the server first reports `NOT_SERVING`, which watchers
//! receive, then ends their streams.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthService;
use tonic_health::ServingStatus;

use crate::follow::Readiness;

/// tonic-health's service with streams that end on shutdown.
#[derive(Debug)]
pub(crate) struct StoppingHealth {
    inner: HealthService,
    stopping: watch::Receiver<bool>,
}

impl StoppingHealth {
    /// Serves `inner`'s statuses; `stopping` turns true when the server stops.
    pub(crate) fn new(inner: HealthService, stopping: watch::Receiver<bool>) -> StoppingHealth {
        StoppingHealth { inner, stopping }
    }
}

#[tonic::async_trait]
impl Health for StoppingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = UntilStopped<<HealthService as Health>::WatchStream>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let stream = self.inner.watch(request).await?.into_inner();
        Ok(Response::new(UntilStopped::new(
            stream,
            stopped(self.stopping.clone()),
        )))
    }
}

/// Completes once `stopping` is true, or its sender is gone (the server is gone too).
pub(crate) async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// A stream that ends when a future completes. Items ready before that are still yielded
/// first, so a last status sent just before stopping arrives.
pub(crate) struct UntilStopped<S> {
    stream: S,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<S> UntilStopped<S> {
    pub(crate) fn new(stream: S, stop: impl Future<Output = ()> + Send + 'static) -> Self {
        UntilStopped {
            stream,
            stop: Box::pin(stop),
        }
    }
}

impl<S> std::fmt::Debug for UntilStopped<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UntilStopped").finish_non_exhaustive()
    }
}

impl<S: Stream + Unpin> Stream for UntilStopped<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if let Poll::Ready(item) = Pin::new(&mut self.stream).poll_next(cx) {
            return Poll::Ready(item);
        }
        match self.stop.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Keeps the health of `flagstaff.v1.Admin` following `readiness` (its writes need the
/// database) until `stopping` turns true, when the shutdown sets every status itself.
pub(crate) async fn admin_follows(
    reporter: tonic_health::server::HealthReporter,
    mut readiness: watch::Receiver<Readiness>,
    mut stopping: watch::Receiver<bool>,
) {
    let admin = flagstaff_proto::pb::admin_server::SERVICE_NAME;
    loop {
        let status = match *readiness.borrow_and_update() {
            Readiness::Ready => ServingStatus::Serving,
            Readiness::Unreachable | Readiness::CatchingUp => ServingStatus::NotServing,
        };
        if *stopping.borrow() {
            return;
        }
        reporter.set_service_status(admin, status).await;
        tokio::select! {
            changed = readiness.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn a_stream_yields_what_is_ready_then_ends_when_stopped() {
        let (items, receiver) = tokio::sync::mpsc::channel(4);
        let (stop, stopping) = watch::channel(false);
        let mut stream = UntilStopped::new(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
            stopped(stopping),
        );
        items.send(1).await.expect("send");
        assert_eq!(stream.next().await, Some(1));
        items.send(2).await.expect("send");
        stop.send_replace(true);
        assert_eq!(stream.next().await, Some(2), "ready before the stop");
        assert_eq!(stream.next().await, None);
        drop(items);
    }
}
