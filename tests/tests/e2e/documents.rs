//! Whole documents: Export, and Apply of documents or an export, in one revision, all or
//! nothing, for real or as a dry run.

use flagstaff_proto::pb;
use flagstaff_tests::{Admin, TestServer};
use tonic::Code;

use crate::fixtures::{
    boolean_flag, create_environment, create_flag, create_segment, refused, requiring, revision,
    segment, targeting,
};

/// Staging with a segment and three flags, two of which use the others.
async fn staging(admin: &mut Admin) {
    create_environment(admin, "staging").await;
    create_segment(admin, "staging", segment("staff", &["u1", "u2"])).await;
    create_flag(admin, "staging", boolean_flag("payments")).await;
    create_flag(admin, "staging", requiring("checkout", "payments")).await;
    create_flag(admin, "staging", targeting("beta", "staff")).await;
}

async fn export(admin: &mut Admin, environment: &str) -> pb::ExportResponse {
    admin
        .export(pb::ExportRequest {
            environment: environment.into(),
        })
        .await
        .expect("export")
        .into_inner()
}

fn apply_document(environment: &str, document: pb::Document) -> pb::ApplyRequest {
    pb::ApplyRequest {
        environment: environment.into(),
        source: Some(pb::apply_request::Source::Document(document)),
        ..Default::default()
    }
}

fn changed_keys(response: &pb::ApplyResponse) -> Vec<String> {
    response
        .changes
        .iter()
        .map(|c| match &c.document {
            Some(pb::change::Document::Flag(f)) => format!("flag {}", f.key),
            Some(pb::change::Document::Segment(s)) => format!("segment {}", s.key),
            None => "nothing".to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn an_export_is_every_document_by_key_without_versions() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    staging(&mut admin).await;

    let exported = export(&mut admin, "staging").await;
    assert_eq!(exported.revision, 4);
    let document = exported.document.expect("document");
    assert_eq!(document.environment, "staging");
    assert_eq!(
        document
            .flags
            .iter()
            .map(|f| f.key.as_str())
            .collect::<Vec<_>>(),
        ["beta", "checkout", "payments"]
    );
    assert!(document.flags.iter().all(|f| f.version.is_none()));
    assert_eq!(document.segments, [segment("staff", &["u1", "u2"])]);
}

#[tokio::test]
async fn an_export_applies_to_another_environment_in_one_revision() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    staging(&mut admin).await;
    create_environment(&mut admin, "production").await;

    let document = export(&mut admin, "staging")
        .await
        .document
        .expect("document");
    let applied = admin
        .apply(pb::ApplyRequest {
            comment: "copy staging".into(),
            ..apply_document("production", document.clone())
        })
        .await
        .expect("applied")
        .into_inner();
    assert_eq!(applied.revision, 1, "one revision for every document");
    assert!(applied.changed);
    assert_eq!(
        changed_keys(&applied),
        [
            "flag beta",
            "flag checkout",
            "flag payments",
            "segment staff"
        ]
    );
    let Some(pb::change::Document::Segment(staff)) = &applied.changes[3].document else {
        panic!("a segment change");
    };
    let after = staff.after.as_ref().expect("after");
    assert_eq!(after.included_count, 2);
    assert!(after.segment.as_ref().expect("segment").included.is_empty());
    assert_eq!(
        staff.keys.as_ref().expect("keys").add_included,
        ["u1", "u2"]
    );

    let copied = export(&mut admin, "production").await;
    assert_eq!(copied.revision, 1);
    assert_eq!(
        copied.document.expect("document"),
        pb::Document {
            environment: "production".into(),
            ..document.clone()
        }
    );

    // Applying the same document again changes nothing and makes no revision.
    let again = admin
        .apply(apply_document("production", document))
        .await
        .expect("applied")
        .into_inner();
    assert_eq!(again.revision, 1);
    assert!(!again.changed);
    assert_eq!(again.unchanged_flags, ["beta", "checkout", "payments"]);
    assert_eq!(again.unchanged_segments, ["staff"]);
}

#[tokio::test]
async fn a_dry_run_reports_what_would_change_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    staging(&mut admin).await;
    let before = export(&mut admin, "staging").await;

    let mut document = before.document.clone().expect("document");
    document.flags[0].enabled = false; // beta
    document.flags.push(boolean_flag("new-flag"));
    let dry_run = admin
        .apply(pb::ApplyRequest {
            dry_run: true,
            ..apply_document("staging", document)
        })
        .await
        .expect("dry run")
        .into_inner();
    assert!(dry_run.changed);
    assert_eq!(dry_run.revision, 4, "the current revision");
    assert_eq!(changed_keys(&dry_run), ["flag beta", "flag new-flag"]);
    let Some(pb::change::Document::Flag(beta)) = &dry_run.changes[0].document else {
        panic!("a flag change");
    };
    assert_eq!(
        beta.after.as_ref().expect("after").version,
        Some(5),
        "the version the apply would give"
    );
    assert_eq!(dry_run.unchanged_flags, ["checkout", "payments"]);

    assert_eq!(
        export(&mut admin, "staging").await,
        before,
        "nothing changed"
    );
}

