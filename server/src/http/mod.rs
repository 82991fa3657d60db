//! HTTP on the gRPC port (DESIGN.md sections 9 and 10): `dispatch` sends each request to gRPC
//! or to the HTTP routes by its content type, `listen` accepts plain or TLS connections, and
//! this file holds the HTTP routes: OFREP under `/ofrep/v1/`, and `/healthz` and `/readyz`
//! for load balancers.

pub(crate) mod dispatch;
pub(crate) mod listen;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{header, StatusCode};
use tokio::sync::watch;

/// The HTTP routes: `ofrep` (the OFREP routes), the health checks, and a JSON 404 for anything
/// else. `/readyz` answers 503 once shutdown has begun (`stopping` turned true), so a load
/// balancer stops sending requests while those in flight finish.
pub(crate) fn routes(ofrep: axum::Router, stopping: watch::Receiver<bool>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { plain(StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let stopping = *stopping.borrow();
                async move {
                    if stopping {
                        plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                    } else {
                        plain(StatusCode::OK, "ready\n")
                    }
                }
            }),
        )
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        // After the fallback above, which would replace the OFREP routes' own (answered
        // behind their CORS layer).
        .merge(ofrep)
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
        "no such route: flagstaffd serves OFREP under /ofrep/v1/, /healthz and /readyz over \
         HTTP, and gRPC (content type application/grpc) on the same port",
    )
}

/// A JSON error body, shaped like OFREP's `generalErrorResponse`.
fn error(status: StatusCode, details: &str) -> Response {
    let body = serde_json::json!({ "errorDetails": details }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
