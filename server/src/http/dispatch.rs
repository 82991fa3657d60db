//! One port, two protocols: a request whose content type is `application/grpc…` goes to the
//! gRPC services, every other request to the HTTP routes (DESIGN.md section 10).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{header, Request, Response};
use tower::{Service, ServiceExt as _};

/// Sends each request to `grpc` or to `http` by its content type.
#[derive(Debug, Clone)]
pub(crate) struct Dispatch<G> {
    grpc: G,
    http: axum::Router,
}

impl<G> Dispatch<G> {
    /// Dispatches between the gRPC services `grpc` and the HTTP routes `http`.
    pub(crate) fn new(grpc: G, http: axum::Router) -> Dispatch<G> {
        Dispatch { grpc, http }
    }
}

/// Whether `request` is a gRPC call: `application/grpc`, `application/grpc+proto` and the
/// like (gRPC-Web is not served).
fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
}

impl<G, B> Service<Request<tonic::body::Body>> for Dispatch<G>
where
    G: Service<Request<tonic::body::Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    G::Future: Send,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both sides are always ready: each call readies a clone of its side.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        if is_grpc(&request) {
            let grpc = self.grpc.clone().oneshot(request);
            Box::pin(async move { Ok(grpc.await?.map(Body::new)) })
        } else {
            let http = self.http.clone().oneshot(request.map(Body::new));
            Box::pin(http)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_content_type(value: &str) -> Request<()> {
        Request::builder()
            .header(header::CONTENT_TYPE, value)
            .body(())
            .expect("request")
    }

    #[test]
    fn grpc_is_recognised_by_its_content_type_only() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&with_content_type(grpc)), "{grpc}");
        }
        for http in [
            "application/json",
            "application/grpcx",
            "application/grpc-web",
            "text/plain",
        ] {
            assert!(!is_grpc(&with_content_type(http)), "{http}");
        }
        assert!(!is_grpc(&Request::new(())));
    }
}
