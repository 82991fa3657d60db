//! Durable storage of environments, documents, the change log, the audit log and tokens.
//!
//! [`Store`] is what the control plane needs from a database; [`SledStore`] implements it on
//! the embedded sled, [`PgStore`] on PostgreSQL, and [`Backend`] is whichever of the two
//! flagstaffd runs on. Every method blocks (disk or network I/O), so async callers run them in
//! `spawn_blocking`. A commit is one transaction holding every document it changes, its
//! change-log entry, its audit entry and the environment's new revision, and it is durable
//! (fsynced, or committed by the database) before `commit` returns.

mod backend;
mod postgres;
mod sled_store;

use flagstaff_engine::{Flag, KeyPatch, Segment};
use serde::{Deserialize, Serialize};

pub use backend::Backend;
pub use postgres::{PgStore, CALL_TIMEOUT, NOTIFY_CHANNEL};
pub use sled_store::{SledStore, DEFAULT_RETENTION, LOCK_WAIT};

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the data directory.
    #[error("another flagstaffd holds the data directory {path}")]
    Locked {
        /// The data directory.
        path: String,
    },
    /// The environment does not exist.
    #[error("no environment {0:?}")]
    NoEnvironment(String),
    /// The environment already exists.
    #[error("environment {0:?} already exists")]
    EnvironmentExists(String),
    /// The environment's revision moved since the change was prepared.
    #[error("environment {environment:?} is at revision {actual}, not {expected}")]
    RevisionConflict {
        /// The environment.
        environment: String,
        /// The revision the change was prepared against.
        expected: u64,
        /// The revision found.
        actual: u64,
    },
    /// Stored data could not be read back.
    #[error("corrupt record {what}: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        detail: String,
    },
    /// The database failed.
    #[error("storage error: {0}")]
    Database(#[from] sled::Error),
    /// The PostgreSQL database cannot be reached, or did not answer in time (`UNAVAILABLE`):
    /// nothing was changed.
    #[error("the database {database} is unavailable: {detail}")]
    Unavailable {
        /// Where the database is: `host:port/database`.
        database: String,
        /// Why.
        detail: String,
    },
    /// The connection to the PostgreSQL database was lost after COMMIT was sent, so whether
    /// the change took effect is unknown (`UNAVAILABLE`); if it did, the change log has it.
    #[error(
        "outcome unknown: the connection to the database {database} was lost while committing; \
         if the change was committed, the change log delivers it"
    )]
    OutcomeUnknown {
        /// Where the database is.
        database: String,
    },
    /// The PostgreSQL database refused a statement.
    #[error("the database {database} refused a statement: {detail}")]
    Postgres {
        /// Where the database is.
        database: String,
        /// The database's error code and message.
        detail: String,
    },
    /// The store cannot be used as configured: a connection string that does not parse, a
    /// database CA file that cannot be used, a schema newer than this flagstaffd knows.
    #[error("{detail}")]
    Invalid {
        /// What is wrong.
        detail: String,
    },
    /// A rollout plan was changed through another flagstaffd on the database since this one
    /// read it (`ABORTED`): nothing was changed.
    #[error(
        "the rollout plan of flag {flag:?} in environment {environment:?} was changed through \
         another flagstaffd; nothing was changed: retry"
    )]
    PlanConflict {
        /// The environment.
        environment: String,
        /// The plan's flag.
        flag: String,
    },
    /// A duty's write was refused because this flagstaffd no longer holds the leader's lease
    /// (`UNAVAILABLE`): nothing was changed; the leader does the duty.
    #[error("this flagstaffd no longer holds the leader's lease; nothing was changed")]
    LeaseLost,
    /// Syncing to disk failed.
    #[error("cannot sync {path} to disk: {source}")]
    Sync {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A stored record that cannot be read back: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The environment it belongs to; `None` for a token.
    pub environment: Option<String>,
    /// The record, as `tree/key`: `flags/production/checkout`, `environments/production`,
    /// `audit/production/42`.
    pub record: String,
    /// What reading it said.
    pub detail: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.record, self.detail)
    }
}

impl Damage {
    /// The damage a [`StoreError::Corrupt`] describes, of `environment`.
    pub fn of(environment: Option<&str>, err: &StoreError) -> Option<Damage> {
        match err {
            StoreError::Corrupt { what, detail } => Some(Damage {
                environment: environment.map(str::to_owned),
                record: what.clone(),
                detail: detail.clone(),
            }),
            _ => None,
        }
    }
}

/// A stored record as read: the value, or the damage that keeps it from being read.
pub type Readable<T> = Result<T, Damage>;

