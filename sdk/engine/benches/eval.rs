//! Evaluation benchmarks: `cargo bench -p flagstaff-engine`. Results are in docs/benchmarks.md.
//!
//! S1–S3 evaluate one flag of a 1,000-flag snapshot for contexts drawn from 10,000 keys; C builds
//! a context; D compiles a one-flag change into a 10,000-flag snapshot; the segment pair compares
//! a 10-key segment with a 100,000-key one; the thread pair measures S2 throughput on 1 and 2
//! threads.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use flagstaff_engine::{document_from_value, ChangeSet, Context, Snapshot};
use serde_json::{json, Value};

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

/// Filler flags shaped like S1–S3, so the map holds a realistic mix.
fn filler(i: usize) -> Value {
    let mut flag = match i % 3 {
        0 => s1(),
        1 => s2(),
        _ => s3(),
    };
    flag["key"] = json!(format!("flag-{i:05}"));
    flag
}

fn snapshot(flags: usize, extra: Vec<Value>, segments: Vec<Value>) -> Snapshot {
    let mut all: Vec<Value> = (0..flags).map(filler).collect();
    all.extend(extra);
    let doc = json!({"environment": "bench", "flags": all, "segments": segments});
    Snapshot::from_document(document_from_value(&doc).expect("decodes")).expect("valid")
}

fn contexts() -> Vec<Context<'static>> {
    (0..10_000)
        .map(|i| {
            Context::new(format!("user-{i}"))
                .with("country", COUNTRIES[i % COUNTRIES.len()])
                .with("plan", PLANS[i % PLANS.len()])
        })
        .collect()
}

fn evaluation(c: &mut Criterion) {
    let snap = snapshot(997, vec![s1(), s2(), s3()], vec![]);
    let contexts = contexts();
    let mut group = c.benchmark_group("evaluate");
    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) % contexts.len();
        &contexts[i]
    };
    group.bench_function("S1 boolean, no rules", |b| {
        b.iter(|| snap.bool_value(black_box("s1"), next(), false))
    });
    group.bench_function("S2 boolean, country rule or 10% split", |b| {
        b.iter(|| snap.bool_value(black_box("s2"), next(), false))
    });
    group.bench_function("S3 string, plan rule or 50/30/20 split", |b| {
        b.iter(|| snap.string_value(black_box("s3"), next(), "none").len())
    });
    group.finish();
}

fn context_building(c: &mut Criterion) {
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let mut i = 0usize;
    let mut build = || {
        i = (i + 1) % keys.len();
        Context::new(black_box(keys[i].as_str()))
            .with("country", black_box(COUNTRIES[i % 5]))
            .with("plan", black_box(PLANS[i % 3]))
    };
    // Dropping the context (one free) is timed too: a service pays it when the request ends.
    c.bench_function("C context from a key and two string attributes", |b| {
        b.iter(&mut build)
    });
}

fn delta(c: &mut Criterion) {
    let snap = snapshot(10_000, vec![], vec![]);
    let mut changed = snap.flag("flag-05001").expect("exists").clone();
    changed.enabled = false;
    let change = ChangeSet {
        flags: vec![changed],
        ..ChangeSet::default()
    };
    c.bench_function("D one-flag change into a 10,000-flag snapshot", |b| {
        b.iter_batched(
            || change.clone(),
            |ch| snap.apply(ch).expect("valid"),
            BatchSize::SmallInput,
        )
    });
}

fn segments(c: &mut Criterion) {
    let segment = |key: &str, n: usize| json!({"key": key, "included": (0..n).map(|i| format!("member-{i}")).collect::<Vec<_>>()});
    let flag = |key: &str, seg: &str| {
        json!({"key": key, "kind": "boolean", "variants": {"on": true, "off": false},
               "off_variant": "off", "enabled": true,
               "rules": [{"id": "in", "conditions": [{"op": "in_segment", "values": [seg]}],
                          "serve": {"variant": "on"}}],
               "default": {"variant": "off"}})
    };
    let snap = snapshot(
        997,
        vec![flag("small", "ten"), flag("large", "hundred-thousand")],
        vec![segment("ten", 10), segment("hundred-thousand", 100_000)],
    );
    // Half the contexts are members of both segments.
    let contexts: Vec<Context<'static>> = (0..10_000)
        .map(|i| {
            Context::new(if i % 2 == 0 {
                format!("member-{}", i % 10)
            } else {
                format!("user-{i}")
            })
        })
        .collect();
    let mut group = c.benchmark_group("segment");
    for (name, flag) in [("10 keys", "small"), ("100,000 keys", "large")] {
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % contexts.len();
                snap.bool_value(black_box(flag), &contexts[i], false)
            })
        });
    }
    group.finish();
}

/// S2 on `threads` threads at once: each iteration is one evaluation on every thread, so
/// throughput on n threads relative to one is n × t(1) / t(n).
fn threads(c: &mut Criterion) {
    let snap = snapshot(997, vec![s1(), s2(), s3()], vec![]);
    let contexts = contexts();
    let mut group = c.benchmark_group("threads");
    for threads in [1usize, 2] {
        group.bench_function(format!("S2 on {threads} thread(s)"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let (snap, contexts) = (&snap, &contexts);
                        s.spawn(move || {
                            let mut on = 0u64;
                            for i in 0..iters as usize {
                                let ctx = &contexts[(i + t * 5003) % contexts.len()];
                                on += u64::from(snap.bool_value(black_box("s2"), ctx, false));
                            }
                            black_box(on)
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = evaluation, context_building, delta, segments, threads
}
criterion_main!(benches);
