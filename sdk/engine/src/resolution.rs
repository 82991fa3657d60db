//! What resolving a flag for a context yields before it becomes a typed value: the variant
//! index, the bucket when a split decided, and why, packed into two words. Compilation caches
//! it for flags whose answer does not depend on the context; evaluation produces it otherwise.

/// Why a variant was chosen, by index into the flag's rules or prerequisites; turned into a
/// [`Reason`](crate::Reason) borrowing the names only when the caller gets its detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    Off,
    Rule(u32),
    Default,
    Prerequisite(u32),
    MissingBucket,
}

/// Which variant a flag serves a context, before it is turned into a typed value.
///
/// Two words, so that it is a pair of scalars, which is returned in registers: as three fields
/// (16 bytes) it went through the stack, with a store and a load per field.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolution {
    /// The variant index in the low 32 bits; the bucket in the high 32, `NO_BUCKET` unless a
    /// split decided.
    served: u64,
    /// The [`Why`], as [`Why::code`] gives it.
    why: u64,
}

impl Resolution {
    #[inline(always)]
    pub(crate) fn new(variant: usize, why: Why, bucket: u32) -> Resolution {
        Resolution {
            served: u64::from(variant as u32) | u64::from(bucket) << 32,
            why: why.code(),
        }
    }

    #[inline(always)]
    pub(crate) fn variant(self) -> usize {
        self.served as u32 as usize
    }

    pub(crate) fn why(self) -> Why {
        Why::from_code(self.why)
    }

    pub(crate) fn bucket(self) -> Option<u32> {
        let bucket = (self.served >> 32) as u32;
        (bucket != NO_BUCKET).then_some(bucket)
    }
}

impl Why {
    /// The kind in the low 32 bits, the index in the high 32.
    #[inline(always)]
    fn code(self) -> u64 {
        match self {
            Why::Off => 0,
            Why::Default => 1,
            Why::MissingBucket => 2,
            Why::Rule(i) => 3 | u64::from(i) << 32,
            Why::Prerequisite(i) => 4 | u64::from(i) << 32,
        }
    }

    fn from_code(code: u64) -> Why {
        let index = (code >> 32) as u32;
        match code as u32 {
            0 => Why::Off,
            1 => Why::Default,
            3 => Why::Rule(index),
            4 => Why::Prerequisite(index),
            _ => Why::MissingBucket,
        }
    }
}

pub(crate) const NO_BUCKET: u32 = u32::MAX;
