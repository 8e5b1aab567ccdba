//! `piimg flash`.

use clap::Args;
use piimg::progress::Reporter;

/// Arguments of `piimg flash`.
#[derive(Debug, Args)]
pub struct FlashArgs {}

/// Runs `piimg flash`.
pub fn run(_args: FlashArgs, _out: Reporter) -> anyhow::Result<()> {
    anyhow::bail!("`piimg flash` is not implemented yet")
}
