//! `flagstaff history` and `flagstaff watch`: what changed in an environment, from its audit
//! log and as it happens. Entries print as [`crate::changes`] describes them (`history -o
//! json` lists their JSON, `watch -o json` prints one per line).

use std::io::Write;
use std::time::Duration;

use flagstaff_proto::pb;
use serde_json::Value;
use tonic::Code;

use crate::args::{HistoryArgs, Output, WatchArgs};
use crate::changes::{changes_summary, entry_json};
use crate::fetch::segment_keys;
use crate::output;
use crate::session::{did_you_mean, Session};

/// The most entries one ListHistory page returns.
const MAX_PAGE: u32 = 1000;

/// `flagstaff history [KEY] [--limit N]`: newest first. KEY names a flag, or else a segment.
pub async fn history(session: &mut Session, args: &HistoryArgs) -> anyhow::Result<String> {
    let environment = session.env()?;
    let entries = match &args.key {
        Some(key) => {
            let mut entries = list_history(session, &environment, key, "", args.limit).await?;
            if entries.is_empty() {
                entries = list_history(session, &environment, "", key, args.limit).await?;
            }
            if entries.is_empty() {
                return Err(unknown_document(session, &environment, key).await);
            }
            entries
        }
        None => list_history(session, &environment, "", "", args.limit).await?,
    };
    let document = Value::Array(entries.iter().map(entry_json).collect());
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    if entries.is_empty() {
        return Ok(format!("no changes in {environment} yet\n"));
    }
    // Servers that do not record operations leave the column out.
    let operations = entries.iter().any(|e| !e.operation.is_empty());
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut row = vec![
                e.revision.to_string(),
                output::timestamp(e.time_unix_ms),
                e.actor.clone(),
            ];
            if operations {
                row.push(e.operation.clone());
            }
            row.push(changes_summary(&e.changes));
            row.push(e.comment.clone());
            row
        })
        .collect();
    let mut header = vec!["REVISION", "TIME", "ACTOR"];
    if operations {
        header.push("OPERATION");
    }
    header.extend(["CHANGES", "COMMENT"]);
    Ok(output::table(&header, &rows))
}

/// Up to `limit` entries of the audit log, newest first, across pages.
async fn list_history(
    session: &mut Session,
    environment: &str,
    flag: &str,
    segment: &str,
    limit: u32,
) -> anyhow::Result<Vec<pb::AuditEntry>> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    while entries.len() < limit as usize {
        let wanted = (limit as usize - entries.len()).min(MAX_PAGE as usize) as u32;
        let page = session
            .admin
            .list_history(pb::ListHistoryRequest {
                environment: environment.to_owned(),
                flag: flag.to_owned(),
                segment: segment.to_owned(),
                page_size: wanted,
                page_token,
            })
            .await
            .map_err(|s| session.error(s))?
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    entries.truncate(limit as usize);
    Ok(entries)
}

