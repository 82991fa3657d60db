//! Conditions in plain words, for people who read targeting rather than write it: the web
//! console's segment and flag pages. One sentence per condition, exact about what the
//! condition tests: a negated comparison is written as one, never as the opposite comparison,
//! which a value of another type would not match; and, as a missing attribute makes every
//! condition on it but `exists` false, negated or not (DESIGN.md section 2), a negated one says
//! that the attribute must be present:
//!
//! | condition | words |
//! |---|---|
//! | `country in [DE, FR]` | `country is one of "DE", "FR"` |
//! | `plan in [free]`, negated | `plan is present and is not "free"` |
//! | `version semver_gt [2.0.0]` | `version semver > 2.0.0` |
//! | `age lt [18]`, negated | `age is present and is not < 18` |
//! | `host matches [^\d+$]` | `host matches the pattern "^\d+$"` |
//! | `plan exists`, negated | `plan is not present` |
//! | `in_segment [beta-testers]` | `in segment beta-testers` |
//!
//! Strings are quoted and escaped as in messages ([`quote`]); patterns are quoted as written,
//! backslashes and all, with only a quote escaped (`\"`) and line breaks and other control
//! characters written as the pattern's own escapes (`\n`, `\x{7}`), so that each stays on
//! its line and reads as the regex it is. At most [`DESCRIBED_VALUES`] values are listed: the
//! rest are counted (`… and 990 more`), so that a condition of 10,000 values reads in a line.
//! The words are text: whoever shows them in markup escapes them.

use serde_json::Value;

use crate::limits::{clip, quote, QUOTE_BYTES};
use crate::model::{Condition, Op};

/// The most values of one condition its words list; the others are counted.
pub const DESCRIBED_VALUES: usize = 10;

/// `condition` in plain words, e.g. `country is one of "DE", "FR"` or `in segment
/// beta-testers`.
pub fn describe_condition(condition: &Condition) -> String {
    let values = &condition.values;
    let negate = condition.negate;
    if condition.op == Op::InSegment {
        return in_segment(values, negate);
    }
    let attribute = condition.attribute.as_deref().unwrap_or("(no attribute)");
    if condition.op == Op::Exists {
        let verb = if negate {
            "is not present"
        } else {
            "is present"
        };
        return format!("{attribute} {verb}");
    }
    let bare = matches!(
        condition.op,
        Op::SemverEq | Op::SemverLt | Op::SemverGt | Op::Before | Op::After
    );
    // A missing attribute makes even a negated condition false.
    let present = if negate { "is present and " } else { "" };
    if values.is_empty() {
        let not = if negate { "not " } else { "" };
        return format!("{attribute} {present}{not}{} (no values)", condition.op);
    }
    let listed = if condition.op == Op::Matches {
        pattern_list(values)
    } else {
        value_list(values, bare)
    };
    let many = values.len() > 1;
    if condition.op == Op::In {
        let verb = match (negate, many) {
            (false, false) => "is",
            (false, true) => "is one of",
            (true, false) => "is not",
            (true, true) => "is none of",
        };
        return format!("{attribute} {present}{verb} {listed}");
    }
    let (verb, negated) = verbs(condition.op);
    // Every op but `in` holds when it holds for one of the values.
    let (single, plural) = match condition.op {
        Op::Matches => ("the pattern ", "the patterns "),
        _ => ("", ""),
    };
    match (negate, many) {
        (false, false) => format!("{attribute} {verb} {single}{listed}"),
        (false, true) => format!("{attribute} {verb} one of {plural}{listed}"),
        (true, false) => format!("{attribute} {present}{negated} {single}{listed}"),
        (true, true) => format!("{attribute} {present}{negated} any of {plural}{listed}"),
    }
}

/// What an op that compares with values says, plainly and negated.
fn verbs(op: Op) -> (&'static str, &'static str) {
    match op {
        Op::StartsWith => ("starts with", "does not start with"),
        Op::EndsWith => ("ends with", "does not end with"),
        Op::Contains => ("contains", "does not contain"),
        Op::Matches => ("matches", "does not match"),
        Op::Lt => ("<", "is not <"),
        Op::Lte => ("≤", "is not ≤"),
        Op::Gt => (">", "is not >"),
        Op::Gte => ("≥", "is not ≥"),
        Op::SemverEq => ("semver =", "is not semver ="),
        Op::SemverLt => ("semver <", "is not semver <"),
        Op::SemverGt => ("semver >", "is not semver >"),
        Op::Before => ("is before", "is not before"),
        Op::After => ("is after", "is not after"),
        Op::In => ("is", "is not"),
        Op::Exists => ("is present", "is not present"),
        Op::InSegment => ("in segment", "not in segment"),
    }
}

