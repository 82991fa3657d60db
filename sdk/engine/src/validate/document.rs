//! The rules one flag or segment document must satisfy on its own (DESIGN.md section 1): keys,
//! variants and their values, rules, conditions and their operands, splits, size.

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;

use crate::bucket::BUCKETS;
use crate::limits::{clip, quote};
use crate::model::{Condition, Flag, Op, Segment, Serve};
use crate::operand::{millis_to_nanos, parse_rfc3339, parse_semver};
use crate::problem::{describe, Problems};

/// Largest flag document, serialised as JSON.
pub const MAX_FLAG_BYTES: usize = 1024 * 1024;
/// Most keys in a segment's `included` or `excluded` list.
pub const MAX_SEGMENT_KEYS: usize = 100_000;

/// Whether `key` matches `^[a-z0-9][a-z0-9._-]{0,127}$`.
pub fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

pub(crate) fn check_key(key: &str, path: String, problems: &mut Problems) {
    if !is_valid_key(key) {
        problems.push(
            path,
            format!(
                "{} is not a valid key: use 1 to 128 lower-case letters, digits, '.', '_' \
                 or '-', starting with a letter or digit",
                quote(key)
            ),
        );
    }
}

/// The index `key` was first seen at, or `None` (and `i` remembered) when it is new.
pub(super) fn first_index<'a>(
    seen: &mut FxHashMap<&'a str, usize>,
    key: &'a str,
    i: usize,
) -> Option<usize> {
    match seen.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(i);
            None
        }
    }
}

/// The first line of a regex syntax error that says what is wrong. Only parses the pattern:
/// compiling it is left to the snapshot and, for writes, to `limits::check_regex` within its
/// limit.
pub(super) fn regex_problem(pattern: &str) -> Option<String> {
    let err = regex_automata::util::syntax::parse(pattern).err()?;
    let text = err.to_string();
    let reason = text
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(text.lines().last().unwrap_or_default());
    Some(format!("{} is not a valid regex: {reason}", quote(pattern)))
}

/// Checks one flag on its own: keys, variants, values, rules, conditions, splits, size.
pub(crate) fn check_flag(flag: &Flag, path: &str, problems: &mut Problems) {
    check_key(&flag.key, format!("{path}.key"), problems);
    if flag.variants.0.is_empty() {
        problems.push(
            format!("{path}.variants"),
            "a flag needs at least one variant",
        );
    }
    let mut known: Known<'_> = FxHashSet::default();
    for (name, value) in &flag.variants.0 {
        let vpath = format!("{path}.variants[{}]", clip(name));
        check_key(name, vpath.clone(), problems);
        if !known.insert(name) {
            problems.push(
                vpath.clone(),
                format!("duplicate variant key {}", quote(name)),
            );
        }
        if !flag.kind.accepts(value) {
            problems.push(
                vpath,
                format!(
                    "value is {}, but the flag's kind is {}",
                    describe(value),
                    flag.kind
                ),
            );
        }
    }
    check_variant_ref(
        flag,
        &known,
        &flag.off_variant,
        format!("{path}.off_variant"),
        problems,
    );
    if flag.salt.as_deref() == Some("") {
        problems.push(
            format!("{path}.salt"),
            "must not be empty; leave it out to use the flag key",
        );
    }
    let mut seen: FxHashMap<&str, usize> = FxHashMap::default();
    for (i, prerequisite) in flag.prerequisites.iter().enumerate() {
        let ppath = format!("{path}.prerequisites[{i}]");
        check_key(&prerequisite.flag, format!("{ppath}.flag"), problems);
        if prerequisite.variants.is_empty() {
            problems.push(format!("{ppath}.variants"), "list at least one variant");
        }
        if let Some(j) = first_index(&mut seen, &prerequisite.flag, i) {
            problems.push(
                format!("{ppath}.flag"),
                format!(
                    "flag {} is already a prerequisite (prerequisites[{j}])",
                    quote(&prerequisite.flag)
                ),
            );
        }
    }
    let mut ids: FxHashMap<&str, usize> = FxHashMap::default();
    for (i, rule) in flag.rules.iter().enumerate() {
        let rpath = format!("{path}.rules[{i}]");
        check_key(&rule.id, format!("{rpath}.id"), problems);
        if let Some(j) = first_index(&mut ids, &rule.id, i) {
            problems.push(
                format!("{rpath}.id"),
                format!("duplicate rule id {} (also rules[{j}])", quote(&rule.id)),
            );
        }
        for (j, condition) in rule.conditions.iter().enumerate() {
            check_condition(
                condition,
                &format!("{rpath}.conditions[{j}]"),
                true,
                problems,
            );
        }
        check_serve(
            flag,
            &known,
            &rule.serve,
            &format!("{rpath}.serve"),
            problems,
        );
    }
    check_serve(
        flag,
        &known,
        &flag.default,
        &format!("{path}.default"),
        problems,
    );
    let size = json_size(flag);
    if size > MAX_FLAG_BYTES {
        problems.push(
            path,
            format!(
                "the flag document is {size} bytes, over the limit of {MAX_FLAG_BYTES} (1 MiB)"
            ),
        );
    }
}

fn json_size(flag: &Flag) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serialising the model into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, flag);
    count.0
}

/// A flag's variant keys for a message: the first ten, and how many more there are.
pub(super) fn list_variants(flag: &Flag) -> String {
    const SHOWN: usize = 10;
    let mut list: Vec<_> = flag.variants.keys().take(SHOWN).collect::<Vec<_>>();
    let more = flag.variants.0.len().saturating_sub(SHOWN);
    let more = format!("and {more} more");
    if flag.variants.0.len() > SHOWN {
        list.push(&more);
    }
    list.join(", ")
}

