//! Writes through the in-memory environments: validated, versioned, audited, durable, and all
//! or nothing.

use std::sync::Arc;

use flagstaff_engine::{flag_from_value, ChangeSet, Context, Flag};
use flagstaff_server::storage::{AuditChange, SledStore, Store};
use flagstaff_server::{Environments, ServerError, WriteContext};
use serde_json::json;

fn flag(key: &str, enabled: bool) -> Flag {
    flag_from_value(&json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": enabled, "default": {"variant": "on"},
    }))
    .expect("flag")
}

fn ctx<'a>(environment: &'a str, comment: &'a str) -> WriteContext<'a> {
    WriteContext {
        environment,
        actor: "alice",
        operation: "Test",
        comment,
        confirmed: false,
        duty: false,
    }
}

fn put(
    flags: Vec<Flag>,
) -> impl FnOnce(&flagstaff_engine::Snapshot) -> Result<ChangeSet, ServerError> {
    move |_| {
        Ok(ChangeSet {
            flags,
            ..ChangeSet::default()
        })
    }
}

fn open(dir: &std::path::Path) -> Environments<SledStore> {
    Environments::load(Arc::new(SledStore::open(dir, 100).expect("store"))).expect("load")
}

#[test]
fn a_write_is_versioned_audited_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let envs = open(dir.path());
        envs.create("production", false).expect("create");
        let committed = envs
            .write(
                ctx("production", "launch"),
                put(vec![flag("checkout", true)]),
            )
            .expect("write");
        assert_eq!(committed.revision, 1);
        assert_eq!(committed.flags[0].version, Some(1));
        let committed = envs
            .write(
                ctx("production", "kill"),
                put(vec![flag("checkout", false)]),
            )
            .expect("write");
        assert_eq!(committed.revision, 2);
        let history = envs
            .store()
            .history("production", Some("checkout"), None, 10)
            .expect("history");
        assert_eq!(history.len(), 2);
        assert_eq!(
            (history[0].actor.as_str(), history[0].comment.as_str()),
            ("alice", "kill")
        );
        let AuditChange::Flag { before, after, .. } = &history[0].changes[0] else {
            panic!("flag change")
        };
        assert_eq!(before.as_ref().map(|f| f.enabled), Some(true));
        assert_eq!(after.as_ref().map(|f| f.enabled), Some(false));
    }
    let envs = open(dir.path());
    let current = envs.get("production").expect("env").current();
    assert_eq!(current.revision, 2);
    assert!(
        !current
            .snapshot
            .bool_value("checkout", &Context::new("u"), true),
        "disabled flag serves off"
    );
    assert_eq!(
        current.snapshot.flag("checkout").and_then(|f| f.version),
        Some(2)
    );
}

#[test]
fn an_invalid_change_reports_every_problem_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = open(dir.path());
    envs.create("e", false).expect("create");
    envs.write(ctx("e", ""), put(vec![flag("a", true)]))
        .expect("write");
    let mut bad = flag("b", true);
    bad.off_variant = "nope".into();
    bad.prerequisites = vec![flagstaff_engine::Prerequisite {
        flag: "ghost".into(),
        variants: vec!["on".into()],
    }];
    let err = envs
        .write(ctx("e", ""), put(vec![flag("a", false), bad]))
        .expect_err("invalid");
    assert!(matches!(err, ServerError::Validation(_)));
    assert_eq!(
        err.to_string(),
        "flags[b].off_variant: unknown variant \"nope\"; the flag's variants are on, off\n\
         flags[b].prerequisites[0].flag: unknown flag \"ghost\""
    );
    let current = envs.get("e").expect("env").current();
    assert_eq!(current.revision, 1);
    assert!(
        current.snapshot.flag("a").is_some_and(|f| f.enabled),
        "a was not changed either"
    );
    assert_eq!(
        envs.store()
            .history("e", None, None, 10)
            .expect("history")
            .len(),
        1
    );
    assert_eq!(envs.store().documents("e").expect("docs").flags.len(), 1);
}

