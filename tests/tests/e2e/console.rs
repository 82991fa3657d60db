//! The web console over HTTP (DESIGN.md section 11): signing in with a token and out, pages
//! that need a session, the checks every POST passes (its `Origin` and its CSRF token), the
//! headers every answer carries, what an editor may see, sessions ended by revocation and by
//! 12 hours without use, and the flag list's search, filters and pages.

use flagstaff_proto::pb;
use flagstaff_server::storage::Store;
use flagstaff_tests::{store_kind, StoreKind, TestServer};
use reqwest::header::{HeaderMap, CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

use super::fixtures::*;

/// A browser of one console: no redirects followed, cookies kept by hand.
pub(super) struct Browser {
    pub(super) client: reqwest::Client,
    pub(super) base: String,
    pub(super) cookies: Vec<(String, String)>,
    /// Headers sent with every request (as a sign-on proxy adds them).
    pub(super) sent: Vec<(String, String)>,
}

/// A page as the browser got it.
pub(super) struct Page {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: String,
}

impl Page {
    /// Where a redirect sends the browser.
    pub(super) fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the hidden field `csrf` in the page's (first) form.
    pub(super) fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field");
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("the field's end")].to_owned()
    }
}

impl Browser {
    pub(super) fn new(server: &TestServer) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            base: format!("http://{}", server.addr),
            cookies: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps the cookies `headers` set (and drops those they remove).
    fn keep(&mut self, headers: &HeaderMap) {
        for set in headers.get_all(SET_COOKIE) {
            let set = set.to_str().expect("ascii");
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            self.cookies.retain(|(n, _)| n != name);
            if !attributes.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    pub(super) async fn get(&mut self, path: &str) -> Page {
        let request = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header());
        self.send(request).await
    }

    /// POSTs `form` from a page of `origin` (`None`: no Origin header).
    pub(super) async fn post_from(
        &mut self,
        origin: Option<&str>,
        path: &str,
        form: &[(&str, &str)],
    ) -> Page {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        self.send(request).await
    }

    /// POSTs `form` from a page of this console.
    pub(super) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post_from(Some(&origin), path, form).await
    }

    async fn send(&mut self, mut request: reqwest::RequestBuilder) -> Page {
        for (name, value) in &self.sent {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.expect("an answer");
        let (status, headers) = (response.status(), response.headers().clone());
        self.keep(&headers);
        let body = response.text().await.expect("a body");
        Page {
            status,
            headers,
            body,
        }
    }

    /// Signs in with `token` through the form; the answer to the form.
    pub(super) async fn sign_in(&mut self, token: &str) -> Page {
        let form = self.get("/login").await;
        assert_eq!(form.status, StatusCode::OK);
        let csrf = form.csrf();
        self.post("/login", &[("token", token), ("csrf", &csrf)])
            .await
    }

    pub(super) fn has_session(&self) -> bool {
        self.cookies.iter().any(|(n, _)| n == "flagstaff_session")
    }
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_token_signs_in_and_out_and_every_page_needs_a_session() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let mut browser = Browser::new(&server);

    let away = browser.get("/envs").await;
    assert_eq!(away.status, StatusCode::SEE_OTHER);
    assert_eq!(away.location(), "/login");

    let signed_in = browser.sign_in(&server.admin_token).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.location(), "/envs");
    let set: Vec<&str> = signed_in
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("flagstaff_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );

    let envs = browser.get("/envs").await;
    assert_eq!(envs.status, StatusCode::OK);
    assert!(
        envs.body.contains("href=\"/envs/production/flags\""),
        "{}",
        envs.body
    );
    assert!(
        envs.body.contains("Signed in as <strong>admin</strong>"),
        "{}",
        envs.body
    );
    let policy = envs.headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("script-src"), "no script at all: {policy}");
    assert_eq!(envs.headers["x-frame-options"], "DENY");

    let csrf = envs.csrf();
    let out = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login");
    assert!(!browser.has_session());
    // The old cookie, sent again, is no session any more.
    browser
        .cookies
        .push(("flagstaff_session".into(), session_id(session)));
    assert_eq!(browser.get("/envs").await.location(), "/login");
}

fn session_id(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("a value")
}

