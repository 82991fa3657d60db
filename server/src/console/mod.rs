//! The web console (DESIGN.md section 11, docs/console.md): server-rendered pages on the one
//! port, for release managers and product owners who do not use a terminal. Templates are
//! compiled into the binary (askama, escaping by default); there is no script.
//!
//! - `session`: sign-in, sessions in the store, cookies, and the checks of every POST.
//! - `proxy` and `users`: single sign-on through an authenticating proxy, and the users file
//!   saying who may come in.
//! - `login`: the sign-in form, signing in and out.
//! - `environments`, `flags`, `flag`, `history`, `stale`, `rollouts`, `segments`, `clients`,
//!   `tokens`: one page (or list) each.
//! - this file: the routes, what every page shares, and the headers every answer carries.

mod clients;
mod environments;
mod flag;
mod flags;
mod history;
mod login;
mod proxy;
mod rollouts;
mod segments;
mod session;
mod stale;
mod tokens;
mod users;
mod write;

use std::sync::Arc;

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Extension;

use crate::auth::Tokens;
use crate::clients::Clients;
use crate::environments::Environments;
use crate::error::ServerError;
use crate::storage::{Role, Store};

pub use proxy::ProxySignOn;
pub use session::{Cookies, Session, Sessions};

/// Flags shown on one page of the flag list.
pub const PAGE_SIZE: usize = 50;

/// The pages of an environment, as its navigation lists them: (name, path under
/// `/envs/{env}/`).
pub const ENV_SECTIONS: &[(&str, &str)] = &[
    ("Flags", "flags"),
    ("Stale flags", "stale"),
    ("Rollouts", "rollouts"),
    ("Segments", "segments"),
    ("Propagation", "clients"),
    ("History", "history"),
];

/// How the console signs people in.
#[derive(Debug, Default)]
pub struct ConsoleOptions {
    /// Single sign-on through an authenticating proxy (`--console-proxy-header`), instead of
    /// tokens pasted at `/login`.
    pub proxy: Option<ProxySignOn>,
}

/// What the console serves from.
#[derive(Debug)]
pub struct Console<S> {
    envs: Arc<Environments<S>>,
    tokens: Arc<Tokens<S>>,
    /// The SDK instances watching, for the propagation page.
    clients: Arc<Clients>,
    sessions: Sessions<S>,
    cookies: Cookies,
    /// The address people reach flagstaffd at (`--public-url`), whose origin a POST may
    /// also come from.
    public_origin: Option<String>,
    /// Sign-on through an authenticating proxy; token sign-in when `None`.
    proxy: Option<ProxySignOn>,
}

impl<S: Store> Console<S> {
    /// The console of `envs` and `tokens`, signing people in as `options` say; `secure` when
    /// The console of `envs`, `tokens` and the SDK instances of `clients`; `secure` when
    /// flagstaffd serves TLS.
    pub fn new(
        envs: Arc<Environments<S>>,
        tokens: Arc<Tokens<S>>,
        clients: Arc<Clients>,
        secure: bool,
        public_url: Option<&str>,
        options: ConsoleOptions,
    ) -> Console<S> {
        let store = envs.store().clone();
        Console {
            envs,
            sessions: Sessions::new(store, tokens.clone()),
            tokens,
            clients,
            cookies: Cookies { secure },
            public_origin: public_url.and_then(origin_of),
            proxy: options.proxy,
        }
    }

    /// The origins a POST of this console comes from: this server as the request names it
    /// (its `Host` header in HTTP/1.1, its authority in HTTP/2), and the public URL.
    fn origins(&self, headers: &HeaderMap, uri: &Uri) -> Vec<String> {
        let scheme = if self.cookies.secure { "https" } else { "http" };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()));
        let mut origins: Vec<String> = host
            .map(|host| format!("{scheme}://{host}"))
            .into_iter()
            .collect();
        origins.extend(self.public_origin.clone());
        origins
    }

    /// The session of a request: the one the sign-on proxy's gate found (`proxied`), or,
    /// signing in with tokens, the token's session of the request's cookie, if one is going.
    async fn session(
        &self,
        headers: &HeaderMap,
        proxied: Option<Extension<proxy::Proxied>>,
    ) -> Result<Option<Session>, ServerError> {
        if self.proxy.is_some() {
            return Ok(proxied.map(|Extension(proxy::Proxied(session))| session));
        }
        let found = match session::cookie(headers, self.cookies.session()) {
            Some(id) => self.sessions.find(id).await?,
            None => None,
        };
        // A session a proxy began is not served by a console that takes tokens.
        Ok(found.filter(|session| !session.is_proxied()))
    }
}

