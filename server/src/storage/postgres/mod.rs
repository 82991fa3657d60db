//! [`Store`] on PostgreSQL 13 or newer (DESIGN.md section 7; docs/storage.md has the schema).
//!
//! The store talks to the database with tokio-postgres through a deadpool pool, on a small
//! runtime of its own: [`Store`]'s methods block, and are called from blocking threads, from
//! the server's start-up and from command-line tools, so each one hands its work to that
//! runtime and waits for the answer, which works from any thread. Every call is bounded by
//! [`CALL_TIMEOUT`]: a database that does not answer makes the call fail with
//! [`StoreError::Unavailable`], never hang.
//!
//! A commit is one transaction: it locks the environment's row (`SELECT … FOR UPDATE`),
//! checks the revision, writes the documents, the change-log row and the audit row, and
//! moves the revision; after it, `pg_notify` tells whoever listens on [`NOTIFY_CHANNEL`]. When
//! the connection is lost after COMMIT was sent, nobody can tell whether it took effect: that
//! is [`StoreError::OutcomeUnknown`].

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod backup;
mod commit;
mod instances;
mod lease;
mod listen;
mod tls;

use self::backup::{dump_records, write_restored};
use self::commit::{Begun, Commit, KeyRows};
use self::tls::MakeRustlsConnect;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use flagstaff_engine::{Flag, Segment};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use super::{
    decode, encode, read_record, Announcements, AuditEntry, AuditHead, BackupRecord, Change,
    Damage, Documents, EnvironmentRecord, FlagUsage, GuardTally, Instance, Leadership, Lease,
    Locked, Readable, RestoredEnvironment, RolloutRecord, SessionRecord, Store, StoreError,
    TokenKey, TokenRecord, TICKET_KEY, TICKET_KEY_BYTES,
};

/// The migrations, in order: version, name, SQL. Each one the database has not recorded is
/// applied, in this order, so versions need not be consecutive (one numbered below another
/// already applied is still applied). A database at a version above the last is refused (a
/// newer flagstaffd migrated it).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (2, "duties", include_str!("migrations/0002_duties.sql")),
    (
        3,
        "instances",
        include_str!("migrations/0003_instances.sql"),
    ),
    (4, "sessions", include_str!("migrations/0004_sessions.sql")),
];

/// Adds each flag's evaluations (`$3`, as text) to its stored usage, and keeps the later of its
/// last evaluations (`$4`): read and written in one statement, so that reports several
/// flagstaffd add at once all count. The record is written as the codec writes it; a stored
/// count that is not a number starts again from this report.
const ADD_USAGE: &str = "
    INSERT INTO flag_usage (environment, flag, usage)
    SELECT $1, flag, format('{\"evaluations\":%s,\"last_evaluated_ms\":%s}',
                            evaluations::numeric, last::numeric)::json
    FROM unnest($2::text[], $3::text[], $4::text[]) AS u (flag, evaluations, last)
    WHERE EXISTS (SELECT 1 FROM environments WHERE key = $1)
    ON CONFLICT (environment, flag) DO UPDATE SET usage = format(
        '{\"evaluations\":%s,\"last_evaluated_ms\":%s}',
        least(
            CASE WHEN json_typeof(flag_usage.usage->'evaluations') = 'number'
                 THEN (flag_usage.usage->>'evaluations')::numeric ELSE 0 END
            + (EXCLUDED.usage->>'evaluations')::numeric,
            18446744073709551615),
        greatest(
            CASE WHEN json_typeof(flag_usage.usage->'last_evaluated_ms') = 'number'
                 THEN (flag_usage.usage->>'last_evaluated_ms')::numeric ELSE 0 END,
            (EXCLUDED.usage->>'last_evaluated_ms')::numeric))::json";

/// The advisory lock held while migrating, so replicas starting together do not race.
const MIGRATION_LOCK: i64 = 0x666c_6167_7374_6166; // "flagstaf"

/// The channel every commit is notified on, as `<environment>:<revision>`.
pub const NOTIFY_CHANNEL: &str = "flagstaff";

/// The longest any one call of the store waits for the database.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long opening a connection may take, unless the connection string says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool.
const POOL_SIZE: usize = 16;

/// A pooled connection not lent for this long is checked with a round trip (waiting at most as
/// long) before it is lent again,
/// so that one whose peer vanished without closing it (a network cut, a failover) is replaced
/// instead of failing the request that drew it. Busy connections skip the check: under load
/// it would be a round trip of every call.
const VERIFY_IDLE: Duration = Duration::from_secs(1);

/// The PostgreSQL-backed store.
pub struct PgStore {
    pool: Pool,
    /// Runs the pool's connections and the calls' work; shut down (without waiting) on drop.
    runtime: Option<tokio::runtime::Runtime>,
    /// Where the database is, for messages: `host:port/database`, never the password.
    database: String,
    /// How to connect, for the connection that listens for other processes' commits.
    config: Arc<tokio_postgres::Config>,
    /// TLS for those connections, when the URL asks for it.
    tls: Option<MakeRustlsConnect>,
    retention: u64,
    /// Names this flagstaffd as the holder of the leader's lease: random per process.
    holder: String,
    /// The task holding the lease, once [`Store::lead`] started it: it gives the lease up
    /// and ends when nobody follows the leadership any more.
    leading: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.database)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which may not be done from async code.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `host:port/database` of a connection string, for messages.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// Why a database call failed, as a [`StoreError`]: the database unreachable or the
/// connection lost is [`StoreError::Unavailable`]; anything the database itself refused is
/// [`StoreError::Postgres`].
fn failed(database: &str, err: tokio_postgres::Error) -> StoreError {
    match err.as_db_error() {
        // The database going away or not taking connections: connection exceptions (08),
        // insufficient resources (53), operator intervention such as a shutdown (57), system
        // errors (58). Nothing of the call took effect.
        Some(db) if unavailable_class(db.code()) => StoreError::Unavailable {
            database: database.to_owned(),
            detail: format!("{}: {}", db.code().code(), db.message()),
        },
        // Another commit held the environment longer than a commit waits (lock_timeout).
        Some(db) if db.code() == &tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE => {
            StoreError::Unavailable {
                database: database.to_owned(),
                detail: format!(
                    "{}: another commit held the environment too long; nothing was changed: retry",
                    db.code().code()
                ),
            }
        }
        // Chosen by the database to end a deadlock, or a conflict between concurrent
        // transactions (an SDK's instances written while their environment is deleted):
        // rolled back, nothing changed, worth retrying.
        Some(db)
            if db.code() == &tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                || db.code() == &tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE =>
        {
            StoreError::Unavailable {
                database: database.to_owned(),
                detail: format!(
                    "{}: {}; nothing was changed: retry",
                    db.code().code(),
                    db.message()
                ),
            }
        }
        Some(db) => StoreError::Postgres {
            database: database.to_owned(),
            detail: format!("{}: {}", db.code().code(), db.message()),
        },
        None => StoreError::Unavailable {
            database: database.to_owned(),
            detail: with_sources(&err),
        },
    }
}

/// Whether an error of this SQLSTATE means the database is unavailable rather than that it
/// refused the statement.
fn unavailable_class(code: &tokio_postgres::error::SqlState) -> bool {
    matches!(&code.code()[..2], "08" | "53" | "57" | "58")
}

