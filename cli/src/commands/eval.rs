//! `flagstaff eval`: which variant a context gets, and why.

use anyhow::{anyhow, bail, Context as _};
use flagstaff_engine::{AttrValue, Context, Snapshot};
use serde_json::{json, Value};

use flagstaff_proto::pb;

use crate::args::{EvalArgs, Output};
use crate::output;
use crate::session::Session;

/// `eval --file`: against an export document, with no server.
pub fn offline(args: &EvalArgs, out: Output) -> anyhow::Result<String> {
    let Some(file) = &args.file else {
        bail!("no export file");
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let snapshot = Snapshot::from_text(&text)
        .map_err(|e| anyhow!("{} is not a valid export document:\n{e}", file.display()))?;
    let ctx = context(args)?;
    let keys: Vec<String> = match &args.flag {
        Some(key) if snapshot.flag(key).is_none() => {
            bail!("no flag {key:?} in {}", file.display())
        }
        Some(key) => vec![key.clone()],
        None => {
            let mut keys: Vec<String> = snapshot.flags().map(|f| f.key.clone()).collect();
            keys.sort();
            keys
        }
    };
    let results: Vec<Value> = keys
        .iter()
        .map(|key| evaluate(&snapshot, key, &ctx))
        .collect();
    render(&results, args.all, out)
}

/// `eval` against the server's current data (Admin.Evaluate).
pub async fn online(session: &mut Session, args: &EvalArgs) -> anyhow::Result<String> {
    let ctx = context(args)?;
    let environment = session.env()?;
    let response = session
        .admin
        .evaluate(pb::EvaluateRequest {
            environment,
            flag: args.flag.clone().unwrap_or_default(),
            context: Some(pb::Context::from(&ctx)),
        })
        .await
        .map_err(|s| session.error(s))?
        .into_inner();
    let results: Vec<Value> = response.evaluations.iter().map(evaluation).collect();
    render(&results, args.all, session.output)
}

/// Results as a table, or JSON/YAML: one object, or a list with --all.
fn render(results: &[Value], all: bool, out: Output) -> anyhow::Result<String> {
    let Some(first) = results.first() else {
        return Ok(String::new());
    };
    let document = if all {
        Value::Array(results.to_vec())
    } else {
        first.clone()
    };
    if let Some(text) = output::structured(&document, out) {
        return Ok(text);
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r["flag"].as_str().unwrap_or_default().to_owned(),
                r["value"].to_string(),
                r["variant"].as_str().unwrap_or("-").to_owned(),
                r["reason_text"].as_str().unwrap_or_default().to_owned(),
                r.get("bucket").map_or("-".to_owned(), Value::to_string),
            ]
        })
        .collect();
    Ok(output::table(
        &["FLAG", "VALUE", "VARIANT", "REASON", "BUCKET"],
        &rows,
    ))
}

/// A server evaluation in the shape of a local one.
fn evaluation(e: &pb::Evaluation) -> Value {
    let reason = e.reason.clone().unwrap_or_default();
    let kind = match pb::ReasonKind::try_from(reason.kind) {
        Ok(pb::ReasonKind::Off) => "OFF",
        Ok(pb::ReasonKind::RuleMatch) => "RULE_MATCH",
        Ok(pb::ReasonKind::Default) => "DEFAULT",
        Ok(pb::ReasonKind::PrerequisiteFailed) => "PREREQUISITE_FAILED",
        Ok(pb::ReasonKind::Error) => "ERROR",
        _ => "UNKNOWN",
    };
    let error = match pb::ErrorKind::try_from(reason.error_kind) {
        Ok(pb::ErrorKind::FlagNotFound) => "FLAG_NOT_FOUND",
        Ok(pb::ErrorKind::TypeMismatch) => "TYPE_MISMATCH",
        Ok(pb::ErrorKind::MissingBucketingAttribute) => "MISSING_BUCKETING_ATTRIBUTE",
        Ok(pb::ErrorKind::ClientNotReady) => "CLIENT_NOT_READY",
        _ => "UNKNOWN",
    };
    let (reason_json, reason_text) = match kind {
        "RULE_MATCH" => (
            json!({"kind": kind, "rule_index": reason.rule_index, "rule_id": reason.rule_id}),
            format!("RULE_MATCH({}, {})", reason.rule_index, reason.rule_id),
        ),
        "PREREQUISITE_FAILED" => (
            json!({"kind": kind, "prerequisite": reason.prerequisite}),
            format!("PREREQUISITE_FAILED({})", reason.prerequisite),
        ),
        "ERROR" => (
            json!({"kind": kind, "error": error}),
            format!("ERROR({error})"),
        ),
        _ => (json!({"kind": kind}), kind.to_owned()),
    };
    let mut result = json!({
        "flag": e.flag,
        "value": serde_json::from_str::<Value>(&e.value_json).unwrap_or(Value::Null),
        "variant": (!e.variant.is_empty()).then_some(&e.variant),
        "reason": reason_json,
        "reason_text": reason_text,
    });
    if let Some(bucket) = e.bucket {
        result["bucket"] = json!(bucket);
    }
    result
}

fn evaluate(snapshot: &Snapshot, key: &str, ctx: &Context<'_>) -> Value {
    let detail = snapshot.evaluate(key, ctx);
    let mut result = json!({
        "flag": key,
        "value": detail.value,
        "variant": detail.variant,
        "reason": detail.reason,
        "reason_text": detail.reason.to_string(),
    });
    if let Some(bucket) = detail.bucket {
        result["bucket"] = json!(bucket);
    }
    result
}

/// The context from --context-json, then --key and each --attr on top.
fn context(args: &EvalArgs) -> anyhow::Result<Context<'static>> {
    let mut ctx = match &args.context_json {
        Some(text) => {
            let value: Value =
                serde_json::from_str(text).context("--context-json is not valid JSON")?;
            let parsed = Context::from_json(&value).map_err(|e| anyhow!("--context-json: {e}"))?;
            parsed.into_owned()
        }
        None => Context::new(""),
    };
    if let Some(key) = &args.key {
        ctx.set_key(key.clone());
    }
    for attr in &args.attrs {
        let (name, raw) = attr
            .split_once('=')
            .ok_or_else(|| anyhow!("--attr {attr:?} must look like NAME=VALUE"))?;
        if name.is_empty() {
            bail!("--attr {attr:?} has no attribute name before '='");
        }
        ctx.set(
            name.to_owned(),
            attr_value(raw).with_context(|| format!("--attr {name}"))?,
        );
    }
    Ok(ctx)
}

/// A number, true/false, a JSON list or a JSON string literal as such; anything else as a plain
/// string.
fn attr_value(raw: &str) -> anyhow::Result<AttrValue> {
    match serde_json::from_str::<Value>(raw) {
        Ok(value @ (Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::String(_))) => {
            AttrValue::from_json(&value)
                .map_err(|e| anyhow!(e))?
                .ok_or_else(|| anyhow!("null is not a value"))
        }
        _ => Ok(AttrValue::String(raw.to_owned())),
    }
}
