//! One module per command group.

use crate::args::{Cli, Command};
use crate::session::Session;

pub mod env;
pub mod eval;
pub mod flag;
pub mod history;
pub mod io;
pub mod rollout;
pub mod segment;
pub mod stale;
pub mod token;

/// Runs the command; returns what to print.
pub async fn run(cli: Cli) -> anyhow::Result<String> {
    let global = &cli.global;
    match &cli.command {
        Command::Eval(args) if args.file.is_some() => eval::offline(args, global.output),
        Command::Completions(args) => Ok(completions(args.shell)),
        command => {
            let mut session = Session::connect(global).await?;
            match command {
                Command::Env(command) => env::run(&mut session, command).await,
                Command::Eval(args) => eval::online(&mut session, args).await,
                Command::Flag(command) => flag::run(&mut session, command).await,
                Command::Segment(command) => segment::run(&mut session, command).await,
                Command::Token(command) => token::run(&mut session, command).await,
                Command::History(args) => history::history(&mut session, args).await,
                Command::Watch(args) => history::watch(&mut session, args).await,
                Command::Clients => history::clients(&mut session).await,
                Command::Export => io::export(&mut session).await,
                Command::Import(args) => io::import(&mut session, args).await,
                Command::Rollout(command) => rollout::run(&mut session, command).await,
                // Answered above without a server.
                Command::Completions(args) => Ok(completions(args.shell)),
            }
        }
    }
}

fn completions(shell: clap_complete::Shell) -> String {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "flagstaff", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}
