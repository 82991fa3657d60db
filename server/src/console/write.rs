//! The console's writes (DESIGN.md section 11): plain form POSTs, each checked for its
//! `Origin` and the session's CSRF token, run through the same operations as the Admin API
//! (validation, the version the page was built on, protected environments, audit with the
//! person as the actor), answered by a redirect to the page on success or by the page again
//! with what went wrong next to the form.
//!
//! - `POST /envs/{env}/flags/{key}/enabled`: turn a flag on or off.
//! - `POST /envs/{env}/flags/{key}/serve`: what a flag serves by default: a fixed variant or a
//!   percentage split.
//! - `POST /envs/{env}/flags/{key}/revert`: restore a version of the flag its history shows.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::flag::{render, WriteProblem};
use super::proxy::Proxied;
use super::Session;
use super::{encode, environment_for, forbidden_form, secured, session, signed_in, Console};
use crate::environments::{Committed, Environment, Environments, WriteContext};
use crate::error::ServerError;
use crate::storage::Store;

/// The on/off form of a flag's page.
#[derive(Debug, Deserialize)]
pub(super) struct EnabledForm {
    #[serde(default)]
    csrf: String,
    /// `true` to turn the flag on, `false` to turn it off.
    enabled: bool,
    /// The flag's version the page showed: the write is refused if it changed since.
    version: u64,
    #[serde(default)]
    comment: String,
    /// The environment's name, typed to confirm a write to a protected environment.
    #[serde(default)]
    confirm: String,
}

pub(super) async fn set_enabled<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path((env, key)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    form: Result<Form<EnabledForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (session, environment, form) =
        match checked(&console, &env, &uri, &headers, proxied, form, |f| &f.csrf).await {
            Ok(checked) => checked,
            Err(response) => return *response,
        };
    let change = Change {
        operation: "SetFlagEnabled",
        version: form.version,
        typed: HashMap::from([("comment".to_owned(), form.comment.clone())]),
        comment: form.comment,
        confirm: form.confirm,
    };
    let (written_key, enabled, version) = (key.clone(), form.enabled, form.version);
    run(
        &console,
        &session,
        &environment,
        &key,
        change,
        move |envs, ctx| envs.set_flag_enabled(ctx, &written_key, enabled, Some(version)),
    )
    .await
}

/// A form of a flag's history restoring the version `to_version`.
#[derive(Debug, Deserialize)]
pub(super) struct RevertForm {
    #[serde(default)]
    csrf: String,
    /// The flag's version now, as the page showed it.
    version: u64,
    /// The version to restore: the revision of the change that wrote it.
    to_version: u64,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    confirm: String,
}

pub(super) async fn revert<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path((env, key)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    form: Result<Form<RevertForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (session, environment, form) =
        match checked(&console, &env, &uri, &headers, proxied, form, |f| &f.csrf).await {
            Ok(checked) => checked,
            Err(response) => return *response,
        };
    let change = Change {
        operation: "RevertFlag",
        version: form.version,
        typed: HashMap::from([("comment".to_owned(), form.comment.clone())]),
        comment: form.comment,
        confirm: form.confirm,
    };
    let (written_key, to, version) = (key.clone(), form.to_version, form.version);
    run(
        &console,
        &session,
        &environment,
        &key,
        change,
        move |envs, ctx| envs.revert_flag(ctx, &written_key, to, Some(version)),
    )
    .await
}

