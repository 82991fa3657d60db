//! The web console in a real browser (DESIGN.md section 11): headless Chromium over WebDriver
//! (`flagstaff_tests::browser`) against a real flagstaffd. Signing in by typing a token, every
//! page compared with what the Admin API says (an environment's flags, one flag in words and
//! its evaluate form, history, stale flags, rollouts, segments, propagation to a connected
//! SDK), signing out; sessions ended by revocation and by 12 hours without use; forged POSTs
//! from another origin or without the CSRF token; what an editor may reach; the keyboard
//! alone; 10,000 flags paged and searched. Behind a sign-on proxy
//! (`flagstaff_tests::sign_on`): the people of the users file come in as their role allows,
//! others are refused by name, and requests from outside the proxy's addresses are refused.
//!
//! Each test saves screenshots of the pages it sees under
//! `<target dir>/console-screenshots/<test>/`. Without Chromium the tests are skipped (one
//! line says so) unless `FLAGSTAFF_REQUIRE_BROWSER=1`. They run on sled alone: the HTTP tests
//! of `console.rs` cover both stores.

use std::io::Write;
use std::sync::Once;

use flagstaff_proto::pb;
use flagstaff_server::storage::Store;
use flagstaff_server::{ConsoleOptions, ProxySignOn};
use flagstaff_tests::browser::{keys, Browser, OtherSite};
use flagstaff_tests::sign_on::SignOnProxy;
use flagstaff_tests::{store_kind, Admin, StoreKind, TestServer};
use serde_json::json;

use super::fixtures::*;

