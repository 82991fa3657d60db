//! `flagstaff env`, global options and failures, against a real server.

use crate::common::{redacted, Server};
use insta::assert_snapshot;

#[test]
fn environments_are_created_listed_and_deleted() {
    let s = Server::start();
    assert_snapshot!(s.ok(&["env", "create", "staging"]), @"created environment staging");
    assert_snapshot!(
        s.ok(&["env", "create", "production", "--protected"]),
        @"created environment production (protected: writes need confirmation)"
    );
    redacted().bind(|| {
        assert_snapshot!(s.ok(&["env", "list"]), @r"
        ENVIRONMENT  PROTECTED  REVISION  FLAGS  SEGMENTS  CREATED
        production   yes        0         0      0         [time]
        staging      no         0         0      0         [time]
        ");
    });
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["env", "list", "-o", "json"])).expect("JSON");
    assert_eq!(json[1]["key"], "staging");
    assert_eq!(json[0]["protected"], true);

    // Deletion always confirms: without a terminal, --yes is required.
    let err = s.fails(&["env", "delete", "staging"]);
    assert_snapshot!(err, @"error: Delete environment staging? Not asked (no terminal): pass --yes to confirm");
    assert_snapshot!(s.ok(&["env", "delete", "staging", "--yes"]), @"deleted environment staging");
    let err = s.fails(&["env", "delete", "staging", "--yes"]);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("staging"), "{err}");
}

#[test]
fn failures_name_the_cause_and_the_fix() {
    let s = Server::start();
    // No token anywhere.
    let out = s
        .cmd()
        .env_remove("FLAGSTAFF_TOKEN")
        .args(["env", "list"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_snapshot!(
        String::from_utf8_lossy(&out.stderr),
        @"error: no token: pass --token, set FLAGSTAFF_TOKEN, or pass --token-file (flagstaffd writes an admin token to <data-dir>/admin.token)"
    );
    // A wrong token.
    let out = s
        .cmd()
        .args(["--token", "fs_admin_wrong", "env", "list"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: not authenticated:"), "{err}");
    assert!(err.contains("--token"), "{err}");
    // The default token file in the working directory is used when readable.
    std::fs::create_dir(s.cwd.path().join("flagstaff-data")).expect("dir");
    std::fs::write(
        s.cwd.path().join("flagstaff-data/admin.token"),
        format!("{}\n", s.server.admin_token),
    )
    .expect("token file");
    let out = s
        .cmd()
        .env_remove("FLAGSTAFF_TOKEN")
        .args(["env", "list"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing listening.
    let out = s
        .cmd()
        .args(["--endpoint", "http://127.0.0.1:9", "env", "list"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_snapshot!(
        String::from_utf8_lossy(&out.stderr),
        @"error: cannot reach flagstaffd at http://127.0.0.1:9 (connection refused): is it running? (--endpoint or FLAGSTAFF_ENDPOINT)"
    );
    // Usage errors exit with 2.
    let out = s.cmd().args(["env", "frobnicate"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    // A command that needs an environment says how to name one.
    let out = s
        .cmd()
        .args(["eval", "checkout", "--key", "u"])
        .output()
        .expect("runs");
    assert_snapshot!(
        String::from_utf8_lossy(&out.stderr),
        @"error: no environment: pass --env NAME or set FLAGSTAFF_ENV"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    let s = Server::start();
    for shell in ["bash", "zsh", "fish"] {
        let out = s.cmd().args(["completions", shell]).output().expect("runs");
        assert!(out.status.success());
        let script = String::from_utf8(out.stdout).expect("utf-8");
        assert!(script.contains("rollout"), "{shell}: {script}");
    }
}

#[test]
fn an_unknown_environment_names_the_ones_that_exist() {
    let s = Server::start();
    let none = s
        .cmd()
        .args(["--env", "prod", "flag", "list"])
        .output()
        .expect("runs");
    assert_snapshot!(String::from_utf8_lossy(&none.stderr), @r#"error: no environment "prod": there is none yet (flagstaff env create NAME)"#);
    s.ok(&["env", "create", "production"]);
    s.ok(&["env", "create", "staging"]);
    let near = s
        .cmd()
        .args(["--env", "prod", "flag", "list"])
        .output()
        .expect("runs");
    assert_eq!(near.status.code(), Some(1));
    assert_snapshot!(String::from_utf8_lossy(&near.stderr), @r#"error: no environment "prod" (did you mean production?)"#);
    let far = s
        .cmd()
        .args(["--env", "qa", "flag", "create", "x"])
        .output()
        .expect("runs");
    assert_snapshot!(String::from_utf8_lossy(&far.stderr), @r#"error: no environment "qa"; the environments: production, staging"#);
}
