//! `flagstaff eval`: which variant a context gets, and why.

use anyhow::{anyhow, bail, Context as _};
use flagstaff_engine::{AttrValue, Context, Snapshot};
use serde_json::{json, Value};

use crate::args::{EvalArgs, Output};
use crate::output;

pub fn run(args: &EvalArgs, out: Output) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let snapshot = Snapshot::from_text(&text).map_err(|e| {
        anyhow!(
            "{} is not a valid export document:\n{e}",
            args.file.display()
        )
    })?;
    let ctx = context(args)?;
    let keys: Vec<String> = match &args.flag {
        Some(key) if snapshot.flag(key).is_none() => {
            bail!("no flag {key:?} in {}", args.file.display())
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
    let document = if args.all {
        Value::Array(results.clone())
    } else {
        results[0].clone()
    };
    if let Some(text) = output::structured(&document, out) {
        return Ok(text);
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .zip(&results)
        .map(|(key, r)| {
            vec![
                key.clone(),
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
