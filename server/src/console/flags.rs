//! `/envs/{env}/flags`: the flag list, with search, filters and paging.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use crate::storage::Store;

use super::proxy::Proxied;
use super::{encode, environment_page, page, problem, Console, Who, PAGE_SIZE};

/// What the flag list is asked for.
#[derive(Debug, Default, Deserialize)]
pub(super) struct FlagQuery {
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
    /// The environment's page this is, for its navigation.
    section: &'static str,
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

pub(super) async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    query: Result<Query<FlagQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (session, environment) = match environment_page(&console, &headers, proxied, &env).await {
        Ok(opened) => opened,
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
            section: "flags",
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
