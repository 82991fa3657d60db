//! Semantic validation (DESIGN.md section 1): every rule a decoded document must also satisfy.
//!
//! Checks are split by what they need: [`check_flag`] and [`check_segment`] look at one document;
//! [`check_references`] and [`PrerequisiteGraph`] look across documents through a [`Resolve`],
//! so a change can be checked against an existing snapshot without rebuilding it.

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;

use crate::bucket::BUCKETS;
use crate::limits::{
    clip, json_problem, name_problem, quote, text_problem, MAX_CONDITIONS, MAX_CONDITION_VALUES,
    MAX_DOCUMENT_REGEX_BYTES, MAX_PREREQUISITES, MAX_REGEX_BYTES, MAX_RULES, MAX_TAGS,
    MAX_TEXT_BYTES, MAX_VARIANTS,
};
use crate::model::{Condition, Flag, Op, Segment, Serve};
use crate::operand::{millis_to_nanos, parse_rfc3339, parse_semver, Matcher, RegexError};
use crate::problem::{describe, keyed, Problems};

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
                "{} is not a valid key: use 1 to 128 lower-case letters, digits, '.', '_' \
                 or '-', starting with a letter or digit",
                quote(key)
            ),
        );
    }
}

/// The index `key` was first seen at, or `None` (and `i` remembered) when it is new.
fn first_index<'a>(seen: &mut FxHashMap<&'a str, usize>, key: &'a str, i: usize) -> Option<usize> {
    match seen.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(i);
            None
        }
    }
}

/// Reports a list longer than `max` items; returns whether it is within the limit.
fn check_count(len: usize, max: usize, what: &str, path: String, problems: &mut Problems) {
    if len > max {
        problems.push(path, format!("{len} {what}, at most {max} allowed"));
    }
}

fn check_text(text: Option<&str>, path: String, problems: &mut Problems) {
    if let Some(problem) = text.and_then(|t| text_problem(t, MAX_TEXT_BYTES)) {
        problems.push(path, problem);
    }
}

/// The first line of a regex syntax error that says what is wrong. Only parses the pattern:
/// compiling it is left to the snapshot and, for writes, to [`check_regex`] within its limit.
pub(crate) fn regex_problem(pattern: &str) -> Option<String> {
    let err = regex_automata::util::syntax::parse(pattern).err()?;
    let text = err.to_string();
    let reason = text
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(text.lines().last().unwrap_or_default());
    Some(format!("{} is not a valid regex: {reason}", quote(pattern)))
}

/// Compiles `pattern` as a snapshot would, within [`MAX_REGEX_BYTES`]; the compiled size, or
/// what is wrong.
fn check_regex(pattern: &str) -> Result<usize, String> {
    // The limit bounds each automaton while it is built; the total is checked after.
    match Matcher::build(pattern, Some(MAX_REGEX_BYTES)) {
        Ok(matcher) if matcher.memory_usage() <= MAX_REGEX_BYTES => Ok(matcher.memory_usage()),
        Ok(_) | Err(RegexError::TooLarge) => Err(format!(
            "{}: regex too large when compiled (at most {} MiB)",
            quote(pattern),
            MAX_REGEX_BYTES >> 20
        )),
        Err(RegexError::Invalid) => Err(regex_problem(pattern)
            .unwrap_or_else(|| format!("{} is not a valid regex", quote(pattern)))),
    }
}

