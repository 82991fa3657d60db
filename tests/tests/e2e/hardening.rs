//! What a client holding a valid token sends cannot break an environment, the server's start
//! or its memory (DESIGN.md section 4a): writes the stored format cannot hold are refused at
//! the edge and nothing changes; every limit is enforced with a message naming it and quoting
//! at most a short prefix; malformed and oversized messages get gRPC's codes; what is accepted
//! reads back the same before and after a restart.

use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_tests::watcher::{subscribe, State, Watcher};
use flagstaff_tests::{Admin, TestServer};
use prost::Message as _;
use serde_json::json;
use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use super::fixtures::*;

const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// A client that sends raw bytes, for messages no generated client would send.

/// A codec sending and receiving message bodies as they are.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use prost::bytes::BufMut as _;
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use prost::bytes::Buf as _;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// Calls the unary method `path` with `body` as the request message.
async fn raw_unary(server: &TestServer, path: &'static str, body: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(server.channel().await)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(
        authorized(body, &server.admin_token),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(|_| ())
}

/// Opens a Watch stream sending `messages` as they are, and returns how it ends.
async fn raw_watch(server: &TestServer, token: &str, messages: Vec<Vec<u8>>) -> Status {
    let mut grpc =
        tonic::client::Grpc::new(server.channel().await).max_encoding_message_size(usize::MAX);
    grpc.ready().await.expect("ready");
    // The stream stays open after the messages, as a live client's would.
    let outbound =
        tokio_stream::StreamExt::chain(tokio_stream::iter(messages), tokio_stream::pending());
    let response = grpc
        .streaming(
            authorized(outbound, token),
            tonic::codegen::http::uri::PathAndQuery::from_static("/flagstaff.v1.Sync/Watch"),
            Raw,
        )
        .await;
    let mut inbound = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return status,
    };
    loop {
        match tokio::time::timeout(LIMIT, inbound.message()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Status::ok(""),
            Ok(Err(status)) => return status,
            Err(_) => panic!("the Watch stream did not end within {LIMIT:?}"),
        }
    }
}

fn encoded(request: pb::WatchRequest) -> Vec<u8> {
    request.encode_to_vec()
}

fn subscribe_request(subscribe: pb::Subscribe) -> pb::WatchRequest {
    pb::WatchRequest {
        request: Some(pb::watch_request::Request::Subscribe(subscribe)),
    }
}

// ---------------------------------------------------------------------------------------------
// Documents.

/// A boolean flag whose variants are listed as given (duplicates included).
fn with_variants(key: &str, variants: &[(&str, bool)]) -> pb::Flag {
    let mut flag = boolean_flag(key);
    flag.variants = variants
        .iter()
        .map(|(name, value)| pb::Variant {
            key: (*name).to_owned(),
            value: Some(pb::VariantValue {
                value: Some(pb::variant_value::Value::BoolValue(*value)),
            }),
        })
        .collect();
    flag
}

