//! The gRPC codec of every Flagstaff service: prost's, with small starting buffers.
//!
//! tonic's default codec starts every call with an 8 KiB encode buffer and an 8 KiB decode
//! buffer. A Watch stream lives for as long as its SDK instance does and mostly sits idle, so
//! those 16 KiB, times every connected instance, would be most of the server's memory. Buffers
//! here start at 1 KiB and grow to the message at hand, which big Admin messages do at the cost
//! of a few reallocations.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::BufferSettings;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Where each call's encode and decode buffers start.
const START: usize = 1024;

/// When an encoder hands what it has encoded to the transport: tonic's default.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost's codec with 1 KiB starting buffers (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(START, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(START, YIELD_THRESHOLD))
    }
}
