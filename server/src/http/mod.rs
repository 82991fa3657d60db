//! HTTP on the gRPC port (DESIGN.md sections 9 and 10): `dispatch` sends each request to gRPC
//! or to the HTTP routes by its content type, `listen` accepts plain or TLS connections, and
//! this file serves both on one listener ([`serve`]) and holds the HTTP routes: OFREP under
//! `/ofrep/v1/`, the web console (`crate::console`), and `/healthz` and `/readyz` for load
//! balancers.

pub(crate) mod dispatch;
pub(crate) mod listen;

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{header, Request, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service;

use crate::follow::Readiness;
use crate::tls::Tls;

/// Serves the gRPC services `grpc` and the HTTP routes `http` on `listener`, over TLS when
/// `tls` is given, until `shutdown` completes; then the requests in flight finish before this
/// returns. Each request goes to one or the other by its content type ([`dispatch`]); HTTP is
/// served as HTTP/1.1 and h2, gRPC as h2.
pub(crate) async fn serve<G, B>(
    listener: TcpListener,
    tls: Option<&Tls>,
    grpc: G,
    http: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    G: Service<Request<tonic::body::Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    G::Future: Send,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let service = dispatch::Dispatch::new(grpc, http);
    // HTTP/1.1 beside h2: OFREP clients and browsers speak either.
    let builder = tonic::transport::Server::builder().accept_http1(true);
    match tls {
        Some(tls) => {
            builder
                .serve_with_incoming_shutdown(service, listen::tls(listener, tls), shutdown)
                .await
        }
        None => {
            builder
                .serve_with_incoming_shutdown(service, listen::plain(listener), shutdown)
                .await
        }
    }
}

/// The address of the TCP peer a request came over, as the connection says (plain or TLS): a
/// reverse proxy's own address when flagstaffd is behind one. Never what a header claims.
pub(crate) fn peer_address(extensions: &http::Extensions) -> Option<IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(TlsConnectInfo::get_ref)
    })?;
    tcp.remote_addr().map(|a| a.ip())
}

/// Serves the HTTP routes `http`, and no gRPC service, in plain text on `listener` until
/// `shutdown` completes, through the stack flagstaffd serves OFREP on ([`serve`]: the same
/// listener, dispatch and HTTP server). Not part of the API: the OFREP benchmark measures
/// that stack alone with it (`server/benches/ofrep.rs`).
#[doc(hidden)]
pub async fn serve_routes(
    listener: TcpListener,
    http: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let grpc = tonic::service::Routes::default().prepare();
    serve(listener, None, grpc, http, shutdown).await
}

/// The HTTP routes: `ofrep` (the OFREP routes), the health checks, and a JSON 404 for anything
/// else. `/readyz` answers 503 once shutdown has begun (`stopping` turned true), so a load
/// balancer stops sending requests while those in flight finish, and while `readiness` says
/// this flagstaffd cannot reach the database it shares, or is catching up with it.
pub(crate) fn routes(
    ofrep: axum::Router,
    console: axum::Router,
    stopping: watch::Receiver<bool>,
    readiness: watch::Receiver<Readiness>,
) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { plain(StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let (stopping, readiness) = (*stopping.borrow(), *readiness.borrow());
                async move {
                    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
                    match (stopping, readiness) {
                        (true, _) => plain(unavailable, "shutting down\n"),
                        (false, Readiness::Unreachable) => {
                            plain(unavailable, "the database is unreachable\n")
                        }
                        (false, Readiness::CatchingUp) => {
                            plain(unavailable, "catching up with the database\n")
                        }
                        (false, Readiness::Ready) => plain(StatusCode::OK, "ready\n"),
                    }
                }
            }),
        )
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        // After the fallback above, which would replace the OFREP routes' own (answered
        // behind their CORS layer).
        .merge(ofrep)
        .merge(console)
        .fallback(|| async { not_found() })
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// 405, as JSON.
pub(crate) fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not answer that method",
    )
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such route: flagstaffd serves the web console at / (sign in at /login), OFREP under \
         /ofrep/v1/, /healthz and /readyz over HTTP, and gRPC (content type application/grpc) \
         on the same port",
    )
}

/// A JSON error body, shaped like OFREP's `generalErrorResponse`.
fn error(status: StatusCode, details: &str) -> Response {
    let body = serde_json::json!({ "errorDetails": details }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
