//! docs/cli.md cannot rot: its `sh` blocks run, in order, as one script against a real server.

use crate::common::Server;
use flagstaff_proto::pb;

const DOC: &str = include_str!("../../../docs/cli.md");

/// The contents of every fenced block opened with exactly ```sh, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an sh block is not closed");
    blocks
}

#[test]
fn the_launch_in_docs_cli_md_runs() {
    let blocks = sh_blocks(DOC);
    assert!(blocks.len() >= 6, "found {} sh blocks", blocks.len());
    let s = Server::start();
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_flagstaff"));
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(s.cwd.path())
        .env("PATH", path_with(&binary))
        .env_remove("FLAGSTAFF_ENV")
        .env("NO_COLOR", "1")
        .env("FLAGSTAFF_ENDPOINT", s.server.endpoint())
        .env("FLAGSTAFF_TOKEN", &s.server.admin_token)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "docs/cli.md failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // What the page says happens, happened.
    assert!(
        stdout.contains("no SDK instance of production is connected: nothing to wait for"),
        "{stdout}"
    );
    assert!(stdout.contains("RULE_MATCH(0, staff)"), "{stdout}");
    let flag = s.block_on(async {
        s.server
            .admin()
            .await
            .get_flag(pb::GetFlagRequest {
                environment: "production".into(),
                key: "checkout-v2".into(),
            })
            .await
            .expect("the flag")
            .into_inner()
            .flag
            .expect("a flag")
    });
    assert!(flag.enabled);
    assert!(flag.client_side, "the page marks it client-side at the end");
    assert_eq!(flag.rules.len(), 1);
    assert_eq!(
        flag.default.and_then(|d| d.serve),
        Some(pb::serve::Serve::Variant("on".into()))
    );
}

fn path_with(binary: &std::path::Path) -> String {
    format!(
        "{}:{}",
        binary.parent().expect("a directory").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}
