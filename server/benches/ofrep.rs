//! OFREP throughput and latency over HTTP/1.1 with keep-alive:
//! `cargo bench -p flagstaff-server --bench ofrep` (`-- floor single bulk` to pick scenarios,
//! `-- --pin` to give the server a core of its own).
//!
//! An in-process flagstaffd on loopback with a temporary data directory holds environment
//! `bench` of 100 flags: S2 of the engine benchmarks (`sdk/engine/benches/eval.rs`, the same
//! document) and 99 flags shaped like S1–S3. An sdk token evaluates them. Scenarios:
//!
//! - `floor`: a bare JSON route served through the same stack as OFREP
//!   (`flagstaff_server::serve_routes`: the same listener, dispatch and HTTP server), which
//!   reads the JSON body and answers a fixed document (a copy of an OFREP answer for S2), with
//!   no token and no evaluation: what the HTTP stack alone costs.
//! - `single`: `POST /ofrep/v1/evaluate/flags/s2`.
//! - `bulk`: `POST /ofrep/v1/evaluate/flags`, all 100 flags.
//!
//! Every request carries the next of 1,000 contexts (`targetingKey` `user-N`, a `country` and
//! a `plan`). Each scenario runs a closed loop of [`CONNECTIONS`] keep-alive connections, each
//! sending its next request when the last is answered (the maximum rate), then an open loop at
//! half that rate: requests are scheduled at fixed intervals and handed to whichever
//! connection is free, and latency counts from the scheduled time, so an answer that is late
//! also delays the requests behind it rather than hiding them (no coordinated omission).
//! Reported: requests/s, p50, p99, max, for the closed loop how many cores the server's and
//! the load generator's threads kept busy (from `/proc/self/task`), and for the open loop the
//! latencies also counted from the send, which leave out waiting for a free connection or for
//! the load generator's own turn on a core.
//!
//! The server runs on a runtime of its own with 2 worker threads, the load generator (hyper's
//! HTTP/1.1 client) on another with 2: both share the machine's cores, so the server gets what
//! the load generator leaves. With `--pin` they share no core: each runtime has one worker
//! thread, and the server's and its blocking threads run on the first core only; every other
//! thread (the load generator, its pacer, the store's own threads) runs on the second.
//! That shows what the server costs and answers in when its load comes from another machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::response::IntoResponse;
use flagstaff_engine::{flag_from_value, ChangeSet};
use flagstaff_server::storage::Role;
use flagstaff_server::{Config, Server, WriteContext};
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

/// Keep-alive connections of the load generator.
const CONNECTIONS: usize = 32;
/// Each loop first runs this long unmeasured.
const WARM_UP: Duration = Duration::from_secs(1);
/// How long each loop is measured.
const MEASURED: Duration = Duration::from_secs(5);
/// The open loop's pacer sleeps at least this long between releases of scheduled requests.
const PACER_TICK: Duration = Duration::from_micros(100);
/// Distinct contexts sent, in turn.
const CONTEXTS: usize = 1_000;

const COUNTRIES: [&str; 5] = ["NL", "DE", "FR", "US", "GB"];
const PLANS: [&str; 3] = ["free", "pro", "enterprise"];

fn s1() -> Value {
    json!({"key": "s1", "kind": "boolean", "variants": {"on": true, "off": false},
           "off_variant": "off", "enabled": true, "default": {"variant": "on"}})
}

fn s2() -> Value {
    json!({"key": "s2", "kind": "boolean", "variants": {"on": true, "off": false},
           "off_variant": "off", "enabled": true,
           "rules": [{"id": "eu", "conditions": [{"attribute": "country", "op": "in", "values": ["NL", "DE"]}],
                      "serve": {"variant": "on"}}],
           "default": {"split": {"bucket_by": "key", "weights": [
               {"variant": "on", "weight": 10000}, {"variant": "off", "weight": 90000}]}}})
}

fn s3() -> Value {
    json!({"key": "s3", "kind": "string", "variants": {"control": "Welcome", "a": "Hello", "b": "Hi"},
           "off_variant": "control", "enabled": true,
           "rules": [{"id": "ent", "conditions": [{"attribute": "plan", "op": "in", "values": ["enterprise"]}],
                      "serve": {"variant": "a"}}],
           "default": {"split": {"weights": [
               {"variant": "control", "weight": 50000}, {"variant": "a", "weight": 30000},
               {"variant": "b", "weight": 20000}]}}})
}