/// Every condition of `conditions`, joined by `and`; `every context` for none (a rule
/// without conditions matches every context).
pub fn describe_conditions(conditions: &[Condition]) -> String {
    if conditions.is_empty() {
        return "every context".to_owned();
    }
    conditions
        .iter()
        .map(describe_condition)
        .collect::<Vec<_>>()
        .join(" and ")
}

/// One operand as its condition's words show it: a string quoted (or `bare`, as semver
/// versions and times are written), a number or `true`/`false` as written in documents.
pub fn describe_value(value: &Value, bare: bool) -> String {
    match value {
        Value::String(s) if bare => clip(s).into_owned(),
        Value::String(s) => quote(s),
        other => {
            let text = other.to_string();
            clip(&text).into_owned()
        }
    }
}

fn value_list(values: &[Value], bare: bool) -> String {
    listed(values, |v| describe_value(v, bare))
}

fn pattern_list(values: &[Value]) -> String {
    listed(values, |v| match v {
        Value::String(s) => describe_pattern(s),
        other => describe_value(other, false),
    })
}

/// The first [`DESCRIBED_VALUES`] of `values` as `describe` words them, and how many more.
fn listed(values: &[Value], describe: impl Fn(&Value) -> String) -> String {
    let listed: Vec<String> = values.iter().take(DESCRIBED_VALUES).map(describe).collect();
    let mut text = listed.join(", ");
    if values.len() > DESCRIBED_VALUES {
        text.push_str(&format!(" … and {} more", values.len() - DESCRIBED_VALUES));
    }
    text
}

/// A regex pattern as its condition's words show it: quoted, as written (a backslash is
/// one), with a quote escaped and line breaks and other characters that do not print written
/// as the regex's escapes for them (`\n`, `\x{7}`), so that it stays on one line and means
/// the same; cut as [`quote`] cuts strings, with its length when it was cut.
fn describe_pattern(pattern: &str) -> String {
    let mut text = String::with_capacity(pattern.len().min(QUOTE_BYTES) + 2);
    text.push('"');
    for c in clip(pattern).chars() {
        match c {
            '"' => text.push_str("\\\""),
            '\\' | '\'' => text.push(c),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            '\t' => text.push_str("\\t"),
            c if c.escape_debug().nth(1).is_some() => {
                text.push_str(&format!("\\x{{{:x}}}", u32::from(c)));
            }
            c => text.push(c),
        }
    }
    text.push('"');
    if pattern.len() > QUOTE_BYTES {
        text.push_str(&format!(" ({} bytes)", pattern.len()));
    }
    text
}

