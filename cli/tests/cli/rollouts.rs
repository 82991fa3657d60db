//! `flagstaff rollout ...` against a real server on a manual clock, with a real SDK client
//! watching: a plan runs across a restart, pauses on a manual edit, and rolls back on command.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::Duration;

use crate::common::Server;
use flagstaff_server::clock::ManualClock;
use flagstaff_tests::{eventually, TestServer, TestServerBuilder};
use insta::assert_snapshot;
use serde_json::Value;

const HOUR: Duration = Duration::from_secs(3600);

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("JSON output")
}

fn on_clock(clock: &Arc<ManualClock>) -> TestServerBuilder {
    TestServer::builder().clock(clock.clone())
}

/// Polls `rollout status -o json` until `done` holds; returns that status.
fn until(s: &Server, key: &str, done: impl Fn(&Value) -> bool) -> Value {
    s.block_on(eventually(&format!("the plan of {key}"), async || {
        let status = json(&s.ok(&["rollout", "status", key, "-o", "json"]));
        done(&status).then_some(status)
    }))
}

/// What the SDK client serves each of `keys`, once it has `version` of the flag.
fn served(s: &Server, client: &flagstaff::Client, version: u64, keys: &[String]) -> Vec<bool> {
    s.block_on(eventually(
        &format!("version {version} at the client"),
        async || client.status().revision >= version,
    ));
    keys.iter()
        .map(|k| client.bool_value("checkout-v2", &flagstaff::Context::new(k.as_str()), false))
        .collect()
}

fn sdk_client(s: &Server) -> flagstaff::Client {
    let token = s.sdk_token("service");
    s.block_on(async {
        let client = flagstaff::Client::builder(s.server.endpoint(), token)
            .application("checkout")
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .build()
            .expect("client");
        client
            .wait_ready(Duration::from_secs(20))
            .await
            .expect("ready");
        client
    })
}

#[test]
fn a_plan_runs_across_a_restart_and_stays_sticky() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let mut s = Server::start_with(on_clock(&clock));
    s.ok(&["env", "create", "production"]);
    s.ok(&["flag", "create", "checkout-v2"]);
    s.ok(&["flag", "on", "checkout-v2"]);
    let client = sdk_client(&s);
    let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();

    let out = s.ok(&[
        "rollout",
        "start",
        "checkout-v2",
        "--to",
        "on",
        "--stages",
        "10%:1h,50%:2h,100%",
        "-m",
        "canary",
    ]);
    assert!(
        out.starts_with("started rolling out on of checkout-v2 in production (revision 3): running, stage 1 of 3: on 10%, next 50% "),
        "{out}"
    );
    let status = json(&s.ok(&["rollout", "status", "checkout-v2", "-o", "json"]));
    assert_eq!(status["state"], "running");
    assert_eq!(status["percent"], 10.0);
    assert_eq!(status["baseline"], "off");
    assert_eq!(status["history"][0]["comment"], "canary");
    let at_10 = served(&s, &client, 3, &keys);
    let on = at_10.iter().filter(|v| **v).count();
    assert!((140..=260).contains(&on), "about 10%: {on}");

    // flagstaffd restarts; the plan goes on from where it was, and the client reconnects.
    s.restart(on_clock(&clock));
    clock.advance(HOUR);
    let status = until(&s, "checkout-v2", |p| p["stage"] == 2);
    assert_eq!(status["percent"], 50.0);
    let at_50 = served(
        &s,
        &client,
        status["flag_version"].as_u64().expect("version"),
        &keys,
    );
    for ((key, before), after) in keys.iter().zip(&at_10).zip(&at_50) {
        assert!(!before || *after, "{key} lost the new checkout at 50%");
    }

    clock.advance(2 * HOUR);
    let status = until(&s, "checkout-v2", |p| p["state"] == "completed");
    let done = served(
        &s,
        &client,
        status["flag_version"].as_u64().expect("version"),
        &keys,
    );
    assert!(done.iter().all(|v| *v), "everyone at 100%");
    let plans = json(&s.ok(&["rollout", "list", "--all", "-o", "json"]));
    assert_eq!(plans[0]["state"], "completed");
    let events: Vec<&str> = status["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| e["event"].as_str().expect("event"))
        .collect();
    assert_eq!(events, ["started", "advanced", "completed"]);
    assert_eq!(
        json(&s.ok(&["rollout", "list", "-o", "json"])),
        serde_json::json!([])
    );
}

