//! [`Store`] on sled 0.34.
//!
//! Tree layout (docs/storage.md describes it for operators):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `environments` | environment key | [`EnvironmentRecord`] as JSON |
//! | `flags/<env>` | flag key | flag document as JSON, `version` set |
//! | `segments/<env>` | segment key | segment document as JSON, `version` set |
//! | `changes/<env>` | revision, 8 bytes big-endian | [`Change`] as JSON |
//! | `audit/<env>` | revision, 8 bytes big-endian | [`AuditEntry`] as JSON |
//! | `audit_heads/<env>` | revision, 8 bytes big-endian | [`AuditHead`] as JSON: the entry without its documents |
//! | `rollouts/<env>` | flag key | [`RolloutRecord`] as JSON: the flag's most recent plan |
//! | `usage/<env>` | flag key | [`FlagUsage`] as JSON: evaluations SDKs reported |
//! | `tokens` | token id | [`TokenRecord`] as JSON |
//! | `secrets` | `ofrep_ticket_key` | the 32 bytes of [`Store::ticket_key`], raw |
//!
//! Durability: sled 0.34's `flush` writes its buffers and calls `sync_file_range` on the
//! `db` file, which does not make the data power-loss safe, and never syncs `blobs/`, where
//! values over about 128 KiB (large segments) live. So after each flush the store also
//! `fsync`s the `db` file, every blob file it has not synced yet, and the `blobs` directory.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Db, Transactional, Tree};

use flagstaff_engine::Segment;

use super::{
    decode, encode, read_record, AuditEntry, AuditHead, BackupRecord, Change, Damage, Documents,
    EnvironmentRecord, FlagUsage, Locked, Readable, RestoredEnvironment, RolloutRecord,
    SessionRecord, Store, StoreError, TokenRecord, TICKET_KEY, TICKET_KEY_BYTES,
};

/// Change-log entries kept per environment unless configured otherwise.
pub const DEFAULT_RETENTION: u64 = 10_000;

/// The sled-backed store.
#[derive(Debug)]
pub struct SledStore {
    db: Db,
    path: PathBuf,
    environments: Tree,
    tokens: Tree,
    retention: u64,
    /// Held for the whole of a commit or token write, flush and syncs included: revisions
    /// are checked and written in order, and `synced_blobs` is updated by one writer. A std
    /// mutex, since every method runs on a blocking thread and never awaits while holding it.
    writer: Mutex<SyncedBlobs>,
}

/// Blob files already fsynced.
#[derive(Debug, Default)]
struct SyncedBlobs(HashSet<PathBuf>);

fn tree_name(kind: &str, environment: &str) -> String {
    format!("{kind}/{environment}")
}

fn sync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| StoreError::Sync {
            path: path.display().to_string(),
            source,
        })
}

/// How long [`SledStore::open`] waits for a data directory's lock before reporting it held.
pub const LOCK_WAIT: Duration = Duration::from_secs(1);

