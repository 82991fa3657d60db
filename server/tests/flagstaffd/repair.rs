//! `flagstaffd check` and `flagstaffd repair` on a stopped server's data directory: what they
//! print and how they exit; and `flagstaffd backup` of a data directory a running server holds,
//! in plain text and over TLS.

use super::*;

fn flagstaffd(args: &[&str], data_dir: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Multi-threaded: the client's connection must answer the server's goodbye while this
// thread waits for the server to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_damaged_records_and_repair_restores_or_removes_them() {
    let dir = tempfile::tempdir().expect("data dir");
    let daemon = Daemon::start(dir.path(), &[], &[]);
    let mut admin = daemon.client().await;
    let admin_token = token(dir.path());
    admin
        .create_environment(authorized(
            pb::CreateEnvironmentRequest {
                environment: "production".into(),
                protected: false,
            },
            &admin_token,
        ))
        .await
        .expect("created");
    let flag = flagstaff_engine::flag_from_value(&serde_json::json!({
        "key": "checkout", "kind": "boolean", "variants": {"on": true, "off": false},
        "off_variant": "off", "enabled": true, "default": {"variant": "on"},
    }))
    .expect("flag");
    admin
        .create_flag(authorized(
            pb::CreateFlagRequest {
                environment: "production".into(),
                flag: Some(pb::Flag::from(&flag)),
                ..Default::default()
            },
            &admin_token,
        ))
        .await
        .expect("created");
    drop(admin);
    let (status, _) = daemon.terminate();
    assert!(status.success());

    let (ok, stdout, _) = flagstaffd(&["check"], dir.path());
    assert!(ok);
    assert_eq!(
        stdout,
        format!("no damaged records in {}\n", dir.path().display())
    );

    {
        let db = sled::open(dir.path()).expect("sled");
        db.open_tree("flags/production")
            .expect("tree")
            .insert("checkout", b"not json".as_slice())
            .expect("damaged");
        db.open_tree("tokens")
            .expect("tree")
            .insert("broken-token", b"not json".as_slice())
            .expect("damaged");
        db.flush().expect("flushed");
    }
    let (ok, stdout, stderr) = flagstaffd(&["check"], dir.path());
    assert!(!ok);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("flags/production/checkout: "),
        "{stdout}"
    );
    assert!(lines[1].starts_with("tokens/broken-token: "), "{stdout}");
    assert!(stderr.contains("2 damaged record(s)"), "{stderr}");
    assert!(stderr.contains("flagstaffd repair"), "{stderr}");

    let (ok, stdout, stderr) = flagstaffd(&["repair"], dir.path());
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "flags/production/checkout: restored at revision 2 from its version of revision 1\n\
         tokens/broken-token: removed\n"
    );
    let (ok, _, _) = flagstaffd(&["check"], dir.path());
    assert!(ok);

    // The server serves the restored flag, and the repair is in the audit log.
    let daemon = Daemon::start(dir.path(), &[], &[]);
    let mut admin = daemon.client().await;
    let restored = admin
        .get_flag(authorized(
            pb::GetFlagRequest {
                environment: "production".into(),
                key: "checkout".into(),
            },
            &admin_token,
        ))
        .await
        .expect("served")
        .into_inner();
    assert_eq!(restored.flag.expect("flag").version, Some(2));
    assert_eq!(
        restored.last_change.expect("last change").actor,
        "flagstaffd repair"
    );
}

#[tokio::test]
async fn backup_of_a_data_directory_a_running_flagstaffd_holds_asks_that_server() {
    let dir = tempfile::tempdir().expect("data dir");
    let daemon = Daemon::start(dir.path(), &[], &[]);
    let addr = daemon.logged("address");
    let token = token(dir.path());
    let mut client = AdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    client
        .create_environment(authorized(
            pb::CreateEnvironmentRequest {
                environment: "production".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("created");

    let file = dir.path().join("flagstaff.backup");
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
        .args(["backup", "--to"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &addr])
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("(from the flagstaffd at http://{addr})"))
            && said.contains("1 environment(s), 1 token(s)"),
        "{said}"
    );
    let backup = flagstaff_server::backup::read(std::io::BufReader::new(
        std::fs::File::open(&file).expect("the backup"),
    ))
    .expect("whole");
    let record = backup.environments[0].record.as_ref().expect("record");
    assert_eq!(record.key, "production");

    // With a token the server does not know, nothing is written.
    let refused = dir.path().join("refused.backup");
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
        .args(["backup", "--to"])
        .arg(&refused)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &addr])
        .env("FLAGSTAFF_TOKEN", "fs_unknown")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Unauthenticated: unknown token"), "{said}");
    assert!(!refused.exists());
    daemon.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_asks_a_running_flagstaffd_serving_tls_over_tls_trusting_its_certificate() {
    let dir = tempfile::tempdir().expect("data dir");
    let files = tempfile::tempdir().expect("certificate dir");
    // As docs/operations.md makes them: a CA, a certificate it signs for localhost and
    // 127.0.0.1, served as a chain with the CA's certificate appended.
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Flagstaff CA");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf_pem =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("parameters")
            .signed_by(&leaf_key, &issuer)
            .expect("certificate")
            .pem();
    let (leaf, cert, key) = (
        files.path().join("cert.pem"),
        files.path().join("chain.pem"),
        files.path().join("key.pem"),
    );
    std::fs::write(&leaf, &leaf_pem).expect("write");
    std::fs::write(&cert, format!("{leaf_pem}{ca_pem}")).expect("write");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write");
    let daemon = Daemon::start(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            key.to_str().expect("path"),
        ],
        &[],
    );
    let addr = daemon.logged("address");
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .expect("client TLS")
        .connect()
        .await
        .expect("connects over TLS");
    AdminClient::new(channel)
        .create_environment(authorized(
            pb::CreateEnvironmentRequest {
                environment: "production".into(),
                ..Default::default()
            },
            &token(dir.path()),
        ))
        .await
        .expect("created");
    let backup = |file: &Path, tls_cert: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flagstaffd"));
        command
            .args(["backup", "--to"])
            .arg(file)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", &addr]);
        if let Some(cert) = tls_cert {
            command.arg("--tls-cert").arg(cert);
        }
        command.output().expect("runs")
    };

    let file = dir.path().join("flagstaff.backup");
    let out = backup(&file, Some(&cert));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("(from the flagstaffd at https://{addr})"))
            && said.contains("1 environment(s), 1 token(s)"),
        "{said}"
    );
    let written = flagstaff_server::backup::read(std::io::BufReader::new(
        std::fs::File::open(&file).expect("the backup"),
    ))
    .expect("whole");
    let record = written.environments[0].record.as_ref().expect("record");
    assert_eq!(record.key, "production");

    // Trusting the certificate without its issuer, or another one, or asking in plain text:
    // refused, nothing written.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("self-signed certificate");
    let other_cert = files.path().join("other.pem");
    std::fs::write(&other_cert, other.cert.pem()).expect("write");
    let refused = dir.path().join("refused.backup");
    for trusted in [&leaf, &other_cert] {
        let out = backup(&refused, Some(trusted));
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains(&format!(
                "asking it at https://{addr} for the backup failed"
            )) && said.contains("invalid peer certificate: UnknownIssuer"),
            "{said}"
        );
    }
    let out = backup(&refused, None);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("asking it at http://{addr} for the backup failed"))
            && said.contains("give its --tls-cert if it serves TLS"),
        "{said}"
    );
    assert!(!refused.exists());
    daemon.kill();
}
