//! Checks across documents: the prerequisites and segments a flag names exist, and the
//! prerequisite graph has no cycle and no chain over [`MAX_PREREQUISITE_LINKS`]. They look up
//! other documents through a [`Resolve`], so a change can be checked against an existing
//! snapshot without rebuilding it.

use rustc_hash::FxHashMap;

use super::document::{is_valid_key, list_variants, Known};
use crate::limits::quote;
use crate::model::{Flag, Op};
use crate::problem::{keyed, Problems};

/// Longest allowed prerequisite chain, in links (prerequisite edges).
pub const MAX_PREREQUISITE_LINKS: usize = 8;

/// Looks up the documents a change is checked against: the resulting state of the environment.
pub(crate) trait Resolve {
    /// The flag `key` as it will be after the change.
    fn flag(&self, key: &str) -> Option<&Flag>;
    /// Whether the segment `key` will exist after the change.
    fn has_segment(&self, key: &str) -> bool;
    /// Whether `key` is a flag of the same document that did not decode: it exists, but its
    /// contents are unknown.
    fn is_undecoded_flag(&self, key: &str) -> bool;
}

/// Checks that the segments and prerequisite flags (and their variants) `flag` names exist.
pub(crate) fn check_references(
    flag: &Flag,
    path: &str,
    env: &impl Resolve,
    problems: &mut Problems,
) {
    for (i, prerequisite) in flag.prerequisites.iter().enumerate() {
        let ppath = format!("{path}.prerequisites[{i}]");
        match env.flag(&prerequisite.flag) {
            None if env.is_undecoded_flag(&prerequisite.flag) => {}
            None => problems.push(
                format!("{ppath}.flag"),
                format!("unknown flag {}", quote(&prerequisite.flag)),
            ),
            Some(required) => {
                let known: Known<'_> = required.variants.keys().collect();
                for (j, v) in prerequisite.variants.iter().enumerate() {
                    if !known.contains(v.as_str()) {
                        problems.push(
                            format!("{ppath}.variants[{j}]"),
                            format!(
                                "flag {:?} has no variant {}; its variants are {}",
                                prerequisite.flag,
                                quote(v),
                                list_variants(required)
                            ),
                        );
                    }
                }
            }
        }
    }
    for (i, rule) in flag.rules.iter().enumerate() {
        for (j, condition) in rule.conditions.iter().enumerate() {
            if condition.op != Op::InSegment {
                continue;
            }
            for (k, value) in condition.values.iter().enumerate() {
                if let Some(segment) = value.as_str() {
                    if is_valid_key(segment) && !env.has_segment(segment) {
                        problems.push(
                            format!("{path}.rules[{i}].conditions[{j}].values[{k}]"),
                            format!("unknown segment {}", quote(segment)),
                        );
                    }
                }
            }
        }
    }
}

/// A walk of the prerequisite graph from some flags: their order for compilation (prerequisites
/// first), with cycles and over-long chains reported.
pub(crate) struct PrerequisiteGraph<'a> {
    /// Every flag reached, prerequisites before the flags that need them.
    pub(crate) order: Vec<&'a str>,
}

impl<'a> PrerequisiteGraph<'a> {
    /// Walks from `roots` (iteratively, so a long chain in a hostile document cannot overflow the
    /// stack), reporting cycles and chains over [`MAX_PREREQUISITE_LINKS`] at the roots.
    pub(crate) fn walk(
        roots: impl IntoIterator<Item = &'a str>,
        env: &'a impl Resolve,
        problems: &mut Problems,
    ) -> PrerequisiteGraph<'a> {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            Open,
            Done,
        }
        let mut state: FxHashMap<&'a str, State> = FxHashMap::default();
        let mut depth: FxHashMap<&'a str, usize> = FxHashMap::default();
        let mut order = Vec::new();
        let mut roots_seen = Vec::new();
        for root in roots {
            roots_seen.push(root);
            if state.contains_key(root) {
                continue;
            }
            // (flag, index of the next prerequisite to visit)
            let mut stack: Vec<(&'a str, usize)> = vec![(root, 0)];
            state.insert(root, State::Open);
            while let Some(&mut (key, ref mut next)) = stack.last_mut() {
                let prerequisites = env
                    .flag(key)
                    .map(|f| f.prerequisites.as_slice())
                    .unwrap_or(&[]);
                if let Some(p) = prerequisites.get(*next) {
                    *next += 1;
                    let child = p.flag.as_str();
                    match state.get(child) {
                        None if env.flag(child).is_some() => {
                            state.insert(child, State::Open);
                            stack.push((child, 0));
                        }
                        Some(State::Open) => {
                            let start = stack.iter().position(|(k, _)| *k == child).unwrap_or(0);
                            let mut cycle: Vec<&str> =
                                stack[start..].iter().map(|(k, _)| *k).collect();
                            cycle.push(child);
                            problems.push(
                                format!("{}.prerequisites", keyed("flags", child)),
                                format!("prerequisite cycle {}", cycle.join(" -> ")),
                            );
                        }
                        _ => {}
                    }
                    continue;
                }
                let below = prerequisites
                    .iter()
                    .filter_map(|p| depth.get(p.flag.as_str()).map(|d| d + 1))
                    .max()
                    .unwrap_or(0);
                depth.insert(key, below);
                state.insert(key, State::Done);
                order.push(key);
                stack.pop();
            }
        }
        for root in roots_seen {
            let links = depth.get(root).copied().unwrap_or(0);
            if links > MAX_PREREQUISITE_LINKS {
                problems.push(
                    format!("{}.prerequisites", keyed("flags", root)),
                    format!(
                        "prerequisite chain {} has {links} links, at most {MAX_PREREQUISITE_LINKS} allowed",
                        longest_chain(root, &depth, env).join(" -> ")
                    ),
                );
            }
        }
        PrerequisiteGraph { order }
    }
}

fn longest_chain<'a>(
    root: &'a str,
    depth: &FxHashMap<&'a str, usize>,
    env: &'a impl Resolve,
) -> Vec<&'a str> {
    let mut chain = vec![root];
    let mut key = root;
    while let Some(next) = env.flag(key).and_then(|f| {
        f.prerequisites
            .iter()
            .map(|p| p.flag.as_str())
            .max_by_key(|k| depth.get(k).map_or(-1, |d| *d as i64))
    }) {
        if chain.contains(&next) {
            break;
        }
        chain.push(next);
        key = next;
    }
    chain
}
