//! Assembling, the SDK's side of the Watch stream: the [`Assembler`] takes the server's
//! messages one by one, checks the protocol (revisions, parts, heartbeats) and puts split
//! segments and patches back together, handing back each complete [`Update`].

use std::collections::{hash_map, HashMap, HashSet};
use std::mem;

use flagstaff_engine::{ChangeSet, Flag, KeyPatch, Segment, Snapshot};

use crate::pb::{self, watch_response::Response};
use crate::watch::pack::DeltaParts;
use crate::ConvertError;

/// Why the server's messages do not make a valid Watch stream. The stream cannot go on: the
/// client drops it and subscribes again.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message with none of its alternatives set.
    #[error("server message has no alternative set")]
    EmptyMessage,
    /// A snapshot_chunk or snapshot_end with no snapshot_begin before it.
    #[error("{message} without a snapshot_begin")]
    NoSnapshotOpen {
        /// The message received: `snapshot_chunk` or `snapshot_end`.
        message: &'static str,
    },
    /// Something other than a snapshot_chunk or snapshot_end between a snapshot_begin and its
    /// snapshot_end.
    #[error("{message} inside a snapshot, where only snapshot_chunk and snapshot_end may come")]
    SnapshotInterrupted {
        /// The message received, e.g. `delta`.
        message: &'static str,
    },
    /// Something other than the next part of a delta sent in parts (or a new snapshot) after a
    /// part with `more` set.
    #[error("{message} while delta {revision} awaits its next part")]
    DeltaInterrupted {
        /// The message received, e.g. `heartbeat`.
        message: &'static str,
        /// The revision of the unfinished delta.
        revision: u64,
    },
    /// A snapshot holds more or fewer flags or segments than its snapshot_begin announced.
    #[error("snapshot holds {received} {what}, but its snapshot_begin announced {announced}")]
    CountMismatch {
        /// `flags` or `segments`.
        what: &'static str,
        /// The count of the snapshot_begin.
        announced: u32,
        /// How many the snapshot's chunks held (so far, when more than announced).
        received: usize,
    },
    /// A snapshot sends the same segment twice, so its continuations are ambiguous.
    #[error("snapshot sends segment \"{segment}\" twice")]
    DuplicateSegment {
        /// The segment's key.
        segment: String,
    },
    /// A snapshot's segment_keys continue a segment the snapshot has not sent.
    #[error("snapshot_chunk continues segment \"{segment}\", which the snapshot has not sent")]
    UnknownContinuation {
        /// The segment's key.
        segment: String,
    },
    /// A snapshot's segment_keys remove keys; continuations only append.
    #[error("snapshot_chunk continues segment \"{segment}\" with removals; continuations only append keys")]
    RemovalInContinuation {
        /// The segment's key.
        segment: String,
    },
    /// A delta or heartbeat before any snapshot (of a stream not resumed at a known revision).
    #[error("{message} before any snapshot")]
    BeforeSnapshot {
        /// The message received: `delta` or `heartbeat`.
        message: &'static str,
    },
    /// A delta whose revision is not the next one: a revision was missed or repeated.
    #[error("delta of revision {got}, expected revision {expected}")]
    DeltaRevision {
        /// The last revision received + 1.
        expected: u64,
        /// The delta's revision.
        got: u64,
    },
    /// A part of a delta sent in parts with another revision than the parts before it.
    #[error("delta part of revision {got} while delta {expected} awaits its next part")]
    PartRevision {
        /// The revision of the unfinished delta.
        expected: u64,
        /// The part's revision.
        got: u64,
    },
    /// A heartbeat whose revision is not the last one received; ahead, it means a change was
    /// missed.
    #[error("heartbeat at revision {got}, but the last revision received is {current}")]
    HeartbeatRevision {
        /// The last revision received.
        current: u64,
        /// The heartbeat's revision.
        got: u64,
    },
    /// A delta patches the keys of a segment it deletes.
    #[error("delta {revision} patches the keys of segment \"{segment}\", which it deletes")]
    PatchOfDeletedSegment {
        /// The delta's revision.
        revision: u64,
        /// The segment's key.
        segment: String,
    },
    /// A delta patches the keys of a segment that neither it nor the client's snapshot holds.
    #[error("delta {revision} patches the keys of segment \"{segment}\", which neither the delta nor the snapshot holds")]
    PatchOfMissingSegment {
        /// The delta's revision.
        revision: u64,
        /// The segment's key.
        segment: String,
    },
    /// A flag or segment that has no domain form.
    #[error(transparent)]
    Convert(#[from] ConvertError),
}

