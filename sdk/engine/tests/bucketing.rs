//! The in-crate MurmurHash3 against the `murmur3` crate, and the bucketing value forms.

use std::io::Cursor;

use flagstaff_engine::__internal::{murmur3_x86_32, write_number, Murmur3, SaltedHasher};
use flagstaff_engine::{bucket, AttrRef, AttrValue};
use proptest::prelude::*;

fn reference(bytes: &[u8], seed: u32) -> u32 {
    murmur3::murmur3_32(&mut Cursor::new(bytes), seed).expect("reading from memory")
}

#[test]
fn matches_the_murmur3_crate_for_every_tail_length() {
    let data: Vec<u8> = (0u32..64).map(|i| (i * 37 + 11) as u8).collect();
    for len in 0..data.len() {
        for seed in [0, 1, 0x9747_b28c] {
            assert_eq!(
                murmur3_x86_32(&data[..len], seed),
                reference(&data[..len], seed),
                "len {len}"
            );
        }
    }
}

#[test]
fn incremental_writes_equal_one_write_at_every_split_point() {
    let data = b"checkout-v2.user-1234567890-abcdefghijklmnop";
    for split in 0..=data.len() {
        let mut h = Murmur3::new(0);
        h.write(&data[..split]);
        h.write(&data[split..]);
        assert_eq!(h.finish(), reference(data, 0), "split at {split}");
    }
}

#[test]
fn salted_hasher_equals_hashing_the_concatenation_for_every_length_pair() {
    let data = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ";
    for salt_len in 0..12 {
        for value_len in 1..28 {
            let (salt, value) = (&data[..salt_len], &data[salt_len..salt_len + value_len]);
            let expected = reference(format!("{salt}.{value}").as_bytes(), 0) % 100_000;
            assert_eq!(
                SaltedHasher::new(salt).bucket_str(value),
                expected,
                "salt {salt:?}, value {value:?}"
            );
        }
    }
}

proptest! {
    #[test]
    fn matches_the_murmur3_crate(bytes in proptest::collection::vec(any::<u8>(), 0..300), seed in any::<u32>()) {
        prop_assert_eq!(murmur3_x86_32(&bytes, seed), reference(&bytes, seed));
    }

    #[test]
    fn salted_hasher_equals_hashing_the_concatenation(salt in ".{0,40}", value in ".{1,40}") {
        let expected = reference(format!("{salt}.{value}").as_bytes(), 0) % 100_000;
        prop_assert_eq!(SaltedHasher::new(&salt).bucket_str(&value), expected);
        prop_assert_eq!(bucket(&salt, &value), expected);
    }
}

fn number_form(n: f64) -> String {
    let mut s = String::new();
    write_number(&mut s, n);
    s
}

#[test]
fn numbers_bucket_by_their_documented_string_form() {
    let cases: &[(f64, &str)] = &[
        (0.0, "0"),
        (-0.0, "0"),
        (42.0, "42"),
        (-3.0, "-3"),
        (1.5, "1.5"),
        (-2.25, "-2.25"),
        (1e-7, "0.0000001"),
        (123_456_789.125, "123456789.125"),
        (9_007_199_254_740_991.0, "9007199254740991"),
        (9_007_199_254_740_992.0, "9007199254740992"),
        (1e21, "1000000000000000000000"),
    ];
    for (n, form) in cases {
        assert_eq!(number_form(*n), *form, "{n:?}");
        let hasher = SaltedHasher::new("num");
        assert_eq!(
            hasher.bucket(AttrRef::Number(*n)),
            Some(bucket("num", form)),
            "{n:?}"
        );
    }
}

#[test]
fn unbucketable_values() {
    let hasher = SaltedHasher::new("s");
    assert_eq!(hasher.bucket(AttrRef::Str("")), None);
    assert_eq!(hasher.bucket(AttrRef::Bool(true)), None);
    assert_eq!(hasher.bucket(AttrRef::List(&[AttrValue::from("a")])), None);
}
