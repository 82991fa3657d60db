//! The change-notification stream: the bulk endpoint advertises it behind a ticket; each
//! revision makes exactly one event; `Last-Event-ID` replays what a reconnecting provider
//! missed; revocation, deletion and shutdown end it.

use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_server::ofrep::OfrepOptions;
use flagstaff_tests::{TestServer, PATIENCE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{load, token, Http, FLAGS};
use crate::fixtures::revoke_named;

const ALL: &str = "/ofrep/v1/evaluate/flags";

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: String,
    event: String,
    data: Value,
}

/// An open event stream, read event by event.
struct Sse {
    response: reqwest::Response,
    text: String,
}

impl Sse {
    /// The next event, skipping `retry:` and comment lines; `None` when the stream ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut event = Event {
                    id: String::new(),
                    event: String::new(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        event.id = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // retry: or a heartbeat comment
                }
                event.data = serde_json::from_str(&data).expect("JSON data");
                return Some(event);
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the stream sends or ends in time")
                .expect("readable");
            self.text.push_str(&String::from_utf8_lossy(&chunk?));
        }
    }

    /// Whether nothing but heartbeats comes for `wait`.
    async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.next()).await.is_err()
    }
}

/// Opens the stream at `uri` (relative to the server), with `Last-Event-ID` if given.
async fn open(
    http: &Http,
    uri: &str,
    last_event_id: Option<&str>,
) -> Result<Sse, (StatusCode, Value)> {
    let mut request = http.client().get(http.url(uri));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.expect("answered");
    if response.status() != StatusCode::OK {
        let answer = super::answer(response).await;
        return Err((answer.status, answer.body));
    }
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    Ok(Sse {
        response,
        text: String::new(),
    })
}

/// The advertised stream of a bulk evaluation with `token`: its request URI.
async fn advertised(http: &Http, token: &str) -> String {
    let bulk = http
        .post(
            ALL,
            Some(token),
            &json!({"context": {"targetingKey": "u1"}}),
        )
        .await;
    assert_eq!(bulk.status, StatusCode::OK, "{}", bulk.body);
    let stream = &bulk.body["eventStreams"][0];
    assert_eq!(stream["type"], "sse");
    assert_eq!(stream["inactivityDelaySec"], 120);
    assert!(stream.get("url").is_none(), "{stream}");
    let uri = stream["endpoint"]["requestUri"]
        .as_str()
        .expect("requestUri");
    assert!(uri.starts_with("/ofrep/v1/events?ticket="), "{uri}");
    assert!(!uri.contains(token), "the URL never carries the token");
    uri.to_owned()
}

/// Flips `retired` in `production`; returns the new revision.
async fn change(server: &TestServer, enabled: bool) -> u64 {
    server
        .admin()
        .await
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "production".into(),
            key: "retired".into(),
            enabled,
            ..Default::default()
        })
        .await
        .expect("changed")
        .into_inner()
        .revision
}

async fn epoch(server: &TestServer) -> String {
    server
        .admin()
        .await
        .list_environments(pb::ListEnvironmentsRequest::default())
        .await
        .expect("environments")
        .into_inner()
        .environments
        .remove(0)
        .epoch
}

fn refetch(epoch: &str, revision: u64) -> (String, String, Value, Value) {
    let tag = format!("{epoch}.{revision}");
    (
        tag.clone(),
        "message".to_owned(),
        json!("refetchEvaluation"),
        json!(tag),
    )
}

fn parts(event: &Event) -> (String, String, Value, Value) {
    (
        event.id.clone(),
        event.event.clone(),
        event.data["type"].clone(),
        event.data["etag"].clone(),
    )
}

#[tokio::test]
async fn each_change_makes_exactly_one_event_naming_its_revision() {
    let server = TestServer::start().await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let client = token(&server, "web", pb::Role::Client, "production").await;
    let http = Http::new(&server);
    let epoch = epoch(&server).await;
    let uri = advertised(&http, &client).await;
    let mut stream = open(&http, &uri, None).await.expect("opened");

    let first = change(&server, true).await;
    let event = stream.next().await.expect("an event");
    assert_eq!(parts(&event), refetch(&epoch, first));
    assert!(event.data["lastModified"]
        .as_u64()
        .is_some_and(|t| t > 1_700_000_000));
    let second = change(&server, false).await;
    assert_eq!(
        parts(&stream.next().await.expect("an event")),
        refetch(&epoch, second)
    );
    assert!(
        stream.quiet_for(Duration::from_millis(300)).await,
        "no event twice"
    );

    // The event's etag, sent back as flagConfigEtag, is a revision this server has.
    let refetched = http
        .post(
            &format!("{ALL}?flagConfigEtag={epoch}.{second}"),
            Some(&client),
            &json!({"context": {"targetingKey": "u1"}}),
        )
        .await;
    assert_eq!(refetched.status, StatusCode::OK);
    assert_eq!(refetched.body["metadata"]["revision"], second);
}

#[tokio::test]
async fn a_change_between_the_evaluation_and_the_connection_is_announced() {
    let server = TestServer::start().await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let sdk = token(&server, "service", pb::Role::Sdk, "production").await;
    let http = Http::new(&server);
    let epoch = epoch(&server).await;
    let uri = advertised(&http, &sdk).await;
    let missed = change(&server, true).await;
    let mut stream = open(&http, &uri, None).await.expect("opened");
    assert_eq!(
        parts(&stream.next().await.expect("an event")),
        refetch(&epoch, missed)
    );
}