/// A complete update of the client's state, assembled from the server's messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The environment's whole state: it replaces everything the client holds.
    Snapshot {
        /// The environment's epoch, to send back in Subscribe and Ack.
        epoch: String,
        /// The revision of the snapshot.
        revision: u64,
        /// How often the server sends a heartbeat when it has nothing else to send.
        heartbeat_interval_ms: u64,
        /// Every flag, each complete, in the order sent.
        flags: Vec<Flag>,
        /// Every segment, each complete (continuations appended), in the order sent.
        segments: Vec<Segment>,
    },
    /// The changes of the next revision.
    Delta(Delta),
    /// The stream is alive and the client is up to date.
    Heartbeat {
        /// The environment's current revision, the client's last.
        revision: u64,
    },
}

/// One revision's changes, owned: the assembled parts of a Delta.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// The revision the changes make.
    pub revision: u64,
    /// Flags created or replaced, each complete with its new version.
    pub flags: Vec<Flag>,
    /// Keys of flags deleted.
    pub deleted_flags: Vec<String>,
    /// Segments created or replaced, each complete with its new version: the continuations of
    /// a segment sent in parts are appended to it.
    pub segments: Vec<Segment>,
    /// Keys of segments deleted.
    pub deleted_segments: Vec<String>,
    /// Changes to the key lists of segments the revision does not replace, applied after the
    /// upserts, in order. A patch sent in pieces comes back as one patch when its pieces can be
    /// merged (they can when split by [`pack_delta`](crate::watch::pack_delta)).
    pub patches: Vec<KeyPatch>,
}

impl Delta {
    /// The change set this delta makes to `base`, the client's current snapshot: deletions and
    /// upserts as they are, and each key patch applied to the segment as this delta upserts it
    /// or, failing that, as `base` holds it, the result an upsert with version = `revision`.
    ///
    /// Fails when a patch names a segment the delta deletes or that exists in neither.
    pub fn resolve(self, base: &Snapshot) -> Result<ChangeSet, ProtocolError> {
        let Delta {
            revision,
            flags,
            deleted_flags,
            mut segments,
            deleted_segments,
            patches,
        } = self;
        if !patches.is_empty() {
            let deleted: HashSet<&str> = deleted_segments.iter().map(String::as_str).collect();
            let mut index: HashMap<String, usize> = segments
                .iter()
                .enumerate()
                .map(|(i, segment)| (segment.key.clone(), i))
                .collect();
            for patch in &patches {
                let i = match index.get(&patch.segment) {
                    Some(&i) => {
                        segments[i] = patch.apply(&segments[i]);
                        i
                    }
                    None => {
                        if deleted.contains(patch.segment.as_str()) {
                            return Err(ProtocolError::PatchOfDeletedSegment {
                                revision,
                                segment: patch.segment.clone(),
                            });
                        }
                        let Some(current) = base.segment(&patch.segment) else {
                            return Err(ProtocolError::PatchOfMissingSegment {
                                revision,
                                segment: patch.segment.clone(),
                            });
                        };
                        index.insert(patch.segment.clone(), segments.len());
                        segments.push(patch.apply(current));
                        segments.len() - 1
                    }
                };
                segments[i].version = Some(revision);
            }
        }
        Ok(ChangeSet {
            flags,
            deleted_flags,
            segments,
            deleted_segments,
        })
    }

