//! TLS to PostgreSQL (`sslmode=require`): a server whose database URL asks for it reads and
//! writes over connections the database itself reports as TLS, with the database's certificate
//! verified against the CA given; a certificate that CA did not sign is refused at start,
//! naming the problem and the database, never the password.

use flagstaff_proto::pb;
use flagstaff_server::storage::{PgStore, StoreError};
use flagstaff_server::{Config, Server, ServerError};
use flagstaff_tests::postgres::{ca_certificate, fresh_database};
use flagstaff_tests::{store_kind, StoreKind, TestServer};

use crate::fixtures::{boolean_flag, create_environment, create_flag};

/// A fresh database's URL, and the CA of the cluster's certificate; `None` when PostgreSQL is
/// skipped or this binary runs on sled (the sled binary has nothing to add here).
fn database() -> Option<(String, std::path::PathBuf)> {
    if store_kind() != StoreKind::Postgres {
        return None;
    }
    let url = fresh_database()?;
    Some((url, ca_certificate().expect("the cluster is running")))
}

/// The database name of one of the harness's URLs.
fn name_of(url: &str) -> &str {
    url.rsplit_once('/').expect("a database").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_sslmode_require_talks_to_the_database_over_verified_tls() {
    let Some((url, ca)) = database() else {
        return;
    };
    let server = TestServer::builder()
        .database_url(format!("{url}?sslmode=require"))
        .database_ca(ca)
        .start()
        .await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    create_flag(&mut admin, "production", boolean_flag("checkout")).await;
    let read = admin
        .get_flag(pb::GetFlagRequest {
            environment: "production".into(),
            key: "checkout".into(),
        })
        .await
        .expect("read back")
        .into_inner();
    assert_eq!(read.flag.expect("the flag").key, "checkout");

    // Asked as the superuser, in plain text: this connection is not one of those counted.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    let over_tls: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.datname = $1",
            &[&name_of(&url)],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(over_tls > 0, "the server's connections use TLS");
    let in_clear: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE NOT s.ssl AND a.datname = $1 AND a.application_name = 'flagstaffd'",
            &[&name_of(&url)],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert_eq!(
        in_clear, 0,
        "none of the server's connections is in plain text"
    );
}

#[test]
fn a_database_certificate_the_ca_did_not_sign_is_refused_naming_the_problem() {
    let Some((url, _)) = database() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let other_ca = dir.path().join("other-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("CA key");
    std::fs::write(
        &other_ca,
        params.self_signed(&key).expect("CA certificate").pem(),
    )
    .expect("write");
    // A password the database does not need (trust authentication), to see it is not shown.
    let with_password = url.replacen("postgres@", "postgres:hunter2@", 1);
    let config = Config {
        database_url: Some(format!("{with_password}?sslmode=require")),
        database_ca: Some(other_ca.clone()),
        ..Config::new(dir.path().join("data"))
    };
    let refused = Server::open(&config).expect_err("an untrusted certificate is refused");
    let message = refused.to_string();
    let named = url.rsplit_once('@').expect("the harness's URL").1;
    assert!(
        matches!(
            &refused,
            ServerError::Store(StoreError::Unavailable { database, .. }) if database == named
        ),
        "{refused:?}"
    );
    assert!(
        message.starts_with(&format!("the database {named} is unavailable: ")),
        "{message}"
    );
    assert!(
        message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    assert!(
        message.contains(&format!("--database-ca {}", other_ca.display())),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!dir.path().join("data").exists(), "nothing created");

    // The right CA, and a host name the certificate does not carry: reached at the cluster's
    // address (hostaddr), verified against the URL's host.
    let (_, port_and_name) = named.split_once(':').expect("host:port/database");
    let elsewhere = format!(
        "postgres://postgres@db.invalid:{port_and_name}?hostaddr=127.0.0.1&sslmode=require"
    );
    let ca = ca_certificate().expect("the cluster's CA");
    let message = PgStore::open(&elsewhere, Some(&ca), 10)
        .expect_err("a certificate for another name is refused")
        .to_string();
    assert!(
        message.starts_with(&format!(
            "the database db.invalid:{port_and_name} is unavailable: "
        )) && message.contains("invalid peer certificate: certificate not valid for name"),
        "{message}"
    );
}
