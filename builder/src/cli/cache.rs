//! `piimg cache`.

use clap::Args;
use piimg::progress::Reporter;

/// Arguments of `piimg cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {}

/// Runs `piimg cache`.
pub fn run(_args: CacheArgs, _out: Reporter) -> anyhow::Result<()> {
    anyhow::bail!("`piimg cache` is not implemented yet")
}
