//! The Admin API's writes as operations on [`Environments`]: each builds a change against the
//! current snapshot and commits it through [`Environments::write`], so every one is
//! validated, versioned, audited and durable in the same way. The gRPC layer only maps
//! messages to these calls.

use flagstaff_engine::{ChangeSet, Flag, Segment, Serve, Snapshot};

use crate::environments::{Committed, Environments, WriteContext};
use crate::error::ServerError;
use crate::storage::{AuditChange, Store};

fn existing_flag<'a>(
    snapshot: &'a Snapshot,
    key: &str,
    environment: &str,
) -> Result<&'a Flag, ServerError> {
    snapshot.flag(key).ok_or_else(|| {
        ServerError::NotFound(format!("no flag {key:?} in environment {environment:?}"))
    })
}

fn existing_segment<'a>(
    snapshot: &'a Snapshot,
    key: &str,
    environment: &str,
) -> Result<&'a Segment, ServerError> {
    snapshot.segment(key).ok_or_else(|| {
        ServerError::NotFound(format!("no segment {key:?} in environment {environment:?}"))
    })
}

fn flags_only(flags: Vec<Flag>) -> ChangeSet {
    ChangeSet {
        flags,
        ..ChangeSet::default()
    }
}

/// The flags that list `key` as a prerequisite, sorted.
fn requiring<'a>(snapshot: &'a Snapshot, key: &str) -> Vec<&'a str> {
    let mut keys: Vec<&str> = snapshot
        .flags()
        .filter(|f| f.prerequisites.iter().any(|p| p.flag == key))
        .map(|f| f.key.as_str())
        .collect();
    keys.sort_unstable();
    keys
}

/// The flags whose rules use segment `key`, sorted.
fn using_segment<'a>(snapshot: &'a Snapshot, key: &str) -> Vec<&'a str> {
    let mut keys: Vec<&str> = snapshot
        .flags()
        .filter(|f| f.segment_refs().any(|s| s == key))
        .map(|f| f.key.as_str())
        .collect();
    keys.sort_unstable();
    keys
}

