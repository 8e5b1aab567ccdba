//! `piimg build`.

use clap::Args;
use piimg::progress::Reporter;

/// Arguments of `piimg build`.
#[derive(Debug, Args)]
pub struct BuildArgs {}

/// Runs `piimg build`.
pub fn run(_args: BuildArgs, _out: Reporter) -> anyhow::Result<()> {
    anyhow::bail!("`piimg build` is not implemented yet")
}
