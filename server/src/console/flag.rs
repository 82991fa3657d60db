//! `/envs/{env}/flags/{key}`: one flag in its reading form: state, variants, prerequisites,
//! rules in plain words, what it serves otherwise and when off, its usage and rollout, an
//! evaluation for a context given in the address, and its recent history with diffs.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use flagstaff_engine::{Flag, Reason, Serve, Step};
use serde::Deserialize;
use serde_json::Value;

use super::history::{newest, EntryRow, Restore};
use super::proxy::Proxied;
use super::{blocking, environment_page, page, problem, utc, Console, Session, Who};
use crate::environments::Environment;
use crate::ofrep::context::RequestContext;
use crate::storage::{RolloutState, Store};

/// History entries shown on a flag's page; older ones are on the history page.
pub const HISTORY_SHOWN: usize = 10;

/// The most bytes of context JSON the evaluate form takes, as an OFREP request body would.
pub const MAX_CONTEXT_JSON_BYTES: usize = 64 * 1024;

/// What the flag page is asked for: a context to evaluate the flag with.
#[derive(Debug, Default, Deserialize)]
pub(super) struct FlagQuery {
    #[serde(default)]
    context: Option<String>,
}

/// A variant as the page lists it.
struct VariantRow {
    name: String,
    value: String,
    /// What the flag uses the variant for: `served when off`, `default`.
    roles: String,
}

/// The answer to the evaluate form.
struct Evaluation {
    variant: String,
    value: String,
    why: String,
}

#[derive(Template)]
#[template(path = "console/flag.html")]
struct FlagPage<'a> {
    who: Option<Who>,
    environment: String,
    section: &'static str,
    flag: &'a Flag,
    kind: &'static str,
    version: u64,
    changed: String,
    variants: Vec<VariantRow>,
    /// Who gets what when the flag is on, in words (as `flagstaff flag get` says it).
    steps: Vec<Step<'a>>,
    evaluations: u64,
    last_evaluated: String,
    rollout: Option<String>,
    context: String,
    evaluation: Option<Evaluation>,
    context_problem: Option<String>,
    history: Vec<EntryRow>,
    older: Option<String>,
    /// Why the last write from the page failed, and the form that sent it.
    write_problem: Option<String>,
    write_form: &'static str,
    /// The default serve as the serve form starts: the fixed variant (empty for a split),
    /// each variant's share of a split as a percentage (empty for none), and the split's
    /// bucketing attribute.
    serve_variant: String,
    serve_shares: Vec<(String, String)>,
    bucket_by: String,
    /// `variant` or `split`: which the serve form starts with.
    serve_mode: String,
    /// The comment typed in the form that failed.
    typed_comment: String,
    /// Whether a write must be confirmed by typing the environment's name.
    protected: bool,
    /// The session's CSRF token, for the page's forms.
    csrf: String,
    /// The forms restoring an earlier version, in the history.
    restore: Option<Restore>,
}

pub(super) async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    query: Result<Query<FlagQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (session, environment) = match environment_page(&console, &headers, proxied, &env).await {
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
                "Not a flag address",
                &format!("The address's query is not one this page reads: {e}."),
            )
        }
    };
    render(
        &console,
        &session,
        &environment,
        &key,
        query.context.as_deref(),
        None,
    )
    .await
}

/// What went wrong with a write from the flag page, shown next to its form: the answer's
/// status and the words.
pub(super) struct WriteProblem {
    pub status: StatusCode,
    pub detail: String,
    /// The form that sent it: `enabled`, `serve` or `revert`.
    pub form: &'static str,
    /// What the person typed in it, put back into the form so that nothing is lost.
    pub typed: HashMap<String, String>,
}

