//! Signing in with a token, and signing out. Behind a sign-on proxy, `/login` says that the
//! proxy signs people in and takes no token; signing out ends the console's session alone.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use crate::error::ServerError;
use crate::storage::Store;

use super::proxy::Proxied;
use super::{forbidden_form, forbidden_origin, page, secured, session, unavailable, Console, Who};

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    who: Option<Who>,
    csrf: String,
    problem: Option<String>,
    /// The sign-on proxy signs people in: the page says so and has no form.
    proxied: bool,
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
            proxied: false,
        },
    );
    let cookie = console.cookies.set(console.cookies.login(), &csrf, false);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// `/login` behind a sign-on proxy: who the proxy signed in, and that the console takes no
/// token (`problem`: why a sign-in was refused).
fn proxied_page(
    status: StatusCode,
    proxied: Option<Extension<Proxied>>,
    problem: Option<String>,
) -> Response {
    page(
        status,
        &LoginPage {
            who: proxied.map(|Extension(Proxied(session))| Who::of(&session)),
            csrf: String::new(),
            problem,
            proxied: true,
        },
    )
}

pub(super) async fn form<S: Store>(
    State(console): State<Arc<Console<S>>>,
    proxied: Option<Extension<Proxied>>,
) -> Response {
    if console.proxy.is_some() {
        return proxied_page(StatusCode::OK, proxied, None);
    }
    login_page(&console, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

pub(super) async fn submit<S: Store>(
    State(console): State<Arc<Console<S>>>,
    uri: Uri,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    Form(form): Form<LoginForm>,
) -> Response {
    if console.proxy.is_some() {
        return proxied_page(
            StatusCode::FORBIDDEN,
            proxied,
            Some("This console takes no token: its sign-on proxy signs you in.".to_owned()),
        );
    }
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

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout<S: Store>(
    State(console): State<Arc<Console<S>>>,
    uri: Uri,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session::same_origin(&headers, &console.origins(&headers, &uri)) {
        return forbidden_origin();
    }
    let session = match console.session(&headers, proxied).await {
        Ok(Some(session)) => session,
        Ok(None) => return secured(Redirect::to("/login").into_response()),
        Err(e) => return unavailable(&e),
    };
    if !session::same_token(&session.record.csrf, &form.csrf) {
        return forbidden_form(&session);
    }
    if let Err(e) = console.sessions.end(&session.record.id_hash).await {
        return unavailable(&e);
    }
    tracing::info!(actor = %session.actor(), "signed out of the console");
    let mut response = secured(Redirect::to("/login").into_response());
    let cookies = console.cookies;
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookies.set(cookies.session(), "", true));
    response
}
