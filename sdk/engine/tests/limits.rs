//! The limits a write must keep (DESIGN.md section 4a), checked by
//! `Snapshot::apply_within_limits`, and what plain validation (`apply`, `from_document`, used to
//! load stored data) still accepts.

use flagstaff_engine::{
    flag_from_value, segment_from_value, ChangeSet, Flag, Segment, Snapshot, ValidationError,
    MAX_CONDITIONS, MAX_CONDITION_VALUES, MAX_JSON_DEPTH, MAX_RULES, MAX_TAGS, MAX_TEXT_BYTES,
    MAX_VARIANTS,
};
use serde_json::{json, Value};

fn flag(fields: Value) -> Flag {
    let mut base = json!({
        "key": "f",
        "kind": "boolean",
        "variants": { "on": true, "off": false },
        "off_variant": "off",
        "enabled": true,
        "default": { "variant": "off" },
    });
    base.as_object_mut()
        .expect("an object")
        .extend(fields.as_object().expect("an object").clone());
    flag_from_value(&base).expect("a flag that decodes")
}

fn segment(fields: Value) -> Segment {
    let mut base = json!({ "key": "s" });
    base.as_object_mut()
        .expect("an object")
        .extend(fields.as_object().expect("an object").clone());
    segment_from_value(&base).expect("a segment that decodes")
}

fn write_flag(flag: Flag) -> Result<Snapshot, ValidationError> {
    Snapshot::new().apply_within_limits(ChangeSet {
        flags: vec![flag],
        ..ChangeSet::default()
    })
}

fn write_segment(segment: Segment) -> Result<Snapshot, ValidationError> {
    Snapshot::new().apply_within_limits(ChangeSet {
        segments: vec![segment],
        ..ChangeSet::default()
    })
}

fn refused(result: Result<Snapshot, ValidationError>) -> Vec<String> {
    match result {
        Ok(_) => panic!("the write was accepted"),
        Err(e) => e.messages(),
    }
}

/// A flag whose one rule holds `conditions`.
fn with_conditions(conditions: Value) -> Flag {
    flag(
        json!({ "rules": [{ "id": "r", "conditions": conditions, "serve": { "variant": "on" } }] }),
    )
}

fn nested(depth: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..depth {
        value = json!([value]);
    }
    value
}

#[test]
fn duplicate_variant_keys_are_invalid_everywhere() {
    let mut f = flag(json!({}));
    f.variants.0.push(("on".to_owned(), json!(false)));
    let messages = refused(Snapshot::new().apply(ChangeSet {
        flags: vec![f],
        ..ChangeSet::default()
    }));
    assert_eq!(
        messages,
        ["flags[f].variants[on]: duplicate variant key \"on\""]
    );
}

#[test]
fn json_values_nest_at_most_64_levels() {
    let json_flag = |value: Value| {
        flag(json!({
            "kind": "json",
            "variants": { "on": value, "off": null },
        }))
    };
    assert!(write_flag(json_flag(nested(MAX_JSON_DEPTH))).is_ok());
    assert_eq!(
        refused(write_flag(json_flag(nested(MAX_JSON_DEPTH + 1)))),
        ["flags[f].variants[on]: the value is nested 65 levels deep, over the limit of 64"]
    );
    // Loading what is stored checks no limit.
    assert!(Snapshot::new()
        .apply(ChangeSet {
            flags: vec![json_flag(nested(MAX_JSON_DEPTH + 1))],
            ..ChangeSet::default()
        })
        .is_ok());
}