/// The flag page of `key` in `environment`: evaluated for `context` when given, with
/// `written`, when a write from it failed, shown next to the form that sent it.
pub(super) async fn render<S: Store>(
    console: &Console<S>,
    session: &Session,
    environment: &Environment,
    key: &str,
    context: Option<&str>,
    written: Option<WriteProblem>,
) -> Response {
    let who = Some(Who::of(session));
    let (env, key) = (environment.key.clone(), key.to_owned());
    let current = environment.current();
    let Some(flag) = current.snapshot.flag(&key).cloned() else {
        return problem(
            StatusCode::NOT_FOUND,
            who,
            "No such flag",
            &format!("{env} has no flag {key:?}. It may have been deleted: see the history."),
        );
    };
    let store = console.envs.store().clone();
    let (version, looked_up) = (flag.version.unwrap_or(0), env.clone());
    let (flag_key, history_env) = (key.clone(), env.clone());
    let found = blocking(move || {
        let head = store.audit_head(&looked_up, version)?;
        let (entries, older) = newest(&*store, &history_env, Some(&flag_key), None, HISTORY_SHOWN)?;
        Ok((head, entries, older))
    })
    .await;
    let (head, entries, older) = match found {
        Ok(found) => found,
        Err(e) => return super::unavailable(&e),
    };
    let older = older.map(|last| {
        format!(
            "/envs/{env}/history?flag={}&before={last}",
            super::encode(&key)
        )
    });
    let (context, evaluation, context_problem) = match context {
        Some(text) if !text.trim().is_empty() => match evaluate(&current.snapshot, &flag, text) {
            Ok(evaluation) => (text.to_owned(), Some(evaluation), None),
            Err(why) => (text.to_owned(), None, Some(why)),
        },
        _ => ("{\"targetingKey\": \"user-1\"}".to_owned(), None, None),
    };
    let usage = environment.usage(&key).unwrap_or_default();
    // A context that cannot be read is a bad request, shown in place on the page; so is a
    // write that failed.
    let status = match (&written, &context_problem) {
        (Some(problem), _) => problem.status,
        (None, Some(_)) => StatusCode::BAD_REQUEST,
        (None, None) => StatusCode::OK,
    };
    let typed = written.as_ref().map(|w| (w.form, &w.typed));
    let typed_field = |form: &str, name: &str| {
        typed
            .filter(|(f, _)| *f == form)
            .and_then(|(_, fields)| fields.get(name).cloned())
    };
    let typed_comment = typed
        .and_then(|(_, fields)| fields.get("comment").cloned())
        .unwrap_or_default();
    let (mut serve_variant, mut serve_shares, mut bucket_by, mut serve_mode) = serve_form(&flag);
    if let Some(mode) = typed_field("serve", "mode") {
        serve_mode = mode;
        serve_variant = typed_field("serve", "variant").unwrap_or(serve_variant);
        for (name, share) in &mut serve_shares {
            *share = typed_field("serve", &format!("weight:{name}")).unwrap_or_default();
        }
        bucket_by = typed_field("serve", "bucket_by").unwrap_or(bucket_by);
    }
    page(
        status,
        &FlagPage {
            who,
            environment: env.clone(),
            section: "flags",
            kind: flag.kind.as_str(),
            version,
            changed: head.map_or_else(String::new, |h| {
                let mut changed = format!("{} by {}", utc(h.time_ms), h.actor);
                if !h.comment.is_empty() {
                    changed.push_str(&format!(": {}", h.comment));
                }
                changed
            }),
            variants: variants(&flag),
            steps: flagstaff_engine::targeting_steps(&flag),
            evaluations: usage.evaluations,
            last_evaluated: if usage.last_evaluated_ms == 0 {
                "never".to_owned()
            } else {
                utc(usage.last_evaluated_ms)
            },
            rollout: rollout_state(environment, &key),
            context,
            evaluation,
            context_problem,
            history: entries,
            write_form: written.as_ref().map_or("", |w| w.form),
            write_problem: written.map(|w| w.detail),
            serve_variant,
            serve_shares,
            bucket_by,
            serve_mode,
            typed_comment,
            protected: environment.protected,
            csrf: session.record.csrf.clone(),
            restore: Some(Restore {
                csrf: session.record.csrf.clone(),
                key: key.clone(),
                version,
                protected: environment.protected,
            }),
            older,
            flag: &flag,
        },
    )
}

