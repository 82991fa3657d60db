//! The Admin API's operations on environments: each refuses what it must, naming why, and
//! changes nothing when it refuses.

use std::sync::Arc;

use flagstaff_engine::{
    flag_from_value, segment_from_value, Context, Flag, KeyPatch, Segment, Serve,
};
use flagstaff_server::storage::SledStore;
use flagstaff_server::{Environments, ServerError, WriteContext};
use serde_json::json;

fn flag(key: &str) -> Flag {
    flag_from_value(&json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "off"},
    }))
    .expect("flag")
}

fn requiring(key: &str, prerequisite: &str) -> Flag {
    let mut f = flag(key);
    f.prerequisites = vec![flagstaff_engine::Prerequisite {
        flag: prerequisite.into(),
        variants: vec!["on".into()],
    }];
    f
}

fn staff_flag(key: &str) -> Flag {
    flag_from_value(&json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "off"},
        "rules": [{"id": "staff", "conditions": [{"op": "in_segment", "values": ["staff"]}], "serve": {"variant": "on"}}],
    }))
    .expect("flag")
}

fn segment(key: &str, included: &[&str]) -> Segment {
    segment_from_value(&json!({"key": key, "included": included})).expect("segment")
}

fn ctx(environment: &str) -> WriteContext<'_> {
    WriteContext {
        environment,
        actor: "alice",
        operation: "Test",
        comment: "",
        confirmed: false,
        duty: false,
    }
}

fn setup() -> (tempfile::TempDir, Environments<SledStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = Environments::load(Arc::new(SledStore::open(dir.path(), 100).expect("store")))
        .expect("load");
    envs.create("staging", false).expect("create");
    envs.create("production", false).expect("create");
    (dir, envs)
}

fn revision(envs: &Environments<SledStore>, env: &str) -> u64 {
    envs.get(env).expect("env").current().revision
}

fn serves(envs: &Environments<SledStore>, env: &str, key: &str, user: &str) -> bool {
    envs.get(env)
        .expect("env")
        .current()
        .snapshot
        .bool_value(key, &Context::new(user), false)
}

#[test]
fn flags_are_created_once_and_updated_only_when_they_exist() {
    let (_dir, envs) = setup();
    envs.create_flag(ctx("staging"), flag("a")).expect("create");
    let err = envs
        .create_flag(ctx("staging"), flag("a"))
        .expect_err("exists");
    assert!(matches!(err, ServerError::AlreadyExists(_)));
    assert_eq!(
        err.to_string(),
        "flag \"a\" already exists in environment \"staging\""
    );
    let err = envs
        .update_flag(ctx("staging"), flag("b"))
        .expect_err("missing");
    assert!(matches!(err, ServerError::NotFound(_)));
    assert_eq!(err.to_string(), "no flag \"b\" in environment \"staging\"");
    assert_eq!(revision(&envs, "staging"), 1);
}

#[test]
fn deleting_what_is_still_used_names_the_users() {
    let (_dir, envs) = setup();
    envs.create_segment(ctx("staging"), segment("staff", &["user-1"]))
        .expect("segment");
    envs.create_flag(ctx("staging"), flag("payments"))
        .expect("flag");
    envs.create_flag(ctx("staging"), requiring("checkout", "payments"))
        .expect("flag");
    envs.create_flag(ctx("staging"), requiring("cart", "payments"))
        .expect("flag");
    envs.create_flag(ctx("staging"), staff_flag("beta"))
        .expect("flag");
    let before = revision(&envs, "staging");

    let err = envs
        .delete_flag(ctx("staging"), "payments", None)
        .expect_err("required");
    assert!(matches!(err, ServerError::Precondition(_)));
    assert_eq!(
        err.to_string(),
        "flag \"payments\" is a prerequisite of \"cart\", \"checkout\"; remove it from them first"
    );
    let err = envs
        .delete_segment(ctx("staging"), "staff", None)
        .expect_err("used");
    assert!(matches!(err, ServerError::Precondition(_)));
    assert_eq!(
        err.to_string(),
        "segment \"staff\" is used by the rules of \"beta\"; remove it from them first"
    );
    assert_eq!(revision(&envs, "staging"), before, "nothing changed");

    envs.delete_flag(ctx("staging"), "checkout", None)
        .expect("unused flag");
    envs.delete_flag(ctx("staging"), "cart", None)
        .expect("unused flag");
    envs.delete_flag(ctx("staging"), "payments", None)
        .expect("now unused");
}

