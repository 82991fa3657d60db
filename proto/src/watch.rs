//! Both ends of the Watch stream's framing: the server splits a snapshot, or the changes of a
//! revision, into messages that stay within a byte budget ([`pack_snapshot`], [`pack_delta`]);
//! the SDK feeds the messages to an [`Assembler`], which checks the protocol and hands back
//! each complete [`Update`].
//!
//! Splitting follows `sync.proto`: a chunk or delta part holds flags and segments up to the
//! budget ([`CHUNK_BUDGET`] in production); a segment too big for one message goes with the
//! first of its keys, and the rest follow as continuations (`SnapshotChunk.segment_keys`,
//! `Delta.segment_patches`) in the next messages; a key patch too big for one message goes in
//! pieces, all removals before any additions, so that applying the pieces in order is applying
//! the patch. The assembler undoes all of it: a snapshot's and a delta's segments come back
//! complete, and a split patch comes back as the one patch it was.
//!
//! ```
//! use flagstaff_engine::{flag_from_value, Snapshot};
//! use flagstaff_proto::watch::{
//!     pack_delta, pack_snapshot, Assembler, DeltaParts, SnapshotHeader, Update, CHUNK_BUDGET,
//! };
//!
//! let flag = flag_from_value(&serde_json::json!({
//!     "key": "checkout-v2",
//!     "kind": "boolean",
//!     "variants": { "on": true, "off": false },
//!     "off_variant": "off",
//!     "enabled": true,
//!     "default": { "variant": "off" },
//! }))
//! .expect("a flag document");
//!
//! // The server: a snapshot at revision 7, then the delta of revision 8.
//! let header = SnapshotHeader {
//!     epoch: "e1".to_owned(),
//!     revision: 7,
//!     heartbeat_interval_ms: 15_000,
//!     flag_count: 1,
//!     segment_count: 0,
//! };
//! let mut messages: Vec<_> = pack_snapshot(header, [&flag], [], CHUNK_BUDGET).collect();
//! let deleted = ["checkout-v2".to_owned()];
//! let delta = DeltaParts { revision: 8, deleted_flags: &deleted, ..DeltaParts::default() };
//! messages.extend(pack_delta(&delta, CHUNK_BUDGET));
//!
//! // The client.
//! let mut assembler = Assembler::new();
//! let mut updates = Vec::new();
//! for message in messages {
//!     updates.extend(assembler.receive(message).expect("a valid stream"));
//! }
//! assert_eq!(assembler.position(), Some(("e1", 8)));
//! let [Update::Snapshot { flags, .. }, Update::Delta(delta)] = &updates[..] else {
//!     panic!("a snapshot and a delta");
//! };
//! assert_eq!(flags, &[flag]);
//! assert_eq!(delta.deleted_flags, deleted);
//! ```

use std::borrow::Cow;
use std::collections::{hash_map, HashMap, HashSet, VecDeque};
use std::iter::{Fuse, FusedIterator};
use std::mem;

use flagstaff_engine::{ChangeSet, Flag, KeyPatch, Segment, Snapshot};
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{encoded_len_varint, DecodeContext, WireType};
use prost::Message;

use crate::pb::{self, watch_response::Response};
use crate::ConvertError;

/// The most a chunk or delta part holds, in encoded bytes, before the next starts: far below
/// gRPC's default limit of 4 MiB. A flag bigger than that (validation keeps a flag's JSON
/// within 1 MiB, [`MAX_FLAG_BYTES`](flagstaff_engine::MAX_FLAG_BYTES)) goes alone in its message.
///
/// Small, 16 KiB (one HTTP/2 frame at the default frame size), because a gRPC stream keeps an
/// encode buffer as big as the largest messages it has sent for as long as it lives: with
/// 1 MiB chunks, every idle SDK stream of a large environment would hold a megabyte.
pub const CHUNK_BUDGET: usize = 16 << 10;

// ---------------------------------------------------------------------------------------------
// Sizes. Every field of the Watch messages has a number below 16, so its tag is one byte.

/// What `more = true` adds to a delta part: its tag and its value. Counted in every part, so
/// the last one (`more = false`) comes out two bytes smaller than reckoned.
const MORE_LEN: usize = 2;

/// The encoded size of a length-delimited field (a string, a list element or a message) whose
/// content is `len` bytes.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The encoded size of a list of strings.
fn keys_len(keys: &[String]) -> usize {
    keys.iter().map(|key| field_len(key.len())).sum()
}

