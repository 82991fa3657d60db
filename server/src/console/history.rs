//! `/envs/{env}/history`: the environment's audit log, newest first, each change with what it
//! did in words and, for flags, a diff of the document; `?flag=KEY` narrows it to one flag.
//! A flag's page shows its last entries the same way ([`entry_rows`]).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use flagstaff_engine::{Flag, Format};
use serde::Deserialize;
use serde_json::Value;

use super::proxy::Proxied;
use super::{blocking, encode, environment_page, page, problem, utc, Console, Who};
use crate::storage::{AuditChange, AuditEntry, Store};

/// Entries on one page of the history.
pub const ENTRIES_PER_PAGE: usize = 25;

/// Changes of one entry shown with their diffs; an import of thousands of flags is one entry,
/// and the rest are counted.
pub const CHANGES_SHOWN: usize = 20;

/// Lines of one diff shown; a longer diff ends with a line counting the rest.
pub const DIFF_LINES_SHOWN: usize = 400;

/// The time one diff takes at most before it settles for a coarser answer.
const DIFF_TIME: std::time::Duration = std::time::Duration::from_millis(100);

/// Lines of diffs one page shows together, so that a page of imports stays light.
pub const DIFF_LINES_PER_PAGE: usize = 1_000;

/// What the history page is asked for.
#[derive(Debug, Default, Deserialize)]
pub(super) struct HistoryQuery {
    /// Only entries changing this flag.
    #[serde(default)]
    flag: Option<String>,
    /// Only entries below this revision: the next page.
    #[serde(default)]
    before: Option<u64>,
}

/// One line of a diff, with its class: `add`, `remove`, `context` or `hunk`.
pub(super) struct DiffLine {
    pub class: &'static str,
    pub text: String,
}

/// One document's change, as an entry lists it.
pub(super) struct ChangeRow {
    /// `flag` or `segment`.
    pub kind: &'static str,
    pub key: String,
    /// `created`, `updated` or `deleted`.
    pub action: &'static str,
    /// Where the document is shown, while it exists.
    pub link: Option<String>,
    /// What the change did, in words.
    pub details: String,
    /// The flag's document before and after, as a unified diff of its YAML.
    pub diff: Vec<DiffLine>,
    /// Whether the diff was left out, the page's diffs being long enough already.
    pub diff_left_out: bool,
    /// Where the diff left out is shown: the history from its entry on.
    pub diff_at: Option<String>,
    /// The version of the flag this change wrote, which it can be restored to; `None` for a
    /// segment or a deletion.
    pub wrote: Option<u64>,
}

/// What the forms restoring a flag's earlier versions need: the session's CSRF token, the
/// flag's version now, and whether its environment asks for its name.
pub(super) struct Restore {
    pub csrf: String,
    pub key: String,
    pub version: u64,
    pub protected: bool,
}

/// An audit entry as pages list it.
pub(super) struct EntryRow {
    pub revision: u64,
    pub time: String,
    pub actor: String,
    pub operation: String,
    pub comment: String,
    pub changes: Vec<ChangeRow>,
    /// Changes of the entry not listed.
    pub more: usize,
}

#[derive(Template)]
#[template(path = "console/history.html")]
struct HistoryPage {
    who: Option<Who>,
    /// The forms restoring a version are on a flag's page alone: none here.
    restore: Option<Restore>,
    environment: String,
    section: &'static str,
    flag: Option<String>,
    entries: Vec<EntryRow>,
    older: Option<String>,
}

