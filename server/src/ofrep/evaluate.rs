//! The two evaluation endpoints: one flag, and every flag the token sees (the bulk endpoint,
//! with its ETag). Evaluation is the engine's, on the snapshot the Watch stream serves, so an
//! OFREP result equals the SDK's for the same context and revision.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use flagstaff_engine::{Flag, OpenFeatureOutcome, Snapshot};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::context::RequestContext;
use super::error::OfrepError;
use super::stream::{ticket_window, EventStream};
use super::{Caller, Ofrep, MAX_BODY_BYTES};
use crate::auth::Visibility;
use crate::environments::{Current, Environment};
use crate::storage::Store;

/// How long a bulk request naming a revision this server has not reached waits for it.
const REVISION_WAIT: Duration = Duration::from_secs(2);

/// How long a request's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The most JSON values a request body may hold: a context's attributes and the elements of
/// their lists. It bounds what parsing a request builds, and the work evaluating against a
/// list does, whatever the body's size.
pub(super) const MAX_REQUEST_VALUES: usize = 10_000;

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
    let caller = ofrep.caller(&parts).await?;
    let env = ofrep.envs.get(&caller.environment)?;
    let context = read_context(body).await?;
    let ctx = RequestContext::read(&context).map_err(OfrepError::invalid_context)?;
    let current = env.current();
    let flag = visible_flag(&current.snapshot, key, caller.visibility)
        .ok_or_else(|| OfrepError::flag_not_found(key))?;
    let evaluated = evaluate(&current, flag, &ctx, caller.visibility)?;
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
    let caller = ofrep.caller(&parts).await?;
    let env = ofrep.envs.get(&caller.environment)?;
    let query = Query::<BulkQuery>::try_from_uri(&parts.uri)
        .map_err(|e| OfrepError::parse(format!("the query string: {}", e.body_text())))?;
    // Waiting for a revision first, so that no body is held while waiting.
    if let Some(named) = query.flag_config_etag.as_deref() {
        reach(&env, named).await?;
    }
    let context = read_context(body).await?;
    let ctx = RequestContext::read(&context).map_err(OfrepError::invalid_context)?;
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
        .map(|flag| evaluate(&current, flag, &ctx, caller.visibility))
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

/// A request body: only `context` is kept; other members are skipped as they are read.
#[derive(Debug, Deserialize)]
struct RequestBody {
    context: Option<Value>,
}

/// The `context` of the request body: the body at most [`MAX_BODY_BYTES`], arriving within
/// [`BODY_TIMEOUT`], holding at most [`MAX_REQUEST_VALUES`] JSON values.
async fn read_context(body: Body) -> Result<Value, OfrepError> {
    let collected =
        tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect())
            .await
            .map_err(|_| OfrepError::timeout(BODY_TIMEOUT))?;
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(OfrepError::too_large(MAX_BODY_BYTES))
        }
        Err(e) => return Err(OfrepError::parse(format!("reading the body failed: {e}"))),
    };
    // Counted before parsing, so that no request builds a tree of millions of values.
    if json_values(&bytes) > MAX_REQUEST_VALUES {
        return Err(OfrepError::invalid_context(format!(
            "the request holds more than {MAX_REQUEST_VALUES} JSON values (attributes and the \
             elements of their lists)"
        )));
    }
    // (serde would also read a struct from an array.)
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(OfrepError::parse(
            "the request body must be a JSON object with a \"context\" object",
        ));
    }
    let body: RequestBody = serde_json::from_slice(&bytes).map_err(|e| {
        if e.to_string().starts_with("recursion limit exceeded") {
            OfrepError::invalid_context(format!(
                "the context nests objects deeper than {} levels",
                super::context::MAX_DEPTH
            ))
        } else if e.is_data() {
            OfrepError::parse("the request body must be a JSON object with a \"context\" object")
        } else {
            OfrepError::parse(format!("the request body is not JSON: {e}"))
        }
    })?;
    body.context.ok_or_else(|| {
        OfrepError::parse("the request body must have a \"context\" object: {\"context\": {…}}")
    })
}

/// An upper bound of the JSON values in `bytes`: one more than the commas and opening
/// brackets outside strings.
fn json_values(bytes: &[u8]) -> usize {
    let (mut count, mut in_string, mut escaped) = (1, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b'[' | b'{' => count += 1,
                _ => {}
            }
        }
    }
    count
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

/// Flag `flag` evaluated for `ctx` on `current`, as a token of `visibility` may see it: a
/// failed prerequisite that is not itself visible is not named.
fn evaluate<'a>(
    current: &'a Current,
    flag: &'a Flag,
    ctx: &RequestContext<'_>,
    visibility: Visibility,
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
            prerequisite: outcome.prerequisite.filter(|key| {
                current
                    .snapshot
                    .flag(key)
                    .is_some_and(|f| visible(f, visibility))
            }),
            error_code: outcome.error.map(|e| e.as_str()),
        },
    })
}

/// The bulk result's strong ETag: a digest of the environment's epoch and revision, what the
/// token sees, the canonical context, and the token and window of the event-stream ticket, so
/// it changes exactly when the answer may.
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
    // The advertised event-stream URL is the token's, and changes with the ticket's window.
    hasher.update(caller.token_id.as_bytes());
    hasher.update([0]);
    hasher.update(ticket_window(SystemTime::now()).to_le_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_arrives_times_out() {
        let never = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let error = read_context(Body::from_stream(never))
            .await
            .expect_err("times out");
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[test]
    fn values_are_counted_outside_strings_only() {
        assert_eq!(json_values(br#"{"a": 1}"#), 2);
        assert_eq!(json_values(br#"{"a": [1, 2, 3], "b": "x,y[{"}"#), 6);
        assert_eq!(json_values(br#"{"a": "\",["}"#), 2);
    }
}