/// The compiled size of a document's regexes, reported when over [`MAX_DOCUMENT_REGEX_BYTES`].
fn check_regex_total(bytes: usize, path: &str, problems: &mut Problems) {
    if bytes > MAX_DOCUMENT_REGEX_BYTES {
        problems.push(
            path,
            format!(
                "regexes too large when compiled: more than {} MiB together, at most {} MiB per \
                 document",
                MAX_DOCUMENT_REGEX_BYTES >> 20,
                MAX_DOCUMENT_REGEX_BYTES >> 20
            ),
        );
    }
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

/// Checks the limits of DESIGN.md section 4a that a flag written to a server must keep,
/// beyond being valid: counts, text sizes, NUL characters, nesting and compiled regex size.
/// Returns the compiled size of its regexes.
pub(crate) fn check_flag_limits(flag: &Flag, path: &str, problems: &mut Problems) -> usize {
    check_text(
        flag.description.as_deref(),
        format!("{path}.description"),
        problems,
    );
    check_text(flag.owner.as_deref(), format!("{path}.owner"), problems);
    check_count(
        flag.tags.len(),
        MAX_TAGS,
        "tags",
        format!("{path}.tags"),
        problems,
    );
    for (i, tag) in flag.tags.iter().enumerate() {
        check_text(Some(tag), format!("{path}.tags[{i}]"), problems);
    }
    check_count(
        flag.variants.0.len(),
        MAX_VARIANTS,
        "variants",
        format!("{path}.variants"),
        problems,
    );
    for (name, value) in &flag.variants.0 {
        if let Some(problem) = json_problem(value) {
            problems.push(format!("{path}.variants[{}]", clip(name)), problem);
        }
    }
    if let Some(problem) = flag.salt.as_deref().and_then(name_problem) {
        problems.push(format!("{path}.salt"), problem);
    }
    check_count(
        flag.prerequisites.len(),
        MAX_PREREQUISITES,
        "prerequisites",
        format!("{path}.prerequisites"),
        problems,
    );
    for (i, prerequisite) in flag.prerequisites.iter().enumerate() {
        check_count(
            prerequisite.variants.len(),
            MAX_VARIANTS,
            "variants",
            format!("{path}.prerequisites[{i}].variants"),
            problems,
        );
    }
    check_count(
        flag.rules.len(),
        MAX_RULES,
        "rules",
        format!("{path}.rules"),
        problems,
    );
    let mut regex_bytes = 0;
    for (i, rule) in flag.rules.iter().enumerate() {
        check_conditions_limits(
            &rule.conditions,
            &format!("{path}.rules[{i}].conditions"),
            &mut regex_bytes,
            problems,
        );
        if let Serve::Split(split) = &rule.serve {
            check_bucket_by(split, &format!("{path}.rules[{i}].serve"), problems);
        }
    }
    if let Serve::Split(split) = &flag.default {
        check_bucket_by(split, &format!("{path}.default"), problems);
    }
    check_regex_total(regex_bytes, path, problems);
    regex_bytes
}

fn check_bucket_by(split: &crate::model::Split, path: &str, problems: &mut Problems) {
    // Each variant at most once: more weights than the variant limit cannot be valid.
    check_count(
        split.weights.len(),
        MAX_VARIANTS,
        "weights",
        format!("{path}.split.weights"),
        problems,
    );
    if !split.bucket_by.is_empty() {
        if let Some(problem) = name_problem(&split.bucket_by) {
            problems.push(format!("{path}.split.bucket_by"), problem);
        }
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
fn list_variants(flag: &Flag) -> String {
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
type Known<'a> = FxHashSet<&'a str>;

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

/// The limits of a rule's conditions: their number, each one's values, attribute names, the
/// compiled size of regexes (added to `regex_bytes`).
fn check_conditions_limits(
    conditions: &[Condition],
    path: &str,
    regex_bytes: &mut usize,
    problems: &mut Problems,
) {
    check_count(
        conditions.len(),
        MAX_CONDITIONS,
        "conditions",
        path.to_owned(),
        problems,
    );
    for (j, condition) in conditions.iter().enumerate() {
        let path = format!("{path}[{j}]");
        if let Some(problem) = condition.attribute.as_deref().and_then(name_problem) {
            problems.push(format!("{path}.attribute"), problem);
        }
        check_count(
            condition.values.len(),
            MAX_CONDITION_VALUES,
            "values",
            format!("{path}.values"),
            problems,
        );
        for (i, value) in condition.values.iter().enumerate() {
            // `exists` ignores its values, but they are stored: they must be scalars.
            let problem = match value {
                Value::String(s) if s.contains('\0') => {
                    Some(format!("{} contains a NUL character", quote(s)))
                }
                // Past the document's budget, the rest are not compiled at all: the cost of
                // checking a document is bounded too.
                Value::String(_)
                    if condition.op == Op::Matches && *regex_bytes > MAX_DOCUMENT_REGEX_BYTES =>
                {
                    None
                }
                Value::String(s) if condition.op == Op::Matches => match check_regex(s) {
                    Ok(bytes) => {
                        *regex_bytes += bytes;
                        None
                    }
                    Err(problem) => {
                        // A pattern over the limit cost about the limit to find out.
                        *regex_bytes += MAX_REGEX_BYTES;
                        Some(problem)
                    }
                },
                Value::Array(_) | Value::Object(_) | Value::Null => Some(format!(
                    "op {} needs strings, numbers or booleans, got {}",
                    condition.op,
                    describe(value)
                )),
                _ => None,
            };
            if let Some(message) = problem {
                problems.push(format!("{path}.values[{i}]"), message);
            }
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

/// Checks the limits of DESIGN.md section 4a that a segment written to a server must keep:
/// its description, its key lists' keys, its rules.
/// Returns the compiled size of its regexes.
pub(crate) fn check_segment_limits(
    segment: &Segment,
    path: &str,
    problems: &mut Problems,
) -> usize {
    check_text(
        segment.description.as_deref(),
        format!("{path}.description"),
        problems,
    );
    check_context_keys(&segment.included, &format!("{path}.included"), problems);
    check_context_keys(&segment.excluded, &format!("{path}.excluded"), problems);
    check_count(
        segment.rules.len(),
        MAX_RULES,
        "rules",
        format!("{path}.rules"),
        problems,
    );
    let mut regex_bytes = 0;
    for (i, rule) in segment.rules.iter().enumerate() {
        check_conditions_limits(
            &rule.conditions,
            &format!("{path}.rules[{i}].conditions"),
            &mut regex_bytes,
            problems,
        );
    }
    check_regex_total(regex_bytes, path, problems);
    regex_bytes
}

/// Checks the context keys of a segment's list: each 1 to 256 bytes without control
/// characters, none twice.
pub(crate) fn check_context_keys(keys: &[String], path: &str, problems: &mut Problems) {
    let mut seen: FxHashMap<&str, usize> = FxHashMap::default();
    for (i, key) in keys.iter().enumerate() {
        if let Some(problem) = name_problem(key) {
            problems.push(format!("{path}[{i}]"), problem);
        } else if let Some(j) = first_index(&mut seen, key, i) {
            problems.push(
                format!("{path}[{i}]"),
                format!("duplicate key {} (also {path}[{j}])", quote(key)),
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
                format!("unknown flag {}", quote(&prerequisite.flag)),
            ),
            Some(required) => {
                let known: Known<'_> = required.variants.keys().collect();
                for (j, v) in prerequisite.variants.iter().enumerate() {
                    if !known.contains(v.as_str()) {
                        problems.push(
                            format!("{ppath}.variants[{j}]"),
                            format!(
                                "flag {:?} has no variant {}; its variants are {}",
                                prerequisite.flag,
                                quote(v),
                                list_variants(required)
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
                            format!("unknown segment {}", quote(segment)),
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
                                format!("{}.prerequisites", keyed("flags", child)),
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
                    format!("{}.prerequisites", keyed("flags", root)),
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
