//! What a client holding 10,000 flags costs in memory: `cargo bench -p flagstaff --bench memory`.
//!
//! A counting allocator reports the heap bytes still allocated after the client is built from
//! a 10,000-flag export document (the document's own text and parse tree freed), and the
//! process's resident memory at the end (which includes what the allocator keeps of the
//! freed document).
#![allow(unsafe_code)] // a GlobalAlloc implementation is unsafe by definition

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use flagstaff::{Client, Context};
use serde_json::{json, Value};

static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A realistic flag: a description, tags, two rules (one on a segment) and a split.
fn flag(i: usize) -> Value {
    json!({
        "key": format!("flag-{i:05}"), "description": format!("Flag number {i} of the benchmark"),
        "kind": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
        "enabled": true, "tags": ["team-a", "web"], "owner": "team-a", "version": 1,
        "rules": [
            {"id": "staff", "conditions": [{"op": "in_segment", "values": ["staff"]}],
             "serve": {"variant": "on"}},
            {"id": "eu", "conditions": [{"attribute": "country", "op": "in", "values": ["NL", "DE", "FR"]},
                                        {"attribute": "app_version", "op": "semver_gt", "values": ["2.0.0"]}],
             "serve": {"split": {"weights": [{"variant": "on", "weight": 25000}, {"variant": "off", "weight": 75000}]}}}
        ],
        "default": {"variant": "off"},
    })
}

fn main() {
    let text = json!({
        "environment": "bench",
        "segments": [{"key": "staff", "included": (0..100).map(|i| format!("staff-{i}")).collect::<Vec<_>>()}],
        "flags": (0..10_000).map(flag).collect::<Vec<_>>(),
    })
    .to_string();
    let heap_before = LIVE.load(Ordering::Relaxed);
    let client = Client::from_export_text(&text).expect("valid");
    drop(text);
    let heap = LIVE.load(Ordering::Relaxed) - heap_before;
    let rss = rss_kib();
    assert!(client.bool_value("flag-00042", &Context::new("staff-1"), false));
    println!(
        "client with 10,000 flags: {:.1} MiB live heap ({} bytes per flag); process resident memory {:.1} MiB",
        heap as f64 / (1024.0 * 1024.0),
        heap / 10_000,
        rss as f64 / 1024.0
    );
}
