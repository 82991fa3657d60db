//! Durable write latency of the control plane, below the RPC layer:
//! `cargo bench -p flagstaff-server --bench write`.
//!
//! Each write toggles one flag through `Environments::write`: build, check versions, validate
//! by compiling the next snapshot, commit in one sled transaction, flush and fsync, publish.
//! Reported: p50, p99 and max over sequential writes, and with 8 writers at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstaff_engine::{flag_from_value, ChangeSet, Flag};
use flagstaff_server::storage::SledStore;
use flagstaff_server::{Environments, WriteContext};
use serde_json::json;

fn flag(key: &str, enabled: bool) -> Flag {
    flag_from_value(&json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": enabled, "default": {"variant": "on"},
    }))
    .expect("flag")
}

fn write(envs: &Environments<SledStore>, key: &str, enabled: bool) -> Duration {
    let start = Instant::now();
    let ctx = WriteContext {
        environment: "bench",
        actor: "bench",
        operation: "SetFlagEnabled",
        comment: "",
        confirmed: false,
        duty: false,
    };
    envs.write(ctx, |_| {
        Ok(ChangeSet {
            flags: vec![flag(key, enabled)],
            ..ChangeSet::default()
        })
    })
    .expect("write");
    start.elapsed()
}

fn report(name: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<28} n={:<5} p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  {:>7.0} writes/s",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        samples.len() as f64 / wall.as_secs_f64()
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = Arc::new(
        Environments::load(Arc::new(
            SledStore::open(dir.path(), 10_000).expect("store"),
        ))
        .expect("load"),
    );
    envs.create("bench", false).expect("create");
    // 1,000 flags, so each write compiles into a realistic snapshot.
    for chunk in 0..10 {
        let flags = (0..100)
            .map(|i| flag(&format!("flag-{chunk}-{i}"), true))
            .collect();
        let ctx = WriteContext {
            environment: "bench",
            actor: "bench",
            operation: "SetFlagEnabled",
            comment: "",
            confirmed: false,
            duty: false,
        };
        envs.write(ctx, |_| {
            Ok(ChangeSet {
                flags,
                ..ChangeSet::default()
            })
        })
        .expect("seed");
    }

    let start = Instant::now();
    let samples: Vec<Duration> = (0..500)
        .map(|i| write(&envs, "flag-0-0", i % 2 == 0))
        .collect();
    report("1 writer", samples, start.elapsed());

    let start = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let envs = envs.clone();
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| write(&envs, &format!("flag-{w}-1"), i % 2 == 0))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let samples = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    report("8 writers", samples, start.elapsed());
}
