//! The web console (DESIGN.md section 11, docs/console.md): server-rendered pages on the one
//! port, for release managers and product owners who do not use a terminal. Templates are
//! compiled into the binary (askama, escaping by default); there is no script.
//!
//! - `session`: sign-in, sessions in the store, cookies, and the checks of every POST.
//! - this file: the routes, the pages, and the headers every answer carries.

mod session;

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Form;
use serde::Deserialize;

use crate::auth::Tokens;
use crate::environments::Environments;
use crate::error::ServerError;
use crate::storage::{Role, Store};

pub use session::{Cookies, Session, Sessions};

/// Flags shown on one page of the flag list.
pub const PAGE_SIZE: usize = 50;

/// What the console serves from.
#[derive(Debug)]
pub struct Console<S> {
    envs: Arc<Environments<S>>,
    tokens: Arc<Tokens<S>>,
    sessions: Sessions<S>,
    cookies: Cookies,
    /// The address people reach flagstaffd at (`--public-url`), whose origin a POST may
    /// also come from.
    public_origin: Option<String>,
}

impl<S: Store> Console<S> {
    /// The console of `envs` and `tokens`; `secure` when flagstaffd serves TLS.
    pub fn new(
        envs: Arc<Environments<S>>,
        tokens: Arc<Tokens<S>>,
        secure: bool,
        public_url: Option<&str>,
    ) -> Console<S> {
        let store = envs.store().clone();
        Console {
            envs,
            sessions: Sessions::new(store, tokens.clone()),
            tokens,
            cookies: Cookies { secure },
            public_origin: public_url.and_then(origin_of),
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

    /// The session of the request's cookie, if one is going.
    async fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, ServerError> {
        match session::cookie(headers, self.cookies.session()) {
            Some(id) => self.sessions.find(id).await,
            None => Ok(None),
        }
    }
}

/// `scheme://host[:port]` of `url`.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// The console's routes.
pub fn routes<S: Store>(console: Arc<Console<S>>) -> axum::Router {
    axum::Router::new()
        .route(
            "/",
            get(|| async { secured(Redirect::to("/envs").into_response()) }),
        )
        .route("/console.css", get(stylesheet))
        .route("/login", get(login_form::<S>).post(login::<S>))
        .route("/logout", post(logout::<S>))
        .route("/envs", get(environments::<S>))
        .route("/envs/{env}/flags", get(flags::<S>))
        .route("/tokens", get(tokens::<S>))
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
#[template(path = "console/login.html")]
struct LoginPage {
    who: Option<Who>,
    csrf: String,
    problem: Option<String>,
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

/// The sign-in form, with a fresh CSRF token in the form and in a cookie.
fn login_page<S: Store>(
    console: &Console<S>,
    status: StatusCode,
    problem: Option<String>,
) -> Response {
    let csrf = crate::storage::random_id();
    let mut response = page(
        status,
        &LoginPage {
            who: None,
            csrf: csrf.clone(),
            problem,
        },
    );
    let cookie = console.cookies.set(console.cookies.login(), &csrf, false);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

async fn login_form<S: Store>(State(console): State<Arc<Console<S>>>) -> Response {
    login_page(&console, StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

async fn login<S: Store>(
    State(console): State<Arc<Console<S>>>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !session::same_origin(&headers, &console.origins(&headers, &uri)) {
        return forbidden_origin();
    }
    let expected = session::cookie(&headers, console.cookies.login()).unwrap_or_default();
    if !session::same_token(expected, &form.csrf) {
        return login_page(
            &console,
            StatusCode::FORBIDDEN,
            Some("The form had expired or was not this console's: sign in again.".to_owned()),
        );
    }
    if form.token.trim().is_empty() {
        return login_page(
            &console,
            StatusCode::BAD_REQUEST,
            Some("Paste a token to sign in.".to_owned()),
        );
    }
    match console.sessions.sign_in(&form.token).await {
        Ok((id, record)) => {
            tracing::info!(person = %record.person, "signed in to the console");
            // Sessions are made only here: removing those unused for 12 hours here bounds
            // how many are kept by how many sign-ins there were in 12 hours.
            if let Err(e) = console.sessions.prune().await {
                tracing::warn!(error = %e, "cannot remove the console sessions unused for 12 hours");
            }
            let mut response = secured(Redirect::to("/envs").into_response());
            let cookies = console.cookies;
            let set = response.headers_mut();
            set.append(
                header::SET_COOKIE,
                cookies.set(cookies.session(), &id, false),
            );
            set.append(header::SET_COOKIE, cookies.set(cookies.login(), "", true));
            response
        }
        Err(ServerError::Unauthenticated(why) | ServerError::PermissionDenied(why)) => login_page(
            &console,
            StatusCode::UNAUTHORIZED,
            Some(format!("That token cannot sign in: {why}.")),
        ),
        Err(e) => login_page(
            &console,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(format!("Signing in failed: {e}. Try again.")),
        ),
    }
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

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout<S: Store>(
    State(console): State<Arc<Console<S>>>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session::same_origin(&headers, &console.origins(&headers, &uri)) {
        return forbidden_origin();
    }
    let session = match console.session(&headers).await {
        Ok(Some(session)) => session,
        Ok(None) => return secured(Redirect::to("/login").into_response()),
        Err(e) => return unavailable(&e),
    };
    if !session::same_token(&session.record.csrf, &form.csrf) {
        return problem(
            StatusCode::FORBIDDEN,
            Some(Who::of(&session)),
            "Refused",
            "The form was not this session's (its CSRF token is missing or wrong); you are \
             still signed in.",
        );
    }
    if let Err(e) = console.sessions.end(&session.record.id_hash).await {
        return unavailable(&e);
    }
    tracing::info!(person = %session.record.person, "signed out of the console");
    let mut response = secured(Redirect::to("/login").into_response());
    let cookies = console.cookies;
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookies.set(cookies.session(), "", true));
    response
}

fn unavailable(e: &ServerError) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "Unavailable",
        &format!("{e}. Try again in a moment."),
    )
}

/// The session of a page's request; without one, the answer that sends the person to sign
/// in.
async fn signed_in<S: Store>(
    console: &Console<S>,
    headers: &HeaderMap,
) -> Result<Session, Box<Response>> {
    match console.session(headers).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(Box::new(secured(Redirect::to("/login").into_response()))),
        Err(e) => Err(Box::new(unavailable(&e))),
    }
}

/// An environment as the environments page lists it.
struct EnvironmentRow {
    key: String,
    flags: usize,
    revision: u64,
    protected: bool,
}

#[derive(Template)]
#[template(path = "console/environments.html")]
struct EnvironmentsPage {
    who: Option<Who>,
    environments: Vec<EnvironmentRow>,
}

async fn environments<S: Store>(
    State(console): State<Arc<Console<S>>>,
    headers: HeaderMap,
) -> Response {
    let session = match signed_in(&console, &headers).await {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let mut environments: Vec<EnvironmentRow> = console
        .envs
        .list()
        .into_iter()
        .filter(|env| session.may_see(&env.key))
        .map(|env| {
            let current = env.current();
            EnvironmentRow {
                key: env.key.clone(),
                flags: current.snapshot.len(),
                revision: current.revision,
                protected: env.protected,
            }
        })
        .collect();
    environments.sort_by(|a, b| a.key.cmp(&b.key));
    page(
        StatusCode::OK,
        &EnvironmentsPage {
            who: Some(Who::of(&session)),
            environments,
        },
    )
}

/// What the flag list is asked for.
#[derive(Debug, Default, Deserialize)]
struct FlagQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    temporary: Option<String>,
    #[serde(default)]
    client_side: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

/// A flag as the flag list shows it.
struct FlagRow {
    key: String,
    description: String,
    enabled: bool,
    temporary: bool,
    client_side: bool,
    serves: String,
    tags: String,
    owner: String,
    version: u64,
}

#[derive(Template)]
#[template(path = "console/flags.html")]
struct FlagsPage {
    who: Option<Who>,
    environment: String,
    q: String,
    state: String,
    temporary: bool,
    client_side: bool,
    flags: Vec<FlagRow>,
    matching: usize,
    total: usize,
    page: usize,
    pages: usize,
    previous: Option<String>,
    next: Option<String>,
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

async fn flags<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    query: Result<Query<FlagQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let session = match signed_in(&console, &headers).await {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let environment = match environment_for(&console, &session, &env) {
        Ok(environment) => environment,
        Err(response) => return *response,
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(Who::of(&session)),
                "Not a flag search",
                &format!("The address's query is not one this page reads: {e}."),
            )
        }
    };
    let current = environment.current();
    let needle = query.q.trim().to_lowercase();
    let (temporary, client_side) = (query.temporary.is_some(), query.client_side.is_some());
    let mut matching: Vec<&flagstaff_engine::Flag> = current
        .snapshot
        .flags()
        .filter(|f| match query.state.as_str() {
            "on" => f.enabled,
            "off" => !f.enabled,
            _ => true,
        })
        .filter(|f| !temporary || f.temporary)
        .filter(|f| !client_side || f.client_side)
        .filter(|f| needle.is_empty() || mentions(f, &needle))
        .collect();
    matching.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let pages = matching.len().div_ceil(PAGE_SIZE).max(1);
    let page_number = query.page.unwrap_or(1).clamp(1, pages);
    let rows = matching
        .iter()
        .skip((page_number - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .map(|f| FlagRow {
            key: f.key.clone(),
            description: f.description.clone().unwrap_or_default(),
            enabled: f.enabled,
            temporary: f.temporary,
            client_side: f.client_side,
            serves: flagstaff_engine::serve_summary(&f.default),
            tags: f.tags.join(", "),
            owner: f.owner.clone().unwrap_or_default(),
            version: f.version.unwrap_or(0),
        })
        .collect();
    let link = |n: usize| {
        let mut url = format!("/envs/{env}/flags?page={n}");
        let mut add = |name: &str, value: &str| {
            url.push_str(&format!("&{name}={}", encode(value)));
        };
        if !query.q.is_empty() {
            add("q", &query.q);
        }
        if !query.state.is_empty() {
            add("state", &query.state);
        }
        if temporary {
            add("temporary", "1");
        }
        if client_side {
            add("client_side", "1");
        }
        url
    };
    page(
        StatusCode::OK,
        &FlagsPage {
            who: Some(Who::of(&session)),
            environment: env.clone(),
            q: query.q.clone(),
            state: query.state.clone(),
            temporary,
            client_side,
            matching: matching.len(),
            total: current.snapshot.len(),
            flags: rows,
            page: page_number,
            pages,
            previous: (page_number > 1).then(|| link(page_number - 1)),
            next: (page_number < pages).then(|| link(page_number + 1)),
        },
    )
}

/// A token as the tokens page lists it.
struct TokenRow {
    name: String,
    role: &'static str,
    environment: String,
    created: String,
    created_by: String,
}

#[derive(Template)]
#[template(path = "console/tokens.html")]
struct TokensPage {
    who: Option<Who>,
    tokens: Vec<TokenRow>,
}

async fn tokens<S: Store>(State(console): State<Arc<Console<S>>>, headers: HeaderMap) -> Response {
    let session = match signed_in(&console, &headers).await {
        Ok(session) => session,
        Err(response) => return *response,
    };
    if !session.is_admin() {
        return problem(
            StatusCode::FORBIDDEN,
            Some(Who::of(&session)),
            "Admins only",
            "Tokens are an admin's to see and manage.",
        );
    }
    let mut live: Vec<_> = console
        .tokens
        .list()
        .into_iter()
        .filter(|t| !t.revoked)
        .collect();
    live.sort_by(|a, b| a.name.cmp(&b.name).then(a.created_ms.cmp(&b.created_ms)));
    let tokens = live
        .into_iter()
        .map(|t| TokenRow {
            name: t.name,
            role: match t.role {
                Role::Admin => "admin",
                Role::Editor => "editor",
                Role::Sdk => "sdk",
                Role::Client => "client",
            },
            environment: t.environment.unwrap_or_default(),
            created: utc(t.created_ms),
            created_by: t.created_by,
        })
        .collect();
    page(
        StatusCode::OK,
        &TokensPage {
            who: Some(Who::of(&session)),
            tokens,
        },
    )
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

/// Whether `flag`'s key, description, a tag or its owner holds `needle` (lower case).
fn mentions(flag: &flagstaff_engine::Flag, needle: &str) -> bool {
    flag.key.to_lowercase().contains(needle)
        || flag
            .description
            .as_deref()
            .is_some_and(|d| d.to_lowercase().contains(needle))
        || flag.tags.iter().any(|t| t.to_lowercase().contains(needle))
        || flag
            .owner
            .as_deref()
            .is_some_and(|o| o.to_lowercase().contains(needle))
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
