//! Flags in words, as every interface shows them to people (the CLI's `flag get` and the web
//! console's flag page): who gets what, step by step; what a change did to a flag; and the one
//! variant a flag serves everyone, if it does.

use std::collections::BTreeSet;
use std::fmt;

use crate::model::{Flag, Serve};
use crate::split::serve_summary;
use crate::words::describe_conditions;

/// One step of a flag's targeting in words, in the order evaluation takes them (DESIGN.md
/// section 2): its prerequisites, its rules, then its default. Shown as text, a step reads
/// `unless payments serves on, serve off`, `if country is one of "DE", "FR", serve on (rule
/// eu)`, `otherwise serve on 25% / off 75%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'a> {
    /// Unless flag `flag` serves one of `variants`, the flag serves `serves` (its off
    /// variant).
    Prerequisite {
        /// The prerequisite flag's key.
        flag: &'a str,
        /// The variants it must serve, joined by `or`.
        variants: String,
        /// What is served otherwise: the off variant.
        serves: &'a str,
    },
    /// The rule `id`: if its `conditions` hold, it serves `serves`.
    Rule {
        /// The rule's id.
        id: &'a str,
        /// Its conditions in words joined by `and`; empty when it matches every context.
        conditions: String,
        /// What it serves ([`serve_summary`]).
        serves: String,
    },
    /// What is served when no rule matches; `alone` when there is no rule and no
    /// prerequisite, so everyone gets it.
    Default {
        /// The default serve ([`serve_summary`]).
        serves: String,
        /// Whether it is the only step.
        alone: bool,
    },
}

impl fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Prerequisite {
                flag,
                variants,
                serves,
            } => write!(f, "unless {flag} serves {variants}, serve {serves}"),
            Step::Rule {
                id,
                conditions,
                serves,
            } if conditions.is_empty() => {
                write!(f, "for every context, serve {serves} (rule {id})")
            }
            Step::Rule {
                id,
                conditions,
                serves,
            } => write!(f, "if {conditions}, serve {serves} (rule {id})"),
            Step::Default {
                serves,
                alone: true,
            } => write!(f, "everyone gets {serves}"),
            Step::Default { serves, .. } => write!(f, "otherwise serve {serves}"),
        }
    }
}

/// Who gets what from `flag` when it is on, step by step. (When it is off, everyone gets its
/// off variant.)
pub fn targeting_steps(flag: &Flag) -> Vec<Step<'_>> {
    let mut steps: Vec<Step<'_>> = flag
        .prerequisites
        .iter()
        .map(|p| Step::Prerequisite {
            flag: &p.flag,
            variants: p.variants.join(" or "),
            serves: &flag.off_variant,
        })
        .collect();
    steps.extend(flag.rules.iter().map(|rule| Step::Rule {
        id: &rule.id,
        conditions: if rule.conditions.is_empty() {
            String::new()
        } else {
            describe_conditions(&rule.conditions)
        },
        serves: serve_summary(&rule.serve),
    }));
    steps.push(Step::Default {
        serves: serve_summary(&flag.default),
        alone: steps.is_empty(),
    });
    steps
}

/// What changed from `before` to `after`, for people: `turned on`, `default serve on 25% /
/// off 75%`, `changed rules, tags`. Empty when nothing a person would notice changed.
pub fn flag_change_details(before: &Flag, after: &Flag) -> Vec<String> {
    let mut details = Vec::new();
    if before.enabled != after.enabled {
        details.push(
            if after.enabled {
                "turned on"
            } else {
                "turned off"
            }
            .to_owned(),
        );
    }
    if before.default != after.default {
        details.push(format!("default serve {}", serve_summary(&after.default)));
    }
    let fields: Vec<&str> = [
        ("kind", before.kind != after.kind),
        ("variants", before.variants != after.variants),
        ("off variant", before.off_variant != after.off_variant),
        ("salt", before.salt != after.salt),
        ("prerequisites", before.prerequisites != after.prerequisites),
        ("rules", before.rules != after.rules),
        ("description", before.description != after.description),
        ("tags", before.tags != after.tags),
        ("owner", before.owner != after.owner),
        ("temporary", before.temporary != after.temporary),
        ("client side", before.client_side != after.client_side),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect();
    if !fields.is_empty() {
        details.push(format!("changed {}", fields.join(", ")));
    }
    details
}

/// The variant `flag` serves every context, whatever the context, if there is one: it is off,
/// or every serve it can reach names the same variant (a split counts each variant with
/// weight, and the off variant for contexts without the bucketing attribute; prerequisites
/// may serve the off variant).
pub fn single_variant(flag: &Flag) -> Option<&str> {
    if !flag.enabled {
        return Some(&flag.off_variant);
    }
    let mut served: BTreeSet<&str> = BTreeSet::new();
    if !flag.prerequisites.is_empty() {
        served.insert(&flag.off_variant);
    }
    for serve in flag
        .rules
        .iter()
        .map(|r| &r.serve)
        .chain(std::iter::once(&flag.default))
    {
        match serve {
            Serve::Variant(v) => {
                served.insert(v);
            }
            Serve::Split(split) => {
                served.insert(&flag.off_variant);
                served.extend(
                    split
                        .weights
                        .iter()
                        .filter(|w| w.weight > 0)
                        .map(|w| w.variant.as_str()),
                );
            }
        }
    }
    match served.len() {
        1 => served.into_iter().next(),
        _ => None,
    }
}

/// A day in milliseconds.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Why a flag is ready to be removed from code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// A temporary flag that has served `variant` to every context since its last change.
    OneVariant {
        /// The variant everyone gets.
        variant: String,
        /// Its last change, in Unix milliseconds.
        since_ms: i64,
    },
    /// No SDK has reported evaluating the flag since `since_ms` (its last evaluation, or, if
    /// none was ever reported, its creation).
    NotEvaluated {
        /// Since when, in Unix milliseconds.
        since_ms: i64,
        /// Whether it was ever evaluated.
        ever: bool,
    },
}

