//! The command-line grammar (the interface scripts and docs rely on).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Flagstaff: feature flags and staged rollouts.
#[derive(Debug, Parser)]
#[command(name = "flagstaff", version, about)]
pub struct Cli {
    /// Output format of read commands.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    #[command(subcommand)]
    pub command: Command,
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
    /// Evaluate a flag (or every flag) for a context, offline from an export file.
    Eval(EvalArgs),
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
    pub file: PathBuf,

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