/// The encoded size of a singular string field, which is left out when empty.
fn string_len(value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        field_len(value.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Packing: the server's side.

/// One revision's changes, borrowed: what the server sends as a Delta.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeltaParts<'a> {
    /// The revision the changes make.
    pub revision: u64,
    /// Flags created or replaced, each complete with its new version.
    pub flags: &'a [Flag],
    /// Keys of flags deleted.
    pub deleted_flags: &'a [String],
    /// Segments created or replaced, each complete with its new version.
    pub segments: &'a [Segment],
    /// Keys of segments deleted.
    pub deleted_segments: &'a [String],
    /// Changes to segments' key lists, applied after the upserts, in order.
    pub patches: &'a [KeyPatch],
}

/// The start of a snapshot: what [`pack_snapshot`] sends as SnapshotBegin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The environment's epoch.
    pub epoch: String,
    /// The revision of the snapshot.
    pub revision: u64,
    /// How often the server sends a heartbeat when it has nothing else to send.
    pub heartbeat_interval_ms: u64,
    /// How many flags the snapshot holds: as many as the flags iterator yields.
    pub flag_count: u32,
    /// How many segments the snapshot holds: as many as the segments iterator yields.
    pub segment_count: u32,
}

/// The messages of one revision: usually one Delta; several, all with its revision and all but
/// the last with `more = true`, when one would exceed `budget` encoded bytes. An empty delta is
/// one message too.
///
/// A patch of a segment that the same revision replaces is applied to the replacement before
/// sending (the protocol applies patches after upserts, so the outcome is the same), so that a
/// delta's `segment_patches` never mix real patches with continuations of a split segment.
pub fn pack_delta(delta: &DeltaParts<'_>, budget: usize) -> Vec<pb::WatchResponse> {
    let revision_len = if delta.revision == 0 {
        0
    } else {
        1 + encoded_len_varint(delta.revision)
    };
    let mut packer = Packer::new(budget, revision_len + MORE_LEN);
    for key in delta.deleted_flags {
        packer.push_key(key, |part| &mut part.deleted_flags);
    }
    for key in delta.deleted_segments {
        packer.push_key(key, |part| &mut part.deleted_segments);
    }
    for flag in delta.flags {
        packer.push_flag(flag);
    }
    let (segments, patches) = fold_patches(delta.segments, delta.patches);
    for segment in &segments {
        packer.push_segment(segment);
    }
    for patch in patches {
        packer.push_patch(patch);
    }
    packer.finish();
    let mut parts = packer.full;
    if parts.is_empty() {
        parts.push_back((Part::default(), packer.base));
    }

    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (part, len))| {
            let more = i + 1 < count;
            let message = respond(Response::Delta(pb::Delta {
                revision: delta.revision,
                flags: part.flags,
                deleted_flags: part.deleted_flags,
                segments: part.segments,
                deleted_segments: part.deleted_segments,
                segment_patches: part.patches,
                more,
            }));
            let reckoned = if more { len } else { len - MORE_LEN };
            debug_assert_eq!(message.encoded_len(), field_len(reckoned));
            message
        })
        .collect()
}

/// The segments to send, with the patches of segments the same revision replaces applied to
/// them, and the remaining patches.
fn fold_patches<'a>(
    upserts: &'a [Segment],
    patches: &'a [KeyPatch],
) -> (Vec<Cow<'a, Segment>>, Vec<&'a KeyPatch>) {
    let mut segments: Vec<Cow<'a, Segment>> = upserts.iter().map(Cow::Borrowed).collect();
    if segments.is_empty() || patches.is_empty() {
        return (segments, patches.iter().collect());
    }
    let index: HashMap<&str, usize> = upserts
        .iter()
        .enumerate()
        .map(|(i, segment)| (segment.key.as_str(), i))
        .collect();
    let mut rest = Vec::new();
    for patch in patches {
        match index.get(patch.segment.as_str()) {
            Some(&i) => segments[i] = Cow::Owned(patch.apply(&segments[i])),
            None => rest.push(patch),
        }
    }
    (segments, rest)
}

/// The SnapshotChunk messages of a snapshot alone, lazily, as [`pack_snapshot`] packs them:
/// for a server that sends the same chunks to many streams, each between a SnapshotBegin and a
/// SnapshotEnd of its own.
pub fn snapshot_chunks<'a, F, S>(
    flags: F,
    segments: S,
    budget: usize,
) -> SnapshotMessages<F::IntoIter, S::IntoIter>
where
    F: IntoIterator<Item = &'a Flag>,
    S: IntoIterator<Item = &'a Segment>,
{
    SnapshotMessages {
        begin: None,
        flags: flags.into_iter().fuse(),
        segments: segments.into_iter().fuse(),
        packer: Packer::new(budget, 0),
        packed: false,
        ended: true,
    }
}

