//! The web console in a real browser (DESIGN.md section 11): headless Chromium over WebDriver
//! (`flagstaff_tests::browser`) against a real flagstaffd. Signing in by typing a token, every
//! page compared with what the Admin API says, signing out; sessions ended by revocation and
//! by 12 hours without use; forged POSTs from another origin or without the CSRF token; what
//! an editor may reach; the keyboard alone; 10,000 flags paged and searched.
//!
//! Each test saves screenshots of the pages it sees under
//! `<target dir>/console-screenshots/<test>/`. Without Chromium the tests are skipped (one
//! line says so) unless `FLAGSTAFF_REQUIRE_BROWSER=1`. They run on sled alone: the HTTP tests
//! of `console.rs` cover both stores.

use std::io::Write;
use std::sync::Once;

use flagstaff_proto::pb;
use flagstaff_server::storage::Store;
use flagstaff_tests::browser::{keys, Browser, OtherSite};
use flagstaff_tests::{store_kind, Admin, StoreKind, TestServer};

use super::fixtures::*;

/// What a page must show, from the Admin API: the texts of the elements each CSS selector
/// matches, in order.
type Shows = fn(&Facts) -> Vec<(&'static str, Vec<String>)>;

/// The pages the walk visits as an admin: a name for its screenshot, its address, and what it
/// must show. One line per page.
const WALK: &[(&str, &str, Shows)] = &[
    ("environments", "/envs", Facts::environments),
    ("flags", "/envs/production/flags", Facts::production_flags),
    ("tokens", "/tokens", Facts::tokens),
];

/// What the Admin API says there is.
struct Facts {
    environments: Vec<pb::Environment>,
    /// The flags of `production`, by key.
    production: Vec<pb::Flag>,
    tokens: Vec<pb::Token>,
}

impl Facts {
    async fn read(admin: &mut Admin) -> Facts {
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
            production: flags_of(admin, "production", "").await,
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

    fn production_flags(&self) -> Vec<(&'static str, Vec<String>)> {
        let total = self.production.len();
        let first = &self.production[..total.min(50)];
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

fn role_name(role: i32) -> String {
    let role = pb::Role::try_from(role).unwrap_or(pb::Role::Unspecified);
    format!("{role:?}").to_lowercase()
}

/// The flags of `environment` whose key, description or owner holds `text`, by key, as the
/// Admin API lists them (every page).
async fn flags_of(admin: &mut Admin, environment: &str, text: &str) -> Vec<pb::Flag> {
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
        flags.extend(page.flags.into_iter().filter_map(|entry| entry.flag));
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
    token_of(&server, "release-bot", pb::Role::Editor, "production").await;
    token_of(&server, "web-shop", pb::Role::Sdk, "production").await;
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
            assert_eq!(
                browser.texts(selector).await,
                expected,
                "{path}: {selector}"
            );
        }
        browser.screenshot(name).await;
    }

    browser.find("header form button").await.click().await;
    browser.wait_for_path("/login").await;
    browser.screenshot("signed-out").await;
    for (_, path, _) in WALK {
        browser.goto(&format!("{}{path}", console(&server))).await;
        assert_eq!(browser.path().await, "/login", "{path} after signing out");
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
