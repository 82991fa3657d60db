//! flagstaffd as a process of its own, for what an in-process [`TestServer`](crate::TestServer)
//! cannot undergo: `kill -9`, `SIGSTOP` and `SIGCONT`.
//!
//! The binary is the workspace's `flagstaffd`, found next to the running test binary
//! (`target/<profile>/flagstaffd`): `cargo test --workspace` builds it; a test run of this
//! crate alone needs `cargo build -p flagstaff-server --bin flagstaffd` first.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::PATIENCE;

/// A flagstaffd process on a PostgreSQL database, gRPC on a loopback port of its choosing.
/// Killed when dropped.
#[derive(Debug)]
pub struct Flagstaffd {
    child: Mutex<Child>,
    /// Every line it logged so far.
    log: Arc<Mutex<Vec<String>>>,
    /// `http://<address>` of its gRPC and HTTP port.
    endpoint: String,
    /// Its data directory: on PostgreSQL, the admin token alone.
    pub data_dir: tempfile::TempDir,
}

impl Flagstaffd {
    /// Starts flagstaffd on the database at `url` with `args`, and waits until it listens.
    /// `admin_token` (the database's, minted by the first flagstaffd on it) is copied into its
    /// data directory; `None` for the first.
    pub fn start(url: &str, admin_token: Option<&str>, args: &[&str]) -> Flagstaffd {
        let data_dir = tempfile::tempdir().expect("a data directory");
        if let Some(token) = admin_token {
            std::fs::write(data_dir.path().join("admin.token"), token).expect("the admin token");
        }
        let mut child = Command::new(binary())
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .args(["--database-url", url])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("flagstaffd starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        // Drains the log so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let mut daemon = Flagstaffd {
            child: Mutex::new(child),
            log,
            endpoint: String::new(),
            data_dir,
        };
        let line = daemon.wait_for_line(" address=");
        let address = line
            .split(" address=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the address logged");
        daemon.endpoint = format!("http://{address}");
        daemon
    }

    /// `http://<address>` of its port.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An Admin client authenticating with the admin token in its data directory.
    pub async fn admin(&self) -> crate::Admin {
        let channel = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connects");
        let bearer = format!("Bearer {}", self.admin_token())
            .parse()
            .expect("ascii token");
        flagstaff_proto::pb::admin_client::AdminClient::with_interceptor(
            channel,
            crate::Bearer(Some(bearer)),
        )
        .max_decoding_message_size(flagstaff_server::MAX_ADMIN_MESSAGE)
        .max_encoding_message_size(flagstaff_server::MAX_ADMIN_MESSAGE)
    }

    /// A Sync client authenticating with `token`.
    pub async fn sync_with(&self, token: &str) -> crate::Sync {
        let channel = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connects");
        let bearer = format!("Bearer {token}").parse().expect("ascii token");
        flagstaff_proto::pb::sync_client::SyncClient::with_interceptor(
            channel,
            crate::Bearer(Some(bearer)),
        )
    }

    /// The admin token in its data directory.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("admin.token"))
            .expect("the admin token")
            .trim()
            .to_owned()
    }

    /// How many lines it logged containing `text`.
    pub fn logged(&self, text: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(text)).count()
    }

    /// Every line it logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits (at most [`PATIENCE`]) for a logged line containing `text`, and returns it.
    pub fn wait_for_line(&self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(text)) {
                return line;
            }
            if let Ok(Some(status)) = self.lock_child().try_wait() {
                panic!(
                    "flagstaffd exited ({status}) before logging {text:?}:\n{}",
                    self.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "flagstaffd did not log {text:?} in time:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `kill -9`: no chance to give anything up or flush anything on the way out.
    pub fn kill(self) {
        let mut child = self.lock_child();
        child.kill().expect("kill");
        child.wait().expect("reaped");
    }

    /// Freezes it (`SIGSTOP`): it holds its connections and answers nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets it go on (`SIGCONT`) after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.lock_child().id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal}");
    }
}

impl Drop for Flagstaffd {
    fn drop(&mut self) {
        // A frozen process takes no signal but SIGKILL, which ends it too.
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The workspace's flagstaffd binary, next to the running test binary.
fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/flagstaffd
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("flagstaffd"))
        .expect("the target directory");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test --workspace` builds it, or `cargo build -p flagstaff-server \
         --bin flagstaffd`",
        binary.display()
    );
    binary
}
