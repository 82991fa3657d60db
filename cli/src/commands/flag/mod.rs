//! `flagstaff flag ...`: create, read, flip, roll out, edit and delete flags. `run` only
//! dispatches; each subcommand's handler lives with the commands that do the same kind of
//! thing:
//!
//! - [`read`]: `flag list` and `flag get`;
//! - [`write`]: `flag create`, `on`, `off`, `client-side`, `revert` and `delete`;
//! - [`serve`]: what a flag serves by default: `flag serve` and the `flag rollout` shortcut;
//! - [`edit`]: `flag edit`, the flag's YAML in $EDITOR;
//! - [`apply`]: `flag apply` and `flag diff`, documents from a file;
//! - [`promote`]: `flag promote`, a flag copied to another environment;
//! - [`stale`]: `flag stale`, the flags ready to be removed from code;
//! - [`describe`]: how a flag's state and serve read in one line, for all of them.

use crate::args::FlagCommand;
use crate::session::Session;

mod apply;
mod describe;
mod edit;
mod promote;
mod read;
mod serve;
mod stale;
mod write;

/// Runs a `flag` subcommand; returns what to print.
pub async fn run(session: &mut Session, command: &FlagCommand) -> anyhow::Result<String> {
    match command {
        FlagCommand::Create(args) => write::create(session, args).await,
        FlagCommand::List { tag, search } => {
            read::list(session, tag.as_deref(), search.as_deref()).await
        }
        FlagCommand::Get { key } => read::get(session, key).await,
        FlagCommand::Stale { days } => stale::stale(session, *days).await,
        FlagCommand::On { key, write } => write::set_enabled(session, key, true, write).await,
        FlagCommand::Off { key, write } => write::set_enabled(session, key, false, write).await,
        FlagCommand::Serve {
            key,
            variant,
            write,
        } => serve::serve(session, key, variant, write).await,
        FlagCommand::ClientSide {
            key,
            state,
            message,
        } => {
            let on = *state == crate::args::Switch::On;
            write::set_client_side(session, key, on, message.as_deref()).await
        }
        FlagCommand::Rollout(args) => serve::rollout(session, args).await,
        FlagCommand::Revert {
            key,
            to_version,
            message,
        } => write::revert(session, key, *to_version, message.as_deref()).await,
        FlagCommand::Delete { key } => write::delete(session, key).await,
        FlagCommand::Promote {
            key,
            from,
            to,
            with_segments,
            message,
        } => promote::promote(session, key, from, to, *with_segments, message.as_deref()).await,
        FlagCommand::Apply { file, message } => {
            apply::apply(session, file, message.as_deref(), false).await
        }
        FlagCommand::Diff { file } => apply::apply(session, file, None, true).await,
        FlagCommand::Edit { key, message } => edit::edit(session, key, message.as_deref()).await,
    }
}
