//! Backups move everything a server keeps from one store to the other and back: every read,
//! the SDK's evaluations and the history are the same afterwards; only the epochs are new.

use flagstaff::Context;
use flagstaff_proto::pb;
use flagstaff_server::backup;
use flagstaff_server::storage::{PgStore, SledStore};
use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::{store_kind, Admin, StoreKind, TestServer, PATIENCE};

use crate::fixtures::{
    boolean_flag, create_environment, create_flag, create_segment, sdk_client, sdk_token, segment,
    serve_on, start_guarded, targeting,
};

/// Keys in the big segment.
const SEGMENT_KEYS: usize = 100_000;

/// Everything a release manager and an SDK can read of `production`.
struct Reads {
    export: pb::Document,
    flags: Vec<pb::FlagEntry>,
    segment: pb::Segment,
    history: Vec<pb::AuditEntry>,
    flag_history: Vec<pb::AuditEntry>,
    rollout: pb::RolloutPlan,
    tokens: Vec<pb::Token>,
    /// `checkout` and `beta-only` for 200 users, through the SDK.
    evaluations: Vec<(bool, bool)>,
}

async fn read_everything(server: &TestServer, sdk: &str) -> Reads {
    let mut admin = server.admin().await;
    let env = || "production".to_owned();
    let export = admin
        .export(pb::ExportRequest { environment: env() })
        .await
        .expect("export")
        .into_inner()
        .document
        .expect("a document");
    let flags = admin
        .list_flags(pb::ListFlagsRequest {
            environment: env(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("flags")
        .into_inner()
        .flags
        .into_iter()
        // Usage moves as the SDKs of each read report their evaluations.
        .map(|entry| pb::FlagEntry {
            usage: None,
            ..entry
        })
        .collect();
    let segment = admin
        .get_segment(pb::GetSegmentRequest {
            environment: env(),
            key: "beta".into(),
        })
        .await
        .expect("segment")
        .into_inner()
        .segment
        .expect("a segment");
    let history = all_history(&mut admin, "").await;
    let flag_history = all_history(&mut admin, "checkout").await;
    let rollout = crate::fixtures::plan(&mut admin, "checkout").await;
    let tokens = admin
        .list_tokens(pb::ListTokensRequest {})
        .await
        .expect("tokens")
        .into_inner()
        .tokens;

    let client = sdk_client(server.endpoint(), sdk, "backup-test");
    client.wait_ready(PATIENCE).await.expect("the SDK is ready");
    let evaluations = (0..200)
        .map(|i| {
            let ctx = Context::new(format!("user-{i}"));
            (
                client.bool_value("checkout", &ctx, false),
                client.bool_value("beta-only", &ctx, false),
            )
        })
        .collect();
    Reads {
        export,
        flags,
        segment,
        history,
        flag_history,
        rollout,
        tokens,
        evaluations,
    }
}

/// Asserts `after` reads as `before` did, naming the first part that differs (the parts are
/// too big to print whole: a segment of 100,000 keys).
fn assert_same(after: &Reads, before: &Reads, store: &str) {
    let parts: [(&str, bool); 8] = [
        ("the export", after.export == before.export),
        ("the flag list", after.flags == before.flags),
        ("the segment", after.segment == before.segment),
        ("the history", after.history == before.history),
        (
            "the flag's history",
            after.flag_history == before.flag_history,
        ),
        ("the rollout plan", after.rollout == before.rollout),
        ("the tokens", after.tokens == before.tokens),
        (
            "the SDK's evaluations",
            after.evaluations == before.evaluations,
        ),
    ];
    for (part, same) in parts {
        assert!(same, "{part} differs on {store}");
    }
}

/// Every page of the history of `production` (of `flag` when not empty).
async fn all_history(admin: &mut Admin, flag: &str) -> Vec<pb::AuditEntry> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_history(pb::ListHistoryRequest {
                environment: "production".into(),
                flag: flag.into(),
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await
            .expect("history")
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return entries;
        }
        page_token = page.next_page_token;
    }
}

/// The epoch the server gives `production`.
fn epoch(server: &TestServer) -> String {
    server
        .environments
        .get("production")
        .expect("production")
        .epoch
        .clone()
}

/// A fresh data directory holding the admin token of `from`: a restored store keeps its
/// tokens, so no new admin token is minted.
fn data_dir_with_token(from: &std::path::Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("data directory");
    std::fs::copy(from.join("admin.token"), dir.path().join("admin.token")).expect("token");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_populated_sled_store_moves_to_postgres_and_back_with_every_read_the_same() {
    // It moves between both stores itself: once, in the sled binary.
    if store_kind() != StoreKind::Sled {
        return;
    }
    let Some(database) = fresh_database() else {
        return;
    };
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let keys: Vec<String> = (0..SEGMENT_KEYS).map(|i| format!("user-{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    create_segment(&mut admin, "production", segment("beta", &key_refs)).await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    create_flag(&mut admin, "production", targeting("beta-only", "beta")).await;
    for on in [true, false, true] {
        serve_on(&mut admin, "checkout", on).await;
    }
    admin
        .patch_segment_keys(pb::PatchSegmentKeysRequest {
            environment: "production".into(),
            patch: Some(pb::SegmentKeyPatch {
                segment: "beta".into(),
                remove_included: vec!["user-7".into()],
                add_excluded: vec!["user-8".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("patched");
    serve_on(&mut admin, "checkout", false).await;
    start_guarded(&mut admin).await;
    let sdk = sdk_token(&server, "checkout-service", "production").await;
    let before = read_everything(&server, &sdk).await;
    assert_eq!(before.segment.included.len(), SEGMENT_KEYS - 1);
    assert!(before.history.len() >= 8, "{}", before.history.len());
    let sled_epoch = epoch(&server);
    let sled_dir = server.stop().await;

    // sled → PostgreSQL.
    let file = tempfile::tempdir().expect("backup directory");
    let first = file.path().join("from-sled.backup");
    let store = SledStore::open(sled_dir.path(), 10_000).expect("the sled store");
    let written = backup::write(&store, "sled", &first).expect("backed up");
    drop(store);
    assert_eq!(written.environments, 1);
    let read = backup::read(std::io::BufReader::new(
        std::fs::File::open(&first).expect("the backup"),
    ))
    .expect("reads back");
    let pg = PgStore::open(&database, None, 10_000).expect("the PostgreSQL store");
    backup::restore(&pg, &read).expect("restored into PostgreSQL");
    drop(pg);
    let pg_dir = data_dir_with_token(sled_dir.path());
    let server = TestServer::builder()
        .data_dir(pg_dir)
        .database_url(database.clone())
        .start()
        .await;
    assert_eq!(server.database_url.as_deref(), Some(database.as_str()));
    let on_postgres = read_everything(&server, &sdk).await;
    assert_same(&on_postgres, &before, "PostgreSQL");
    let pg_epoch = epoch(&server);
    assert_ne!(
        pg_epoch, sled_epoch,
        "a restored environment has a new epoch"
    );
    let pg_dir = server.stop().await;

    // PostgreSQL → sled.
    let second = file.path().join("from-postgres.backup");
    let pg = PgStore::open(&database, None, 10_000).expect("the PostgreSQL store");
    backup::write(&pg, "postgres", &second).expect("backed up");
    drop(pg);
    let read = backup::read(std::io::BufReader::new(
        std::fs::File::open(&second).expect("the backup"),
    ))
    .expect("reads back");
    let sled_again = data_dir_with_token(pg_dir.path());
    let store = SledStore::open(sled_again.path(), 10_000).expect("a new sled store");
    backup::restore(&store, &read).expect("restored into sled");
    drop(store);
    let server = TestServer::builder().data_dir(sled_again).start().await;
    let on_sled = read_everything(&server, &sdk).await;
    assert_same(&on_sled, &before, "sled, back from PostgreSQL");
    assert_ne!(epoch(&server), pg_epoch);
}

/// Asks `server` for a backup over the Admin API, with `admin`'s token.
async fn backup_over_the_api(admin: &mut Admin) -> Result<Vec<u8>, tonic::Status> {
    let mut chunks = admin.backup(pb::BackupRequest {}).await?.into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_streams_a_backup_with_each_environment_as_of_one_revision() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let environments = ["production", "staging", "dev"];
    for environment in environments {
        create_environment(&mut admin, environment).await;
        for key in ["checkout", "search", "banner"] {
            create_flag(&mut admin, environment, boolean_flag(key)).await;
        }
    }
    // Writes go on in every environment while the backup is taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for environment in environments {
        let (mut admin, stop) = (server.admin().await, stop.clone());
        writers.push(tokio::spawn(async move {
            let mut writes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for key in ["checkout", "search", "banner"] {
                    admin
                        .set_flag_enabled(pb::SetFlagEnabledRequest {
                            environment: environment.into(),
                            key: key.into(),
                            enabled: writes % 2 == 1,
                            ..Default::default()
                        })
                        .await
                        .expect("written");
                    writes += 1;
                }
            }
            writes
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let bytes = backup_over_the_api(&mut admin).await.expect("a backup");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        assert!(writer.await.expect("writer") > 0);
    }

    let backup = backup::read(bytes.as_slice()).expect("a whole backup");
    assert_eq!(backup.summary.environments, 3);
    for env in &backup.environments {
        let record = env.record.as_ref().expect("record");
        // Documents, change log and audit log all end at the environment's revision...
        assert_eq!(env.audit.last().map(|a| a.revision), Some(record.revision));
        assert_eq!(
            env.changes.last().map(|c| c.revision),
            Some(record.revision)
        );
        // ...and each flag is what the last audit entry touching it left.
        for flag in &env.documents.flags {
            let last = env
                .audit
                .iter()
                .rev()
                .flat_map(|a| &a.changes)
                .find(|c| c.is_flag(&flag.key))
                .expect("the flag's history");
            match last {
                flagstaff_server::storage::AuditChange::Flag { after, .. } => {
                    assert_eq!(after.as_deref(), Some(flag), "{}", record.key)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    // What it holds restores into an empty store and serves.
    let dir = tempfile::tempdir().expect("data directory");
    {
        let store = flagstaff_tests::open_store(dir.path());
        backup::restore(&store, &backup).expect("restored");
    }
    std::fs::copy(
        server.data_dir.path().join("admin.token"),
        dir.path().join("admin.token"),
    )
    .expect("admin token");
    let restored = TestServer::builder().data_dir(dir).start().await;
    let mut restored_admin = restored.admin().await;
    for env in &backup.environments {
        let record = env.record.as_ref().expect("record");
        let exported = restored_admin
            .export(pb::ExportRequest {
                environment: record.key.clone(),
            })
            .await
            .expect("export")
            .into_inner()
            .document
            .expect("document");
        assert_eq!(exported.flags.len(), 3);
        assert_eq!(epoch_of(&restored, &record.key), record.epoch);
        assert_ne!(
            record.epoch,
            epoch_of(&server, &record.key),
            "restored with a new epoch"
        );
    }

    // Only an admin may take one.
    let editor = crate::fixtures::token_of(&server, "ci", pb::Role::Editor, "staging").await;
    let mut editor = server.admin_with(Some(&editor)).await;
    let refused = backup_over_the_api(&mut editor)
        .await
        .expect_err("an editor may not");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}

/// The epoch a server gives `environment`.
fn epoch_of(server: &TestServer, environment: &str) -> String {
    server
        .environments
        .get(environment)
        .expect("environment")
        .epoch
        .clone()
}
