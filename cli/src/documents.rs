//! Flag, segment and export documents: read from a JSON or YAML file, applied through the
//! server (the dry run first), and what an Apply changed, document by document.
//!
//! The JSON fields of an Apply's report ([`apply_report`], for `import` and `segment apply`)
//! are `dry_run`, `changed`, `revision`, `changes` (as [`crate::changes`] describes them),
//! `unchanged_flags`, `unchanged_segments`, `changes_abridged` and `paused_rollouts`.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use flagstaff_engine::Input;
use flagstaff_proto::pb;
use serde_json::json;

use crate::args::Output;
use crate::changes::{change_json, change_line};
use crate::output;
use crate::session::Session;

/// Replaces flag `document` in `environment` as it was read at `version` (the write is
/// refused if the flag changed meanwhile), asking `question` first in a protected environment.
pub async fn update_flag(
    session: &mut Session,
    question: &str,
    environment: &str,
    document: pb::Flag,
    version: u64,
    comment: String,
) -> anyhow::Result<pb::UpdateFlagResponse> {
    session
        .write(question, |mut admin, confirm_protected| {
            let request = pb::UpdateFlagRequest {
                environment: environment.to_owned(),
                flag: Some(document.clone()),
                expected_version: version,
                comment: comment.clone(),
                confirm_protected,
            };
            async move { admin.update_flag(request).await }
        })
        .await
}

/// Applies `request` (or only its dry run), reporting what changed. The dry run always comes
/// first: an invalid document fails, and one that changes nothing succeeds, before anyone is
/// asked to confirm a write to a protected environment.
pub async fn apply(
    session: &mut Session,
    request: pb::ApplyRequest,
    what: &str,
    dry_run: bool,
) -> anyhow::Result<String> {
    let environment = request.environment.clone();
    let preview = session
        .admin
        .apply(pb::ApplyRequest {
            dry_run: true,
            ..request.clone()
        })
        .await
        .map_err(|s| session.error(s))?
        .into_inner();
    if dry_run || !preview.changed {
        return Ok(apply_report(
            &preview,
            &environment,
            dry_run,
            session.output,
        ));
    }
    let applied = session
        .write(what, |mut admin, confirm_protected| {
            let request = pb::ApplyRequest {
                confirm_protected,
                ..request.clone()
            };
            async move { admin.apply(request).await }
        })
        .await?;
    Ok(apply_report(&applied, &environment, false, session.output))
}

/// Reads a flag, segment or export document from a JSON or YAML file, with every problem
/// of an invalid one.
pub fn read_input(file: &Path) -> anyhow::Result<Input> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    flagstaff_engine::parse_input(&text)
        .map_err(|e| anyhow!("{} is not a valid document:\n{e}", file.display()))
}

/// What an Apply changed (or would change, for a dry run): one line per document.
pub fn apply_report(
    applied: &pb::ApplyResponse,
    environment: &str,
    dry_run: bool,
    out: Output,
) -> String {
    let document = json!({
        "dry_run": dry_run,
        "changed": applied.changed,
        "revision": applied.revision,
        "changes": applied.changes.iter().map(change_json).collect::<Vec<_>>(),
        "unchanged_flags": applied.unchanged_flags,
        "unchanged_segments": applied.unchanged_segments,
        "changes_abridged": applied.changes_abridged,
        "paused_rollouts": applied.paused_rollouts,
    });
    if let Some(text) = output::structured(&document, out) {
        return text;
    }
    let mut text = String::new();
    for change in &applied.changes {
        text.push_str(&change_line(change));
        text.push('\n');
    }
    for key in &applied.paused_rollouts {
        text.push_str(&format!(
            "this paused the rollout plan of {key}: `flagstaff rollout resume {key}` continues \
             it, `flagstaff rollout rollback {key}` ends it\n"
        ));
    }
    if applied.changes_abridged {
        text.push_str(
            "(what changed in each document is left out: the documents are too big for one \
             answer; `flagstaff history` shows them)\n",
        );
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let unchanged: Vec<String> = [
        (applied.unchanged_flags.len(), "flag"),
        (applied.unchanged_segments.len(), "segment"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, word)| plural(n, word))
    .collect();
    if !unchanged.is_empty() {
        text.push_str(&format!("= {} unchanged\n", unchanged.join(" and ")));
    }
    text.push_str(&match (dry_run, applied.changed) {
        (true, true) => format!(
            "dry run: {environment} would be at revision {}; nothing changed\n",
            applied.revision + 1
        ),
        (true, false) => format!("dry run: nothing would change in {environment}\n"),
        (false, true) => format!("{environment} is at revision {}\n", applied.revision),
        (false, false) => format!(
            "nothing changed: {environment} stays at revision {}\n",
            applied.revision
        ),
    });
    text
}