#[test]
fn the_kill_switch_and_the_default_serve() {
    let (_dir, envs) = setup();
    envs.create_flag(ctx("staging"), flag("a")).expect("flag");
    envs.set_default_serve(
        ctx("staging"),
        "a",
        Serve::Variant("on".into()),
        false,
        None,
    )
    .expect("serve on");
    assert!(serves(&envs, "staging", "a", "u"));
    envs.set_flag_enabled(ctx("staging"), "a", false, None)
        .expect("off");
    assert!(!serves(&envs, "staging", "a", "u"));
    let err = envs
        .set_default_serve(
            ctx("staging"),
            "a",
            Serve::Variant("nope".into()),
            false,
            None,
        )
        .expect_err("bad");
    assert!(matches!(err, ServerError::Validation(_)));
    assert!(matches!(
        envs.set_flag_enabled(ctx("staging"), "zzz", true, None),
        Err(ServerError::NotFound(_))
    ));
}

#[test]
fn a_flag_reverts_to_an_earlier_version() {
    let (_dir, envs) = setup();
    envs.create_flag(ctx("staging"), flag("a")).expect("v1");
    envs.set_default_serve(
        ctx("staging"),
        "a",
        Serve::Variant("on".into()),
        false,
        None,
    )
    .expect("v2");
    envs.set_flag_enabled(ctx("staging"), "a", false, None)
        .expect("v3");
    let reverted = envs
        .revert_flag(ctx("staging"), "a", 1, None)
        .expect("revert");
    assert_eq!(reverted.revision, 4);
    let current = envs.get("staging").expect("env").current();
    let a = current.snapshot.flag("a").expect("a");
    assert!(a.enabled);
    assert_eq!(a.default, Serve::Variant("off".into()));
    assert_eq!(a.version, Some(4));
    let err = envs
        .revert_flag(ctx("staging"), "a", 9, None)
        .expect_err("no such version");
    assert_eq!(
        err.to_string(),
        "flag \"a\" has no version 9 in the history of environment \"staging\""
    );
}

#[test]
fn promotion_needs_what_the_flag_uses() {
    let (_dir, envs) = setup();
    envs.create_segment(ctx("staging"), segment("staff", &["user-1"]))
        .expect("segment");
    envs.create_flag(ctx("staging"), flag("payments"))
        .expect("flag");
    let mut checkout = staff_flag("checkout");
    checkout.prerequisites = requiring("x", "payments").prerequisites;
    envs.create_flag(ctx("staging"), checkout).expect("flag");

    let err = envs
        .promote_flag(ctx("production"), "checkout", "staging", None, false)
        .expect_err("missing");
    assert!(matches!(err, ServerError::Precondition(_)));
    assert_eq!(
        err.to_string(),
        "environment \"production\" lacks what flag \"checkout\" needs: prerequisite flag \"payments\", \
         segment \"staff\"; promote the prerequisite flags first: `flagstaff flag promote payments \
         --from staging --to production`; then copy the segments along with the flag (`flagstaff \
         flag promote checkout --from staging --to production --with-segments`) or before it \
         (`flagstaff segment promote staff --from staging --to production`)"
    );
    // Segments come along on request; prerequisite flags never do.
    let err = envs
        .promote_flag(ctx("production"), "checkout", "staging", None, true)
        .expect_err("missing");
    assert_eq!(
        err.to_string(),
        "environment \"production\" lacks what flag \"checkout\" needs: prerequisite flag \"payments\"; \
         promote the prerequisite flags first: `flagstaff flag promote payments --from staging --to \
         production`"
    );
    assert_eq!(envs.get("production").expect("env").current().revision, 0);
    envs.create_segment(ctx("production"), segment("staff", &["user-1"]))
        .expect("segment");
    envs.promote_flag(ctx("production"), "payments", "staging", None, false)
        .expect("prerequisite");
    envs.promote_flag(ctx("production"), "checkout", "staging", None, false)
        .expect("promote");
    let promoted = envs.get("production").expect("env").current();
    assert_eq!(
        promoted.snapshot.flag("checkout").map(|f| f.rules.len()),
        Some(1)
    );
}

