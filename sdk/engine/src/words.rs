//! Conditions in plain words, for people who read targeting rather than write it: the web
//! console's segment and flag pages. One sentence per condition, exact about what the
//! condition tests (a negated comparison is written as one, never as the opposite comparison,
//! which a value of another type would not match):
//!
//! | condition | words |
//! |---|---|
//! | `country in [DE, FR]` | `country is one of "DE", "FR"` |
//! | `plan in [free]`, negated | `plan is not "free"` |
//! | `version semver_gt [2.0.0]` | `version semver > 2.0.0` |
//! | `age lt [18]`, negated | `age is not < 18` |
//! | `in_segment [beta-testers]` | `in segment beta-testers` |
//!
//! Strings are quoted and escaped as in messages ([`quote`]), and at most [`DESCRIBED_VALUES`]
//! values are listed: the rest are counted (`… and 990 more`), so that a condition of 10,000
//! values reads in a line. The words are text: whoever shows them in markup escapes them.

use serde_json::Value;

use crate::limits::{clip, quote};
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
    if values.is_empty() {
        return format!("{attribute} {} (no values)", condition.op);
    }
    let listed = value_list(values, bare);
    let many = values.len() > 1;
    if condition.op == Op::In {
        let verb = match (negate, many) {
            (false, false) => "is",
            (false, true) => "is one of",
            (true, false) => "is not",
            (true, true) => "is none of",
        };
        return format!("{attribute} {verb} {listed}");
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
        (true, false) => format!("{attribute} {negated} {single}{listed}"),
        (true, true) => format!("{attribute} {negated} any of {plural}{listed}"),
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
    let listed: Vec<String> = values
        .iter()
        .take(DESCRIBED_VALUES)
        .map(|v| describe_value(v, bare))
        .collect();
    let mut text = listed.join(", ");
    if values.len() > DESCRIBED_VALUES {
        text.push_str(&format!(" … and {} more", values.len() - DESCRIBED_VALUES));
    }
    text
}

fn in_segment(values: &[Value], negate: bool) -> String {
    let names: Vec<String> = values
        .iter()
        .take(DESCRIBED_VALUES)
        .map(|v| match v {
            Value::String(s) => clip(s).into_owned(),
            other => describe_value(other, false),
        })
        .collect();
    let mut list = names.join(", ");
    if values.len() > DESCRIBED_VALUES {
        list.push_str(&format!(" … and {} more", values.len() - DESCRIBED_VALUES));
    }
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
                r#"plan is not "free""#,
            ),
            (
                condition("plan", Op::In, json!(["free", "trial"]), true),
                r#"plan is none of "free", "trial""#,
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
                r#"email does not start with any of "a", "b""#,
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
                condition("age", Op::Lt, json!([18]), true),
                "age is not < 18",
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
                "signup is not after 1700000000000",
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
            r#"country is "DE" and plan is not "free""#
        );
        assert_eq!(describe_conditions(&[]), "every context");
    }
}
