//! Backups: `flagstaffd backup --to FILE` and `flagstaffd restore --from FILE`, from and into
//! either store (DESIGN.md section 7; docs/operations.md#backup-and-restore).
//!
//! A backup is a text file of JSON lines: a header (`{"flagstaff_backup":1,…}`), then every
//! record [`Store::dump`] gives (each environment followed by its documents, change log, audit
//! log, rollout plans and usage, then the tokens, as hashes), then a last line counting them
//! (`{"end":{"records":N}}`), by which a restore tells a complete file from one cut short. It is
//! written to `FILE.partial` with mode 0600 (it holds token hashes), synced, and renamed to
//! `FILE` only when complete.
//!
//! A restore reads and checks the whole file before it writes anything, into a store that
//! holds no environment and no token. Every environment gets a new epoch, so SDKs that knew
//! the old history take one snapshot; revisions, documents, history, plans and tokens are
//! kept.

use std::io::{BufRead, Write};
use std::path::Path;

use flagstaff_engine::{Document, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::ServerError;
use crate::storage::{
    now_ms, random_id, BackupRecord, RestoredEnvironment, Store, StoreError, TokenRecord,
};

/// The version of the backup format this flagstaffd writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The first line of a backup.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// The format's version.
    flagstaff_backup: u32,
    /// When the backup was taken, in Unix milliseconds.
    created_ms: u64,
    /// The store it was taken from: `sled` or `postgres`.
    store: String,
}

/// The last line of a backup.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Trailer {
    /// How many records came between the header and this line.
    End {
        /// The count.
        records: u64,
    },
}

/// What a backup or restore carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Environments.
    pub environments: usize,
    /// Tokens.
    pub tokens: usize,
    /// Records of every kind.
    pub records: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} environment(s), {} token(s), {} record(s) in all",
            self.environments, self.tokens, self.records
        )
    }
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> ServerError {
    ServerError::Invalid(format!("cannot {what} {}: {e}", path.display()))
}

/// Writes a backup of `store` (named `store_kind` in its header) to `path`, replacing it
/// only once the backup is complete and synced.
pub fn write<S: Store>(store: &S, store_kind: &str, path: &Path) -> Result<Summary, ServerError> {
    write_file(path, |out| {
        write_to(out, store_kind, |visit| {
            store.dump(visit).map_err(ServerError::Store)
        })
    })
}

/// Writes a file as a backup is written: to `path.partial`, mode 0600, synced, then renamed to
/// `path`. `produce` writes the content.
pub fn write_file<T>(
    path: &Path,
    produce: impl FnOnce(&mut dyn Write) -> Result<T, ServerError>,
) -> Result<T, ServerError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&partial)
        .map_err(|e| io_error(&partial, "create", e))?;
    let mut out = std::io::BufWriter::new(file);
    let produced = match produce(&mut out) {
        Ok(produced) => produced,
        Err(e) => {
            drop(out);
            // Never left looking like a backup: the partial file goes.
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let file = out
        .into_inner()
        .map_err(|e| io_error(&partial, "write", e.into_error()))?;
    file.sync_all().map_err(|e| io_error(&partial, "sync", e))?;
    std::fs::rename(&partial, path).map_err(|e| io_error(path, "write", e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, "sync", e))?;
    }
    Ok(produced)
}

/// Writes a backup's lines to `out`: the header (naming `store_kind`), every record `dump`
/// passes on, and the end line counting them.
pub fn write_to(
    out: &mut dyn Write,
    store_kind: &str,
    dump: impl FnOnce(&mut dyn FnMut(BackupRecord) -> Result<(), StoreError>) -> Result<(), ServerError>,
) -> Result<Summary, ServerError> {
    let mut summary = Summary::default();
    let line = |out: &mut dyn Write, bytes: Vec<u8>| {
        out.write_all(&bytes)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| ServerError::Invalid(format!("cannot write the backup: {e}")))
    };
    let header = Header {
        flagstaff_backup: FORMAT_VERSION,
        created_ms: now_ms(),
        store: store_kind.to_owned(),
    };
    line(out, serde_json::to_vec(&header).unwrap_or_default())?;
    let mut failed = None;
    let dumped = dump(&mut |record| {
        match &record {
            BackupRecord::Environment(_) => summary.environments += 1,
            BackupRecord::Token(_) => summary.tokens += 1,
            _ => {}
        }
        summary.records += 1;
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        line(out, bytes).map_err(|e| {
            let detail = e.to_string();
            failed = Some(e);
            StoreError::Invalid { detail }
        })
    });
    if let Err(e) = dumped {
        return Err(failed.take().unwrap_or(e));
    }
    let trailer = Trailer::End {
        records: summary.records,
    };
    line(out, serde_json::to_vec(&trailer).unwrap_or_default())?;
    out.flush()
        .map_err(|e| ServerError::Invalid(format!("cannot write the backup: {e}")))?;
    Ok(summary)
}

