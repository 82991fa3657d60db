//! The console's reading pages of an environment over HTTP (DESIGN.md section 11;
//! docs/console.md): rollouts (stages, the guard's counts and verdict as the Admin API reports
//! them, also the counts another replica received), segments (key counts, rules in plain
//! words, the flags using each, key lists a page at a time) and propagation ("applied by N of
//! M" with real SDK clients). Each page needs a session, shows an editor its own environment
//! alone, and shows what people wrote as text, never as markup.

use std::sync::Arc;

use flagstaff_proto::pb;
use flagstaff_server::clock::ManualClock;
use flagstaff_tests::proxy::{FaultProxy, Mode};
use flagstaff_tests::{store_kind, Admin, StoreKind, TestServer};
use reqwest::StatusCode;
use serde_json::json;

use super::console::{Browser, Page};
use super::fixtures::*;
use super::guard::window;

/// The page's text as a person reads it: markup kept, the entities askama writes decoded.
fn text(page: &Page) -> String {
    page.body
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// Asserts that `page` holds each of `parts` (in its decoded text).
fn shows(page: &Page, parts: &[&str]) {
    let text = text(page);
    for part in parts {
        assert!(text.contains(part), "{part:?} in {}", page.body);
    }
}

/// A browser signed in with `token`.
async fn signed_in(server: &TestServer, token: &str) -> Browser {
    let mut browser = Browser::new(server);
    let answer = browser.sign_in(token).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    browser
}

async fn report(server: &TestServer, token: &str, windows: Vec<pb::MetricsWindow>) {
    server
        .sync_with(token)
        .await
        .report_metrics(pb::ReportMetricsRequest {
            instance_id: "instance-1".into(),
            windows,
            ..Default::default()
        })
        .await
        .expect("report accepted");
}

#[tokio::test]
async fn the_rollouts_page_shows_stages_and_the_guards_counts_and_verdict() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let (server, mut admin) = server_on(&clock).await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    create_flag(&mut admin, "production", boolean_flag("search")).await;
    let started = start_guarded(&mut admin).await;
    let version = started.flag_version;
    admin
        .start_rollout(pb::StartRolloutRequest {
            environment: "production".into(),
            flag: "search".into(),
            target_variant: "on".into(),
            stages: vec![
                pb::RolloutStage {
                    percent: 5_000,
                    hold_ms: 600_000,
                },
                pb::RolloutStage {
                    percent: 100_000,
                    hold_ms: 0,
                },
            ],
            ..Default::default()
        })
        .await
        .expect("plan started");
    admin
        .pause_rollout(pb::PauseRolloutRequest {
            environment: "production".into(),
            flag: "search".into(),
            comment: "<b>checking</b> the dashboards".into(),
            ..Default::default()
        })
        .await
        .expect("paused");
    let token = sdk_token(&server, "checkout-service", "production").await;
    // Equal rates (1% each), 100 events: past the 50 the guard needs, no evidence.
    report(
        &server,
        &token,
        vec![window(version, (1_000, 9_000), (10, 90))],
    )
    .await;

    let mut browser = signed_in(&server, &server.admin_token).await;
    let page = browser.get("/envs/production/rollouts").await;
    assert_eq!(page.status, StatusCode::OK);
    let status = plan(&mut admin, "checkout")
        .await
        .guard_status
        .expect("a guard status");
    let statistic = format!(
        "statistic {:.1} against a threshold of 40.0",
        status.statistic
    );
    shows(
        &page,
        &[
            "2 rollout plans, 2 active",
            "href=\"/envs/production/flags/checkout\"",
            "running</span>",
            "; on has <strong>10%</strong> now",
            // The timeline: 10% for an hour (current), 50% for an hour, then 100%.
            "<tr aria-current=\"step\" class=\"current\">",
            "<td>10%</td>\n      <td>1h</td>\n      <td>current</td>",
            "<td>50%</td>\n      <td>1h</td>\n      <td>to come</td>",
            "Next stage: 50% at 2027-01-15 09:00 UTC (in 1h 0m)",
            // The guard as the plan says and the counts of the Admin API.
            "event <code>checkout_error</code>, at most 1.5× the baseline's rate, deciding after 50 events",
            "on (target)</th><td>1000</td><td>10</td><td>1.000%</td>",
            "off (baseline)</th><td>9000</td><td>90</td><td>1.000%</td>",
            "verdict-healthy\">healthy</strong>",
            "Target share of events 0.100 (at most 0.143 allowed)",
            &statistic,
            // The paused plan, and why, its words shown as text.
            "paused</span> <span class=\"why\">(paused by admin: <b>checking</b> the dashboards)</span>",
            "No guard.",
        ],
    );
    assert!(!page.body.contains("<b>checking"), "escaped: {}", page.body);

    // On PostgreSQL, counts another replica received are shown here too.
    let replica = match store_kind() {
        StoreKind::Postgres => {
            let replica =
                another_replica(&server, TestServer::builder().clock(clock.clone())).await;
            report(
                &replica,
                &token,
                vec![window(version, (1_000, 9_000), (10, 90))],
            )
            .await;
            let page = browser.get("/envs/production/rollouts").await;
            shows(
                &page,
                &["on (target)</th><td>2000</td><td>20</td><td>1.000%</td>"],
            );
            Some(replica)
        }
        StoreKind::Sled => None,
    };

    // The target at 6% against the baseline's 1%: the guard rolls the plan back.
    report(
        &server,
        &token,
        vec![window(version, (1_000, 9_000), (60, 90))],
    )
    .await;
    let page = showing(&mut browser, "/envs/production/rollouts", "1 active").await;
    shows(
        &page,
        &[
            "2 rollout plans, 1 active",
            "rolled back</span>",
            "<td>rolled back here</td>",
            "<td>not reached</td>",
            "verdict-rejected\">rejected</strong>",
        ],
    );
    drop(replica);
}

