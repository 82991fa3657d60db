//! Compiled flags: a flag document with its variants typed, its variant references resolved to
//! indices, its conditions compiled and its prerequisites and segments linked, ready to
//! evaluate. Compiled conditions and segments are in [`crate::condition`].

use std::sync::Arc;

use crate::bucket::SaltedHasher;
use crate::condition::{CompiledCondition, CompiledSegment};
use crate::context::{Context, Selector};
use crate::model::{Flag, Kind, Serve};
use crate::resolution::{Resolution, Why, NO_BUCKET};
use crate::table::{Keyed, Table};

/// A variant value, typed by the flag's kind.
#[derive(Debug)]
pub(crate) enum VariantValue {
    Bool(bool),
    String(Box<str>),
    Number(f64),
    Json(serde_json::Value),
}

#[derive(Debug)]
pub(crate) struct CompiledVariant {
    pub(crate) key: Box<str>,
    pub(crate) value: VariantValue,
}

/// A serve with variant references resolved to indices.
#[derive(Debug)]
pub(crate) enum CompiledServe {
    Variant(usize),
    Split {
        bucket_by: Selector,
        /// (exclusive upper bound of the bucket range, variant index), ascending.
        ranges: Box<[(u32, usize)]>,
    },
}

#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) id: Box<str>,
    pub(crate) conditions: Box<[CompiledCondition]>,
    pub(crate) serve: CompiledServe,
}

impl CompiledRule {
    /// Whether every condition holds. Most rules have one condition, tested inline; longer
    /// lists go out of line.
    #[inline(always)]
    pub(crate) fn matches(&self, ctx: &Context<'_>) -> bool {
        match &*self.conditions {
            [only] => only.matches(ctx),
            conditions => all_match(conditions, ctx),
        }
    }
}

#[inline(never)]
fn all_match(conditions: &[CompiledCondition], ctx: &Context<'_>) -> bool {
    conditions.iter().all(|c| c.matches(ctx))
}

#[derive(Debug)]
pub(crate) struct CompiledPrerequisite {
    pub(crate) flag: Arc<CompiledFlag>,
    /// Indexed by the prerequisite flag's variant index: whether that variant satisfies it.
    pub(crate) allowed: Box<[bool]>,
}

/// A flag ready to evaluate.
#[derive(Debug)]
pub(crate) struct CompiledFlag {
    /// The flag's key, which the snapshot's table finds it by.
    pub(crate) key: Arc<str>,
    pub(crate) doc: Arc<Flag>,
    pub(crate) kind: Kind,
    pub(crate) enabled: bool,
    pub(crate) version: Option<u64>,
    pub(crate) variants: Box<[CompiledVariant]>,
    pub(crate) off_variant: usize,
    pub(crate) hasher: SaltedHasher,
    pub(crate) prerequisites: Box<[CompiledPrerequisite]>,
    pub(crate) rules: Box<[CompiledRule]>,
    pub(crate) default: CompiledServe,
    /// See [`CompiledFlag::fixed_resolution`].
    pub(crate) fixed: Option<Resolution>,
}

impl Keyed for CompiledFlag {
    #[inline(always)]
    fn key(&self) -> &str {
        &self.key
    }
}

impl CompiledFlag {
    /// The heap memory its rules' compiled regexes hold.
    pub(crate) fn regex_bytes(&self) -> usize {
        self.rules
            .iter()
            .flat_map(|rule| rule.conditions.iter())
            .map(CompiledCondition::regex_bytes)
            .sum()
    }

    /// Compiles a validated flag whose prerequisites and segments are in `flags` and `segments`.
    pub(crate) fn compile(
        key: Arc<str>,
        doc: Arc<Flag>,
        flags: &Table<CompiledFlag>,
        segments: &Table<CompiledSegment>,
    ) -> Self {
        let index = |variant: &str| {
            doc.variants
                .0
                .iter()
                .position(|(k, _)| k == variant)
                .unwrap_or(0)
        };
        let serve = |serve: &Serve| match serve {
            Serve::Variant(v) => CompiledServe::Variant(index(v)),
            Serve::Split(split) => {
                let mut upper = 0u32;
                CompiledServe::Split {
                    bucket_by: Selector::new(&split.bucket_by),
                    ranges: split
                        .weights
                        .iter()
                        .filter(|w| w.weight > 0)
                        .map(|w| {
                            upper += w.weight;
                            (upper, index(&w.variant))
                        })
                        .collect(),
                }
            }
        };
        let segment = |key: &str| segments.get(key).cloned();
        let variants = doc
            .variants
            .0
            .iter()
            .map(|(key, value)| CompiledVariant {
                key: key.as_str().into(),
                value: match doc.kind {
                    Kind::Boolean => VariantValue::Bool(value.as_bool().unwrap_or_default()),
                    Kind::String => VariantValue::String(value.as_str().unwrap_or_default().into()),
                    Kind::Number => VariantValue::Number(value.as_f64().unwrap_or_default()),
                    Kind::Json => VariantValue::Json(value.clone()),
                },
            })
            .collect();
        let prerequisites = doc
            .prerequisites
            .iter()
            .filter_map(|p| {
                let flag = flags.get(p.flag.as_str())?.clone();
                let allowed = flag
                    .doc
                    .variants
                    .keys()
                    .map(|k| p.variants.iter().any(|v| v == k))
                    .collect();
                Some(CompiledPrerequisite { flag, allowed })
            })
            .collect();
        let rules = doc
            .rules
            .iter()
            .map(|r| CompiledRule {
                id: r.id.as_str().into(),
                conditions: r
                    .conditions
                    .iter()
                    .map(|c| CompiledCondition::compile(c, &segment))
                    .collect(),
                serve: serve(&r.serve),
            })
            .collect();
        let mut flag = CompiledFlag {
            key,
            kind: doc.kind,
            enabled: doc.enabled,
            version: doc.version,
            variants,
            off_variant: index(&doc.off_variant),
            hasher: SaltedHasher::new(doc.effective_salt()),
            prerequisites,
            rules,
            default: serve(&doc.default),
            fixed: None,
            doc,
        };
        flag.fixed = flag.fixed_resolution();
        flag
    }

    /// What the flag serves every context, when that does not depend on the context: it is
    /// off, or has no prerequisites, no rules and a fixed default. Kill switches and fully
    /// rolled-out flags, the commonest flags, take this path.
    pub(crate) fn fixed_resolution(&self) -> Option<Resolution> {
        if !self.enabled {
            return Some(Resolution::new(self.off_variant, Why::Off, NO_BUCKET));
        }
        match (&*self.prerequisites, &*self.rules, &self.default) {
            ([], [], CompiledServe::Variant(v)) => {
                Some(Resolution::new(*v, Why::Default, NO_BUCKET))
            }
            _ => None,
        }
    }
}