#[test]
fn a_stale_expected_version_is_a_conflict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = open(dir.path());
    envs.create("e", false).expect("create");
    envs.write(ctx("e", ""), put(vec![flag("a", true)]))
        .expect("write");
    envs.write(ctx("e", ""), put(vec![flag("a", false)]))
        .expect("write");
    let mut stale = flag("a", true);
    stale.version = Some(1);
    let err = envs
        .write(ctx("e", ""), put(vec![stale]))
        .expect_err("stale");
    assert_eq!(
        err.to_string(),
        "flag \"a\" is at version 2 in e, not 1: someone changed it at revision 2, after version \
         1 was read; read it again and redo the change, or drop `version:` (the expected \
         version) to overwrite that change"
    );
    let mut fresh = flag("a", true);
    fresh.version = Some(2);
    assert_eq!(
        envs.write(ctx("e", ""), put(vec![fresh]))
            .expect("write")
            .revision,
        3
    );
    let mut create_only = flag("new", true);
    create_only.version = Some(0);
    assert_eq!(
        envs.write(ctx("e", ""), put(vec![create_only.clone()]))
            .expect("create")
            .revision,
        4
    );
    let err = envs
        .write(ctx("e", ""), put(vec![create_only]))
        .expect_err("exists now");
    assert_eq!(
        err.to_string(),
        "flag \"new\" already exists in e, at version 4, but version 0 was given, which means it \
         must not exist yet; drop `version:` to replace it"
    );
}

#[test]
fn a_version_read_elsewhere_is_not_called_a_concurrent_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = open(dir.path());
    envs.create("production", false).expect("create");
    // Revision 1 writes "a", revision 2 "b", revision 3 "a" again.
    for (key, enabled) in [("a", true), ("b", true), ("a", false)] {
        envs.write(ctx("production", ""), put(vec![flag(key, enabled)]))
            .expect("write");
    }
    let conflict = |key: &str, version: u64| {
        let mut document = flag(key, false);
        document.version = Some(version);
        let err = envs
            .write(ctx("production", ""), put(vec![document]))
            .expect_err("a conflict");
        assert!(matches!(err, ServerError::VersionConflict(_)), "{err}");
        err.to_string()
    };
    let elsewhere = "the document was read in another environment; drop `version:` (the \
                     expected version) to replace the flag whatever its version, or copy it \
                     with `flagstaff flag promote`";

    // A version beyond the environment's revision.
    assert_eq!(
        conflict("a", 40),
        format!(
            "flag \"a\" is at version 3 in production, and version 40 is not a revision of \
             production (now 3): {elsewhere}"
        )
    );
    // A revision of the environment that changed another document: "b" is at 2, never at 3.
    assert_eq!(
        conflict("b", 3),
        format!(
            "flag \"b\" is at version 2 in production, not 3, and never had version 3 (its \
             versions only grow): {elsewhere}"
        )
    );
    // A document that does not exist.
    assert_eq!(
        conflict("c", 40),
        "flag \"c\" does not exist in production, and version 40 is not a revision of \
         production (now 3): the document was read in another environment; drop `version:` \
         (the expected version) to create the flag whatever its version, or copy it with \
         `flagstaff flag promote`"
    );
    assert!(conflict("c", 2).starts_with(
        "flag \"c\" does not exist in production, so it is not at version 2: it was deleted \
         since, or the document was read in another environment"
    ));
    // Only a document changed after the version given changed meanwhile.
    assert!(conflict("a", 1).contains("someone changed it at revision 3, after version 1"));
    assert_eq!(envs.get("production").expect("env").current().revision, 3);
}

