//! Usage reports reach the server: a stand-in for flagstaffd's Sync service, on
//! 127.0.0.1:0, that answers `ReportMetrics` (and refuses `Watch`, so the clients serve their
//! bootstrap documents). The end-to-end tests with the real server are in the workspace's
//! `tests/`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagstaff::{Client, Context, Error, State};
use flagstaff_proto::pb;
use flagstaff_proto::watch::WatchMessage;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

const DOC: &str = r#"
environment: test
flags:
  - key: checkout-v2
    kind: boolean
    version: 4
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: true
    rules:
      - id: eu
        conditions: [{ attribute: country, op: in, values: [NL] }]
        serve: { variant: "on" }
    default: { variant: "off" }
"#;

/// What the stand-in received, and how it answers.
#[derive(Default)]
struct Recorded {
    requests: Vec<(Option<String>, pb::ReportMetricsRequest)>,
    /// Refuse this many reports (UNAVAILABLE) before accepting.
    refuse: usize,
    guards: Vec<pb::GuardedFlag>,
}

#[derive(Clone, Default)]
struct StandIn(Arc<Mutex<Recorded>>);

impl StandIn {
    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.0.lock().expect("not poisoned")
    }

    fn requests(&self) -> Vec<pb::ReportMetricsRequest> {
        self.recorded()
            .requests
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::sync_server::Sync for StandIn {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        Err(Status::unimplemented("reports only"))
    }

    async fn report_metrics(
        &self,
        request: Request<pb::ReportMetricsRequest>,
    ) -> Result<Response<pb::ReportMetricsResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut recorded = self.recorded();
        if recorded.refuse > 0 {
            recorded.refuse -= 1;
            return Err(Status::unavailable("not now"));
        }
        recorded
            .requests
            .push((authorization, request.into_inner()));
        Ok(Response::new(pb::ReportMetricsResponse {
            guards: recorded.guards.clone(),
        }))
    }
}

/// Serves `stand_in` on 127.0.0.1:0 until the test's runtime ends; its endpoint.
async fn serve(stand_in: StandIn) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::sync_server::SyncServer::new(stand_in))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    endpoint
}

fn client(endpoint: &str, interval: Duration) -> Client {
    Client::builder(endpoint, "fs_sdk_test")
        .bootstrap_text(DOC)
        .backoff(Duration::from_millis(20), Duration::from_millis(50))
        .metrics_interval(interval)
        .build()
        .expect("client")
}

/// Counts by (flag, version, variant) in `requests`.
fn evaluations(requests: &[pb::ReportMetricsRequest]) -> BTreeMap<(String, u64, String), u64> {
    let mut counts = BTreeMap::new();
    for window in requests.iter().flat_map(|r| &r.windows) {
        for e in &window.evaluations {
            *counts
                .entry((e.flag.clone(), e.version, e.variant.clone()))
                .or_insert(0) += e.count;
        }
    }
    counts
}