/// S2 and 99 flags shaped like S1–S3, as the engine benchmarks fill their snapshot.
fn flags() -> ChangeSet {
    let mut flags = vec![flag_from_value(&s2()).expect("s2")];
    for i in 0..99 {
        let mut flag = [s1, s2, s3][i % 3]();
        flag["key"] = json!(format!("flag-{i:05}"));
        flags.push(flag_from_value(&flag).expect("flag"));
    }
    ChangeSet {
        flags,
        ..ChangeSet::default()
    }
}

/// The request bodies, one per context.
fn bodies() -> Arc<Vec<Bytes>> {
    let bodies = (0..CONTEXTS)
        .map(|i| {
            let body = json!({"context": {
                "targetingKey": format!("user-{i}"),
                "country": COUNTRIES[i % COUNTRIES.len()],
                "plan": PLANS[i % PLANS.len()],
            }});
            Bytes::from(body.to_string())
        })
        .collect();
    Arc::new(bodies)
}

/// What a load generator sends: where, with which token, which bodies.
#[derive(Clone)]
struct Target {
    addr: std::net::SocketAddr,
    path: &'static str,
    authorization: Option<HeaderValue>,
    bodies: Arc<Vec<Bytes>>,
}

/// One keep-alive HTTP/1.1 connection to the target.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    target: Target,
    next: usize,
}

impl Connection {
    async fn open(target: &Target, first: usize) -> Connection {
        let stream = TcpStream::connect(target.addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        // Ends when the sender is dropped.
        tokio::spawn(connection);
        Connection {
            sender,
            target: target.clone(),
            next: first,
        }
    }

    /// Sends the next request and reads the whole answer; returns its body.
    async fn request(&mut self) -> Bytes {
        let body = self.target.bodies[self.next % CONTEXTS].clone();
        self.next += 1;
        let mut request = Request::post(self.target.path)
            .header(header::HOST, "127.0.0.1")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(authorization) = &self.target.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = request.body(Full::new(body)).expect("request");
        self.sender.ready().await.expect("connection open");
        let response = self.sender.send_request(request).await.expect("answered");
        assert_eq!(response.status(), StatusCode::OK, "{}", self.target.path);
        let body = response.into_body().collect().await.expect("body");
        body.to_bytes()
    }
}

/// CPU time so far (user and system) of this process's threads whose name starts with
/// `prefix`, from `/proc/self/task` (Linux, counted in ticks of 10 ms; zero elsewhere).
fn cpu_time(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ticks = 0;
    for task in tasks.flatten() {
        let path = task.path();
        let named = std::fs::read_to_string(path.join("comm")).is_ok_and(|n| n.starts_with(prefix));
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // After the name in parentheses come fields 3 onwards; utime and stime are 14 and 15.
        let Some((_, fields)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = fields.split_whitespace().collect();
        if named {
            for field in [11, 12] {
                ticks += fields
                    .get(field)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_millis(ticks * 10)
}

/// Latencies and the wall time they were measured over.
struct Run {
    samples: Vec<Duration>,
    wall: Duration,
    /// Cores the server and the load generator kept busy, on average, when measured.
    cores: Option<(f64, f64)>,
    /// In an open loop, the latencies from the moment a connection took the request, without
    /// the time it waited for a free connection (or for the load generator to run).
    from_send: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.samples.len() as f64 / self.wall.as_secs_f64()
    }

    /// Requests/s, and per core the server's threads kept busy (closed loops only).
    fn report(mut self, name: &str) -> (f64, Option<f64>) {
        let rate = self.rate();
        self.samples.sort_unstable();
        let at = |q: f64| self.samples[((self.samples.len() - 1) as f64 * q) as usize];
        println!(
            "{name:<34} n={:<7} {:>8.0} req/s  p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
            self.samples.len(),
            rate,
            at(0.5),
            at(0.99),
            at(1.0),
        );
        if !self.from_send.is_empty() {
            self.from_send.sort_unstable();
            let at = |q: f64| self.from_send[((self.from_send.len() - 1) as f64 * q) as usize];
            println!(
                "{:<34} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
                "  counted from the send",
                at(0.5),
                at(0.99),
                at(1.0),
            );
        }
        let per_core = self.cores.map(|(server, load)| {
            let per_core = rate / server.max(0.01);
            println!(
                "{:<34} server {server:.2} cores, load generator {load:.2}: {per_core:.0} req/s \
                 per server core",
                "  CPU"
            );
            per_core
        });
        (rate, per_core)
    }
}

/// The closed loop: every connection sends its next request as soon as the last is answered,
/// for [`WARM_UP`] and then [`MEASURED`].
async fn closed_loop(target: &Target) -> Run {
    let mut connections = Vec::new();
    for c in 0..CONNECTIONS {
        connections.push(Connection::open(target, c * CONTEXTS / CONNECTIONS).await);
    }
    let start = Instant::now();
    let measured_from = start + WARM_UP;
    let end = measured_from + MEASURED;
    // What the server and the load generator each took of the machine while measured.
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measured_from.into()).await;
        let before = (cpu_time("server"), cpu_time("load"));
        tokio::time::sleep_until(end.into()).await;
        (cpu_time("server") - before.0, cpu_time("load") - before.1)
    });
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        return samples;
                    }
                    connection.request().await;
                    if sent >= measured_from {
                        samples.push(sent.elapsed());
                    }
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("connection task"));
    }
    let (server, load) = cpu.await.expect("cpu task");
    let share = |cpu: Duration| cpu.as_secs_f64() / MEASURED.as_secs_f64();
    Run {
        samples,
        wall: MEASURED,
        cores: Some((share(server), share(load))),
        from_send: Vec::new(),
    }
}

