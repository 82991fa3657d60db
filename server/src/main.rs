//! `flagstaffd`: serves Flagstaff's control plane.
//!
//! ```sh
//! flagstaffd [--listen 127.0.0.1:7878] [--data-dir ./flagstaff-data]
//!            [--metrics-listen 127.0.0.1:9187] [--tls-cert cert.pem --tls-key key.pem]
//!            [--cors-origin https://app.example.com]... [--public-url https://flags.example.com]
//!            [--console-proxy-header X-Forwarded-Email --console-proxy-from 10.0.0.0/8
//!             --console-users users.yaml]
//! flagstaffd admin-token --data-dir ./flagstaff-data    # mint a new admin token offline
//! flagstaffd check --data-dir ./flagstaff-data          # list damaged records
//! flagstaffd repair --data-dir ./flagstaff-data         # restore them from the audit log
//! flagstaffd --database-url postgres://flagstaff@db/flagstaff   # on PostgreSQL instead of sled
//! flagstaffd --database-url 'postgres://…?sslmode=require' --database-ca db-ca.pem  # over TLS
//! flagstaffd migrate --database-url postgres://…        # apply schema migrations and exit
//! ```
//! Every option is also an environment variable: `FLAGSTAFF_LISTEN`, `FLAGSTAFF_DATA_DIR`,
//! `FLAGSTAFF_DATABASE_URL`, `FLAGSTAFF_DATABASE_CA`,
//! `FLAGSTAFF_RETENTION`, `FLAGSTAFF_HEARTBEAT_INTERVAL`, `FLAGSTAFF_METRICS_LISTEN`, `FLAGSTAFF_TLS_CERT`,
//! `FLAGSTAFF_TLS_KEY`, `FLAGSTAFF_CORS_ORIGINS`, `FLAGSTAFF_PUBLIC_URL`, `FLAGSTAFF_CLIENT_TOKEN_RATE`,
//! `FLAGSTAFF_CLIENT_ADDRESS_RATE`, `FLAGSTAFF_CLIENT_STREAMS`, `FLAGSTAFF_ADDRESS_STREAMS`,
//! `FLAGSTAFF_SHUTDOWN_DRAIN`, `FLAGSTAFF_CONSOLE_PROXY_HEADER`, `FLAGSTAFF_CONSOLE_PROXY_FROM`,
//! `FLAGSTAFF_CONSOLE_USERS`. Logs go to stderr; `RUST_LOG` filters them (default `info`). The
//! addresses actually bound are logged (`address=`, `metrics_address=`), so port 0 works.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use flagstaff_server::ofrep::limit::Rate;
use flagstaff_server::ofrep::{OfrepOptions, RateLimits};
use flagstaff_server::storage::{Backend, PgStore, SledStore};
use flagstaff_server::{Config, ConsoleOptions, ProxySignOn, ServeOptions, Server, Tls};

