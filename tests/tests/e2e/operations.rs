//! What operators and generic tools rely on: gRPC health, server reflection, the Prometheus
//! metrics endpoint, TLS, and that all of them stop with the server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_tests::{eventually, TestServer};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::fixtures::{boolean_flag, create_environment, create_flag, refused, self_signed};

// ---- Health ----

async fn health_status(client: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
        .into_inner()
        .status
}

#[tokio::test]
async fn health_reports_the_server_and_its_services_serving() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    assert_eq!(
        health_status(&mut health, "").await,
        ServingStatus::Serving as i32
    );
    // On PostgreSQL, Admin is NOT_SERVING for the moment the server takes to start following
    // the database (docs/operations.md, "Health").
    eventually("the Admin service serving", async || {
        health_status(&mut health, "flagstaff.v1.Admin").await == ServingStatus::Serving as i32
    })
    .await;
    assert_eq!(
        health_status(&mut health, "flagstaff.v1.Sync").await,
        ServingStatus::Serving as i32
    );
    // A service this server does not have is not claimed.
    let message = refused(
        health
            .check(HealthCheckRequest {
                service: "flagstaff.v1.Nothing".into(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(message, "service not registered");
}

#[tokio::test]
async fn health_watchers_see_not_serving_and_their_streams_end_when_the_server_stops() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "flagstaff.v1.Admin".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    // Serving once the server follows the database (at once on sled).
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let status = watch.message().await.expect("a status").expect("open");
            if status.status == ServingStatus::Serving as i32 {
                break;
            }
        }
    })
    .await
    .expect("SERVING arrives");

    // A graceful stop waits for calls in flight: it returns only if the watch ends.
    let stopping = tokio::spawn(server.stop());
    let within = Duration::from_secs(10);
    let last = tokio::time::timeout(within, watch.message())
        .await
        .expect("NOT_SERVING arrives")
        .expect("a status")
        .expect("open");
    assert_eq!(last.status, ServingStatus::NotServing as i32);
    let end = tokio::time::timeout(within, watch.message())
        .await
        .expect("the stream ends");
    assert!(end.expect("ends cleanly").is_none(), "the stream ends");
    tokio::time::timeout(within, stopping)
        .await
        .expect("the server stops despite the health watcher")
        .expect("stop");
}

// ---- Reflection ----

#[tokio::test]
async fn reflection_v1_lists_the_services_and_describes_admin() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = TestServer::start().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = |message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([
            request(MessageRequest::ListServices(String::new())),
            request(MessageRequest::FileContainingSymbol(
                "flagstaff.v1.Admin".into(),
            )),
        ]))
        .await
        .expect("reflection")
        .into_inner();

    let listed = responses.message().await.expect("answer").expect("open");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("not a service list: {listed:?}");
    };
    let mut services: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    services.sort();
    assert_eq!(
        services,
        [
            "flagstaff.v1.Admin",
            "flagstaff.v1.Sync",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ]
    );

    let described = responses.message().await.expect("answer").expect("open");
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        panic!("not a file descriptor: {described:?}");
    };
    let admin = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(&bytes[..]).expect("descriptor"))
        .find(|file| file.name() == "flagstaff/v1/admin.proto")
        .expect("admin.proto is described");
    let service = admin
        .service
        .iter()
        .find(|s| s.name() == "Admin")
        .expect("service Admin");
    let create_flag = service
        .method
        .iter()
        .find(|m| m.name() == "CreateFlag")
        .expect("method CreateFlag");
    assert_eq!(create_flag.input_type(), ".flagstaff.v1.CreateFlagRequest");
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_services_for_older_tools() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;

    let server = TestServer::start().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .expect("reflection")
        .into_inner();
    let listed = responses.message().await.expect("answer").expect("open");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("not a service list: {listed:?}");
    };
    let services: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        services.iter().any(|s| s == "flagstaff.v1.Admin"),
        "{services:?}"
    );
}

// ---- Metrics ----

