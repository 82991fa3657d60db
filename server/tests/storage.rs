//! The sled store: atomic, ordered, durable commits; retention; history; tokens; locking.

use flagstaff_engine::{flag_from_value, segment_from_value, Flag, KeyPatch, Segment};
use flagstaff_server::storage::{
    now_ms, random_id, AuditChange, AuditEntry, Change, EnvironmentRecord, Role, SledStore, Store,
    StoreError, TokenRecord,
};
use serde_json::json;

fn flag(key: &str, version: u64, enabled: bool) -> Flag {
    let mut flag = flag_from_value(&json!({
        "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": enabled, "default": {"variant": "on"},
    }))
    .expect("flag");
    flag.version = Some(version);
    flag
}

fn environment(key: &str) -> EnvironmentRecord {
    EnvironmentRecord {
        key: key.to_owned(),
        epoch: random_id(),
        revision: 0,
        protected: false,
        created_ms: now_ms(),
    }
}

fn audit(revision: u64, changes: Vec<AuditChange>) -> AuditEntry {
    AuditEntry {
        revision,
        time_ms: now_ms(),
        actor: "test".into(),
        comment: format!("r{revision}"),
        operation: "SetFlagEnabled".into(),
        changes,
    }
}

/// Commits revision `revision` setting `key` enabled or not.
fn set_flag(
    store: &SledStore,
    env: &str,
    revision: u64,
    key: &str,
    enabled: bool,
) -> Result<(), StoreError> {
    let f = flag(key, revision, enabled);
    let change = Change {
        revision,
        flags: vec![f.clone()],
        ..Change::default()
    };
    store.commit(
        env,
        revision - 1,
        &change,
        &[],
        &audit(revision, vec![AuditChange::flag(key, None, Some(&f))]),
        &[],
    )
}

#[test]
fn a_commit_is_there_after_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let epoch;
    {
        let store = SledStore::open(dir.path(), 100).expect("open");
        let env = environment("production");
        epoch = env.epoch.clone();
        store.create_environment(&env).expect("create");
        set_flag(&store, "production", 1, "checkout", true).expect("commit 1");
        set_flag(&store, "production", 2, "checkout", false).expect("commit 2");
    }
    let store = SledStore::open(dir.path(), 100).expect("reopen");
    let envs = store.environments().expect("environments");
    assert_eq!(envs.len(), 1);
    assert_eq!(
        (envs[0].revision, envs[0].epoch.as_str()),
        (2, epoch.as_str())
    );
    let docs = store.documents("production").expect("documents");
    assert_eq!(docs.flags, vec![flag("checkout", 2, false)]);
}

#[test]
fn a_conflicting_commit_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), 100).expect("open");
    store.create_environment(&environment("e")).expect("create");
    set_flag(&store, "e", 1, "a", true).expect("commit");
    let err = set_flag(&store, "e", 1, "b", true).expect_err("revision 0 is gone");
    assert_eq!(err.to_string(), "environment \"e\" is at revision 1, not 0");
    let docs = store.documents("e").expect("documents");
    assert_eq!(docs.flags.len(), 1, "b was not written");
    assert_eq!(store.environments().expect("envs")[0].revision, 1);
    assert_eq!(
        store.history("e", None, None, 10).expect("history").len(),
        1
    );
}

#[test]
fn the_change_log_keeps_the_retained_revisions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), 3).expect("open");
    store.create_environment(&environment("e")).expect("create");
    for revision in 1..=5 {
        set_flag(&store, "e", revision, "a", revision % 2 == 0).expect("commit");
    }
    let revisions = |since| {
        store
            .changes_since("e", since)
            .expect("changes")
            .map(|c| c.iter().map(|c| c.revision).collect::<Vec<_>>())
    };
    assert_eq!(revisions(2), Some(vec![3, 4, 5]));
    assert_eq!(revisions(4), Some(vec![5]));
    assert_eq!(revisions(5), Some(vec![]));
    assert_eq!(revisions(1), None, "revision 2 is no longer retained");
    assert_eq!(revisions(0), None);
}