/// What a page must show, from the Admin API: the texts of the elements each CSS selector
/// matches, in order.
type Shows = fn(&Facts) -> Vec<(&'static str, Vec<String>)>;

/// The pages the walk visits as an admin: a name for its screenshot, its address, and what it
/// must show. One line per page.
const WALK: &[(&str, &str, Shows)] = &[
    ("environments", "/envs", Facts::environments),
    ("flags", "/envs/production/flags", Facts::production_flags),
    ("flag", "/envs/production/flags/checkout", Facts::checkout),
    ("history", "/envs/production/history", Facts::history),
    ("stale", "/envs/production/stale?days=0", Facts::stale),
    ("rollouts", "/envs/production/rollouts", Facts::rollouts),
    ("segments", "/envs/production/segments", Facts::segments),
    (
        "segment",
        "/envs/production/segments/beta-testers",
        Facts::beta_testers,
    ),
    ("propagation", "/envs/production/clients", Facts::clients),
    ("tokens", "/tokens", Facts::tokens),
];

/// What the Admin API says there is.
struct Facts {
    environments: Vec<pb::Environment>,
    /// The flags of `production`, by key, each with its usage.
    production: Vec<pb::FlagEntry>,
    /// `checkout` of `production`, and its last change.
    checkout: pb::GetFlagResponse,
    /// The newest entries of `production`'s history, as many as its page shows.
    history: Vec<pb::AuditEntry>,
    /// The rollout plans of `production`, finished ones too.
    rollouts: Vec<pb::RolloutPlan>,
    /// The segments of `production`, by key, with their key lists.
    segments: Vec<pb::Segment>,
    /// The SDK instances of `production`.
    clients: pb::ListClientsResponse,
    tokens: Vec<pb::Token>,
}

impl Facts {
    async fn read(admin: &mut Admin) -> Facts {
        let checkout = admin
            .get_flag(pb::GetFlagRequest {
                environment: "production".into(),
                key: "checkout".into(),
            })
            .await
            .expect("checkout")
            .into_inner();
        let history = admin
            .list_history(pb::ListHistoryRequest {
                environment: "production".into(),
                page_size: HISTORY_PAGE,
                ..Default::default()
            })
            .await
            .expect("history")
            .into_inner()
            .entries;
        let rollouts = admin
            .list_rollouts(pb::ListRolloutsRequest {
                environment: "production".into(),
                include_finished: true,
            })
            .await
            .expect("rollouts")
            .into_inner()
            .plans;
        let clients = admin
            .list_clients(pb::ListClientsRequest {
                environment: "production".into(),
            })
            .await
            .expect("clients")
            .into_inner();
        Facts {
            production: entries_of(admin, "production", "").await,
            checkout,
            history,
            rollouts,
            segments: segments_of(admin, "production").await,
            clients,
            ..Facts::read_without_documents(admin).await
        }
    }

    /// What [`read`](Self::read) reads but the documents of `production`: for a server
    /// without them.
    async fn read_without_documents(admin: &mut Admin) -> Facts {
        let environments = admin
            .list_environments(pb::ListEnvironmentsRequest::default())
            .await
            .expect("environments")
            .into_inner()
            .environments;
        let tokens = admin
            .list_tokens(pb::ListTokensRequest::default())
            .await
            .expect("tokens")
            .into_inner()
            .tokens;
        Facts {
            environments,
            production: Vec::new(),
            checkout: pb::GetFlagResponse::default(),
            history: Vec::new(),
            rollouts: Vec::new(),
            segments: Vec::new(),
            clients: pb::ListClientsResponse::default(),
            tokens,
        }
    }

    fn environments(&self) -> Vec<(&'static str, Vec<String>)> {
        let column = |f: fn(&pb::Environment) -> String| self.environments.iter().map(f).collect();
        vec![
            ("tbody th", column(|e| e.key.clone())),
            (
                "tbody td:nth-child(2)",
                column(|e| e.flag_count.to_string()),
            ),
            ("tbody td:nth-child(3)", column(|e| e.revision.to_string())),
        ]
    }

    /// The flags of `production`.
    fn flags(&self) -> Vec<&pb::Flag> {
        self.production
            .iter()
            .filter_map(|entry| entry.flag.as_ref())
            .collect()
    }

    fn production_flags(&self) -> Vec<(&'static str, Vec<String>)> {
        let flags = self.flags();
        let total = flags.len();
        let first = &flags[..total.min(50)];
        vec![
            ("p.count", vec![format!("{total} of {total} flags.")]),
            ("tbody .key", first.iter().map(|f| f.key.clone()).collect()),
            (
                "tbody td:nth-child(6)",
                first
                    .iter()
                    .map(|f| f.version.unwrap_or(0).to_string())
                    .collect(),
            ),
        ]
    }

    /// `checkout`'s page: its facts, with its version and last change, and who gets what, step
    /// by step, as the engine says it of the flag the Admin API returns.
    fn checkout(&self) -> Vec<(&'static str, Vec<String>)> {
        let flag = self.checkout.flag.clone().expect("a flag");
        let version = flag.version.unwrap_or(0);
        let change = self.checkout.last_change.clone().expect("a last change");
        let flag = flagstaff_engine::Flag::try_from(flag).expect("an engine flag");
        let steps = flagstaff_engine::targeting_steps(&flag)
            .iter()
            .map(|step| sentence(&step.to_string()))
            .collect();
        vec![
            ("h1 .key", vec![flag.key.clone()]),
            (
                "dl.facts dt",
                ["State", "Kind", "Tags", "Owner", "Version", "Evaluations"]
                    .map(str::to_owned)
                    .to_vec(),
            ),
            (
                "dl.facts dd:nth-of-type(5)",
                vec![format!(
                    "{version}, changed {} by {}",
                    utc(change.time_unix_ms),
                    change.actor
                )],
            ),
            ("ol.targeting li", steps),
        ]
    }

    /// The history page: the entries' revisions, newest first.
    fn history(&self) -> Vec<(&'static str, Vec<String>)> {
        vec![(
            "ol.history > li > p.entry > strong",
            self.history
                .iter()
                .map(|entry| format!("Revision {}", entry.revision))
                .collect(),
        )]
    }

    /// The stale flags after 0 days: every flag no SDK has reported evaluating.
    fn stale(&self) -> Vec<(&'static str, Vec<String>)> {
        let never: Vec<&pb::Flag> = self
            .production
            .iter()
            .filter(|entry| entry.usage.unwrap_or_default().last_evaluated_unix_ms == 0)
            .filter_map(|entry| entry.flag.as_ref())
            .collect();
        vec![
            (
                "p.count",
                vec![format!(
                    "{} of {} flags are stale.",
                    never.len(),
                    self.production.len()
                )],
            ),
            ("tbody th", never.iter().map(|f| f.key.clone()).collect()),
            (
                "tbody td:nth-child(3)",
                never.iter().map(|_| "never evaluated".to_owned()).collect(),
            ),
        ]
    }

    /// The rollouts page: each plan's flag and state.
    fn rollouts(&self) -> Vec<(&'static str, Vec<String>)> {
        let column = |f: fn(&pb::RolloutPlan) -> String| self.rollouts.iter().map(f).collect();
        vec![
            ("section.plan h2 a.key", column(|p| p.flag.clone())),
            ("section.plan h2 .state", column(|p| state_name(p.state))),
        ]
    }

    /// The segments page: each segment's key and how many keys it includes and excludes.
    fn segments(&self) -> Vec<(&'static str, Vec<String>)> {
        let column = |f: fn(&pb::Segment) -> String| self.segments.iter().map(f).collect();
        vec![
            ("tbody th a.key", column(|s| s.key.clone())),
            (
                "tbody td:nth-child(2)",
                column(|s| s.included.len().to_string()),
            ),
            (
                "tbody td:nth-child(3)",
                column(|s| s.excluded.len().to_string()),
            ),
        ]
    }

    /// `beta-testers`' page: how many keys it includes and excludes, and which.
    fn beta_testers(&self) -> Vec<(&'static str, Vec<String>)> {
        let segment = self
            .segments
            .iter()
            .find(|s| s.key == "beta-testers")
            .expect("beta-testers");
        vec![
            (
                ".key-lists p.count",
                vec![
                    format!("{} keys.", segment.included.len()),
                    format!("{} keys.", segment.excluded.len()),
                ],
            ),
            ("#included ~ table td.key", segment.included.clone()),
            ("#excluded ~ table td.key", segment.excluded.clone()),
        ]
    }

    /// The propagation page: the latest revision applied by every connected instance, and each
    /// instance's token and applied revision.
    fn clients(&self) -> Vec<(&'static str, Vec<String>)> {
        let instances = &self.clients.clients;
        let connected = instances.iter().filter(|c| c.connected).count();
        let applied = instances
            .iter()
            .filter(|c| c.connected && c.applied_revision == self.clients.revision)
            .count();
        let column =
            |f: fn(&pb::ClientInstance) -> String| instances.iter().map(f).collect::<Vec<_>>();
        vec![
            (
                "p.applied",
                vec![format!(
                    "Revision {} applied by {applied} of {connected} connected instances.",
                    self.clients.revision
                )],
            ),
            ("tbody td:nth-child(4)", column(|c| c.token.clone())),
            (
                "tbody td:nth-child(5)",
                column(|c| c.applied_revision.to_string()),
            ),
        ]
    }

    fn tokens(&self) -> Vec<(&'static str, Vec<String>)> {
        vec![
            (
                "tbody th",
                self.tokens.iter().map(|t| t.name.clone()).collect(),
            ),
            (
                "tbody td:nth-child(2)",
                self.tokens.iter().map(|t| role_name(t.role)).collect(),
            ),
        ]
    }
}

/// How many entries the history page shows.
const HISTORY_PAGE: u32 = 25;

/// A step in words as the flag page writes it: a sentence.
fn sentence(words: &str) -> String {
    let mut chars = words.chars();
    let first = chars.next().map(|c| c.to_uppercase().to_string());
    format!("{}{}.", first.unwrap_or_default(), chars.as_str())
}

/// Unix milliseconds as the console writes a time: `2026-12-08 09:30 UTC`.
fn utc(ms: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp(ms / 1000).expect("a time");
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute()
    )
}

