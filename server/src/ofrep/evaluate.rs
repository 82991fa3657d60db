//! The two evaluation endpoints: one flag, and every flag the token sees (the bulk endpoint,
//! with its ETag). Evaluation is the engine's, on the snapshot the Watch stream serves, so an
//! OFREP result equals the SDK's for the same context and revision.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use flagstaff_engine::{Flag, OpenFeatureOutcome, Snapshot};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::context::{json_type, RequestContext};
use super::error::OfrepError;
use super::stream::EventStream;
use super::{Caller, Ofrep, MAX_BODY_BYTES};
use crate::auth::Visibility;
use crate::environments::{Current, Environment};
use crate::storage::Store;

/// How long a bulk request naming a revision this server has not reached waits for it.
const REVISION_WAIT: Duration = Duration::from_secs(2);

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub(super) async fn single<S: Store>(
    State(ofrep): State<Arc<Ofrep<S>>>,
    Path(key): Path<String>,
    request: Request,
) -> Response {
    match evaluate_one(&ofrep, &key, request).await {
        Ok(response) => response,
        Err(e) => e.for_flag(&key).into_response(),
    }
}

async fn evaluate_one<S: Store>(
    ofrep: &Ofrep<S>,
    key: &str,
    request: Request,
) -> Result<Response, OfrepError> {
    let (parts, body) = request.into_parts();
    let caller = ofrep.caller(&parts)?;
    let env = ofrep.envs.get(&caller.environment)?;
    let body = read_body(body).await?;
    let ctx = RequestContext::read(context_of(&body)?).map_err(OfrepError::invalid_context)?;
    let current = env.current();
    let flag = visible_flag(&current.snapshot, key, caller.visibility)
        .ok_or_else(|| OfrepError::flag_not_found(key))?;
    let evaluated = evaluate(&current, flag, &ctx)?;
    ofrep.tally.count(&env.key, [key]);
    Ok(json(StatusCode::OK, &evaluated))
}

/// The query of a bulk request: what an SSE event told the provider (ADR 0008).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkQuery {
    flag_config_etag: Option<String>,
}

/// `POST /ofrep/v1/evaluate/flags`.
pub(super) async fn bulk<S: Store>(
    State(ofrep): State<Arc<Ofrep<S>>>,
    request: Request,
) -> Response {
    match evaluate_all(&ofrep, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn evaluate_all<S: Store>(
    ofrep: &Ofrep<S>,
    request: Request,
) -> Result<Response, OfrepError> {
    let (parts, body) = request.into_parts();
    let caller = ofrep.caller(&parts)?;
    let env = ofrep.envs.get(&caller.environment)?;
    let query = Query::<BulkQuery>::try_from_uri(&parts.uri)
        .map_err(|e| OfrepError::parse(format!("the query string: {}", e.body_text())))?;
    let body = read_body(body).await?;
    let ctx = RequestContext::read(context_of(&body)?).map_err(OfrepError::invalid_context)?;
    if let Some(named) = query.flag_config_etag.as_deref() {
        reach(&env, named).await?;
    }
    let current = env.current();
    let etag = etag(&env, &current, &caller, &ctx);
    let mut flags: Vec<&Flag> = current
        .snapshot
        .flags()
        .filter(|f| visible(f, caller.visibility))
        .collect();
    flags.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    ofrep
        .tally
        .count(&env.key, flags.iter().map(|f| f.key.as_str()));
    if if_none_match(&parts.headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, etag);
        return Ok(response);
    }
    let evaluated = flags
        .into_iter()
        .map(|flag| evaluate(&current, flag, &ctx))
        .collect::<Result<Vec<_>, _>>()?;
    let event_streams = ofrep
        .event_stream_for(&caller, &env, &current)
        .into_iter()
        .collect();
    let mut response = json(
        StatusCode::OK,
        &Bulk {
            flags: evaluated,
            event_streams,
            metadata: BulkMetadata {
                revision: current.revision,
            },
        },
    );
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

/// Waits (at most [`REVISION_WAIT`]) until this server has the revision that
/// `flagConfigEtag` names, `<epoch>.<revision>` as the event stream sends it, so a provider
/// never caches an older state after an event. Another epoch, or text that is no such tag,
/// asks for nothing.
async fn reach(env: &Environment, named: &str) -> Result<(), OfrepError> {
    let Some((epoch, revision)) = named.trim_matches('"').rsplit_once('.') else {
        return Ok(());
    };
    let Ok(revision) = revision.parse::<u64>() else {
        return Ok(());
    };
    if epoch != env.epoch || env.current().revision >= revision {
        return Ok(());
    }
    let mut head = env.feed().subscribe();
    let reached = tokio::time::timeout(
        REVISION_WAIT,
        head.wait_for(|h| h.revision >= revision || h.closed),
    )
    .await;
    match reached {
        Ok(Ok(_)) if env.current().revision >= revision => Ok(()),
        _ => Err(OfrepError::unavailable(
            format!("this server has not reached revision {revision} yet"),
            1,
        )),
    }
}

/// The body, at most [`MAX_BODY_BYTES`], as JSON.
async fn read_body(body: Body) -> Result<Value, OfrepError> {
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(OfrepError::too_large(MAX_BODY_BYTES))
        }
        Err(e) => return Err(OfrepError::parse(format!("reading the body failed: {e}"))),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| OfrepError::parse(format!("the request body is not JSON: {e}")))
}

