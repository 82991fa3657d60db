//! `flagstaffd check` and `flagstaffd repair`: finding stored records that cannot be read back,
//! and restoring them from the audit log (DESIGN.md section 4a).
//!
//! Both run on a stopped server's data directory. A damaged flag is restored to its last
//! version the audit log holds (or deleted, if the log's last word on it is its deletion); a
//! damaged segment is rebuilt by replaying the log's changes to it from its creation. Each
//! environment's restorations are one audited change, a new revision that SDKs receive like
//! any other. Records whose loss costs no change are removed: a token (it stops working), a
//! change-log entry (SDKs resuming across it take a snapshot), an audit head (read from its
//! entry instead), a rollout plan, a flag's usage counts. A damaged environment record is
//! rebuilt from its audit log with a new epoch, protected, since its setting is lost.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use flagstaff_engine::{Document, Flag, Segment, Snapshot};

use crate::error::ServerError;
use crate::storage::{
    now_ms, random_id, AuditChange, AuditEntry, Change, Damage, EnvironmentRecord, Store,
};

/// What repair did about one damaged record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Restored to what the audit log holds, in `revision`.
    Restored {
        /// The revision of the repair.
        revision: u64,
        /// What it was restored from.
        from: String,
    },
    /// Removed: a record of a kind whose loss costs no change.
    Removed,
    /// Left as it is, and why.
    Left(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Restored { revision, from } => {
                write!(f, "restored at revision {revision} from {from}")
            }
            Outcome::Removed => f.write_str("removed"),
            Outcome::Left(why) => write!(f, "left as it is: {why}"),
        }
    }
}

/// Every damaged record of `store`, and every environment whose documents all read back but
/// no longer validate together.
pub fn check<S: Store>(store: &S) -> Result<Vec<Damage>, ServerError> {
    let mut damaged = store.check()?;
    let has_damaged_documents: HashSet<String> = damaged
        .iter()
        .filter(|d| d.record.starts_with("flags/") || d.record.starts_with("segments/"))
        .filter_map(|d| d.environment.clone())
        .collect();
    for record in store.environments()? {
        if has_damaged_documents.contains(&record.key) {
            continue;
        }
        let docs = store.documents(&record.key)?;
        let document = Document {
            environment: record.key.clone(),
            flags: docs.flags,
            segments: docs.segments,
        };
        if let Err(e) = Snapshot::from_document(document) {
            damaged.push(Damage {
                environment: Some(record.key.clone()),
                record: format!("environments/{}", record.key),
                detail: format!("its documents do not validate together: {e}"),
            });
        }
    }
    Ok(damaged)
}

/// Repairs what [`check`] finds; returns each damaged record with what was done about it.
pub fn repair<S: Store>(store: &S) -> Result<Vec<(Damage, Outcome)>, ServerError> {
    let damaged = store.check()?;
    let mut outcomes = Vec::new();
    let mut documents: BTreeMap<String, Vec<Damage>> = BTreeMap::new();
    for damage in damaged {
        let kind = damage.record.split('/').next().unwrap_or_default();
        match (kind, damage.environment.clone()) {
            ("environments", Some(environment)) => {
                let outcome = rebuild_environment(store, &environment)?;
                outcomes.push((damage, outcome));
            }
            ("flags" | "segments", Some(environment)) => {
                documents.entry(environment).or_default().push(damage);
            }
            ("tokens" | "changes" | "audit_heads" | "rollouts" | "usage", _) => {
                store.remove_damaged(&damage)?;
                outcomes.push((damage, Outcome::Removed));
            }
            ("audit", _) => outcomes.push((
                damage,
                Outcome::Left(
                    "the audit log is history: this entry's record of its change is lost"
                        .to_owned(),
                ),
            )),
            _ => outcomes.push((
                damage,
                Outcome::Left("not a record flagstaffd knows".into()),
            )),
        }
    }
    for (environment, damaged) in documents {
        outcomes.extend(restore_documents(store, &environment, damaged)?);
    }
    outcomes.sort_by(|a, b| a.0.record.cmp(&b.0.record));
    Ok(outcomes)
}