/// The messages of a snapshot, lazily: SnapshotBegin, SnapshotChunk messages of at most
/// `budget` encoded bytes each, SnapshotEnd.
///
/// Flags and segments are converted and packed one chunk at a time, as the iterator is
/// advanced, so a server streaming a large snapshot to many clients holds about one chunk per
/// client. A flag bigger than `budget` goes alone in its chunk; a segment bigger than `budget`
/// is split (its keys continue in `segment_keys` of the next chunks).
pub fn pack_snapshot<'a, F, S>(
    header: SnapshotHeader,
    flags: F,
    segments: S,
    budget: usize,
) -> SnapshotMessages<F::IntoIter, S::IntoIter>
where
    F: IntoIterator<Item = &'a Flag>,
    S: IntoIterator<Item = &'a Segment>,
{
    SnapshotMessages {
        begin: Some(pb::SnapshotBegin {
            epoch: header.epoch,
            revision: header.revision,
            heartbeat_interval_ms: header.heartbeat_interval_ms,
            flag_count: header.flag_count,
            segment_count: header.segment_count,
        }),
        ended: false,
        ..snapshot_chunks(flags, segments, budget)
    }
}

/// The messages of a snapshot, made as they are asked for: see [`pack_snapshot`].
#[derive(Debug)]
pub struct SnapshotMessages<F, S> {
    /// SnapshotBegin, until it is sent.
    begin: Option<pb::SnapshotBegin>,
    flags: Fuse<F>,
    segments: Fuse<S>,
    packer: Packer,
    /// Whether every flag and segment is packed, the last chunk included.
    packed: bool,
    /// Whether SnapshotEnd is sent (or is not to be: chunks only).
    ended: bool,
}

impl<'a, F, S> Iterator for SnapshotMessages<F, S>
where
    F: Iterator<Item = &'a Flag>,
    S: Iterator<Item = &'a Segment>,
{
    type Item = pb::WatchResponse;

    fn next(&mut self) -> Option<pb::WatchResponse> {
        if let Some(begin) = self.begin.take() {
            return Some(respond(Response::SnapshotBegin(begin)));
        }
        loop {
            if let Some((part, len)) = self.packer.full.pop_front() {
                let message = respond(Response::SnapshotChunk(pb::SnapshotChunk {
                    flags: part.flags,
                    segments: part.segments,
                    segment_keys: part.patches,
                }));
                debug_assert_eq!(message.encoded_len(), field_len(len));
                return Some(message);
            }
            if self.packed {
                if self.ended {
                    return None;
                }
                self.ended = true;
                return Some(respond(Response::SnapshotEnd(pb::SnapshotEnd {})));
            }
            if let Some(flag) = self.flags.next() {
                self.packer.push_flag(flag);
            } else if let Some(segment) = self.segments.next() {
                self.packer.push_segment(segment);
            } else {
                self.packer.finish();
                self.packed = true;
            }
        }
    }
}

impl<'a, F, S> FusedIterator for SnapshotMessages<F, S>
where
    F: Iterator<Item = &'a Flag>,
    S: Iterator<Item = &'a Segment>,
{
}

fn respond(response: Response) -> pb::WatchResponse {
    pb::WatchResponse {
        response: Some(response),
    }
}

/// What one chunk or delta part holds. A snapshot chunk has no deletions, and its `patches`
/// are its `segment_keys`.
#[derive(Debug, Default)]
struct Part {
    flags: Vec<pb::Flag>,
    deleted_flags: Vec<String>,
    segments: Vec<pb::Segment>,
    deleted_segments: Vec<String>,
    patches: Vec<pb::SegmentKeyPatch>,
}

/// Fills parts up to a budget, starting the next part when an entry would not fit.
///
/// Sizes are reckoned exactly, field by field, as prost encodes them: a part's body is `len`
/// bytes, and its message (the WatchResponse holding it) `field_len(len)`.
#[derive(Debug)]
struct Packer {
    budget: usize,
    /// What every part's body holds besides its entries: a delta's revision and `more`.
    base: usize,
    /// The size of the current part's body, `base` included.
    len: usize,
    current: Part,
    /// Completed parts, in order, with the size of their bodies.
    full: VecDeque<(Part, usize)>,
}