/// A rollout plan's state in words.
fn state_name(state: i32) -> String {
    match pb::RolloutState::try_from(state).unwrap_or(pb::RolloutState::Unspecified) {
        pb::RolloutState::Running => "running",
        pb::RolloutState::Paused => "paused",
        pb::RolloutState::Completed => "completed",
        pb::RolloutState::RolledBack => "rolled back",
        pb::RolloutState::Unspecified => "unspecified",
    }
    .to_owned()
}

fn role_name(role: i32) -> String {
    let role = pb::Role::try_from(role).unwrap_or(pb::Role::Unspecified);
    format!("{role:?}").to_lowercase()
}

/// The flags of `environment` whose key, description or owner holds `text`, by key, as the
/// Admin API lists them (every page).
async fn flags_of(admin: &mut Admin, environment: &str, text: &str) -> Vec<pb::Flag> {
    entries_of(admin, environment, text)
        .await
        .into_iter()
        .filter_map(|entry| entry.flag)
        .collect()
}

/// The segments of `environment`, by key, each as `GetSegment` returns it.
async fn segments_of(admin: &mut Admin, environment: &str) -> Vec<pb::Segment> {
    let listed = admin
        .list_segments(pb::ListSegmentsRequest {
            environment: environment.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("segments")
        .into_inner();
    assert!(listed.next_page_token.is_empty(), "one page of segments");
    let mut segments = Vec::new();
    for entry in listed.segments {
        let summary = entry.segment.and_then(|s| s.segment);
        let key = summary.expect("a segment").key;
        let segment = admin
            .get_segment(pb::GetSegmentRequest {
                environment: environment.into(),
                key,
            })
            .await
            .expect("a segment")
            .into_inner()
            .segment
            .expect("a segment");
        segments.push(segment);
    }
    segments
}

/// [`flags_of`], each flag with its usage.
async fn entries_of(admin: &mut Admin, environment: &str, text: &str) -> Vec<pb::FlagEntry> {
    let mut flags = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_flags(pb::ListFlagsRequest {
                environment: environment.into(),
                text: text.into(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .expect("flags")
            .into_inner();
        flags.extend(page.flags);
        if page.next_page_token.is_empty() {
            return flags;
        }
        page_token = page.next_page_token;
    }
}

/// A browser for the calling test; `None` when it is skipped.
async fn browser() -> Option<Browser> {
    static ON_POSTGRES: Once = Once::new();
    if store_kind() != StoreKind::Sled {
        ON_POSTGRES.call_once(|| {
            // Straight to stderr: the test harness captures what `eprintln!` prints.
            let _ = writeln!(
                std::io::stderr(),
                "console browser tests: run on sled alone (the console's HTTP tests cover \
                 PostgreSQL), skipped here"
            );
        });
        return None;
    }
    Browser::start().await
}

/// The console's address.
fn console(server: &TestServer) -> String {
    format!("http://{}", server.addr)
}

/// Signs in on the form with `token`, typed into its field, and waits for the environments.
async fn sign_in(browser: &Browser, server: &TestServer, token: &str) {
    browser.goto(&format!("{}/login", console(server))).await;
    browser.find("#token").await.type_text(token).await;
    browser.find("main button[type=submit]").await.click().await;
    browser.wait_for_path("/envs").await;
}

/// The keys of the flags the page shown lists.
async fn keys_shown(browser: &Browser) -> Vec<String> {
    browser.texts("tbody .key").await
}

fn keys_of(flags: &[pb::Flag]) -> Vec<String> {
    flags.iter().map(|f| f.key.clone()).collect()
}

/// Applies `count` boolean flags `flag-00000`, `flag-00001`, … to `production` in one
/// request; every hundredth has the description "Checkout experiment N".
async fn many_flags(admin: &mut Admin, count: usize) {
    let flags = (0..count)
        .map(|i| {
            let mut flag = boolean_flag(&format!("flag-{i:05}"));
            if i % 100 == 0 {
                flag.description = Some(format!("Checkout experiment {i}"));
            }
            flag.enabled = i % 2 == 0;
            flag
        })
        .collect();
    admin
        .apply(pb::ApplyRequest {
            environment: "production".into(),
            source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                flags,
                ..Default::default()
            })),
            ..Default::default()
        })
        .await
        .expect("applied");
}

#[tokio::test]
async fn an_admin_signs_in_walks_every_page_and_signs_out() {
    let Some(browser) = browser().await else {
        return;
    };
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_environment(&mut admin, "staging").await;
    let mut described = boolean_flag("new-checkout");
    described.description = Some("The checkout of 2026".into());
    create_flag(&mut admin, "production", described).await;
    let mut split_flag = boolean_flag("search-ranking");
    split_flag.default = Some(split(&[("on", 10_000), ("off", 90_000)]));
    create_flag(&mut admin, "production", split_flag).await;
    create_flag(&mut admin, "staging", boolean_flag("dark-mode")).await;
    every_kind_of_page(&mut admin).await;
    token_of(&server, "release-bot", pb::Role::Editor, "production").await;
    let sdk = sdk_token(&server, "web-shop", "production").await;
    let web_shop = sdk_client(server.endpoint(), &sdk, "web-shop");
    web_shop.wait_ready(PATIENCE).await.expect("ready");
    let latest = revision(&mut admin, "production").await;
    eventually("the web shop applied the latest revision", async || {
        let clients = admin
            .list_clients(pb::ListClientsRequest {
                environment: "production".into(),
            })
            .await
            .expect("clients")
            .into_inner()
            .clients;
        clients.len() == 1 && clients[0].applied_revision == latest
    })
    .await;
    let facts = Facts::read(&mut admin).await;

    browser.goto(&format!("{}/envs", console(&server))).await;
    assert_eq!(browser.path().await, "/login", "a page without a session");
    browser.screenshot("login").await;
    sign_in(&browser, &server, &server.admin_token).await;
    assert_eq!(
        browser.texts("header nav a").await,
        ["Flagstaff", "Environments", "Tokens"]
    );

    for (name, path, shows) in WALK {
        browser.goto(&format!("{}{path}", console(&server))).await;
        assert_eq!(browser.path().await, *path);
        assert_eq!(browser.status().await, 200, "{path}");
        assert!(browser.title().await.ends_with(" · Flagstaff"), "{path}");
        assert_eq!(
            browser.text("header .who").await,
            "Signed in as admin (admin)",
            "{path}"
        );
        for (selector, expected) in shows(&facts) {
            assert!(!expected.is_empty(), "{path}: {selector} checks nothing");
            assert_eq!(
                browser.texts(selector).await,
                expected,
                "{path}: {selector}"
            );
        }
        browser.screenshot(name).await;
    }

    for (context, name) in [
        (
            json!({"targetingKey": "user-42", "country": "FR", "plan": "pro"}),
            "rule",
        ),
        (json!({"targetingKey": "user-7", "country": "US"}), "split"),
    ] {
        evaluate_on_the_page(&browser, &server, &mut admin, &context).await;
        browser.screenshot(&format!("flag-evaluated-{name}")).await;
    }

    browser.find("header form button").await.click().await;
    browser.wait_for_path("/login").await;
    browser.screenshot("signed-out").await;
    for (_, path, _) in WALK {
        browser.goto(&format!("{}{path}", console(&server))).await;
        assert_eq!(browser.path().await, "/login", "{path} after signing out");
    }
}

/// In `production`: `checkout`, with a prerequisite, rules with conditions (one of a
/// segment) and a split default; the segment `beta-testers`; `new-onboarding`, being rolled
/// out under a guard.
async fn every_kind_of_page(admin: &mut Admin) {
    create_flag(
        admin,
        "production",
        flag(json!({
            "key": "payments", "kind": "boolean", "variants": {"on": true, "off": false},
            "off_variant": "off", "enabled": true, "default": {"variant": "on"},
        })),
    )
    .await;
    let beta = flagstaff_engine::segment_from_value(&json!({
        "key": "beta-testers",
        "description": "People who asked to see new things first",
        "included": ["user-1", "user-2", "user-3"],
        "excluded": ["user-8", "user-9"],
    }))
    .expect("a segment");
    create_segment(admin, "production", pb::Segment::from(&beta)).await;
    create_flag(
        admin,
        "production",
        flag(json!({
            "key": "checkout", "kind": "boolean", "variants": {"on": true, "off": false},
            "off_variant": "off", "enabled": true,
            "tags": ["payments", "web"], "owner": "checkout-team",
            "prerequisites": [{"flag": "payments", "variants": ["on"]}],
            "rules": [
                {"id": "eu", "serve": {"variant": "on"}, "conditions": [
                    {"attribute": "country", "op": "in", "values": ["DE", "FR"]},
                    {"attribute": "plan", "op": "in", "values": ["free"], "negate": true},
                ]},
                {"id": "beta", "serve": {"variant": "on"},
                 "conditions": [{"op": "in_segment", "values": ["beta-testers"]}]},
            ],
            "default": {"split": {"weights": [
                {"variant": "on", "weight": 25_000}, {"variant": "off", "weight": 75_000},
            ]}},
        })),
    )
    .await;
    create_flag(admin, "production", boolean_flag("new-onboarding")).await;
    admin
        .start_rollout(pb::StartRolloutRequest {
            environment: "production".into(),
            flag: "new-onboarding".into(),
            target_variant: "on".into(),
            stages: [(10_000, 3_600_000), (100_000, 0)]
                .map(|(percent, hold_ms)| pb::RolloutStage { percent, hold_ms })
                .to_vec(),
            guard: Some(pb::RolloutGuard {
                event: "signup_error".into(),
                max_ratio: 1.5,
                min_events: 50,
            }),
            ..Default::default()
        })
        .await
        .expect("plan started");
}

/// Evaluates `checkout` for `context` with the flag page's form, typed and sent as a person
/// does, and checks that the page answers what the Admin API's `Evaluate` does.
async fn evaluate_on_the_page(
    browser: &Browser,
    server: &TestServer,
    admin: &mut Admin,
    context: &serde_json::Value,
) {
    let path = "/envs/production/flags/checkout";
    browser.goto(&format!("{}{path}", console(server))).await;
    let text = context.to_string();
    let field = browser.find("#context").await;
    field.clear().await;
    field.type_text(&text).await;
    browser.find("form.evaluate button").await.click().await;
    let mut sent = reqwest::Url::parse("http://console/").expect("a URL");
    sent.query_pairs_mut().append_pair("context", &text);
    browser
        .wait_for_path(&format!("{path}?{}", sent.query().unwrap_or_default()))
        .await;
    assert_eq!(browser.status().await, 200);

    let mut attributes = Vec::new();
    for (name, value) in context.as_object().expect("an object") {
        if name != "targetingKey" {
            attributes.push(pb::Attribute {
                name: name.clone(),
                value: Some(pb::AttributeValue {
                    value: Some(pb::attribute_value::Value::StringValue(
                        value.as_str().expect("a string").to_owned(),
                    )),
                }),
            });
        }
    }
    let evaluations = admin
        .evaluate(pb::EvaluateRequest {
            environment: "production".into(),
            flag: "checkout".into(),
            context: Some(pb::Context {
                key: context["targetingKey"].as_str().expect("a key").to_owned(),
                attributes,
            }),
        })
        .await
        .expect("evaluated")
        .into_inner()
        .evaluations;
    let [expected] = evaluations.as_slice() else {
        panic!("one evaluation: {evaluations:?}");
    };
    assert_eq!(browser.text("p.evaluation strong").await, expected.variant);
    assert_eq!(browser.text("p.evaluation code").await, expected.value_json);
    let answer = browser.text("p.evaluation").await;
    let reason = expected.reason.clone().expect("a reason");
    let why = match pb::ReasonKind::try_from(reason.kind) {
        Ok(pb::ReasonKind::RuleMatch) => format!(
            "rule {} ({}) matched",
            reason.rule_index + 1,
            reason.rule_id
        ),
        Ok(pb::ReasonKind::Default) => "no rule matched".to_owned(),
        kind => panic!("{context}: {kind:?}"),
    };
    assert!(answer.contains(&why), "{answer:?} says {why:?}");
    if let Some(bucket) = expected.bucket {
        assert!(
            answer.contains(&format!("bucket {bucket} of 100,000")),
            "{answer:?} names bucket {bucket}"
        );
    }
}

#[tokio::test]
async fn a_session_ends_with_its_tokens_revocation_and_after_12_hours_unused() {
    let Some(browser) = browser().await else {
        return;
    };
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let alice = token_of(&server, "alice", pb::Role::Admin, "").await;
    sign_in(&browser, &server, &alice).await;
    assert_eq!(
        browser.text("header .who").await,
        "Signed in as alice (admin)"
    );
    revoke_named(&mut admin, "alice").await;
    browser.refresh().await;
    assert_eq!(browser.path().await, "/login", "revoked");
    browser.screenshot("after-revocation").await;

    sign_in(&browser, &server, &server.admin_token).await;
    let id = browser
        .cookie("flagstaff_session")
        .await
        .expect("a session cookie");
    // The session, last used 12 hours ago and a bit.
    let store = server.environments.store().clone();
    let id_hash = flagstaff_server::auth::hash(&id);
    let mut record = store.session(&id_hash).expect("read").expect("stored");
    record.seen_ms -= 12 * 60 * 60 * 1000 + 1000;
    store.put_session(&record).expect("aged");
    browser.refresh().await;
    assert_eq!(browser.path().await, "/login", "unused for 12 hours");
}

#[tokio::test]
async fn forged_posts_from_another_origin_or_without_the_csrf_token_change_nothing() {
    let Some(browser) = browser().await else {
        return;
    };
    let server = TestServer::start().await;
    let console = console(&server);
    let envs = format!("{console}/envs");

    // Another site signs the browser in with a token of its choosing.
    create_environment(&mut server.admin().await, "production").await;
    let editor = token_of(&server, "mallory", pb::Role::Editor, "production").await;
    let site = OtherSite::serve(format!(
        "<!doctype html><title>Win a prize</title><form method=post action={console}/login>\
         <input type=hidden name=token value={editor}><input type=hidden name=csrf value=x>\
         <button id=forge>Claim</button></form>"
    ))
    .await;
    browser.goto(&site.url()).await;
    browser.find("#forge").await.click().await;
    browser.wait_for_path("/login").await;
    assert_eq!(browser.status().await, 403);
    assert_eq!(browser.text("h1").await, "Refused");
    browser.screenshot("sign-in-from-another-site").await;
    browser.goto(&envs).await;
    assert_eq!(browser.path().await, "/login", "not signed in");

    sign_in(&browser, &server, &server.admin_token).await;
    let csrf = browser
        .find("header form input[name=csrf]")
        .await
        .property("value")
        .await;
    let csrf = csrf.as_str().expect("the session's CSRF token");
    // Another origin (another port of the same host, so the same site: the session's cookie
    // goes along), even knowing the session's CSRF token.
    let site = OtherSite::serve(format!(
        "<!doctype html><title>Win a prize</title><form method=post action={console}/logout>\
         <input type=hidden name=csrf value={csrf}><button id=forge>Claim</button></form>"
    ))
    .await;
    browser.goto(&site.url()).await;
    browser.find("#forge").await.click().await;
    browser.wait_for_path("/logout").await;
    assert_eq!(browser.status().await, 403);
    assert_eq!(browser.text("h1").await, "Refused");
    browser.screenshot("sign-out-from-another-origin").await;
    browser.goto(&envs).await;
    assert_eq!(browser.path().await, "/envs", "still signed in");
    assert_eq!(browser.status().await, 200);

    // The console's own sign-out form, without its CSRF token.
    browser
        .execute(
            "document.querySelector('header form input[name=csrf]').remove()",
            serde_json::json!([]),
        )
        .await;
    browser.find("header form button").await.click().await;
    browser.wait_for_path("/logout").await;
    assert_eq!(browser.status().await, 403);
    assert!(browser.text("main").await.contains("still signed in"));
    browser.screenshot("sign-out-without-csrf").await;
    browser.goto(&envs).await;
    assert_eq!(browser.path().await, "/envs", "still signed in");
    let id = browser
        .cookie("flagstaff_session")
        .await
        .expect("a session");
    let store = server.environments.store().clone();
    let hash = flagstaff_server::auth::hash(&id);
    assert!(store.session(&hash).expect("read").is_some(), "kept");

    // The form as served signs out.
    browser.find("header form button").await.click().await;
    browser.wait_for_path("/login").await;
    assert!(store.session(&hash).expect("read").is_none(), "ended");
}

#[tokio::test]
async fn an_editor_reaches_neither_the_tokens_nor_another_environment() {
    let Some(browser) = browser().await else {
        return;
    };
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_environment(&mut admin, "staging").await;
    create_flag(&mut admin, "production", boolean_flag("new-checkout")).await;
    create_flag(&mut admin, "staging", boolean_flag("secret-project")).await;
    let editor = token_of(&server, "release-bot", pb::Role::Editor, "production").await;
    let console = console(&server);

    sign_in(&browser, &server, &editor).await;
    assert_eq!(
        browser.text("header .who").await,
        "Signed in as release-bot (editor)"
    );
    assert_eq!(
        browser.texts("header nav a").await,
        ["Flagstaff", "Environments"],
        "no Tokens link"
    );
    assert_eq!(browser.texts("tbody th").await, ["production"]);
    browser.screenshot("environments").await;

    browser.goto(&format!("{console}/tokens")).await;
    assert_eq!(browser.status().await, 403);
    assert_eq!(browser.text("h1").await, "Admins only");
    assert!(browser.find_all("tbody th").await.is_empty());
    browser.screenshot("tokens-refused").await;

    browser.goto(&format!("{console}/envs/staging/flags")).await;
    assert_eq!(browser.status().await, 404);
    assert_eq!(browser.text("h1").await, "No such environment");
    assert!(!browser.text("body").await.contains("secret-project"));
    browser.screenshot("other-environment").await;

    browser
        .goto(&format!("{console}/envs/production/flags"))
        .await;
    assert_eq!(browser.status().await, 200);
    assert_eq!(keys_shown(&browser).await, ["new-checkout"]);
}

/// The description of the element with the focus: its tag, id, text and `href`.
async fn focused(browser: &Browser) -> String {
    let active = browser.active().await;
    format!(
        "{}#{} {:?} {}",
        active.tag().await,
        active.attribute("id").await.unwrap_or_default(),
        active.text().await,
        active.attribute("href").await.unwrap_or_default()
    )
}

/// Presses Tab until the focused element is what `wanted` says, at most `limit` times; each
/// element focused on the way must be inside `main`.
async fn tab_to(browser: &Browser, wanted: &str, limit: usize) {
    let mut seen = Vec::new();
    for _ in 0..limit {
        browser.press(keys::TAB).await;
        let now = focused(browser).await;
        assert!(
            browser.active().await.is_inside("main").await,
            "{now} is outside main, after {seen:?}"
        );
        if now.contains(wanted) {
            return;
        }
        seen.push(now);
    }
    panic!("no {wanted} within {limit} Tabs: {seen:?}");
}

/// Presses Tab once, which on a page just loaded focuses the skip link, and Enter, which
/// follows it.
async fn skip_to_content(browser: &Browser) {
    browser.press(keys::TAB).await;
    let skip = browser.active().await;
    assert_eq!(skip.text().await, "Skip to content", "the first focus");
    assert_eq!(skip.attribute("href").await.as_deref(), Some("#main"));
    browser.press(keys::ENTER).await;
    assert!(browser.url().await.ends_with("#main"));
}

#[tokio::test]
async fn the_keyboard_alone_signs_in_finds_an_environments_flags_searches_and_pages() {
    let Some(browser) = browser().await else {
        return;
    };
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    many_flags(&mut admin, 130).await;

    browser.goto(&format!("{}/login", console(&server))).await;
    assert_eq!(focused(&browser).await, "input#token \"\" ", "autofocus");
    browser.press(&server.admin_token).await;
    browser.press(keys::ENTER).await;
    browser.wait_for_path("/envs").await;

    // The skip link comes first, shows when focused, and leads past the header.
    browser.press(keys::TAB).await;
    assert!(focused(&browser)
        .await
        .starts_with("a# \"Skip to content\""));
    browser.screenshot("skip-link").await;
    browser.press(keys::ENTER).await;
    assert!(browser.url().await.ends_with("#main"));
    browser.press(keys::TAB).await;
    let first = focused(&browser).await;
    assert!(
        first.ends_with("/envs/production/flags") && first.contains("\"production\""),
        "{first}"
    );
    browser.press(keys::ENTER).await;
    browser.wait_for_path("/envs/production/flags").await;

    skip_to_content(&browser).await;
    tab_to(&browser, "input#q", 12).await;
    browser.press("flag-000").await;
    browser.press(keys::ENTER).await;
    browser
        .wait_for_path("/envs/production/flags?q=flag-000&state=")
        .await;
    assert_eq!(
        browser.text("p.count").await,
        "100 of 130 flags, page 1 of 2."
    );
    browser.screenshot("searched").await;

    skip_to_content(&browser).await;
    tab_to(&browser, "\"Next page\"", 20).await;
    browser.press(keys::ENTER).await;
    browser
        .wait_for_path("/envs/production/flags?page=2&q=flag-000")
        .await;
    assert_eq!(
        browser.text("p.count").await,
        "100 of 130 flags, page 2 of 2."
    );
    let expected: Vec<String> = (50..100).map(|i| format!("flag-{i:05}")).collect();
    assert_eq!(keys_shown(&browser).await, expected);
    browser.screenshot("next-page").await;
}

#[tokio::test]
async fn ten_thousand_flags_page_and_search() {
    let Some(browser) = browser().await else {
        return;
    };
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    many_flags(&mut admin, 10_000).await;
    let all = keys_of(&flags_of(&mut admin, "production", "").await);
    assert_eq!(all.len(), 10_000);
    let flags = format!("{}/envs/production/flags", console(&server));

    sign_in(&browser, &server, &server.admin_token).await;
    browser.goto(&flags).await;
    assert_eq!(
        browser.text("p.count").await,
        "10000 of 10000 flags, page 1 of 200."
    );
    assert_eq!(keys_shown(&browser).await, all[..50]);
    browser.screenshot("page-1").await;

    browser.find("a[rel=next]").await.click().await;
    browser.wait_for_path("/envs/production/flags?page=2").await;
    assert_eq!(keys_shown(&browser).await, all[50..100]);
    browser.screenshot("page-2").await;
    browser.find("a[rel=prev]").await.click().await;
    browser.wait_for_path("/envs/production/flags?page=1").await;
    assert_eq!(keys_shown(&browser).await, all[..50]);

    browser.goto(&format!("{flags}?page=200")).await;
    assert_eq!(keys_shown(&browser).await, all[9950..]);
    assert!(browser.find_all("a[rel=next]").await.is_empty());
    browser.screenshot("page-200").await;

    let found = keys_of(&flags_of(&mut admin, "production", "checkout").await);
    assert_eq!(found.len(), 100);
    browser.goto(&flags).await;
    browser.find("#q").await.type_text("Checkout").await;
    browser.find("form[role=search] button").await.click().await;
    browser
        .wait_for_path("/envs/production/flags?q=Checkout&state=")
        .await;
    assert_eq!(
        browser.text("p.count").await,
        "100 of 10000 flags, page 1 of 2."
    );
    assert_eq!(keys_shown(&browser).await, found[..50]);
    browser.screenshot("searched").await;
    browser.find("a[rel=next]").await.click().await;
    browser
        .wait_for_path("/envs/production/flags?page=2&q=Checkout")
        .await;
    assert_eq!(keys_shown(&browser).await, found[50..]);
}

/// The header the sign-on proxy of these tests names people in.
const PROXY_HEADER: &str = "X-Forwarded-Email";

/// A server whose console signs people in through a proxy connecting from `from`, letting in
/// the people of `users`.
async fn server_behind_proxy(from: &str, users: &std::path::Path) -> TestServer {
    let sign_on = ProxySignOn::new(PROXY_HEADER, &[from.to_owned()], users).expect("sign-on");
    TestServer::builder()
        .console(ConsoleOptions {
            proxy: Some(sign_on),
        })
        .start()
        .await
}

#[tokio::test]
async fn through_the_sign_on_proxy_only_people_of_the_users_file_come_in() {
    let Some(browser) = browser().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let users = dir.path().join("users.yaml");
    std::fs::write(
        &users,
        "alice@example.com: {role: admin}\n\
         bob@example.com: {role: editor, environments: [production]}\n",
    )
    .expect("the users file");
    // The proxy connects from loopback.
    let server = server_behind_proxy("127.0.0.1/32", &users).await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_environment(&mut admin, "staging").await;
    create_flag(&mut admin, "production", boolean_flag("new-checkout")).await;
    token_of(&server, "release-bot", pb::Role::Editor, "production").await;
    let facts = Facts::read_without_documents(&mut admin).await;
    let proxy = SignOnProxy::start(server.addr, PROXY_HEADER).await;

    // An admin of the users file: every environment, and the tokens.
    proxy.sign_in("alice@example.com");
    for (name, path, shows) in [
        ("environments", "/envs", Facts::environments as Shows),
        ("tokens", "/tokens", Facts::tokens),
    ] {
        browser.goto(&format!("{}{path}", proxy.url())).await;
        assert_eq!(browser.path().await, path);
        assert_eq!(browser.status().await, 200, "{path}");
        assert_eq!(
            browser.text("header .who").await,
            "Signed in as alice@example.com (admin)",
            "{path}"
        );
        for (selector, expected) in shows(&facts) {
            assert_eq!(
                browser.texts(selector).await,
                expected,
                "{path}: {selector}"
            );
        }
        browser.screenshot(&format!("admin-{name}")).await;
    }
    assert!(
        browser.cookie("flagstaff_session").await.is_some(),
        "the session's cookie came back through the proxy"
    );
    // Signing out is a form: its POST goes through the proxy and is let in as from the
    // console's own address; the redirect comes back.
    browser.find("header form button").await.click().await;
    browser.wait_for_path("/login").await;
    assert_eq!(browser.status().await, 200);
    let main = browser.text("main").await;
    assert!(main.contains("sign out at the sign-on proxy"), "{main}");
    browser.screenshot("signed-out-of-the-console").await;

    // An editor: their environment alone, and no tokens.
    proxy.sign_in("bob@example.com");
    browser.goto(&format!("{}/envs", proxy.url())).await;
    assert_eq!(
        browser.text("header .who").await,
        "Signed in as bob@example.com (editor)"
    );
    assert_eq!(browser.texts("tbody th").await, ["production"]);
    browser.screenshot("editor-environments").await;
    browser.goto(&format!("{}/tokens", proxy.url())).await;
    assert_eq!(browser.status().await, 403);
    assert_eq!(browser.text("h1").await, "Admins only");

    // Someone the proxy signed in whom the users file does not list.
    proxy.sign_in("mallory@example.com");
    for path in ["/envs", "/envs/production/flags", "/tokens"] {
        browser.goto(&format!("{}{path}", proxy.url())).await;
        assert_eq!(browser.status().await, 403, "{path}");
        assert_eq!(browser.text("h1").await, "Not a user of this console");
        let main = browser.text("main").await;
        assert!(
            main.contains("mallory@example.com") && main.contains("users file"),
            "{path}: {main}"
        );
        assert!(browser.find_all("header .who").await.is_empty(), "{path}");
        assert!(!browser.text("body").await.contains("new-checkout"));
    }
    browser.screenshot("not-in-the-users-file").await;

    // Straight to flagstaffd, past the proxy: no one is named.
    browser.goto(&format!("{}/envs", console(&server))).await;
    assert_eq!(browser.status().await, 403);
    assert_eq!(browser.text("h1").await, "Not signed in");
    browser.screenshot("past-the-proxy").await;
}

#[tokio::test]
async fn the_sign_on_proxy_is_believed_only_from_its_addresses() {
    let Some(browser) = browser().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let users = dir.path().join("users.yaml");
    std::fs::write(&users, "alice@example.com: {role: admin}\n").expect("the users file");
    // The proxy's range excludes loopback, where the browser and the proxy connect from.
    let server = server_behind_proxy("10.0.0.0/8", &users).await;
    create_environment(&mut server.admin().await, "production").await;

    let proxy = SignOnProxy::start(server.addr, PROXY_HEADER).await;
    proxy.sign_in("alice@example.com");
    for (name, url) in [
        ("directly", console(&server)),
        ("through-a-proxy-elsewhere", proxy.url()),
    ] {
        for path in ["/envs", "/tokens", "/login"] {
            browser.goto(&format!("{url}{path}")).await;
            assert_eq!(browser.status().await, 403, "{name} {path}");
            assert_eq!(
                browser.text("h1").await,
                "Sign in through the sign-on proxy"
            );
            let main = browser.text("main").await;
            assert!(
                main.contains("came from 127.0.0.1"),
                "{name} {path}: {main}"
            );
            assert!(browser.find_all("header .who").await.is_empty());
            assert!(
                browser.cookie("flagstaff_session").await.is_none(),
                "{name}"
            );
        }
        browser.screenshot(&format!("refused-{name}")).await;
    }
}