/// What keeps an open loop's schedule.
enum Pacer {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

/// The open loop: requests scheduled at `rate` per second for [`WARM_UP`] and then
/// [`MEASURED`], each taken by whichever connection is free; latency counts from the
/// scheduled time.
async fn open_loop(target: &Target, rate: f64, pinned: bool) -> Run {
    let mut connections = Vec::new();
    for c in 0..CONNECTIONS {
        connections.push(Connection::open(target, c * CONTEXTS / CONNECTIONS).await);
    }
    // Unbounded: a backlog of scheduled requests is what the latencies measure.
    let (schedule, scheduled) = mpsc::unbounded_channel::<Instant>();
    // The connections take turns at the queue; the lock is held only while one waits for the
    // next scheduled request.
    let scheduled = Arc::new(Mutex::new(scheduled));
    let start = Instant::now() + Duration::from_millis(10);
    let measured_from = start + WARM_UP;
    let end = measured_from + MEASURED;
    let interval = Duration::from_secs_f64(1.0 / rate);
    // Sends what is due by `now`; returns when the next request is due, or None once the
    // schedule is over or nobody takes it.
    let mut next = start;
    let mut release = move |now: Instant| {
        while next <= now && next < end {
            schedule.send(next).ok()?;
            next += interval;
        }
        (next < end).then_some(next)
    };
    // tokio's timers tick in whole milliseconds, which would delay the sends by up to a
    // millisecond, so the schedule is kept another way.
    let pacer = if pinned {
        // The load generator has its core to itself: a task of its runtime reads the clock
        // between the connections' turns, and never sleeps.
        Pacer::Task(tokio::spawn(async move {
            while release(Instant::now()).is_some() {
                tokio::task::yield_now().await;
            }
        }))
    } else {
        // On shared cores, a thread of its own, which sleeps until the next request is due
        // but at least PACER_TICK, so that it does not take a core from the server or the
        // load generator for every request; requests it releases late count that as latency.
        let pacer = std::thread::Builder::new().name("load-pacer".into());
        let pacer = pacer.spawn(move || {
            while let Some(next) = release(Instant::now()) {
                let due = next.saturating_duration_since(Instant::now());
                std::thread::sleep(due.max(PACER_TICK));
            }
        });
        Pacer::Thread(pacer.expect("pacer thread"))
    };
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            let scheduled = scheduled.clone();
            tokio::spawn(async move {
                let (mut samples, mut from_send) = (Vec::new(), Vec::new());
                let mut last = measured_from;
                loop {
                    let Some(at) = scheduled.lock().await.recv().await else {
                        return (samples, from_send, last);
                    };
                    let sent = Instant::now();
                    connection.request().await;
                    if at >= measured_from {
                        last = Instant::now();
                        samples.push(last - at);
                        from_send.push(last - sent);
                    }
                }
            })
        })
        .collect();
    let (mut samples, mut from_send) = (Vec::new(), Vec::new());
    let mut last = measured_from;
    for task in tasks {
        let (more, more_from_send, done) = task.await.expect("connection task");
        samples.extend(more);
        from_send.extend(more_from_send);
        last = last.max(done);
    }
    match pacer {
        Pacer::Task(task) => task.await.expect("pacer"),
        Pacer::Thread(thread) => thread.join().expect("pacer"),
    }
    Run {
        samples,
        // Until the last answer: a server that falls behind shows a lower rate.
        wall: last.max(end) - measured_from,
        cores: None,
        from_send,
    }
}