impl Packer {
    fn new(budget: usize, base: usize) -> Packer {
        Packer {
            budget,
            base,
            len: base,
            current: Part::default(),
            full: VecDeque::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len == self.base
    }

    /// Whether the current part stays within budget with `extra` more bytes.
    fn fits(&self, extra: usize) -> bool {
        field_len(self.len + extra) <= self.budget
    }

    /// Whether an entry of `size` bytes fits in a part of its own.
    fn fits_alone(&self, size: usize) -> bool {
        field_len(self.base + size) <= self.budget
    }

    /// Completes the current part.
    fn flush(&mut self) {
        let part = mem::take(&mut self.current);
        self.full.push_back((part, self.len));
        self.len = self.base;
    }

    /// Starts a new part when the current one holds something and `size` more bytes would not
    /// fit; an entry too big for any part thus goes in a part of its own.
    fn make_room(&mut self, size: usize) {
        if !self.is_empty() && !self.fits(size) {
            self.flush();
        }
    }

    /// Completes the last part, if it holds anything.
    fn finish(&mut self) {
        if !self.is_empty() {
            self.flush();
        }
    }

    fn push_key(&mut self, key: &str, list: fn(&mut Part) -> &mut Vec<String>) {
        let size = field_len(key.len());
        self.make_room(size);
        list(&mut self.current).push(key.to_owned());
        self.len += size;
    }

    fn push_flag(&mut self, flag: &Flag) {
        let wire = pb::Flag::from(flag);
        let size = field_len(wire.encoded_len());
        self.make_room(size);
        self.current.flags.push(wire);
        self.len += size;
    }

    fn push_segment(&mut self, segment: &Segment) {
        // The segment without its keys, converted without copying the lists.
        let mut wire = pb::Segment::from(&Segment {
            key: segment.key.clone(),
            description: segment.description.clone(),
            included: Vec::new(),
            excluded: Vec::new(),
            rules: segment.rules.clone(),
            version: segment.version,
        });
        let shell_len = wire.encoded_len();
        let whole = shell_len + keys_len(&segment.included) + keys_len(&segment.excluded);
        if self.fits_alone(field_len(whole)) {
            wire.included.clone_from(&segment.included);
            wire.excluded.clone_from(&segment.excluded);
            self.make_room(field_len(whole));
            self.current.segments.push(wire);
            self.len += field_len(whole);
            return;
        }

        // Too big for any part: the segment goes with as many keys as fit (in the current part
        // when it and a first key fit there), and the rest continue in the next parts.
        let mut keys = KeyCursor::new([&segment.included, &segment.excluded]);
        self.make_room(field_len(shell_len + keys.next_len()));
        let len = self.fill(
            &mut keys,
            shell_len,
            false,
            [&mut wire.included, &mut wire.excluded],
        );
        self.current.segments.push(wire);
        self.len += field_len(len);
        self.push_pieces(&segment.key, &mut keys, |piece| {
            [&mut piece.add_included, &mut piece.add_excluded]
        });
    }

    fn push_patch(&mut self, patch: &KeyPatch) {
        let whole = string_len(&patch.segment)
            + keys_len(&patch.add_included)
            + keys_len(&patch.remove_included)
            + keys_len(&patch.add_excluded)
            + keys_len(&patch.remove_excluded);
        if self.fits_alone(field_len(whole)) {
            self.make_room(field_len(whole));
            self.current.patches.push(pb::SegmentKeyPatch::from(patch));
            self.len += field_len(whole);
            return;
        }

        // Too big for any part: pieces of the same segment, removals first, so that applying
        // them one after another (each removing, then appending) is applying the patch.
        let mut keys = KeyCursor::new([
            &patch.remove_included,
            &patch.remove_excluded,
            &patch.add_included,
            &patch.add_excluded,
        ]);
        self.push_pieces(&patch.segment, &mut keys, |piece| {
            [
                &mut piece.remove_included,
                &mut piece.remove_excluded,
                &mut piece.add_included,
                &mut piece.add_excluded,
            ]
        });
    }

    /// Sends the keys left in `keys` as SegmentKeyPatch entries of `segment`, each filling the
    /// rest of its part; `lists` names the entry's lists that receive the cursor's lists.
    fn push_pieces<const N: usize>(
        &mut self,
        segment: &str,
        keys: &mut KeyCursor<'_, N>,
        lists: fn(&mut pb::SegmentKeyPatch) -> [&mut Vec<String>; N],
    ) {
        let shell_len = string_len(segment);
        while !keys.is_done() {
            self.make_room(field_len(shell_len + keys.next_len()));
            let mut piece = pb::SegmentKeyPatch {
                segment: segment.to_owned(),
                ..pb::SegmentKeyPatch::default()
            };
            // In a part of its own, a piece takes at least one key, however long.
            let force = self.is_empty();
            let len = self.fill(keys, shell_len, force, lists(&mut piece));
            self.current.patches.push(piece);
            self.len += field_len(len);
        }
    }

    /// Moves keys from `keys` to `lists` while the current part, with the message receiving
    /// them (now `message_len` bytes), stays within budget; the first one regardless when
    /// `force`. Returns the message's size.
    fn fill<const N: usize>(
        &self,
        keys: &mut KeyCursor<'_, N>,
        mut message_len: usize,
        mut force: bool,
        lists: [&mut Vec<String>; N],
    ) -> usize {
        while let Some((list, key)) = keys.peek() {
            let grown = message_len + field_len(key.len());
            if !force && !self.fits(field_len(grown)) {
                break;
            }
            lists[list].push(key.clone());
            keys.advance();
            message_len = grown;
            force = false;
        }
        message_len
    }
}

/// The keys still to send of several lists, list after list.
struct KeyCursor<'k, const N: usize> {
    lists: [&'k [String]; N],
    list: usize,
    at: usize,
}

impl<'k, const N: usize> KeyCursor<'k, N> {
    fn new(lists: [&'k Vec<String>; N]) -> Self {
        KeyCursor {
            lists: lists.map(Vec::as_slice),
            list: 0,
            at: 0,
        }
    }

    /// The next key and the index of its list.
    fn peek(&mut self) -> Option<(usize, &'k String)> {
        while let Some(list) = self.lists.get(self.list) {
            if let Some(key) = list.get(self.at) {
                return Some((self.list, key));
            }
            self.list += 1;
            self.at = 0;
        }
        None
    }

    fn advance(&mut self) {
        self.at += 1;
    }

    fn is_done(&mut self) -> bool {
        self.peek().is_none()
    }

    /// The encoded size of the next key in its list; 0 when there is none.
    fn next_len(&mut self) -> usize {
        self.peek().map_or(0, |(_, key)| field_len(key.len()))
    }
}

// ---------------------------------------------------------------------------------------------
// Assembling: the client's side.

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
    /// merged (they can when split by [`pack_delta`]).
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

