//! One module per command group (`flag/` one file per kind of flag subcommand). What
//! several groups share lives beside them at the crate root, so that no group imports
//! another: the connection (`session`), reads from the server (`fetch`), documents from files
//! and their Apply (`documents`), the description of changes (`changes`), what follows a write
//! (`write_report`) and rendering (`output`).

use crate::args::{Cli, Command};
use crate::session::Session;

pub mod clients;
pub mod env;
pub mod eval;
pub mod export;
pub mod flag;
pub mod history;
pub mod import;
pub mod rollout;
pub mod segment;
pub mod token;

/// Runs the command; returns what to print.
pub async fn run(cli: Cli) -> anyhow::Result<String> {
    let global = &cli.global;
    match &cli.command {
        Command::Eval(args) if args.file.is_some() => eval::offline(args, global.output),
        Command::Completions(args) => Ok(completions(args.shell)),
        command => {
            let mut session = Session::connect(global).await?;
            let result = match command {
                Command::Env(command) => env::run(&mut session, command).await,
                Command::Eval(args) => eval::online(&mut session, args).await,
                Command::Flag(command) => flag::run(&mut session, command).await,
                Command::Segment(command) => segment::run(&mut session, command).await,
                Command::Token(command) => token::run(&mut session, command).await,
                Command::History(args) => history::history(&mut session, args).await,
                Command::Watch(args) => history::watch(&mut session, args).await,
                Command::Clients => clients::clients(&mut session).await,
                Command::Export => export::export(&mut session).await,
                Command::Import(args) => import::import(&mut session, args).await,
                Command::Rollout(command) => rollout::run(&mut session, command).await,
                // Answered above without a server.
                Command::Completions(args) => Ok(completions(args.shell)),
            };
            match result {
                Err(error) if error.to_string().contains("no environment \"") => {
                    Err(environments_hint(&mut session, error).await)
                }
                result => result,
            }
        }
    }
}

/// `error`, about an environment that does not exist, with the closest ones that do (or all
/// of them, when none is close).
async fn environments_hint(session: &mut Session, error: anyhow::Error) -> anyhow::Error {
    let text = error.to_string();
    let Some(name) = text
        .split("no environment \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
    else {
        return error;
    };
    let Ok(listed) = session
        .admin
        .list_environments(flagstaff_proto::pb::ListEnvironmentsRequest {})
        .await
    else {
        return error;
    };
    let keys: Vec<String> = listed
        .into_inner()
        .environments
        .into_iter()
        .map(|e| e.key)
        .collect();
    let hint = crate::session::did_you_mean(name, &keys);
    if !hint.is_empty() {
        return anyhow::anyhow!("{text}{hint}");
    }
    if keys.is_empty() {
        return anyhow::anyhow!("{text}: there is none yet (flagstaff env create NAME)");
    }
    anyhow::anyhow!("{text}; the environments: {}", keys.join(", "))
}

fn completions(shell: clap_complete::Shell) -> String {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "flagstaff", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}
