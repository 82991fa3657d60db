//! The command-line grammar (the interface scripts and docs rely on).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Flagstaff: feature flags and staged rollouts.
#[derive(Debug, Parser)]
#[command(name = "flagstaff", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Output format of read commands.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// flagstaffd's address.
    #[arg(
        long,
        global = true,
        env = "FLAGSTAFF_ENDPOINT",
        default_value = "http://127.0.0.1:7878"
    )]
    pub endpoint: String,

    /// The CA certificate (PEM) that signed flagstaffd's TLS certificate, for an https://
    /// endpoint whose certificate the system does not trust [default: the system's roots].
    #[arg(long, global = true, env = "FLAGSTAFF_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// The API token [default: --token-file, else ./flagstaff-data/admin.token if readable].
    #[arg(long, global = true, env = "FLAGSTAFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A file holding the API token.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// The environment to work in.
    #[arg(long, global = true, env = "FLAGSTAFF_ENV", value_name = "NAME")]
    pub env: Option<String>,

    /// Confirm writes to protected environments and deletions without asking.
    #[arg(long, global = true)]
    pub yes: bool,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// Machine-readable JSON.
    Json,
    /// YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list and delete environments.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Create, read, change and delete flags.
    #[command(subcommand)]
    Flag(FlagCommand),
    /// Create, read, change and delete segments.
    #[command(subcommand)]
    Segment(SegmentCommand),
    /// Evaluate a flag (or every flag) for a context, on the server or offline from a file.
    Eval(EvalArgs),
    /// The environment's change history, newest first.
    History(HistoryArgs),
    /// Follow the environment's changes as they happen, across server restarts.
    Watch(WatchArgs),
    /// The SDK instances of the environment and the revision each runs.
    Clients,
    /// Print the environment as an export document.
    Export,
    /// Apply an export document to the environment as one revision.
    Import(ImportArgs),
    /// Staged rollouts: plans that move a flag to a variant stage by stage, on schedule.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Create, list, show (client tokens) and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an environment.
    Create {
        /// Its key, e.g. production.
        name: String,
        /// Writes need confirmation (--yes or a prompt).
        #[arg(long)]
        protected: bool,
    },
    /// List environments.
    List,
    /// Delete an empty environment.
    Delete {
        /// Its key.
        name: String,
    },
}

/// `-m MESSAGE` and `--wait[=DURATION]`, for writes that change what SDKs serve.
#[derive(Debug, Args, Clone)]
pub struct WriteOptions {
    /// A reason, recorded in the history.
    #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
    pub message: Option<String>,

    /// Wait until every connected SDK instance has applied the change (30s unless given).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true,
          default_missing_value = "30s", value_parser = parse_duration)]
    pub wait: Option<Duration>,

    /// With --wait: succeed when no SDK instance is connected (none to wait for) instead of
    /// failing.
    #[arg(long, requires = "wait")]
    pub allow_none: bool,
}

