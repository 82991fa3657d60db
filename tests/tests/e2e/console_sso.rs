//! The web console behind an authenticating proxy (DESIGN.md section 11, docs/console.md
//! "Single sign-on behind a proxy"): the person the proxy names is let in only from the
//! proxy's addresses and only if the users file lists them, with the role and environments it
//! gives them; token sign-in is off; the checks of every POST still hold; a session begun on
//! one replica is served by another; and the users file is read again when it changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flagstaff_server::storage::Store;
use flagstaff_server::{ConsoleOptions, ProxySignOn};
use flagstaff_tests::{store_kind, StoreKind, TestServer, TestServerBuilder};
use reqwest::header::SET_COOKIE;
use reqwest::StatusCode;

use super::console::Browser;
use super::fixtures::*;

/// The header the proxy of these tests names people in.
const HEADER: &str = "X-Forwarded-Email";

const USERS: &str = "\
alice@example.com: {role: admin}
bob@example.com: {role: editor, environments: [production, staging]}
";

/// A users file holding `text`, in `dir`.
fn users_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("users.yaml");
    std::fs::write(&path, text).expect("the users file");
    path
}

/// Sign-on through a proxy connecting from `from`, for the people of `users`.
fn proxy(from: &str, users: &Path) -> ConsoleOptions {
    ConsoleOptions {
        proxy: Some(ProxySignOn::new(HEADER, &[from.to_owned()], users).expect("sign-on")),
    }
}

/// A server whose console trusts a proxy at `from`, with the environments production,
/// staging and development.
async fn server_behind(from: &str, users: &Path) -> TestServer {
    started(TestServer::builder().console(proxy(from, users))).await
}

async fn started(builder: TestServerBuilder) -> TestServer {
    let server = builder.start().await;
    let mut admin = server.admin().await;
    for env in ["production", "staging", "development"] {
        create_environment(&mut admin, env).await;
    }
    server
}

/// A browser whose requests the proxy signed in as `person`.
fn browser_of(server: &TestServer, person: &str) -> Browser {
    let mut browser = Browser::new(server);
    browser.sent.push((HEADER.to_owned(), person.to_owned()));
    browser
}

fn sets_session(page: &super::console::Page) -> bool {
    page.headers
        .get_all(SET_COOKIE)
        .iter()
        .any(|c| c.to_str().expect("ascii").contains("flagstaff_session="))
}

