//! Changes to a segment's key lists without repeating the lists.
//!
//! A segment may hold 100,000 keys; adding one should not send, store or audit all of them.
//! [`KeyPatch`] says which keys to remove and which to append, and is exact: a patch made by
//! [`KeyPatch::between`] turns the old lists into the new ones, order included, or is not made.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::model::Segment;

/// Keys to remove from and append to a segment's `included` and `excluded` lists.
///
/// Applied as removals, then additions: removing a key that is not listed and adding one that
/// already is change nothing; added keys are appended in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyPatch {
    /// The segment's key.
    pub segment: String,
    /// Keys to append to `included`.
    pub add_included: Vec<String>,
    /// Keys to remove from `included`.
    pub remove_included: Vec<String>,
    /// Keys to append to `excluded`.
    pub add_excluded: Vec<String>,
    /// Keys to remove from `excluded`.
    pub remove_excluded: Vec<String>,
}

impl KeyPatch {
    /// Whether the patch changes nothing whatever it is applied to.
    pub fn is_empty(&self) -> bool {
        self.add_included.is_empty()
            && self.remove_included.is_empty()
            && self.add_excluded.is_empty()
            && self.remove_excluded.is_empty()
    }

    /// How many keys the patch names.
    pub fn len(&self) -> usize {
        self.add_included.len()
            + self.remove_included.len()
            + self.add_excluded.len()
            + self.remove_excluded.len()
    }

    /// `segment` with the patch applied to its lists; everything else, `version` included,
    /// is kept.
    pub fn apply(&self, segment: &Segment) -> Segment {
        Segment {
            included: patch_list(&segment.included, &self.add_included, &self.remove_included),
            excluded: patch_list(&segment.excluded, &self.add_excluded, &self.remove_excluded),
            ..segment.clone()
        }
    }

    /// The patch that turns `before` into `after`, when one does exactly: both are the same
    /// segment apart from their key lists and `version`, and removals plus appended keys
    /// reproduce `after`'s lists in order. `None` otherwise (the whole segment must be sent).
    pub fn between(before: &Segment, after: &Segment) -> Option<KeyPatch> {
        if before.key != after.key
            || before.description != after.description
            || before.rules != after.rules
        {
            return None;
        }
        let (add_included, remove_included) = diff(&before.included, &after.included)?;
        let (add_excluded, remove_excluded) = diff(&before.excluded, &after.excluded)?;
        Some(KeyPatch {
            segment: after.key.clone(),
            add_included,
            remove_included,
            add_excluded,
            remove_excluded,
        })
    }
}

/// `list` without the keys in `remove`, then with the keys of `add` it does not hold yet.
fn patch_list(list: &[String], add: &[String], remove: &[String]) -> Vec<String> {
    let removed: HashSet<&str> = remove.iter().map(String::as_str).collect();
    let mut out: Vec<String> = list
        .iter()
        .filter(|k| !removed.contains(k.as_str()))
        .cloned()
        .collect();
    let mut present: HashSet<String> = if add.is_empty() {
        HashSet::new()
    } else {
        out.iter().cloned().collect()
    };
    for key in add {
        if present.insert(key.clone()) {
            out.push(key.clone());
        }
    }
    out
}

/// The keys to append and remove that turn `old` into `new` exactly, or `None` when `new`
/// keeps the surviving keys in another order (or lists a key twice).
fn diff(old: &[String], new: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let new_set: HashSet<&str> = new.iter().map(String::as_str).collect();
    let old_set: HashSet<&str> = old.iter().map(String::as_str).collect();
    if new_set.len() != new.len() {
        return None;
    }
    let removed: Vec<String> = old
        .iter()
        .filter(|k| !new_set.contains(k.as_str()))
        .cloned()
        .collect();
    // The kept keys must open `new`, in their old order; everything after them is added.
    let kept = old.iter().filter(|k| new_set.contains(k.as_str()));
    let mut position = 0;
    for key in kept {
        if new.get(position) != Some(key) {
            return None;
        }
        position += 1;
    }
    let added: Vec<String> = new[position..].to_vec();
    if added.iter().any(|k| old_set.contains(k.as_str())) {
        return None;
    }
    Some((added, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(included: &[&str], excluded: &[&str]) -> Segment {
        Segment {
            key: "beta".into(),
            description: None,
            included: included.iter().map(|k| k.to_string()).collect(),
            excluded: excluded.iter().map(|k| k.to_string()).collect(),
            rules: Vec::new(),
            version: Some(3),
        }
    }

    fn keys(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn applies_removals_then_appends_and_ignores_what_changes_nothing() {
        let patch = KeyPatch {
            segment: "beta".into(),
            add_included: keys(&["d", "a", "d"]),
            remove_included: keys(&["b", "zz"]),
            add_excluded: keys(&["x"]),
            remove_excluded: Vec::new(),
        };
        let patched = patch.apply(&segment(&["a", "b", "c"], &[]));
        assert_eq!(patched.included, keys(&["a", "c", "d"]));
        assert_eq!(patched.excluded, keys(&["x"]));
        assert_eq!(patched.version, Some(3));
        assert_eq!(patch.len(), 6);
    }

    #[test]
    fn between_is_exact_or_absent() {
        let before = segment(&["a", "b", "c"], &["x"]);
        let after = segment(&["a", "c", "d", "e"], &[]);
        let patch = KeyPatch::between(&before, &after).expect("a patch");
        assert_eq!(patch.add_included, keys(&["d", "e"]));
        assert_eq!(patch.remove_included, keys(&["b"]));
        assert_eq!(patch.remove_excluded, keys(&["x"]));
        assert_eq!(patch.apply(&before).included, after.included);

        // Reordered survivors, a re-added key, duplicates or other metadata: no patch.
        assert_eq!(
            KeyPatch::between(&before, &segment(&["c", "a"], &["x"])),
            None
        );
        assert_eq!(
            KeyPatch::between(&before, &segment(&["a", "b", "c", "a"], &["x"])),
            None
        );
        let described = Segment {
            description: Some("new".into()),
            ..before.clone()
        };
        assert_eq!(KeyPatch::between(&before, &described), None);
        let same = KeyPatch::between(&before, &before).expect("empty patch");
        assert!(same.is_empty());
    }
}
