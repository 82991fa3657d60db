//! Equality for the short strings evaluation compares: flag keys, attribute names and `in`
//! operands.
//!
//! `==` on `str` calls `memcmp` through the C library, which for the 2–40 byte strings
//! compared here costs more than the comparison itself; profiles of evaluation showed a quarter
//! of the time there. This compares with a few overlapping word loads instead.

/// Whether `a` and `b` are the same string.
#[inline(always)]
pub(crate) fn eq(a: &str, b: &str) -> bool {
    eq_bytes(a.as_bytes(), b.as_bytes())
}

/// Whether `a` and `b` hold the same bytes.
#[inline(always)]
pub(crate) fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    let half = |s: &[u8], at: usize| -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_ne_bytes(w)
    };
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        // Longer strings are rare here; the library call is fine for them.
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::eq;

    #[test]
    fn equals_str_equality_for_every_length_and_difference_position() {
        for n in 0..40 {
            let a: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            assert!(eq(&a, &a.clone()), "{a}");
            for pos in 0..n {
                let mut b = a.clone().into_bytes();
                b[pos] = b'Z';
                let b = String::from_utf8(b).expect("ascii");
                assert!(!eq(&a, &b), "{a} vs {b}");
            }
            assert!(!eq(&a, &format!("{a}x")));
        }
    }
}
