//! A PostgreSQL cluster per test process, for servers on the PostgreSQL store: started on first
//! use from the machine's PostgreSQL binaries, in a temporary directory, on a free loopback
//! port; each [`fresh_database`] is a new database in it. The cluster serves TLS too, with a
//! certificate for `127.0.0.1` and `localhost` signed by a CA of its own
//! ([`ca_certificate`]), and plain text to clients that do not ask for TLS. A watchdog process stops the cluster
//! and removes its directory once the test process has exited: statics are never dropped, so
//! nothing inside the process could.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Names the directory holding `initdb`, `postgres`, `pg_ctl` and `pg_isready` (a PostgreSQL
/// installed elsewhere), instead of the newest version under `/usr/lib/postgresql`. A directory
/// without them counts as no PostgreSQL.
pub const BIN_ENV: &str = "FLAGSTAFF_POSTGRES_BIN";

/// When set (to anything but empty or `0`), missing PostgreSQL binaries fail the tests that
/// need them instead of skipping them. CI sets it.
pub const REQUIRE_ENV: &str = "FLAGSTAFF_REQUIRE_POSTGRES";

/// Where Debian's `postgresql` package installs each major version's binaries, in
/// `<version>/bin`.
const INSTALLED: &str = "/usr/lib/postgresql";

/// The unprivileged user PostgreSQL runs as when the tests run as root, which PostgreSQL
/// refuses: the user Debian's package creates. It is also the cluster's superuser.
const USER: &str = "postgres";

/// The binaries the harness runs.
const BINARIES: [&str; 4] = ["initdb", "postgres", "pg_ctl", "pg_isready"];

/// How long a starting cluster may take to accept connections: it takes under a second, a few
/// on a loaded machine, so this is reached only when something is wrong.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// Ports tried: another process may take the free port between our check and postgres's bind.
const PORT_ATTEMPTS: usize = 3;

/// Settings sized for tests. Many tests, each with a server holding a small pool, share the
/// cluster; fsync and synchronous commit stay on, as the store's durability is part of what
/// is tested. TLS is on for the clients that ask for it, with `server.crt` and `server.key` of
/// the data directory (PostgreSQL's default names), which [`Cluster::certify`] writes.
const SETTINGS: [&str; 3] = ["max_connections=300", "shared_buffers=32MB", "ssl=on"];

/// The file of the cluster's directory holding the CA certificate that signed the cluster's.
const CA_FILE: &str = "ca.crt";

/// Runs postgres and cleans up after the test process. Its arguments: the test process's pid,
/// the cluster's directory, the bin directory, the user to run as (empty: the current one),
/// then postgres's arguments. It exits when postgres does (a failed start, which the harness
/// sees); once the test process is gone, it stops postgres at once (no checkpoint: the
/// cluster is thrown away) and removes the directory.
const WATCHDOG: &str = r#"
test_pid=$1 dir=$2 bin=$3 user=$4
shift 4
run_as() { if [ -n "$user" ]; then runuser -u "$user" -- "$@"; else "$@"; fi; }
run_as "$bin/postgres" "$@" &
postgres=$!
while kill -0 "$test_pid" 2>/dev/null && kill -0 "$postgres" 2>/dev/null; do sleep 0.2; done
kill -0 "$postgres" 2>/dev/null || exit 1
run_as "$bin/pg_ctl" stop -D "$dir/data" -m immediate -s
wait "$postgres"
rm -rf "$dir"
"#;

/// The running cluster.
#[derive(Debug)]
struct Cluster {
    port: u16,
    /// The PEM CA certificate that signed the cluster's TLS certificate.
    ca: PathBuf,
}

/// The process's cluster: `Ok(None)` when PostgreSQL is skipped, `Err` (repeated by every
/// test that needs it) when it could not start.
static CLUSTER: OnceLock<Result<Option<Cluster>, String>> = OnceLock::new();

/// Numbers the databases of the process's cluster.
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// A new, empty database of this test process's cluster (started on the first call), as a
/// URL: `postgres://postgres@127.0.0.1:<port>/<name>` (trust authentication, no password).
/// Plain text; `?sslmode=require` added to it asks for TLS, verified with [`ca_certificate`].
///
/// `None` when there are no PostgreSQL binaries and [`REQUIRE_ENV`] is not set: the tests
/// that need it are skipped, and one line on stderr says so. Panics when the binaries are
/// missing and required, or when the cluster or the database cannot be made.
pub fn fresh_database() -> Option<String> {
    let cluster = cluster()?;
    let name = format!(
        "flagstaff_test_{}",
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    if let Err(why) = cluster.create_database(&name) {
        panic!(
            "creating database {name} on 127.0.0.1:{}: {why}",
            cluster.port
        );
    }
    Some(format!(
        "postgres://{USER}@127.0.0.1:{}/{name}",
        cluster.port
    ))
}

/// The PEM file of the CA certificate that signed the TLS certificate of this test process's
/// cluster (started on the first call), which names `127.0.0.1` and `localhost`. `None` and
/// panics as for [`fresh_database`].
pub fn ca_certificate() -> Option<PathBuf> {
    cluster().map(|cluster| cluster.ca.clone())
}

/// The process's cluster, started on the first call; `None` when PostgreSQL is skipped.
fn cluster() -> Option<&'static Cluster> {
    match CLUSTER.get_or_init(start) {
        Ok(Some(cluster)) => Some(cluster),
        Ok(None) => None,
        Err(why) => panic!("{why}"),
    }
}

