//! Every OFREP endpoint and status from outside, with a plain HTTP client.

use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_tests::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{load, token, Http, FLAGS};
use crate::fixtures::{revoke_named, self_signed};

const ONE: &str = "/ofrep/v1/evaluate/flags/";
const ALL: &str = "/ofrep/v1/evaluate/flags";

/// A server with [`FLAGS`] in `production` and an sdk token for it.
async fn production() -> (TestServer, Http, String) {
    let server = TestServer::start().await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let sdk = token(&server, "web", pb::Role::Sdk, "production").await;
    let http = Http::new(&server);
    (server, http, sdk)
}

#[tokio::test]
async fn single_evaluation_gives_the_value_variant_reason_and_metadata() {
    let (_server, http, sdk) = production().await;
    let eval = |key: &str, context: Value| {
        let (http, sdk) = (http.clone(), sdk.clone());
        let path = format!("{ONE}{key}");
        async move {
            let answer = http
                .post(&path, Some(&sdk), &json!({ "context": context }))
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            assert_eq!(answer.headers["content-type"], "application/json", "{path}");
            answer.body
        }
    };

    let dutch = eval("checkout", json!({"targetingKey": "u1", "country": "NL"})).await;
    assert_eq!(dutch["key"], "checkout");
    assert_eq!(dutch["value"], true);
    assert_eq!(dutch["variant"], "on");
    assert_eq!(dutch["reason"], "TARGETING_MATCH");
    assert_eq!(dutch["metadata"]["ruleId"], "dutch");
    assert!(dutch["metadata"]["flagVersion"]
        .as_u64()
        .is_some_and(|v| v > 0));
    assert!(dutch["metadata"]["revision"]
        .as_u64()
        .is_some_and(|v| v > 0));

    // Nested objects are dotted attribute names.
    let pro = eval(
        "checkout",
        json!({"targetingKey": "u1", "user": {"plan": "pro"}}),
    )
    .await;
    assert_eq!(
        (&pro["value"], &pro["metadata"]["ruleId"]),
        (&json!(true), &json!("pro-plans"))
    );

    let default = eval("checkout", json!({"targetingKey": "u1"})).await;
    assert_eq!(
        (&default["value"], &default["reason"]),
        (&json!(false), &json!("DEFAULT"))
    );
    assert!(default["metadata"].get("ruleId").is_none());

    let split = eval("banner", json!({"targetingKey": "u1"})).await;
    assert_eq!(split["reason"], "SPLIT");
    assert!(split["metadata"]["bucket"]
        .as_u64()
        .is_some_and(|b| b < 100_000));
    assert!(["Hello", "Welcome"].contains(&split["value"].as_str().expect("string")));

    // Without a targeting key the split cannot bucket: the off variant, reason ERROR.
    let error = eval("banner", json!({})).await;
    assert_eq!(
        (&error["value"], &error["variant"]),
        (&json!("Hello"), &json!("a"))
    );
    assert_eq!(error["reason"], "ERROR");
    assert_eq!(
        error["metadata"]["errorCode"],
        "MISSING_BUCKETING_ATTRIBUTE"
    );

    // Whole numbers are JSON integers; fractions stay fractions.
    let low = eval("limit", json!({"targetingKey": "u1"})).await;
    assert_eq!(low["value"].to_string(), "10");
    let high = eval("limit", json!({"targetingKey": "u1", "plan": "fractional"})).await;
    assert_eq!(high["value"], 2.5);

    let theme = eval("theme", json!({"targetingKey": "u1"})).await;
    assert_eq!(
        theme["value"],
        json!({"background": "black", "contrast": 7})
    );

    let retired = eval("retired", json!({"targetingKey": "u1"})).await;
    assert_eq!(
        (&retired["value"], &retired["reason"]),
        (&json!(false), &json!("DISABLED"))
    );

    // A failed prerequisite serves the off variant; the metadata names the prerequisite.
    let gated = eval("gated", json!({"targetingKey": "u1"})).await;
    assert_eq!(
        (&gated["value"], &gated["reason"]),
        (&json!(false), &json!("TARGETING_MATCH"))
    );
    assert_eq!(gated["metadata"]["prerequisite"], "retired");
}

