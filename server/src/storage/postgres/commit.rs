//! A commit: what it holds, encoded before its transaction starts, and the transaction that
//! writes it in two round trips.
//!
//! 1. `BEGIN` and `SELECT … FOR UPDATE` of the environment's row, sent together.
//! 2. After the revision is checked: every statement of the change and `COMMIT`, sent
//!    together. The database runs them in order and, when one fails, rolls the rest back,
//!    `COMMIT` included.
//!
//! Statements are prepared once per connection. tokio-postgres sends a request on its
//! future's first poll, so the order in which the futures are first polled is the order on
//! the wire; [`send_all`] polls them once each, in order, before anything is awaited.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use deadpool_postgres::{Object, Pool};
use flagstaff_engine::Segment;

use super::revision_of;
use super::{decode, failed, json, pool_failed, rolled_back_class, with_sources, NOTIFY_CHANNEL};
use crate::storage::{AuditChange, AuditEntry, EnvironmentRecord, StoreError};

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
    pub(super) revision: i64,
    pub(super) flags: Vec<(String, String)>,
    pub(super) deleted_flags: Vec<String>,
    /// Segments written whole: the document without keys, and its key rows.
    pub(super) segments: Vec<(String, String, KeyRows)>,
    pub(super) deleted_segments: Vec<String>,
    /// Segments whose key lists were patched: the document without keys, and the patch.
    pub(super) patched: Vec<(String, String, flagstaff_engine::KeyPatch)>,
    /// Rollout plans: flag, document, and the version the stored plan must be at.
    pub(super) rollouts: Vec<(String, String, i64)>,
    /// The leader's lease the commit is a duty of: this flagstaffd's name and the
    /// generation it holds.
    pub(super) lease: Option<(String, i64)>,
    pub(super) change: String,
    pub(super) audit: AuditEntry,
    pub(super) audit_json: String,
    pub(super) audit_time: i64,
    /// The change log keeps the last `retention` entries, so entries at or below this
    /// revision go.
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

/// The statements that write `c`, in order, with their parameters.
fn statements<'a>(
    c: &'a Commit,
    record_json: &'a String,
    subjects: &'a (Vec<&'static str>, Vec<String>),
) -> Vec<Op<'a>> {
    let env = &c.environment;
    let mut pending: Vec<Op<'_>> = duty(&c.lease);
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
    pending.extend(plan_statements(env, &c.rollouts));
    // What every commit writes, in one statement: the change-log entry (and the entries
    // past the log's retention gone), the audit entry and its subjects, and the environment's
    // new revision.
    let a = &c.audit;
    let (kinds, keys) = subjects;
    pending.push((
        "WITH logged AS (
             INSERT INTO changes (environment, revision, change)
             VALUES ($1, $2, $3::text::json)),
         trimmed AS (
             DELETE FROM changes WHERE environment = $1 AND revision <= $4),
         audited AS (
             INSERT INTO audit (environment, revision, time_ms, actor, comment, operation, entry)
             VALUES ($1, $2, $5, $6, $7, $8, $9::text::json)),
         subjects AS (
             INSERT INTO audit_subjects (environment, kind, key, revision)
             SELECT $1, kind, key, $2 FROM unnest($10::text[], $11::text[]) AS s (kind, key))
         UPDATE environments SET revision = $2, record = $12::text::json WHERE key = $1",
        params![
            env,
            &c.revision,
            &c.change,
            &c.trim_below,
            &c.audit_time,
            &a.actor,
            &a.comment,
            &a.operation,
            &c.audit_json,
            kinds,
            keys,
            record_json,
        ],
    ));
    pending
}

/// The check that the commit's transaction is a duty of the lease held, first of all.
fn duty(lease: &Option<(String, i64)>) -> Vec<Op<'_>> {
    lease
        .iter()
        .map(|(holder, generation)| {
            (
                "SELECT flagstaff_hold_lease($1, $2, $3)",
                params![&super::lease::DUTIES, holder, generation],
            )
        })
        .collect()
}