#[derive(Debug, Parser)]
#[command(name = "flagstaffd", version, about = "Flagstaff's control plane")]
struct Args {
    /// Address to serve gRPC and HTTP (OFREP, /healthz, /readyz) on; for `backup`, where the
    /// flagstaffd holding the data directory serves.
    #[arg(
        long,
        env = "FLAGSTAFF_LISTEN",
        default_value = "127.0.0.1:7878",
        global = true
    )]
    listen: SocketAddr,

    /// An origin whose web pages may call OFREP from browsers (CORS), e.g.
    /// https://app.example.com. Repeat for several; the environment variable takes them
    /// comma-separated.
    #[arg(
        long = "cors-origin",
        env = "FLAGSTAFF_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,

    /// The URL clients reach flagstaffd at, e.g. https://flags.example.com, when it differs
    /// from what they dial (a proxy in front): OFREP's event-stream URLs are made absolute
    /// from it. Without it they are given relative to each request's origin.
    #[arg(long, env = "FLAGSTAFF_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,

    /// Single sign-on to the web console through an authenticating reverse proxy: the header
    /// it names the signed-in person in, e.g. X-Forwarded-Email. Believed only from
    /// --console-proxy-from; the people are those of --console-users. Token sign-in at
    /// /login is then off.
    #[arg(
        long,
        env = "FLAGSTAFF_CONSOLE_PROXY_HEADER",
        value_name = "NAME",
        requires_all = ["console_proxy_from", "console_users"]
    )]
    console_proxy_header: Option<String>,

    /// The address range the sign-on proxy connects from, as CIDR (10.0.0.0/8, fd00::/8) or
    /// one address: console requests from any other TCP peer are refused, whatever their
    /// headers say. Repeat for several; the environment variable takes them comma-separated.
    #[arg(
        long = "console-proxy-from",
        env = "FLAGSTAFF_CONSOLE_PROXY_FROM",
        value_name = "CIDR",
        value_delimiter = ',',
        requires = "console_proxy_header"
    )]
    console_proxy_from: Vec<String>,

    /// YAML file of the people the sign-on proxy may let into the console, by the name it
    /// gives them: `alice@example.com: {role: admin}` or `bob@example.com: {role: editor,
    /// environments: [production]}`. Read again when it changes.
    #[arg(
        long,
        env = "FLAGSTAFF_CONSOLE_USERS",
        value_name = "FILE",
        requires = "console_proxy_header"
    )]
    console_users: Option<PathBuf>,

    /// Seconds flagstaffd keeps accepting requests after SIGTERM, with /readyz answering 503
    /// and health NOT_SERVING, so that load balancers stop sending before it stops listening.
    #[arg(long, env = "FLAGSTAFF_SHUTDOWN_DRAIN", value_name = "SECONDS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=600))]
    shutdown_drain: u64,

    /// OFREP requests per second one client token may make in all (bursts of twice as many);
    /// 0 for no limit.
    #[arg(long, env = "FLAGSTAFF_CLIENT_TOKEN_RATE", value_name = "PER_SECOND",
          default_value_t = RateLimits::default().per_token.requests)]
    client_token_rate: u32,

    /// OFREP requests per second with client tokens from one address (an IPv6 /64), all
    /// client tokens together (bursts of three times as many); 0 for no limit.
    #[arg(long, env = "FLAGSTAFF_CLIENT_ADDRESS_RATE", value_name = "PER_SECOND",
          default_value_t = RateLimits::default().per_address.requests)]
    client_address_rate: u32,

    /// OFREP event streams one token may hold open at once.
    #[arg(long, env = "FLAGSTAFF_CLIENT_STREAMS", value_name = "STREAMS",
          default_value_t = RateLimits::default().streams_per_token)]
    client_streams: usize,

    /// OFREP event streams one client address (an IPv6 /64) may hold open at once, all
    /// tokens together.
    #[arg(long, env = "FLAGSTAFF_ADDRESS_STREAMS", value_name = "STREAMS",
          default_value_t = RateLimits::default().streams_per_address)]
    address_streams: usize,

    /// Directory of the database and the admin token file.
    #[arg(
        long,
        env = "FLAGSTAFF_DATA_DIR",
        default_value = "./flagstaff-data",
        global = true
    )]
    data_dir: PathBuf,

    /// Keep everything in the PostgreSQL database at this connection string
    /// (postgres://user:password@host:port/database?sslmode=…) instead of sled in
    /// --data-dir, which then holds only the admin token file. sslmode=require connects over
    /// TLS, verifying the database's certificate and host name (see --database-ca); prefer
    /// (the default) and disable connect in plain text. A database that cannot be reached at
    /// start is an error (exit status 1), not a wait.
    #[arg(
        long,
        env = "FLAGSTAFF_DATABASE_URL",
        value_name = "URL",
        global = true,
        hide_env_values = true
    )]
    database_url: Option<String>,

    /// PEM file of the CA certificate(s) that signed the database's certificate, for a
    /// --database-url with sslmode=require (TLS, the certificate's chain and host name always
    /// verified). Without it the system's roots are trusted. Needs --database-url.
    #[arg(
        long,
        env = "FLAGSTAFF_DATABASE_CA",
        value_name = "PATH",
        global = true,
        requires = "database_url"
    )]
    database_ca: Option<PathBuf>,

    /// Change-log entries kept per environment, for SDKs resuming without a full snapshot.
    #[arg(long, env = "FLAGSTAFF_RETENTION", default_value_t = flagstaff_server::storage::DEFAULT_RETENTION, global = true)]
    retention: u64,

    /// Seconds between heartbeats on a quiet Watch stream; SDKs treat a stream silent for
    /// three intervals as dead.
    #[arg(long, env = "FLAGSTAFF_HEARTBEAT_INTERVAL", value_name = "SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    heartbeat_interval: u64,

    /// Address to serve Prometheus metrics on, over plain HTTP at /metrics. Off when not
    /// given.
    #[arg(long, env = "FLAGSTAFF_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// PEM certificate chain to serve gRPC and HTTP over TLS with (the server's certificate first).
    /// Needs --tls-key.
    #[arg(
        long,
        env = "FLAGSTAFF_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1). Needs --tls-cert.
    #[arg(
        long,
        env = "FLAGSTAFF_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint a new admin token into <data-dir>/admin.token, for when the old one is lost.
    /// Run it while flagstaffd is stopped: the data directory is opened directly.
    AdminToken,
    /// List the stored records that cannot be read back (exit status 1 when there are any).
    /// Run it while flagstaffd is stopped.
    Check,
    /// Restore damaged records from the audit log, as an audited change per environment, and
    /// remove those whose loss costs no change. Run it while flagstaffd is stopped.
    Repair,
    /// Write a backup of the store (--data-dir or --database-url) to FILE: every environment
    /// with its documents and history, rollout plans and tokens (as hashes), mode 0600. On
    /// PostgreSQL it may run while flagstaffd serves; a sled data directory that a running
    /// flagstaffd holds is backed up by that server, asked at --listen (with --tls-cert when
    /// it serves TLS).
    Backup {
        /// Where to write it; replaced only once the backup is complete.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// The certificate chain the running flagstaffd holding --data-dir serves TLS with
        /// (its --tls-cert): the backup is asked for over TLS, trusting that chain, from the
        /// --listen address, which the certificate must name. No key is needed.
        #[arg(long, env = "FLAGSTAFF_TLS_CERT", value_name = "PATH")]
        tls_cert: Option<PathBuf>,
    },
    /// Load a backup into an empty store (--data-dir or --database-url), giving every
    /// environment a new epoch. Tokens in the backup keep working.
    Restore {
        /// The backup to load.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
    /// Apply the PostgreSQL schema's migrations that --database-url lacks, and exit.
    /// flagstaffd applies them itself at start; this runs them alone, before a rollout.
    Migrate,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The store of an existing data directory or database, opened for `check` or `repair`.
fn existing_store(args: &Args) -> anyhow::Result<Backend> {
    if let Some(url) = &args.database_url {
        return Ok(Backend::Postgres(PgStore::open(
            url,
            args.database_ca.as_deref(),
            args.retention,
        )?));
    }
    if !args.data_dir.join("db").exists() {
        anyhow::bail!("{} holds no flagstaffd data", args.data_dir.display());
    }
    Ok(Backend::Sled(SledStore::open(
        &args.data_dir,
        args.retention,
    )?))
}

/// What `check` and `repair` name as the store they read: the data directory or the
/// database, and the option that picks it again.
fn store_name(args: &Args, store: &Backend) -> (String, String) {
    match store {
        Backend::Postgres(pg) => (
            format!("the database {}", pg.database()),
            "--database-url URL".to_owned(),
        ),
        Backend::Sled(_) => (
            args.data_dir.display().to_string(),
            format!("--data-dir {}", args.data_dir.display()),
        ),
    }
}

/// `flagstaffd check`.
fn check(args: &Args) -> anyhow::Result<()> {
    let store = existing_store(args)?;
    let (name, option) = store_name(args, &store);
    let damaged = flagstaff_server::repair::check(&store)?;
    if damaged.is_empty() {
        println!("no damaged records in {name}");
        return Ok(());
    }
    for damage in &damaged {
        println!("{damage}");
    }
    anyhow::bail!(
        "{} damaged record(s); `flagstaffd repair {option}` restores them from the audit log",
        damaged.len(),
    )
}

/// `flagstaffd repair`.
fn repair(args: &Args) -> anyhow::Result<()> {
    let store = existing_store(args)?;
    let (name, _) = store_name(args, &store);
    let outcomes = flagstaff_server::repair::repair(&store)?;
    if outcomes.is_empty() {
        println!("no damaged records in {name}");
        return Ok(());
    }
    let mut left = 0;
    for (damage, outcome) in &outcomes {
        println!("{}: {outcome}", damage.record);
        if matches!(outcome, flagstaff_server::repair::Outcome::Left(_)) {
            left += 1;
        }
    }
    // What the restorations left: documents that do not validate together, say.
    let remaining = flagstaff_server::repair::check(&store)?;
    for damage in &remaining {
        println!("still damaged: {damage}");
    }
    if left > 0 || !remaining.is_empty() {
        anyhow::bail!(
            "{} record(s) could not be repaired",
            left.max(remaining.len())
        );
    }
    Ok(())
}

/// `flagstaffd backup`.
fn backup(args: &Args, to: &std::path::Path, tls_cert: Option<&Path>) -> anyhow::Result<()> {
    let store = match existing_store(args) {
        Ok(store) => store,
        // A running flagstaffd holds the data directory: it writes the backup itself.
        Err(e)
            if matches!(
                e.downcast_ref::<flagstaff_server::storage::StoreError>(),
                Some(flagstaff_server::storage::StoreError::Locked { .. })
            ) =>
        {
            return backup_from_server(args, to, tls_cert)
        }
        Err(e) => return Err(e),
    };
    let (name, _) = store_name(args, &store);
    let kind = match store {
        Backend::Sled(_) => "sled",
        Backend::Postgres(_) => "postgres",
    };
    let summary = flagstaff_server::backup::write(&store, kind, to)?;
    println!("backed up {name} to {}: {summary}", to.display());
    Ok(())
}

/// `flagstaffd backup` of a sled data directory that a running flagstaffd holds: the server
/// streams the backup over the Admin API (`Admin.Backup`), at `--listen`'s address, with the
/// admin token of `FLAGSTAFF_TOKEN` or `<data-dir>/admin.token`. With `tls_cert`, the chain
/// that server serves, over TLS trusting that chain alone: the backup runs on the server's
/// host with its configuration, so the server's own certificate is the one to expect, and its
/// name the address dialled.
fn backup_from_server(
    args: &Args,
    to: &std::path::Path,
    tls_cert: Option<&Path>,
) -> anyhow::Result<()> {
    use flagstaff_proto::pb;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let mut addr = args.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let (endpoint, tls, hint) = match tls_cert {
        Some(path) => (
            format!("https://{addr}"),
            Some(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(Tls::read_certificate_chain(path)?)),
            ),
            format!(
                "--listen names its address; the certificate chain of --tls-cert {} is all \
                 that is trusted, so the certificate must name {} and be self-signed or have \
                 its issuer in the file",
                path.display(),
                addr.ip()
            ),
        ),
        None => (
            format!("http://{addr}"),
            None,
            "--listen names its address; give its --tls-cert if it serves TLS".to_owned(),
        ),
    };
    let token = match std::env::var("FLAGSTAFF_TOKEN") {
        Ok(token) => token,
        Err(_) => {
            let file = args.data_dir.join("admin.token");
            std::fs::read_to_string(&file).with_context(|| {
                format!(
                    "a running flagstaffd holds {}; asking it for the backup needs an admin \
                     token: set FLAGSTAFF_TOKEN, or keep it in {}",
                    args.data_dir.display(),
                    file.display()
                )
            })?
        }
    };
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", token.trim())
        .parse()
        .context("the admin token is not valid text")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut chunks = runtime
        .block_on(async {
            let mut channel = Endpoint::from_shared(endpoint.clone())?;
            if let Some(tls) = tls {
                channel = channel.tls_config(tls)?;
            }
            let channel = channel
                .connect()
                .await
                .map_err(|e| anyhow::anyhow!(causes(&e)))?;
            let mut admin = pb::admin_client::AdminClient::new(channel);
            let mut request = tonic::Request::new(pb::BackupRequest {});
            request.metadata_mut().insert("authorization", bearer);
            let chunks = admin
                .backup(request)
                .await
                .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?;
            anyhow::Ok(chunks.into_inner())
        })
        .with_context(|| {
            format!(
                "a running flagstaffd holds {}, and asking it at {endpoint} for the backup failed \
                 ({hint})",
                args.data_dir.display()
            )
        })?;
    // Taken whole and checked before anything is written: a stream that ended early, with an
    // error or without, never replaces a good backup at FILE.
    let bytes = runtime.block_on(async {
        let mut bytes = Vec::new();
        loop {
            match chunks.message().await {
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk.data),
                Ok(None) => return Ok(bytes),
                Err(status) => anyhow::bail!(
                    "the backup from {endpoint} stopped: {:?}: {}",
                    status.code(),
                    status.message()
                ),
            }
        }
    })?;
    let backup = flagstaff_server::backup::read(bytes.as_slice())
        .with_context(|| format!("the backup from {endpoint} is not whole; nothing was written"))?;
    flagstaff_server::backup::write_file(to, |out| {
        out.write_all(&bytes).map_err(|e| {
            flagstaff_server::ServerError::Invalid(format!("cannot write {}: {e}", to.display()))
        })
    })?;
    println!(
        "backed up {} (from the flagstaffd at {endpoint}) to {}: {}",
        args.data_dir.display(),
        to.display(),
        backup.summary
    );
    Ok(())
}

