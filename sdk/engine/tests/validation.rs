//! Validation messages, pinned exactly (DESIGN.md section 1).
//!
//! Each test feeds a document with one class of problem through the production path
//! (`Snapshot::from_text`: parse, decode, validate) and asserts the full `path: message` lines,
//! so a message that loses its path, its culprit or its hint fails here. The last tests apply
//! refused changes to an existing snapshot and check it is left as it was.

use flagstaff_engine::{
    flag_from_value, parse_document, to_text, ChangeSet, Context, Format, Reason, Snapshot,
    MAX_FLAG_BYTES, MAX_SEGMENT_KEYS,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Document builders
// ---------------------------------------------------------------------------------------------

/// A valid boolean flag: variants `on`/`off`, enabled, serving `off` by default.
fn flag(key: &str) -> Value {
    json!({
        "key": key,
        "kind": "boolean",
        "variants": { "on": true, "off": false },
        "off_variant": "off",
        "enabled": true,
        "default": { "variant": "off" },
    })
}

/// `base` with the fields of the object `fields` set (replacing any already there).
fn with(mut base: Value, fields: Value) -> Value {
    let (Value::Object(base_map), Value::Object(fields)) = (&mut base, fields) else {
        panic!("`with` merges objects");
    };
    base_map.extend(fields);
    base
}

/// `base` without the field `name`.
fn without(mut base: Value, name: &str) -> Value {
    base.as_object_mut()
        .expect("`without` removes a field of an object")
        .remove(name);
    base
}

/// A rule serving `on` when all `conditions` match.
fn rule(id: &str, conditions: Value) -> Value {
    json!({ "id": id, "conditions": conditions, "serve": { "variant": "on" } })
}

/// A condition on `attribute`.
fn condition(attribute: &str, op: &str, values: Value) -> Value {
    json!({ "attribute": attribute, "op": op, "values": values })
}

/// A condition on segment membership.
fn in_segment(segments: Value) -> Value {
    json!({ "op": "in_segment", "values": segments })
}

/// A split serve: `(variant, weight)` pairs in order.
fn split(weights: &[(&str, Value)]) -> Value {
    let weights: Vec<Value> = weights
        .iter()
        .map(|(variant, weight)| json!({ "variant": variant, "weight": weight }))
        .collect();
    json!({ "split": { "weights": weights } })
}

/// A valid flag with one rule holding one condition.
fn flag_with_condition(key: &str, condition: Value) -> Value {
    with(
        flag(key),
        json!({ "rules": [rule("r", json!([condition]))] }),
    )
}

/// A valid flag `key` that requires each of `prerequisites` to serve `on`.
fn requiring(key: &str, prerequisites: &[&str]) -> Value {
    let prerequisites: Vec<Value> = prerequisites
        .iter()
        .map(|p| json!({ "flag": p, "variants": ["on"] }))
        .collect();
    with(flag(key), json!({ "prerequisites": prerequisites }))
}

/// Flags `f1` .. `f{len}`, each requiring the next: a chain of `len - 1` links.
fn chain(len: usize) -> Vec<Value> {
    (1..=len)
        .map(|i| {
            let next = format!("f{}", i + 1);
            let prerequisites: &[&str] = if i < len { &[&next] } else { &[] };
            requiring(&format!("f{i}"), prerequisites)
        })
        .collect()
}

/// A segment with the given fields besides its key.
fn segment(key: &str, fields: Value) -> Value {
    with(json!({ "key": key }), fields)
}

/// An export document of `flags` and `segments`.
fn document(flags: Vec<Value>, segments: Vec<Value>) -> Value {
    json!({ "environment": "test", "flags": flags, "segments": segments })
}

// ---------------------------------------------------------------------------------------------
// Outcomes
// ---------------------------------------------------------------------------------------------

/// The messages `Snapshot::from_text` rejects `text` with; panics when it is accepted.
fn text_messages(text: &str) -> Vec<String> {
    match Snapshot::from_text(text) {
        Ok(_) => panic!("the document was accepted, expected problems"),
        Err(e) => e.messages(),
    }
}

/// The messages the document `doc`, written as JSON, is rejected with.
fn messages(doc: &Value) -> Vec<String> {
    text_messages(&doc.to_string())
}

/// The messages a document holding only `flags` is rejected with.
fn flag_messages(flags: Vec<Value>) -> Vec<String> {
    messages(&document(flags, vec![]))
}

/// Asserts the document `doc` is valid and returns its snapshot.
fn accepted(doc: &Value) -> Snapshot {
    Snapshot::from_text(&doc.to_string())
        .unwrap_or_else(|e| panic!("expected the document to be valid, got:\n{e}"))
}

/// The single message of a one-problem rejection.
fn only_message(mut messages: Vec<String>) -> String {
    assert_eq!(messages.len(), 1, "expected one problem, got {messages:#?}");
    messages.remove(0)
}

/// The hint every key-syntax message carries.
const KEY_RULE: &str = "is not a valid key: use 1 to 128 lower-case letters, digits, '.', '_' \
                        or '-', starting with a letter or digit";

// ---------------------------------------------------------------------------------------------
// One class of problem per test
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_variant_references() {
    let bad = with(
        flag("checkout"),
        json!({
            "off_variant": "of",
            "rules": [{ "id": "staff", "serve": { "variant": "onn" } }],
            "default": split(&[("on", json!(50_000)), ("maybe", json!(50_000))]),
        }),
    );
    let also_default = with(flag("search"), json!({ "default": { "variant": "none" } }));
    assert_eq!(
        flag_messages(vec![bad, also_default]),
        [
            r#"flags[checkout].off_variant: unknown variant "of"; the flag's variants are on, off"#,
            r#"flags[checkout].rules[0].serve.variant: unknown variant "onn"; the flag's variants are on, off"#,
            r#"flags[checkout].default.split.weights[1].variant: unknown variant "maybe"; the flag's variants are on, off"#,
            r#"flags[search].default.variant: unknown variant "none"; the flag's variants are on, off"#,
        ]
    );
}

#[test]
fn variant_values_of_the_wrong_kind() {
    let boolean = with(
        flag("dark-mode"),
        json!({ "variants": { "on": "yes", "off": false } }),
    );
    let number = with(
        flag("page-size"),
        json!({ "kind": "number", "variants": { "on": 50, "off": true } }),
    );
    assert_eq!(
        flag_messages(vec![boolean, number]),
        [
            r#"flags[dark-mode].variants[on]: value is string "yes", but the flag's kind is boolean"#,
            "flags[page-size].variants[off]: value is boolean true, but the flag's kind is number",
        ]
    );
}

#[test]
fn weights_not_summing_to_100000() {
    let short = with(
        flag("short"),
        json!({ "default": split(&[("on", json!(9_000)), ("off", json!(90_000))]) }),
    );
    let over = with(
        flag("over"),
        json!({ "rules": [{ "id": "all", "serve": split(&[("on", json!(50_001)), ("off", json!(50_000))]) }] }),
    );
    assert_eq!(
        flag_messages(vec![short, over]),
        [
            "flags[short].default.split.weights: sum is 99000, must be 100000",
            "flags[over].rules[0].serve.split.weights: sum is 100001, must be 100000",
        ]
    );
}

#[test]
fn negative_weight() {
    let doc = with(
        flag("checkout"),
        json!({ "default": split(&[("on", json!(-10_000)), ("off", json!(100_000))]) }),
    );
    assert_eq!(
        flag_messages(vec![doc]),
        ["flags[checkout].default.split.weights[0].weight: -10000 is negative"]
    );
}

#[test]
fn every_bad_weight_of_a_split_is_reported() {
    let doc = with(
        flag("checkout"),
        json!({ "default": split(&[("on", json!(-10_000)), ("off", json!(110_000))]) }),
    );
    assert_eq!(
        flag_messages(vec![doc]),
        [
            "flags[checkout].default.split.weights[0].weight: -10000 is negative",
            "flags[checkout].default.split.weights[1].weight: 110000 is over 100000 (100%)",
        ]
    );
}

#[test]
fn fractional_weight() {
    let doc = with(
        flag("checkout"),
        json!({ "default": split(&[("on", json!(87_500)), ("off", json!(12_500.5))]) }),
    );
    assert_eq!(
        flag_messages(vec![doc]),
        ["flags[checkout].default.split.weights[1].weight: 12500.5 is not a whole number"]
    );
}

#[test]
fn bad_regex() {
    let doc = flag_with_condition(
        "checkout",
        condition("email", "matches", json!(["(a", "ok$"])),
    );
    assert_eq!(
        flag_messages(vec![doc]),
        [
            r#"flags[checkout].rules[0].conditions[0].values[0]: "(a" is not a valid regex: unclosed group"#
        ]
    );
}

#[test]
fn bad_semver_literal() {
    let doc = flag_with_condition(
        "checkout",
        condition(
            "app_version",
            "semver_gt",
            json!(["1.2", "v1.2.3", "1.2.3-beta.1"]),
        ),
    );
    let hint = "is not a semantic version (strict semver 2.0, e.g. 1.2.3 or 2.0.0-beta.1)";
    assert_eq!(
        flag_messages(vec![doc]),
        [
            format!(r#"flags[checkout].rules[0].conditions[0].values[0]: "1.2" {hint}"#),
            format!(r#"flags[checkout].rules[0].conditions[0].values[1]: "v1.2.3" {hint}"#),
        ]
    );
}

#[test]
fn bad_date_literal() {
    let doc = flag_with_condition(
        "checkout",
        condition(
            "signed_up",
            "before",
            json!([
                "2025-13-01T00:00:00Z",
                "2025-01-01",
                "2025-01-01T00:00:00Z",
                1_735_689_600_000_u64
            ]),
        ),
    );
    let hint = "is not an RFC 3339 time (e.g. 2025-01-01T00:00:00Z)";
    assert_eq!(
        flag_messages(vec![doc]),
        [
            format!(
                r#"flags[checkout].rules[0].conditions[0].values[0]: "2025-13-01T00:00:00Z" {hint}"#
            ),
            format!(r#"flags[checkout].rules[0].conditions[0].values[1]: "2025-01-01" {hint}"#),
        ]
    );
}

#[test]
fn condition_values_of_the_wrong_type_for_their_op() {
    let doc = with(
        flag("checkout"),
        json!({ "rules": [rule("r", json!([
            condition("age", "gt", json!(["18"])),
            condition("email", "starts_with", json!([42])),
            condition("country", "in", json!([["NL", "DE"]])),
            condition("signed_up", "after", json!([true])),
            condition("app_version", "semver_eq", json!([1])),
        ]))] }),
    );
    assert_eq!(
        flag_messages(vec![doc]),
        [
            r#"flags[checkout].rules[0].conditions[0].values[0]: op gt needs numbers, got string "18""#,
            "flags[checkout].rules[0].conditions[1].values[0]: op starts_with needs strings, got number 42",
            "flags[checkout].rules[0].conditions[2].values[0]: op in needs strings, numbers or booleans, got a list",
            "flags[checkout].rules[0].conditions[3].values[0]: op after needs RFC 3339 strings or Unix milliseconds, got boolean true",
            "flags[checkout].rules[0].conditions[4].values[0]: op semver_eq needs semantic version strings, got number 1",
        ]
    );
}

#[test]
fn duplicate_rule_id() {
    let doc = with(
        flag("checkout"),
        json!({ "rules": [rule("eu", json!([])), rule("us", json!([])), rule("eu", json!([]))] }),
    );
    assert_eq!(
        flag_messages(vec![doc]),
        [r#"flags[checkout].rules[2].id: duplicate rule id "eu" (also rules[0])"#]
    );
}

#[test]
fn missing_required_fields() {
    let no_off_variant = without(flag("checkout"), "off_variant");
    let no_rule_id = with(
        flag("search"),
        json!({ "rules": [{ "serve": { "variant": "on" } }] }),
    );
    assert_eq!(
        flag_messages(vec![no_off_variant, no_rule_id]),
        [
            r#"flags[checkout]: missing required field "off_variant""#,
            r#"flags[search].rules[0]: missing required field "id""#,
        ]
    );
}

#[test]
fn unknown_field_with_a_suggestion() {
    let typo = with(
        flag("checkout"),
        json!({ "rules": [{ "id": "eu", "condtions": [], "serve": { "variant": "on" } }] }),
    );
    let unrelated = with(flag("search"), json!({ "colour": "blue" }));
    assert_eq!(
        flag_messages(vec![typo, unrelated]),
        [
            r#"flags[checkout].rules[0]: unknown field "condtions" (did you mean "conditions"?)"#,
            r#"flags[search]: unknown field "colour""#,
        ]
    );
}

/// `client_side` is optional (false when absent), read from JSON and YAML, written only when
/// true (as `temporary` is), and must be a boolean.
#[test]
fn client_side_is_an_optional_boolean_written_only_when_true() {
    let yaml = "
environment: test
flags:
  - key: banner
    kind: boolean
    variants: { on: true, off: false }
    off_variant: off
    enabled: true
    default: { variant: off }
    client_side: true
  - key: checkout
    kind: boolean
    variants: { on: true, off: false }
    off_variant: off
    enabled: true
    default: { variant: off }
";
    let doc = parse_document(yaml).expect("valid");
    let flags: Vec<(&str, bool)> = doc
        .flags
        .iter()
        .map(|f| (f.key.as_str(), f.client_side))
        .collect();
    assert_eq!(flags, [("banner", true), ("checkout", false)]);
    for format in [Format::Json, Format::Yaml] {
        let text = to_text(&doc, format);
        assert_eq!(text.matches("client_side").count(), 1, "{text}");
        assert_eq!(parse_document(&text).expect("reads back"), doc, "{text}");
    }
    let json = to_text(&doc.flags[0], Format::Json);
    assert!(json.contains(r#""client_side": true"#), "{json}");

    let explicit_false = with(flag("checkout"), json!({ "client_side": false }));
    assert!(!flag_from_value(&explicit_false).expect("valid").client_side);
    let not_a_bool = with(flag("checkout"), json!({ "client_side": "yes" }));
    assert_eq!(
        flag_messages(vec![not_a_bool]),
        [r#"flags[checkout].client_side: must be true or false, got string "yes""#]
    );
}

/// The typo DESIGN.md guards against: one in a hand-written YAML file.
#[test]
fn unknown_field_in_yaml() {
    let yaml = "
environment: test
flags:
  - key: checkout
    kind: boolean
    variants: { on: true, off: false }
    off_variant: off
    enabled: true
    rules:
      - id: eu
        condtions: [{ attribute: country, op: in, values: [NL] }]
        serve: { variant: on }
    default: { variant: off }
";
    assert_eq!(
        text_messages(yaml),
        [r#"flags[checkout].rules[0]: unknown field "condtions" (did you mean "conditions"?)"#]
    );
}

#[test]
fn unknown_segment_in_in_segment() {
    let doc = document(
        vec![flag_with_condition(
            "checkout",
            in_segment(json!(["staff", "beta-testers"])),
        )],
        vec![segment("staff", json!({ "included": ["user-1"] }))],
    );
    assert_eq!(
        messages(&doc),
        [r#"flags[checkout].rules[0].conditions[0].values[1]: unknown segment "beta-testers""#]
    );
}

#[test]
fn unknown_prerequisite_flag() {
    assert_eq!(
        flag_messages(vec![requiring("checkout", &["new-payments"])]),
        [r#"flags[checkout].prerequisites[0].flag: unknown flag "new-payments""#]
    );
}

#[test]
fn prerequisite_variant_the_flag_does_not_have() {
    let checkout = with(
        flag("checkout"),
        json!({ "prerequisites": [{ "flag": "payments", "variants": ["on", "enabled"] }] }),
    );
    assert_eq!(
        flag_messages(vec![checkout, flag("payments")]),
        [
            r#"flags[checkout].prerequisites[0].variants[1]: flag "payments" has no variant "enabled"; its variants are on, off"#
        ]
    );
}

#[test]
fn prerequisite_cycles() {
    let two = vec![requiring("a", &["b"]), requiring("b", &["a"])];
    assert_eq!(
        flag_messages(two),
        ["flags[a].prerequisites: prerequisite cycle a -> b -> a"]
    );

    let own = vec![requiring("a", &["a"])];
    assert_eq!(
        flag_messages(own),
        ["flags[a].prerequisites: prerequisite cycle a -> a"]
    );

    let mut five = chain(5);
    five[4] = requiring("f5", &["f1"]); // close f1 -> .. -> f5 into a cycle
    assert_eq!(
        flag_messages(five),
        ["flags[f1].prerequisites: prerequisite cycle f1 -> f2 -> f3 -> f4 -> f5 -> f1"]
    );
}

#[test]
fn prerequisite_chain_of_at_most_8_links() {
    accepted(&document(chain(9), vec![]));
    assert_eq!(
        flag_messages(chain(10)),
        [
            "flags[f1].prerequisites: prerequisite chain f1 -> f2 -> f3 -> f4 -> f5 -> f6 -> f7 -> f8 -> f9 -> f10 \
             has 9 links, at most 8 allowed"
        ]
    );
}

#[test]
fn bad_key_syntax() {
    let longest = "k".repeat(128);
    accepted(&document(vec![flag(&longest)], vec![]));

    let too_long = "k".repeat(129);
    let clipped = "k".repeat(64);
    let bad_variant = with(
        flag("checkout"),
        json!({ "variants": { "on": true, "Off": false, "off": false } }),
    );
    assert_eq!(
        flag_messages(vec![flag("Checkout V2"), flag(&too_long), bad_variant]),
        [
            format!(r#"flags[Checkout V2].key: "Checkout V2" {KEY_RULE}"#),
            // A message quotes at most the first 64 bytes of what it refuses.
            format!(r#"flags[{clipped}…].key: "{clipped}…" (129 bytes) {KEY_RULE}"#),
            format!(r#"flags[checkout].variants[Off]: "Off" {KEY_RULE}"#),
        ]
    );
}

#[test]
fn in_segment_inside_a_segments_rules() {
    let nested = segment(
        "beta",
        json!({ "rules": [{ "conditions": [in_segment(json!(["staff"]))] }] }),
    );
    let doc = document(vec![], vec![segment("staff", json!({})), nested]);
    assert_eq!(
        messages(&doc),
        [
            "segments[beta].rules[0].conditions[0].op: in_segment is not allowed in a segment's rules; \
             list the keys or copy the conditions"
        ]
    );
}

#[test]
fn oversized_flag_document() {
    // The flag is measured as compact JSON of its canonical shape: `flag("big")` with an empty
    // description and the `rules: []` the canonical shape always has is this many bytes.
    const OVERHEAD: usize = 156;
    let with_description = |len: usize| {
        document(
            vec![with(flag("big"), json!({ "description": "x".repeat(len) }))],
            vec![],
        )
    };

    accepted(&with_description(MAX_FLAG_BYTES - OVERHEAD));
    assert_eq!(
        messages(&with_description(MAX_FLAG_BYTES - OVERHEAD + 1)),
        ["flags[big]: the flag document is 1048577 bytes, over the limit of 1048576 (1 MiB)"]
    );
}

#[test]
fn segment_with_too_many_keys() {
    let keys = |n: usize| (0..n).map(|i| format!("user-{i}")).collect::<Vec<_>>();
    let with_keys = |n: usize| {
        document(
            vec![],
            vec![segment("everyone", json!({ "included": keys(n) }))],
        )
    };

    accepted(&with_keys(MAX_SEGMENT_KEYS));
    assert_eq!(
        messages(&with_keys(MAX_SEGMENT_KEYS + 1)),
        ["segments[everyone].included: 100001 keys, at most 100000 allowed"]
    );
}

#[test]
fn invalid_json_and_yaml_text() {
    let json = only_message(text_messages(r#"{"environment": "test", "flags": [}"#));
    assert!(json.starts_with("invalid JSON: "), "{json}");

    let yaml = only_message(text_messages("environment: test\nflags: [\n"));
    assert!(yaml.starts_with("invalid YAML: "), "{yaml}");
}

// ---------------------------------------------------------------------------------------------
// Every problem at once
// ---------------------------------------------------------------------------------------------

/// Semantic problems of twelve classes in two flags and a segment are all reported, in the order the
/// engine checks them: segments, then each flag on its own, then references between documents.
#[test]
fn every_problem_of_a_document_is_reported() {
    let alpha = with(
        flag("alpha"),
        json!({
            "variants": { "on": "yes", "off": false },
            "off_variant": "of",
            "rules": [
                {
                    "id": "r1",
                    "conditions": [condition("age", "gt", json!(["ten"]))],
                    "serve": split(&[("on", json!(60_000)), ("off", json!(30_000))]),
                },
                rule("r1", json!([condition("email", "matches", json!(["("]))])),
            ],
        }),
    );
    let beta = with(
        requiring("Beta", &["ghost"]),
        json!({ "rules": [rule("r", json!([
            condition("app_version", "semver_gt", json!(["1.2"])),
            condition("signed_up", "before", json!(["yesterday"])),
            in_segment(json!(["nobody"])),
        ]))] }),
    );
    let staff = segment(
        "staff",
        json!({ "rules": [{ "conditions": [in_segment(json!(["beta"]))] }] }),
    );
    assert_eq!(
        messages(&document(vec![alpha, beta], vec![staff])),
        [
            "segments[staff].rules[0].conditions[0].op: in_segment is not allowed in a segment's rules; \
             list the keys or copy the conditions",
            r#"flags[alpha].variants[on]: value is string "yes", but the flag's kind is boolean"#,
            r#"flags[alpha].off_variant: unknown variant "of"; the flag's variants are on, off"#,
            r#"flags[alpha].rules[0].conditions[0].values[0]: op gt needs numbers, got string "ten""#,
            "flags[alpha].rules[0].serve.split.weights: sum is 90000, must be 100000",
            r#"flags[alpha].rules[1].id: duplicate rule id "r1" (also rules[0])"#,
            r#"flags[alpha].rules[1].conditions[0].values[0]: "(" is not a valid regex: unclosed group"#,
            &format!(r#"flags[Beta].key: "Beta" {KEY_RULE}"#),
            r#"flags[Beta].rules[0].conditions[0].values[0]: "1.2" is not a semantic version (strict semver 2.0, e.g. 1.2.3 or 2.0.0-beta.1)"#,
            r#"flags[Beta].rules[0].conditions[1].values[0]: "yesterday" is not an RFC 3339 time (e.g. 2025-01-01T00:00:00Z)"#,
            r#"flags[Beta].prerequisites[0].flag: unknown flag "ghost""#,
            r#"flags[Beta].rules[0].conditions[2].values[0]: unknown segment "nobody""#,
        ]
    );
}

/// Structural problems (decoding) in several documents are all reported together.
#[test]
fn every_structural_problem_of_a_document_is_reported() {
    let alpha = with(
        without(flag("alpha"), "off_variant"),
        json!({ "default": split(&[("on", json!(-1)), ("off", json!(100_000))]) }),
    );
    let beta = with(
        flag("beta"),
        json!({
            "enabled": "yes",
            "rules": [{ "condtions": [], "serve": { "variant": "on" } }],
            "default": split(&[("on", json!(0.5)), ("off", json!(99_999.5))]),
        }),
    );
    let staff = segment("staff", json!({ "included": "user-1", "exclude": [] }));
    assert_eq!(
        messages(&document(vec![alpha, beta], vec![staff])),
        [
            r#"flags[alpha]: missing required field "off_variant""#,
            "flags[alpha].default.split.weights[0].weight: -1 is negative",
            r#"flags[beta].enabled: must be true or false, got string "yes""#,
            r#"flags[beta].rules[0]: unknown field "condtions" (did you mean "conditions"?)"#,
            r#"flags[beta].rules[0]: missing required field "id""#,
            "flags[beta].default.split.weights[0].weight: 0.5 is not a whole number",
            "flags[beta].default.split.weights[1].weight: 99999.5 is not a whole number",
            r#"segments[staff]: unknown field "exclude" (did you mean "excluded"?)"#,
            r#"segments[staff].included: must be a list, got string "user-1""#,
        ]
    );
}

/// A flag with an unknown field does not hide the problems of the flags that did decode, nor is
/// a reference to it reported as unknown.
#[test]
fn structural_and_content_problems_are_reported_together() {
    let broken = with(flag("payments"), json!({ "colour": "red" }));
    let checkout = with(
        requiring("checkout", &["payments"]),
        json!({ "off_variant": "nope" }),
    );
    assert_eq!(
        flag_messages(vec![broken, checkout]),
        [
            r#"flags[payments]: unknown field "colour""#,
            r#"flags[checkout].off_variant: unknown variant "nope"; the flag's variants are on, off"#,
        ]
    );
}

#[test]
fn every_bad_segment_rule_is_reported() {
    let staff = segment(
        "staff",
        json!({ "rules": [
            { "conditions": [{ "attribute": "a", "op": "bogus", "values": ["x"] }] },
            { "conditions": [{ "attribute": "b", "op": "nope", "values": ["y"] }] },
        ]}),
    );
    let ops = "in, starts_with, ends_with, contains, matches, lt, lte, gt, gte, semver_eq, \
               semver_lt, semver_gt, before, after, exists, in_segment";
    assert_eq!(
        messages(&document(vec![], vec![staff])),
        [
            format!(
                r#"segments[staff].rules[0].conditions[0].op: must be one of {ops}, got string "bogus""#
            ),
            format!(
                r#"segments[staff].rules[1].conditions[0].op: must be one of {ops}, got string "nope""#
            ),
        ]
    );
}

#[test]
fn repeated_fields_are_refused_in_json_and_yaml() {
    let json = only_message(text_messages(
        r#"{"environment": "test", "flags": [{"key": "a", "enabled": true, "enabled": false}]}"#,
    ));
    assert!(
        json.starts_with(r#"invalid JSON: duplicate field "enabled""#),
        "{json}"
    );
    let yaml = only_message(text_messages(
        "environment: test\nflags:\n  - key: a\n    variants: { on: true, on: false }\n",
    ));
    assert!(
        yaml.starts_with(r#"invalid YAML: "#) && yaml.contains(r#"duplicate"#),
        "{yaml}"
    );
}

#[test]
fn the_environment_key_is_checked() {
    assert_eq!(
        only_message(messages(&json!({ "environment": "Prod Env", "flags": [] }))),
        format!(r#"environment: "Prod Env" {KEY_RULE}"#)
    );
}

#[test]
fn a_flag_without_variants_is_reported_once() {
    let doc = with(flag("empty"), json!({ "variants": {} }));
    assert_eq!(
        flag_messages(vec![doc]),
        ["flags[empty].variants: a flag needs at least one variant"]
    );
}

#[test]
fn a_document_that_is_not_an_object() {
    assert_eq!(
        only_message(text_messages("")),
        "the document must be an object with environment, flags and segments, got nothing"
    );
    assert_eq!(
        only_message(text_messages("[1, 2]")),
        "the document must be an object with environment, flags and segments, got a list"
    );
}

// ---------------------------------------------------------------------------------------------
// Changes applied to an existing snapshot
// ---------------------------------------------------------------------------------------------

/// `checkout` requires `payments` and serves `on` to the `staff` segment (which holds `user-1`).
fn environment() -> Snapshot {
    let checkout = with(
        requiring("checkout", &["payments"]),
        json!({ "rules": [rule("staff", json!([in_segment(json!(["staff"]))]))] }),
    );
    let payments = with(flag("payments"), json!({ "default": { "variant": "on" } }));
    let staff = segment("staff", json!({ "included": ["user-1"] }));
    accepted(&document(vec![checkout, payments], vec![staff]))
}

/// What `snapshot` serves `user-1` for `checkout`, as text (a `Detail` borrows its snapshot).
fn checkout_for_user_1(snapshot: &Snapshot) -> String {
    format!(
        "{:?}",
        snapshot.bool_detail("checkout", &Context::new("user-1"), false)
    )
}

/// The messages `changes` is refused with; asserts `snapshot` still has its documents and still
/// serves `checkout` as before.
fn refused(snapshot: &Snapshot, changes: ChangeSet) -> Vec<String> {
    let documents = snapshot.to_document("test");
    let served = checkout_for_user_1(snapshot);
    let messages = match snapshot.apply(changes) {
        Ok(_) => panic!("the change was applied, expected it to be refused"),
        Err(e) => e.messages(),
    };
    assert_eq!(snapshot.to_document("test"), documents);
    assert_eq!(checkout_for_user_1(snapshot), served);
    messages
}

#[test]
fn the_environment_serves_checkout_by_the_staff_rule() {
    let environment = environment();
    let detail = environment.bool_detail("checkout", &Context::new("user-1"), false);
    assert!(detail.value);
    assert_eq!(
        detail.reason,
        Reason::RuleMatch {
            index: 0,
            id: "staff"
        }
    );
}

#[test]
fn deleting_a_segment_a_flag_uses_is_refused() {
    let changes = ChangeSet {
        deleted_segments: vec!["staff".to_owned()],
        ..ChangeSet::default()
    };
    assert_eq!(
        refused(&environment(), changes),
        [r#"segments[staff]: cannot be deleted: it is used by flag "checkout""#]
    );
}

#[test]
fn deleting_a_flag_another_requires_is_refused() {
    let changes = ChangeSet {
        deleted_flags: vec!["payments".to_owned()],
        ..ChangeSet::default()
    };
    assert_eq!(
        refused(&environment(), changes),
        [r#"flags[payments]: cannot be deleted: it is a prerequisite of flag "checkout""#]
    );
}

#[test]
fn a_cycle_through_an_unchanged_flag_is_refused() {
    let payments = flag_from_value(&requiring("payments", &["checkout"])).expect("a valid flag");
    let changes = ChangeSet {
        flags: vec![payments],
        ..ChangeSet::default()
    };
    assert_eq!(
        refused(&environment(), changes),
        ["flags[payments].prerequisites: prerequisite cycle payments -> checkout -> payments"]
    );
}

#[test]
fn deleting_a_segment_with_every_flag_using_it_is_accepted() {
    let changes = ChangeSet {
        deleted_flags: vec!["checkout".to_owned(), "payments".to_owned()],
        deleted_segments: vec!["staff".to_owned()],
        ..ChangeSet::default()
    };
    let next = environment()
        .apply(changes)
        .expect("nothing uses what is deleted");
    assert!(next.is_empty());
}

// A change is checked against the flags it touches: those it changes or deletes, the flags that
// use a changed segment and those that require a changed flag, through the snapshot's reverse
// edges. These pin that the problems found that way are the same as a whole-document check's.

/// `flags` and `segments` as a change set of upserts.
fn upserts(flags: Vec<Value>, segments: Vec<Value>) -> ChangeSet {
    ChangeSet {
        flags: flags
            .iter()
            .map(|f| flag_from_value(f).expect("a valid flag"))
            .collect(),
        segments: segments
            .iter()
            .map(|s| flagstaff_engine::segment_from_value(s).expect("a valid segment"))
            .collect(),
        ..ChangeSet::default()
    }
}

/// The messages `changes` to `snapshot` are refused with; asserts `snapshot` is left as it was.
fn refused_by(snapshot: &Snapshot, changes: ChangeSet) -> Vec<String> {
    let documents = snapshot.to_document("test");
    let messages = match snapshot.apply(changes) {
        Ok(_) => panic!("the change was applied, expected it to be refused"),
        Err(e) => e.messages(),
    };
    assert_eq!(snapshot.to_document("test"), documents);
    messages
}

#[test]
fn deleting_a_segment_is_refused_while_an_unchanged_flag_still_uses_it() {
    let banner = flag_with_condition("banner", in_segment(json!(["staff"])));
    let environment = environment()
        .apply(upserts(vec![banner], vec![]))
        .expect("banner uses an existing segment");
    // `checkout` stops using `staff` in the same change, `banner` does not.
    let mut changes = upserts(vec![requiring("checkout", &["payments"])], vec![]);
    changes.deleted_segments = vec!["staff".to_owned()];
    assert_eq!(
        refused_by(&environment, changes),
        [r#"segments[staff]: cannot be deleted: it is used by flag "banner""#]
    );
}

#[test]
fn deleting_a_segment_a_changed_flag_starts_using_is_refused() {
    let mut changes = upserts(
        vec![
            requiring("checkout", &["payments"]),
            flag_with_condition("payments", in_segment(json!(["staff"]))),
        ],
        vec![],
    );
    changes.deleted_segments = vec!["staff".to_owned()];
    assert_eq!(
        refused_by(&environment(), changes),
        [
            r#"segments[staff]: cannot be deleted: it is used by flag "payments""#,
            r#"flags[payments].rules[0].conditions[0].values[0]: unknown segment "staff""#,
        ]
    );
}

#[test]
fn deleting_a_flag_and_its_only_dependent_is_accepted_and_forgets_the_edge() {
    let changes = ChangeSet {
        deleted_flags: vec!["checkout".to_owned(), "payments".to_owned()],
        ..ChangeSet::default()
    };
    let next = environment()
        .apply(changes)
        .expect("nothing else requires them");
    // A new `payments` may be deleted again: nothing requires it any more.
    let next = next
        .apply(upserts(vec![flag("payments")], vec![]))
        .expect("a new flag");
    let changes = ChangeSet {
        deleted_flags: vec!["payments".to_owned()],
        deleted_segments: vec!["staff".to_owned()],
        ..ChangeSet::default()
    };
    assert!(next.apply(changes).expect("unused").is_empty());
}

#[test]
fn a_flag_requiring_a_changed_flag_is_checked_against_its_new_variants() {
    let payments = with(
        flag("payments"),
        json!({
            "variants": { "yes": true, "no": false },
            "off_variant": "no",
            "default": { "variant": "yes" },
        }),
    );
    assert_eq!(
        refused_by(&environment(), upserts(vec![payments], vec![])),
        [
            r#"flags[checkout].prerequisites[0].variants[0]: flag "payments" has no variant "on"; its variants are yes, no"#
        ]
    );
}

#[test]
fn a_cycle_closed_by_a_change_through_unchanged_flags_is_refused() {
    let environment = accepted(&document(chain(4), vec![]));
    // f1 -> f2 -> f3 -> f4 stays; f4 now requires f2.
    assert_eq!(
        refused_by(
            &environment,
            upserts(vec![requiring("f4", &["f2"])], vec![])
        ),
        ["flags[f4].prerequisites: prerequisite cycle f4 -> f2 -> f3 -> f4"]
    );
}

/// Flags `{name}1` .. `{name}{len}`, each requiring the next to serve `on` and serving `on`.
fn serving_chain(name: &str, len: usize) -> Vec<Value> {
    (1..=len)
        .map(|i| {
            let next = format!("{name}{}", i + 1);
            let prerequisites: &[&str] = if i < len { &[&next] } else { &[] };
            let flag = requiring(&format!("{name}{i}"), prerequisites);
            with(flag, json!({ "default": { "variant": "on" } }))
        })
        .collect()
}

#[test]
fn a_chain_of_9_links_made_by_joining_two_chains_is_refused() {
    let mut flags = serving_chain("f", 5);
    flags.extend(serving_chain("g", 5));
    let environment = accepted(&document(flags, vec![]));
    let joined = |to: &str| {
        with(
            requiring("f5", &[to]),
            json!({ "default": { "variant": "on" } }),
        )
    };
    // f1 -> .. -> f5 and g1 -> .. -> g5 have 4 links each; f5 -> g1 makes f1's chain 9.
    assert_eq!(
        refused_by(&environment, upserts(vec![joined("g1")], vec![])),
        [
            "flags[f1].prerequisites: prerequisite chain f1 -> f2 -> f3 -> f4 -> f5 -> g1 -> g2 -> g3 -> g4 -> g5 \
             has 9 links, at most 8 allowed"
        ]
    );
    // One link fewer is accepted, and the flags above f5 are compiled against the new chain.
    let user = Context::new("user-1");
    let next = environment
        .apply(upserts(vec![joined("g2")], vec![]))
        .expect("8 links");
    assert!(next.bool_value("f1", &user, false));
    let off = with(flag("g5"), json!({ "enabled": false }));
    let next = next.apply(upserts(vec![off], vec![])).expect("valid");
    let failed = |key: &str| next.bool_detail(key, &user, true).reason;
    assert_eq!(
        failed("f5"),
        Reason::PrerequisiteFailed { prerequisite: "g2" }
    );
    assert_eq!(
        failed("f1"),
        Reason::PrerequisiteFailed { prerequisite: "f2" }
    );
}

#[test]
fn flags_using_a_changed_segment_serve_its_new_members() {
    let staff = segment("staff", json!({ "included": ["user-2"] }));
    let next = environment()
        .apply(upserts(vec![], vec![staff]))
        .expect("a valid segment");
    assert!(!next.bool_value("checkout", &Context::new("user-1"), true));
    assert!(next.bool_value("checkout", &Context::new("user-2"), false));
}
