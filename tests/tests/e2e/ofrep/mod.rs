//! OFREP over HTTP on the gRPC port, from outside: a plain HTTP client (reqwest) and the
//! OpenFeature OFREP provider for Rust against the real server.

mod browsers;
mod conformance;
mod endpoints;
mod events;
mod provider;

use flagstaff_engine::parse_document;
use flagstaff_proto::pb;
use flagstaff_tests::{Admin, TestServer};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

/// Flags of every kind, with rules, a split, a prerequisite and a disabled flag; `checkout`
/// and `theme` are client-side.
pub const FLAGS: &str = r#"
environment: production
flags:
  - key: checkout
    kind: boolean
    client_side: true
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: true
    rules:
      - id: dutch
        conditions: [{ attribute: country, op: in, values: [NL] }]
        serve: { variant: "on" }
      - id: pro-plans
        conditions: [{ attribute: user.plan, op: in, values: [pro] }]
        serve: { variant: "on" }
    default: { variant: "off" }
  - key: banner
    kind: string
    variants: { a: "Hello", b: "Welcome" }
    off_variant: a
    enabled: true
    default: { split: { bucket_by: key, weights: [{ variant: a, weight: 50000 }, { variant: b, weight: 50000 }] } }
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
    client_side: true
    variants: { dark: { background: black, contrast: 7 }, list: [1, 2] }
    off_variant: dark
    enabled: true
    default: { variant: dark }
  - key: retired
    kind: boolean
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: false
    default: { variant: "on" }
  - key: gated
    kind: boolean
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: true
    prerequisites: [{ flag: retired, variants: ["on"] }]
    default: { variant: "on" }
"#;

/// Applies `text` (a whole environment, YAML) to environment `environment`, creating it.
pub async fn load(admin: &mut Admin, environment: &str, text: &str) {
    admin
        .create_environment(pb::CreateEnvironmentRequest {
            environment: environment.into(),
            ..Default::default()
        })
        .await
        .expect("environment created");
    let document = parse_document(text).expect("valid document");
    admin
        .apply(pb::ApplyRequest {
            environment: environment.into(),
            source: Some(pb::apply_request::Source::Document(pb::Document::from(
                &document,
            ))),
            ..Default::default()
        })
        .await
        .expect("applied");
}

pub use crate::fixtures::token_of as token;

/// An HTTP answer: status, headers and the body as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// A plain HTTP client of a test server.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    pub fn new(server: &TestServer) -> Http {
        Http {
            client: reqwest::Client::new(),
            base: server.endpoint(),
        }
    }

    /// `POST path` with `token` as a bearer token (none when `None`) and `body`.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.expect("answered")).await
    }

    /// Sends `request`, built on this client.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        answer(request.send().await.expect("answered")).await
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Reads a response.
pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Answer {
        status,
        headers,
        body,
    }
}
