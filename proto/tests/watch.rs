//! The Watch stream's framing, end to end: what `pack_snapshot` and `pack_delta` send, through
//! bytes, is what the `Assembler` gives back, exactly (order of keys included), and no message
//! is bigger than the budget unless it holds a single item that is. Every way a stream can
//! break the protocol is an error that names it.

use std::cell::Cell;

use flagstaff_engine::{flag_from_value, Document, Flag, KeyPatch, Segment, Snapshot};
use flagstaff_proto::pb::{self, watch_response::Response};
use flagstaff_proto::watch::{
    pack_delta, pack_snapshot, snapshot_chunks, Assembler, Delta, DeltaParts, ProtocolError,
    SnapshotHeader, Update, WatchMessage, CHUNK_BUDGET,
};
use flagstaff_proto::ConvertError;
use prost::Message;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Documents.

/// A boolean flag; `padding` bytes of description make it as big as a test needs.
fn flag(key: &str, padding: usize, version: u64) -> Flag {
    let mut flag = flag_from_value(&json!({
        "key": key,
        "description": "x".repeat(padding),
        "kind": "boolean",
        "variants": { "on": true, "off": false },
        "off_variant": "off",
        "enabled": true,
        "default": { "variant": "off" },
    }))
    .expect("a flag document");
    flag.version = Some(version);
    flag
}

fn flags(count: usize, padding: usize, version: u64) -> Vec<Flag> {
    (0..count)
        .map(|i| flag(&format!("flag-{i:04}"), padding, version))
        .collect()
}

fn segment(key: &str, included: Vec<String>, excluded: Vec<String>, version: u64) -> Segment {
    Segment {
        key: key.to_owned(),
        description: Some(format!("the {key} segment")),
        included,
        excluded,
        rules: Vec::new(),
        version: Some(version),
    }
}

/// `count` context keys, e.g. `user-00000042@example.com` for prefix `user`.
fn keys(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{prefix}-{i:08}@example.com"))
        .collect()
}

/// A deterministic stream of numbers, for keys of many lengths.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % bound
    }

    /// `count` distinct keys of 1 to `max_len` bytes.
    fn keys(&mut self, prefix: &str, count: usize, max_len: usize) -> Vec<String> {
        (0..count)
            .map(|i| {
                let key = format!("{prefix}{i}.");
                let len = 1 + self.below(max_len);
                let pad = len.saturating_sub(key.len());
                format!("{key}{}", "k".repeat(pad))
            })
            .collect()
    }
}

fn header(epoch: &str, revision: u64, flags: &[Flag], segments: &[Segment]) -> SnapshotHeader {
    SnapshotHeader {
        epoch: epoch.to_owned(),
        revision,
        heartbeat_interval_ms: 15_000,
        flag_count: flags.len() as u32,
        segment_count: segments.len() as u32,
    }
}

fn snapshot_messages(
    epoch: &str,
    revision: u64,
    flags: &[Flag],
    segments: &[Segment],
    budget: usize,
) -> Vec<pb::WatchResponse> {
    pack_snapshot(
        header(epoch, revision, flags, segments),
        flags,
        segments,
        budget,
    )
    .collect()
}

// ---------------------------------------------------------------------------------------------
// The stream.

/// Encodes each message and decodes it again, as the client receives it.
fn over_the_wire(messages: &[pb::WatchResponse]) -> Vec<pb::WatchResponse> {
    messages
        .iter()
        .map(|message| {
            pb::WatchResponse::decode(message.encode_to_vec().as_slice()).expect("decodes")
        })
        .collect()
}

/// Feeds `messages` to `assembler`; the updates they complete.
fn assemble(assembler: &mut Assembler, messages: &[pb::WatchResponse]) -> Vec<Update> {
    let mut updates = Vec::new();
    for (i, message) in over_the_wire(messages).into_iter().enumerate() {
        let update = assembler
            .receive(message)
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
        updates.extend(update);
    }
    updates
}

/// The one update `messages` complete.
fn assemble_one(assembler: &mut Assembler, messages: &[pb::WatchResponse]) -> Update {
    let mut updates = assemble(assembler, messages);
    assert_eq!(updates.len(), 1, "one update: {updates:?}");
    updates.pop().expect("one update")
}

/// An assembler that has received a snapshot at `revision` of epoch `e1` with nothing in it.
fn at_revision(revision: u64) -> Assembler {
    let mut assembler = Assembler::new();
    assemble_one(
        &mut assembler,
        &snapshot_messages("e1", revision, &[], &[], CHUNK_BUDGET),
    );
    assembler
}

fn delta_of(update: Update) -> Delta {
    match update {
        Update::Delta(delta) => delta,
        other => panic!("expected a delta, got {other:?}"),
    }
}

fn owned(parts: &DeltaParts<'_>) -> Delta {
    Delta {
        revision: parts.revision,
        flags: parts.flags.to_vec(),
        deleted_flags: parts.deleted_flags.to_vec(),
        segments: parts.segments.to_vec(),
        deleted_segments: parts.deleted_segments.to_vec(),
        patches: parts.patches.to_vec(),
    }
}

