//! `flag apply -f FILE` and `flag diff -f FILE`: flags and segments (or an export document)
//! from a file, written as one revision or only compared, each change shown as a unified diff
//! of the documents' YAML.
//!
//! JSON fields: `changed`, `revision`, `changes` (`{flag|segment: KEY, action:
//! create|update|delete}`), `unchanged_flags` and `unchanged_segments`.

use anyhow::{anyhow, Context as _};
use flagstaff_engine::{Flag, Format, Input};
use flagstaff_proto::pb;
use serde_json::{json, Value};

use crate::output;
use crate::session::Session;

/// `flag apply -f FILE` (or with `dry_run`, `flag diff -f FILE`).
pub async fn apply(
    session: &mut Session,
    file: &std::path::Path,
    message: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<String> {
    let environment = session.env()?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let source = match flagstaff_engine::parse_input(&text)
        .map_err(|e| anyhow!("{} is not valid:\n{e}", file.display()))?
    {
        Input::Document(document) => {
            pb::apply_request::Source::Document(pb::Document::from(&document))
        }
        Input::Flag(flag) => pb::apply_request::Source::Documents(pb::DocumentSet {
            flags: vec![pb::Flag::from(&flag)],
            ..Default::default()
        }),
        Input::Segment(segment) => pb::apply_request::Source::Documents(pb::DocumentSet {
            segments: vec![pb::Segment::from(&segment)],
            ..Default::default()
        }),
    };
    let comment = message.unwrap_or_default().to_owned();
    let request = |confirm_protected: bool| pb::ApplyRequest {
        environment: environment.clone(),
        source: Some(source.clone()),
        dry_run,
        comment: comment.clone(),
        confirm_protected,
        ..Default::default()
    };
    let response = if dry_run {
        session
            .admin
            .apply(request(false))
            .await
            .map_err(|s| session.error(s))?
            .into_inner()
    } else {
        session
            .write("Apply the file", |mut admin, confirm| {
                let request = request(confirm);
                async move { admin.apply(request).await }
            })
            .await?
    };
    let document = json!({
        "changed": response.changed,
        "revision": response.revision,
        "changes": response.changes.iter().map(change_summary).collect::<Vec<_>>(),
        "unchanged_flags": response.unchanged_flags,
        "unchanged_segments": response.unchanged_segments,
    });
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    if !response.changed {
        return Ok(format!(
            "no changes: {environment} already matches {}\n",
            file.display()
        ));
    }
    let mut out = String::new();
    for change in &response.changes {
        out.push_str(&diff(change));
    }
    if dry_run {
        out.push_str(&format!(
            "{} document(s) would change; nothing was written\n",
            response.changes.len()
        ));
    } else {
        out.push_str(&format!(
            "applied {} change(s) to {environment} (revision {})\n",
            response.changes.len(),
            response.revision
        ));
    }
    Ok(out)
}

fn change_summary(change: &pb::Change) -> Value {
    match &change.document {
        Some(pb::change::Document::Flag(f)) => json!({
            "flag": f.key,
            "action": action(f.before.is_some(), f.after.is_some()),
        }),
        Some(pb::change::Document::Segment(s)) => json!({
            "segment": s.key,
            "action": action(s.before.is_some(), s.after.is_some()),
        }),
        None => Value::Null,
    }
}

fn action(before: bool, after: bool) -> &'static str {
    match (before, after) {
        (false, _) => "create",
        (_, false) => "delete",
        _ => "update",
    }
}

/// A change as a unified diff of the documents' YAML, versions left out.
fn diff(change: &pb::Change) -> String {
    let yaml_flag = |f: &Option<pb::Flag>| -> String {
        f.clone()
            .and_then(|f| Flag::try_from(f).ok())
            .map(|f| flagstaff_engine::to_text(&Flag { version: None, ..f }, Format::Yaml))
            .unwrap_or_default()
    };
    let yaml_segment = |s: &Option<pb::SegmentSummary>| -> String {
        s.as_ref()
            .and_then(|s| s.segment.clone())
            .and_then(|s| flagstaff_engine::Segment::try_from(s).ok())
            .map(|s| {
                flagstaff_engine::to_text(
                    &flagstaff_engine::Segment { version: None, ..s },
                    Format::Yaml,
                )
            })
            .unwrap_or_default()
    };
    let (what, key, before, after) = match &change.document {
        Some(pb::change::Document::Flag(f)) => {
            ("flag", &f.key, yaml_flag(&f.before), yaml_flag(&f.after))
        }
        Some(pb::change::Document::Segment(s)) => (
            "segment",
            &s.key,
            yaml_segment(&s.before),
            yaml_segment(&s.after),
        ),
        None => return String::new(),
    };
    let label = |exists: bool| {
        if exists {
            format!("{what} {key}")
        } else {
            "/dev/null".to_owned()
        }
    };
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header(&label(!before.is_empty()), &label(!after.is_empty()))
        .to_string()
}