#[tokio::test]
async fn the_segments_pages_show_counts_rules_in_words_and_the_flags_using_each() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let included: Vec<String> = (0..450).map(|i| format!("user-{i:03}")).collect();
    let staff = flagstaff_engine::segment_from_value(&json!({
        "key": "staff",
        "description": "<script>alert('staff')</script> & friends",
        "included": included,
        "excluded": ["user-900", "user-901", "user-902"],
        "rules": [
            {"conditions": [
                {"attribute": "country", "op": "in", "values": ["DE", "FR"]},
                {"attribute": "plan", "op": "in", "values": ["free"], "negate": true},
            ]},
            {"conditions": [{"attribute": "version", "op": "semver_gt", "values": ["2.0.0"]}]},
        ],
    }))
    .expect("a segment");
    let mut segments = vec![pb::Segment::from(&staff)];
    segments.extend((0..55).map(|i| segment(&format!("cohort-{i:02}"), &["user-1"])));
    admin
        .apply(pb::ApplyRequest {
            environment: "production".into(),
            source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                segments,
                flags: vec![targeting("checkout", "staff"), targeting("search", "staff")],
            })),
            ..Default::default()
        })
        .await
        .expect("applied");

    let mut browser = signed_in(&server, &server.admin_token).await;
    let first = browser.get("/envs/production/segments").await;
    assert_eq!(first.status, StatusCode::OK);
    shows(
        &first,
        &[
            "56 segments; showing 1–50 of 56, page 1 of 2",
            "href=\"/envs/production/segments?page=2\"",
        ],
    );
    assert!(
        !first.body.contains("segments/staff"),
        "staff sorts after cohort-*: {}",
        first.body
    );
    let second = browser.get("/envs/production/segments?page=2").await;
    shows(
        &second,
        &[
            "showing 51–56 of 56",
            "<a href=\"/envs/production/segments/staff\" class=\"key\">staff</a>",
            "<script>alert('staff')</script> & friends",
            "<td>450</td>\n    <td>3</td>",
            r#"<li>country is one of "DE", "FR" and plan is present and is not "free"</li>"#,
            "<li>version semver > 2.0.0</li>",
            "<a href=\"/envs/production/flags/checkout\" class=\"key\">checkout</a>",
            "<a href=\"/envs/production/flags/search\" class=\"key\">search</a>",
        ],
    );
    assert!(
        !second.body.contains("<script>"),
        "markup is text: {}",
        second.body
    );

    // One segment, its 450 included keys 200 to a page.
    let staff = browser.get("/envs/production/segments/staff").await;
    assert_eq!(staff.status, StatusCode::OK);
    shows(
        &staff,
        &[
            "450 keys; showing 1–200, page 1 of 3",
            "<td class=\"key\">user-199</td>",
            "<td class=\"key\">user-901</td>",
            "/envs/production/segments/staff?included=2&excluded=1",
        ],
    );
    assert!(!staff.body.contains("user-200<"), "{}", staff.body);
    assert!(!staff.body.contains("<script>"));
    let last = browser
        .get("/envs/production/segments/staff?included=3")
        .await;
    shows(
        &last,
        &[
            "showing 401–450, page 3 of 3",
            "<td class=\"key\">user-449</td>",
        ],
    );
    assert!(!last.body.contains("user-399<"));
    let none = browser.get("/envs/production/segments/nobody").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    let bad = browser.get("/envs/production/segments?page=x").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