/// An environment's settings and position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    /// The environment's key.
    pub key: String,
    /// Random, fixed at creation: a data dir restored or recreated gets a new one, so SDKs
    /// know their revisions no longer apply.
    pub epoch: String,
    /// The revision of the last committed change; 0 for a new environment.
    pub revision: u64,
    /// Writes need an explicit confirmation.
    pub protected: bool,
    /// When the environment was created, in Unix milliseconds.
    pub created_ms: u64,
}

/// One revision's changes to an environment's documents: the change-log entry SDKs replay.
///
/// A segment whose key lists alone changed is recorded as a [`KeyPatch`], not as the whole
/// segment, so adding one key to a segment of 100,000 stores and streams one key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The revision this change produced.
    pub revision: u64,
    /// Flags created or replaced, with `version` set to `revision`.
    pub flags: Vec<Flag>,
    /// Keys of flags deleted.
    pub deleted_flags: Vec<String>,
    /// Segments created or replaced whole, with `version` set to `revision`.
    pub segments: Vec<Segment>,
    /// Keys of segments deleted.
    pub deleted_segments: Vec<String>,
    /// Changes to the key lists of existing segments, whose version becomes `revision`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segment_patches: Vec<KeyPatch>,
}

/// What one document looked like before and after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditChange {
    /// A flag: the whole document before and after (`None` when created or deleted).
    Flag {
        /// The flag's key.
        key: String,
        /// Before the change.
        before: Option<Box<Flag>>,
        /// After the change.
        after: Option<Box<Flag>>,
    },
    /// A segment: the document without its key lists, and the keys added and removed, so a
    /// change to a segment of 100,000 keys does not store two copies of them.
    Segment {
        /// The segment's key.
        key: String,
        /// Before the change, `included` and `excluded` left empty.
        before: Option<Box<Segment>>,
        /// After the change, `included` and `excluded` left empty.
        after: Option<Box<Segment>>,
        /// Keys added to `included`.
        included_added: Vec<String>,
        /// Keys removed from `included`.
        included_removed: Vec<String>,
        /// Keys added to `excluded`.
        excluded_added: Vec<String>,
        /// Keys removed from `excluded`.
        excluded_removed: Vec<String>,
        /// How many keys the lists held before the change (zeros when it created the segment).
        #[serde(default)]
        counts_before: KeyCounts,
        /// How many keys the lists hold after the change (zeros when it deleted the segment).
        #[serde(default)]
        counts_after: KeyCounts,
    },
}

/// The sizes of a segment's key lists, which an audit entry records instead of the lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCounts {
    /// How many keys `included` holds.
    pub included: usize,
    /// How many keys `excluded` holds.
    pub excluded: usize,
}

impl KeyCounts {
    /// The sizes of `segment`'s lists; zeros for no segment.
    pub fn of(segment: Option<&Segment>) -> KeyCounts {
        segment.map_or_else(KeyCounts::default, |s| KeyCounts {
            included: s.included.len(),
            excluded: s.excluded.len(),
        })
    }
}

impl AuditChange {
    /// The audit record of a flag going from `before` to `after`.
    pub fn flag(key: &str, before: Option<&Flag>, after: Option<&Flag>) -> AuditChange {
        AuditChange::Flag {
            key: key.to_owned(),
            before: before.cloned().map(Box::new),
            after: after.cloned().map(Box::new),
        }
    }

    /// The audit record of a segment going from `before` to `after`.
    pub fn segment(key: &str, before: Option<&Segment>, after: Option<&Segment>) -> AuditChange {
        let keys = |s: Option<&Segment>, included: bool| -> Vec<String> {
            s.map(|s| {
                if included {
                    s.included.clone()
                } else {
                    s.excluded.clone()
                }
            })
            .unwrap_or_default()
        };
        let diff = |old: Vec<String>, new: Vec<String>| {
            let old_set: std::collections::HashSet<&str> = old.iter().map(String::as_str).collect();
            let new_set: std::collections::HashSet<&str> = new.iter().map(String::as_str).collect();
            let added = new
                .iter()
                .filter(|k| !old_set.contains(k.as_str()))
                .cloned()
                .collect();
            let removed = old
                .iter()
                .filter(|k| !new_set.contains(k.as_str()))
                .cloned()
                .collect();
            (added, removed)
        };
        let (included_added, included_removed) = diff(keys(before, true), keys(after, true));
        let (excluded_added, excluded_removed) = diff(keys(before, false), keys(after, false));
        let strip = |s: Option<&Segment>| {
            s.map(|s| {
                Box::new(Segment {
                    included: Vec::new(),
                    excluded: Vec::new(),
                    ..s.clone()
                })
            })
        };
        AuditChange::Segment {
            key: key.to_owned(),
            before: strip(before),
            after: strip(after),
            included_added,
            included_removed,
            excluded_added,
            excluded_removed,
            counts_before: KeyCounts::of(before),
            counts_after: KeyCounts::of(after),
        }
    }

