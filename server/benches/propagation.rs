//! How long a change takes to be applied by SDK clients, as their acknowledgements tell the
//! server: `cargo bench -p flagstaff-server --bench propagation [-- [poll] [1|100|1000]...]`.
//!
//! flagstaffd runs as its own process (the release binary) with an environment of 100 flags;
//! 1, 100 and 1,000 real SDK clients (`flagstaff::Client`, each with its own connection) run
//! in this process. A writer flips a flag through the Admin API, one write at a time, and
//! waits until every client has acknowledged the write's revision before the next one.
//!
//! Reported per client count:
//! - per client: acknowledged → applied, from `ListClients` (the server's `applied_unix_ms`
//!   of each client minus the wall time at which the writer got its answer, 0 when the
//!   acknowledgement came first). Both are whole milliseconds, so each sample is ±1 ms.
//! - last client: the largest of those per write, the time until every client has applied it.
//! - `WaitForRevision`: the server's `elapsed_ms` for a wait asked right after the write's
//!   answer (it counts from the wait's arrival, so it leaves out the write's own response),
//!   and the writer's time from the write's answer to the wait's answer (which adds one
//!   round trip).
//! - with `poll`: a thread in this process polls every client's `status().revision` and
//!   records when it first shows the write's revision (applied, before the acknowledgement is
//!   sent), in microseconds. Off by default: on 2 cores the polling slows what it measures.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flagstaff_proto::pb;
use support::daemon::authorized;
use support::{server, Bench};

/// Writes measured per client count.
const WRITES: usize = 200;

/// Writes made before measuring, so every connection is warm.
const WARMUP: usize = 10;

/// The application name the clients give, to tell them apart in `ListClients`.
const APPLICATION: &str = "bench-propagation";

