//! `flagstaffd`: serves Flagstaff's control plane.
//!
//! ```sh
//! flagstaffd [--listen 127.0.0.1:7878] [--data-dir ./flagstaff-data]
//! flagstaffd admin-token --data-dir ./flagstaff-data    # mint a new admin token offline
//! ```
//! Every option is also an environment variable: `FLAGSTAFF_LISTEN`, `FLAGSTAFF_DATA_DIR`,
//! `FLAGSTAFF_RETENTION`. Logs go to stderr; `RUST_LOG` filters them (default `info`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use flagstaff_server::{Config, Server};

#[derive(Debug, Parser)]
#[command(name = "flagstaffd", version, about = "Flagstaff's control plane")]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "FLAGSTAFF_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,

    /// Directory of the database and the admin token file.
    #[arg(long, env = "FLAGSTAFF_DATA_DIR", default_value = "./flagstaff-data")]
    data_dir: PathBuf,

    /// Change-log entries kept per environment, for SDKs resuming without a full snapshot.
    #[arg(long, env = "FLAGSTAFF_RETENTION", default_value_t = flagstaff_server::storage::DEFAULT_RETENTION)]
    retention: u64,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint a new admin token into <data-dir>/admin.token, for when the old one is lost.
    /// Run it while flagstaffd is stopped: the data directory is opened directly.
    AdminToken,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config {
        data_dir: args.data_dir.clone(),
        retention: args.retention,
    };
    let server = Server::open(&config)?;
    if let Some(Command::AdminToken) = args.command {
        let path = server
            .tokens()
            .mint_admin_token_file(&args.data_dir, "admin")?;
        eprintln!("a new admin token is in {}", path.display());
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(address = %listener.local_addr()?, data_dir = %args.data_dir.display(), "flagstaffd serving");
        server.serve(listener, shutdown_signal()).await?;
        tracing::info!("flagstaffd stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