#[test]
fn protected_environments_need_confirmation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = open(dir.path());
    envs.create("production", true).expect("create");
    let err = envs
        .write(ctx("production", ""), put(vec![flag("a", true)]))
        .expect_err("unconfirmed");
    assert!(matches!(err, ServerError::Precondition(_)));
    assert_eq!(
        err.to_string(),
        "environment \"production\" is protected: confirm the write (the CLI asks, or takes --yes)"
    );
    let confirmed = WriteContext {
        confirmed: true,
        duty: false,
        ..ctx("production", "")
    };
    assert_eq!(
        envs.write(confirmed, put(vec![flag("a", true)]))
            .expect("confirmed")
            .revision,
        1
    );
}

#[test]
fn an_unchanged_document_makes_no_revision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = open(dir.path());
    envs.create("e", false).expect("create");
    envs.write(ctx("e", ""), put(vec![flag("a", true)]))
        .expect("write");
    let again = envs
        .write(ctx("e", ""), put(vec![flag("a", true)]))
        .expect("write");
    assert_eq!(again.revision, 1);
    assert!(again.flags.is_empty());
}

#[test]
fn only_empty_environments_are_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = open(dir.path());
    envs.create("e", false).expect("create");
    assert!(matches!(
        envs.create("e", false),
        Err(ServerError::AlreadyExists(_))
    ));
    assert!(matches!(
        envs.create("Bad Key", false),
        Err(ServerError::Invalid(_))
    ));
    envs.write(ctx("e", ""), put(vec![flag("a", true)]))
        .expect("write");
    let err = envs.delete("e").expect_err("not empty");
    assert_eq!(
        err.to_string(),
        "environment \"e\" still holds 1 flags and 0 segments; delete them first"
    );
    envs.write(ctx("e", ""), |_| {
        Ok(ChangeSet {
            deleted_flags: vec!["a".into()],
            ..ChangeSet::default()
        })
    })
    .expect("delete flag");
    envs.delete("e").expect("delete");
    assert!(matches!(envs.get("e"), Err(ServerError::NotFound(_))));
}

#[test]
fn concurrent_writers_get_consecutive_revisions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = Arc::new(open(dir.path()));
    envs.create("e", false).expect("create");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let envs = envs.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|i| {
                        let key = format!("w{w}-f{i}");
                        envs.write(ctx("e", ""), put(vec![flag(&key, true)]))
                            .expect("write")
                            .revision
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut revisions: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=40).collect::<Vec<_>>());
    assert_eq!(envs.get("e").expect("env").current().snapshot.len(), 40);
    assert_eq!(
        envs.store()
            .changes_since("e", 0)
            .expect("log")
            .map(|c| c.len()),
        Some(40)
    );
}

#[test]
fn a_token_created_while_its_environment_is_deleted_is_revoked_with_it() {
    use flagstaff_server::auth::Tokens;
    use flagstaff_server::storage::Role;

    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SledStore::open(dir.path(), 100).expect("store"));
    let envs = Arc::new(Environments::load(store.clone()).expect("load"));
    let tokens = Arc::new(Tokens::load(store).expect("tokens"));
    envs.create("production", false).expect("create");
    let (token, _secret) = envs
        .while_exists("production", || {
            // A deletion that starts now waits for this creation, then revokes what it made.
            let deleting = {
                let (envs, tokens) = (envs.clone(), tokens.clone());
                std::thread::spawn(move || {
                    envs.delete_with("production", || {
                        tokens.revoke_environment("production").map(|_| ())
                    })
                })
            };
            // Real time, for a deletion that did not wait to have had the chance to finish.
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(!deleting.is_finished(), "the deletion waits");
            let created = tokens.create_named("service", Role::Sdk, Some("production"), "admin");
            // Let the deletion go on once this returns.
            std::thread::spawn(move || deleting.join());
            created
        })
        .expect("created");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while envs.get("production").is_ok() {
        assert!(std::time::Instant::now() < deadline, "the deletion ran");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(tokens.is_revoked(&token.id));
    assert!(matches!(
        envs.while_exists("production", || Ok(())),
        Err(ServerError::NotFound(_))
    ));
}
