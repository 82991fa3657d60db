//! A flag's life through the Admin API: created, flipped, rolled out by percentage, reverted,
//! listed, promoted; and the history that records it.

use flagstaff_proto::pb;
use flagstaff_tests::{Admin, TestServer};
use serde_json::json;
use tonic::Code;

use crate::fixtures::{
    boolean_flag, client_with_token, create_environment, create_flag, create_segment, flag,
    get_flag, refused, requiring, revision, segment, split, targeting,
};

/// Creates `checkout` in staging, turns it off, rolls `on` out to 10% and reverts to the
/// first version: revisions 1 to 4, each with a comment.
async fn four_changes(admin: &mut Admin) {
    create_environment(admin, "staging").await;
    admin
        .create_flag(pb::CreateFlagRequest {
            environment: "staging".into(),
            flag: Some(boolean_flag("checkout")),
            comment: "new checkout".into(),
            confirm_protected: false,
        })
        .await
        .expect("created");
    admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "staging".into(),
            key: "checkout".into(),
            enabled: false,
            comment: "incident 42".into(),
            ..Default::default()
        })
        .await
        .expect("flipped");
    admin
        .set_default_serve(pb::SetDefaultServeRequest {
            environment: "staging".into(),
            key: "checkout".into(),
            serve: Some(split(&[("on", 10_000), ("off", 90_000)])),
            comment: "10% rollout".into(),
            ..Default::default()
        })
        .await
        .expect("split");
    admin
        .revert_flag(pb::RevertFlagRequest {
            environment: "staging".into(),
            key: "checkout".into(),
            to_version: 1,
            comment: "back to the start".into(),
            ..Default::default()
        })
        .await
        .expect("reverted");
}

