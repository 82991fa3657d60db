//! The two stores side by side, in one run: `cargo bench -p flagstaff-tests --bench stores`.
//!
//! For sled (a temporary data directory) and then PostgreSQL (a fresh database of a cluster
//! the test harness starts from the machine's binaries, `fsync` and `synchronous_commit` on),
//! an in-process flagstaffd on loopback holds an environment of 1,000 flags, and:
//!
//! - **durable writes**: clients flip flags with `SetFlagEnabled` over gRPC, each answered once
//!   the change is durable: one writer, then 8 at once (each on its own connection and flag) in
//!   one environment, whose changes are committed one at a time in revision order, then 8 at
//!   once in 8 environments (as many teams), whose commits the store may group. Reported:
//!   p50, p99 and writes/s.
//! - **propagation**: 100 SDK clients (the `flagstaff` crate) watch the environment; a writer
//!   makes 100 changes one after the other, and after each a thread reads every client's
//!   applied revision until all have it. Reported: from the write's sending to each client's
//!   applying it (p50, p99), and to the last client's.
//!
//! Then PostgreSQL's figures as ratios to sled's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstaff_proto::pb;
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::{Admin, TestServer};

mod common;
use common::{flag, percentiles, watching};

/// Flags in the environment.
const FLAGS: usize = 1_000;
/// Writes of the single writer, and of each of the 8.
const SINGLE_WRITES: usize = 1_000;
const EACH_OF_8: usize = 250;
/// SDK clients watching, and changes propagated to them.
const CLIENTS: usize = 100;
const CHANGES: usize = 100;

/// CPU time used so far, in seconds: by the whole machine (every process, from `/proc/stat`)
/// and by this process (flagstaffd, its store's client and the benchmark's own clients, from
/// `/proc/self/stat`). Both count in the kernel's USER_HZ, which is 100 on Linux.
fn cpu_seconds() -> (f64, f64) {
    const USER_HZ: f64 = 100.0;
    let machine = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    // cpu  user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    let fields: Vec<f64> = machine
        .lines()
        .next()
        .expect("the cpu line")
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().expect("a count"))
        .collect();
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6];
    let own = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // After the command's name in parentheses: utime and stime are the 12th and 13th fields.
    let after = &own[own.rfind(')').expect("the name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let own = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    (busy / USER_HZ, own / USER_HZ)
}

/// CPU time per write, in milliseconds, over `writes` writes since `since`: the whole
/// machine's and this process's.
fn cpu_per_write(since: (f64, f64), writes: usize) -> (f64, f64) {
    let now = cpu_seconds();
    let per = |a: f64, b: f64| (a - b) * 1_000.0 / writes as f64;
    (per(now.0, since.0), per(now.1, since.1))
}

async fn flips(mut admin: Admin, environment: String, key: String, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let request = pb::SetFlagEnabledRequest {
            environment: environment.clone(),
            key: key.clone(),
            enabled: i % 2 == 1,
            ..Default::default()
        };
        let start = Instant::now();
        admin.set_flag_enabled(request).await.expect("flip");
        samples.push(start.elapsed());
    }
    samples
}

/// One store's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    one: (Duration, Duration, f64),
    /// CPU milliseconds per write (the machine's, this process's): one writer, 8 writers in 8
    /// environments.
    cpu_one: (f64, f64),
    cpu_eight_envs: (f64, f64),
    eight: (Duration, Duration, f64),
    eight_envs: (Duration, Duration, f64),
    applied: (Duration, Duration),
    last: (Duration, Duration),
}

/// Creates `environment` with [`FLAGS`] flags.
async fn seed(admin: &mut Admin, environment: &str) {
    admin
        .create_environment(pb::CreateEnvironmentRequest {
            environment: environment.into(),
            ..Default::default()
        })
        .await
        .expect("environment");
    let flags = (0..FLAGS).map(|i| flag(&format!("flag-{i:04}"))).collect();
    admin
        .apply(pb::ApplyRequest {
            environment: environment.into(),
            source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                flags,
                segments: vec![],
            })),
            ..Default::default()
        })
        .await
        .expect("seed the flags");
}

/// 8 writers at once, writer `w` on flag `w + 1` of `environment(w)`: p50, p99, writes/s.
async fn eight_writers(
    server: &TestServer,
    environment: impl Fn(usize) -> String,
) -> (Duration, Duration, f64) {
    let start = Instant::now();
    let mut writers = Vec::new();
    for w in 0..8 {
        let admin = server.admin().await;
        writers.push(tokio::spawn(flips(
            admin,
            environment(w),
            format!("flag-{:04}", w + 1),
            EACH_OF_8,
        )));
    }
    let mut samples = Vec::new();
    for writer in writers {
        samples.extend(writer.await.expect("writer"));
    }
    let rate = samples.len() as f64 / start.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(samples);
    (p50, p99, rate)
}

