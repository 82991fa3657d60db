//! OFREP's error answers: a status and a JSON body `{key?, errorCode?, errorDetails}`, as
//! OFREP 0.3.0 lists them, with `Retry-After` where the client should come back later.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

use crate::error::ServerError;

/// An OFREP request that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OfrepError {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    error_details: String,
}

impl OfrepError {
    fn new(status: StatusCode, code: Option<&'static str>, details: String) -> OfrepError {
        OfrepError {
            status,
            body: ErrorBody {
                key: None,
                error_code: code,
                error_details: details,
            },
            retry_after: None,
        }
    }

    /// 400 `PARSE_ERROR`: the body is not what OFREP sends.
    pub(crate) fn parse(details: impl Into<String>) -> OfrepError {
        OfrepError::new(StatusCode::BAD_REQUEST, Some("PARSE_ERROR"), details.into())
    }

    /// 400 `INVALID_CONTEXT`: the context cannot be evaluated with.
    pub(crate) fn invalid_context(details: impl Into<String>) -> OfrepError {
        OfrepError::new(
            StatusCode::BAD_REQUEST,
            Some("INVALID_CONTEXT"),
            details.into(),
        )
    }

    /// 404 `FLAG_NOT_FOUND`: no flag `key` that the token may see.
    pub(crate) fn flag_not_found(key: &str) -> OfrepError {
        OfrepError::new(
            StatusCode::NOT_FOUND,
            Some("FLAG_NOT_FOUND"),
            format!("flag {} was not found", flagstaff_engine::quote(key)),
        )
    }

    /// 401: no token, or one that is unknown or revoked.
    pub(crate) fn unauthenticated(details: impl Into<String>) -> OfrepError {
        OfrepError::new(StatusCode::UNAUTHORIZED, None, details.into())
    }

    /// 403: a token that may not evaluate over OFREP.
    pub(crate) fn forbidden(details: impl Into<String>) -> OfrepError {
        OfrepError::new(StatusCode::FORBIDDEN, None, details.into())
    }

    /// 413: a body over the size limit.
    pub(crate) fn too_large(limit: usize) -> OfrepError {
        OfrepError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("PARSE_ERROR"),
            format!("the request body is over the limit of {} MiB", limit >> 20),
        )
    }

    /// 408: the body did not arrive in time.
    pub(crate) fn timeout(limit: std::time::Duration) -> OfrepError {
        OfrepError::new(
            StatusCode::REQUEST_TIMEOUT,
            Some("PARSE_ERROR"),
            format!(
                "the request body did not arrive within {} s",
                limit.as_secs()
            ),
        )
    }

    /// 429 with `Retry-After`: the token or address is over its rate.
    pub(crate) fn too_many_requests(details: impl Into<String>, retry_after: u64) -> OfrepError {
        OfrepError {
            retry_after: Some(retry_after),
            ..OfrepError::new(StatusCode::TOO_MANY_REQUESTS, None, details.into())
        }
    }

    /// 503 with `Retry-After`: this server cannot answer yet.
    pub(crate) fn unavailable(details: impl Into<String>, retry_after: u64) -> OfrepError {
        OfrepError {
            retry_after: Some(retry_after),
            ..OfrepError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("GENERAL"),
                details.into(),
            )
        }
    }

    /// The same error about flag `key`.
    pub(crate) fn for_flag(mut self, key: &str) -> OfrepError {
        self.body.key = Some(key.to_owned());
        self
    }
}

impl From<ServerError> for OfrepError {
    fn from(err: ServerError) -> OfrepError {
        match err {
            ServerError::Unavailable(details) => {
                // The details name stored records, which a client token must not learn.
                tracing::warn!(error = %details, "an OFREP request met an environment out of service");
                OfrepError::unavailable(
                    "the environment cannot be served now; flagstaffd's log says why",
                    5,
                )
            }
            ServerError::NotFound(details) | ServerError::Unauthenticated(details) => {
                // The token's environment is gone: the token went with it.
                OfrepError::unauthenticated(details)
            }
            other => {
                tracing::error!(error = %other, "an OFREP request failed");
                OfrepError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Some("GENERAL"),
                    "flagstaffd failed to evaluate; the error is in its log".to_owned(),
                )
            }
        }
    }
}

impl IntoResponse for OfrepError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_environment_out_of_service_is_a_503_that_names_no_record() {
        let error = OfrepError::from(ServerError::Unavailable(
            "environment \"production\" is out of service: its record flag/internal-switch is \
             damaged"
                .to_owned(),
        ));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("internal-switch"), "{text}");
        assert!(text.contains("\"errorCode\":\"GENERAL\""), "{text}");
    }
}
