//! The status codes of admin.proto's conventions, each with its message, and the promise that
//! a refused write changes nothing.

use flagstaff_proto::pb;
use flagstaff_tests::TestServer;
use serde_json::json;
use tonic::Code;

use crate::fixtures::{
    boolean_flag, create_environment, create_flag, create_segment, flag, get_flag, refused,
    requiring, revision, segment, targeting,
};

#[tokio::test]
async fn an_invalid_flag_is_refused_with_every_problem_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_flag(&mut admin, "staging", boolean_flag("existing")).await;

    let broken = flag(json!({
        "key": "checkout", "kind": "boolean", "variants": {"on": true, "off": "no"},
        "off_variant": "gone", "enabled": true,
        "rules": [{"id": "eu", "conditions": [{"attribute": "country", "op": "in", "values": ["NL"]}],
                   "serve": {"split": {"weights": [{"variant": "on", "weight": 10000},
                                                   {"variant": "off", "weight": 80000}]}}}],
        "default": {"variant": "maybe"},
    }));
    let message = refused(
        admin
            .create_flag(pb::CreateFlagRequest {
                environment: "staging".into(),
                flag: Some(broken),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        message.lines().collect::<Vec<_>>(),
        [
            "flags[checkout].variants[off]: value is string \"no\", but the flag's kind is boolean",
            "flags[checkout].off_variant: unknown variant \"gone\"; the flag's variants are on, off",
            "flags[checkout].rules[0].serve.split.weights: sum is 90000, must be 100000",
            "flags[checkout].default.variant: unknown variant \"maybe\"; the flag's variants are on, off",
        ]
    );
    assert_eq!(revision(&mut admin, "staging").await, 1, "nothing stored");
    refused(
        admin
            .get_flag(pb::GetFlagRequest {
                environment: "staging".into(),
                key: "checkout".into(),
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn a_request_that_lacks_a_field_or_does_not_convert_names_the_field() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;

    let message = refused(
        admin
            .create_flag(pb::CreateFlagRequest {
                environment: "staging".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(message, "missing required field \"flag\"");

    let no_kind = pb::Flag {
        kind: pb::Kind::Unspecified as i32,
        ..boolean_flag("checkout")
    };
    let message = refused(
        admin
            .create_flag(pb::CreateFlagRequest {
                environment: "staging".into(),
                flag: Some(no_kind),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        message,
        "flags[checkout].kind: must be set, got KIND_UNSPECIFIED"
    );

    let message = refused(
        admin
            .set_default_serve(pb::SetDefaultServeRequest {
                environment: "staging".into(),
                key: "checkout".into(),
                serve: Some(pb::Serve { serve: None }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        message,
        "serve: must have one of variant or split, got none"
    );
    assert_eq!(revision(&mut admin, "staging").await, 0);
}

#[tokio::test]
async fn what_does_not_exist_is_not_found() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;

    let message = refused(
        admin
            .get_flag(pb::GetFlagRequest {
                environment: "staging".into(),
                key: "nope".into(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(message, "no flag \"nope\" in environment \"staging\"");

    let message = refused(
        admin
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: "staging".into(),
                key: "nope".into(),
                enabled: true,
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(message, "no flag \"nope\" in environment \"staging\"");

    let message = refused(
        admin
            .get_segment(pb::GetSegmentRequest {
                environment: "staging".into(),
                key: "nope".into(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(message, "no segment \"nope\" in environment \"staging\"");

    let message = refused(
        admin
            .export(pb::ExportRequest {
                environment: "nowhere".into(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(message, "no environment \"nowhere\"");

    let message = refused(
        admin
            .revoke_token(pb::RevokeTokenRequest { id: "0000".into() })
            .await,
        Code::NotFound,
    );
    assert_eq!(message, "no token \"0000\"");
}

#[tokio::test]
async fn creating_what_exists_is_already_exists() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_flag(&mut admin, "staging", boolean_flag("checkout")).await;
    create_segment(&mut admin, "staging", segment("staff", &["u1"])).await;

    let message = refused(
        admin
            .create_environment(pb::CreateEnvironmentRequest {
                environment: "staging".into(),
                protected: false,
            })
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(message, "environment \"staging\" already exists");

    let message = refused(
        admin
            .create_flag(pb::CreateFlagRequest {
                environment: "staging".into(),
                flag: Some(boolean_flag("checkout")),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        message,
        "flag \"checkout\" already exists in environment \"staging\""
    );

    let message = refused(
        admin
            .create_segment(pb::CreateSegmentRequest {
                environment: "staging".into(),
                segment: Some(segment("staff", &[])),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        message,
        "segment \"staff\" already exists in environment \"staging\""
    );

    let message = refused(
        admin
            .create_token(pb::CreateTokenRequest {
                name: "admin".into(),
                role: pb::Role::Admin as i32,
                environment: String::new(),
            })
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        message,
        "a token named \"admin\" exists; revoke it first or choose another name"
    );
}

#[tokio::test]
async fn a_stale_version_is_aborted_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_flag(&mut admin, "staging", boolean_flag("checkout")).await; // version 1
    admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "staging".into(),
            key: "checkout".into(),
            enabled: false,
            ..Default::default()
        })
        .await
        .expect("flipped"); // version 2

    // An edit made from the document read at version 1.
    let stale = pb::Flag {
        description: Some("edited".into()),
        version: Some(1),
        ..boolean_flag("checkout")
    };
    let message = refused(
        admin
            .update_flag(pb::UpdateFlagRequest {
                environment: "staging".into(),
                flag: Some(stale),
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
    assert_eq!(
        message,
        "flag \"checkout\" is at version 2 in staging, not 1: someone changed it at revision \
         2, after version 1 was read; read it again and redo the change, or drop `version:` (the \
         expected version) to overwrite that change"
    );

    let message = refused(
        admin
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: "staging".into(),
                key: "checkout".into(),
                enabled: true,
                expected_version: 1,
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
    assert_eq!(
        message,
        "flag \"checkout\" is at version 2 in staging, not 1: someone changed it at revision \
         2, after version 1 was read; read it again and redo the change, or drop `version:` (the \
         expected version) to overwrite that change"
    );

    let message = refused(
        admin
            .delete_flag(pb::DeleteFlagRequest {
                environment: "staging".into(),
                key: "missing".into(),
                expected_version: 2,
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
    assert_eq!(
        message,
        "flag \"missing\" does not exist in staging, so it is not at version 2: it was \
         deleted since, or the document was read in another environment; drop `version:` (the \
         expected version) to create the flag whatever its version, or copy it with \
         `flagstaff flag promote`"
    );

    assert_eq!(revision(&mut admin, "staging").await, 2, "nothing stored");
    let stored = get_flag(&mut admin, "staging", "checkout").await;
    assert_eq!(stored.description, None);
    assert!(!stored.enabled);

    // expected_version 0 is no check; the current version passes.
    admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "staging".into(),
            key: "checkout".into(),
            enabled: true,
            expected_version: 2,
            ..Default::default()
        })
        .await
        .expect("the current version");
}

#[tokio::test]
async fn deleting_what_is_still_used_is_a_failed_precondition_naming_the_users() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_segment(&mut admin, "staging", segment("staff", &["u1"])).await;
    create_flag(&mut admin, "staging", boolean_flag("payments")).await;
    create_flag(&mut admin, "staging", requiring("checkout", "payments")).await;
    create_flag(&mut admin, "staging", requiring("cart", "payments")).await;
    create_flag(&mut admin, "staging", targeting("beta", "staff")).await;
    let before = revision(&mut admin, "staging").await;

    let message = refused(
        admin
            .delete_flag(pb::DeleteFlagRequest {
                environment: "staging".into(),
                key: "payments".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        message,
        "flag \"payments\" is a prerequisite of \"cart\", \"checkout\"; remove it from them first"
    );

    let message = refused(
        admin
            .delete_segment(pb::DeleteSegmentRequest {
                environment: "staging".into(),
                key: "staff".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        message,
        "segment \"staff\" is used by the rules of \"beta\"; remove it from them first"
    );

    let message = refused(
        admin
            .delete_environment(pb::DeleteEnvironmentRequest {
                environment: "staging".into(),
                confirm_protected: false,
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        message,
        "environment \"staging\" still holds 4 flags and 1 segments; delete them first"
    );
    assert_eq!(
        revision(&mut admin, "staging").await,
        before,
        "nothing changed"
    );
}

#[tokio::test]
async fn an_unconfirmed_write_to_a_protected_environment_is_refused() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    admin
        .create_environment(pb::CreateEnvironmentRequest {
            environment: "production".into(),
            protected: true,
        })
        .await
        .expect("environment");
    let create = |confirm_protected| pb::CreateFlagRequest {
        environment: "production".into(),
        flag: Some(boolean_flag("checkout")),
        confirm_protected,
        ..Default::default()
    };

    let message = refused(
        admin.create_flag(create(false)).await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        message,
        "environment \"production\" is protected: confirm the write (the CLI asks, or takes --yes)"
    );
    assert_eq!(
        revision(&mut admin, "production").await,
        0,
        "nothing stored"
    );

    // A dry run writes nothing, so it needs no confirmation.
    let dry_run = admin
        .apply(pb::ApplyRequest {
            environment: "production".into(),
            source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                flags: vec![boolean_flag("checkout")],
                segments: Vec::new(),
            })),
            dry_run: true,
            ..Default::default()
        })
        .await
        .expect("dry run")
        .into_inner();
    assert!(dry_run.changed);

    admin
        .create_flag(create(true))
        .await
        .expect("a confirmed write");

    let message = refused(
        admin
            .delete_environment(pb::DeleteEnvironmentRequest {
                environment: "production".into(),
                confirm_protected: false,
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        message,
        "environment \"production\" is protected: confirm the write (the CLI asks, or takes --yes)"
    );
}
