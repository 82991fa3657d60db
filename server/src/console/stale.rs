//! `/envs/{env}/stale`: the flags ready to be removed from code, as `flagstaff flag stale`
//! finds them ([`flagstaff_engine::staleness`]): temporary flags serving one variant to
//! everyone, and flags no SDK has evaluated, for `?days=N` days (30 unless asked).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use flagstaff_engine::{Flag, Staleness};
use serde::Deserialize;

use super::{blocking, page, problem, signed_in, utc, Console, Who};
use crate::storage::{AuditChange, Store, StoreError};

/// Days without change or evaluation that make a flag stale, unless the address says.
pub const DEFAULT_DAYS: u64 = 30;

/// The most days the page is asked about: ten years.
pub const MAX_DAYS: u64 = 3650;

/// Flags whose creation the page looks up in the history at most, per view (only flags never
/// evaluated need it). Beyond it, those changed within the window are counted as not checked.
pub const MAX_CREATION_LOOKUPS: usize = 200;

/// History entries read per flag to find its creation; past them its oldest entry read counts.
const CREATION_ENTRIES: usize = 500;

/// What the stale page is asked for.
#[derive(Debug, Default, Deserialize)]
pub(super) struct StaleQuery {
    #[serde(default)]
    days: Option<u64>,
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
    flags: Vec<StaleRow>,
    total: usize,
    /// Flags never evaluated whose creation was not looked up (past the lookups' limit).
    unchecked: usize,
}

/// What the page needs to know of one flag from the store and the usage reports.
struct Facts {
    flag: Flag,
    changed_ms: u64,
    evaluated_ms: u64,
}

pub(super) async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    query: Result<Query<StaleQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let session = match signed_in(&console, &headers).await {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let who = Some(Who::of(&session));
    let environment = match super::environment_for(&console, &session, &env) {
        Ok(environment) => environment,
        Err(response) => return *response,
    };
    let days = match query {
        Ok(Query(StaleQuery { days: None })) => DEFAULT_DAYS,
        Ok(Query(StaleQuery { days: Some(days) })) if days <= MAX_DAYS => days,
        Ok(Query(StaleQuery { days: Some(days) })) => {
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
                &format!("The address's query is not one this page reads (days=N): {e}."),
            )
        }
    };
    let current = environment.current();
    let facts: Vec<(Facts, u64)> = current
        .snapshot
        .flags()
        .map(|flag| {
            let usage = environment.usage(&flag.key).unwrap_or_default();
            let version = flag.version.unwrap_or(0);
            (
                Facts {
                    flag: flag.clone(),
                    changed_ms: 0,
                    evaluated_ms: usage.last_evaluated_ms,
                },
                version,
            )
        })
        .collect();
    let total = facts.len();
    let now_ms = crate::storage::now_ms();
    let store = console.envs.store().clone();
    let looked_up = env.clone();
    let found = blocking(move || stale_flags(&*store, &looked_up, facts, days, now_ms)).await;
    let (mut stale, unchecked) = match found {
        Ok(found) => found,
        Err(e) => return super::unavailable(&e),
    };
    stale.sort_by(|a, b| a.key.cmp(&b.key));
    page(
        StatusCode::OK,
        &StalePage {
            who,
            environment: env,
            section: "stale",
            days,
            flags: stale,
            total,
            unchecked,
        },
    )
}

/// The stale flags among `facts` (each with its version), and how many were not checked.
/// Reads a flag's last change only when its staleness depends on it, and its creation only
/// for a flag never evaluated that changed within the window.
fn stale_flags<S: Store>(
    store: &S,
    environment: &str,
    facts: Vec<(Facts, u64)>,
    days: u64,
    now_ms: u64,
) -> Result<(Vec<StaleRow>, usize), StoreError> {
    let signed = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
    let window_start = now_ms.saturating_sub(days.saturating_mul(24 * 60 * 60 * 1000));
    let (mut rows, mut lookups, mut unchecked) = (Vec::new(), 0, 0);
    for (mut facts, version) in facts {
        let needs_change = (facts.flag.temporary
            && flagstaff_engine::single_variant(&facts.flag).is_some())
            || facts.evaluated_ms == 0;
        if needs_change {
            facts.changed_ms = store
                .audit_head(environment, version)?
                .map_or(0, |head| head.time_ms);
        }
        // A flag never evaluated counts from its creation, no later than its last change:
        // past the lookups' limit, a flag last changed before the window is stale all the
        // same (shown since that change), and one changed within it is not checked.
        let mut created_ms = facts.changed_ms;
        if facts.evaluated_ms == 0 {
            if lookups < MAX_CREATION_LOOKUPS {
                lookups += 1;
                created_ms = created(store, environment, &facts.flag.key)?.unwrap_or(created_ms);
            } else if facts.changed_ms > window_start {
                unchecked += 1;
                continue;
            }
        }
        let why = flagstaff_engine::staleness(
            &facts.flag,
            signed(facts.changed_ms),
            signed(facts.evaluated_ms),
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
                key: facts.flag.key.clone(),
                temporary: facts.flag.temporary,
                why,
                since: utc(u64::try_from(since).unwrap_or(0)),
            });
        }
    }
    Ok((rows, unchecked))
}

/// When flag `key` was created: the newest entry that created it among its last
/// [`CREATION_ENTRIES`], else the oldest of those; `None` without history.
fn created<S: Store>(store: &S, environment: &str, key: &str) -> Result<Option<u64>, StoreError> {
    let entries = store.history(environment, Some(key), None, CREATION_ENTRIES)?;
    let creation = entries.iter().find(|entry| {
        entry.changes.iter().any(|change| {
            matches!(change, AuditChange::Flag { key: k, before: None, after: Some(_) } if k == key)
        })
    });
    Ok(creation.or(entries.last()).map(|entry| entry.time_ms))
}
