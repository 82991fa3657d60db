//! The client serves a bootstrap export file and swaps snapshots atomically.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use flagstaff::{Client, Context, Error, ErrorKind, EvaluationReason, Reason, Snapshot};

fn two_flags(value: bool) -> String {
    // Two flags changed together: a reader must never see one updated and not the other.
    format!(
        r#"{{"environment": "test", "flags": [
            {{"key": "a", "kind": "boolean", "variants": {{"on": true, "off": false}},
              "off_variant": "off", "enabled": true, "default": {{"variant": "{v}"}}}},
            {{"key": "b", "kind": "boolean", "variants": {{"on": true, "off": false}},
              "off_variant": "off", "enabled": true, "default": {{"variant": "{v}"}}}}]}}"#,
        v = if value { "on" } else { "off" }
    )
}

#[test]
fn serves_the_bundled_example_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/production.yaml");
    let client = Client::from_export_file(path).expect("valid example");
    let staff = Context::new("user-1");
    assert!(client.bool_value("checkout-v2", &staff, false));
    client.with_bool_detail("checkout-v2", &staff, false, |d| {
        assert_eq!(
            d.reason,
            Reason::RuleMatch {
                index: 0,
                id: "staff"
            }
        );
    });
    let new_app = Context::new("u").with("app_version", "2.3.1");
    assert_eq!(client.number_value("search-page-size", &new_app, 0.0), 50.0);
    assert_eq!(
        client.string_value(
            "welcome-banner",
            &Context::new("x").with("plan", "enterprise"),
            "?"
        ),
        "Welcome"
    );
    assert!(
        !client.bool_value("maintenance-mode", &staff, true),
        "disabled flag serves its off variant"
    );
    assert!(
        client.bool_value("no-such-flag", &staff, true),
        "missing flag serves the caller's default"
    );
}

#[test]
fn details_are_owned_and_say_why() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/production.yaml");
    let client = Client::from_export_file(path).expect("valid example");
    let staff = Context::new("user-1");
    let detail = client.bool_detail("checkout-v2", &staff, false);
    assert!(detail.value);
    assert_eq!(detail.variant.as_deref(), Some("on"));
    assert_eq!(
        detail.reason,
        EvaluationReason::RuleMatch {
            index: 0,
            id: "staff".into()
        }
    );
    assert_eq!(detail.reason.to_string(), "RULE_MATCH(0, staff)");
    let eu = client.bool_detail(
        "checkout-v2",
        &Context::new("someone").with("country", "NL"),
        false,
    );
    assert!(eu.bucket.is_some(), "a split decided it");

    let missing = client.string_detail("no-such-flag", &staff, "fallback");
    assert_eq!(missing.value, "fallback");
    assert_eq!(missing.variant, None);
    assert_eq!(
        missing.reason,
        EvaluationReason::Error(ErrorKind::FlagNotFound)
    );
    let mismatch = client.number_detail("checkout-v2", &staff, 7.0);
    assert_eq!(mismatch.value, 7.0);
    assert_eq!(mismatch.reason.to_string(), "ERROR(TYPE_MISMATCH)");
    let json = client.json_detail("no-such-flag", &staff, serde_json::json!({"a": 1}));
    assert_eq!(json.value, serde_json::json!({"a": 1}));
}

#[test]
fn a_missing_or_invalid_file_is_a_clear_error() {
    let err = Client::from_export_file("/nonexistent/flags.yaml").expect_err("missing");
    assert!(matches!(err, Error::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/flags.yaml: "),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "environment: test\nflags:\n  - key: x\n    kind: boolean\n",
    )
    .expect("write");
    let err = Client::from_export_file(&path).expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "invalid bootstrap document:\n\
         flags[x]: missing required field \"variants\"\n\
         flags[x]: missing required field \"off_variant\"\n\
         flags[x]: missing required field \"enabled\"\n\
         flags[x]: missing required field \"default\""
    );
}

#[test]
fn readers_never_see_half_of_a_swapped_snapshot() {
    let client = Client::from_export_text(&two_flags(false)).expect("valid");
    let snapshots = [
        Snapshot::from_text(&two_flags(false)).expect("valid"),
        Snapshot::from_text(&two_flags(true)).expect("valid"),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    // Each reader counts how many states it has observed both of; the writer keeps swapping
    // until every reader has seen both, so the test cannot pass with readers that never ran.
    let saw_both = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (client, stop, saw_both) = (client.clone(), stop.clone(), saw_both.clone());
            std::thread::spawn(move || {
                let ctx = Context::new("u");
                let mut seen = [0u64; 2];
                let mut reported = false;
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = client.snapshot();
                    let (a, b) = (
                        snapshot.bool_value("a", &ctx, false),
                        snapshot.bool_value("b", &ctx, false),
                    );
                    assert_eq!(a, b, "a reader saw half of a change");
                    seen[usize::from(a)] += 1;
                    if !reported && seen[0] > 0 && seen[1] > 0 {
                        reported = true;
                        saw_both.fetch_add(1, Ordering::Relaxed);
                    }
                }
                seen
            })
        })
        .collect();
    let mut swaps = 0usize;
    while saw_both.load(Ordering::Relaxed) < 2 && swaps < 50_000_000 {
        client.replace_snapshot(snapshots[swaps % 2].clone());
        swaps += 1;
        if swaps.is_multiple_of(1024) {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        let seen = reader.join().expect("reader");
        assert!(
            seen[0] > 0 && seen[1] > 0,
            "a reader never saw both states: {seen:?}"
        );
    }
}
