//! `/envs/{env}/stale`: the flags ready to be removed from code, as `flagstaff flag stale`
//! finds them ([`flagstaff_engine::staleness`]): temporary flags serving one variant to
//! everyone, and flags no SDK has evaluated, for `?days=N` days (30 unless asked).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use flagstaff_engine::{Snapshot, Staleness};
use serde::Deserialize;

use super::proxy::Proxied;
use super::{blocking, environment_page, page, problem, utc, Console, Paging, Who};
use crate::storage::{AuditChange, Store, StoreError};

/// Days without change or evaluation that make a flag stale, unless the address says.
pub const DEFAULT_DAYS: u64 = 30;

/// Stale flags listed on one page.
pub const STALE_PER_PAGE: usize = 100;

/// The most days the page is asked about: ten years.
pub const MAX_DAYS: u64 = 3650;

/// History entries the page reads at most, per view, to find when the flags never evaluated
/// were created. A flag not found in them that changed within the window is counted as not
/// checked.
pub const MAX_HISTORY_READ: usize = 1_000;

/// History entries read at once: an entry may hold a whole import, so few.
const HISTORY_PAGE: usize = 50;

/// What the stale page is asked for.
#[derive(Debug, Default, Deserialize)]
pub(super) struct StaleQuery {
    #[serde(default)]
    days: Option<u64>,
    #[serde(default)]
    page: Option<usize>,
}

/// A stale flag as the page lists it.
struct StaleRow {
    key: String,
    temporary: bool,
    why: String,
    since: String,
}

#[derive(Template)]
#[template(path = "console/stale.html")]
struct StalePage {
    who: Option<Who>,
    environment: String,
    section: &'static str,
    days: u64,
    /// The stale flags of this page.
    flags: Vec<StaleRow>,
    /// How many flags are stale, on every page.
    matching: usize,
    shown_from: usize,
    shown_to: usize,
    previous: Option<String>,
    next: Option<String>,
    total: usize,
    /// Flags never evaluated, changed within the window, whose creation was not found in the
    /// history read.
    unchecked: usize,
}

/// What the page needs to know of one flag from the store and the usage reports.
struct Facts {
    key: String,
    /// The revision of its last change.
    version: u64,
    changed_ms: u64,
    evaluated_ms: u64,
}

pub(super) async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    query: Result<Query<StaleQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (session, environment) = match environment_page(&console, &headers, proxied, &env).await {
        Ok(opened) => opened,
        Err(response) => return *response,
    };
    let who = Some(Who::of(&session));
    let (days, asked_page) = match query {
        Ok(Query(StaleQuery { days: None, page })) => (DEFAULT_DAYS, page),
        Ok(Query(StaleQuery {
            days: Some(days),
            page,
        })) if days <= MAX_DAYS => (days, page),
        Ok(Query(StaleQuery {
            days: Some(days), ..
        })) => {
            return problem(
                StatusCode::BAD_REQUEST,
                who,
                "Not a number of days",
                &format!("days is {days}; ask for 0 to {MAX_DAYS} days."),
            )
        }
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                who,
                "Not a number of days",
                &format!("The address's query is not one this page reads (days=N, page=N): {e}."),
            )
        }
    };
    let current = environment.current();
    let facts: Vec<Facts> = current
        .snapshot
        .flags()
        .map(|flag| Facts {
            key: flag.key.clone(),
            version: flag.version.unwrap_or(0),
            changed_ms: 0,
            evaluated_ms: environment
                .usage(&flag.key)
                .unwrap_or_default()
                .last_evaluated_ms,
        })
        .collect();
    let total = facts.len();
    let now_ms = crate::storage::now_ms();
    let store = console.envs.store().clone();
    let looked_up = env.clone();
    let found =
        blocking(move || stale_flags(&*store, &looked_up, &current.snapshot, facts, days, now_ms))
            .await;
    let (mut stale, unchecked) = match found {
        Ok(found) => found,
        Err(e) => return super::unavailable(&e),
    };
    stale.sort_by(|a, b| a.key.cmp(&b.key));
    let paging = Paging::of(stale.len(), STALE_PER_PAGE, asked_page);
    let link = |n: usize| format!("/envs/{env}/stale?days={days}&page={n}");
    let (previous, next) = (paging.previous().map(link), paging.next().map(link));
    let matching = stale.len();
    let flags: Vec<StaleRow> = paging.of_items(stale).collect();
    page(
        StatusCode::OK,
        &StalePage {
            who,
            environment: env,
            section: "stale",
            days,
            shown_from: paging.skip() + usize::from(!flags.is_empty()),
            shown_to: paging.skip() + flags.len(),
            flags,
            matching,
            previous,
            next,
            total,
            unchecked,
        },
    )
}