/// Whether a COMMIT that failed with this SQLSTATE surely committed nothing: the transaction
/// was rolled back for what it did (a serialization failure or deadlock, a constraint, an
/// error raised by a trigger). Anything else, such as the server shutting down while it
/// waited for a standby, may have come after the commit took effect.
fn rolled_back_class(code: &tokio_postgres::error::SqlState) -> bool {
    matches!(&code.code()[..2], "40" | "23" | "P0" | "25" | "2D")
}

/// An error's message followed by its causes': "error connecting to server: Connection
/// refused (os error 111)".
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

fn pool_failed(database: &str, err: deadpool_postgres::PoolError) -> StoreError {
    match err {
        deadpool_postgres::PoolError::Backend(e) => failed(database, e),
        other => StoreError::Unavailable {
            database: database.to_owned(),
            detail: with_sources(&other),
        },
    }
}

/// `err`, when it is the database's certificate that was not trusted, followed by what it
/// is verified against: rustls' reason ("invalid peer certificate: UnknownIssuer") alone does
/// not say which option to look at.
fn with_trust(err: StoreError, ca: Option<&Path>) -> StoreError {
    match err {
        StoreError::Unavailable { database, detail }
            if detail.contains("invalid peer certificate") =>
        {
            let anchors = match ca {
                Some(path) => format!("the CA certificates of --database-ca {}", path.display()),
                None => "the system's roots (--database-ca names a CA of its own)".to_owned(),
            };
            StoreError::Unavailable {
                database,
                detail: format!(
                    "{detail}; the database's certificate is verified against {anchors}, \
                     and must name the host of the database URL"
                ),
            }
        }
        other => other,
    }
}

/// A revision as PostgreSQL's `bigint`.
fn sql_revision(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// A `bigint` revision read back.
fn revision_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The JSON text of a value, as the `json` columns take it.
fn json<T: serde::Serialize>(value: &T) -> String {
    String::from_utf8(encode(value)).unwrap_or_default()
}

/// A segment's document as the `segments` table keeps it: without its key lists.
fn without_keys(segment: &Segment) -> Segment {
    Segment {
        included: Vec::new(),
        excluded: Vec::new(),
        ..segment.clone()
    }
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://…` connection string), applies the
    /// migrations it lacks under an advisory lock, and keeps `retention` change-log entries
    /// per environment. Fails when the database cannot be reached (after the connection
    /// string's `connect_timeout`, 5 s unless it says otherwise), or holds a schema newer than
    /// this flagstaffd knows.
    ///
    /// With `sslmode=require` in `url` the connections use TLS, and the database's certificate
    /// is verified (chain and host name) against the PEM certificates of the file `ca`, or the
    /// system's roots without it; `ca` without `sslmode=require` is refused. Any other
    /// `sslmode` (`prefer`, the default, or `disable`) connects in plain text.
    pub fn open(url: &str, ca: Option<&Path>, retention: u64) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(url, ca, retention)?;
        store.migrate()?;
        Ok(store)
    }

    /// Connects without migrating: for `flagstaffd migrate`, which migrates and reports.
    pub fn connect(url: &str, ca: Option<&Path>, retention: u64) -> Result<PgStore, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            // libpq's verifying modes, which tokio-postgres does not know: `require` is the one
            // that verifies here.
            let hint = if url.contains("sslmode=verify-") {
                " (use sslmode=require: flagstaffd verifies the database's certificate and host \
                 name as libpq's verify-full does)"
            } else {
                ""
            };
            StoreError::Invalid {
                detail: format!(
                    "the database URL is not a PostgreSQL connection string: {e}{hint}"
                ),
            }
        })?;
        let tls = match (config.get_ssl_mode(), ca) {
            (SslMode::Require, ca) => Some(MakeRustlsConnect::new(ca)?),
            // A CA given for a connection that would not be verified, or not be TLS at all
            // (`prefer` goes on in plain text when TLS is not offered): refused, rather than
            // leaving the operator believing the connection is verified.
            (_, Some(path)) => {
                return Err(StoreError::Invalid {
                    detail: format!(
                        "--database-ca {} is for TLS to the database, but the database URL does \
                         not ask for TLS: add sslmode=require to it",
                        path.display()
                    ),
                })
            }
            // `prefer` stays plain text: trying TLS without verifying it would guard against
            // nothing, and would start failing on databases whose certificate is self-signed
            // (as a default Debian install's is).
            (_, None) => None,
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("flagstaffd");
        }
        let database = describe(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable {
                database: database.clone(),
                detail: format!("cannot start the database runtime: {e}"),
            })?;
        // A connection whose socket closed (the database restarted) is replaced before it is
        // lent; one idle for a while is also checked with a round trip (below).
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(config.clone(), tls.clone(), manager_config),
            None => Manager::from_config(config.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .pre_recycle(Hook::async_fn(|client, metrics| {
                let idle = metrics.last_used() > VERIFY_IDLE;
                Box::pin(async move {
                    if idle {
                        // A connection whose peer vanished does not answer at all.
                        match tokio::time::timeout(VERIFY_IDLE, client.simple_query("")).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => return Err(HookError::Message(e.to_string().into())),
                            Err(_) => return Err(HookError::Message("no answer".into())),
                        }
                    }
                    Ok(())
                })
            }))
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Unavailable {
                database: database.clone(),
                detail: e.to_string(),
            })?;
        let store = PgStore {
            pool,
            runtime: Some(runtime),
            database,
            config: Arc::new(config),
            tls,
            retention: retention.max(1),
            holder: crate::storage::random_id(),
            leading: std::sync::Mutex::new(None),
        };
        // Reachable now, or a clear error now rather than at the first request.
        store
            .call(|pool, database| async move {
                let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
                client
                    .simple_query("SELECT 1")
                    .await
                    .map_err(|e| failed(&database, e))?;
                Ok(())
            })
            .map_err(|e| with_trust(e, ca))?;
        Ok(store)
    }

    /// Where the database is: `host:port/database`.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Applies the migrations the database lacks, in one transaction under an advisory
    /// lock; returns the schema versions applied (none when it was up to date).
    pub fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        self.call(|pool, database| async move {
            let mut client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| failed(&database, e))?;
            let fail = |e| failed(&database, e);
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(fail)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(fail)?;
            let recorded: Vec<i32> = tx
                .query("SELECT version FROM schema_migrations", &[])
                .await
                .map_err(fail)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let current = recorded.iter().copied().max().unwrap_or(0);
            let known = MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
            if current > known {
                return Err(StoreError::Invalid {
                    detail: format!(
                        "the database {database} has schema version {current}, newer than the \
                         {known} this flagstaffd knows: run a newer flagstaffd"
                    ),
                });
            }
            let mut applied = Vec::new();
            let missing = MIGRATIONS.iter().filter(|m| !recorded.contains(&m.0));
            for (version, name, sql) in missing {
                tx.batch_execute(sql).await.map_err(fail)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    &[version, name],
                )
                .await
                .map_err(fail)?;
                applied.push(*version);
            }
            tx.commit().await.map_err(fail)?;
            Ok(applied)
        })
    }

    /// Runs `work` on the store's runtime with a pooled database and waits for its answer,
    /// at most [`CALL_TIMEOUT`].
    fn call<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Pool, String) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.call_committing(None, work)
    }

    /// [`call`](Self::call) for work that commits: when it runs out of time after
    /// `committing` was set (COMMIT sent), the outcome is unknown.
    fn call_committing<T, F, Fut>(
        &self,
        committing: Option<Arc<AtomicBool>>,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Pool, String) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.call_with(committing, Some(CALL_TIMEOUT), work)
    }

    /// [`call_committing`](Self::call_committing) bounded by `timeout` instead, or not at
    /// all.
    fn call_with<T, F, Fut>(
        &self,
        committing: Option<Arc<AtomicBool>>,
        timeout: Option<std::time::Duration>,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Pool, String) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(self.unavailable("the store is closed"));
        };
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let database = self.database.clone();
        let work = work(self.pool.clone(), self.database.clone());
        runtime.spawn(async move {
            let limit = timeout.unwrap_or(std::time::Duration::MAX);
            let result = match tokio::time::timeout(limit, work).await {
                Ok(result) => result,
                Err(_) => match committing {
                    Some(c) if c.load(Ordering::SeqCst) => {
                        Err(StoreError::OutcomeUnknown { database })
                    }
                    _ => Err(StoreError::Unavailable {
                        database,
                        detail: format!("no answer within {limit:?}"),
                    }),
                },
            };
            let _ = answer.send(result);
        });
        answered
            .recv()
            .unwrap_or_else(|_| Err(self.unavailable("the store's runtime stopped")))
    }

    /// The store's runtime, for work that outlives a call.
    fn handle(&self) -> Result<tokio::runtime::Handle, StoreError> {
        match &self.runtime {
            Some(runtime) => Ok(runtime.handle().clone()),
            None => Err(self.unavailable("the store is closed")),
        }
    }

    fn unavailable(&self, detail: &str) -> StoreError {
        StoreError::Unavailable {
            database: self.database.clone(),
            detail: detail.to_owned(),
        }
    }

    /// Rows of `sql` (with `params` made inside the task by `params`), as read by `read`.
    fn rows<T, R>(
        &self,
        sql: &'static str,
        params: Vec<Param>,
        read: R,
    ) -> Result<Vec<T>, StoreError>
    where
        T: Send + 'static,
        R: Fn(&tokio_postgres::Row) -> T + Send + 'static,
    {
        self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(Param::as_sql).collect();
            let rows = client
                .query(sql, &refs)
                .await
                .map_err(|e| failed(&database, e))?;
            Ok(rows.iter().map(read).collect())
        })
    }

    /// [`Store::dump`] (`only` = `None`) or [`Store::dump_environment`].
    fn dump_where(
        &self,
        only: Option<String>,
        visit: &mut dyn FnMut(BackupRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(self.unavailable("the store is closed"));
        };
        // Records flow to this thread as they are read; a backup is not bounded by
        // CALL_TIMEOUT, only by the database's own timeouts.
        let (out, records) = std::sync::mpsc::sync_channel(256);
        let (pool, database) = (self.pool.clone(), self.database.clone());
        runtime.spawn(async move {
            if let Err(e) = dump_records(pool, database, &out, only).await {
                // The reader may have stopped first; then nobody needs the error.
                tokio::task::block_in_place(|| out.send(Err(e)).is_ok());
            }
        });
        for record in records {
            match record? {
                Some(record) => visit(record)?,
                None => return Ok(()),
            }
        }
        Err(self.unavailable("reading the backup stopped before its end"))
    }

    /// Audit entries of `environment` touching `subject` (kind and key) when given, newest
    /// first, below `before`, at most `limit`.
    fn history_of(
        &self,
        environment: &str,
        subject: Option<(&'static str, &str)>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.environment(environment)?;
        let before = Param::Int(before.map_or(i64::MAX, sql_revision));
        let limit = Param::Int(i64::try_from(limit).unwrap_or(i64::MAX));
        let env = Param::Text(environment.to_owned());
        let texts = match subject {
            None => self.rows(
                "SELECT entry::text FROM audit WHERE environment = $1 AND revision < $2
                 ORDER BY revision DESC LIMIT $3",
                vec![env, before, limit],
                |row| row.get::<_, String>(0),
            )?,
            Some((kind, key)) => self.rows(
                "SELECT a.entry::text FROM audit_subjects s
                 JOIN audit a ON a.environment = s.environment AND a.revision = s.revision
                 WHERE s.environment = $1 AND s.kind = $4 AND s.key = $5 AND s.revision < $2
                 ORDER BY s.revision DESC LIMIT $3",
                vec![
                    env,
                    before,
                    limit,
                    Param::Text(kind.to_owned()),
                    Param::Text(key.to_owned()),
                ],
                |row| row.get::<_, String>(0),
            )?,
        };
        texts
            .iter()
            .map(|t| decode(&format!("audit/{environment}"), t.as_bytes()))
            .collect()
    }
}