/// Starts the cluster, or says why not. Never panics: a panic here would leave [`CLUSTER`]
/// empty for the next test to start another.
fn start() -> Result<Option<Cluster>, String> {
    let (bin, looked) = binaries();
    let Some(bin) = bin else {
        if required() {
            return Err(format!(
                "{REQUIRE_ENV} is set, and there are no PostgreSQL binaries under {looked} \
                 (install Debian's postgresql package, or name their directory in {BIN_ENV})"
            ));
        }
        // Straight to stderr: the test harness captures what `eprintln!` prints.
        let _ = writeln!(
            std::io::stderr(),
            "PostgreSQL tests skipped: no PostgreSQL binaries under {looked} (install Debian's \
             postgresql package, or set {REQUIRE_ENV}=1 to make this a failure)"
        );
        return Ok(None);
    };
    Cluster::start(&bin).map(Some)
}

/// The directory of the binaries: the one [`BIN_ENV`] names, or the newest version under
/// [`INSTALLED`]; `None` when it lacks them. And where it looked, to say so.
fn binaries() -> (Option<PathBuf>, String) {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        let looked = format!("{} ({BIN_ENV})", dir.display());
        return (has_binaries(&dir).then_some(dir), looked);
    }
    let looked = INSTALLED.to_owned();
    let Ok(versions) = std::fs::read_dir(INSTALLED) else {
        return (None, looked);
    };
    // Versions compare as numbers: 9.6 < 13 < 16.
    let newest = versions
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version: Vec<u32> = name
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            has_binaries(&bin).then_some((version, bin))
        })
        .max();
    (newest.map(|(_, bin)| bin), looked)
}

fn has_binaries(dir: &Path) -> bool {
    BINARIES.iter().all(|binary| dir.join(binary).is_file())
}

fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|value| !value.is_empty() && value != "0")
}

