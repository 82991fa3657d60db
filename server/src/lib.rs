//! flagstaffd, Flagstaff's control plane: environments, flags, segments, tokens and the audit
//! log, stored durably and served over gRPC.
#![deny(missing_docs)]

pub mod auth;
mod environments;
mod error;
mod operations;
pub mod service;
pub mod storage;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use flagstaff_proto::pb;

pub use environments::{Committed, Current, Environment, Environments, WriteContext};
pub use error::ServerError;
pub use operations::{ApplyOptions, SegmentKeyPatch};

use crate::auth::Tokens;
use crate::storage::{SledStore, DEFAULT_RETENTION};

/// Largest Admin message accepted and sent: whole environments and 100,000-key segments
/// exceed gRPC's default of 4 MiB.
pub const MAX_ADMIN_MESSAGE: usize = 64 * 1024 * 1024;

/// How flagstaffd runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the sled database and the admin token file live.
    pub data_dir: PathBuf,
    /// Change-log entries kept per environment.
    pub retention: u64,
}

impl Config {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            retention: DEFAULT_RETENTION,
        }
    }
}

/// A server's state, opened from its data directory.
#[derive(Debug)]
pub struct Server {
    envs: Arc<Environments<SledStore>>,
    tokens: Arc<Tokens<SledStore>>,
}

impl Server {
    /// Opens the data directory (creating it), loads every environment, and on a fresh one
    /// mints an admin token into `<data-dir>/admin.token`, logging its path.
    pub fn open(config: &Config) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ServerError::Invalid(format!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let store = Arc::new(SledStore::open(&config.data_dir, config.retention)?);
        let envs = Arc::new(Environments::load(store.clone())?);
        let tokens = Arc::new(Tokens::load(store)?);
        if tokens.is_empty() {
            let path = tokens.mint_admin_token_file(&config.data_dir, "admin")?;
            tracing::info!(path = %path.display(), "fresh data directory: admin token written");
        }
        Ok(Server { envs, tokens })
    }

    /// The environments served.
    pub fn environments(&self) -> &Arc<Environments<SledStore>> {
        &self.envs
    }

    /// The tokens.
    pub fn tokens(&self) -> &Arc<Tokens<SledStore>> {
        &self.tokens
    }

    /// Serves gRPC on `listener` until `shutdown` completes, then finishes the requests in
    /// flight and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let admin = pb::admin_server::AdminServer::new(service::admin::AdminService::new(
            self.envs.clone(),
            self.tokens.clone(),
        ))
        .max_decoding_message_size(MAX_ADMIN_MESSAGE)
        .max_encoding_message_size(MAX_ADMIN_MESSAGE);
        tonic::transport::Server::builder()
            .add_service(admin)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown,
            )
            .await
    }
}