/// How many entries a chunk or delta part holds, and whether it is a single one that may be
/// bigger than the budget on its own: a flag, a deleted key, a segment without keys (its keys
/// follow) or one key of a segment or patch.
fn single_item(message: &pb::WatchResponse) -> bool {
    let patch_keys = |p: &pb::SegmentKeyPatch| {
        p.add_included.len()
            + p.remove_included.len()
            + p.add_excluded.len()
            + p.remove_excluded.len()
    };
    let (flags, deleted, segments, patches) = match &message.response {
        Some(Response::SnapshotChunk(c)) => (&c.flags, 0, &c.segments, &c.segment_keys),
        Some(Response::Delta(d)) => (
            &d.flags,
            d.deleted_flags.len() + d.deleted_segments.len(),
            &d.segments,
            &d.segment_patches,
        ),
        _ => return false,
    };
    let entries = flags.len() + deleted + segments.len() + patches.len();
    entries == 1
        && segments
            .iter()
            .all(|s| s.included.is_empty() && s.excluded.is_empty())
        && patches.iter().all(|p| patch_keys(p) == 1)
}

/// Every message is within `budget` but those holding a single item too big for it; returns
/// how many of those there are.
fn assert_within_budget(messages: &[pb::WatchResponse], budget: usize) -> usize {
    let mut oversized = 0;
    for (i, message) in messages.iter().enumerate() {
        let len = message.encoded_len();
        if len > budget {
            assert!(
                single_item(message),
                "message {i} is {len} bytes, budget {budget}, and holds more than one item"
            );
            oversized += 1;
        }
    }
    oversized
}

fn chunks(messages: &[pb::WatchResponse]) -> Vec<&pb::SnapshotChunk> {
    messages
        .iter()
        .filter_map(|m| match &m.response {
            Some(Response::SnapshotChunk(chunk)) => Some(chunk),
            _ => None,
        })
        .collect()
}

fn parts(messages: &[pb::WatchResponse]) -> Vec<&pb::Delta> {
    messages
        .iter()
        .map(|m| match &m.response {
            Some(Response::Delta(delta)) => delta,
            other => panic!("expected a delta, got {other:?}"),
        })
        .collect()
}

