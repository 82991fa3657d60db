//! The OpenFeature provider, through the `open-feature` crate's client API: typed resolutions,
//! context mapping, reasons and error codes, readiness, and change events from the real server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flagstaff::openfeature::{FlagstaffProvider, ProviderEvent};
use flagstaff::TestData;
use flagstaff_tests::TestServer;
use open_feature::provider::{FeatureProvider, ProviderStatus};
use open_feature::{
    Client, EvaluationContext, EvaluationErrorCode, EvaluationReason, FlagMetadataValue,
    OpenFeature, Value,
};

use super::fixtures::*;

/// An OpenFeature client whose provider (registered under a name of its own, since the API is
/// a process-wide singleton) is `provider`.
async fn open_feature_client(provider: FlagstaffProvider) -> Client {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("flagstaff-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut api = OpenFeature::singleton_mut().await;
    api.set_named_provider(&name, provider).await;
    api.create_named_client(&name)
}

const FLAGS: &str = r#"
environment: test
flags:
  - key: checkout-v2
    kind: boolean
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: true
    rules:
      - id: eu
        conditions: [{ attribute: country, op: in, values: [NL, DE] }]
        serve: { variant: "on" }
      - id: big-spenders
        conditions: [{ attribute: orders, op: gt, values: [10] }]
        serve: { variant: "on" }
      - id: recent
        conditions: [{ attribute: signed_up, op: after, values: ["2026-01-01T00:00:00Z"] }]
        serve: { variant: "on" }
    default: { variant: "off" }
  - key: banner
    kind: string
    variants: { a: "Hello", b: "Welcome" }
    off_variant: a
    enabled: true
    default: { split: { bucket_by: key, weights: [{ variant: a, weight: 50000 }, { variant: b, weight: 50000 }] } }
  - key: team-banner
    kind: string
    variants: { a: "Hello", b: "Welcome" }
    off_variant: a
    enabled: true
    default: { split: { bucket_by: team, weights: [{ variant: a, weight: 0 }, { variant: b, weight: 100000 }] } }
  - key: limit
    kind: number
    variants: { low: 10, high: 2.5 }
    off_variant: low
    enabled: true
    rules:
      - id: fractional
        conditions: [{ attribute: plan, op: in, values: [fractional] }]
        serve: { variant: high }
    default: { variant: low }
  - key: theme
    kind: json
    variants: { dark: { background: black, contrast: 7 }, list: [1, 2] }
    off_variant: dark
    enabled: true
    rules:
      - id: lists
        conditions: [{ attribute: plan, op: in, values: [lists] }]
        serve: { variant: list }
    default: { variant: dark }
  - key: retired
    kind: boolean
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: false
    default: { variant: "on" }
"#;

fn user(key: &str) -> EvaluationContext {
    EvaluationContext::default().with_targeting_key(key)
}

#[tokio::test]
async fn typed_resolutions_map_context_reasons_and_errors() {
    let data = TestData::new();
    data.set_flag_text(FLAGS).expect("flags");
    let flags = open_feature_client(FlagstaffProvider::new(data.client())).await;

    // Context: targetingKey is the key; custom fields are attributes, typed.
    let nl = user("user-1").with_custom_field("country", "NL");
    let detail = flags
        .get_bool_details("checkout-v2", Some(&nl), None)
        .await
        .expect("resolved");
    assert!(detail.value);
    assert_eq!(detail.variant.as_deref(), Some("on"));
    assert_eq!(detail.reason, Some(EvaluationReason::TargetingMatch));
    assert_eq!(
        detail.flag_metadata.values.get("ruleId"),
        Some(&FlagMetadataValue::String("eu".into()))
    );
    let big = user("user-1").with_custom_field("orders", 11_i64);
    assert_eq!(
        flags.get_bool_value("checkout-v2", Some(&big), None).await,
        Ok(true)
    );
    let signed_up = time::OffsetDateTime::from_unix_timestamp(1_780_000_000).expect("a time");
    let recent = user("user-1").with_custom_field("signed_up", signed_up);
    assert_eq!(
        flags
            .get_bool_value("checkout-v2", Some(&recent), None)
            .await,
        Ok(true),
        "date-times are compared as instants"
    );
    let us = user("user-1").with_custom_field("country", "US");
    let detail = flags
        .get_bool_details("checkout-v2", Some(&us), None)
        .await
        .expect("resolved");
    assert_eq!(
        (detail.value, detail.reason),
        (false, Some(EvaluationReason::Default))
    );

    // A split: the same answer as the SDK's, reason SPLIT.
    let sdk = data.client();
    for key in ["user-1", "user-2", "user-3", "user-4"] {
        let detail = flags
            .get_string_details("banner", Some(&user(key)), None)
            .await
            .expect("resolved");
        let expected = sdk.string_value("banner", &flagstaff::Context::new(key), "");
        assert_eq!(detail.value, expected);
        assert_eq!(detail.reason, Some(EvaluationReason::Split));
    }

    // Numbers: as floats, and as integers when whole.
    assert_eq!(
        flags.get_float_value("limit", Some(&us), None).await,
        Ok(10.0)
    );
    assert_eq!(flags.get_int_value("limit", Some(&us), None).await, Ok(10));
    let fractional = user("u").with_custom_field("plan", "fractional");
    assert_eq!(
        flags
            .get_float_value("limit", Some(&fractional), None)
            .await,
        Ok(2.5)
    );
    let error = flags
        .get_int_value("limit", Some(&fractional), None)
        .await
        .expect_err("2.5 is not an integer");
    assert_eq!(error.code, EvaluationErrorCode::TypeMismatch);

    // JSON objects as structs; other JSON is not a struct.
    let theme = flags
        .get_struct_details::<open_feature::StructValue>("theme", Some(&us), None)
        .await
        .expect("resolved");
    assert_eq!(
        theme.value.fields.get("background"),
        Some(&Value::String("black".into()))
    );
    assert_eq!(theme.value.fields.get("contrast"), Some(&Value::Int(7)));
    let lists = user("u").with_custom_field("plan", "lists");
    let error = flags
        .get_struct_value::<open_feature::StructValue>("theme", Some(&lists), None)
        .await
        .expect_err("a list is not a struct");
    assert_eq!(error.code, EvaluationErrorCode::TypeMismatch);

    // Disabled flags serve their off variant.
    let detail = flags
        .get_bool_details("retired", Some(&us), None)
        .await
        .expect("resolved");
    assert_eq!(
        (detail.value, detail.reason),
        (false, Some(EvaluationReason::Disabled))
    );

    // Errors that leave the caller's default to OpenFeature.
    let error = flags
        .get_bool_value("no-such-flag", Some(&us), None)
        .await
        .expect_err("missing");
    assert_eq!(error.code, EvaluationErrorCode::FlagNotFound);
    let error = flags
        .get_string_value("checkout-v2", Some(&us), None)
        .await
        .expect_err("boolean, not string");
    assert_eq!(error.code, EvaluationErrorCode::TypeMismatch);
}

#[tokio::test]
async fn a_missing_bucketing_attribute_serves_the_off_variant_not_the_default() {
    let data = TestData::new();
    data.set_flag_text(FLAGS).expect("flags");
    let flags = open_feature_client(FlagstaffProvider::new(data.client())).await;

    // No targeting key: the split on `key` cannot bucket; Flagstaff serves the off variant.
    let detail = flags
        .get_string_details("banner", Some(&EvaluationContext::default()), None)
        .await
        .expect("a value, not an error");
    assert_eq!(detail.value, "Hello");
    assert_eq!(detail.variant.as_deref(), Some("a"));
    assert_eq!(detail.reason, Some(EvaluationReason::Error));
    assert_eq!(
        detail.flag_metadata.values.get("errorCode"),
        Some(&FlagMetadataValue::String(
            "MISSING_BUCKETING_ATTRIBUTE".into()
        ))
    );

    // A targeting key but no `team`: still the off variant, for the same reason.
    let detail = flags
        .get_string_details("team-banner", Some(&user("user-1")), None)
        .await
        .expect("a value, not an error");
    assert_eq!(
        (detail.value.as_str(), detail.reason),
        ("Hello", Some(EvaluationReason::Error))
    );
    assert_eq!(
        detail.flag_metadata.values.get("errorCode"),
        Some(&FlagMetadataValue::String(
            "MISSING_BUCKETING_ATTRIBUTE".into()
        ))
    );
    let team = user("user-1").with_custom_field("team", "payments");
    assert_eq!(
        flags
            .get_string_value("team-banner", Some(&team), None)
            .await,
        Ok("Welcome".to_owned())
    );
}

#[tokio::test]
async fn without_data_the_provider_is_not_ready() {
    // Nothing listens there: the client never gets data.
    let client = sdk_client("http://127.0.0.1:9".into(), "fs_sdk_none", "service");
    let provider = FlagstaffProvider::new(client).ready_timeout(Duration::from_millis(50));
    assert_eq!(provider.status(), ProviderStatus::NotReady);
    let flags = open_feature_client(provider).await;
    let error = flags
        .get_bool_value("checkout-v2", Some(&user("u")), None)
        .await
        .expect_err("no data");
    assert_eq!(error.code, EvaluationErrorCode::ProviderNotReady);
    assert!(!flags
        .get_bool_value("checkout-v2", Some(&user("u")), None)
        .await
        .unwrap_or(false));
}

#[tokio::test]
async fn live_changes_reach_openfeature_callers_with_a_configuration_changed_event() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    let token = sdk_token(&server, "service", "production").await;

    let client = sdk_client(server.endpoint(), &token, "service");
    let provider = FlagstaffProvider::new(client.clone());
    // A second provider over the same client, to read the status OpenFeature keeps to itself.
    let probe = FlagstaffProvider::new(client);
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let _events = provider.on_event(move |event| {
        let _ = tx.send(event.clone());
    });
    // set_provider initialises the provider: it waits until the client is ready.
    let flags = open_feature_client(provider).await;
    assert_eq!(probe.status(), ProviderStatus::Ready);
    let ctx = user("user-1");
    assert_eq!(
        flags.get_bool_value("checkout", Some(&ctx), None).await,
        Ok(false)
    );

    let revision = serve_on(&mut admin, "checkout", true).await;
    let event = tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event in time")
        .expect("listening");
    assert_eq!(
        event,
        ProviderEvent::ConfigurationChanged {
            flags_changed: vec!["checkout".to_owned()],
            revision
        }
    );
    // The event follows the swap: evaluations already see the change.
    assert_eq!(
        flags.get_bool_value("checkout", Some(&ctx), None).await,
        Ok(true)
    );

    // The server gone, the provider serves its last data and says it may be stale.
    drop(server.stop().await);
    eventually("stale", async || probe.status() == ProviderStatus::STALE).await;
    assert_eq!(
        flags.get_bool_value("checkout", Some(&ctx), None).await,
        Ok(true)
    );
}
