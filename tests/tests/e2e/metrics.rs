//! The SDK's usage reports against the real server: what a client evaluates reaches the flag
//! usage the Admin API lists, and a guarded plan's counts; the server's answer names the
//! guards, so that tracked events are attributed to the variant served; counts made while
//! the server is down are kept and sent once it is back; and a client reports every
//! interval, and once more when it is closed.

use std::time::Duration;

use flagstaff::{Client, Context, Error, State};
use flagstaff_proto::pb;
use flagstaff_tests::{Admin, TestServer};

use super::fixtures::*;

/// A metrics interval no test waits for: the client reports only when flushed (or closed).
const HOURLY: Duration = Duration::from_secs(3_600);

/// A server with environment `production`, its boolean flag `checkout` (serving `off`), and
/// an sdk token for it.
async fn production() -> (TestServer, Admin, String) {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let token = sdk_token(&server, "checkout-service", "production").await;
    (server, admin, token)
}

/// A ready client of `server` that reports every `interval`.
async fn reporting_client(server: &TestServer, token: &str, interval: Duration) -> Client {
    let client = sdk_builder(server.endpoint(), token, "checkout-service")
        .metrics_interval(interval)
        .build()
        .expect("client");
    client.wait_ready(PATIENCE).await.expect("ready");
    client
}

/// The first of the keys `user-0`, `user-1`, ... that `checkout` serves `variant`, as the
/// client's snapshot has it (evaluating the snapshot directly counts nothing).
fn key_served(client: &Client, variant: &str) -> String {
    let snapshot = client.snapshot();
    (0..1_000)
        .map(|i| format!("user-{i}"))
        .find(|key| {
            let detail = snapshot.bool_detail("checkout", &Context::new(key.as_str()), false);
            detail.variant == Some(variant)
        })
        .expect("a key served the variant")
}

/// The guard status of the plan of `checkout`: (flag version, target exposures, baseline
/// exposures, target events, baseline events).
async fn guard_counts(admin: &mut Admin) -> (u64, u64, u64, u64, u64) {
    let status = plan(admin, "checkout")
        .await
        .guard_status
        .expect("a guard status");
    (
        status.flag_version,
        status.target_exposures,
        status.baseline_exposures,
        status.target_events,
        status.baseline_events,
    )
}

#[tokio::test]
async fn a_report_carries_the_counts_and_the_answer_names_the_guards() {
    let (server, mut admin, token) = production().await;
    // A tenth of the contexts get `on`, guarded by `checkout_error`; deciding after 50
    // events, so the few events here never roll it back.
    let started = start_guarded(&mut admin).await;
    let version = started.flag_version;
    let client = reporting_client(&server, &token, HOURLY).await;
    let target_key = key_served(&client, "on");
    let baseline_key = key_served(&client, "off");
    let target = Context::new(target_key.as_str());
    let baseline = Context::new(baseline_key.as_str());
    let snapshot = client.snapshot();
    let detail = snapshot.bool_detail("checkout", &target, false);
    assert_eq!(
        detail.version,
        Some(version),
        "the client has the plan's flag"
    );

    for _ in 0..3 {
        assert!(client.bool_value("checkout", &target, false));
    }
    assert!(!client.bool_detail("checkout", &baseline, true).value);
    // Not attributed: the server has not named the guard yet.
    client.track("checkout_error", &target);
    client.flush_metrics().await.expect("reported");

    assert_eq!(usage(&mut admin, "checkout").await.evaluations, 4);
    assert_eq!(
        guard_counts(&mut admin).await,
        (version, 3, 1, 0, 0),
        "exposures of the plan's version by variant; the first event unattributed"
    );

    // The answer named the guard: events are attributed to the variant each context gets.
    client.track("checkout_error", &target);
    client.track("checkout_error", &baseline);
    client.flush_metrics().await.expect("reported");
    assert_eq!(guard_counts(&mut admin).await, (version, 3, 1, 1, 1));
    assert_eq!(
        usage(&mut admin, "checkout").await.evaluations,
        4,
        "no new evaluations"
    );
    let running = plan(&mut admin, "checkout").await;
    assert_eq!(running.state, pb::RolloutState::Running as i32);
    let state = running.guard_status.expect("a guard status").state;
    assert_eq!(state, pb::GuardState::Collecting as i32);

    // Nothing new: the report changes nothing.
    client.flush_metrics().await.expect("reported");
    assert_eq!(guard_counts(&mut admin).await, (version, 3, 1, 1, 1));
    assert_eq!(usage(&mut admin, "checkout").await.evaluations, 4);
    let stats = client.stats();
    assert_eq!(
        (
            stats.metrics_reports,
            stats.metrics_report_failures,
            stats.metrics_dropped,
            stats.capped_events
        ),
        (3, 0, 0, 0)
    );
}

#[tokio::test]
async fn windows_are_kept_while_reports_fail_and_sent_together_later() {
    let (server, _, token) = production().await;
    let addr = server.addr;
    let client = reporting_client(&server, &token, HOURLY).await;
    let ctx = Context::new("user-1");

    let dir = server.stop().await;
    eventually("stale", async || {
        matches!(client.status().state, State::Stale { .. })
    })
    .await;
    assert!(!client.bool_value("checkout", &ctx, true));
    let refused = client.flush_metrics().await;
    assert!(matches!(refused, Err(Error::Report(_))), "{refused:?}");
    assert!(!client.bool_value("checkout", &ctx, true));
    assert!(!client.bool_value("checkout", &ctx, true));
    let refused = client.flush_metrics().await;
    assert!(matches!(refused, Err(Error::Report(_))), "{refused:?}");
    let stats = client.stats();
    assert_eq!(
        (stats.metrics_reports, stats.metrics_report_failures),
        (0, 2)
    );

    // Back on the same data directory and address: the client reconnects, and one report
    // carries both windows.
    let server = TestServer::builder().data_dir(dir).addr(addr).start().await;
    eventually("the reconnection", async || {
        client.status().state == State::Ready
    })
    .await;
    client.flush_metrics().await.expect("reported");
    let mut admin = server.admin().await;
    assert_eq!(
        usage(&mut admin, "checkout").await.evaluations,
        3,
        "every evaluation made while the server was down"
    );
    let stats = client.stats();
    assert_eq!(
        (
            stats.metrics_reports,
            stats.metrics_report_failures,
            stats.metrics_dropped
        ),
        (1, 2, 0)
    );
}

#[tokio::test]
async fn the_client_reports_every_interval_and_once_more_when_closed() {
    let (server, mut admin, token) = production().await;
    let client = reporting_client(&server, &token, Duration::from_millis(50)).await;
    let ctx = Context::new("user-1");
    let production = server.environments.get("production").expect("production");

    // No flush: the client reports by itself.
    assert!(!client.bool_value("checkout", &ctx, true));
    eventually("a periodic report", async || {
        production
            .usage("checkout")
            .is_some_and(|u| u.evaluations >= 1)
    })
    .await;
    assert_eq!(usage(&mut admin, "checkout").await.evaluations, 1);

    // Evaluated just before closing: reported by the time the client is closed.
    assert!(!client.bool_value("checkout", &ctx, true));
    client.close();
    eventually("closed", async || client.status().state == State::Closed).await;
    assert_eq!(usage(&mut admin, "checkout").await.evaluations, 2);
    let flushed = client.flush_metrics().await;
    assert!(matches!(flushed, Err(Error::Closed)), "{flushed:?}");
}