    /// Whether this records a change to the flag `key`.
    pub fn is_flag(&self, key: &str) -> bool {
        matches!(self, AuditChange::Flag { key: k, .. } if k == key)
    }

    /// Whether this records a change to the segment `key`.
    pub fn is_segment(&self, key: &str) -> bool {
        matches!(self, AuditChange::Segment { key: k, .. } if k == key)
    }
}

/// Who changed what, when and why: one per revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The revision the change produced.
    pub revision: u64,
    /// When, in Unix milliseconds.
    pub time_ms: u64,
    /// The name of the token that made the change, or `rollout:<flag>` for a rollout plan.
    pub actor: String,
    /// The reason given with the change.
    pub comment: String,
    /// What made the change: the Admin rpc's name, or a rollout step's (`RolloutAdvance`,
    /// `RolloutComplete`). Empty in entries written before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
    /// The documents changed.
    pub changes: Vec<AuditChange>,
}

/// Who made a change, when and why: an [`AuditEntry`] without its documents. Stored apart
/// from the entry, so that showing the last change of each listed flag costs what the page
/// lists, not the size of the change (an import of 5,000 flags is one entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// The revision the change produced.
    pub revision: u64,
    /// When, in Unix milliseconds.
    pub time_ms: u64,
    /// Who: the token's name, or `rollout:<flag>`.
    pub actor: String,
    /// The reason given with the change.
    pub comment: String,
    /// What made the change; empty in entries written before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
}

impl AuditEntry {
    /// The entry without its documents.
    pub fn head(&self) -> AuditHead {
        AuditHead {
            revision: self.revision,
            time_ms: self.time_ms,
            actor: self.actor.clone(),
            comment: self.comment.clone(),
            operation: self.operation.clone(),
        }
    }
}

/// A staged rollout plan as stored (the Admin API's `RolloutPlan`; docs/rollouts.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The flag's key.
    pub flag: String,
    /// The rule whose serve the plan moves; `None` for the default serve.
    pub rule_id: Option<String>,
    /// The variant rolled out: first in the split.
    pub target: String,
    /// The variant it replaces: right after the target.
    pub baseline: String,
    /// The context attribute the split hashes.
    pub bucket_by: String,
    /// The split's other variants and their weights, after the pair, left as they are.
    pub others: Vec<(String, u32)>,
    /// The stages: the target's weight (1/1000 %) and how long each is held.
    pub stages: Vec<RolloutStage>,
    /// Where the plan is.
    pub state: RolloutState,
    /// The current stage.
    pub stage_index: usize,
    /// The target's weight now.
    pub percent: u32,
    /// When the current stage began or was last resumed, in Unix milliseconds.
    pub stage_started_ms: u64,
    /// When the next stage is due; 0 unless running.
    pub next_stage_ms: u64,
    /// Why the plan is in its state; "" when there is nothing to add.
    pub state_message: String,
    /// The flag version the plan last wrote (or found); its next advance expects it.
    pub flag_version: u64,
    /// When the plan was started, in Unix milliseconds.
    pub created_ms: u64,
    /// The name of the token that started it.
    pub created_by: String,
    /// What happened, oldest first.
    pub history: Vec<RolloutEvent>,
    /// The guard that rolls the plan back when the target does worse; `None` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardRecord>,
    /// The plan's own version: every write of the plan stores it one higher, and is refused
    /// when the stored plan is no longer at the version the write was built on, so that a
    /// pause through one flagstaffd always beats an advance through another.
    #[serde(default)]
    pub version: u64,
}

/// A plan's guard as stored: what it watches, and what SDKs reported in the current stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardRecord {
    /// The application event watched, e.g. `checkout_error`.
    pub event: String,
    /// The largest acceptable ratio of the target's event rate to the baseline's.
    pub max_ratio: f64,
    /// Events of the pair the stage must have seen before the test decides anything.
    pub min_events: u64,
    /// The counts of the current stage (of the stage it rejected, once it has).
    #[serde(default)]
    pub tally: GuardTally,
    /// Whether the guard rejected the target and rolled the plan back.
    #[serde(default)]
    pub rejected: bool,
}

/// What SDKs reported for one stage of a guarded plan: for the flag version the stage wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardTally {
    /// The flag version the counts are for; counts of any other version are not the stage's.
    pub flag_version: u64,
    /// The target's weight in the stage, in 1/1000 of a percent.
    pub target_weight: u32,
    /// The baseline's weight in the stage.
    pub baseline_weight: u32,
    /// Evaluations that served the target.
    pub target_exposures: u64,
    /// Evaluations that served the baseline.
    pub baseline_exposures: u64,
    /// Guard events of contexts that got the target.
    pub target_events: u64,
    /// Guard events of contexts that got the baseline.
    pub baseline_events: u64,
}