impl Cluster {
    /// Makes a cluster in a new temporary directory (`data/` for the cluster, the unix socket,
    /// `postgres.log`) and starts it on a free port.
    fn start(bin: &Path) -> Result<Cluster, String> {
        let user = running_as_root()?.then_some(USER);
        let dir = tempfile::Builder::new()
            .prefix("flagstaff-postgres-")
            .tempdir()
            .map_err(|e| format!("a temporary directory for PostgreSQL: {e}"))?
            .keep();
        match Cluster::init(bin, &dir, user) {
            Ok(()) => Cluster::run(bin, &dir, user),
            Err(why) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(why)
            }
        }
    }

    /// Makes the cluster in `dir/data`, owned by `user`.
    fn init(bin: &Path, dir: &Path, user: Option<&str>) -> Result<(), String> {
        if let Some(user) = user {
            let chown = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir)
                .output()
                .map_err(|e| format!("running chown: {e}"))?;
            if !chown.status.success() {
                return Err(format!(
                    "chown {user}: {}: {}",
                    dir.display(),
                    String::from_utf8_lossy(&chown.stderr)
                ));
            }
        }
        let data = dir.join("data");
        // --no-sync: initdb's files need not reach the disk, the cluster is thrown away; the
        // server itself still fsyncs.
        let initdb = as_user(user, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .current_dir(dir)
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb {} failed: {}{}",
                data.display(),
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        Cluster::certify(dir, user)
    }

    /// Makes a CA (its certificate in `dir/`[`CA_FILE`]) and a certificate it signs for
    /// `127.0.0.1` and `localhost`, which the cluster serves TLS with: `server.crt` and
    /// `server.key` in its data directory, owned by `user`, the key readable by its owner
    /// only, as postgres requires.
    fn certify(dir: &Path, user: Option<&str>) -> Result<(), String> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let fail = |what: &str, e: rcgen::Error| format!("making the cluster's {what}: {e}");
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", e))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "flagstaff test PostgreSQL CA");
        let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
        let ca_pem = ca.self_signed(&ca_key).map_err(|e| fail("CA", e))?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let server = CertificateParams::new(names).map_err(|e| fail("certificate", e))?;
        let key = KeyPair::generate().map_err(|e| fail("key", e))?;
        let cert_pem = server
            .signed_by(&key, &issuer)
            .map_err(|e| fail("certificate", e))?
            .pem();
        let write = |path: PathBuf, text: String, mode: u32| {
            std::fs::write(&path, text)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                })
                .map_err(|e| format!("writing {}: {e}", path.display()))
        };
        let data = dir.join("data");
        write(dir.join(CA_FILE), ca_pem, 0o644)?;
        write(data.join("server.crt"), cert_pem, 0o644)?;
        write(data.join("server.key"), key.serialize_pem(), 0o600)?;
        if let Some(user) = user {
            let chown = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .output()
                .map_err(|e| format!("running chown: {e}"))?;
            if !chown.status.success() {
                return Err(format!(
                    "chown {user}: the cluster's certificate and key: {}",
                    String::from_utf8_lossy(&chown.stderr)
                ));
            }
        }
        Ok(())
    }

    /// Starts the cluster of `dir` under its watchdog, on another free port when the one
    /// picked was taken before postgres bound it.
    fn run(bin: &Path, dir: &Path, user: Option<&str>) -> Result<Cluster, String> {
        let log = dir.join("postgres.log");
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            let logged = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let mut watchdog = watchdog(bin, dir, user, port, &log)?;
            let why = match wait_until_ready(bin, dir, port, &mut watchdog) {
                Ok(()) => {
                    return Ok(Cluster {
                        port,
                        ca: dir.join(CA_FILE),
                    })
                }
                Err(NotReady::Exited) => {
                    let said = log_since(&log, logged);
                    if attempt < PORT_ATTEMPTS && said.contains("already in use") {
                        attempt += 1;
                        continue;
                    }
                    // Nothing runs in the directory any more, and no watchdog will remove it.
                    let _ = std::fs::remove_dir_all(dir);
                    format!("exited; its log:\n{said}")
                }
                // The watchdog removes the directory when the tests are over.
                Err(NotReady::TimedOut) => format!(
                    "did not accept connections within {START_PATIENCE:?}; its log:\n{}",
                    log_since(&log, logged)
                ),
            };
            return Err(format!(
                "PostgreSQL ({}) did not start on 127.0.0.1:{port}: it {why}",
                bin.display()
            ));
        }
    }

    /// Creates the database `name`.
    ///
    /// With tokio-postgres, the client the server's store uses, rather than `createdb`: no
    /// process per test, and its errors say what PostgreSQL answered. On a thread of its own
    /// with a runtime of its own, as callers are often inside a runtime (an async test's),
    /// where starting another on the same thread panics.
    fn create_database(&self, name: &str) -> Result<(), String> {
        let config = format!(
            "host=127.0.0.1 port={} user={USER} dbname=postgres",
            self.port
        );
        let create = move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("a runtime: {e}"))?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("connecting: {e}"))?;
                let connection = tokio::spawn(connection);
                let created = client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .map_err(|e| e.to_string());
                drop(client);
                let _ = connection.await;
                created
            })
        };
        std::thread::scope(|scope| {
            scope
                .spawn(create)
                .join()
                .unwrap_or_else(|_| Err("the thread creating it panicked".into()))
        })
    }
}

/// Whether this process runs as root, as CI does.
fn running_as_root() -> Result<bool, String> {
    let id = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("running id -u: {e}"))?;
    Ok(String::from_utf8_lossy(&id.stdout).trim() == "0")
}

/// `program`, run as `user` when there is one.
fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("binding 127.0.0.1:0 for a free port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("a free port: {e}"))
}

/// Starts [`WATCHDOG`] running postgres on `port`, both writing to `log`.
fn watchdog(
    bin: &Path,
    dir: &Path,
    user: Option<&str>,
    port: u16,
    log: &Path,
) -> Result<Child, String> {
    let output = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let errors = output
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let mut command = Command::new("sh");
    command
        .args(["-c", WATCHDOG, "sh"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(bin)
        .arg(user.unwrap_or(""))
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
        .arg(dir);
    for setting in SETTINGS {
        command.args(["-c", setting]);
    }
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        // A group of its own: a Ctrl-C at the terminal stops the tests, not the watchdog,
        // which then cleans up after them.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the PostgreSQL watchdog (sh): {e}"))
}

/// Why a cluster is not ready.
enum NotReady {
    /// postgres exited (and so its watchdog).
    Exited,
    /// It still does not accept connections after [`START_PATIENCE`].
    TimedOut,
}
/// Waits until the cluster of `dir` accepts connections, or its watchdog has exited. Asked
/// through the unix socket in `dir`, which only this cluster can have made: on the TCP port,
/// a process that took the port before postgres bound it could answer.
fn wait_until_ready(
    bin: &Path,
    dir: &Path,
    port: u16,
    watchdog: &mut Child,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        if !matches!(watchdog.try_wait(), Ok(None)) {
            return Err(NotReady::Exited);
        }
        let ready = Command::new(bin.join("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(dir)
            .args(["-p", &port.to_string()])
            .args(["-U", USER, "-d", "postgres"])
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(NotReady::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `log` says after its first `from` bytes.
fn log_since(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    let mut said = String::from_utf8_lossy(&text[start..]).into_owned();
    if said.trim().is_empty() {
        let _ = write!(said, "(empty: {})", log.display());
    }
    said
}