/// Revisions one query of [`Store::audit_heads`] asks for.
const AUDIT_HEADS_PER_QUERY: usize = 5_000;

/// A query parameter owned by the task that sends it.
enum Param {
    Text(String),
    Int(i64),
}

impl Param {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Text(t) => t,
            Param::Int(i) => i,
        }
    }
}

/// Tells other flagstaffd processes on the database, if `changed`, that `what` changed
/// ([`listen::ENVIRONMENTS`], [`listen::TOKENS`]), on `client` after what it wrote. A lost
/// notification costs them no more than their periodic look.
async fn announce(client: &deadpool_postgres::Object, changed: bool, what: &'static str) {
    if !changed {
        return;
    }
    let notified = client
        .execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &what])
        .await;
    if let Err(e) = notified {
        tracing::warn!(error = %e, what, "cannot notify a change");
    }
}

/// Adds a report's guard counts to the stored ones of the same flag version (saturating at
/// the largest `bigint`, as counts in memory saturate), starts them again for a newer
/// version, and leaves them for an older one (no row returned then).
const ADD_GUARD_COUNTS: &str = "INSERT INTO guard_counts AS g (environment, flag, flag_version,
         target_weight, baseline_weight, target_exposures, baseline_exposures, target_events,
         baseline_events)
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS
         (SELECT 1 FROM environments WHERE key = $1)
     ON CONFLICT (environment, flag) DO UPDATE SET
         target_weight = EXCLUDED.target_weight,
         baseline_weight = EXCLUDED.baseline_weight,
         target_exposures = LEAST(EXCLUDED.target_exposures::numeric
             + CASE WHEN g.flag_version = EXCLUDED.flag_version THEN g.target_exposures ELSE 0 END,
             9223372036854775807)::bigint,
         baseline_exposures = LEAST(EXCLUDED.baseline_exposures::numeric
             + CASE WHEN g.flag_version = EXCLUDED.flag_version THEN g.baseline_exposures ELSE 0 END,
             9223372036854775807)::bigint,
         target_events = LEAST(EXCLUDED.target_events::numeric
             + CASE WHEN g.flag_version = EXCLUDED.flag_version THEN g.target_events ELSE 0 END,
             9223372036854775807)::bigint,
         baseline_events = LEAST(EXCLUDED.baseline_events::numeric
             + CASE WHEN g.flag_version = EXCLUDED.flag_version THEN g.baseline_events ELSE 0 END,
             9223372036854775807)::bigint,
         flag_version = EXCLUDED.flag_version
     WHERE g.flag_version <= EXCLUDED.flag_version
     RETURNING flag_version, target_weight, baseline_weight, target_exposures,
               baseline_exposures, target_events, baseline_events";