/// How SDKs have used a flag in one environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagUsage {
    /// Evaluations reported, every version and variant together.
    pub evaluations: u64,
    /// The end of the last report window with an evaluation, in Unix milliseconds; 0 for none.
    pub last_evaluated_ms: u64,
}

/// Who an SDK instance says it is, from its Subscribe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Random, fixed for the life of one client.
    pub instance_id: String,
    /// The application embedding the SDK.
    pub application: String,
    /// The SDK's name and version.
    pub sdk_version: String,
    /// The host it runs on.
    pub host: String,
}

/// An SDK instance as a flagstaffd knows it (`crate::clients`); on a store several flagstaffd
/// share, each writes those whose streams it serves ([`Store::put_instances`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The environment it watches.
    pub environment: String,
    /// Who it is.
    pub identity: Identity,
    /// The name of the token its stream authenticated with.
    pub token: String,
    /// Its open Watch streams (usually 0 or 1).
    pub streams: u32,
    /// When its current stream connected, or its last one did.
    pub connected_ms: u64,
    /// When its last stream closed; `None` while one is open.
    pub disconnected_ms: Option<u64>,
    /// The epoch of the revision it last acknowledged (empty before its first).
    pub epoch: String,
    /// The revision it last acknowledged (0 before its first).
    pub applied_revision: u64,
    /// When it last acknowledged one.
    pub applied_ms: u64,
}

/// One stage of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStage {
    /// The target's weight during the stage, in 1/1000 of a percent.
    pub percent: u32,
    /// How long the stage lasts, in milliseconds.
    pub hold_ms: u64,
}

/// A plan's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Advancing on schedule.
    Running,
    /// Held at its stage until resumed.
    Paused,
    /// Finished: the scope serves the target.
    Completed,
    /// Finished: the scope serves the baseline.
    RolledBack,
}

/// Something that happened to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEvent {
    /// When, in Unix milliseconds.
    pub time_ms: u64,
    /// A token's name, or `rollout:<flag>` for the plan's own steps.
    pub actor: String,
    /// What happened.
    pub kind: RolloutEventKind,
    /// The stage afterwards.
    pub stage_index: usize,
    /// The target's weight afterwards.
    pub percent: u32,
    /// The revision of the flag change it made; 0 for none.
    pub revision: u64,
    /// The comment given or the server's explanation.
    pub comment: String,
}

/// The kind of a [`RolloutEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutEventKind {
    /// Started, with its first stage applied.
    Started,
    /// Moved to its next stage.
    Advanced,
    /// Paused, by a person or by a manual edit of the flag.
    Paused,
    /// Resumed.
    Resumed,
    /// Rolled back.
    RolledBack,
    /// Promoted: the target served at once.
    Promoted,
    /// Reached its last stage.
    Completed,
}

impl RolloutRecord {
    /// Whether the plan still moves (running) or may (paused).
    pub fn is_active(&self) -> bool {
        matches!(self.state, RolloutState::Running | RolloutState::Paused)
    }
}

/// A role a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens and environments.
    Admin,
    /// Writes in its environment.
    Editor,
    /// Exactly `Watch`, `ReportMetrics` and OFREP evaluation in its environment.
    Sdk,
    /// OFREP evaluation of the `client_side` flags of its environment, nothing else; not a
    /// secret (embedded in web pages and apps).
    Client,
}

/// A token as stored: its SHA-256 hash, and the secret itself only for a `client` token (which
/// is not a secret: it is embedded in web pages and apps, and can be shown again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Stable id, shown in listings and used to revoke.
    pub id: String,
    /// A name for people; the actor in audit entries.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// The environment an editor, SDK or client token is limited to.
    pub environment: Option<String>,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// When it was created, in Unix milliseconds.
    pub created_ms: u64,
    /// Whether it has been revoked.
    pub revoked: bool,
    /// The name of the token that created it; empty for one minted by flagstaffd itself (a
    /// fresh data directory's, `flagstaffd admin-token`) and in records from before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    /// The secret of a `client` token, kept so that it can be shown again; `None` for every
    /// other role (whose secret is shown once and kept only as `hash`) and in records from
    /// before client tokens were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// How a token is named when it is looked up in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKey<'a> {
    /// By its id.
    Id(&'a str),
    /// By the SHA-256 of its secret, lower-case hex.
    Hash(&'a str),
}

impl TokenKey<'_> {
    /// Whether `token` is the one named.
    pub fn names(&self, token: &TokenRecord) -> bool {
        match self {
            TokenKey::Id(id) => token.id == *id,
            TokenKey::Hash(hash) => token.hash == *hash,
        }
    }
}