#[tokio::test]
async fn forged_posts_change_nothing() {
    let server = TestServer::start().await;
    let mut browser = Browser::new(&server);

    // Sign-in without the form's CSRF token, from another site, or without an Origin.
    let form = browser.get("/login").await;
    let csrf = form.csrf();
    let token = server.admin_token.clone();
    for (origin, fields) in [
        (
            Some("http://evil.example"),
            vec![("token", token.as_str()), ("csrf", csrf.as_str())],
        ),
        (
            None,
            vec![("token", token.as_str()), ("csrf", csrf.as_str())],
        ),
    ] {
        let refused = browser.post_from(origin, "/login", &fields).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert!(!browser.has_session());
    }
    let refused = browser
        .post("/login", &[("token", &token), ("csrf", "0000")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!browser.has_session());

    // Signed in, a sign-out without this session's token or from another site does nothing.
    browser.sign_in(&token).await;
    assert!(browser.has_session());
    let csrf = browser.get("/envs").await.csrf();
    let refused = browser.post("/logout", &[("csrf", "wrong")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = browser
        .post_from(Some("https://evil.example"), "/logout", &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        browser.get("/envs").await.status,
        StatusCode::OK,
        "still signed in"
    );
}

#[tokio::test]
async fn only_admin_and_editor_tokens_sign_in_and_an_editor_sees_its_environment_alone() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_environment(&mut admin, "staging").await;
    create_flag(&mut admin, "staging", boolean_flag("secret-project")).await;

    for role in [pb::Role::Sdk, pb::Role::Client] {
        let name = format!("{role:?}").to_lowercase();
        let token = token_of(&server, &name, role, "production").await;
        let mut browser = Browser::new(&server);
        let refused = browser.sign_in(&token).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{role:?}");
        assert!(
            refused.body.contains("admin or editor token"),
            "{}",
            refused.body
        );
        assert!(!browser.has_session());
    }
    let garbage = Browser::new(&server).sign_in("fs_nothing").await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);

    let editor = token_of(&server, "ed", pb::Role::Editor, "production").await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&editor).await;
    let envs = browser.get("/envs").await;
    assert!(
        envs.body.contains("/envs/production/flags"),
        "{}",
        envs.body
    );
    assert!(!envs.body.contains("staging"), "{}", envs.body);
    assert!(!envs.body.contains("href=\"/tokens\""), "{}", envs.body);
    let other = browser.get("/envs/staging/flags").await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert!(!other.body.contains("secret-project"));
    // The same answer as for an environment that does not exist.
    let none = browser.get("/envs/nowhere/flags").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_session_ends_with_its_tokens_revocation_and_after_12_hours_unused() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let alice = token_of(&server, "alice", pb::Role::Admin, "").await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&alice).await;
    assert_eq!(browser.get("/envs").await.status, StatusCode::OK);
    revoke_named(&mut admin, "alice").await;
    assert_eq!(browser.get("/envs").await.location(), "/login");

    // A session last used 12 hours ago and a bit.
    let mut browser = Browser::new(&server);
    browser.sign_in(&server.admin_token).await;
    let id = browser
        .cookies
        .iter()
        .find(|(n, _)| n == "flagstaff_session")
        .map(|(_, v)| v.clone())
        .expect("a session");
    let store = server.environments.store().clone();
    let id_hash = flagstaff_server::auth::hash(&id);
    let mut record = store.session(&id_hash).expect("read").expect("stored");
    record.seen_ms -= 12 * 60 * 60 * 1000 + 1000;
    store.put_session(&record).expect("aged");
    assert_eq!(browser.get("/envs").await.location(), "/login");
    assert_eq!(store.session(&id_hash).expect("read"), None, "removed");
}

