//! Every flag and segment of the conformance vectors survives domain → wire → bytes → wire →
//! domain unchanged and in order, and every way a wire message can fail to convert names the
//! field. Evaluation contexts survive the same trip, and reasons reach the wire whole; so do
//! serves and segment key patches converted on their own.

use std::path::{Path, PathBuf};

use flagstaff_engine::{
    document_from_value, flag_from_value, AttrRef, AttrValue, Context, Document, ErrorKind, Flag,
    KeyPatch, Reason, Segment, Serve,
};
use flagstaff_proto::{pb, ConvertError};
use prost::Message;
use serde_json::{json, Number, Value};

// ---------------------------------------------------------------------------------------------
// The conformance vectors.

fn conformance_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "json")
                && path
                    .file_name()
                    .is_some_and(|name| name != "bucketing.json")
        })
        .collect();
    files.sort();
    files
}

/// A vector file's flags and segments as one environment, decoded by the engine.
fn conformance_document(path: &Path) -> Document {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let vectors =
        flagstaff_engine::parse_value(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let document = json!({
        "environment": "conformance",
        "flags": vectors.get("flags").cloned().unwrap_or_else(|| json!([])),
        "segments": vectors.get("segments").cloned().unwrap_or_else(|| json!([])),
    });
    document_from_value(&document).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Encodes a message to bytes and decodes it again, as a peer would receive it.
fn over_the_wire<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M) -> M {
    let bytes = message.encode_to_vec();
    let decoded = M::decode(bytes.as_slice()).expect("decodes what was encoded");
    assert_eq!(&decoded, message);
    decoded
}

/// The one change the wire makes: a number travels as a double, so a whole number written
/// with a fraction (`0.0`) comes back as the integer (`0`), the same number. Values nested in
/// JSON variant values travel as JSON text and keep their form.
fn as_received(value: &Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().expect("a float");
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                Value::Number(Number::from(f as i64))
            } else {
                value.clone()
            }
        }
        _ => value.clone(),
    }
}

fn flag_as_received(flag: &Flag) -> Flag {
    let mut flag = flag.clone();
    for (_, value) in &mut flag.variants.0 {
        *value = as_received(value);
    }
    for rule in &mut flag.rules {
        for condition in &mut rule.conditions {
            condition.values = condition.values.iter().map(as_received).collect();
        }
    }
    flag
}

fn segment_as_received(segment: &Segment) -> Segment {
    let mut segment = segment.clone();
    for rule in &mut segment.rules {
        for condition in &mut rule.conditions {
            condition.values = condition.values.iter().map(as_received).collect();
        }
    }
    segment
}

/// The weights of every split of a flag, rules first then the default, as (variant, weight).
fn split_weights(serves: impl Iterator<Item = Serve>) -> Vec<Vec<(String, u32)>> {
    serves
        .filter_map(|serve| match serve {
            Serve::Split(split) => Some(
                split
                    .weights
                    .into_iter()
                    .map(|w| (w.variant, w.weight))
                    .collect(),
            ),
            Serve::Variant(_) => None,
        })
        .collect()
}

fn domain_serves(flag: &Flag) -> impl Iterator<Item = Serve> + '_ {
    flag.rules
        .iter()
        .map(|rule| rule.serve.clone())
        .chain(std::iter::once(flag.default.clone()))
}