pub(super) async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (session, _environment) = match environment_page(&console, &headers, proxied, &env).await {
        Ok(opened) => opened,
        Err(response) => return *response,
    };
    let who = Some(Who::of(&session));
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                who,
                "Not a history address",
                &format!(
                    "The address's query is not one this page reads (flag=KEY, \
                     before=REVISION): {e}."
                ),
            )
        }
    };
    let flag = query.flag.filter(|f| !f.is_empty());
    if let Some(key) = &flag {
        if !flagstaff_engine::is_valid_key(key) {
            return problem(
                StatusCode::BAD_REQUEST,
                who,
                "Not a flag key",
                &format!("{key:?} is not a flag key, so no flag's history is under it."),
            );
        }
    }
    let store = console.envs.store().clone();
    let (looked_up, flag_key, before) = (env.clone(), flag.clone(), query.before);
    let found = blocking(move || {
        newest(
            &*store,
            &looked_up,
            flag_key.as_deref(),
            before,
            ENTRIES_PER_PAGE,
        )
    })
    .await;
    let (entries, older) = match found {
        Ok(found) => found,
        Err(e) => return super::unavailable(&e),
    };
    let older = older.map(|last| match &flag {
        Some(key) => format!("/envs/{env}/history?flag={}&before={last}", encode(key)),
        None => format!("/envs/{env}/history?before={last}"),
    });
    page(
        StatusCode::OK,
        &HistoryPage {
            who,
            restore: None,
            section: "history",
            entries,
            environment: env,
            flag,
            older,
        },
    )
}

/// The newest `n` entries of the history (of flag `only`'s changes, when given) below
/// revision `before`, as pages list them, and the revision older entries are below, when
/// there are more. Reads and diffs: run it on a blocking thread.
pub(super) fn newest<S: Store>(
    store: &S,
    environment: &str,
    only: Option<&str>,
    before: Option<u64>,
    n: usize,
) -> Result<(Vec<EntryRow>, Option<u64>), crate::storage::StoreError> {
    let mut entries = store.history(environment, only, before, n.saturating_add(1))?;
    let older = (entries.len() > n).then(|| {
        entries.truncate(n);
        entries.last().map_or(0, |e| e.revision)
    });
    Ok((entry_rows(environment, &entries, only), older))
}

/// `entries` as pages list them: of flag `only`'s changes alone when given. Diffs take at
/// most [`DIFF_LINES_PER_PAGE`] lines together; a change past them links to the history
/// starting at its entry instead.
fn entry_rows(environment: &str, entries: &[AuditEntry], only: Option<&str>) -> Vec<EntryRow> {
    let mut budget = DIFF_LINES_PER_PAGE;
    entries
        .iter()
        .map(|entry| {
            let changes: Vec<&AuditChange> = entry
                .changes
                .iter()
                .filter(|c| only.is_none_or(|key| c.is_flag(key)))
                .collect();
            let mut rows: Vec<ChangeRow> = changes
                .iter()
                .take(CHANGES_SHOWN)
                .map(|c| change_row(environment, c, &mut budget))
                .collect();
            for row in &mut rows {
                // The history of that flag from this entry on, where its diff comes first.
                if row.diff_left_out {
                    row.diff_at = Some(format!(
                        "/envs/{environment}/history?before={}&flag={}",
                        entry.revision.saturating_add(1),
                        encode(&row.key)
                    ));
                }
            }
            EntryRow {
                revision: entry.revision,
                time: utc(entry.time_ms),
                actor: entry.actor.clone(),
                operation: entry.operation.clone(),
                comment: entry.comment.clone(),
                more: changes.len().saturating_sub(CHANGES_SHOWN),
                changes: rows,
            }
        })
        .collect()
}

fn action(before: bool, after: bool) -> &'static str {
    match (before, after) {
        (false, _) => "created",
        (true, true) => "updated",
        (true, false) => "deleted",
    }
}

