//! One codec (DESIGN.md section 4a): generated flags and segments, sent through the wire types to the real
//! server, are either refused with INVALID_ARGUMENT (or RESOURCE_EXHAUSTED) changing nothing,
//! or read back exactly as accepted (the canonical document the server validated), before and
//! after a restart on the same data directory.
//!
//! The generator reaches for what broke servers before: duplicate variant keys, JSON nested
//! past every limit, duplicate JSON members, NUL and odd Unicode, strings at and over their
//! limits, numbers JSON cannot hold. `FLAGSTAFF_CODEC_CASES` runs more cases than the default
//! (e.g. 2000 for a longer run); `FLAGSTAFF_CODEC_SEED` picks another sequence.

use flagstaff_engine::Flag;
use flagstaff_proto::pb;
use flagstaff_tests::{Admin, TestServer};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tonic::Code;

use super::fixtures::{create_environment, revision};

/// Cases run by default: enough to meet every kind of value each run, in seconds.
const DEFAULT_CASES: usize = 100;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9 ._-]{0,12}",
        1 => Just("\u{0}".to_owned()),
        1 => Just("é\u{10FFFF}\u{202e}\u{FEFF}".to_owned()),
        1 => "\\PC{0,8}",
        1 => Just("x".repeat(4096)),
        1 => Just("x".repeat(4097)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9][a-z0-9._-]{0,10}",
        1 => Just("k".repeat(128)),
        1 => Just("k".repeat(129)),
        1 => Just("Not A Key".to_owned()),
        1 => Just(String::new()),
    ]
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0usize..=70).prop_map(nested),
        1 => (120usize..=130).prop_map(nested),
        1 => Just(r#"{"a": 1, "a": 2}"#.to_owned()),
        1 => Just(r#"{"b": [true, null, "\u0000"], "c": {"d": 1.5e300}}"#.to_owned()),
        1 => Just("123456789012345678901234567890".to_owned()),
        1 => Just("not json".to_owned()),
        2 => text().prop_map(|s| serde_json::Value::String(s).to_string()),
    ]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6f64..1e6,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(9_007_199_254_740_993.0),
        1 => Just(-0.0),
    ]
}

fn variant_value(kind: pb::Kind) -> BoxedStrategy<pb::VariantValue> {
    use pb::variant_value::Value as V;
    let value = match kind {
        pb::Kind::Boolean => prop_oneof![
            4 => any::<bool>().prop_map(V::BoolValue),
            1 => text().prop_map(V::StringValue),
        ]
        .boxed(),
        pb::Kind::String => prop_oneof![
            4 => text().prop_map(V::StringValue),
            1 => number().prop_map(V::NumberValue),
        ]
        .boxed(),
        pb::Kind::Number => number().prop_map(V::NumberValue).boxed(),
        _ => json_text().prop_map(V::JsonValue).boxed(),
    };
    value
        .prop_map(|value| pb::VariantValue { value: Some(value) })
        .boxed()
}

fn condition() -> impl Strategy<Value = pb::Condition> {
    use pb::condition_value::Value as V;
    let value = prop_oneof![
        3 => text().prop_map(V::StringValue),
        1 => number().prop_map(V::NumberValue),
        1 => any::<bool>().prop_map(V::BoolValue),
        1 => Just(V::StringValue("(?:\\w{60}){3}".to_owned())),
        1 => Just(V::StringValue("1.2.3".to_owned())),
    ];
    (
        prop_oneof![4 => text().prop_map(Some), 1 => Just(None)],
        1i32..=16,
        prop::collection::vec(value, 0..3),
        any::<bool>(),
    )
        .prop_map(|(attribute, op, values, negate)| pb::Condition {
            attribute,
            op,
            values: values
                .into_iter()
                .map(|value| pb::ConditionValue { value: Some(value) })
                .collect(),
            negate,
        })
}