/// The statements writing `plans` of `env`, each only over the version it was built on.
fn plan_statements<'a>(env: &'a String, plans: &'a [(String, String, i64)]) -> Vec<Op<'a>> {
    plans
        .iter()
        .map(|(flag, plan, expected)| {
            (
                "SELECT flagstaff_put_plan($1, $2, $3, $4)",
                params![env, flag, plan, expected],
            )
        })
        .collect()
}

/// Rollout plans written alone, making no revision (a pause, a resume).
pub(super) struct Plans {
    pub(super) environment: String,
    /// Flag, document, and the version the stored plan must be at.
    pub(super) plans: Vec<(String, String, i64)>,
    pub(super) lease: Option<(String, i64)>,
}

/// Commits `p` in `tx`, which locked its environment's row, and tells other flagstaffd
/// processes that the environment's plans changed.
pub(super) async fn finish_plans(
    tx: Begun,
    database: String,
    p: Plans,
    committing: Arc<AtomicBool>,
) -> Result<(), StoreError> {
    let mut pending = duty(&p.lease);
    pending.extend(plan_statements(&p.environment, &p.plans));
    let payload = format!("{}:{}", p.environment, super::listen::ROLLOUTS);
    let outcome = write_and_commit(tx.client(), &pending, &payload, &committing)
        .await
        .map_err(|e| failed(&database, e))?;
    settle(tx, database, &p.environment, outcome, &payload)
}

/// How a commit's transaction begins. Waiting for another commit's lock on the environment
/// gives up before a call does ([`CALL_TIMEOUT`](super::CALL_TIMEOUT)), and a transaction
/// left idle (its flagstaffd frozen or cut off between its two round trips) is ended by the
/// database, so that it cannot hold the environment's row for longer.
const BEGIN: &str = "BEGIN;
    SET LOCAL lock_timeout = '8s';
    SET LOCAL idle_in_transaction_session_timeout = '8s'";

/// Begins a transaction on a connection of `pool` and locks `environment`'s row in it
/// (`BEGIN` and the lock sent together): the transaction, and the revision and record
/// stored. `FOR NO KEY UPDATE` keeps every other commit to the environment waiting, and
/// lets rows that only refer to it (usage, plans) be written meanwhile.
pub(super) async fn lock(
    pool: Pool,
    database: String,
    environment: String,
    runtime: tokio::runtime::Handle,
) -> Result<(Begun, Held), StoreError> {
    let fail = |e| failed(&database, e);
    let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
    let lock = client
        .prepare_cached(
            "SELECT revision, record::text, plan_writes FROM environments WHERE key = $1
             FOR NO KEY UPDATE",
        )
        .await
        .map_err(fail)?;
    let tx = Begun {
        client: Some(client),
        runtime,
    };
    let (begun, locked) = futures_util::future::join(
        tx.client().batch_execute(BEGIN),
        tx.client().query(&lock, &[&environment]),
    )
    .await;
    begun.map_err(fail)?;
    let locked = locked.map_err(fail)?;
    let Some(row) = locked.first() else {
        return Err(StoreError::NoEnvironment(environment));
    };
    Ok((
        tx,
        Held {
            revision: row.get(0),
            record: row.get(1),
            plan_writes: row.get(2),
        },
    ))
}

/// What an environment's locked row holds.
pub(super) struct Held {
    pub(super) revision: i64,
    /// The environment's record, as JSON.
    pub(super) record: String,
    /// How many plan writes it has had (`flagstaff_put_plan`).
    pub(super) plan_writes: i64,
}

