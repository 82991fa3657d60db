//! Tokens: hashed at rest, scoped by role and environment, revocable, and the admin token file.

use std::sync::Arc;

use flagstaff_server::auth::{Access, Tokens, Visibility, ADMIN_TOKEN_FILE};
use flagstaff_server::storage::{Role, SledStore, Store};
use flagstaff_server::ServerError;

fn tokens(dir: &std::path::Path) -> Tokens<SledStore> {
    Tokens::load(Arc::new(SledStore::open(dir, 100).expect("store"))).expect("tokens")
}

/// The role × access table, written out: `Y` allowed, `-` refused. Editor, SDK and client
/// tokens belong to `prod`. A client token passes no gRPC check: it only evaluates over OFREP.
#[rustfmt::skip]
const MATRIX: &[(&str, [&str; 7])] = &[
    //          Admin Read(prod) Write(prod) Sync(prod) Read(dev) Write(dev) Sync(dev)
    ("admin",  ["Y",  "Y",       "Y",        "Y",       "Y",      "Y",       "Y"]),
    ("editor", ["-",  "Y",       "Y",        "-",       "-",      "-",       "-"]),
    ("sdk",    ["-",  "-",       "-",        "Y",       "-",      "-",       "-"]),
    ("client", ["-",  "-",       "-",        "-",       "-",      "-",       "-"]),
];

#[test]
fn each_role_allows_exactly_its_table_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = tokens(dir.path());
    let accesses = [
        Access::Admin,
        Access::Read("prod"),
        Access::Write("prod"),
        Access::Sync("prod"),
        Access::Read("dev"),
        Access::Write("dev"),
        Access::Sync("dev"),
    ];
    for (role_name, row) in MATRIX {
        let (role, env) = match *role_name {
            "admin" => (Role::Admin, None),
            "editor" => (Role::Editor, Some("prod")),
            "sdk" => (Role::Sdk, Some("prod")),
            _ => (Role::Client, Some("prod")),
        };
        let (_, secret) = tokens.create(role_name, role, env).expect("create");
        let token = tokens.authenticate_held(&secret).expect("authenticates");
        for (access, expected) in accesses.iter().zip(row) {
            assert_eq!(
                token.allows(*access),
                *expected == "Y",
                "{role_name} × {access:?}"
            );
        }
    }
}

#[test]
fn secrets_are_stored_hashed_and_revocation_sticks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (id, secret) = {
        let tokens = tokens(dir.path());
        let (record, secret) = tokens
            .create("ci", Role::Editor, Some("staging"))
            .expect("create");
        assert!(secret.starts_with("fs_") && secret.len() == 67, "{secret}");
        assert_ne!(record.hash, secret);
        assert_eq!(record.hash.len(), 64);
        (record.id, secret)
    };
    let store = SledStore::open(dir.path(), 100).expect("store");
    assert!(store
        .tokens()
        .expect("tokens")
        .iter()
        .all(|t| !t.hash.contains(&secret)));
    drop(store);

    let tokens = tokens(dir.path());
    assert_eq!(
        tokens.authenticate_held(&secret).expect("still valid").name,
        "ci"
    );
    tokens.revoke(&id).expect("revoke");
    let err = tokens.authenticate_held(&secret).expect_err("revoked");
    assert_eq!(err.to_string(), "the token has been revoked");
    drop(tokens);
    let tokens = self::tokens(dir.path());
    assert!(matches!(
        tokens.authenticate_held(&secret),
        Err(ServerError::Unauthenticated(_))
    ));
    assert_eq!(
        tokens
            .authenticate_held("fs_guess")
            .expect_err("unknown")
            .to_string(),
        "unknown token"
    );
    assert!(matches!(
        tokens.revoke("no-such-id"),
        Err(ServerError::NotFound(_))
    ));
}

#[test]
fn tokens_need_a_name_and_the_right_scope() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = tokens(dir.path());
    let message = |r: Result<_, ServerError>| r.map(|_| ()).expect_err("refused").to_string();
    assert_eq!(
        message(tokens.create(" ", Role::Admin, None)),
        "a token needs a name"
    );
    assert_eq!(
        message(tokens.create("a", Role::Admin, Some("prod"))),
        "an admin token covers every environment; leave out the environment"
    );
    assert_eq!(
        message(tokens.create("s", Role::Sdk, None)),
        "an sdk token needs the environment it may use"
    );
    assert_eq!(
        message(tokens.create("e", Role::Editor, None)),
        "an editor token needs the environment it may use"
    );
    assert_eq!(
        message(tokens.create("c", Role::Client, None)),
        "a client token needs the environment it may use"
    );
}