/// The parts share the revision, and all but the last have `more` set.
fn assert_parts(messages: &[pb::WatchResponse], revision: u64) {
    let parts = parts(messages);
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(part.revision, revision, "part {i}");
        assert_eq!(part.more, i + 1 < parts.len(), "part {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots.

#[test]
fn many_small_flags_fill_chunks_up_to_the_budget() {
    let budget = 4_096;
    let flags = flags(300, 40, 9);
    let segments = vec![segment("staff", keys("staff", 0..20), vec![], 4)];
    let messages = snapshot_messages("e1", 9, &flags, &segments, budget);

    assert!(matches!(
        messages[0].response,
        Some(Response::SnapshotBegin(_))
    ));
    assert!(matches!(
        messages.last().and_then(|m| m.response.as_ref()),
        Some(Response::SnapshotEnd(_))
    ));
    let chunks = chunks(&messages);
    assert!(chunks.len() >= 5, "{} chunks", chunks.len());
    assert_eq!(assert_within_budget(&messages, budget), 0);
    // Each chunk is full: the next chunk's first flag would not have fit.
    for pair in chunks.windows(2) {
        let Some(next) = pair[1].flags.first() else {
            continue;
        };
        let mut fuller = pair[0].clone();
        fuller.flags.push(next.clone());
        let message = pb::WatchResponse {
            response: Some(Response::SnapshotChunk(fuller)),
        };
        assert!(message.encoded_len() > budget);
    }

    let mut assembler = Assembler::new();
    let update = assemble_one(&mut assembler, &messages);
    assert_eq!(
        update,
        Update::Snapshot {
            epoch: "e1".to_owned(),
            revision: 9,
            heartbeat_interval_ms: 15_000,
            flags,
            segments,
        }
    );
    assert_eq!(assembler.position(), Some(("e1", 9)));
}

#[test]
fn shared_chunks_are_the_snapshot_s_chunks_and_encode_as_the_messages() {
    let flags = flags(300, 40, 9);
    let segments = vec![segment("staff", keys("staff", 0..2_000), vec![], 4)];
    let messages = snapshot_messages("e1", 9, &flags, &segments, 4_096);
    let shared: Vec<pb::WatchResponse> = snapshot_chunks(&flags, &segments, 4_096).collect();
    assert!(shared.len() >= 5, "{} chunks", shared.len());
    // What pack_snapshot sends between its SnapshotBegin and SnapshotEnd.
    assert_eq!(shared.as_slice(), &messages[1..messages.len() - 1]);

    // Encoded once, each goes on the wire exactly as the message would, and decodes back.
    for message in &shared {
        let encoded = WatchMessage::encoded(message);
        assert_eq!(encoded.encoded_len(), message.encoded_len());
        assert_eq!(encoded.encode_to_vec(), message.encode_to_vec());
        let decoded = pb::WatchResponse::decode(encoded.encode_to_vec().as_slice());
        assert_eq!(decoded.expect("decodes"), *message);
        let made = WatchMessage::from(message.clone());
        assert_eq!(made.encode_to_vec(), message.encode_to_vec());
    }

    // Decoding into one (as prost merges a message) replaces what it held.
    let mut merged = WatchMessage::encoded(&shared[0]);
    merged
        .merge(shared[1].encode_to_vec().as_slice())
        .expect("merges");
    let mut expected = shared[0].clone();
    expected
        .merge(shared[1].encode_to_vec().as_slice())
        .expect("merges");
    assert_eq!(merged, WatchMessage::Message(expected));
}

#[test]
fn a_snapshot_is_packed_as_it_is_read() {
    let flags = flags(1_000, 100, 1);
    let pulled = Cell::new(0);
    let header = header("e1", 1, &flags, &[]);
    let mut messages = pack_snapshot(
        header,
        flags.iter().inspect(|_| pulled.set(pulled.get() + 1)),
        [],
        4_096,
    );
    messages.next().expect("snapshot_begin");
    assert_eq!(pulled.get(), 0);
    messages.next().expect("the first chunk");
    // The flags of the first chunk, and the one that did not fit in it.
    assert!(pulled.get() < 50, "{} flags pulled", pulled.get());
    // The other chunks, and snapshot_end.
    assert_eq!(messages.count(), chunks_needed(&flags, 4_096));
    assert_eq!(pulled.get(), 1_000);
}

/// How many chunks `pack_snapshot` makes of `flags`.
fn chunks_needed(flags: &[Flag], budget: usize) -> usize {
    chunks(&snapshot_messages("e1", 1, flags, &[], budget)).len()
}

#[test]
fn a_flag_bigger_than_the_budget_goes_alone() {
    let budget = 1_000;
    let mut flags = flags(10, 100, 3);
    flags.insert(4, flag("huge", 5_000, 3));
    let messages = snapshot_messages("e1", 3, &flags, &[], budget);

    assert_eq!(assert_within_budget(&messages, budget), 1);
    let huge = chunks(&messages)
        .into_iter()
        .find(|chunk| chunk.flags.iter().any(|f| f.key == "huge"))
        .expect("a chunk with the huge flag");
    assert_eq!(huge.flags.len(), 1);

    let update = assemble_one(&mut Assembler::new(), &messages);
    let Update::Snapshot { flags: got, .. } = update else {
        panic!("a snapshot");
    };
    assert_eq!(got, flags);
}

#[test]
fn a_segment_of_100000_keys_in_a_snapshot() {
    let big = segment(
        "everyone",
        keys("user", 0..100_000),
        keys("banned", 0..30_000),
        12,
    );
    let segments = vec![
        segment("staff", keys("staff", 0..10), vec![], 2),
        big,
        segment("beta", keys("beta", 0..10), keys("beta-out", 0..3), 5),
    ];
    let flags = flags(20, 200, 12);
    let messages = snapshot_messages("e1", 12, &flags, &segments, CHUNK_BUDGET);

    assert_eq!(assert_within_budget(&messages, CHUNK_BUDGET), 0);
    let chunks = chunks(&messages);
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    assert!(chunks.iter().any(|c| !c.segment_keys.is_empty()));

    let update = assemble_one(&mut Assembler::new(), &messages);
    let Update::Snapshot {
        flags: got_flags,
        segments: got_segments,
        ..
    } = update
    else {
        panic!("a snapshot");
    };
    assert_eq!(got_flags, flags);
    assert_eq!(got_segments, segments);
}

#[test]
fn keys_of_any_length_split_within_small_budgets() {
    let mut lcg = Lcg(7);
    for budget in [48, 64, 100, 173, 256, 999] {
        // Keys up to 300 bytes: some alone bigger than the budget.
        let segments = vec![
            segment("a", lcg.keys("a", 200, 300), lcg.keys("ax", 50, 40), 1),
            segment("b", Vec::new(), lcg.keys("bx", 80, 20), 1),
            segment("c", lcg.keys("c", 3, 5), Vec::new(), 1),
        ];
        let flags = flags(3, 10, 1);

        let messages = snapshot_messages("e1", 1, &flags, &segments, budget);
        assert_within_budget(&messages, budget);
        let Update::Snapshot {
            flags: got_flags,
            segments: got_segments,
            ..
        } = assemble_one(&mut Assembler::new(), &messages)
        else {
            panic!("a snapshot");
        };
        assert_eq!(got_flags, flags, "budget {budget}");
        assert_eq!(got_segments, segments, "budget {budget}");

        let patches = vec![KeyPatch {
            segment: "d".to_owned(),
            add_included: lcg.keys("d+", 60, 100),
            remove_included: lcg.keys("d-", 60, 100),
            add_excluded: lcg.keys("dx+", 30, 100),
            remove_excluded: lcg.keys("dx-", 30, 100),
        }];
        let deleted = lcg.keys("gone", 40, 30);
        let delta = DeltaParts {
            revision: 2,
            flags: &flags,
            deleted_flags: &deleted,
            segments: &segments,
            deleted_segments: &deleted,
            patches: &patches,
        };
        let messages = pack_delta(&delta, budget);
        assert_within_budget(&messages, budget);
        assert_parts(&messages, 2);
        let got = delta_of(assemble_one(&mut at_revision(1), &messages));
        assert_eq!(got, owned(&delta), "budget {budget}");

        // Applying the pieces of the patch one after another is applying the patch.
        let mut included = lcg.keys("d", 20, 50);
        included.extend(patches[0].remove_included.iter().step_by(2).cloned());
        included.extend(patches[0].add_included.iter().step_by(3).cloned());
        let before = segment("d", included, patches[0].remove_excluded.clone(), 1);
        let pieces: Vec<KeyPatch> = pieces(&messages)
            .into_iter()
            .filter(|p| p.segment == "d")
            .collect();
        assert!(pieces.len() > 1, "budget {budget}");
        let stepwise = pieces.iter().fold(before.clone(), |s, p| p.apply(&s));
        assert_eq!(stepwise, patches[0].apply(&before), "budget {budget}");
    }
}

// ---------------------------------------------------------------------------------------------
// Deltas.

#[test]
fn a_segment_of_100000_keys_in_a_delta() {
    let segments = vec![segment(
        "everyone",
        keys("user", 0..100_000),
        keys("banned", 0..20_000),
        41,
    )];
    let flags = flags(5, 100, 41);
    let delta = DeltaParts {
        revision: 41,
        flags: &flags,
        segments: &segments,
        ..DeltaParts::default()
    };
    let messages = pack_delta(&delta, CHUNK_BUDGET);

    assert!(messages.len() >= 3, "{} parts", messages.len());
    assert_eq!(assert_within_budget(&messages, CHUNK_BUDGET), 0);
    assert_parts(&messages, 41);

    let mut assembler = at_revision(40);
    let got = delta_of(assemble_one(&mut assembler, &messages));
    assert_eq!(got, owned(&delta));
    assert_eq!(assembler.position(), Some(("e1", 41)));

    let changes = got.resolve(&Snapshot::new()).expect("resolves");
    assert_eq!(changes.segments, segments);
    assert_eq!(changes.flags, flags);
}

#[test]
fn a_big_key_patch_is_split_and_resolves_like_the_patch() {
    let before = segment("beta", keys("user", 0..30_000), keys("banned", 0..6_000), 6);
    let base = Snapshot::from_document(Document {
        environment: "production".to_owned(),
        flags: Vec::new(),
        segments: vec![before.clone()],
    })
    .expect("a valid document");
    let patch = KeyPatch {
        segment: "beta".to_owned(),
        add_included: keys("new", 0..40_000),
        remove_included: keys("user", 10_000..30_000),
        add_excluded: keys("banned-too", 0..3_000),
        remove_excluded: keys("banned", 0..5_000),
    };
    let expected = Segment {
        version: Some(7),
        ..patch.apply(&before)
    };

    let patches = [patch.clone()];
    let delta = DeltaParts {
        revision: 7,
        patches: &patches,
        ..DeltaParts::default()
    };
    let mut assembled = Vec::new();
    for budget in [CHUNK_BUDGET, 64 << 10] {
        let messages = pack_delta(&delta, budget);
        assert!(messages.len() >= 2, "{} parts", messages.len());
        assert_eq!(assert_within_budget(&messages, budget), 0);
        assert_parts(&messages, 7);

        // Pieces of the same segment, every removal before any addition.
        let pieces = pieces(&messages);
        assert!(pieces.iter().all(|p| p.segment == "beta"));
        let first_add = pieces
            .iter()
            .position(|p| !p.add_included.is_empty() || !p.add_excluded.is_empty())
            .expect("additions");
        assert!(pieces[first_add + 1..]
            .iter()
            .all(|p| p.remove_included.is_empty() && p.remove_excluded.is_empty()));

        // Reassembled into the one patch.
        let got = delta_of(assemble_one(&mut at_revision(6), &messages));
        assert_eq!(got.patches, patches);
        assembled.push(got);
    }

    // Which resolves to the patched segment.
    let got = assembled.pop().expect("a delta");
    let changes = got.resolve(&base).expect("resolves");
    assert_eq!(changes.segments, vec![expected.clone()]);
    let after = base.apply(changes).expect("applies");
    assert_eq!(after.segment("beta"), Some(&expected));
}

/// The key patches of a delta's parts, in order.
fn pieces(messages: &[pb::WatchResponse]) -> Vec<KeyPatch> {
    parts(messages)
        .into_iter()
        .flat_map(|part| &part.segment_patches)
        .map(|piece| KeyPatch {
            segment: piece.segment.clone(),
            add_included: piece.add_included.clone(),
            remove_included: piece.remove_included.clone(),
            add_excluded: piece.add_excluded.clone(),
            remove_excluded: piece.remove_excluded.clone(),
        })
        .collect()
}

#[test]
fn a_delta_in_parts_with_deletions() {
    let budget = 2_048;
    let flags = flags(40, 60, 3);
    let segments = vec![
        segment("staff", keys("staff", 0..30), vec![], 3),
        segment("beta", keys("beta", 0..200), keys("out", 0..20), 3),
    ];
    let deleted_flags = keys("old-flag", 0..300);
    let deleted_segments = keys("old-segment", 0..100);
    let patches = vec![
        KeyPatch {
            segment: "gamma".to_owned(),
            add_included: keys("g", 0..5),
            ..KeyPatch::default()
        },
        KeyPatch {
            segment: "delta".to_owned(),
            remove_excluded: keys("d", 0..5),
            ..KeyPatch::default()
        },
    ];
    let delta = DeltaParts {
        revision: 3,
        flags: &flags,
        deleted_flags: &deleted_flags,
        segments: &segments,
        deleted_segments: &deleted_segments,
        patches: &patches,
    };
    let messages = pack_delta(&delta, budget);

    assert!(messages.len() >= 10, "{} parts", messages.len());
    assert_eq!(assert_within_budget(&messages, budget), 0);
    assert_parts(&messages, 3);

    let mut assembler = at_revision(2);
    let updates = assemble(&mut assembler, &messages);
    assert_eq!(updates, vec![Update::Delta(owned(&delta))]);
    assert_eq!(assembler.position(), Some(("e1", 3)));

    // The pieces the server would send are the ones the client's delta gives back.
    let got = owned(&delta);
    assert_eq!(pack_delta(&got.parts(), budget), messages);
}

#[test]
fn an_empty_delta_is_one_message() {
    let messages = pack_delta(
        &DeltaParts {
            revision: 5,
            ..DeltaParts::default()
        },
        CHUNK_BUDGET,
    );
    assert_eq!(
        messages,
        vec![pb::WatchResponse {
            response: Some(Response::Delta(pb::Delta {
                revision: 5,
                ..pb::Delta::default()
            })),
        }]
    );

    let mut assembler = at_revision(4);
    let got = delta_of(assemble_one(&mut assembler, &messages));
    assert_eq!(
        got,
        Delta {
            revision: 5,
            ..Delta::default()
        }
    );
    assert_eq!(assembler.position(), Some(("e1", 5)));
    assert!(got.resolve(&Snapshot::new()).expect("resolves").is_empty());
}

#[test]
fn a_patch_of_a_segment_the_delta_replaces_is_applied_to_it() {
    let segments = vec![segment("beta", keys("b", 0..10), keys("x", 0..2), 8)];
    let patches = vec![KeyPatch {
        segment: "beta".to_owned(),
        remove_included: keys("b", 0..3),
        add_included: keys("b", 0..1),
        ..KeyPatch::default()
    }];
    let delta = DeltaParts {
        revision: 8,
        segments: &segments,
        patches: &patches,
        ..DeltaParts::default()
    };
    for budget in [CHUNK_BUDGET, 200] {
        let got = delta_of(assemble_one(
            &mut at_revision(7),
            &pack_delta(&delta, budget),
        ));
        assert_eq!(got.segments, vec![patches[0].apply(&segments[0])]);
        assert!(got.patches.is_empty());
    }
}

#[test]
fn resolve_patches_the_base_or_the_delta_and_sets_the_version() {
    let base = Snapshot::from_document(Document {
        environment: "production".to_owned(),
        flags: Vec::new(),
        segments: vec![
            segment("beta", keys("b", 0..5), vec![], 2),
            segment("gone", keys("g", 0..5), vec![], 2),
        ],
    })
    .expect("a valid document");
    let add = |segment: &str, keys: Vec<String>| KeyPatch {
        segment: segment.to_owned(),
        add_included: keys,
        ..KeyPatch::default()
    };
    let remove = |segment: &str, keys: Vec<String>| KeyPatch {
        segment: segment.to_owned(),
        remove_included: keys,
        ..KeyPatch::default()
    };
    // Two patches of beta that do not merge (an addition, then a removal): applied in turn.
    let delta = Delta {
        revision: 3,
        patches: vec![
            add("beta", keys("n", 0..2)),
            remove("beta", keys("b", 0..1)),
        ],
        ..Delta::default()
    };
    let changes = delta.resolve(&base).expect("resolves");
    let mut included = keys("b", 1..5);
    included.extend(keys("n", 0..2));
    assert_eq!(
        changes.segments,
        vec![Segment {
            included,
            version: Some(3),
            ..segment("beta", vec![], vec![], 2)
        }]
    );

    let missing = Delta {
        revision: 3,
        patches: vec![add("nowhere", keys("n", 0..1))],
        ..Delta::default()
    };
    assert_eq!(
        missing.resolve(&base),
        Err(ProtocolError::PatchOfMissingSegment {
            revision: 3,
            segment: "nowhere".to_owned()
        })
    );
    let deleted = Delta {
        revision: 3,
        deleted_segments: vec!["gone".to_owned()],
        patches: vec![add("gone", keys("n", 0..1))],
        ..Delta::default()
    };
    assert_eq!(
        deleted.resolve(&base),
        Err(ProtocolError::PatchOfDeletedSegment {
            revision: 3,
            segment: "gone".to_owned()
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Positions.

#[test]
fn a_snapshot_replaces_the_position_at_any_time() {
    let mut assembler = at_revision(10);
    let delta = |revision, more| pb::WatchResponse {
        response: Some(Response::Delta(pb::Delta {
            revision,
            more,
            ..pb::Delta::default()
        })),
    };
    let heartbeat = |revision| pb::WatchResponse {
        response: Some(Response::Heartbeat(pb::Heartbeat { revision })),
    };
    assemble_one(&mut assembler, &[delta(11, false)]);
    assert_eq!(
        assemble_one(&mut assembler, &[heartbeat(11)]),
        Update::Heartbeat { revision: 11 }
    );
    assert_eq!(assembler.position(), Some(("e1", 11)));

    // A lower revision of a new epoch, even between the parts of a delta.
    assert_eq!(assemble(&mut assembler, &[delta(12, true)]), vec![]);
    let update = assemble_one(
        &mut assembler,
        &snapshot_messages("e2", 3, &[], &[], CHUNK_BUDGET),
    );
    assert!(matches!(update, Update::Snapshot { revision: 3, .. }));
    assert_eq!(assembler.position(), Some(("e2", 3)));
    assemble_one(&mut assembler, &[delta(4, false)]);
    assert_eq!(assembler.position(), Some(("e2", 4)));
}

#[test]
fn a_resumed_stream_starts_with_the_next_delta() {
    let mut assembler = Assembler::resume("e1", 7);
    assert_eq!(assembler.position(), Some(("e1", 7)));
    let messages = pack_delta(
        &DeltaParts {
            revision: 8,
            ..DeltaParts::default()
        },
        CHUNK_BUDGET,
    );
    assemble_one(&mut assembler, &messages);
    assert_eq!(assembler.position(), Some(("e1", 8)));
}

// ---------------------------------------------------------------------------------------------
// Protocol errors.

fn begin(flag_count: u32, segment_count: u32) -> pb::WatchResponse {
    respond(Response::SnapshotBegin(pb::SnapshotBegin {
        epoch: "e1".to_owned(),
        revision: 4,
        heartbeat_interval_ms: 15_000,
        flag_count,
        segment_count,
    }))
}

fn chunk(chunk: pb::SnapshotChunk) -> pb::WatchResponse {
    respond(Response::SnapshotChunk(chunk))
}

fn end() -> pb::WatchResponse {
    respond(Response::SnapshotEnd(pb::SnapshotEnd {}))
}

fn delta(delta: pb::Delta) -> pb::WatchResponse {
    respond(Response::Delta(delta))
}

fn heartbeat(revision: u64) -> pb::WatchResponse {
    respond(Response::Heartbeat(pb::Heartbeat { revision }))
}

fn respond(response: Response) -> pb::WatchResponse {
    pb::WatchResponse {
        response: Some(response),
    }
}

fn wire_segment(key: &str) -> pb::Segment {
    pb::Segment::from(&segment(key, keys(key, 0..2), vec![], 1))
}

fn continuation(segment: &str) -> pb::SegmentKeyPatch {
    pb::SegmentKeyPatch {
        segment: segment.to_owned(),
        add_included: keys("more", 0..2),
        ..pb::SegmentKeyPatch::default()
    }
}

/// Feeds `messages` to `assembler`: all but the last are accepted, the last is refused.
fn refused(assembler: &mut Assembler, messages: Vec<pb::WatchResponse>) -> ProtocolError {
    let count = messages.len();
    for (i, message) in messages.into_iter().enumerate() {
        match assembler.receive(message) {
            Ok(_) if i + 1 < count => {}
            Ok(update) => panic!("the last message was accepted: {update:?}"),
            Err(e) if i + 1 == count => return e,
            Err(e) => panic!("message {i} was refused: {e}"),
        }
    }
    panic!("no messages")
}

#[test]
fn a_message_without_an_alternative_is_refused() {
    let error = refused(&mut Assembler::new(), vec![pb::WatchResponse::default()]);
    assert_eq!(error, ProtocolError::EmptyMessage);
    assert_eq!(error.to_string(), "server message has no alternative set");
}

#[test]
fn snapshot_messages_out_of_place_are_refused() {
    let no_begin = |message| refused(&mut Assembler::new(), vec![message]);
    assert_eq!(
        no_begin(chunk(pb::SnapshotChunk::default())),
        ProtocolError::NoSnapshotOpen {
            message: "snapshot_chunk"
        }
    );
    let error = no_begin(end());
    assert_eq!(
        error,
        ProtocolError::NoSnapshotOpen {
            message: "snapshot_end"
        }
    );
    assert_eq!(error.to_string(), "snapshot_end without a snapshot_begin");

    // Inside a snapshot, only chunks and its end.
    for (message, name) in [
        (begin(0, 0), "snapshot_begin"),
        (
            delta(pb::Delta {
                revision: 5,
                ..pb::Delta::default()
            }),
            "delta",
        ),
        (heartbeat(4), "heartbeat"),
    ] {
        let mut assembler = at_revision(3);
        let error = refused(&mut assembler, vec![begin(0, 0), message]);
        assert_eq!(error, ProtocolError::SnapshotInterrupted { message: name });
        // The half-received snapshot is dropped; the position is the last complete one.
        assert_eq!(assembler.position(), Some(("e1", 3)));
        assert_eq!(
            refused(&mut assembler, vec![end()]),
            ProtocolError::NoSnapshotOpen {
                message: "snapshot_end"
            }
        );
    }
}

#[test]
fn snapshot_counts_must_match_its_begin() {
    let one_flag = pb::SnapshotChunk {
        flags: vec![pb::Flag::from(&flag("a", 0, 4))],
        ..pb::SnapshotChunk::default()
    };
    let error = refused(
        &mut Assembler::new(),
        vec![begin(2, 0), chunk(one_flag.clone()), end()],
    );
    assert_eq!(
        error,
        ProtocolError::CountMismatch {
            what: "flags",
            announced: 2,
            received: 1
        }
    );
    assert_eq!(
        error.to_string(),
        "snapshot holds 1 flags, but its snapshot_begin announced 2"
    );

    // More than announced is refused with the chunk that brings them.
    let two_segments = pb::SnapshotChunk {
        segments: vec![wire_segment("a"), wire_segment("b")],
        ..pb::SnapshotChunk::default()
    };
    assert_eq!(
        refused(
            &mut Assembler::new(),
            vec![begin(1, 1), chunk(one_flag), chunk(two_segments)]
        ),
        ProtocolError::CountMismatch {
            what: "segments",
            announced: 1,
            received: 2
        }
    );
}

#[test]
fn snapshot_continuations_must_continue_a_segment_of_the_snapshot() {
    let unknown = pb::SnapshotChunk {
        segments: vec![wire_segment("a")],
        segment_keys: vec![continuation("b")],
        ..pb::SnapshotChunk::default()
    };
    let error = refused(&mut Assembler::new(), vec![begin(0, 1), chunk(unknown)]);
    assert_eq!(
        error,
        ProtocolError::UnknownContinuation {
            segment: "b".to_owned()
        }
    );
    assert_eq!(
        error.to_string(),
        "snapshot_chunk continues segment \"b\", which the snapshot has not sent"
    );

    // A segment of an earlier snapshot does not count.
    let first = pb::SnapshotChunk {
        segments: vec![wire_segment("a")],
        ..pb::SnapshotChunk::default()
    };
    let later = pb::SnapshotChunk {
        segment_keys: vec![continuation("a")],
        ..pb::SnapshotChunk::default()
    };
    assert_eq!(
        refused(
            &mut Assembler::new(),
            vec![
                begin(0, 1),
                chunk(first),
                end(),
                begin(0, 0),
                chunk(later.clone())
            ]
        ),
        ProtocolError::UnknownContinuation {
            segment: "a".to_owned()
        }
    );

    let removal = pb::SnapshotChunk {
        segments: vec![wire_segment("a")],
        segment_keys: vec![pb::SegmentKeyPatch {
            remove_included: keys("a", 0..1),
            ..continuation("a")
        }],
        ..pb::SnapshotChunk::default()
    };
    assert_eq!(
        refused(&mut Assembler::new(), vec![begin(0, 1), chunk(removal)]),
        ProtocolError::RemovalInContinuation {
            segment: "a".to_owned()
        }
    );

    let twice = pb::SnapshotChunk {
        segments: vec![wire_segment("a"), wire_segment("a")],
        ..pb::SnapshotChunk::default()
    };
    assert_eq!(
        refused(&mut Assembler::new(), vec![begin(0, 2), chunk(twice)]),
        ProtocolError::DuplicateSegment {
            segment: "a".to_owned()
        }
    );

    // Continuations in the same chunk as their segment, or a later one, are appended.
    let mut assembler = Assembler::new();
    let same_chunk = pb::SnapshotChunk {
        segments: vec![wire_segment("a")],
        segment_keys: vec![continuation("a")],
        ..pb::SnapshotChunk::default()
    };
    let update = assemble_one(
        &mut assembler,
        &[begin(0, 1), chunk(same_chunk), chunk(later), end()],
    );
    let Update::Snapshot { segments, .. } = update else {
        panic!("a snapshot");
    };
    let mut included = keys("a", 0..2);
    included.extend(keys("more", 0..2));
    included.extend(keys("more", 0..2));
    assert_eq!(segments[0].included, included);
}

#[test]
fn deltas_and_heartbeats_need_a_snapshot_first() {
    let error = refused(
        &mut Assembler::new(),
        vec![delta(pb::Delta {
            revision: 1,
            ..pb::Delta::default()
        })],
    );
    assert_eq!(error, ProtocolError::BeforeSnapshot { message: "delta" });
    assert_eq!(error.to_string(), "delta before any snapshot");
    assert_eq!(
        refused(&mut Assembler::new(), vec![heartbeat(0)]),
        ProtocolError::BeforeSnapshot {
            message: "heartbeat"
        }
    );
}

#[test]
fn delta_revisions_must_be_consecutive() {
    let of = |revision, more| {
        delta(pb::Delta {
            revision,
            more,
            ..pb::Delta::default()
        })
    };
    // A gap, and a repeat.
    let error = refused(&mut at_revision(4), vec![of(6, false)]);
    assert_eq!(
        error,
        ProtocolError::DeltaRevision {
            expected: 5,
            got: 6
        }
    );
    assert_eq!(
        error.to_string(),
        "delta of revision 6, expected revision 5"
    );
    assert_eq!(
        refused(&mut at_revision(4), vec![of(5, false), of(5, false)]),
        ProtocolError::DeltaRevision {
            expected: 6,
            got: 5
        }
    );

    // The parts of a revision share it.
    assert_eq!(
        refused(&mut at_revision(4), vec![of(5, true), of(6, false)]),
        ProtocolError::PartRevision {
            expected: 5,
            got: 6
        }
    );

    // Nothing but its next part (or a snapshot) while a delta is unfinished.
    let mut assembler = at_revision(4);
    let error = refused(&mut assembler, vec![of(5, true), heartbeat(4)]);
    assert_eq!(
        error,
        ProtocolError::DeltaInterrupted {
            message: "heartbeat",
            revision: 5
        }
    );
    assert_eq!(
        error.to_string(),
        "heartbeat while delta 5 awaits its next part"
    );
    assert_eq!(
        refused(&mut at_revision(4), vec![of(5, true), end()]),
        ProtocolError::DeltaInterrupted {
            message: "snapshot_end",
            revision: 5
        }
    );
    // The unfinished delta is dropped; the client is still at 4 and may go on.
    assert_eq!(assembler.position(), Some(("e1", 4)));
    assemble_one(&mut assembler, &[of(5, false)]);
    assert_eq!(assembler.position(), Some(("e1", 5)));
}

#[test]
fn heartbeats_must_name_the_last_revision() {
    let mut assembler = at_revision(4);
    assert_eq!(
        assemble_one(&mut assembler, &[heartbeat(4)]),
        Update::Heartbeat { revision: 4 }
    );
    // Ahead: a change was missed.
    let error = refused(&mut assembler, vec![heartbeat(5)]);
    assert_eq!(
        error,
        ProtocolError::HeartbeatRevision { current: 4, got: 5 }
    );
    assert_eq!(
        error.to_string(),
        "heartbeat at revision 5, but the last revision received is 4"
    );
    assert_eq!(
        refused(&mut assembler, vec![heartbeat(3)]),
        ProtocolError::HeartbeatRevision { current: 4, got: 3 }
    );
}

#[test]
fn documents_that_do_not_convert_are_refused() {
    let bad_flag = pb::Flag {
        kind: pb::Kind::Unspecified as i32,
        ..pb::Flag::from(&flag("checkout", 0, 4))
    };
    let in_chunk = pb::SnapshotChunk {
        flags: vec![bad_flag],
        ..pb::SnapshotChunk::default()
    };
    let error = refused(&mut Assembler::new(), vec![begin(1, 0), chunk(in_chunk)]);
    assert!(
        matches!(
            &error,
            ProtocolError::Convert(ConvertError::Unspecified { path, .. })
                if path == "flags[checkout].kind"
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "flags[checkout].kind: must be set, got KIND_UNSPECIFIED"
    );

    let bad_segment = pb::Segment {
        rules: vec![pb::SegmentRule {
            conditions: vec![pb::Condition {
                attribute: Some("country".to_owned()),
                op: pb::Op::Unspecified as i32,
                ..pb::Condition::default()
            }],
        }],
        ..wire_segment("beta")
    };
    let in_delta = pb::Delta {
        revision: 5,
        segments: vec![bad_segment],
        ..pb::Delta::default()
    };
    assert!(matches!(
        refused(&mut at_revision(4), vec![delta(in_delta)]),
        ProtocolError::Convert(ConvertError::Unspecified { .. })
    ));
}

#[test]
fn a_delta_may_not_patch_a_segment_it_deletes() {
    let error = refused(
        &mut at_revision(4),
        vec![delta(pb::Delta {
            revision: 5,
            deleted_segments: vec!["beta".to_owned()],
            segment_patches: vec![continuation("beta")],
            ..pb::Delta::default()
        })],
    );
    assert_eq!(
        error,
        ProtocolError::PatchOfDeletedSegment {
            revision: 5,
            segment: "beta".to_owned()
        }
    );
    assert_eq!(
        error.to_string(),
        "delta 5 patches the keys of segment \"beta\", which it deletes"
    );
}
