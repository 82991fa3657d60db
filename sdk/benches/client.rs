//! What the client adds to the engine, and what applying a delta costs:
//! `cargo bench -p flagstaff --bench client`. Results are in docs/benchmarks.md.
//!
//! S1–S3 are the engine benchmark's flags (a plain boolean; a rule then a 10% split; a
//! three-way string split behind a rule) in a 1,000-flag snapshot, evaluated for contexts
//! drawn from 10,000 keys, once through `Client` and once on the bare snapshot. The delta
//! benchmark resolves and applies a one-flag delta, as received from the Watch stream, to a
//! 10,000-flag snapshot.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use flagstaff::{Client, Context, Snapshot};
use flagstaff_engine::{document_from_value, flag_from_value};
use flagstaff_proto::watch::Delta;
use serde_json::{json, Value};

fn s1(key: &str) -> Value {
    json!({"key": key, "kind": "boolean", "variants": {"on": true, "off": false},
           "off_variant": "off", "enabled": true, "default": {"variant": "on"}})
}

fn s2(key: &str) -> Value {
    json!({"key": key, "kind": "boolean", "variants": {"on": true, "off": false},
           "off_variant": "off", "enabled": true,
           "rules": [{"id": "eu", "conditions": [{"attribute": "country", "op": "in", "values": ["NL", "DE"]}],
                      "serve": {"variant": "on"}}],
           "default": {"split": {"bucket_by": "key", "weights": [
               {"variant": "on", "weight": 10000}, {"variant": "off", "weight": 90000}]}}})
}

fn s3(key: &str) -> Value {
    json!({"key": key, "kind": "string", "variants": {"control": "Welcome", "a": "Hello", "b": "Hi"},
           "off_variant": "control", "enabled": true,
           "rules": [{"id": "ent", "conditions": [{"attribute": "plan", "op": "in", "values": ["enterprise"]}],
                      "serve": {"variant": "a"}}],
           "default": {"split": {"weights": [
               {"variant": "control", "weight": 50000}, {"variant": "a", "weight": 30000},
               {"variant": "b", "weight": 20000}]}}})
}

/// `n` flags shaped like S1–S3 in turn, plus `s1`, `s2`, `s3` themselves.
fn snapshot(n: usize) -> Snapshot {
    let mut flags: Vec<Value> = (0..n)
        .map(|i| {
            let key = format!("flag-{i:05}");
            match i % 3 {
                0 => s1(&key),
                1 => s2(&key),
                _ => s3(&key),
            }
        })
        .collect();
    flags.extend([s1("s1"), s2("s2"), s3("s3")]);
    let doc = json!({"environment": "bench", "flags": flags});
    Snapshot::from_document(document_from_value(&doc).expect("decodes")).expect("valid")
}

fn contexts() -> Vec<Context<'static>> {
    const COUNTRIES: [&str; 5] = ["NL", "DE", "FR", "US", "GB"];
    const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
    (0..10_000)
        .map(|i| {
            Context::new(format!("user-{i}"))
                .with("country", COUNTRIES[i % COUNTRIES.len()])
                .with("plan", PLANS[i % PLANS.len()])
        })
        .collect()
}

fn client_versus_engine(c: &mut Criterion) {
    let snap = Arc::new(snapshot(997));
    let client = Client::from_snapshot((*snap).clone());
    let contexts = contexts();
    let mut group = c.benchmark_group("client vs engine");
    let mut i = 0usize;
    let mut next = move || {
        i = (i + 1) % 10_000;
        i
    };
    group.bench_function("S1 engine", |b| {
        b.iter(|| snap.bool_value(black_box("s1"), &contexts[next()], false))
    });
    group.bench_function("S1 client", |b| {
        b.iter(|| client.bool_value(black_box("s1"), &contexts[next()], false))
    });
    group.bench_function("S2 engine", |b| {
        b.iter(|| snap.bool_value(black_box("s2"), &contexts[next()], false))
    });
    group.bench_function("S2 client", |b| {
        b.iter(|| client.bool_value(black_box("s2"), &contexts[next()], false))
    });
    group.bench_function("S3 engine", |b| {
        b.iter(|| {
            snap.string_value(black_box("s3"), &contexts[next()], "")
                .len()
        })
    });
    group.bench_function("S3 client", |b| {
        b.iter(|| client.with_string(black_box("s3"), &contexts[next()], "", str::len))
    });
    group.finish();
}

fn delta(c: &mut Criterion) {
    let base = snapshot(9_997);
    let mut changed = s2("flag-00001");
    changed["enabled"] = json!(false);
    changed["version"] = json!(2);
    let flag = flag_from_value(&changed).expect("flag");
    c.bench_function("delta: one flag into 10,000", |b| {
        b.iter_batched(
            || Delta {
                revision: 2,
                flags: vec![flag.clone()],
                ..Delta::default()
            },
            |delta| {
                let changes = delta.resolve(&base).expect("resolves");
                base.apply(changes).expect("applies")
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, client_versus_engine, delta);
criterion_main!(benches);