/// A backup read and checked: its environments, whole, and its tokens.
#[derive(Debug, Default)]
pub struct Backup {
    /// The environments, each with a new epoch.
    pub environments: Vec<RestoredEnvironment>,
    /// The tokens.
    pub tokens: Vec<TokenRecord>,
    /// What it holds.
    pub summary: Summary,
}

/// Reads a backup, checking that it is complete and that every environment's documents load
/// (so that what is restored can be served).
pub fn read(input: impl BufRead) -> Result<Backup, ServerError> {
    let bad = |line: usize, what: String| ServerError::Invalid(format!("line {line}: {what}"));
    let mut lines = input.lines().enumerate().map(|(i, l)| (i + 1, l));
    let header: Header = match lines.next() {
        Some((n, Ok(text))) => serde_json::from_str(&text)
            .map_err(|e| bad(n, format!("not a Flagstaff backup: {e}")))?,
        Some((n, Err(e))) => return Err(bad(n, format!("cannot read: {e}"))),
        None => return Err(ServerError::Invalid("the backup is empty".to_owned())),
    };
    if header.flagstaff_backup != FORMAT_VERSION {
        return Err(ServerError::Invalid(format!(
            "the backup's format is version {}; this flagstaffd reads version {FORMAT_VERSION}",
            header.flagstaff_backup
        )));
    }
    let mut backup = Backup::default();
    let mut ended = None;
    for (n, text) in lines {
        let text = text.map_err(|e| bad(n, format!("cannot read: {e}")))?;
        if ended.is_some() {
            return Err(bad(n, "a line after the end line".to_owned()));
        }
        let record: BackupRecord = match serde_json::from_str(&text) {
            Ok(record) => record,
            Err(e) => match serde_json::from_str::<Trailer>(&text) {
                Ok(Trailer::End { records }) => {
                    ended = Some(records);
                    continue;
                }
                Err(_) => return Err(bad(n, format!("not a backup record: {e}"))),
            },
        };
        backup.summary.records += 1;
        if let BackupRecord::Environment(mut record) = record {
            if backup
                .environments
                .iter()
                .any(|e| e.record.as_ref().is_some_and(|r| r.key == record.key))
            {
                return Err(bad(n, format!("environment {:?} twice", record.key)));
            }
            record.epoch = random_id();
            backup.summary.environments += 1;
            backup.environments.push(RestoredEnvironment {
                record: Some(record),
                ..RestoredEnvironment::default()
            });
            continue;
        }
        if let BackupRecord::Token(token) = record {
            backup.summary.tokens += 1;
            backup.tokens.push(token);
            continue;
        }
        let Some(env) = backup.environments.last_mut() else {
            return Err(bad(n, "a record before any environment".to_owned()));
        };
        match record {
            BackupRecord::Flag(flag) => env.documents.flags.push(flag),
            BackupRecord::Segment(segment) => env.documents.segments.push(segment),
            BackupRecord::Change(change) => env.changes.push(change),
            BackupRecord::Audit(entry) => env.audit.push(entry),
            BackupRecord::Rollout(plan) => env.rollouts.push(plan),
            BackupRecord::Usage { flag, usage } => env.usage.push((flag, usage)),
            BackupRecord::Environment(_) | BackupRecord::Token(_) => {}
        }
    }
    match ended {
        Some(records) if records == backup.summary.records => {}
        Some(records) => {
            return Err(ServerError::Invalid(format!(
                "the backup's end line counts {records} records, but it holds {}",
                backup.summary.records
            )))
        }
        None => {
            return Err(ServerError::Invalid(
                "the backup is cut short: it has no end line, so it was not written completely"
                    .to_owned(),
            ))
        }
    }
    for env in &backup.environments {
        let Some(record) = &env.record else { continue };
        let document = Document {
            environment: record.key.clone(),
            flags: env.documents.flags.clone(),
            segments: env.documents.segments.clone(),
        };
        Snapshot::from_document(document).map_err(|e| {
            ServerError::Invalid(format!(
                "environment {:?} in the backup does not load: {e}",
                record.key
            ))
        })?;
        if let Some(late) = env
            .changes
            .iter()
            .map(|c| c.revision)
            .chain(env.audit.iter().map(|a| a.revision))
            .find(|r| *r > record.revision)
        {
            return Err(ServerError::Invalid(format!(
                "environment {:?} in the backup is at revision {} but has history of revision \
                 {late}",
                record.key, record.revision
            )));
        }
    }
    Ok(backup)
}

