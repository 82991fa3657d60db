//! `--database-ca` and `sslmode=require`: a CA file that cannot be used, or given where it
//! would verify nothing, is named before anything is created; a database whose certificate
//! that CA did not sign stops flagstaffd at start with rustls' reason and the database's
//! address. The database here answers PostgreSQL's TLS request and then speaks TLS only:
//! verification fails before anything else is said (the tests of flagstaff-tests run the rest
//! against a real PostgreSQL).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;

use super::*;

/// flagstaffd with `args` on a data directory under `dir` that must not be created; it must
/// fail. Its stderr.
fn refused(dir: &Path, args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flagstaffd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args(args)
        .output()
        .expect("runs");
    assert!(!out.status.success(), "{args:?} exits non-zero");
    assert!(!dir.join("data").exists(), "nothing created");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
    )
}

/// A CA named `name`, as PEM and as the issuer of certificates.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("CA key");
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    (pem, Issuer::new(params, key))
}

#[test]
fn a_database_ca_that_cannot_be_used_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().expect("a directory");
    let url = "postgres://flagstaff:secret@127.0.0.1:1/flags?sslmode=require";
    let missing = dir.path().join("missing-ca.pem");
    let (code, said) = refused(
        dir.path(),
        &[
            "--database-url".as_ref(),
            url.as_ref(),
            "--database-ca".as_ref(),
            missing.as_os_str(),
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        said,
        format!(
            "error: cannot read database CA certificate {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    let key = dir.path().join("key.pem");
    std::fs::write(&key, KeyPair::generate().expect("a key").serialize_pem()).expect("write");
    let (code, said) = refused(
        dir.path(),
        &[
            "--database-url".as_ref(),
            url.as_ref(),
            "--database-ca".as_ref(),
            key.as_os_str(),
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        said,
        format!(
            "error: {}: no certificate found: expected a PEM block `-----BEGIN CERTIFICATE-----`",
            key.display()
        )
    );
}

#[test]
fn a_database_ca_without_a_tls_database_url_is_refused() {
    let dir = tempfile::tempdir().expect("a directory");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca("flagstaff's database CA").0).expect("write");

    // Without a database: a usage error, as for --tls-cert without --tls-key.
    let (code, said) = refused(dir.path(), &["--database-ca".as_ref(), ca_file.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(
        said.contains("the following required arguments were not provided")
            && said.contains("--database-url <URL>"),
        "{said}"
    );

    // With a database URL that does not ask for TLS, which the CA would not protect.
    for url in [
        "postgres://flagstaff@127.0.0.1:1/flags",
        "postgres://flagstaff@127.0.0.1:1/flags?sslmode=prefer",
        "postgres://flagstaff@127.0.0.1:1/flags?sslmode=disable",
    ] {
        let (code, said) = refused(
            dir.path(),
            &[
                "--database-url".as_ref(),
                url.as_ref(),
                "--database-ca".as_ref(),
                ca_file.as_os_str(),
            ],
        );
        assert_eq!(code, Some(1));
        assert_eq!(
            said,
            format!(
                "error: --database-ca {} is for TLS to the database, but the database URL does \
                 not ask for TLS: add sslmode=require to it",
                ca_file.display()
            ),
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_certificate_the_ca_did_not_sign_stops_flagstaffd_at_start() {
    // The database's certificate, from a CA flagstaffd is not given.
    let (_, database_issuer) = ca("the database's CA");
    let key = KeyPair::generate().expect("key");
    let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("parameters")
        .signed_by(&key, &database_issuer)
        .expect("certificate");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(certificate.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .expect("server TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    // PostgreSQL's way of starting TLS: an 8-byte SSLRequest, answered `S`, then the handshake.
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut request = [0; 8];
                if stream.read_exact(&mut request).await.is_ok()
                    && request == [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
                    && stream.write_all(b"S").await.is_ok()
                {
                    let _ = acceptor.accept(stream).await;
                }
            });
        }
    });

    let dir = tempfile::tempdir().expect("a directory");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca("another CA").0).expect("write");
    let url = format!("postgres://flagstaff:secret@127.0.0.1:{port}/flags?sslmode=require");
    let (code, said) = tokio::task::spawn_blocking(move || {
        let said = refused(
            dir.path(),
            &[
                "--database-url".as_ref(),
                url.as_ref(),
                "--database-ca".as_ref(),
                ca_file.as_os_str(),
            ],
        );
        drop(dir);
        said
    })
    .await
    .expect("flagstaffd ran");
    assert_eq!(code, Some(1));
    assert!(
        said.starts_with(&format!(
            "error: the database 127.0.0.1:{port}/flags is unavailable: error performing TLS \
             handshake: invalid peer certificate: UnknownIssuer; the database's certificate is \
             verified against the CA certificates of --database-ca "
        )),
        "{said}"
    );
    assert!(
        !said.contains("secret"),
        "the password is never shown: {said}"
    );
}

#[test]
fn libpqs_verify_full_is_refused_pointing_to_require() {
    let dir = tempfile::tempdir().expect("a directory");
    let (code, said) = refused(
        dir.path(),
        &[
            "--database-url".as_ref(),
            "postgres://flagstaff@127.0.0.1:1/flags?sslmode=verify-full".as_ref(),
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        said.ends_with(
            "(use sslmode=require: flagstaffd verifies the database's certificate and host name \
             as libpq's verify-full does)"
        ),
        "{said}"
    );
}