async fn measure(name: &str, server: TestServer) -> Figures {
    let mut admin = server.admin().await;
    seed(&mut admin, "bench").await;
    for w in 0..8 {
        seed(&mut admin, &format!("bench-{w}")).await;
    }

    // Durable writes.
    flips(admin.clone(), "bench".into(), "flag-0000".into(), 20).await;
    let cpu = cpu_seconds();
    let start = Instant::now();
    let samples = flips(
        admin.clone(),
        "bench".into(),
        "flag-0000".into(),
        SINGLE_WRITES,
    )
    .await;
    let rate = samples.len() as f64 / start.elapsed().as_secs_f64();
    let cpu_one = cpu_per_write(cpu, samples.len());
    let (p50, p99) = percentiles(samples);
    let one = (p50, p99, rate);
    println!(
        "{name:<10} 1 writer:   p50 {p50:>8.2?}  p99 {p99:>8.2?}  {rate:>6.0} writes/s; CPU per \
         write {:.2} ms ({:.2} ms in this process)",
        cpu_one.0, cpu_one.1
    );
    // One environment's changes are committed one at a time, in revision order.
    let eight = eight_writers(&server, |_| "bench".to_owned()).await;
    println!(
        "{name:<10} 8 writers, one environment:  p50 {:>8.2?}  p99 {:>8.2?}  {:>6.0} writes/s \
         ({:.2}x one writer's)",
        eight.0,
        eight.1,
        eight.2,
        eight.2 / one.2
    );
    // Eight environments' changes are committed side by side.
    let cpu = cpu_seconds();
    let eight_envs = eight_writers(&server, |w| format!("bench-{w}")).await;
    let cpu_eight_envs = cpu_per_write(cpu, 8 * EACH_OF_8);
    println!(
        "{name:<10} 8 writers, 8 environments:   p50 {:>8.2?}  p99 {:>8.2?}  {:>6.0} writes/s \
         ({:.2}x one writer's); CPU per write {:.2} ms ({:.2} ms in this process)",
        eight_envs.0,
        eight_envs.1,
        eight_envs.2,
        eight_envs.2 / one.2,
        cpu_eight_envs.0,
        cpu_eight_envs.1,
    );
    // With every core busy, writes/s cannot pass cores / CPU per write.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "{name:<10} ceiling of 8 writers on {cores} cores: {:.0} writes/s ({:.2}x one writer's)",
        cores * 1_000.0 / cpu_eight_envs.0,
        cores * 1_000.0 / cpu_eight_envs.0 / one.2,
    );

    // Propagation to SDK clients.
    let mut tokens = server.admin().await;
    let sdk = tokens
        .create_token(pb::CreateTokenRequest {
            name: "bench-sdk".into(),
            role: pb::Role::Sdk.into(),
            environment: "bench".into(),
        })
        .await
        .expect("sdk token")
        .into_inner()
        .secret;
    let clients = Arc::new(watching(server.endpoint(), &sdk, CLIENTS, "bench-stores").await);
    let mut applied = Vec::with_capacity(CLIENTS * CHANGES);
    let mut last = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let sent = Instant::now();
        let revision = admin
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: "bench".into(),
                key: "flag-0999".into(),
                enabled: i % 2 == 1,
                ..Default::default()
            })
            .await
            .expect("change")
            .into_inner()
            .revision;
        let watching = clients.clone();
        let seen = tokio::task::spawn_blocking(move || {
            let mut seen: Vec<Option<Duration>> = vec![None; watching.len()];
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.iter().any(Option::is_none) {
                assert!(Instant::now() < deadline, "every client applies the change");
                for (client, seen) in watching.iter().zip(seen.iter_mut()) {
                    if seen.is_none() && client.status().revision >= revision {
                        *seen = Some(sent.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            seen.into_iter().flatten().collect::<Vec<_>>()
        })
        .await
        .expect("poller");
        last.push(seen.iter().copied().max().unwrap_or_default());
        applied.extend(seen);
    }
    let applied = percentiles(applied);
    let last = percentiles(last);
    println!(
        "{name:<10} {CLIENTS} SDK clients, sent -> applied: per client p50 {:>8.2?}  p99 {:>8.2?}; \
         last client p50 {:>8.2?}  p99 {:>8.2?}",
        applied.0, applied.1, last.0, last.1
    );
    for client in clients.iter() {
        client.close();
    }
    drop(clients);
    server.stop().await;
    Figures {
        one,
        cpu_one,
        cpu_eight_envs,
        eight,
        eight_envs,
        applied,
        last,
    }
}

#[tokio::main]
async fn main() {
    let sled = measure("sled", TestServer::start().await).await;
    let Some(url) = fresh_database() else {
        println!("postgres: skipped (no PostgreSQL binaries; see the line above)");
        return;
    };
    let server = TestServer::builder().database_url(url).start().await;
    let pg = measure("postgres", server).await;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "postgres / sled: 1 writer p50 {:.2}, p99 {:.2}, writes/s {:.2}; 8 writers (one \
         environment) p50 {:.2}, writes/s {:.2}; 8 writers (8 environments) p50 {:.2}, writes/s \
         {:.2}; propagation per client p50 {:.2}, p99 {:.2}, last client p99 {:.2}",
        ratio(pg.one.0, sled.one.0),
        ratio(pg.one.1, sled.one.1),
        pg.one.2 / sled.one.2,
        ratio(pg.eight.0, sled.eight.0),
        pg.eight.2 / sled.eight.2,
        ratio(pg.eight_envs.0, sled.eight_envs.0),
        pg.eight_envs.2 / sled.eight_envs.2,
        ratio(pg.applied.0, sled.applied.0),
        ratio(pg.applied.1, sled.applied.1),
        ratio(pg.last.1, sled.last.1),
    );
    println!(
        "postgres / sled: CPU per write, machine (this process): 1 writer {:.2} ({:.2}); 8 \
         writers in 8 environments {:.2} ({:.2})",
        pg.cpu_one.0 / sled.cpu_one.0,
        pg.cpu_one.1 / sled.cpu_one.1,
        pg.cpu_eight_envs.0 / sled.cpu_eight_envs.0,
        pg.cpu_eight_envs.1 / sled.cpu_eight_envs.1,
    );
}
