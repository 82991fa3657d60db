//! `/tokens`: the tokens that work now, for admins alone.

use std::sync::Arc;

use crate::storage::Role;
use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;

use crate::storage::Store;

use super::proxy::Proxied;
use super::{page, problem, signed_in, utc, Console, Who};

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

pub(super) async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
) -> Response {
    let session = match signed_in(&console, &headers, proxied).await {
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
