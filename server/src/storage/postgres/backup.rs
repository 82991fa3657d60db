//! Backups of the PostgreSQL store: reading everything in one transaction, and writing a
//! restored environment.

use deadpool_postgres::Pool;

use super::commit::{subjects, KeyRows};
use super::{assemble_segments, failed, json, pool_failed, sql_revision, without_keys};
use crate::storage::{decode, BackupRecord, EnvironmentRecord, RestoredEnvironment, StoreError};

/// Reads one stored record of a kind as the backup record it is.
type Reader = fn(&str, &[u8]) -> Result<BackupRecord, StoreError>;

/// Sends every record of a backup to `out`, read in one REPEATABLE READ transaction: of every
/// environment and the tokens, or of the environment `only` alone.
pub(super) async fn dump_records(
    pool: Pool,
    database: String,
    out: &std::sync::mpsc::SyncSender<Result<Option<BackupRecord>, StoreError>>,
    only: Option<String>,
) -> Result<(), StoreError> {
    let fail = |e| failed(&database, e);
    let mut client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(fail)?;
    // Fails when the reader stopped reading: nothing more to send. The reader is a plain thread, maybe one that is also running async code, so the
    // channel is std's, and this worker waits in `block_in_place` while it is full.
    let send = |record: BackupRecord| async move {
        match tokio::task::block_in_place(|| out.send(Ok(Some(record))).is_ok()) {
            true => Ok(()),
            false => Err(StoreError::Invalid {
                detail: "the backup stopped reading".to_owned(),
            }),
        }
    };
    let texts = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    };
    let environments = match &only {
        None => {
            tx.query(
                "SELECT key, record::text FROM environments ORDER BY key",
                &[],
            )
            .await
        }
        Some(key) => {
            tx.query(
                "SELECT key, record::text FROM environments WHERE key = $1",
                &[key],
            )
            .await
        }
    }
    .map_err(fail)?;
    if let (Some(key), true) = (&only, environments.is_empty()) {
        return Err(StoreError::NoEnvironment(key.clone()));
    }
    for row in environments {
        let key: String = row.get(0);
        let text: String = row.get(1);
        let what = |kind: &str| format!("{kind}/{key}");
        send(BackupRecord::Environment(decode(
            &what("environments"),
            text.as_bytes(),
        )?))
        .await?;
        let per_env = |sql: &'static str| {
            let tx = &tx;
            let key = &key;
            async move { tx.query(sql, &[key]).await.map_err(fail) }
        };
        for text in texts(
            per_env("SELECT document::text FROM flags WHERE environment = $1 ORDER BY key").await?,
        ) {
            send(BackupRecord::Flag(decode(&what("flags"), text.as_bytes())?)).await?;
        }
        let documents =
            per_env("SELECT key, document::text FROM segments WHERE environment = $1 ORDER BY key")
                .await?;
        let keys = per_env(
            "SELECT segment, list, key FROM segment_keys WHERE environment = $1
             ORDER BY segment, list, position",
        )
        .await?;
        let segments = assemble_segments(
            &key,
            documents.iter().map(|r| (r.get(0), r.get(1))).collect(),
            keys.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        )?;
        for segment in segments {
            send(BackupRecord::Segment(segment)).await?;
        }
        // The history and the plans: one JSON record a row each.
        let history: [(&str, &'static str, Reader); 3] = [
            (
                "changes",
                "SELECT change::text FROM changes WHERE environment = $1 ORDER BY revision",
                |what, bytes| decode(what, bytes).map(BackupRecord::Change),
            ),
            (
                "audit",
                "SELECT entry::text FROM audit WHERE environment = $1 ORDER BY revision",
                |what, bytes| decode(what, bytes).map(BackupRecord::Audit),
            ),
            (
                "rollouts",
                "SELECT plan::text FROM rollouts WHERE environment = $1 ORDER BY flag",
                |what, bytes| decode(what, bytes).map(BackupRecord::Rollout),
            ),
        ];
        for (kind, sql, read) in history {
            for text in texts(per_env(sql).await?) {
                send(read(&what(kind), text.as_bytes())?).await?;
            }
        }
        for row in
            per_env("SELECT flag, usage::text FROM flag_usage WHERE environment = $1 ORDER BY flag")
                .await?
        {
            let text: String = row.get(1);
            send(BackupRecord::Usage {
                flag: row.get(0),
                usage: decode(&what("usage"), text.as_bytes())?,
            })
            .await?;
        }
    }
    if only.is_none() {
        for text in texts(
            tx.query("SELECT record::text FROM tokens ORDER BY id", &[])
                .await
                .map_err(fail)?,
        ) {
            match decode("tokens", text.as_bytes()) {
                Ok(token) => send(BackupRecord::Token(token)).await?,
                // As everywhere else: a token that cannot be read does not work, and is left
                // out.
                Err(e) => {
                    tracing::error!(error = %e, "a damaged token record is left out of the backup")
                }
            }
        }
    }
    tx.commit().await.map_err(fail)?;
    // The end: a channel that closes without it was cut short.
    match tokio::task::block_in_place(|| out.send(Ok(None)).is_ok()) {
        true => Ok(()),
        false => Err(StoreError::Invalid {
            detail: "the backup stopped reading".to_owned(),
        }),
    }
}

