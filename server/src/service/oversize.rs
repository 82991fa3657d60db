//! Requests over the transport's message limit answer `RESOURCE_EXHAUSTED`, as gRPC's
//! conventions and DESIGN.md section 4a say, not tonic's `OUT_OF_RANGE`.
//!
//! A request within the transport's limit but over its own (8 MiB for most) is refused by
//! [`flagstaff_proto::codec::ServerCodec`]. One over the transport's limit never reaches the
//! codec: tonic refuses it as soon as it reads the message's length, with a trailers-only
//! `OUT_OF_RANGE` response, which this layer rewrites. (Streams see tonic's error as an error
//! of their inbound stream; the Watch handler maps it itself.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::{http, Service};
use tonic::{Code, Status};

/// The start of tonic's message for a message over the transport's limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// Wraps the gRPC routes in [`Oversize`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OversizeLayer;

impl<S> tower_layer::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Oversize<S> {
        Oversize { inner }
    }
}

/// Rewrites the status of requests over the transport's message limit.
#[derive(Debug, Clone)]
pub(crate) struct Oversize<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for Oversize<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if let Some(status) = resource_exhausted(response.headers()) {
                let headers = response.headers_mut();
                headers.remove("grpc-message");
                // Writing a status's headers fails only for invalid header values, which a
                // status message of ours never holds; then tonic's status stays.
                let _ = status.add_header(headers);
            }
            Ok(response)
        })
    }
}

/// The status to answer instead, when `headers` hold tonic's refusal of a request over the
/// transport's limit.
fn resource_exhausted(headers: &http::HeaderMap) -> Option<Status> {
    let status = Status::from_header_map(headers)?;
    if status.code() != Code::OutOfRange {
        return None;
    }
    let rest = status.message().strip_prefix(TONIC_TOO_LARGE)?;
    let number = |text: &str| -> Option<usize> {
        text.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    let size = number(rest)?;
    let limit = number(rest.split("the limit is: ").nth(1)?)?;
    Some(flagstaff_proto::codec::too_large(size, limit))
}

/// What a stream's inbound error becomes: tonic's refusal of an oversized message as
/// `code`, naming the limit, anything else as it is.
pub(crate) fn inbound_error(status: Status, code: Code) -> Status {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_ok() {
        if let Some(rewritten) = resource_exhausted(&headers) {
            return Status::new(code, rewritten.message().to_owned());
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_s_refusal_becomes_resource_exhausted() {
        let mut headers = http::HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 104857600 bytes, the limit is: \
             67108864 bytes",
        )
        .add_header(&mut headers)
        .expect("valid headers");
        let status = resource_exhausted(&headers).expect("rewritten");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "the request is 104857600 bytes, over the limit of 64 MiB"
        );

        let mut other = http::HeaderMap::new();
        Status::out_of_range("something else")
            .add_header(&mut other)
            .expect("valid headers");
        assert!(resource_exhausted(&other).is_none());
    }
}