#[test]
fn counts_are_limited() {
    let variants: serde_json::Map<String, Value> = (0..=MAX_VARIANTS)
        .map(|i| (format!("v{i}"), json!(i)))
        .collect();
    let many_variants = flag(json!({
        "kind": "number", "variants": variants, "off_variant": "v0",
        "default": { "variant": "v0" },
    }));
    assert_eq!(
        refused(write_flag(many_variants)),
        ["flags[f].variants: 1001 variants, at most 1000 allowed"]
    );

    let rules: Vec<Value> = (0..=MAX_RULES)
        .map(|i| json!({ "id": format!("r{i}"), "conditions": [], "serve": { "variant": "on" } }))
        .collect();
    assert_eq!(
        refused(write_flag(flag(json!({ "rules": rules })))),
        ["flags[f].rules: 1001 rules, at most 1000 allowed"]
    );

    let conditions: Vec<Value> = (0..=MAX_CONDITIONS)
        .map(|_| json!({ "attribute": "a", "op": "exists" }))
        .collect();
    assert_eq!(
        refused(write_flag(with_conditions(json!(conditions)))),
        ["flags[f].rules[0].conditions: 101 conditions, at most 100 allowed"]
    );

    let values: Vec<Value> = (0..=MAX_CONDITION_VALUES).map(|i| json!(i)).collect();
    assert_eq!(
        refused(write_flag(with_conditions(
            json!([{ "attribute": "a", "op": "in", "values": values }])
        ))),
        ["flags[f].rules[0].conditions[0].values: 10001 values, at most 10000 allowed"]
    );

    let tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
    assert_eq!(
        refused(write_flag(flag(json!({ "tags": tags })))),
        ["flags[f].tags: 65 tags, at most 64 allowed"]
    );
}

#[test]
fn texts_are_limited_and_hold_no_nul() {
    let long = "d".repeat(MAX_TEXT_BYTES + 1);
    assert!(write_flag(flag(json!({ "description": "d".repeat(MAX_TEXT_BYTES) }))).is_ok());
    assert_eq!(
        refused(write_flag(flag(
            json!({ "description": long, "owner": "a\u{0}b" })
        ))),
        [
            format!(
                "flags[f].description: \"{}…\" (4097 bytes) is 4097 bytes, over the limit of 4096",
                "d".repeat(64)
            ),
            "flags[f].owner: \"a\\0b\" contains a NUL character".to_owned(),
        ]
    );
    assert_eq!(
        refused(write_flag(flag(json!({
            "kind": "string",
            "variants": { "on": "x\u{0}", "off": "" },
        })))),
        ["flags[f].variants[on]: string \"x\\0\" contains a NUL character"]
    );
    assert_eq!(
        refused(write_flag(with_conditions(
            json!([{ "attribute": "a\u{0}", "op": "in", "values": ["v\u{0}"] }])
        ))),
        [
            "flags[f].rules[0].conditions[0].attribute: \"a\\0\" contains a control character",
            "flags[f].rules[0].conditions[0].values[0]: \"v\\0\" contains a NUL character",
        ]
    );
}

#[test]
fn exists_values_are_scalars() {
    assert_eq!(
        refused(write_flag(with_conditions(
            json!([{ "attribute": "a", "op": "exists", "values": [[[1]]] }])
        ))),
        ["flags[f].rules[0].conditions[0].values[0]: op exists needs strings, numbers or booleans, got a list"]
    );
}

#[test]
fn regexes_are_limited_by_compiled_size() {
    // One pattern whose automaton is far beyond 1 MiB.
    let huge = r"\w{200}\w{200}\w{200}";
    let messages = refused(write_flag(with_conditions(
        json!([{ "attribute": "a", "op": "matches", "values": [huge] }]),
    )));
    assert_eq!(
        messages,
        [format!(
            "flags[f].rules[0].conditions[0].values[0]: {huge:?}: regex too large when compiled (at most 1 MiB)"
        )]
    );

    // Many patterns each over the limit: a few are tried, then the document's budget is spent
    // and the rest are not compiled at all.
    let pattern = r"(?:\w{60}){3}";
    let conditions: Vec<Value> = (0..100)
        .map(|_| json!({ "attribute": "a", "op": "matches", "values": [pattern] }))
        .collect();
    let messages = refused(write_flag(with_conditions(json!(conditions))));
    assert_eq!(messages.len(), 10, "{messages:?}");
    assert_eq!(
        messages.last().map(String::as_str),
        Some("flags[f]: regexes too large when compiled: more than 8 MiB together, at most 8 MiB per document")
    );

    // Many patterns each within the limit (about 550 KiB), together over 8 MiB.
    let pattern = r"\w{10}";
    let conditions: Vec<Value> = (0..20)
        .map(|_| json!({ "attribute": "a", "op": "matches", "values": [pattern] }))
        .collect();
    let messages = refused(write_flag(with_conditions(json!(conditions))));
    assert_eq!(
        messages,
        ["flags[f]: regexes too large when compiled: more than 8 MiB together, at most 8 MiB per document"]
    );

    // An ordinary pattern is fine.
    assert!(write_flag(with_conditions(
        json!([{ "attribute": "email", "op": "matches", "values": [r"^[a-z]+@example\.com$"] }])
    ))
    .is_ok());
}