#[tokio::test]
async fn reconnecting_with_last_event_id_replays_what_was_missed() {
    let server = TestServer::start().await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let client = token(&server, "web", pb::Role::Client, "production").await;
    let http = Http::new(&server);
    let epoch = epoch(&server).await;
    let uri = advertised(&http, &client).await;
    let mut stream = open(&http, &uri, None).await.expect("opened");
    let seen = change(&server, true).await;
    let last = stream.next().await.expect("an event").id;
    drop(stream);

    let missed = [change(&server, false).await, change(&server, true).await];
    let mut stream = open(&http, &uri, Some(&last)).await.expect("reopened");
    assert_eq!(last, format!("{epoch}.{seen}"));
    for revision in missed {
        assert_eq!(
            parts(&stream.next().await.expect("a replayed event")),
            refetch(&epoch, revision)
        );
    }
    assert!(
        stream.quiet_for(Duration::from_millis(300)).await,
        "nothing else"
    );

    // A Last-Event-ID of another epoch (a recreated environment): one event for now.
    let mut stream = open(&http, &uri, Some("elsewhere.3"))
        .await
        .expect("reopened");
    assert_eq!(
        parts(&stream.next().await.expect("an event")),
        refetch(&epoch, missed[1])
    );
}

#[tokio::test]
async fn revocation_ends_the_stream_and_its_ticket_then_gets_401() {
    let server = TestServer::start().await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let client = token(&server, "web", pb::Role::Client, "production").await;
    let http = Http::new(&server);
    let uri = advertised(&http, &client).await;
    let mut stream = open(&http, &uri, None).await.expect("opened");

    let mut admin = server.admin().await;
    revoke_named(&mut admin, "web").await;
    assert_eq!(stream.next().await, None, "the stream ends");
    let (status, body) = open(&http, &uri, None).await.err().expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errorDetails"], "the token has been revoked");
}

#[tokio::test]
async fn deleting_the_environment_or_stopping_the_server_ends_streams() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    // An environment is deleted once it is empty.
    let empty = |key: &'static str| pb::CreateEnvironmentRequest {
        environment: key.into(),
        ..Default::default()
    };
    admin
        .create_environment(empty("scratch"))
        .await
        .expect("created");
    load(&mut admin, "production", FLAGS).await;
    let scratch = token(&server, "scratch-web", pb::Role::Client, "scratch").await;
    let production = token(&server, "web", pb::Role::Sdk, "production").await;
    let http = Http::new(&server);
    let scratch_uri = advertised(&http, &scratch).await;
    let production_uri = advertised(&http, &production).await;
    let mut deleted = open(&http, &scratch_uri, None).await.expect("opened");
    let mut running = open(&http, &production_uri, None).await.expect("opened");

    admin
        .delete_environment(pb::DeleteEnvironmentRequest {
            environment: "scratch".into(),
            confirm_protected: false,
        })
        .await
        .expect("deleted");
    assert_eq!(
        deleted.next().await,
        None,
        "the deleted environment's stream ends"
    );
    // Its tickets are refused, also once an environment of that name exists again.
    admin
        .create_environment(empty("scratch"))
        .await
        .expect("created again");
    let (status, _) = open(&http, &scratch_uri, None)
        .await
        .err()
        .expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Shutdown ends the other one, and the server stops without waiting for it.
    let stopping = tokio::spawn(server.stop());
    assert_eq!(running.next().await, None, "streams end at shutdown");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("the server stops")
        .expect("stopped");
}

#[tokio::test]
async fn a_missing_forged_or_foreign_ticket_is_refused() {
    let server = TestServer::start().await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let http = Http::new(&server);
    let (status, body) = open(&http, "/ofrep/v1/events", None)
        .await
        .err()
        .expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["errorDetails"]
        .as_str()
        .expect("details")
        .starts_with("no ticket"));
    for ticket in ["garbage", "AAAA", &"x".repeat(10_000)] {
        let (status, body) = open(&http, &format!("/ofrep/v1/events?ticket={ticket}"), None)
            .await
            .err()
            .expect("refused");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{ticket:.20}");
        assert!(body["errorDetails"]
            .as_str()
            .expect("details")
            .starts_with("the ticket is not valid"));
    }
    // A ticket of another server (another key) is refused too.
    let other = TestServer::start().await;
    load(&mut other.admin().await, "production", FLAGS).await;
    let sdk = token(&other, "service", pb::Role::Sdk, "production").await;
    let foreign = advertised(&Http::new(&other), &sdk).await;
    let (status, _) = open(&http, &foreign, None).await.err().expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn with_a_public_url_the_stream_url_is_absolute() {
    let server = TestServer::builder()
        .ofrep(OfrepOptions {
            public_url: Some("https://flags.example.com/".into()),
            ..OfrepOptions::default()
        })
        .start()
        .await;
    load(&mut server.admin().await, "production", FLAGS).await;
    let sdk = token(&server, "service", pb::Role::Sdk, "production").await;
    let bulk = Http::new(&server)
        .post(ALL, Some(&sdk), &json!({"context": {}}))
        .await;
    let stream = &bulk.body["eventStreams"][0];
    let url = stream["url"].as_str().expect("url");
    assert!(
        url.starts_with("https://flags.example.com/ofrep/v1/events?ticket="),
        "{url}"
    );
    assert!(stream.get("endpoint").is_none());
}
