//! The Admin API's writes as operations on [`Environments`]: each builds a change against the
//! current snapshot and commits it through [`Environments::write`], so every one is
//! validated, versioned, audited and durable in the same way. The gRPC layer only maps
//! messages to these calls.

use flagstaff_engine::{reshuffle, ChangeSet, Flag, KeyPatch, Segment, Serve, Snapshot};

use crate::environments::{Committed, Environments, WriteContext};
use crate::error::ServerError;
use crate::storage::{AuditChange, Store};
use crate::versions::{version_conflict, At};

/// The flag `key` of `environment`, which must exist.
pub(crate) fn flag_in<'a>(
    snapshot: &'a Snapshot,
    key: &str,
    environment: &str,
) -> Result<&'a Flag, ServerError> {
    snapshot.flag(key).ok_or_else(|| {
        ServerError::NotFound(format!("no flag {key:?} in environment {environment:?}"))
    })
}

/// The segment `key` of `environment`, which must exist.
fn segment_in<'a>(
    snapshot: &'a Snapshot,
    key: &str,
    environment: &str,
) -> Result<&'a Segment, ServerError> {
    snapshot.segment(key).ok_or_else(|| {
        ServerError::NotFound(format!("no segment {key:?} in environment {environment:?}"))
    })
}

/// The flag `key`, which must exist and, when a version is expected, be at that version. A
/// flag that does not exist has no version, so an expectation for it is a conflict, not
/// "not found".
pub(crate) fn existing_flag<'a>(
    snapshot: &'a Snapshot,
    key: &str,
    at: At<'_>,
    expected: Option<u64>,
) -> Result<&'a Flag, ServerError> {
    let actual = snapshot.flag(key).map(|f| f.version);
    if let Some(conflict) = version_conflict("flag", key, expected, actual, at) {
        return Err(conflict);
    }
    flag_in(snapshot, key, at.environment)
}

/// The segment `key`, which must exist and, when a version is expected, be at that version.
fn existing_segment<'a>(
    snapshot: &'a Snapshot,
    key: &str,
    at: At<'_>,
    expected: Option<u64>,
) -> Result<&'a Segment, ServerError> {
    let actual = snapshot.segment(key).map(|s| s.version);
    if let Some(conflict) = version_conflict("segment", key, expected, actual, at) {
        return Err(conflict);
    }
    segment_in(snapshot, key, at.environment)
}

pub(crate) fn flags_only(flags: Vec<Flag>) -> ChangeSet {
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

/// A promotion from one environment to another, for naming what the target lacks and the
/// commands that copy it.
struct Promotion<'a> {
    from: &'a str,
    to: &'a str,
    source: &'a Snapshot,
    target: &'a Snapshot,
}

