//! Who may call what, cell by cell: the expected role × RPC matrix is written out below and
//! every cell is checked against the server.

use flagstaff_proto::pb;
use flagstaff_tests::{Admin, TestServer};
use tonic::Code;

use crate::fixtures::{boolean_flag, client_with_token, create_environment, create_flag};

/// One representative call per group of RPCs; A is environment "a".
const CALLS: [&str; 11] = [
    "ListEnvironments",
    "CreateEnvironment",
    "CreateToken",
    "ListTokens",
    "GetFlag(A)",
    "SetFlagEnabled(A)",
    "ListHistory(A)",
    "Evaluate(A)",
    "Export(A)",
    "Apply(A)",
    "Backup",
];

/// Y: allowed (any answer but PERMISSION_DENIED or UNAUTHENTICATED); -: PERMISSION_DENIED.
#[rustfmt::skip]
const MATRIX: [(&str, [&str; 11]); 5] = [
    //            ListEnv CreateEnv CreateTok ListTok GetFlag SetEnabled History Evaluate Export Apply Backup
    ("admin",    ["Y",    "Y",      "Y",      "Y",    "Y",    "Y",       "Y",    "Y",     "Y",   "Y",  "Y"]),
    ("editor-a", ["-",    "-",      "-",      "-",    "Y",    "Y",       "Y",    "Y",     "Y",   "Y",  "-"]),
    ("editor-b", ["-",    "-",      "-",      "-",    "-",    "-",       "-",    "-",     "-",   "-",  "-"]),
    ("sdk-a",    ["-",    "-",      "-",      "-",    "-",    "-",       "-",    "-",     "-",   "-",  "-"]),
    ("client-a", ["-",    "-",      "-",      "-",    "-",    "-",       "-",    "-",     "-",   "-",  "-"]),
];

/// Makes `call` as the token of `row`; names made up for the cell keep cells independent.
async fn call(client: &mut Admin, call: &str, row: &str) -> Result<(), tonic::Status> {
    let unique = format!("{row}-{}", call.to_lowercase().replace(['(', ')'], ""));
    match call {
        "ListEnvironments" => client
            .list_environments(pb::ListEnvironmentsRequest::default())
            .await
            .map(drop),
        "CreateEnvironment" => client
            .create_environment(pb::CreateEnvironmentRequest {
                environment: unique,
                protected: false,
            })
            .await
            .map(drop),
        "CreateToken" => client
            .create_token(pb::CreateTokenRequest {
                name: unique,
                role: pb::Role::Editor as i32,
                environment: "a".into(),
            })
            .await
            .map(drop),
        "Backup" => client.backup(pb::BackupRequest::default()).await.map(drop),
        "ListTokens" => client
            .list_tokens(pb::ListTokensRequest::default())
            .await
            .map(drop),
        "GetFlag(A)" => client
            .get_flag(pb::GetFlagRequest {
                environment: "a".into(),
                key: "checkout".into(),
            })
            .await
            .map(drop),
        "SetFlagEnabled(A)" => client
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: "a".into(),
                key: "checkout".into(),
                enabled: true,
                ..Default::default()
            })
            .await
            .map(drop),
        "ListHistory(A)" => client
            .list_history(pb::ListHistoryRequest {
                environment: "a".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Evaluate(A)" => client
            .evaluate(pb::EvaluateRequest {
                environment: "a".into(),
                context: Some(pb::Context::default()),
                ..Default::default()
            })
            .await
            .map(drop),
        "Export(A)" => client
            .export(pb::ExportRequest {
                environment: "a".into(),
            })
            .await
            .map(drop),
        "Apply(A)" => client
            .apply(pb::ApplyRequest {
                environment: "a".into(),
                source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                    flags: vec![boolean_flag(&unique)],
                    segments: Vec::new(),
                })),
                ..Default::default()
            })
            .await
            .map(drop),
        other => panic!("no call {other}"),
    }
}

#[tokio::test]
async fn every_role_may_call_exactly_its_row() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "a").await;
    create_environment(&mut admin, "b").await;
    create_flag(&mut admin, "a", boolean_flag("checkout")).await;

    for (row, expected) in MATRIX {
        let mut client = match row {
            "admin" => server.admin().await,
            "editor-a" => client_with_token(&server, row, pb::Role::Editor, "a").await,
            "editor-b" => client_with_token(&server, row, pb::Role::Editor, "b").await,
            "sdk-a" => client_with_token(&server, row, pb::Role::Sdk, "a").await,
            "client-a" => client_with_token(&server, row, pb::Role::Client, "a").await,
            other => panic!("no row {other}"),
        };
        for (name, cell) in CALLS.iter().zip(expected) {
            let result = call(&mut client, name, row).await;
            match cell {
                "Y" => {
                    if let Err(status) = &result {
                        assert!(
                            !matches!(
                                status.code(),
                                Code::PermissionDenied | Code::Unauthenticated
                            ),
                            "{row} × {name}: refused: {status:?}"
                        );
                    }
                }
                _ => {
                    let status = result.expect_err("refused");
                    assert_eq!(
                        status.code(),
                        Code::PermissionDenied,
                        "{row} × {name}: {status:?}"
                    );
                }
            }
        }
    }
}