/// A json flag whose `on` variant is the JSON text `on`.
fn json_flag(key: &str, on: String) -> pb::Flag {
    let mut flag = flag(json!({
        "key": key, "kind": "json", "variants": {"on": [], "off": null},
        "off_variant": "off", "enabled": true, "default": {"variant": "on"},
    }));
    flag.variants[0].value = Some(pb::VariantValue {
        value: Some(pb::variant_value::Value::JsonValue(on)),
    });
    flag
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// The message of a call that must fail with `code`.
fn fails<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> String {
    let status = result.expect_err("the call is refused");
    assert_eq!(status.code(), code, "{}", status.message());
    status.message().to_owned()
}

async fn create(admin: &mut Admin, flag: pb::Flag) -> Result<u64, Status> {
    admin
        .create_flag(pb::CreateFlagRequest {
            environment: "production".into(),
            flag: Some(flag),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().revision)
}

/// Everything readable about `production`: its flags, segments and history, as the server
/// answers them.
async fn everything(admin: &mut Admin) -> (Vec<pb::FlagEntry>, pb::ExportResponse, usize) {
    let flags = admin
        .list_flags(pb::ListFlagsRequest {
            environment: "production".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("flags listed")
        .into_inner()
        .flags;
    let export = admin
        .export(pb::ExportRequest {
            environment: "production".into(),
        })
        .await
        .expect("exported")
        .into_inner();
    let history = admin
        .list_history(pb::ListHistoryRequest {
            environment: "production".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("history listed")
        .into_inner()
        .entries
        .len();
    (flags, export, history)
}

/// A server on the same data directory as `server`, after a clean stop.
async fn restarted(server: TestServer) -> TestServer {
    let data_dir = server.stop().await;
    TestServer::builder().data_dir(data_dir).start().await
}

async fn production() -> (TestServer, Admin) {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    (server, admin)
}

#[tokio::test]
async fn documents_the_stored_format_cannot_hold_are_refused_and_the_environment_stays_whole() {
    let (server, mut admin) = production().await;
    create_flag(&mut admin, "production", boolean_flag("kept")).await;
    let before = everything(&mut admin).await;

    // Duplicate variant keys, through each write.
    let duplicate = with_variants("dup", &[("on", true), ("on", false), ("off", false)]);
    let message = fails(
        create(&mut admin, duplicate.clone()).await,
        Code::InvalidArgument,
    );
    assert!(
        message.contains("duplicate variant key \"on\""),
        "{message}"
    );
    let message = refused(
        admin
            .update_flag(pb::UpdateFlagRequest {
                environment: "production".into(),
                flag: Some(with_variants(
                    "kept",
                    &[("on", true), ("off", false), ("off", true)],
                )),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(
        message.contains("duplicate variant key \"off\""),
        "{message}"
    );
    let message = refused(
        admin
            .apply(pb::ApplyRequest {
                environment: "production".into(),
                source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                    flags: vec![duplicate],
                    segments: vec![],
                })),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("duplicate variant key"), "{message}");

    // A member name twice in one JSON object, and JSON nested deeper than 64 levels.
    let message = fails(
        create(&mut admin, json_flag("twice", r#"{"a": 1, "a": 2}"#.into())).await,
        Code::InvalidArgument,
    );
    assert!(message.contains("duplicate field \"a\""), "{message}");
    for depth in [65, 123, 126, 127] {
        let message = fails(
            create(&mut admin, json_flag("deep", nested(depth))).await,
            Code::InvalidArgument,
        );
        assert!(
            message.contains(&format!("nested {depth} levels deep, over the limit of 64")),
            "{message}"
        );
    }
    assert_eq!(everything(&mut admin).await, before, "nothing changed");

    // The deepest value accepted reads back, before and after a restart.
    create(&mut admin, json_flag("deep", nested(64)))
        .await
        .expect("64 levels are accepted");
    let accepted = everything(&mut admin).await;
    let server = restarted(server).await;
    let mut admin = server.admin().await;
    assert_eq!(everything(&mut admin).await, accepted);
    let deep = get_flag(&mut admin, "production", "deep").await;
    assert_eq!(
        deep.variants[0].value,
        Some(pb::VariantValue {
            value: Some(pb::variant_value::Value::JsonValue(nested(64)))
        })
    );
}

#[tokio::test]
async fn regexes_over_their_compiled_size_are_refused() {
    let (_server, mut admin) = production().await;
    let conditions: Vec<_> = (0..100)
        .map(|_| json!({"attribute": "a", "op": "matches", "values": ["(?:\\w{60}){3}"]}))
        .collect();
    let amplifying = flag(json!({
        "key": "regexes", "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "off"},
        "rules": [{"id": "r", "conditions": conditions, "serve": {"variant": "on"}}],
    }));
    let message = fails(create(&mut admin, amplifying).await, Code::InvalidArgument);
    assert!(
        message.contains("regex too large when compiled (at most 1 MiB)")
            && message.contains("more than 8 MiB together, at most 8 MiB per document"),
        "{message}"
    );
}

#[tokio::test]
async fn limits_are_enforced_with_messages_that_name_them() {
    let (_server, mut admin) = production().await;
    create_flag(&mut admin, "production", boolean_flag("kept")).await;

    // Strings.
    let mut described = boolean_flag("described");
    described.description = Some("d".repeat(4097));
    let message = fails(create(&mut admin, described).await, Code::InvalidArgument);
    assert!(
        message.contains("is 4097 bytes, over the limit of 4096"),
        "{message}"
    );
    let mut nul = boolean_flag("nul");
    nul.owner = Some("team\0payments".into());
    let message = fails(create(&mut admin, nul).await, Code::InvalidArgument);
    assert!(message.contains("contains a NUL character"), "{message}");
    let message = refused(
        admin
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: "production".into(),
                key: "kept".into(),
                enabled: false,
                comment: "c".repeat(5 << 20),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(message.starts_with("comment: "), "{message}");
    assert!(message.contains("over the limit of 4096"), "{message}");

    // Counts.
    let tags: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let mut tagged = boolean_flag("tagged");
    tagged.tags = tags;
    let message = fails(create(&mut admin, tagged).await, Code::InvalidArgument);
    assert!(message.contains("65 tags, at most 64 allowed"), "{message}");

    // Contexts.
    let attributes = |n: usize| pb::Context {
        key: "user".into(),
        attributes: (0..n)
            .map(|i| pb::Attribute {
                name: format!("a{}", i % 700),
                value: Some(pb::AttributeValue {
                    value: Some(pb::attribute_value::Value::NumberValue(i as f64)),
                }),
            })
            .collect(),
    };
    let evaluate = |context: pb::Context| pb::EvaluateRequest {
        environment: "production".into(),
        flag: String::new(),
        context: Some(context),
    };
    admin
        .evaluate(evaluate(attributes(1000)))
        .await
        .expect("1,000 attributes (names repeating) are evaluated");
    let message = refused(
        admin.evaluate(evaluate(attributes(1001))).await,
        Code::InvalidArgument,
    );
    assert!(
        message.contains("1001 attributes, at most 1000 allowed"),
        "{message}"
    );
    let mut long = attributes(1);
    long.attributes[0].value = Some(pb::AttributeValue {
        value: Some(pb::attribute_value::Value::StringValue(
            "v".repeat(65 * 1024),
        )),
    });
    let message = refused(admin.evaluate(evaluate(long)).await, Code::InvalidArgument);
    assert!(message.contains("over the limit of 64 KiB"), "{message}");

    // Nothing was written by any of it.
    assert_eq!(revision(&mut admin, "production").await, 1);
}

#[tokio::test]
async fn errors_quote_at_most_a_short_prefix_of_what_they_refuse() {
    let (_server, mut admin) = production().await;
    let key = "K".repeat(10_000);
    let message = refused(
        admin
            .get_flag(pb::GetFlagRequest {
                environment: "production".into(),
                key: key.clone(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(message.len() < 300, "{} bytes: {message}", message.len());
    assert!(
        message.contains("(10000 bytes) is not a valid key"),
        "{message}"
    );
    let message = fails(
        create(&mut admin, boolean_flag(&key.to_lowercase())).await,
        Code::InvalidArgument,
    );
    assert!(message.len() < 600, "{} bytes: {message}", message.len());
    let message = refused(
        admin
            .list_flags(pb::ListFlagsRequest {
                environment: key,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(message.len() < 300, "{} bytes: {message}", message.len());
    // Two documents of one long multibyte key: a one-line message, cut where a character
    // allows.
    let euros = "€".repeat(3000);
    let message = refused(
        admin
            .apply(pb::ApplyRequest {
                environment: "production".into(),
                source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                    flags: vec![boolean_flag(&euros), boolean_flag(&euros)],
                    segments: vec![],
                })),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(message.len() < 4200, "{} bytes", message.len());
}

#[tokio::test]
async fn rollout_plans_are_checked_at_the_edge() {
    let (_server, mut admin) = production().await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let start = |bucket_by: &str, stages: usize| pb::StartRolloutRequest {
        environment: "production".into(),
        flag: "checkout".into(),
        target_variant: "on".into(),
        bucket_by: Some(bucket_by.to_owned()),
        stages: (0..stages)
            .map(|_| pb::RolloutStage {
                percent: 100_000,
                hold_ms: 0,
            })
            .collect(),
        ..Default::default()
    };
    let message = refused(
        admin.start_rollout(start("user\0id", 1)).await,
        Code::InvalidArgument,
    );
    assert!(message.starts_with("bucket_by: "), "{message}");
    let message = refused(
        admin.start_rollout(start(&"b".repeat(300), 1)).await,
        Code::InvalidArgument,
    );
    assert!(message.contains("over the limit of 256"), "{message}");
    let message = refused(
        admin.start_rollout(start("key", 101)).await,
        Code::InvalidArgument,
    );
    assert!(
        message.contains("101 stages, at most 100 allowed"),
        "{message}"
    );
    assert_eq!(revision(&mut admin, "production").await, 1);
}

#[tokio::test]
async fn segment_keys_and_document_environments_are_validated() {
    let (_server, mut admin) = production().await;
    let long = "k".repeat(10 * 1024);
    for (keys, problem) in [
        (vec!["a", "b", "a"], "duplicate key \"a\""),
        (vec!["a", ""], "must not be empty"),
        (vec!["a\0b"], "contains a control character"),
        (vec![long.as_str()], "over the limit of 256"),
    ] {
        let message = refused(
            admin
                .create_segment(pb::CreateSegmentRequest {
                    environment: "production".into(),
                    segment: Some(segment("staff", &keys)),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert!(message.contains(problem), "{message}");
    }
    let message = refused(
        admin
            .apply(pb::ApplyRequest {
                environment: "production".into(),
                source: Some(pb::apply_request::Source::Document(pb::Document {
                    environment: "NOT A KEY".into(),
                    flags: vec![boolean_flag("f")],
                    segments: vec![],
                })),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(
        message.starts_with("document.environment: \"NOT A KEY\""),
        "{message}"
    );
    assert_eq!(revision(&mut admin, "production").await, 0);
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_grpc_s_codes() {
    let (server, mut admin) = production().await;

    // A string that is not UTF-8: CreateFlagRequest.environment (field 1) = 0xff.
    let status = raw_unary(
        &server,
        "/flagstaff.v1.Admin/CreateFlag",
        vec![0x0a, 0x01, 0xff],
    )
    .await
    .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("not UTF-8"), "{status:?}");

    // Over 8 MiB: refused by its own limit, within the transport's.
    let mut big = boolean_flag("big");
    big.description = Some("d".repeat(9 << 20));
    let status = create(&mut admin, big).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("over the limit of 8 MiB"),
        "{status:?}"
    );

    // Over the transport's limit (64 MiB).
    let mut huge = pb::CreateFlagRequest {
        environment: "production".into(),
        comment: "c".repeat(100 << 20),
        ..Default::default()
    }
    .encode_to_vec();
    huge.shrink_to_fit();
    let status = raw_unary(&server, "/flagstaff.v1.Admin/CreateFlag", huge)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("over the limit of 64 MiB"),
        "{status:?}"
    );
    assert_eq!(revision(&mut admin, "production").await, 0);
}

#[tokio::test]
async fn watch_streams_end_with_invalid_argument_on_what_does_not_decode() {
    let (server, mut admin) = production().await;
    create_flag(&mut admin, "production", boolean_flag("f")).await;
    let token = sdk_token(&server, "service", "production").await;
    let valid = encoded(subscribe_request(subscribe("i", "", &State::default())));

    // Garbage first, garbage after a valid Subscribe, and an oversized Subscribe.
    let mut oversized = subscribe("i", "", &State::default());
    oversized.instance_id = "i".repeat(100 * 1024);
    for messages in [
        vec![vec![0xff, 0xff, 0xff]],
        vec![valid.clone(), vec![0xff, 0xff, 0xff]],
        vec![encoded(subscribe_request(oversized))],
    ] {
        let status = raw_watch(&server, &token, messages).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }

    // Identity fields over 256 bytes.
    let mut long_application = subscribe("i", "", &State::default());
    long_application.application = "a".repeat(300);
    let status = raw_watch(
        &server,
        &token,
        vec![encoded(subscribe_request(long_application))],
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("subscribe.application"),
        "{status:?}"
    );
}

#[tokio::test]
async fn acks_name_only_revisions_the_stream_delivered() {
    let (server, mut admin) = production().await;
    let revision = create_flag(&mut admin, "production", boolean_flag("f")).await;
    let token = sdk_token(&server, "service", "production").await;
    let epoch = server
        .environments
        .get("production")
        .expect("production")
        .epoch
        .clone();

    for (ack_epoch, ack_revision, says) in [
        (epoch.clone(), u64::MAX, "has sent up to revision 1"),
        (epoch.clone(), revision + 1, "has sent up to revision 1"),
        ("another-epoch".to_owned(), revision, "ack of epoch"),
    ] {
        let mut sync = server.sync_with(&token).await;
        let mut watcher = Watcher::open(
            &mut sync,
            subscribe("liar", "", &State::default()),
            State::default(),
        )
        .await
        .expect("opens");
        watcher.until(revision, LIMIT).await;
        watcher.send(pb::WatchRequest {
            request: Some(pb::watch_request::Request::Ack(pb::Ack {
                epoch: ack_epoch,
                revision: ack_revision,
            })),
        });
        let status = watcher.until_end(LIMIT).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    let clients = admin
        .list_clients(pb::ListClientsRequest {
            environment: "production".into(),
        })
        .await
        .expect("clients")
        .into_inner()
        .clients;
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].applied_revision, revision, "{clients:?}");
}

#[tokio::test]
async fn an_instance_resuming_with_nothing_to_catch_up_shows_its_revision() {
    let (server, mut admin) = production().await;
    let revision = create_flag(&mut admin, "production", boolean_flag("f")).await;
    let token = sdk_token(&server, "service", "production").await;
    let epoch = server
        .environments
        .get("production")
        .expect("production")
        .epoch
        .clone();
    let server = restarted(server).await;
    let mut admin = server.admin().await;
    let mut sync = server.sync_with(&token).await;
    let held = State {
        epoch,
        revision,
        ..State::default()
    };
    let mut watcher = Watcher::open(&mut sync, subscribe("resumed", "", &held), held)
        .await
        .expect("opens");
    // The heartbeat that says it is current.
    watcher.step().await.expect("a message");
    let clients = admin
        .list_clients(pb::ListClientsRequest {
            environment: "production".into(),
        })
        .await
        .expect("clients")
        .into_inner()
        .clients;
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].applied_revision, revision, "{clients:?}");
}

#[tokio::test]
async fn tokens_of_a_deleted_environment_never_work_again() {
    let (server, mut admin) = production().await;
    let token = sdk_token(&server, "service", "production").await;
    admin
        .delete_environment(pb::DeleteEnvironmentRequest {
            environment: "production".into(),
            confirm_protected: false,
        })
        .await
        .expect("deleted");
    create_environment(&mut admin, "production").await;
    let mut sync = server.sync_with(&token).await;
    let status = Watcher::open(
        &mut sync,
        subscribe("i", "", &State::default()),
        State::default(),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("the stream opened"));
    // Either the call or its first message says so.
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let tokens = admin
        .list_tokens(pb::ListTokensRequest {})
        .await
        .expect("tokens")
        .into_inner()
        .tokens;
    assert!(!tokens.iter().any(|t| t.name == "service"), "{tokens:?}");
}

#[tokio::test]
async fn pages_are_cut_to_fit_a_default_client() {
    let (server, mut admin) = production().await;
    // Ten flags of about 900 KB each: over 8 MiB in all, each well within 1 MiB.
    let variants: serde_json::Map<String, serde_json::Value> = (0..800)
        .map(|v| (format!("v{v}-{}", "x".repeat(100)), json!("y".repeat(1000))))
        .collect();
    let first = variants.keys().next().cloned().expect("a variant");
    for i in 0..10 {
        let document = flag(json!({
            "key": format!("f{i}"), "kind": "string", "variants": variants,
            "off_variant": first, "enabled": true, "default": {"variant": first},
        }));
        create(&mut admin, document).await.expect("created");
    }
    // A client with gRPC's default receive limit of 4 MiB reads every page.
    let mut default_client =
        flagstaff_proto::pb::admin_client::AdminClient::new(server.channel().await);
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let mut request = tonic::Request::new(pb::ListFlagsRequest {
            environment: "production".into(),
            page_token: page_token.clone(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", server.admin_token)
                .parse()
                .expect("ascii"),
        );
        let page = default_client
            .list_flags(request)
            .await
            .expect("a page fits")
            .into_inner();
        assert!(!page.flags.is_empty());
        assert!(page.flags.len() < 10, "the page was cut");
        seen.extend(
            page.flags
                .iter()
                .filter_map(|e| e.flag.as_ref())
                .map(|f| f.key.clone()),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let expected: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn usage_is_kept_only_for_flags_that_exist() {
    let (server, mut admin) = production().await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let token = sdk_token(&server, "service", "production").await;
    let mut sync = server.sync_with(&token).await;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("in range");
    let count = |flag: String| pb::EvaluationCount {
        flag,
        variant: "off".into(),
        version: 1,
        count: 3,
    };
    let mut evaluations: Vec<_> = (0..1000).map(|i| count(format!("made-up-{i}"))).collect();
    evaluations.push(count("checkout".into()));
    sync.report_metrics(pb::ReportMetricsRequest {
        instance_id: "i".into(),
        windows: vec![pb::MetricsWindow {
            start_unix_ms: now - 1000,
            end_unix_ms: now,
            evaluations,
            events: vec![],
        }],
        ..Default::default()
    })
    .await
    .expect("reported");
    let env = server.environments.get("production").expect("production");
    assert_eq!(env.usage("checkout").map(|u| u.evaluations), Some(3));
    assert_eq!(env.usage("made-up-7"), None);
    let data_dir = server.stop().await;
    let server = TestServer::builder().data_dir(data_dir).start().await;
    let env = server.environments.get("production").expect("production");
    assert_eq!(env.usage("checkout").map(|u| u.evaluations), Some(3));
    assert_eq!(env.usage("made-up-7"), None);
}

#[tokio::test]
async fn a_resume_across_a_damaged_change_log_entry_gets_a_snapshot() {
    if flagstaff_tests::skip_unless_sled("damages a change-log record in sled") {
        return;
    }
    let (server, mut admin) = production().await;
    create_flag(&mut admin, "production", boolean_flag("f")).await;
    for enabled in [false, true] {
        admin
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: "production".into(),
                key: "f".into(),
                enabled,
                ..Default::default()
            })
            .await
            .expect("switched");
    }
    let token = sdk_token(&server, "service", "production").await;
    let epoch = server
        .environments
        .get("production")
        .expect("production")
        .epoch
        .clone();
    let data_dir = server.stop().await;
    {
        let db = sled::open(data_dir.path()).expect("sled");
        db.open_tree("changes/production")
            .expect("tree")
            .insert(2u64.to_be_bytes(), b"not a change".as_slice())
            .expect("damaged");
        db.flush().expect("flushed");
    }
    let server = TestServer::builder().data_dir(data_dir).start().await;
    let mut sync = server.sync_with(&token).await;
    let held = State {
        epoch,
        revision: 1,
        ..State::default()
    };
    let mut watcher = Watcher::open(&mut sync, subscribe("i", "", &held), held)
        .await
        .expect("opens");
    watcher.until(3, LIMIT).await;
    assert_eq!(watcher.received.first_was_snapshot, Some(true));
}

#[tokio::test]
async fn an_apply_whose_changes_would_not_fit_a_response_is_answered_abridged() {
    let (_server, mut admin) = production().await;
    // Twenty flags of about 950 KB: their afters fit a response, afters and befores do not.
    let documents = |marker: &str| pb::DocumentSet {
        flags: (0..20)
            .map(|i| {
                flag(json!({
                    "key": format!("f{i}"), "kind": "string",
                    "variants": {"big": format!("{marker}{}", "x".repeat(950_000)), "small": ""},
                    "off_variant": "small", "enabled": true, "default": {"variant": "small"},
                }))
            })
            .collect(),
        segments: vec![],
    };
    let apply = |set: pb::DocumentSet| pb::ApplyRequest {
        environment: "production".into(),
        source: Some(pb::apply_request::Source::Documents(set)),
        ..Default::default()
    };
    let created = admin
        .apply(apply(documents("a")))
        .await
        .expect("created")
        .into_inner();
    assert!(!created.changes_abridged);
    assert_eq!(created.changes.len(), 20);
    let replaced = admin
        .apply(apply(documents("b")))
        .await
        .expect("replaced, and the answer fits")
        .into_inner();
    assert!(replaced.changes_abridged);
    assert_eq!(replaced.revision, 2);
    assert_eq!(replaced.changes.len(), 20);
    for change in &replaced.changes {
        let Some(pb::change::Document::Flag(flag)) = &change.document else {
            panic!("a flag change");
        };
        assert!(flag.key.starts_with('f'));
        let (before, after) = (
            flag.before.as_ref().expect("before"),
            flag.after.as_ref().expect("after"),
        );
        assert_eq!((before.version, after.version), (Some(1), Some(2)));
        assert!(after.variants.is_empty());
    }
}
