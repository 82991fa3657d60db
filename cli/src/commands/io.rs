//! `flagstaff export` and `flagstaff import`: an environment as one document, and back.
//!
//! `import` creates or replaces the document's flags and segments in one revision and leaves
//! the environment's other flags and segments as they are. Its JSON fields (and those of
//! `segment apply`) are `dry_run`, `changed`, `revision`, `changes` (as `history` describes
//! them), `unchanged_flags` and `unchanged_segments`.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use flagstaff_engine::{Document, Format, Input};
use flagstaff_proto::pb;
use serde_json::json;

use crate::args::{ImportArgs, Output};
use crate::commands::history::{change_json, change_line};
use crate::output;
use crate::session::Session;

/// `flagstaff export`: YAML unless `-o json`.
pub async fn export(session: &mut Session) -> anyhow::Result<String> {
    let environment = session.env()?;
    let exported = session
        .admin
        .export(pb::ExportRequest { environment })
        .await
        .map_err(|s| session.error(s))?
        .into_inner();
    let document = Document::try_from(exported.document.unwrap_or_default())
        .map_err(|e| anyhow!("the server sent a document this CLI cannot read: {e}"))?;
    let format = match session.output {
        Output::Json => Format::Json,
        Output::Table | Output::Yaml => Format::Yaml,
    };
    Ok(flagstaff_engine::to_text(&document, format))
}

/// `flagstaff import FILE [--dry-run]`: one Apply, or its dry run.
pub async fn import(session: &mut Session, args: &ImportArgs) -> anyhow::Result<String> {
    let environment = session.env()?;
    let file = &args.file;
    let document = match read_input(file)? {
        Input::Document(document) => document,
        Input::Flag(flag) => bail!(
            "{} is a flag document ({}), not an export document: use `flagstaff flag apply -f {}`",
            file.display(),
            flag.key,
            file.display()
        ),
        Input::Segment(segment) => bail!(
            "{} is a segment document ({}), not an export document: use `flagstaff segment apply -f {}`",
            file.display(),
            segment.key,
            file.display()
        ),
    };
    let request = pb::ApplyRequest {
        environment: environment.clone(),
        source: Some(pb::apply_request::Source::Document(pb::Document::from(
            &document,
        ))),
        prune: false,
        dry_run: false,
        comment: args.message.clone().unwrap_or_default(),
        confirm_protected: false,
    };
    let what = format!("Import {}", file.display());
    apply(session, request, &what, args.dry_run).await
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