fn wire_split_weights(flag: &pb::Flag) -> Vec<Vec<(String, u32)>> {
    flag.rules
        .iter()
        .filter_map(|rule| rule.serve.as_ref())
        .chain(flag.default.as_ref())
        .filter_map(|serve| match &serve.serve {
            Some(pb::serve::Serve::Split(split)) => Some(
                split
                    .weights
                    .iter()
                    .map(|w| (w.variant.clone(), w.weight))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[test]
fn every_conformance_flag_and_segment_round_trips_in_order() {
    let files = conformance_files();
    assert!(!files.is_empty(), "no conformance files found");
    let (mut flags, mut segments, mut splits, mut renumbered) = (0, 0, 0, 0);

    for path in &files {
        let document = conformance_document(path);
        let file = path.file_name().expect("a file name").to_string_lossy();

        for flag in &document.flags {
            let at = format!("{file}: flag {}", flag.key);
            let wire = over_the_wire(&pb::Flag::from(flag));
            let back = Flag::try_from(wire.clone()).unwrap_or_else(|e| panic!("{at}: {e}"));

            let expected = flag_as_received(flag);
            if expected != *flag {
                renumbered += 1;
            }
            assert_eq!(back, expected, "{at}");

            // Order, spelled out: variants, rules and weights keep their sequence on the
            // wire and back.
            let keys: Vec<&str> = flag.variants.keys().collect();
            let wire_keys: Vec<&str> = wire.variants.iter().map(|v| v.key.as_str()).collect();
            let back_keys: Vec<&str> = back.variants.keys().collect();
            assert_eq!(wire_keys, keys, "{at}: variant order on the wire");
            assert_eq!(back_keys, keys, "{at}: variant order after the round trip");

            let ids: Vec<&str> = flag.rules.iter().map(|r| r.id.as_str()).collect();
            let wire_ids: Vec<&str> = wire.rules.iter().map(|r| r.id.as_str()).collect();
            let back_ids: Vec<&str> = back.rules.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(wire_ids, ids, "{at}: rule order on the wire");
            assert_eq!(back_ids, ids, "{at}: rule order after the round trip");

            let weights = split_weights(domain_serves(flag));
            assert_eq!(
                wire_split_weights(&wire),
                weights,
                "{at}: weight order on the wire"
            );
            assert_eq!(
                split_weights(domain_serves(&back)),
                weights,
                "{at}: weight order after the round trip"
            );
            splits += weights.len();
            flags += 1;
        }

        for segment in &document.segments {
            let at = format!("{file}: segment {}", segment.key);
            let wire = over_the_wire(&pb::Segment::from(segment));
            let back = Segment::try_from(wire).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(back, segment_as_received(segment), "{at}");
            segments += 1;
        }

        // The whole environment at once.
        let wire = over_the_wire(&pb::Document::from(&document));
        let back = Document::try_from(wire).unwrap_or_else(|e| panic!("{file}: {e}"));
        let expected = Document {
            environment: document.environment.clone(),
            flags: document.flags.iter().map(flag_as_received).collect(),
            segments: document.segments.iter().map(segment_as_received).collect(),
        };
        assert_eq!(back, expected, "{file}: document");
        // What a receiver does next: validate and compile it, as any document.
        flagstaff_engine::Snapshot::from_document(back)
            .unwrap_or_else(|e| panic!("{file}: the received document does not validate: {e}"));
    }

    println!(
        "{} files: {flags} flags ({splits} splits, {renumbered} with a whole number written \
         as a fraction), {segments} segments",
        files.len()
    );
    assert!(flags > 100, "only {flags} flags round-tripped");
    assert!(segments > 0, "no segment round-tripped");
    assert!(splits > 0, "no split round-tripped");
}

// ---------------------------------------------------------------------------------------------
// Values.

fn flag_with_variants(kind: &str, variants: Value) -> Flag {
    let first = variants
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("a variant");
    flag_from_value(&json!({
        "key": "f",
        "kind": kind,
        "variants": variants,
        "off_variant": first,
        "enabled": true,
        "default": { "variant": first },
    }))
    .expect("a flag document")
}

fn round_trip(flag: &Flag) -> Flag {
    Flag::try_from(over_the_wire(&pb::Flag::from(flag))).expect("converts back")
}

fn number(value: &Value) -> &Number {
    match value {
        Value::Number(n) => n,
        other => panic!("not a number: {other}"),
    }
}

#[test]
fn numbers_keep_integers_as_integers() {
    let flag = flag_with_variants(
        "number",
        json!({ "int": 18, "neg": -7, "frac": 1.5, "whole": 42.0, "tiny": 1e-7, "big": 1e300 }),
    );
    let back = round_trip(&flag);
    let get = |key: &str| back.variants.get(key).expect("the variant").clone();

    assert_eq!(get("int").to_string(), "18");
    assert!(number(&get("int")).is_u64());
    assert_eq!(get("neg").to_string(), "-7");
    assert!(number(&get("neg")).is_i64());
    assert_eq!(get("frac"), json!(1.5));
    assert!(number(&get("frac")).is_f64());
    // A whole number written with a fraction is the same number, now an integer.
    assert_eq!(get("whole").to_string(), "42");
    assert_eq!(get("tiny"), json!(1e-7));
    assert_eq!(get("big"), json!(1e300));
}

#[test]
fn integers_a_double_cannot_hold_travel_as_json_text() {
    let flag = flag_with_variants(
        "json",
        json!({ "max": u64::MAX, "min": i64::MIN, "safe": 9_007_199_254_740_992_u64 }),
    );
    let wire = pb::Flag::from(&flag);
    let value = |i: usize| wire.variants[i].value.clone().and_then(|v| v.value);
    assert_eq!(
        value(0),
        Some(pb::variant_value::Value::JsonValue(
            "18446744073709551615".to_owned()
        ))
    );
    assert_eq!(
        value(1),
        Some(pb::variant_value::Value::JsonValue(
            "-9223372036854775808".to_owned()
        ))
    );
    assert_eq!(
        value(2),
        Some(pb::variant_value::Value::NumberValue(
            9_007_199_254_740_992.0
        ))
    );
    assert_eq!(round_trip(&flag), flag);
}

#[test]
fn json_values_keep_their_exact_form() {
    let flag = flag_with_variants(
        "json",
        json!({
            "object": { "z": 1, "a": [1.0, 2.5, null, "x"], "m": { "deep": true } },
            "list": [3, 2, 1],
            "null": null,
            "text": "plain",
            "flag": false,
            "n": 3,
        }),
    );
    let wire = pb::Flag::from(&flag);
    use pb::variant_value::Value as V;
    let alternatives: Vec<_> = wire
        .variants
        .iter()
        .map(|v| v.value.clone().and_then(|v| v.value))
        .collect();
    assert_eq!(
        alternatives,
        vec![
            Some(V::JsonValue(
                r#"{"z":1,"a":[1.0,2.5,null,"x"],"m":{"deep":true}}"#.to_owned()
            )),
            Some(V::JsonValue("[3,2,1]".to_owned())),
            Some(V::JsonValue("null".to_owned())),
            Some(V::StringValue("plain".to_owned())),
            Some(V::BoolValue(false)),
            Some(V::NumberValue(3.0)),
        ]
    );
    // Nested numbers keep their form too (`1.0` stays a float): they travel as JSON text.
    assert_eq!(round_trip(&flag), flag);
}

#[test]
fn readers_accept_any_json_text_and_default_bucket_by() {
    let mut wire = pb::Flag::from(&flag_with_variants("json", json!({ "a": 1, "b": 2 })));
    wire.variants[0].value = Some(pb::VariantValue {
        value: Some(pb::variant_value::Value::JsonValue(" true ".to_owned())),
    });
    wire.default = Some(pb::Serve {
        serve: Some(pb::serve::Serve::Split(pb::Split {
            bucket_by: None,
            weights: vec![pb::Weight {
                variant: "a".to_owned(),
                weight: 100_000,
            }],
        })),
    });
    let flag = Flag::try_from(wire).expect("converts");
    assert_eq!(flag.variants.get("a"), Some(&json!(true)));
    match flag.default {
        Serve::Split(split) => assert_eq!(split.bucket_by, "key"),
        Serve::Variant(v) => panic!("expected a split, got variant {v}"),
    }
}

#[test]
fn optional_fields_keep_absent_apart_from_empty() {
    let mut flag = flag_with_variants("boolean", json!({ "on": true, "off": false }));
    flag.salt = Some(String::new());
    flag.description = Some(String::new());
    flag.owner = None;
    flag.version = Some(0);
    let back = round_trip(&flag);
    assert_eq!(back.salt.as_deref(), Some(""));
    assert_eq!(back.description.as_deref(), Some(""));
    assert_eq!(back.owner, None);
    assert_eq!(back.version, Some(0));
    flag.version = None;
    assert_eq!(round_trip(&flag).version, None);
}

#[test]
fn client_side_crosses_the_wire_both_ways() {
    let mut flag = flag_with_variants("boolean", json!({ "on": true, "off": false }));
    assert!(!pb::Flag::from(&flag).client_side);
    assert!(!round_trip(&flag).client_side);
    flag.client_side = true;
    assert!(pb::Flag::from(&flag).client_side);
    assert_eq!(round_trip(&flag), flag);
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// A flag touching every message: a prerequisite, conditions with values, a split.
fn sample_flag() -> pb::Flag {
    let flag = flag_from_value(&json!({
        "key": "checkout-v2",
        "kind": "boolean",
        "variants": { "on": true, "off": false },
        "off_variant": "off",
        "enabled": true,
        "prerequisites": [{ "flag": "payments", "variants": ["on"] }],
        "rules": [
            {
                "id": "eu",
                "conditions": [
                    { "attribute": "country", "op": "in", "values": ["NL", 31] },
                    { "op": "in_segment", "values": ["staff"] },
                ],
                "serve": { "split": { "weights": [
                    { "variant": "on", "weight": 10000 },
                    { "variant": "off", "weight": 90000 },
                ] } },
            },
        ],
        "default": { "variant": "off" },
    }))
    .expect("a flag document");
    pb::Flag::from(&flag)
}

fn flag_error(wire: pb::Flag) -> ConvertError {
    Flag::try_from(wire).expect_err("the conversion fails")
}

#[test]
fn the_sample_flag_converts() {
    assert!(Flag::try_from(sample_flag()).is_ok());
}

#[test]
fn an_unspecified_op_is_named() {
    let mut wire = sample_flag();
    wire.rules[0].conditions[1].op = pb::Op::Unspecified as i32;
    let err = flag_error(wire);
    assert!(matches!(err, ConvertError::Unspecified { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "flags[checkout-v2].rules[0].conditions[1].op: must be set, got OP_UNSPECIFIED"
    );
}

#[test]
fn an_unknown_op_is_named() {
    let mut wire = sample_flag();
    wire.rules[0].conditions[0].op = 99;
    let err = flag_error(wire);
    assert!(matches!(
        err,
        ConvertError::UnknownEnumValue { value: 99, .. }
    ));
    assert_eq!(
        err.to_string(),
        "flags[checkout-v2].rules[0].conditions[0].op: unknown value 99"
    );
}

#[test]
fn an_unspecified_kind_is_named() {
    let mut wire = sample_flag();
    wire.kind = pb::Kind::Unspecified as i32;
    assert_eq!(
        flag_error(wire).to_string(),
        "flags[checkout-v2].kind: must be set, got KIND_UNSPECIFIED"
    );
    let mut wire = sample_flag();
    wire.kind = -3;
    assert_eq!(
        flag_error(wire).to_string(),
        "flags[checkout-v2].kind: unknown value -3"
    );
}

#[test]
fn a_missing_default_is_named() {
    let mut wire = sample_flag();
    wire.default = None;
    let err = flag_error(wire);
    assert!(matches!(
        err,
        ConvertError::MissingField {
            field: "default",
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        r#"flags[checkout-v2]: missing required field "default""#
    );
}

#[test]
fn a_missing_rule_serve_is_named() {
    let mut wire = sample_flag();
    wire.rules[0].serve = None;
    assert_eq!(
        flag_error(wire).to_string(),
        r#"flags[checkout-v2].rules[0]: missing required field "serve""#
    );
}

#[test]
fn an_empty_serve_is_named() {
    let mut wire = sample_flag();
    wire.default = Some(pb::Serve { serve: None });
    let err = flag_error(wire);
    assert!(matches!(err, ConvertError::EmptyOneof { .. }));
    assert_eq!(
        err.to_string(),
        "flags[checkout-v2].default: must have one of variant or split, got none"
    );
}

#[test]
fn a_serve_sent_alone_round_trips_and_an_empty_one_is_named() {
    let flag = Flag::try_from(sample_flag()).expect("the sample flag converts");
    for serve in domain_serves(&flag) {
        let wire = over_the_wire(&pb::Serve::from(&serve));
        assert_eq!(Serve::try_from(wire).expect("converts back"), serve);
    }
    let err = Serve::try_from(pb::Serve { serve: None }).expect_err("an empty serve");
    assert_eq!(
        err.to_string(),
        "serve: must have one of variant or split, got none"
    );
}

#[test]
fn a_key_patch_round_trips() {
    let patch = KeyPatch {
        segment: "beta-users".to_owned(),
        add_included: vec!["u1".to_owned(), "u2".to_owned()],
        remove_included: vec!["u3".to_owned()],
        add_excluded: vec![],
        remove_excluded: vec!["u4".to_owned()],
    };
    let wire = over_the_wire(&pb::SegmentKeyPatch::from(&patch));
    assert_eq!(wire.add_included, patch.add_included);
    assert_eq!(KeyPatch::from(wire), patch);
}

#[test]
fn a_missing_variant_value_is_named() {
    let mut wire = sample_flag();
    wire.variants[1].value = None;
    assert_eq!(
        flag_error(wire).to_string(),
        r#"flags[checkout-v2].variants[1]: missing required field "value""#
    );

    let mut wire = sample_flag();
    wire.variants[0].value = Some(pb::VariantValue { value: None });
    assert_eq!(
        flag_error(wire).to_string(),
        "flags[checkout-v2].variants[0].value: must have one of bool_value, string_value, \
         number_value or json_value, got none"
    );
}

#[test]
fn json_text_that_does_not_parse_is_named() {
    for text in ["{oops", "", "1 2", "{\"a\": 1"] {
        let mut wire = sample_flag();
        wire.variants[0].value = Some(pb::VariantValue {
            value: Some(pb::variant_value::Value::JsonValue(text.to_owned())),
        });
        let err = flag_error(wire);
        assert!(matches!(err, ConvertError::InvalidJson { .. }), "{text:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(
                "flags[checkout-v2].variants[0].value.json_value: invalid JSON text: "
            ),
            "{text:?}: {message}"
        );
    }
}

#[test]
fn numbers_that_are_not_finite_are_named() {
    let mut wire = sample_flag();
    wire.variants[0].value = Some(pb::VariantValue {
        value: Some(pb::variant_value::Value::NumberValue(f64::NAN)),
    });
    let err = flag_error(wire);
    assert!(matches!(err, ConvertError::NotFinite { .. }));
    assert_eq!(
        err.to_string(),
        "flags[checkout-v2].variants[0].value.number_value: NaN is not a finite number"
    );

    let mut wire = sample_flag();
    wire.rules[0].conditions[0].values[1].value =
        Some(pb::condition_value::Value::NumberValue(f64::NEG_INFINITY));
    assert_eq!(
        flag_error(wire).to_string(),
        "flags[checkout-v2].rules[0].conditions[0].values[1].number_value: -inf is not a \
         finite number"
    );
}

#[test]
fn an_empty_condition_value_is_named() {
    let mut wire = sample_flag();
    wire.rules[0].conditions[0].values[0].value = None;
    assert_eq!(
        flag_error(wire).to_string(),
        "flags[checkout-v2].rules[0].conditions[0].values[0]: must have one of bool_value, \
         string_value or number_value, got none"
    );
}

#[test]
fn a_condition_value_with_no_wire_form_is_rejected_on_receipt() {
    // Validation rejects non-scalar condition values; a document not yet validated may hold
    // one, and the receiver names it rather than guessing.
    let mut flag = Flag::try_from(sample_flag()).expect("converts");
    flag.rules[0].conditions[0].values[0] = json!(["NL"]);
    let wire = pb::Flag::from(&flag);
    assert_eq!(wire.rules[0].conditions[0].values[0].value, None);
    assert!(matches!(
        flag_error(wire),
        ConvertError::EmptyOneof { path, .. }
            if path == "flags[checkout-v2].rules[0].conditions[0].values[0]"
    ));
}

#[test]
fn segment_errors_are_named() {
    let segment = flagstaff_engine::segment_from_value(&json!({
        "key": "staff",
        "included": ["u1"],
        "rules": [
            { "conditions": [{ "attribute": "email", "op": "ends_with", "values": ["@x.io"] }] },
            { "conditions": [{ "attribute": "age", "op": "gte", "values": [18] }] },
        ],
    }))
    .expect("a segment document");
    let mut wire = pb::Segment::from(&segment);
    assert_eq!(Segment::try_from(wire.clone()).as_ref(), Ok(&segment));

    wire.rules[1].conditions[0].op = pb::Op::Unspecified as i32;
    assert_eq!(
        Segment::try_from(wire).expect_err("fails").to_string(),
        "segments[staff].rules[1].conditions[0].op: must be set, got OP_UNSPECIFIED"
    );
}

#[test]
fn document_errors_name_the_flag_by_key_or_index() {
    let good = sample_flag();
    let mut bad = sample_flag();
    bad.key = String::new();
    bad.kind = pb::Kind::Unspecified as i32;
    let document = pb::Document {
        environment: "production".to_owned(),
        flags: vec![good.clone(), bad],
        segments: vec![],
    };
    assert_eq!(
        Document::try_from(document).expect_err("fails").to_string(),
        "flags[1].kind: must be set, got KIND_UNSPECIFIED"
    );

    let mut bad = good.clone();
    bad.key = "other".to_owned();
    bad.rules[0].serve = Some(pb::Serve { serve: None });
    let document = pb::Document {
        environment: "production".to_owned(),
        flags: vec![good, bad],
        segments: vec![],
    };
    assert_eq!(
        Document::try_from(document).expect_err("fails").to_string(),
        "flags[other].rules[0].serve: must have one of variant or split, got none"
    );
}

// ---------------------------------------------------------------------------------------------
// Evaluation contexts and reasons.

#[test]
fn contexts_survive_the_wire_in_order() {
    let context = Context::new("user-1")
        .with("country", "NL")
        .with("age", 41.5)
        .with("beta", true)
        .with(
            "groups",
            vec![
                AttrValue::String("staff".to_owned()),
                AttrValue::Number(7.0),
                AttrValue::List(vec![AttrValue::Bool(false)]),
            ],
        );
    let wire = over_the_wire(&pb::Context::from(&context));
    let names: Vec<_> = wire.attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["country", "age", "beta", "groups"]);
    assert_eq!(Context::from(&wire).into_owned(), context);
}

#[test]
fn wire_contexts_read_like_json_contexts() {
    use pb::attribute_value::Value as V;
    let value = |v: V| Some(pb::AttributeValue { value: Some(v) });
    let attribute = |name: &str, value: Option<pb::AttributeValue>| pb::Attribute {
        name: name.to_owned(),
        value,
    };
    let wire = pb::Context {
        key: "user-1".to_owned(),
        attributes: vec![
            attribute("country", value(V::StringValue("NL".to_owned()))),
            // A value with nothing set is missing, like JSON null, and replaces nothing.
            attribute("country", Some(pb::AttributeValue { value: None })),
            attribute("plan", None),
            // The key is the context key.
            attribute("key", value(V::StringValue("other".to_owned()))),
            attribute(
                "tags",
                value(V::ListValue(pb::AttributeList {
                    values: vec![
                        pb::AttributeValue { value: None },
                        pb::AttributeValue {
                            value: Some(V::StringValue("a".to_owned())),
                        },
                    ],
                })),
            ),
            attribute("age", value(V::NumberValue(30.0))),
            attribute("age", value(V::NumberValue(31.0))),
        ],
    };
    let context = Context::from(&wire);
    assert_eq!(context.key(), "user-1");
    assert_eq!(context.get("key"), Some(AttrRef::Str("user-1")));
    assert_eq!(context.get("country"), Some(AttrRef::Str("NL")));
    assert_eq!(context.get("plan"), None);
    assert_eq!(
        context.get("tags"),
        Some(AttrRef::List(&[AttrValue::String("a".to_owned())]))
    );
    assert_eq!(context.get("age"), Some(AttrRef::Number(31.0)));
    assert_eq!(context.attributes().count(), 3);
}

#[test]
fn reasons_reach_the_wire_whole() {
    let reason = |kind: pb::ReasonKind| pb::Reason {
        kind: kind as i32,
        ..pb::Reason::default()
    };
    assert_eq!(pb::Reason::from(Reason::Off), reason(pb::ReasonKind::Off));
    assert_eq!(
        pb::Reason::from(Reason::Default),
        reason(pb::ReasonKind::Default)
    );
    assert_eq!(
        pb::Reason::from(Reason::RuleMatch { index: 2, id: "eu" }),
        pb::Reason {
            rule_index: 2,
            rule_id: "eu".to_owned(),
            ..reason(pb::ReasonKind::RuleMatch)
        }
    );
    assert_eq!(
        pb::Reason::from(Reason::PrerequisiteFailed {
            prerequisite: "payments"
        }),
        pb::Reason {
            prerequisite: "payments".to_owned(),
            ..reason(pb::ReasonKind::PrerequisiteFailed)
        }
    );
    for (error, wire) in [
        (ErrorKind::FlagNotFound, pb::ErrorKind::FlagNotFound),
        (ErrorKind::TypeMismatch, pb::ErrorKind::TypeMismatch),
        (
            ErrorKind::MissingBucketingAttribute,
            pb::ErrorKind::MissingBucketingAttribute,
        ),
        (ErrorKind::ClientNotReady, pb::ErrorKind::ClientNotReady),
    ] {
        assert_eq!(
            pb::Reason::from(Reason::Error(error)),
            pb::Reason {
                error_kind: wire as i32,
                ..reason(pb::ReasonKind::Error)
            }
        );
    }
}