#[tokio::test]
async fn every_error_has_its_status_and_body() {
    let (server, http, sdk) = production().await;
    let context = json!({"context": {"targetingKey": "u1"}});
    let path = format!("{ONE}checkout");

    // 401 (not 403) for an admin token that was revoked: unknown tokens are 401 whatever
    // they were.
    let mut admin_client = server.admin().await;
    let old_admin = admin_client
        .create_token(pb::CreateTokenRequest {
            name: "old-admin".into(),
            role: pb::Role::Admin as i32,
            environment: String::new(),
        })
        .await
        .expect("created")
        .into_inner();
    admin_client
        .revoke_token(pb::RevokeTokenRequest {
            id: old_admin.token.expect("token").id,
        })
        .await
        .expect("revoked");
    let revoked_admin = http.post(&path, Some(&old_admin.secret), &context).await;
    assert_eq!(revoked_admin.status, StatusCode::UNAUTHORIZED);

    // 401: no token, an unknown one, a malformed header, a revoked one.
    let none = http.post(&path, None, &context).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.body["errorDetails"]
        .as_str()
        .expect("details")
        .contains("Bearer"));
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    let unknown = http.post(&path, Some("fs_nothing"), &context).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.body["errorDetails"], "unknown token");
    let basic = http
        .send(
            http.client()
                .post(http.url(&path))
                .header("authorization", "Basic eDp5")
                .body(context.to_string()),
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    // X-API-Key works like a bearer token.
    let api_key = http
        .send(
            http.client()
                .post(http.url(&path))
                .header("x-api-key", &sdk)
                .body(context.to_string()),
        )
        .await;
    assert_eq!(api_key.status, StatusCode::OK);

    // 403: admin and editor tokens never evaluate over OFREP.
    let admin_token = server.admin_token.clone();
    let admin = http.post(&path, Some(&admin_token), &context).await;
    assert_eq!(admin.status, StatusCode::FORBIDDEN);
    assert!(admin.body["errorDetails"]
        .as_str()
        .expect("details")
        .starts_with("an admin token cannot evaluate over OFREP"));
    let editor = token(&server, "editor", pb::Role::Editor, "production").await;
    let editor = http.post(&path, Some(&editor), &context).await;
    assert_eq!(editor.status, StatusCode::FORBIDDEN);

    // 404 with the flag's key.
    let missing = http
        .post(&format!("{ONE}no-such-flag"), Some(&sdk), &context)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["key"], "no-such-flag");
    assert_eq!(missing.body["errorCode"], "FLAG_NOT_FOUND");

    // 400 PARSE_ERROR: a body that is not JSON, not an object, or has no context.
    for body in ["{\"context\":", "[1]", "{}"] {
        let answer = http
            .send(
                http.client()
                    .post(http.url(&path))
                    .bearer_auth(&sdk)
                    .body(body),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.body["errorCode"], "PARSE_ERROR", "{body}");
        assert_eq!(answer.body["key"], "checkout");
        assert!(answer.body["errorDetails"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    // 400 INVALID_CONTEXT, naming the attribute.
    let too_deep =
        json!({"context": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}});
    for (context, details) in [
        (
            json!({"context": {"targetingKey": 7}}),
            "targetingKey must be a string, not a number",
        ),
        (
            json!({"context": "u1"}),
            "the context must be a JSON object, not a string",
        ),
        (
            json!({"context": {"tags": [[1]]}}),
            "attribute \"tags\": a list may hold strings, numbers and booleans, not an array",
        ),
        (
            too_deep,
            "attribute \"a.b.c.d.e.f.g.h\" nests objects deeper than 8 levels",
        ),
    ] {
        let answer = http.post(&path, Some(&sdk), &context).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{context}");
        assert_eq!(answer.body["errorCode"], "INVALID_CONTEXT");
        assert_eq!(answer.body["errorDetails"], details);
    }
    // The bulk endpoint answers the same errors without a key.
    let bulk = http
        .post(ALL, Some(&sdk), &json!({"context": {"targetingKey": 7}}))
        .await;
    assert_eq!(bulk.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bulk.body,
        json!({"errorCode": "INVALID_CONTEXT", "errorDetails": "targetingKey must be a string, not a number"})
    );

    // Members other than the context are skipped; the values a request holds are bounded
    // before anything is built from them, and so is nesting.
    let extra = http
        .post(
            &path,
            Some(&sdk),
            &json!({"context": {"targetingKey": "u1"}, "note": {"x": [1, 2]}}),
        )
        .await;
    assert_eq!(extra.status, StatusCode::OK);
    let long_list = json!({"context": {"ids": vec![1; 10_001]}});
    let answer = http.post(&path, Some(&sdk), &long_list).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["errorCode"], "INVALID_CONTEXT");
    assert_eq!(
        answer.body["errorDetails"],
        "the request holds more than 10000 JSON values (attributes and the elements of their lists)"
    );
    let nested = format!(
        "{{\"context\": {}1{}}}",
        "{\"a\": ".repeat(200),
        "}".repeat(200)
    );
    let answer = http
        .send(
            http.client()
                .post(http.url(&path))
                .bearer_auth(&sdk)
                .body(nested),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["errorCode"], "INVALID_CONTEXT");
    assert_eq!(
        answer.body["errorDetails"],
        "the context nests objects deeper than 8 levels"
    );

    // 413 beyond 8 MiB, as JSON.
    let huge = json!({"context": {"targetingKey": "u1", "s": "x".repeat(9 << 20)}});
    let answer = http.post(&path, Some(&sdk), &huge).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        answer.body["errorDetails"],
        "the request body is over the limit of 8 MiB"
    );

    // Wrong method, unknown route: JSON too.
    let get = http.send(http.client().get(http.url(&path))).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(get.body["errorDetails"].is_string());
    let nothing = http.send(http.client().get(http.url("/nothing"))).await;
    assert_eq!(nothing.status, StatusCode::NOT_FOUND);
    assert!(nothing.body["errorDetails"].is_string());

    // A revoked token stops working at once.
    revoke_named(&mut admin_client, "web").await;
    let revoked = http.post(&path, Some(&sdk), &context).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(revoked.body["errorDetails"], "the token has been revoked");
}

