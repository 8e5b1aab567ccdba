//! `piimg fetch`.

use clap::Args;
use piimg::progress::Reporter;

/// Arguments of `piimg fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {}

/// Runs `piimg fetch`.
pub fn run(_args: FetchArgs, _out: Reporter) -> anyhow::Result<()> {
    anyhow::bail!("`piimg fetch` is not implemented yet")
}
