//! OpenFeature remote evaluation (OFREP 0.3.0) over HTTP, on the gRPC port (DESIGN.md
//! section 10): `POST /ofrep/v1/evaluate/flags/{key}` evaluates one flag,
//! `POST /ofrep/v1/evaluate/flags` every flag the token sees, `GET /ofrep/v1/events` tells
//! providers when to evaluate again. docs/ofrep.md describes them for users.
//!
//! - `context`: the request's context, flattened into the engine's.
//! - `error`: the error answers.
//! - `evaluate`: the two evaluation endpoints.
//! - `events`: the change-notification event stream.
//! - `limit`: rate limits and event-stream caps for client tokens.
//! - `stream`: `GET /ofrep/v1/events`, the event stream behind its ticket.
//! - `ticket`: the signed tickets in event-stream URLs.
//! - `usage`: evaluations counted toward flag usage.

pub(crate) mod context;
mod error;
mod evaluate;
pub mod events;
pub mod limit;
mod stream;
pub mod ticket;
mod usage;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{Tokens, Visibility};
use crate::environments::Environments;
use crate::error::ServerError;
use crate::storage::{Role, Store};
use error::OfrepError;
use limit::{Limiter, StreamCaps};
use ticket::Tickets;

use crate::service::watch::Signals;
pub use limit::RateLimits;
pub(crate) use usage::Tally;

/// The largest request body accepted: a context within the limits of DESIGN.md section 4a.
const MAX_BODY_BYTES: usize = 8 << 20;

/// What the OFREP routes share.
#[derive(Debug)]
pub(crate) struct Ofrep<S> {
    envs: Arc<Environments<S>>,
    tokens: Arc<Tokens<S>>,
    tally: Arc<Tally>,
    limiter: Limiter,
    caps: StreamCaps,
    /// Streams per client address, all tokens together.
    address_caps: StreamCaps,
    tickets: Arc<Tickets>,
    /// `--public-url` without a trailing `/`.
    public_url: Option<String>,
    signals: Signals,
}

impl<S: Store> Ofrep<S> {
    /// OFREP over `envs`, for the holders of `tokens`, counting evaluations in `tally`,
    /// signing event-stream URLs with `tickets`, limiting client tokens and advertising
    /// streams as `options` say; event streams end with `signals`.
    pub(crate) fn new(
        envs: Arc<Environments<S>>,
        tokens: Arc<Tokens<S>>,
        tally: Arc<Tally>,
        tickets: Arc<Tickets>,
        options: &OfrepOptions,
        signals: Signals,
    ) -> Ofrep<S> {
        Ofrep {
            envs,
            tokens,
            tally,
            limiter: Limiter::new(options.limits),
            caps: StreamCaps::new(options.limits.streams_per_token),
            address_caps: StreamCaps::new(options.limits.streams_per_address),
            tickets,
            public_url: options
                .public_url
                .as_deref()
                .map(|url| url.trim_end_matches('/').to_owned()),
            signals,
        }
    }

    /// Counts a request of the client token `token_id` from `addr` against its limits.
    fn limit(&self, token_id: &str, addr: IpAddr) -> Result<(), OfrepError> {
        self.limiter
            .check(token_id, addr, tokio::time::Instant::now())
            .map_err(|wait| {
                OfrepError::too_many_requests(
                    "too many requests with this client token from this address or in all; \
                     retry after the time given in Retry-After",
                    wait.seconds(),
                )
            })
    }

    /// Who is asking: the token of `Authorization: Bearer …` or `X-API-Key`, which must be an
    /// `sdk` or `client` token. A client token is public, so its requests are limited per
    /// token and per client address (429 beyond); an sdk token is a service's secret and is
    /// not limited. A token this flagstaffd has not heard of is looked up in a database it
    /// shares with others first.
    async fn caller(&self, parts: &Parts) -> Result<Caller, OfrepError> {
        let secret = presented_token(&parts.headers)?;
        let token = self
            .tokens
            .authenticate(secret)
            .await
            .map_err(token_refused)?;
        let Some((environment, visibility)) = token.evaluation_scope() else {
            let role = match token.role {
                Role::Admin => "an admin",
                Role::Editor => "an editor",
                _ => "this",
            };
            return Err(OfrepError::forbidden(format!(
                "{role} token cannot evaluate over OFREP: use an sdk token (services) or a \
                 client token (browsers and apps); admin and editor tokens must never be \
                 embedded in evaluation clients"
            )));
        };
        if visibility == Visibility::ClientSide {
            if let Some(addr) = peer_address(parts) {
                self.limit(&token.id, addr)?;
            }
        }
        Ok(Caller {
            token_id: token.id.clone(),
            environment: environment.to_owned(),
            visibility,
        })
    }
}