#[test]
fn history_is_newest_first_filtered_and_paged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), 100).expect("open");
    store.create_environment(&environment("e")).expect("create");
    for revision in 1..=6 {
        let key = if revision % 2 == 0 { "even" } else { "odd" };
        set_flag(&store, "e", revision, key, true).expect("commit");
    }
    let revisions = |flag, before, limit| -> Vec<u64> {
        store
            .history("e", flag, before, limit)
            .expect("history")
            .iter()
            .map(|a| a.revision)
            .collect()
    };
    assert_eq!(revisions(None, None, 10), [6, 5, 4, 3, 2, 1]);
    assert_eq!(revisions(None, None, 2), [6, 5]);
    assert_eq!(revisions(None, Some(5), 2), [4, 3]);
    assert_eq!(revisions(Some("even"), None, 10), [6, 4, 2]);
    assert_eq!(revisions(Some("odd"), Some(5), 10), [3, 1]);
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _first = SledStore::open(dir.path(), 100).expect("open");
    // Open it from another process, as a second flagstaffd would: re-run this test binary as
    // a child that only opens the store.
    if std::env::var_os("FLAGSTAFF_STORE_LOCK_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "open_in_child", "--nocapture"])
        .env("FLAGSTAFF_STORE_LOCK_DIR", dir.path())
        .output()
        .expect("child runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "another flagstaffd holds the data directory {}",
            dir.path().display()
        )),
        "stdout: {stdout}\nstderr: {stderr}"
    );
}

/// Run by `a_second_process_on_the_same_data_dir_is_refused` in a child process.
#[test]
fn open_in_child() {
    let Some(dir) = std::env::var_os("FLAGSTAFF_STORE_LOCK_DIR") else {
        return;
    };
    match SledStore::open(&dir, 100) {
        Ok(_) => println!("opened"),
        Err(e) => println!("{e}"),
    }
}

#[test]
fn a_segment_of_100000_keys_round_trips() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys: Vec<String> = (0..100_000).map(|i| format!("user-{i:06}")).collect();
    let mut segment: Segment =
        segment_from_value(&json!({"key": "big", "included": keys})).expect("segment");
    segment.version = Some(1);
    {
        let store = SledStore::open(dir.path(), 100).expect("open");
        store.create_environment(&environment("e")).expect("create");
        let change = Change {
            revision: 1,
            segments: vec![segment.clone()],
            ..Change::default()
        };
        let entry = audit(1, vec![AuditChange::segment("big", None, Some(&segment))]);
        store
            .commit("e", 0, &change, &[], &entry, &[])
            .expect("commit");
        // The audit entry lists the keys added instead of a second copy of the segment.
        let history = store.history("e", None, None, 1).expect("history");
        let AuditChange::Segment {
            after,
            included_added,
            ..
        } = &history[0].changes[0]
        else {
            panic!("a segment change");
        };
        assert!(after.as_ref().expect("after").included.is_empty());
        assert_eq!(included_added.len(), 100_000);

        // A change of one key: the log holds the patch, the documents the whole segment.
        let patch = KeyPatch {
            segment: "big".into(),
            add_included: vec!["newcomer".into()],
            ..KeyPatch::default()
        };
        segment = Segment {
            version: Some(2),
            ..patch.apply(&segment)
        };
        let change = Change {
            revision: 2,
            segment_patches: vec![patch.clone()],
            ..Change::default()
        };
        let entry = audit(2, vec![]);
        store
            .commit("e", 1, &change, std::slice::from_ref(&segment), &entry, &[])
            .expect("commit");
        let logged = store.changes_since("e", 1).expect("log").expect("kept");
        assert_eq!(logged.len(), 1);
        assert!(logged[0].segments.is_empty());
        assert_eq!(logged[0].segment_patches, vec![patch]);
    }
    let store = SledStore::open(dir.path(), 100).expect("reopen");
    let stored = store.documents("e").expect("documents").segments;
    assert_eq!(stored, vec![segment]);
    assert_eq!(stored[0].included.len(), 100_001);
}

