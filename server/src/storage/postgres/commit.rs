//! A commit's writes: what it holds, encoded before its transaction starts, and the
//! statements that write it.

use flagstaff_engine::Segment;

use super::revision_of;
use crate::storage::{AuditChange, AuditEntry, EnvironmentRecord};

/// The flags and segments an audit entry touches, each once.
pub(super) fn subjects(entry: &AuditEntry) -> (Vec<&'static str>, Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    let (mut kinds, mut keys) = (Vec::new(), Vec::new());
    for change in &entry.changes {
        let (kind, key) = match change {
            AuditChange::Flag { key, .. } => ("flag", key),
            AuditChange::Segment { key, .. } => ("segment", key),
        };
        if seen.insert((kind, key.as_str())) {
            kinds.push(kind);
            keys.push(key.clone());
        }
    }
    (kinds, keys)
}

/// A whole segment's key rows: lists and keys, in order, with their positions.
pub(super) struct KeyRows {
    pub(super) lists: Vec<&'static str>,
    pub(super) keys: Vec<String>,
    pub(super) positions: Vec<i64>,
}

impl KeyRows {
    pub(super) fn of(segment: &Segment) -> KeyRows {
        let mut rows = KeyRows {
            lists: Vec::new(),
            keys: Vec::new(),
            positions: Vec::new(),
        };
        for (list, keys) in [
            ("included", &segment.included),
            ("excluded", &segment.excluded),
        ] {
            for (position, key) in keys.iter().enumerate() {
                rows.lists.push(list);
                rows.keys.push(key.clone());
                rows.positions.push(position as i64);
            }
        }
        rows
    }
}

/// What a commit writes, encoded before it starts.
pub(super) struct Commit {
    pub(super) environment: String,
    pub(super) expected: i64,
    pub(super) revision: i64,
    pub(super) flags: Vec<(String, String)>,
    pub(super) deleted_flags: Vec<String>,
    /// Segments written whole: the document without keys, and its key rows.
    pub(super) segments: Vec<(String, String, KeyRows)>,
    pub(super) deleted_segments: Vec<String>,
    /// Segments whose key lists were patched: the document without keys, and the patch.
    pub(super) patched: Vec<(String, String, flagstaff_engine::KeyPatch)>,
    pub(super) rollouts: Vec<(String, String)>,
    pub(super) change: String,
    pub(super) audit: AuditEntry,
    pub(super) audit_json: String,
    pub(super) audit_time: i64,
    /// The change log keeps this many entries...
    pub(super) retention: i64,
    /// ...so entries at or below this revision go.
    pub(super) trim_below: i64,
}

/// A statement's parameters.
macro_rules! params {
    ($($param:expr),* $(,)?) => {
        vec![$($param as &(dyn tokio_postgres::types::ToSql + Sync)),*]
    };
}

/// A statement of a commit and its parameters.
type Op<'a> = (
    &'static str,
    Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>,
);

/// The two key lists of a segment, as the `list` column names them.
const LISTS: [&str; 2] = ["included", "excluded"];

