//! `flagstaff flag ...` against a real server: creation defaults, flips, rollouts that stay
//! sticky, files, editing, protected environments, `--wait` with SDK clients, and failures.

use std::time::{Duration, SystemTime};

use crate::common::{redacted, Server};
use flagstaff_tests::eventually;
use insta::assert_snapshot;
use serde_json::Value;

fn production(protected: bool) -> Server {
    let s = Server::start();
    let mut args = vec!["env", "create", "production"];
    if protected {
        args.push("--protected");
    }
    s.ok(&args);
    s
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("JSON output")
}

/// The variant each of `keys` gets from flag `key`, evaluated by the server.
fn variants(s: &Server, key: &str, keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            let out = json(&s.ok(&["eval", key, "--key", k, "-o", "json"]));
            out["variant"].as_str().expect("a variant").to_owned()
        })
        .collect()
}

#[test]
fn a_new_flag_is_a_boolean_that_is_off() {
    let s = production(false);
    assert_snapshot!(
        s.ok(&["flag", "create", "checkout-v2", "--description", "New checkout", "--tag", "web", "--temporary"]),
        @"created checkout-v2 in production: boolean flag, off, serving off when on (revision 1)"
    );
    redacted().bind(|| {
        assert_snapshot!(s.ok(&["flag", "get", "checkout-v2"]), @r#"
    # checkout-v2 is off, default off, 0 rule(s); version 1, changed [time] by admin
    # off: everyone gets off; when turned on:
    #   1. everyone gets off
    key: checkout-v2
    description: New checkout
    kind: boolean
    variants:
      "on": true
      "off": false
    off_variant: "off"
    enabled: false
    rules: []
    default:
      variant: "off"
    tags:
    - web
    temporary: true
    "#)
    });
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(flag["flag"]["enabled"], false);
    assert_eq!(flag["last_change"]["revision"], 1);

    s.ok(&[
        "flag",
        "create",
        "theme",
        "--kind",
        "string",
        "--variant",
        "light=Light",
        "--variant",
        "dark=Dark",
    ]);
    s.ok(&[
        "flag",
        "create",
        "limits",
        "--kind",
        "json",
        "--variant",
        r#"small={"max": 5}"#,
        "--variant",
        r#"big={"max": 50}"#,
    ]);
    redacted().bind(|| {
        assert_snapshot!(s.ok(&["flag", "list"]), @r"
        FLAG         STATE  DEFAULT  RULES  CLIENT-SIDE  VERSION  CHANGED                  BY     EVALUATIONS  LAST EVALUATED
        checkout-v2  off    off      0      no           1        [time]  admin  0            never
        limits       off    small    0      no           3        [time]  admin  0            never
        theme        off    light    0      no           2        [time]  admin  0            never
        ");
    });
    let listed = json(&s.ok(&["flag", "list", "--tag", "web", "-o", "json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["key"], "checkout-v2");
    assert_eq!(listed[0]["serves"], serde_json::json!({"variant": "off"}));

    // Bad input: nothing is created.
    let err = s.fails(&["flag", "create", "price", "--kind", "number"]);
    assert_snapshot!(err, @"error: a number flag needs its variants: --variant NAME=VALUE, once per variant");
    let err = s.fails(&[
        "flag",
        "create",
        "price",
        "--kind",
        "number",
        "--variant",
        "cheap=free",
    ]);
    assert_snapshot!(err, @r#"error: --variant cheap: "free" is not a number value"#);
    assert_snapshot!(
        s.fails(&["flag", "create", "Bad Key"]),
        @r#"error: flags[Bad Key].key: "Bad Key" is not a valid key: use 1 to 128 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"#
    );
    let err = s.fails(&["flag", "create", "checkout-v2"]);
    assert!(err.contains("checkout-v2"), "{err}");
    assert_eq!(
        json(&s.ok(&["flag", "list", "-o", "json"]))
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[test]
fn flips_serve_and_unknown_flags() {
    let s = production(false);
    s.ok(&["flag", "create", "checkout-v2"]);
    assert_snapshot!(s.ok(&["flag", "on", "checkout-v2", "-m", "launch"]), @"checkout-v2 is on in production (revision 2)");
    assert_snapshot!(
        s.ok(&["flag", "serve", "checkout-v2", "on"]),
        @"checkout-v2 serves on by default in production (revision 3)"
    );
    let out = json(&s.ok(&["eval", "checkout-v2", "--key", "user-1", "-o", "json"]));
    assert_eq!(out["value"], true);
    assert_snapshot!(s.ok(&["flag", "off", "checkout-v2"]), @"checkout-v2 is off in production (revision 4)");
    let out = json(&s.ok(&["eval", "checkout-v2", "--key", "user-1", "-o", "json"]));
    assert_eq!(
        (out["value"].clone(), out["reason"]["kind"].clone()),
        (Value::Bool(false), "OFF".into())
    );

    assert_snapshot!(
        s.fails(&["flag", "serve", "checkout-v2", "maybe"]),
        @r#"error: flag checkout-v2 has no variant "maybe"; its variants: on, off"#
    );
    let err = s.fails(&["flag", "on", "checkout-v3"]);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.ends_with("(did you mean checkout-v2?)\n"), "{err}");
    let err = s.fails(&["flag", "get", "chekout-v2"]);
    assert!(err.ends_with("(did you mean checkout-v2?)\n"), "{err}");
}

#[test]
fn a_rollout_only_ever_adds_contexts() {
    let s = production(false);
    s.ok(&["flag", "create", "checkout-v2"]);
    s.ok(&["flag", "on", "checkout-v2"]);
    let keys: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();

    assert_snapshot!(
        s.ok(&["flag", "rollout", "checkout-v2", "12.5%"]),
        @"checkout-v2 serves on 12.5% / off 87.5% by default in production (revision 3)"
    );
    let mut before = variants(&s, "checkout-v2", &keys);
    for percent in ["25", "50.5", "90"] {
        s.ok(&["flag", "rollout", "checkout-v2", percent]);
        let now = variants(&s, "checkout-v2", &keys);
        for ((key, was), is) in keys.iter().zip(&before).zip(&now) {
            assert!(
                was != "on" || is == "on",
                "{key} lost the rollout at {percent}%"
            );
        }
        before = now;
    }
    let on = before.iter().filter(|v| *v == "on").count();
    assert!((45..=60).contains(&on), "{on} of 60 at 90%");

    // The ends are fixed variants, not 100/0 splits.
    s.ok(&["flag", "rollout", "checkout-v2", "100"]);
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(
        flag["flag"]["default"],
        serde_json::json!({"variant": "on"})
    );
    s.ok(&["flag", "rollout", "checkout-v2", "0"]);
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(
        flag["flag"]["default"],
        serde_json::json!({"variant": "off"})
    );

    // Another bucketing attribute reshuffles everyone: refused unless forced.
    s.ok(&["flag", "rollout", "checkout-v2", "10"]);
    let err = s.fails(&[
        "flag",
        "rollout",
        "checkout-v2",
        "20",
        "--bucket-by",
        "team",
    ]);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("force"), "{err}");
    assert_snapshot!(
        s.ok(&["flag", "rollout", "checkout-v2", "20", "--bucket-by", "team", "--force"]),
        @"checkout-v2 serves on 20% / off 80% by team by default in production (revision 10)"
    );

    for bad in ["101", "12.0001", "ten", "-5"] {
        let out = s
            .cmd()
            .args([
                "--env",
                "production",
                "flag",
                "rollout",
                "checkout-v2",
                "--",
                bad,
            ])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is not a percentage from 0 to 100 in steps of 0.001"),
            "{err}"
        );
    }
}

#[test]
fn protected_environments_need_confirmation() {
    let s = production(true);
    s.ok(&["flag", "create", "checkout-v2", "--yes"]);
    let err = s.fails(&["flag", "on", "checkout-v2"]);
    assert_snapshot!(err, @"error: production is a protected environment. Turn the flag on? Not asked (no terminal): pass --yes to confirm");
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(flag["flag"]["enabled"], false, "nothing changed");
    s.ok(&["flag", "on", "checkout-v2", "--yes"]);
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(flag["flag"]["enabled"], true);

    // Deletion always asks, protected or not.
    let err = s.fails(&["flag", "delete", "checkout-v2"]);
    assert!(err.contains("pass --yes"), "{err}");
    s.ok(&["flag", "delete", "checkout-v2", "--yes"]);
    assert_eq!(
        json(&s.ok(&["flag", "list", "-o", "json"])),
        serde_json::json!([])
    );
}

#[test]
fn files_are_diffed_and_applied_as_one_revision() {
    let s = production(false);
    s.ok(&["flag", "create", "checkout-v2"]);
    let file = s.cwd.path().join("flags.yaml");
    std::fs::write(
        &file,
        r#"
environment: production
flags:
  - key: checkout-v2
    kind: boolean
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: true
    default: { variant: "off" }
  - key: banner
    kind: string
    variants: { a: "Hello" }
    off_variant: a
    enabled: true
    default: { variant: a }
"#,
    )
    .expect("file");
    let file = file.to_str().expect("utf-8 path");
    assert_snapshot!(s.ok(&["flag", "diff", "-f", file]), @r#"
    --- /dev/null
    +++ flag banner
    @@ -0,0 +1,9 @@
    +key: banner
    +kind: string
    +variants:
    +  a: Hello
    +off_variant: a
    +enabled: true
    +rules: []
    +default:
    +  variant: a
    --- flag checkout-v2
    +++ flag checkout-v2
    @@ -4,7 +4,7 @@
       "on": true
       "off": false
     off_variant: "off"
    -enabled: false
    +enabled: true
     rules: []
     default:
       variant: "off"
    2 document(s) would change; nothing was written
    "#);
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(flag["flag"]["enabled"], false, "a diff writes nothing");
    let out = s.ok(&["flag", "apply", "-f", file, "-m", "launch"]);
    assert!(
        out.ends_with("applied 2 change(s) to production (revision 2)\n"),
        "{out}"
    );
    assert_eq!(
        s.ok(&["flag", "apply", "-f", file]),
        format!("no changes: production already matches {file}\n")
    );

    // An invalid file: every problem, nothing written.
    let bad = s.cwd.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "key: banner\nkind: string\nvariants: { a: 1 }\noff_variant: b\nenabled: true\ndefault: { variant: c }\n",
    )
    .expect("file");
    let err = s.fails(&["flag", "apply", "-f", bad.to_str().expect("utf-8")]);
    assert_snapshot!(err, @r#"
    error: flags[banner].variants[a]: value is number 1, but the flag's kind is string
    flags[banner].off_variant: unknown variant "b"; the flag's variants are a
    flags[banner].default.variant: unknown variant "c"; the flag's variants are a
    "#);
    let flag = json(&s.ok(&["flag", "get", "banner", "-o", "json"]));
    assert_eq!(flag["flag"]["variants"]["a"], "Hello", "nothing written");
}

#[test]
fn edit_opens_the_editor_and_saves_only_a_valid_flag() {
    let s = production(false);
    s.ok(&["flag", "create", "checkout-v2"]);
    let out = s
        .cmd()
        .env("EDITOR", "sed -i 's/^enabled: false/enabled: true/'")
        .env_remove("VISUAL")
        .args([
            "--env",
            "production",
            "flag",
            "edit",
            "checkout-v2",
            "-m",
            "by hand",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_snapshot!(String::from_utf8_lossy(&out.stdout), @"saved checkout-v2 in production (revision 2)");
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(flag["flag"]["enabled"], true);
    assert_eq!(flag["last_change"]["comment"], "by hand");

    // An edit that breaks the flag is reported, and without a terminal nothing is saved.
    let out = s
        .cmd()
        .env("EDITOR", "sed -i 's/^off_variant: .*/off_variant: maybe/'")
        .env_remove("VISUAL")
        .args(["--env", "production", "flag", "edit", "checkout-v2"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("off_variant"), "{err}");
    assert!(err.contains("nothing was saved"), "{err}");
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(flag["flag"]["off_variant"], "off");

    // An editor that changes nothing changes nothing.
    let out = s
        .cmd()
        .env("EDITOR", "true")
        .env_remove("VISUAL")
        .args(["--env", "production", "flag", "edit", "checkout-v2"])
        .output()
        .expect("runs");
    assert_snapshot!(String::from_utf8_lossy(&out.stdout), @"no changes to checkout-v2");
}

#[test]
fn revert_and_promote() {
    let s = production(false);
    s.ok(&["env", "create", "staging"]);
    for args in [
        ["flag", "create", "checkout-v2"],
        ["flag", "on", "checkout-v2"],
    ] {
        s.cmd()
            .args(["--env", "staging"])
            .args(args)
            .assert()
            .success();
    }
    assert_snapshot!(
        s.ok(&["flag", "promote", "checkout-v2", "--from", "staging", "--to", "production"]),
        @"checkout-v2 copied from staging to production (revision 1 of production)"
    );
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(flag["flag"]["enabled"], true);
    s.ok(&["flag", "off", "checkout-v2"]);
    assert_snapshot!(
        s.ok(&["flag", "revert", "checkout-v2", "--to-version", "1"]),
        @"checkout-v2 restored as of version 1 in production (revision 3)"
    );
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(flag["flag"]["enabled"], true);
    let err = s.fails(&["flag", "revert", "checkout-v2", "--to-version", "99"]);
    assert!(err.starts_with("error: "), "{err}");
}

#[test]
fn wait_reports_every_sdk_instance_and_fails_for_a_disconnected_one() {
    let s = production(false);
    s.ok(&["flag", "create", "checkout-v2"]);
    let token = s.sdk_token("service");
    let clients: Vec<flagstaff::Client> = s.block_on(async {
        let mut clients = Vec::new();
        for app in ["checkout", "search"] {
            let client = flagstaff::Client::builder(s.server.endpoint(), &token)
                .application(app)
                .build()
                .expect("client");
            client
                .wait_ready(Duration::from_secs(20))
                .await
                .expect("ready");
            clients.push(client);
        }
        clients
    });

    let out = s.ok(&["flag", "on", "checkout-v2", "--wait"]);
    let summary = out.lines().nth(1).expect("a second line");
    assert!(summary.starts_with("applied by 2/2 instances in "), "{out}");
    assert!(summary.ends_with(" ms"), "{out}");
    let ctx = flagstaff::Context::new("user-1");
    assert!(
        clients
            .iter()
            .all(|c| !c.bool_value("checkout-v2", &ctx, true)),
        "on, serving off"
    );

    // One instance goes away before the next change: the wait names it and fails.
    clients[1].close();
    s.block_on(eventually("the close", async || {
        s.server.clients.connected("production") <= 1
    }));
    let out = s
        .cmd()
        .args([
            "--env",
            "production",
            "flag",
            "serve",
            "checkout-v2",
            "on",
            "--wait=5s",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("applied by 1/1 instances in "), "{stdout}");
    assert!(
        stdout.contains("disconnected in the last 10 minutes without it"),
        "{stdout}"
    );
    assert!(stdout.contains("search on "), "{stdout}");
    assert_snapshot!(
        String::from_utf8_lossy(&out.stderr),
        @"error: revision 3 has not reached every SDK instance"
    );

    // Every instance gone: --allow-none allows none connected, not a partitioned one.
    clients[0].close();
    s.block_on(eventually("the close", async || {
        s.server.clients.connected("production") == 0
    }));
    let out = s
        .cmd()
        .args([
            "--env",
            "production",
            "flag",
            "off",
            "checkout-v2",
            "--wait=5s",
            "--allow-none",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("no SDK instance of production is connected"),
        "{stdout}"
    );
    assert_snapshot!(
        String::from_utf8_lossy(&out.stderr),
        @"error: revision 4 did not reach 2 instance(s) that disconnected without it"
    );
}

#[test]
fn a_conflicting_change_is_refused_and_says_what_to_do() {
    let s = production(false);
    s.ok(&["flag", "create", "checkout-v2"]);
    // Someone turns the flag on while it is open in the editor.
    let binary = env!("CARGO_BIN_EXE_flagstaff");
    let editor = format!(
        "{binary} --env production flag on checkout-v2 >/dev/null; sed -i 's/^description: .*//; s/^key: checkout-v2/key: checkout-v2\\ndescription: edited/'"
    );
    let out = s
        .cmd()
        .env("EDITOR", editor)
        .env_remove("VISUAL")
        .args(["--env", "production", "flag", "edit", "checkout-v2"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_snapshot!(
        err,
        @"error: flag \"checkout-v2\" is at version 2 in production, not 1: someone changed it at revision 2, after version 1 was read; read it again and redo the change, or drop `version:` (the expected version) to overwrite that change"
    );
    let flag = json(&s.ok(&["flag", "get", "checkout-v2", "-o", "json"]));
    assert_eq!(flag["flag"]["enabled"], true, "the other change stands");
    assert_eq!(
        flag["flag"].get("description"),
        None,
        "the edit was not saved"
    );
}

#[test]
fn flags_never_evaluated_are_stale_since_their_creation() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    s.ok(&["flag", "create", "banner"]);
    // The change is stamped in a later millisecond than the creation.
    let created_by = SystemTime::now();
    s.block_on(eventually("the next millisecond", async || {
        let passed = created_by.elapsed().unwrap_or_default();
        passed >= Duration::from_millis(1)
    }));
    s.ok(&["flag", "on", "banner"]);
    // Young and never evaluated: not stale yet, and not said to have been evaluated.
    assert_snapshot!(s.ok(&["flag", "stale"]), @"no stale flags: every temporary flag serves more than one variant or changed in the last 30 days, and every flag was evaluated in the last 30 days or created in them (never evaluated yet: banner)");
    // Stale since its creation, not since its last change.
    let history: serde_json::Value =
        serde_json::from_str(&s.ok(&["history", "banner", "-o", "json"])).expect("JSON");
    let created = history[1]["time_unix_ms"].clone();
    assert_ne!(created, history[0]["time_unix_ms"]);
    let stale: serde_json::Value =
        serde_json::from_str(&s.ok(&["flag", "stale", "--days", "0", "-o", "json"])).expect("JSON");
    assert_eq!(stale[0]["key"], "banner");
    assert_eq!(stale[0]["reason"], "not_evaluated");
    assert_eq!(stale[0]["since_unix_ms"], created);
}

#[test]
fn wait_with_no_sdk_instance_connected_says_so_and_fails_unless_allowed() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    s.ok(&["flag", "create", "banner"]);
    let out = s
        .cmd()
        .args(["--env", "production", "flag", "on", "banner", "--wait=1s"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_snapshot!(String::from_utf8_lossy(&out.stdout), @r"
    banner is on in production (revision 2)
    no SDK instance of production is connected
    ");
    assert_snapshot!(String::from_utf8_lossy(&out.stderr), @"error: no SDK instance has applied revision 2, as none is connected to production (pass --allow-none when none is expected)");
    assert_snapshot!(s.ok(&["flag", "off", "banner", "--wait", "--allow-none"]), @r"
    banner is off in production (revision 3)
    no SDK instance of production is connected: nothing to wait for
    ");
}

#[test]
fn client_side_flags_are_created_listed_shown_and_switched() {
    let s = production(true);
    assert_snapshot!(
        s.ok(&["flag", "create", "banner", "--client-side", "--yes"]),
        @"created banner in production: boolean flag, off, serving off when on, client-side (revision 1)"
    );
    s.ok(&["flag", "create", "checkout", "--yes"]);
    redacted().bind(|| {
        assert_snapshot!(s.ok(&["flag", "list"]), @r#"
        FLAG      STATE  DEFAULT  RULES  CLIENT-SIDE  VERSION  CHANGED                  BY     EVALUATIONS  LAST EVALUATED
        banner    off    off      0      yes          1        [time]  admin  0            never
        checkout  off    off      0      no           2        [time]  admin  0            never
        "#);
        assert_snapshot!(s.ok(&["flag", "get", "banner"]), @r#"
        # banner is off, default off, 0 rule(s), client-side (client tokens may evaluate it); version 1, changed [time] by admin
        # off: everyone gets off; when turned on:
        #   1. everyone gets off
        key: banner
        kind: boolean
        variants:
          "on": true
          "off": false
        off_variant: "off"
        enabled: false
        rules: []
        default:
          variant: "off"
        client_side: true
        "#);
    });
    let listed = json(&s.ok(&["flag", "list", "-o", "json"]));
    let sides: Vec<(&str, bool)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|f| {
            (
                f["key"].as_str().expect("a key"),
                f["client_side"].as_bool().expect("client_side"),
            )
        })
        .collect();
    assert_eq!(sides, [("banner", true), ("checkout", false)]);
    let got = json(&s.ok(&["flag", "get", "checkout", "-o", "json"]));
    assert_eq!(
        got["flag"].get("client_side"),
        None,
        "written only when true"
    );
    let exported = s.ok(&["export"]);
    assert_eq!(
        exported.matches("client_side").count(),
        1,
        "banner's only: {exported}"
    );
    assert!(exported.contains("client_side: true"), "{exported}");

    // Switched on an existing flag, with the write path's confirmation and history.
    assert_snapshot!(
        s.fails(&["flag", "client-side", "checkout", "on"]),
        @"error: production is a protected environment. Let client tokens evaluate the flag? Not asked (no terminal): pass --yes to confirm"
    );
    assert_snapshot!(
        s.ok(&["flag", "client-side", "checkout", "on", "-m", "the web app needs it", "--yes"]),
        @"checkout is client-side in production: client tokens may evaluate it (revision 3)"
    );
    assert_snapshot!(
        s.ok(&["flag", "client-side", "checkout", "on", "--yes"]),
        @"checkout is already client-side in production: nothing changed"
    );
    redacted().bind(|| {
        assert_snapshot!(s.ok(&["history", "checkout", "--limit", "1"]), @r#"
        REVISION  TIME                     ACTOR  OPERATION   CHANGES                                     COMMENT
        3         [time]  admin  UpdateFlag  flag checkout updated: changed client side  the web app needs it
        "#);
    });
    assert_snapshot!(
        s.ok(&["flag", "client-side", "banner", "off", "--yes"]),
        @"banner is no longer client-side in production: client tokens get FLAG_NOT_FOUND for it (revision 4)"
    );
    let listed = json(&s.ok(&["flag", "list", "-o", "json"]));
    assert_eq!(listed[0]["client_side"], false);
    assert_eq!(listed[1]["client_side"], true);

    // Bad input changes nothing.
    assert_snapshot!(
        s.fails(&["flag", "client-side", "nope", "on", "--yes"]),
        @r#"error: no flag "nope" in environment "production""#
    );
    let out = s
        .cmd()
        .args([
            "--env",
            "production",
            "flag",
            "client-side",
            "checkout",
            "maybe",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "a usage mistake");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'maybe'"), "{err}");
    assert_eq!(
        json(&s.ok(&["flag", "get", "checkout", "-o", "json"]))["flag"]["version"],
        3
    );
}

#[test]
fn flag_get_says_who_gets_what_in_words() {
    let s = production(false);
    let file = s.cwd.path().join("flags.yaml");
    std::fs::write(
        &file,
        r#"environment: production
flags:
  - key: payments
    kind: boolean
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: true
    default: { variant: "on" }
  - key: checkout-v2
    kind: boolean
    variants: { "on": true, "off": false }
    off_variant: "off"
    enabled: true
    prerequisites: [{ flag: payments, variants: ["on"] }]
    rules:
      - id: eu
        conditions:
          - { attribute: country, op: in, values: [DE, FR] }
          - { attribute: version, op: semver_gt, values: [2.0.0] }
          - { attribute: plan, op: in, values: [free], negate: true }
          - { attribute: host, op: matches, values: ['^eu-\d+$'] }
        serve: { variant: "on" }
    default: { split: { bucket_by: key, weights: [{ variant: "on", weight: 10000 }, { variant: "off", weight: 90000 }] } }
"#,
    )
    .expect("file");
    s.ok(&["flag", "apply", "-f", file.to_str().expect("utf-8 path")]);
    let got = s.ok(&["flag", "get", "checkout-v2"]);
    let comments: Vec<&str> = got
        .lines()
        .filter(|l| l.starts_with("# "))
        .skip(1)
        .collect();
    assert_eq!(
        comments,
        [
            "# who gets what:",
            "#   1. unless payments serves on, serve off",
            r#"#   2. if country is one of "DE", "FR" and version semver > 2.0.0 and plan is present and is not "free" and host matches the pattern "^eu-\d+$", serve on (rule eu)"#,
            "#   3. otherwise serve on 10% / off 90%",
        ],
        "{got}"
    );
}
