//! Bucketing (DESIGN.md section 3): `MurmurHash3_x86_32(salt ++ "." ++ value, 0) % 100000`.
//!
//! The hash is computed here over byte slices rather than through the `murmur3` crate, whose
//! `Read`-based API costs several times the hash itself; tests check this implementation against
//! that crate for every tail length and against the conformance vectors. The salt prefix is
//! hashed once when a flag is compiled ([`SaltedHasher`]); an evaluation hashes only the value.

use std::fmt::Write;

use crate::context::AttrValue;

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
    /// Bytes not yet forming a whole 4-byte block.
    pending: [u8; 4],
    pending_len: usize,
    total_len: usize,
}

impl Murmur3 {
    /// A hasher with the given seed.
    pub fn new(seed: u32) -> Murmur3 {
        Murmur3 {
            h: seed,
            pending: [0; 4],
            pending_len: 0,
            total_len: 0,
        }
    }

    /// Appends bytes.
    #[inline]
    pub fn write(&mut self, mut bytes: &[u8]) {
        self.total_len += bytes.len();
        if self.pending_len > 0 {
            let take = (4 - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < 4 {
                return;
            }
            self.h = mix_block(self.h, self.pending);
            self.pending_len = 0;
        }
        let mut blocks = bytes.chunks_exact(4);
        for block in &mut blocks {
            self.h = mix_block(self.h, [block[0], block[1], block[2], block[3]]);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The hash of everything written.
    #[inline]
    pub fn finish(&self) -> u32 {
        let mut h = self.h;
        if self.pending_len > 0 {
            let mut k = 0u32;
            for (i, b) in self.pending[..self.pending_len].iter().enumerate() {
                k ^= u32::from(*b) << (8 * i);
            }
            h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        }
        // The reference algorithm mixes in the length as a 32-bit value.
        h ^= self.total_len as u32;
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
        let mut h = self.prefix;
        h.write(value.as_bytes());
        h.finish() % BUCKETS
    }

    /// The bucket of an attribute value, or `None` when it cannot be bucketed: an empty string,
    /// a bool or a list.
    #[inline]
    pub fn bucket(&self, value: &AttrValue) -> Option<u32> {
        match value {
            AttrValue::String(s) if !s.is_empty() => Some(self.bucket_str(s)),
            AttrValue::Number(n) => {
                let mut h = self.prefix;
                write_number(&mut h, *n);
                Some(h.finish() % BUCKETS)
            }
            _ => None,
        }
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
