//! A fixed workload for counting instructions, which unlike wall time does not depend on what
//! else the machine is doing: S1–S3 of `benches/client.rs`, a million evaluations each,
//! through `Client`, on the bare snapshot, or on the snapshot loaded from an `ArcSwapOption`.
//!
//! ```sh
//! cargo bench -p flagstaff --bench client_loop --no-run   # prints the executable's path
//! valgrind --tool=callgrind <executable> c2               # e1..e3, c1..c3, a1..a3, none
//! <executable> paired                                     # engine and client, alternating
//! ```
//!
//! The difference between a scenario's total and the bare loop's (`none`), divided by a
//! million, is the scenario's instructions per evaluation. Run without valgrind, it prints the
//! time per evaluation; `paired` times engine and client in alternating batches and prints the
//! median difference, which the machine's changes of speed disturb least.

use std::hint::black_box;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use flagstaff::{Client, Context, Snapshot};

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
    default: { split: { bucket_by: key, weights: [{ variant: on, weight: 10000 }, { variant: off, weight: 90000 }] } }
  - key: s3
    kind: string
    variants: { control: Welcome, a: Hello, b: Hi }
    off_variant: control
    enabled: true
    rules: [{ id: ent, conditions: [{ attribute: plan, op: in, values: [enterprise] }], serve: { variant: a } }]
    default: { split: { weights: [{ variant: control, weight: 50000 }, { variant: a, weight: 30000 }, { variant: b, weight: 20000 }] } }
"#;

const ITERATIONS: usize = 1_000_000;

fn main() {
    // `cargo bench` passes `--bench`; the scenario is the first other argument.
    let scenario = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| "none".to_owned());
    let snapshot = std::sync::Arc::new(Snapshot::from_text(DOC).expect("valid document"));
    let client = Client::from_snapshot((*snapshot).clone());
    let swapped = ArcSwapOption::new(Some(snapshot.clone()));
    let countries = ["NL", "DE", "FR", "US", "GB"];
    let plans = ["free", "pro", "enterprise"];
    let keys: Vec<String> = (0..1_000).map(|i| format!("user-{i}")).collect();
    let contexts: Vec<Context<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            Context::new(key.as_str())
                .with("country", countries[i % 5])
                .with("plan", plans[i % 3])
        })
        .collect();
    let ctx = |i: usize| &contexts[i % contexts.len()];
    if scenario == "paired" {
        paired(&snapshot, &client, &swapped, &contexts);
        return;
    }
    let start = Instant::now();
    let mut n = 0usize;
    match scenario.as_str() {
        "e1" => (0..ITERATIONS)
            .for_each(|i| n += usize::from(snapshot.bool_value(black_box("s1"), ctx(i), false))),
        "c1" => (0..ITERATIONS)
            .for_each(|i| n += usize::from(client.bool_value(black_box("s1"), ctx(i), false))),
        "a1" => (0..ITERATIONS).for_each(|i| {
            n += usize::from(
                swapped
                    .load()
                    .as_ref()
                    .is_some_and(|s| s.bool_value(black_box("s1"), ctx(i), false)),
            )
        }),
        "e2" => (0..ITERATIONS)
            .for_each(|i| n += usize::from(snapshot.bool_value(black_box("s2"), ctx(i), false))),
        "c2" => (0..ITERATIONS)
            .for_each(|i| n += usize::from(client.bool_value(black_box("s2"), ctx(i), false))),
        "a2" => (0..ITERATIONS).for_each(|i| {
            n += usize::from(
                swapped
                    .load()
                    .as_ref()
                    .is_some_and(|s| s.bool_value(black_box("s2"), ctx(i), false)),
            )
        }),
        "e3" => (0..ITERATIONS)
            .for_each(|i| n += snapshot.string_value(black_box("s3"), ctx(i), "").len()),
        "c3" => (0..ITERATIONS)
            .for_each(|i| n += client.with_string(black_box("s3"), ctx(i), "", str::len)),
        "a3" => (0..ITERATIONS).for_each(|i| {
            n += swapped
                .load()
                .as_ref()
                .map_or(0, |s| s.string_value(black_box("s3"), ctx(i), "").len())
        }),
        _ => (0..ITERATIONS).for_each(|i| n += black_box(i) & 1),
    }
    let elapsed = start.elapsed();
    println!(
        "{scenario}: {:.1} ns per iteration ({n})",
        elapsed.as_nanos() as f64 / ITERATIONS as f64
    );
}

/// One evaluation of `i`'s context, returning something of its result.
type Eval<'a> = &'a dyn Fn(usize) -> usize;

/// A case's name, and one evaluation on the bare snapshot, through the client, and on the
/// snapshot loaded from an `ArcSwapOption`.
type Case<'a> = (&'static str, Eval<'a>, Eval<'a>, Eval<'a>);

/// Engine, client and arc-swap in alternating batches of 10,000 evaluations, 400 rounds per
/// case: what slows the machine down meanwhile slows them alike, so the median of the
/// differences of neighbouring batches is steadier than a difference of separate runs.
fn paired(
    snapshot: &Snapshot,
    client: &Client,
    swapped: &ArcSwapOption<Snapshot>,
    contexts: &[Context<'_>],
) {
    const BATCH: usize = 10_000;
    const ROUNDS: usize = 400;
    let ctx = |i: usize| &contexts[i % contexts.len()];
    let time = |f: &dyn Fn(usize) -> usize| {
        let start = Instant::now();
        let n: usize = (0..BATCH).map(|i| f(black_box(i))).sum();
        black_box(n);
        start.elapsed().as_nanos() as f64 / BATCH as f64
    };
    let cases: [Case<'_>; 3] = [
        (
            "S1",
            &|i| usize::from(snapshot.bool_value(black_box("s1"), ctx(i), false)),
            &|i| usize::from(client.bool_value(black_box("s1"), ctx(i), false)),
            &|i| {
                let s = swapped.load();
                usize::from(
                    s.as_ref()
                        .is_some_and(|s| s.bool_value(black_box("s1"), ctx(i), false)),
                )
            },
        ),
        (
            "S2",
            &|i| usize::from(snapshot.bool_value(black_box("s2"), ctx(i), false)),
            &|i| usize::from(client.bool_value(black_box("s2"), ctx(i), false)),
            &|i| {
                let s = swapped.load();
                usize::from(
                    s.as_ref()
                        .is_some_and(|s| s.bool_value(black_box("s2"), ctx(i), false)),
                )
            },
        ),
        (
            "S3",
            &|i| snapshot.string_value(black_box("s3"), ctx(i), "").len(),
            &|i| client.with_string(black_box("s3"), ctx(i), "", |s| s.len()),
            &|i| {
                let s = swapped.load();
                s.as_ref()
                    .map_or(0, |s| s.string_value(black_box("s3"), ctx(i), "").len())
            },
        ),
    ];
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (name, engine, through_client, arc_swap) in cases {
        let (mut e, mut c, mut a) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (te, tc, ta) = (time(engine), time(through_client), time(arc_swap));
            e.push(te);
            c.push(tc - te);
            a.push(ta - te);
        }
        println!(
            "{name}: engine {:.1} ns, client - engine {:+.1} ns, arc-swap - engine {:+.1} ns (medians)",
            median(&mut e),
            median(&mut c),
            median(&mut a),
        );
    }
}
