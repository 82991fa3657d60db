//! The hot path allocates nothing: a counting global allocator watches 10,000 evaluations of
//! boolean, string and number flags with rules, segments, splits and every operator.
#![allow(unsafe_code)] // a GlobalAlloc implementation is unsafe by definition

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use flagstaff_engine::{Context, Snapshot};

thread_local! {
    /// Per thread, so the test harness's other threads cannot disturb the count.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static FREES: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREES.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A new block for an old one: an allocation and a free.
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        FREES.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn frees() -> usize {
    FREES.with(Cell::get)
}

const DOC: &str = r#"
environment: alloc
segments:
  - key: staff
    included: [user-1, user-7]
    excluded: [user-9]
    rules:
      - conditions: [{ attribute: email, op: ends_with, values: ["@example.com"] }]
flags:
  - key: gate
    kind: boolean
    variants: { on: true, off: false }
    off_variant: off
    enabled: true
    default: { variant: on }
  - key: checkout
    kind: boolean
    variants: { on: true, off: false }
    off_variant: off
    enabled: true
    prerequisites: [{ flag: gate, variants: [on] }]
    rules:
      - id: staff
        conditions: [{ op: in_segment, values: [staff] }]
        serve: { variant: on }
      - id: eu
        conditions: [{ attribute: country, op: in, values: [NL, DE] }]
        serve: { split: { weights: [{ variant: on, weight: 25000 }, { variant: off, weight: 75000 }] } }
      - id: versions
        conditions:
          - { attribute: app_version, op: semver_gt, values: ["2.1.0"] }
          - { attribute: signup, op: before, values: ["2030-01-01T00:00:00Z"] }
          - { attribute: path, op: matches, values: ["^/beta/[a-z]+$"] }
        serve: { variant: on }
    default: { split: { weights: [{ variant: on, weight: 10000 }, { variant: off, weight: 90000 }] } }
  - key: banner
    kind: string
    variants: { control: Welcome, a: Hello, b: Hi }
    off_variant: control
    enabled: true
    rules:
      - id: ent
        conditions: [{ attribute: plan, op: in, values: [enterprise] }]
        serve: { variant: a }
      - id: young
        conditions: [{ attribute: age, op: lt, values: [18] }, { attribute: tags, op: contains, values: [x] }]
        serve: { variant: b }
    default: { split: { bucket_by: org, weights: [{ variant: control, weight: 50000 }, { variant: a, weight: 30000 }, { variant: b, weight: 20000 }] } }
  - key: limit
    kind: number
    variants: { low: 10, high: 100 }
    off_variant: low
    enabled: true
    rules:
      - id: numeric-bucket
        conditions: [{ attribute: score, op: gte, values: [50] }]
        serve: { split: { bucket_by: score, weights: [{ variant: low, weight: 50000 }, { variant: high, weight: 50000 }] } }
    default: { variant: low }
"#;

#[test]
fn ten_thousand_evaluations_allocate_nothing() {
    let snapshot = Snapshot::from_text(DOC).expect("valid document");
    let countries = ["NL", "DE", "FR", "US"];
    let plans = ["free", "pro", "enterprise"];
    let contexts: Vec<Context<'_>> = (0..100)
        .map(|i| {
            Context::new(format!("user-{i}"))
                .with("country", countries[i % 4])
                .with("plan", plans[i % 3])
                .with(
                    "email",
                    if i % 5 == 0 {
                        "x@example.com"
                    } else {
                        "x@example.org"
                    },
                )
                .with(
                    "app_version",
                    if i % 2 == 0 { "2.3.0" } else { "1.0.0-beta.1" },
                )
                .with("signup", "2024-05-01T12:00:00Z")
                .with("path", "/beta/search")
                .with("age", (i % 40) as f64)
                .with("tags", vec!["a", "x"])
                .with("org", format!("org-{}", i % 7))
                .with("score", (i % 100) as f64 + 0.5)
        })
        .collect();

    // Evaluate once first, so anything lazily initialised is not counted.
    let mut on = 0usize;
    for ctx in &contexts {
        on += usize::from(snapshot.bool_value("checkout", ctx, false));
    }

    let before = allocations();
    let mut checksum = 0.0;
    for i in 0..10_000 {
        let ctx = &contexts[i % contexts.len()];
        let checkout = snapshot.bool_detail("checkout", ctx, false);
        let banner = snapshot.string_detail("banner", ctx, "none");
        let limit = snapshot.number_detail("limit", ctx, 0.0);
        let missing = snapshot.bool_value("no-such-flag", ctx, true);
        let mismatch = snapshot.string_value("limit", ctx, "default");
        checksum += f64::from(u8::from(checkout.value)) + banner.value.len() as f64 + limit.value;
        checksum += f64::from(u8::from(missing)) + mismatch.len() as f64;
    }
    let allocated = allocations() - before;

    assert!(checksum > 0.0 && on > 0);
    assert_eq!(
        allocated, 0,
        "10,000 evaluations allocated {allocated} times"
    );
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(16));
    assert!(allocations() > before);
    drop(v);
}

#[test]
fn building_a_context_from_borrowed_strings_allocates_nothing() {
    let keys: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    let before = allocations();
    let mut total = 0;
    for key in &keys {
        let ctx = Context::new(key.as_str())
            .with("country", "NL")
            .with("plan", key)
            .with("age", 42);
        total += ctx.key().len();
    }
    let allocated = allocations() - before;
    assert!(total > 0);
    assert_eq!(
        allocated, 0,
        "building 100 contexts allocated {allocated} times"
    );
}

#[test]
fn dropping_a_context_frees_everything_it_owns() {
    let (allocated, freed) = (allocations(), frees());
    for round in 0..4 {
        let mut ctx = Context::new(format!("user-{round}"))
            .with("country", "NL")
            .with(String::from("owned-name"), "borrowed")
            .with("owned-value", String::from("x"))
            .with("list", vec!["a", "b"]);
        // Replacing owned values, spilling past the inline attributes, cloning, making owned.
        ctx.set("owned-value", "now borrowed");
        ctx.set("list", 3);
        if round % 2 == 0 {
            ctx.set("fifth", String::from("y"));
            ctx.remove("country");
        }
        let copy = ctx.clone();
        let owned = copy.clone().into_owned();
        assert_eq!(owned, ctx);
        drop((ctx, copy, owned));
    }
    // Spilled, all borrowed.
    let spilled = Context::new("k")
        .with("a", "1")
        .with("b", "2")
        .with("c", "3")
        .with("d", "4");
    drop(spilled);
    let allocated = allocations() - allocated;
    assert!(allocated > 0);
    assert_eq!(frees() - freed, allocated, "every allocation is freed");
}