/// `scheme://host[:port]` of `url`.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// The console's routes. All but the stylesheet pass the sign-on proxy's gate
/// ([`proxy::gate`]), which lets everything through when people sign in with tokens.
pub fn routes<S: Store>(console: Arc<Console<S>>) -> axum::Router {
    axum::Router::new()
        .route(
            "/",
            get(|| async { secured(Redirect::to("/envs").into_response()) }),
        )
        .route("/login", get(login::form::<S>).post(login::submit::<S>))
        .route("/logout", post(login::logout::<S>))
        .route("/envs", get(environments::show::<S>))
        .route("/envs/{env}/flags", get(flags::show::<S>))
        .route("/envs/{env}/flags/{key}", get(flag::show::<S>))
        .route(
            "/envs/{env}/flags/{key}/enabled",
            post(write::set_enabled::<S>),
        )
        .route("/envs/{env}/flags/{key}/serve", post(write::set_serve::<S>))
        .route("/envs/{env}/flags/{key}/revert", post(write::revert::<S>))
        .route("/envs/{env}/history", get(history::show::<S>))
        .route("/envs/{env}/stale", get(stale::show::<S>))
        .route("/envs/{env}/rollouts", get(rollouts::show::<S>))
        .route("/envs/{env}/segments", get(segments::list::<S>))
        .route("/envs/{env}/segments/{key}", get(segments::show::<S>))
        .route("/envs/{env}/clients", get(clients::show::<S>))
        .route("/tokens", get(tokens::show::<S>))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            proxy::gate::<S>,
        ))
        .route("/console.css", get(stylesheet))
        .with_state(console)
}

/// The headers every console answer carries: no script at all, no framing, nothing cached.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// `template` rendered as a page with `status`.
fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => secured(
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            secured(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

async fn stylesheet() -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    secured(response)
}

/// Who is signed in, as every page shows them.
#[derive(Debug, Clone)]
struct Who {
    person: String,
    role: &'static str,
    admin: bool,
    /// The session's CSRF token, for the sign-out form.
    csrf: String,
}

impl Who {
    fn of(session: &Session) -> Who {
        Who {
            person: session.record.person.clone(),
            role: match session.record.role {
                Role::Admin => "admin",
                _ => "editor",
            },
            admin: session.is_admin(),
            csrf: session.record.csrf.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/problem.html")]
struct ProblemPage {
    who: Option<Who>,
    heading: String,
    detail: String,
}

/// A page saying what went wrong, with `status`.
fn problem(status: StatusCode, who: Option<Who>, heading: &str, detail: &str) -> Response {
    page(
        status,
        &ProblemPage {
            who,
            heading: heading.to_owned(),
            detail: detail.to_owned(),
        },
    )
}

/// The answer to a POST from another origin: nothing was done.
fn forbidden_origin() -> Response {
    problem(
        StatusCode::FORBIDDEN,
        None,
        "Refused",
        "This form was not sent from a page of this console (its Origin is missing or another \
         site's); nothing was done.",
    )
}

/// The answer to a POST without this session's CSRF token: nothing was done.
fn forbidden_form(session: &Session) -> Response {
    problem(
        StatusCode::FORBIDDEN,
        Some(Who::of(session)),
        "Refused",
        "The form was not this session's (its CSRF token is missing or wrong); nothing was \
         done, and you are still signed in.",
    )
}

fn unavailable(e: &ServerError) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "Unavailable",
        &format!("{e}. Try again in a moment."),
    )
}

/// The session of a page's request (`proxied`: the one the sign-on proxy's gate found);
/// without one, the answer that sends the person to sign in.
async fn signed_in<S: Store>(
    console: &Console<S>,
    headers: &HeaderMap,
    proxied: Option<Extension<proxy::Proxied>>,
) -> Result<Session, Box<Response>> {
    match console.session(headers, proxied).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(Box::new(secured(Redirect::to("/login").into_response()))),
        Err(e) => Err(Box::new(unavailable(&e))),
    }
}

/// The session and the environment `key` of a request for one of an environment's pages:
/// [`signed_in`], then [`environment_for`]; otherwise the answer to send instead.
async fn environment_page<S: Store>(
    console: &Console<S>,
    headers: &HeaderMap,
    proxied: Option<Extension<proxy::Proxied>>,
    key: &str,
) -> Result<(Session, Arc<crate::environments::Environment>), Box<Response>> {
    let session = signed_in(console, headers, proxied).await?;
    let environment = environment_for(console, &session, key)?;
    Ok((session, environment))
}

/// The environment `key` if the person may see it; otherwise the page saying there is none
/// (the same for one that does not exist, so an editor learns nothing of others).
fn environment_for<S: Store>(
    console: &Console<S>,
    session: &Session,
    key: &str,
) -> Result<Arc<crate::environments::Environment>, Box<Response>> {
    match console.envs.get(key) {
        Ok(env) if session.may_see(key) => Ok(env),
        _ => Err(Box::new(problem(
            StatusCode::NOT_FOUND,
            Some(Who::of(session)),
            "No such environment",
            &format!("There is no environment {key:?} that you may see."),
        ))),
    }
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::storage::StoreError> + Send + 'static,
) -> Result<T, ServerError> {
    off_thread(move || work().map_err(ServerError::from)).await
}

/// Runs `work`, which reads the store, on a blocking thread.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServerError::Unavailable(format!("a blocking task failed: {e}")))?
}

