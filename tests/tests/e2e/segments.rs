//! Segments: listed without their key lists, changed by patches of keys, and their history.

use flagstaff_proto::pb;
use flagstaff_tests::TestServer;
use tonic::Code;

use crate::fixtures::{create_environment, create_segment, refused, segment};

fn patch(add_included: &[&str], remove_included: &[&str]) -> pb::SegmentKeyPatch {
    pb::SegmentKeyPatch {
        segment: "staff".into(),
        add_included: add_included.iter().map(|k| (*k).to_owned()).collect(),
        remove_included: remove_included.iter().map(|k| (*k).to_owned()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn segment_keys_are_patched_without_sending_the_lists() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_segment(&mut admin, "staging", segment("staff", &["u1", "u2", "u3"])).await;

    let patched = admin
        .patch_segment_keys(pb::PatchSegmentKeysRequest {
            environment: "staging".into(),
            patch: Some(pb::SegmentKeyPatch {
                add_excluded: vec!["u9".into()],
                ..patch(&["u4", "u1"], &["u2", "u7"])
            }),
            expected_version: 1,
            comment: "team change".into(),
            ..Default::default()
        })
        .await
        .expect("patched")
        .into_inner();
    assert_eq!(patched.revision, 2);
    let summary = patched.segment.expect("summary");
    assert_eq!((summary.included_count, summary.excluded_count), (3, 1));
    assert!(summary.segment.expect("segment").included.is_empty());
    // Only what changed: u1 was already in, u7 was never in.
    assert_eq!(
        patched.applied.expect("applied"),
        pb::SegmentKeyPatch {
            add_excluded: vec!["u9".into()],
            ..patch(&["u4"], &["u2"])
        }
    );

    let stored = admin
        .get_segment(pb::GetSegmentRequest {
            environment: "staging".into(),
            key: "staff".into(),
        })
        .await
        .expect("segment")
        .into_inner();
    let stored_segment = stored.segment.expect("segment");
    assert_eq!(stored_segment.included, ["u1", "u3", "u4"]);
    assert_eq!(stored_segment.excluded, ["u9"]);
    assert_eq!(stored_segment.version, Some(2));
    assert_eq!(
        stored.last_change.expect("last change").comment,
        "team change"
    );

    let message = refused(
        admin
            .patch_segment_keys(pb::PatchSegmentKeysRequest {
                environment: "staging".into(),
                patch: Some(patch(&["u5"], &[])),
                expected_version: 1,
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
    assert_eq!(
        message,
        "segment \"staff\" is at version 2 in staging, not 1: someone changed it at revision \
         2, after version 1 was read; read it again and redo the change, or drop `version:` (the \
         expected version) to overwrite that change"
    );
}

#[tokio::test]
async fn segments_are_listed_without_keys_and_have_their_own_history() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_segment(&mut admin, "staging", segment("staff", &["u1", "u2"])).await;
    create_segment(&mut admin, "staging", segment("beta-testers", &["u3"])).await;
    admin
        .patch_segment_keys(pb::PatchSegmentKeysRequest {
            environment: "staging".into(),
            patch: Some(patch(&["u5"], &[])),
            ..Default::default()
        })
        .await
        .expect("patched");

    let listed = admin
        .list_segments(pb::ListSegmentsRequest {
            environment: "staging".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let summaries: Vec<(String, u32, usize)> = listed
        .segments
        .iter()
        .map(|e| {
            let summary = e.segment.as_ref().expect("summary");
            let segment = summary.segment.as_ref().expect("segment");
            (
                segment.key.clone(),
                summary.included_count,
                segment.included.len(),
            )
        })
        .collect();
    assert_eq!(
        summaries,
        [
            ("beta-testers".to_owned(), 1, 0),
            ("staff".to_owned(), 3, 0)
        ]
    );

    let history = admin
        .list_history(pb::ListHistoryRequest {
            environment: "staging".into(),
            segment: "staff".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    let revisions: Vec<u64> = history.entries.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, [3, 1]);
    let Some(pb::change::Document::Segment(change)) = &history.entries[0].changes[0].document
    else {
        panic!("a segment change");
    };
    assert_eq!(change.keys.as_ref().expect("keys").add_included, ["u5"]);
    let (before, after) = (
        change.before.as_ref().expect("before"),
        change.after.as_ref().expect("after"),
    );
    assert_eq!((before.included_count, after.included_count), (2, 3));
}

#[tokio::test]
async fn a_big_segment_is_promoted_by_the_server_as_one_audited_revision() {
    use prost::Message;
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    admin
        .create_environment(pb::CreateEnvironmentRequest {
            environment: "production".into(),
            protected: true,
        })
        .await
        .expect("environment");
    let keys: Vec<String> = (0..100_000).map(|i| format!("user-{i:06}")).collect();
    create_segment(
        &mut admin,
        "staging",
        pb::Segment {
            included: keys.clone(),
            excluded: keys[..100_000].iter().map(|k| format!("x{k}")).collect(),
            ..segment("everyone", &[])
        },
    )
    .await;
    let promote = || pb::PromoteSegmentRequest {
        environment: "production".into(),
        from_environment: "staging".into(),
        key: "everyone".into(),
        comment: "launch".into(),
        confirm_protected: true,
        ..Default::default()
    };
    // Nothing big travels: the request names the segment.
    assert!(promote().encoded_len() < 100);

    let message = refused(
        admin
            .promote_segment(pb::PromoteSegmentRequest {
                confirm_protected: false,
                ..promote()
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(message.contains("is protected"), "{message}");
    let message = refused(
        admin
            .promote_segment(pb::PromoteSegmentRequest {
                expected_version: 3,
                ..promote()
            })
            .await,
        Code::Aborted,
    );
    assert!(message.contains("\"everyone\""), "{message}");
    let message = refused(
        admin
            .promote_segment(pb::PromoteSegmentRequest {
                from_environment: "production".into(),
                ..promote()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("another environment"), "{message}");

    let promoted = admin
        .promote_segment(promote())
        .await
        .expect("promoted")
        .into_inner();
    assert_eq!(promoted.revision, 1);
    let summary = promoted.segment.expect("summary");
    assert_eq!(
        (summary.included_count, summary.excluded_count),
        (100_000, 100_000)
    );
    let stored = admin
        .get_segment(pb::GetSegmentRequest {
            environment: "production".into(),
            key: "everyone".into(),
        })
        .await
        .expect("segment")
        .into_inner()
        .segment
        .expect("segment");
    assert_eq!(stored.included, keys);
    assert_eq!(stored.version, Some(1));

    let history = admin
        .list_history(pb::ListHistoryRequest {
            environment: "production".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .entries;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].operation, "PromoteSegment");
    assert_eq!(history[0].comment, "launch");

    // Promoted again unchanged: no new revision.
    let again = admin
        .promote_segment(promote())
        .await
        .expect("promoted")
        .into_inner();
    assert_eq!(again.revision, 1);
}
