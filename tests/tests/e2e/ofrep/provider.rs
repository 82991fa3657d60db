//! The OpenFeature OFREP provider for Rust (`open-feature-ofrep`) against flagstaffd: every
//! kind of flag through values and variants. (The provider reports every result as `STATIC`,
//! so reasons are checked over plain HTTP in `endpoints`.)

use std::sync::atomic::{AtomicUsize, Ordering};

use flagstaff_proto::pb;
use flagstaff_tests::TestServer;
use open_feature::{
    Client, EvaluationContext, EvaluationErrorCode, OpenFeature, StructValue, Value,
};
use open_feature_ofrep::{OfrepOptions, OfrepProvider};
use reqwest::header::{HeaderMap, HeaderValue};

use super::{load, token, FLAGS};

/// An OpenFeature client whose provider is the OFREP provider of `server`, sending `token`.
async fn client(server: &TestServer, token: &str) -> Client {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let provider = OfrepProvider::new(OfrepOptions {
        base_url: server.endpoint(),
        headers,
        ..Default::default()
    })
    .await
    .expect("provider");
    // The OpenFeature API is a process-wide singleton: a name of its own per test.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("ofrep-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut api = OpenFeature::singleton_mut().await;
    api.set_named_provider(&name, provider).await;
    api.create_named_client(&name)
}

fn user(key: &str) -> EvaluationContext {
    EvaluationContext::default().with_targeting_key(key)
}

#[tokio::test]
async fn the_ofrep_provider_resolves_flags_of_every_kind() {
    let server = TestServer::start().await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let sdk = token(&server, "service", pb::Role::Sdk, "production").await;
    let flags = client(&server, &sdk).await;

    let dutch = user("u1").with_custom_field("country", "NL");
    let checkout = flags
        .get_bool_details("checkout", Some(&dutch), None)
        .await
        .expect("resolved");
    assert_eq!(
        (checkout.value, checkout.variant.as_deref()),
        (true, Some("on"))
    );
    assert_eq!(
        flags
            .get_bool_value("checkout", Some(&user("u1")), None)
            .await,
        Ok(false)
    );

    let banner = flags
        .get_string_details("banner", Some(&user("u1")), None)
        .await
        .expect("resolved");
    let expected = if banner.variant.as_deref() == Some("a") {
        "Hello"
    } else {
        "Welcome"
    };
    assert_eq!(banner.value, expected);

    assert_eq!(
        flags.get_int_value("limit", Some(&user("u1")), None).await,
        Ok(10)
    );
    let fractional = user("u1").with_custom_field("plan", "fractional");
    assert_eq!(
        flags
            .get_float_value("limit", Some(&fractional), None)
            .await,
        Ok(2.5)
    );

    let theme = flags
        .get_struct_value::<StructValue>("theme", Some(&user("u1")), None)
        .await
        .expect("resolved");
    assert_eq!(
        theme.fields.get("background"),
        Some(&Value::String("black".into()))
    );
    assert_eq!(theme.fields.get("contrast"), Some(&Value::Int(7)));

    assert_eq!(
        flags
            .get_bool_value("retired", Some(&user("u1")), None)
            .await,
        Ok(false)
    );
    assert_eq!(
        flags.get_bool_value("gated", Some(&user("u1")), None).await,
        Ok(false)
    );

    let missing = flags
        .get_bool_value("no-such-flag", Some(&user("u1")), None)
        .await
        .expect_err("missing");
    assert_eq!(missing.code, EvaluationErrorCode::FlagNotFound);
}
