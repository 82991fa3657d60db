//! A real flagstaffd for tests: [`TestServer`] runs the server in-process on `127.0.0.1:0`
//! with a temporary data directory, and hands out clients that authenticate with its admin
//! token (or any other). [`TestServer::builder`] adds the metrics endpoint, TLS, a manual
//! clock or other settings, and restarts a server on its data directory and address.
//! [`eventually`] waits for what a test expects to happen.
//!
//! # Both stores
//!
//! Every server of a test process runs on one store, [`store_kind`]: sled in the data
//! directory, or PostgreSQL. The test binaries whose names end with `_postgres`
//! (`e2e_postgres` and `cli_postgres`, built from the same sources as `e2e` and `cli`) run on
//! PostgreSQL, the others on sled, so `cargo test --workspace` runs every end-to-end and CLI
//! test on both; `FLAGSTAFF_TEST_STORE=sled|postgres` overrides the choice for any binary. A
//! test about sled itself returns early on PostgreSQL through [`skip_unless_sled`].
//!
//! On PostgreSQL, each server gets a database of its own, made on its first start
//! ([`postgres::fresh_database`]); the data directory keeps its URL in `test-database-url`,
//! so a restart on that directory ([`TestServerBuilder::data_dir`]) finds the same database,
//! and keeps the admin token the server writes to `admin.token` on an empty database.
//!
//! The databases live in one PostgreSQL cluster per test process, started on first use from
//! the machine's binaries: the newest `/usr/lib/postgresql/<version>/bin` (Debian's
//! `postgresql` package), or the directory named by `FLAGSTAFF_POSTGRES_BIN`. `initdb` makes
//! it in a new temporary directory, with trust authentication for the superuser `postgres`,
//! and `postgres` serves it on a free port of 127.0.0.1 (its unix socket in that directory),
//! with fsync on. PostgreSQL refuses to run as root, so as root (as in CI) the directory
//! belongs to the `postgres` user and the binaries run as that user (`runuser`). Statics are
//! never dropped, so a watchdog (`sh`, in a process group of its own so that a Ctrl-C does
//! not reach it) runs postgres and polls the test process; once that has exited, it stops
//! postgres at once and removes the directory. The cluster also serves TLS, with a certificate
//! for `127.0.0.1` and `localhost` signed by a CA made for it ([`postgres::ca_certificate`]), to
//! the clients that ask for it (`sslmode=require`); the others talk to it in plain text.
//!
//! Without PostgreSQL binaries, the PostgreSQL tests are skipped: the first test of a
//! `_postgres` binary to need a database prints one line saying so and how to enable them, and
//! the binary exits successfully at once (a test cannot be skipped from inside). With
//! `FLAGSTAFF_REQUIRE_POSTGRES=1` (as CI runs), missing binaries or a cluster that does not
//! start fail the tests instead.
#![deny(missing_docs)]

pub mod browser;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod sign_on;
mod store;
mod wait;
pub mod watcher;

pub use store::{skip_unless_sled, store_kind, StoreKind, STORE_ENV};
pub use wait::{eventually, eventually_within, Condition, PATIENCE};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flagstaff_proto::pb::admin_client::AdminClient;
use flagstaff_proto::pb::sync_client::SyncClient;
use flagstaff_server::clients::Clients;
use flagstaff_server::clock::Clock;
use flagstaff_server::ofrep::OfrepOptions;
use flagstaff_server::storage::{Backend, PgStore, SledStore};
use flagstaff_server::{Config, ConsoleOptions, Environments, ServeOptions, Server, Tls};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// An Admin client that sends a token.
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// A Sync client that sends a token.
pub type Sync = SyncClient<InterceptedService<Channel, Bearer>>;

/// How to start a [`TestServer`]: where (data directory, address), what it serves beyond
/// gRPC in plain text, and the settings tests change. Made by [`TestServer::builder`].
#[derive(Debug, Default)]
#[must_use = "a builder starts nothing until `start` is called"]
pub struct TestServerBuilder {
    data_dir: Option<tempfile::TempDir>,
    addr: Option<SocketAddr>,
    metrics: bool,
    tls: Option<TestTls>,
    heartbeat: Option<Duration>,
    feed_capacity: Option<usize>,
    retention: Option<u64>,
    clock: Option<Arc<dyn Clock>>,
    ofrep: OfrepOptions,
    drain: Duration,
    database_url: Option<String>,
    database_ca: Option<std::path::PathBuf>,
    replica_silence: Option<Duration>,
    console: ConsoleOptions,
}

impl TestServerBuilder {
    /// Runs on the PostgreSQL database at `url`, whatever [`store_kind`] says: for a test
    /// that moves data from one store to the other.
    pub fn database_url(mut self, url: String) -> Self {
        self.database_url = Some(url);
        self
    }

