//! `/envs`: the environments the person may see.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;

use crate::storage::Store;

use super::proxy::Proxied;
use super::{page, signed_in, Console, Who};

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

pub(super) async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
) -> Response {
    let session = match signed_in(&console, &headers, proxied).await {
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
