//! Command-line definition: one module per subcommand, one args struct each.

use clap::{Args, CommandFactory, Parser, Subcommand};
use piimg::profile::PROFILE_ENV;
use piimg::profile::discover::{discover_here, init_target};
use piimg::progress::{OutputMode, Reporter};
use std::path::PathBuf;

mod build;
mod cache;
mod completions;
mod environment;
mod fetch;
mod flash;
mod flash_cards;
mod flash_swap;
mod init;
mod inspect;
pub mod json_error;
mod kubeconfig;
mod man;
pub mod pipe;
mod plan;
mod stale;
mod status;
mod table;
mod validate;

/// Ready-to-flash Raspberry Pi OS images for a k3s cluster.
#[derive(Debug, Parser)]
#[command(name = "piimg", version, about, propagate_version = true)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Print nothing but errors.
    #[arg(long, short, global = true, conflicts_with = "json")]
    pub quiet: bool,
    /// Print one machine-readable JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Cluster profile [default: ./piimg.toml, else the only profiles/*.toml].
    #[arg(long, short = 'p', global = true, env = PROFILE_ENV, value_name = "FILE")]
    pub profile: Option<PathBuf>,
}

impl GlobalArgs {
    /// The output mode these flags select.
    pub fn output_mode(&self) -> OutputMode {
        if self.json {
            OutputMode::Json
        } else if self.quiet {
            OutputMode::Quiet
        } else {
            OutputMode::Human
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter cluster profile.
    Init(init::InitArgs),
    /// Check a profile and report every problem.
    Validate(validate::ValidateArgs),
    /// Show what each node's card will do.
    Plan(plan::PlanArgs),
    /// Download and verify Raspberry Pi OS Lite (arm64) into the cache.
    Fetch(fetch::FetchArgs),
    /// List or prune cached base images.
    Cache(cache::CacheArgs),
    /// Build per-node images.
    Build(build::BuildArgs),
    /// Show what is inside an image or card.
    Inspect(inspect::InspectArgs),
    /// Write an image, or nodes' cards, to one card or several at once, verified.
    Flash(flash::FlashArgs),
    /// Write an admin kubeconfig for the running cluster.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Compare the running cluster with the profile.
    Status(status::StatusArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the man page, or write every page with --out.
    Man(man::ManArgs),
}

/// The full command definition: the derived one plus its ENVIRONMENT sections.
/// Parsing, completions and man pages all use this one.
pub fn command() -> clap::Command {
    environment::document(Cli::command())
}

/// The `--profile`/`$PIIMG_PROFILE` given, if any, for commands that discover
/// the profile only when they need one.
fn cli_profile(named: Option<&std::path::Path>) -> Option<PathBuf> {
    named.map(std::path::Path::to_path_buf)
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Reporter::new(cli.global.output_mode());
    let named = cli.global.profile.as_deref();
    match cli.command {
        Command::Init(mut a) => {
            a.profile.profile = init_target(named);
            init::run(a, out)
        }
        Command::Validate(mut a) => {
            a.profile.profile = discover_here(named)?;
            validate::run(a, out)
        }
        Command::Plan(mut a) => {
            a.profile.profile = discover_here(named)?;
            plan::run(a, out)
        }
        Command::Fetch(a) => fetch::run(a, out),
        Command::Cache(a) => cache::run(a, out),
        Command::Build(mut a) => {
            a.profile = Some(discover_here(named)?);
            build::run(a, out)
        }
        Command::Inspect(a) => inspect::run(a, out),
        Command::Flash(mut a) => {
            // Discovered where it is needed (build::profile_path): with IMAGE it only
            // feeds a staleness warning, with --node/--all it is the cluster.
            a.profile = cli_profile(named);
            flash::run(a, out)
        }
        Command::Kubeconfig(mut a) => {
            a.profile.profile = discover_here(named)?;
            kubeconfig::run(a, out)
        }
        Command::Status(mut a) => {
            a.profile.profile = discover_here(named)?;
            status::run(a, out)
        }
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        command().debug_assert();
    }
}
