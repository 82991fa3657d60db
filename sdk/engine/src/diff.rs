//! Which flags two snapshots evaluate differently: what change listeners are told about.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::compiled::CompiledFlag;
use crate::snapshot::Snapshot;

impl Snapshot {
    /// The keys of the flags that may evaluate differently here than in `before`, sorted:
    /// flags added, removed or edited, and flags whose rules use a segment that changed or
    /// whose prerequisites (at any depth) changed. A flag compiled anew with the same
    /// definition and the same dependencies is not reported, so comparing two snapshots of the
    /// same data (e.g. after a resynchronisation) reports nothing.
    ///
    /// Costs one map lookup per flag when `self` was built from `before` by
    /// [`apply`](Self::apply), which shares everything it did not recompile; a full comparison
    /// of definitions otherwise.
    pub fn changed_flags(&self, before: &Snapshot) -> Vec<String> {
        let mut diff = Diff {
            before,
            after: self,
            same: FxHashMap::default(),
        };
        let mut changed: Vec<String> = self
            .flags
            .keys()
            .filter(|key| !diff.same_flag(key))
            .map(|key| key.to_string())
            .collect();
        changed.extend(
            before
                .flags
                .keys()
                .filter(|key| !self.flags.contains_key(key))
                .map(|key| key.to_string()),
        );
        changed.sort_unstable();
        changed
    }
}

struct Diff<'a> {
    before: &'a Snapshot,
    after: &'a Snapshot,
    /// Flags already compared, by key.
    same: FxHashMap<&'a str, bool>,
}

impl<'a> Diff<'a> {
    /// Whether flag `key` evaluates the same in both snapshots.
    fn same_flag(&mut self, key: &'a str) -> bool {
        if let Some(&same) = self.same.get(key) {
            return same;
        }
        let same = match (self.before.flags.get(key), self.after.flags.get(key)) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || self.same_definition(a, b),
            _ => false,
        };
        self.same.insert(key, same);
        same
    }

    /// Two compilations of a flag: the same document, the same segments, the same prerequisites.
    fn same_definition(&mut self, a: &'a CompiledFlag, b: &'a CompiledFlag) -> bool {
        if a.doc != b.doc {
            return false;
        }
        let segments_same = b.doc.segment_refs().all(|segment| {
            match (
                self.before.segments.get(segment),
                self.after.segments.get(segment),
            ) {
                (Some(x), Some(y)) => Arc::ptr_eq(x, y) || x.doc == y.doc,
                (None, None) => true,
                _ => false,
            }
        });
        // Prerequisites form no cycles (validation refuses them), so this recursion ends.
        segments_same
            && b.doc
                .prerequisites
                .iter()
                .all(|p| self.same_flag(p.flag.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{ChangeSet, Snapshot};

    fn snapshot() -> Snapshot {
        Snapshot::from_value(&json!({
            "environment": "test",
            "segments": [{"key": "beta", "included": ["u1"]}],
            "flags": [
                {"key": "a", "kind": "boolean", "variants": {"on": true, "off": false},
                 "off_variant": "off", "enabled": true, "default": {"variant": "on"}},
                {"key": "b", "kind": "boolean", "variants": {"on": true, "off": false},
                 "off_variant": "off", "enabled": true,
                 "rules": [{"id": "r", "conditions": [{"op": "in_segment", "values": ["beta"]}],
                            "serve": {"variant": "on"}}],
                 "default": {"variant": "off"}},
                {"key": "c", "kind": "boolean", "variants": {"on": true, "off": false},
                 "off_variant": "off", "enabled": true,
                 "prerequisites": [{"flag": "b", "variants": ["on"]}],
                 "default": {"variant": "on"}},
                {"key": "d", "kind": "string", "variants": {"x": "x"},
                 "off_variant": "x", "enabled": true, "default": {"variant": "x"}},
            ],
        }))
        .expect("valid")
    }

    fn flag(value: serde_json::Value) -> crate::Flag {
        crate::flag_from_value(&value).expect("valid flag")
    }

    #[test]
    fn the_same_data_compiled_twice_has_no_changes() {
        assert!(snapshot().changed_flags(&snapshot()).is_empty());
        let s = snapshot();
        assert!(s.changed_flags(&s).is_empty());
    }

    #[test]
    fn an_edit_reports_the_flag_and_what_depends_on_it() {
        let before = snapshot();
        let changes = ChangeSet {
            flags: vec![flag(json!({
                "key": "b", "kind": "boolean", "variants": {"on": true, "off": false},
                "off_variant": "off", "enabled": false, "default": {"variant": "off"}}))],
            ..ChangeSet::default()
        };
        let after = before.apply(changes).expect("applies");
        assert_eq!(after.changed_flags(&before), ["b", "c"]);
        // Compiled from scratch, the comparison is by definition and gives the same answer.
        let rebuilt = Snapshot::from_document(after.to_document("test")).expect("valid");
        assert_eq!(rebuilt.changed_flags(&snapshot()), ["b", "c"]);
    }

    #[test]
    fn a_segment_change_reports_the_flags_using_it() {
        let before = snapshot();
        let mut segment = before.segment("beta").expect("segment").clone();
        segment.included.push("u2".to_owned());
        let after = before
            .apply(ChangeSet {
                segments: vec![segment],
                ..ChangeSet::default()
            })
            .expect("applies");
        assert_eq!(after.changed_flags(&before), ["b", "c"]);
    }

    #[test]
    fn additions_and_removals_are_reported() {
        let before = snapshot();
        let after = before
            .apply(ChangeSet {
                flags: vec![flag(json!({
                    "key": "e", "kind": "number", "variants": {"one": 1},
                    "off_variant": "one", "enabled": true, "default": {"variant": "one"}}))],
                deleted_flags: vec!["d".to_owned()],
                ..ChangeSet::default()
            })
            .expect("applies");
        assert_eq!(after.changed_flags(&before), ["d", "e"]);
        assert_eq!(before.changed_flags(&after), ["d", "e"]);
        assert_eq!(after.changed_flags(&Snapshot::new()).len(), 4);
    }
}