    /// Verifies the database's TLS certificate against the PEM CA certificates of `path`, for
    /// a [`database_url`](Self::database_url) with `sslmode=require` (e.g.
    /// [`postgres::ca_certificate`]).
    pub fn database_ca(mut self, path: std::path::PathBuf) -> Self {
        self.database_ca = Some(path);
        self
    }

    /// Runs on an existing data directory, e.g. the one [`TestServer::stop`] returned (a
    /// restart keeps it), instead of a fresh one.
    pub fn data_dir(mut self, data_dir: tempfile::TempDir) -> Self {
        self.data_dir = Some(data_dir);
        self
    }

    /// Listens on `addr` instead of a fresh loopback port, e.g. the one a stopped server
    /// listened on, so that its clients reconnect.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Serves the metrics endpoint on another loopback port ([`TestServer::metrics_addr`]).
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Serves gRPC and HTTP over TLS with this certificate; the server's clients trust it.
    pub fn tls(mut self, tls: TestTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The heartbeat interval of Watch streams, instead of the default 15 s.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// The revisions each environment's feed keeps in memory, instead of the default.
    pub fn feed_capacity(mut self, revisions: usize) -> Self {
        self.feed_capacity = Some(revisions);
        self
    }

    /// The change-log entries kept per environment, instead of the default.
    pub fn retention(mut self, entries: u64) -> Self {
        self.retention = Some(entries);
        self
    }

    /// The clock rollout plans go by, instead of the system's (a
    /// [`ManualClock`](flagstaff_server::clock::ManualClock) runs plans in milliseconds).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How OFREP serves browsers (CORS origins) and client tokens (rate limits), instead of
    /// no CORS and the default limits.
    pub fn ofrep(mut self, options: OfrepOptions) -> Self {
        self.ofrep = options;
        self
    }

    /// On a database several servers share, shows another server's SDK instances
    /// disconnected once it has not written for `silence`, instead of 30 s (and writes this
    /// one's at least every sixth of it).
    pub fn replica_silence(mut self, silence: Duration) -> Self {
        self.replica_silence = Some(silence);
        self
    }

    /// Signs people in to the web console as `options` say (e.g. through an authenticating
    /// proxy), instead of with tokens at `/login`.
    pub fn console(mut self, options: ConsoleOptions) -> Self {
        self.console = options;
        self
    }

    /// Keeps accepting requests for `drain` once [`TestServer::stop`] begins, with `/readyz`
    /// answering 503, instead of stopping at once.
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Opens the server on the store of [`store_kind`] and serves it on a task of the current
    /// runtime. On PostgreSQL, the database named in the data directory, or a fresh one; when
    /// PostgreSQL is skipped, the test process exits successfully instead.
    pub async fn start(self) -> TestServer {
        let database_url = match store_kind() {
            _ if self.database_url.is_some() => self.database_url.clone(),
            StoreKind::Sled => None,
            StoreKind::Postgres => Some(
                self.data_dir
                    .as_ref()
                    .and_then(|dir| database_of(dir.path()))
                    .unwrap_or_else(fresh_database_or_exit),
            ),
        };
        let data_dir = match self.data_dir {
            Some(dir) => dir,
            None => tempfile::tempdir().expect("temporary data directory"),
        };
        if let Some(url) = &database_url {
            std::fs::write(data_dir.path().join(DATABASE_URL_FILE), url)
                .expect("the database URL file");
        }
        let defaults = Config::new(data_dir.path());
        let config = Config {
            heartbeat: self.heartbeat.unwrap_or(defaults.heartbeat),
            feed_capacity: self.feed_capacity.unwrap_or(defaults.feed_capacity),
            retention: self.retention.unwrap_or(defaults.retention),
            clock: self.clock.unwrap_or(defaults.clock.clone()),
            database_url: database_url.clone(),
            database_ca: self.database_ca,
            replica_silence: self.replica_silence.unwrap_or(defaults.replica_silence),
            ..defaults
        };
        let server = Server::open(&config).expect("server opens");
        let environments = server.environments().clone();
        let clients = server.clients().clone();
        let admin_token = std::fs::read_to_string(data_dir.path().join("admin.token"))
            .expect("admin token file")
            .trim()
            .to_owned();
        let listen = self
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let metrics = match self.metrics {
            true => Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind loopback for metrics"),
            ),
            false => None,
        };
        let metrics_addr = metrics
            .as_ref()
            .map(|l| l.local_addr().expect("metrics address"));
        let tls = self
            .tls
            .as_ref()
            .map(|tls| Tls::from_pem(&tls.cert, &tls.key).expect("a usable certificate and key"));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let options = ServeOptions {
            metrics,
            tls,
            ofrep: self.ofrep,
            drain: self.drain,
            console: self.console,
        };
        let task = tokio::spawn(async move {
            server
                .serve_with(listener, options, async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            addr,
            metrics_addr,
            data_dir,
            database_url,
            admin_token,
            environments,
            clients,
            tls_cert: self.tls.map(|tls| tls.cert),
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }
}

/// The file of a data directory naming its server's PostgreSQL database, for restarts.
const DATABASE_URL_FILE: &str = "test-database-url";

/// The PostgreSQL database a server on `data_dir` ran on, if one did.
fn database_of(data_dir: &Path) -> Option<String> {
    match std::fs::read_to_string(data_dir.join(DATABASE_URL_FILE)) {
        Ok(url) => Some(url.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("reading {DATABASE_URL_FILE} of {}: {e}", data_dir.display()),
    }
}

/// The store of a stopped test server's data directory, opened directly, on the store of
/// [`store_kind`]: sled in the directory, or the PostgreSQL database it names. A directory
/// that names none gets a fresh database, remembered in it, so that a server started on it
/// later finds what was written here: for a test that prepares a store before its server.
pub fn open_store(data_dir: &Path) -> Backend {
    let retention = Config::new(data_dir).retention;
    match store_kind() {
        StoreKind::Sled => Backend::Sled(SledStore::open(data_dir, retention).expect("sled store")),
        StoreKind::Postgres => {
            let url = database_of(data_dir).unwrap_or_else(|| {
                let url = fresh_database_or_exit();
                std::fs::write(data_dir.join(DATABASE_URL_FILE), &url)
                    .expect("the database URL file");
                url
            });
            Backend::Postgres(PgStore::open(&url, None, retention).expect("PostgreSQL store"))
        }
    }
}

/// A fresh database; when PostgreSQL is skipped ([`postgres::fresh_database`] printed the line
/// saying so), ends the test process successfully instead, as a test cannot be skipped from in
/// here. The tests that start no server have run in the sled binary of the same sources.
fn fresh_database_or_exit() -> String {
    match postgres::fresh_database() {
        Some(url) => url,
        None => std::process::exit(0),
    }
}

/// A PEM certificate and its key, for a server on loopback: the certificate must name
/// `localhost`, the name clients check it against.
#[derive(Debug, Clone)]
pub struct TestTls {
    /// The certificate, PEM.
    pub cert: String,
    /// Its private key, PEM.
    pub key: String,
}

/// A running flagstaffd on loopback.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where the metrics endpoint listens, when [`TestServerBuilder::metrics`] asked for it.
    pub metrics_addr: Option<SocketAddr>,
    /// Its data directory, removed when the server is dropped. On PostgreSQL it holds the
    /// admin token and the database's URL.
    pub data_dir: tempfile::TempDir,
    /// The PostgreSQL database it runs on; `None` on sled.
    pub database_url: Option<String>,
    /// The admin token minted for the fresh data directory.
    pub admin_token: String,
    /// The environments as the server holds them, to compare what clients received with.
    pub environments: Arc<Environments<Backend>>,
    /// The SDK instances the server knows.
    pub clients: Arc<Clients>,
    /// The certificate clients trust, when serving over TLS.
    tls_cert: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with a fresh data directory and the defaults: the common case of
    /// `TestServer::builder().start()`.
    pub async fn start() -> TestServer {
        TestServer::builder().start().await
    }

    /// A server to start: on a fresh data directory and a fresh loopback port, serving gRPC in
    /// plain text with the server's defaults, unless told otherwise.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// An Admin client authenticating with the admin token.
    pub async fn admin(&self) -> Admin {
        self.admin_with(Some(&self.admin_token)).await
    }

    /// A connection to the gRPC listener, over TLS trusting the server's certificate when it
    /// serves TLS, for any client (health, reflection, Admin).
    pub async fn channel(&self) -> Channel {
        let endpoint = match &self.tls_cert {
            None => Endpoint::from_shared(format!("http://{}", self.addr)).expect("endpoint"),
            Some(cert) => Endpoint::from_shared(format!("https://{}", self.addr))
                .expect("endpoint")
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(cert))
                        .domain_name("localhost"),
                )
                .expect("client TLS configuration"),
        };
        endpoint.connect().await.expect("connects")
    }

    /// An Admin client authenticating with `token`, or with none.
    pub async fn admin_with(&self, token: Option<&str>) -> Admin {
        let channel = self.channel().await;
        let bearer = token.map(|t| format!("Bearer {t}").parse().expect("ascii token"));
        AdminClient::with_interceptor(channel, Bearer(bearer))
            .max_decoding_message_size(flagstaff_server::MAX_ADMIN_MESSAGE)
            .max_encoding_message_size(flagstaff_server::MAX_ADMIN_MESSAGE)
    }

    /// The gRPC endpoint, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A Sync client authenticating with `token`.
    pub async fn sync_with(&self, token: &str) -> Sync {
        let channel = self.channel().await;
        let bearer = format!("Bearer {token}").parse().expect("ascii token");
        SyncClient::with_interceptor(channel, Bearer(Some(bearer)))
    }

    /// Stops the server gracefully and returns its data directory, for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        let dir = tempfile::tempdir().expect("placeholder");
        std::mem::replace(&mut self.data_dir, dir)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