/// Both loops for one scenario: returns the maximum rate, and that rate per server core.
async fn scenario(name: &str, target: &Target, pinned: bool) -> (f64, Option<f64>) {
    let (max, per_core) = closed_loop(target)
        .await
        .report(&format!("{name}, {CONNECTIONS} connections, closed"));
    open_loop(target, max / 2.0, pinned)
        .await
        .report(&format!("{name}, open loop at {:.0}/s", max / 2.0));
    (max, per_core)
}

/// The floor's route: reads the body as JSON and answers `answer`.
fn floor_routes(answer: Bytes) -> axum::Router {
    axum::Router::new().route(
        "/floor",
        axum::routing::post(move |body: Bytes| {
            let answer = answer.clone();
            async move {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(_) => (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        answer,
                    )
                        .into_response(),
                    Err(_) => StatusCode::BAD_REQUEST.into_response(),
                }
            }
        }),
    )
}

/// With `--pin`: the core the server's threads run on, and the core of every other thread.
fn pinned_cores() -> (core_affinity::CoreId, core_affinity::CoreId) {
    match core_affinity::get_core_ids().unwrap_or_default()[..] {
        [server, load, ..] => (server, load),
        _ => panic!("--pin needs at least 2 cores"),
    }
}

/// Keeps the calling thread, and the threads it starts from now on, on `core`.
fn pin_to(core: core_affinity::CoreId) {
    assert!(
        core_affinity::set_for_current(core),
        "could not pin a thread to core {}",
        core.id
    );
}

/// How long the stall probe runs on each core.
const PROBE: Duration = Duration::from_secs(3);