#[test]
fn tokens_persist_and_revoke() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut token = TokenRecord {
        id: random_id(),
        name: "ci".into(),
        role: Role::Editor,
        environment: Some("staging".into()),
        hash: "ab".repeat(32),
        created_ms: now_ms(),
        revoked: false,
        created_by: "admin".into(),
        client_secret: None,
    };
    let client = TokenRecord {
        id: random_id(),
        name: "web".into(),
        role: Role::Client,
        client_secret: Some("fs_shown-again".into()),
        ..token.clone()
    };
    {
        let store = SledStore::open(dir.path(), 100).expect("open");
        store.put_token(&token).expect("put");
        store.put_token(&client).expect("put client");
        token.revoked = true;
        store.put_token(&token).expect("revoke");
    }
    let store = SledStore::open(dir.path(), 100).expect("reopen");
    let mut expected = vec![token, client];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(store.tokens().expect("tokens"), expected);
}

/// A token record written before client tokens existed (no `client_secret`, no
/// `created_by`) still loads, and a client token's secret is written only for it.
#[test]
fn token_records_without_a_client_secret_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = sled::open(dir.path()).expect("sled");
        db.open_tree("tokens")
            .expect("tree")
            .insert(
                "old",
                br#"{"id":"old","name":"ci","role":"sdk","environment":"production","hash":"ab","created_ms":1,"revoked":false}"#
                    .as_slice(),
            )
            .expect("insert");
        db.flush().expect("flush");
    }
    let store = SledStore::open(dir.path(), 100).expect("open");
    let tokens = store.tokens().expect("tokens");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].role, Role::Sdk);
    assert_eq!(tokens[0].client_secret, None);
    // Written back, the field stays out for every role but client.
    let stored = serde_json::to_string(&tokens[0]).expect("json");
    assert!(!stored.contains("client_secret"), "{stored}");
    let client = TokenRecord {
        role: Role::Client,
        client_secret: Some("fs_x".into()),
        ..tokens[0].clone()
    };
    let stored = serde_json::to_string(&client).expect("json");
    assert!(stored.contains(r#""role":"client""#), "{stored}");
    assert!(stored.contains(r#""client_secret":"fs_x""#), "{stored}");
}

#[test]
fn environments_are_created_once_and_deleted_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), 100).expect("open");
    store.create_environment(&environment("e")).expect("create");
    let again = store
        .create_environment(&environment("e"))
        .expect_err("exists");
    assert_eq!(again.to_string(), "environment \"e\" already exists");
    set_flag(&store, "e", 1, "a", true).expect("commit");
    store.delete_environment("e").expect("delete");
    assert!(store.environments().expect("envs").is_empty());
    assert!(matches!(
        store.documents("e"),
        Err(StoreError::NoEnvironment(_))
    ));
    store
        .create_environment(&environment("e"))
        .expect("create again");
    assert!(
        store.documents("e").expect("documents").flags.is_empty(),
        "nothing left behind"
    );
}

