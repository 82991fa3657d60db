//! Compiled conditions: everything an operator needs prepared when the snapshot is built, so an
//! evaluation only compares.
//!
//! Compiled segments live here too, because the two are one recursive concept: a segment is a
//! list of condition lists, and `in_segment` is a condition that holds the segments it tests.
//! Kept in one file, neither module has to import the other.

use std::cmp::Ordering;
use std::sync::Arc;

use rustc_hash::FxHashSet;
use serde_json::Value;

use crate::context::{Context, Raw, Selector};
use crate::keys;
use crate::model::{Condition, Op, Segment};
use crate::operand::{millis_to_nanos, parse_rfc3339, parse_semver, parse_time, Matcher};
use crate::table::Keyed;

/// A condition ready to test contexts.
#[derive(Debug)]
pub(crate) struct CompiledCondition {
    attribute: Selector,
    negate: bool,
    test: Test,
}

/// What an op tests, with its operands prepared.
///
/// Ordered comparisons keep one bound: "less than one of the values" is "less than the largest",
/// and likewise for the others, so a condition with many values costs one comparison.
#[derive(Debug)]
enum Test {
    In(InSet),
    StartsWith(Box<[Box<str>]>),
    EndsWith(Box<[Box<str>]>),
    Contains(Box<[Box<str>]>),
    Matches(Box<[Matcher]>),
    Less {
        bound: f64,
        inclusive: bool,
    },
    Greater {
        bound: f64,
        inclusive: bool,
    },
    SemverEq(Box<[semver::Version]>),
    SemverLt(semver::Version),
    SemverGt(semver::Version),
    /// Unix nanoseconds.
    Before(i128),
    After(i128),
    Exists,
    InSegment(Box<[Arc<CompiledSegment>]>),
}

/// Operands of `in`, split by type so matching is type-aware without converting anything.
#[derive(Debug)]
struct InSet {
    strings: StrSet,
    numbers: Box<[f64]>,
    bools: [bool; 2],
}

/// Short lists are scanned (faster than hashing for a handful of values); long ones are hashed.
#[derive(Debug)]
enum StrSet {
    /// Every value at most 8 bytes long, the usual case (country codes, plans, tiers): each is
    /// compared as one word and a length.
    Short(Box<[ShortStr]>),
    Small(Box<[Box<[u8]>]>),
    Large(FxHashSet<Box<[u8]>>),
}

/// A string of at most 8 bytes as its bytes zero-padded into a little-endian word, with its
/// length: two strings are equal exactly when both are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShortStr {
    word: u64,
    len: u64,
}

impl ShortStr {
    const MAX: usize = 8;

    /// `None` when `s` is longer than [`ShortStr::MAX`]. Loads overlapping words or bytes rather
    /// than copying, so that it compiles to a handful of instructions.
    #[inline(always)]
    fn new(s: &[u8]) -> Option<ShortStr> {
        let n = s.len();
        let word = match *s {
            [] => 0,
            [a, b, c, d, ref rest @ ..] => {
                if rest.len() > Self::MAX - 4 {
                    return None;
                }
                // The first four bytes and the last four, at their places; where they overlap
                // they hold the same bytes.
                let head = u32::from_le_bytes([a, b, c, d]);
                let tail = &s[n - 4..];
                let tail = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
                u64::from(head) | u64::from(tail) << (8 * (n - 4))
            }
            // One to three bytes: the first, the middle and the last are all of them.
            _ => {
                u64::from(s[0])
                    | u64::from(s[n / 2]) << (8 * (n / 2))
                    | u64::from(s[n - 1]) << (8 * (n - 1))
            }
        };
        Some(ShortStr {
            word,
            len: n as u64,
        })
    }
}

impl StrSet {
    const SCAN_LIMIT: usize = 8;