    /// The delta, borrowed, as [`pack_delta`] takes it.
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

/// A Watch stream message as the server sends it: made for one stream, or encoded once and
/// shared by every stream that sends it.
///
/// On the wire it is a `WatchResponse` either way (flagstaffd's `Sync` service is generated to
/// send this type in its place). A revision's delta goes to every stream and a snapshot's
/// chunks to every stream that subscribes at that revision; encoded once, each stream sends a
/// shared, reference-counted copy instead of cloning, converting and encoding the messages
/// itself, which costs the server CPU per stream and leaves its heap fragmented by thousands
/// of short-lived allocations per stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchMessage {
    /// A message made for one stream.
    Message(pb::WatchResponse),
    /// The encoding of a `WatchResponse`.
    Encoded(Bytes),
}

impl WatchMessage {
    /// `message`, encoded now.
    pub fn encoded(message: &pb::WatchResponse) -> WatchMessage {
        WatchMessage::Encoded(Bytes::from(message.encode_to_vec()))
    }
}

impl Default for WatchMessage {
    fn default() -> Self {
        WatchMessage::Message(pb::WatchResponse::default())
    }
}

impl From<pb::WatchResponse> for WatchMessage {
    fn from(message: pb::WatchResponse) -> Self {
        WatchMessage::Message(message)
    }
}

impl Message for WatchMessage {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            WatchMessage::Message(message) => message.encode_raw(buf),
            WatchMessage::Encoded(bytes) => buf.put_slice(bytes),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let mut message = match mem::take(self) {
            WatchMessage::Message(message) => message,
            WatchMessage::Encoded(bytes) => pb::WatchResponse::decode(bytes)?,
        };
        let merged = message.merge_field(tag, wire_type, buf, ctx);
        *self = WatchMessage::Message(message);
        merged
    }

    fn encoded_len(&self) -> usize {
        match self {
            WatchMessage::Message(message) => message.encoded_len(),
            WatchMessage::Encoded(bytes) => bytes.len(),
        }
    }

    fn clear(&mut self) {
        *self = WatchMessage::default();
    }
}