#[tokio::test]
async fn the_flag_list_searches_filters_and_pages() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let mut flags = Vec::new();
    for i in 0..120 {
        let mut flag = boolean_flag(&format!("flag-{i:03}"));
        if i % 10 == 0 {
            flag.description = Some(format!("Checkout experiment {i}"));
        }
        flag.enabled = i % 2 == 0;
        if i == 1 {
            flag.default = Some(split(&[("on", 10_000), ("off", 90_000)]));
        }
        flags.push(flag);
    }
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
    let mut browser = Browser::new(&server);
    browser.sign_in(&server.admin_token).await;

    let first = browser.get("/envs/production/flags").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(
        first.body.contains("120 of 120 flags, page 1 of 3"),
        "{}",
        first.body
    );
    assert!(first.body.contains("flag-049") && !first.body.contains("flag-050"));
    // What each serves, as the CLI writes it.
    assert!(
        first.body.contains("<td>on 10% / off 90%</td>"),
        "{}",
        first.body
    );
    assert!(first.body.contains("/envs/production/flags?page=2"));
    let last = browser.get("/envs/production/flags?page=3").await;
    assert!(last.body.contains("flag-119") && !last.body.contains("flag-099"));

    let found = browser.get("/envs/production/flags?q=CHECKOUT").await;
    assert!(found.body.contains("12 of 120 flags"), "{}", found.body);
    let off = browser
        .get("/envs/production/flags?q=checkout&state=off")
        .await;
    // Every tenth flag is described, and all of them are even, so on.
    assert!(off.body.contains("0 of 120 flags"), "{}", off.body);
    let on = browser.get("/envs/production/flags?state=on&page=2").await;
    assert!(
        on.body.contains("60 of 120 flags, page 2 of 2"),
        "{}",
        on.body
    );

    // What a search holds is shown escaped, never as markup.
    let escaped = browser.get("/envs/production/flags?q=%3Cscript%3E").await;
    assert!(escaped.body.contains("&#60;script&#62;") || escaped.body.contains("&lt;script&gt;"));
    assert!(!escaped.body.contains("<script>"));
    let bad = browser.get("/envs/production/flags?page=x").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_session_begun_on_one_replica_is_served_by_another() {
    if store_kind() != StoreKind::Postgres {
        return;
    }
    let first = TestServer::start().await;
    create_environment(&mut first.admin().await, "production").await;
    let second = another_replica(&first, TestServer::builder()).await;
    let mut browser = Browser::new(&first);
    browser.sign_in(&first.admin_token).await;
    browser.base = format!("http://{}", second.addr);
    let envs = browser.get("/envs").await;
    assert_eq!(envs.status, StatusCode::OK);
    assert!(envs.body.contains("/envs/production/flags"));
}

#[tokio::test]
async fn the_tokens_page_lists_the_live_tokens_to_admins_alone_and_no_secret() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let editor = token_of(&server, "release-bot", pb::Role::Editor, "production").await;
    let gone = token_of(&server, "old-service", pb::Role::Sdk, "production").await;
    revoke_named(&mut admin, "old-service").await;

    let mut browser = Browser::new(&server);
    browser.sign_in(&server.admin_token).await;
    let page = browser.get("/tokens").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("<th scope=\"row\">release-bot</th>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<td>editor</td>"), "{}", page.body);
    assert!(page.body.contains(" UTC</td>"), "{}", page.body);
    assert!(!page.body.contains("old-service"), "revoked: {}", page.body);
    for secret in [&editor, &gone, &server.admin_token] {
        assert!(!page.body.contains(secret.as_str()), "a secret shown");
    }

    let mut browser = Browser::new(&server);
    browser.sign_in(&editor).await;
    let refused = browser.get("/tokens").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!refused.body.contains("release-bot</th>"));
}

#[tokio::test]
async fn a_browser_speaking_http2_signs_in_and_out() {
    let server = TestServer::start().await;
    let mut browser = Browser::new(&server);
    // As over TLS, where browsers speak HTTP/2: the server is named by the request's
    // authority, not a Host header.
    browser.client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .http2_prior_knowledge()
        .build()
        .expect("an HTTP/2 client");
    let signed_in = browser.sign_in(&server.admin_token).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let csrf = browser.get("/envs").await.csrf();
    let out = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    assert!(!browser.has_session());
}

/// `html` with the entities askama writes turned back into characters, to compare text.
fn text(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&#60;", "<")
        .replace("&gt;", ">")
        .replace("&#62;", ">")
        .replace("&amp;", "&")
        .replace("&#38;", "&")
}