impl SledStore {
    /// [`Store::commit`]: sled has one writer, flagstaffd, which commits to an environment
    /// under that environment's lock.
    fn commit_at(
        &self,
        environment: &str,
        expected_revision: u64,
        change: &Change,
        patched: &[Segment],
        audit: &AuditEntry,
        rollouts: &[RolloutRecord],
    ) -> Result<(), StoreError> {
        let mut synced = self.lock_writer();
        let plans = self.tree("rollouts", environment)?;
        let plan_values: Vec<(&str, Vec<u8>)> = rollouts
            .iter()
            .map(|p| (p.flag.as_str(), encode(p)))
            .collect();
        let flags = self.tree("flags", environment)?;
        let segments = self.tree("segments", environment)?;
        let changes = self.tree("changes", environment)?;
        let audits = self.tree("audit", environment)?;
        let heads = self.tree("audit_heads", environment)?;
        let revision_key = change.revision.to_be_bytes();
        let change_bytes = encode(change);
        let audit_bytes = encode(audit);
        let head_bytes = encode(&audit.head());
        let flag_values: Vec<(&str, Vec<u8>)> = change
            .flags
            .iter()
            .map(|f| (f.key.as_str(), encode(f)))
            .collect();
        let segment_values: Vec<(&str, Vec<u8>)> = change
            .segments
            .iter()
            .chain(patched)
            .map(|s| (s.key.as_str(), encode(s)))
            .collect();

        let result = [
            &self.environments,
            &flags,
            &segments,
            &changes,
            &audits,
            &plans,
            &heads,
        ]
        .transaction(|trees| {
            let (envs, flags, segments, changes, audits, plans, heads) = (
                &trees[0], &trees[1], &trees[2], &trees[3], &trees[4], &trees[5], &trees[6],
            );
            let Some(bytes) = envs.get(environment)? else {
                return Err(ConflictableTransactionError::Abort(
                    StoreError::NoEnvironment(environment.to_owned()),
                ));
            };
            let mut record: EnvironmentRecord =
                decode(&format!("environments/{environment}"), &bytes)
                    .map_err(ConflictableTransactionError::Abort)?;
            if record.revision != expected_revision || change.revision != expected_revision + 1 {
                return Err(ConflictableTransactionError::Abort(
                    StoreError::RevisionConflict {
                        environment: environment.to_owned(),
                        expected: expected_revision,
                        actual: record.revision,
                    },
                ));
            }
            for (key, value) in &flag_values {
                flags.insert(*key, value.as_slice())?;
            }
            for key in &change.deleted_flags {
                flags.remove(key.as_str())?;
            }
            for (key, value) in &segment_values {
                segments.insert(*key, value.as_slice())?;
            }
            for key in &change.deleted_segments {
                segments.remove(key.as_str())?;
            }
            for (key, value) in &plan_values {
                plans.insert(*key, value.as_slice())?;
            }
            changes.insert(&revision_key, change_bytes.as_slice())?;
            audits.insert(&revision_key, audit_bytes.as_slice())?;
            heads.insert(&revision_key, head_bytes.as_slice())?;
            record.revision = change.revision;
            envs.insert(environment, encode(&record))?;
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(StoreError::Database(e)),
        }
        // Trim the change log outside the transaction: losing a trim to a crash only keeps
        // an entry longer.
        if change.revision > self.retention {
            let oldest_kept = change.revision - self.retention + 1;
            for entry in changes.range(..oldest_kept.to_be_bytes()).keys() {
                changes.remove(entry?)?;
            }
        }
        self.sync(&mut synced, false)
    }

    /// Opens (creating if needed) the store in `path`, keeping `retention` change-log entries
    /// per environment. Fails with [`StoreError::Locked`] when another process has it open.
    ///
    /// sled releases a directory's lock only once the background thread of the last handle
    /// has stopped, a moment after the handle is dropped; so a store closed and opened again
    /// in one process (a restart in tests, `flagstaffd repair` after `check`) would find its
    /// own lock. A held lock is therefore tried again for up to [`LOCK_WAIT`] before it is
    /// reported.
    pub fn open(path: impl AsRef<Path>, retention: u64) -> Result<SledStore, StoreError> {
        let path = path.as_ref().to_owned();
        let waiting_until = Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(&path).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                    if Instant::now() >= waiting_until {
                        return Err(StoreError::Locked {
                            path: path.display().to_string(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(other) => return Err(StoreError::Database(other)),
            }
        };
        let store = SledStore {
            environments: db.open_tree("environments")?,
            tokens: db.open_tree("tokens")?,
            db,
            path,
            retention: retention.max(1),
            writer: Mutex::new(SyncedBlobs::default()),
        };
        // Whatever an earlier process left unsynced is made durable before anything is served.
        store.sync(&mut store.lock_writer(), true)?;
        Ok(store)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, SyncedBlobs> {
        // A panic while holding the lock leaves nothing half-written that the next writer
        // could trip on (sled transactions are atomic), so a poisoned lock is still usable.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn tree(&self, kind: &str, environment: &str) -> Result<Tree, StoreError> {
        Ok(self.db.open_tree(tree_name(kind, environment))?)
    }

    /// Flushes sled and fsyncs what its flush leaves unsynced (see the module docs).
    fn sync(&self, synced: &mut SyncedBlobs, all_blobs: bool) -> Result<(), StoreError> {
        self.db.flush()?;
        sync_path(&self.path.join("db"))?;
        let blobs = self.path.join("blobs");
        let Ok(entries) = std::fs::read_dir(&blobs) else {
            return Ok(());
        };
        let mut new_blob = false;
        for entry in entries.flatten() {
            let path = entry.path();
            if all_blobs || !synced.0.contains(&path) {
                sync_path(&path)?;
                synced.0.insert(path);
                new_blob = true;
            }
        }
        if new_blob {
            sync_path(&blobs)?;
        }
        // Blob files sled has removed need not be remembered.
        synced.0.retain(|p| p.exists());
        Ok(())
    }

    /// Audit entries for which `keep` holds, newest first; only revisions below `before` when
    /// given; at most `limit`.
    /// The entries `keep` keeps, newest first. `mentions`, when given, is bytes every kept
    /// entry's stored form holds: an entry without them is passed over unread, so that
    /// looking for one document's changes does not decode every import of thousands.
    fn history_where(
        &self,
        environment: &str,
        before: Option<u64>,
        limit: usize,
        mentions: Option<&[u8]>,
        keep: impl Fn(&AuditEntry) -> bool,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let finder = mentions.map(memchr::memmem::Finder::new);
        self.environment(environment)?;
        let audits = self.tree("audit", environment)?;
        let range = match before {
            Some(before) => audits.range(..before.to_be_bytes()),
            None => audits.range::<&[u8], _>(..),
        };
        let mut out = Vec::new();
        for kv in range.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = kv?;
            if finder.as_ref().is_some_and(|f| f.find(&v).is_none()) {
                continue;
            }
            let entry: AuditEntry = decode(&format!("audit/{environment}"), &v)?;
            if keep(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }
}

/// `"key":"<key>"`: what the stored form (compact JSON) of a change to the document `key`
/// holds. A valid key needs no escaping in JSON, and inside a JSON string a quote is always
/// escaped, so only a `key` field itself can hold these bytes.
fn key_field(key: &str) -> Vec<u8> {
    format!("\"key\":\"{key}\"").into_bytes()
}

/// What each tree holds, for checking that its records read back: the tree's kind (the name
/// before `/`), and a reader of one value.
/// Reads one stored value of a kind, for [`reader`].
type Reader = fn(&str, &[u8]) -> Result<(), StoreError>;

fn reader(kind: &str) -> Option<Reader> {
    fn read<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<(), StoreError> {
        decode::<T>(what, bytes).map(|_| ())
    }
    Some(match kind {
        "environments" => read::<EnvironmentRecord>,
        "tokens" => read::<TokenRecord>,
        "flags" => read::<flagstaff_engine::Flag>,
        "segments" => read::<Segment>,
        "changes" => read::<Change>,
        "audit" => read::<AuditEntry>,
        "audit_heads" => read::<AuditHead>,
        "rollouts" => read::<RolloutRecord>,
        "usage" => read::<FlagUsage>,
        "secrets" => read_ticket_key,
        "sessions" => read::<SessionRecord>,
        _ => return None,
    })
}

/// The ticket key as stored, or why it cannot be used.
fn read_ticket_key(what: &str, bytes: &[u8]) -> Result<(), StoreError> {
    ticket_key_of(what, bytes).map(|_| ())
}

fn ticket_key_of(what: &str, bytes: &[u8]) -> Result<[u8; TICKET_KEY_BYTES], StoreError> {
    <[u8; TICKET_KEY_BYTES]>::try_from(bytes).map_err(|_| StoreError::Corrupt {
        what: what.to_owned(),
        detail: format!("{} bytes, not {TICKET_KEY_BYTES}", bytes.len()),
    })
}

/// A record's name for messages: `kind/env/key`, revisions in decimal.
fn record_name(tree: &str, key: &[u8]) -> String {
    let kind = tree.split('/').next().unwrap_or(tree);
    let key = match kind {
        "changes" | "audit" | "audit_heads" => <[u8; 8]>::try_from(key)
            .map(|b| u64::from_be_bytes(b).to_string())
            .unwrap_or_else(|_| String::from_utf8_lossy(key).into_owned()),
        _ => String::from_utf8_lossy(key).into_owned(),
    };
    format!("{tree}/{key}")
}

impl Store for SledStore {
    fn environment(&self, environment: &str) -> Result<EnvironmentRecord, StoreError> {
        match self.environments.get(environment)? {
            Some(bytes) => decode(&format!("environments/{environment}"), &bytes),
            None => Err(StoreError::NoEnvironment(environment.to_owned())),
        }
    }

    fn kind(&self) -> &'static str {
        "sled"
    }

    fn environment_records(
        &self,
    ) -> Result<Vec<(String, Readable<EnvironmentRecord>)>, StoreError> {
        self.environments
            .iter()
            .map(|kv| {
                let (key, bytes) = kv?;
                let key = String::from_utf8_lossy(&key).into_owned();
                let record = read_record(Some(&key), &format!("environments/{key}"), &bytes);
                Ok((key, record))
            })
            .collect()
    }

    fn check(&self) -> Result<Vec<Damage>, StoreError> {
        let mut damaged = Vec::new();
        for name in self.db.tree_names() {
            let tree_name = String::from_utf8_lossy(&name).into_owned();
            let mut parts = tree_name.splitn(2, '/');
            let kind = parts.next().unwrap_or_default();
            let environment = parts.next().map(str::to_owned);
            let Some(read) = reader(kind) else {
                continue;
            };
            let environment = match kind {
                "tokens" | "sessions" => None,
                "environments" => None,
                _ => environment,
            };
            for kv in self.db.open_tree(&name)?.iter() {
                let (key, value) = kv?;
                let record = record_name(&tree_name, &key);
                if let Err(err) = read(&record, &value) {
                    let environment = environment.clone().or_else(|| {
                        (kind == "environments").then(|| String::from_utf8_lossy(&key).into_owned())
                    });
                    damaged.extend(Damage::of(environment.as_deref(), &err));
                }
            }
        }
        damaged.sort_by(|a, b| a.record.cmp(&b.record));
        Ok(damaged)
    }

    fn remove_damaged(&self, damage: &Damage) -> Result<(), StoreError> {
        let (tree, key) = damage
            .record
            .rsplit_once('/')
            .ok_or_else(|| StoreError::Corrupt {
                what: damage.record.clone(),
                detail: "not a record name".to_owned(),
            })?;
        let kind = tree.split('/').next().unwrap_or(tree);
        let key: Vec<u8> = match kind {
            "changes" | "audit_heads" => key
                .parse::<u64>()
                .map(|r| r.to_be_bytes().to_vec())
                .map_err(|_| StoreError::Corrupt {
                    what: damage.record.clone(),
                    detail: "not a revision".to_owned(),
                })?,
            // A new ticket key is made on next use: outstanding tickets stop working, and
            // OFREP providers fetch a fresh one.
            // A session removed signs its person out.
            "tokens" | "rollouts" | "usage" | "secrets" | "sessions" => key.as_bytes().to_vec(),
            _ => {
                return Err(StoreError::Corrupt {
                    what: damage.record.clone(),
                    detail: "a record of this kind is restored, not removed".to_owned(),
                })
            }
        };
        let mut synced = self.lock_writer();
        self.db.open_tree(tree)?.remove(key)?;
        self.sync(&mut synced, false)
    }

    fn put_environment(&self, record: &EnvironmentRecord) -> Result<(), StoreError> {
        let mut synced = self.lock_writer();
        self.environments
            .insert(record.key.as_str(), encode(record))?;
        self.sync(&mut synced, false)
    }

    fn visit_audit(
        &self,
        environment: &str,
        visit: &mut dyn FnMut(Result<AuditEntry, Damage>),
    ) -> Result<(), StoreError> {
        let tree_name = tree_name("audit", environment);
        for kv in self.tree("audit", environment)?.iter() {
            let (key, value) = kv?;
            let record = record_name(&tree_name, &key);
            visit(read_record(Some(environment), &record, &value));
        }
        Ok(())
    }

    fn create_environment(&self, record: &EnvironmentRecord) -> Result<(), StoreError> {
        let mut synced = self.lock_writer();
        let created = self.environments.compare_and_swap(
            record.key.as_str(),
            None as Option<&[u8]>,
            Some(encode(record)),
        )?;
        if created.is_err() {
            return Err(StoreError::EnvironmentExists(record.key.clone()));
        }
        self.sync(&mut synced, false)
    }

    fn delete_environment(&self, environment: &str) -> Result<(), StoreError> {
        let mut synced = self.lock_writer();
        if self.environments.remove(environment)?.is_none() {
            return Err(StoreError::NoEnvironment(environment.to_owned()));
        }
        for kind in [
            "flags",
            "segments",
            "changes",
            "audit",
            "audit_heads",
            "rollouts",
            "usage",
        ] {
            self.db.drop_tree(tree_name(kind, environment))?;
        }
        self.sync(&mut synced, false)
    }

    fn documents(&self, environment: &str) -> Result<Documents, StoreError> {
        // flagstaffd, sled's only writer, reads documents while no commit to them runs.
        let revision = self.environment(environment)?.revision;
        let read = |kind: &str| -> Result<Vec<(String, sled::IVec)>, StoreError> {
            self.tree(kind, environment)?
                .iter()
                .map(|kv| {
                    let (k, v) = kv?;
                    Ok((String::from_utf8_lossy(&k).into_owned(), v))
                })
                .collect()
        };
        let flags = read("flags")?
            .into_iter()
            .map(|(k, v)| decode(&format!("flags/{environment}/{k}"), &v))
            .collect::<Result<_, _>>()?;
        let segments = read("segments")?
            .into_iter()
            .map(|(k, v)| decode(&format!("segments/{environment}/{k}"), &v))
            .collect::<Result<_, _>>()?;
        Ok(Documents {
            revision,
            flags,
            segments,
        })
    }

    fn lock_environment(&self, environment: &str) -> Result<Box<dyn Locked + '_>, StoreError> {
        let record = self.environment(environment)?;
        Ok(Box::new(SledLocked {
            store: self,
            environment: environment.to_owned(),
            revision: record.revision,
            epoch: record.epoch,
        }))
    }

    fn changes_since(
        &self,
        environment: &str,
        revision: u64,
    ) -> Result<Option<Vec<Change>>, StoreError> {
        let current = self.environment(environment)?.revision;
        if revision >= current {
            return Ok(Some(Vec::new()));
        }
        let changes = self.tree("changes", environment)?;
        let entries: Vec<Change> = changes
            .range((revision + 1).to_be_bytes()..)
            .map(|kv| {
                let (_, v) = kv?;
                decode(&format!("changes/{environment}"), &v)
            })
            .collect::<Result<_, StoreError>>()?;
        // Complete only if the first retained entry is the one right after `revision`.
        Ok(match entries.first() {
            Some(first) if first.revision == revision + 1 => Some(entries),
            _ => None,
        })
    }

    fn audit_head(
        &self,
        environment: &str,
        revision: u64,
    ) -> Result<Option<AuditHead>, StoreError> {
        let key = revision.to_be_bytes();
        if let Some(bytes) = self.tree("audit_heads", environment)?.get(key)? {
            match decode(&format!("audit_heads/{environment}/{revision}"), &bytes) {
                Ok(head) => return Ok(Some(head)),
                // A damaged head is read from its entry, as one never stored.
                Err(e) => tracing::warn!(error = %e, "a damaged audit head; reading its entry"),
            }
        }
        // Entries written before heads were stored apart: read the whole entry. One that
        // cannot be read leaves the change unknown, never the read that asked failing.
        match self.tree("audit", environment)?.get(key)? {
            Some(bytes) => {
                match decode::<AuditEntry>(&format!("audit/{environment}/{revision}"), &bytes) {
                    Ok(entry) => Ok(Some(entry.head())),
                    Err(e) => {
                        tracing::warn!(error = %e, "a damaged audit entry");
                        Ok(None)
                    }
                }
            }
            None => Ok(None),
        }
    }

    fn history(
        &self,
        environment: &str,
        flag: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mentions = flag.map(key_field);
        self.history_where(environment, before, limit, mentions.as_deref(), |entry| {
            flag.is_none_or(|f| entry.changes.iter().any(|c| c.is_flag(f)))
        })
    }

    fn segment_history(
        &self,
        environment: &str,
        segment: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mentions = key_field(segment);
        self.history_where(environment, before, limit, Some(&mentions), |entry| {
            entry.changes.iter().any(|c| c.is_segment(segment))
        })
    }

    fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let mut synced = self.lock_writer();
        self.db
            .open_tree("sessions")?
            .insert(session.id_hash.as_str(), encode(session))?;
        self.sync(&mut synced, false)
    }

    fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        match self.db.open_tree("sessions")?.get(id_hash)? {
            Some(bytes) => decode(&format!("sessions/{id_hash}"), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let mut synced = self.lock_writer();
        self.db.open_tree("sessions")?.remove(id_hash)?;
        self.sync(&mut synced, false)
    }

    fn prune_sessions(&self, seen_before_ms: u64) -> Result<usize, StoreError> {
        let sessions = self.db.open_tree("sessions")?;
        let mut gone = 0;
        for kv in sessions.iter() {
            let (key, value) = kv?;
            // One that cannot be read is no session anyone can use.
            let stale = decode::<SessionRecord>("sessions", &value)
                .map_or(true, |s| s.seen_ms < seen_before_ms);
            if stale {
                sessions.remove(key)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    fn put_rollout(&self, environment: &str, plan: &RolloutRecord) -> Result<(), StoreError> {
        let mut synced = self.lock_writer();
        self.environment(environment)?;
        self.tree("rollouts", environment)?
            .insert(plan.flag.as_str(), encode(plan))?;
        self.sync(&mut synced, false)
    }

    fn rollouts(&self, environment: &str) -> Result<Vec<RolloutRecord>, StoreError> {
        self.environment(environment)?;
        self.tree("rollouts", environment)?
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(
                    &format!("rollouts/{environment}/{}", String::from_utf8_lossy(&k)),
                    &v,
                )
            })
            .collect()
    }

    fn add_usage(&self, environment: &str, added: &[(&str, FlagUsage)]) -> Result<(), StoreError> {
        let tree = self.tree("usage", environment)?;
        for (flag, add) in added {
            // Each flag's record is read and replaced in one compare-and-swap, so reports
            // recorded at once add up; one that cannot be read starts again from this report.
            // Not synced: sled writes it out within its flush interval; usage is not a change.
            tree.update_and_fetch(*flag, |stored| {
                let old: FlagUsage = stored
                    .and_then(|bytes| serde_json::from_slice(bytes).ok())
                    .unwrap_or_default();
                Some(encode(&FlagUsage {
                    evaluations: old.evaluations.saturating_add(add.evaluations),
                    last_evaluated_ms: old.last_evaluated_ms.max(add.last_evaluated_ms),
                }))
            })?;
        }
        Ok(())
    }

    fn usage(&self, environment: &str) -> Result<Vec<(String, FlagUsage)>, StoreError> {
        self.tree("usage", environment)?
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let flag = String::from_utf8_lossy(&k).into_owned();
                let usage = decode(&format!("usage/{environment}/{flag}"), &v)?;
                Ok((flag, usage))
            })
            .collect()
    }

    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let mut synced = self.lock_writer();
        self.tokens.insert(token.id.as_str(), encode(token))?;
        self.sync(&mut synced, false)
    }

    fn put_tokens(&self, tokens: &[TokenRecord]) -> Result<(), StoreError> {
        let mut synced = self.lock_writer();
        let mut batch = sled::Batch::default();
        for token in tokens {
            batch.insert(token.id.as_str(), encode(token));
        }
        self.tokens.apply_batch(batch)?;
        self.sync(&mut synced, false)
    }

    fn dump(
        &self,
        visit: &mut dyn FnMut(BackupRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for kv in self.environments.iter() {
            let (key, _) = kv?;
            self.dump_environment(&String::from_utf8_lossy(&key), visit)?;
        }
        for token in self.tokens()? {
            visit(BackupRecord::Token(token))?;
        }
        Ok(())
    }

    fn dump_environment(
        &self,
        environment: &str,
        visit: &mut dyn FnMut(BackupRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let key = environment;
        {
            visit(BackupRecord::Environment(self.environment(key)?))?;
            let documents = self.documents(key)?;
            for flag in documents.flags {
                visit(BackupRecord::Flag(flag))?;
            }
            for segment in documents.segments {
                visit(BackupRecord::Segment(segment))?;
            }
            for kv in self.tree("changes", key)?.iter() {
                let (_, v) = kv?;
                visit(BackupRecord::Change(decode(&format!("changes/{key}"), &v)?))?;
            }
            for kv in self.tree("audit", key)?.iter() {
                let (_, v) = kv?;
                visit(BackupRecord::Audit(decode(&format!("audit/{key}"), &v)?))?;
            }
            for plan in self.rollouts(key)? {
                visit(BackupRecord::Rollout(plan))?;
            }
            for (flag, usage) in self.usage(key)? {
                visit(BackupRecord::Usage { flag, usage })?;
            }
        }
        Ok(())
    }

    fn restore_environment(&self, restored: &RestoredEnvironment) -> Result<(), StoreError> {
        let Some(record) = &restored.record else {
            return Err(StoreError::Invalid {
                detail: "an environment to restore has no record".to_owned(),
            });
        };
        let key = record.key.as_str();
        let mut synced = self.lock_writer();
        if self.environments.contains_key(key)? {
            return Err(StoreError::EnvironmentExists(key.to_owned()));
        }
        let write = |kind: &str, entries: Vec<(Vec<u8>, Vec<u8>)>| -> Result<(), StoreError> {
            let mut batch = sled::Batch::default();
            for (k, v) in entries {
                batch.insert(k, v);
            }
            self.tree(kind, key)?.apply_batch(batch)?;
            Ok(())
        };
        let docs = &restored.documents;
        write(
            "flags",
            docs.flags
                .iter()
                .map(|f| (f.key.as_bytes().to_vec(), encode(f)))
                .collect(),
        )?;
        write(
            "segments",
            docs.segments
                .iter()
                .map(|s| (s.key.as_bytes().to_vec(), encode(s)))
                .collect(),
        )?;
        write(
            "changes",
            restored
                .changes
                .iter()
                .map(|c| (c.revision.to_be_bytes().to_vec(), encode(c)))
                .collect(),
        )?;
        write(
            "audit",
            restored
                .audit
                .iter()
                .map(|a| (a.revision.to_be_bytes().to_vec(), encode(a)))
                .collect(),
        )?;
        write(
            "audit_heads",
            restored
                .audit
                .iter()
                .map(|a| (a.revision.to_be_bytes().to_vec(), encode(&a.head())))
                .collect(),
        )?;
        write(
            "rollouts",
            restored
                .rollouts
                .iter()
                .map(|p| (p.flag.as_bytes().to_vec(), encode(p)))
                .collect(),
        )?;
        write(
            "usage",
            restored
                .usage
                .iter()
                .map(|(f, u)| (f.as_bytes().to_vec(), encode(u)))
                .collect(),
        )?;
        // Last: until the record is there, neither is the environment.
        self.environments.insert(key, encode(record))?;
        self.sync(&mut synced, false)
    }

    fn ticket_key(&self) -> Result<[u8; TICKET_KEY_BYTES], StoreError> {
        let what = format!("secrets/{TICKET_KEY}");
        let secrets = self.db.open_tree("secrets")?;
        if let Some(stored) = secrets.get(TICKET_KEY)? {
            return ticket_key_of(&what, &stored);
        }
        let mut fresh = [0u8; TICKET_KEY_BYTES];
        // The OS random source failing is not something a server can carry on without.
        getrandom::fill(&mut fresh).expect("the operating system's random source works");
        let mut synced = self.lock_writer();
        match secrets.compare_and_swap(TICKET_KEY, None as Option<&[u8]>, Some(&fresh[..]))? {
            Ok(()) => {
                // On disk before any ticket signed with it goes out.
                self.sync(&mut synced, false)?;
                Ok(fresh)
            }
            // Another caller created it first: everyone uses theirs.
            Err(raced) => match raced.current {
                Some(stored) => ticket_key_of(&what, &stored),
                None => Err(StoreError::Corrupt {
                    what,
                    detail: "removed while being created".to_owned(),
                }),
            },
        }
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut tokens = Vec::new();
        for kv in self.tokens.iter() {
            let (k, v) = kv?;
            match decode(&format!("tokens/{}", String::from_utf8_lossy(&k)), &v) {
                Ok(token) => tokens.push(token),
                // A token that cannot be read does not work; the rest do.
                Err(e) => {
                    tracing::error!(error = %e, "a damaged token record is skipped; `flagstaffd check` lists it and `flagstaffd repair` removes it")
                }
            }
        }
        Ok(tokens)
    }
}

/// An environment held for a commit on sled: flagstaffd is sled's only writer, and holds the
/// environment's own lock while it commits, so nothing is locked here.
struct SledLocked<'a> {
    store: &'a SledStore,
    environment: String,
    revision: u64,
    epoch: String,
}

impl Locked for SledLocked<'_> {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn changes_since(&mut self, revision: u64) -> Result<Option<Vec<Change>>, StoreError> {
        self.store.changes_since(&self.environment, revision)
    }

    fn commit(
        self: Box<Self>,
        change: &Change,
        patched: &[Segment],
        audit: &AuditEntry,
        rollouts: &[RolloutRecord],
    ) -> Result<(), StoreError> {
        self.store.commit_at(
            &self.environment,
            self.revision,
            change,
            patched,
            audit,
            rollouts,
        )
    }

    /// One process writes a sled store, under the environment's writer lock, so the plans it
    /// holds in memory are the stored ones: versions need no check here.
    fn commit_plans(self: Box<Self>, rollouts: &[RolloutRecord]) -> Result<(), StoreError> {
        for plan in rollouts {
            self.store.put_rollout(&self.environment, plan)?;
        }
        Ok(())
    }
}
