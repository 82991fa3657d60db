//! Properties of evaluation and bucketing (DESIGN.md section 3): sticky and monotonic splits,
//! a uniform bucket distribution, independent salts, and evaluation that never panics.

use std::path::Path;

use flagstaff_engine::{bucket, AttrValue, Context, Snapshot};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A snapshot holding one string flag `f` whose default is a split over `weights`.
fn split_snapshot(weights: &[(&str, u32)]) -> Snapshot {
    let weights: Vec<Value> = weights
        .iter()
        .map(|(v, w)| json!({"variant": v, "weight": w}))
        .collect();
    let doc = json!({
        "environment": "test",
        "flags": [{
            "key": "f", "kind": "string", "enabled": true, "off_variant": "a",
            "variants": {"a": "A", "b": "B", "c": "C"},
            "default": {"split": {"weights": weights}},
        }],
    });
    Snapshot::from_text(&doc.to_string()).expect("valid split flag")
}

fn variant_of(snapshot: &Snapshot, key: &str) -> String {
    let detail = snapshot.string_detail("f", &Context::new(key), "none");
    detail.variant.expect("a split serves a variant").to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Raising the first weight keeps every context that had the first variant.
    #[test]
    fn raising_the_first_weight_never_moves_a_context_out(
        low in 0u32..=100_000,
        raise in 0u32..=100_000,
        third in 0u32..=100_000,
        keys in proptest::collection::vec("[a-z0-9-]{1,24}", 64),
    ) {
        let high = (low + raise).min(100_000);
        let third = third.min(100_000 - high);
        let before = split_snapshot(&[("a", low), ("b", 100_000 - low - third), ("c", third)]);
        let after = split_snapshot(&[("a", high), ("b", 100_000 - high - third), ("c", third)]);
        for key in &keys {
            if variant_of(&before, key) == "a" {
                prop_assert_eq!(variant_of(&after, key), "a", "key {}", key);
            }
        }
    }

    /// Moving the boundary between the first two variants never moves a third variant's context,
    /// in either direction.
    #[test]
    fn moving_the_first_boundary_never_moves_another_variant(
        pair in 0u32..=100_000,
        first_before in 0u32..=100_000,
        first_after in 0u32..=100_000,
        keys in proptest::collection::vec("[a-z0-9-]{1,24}", 64),
    ) {
        let (a0, a1) = (first_before.min(pair), first_after.min(pair));
        let rest = 100_000 - pair;
        let before = split_snapshot(&[("a", a0), ("b", pair - a0), ("c", rest)]);
        let after = split_snapshot(&[("a", a1), ("b", pair - a1), ("c", rest)]);
        for key in &keys {
            let (v0, v1) = (variant_of(&before, key), variant_of(&after, key));
            prop_assert_eq!(v0 == "c", v1 == "c", "key {} moved from {} to {}", key, v0, v1);
        }
    }
}

/// Upper 0.1% point of the chi-square distribution with 99 degrees of freedom: a statistic
/// below it passes at p > 0.001.
const CHI2_99_P001: f64 = 148.230;
/// The same for 1 degree of freedom.
const CHI2_1_P001: f64 = 10.828;

/// Chi-square statistic of buckets grouped into 100 equal bins, against uniform.
fn uniformity_chi2(buckets: impl Iterator<Item = u32>) -> f64 {
    let mut bins = [0u64; 100];
    let mut n = 0u64;
    for b in buckets {
        bins[(b / 1000) as usize] += 1;
        n += 1;
    }
    let expected = n as f64 / 100.0;
    bins.iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum()
}

/// Deterministic version-4 UUID strings (splitmix64), so the test is reproducible.
fn uuids(count: usize) -> impl Iterator<Item = String> {
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..count).map(move |_| {
        let (hi, lo) = (next(), next());
        let hi = (hi & !0xf000) | 0x4000;
        let lo = (lo & !(0xc << 60)) | (0x8 << 60);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    })
}

#[test]
fn buckets_of_sequential_keys_are_uniform() {
    for salt in ["checkout-v2", "a", "new-search-ranking"] {
        let chi2 = uniformity_chi2((1..=100_000).map(|i| bucket(salt, &format!("user-{i}"))));
        assert!(
            chi2 < CHI2_99_P001,
            "salt {salt}: chi-square {chi2:.1} ≥ {CHI2_99_P001}"
        );
    }
}