    /// The delta, borrowed, as [`pack_delta`](crate::watch::pack_delta) takes it.
    pub fn parts(&self) -> DeltaParts<'_> {
        DeltaParts {
            revision: self.revision,
            flags: &self.flags,
            deleted_flags: &self.deleted_flags,
            segments: &self.segments,
            deleted_segments: &self.deleted_segments,
            patches: &self.patches,
        }
    }
}

/// The client's end of a Watch stream: takes the server's messages one by one, checks that
/// they follow the protocol, and returns each update once all of its messages have arrived.
///
/// It knows the epoch and revision the client is at, and checks against them: a delta must be
/// the next revision (all parts of it the same one), a heartbeat must name the client's
/// revision (one ahead means a change was missed). A snapshot may come at any time, even
/// between the parts of a delta (the server sends one to a client too slow to keep up), and
/// sets the position whatever its epoch and revision.
///
/// After an error the assembler drops what it was collecting and keeps its position, the last
/// complete update's.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The epoch and revision of the last complete update.
    position: Option<(String, u64)>,
    /// The snapshot or delta being collected.
    open: Open,
}

#[derive(Debug, Default)]
enum Open {
    #[default]
    Nothing,
    Snapshot(SnapshotInProgress),
    Delta(Delta),
}

impl Assembler {
    /// An assembler for a stream subscribed without state: it starts with a snapshot.
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// An assembler for a stream subscribed with `epoch` and `since_revision`, the state the
    /// client holds: it accepts the delta of revision `since_revision + 1` (or a snapshot).
    pub fn resume(epoch: impl Into<String>, since_revision: u64) -> Assembler {
        Assembler {
            position: Some((epoch.into(), since_revision)),
            open: Open::Nothing,
        }
    }

    /// The epoch and revision of the last complete update: `None` before the first snapshot.
    pub fn position(&self) -> Option<(&str, u64)> {
        self.position
            .as_ref()
            .map(|(epoch, revision)| (epoch.as_str(), *revision))
    }

    /// Feeds one server message; returns the update it completes, if it completes one.
    pub fn receive(&mut self, message: pb::WatchResponse) -> Result<Option<Update>, ProtocolError> {
        let response = message.response.ok_or(ProtocolError::EmptyMessage)?;
        // What is being collected goes back only when the message continues it, so that after
        // an error nothing half-received remains.
        match (mem::take(&mut self.open), response) {
            (Open::Snapshot(_), Response::SnapshotBegin(_)) => {
                Err(ProtocolError::SnapshotInterrupted {
                    message: "snapshot_begin",
                })
            }
            // A new snapshot replaces everything, a delta in parts included.
            (_, Response::SnapshotBegin(begin)) => {
                self.open = Open::Snapshot(SnapshotInProgress::new(begin));
                Ok(None)
            }
            (Open::Snapshot(mut snapshot), Response::SnapshotChunk(chunk)) => {
                snapshot.add(chunk)?;
                self.open = Open::Snapshot(snapshot);
                Ok(None)
            }
            (Open::Snapshot(snapshot), Response::SnapshotEnd(_)) => {
                let position = (snapshot.begin.epoch.clone(), snapshot.begin.revision);
                let update = snapshot.finish()?;
                self.position = Some(position);
                Ok(Some(update))
            }
            (Open::Snapshot(_), other) => Err(ProtocolError::SnapshotInterrupted {
                message: name(&other),
            }),
            (Open::Delta(delta), Response::Delta(part)) => {
                if part.revision != delta.revision {
                    return Err(ProtocolError::PartRevision {
                        expected: delta.revision,
                        got: part.revision,
                    });
                }
                self.delta_part(delta, part)
            }
            (Open::Delta(delta), other) => Err(ProtocolError::DeltaInterrupted {
                message: name(&other),
                revision: delta.revision,
            }),
            (Open::Nothing, other @ (Response::SnapshotChunk(_) | Response::SnapshotEnd(_))) => {
                Err(ProtocolError::NoSnapshotOpen {
                    message: name(&other),
                })
            }
            (Open::Nothing, Response::Delta(part)) => {
                let current = self.revision("delta")?;
                if current.checked_add(1) != Some(part.revision) {
                    return Err(ProtocolError::DeltaRevision {
                        expected: current.saturating_add(1),
                        got: part.revision,
                    });
                }
                let delta = Delta {
                    revision: part.revision,
                    ..Delta::default()
                };
                self.delta_part(delta, part)
            }
            (Open::Nothing, Response::Heartbeat(heartbeat)) => {
                let current = self.revision("heartbeat")?;
                if heartbeat.revision != current {
                    return Err(ProtocolError::HeartbeatRevision {
                        current,
                        got: heartbeat.revision,
                    });
                }
                Ok(Some(Update::Heartbeat {
                    revision: heartbeat.revision,
                }))
            }
        }
    }