fn change_row(environment: &str, change: &AuditChange, budget: &mut usize) -> ChangeRow {
    // Spent before this change: its diff is left out.
    let budget_was_spent = *budget == 0;
    match change {
        AuditChange::Flag { key, before, after } => ChangeRow {
            kind: "flag",
            key: key.clone(),
            action: action(before.is_some(), after.is_some()),
            link: after
                .as_ref()
                .map(|_| format!("/envs/{environment}/flags/{}", encode(key))),
            details: match (before, after) {
                (Some(before), Some(after)) => {
                    flagstaff_engine::flag_change_details(before, after).join(", ")
                }
                _ => String::new(),
            },
            diff: if *budget > 0 {
                let diff = flag_diff(before.as_deref(), after.as_deref());
                *budget = budget.saturating_sub(diff.len());
                diff
            } else {
                Vec::new()
            },
            diff_left_out: budget_was_spent,
            diff_at: None,
            wrote: after.as_ref().and_then(|a| a.version),
        },
        AuditChange::Segment {
            key,
            before,
            after,
            included_added,
            included_removed,
            excluded_added,
            excluded_removed,
            ..
        } => {
            let mut details: Vec<String> = [
                (included_added.len(), "+", "included"),
                (included_removed.len(), "-", "included"),
                (excluded_added.len(), "+", "excluded"),
                (excluded_removed.len(), "-", "excluded"),
            ]
            .into_iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, sign, list)| format!("{sign}{n} {list}"))
            .collect();
            if let (Some(before), Some(after)) = (before, after) {
                let fields: Vec<&str> = [
                    ("description", before.description != after.description),
                    ("rules", before.rules != after.rules),
                ]
                .into_iter()
                .filter_map(|(name, differs)| differs.then_some(name))
                .collect();
                if !fields.is_empty() {
                    details.push(format!("changed {}", fields.join(", ")));
                }
            }
            ChangeRow {
                kind: "segment",
                key: key.clone(),
                action: action(before.is_some(), after.is_some()),
                link: after
                    .as_ref()
                    .map(|_| format!("/envs/{environment}/segments")),
                details: details.join(", "),
                diff: Vec::new(),
                diff_left_out: false,
                diff_at: None,
                wrote: None,
            }
        }
    }
}

/// What a diff compares of a flag: its document as YAML without its version (which every
/// change moves); of a flag changed (not created or deleted), only the fields that changed, so
/// that turning a flag of 50 rules on diffs one line, not a thousand.
fn flag_texts(before: Option<&Flag>, after: Option<&Flag>) -> (String, String) {
    let document = |flag: Option<&Flag>| {
        let mut value = flag.map_or(Value::Null, |f| serde_json::to_value(f).unwrap_or_default());
        if let Value::Object(fields) = &mut value {
            fields.remove("version");
        }
        value
    };
    let (mut before, mut after) = (document(before), document(after));
    if let (Value::Object(was), Value::Object(is)) = (&mut before, &mut after) {
        let same: Vec<String> = was
            .iter()
            .filter(|(name, value)| is.get(*name) == Some(value))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &same {
            was.remove(name);
            is.remove(name);
        }
    }
    let text = |value: &Value| match value {
        Value::Null => String::new(),
        value => flagstaff_engine::to_text(value, Format::Yaml),
    };
    (text(&before), text(&after))
}

/// The unified diff of a flag's document from `before` to `after`, at most
/// [`DIFF_LINES_SHOWN`] lines.
fn flag_diff(before: Option<&Flag>, after: Option<&Flag>) -> Vec<DiffLine> {
    let (before, after) = flag_texts(before, after);
    // A diff of two long lists that differ everywhere costs quadratic time: past its time
    // the diff is coarser (whole blocks removed and added), never slower.
    let diff = similar::TextDiff::configure()
        .timeout(DIFF_TIME)
        .diff_lines(&before, &after);
    let mut lines = Vec::new();
    let mut total = 0;
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        total += 1;
        if lines.len() < DIFF_LINES_SHOWN {
            lines.push(DiffLine {
                class: "hunk",
                text: hunk.header().to_string(),
            });
        }
        for change in hunk.iter_changes() {
            total += 1;
            if lines.len() >= DIFF_LINES_SHOWN {
                continue;
            }
            let (class, sign) = match change.tag() {
                similar::ChangeTag::Insert => ("add", '+'),
                similar::ChangeTag::Delete => ("remove", '-'),
                similar::ChangeTag::Equal => ("context", ' '),
            };
            lines.push(DiffLine {
                class,
                text: format!("{sign}{}", change.value().trim_end_matches('\n')),
            });
        }
    }
    if total > lines.len() {
        lines.push(DiffLine {
            class: "hunk",
            text: format!("… {} more lines", total - lines.len()),
        });
    }
    lines
}