#[derive(Debug, Subcommand)]
pub enum FlagCommand {
    /// Create a flag; without variants, a boolean flag that is off.
    Create(FlagCreateArgs),
    /// List flags.
    List {
        /// Only flags with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only flags whose key, description or owner contains this text.
        #[arg(long)]
        search: Option<String>,
    },
    /// List flags ready to be removed from code: temporary flags serving one variant to
    /// everyone, and flags no SDK has evaluated, for N days.
    Stale {
        /// How many days.
        #[arg(long, value_name = "N", default_value_t = 30)]
        days: u64,
    },
    /// Show a flag.
    Get {
        /// The flag's key.
        key: String,
    },
    /// Apply flags and segments (or an export document) from a file, as one revision.
    Apply {
        /// A JSON or YAML file: a flag, a segment, or an export document.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
        /// A reason, recorded in the history.
        message: Option<String>,
    },
    /// Show what `apply` would change.
    Diff {
        /// A JSON or YAML file: a flag, a segment, or an export document.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Edit a flag's YAML in $EDITOR; re-validated on save.
    Edit {
        /// The flag's key.
        key: String,
        #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
        /// A reason, recorded in the history.
        message: Option<String>,
    },
    /// Turn a flag on: it serves its rules and default.
    On {
        /// The flag's key.
        key: String,
        #[command(flatten)]
        write: WriteOptions,
    },
    /// Turn a flag off: it serves its off variant to everyone.
    Off {
        /// The flag's key.
        key: String,
        #[command(flatten)]
        write: WriteOptions,
    },
    /// Let client tokens (web pages, apps) evaluate a flag over OFREP (`on`), or stop them
    /// (`off`).
    ClientSide {
        /// The flag's key.
        key: String,
        /// `on`: client tokens see the flag; `off`: only sdk tokens do.
        #[arg(value_enum)]
        state: Switch,
        #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
        /// A reason, recorded in the history.
        message: Option<String>,
    },
    /// Serve a variant to a percentage of contexts by default, the rest the other variant.
    Rollout(RolloutArgs),
    /// Serve one variant to everyone not matched by a rule.
    Serve {
        /// The flag's key.
        key: String,
        /// The variant.
        variant: String,
        #[command(flatten)]
        write: WriteOptions,
    },
    /// Restore a flag as it was at an earlier version.
    Revert {
        /// The flag's key.
        key: String,
        /// The version to restore (see `flagstaff history KEY`).
        #[arg(long = "to-version", value_name = "N")]
        to_version: u64,
        #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
        /// A reason, recorded in the history.
        message: Option<String>,
    },
    /// Delete a flag.
    Delete {
        /// The flag's key.
        key: String,
    },
    /// Copy a flag from one environment to another.
    Promote {
        /// The flag's key.
        key: String,
        /// The environment to copy from.
        #[arg(long)]
        from: String,
        /// The environment to copy to.
        #[arg(long)]
        to: String,
        /// Also copy the segments the flag's rules use, in the same revision (created
        /// where missing, replaced where different).
        #[arg(long)]
        with_segments: bool,
        #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
        /// A reason, recorded in the history.
        message: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct FlagCreateArgs {
    /// The flag's key.
    pub key: String,
    /// The kind of its values [default: boolean].
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// A variant, in order; VALUE is JSON for json flags, a number for number flags.
    #[arg(long = "variant", value_name = "NAME=VALUE")]
    pub variants: Vec<String>,
    /// What the flag is for.
    #[arg(long)]
    pub description: Option<String>,
    /// A tag.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Who owns it.
    #[arg(long)]
    pub owner: Option<String>,
    /// To be removed once launched.
    #[arg(long)]
    pub temporary: bool,
    /// Client tokens (web pages, apps) may evaluate it over OFREP.
    #[arg(long)]
    pub client_side: bool,
    #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
    /// A reason, recorded in the history.
    pub message: Option<String>,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Boolean,
    String,
    Number,
    Json,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The flag's key.
    pub key: String,
    /// The share of contexts to get the variant: 12.5, 12.5% (steps of 0.001).
    pub percent: String,
    /// The variant rolled out [default: on].
    #[arg(long)]
    pub variant: Option<String>,
    /// The context attribute contexts are bucketed by [default: key, or the split's].
    #[arg(long, value_name = "ATTR")]
    pub bucket_by: Option<String>,
    /// Allow a change that reshuffles contexts (another bucketing attribute, reordered
    /// variants).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub write: WriteOptions,
}

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// Create a segment.
    Create {
        /// The segment's key.
        key: String,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// A context key in the segment.
        #[arg(long = "include", value_name = "KEY")]
        included: Vec<String>,
        /// A context key kept out of the segment.
        #[arg(long = "exclude", value_name = "KEY")]
        excluded: Vec<String>,
    },
    /// Show a segment.
    Get {
        /// The segment's key.
        key: String,
    },
    /// List segments.
    List,
    /// Apply segments from a file.
    Apply {
        /// A JSON or YAML file: a segment, or an export document.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Delete a segment.
    Delete {
        /// The segment's key.
        key: String,
    },
    /// Add context keys to a segment.
    Add(SegmentKeysArgs),
    /// Remove context keys from a segment.
    Remove(SegmentKeysArgs),
    /// Copy a segment, key lists included, from one environment to another.
    Promote {
        /// The segment's key.
        key: String,
        /// The environment to copy from.
        #[arg(long)]
        from: String,
        /// The environment to copy to.
        #[arg(long)]
        to: String,
        #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
        /// A reason, recorded in the history.
        message: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct SegmentKeysArgs {
    /// The segment's key.
    pub segment: String,
    /// Context keys.
    #[arg(required = true)]
    pub keys: Vec<String>,
    /// Change the excluded keys instead of the included ones.
    #[arg(long)]
    pub excluded: bool,
    #[command(flatten)]
    pub write: WriteOptions,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The flag to evaluate; leave out with --all.
    #[arg(required_unless_present = "all")]
    pub flag: Option<String>,

    /// Evaluate every flag of the environment.
    #[arg(long, conflicts_with = "flag")]
    pub all: bool,

    /// An export document (JSON or YAML) to evaluate against, with no server.
    #[arg(long, short = 'f', value_name = "EXPORT_FILE")]
    pub file: Option<PathBuf>,

    /// The context key.
    #[arg(long, value_name = "ID")]
    pub key: Option<String>,

    /// A context attribute; VALUE is read as JSON when it is a number, true/false or a list,
    /// else as a string (quote it as JSON, '"42"', to force a string).
    #[arg(long = "attr", value_name = "NAME=VALUE")]
    pub attrs: Vec<String>,

    /// The whole context as JSON: {"key": "...", "attributes": {...}}; --key and --attr apply
    /// on top of it.
    #[arg(long, value_name = "JSON")]
    pub context_json: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this flag's changes.
    pub key: Option<String>,
    /// How many entries at most.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Print the changes after this revision first (as far as the history keeps them)
    /// [default: only changes from now on].
    #[arg(long, value_name = "REVISION")]
    pub since: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An export document (JSON or YAML).
    pub file: PathBuf,
    /// Check the document and show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
    /// A reason, recorded in the history.
    pub message: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a plan: the variant goes to a growing share of contexts, stage by stage.
    Start(RolloutStartArgs),
    /// Where a plan is: state, stage, percent now, time to the next stage, history.
    Status {
        /// The flag's key.
        key: String,
        /// Keep printing each change of the plan until it finishes.
        #[arg(long)]
        watch: bool,
    },
    /// Hold a running plan at its stage.
    Pause(RolloutActionArgs),
    /// Resume a paused plan; its stage gets its full hold again.
    Resume(RolloutActionArgs),
    /// Serve the baseline variant again, now, and end the plan.
    Rollback(RolloutActionArgs),
    /// Serve the target variant to everyone, now, and end the plan.
    Promote(RolloutActionArgs),
    /// List the environment's plans.
    List {
        /// Also list finished plans (completed or rolled back).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct RolloutStartArgs {
    /// The flag's key.
    pub key: String,
    /// The variant to roll out.
    #[arg(long, value_name = "VARIANT")]
    pub to: String,
    /// The variant it replaces [default: what the flag serves now].
    #[arg(long, value_name = "VARIANT")]
    pub from: Option<String>,
    /// The stages: PERCENT:HOLD,..., ending at 100%, e.g. 1%:10m,5%:30m,25%:1h,100%
    /// (holds in s, m, h or d).
    #[arg(long, value_name = "SPEC")]
    pub stages: String,
    /// Roll out in this rule's serve instead of the default serve.
    #[arg(long, value_name = "ID")]
    pub rule: Option<String>,
    /// The context attribute contexts are bucketed by [default: the split's, or key].
    #[arg(long, value_name = "ATTR")]
    pub bucket_by: Option<String>,
    /// Allow a plan that reshuffles contexts (reorders a live split, changes its bucketing).
    #[arg(long)]
    pub force: bool,
    /// Roll back by itself when the target's rate of application event EVENT exceeds the
    /// baseline's by more than RATIO (e.g. checkout_error:1.5), once a stage has seen N events
    /// of the pair (min=N, 100 by default).
    #[arg(long, value_name = "EVENT:RATIO[:min=N]", value_parser = parse_guard)]
    pub guard: Option<Guard>,
    #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
    /// A reason, recorded in the history.
    pub message: Option<String>,
}

/// A plan's guard, as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// The application event.
    pub event: String,
    /// The largest acceptable ratio of the target's event rate to the baseline's.
    pub max_ratio: f64,
    /// Events of the pair a stage must see before the guard decides.
    pub min_events: u64,
}

/// Events a stage sees before a guard decides, unless `min=N` says otherwise.
pub const DEFAULT_MIN_EVENTS: u64 = 100;

/// `EVENT:RATIO[:min=N]`, e.g. `checkout_error:1.5:min=500`.
fn parse_guard(text: &str) -> Result<Guard, String> {
    let usage = "expected EVENT:RATIO[:min=N], e.g. checkout_error:1.5:min=500";
    let mut parts = text.split(':');
    let event = parts.next().unwrap_or_default().trim();
    if event.is_empty() {
        return Err(format!("no event name: {usage}"));
    }
    let ratio = parts
        .next()
        .ok_or_else(|| format!("no ratio: {usage}"))?
        .trim();
    let max_ratio: f64 = ratio
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite())
        .ok_or_else(|| format!("{ratio:?} is not a ratio: {usage}"))?;
    if max_ratio < 1.0 {
        return Err(format!(
            "the ratio {ratio} is below 1: the target may have at most RATIO times the \
             baseline's rate, so 1 means no worse (1.5: up to 50% worse)"
        ));
    }
    let mut min_events = DEFAULT_MIN_EVENTS;
    if let Some(min) = parts.next() {
        let n = min
            .trim()
            .strip_prefix("min=")
            .ok_or_else(|| format!("{min:?} is not min=N: {usage}"))?;
        min_events = n
            .parse()
            .map_err(|_| format!("min={n} is not a whole number: {usage}"))?;
    }
    if let Some(extra) = parts.next() {
        return Err(format!("unexpected {extra:?}: {usage}"));
    }
    Ok(Guard {
        event: event.to_owned(),
        max_ratio,
        min_events,
    })
}

#[derive(Debug, Args)]
pub struct RolloutActionArgs {
    /// The flag's key.
    pub key: String,
    #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
    /// A reason, recorded in the history.
    pub message: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once (a client token's can be shown again).
    Create {
        /// A name for people, e.g. checkout-service (or --name).
        #[arg(
            value_name = "NAME",
            required_unless_present = "name",
            conflicts_with = "name"
        )]
        positional_name: Option<String>,
        /// A name for people, e.g. checkout-service.
        #[arg(long)]
        name: Option<String>,
        /// What it may do; an editor, sdk or client token is for one environment, --env.
        #[arg(long, value_enum)]
        role: Role,
    },
    /// List tokens (never their secrets).
    List,
    /// Show a client token again, with its secret (other tokens are kept only as hashes).
    Show {
        /// The token's id (see `token list`).
        id: String,
    },
    /// Revoke a token: its calls and streams stop at once.
    Revoke {
        /// The token's id (see `token list`).
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Everything, in every environment.
    Admin,
    /// Read and write flags and segments of one environment.
    Editor,
    /// What SDKs use: stream one environment's flags.
    Sdk,
    /// What web pages and apps embed: evaluate one environment's client-side flags over
    /// OFREP, nothing else. Not a secret: `token show` prints it again.
    Client,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// A duration such as 500ms, 30s, 2m or 1h; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 30s, 2m)"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn the_grammar_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