impl Promotion<'_> {
    /// The refusal to promote flag `key` to a target that lacks the prerequisite flags
    /// `prerequisites` and the segments `segments` (each sorted), with the commands that copy
    /// them: prerequisites first (a flag is never promoted along with another), segments
    /// along with the flag or one by one.
    fn lacking(&self, key: &str, prerequisites: &[&str], segments: &[&str]) -> ServerError {
        let (from, to) = (self.from, self.to);
        let mut needs: Vec<String> = prerequisites
            .iter()
            .map(|p| format!("prerequisite flag {p:?}"))
            .chain(segments.iter().map(|s| format!("segment {s:?}")))
            .collect();
        needs.sort();
        let mut steps = Vec::new();
        if !prerequisites.is_empty() {
            let commands: Vec<String> = prerequisites
                .iter()
                .map(|p| {
                    let lacks_segments = self.source.flag(p).is_some_and(|f| {
                        f.segment_refs().any(|s| self.target.segment(s).is_none())
                    });
                    format!(
                        "`flagstaff flag promote {p} --from {from} --to {to}{}`",
                        if lacks_segments {
                            " --with-segments"
                        } else {
                            ""
                        }
                    )
                })
                .collect();
            steps.push(format!(
                "promote the prerequisite flags first: {}",
                commands.join(", ")
            ));
        }
        if !segments.is_empty() {
            let commands: Vec<String> = segments
                .iter()
                .map(|s| format!("`flagstaff segment promote {s} --from {from} --to {to}`"))
                .collect();
            steps.push(format!(
                "copy the segments along with the flag (`flagstaff flag promote {key} --from \
                 {from} --to {to} --with-segments`) or before it ({})",
                commands.join(", ")
            ));
        }
        ServerError::Precondition(format!(
            "environment {to:?} lacks what flag {key:?} needs: {}; {}",
            needs.join(", "),
            steps.join("; then ")
        ))
    }
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
        self.write_at(ctx, |current, at| {
            existing_flag(current, &flag.key, at, flag.version)?;
            Ok(flags_only(vec![flag]))
        })
    }

    /// Deletes a flag no other flag requires; when `expected` is given, the flag must be at
    /// that version.
    pub fn delete_flag(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        expected: Option<u64>,
    ) -> Result<Committed, ServerError> {
        self.write_at(ctx, |current, at| {
            existing_flag(current, key, at, expected)?;
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

    /// Turns a flag on or off (the kill switch); when `expected` is given, the flag must be
    /// at that version.
    pub fn set_flag_enabled(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        enabled: bool,
        expected: Option<u64>,
    ) -> Result<Committed, ServerError> {
        self.write_at(ctx, |current, at| {
            let flag = existing_flag(current, key, at, expected)?;
            Ok(flags_only(vec![Flag {
                enabled,
                version: None,
                ..flag.clone()
            }]))
        })
    }

    /// Replaces a flag's default serve; when `expected` is given, the flag must be at that
    /// version. Unless `force`, replacing a split by one that buckets by another attribute
    /// or orders its variants differently is refused: it would move contexts between
    /// variants whose weights did not change.
    pub fn set_default_serve(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        serve: Serve,
        force: bool,
        expected: Option<u64>,
    ) -> Result<Committed, ServerError> {
        self.write_at(ctx, |current, at| {
            let flag = existing_flag(current, key, at, expected)?;
            if let (false, Serve::Split(old), Serve::Split(new)) = (force, &flag.default, &serve) {
                if let Some(why) = reshuffle(old, new) {
                    return Err(ServerError::Precondition(format!(
                        "the new default split of flag {key:?} would reshuffle contexts: {why}; \
                         set force to do it anyway"
                    )));
                }
            }
            Ok(flags_only(vec![Flag {
                default: serve,
                version: None,
                ..flag.clone()
            }]))
        })
    }

    /// Writes a flag as it was at `version`, as a new, audited change; when `expected` is
    /// given, the flag must be at that version now (so it must exist).
    pub fn revert_flag(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        version: u64,
        expected: Option<u64>,
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
                version: expected,
                ..*old
            }]))
        })
    }

    /// Copies a flag from one environment into another, refusing when the target lacks a
    /// prerequisite flag it requires, or a segment its rules use; with `with_segments`, the
    /// segments its rules use are copied along, in the same revision (created when missing,
    /// replaced when different). When `expected` is given, the flag must be at that version
    /// in the target.
    pub fn promote_flag(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        from: &str,
        expected: Option<u64>,
        with_segments: bool,
    ) -> Result<Committed, ServerError> {
        let source = self.get(from)?.current();
        let source = &source.snapshot;
        let flag = flag_in(source, key, from)?.clone();
        self.write(ctx, |target| {
            let mut used: Vec<&str> = flag.segment_refs().collect();
            used.sort_unstable();
            used.dedup();
            let mut prerequisites: Vec<&str> = flag
                .prerequisites
                .iter()
                .map(|p| p.flag.as_str())
                .filter(|p| target.flag(p).is_none())
                .collect();
            prerequisites.sort_unstable();
            prerequisites.dedup();
            let segments: Vec<&str> = used
                .iter()
                .copied()
                .filter(|s| !with_segments && target.segment(s).is_none())
                .collect();
            if !prerequisites.is_empty() || !segments.is_empty() {
                let promotion = Promotion {
                    from,
                    to: ctx.environment,
                    source,
                    target,
                };
                return Err(promotion.lacking(key, &prerequisites, &segments));
            }
            let segments = if with_segments {
                used.iter()
                    .map(|s| {
                        let segment = segment_in(source, s, from)?;
                        Ok(Segment {
                            version: None,
                            ..segment.clone()
                        })
                    })
                    .collect::<Result<_, ServerError>>()?
            } else {
                Vec::new()
            };
            Ok(ChangeSet {
                flags: vec![Flag {
                    version: expected,
                    ..flag
                }],
                segments,
                ..ChangeSet::default()
            })
        })
    }

    /// Copies a segment, key lists included, from one environment into another, creating or
    /// replacing it there; when `expected` is given, the segment must be at that version in
    /// the target.
    pub fn promote_segment(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        from: &str,
        expected: Option<u64>,
    ) -> Result<Committed, ServerError> {
        let source = self.get(from)?.current();
        let segment = segment_in(&source.snapshot, key, from)?;
        self.write(ctx, |_| {
            Ok(ChangeSet {
                segments: vec![Segment {
                    version: expected,
                    ..segment.clone()
                }],
                ..ChangeSet::default()
            })
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
        self.write_at(ctx, |current, at| {
            existing_segment(current, &segment.key, at, segment.version)?;
            Ok(ChangeSet {
                segments: vec![segment],
                ..ChangeSet::default()
            })
        })
    }

    /// Deletes a segment no flag's rules use; when `expected` is given, the segment must be
    /// at that version.
    pub fn delete_segment(
        &self,
        ctx: WriteContext<'_>,
        key: &str,
        expected: Option<u64>,
    ) -> Result<Committed, ServerError> {
        self.write_at(ctx, |current, at| {
            existing_segment(current, key, at, expected)?;
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

    /// Adds and removes keys of the lists of the segment `patch.segment`, without sending the
    /// whole lists; when `expected` is given, the segment must be at that version.
    pub fn patch_segment_keys(
        &self,
        ctx: WriteContext<'_>,
        patch: &KeyPatch,
        expected: Option<u64>,
    ) -> Result<Committed, ServerError> {
        self.write_at(ctx, |current, at| {
            let segment = existing_segment(current, &patch.segment, at, expected)?;
            let patched = Segment {
                version: None,
                ..patch.apply(segment)
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
        self.apply_with(ctx, changes, ApplyOptions::default())
    }

    /// Applies flags and segments in one revision, all or nothing: with `prune`, also deletes
    /// every flag and segment they do not hold; with `dry_run`, validates and reports what
    /// would change, and commits nothing (see [`Environments::plan`]).
    pub fn apply_with(
        &self,
        ctx: WriteContext<'_>,
        changes: ChangeSet,
        options: ApplyOptions,
    ) -> Result<Committed, ServerError> {
        let duplicates = duplicate_keys(&changes);
        if !duplicates.is_empty() {
            return Err(ServerError::Invalid(duplicates.join("\n")));
        }
        let build = |current: &Snapshot| {
            let mut changes = changes;
            if options.prune {
                changes.deleted_flags = absent(current.flags().map(|f| &f.key), &changes.flags);
                changes.deleted_segments =
                    absent(current.segments().map(|s| &s.key), &changes.segments);
            }
            Ok(changes)
        };
        if options.dry_run {
            self.plan(ctx.environment, build)
        } else {
            self.write(ctx, build)
        }
    }
}

/// How [`Environments::apply_with`] applies documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Also delete every flag and segment the documents do not hold, so that the environment
    /// ends up equal to them.
    pub prune: bool,
    /// Validate and report what would change; commit nothing.
    pub dry_run: bool,
}

/// A document that has a key.
trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for Flag {
    fn key(&self) -> &str {
        &self.key
    }
}

impl Keyed for Segment {
    fn key(&self) -> &str {
        &self.key
    }
}

/// The keys of `existing` that none of `kept` has, sorted.
fn absent<'a>(existing: impl Iterator<Item = &'a String>, kept: &[impl Keyed]) -> Vec<String> {
    let kept: std::collections::HashSet<&str> = kept.iter().map(Keyed::key).collect();
    let mut keys: Vec<String> = existing
        .filter(|k| !kept.contains(k.as_str()))
        .cloned()
        .collect();
    keys.sort_unstable();
    keys
}

/// A problem for every key given to more than one flag or segment of `changes`, named as
/// validation names them: a set of documents cannot say twice what one document is.
fn duplicate_keys(changes: &ChangeSet) -> Vec<String> {
    fn repeated(what: &str, list: &str, docs: &[impl Keyed]) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut reported = std::collections::HashSet::new();
        docs.iter()
            .map(Keyed::key)
            .filter(|k| !seen.insert(*k) && reported.insert(*k))
            .map(|k| {
                format!(
                    "{list}[{}]: duplicate {what} key {}",
                    flagstaff_engine::clip(k),
                    flagstaff_engine::quote(k)
                )
            })
            .collect()
    }
    let mut problems = repeated("flag", "flags", &changes.flags);
    problems.extend(repeated("segment", "segments", &changes.segments));
    problems
}