#[tokio::test]
async fn a_flag_page_reads_its_targeting_in_words_evaluates_and_shows_its_history() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_segment(&mut admin, "production", segment("beta-testers", &["u-7"])).await;
    create_flag(&mut admin, "production", boolean_flag("payments")).await;
    let checkout = flag(serde_json::json!({
        "key": "checkout-v2", "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": false,
        "description": "The new checkout <b>flow</b>",
        "tags": ["checkout"], "owner": "payments-team", "temporary": true,
        "prerequisites": [{"flag": "payments", "variants": ["on", "off"]}],
        "rules": [
            {"id": "eu", "conditions": [
                {"attribute": "country", "op": "in", "values": ["DE", "FR"]},
                {"attribute": "plan", "op": "in", "values": ["free"], "negate": true}],
             "serve": {"variant": "on"}},
            {"id": "beta", "conditions": [{"op": "in_segment", "values": ["beta-testers"]}],
             "serve": {"variant": "on"}},
        ],
        "default": {"split": {"bucket_by": "key", "weights": [
            {"variant": "on", "weight": 25000}, {"variant": "off", "weight": 75000}]}},
    }));
    create_flag(&mut admin, "production", checkout).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&server.admin_token).await;

    let off = browser.get("/envs/production/flags/checkout-v2").await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    let page = text(&off.body);
    for words in [
        "The flag is off: every context gets",
        "Unless <a href=\"/envs/production/flags/payments\" class=\"key\">payments</a> serves on or off",
        "If country is one of \"DE\", \"FR\" and plan is present and is not \"free\", serve <strong>on</strong> <span class=\"rule-id\">(rule eu)</span>",
        "If in segment beta-testers, serve",
        "Otherwise serve <strong>on 25% / off 75%</strong>",
        "payments-team",
        "temporary",
    ] {
        assert!(page.contains(words), "{words:?} in {page}");
    }
    // The description is text, never markup.
    assert!(!off.body.contains("<b>flow</b>"), "{}", off.body);
    assert!(page.contains("The new checkout <b>flow</b>"));

    let revision = admin
        .set_flag_enabled(pb::SetFlagEnabledRequest {
            environment: "production".into(),
            key: "checkout-v2".into(),
            enabled: true,
            comment: "launch in the EU".into(),
            ..Default::default()
        })
        .await
        .expect("turned on")
        .into_inner()
        .revision;
    let on = text(&browser.get("/envs/production/flags/checkout-v2").await.body);
    assert!(!on.contains("The flag is off"), "{on}");
    // The history, as the Admin API has it: the newest change first, in words and as a diff.
    let history = flag_history(&mut admin, "checkout-v2").await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].revision, revision);
    let newest = on
        .find(&format!("Revision {revision}"))
        .expect("the newest entry");
    let created = on
        .find(&format!("Revision {}", history[1].revision))
        .expect("the creation");
    assert!(newest < created, "newest first");
    assert!(on.contains("launch in the EU"), "{on}");
    assert!(on.contains("updated</span>: turned on"), "{on}");
    assert!(
        on.contains("<span class=\"remove\">-enabled: false</span>")
            && on.contains("<span class=\"add\">+enabled: true</span>"),
        "{on}"
    );

    // Evaluate for a context: the rule that matched, or the bucket of the split.
    let eu = browser
        .get("/envs/production/flags/checkout-v2?context=%7B%22targetingKey%22%3A%22u-1%22%2C%22country%22%3A%22DE%22%2C%22plan%22%3A%22pro%22%7D")
        .await;
    assert_eq!(eu.status, StatusCode::OK);
    let eu = text(&eu.body);
    assert!(
        eu.contains(
            "Serves <strong class=\"key\">on</strong> (<code>true</code>): rule 1 (eu) matched"
        ),
        "{eu}"
    );
    let nobody = text(
        &browser
            .get("/envs/production/flags/checkout-v2?context=%7B%22targetingKey%22%3A%22u-1%22%7D")
            .await
            .body,
    );
    assert!(
        nobody.contains("no rule matched, so it serves its default; the context fell in bucket"),
        "{nobody}"
    );
    let broken = browser
        .get("/envs/production/flags/checkout-v2?context=%7Bnot%20json")
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert!(
        text(&broken.body).contains("The context is not JSON"),
        "{}",
        broken.body
    );
    let nested = browser
        .get("/envs/production/flags/checkout-v2?context=%5B1%5D")
        .await;
    assert_eq!(nested.status, StatusCode::BAD_REQUEST);
    assert!(
        nested.body.contains("must be a JSON object"),
        "{}",
        nested.body
    );

    let missing = browser.get("/envs/production/flags/nothing-here").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("No such flag"));
}

