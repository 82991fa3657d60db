//! `/envs/{env}/segments`: the segments of an environment, by key, with their key counts,
//! their rules in plain words ([`flagstaff_engine::describe_conditions`]) and the flags that
//! use them; and `/envs/{env}/segments/{key}`: one segment, with its included and excluded
//! keys a page at a time.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use flagstaff_engine::{describe_conditions, Segment, Snapshot};
use serde::Deserialize;

use crate::storage::Store;

use super::proxy::Proxied;
use super::{bad_query, encode, environment_page, page, problem, Console, Paging, Who};

/// Segments shown on one page of the list.
pub const SEGMENTS_PER_PAGE: usize = 50;

/// Rules, and flags using it, shown of each segment in the list; its own page shows more.
pub const LISTED: usize = 5;

/// Rules, and flags using it, shown on a segment's own page.
pub const SHOWN: usize = 100;

/// Keys shown on one page of a segment's included (or excluded) keys.
pub const KEYS_PER_PAGE: usize = 200;

/// What the segment list is asked for.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    page: Option<usize>,
}

/// What a segment's page is asked for: the page of each key list.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SegmentQuery {
    #[serde(default)]
    included: Option<usize>,
    #[serde(default)]
    excluded: Option<usize>,
}

/// Some of a longer list: the items shown, and how many there are.
struct Shown<T> {
    items: Vec<T>,
    total: usize,
}

impl<T> Shown<T> {
    fn of(all: impl ExactSizeIterator<Item = T>, most: usize) -> Shown<T> {
        let total = all.len();
        Shown {
            items: all.take(most).collect(),
            total,
        }
    }

    /// Whether items are left out.
    fn cut(&self) -> bool {
        self.items.len() < self.total
    }
}

/// A flag that uses a segment, with where its page is.
struct FlagLink {
    key: String,
    href: String,
}

/// A segment as the pages show it.
struct SegmentView {
    key: String,
    href: String,
    description: String,
    included: usize,
    excluded: usize,
    /// Each rule in plain words.
    rules: Shown<String>,
    flags: Shown<FlagLink>,
}

#[derive(Template)]
#[template(path = "console/segments.html")]
struct SegmentsPage {
    who: Option<Who>,
    environment: String,
    /// The environment's page this is, for its navigation.
    section: &'static str,
    segments: Vec<SegmentView>,
    total: usize,
    shown_from: usize,
    shown_to: usize,
    paging: Paging,
    previous: Option<String>,
    next: Option<String>,
}

/// One page of a segment's key list.
struct KeyPage {
    keys: Vec<String>,
    total: usize,
    from: usize,
    to: usize,
    paging: Paging,
    previous: Option<String>,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "console/segment.html")]
struct SegmentPage {
    who: Option<Who>,
    environment: String,
    /// The environment's page this is, for its navigation.
    section: &'static str,
    segment: SegmentView,
    included: KeyPage,
    excluded: KeyPage,
}

pub(super) async fn list<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (session, environment) = match environment_page(&console, &headers, proxied, &env).await {
        Ok(opened) => opened,
        Err(response) => return *response,
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return bad_query(&session, &e),
    };
    let current = environment.current();
    let snapshot = &current.snapshot;
    let mut segments: Vec<&Segment> = snapshot.segments().collect();
    segments.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let paging = Paging::of(segments.len(), SEGMENTS_PER_PAGE, query.page);
    let shown: Vec<SegmentView> = paging
        .of_items(&segments)
        .map(|s| view(&env, snapshot, s, LISTED))
        .collect();
    let link = |n: usize| format!("/envs/{env}/segments?page={n}");
    page(
        StatusCode::OK,
        &SegmentsPage {
            who: Some(Who::of(&session)),
            environment: env.clone(),
            section: "segments",
            total: segments.len(),
            shown_from: paging.skip() + usize::from(!shown.is_empty()),
            shown_to: paging.skip() + shown.len(),
            segments: shown,
            paging,
            previous: paging.previous().map(link),
            next: paging.next().map(link),
        },
    )
}

pub(super) async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    query: Result<Query<SegmentQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (session, environment) = match environment_page(&console, &headers, proxied, &env).await {
        Ok(opened) => opened,
        Err(response) => return *response,
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return bad_query(&session, &e),
    };
    let current = environment.current();
    let Some(segment) = current.snapshot.segment(&key) else {
        return problem(
            StatusCode::NOT_FOUND,
            Some(Who::of(&session)),
            "No such segment",
            &format!("Environment {env:?} has no segment {key:?}."),
        );
    };
    let view = view(&env, &current.snapshot, segment, SHOWN);
    // Each list's link keeps the other list's page.
    let href = view.href.clone();
    let link = |included: usize, excluded: usize| {
        format!("{href}?included={included}&excluded={excluded}")
    };
    let included_paging = Paging::of(segment.included.len(), KEYS_PER_PAGE, query.included);
    let excluded_paging = Paging::of(segment.excluded.len(), KEYS_PER_PAGE, query.excluded);
    let included = key_page(&segment.included, included_paging, |n| {
        link(n, excluded_paging.page)
    });
    let excluded = key_page(&segment.excluded, excluded_paging, |n| {
        link(included_paging.page, n)
    });
    page(
        StatusCode::OK,
        &SegmentPage {
            who: Some(Who::of(&session)),
            environment: env.clone(),
            section: "segments",
            segment: view,
            included,
            excluded,
        },
    )
}

/// `segment` of `env` as the pages show it, with at most `most` rules and flags using it.
fn view(env: &str, snapshot: &Snapshot, segment: &Segment, most: usize) -> SegmentView {
    SegmentView {
        key: segment.key.clone(),
        href: format!("/envs/{env}/segments/{}", encode(&segment.key)),
        description: segment.description.clone().unwrap_or_default(),
        included: segment.included.len(),
        excluded: segment.excluded.len(),
        rules: Shown::of(
            segment
                .rules
                .iter()
                .map(|r| describe_conditions(&r.conditions)),
            most,
        ),
        flags: Shown::of(
            snapshot.flags_using(&segment.key).map(|flag| FlagLink {
                key: flag.to_owned(),
                href: format!("/envs/{env}/flags/{}", encode(flag)),
            }),
            most,
        ),
    }
}

/// The page `paging` of `keys`, linking to other pages with `link`.
fn key_page(keys: &[String], paging: Paging, link: impl Fn(usize) -> String) -> KeyPage {
    let shown: Vec<String> = paging.of_items(keys).cloned().collect();
    KeyPage {
        total: keys.len(),
        from: paging.skip() + usize::from(!shown.is_empty()),
        to: paging.skip() + shown.len(),
        keys: shown,
        paging,
        previous: paging.previous().map(&link),
        next: paging.next().map(&link),
    }
}