/// The change-log entries of `environment` above `since`, oldest first, read in `tx`.
pub(super) async fn logged_since(
    tx: &Begun,
    database: &str,
    environment: &str,
    since: i64,
) -> Result<Vec<String>, StoreError> {
    let rows = tx
        .client()
        .query(
            "SELECT change::text FROM changes WHERE environment = $1 AND revision > $2
             ORDER BY revision",
            &[&environment, &since],
        )
        .await
        .map_err(|e| failed(database, e))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Commits `c` in `tx`, which locked its environment's row and found `locked` there (see
/// [`Store::commit`](crate::storage::Store::commit)): `committing` is set once `COMMIT` is
/// on its way, after which a lost answer means the outcome is unknown.
pub(super) async fn finish(
    tx: Begun,
    database: String,
    c: Commit,
    locked: String,
    committing: Arc<AtomicBool>,
) -> Result<(), StoreError> {
    let fail = |e| failed(&database, e);
    // The record as locked, with the new revision.
    let what = format!("environments/{}", c.environment);
    let record = EnvironmentRecord {
        revision: revision_of(c.revision),
        ..decode::<EnvironmentRecord>(&what, locked.as_bytes())?
    };
    let record_json = json(&record);
    let subjects = subjects(&c.audit);
    let pending = statements(&c, &record_json, &subjects);
    let payload = format!("{}:{}", c.environment, c.revision);
    let outcome = write_and_commit(tx.client(), &pending, &payload, &committing)
        .await
        .map_err(fail)?;
    settle(tx, database, &c.environment, outcome, &payload)
}

/// What a commit's [`Outcome`] means: refused by the database (nothing committed),
/// committed, or unknown. `tx` ends here.
fn settle(
    tx: Begun,
    database: String,
    environment: &str,
    outcome: Outcome,
    payload: &str,
) -> Result<(), StoreError> {
    let fail = |e| failed(&database, e);
    let Outcome {
        written,
        committed,
        notified,
    } = outcome;
    match (written, committed) {
        (Ok(()), Ok(())) => {}
        // Refused by the database for what a statement did: the transaction was aborted and
        // COMMIT rolled it back. The first error is the cause; later ones say "aborted".
        (Err(e), _) if e.as_db_error().is_some() => return Err(refused(&database, environment, e)),
        // COMMIT refused for what the transaction did (a deferred constraint, a
        // serialization failure): nothing committed.
        (Ok(()), Err(e))
            if e.as_db_error()
                .is_some_and(|db| rolled_back_class(db.code())) =>
        {
            return Err(fail(e))
        }
        // The connection broke, or the server failed, after COMMIT was sent: it may or may
        // not have taken.
        (Err(e), _) | (Ok(()), Err(e)) => {
            tracing::warn!(error = %with_sources(&e), "the outcome of a commit is unknown");
            return Err(StoreError::OutcomeUnknown { database });
        }
    }
    drop(tx.ended());
    // Other flagstaffd processes on the database learn of the revision. A lost notification
    // costs them no more than their periodic look at the change log.
    if let Err(e) = notified {
        tracing::warn!(error = %e, payload, "cannot notify a commit");
    }
    Ok(())
}

/// A statement's refusal: a lease no longer held and a plan changed meanwhile (raised by
/// migration 0002's functions) are told apart from other refusals.
fn refused(database: &str, environment: &str, e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if db.code().code() == "FS001" => StoreError::LeaseLost,
        Some(db) if db.code().code() == "FS002" => StoreError::PlanConflict {
            environment: environment.to_owned(),
            flag: db.detail().unwrap_or_default().to_owned(),
        },
        _ => failed(database, e),
    }
}

/// How the statements of a commit went (the first error), how `COMMIT` went, and how the
/// notification after it went.
struct Outcome {
    written: Result<(), tokio_postgres::Error>,
    committed: Result<(), tokio_postgres::Error>,
    notified: Result<u64, tokio_postgres::Error>,
}

