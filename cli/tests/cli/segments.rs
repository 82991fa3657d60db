//! `flagstaff segment`, `import` and `export` against a real server.

use crate::common::{redacted, Server};
use insta::assert_snapshot;
use serde_json::Value;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/production.yaml");

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("JSON")
}

#[test]
fn segments_are_created_changed_listed_shown_and_deleted() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    assert_snapshot!(s.ok(&["segment", "list"]), @"no segments in production");
    assert_snapshot!(
        s.ok(&[
            "segment", "create", "beta-users", "--description", "Early adopters",
            "--include", "u1", "--include", "u2", "--exclude", "u9",
        ]),
        @"created segment beta-users (2 included, 1 excluded) at revision 1"
    );
    assert_snapshot!(
        s.ok(&["segment", "add", "beta-users", "u3", "u1", "-m", "more testers"]),
        @"added 1 key to the included keys of beta-users (1 was already there): 3 included, 1 excluded; revision 2"
    );
    assert_snapshot!(
        s.ok(&["segment", "remove", "beta-users", "u9", "--excluded"]),
        @"removed 1 key from the excluded keys of beta-users: 3 included, 0 excluded; revision 3"
    );
    assert_snapshot!(
        s.ok(&["segment", "remove", "beta-users", "u9", "--excluded"]),
        @"removed 0 keys from the excluded keys of beta-users (1 was not there): 3 included, 0 excluded; revision 3"
    );
    s.ok(&["segment", "create", "staff"]);
    redacted().bind(|| {
        assert_snapshot!(s.ok(&["segment", "list"]), @r"
        SEGMENT     INCLUDED  EXCLUDED  RULES  VERSION  DESCRIPTION     CHANGED
        beta-users  3         0         0      3        Early adopters  [time]
        staff       0         0         0      4        -               [time]
        ");
        assert_snapshot!(s.ok(&["segment", "get", "beta-users"]), @r"
        # segment beta-users in production: version 3, changed [time] by admin
        key: beta-users
        description: Early adopters
        included:
        - u1
        - u2
        - u3
        excluded: []
        rules: []
        version: 3
        ");
    });
    let listed = json(&s.ok(&["segment", "list", "-o", "json"]));
    assert_eq!(listed[0]["key"], "beta-users");
    assert_eq!(listed[0]["included_count"], 3);
    assert_eq!(listed[0]["excluded_count"], 0);
    assert_eq!(listed[0]["rule_count"], 0);
    assert_eq!(listed[0]["version"], 3);
    assert_eq!(listed[0]["changed_by"], "admin");
    assert_eq!(listed[1]["description"], Value::Null);
    let shown = json(&s.ok(&["segment", "get", "beta-users", "-o", "json"]));
    assert_eq!(shown["included"], serde_json::json!(["u1", "u2", "u3"]));
    assert_eq!(shown["version"], 3);

    // Unknown segments: the closest keys are suggested.
    assert_snapshot!(
        s.fails(&["segment", "get", "beta-user"]),
        @r#"error: no segment "beta-user" in environment "production" (did you mean beta-users?)"#
    );
    assert_snapshot!(
        s.fails(&["segment", "add", "betta-users", "u4"]),
        @r#"error: no segment "betta-users" in environment "production" (did you mean beta-users?)"#
    );
    assert_snapshot!(
        s.fails(&["segment", "delete", "zzzz", "--yes"]),
        @r#"error: no segment "zzzz" in environment "production""#
    );
    assert_snapshot!(
        s.fails(&["segment", "create", "beta-users"]),
        @r#"error: segment "beta-users" already exists in environment "production""#
    );

    // Deleting always asks.
    assert_snapshot!(
        s.fails(&["segment", "delete", "staff"]),
        @"error: Delete segment staff from production? Not asked (no terminal): pass --yes to confirm"
    );
    assert_snapshot!(s.ok(&["segment", "delete", "staff", "--yes"]), @"deleted segment staff at revision 5");
    assert_eq!(
        json(&s.ok(&["segment", "list", "-o", "json"]))
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn segments_are_applied_from_files_and_environments_imported_and_exported() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("staff.yaml");
    let path = file.to_str().expect("a UTF-8 path");
    std::fs::write(
        &file,
        "key: staff\ndescription: Employees\nincluded: [a, b]\nexcluded: []\nrules:\n  - conditions: [{ attribute: email, op: ends_with, values: ['@example.com'] }]\n",
    )
    .expect("file");
    assert_snapshot!(s.ok(&["segment", "apply", "-f", path]), @r"
    + segment staff created: +2 included
    production is at revision 1
    ");
    assert_snapshot!(s.ok(&["segment", "apply", "-f", path]), @r"
    = 1 segment unchanged
    nothing changed: production stays at revision 1
    ");
    std::fs::write(
        &file,
        "key: staff\ndescription: Employees\nincluded: [a, c]\nexcluded: []\nrules: []\n",
    )
    .expect("file");
    assert_snapshot!(s.ok(&["segment", "apply", "-f", path]), @r"
    ~ segment staff updated: +1 included, -1 included, changed rules
    production is at revision 2
    ");

    // An export document: its segments only, in one revision.
    assert_snapshot!(s.ok(&["segment", "apply", "-f", EXAMPLE]), @r"
    + segment internal-staff created: +2 included, +1 excluded
    production is at revision 3
    ");
    let flags = json(&s.ok(&["export", "-o", "json"]));
    assert_eq!(flags["flags"], serde_json::json!([]));

    // Every problem the server finds is printed; nothing is stored.
    std::fs::write(
        &file,
        "environment: production\nsegments:\n- key: a\n  included: []\n  excluded: []\n  rules:\n  - conditions: [{ op: in_segment, values: [x] }]\n- key: b\n  included: []\n  excluded: []\n  rules:\n  - conditions: [{ attribute: v, op: semver_gt, values: ['notsemver'] }]\n",
    )
    .expect("file");
    assert_snapshot!(s.fails(&["segment", "apply", "-f", path]), @r#"
    error: segments[a].rules[0].conditions[0].op: in_segment is not allowed in a segment's rules; list the keys or copy the conditions
    segments[b].rules[0].conditions[0].values[0]: "notsemver" is not a semantic version (strict semver 2.0, e.g. 1.2.3 or 2.0.0-beta.1)
    "#);
    // So is every problem found before sending.
    std::fs::write(
        &file,
        "key: x\nincluded: a\nexcluded: []\nrules: []\nextra: 1\n",
    )
    .expect("file");
    let err = s.fails(&["segment", "apply", "-f", path]);
    assert!(
        err.starts_with(&format!("error: {path} is not a valid document:\n")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 3, "{err}");
    let err = s.fails(&["import", path]);
    assert!(err.contains("is not a valid document"), "{err}");

    // import: a dry run changes nothing, then one revision.
    assert_snapshot!(s.ok(&["import", EXAMPLE, "--dry-run"]), @r"
    + flag checkout-v2 created
    + flag maintenance-mode created
    + flag search-page-size created
    + flag welcome-banner created
    = 1 segment unchanged
    dry run: production would be at revision 4; nothing changed
    ");
    assert_eq!(
        json(&s.ok(&["export", "-o", "json"]))["flags"],
        serde_json::json!([])
    );
    let imported = json(&s.ok(&["import", EXAMPLE, "-m", "initial", "-o", "json"]));
    assert_eq!(imported["changed"], true);
    assert_eq!(imported["dry_run"], false);
    assert_eq!(imported["revision"], 4);
    assert_eq!(imported["changes"][0]["type"], "flag");
    assert_eq!(imported["changes"][0]["key"], "checkout-v2");
    assert_eq!(imported["changes"][0]["action"], "created");
    assert_eq!(
        imported["unchanged_segments"],
        serde_json::json!(["internal-staff"])
    );
    assert_snapshot!(s.ok(&["import", EXAMPLE]), @r"
    = 4 flags and 1 segment unchanged
    nothing changed: production stays at revision 4
    ");
    let missing = dir.path().join("missing.yaml");
    let err = s.fails(&["import", missing.to_str().expect("path")]);
    assert_snapshot!(
        err.replace(dir.path().to_str().expect("path"), "[dir]"),
        @"error: cannot read [dir]/missing.yaml: No such file or directory (os error 2)"
    );

    // A segment a flag uses cannot be deleted; the error names the flag.
    assert_snapshot!(
        s.fails(&["segment", "delete", "internal-staff", "--yes"]),
        @r#"error: segment "internal-staff" is used by the rules of "checkout-v2"; remove it from them first"#
    );

    // export: YAML by default, which imports into another environment unchanged.
    let exported = s.ok(&["export"]);
    assert!(
        exported.starts_with("environment: production\nflags:\n- key: checkout-v2\n"),
        "{exported}"
    );
    let yaml = dir.path().join("export.yaml");
    std::fs::write(&yaml, &exported).expect("file");
    assert_eq!(exported, s.ok(&["export", "-o", "yaml"]));
    s.ok(&["env", "create", "staging"]);
    let out = s
        .cmd()
        .args(["--env", "staging", "import", yaml.to_str().expect("path")])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let staging = s
        .cmd()
        .args(["--env", "staging", "export"])
        .output()
        .expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&staging.stdout),
        exported.replace("environment: production", "environment: staging")
    );

    // Flag documents are for `flag apply`.
    std::fs::write(&file, "key: f\nkind: boolean\nvariants: {\"on\": true, \"off\": false}\noff_variant: \"off\"\nenabled: true\ndefault: {variant: \"off\"}\n").expect("file");
    assert_snapshot!(
        s.fails(&["segment", "apply", "-f", path]).replace(path, "[file]"),
        @"error: [file] is a flag document (f): use `flagstaff flag apply -f [file]`"
    );
}

#[test]
fn protected_environments_need_confirmation() {
    let s = Server::start();
    s.ok(&["env", "create", "production", "--protected"]);
    assert_snapshot!(
        s.fails(&["segment", "create", "beta", "--include", "u1"]),
        @"error: production is a protected environment. Create segment beta? Not asked (no terminal): pass --yes to confirm"
    );
    assert_snapshot!(s.ok(&["segment", "list"]), @"no segments in production");
    assert_snapshot!(
        s.ok(&["segment", "create", "beta", "--include", "u1", "--yes"]),
        @"created segment beta (1 included, 0 excluded) at revision 1"
    );

    assert_snapshot!(
        s.fails(&["segment", "add", "beta", "u2"]),
        @"error: production is a protected environment. Add 1 key(s) to the included keys of segment beta? Not asked (no terminal): pass --yes to confirm"
    );
    let shown = json(&s.ok(&["segment", "get", "beta", "-o", "json"]));
    assert_eq!(shown["included"], serde_json::json!(["u1"]));
    assert_eq!(shown["version"], 1);
    assert_snapshot!(
        s.ok(&["segment", "add", "beta", "u2", "--yes"]),
        @"added 1 key to the included keys of beta: 2 included, 0 excluded; revision 2"
    );

    // An import is checked (a dry run needs no confirmation) before it asks.
    assert_snapshot!(s.ok(&["import", EXAMPLE, "--dry-run"]).lines().last().unwrap_or_default(), @"dry run: production would be at revision 3; nothing changed");
    let err = s.fails(&["import", EXAMPLE]);
    assert!(
        err.starts_with("error: production is a protected environment. Import "),
        "{err}"
    );
    assert!(
        err.ends_with("? Not asked (no terminal): pass --yes to confirm\n"),
        "{err}"
    );
    assert_eq!(
        json(&s.ok(&["export", "-o", "json"]))["flags"],
        serde_json::json!([])
    );
    assert_snapshot!(s.ok(&["import", EXAMPLE, "--yes"]).lines().last().unwrap_or_default(), @"production is at revision 3");

    // Deletion asks once, whether or not the environment is protected; --yes answers both.
    assert!(s
        .fails(&["segment", "delete", "beta"])
        .contains("pass --yes"));
    assert_snapshot!(s.ok(&["segment", "delete", "beta", "--yes"]), @"deleted segment beta at revision 4");
}

#[test]
fn a_deletion_in_a_protected_environment_asks_once() {
    let s = Server::start();
    s.ok(&["env", "create", "production", "--protected"]);
    s.ok(&["segment", "create", "beta", "--yes"]);
    s.ok(&["flag", "create", "banner", "--yes"]);
    let Some((deleted, shown)) = s.at_terminal(&["segment", "delete", "beta"], "y\n") else {
        // util-linux's `script` is part of every Debian system; CI must not skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no `script` to make a terminal with"
        );
        eprintln!("skipped: no `script` to make a terminal with");
        return;
    };
    assert!(deleted, "{shown}");
    assert_eq!(shown.matches("[y/N]").count(), 1, "{shown}");
    assert!(
        shown.contains("Delete segment beta from production? [y/N] "),
        "{shown}"
    );
    let (deleted, shown) = s
        .at_terminal(&["flag", "delete", "banner"], "y\n")
        .expect("script");
    assert!(deleted, "{shown}");
    assert_eq!(shown.matches("[y/N]").count(), 1, "{shown}");
    // No is no.
    s.ok(&["flag", "create", "banner", "--yes"]);
    let (deleted, shown) = s
        .at_terminal(&["flag", "delete", "banner"], "n\n")
        .expect("script");
    assert!(!deleted, "{shown}");
    assert!(shown.contains("not confirmed: nothing changed"), "{shown}");
}

#[test]
fn big_segments_are_listed_by_size_and_patched_by_key() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("big.json");
    let keys: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let document = serde_json::json!({
        "key": "everyone",
        "included": keys,
        "excluded": [],
        "rules": [],
    });
    std::fs::write(&file, document.to_string()).expect("file");
    assert_snapshot!(s.ok(&["segment", "apply", "-f", file.to_str().expect("path")]), @r"
    + segment everyone created: +100000 included
    production is at revision 1
    ");
    let listed = s.ok(&["segment", "list"]);
    assert!(listed.len() < 200, "{listed}");
    assert!(listed.contains("everyone  100000"), "{listed}");
    let err = s.fails(&["segment", "add", "everyone", "one-too-many"]);
    assert!(
        err.starts_with("error: ") && err.contains("100000"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_snapshot!(
        s.ok(&["segment", "remove", "everyone", "user-7", "user-8"]),
        @"removed 2 keys from the included keys of everyone: 99998 included, 0 excluded; revision 2"
    );
    let shown = json(&s.ok(&["segment", "get", "everyone", "-o", "json"]));
    assert_eq!(shown["included"].as_array().map(Vec::len), Some(99_998));
}

#[test]
fn segments_are_promoted_on_their_own_or_with_the_flags_that_use_them() {
    let s = Server::start();
    s.ok(&["env", "create", "staging"]);
    s.ok(&["env", "create", "production", "--protected"]);
    let dir = tempfile::tempdir().expect("dir");
    let keys: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let document = serde_json::json!({
        "environment": "staging",
        "segments": [
            { "key": "everyone", "included": keys, "excluded": [], "rules": [] },
            { "key": "staff", "included": ["user-1"], "excluded": [], "rules": [] },
        ],
        "flags": [{
            "key": "checkout",
            "kind": "boolean",
            "variants": { "on": true, "off": false },
            "off_variant": "off",
            "enabled": true,
            "rules": [
                { "id": "all", "conditions": [{ "op": "in_segment", "values": ["everyone"] }],
                  "serve": { "variant": "on" } },
                { "id": "staff", "conditions": [{ "op": "in_segment", "values": ["staff"] }],
                  "serve": { "variant": "on" } },
            ],
            "default": { "variant": "off" },
        }],
    });
    let file = dir.path().join("staging.json");
    std::fs::write(&file, document.to_string()).expect("file");
    s.cmd()
        .args(["--env", "staging", "import", file.to_str().expect("path")])
        .assert()
        .success();
    let promote = [
        "flag",
        "promote",
        "checkout",
        "--from",
        "staging",
        "--to",
        "production",
    ];

    // Without its segments, the flag is refused with the commands that fix it.
    let err = s.fails(&[&promote[..], &["--yes"]].concat());
    assert!(
        err.contains("segment \"everyone\", segment \"staff\""),
        "{err}"
    );
    assert!(
        err.contains(
            "`flagstaff flag promote checkout --from staging --to production --with-segments`"
        ),
        "{err}"
    );
    assert!(
        err.contains("`flagstaff segment promote everyone --from staging --to production`"),
        "{err}"
    );
    assert!(!err.contains("promote those first"), "{err}");

    // One segment on its own: 100,000 keys, copied by the server.
    assert_snapshot!(
        s.ok(&["segment", "promote", "everyone", "--from", "staging", "--to", "production", "--yes"]),
        @"segment everyone copied from staging to production (100000 included, 0 excluded; revision 1 of production)"
    );
    let err = s.fails(&[
        "segment",
        "promote",
        "everyone",
        "--from",
        "staging",
        "--to",
        "production",
    ]);
    assert!(err.contains("pass --yes to confirm"), "{err}");
    let err = s.fails(&[
        "segment",
        "promote",
        "staf",
        "--from",
        "staging",
        "--to",
        "production",
        "--yes",
    ]);
    assert_snapshot!(err.trim(), @r#"error: no segment "staf" in environment "staging" (did you mean staff?)"#);

    // The flag with the segments it uses, in one revision: staff is created, everyone is
    // replaced (it changed in staging meanwhile).
    s.cmd()
        .args([
            "--env", "staging", "segment", "remove", "everyone", "user-1",
        ])
        .assert()
        .success();
    assert_snapshot!(
        s.ok(&[&promote[..], &["--with-segments", "--yes"]].concat()),
        @"checkout copied from staging to production with segments everyone, staff (revision 2 of production)"
    );
    let history: Value = json(&s.ok(&["history", "--limit", "1", "-o", "json"]));
    let entry = &history[0];
    assert_eq!(entry["revision"], 2, "{entry}");
    assert_eq!(entry["operation"], "PromoteFlag", "{entry}");
    let shown = json(&s.ok(&["segment", "get", "everyone", "-o", "json"]));
    assert_eq!(shown["included"].as_array().map(Vec::len), Some(99_999));
    assert_eq!(shown["version"], 2);
    let shown = json(&s.ok(&["segment", "get", "staff", "-o", "json"]));
    assert_eq!(shown["version"], 2);
}

#[test]
fn a_document_read_in_another_environment_is_not_called_a_concurrent_change() {
    let s = Server::start();
    s.ok(&["env", "create", "staging"]);
    s.ok(&["env", "create", "production"]);
    let staging = |args: &[&str]| {
        s.cmd()
            .args(["--env", "staging"])
            .args(args)
            .assert()
            .success();
    };
    // In staging, segment beta gets to version 5 and flag checkout to version 7.
    staging(&["segment", "create", "beta", "--include", "u1"]);
    for key in ["u2", "u3", "u4", "u5"] {
        staging(&["segment", "add", "beta", key]);
    }
    staging(&["flag", "create", "checkout"]);
    staging(&["flag", "on", "checkout"]);
    // In production, both exist at earlier versions: production is at revision 2.
    s.ok(&["segment", "create", "beta"]);
    s.ok(&["flag", "create", "checkout"]);

    let dir = tempfile::tempdir().expect("dir");
    let segment_file = dir.path().join("beta.yaml");
    let out = s
        .cmd()
        .args(["--env", "staging", "segment", "get", "beta"])
        .output()
        .expect("runs");
    let segment = String::from_utf8(out.stdout).expect("utf-8");
    assert!(segment.contains("\nversion: 5\n"), "{segment}");
    std::fs::write(&segment_file, &segment).expect("file");
    let segment_path = segment_file.to_str().expect("path");
    let flag_file = dir.path().join("checkout.json");
    let out = s
        .cmd()
        .args(["--env", "staging", "flag", "get", "checkout", "-o", "json"])
        .output()
        .expect("runs");
    let flag = json(&String::from_utf8(out.stdout).expect("utf-8"))["flag"].clone();
    assert_eq!(flag["version"], 7);
    std::fs::write(&flag_file, flag.to_string()).expect("file");
    let flag_path = flag_file.to_str().expect("path");

    // Versions beyond production's revision.
    assert_snapshot!(
        s.fails(&["segment", "apply", "-f", segment_path]),
        @"error: segment \"beta\" is at version 1 in production, and version 5 is not a revision of production (now 2): the document was read in another environment; drop `version:` (the expected version) to replace the segment whatever its version, or copy it with `flagstaff segment promote`"
    );
    assert_snapshot!(
        s.fails(&["flag", "apply", "-f", flag_path]),
        @"error: flag \"checkout\" is at version 2 in production, and version 7 is not a revision of production (now 2): the document was read in another environment; drop `version:` (the expected version) to replace the flag whatever its version, or copy it with `flagstaff flag promote`"
    );

    // Revisions of production that changed other documents.
    for key in ["x1", "x2", "x3", "x4", "x5"] {
        s.ok(&["segment", "create", key]);
    }
    assert_snapshot!(
        s.fails(&["segment", "apply", "-f", segment_path]),
        @"error: segment \"beta\" is at version 1 in production, not 5, and never had version 5 (its versions only grow): the document was read in another environment; drop `version:` (the expected version) to replace the segment whatever its version, or copy it with `flagstaff segment promote`"
    );
    assert_snapshot!(
        s.fails(&["flag", "apply", "-f", flag_path]),
        @"error: flag \"checkout\" is at version 2 in production, not 7, and never had version 7 (its versions only grow): the document was read in another environment; drop `version:` (the expected version) to replace the flag whatever its version, or copy it with `flagstaff flag promote`"
    );

    // Without `version:`, the document replaces what is there.
    std::fs::write(&segment_file, segment.replace("\nversion: 5\n", "\n")).expect("file");
    let applied = s.ok(&["segment", "apply", "-f", segment_path]);
    assert!(applied.contains("production is at revision 8"), "{applied}");
}
