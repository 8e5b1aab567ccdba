//! `piimg inspect`.

use clap::Args;
use piimg::progress::Reporter;

/// Arguments of `piimg inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {}

/// Runs `piimg inspect`.
pub fn run(_args: InspectArgs, _out: Reporter) -> anyhow::Result<()> {
    anyhow::bail!("`piimg inspect` is not implemented yet")
}