    fn new(items: Vec<Box<[u8]>>) -> StrSet {
        if items.len() > Self::SCAN_LIMIT {
            return StrSet::Large(items.into_iter().collect());
        }
        match items.iter().map(|s| ShortStr::new(s)).collect() {
            Some(short) => StrSet::Short(short),
            None => StrSet::Small(items.into_boxed_slice()),
        }
    }

    #[inline(always)]
    fn contains(&self, s: &[u8]) -> bool {
        match self {
            StrSet::Short(items) => match ShortStr::new(s) {
                Some(s) => items.contains(&s),
                // Longer than every value.
                None => false,
            },
            StrSet::Small(items) => {
                for item in items.iter() {
                    if keys::eq_bytes(item, s) {
                        return true;
                    }
                }
                false
            }
            StrSet::Large(set) => set.contains(s),
        }
    }
}

fn strings(values: &[Value]) -> Box<[Box<str>]> {
    values
        .iter()
        .filter_map(Value::as_str)
        .map(Box::from)
        .collect()
}

fn numbers(values: &[Value]) -> impl Iterator<Item = f64> + '_ {
    values.iter().filter_map(Value::as_f64)
}

fn precedence(a: &semver::Version, b: &semver::Version) -> Ordering {
    a.cmp_precedence(b)
}

impl CompiledCondition {
    /// The heap memory its compiled regexes hold (0 for an op other than `matches`).
    pub(crate) fn regex_bytes(&self) -> usize {
        match &self.test {
            Test::Matches(matchers) => matchers.iter().map(Matcher::memory_usage).sum(),
            _ => 0,
        }
    }

