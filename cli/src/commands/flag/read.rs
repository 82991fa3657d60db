//! `flag list` and `flag get`: the flags of an environment, and one flag's document.
//!
//! JSON fields of `flag list`: `key`, `kind`, `enabled`, `serves`, `rules` (how many),
//! `tags`, `temporary`, `client_side`, `version`, `last_change` and `usage`; of `flag get`:
//! `flag` (the document) and `last_change`.

use flagstaff_engine::{Flag, Format, Serve};
use flagstaff_proto::pb;
use serde_json::{json, Value};

use super::describe::{serve_summary, state};
use crate::fetch::{fetch_flag, list_flags, Listed};
use crate::output;
use crate::session::Session;

/// `flag list [--tag TAG] [--search TEXT]`: one row per flag, with its last change and usage.
pub async fn list(
    session: &mut Session,
    tag: Option<&str>,
    search: Option<&str>,
) -> anyhow::Result<String> {
    let flags = list_flags(session, tag, search).await?;
    let document = Value::Array(
        flags
            .iter()
            .map(
                |Listed {
                     flag,
                     change,
                     usage,
                 }| {
                    json!({
                        "key": flag.key,
                        "kind": flag.kind.as_str(),
                        "enabled": flag.enabled,
                        "serves": serve_json(&flag.default),
                        "rules": flag.rules.len(),
                        "tags": flag.tags,
                        "temporary": flag.temporary,
                        "client_side": flag.client_side,
                        "version": flag.version,
                        "last_change": last_change_json(change),
                        "usage": {
                            "evaluations": usage.evaluations,
                            "last_evaluated_unix_ms": usage.last_evaluated_unix_ms,
                        },
                    })
                },
            )
            .collect(),
    );
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    let rows: Vec<Vec<String>> = flags
        .iter()
        .map(
            |Listed {
                 flag,
                 change,
                 usage,
             }| {
                vec![
                    flag.key.clone(),
                    state(flag).to_owned(),
                    serve_summary(&flag.default),
                    flag.rules.len().to_string(),
                    if flag.client_side { "yes" } else { "no" }.to_owned(),
                    flag.version.map_or("-".to_owned(), |v| v.to_string()),
                    output::timestamp(change.time_unix_ms),
                    change.actor.clone(),
                    usage.evaluations.to_string(),
                    if usage.last_evaluated_unix_ms == 0 {
                        "never".to_owned()
                    } else {
                        output::timestamp(usage.last_evaluated_unix_ms)
                    },
                ]
            },
        )
        .collect();
    Ok(output::table(
        &[
            "FLAG",
            "STATE",
            "DEFAULT",
            "RULES",
            "CLIENT-SIDE",
            "VERSION",
            "CHANGED",
            "BY",
            "EVALUATIONS",
            "LAST EVALUATED",
        ],
        &rows,
    ))
}

/// `flag get KEY`: a headline, then the document as YAML (without its version).
pub async fn get(session: &mut Session, key: &str) -> anyhow::Result<String> {
    let (flag, change) = fetch_flag(session, key).await?;
    let document = json!({
        "flag": flag,
        "last_change": last_change_json(&change),
    });
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    let by = if change.comment.is_empty() {
        change.actor.clone()
    } else {
        format!("{}: {}", change.actor, change.comment)
    };
    Ok(format!(
        "# {} is {}, default {}, {} rule(s){}; version {}, changed {} by {by}\n{}{}",
        flag.key,
        state(&flag),
        serve_summary(&flag.default),
        flag.rules.len(),
        if flag.client_side {
            ", client-side (client tokens may evaluate it)"
        } else {
            ""
        },
        flag.version.unwrap_or(0),
        output::timestamp(change.time_unix_ms),
        targeting_comment(&flag),
        flagstaff_engine::to_text(
            &Flag {
                version: None,
                ..flag.clone()
            },
            Format::Yaml
        )
    ))
}

/// Who gets what, in words, as YAML comments: `#   1. if country is one of "DE", serve on
/// (rule eu)`, one line per step, after a line saying what happens when the flag is off.
fn targeting_comment(flag: &Flag) -> String {
    let mut text = if flag.enabled {
        "# who gets what:\n".to_owned()
    } else {
        format!(
            "# off: everyone gets {}; when turned on:\n",
            flag.off_variant
        )
    };
    for (n, step) in flagstaff_engine::targeting_steps(flag).iter().enumerate() {
        text.push_str(&format!("#   {}. {step}\n", n + 1));
    }
    text
}

fn serve_json(serve: &Serve) -> Value {
    serde_json::to_value(serve).unwrap_or(Value::Null)
}

fn last_change_json(change: &pb::ChangeInfo) -> Value {
    json!({
        "revision": change.revision,
        "time_unix_ms": change.time_unix_ms,
        "actor": change.actor,
        "comment": change.comment,
    })
}