/// A guard tally as the columns of `guard_counts`, from `flag_version` on.
fn guard_row(t: &GuardTally) -> [i64; 7] {
    let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    [
        big(t.flag_version),
        i64::from(t.target_weight),
        i64::from(t.baseline_weight),
        big(t.target_exposures),
        big(t.baseline_exposures),
        big(t.target_events),
        big(t.baseline_events),
    ]
}

/// The guard tally in `row`'s columns from `first` on (in [`guard_row`]'s order).
fn tally_of(row: &tokio_postgres::Row, first: usize) -> GuardTally {
    let count = |i: usize| u64::try_from(row.get::<_, i64>(first + i)).unwrap_or(0);
    let weight = |i: usize| u32::try_from(row.get::<_, i64>(first + i)).unwrap_or(0);
    GuardTally {
        flag_version: count(0),
        target_weight: weight(1),
        baseline_weight: weight(2),
        target_exposures: count(3),
        baseline_exposures: count(4),
        target_events: count(5),
        baseline_events: count(6),
    }
}

/// An environment's row locked in an open transaction, for one commit.
struct PgLocked<'a> {
    store: &'a PgStore,
    environment: String,
    /// `None` once a call on it failed: the transaction is gone.
    tx: Option<Begun>,
    revision: i64,
    epoch: String,
    /// The environment's record as locked.
    record: String,
    /// How many plan writes the environment has had.
    plan_writes: u64,
    /// The lease the commit is a duty of.
    lease: Option<Lease>,
}

impl PgLocked<'_> {
    fn take(&mut self) -> Result<Begun, StoreError> {
        self.tx
            .take()
            .ok_or_else(|| self.store.unavailable("the commit's transaction was lost"))
    }
}

impl Locked for PgLocked<'_> {
    fn revision(&self) -> u64 {
        revision_of(self.revision)
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn changes_since(&mut self, revision: u64) -> Result<Option<Vec<Change>>, StoreError> {
        let tx = self.take()?;
        let (env, since) = (self.environment.clone(), sql_revision(revision));
        let (tx, texts) = self.store.call(move |_, database| async move {
            let texts = commit::logged_since(&tx, &database, &env, since).await?;
            Ok((tx, texts))
        })?;
        self.tx = Some(tx);
        let entries: Vec<Change> = texts
            .iter()
            .map(|t| decode(&format!("changes/{}", self.environment), t.as_bytes()))
            .collect::<Result<_, _>>()?;
        Ok(complete(entries, revision, self.revision()))
    }

    fn hold(&mut self, lease: Lease) {
        self.lease = Some(lease);
    }

    fn plan_writes(&self) -> u64 {
        self.plan_writes
    }

    fn commit(
        mut self: Box<Self>,
        change: &Change,
        patched: &[Segment],
        audit: &AuditEntry,
        rollouts: &[RolloutRecord],
    ) -> Result<(), StoreError> {
        if change.revision != self.revision() + 1 {
            return Err(StoreError::RevisionConflict {
                environment: self.environment.clone(),
                expected: change.revision.saturating_sub(1),
                actual: self.revision(),
            });
        }
        let mut commit = commit_of(
            &self.environment,
            change,
            patched,
            audit,
            rollouts,
            self.store.retention,
        );
        commit.lease = self.duty();
        let tx = self.take()?;
        let record = std::mem::take(&mut self.record);
        let committing = Arc::new(AtomicBool::new(false));
        let sent = committing.clone();
        self.store
            .call_committing(Some(committing), move |_, database| {
                commit::finish(tx, database, commit, record, sent)
            })
    }

    fn commit_plans(mut self: Box<Self>, rollouts: &[RolloutRecord]) -> Result<(), StoreError> {
        let plans = commit::Plans {
            environment: self.environment.clone(),
            plans: rollouts.iter().map(plan_row).collect(),
            lease: self.duty(),
        };
        let tx = self.take()?;
        let committing = Arc::new(AtomicBool::new(false));
        let sent = committing.clone();
        self.store
            .call_committing(Some(committing), move |_, database| {
                commit::finish_plans(tx, database, plans, sent)
            })
    }
}

impl PgLocked<'_> {
    /// The lease to check in the commit, with this flagstaffd's name: `None` unless a duty.
    fn duty(&self) -> Option<(String, i64)> {
        self.lease.map(|lease| {
            let generation = i64::try_from(lease.generation).unwrap_or(i64::MAX);
            (self.store.holder.clone(), generation)
        })
    }
}

/// A plan as a commit writes it: flag, document, and the version the stored plan must be at.
fn plan_row(plan: &RolloutRecord) -> (String, String, i64) {
    let expected = i64::try_from(plan.version.saturating_sub(1)).unwrap_or(i64::MAX);
    (plan.flag.clone(), json(plan), expected)
}

/// What [`Commit`] writes for `change` to `environment`.
fn commit_of(
    environment: &str,
    change: &Change,
    patched: &[Segment],
    audit: &AuditEntry,
    rollouts: &[RolloutRecord],
    retention: u64,
) -> Commit {
    let patches: std::collections::HashMap<&str, &flagstaff_engine::KeyPatch> = change
        .segment_patches
        .iter()
        .map(|p| (p.segment.as_str(), p))
        .collect();
    Commit {
        environment: environment.to_owned(),
        revision: sql_revision(change.revision),
        flags: change
            .flags
            .iter()
            .map(|f| (f.key.clone(), json(f)))
            .collect(),
        deleted_flags: change.deleted_flags.clone(),
        segments: change
            .segments
            .iter()
            .map(|s| (s.key.clone(), json(&without_keys(s)), KeyRows::of(s)))
            .collect(),
        deleted_segments: change.deleted_segments.clone(),
        patched: patched
            .iter()
            .filter_map(|s| {
                let patch = patches.get(s.key.as_str())?;
                Some((s.key.clone(), json(&without_keys(s)), (*patch).clone()))
            })
            .collect(),
        rollouts: rollouts.iter().map(plan_row).collect(),
        lease: None,
        change: json(change),
        audit: audit.clone(),
        audit_json: json(audit),
        audit_time: i64::try_from(audit.time_ms).unwrap_or(i64::MAX),
        trim_below: sql_revision(change.revision)
            .saturating_sub(i64::try_from(retention).unwrap_or(i64::MAX)),
    }
}

/// `entries`, the change log above `revision` of an environment at `current`, when it holds
/// every change since `revision`; `None` when some are no longer retained.
fn complete(entries: Vec<Change>, revision: u64, current: u64) -> Option<Vec<Change>> {
    if current <= revision {
        return Some(Vec::new());
    }
    // Complete only if the first retained entry is the one right after `revision`.
    match entries.first() {
        Some(first) if first.revision == revision + 1 => Some(entries),
        _ => None,
    }
}

/// Reads a segment's documents and key rows back into whole segments, in key order.
fn assemble_segments(
    environment: &str,
    documents: Vec<(String, String)>,
    keys: Vec<(String, String, String)>,
) -> Result<Vec<Segment>, StoreError> {
    let mut segments: Vec<Segment> = documents
        .iter()
        .map(|(key, text)| decode(&format!("segments/{environment}/{key}"), text.as_bytes()))
        .collect::<Result<_, _>>()?;
    let index: std::collections::HashMap<String, usize> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.clone(), i))
        .collect();
    for (segment, list, key) in keys {
        if let Some(&i) = index.get(&segment) {
            match list.as_str() {
                "included" => segments[i].included.push(key),
                _ => segments[i].excluded.push(key),
            }
        }
    }
    Ok(segments)
}

