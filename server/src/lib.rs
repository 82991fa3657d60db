//! flagstaffd, Flagstaff's control plane: environments, flags, segments, tokens and the audit
//! log, stored durably and served over gRPC and HTTP on one port.
//!
//! Besides `flagstaff.v1.Admin` and `flagstaff.v1.Sync`, the listener serves
//! `grpc.health.v1.Health` and server reflection (`grpc.reflection.v1` and `v1alpha`), and,
//! to requests that are not gRPC, OpenFeature remote evaluation (OFREP) under `/ofrep/v1/` and
//! `/healthz` and `/readyz`, over HTTP/1.1 and h2, optionally over TLS ([`Tls`]); a second,
//! optional listener serves the server's own metrics in the Prometheus text format
//! ([`ServeOptions::metrics`]). docs/operations.md and docs/ofrep.md describe them.
//!
//! # Where things are
//!
//! Each module depends only on those listed before it, but for the commit hook of
//! `rollout`, which `environments` calls (pure: it sees plan records only).
//!
//! - `error`: the server's errors; `storage`: the [`Store`](storage::Store) trait and its sled
//!   implementation (records, change log, audit log, tokens); `clock`: the time rollout plans
//!   go by.
//! - `feed`: each environment's ring of committed revisions, for streams.
//! - `versions`: expected versions and the conflicts they report.
//! - `environments`: environments in memory and the one commit path every write takes.
//! - `operations`: the Admin writes on flags, segments and whole documents.
//! - `rollout`: staged rollout plans (their arithmetic, the hook every commit calls, the
//!   guard's statistics, the plans' operations and the scheduler).
//! - `auth`: tokens and what they may do; `clients`: the SDK instances watching (on a shared
//!   database, every replica's); `usage`: what SDKs report (flag usage, guard counts).
//! - `repair`: `flagstaffd check` and `repair`.
//! - `service`: the gRPC services (`admin/`, one file per resource; `sync` and `watch`;
//!   paging and wire conversion); `health`, `metrics` and `tls` around them.
//! - `http`: the one port: accepting plain or TLS connections, sending each request to gRPC
//!   or to the HTTP routes by its content type, and the HTTP routes' own answers.
//! - `ofrep`: OpenFeature remote evaluation over HTTP (the evaluation endpoints, contexts,
//!   usage counts, event-stream tickets, rate limits, the change-notification stream).
//! - This file: [`Config`] and [`Server`], which open the store and serve.
#![deny(missing_docs)]

pub mod auth;
pub mod backup;
pub mod clients;
pub mod clock;
mod console;
mod environments;
mod error;
pub mod feed;
mod follow;
mod health;
mod http;
mod metrics;
pub mod ofrep;
mod operations;
pub mod repair;
pub mod rollout;
pub mod service;
pub mod storage;
mod tls;
pub mod usage;
mod versions;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flagstaff_proto::pb;
use tokio::sync::watch;
use tonic_health::ServingStatus;

pub use console::{ConsoleOptions, ProxySignOn};
pub use environments::{Committed, Current, Environment, Environments, WriteContext};
pub use error::ServerError;
#[doc(hidden)]
pub use http::serve_routes;
pub use operations::ApplyOptions;
pub use tls::{Tls, TlsError};

use crate::auth::Tokens;
use crate::clients::Clients;
use crate::feed::DEFAULT_FEED_CAPACITY;
use crate::metrics::{CountRequestsLayer, RequestCounts};
use crate::service::admin::AdminService;
use crate::service::sync::SyncService;
use crate::service::watch::{Signals, Watcher, DEFAULT_HEARTBEAT};
use crate::storage::{Backend, PgStore, SledStore, DEFAULT_RETENTION};

/// The Admin service as served, whose name health reports.
type AdminServer = pb::admin_server::AdminServer<AdminService<Backend>>;

/// The Sync service as served, whose name health reports.
type SyncServer = pb::sync_server::SyncServer<SyncService<Backend>>;

/// Largest Admin message accepted and sent: whole environments and 100,000-key segments
/// exceed gRPC's default of 4 MiB.
pub const MAX_ADMIN_MESSAGE: usize = flagstaff_proto::codec::MAX_APPLY_REQUEST_BYTES;