#[tokio::test]
async fn a_flag_is_flipped_split_and_reverted() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    let created = admin
        .create_flag(pb::CreateFlagRequest {
            environment: "staging".into(),
            flag: Some(boolean_flag("checkout")),
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner();
    assert_eq!(created.revision, 1);
    assert_eq!(created.flag.expect("flag").version, Some(1));

    let flipped = admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "staging".into(),
            key: "checkout".into(),
            enabled: false,
            ..Default::default()
        })
        .await
        .expect("flipped")
        .into_inner();
    assert_eq!(flipped.revision, 2);
    let flag = flipped.flag.expect("flag");
    assert!(!flag.enabled);
    assert_eq!(flag.version, Some(2));

    // Flipping it to what it is already is no change: no revision.
    let again = admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "staging".into(),
            key: "checkout".into(),
            enabled: false,
            ..Default::default()
        })
        .await
        .expect("no-op")
        .into_inner();
    assert_eq!(again.revision, 2);
    assert_eq!(again.flag.expect("flag").version, Some(2));

    let rollout = split(&[("on", 10_000), ("off", 90_000)]);
    let split_response = admin
        .set_default_serve(pb::SetDefaultServeRequest {
            environment: "staging".into(),
            key: "checkout".into(),
            serve: Some(rollout.clone()),
            ..Default::default()
        })
        .await
        .expect("split")
        .into_inner();
    assert_eq!(split_response.revision, 3);
    let default = split_response.flag.expect("flag").default.expect("default");
    let Some(pb::serve::Serve::Split(stored)) = default.serve else {
        panic!("a split default: {default:?}");
    };
    assert_eq!(
        stored
            .weights
            .iter()
            .map(|w| (w.variant.as_str(), w.weight))
            .collect::<Vec<_>>(),
        [("on", 10_000), ("off", 90_000)]
    );
    assert_eq!(stored.bucket_by.as_deref(), Some("key"));

    let reverted = admin
        .revert_flag(pb::RevertFlagRequest {
            environment: "staging".into(),
            key: "checkout".into(),
            to_version: 1,
            ..Default::default()
        })
        .await
        .expect("reverted")
        .into_inner();
    assert_eq!(reverted.revision, 4);
    assert_eq!(
        reverted.flag.expect("flag"),
        pb::Flag {
            version: Some(4),
            ..boolean_flag("checkout")
        },
        "the first version, as a new change"
    );

    let message = refused(
        admin
            .revert_flag(pb::RevertFlagRequest {
                environment: "staging".into(),
                key: "checkout".into(),
                to_version: 99,
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(
        message,
        "flag \"checkout\" has no version 99 in the history of environment \"staging\""
    );
}

#[tokio::test]
async fn a_split_is_not_reshuffled_without_force() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_flag(&mut admin, "staging", boolean_flag("checkout")).await;
    let set = |serve: pb::Serve, force: bool| pb::SetDefaultServeRequest {
        environment: "staging".into(),
        key: "checkout".into(),
        serve: Some(serve),
        force,
        ..Default::default()
    };
    admin
        .set_default_serve(set(split(&[("on", 10_000), ("off", 90_000)]), false))
        .await
        .expect("10%");
    admin
        .set_default_serve(set(split(&[("on", 20_000), ("off", 80_000)]), false))
        .await
        .expect("20%: only the boundary moves");

    let message = refused(
        admin
            .set_default_serve(set(split(&[("off", 80_000), ("on", 20_000)]), false))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        message,
        "the new default split of flag \"checkout\" would reshuffle contexts: it orders the \
         variants off, on instead of on, off; set force to do it anyway"
    );
    admin
        .set_default_serve(set(split(&[("off", 80_000), ("on", 20_000)]), true))
        .await
        .expect("forced");
}

#[tokio::test]
async fn flags_are_listed_by_key_filtered_and_paged() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    for key in [
        "a-search",
        "b-checkout",
        "c-checkout",
        "d-cart",
        "e-checkout",
    ] {
        let tags = if key.ends_with("checkout") {
            vec!["payments"]
        } else {
            vec![]
        };
        create_flag(
            &mut admin,
            "staging",
            flag(json!({
                "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
                "off_variant": "off", "enabled": true, "default": {"variant": "off"},
                "tags": tags, "description": format!("The {key} flow"),
            })),
        )
        .await;
    }
    let list = |page_token: String| pb::ListFlagsRequest {
        environment: "staging".into(),
        tag: "payments".into(),
        text: "CHECK".into(),
        page_size: 2,
        page_token,
    };

    let first = admin
        .list_flags(list(String::new()))
        .await
        .expect("page 1")
        .into_inner();
    let keys = |page: &pb::ListFlagsResponse| -> Vec<String> {
        page.flags
            .iter()
            .map(|e| e.flag.as_ref().expect("flag").key.clone())
            .collect()
    };
    assert_eq!(keys(&first), ["b-checkout", "c-checkout"]);
    assert_eq!(first.revision, 5);
    let last_change = first.flags[0].last_change.as_ref().expect("last change");
    assert_eq!(
        (last_change.revision, last_change.actor.as_str()),
        (2, "admin")
    );
    assert!(!first.next_page_token.is_empty());

    let second = admin
        .list_flags(list(first.next_page_token.clone()))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(keys(&second), ["e-checkout"]);
    assert_eq!(second.next_page_token, "", "the last page");

    let message = refused(
        admin
            .list_flags(pb::ListFlagsRequest {
                tag: String::new(),
                ..list(first.next_page_token)
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        message,
        "page_token: not a next_page_token of this listing with these request fields; start \
         again with an empty page_token"
    );
}

#[tokio::test]
async fn history_lists_changes_newest_first_with_actor_and_comment() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    four_changes(&mut admin).await;

    let entries = admin
        .list_history(pb::ListHistoryRequest {
            environment: "staging".into(),
            flag: "checkout".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .entries;
    let summary: Vec<(u64, &str, &str)> = entries
        .iter()
        .map(|e| (e.revision, e.actor.as_str(), e.comment.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (4, "admin", "back to the start"),
            (3, "admin", "10% rollout"),
            (2, "admin", "incident 42"),
            (1, "admin", "new checkout"),
        ]
    );

    // Each entry holds the flag's documents before and after the change.
    let Some(pb::change::Document::Flag(flipped)) = &entries[2].changes[0].document else {
        panic!("a flag change");
    };
    let before = flipped.before.as_ref().expect("before");
    let after = flipped.after.as_ref().expect("after");
    assert_eq!((before.enabled, before.version), (true, Some(1)));
    assert_eq!((after.enabled, after.version), (false, Some(2)));
    let Some(pb::change::Document::Flag(created)) = &entries[3].changes[0].document else {
        panic!("a flag change");
    };
    assert_eq!(created.before, None, "created");
}

#[tokio::test]
async fn history_pages_through_every_entry_without_shifting() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    four_changes(&mut admin).await;
    let page = |page_token: String| pb::ListHistoryRequest {
        environment: "staging".into(),
        page_size: 3,
        page_token,
        ..Default::default()
    };

    let first = admin
        .list_history(page(String::new()))
        .await
        .expect("page 1")
        .into_inner();
    let revisions = |p: &pb::ListHistoryResponse| -> Vec<u64> {
        p.entries.iter().map(|e| e.revision).collect()
    };
    assert_eq!(revisions(&first), [4, 3, 2]);

    // A change committed while paging does not shift the next page.
    create_flag(&mut admin, "staging", boolean_flag("other")).await;
    let second = admin
        .list_history(page(first.next_page_token))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(revisions(&second), [1]);
    assert_eq!(second.next_page_token, "", "the last page");
}

#[tokio::test]
async fn promotion_is_refused_until_the_target_has_what_the_flag_uses() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_environment(&mut admin, "production").await;
    create_segment(&mut admin, "staging", segment("staff", &["u1"])).await;
    create_flag(&mut admin, "staging", boolean_flag("payments")).await;
    let mut checkout = targeting("checkout", "staff");
    checkout.prerequisites = requiring("checkout", "payments").prerequisites;
    create_flag(&mut admin, "staging", checkout.clone()).await;
    let promote = || pb::PromoteFlagRequest {
        environment: "production".into(),
        from_environment: "staging".into(),
        key: "checkout".into(),
        comment: "ship it".into(),
        ..Default::default()
    };

    let message = refused(
        admin.promote_flag(promote()).await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        message,
        "environment \"production\" lacks what flag \"checkout\" needs: prerequisite flag \
         \"payments\", segment \"staff\"; promote the prerequisite flags first: `flagstaff flag \
         promote payments --from staging --to production`; then copy the segments along with \
         the flag (`flagstaff flag promote checkout --from staging --to production \
         --with-segments`) or before it (`flagstaff segment promote staff --from staging --to \
         production`)"
    );
    // with_segments copies segments, never prerequisite flags.
    let message = refused(
        admin
            .promote_flag(pb::PromoteFlagRequest {
                with_segments: true,
                ..promote()
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        message.contains("needs: prerequisite flag \"payments\"; "),
        "{message}"
    );
    assert!(!message.contains("segment \"staff\""), "{message}");
    assert_eq!(revision(&mut admin, "production").await, 0);

    create_segment(&mut admin, "production", segment("staff", &["u1"])).await;
    admin
        .promote_flag(pb::PromoteFlagRequest {
            key: "payments".into(),
            ..promote()
        })
        .await
        .expect("the prerequisite first");
    let promoted = admin
        .promote_flag(promote())
        .await
        .expect("promoted")
        .into_inner();
    assert_eq!(promoted.revision, 3);
    assert_eq!(
        promoted.flag.expect("flag"),
        pb::Flag {
            version: Some(3),
            ..checkout
        }
    );
    assert_eq!(
        get_flag(&mut admin, "production", "checkout").await.version,
        Some(3)
    );
}

#[tokio::test]
async fn a_flag_is_promoted_with_its_segments_in_one_revision() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_environment(&mut admin, "production").await;
    create_segment(&mut admin, "staging", segment("staff", &["u1", "u2"])).await;
    create_flag(&mut admin, "staging", targeting("checkout", "staff")).await;
    create_segment(&mut admin, "production", segment("staff", &["u9"])).await;

    let promoted = admin
        .promote_flag(pb::PromoteFlagRequest {
            environment: "production".into(),
            from_environment: "staging".into(),
            key: "checkout".into(),
            with_segments: true,
            ..Default::default()
        })
        .await
        .expect("promoted")
        .into_inner();
    assert_eq!(promoted.revision, 2);
    assert_eq!(promoted.flag.expect("flag").version, Some(2));
    let segments: Vec<(String, u32, Option<u64>)> = promoted
        .segments
        .into_iter()
        .map(|s| {
            let doc = s.segment.expect("segment");
            (doc.key, s.included_count, doc.version)
        })
        .collect();
    assert_eq!(segments, [("staff".to_owned(), 2, Some(2))]);

    let history = admin
        .list_history(pb::ListHistoryRequest {
            environment: "production".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .entries;
    assert_eq!(history[0].revision, 2);
    assert_eq!(history[0].operation, "PromoteFlag");
    assert_eq!(history[0].changes.len(), 2, "{:?}", history[0].changes);
}

#[tokio::test]
async fn the_actor_of_a_change_is_the_name_of_the_token_that_made_it() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    let mut ci = client_with_token(&server, "deploy-bot", pb::Role::Editor, "staging").await;
    create_flag(&mut ci, "staging", boolean_flag("checkout")).await;

    let entries = admin
        .list_history(pb::ListHistoryRequest {
            environment: "staging".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, "deploy-bot");
    assert_eq!(entries[0].environment, "staging");
}