fn quoted(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<S: Store> Environments<S> {
    /// Creates a flag that does not exist yet.
    pub fn create_flag(&self, ctx: WriteContext<'_>, flag: Flag) -> Result<Committed, ServerError> {
        self.write(ctx, |current| {
            if current.flag(&flag.key).is_some() {
                return Err(ServerError::AlreadyExists(format!(
                    "flag {:?} already exists in environment {:?}",
                    flag.key, ctx.environment
                )));
            }
            Ok(flags_only(vec![flag]))
        })
    }

    /// Replaces an existing flag; its `version`, when given, must be the current one.
    pub fn update_flag(&self, ctx: WriteContext<'_>, flag: Flag) -> Result<Committed, ServerError> {
        self.write(ctx, |current| {
            existing_flag(current, &flag.key, ctx.environment)?;
            Ok(flags_only(vec![flag]))
        })
    }

    /// Deletes a flag no other flag requires.
    pub fn delete_flag(&self, ctx: WriteContext<'_>, key: &str) -> Result<Committed, ServerError> {
        self.write(ctx, |current| {
            existing_flag(current, key, ctx.environment)?;
            let dependents = requiring(current, key);
            if !dependents.is_empty() {
                return Err(ServerError::Precondition(format!(
                    "flag {key:?} is a prerequisite of {}; remove it from them first",
                    quoted(&dependents)
                )));
            }
            Ok(ChangeSet {
                deleted_flags: vec![key.to_owned()],
                ..ChangeSet::default()
            })
        })
    }

    /// Turns a flag on or off (the kill switch).
    pub fn set_flag_enabled(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        enabled: bool,
    ) -> Result<Committed, ServerError> {
        self.write(ctx, |current| {
            let flag = existing_flag(current, key, ctx.environment)?;
            Ok(flags_only(vec![Flag {
                enabled,
                version: None,
                ..flag.clone()
            }]))
        })
    }

    /// Replaces a flag's default serve: one variant, or a split for a percentage rollout.
    pub fn set_default_serve(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        serve: Serve,
    ) -> Result<Committed, ServerError> {
        self.write(ctx, |current| {
            let flag = existing_flag(current, key, ctx.environment)?;
            Ok(flags_only(vec![Flag {
                default: serve,
                version: None,
                ..flag.clone()
            }]))
        })
    }

    /// Writes a flag as it was at `version` (the revision of one of its changes), as a new,
    /// audited change.
    pub fn revert_flag(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        version: u64,
    ) -> Result<Committed, ServerError> {
        let entry = self
            .store()
            .history(ctx.environment, Some(key), Some(version + 1), 1)?;
        let old = entry
            .into_iter()
            .filter(|e| e.revision == version)
            .flat_map(|e| e.changes)
            .find_map(|c| match c {
                AuditChange::Flag {
                    key: k,
                    after: Some(after),
                    ..
                } if k == key => Some(after),
                _ => None,
            })
            .ok_or_else(|| {
                ServerError::NotFound(format!(
                    "flag {key:?} has no version {version} in the history of environment {:?}",
                    ctx.environment
                ))
            })?;
        self.write(ctx, |_| {
            Ok(flags_only(vec![Flag {
                version: None,
                ..*old
            }]))
        })
    }

    /// Copies a flag from one environment into another, refusing when the target lacks a
    /// segment or prerequisite flag it needs.
    pub fn promote_flag(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        from: &str,
    ) -> Result<Committed, ServerError> {
        let source = self.get(from)?.current();
        let flag = existing_flag(&source.snapshot, key, from)?.clone();
        self.write(ctx, |target| {
            let mut missing: Vec<String> = flag
                .segment_refs()
                .filter(|s| target.segment(s).is_none())
                .map(|s| format!("segment {s:?}"))
                .collect();
            missing.extend(
                flag.prerequisites
                    .iter()
                    .filter(|p| target.flag(&p.flag).is_none())
                    .map(|p| format!("prerequisite flag {:?}", p.flag)),
            );
            missing.sort();
            missing.dedup();
            if !missing.is_empty() {
                return Err(ServerError::Precondition(format!(
                    "environment {:?} lacks what flag {key:?} needs: {}; promote those first",
                    ctx.environment,
                    missing.join(", ")
                )));
            }
            Ok(flags_only(vec![Flag {
                version: None,
                ..flag.clone()
            }]))
        })
    }

    /// Creates a segment that does not exist yet.
    pub fn create_segment(
        &self,
        ctx: WriteContext<'_>,
        segment: Segment,
    ) -> Result<Committed, ServerError> {
        self.write(ctx, |current| {
            if current.segment(&segment.key).is_some() {
                return Err(ServerError::AlreadyExists(format!(
                    "segment {:?} already exists in environment {:?}",
                    segment.key, ctx.environment
                )));
            }
            Ok(ChangeSet {
                segments: vec![segment],
                ..ChangeSet::default()
            })
        })
    }

    /// Replaces an existing segment; its `version`, when given, must be the current one.
    pub fn update_segment(
        &self,
        ctx: WriteContext<'_>,
        segment: Segment,
    ) -> Result<Committed, ServerError> {
        self.write(ctx, |current| {
            existing_segment(current, &segment.key, ctx.environment)?;
            Ok(ChangeSet {
                segments: vec![segment],
                ..ChangeSet::default()
            })
        })
    }

    /// Deletes a segment no flag's rules use.
    pub fn delete_segment(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
    ) -> Result<Committed, ServerError> {
        self.write(ctx, |current| {
            existing_segment(current, key, ctx.environment)?;
            let users = using_segment(current, key);
            if !users.is_empty() {
                return Err(ServerError::Precondition(format!(
                    "segment {key:?} is used by the rules of {}; remove it from them first",
                    quoted(&users)
                )));
            }
            Ok(ChangeSet {
                deleted_segments: vec![key.to_owned()],
                ..ChangeSet::default()
            })
        })
    }

    /// Adds and removes keys of a segment's `included` and `excluded` lists, without sending
    /// the whole lists.
    pub fn patch_segment_keys(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        patch: &SegmentKeyPatch,
    ) -> Result<Committed, ServerError> {
        self.write(ctx, |current| {
            let segment = existing_segment(current, key, ctx.environment)?;
            let apply = |list: &[String], add: &[String], remove: &[String]| -> Vec<String> {
                let removed: std::collections::HashSet<&str> =
                    remove.iter().map(String::as_str).collect();
                let mut out: Vec<String> = list
                    .iter()
                    .filter(|k| !removed.contains(k.as_str()))
                    .cloned()
                    .collect();
                let present: std::collections::HashSet<String> = out.iter().cloned().collect();
                let mut added = std::collections::HashSet::new();
                out.extend(
                    add.iter()
                        .filter(|k| !present.contains(*k) && added.insert(k.as_str()))
                        .cloned(),
                );
                out
            };
            let patched = Segment {
                included: apply(
                    &segment.included,
                    &patch.add_included,
                    &patch.remove_included,
                ),
                excluded: apply(
                    &segment.excluded,
                    &patch.add_excluded,
                    &patch.remove_excluded,
                ),
                version: patch.expected_version,
                ..segment.clone()
            };
            Ok(ChangeSet {
                segments: vec![patched],
                ..ChangeSet::default()
            })
        })
    }

    /// Applies flags and segments (documents or a whole export) in one revision, all or
    /// nothing. Documents without a `version` replace whatever is there.
    pub fn apply(
        &self,
        ctx: WriteContext<'_>,
        changes: ChangeSet,
    ) -> Result<Committed, ServerError> {
        self.write(ctx, |_| Ok(changes))
    }
}

/// Keys to add to and remove from a segment's lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentKeyPatch {
    /// Keys to add to `included`.
    pub add_included: Vec<String>,
    /// Keys to remove from `included`.
    pub remove_included: Vec<String>,
    /// Keys to add to `excluded`.
    pub add_excluded: Vec<String>,
    /// Keys to remove from `excluded`.
    pub remove_excluded: Vec<String>,
    /// The segment's current version, when the caller wants it checked.
    pub expected_version: Option<u64>,
}