/// Why `flag` is stale at `now_ms` after `days` days, if it is: a temporary flag serving one
/// variant to everyone since its last change (`changed_ms`) that long ago, or any flag no SDK
/// has evaluated (last at `evaluated_ms`, 0 for never) for that long; a flag never evaluated
/// counts from its creation (`created_ms`). All times are Unix milliseconds.
pub fn staleness(
    flag: &Flag,
    changed_ms: i64,
    evaluated_ms: i64,
    created_ms: i64,
    days: u64,
    now_ms: i64,
) -> Option<Staleness> {
    let span = i64::try_from(days).map_or(i64::MAX, |d| d.saturating_mul(DAY_MS));
    let cutoff = now_ms.saturating_sub(span);
    if flag.temporary && changed_ms <= cutoff {
        if let Some(variant) = single_variant(flag) {
            return Some(Staleness::OneVariant {
                variant: variant.to_owned(),
                since_ms: changed_ms,
            });
        }
    }
    let ever = evaluated_ms != 0;
    let since_ms = if ever { evaluated_ms } else { created_ms };
    (since_ms <= cutoff).then_some(Staleness::NotEvaluated { since_ms, ever })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(yaml: &str) -> Flag {
        let text = format!(
            "key: f\nkind: boolean\nvariants: {{on: true, off: false}}\noff_variant: off\n{yaml}"
        );
        let value = crate::parse_value(&text).expect("YAML");
        crate::flag_from_value(&value).expect("a flag")
    }

    #[test]
    fn targeting_reads_step_by_step_as_evaluation_takes_it() {
        let f = flag(
            "enabled: true\nprerequisites: [{flag: payments, variants: [on, off]}]\nrules: [{id: eu, conditions: [{attribute: country, op: in, values: [DE, FR]}, {attribute: plan, op: in, values: [free], negate: true}], serve: {variant: on}}, {id: all, conditions: [], serve: {variant: off}}]\ndefault: {split: {bucket_by: team, weights: [{variant: on, weight: 25000}, {variant: off, weight: 75000}]}}",
        );
        let words: Vec<String> = targeting_steps(&f).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            words,
            [
                "unless payments serves on or off, serve off",
                "if country is one of \"DE\", \"FR\" and plan is present and is not \"free\", serve on (rule eu)",
                "for every context, serve off (rule all)",
                "otherwise serve on 25% / off 75% by team",
            ]
        );
        let plain = flag("enabled: true\ndefault: {variant: on}");
        assert_eq!(targeting_steps(&plain)[0].to_string(), "everyone gets on");
    }

    #[test]
    fn a_change_is_told_by_what_people_notice() {
        let before = flag("enabled: false\ndefault: {variant: off}");
        let after = flag(
            "enabled: true\ntags: [checkout]\ndefault: {split: {bucket_by: key, weights: [{variant: on, weight: 25000}, {variant: off, weight: 75000}]}}",
        );
        assert_eq!(
            flag_change_details(&before, &after),
            vec![
                "turned on".to_owned(),
                "default serve on 25% / off 75%".to_owned(),
                "changed tags".to_owned(),
            ]
        );
        assert!(flag_change_details(&after, &after).is_empty());
    }

    #[test]
    fn one_variant_means_every_reachable_serve_names_it() {
        let off = flag("enabled: false\ndefault: {variant: on}");
        assert_eq!(single_variant(&off), Some("off"));
        let fixed = flag("enabled: true\ndefault: {variant: on}");
        assert_eq!(single_variant(&fixed), Some("on"));
        let rule_differs = flag(
            "enabled: true\nrules: [{id: nl, conditions: [{attribute: country, op: in, values: [NL]}], serve: {variant: off}}]\ndefault: {variant: on}",
        );
        assert_eq!(single_variant(&rule_differs), None);
        let rule_same = flag(
            "enabled: true\nrules: [{id: nl, conditions: [{attribute: country, op: in, values: [NL]}], serve: {variant: on}}]\ndefault: {variant: on}",
        );
        assert_eq!(single_variant(&rule_same), Some("on"));
        // Contexts without the bucketing attribute get the off variant.
        let full_split = flag(
            "enabled: true\ndefault: {split: {bucket_by: key, weights: [{variant: on, weight: 100000}, {variant: off, weight: 0}]}}",
        );
        assert_eq!(single_variant(&full_split), None);
        let off_split = flag(
            "enabled: true\ndefault: {split: {bucket_by: key, weights: [{variant: off, weight: 100000}, {variant: on, weight: 0}]}}",
        );
        assert_eq!(single_variant(&off_split), Some("off"));
        let prerequisite = flag(
            "enabled: true\nprerequisites: [{flag: g, variants: [on]}]\ndefault: {variant: on}",
        );
        assert_eq!(single_variant(&prerequisite), None);
    }
}