    /// The revision the client is at, which a `message` needs.
    fn revision(&self, message: &'static str) -> Result<u64, ProtocolError> {
        self.position
            .as_ref()
            .map(|(_, revision)| *revision)
            .ok_or(ProtocolError::BeforeSnapshot { message })
    }

    /// Adds a part of the right revision to `delta`; completes it when it is the last part.
    fn delta_part(
        &mut self,
        mut delta: Delta,
        part: pb::Delta,
    ) -> Result<Option<Update>, ProtocolError> {
        let more = part.more;
        for flag in part.flags {
            delta.flags.push(Flag::try_from(flag)?);
        }
        delta.deleted_flags.extend(part.deleted_flags);
        for segment in part.segments {
            delta.segments.push(Segment::try_from(segment)?);
        }
        delta.deleted_segments.extend(part.deleted_segments);
        // Kept as sent until the last part: patches apply after all upserts.
        delta
            .patches
            .extend(part.segment_patches.into_iter().map(KeyPatch::from));
        if more {
            self.open = Open::Delta(delta);
            return Ok(None);
        }
        let delta = merge_patches(delta)?;
        if let Some((_, revision)) = &mut self.position {
            *revision = delta.revision;
        }
        Ok(Some(Update::Delta(delta)))
    }
}

/// The message's name in `sync.proto`, for errors.
fn name(response: &Response) -> &'static str {
    match response {
        Response::SnapshotBegin(_) => "snapshot_begin",
        Response::SnapshotChunk(_) => "snapshot_chunk",
        Response::SnapshotEnd(_) => "snapshot_end",
        Response::Delta(_) => "delta",
        Response::Heartbeat(_) => "heartbeat",
    }
}

/// A snapshot being collected.
#[derive(Debug)]
struct SnapshotInProgress {
    begin: pb::SnapshotBegin,
    flags: Vec<Flag>,
    segments: Vec<Segment>,
    /// Where each segment is in `segments`, for its continuations.
    index: HashMap<String, usize>,
}

