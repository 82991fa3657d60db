//! `flagstaff`: the command release managers use to create, flip, target, roll out and
//! evaluate flags. Output goes to stdout; every failure prints one `error:` line (plus one
//! line per problem of an invalid document) to stderr. Exit codes: 0 success, 1 failure,
//! 2 usage.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

mod args;
mod changes;
mod commands;
mod documents;
mod fetch;
mod output;
mod session;
mod write_report;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(commands::run(cli)),
        Err(e) => Err(anyhow::anyhow!("cannot start: {e}")),
    };
    match result {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`flagstaff ... | head`) is not an error worth reporting.
            let _ = out.write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