#[test]
fn segment_keys_are_checked() {
    let long = "k".repeat(257);
    let messages = refused(write_segment(segment(json!({
        "included": ["a", "b", "a", "", "x\u{0}", long],
        "excluded": ["a", "a"],
    }))));
    assert_eq!(
        messages,
        [
            "segments[s].included[2]: duplicate key \"a\" (also segments[s].included[0])"
                .to_owned(),
            "segments[s].included[3]: must not be empty".to_owned(),
            "segments[s].included[4]: \"x\\0\" contains a control character".to_owned(),
            format!(
                "segments[s].included[5]: \"{}…\" (257 bytes) is 257 bytes, over the limit of 256",
                "k".repeat(64)
            ),
            "segments[s].excluded[1]: duplicate key \"a\" (also segments[s].excluded[0])"
                .to_owned(),
        ]
    );
    // A key in both lists is allowed: excluded wins.
    assert!(write_segment(segment(json!({ "included": ["a"], "excluded": ["a"] }))).is_ok());
}

#[test]
fn messages_quote_at_most_64_bytes_of_what_they_refuse() {
    let key = "K".repeat(10_000);
    let messages = refused(write_flag(flag(json!({ "key": key }))));
    let text = messages.join("\n");
    assert!(text.len() < 600, "{} bytes: {text}", text.len());
    assert!(text.contains("(10000 bytes) is not a valid key"), "{text}");
}

#[test]
fn a_document_over_a_count_limit_is_not_checked_further() {
    // 2,000 weights naming variants that do not exist: checked one by one, each a problem.
    let weights: Vec<Value> = (0..2000)
        .map(|i| json!({ "variant": format!("missing-{i}"), "weight": 50 }))
        .collect();
    let split = flag(json!({ "default": { "split": { "weights": weights } } }));
    assert_eq!(
        refused(write_flag(split.clone())),
        ["flags[f].default.split.weights: 2000 weights, at most 1000 allowed"]
    );
    // Without limits (loading what is stored), every problem is found, the first thousand
    // kept and the rest counted.
    let messages = refused(Snapshot::new().apply(ChangeSet {
        flags: vec![split],
        ..ChangeSet::default()
    }));
    assert_eq!(messages.len(), 1001);
    assert_eq!(
        messages.last().map(String::as_str),
        Some("and 1000 more problems")
    );
}

#[test]
fn an_environment_s_regexes_have_a_budget_too() {
    // Fourteen patterns of about 550 KiB each: 7.5 MiB, within a flag's 8 MiB.
    let heavy = |key: &str| {
        let conditions: Vec<Value> = (0..14)
            .map(
                |i| json!({ "attribute": format!("a{i}"), "op": "matches", "values": [r"\w{10}"] }),
            )
            .collect();
        let mut f = with_conditions(json!(conditions));
        f.key = key.to_owned();
        f
    };
    let mut snapshot = Snapshot::new();
    for i in 0..8 {
        snapshot = snapshot
            .apply_within_limits(ChangeSet {
                flags: vec![heavy(&format!("f{i}"))],
                ..ChangeSet::default()
            })
            .expect("within the environment's budget");
    }
    assert!(
        snapshot.regex_bytes() > 56 << 20,
        "{}",
        snapshot.regex_bytes()
    );
    let messages = refused(snapshot.apply_within_limits(ChangeSet {
        flags: vec![heavy("f8")],
        ..ChangeSet::default()
    }));
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with("the environment's regexes would take ")
            && messages[0].contains("over the limit of 64 MiB for an environment"),
        "{messages:?}"
    );
    // Replacing one flag by the same does not grow them; removing one makes room.
    let snapshot = snapshot
        .apply_within_limits(ChangeSet {
            flags: vec![heavy("f0")],
            ..ChangeSet::default()
        })
        .expect("no growth");
    let snapshot = snapshot
        .apply_within_limits(ChangeSet {
            deleted_flags: vec!["f0".to_owned()],
            ..ChangeSet::default()
        })
        .expect("deleted");
    snapshot
        .apply_within_limits(ChangeSet {
            flags: vec![heavy("f8")],
            ..ChangeSet::default()
        })
        .expect("room again");
}