impl Store for PgStore {
    fn environment(&self, environment: &str) -> Result<EnvironmentRecord, StoreError> {
        let found = self.rows(
            "SELECT record::text FROM environments WHERE key = $1",
            vec![Param::Text(environment.to_owned())],
            |row| row.get::<_, String>(0),
        )?;
        match found.first() {
            Some(text) => decode(&format!("environments/{environment}"), text.as_bytes()),
            None => Err(StoreError::NoEnvironment(environment.to_owned())),
        }
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn environment_records(
        &self,
    ) -> Result<Vec<(String, Readable<EnvironmentRecord>)>, StoreError> {
        let rows = self.rows(
            "SELECT key, record::text FROM environments ORDER BY key",
            Vec::new(),
            |row| (row.get::<_, String>(0), row.get::<_, String>(1)),
        )?;
        Ok(rows
            .into_iter()
            .map(|(key, text)| {
                let record =
                    read_record(Some(&key), &format!("environments/{key}"), text.as_bytes());
                (key, record)
            })
            .collect())
    }

    fn check(&self) -> Result<Vec<Damage>, StoreError> {
        // Every JSON record, named as sled names its records: `kind/environment/key`.
        let rows = self.rows(
            "SELECT 'environments', NULL, key, record::text FROM environments
             UNION ALL SELECT 'flags', environment, key, document::text FROM flags
             UNION ALL SELECT 'segments', environment, key, document::text FROM segments
             UNION ALL SELECT 'changes', environment, revision::text, change::text FROM changes
             UNION ALL SELECT 'audit', environment, revision::text, entry::text FROM audit
             UNION ALL SELECT 'rollouts', environment, flag, plan::text FROM rollouts
             UNION ALL SELECT 'usage', environment, flag, usage::text FROM flag_usage
             UNION ALL SELECT 'tokens', NULL, id, record::text FROM tokens
             UNION ALL SELECT 'sessions', NULL, id_hash, record::text FROM console_sessions
             UNION ALL SELECT 'secrets', NULL, name, encode(value, 'hex') FROM secrets",
            Vec::new(),
            |row| {
                (
                    row.get::<_, String>(0),
                    row.get::<_, Option<String>>(1),
                    row.get::<_, String>(2),
                    row.get::<_, String>(3),
                )
            },
        )?;
        let mut damaged = Vec::new();
        for (kind, environment, key, text) in rows {
            let record = match &environment {
                Some(env) => format!("{kind}/{env}/{key}"),
                None => format!("{kind}/{key}"),
            };
            let owner = match kind.as_str() {
                "environments" => Some(key.clone()),
                "tokens" | "secrets" | "sessions" => None,
                _ => environment.clone(),
            };
            let bytes = text.as_bytes();
            let result = match kind.as_str() {
                "environments" => decode::<EnvironmentRecord>(&record, bytes).map(drop),
                "flags" => decode::<Flag>(&record, bytes).map(drop),
                "segments" => decode::<Segment>(&record, bytes).map(drop),
                "changes" => decode::<Change>(&record, bytes).map(drop),
                "audit" => decode::<AuditEntry>(&record, bytes).map(drop),
                "rollouts" => decode::<RolloutRecord>(&record, bytes).map(drop),
                "usage" => decode::<FlagUsage>(&record, bytes).map(drop),
                "tokens" => decode::<TokenRecord>(&record, bytes).map(drop),
                "sessions" => decode::<SessionRecord>(&record, bytes).map(drop),
                _ => {
                    if text.len() == 2 * TICKET_KEY_BYTES {
                        Ok(())
                    } else {
                        Err(StoreError::Corrupt {
                            what: record.clone(),
                            detail: format!("{} bytes, not {TICKET_KEY_BYTES}", text.len() / 2),
                        })
                    }
                }
            };
            if let Err(err) = result {
                damaged.extend(Damage::of(owner.as_deref(), &err));
            }
        }
        damaged.sort_by(|a, b| a.record.cmp(&b.record));
        Ok(damaged)
    }

    fn remove_damaged(&self, damage: &Damage) -> Result<(), StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt {
            what: damage.record.clone(),
            detail: detail.to_owned(),
        };
        let (kind, rest) = damage
            .record
            .split_once('/')
            .ok_or_else(|| corrupt("not a record name"))?;
        let (environment, key) = match kind {
            "tokens" | "secrets" | "sessions" => (String::new(), rest.to_owned()),
            _ => {
                let (env, key) = rest
                    .rsplit_once('/')
                    .ok_or_else(|| corrupt("not a record name"))?;
                (env.to_owned(), key.to_owned())
            }
        };
        let sql = match kind {
            "tokens" => "DELETE FROM tokens WHERE id = $2 AND $1 = ''",
            // A new ticket key is made on next use: outstanding tickets stop working, and
            // OFREP providers fetch a fresh one.
            "secrets" => "DELETE FROM secrets WHERE name = $2 AND $1 = ''",
            // A session removed signs its person out.
            "sessions" => "DELETE FROM console_sessions WHERE id_hash = $2 AND $1 = ''",
            "changes" => "DELETE FROM changes WHERE environment = $1 AND revision::text = $2",
            "rollouts" => "DELETE FROM rollouts WHERE environment = $1 AND flag = $2",
            "usage" => "DELETE FROM flag_usage WHERE environment = $1 AND flag = $2",
            _ => return Err(corrupt("a record of this kind is restored, not removed")),
        };
        self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            client
                .execute(sql, &[&environment, &key])
                .await
                .map_err(|e| failed(&database, e))?;
            Ok(())
        })
    }

    fn put_environment(&self, record: &EnvironmentRecord) -> Result<(), StoreError> {
        let (key, revision, text) = (
            record.key.clone(),
            sql_revision(record.revision),
            json(record),
        );
        self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            client
                .execute(
                    "INSERT INTO environments (key, revision, record) VALUES ($1, $2, $3::text::json)
                     ON CONFLICT (key) DO UPDATE SET revision = EXCLUDED.revision,
                                                     record = EXCLUDED.record",
                    &[&key, &revision, &text],
                )
                .await
                .map_err(|e| failed(&database, e))?;
            announce(&client, true, listen::ENVIRONMENTS).await;
            Ok(())
        })
    }

    fn visit_audit(
        &self,
        environment: &str,
        visit: &mut dyn FnMut(Result<AuditEntry, Damage>),
    ) -> Result<(), StoreError> {
        let rows = self.rows(
            "SELECT revision, entry::text FROM audit WHERE environment = $1 ORDER BY revision",
            vec![Param::Text(environment.to_owned())],
            |row| (row.get::<_, i64>(0), row.get::<_, String>(1)),
        )?;
        for (revision, text) in rows {
            let record = format!("audit/{environment}/{revision}");
            visit(read_record(Some(environment), &record, text.as_bytes()));
        }
        Ok(())
    }

    fn create_environment(&self, record: &EnvironmentRecord) -> Result<(), StoreError> {
        let (key, revision, text) = (
            record.key.clone(),
            sql_revision(record.revision),
            json(record),
        );
        let created = self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            let created = client
                .execute(
                    "INSERT INTO environments (key, revision, record) VALUES ($1, $2, $3::text::json)
                     ON CONFLICT (key) DO NOTHING",
                    &[&key, &revision, &text],
                )
                .await
                .map_err(|e| failed(&database, e))?;
            announce(&client, created > 0, listen::ENVIRONMENTS).await;
            Ok(created)
        })?;
        match created {
            0 => Err(StoreError::EnvironmentExists(record.key.clone())),
            _ => Ok(()),
        }
    }

    fn delete_environment(&self, environment: &str) -> Result<(), StoreError> {
        let key = environment.to_owned();
        let deleted = self.call(move |pool, database| async move {
            let fail = |e| failed(&database, e);
            let mut client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            let tx = client.transaction().await.map_err(fail)?;
            let deleted = tx
                .execute("DELETE FROM environments WHERE key = $1", &[&key])
                .await
                .map_err(fail)?;
            // Its tokens are revoked with it, also those another flagstaffd on the database
            // created that this one has not heard of: a token is created only while its
            // environment's row exists (put_tokens), so none is left working. (Token records
            // are read by field, so jsonb's reordering of their keys is harmless.)
            let revoked = tx
                .execute(
                    "UPDATE tokens
                     SET record = ((record::jsonb || '{\"revoked\": true}') - 'client_secret')::json
                     WHERE record->>'environment' = $1
                       AND NOT coalesce((record->>'revoked')::boolean, false)",
                    &[&key],
                )
                .await
                .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            announce(&client, deleted > 0, listen::ENVIRONMENTS).await;
            announce(&client, revoked > 0, listen::TOKENS).await;
            Ok(deleted)
        })?;
        match deleted {
            0 => Err(StoreError::NoEnvironment(environment.to_owned())),
            _ => Ok(()),
        }
    }

    fn documents(&self, environment: &str) -> Result<Documents, StoreError> {
        let key = environment.to_owned();
        // One REPEATABLE READ transaction: the revision, and the flags, segments and keys of it.
        let (found, flags, segments, keys) = self.call(move |pool, database| async move {
            let fail = |e| failed(&database, e);
            let mut client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(fail)?;
            let found = tx
                .query("SELECT revision FROM environments WHERE key = $1", &[&key])
                .await
                .map_err(fail)?;
            let flags = tx
                .query(
                    "SELECT key, document::text FROM flags WHERE environment = $1 ORDER BY key",
                    &[&key],
                )
                .await
                .map_err(fail)?;
            let segments = tx
                .query(
                    "SELECT key, document::text FROM segments WHERE environment = $1 ORDER BY key",
                    &[&key],
                )
                .await
                .map_err(fail)?;
            let keys = tx
                .query(
                    "SELECT segment, list, key FROM segment_keys WHERE environment = $1
                     ORDER BY segment, list, position",
                    &[&key],
                )
                .await
                .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, String)> {
                rows.iter().map(|r| (r.get(0), r.get(1))).collect()
            };
            let keys: Vec<(String, String, String)> = keys
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let found: Option<i64> = found.first().map(|row| row.get(0));
            Ok((found, pairs(flags), pairs(segments), keys))
        })?;
        let Some(revision) = found else {
            return Err(StoreError::NoEnvironment(environment.to_owned()));
        };
        let flags = flags
            .iter()
            .map(|(k, text)| decode(&format!("flags/{environment}/{k}"), text.as_bytes()))
            .collect::<Result<_, _>>()?;
        let segments = assemble_segments(environment, segments, keys)?;
        Ok(Documents {
            revision: revision_of(revision),
            flags,
            segments,
        })
    }

    fn lock_environment(&self, environment: &str) -> Result<Box<dyn Locked + '_>, StoreError> {
        let runtime = self.handle()?;
        let env = environment.to_owned();
        let (tx, held) =
            self.call(move |pool, database| commit::lock(pool, database, env, runtime))?;
        let what = format!("environments/{environment}");
        let epoch = decode::<EnvironmentRecord>(&what, held.record.as_bytes())?.epoch;
        Ok(Box::new(PgLocked {
            store: self,
            environment: environment.to_owned(),
            tx: Some(tx),
            revision: held.revision,
            epoch,
            record: held.record,
            plan_writes: u64::try_from(held.plan_writes).unwrap_or(0),
            lease: None,
        }))
    }

    fn follow(&self) -> Option<Announcements> {
        let runtime = self.handle().ok()?;
        let (announce, announcements) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(listen::listen(
            (*self.config).clone(),
            self.tls.clone(),
            self.database.clone(),
            announce,
        ));
        Some(announcements)
    }

    fn lead(&self) -> Option<Leadership> {
        let runtime = self.handle().ok()?;
        let (leading, leadership) = tokio::sync::watch::channel(None);
        let task = runtime.spawn(lease::lead(
            (*self.config).clone(),
            self.tls.clone(),
            self.database.clone(),
            self.holder.clone(),
            leading,
        ));
        *self.leading.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Some(leadership)
    }

    fn resign(&self) {
        let Some(task) = self
            .leading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        // The lease task gives the lease up (one statement, at most RENEW) and ends.
        let waited = self.call_with(None, Some(lease::RENEW * 2), move |_, _| async move {
            let _ = task.await;
            Ok(())
        });
        if let Err(e) = waited {
            tracing::warn!(error = %e, "the leader's lease was not given up in time; it expires by itself");
        }
    }

    fn add_guard_counts(
        &self,
        environment: &str,
        flag: &str,
        counts: &GuardTally,
    ) -> Result<Option<GuardTally>, StoreError> {
        let (env, flag) = (environment.to_owned(), flag.to_owned());
        let row = guard_row(counts);
        let sum = self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            let statement = client
                .prepare_cached(ADD_GUARD_COUNTS)
                .await
                .map_err(|e| failed(&database, e))?;
            let [version, tw, bw, te, be, tv, bv] = &row;
            client
                .query_opt(&statement, &[&env, &flag, version, tw, bw, te, be, tv, bv])
                .await
                .map_err(|e| failed(&database, e))
                .map(|row| row.map(|r| tally_of(&r, 0)))
        })?;
        // No row back: the stored counts are of a newer flag version than these.
        Ok(Some(sum.unwrap_or_default()))
    }

    fn guard_counts(&self, environment: &str) -> Result<Vec<(String, GuardTally)>, StoreError> {
        self.rows(
            "SELECT flag, flag_version, target_weight, baseline_weight, target_exposures,
                    baseline_exposures, target_events, baseline_events
             FROM guard_counts WHERE environment = $1 ORDER BY flag",
            vec![Param::Text(environment.to_owned())],
            |row| (row.get::<_, String>(0), tally_of(row, 1)),
        )
    }

    fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let (id, text) = (session.id_hash.clone(), json(session));
        let seen = i64::try_from(session.seen_ms).unwrap_or(i64::MAX);
        self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            client
                .execute(
                    "INSERT INTO console_sessions (id_hash, record, seen_ms)
                     VALUES ($1, $2::text::json, $3)
                     ON CONFLICT (id_hash) DO UPDATE
                     SET record = EXCLUDED.record, seen_ms = EXCLUDED.seen_ms",
                    &[&id, &text, &seen],
                )
                .await
                .map_err(|e| failed(&database, e))
                .map(drop)
        })
    }

    fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let rows = self.rows(
            "SELECT record::text FROM console_sessions WHERE id_hash = $1",
            vec![Param::Text(id_hash.to_owned())],
            |row| row.get::<_, String>(0),
        )?;
        rows.first()
            .map(|text| decode(&format!("console_sessions/{id_hash}"), text.as_bytes()))
            .transpose()
    }

    fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let id = id_hash.to_owned();
        self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            client
                .execute("DELETE FROM console_sessions WHERE id_hash = $1", &[&id])
                .await
                .map_err(|e| failed(&database, e))
                .map(drop)
        })
    }

    fn prune_sessions(&self, seen_before_ms: u64) -> Result<usize, StoreError> {
        let before = i64::try_from(seen_before_ms).unwrap_or(i64::MAX);
        self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            client
                .execute(
                    "DELETE FROM console_sessions WHERE seen_ms < $1",
                    &[&before],
                )
                .await
                .map_err(|e| failed(&database, e))
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn put_rollout(&self, environment: &str, plan: &RolloutRecord) -> Result<(), StoreError> {
        let (env, flag, text) = (environment.to_owned(), plan.flag.clone(), json(plan));
        let written = self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            client
                .execute(
                    "INSERT INTO rollouts (environment, flag, plan)
                     SELECT $1, $2, $3::text::json WHERE EXISTS
                         (SELECT 1 FROM environments WHERE key = $1)
                     ON CONFLICT (environment, flag) DO UPDATE SET plan = EXCLUDED.plan",
                    &[&env, &flag, &text],
                )
                .await
                .map_err(|e| failed(&database, e))
        })?;
        match written {
            0 => Err(StoreError::NoEnvironment(environment.to_owned())),
            _ => Ok(()),
        }
    }

    fn rollouts(&self, environment: &str) -> Result<Vec<RolloutRecord>, StoreError> {
        self.environment(environment)?;
        let rows = self.rows(
            "SELECT flag, plan::text FROM rollouts WHERE environment = $1 ORDER BY flag",
            vec![Param::Text(environment.to_owned())],
            |row| (row.get::<_, String>(0), row.get::<_, String>(1)),
        )?;
        rows.iter()
            .map(|(flag, text)| decode(&format!("rollouts/{environment}/{flag}"), text.as_bytes()))
            .collect()
    }

    fn add_usage(&self, environment: &str, added: &[(&str, FlagUsage)]) -> Result<(), StoreError> {
        if added.is_empty() {
            return Ok(());
        }
        let env = environment.to_owned();
        // In key order, so that reports added at once lock the rows they share in the same
        // order, and never wait on each other in a cycle.
        let mut added = added.to_vec();
        added.sort_by_key(|(flag, _)| *flag);
        let flags: Vec<String> = added.iter().map(|(f, _)| (*f).to_owned()).collect();
        // As text: a u64 count may not fit a bigint; the database adds them as numeric.
        let counts: Vec<String> = added
            .iter()
            .map(|(_, u)| u.evaluations.to_string())
            .collect();
        let lasts: Vec<String> = added
            .iter()
            .map(|(_, u)| u.last_evaluated_ms.to_string())
            .collect();
        self.call(move |pool, database| async move {
            let fail = |e| failed(&database, e);
            let mut client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            let tx = client.transaction().await.map_err(fail)?;
            // Usage is not a change: like sled's unsynced write, a crash may lose the last
            // moments of it, so its commit does not wait for the disk.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(fail)?;
            let written = tx
                .execute(ADD_USAGE, &[&env, &flags, &counts, &lasts])
                .await;
            match written {
                Ok(_) => {}
                // The environment was deleted meanwhile: its usage goes with it.
                Err(e)
                    if e.code()
                        == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
                {
                    return Ok(())
                }
                Err(e) => return Err(fail(e)),
            }
            tx.commit().await.map_err(fail)
        })
    }

    fn put_instances(&self, replica: &str, instances: &[Instance]) -> Result<bool, StoreError> {
        let rows = instances::Rows::of(replica, instances);
        self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            rows.write(&client).await.map_err(|e| failed(&database, e))
        })
    }

    fn replica_instances(
        &self,
        environment: &str,
        replica: &str,
        silence: Duration,
    ) -> Result<Vec<Instance>, StoreError> {
        let (env, replica) = (environment.to_owned(), replica.to_owned());
        self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            instances::read(&client, &env, &replica, silence)
                .await
                .map_err(|e| failed(&database, e))
        })
    }

    fn prune_instances(&self, remember: Duration) -> Result<(), StoreError> {
        self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            instances::prune(&client, remember)
                .await
                .map_err(|e| failed(&database, e))
        })
    }

    fn usage(&self, environment: &str) -> Result<Vec<(String, FlagUsage)>, StoreError> {
        let rows = self.rows(
            "SELECT flag, usage::text FROM flag_usage WHERE environment = $1 ORDER BY flag",
            vec![Param::Text(environment.to_owned())],
            |row| (row.get::<_, String>(0), row.get::<_, String>(1)),
        )?;
        rows.into_iter()
            .map(|(flag, text)| {
                let usage = decode(&format!("usage/{environment}/{flag}"), text.as_bytes())?;
                Ok((flag, usage))
            })
            .collect()
    }

    fn changes_since(
        &self,
        environment: &str,
        revision: u64,
    ) -> Result<Option<Vec<Change>>, StoreError> {
        let (env, since) = (environment.to_owned(), sql_revision(revision));
        let found = self.call(move |pool, database| async move {
            let fail = |e| failed(&database, e);
            let mut client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            let tx = client.transaction().await.map_err(fail)?;
            // FOR SHARE waits for a commit of this environment still in flight (one whose
            // answer was lost, say) to end, so that what it committed is read.
            let rows = tx
                .query(
                    "SELECT revision FROM environments WHERE key = $1 FOR SHARE",
                    &[&env],
                )
                .await
                .map_err(fail)?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let current: i64 = row.get(0);
            let texts: Vec<String> = match current > since {
                false => Vec::new(),
                true => tx
                    .query(
                        "SELECT change::text FROM changes WHERE environment = $1 AND revision > $2
                         ORDER BY revision",
                        &[&env, &since],
                    )
                    .await
                    .map_err(fail)?
                    .iter()
                    .map(|row| row.get(0))
                    .collect(),
            };
            // It only read: ending it either way releases the lock.
            tx.rollback().await.map_err(fail)?;
            Ok(Some((current > since, texts)))
        })?;
        let Some((behind, texts)) = found else {
            return Err(StoreError::NoEnvironment(environment.to_owned()));
        };
        let entries: Vec<Change> = texts
            .iter()
            .map(|t| decode(&format!("changes/{environment}"), t.as_bytes()))
            .collect::<Result<_, _>>()?;
        if !behind {
            return Ok(Some(Vec::new()));
        }
        Ok(complete(entries, revision, u64::MAX))
    }

    fn audit_head(
        &self,
        environment: &str,
        revision: u64,
    ) -> Result<Option<AuditHead>, StoreError> {
        let heads = self.rows(
            "SELECT revision, time_ms, actor, comment, operation FROM audit
             WHERE environment = $1 AND revision = $2",
            vec![
                Param::Text(environment.to_owned()),
                Param::Int(sql_revision(revision)),
            ],
            |row| AuditHead {
                revision: revision_of(row.get(0)),
                time_ms: revision_of(row.get(1)),
                actor: row.get(2),
                comment: row.get(3),
                operation: row.get(4),
            },
        )?;
        Ok(heads.into_iter().next())
    }

    fn audit_heads(
        &self,
        environment: &str,
        revisions: &[u64],
    ) -> Result<Vec<AuditHead>, StoreError> {
        let mut heads = Vec::with_capacity(revisions.len());
        // A statement's parameters are bounded; ask in chunks.
        for chunk in revisions.chunks(AUDIT_HEADS_PER_QUERY) {
            let list: Vec<String> = chunk.iter().map(|&r| sql_revision(r).to_string()).collect();
            heads.extend(self.rows(
                "SELECT revision, time_ms, actor, comment, operation FROM audit
                 WHERE environment = $1 AND revision = ANY(string_to_array($2, ',')::bigint[])",
                vec![
                    Param::Text(environment.to_owned()),
                    Param::Text(list.join(",")),
                ],
                |row| AuditHead {
                    revision: revision_of(row.get(0)),
                    time_ms: revision_of(row.get(1)),
                    actor: row.get(2),
                    comment: row.get(3),
                    operation: row.get(4),
                },
            )?);
        }
        Ok(heads)
    }

    fn history(
        &self,
        environment: &str,
        flag: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.history_of(environment, flag.map(|f| ("flag", f)), before, limit)
    }

    fn segment_history(
        &self,
        environment: &str,
        segment: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.history_of(environment, Some(("segment", segment)), before, limit)
    }

    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.put_tokens(std::slice::from_ref(token))
    }

    fn put_tokens(&self, tokens: &[TokenRecord]) -> Result<(), StoreError> {
        let ids: Vec<String> = tokens.iter().map(|t| t.id.clone()).collect();
        let texts: Vec<String> = tokens.iter().map(json).collect();
        self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            client
                .execute(
                    "INSERT INTO tokens (id, record)
                     SELECT id, record::json FROM unnest($1::text[], $2::text[]) AS t (id, record)
                     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
                    &[&ids, &texts],
                )
                .await
                .map_err(|e| failed(&database, e))?;
            announce(&client, true, listen::TOKENS).await;
            Ok(())
        })
    }

    fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let (id, text) = (token.id.clone(), json(token));
        let environment = token.environment.clone();
        let written = self.call(move |pool, database| async move {
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            let written = client
                .execute(
                    // Written only while the environment's row exists, which it locks
                    // (FOR KEY SHARE) until written: a deletion through another flagstaffd
                    // either comes after, and revokes the token with the environment, or
                    // before, and the token is refused.
                    "INSERT INTO tokens (id, record)
                     SELECT $1, $2::text::json
                     WHERE $3::text IS NULL
                        OR EXISTS (SELECT 1 FROM environments WHERE key = $3 FOR KEY SHARE)",
                    &[&id, &text, &environment],
                )
                .await
                .map_err(|e| failed(&database, e))?;
            announce(&client, written > 0, listen::TOKENS).await;
            Ok(written)
        })?;
        match (written, &token.environment) {
            (0, Some(environment)) => Err(StoreError::NoEnvironment(environment.clone())),
            _ => Ok(()),
        }
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = self.rows(
            "SELECT id, record::text FROM tokens ORDER BY id",
            Vec::new(),
            |row| (row.get::<_, String>(0), row.get::<_, String>(1)),
        )?;
        let mut tokens = Vec::new();
        for (id, text) in rows {
            match decode(&format!("tokens/{id}"), text.as_bytes()) {
                Ok(token) => tokens.push(token),
                // A token that cannot be read does not work; the rest do.
                Err(e) => {
                    tracing::error!(error = %e, "a damaged token record is skipped; `flagstaffd check` lists it and `flagstaffd repair` removes it")
                }
            }
        }
        Ok(tokens)
    }

    fn token(&self, key: TokenKey<'_>) -> Result<Option<TokenRecord>, StoreError> {
        // By hash through the index of migration 0002; an unknown token is looked up at most
        // a few times a second (crate::auth).
        let (sql, value) = match key {
            TokenKey::Id(id) => ("SELECT id, record::text FROM tokens WHERE id = $1", id),
            TokenKey::Hash(hash) => (
                "SELECT id, record::text FROM tokens WHERE record->>'hash' = $1",
                hash,
            ),
        };
        let rows = self.rows(sql, vec![Param::Text(value.to_owned())], |row| {
            (row.get::<_, String>(0), row.get::<_, String>(1))
        })?;
        for (id, text) in rows {
            match decode::<TokenRecord>(&format!("tokens/{id}"), text.as_bytes()) {
                Ok(token) if key.names(&token) => return Ok(Some(token)),
                Ok(_) => {}
                // A token that cannot be read does not work.
                Err(e) => {
                    tracing::error!(error = %e, "a damaged token record is skipped; `flagstaffd check` lists it and `flagstaffd repair` removes it")
                }
            }
        }
        Ok(None)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn dump(
        &self,
        visit: &mut dyn FnMut(BackupRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.dump_where(None, visit)
    }

    fn dump_environment(
        &self,
        environment: &str,
        visit: &mut dyn FnMut(BackupRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.dump_where(Some(environment.to_owned()), visit)
    }

    fn restore_environment(&self, restored: &RestoredEnvironment) -> Result<(), StoreError> {
        let Some(record) = restored.record.clone() else {
            return Err(StoreError::Invalid {
                detail: "an environment to restore has no record".to_owned(),
            });
        };
        let restored = restored.clone();
        let key = record.key.clone();
        // However long the history: a restore is bounded by the database's own timeouts only.
        let written = self.call_with(None, None, move |pool, database| async move {
            let fail = |e| failed(&database, e);
            let mut client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            let tx = client.transaction().await.map_err(fail)?;
            let exists = tx
                .query("SELECT 1 FROM environments WHERE key = $1", &[&record.key])
                .await
                .map_err(fail)?;
            if !exists.is_empty() {
                return Ok(false);
            }
            write_restored(&tx, &record, &restored)
                .await
                .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            Ok(true)
        })?;
        match written {
            true => Ok(()),
            false => Err(StoreError::EnvironmentExists(key)),
        }
    }

    fn ticket_key(&self) -> Result<[u8; TICKET_KEY_BYTES], StoreError> {
        let mut fresh = [0u8; TICKET_KEY_BYTES];
        // The OS random source failing is not something a server can carry on without.
        getrandom::fill(&mut fresh).expect("the operating system's random source works");
        let stored = self.call(move |pool, database| async move {
            let fail = |e| failed(&database, e);
            let client = pool.get().await.map_err(|e| pool_failed(&database, e))?;
            // Whoever inserts first wins; everyone reads the key that won.
            client
                .execute(
                    "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&TICKET_KEY, &fresh.as_slice()],
                )
                .await
                .map_err(fail)?;
            let row = client
                .query_one("SELECT value FROM secrets WHERE name = $1", &[&TICKET_KEY])
                .await
                .map_err(fail)?;
            Ok(row.get::<_, Vec<u8>>(0))
        })?;
        <[u8; TICKET_KEY_BYTES]>::try_from(stored.as_slice()).map_err(|_| StoreError::Corrupt {
            what: format!("secrets/{TICKET_KEY}"),
            detail: format!("{} bytes, not {TICKET_KEY_BYTES}", stored.len()),
        })
    }
}