#[test]
fn a_flag_is_promoted_with_its_segments_in_one_revision() {
    let (_dir, envs) = setup();
    envs.create_segment(ctx("staging"), segment("staff", &["user-1", "user-2"]))
        .expect("segment");
    envs.create_flag(ctx("staging"), staff_flag("checkout"))
        .expect("flag");
    envs.create_segment(ctx("production"), segment("staff", &["user-9"]))
        .expect("an older segment");
    envs.create_segment(ctx("production"), segment("other", &["user-3"]))
        .expect("unrelated");

    let committed = envs
        .promote_flag(ctx("production"), "checkout", "staging", None, true)
        .expect("promoted");
    assert_eq!(committed.revision, 3);
    assert_eq!(committed.flags.len(), 1);
    let keys: Vec<&str> = committed.segments.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["staff"], "only the segments the flag uses");
    let production = envs.get("production").expect("env").current();
    let staff = production.snapshot.segment("staff").expect("copied");
    assert_eq!(staff.included, ["user-1", "user-2"]);
    assert_eq!(staff.version, Some(3));
    assert_eq!(
        production.snapshot.segment("other").map(|s| s.version),
        Some(Some(2))
    );
    // Promoted again, nothing differs: no revision.
    let again = envs
        .promote_flag(ctx("production"), "checkout", "staging", None, true)
        .expect("promoted");
    assert_eq!(again.revision, 3);
    assert!(!again.changed());
}

#[test]
fn a_segment_is_promoted_with_its_keys() {
    let (_dir, envs) = setup();
    envs.create_segment(ctx("staging"), segment("staff", &["user-1"]))
        .expect("segment");
    let committed = envs
        .promote_segment(ctx("production"), "staff", "staging", None)
        .expect("promoted");
    assert_eq!(committed.revision, 1);
    let err = envs
        .promote_segment(ctx("production"), "staff", "staging", Some(7))
        .expect_err("a version the target does not have");
    assert!(matches!(err, ServerError::VersionConflict(_)), "{err}");
    let err = envs
        .promote_segment(ctx("production"), "nobody", "staging", None)
        .expect_err("not in the source");
    assert_eq!(
        err.to_string(),
        "no segment \"nobody\" in environment \"staging\""
    );
}

#[test]
fn segment_keys_are_patched() {
    let (_dir, envs) = setup();
    envs.create_segment(ctx("staging"), segment("staff", &["a", "b"]))
        .expect("segment");
    let patch = KeyPatch {
        segment: "staff".into(),
        add_included: vec!["c".into(), "a".into(), "c".into()],
        remove_included: vec!["b".into()],
        add_excluded: vec!["z".into()],
        ..KeyPatch::default()
    };
    envs.patch_segment_keys(ctx("staging"), &patch, None)
        .expect("patch");
    let current = envs.get("staging").expect("env").current();
    let staff = current.snapshot.segment("staff").expect("segment");
    assert_eq!(staff.included, ["a", "c"]);
    assert_eq!(staff.excluded, ["z"]);
    let err = envs
        .patch_segment_keys(ctx("staging"), &patch, Some(1))
        .expect_err("stale");
    assert!(matches!(err, ServerError::VersionConflict(_)));
}