/// The revision of `record`, as its name ends (`audit/production/42`).
fn revision_of(record: &str) -> Option<u64> {
    record.rsplit('/').next()?.parse().ok()
}

/// A new record for `environment`, at the revision of its last audit entry.
fn rebuild_environment<S: Store>(store: &S, environment: &str) -> Result<Outcome, ServerError> {
    let mut revision = 0;
    store.visit_audit(environment, &mut |entry| {
        let at = match entry {
            Ok(entry) => entry.revision,
            Err(damage) => revision_of(&damage.record).unwrap_or(0),
        };
        revision = revision.max(at);
    })?;
    store.put_environment(&EnvironmentRecord {
        key: environment.to_owned(),
        epoch: random_id(),
        revision,
        protected: true,
        created_ms: now_ms(),
    })?;
    Ok(Outcome::Restored {
        revision,
        from: "its audit log, with a new epoch (SDKs take a snapshot) and protected, since its \
               setting is lost"
            .to_owned(),
    })
}

/// A document as the audit log last left it.
#[derive(Debug)]
struct Last<T> {
    /// `None` when the log's last word on it is its deletion.
    document: Option<T>,
    /// The revision of that entry.
    revision: u64,
}

/// Restores the damaged flags and segments of `environment` in one audited change.
fn restore_documents<S: Store>(
    store: &S,
    environment: &str,
    damaged: Vec<Damage>,
) -> Result<Vec<(Damage, Outcome)>, ServerError> {
    let key_of = |d: &Damage| d.record.rsplit('/').next().unwrap_or_default().to_owned();
    let flag_keys: BTreeSet<String> = damaged
        .iter()
        .filter(|d| d.record.starts_with("flags/"))
        .map(key_of)
        .collect();
    let segment_keys: BTreeSet<String> = damaged
        .iter()
        .filter(|d| d.record.starts_with("segments/"))
        .map(key_of)
        .collect();

    let mut flags: BTreeMap<String, Last<Flag>> = BTreeMap::new();
    let mut segments: BTreeMap<String, Last<Segment>> = BTreeMap::new();
    // Revisions whose entries cannot be read: a segment's key lists are rebuilt only from a
    // whole log.
    let mut unreadable: Vec<u64> = Vec::new();
    store.visit_audit(environment, &mut |entry| {
        let entry: AuditEntry = match entry {
            Ok(entry) => entry,
            Err(damage) => {
                unreadable.extend(revision_of(&damage.record));
                return;
            }
        };
        for change in entry.changes {
            match change {
                AuditChange::Flag { key, after, .. } if flag_keys.contains(&key) => {
                    flags.insert(
                        key,
                        Last {
                            document: after.map(|f| *f),
                            revision: entry.revision,
                        },
                    );
                }
                AuditChange::Segment {
                    key,
                    before,
                    after,
                    included_added,
                    included_removed,
                    excluded_added,
                    excluded_removed,
                    ..
                } if segment_keys.contains(&key) => {
                    // A change recorded without a before (a creation, or an earlier repair)
                    // lists every key as added: the lists start again from nothing.
                    let previous = segments
                        .remove(&key)
                        .and_then(|last| last.document)
                        .filter(|_| before.is_some());
                    let document = after.map(|after| {
                        let (included, excluded) = previous
                            .map(|p| (p.included, p.excluded))
                            .unwrap_or_default();
                        Segment {
                            included: replay(included, &included_removed, included_added),
                            excluded: replay(excluded, &excluded_removed, excluded_added),
                            ..*after
                        }
                    });
                    segments.insert(
                        key,
                        Last {
                            document,
                            revision: entry.revision,
                        },
                    );
                }
                _ => {}
            }
        }
    })?;

    let record = store
        .environments()?
        .into_iter()
        .find(|r| r.key == environment)
        .ok_or_else(|| ServerError::NotFound(format!("no environment {environment:?}")))?;
    let revision = record.revision + 1;
    let mut change = Change {
        revision,
        ..Change::default()
    };
    let mut done = Restorations {
        revision,
        unreadable: &unreadable,
        audit: Vec::new(),
        restored: Vec::new(),
    };
    let mut outcomes = Vec::new();
    for damage in damaged {
        let key = key_of(&damage);
        let outcome = if damage.record.starts_with("flags/") {
            done.restore(
                &damage.record,
                &key,
                flags.remove(&key),
                (&mut change.flags, &mut change.deleted_flags),
                AuditChange::flag,
                |f| &mut f.version,
            )
        } else if !unreadable.is_empty() {
            Outcome::Left(format!(
                "its key lists cannot be rebuilt: the audit entries of revisions {unreadable:?} \
                 cannot be read"
            ))
        } else {
            done.restore(
                &damage.record,
                &key,
                segments.remove(&key),
                (&mut change.segments, &mut change.deleted_segments),
                AuditChange::segment,
                |s| &mut s.version,
            )
        };
        outcomes.push((damage, outcome));
    }
    let Restorations {
        audit, restored, ..
    } = done;
    if !audit.is_empty() {
        let entry = AuditEntry {
            revision,
            time_ms: now_ms(),
            actor: "flagstaffd repair".to_owned(),
            comment: format!(
                "restored damaged records from the audit log: {}",
                restored.join(", ")
            ),
            operation: "Repair".to_owned(),
            changes: audit,
        };
        store.commit(environment, record.revision, &change, &[], &entry, &[])?;
    }
    Ok(outcomes)
}