/// The answer to a token that cannot be used: 401, or 503 when it could not be looked up in
/// the database (the message says no more than that).
pub(super) fn token_refused(err: ServerError) -> OfrepError {
    match err {
        ServerError::Unavailable(details) => OfrepError::unavailable(details, 1),
        other => OfrepError::unauthenticated(other.to_string()),
    }
}

/// The address of the client a request came from, as the connection says (a reverse proxy's
/// own address when flagstaffd is behind one).
pub(super) fn peer_address(parts: &Parts) -> Option<IpAddr> {
    crate::http::peer_address(&parts.extensions)
}

/// The environment and visibility of the token a request came with.
#[derive(Debug, Clone)]
struct Caller {
    token_id: String,
    environment: String,
    visibility: Visibility,
}

/// The token a request presents: `Authorization: Bearer <token>` or `X-API-Key: <token>`.
fn presented_token(headers: &HeaderMap) -> Result<&str, OfrepError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default().trim();
        return match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
            _ => Err(OfrepError::unauthenticated(
                "the Authorization header must be `Bearer <token>`",
            )),
        };
    }
    if let Some(value) = headers.get("x-api-key") {
        return Ok(value.to_str().unwrap_or_default().trim());
    }
    Err(OfrepError::unauthenticated(
        "no token: send `Authorization: Bearer <token>` or `X-API-Key: <token>` with an sdk or \
         client token",
    ))
}

/// How the OFREP routes serve browsers and public tokens.
#[derive(Debug, Clone, Default)]
pub struct OfrepOptions {
    /// Origins whose web pages may call OFREP (CORS), e.g. `https://app.example.com`. No
    /// other route answers cross-origin requests.
    pub cors_origins: Vec<String>,
    /// The limits on client tokens.
    pub limits: RateLimits,
    /// The URL clients reach flagstaffd at (`--public-url`, e.g.
    /// `https://flags.example.com`), from which event-stream URLs are made absolute; without
    /// it they are given relative to the request's origin.
    pub public_url: Option<String>,
}

/// Why an [`OfrepOptions`] cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("{option} {value:?}: {problem}")]
pub struct OptionsError {
    option: &'static str,
    value: String,
    problem: &'static str,
}

impl OfrepOptions {
    /// Checks the options: each CORS origin must be `scheme://host[:port]`, as browsers send
    /// it in `Origin`; the public URL an `http(s)://` URL without query or fragment.
    pub fn check(&self) -> Result<(), OptionsError> {
        for origin in &self.cors_origins {
            let problem = if HeaderValue::from_str(origin).is_err() {
                Some("not a valid header value")
            } else {
                match origin.split_once("://") {
                    Some((scheme, host))
                        if !scheme.is_empty() && !host.is_empty() && !host.contains('/') =>
                    {
                        None
                    }
                    _ => Some(
                        "an origin is a scheme and a host, with an optional port and no path, \
                         e.g. https://app.example.com",
                    ),
                }
            };
            if let Some(problem) = problem {
                return Err(OptionsError {
                    option: "--cors-origin",
                    value: origin.clone(),
                    problem,
                });
            }
        }
        if let Some(url) = &self.public_url {
            let scheme_and_rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            let problem = match scheme_and_rest {
                None => Some("the public URL starts with https:// or http://"),
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    Some("the public URL names a host")
                }
                Some(rest) if rest.contains(['?', '#']) || HeaderValue::from_str(url).is_err() => {
                    Some("the public URL has no query or fragment and only visible ASCII")
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                return Err(OptionsError {
                    option: "--public-url",
                    value: url.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }
}

/// The OFREP routes, under `/ofrep/v1`, answering cross-origin requests from
/// `cors_origins`: preflights answered; `Authorization`, `X-API-Key`, `Content-Type`,
/// `If-None-Match` and `Last-Event-ID` (for event-stream clients built on `fetch`) allowed;
/// `ETag` and `Retry-After` exposed.
pub(crate) fn routes<S: Store>(ofrep: Arc<Ofrep<S>>, cors_origins: &[String]) -> axum::Router {
    let routes = axum::Router::new()
        .route(
            "/ofrep/v1/evaluate/flags/{key}",
            post(evaluate::single::<S>),
        )
        .route("/ofrep/v1/evaluate/flags", post(evaluate::bulk::<S>))
        .route("/ofrep/v1/events", get(stream::events::<S>))
        .method_not_allowed_fallback(|| async { crate::http::method_not_allowed() })
        .with_state(ofrep);
    let origins: Vec<HeaderValue> = cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return routes;
    }
    routes.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::ETAG, header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}
