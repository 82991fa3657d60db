//! Compiled snapshots: an environment's flags and segments, validated and prepared once.
//!
//! Each flag and segment compiles into its own immutable unit behind an `Arc`. Applying a
//! [`ChangeSet`] clones the two maps of `Arc`s (cheap) and recompiles only the documents that
//! changed, the flags that use a changed segment, and the flags that (transitively) have a
//! changed flag as a prerequisite, since those hold direct references to what they use. The
//! snapshot keeps those reverse edges ([`Dependents`]), so finding them, and checking a change
//! against the rest of the environment, costs what the change touches rather than a walk over
//! every flag.
//!
//! This file holds the container and the way a change gets into it: [`ChangeSet`], checking a
//! change against the environment it would produce, and building the next snapshot. The
//! compiled forms it holds are in `compiled.rs` (flags) and `condition.rs` (conditions and
//! segments), the table that finds them by key in `table.rs`, evaluation in `eval.rs`.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::compiled::CompiledFlag;
use crate::condition::CompiledSegment;
use crate::decode::{self, Undecoded};
use crate::dependents::Dependents;
use crate::limits::quote;
use crate::model::{Document, Flag, Segment};
use crate::problem::{keyed, Problems, ValidationError};
use crate::table::Table;
use crate::validate::{self, PrerequisiteGraph, Resolve};

/// A set of changes to an environment, applied as one unit: all or nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    /// Flags created or replaced.
    pub flags: Vec<Flag>,
    /// Keys of flags removed.
    pub deleted_flags: Vec<String>,
    /// Segments created or replaced.
    pub segments: Vec<Segment>,
    /// Keys of segments removed.
    pub deleted_segments: Vec<String>,
}

impl ChangeSet {
    /// Whether the change set changes nothing.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
            && self.deleted_flags.is_empty()
            && self.segments.is_empty()
            && self.deleted_segments.is_empty()
    }
}

impl From<Document> for ChangeSet {
    fn from(doc: Document) -> ChangeSet {
        ChangeSet {
            flags: doc.flags,
            segments: doc.segments,
            ..ChangeSet::default()
        }
    }
}

/// Runs `check`; whether it found no problem.
fn within(problems: &mut Problems, check: impl FnOnce(&mut Problems)) -> bool {
    let before = problems.len();
    check(problems);
    problems.len() == before
}

/// Whether a change must keep the limits of a write, beyond being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limits {
    Ignore,
    Enforce,
}

/// An environment's flags and segments, validated and compiled: what evaluation reads.
///
/// Immutable and `Send + Sync`; share it behind an `Arc` (the SDK keeps it in an `ArcSwap`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(crate) flags: Table<CompiledFlag>,
    pub(crate) segments: Table<CompiledSegment>,
    /// Which flags use each segment and require each flag; shared with the snapshot this one
    /// was applied to when the change did not alter any of those edges.
    dependents: Arc<Dependents>,
}

/// The environment as it will be after a change, for cross-document checks.
struct Pending<'a> {
    base: &'a Snapshot,
    /// Flags and segments of the same document that did not decode; they exist.
    undecoded: &'a Undecoded,
    flags: FxHashMap<&'a str, &'a Flag>,
    deleted_flags: FxHashSet<&'a str>,
    segments: FxHashSet<&'a str>,
    deleted_segments: FxHashSet<&'a str>,
}

impl Resolve for Pending<'_> {
    fn flag(&self, key: &str) -> Option<&Flag> {
        if let Some(flag) = self.flags.get(key) {
            return Some(flag);
        }
        if self.deleted_flags.contains(key) {
            return None;
        }
        self.base.flags.get(key).map(|f| &*f.doc)
    }

    fn has_segment(&self, key: &str) -> bool {
        self.segments.contains(key)
            || (!self.deleted_segments.contains(key) && self.base.segments.contains_key(key))
            || self.undecoded.segments.iter().any(|s| s == key)
    }

    fn is_undecoded_flag(&self, key: &str) -> bool {
        self.undecoded.flags.iter().any(|f| f == key)
    }
}

impl Snapshot {
    /// An empty environment.
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Validates and compiles a whole document, reporting every problem.
    pub fn from_document(doc: Document) -> Result<Snapshot, ValidationError> {
        Snapshot::new().apply(ChangeSet::from(doc))
    }