/// Page `path`, once `expected` shows on it (within [`PATIENCE`]).
async fn showing(browser: &mut Browser, path: &str, expected: &str) -> Page {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let page = browser.get(path).await;
        if text(&page).contains(expected) {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{expected:?} never showed on {path}: {}",
            page.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The propagation page of `production`, once `expected` shows on it.
async fn propagation_showing(browser: &mut Browser, expected: &str) -> Page {
    showing(browser, "/envs/production/clients", expected).await
}

async fn disable(admin: &mut Admin, key: &str) -> u64 {
    admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "production".into(),
            key: key.into(),
            enabled: false,
            comment: "<i>incident</i> 42".into(),
            ..Default::default()
        })
        .await
        .expect("disabled")
        .into_inner()
        .revision
}

#[tokio::test]
async fn the_propagation_page_counts_the_instances_that_applied_the_latest_change() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let token = sdk_token(&server, "checkout-sdk", "production").await;
    let proxy = FaultProxy::start(server.addr).await;
    let direct = sdk_client(server.endpoint(), &token, "checkout");
    let proxied = sdk_client(proxy.endpoint(), &token, "search");
    for c in [&direct, &proxied] {
        c.wait_ready(PATIENCE).await.expect("ready");
    }
    let mut browser = signed_in(&server, &server.admin_token).await;
    let page = propagation_showing(&mut browser, "applied by 2 of 2 connected instances").await;
    shows(
        &page,
        &[
            "Revision 1 applied by 2",
            "flag checkout",
            "2 instances seen in the last 24 hours, 2 connected",
            "<td>checkout-sdk</td>",
            "flagstaff-rust/",
            "up to date</span>",
        ],
    );

    // The proxied client's path stalls: it does not get the change.
    proxy.set(Mode::Stall);
    let revision = disable(&mut admin, "checkout").await;
    let page = propagation_showing(
        &mut browser,
        &format!("Revision {revision} applied by 1 of 2 connected instances"),
    )
    .await;
    shows(
        &page,
        &[
            "SetFlagEnabled",
            "<i>incident</i> 42",
            "behind</span>",
            &format!("<td>{}</td>", revision - 1),
        ],
    );
    assert!(!page.body.contains("<i>incident"), "escaped");

    // The path works again: the change arrives and is acknowledged.
    proxy.set(Mode::Pass);
    propagation_showing(
        &mut browser,
        &format!("Revision {revision} applied by 2 of 2 connected instances"),
    )
    .await;

    // A closed client is listed, disconnected, after the connected one.
    direct.close();
    let page = propagation_showing(
        &mut browser,
        "2 instances seen in the last 24 hours, 1 connected",
    )
    .await;
    let body = text(&page);
    let (up, gone) = (
        body.find("up to date</span>"),
        body.find("disconnected</span>"),
    );
    assert!(up.is_some() && gone.is_some() && up < gone, "{}", page.body);
}

#[tokio::test]
async fn each_page_needs_a_session_and_shows_an_editor_its_own_environment_alone() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_environment(&mut admin, "staging").await;
    create_segment(&mut admin, "staging", segment("secret-cohort", &["user-1"])).await;
    let editor = token_of(&server, "ed", pb::Role::Editor, "production").await;
    let pages = ["rollouts", "segments", "segments/secret-cohort", "clients"];

    let mut stranger = Browser::new(&server);
    for page in pages {
        let away = stranger.get(&format!("/envs/production/{page}")).await;
        assert_eq!(away.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(away.location(), "/login", "{page}");
    }

    let mut browser = signed_in(&server, &editor).await;
    for page in ["rollouts", "segments", "clients"] {
        let own = browser.get(&format!("/envs/production/{page}")).await;
        assert_eq!(own.status, StatusCode::OK, "{page}: {}", own.body);
        assert!(
            own.body.contains(&format!(
                "<a href=\"/envs/production/{page}\" aria-current=\"page\">"
            )),
            "{page}'s navigation: {}",
            own.body
        );
    }
    for page in pages {
        let other = browser.get(&format!("/envs/staging/{page}")).await;
        assert_eq!(other.status, StatusCode::NOT_FOUND, "{page}");
        assert!(!other.body.contains("secret-cohort"), "{page}");
        let none = browser.get(&format!("/envs/nowhere/{page}")).await;
        assert_eq!(none.status, StatusCode::NOT_FOUND, "{page}");
    }
}