/// Writes one commit inside its transaction (see [`Store::commit`]). The statements are
/// prepared once per connection (cached), then pipelined: all are sent at once, in order, on
/// the transaction's connection, and the database runs them in that order, so a commit costs
/// one round trip whatever it holds.
pub(super) async fn write_commit(
    tx: &deadpool_postgres::Transaction<'_>,
    c: &Commit,
    record: &EnvironmentRecord,
    record_json: &str,
    subjects: &(Vec<&'static str>, Vec<String>),
) -> Result<(), tokio_postgres::Error> {
    let env = &c.environment;
    let mut pending: Vec<Op<'_>> = Vec::new();
    for (key, document) in &c.flags {
        pending.push((
            "INSERT INTO flags (environment, key, document) VALUES ($1, $2, $3::text::json)
             ON CONFLICT (environment, key) DO UPDATE SET document = EXCLUDED.document",
            params![env, key, document],
        ));
    }
    if !c.deleted_flags.is_empty() {
        pending.push((
            "DELETE FROM flags WHERE environment = $1 AND key = ANY($2)",
            params![env, &c.deleted_flags],
        ));
    }
    if !c.deleted_segments.is_empty() {
        pending.push((
            "DELETE FROM segments WHERE environment = $1 AND key = ANY($2)",
            params![env, &c.deleted_segments],
        ));
    }
    for (key, document, rows) in &c.segments {
        pending.push((
            "INSERT INTO segments (environment, key, document) VALUES ($1, $2, $3::text::json)
             ON CONFLICT (environment, key) DO UPDATE SET document = EXCLUDED.document",
            params![env, key, document],
        ));
        pending.push((
            "DELETE FROM segment_keys WHERE environment = $1 AND segment = $2",
            params![env, key],
        ));
        pending.push((
            "INSERT INTO segment_keys (environment, segment, list, key, position)
             SELECT $1, $2, list, key, position
             FROM unnest($3::text[], $4::text[], $5::bigint[]) AS k (list, key, position)",
            params![env, key, &rows.lists, &rows.keys, &rows.positions],
        ));
    }
    for (key, document, patch) in &c.patched {
        pending.push((
            "UPDATE segments SET document = $3::text::json WHERE environment = $1 AND key = $2",
            params![env, key, document],
        ));
        let lists = [
            (&LISTS[0], &patch.add_included, &patch.remove_included),
            (&LISTS[1], &patch.add_excluded, &patch.remove_excluded),
        ];
        for (list, add, remove) in lists {
            if !remove.is_empty() {
                pending.push((
                    "DELETE FROM segment_keys
                     WHERE environment = $1 AND segment = $2 AND list = $3 AND key = ANY($4)",
                    params![env, key, list, remove],
                ));
            }
            if !add.is_empty() {
                // Appended after the last key, in order; a key already listed stays where
                // it is (ON CONFLICT DO NOTHING), as KeyPatch::apply keeps it.
                pending.push((
                    "INSERT INTO segment_keys (environment, segment, list, key, position)
                     SELECT $1, $2, $3, k.key,
                            (SELECT COALESCE(max(position), -1) FROM segment_keys
                             WHERE environment = $1 AND segment = $2 AND list = $3) + k.n
                     FROM unnest($4::text[]) WITH ORDINALITY AS k (key, n)
                     ON CONFLICT DO NOTHING",
                    params![env, key, list, add],
                ));
            }
        }
    }
    for (flag, plan) in &c.rollouts {
        pending.push((
            "INSERT INTO rollouts (environment, flag, plan) VALUES ($1, $2, $3::text::json)
             ON CONFLICT (environment, flag) DO UPDATE SET plan = EXCLUDED.plan",
            params![env, flag, plan],
        ));
    }
    pending.push((
        "INSERT INTO changes (environment, revision, change) VALUES ($1, $2, $3::text::json)",
        params![env, &c.revision, &c.change],
    ));
    let a = &c.audit;
    pending.push((
        "INSERT INTO audit (environment, revision, time_ms, actor, comment, operation, entry)
         VALUES ($1, $2, $3, $4, $5, $6, $7::text::json)",
        params![
            env,
            &c.revision,
            &c.audit_time,
            &a.actor,
            &a.comment,
            &a.operation,
            &c.audit_json,
        ],
    ));
    let (kinds, keys) = subjects;
    if !kinds.is_empty() {
        pending.push((
            "INSERT INTO audit_subjects (environment, kind, key, revision)
             SELECT $1, kind, key, $2 FROM unnest($3::text[], $4::text[]) AS s (kind, key)",
            params![env, &c.revision, kinds, keys],
        ));
    }
    debug_assert_eq!(record.revision, revision_of(c.revision));
    pending.push((
        "UPDATE environments SET revision = $2, record = $3::text::json WHERE key = $1",
        params![env, &c.revision, &record_json],
    ));
    // The change log keeps the last `retention` entries.
    if c.revision > c.retention {
        pending.push((
            "DELETE FROM changes WHERE environment = $1 AND revision <= $2",
            params![env, &c.trim_below],
        ));
    }
    let mut statements = Vec::with_capacity(pending.len());
    for (sql, _) in &pending {
        statements.push(tx.prepare_cached(sql).await?);
    }
    let sent = pending
        .iter()
        .zip(&statements)
        .map(|((_, params), statement)| tx.execute_raw(statement, params.iter().copied()));
    futures_util::future::try_join_all(sent).await?;
    Ok(())
}