/// Restores `backup` into `store`, which must hold no environment and no token.
pub fn restore<S: Store>(store: &S, backup: &Backup) -> Result<Summary, ServerError> {
    let environments = store.environments()?;
    let tokens = store.tokens()?;
    if !environments.is_empty() || !tokens.is_empty() {
        return Err(ServerError::Precondition(format!(
            "the store is not empty ({} environment(s), {} token(s)): a backup is restored \
             into an empty store only",
            environments.len(),
            tokens.len()
        )));
    }
    for env in &backup.environments {
        store.restore_environment(env)?;
    }
    store.put_tokens(&backup.tokens)?;
    Ok(backup.summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStore;

    fn lines(lines: &[&str]) -> String {
        lines.join("\n") + "\n"
    }

    const HEADER: &str = r#"{"flagstaff_backup":1,"created_ms":1,"store":"sled"}"#;
    const ENV: &str = r#"{"environment":{"key":"prod","epoch":"e0","revision":1,"protected":false,"created_ms":1}}"#;
    const FLAG: &str = r#"{"flag":{"key":"f","kind":"boolean","variants":{"on":true,"off":false},"off_variant":"off","enabled":false,"rules":[],"default":{"variant":"off"},"version":1}}"#;

    fn refused(text: &str) -> String {
        match read(text.as_bytes()) {
            Ok(_) => panic!("read a bad backup: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_complete_backup_reads_with_new_epochs() {
        let backup = read(lines(&[HEADER, ENV, FLAG, r#"{"end":{"records":2}}"#]).as_bytes())
            .expect("reads");
        assert_eq!(backup.summary.environments, 1);
        assert_eq!(backup.summary.records, 2);
        let record = backup.environments[0].record.as_ref().expect("record");
        assert_eq!(record.revision, 1);
        assert_ne!(record.epoch, "e0");
        assert_eq!(backup.environments[0].documents.flags[0].key, "f");
    }

    #[test]
    fn a_backup_cut_short_or_miscounted_is_refused() {
        assert!(refused(&lines(&[HEADER, ENV, FLAG])).contains("cut short"));
        assert!(
            refused(&lines(&[HEADER, ENV, FLAG, r#"{"end":{"records":3}}"#]))
                .contains("counts 3 records, but it holds 2")
        );
        assert!(refused("").contains("empty"));
        assert!(refused(&lines(&[
            r#"{"flagstaff_backup":2,"created_ms":1,"store":"sled"}"#
        ]))
        .contains("version 2"));
        assert!(refused(&lines(&["{}"])).contains("not a Flagstaff backup"));
    }

    #[test]
    fn records_out_of_place_are_refused_naming_the_line() {
        let before = refused(&lines(&[HEADER, FLAG, r#"{"end":{"records":1}}"#]));
        assert!(
            before.contains("line 2: a record before any environment"),
            "{before}"
        );
        let twice = refused(&lines(&[HEADER, ENV, ENV, r#"{"end":{"records":2}}"#]));
        assert!(
            twice.contains("line 3: environment \"prod\" twice"),
            "{twice}"
        );
        let after = refused(&lines(&[HEADER, ENV, r#"{"end":{"records":1}}"#, FLAG]));
        assert!(
            after.contains("line 4: a line after the end line"),
            "{after}"
        );
        let garbage = refused(&lines(&[HEADER, ENV, r#"{"flag":{"key":1}}"#]));
        assert!(garbage.contains("line 3: not a backup record"), "{garbage}");
    }

    #[test]
    fn documents_that_do_not_load_or_history_past_the_revision_are_refused() {
        let dangling = r#"{"flag":{"key":"g","kind":"boolean","variants":{"on":true,"off":false},"off_variant":"off","enabled":true,"rules":[{"id":"r","conditions":[{"attribute":"key","op":"in_segment","values":["missing"]}],"serve":{"variant":"on"}}],"default":{"variant":"off"},"version":1}}"#;
        let err = refused(&lines(&[HEADER, ENV, dangling, r#"{"end":{"records":2}}"#]));
        assert!(
            err.contains("environment \"prod\" in the backup does not load"),
            "{err}"
        );
        let late = r#"{"change":{"revision":2,"flags":[],"deleted_flags":[],"segments":[],"deleted_segments":[]}}"#;
        let err = refused(&lines(&[HEADER, ENV, late, r#"{"end":{"records":2}}"#]));
        assert!(err.contains("has history of revision 2"), "{err}");
    }

    #[test]
    fn a_restore_needs_an_empty_store_and_a_backup_reads_back_what_it_wrote() {
        let dir = tempfile::tempdir().expect("dir");
        let store = SledStore::open(dir.path().join("a"), 100).expect("store");
        let backup = read(lines(&[HEADER, ENV, FLAG, r#"{"end":{"records":2}}"#]).as_bytes())
            .expect("reads");
        restore(&store, &backup).expect("restores into an empty store");
        let again = restore(&store, &backup).expect_err("not into a store that holds data");
        assert!(again.to_string().contains("not empty"), "{again}");
        let file = dir.path().join("backup.jsonl");
        let summary = write(&store, "sled", &file).expect("writes");
        assert_eq!(summary.records, 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&file).expect("read");
        let read_back = read(text.as_bytes()).expect("reads back");
        assert_eq!(
            read_back.environments[0].documents,
            backup.environments[0].documents
        );
    }
}