/// An environment's committed documents, as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Documents {
    /// The environment's revision they are at, read with them.
    pub revision: u64,
    /// The flags.
    pub flags: Vec<Flag>,
    /// The segments.
    pub segments: Vec<Segment>,
}

/// One record of a backup (`flagstaffd backup`; [`crate::backup`] writes and reads them, one
/// JSON object per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupRecord {
    /// An environment; the records of its documents and history follow it.
    Environment(EnvironmentRecord),
    /// A flag of the environment last named.
    Flag(Flag),
    /// A segment of the environment last named, with its key lists.
    Segment(Segment),
    /// A change-log entry of the environment last named.
    Change(Change),
    /// An audit entry of the environment last named.
    Audit(AuditEntry),
    /// A rollout plan of the environment last named.
    Rollout(RolloutRecord),
    /// A flag's usage in the environment last named.
    Usage {
        /// The flag.
        flag: String,
        /// Its usage.
        usage: FlagUsage,
    },
    /// A token.
    Token(TokenRecord),
}

/// Everything of one environment, as a restore writes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoredEnvironment {
    /// Its record: a new epoch, the revision of the backup.
    pub record: Option<EnvironmentRecord>,
    /// Its documents at that revision.
    pub documents: Documents,
    /// Its change log.
    pub changes: Vec<Change>,
    /// Its audit log, oldest first.
    pub audit: Vec<AuditEntry>,
    /// Its rollout plans.
    pub rollouts: Vec<RolloutRecord>,
    /// Its flags' usage.
    pub usage: Vec<(String, FlagUsage)>,
}

/// An environment held for one commit by [`Store::lock_environment`]. On PostgreSQL its row
/// is locked in an open transaction, so that a flagstaffd behind the database can catch up
/// and validate its change against what is stored before anyone else commits; dropped
/// without [`commit`](Locked::commit), it writes nothing and lets go.
pub trait Locked: Send {
    /// The environment's revision as stored.
    fn revision(&self) -> u64;

    /// The environment's epoch as stored: another than the caller knows if the environment
    /// was deleted and created again meanwhile.
    fn epoch(&self) -> &str;

    /// [`Store::changes_since`], read under the lock: what a process behind the store
    /// applies before it builds its change.
    fn changes_since(&mut self, revision: u64) -> Result<Option<Vec<Change>>, StoreError>;

    /// How many times the environment's rollout plans have been written, by any process on
    /// the database: another count than this process last saw means they changed without a
    /// revision (a pause, a resume), and are read again before anything is built on them.
    /// Always 0 on a store one process writes (sled), whose plans in memory are the stored.
    fn plan_writes(&self) -> u64 {
        0
    }

    /// Makes the commit a duty of the leader: it fails with [`StoreError::LeaseLost`],
    /// changing nothing, unless this flagstaffd still holds `lease` when it commits. A store
    /// that one process alone writes (sled) has nothing to check.
    fn hold(&mut self, lease: Lease) {
        let _ = lease;
    }

    /// Commits `change`, which is revision [`revision`](Locked::revision) + 1 (see
    /// [`Store::commit`]), and lets go. Each of `rollouts` is written only if the stored plan
    /// is at the version before its own (see [`RolloutRecord::version`]); otherwise nothing
    /// is, and the commit fails with [`StoreError::PlanConflict`].
    fn commit(
        self: Box<Self>,
        change: &Change,
        patched: &[Segment],
        audit: &AuditEntry,
        rollouts: &[RolloutRecord],
    ) -> Result<(), StoreError>;

    /// Writes `rollouts` alone, making no revision (a pause, a resume), as
    /// [`commit`](Locked::commit) writes them, and lets go.
    fn commit_plans(self: Box<Self>, rollouts: &[RolloutRecord]) -> Result<(), StoreError>;
}

/// A web console session (DESIGN.md section 11), stored under the SHA-256 of its id: the id
/// itself is only ever in the person's cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The SHA-256 of the session's id, in hex.
    pub id_hash: String,
    /// Who is signed in, as the audit log names them: a token's name, or the person a proxy
    /// signed in (`alice@example.com via console`).
    pub person: String,
    /// The token it signed in with; `None` when an authenticating proxy signed the person in.
    /// The session ends when that token is revoked.
    pub token: Option<String>,
    /// What the person may do.
    pub role: Role,
    /// The environments an `editor` may see and change; empty for an `admin`.
    pub environments: Vec<String>,
    /// The token each of the session's forms carries (`csrf`).
    pub csrf: String,
    /// When it began, in Unix milliseconds.
    pub created_ms: u64,
    /// When it was last used; it ends after 12 hours without use.
    pub seen_ms: u64,
}

/// The leader's lease as this flagstaffd holds it: duties' writes carry its generation, and
/// fail once another flagstaffd took the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Raised whenever the lease changes hands.
    pub generation: u64,
}

