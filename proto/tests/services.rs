//! The generated services are real: a tiny Sync server, served by tonic on 127.0.0.1:0,
//! answers the generated client's Watch subscribe with a chunked snapshot (sent as encoded
//! `WatchMessage`s, as flagstaffd shares them between streams), reads the client's
//! acknowledgement and answers it with a heartbeat (a message made for the stream); and a
//! unary call works the same way.

use std::pin::Pin;

use flagstaff_proto::pb::{
    self, sync_client::SyncClient, sync_server::SyncServer, watch_request, watch_response,
};
use flagstaff_proto::watch::WatchMessage;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::transport::{server::TcpIncoming, Server};
use tonic::{Request, Response, Status, Streaming};

type Error = Box<dyn std::error::Error>;

/// The snapshot the server holds: two flags and a segment whose keys take two chunks.
fn snapshot() -> Vec<watch_response::Response> {
    use watch_response::Response as R;
    let flag = |key: &str| pb::Flag {
        key: key.to_owned(),
        version: Some(7),
        ..pb::Flag::default()
    };
    vec![
        R::SnapshotBegin(pb::SnapshotBegin {
            epoch: "epoch-1".to_owned(),
            revision: 7,
            heartbeat_interval_ms: 15_000,
            flag_count: 2,
            segment_count: 1,
        }),
        R::SnapshotChunk(pb::SnapshotChunk {
            flags: vec![flag("checkout-v2")],
            segments: vec![pb::Segment {
                key: "staff".to_owned(),
                included: vec!["user-1".to_owned()],
                version: Some(3),
                ..pb::Segment::default()
            }],
            segment_keys: vec![],
        }),
        R::SnapshotChunk(pb::SnapshotChunk {
            flags: vec![flag("search")],
            segments: vec![],
            segment_keys: vec![pb::SegmentKeyPatch {
                segment: "staff".to_owned(),
                add_included: vec!["user-2".to_owned()],
                ..pb::SegmentKeyPatch::default()
            }],
        }),
        R::SnapshotEnd(pb::SnapshotEnd {}),
    ]
}

struct TinySync;

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::sync_server::Sync for TinySync {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let mut requests = request.into_inner();
        match requests.message().await?.and_then(|m| m.request) {
            Some(watch_request::Request::Subscribe(s)) if s.since_revision == 0 => {}
            other => return Err(Status::invalid_argument(format!("{other:?}"))),
        }
        // The snapshot, then a heartbeat answering the first acknowledgement.
        let snapshot = tokio_stream::iter(snapshot()).map(|response| {
            WatchMessage::encoded(&pb::WatchResponse {
                response: Some(response),
            })
        });
        let heartbeat = requests
            .filter_map(|request| match request.ok()?.request? {
                watch_request::Request::Ack(ack) => {
                    Some(watch_response::Response::Heartbeat(pb::Heartbeat {
                        revision: ack.revision,
                    }))
                }
                watch_request::Request::Subscribe(_) => None,
            })
            .take(1)
            .map(|response| {
                WatchMessage::Message(pb::WatchResponse {
                    response: Some(response),
                })
            });
        let responses = snapshot.chain(heartbeat).map(Ok);
        Ok(Response::new(Box::pin(responses)))
    }

    async fn report_metrics(
        &self,
        request: Request<pb::ReportMetricsRequest>,
    ) -> Result<Response<pb::ReportMetricsResponse>, Status> {
        // Guards every flag the report counted, so the answer depends on the request.
        let guards = request
            .into_inner()
            .windows
            .iter()
            .flat_map(|window| &window.evaluations)
            .map(|count| pb::GuardedFlag {
                flag: count.flag.clone(),
                event: "checkout_error".to_owned(),
            })
            .collect();
        Ok(Response::new(pb::ReportMetricsResponse { guards }))
    }
}

#[test]
fn the_services_have_their_contract_names() {
    assert_eq!(pb::sync_server::SERVICE_NAME, "flagstaff.v1.Sync");
    assert_eq!(pb::admin_server::SERVICE_NAME, "flagstaff.v1.Admin");
}

#[tokio::test]
async fn watch_delivers_a_chunked_snapshot_then_a_heartbeat_in_order() -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(
        Server::builder()
            .add_service(SyncServer::new(TinySync))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let mut client = SyncClient::connect(format!("http://{address}")).await?;

    // The client's side of the stream stays open: it acknowledges what it applied.
    let (requests, outgoing) = tokio::sync::mpsc::channel(4);
    requests
        .send(pb::WatchRequest {
            request: Some(watch_request::Request::Subscribe(pb::Subscribe {
                instance_id: "instance-1".to_owned(),
                application: "checkout".to_owned(),
                ..pb::Subscribe::default()
            })),
        })
        .await?;
    let mut responses = client
        .watch(ReceiverStream::new(outgoing))
        .await?
        .into_inner();

    let mut received = Vec::new();
    while let Some(message) = responses.message().await? {
        let response = message.response.ok_or("a response with nothing set")?;
        let done = matches!(response, watch_response::Response::Heartbeat(_));
        if matches!(response, watch_response::Response::SnapshotEnd(_)) {
            requests
                .send(pb::WatchRequest {
                    request: Some(watch_request::Request::Ack(pb::Ack {
                        epoch: "epoch-1".to_owned(),
                        revision: 7,
                    })),
                })
                .await?;
        }
        received.push(response);
        if done {
            break;
        }
    }

    let mut expected = snapshot();
    expected.push(watch_response::Response::Heartbeat(pb::Heartbeat {
        revision: 7,
    }));
    assert_eq!(received, expected);

    // A unary call of the same service.
    let report = client
        .report_metrics(pb::ReportMetricsRequest {
            instance_id: "instance-1".to_owned(),
            windows: vec![pb::MetricsWindow {
                evaluations: vec![pb::EvaluationCount {
                    flag: "checkout-v2".to_owned(),
                    variant: "on".to_owned(),
                    version: 7,
                    count: 12,
                }],
                ..pb::MetricsWindow::default()
            }],
            ..pb::ReportMetricsRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        report.guards,
        vec![pb::GuardedFlag {
            flag: "checkout-v2".to_owned(),
            event: "checkout_error".to_owned(),
        }]
    );

    server.abort();
    Ok(())
}