#[tokio::test]
async fn the_history_pages_back_and_narrows_to_one_flag() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    create_flag(&mut admin, "production", boolean_flag("other")).await;
    let mut revisions = Vec::new();
    for i in 0..30 {
        revisions.push(serve_on(&mut admin, "banner", i % 2 == 0).await);
    }
    let mut browser = Browser::new(&server);
    browser.sign_in(&server.admin_token).await;

    let first = text(&browser.get("/envs/production/history").await.body);
    let last = revisions[revisions.len() - 1];
    assert!(first.contains(&format!("Revision {last}")), "{first}");
    // 25 to a page: the 26th newest is on the next.
    let shown = first.matches("<strong>Revision ").count();
    assert_eq!(shown, 25, "{first}");
    let older_at = first
        .find("/envs/production/history?before=")
        .expect("a link to older changes");
    let link = &first[older_at..];
    let link = &link[..link.find('"').expect("the link's end")];
    let second = text(&browser.get(link).await.body);
    assert_eq!(
        second.matches("<strong>Revision ").count(),
        32 - 25,
        "{second}"
    );
    assert!(
        second.contains(
            "flag <a href=\"/envs/production/flags/other\" class=\"key\">other</a> created"
        ),
        "{second}"
    );
    assert!(!second.contains("Older changes"), "{second}");

    let banner = text(
        &browser
            .get("/envs/production/history?flag=banner")
            .await
            .body,
    );
    assert!(
        banner.contains("History of <span class=\"key\">banner</span>"),
        "{banner}"
    );
    assert!(!banner.contains("class=\"key\">other</a>"), "{banner}");
    assert!(banner.contains("default serve on"), "{banner}");

    let bad = browser
        .get("/envs/production/history?flag=%3Cscript%3E")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // An editor of another environment reads neither its history nor its flags.
    create_environment(&mut admin, "staging").await;
    let editor = token_of(&server, "ed", pb::Role::Editor, "staging").await;
    let mut editor_browser = Browser::new(&server);
    editor_browser.sign_in(&editor).await;
    for path in ["/envs/production/history", "/envs/production/flags/banner"] {
        let refused = editor_browser.get(path).await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!refused.body.contains("banner"), "{path}: {}", refused.body);
    }
}

