//! What the client adds to the engine, and what applying a delta costs:
//! `cargo bench -p flagstaff --bench client`. Results are in docs/benchmarks.md.
//!
//! S1–S3 are the engine benchmark's flags (a plain boolean; a rule then a 10% split; a
//! three-way string split behind a rule) in a 1,000-flag snapshot, evaluated for contexts
//! drawn from 10,000 keys, through `Client` (which counts every evaluation for its usage
//! reports), on the bare snapshot, and on the snapshot loaded from an `ArcSwapOption` for each
//! evaluation (how the client read its snapshot before it counted). The two-thread group runs the same evaluations on
//! two threads at once, sharing one client (or one snapshot), and reports the time per
//! evaluation on each thread: with no shared write on the hot path it matches one thread's.
//! `track` counts an application event. The delta benchmark resolves and applies a one-flag
//! delta, as received from the Watch stream, to a 10,000-flag snapshot.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
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
    let swapped = ArcSwapOption::new(Some(snap.clone()));
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
    group.bench_function("S1 arc-swap", |b| {
        b.iter(|| {
            let ctx = &contexts[next()];
            swapped
                .load()
                .as_ref()
                .is_some_and(|s| s.bool_value(black_box("s1"), ctx, false))
        })
    });
    group.bench_function("S2 engine", |b| {
        b.iter(|| snap.bool_value(black_box("s2"), &contexts[next()], false))
    });
    group.bench_function("S2 client", |b| {
        b.iter(|| client.bool_value(black_box("s2"), &contexts[next()], false))
    });
    group.bench_function("S2 arc-swap", |b| {
        b.iter(|| {
            let ctx = &contexts[next()];
            swapped
                .load()
                .as_ref()
                .is_some_and(|s| s.bool_value(black_box("s2"), ctx, false))
        })
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
    group.bench_function("S3 arc-swap", |b| {
        b.iter(|| {
            let ctx = &contexts[next()];
            swapped
                .load()
                .as_ref()
                .map_or(0, |s| s.string_value(black_box("s3"), ctx, "").len())
        })
    });
    group.finish();
}

/// Runs `work(thread, i)` for `i` in `0..iters` on each of two threads started together; the
/// longer of the two threads' times. Each thread runs `work` once before the clock starts, so
/// that what a thread sets up at its first evaluation (its thread-local entry) is not
/// measured: the threads are new in every sample.
fn two_threads(iters: u64, work: &(impl Fn(usize, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|thread| {
                let barrier = &barrier;
                scope.spawn(move || {
                    work(thread, 0);
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        work(thread, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a benchmark thread"))
            .max()
            .unwrap_or_default()
    })
}

fn two_threads_client_versus_engine(c: &mut Criterion) {
    let snap = Arc::new(snapshot(997));
    let client = Client::from_snapshot((*snap).clone());
    let swapped = ArcSwapOption::new(Some(snap.clone()));
    let contexts = contexts();
    // Each thread walks the contexts from its own starting point.
    let ctx = |thread: usize, i: u64| &contexts[(thread * 5_000 + i as usize) % 10_000];
    let mut group = c.benchmark_group("two threads: client vs engine");
    group.bench_function("S1 engine", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                black_box(snap.bool_value(black_box("s1"), ctx(t, i), false));
            })
        })
    });
    group.bench_function("S1 client", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                black_box(client.bool_value(black_box("s1"), ctx(t, i), false));
            })
        })
    });
    group.bench_function("S1 arc-swap", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                let on = swapped
                    .load()
                    .as_ref()
                    .is_some_and(|s| s.bool_value(black_box("s1"), ctx(t, i), false));
                black_box(on);
            })
        })
    });
    group.bench_function("S2 engine", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                black_box(snap.bool_value(black_box("s2"), ctx(t, i), false));
            })
        })
    });
    group.bench_function("S2 client", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                black_box(client.bool_value(black_box("s2"), ctx(t, i), false));
            })
        })
    });
    group.bench_function("S2 arc-swap", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                let on = swapped
                    .load()
                    .as_ref()
                    .is_some_and(|s| s.bool_value(black_box("s2"), ctx(t, i), false));
                black_box(on);
            })
        })
    });
    group.bench_function("S3 engine", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                black_box(snap.string_value(black_box("s3"), ctx(t, i), "").len());
            })
        })
    });
    group.bench_function("S3 client", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                black_box(client.with_string(black_box("s3"), ctx(t, i), "", str::len));
            })
        })
    });
    group.bench_function("S3 arc-swap", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                let len = swapped
                    .load()
                    .as_ref()
                    .map_or(0, |s| s.string_value(black_box("s3"), ctx(t, i), "").len());
                black_box(len);
            })
        })
    });
    group.finish();
}

fn track(c: &mut Criterion) {
    let client = Client::from_snapshot(snapshot(997));
    let contexts = contexts();
    let mut i = 0usize;
    c.bench_function("track", |b| {
        b.iter(|| {
            // 10,000 contexts: each stays under the per-minute cap for a while, then is capped.
            i = (i + 1) % 10_000;
            client.track(black_box("checkout_error"), &contexts[i]);
        })
    });
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

criterion_group!(
    benches,
    client_versus_engine,
    two_threads_client_versus_engine,
    track,
    delta
);
criterion_main!(benches);