/// A flag as a client might send it, `key` aside.
fn flag() -> impl Strategy<Value = pb::Flag> {
    let kind = prop::sample::select(vec![
        pb::Kind::Boolean,
        pb::Kind::String,
        pb::Kind::Number,
        pb::Kind::Json,
    ]);
    kind.prop_flat_map(|kind| {
        let names = prop::sample::select(vec!["on", "off", "a", "b", "Bad"]);
        let variants = prop::collection::vec((names, variant_value(kind)), 1..4);
        (
            Just(kind),
            variants,
            prop::option::of(text()),
            prop::collection::vec(text(), 0..3),
            prop::option::of(text()),
            prop::collection::vec(condition(), 0..3),
            prop::option::of(key()),
            any::<bool>(),
            any::<bool>(),
        )
    })
    .prop_map(
        |(kind, variants, description, tags, owner, conditions, salt, enabled, client_side)| {
            let keys: Vec<String> = variants.iter().map(|(k, _)| (*k).to_owned()).collect();
            let first = keys[0].clone();
            let last = keys[keys.len() - 1].clone();
            pb::Flag {
                key: String::new(),
                description,
                kind: kind as i32,
                variants: variants
                    .into_iter()
                    .map(|(key, value)| pb::Variant {
                        key: key.to_owned(),
                        value: Some(value),
                    })
                    .collect(),
                off_variant: first.clone(),
                enabled,
                salt,
                prerequisites: vec![],
                rules: if conditions.is_empty() {
                    vec![]
                } else {
                    vec![pb::Rule {
                        id: "r".into(),
                        conditions,
                        serve: Some(pb::Serve {
                            serve: Some(pb::serve::Serve::Variant(last)),
                        }),
                    }]
                },
                default: Some(pb::Serve {
                    serve: Some(pb::serve::Serve::Variant(first)),
                }),
                tags,
                owner,
                temporary: false,
                client_side,
                version: None,
            }
        },
    )
}

/// A segment as a client might send it, `key` aside: key lists with repeats, empty keys, NUL
/// and long keys; rules with conditions.
fn segment() -> impl Strategy<Value = pb::Segment> {
    let context_key = prop_oneof![
        8 => "[a-z0-9-]{1,8}",
        1 => Just(String::new()),
        1 => Just("a\u{0}b".to_owned()),
        1 => Just("k".repeat(257)),
        1 => "\\PC{1,6}",
    ];
    (
        prop::option::of(text()),
        prop::collection::vec(context_key.clone(), 0..6),
        prop::collection::vec(context_key, 0..3),
        prop::collection::vec(prop::collection::vec(condition(), 0..3), 0..2),
    )
        .prop_map(|(description, included, excluded, rules)| pb::Segment {
            key: String::new(),
            description,
            included,
            excluded,
            rules: rules
                .into_iter()
                .map(|conditions| pb::SegmentRule { conditions })
                .collect(),
            version: None,
        })
}