/// Whether this flagstaffd holds the leader's lease now (`Some`), as a store tells it.
pub type Leadership = tokio::sync::watch::Receiver<Option<Lease>>;

/// What a store announces of commits made by other processes on its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// A commit to an environment.
    Committed {
        /// The environment committed to.
        environment: String,
        /// The revision it made: the environment is now at this revision or beyond.
        revision: u64,
    },
    /// Environments were created or deleted, or their settings changed.
    Environments,
    /// Rollout plans of an environment changed without a revision (a pause, a resume).
    Rollouts {
        /// The environment.
        environment: String,
    },
    /// Tokens were created or revoked.
    Tokens,
    /// The store (re)started listening: whatever was announced meanwhile was missed, so
    /// everything is to be compared with the store.
    Listening,
    /// The store lost its connection to the database, or cannot make one: until it listens
    /// again, nothing is announced.
    Lost,
}

/// The announcements of a store's commits, in the order they were made.
pub type Announcements = tokio::sync::mpsc::UnboundedReceiver<Announcement>;

/// What the control plane needs from its database. Every method may block.
pub trait Store: Send + Sync + 'static {
    /// What kind of store this is, as backups name it: `sled` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Every environment's record by key, or the damage that keeps it from being read.
    fn environment_records(&self)
        -> Result<Vec<(String, Readable<EnvironmentRecord>)>, StoreError>;

    /// An environment's record, or [`StoreError::NoEnvironment`].
    fn environment(&self, environment: &str) -> Result<EnvironmentRecord, StoreError>;

    /// Every environment whose record can be read.
    fn environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        Ok(self
            .environment_records()?
            .into_iter()
            .filter_map(|(_, record)| record.ok())
            .collect())
    }

    /// Every stored record that cannot be read back, in every tree: what `flagstaffd check`
    /// lists. Reads everything, the whole audit log included.
    fn check(&self) -> Result<Vec<Damage>, StoreError>;

    /// Removes a damaged record that [`check`](Self::check) reported, of a kind that can go
    /// without losing a change: a token (it stops working), a change-log entry (SDKs resuming
    /// across it take a snapshot), an audit head (read from its entry instead), a rollout
    /// plan, a flag's usage counts. Durable when it returns.
    fn remove_damaged(&self, damage: &Damage) -> Result<(), StoreError>;

    /// Writes an environment's record, replacing one that cannot be read. Durable when it
    /// returns.
    fn put_environment(&self, record: &EnvironmentRecord) -> Result<(), StoreError>;

    /// Every audit entry of `environment`, oldest first, each read or the damage that keeps
    /// it from being read, passed to `visit` one at a time.
    fn visit_audit(
        &self,
        environment: &str,
        visit: &mut dyn FnMut(Result<AuditEntry, Damage>),
    ) -> Result<(), StoreError>;

    /// Creates an environment at revision 0.
    fn create_environment(&self, record: &EnvironmentRecord) -> Result<(), StoreError>;

    /// Deletes an environment and everything in it.
    fn delete_environment(&self, environment: &str) -> Result<(), StoreError>;

    /// An environment's current documents.
    fn documents(&self, environment: &str) -> Result<Documents, StoreError>;

    /// Holds `environment` for one commit: until the [`Locked`] is committed or dropped,
    /// nobody else commits to it, here or in another process on the same database.
    fn lock_environment(&self, environment: &str) -> Result<Box<dyn Locked + '_>, StoreError>;

    /// Commits `change` (revision `expected_revision + 1`) with its audit entry, atomically
    /// and durably: when this returns `Ok`, the change survives a crash or power loss. Fails
    /// with [`StoreError::RevisionConflict`], changing nothing, when the environment is not at
    /// `expected_revision`. `patched` holds the whole new documents of the segments
    /// `change.segment_patches` changes; `rollouts`, rollout plans written in the same
    /// transaction (a plan's step and the flag change it makes are one).
    fn commit(
        &self,
        environment: &str,
        expected_revision: u64,
        change: &Change,
        patched: &[Segment],
        audit: &AuditEntry,
        rollouts: &[RolloutRecord],
    ) -> Result<(), StoreError> {
        let locked = self.lock_environment(environment)?;
        let actual = locked.revision();
        if actual != expected_revision {
            return Err(StoreError::RevisionConflict {
                environment: environment.to_owned(),
                expected: expected_revision,
                actual,
            });
        }
        locked.commit(change, patched, audit, rollouts)
    }

    /// Commits made by other processes on the same database, as they are announced; `None`
    /// for a store no other process writes (sled).
    fn follow(&self) -> Option<Announcements> {
        None
    }

    /// Whether this flagstaffd holds the leader's lease, kept up to date by the store until
    /// the receiver is dropped (then the lease is given up); `None` for a store no other
    /// process writes (sled), where this one always leads.
    fn lead(&self) -> Option<Leadership> {
        None
    }

    /// Once every [`Leadership`] receiver is dropped, waits (a few seconds at most) until the
    /// lease is given up, so that another flagstaffd takes it at once. Nothing to wait for on
    /// a store no other process writes.
    fn resign(&self) {}

    /// Adds `counts` (a guard's report for `flag`'s current stage) to what every flagstaffd
    /// on the database added, and returns the sum; `None` for a store no other process
    /// writes (sled), where the counts are kept in memory. Counts of an older flag version
    /// than stored are ignored; a newer one starts again.
    fn add_guard_counts(
        &self,
        environment: &str,
        flag: &str,
        counts: &GuardTally,
    ) -> Result<Option<GuardTally>, StoreError> {
        let _ = (environment, flag, counts);
        Ok(None)
    }

    /// The guard counts [`add_guard_counts`](Self::add_guard_counts) summed, by flag.
    fn guard_counts(&self, environment: &str) -> Result<Vec<(String, GuardTally)>, StoreError> {
        let _ = environment;
        Ok(Vec::new())
    }

    /// Writes `instances`, the SDK instances of the flagstaffd process `replica` whose state
    /// changed, in one statement, and records that `replica` is alive now (by the database's
    /// clock), also when there are none. An instance of an environment deleted meanwhile is
    /// left out. Returns whether the store had no record of `replica` (its first write, or
    /// its record was pruned after a long silence, with its instances): then the caller
    /// writes every instance it has. Does nothing on a store no other process shares.
    fn put_instances(&self, replica: &str, instances: &[Instance]) -> Result<bool, StoreError> {
        let _ = (replica, instances);
        Ok(false)
    }

    /// The SDK instances of `environment` that replicas other than `replica` wrote, one per
    /// instance and replica (an instance that moved appears once per replica it used); at
    /// most [`MAX_SHARED_INSTANCES`], connected ones first. Those of a replica that has not
    /// written for `silence` are shown disconnected, since that replica's last write. Nothing
    /// on a store no other process shares.
    fn replica_instances(
        &self,
        environment: &str,
        replica: &str,
        silence: std::time::Duration,
    ) -> Result<Vec<Instance>, StoreError> {
        let _ = (environment, replica, silence);
        Ok(Vec::new())
    }

    /// Removes the SDK instances that have been disconnected (or whose replica has been
    /// silent) for `remember`, and replicas silent that long. Does nothing on a store no
    /// other process shares.
    fn prune_instances(&self, remember: std::time::Duration) -> Result<(), StoreError> {
        let _ = remember;
        Ok(())
    }

    /// Stores a console session (replacing one of the same id), durably.
    fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    /// The console session stored under `id_hash`, if any.
    fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Removes the console session stored under `id_hash` (none there: nothing to do).
    fn delete_session(&self, id_hash: &str) -> Result<(), StoreError>;

    /// Removes the console sessions last used before `seen_before_ms`; how many.
    fn prune_sessions(&self, seen_before_ms: u64) -> Result<usize, StoreError>;

    /// Stores a rollout plan (replacing the flag's previous one), durably.
    fn put_rollout(&self, environment: &str, plan: &RolloutRecord) -> Result<(), StoreError>;

    /// An environment's rollout plans: each flag's most recent, by flag key.
    fn rollouts(&self, environment: &str) -> Result<Vec<RolloutRecord>, StoreError>;

    /// Adds evaluations to the stored usage of the flags given (others keep theirs): each
    /// flag's `evaluations` are added to what is stored, and its `last_evaluated_ms` is the
    /// later of the two, in one step, so that several flagstaffd adding their SDKs' reports to
    /// one database never lose each other's. Not flushed: a crash may lose the last moments of
    /// usage, never a change.
    fn add_usage(&self, environment: &str, added: &[(&str, FlagUsage)]) -> Result<(), StoreError>;

    /// Every flag's stored usage in `environment`.
    fn usage(&self, environment: &str) -> Result<Vec<(String, FlagUsage)>, StoreError>;

    /// The changes after `revision`, oldest first; `None` when some of them are no longer
    /// retained (the caller needs a full snapshot).
    fn changes_since(
        &self,
        environment: &str,
        revision: u64,
    ) -> Result<Option<Vec<Change>>, StoreError>;

    /// Who made the change of `revision`, when and why, without reading its documents;
    /// `None` when there is no such entry.
    fn audit_head(&self, environment: &str, revision: u64)
        -> Result<Option<AuditHead>, StoreError>;

    /// The heads of the entries of `revisions` that exist, in no particular order:
    /// [`Store::audit_head`] for many revisions at once (a page showing the last change of
    /// thousands of flags asks once).
    fn audit_heads(
        &self,
        environment: &str,
        revisions: &[u64],
    ) -> Result<Vec<AuditHead>, StoreError> {
        let mut heads = Vec::with_capacity(revisions.len());
        for &revision in revisions {
            heads.extend(self.audit_head(environment, revision)?);
        }
        Ok(heads)
    }

    /// Audit entries, newest first: of the whole environment, or those touching `flag`; only
    /// revisions below `before` when given; at most `limit`.
    fn history(
        &self,
        environment: &str,
        flag: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Audit entries touching the segment `segment`, newest first; only revisions below
    /// `before` when given; at most `limit`.
    fn segment_history(
        &self,
        environment: &str,
        segment: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Stores a token (new, or updated such as revoked), durably.
    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// Stores several tokens, durably, with one sync.
    fn put_tokens(&self, tokens: &[TokenRecord]) -> Result<(), StoreError>;

    /// Stores a new token, durably. On a database several flagstaffd share, only while its
    /// environment (when it has one) exists there, [`StoreError::NoEnvironment`] if not: it
    /// may have been deleted through another flagstaffd a moment ago. A store only this
    /// process writes needs no check: its callers create a token while the environment cannot
    /// be deleted (`Environments::while_exists`).
    fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.put_token(token)
    }

    /// Every token, revoked ones included; a token record that cannot be read is left out
    /// (and logged): it does not work.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// The token `key` names, revoked or not; `None` when there is none (or its record cannot
    /// be read). What a flagstaffd sharing its store asks about a token it has not heard of.
    fn token(&self, key: TokenKey<'_>) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.tokens()?.into_iter().find(|t| key.names(t)))
    }

    /// Whether other flagstaffd processes write this store too (PostgreSQL), so that what this
    /// one holds in memory may lag it: a token unknown here may exist there, and what they
    /// learn besides commits (their SDK instances, the usage their SDKs report) is read from
    /// the store, where each writes its own. `false` for a store one process holds (sled),
    /// where memory is the whole truth.
    fn is_shared(&self) -> bool {
        false
    }

    /// Every record a backup carries, passed to `visit` one at a time: each environment,
    /// followed by its documents, change log, audit log, rollout plans and usage, then every
    /// token. Each environment is read as of one revision: a store that may be written while
    /// this runs reads it in one transaction (PostgreSQL) or is read while no one writes
    /// (sled, opened by the backup alone, or by the server under each environment's lock).
    fn dump(
        &self,
        visit: &mut dyn FnMut(BackupRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// The records of one environment for a backup, as [`dump`](Self::dump) gives them: its
    /// record, then its documents, change log, audit log, rollout plans and usage. Read as of
    /// one revision only while nobody writes it (the server holds its writer lock), or in one
    /// transaction (PostgreSQL).
    fn dump_environment(
        &self,
        environment: &str,
        visit: &mut dyn FnMut(BackupRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Writes an environment read from a backup, whole, into a store that does not hold it:
    /// its record, documents, change log, audit log, rollout plans and usage. Durable when it
    /// returns; all or nothing on PostgreSQL, and on sled the record is written last, so an
    /// environment cut short by a crash is not there.
    fn restore_environment(&self, restored: &RestoredEnvironment) -> Result<(), StoreError>;

    /// The key that signs OFREP event-stream tickets (`crate::ofrep::ticket`): 32 random
    /// bytes, created by the first call on a fresh store and the same on every later call,
    /// after a restart and on every replica of the store. Two callers racing on a fresh store
    /// get the same key (it is created with a compare-and-swap). Durable when it returns.
    fn ticket_key(&self) -> Result<[u8; TICKET_KEY_BYTES], StoreError>;
}

/// The most SDK instances [`Store::replica_instances`] reads for one environment.
pub const MAX_SHARED_INSTANCES: usize = 100_000;

/// The length of the key [`Store::ticket_key`] keeps.
pub const TICKET_KEY_BYTES: usize = 32;

/// The name the OFREP ticket key is stored under (among the store's secrets).
const TICKET_KEY: &str = "ofrep_ticket_key";

/// A stored value's bytes: the one codec of every store (JSON).
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // The stored types are plain data with string keys: serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// A stored value read back; `what` names the record in the error.
fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// Like [`decode`], a failure described as the damage of `record` of `environment`.
fn read_record<T: serde::de::DeserializeOwned>(
    environment: Option<&str>,
    record: &str,
    bytes: &[u8],
) -> Result<T, Damage> {
    serde_json::from_slice(bytes).map_err(|e| Damage {
        environment: environment.map(str::to_owned),
        record: record.to_owned(),
        detail: e.to_string(),
    })
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random id: 128 bits, hex.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The OS random source failing is not something a server can carry on without.
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