#[tokio::test]
async fn the_stale_page_finds_what_flag_stale_finds() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let mut finished = boolean_flag("finished-launch");
    finished.temporary = true;
    finished.default = Some(pb::Serve {
        serve: Some(pb::serve::Serve::Variant("on".into())),
    });
    create_flag(&mut admin, "production", finished).await;
    let mut experiment = boolean_flag("experiment");
    experiment.default = Some(split(&[("on", 50_000), ("off", 50_000)]));
    create_flag(&mut admin, "production", experiment).await;
    serve_on(&mut admin, "experiment", true).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&server.admin_token).await;

    // Everything is younger than 30 days.
    let month = text(&browser.get("/envs/production/stale").await.body);
    assert!(month.contains("0 of 2 flags are stale"), "{month}");
    // Asked about now: the temporary flag serving one variant, and the flag never evaluated.
    let now = text(&browser.get("/envs/production/stale?days=0").await.body);
    assert!(now.contains("2 of 2 flags are stale"), "{now}");
    let row = |key: &str| {
        let at = now.find(&format!(">{key}</a>")).expect("listed");
        now[at..at + now[at..].find("</tr>").expect("the row's end")].to_owned()
    };
    assert!(
        row("finished-launch").contains("<td>serves on to everyone</td>"),
        "{now}"
    );
    assert!(
        row("experiment").contains("<td>never evaluated</td>"),
        "{now}"
    );

    // A hundred to a page.
    admin
        .apply(pb::ApplyRequest {
            environment: "production".into(),
            source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                flags: (0..120)
                    .map(|i| boolean_flag(&format!("unused-{i:03}")))
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .await
        .expect("applied");
    let first = text(&browser.get("/envs/production/stale?days=0").await.body);
    assert!(
        first.contains("122 of 122 flags are stale, showing 1–100"),
        "{first}"
    );
    assert!(
        first.contains(">unused-097</a>") && !first.contains(">unused-098</a>"),
        "{first}"
    );
    let second = text(
        &browser
            .get("/envs/production/stale?days=0&page=2")
            .await
            .body,
    );
    assert!(second.contains("showing 101–122"), "{second}");
    assert!(second.contains(">unused-119</a>"), "{second}");

    for bad in [
        "/envs/production/stale?days=x",
        "/envs/production/stale?days=99999",
    ] {
        assert_eq!(
            browser.get(bad).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_page_of_imports_leaves_out_diffs_past_its_share_and_links_to_them() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    // Five imports of 20 flags each: 100 diffs of a new document, more than one page shows.
    for batch in 0..5 {
        admin
            .apply(pb::ApplyRequest {
                environment: "production".into(),
                source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                    flags: (0..20)
                        .map(|i| boolean_flag(&format!("imported-{batch}-{i:02}")))
                        .collect(),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .await
            .expect("applied");
    }
    let mut browser = Browser::new(&server);
    browser.sign_in(&server.admin_token).await;
    let page = browser.get("/envs/production/history").await;
    let body = text(&page.body);
    assert!(body.contains("Diff of imported-0-"), "{body}");
    // The newest import's diffs are shown; the oldest's are linked.
    assert!(
        body.contains("<summary>Diff of imported-4-00 at revision"),
        "{body}"
    );
    assert!(
        !body.contains("<summary>Diff of imported-0-19 at revision"),
        "{body}"
    );
    let at = body
        .find("\">Diff of imported-0-19</a>")
        .expect("a link to the diff left out");
    let link = &body[..at];
    let link = &link[link.rfind("href=\"").expect("its address") + 6..];
    let alone = text(&browser.get(link).await.body);
    assert!(
        alone.contains("<summary>Diff of imported-0-19 at revision"),
        "{alone}"
    );
    assert!(alone.contains("+key: imported-0-19"), "{alone}");
}

/// The value of the hidden field `name` in `body`'s form whose action is `action`.
fn form_field(body: &str, action: &str, name: &str) -> String {
    let form = &body[body
        .find(&format!("action=\"{action}\""))
        .expect("the form")..];
    let form = &form[..form.find("</form>").expect("the form's end")];
    let at = form
        .find(&format!("name=\"{name}\" value=\""))
        .expect("the field")
        + name.len()
        + 15;
    form[at..at + form[at..].find('"').expect("the value's end")].to_owned()
}

#[tokio::test]
async fn a_flag_is_turned_on_and_off_from_its_page_with_the_person_as_the_actor() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let editor = token_of(&server, "ed", pb::Role::Editor, "production").await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&editor).await;
    let action = "/envs/production/flags/checkout/enabled";
    let page = browser.get("/envs/production/flags/checkout").await;
    let (csrf, version) = (
        form_field(&page.body, action, "csrf"),
        form_field(&page.body, action, "version"),
    );
    assert!(page.body.contains(">Turn off</button>"), "{}", page.body);

    // A forged form (no CSRF token, or from another site) changes nothing.
    let forged = browser
        .post(action, &[("enabled", "false"), ("version", &version)])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let elsewhere = browser
        .post_from(
            Some("http://evil.example"),
            action,
            &[("csrf", &csrf), ("enabled", "false"), ("version", &version)],
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    assert!(get_flag(&mut admin, "production", "checkout").await.enabled);

    let off = browser
        .post(
            action,
            &[
                ("csrf", &csrf),
                ("enabled", "false"),
                ("version", &version),
                ("comment", "too many errors"),
            ],
        )
        .await;
    assert_eq!(off.status, StatusCode::SEE_OTHER, "{}", off.body);
    assert_eq!(off.location(), "/envs/production/flags/checkout");
    assert!(!get_flag(&mut admin, "production", "checkout").await.enabled);
    let history = flag_history(&mut admin, "checkout").await;
    assert_eq!(history[0].actor, "ed via console");
    assert_eq!(history[0].comment, "too many errors");

    // The page the person had open is out of date: refused, saying so, nothing changed.
    let stale = browser
        .post(
            action,
            &[("csrf", &csrf), ("enabled", "true"), ("version", &version)],
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert!(
        text(&stale.body).contains("Someone changed checkout since this page was made"),
        "{}",
        stale.body
    );
    assert!(!get_flag(&mut admin, "production", "checkout").await.enabled);
    let bad = browser
        .post(
            action,
            &[("csrf", &csrf), ("enabled", "maybe"), ("version", &version)],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_protected_environment_asks_for_its_name_to_be_typed() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    admin
        .create_environment(pb::CreateEnvironmentRequest {
            environment: "production".into(),
            protected: true,
        })
        .await
        .expect("environment");
    create_flag_confirmed(&mut admin, "checkout").await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&server.admin_token).await;
    let action = "/envs/production/flags/checkout/enabled";
    let page = browser.get("/envs/production/flags/checkout").await;
    assert!(page.body.contains("name=\"confirm\""), "{}", page.body);
    let (csrf, version) = (
        form_field(&page.body, action, "csrf"),
        form_field(&page.body, action, "version"),
    );
    for typed in ["", "staging"] {
        let refused = browser
            .post(
                action,
                &[
                    ("csrf", &csrf),
                    ("enabled", "false"),
                    ("version", &version),
                    ("confirm", typed),
                ],
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{typed:?}");
        assert!(
            text(&refused.body).contains("production is protected: type its name"),
            "{}",
            refused.body
        );
        assert!(get_flag(&mut admin, "production", "checkout").await.enabled);
    }
    let done = browser
        .post(
            action,
            &[
                ("csrf", &csrf),
                ("enabled", "false"),
                ("version", &version),
                ("confirm", "production"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(!get_flag(&mut admin, "production", "checkout").await.enabled);
}

/// Creates the enabled boolean flag `key` in the protected environment `production`.
async fn create_flag_confirmed(admin: &mut flagstaff_tests::Admin, key: &str) {
    admin
        .create_flag(pb::CreateFlagRequest {
            environment: "production".into(),
            flag: Some(boolean_flag(key)),
            confirm_protected: true,
            ..Default::default()
        })
        .await
        .expect("flag created");
}

#[tokio::test]
async fn a_flags_default_serve_is_set_to_a_variant_or_a_split_from_its_page() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&server.admin_token).await;
    let action = "/envs/production/flags/checkout/serve";
    let page = browser.get("/envs/production/flags/checkout").await;
    let (csrf, version) = (
        form_field(&page.body, action, "csrf"),
        form_field(&page.body, action, "version"),
    );

    let split = browser
        .post(
            action,
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("mode", "split"),
                ("weight:on", "10"),
                ("weight:off", "90"),
                ("bucket_by", "key"),
                ("comment", "canary"),
            ],
        )
        .await;
    assert_eq!(split.status, StatusCode::SEE_OTHER, "{}", split.body);
    let flag = get_flag(&mut admin, "production", "checkout").await;
    assert_eq!(
        flag.default,
        Some(split_serve(&[("on", 10_000), ("off", 90_000)]))
    );
    // The form now starts from the split.
    let page = browser.get("/envs/production/flags/checkout").await;
    assert!(
        page.body.contains(
            "name=\"weight:on\" type=\"number\" min=\"0\" max=\"100\" step=\"0.001\" value=\"10\""
        ),
        "{}",
        page.body
    );
    let version = form_field(&page.body, action, "version");

    // Shares that do not add up, or a variant the flag lacks: refused next to the form.
    for (fields, says) in [
        (
            vec![("weight:on", "10"), ("weight:off", "85")],
            "add up to 95%, not 100%",
        ),
        (
            vec![("weight:on", "10"), ("weight:maybe", "90")],
            "has no variant \"maybe\"",
        ),
        (vec![("weight:on", "ten"), ("weight:off", "90")], "on:"),
    ] {
        let mut form = vec![
            ("csrf", csrf.as_str()),
            ("version", &version),
            ("mode", "split"),
            ("comment", "half of the EU"),
        ];
        form.extend(fields.iter().copied());
        let refused = browser.post(action, &form).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{says}");
        assert!(
            text(&refused.body).contains(says),
            "{says}: {}",
            refused.body
        );
        // What was typed is in the form again.
        assert!(
            refused.body.contains(
                "name=\"comment\" type=\"text\" maxlength=\"4096\" value=\"half of the EU\""
            ),
            "{}",
            refused.body
        );
        let (_, on) = fields[0];
        let typed_on = format!(
            "name=\"weight:on\" type=\"number\" min=\"0\" max=\"100\" step=\"0.001\" value=\"{on}\""
        );
        assert!(refused.body.contains(&typed_on), "{}", refused.body);
    }
    assert_eq!(
        get_flag(&mut admin, "production", "checkout").await.default,
        Some(split_serve(&[("on", 10_000), ("off", 90_000)]))
    );

    let fixed = browser
        .post(
            action,
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("mode", "variant"),
                ("variant", "on"),
            ],
        )
        .await;
    assert_eq!(fixed.status, StatusCode::SEE_OTHER, "{}", fixed.body);
    let flag = get_flag(&mut admin, "production", "checkout").await;
    assert_eq!(
        flag.default.and_then(|s| s.serve),
        Some(pb::serve::Serve::Variant("on".into()))
    );
    let history = flag_history(&mut admin, "checkout").await;
    assert_eq!(history[0].actor, "admin via console");
    assert_eq!(history[0].operation, "SetDefaultServe");
    assert_eq!(history[1].comment, "canary");

    // The version the page showed is gone now.
    let stale = browser
        .post(
            action,
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("mode", "variant"),
                ("variant", "off"),
            ],
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
}

/// A split of `weights` by the context key, as the Admin API returns it.
fn split_serve(weights: &[(&str, u32)]) -> pb::Serve {
    let mut serve = split(weights);
    if let Some(pb::serve::Serve::Split(split)) = &mut serve.serve {
        split.bucket_by = Some("key".into());
    }
    serve
}

#[tokio::test]
async fn a_flag_is_restored_from_its_history() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let created = create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    serve_on(&mut admin, "checkout", true).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&server.admin_token).await;
    let action = "/envs/production/flags/checkout/revert";
    let page = browser.get("/envs/production/flags/checkout").await;
    // The version now is not offered; the one created is.
    let offered = page.body.matches(&format!("action=\"{action}\"")).count();
    assert_eq!(offered, 1, "{}", page.body);
    assert!(
        page.body
            .contains(&format!("name=\"to_version\" value=\"{created}\"")),
        "{}",
        page.body
    );
    let (csrf, version) = (
        form_field(&page.body, action, "csrf"),
        form_field(&page.body, action, "version"),
    );
    let restored = browser
        .post(
            action,
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("to_version", &created.to_string()),
            ],
        )
        .await;
    assert_eq!(restored.status, StatusCode::SEE_OTHER, "{}", restored.body);
    let flag = get_flag(&mut admin, "production", "checkout").await;
    assert_eq!(
        flag.default.and_then(|s| s.serve),
        Some(pb::serve::Serve::Variant("off".into()))
    );
    // A version the flag never had: refused next to the history, nothing changed.
    let page = browser.get("/envs/production/flags/checkout").await;
    let version = form_field(
        &page.body,
        "/envs/production/flags/checkout/enabled",
        "version",
    );
    let never = browser
        .post(
            action,
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("to_version", "999"),
            ],
        )
        .await;
    assert_eq!(never.status, StatusCode::NOT_FOUND, "{}", never.body);
    assert_eq!(
        get_flag(&mut admin, "production", "checkout").await.version,
        flag.version
    );
}

/// The history of flag `key` of `production`, newest first, as the Admin API lists it.
async fn flag_history(admin: &mut flagstaff_tests::Admin, key: &str) -> Vec<pb::AuditEntry> {
    admin
        .list_history(pb::ListHistoryRequest {
            environment: "production".into(),
            flag: key.into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .entries
}