impl SnapshotInProgress {
    fn new(begin: pb::SnapshotBegin) -> SnapshotInProgress {
        SnapshotInProgress {
            begin,
            flags: Vec::new(),
            segments: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn add(&mut self, chunk: pb::SnapshotChunk) -> Result<(), ProtocolError> {
        for flag in chunk.flags {
            self.flags.push(Flag::try_from(flag)?);
        }
        for segment in chunk.segments {
            let segment = Segment::try_from(segment)?;
            match self.index.entry(segment.key.clone()) {
                hash_map::Entry::Occupied(entry) => {
                    return Err(ProtocolError::DuplicateSegment {
                        segment: entry.remove_entry().0,
                    })
                }
                hash_map::Entry::Vacant(entry) => entry.insert(self.segments.len()),
            };
            self.segments.push(segment);
        }
        // More than announced is an error at once, rather than after collecting all of it.
        self.check_counts(|received, announced| received > announced)?;
        for keys in chunk.segment_keys {
            if !keys.remove_included.is_empty() || !keys.remove_excluded.is_empty() {
                return Err(ProtocolError::RemovalInContinuation {
                    segment: keys.segment,
                });
            }
            let Some(&i) = self.index.get(&keys.segment) else {
                return Err(ProtocolError::UnknownContinuation {
                    segment: keys.segment,
                });
            };
            let segment = &mut self.segments[i];
            segment.included.extend(keys.add_included);
            segment.excluded.extend(keys.add_excluded);
        }
        Ok(())
    }

    /// Fails when `wrong(received, announced)` holds for the flags or the segments.
    fn check_counts(&self, wrong: impl Fn(usize, usize) -> bool) -> Result<(), ProtocolError> {
        for (what, received, announced) in [
            ("flags", self.flags.len(), self.begin.flag_count),
            ("segments", self.segments.len(), self.begin.segment_count),
        ] {
            if wrong(received, announced as usize) {
                return Err(ProtocolError::CountMismatch {
                    what,
                    announced,
                    received,
                });
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Update, ProtocolError> {
        self.check_counts(|received, announced| received != announced)?;
        Ok(Update::Snapshot {
            epoch: self.begin.epoch,
            revision: self.begin.revision,
            heartbeat_interval_ms: self.begin.heartbeat_interval_ms,
            flags: self.flags,
            segments: self.segments,
        })
    }
}

/// A delta whose every part has arrived, its patches as sent, made whole: patches of segments
/// it upserts are applied to them (continuations of a split segment appended), and pieces of a
/// split patch merged back into one.
fn merge_patches(mut delta: Delta) -> Result<Delta, ProtocolError> {
    if delta.patches.is_empty() {
        return Ok(delta);
    }
    let sent = mem::take(&mut delta.patches);
    let upserted: HashMap<String, usize> = delta
        .segments
        .iter()
        .enumerate()
        .map(|(i, segment)| (segment.key.clone(), i))
        .collect();
    let deleted: HashSet<&str> = delta.deleted_segments.iter().map(String::as_str).collect();
    let mut patches: Vec<KeyPatch> = Vec::new();
    // The last patch of each segment in `patches`; patches of different segments commute.
    let mut last: HashMap<String, usize> = HashMap::new();
    for patch in sent {
        if let Some(&i) = upserted.get(&patch.segment) {
            extend_segment(&mut delta.segments[i], patch);
        } else if deleted.contains(patch.segment.as_str()) {
            return Err(ProtocolError::PatchOfDeletedSegment {
                revision: delta.revision,
                segment: patch.segment,
            });
        } else {
            let merged = match last.get(&patch.segment) {
                Some(&i) => merge(&mut patches[i], patch),
                None => Err(patch),
            };
            if let Err(patch) = merged {
                last.insert(patch.segment.clone(), patches.len());
                patches.push(patch);
            }
        }
    }
    delta.patches = patches;
    Ok(delta)
}

/// Applies a patch to a segment the same delta upserts. One that only adds keys continues a
/// segment sent in parts: its keys are appended as they are, as a snapshot's continuations
/// are, so the segment comes back exactly as sent.
fn extend_segment(segment: &mut Segment, patch: KeyPatch) {
    if patch.remove_included.is_empty() && patch.remove_excluded.is_empty() {
        segment.included.extend(patch.add_included);
        segment.excluded.extend(patch.add_excluded);
    } else {
        *segment = patch.apply(segment);
    }
}

/// Merges `next` into `into`, the patch of the same segment applied just before it, when one
/// patch does what the two do in turn: for each list, when `into` adds nothing to it or `next`
/// removes nothing from it (removing then appending, the order a patch applies). Gives `next`
/// back otherwise.
fn merge(into: &mut KeyPatch, next: KeyPatch) -> Result<(), KeyPatch> {
    if !(into.add_included.is_empty() || next.remove_included.is_empty())
        || !(into.add_excluded.is_empty() || next.remove_excluded.is_empty())
    {
        return Err(next);
    }
    into.remove_included.extend(next.remove_included);
    into.add_included.extend(next.add_included);
    into.remove_excluded.extend(next.remove_excluded);
    into.add_excluded.extend(next.add_excluded);
    Ok(())
}
