//! The Watch stream's framing, at both ends: the server splits a snapshot, or the changes of a
//! revision, into messages that stay within a byte budget ([`pack_snapshot`], [`pack_delta`]);
//! the SDK feeds the messages to an [`Assembler`], which checks the protocol and hands back
//! each complete [`Update`].
//!
//! The wire format at a glance (`sync.proto` has the details). The client sends one
//! `Subscribe` (its epoch and revision, or none), then an `Ack` for each revision it applies.
//! The server sends `WatchResponse`s:
//!
//! ```text
//! snapshot:   SnapshotBegin{epoch, revision, counts}  SnapshotChunk*  SnapshotEnd
//! revision:   Delta{revision, more: true}*  Delta{revision, more: false}
//! idle:       Heartbeat{revision}
//! ```
//!
//! A snapshot replaces all the client holds and may come at any time (a client too slow to
//! keep up gets one); each revision after it comes as a delta, consecutive, in one or more
//! parts; a heartbeat names the revision the client should be at.
//!
//! Where each part lives:
//! - `pack`: the server's side, messages made from domain flags, segments and key patches
//!   ([`pack_snapshot`], [`snapshot_chunks`], [`pack_delta`], [`CHUNK_BUDGET`]);
//! - `assemble`: the SDK's side, messages put back together and checked ([`Assembler`],
//!   [`Update`], [`Delta`], [`ProtocolError`]); it depends on `pack` only for [`DeltaParts`],
//!   the borrowed form of a [`Delta`];
//! - `message`: [`WatchMessage`], what the server's generated `Sync` service sends in place of
//!   a `WatchResponse`, so that a message is encoded once for every stream.
//!
//! Flags, segments and key patches convert to and from the wire in the crate's `convert`
//! module, as everywhere else.
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

mod assemble;
mod message;
mod pack;

pub use assemble::{Assembler, Delta, ProtocolError, Update};
pub use message::WatchMessage;
pub use pack::{
    pack_delta, pack_snapshot, snapshot_chunks, DeltaParts, SnapshotHeader, SnapshotMessages,
    CHUNK_BUDGET,
};