/// A scrape, parsed: the families' types and every sample by name and labels.
#[derive(Debug)]
struct Scrape {
    types: HashMap<String, String>,
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Scrape {
    /// Parses the Prometheus text format, strictly: every line is a `# HELP`, a `# TYPE` or
    /// a sample of a family whose TYPE came before it.
    fn parse(text: &str) -> Scrape {
        let mut types = HashMap::new();
        let mut helped = Vec::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let (name, text) = help.split_once(' ').expect("HELP name text");
                assert!(!text.is_empty(), "empty HELP for {name}");
                helped.push(name.to_owned());
            } else if let Some(kind) = line.strip_prefix("# TYPE ") {
                let (name, kind) = kind.split_once(' ').expect("TYPE name kind");
                assert!(matches!(kind, "counter" | "gauge"), "{line}");
                assert!(helped.iter().any(|h| h == name), "TYPE before HELP: {line}");
                types.insert(name.to_owned(), kind.to_owned());
            } else {
                let (series, value) = line.rsplit_once(' ').expect("sample value");
                let value: f64 = value.parse().expect("numeric value");
                let (name, labels) = match series.split_once('{') {
                    None => (series.to_owned(), BTreeMap::new()),
                    Some((name, rest)) => {
                        let rest = rest.strip_suffix('}').expect("closing brace");
                        (name.to_owned(), parse_labels(rest))
                    }
                };
                assert!(types.contains_key(&name), "sample before TYPE: {line}");
                let duplicate = samples.insert((name, labels), value);
                assert!(duplicate.is_none(), "duplicate series: {line}");
            }
        }
        Scrape { types, samples }
    }

    /// A sample's value; `None` when the series is absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// Every series of a family: its labels (values only, in label-name order) and value.
    fn family(&self, name: &str) -> Vec<(Vec<&str>, f64)> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, labels), value)| (labels.values().map(String::as_str).collect(), *value))
            .collect()
    }
}

/// `a="x",b="y\"z"` to a map, unescaping `\\`, `\"` and `\n`.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {name} is quoted");
        let mut value = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '"' => break,
                '\\' => match chars.next().expect("escaped character") {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        match chars.next() {
            None | Some(',') => {}
            Some(c) => panic!("unexpected {c:?} after a label"),
        }
    }
    labels
}

/// One HTTP/1.1 request to `addr`: the status line, the headers (names lower-case) and the
/// body. The server closes the connection after answering.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (String, HashMap<String, String>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    stream
        .write_all(format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("request sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response read");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status line").to_owned();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(": ").expect("header");
            (name.to_lowercase(), value.to_owned())
        })
        .collect::<HashMap<_, _>>();
    let length: usize = headers["content-length"].parse().expect("length");
    if method != "HEAD" {
        assert_eq!(body.len(), length, "Content-Length matches the body");
    }
    (status, headers, body.to_owned())
}

async fn scrape(server: &TestServer) -> Scrape {
    let addr = server.metrics_addr.expect("metrics served");
    let (status, headers, body) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(&body)
}