/// Every flag of `production` as the server answers GetFlag, by key.
async fn read_all(admin: &mut Admin, keys: &[String]) -> Vec<pb::Flag> {
    let mut flags = Vec::new();
    for key in keys {
        flags.push(
            admin
                .get_flag(pb::GetFlagRequest {
                    environment: "production".into(),
                    key: key.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("flag {key} reads back: {e}"))
                .into_inner()
                .flag
                .expect("flag"),
        );
    }
    flags
}

/// Every segment of `production` named, as the server answers GetSegment.
async fn read_segments(admin: &mut Admin, keys: &[String]) -> Vec<pb::Segment> {
    let mut segments = Vec::new();
    for key in keys {
        segments.push(
            admin
                .get_segment(pb::GetSegmentRequest {
                    environment: "production".into(),
                    key: key.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("segment {key} reads back: {e}"))
                .into_inner()
                .segment
                .expect("segment"),
        );
    }
    segments
}

/// Fails naming the first flag read back unlike the one expected.
fn same(read: &[pb::Flag], expected: &[pb::Flag], when: &str) {
    assert_eq!(read.len(), expected.len(), "{when}");
    for (read, expected) in read.iter().zip(expected) {
        assert!(
            read == expected,
            "{when}: flag {} reads back as\n{read:?}\nnot as accepted:\n{expected:?}",
            expected.key
        );
    }
}

#[tokio::test]
async fn what_is_accepted_reads_back_exactly_before_and_after_a_restart() {
    let cases = std::env::var("FLAGSTAFF_CODEC_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed: u64 = std::env::var("FLAGSTAFF_CODEC_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x5eed);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );

    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let strategy = (flag(), key(), segment());
    let mut accepted: Vec<(String, pb::Flag)> = Vec::new();
    let mut accepted_segments: Vec<(String, pb::Segment)> = Vec::new();
    let mut refused = 0;
    for case in 0..cases {
        let (mut sent, key, mut sent_segment) =
            strategy.new_tree(&mut runner).expect("a value").current();
        sent_segment.key = format!("s-{case}");
        let before = revision(&mut admin, "production").await;
        match admin
            .create_segment(pb::CreateSegmentRequest {
                environment: "production".into(),
                segment: Some(sent_segment.clone()),
                ..Default::default()
            })
            .await
        {
            Ok(response) => {
                let canonical = flagstaff_engine::Segment::try_from(sent_segment.clone())
                    .unwrap_or_else(|e| panic!("case {case}: accepted, but does not convert: {e}"));
                let expected = pb::Segment {
                    version: Some(response.get_ref().revision),
                    ..pb::Segment::from(&canonical)
                };
                accepted_segments.push((sent_segment.key.clone(), expected));
            }
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument | Code::ResourceExhausted
                    ),
                    "case {case}: {status:?} for {sent_segment:?}"
                );
                assert_eq!(
                    revision(&mut admin, "production").await,
                    before,
                    "case {case}: a refused write changes nothing"
                );
            }
        }
        // A key that is valid and new, or one that is not a key at all.
        sent.key = if flagstaff_engine::is_valid_key(&key) {
            format!("{key}-{case}")
        } else {
            key
        };
        let before = revision(&mut admin, "production").await;
        let result = admin
            .create_flag(pb::CreateFlagRequest {
                environment: "production".into(),
                flag: Some(sent.clone()),
                ..Default::default()
            })
            .await;
        match result {
            Ok(response) => {
                // What was accepted: the canonical document of what was sent.
                let canonical = Flag::try_from(sent.clone()).unwrap_or_else(|e| {
                    panic!("case {case}: accepted, but does not convert: {e}: {sent:?}")
                });
                let expected = pb::Flag {
                    version: Some(response.get_ref().revision),
                    ..pb::Flag::from(&canonical)
                };
                assert_eq!(
                    response.into_inner().flag.as_ref(),
                    Some(&expected),
                    "case {case}: the response holds what was accepted"
                );
                accepted.push((sent.key.clone(), expected));
            }
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument | Code::ResourceExhausted
                    ),
                    "case {case}: {status:?} for {sent:?}"
                );
                assert!(status.message().len() < 4200, "case {case}: {status:?}");
                assert_eq!(
                    revision(&mut admin, "production").await,
                    before,
                    "case {case}: a refused write changes nothing"
                );
                refused += 1;
            }
        }
    }
    assert!(
        !accepted.is_empty() && refused > 0,
        "the generator meets both outcomes: {} accepted, {refused} refused",
        accepted.len()
    );

    let keys: Vec<String> = accepted.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<pb::Flag> = accepted.into_iter().map(|(_, f)| f).collect();
    same(&read_all(&mut admin, &keys).await, &expected, "as accepted");
    let segment_keys: Vec<String> = accepted_segments.iter().map(|(k, _)| k.clone()).collect();
    let expected_segments: Vec<pb::Segment> =
        accepted_segments.into_iter().map(|(_, s)| s).collect();
    assert!(!expected_segments.is_empty(), "some segments are accepted");
    assert_eq!(
        read_segments(&mut admin, &segment_keys).await,
        expected_segments
    );
    let exported = admin
        .export(pb::ExportRequest {
            environment: "production".into(),
        })
        .await
        .expect("exported")
        .into_inner();

    let data_dir = server.stop().await;
    let server = TestServer::builder().data_dir(data_dir).start().await;
    let mut admin = server.admin().await;
    same(
        &read_all(&mut admin, &keys).await,
        &expected,
        "after a restart",
    );
    let reexported = admin
        .export(pb::ExportRequest {
            environment: "production".into(),
        })
        .await
        .expect("exported")
        .into_inner();
    assert_eq!(reexported, exported);
}
