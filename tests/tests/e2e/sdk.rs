//! The SDK's `Client` against the real server: readiness, live updates, acknowledgements,
//! resumption across server restarts, a new epoch, the cache file, and atomic multi-flag
//! revisions under concurrent readers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flagstaff::{Client, Context, ErrorKind, Reason, Source, State};
use flagstaff_proto::pb;
use flagstaff_tests::{Admin, TestServer};

use super::fixtures::*;

async fn production(server: &TestServer) -> (Admin, String) {
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    create_flag(&mut admin, "production", boolean_flag("banner")).await;
    let token = sdk_token(server, "service", "production").await;
    (admin, token)
}

#[tokio::test]
async fn a_client_gets_ready_follows_every_change_and_acknowledges_it() {
    let server = TestServer::start().await;
    let (mut admin, token) = production(&server).await;
    let client = sdk_client(server.endpoint(), &token, "checkout-service");
    client.wait_ready(PATIENCE).await.expect("ready");
    let ctx = Context::new("user-1");
    assert!(!client.bool_value("checkout", &ctx, true));
    let status = client.status();
    assert_eq!(
        (status.state, status.source),
        (State::Ready, Source::Server)
    );

    let revision = serve_on(&mut admin, "checkout", true).await;
    eventually("the flip", async || {
        client.bool_value("checkout", &ctx, false)
    })
    .await;
    eventually("the revision", async || {
        client.status().revision == revision
    })
    .await;
    let stats = client.stats();
    assert_eq!((stats.snapshots, stats.deltas, stats.resyncs), (1, 1, 0));

    // The server knows the instance and, once the acknowledgement is in, its revision.
    eventually("the acknowledgement", async || {
        server
            .clients
            .list("production")
            .iter()
            .any(|i| i.identity.application == "checkout-service" && i.applied_revision == revision)
    })
    .await;
    client.close();
    eventually("closed", async || client.status().state == State::Closed).await;
    // A closed client keeps serving its last snapshot.
    assert!(client.bool_value("checkout", &ctx, false));
}

#[tokio::test]
async fn before_any_data_a_client_serves_defaults_or_its_bootstrap() {
    // Nothing listens on this port.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", unused.local_addr().expect("addr"));
    drop(unused);
    let ctx = Context::new("user-1");

    let bare = Client::builder(&endpoint, "fs_unused")
        .build()
        .expect("client");
    assert!(bare.bool_value("checkout", &ctx, true));
    bare.with_bool_detail("checkout", &ctx, true, |d| {
        assert_eq!(d.reason, Reason::Error(ErrorKind::ClientNotReady));
        assert!(d.value);
    });
    assert_eq!(bare.status().source, Source::None);
    assert_eq!(bare.status().state, State::Connecting);
    let waited = bare.wait_ready(Duration::from_millis(100)).await;
    assert!(
        matches!(waited, Err(flagstaff::Error::NotReady { .. })),
        "{waited:?}"
    );

    let bootstrapped = Client::builder(&endpoint, "fs_unused")
        .bootstrap_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/production.yaml"
        ))
        .build()
        .expect("client");
    assert_eq!(bootstrapped.status().source, Source::Bootstrap);
    assert!(bootstrapped.snapshot().flag("checkout-v2").is_some());

    let broken = Client::builder(&endpoint, "fs_unused")
        .bootstrap_text("environment: x\nflags: [{key: a}]")
        .build()
        .expect_err("an invalid bootstrap is refused");
    assert!(
        broken.to_string().contains("missing required field"),
        "{broken}"
    );
    let bad_key = Client::builder(&endpoint, "fs_line\nbreak")
        .build()
        .expect_err("a key that cannot be sent is refused");
    assert!(
        matches!(bad_key, flagstaff::Error::InvalidSdkKey),
        "{bad_key}"
    );
    // A CA certificate is for TLS: with an http:// endpoint it would be silently unused.
    let plain = Client::builder(&endpoint, "fs_unused")
        .tls_ca_certificate(self_signed().cert)
        .build()
        .expect_err("a CA with a plain-text endpoint is refused");
    assert!(
        matches!(plain, flagstaff::Error::TlsWithoutHttps(_)),
        "{plain}"
    );
}

