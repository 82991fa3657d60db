//! A flagstaffd process for tests and benchmarks: the real binary, started on a loopback
//! port of its choosing, its log read line by line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flagstaff_proto::pb::admin_client::AdminClient;
use tonic::transport::Channel;
use tonic::Request;

/// How long anything here may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Checks `check` until it returns a value and returns it; panics, naming `what`, after
/// [`PATIENCE`]. (`flagstaff_tests::eventually` for a test of this crate, which cannot depend on
/// the end-to-end tests' crate: that one depends on this.)
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A flagstaffd process and its log, line by line.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts flagstaffd with `args` (and `envs`) on `data_dir`, gRPC on a loopback port of its
    /// choosing.
    pub fn start(data_dir: &Path, args: &[&str], envs: &[(&str, &Path)]) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flagstaffd"));
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("flagstaffd starts");
        let stderr = child.stderr.take().expect("stderr");
        let (lines, log) = mpsc::channel();
        // Drains the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon { child, log }
    }

    /// The value of the first `field=` in the log from now on, e.g. `address`.
    pub fn logged(&self, field: &str) -> String {
        let needle = format!(" {field}=");
        let line = self.log_line(|line| line.contains(&needle));
        logged_field(&line, field).expect("field")
    }

    /// The next log line that `matches`.
    pub fn log_line(&self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .expect("flagstaffd logs the line in time");
            if matches(&line) {
                return line;
            }
        }
    }

    /// An Admin client of the gRPC address the server logged.
    pub async fn client(&self) -> AdminClient<Channel> {
        let addr = self.logged("address");
        AdminClient::connect(format!("http://{addr}"))
            .await
            .expect("connects")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush anything on the way out.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> (ExitStatus, Daemon) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, self);
            }
            assert!(
                Instant::now() < deadline,
                "flagstaffd did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `field=` in a log line.
pub fn logged_field(line: &str, field: &str) -> Option<String> {
    let rest = line.split(&format!(" {field}=")).nth(1)?;
    Some(rest.split_whitespace().next()?.to_owned())
}

pub fn token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin.token"))
        .expect("admin token")
        .trim()
        .to_owned()
}

pub fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}
