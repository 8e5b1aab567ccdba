//! `piimg cache`: list or prune cached base images.

use anyhow::Context;
use clap::{Args, Subcommand};
use piimg::fetch::Cache;
use piimg::progress::{OutputMode, Reporter};

/// Arguments of `piimg cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// What to do with the cache.
    #[command(subcommand)]
    pub action: CacheAction,
}

/// `piimg cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// List cached images, newest first.
    List,
    /// Remove all but the newest images, and leftovers of interrupted fetches.
    Prune {
        /// How many of the newest images to keep.
        #[arg(long, default_value_t = 1)]
        keep: usize,
    },
}

/// Runs `piimg cache`.
pub fn run(args: CacheArgs, out: Reporter) -> anyhow::Result<()> {
    let cache = Cache::new(Cache::default_dir()?);
    match args.action {
        CacheAction::List => {
            let images = cache
                .list()
                .with_context(|| format!("listing the cache {}", cache.dir().display()))?;
            if out.is_json() {
                out.json(&serde_json::json!({
                    "cache": cache.dir(),
                    "images": images,
                }))?;
            } else if out.mode() == OutputMode::Human {
                if images.is_empty() {
                    eprintln!("no images cached in {}", cache.dir().display());
                }
                for i in &images {
                    println!(
                        "{}  {:<9} {:>6} MiB  {}  {}",
                        i.release_date,
                        i.release,
                        i.size >> 20,
                        &i.sha256[..12.min(i.sha256.len())],
                        i.path.display()
                    );
                }
            }
        }
        CacheAction::Prune { keep } => {
            let pruned = cache
                .prune(keep)
                .with_context(|| format!("pruning the cache {}", cache.dir().display()))?;
            if out.is_json() {
                out.json(&pruned)?;
            } else {
                for i in &pruned.removed {
                    out.info(format!(
                        "removed {} ({}, {})",
                        i.path.display(),
                        i.release,
                        i.release_date
                    ));
                }
                for p in &pruned.leftovers {
                    out.info(format!("removed leftover {}", p.display()));
                }
                out.info(format!(
                    "kept the {keep} newest; removed {} image(s), {} leftover file(s)",
                    pruned.removed.len(),
                    pruned.leftovers.len()
                ));
            }
        }
    }
    Ok(())
}
