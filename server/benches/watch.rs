//! How fast a change reaches Watch streams, and what idle streams cost the server:
//! `cargo bench -p flagstaff-server --bench watch [-- latency|idle]`.
//!
//! flagstaffd runs as its own process (the release binary), so its memory is measured alone.
//! Every Watch stream is a separate connection, as each SDK instance has its own.
//!
//! - latency: 1, 100 and 1,000 streams on one environment; a writer flips a flag, and each
//!   stream records when the delta arrives. Reported per stream count: the time from the write
//!   being acknowledged to the delta being received (0 when the delta came first, which is
//!   common: the server publishes before it answers), and from the write being sent.
//! - idle: the server's resident memory before and after 10,000 streams have subscribed and
//!   received their snapshot. The open-file limit is raised to its hard limit first.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstaff_proto::pb;
use flagstaff_proto::pb::sync_client::SyncClient;
use support::daemon::authorized;
use support::server;
use tokio::sync::{mpsc, Barrier};
use tonic::transport::{Channel, Endpoint};

/// Writes measured per stream count.
const WRITES: usize = 200;

/// The connection a stream uses.
enum Connection {
    /// Its own, to this endpoint: as every SDK instance has.
    Own(String),
    /// One shared with other streams (HTTP/2 multiplexing).
    Shared(Channel),
}

/// Opens a Watch stream on its connection; sends (stream, revision, arrival) for every
/// delta, and signals `ready` once the snapshot is in.
async fn stream(
    channel: Connection,
    sdk: Arc<String>,
    id: usize,
    ready: Arc<Barrier>,
    arrivals: mpsc::UnboundedSender<(usize, u64, Instant)>,
) {
    let channel = match channel {
        Connection::Own(endpoint) => Endpoint::from_shared(endpoint)
            .expect("endpoint")
            .connect()
            .await
            .expect("connects"),
        Connection::Shared(channel) => channel,
    };
    let mut client = SyncClient::new(channel);
    let subscribe = pb::WatchRequest {
        request: Some(pb::watch_request::Request::Subscribe(pb::Subscribe {
            instance_id: format!("bench-{id}"),
            application: "bench".into(),
            ..Default::default()
        })),
    };
    // The request stream stays open (never sends more), as an SDK's does.
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(subscribe).expect("open");
    let mut inbound = client
        .watch(authorized(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            &sdk,
        ))
        .await
        .expect("watch")
        .into_inner();
    let mut signalled = false;
    while let Ok(Some(message)) = inbound.message().await {
        match message.response {
            Some(pb::watch_response::Response::SnapshotEnd(_)) if !signalled => {
                signalled = true;
                ready.wait().await;
            }
            Some(pb::watch_response::Response::Delta(delta)) if !delta.more => {
                let _ = arrivals.send((id, delta.revision, Instant::now()));
            }
            _ => {}
        }
    }
    drop(tx);
}

/// Waits until every stream has its snapshot; a stream that failed never arrives.
async fn all_ready(ready: &Barrier) {
    tokio::time::timeout(Duration::from_secs(300), ready.wait())
        .await
        .expect("every stream subscribed (see any panic above)");
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), at(1.0))
}

async fn latency(streams: usize) {
    let mut bench = server().await;
    let (endpoint, sdk) = (bench.endpoint.clone(), Arc::new(bench.sdk.clone()));
    let ready = Arc::new(Barrier::new(streams + 1));
    let (arrivals, mut received) = mpsc::unbounded_channel();
    for id in 0..streams {
        tokio::spawn(stream(
            Connection::Own(endpoint.clone()),
            sdk.clone(),
            id,
            ready.clone(),
            arrivals.clone(),
        ));
    }
    all_ready(&ready).await;
    let (mut after_ack, mut after_send) = (Vec::new(), Vec::new());
    for i in 0..WRITES {
        let sent = Instant::now();
        let revision = bench
            .admin
            .set_flag_enabled(authorized(
                pb::SetFlagEnabledRequest {
                    environment: "bench".into(),
                    key: format!("flag-{}", i % 100),
                    enabled: i % 200 >= 100,
                    ..Default::default()
                },
                &bench.token,
            ))
            .await
            .expect("write")
            .into_inner()
            .revision;
        let acked = Instant::now();
        let mut got = 0;
        while got < streams {
            let (_, rev, at) = tokio::time::timeout(Duration::from_secs(30), received.recv())
                .await
                .expect("every stream receives the delta")
                .expect("open");
            if rev == revision {
                got += 1;
                after_ack.push(at.saturating_duration_since(acked));
                after_send.push(at - sent);
            }
        }
    }
    let (a50, a99, amax) = percentiles(after_ack);
    let (s50, s99, smax) = percentiles(after_send);
    println!(
        "{streams:>5} streams, {WRITES} writes: acknowledged -> received p50 {a50:>9.2?} p99 {a99:>9.2?} max {amax:>9.2?} | sent -> received p50 {s50:>9.2?} p99 {s99:>9.2?} max {smax:>9.2?}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Server memory for `streams` idle streams, each on its own connection, or `per_connection`
/// streams to a connection.
async fn idle(streams: usize, per_connection: usize) {
    let bench = server().await;
    let (endpoint, sdk) = (bench.endpoint.clone(), Arc::new(bench.sdk.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(bench.daemon.pid());
    let ready = Arc::new(Barrier::new(streams + 1));
    let (arrivals, _received) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut shared = None;
    for id in 0..streams {
        let connection = if per_connection == 1 {
            Connection::Own(endpoint.clone())
        } else {
            if id % per_connection == 0 {
                let channel = Endpoint::from_shared(endpoint.clone())
                    .expect("endpoint")
                    .connect()
                    .await
                    .expect("connects");
                shared = Some(channel);
            }
            Connection::Shared(shared.clone().expect("connected"))
        };
        tokio::spawn(stream(
            connection,
            sdk.clone(),
            id,
            ready.clone(),
            arrivals.clone(),
        ));
        // Connect in waves, as a fleet restarting would, without overflowing the backlog.
        if id % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    all_ready(&ready).await;
    let subscribed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(bench.daemon.pid());
    let connections = streams.div_ceil(per_connection);
    println!(
        "{streams} idle streams on {connections} connections (subscribed in {subscribed:.2?}): server RSS {:.1} MiB before, {:.1} MiB after, {:.1} KiB per stream",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / streams as f64
    );
}

fn main() {
    let which = std::env::args()
        .skip(1)
        .find(|a| a == "latency" || a == "idle");
    // Both ends of every connection are open here or in the server, which inherits the limit.
    let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if which.as_deref() != Some("idle") {
        for streams in [1, 100, 1000] {
            runtime.block_on(latency(streams));
        }
    }
    if which.as_deref() != Some("latency") {
        if files >= 10_500 {
            runtime.block_on(idle(10_000, 1));
            runtime.block_on(idle(10_000, 100));
        } else {
            println!("idle: skipped, the open-file limit cannot be raised above {files}");
        }
    }
}
