//! A fixed workload for counting instructions, which unlike wall time does not depend on what
//! else the machine is doing:
//!
//! ```sh
//! cargo build --release -p flagstaff-engine --example eval_loop
//! valgrind --tool=callgrind target/release/examples/eval_loop s2
//! ```
//!
//! Runs one million iterations of one benchmark scenario (`s1`, `s2`, `s3` or `c`, as in
//! `benches/eval.rs`), or of the bare loop (`none`); the difference between a scenario's total
//! and the bare loop's, divided by a million, is the scenario's instructions per iteration.
//!
//! `d` applies a one-flag change to a 10,000-flag snapshot 1,000 times, dropping each result
//! (scenario D); `d0` builds the same snapshot and change without applying it. The difference
//! divided by 1,000 is the instructions per delta.

use std::hint::black_box;

use flagstaff_engine::{document_from_value, ChangeSet, Context, Snapshot};
use serde_json::json;

const DOC: &str = r#"
environment: bench
flags:
  - { key: s1, kind: boolean, variants: { on: true, off: false }, off_variant: off, enabled: true, default: { variant: on } }
  - key: s2
    kind: boolean
    variants: { on: true, off: false }
    off_variant: off
    enabled: true
    rules: [{ id: eu, conditions: [{ attribute: country, op: in, values: [NL, DE] }], serve: { variant: on } }]
    default: { split: { weights: [{ variant: on, weight: 10000 }, { variant: off, weight: 90000 }] } }
  - key: s3
    kind: string
    variants: { control: Welcome, a: Hello, b: Hi }
    off_variant: control
    enabled: true
    rules: [{ id: ent, conditions: [{ attribute: plan, op: in, values: [enterprise] }], serve: { variant: a } }]
    default: { split: { weights: [{ variant: control, weight: 50000 }, { variant: a, weight: 30000 }, { variant: b, weight: 20000 }] } }
"#;

fn main() {
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "none".to_owned());
    if let Some(applies) = match scenario.as_str() {
        "d" => Some(1_000),
        "d0" => Some(0),
        _ => None,
    } {
        return delta(applies);
    }
    let snapshot = Snapshot::from_text(DOC).expect("valid document");
    let countries = ["NL", "DE", "FR", "US", "GB"];
    let plans = ["free", "pro", "enterprise"];
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let contexts: Vec<Context<'_>> = (0..10_000)
        .map(|i| {
            Context::new(&keys[i])
                .with("country", countries[i % 5])
                .with("plan", plans[i % 3])
        })
        .collect();
    // One loop per scenario, chosen before it starts: a scenario chosen inside one shared loop
    // made the loop's own cost depend on how the other scenarios' code was laid out.
    let ctx = |i: usize| &contexts[i % contexts.len()];
    let total = match scenario.as_str() {
        "s1" => run(|i| usize::from(snapshot.bool_value(black_box("s1"), ctx(i), false))),
        "s2" => run(|i| usize::from(snapshot.bool_value(black_box("s2"), ctx(i), false))),
        "s3" => run(|i| snapshot.string_value(black_box("s3"), ctx(i), "none").len()),
        "c" => run(|i| {
            let built = Context::new(black_box(keys[i % keys.len()].as_str()))
                .with("country", black_box(countries[i % 5]))
                .with("plan", black_box(plans[i % 3]));
            black_box(&built).key().len()
        }),
        _ => run(|i| black_box(ctx(i)).key().len()),
    };
    black_box(total);
}

/// Runs `iteration` for `i` in `0..1_000_000` and sums what it returns.
#[inline(always)]
fn run(mut iteration: impl FnMut(usize) -> usize) -> usize {
    let mut total = 0usize;
    for i in 0..1_000_000 {
        total = total.wrapping_add(iteration(black_box(i)));
    }
    total
}

/// Scenario D: a one-flag change applied `applies` times to a 10,000-flag snapshot.
fn delta(applies: usize) {
    let flags: Vec<_> = (0..10_000)
        .map(|i| {
            let mut flag = match i % 3 {
                0 => json!({"kind": "boolean", "variants": {"on": true, "off": false},
                            "off_variant": "off", "enabled": true, "default": {"variant": "on"}}),
                1 => json!({"kind": "boolean", "variants": {"on": true, "off": false},
                            "off_variant": "off", "enabled": true,
                            "rules": [{"id": "eu", "conditions": [{"attribute": "country", "op": "in", "values": ["NL", "DE"]}],
                                       "serve": {"variant": "on"}}],
                            "default": {"split": {"weights": [
                                {"variant": "on", "weight": 10000}, {"variant": "off", "weight": 90000}]}}}),
                _ => json!({"kind": "string", "variants": {"control": "Welcome", "a": "Hello", "b": "Hi"},
                            "off_variant": "control", "enabled": true,
                            "default": {"split": {"weights": [
                                {"variant": "control", "weight": 50000}, {"variant": "a", "weight": 30000},
                                {"variant": "b", "weight": 20000}]}}}),
            };
            flag["key"] = json!(format!("flag-{i:05}"));
            flag
        })
        .collect();
    let doc = json!({"environment": "bench", "flags": flags});
    let snapshot = Snapshot::from_document(document_from_value(&doc).expect("decodes"))
        .expect("valid document");
    let mut changed = snapshot.flag("flag-05001").expect("exists").clone();
    changed.enabled = false;
    let change = ChangeSet {
        flags: vec![changed],
        ..ChangeSet::default()
    };
    for _ in 0..applies {
        drop(black_box(
            snapshot.apply(black_box(change.clone())).expect("valid"),
        ));
    }
    black_box(&snapshot);
}
