//! Bucketing (DESIGN.md section 3): `MurmurHash3_x86_32(salt ++ "." ++ value, 0) % 100000`.
//!
//! The hash is computed here over byte slices rather than through the `murmur3` crate, whose
//! `Read`-based API costs several times the hash itself; tests check this implementation against
//! that crate for every tail length and against the conformance vectors. The salt prefix is
//! hashed once when a flag is compiled ([`SaltedHasher`]); an evaluation hashes only the value.

use std::fmt::Write;

use crate::context::{AttrRef, Raw};

/// Number of buckets: a bucket is in `0..BUCKETS`, weights are in 1/1000 of a percent.
pub const BUCKETS: u32 = 100_000;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix_block(h: u32, block: [u8; 4]) -> u32 {
    let k = u32::from_le_bytes(block)
        .wrapping_mul(C1)
        .rotate_left(15)
        .wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// Incremental MurmurHash3 x86_32: the reference algorithm over the concatenation of every
/// `write`.
#[derive(Debug, Clone, Copy)]
pub struct Murmur3 {
    h: u32,
    /// Bytes not yet forming a whole 4-byte block, little-endian in the low bits.
    pending: u32,
    pending_len: u32,
    total_len: u32,
}

impl Murmur3 {
    /// A hasher with the given seed.
    pub fn new(seed: u32) -> Murmur3 {
        Murmur3 {
            h: seed,
            pending: 0,
            pending_len: 0,
            total_len: 0,
        }
    }

    /// Appends bytes.
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) {
        // The reference algorithm mixes in the length as a 32-bit value, so it wraps.
        self.total_len = self.total_len.wrapping_add(bytes.len() as u32);
        let mut rest = bytes;
        // Complete a partial block byte by byte (at most 3 bytes; no memcpy call).
        while self.pending_len > 0 {
            let Some((&b, tail)) = rest.split_first() else {
                return;
            };
            self.pending |= u32::from(b) << (8 * self.pending_len);
            self.pending_len += 1;
            rest = tail;
            if self.pending_len == 4 {
                self.h = mix_block(self.h, self.pending.to_le_bytes());
                self.pending = 0;
                self.pending_len = 0;
            }
        }
        let mut blocks = rest.chunks_exact(4);
        for block in &mut blocks {
            self.h = mix_block(self.h, [block[0], block[1], block[2], block[3]]);
        }
        for &b in blocks.remainder() {
            self.pending |= u32::from(b) << (8 * self.pending_len);
            self.pending_len += 1;
        }
    }

    /// The hash of everything written.
    #[inline]
    pub fn finish(&self) -> u32 {
        let mut h = self.h;
        if self.pending_len > 0 {
            h ^= self
                .pending
                .wrapping_mul(C1)
                .rotate_left(15)
                .wrapping_mul(C2);
        }
        h ^= self.total_len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

impl Write for Murmur3 {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}

/// MurmurHash3 x86_32 of `bytes`.
pub fn murmur3_x86_32(bytes: &[u8], seed: u32) -> u32 {
    let mut h = Murmur3::new(seed);
    h.write(bytes);
    h.finish()
}

/// The bucket of `value` under `salt`: `murmur3(salt + "." + value) % 100000`.
pub fn bucket(salt: &str, value: &str) -> u32 {
    SaltedHasher::new(salt).bucket_str(value)
}

/// The hash state after `salt + "."`, prepared once per flag.
#[derive(Debug, Clone, Copy)]
pub struct SaltedHasher {
    prefix: Murmur3,
}

impl SaltedHasher {
    /// Hashes the salt and the separator.
    pub fn new(salt: &str) -> SaltedHasher {
        let mut prefix = Murmur3::new(0);
        prefix.write(salt.as_bytes());
        prefix.write(b".");
        SaltedHasher { prefix }
    }

    /// The bucket of a string bucketing value.
    #[inline]
    pub fn bucket_str(&self, value: &str) -> u32 {
        self.bucket_bytes(value.as_bytes())
    }

    /// [`Murmur3::write`] and [`Murmur3::finish`] specialised for one write after the prefix:
    /// the prefix's partial block is completed with one word load, the value's last 1–3 bytes
    /// are gathered with three byte loads, and no byte-at-a-time loop runs.
    ///
    /// Always inlined, like [`bucket_raw`](Self::bucket_raw): a split's evaluation is mostly
    /// this hash, and as a call it costs S2 and S3 about 25 instructions more (callgrind).
    #[inline(always)]
    fn bucket_bytes(&self, value: &[u8]) -> u32 {
        let prefix = self.prefix;
        let mut h = prefix.h;
        let mut rest = value;
        if prefix.pending_len > 0 {
            let [a, b, c, d, ..] = *rest else {
                // Shorter than a word: rare enough for the general path.
                let mut general = prefix;
                general.write(value);
                return general.finish() % BUCKETS;
            };
            // The word's bytes beyond the 4 - pending_len the block needs shift out of it.
            let word = u32::from_le_bytes([a, b, c, d]) << (8 * prefix.pending_len);
            h = mix_block(h, (prefix.pending | word).to_le_bytes());
            rest = &rest[4 - prefix.pending_len as usize..];
        }
        let mut blocks = rest.chunks_exact(4);
        for block in &mut blocks {
            h = mix_block(h, [block[0], block[1], block[2], block[3]]);
        }
        let tail = blocks.remainder();
        let n = tail.len();
        let pending = match n {
            0 => 0,
            // Byte 0, the middle byte and the last: every byte of a 1–3 byte tail.
            _ => {
                u32::from(tail[0])
                    | u32::from(tail[n / 2]) << (8 * (n / 2))
                    | u32::from(tail[n - 1]) << (8 * (n - 1))
            }
        };
        let state = Murmur3 {
            h,
            pending,
            pending_len: n as u32,
            total_len: prefix.total_len.wrapping_add(value.len() as u32),
        };
        state.finish() % BUCKETS
    }

    /// The bucket of an attribute value, or `None` when it cannot be bucketed: an empty string,
    /// a bool or a list.
    pub fn bucket(&self, value: AttrRef<'_>) -> Option<u32> {
        self.bucket_raw(value.into())
    }

    /// Inlined into evaluation, with the string path; a number's formatting stays a call.
    #[inline(always)]
    pub(crate) fn bucket_raw(&self, value: Raw<'_>) -> Option<u32> {
        match value {
            Raw::Str(s) if !s.is_empty() => Some(self.bucket_bytes(s)),
            Raw::Number(n) => Some(self.bucket_number(n)),
            _ => None,
        }
    }

    #[inline(never)]
    fn bucket_number(&self, n: f64) -> u32 {
        let mut h = self.prefix;
        write_number(&mut h, n);
        h.finish() % BUCKETS
    }
}

/// Writes a number's bucketing form (DESIGN.md section 3): an integer when it has no fractional
/// part and its magnitude is below 2^53 (`42.0` → `42`, `-0` → `0`), else Rust's `Display` for
/// `f64` (shortest round-trip, never an exponent). Formatting goes straight into `out`, so no
/// string is allocated.
pub fn write_number(out: &mut impl Write, n: f64) {
    const LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
                                                // Writing into a hasher or a String cannot fail.
    let _ = if n.fract() == 0.0 && n.abs() < LIMIT {
        write!(out, "{}", n as i64)
    } else {
        write!(out, "{n}")
    };
}