/// Retries `flush_metrics` until the client has connected once (the stand-in refuses the
/// stream, so the client keeps reconnecting; reports go over its latest connection).
async fn flush(client: &Client) {
    let mut last = None;
    for _ in 0..200 {
        match client.flush_metrics().await {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no report got through: {last:?}");
}

#[tokio::test]
async fn a_report_carries_the_counts_and_the_answer_names_the_guards() {
    let stand_in = StandIn::default();
    stand_in.recorded().guards = vec![pb::GuardedFlag {
        flag: "checkout-v2".into(),
        event: "checkout_error".into(),
    }];
    let endpoint = serve(stand_in.clone()).await;
    let client = client(&endpoint, Duration::from_secs(3600));
    let (nl, us) = (
        Context::new("a").with("country", "NL"),
        Context::new("b").with("country", "US"),
    );
    for _ in 0..3 {
        assert!(client.bool_value("checkout-v2", &nl, false));
    }
    assert!(!client.bool_detail("checkout-v2", &us, true).value);
    assert!(client.bool_value("no-such-flag", &us, true));
    // Not attributed: the server has not named the guard yet.
    client.track("checkout_error", &nl);
    flush(&client).await;

    let requests = stand_in.requests();
    let report = requests.last().expect("a report");
    assert_eq!(report.instance_id.len(), 32);
    assert_eq!(report.environment, "", "the sdk token names it");
    assert_eq!((report.dropped, report.capped_events), (0, 0));
    assert_eq!(
        evaluations(&requests),
        BTreeMap::from([
            (("checkout-v2".into(), 4, "off".into()), 1),
            (("checkout-v2".into(), 4, "on".into()), 3),
            (("no-such-flag".into(), 0, String::new()), 1),
        ])
    );
    let authorization = stand_in.recorded().requests[0].0.clone();
    assert_eq!(authorization.as_deref(), Some("Bearer fs_sdk_test"));
    let events = &report.windows[0].events;
    assert_eq!((events[0].count, events[0].attributions.len()), (1, 0));

    client.track("checkout_error", &nl);
    client.track("checkout_error", &us);
    client.flush_metrics().await.expect("reported");
    let requests = stand_in.requests();
    let report = requests.last().expect("a report");
    assert_eq!(report.windows.len(), 1, "only the new window");
    assert!(report.windows[0].evaluations.is_empty());
    let event = &report.windows[0].events[0];
    assert_eq!(event.count, 2);
    let attributed: Vec<(&str, u64, u64)> = event
        .attributions
        .iter()
        .map(|a| (a.variant.as_str(), a.version, a.count))
        .collect();
    assert_eq!(attributed, [("off", 4, 1), ("on", 4, 1)]);

    // Nothing new: the report has no windows.
    client.flush_metrics().await.expect("reported");
    assert!(stand_in
        .requests()
        .last()
        .expect("a report")
        .windows
        .is_empty());
    let stats = client.stats();
    assert_eq!((stats.metrics_reports, stats.metrics_dropped), (3, 0));
}

#[tokio::test]
async fn windows_are_kept_while_reports_fail_and_sent_together_later() {
    let stand_in = StandIn::default();
    let endpoint = serve(stand_in.clone()).await;
    let client = client(&endpoint, Duration::from_secs(3600));
    let ctx = Context::new("a").with("country", "NL");
    flush(&client).await; // connected
    let failures = client.stats().metrics_report_failures;
    stand_in.recorded().refuse = 2;
    client.bool_value("checkout-v2", &ctx, false);
    let refused = client.flush_metrics().await;
    assert!(matches!(refused, Err(Error::Report(_))), "{refused:?}");
    client.bool_value("checkout-v2", &ctx, false);
    client.bool_value("checkout-v2", &ctx, false);
    assert!(client.flush_metrics().await.is_err());
    client.flush_metrics().await.expect("reported");

    let requests = stand_in.requests();
    let report = requests.last().expect("a report");
    assert_eq!(report.windows.len(), 2, "both windows kept, oldest first");
    assert!(report.windows[0].end_unix_ms <= report.windows[1].start_unix_ms);
    assert_eq!(
        evaluations(&requests),
        BTreeMap::from([(("checkout-v2".into(), 4, "on".into()), 3)])
    );
    let stats = client.stats();
    assert_eq!(stats.metrics_report_failures, failures + 2);
}

#[tokio::test]
async fn the_client_reports_every_interval_and_once_more_when_closed() {
    let stand_in = StandIn::default();
    let endpoint = serve(stand_in.clone()).await;
    let client = client(&endpoint, Duration::from_millis(50));
    let ctx = Context::new("a");
    client.bool_value("checkout-v2", &ctx, true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while evaluations(&stand_in.requests()).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no periodic report");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let closing = client.clone();
    client.with_string("checkout-v2", &ctx, "", |_| {
        // A string evaluation of a boolean flag: the caller's default, counted as such.
    });
    closing.close();
    let mut status = std::pin::pin!(async {
        while client.status().state != State::Closed {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::timeout(Duration::from_secs(10), &mut status)
        .await
        .expect("closed");
    assert_eq!(
        evaluations(&stand_in.requests()),
        BTreeMap::from([
            (("checkout-v2".into(), 4, String::new()), 1),
            (("checkout-v2".into(), 4, "off".into()), 1),
        ])
    );
    assert!(matches!(client.flush_metrics().await, Err(Error::Closed)));
}

#[tokio::test]
async fn a_client_without_a_server_counts_but_has_nothing_to_flush() {
    let client = Client::from_export_text(DOC).expect("valid");
    client.bool_value("checkout-v2", &Context::new("a"), false);
    client.track("checkout_error", &Context::new("a"));
    client.flush_metrics().await.expect("nothing to report to");
    assert_eq!(client.stats().metrics_reports, 0);
}
