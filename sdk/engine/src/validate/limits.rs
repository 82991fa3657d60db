//! Checks of the limits a document written to a server must keep beyond being valid (DESIGN.md
//! section 4a): counts, text sizes, NUL characters, nesting and the compiled size of regexes.
//! The limits themselves are in [`crate::limits`]; documents already stored load without these
//! checks, so data accepted before a limit existed still loads.

use rustc_hash::FxHashMap;
use serde_json::Value;

use super::document::{first_index, regex_problem};
use crate::limits::{
    clip, json_problem, name_problem, quote, text_problem, MAX_CONDITIONS, MAX_CONDITION_VALUES,
    MAX_DOCUMENT_REGEX_BYTES, MAX_PREREQUISITES, MAX_REGEX_BYTES, MAX_RULES, MAX_TAGS,
    MAX_TEXT_BYTES, MAX_VARIANTS,
};
use crate::model::{Condition, Flag, Op, Segment, Serve};
use crate::operand::{Matcher, RegexError};
use crate::problem::{describe, Problems};

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