/// The `context` member of a request body.
fn context_of(body: &Value) -> Result<&Value, OfrepError> {
    let Value::Object(members) = body else {
        return Err(OfrepError::parse(format!(
            "the request body must be a JSON object with a \"context\", not {}",
            json_type(body)
        )));
    };
    members.get("context").ok_or_else(|| {
        OfrepError::parse("the request body must have a \"context\" object: {\"context\": {…}}")
    })
}

/// Whether a token of `visibility` sees `flag`.
fn visible(flag: &Flag, visibility: Visibility) -> bool {
    match visibility {
        Visibility::All => true,
        Visibility::ClientSide => flag.client_side,
    }
}

/// Flag `key`, if the token sees it.
fn visible_flag<'a>(snapshot: &'a Snapshot, key: &str, visibility: Visibility) -> Option<&'a Flag> {
    snapshot.flag(key).filter(|f| visible(f, visibility))
}

/// One flag's result, as OFREP's `evaluationSuccess`.
#[derive(Debug, Serialize)]
struct Evaluated<'a> {
    key: &'a str,
    value: Value,
    variant: &'a str,
    reason: &'static str,
    metadata: Metadata<'a>,
}

/// The flag metadata of a result: its version and the revision evaluated, and what explains
/// the reason.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    flag_version: u64,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prerequisite: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
}

/// The bulk endpoint's body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Bulk<'a> {
    flags: Vec<Evaluated<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    event_streams: Vec<EventStream>,
    metadata: BulkMetadata,
}

#[derive(Debug, Serialize)]
struct BulkMetadata {
    revision: u64,
}

fn evaluate<'a>(
    current: &'a Current,
    flag: &'a Flag,
    ctx: &RequestContext<'_>,
) -> Result<Evaluated<'a>, OfrepError> {
    let detail = current.snapshot.evaluate(&flag.key, &ctx.context);
    let outcome = OpenFeatureOutcome::of(&detail);
    let Some(variant) = detail.variant else {
        // The flag exists and was just evaluated with its own kind: no caller's default.
        return Err(crate::error::ServerError::Invalid(format!(
            "flag {:?} served no variant ({})",
            flag.key, detail.reason
        ))
        .into());
    };
    Ok(Evaluated {
        key: &flag.key,
        value: detail.value,
        variant,
        reason: outcome.reason.as_str(),
        metadata: Metadata {
            flag_version: detail.version.unwrap_or_default(),
            revision: current.revision,
            rule_id: outcome.rule_id,
            bucket: outcome.bucket,
            prerequisite: outcome.prerequisite,
            error_code: outcome.error.map(|e| e.as_str()),
        },
    })
}

/// The bulk result's strong ETag: a digest of the environment's epoch and revision, what the
/// token sees and the canonical context, so it changes exactly when the answer may.
fn etag(
    env: &Environment,
    current: &Current,
    caller: &Caller,
    ctx: &RequestContext<'_>,
) -> HeaderValue {
    let mut hasher = Sha256::new();
    hasher.update(env.epoch.as_bytes());
    hasher.update([0]);
    hasher.update(current.revision.to_le_bytes());
    hasher.update([match caller.visibility {
        Visibility::All => 0,
        Visibility::ClientSide => 1,
    }]);
    hasher.update(ctx.digest());
    let digest = hasher.finalize();
    let hex = crate::auth::hex(&digest[..16]);
    HeaderValue::try_from(format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether `If-None-Match` names `etag` (or is `*`). The comparison is weak, as RFC 9110
/// says for `If-None-Match`: `W/"x"` matches `"x"`.
fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag)
}

/// A JSON response.
fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => OfrepError::from(crate::error::ServerError::Invalid(format!(
            "encoding the answer failed: {e}"
        )))
        .into_response(),
    }
}