fn in_segment(values: &[Value], negate: bool) -> String {
    let list = listed(values, |v| match v {
        Value::String(s) => clip(s).into_owned(),
        other => describe_value(other, false),
    });
    match (negate, values.len() > 1) {
        (false, false) => format!("in segment {list}"),
        (false, true) => format!("in one of the segments {list}"),
        (true, false) => format!("not in segment {list}"),
        (true, true) => format!("in none of the segments {list}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::condition::CompiledCondition;
    use crate::context::Context;

    fn condition(attribute: &str, op: Op, values: Value, negate: bool) -> Condition {
        Condition {
            attribute: (op != Op::InSegment).then(|| attribute.to_owned()),
            op,
            values: values.as_array().cloned().unwrap_or_default(),
            negate,
        }
    }

    #[test]
    fn each_op_reads_as_a_sentence() {
        let cases = [
            (
                condition("country", Op::In, json!(["DE", "FR"]), false),
                r#"country is one of "DE", "FR""#,
            ),
            (
                condition("plan", Op::In, json!(["free"]), true),
                r#"plan is present and is not "free""#,
            ),
            (
                condition("plan", Op::In, json!(["free", "trial"]), true),
                r#"plan is present and is none of "free", "trial""#,
            ),
            (
                condition("beta", Op::In, json!([true, 1]), false),
                "beta is one of true, 1",
            ),
            (
                condition("email", Op::EndsWith, json!(["@example.com"]), false),
                r#"email ends with "@example.com""#,
            ),
            (
                condition("email", Op::StartsWith, json!(["a", "b"]), true),
                r#"email is present and does not start with any of "a", "b""#,
            ),
            (
                condition("path", Op::Contains, json!(["/admin"]), false),
                r#"path contains "/admin""#,
            ),
            (
                condition("host", Op::Matches, json!(["^eu-", "^us-"]), false),
                r#"host matches one of the patterns "^eu-", "^us-""#,
            ),
            (
                condition("host", Op::Matches, json!([r"^\d+$"]), true),
                r#"host is present and does not match the pattern "^\d+$""#,
            ),
            (
                condition("plan", Op::In, json!([]), true),
                "plan is present and not in (no values)",
            ),
            (
                condition("age", Op::Lt, json!([18]), true),
                "age is present and is not < 18",
            ),
            (
                condition("score", Op::Gte, json!([0.5]), false),
                "score ≥ 0.5",
            ),
            (
                condition("version", Op::SemverGt, json!(["2.0.0"]), false),
                "version semver > 2.0.0",
            ),
            (
                condition("signup", Op::Before, json!(["2026-01-01T00:00:00Z"]), false),
                "signup is before 2026-01-01T00:00:00Z",
            ),
            (
                condition("signup", Op::After, json!([1_700_000_000_000_u64]), true),
                "signup is present and is not after 1700000000000",
            ),
            (
                condition("plan", Op::Exists, json!([]), false),
                "plan is present",
            ),
            (
                condition("plan", Op::Exists, json!([]), true),
                "plan is not present",
            ),
            (
                condition("", Op::InSegment, json!(["beta-testers"]), false),
                "in segment beta-testers",
            ),
            (
                condition("", Op::InSegment, json!(["a", "b"]), true),
                "in none of the segments a, b",
            ),
        ];
        for (condition, words) in cases {
            assert_eq!(describe_condition(&condition), words, "{condition:?}");
        }
    }

    #[test]
    fn long_lists_are_counted_and_long_values_cut() {
        let values: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
        let words = describe_condition(&condition("country", Op::In, json!(values), false));
        assert!(
            words.starts_with(r#"country is one of "c0", "c1""#),
            "{words}"
        );
        assert!(words.ends_with(r#""c9" … and 990 more"#), "{words}");
        let long = "x".repeat(10_000);
        let words = describe_condition(&condition("bulk", Op::In, json!([long]), false));
        assert!(words.len() < 200, "{words}");
        assert!(words.ends_with("(10000 bytes)"), "{words}");
    }

    #[test]
    fn strings_are_quoted_so_their_content_cannot_pass_for_words() {
        let words = describe_condition(&condition(
            "name",
            Op::In,
            json!(["a\", \"b", "<b>"]),
            false,
        ));
        assert_eq!(words, r#"name is one of "a\", \"b", "<b>""#);
    }

    #[test]
    fn conditions_join_with_and() {
        let both = [
            condition("country", Op::In, json!(["DE"]), false),
            condition("plan", Op::In, json!(["free"]), true),
        ];
        assert_eq!(
            describe_conditions(&both),
            r#"country is "DE" and plan is present and is not "free""#
        );
        assert_eq!(describe_conditions(&[]), "every context");
    }

    /// Every condition but `exists` and `in_segment` is false for a context without its
    /// attribute, negated or not: its words say the attribute must be there exactly when they
    /// would otherwise read as holding without it.
    #[test]
    fn negated_words_say_the_attribute_must_be_present() {
        let ops = [
            (Op::In, json!(["free"])),
            (Op::StartsWith, json!(["a"])),
            (Op::EndsWith, json!(["a"])),
            (Op::Contains, json!(["a"])),
            (Op::Matches, json!(["^a"])),
            (Op::Lt, json!([1])),
            (Op::Lte, json!([1])),
            (Op::Gt, json!([1])),
            (Op::Gte, json!([1])),
            (Op::SemverEq, json!(["1.0.0"])),
            (Op::SemverLt, json!(["1.0.0"])),
            (Op::SemverGt, json!(["1.0.0"])),
            (Op::Before, json!(["2026-01-01T00:00:00Z"])),
            (Op::After, json!(["2026-01-01T00:00:00Z"])),
            (Op::Exists, json!([])),
        ];
        for (op, values) in ops {
            for negate in [false, true] {
                let condition = condition("plan", op, values.clone(), negate);
                let words = describe_condition(&condition);
                let compiled = CompiledCondition::compile(&condition, &|_| None);
                let holds_without = compiled.matches(&Context::new("k"));
                assert_eq!(
                    holds_without,
                    words.contains("is not present"),
                    "{op:?}, negated {negate}: {words}"
                );
                if negate && op != Op::Exists {
                    assert!(words.contains(" is present and "), "{op:?}: {words}");
                }
            }
        }
    }

    #[test]
    fn patterns_read_as_written_on_one_line() {
        let words = describe_condition(&condition("id", Op::Matches, json!([r"^\d+$"]), false));
        assert_eq!(words, r#"id matches the pattern "^\d+$""#);
        let words = describe_condition(&condition(
            "id",
            Op::Matches,
            json!(["a\nb\t\"c\u{7}\u{202e}"]),
            false,
        ));
        assert_eq!(words, r#"id matches the pattern "a\nb\t\"c\x{7}\x{202e}""#);
        let long = format!("^{}$", "a".repeat(1000));
        let words = describe_condition(&condition("id", Op::Matches, json!([long]), false));
        assert!(words.ends_with("…\" (1002 bytes)"), "{words}");
        assert!(!words.contains('\n'));
    }
}
