//! Semantic validation (DESIGN.md section 1): every rule a decoded document must also satisfy.
//!
//! Checks are split by what they need: [`check_flag`] and [`check_segment`] look at one document;
//! [`check_references`] and [`PrerequisiteGraph`] look across documents through a [`Resolve`],
//! so a change can be checked against an existing snapshot without rebuilding it.

use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::model::{Condition, Flag, Op, Segment, Serve};
use crate::problem::{describe, Problems};

/// Longest allowed prerequisite chain, in links (prerequisite edges).
pub const MAX_PREREQUISITE_LINKS: usize = 8;
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
                "{key:?} is not a valid key: use 1 to 128 lower-case letters, digits, '.', '_' \
                 or '-', starting with a letter or digit"
            ),
        );
    }
}

/// Parses a strict semver 2.0 version.
pub(crate) fn parse_semver(s: &str) -> Option<semver::Version> {
    semver::Version::parse(s).ok()
}

/// Parses a time: an RFC 3339 string or a number of Unix milliseconds, as Unix nanoseconds.
pub(crate) fn parse_time(value: &Value) -> Option<i128> {
    match value {
        Value::String(s) => parse_rfc3339(s),
        Value::Number(n) => n.as_f64().and_then(millis_to_nanos),
        _ => None,
    }
}

pub(crate) fn parse_rfc3339(s: &str) -> Option<i128> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

pub(crate) fn millis_to_nanos(ms: f64) -> Option<i128> {
    if !ms.is_finite() {
        return None;
    }
    if ms.fract() == 0.0 && ms.abs() < 9_007_199_254_740_992.0 {
        Some(i128::from(ms as i64) * 1_000_000)
    } else {
        // Fractional milliseconds: f64 keeps about 0.25 µs of precision near the present.
        Some((ms * 1e6) as i128)
    }
}

