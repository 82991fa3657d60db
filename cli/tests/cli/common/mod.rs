//! A real flagstaffd on loopback for the CLI's tests, and the `flagstaff` binary pointed at it.

use flagstaff_tests::{TestServer, TestServerBuilder};

/// A server running on a runtime of its own, so tests run the CLI as a plain blocking process.
pub struct Server {
    pub server: TestServer,
    /// A directory without `flagstaff-data/admin.token`, where commands run.
    pub cwd: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(TestServer::builder())
    }

    pub fn start_with(server: TestServerBuilder) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let server = runtime.block_on(server.start());
        Server {
            server,
            cwd: tempfile::tempdir().expect("a directory"),
            runtime,
        }
    }

    /// `flagstaff` with the server's endpoint and admin token, and nothing from the
    /// environment of the test run.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("flagstaff").expect("the binary");
        cmd.current_dir(self.cwd.path())
            .env_remove("FLAGSTAFF_ENV")
            .env_remove("FLAGSTAFF_TOKEN")
            .env("NO_COLOR", "1")
            .env("FLAGSTAFF_ENDPOINT", self.server.endpoint())
            .env("FLAGSTAFF_TOKEN", &self.server.admin_token);
        cmd
    }

    /// Like [`cmd`](Self::cmd), as a plain process to spawn and read while it runs.
    pub fn process(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flagstaff"));
        cmd.current_dir(self.cwd.path())
            .env_remove("FLAGSTAFF_ENV")
            .env("NO_COLOR", "1")
            .env("FLAGSTAFF_ENDPOINT", self.server.endpoint())
            .env("FLAGSTAFF_TOKEN", &self.server.admin_token);
        cmd
    }

    /// `flagstaff --env production ARGS` at a terminal (a pseudo-terminal made by `script`),
    /// typing `input`: whether it succeeded, and what the terminal showed (prompts, output
    /// and errors together). `None` where `script` (util-linux) is not installed.
    pub fn at_terminal(&self, args: &[&str], input: &str) -> Option<(bool, String)> {
        use std::io::Write;
        use std::process::Stdio;
        let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
        let mut line = quote(env!("CARGO_BIN_EXE_flagstaff"));
        for arg in ["--env", "production"].iter().chain(args) {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        let mut child = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .current_dir(self.cwd.path())
            .env_remove("FLAGSTAFF_ENV")
            .env("NO_COLOR", "1")
            .env("FLAGSTAFF_ENDPOINT", self.server.endpoint())
            .env("FLAGSTAFF_TOKEN", &self.server.admin_token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("typed");
        let out = child.wait_with_output().expect("runs");
        let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        Some((out.status.success(), text))
    }

    /// `flagstaff --env production ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self
            .cmd()
            .args(["--env", "production"])
            .args(args)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "flagstaff {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `flagstaff --env production ARGS`, which must fail with exit code 1; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self
            .cmd()
            .args(["--env", "production"])
            .args(args)
            .output()
            .expect("runs");
        assert_eq!(
            out.status.code(),
            Some(1),
            "flagstaff {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("utf-8")
    }

    /// Stops the server and starts `again` on the same data directory and address.
    pub fn restart(&mut self, again: TestServerBuilder) {
        let addr = self.server.addr;
        let placeholder = self.runtime.block_on(TestServer::start());
        let server = std::mem::replace(&mut self.server, placeholder);
        let dir = self.runtime.block_on(server.stop());
        let placeholder = std::mem::replace(
            &mut self.server,
            self.runtime
                .block_on(again.data_dir(dir).addr(addr).start()),
        );
        drop(self.runtime.block_on(placeholder.stop()));
    }

    /// A new sdk token of `production`, named `name`.
    pub fn sdk_token(&self, name: &str) -> String {
        self.block_on(async {
            self.server
                .admin()
                .await
                .create_token(flagstaff_proto::pb::CreateTokenRequest {
                    name: name.into(),
                    role: flagstaff_proto::pb::Role::Sdk as i32,
                    environment: "production".into(),
                })
                .await
                .expect("token")
                .into_inner()
                .secret
        })
    }

    /// Runs `f` on the server's runtime (e.g. to drive an SDK client or an Admin call).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

/// Snapshot settings replacing what changes from run to run (times) with placeholders:
/// `redacted().bind(|| insta::assert_snapshot!(out, @"..."))`.
pub fn redacted() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", "[time]");
    settings
}