#[test]
fn only_sdk_and_client_tokens_evaluate_over_ofrep_each_in_its_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = tokens(dir.path());
    let scope = |name: &str, role: Role, env: Option<&str>| {
        let (record, _) = tokens.create(name, role, env).expect("create");
        (
            record.id.clone(),
            record
                .evaluation_scope()
                .map(|(env, visibility)| (env.to_owned(), visibility)),
        )
    };
    assert_eq!(scope("admin", Role::Admin, None).1, None);
    assert_eq!(scope("editor", Role::Editor, Some("prod")).1, None);
    assert_eq!(
        scope("sdk", Role::Sdk, Some("prod")).1,
        Some(("prod".to_owned(), Visibility::All))
    );
    let (client, client_scope) = scope("web", Role::Client, Some("staging"));
    assert_eq!(
        client_scope,
        Some(("staging".to_owned(), Visibility::ClientSide))
    );
    // A revoked token evaluates nothing.
    let revoked = tokens.revoke(&client).expect("revoke");
    assert_eq!(revoked.evaluation_scope(), None);
}

#[test]
fn the_admin_token_file_is_private_and_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = tokens(dir.path());
    assert!(tokens.is_empty());
    let path = tokens
        .mint_admin_token_file(dir.path(), "admin")
        .expect("mint");
    assert_eq!(path, dir.path().join(ADMIN_TOKEN_FILE));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let secret = std::fs::read_to_string(&path).expect("read");
    let token = tokens
        .authenticate_held(secret.trim())
        .expect("authenticates");
    assert!(token.allows(Access::Admin));
    assert!(!tokens.is_empty());
}

#[test]
fn only_client_tokens_are_kept_and_shown_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client_id, client_secret, sdk_id) = {
        let tokens = tokens(dir.path());
        let (client, client_secret) = tokens
            .create("web", Role::Client, Some("production"))
            .expect("create");
        let (sdk, _) = tokens
            .create("checkout", Role::Sdk, Some("production"))
            .expect("create");
        tokens.create("ci", Role::Admin, None).expect("create");
        tokens
            .create("bot", Role::Editor, Some("production"))
            .expect("create");
        (client.id, client_secret, sdk.id)
    };
    // Stored: the client token's secret, and no other.
    let store = SledStore::open(dir.path(), 100).expect("store");
    let kept: Vec<(Role, Option<String>)> = store
        .tokens()
        .expect("tokens")
        .into_iter()
        .map(|t| (t.role, t.client_secret))
        .filter(|(_, secret)| secret.is_some())
        .collect();
    assert_eq!(kept, [(Role::Client, Some(client_secret.clone()))]);
    drop(store);

    // Shown again after a restart; it is the secret that authenticates.
    let tokens = tokens(dir.path());
    let (shown, secret) = tokens.client_token(&client_id).expect("shown again");
    assert_eq!(
        (shown.name.as_str(), secret.as_str()),
        ("web", client_secret.as_str())
    );
    assert_eq!(
        tokens.authenticate_held(&secret).expect("works").id,
        client_id
    );

    let message = |r: Result<_, ServerError>| r.map(|_| ()).expect_err("refused");
    let err = message(tokens.client_token(&sdk_id));
    assert!(matches!(err, ServerError::Precondition(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "token \"checkout\" is not a client token: only client tokens can be shown again; \
         other tokens are stored as hashes"
    );
    let err = message(tokens.client_token("no-such-id"));
    assert!(matches!(err, ServerError::NotFound(_)), "{err:?}");

    // Revoked: its secret is dropped from the store, and it is not shown again.
    tokens.revoke(&client_id).expect("revoke");
    let err = message(tokens.client_token(&client_id));
    assert!(matches!(err, ServerError::Precondition(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "client token \"web\" is revoked; create a new one"
    );
    drop(tokens);
    let store = SledStore::open(dir.path(), 100).expect("store");
    assert!(store
        .tokens()
        .expect("tokens")
        .iter()
        .all(|t| t.client_secret.is_none()));
}