/// The first line of a regex error that says what is wrong.
pub(crate) fn regex_problem(pattern: &str) -> Option<String> {
    let err = regex::Regex::new(pattern).err()?;
    let text = err.to_string();
    let reason = text
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(text.lines().last().unwrap_or_default());
    Some(format!("{pattern:?} is not a valid regex: {reason}"))
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
    for (name, value) in &flag.variants.0 {
        let vpath = format!("{path}.variants[{name}]");
        check_key(name, vpath.clone(), problems);
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
    for (i, prerequisite) in flag.prerequisites.iter().enumerate() {
        let ppath = format!("{path}.prerequisites[{i}]");
        check_key(&prerequisite.flag, format!("{ppath}.flag"), problems);
        if prerequisite.variants.is_empty() {
            problems.push(format!("{ppath}.variants"), "list at least one variant");
        }
        if let Some(j) = flag.prerequisites[..i]
            .iter()
            .position(|p| p.flag == prerequisite.flag)
        {
            problems.push(
                format!("{ppath}.flag"),
                format!(
                    "flag {:?} is already a prerequisite (prerequisites[{j}])",
                    prerequisite.flag
                ),
            );
        }
    }
    for (i, rule) in flag.rules.iter().enumerate() {
        let rpath = format!("{path}.rules[{i}]");
        check_key(&rule.id, format!("{rpath}.id"), problems);
        if let Some(j) = flag.rules[..i].iter().position(|r| r.id == rule.id) {
            problems.push(
                format!("{rpath}.id"),
                format!("duplicate rule id {:?} (also rules[{j}])", rule.id),
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
        check_serve(flag, &rule.serve, &format!("{rpath}.serve"), problems);
    }
    check_serve(flag, &flag.default, &format!("{path}.default"), problems);
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

fn check_variant_ref(flag: &Flag, variant: &str, path: String, problems: &mut Problems) {
    // A flag without variants is reported once, at `variants`.
    if !flag.variants.0.is_empty() && !flag.variants.contains(variant) {
        let known: Vec<_> = flag.variants.keys().collect();
        problems.push(
            path,
            format!(
                "unknown variant {variant:?}; the flag's variants are {}",
                known.join(", ")
            ),
        );
    }
}

fn check_serve(flag: &Flag, serve: &Serve, path: &str, problems: &mut Problems) {
    match serve {
        Serve::Variant(v) => check_variant_ref(flag, v, format!("{path}.variant"), problems),
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
            for (i, w) in split.weights.iter().enumerate() {
                let wpath = format!("{spath}.weights[{i}].variant");
                check_variant_ref(flag, &w.variant, wpath.clone(), problems);
                if split.weights[..i].iter().any(|o| o.variant == w.variant) {
                    problems.push(wpath, format!("variant {:?} is listed twice", w.variant));
                }
            }
            let sum: u64 = split.weights.iter().map(|w| u64::from(w.weight)).sum();
            if sum != 100_000 {
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
                "{s:?} is not a semantic version (strict semver 2.0, e.g. 1.2.3 or 2.0.0-beta.1)"
            )),
            Value::String(_) => None,
            _ => wrong("semantic version strings"),
        },
        Op::Before | Op::After => match value {
            Value::String(s) if parse_rfc3339(s).is_none() => Some(format!(
                "{s:?} is not an RFC 3339 time (e.g. 2025-01-01T00:00:00Z)"
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
                Some(format!("{s:?} is not a valid segment key"))
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

/// Looks up the documents a change is checked against: the resulting state of the environment.
pub(crate) trait Resolve {
    /// The flag `key` as it will be after the change.
    fn flag(&self, key: &str) -> Option<&Flag>;
    /// Whether the segment `key` will exist after the change.
    fn has_segment(&self, key: &str) -> bool;
    /// Whether `key` is a flag of the same document that did not decode: it exists, but its
    /// contents are unknown.
    fn is_undecoded_flag(&self, key: &str) -> bool;
}

/// Checks that the segments and prerequisite flags (and their variants) `flag` names exist.
pub(crate) fn check_references(
    flag: &Flag,
    path: &str,
    env: &impl Resolve,
    problems: &mut Problems,
) {
    for (i, prerequisite) in flag.prerequisites.iter().enumerate() {
        let ppath = format!("{path}.prerequisites[{i}]");
        match env.flag(&prerequisite.flag) {
            None if env.is_undecoded_flag(&prerequisite.flag) => {}
            None => problems.push(
                format!("{ppath}.flag"),
                format!("unknown flag {:?}", prerequisite.flag),
            ),
            Some(required) => {
                for (j, v) in prerequisite.variants.iter().enumerate() {
                    if !required.variants.contains(v) {
                        let known: Vec<_> = required.variants.keys().collect();
                        problems.push(
                            format!("{ppath}.variants[{j}]"),
                            format!(
                                "flag {:?} has no variant {v:?}; its variants are {}",
                                prerequisite.flag,
                                known.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
    for (i, rule) in flag.rules.iter().enumerate() {
        for (j, condition) in rule.conditions.iter().enumerate() {
            if condition.op != Op::InSegment {
                continue;
            }
            for (k, value) in condition.values.iter().enumerate() {
                if let Some(segment) = value.as_str() {
                    if is_valid_key(segment) && !env.has_segment(segment) {
                        problems.push(
                            format!("{path}.rules[{i}].conditions[{j}].values[{k}]"),
                            format!("unknown segment {segment:?}"),
                        );
                    }
                }
            }
        }
    }
}

/// A walk of the prerequisite graph from some flags: their order for compilation (prerequisites
/// first), with cycles and over-long chains reported.
pub(crate) struct PrerequisiteGraph<'a> {
    /// Every flag reached, prerequisites before the flags that need them.
    pub(crate) order: Vec<&'a str>,
}

impl<'a> PrerequisiteGraph<'a> {
    /// Walks from `roots` (iteratively, so a long chain in a hostile document cannot overflow the
    /// stack), reporting cycles and chains over [`MAX_PREREQUISITE_LINKS`] at the roots.
    pub(crate) fn walk(
        roots: impl IntoIterator<Item = &'a str>,
        env: &'a impl Resolve,
        problems: &mut Problems,
    ) -> PrerequisiteGraph<'a> {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            Open,
            Done,
        }
        let mut state: FxHashMap<&'a str, State> = FxHashMap::default();
        let mut depth: FxHashMap<&'a str, usize> = FxHashMap::default();
        let mut order = Vec::new();
        let mut roots_seen = Vec::new();
        for root in roots {
            roots_seen.push(root);
            if state.contains_key(root) {
                continue;
            }
            // (flag, index of the next prerequisite to visit)
            let mut stack: Vec<(&'a str, usize)> = vec![(root, 0)];
            state.insert(root, State::Open);
            while let Some(&mut (key, ref mut next)) = stack.last_mut() {
                let prerequisites = env
                    .flag(key)
                    .map(|f| f.prerequisites.as_slice())
                    .unwrap_or(&[]);
                if let Some(p) = prerequisites.get(*next) {
                    *next += 1;
                    let child = p.flag.as_str();
                    match state.get(child) {
                        None if env.flag(child).is_some() => {
                            state.insert(child, State::Open);
                            stack.push((child, 0));
                        }
                        Some(State::Open) => {
                            let start = stack.iter().position(|(k, _)| *k == child).unwrap_or(0);
                            let mut cycle: Vec<&str> =
                                stack[start..].iter().map(|(k, _)| *k).collect();
                            cycle.push(child);
                            problems.push(
                                format!("flags[{child}].prerequisites"),
                                format!("prerequisite cycle {}", cycle.join(" -> ")),
                            );
                        }
                        _ => {}
                    }
                    continue;
                }
                let below = prerequisites
                    .iter()
                    .filter_map(|p| depth.get(p.flag.as_str()).map(|d| d + 1))
                    .max()
                    .unwrap_or(0);
                depth.insert(key, below);
                state.insert(key, State::Done);
                order.push(key);
                stack.pop();
            }
        }
        for root in roots_seen {
            let links = depth.get(root).copied().unwrap_or(0);
            if links > MAX_PREREQUISITE_LINKS {
                problems.push(
                    format!("flags[{root}].prerequisites"),
                    format!(
                        "prerequisite chain {} has {links} links, at most {MAX_PREREQUISITE_LINKS} allowed",
                        longest_chain(root, &depth, env).join(" -> ")
                    ),
                );
            }
        }
        PrerequisiteGraph { order }
    }
}

fn longest_chain<'a>(
    root: &'a str,
    depth: &FxHashMap<&'a str, usize>,
    env: &'a impl Resolve,
) -> Vec<&'a str> {
    let mut chain = vec![root];
    let mut key = root;
    while let Some(next) = env.flag(key).and_then(|f| {
        f.prerequisites
            .iter()
            .map(|p| p.flag.as_str())
            .max_by_key(|k| depth.get(k).map_or(-1, |d| *d as i64))
    }) {
        if chain.contains(&next) {
            break;
        }
        chain.push(next);
        key = next;
    }
    chain
}
