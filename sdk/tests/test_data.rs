//! TestData: flags for unit tests, changed live, seen by every client at once.

use flagstaff::{Context, ErrorKind, EvaluationReason, TestData};
use serde_json::json;

#[test]
fn every_client_sees_each_change_at_once() {
    let data = TestData::new();
    let (a, b) = (data.client(), data.client());
    let ctx = Context::new("user-1");
    assert_eq!(
        a.bool_detail("checkout-v2", &ctx, false).reason,
        EvaluationReason::Error(ErrorKind::FlagNotFound)
    );
    data.set_bool("checkout-v2", true);
    data.set_string("banner", "Hello");
    data.set_number("page-size", 25.0);
    data.set_json("limits", json!({"max": 3}));
    for client in [&a, &b] {
        assert!(client.bool_value("checkout-v2", &ctx, false));
        assert_eq!(client.string_value("banner", &ctx, "?"), "Hello");
        assert_eq!(client.number_value("page-size", &ctx, 0.0), 25.0);
        assert_eq!(
            client.json_value("limits", &ctx, json!(null)),
            json!({"max": 3})
        );
    }
    data.set_bool("checkout-v2", false);
    assert!(!b.bool_value("checkout-v2", &ctx, true));
    data.remove("checkout-v2").expect("removed");
    assert!(a.bool_value("checkout-v2", &ctx, true), "the default again");
}

#[test]
fn whole_documents_with_rules_and_segments_work_and_bad_ones_are_refused() {
    let data = TestData::new();
    let client = data.client();
    data.set_flag_text(
        r#"{"environment": "test",
            "segments": [{"key": "beta", "included": ["user-7"]}],
            "flags": [{"key": "search", "kind": "boolean",
                       "variants": {"on": true, "off": false}, "off_variant": "off",
                       "enabled": true, "default": {"variant": "off"},
                       "rules": [{"id": "beta", "conditions": [{"op": "in_segment", "values": ["beta"]}],
                                  "serve": {"variant": "on"}}]}]}"#,
    )
    .expect("valid");
    assert!(client.bool_value("search", &Context::new("user-7"), false));
    assert!(!client.bool_value("search", &Context::new("user-8"), true));

    let err = data
        .set_flag_text(r#"{"key": "x", "kind": "boolean", "variants": {"on": 1}}"#)
        .expect_err("invalid");
    assert!(err.to_string().contains("off_variant"), "{err}");
    // Nothing changed.
    assert!(client.bool_value("search", &Context::new("user-7"), false));
}
