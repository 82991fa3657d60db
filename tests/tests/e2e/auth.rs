//! Who may call what.

use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_tests::TestServer;
use tonic::Code;

use crate::fixtures::{
    boolean_flag, client_with_token, create_environment, create_flag, refused, revision,
};

/// How long a refused Watch may take to say so before the test gives up (a hang, not a
/// measurement).
const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn calls_need_a_valid_token() {
    let server = TestServer::start().await;
    let mut anonymous = server.admin_with(None).await;
    let status = anonymous
        .list_environments(pb::ListEnvironmentsRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "missing authorization metadata: send `authorization: Bearer <token>`"
    );

    let mut wrong = server.admin_with(Some("fs_not-a-token")).await;
    let status = wrong
        .list_environments(pb::ListEnvironmentsRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "unknown token");
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let created = admin
        .create_token(pb::CreateTokenRequest {
            name: "ci".into(),
            role: pb::Role::Admin as i32,
            environment: String::new(),
        })
        .await
        .expect("token")
        .into_inner();
    let mut ci = server.admin_with(Some(&created.secret)).await;
    ci.list_environments(pb::ListEnvironmentsRequest::default())
        .await
        .expect("works before revocation");

    let id = created.token.expect("token").id;
    admin
        .revoke_token(pb::RevokeTokenRequest { id })
        .await
        .expect("revoked");
    let message = refused(
        ci.list_environments(pb::ListEnvironmentsRequest::default())
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(message, "the token has been revoked");
}

#[tokio::test]
async fn a_token_outside_its_role_or_environment_is_permission_denied() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_environment(&mut admin, "production").await;
    let mut editor = client_with_token(&server, "ci", pb::Role::Editor, "staging").await;

    let message = refused(
        editor
            .create_flag(pb::CreateFlagRequest {
                environment: "production".into(),
                flag: Some(boolean_flag("checkout")),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        message,
        "token \"ci\" (Editor) may not write to environment \"production\""
    );
    let message = refused(
        editor.list_tokens(pb::ListTokensRequest::default()).await,
        Code::PermissionDenied,
    );
    assert_eq!(
        message,
        "token \"ci\" (Editor) may not manage environments and tokens"
    );
    assert_eq!(
        revision(&mut admin, "production").await,
        0,
        "nothing stored"
    );
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_bound_to_an_existing_environment() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    let created = admin
        .create_token(pb::CreateTokenRequest {
            name: "billing-sdk".into(),
            role: pb::Role::Sdk as i32,
            environment: "staging".into(),
        })
        .await
        .expect("token")
        .into_inner();
    assert!(created.secret.starts_with("fs_"));

    let tokens = admin
        .list_tokens(pb::ListTokensRequest::default())
        .await
        .expect("list")
        .into_inner()
        .tokens;
    let listed: Vec<(&str, i32, &str)> = tokens
        .iter()
        .map(|t| (t.name.as_str(), t.role, t.environment.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            ("admin", pb::Role::Admin as i32, ""),
            ("billing-sdk", pb::Role::Sdk as i32, "staging"),
        ]
    );
    // The message has no field that could carry a secret or its hash.
    assert_eq!(tokens[1], created.token.expect("token"));
    // Who created each: the admin token made the sdk one; flagstaffd minted the admin one.
    let creators: Vec<&str> = tokens.iter().map(|t| t.created_by.as_str()).collect();
    assert_eq!(creators, ["", "admin"]);

    let message = refused(
        admin
            .create_token(pb::CreateTokenRequest {
                name: "ghost".into(),
                role: pb::Role::Editor as i32,
                environment: "nowhere".into(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(message, "no environment \"nowhere\"");
    let message = refused(
        admin
            .create_token(pb::CreateTokenRequest {
                name: "ghost".into(),
                role: pb::Role::Unspecified as i32,
                environment: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(message, "role: must be set, got ROLE_UNSPECIFIED");
}

#[tokio::test]
async fn a_client_token_passes_no_grpc_check() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let mut flag = boolean_flag("checkout");
    flag.client_side = true;
    create_flag(&mut admin, "production", flag).await;
    let created = admin
        .create_token(pb::CreateTokenRequest {
            name: "web".into(),
            role: pb::Role::Client as i32,
            environment: "production".into(),
        })
        .await
        .expect("a client token for its environment")
        .into_inner();
    assert_eq!(
        created.token.as_ref().map(|t| t.role),
        Some(pb::Role::Client as i32)
    );

    // Watch, in its own environment.
    let mut sync = server.sync_with(&created.secret).await;
    let subscribe = pb::WatchRequest {
        request: Some(pb::watch_request::Request::Subscribe(pb::Subscribe {
            instance_id: "browser-1".into(),
            ..Default::default()
        })),
    };
    let status = match sync
        .watch(tokio_stream::StreamExt::chain(
            tokio_stream::iter([subscribe]),
            tokio_stream::pending(),
        ))
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut inbound = response.into_inner();
            loop {
                match tokio::time::timeout(LIMIT, inbound.message()).await {
                    Ok(Ok(Some(_))) => continue,
                    Ok(Ok(None)) => panic!("the stream ended without an error"),
                    Ok(Err(status)) => break status,
                    Err(_) => panic!("no answer within {LIMIT:?}"),
                }
            }
        }
    };
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert_eq!(
        status.message(),
        "token \"web\" (Client) may not sync environment \"production\""
    );

    // ReportMetrics.
    let message = refused(
        sync.report_metrics(pb::ReportMetricsRequest {
            instance_id: "browser-1".into(),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        message,
        "token \"web\" (Client) may not sync environment \"production\""
    );

    // Admin reads, even of the client_side flag in its own environment, and token management.
    let mut web = server.admin_with(Some(&created.secret)).await;
    let message = refused(
        web.get_flag(pb::GetFlagRequest {
            environment: "production".into(),
            key: "checkout".into(),
        })
        .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        message,
        "token \"web\" (Client) may not read environment \"production\""
    );
    refused(
        web.list_tokens(pb::ListTokensRequest::default()).await,
        Code::PermissionDenied,
    );

    // Like sdk and editor tokens, it needs its environment.
    let message = refused(
        admin
            .create_token(pb::CreateTokenRequest {
                name: "nowhere".into(),
                role: pb::Role::Client as i32,
                environment: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(message, "a client token needs the environment it may use");
}

#[tokio::test]
async fn a_client_token_is_shown_again_other_tokens_never() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let create = |name: &str, role: pb::Role| pb::CreateTokenRequest {
        name: name.into(),
        role: role as i32,
        environment: "production".into(),
    };
    let created = admin
        .create_token(create("web", pb::Role::Client))
        .await
        .expect("client token")
        .into_inner();
    let client = created.token.clone().expect("token");
    let sdk = admin
        .create_token(create("checkout", pb::Role::Sdk))
        .await
        .expect("sdk token")
        .into_inner()
        .token
        .expect("token");
    let editor_secret = admin
        .create_token(create("bot", pb::Role::Editor))
        .await
        .expect("editor token")
        .into_inner()
        .secret;

    // Shown again, the same after a restart.
    let shown = admin
        .get_client_token(pb::GetClientTokenRequest {
            id: client.id.clone(),
        })
        .await
        .expect("shown again")
        .into_inner();
    assert_eq!(shown.token.as_ref(), Some(&client));
    assert_eq!(shown.secret, created.secret);
    let data_dir = server.stop().await;
    let server = TestServer::builder().data_dir(data_dir).start().await;
    let mut admin = server.admin().await;
    let again = admin
        .get_client_token(pb::GetClientTokenRequest {
            id: client.id.clone(),
        })
        .await
        .expect("shown after a restart")
        .into_inner();
    assert_eq!(again, shown);

    let message = refused(
        admin
            .get_client_token(pb::GetClientTokenRequest { id: sdk.id.clone() })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        message,
        "token \"checkout\" is not a client token: only client tokens can be shown again; \
         other tokens are stored as hashes"
    );
    let message = refused(
        admin
            .get_client_token(pb::GetClientTokenRequest {
                id: "no-such-id".into(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(message, "no token \"no-such-id\"");
    let message = refused(
        admin
            .get_client_token(pb::GetClientTokenRequest::default())
            .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("id"), "{message}");

    // Only an admin token may show it: not an editor, nor the client token itself.
    for secret in [&editor_secret, &created.secret] {
        let mut other = server.admin_with(Some(secret)).await;
        refused(
            other
                .get_client_token(pb::GetClientTokenRequest {
                    id: client.id.clone(),
                })
                .await,
            Code::PermissionDenied,
        );
    }
    // Revoked, it is not shown again.
    admin
        .revoke_token(pb::RevokeTokenRequest {
            id: client.id.clone(),
        })
        .await
        .expect("revoked");
    let message = refused(
        admin
            .get_client_token(pb::GetClientTokenRequest { id: client.id })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(message, "client token \"web\" is revoked; create a new one");
}
