//! The operational options: the metrics endpoint on a port it chooses and logs, TLS from
//! certificate files (named when they are wrong), and SIGTERM stopping gRPC and metrics alike.

use super::*;

/// `GET /metrics`, the body of a 200 answer.
fn scrape(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics endpoint connects");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: flagstaffd\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    body.to_owned()
}

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("integer sample"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_on_port_0_is_logged_served_and_stopped_by_sigterm() {
    let dir = tempfile::tempdir().expect("data dir");
    let daemon = Daemon::start(dir.path(), &["--metrics-listen", "127.0.0.1:0"], &[]);
    let addr = daemon.logged("address");
    let metrics_addr = daemon.logged("metrics_address");
    assert_ne!(addr, metrics_addr);

    let token = token(dir.path());
    let mut client = AdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    client
        .create_environment(authorized(
            pb::CreateEnvironmentRequest {
                environment: "production".into(),
                protected: false,
            },
            &token,
        ))
        .await
        .expect("environment");
    let flag = flagstaff_engine::flag_from_value(&serde_json::json!({
        "key": "checkout", "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "on"},
    }))
    .expect("flag");
    client
        .create_flag(authorized(
            pb::CreateFlagRequest {
                environment: "production".into(),
                flag: Some(pb::Flag::from(&flag)),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("flag");

    let metrics = scrape(&metrics_addr);
    let env = "{environment=\"production\"}";
    assert_eq!(
        sample(&metrics, &format!("flagstaff_writes_total{env}")),
        Some(1)
    );
    assert_eq!(sample(&metrics, &format!("flagstaff_flags{env}")), Some(1));
    assert_eq!(
        sample(
            &metrics,
            "flagstaff_grpc_requests_total{method=\"flagstaff.v1.Admin/CreateFlag\",code=\"OK\"}"
        ),
        Some(1)
    );

    let (status, daemon) = daemon.terminate();
    assert!(status.success(), "{status}");
    daemon.log_line(|line| line.contains("flagstaffd stopped"));
    std::net::TcpStream::connect(&metrics_addr).expect_err("metrics stopped too");
    std::net::TcpStream::connect(&addr).expect_err("gRPC stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_from_the_environment_serve_grpc_over_tls() {
    let dir = tempfile::tempdir().expect("data dir");
    let files = tempfile::tempdir().expect("certificate dir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let (cert_path, key_path) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).expect("write");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write");

    let daemon = Daemon::start(
        dir.path(),
        &[],
        &[
            ("FLAGSTAFF_TLS_CERT", &cert_path),
            ("FLAGSTAFF_TLS_KEY", &key_path),
        ],
    );
    let serving = daemon.log_line(|line| line.contains(" address="));
    let addr = logged_field(&serving, "address").expect("address");
    assert_eq!(logged_field(&serving, "tls").as_deref(), Some("true"));
    let channel: Channel = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(certified.cert.pem()))
                .domain_name("localhost"),
        )
        .expect("client TLS")
        .connect()
        .await
        .expect("connects over TLS");
    AdminClient::new(channel)
        .list_environments(authorized(
            pb::ListEnvironmentsRequest::default(),
            &token(dir.path()),
        ))
        .await
        .expect("answered over TLS");

    let plain = async {
        let mut client = AdminClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| e.to_string())?;
        client
            .list_environments(authorized(
                pb::ListEnvironmentsRequest::default(),
                &token(dir.path()),
            ))
            .await
            .map_err(|e| e.to_string())
    };
    plain.await.expect_err("plain text is refused");
}

#[test]
fn a_tls_certificate_without_a_key_is_refused() {
    let dir = tempfile::tempdir().expect("data dir");
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "cert.pem",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the following required arguments were not provided")
            && stderr.contains("--tls-key <PATH>"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing created");
}

#[test]
fn unusable_tls_files_are_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().expect("data dir");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").expect("write");
    let missing_key = dir.path().join("missing-key.pem");
    let run = |cert: &Path, key: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
            .args(["--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .expect("runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let stderr = run(&cert, &missing_key);
    assert!(
        stderr.starts_with(&format!(
            "error: cannot read TLS private key {}: ",
            missing_key.display()
        )),
        "{stderr}"
    );
    let key = dir.path().join("key.pem");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write");
    assert_eq!(
        run(&cert, &key).trim_end(),
        format!(
            "error: {}: no certificate found: expected a PEM block `-----BEGIN CERTIFICATE-----`",
            cert.display()
        )
    );
    assert!(!dir.path().join("data").exists(), "nothing created");
}

#[test]
fn a_bad_cors_origin_or_public_url_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().expect("data dir");
    let run = |option: &str, value: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
            .args(["--listen", "127.0.0.1:0", option, value, "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .expect("runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).trim_end().to_owned()
    };
    assert_eq!(
        run("--cors-origin", "shop.example.com"),
        "error: --cors-origin \"shop.example.com\": an origin is a scheme and a host, with an \
         optional port and no path, e.g. https://app.example.com"
    );
    assert_eq!(
        run("--cors-origin", "https://shop.example.com/app"),
        "error: --cors-origin \"https://shop.example.com/app\": an origin is a scheme and a \
         host, with an optional port and no path, e.g. https://app.example.com"
    );
    assert_eq!(
        run("--public-url", "flags.example.com"),
        "error: --public-url \"flags.example.com\": the public URL starts with https:// or \
         http://"
    );
    assert_eq!(
        run("--public-url", "https://flags.example.com/?x=1"),
        "error: --public-url \"https://flags.example.com/?x=1\": the public URL has no query \
         or fragment and only visible ASCII"
    );
    assert!(!dir.path().join("data").exists(), "nothing created");
}

#[test]
fn admin_token_takes_its_options_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().expect("data dir");
    let data = dir.path().join("data");
    let mint = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
            .args(args)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(data.join("admin.token")).expect("the token file")
    };
    let after = mint(&[
        "admin-token".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ]);
    let before = mint(&[
        "--data-dir".as_ref(),
        data.as_os_str(),
        "admin-token".as_ref(),
    ]);
    assert_ne!(after, before, "each run mints a new token");
}

#[test]
fn a_missing_tls_key_says_its_cause_once() {
    let dir = tempfile::tempdir().expect("data dir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(dir.path().join("missing.pem"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

#[test]
fn logs_written_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("data dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("flagstaffd starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("a log line");
        let serving = line.contains("flagstaffd serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains("flagstaffd serving")),
        "{seen:?}"
    );
    assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "{seen:?}");
}

#[test]
fn a_database_that_cannot_be_reached_or_used_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().expect("data dir");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(args)
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?} exits non-zero");
        String::from_utf8_lossy(&out.stderr).trim_end().to_owned()
    };
    let unreachable = format!("postgres://flagstaff:secret@127.0.0.1:{port}/flags");
    let refused = run(&["--database-url", &unreachable]);
    assert!(
        refused.starts_with(&format!(
            "error: the database 127.0.0.1:{port}/flags is unavailable: error connecting to \
             server"
        )),
        "{refused}"
    );
    assert!(
        !refused.contains("secret"),
        "the password is never shown: {refused}"
    );
    let garbled = run(&["--database-url", "mysql://somewhere"]);
    assert!(
        garbled.starts_with("error: the database URL is not a PostgreSQL connection string: "),
        "{garbled}"
    );
    let migrate = run(&["migrate"]);
    assert_eq!(
        migrate,
        "error: migrate applies PostgreSQL schema migrations: give --database-url (or \
         FLAGSTAFF_DATABASE_URL); sled needs none"
    );
    assert!(!dir.path().join("data").exists(), "nothing created");
}
