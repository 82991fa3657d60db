//! `flagstaff`: the command release managers use to create, flip, target, roll out and
//! evaluate flags. Every failure prints one `error:` line (plus one line per problem of an
//! invalid document) and exits non-zero.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

mod args;
mod commands;
mod output;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let result = match &cli.command {
        args::Command::Eval(eval) => commands::eval::run(eval, cli.output),
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