/// A key with no history: not a flag or segment that ever existed. Names the closest keys.
async fn unknown_document(session: &mut Session, environment: &str, key: &str) -> anyhow::Error {
    let mut keys: Vec<String> = Vec::new();
    let mut page_token = String::new();
    loop {
        let Ok(page) = session
            .admin
            .list_flags(pb::ListFlagsRequest {
                environment: environment.to_owned(),
                page_size: MAX_PAGE,
                page_token,
                ..Default::default()
            })
            .await
        else {
            break;
        };
        let page = page.into_inner();
        keys.extend(page.flags.into_iter().filter_map(|f| f.flag.map(|f| f.key)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if let Ok(segments) = segment_keys(session, environment).await {
        keys.extend(segments);
    }
    let message =
        format!("no flag or segment {key:?} in environment {environment:?} has any history");
    anyhow::anyhow!("{message}{}", did_you_mean(key, &keys))
}

/// `flagstaff watch [--since REVISION]`: prints each change as it is committed, until
/// interrupted. When the stream breaks (flagstaffd restarts, the network drops) it reconnects
/// with a capped exponential backoff and resumes after the last change printed, so nothing is
/// missed or printed twice. Lines go straight to stdout; nothing is left to print at the end.
pub async fn watch(session: &mut Session, args: &WatchArgs) -> anyhow::Result<String> {
    let environment = session.env()?;
    let mut out = std::io::stdout().lock();
    // Start after the newest entry (or --since), so that nothing committed from here on is
    // missed.
    let newest = newest_revision(session, &environment).await?;
    let mut after = args.since.unwrap_or(newest);
    eprintln!("watching {environment} after revision {after} (Ctrl-C to stop)");
    // A position past the environment's newest revision moves back to it now, before anything
    // is committed after the line above: moved back later, it would skip what was.
    if after > newest {
        eprintln!(
            "revision {after} is ahead of {environment}, which is at revision {newest}: \
             watching after {newest}"
        );
        after = newest;
    }
    // Failed attempts in a row: the backoff grows with them, and a message (or a stream that
    // stays up) is the sign of a working stream again.
    let mut failures: u32 = 0;
    loop {
        // The server reads `since_revision` 0 as "from now on": changes committed after
        // revision 0 (a new environment's first, while this was away; or all of them, for
        // --since 0) come from the history first. And a position past the environment's
        // revision (a typo, a server restored from an older backup) would wait in silence.
        match catch_up(session, &environment, after, &mut out).await {
            Ok(Some(printed)) => after = printed,
            Ok(None) => return Ok(String::new()),
            // Reconnecting: flagstaffd is still away; try again after the backoff.
            Err(_) if failures > 0 => {
                let delay = backoff(failures);
                failures = failures.saturating_add(1);
                tokio::time::sleep(delay).await;
                continue;
            }
            Err(e) => return Err(e),
        }
        let opened = tokio::time::Instant::now();
        let why = match session
            .admin
            .watch_changes(pb::WatchChangesRequest {
                environment: environment.clone(),
                since_revision: after,
            })
            .await
        {
            Err(status) if retryable(&status) => session.error(status).to_string(),
            Err(status) => return Err(session.error(status)),
            Ok(response) => {
                if failures > 0 {
                    eprintln!("reconnected: resuming after revision {after}");
                }
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            failures = 0;
                            let Some(entry) = message.entry else { continue };
                            after = entry.revision;
                            if print_line(&mut out, &watch_line(&entry, session.output)).is_err() {
                                // The reader left (`flagstaff watch | head -1`).
                                return Ok(String::new());
                            }
                        }
                        Ok(None) => break "the server ended the stream".to_owned(),
                        // Fell behind: resume after the last entry printed, at once.
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            break String::new();
                        }
                        Err(status) if retryable(&status) => {
                            break session.error(status).to_string();
                        }
                        Err(status) => return Err(session.error(status)),
                    }
                }
            }
        };
        // A stream that stayed up a while was working, even if quiet.
        if opened.elapsed() >= MAX_BACKOFF {
            failures = 0;
        }
        if why.is_empty() {
            continue;
        }
        let delay = backoff(failures);
        if failures == 0 {
            eprintln!("{why}; reconnecting (retrying with backoff, up to every {MAX_BACKOFF:?})");
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

/// The revision of the environment's newest history entry (0 when it has none).
async fn newest_revision(session: &mut Session, environment: &str) -> anyhow::Result<u64> {
    Ok(list_history(session, environment, "", "", 1)
        .await?
        .first()
        .map_or(0, |e| e.revision))
}

/// Writes one line of `watch` output; an error means the reader left.
fn print_line(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes()).and_then(|()| out.flush())
}

/// Before (re)subscribing after revision `after`: prints from the history what a stream
/// from `after` would not send (everything after revision 0, which the server reads as "from
/// now on"), and moves a position past the environment's newest revision back to it, saying
/// so. Returns the revision to subscribe after, or `None` when the reader left.
async fn catch_up(
    session: &mut Session,
    environment: &str,
    after: u64,
    out: &mut impl Write,
) -> anyhow::Result<Option<u64>> {
    let newest = newest_revision(session, environment).await?;
    if after > newest {
        eprintln!(
            "revision {after} is ahead of {environment}, which is at revision {newest}: \
             watching after {newest}"
        );
        return Ok(Some(newest));
    }
    if after > 0 || newest == 0 {
        return Ok(Some(after));
    }
    let mut entries = list_history(session, environment, "", "", u32::MAX).await?;
    entries.reverse();
    for entry in &entries {
        if print_line(out, &watch_line(entry, session.output)).is_err() {
            return Ok(None);
        }
    }
    Ok(Some(entries.last().map_or(after, |e| e.revision)))
}

/// The longest wait between two attempts to reconnect `watch`.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The wait before reconnection attempt `failures` (0 for the first): 200 ms, doubling, at
/// most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(200)
        .saturating_mul(1u32 << failures.min(10))
        .min(MAX_BACKOFF)
}

/// Whether `watch` should reconnect after `status`: the connection or the server went away,
/// as opposed to an answer that stays the same (no such environment, a bad token).
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal | Code::Aborted
    )
}

/// One change as `watch` prints it: a line of text, a line of JSON, or a YAML document.
fn watch_line(entry: &pb::AuditEntry, out: Output) -> String {
    match out {
        Output::Json => format!("{}\n", entry_json(entry)),
        Output::Yaml => format!(
            "---\n{}",
            flagstaff_engine::to_text(&entry_json(entry), flagstaff_engine::Format::Yaml)
        ),
        Output::Table => {
            let comment = if entry.comment.is_empty() {
                String::new()
            } else {
                format!("  ({})", entry.comment)
            };
            let operation = if entry.operation.is_empty() {
                String::new()
            } else {
                format!("{}  ", entry.operation)
            };
            format!(
                "{}  revision {}  {}  {operation}{}{comment}\n",
                output::timestamp(entry.time_unix_ms),
                entry.revision,
                entry.actor,
                changes_summary(&entry.changes),
            )
        }
    }
}
