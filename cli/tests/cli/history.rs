//! `flagstaff history`, `watch` and `clients` against a real server.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::common::{redacted, Server};
use flagstaff_proto::pb;
use flagstaff_tests::{eventually, TestServer, PATIENCE};
use insta::assert_snapshot;
use serde_json::Value;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/production.yaml");

/// Times replaced by a placeholder as wide as a time, so that columns stay aligned.
fn aligned() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(
        r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC",
        "[time.................]",
    );
    settings
}

#[test]
fn history_lists_changes_newest_first() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    assert_snapshot!(s.ok(&["history"]), @"no changes in production yet");
    s.ok(&["import", EXAMPLE, "-m", "initial import"]);
    s.ok(&[
        "segment",
        "add",
        "internal-staff",
        "user-3",
        "-m",
        "new hire",
    ]);
    s.block_on(async {
        s.server
            .admin()
            .await
            .set_flag_enabled(pb::SetFlagEnabledRequest {
                environment: "production".into(),
                key: "checkout-v2".into(),
                enabled: false,
                comment: "incident 42".into(),
                ..Default::default()
            })
            .await
            .expect("turned off");
    });
    aligned().bind(|| {
        assert_snapshot!(s.ok(&["history"]), @r"
        REVISION  TIME                     ACTOR  OPERATION         CHANGES                                      COMMENT
        3         [time.................]  admin  SetFlagEnabled    flag checkout-v2 updated: turned off         incident 42
        2         [time.................]  admin  PatchSegmentKeys  segment internal-staff updated: +1 included  new hire
        1         [time.................]  admin  Apply             4 flags, 1 segment changed                   initial import
        ");
        assert_snapshot!(s.ok(&["history", "checkout-v2"]), @r"
        REVISION  TIME                     ACTOR  OPERATION       CHANGES                               COMMENT
        3         [time.................]  admin  SetFlagEnabled  flag checkout-v2 updated: turned off  incident 42
        1         [time.................]  admin  Apply           flag checkout-v2 created              initial import
        ");
        // A segment's key works too.
        assert_snapshot!(s.ok(&["history", "internal-staff", "--limit", "1"]), @r"
        REVISION  TIME                     ACTOR  OPERATION         CHANGES                                      COMMENT
        2         [time.................]  admin  PatchSegmentKeys  segment internal-staff updated: +1 included  new hire
        ");
    });
    let entries: Value =
        serde_json::from_str(&s.ok(&["history", "--limit", "2", "-o", "json"])).expect("JSON");
    assert_eq!(entries.as_array().map(Vec::len), Some(2));
    let latest = &entries[0];
    assert_eq!(latest["revision"], 3);
    assert_eq!(latest["actor"], "admin");
    assert_eq!(latest["comment"], "incident 42");
    assert!(latest["time_unix_ms"].as_i64().is_some_and(|t| t > 0));
    let change = &latest["changes"][0];
    assert_eq!(change["type"], "flag");
    assert_eq!(change["key"], "checkout-v2");
    assert_eq!(change["action"], "updated");
    assert_eq!(change["version_before"], 1);
    assert_eq!(change["version_after"], 3);
    assert_eq!(change["details"], serde_json::json!(["turned off"]));
    let patch = &entries[1]["changes"][0];
    assert_eq!(patch["type"], "segment");
    assert_eq!(patch["keys"]["add_included"], serde_json::json!(["user-3"]));
    assert_eq!(patch["included_count"], 3);

    assert_snapshot!(
        s.fails(&["history", "checkout-v3"]),
        @r#"error: no flag or segment "checkout-v3" in environment "production" has any history (did you mean checkout-v2?)"#
    );
}

/// `flagstaff --env ENV watch ARGS`, running, with its first stderr line (printed once it
/// follows the environment) and a channel of its stdout lines.
fn watch(s: &Server, env: &str, args: &[&str]) -> (Child, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flagstaff"))
        .current_dir(s.cwd.path())
        .env_remove("FLAGSTAFF_ENV")
        .env("FLAGSTAFF_ENDPOINT", s.server.endpoint())
        .env("FLAGSTAFF_TOKEN", &s.server.admin_token)
        .args(["--env", env, "watch"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch starts");
    // The first line byte by byte: a buffered reader could take more, which the test reads
    // from stderr at the end.
    let mut stderr = child.stderr.take().expect("stderr");
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while stderr.read(&mut byte).expect("stderr") == 1 {
        first.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    let first = String::from_utf8(first).expect("a line on stderr");
    // Keep stderr for the test to read at the end.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    child.stderr = Some(stderr);
    (child, first, lines)
}

#[test]
fn watch_prints_each_change_as_it_happens() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    s.ok(&["segment", "create", "beta"]);
    let (mut child, first, lines) = watch(&s, "production", &[]);
    assert_eq!(
        first,
        "watching production after revision 1 (Ctrl-C to stop)\n"
    );
    s.ok(&["segment", "add", "beta", "u1", "u2", "-m", "testers"]);
    let line = lines.recv_timeout(PATIENCE).expect("a line");
    redacted().bind(|| {
        assert_snapshot!(line, @"[time]  revision 2  admin  PatchSegmentKeys  segment beta updated: +2 included  (testers)");
    });
    s.ok(&["segment", "delete", "beta", "--yes"]);
    let line = lines.recv_timeout(PATIENCE).expect("a line");
    assert!(
        line.ends_with("revision 3  admin  DeleteSegment  segment beta deleted: -2 included"),
        "{line}"
    );
    child.kill().expect("killed");
    child.wait().expect("ended");
}

#[test]
fn watch_survives_a_server_restart_and_replays_from_since() {
    let mut s = Server::start();
    s.ok(&["env", "create", "production"]);
    s.ok(&["segment", "create", "beta"]);
    let (mut child, _, lines) = watch(&s, "production", &[]);
    s.ok(&["segment", "add", "beta", "u1"]);
    let line = lines.recv_timeout(PATIENCE).expect("a line");
    assert!(line.contains("revision 2  admin"), "{line}");

    // flagstaffd restarts: watch reconnects and resumes after revision 2.
    s.restart(TestServer::builder());
    s.ok(&["segment", "add", "beta", "u2"]);
    let line = lines
        .recv_timeout(PATIENCE)
        .expect("a line after the restart");
    assert!(line.contains("revision 3  admin"), "{line}");
    s.ok(&["segment", "add", "beta", "u3"]);
    let line = lines.recv_timeout(PATIENCE).expect("a line");
    assert!(line.contains("revision 4  admin"), "{line}");
    child.kill().expect("killed");
    let _ = child.wait();
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(err.contains("reconnecting"), "{err}");
    assert!(
        err.contains("reconnected: resuming after revision 2"),
        "{err}"
    );

    // --since replays what came after a revision, then follows.
    let (mut child, first, lines) = watch(&s, "production", &["--since", "2"]);
    assert_eq!(
        first,
        "watching production after revision 2 (Ctrl-C to stop)\n"
    );
    for revision in [3, 4] {
        let line = lines.recv_timeout(PATIENCE).expect("a replayed line");
        assert!(
            line.contains(&format!("revision {revision}  admin")),
            "{line}"
        );
    }
    s.ok(&["segment", "add", "beta", "u4"]);
    let line = lines.recv_timeout(PATIENCE).expect("a line");
    assert!(line.contains("revision 5  admin"), "{line}");
    child.kill().expect("killed");
    let _ = child.wait();
}

#[test]
fn watch_of_a_new_environment_misses_nothing_committed_while_it_reconnects() {
    let mut s = Server::start();
    s.ok(&["env", "create", "production"]);
    let (mut child, first, lines) = watch(&s, "production", &[]);
    assert_eq!(
        first,
        "watching production after revision 0 (Ctrl-C to stop)\n"
    );
    // Committed right after the restart, while watch waits to reconnect (or just after).
    s.restart(TestServer::builder());
    s.ok(&["segment", "create", "beta"]);
    let line = lines.recv_timeout(PATIENCE).expect("revision 1");
    assert!(line.contains("revision 1  admin"), "{line}");
    child.kill().expect("killed");
    let _ = child.wait();

    // A position past the environment's revision is said, and watching goes on from there.
    let (mut child, first, lines) = watch(&s, "production", &["--since", "99"]);
    assert_eq!(
        first,
        "watching production after revision 99 (Ctrl-C to stop)\n"
    );
    s.ok(&["segment", "add", "beta", "u1"]);
    let line = lines.recv_timeout(PATIENCE).expect("revision 2");
    assert!(line.contains("revision 2  admin"), "{line}");
    child.kill().expect("killed");
    let _ = child.wait();
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(
        err.contains("revision 99 is ahead of production, which is at revision 1"),
        "{err}"
    );
}

#[test]
fn watch_prints_json_lines_and_ends_with_the_environment() {
    let s = Server::start();
    s.ok(&["env", "create", "staging"]);
    let (mut child, first, lines) = watch(&s, "staging", &["-o", "json"]);
    assert_eq!(
        first,
        "watching staging after revision 0 (Ctrl-C to stop)\n"
    );
    let staging = |args: &[&str]| {
        let out = s
            .cmd()
            .args(["--env", "staging"])
            .args(args)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    staging(&["segment", "create", "beta", "--include", "u1"]);
    let entry: Value =
        serde_json::from_str(&lines.recv_timeout(PATIENCE).expect("a line")).expect("JSON");
    assert_eq!(entry["revision"], 1);
    assert_eq!(entry["changes"][0]["key"], "beta");
    assert_eq!(entry["changes"][0]["action"], "created");
    staging(&["segment", "delete", "beta", "--yes"]);
    let entry: Value =
        serde_json::from_str(&lines.recv_timeout(PATIENCE).expect("a line")).expect("JSON");
    assert_eq!(entry["revision"], 2);

    // The server ends the stream when the environment goes: watch stops and says why.
    staging(&["env", "delete", "staging", "--yes"]);
    let status = child.wait().expect("ended");
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert_snapshot!(err, @r#"error: environment "staging" was deleted"#);
}

#[test]
fn clients_lists_sdk_instances_and_their_revisions() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    assert_snapshot!(
        s.ok(&["clients"]),
        @"no SDK instance of production seen in the last 24 hours (revision 0)"
    );
    s.ok(&["segment", "create", "beta"]);
    let token: Value = serde_json::from_str(&s.ok(&[
        "token", "create", "--name", "checkout", "--role", "sdk", "-o", "json",
    ]))
    .expect("JSON");
    let secret = token["secret"].as_str().expect("secret").to_owned();
    let client = s.block_on(async {
        let client = flagstaff::Client::builder(s.server.endpoint(), secret)
            .application("checkout-service")
            .build()
            .expect("client");
        client.wait_ready(PATIENCE).await.expect("ready");
        client
    });
    // The instance acknowledges the revision it applied shortly after it is ready.
    let listed = s.block_on(eventually(
        "the acknowledgement of revision 1",
        async || {
            let listed: Value =
                serde_json::from_str(&s.ok(&["clients", "-o", "json"])).expect("JSON");
            (listed["clients"][0]["applied_revision"] == 1).then_some(listed)
        },
    ));
    assert_eq!(listed["environment"], "production");
    assert_eq!(listed["revision"], 1);
    let instance = &listed["clients"][0];
    assert_eq!(instance["application"], "checkout-service");
    assert_eq!(instance["connected"], true);
    assert_eq!(instance["token"], "checkout");
    assert_eq!(instance["up_to_date"], true);
    assert_eq!(instance["disconnected_since"], Value::Null);
    let host = instance["host"].as_str().expect("host").to_owned();
    let id = instance["instance_id"].as_str().expect("id").to_owned();
    let sdk = instance["sdk_version"].as_str().expect("sdk").to_owned();

    // Host, id and SDK version vary, and with them the columns' widths: cells are compared
    // separated by `|`.
    let table = |s: &Server| {
        let text = s
            .ok(&["clients"])
            .replace(&host, "[host]")
            .replace(&id, "[instance]")
            .replace(&sdk, "[sdk]");
        cells(&text)
    };
    assert_snapshot!(table(&s), @r"
    production is at revision 1
    APPLICATION | HOST | INSTANCE | SDK | STATUS | REVISION
    checkout-service | [host] | [instance] | [sdk] | connected | 1 (current)
    ");
    // --wait waits for the connected instance to apply the change.
    let waited = s.ok(&["segment", "add", "beta", "u0", "--wait=20s"]);
    assert!(waited.starts_with("added 1 key to the included keys of beta: 1 included, 0 excluded; revision 2\napplied by 1/1 instances in "), "{waited}");
    s.ok(&["segment", "remove", "beta", "u0"]);
    s.block_on(eventually(
        "the acknowledgement of revision 3",
        async || {
            let listed: Value =
                serde_json::from_str(&s.ok(&["clients", "-o", "json"])).expect("JSON");
            listed["clients"][0]["applied_revision"] == 3
        },
    ));

    // A change it has not applied yet shows as behind (the instance is gone, so it never
    // will).
    client.close();
    s.ok(&["segment", "add", "beta", "u1"]);
    let out = s.block_on(eventually("the instance shown disconnected", async || {
        let out = table(&s);
        out.contains("disconnected").then_some(out)
    }));
    redacted().bind(|| {
        assert_snapshot!(out, @r"
        production is at revision 4
        APPLICATION | HOST | INSTANCE | SDK | STATUS | REVISION
        checkout-service | [host] | [instance] | [sdk] | disconnected since [time] | 3 (1 behind)
        ");
    });
}

/// Each line's cells (separated by two spaces or more) joined by ` | `.
fn cells(text: &str) -> String {
    text.lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
