//! The harness that runs servers on PostgreSQL: a database of its own for each server, the
//! same one after a restart on its data directory.

use flagstaff_tests::postgres::fresh_database;
use flagstaff_tests::{store_kind, StoreKind, TestServer};

use crate::fixtures::create_environment;

/// A connection to `url`, served on a task of the current runtime.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn each_fresh_database_is_a_new_empty_database_of_a_durable_cluster() {
    if store_kind() != StoreKind::Postgres {
        return;
    }
    let Some(first) = fresh_database() else {
        return;
    };
    let second = fresh_database().expect("the cluster is running");
    assert_ne!(first, second);

    let first_client = connect(&first).await;
    let second_client = connect(&second).await;
    for (url, client) in [(&first, &first_client), (&second, &second_client)] {
        let one: i32 = client.query_one("SELECT 1", &[]).await.expect("1").get(0);
        assert_eq!(one, 1);
        let name: String = client
            .query_one("SELECT current_database()", &[])
            .await
            .expect("its name")
            .get(0);
        assert!(url.ends_with(&format!("/{name}")), "{url} is {name}");
        let fsync: String = client
            .query_one("SHOW fsync", &[])
            .await
            .expect("fsync")
            .get(0);
        assert_eq!(
            fsync, "on",
            "the store's durability is tested with fsync on"
        );
    }

    // What one test writes, another does not see.
    first_client
        .batch_execute("CREATE TABLE written (n int); INSERT INTO written VALUES (7)")
        .await
        .expect("written");
    let tables: i64 = second_client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .expect("tables")
        .get(0);
    assert_eq!(tables, 0);
}

#[tokio::test]
async fn a_restart_on_the_data_directory_finds_the_same_store() {
    let server = TestServer::start().await;
    assert_eq!(
        server.database_url.is_some(),
        store_kind() == StoreKind::Postgres
    );
    let url = server.database_url.clone();
    let token = server.admin_token.clone();
    create_environment(&mut server.admin().await, "production").await;

    if let Some(url) = &url {
        // The server keeps it in PostgreSQL, not in a sled database of its data directory.
        let stored: Vec<String> = connect(url)
            .await
            .query("SELECT key FROM environments", &[])
            .await
            .expect("the environments table")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(stored, ["production"]);
        assert!(!server.data_dir.path().join("db").exists());
    }
    let data_dir = server.stop().await;
    let server = TestServer::builder().data_dir(data_dir).start().await;
    assert_eq!(server.database_url, url);
    assert_eq!(server.admin_token, token);
    assert!(server.environments.get("production").is_ok());

    let other = TestServer::start().await;
    assert!(other.environments.get("production").is_err());
    if url.is_some() {
        assert_ne!(
            other.database_url, url,
            "a fresh data directory, a fresh database"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commit_and_every_new_environment_is_notified() {
    if store_kind() != StoreKind::Postgres {
        return;
    }
    let server = TestServer::start().await;
    let url = server.database_url.clone().expect("on PostgreSQL");
    let (listener, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    let (heard, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(tokio_postgres::AsyncMessage::Notification(n)) = message {
                let _ = heard.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener
        .batch_execute(&format!(
            "LISTEN {}",
            flagstaff_server::storage::NOTIFY_CHANNEL
        ))
        .await
        .expect("listening");

    let mut admin = server.admin().await;
    create_environment(&mut admin, "production").await;
    let revision = crate::fixtures::create_flag(
        &mut admin,
        "production",
        crate::fixtures::boolean_flag("checkout"),
    )
    .await;
    let mut heard = Vec::new();
    for _ in 0..2 {
        let (channel, payload) =
            tokio::time::timeout(flagstaff_tests::PATIENCE, notifications.recv())
                .await
                .expect("notified in time")
                .expect("a notification");
        assert_eq!(channel, flagstaff_server::storage::NOTIFY_CHANNEL);
        heard.push(payload);
    }
    // The environment's creation, then its first commit.
    assert_eq!(
        heard,
        ["environments".to_owned(), format!("production:{revision}")]
    );
}