    /// Compiles a validated condition; `segment` resolves `in_segment` keys.
    pub(crate) fn compile(
        condition: &Condition,
        segment: &dyn Fn(&str) -> Option<Arc<CompiledSegment>>,
    ) -> CompiledCondition {
        let values = &condition.values;
        let versions = || {
            values
                .iter()
                .filter_map(Value::as_str)
                .filter_map(parse_semver)
        };
        let times = || values.iter().filter_map(parse_time);
        let test = match condition.op {
            Op::In => Test::In(InSet {
                strings: StrSet::new(
                    values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| Box::from(s.as_bytes()))
                        .collect(),
                ),
                numbers: numbers(values).collect(),
                bools: [
                    values.contains(&Value::Bool(false)),
                    values.contains(&Value::Bool(true)),
                ],
            }),
            Op::StartsWith => Test::StartsWith(strings(values)),
            Op::EndsWith => Test::EndsWith(strings(values)),
            Op::Contains => Test::Contains(strings(values)),
            Op::Matches => Test::Matches(
                values
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(Matcher::new)
                    .collect(),
            ),
            Op::Lt | Op::Lte => Test::Less {
                bound: numbers(values).fold(f64::NEG_INFINITY, f64::max),
                inclusive: condition.op == Op::Lte,
            },
            Op::Gt | Op::Gte => Test::Greater {
                bound: numbers(values).fold(f64::INFINITY, f64::min),
                inclusive: condition.op == Op::Gte,
            },
            Op::SemverEq => Test::SemverEq(versions().collect()),
            Op::SemverLt => match versions().max_by(precedence) {
                Some(v) => Test::SemverLt(v),
                None => Test::SemverEq(Box::new([])),
            },
            Op::SemverGt => match versions().min_by(precedence) {
                Some(v) => Test::SemverGt(v),
                None => Test::SemverEq(Box::new([])),
            },
            Op::Before => Test::Before(times().max().unwrap_or(i128::MIN)),
            Op::After => Test::After(times().min().unwrap_or(i128::MAX)),
            Op::Exists => Test::Exists,
            Op::InSegment => Test::InSegment(
                values
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(segment)
                    .collect(),
            ),
        };
        CompiledCondition {
            attribute: Selector::new(condition.attribute.as_deref().unwrap_or_default()),
            negate: condition.negate,
            test,
        }
    }

    /// DESIGN.md section 2: a missing attribute is false whatever `negate` says; otherwise the
    /// op holds when it holds for the value or any element of a list, and `negate` inverts that.
    ///
    /// The commonest condition, `in` on a string attribute, is decided here inline; every other
    /// op and value type goes out of line, so the rare operators do not weigh on the hot loop.
    #[inline(always)]
    pub(crate) fn matches(&self, ctx: &Context<'_>) -> bool {
        if let Test::In(set) = &self.test {
            return match ctx.select(&self.attribute) {
                None => false,
                Some(Raw::Str(s)) => set.strings.contains(s) != self.negate,
                Some(value) => self.matches_value(value),
            };
        }
        self.matches_other(ctx)
    }

    /// [`CompiledCondition::matches`] for every op but `in`.
    #[inline(never)]
    fn matches_other(&self, ctx: &Context<'_>) -> bool {
        match &self.test {
            Test::Exists => ctx.select(&self.attribute).is_some() != self.negate,
            Test::InSegment(segments) => segments.iter().any(|s| s.contains(ctx)) != self.negate,
            _ => match ctx.select(&self.attribute) {
                None => false,
                Some(value) => self.matches_value(value),
            },
        }
    }

    /// Whether the op holds for a present value, with `negate` applied.
    #[inline(never)]
    fn matches_value(&self, value: Raw<'_>) -> bool {
        match value {
            Raw::List(items) => items.iter().any(|v| self.test(v.as_ref().into())) != self.negate,
            value => self.test(value) != self.negate,
        }
    }

    /// The op on one scalar; a value of the wrong type does not match. Strings are compared
    /// as bytes; only semver and dates need them as `str`.
    #[inline(always)]
    fn test(&self, value: Raw<'_>) -> bool {
        match (&self.test, value) {
            (Test::In(set), Raw::Str(s)) => set.strings.contains(s),
            (Test::In(set), Raw::Number(n)) => set.numbers.contains(&n),
            (Test::In(set), Raw::Bool(b)) => set.bools[usize::from(b)],
            (Test::StartsWith(prefixes), Raw::Str(s)) => {
                prefixes.iter().any(|p| s.starts_with(p.as_bytes()))
            }
            (Test::EndsWith(suffixes), Raw::Str(s)) => {
                suffixes.iter().any(|p| s.ends_with(p.as_bytes()))
            }
            (Test::Contains(parts), Raw::Str(s)) => parts
                .iter()
                .any(|p| memchr::memmem::find(s, p.as_bytes()).is_some()),
            (Test::Matches(matchers), Raw::Str(s)) => matchers.iter().any(|m| m.is_match(s)),
            (Test::Less { bound, inclusive }, Raw::Number(n)) => {
                n < *bound || (*inclusive && n == *bound)
            }
            (Test::Greater { bound, inclusive }, Raw::Number(n)) => {
                n > *bound || (*inclusive && n == *bound)
            }
            (Test::SemverEq(versions), Raw::Str(s)) => semver(s).is_some_and(|v| {
                versions
                    .iter()
                    .any(|w| precedence(&v, w) == Ordering::Equal)
            }),
            (Test::SemverLt(bound), Raw::Str(s)) => {
                semver(s).is_some_and(|v| precedence(&v, bound) == Ordering::Less)
            }
            (Test::SemverGt(bound), Raw::Str(s)) => {
                semver(s).is_some_and(|v| precedence(&v, bound) == Ordering::Greater)
            }
            (Test::Before(bound), value) => instant(value).is_some_and(|t| t < *bound),
            (Test::After(bound), value) => instant(value).is_some_and(|t| t > *bound),
            _ => false,
        }
    }
}

fn semver(s: &[u8]) -> Option<semver::Version> {
    std::str::from_utf8(s).ok().and_then(parse_semver)
}

/// An attribute as an instant: an RFC 3339 string or Unix milliseconds.
#[inline]
fn instant(value: Raw<'_>) -> Option<i128> {
    match value {
        Raw::Str(s) => std::str::from_utf8(s).ok().and_then(parse_rfc3339),
        Raw::Number(n) => millis_to_nanos(n),
        _ => None,
    }
}

