//! `flagstaff eval --file`: offline evaluation through the real binary.

use std::process::{Command, Output};

use serde_json::Value;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/production.yaml");

fn flagstaff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .args(args)
        .output()
        .expect("flagstaff runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn failure(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty());
    String::from_utf8(out.stderr.clone()).expect("utf-8")
}

#[test]
fn one_flag_as_a_table() {
    let out = flagstaff(&["eval", "checkout-v2", "--file", EXAMPLE, "--key", "user-1"]);
    assert_eq!(
        stdout(&out),
        "FLAG         VALUE  VARIANT  REASON                BUCKET\n\
         checkout-v2  true   on       RULE_MATCH(0, staff)  -\n"
    );
}

#[test]
fn one_flag_as_json_with_its_bucket() {
    let out = flagstaff(&[
        "eval",
        "checkout-v2",
        "-f",
        EXAMPLE,
        "--key",
        "user-77",
        "--attr",
        "country=DE",
        "-o",
        "json",
    ]);
    let result: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(result["value"], true);
    assert_eq!(result["variant"], "on");
    assert_eq!(result["reason"]["kind"], "RULE_MATCH");
    assert_eq!(result["reason"]["rule_id"], "eu-rollout");
    assert_eq!(
        result["bucket"],
        flagstaff_engine_bucket("checkout-v2", "user-77")
    );
}

/// The bucket the formula of DESIGN.md section 3 gives, computed independently of the CLI.
fn flagstaff_engine_bucket(salt: &str, key: &str) -> u32 {
    flagstaff_engine::bucket(salt, key)
}

#[test]
fn every_flag_with_typed_attributes_from_json_and_flags() {
    let out = flagstaff(&[
        "eval",
        "--all",
        "-f",
        EXAMPLE,
        "-o",
        "json",
        "--context-json",
        r#"{"key": "u-5", "attributes": {"plan": "enterprise"}}"#,
        "--attr",
        "app_version=\"2.1.0\"",
    ]);
    let results: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let by_flag = |key: &str| {
        results
            .as_array()
            .expect("list")
            .iter()
            .find(|r| r["flag"] == key)
            .expect("flag")
            .clone()
    };
    assert_eq!(results.as_array().map(Vec::len), Some(4));
    assert_eq!(by_flag("welcome-banner")["value"], "Welcome");
    assert_eq!(by_flag("welcome-banner")["reason"]["rule_id"], "enterprise");
    assert_eq!(by_flag("search-page-size")["value"], 50);
    assert_eq!(by_flag("maintenance-mode")["reason"]["kind"], "OFF");
}

#[test]
fn a_number_attribute_is_typed() {
    // `2.1.0` is not JSON, so it stays a string; `42` is a number and fails a string op.
    let out = flagstaff(&[
        "eval",
        "search-page-size",
        "-f",
        EXAMPLE,
        "--attr",
        "app_version=42",
        "-o",
        "json",
    ]);
    let result: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(result["reason"]["kind"], "DEFAULT");
}

#[test]
fn errors_are_one_clear_line_and_a_failure_status() {
    assert_eq!(
        failure(&flagstaff(&["eval", "nope", "-f", EXAMPLE])),
        format!("error: no flag \"nope\" in {EXAMPLE}\n")
    );
    assert!(
        failure(&flagstaff(&["eval", "x", "-f", "/nonexistent.yaml"]))
            .starts_with("error: cannot read /nonexistent.yaml: ")
    );
    assert_eq!(
        failure(&flagstaff(&[
            "eval",
            "checkout-v2",
            "-f",
            EXAMPLE,
            "--attr",
            "country"
        ])),
        "error: --attr \"country\" must look like NAME=VALUE\n"
    );
    assert!(failure(&flagstaff(&[
        "eval",
        "checkout-v2",
        "-f",
        EXAMPLE,
        "--context-json",
        "{"
    ]))
    .starts_with("error: --context-json is not valid JSON: "));
    assert_eq!(
        failure(&flagstaff(&["eval", "checkout-v2", "-f", EXAMPLE, "--context-json", r#"{"user": 1}"#])),
        "error: --context-json: unknown context field \"user\"; a context has \"key\" and \"attributes\"\n"
    );
}

#[test]
fn an_invalid_document_lists_every_problem() {
    let dir = std::env::temp_dir().join(format!("flagstaff-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "environment: test\nflags:\n\
         - { key: a, kind: boolean, variants: { on: true }, off_variant: on, enabled: yes, default: { variant: on } }\n\
         - { key: b, kind: boolean, variants: { on: true }, off_variant: off, enabled: true, default: { variant: on } }\n",
    )
    .expect("write");
    let err = failure(&flagstaff(&[
        "eval",
        "a",
        "-f",
        path.to_str().expect("utf-8"),
    ]));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        err,
        format!(
            "error: {} is not a valid export document:\n\
             flags[a].enabled: must be true or false, got string \"yes\"\n\
             flags[b].off_variant: unknown variant \"off\"; the flag's variants are on\n",
            path.display()
        )
    );
}
