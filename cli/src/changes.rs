//! How a change to flags and segments is described, wherever the CLI reports one (`history`,
//! `watch`, `import`, `segment apply`): as text for people and as JSON.
//!
//! JSON fields of a history entry ([`entry_json`]): `revision`, `time` (as tables show it),
//! `time_unix_ms`, `actor`, `operation` and `comment` (null for none) and `changes`, each
//! change ([`change_json`]) being `{type: flag|segment, key, action: created|updated|deleted,
//! version_before, version_after, details: [text]}`, plus for segments `included_count`,
//! `excluded_count` (after the change) and `keys: {add_included, remove_included,
//! add_excluded, remove_excluded}`.

use flagstaff_proto::pb;
use serde_json::{json, Value};

use crate::output;

/// How many changes an entry's row names before it only counts them.
const CHANGES_SHOWN: usize = 3;

/// An audit entry's JSON form (see the module's documentation).
pub fn entry_json(entry: &pb::AuditEntry) -> Value {
    json!({
        "revision": entry.revision,
        "time": output::timestamp(entry.time_unix_ms),
        "time_unix_ms": entry.time_unix_ms,
        "actor": entry.actor,
        "operation": (!entry.operation.is_empty()).then_some(&entry.operation),
        "comment": (!entry.comment.is_empty()).then_some(&entry.comment),
        "changes": entry.changes.iter().map(change_json).collect::<Vec<_>>(),
    })
}

/// One document's change as JSON (see the module's documentation).
pub fn change_json(change: &pb::Change) -> Value {
    match &change.document {
        Some(pb::change::Document::Flag(f)) => json!({
            "type": "flag",
            "key": f.key,
            "action": action(f.before.is_some(), f.after.is_some()),
            "version_before": f.before.as_ref().and_then(|b| b.version),
            "version_after": f.after.as_ref().and_then(|a| a.version),
            "details": flag_details(f),
        }),
        Some(pb::change::Document::Segment(s)) => {
            let keys = s.keys.clone().unwrap_or_default();
            let after = s.after.as_ref();
            json!({
                "type": "segment",
                "key": s.key,
                "action": action(s.before.is_some(), s.after.is_some()),
                "version_before": s.before.as_ref().and_then(|b| b.segment.as_ref()).and_then(|b| b.version),
                "version_after": after.and_then(|a| a.segment.as_ref()).and_then(|a| a.version),
                "details": segment_details(s),
                "included_count": after.map_or(0, |a| a.included_count),
                "excluded_count": after.map_or(0, |a| a.excluded_count),
                "keys": {
                    "add_included": keys.add_included,
                    "remove_included": keys.remove_included,
                    "add_excluded": keys.add_excluded,
                    "remove_excluded": keys.remove_excluded,
                },
            })
        }
        None => json!({"type": "unknown"}),
    }
}

fn action(before: bool, after: bool) -> &'static str {
    match (before, after) {
        (false, _) => "created",
        (true, true) => "updated",
        (true, false) => "deleted",
    }
}

/// One document's change as text: `+ flag checkout-v2 created`, `~ segment beta updated: +2
/// included`, `- flag banner deleted`.
pub fn change_line(change: &pb::Change) -> String {
    let (kind, key, before, after, details) = match &change.document {
        Some(pb::change::Document::Flag(f)) => (
            "flag",
            &f.key,
            f.before.is_some(),
            f.after.is_some(),
            flag_details(f),
        ),
        Some(pb::change::Document::Segment(s)) => (
            "segment",
            &s.key,
            s.before.is_some(),
            s.after.is_some(),
            segment_details(s),
        ),
        None => return "? an unknown document changed".to_owned(),
    };
    let sign = match action(before, after) {
        "created" => '+',
        "deleted" => '-',
        _ => '~',
    };
    let mut line = format!("{sign} {kind} {key} {}", action(before, after));
    if !details.is_empty() {
        line.push_str(": ");
        line.push_str(&details.join(", "));
    }
    line
}

/// An entry's changes in a table cell: each one for a few, else counts.
pub fn changes_summary(changes: &[pb::Change]) -> String {
    if changes.len() <= CHANGES_SHOWN {
        return changes
            .iter()
            .map(|c| change_line(c)[2..].to_owned())
            .collect::<Vec<_>>()
            .join("; ");
    }
    let count = |kind: &str| {
        changes
            .iter()
            .filter(|c| {
                matches!(
                    (&c.document, kind),
                    (Some(pb::change::Document::Flag(_)), "flag")
                        | (Some(pb::change::Document::Segment(_)), "segment")
                )
            })
            .count()
    };
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {} changed",
        plural(count("flag"), "flag"),
        plural(count("segment"), "segment")
    )
}

/// What changed in a flag, for people: `turned on`, `default serve on 25% / off 75%`,
/// `changed rules, tags` (as the web console says it too).
fn flag_details(change: &pb::FlagChange) -> Vec<String> {
    let (Some(before), Some(after)) = (&change.before, &change.after) else {
        return Vec::new();
    };
    match (
        flagstaff_engine::Flag::try_from(before.clone()),
        flagstaff_engine::Flag::try_from(after.clone()),
    ) {
        (Ok(before), Ok(after)) => flagstaff_engine::flag_change_details(&before, &after),
        _ => vec!["changed (a version this CLI cannot read)".to_owned()],
    }
}

/// What changed in a segment: `+2 included`, `-1 excluded`, `changed rules`.
fn segment_details(change: &pb::SegmentChange) -> Vec<String> {
    let mut details = Vec::new();
    if let Some(keys) = &change.keys {
        for (n, what) in [
            (keys.add_included.len(), "+{} included"),
            (keys.remove_included.len(), "-{} included"),
            (keys.add_excluded.len(), "+{} excluded"),
            (keys.remove_excluded.len(), "-{} excluded"),
        ] {
            if n > 0 {
                details.push(what.replace("{}", &n.to_string()));
            }
        }
    }
    let before = change.before.as_ref().and_then(|b| b.segment.as_ref());
    let after = change.after.as_ref().and_then(|a| a.segment.as_ref());
    if let (Some(before), Some(after)) = (before, after) {
        let mut fields = Vec::new();
        if before.description != after.description {
            fields.push("description");
        }
        if before.rules != after.rules {
            fields.push("rules");
        }
        if !fields.is_empty() {
            details.push(format!("changed {}", fields.join(", ")));
        }
    }
    details
}