    /// Parses, validates and compiles an export document in JSON or YAML.
    pub fn from_text(text: &str) -> Result<Snapshot, ValidationError> {
        Snapshot::from_value(&crate::format::parse_value(text)?)
    }

    /// Decodes, validates and compiles an export document, reporting every problem: the
    /// structural ones (unknown and missing fields, wrong types) and those of every flag and
    /// segment that did decode.
    pub fn from_value(value: &serde_json::Value) -> Result<Snapshot, ValidationError> {
        let mut problems = Problems::default();
        let Some((doc, undecoded)) = decode::decode_document(value, &mut problems) else {
            return Err(problems
                .into_result()
                .err()
                .unwrap_or_else(|| ValidationError::single("", "not an export document")));
        };
        let empty = Snapshot::new();
        let changes = ChangeSet::from(doc);
        let order = empty.validate(&changes, &undecoded, Limits::Ignore, &mut problems);
        problems.into_result()?;
        Ok(empty.build(changes, order))
    }

    /// The snapshot after `changes`, or every problem they have; `self` is never modified.
    pub fn apply(&self, changes: ChangeSet) -> Result<Snapshot, ValidationError> {
        self.apply_checked(changes, Limits::Ignore)
    }

    /// Like [`apply`](Self::apply), and the changed documents must also keep the limits of a
    /// write (counts, text sizes, NUL characters, nesting, compiled regex size; see
    /// [`MAX_RULES`](crate::MAX_RULES) and its neighbours). A server checks every write with
    /// this; documents already stored load with [`apply`](Self::apply), so data accepted
    /// before a limit existed still loads.
    pub fn apply_within_limits(&self, changes: ChangeSet) -> Result<Snapshot, ValidationError> {
        self.apply_checked(changes, Limits::Enforce)
    }

    fn apply_checked(
        &self,
        changes: ChangeSet,
        limits: Limits,
    ) -> Result<Snapshot, ValidationError> {
        let mut problems = Problems::default();
        let order = self.validate(&changes, &Undecoded::default(), limits, &mut problems);
        problems.into_result()?;
        Ok(self.build(changes, order))
    }

    /// Compiles validated `changes` onto a copy of this snapshot; `order` lists the flags to
    /// (re)compile, prerequisites first.
    fn build(&self, changes: ChangeSet, order: Vec<Arc<str>>) -> Snapshot {
        let mut next = self.clone();
        for key in &changes.deleted_segments {
            next.segments.remove(key.as_str());
        }
        for key in &changes.deleted_flags {
            if let Some(old) = next.flags.remove(key.as_str()) {
                Dependents::replace(&mut next.dependents, &old.key, Some(&old.doc), None);
            }
        }
        for segment in changes.segments {
            let key: Arc<str> = segment.key.as_str().into();
            next.segments
                .insert(Arc::new(CompiledSegment::compile(key, Arc::new(segment))));
        }
        let mut upserts: FxHashMap<Arc<str>, Arc<Flag>> = changes
            .flags
            .into_iter()
            .map(|f| (Arc::from(f.key.as_str()), Arc::new(f)))
            .collect();
        for key in order {
            let doc = match upserts.remove(&key) {
                Some(doc) => {
                    let old = self.flags.get(&key).map(|f| &*f.doc);
                    Dependents::replace(&mut next.dependents, &key, old, Some(&doc));
                    doc
                }
                None => match next.flags.get(&key) {
                    Some(existing) => existing.doc.clone(),
                    None => continue,
                },
            };
            let compiled = CompiledFlag::compile(key, doc, &next.flags, &next.segments);
            next.flags.insert(Arc::new(compiled));
        }
        next
    }

    /// Checks `changes` against this snapshot, adding what is wrong to `problems`, and returns
    /// the flags to compile, prerequisites first.
    fn validate(
        &self,
        changes: &ChangeSet,
        undecoded: &Undecoded,
        limits: Limits,
        problems: &mut Problems,
    ) -> Vec<Arc<str>> {
        let pending = self.check(changes, undecoded, limits, problems);
        let affected = self.affected(changes, &pending);
        for key in &affected {
            if let Some(flag) = pending.flag(key) {
                validate::check_references(flag, &keyed("flags", key), &pending, problems);
            }
        }
        let graph = PrerequisiteGraph::walk(affected.iter().copied(), &pending, problems);
        let affected: FxHashSet<&str> = affected.into_iter().collect();
        graph
            .order
            .into_iter()
            .filter(|k| affected.contains(k))
            .map(Arc::from)
            .collect()
    }