#[tokio::test]
async fn clients_resume_across_a_restart_and_take_one_snapshot_of_a_new_epoch_or_data_dir() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let (mut admin, token) = production(&server).await;
    let clients: Vec<Client> = (0..3)
        .map(|_| sdk_client(server.endpoint(), &token, "checkout-service"))
        .collect();
    for c in &clients {
        c.wait_ready(PATIENCE).await.expect("ready");
    }

    // Stopped: every client goes stale and keeps serving.
    serve_on(&mut admin, "checkout", true).await;
    let ctx = Context::new("user-1");
    for c in &clients {
        eventually("the flip", async || c.bool_value("checkout", &ctx, false)).await;
    }
    let dir = server.stop().await;
    for c in &clients {
        eventually("stale", async || {
            matches!(c.status().state, State::Stale { .. })
        })
        .await;
        assert!(c.bool_value("checkout", &ctx, false));
    }

    // Restarted on the same data directory and address: resumed, no snapshot.
    let server = TestServer::builder().data_dir(dir).addr(addr).start().await;
    let mut admin = server.admin().await;
    let revision = serve_on(&mut admin, "checkout", false).await;
    for c in &clients {
        eventually("the resume", async || c.status().revision == revision).await;
        assert!(!c.bool_value("checkout", &ctx, true));
        assert_eq!(
            c.stats().snapshots,
            1,
            "a resume inside the log costs no snapshot"
        );
        assert_eq!(c.status().state, State::Ready);
    }

    // Restarted on a fresh data directory, at the same address, with the tokens restored from
    // the old one (an operator rebuilding a lost server): every environment has a new epoch.
    // The clients serve their last snapshot while it is down and until the environment exists
    // again, then take exactly one snapshot of it.
    let old_epoch = clients[0].status().epoch;
    let old_dir = server.stop().await;
    let fresh_dir = tempfile::tempdir().expect("fresh data directory");
    restore_tokens(old_dir.path(), fresh_dir.path());
    let server = TestServer::builder()
        .data_dir(fresh_dir)
        .addr(addr)
        .start()
        .await;
    let mut admin = server.admin().await;
    for c in &clients {
        assert!(!c.bool_value("checkout", &ctx, true));
    }
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("rebuilt")).await;
    for c in &clients {
        took_the_new_epoch(c, &old_epoch, "rebuilt", "checkout", 2).await;
    }

    // The environment deleted and created again: its tokens were revoked with it, so the
    // clients' streams end and they keep serving their last snapshot, refused by the new
    // environment of the same name.
    let epoch = clients[0].status().epoch;
    admin
        .delete_flag(pb::DeleteFlagRequest {
            environment: "production".into(),
            key: "rebuilt".into(),
            ..Default::default()
        })
        .await
        .expect("deleted");
    admin
        .delete_environment(pb::DeleteEnvironmentRequest {
            environment: "production".into(),
            ..Default::default()
        })
        .await
        .expect("deleted");
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("fresh-only")).await;
    for c in &clients {
        eventually("refused", async || c.status().state != State::Ready).await;
        assert_eq!(c.status().epoch, epoch);
        assert!(c.snapshot().flag("fresh-only").is_none());
        assert_eq!(c.stats().snapshots, 2);
    }
}

/// Waits until `client` is ready on an epoch other than `old_epoch`, then checks that it
/// serves the new environment (`present`, not `gone`) and has taken `snapshots` in all: one
/// more than before the new epoch.
async fn took_the_new_epoch(
    client: &Client,
    old_epoch: &str,
    present: &str,
    gone: &str,
    snapshots: u64,
) {
    eventually("the new epoch", async || {
        let status = client.status();
        status.epoch != old_epoch && status.state == State::Ready
    })
    .await;
    assert!(client.snapshot().flag(present).is_some());
    assert!(client.snapshot().flag(gone).is_none());
    assert_eq!(
        client.stats().snapshots,
        snapshots,
        "one snapshot for the new epoch"
    );
}

/// Copies every token of the data directory `from` (and its admin token file) into the fresh
/// data directory `to`, on either store.
fn restore_tokens(from: &std::path::Path, to: &std::path::Path) {
    use flagstaff_server::storage::Store;
    let old = flagstaff_tests::open_store(from);
    let new = flagstaff_tests::open_store(to);
    for token in old.tokens().expect("tokens") {
        new.put_token(&token).expect("restored");
    }
    std::fs::copy(from.join("admin.token"), to.join("admin.token")).expect("admin token file");
}