#[test]
fn a_manual_edit_pauses_and_a_rollback_restores_the_baseline() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let s = Server::start_with(on_clock(&clock));
    s.ok(&["env", "create", "production"]);
    s.ok(&["flag", "create", "checkout-v2"]);
    s.ok(&["flag", "on", "checkout-v2"]);
    let client = sdk_client(&s);
    s.ok(&[
        "rollout",
        "start",
        "checkout-v2",
        "--to",
        "on",
        "--stages",
        "20%:1h,60%:1h,100%",
    ]);

    // The kill switch, by hand: the plan pauses and holds, and the command says so.
    assert_snapshot!(s.ok(&["flag", "off", "checkout-v2"]), @r"
    checkout-v2 is off in production (revision 4)
    this paused the rollout plan of checkout-v2 at stage 1 of 3 (on 20%): `flagstaff rollout resume checkout-v2` continues it, `flagstaff rollout rollback checkout-v2` ends it
    ");
    let status = json(&s.ok(&["rollout", "status", "checkout-v2", "-o", "json"]));
    assert_eq!(status["state"], "paused");
    assert_eq!(
        status["state_message"],
        "paused: the flag was edited by admin at revision 4"
    );
    clock.advance(2 * HOUR);
    // Real time, to prove the scheduler does not advance a paused plan.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        json(&s.ok(&["rollout", "status", "checkout-v2", "-o", "json"]))["stage"],
        1
    );
    let listed = s.ok(&["rollout", "list"]);
    assert_snapshot!(listed, @r"
    FLAG         STATE   STAGE   NOW     NEXT
    checkout-v2  paused  1 of 3  on 20%  -
    ");

    // Resumed and back on: it advances after a full hold.
    s.ok(&["flag", "on", "checkout-v2"]);
    let out = s.ok(&["rollout", "resume", "checkout-v2", "-m", "false alarm"]);
    assert!(
        out.starts_with(
            "resumed the rollout of checkout-v2 in production: running, stage 1 of 3: on 20%"
        ),
        "{out}"
    );
    clock.advance(HOUR);
    until(&s, "checkout-v2", |p| p["stage"] == 2);

    // Rolled back: everyone gets the baseline, at once.
    let out = s.ok(&["rollout", "rollback", "checkout-v2", "-m", "errors up"]);
    assert!(
        out.starts_with(
            "rolled back the rollout of checkout-v2 in production (revision 7): rolled back"
        ),
        "{out}"
    );
    let status = json(&s.ok(&["rollout", "status", "checkout-v2", "-o", "json"]));
    assert_eq!(
        (status["state"].as_str(), status["percent"].as_f64()),
        (Some("rolled back"), Some(0.0))
    );
    let keys: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
    assert!(
        served(&s, &client, 7, &keys).iter().all(|v| !v),
        "nobody keeps the new checkout"
    );
    let human = s.ok(&["rollout", "status", "checkout-v2"]);
    assert!(
        human.starts_with("checkout-v2: rolled back, stage 2 of 3: on 0%\n"),
        "{human}"
    );
    assert!(
        human.contains("rolled back  stage 2       0%  by admin  revision 7  errors up"),
        "{human}"
    );

    // Bad input says what is wrong and changes nothing.
    let err = s.fails(&[
        "rollout",
        "start",
        "checkout-v2",
        "--to",
        "on",
        "--stages",
        "5%:1h,50%",
    ]);
    assert_snapshot!(err, @"error: --stages must end with 100% (no hold): e.g. 1%:10m,5%:30m,100%");
    let err = s.fails(&["rollout", "pause", "checkout-v2"]);
    assert_snapshot!(err, @r#"error: the plan of flag "checkout-v2" is rolled back, not running"#);
    let err = s.fails(&["rollout", "status", "banner"]);
    assert_snapshot!(err, @r#"error: flag "banner" has no rollout plan in environment "production""#);
    s.ok(&["flag", "create", "banner"]);
    let out = s.ok(&[
        "rollout",
        "start",
        "banner",
        "--to",
        "on",
        "--stages",
        "50%:1d,100%",
    ]);
    assert!(out.contains("stage 1 of 2: on 50%"), "{out}");

    // `status --watch` follows the plan until it finishes.
    let mut watching = s
        .process()
        .args([
            "--env",
            "production",
            "rollout",
            "status",
            "banner",
            "--watch",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("watch starts");
    // Promoted once the watch has shown the plan as it was.
    let mut stdout = BufReader::new(watching.stdout.take().expect("stdout"));
    let mut watched = String::new();
    stdout.read_line(&mut watched).expect("the status");
    let out = s.ok(&["rollout", "promote", "banner"]);
    assert!(out.contains(": completed, stage 1 of 2: on 100%"), "{out}");
    stdout.read_to_string(&mut watched).expect("the rest");
    assert!(watching.wait().expect("watch ends").success());
    assert!(
        watched.starts_with("banner: running, stage 1 of 2: on 50%"),
        "{watched}"
    );
    let promoted = watched
        .lines()
        .find(|l| l.contains("promoted"))
        .expect("a promoted line");
    assert!(promoted.contains("stage 1     100%  by admin"), "{watched}");
    assert!(
        watched.ends_with("completed, stage 1 of 2: on 100%\n"),
        "{watched}"
    );
}

#[test]
fn a_plan_on_an_off_flag_warns_and_writes_that_pause_a_plan_say_so() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let s = Server::start_with(on_clock(&clock));
    s.ok(&["env", "create", "production"]);
    s.ok(&["flag", "create", "checkout-v2"]);
    let started = s.ok(&[
        "rollout",
        "start",
        "checkout-v2",
        "--to",
        "on",
        "--stages",
        "20%:1h,100%",
    ]);
    // (The plan runs on the manual clock; the CLI counts from the real one.)
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"in \d+[dhms]( \d+[dhms])?", "in [time]");
    settings.bind(|| assert_snapshot!(started, @"started rolling out on of checkout-v2 in production (revision 2): running, stage 1 of 2: on 20%, next 100% in [time] (the flag is off: it serves its off variant until `flag on`)"));
    let on = s.ok(&["flag", "on", "checkout-v2"]);
    assert_snapshot!(on, @r"
    checkout-v2 is on in production (revision 3)
    this paused the rollout plan of checkout-v2 at stage 1 of 2 (on 20%): `flagstaff rollout resume checkout-v2` continues it, `flagstaff rollout rollback checkout-v2` ends it
    ");
    s.ok(&["rollout", "resume", "checkout-v2"]);
    let rollout = s.ok(&["flag", "rollout", "checkout-v2", "50"]);
    assert_snapshot!(rollout, @r"
    checkout-v2 serves on 50% / off 50% by default in production (revision 4)
    this paused the rollout plan of checkout-v2 at stage 1 of 2 (on 20%): `flagstaff rollout resume checkout-v2` continues it, `flagstaff rollout rollback checkout-v2` ends it
    ");
    // Without a running plan, nothing more is said.
    assert_snapshot!(s.ok(&["flag", "off", "checkout-v2"]), @"checkout-v2 is off in production (revision 5)");

    // A revert pauses a running plan as any other edit, and says so.
    s.ok(&["rollout", "resume", "checkout-v2"]);
    let reverted = s.ok(&["flag", "revert", "checkout-v2", "--to-version", "3"]);
    assert!(
        reverted.contains("this paused the rollout plan of checkout-v2 at stage 1 of 2"),
        "{reverted}"
    );
}

#[test]
fn a_guarded_plan_rolls_itself_back_when_the_target_errs_more() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let s = Server::start_with(on_clock(&clock));
    s.ok(&["env", "create", "production"]);
    s.ok(&["flag", "create", "checkout-v2"]);
    s.ok(&["flag", "on", "checkout-v2"]);
    let client = sdk_client(&s);

    // A guard the CLI cannot make sense of is a usage mistake: nothing starts.
    for (guard, problem) in [
        ("checkout_error", "no ratio"),
        ("checkout_error:0.5", "the ratio 0.5 is below 1"),
        ("checkout_error:x", "\"x\" is not a ratio"),
        ("checkout_error:1.5:max=3", "\"max=3\" is not min=N"),
    ] {
        let mut cmd = s.cmd();
        cmd.args([
            "rollout",
            "start",
            "checkout-v2",
            "--to",
            "on",
            "--stages",
            "20%:1h,100%",
            "--guard",
            guard,
        ]);
        let out = cmd.assert().code(2).get_output().clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(problem), "{guard}: {stderr}");
    }
    assert_eq!(
        json(&s.ok(&["rollout", "list", "--all", "-o", "json"])),
        serde_json::json!([])
    );

    s.ok(&[
        "rollout",
        "start",
        "checkout-v2",
        "--to",
        "on",
        "--stages",
        "20%:1h,100%",
        "--guard",
        "checkout_error:1.5:min=50",
    ]);
    let status = json(&s.ok(&["rollout", "status", "checkout-v2", "-o", "json"]));
    assert_eq!(status["guard"]["event"], "checkout_error");
    assert_eq!(status["guard"]["min_events"], 50);
    assert_eq!(status["guard"]["status"]["state"], "collecting events");
    let version = status["flag_version"].as_u64().expect("version");

    // The service: one report teaches it which flags are guarded; then every context on the
    // new checkout hits an error, one in ten on the old one.
    let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
    let on = served(&s, &client, version, &keys);
    s.block_on(client.flush_metrics()).expect("reported");
    for (i, (key, on)) in keys.iter().zip(&on).enumerate() {
        let ctx = flagstaff::Context::new(key.as_str());
        assert_eq!(client.bool_value("checkout-v2", &ctx, false), *on);
        if *on || i % 10 == 0 {
            client.track("checkout_error", &ctx);
        }
    }
    s.block_on(client.flush_metrics()).expect("reported");

    let status = until(&s, "checkout-v2", |p| p["state"] == "rolled back");
    assert_eq!(
        status["guard"]["status"]["state"],
        "rejected: the target does worse than allowed"
    );
    let targets = on.iter().filter(|v| **v).count() as u64;
    assert_eq!(status["guard"]["status"]["target_events"], targets);
    assert!(
        status["guard"]["status"]["statistic"].as_f64()
            >= status["guard"]["status"]["threshold"].as_f64()
    );
    let text = s.ok(&["rollout", "status", "checkout-v2"]);
    assert!(
        text.contains("guard: checkout_error, at most 1.5x the baseline's rate"),
        "{text}"
    );
    // The final verdict, and the statistic in a form people read.
    assert!(
        text.contains(
            "statistic > 10^6 of 20.0: rejected: the target did worse than allowed, so the plan \
             rolled back"
        ),
        "{text}"
    );
    let history = s.ok(&["history", "checkout-v2", "-o", "json"]);
    let history = json(&history);
    assert_eq!(history[0]["actor"], "rollout:checkout-v2");
    assert_eq!(history[0]["operation"], "RolloutGuardRollback");
    let comment = history[0]["comment"].as_str().expect("a comment");
    assert!(
        comment.starts_with("guard \"checkout_error\" rejected the target: target "),
        "{comment}"
    );
    // Its statistic as `rollout status` shows it, not a number of hundreds of digits.
    assert!(comment.ends_with("; statistic > 10^6 of 20.0"), "{comment}");
    // Everyone is back on the old checkout.
    let after = served(
        &s,
        &client,
        status["flag_version"].as_u64().expect("version"),
        &keys,
    );
    assert!(after.iter().all(|v| !v), "everyone on the baseline");

    // The evaluations made it into the flag's usage.
    s.block_on(client.flush_metrics()).expect("reported");
    let listed = json(&s.ok(&["flag", "list", "-o", "json"]));
    let evaluations = listed[0]["usage"]["evaluations"].as_u64().expect("count");
    assert!(evaluations >= 3 * 2000, "{evaluations}");
    assert!(listed[0]["usage"]["last_evaluated_unix_ms"].as_i64() > Some(0));
    // In use and just changed: not stale.
    assert_eq!(
        json(&s.ok(&["flag", "stale", "--days", "1", "-o", "json"])),
        serde_json::json!([])
    );
}

#[test]
fn stages_are_checked_in_percent_not_in_internal_units() {
    let s = Server::start();
    s.ok(&["env", "create", "production"]);
    s.ok(&["flag", "create", "checkout-v2"]);
    let out = s.fails(&[
        "rollout",
        "start",
        "checkout-v2",
        "--to",
        "on",
        "--stages",
        "10%:1h,5%:1h,100%",
    ]);
    assert_snapshot!(out, @"error: --stages: 5% must be above the stage before it (10%): stages only grow");
    // The server's own check, for clients that send stages as they are.
    let status = s.block_on(async {
        let stage = |percent, hold_ms| flagstaff_proto::pb::RolloutStage { percent, hold_ms };
        s.server
            .admin()
            .await
            .start_rollout(flagstaff_proto::pb::StartRolloutRequest {
                environment: "production".into(),
                flag: "checkout-v2".into(),
                target_variant: "on".into(),
                stages: vec![
                    stage(10_000, 60_000),
                    stage(5_000, 60_000),
                    stage(100_000, 0),
                ],
                ..Default::default()
            })
            .await
            .expect_err("refused")
    });
    assert_snapshot!(status.message(), @"stages: stage 2 (5%) must be above the stage before it (10%) and above 0%");
}
