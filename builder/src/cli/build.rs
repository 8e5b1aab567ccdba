//! `piimg build`: one ready-to-flash image per node.

use clap::Args;
use piimg::build::{self, BuildReport, BuildRequest, Nodes};
use piimg::profile;
use piimg::progress::{OutputMode, Reporter};
use std::path::{Path, PathBuf};

/// Arguments of `piimg build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Cluster profile: the global `--profile`, as discovered by `cli::run`.
    #[arg(skip)]
    pub profile: Option<PathBuf>,
    /// Build this node's image (repeat for several).
    #[arg(
        long = "node",
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub nodes: Vec<String>,
    /// Build every node of the profile (in parallel).
    #[arg(long)]
    pub all: bool,
    /// Base image (.img) [default: the newest cached official image, fetched if none].
    #[arg(long, value_name = "IMAGE")]
    pub base: Option<PathBuf>,
    /// Output directory.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// Also write NAME.img.xz (multi-threaded xz).
    #[arg(long)]
    pub xz: bool,
    /// Never use the network (cached base image, no GitHub key lookups).
    #[arg(long)]
    pub offline: bool,
    /// Start a new cluster: fresh secrets (the old ones are moved aside).
    #[arg(long)]
    pub new_cluster: bool,
    /// Every server was lost: the bootstrap server's card initialises the cluster
    /// again (same secrets and CA) so an etcd snapshot can be restored onto it.
    #[arg(long, conflicts_with = "new_cluster")]
    pub restore: bool,
    /// Also compute each whole image's SHA-256 (always done with --json).
    #[arg(long)]
    pub sha256: bool,
    /// Images built at the same time with --all [default: one per CPU].
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
}

impl BuildArgs {
    /// The library request these arguments ask for; `sha256` also when the output
    /// is JSON (the summary carries it).
    pub fn request(&self, out: &Reporter) -> anyhow::Result<BuildRequest> {
        Ok(BuildRequest {
            profile: profile_path(self.profile.as_deref())?,
            nodes: if self.all {
                Nodes::All
            } else {
                Nodes::Named(self.nodes.clone())
            },
            base: self.base.clone(),
            out_dir: self.out.clone(),
            xz: self.xz,
            offline: self.offline,
            new_cluster: self.new_cluster,
            restore: self.restore,
            sha256: self.sha256 || out.is_json(),
            jobs: self.jobs,
        })
    }
}

/// Runs `piimg build`.
pub fn run(args: BuildArgs, out: Reporter) -> anyhow::Result<()> {
    let report = build::build(&args.request(&out)?, &out)?;
    print(&report, &out)?;
    report.check()?;
    Ok(())
}

/// Prints the images `report` put in place (stdout: a line each, or the JSON summary).
pub(super) fn print(report: &BuildReport, out: &Reporter) -> anyhow::Result<()> {
    match out.mode() {
        // The run's one document: built images and, if any, the nodes that failed.
        OutputMode::Json if !report.failures.is_empty() => {
            let failed: Vec<String> = report
                .failures
                .iter()
                .map(|f| format!("{}: {}", f.node, piimg::error_text::chain(&f.error)))
                .collect();
            out.json(&serde_json::json!({
                "images": report.images,
                "failed": failed,
                "error": format!(
                    "{} of {} image(s) failed",
                    failed.len(),
                    failed.len() + report.images.len()
                ),
            }))?
        }
        OutputMode::Json => out.json(&serde_json::json!({ "images": report.images }))?,
        OutputMode::Human => {
            for s in report.images.iter().map(|i| &i.written) {
                println!(
                    "{:<16} {}  ({} MiB mapped, copy {:.1}s, card {:.2}s, bmap {:.1}s{})",
                    s.node,
                    s.path.display(),
                    s.mapped_bytes >> 20,
                    s.timings.copy,
                    s.timings.card,
                    s.timings.bmap,
                    s.xz.as_ref()
                        .map(|x| format!(", {}", x.display()))
                        .unwrap_or_default()
                );
            }
        }
        OutputMode::Quiet => {}
    }
    Ok(())
}

/// `--profile`, else what [`profile::discover`] finds (`$PIIMG_PROFILE`,
/// `./piimg.toml`, the only `profiles/*.toml`).
pub(crate) fn profile_path(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    Ok(profile::discover::discover_here(arg)?)
}
