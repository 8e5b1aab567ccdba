//! `piimg init`.

use clap::Args;
use piimg::progress::Reporter;

/// Arguments of `piimg init`.
#[derive(Debug, Args)]
pub struct InitArgs {}

/// Runs `piimg init`.
pub fn run(_args: InitArgs, _out: Reporter) -> anyhow::Result<()> {
    anyhow::bail!("`piimg init` is not implemented yet")
}
