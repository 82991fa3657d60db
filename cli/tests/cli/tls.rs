//! `flagstaff` against a flagstaffd serving TLS: trusted through --ca-cert, FLAGSTAFF_CA_CERT
//! or the system's roots, and each way of getting it wrong named as a TLS problem.

use std::path::PathBuf;

use flagstaff_tests::{TestServer, TestTls};
use insta::assert_snapshot;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::common::Server;

/// A certificate authority and a server certificate it signed for `localhost`, as the recipe
/// of docs/operations.md makes them.
struct Pki {
    ca: String,
    server: TestTls,
}

fn pki(ca_name: &str) -> Pki {
    pki_for(ca_name, &["localhost", "127.0.0.1"])
}

/// Like [`pki`], the server certificate naming only `names`.
fn pki_for(ca_name: &str, names: &[&str]) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
        .expect("server parameters");
    let leaf_key = KeyPair::generate().expect("server key");
    let leaf_pem = leaf
        .signed_by(&leaf_key, &issuer)
        .expect("server certificate")
        .pem();
    Pki {
        ca: ca_pem,
        server: TestTls {
            cert: leaf_pem,
            key: leaf_key.serialize_pem(),
        },
    }
}

/// A server over TLS with `tls`, and `https://localhost:PORT`.
fn serve(tls: TestTls) -> (Server, String) {
    let s = Server::start_with(TestServer::builder().tls(tls));
    let endpoint = format!("https://localhost:{}", s.server.addr.port());
    (s, endpoint)
}

/// `text` written to `name` in the server's working directory.
fn file(s: &Server, name: &str, text: &str) -> PathBuf {
    let path = s.cwd.path().join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// Runs `flagstaff` with `envs` and `args`; its stdout if it succeeded, else its stderr with
/// the port replaced.
fn run(s: &Server, envs: &[(&str, &std::path::Path)], args: &[&str]) -> Result<String, String> {
    let mut cmd = s.cmd();
    cmd.env_remove("FLAGSTAFF_CA_CERT")
        .env_remove("SSL_CERT_FILE");
    for (name, value) in envs {
        cmd.env(name, value);
    }
    let out = cmd.args(args).output().expect("runs");
    let port = s.server.addr.port().to_string();
    match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Some(1) => Err(String::from_utf8_lossy(&out.stderr).replace(&port, "[port]")),
        other => panic!("exit status {other:?}"),
    }
}

#[test]
fn the_cli_trusts_a_private_ca_given_with_ca_cert() {
    let Pki { ca, server } = pki("Flagstaff test CA");
    let (s, endpoint) = serve(server);
    let ca = file(&s, "ca.pem", &ca);
    let ca_arg = ca.to_str().expect("utf-8 path");
    assert_eq!(
        run(
            &s,
            &[],
            &[
                "--endpoint",
                &endpoint,
                "--ca-cert",
                ca_arg,
                "env",
                "create",
                "production"
            ]
        ),
        Ok("created environment production\n".to_owned())
    );
    // The same from the environment, and by IP address (the certificate names both).
    let by_ip = format!("https://127.0.0.1:{}", s.server.addr.port());
    let listed = run(
        &s,
        &[("FLAGSTAFF_CA_CERT", &ca)],
        &["--endpoint", &by_ip, "env", "list", "-o", "json"],
    );
    assert!(listed.expect("listed").contains("\"production\""));
    // Without --ca-cert, the system's roots: here a bundle that holds the CA.
    let listed = run(
        &s,
        &[("SSL_CERT_FILE", &ca)],
        &["--endpoint", &endpoint, "env", "list"],
    );
    assert!(listed.expect("listed").contains("production"));
}