#[tokio::test]
async fn bulk_evaluation_lists_every_flag_in_key_order_with_an_etag() {
    let (server, http, sdk) = production().await;
    let context = json!({"context": {"targetingKey": "u1", "country": "NL"}});
    let first = http.post(ALL, Some(&sdk), &context).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let keys: Vec<&str> = first.body["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .map(|f| f["key"].as_str().expect("key"))
        .collect();
    assert_eq!(
        keys,
        ["banner", "checkout", "gated", "limit", "retired", "theme"]
    );
    let checkout = &first.body["flags"][1];
    assert_eq!(
        (&checkout["value"], &checkout["reason"]),
        (&json!(true), &json!("TARGETING_MATCH"))
    );
    let etag = first.headers["etag"].to_str().expect("etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );

    // The same context, in another order and shape: 304 without a body.
    let conditional = |tag: String, context: Value| {
        let http = http.clone();
        let request = http
            .client()
            .post(http.url(ALL))
            .bearer_auth(&sdk)
            .header("if-none-match", tag)
            .body(context.to_string());
        async move { http.send(request).await }
    };
    let same = conditional(
        etag.clone(),
        json!({"context": {"country": "NL", "targetingKey": "u1"}}),
    )
    .await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(same.body, Value::Null);
    assert_eq!(same.headers["etag"], etag.as_str());
    let weak = conditional(format!("\"other\", W/{etag}"), context.clone()).await;
    assert_eq!(weak.status, StatusCode::NOT_MODIFIED);

    // Another context, or a change: a new ETag and the full answer.
    let other = conditional(etag.clone(), json!({"context": {"targetingKey": "u2"}})).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_ne!(other.headers["etag"], etag.as_str());
    let mut admin = server.admin().await;
    admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "production".into(),
            key: "retired".into(),
            enabled: true,
            ..Default::default()
        })
        .await
        .expect("enabled");
    let changed = conditional(etag.clone(), context.clone()).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.headers["etag"], etag.as_str());
    assert_eq!(changed.body["flags"][4]["reason"], "DEFAULT");
    assert_eq!(
        changed.body["metadata"]["revision"],
        first.body["metadata"]["revision"]
            .as_u64()
            .expect("revision")
            + 1
    );
}

