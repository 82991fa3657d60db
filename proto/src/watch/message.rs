//! [`WatchMessage`], what the server's Watch stream sends: a `WatchResponse`, or its
//! encoding shared by many streams.

use std::mem;

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use prost::Message;

use crate::pb;

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
