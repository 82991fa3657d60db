//! `GET /ofrep/v1/events?ticket=…`: the change-notification stream the bulk endpoint
//! advertises (DESIGN.md section 10). Browsers cannot put headers on an `EventSource`, so the
//! URL carries a ticket (`ticket`) instead of the token; the stream itself is `events`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use http::{header, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::OfrepError;
use super::events::{event_stream, Holder, HEARTBEAT};
use super::limit::address_key;
use super::{peer_address, Caller, Ofrep};
use crate::environments::{Current, Environment};
use crate::error::ServerError;
use crate::storage::{Role, Store};

/// The path of the stream, which the bulk endpoint advertises.
const PATH: &str = "/ofrep/v1/events";

/// Seconds of inactivity (a hidden tab) after which providers close the stream.
const INACTIVITY_DELAY_SEC: u64 = 120;

/// Tickets are issued per window of this length: within one, a token's ticket (and so the bulk
/// answer and its ETag) is the same, valid for
/// [`TICKET_LIFETIME`](super::ticket::TICKET_LIFETIME) from the window's start.
const TICKET_WINDOW_SECS: u64 = 3600;

/// The start of the ticket window `now` falls in, in Unix seconds.
pub(super) fn ticket_window(now: SystemTime) -> u64 {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs - secs % TICKET_WINDOW_SECS
}

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
        // Issued at the window's start, so that the same request in the same window gets the
        // same URL: a 304 never keeps a provider on an expired ticket.
        let window = UNIX_EPOCH + Duration::from_secs(ticket_window(SystemTime::now()));
        let ticket = self
            .tickets
            .issue(&caller.token_id, &env.key, &env.epoch, window)
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
    match open(&ofrep, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn open<S: Store>(ofrep: &Ofrep<S>, request: Request) -> Result<Response, OfrepError> {
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
    // Issued by any flagstaffd of the database: one that has not heard of the token yet
    // looks it up there.
    let token = ofrep
        .tokens
        .find(&ticket.token_id)
        .await
        .map_err(super::token_refused)?
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
    // A ticket can end up in logs and browser histories: every token's streams are capped,
    // in all and per client address; a client token's are rate-limited too.
    let addr = peer_address(&parts);
    if let (Role::Client, Some(addr)) = (token.role, addr) {
        ofrep.limit(&token.id, addr)?;
    }
    let too_many = |what: &str| {
        OfrepError::too_many_requests(
            format!("too many event streams open {what}"),
            HEARTBEAT.as_secs(),
        )
    };
    let permits = (
        ofrep
            .caps
            .acquire(&token.id)
            .ok_or_else(|| too_many("with this token"))?,
        match addr {
            Some(addr) => Some(
                ofrep
                    .address_caps
                    .acquire(&address_key(addr).to_string())
                    .ok_or_else(|| too_many("from this address"))?,
            ),
            None => None,
        },
    );
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
    // The permits live as long as the stream: dropping the body frees the slots.
    let stream = event_stream(env, holder, last_event_id, HEARTBEAT).map(move |chunk| {
        let _held = &permits;
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
