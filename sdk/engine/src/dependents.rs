//! Reverse dependencies of a snapshot's flags: which flags use each segment, and which list each
//! flag as a prerequisite. Built with the snapshot and updated by each change for the flags it
//! changes, so that checking and compiling a change costs what the change touches instead of a
//! walk over every flag of the environment.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::model::Flag;

/// Flag keys, sorted so that walks over them (and the problems those walks find) come in a
/// fixed order; shared between snapshots until a change adds or removes one.
type Keys = Arc<Vec<Arc<str>>>;

/// The reverse edges of an environment. Most flags have no prerequisites and use no segment,
/// so the maps hold only the flags and segments something depends on.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Dependents {
    /// Flag key → the flags that list it as a prerequisite.
    requiring: FxHashMap<Arc<str>, Keys>,
    /// Segment key → the flags with an `in_segment` condition naming it.
    using: FxHashMap<Arc<str>, Keys>,
}

impl Dependents {
    /// The flags that list flag `key` as a prerequisite, sorted.
    pub(crate) fn requiring(&self, key: &str) -> &[Arc<str>] {
        self.requiring.get(key).map_or(&[], |keys| keys.as_slice())
    }

    /// The flags that use segment `key`, sorted.
    pub(crate) fn using(&self, key: &str) -> &[Arc<str>] {
        self.using.get(key).map_or(&[], |keys| keys.as_slice())
    }

    /// Records that flag `key` was `old` and is now `new` (`None`: it does not exist). Copies
    /// `this` (its maps of `Arc`s, not their lists) only when an edge actually changes, which
    /// most edits of a flag (turning it off, changing a rule's values) do not.
    pub(crate) fn replace(
        this: &mut Arc<Dependents>,
        key: &Arc<str>,
        old: Option<&Flag>,
        new: Option<&Flag>,
    ) {
        let (old_flags, old_segments) = edges(old);
        let (new_flags, new_segments) = edges(new);
        for (map, old, new) in [
            (Map::Requiring, old_flags, new_flags),
            (Map::Using, old_segments, new_segments),
        ] {
            for target in old.iter().filter(|t| !new.contains(t)) {
                remove(Arc::make_mut(this).map(map), target, key);
            }
            for target in new.iter().filter(|t| !old.contains(t)) {
                insert(Arc::make_mut(this).map(map), target, key);
            }
        }
    }

    fn map(&mut self, map: Map) -> &mut FxHashMap<Arc<str>, Keys> {
        match map {
            Map::Requiring => &mut self.requiring,
            Map::Using => &mut self.using,
        }
    }
}

#[derive(Clone, Copy)]
enum Map {
    Requiring,
    Using,
}

type Edges<'a> = SmallVec<[&'a str; 4]>;

/// The flags `flag` lists as prerequisites and the segments it uses, each without repeats.
fn edges(flag: Option<&Flag>) -> (Edges<'_>, Edges<'_>) {
    let Some(flag) = flag else {
        return Default::default();
    };
    let mut flags: Edges<'_> = flag.prerequisites.iter().map(|p| p.flag.as_str()).collect();
    let mut segments: Edges<'_> = flag.segment_refs().collect();
    for list in [&mut flags, &mut segments] {
        list.sort_unstable();
        list.dedup();
    }
    (flags, segments)
}

fn insert(map: &mut FxHashMap<Arc<str>, Keys>, target: &str, key: &Arc<str>) {
    let keys = match map.get_mut(target) {
        Some(keys) => keys,
        None => map.entry(Arc::from(target)).or_default(),
    };
    if let Err(i) = keys.binary_search_by(|k| (**k).cmp(&**key)) {
        Arc::make_mut(keys).insert(i, key.clone());
    }
}

fn remove(map: &mut FxHashMap<Arc<str>, Keys>, target: &str, key: &str) {
    let Some(keys) = map.get_mut(target) else {
        return;
    };
    if let Ok(i) = keys.binary_search_by(|k| (**k).cmp(key)) {
        if keys.len() == 1 {
            map.remove(target);
        } else {
            Arc::make_mut(keys).remove(i);
        }
    }
}