/// The restorations of one environment, written as one change.
struct Restorations<'a> {
    /// The revision of the repair.
    revision: u64,
    /// Revisions whose audit entries cannot be read.
    unreadable: &'a [u64],
    /// The repair's audit changes.
    audit: Vec<AuditChange>,
    /// What was restored, for the repair's comment.
    restored: Vec<String>,
}

impl Restorations<'_> {
    /// Restores the damaged `record` of document `key` to `last`, what the audit log last
    /// left of it: written (into `written`) at the repair's revision, or deleted (into
    /// `deleted`) when the log's last word on it is its deletion.
    fn restore<T>(
        &mut self,
        record: &str,
        key: &str,
        last: Option<Last<T>>,
        (written, deleted): (&mut Vec<T>, &mut Vec<String>),
        audited: fn(&str, Option<&T>, Option<&T>) -> AuditChange,
        version: fn(&mut T) -> &mut Option<u64>,
    ) -> Outcome {
        let Some(Last {
            document,
            revision: from,
        }) = last
        else {
            return Outcome::Left("the audit log holds no version of it".to_owned());
        };
        match document {
            Some(mut document) => {
                *version(&mut document) = Some(self.revision);
                self.audit.push(audited(key, None, Some(&document)));
                written.push(document);
                self.restored.push(format!("{record} (revision {from})"));
                restored_from(self.revision, from, self.unreadable)
            }
            None => {
                self.audit.push(audited(key, None, None));
                deleted.push(key.to_owned());
                self.restored
                    .push(format!("{record} (deleted at revision {from})"));
                Outcome::Restored {
                    revision: self.revision,
                    from: format!("its deletion at revision {from}: the record is deleted"),
                }
            }
        }
    }
}

/// The outcome of restoring a document to its version of revision `from`, in `revision`.
fn restored_from(revision: u64, from: u64, unreadable: &[u64]) -> Outcome {
    let later: Vec<u64> = unreadable.iter().copied().filter(|r| *r > from).collect();
    Outcome::Restored {
        revision,
        from: if later.is_empty() {
            format!("its version of revision {from}")
        } else {
            format!(
                "its version of revision {from}; the audit entries of revisions {later:?} cannot \
                 be read and may have changed it later"
            )
        },
    }
}

/// A key list after a change that removed `removed` and appended `added`.
fn replay(mut keys: Vec<String>, removed: &[String], added: Vec<String>) -> Vec<String> {
    if !removed.is_empty() {
        let removed: HashSet<&str> = removed.iter().map(String::as_str).collect();
        keys.retain(|k| !removed.contains(k.as_str()));
    }
    keys.extend(added);
    keys
}
