//! The console's writes (DESIGN.md section 11): plain form POSTs, each checked for its
//! `Origin` and the session's CSRF token, run through the same operations as the Admin API
//! (validation, the version the page was built on, protected environments, audit with the
//! person as the actor), answered by a redirect to the page on success or by the page again
//! with what went wrong next to the form.
//!
//! - `POST /envs/{env}/flags/{key}/enabled`: turn a flag on or off.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::flag::{render, WriteProblem};
use super::proxy::Proxied;
use super::{encode, environment_for, forbidden_form, secured, session, signed_in, Console};
use crate::environments::WriteContext;
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
    if !session::same_origin(&headers, &console.origins(&headers, &uri)) {
        return super::forbidden_origin();
    }
    let session = match signed_in(&console, &headers, proxied).await {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let environment = match environment_for(&console, &session, &env) {
        Ok(environment) => environment,
        Err(response) => return *response,
    };
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => {
            return super::problem(
                StatusCode::BAD_REQUEST,
                Some(super::Who::of(&session)),
                "Not this console's form",
                &format!("The form sent is not the one this page makes: {e}. Nothing was done."),
            )
        }
    };
    if !session::same_token(&session.record.csrf, &form.csrf) {
        return forbidden_form(&session);
    }
    let again = |status: StatusCode, detail: String| {
        let (console, session, environment, key) = (&console, &session, &environment, &key);
        async move {
            render(
                console,
                session,
                environment,
                key,
                None,
                Some(WriteProblem { status, detail }),
            )
            .await
        }
    };
    if let Err(e) = crate::service::wire::comment(&form.comment) {
        return again(StatusCode::BAD_REQUEST, format!("{e}. Nothing was done.")).await;
    }
    if environment.protected && form.confirm != env {
        return again(
            StatusCode::BAD_REQUEST,
            format!("{env} is protected: type its name, {env}, to confirm. Nothing was done."),
        )
        .await;
    }
    let envs = console.envs.clone();
    let (actor, written_env, written_key) = (session.actor(), env.clone(), key.clone());
    let (enabled, version, comment, confirmed) = (
        form.enabled,
        form.version,
        form.comment.clone(),
        environment.protected,
    );
    let written = super::off_thread(move || {
        envs.set_flag_enabled(
            WriteContext {
                environment: &written_env,
                actor: &actor,
                operation: "SetFlagEnabled",
                comment: &comment,
                confirmed,
                duty: false,
            },
            &written_key,
            enabled,
            Some(version),
        )
    })
    .await;
    match written {
        Ok(committed) => {
            tracing::info!(
                person = %session.record.person,
                environment = %env,
                flag = %key,
                enabled,
                revision = committed.revision,
                "a flag was switched from the console"
            );
            secured(Redirect::to(&format!("/envs/{env}/flags/{}", encode(&key))).into_response())
        }
        Err(ServerError::VersionConflict(_)) => {
            again(
                StatusCode::CONFLICT,
                format!(
                    "Someone changed {key} since this page was made (you saw version {version}): \
                     its history below shows what changed. Nothing was done; look, then try \
                     again."
                ),
            )
            .await
        }
        Err(ServerError::NotFound(why)) => super::problem(
            StatusCode::NOT_FOUND,
            Some(super::Who::of(&session)),
            "No such flag",
            &format!("{why}. It may have been deleted: see the history."),
        ),
        Err(
            e @ (ServerError::Invalid(_)
            | ServerError::Validation(_)
            | ServerError::Precondition(_)
            | ServerError::PermissionDenied(_)),
        ) => again(StatusCode::BAD_REQUEST, format!("{e}. Nothing was done.")).await,
        Err(e) => super::unavailable(&e),
    }
}
