//! Expected versions: a write that names the version it expects a document at is checked
//! against the document's current one, and a conflict says which of the ways it can happen
//! this one is (a concurrent change, or a version read in another environment).

use flagstaff_engine::{ChangeSet, Snapshot};

use crate::error::ServerError;

/// Where an expected version is checked: an environment and its current revision (every
/// version a document there ever had is at most that revision).
#[derive(Debug, Clone, Copy)]
pub(crate) struct At<'a> {
    /// The environment's key.
    pub environment: &'a str,
    /// Its current revision.
    pub revision: u64,
}

/// The conflict, if any, between an expected version and a document's current one
/// (`actual`: `None` when the document does not exist, else its version) in the environment
/// `at`. No expectation is never a conflict; an expectation of 0 means "must not exist".
///
/// The message names both versions and what to do, and claims a concurrent change only when
/// there was one: when the document changed after the revision it was expected at. An
/// expectation beyond the environment's revision, or one the document cannot have had (its
/// versions only grow, and it is at an earlier one), was read elsewhere: in another
/// environment, typically from `flag get` or `segment get` output applied there.
pub(crate) fn version_conflict(
    what: &str,
    key: &str,
    expected: Option<u64>,
    actual: Option<Option<u64>>,
    at: At<'_>,
) -> Option<ServerError> {
    let expected = expected?;
    let At {
        environment,
        revision,
    } = at;
    let elsewhere = |to: &str| {
        format!(
            "the document was read in another environment; drop `version:` (the expected \
             version) to {to} the {what} whatever its version, or copy it with `flagstaff {what} \
             promote`"
        )
    };
    let message = match actual.map(|v| v.unwrap_or(0)) {
        None if expected == 0 => return None,
        Some(actual) if actual == expected => return None,
        None if expected > revision => format!(
            "{what} {key:?} does not exist in {environment}, and version {expected} is not a \
             revision of {environment} (now {revision}): {}",
            elsewhere("create")
        ),
        Some(actual) if expected > revision => format!(
            "{what} {key:?} is at version {actual} in {environment}, and version {expected} is \
             not a revision of {environment} (now {revision}): {}",
            elsewhere("replace")
        ),
        None => format!(
            "{what} {key:?} does not exist in {environment}, so it is not at version \
             {expected}: it was deleted since, or {}",
            elsewhere("create")
        ),
        Some(actual) if expected == 0 => format!(
            "{what} {key:?} already exists in {environment}, at version {actual}, but version 0 \
             was given, which means it must not exist yet; drop `version:` to replace it"
        ),
        Some(actual) if actual > expected => format!(
            "{what} {key:?} is at version {actual} in {environment}, not {expected}: someone \
             changed it at revision {actual}, after version {expected} was read; read it again \
             and redo the change, or drop `version:` (the expected version) to overwrite that \
             change"
        ),
        Some(actual) => format!(
            "{what} {key:?} is at version {actual} in {environment}, not {expected}, and never \
             had version {expected} (its versions only grow): {}",
            elsewhere("replace")
        ),
    };
    Some(ServerError::VersionConflict(message))
}

/// An expected version that does not match the current document is a conflict.
pub(crate) fn check_versions(
    current: &Snapshot,
    changes: &ChangeSet,
    at: At<'_>,
) -> Result<(), ServerError> {
    for flag in &changes.flags {
        let actual = current.flag(&flag.key).map(|f| f.version);
        if let Some(conflict) = version_conflict("flag", &flag.key, flag.version, actual, at) {
            return Err(conflict);
        }
    }
    for segment in &changes.segments {
        let actual = current.segment(&segment.key).map(|s| s.version);
        if let Some(conflict) =
            version_conflict("segment", &segment.key, segment.version, actual, at)
        {
            return Err(conflict);
        }
    }
    Ok(())
}