/// The flag's variants, each with what the flag uses it for.
fn variants(flag: &Flag) -> Vec<VariantRow> {
    flag.variants
        .0
        .iter()
        .map(|(name, value)| {
            let mut roles = Vec::new();
            if *name == flag.off_variant {
                roles.push("served when off");
            }
            if matches!(&flag.default, flagstaff_engine::Serve::Variant(v) if v == name) {
                roles.push("default");
            }
            VariantRow {
                name: name.clone(),
                value: value.to_string(),
                roles: roles.join(", "),
            }
        })
        .collect()
}

/// The serve form as `flag` starts it: the fixed variant (empty for a split), each variant's
/// share of a split as a percentage (empty for none), the split's bucketing attribute, and the
/// mode (`variant` or `split`).
fn serve_form(flag: &Flag) -> (String, Vec<(String, String)>, String, String) {
    let shares =
        flag.variants
            .0
            .iter()
            .map(|(name, _)| {
                let share = match &flag.default {
                    Serve::Split(split) => split
                        .weights
                        .iter()
                        .find(|w| w.variant == *name)
                        .map_or(String::new(), |w| {
                            flagstaff_engine::format_percent(w.weight)
                                .trim_end_matches('%')
                                .to_owned()
                        }),
                    Serve::Variant(_) => String::new(),
                };
                (name.clone(), share)
            })
            .collect();
    match &flag.default {
        Serve::Variant(v) => (v.clone(), shares, "key".to_owned(), "variant".to_owned()),
        Serve::Split(split) => (
            String::new(),
            shares,
            split.bucket_by.clone(),
            "split".to_owned(),
        ),
    }
}

/// The state of the flag's rollout plan, when it has one.
fn rollout_state(environment: &Environment, key: &str) -> Option<String> {
    let plan = environment.rollout(key)?;
    let percent = flagstaff_engine::format_percent(plan.percent);
    Some(match plan.state {
        RolloutState::Running => format!("{} at {percent}, running", plan.target),
        RolloutState::Paused => format!("{} at {percent}, paused", plan.target),
        RolloutState::Completed => format!("{} rolled out in full", plan.target),
        RolloutState::RolledBack => format!("{} rolled back to {}", plan.target, plan.baseline),
    })
}

/// What `flag` serves for the context written as `text` (OFREP's JSON context), or why the
/// context cannot be read.
fn evaluate(
    snapshot: &flagstaff_engine::Snapshot,
    flag: &Flag,
    text: &str,
) -> Result<Evaluation, String> {
    if text.len() > MAX_CONTEXT_JSON_BYTES {
        return Err(format!(
            "The context is {} bytes, over the limit of {} KiB.",
            text.len(),
            MAX_CONTEXT_JSON_BYTES >> 10
        ));
    }
    let json: Value =
        serde_json::from_str(text).map_err(|e| format!("The context is not JSON: {e}."))?;
    let context = RequestContext::read(&json).map_err(|e| format!("{e}."))?;
    let detail = snapshot.evaluate(&flag.key, &context.context);
    let why = match detail.reason {
        Reason::Off => "the flag is off, so it serves its off variant".to_owned(),
        Reason::RuleMatch { index, id } => format!("rule {} ({id}) matched", index + 1),
        Reason::Default => "no rule matched, so it serves its default".to_owned(),
        Reason::PrerequisiteFailed { prerequisite } => format!(
            "its prerequisite {prerequisite} did not serve a variant it needs, so it serves \
             its off variant"
        ),
        Reason::Error(e) => format!("evaluation failed: {}", e.as_str()),
    };
    let why = match detail.bucket {
        Some(bucket) => {
            format!("{why}; the context fell in bucket {bucket} of 100,000 of its split")
        }
        None => why,
    };
    Ok(Evaluation {
        variant: detail.variant.unwrap_or("-").to_owned(),
        value: detail.value.to_string(),
        why,
    })
}
