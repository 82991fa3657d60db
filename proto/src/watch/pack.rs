//! Packing, the server's side of the Watch stream: a snapshot ([`pack_snapshot`],
//! [`snapshot_chunks`]) or the changes of one revision ([`pack_delta`]) become `WatchResponse`
//! messages within a byte budget ([`CHUNK_BUDGET`] in production), splitting big segments and
//! key patches across messages. Sizes are reckoned field by field as prost encodes them, so
//! nothing is encoded to be measured. This is the server's fan-out hot path: it packs each
//! message once and sends it, encoded once, to every stream (see
//! [`WatchMessage`](crate::watch::WatchMessage)).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::iter::{Fuse, FusedIterator};
use std::mem;

use flagstaff_engine::{Flag, KeyPatch, Segment};
use prost::encoding::encoded_len_varint;
use prost::Message;

use crate::pb::{self, watch_response::Response};

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