    /// Checks each changed document alone and the change set as a whole; returns the state the
    /// environment would have, for cross-document checks.
    fn check<'a>(
        &'a self,
        changes: &'a ChangeSet,
        undecoded: &'a Undecoded,
        limits: Limits,
        problems: &mut Problems,
    ) -> Pending<'a> {
        let mut pending = Pending {
            base: self,
            undecoded,
            flags: FxHashMap::default(),
            deleted_flags: changes.deleted_flags.iter().map(String::as_str).collect(),
            segments: FxHashSet::default(),
            deleted_segments: changes
                .deleted_segments
                .iter()
                .map(String::as_str)
                .collect(),
        };
        // The compiled size of the changed documents' regexes, as the limits measured it.
        let mut regex_bytes = 0;
        for segment in &changes.segments {
            let path = keyed("segments", &segment.key);
            // Limits first: a document over them is not checked further, so that the cost of
            // checking a write is bounded by the limits, whatever it holds.
            if limits == Limits::Ignore
                || within(problems, |p| {
                    regex_bytes += validate::check_segment_limits(segment, &path, p);
                })
            {
                validate::check_segment(segment, &path, problems);
            }
            if !pending.segments.insert(&segment.key) {
                problems.push(
                    path.clone(),
                    format!("duplicate segment key {}", quote(&segment.key)),
                );
            }
            if pending.deleted_segments.contains(segment.key.as_str()) {
                problems.push(path, "the segment is both changed and deleted");
            }
        }
        for flag in &changes.flags {
            let path = keyed("flags", &flag.key);
            if limits == Limits::Ignore
                || within(problems, |p| {
                    regex_bytes += validate::check_flag_limits(flag, &path, p);
                })
            {
                validate::check_flag(flag, &path, problems);
            }
            if pending.flags.insert(&flag.key, flag).is_some() {
                problems.push(
                    path.clone(),
                    format!("duplicate flag key {}", quote(&flag.key)),
                );
            }
            if pending.deleted_flags.contains(flag.key.as_str()) {
                problems.push(path, "the flag is both changed and deleted");
            }
        }
        for key in &changes.deleted_flags {
            if !self.flags.contains_key(key.as_str()) {
                problems.push(keyed("flags", key), "no such flag to delete");
            }
        }
        for key in &changes.deleted_segments {
            if !self.segments.contains_key(key.as_str()) {
                problems.push(keyed("segments", key), "no such segment to delete");
            }
        }
        if !pending.deleted_flags.is_empty() || !pending.deleted_segments.is_empty() {
            self.check_deleted_unused(&pending, problems);
        }
        if limits == Limits::Enforce {
            self.check_regex_budget(changes, regex_bytes, problems);
        }
        pending
    }

    /// The heap memory every compiled regex of the snapshot holds.
    pub fn regex_bytes(&self) -> usize {
        self.flags.values().map(|f| f.regex_bytes()).sum::<usize>()
            + self
                .segments
                .values()
                .map(|s| s.regex_bytes())
                .sum::<usize>()
    }

    /// The environment's regexes after `changes` (whose own take `added` bytes) must fit in
    /// [`MAX_ENVIRONMENT_REGEX_BYTES`](crate::MAX_ENVIRONMENT_REGEX_BYTES); a change that does
    /// not grow them is let through, so an environment over the limit can still shrink.
    fn check_regex_budget(&self, changes: &ChangeSet, added: usize, problems: &mut Problems) {
        use crate::limits::MAX_ENVIRONMENT_REGEX_BYTES;
        let before = self.regex_bytes();
        let replaced: usize = changes
            .flags
            .iter()
            .map(|f| f.key.as_str())
            .chain(changes.deleted_flags.iter().map(String::as_str))
            .filter_map(|key| self.flags.get(key))
            .map(|f| f.regex_bytes())
            .sum::<usize>()
            + changes
                .segments
                .iter()
                .map(|s| s.key.as_str())
                .chain(changes.deleted_segments.iter().map(String::as_str))
                .filter_map(|key| self.segments.get(key))
                .map(|s| s.regex_bytes())
                .sum::<usize>();
        let after = before.saturating_sub(replaced) + added;
        if after > MAX_ENVIRONMENT_REGEX_BYTES && after > before {
            problems.push(
                "",
                format!(
                    "the environment's regexes would take {} MiB compiled, over the limit of {} \
                     MiB for an environment; remove or simplify `matches` conditions",
                    after.div_ceil(1 << 20),
                    MAX_ENVIRONMENT_REGEX_BYTES >> 20
                ),
            );
        }
    }

    /// A deleted flag may not be a remaining flag's prerequisite, nor a deleted segment be used:
    /// neither by an unchanged flag (found through the reverse edges) nor by a changed one.
    fn check_deleted_unused(&self, pending: &Pending<'_>, problems: &mut Problems) {
        let unchanged = |key: &&Arc<str>| {
            !pending.flags.contains_key(&***key) && !pending.deleted_flags.contains(&***key)
        };
        let mut users: Vec<(String, String)> = Vec::new();
        for &deleted in &pending.deleted_flags {
            for user in self.dependents.requiring(deleted).iter().filter(unchanged) {
                users.push((format!("flags[{deleted}]"), format!("flag {user:?}")));
            }
        }
        for &deleted in &pending.deleted_segments {
            for user in self.dependents.using(deleted).iter().filter(unchanged) {
                users.push((format!("segments[{deleted}]"), format!("flag {user:?}")));
            }
        }
        for flag in pending.flags.values() {
            for p in &flag.prerequisites {
                if pending.deleted_flags.contains(p.flag.as_str()) {
                    users.push((format!("flags[{}]", p.flag), format!("flag {:?}", flag.key)));
                }
            }
            for s in flag.segment_refs() {
                if pending.deleted_segments.contains(s) {
                    users.push((format!("segments[{s}]"), format!("flag {:?}", flag.key)));
                }
            }
        }
        users.sort();
        users.dedup();
        for (path, user) in users {
            let what = if path.starts_with("flags") {
                "a prerequisite of"
            } else {
                "used by"
            };
            problems.push(path, format!("cannot be deleted: it is {what} {user}"));
        }
    }

    /// The flags to (re)compile: those changed, those using a changed segment, and every flag
    /// that has one of those as a prerequisite, transitively. Changed flags come first, in the
    /// order of the change; the others in the order of the reverse edges.
    fn affected<'a>(&'a self, changes: &'a ChangeSet, pending: &Pending<'a>) -> Vec<&'a str> {
        let mut affected: Vec<&'a str> = changes.flags.iter().map(|f| f.key.as_str()).collect();
        let mut seen: FxHashSet<&'a str> = affected.iter().copied().collect();
        // Only unchanged flags: a changed flag is already in, and a deleted one is gone. The
        // reverse edges are those of this snapshot, which a changed flag's new version may not
        // have, but every flag that still has them is unchanged.
        let mut add = |dependents: &'a [Arc<str>], affected: &mut Vec<&'a str>| {
            for d in dependents {
                let d = &**d;
                if !pending.flags.contains_key(d)
                    && !pending.deleted_flags.contains(d)
                    && seen.insert(d)
                {
                    affected.push(d);
                }
            }
        };
        for segment in &changes.segments {
            add(self.dependents.using(&segment.key), &mut affected);
        }
        let mut i = 0;
        while i < affected.len() {
            add(self.dependents.requiring(affected[i]), &mut affected);
            i += 1;
        }
        affected
    }

    /// The flag document `key`, as compiled.
    pub fn flag(&self, key: &str) -> Option<&Flag> {
        self.flags.get(key).map(|f| &*f.doc)
    }

    /// The segment document `key`, as compiled.
    pub fn segment(&self, key: &str) -> Option<&Segment> {
        self.segments.get(key).map(|s| &*s.doc)
    }

    /// The keys of the flags with a condition `in_segment` naming segment `key`, sorted.
    pub fn flags_using(&self, key: &str) -> impl ExactSizeIterator<Item = &str> {
        self.dependents.using(key).iter().map(|k| &**k)
    }

    /// Every flag document, in no particular order.
    pub fn flags(&self) -> impl Iterator<Item = &Flag> {
        self.flags.values().map(|f| &*f.doc)
    }

    /// Every segment document, in no particular order.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.values().map(|s| &*s.doc)
    }

    /// The number of flags.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// The environment as an export document, flags and segments sorted by key, without versions.
    pub fn to_document(&self, environment: &str) -> Document {
        let mut flags: Vec<Flag> = self
            .flags()
            .cloned()
            .map(|f| Flag { version: None, ..f })
            .collect();
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        let mut segments: Vec<Segment> = self
            .segments()
            .cloned()
            .map(|s| Segment { version: None, ..s })
            .collect();
        segments.sort_by(|a, b| a.key.cmp(&b.key));
        Document {
            environment: environment.to_owned(),
            flags,
            segments,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::context::Context;
    use crate::format::{flag_from_value, segment_from_value};

    /// What one step does to one flag or segment key.
    #[derive(Debug, Clone)]
    enum Op {
        /// Create or replace it: for a flag, its prerequisites (flag indices), the segments its
        /// rule uses (segment indices) and whether its variants are `on`/`off` (or `yes`/`no`,
        /// which the flags requiring it to serve `on` refuse); for a segment, its members.
        Upsert {
            prerequisites: Vec<usize>,
            segments: Vec<usize>,
            on_off: bool,
        },
        Delete,
    }

    const FLAGS: usize = 10;
    const SEGMENTS: usize = 4;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (
                proptest::collection::vec(0..FLAGS, 0..3),
                proptest::collection::vec(0..SEGMENTS, 0..3),
                proptest::bool::weighted(0.9),
            )
                .prop_map(|(prerequisites, segments, on_off)| Op::Upsert {
                    prerequisites,
                    segments,
                    on_off,
                }),
            1 => Just(Op::Delete),
        ]
    }

    /// One change: operations on flags and on segments, by index (later ones on the same key
    /// are ignored, so a change never names a key twice), and whether its flags may name flags
    /// and segments that will not exist.
    type Change = (Vec<(usize, Op)>, Vec<(usize, Op)>, bool);

    fn change() -> impl Strategy<Value = Change> {
        (
            proptest::collection::vec((0..FLAGS, op()), 0..4),
            proptest::collection::vec((0..SEGMENTS, op()), 0..2),
            proptest::bool::weighted(0.1),
        )
    }

    /// The keys that exist after `ops` on `existing`, counting the first op on each key only.
    fn after<T>(existing: &BTreeMap<usize, T>, ops: &[(usize, Op)]) -> FxHashSet<usize> {
        let mut keys: FxHashSet<usize> = existing.keys().copied().collect();
        let mut named = FxHashSet::default();
        for (i, op) in ops {
            if named.insert(*i) {
                match op {
                    Op::Upsert { .. } => keys.insert(*i),
                    Op::Delete => keys.remove(i),
                };
            }
        }
        keys
    }

    fn flag(i: usize, prerequisites: &[usize], segments: &[usize], on_off: bool) -> Flag {
        let (on, off) = if on_off { ("on", "off") } else { ("yes", "no") };
        let mut prerequisites: Vec<usize> = prerequisites.to_vec();
        prerequisites.sort_unstable();
        prerequisites.dedup();
        let prerequisites: Vec<_> = prerequisites
            .iter()
            .map(|p| json!({"flag": format!("f{p}"), "variants": ["on"]}))
            .collect();
        let segments: Vec<_> = segments.iter().map(|s| format!("s{s}")).collect();
        let rules = if segments.is_empty() {
            json!([])
        } else {
            json!([{"id": "r", "conditions": [{"op": "in_segment", "values": segments}],
                    "serve": {"variant": off}}])
        };
        flag_from_value(&json!({
            "key": format!("f{i}"), "kind": "boolean", "enabled": true,
            "variants": {on: true, off: false}, "off_variant": off,
            "prerequisites": prerequisites, "rules": rules, "default": {"variant": on},
        }))
        .expect("a valid flag")
    }

    fn segment(i: usize, members: &[usize]) -> Segment {
        let included: Vec<_> = members.iter().map(|m| format!("user-{m}")).collect();
        segment_from_value(&json!({"key": format!("s{i}"), "included": included}))
            .expect("a valid segment")
    }

    #[test]
    fn the_flags_using_a_segment_are_listed_sorted_and_follow_changes() {
        let snapshot = Snapshot::from_document(Document {
            environment: "test".to_owned(),
            flags: vec![flag(2, &[], &[0], true), flag(1, &[], &[0, 1], true)],
            segments: vec![segment(0, &[]), segment(1, &[])],
        })
        .expect("valid");
        assert_eq!(snapshot.flags_using("s0").collect::<Vec<_>>(), ["f1", "f2"]);
        assert_eq!(snapshot.flags_using("s1").collect::<Vec<_>>(), ["f1"]);
        assert_eq!(snapshot.flags_using("s9").len(), 0);
        let changed = snapshot
            .apply(ChangeSet {
                deleted_flags: vec!["f1".to_owned()],
                ..ChangeSet::default()
            })
            .expect("applied");
        assert_eq!(changed.flags_using("s0").collect::<Vec<_>>(), ["f2"]);
        assert_eq!(changed.flags_using("s1").len(), 0);
    }

    /// Every flag's evaluation for a few users, as text.
    fn served(snapshot: &Snapshot) -> Vec<String> {
        let mut keys: Vec<&str> = snapshot.flags.keys().collect();
        keys.sort_unstable();
        let mut served = Vec::new();
        for key in keys {
            for user in 0..4 {
                let ctx = Context::new(format!("user-{user}"));
                served.push(format!("{key} {user} {:?}", snapshot.evaluate(key, &ctx)));
            }
        }
        served
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A run of changes, each applied to the previous snapshot, ends where compiling the
        /// resulting document from scratch does: the same refusals, documents, evaluations and
        /// reverse edges. Refusals come from prerequisite cycles and chains, missing variants,
        /// and deleting what is still used.
        #[test]
        fn applying_changes_matches_compiling_the_result(
            changes in proptest::collection::vec(change(), 1..24),
        ) {
            let mut snapshot = Snapshot::new();
            let mut flags: BTreeMap<usize, Flag> = BTreeMap::new();
            let mut segments: BTreeMap<usize, Segment> = BTreeMap::new();
            for (flag_ops, segment_ops, unknown) in changes {
                let flags_after = after(&flags, &flag_ops);
                let segments_after = after(&segments, &segment_ops);
                let mut changes = ChangeSet::default();
                let (mut next_flags, mut next_segments) = (flags.clone(), segments.clone());
                let mut named = FxHashSet::default();
                for (i, op) in flag_ops {
                    if !named.insert(("f", i)) {
                        continue;
                    }
                    match op {
                        Op::Upsert { mut prerequisites, mut segments, on_off } => {
                            if !unknown {
                                prerequisites.retain(|p| flags_after.contains(p));
                                segments.retain(|s| segments_after.contains(s));
                            }
                            let f = flag(i, &prerequisites, &segments, on_off);
                            next_flags.insert(i, f.clone());
                            changes.flags.push(f);
                        }
                        Op::Delete if flags.contains_key(&i) => {
                            next_flags.remove(&i);
                            changes.deleted_flags.push(format!("f{i}"));
                        }
                        Op::Delete => {}
                    }
                }
                for (i, op) in segment_ops {
                    if !named.insert(("s", i)) {
                        continue;
                    }
                    match op {
                        Op::Upsert { prerequisites, .. } => {
                            let s = segment(i, &prerequisites);
                            next_segments.insert(i, s.clone());
                            changes.segments.push(s);
                        }
                        Op::Delete if segments.contains_key(&i) => {
                            next_segments.remove(&i);
                            changes.deleted_segments.push(format!("s{i}"));
                        }
                        Op::Delete => {}
                    }
                }
                let whole = Snapshot::from_document(Document {
                    environment: "test".to_owned(),
                    flags: next_flags.values().cloned().collect(),
                    segments: next_segments.values().cloned().collect(),
                });
                let applied = snapshot.apply(changes.clone());
                match (applied, whole) {
                    (Ok(applied), Ok(whole)) => {
                        prop_assert_eq!(applied.to_document("test"), whole.to_document("test"));
                        prop_assert_eq!(&applied.dependents, &whole.dependents);
                        prop_assert_eq!(served(&applied), served(&whole));
                        snapshot = applied;
                        (flags, segments) = (next_flags, next_segments);
                    }
                    (Err(_), Err(_)) => {}
                    (applied, whole) => prop_assert!(
                        false,
                        "{changes:?}: applied {:?}, whole document {:?}",
                        applied.err(),
                        whole.err()
                    ),
                }
            }
        }
    }
}
