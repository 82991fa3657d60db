//! The gRPC codec of every Flagstaff service: prost's, with buffers that stay small.
//!
//! tonic's default codec starts every call with an 8 KiB encode buffer and an 8 KiB decode
//! buffer, and packs every message that is ready into the encode buffer until it holds 32 KiB.
//! A call keeps its encode buffer, at the largest size it ever grew to, for as long as it
//! lives. A Watch stream lives for as long as its SDK instance does and mostly sits idle, so
//! whatever its buffers grew to, times every connected instance, would be most of the server's
//! memory.
//!
//! So here both buffers start small, and the encoder
//! - reserves the exact size of each message before encoding it, instead of letting the buffer
//!   double its way there, and
//! - hands what it has encoded to the transport as soon as that is `START` bytes or more,
//!   instead of packing up to 32 KiB: small messages still travel together, and a big one ends
//!   the batch it joins.
//!
//! A big message (a snapshot chunk) then fills a buffer of exactly its size, and the message
//! after it, encoded while the big one is still on its way out, starts a fresh small buffer: the
//! big one is freed once sent instead of being kept by the stream for the rest of its life.

use std::any::TypeId;
use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder};

/// The largest request a server decodes (DESIGN.md section 4a), but for those below.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// The largest `ApplyRequest`: a whole environment in one revision.
pub const MAX_APPLY_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// The largest client message on a Watch stream (a subscribe or an acknowledgement, both a few
/// hundred bytes).
pub const MAX_WATCH_REQUEST_BYTES: usize = 64 * 1024;

/// Where each call's encode and decode buffers start: room for the small messages that most
/// of a Watch stream's life is made of (heartbeats, acknowledgements, one-flag deltas).
const START: usize = 256;

/// When an encoder hands what it has encoded to the transport: once it holds a buffer's worth.
const YIELD_THRESHOLD: usize = START;

/// prost's codec with small buffers (see the module documentation), reading messages with the
/// decoder `D` of its end of the call: [`Codec`] for the clients, [`ServerCodec`] for the
/// servers. Both encode the same way, with [`ExactEncoder`].
#[derive(Debug, Clone, Copy)]
pub struct SmallCodec<T, D>(PhantomData<(T, D)>);

/// The codec of the generated clients: [`SmallCodec`] with prost's decoder, so that a response
/// that does not decode is `INTERNAL`, as with tonic's own codec.
pub type Codec<T, U> = SmallCodec<T, ProstDecoder<U>>;

/// The codec of the generated servers: [`SmallCodec`] with [`RequestDecoder`], so that a request
/// that does not decode is the client's error (`INVALID_ARGUMENT`, e.g. a string that is not
/// UTF-8), not the server's (`INTERNAL`, prost's codec); a request over its size limit is
/// `RESOURCE_EXHAUSTED` naming the limit: [`MAX_REQUEST_BYTES`], or [`MAX_APPLY_REQUEST_BYTES`]
/// for an `ApplyRequest` and [`MAX_WATCH_REQUEST_BYTES`] for a Watch stream's messages. The
/// server's transport must let messages of the largest limit through to it.
pub type ServerCodec<T, U> = SmallCodec<T, RequestDecoder<U>>;

impl<T, D> Default for SmallCodec<T, D> {
    fn default() -> Self {
        SmallCodec(PhantomData)
    }
}

impl<T, D> tonic::codec::Codec for SmallCodec<T, D>
where
    T: Message + Send + 'static,
    D: SmallDecoder + Send + 'static,
    D::Item: Send + 'static,
{
    type Encode = T;
    type Decode = D::Item;
    type Encoder = ExactEncoder<T>;
    type Decoder = D;

    fn encoder(&mut self) -> Self::Encoder {
        ExactEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        D::small()
    }
}

/// A decoder whose buffer starts small: what a [`SmallCodec`] reads messages with.
pub trait SmallDecoder: Decoder<Error = Status> {
    /// The decoder, with a buffer of `START` bytes to begin with.
    fn small() -> Self;
}

impl<U: Message + Default + Send + 'static> SmallDecoder for ProstDecoder<U> {
    fn small() -> Self {
        ProstCodec::<U, U>::raw_decoder(BufferSettings::new(START, YIELD_THRESHOLD))
    }
}

/// prost's encoder, reserving each message's exact size first (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct ExactEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ExactEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("cannot encode a message: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(START, YIELD_THRESHOLD)
    }
}

/// The size limit of a request of type `U`.
pub fn request_limit<U: 'static>() -> usize {
    let id = TypeId::of::<U>();
    if id == TypeId::of::<crate::generated::ApplyRequest>() {
        MAX_APPLY_REQUEST_BYTES
    } else if id == TypeId::of::<crate::generated::WatchRequest>() {
        MAX_WATCH_REQUEST_BYTES
    } else {
        MAX_REQUEST_BYTES
    }
}

/// Decodes requests for [`ServerCodec`].
#[derive(Debug, Clone, Copy)]
pub struct RequestDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> SmallDecoder for RequestDecoder<U> {
    fn small() -> Self {
        RequestDecoder(PhantomData)
    }
}

impl<U: Message + Default + 'static> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        use prost::bytes::Buf as _;
        let limit = request_limit::<U>();
        if buf.remaining() > limit {
            return Err(too_large(buf.remaining(), limit));
        }
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("the request does not decode: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(START, YIELD_THRESHOLD)
    }
}

/// The status of a request of `size` bytes over `limit`.
pub fn too_large(size: usize, limit: usize) -> Status {
    let limit_text = if limit.is_multiple_of(1 << 20) {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{} KiB", limit >> 10)
    };
    Status::resource_exhausted(format!(
        "the request is {size} bytes, over the limit of {limit_text}{}",
        if limit == MAX_REQUEST_BYTES {
            "; write a big segment in parts with PatchSegmentKeys"
        } else {
            ""
        }
    ))
}