/// Writes one restored environment inside its transaction (see
/// [`Store::restore_environment`]).
pub(super) async fn write_restored(
    tx: &tokio_postgres::Transaction<'_>,
    record: &EnvironmentRecord,
    restored: &RestoredEnvironment,
) -> Result<(), tokio_postgres::Error> {
    let env = &record.key;
    tx.execute(
        "INSERT INTO environments (key, revision, record) VALUES ($1, $2, $3::text::json)",
        &[env, &sql_revision(record.revision), &json(record)],
    )
    .await?;
    let docs = &restored.documents;
    let (keys, texts): (Vec<String>, Vec<String>) =
        docs.flags.iter().map(|f| (f.key.clone(), json(f))).unzip();
    tx.execute(
        "INSERT INTO flags (environment, key, document)
         SELECT $1, key, document::json FROM unnest($2::text[], $3::text[]) AS f (key, document)",
        &[env, &keys, &texts],
    )
    .await?;
    for segment in &docs.segments {
        let rows = KeyRows::of(segment);
        tx.execute(
            "INSERT INTO segments (environment, key, document) VALUES ($1, $2, $3::text::json)",
            &[env, &segment.key, &json(&without_keys(segment))],
        )
        .await?;
        tx.execute(
            "INSERT INTO segment_keys (environment, segment, list, key, position)
             SELECT $1, $2, list, key, position
             FROM unnest($3::text[], $4::text[], $5::bigint[]) AS k (list, key, position)",
            &[env, &segment.key, &rows.lists, &rows.keys, &rows.positions],
        )
        .await?;
    }
    // The change log and the audit log, each in one statement however long.
    let (revisions, changes): (Vec<i64>, Vec<String>) = restored
        .changes
        .iter()
        .map(|c| (sql_revision(c.revision), json(c)))
        .unzip();
    tx.execute(
        "INSERT INTO changes (environment, revision, change)
         SELECT $1, revision, change::json FROM unnest($2::bigint[], $3::text[]) AS c (revision, change)",
        &[env, &revisions, &changes],
    )
    .await?;
    let audit = &restored.audit;
    let revisions: Vec<i64> = audit.iter().map(|a| sql_revision(a.revision)).collect();
    let times: Vec<i64> = audit
        .iter()
        .map(|a| i64::try_from(a.time_ms).unwrap_or(i64::MAX))
        .collect();
    let actors: Vec<&str> = audit.iter().map(|a| a.actor.as_str()).collect();
    let comments: Vec<&str> = audit.iter().map(|a| a.comment.as_str()).collect();
    let operations: Vec<&str> = audit.iter().map(|a| a.operation.as_str()).collect();
    let entries: Vec<String> = audit.iter().map(json).collect();
    tx.execute(
        "INSERT INTO audit (environment, revision, time_ms, actor, comment, operation, entry)
         SELECT $1, revision, time_ms, actor, comment, operation, entry::json
         FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
              AS a (revision, time_ms, actor, comment, operation, entry)",
        &[
            env,
            &revisions,
            &times,
            &actors,
            &comments,
            &operations,
            &entries,
        ],
    )
    .await?;
    let (mut kinds, mut keys, mut of) = (Vec::new(), Vec::new(), Vec::new());
    for a in audit {
        let (k, n) = subjects(a);
        of.extend(std::iter::repeat_n(sql_revision(a.revision), k.len()));
        kinds.extend(k);
        keys.extend(n);
    }
    tx.execute(
        "INSERT INTO audit_subjects (environment, kind, key, revision)
         SELECT $1, kind, key, revision
         FROM unnest($2::text[], $3::text[], $4::bigint[]) AS s (kind, key, revision)",
        &[env, &kinds, &keys, &of],
    )
    .await?;
    for plan in &restored.rollouts {
        tx.execute(
            "INSERT INTO rollouts (environment, flag, plan) VALUES ($1, $2, $3::text::json)",
            &[env, &plan.flag, &json(plan)],
        )
        .await?;
    }
    let (flags, usage): (Vec<String>, Vec<String>) = restored
        .usage
        .iter()
        .map(|(f, u)| (f.clone(), json(u)))
        .unzip();
    tx.execute(
        "INSERT INTO flag_usage (environment, flag, usage)
         SELECT $1, flag, usage::json FROM unnest($2::text[], $3::text[]) AS u (flag, usage)",
        &[env, &flags, &usage],
    )
    .await?;
    Ok(())
}