/// How long requests in flight may take to finish once shutdown has begun (after the drain).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How flagstaffd runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the sled database and the admin token file live (with PostgreSQL, only the
    /// admin token file).
    pub data_dir: PathBuf,
    /// The PostgreSQL store's connection string (`postgres://…`); the sled store in
    /// `data_dir` when `None`.
    pub database_url: Option<String>,
    /// PEM CA certificates the PostgreSQL database's certificate is verified against, when
    /// `database_url` asks for TLS (`sslmode=require`); the system's roots when `None`.
    pub database_ca: Option<PathBuf>,
    /// Change-log entries kept per environment.
    pub retention: u64,
    /// How often a quiet Watch stream gets a heartbeat (announced to SDKs in snapshots).
    pub heartbeat: Duration,
    /// Recent revisions each environment keeps in memory for Watch streams; a stream that
    /// falls further behind is sent a fresh snapshot.
    pub feed_capacity: usize,
    /// The time rollout plans go by: the system clock, or a manual one in tests.
    pub clock: Arc<dyn clock::Clock>,
    /// On a database several flagstaffd share, how long one may go without writing its SDK
    /// instances before the others show them disconnected: [`clients::REPLICA_SILENCE`]
    /// unless a test shortens it.
    pub replica_silence: Duration,
}

impl Config {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            database_url: None,
            database_ca: None,
            retention: DEFAULT_RETENTION,
            heartbeat: DEFAULT_HEARTBEAT,
            feed_capacity: DEFAULT_FEED_CAPACITY,
            clock: Arc::new(clock::SystemClock),
            replica_silence: clients::REPLICA_SILENCE,
        }
    }
}

/// What [`Server::serve_with`] serves besides plain gRPC and HTTP.
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// Serve the metrics endpoint (`GET /metrics`, Prometheus text format, plain HTTP/1.1)
    /// on this listener. Off when `None`.
    pub metrics: Option<tokio::net::TcpListener>,
    /// Serve gRPC and HTTP over TLS with this certificate and key. Plain text when `None`.
    pub tls: Option<Tls>,
    /// How OFREP serves browsers and client tokens.
    pub ofrep: ofrep::OfrepOptions,
    /// How long flagstaffd keeps accepting requests once shutdown has begun, with
    /// `/readyz` answering 503 and health `NOT_SERVING`, so that load balancers stop sending
    /// it requests before it stops listening. Zero by default.
    pub drain: Duration,
    /// How the web console signs people in: tokens at `/login` by default, or through an
    /// authenticating proxy.
    pub console: ConsoleOptions,
}

/// The store `config` names: PostgreSQL at its `database_url` (migrated to this version's
/// schema), or sled in its data directory.
pub fn open_store(config: &Config) -> Result<Backend, storage::StoreError> {
    Ok(match &config.database_url {
        Some(url) => {
            let store = PgStore::open(url, config.database_ca.as_deref(), config.retention)?;
            tracing::info!(database = store.database(), "store: PostgreSQL");
            Backend::Postgres(store)
        }
        None => Backend::Sled(SledStore::open(&config.data_dir, config.retention)?),
    })
}

/// A server's state, opened from its data directory.
#[derive(Debug)]
pub struct Server {
    envs: Arc<Environments<Backend>>,
    tokens: Arc<Tokens<Backend>>,
    /// gRPC calls by method and status code, for the metrics endpoint.
    requests: Arc<RequestCounts>,
    /// The SDK instances watching.
    clients: Arc<Clients>,
    heartbeat: Duration,
    /// Signs the tickets in OFREP event-stream URLs, with the store's key.
    tickets: Arc<ofrep::ticket::Tickets>,
}