/// A segment ready to test membership in constant time, whatever the size of its key lists.
#[derive(Debug)]
pub(crate) struct CompiledSegment {
    key: Arc<str>,
    pub(crate) doc: Arc<Segment>,
    /// Context keys are chosen by callers, but these sets are built from the segment's own keys,
    /// so lookups of arbitrary keys cannot degrade them.
    included: FxHashSet<Box<[u8]>>,
    excluded: FxHashSet<Box<[u8]>>,
    rules: Box<[Box<[CompiledCondition]>]>,
}

impl CompiledSegment {
    pub(crate) fn compile(key: Arc<str>, doc: Arc<Segment>) -> CompiledSegment {
        let keys = |list: &[String]| list.iter().map(|k| Box::from(k.as_bytes())).collect();
        let no_segments = |_: &str| None;
        CompiledSegment {
            key,
            included: keys(&doc.included),
            excluded: keys(&doc.excluded),
            rules: doc
                .rules
                .iter()
                .map(|r| {
                    r.conditions
                        .iter()
                        .map(|c| CompiledCondition::compile(c, &no_segments))
                        .collect()
                })
                .collect(),
            doc,
        }
    }

    /// The heap memory its rules' compiled regexes hold.
    pub(crate) fn regex_bytes(&self) -> usize {
        self.rules
            .iter()
            .flat_map(|conditions| conditions.iter())
            .map(CompiledCondition::regex_bytes)
            .sum()
    }

    /// Excluded wins; then included; then any rule.
    #[inline]
    pub(crate) fn contains(&self, ctx: &Context<'_>) -> bool {
        let key = ctx.key().as_bytes();
        if !self.excluded.is_empty() && self.excluded.contains(key) {
            return false;
        }
        if !self.included.is_empty() && self.included.contains(key) {
            return true;
        }
        self.rules
            .iter()
            .any(|conditions| conditions.iter().all(|c| c.matches(ctx)))
    }
}

impl Keyed for CompiledSegment {
    fn key(&self) -> &str {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_equal_exactly_when_their_bytes_are() {
        let data = b"abcdefghij";
        let mut all = Vec::new();
        for n in 0..=ShortStr::MAX {
            for start in 0..=data.len() - n {
                all.push(&data[start..start + n]);
            }
            let mut zeros = vec![0u8; n];
            all.push(Box::leak(zeros.clone().into_boxed_slice()));
            if n > 0 {
                zeros[n - 1] = b'a';
                all.push(Box::leak(zeros.into_boxed_slice()));
            }
        }
        for a in &all {
            for b in &all {
                assert_eq!(ShortStr::new(a) == ShortStr::new(b), a == b, "{a:?} {b:?}");
            }
        }
        assert_eq!(ShortStr::new(b"123456789"), None);
    }

    #[test]
    fn string_sets_of_every_kind_contain_exactly_their_members() {
        let items = |list: &[&str]| list.iter().map(|s| Box::from(s.as_bytes())).collect();
        let short = StrSet::new(items(&["NL", "DE", "", "abcdefgh"]));
        let small = StrSet::new(items(&["NL", "a long string here"]));
        let large = StrSet::new(items(&["a", "b", "c", "d", "e", "f", "g", "h", "NL"]));
        assert!(matches!(short, StrSet::Short(_)));
        assert!(matches!(small, StrSet::Small(_)));
        assert!(matches!(large, StrSet::Large(_)));
        for set in [&short, &small, &large] {
            assert!(set.contains(b"NL"));
            for absent in [&b"N"[..], b"NLX", b"nl", b"abcdefghi", b"a long string her"] {
                assert!(!set.contains(absent), "{absent:?}");
            }
        }
        assert!(short.contains(b"") && short.contains(b"abcdefgh") && !short.contains(b"abcdefg"));
        assert!(small.contains(b"a long string here"));
    }
}