/// An error's message and its causes', `: `-separated, each said once: a transport error of
/// tonic repeats its cause ("transport error: invalid peer certificate: …: invalid peer
/// certificate: …").
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    for e in std::iter::successors(Some(err), |e| e.source()) {
        let text = e.to_string();
        if !said.contains(&text) {
            said.push(text);
        }
    }
    said.join(": ")
}

/// `flagstaffd restore`.
fn restore(args: &Args, from: &std::path::Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(from)
        .with_context(|| format!("cannot open the backup {}", from.display()))?;
    let backup = flagstaff_server::backup::read(std::io::BufReader::new(file))
        .with_context(|| format!("{} cannot be restored", from.display()))?;
    let store = match &args.database_url {
        Some(url) => Backend::Postgres(PgStore::open(
            url,
            args.database_ca.as_deref(),
            args.retention,
        )?),
        None => {
            std::fs::create_dir_all(&args.data_dir).with_context(|| {
                format!("cannot create data directory {}", args.data_dir.display())
            })?;
            Backend::Sled(SledStore::open(&args.data_dir, args.retention)?)
        }
    };
    let (name, _) = store_name(args, &store);
    let summary = flagstaff_server::backup::restore(&store, &backup)?;
    println!(
        "restored {} into {name}: {summary}; every environment has a new epoch",
        from.display()
    );
    Ok(())
}