/// Reads the clock in a loop on the calling thread for [`PROBE`], with nothing else of the
/// benchmark running, and reports the gaps of over a millisecond: the times the machine itself
/// (its kernel, or the hypervisor under it) took the core away. Each such gap holds up every
/// request that arrives during it, so on an otherwise idle core they bound the p99 the
/// benchmark can show.
fn report_stalls(core: core_affinity::CoreId) {
    let start = Instant::now();
    let (mut last, mut gaps, mut longest, mut lost) = (start, 0, Duration::ZERO, Duration::ZERO);
    while last - start < PROBE {
        let now = Instant::now();
        let gap = now - last;
        if gap > Duration::from_millis(1) {
            gaps += 1;
            longest = longest.max(gap);
            lost += gap;
        }
        last = now;
    }
    println!(
        "core {} idle for {PROBE:?}: {gaps} stalls over 1 ms, longest {longest:.2?}, \
         {lost:.2?} in all",
        core.id
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pin = args.iter().any(|a| a == "--pin");
    let chosen: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let runs = |name: &str| chosen.is_empty() || chosen.iter().any(|c| *c == name);

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    // Every thread started from here on inherits the main thread's core.
    let pinned = pin.then(pinned_cores);
    if let Some((server_core, load_core)) = pinned {
        for core in [server_core, load_core] {
            std::thread::spawn(move || {
                pin_to(core);
                report_stalls(core);
            })
            .join()
            .expect("stall probe");
        }
        pin_to(load_core);
    }

    // flagstaffd as on a 2-core machine (or on one core of its own with `--pin`); the load
    // generator's own runtime beside it.
    let mut server_runtime = tokio::runtime::Builder::new_multi_thread();
    server_runtime.worker_threads(2);
    if let Some((server_core, _)) = pinned {
        server_runtime
            .worker_threads(1)
            .on_thread_start(move || pin_to(server_core));
    }
    let server_runtime = server_runtime
        .thread_name("server")
        .enable_all()
        .build()
        .expect("server runtime");
    // Pinned, each runtime has one worker thread: a second one on the same core would take
    // turns with it, and a task woken on the one waiting for its turn would wait a time slice.
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if pinned.is_some() { 1 } else { 2 })
        .thread_name("load")
        .enable_all()
        .build()
        .expect("load runtime");

    let dir = tempfile::tempdir().expect("data dir");
    let server = Server::open(&Config::new(dir.path())).expect("server");
    server
        .environments()
        .create("bench", false)
        .expect("environment");
    let ctx = WriteContext {
        environment: "bench",
        actor: "bench",
        operation: "Apply",
        comment: "",
        confirmed: false,
        duty: false,
    };
    server
        .environments()
        .apply(ctx, flags())
        .expect("100 flags");
    let (_, sdk) = server
        .tokens()
        .create("bench-sdk", Role::Sdk, Some("bench"))
        .expect("sdk token");
    let authorization = HeaderValue::try_from(format!("Bearer {sdk}")).expect("token");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let listener = server_runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let ofrep_addr = listener.local_addr().expect("address");
    let ofrep_server = server_runtime.spawn(server.serve(listener, shutdown()));

    let bodies = bodies();
    let single = Target {
        addr: ofrep_addr,
        path: "/ofrep/v1/evaluate/flags/s2",
        authorization: Some(authorization.clone()),
        bodies: bodies.clone(),
    };
    let bulk = Target {
        path: "/ofrep/v1/evaluate/flags",
        ..single.clone()
    };

    // The floor answers what OFREP answers for S2, so both send the same bytes back.
    let answer = client_runtime.block_on(async {
        let answer = Connection::open(&single, 0).await.request().await;
        println!(
            "an OFREP answer for S2, {} bytes: {}",
            answer.len(),
            String::from_utf8_lossy(&answer)
        );
        answer
    });
    let listener = server_runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let floor = Target {
        addr: listener.local_addr().expect("address"),
        path: "/floor",
        authorization: None,
        bodies,
    };
    let floor_server = server_runtime.spawn(flagstaff_server::serve_routes(
        listener,
        floor_routes(answer),
        shutdown(),
    ));

    match &pinned {
        None => println!(
            "{cores} cores; server: 2 worker threads, load generator: 2 worker threads, both on them"
        ),
        Some((server_core, load_core)) => println!(
            "{cores} cores; server: 1 worker thread on core {}, load generator: 1 worker thread \
             on core {}",
            server_core.id, load_core.id
        ),
    }
    client_runtime.block_on(async {
        let mut floor_max = None;
        for (name, target) in [("floor", &floor), ("single", &single), ("bulk", &bulk)] {
            if !runs(name) {
                continue;
            }
            let (max, per_core) = scenario(name, target, pinned.is_some()).await;
            match (name, floor_max) {
                ("floor", _) => floor_max = Some((max, per_core)),
                ("single", Some((floor, floor_per_core))) => {
                    let ratio = |a: Option<f64>, b: Option<f64>| {
                        a.zip(b)
                            .map_or("?".to_owned(), |(a, b)| format!("{:.2}", a / b))
                    };
                    println!(
                        "{:<34} {:.2}, per server core {} (target: at least 0.5)",
                        "single ÷ floor, closed loops",
                        max / floor,
                        ratio(per_core, floor_per_core)
                    );
                }
                _ => {}
            }
        }
    });

    let _ = stop.send(true);
    server_runtime
        .block_on(ofrep_server)
        .expect("server task")
        .expect("served");
    server_runtime
        .block_on(floor_server)
        .expect("floor task")
        .expect("served");
}