/// Sends the statements of `pending`, `COMMIT` and then `SELECT pg_notify(…, payload)` at once
/// on `client`'s transaction, and answers how each went; fails before anything is committed
/// when a statement cannot be prepared or sent.
///
/// The notification is sent with the commit, not after its answer, so that it costs no round
/// trip of its own; it runs after `COMMIT` in a transaction of its own (a NOTIFY inside the
/// commit's transaction would serialise every commit of the cluster). Should `COMMIT` fail,
/// listeners are told of a revision that is not in the change log, and find nothing new.
async fn write_and_commit(
    client: &Object,
    pending: &[Op<'_>],
    payload: &str,
    committing: &AtomicBool,
) -> Result<Outcome, tokio_postgres::Error> {
    let mut prepared = Vec::with_capacity(pending.len());
    for (sql, _) in pending {
        prepared.push(client.prepare_cached(sql).await?);
    }
    let notify = client.prepare_cached("SELECT pg_notify($1, $2)").await?;
    let mut writes: Vec<_> = pending
        .iter()
        .zip(&prepared)
        .map(|((_, params), statement)| {
            Box::pin(client.execute_raw(statement, params.iter().copied()))
        })
        .collect();
    let mut early = send_all(&mut writes).await;
    // A statement that failed before it was sent (its parameters would not encode) fails
    // the commit before COMMIT is sent: the transaction rolls back.
    if let Some(Err(e)) = early.iter_mut().find_map(|r| r.take_if(|r| r.is_err())) {
        return Err(e);
    }
    committing.store(true, Ordering::SeqCst);
    let mut commit = Box::pin(client.batch_execute("COMMIT"));
    let notice: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&NOTIFY_CHANNEL, &payload];
    let mut notified = Box::pin(client.execute(&notify, &notice));
    let (commit_early, notified_early) = futures_util::future::poll_fn(|cx| {
        // In this order: COMMIT, then the notification.
        let commit = commit.as_mut().poll(cx);
        Poll::Ready((commit, notified.as_mut().poll(cx)))
    })
    .await;
    let mut written = Ok(());
    for (write, done) in writes.iter_mut().zip(early) {
        let result = match done {
            Some(result) => result,
            None => write.await,
        };
        if let (Err(e), Ok(())) = (result, &written) {
            written = Err(e);
        }
    }
    let committed = match commit_early {
        Poll::Ready(result) => result,
        Poll::Pending => commit.await,
    };
    let notified = match notified_early {
        Poll::Ready(result) => result,
        Poll::Pending => notified.await,
    };
    Ok(Outcome {
        written,
        committed,
        notified,
    })
}

/// Polls each of `requests` once, in order, which sends them in that order; answers what
/// each that finished already returned (one that failed before it was sent, or a closed
/// connection).
async fn send_all<F: Future + Unpin>(requests: &mut [F]) -> Vec<Option<F::Output>> {
    futures_util::future::poll_fn(|cx| {
        let done = requests
            .iter_mut()
            .map(|request| match Pin::new(request).poll(cx) {
                Poll::Ready(output) => Some(output),
                Poll::Pending => None,
            })
            .collect();
        Poll::Ready(done)
    })
    .await
}

/// A transaction begun by hand, so that `BEGIN` travels with the statement after it instead
/// of costing a round trip. Dropped before it ended (from any thread), it is rolled back by
/// a task of its own, which then returns the connection to the pool (or, if the rollback
/// fails, closes it).
pub(super) struct Begun {
    client: Option<Object>,
    /// The store's runtime, where a rollback runs.
    runtime: tokio::runtime::Handle,
}

impl Begun {
    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a transaction holds its connection until it ends")
    }

    /// The connection, once `COMMIT` was answered.
    fn ended(mut self) -> Object {
        self.client
            .take()
            .expect("a transaction holds its connection until it ends")
    }
}

impl Drop for Begun {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        self.runtime.spawn(async move {
            if client.batch_execute("ROLLBACK").await.is_err() {
                drop(Object::take(client));
            }
        });
    }
}
