//! `flagstaff segment create|get|list|apply|delete|add|remove|promote`.
//!
//! `get` prints the segment's document, key lists included (YAML, or JSON with `-o json`),
//! with its version: edited and given to `apply`, it is written only if nobody changed the
//! segment meanwhile. `list` never prints key lists, only their sizes; its JSON fields are
//! `key`, `description` (null for none), `included_count`, `excluded_count`, `rule_count`,
//! `version`, `changed` and `changed_by`.

use anyhow::{anyhow, bail};
use flagstaff_engine::{Format, Input, Segment};
use flagstaff_proto::pb;
use serde_json::{json, Value};

use crate::args::{Output, SegmentCommand, SegmentKeysArgs};
use crate::documents::{apply, read_input};
use crate::fetch::segment_keys;
use crate::output;
use crate::session::did_you_mean;
use crate::session::Session;
use crate::write_report::wait;

/// The most entries one ListSegments page returns.
const MAX_PAGE: u32 = 1000;

pub async fn run(session: &mut Session, command: &SegmentCommand) -> anyhow::Result<String> {
    match command {
        SegmentCommand::Create {
            key,
            description,
            included,
            excluded,
        } => {
            let environment = session.env()?;
            let segment = pb::Segment {
                key: key.clone(),
                description: description.clone(),
                included: included.clone(),
                excluded: excluded.clone(),
                rules: Vec::new(),
                version: None,
            };
            let created = session
                .write(
                    &format!("Create segment {key}"),
                    |mut admin, confirm_protected| {
                        let request = pb::CreateSegmentRequest {
                            environment: environment.clone(),
                            segment: Some(segment.clone()),
                            comment: String::new(),
                            confirm_protected,
                        };
                        async move { admin.create_segment(request).await }
                    },
                )
                .await?;
            let summary = created.segment.unwrap_or_default();
            Ok(format!(
                "created segment {key} ({} included, {} excluded) at revision {}\n",
                summary.included_count, summary.excluded_count, created.revision
            ))
        }
        SegmentCommand::Get { key } => get(session, key).await,
        SegmentCommand::List => list(session).await,
        SegmentCommand::Apply { file } => {
            let environment = session.env()?;
            let segments = match read_input(file)? {
                Input::Segment(segment) => vec![segment],
                Input::Document(document) => {
                    if !document.flags.is_empty() {
                        eprintln!(
                            "note: {} holds {} flag(s), left as they are: `flagstaff import` applies a whole export document",
                            file.display(),
                            document.flags.len()
                        );
                    }
                    if document.segments.is_empty() {
                        bail!("{} holds no segments", file.display());
                    }
                    document.segments
                }
                Input::Flag(flag) => bail!(
                    "{} is a flag document ({}): use `flagstaff flag apply -f {}`",
                    file.display(),
                    flag.key,
                    file.display()
                ),
            };
            let request = pb::ApplyRequest {
                environment: environment.clone(),
                source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                    flags: Vec::new(),
                    segments: segments.iter().map(pb::Segment::from).collect(),
                })),
                ..Default::default()
            };
            apply(
                session,
                request,
                &format!("Apply {}", file.display()),
                false,
            )
            .await
        }
        SegmentCommand::Delete { key } => {
            let environment = session.env()?;
            let question = format!("Delete segment {key} from {environment}?");
            let deleted = session
                .delete(&question, |mut admin, confirm_protected| {
                    let request = pb::DeleteSegmentRequest {
                        environment: environment.clone(),
                        key: key.clone(),
                        confirm_protected,
                        ..Default::default()
                    };
                    async move { admin.delete_segment(request).await }
                })
                .await;
            let deleted = match deleted {
                Ok(deleted) => deleted,
                Err(err) => return Err(hint(session, &environment, key, err).await),
            };
            Ok(format!(
                "deleted segment {key} at revision {}\n",
                deleted.revision
            ))
        }
        SegmentCommand::Add(args) => patch(session, args, true).await,
        SegmentCommand::Remove(args) => patch(session, args, false).await,
        SegmentCommand::Promote {
            key,
            from,
            to,
            message,
        } => promote(session, key, from, to, message.as_deref()).await,
    }
}

/// `segment promote`: the server copies the segment, so its key lists never travel.
async fn promote(
    session: &mut Session,
    key: &str,
    from: &str,
    to: &str,
    message: Option<&str>,
) -> anyhow::Result<String> {
    let result = session
        .write_in(to, "Promote the segment", |mut admin, confirm_protected| {
            let request = pb::PromoteSegmentRequest {
                environment: to.to_owned(),
                from_environment: from.to_owned(),
                key: key.to_owned(),
                comment: message.unwrap_or_default().to_owned(),
                confirm_protected,
                ..Default::default()
            };
            async move { admin.promote_segment(request).await }
        })
        .await;
    let response = match result {
        Ok(response) => response,
        Err(err) => return Err(hint(session, from, key, err).await),
    };
    let summary = response.segment.unwrap_or_default();
    Ok(format!(
        "segment {key} copied from {from} to {to} ({} included, {} excluded; revision {} of {to})\n",
        summary.included_count, summary.excluded_count, response.revision
    ))
}