#[test]
fn buckets_of_uuids_are_uniform() {
    let chi2 = uniformity_chi2(uuids(100_000).map(|k| bucket("checkout-v2", &k)));
    assert!(chi2 < CHI2_99_P001, "chi-square {chi2:.1} ≥ {CHI2_99_P001}");
}

#[test]
fn different_salts_assign_independently() {
    // 2×2 table: in the first 30% under salt A × in the first 20% under salt B.
    let mut table = [[0f64; 2]; 2];
    let n = 100_000;
    for key in uuids(n) {
        let a = usize::from(bucket("salt-a", &key) < 30_000);
        let b = usize::from(bucket("salt-b", &key) < 20_000);
        table[a][b] += 1.0;
    }
    let total = n as f64;
    let row = [table[0][0] + table[0][1], table[1][0] + table[1][1]];
    let col = [table[0][0] + table[1][0], table[0][1] + table[1][1]];
    let mut chi2 = 0.0;
    for (i, r) in row.iter().enumerate() {
        for (j, c) in col.iter().enumerate() {
            let expected = r * c / total;
            chi2 += (table[i][j] - expected).powi(2) / expected;
        }
    }
    assert!(
        chi2 < CHI2_1_P001,
        "chi-square {chi2:.2} ≥ {CHI2_1_P001}: salts are dependent"
    );
    // Equal salts, by contrast, assign identically (coordinated rollouts).
    for key in uuids(1000) {
        assert_eq!(bucket("same", &key), bucket("same", &key));
    }
}

/// Every flag of the conformance files: valid flags of every shape, with segments.
fn conformance_snapshots() -> Vec<(Snapshot, Vec<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance");
    let mut out = Vec::new();
    for name in [
        "random-0.json",
        "random-1.json",
        "operators.json",
        "edge-cases.json",
        "rules.json",
    ] {
        let file: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(name)).expect("file"))
                .expect("json");
        let doc = json!({"environment": "p", "flags": file["flags"], "segments": file.get("segments").cloned().unwrap_or(json!([]))});
        let keys = file["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .map(|f| f["key"].as_str().expect("key").to_owned())
            .collect();
        out.push((
            Snapshot::from_text(&doc.to_string()).expect("valid conformance flags"),
            keys,
        ));
    }
    out
}

fn attr_value() -> impl Strategy<Value = AttrValue> {
    let scalar = prop_oneof![
        ".{0,12}".prop_map(AttrValue::String),
        "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(-beta\\.[0-9])?".prop_map(AttrValue::String),
        "20[0-9]{2}-0[1-9]-1[0-9]T0[0-9]:00:00Z".prop_map(AttrValue::String),
        any::<f64>().prop_map(AttrValue::Number),
        (-1e13f64..1e13).prop_map(AttrValue::Number),
        any::<bool>().prop_map(AttrValue::Bool),
    ];
    prop_oneof![
        4 => scalar.clone(),
        1 => proptest::collection::vec(scalar, 0..4).prop_map(AttrValue::List),
    ]
}

const NAMES: &[&str] = &[
    "country",
    "plan",
    "age",
    "email",
    "tier",
    "score",
    "app_version",
    "signup",
    "beta",
    "ua",
    "path",
    "v",
    "t",
    "n",
    "p",
    "tags",
    "team",
    "key",
    "a",
    "b",
    "c",
    "d",
    "x",
    "y",
    "z",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn evaluation_never_panics(
        key in ".{0,16}",
        attrs in proptest::collection::vec((proptest::sample::select(NAMES), attr_value()), 0..8),
    ) {
        let snapshots = conformance_snapshots_cached();
        let mut ctx = Context::new(key);
        for (name, value) in attrs {
            ctx.set(name, value);
        }
        for (snapshot, keys) in snapshots {
            for flag in keys {
                let _ = snapshot.bool_detail(flag, &ctx, false);
                let _ = snapshot.string_detail(flag, &ctx, "");
                let _ = snapshot.number_detail(flag, &ctx, 0.0);
                let _ = snapshot.json_detail(flag, &ctx, &Value::Null);
                let detail = snapshot.evaluate(flag, &ctx);
                prop_assert!(detail.variant.is_some());
            }
        }
    }
}

fn conformance_snapshots_cached() -> &'static [(Snapshot, Vec<String>)] {
    static CELL: std::sync::OnceLock<Vec<(Snapshot, Vec<String>)>> = std::sync::OnceLock::new();
    CELL.get_or_init(conformance_snapshots)
}
