//! Percentages and split arithmetic, shared by the server's rollout plans and the CLI.
//!
//! A split's weights are in 1/1000 of a percent and sum to [`BUCKETS`] (100%). A rollout moves
//! one boundary only: the one between the variant rolled out (listed first) and its baseline
//! (listed second), so raising the target's share only adds contexts to it and no other
//! variant's contexts move. Replacing a split by one that buckets by another attribute or
//! lists its variants in another order moves contexts that no weight change explains:
//! [`reshuffle`] says why.

use std::fmt;

use crate::bucket::BUCKETS;
use crate::model::{Serve, Split};

/// A text that is not a percentage from 0 to 100 in steps of 0.001.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPercent(String);

impl fmt::Display for InvalidPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a percentage from 0 to 100 in steps of 0.001 (e.g. 12.5 or 12.5%)",
            self.0
        )
    }
}

impl std::error::Error for InvalidPercent {}

/// `12.5`, `12.5%` → 12500 (1/1000 of a percent); 0 to 100 in steps of 0.001.
pub fn parse_percent(text: &str) -> Result<u32, InvalidPercent> {
    let invalid = || InvalidPercent(text.to_owned());
    let number = text.trim().trim_end_matches('%').trim();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty()
        || fraction.len() > 3
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let whole: u32 = whole.parse().map_err(|_| invalid())?;
    let fraction: u32 = format!("{fraction:0<3}").parse().map_err(|_| invalid())?;
    let weight = whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(invalid)?;
    if weight > BUCKETS {
        return Err(invalid());
    }
    Ok(weight)
}

/// 12500 → `12.5%`.
pub fn format_percent(weight: u32) -> String {
    let text = format!("{}.{:03}", weight / 1000, weight % 1000);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// What `serve` serves, in a few words, as every interface writes it: `on`, or
/// `on 12.5% / off 87.5%`, or with another bucketing attribute `... by team`.
pub fn serve_summary(serve: &crate::Serve) -> String {
    match serve {
        crate::Serve::Variant(v) => v.clone(),
        crate::Serve::Split(split) => {
            let shares: Vec<String> = split
                .weights
                .iter()
                .map(|w| format!("{} {}", w.variant, format_percent(w.weight)))
                .collect();
            let by = if split.bucket_by == "key" {
                String::new()
            } else {
                format!(" by {}", split.bucket_by)
            };
            format!("{}{by}", shares.join(" / "))
        }
    }
}

/// The share the first two variants of `split` have together: what a rollout from the
/// second to the first can hand out without moving the others' contexts.
pub fn pair_weight(split: &Split) -> u32 {
    split.weights.iter().take(2).map(|w| w.weight).sum()
}

/// `split` with the boundary between its first variant (the target) and its second (the
/// baseline) moved so that the target has `percent`; every other variant keeps its weight.
/// A split left serving one variant becomes that variant. `None` when `percent` is more than
/// the two share ([`pair_weight`]) or the split has fewer than two variants.
pub fn move_boundary(split: &Split, percent: u32) -> Option<Serve> {
    let pair = pair_weight(split);
    if split.weights.len() < 2 || percent > pair {
        return None;
    }
    if percent == BUCKETS {
        return Some(Serve::Variant(split.weights[0].variant.clone()));
    }
    if percent == 0 && pair == BUCKETS {
        return Some(Serve::Variant(split.weights[1].variant.clone()));
    }
    let mut split = split.clone();
    split.weights[0].weight = percent;
    split.weights[1].weight = pair - percent;
    Some(Serve::Split(split))
}

/// Why replacing the split `old` by `new` would move contexts that neither variant's weight
/// change explains, if it would: a different bucketing attribute, or the variants both
/// splits list in another order (buckets are handed out in the order of the weights).
pub fn reshuffle(old: &Split, new: &Split) -> Option<String> {
    if old.bucket_by != new.bucket_by {
        return Some(format!(
            "it buckets by {:?} instead of {:?}",
            new.bucket_by, old.bucket_by
        ));
    }
    let order = |split: &Split, other: &Split| -> Vec<String> {
        split
            .weights
            .iter()
            .filter(|w| other.weights.iter().any(|o| o.variant == w.variant))
            .map(|w| w.variant.clone())
            .collect()
    };
    let (before, after) = (order(old, new), order(new, old));
    (before != after).then(|| {
        format!(
            "it orders the variants {} instead of {}",
            after.join(", "),
            before.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Weight;

    fn split(weights: &[(&str, u32)]) -> Split {
        Split {
            bucket_by: "key".to_owned(),
            weights: weights
                .iter()
                .map(|(variant, weight)| Weight {
                    variant: (*variant).to_owned(),
                    weight: *weight,
                })
                .collect(),
        }
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("100").unwrap(), 100_000);
        assert_eq!(parse_percent("12.5%").unwrap(), 12_500);
        assert_eq!(parse_percent(" 0.001 % ").unwrap(), 1);
        assert_eq!(parse_percent("0").unwrap(), 0);
        for bad in [
            "",
            "%",
            "-1",
            "100.001",
            "12.0001",
            "abc",
            "1e2",
            ".5",
            "4294967.296",
        ] {
            let err = parse_percent(bad).unwrap_err().to_string();
            assert!(err.contains("is not a percentage"), "{bad:?}: {err}");
        }
        assert_eq!(format_percent(100_000), "100%");
        assert_eq!(format_percent(12_500), "12.5%");
        assert_eq!(format_percent(1), "0.001%");
        assert_eq!(format_percent(0), "0%");
    }

    #[test]
    fn the_boundary_moves_between_the_first_two_variants_only() {
        let three = split(&[("on", 10_000), ("off", 40_000), ("other", 50_000)]);
        assert_eq!(pair_weight(&three), 50_000);
        assert_eq!(
            move_boundary(&three, 25_000),
            Some(Serve::Split(split(&[
                ("on", 25_000),
                ("off", 25_000),
                ("other", 50_000)
            ])))
        );
        assert_eq!(move_boundary(&three, 50_001), None);
        assert_eq!(
            move_boundary(&three, 0),
            Some(Serve::Split(split(&[
                ("on", 0),
                ("off", 50_000),
                ("other", 50_000)
            ])))
        );

        let two = split(&[("on", 10_000), ("off", 90_000)]);
        assert_eq!(
            move_boundary(&two, 100_000),
            Some(Serve::Variant("on".to_owned()))
        );
        assert_eq!(
            move_boundary(&two, 0),
            Some(Serve::Variant("off".to_owned()))
        );
        assert_eq!(move_boundary(&split(&[("on", 100_000)]), 0), None);
    }

    #[test]
    fn reshuffles_are_named() {
        let old = split(&[("a", 50_000), ("b", 50_000)]);
        assert_eq!(reshuffle(&old, &split(&[("a", 1), ("b", 99_999)])), None);
        assert_eq!(
            reshuffle(&old, &split(&[("b", 50_000), ("a", 50_000)])).as_deref(),
            Some("it orders the variants b, a instead of a, b")
        );
        let mut by_team = old.clone();
        by_team.bucket_by = "team".to_owned();
        assert_eq!(
            reshuffle(&old, &by_team).as_deref(),
            Some("it buckets by \"team\" instead of \"key\"")
        );
    }
}