/// `segment get`: the document, with its version.
async fn get(session: &mut Session, key: &str) -> anyhow::Result<String> {
    let environment = session.env()?;
    let response = session
        .admin
        .get_segment(pb::GetSegmentRequest {
            environment: environment.clone(),
            key: key.to_owned(),
        })
        .await
        .map_err(|s| session.error(s));
    let response = match response {
        Ok(response) => response.into_inner(),
        Err(err) => return Err(hint(session, &environment, key, err).await),
    };
    let segment = Segment::try_from(response.segment.unwrap_or_default())
        .map_err(|e| anyhow!("the server sent a segment this CLI cannot read: {e}"))?;
    match session.output {
        Output::Json => Ok(flagstaff_engine::to_text(&segment, Format::Json)),
        Output::Yaml => Ok(flagstaff_engine::to_text(&segment, Format::Yaml)),
        Output::Table => {
            let mut text = format!("# segment {key} in {environment}");
            if let Some(change) = &response.last_change {
                text.push_str(&format!(
                    ": version {}, changed {} by {}",
                    change.revision,
                    output::timestamp(change.time_unix_ms),
                    change.actor
                ));
                if !change.comment.is_empty() {
                    text.push_str(&format!(" ({})", change.comment));
                }
            }
            text.push('\n');
            text.push_str(&flagstaff_engine::to_text(&segment, Format::Yaml));
            Ok(text)
        }
    }
}

/// `segment list`: sizes of the key lists, never the keys.
async fn list(session: &mut Session) -> anyhow::Result<String> {
    let environment = session.env()?;
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = session
            .admin
            .list_segments(pb::ListSegmentsRequest {
                environment: environment.clone(),
                text: String::new(),
                page_size: MAX_PAGE,
                page_token,
            })
            .await
            .map_err(|s| session.error(s))?
            .into_inner();
        entries.extend(page.segments);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let rows: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let summary = entry.segment.clone().unwrap_or_default();
            let segment = summary.segment.unwrap_or_default();
            let change = entry.last_change.clone().unwrap_or_default();
            json!({
                "key": segment.key,
                "description": segment.description,
                "included_count": summary.included_count,
                "excluded_count": summary.excluded_count,
                "rule_count": segment.rules.len(),
                "version": segment.version.unwrap_or_default(),
                "changed": output::timestamp(change.time_unix_ms),
                "changed_by": change.actor,
            })
        })
        .collect();
    let document = Value::Array(rows);
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    if entries.is_empty() {
        return Ok(format!("no segments in {environment}\n"));
    }
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = document
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            [
                "key",
                "included_count",
                "excluded_count",
                "rule_count",
                "version",
                "description",
                "changed",
            ]
            .iter()
            .map(|field| cell(&r[*field]))
            .collect()
        })
        .collect();
    Ok(output::table(
        &[
            "SEGMENT",
            "INCLUDED",
            "EXCLUDED",
            "RULES",
            "VERSION",
            "DESCRIPTION",
            "CHANGED",
        ],
        &rows,
    ))
}

/// `segment add|remove`: changes one key list without sending the lists.
async fn patch(session: &mut Session, args: &SegmentKeysArgs, add: bool) -> anyhow::Result<String> {
    let environment = session.env()?;
    let mut patch = pb::SegmentKeyPatch {
        segment: args.segment.clone(),
        ..Default::default()
    };
    let keys = args.keys.clone();
    match (add, args.excluded) {
        (true, false) => patch.add_included = keys,
        (false, false) => patch.remove_included = keys,
        (true, true) => patch.add_excluded = keys,
        (false, true) => patch.remove_excluded = keys,
    }
    let list = if args.excluded {
        "excluded"
    } else {
        "included"
    };
    let question = format!(
        "{} {} key(s) {} the {list} keys of segment {}",
        if add { "Add" } else { "Remove" },
        args.keys.len(),
        if add { "to" } else { "from" },
        args.segment
    );
    let result = session
        .write(&question, |mut admin, confirm_protected| {
            let request = pb::PatchSegmentKeysRequest {
                environment: environment.clone(),
                patch: Some(patch.clone()),
                expected_version: 0,
                comment: args.write.message.clone().unwrap_or_default(),
                confirm_protected,
            };
            async move { admin.patch_segment_keys(request).await }
        })
        .await;
    let patched = match result {
        Ok(patched) => patched,
        Err(err) => return Err(hint(session, &environment, &args.segment, err).await),
    };
    let applied = patched.applied.unwrap_or_default();
    let changed = match (add, args.excluded) {
        (true, false) => applied.add_included.len(),
        (false, false) => applied.remove_included.len(),
        (true, true) => applied.add_excluded.len(),
        (false, true) => applied.remove_excluded.len(),
    };
    let summary = patched.segment.unwrap_or_default();
    let plural = |n: usize| if n == 1 { "key" } else { "keys" };
    let mut text = if add {
        format!(
            "added {changed} {} to the {list} keys of {}",
            plural(changed),
            args.segment
        )
    } else {
        format!(
            "removed {changed} {} from the {list} keys of {}",
            plural(changed),
            args.segment
        )
    };
    let unchanged = args.keys.len() - changed.min(args.keys.len());
    if unchanged > 0 {
        text.push_str(&format!(
            " ({unchanged} {} {})",
            if unchanged == 1 { "was" } else { "were" },
            if add { "already there" } else { "not there" }
        ));
    }
    text.push_str(&format!(
        ": {} included, {} excluded; revision {}\n",
        summary.included_count, summary.excluded_count, patched.revision
    ));
    wait(session, text, patched.revision, &args.write).await
}

/// A NOT_FOUND for segment `key`, with the closest segment keys; other errors as they are.
async fn hint(
    session: &mut Session,
    environment: &str,
    key: &str,
    err: anyhow::Error,
) -> anyhow::Error {
    if !err.to_string().starts_with("no segment ") {
        return err;
    }
    let keys = segment_keys(session, environment).await.unwrap_or_default();
    anyhow!("{err}{}", did_you_mean(key, &keys))
}