/// A flag's variant keys, for lookups in time independent of their number.
pub(super) type Known<'a> = FxHashSet<&'a str>;

fn check_variant_ref(
    flag: &Flag,
    known: &Known<'_>,
    variant: &str,
    path: String,
    problems: &mut Problems,
) {
    // A flag without variants is reported once, at `variants`.
    if !flag.variants.0.is_empty() && !known.contains(variant) {
        problems.push(
            path,
            format!(
                "unknown variant {}; the flag's variants are {}",
                quote(variant),
                list_variants(flag)
            ),
        );
    }
}

fn check_serve(flag: &Flag, known: &Known<'_>, serve: &Serve, path: &str, problems: &mut Problems) {
    match serve {
        Serve::Variant(v) => check_variant_ref(flag, known, v, format!("{path}.variant"), problems),
        Serve::Split(split) => {
            let spath = format!("{path}.split");
            if split.bucket_by.is_empty() {
                problems.push(format!("{spath}.bucket_by"), "must not be empty");
            }
            if split.weights.is_empty() {
                problems.push(
                    format!("{spath}.weights"),
                    "a split needs at least one weight",
                );
                return;
            }
            let mut seen: FxHashSet<&str> = FxHashSet::default();
            for (i, w) in split.weights.iter().enumerate() {
                let wpath = format!("{spath}.weights[{i}].variant");
                check_variant_ref(flag, known, &w.variant, wpath.clone(), problems);
                if !seen.insert(&w.variant) {
                    problems.push(
                        wpath,
                        format!("variant {} is listed twice", quote(&w.variant)),
                    );
                }
            }
            let sum: u64 = split.weights.iter().map(|w| u64::from(w.weight)).sum();
            if sum != u64::from(BUCKETS) {
                problems.push(
                    format!("{spath}.weights"),
                    format!("sum is {sum}, must be 100000"),
                );
            }
        }
    }
}

/// What each op's values must be, for messages and checks.
fn value_problem(op: Op, value: &Value) -> Option<String> {
    let wrong = |need: &str| Some(format!("op {op} needs {need}, got {}", describe(value)));
    match op {
        Op::In => match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => None,
            _ => wrong("strings, numbers or booleans"),
        },
        Op::StartsWith | Op::EndsWith | Op::Contains => match value {
            Value::String(_) => None,
            _ => wrong("strings"),
        },
        Op::Matches => match value {
            Value::String(s) => regex_problem(s),
            _ => wrong("regex strings"),
        },
        Op::Lt | Op::Lte | Op::Gt | Op::Gte => match value {
            Value::Number(_) => None,
            _ => wrong("numbers"),
        },
        Op::SemverEq | Op::SemverLt | Op::SemverGt => match value {
            Value::String(s) if parse_semver(s).is_none() => Some(format!(
                "{} is not a semantic version (strict semver 2.0, e.g. 1.2.3 or 2.0.0-beta.1)",
                quote(s)
            )),
            Value::String(_) => None,
            _ => wrong("semantic version strings"),
        },
        Op::Before | Op::After => match value {
            Value::String(s) if parse_rfc3339(s).is_none() => Some(format!(
                "{} is not an RFC 3339 time (e.g. 2025-01-01T00:00:00Z)",
                quote(s)
            )),
            Value::String(_) => None,
            Value::Number(n) if n.as_f64().and_then(millis_to_nanos).is_none() => {
                wrong("RFC 3339 strings or Unix milliseconds")
            }
            Value::Number(_) => None,
            _ => wrong("RFC 3339 strings or Unix milliseconds"),
        },
        Op::Exists => None,
        Op::InSegment => match value {
            Value::String(s) if !is_valid_key(s) => {
                Some(format!("{} is not a valid segment key", quote(s)))
            }
            Value::String(_) => None,
            _ => wrong("segment keys"),
        },
    }
}

pub(crate) fn check_condition(
    condition: &Condition,
    path: &str,
    in_flag: bool,
    problems: &mut Problems,
) {
    let op = condition.op;
    if op == Op::InSegment {
        if !in_flag {
            problems.push(
                format!("{path}.op"),
                "in_segment is not allowed in a segment's rules; list the keys or copy the conditions",
            );
        }
        if condition.attribute.is_some() {
            problems.push(format!("{path}.attribute"), "in_segment takes no attribute");
        }
    } else {
        match condition.attribute.as_deref() {
            None => problems.push(
                path,
                format!("missing required field \"attribute\" for op {op}"),
            ),
            Some("") => problems.push(format!("{path}.attribute"), "must not be empty"),
            Some(_) => {}
        }
    }
    if op != Op::Exists && condition.values.is_empty() {
        problems.push(
            format!("{path}.values"),
            format!("op {op} needs at least one value"),
        );
    }
    for (i, value) in condition.values.iter().enumerate() {
        if op == Op::Exists {
            break;
        }
        if let Some(message) = value_problem(op, value) {
            problems.push(format!("{path}.values[{i}]"), message);
        }
    }
}

/// Checks one segment on its own.
pub(crate) fn check_segment(segment: &Segment, path: &str, problems: &mut Problems) {
    check_key(&segment.key, format!("{path}.key"), problems);
    for (name, keys) in [
        ("included", &segment.included),
        ("excluded", &segment.excluded),
    ] {
        if keys.len() > MAX_SEGMENT_KEYS {
            problems.push(
                format!("{path}.{name}"),
                format!("{} keys, at most {MAX_SEGMENT_KEYS} allowed", keys.len()),
            );
        }
    }
    for (i, rule) in segment.rules.iter().enumerate() {
        for (j, condition) in rule.conditions.iter().enumerate() {
            check_condition(
                condition,
                &format!("{path}.rules[{i}].conditions[{j}]"),
                false,
                problems,
            );
        }
    }
}
