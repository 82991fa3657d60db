//! What OFREP does for code on users' devices: client tokens that see only client-side flags,
//! rate limits on them, and CORS for the origins flagstaffd is told to allow.

use flagstaff_proto::pb;
use flagstaff_server::ofrep::limit::Rate;
use flagstaff_server::ofrep::{OfrepOptions, RateLimits};
use flagstaff_tests::TestServer;
use reqwest::StatusCode;
use serde_json::json;

use super::{load, token, Http, FLAGS};

const ONE: &str = "/ofrep/v1/evaluate/flags/";
const ALL: &str = "/ofrep/v1/evaluate/flags";

/// A server with [`FLAGS`] in `production` whose OFREP routes apply `limits`.
async fn limited(limits: RateLimits) -> TestServer {
    let server = TestServer::builder()
        .ofrep(OfrepOptions {
            limits,
            ..OfrepOptions::default()
        })
        .start()
        .await;
    load(&mut server.admin().await, "production", FLAGS).await;
    server
}

#[tokio::test]
async fn a_client_token_sees_only_client_side_flags() {
    let server = TestServer::start().await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let client = token(&server, "web", pb::Role::Client, "production").await;
    let sdk = token(&server, "service", pb::Role::Sdk, "production").await;
    let http = Http::new(&server);
    let context = json!({"context": {"targetingKey": "u1", "country": "NL"}});

    let checkout = http
        .post(&format!("{ONE}checkout"), Some(&client), &context)
        .await;
    assert_eq!(checkout.status, StatusCode::OK, "{}", checkout.body);
    assert_eq!(checkout.body["value"], true);
    // A server-side flag does not exist for a client token.
    let limit = http
        .post(&format!("{ONE}limit"), Some(&client), &context)
        .await;
    assert_eq!(limit.status, StatusCode::NOT_FOUND);
    assert_eq!(limit.body["errorCode"], "FLAG_NOT_FOUND");
    assert_eq!(limit.body["key"], "limit");
    // The sdk token sees it.
    let limit = http
        .post(&format!("{ONE}limit"), Some(&sdk), &context)
        .await;
    assert_eq!(limit.status, StatusCode::OK);

    let bulk = http.post(ALL, Some(&client), &context).await;
    assert_eq!(bulk.status, StatusCode::OK);
    let keys: Vec<&str> = bulk.body["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .map(|f| f["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["checkout", "theme"]);
    // What a token sees is part of the ETag: the sdk token's answer is another.
    let all = http.post(ALL, Some(&sdk), &context).await;
    assert_ne!(all.headers["etag"], bulk.headers["etag"]);

    // A client token reaches nothing but OFREP.
    let denied = server
        .admin_with(Some(&client))
        .await
        .list_flags(pb::ListFlagsRequest {
            environment: "production".into(),
            ..Default::default()
        })
        .await
        .expect_err("a client token cannot read over gRPC");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_client_token_beyond_its_rate_gets_429_with_retry_after() {
    let server = limited(RateLimits {
        per_address: Rate {
            requests: 1,
            per: std::time::Duration::from_secs(60),
            burst: 3,
        },
        ..RateLimits::default()
    })
    .await;
    let client = token(&server, "web", pb::Role::Client, "production").await;
    let sdk = token(&server, "service", pb::Role::Sdk, "production").await;
    let http = Http::new(&server);
    let context = json!({"context": {"targetingKey": "u1"}});
    let path = format!("{ONE}checkout");
    for _ in 0..3 {
        let answer = http.post(&path, Some(&client), &context).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let refused = http.post(&path, Some(&client), &context).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(refused.body["errorDetails"].is_string());
    // The bulk endpoint shares the limit; sdk tokens are services' secrets and not limited.
    let bulk = http.post(ALL, Some(&client), &context).await;
    assert_eq!(bulk.status, StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..5 {
        assert_eq!(
            http.post(&path, Some(&sdk), &context).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_client_token_is_limited_in_all_across_addresses() {
    let server = limited(RateLimits {
        per_token: Rate {
            requests: 1,
            per: std::time::Duration::from_secs(60),
            burst: 2,
        },
        ..RateLimits::default()
    })
    .await;
    let client = token(&server, "web", pb::Role::Client, "production").await;
    let other = token(&server, "other-web", pb::Role::Client, "production").await;
    let http = Http::new(&server);
    let context = json!({"context": {}});
    let path = format!("{ONE}checkout");
    for _ in 0..2 {
        assert_eq!(
            http.post(&path, Some(&client), &context).await.status,
            StatusCode::OK
        );
    }
    let refused = http.post(&path, Some(&client), &context).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers.contains_key("retry-after"));
    // Another token has its own budget.
    assert_eq!(
        http.post(&path, Some(&other), &context).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_and_others_none() {
    let server = TestServer::builder()
        .ofrep(OfrepOptions {
            cors_origins: vec!["https://app.example.com".into()],
            ..OfrepOptions::default()
        })
        .start()
        .await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let client = token(&server, "web", pb::Role::Client, "production").await;
    let http = Http::new(&server);

    // The preflight a browser sends before a POST with Authorization.
    let preflight = |origin: &'static str, path: &str| {
        http.client()
            .request(reqwest::Method::OPTIONS, http.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, if-none-match",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com", ALL)
        .await
        .expect("answered");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .expect("ascii");
    assert!(methods.contains("POST"), "{methods}");
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    for header in [
        "authorization",
        "x-api-key",
        "content-type",
        "if-none-match",
    ] {
        assert!(allowed_headers.contains(header), "{allowed_headers}");
    }

    // The request itself: the origin allowed, ETag exposed.
    let answer = http
        .client()
        .post(http.url(ALL))
        .header("origin", "https://app.example.com")
        .bearer_auth(&client)
        .body(json!({"context": {}}).to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    assert!(exposed.contains("etag"), "{exposed}");

    // Another origin gets no CORS headers at all.
    let stranger = preflight("https://evil.example.net", ALL)
        .await
        .expect("answered");
    assert!(stranger
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let stranger = http
        .client()
        .post(http.url(ALL))
        .header("origin", "https://evil.example.net")
        .bearer_auth(&client)
        .body(json!({"context": {}}).to_string())
        .send()
        .await
        .expect("answered");
    assert!(stranger
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // Routes other than OFREP never answer cross-origin requests: not the Admin API's
    // path either.
    let admin = preflight("https://app.example.com", "/flagstaff.v1.Admin/ListFlags")
        .await
        .expect("answered");
    assert!(admin.headers().get("access-control-allow-origin").is_none());
    let health = preflight("https://app.example.com", "/healthz")
        .await
        .expect("answered");
    assert!(health
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn a_client_token_holds_at_most_its_cap_of_event_streams() {
    let server = limited(RateLimits {
        streams_per_token: 1,
        ..RateLimits::default()
    })
    .await;
    let client = token(&server, "web", pb::Role::Client, "production").await;
    let http = Http::new(&server);
    let bulk = http.post(ALL, Some(&client), &json!({"context": {}})).await;
    let uri = bulk.body["eventStreams"][0]["endpoint"]["requestUri"]
        .as_str()
        .expect("advertised")
        .to_owned();
    let first = http
        .client()
        .get(http.url(&uri))
        .send()
        .await
        .expect("answered");
    assert_eq!(first.status(), StatusCode::OK);
    let second = http.send(http.client().get(http.url(&uri))).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers.contains_key("retry-after"));
    assert_eq!(
        second.body["errorDetails"],
        "too many event streams open with this token"
    );
    drop(first);
}

#[tokio::test]
async fn a_flag_made_server_side_disappears_for_client_tokens_at_once() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    load(&mut admin, "production", FLAGS).await;
    let client = token(&server, "web", pb::Role::Client, "production").await;
    let http = Http::new(&server);
    let context = json!({"context": {"targetingKey": "u1"}});
    let path = format!("{ONE}theme");
    assert_eq!(
        http.post(&path, Some(&client), &context).await.status,
        StatusCode::OK
    );

    let mut theme = admin
        .get_flag(pb::GetFlagRequest {
            environment: "production".into(),
            key: "theme".into(),
        })
        .await
        .expect("flag")
        .into_inner()
        .flag
        .expect("flag");
    assert!(theme.client_side);
    theme.client_side = false;
    theme.version = None;
    admin
        .update_flag(pb::UpdateFlagRequest {
            environment: "production".into(),
            flag: Some(theme),
            ..Default::default()
        })
        .await
        .expect("updated");
    let hidden = http.post(&path, Some(&client), &context).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let bulk = http.post(ALL, Some(&client), &context).await;
    assert_eq!(bulk.body["flags"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_client_token_never_learns_the_name_of_a_server_side_prerequisite() {
    let server = TestServer::start().await;
    load(
        &mut server.admin().await,
        "production",
        r#"
environment: production
flags:
  - key: internal-kill-switch
    kind: boolean
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: false
    default: { variant: "on" }
  - key: new-header
    kind: boolean
    client_side: true
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: true
    prerequisites: [{ flag: internal-kill-switch, variants: ["on"] }]
    default: { variant: "on" }
"#,
    )
    .await;
    let client = token(&server, "web", pb::Role::Client, "production").await;
    let sdk = token(&server, "service", pb::Role::Sdk, "production").await;
    let http = Http::new(&server);
    let context = json!({"context": {"targetingKey": "u1"}});
    let path = format!("{ONE}new-header");

    let seen_by_client = http.post(&path, Some(&client), &context).await;
    assert_eq!(seen_by_client.status, StatusCode::OK);
    assert_eq!(seen_by_client.body["value"], false);
    assert_eq!(seen_by_client.body["reason"], "TARGETING_MATCH");
    assert!(
        seen_by_client.body["metadata"]
            .get("prerequisite")
            .is_none(),
        "{}",
        seen_by_client.body
    );
    let bulk = http.post(ALL, Some(&client), &context).await;
    assert!(
        !bulk.body.to_string().contains("internal-kill-switch"),
        "{}",
        bulk.body
    );
    // A service's token sees which prerequisite failed.
    let seen_by_service = http.post(&path, Some(&sdk), &context).await;
    assert_eq!(
        seen_by_service.body["metadata"]["prerequisite"],
        "internal-kill-switch"
    );
}

#[tokio::test]
async fn one_address_holds_at_most_its_cap_of_event_streams_whatever_the_token() {
    let server = limited(RateLimits {
        streams_per_address: 1,
        ..RateLimits::default()
    })
    .await;
    let http = Http::new(&server);
    let mut uris = Vec::new();
    for name in ["web", "service"] {
        let role = if name == "web" {
            pb::Role::Client
        } else {
            pb::Role::Sdk
        };
        let secret = token(&server, name, role, "production").await;
        let bulk = http.post(ALL, Some(&secret), &json!({"context": {}})).await;
        uris.push(
            bulk.body["eventStreams"][0]["endpoint"]["requestUri"]
                .as_str()
                .expect("advertised")
                .to_owned(),
        );
    }
    let first = http
        .client()
        .get(http.url(&uris[0]))
        .send()
        .await
        .expect("answered");
    assert_eq!(first.status(), StatusCode::OK);
    let second = http.send(http.client().get(http.url(&uris[1]))).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        second.body["errorDetails"],
        "too many event streams open from this address"
    );
    drop(first);
}