/// The default-serve form of a flag's page, read by hand: its fields `weight:<variant>` name
/// the flag's variants.
pub(super) async fn set_serve<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path((env, key)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (session, environment, fields) =
        match checked(&console, &env, &uri, &headers, proxied, form, csrf_field).await {
            Ok(checked) => checked,
            Err(response) => return *response,
        };
    let field = |name: &str| fields.get(name).map_or("", String::as_str);
    let Some(flag) = environment.current().snapshot.flag(&key).cloned() else {
        return super::problem(
            StatusCode::NOT_FOUND,
            Some(super::Who::of(&session)),
            "No such flag",
            &format!("{env} has no flag {key:?}. It may have been deleted: see the history."),
        );
    };
    let serve = match serve_of(&flag, &fields) {
        Ok(serve) => serve,
        Err(why) => {
            return again(
                &console,
                &session,
                &environment,
                &key,
                WriteProblem {
                    status: StatusCode::BAD_REQUEST,
                    detail: why,
                    form: "serve",
                    typed: fields.clone(),
                },
            )
            .await
        }
    };
    let Ok(version) = field("version").parse::<u64>() else {
        return again(
            &console,
            &session,
            &environment,
            &key,
            WriteProblem {
                status: StatusCode::BAD_REQUEST,
                detail: "The form lacks the flag's version: reload the page. Nothing was done."
                    .to_owned(),
                form: "serve",
                typed: fields.clone(),
            },
        )
        .await;
    };
    let force = fields.contains_key("reshuffle");
    let change = Change {
        operation: "SetDefaultServe",
        typed: fields.clone(),
        version,
        comment: field("comment").to_owned(),
        confirm: field("confirm").to_owned(),
    };
    let written_key = key.clone();
    run(
        &console,
        &session,
        &environment,
        &key,
        change,
        move |envs, ctx| envs.set_default_serve(ctx, &written_key, serve, force, Some(version)),
    )
    .await
}

/// The `csrf` field of a form read by hand.
fn csrf_field(fields: &HashMap<String, String>) -> &str {
    fields.get("csrf").map_or("", String::as_str)
}

/// The serve the form describes: `mode` `variant` with the field `variant`, or `split` with
/// a percentage in `weight:<variant>` for each of the flag's variants (blank for 0) adding up
/// to 100, bucketed by `bucket_by` (the context key unless given).
fn serve_of(
    flag: &flagstaff_engine::Flag,
    fields: &HashMap<String, String>,
) -> Result<flagstaff_engine::Serve, String> {
    use flagstaff_engine::{Serve, Split, Weight};
    let field = |name: &str| fields.get(name).map_or("", |v| v.trim());
    let names: Vec<&str> = flag
        .variants
        .0
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    match field("mode") {
        "variant" => {
            let variant = field("variant");
            if !names.contains(&variant) {
                return Err(format!(
                    "Choose one of {}'s variants ({}). Nothing was done.",
                    flag.key,
                    names.join(", ")
                ));
            }
            Ok(Serve::Variant(variant.to_owned()))
        }
        "split" => {
            if let Some(unknown) = fields
                .keys()
                .filter_map(|k| k.strip_prefix("weight:"))
                .find(|v| !names.contains(v))
            {
                return Err(format!(
                    "{} has no variant {}. Nothing was done.",
                    flag.key,
                    flagstaff_engine::quote(unknown)
                ));
            }
            let mut weights = Vec::with_capacity(names.len());
            for name in &names {
                let text = field(&format!("weight:{name}"));
                let weight = if text.is_empty() {
                    0
                } else {
                    flagstaff_engine::parse_percent(text)
                        .map_err(|e| format!("{name}: {e}. Nothing was done."))?
                };
                weights.push(Weight {
                    variant: (*name).to_owned(),
                    weight,
                });
            }
            let total: u32 = weights.iter().map(|w| w.weight).sum();
            if total != 100_000 {
                return Err(format!(
                    "The shares add up to {}, not 100%. Nothing was done.",
                    flagstaff_engine::format_percent(total)
                ));
            }
            let bucket_by = match field("bucket_by") {
                "" => "key".to_owned(),
                by => by.to_owned(),
            };
            Ok(Serve::Split(Split { bucket_by, weights }))
        }
        _ => Err("Choose a fixed variant or a split. Nothing was done.".to_owned()),
    }
}

/// The checks every write passes before it is looked at: the request's `Origin`, its session,
/// the environment the person may see, the form read, and the form's CSRF token (`csrf`
/// reads it); the session, the environment and the form, or the answer refusing it.
async fn checked<S: Store, F>(
    console: &Console<S>,
    env: &str,
    uri: &Uri,
    headers: &HeaderMap,
    proxied: Option<Extension<Proxied>>,
    form: Result<Form<F>, axum::extract::rejection::FormRejection>,
    csrf: fn(&F) -> &str,
) -> Result<(Session, Arc<Environment>, F), Box<Response>> {
    if !session::same_origin(headers, &console.origins(headers, uri)) {
        return Err(Box::new(super::forbidden_origin()));
    }
    let session = signed_in(console, headers, proxied).await?;
    let environment = environment_for(console, &session, env)?;
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => {
            return Err(Box::new(super::problem(
                StatusCode::BAD_REQUEST,
                Some(super::Who::of(&session)),
                "Not this console's form",
                &format!("The form sent is not the one this page makes: {e}. Nothing was done."),
            )))
        }
    };
    if !session::same_token(&session.record.csrf, csrf(&form)) {
        return Err(Box::new(forbidden_form(&session)));
    }
    Ok((session, environment, form))
}