#[tokio::test]
async fn a_bulk_request_after_an_event_waits_for_the_revision_it_names() {
    let (server, http, sdk) = production().await;
    let mut admin = server.admin().await;
    let environment = admin
        .list_environments(pb::ListEnvironmentsRequest::default())
        .await
        .expect("environments")
        .into_inner()
        .environments
        .remove(0);
    let next = format!("{}.{}", environment.epoch, environment.revision + 1);
    let path = format!("{ALL}?flagConfigEtag={next}");
    let context = json!({"context": {"targetingKey": "u1"}});

    // Nothing reaches that revision: 503 with Retry-After after the wait of 2 s.
    let started = std::time::Instant::now();
    let waited = http.post(&path, Some(&sdk), &context).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(waited.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(waited.headers["retry-after"], "1");
    assert_eq!(waited.body["errorCode"], "GENERAL");

    // A write while the request waits: it answers with that revision.
    let request = {
        let (http, sdk, path, context) = (http.clone(), sdk.clone(), path.clone(), context.clone());
        tokio::spawn(async move { http.post(&path, Some(&sdk), &context).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "production".into(),
            key: "retired".into(),
            enabled: true,
            ..Default::default()
        })
        .await
        .expect("enabled");
    let answered = request.await.expect("request");
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    assert_eq!(
        answered.body["metadata"]["revision"],
        environment.revision + 1
    );

    // A tag of another epoch (a recreated environment) or no tag at all asks for nothing.
    let other = http
        .post(
            &format!("{ALL}?flagConfigEtag=elsewhere.999"),
            Some(&sdk),
            &context,
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn evaluations_count_toward_flag_usage() {
    let (server, http, sdk) = production().await;
    for _ in 0..3 {
        let answer = http
            .post(
                &format!("{ONE}checkout"),
                Some(&sdk),
                &json!({"context": {}}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let bulk = http.post(ALL, Some(&sdk), &json!({"context": {}})).await;
    assert_eq!(bulk.status, StatusCode::OK);
    // Counts are recorded every few seconds and when the server stops.
    let addr = server.addr;
    let data_dir = server.stop().await;
    let server = TestServer::builder()
        .data_dir(data_dir)
        .addr(addr)
        .start()
        .await;
    let flags = server
        .admin()
        .await
        .list_flags(pb::ListFlagsRequest {
            environment: "production".into(),
            ..Default::default()
        })
        .await
        .expect("flags")
        .into_inner()
        .flags;
    let usage = |key: &str| {
        flags
            .iter()
            .find(|e| e.flag.as_ref().is_some_and(|f| f.key == key))
            .and_then(|e| e.usage)
            .map(|u| u.evaluations)
    };
    assert_eq!(usage("checkout"), Some(4));
    assert_eq!(usage("theme"), Some(1));
}

#[tokio::test]
async fn plain_text_h2_clients_are_served_too() {
    let (_server, http, sdk) = production().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2
        .post(http.url(&format!("{ONE}checkout")))
        .bearer_auth(&sdk)
        .body(json!({"context": {"country": "NL"}}).to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let answer = super::answer(response).await;
    assert_eq!(
        (answer.status, &answer.body["value"]),
        (StatusCode::OK, &json!(true))
    );
}

#[tokio::test]
async fn health_checks_answer_over_http() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for path in ["/healthz", "/readyz"] {
        let response = http
            .client()
            .get(http.url(path))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn one_tls_port_serves_http_1_1_clients_and_grpc_clients() {
    let tls = self_signed();
    let server = TestServer::builder().tls(tls.clone()).start().await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let sdk = token(&server, "web", pb::Role::Sdk, "production").await;

    // An HTTP/1.1-only client (as browsers' fetch over HTTP/1.1 or Python's requests).
    let client = reqwest::Client::builder()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.cert.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let url = format!("https://localhost:{}{ONE}checkout", server.addr.port());
    let response = client
        .post(&url)
        .bearer_auth(&sdk)
        .body(json!({"context": {"country": "NL"}}).to_string())
        .send()
        .await
        .expect("answered over TLS");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let answer = super::answer(response).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["value"], true);

    // And h2 over the same TLS port, as ALPN offers it.
    let h2 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.cert.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let response = h2
        .post(&url)
        .bearer_auth(&sdk)
        .body(json!({"context": {}}).to_string())
        .send()
        .await
        .expect("answered over TLS");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    // The gRPC clients of the same port keep working.
    let environments = server
        .admin()
        .await
        .list_environments(pb::ListEnvironmentsRequest::default())
        .await
        .expect("gRPC over the same TLS port")
        .into_inner()
        .environments;
    assert_eq!(environments.len(), 1);
}

#[tokio::test]
async fn while_shutdown_drains_readyz_fails_and_requests_are_still_served() {
    let server = TestServer::builder()
        .drain(Duration::from_secs(3))
        .start()
        .await;
    let http = Http::new(&server);
    let stopping = tokio::spawn(server.stop());
    let status = |path: &'static str| {
        let http = http.clone();
        async move {
            http.client()
                .get(http.url(path))
                .send()
                .await
                .map(|r| r.status())
                .ok()
        }
    };
    flagstaff_tests::eventually("/readyz answers 503 while draining", async || {
        status("/readyz").await == Some(StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    assert_eq!(
        status("/healthz").await,
        Some(StatusCode::OK),
        "still serving"
    );
    tokio::time::timeout(flagstaff_tests::PATIENCE, stopping)
        .await
        .expect("the server stops after the drain")
        .expect("stopped");
}
