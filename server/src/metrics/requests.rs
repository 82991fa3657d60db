//! `flagstaff_grpc_requests_total{method,code}`: a tower layer around the gRPC routes that
//! counts every call by method and status code.
//!
//! The status of a call is in one of two places. A call that fails before it answers (most
//! errors, and every unknown method) is "trailers-only": its `grpc-status` is in the
//! response headers, counted at once. Otherwise the status comes in the trailers after the
//! last message, so the response body is wrapped and counts when it yields them; a body
//! dropped before that (the client went away, a deadline passed) counts as `CANCELLED`.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use prost::Message as _;
use tonic::codegen::{http, Bytes, Service};
use tonic::{Code, Status};

/// The label of calls to a method the server does not know, so that a client inventing
/// paths cannot create new series.
const UNKNOWN: &str = "unknown";

/// gRPC's status codes, 0 to 16, by their canonical names.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Calls per method and status code.
///
/// The methods are fixed when the server starts (every method of the services in its
/// descriptor sets, plus "unknown"), so the table never changes shape: counting is a hash
/// lookup and an atomic add, with no lock, and reading it races nothing but the adds.
#[derive(Debug)]
pub(crate) struct RequestCounts {
    /// `package.Service/Method` to its row in `counts`.
    rows: HashMap<String, usize>,
    /// Method names, sorted, `UNKNOWN` among them; `counts[i]` is `names[i]`'s row.
    names: Vec<String>,
    counts: Vec<[AtomicU64; 17]>,
}

impl RequestCounts {
    /// A table for the methods of every service in `descriptor_sets` (encoded
    /// `FileDescriptorSet`s). A set that does not decode is logged and skipped: its calls
    /// then count as "unknown", which is better than no server.
    pub(crate) fn new(descriptor_sets: &[&[u8]]) -> RequestCounts {
        let mut names = BTreeSet::from([UNKNOWN.to_owned()]);
        for encoded in descriptor_sets {
            let set = match prost_types::FileDescriptorSet::decode(*encoded) {
                Ok(set) => set,
                Err(e) => {
                    tracing::error!(error = %e, "a compiled-in descriptor set does not decode; its methods count as unknown");
                    continue;
                }
            };
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    for method in &service.method {
                        let service = match package {
                            "" => service.name().to_owned(),
                            package => format!("{package}.{}", service.name()),
                        };
                        names.insert(format!("{service}/{}", method.name()));
                    }
                }
            }
        }
        let names: Vec<String> = names.into_iter().collect();
        RequestCounts {
            rows: names.iter().cloned().zip(0..).collect(),
            counts: names.iter().map(|_| Default::default()).collect(),
            names,
        }
    }

    /// The row of a request path, `/package.Service/Method`.
    fn row(&self, path: &str) -> usize {
        let method = path.strip_prefix('/').unwrap_or(path);
        self.rows
            .get(method)
            .or_else(|| self.rows.get(UNKNOWN))
            .copied()
            .unwrap_or(0)
    }

    fn count(&self, row: usize, code: Code) {
        if let Some(slot) = self
            .counts
            .get(row)
            .and_then(|codes| codes.get(code as usize))
        {
            // Relaxed: each counter stands alone; a scrape may see any recent value.
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every non-zero count: method, code name, count; by method, then code.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (&str, &'static str, u64)> + '_ {
        self.names
            .iter()
            .zip(&self.counts)
            .flat_map(|(name, codes)| {
                codes.iter().zip(CODES).filter_map(move |(count, code)| {
                    let count = count.load(Ordering::Relaxed);
                    (count > 0).then_some((name.as_str(), code, count))
                })
            })
    }
}

/// Wraps the gRPC routes in [`CountRequests`].
#[derive(Debug, Clone)]
pub(crate) struct CountRequestsLayer {
    counts: Arc<RequestCounts>,
}

impl CountRequestsLayer {
    pub(crate) fn new(counts: Arc<RequestCounts>) -> CountRequestsLayer {
        CountRequestsLayer { counts }
    }
}

impl<S> tower_layer::Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests {
            inner,
            counts: self.counts.clone(),
        }
    }
}

/// Counts the calls its inner service answers.
#[derive(Debug, Clone)]
pub(crate) struct CountRequests<S> {
    inner: S,
    counts: Arc<RequestCounts>,
}

impl<S, B> Service<http::Request<B>> for CountRequests<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CountedBody>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<CountedBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let counter = Counter {
            row: self.counts.row(request.uri().path()),
            counts: self.counts.clone(),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let counter = match response.headers().get("grpc-status") {
                Some(status) => {
                    counter.finish(Code::from_bytes(status.as_bytes()));
                    None
                }
                None => Some(counter),
            };
            Ok(response.map(|inner| CountedBody { inner, counter }))
        })
    }
}

/// One call's counter, used once.
#[derive(Debug)]
struct Counter {
    counts: Arc<RequestCounts>,
    row: usize,
}

impl Counter {
    fn finish(self, code: Code) {
        self.counts.count(self.row, code);
    }
}

/// A response body that counts its call when the trailers carrying its status pass, or
/// when it ends or is dropped without them.
#[derive(Debug)]
pub(crate) struct CountedBody {
    inner: tonic::body::Body,
    /// `None` once counted (or when the headers already had the status).
    counter: Option<Counter>,
}

impl CountedBody {
    fn finish(&mut self, code: Code) {
        if let Some(counter) = self.counter.take() {
            counter.finish(code);
        }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers
                        .get("grpc-status")
                        .map_or(Code::Unknown, |status| Code::from_bytes(status.as_bytes()));
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => self.finish(status.code()),
            // Ended without trailers: the client sees no status, which gRPC reads as UNKNOWN.
            Poll::Ready(None) => self.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptor_sets_and_others_are_unknown() {
        let counts = RequestCounts::new(&[flagstaff_proto::FILE_DESCRIPTOR_SET, b"\xff\xff"]);
        let create = counts.row("/flagstaff.v1.Admin/CreateFlag");
        assert_eq!(counts.names[create], "flagstaff.v1.Admin/CreateFlag");
        let watch = counts.row("/flagstaff.v1.Sync/Watch");
        assert_eq!(counts.names[watch], "flagstaff.v1.Sync/Watch");
        let unknown = counts.row("/flagstaff.v1.Admin/Nope");
        assert_eq!(counts.names[unknown], "unknown");
        assert_eq!(counts.row("/made.up/Path"), unknown);

        counts.count(create, Code::Ok);
        counts.count(create, Code::Ok);
        counts.count(create, Code::InvalidArgument);
        counts.count(unknown, Code::Unimplemented);
        assert_eq!(
            counts.counts().collect::<Vec<_>>(),
            [
                ("flagstaff.v1.Admin/CreateFlag", "OK", 2),
                ("flagstaff.v1.Admin/CreateFlag", "INVALID_ARGUMENT", 1),
                ("unknown", "UNIMPLEMENTED", 1),
            ]
        );
    }

    #[test]
    fn code_names_are_in_code_order() {
        for (i, name) in CODES.iter().enumerate() {
            let code = Code::from_i32(i as i32);
            assert_eq!(code as usize, i);
            let expected = format!("{code:?}");
            assert_eq!(
                name.replace('_', "").to_lowercase(),
                expected.to_lowercase()
            );
        }
    }
}