/// The answer to a page address whose query the page does not read.
fn bad_query(session: &Session, e: &dyn std::fmt::Display) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        Some(Who::of(session)),
        "Not an address this page reads",
        &format!("The address's query is not one this page reads: {e}."),
    )
}

/// Which part of a long list a page shows: `size` items to a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Paging {
    /// The page shown, from 1.
    page: usize,
    /// How many pages the list makes (at least 1).
    pages: usize,
    /// Items to a page.
    size: usize,
}

impl Paging {
    /// Page `asked` (the first when not asked, the last when past the end) of `total` items.
    fn of(total: usize, size: usize, asked: Option<usize>) -> Paging {
        let pages = total.div_ceil(size).max(1);
        Paging {
            page: asked.unwrap_or(1).clamp(1, pages),
            pages,
            size,
        }
    }

    /// How many items come before the page.
    fn skip(self) -> usize {
        (self.page - 1) * self.size
    }

    /// The page's part of `items`.
    fn of_items<T>(self, items: impl IntoIterator<Item = T>) -> impl Iterator<Item = T> {
        items.into_iter().skip(self.skip()).take(self.size)
    }

    /// The page before, if any.
    fn previous(self) -> Option<usize> {
        (self.page > 1).then(|| self.page - 1)
    }

    /// The page after, if any.
    fn next(self) -> Option<usize> {
        (self.page < self.pages).then(|| self.page + 1)
    }
}

/// `ms` (a duration in milliseconds) as `1h 5m`, `9m 58s`, `12s`, `2d 3h`, as the CLI writes
/// time left.
fn span(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `ms` (Unix milliseconds) as `2026-12-08 09:30 UTC`.
fn utc(ms: u64) -> String {
    let minutes = ms / 60_000;
    let (days, minute) = (minutes / 1440, minutes % 1440);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        minute / 60,
        minute % 60
    )
}

/// `value` percent-encoded for a query string.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_723_400_000), "2026-12-08 09:50 UTC");
    }

    #[test]
    fn spans_are_written_in_their_two_largest_units() {
        assert_eq!(span(12_000), "12s");
        assert_eq!(span(598_000), "9m 58s");
        assert_eq!(span(3_900_000), "1h 5m");
        assert_eq!(span(183_600_000), "2d 3h");
    }

    #[test]
    fn pages_are_clamped_to_the_list() {
        let paging = Paging::of(120, 50, Some(9));
        assert_eq!((paging.page, paging.pages, paging.skip()), (3, 3, 100));
        assert_eq!((paging.previous(), paging.next()), (Some(2), None));
        assert_eq!(Paging::of(0, 50, None).pages, 1);
        assert_eq!(Paging::of(10, 50, Some(0)).page, 1);
    }

    #[test]
    fn origins_are_scheme_and_host() {
        assert_eq!(
            origin_of("https://flags.example.com/console"),
            Some("https://flags.example.com".to_owned())
        );
        assert_eq!(
            origin_of("http://10.0.0.1:7878"),
            Some("http://10.0.0.1:7878".to_owned())
        );
        assert_eq!(origin_of("nonsense"), None);
    }
}