#[test]
fn an_entry_s_head_is_read_without_its_documents() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = SledStore::open(dir.path(), 100).expect("open");
        store
            .create_environment(&environment("production"))
            .expect("create");
        set_flag(&store, "production", 1, "checkout", true).expect("commit 1");
        set_flag(&store, "production", 2, "checkout", false).expect("commit 2");
        set_flag(&store, "production", 3, "checkout", true).expect("commit 3");
    }
    // The documents of revision 1 become unreadable, and revision 2 loses its head, as an
    // entry written before heads were stored apart has none.
    {
        let db = sled::open(dir.path()).expect("sled");
        db.open_tree("audit/production")
            .expect("tree")
            .insert(1u64.to_be_bytes(), b"not an entry".as_slice())
            .expect("insert");
        db.open_tree("audit_heads/production")
            .expect("tree")
            .remove(2u64.to_be_bytes())
            .expect("remove");
        // Revision 3: its head damaged, read from its entry.
        db.open_tree("audit_heads/production")
            .expect("tree")
            .insert(3u64.to_be_bytes(), b"not a head".as_slice())
            .expect("insert");
        db.flush().expect("flush");
    }
    let store = SledStore::open(dir.path(), 100).expect("reopen");
    let head = store
        .audit_head("production", 1)
        .expect("the head reads without the entry")
        .expect("there is one");
    assert_eq!((head.revision, head.comment.as_str()), (1, "r1"));
    let head = store
        .audit_head("production", 2)
        .expect("read from the whole entry")
        .expect("there is one");
    assert_eq!((head.revision, head.comment.as_str()), (2, "r2"));
    let head = store
        .audit_head("production", 3)
        .expect("read from the whole entry")
        .expect("there is one");
    assert_eq!((head.revision, head.comment.as_str()), (3, "r3"));
    assert_eq!(store.audit_head("production", 4).expect("read"), None);
}

#[test]
fn opening_waits_a_moment_for_a_lock_being_released_and_then_reports_it_held() {
    let dir = tempfile::tempdir().expect("temp dir");
    let held = SledStore::open(dir.path(), 100).expect("open");
    // Released a moment later, as sled does once the last handle's background thread stops.
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(held);
    });
    let reopened = SledStore::open(dir.path(), 100).expect("the lock is waited for");
    release.join().expect("released");

    let started = std::time::Instant::now();
    let refused = SledStore::open(dir.path(), 100).map(|_| ()).unwrap_err();
    assert!(matches!(refused, StoreError::Locked { .. }), "{refused}");
    assert!(started.elapsed() >= flagstaff_server::storage::LOCK_WAIT);
    drop(reopened);
}

#[test]
fn the_ticket_key_is_made_once_and_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = {
        let store = std::sync::Arc::new(SledStore::open(dir.path(), 100).expect("open"));
        // Callers racing on a fresh store agree on one key.
        let keys: Vec<[u8; 32]> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| store.ticket_key().expect("ticket key")))
                .collect();
            racers
                .into_iter()
                .map(|racer| racer.join().expect("no panic"))
                .collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        assert_ne!(keys[0], [0u8; 32]);
        assert_eq!(store.ticket_key().expect("again"), keys[0]);
        keys[0]
    };
    let store = SledStore::open(dir.path(), 100).expect("reopen");
    assert_eq!(store.ticket_key().expect("after reopening"), key);
    assert_eq!(store.check().expect("check"), vec![]);
}

#[test]
fn a_damaged_ticket_key_is_reported_and_replaced_once_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = {
        let store = SledStore::open(dir.path(), 100).expect("open");
        store.ticket_key().expect("ticket key")
    };
    {
        let db = open_raw(dir.path());
        db.open_tree("secrets")
            .expect("tree")
            .insert("ofrep_ticket_key", b"short".as_slice())
            .expect("insert");
        db.flush().expect("flush");
    }
    let store = SledStore::open(dir.path(), 100).expect("reopen");
    let err = store.ticket_key().expect_err("a 5-byte key is not used");
    assert_eq!(
        err.to_string(),
        "corrupt record secrets/ofrep_ticket_key: 5 bytes, not 32"
    );
    let damage = store.check().expect("check");
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(damage[0].record, "secrets/ofrep_ticket_key");
    assert_eq!(damage[0].environment, None);
    store.remove_damaged(&damage[0]).expect("remove");
    let fresh = store.ticket_key().expect("a new key");
    assert_ne!(fresh, key);
    assert_eq!(store.check().expect("check"), vec![]);
}

/// The sled database in `dir`, once the store closed on it has released its lock (sled frees
/// it when its background thread stops, a moment after the last handle is dropped).
fn open_raw(dir: &std::path::Path) -> sled::Db {
    let mut tries = 0;
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(_) if tries < 500 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("sled: {e}"),
        }
    }
}