#[tokio::test]
async fn metrics_count_writes_revisions_flags_and_requests() {
    let server = TestServer::builder().metrics().start().await;
    let mut admin = server.admin().await;

    let empty = scrape(&server).await;
    assert_eq!(empty.types["flagstaff_writes_total"], "counter");
    assert_eq!(empty.types["flagstaff_environment_revision"], "gauge");
    assert_eq!(empty.types["flagstaff_flags"], "gauge");
    assert_eq!(empty.types["flagstaff_connected_sdks"], "gauge");
    assert_eq!(empty.types["flagstaff_grpc_requests_total"], "counter");
    assert_eq!(empty.types["flagstaff_leader"], "gauge");
    // One flagstaffd alone (or the one holding the lease on PostgreSQL) leads.
    eventually("this flagstaffd to lead", async || {
        scrape(&server).await.get("flagstaff_leader", &[]) == Some(1.0)
    })
    .await;
    assert!(
        empty
            .samples
            .keys()
            .all(|(name, _)| name == "flagstaff_leader"),
        "{:?}",
        empty.samples
    );

    create_environment(&mut admin, "staging").await;
    create_environment(&mut admin, "production").await;
    for key in ["a", "b", "c"] {
        create_flag(&mut admin, "staging", boolean_flag(key)).await;
    }
    create_flag(&mut admin, "production", boolean_flag("a")).await;
    // Refused: nothing committed.
    refused(
        admin
            .create_flag(pb::CreateFlagRequest {
                environment: "staging".into(),
                flag: Some(boolean_flag("a")),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
    );
    let enable = |enabled| pb::SetFlagEnabledRequest {
        environment: "staging".into(),
        key: "b".into(),
        enabled,
        ..Default::default()
    };
    // Already enabled: answered, but nothing committed.
    admin.set_flag_enabled(enable(true)).await.expect("no-op");
    // Committed: staging's fourth revision.
    admin
        .set_flag_enabled(enable(false))
        .await
        .expect("disabled");
    refused(
        server
            .admin_with(None)
            .await
            .list_environments(pb::ListEnvironmentsRequest::default())
            .await,
        Code::Unauthenticated,
    );
    // A method no service has counts as "unknown", whatever its path.
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.expect("ready");
    let invented: Result<tonic::Response<pb::ListEnvironmentsResponse>, _> = grpc
        .unary(
            tonic::Request::new(pb::ListEnvironmentsRequest::default()),
            tonic::codegen::http::uri::PathAndQuery::from_static("/flagstaff.v1.Admin/Invented"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    refused(invented, Code::Unimplemented);

    let scrape = scrape(&server).await;
    let per_env = |name: &str| {
        scrape
            .family(name)
            .into_iter()
            .map(|(labels, value)| (labels.join(","), value))
            .collect::<Vec<_>>()
    };
    let pairs = |items: &[(&str, f64)]| {
        items
            .iter()
            .map(|(l, v)| (l.to_string(), *v))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        per_env("flagstaff_writes_total"),
        pairs(&[("production", 1.0), ("staging", 4.0)])
    );
    assert_eq!(
        per_env("flagstaff_environment_revision"),
        pairs(&[("production", 1.0), ("staging", 4.0)])
    );
    assert_eq!(
        per_env("flagstaff_flags"),
        pairs(&[("production", 1.0), ("staging", 3.0)])
    );
    assert_eq!(
        per_env("flagstaff_connected_sdks"),
        pairs(&[("production", 0.0), ("staging", 0.0)])
    );
    // Labels come in name order: code, then method.
    let mut requests = scrape
        .family("flagstaff_grpc_requests_total")
        .into_iter()
        .map(|(labels, value)| (labels[1].to_owned(), labels[0].to_owned(), value))
        .collect::<Vec<_>>();
    requests.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        requests,
        [
            ("flagstaff.v1.Admin/CreateEnvironment", "OK", 2.0),
            ("flagstaff.v1.Admin/CreateFlag", "ALREADY_EXISTS", 1.0),
            ("flagstaff.v1.Admin/CreateFlag", "OK", 4.0),
            (
                "flagstaff.v1.Admin/ListEnvironments",
                "UNAUTHENTICATED",
                1.0
            ),
            ("flagstaff.v1.Admin/SetFlagEnabled", "OK", 2.0),
            ("unknown", "UNIMPLEMENTED", 1.0),
        ]
        .map(|(m, c, v)| (m.to_owned(), c.to_owned(), v))
    );
    assert_eq!(
        scrape.get("flagstaff_writes_total", &[("environment", "staging")]),
        Some(4.0)
    );
}

#[tokio::test]
async fn the_metrics_endpoint_answers_only_get_metrics_and_stops_with_the_server() {
    let server = TestServer::builder().metrics().start().await;
    let addr = server.metrics_addr.expect("metrics served");

    let (status, _, body) = http(addr, "GET", "/").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(
        body,
        "not found: flagstaffd serves its metrics at /metrics\n"
    );
    let (status, headers, _) = http(addr, "POST", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, headers, body) = http(addr, "HEAD", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.is_empty());
    assert_ne!(headers["content-length"], "0");

    // An idle connection that never sends a request does not hold up the stop.
    let _idle = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("stops");
    tokio::net::TcpStream::connect(addr)
        .await
        .expect_err("the metrics endpoint is closed");
}

// ---- TLS ----

#[tokio::test]
async fn tls_serves_clients_that_trust_the_certificate() {
    let server = TestServer::builder().tls(self_signed()).start().await;
    // The server's clients connect with https and trust its certificate.
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    let listed = admin
        .list_environments(pb::ListEnvironmentsRequest::default())
        .await
        .expect("listed over TLS")
        .into_inner();
    assert_eq!(listed.environments.len(), 1);
    let mut health = HealthClient::new(server.channel().await);
    assert_eq!(
        health_status(&mut health, "").await,
        ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn tls_refuses_plain_text_and_clients_that_do_not_trust_the_certificate() {
    let server = TestServer::builder().tls(self_signed()).start().await;

    let plain = async {
        let channel = Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| e.to_string())
    };
    plain.await.expect_err("a plain-text client gets no answer");

    let stranger = async {
        let channel = Endpoint::from_shared(format!("https://{}", server.addr))
            .expect("endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(self_signed().cert))
                    .domain_name("localhost"),
            )
            .expect("client TLS configuration")
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| e.to_string())
    };
    stranger
        .await
        .expect_err("a client trusting another certificate does not connect");

    // The server is still fine for a client that trusts it.
    let mut health = HealthClient::new(server.channel().await);
    assert_eq!(
        health_status(&mut health, "").await,
        ServingStatus::Serving as i32
    );
}

/// Overwrites records of a stopped server's store with what does not read back: bytes that
/// are not JSON in sled, JSON of the wrong shape in PostgreSQL (whose `json` columns take
/// nothing else). A record is named as in sled: the tree (`flags/production`) and the key.
async fn damage(data_dir: &std::path::Path, database: Option<&str>, records: &[(&str, &str)]) {
    let Some(url) = database else {
        let db = sled::open(data_dir).expect("the data directory opens");
        for (tree, key) in records {
            db.open_tree(tree)
                .expect("tree")
                .insert(key.as_bytes(), b"{\"key\": 7, garbage".as_slice())
                .expect("damaged");
        }
        db.flush().expect("flushed");
        return;
    };
    let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    for (tree, key) in records {
        let (table, environment) = tree.split_once('/').expect("kind/environment");
        let damaged = db
            .execute(
                &format!(
                    "UPDATE {table} SET document = '{{\"key\": 7}}' \
                     WHERE environment = $1 AND key = $2"
                ),
                &[&environment, key],
            )
            .await
            .expect("damaged");
        assert_eq!(damaged, 1, "{tree}/{key}");
    }
}

#[tokio::test]
async fn a_damaged_record_takes_only_its_environment_out_of_service_until_repaired() {
    use crate::fixtures::{eventually, get_flag, sdk_client, sdk_token, segment};
    let server = TestServer::start().await;
    let addr = server.addr;
    let mut admin = server.admin().await;
    for environment in ["production", "staging"] {
        create_environment(&mut admin, environment).await;
        create_flag(&mut admin, environment, boolean_flag("checkout")).await;
    }
    admin
        .create_segment(pb::CreateSegmentRequest {
            environment: "production".into(),
            segment: Some(segment("staff", &["u1", "u2", "u3"])),
            ..Default::default()
        })
        .await
        .expect("segment");
    admin
        .patch_segment_keys(pb::PatchSegmentKeysRequest {
            environment: "production".into(),
            patch: Some(pb::SegmentKeyPatch {
                segment: "staff".into(),
                add_included: vec!["u4".into()],
                remove_included: vec!["u2".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("patched");
    let enabled = admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "production".into(),
            key: "checkout".into(),
            enabled: false,
            ..Default::default()
        })
        .await
        .expect("switched off")
        .into_inner()
        .revision;
    let before_flag = get_flag(&mut admin, "production", "checkout").await;
    let token = sdk_token(&server, "checkout-service", "production").await;
    let client = sdk_client(server.endpoint(), &token, "checkout-service");
    client
        .wait_ready(crate::fixtures::PATIENCE)
        .await
        .expect("ready");
    assert_eq!(client.status().revision, enabled);

    let database = server.database_url.clone();
    let data_dir = server.stop().await;
    damage(
        data_dir.path(),
        database.as_deref(),
        &[
            ("flags/production", "checkout"),
            ("segments/production", "staff"),
        ],
    )
    .await;

    // The server starts; staging serves; production answers UNAVAILABLE naming the record.
    let server = TestServer::builder()
        .data_dir(data_dir)
        .addr(addr)
        .metrics()
        .start()
        .await;
    let mut admin = server.admin().await;
    get_flag(&mut admin, "staging", "checkout").await;
    let message = refused(
        admin
            .get_flag(pb::GetFlagRequest {
                environment: "production".into(),
                key: "checkout".into(),
            })
            .await,
        Code::Unavailable,
    );
    assert!(message.contains("flags/production/checkout"), "{message}");
    let (_, _, metrics) = http(server.metrics_addr.expect("metrics"), "GET", "/metrics").await;
    assert!(
        metrics.contains("flagstaff_environment_damaged{environment=\"production\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("flagstaff_environment_damaged{environment=\"staging\"}"));
    // The SDK keeps serving its last snapshot (real time: for a refresh to have had the
    // chance to replace it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!client.bool_value("checkout", &flagstaff::Context::new("u"), true));
    assert_eq!(client.status().revision, enabled);

    // check names both records; repair restores them from the audit log.
    let data_dir = server.stop().await;
    {
        let store = flagstaff_tests::open_store(data_dir.path());
        let damaged: Vec<String> = flagstaff_server::repair::check(&store)
            .expect("checked")
            .into_iter()
            .map(|d| d.record)
            .collect();
        assert_eq!(
            damaged,
            ["flags/production/checkout", "segments/production/staff"]
        );
        let outcomes = flagstaff_server::repair::repair(&store).expect("repaired");
        assert_eq!(outcomes.len(), 2);
        assert!(
            outcomes.iter().all(|(_, outcome)| matches!(
                outcome,
                flagstaff_server::repair::Outcome::Restored { .. }
            )),
            "{outcomes:?}"
        );
        assert!(flagstaff_server::repair::check(&store)
            .expect("checked")
            .is_empty());
    }

    // Served again, as it was, one audited revision later; the SDK receives it as a delta.
    let server = TestServer::builder()
        .data_dir(data_dir)
        .addr(addr)
        .start()
        .await;
    let mut admin = server.admin().await;
    let restored = get_flag(&mut admin, "production", "checkout").await;
    assert_eq!(restored.version, Some(enabled + 1));
    assert_eq!(
        pb::Flag {
            version: None,
            ..restored
        },
        pb::Flag {
            version: None,
            ..before_flag
        }
    );
    let staff = admin
        .get_segment(pb::GetSegmentRequest {
            environment: "production".into(),
            key: "staff".into(),
        })
        .await
        .expect("segment")
        .into_inner()
        .segment
        .expect("segment");
    assert_eq!(staff.included, ["u1", "u3", "u4"]);
    let history = admin
        .list_history(pb::ListHistoryRequest {
            environment: "production".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .entries;
    assert_eq!(history[0].actor, "flagstaffd repair");
    eventually("the repair's revision", async || {
        client.status().revision == enabled + 1
    })
    .await;
    assert_eq!(client.stats().snapshots, 1, "the repair arrives as a delta");
    drop(client);

    // Damaged again and repaired again: the earlier repair's entry lists every key as added,
    // and the lists are rebuilt from it, not doubled.
    let data_dir = server.stop().await;
    damage(
        data_dir.path(),
        database.as_deref(),
        &[("segments/production", "staff")],
    )
    .await;
    {
        let store = flagstaff_tests::open_store(data_dir.path());
        flagstaff_server::repair::repair(&store).expect("repaired");
    }
    let server = TestServer::builder().data_dir(data_dir).start().await;
    let mut admin = server.admin().await;
    let staff = admin
        .get_segment(pb::GetSegmentRequest {
            environment: "production".into(),
            key: "staff".into(),
        })
        .await
        .expect("segment")
        .into_inner()
        .segment
        .expect("segment");
    assert_eq!(staff.included, ["u1", "u3", "u4"]);
}
