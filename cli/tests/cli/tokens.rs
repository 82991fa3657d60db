//! `flagstaff token` against a real server.

use crate::common::{redacted, Server};
use insta::assert_snapshot;
use serde_json::Value;

/// `redacted()`, and token ids and secrets too.
fn settings() -> insta::Settings {
    let mut settings = redacted();
    settings.add_filter(r"fs_[0-9a-f]{64}", "[secret]");
    // As wide as an id, so that columns stay aligned.
    settings.add_filter(r"\b[0-9a-f]{32}\b", "[id-----------------------------]");
    settings
}

#[test]
fn tokens_are_created_listed_used_and_revoked() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    let created = s.ok(&[
        "token",
        "create",
        "--name",
        "checkout-service",
        "--role",
        "sdk",
    ]);
    settings().bind(|| {
        assert_snapshot!(created, @r"
        created sdk token checkout-service (id [id-----------------------------]) for environment production
        its secret, shown this once (store it now; the server keeps only a hash):

            [secret]
        ");
    });
    let editor: Value = serde_json::from_str(&s.ok(&[
        "token",
        "create",
        "--name",
        "release-bot",
        "--role",
        "editor",
        "-o",
        "json",
    ]))
    .expect("JSON");
    assert_eq!(editor["name"], "release-bot");
    assert_eq!(editor["role"], "editor");
    assert_eq!(editor["environment"], "production");
    let secret = editor["secret"].as_str().expect("a secret");
    assert!(secret.starts_with("fs_"), "{secret}");
    let id = editor["id"].as_str().expect("an id").to_owned();
    let admin: Value = serde_json::from_str(&s.ok(&[
        "token", "create", "--name", "ci", "--role", "admin", "-o", "json",
    ]))
    .expect("JSON");
    assert_eq!(admin["environment"], Value::Null);

    settings().bind(|| {
        assert_snapshot!(s.ok(&["token", "list"]), @r"
        NAME              ID                                ROLE    ENVIRONMENT  CREATED
        admin             [id-----------------------------]  admin   *            [time]
        checkout-service  [id-----------------------------]  sdk     production   [time]
        ci                [id-----------------------------]  admin   *            [time]
        release-bot       [id-----------------------------]  editor  production   [time]
        ");
    });
    let listed: Value =
        serde_json::from_str(&s.ok(&["token", "list", "-o", "json"])).expect("JSON");
    assert_eq!(listed[3]["id"], id.as_str());
    assert!(listed[3].get("secret").is_none());

    // The editor token works in its environment, and is not allowed to manage tokens.
    let as_editor = |args: &[&str]| {
        s.cmd()
            .args(["--token", secret, "--env", "production"])
            .args(args)
            .output()
            .expect("runs")
    };
    assert!(as_editor(&["segment", "list"]).status.success());
    let out = as_editor(&["token", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: not allowed:"), "{err}");

    // Revoking asks; a name is not an id, and the error says which id it has.
    assert_snapshot!(
        s.fails(&["token", "revoke", &id]),
        @"error: Revoke token release-bot (editor), stopping its calls and streams at once? Not asked (no terminal): pass --yes to confirm"
    );
    assert_eq!(
        s.fails(&["token", "revoke", "release-bot", "--yes"]),
        format!("error: no token with id \"release-bot\"; release-bot is a token's name: its id is {id}\n")
    );
    assert_snapshot!(
        s.fails(&["token", "revoke", "nope", "--yes"]),
        @r#"error: no token with id "nope" (see `flagstaff token list`)"#
    );
    assert_eq!(
        s.ok(&["token", "revoke", &id, "--yes"]),
        format!("revoked token release-bot ({id})\n")
    );
    let out = as_editor(&["segment", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: not authenticated:"), "{err}");
}

#[test]
fn environment_tokens_need_an_environment() {
    let s = Server::start();
    let out = s
        .cmd()
        .args(["token", "create", "--name", "x", "--role", "sdk"])
        .output()
        .expect("runs");
    assert_snapshot!(
        String::from_utf8_lossy(&out.stderr),
        @"error: no environment: pass --env NAME or set FLAGSTAFF_ENV"
    );
    // An unknown environment, and an invalid name.
    assert_snapshot!(
        s.fails(&["token", "create", "--name", "x", "--role", "editor"]),
        @r#"error: no environment "production": there is none yet (flagstaff env create NAME)"#
    );
    let err = s.fails(&["token", "create", "--name", "Not Valid", "--role", "admin"]);
    assert!(
        err.starts_with("error: ") && err.contains("Not Valid"),
        "{err}"
    );
}

#[test]
fn client_tokens_are_created_and_shown_again() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    let out = s
        .cmd()
        .args([
            "token",
            "create",
            "--role",
            "client",
            "--env",
            "production",
            "web",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created = String::from_utf8_lossy(&out.stdout).into_owned();
    settings().bind(|| {
        assert_snapshot!(created, @r#"
        created client token web (id [id-----------------------------]) for environment production
        embed it in web pages and apps (OpenFeature's OFREP provider): it evaluates only this environment's client-side flags, and is not a secret; `flagstaff token show [id-----------------------------]` prints it again:

            [secret]
        "#);
    });
    let listed: Value =
        serde_json::from_str(&s.ok(&["token", "list", "-o", "json"])).expect("JSON");
    let web = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["name"] == "web")
        .expect("listed");
    assert_eq!(web["role"], "client");
    assert_eq!(web["environment"], "production");
    let id = web["id"].as_str().expect("an id").to_owned();
    settings().bind(|| {
        assert_snapshot!(s.ok(&["token", "list"]), @r#"
        NAME   ID                                ROLE    ENVIRONMENT  CREATED
        admin  [id-----------------------------]  admin   *            [time]
        web    [id-----------------------------]  client  production   [time]
        "#);
        assert_snapshot!(s.ok(&["token", "show", &id]), @r#"
        client token web (id [id-----------------------------]) for environment production, created [time] by admin
        embed it in web pages and apps (OpenFeature's OFREP provider): it evaluates only this environment's client-side flags, and is not a secret:

            [secret]
        "#);
    });
    let shown: Value =
        serde_json::from_str(&s.ok(&["token", "show", &id, "-o", "json"])).expect("JSON");
    assert_eq!(shown["role"], "client");
    let secret = shown["secret"].as_str().expect("a secret");
    assert!(
        created.contains(secret),
        "the secret created is the one shown"
    );

    // Only client tokens: an sdk token's secret is not kept.
    let sdk: Value = serde_json::from_str(
        &s.ok(&["token", "create", "checkout", "--role", "sdk", "-o", "json"]),
    )
    .expect("JSON");
    let sdk_id = sdk["id"].as_str().expect("an id");
    assert_snapshot!(s.fails(&["token", "show", sdk_id]), @r#"error: token "checkout" is not a client token: only client tokens can be shown again; other tokens are stored as hashes"#);
    settings().bind(|| {
        assert_snapshot!(s.fails(&["token", "show", "web"]), @r#"error: no token with id "web"; web is a token's name: its id is [id-----------------------------]"#);
    });
    assert_snapshot!(s.fails(&["token", "show", "nope"]), @r#"error: no token with id "nope" (see `flagstaff token list`)"#);
    // A client token reaches nothing of the Admin API.
    let out = s
        .cmd()
        .args(["--token", secret, "--env", "production", "flag", "list"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_snapshot!(err, @r#"error: not allowed: token "web" (Client) may not read environment "production""#);
}