/// `flagstaffd migrate`.
fn migrate(args: &Args) -> anyhow::Result<()> {
    let Some(url) = &args.database_url else {
        anyhow::bail!(
            "migrate applies PostgreSQL schema migrations: give --database-url (or \
             FLAGSTAFF_DATABASE_URL); sled needs none"
        );
    };
    let store = PgStore::connect(url, args.database_ca.as_deref(), args.retention)?;
    let applied = store.migrate()?;
    match applied.as_slice() {
        [] => println!("the database {} is up to date", store.database()),
        versions => println!(
            "the database {}: applied schema migration(s) {}",
            store.database(),
            versions
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config {
        retention: args.retention,
        heartbeat: std::time::Duration::from_secs(args.heartbeat_interval),
        database_url: args.database_url.clone(),
        database_ca: args.database_ca.clone(),
        ..Config::new(&args.data_dir)
    };
    match &args.command {
        Some(Command::Check) => return check(&args),
        Some(Command::Repair) => return repair(&args),
        Some(Command::Migrate) => return migrate(&args),
        Some(Command::Backup { to, tls_cert }) => {
            // Before or after `backup`: the server's own command line, or the backup's.
            let tls_cert = tls_cert.as_deref().or(args.tls_cert.as_deref());
            return backup(&args, to, tls_cert);
        }
        Some(Command::Restore { from }) => return restore(&args, from),
        _ => {}
    }
    if let Some(Command::AdminToken) = args.command {
        let server = Server::open(&config)?;
        let path = server
            .tokens()
            .mint_admin_token_file(&args.data_dir, "admin")?;
        eprintln!("a new admin token is in {}", path.display());
        return Ok(());
    }
    // Before the data directory is touched: a misconfigured start changes nothing.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::from_pem_files(cert, key)?),
        // clap refuses one without the other.
        _ => None,
    };
    let defaults = RateLimits::default();
    let ofrep = OfrepOptions {
        cors_origins: args.cors_origins.clone(),
        public_url: args.public_url.clone(),
        limits: RateLimits {
            per_token: Rate::per_second(
                args.client_token_rate,
                args.client_token_rate.saturating_mul(2),
            ),
            per_address: Rate::per_second(
                args.client_address_rate,
                args.client_address_rate.saturating_mul(3),
            ),
            streams_per_token: args.client_streams,
            streams_per_address: args.address_streams,
            ..defaults
        },
    };
    ofrep.check()?;
    let console = ConsoleOptions {
        proxy: match (&args.console_proxy_header, &args.console_users) {
            (Some(header), Some(users)) => {
                let proxy = ProxySignOn::new(header, &args.console_proxy_from, users)?;
                tracing::info!(
                    header = %header,
                    from = %args.console_proxy_from.join(","),
                    users = %users.display(),
                    "the console signs people in through a proxy"
                );
                Some(proxy)
            }
            // clap refuses one without the others.
            _ => None,
        },
    };
    let server = Server::open(&config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let metrics = match args.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for metrics"))?,
            ),
            None => None,
        };
        // The gRPC line first: tools read the first `address=` as the gRPC address.
        tracing::info!(
            address = %listener.local_addr()?,
            tls = tls.is_some(),
            data_dir = %args.data_dir.display(),
            store = if args.database_url.is_some() { "postgres" } else { "sled" },
            "flagstaffd serving"
        );
        if let Some(metrics) = &metrics {
            let addr = metrics.local_addr()?;
            tracing::info!(metrics_address = %addr, "metrics at http://{addr}/metrics");
        }
        let options = ServeOptions {
            metrics,
            tls,
            ofrep,
            drain: std::time::Duration::from_secs(args.shutdown_drain),
            console,
        };
        server
            .serve_with(listener, options, shutdown_signal())
            .await?;
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