#[tokio::test]
async fn apply_is_all_or_nothing() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    staging(&mut admin).await;

    // The second flag needs a prerequisite that exists nowhere: neither flag is written.
    let message = refused(
        admin
            .apply(pb::ApplyRequest {
                environment: "staging".into(),
                source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                    flags: vec![boolean_flag("fine"), requiring("broken", "ghost")],
                    segments: Vec::new(),
                })),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        message,
        "flags[broken].prerequisites[0].flag: unknown flag \"ghost\""
    );
    assert_eq!(revision(&mut admin, "staging").await, 4, "nothing stored");
}

#[tokio::test]
async fn apply_with_prune_makes_the_environment_equal_to_the_document() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    staging(&mut admin).await;

    let document = pb::Document {
        environment: "anything".into(),
        flags: vec![boolean_flag("payments"), boolean_flag("fresh")],
        segments: Vec::new(),
    };
    let pruned = admin
        .apply(pb::ApplyRequest {
            prune: true,
            ..apply_document("staging", document)
        })
        .await
        .expect("pruned")
        .into_inner();
    assert_eq!(pruned.revision, 5);
    assert_eq!(
        changed_keys(&pruned),
        ["flag beta", "flag checkout", "flag fresh", "segment staff"]
    );
    assert_eq!(pruned.unchanged_flags, ["payments"]);
    let exported = export(&mut admin, "staging")
        .await
        .document
        .expect("document");
    assert_eq!(
        exported.flags,
        [boolean_flag("fresh"), boolean_flag("payments")]
    );
    assert!(exported.segments.is_empty());

    let message = refused(
        admin
            .apply(pb::ApplyRequest {
                environment: "staging".into(),
                source: Some(pb::apply_request::Source::Documents(
                    pb::DocumentSet::default(),
                )),
                prune: true,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        message,
        "prune: only allowed with a whole document (source document), not with documents"
    );
}

#[tokio::test]
async fn client_side_survives_a_restart_and_an_export_and_is_written_only_when_true() {
    use flagstaff_engine::{parse_document, to_text, Document, Format};

    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    let mut banner = boolean_flag("banner");
    banner.client_side = true;
    let created = create_flag(&mut admin, "staging", banner).await;
    assert_eq!(created, 1);
    create_flag(&mut admin, "staging", boolean_flag("checkout")).await;
    let client_side = |document: &pb::Document| -> Vec<(String, bool)> {
        document
            .flags
            .iter()
            .map(|f| (f.key.clone(), f.client_side))
            .collect()
    };
    let expected = [("banner".to_owned(), true), ("checkout".to_owned(), false)];

    // Read back after a restart, as accepted.
    let before = export(&mut admin, "staging")
        .await
        .document
        .expect("document");
    assert_eq!(client_side(&before), expected);
    let data_dir = server.stop().await;
    let server = TestServer::builder().data_dir(data_dir).start().await;
    let mut admin = server.admin().await;
    let after = export(&mut admin, "staging")
        .await
        .document
        .expect("document");
    assert_eq!(after, before);

    // The export format names it once, for the flag that has it.
    let document = Document::try_from(after).expect("an export document");
    for format in [Format::Yaml, Format::Json] {
        let text = to_text(&document, format);
        assert_eq!(text.matches("client_side").count(), 1, "{text}");
        let checkout = text.find("checkout").expect("checkout is exported");
        assert!(
            !text[checkout..].contains("client_side"),
            "written for banner only: {text}"
        );

        // Imported from the text into another environment, it is the same.
        let environment = match format {
            Format::Yaml => "from-yaml",
            Format::Json => "from-json",
        };
        create_environment(&mut admin, environment).await;
        let read = parse_document(&text).expect("the export reads back");
        admin
            .apply(apply_document(environment, pb::Document::from(&read)))
            .await
            .expect("imported");
        let imported = export(&mut admin, environment)
            .await
            .document
            .expect("document");
        assert_eq!(client_side(&imported), expected);
    }
}
