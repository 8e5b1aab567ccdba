//! `piimg plan`.

use clap::Args;
use piimg::progress::Reporter;

/// Arguments of `piimg plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {}

/// Runs `piimg plan`.
pub fn run(_args: PlanArgs, _out: Reporter) -> anyhow::Result<()> {
    anyhow::bail!("`piimg plan` is not implemented yet")
}