/// The stale flags among `facts` (each with its version), and how many were not checked.
/// Reads the last change of the flags whose staleness depends on it in one ask, and the
/// creation of the flags never evaluated in one pass over the history, newest first.
fn stale_flags<S: Store>(
    store: &S,
    environment: &str,
    snapshot: &Snapshot,
    mut facts: Vec<Facts>,
    days: u64,
    now_ms: u64,
) -> Result<(Vec<StaleRow>, usize), StoreError> {
    let flag = |f: &Facts| snapshot.flag(&f.key);
    let needs_change = |f: &Facts| {
        f.evaluated_ms == 0
            || flag(f).is_some_and(|flag| {
                flag.temporary && flagstaff_engine::single_variant(flag).is_some()
            })
    };
    let revisions: Vec<u64> = facts
        .iter()
        .filter(|f| needs_change(f))
        .map(|f| f.version)
        .collect();
    let changes: HashMap<u64, u64> = store
        .audit_heads(environment, &revisions)?
        .into_iter()
        .map(|head| (head.revision, head.time_ms))
        .collect();
    for f in &mut facts {
        f.changed_ms = changes.get(&f.version).copied().unwrap_or(0);
    }
    let never: HashSet<&str> = facts
        .iter()
        .filter(|f| f.evaluated_ms == 0)
        .map(|f| f.key.as_str())
        .collect();
    let found = creations(store, environment, never)?;

    let signed = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
    let window_start = now_ms.saturating_sub(days.saturating_mul(24 * 60 * 60 * 1000));
    let (mut rows, mut unchecked) = (Vec::new(), 0);
    for f in &facts {
        let Some(document) = flag(f) else {
            continue;
        };
        // A flag never evaluated counts from its creation, no later than its last change.
        let created_ms = match found.created.get(f.key.as_str()) {
            Some(&created) => created,
            None if f.evaluated_ms == 0 && !found.complete && f.changed_ms > window_start => {
                unchecked += 1;
                continue;
            }
            None => f.changed_ms,
        };
        let why = flagstaff_engine::staleness(
            document,
            signed(f.changed_ms),
            signed(f.evaluated_ms),
            signed(created_ms),
            days,
            signed(now_ms),
        );
        if let Some(why) = why {
            let (why, since) = match why {
                Staleness::OneVariant { variant, since_ms } => {
                    (format!("serves {variant} to everyone"), since_ms)
                }
                Staleness::NotEvaluated { since_ms, ever } => (
                    if ever {
                        "not evaluated"
                    } else {
                        "never evaluated"
                    }
                    .to_owned(),
                    since_ms,
                ),
            };
            rows.push(StaleRow {
                key: f.key.clone(),
                temporary: document.temporary,
                why,
                since: utc(u64::try_from(since).unwrap_or(0)),
            });
        }
    }
    Ok((rows, unchecked))
}

/// When flags were created, from the history.
struct Creations {
    /// Each flag's creation: the newest entry that created it, else the oldest entry kept
    /// that changed it (older ones having been trimmed).
    created: HashMap<String, u64>,
    /// Whether the whole history kept was read, so a flag not in `created` has no entry.
    complete: bool,
}

/// The creation of each of `keys`, reading the history newest first, at most
/// [`MAX_HISTORY_READ`] entries.
fn creations<S: Store>(
    store: &S,
    environment: &str,
    mut keys: HashSet<&str>,
) -> Result<Creations, StoreError> {
    let (mut created, mut oldest) = (HashMap::new(), HashMap::new());
    let (mut before, mut read) = (None, 0);
    while !keys.is_empty() && read < MAX_HISTORY_READ {
        let page = store.history(environment, None, before, HISTORY_PAGE)?;
        read += page.len();
        for entry in &page {
            for change in &entry.changes {
                let AuditChange::Flag { key, before, after } = change else {
                    continue;
                };
                if !keys.contains(key.as_str()) {
                    continue;
                }
                oldest.insert(key.clone(), entry.time_ms);
                if before.is_none() && after.is_some() {
                    keys.remove(key.as_str());
                    created.insert(key.clone(), entry.time_ms);
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == HISTORY_PAGE => before = Some(last.revision),
            _ => {
                // The history kept is read to its start: what was not created in it was
                // created before, and its oldest entry kept counts.
                for (key, time) in oldest {
                    created.entry(key).or_insert(time);
                }
                return Ok(Creations {
                    created,
                    complete: true,
                });
            }
        }
    }
    Ok(Creations {
        created,
        complete: keys.is_empty(),
    })
}