/// What a write from a page is, besides its own fields.
struct Change {
    /// The Admin rpc it is, for the audit log (`SetFlagEnabled`, `SetDefaultServe`).
    operation: &'static str,
    /// The document's version the page showed.
    version: u64,
    comment: String,
    /// The environment's name as typed, for a protected environment.
    confirm: String,
    /// Every field typed in the form, put back into it when the write is refused.
    typed: HashMap<String, String>,
}

/// The flag page of `key` again, with what went wrong next to the form that failed.
async fn again<S: Store>(
    console: &Console<S>,
    session: &Session,
    environment: &Environment,
    key: &str,
    problem: WriteProblem,
) -> Response {
    render(console, session, environment, key, None, Some(problem)).await
}

/// Checks `change` (its comment, a protected environment's name typed) and runs `write` as
/// the person on a blocking thread; answers with the flag's page or what went wrong on it.
async fn run<S: Store>(
    console: &Console<S>,
    session: &Session,
    environment: &Environment,
    key: &str,
    change: Change,
    write: impl FnOnce(&Environments<S>, WriteContext<'_>) -> Result<Committed, ServerError>
        + Send
        + 'static,
) -> Response {
    let env = environment.key.clone();
    let form = match change.operation {
        "SetFlagEnabled" => "enabled",
        "RevertFlag" => "revert",
        _ => "serve",
    };
    let typed = change.typed.clone();
    let failed = |status, detail| {
        again(
            console,
            session,
            environment,
            key,
            WriteProblem {
                status,
                detail,
                form,
                typed: typed.clone(),
            },
        )
    };
    if let Err(e) = crate::service::wire::comment(&change.comment) {
        return failed(StatusCode::BAD_REQUEST, format!("{e}. Nothing was done.")).await;
    }
    if environment.protected && change.confirm != env {
        return failed(
            StatusCode::BAD_REQUEST,
            format!("{env} is protected: type its name, {env}, to confirm. Nothing was done."),
        )
        .await;
    }
    let envs = console.envs.clone();
    let (actor, written_env, comment, confirmed) = (
        session.actor(),
        env.clone(),
        change.comment.clone(),
        environment.protected,
    );
    let operation = change.operation;
    let written = super::off_thread(move || {
        write(
            &envs,
            WriteContext {
                environment: &written_env,
                actor: &actor,
                operation,
                comment: &comment,
                confirmed,
                duty: false,
            },
        )
    })
    .await;
    match written {
        Ok(committed) => {
            tracing::info!(
                person = %session.record.person,
                environment = %env,
                flag = %key,
                operation,
                revision = committed.revision,
                "a flag was changed from the console"
            );
            secured(Redirect::to(&format!("/envs/{env}/flags/{}", encode(key))).into_response())
        }
        Err(ServerError::VersionConflict(_)) => {
            failed(
                StatusCode::CONFLICT,
                format!(
                    "Someone changed {key} since this page was made (you saw version {}): its \
                     history below shows what changed. Nothing was done; look, then try again.",
                    change.version
                ),
            )
            .await
        }
        Err(ServerError::NotFound(why)) => super::problem(
            StatusCode::NOT_FOUND,
            Some(super::Who::of(session)),
            "No such flag",
            &format!("{why}. It may have been deleted: see the history."),
        ),
        Err(
            e @ (ServerError::Invalid(_)
            | ServerError::Validation(_)
            | ServerError::Precondition(_)
            | ServerError::PermissionDenied(_)),
        ) => failed(StatusCode::BAD_REQUEST, format!("{e}. Nothing was done.")).await,
        Err(e) => super::unavailable(&e),
    }
}
