//! A real flagstaffd for tests: [`TestServer`] runs the server in-process on `127.0.0.1:0`
//! with a temporary data directory, and hands out clients that authenticate with its admin
//! token (or any other). [`TestServer::start_with`] adds the metrics endpoint or TLS.
#![deny(missing_docs)]

pub mod proxy;
pub mod watcher;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flagstaff_proto::pb::admin_client::AdminClient;
use flagstaff_proto::pb::sync_client::SyncClient;
use flagstaff_server::clients::Clients;
use flagstaff_server::storage::SledStore;
use flagstaff_server::{Config, Environments, ServeOptions, Server, Tls};
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

/// What [`TestServer::start_with`] serves beyond gRPC in plain text.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve the metrics endpoint on another loopback port ([`TestServer::metrics_addr`]).
    pub metrics: bool,
    /// Serve gRPC over TLS with this certificate; the server's clients trust it.
    pub tls: Option<TestTls>,
    /// Heartbeat interval of Watch streams, instead of the default 15 s.
    pub heartbeat: Option<Duration>,
    /// Revisions each environment's feed keeps in memory, instead of the default.
    pub feed_capacity: Option<usize>,
    /// Change-log entries kept per environment, instead of the default.
    pub retention: Option<u64>,
    /// Listen on this address instead of a fresh loopback port (a restart on the same
    /// address, for clients that reconnect).
    pub listen: Option<SocketAddr>,
    /// The clock rollout plans go by, instead of the system's (a
    /// [`ManualClock`](flagstaff_server::clock::ManualClock) runs plans in milliseconds).
    pub clock: Option<Arc<dyn flagstaff_server::clock::Clock>>,
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
    /// Where the metrics endpoint listens, when [`Options::metrics`] asked for it.
    pub metrics_addr: Option<SocketAddr>,
    /// Its data directory, removed when the server is dropped.
    pub data_dir: tempfile::TempDir,
    /// The admin token minted for the fresh data directory.
    pub admin_token: String,
    /// The environments as the server holds them, to compare what clients received with.
    pub environments: Arc<Environments<SledStore>>,
    /// The SDK instances the server knows.
    pub clients: Arc<Clients>,
    /// The certificate clients trust, when serving over TLS.
    tls_cert: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with a fresh data directory.
    pub async fn start() -> TestServer {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        TestServer::start_in(data_dir).await
    }

    /// Starts a server with a fresh data directory, serving what `options` ask for.
    pub async fn start_with(options: Options) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        TestServer::start_in_with(data_dir, options).await
    }

    /// Starts a server on an existing data directory (a restart keeps it).
    pub async fn start_in(data_dir: tempfile::TempDir) -> TestServer {
        TestServer::start_in_with(data_dir, Options::default()).await
    }

    /// Starts a server on an existing data directory and a given address, e.g. the one a
    /// stopped server listened on, so that its clients reconnect.
    pub async fn start_in_at(data_dir: tempfile::TempDir, addr: SocketAddr) -> TestServer {
        let options = Options {
            listen: Some(addr),
            ..Options::default()
        };
        TestServer::start_in_with(data_dir, options).await
    }

    /// Starts a server on an existing data directory, serving what `options` ask for.
    pub async fn start_in_with(data_dir: tempfile::TempDir, options: Options) -> TestServer {
        let defaults = Config::new(data_dir.path());
        let config = Config {
            heartbeat: options.heartbeat.unwrap_or(defaults.heartbeat),
            feed_capacity: options.feed_capacity.unwrap_or(defaults.feed_capacity),
            retention: options.retention.unwrap_or(defaults.retention),
            clock: options.clock.clone().unwrap_or(defaults.clock.clone()),
            ..defaults
        };
        let server = Server::open(&config).expect("server opens");
        let environments = server.environments().clone();
        let clients = server.clients().clone();
        let admin_token = std::fs::read_to_string(data_dir.path().join("admin.token"))
            .expect("admin token file")
            .trim()
            .to_owned();
        let listen = options
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let metrics = match options.metrics {
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
        let tls = options
            .tls
            .as_ref()
            .map(|tls| Tls::from_pem(&tls.cert, &tls.key).expect("a usable certificate and key"));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve_with(listener, ServeOptions { metrics, tls }, async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            addr,
            metrics_addr,
            data_dir,
            admin_token,
            environments,
            clients,
            tls_cert: options.tls.map(|tls| tls.cert),
            shutdown: Some(shutdown),
            task: Some(task),
        }
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