#[tokio::test]
async fn people_of_the_users_file_see_what_their_role_allows() {
    let dir = tempfile::tempdir().expect("a directory");
    let server = server_behind("127.0.0.0/8", &users_file(&dir, USERS)).await;

    let mut alice = browser_of(&server, "alice@example.com");
    let envs = alice.get("/envs").await;
    assert_eq!(envs.status, StatusCode::OK, "{}", envs.body);
    assert!(sets_session(&envs), "a session for her forms");
    assert!(
        envs.body
            .contains("Signed in as <strong>alice@example.com</strong> (admin)"),
        "{}",
        envs.body
    );
    for env in ["production", "staging", "development"] {
        assert!(
            envs.body.contains(&format!("/envs/{env}/flags")),
            "{env}: {}",
            envs.body
        );
    }
    assert_eq!(alice.get("/tokens").await.status, StatusCode::OK);
    let again = alice.get("/envs").await;
    assert!(!sets_session(&again), "the session of her cookie is kept");

    // Names compare without regard to case; the console shows the users file's.
    let mut bob = browser_of(&server, "Bob@Example.com");
    let envs = bob.get("/envs").await;
    assert_eq!(envs.status, StatusCode::OK, "{}", envs.body);
    assert!(
        envs.body
            .contains("Signed in as <strong>bob@example.com</strong> (editor)"),
        "{}",
        envs.body
    );
    assert!(envs.body.contains("/envs/production/flags"));
    assert!(envs.body.contains("/envs/staging/flags"));
    assert!(
        !envs.body.contains("/envs/development/flags"),
        "{}",
        envs.body
    );
    assert_eq!(bob.get("/envs/staging/flags").await.status, StatusCode::OK);
    assert_eq!(
        bob.get("/envs/development/flags").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(bob.get("/tokens").await.status, StatusCode::FORBIDDEN);

    // Token sign-in is off: /login says the proxy signs people in, and takes no token.
    let login = bob.get("/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("takes no token"), "{}", login.body);
    assert!(!login.body.contains("name=\"token\""), "{}", login.body);
    let mut stranger = Browser::new(&server);
    stranger
        .sent
        .push((HEADER.to_owned(), "bob@example.com".to_owned()));
    let refused = stranger
        .post("/login", &[("token", &server.admin_token), ("csrf", "x")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let envs = stranger.get("/envs").await;
    assert!(
        envs.body.contains("(editor)") && !envs.body.contains("/envs/development/flags"),
        "the admin token signed no one in: {}",
        envs.body
    );
}

#[tokio::test]
async fn people_not_listed_and_requests_without_the_header_are_refused() {
    let dir = tempfile::tempdir().expect("a directory");
    let server = server_behind("127.0.0.1/32", &users_file(&dir, USERS)).await;

    let mut carol = browser_of(&server, "carol@example.com");
    for path in ["/envs", "/envs/production/flags", "/tokens", "/login"] {
        let refused = carol.get(path).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            refused.body.contains("carol@example.com") && refused.body.contains("users file"),
            "{path}: {}",
            refused.body
        );
        assert!(!sets_session(&refused));
        assert!(!refused.body.contains("/envs/production/flags\""));
    }

    let mut anonymous = Browser::new(&server);
    let refused = anonymous.get("/envs").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.body.contains("did not say who you are"),
        "{}",
        refused.body
    );
    assert!(!sets_session(&refused));
    // A token's way in is closed too.
    let refused = anonymous.get("/login").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // Two people named is no one.
    let mut two = browser_of(&server, "alice@example.com");
    two.sent
        .push((HEADER.to_owned(), "bob@example.com".to_owned()));
    assert_eq!(two.get("/envs").await.status, StatusCode::FORBIDDEN);

    // What is not the console does not read the header.
    let css = anonymous.get("/console.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(anonymous.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn requests_from_outside_the_proxys_range_are_refused_whatever_they_carry() {
    let dir = tempfile::tempdir().expect("a directory");
    // The tests' requests come from 127.0.0.1, outside the proxy's range.
    let server = server_behind("10.0.0.0/8", &users_file(&dir, USERS)).await;

    let mut forger = browser_of(&server, "alice@example.com");
    forger
        .sent
        .push(("X-Forwarded-For".to_owned(), "10.1.2.3".to_owned()));
    forger
        .sent
        .push(("X-Real-IP".to_owned(), "10.1.2.3".to_owned()));
    forger
        .sent
        .push(("Forwarded".to_owned(), "for=10.1.2.3".to_owned()));
    for path in ["/envs", "/tokens", "/login", "/envs/production/flags", "/"] {
        let refused = forger.get(path).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            refused.body.contains("reached through its sign-on proxy")
                && refused.body.contains("127.0.0.1"),
            "{path}: {}",
            refused.body
        );
        assert!(!sets_session(&refused));
    }
    let refused = forger
        .post("/login", &[("token", &server.admin_token), ("csrf", "x")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!sets_session(&refused));
    let refused = forger.post("/logout", &[("csrf", "x")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // The same server's range including the tests' address lets Alice in.
    let dir = tempfile::tempdir().expect("a directory");
    let server = server_behind("10.0.0.0/8,127.0.0.1", &users_file(&dir, USERS)).await;
    let mut alice = browser_of(&server, "alice@example.com");
    assert_eq!(alice.get("/envs").await.status, StatusCode::OK);
}

#[tokio::test]
async fn forged_posts_are_refused_and_signing_out_ends_the_console_session() {
    let dir = tempfile::tempdir().expect("a directory");
    let server = server_behind("127.0.0.1", &users_file(&dir, USERS)).await;
    let mut alice = browser_of(&server, "alice@example.com");
    let csrf = alice.get("/envs").await.csrf();

    // From another site, without an Origin, or without the session's CSRF token: nothing.
    let refused = alice
        .post_from(Some("https://evil.example"), "/logout", &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = alice.post_from(None, "/logout", &[("csrf", &csrf)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = alice.post("/logout", &[("csrf", "wrong")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(alice.get("/envs").await.csrf(), csrf, "the same session");

    // Alice's cookie and CSRF token, with the proxy naming Bob: her token is not his.
    let mut bob = browser_of(&server, "bob@example.com");
    bob.cookies = alice.cookies.clone();
    let refused = bob.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let bobs = bob.get("/envs").await;
    assert!(bobs.body.contains("bob@example.com"), "{}", bobs.body);
    assert_ne!(bobs.csrf(), csrf);
    assert_eq!(
        alice.get("/envs").await.csrf(),
        csrf,
        "Alice's is untouched"
    );

    // Signing out ends the console's session; the next page begins another.
    let out = alice.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    assert_eq!(out.location(), "/login");
    assert!(!alice.has_session());
    let login = alice.get("/login").await;
    assert!(
        login.body.contains("sign out at the sign-on proxy"),
        "{}",
        login.body
    );
    let again = alice.get("/envs").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_ne!(again.csrf(), csrf, "a new session");
}

#[tokio::test]
async fn a_changed_users_file_takes_effect_while_flagstaffd_runs() {
    let dir = tempfile::tempdir().expect("a directory");
    let users = users_file(&dir, USERS);
    let server = server_behind("127.0.0.1", &users).await;
    let mut alice = browser_of(&server, "alice@example.com");
    let mut carol = browser_of(&server, "carol@example.com");
    assert_eq!(alice.get("/tokens").await.status, StatusCode::OK);
    assert_eq!(carol.get("/envs").await.status, StatusCode::FORBIDDEN);

    // Carol added; Alice an editor of staging now, in the session she already has.
    std::fs::write(
        &users,
        "alice@example.com: {role: editor, environments: [staging]}\n\
         carol@example.com: {role: editor, environments: [development]}\n",
    )
    .expect("the users file");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while carol.get("/envs").await.status != StatusCode::OK {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the changed users file was not read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let envs = carol.get("/envs").await;
    assert!(
        envs.body.contains("/envs/development/flags"),
        "{}",
        envs.body
    );
    assert!(
        !envs.body.contains("/envs/production/flags"),
        "{}",
        envs.body
    );
    assert_eq!(alice.get("/tokens").await.status, StatusCode::FORBIDDEN);
    let envs = alice.get("/envs").await;
    assert!(envs.body.contains("(editor)"), "{}", envs.body);
    assert!(
        !envs.body.contains("/envs/production/flags"),
        "{}",
        envs.body
    );

    // A file that no longer reads leaves the last good one in force: once looked at again
    // (at most a second after the last look), Carol is still let in.
    std::fs::write(&users, "carol@example.com: {role: owner}\n").expect("the users file");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(carol.get("/envs").await.status, StatusCode::OK);

    // And a good one again takes effect: Carol removed.
    std::fs::write(&users, "alice@example.com: {role: admin}\n").expect("the users file");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while carol.get("/envs").await.status != StatusCode::FORBIDDEN {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the repaired users file was not read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alice.get("/tokens").await.status, StatusCode::OK);
}

#[tokio::test]
async fn under_tls_the_peer_is_the_connections() {
    let dir = tempfile::tempdir().expect("a directory");
    let users = users_file(&dir, USERS);
    let tls = self_signed();
    let client = || {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(reqwest::Certificate::from_pem(tls.cert.as_bytes()).expect("pem"))
            .build()
            .expect("an HTTPS client")
    };
    for (from, allowed) in [("127.0.0.1/32", true), ("10.0.0.0/8", false)] {
        let server = TestServer::builder()
            .tls(tls.clone())
            .console(proxy(from, &users))
            .start()
            .await;
        let mut alice = browser_of(&server, "alice@example.com");
        alice.client = client();
        alice.base = format!("https://localhost:{}", server.addr.port());
        let envs = alice.get("/envs").await;
        if allowed {
            assert_eq!(envs.status, StatusCode::OK, "{from}: {}", envs.body);
            assert!(
                alice
                    .cookies
                    .iter()
                    .any(|(name, _)| name == "__Host-flagstaff_session"),
                "{from}"
            );
            let csrf = envs.csrf();
            let out = alice.post("/logout", &[("csrf", &csrf)]).await;
            assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
        } else {
            assert_eq!(envs.status, StatusCode::FORBIDDEN, "{from}");
            assert!(alice.cookies.is_empty());
        }
    }
}

#[tokio::test]
async fn a_session_begun_on_one_replica_is_served_by_another() {
    if store_kind() != StoreKind::Postgres {
        return;
    }
    let dir = tempfile::tempdir().expect("a directory");
    let users = users_file(&dir, USERS);
    let first = server_behind("127.0.0.1", &users).await;
    let second = another_replica(
        &first,
        TestServer::builder().console(proxy("127.0.0.1", &users)),
    )
    .await;
    let mut alice = browser_of(&first, "alice@example.com");
    let csrf = alice.get("/envs").await.csrf();
    alice.base = format!("http://{}", second.addr);
    let envs = alice.get("/envs").await;
    assert_eq!(envs.status, StatusCode::OK);
    assert_eq!(envs.csrf(), csrf, "the same session");
    let out = alice.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
}

#[tokio::test]
async fn requests_without_the_cookie_store_no_session() {
    let dir = tempfile::tempdir().expect("a directory");
    let server = server_behind("127.0.0.1", &users_file(&dir, USERS)).await;
    let store = server.environments.store().clone();

    // A monitor that drops cookies, or someone looping: each request is given a cookie, and
    // none is stored, however many come.
    let mut alice = browser_of(&server, "alice@example.com");
    let mut ids = Vec::new();
    let mut csrf = String::new();
    for _ in 0..30 {
        alice.cookies.clear();
        let envs = alice.get("/envs").await;
        assert_eq!(envs.status, StatusCode::OK, "{}", envs.body);
        assert!(sets_session(&envs), "a cookie for her forms");
        csrf = envs.csrf();
        let (_, id) = alice.cookies.first().expect("the session cookie").clone();
        ids.push(id);
    }
    for id in &ids {
        let id_hash = flagstaff_server::auth::hash(id);
        assert_eq!(store.session(&id_hash).expect("read"), None, "{id}");
    }

    // The newest cookie works: its pages keep their CSRF token, and it signs out.
    assert_eq!(alice.get("/envs").await.csrf(), csrf);
    let out = alice.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
}