#[test]
fn tls_failures_say_what_to_trust() {
    let Pki { ca, server } = pki("Flagstaff test CA");
    let other = pki("Another CA");
    let (s, endpoint) = serve(server);
    let other_ca = file(&s, "other-ca.pem", &other.ca);
    // The system's roots do not know the CA.
    let untrusted = run(
        &s,
        &[("SSL_CERT_FILE", &other_ca)],
        &["--endpoint", &endpoint, "env", "list"],
    );
    assert_snapshot!(untrusted.expect_err("untrusted"), @"error: TLS: flagstaffd's certificate at https://localhost:[port] is not trusted (invalid peer certificate: UnknownIssuer): pass --ca-cert FILE (or set FLAGSTAFF_CA_CERT) with the CA certificate that signed it");
    let other_ca = other_ca.to_str().expect("utf-8 path");
    let wrong_ca = run(
        &s,
        &[],
        &[
            "--endpoint",
            &endpoint,
            "--ca-cert",
            other_ca,
            "env",
            "list",
        ],
    );
    assert!(
        wrong_ca.as_ref().is_err_and(|e| e.starts_with(
            "error: TLS: flagstaffd's certificate at https://localhost:[port] is not trusted \
             (invalid peer certificate: UnknownIssuer): is "
        )),
        "{wrong_ca:?}"
    );
    // A key is not a certificate.
    let key = file(&s, "key.pem", &pki("A third CA").server.key);
    let key = key.to_str().expect("utf-8 path");
    let not_a_cert = run(
        &s,
        &[],
        &["--endpoint", &endpoint, "--ca-cert", key, "env", "list"],
    );
    assert!(
        not_a_cert.as_ref().is_err_and(|e| e.ends_with(
            "key.pem: no certificate found: expected a PEM block `-----BEGIN CERTIFICATE-----`\n"
        )),
        "{not_a_cert:?}"
    );
    // Plain text to a TLS listener, and a CA certificate with a plain-text endpoint.
    let plain = format!("http://localhost:{}", s.server.addr.port());
    // (The cause depends on timing: a broken pipe, a reset connection.)
    let plain_text = run(&s, &[], &["--endpoint", &plain, "env", "list"]);
    assert!(
        plain_text.as_ref().is_err_and(|e| e
            .starts_with("error: cannot talk to flagstaffd at http://localhost:[port] (")
            && e.ends_with(
                "): if it serves TLS, use https:// (and --ca-cert FILE for a private CA)\n"
            )),
        "{plain_text:?}"
    );
    let ca = file(&s, "ca.pem", &ca);
    let ca = ca.to_str().expect("utf-8 path");
    let mixed = run(
        &s,
        &[],
        &["--endpoint", &plain, "--ca-cert", ca, "env", "list"],
    );
    assert!(
        mixed
            .as_ref()
            .is_err_and(|e| e
                .contains("is for TLS, but http://localhost:[port] is plain text: use https://")),
        "{mixed:?}"
    );
}

#[test]
fn a_ca_certificate_served_as_the_servers_own_is_named() {
    // What `openssl req -x509` makes without a CA: a self-signed certificate marked CA:TRUE.
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate").pem();
    let (s, endpoint) = serve(TestTls {
        cert: cert.clone(),
        key: key.serialize_pem(),
    });
    let ca = file(&s, "cert.pem", &cert);
    let ca = ca.to_str().expect("utf-8 path");
    assert_snapshot!(run(&s, &[], &["--endpoint", &endpoint, "--ca-cert", ca, "env", "list"]).expect_err("refused"), @"error: TLS: flagstaffd at https://localhost:[port] presents a CA certificate as its own (invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))): serve a certificate signed by the CA, not the CA itself (docs/operations.md, TLS)");
}

#[test]
fn a_certificate_for_another_name_is_not_blamed_on_the_ca() {
    let pki = pki_for("Flagstaff test CA", &["localhost"]);
    let (s, _) = serve(pki.server);
    let ca = file(&s, "ca.pem", &pki.ca);
    let by_ip = format!("https://127.0.0.1:{}", s.server.addr.port());
    let error = run(
        &s,
        &[],
        &[
            "--endpoint",
            &by_ip,
            "--ca-cert",
            ca.to_str().expect("path"),
            "env",
            "list",
        ],
    )
    .expect_err("refused");
    assert!(error.contains("not valid for name"), "{error}");
    assert!(
        error.contains("its certificate itself is the problem"),
        "{error}"
    );
}