impl Server {
    /// Opens the store (sled in the data directory, created if missing, or the PostgreSQL
    /// database of `database_url`), loads every environment, and on a fresh store mints an
    /// admin token into `<data-dir>/admin.token`, logging its path.
    pub fn open(config: &Config) -> Result<Server, ServerError> {
        let create_data_dir = || {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| {
                ServerError::Invalid(format!(
                    "cannot create data directory {}: {e}",
                    config.data_dir.display()
                ))
            })
        };
        // A database that cannot be reached creates nothing; sled needs its directory first.
        if config.database_url.is_none() {
            create_data_dir()?;
        }
        let store = Arc::new(open_store(config)?);
        create_data_dir()?;
        let envs = Arc::new(Environments::load_with_clock(
            store.clone(),
            config.feed_capacity,
            config.clock.clone(),
        )?);
        let tokens = Arc::new(Tokens::load(store)?);
        if tokens.is_empty() {
            let path = tokens.mint_admin_token_file(&config.data_dir, "admin")?;
            tracing::info!(path = %path.display(), "fresh data directory: admin token written");
        }
        let requests = Arc::new(RequestCounts::new(&descriptor_sets()));
        let tickets = Arc::new(ofrep::ticket::Tickets::load(&**envs.store())?);
        Ok(Server {
            envs,
            tokens,
            requests,
            clients: Arc::new(Clients::with_silence(config.replica_silence)),
            heartbeat: config.heartbeat,
            tickets,
        })
    }

    /// The environments served.
    pub fn environments(&self) -> &Arc<Environments<Backend>> {
        &self.envs
    }

    /// The tokens.
    pub fn tokens(&self) -> &Arc<Tokens<Backend>> {
        &self.tokens
    }

    /// The SDK instances that watch, or watched, each environment.
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    /// Serves gRPC and HTTP in plain text on `listener`, without a metrics endpoint, until `shutdown`
    /// completes; see [`serve_with`](Self::serve_with).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_with(listener, ServeOptions::default(), shutdown)
            .await
    }

    /// Serves gRPC (Admin, Sync, health and reflection) and HTTP (OFREP, `/healthz`,
    /// `/readyz`) on `listener`, over TLS if `options` say so, and the metrics endpoint if
    /// `options` give it a listener, until `shutdown` completes. Then health reports
    /// `NOT_SERVING` and ends its `Watch` streams, `/readyz` answers 503, the metrics endpoint
    /// closes, OFREP usage is recorded, and the requests in flight finish before this returns.
    pub async fn serve_with(
        self,
        listener: tokio::net::TcpListener,
        options: ServeOptions,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        // Turns true once, when shutdown begins: health streams and the metrics endpoint end.
        let (stop, stopping) = watch::channel(false);

        let signals = Signals::new(stopping.clone());
        let admin = AdminServer::new(AdminService::new(
            self.envs.clone(),
            self.tokens.clone(),
            self.clients.clone(),
            signals.clone(),
        ))
        .max_decoding_message_size(MAX_ADMIN_MESSAGE)
        .max_encoding_message_size(MAX_ADMIN_MESSAGE);
        // The transport lets each request through up to the largest limit of its service;
        // the codec applies each request's own (flagstaff_proto::codec).
        let sync = SyncServer::new(SyncService::new(Watcher::new(
            self.envs.clone(),
            self.tokens.clone(),
            self.clients.clone(),
            signals,
            self.heartbeat,
        )))
        .max_decoding_message_size(flagstaff_proto::codec::MAX_REQUEST_BYTES);

        // The overall status ("") starts as SERVING; so does Admin's, once registered.
        let health_reporter = tonic_health::server::HealthReporter::new();
        health_reporter.set_serving::<AdminServer>().await;
        health_reporter.set_serving::<SyncServer>().await;
        let health =
            tonic_health::pb::health_server::HealthServer::new(health::StoppingHealth::new(
                tonic_health::server::HealthService::from_health_reporter(health_reporter.clone()),
                stopping.clone(),
            ));

        let (reflection_v1, reflection_v1alpha) = reflection();
        let mut grpc = tonic::service::Routes::new(admin)
            .add_service(sync)
            .add_service(health);
        if let Some(v1) = reflection_v1 {
            grpc = grpc.add_service(v1);
        }
        if let Some(v1alpha) = reflection_v1alpha {
            grpc = grpc.add_service(v1alpha);
        }
        let grpc = tower::ServiceBuilder::new()
            .layer(CountRequestsLayer::new(self.requests.clone()))
            .layer(service::oversize::OversizeLayer)
            .service(grpc.prepare());

        // OFREP evaluations count toward flag usage, recorded every few seconds.
        let tally = Arc::new(ofrep::Tally::default());
        let ofrep = ofrep::routes(
            Arc::new(ofrep::Ofrep::new(
                self.envs.clone(),
                self.tokens.clone(),
                tally.clone(),
                self.tickets.clone(),
                &options.ofrep,
                Signals::new(stopping.clone()),
            )),
            &options.ofrep.cors_origins,
        );
        let usage = tokio::spawn(
            tally
                .clone()
                .run(self.envs.clone(), health::stopped(stopping.clone())),
        );
        // On a shared database, whether this flagstaffd can reach it and is up to date: told
        // to load balancers by /readyz and the Admin service's health. Sync, OFREP and
        // /healthz serve from memory whatever it is.
        let (ready, readiness) = watch::channel(follow::Readiness::Ready);
        let console = console::routes(Arc::new(console::Console::new(
            self.envs.clone(),
            self.tokens.clone(),
            self.clients.clone(),
            options.tls.is_some(),
            options.ofrep.public_url.as_deref(),
            options.console,
        )));
        let routes = http::routes(ofrep, console, stopping.clone(), readiness.clone());

        let metrics = options.metrics.map(|listener| {
            let (envs, requests, clients, tokens) = (
                self.envs.clone(),
                self.requests.clone(),
                self.clients.clone(),
                self.tokens.clone(),
            );
            let render: metrics::endpoint::Render =
                Arc::new(move || metrics::render(&envs, &requests, &clients, &tokens));
            tokio::spawn(metrics::endpoint::serve(
                listener,
                render,
                health::stopped(stopping.clone()),
            ))
        });

        // On a database other flagstaffd processes write too, what they commit is applied
        // here and sent to this one's Watch streams.
        let follower = storage::Store::follow(&**self.envs.store()).map(|announcements| {
            tokio::spawn(follow::follow(
                self.envs.clone(),
                self.tokens.clone(),
                announcements,
                ready,
                health::stopped(stopping.clone()),
            ))
        });
        // On such a database, this flagstaffd's SDK instances are written there for the
        // others, until its streams have closed at shutdown (told by dropping `streams_closed`).
        let (streams_closed, serving_ended) = tokio::sync::oneshot::channel::<()>();
        let sharing = storage::Store::is_shared(&**self.envs.store()).then(|| {
            tokio::spawn(clients::share(
                self.clients.clone(),
                self.envs.store().clone(),
                async {
                    let _ = serving_ended.await;
                },
            ))
        });
        let admin_health = tokio::spawn(health::admin_follows(
            health_reporter.clone(),
            readiness,
            stopping.clone(),
        ));

        // Rollout plans advance while the server serves: on a database other flagstaffd
        // processes write too, while this one holds the leader's lease.
        if let Some(leadership) = storage::Store::lead(&**self.envs.store()) {
            self.envs.follow_leadership(leadership);
        }
        let scheduler = tokio::spawn(rollout::schedule(
            self.envs.clone(),
            health::stopped(stopping.clone()),
        ));

        let drain = options.drain;
        let signal = async {
            shutdown.await;
            health_reporter.set_not_serving::<AdminServer>().await;
            health_reporter.set_not_serving::<SyncServer>().await;
            health_reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            stop.send_replace(true);
            // Still accepting while load balancers see /readyz fail and stop sending.
            tokio::time::sleep(drain).await;
        };
        let serving = http::serve(listener, options.tls.as_ref(), grpc, routes, signal);
        // Requests in flight get SHUTDOWN_GRACE after the drain; then flagstaffd stops without
        // them (a client trickling a request must not keep it from stopping).
        let mut stopped = stopping.clone();
        let served = tokio::select! {
            served = serving => served,
            () = async {
                let _ = stopped.wait_for(|stop| *stop).await;
                tokio::time::sleep(drain + SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!(
                    grace = ?SHUTDOWN_GRACE,
                    "requests still in flight after the shutdown grace period are cut off"
                );
                Ok(())
            }
        };
        // Also when serving failed before the shutdown signal.
        stop.send_replace(true);
        drop(streams_closed);
        if let Some(sharing) = sharing {
            if let Err(e) = sharing.await {
                tracing::error!(error = %e, "writing SDK instances to the database failed");
            }
        }
        if let Err(e) = scheduler.await {
            tracing::error!(error = %e, "the rollout scheduler failed");
        }
        // Another flagstaffd takes the lease at once, rather than after it expires; given up
        // while the rest stops.
        self.envs.resign();
        let store = self.envs.store().clone();
        let resigning = tokio::task::spawn_blocking(move || storage::Store::resign(&*store));
        let _ = admin_health.await;
        if let Some(follower) = follower {
            if let Err(e) = follower.await {
                tracing::error!(error = %e, "following the store failed");
            }
        }
        if let Err(e) = usage.await {
            tracing::error!(error = %e, "recording OFREP usage failed");
        }
        // What the requests finishing after the stop signal counted.
        tally.flush(&self.envs).await;
        if let Some(metrics) = metrics {
            if let Err(e) = metrics.await {
                tracing::error!(error = %e, "the metrics endpoint failed");
            }
        }
        // Health watchers' streams end now, not after the lease is given up.
        drop(health_reporter);
        let _ = resigning.await;
        served
    }
}

/// The encoded descriptor sets of every service the gRPC listener serves (or reserves, like
/// `flagstaff.v1.Sync`).
fn descriptor_sets() -> [&'static [u8]; 4] {
    [
        flagstaff_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
}

/// Server reflection, v1 and the v1alpha that older tools still ask for, over Flagstaff's
/// and health's descriptors (each includes its own). The descriptor sets are compiled in, so
/// building can fail only with a broken build; then reflection is logged and left out
/// rather than taking the server down.
fn reflection() -> (
    Option<
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
    >,
    Option<
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    >,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(flagstaff_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| tracing::error!(error = %e, "server reflection v1 is not served"))
        .ok();
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| tracing::error!(error = %e, "server reflection v1alpha is not served"))
        .ok();
    (v1, v1alpha)
}
