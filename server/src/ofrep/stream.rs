//! `GET /ofrep/v1/events?ticket=…`: the change-notification stream the bulk endpoint
//! advertises (DESIGN.md section 10). Browsers cannot put headers on an `EventSource`, so the
//! URL carries a ticket (`ticket`) instead of the token; the stream itself is `events`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use http::{header, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::OfrepError;
use super::events::{event_stream, Holder, HEARTBEAT};
use super::{peer_address, Caller, Ofrep};
use crate::environments::{Current, Environment};
use crate::error::ServerError;
use crate::storage::{Role, Store};

/// The path of the stream, which the bulk endpoint advertises.
const PATH: &str = "/ofrep/v1/events";

/// Seconds of inactivity (a hidden tab) after which providers close the stream.
const INACTIVITY_DELAY_SEC: u64 = 120;

/// The query of `GET /ofrep/v1/events`.
#[derive(Debug, Default, Deserialize)]
struct EventsQuery {
    /// The signed ticket naming the token and environment.
    ticket: Option<String>,
    /// `<epoch>.<revision>` of the bulk evaluation that advertised the URL: where a stream
    /// without `Last-Event-ID` starts, so a revision committed between that evaluation and
    /// the connection is announced too.
    since: Option<String>,
}

/// An entry of the bulk answer's `eventStreams`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventStream {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<Endpoint>,
    inactivity_delay_sec: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    request_uri: String,
}

impl<S: Store> Ofrep<S> {
    /// The event stream to advertise to `caller` after evaluating `current` of `env`: a
    /// ticket valid for 24 hours in the URL, never the token. The URL is absolute from
    /// `--public-url`, else relative to the request's origin (`endpoint.requestUri`). `None`
    /// (no stream advertised: providers poll) if no ticket can be made.
    pub(super) fn event_stream_for(
        &self,
        caller: &Caller,
        env: &Environment,
        current: &Current,
    ) -> Option<EventStream> {
        let ticket = self
            .tickets
            .issue(&caller.token_id, &env.key, &env.epoch, SystemTime::now())
            .map_err(|e| tracing::warn!(error = %e, "no event-stream ticket"))
            .ok()?;
        let request_uri = format!(
            "{PATH}?ticket={ticket}&since={}.{}",
            env.epoch, current.revision
        );
        let (url, endpoint) = match &self.public_url {
            Some(base) => (Some(format!("{base}{request_uri}")), None),
            None => (None, Some(Endpoint { request_uri })),
        };
        Some(EventStream {
            kind: "sse",
            url,
            endpoint,
            inactivity_delay_sec: INACTIVITY_DELAY_SEC,
        })
    }
}

/// `GET /ofrep/v1/events`.
pub(super) async fn events<S: Store>(
    State(ofrep): State<Arc<Ofrep<S>>>,
    request: Request,
) -> Response {
    match open(&ofrep, request) {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn open<S: Store>(ofrep: &Ofrep<S>, request: Request) -> Result<Response, OfrepError> {
    let (parts, _) = request.into_parts();
    let query = Query::<EventsQuery>::try_from_uri(&parts.uri)
        .map_err(|e| OfrepError::parse(format!("the query string: {}", e.body_text())))?;
    let Some(ticket) = query.ticket.as_deref() else {
        return Err(OfrepError::unauthenticated(
            "no ticket: use the URL the bulk evaluation endpoint advertises in eventStreams",
        ));
    };
    // An open stream outlives its ticket; a new one needs a valid ticket: after a 401,
    // providers evaluate again and get a fresh URL.
    let ticket = ofrep
        .tickets
        .verify(ticket, SystemTime::now())
        .map_err(|e| OfrepError::unauthenticated(format!("the ticket is not valid: {e}")))?;
    let token = ofrep
        .tokens
        .by_id(&ticket.token_id)
        .filter(|t| !t.revoked)
        .ok_or_else(|| OfrepError::unauthenticated("the token has been revoked"))?;
    let env = match ofrep.envs.get(&ticket.environment) {
        Ok(env) if env.epoch == ticket.epoch => env,
        Ok(_) | Err(ServerError::NotFound(_)) => {
            return Err(OfrepError::unauthenticated(
                "the ticket's environment has been deleted or recreated",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let permit = match token.role {
        Role::Client => {
            if let Some(addr) = peer_address(&parts) {
                ofrep.limit(&token.id, addr)?;
            }
            let permit = ofrep.caps.acquire(&token.id).ok_or_else(|| {
                OfrepError::too_many_requests(
                    "too many event streams open with this client token",
                    HEARTBEAT.as_secs(),
                )
            })?;
            Some(permit)
        }
        _ => None,
    };
    let last_event_id = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.since.as_deref());
    let holder = Holder {
        tokens: ofrep.tokens.clone(),
        token_id: token.id,
        signals: ofrep.signals.clone(),
    };
    // The permit lives as long as the stream: dropping the body frees the slot.
    let stream = event_stream(env, holder, last_event_id, HEARTBEAT).map(move |chunk| {
        let _held = &permit;
        chunk
    });
    let mut response = Body::from_stream(stream).into_response();
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