#[tokio::test]
async fn a_cached_snapshot_serves_when_the_server_is_unreachable_at_start() {
    let server = TestServer::start().await;
    let (mut admin, token) = production(&server).await;
    let cache = server.data_dir.path().join("client.cache");
    let revision = serve_on(&mut admin, "banner", true).await;
    let first = Client::builder(server.endpoint(), &token)
        .cache_file(&cache)
        .build()
        .expect("client");
    first.wait_ready(PATIENCE).await.expect("ready");
    eventually("the cache file", async || {
        std::fs::read_to_string(&cache)
            .map(|t| t.contains(&format!("\"revision\":{revision}")))
            .unwrap_or(false)
    })
    .await;
    first.close();

    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = format!("http://{}", unused.local_addr().expect("addr"));
    drop(unused);
    let offline = Client::builder(nowhere, &token)
        .cache_file(&cache)
        .build()
        .expect("client");
    let status = offline.status();
    assert_eq!((status.source, status.revision), (Source::Cache, revision));
    assert!(offline.bool_value("banner", &Context::new("u"), false));

    // Back online with the cache: it resumes from the cached revision, without a snapshot.
    serve_on(&mut admin, "banner", false).await;
    let resumed = Client::builder(server.endpoint(), &token)
        .cache_file(&cache)
        .build()
        .expect("client");
    resumed.wait_ready(PATIENCE).await.expect("ready");
    eventually("the change", async || {
        !resumed.bool_value("banner", &Context::new("u"), true)
    })
    .await;
    assert_eq!(resumed.stats().snapshots, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_half_of_a_revision() {
    let server = TestServer::start().await;
    let (mut admin, token) = production(&server).await;
    let client = sdk_client(server.endpoint(), &token, "checkout-service");
    client.wait_ready(PATIENCE).await.expect("ready");

    let stop = Arc::new(AtomicBool::new(false));
    let seen_on = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (client, stop, seen_on) = (client.clone(), stop.clone(), seen_on.clone());
            std::thread::spawn(move || {
                let ctx = Context::new("u");
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = client.snapshot();
                    let a = snapshot.bool_value("checkout", &ctx, false);
                    let b = snapshot.bool_value("banner", &ctx, false);
                    assert_eq!(a, b, "a reader saw half of a revision");
                    if a {
                        seen_on.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Each revision switches both flags together.
    for i in 0..20 {
        let on = i % 2 == 0;
        let mut flags = Vec::new();
        for key in ["checkout", "banner"] {
            let mut flag = boolean_flag(key);
            flag.default = Some(pb::Serve {
                serve: Some(pb::serve::Serve::Variant(
                    if on { "on" } else { "off" }.to_owned(),
                )),
            });
            flags.push(flag);
        }
        let revision = admin
            .apply(pb::ApplyRequest {
                environment: "production".into(),
                source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                    flags,
                    ..Default::default()
                })),
                ..Default::default()
            })
            .await
            .expect("applied")
            .into_inner()
            .revision;
        eventually("the revision", async || {
            client.status().revision == revision
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().expect("no reader saw half a revision");
    }
    assert!(
        seen_on.load(Ordering::Relaxed) > 0,
        "readers saw the flags on"
    );
}

#[tokio::test]
async fn a_client_connects_over_tls_trusting_the_servers_certificate() {
    let tls = self_signed();
    let server = TestServer::builder().tls(tls.clone()).start().await;
    let (mut admin, token) = production(&server).await;
    let endpoint = format!("https://{}", server.addr);
    let client = Client::builder(&endpoint, &token)
        .tls_ca_certificate(tls.cert.clone())
        .tls_domain("localhost")
        .build()
        .expect("client");
    client.wait_ready(PATIENCE).await.expect("ready over TLS");
    serve_on(&mut admin, "checkout", true).await;
    let ctx = Context::new("user-1");
    eventually("the flip over TLS", async || {
        client.bool_value("checkout", &ctx, false)
    })
    .await;

    // A client that does not trust the certificate never gets data.
    let untrusting = Client::builder(&endpoint, &token)
        .tls_ca_certificate(self_signed().cert)
        .tls_domain("localhost")
        .build()
        .expect("client");
    let waited = untrusting.wait_ready(Duration::from_millis(500)).await;
    assert!(waited.is_err(), "{waited:?}");
    assert!(!untrusting.status().has_data());
}

#[tokio::test]
async fn change_listeners_hear_each_change_from_the_server_once() {
    let server = TestServer::start().await;
    let (mut admin, token) = production(&server).await;
    create_segment(&mut admin, "production", segment("beta", &["user-1"])).await;
    create_flag(&mut admin, "production", targeting("beta-banner", "beta")).await;
    let client = sdk_client(server.endpoint(), &token, "checkout-service");
    client.wait_ready(PATIENCE).await.expect("ready");
    let (tx, mut all) = tokio::sync::mpsc::unbounded_channel();
    let _all = client.on_change(move |c| {
        let _ = tx.send(c.clone());
    });
    let (tx, mut checkout) = tokio::sync::mpsc::unbounded_channel();
    let _checkout = client.on_flag_change("checkout", move |c| {
        let _ = tx.send(c.clone());
    });

    let revision = serve_on(&mut admin, "checkout", true).await;
    let change = received(&mut all).await;
    assert_eq!(
        change,
        flagstaff::FlagChange {
            key: "checkout".into(),
            revision,
            removed: false
        }
    );
    let change = received(&mut checkout).await;
    assert_eq!(change.revision, revision);

    // A key patch of the segment reaches the flag using it, through the delta's patch.
    let revision = admin
        .patch_segment_keys(pb::PatchSegmentKeysRequest {
            environment: "production".into(),
            patch: Some(pb::SegmentKeyPatch {
                segment: "beta".into(),
                add_included: vec!["user-2".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("patched")
        .into_inner()
        .revision;
    let change = received(&mut all).await;
    assert_eq!(
        (change.key.as_str(), change.revision),
        ("beta-banner", revision)
    );
    assert!(client.bool_value("beta-banner", &Context::new("user-2"), false));

    // Deleted: reported as removed.
    let revision = admin
        .delete_flag(pb::DeleteFlagRequest {
            environment: "production".into(),
            key: "banner".into(),
            ..Default::default()
        })
        .await
        .expect("deleted")
        .into_inner()
        .revision;
    let change = received(&mut all).await;
    assert_eq!(
        (change.key.as_str(), change.revision, change.removed),
        ("banner", revision, true)
    );
    // Nothing else was reported: each change once, and only the flags it touched. Real time,
    // for a late duplicate to have had the chance to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(all.try_recv().ok(), None);
    assert_eq!(checkout.try_recv().ok(), None);
}

async fn received(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<flagstaff::FlagChange>,
) -> flagstaff::FlagChange {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a notification in time")
        .expect("listening")
}

#[tokio::test]
async fn a_refused_sdk_key_is_an_error_naming_the_fix_and_retries_back_off() {
    let server = TestServer::start().await;
    let (mut admin, token) = production(&server).await;
    let client = Client::builder(server.endpoint(), &token)
        .backoff(Duration::from_millis(20), Duration::from_millis(400))
        .build()
        .expect("client");
    client.wait_ready(PATIENCE).await.expect("ready");
    revoke_named(&mut admin, "service").await;
    eventually("the revocation", async || {
        client.status().state != State::Ready
    })
    .await;
    // Refused at once, not after the timeout, and named as such.
    let waited = tokio::time::timeout(Duration::from_secs(5), client.wait_ready(PATIENCE))
        .await
        .expect("answered before the timeout");
    let Err(error @ flagstaff::Error::Unauthorized { .. }) = &waited else {
        panic!("{waited:?}");
    };
    let text = error.to_string();
    assert!(text.contains("revoked"), "{text}");
    assert!(
        text.contains("flagstaff token create --name NAME --role sdk --env ENV"),
        "{text}"
    );
    // The client keeps what it had, and retries ever more slowly: the delays grow to the
    // cap (400 ms here), so 2 s hold far fewer attempts than the 100 of the first delay.
    assert!(!client.bool_value("banner", &Context::new("u"), true));
    let before = client.stats().connections;
    // Real time: the retries are real connections to the server, counted over a real span.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = client.stats().connections - before;
    assert!((1..=25).contains(&attempts), "{attempts} attempts in 2 s");

    // A key that never was one: the same, with no data ever.
    let stranger = Client::builder(server.endpoint(), "fs_not_a_token")
        .build()
        .expect("client");
    let waited = stranger.wait_ready(PATIENCE).await;
    assert!(
        matches!(&waited, Err(flagstaff::Error::Unauthorized { reason }) if reason.contains("Unauthenticated")),
        "{waited:?}"
    );
    assert!(!stranger.status().has_data());
}

#[tokio::test]
async fn a_client_that_cannot_connect_says_why_when_not_ready() {
    // What `openssl req -x509` makes without a CA: a self-signed certificate marked CA:TRUE,
    // which rustls refuses as a server's certificate.
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("parameters");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate").pem();
    let server = TestServer::builder()
        .tls(flagstaff_tests::TestTls {
            cert: cert.clone(),
            key: key.serialize_pem(),
        })
        .start()
        .await;
    let client = Client::builder(format!("https://localhost:{}", server.addr.port()), "fs_x")
        .tls_ca_certificate(cert)
        .build()
        .expect("client");
    let waited = client.wait_ready(Duration::from_secs(1)).await;
    let Err(error @ flagstaff::Error::NotReady { .. }) = &waited else {
        panic!("{waited:?}");
    };
    assert!(
        error
            .to_string()
            .contains("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))"),
        "{error}"
    );
}
