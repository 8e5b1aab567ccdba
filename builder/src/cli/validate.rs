//! `piimg validate`.

use clap::Args;
use piimg::progress::Reporter;

/// Arguments of `piimg validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {}

/// Runs `piimg validate`.
pub fn run(_args: ValidateArgs, _out: Reporter) -> anyhow::Result<()> {
    anyhow::bail!("`piimg validate` is not implemented yet")
}
