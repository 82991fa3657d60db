//! Evaluating through the client allocates nothing once a thread has counted on the current
//! snapshot: a counting global allocator watches 10,000 rounds of typed evaluations.
#![allow(unsafe_code)] // a GlobalAlloc implementation is unsafe by definition

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use flagstaff::{Client, Context};

thread_local! {
    /// Per thread, so the test harness's other threads cannot disturb the count.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: the allocator also runs while thread-locals are torn down.
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

const DOC: &str = r#"
environment: alloc
flags:
  - key: checkout
    kind: boolean
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: true
    rules:
      - id: eu
        conditions: [{ attribute: country, op: in, values: [NL, DE] }]
        serve: { split: { weights: [{ variant: "on", weight: 25000 }, { variant: "off", weight: 75000 }] } }
    default: { variant: "off" }
  - key: banner
    kind: string
    variants: { control: Welcome, a: Hello, b: Hi }
    off_variant: control
    enabled: true
    default: { split: { weights: [{ variant: control, weight: 50000 }, { variant: a, weight: 30000 }, { variant: b, weight: 20000 }] } }
  - key: limit
    kind: number
    variants: { low: 10, high: 100 }
    off_variant: low
    enabled: true
    default: { variant: high }
"#;

#[test]
fn ten_thousand_client_evaluations_allocate_nothing() {
    let client = Client::from_export_text(DOC).expect("valid document");
    let countries = ["NL", "DE", "FR", "US"];
    let keys: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    let contexts: Vec<Context<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| Context::new(key.as_str()).with("country", countries[i % 4]))
        .collect();
    let round = |ctx: &Context<'_>| {
        let mut sum = 0.0;
        sum += f64::from(u8::from(client.bool_value("checkout", ctx, false)));
        sum += client.with_string("banner", ctx, "", |s| s.len() as f64);
        sum += client.number_value("limit", ctx, 0.0);
        sum += client.with_bool_detail("checkout", ctx, false, |d| f64::from(u8::from(d.value)));
        // The caller's default, counted by key.
        sum += f64::from(u8::from(client.bool_value("no-such-flag", ctx, true)));
        sum
    };
    // Every variant once first: a thread's first count of a variant may grow its table.
    let mut checksum = 0.0;
    for ctx in &contexts {
        checksum += round(ctx);
    }

    let before = allocations();
    for i in 0..10_000 {
        checksum += round(&contexts[i % contexts.len()]);
    }
    let allocated = allocations() - before;
    assert!(checksum > 0.0);
    assert_eq!(
        allocated, 0,
        "10,000 rounds of evaluations allocated {allocated} times"
    );

    // The counter sees allocations: `string_value` returns an owned string.
    let before = allocations();
    let banner = client.string_value("banner", &contexts[0], "");
    assert!(allocations() > before && !banner.is_empty());
}