impl Bench {
    /// Flips flag `flag-{i % 100}`; the revision of the write.
    async fn write(&mut self, i: usize) -> u64 {
        self.admin
            .set_flag_enabled(authorized(
                pb::SetFlagEnabledRequest {
                    environment: "bench".into(),
                    key: format!("flag-{}", i % 100),
                    enabled: i % 200 >= 100,
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .expect("write")
            .into_inner()
            .revision
    }

    /// Waits until every connected client has applied `revision` (0: the current one).
    async fn wait_for(&mut self, revision: u64) -> pb::WaitForRevisionResponse {
        self.admin
            .wait_for_revision(authorized(
                pb::WaitForRevisionRequest {
                    environment: "bench".into(),
                    revision,
                    timeout_ms: 60_000,
                },
                &self.token,
            ))
            .await
            .expect("wait")
            .into_inner()
    }

    /// The benchmark's connected clients, as the server lists them.
    async fn clients(&mut self) -> Vec<pb::ClientInstance> {
        let listed = self
            .admin
            .list_clients(authorized(
                pb::ListClientsRequest {
                    environment: "bench".into(),
                },
                &self.token,
            ))
            .await
            .expect("list")
            .into_inner();
        listed
            .clients
            .into_iter()
            .filter(|c| c.connected && c.application == APPLICATION)
            .collect()
    }
}

fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// Watches every client's applied revision from a thread of its own while a write
/// propagates: when each first shows the target revision.
struct Poller {
    target: Arc<AtomicU64>,
    /// Set by the measuring side to start a round, cleared by the poller when every client
    /// has the target.
    running: Arc<AtomicBool>,
    /// Each round's observations, one per client.
    rounds: std::sync::mpsc::Receiver<Vec<Instant>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(clients: Vec<flagstaff::Client>) -> Poller {
        let target = Arc::new(AtomicU64::new(0));
        let running = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (done, rounds) = std::sync::mpsc::channel();
        let (t, r, s) = (target.clone(), running.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut seen: Vec<Option<Instant>> = vec![None; clients.len()];
            while !s.load(Ordering::Acquire) {
                if !r.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                let target = t.load(Ordering::Acquire);
                let mut left = 0;
                for (client, seen) in clients.iter().zip(seen.iter_mut()) {
                    if seen.is_none() {
                        if client.status().revision >= target {
                            *seen = Some(Instant::now());
                        } else {
                            left += 1;
                        }
                    }
                }
                if left == 0 {
                    let round = seen.iter_mut().map(|at| at.take().expect("seen")).collect();
                    r.store(false, Ordering::Release);
                    if done.send(round).is_err() {
                        break;
                    }
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        });
        Poller {
            target,
            running,
            rounds,
            stop,
            thread: Some(thread),
        }
    }

    /// Starts watching for `target`.
    fn expect(&self, target: u64) {
        self.target.store(target, Ordering::Release);
        self.running.store(true, Ordering::Release);
    }

    /// When each client showed the target.
    fn round(&self) -> Vec<Instant> {
        self.rounds
            .recv_timeout(Duration::from_secs(60))
            .expect("every client applies the revision")
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// p50, p99 and max.
fn percentiles<T: Ord + Copy>(mut samples: Vec<T>) -> (T, T, T) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), at(1.0))
}

fn ms(p: (i64, i64, i64)) -> String {
    format!("p50 {:>3} ms  p99 {:>3} ms  max {:>3} ms", p.0, p.1, p.2)
}

async fn propagation(n: usize, poll: bool) {
    let mut bench = server().await;
    let started = Instant::now();
    let clients: Vec<flagstaff::Client> = (0..n)
        .map(|_| {
            flagstaff::Client::builder(bench.endpoint.clone(), bench.sdk.clone())
                .application(APPLICATION)
                .connect_timeout(Duration::from_secs(30))
                .build()
                .expect("client")
        })
        .collect();
    for client in &clients {
        client
            .wait_ready(Duration::from_secs(300))
            .await
            .expect("every client gets its snapshot");
    }
    // Every client has acknowledged its snapshot.
    let ready = bench.wait_for(0).await;
    assert!(ready.complete && ready.connected as usize == n, "{ready:?}");
    let connected = started.elapsed();
    for i in 0..WARMUP {
        let revision = bench.write(i).await;
        assert!(bench.wait_for(revision).await.complete);
    }
    let poller = poll.then(|| Poller::start(clients.clone()));
    let mut revision = bench.write(WARMUP).await;
    assert!(bench.wait_for(revision).await.complete);

    let mut per_client = Vec::with_capacity(WRITES * n);
    let mut sent_per_client = Vec::with_capacity(WRITES * n);
    let mut last = Vec::with_capacity(WRITES);
    let mut waited = Vec::with_capacity(WRITES);
    let mut answered = Vec::with_capacity(WRITES);
    let mut polled = Vec::with_capacity(WRITES * n);
    let mut write_times = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let expected = revision + 1;
        if let Some(poller) = &poller {
            poller.expect(expected);
        }
        let sent_unix = unix_ms(SystemTime::now());
        let sent = Instant::now();
        revision = bench.write(WARMUP + 1 + i).await;
        let acked = Instant::now();
        let acked_unix = unix_ms(SystemTime::now());
        assert_eq!(revision, expected, "the benchmark is the only writer");
        write_times.push(acked - sent);
        let wait = bench.wait_for(revision).await;
        answered.push(acked.elapsed());
        assert!(
            wait.complete && wait.connected as usize == n,
            "write {i}: {wait:?}"
        );
        waited.push(wait.elapsed_ms as i64);
        let listed = bench.clients().await;
        assert_eq!(listed.len(), n, "every client is listed");
        let mut slowest = 0;
        for client in &listed {
            assert_eq!(
                client.applied_revision, revision,
                "nothing was written since"
            );
            let after_ack = (client.applied_unix_ms - acked_unix).max(0);
            slowest = slowest.max(after_ack);
            per_client.push(after_ack);
            sent_per_client.push((client.applied_unix_ms - sent_unix).max(0));
        }
        last.push(slowest);
        if let Some(poller) = &poller {
            polled.extend(
                poller
                    .round()
                    .into_iter()
                    .map(|at| at.saturating_duration_since(acked)),
            );
        }
    }
    drop(poller);

    let (w50, w99, _) = percentiles(write_times);
    let (a50, a99, _) = percentiles(answered);
    println!(
        "{n:>5} clients ({} ready in {connected:.2?}), {WRITES} writes (write p50 {w50:.2?}, p99 {w99:.2?}):",
        clients.len()
    );
    println!(
        "      per client, acknowledged -> applied: {}",
        ms(percentiles(per_client))
    );
    println!(
        "      per client, sent -> applied:         {}",
        ms(percentiles(sent_per_client))
    );
    println!(
        "      last client, acknowledged -> applied: {}",
        ms(percentiles(last))
    );
    println!(
        "      WaitForRevision elapsed:              {}",
        ms(percentiles(waited))
    );
    println!("      acknowledged -> WaitForRevision answered: p50 {a50:.2?}  p99 {a99:.2?}");
    if !polled.is_empty() {
        let (p50, p99, pmax) = percentiles(polled);
        println!(
            "      in process, acknowledged -> status() shows it: p50 {p50:.2?}  p99 {p99:.2?}  max {pmax:.2?}"
        );
    }
    for client in &clients {
        client.close();
    }
    drop(clients);
    // Let the clients' tasks see the stop before the server goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let poll = args.iter().any(|a| a == "poll");
    // Client counts given on the command line, else all three.
    let mut counts: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if counts.is_empty() {
        counts = vec![1, 100, 1000];
    }
    // Both ends of every connection are open here or in the server, which inherits the limit.
    let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in counts {
        if files < 2 * n as u64 + 100 {
            println!("{n} clients: skipped, the open-file limit cannot be raised above {files}");
            continue;
        }
        runtime.block_on(propagation(n, poll));
    }
}
