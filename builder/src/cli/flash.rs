//! `piimg flash`: write an image to one card or several at once, or each node's card
//! composed on the fly from the cached base, verified; `--swap` flashes one card
//! after another as they are inserted.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Args;
use piimg::build::{self, BuildRequest, Nodes};
use piimg::flash::{self, CardSpec, MapOrigin, Source, SystemView, Target};
use piimg::progress::Reporter;

use super::flash_cards::{self, Planned};

/// Arguments of `piimg flash`.
#[derive(Debug, Args)]
#[command(
    override_usage = "piimg flash [OPTIONS] IMAGE DEVICE...\n       piimg flash [OPTIONS] --node NAME... DEVICE...\n       piimg flash [OPTIONS] --all DEVICE...\n       piimg flash [OPTIONS] (--all | --node NAME...) --swap"
)]
pub struct FlashArgs {
    /// IMAGE then one DEVICE or more; with --node or --all only the DEVICEs, one per
    /// node in the same order. IMAGE is a disk image: raw, or .xz/.zst/.gz
    /// (decompressed once into a temporary file beside it); its .bmap is found where
    /// bmaptool looks for it.
    #[arg(value_name = "IMAGE|DEVICE")]
    paths: Vec<PathBuf>,
    /// Flash this node's card, composed from the base image and the node's boot
    /// partition (no image file needed); repeat for several, all written at once.
    #[arg(long = "node", value_name = "NAME", conflicts_with = "all")]
    nodes: Vec<String>,
    /// Flash every node of the profile: one DEVICE per node, or --swap.
    #[arg(long)]
    all: bool,
    /// Card-swap loop: wait for a removable card to be inserted, flash it as the next
    /// node, eject it, and wait for the next, until every node has its card.
    #[arg(long)]
    swap: bool,
    /// The profile (the global `--profile`, as discovered by `cli::run`): with --node
    /// or --all, the cluster; with IMAGE, to warn when IMAGE no longer matches it.
    #[arg(skip)]
    pub(super) profile: Option<PathBuf>,
    /// With --node/--all: the base image to compose the cards from [default: the
    /// newest cached official image, fetched if none].
    #[arg(long, value_name = "IMAGE")]
    base: Option<PathBuf>,
    /// With --node/--all: never use the network (cached base, no GitHub key lookups).
    #[arg(long)]
    offline: bool,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    yes: bool,
    /// Allow a disk that does not report itself as removable.
    #[arg(long)]
    force: bool,
    /// Allow DEVICE to be a regular file (created if missing).
    #[arg(long)]
    force_file: bool,
    /// Skip reading the cards back.
    #[arg(long)]
    no_verify: bool,
}

impl FlashArgs {
    /// True when the cards are nodes' (--node or --all), composed on the fly.
    fn by_node(&self) -> bool {
        self.all || !self.nodes.is_empty()
    }

    fn policy(&self) -> flash::TargetPolicy {
        flash::TargetPolicy {
            force: self.force,
            force_file: self.force_file,
        }
    }

    /// The build request whose cards --node/--all flash.
    fn request(&self) -> anyhow::Result<BuildRequest> {
        let profile = super::build::profile_path(self.profile.as_deref())?;
        let nodes = if self.all {
            Nodes::All
        } else {
            Nodes::Named(self.nodes.clone())
        };
        Ok(BuildRequest {
            base: self.base.clone(),
            offline: self.offline,
            ..BuildRequest::new(profile, nodes)
        })
    }

    /// What the flash does per card.
    pub(super) fn options(&self) -> flash::FlashOptions {
        let mut faults = flash::FaultInjection::from_env();
        if flash::FaultInjection::flip_device_from_env().is_some() {
            // The flip is for that one card only (see `specs`).
            faults.flip_byte_at = None;
        }
        flash::FlashOptions {
            verify: !self.no_verify,
            faults,
        }
    }

    /// Whether to ask before writing.
    pub(super) fn confirm(&self) -> bool {
        !self.yes
    }
}

/// Runs `piimg flash`.
pub fn run(args: FlashArgs, out: Reporter) -> anyhow::Result<()> {
    if args.swap {
        if !args.by_node() {
            bail!("--swap flashes nodes' cards: give --all or --node NAME");
        }
        if !args.paths.is_empty() {
            bail!("--swap takes no DEVICE: it flashes each removable card as it is inserted");
        }
        let req = args.request()?;
        return super::flash_swap::run(&args, &req, out);
    }
    if args.by_node() {
        run_nodes(&args, out)
    } else {
        run_image(&args, out)
    }
}

/// `IMAGE DEVICE...`: the same image to every device.
fn run_image(args: &FlashArgs, out: Reporter) -> anyhow::Result<()> {
    if args.base.is_some() || args.offline {
        bail!("--base and --offline go with --node or --all (IMAGE is already built)");
    }
    let [image, devices @ ..] = args.paths.as_slice() else {
        bail!("give IMAGE and DEVICE (or --node NAME DEVICE)");
    };
    if devices.is_empty() {
        bail!("give IMAGE and DEVICE (or --node NAME DEVICE)");
    }
    if let Some(w) = super::stale::image_warning(image, args.profile.as_deref()) {
        out.warn(w);
    }
    let (source, warnings) =
        Source::open(image).map_err(|e| anyhow!("{e}; nothing was written to the card"))?;
    for w in warnings {
        out.warn(w);
    }
    let targets = inspect_all(devices, source.image_size, args.policy())?;
    out.info(describe_map(&source));
    let planned: Vec<Planned> = targets
        .into_iter()
        .map(|target| Planned {
            node: None,
            target,
            patch: None,
        })
        .collect();
    let single = planned.len() == 1;
    let results = flash_cards::flash_set(&source, &planned, args, out)?;
    if single {
        return flash_cards::report_single(results, out);
    }
    flash_cards::report_all(&planned, results, out)
}

/// `--node NAME... DEVICE...` / `--all DEVICE...`: each node's card composed from the
/// base, all written at once.
fn run_nodes(args: &FlashArgs, out: Reporter) -> anyhow::Result<()> {
    let req = args.request()?;
    let mut prepared = build::prepare(&req, &out)?;
    let names: Vec<String> = prepared.jobs.iter().map(|j| j.card.node.clone()).collect();
    if names.len() != args.paths.len() {
        bail!(
            "{} node(s) ({}) but {} DEVICE(s): give one device per node, in the same order, or use --swap to flash them one card after another",
            names.len(),
            names.join(", "),
            args.paths.len()
        );
    }
    let (source, warnings) = Source::open(&prepared.base)
        .map_err(|e| anyhow!("the base image: {e}; nothing was written to the cards"))?;
    for w in warnings {
        out.warn(w);
    }
    let targets = inspect_all(&args.paths, source.image_size, args.policy())?;
    let mut planned = Vec::new();
    for (job, target) in prepared.jobs.iter().zip(targets) {
        let patch = flash::compose(&prepared.base, &job.card, &job.extra, &std::env::temp_dir())
            .map_err(|e| {
                anyhow!(
                    "composing {}'s card: {e}; nothing was written to the cards",
                    job.card.node
                )
            })?;
        planned.push(Planned {
            node: Some(job.card.node.clone()),
            target,
            patch: Some(patch),
        });
    }
    out.info(format!(
        "{} card(s) from {} with each node's boot partition: {} bytes each to write",
        planned.len(),
        prepared.base.display(),
        planned
            .first()
            .and_then(|p| p.patch.as_ref())
            .map_or(0, |p| source_bytes_outside(&source, p.span)
                + p.mapped_bytes())
    ));
    let results = flash_cards::flash_set(&source, &planned, args, out)?;
    for (p, r) in planned.iter().zip(&results) {
        if let (Some(node), Ok(_)) = (&p.node, r) {
            if let Err(e) = prepared.mark_issued(node) {
                out.warn(format!(
                    "{node}: flashed, but recording it as issued failed: {e}"
                ));
            }
        }
    }
    flash_cards::report_all(&planned, results, out)
}

/// Bytes of the image's ranges outside `span`.
fn source_bytes_outside(source: &Source, span: (u64, u64)) -> u64 {
    source
        .ranges
        .iter()
        .map(|r| {
            let (s, e) = (r.offset, r.offset + r.len);
            let inside = e.min(span.1).saturating_sub(s.max(span.0));
            r.len - inside
        })
        .sum()
}

/// Every device checked for an image of `image_size` bytes; every refusal (and a
/// device given twice) named at once, before anything is written.
pub(super) fn inspect_all(
    devices: &[PathBuf],
    image_size: u64,
    policy: flash::TargetPolicy,
) -> anyhow::Result<Vec<Target>> {
    let view = SystemView::host();
    let mut targets: Vec<Target> = Vec::new();
    let mut refused = Vec::new();
    for d in devices {
        match flash::target::inspect(d, image_size, &view, policy) {
            Ok(t) => {
                if let Some(same) = targets.iter().find(|o| o.resolved == t.resolved) {
                    refused.push(format!(
                        "{} and {} are the same device: give each card once",
                        same.path.display(),
                        d.display()
                    ));
                } else {
                    targets.push(t);
                }
            }
            Err(r) => refused.push(flash::FlashError::from(r).to_string()),
        }
    }
    match refused.as_slice() {
        [] => Ok(targets),
        [one] if devices.len() == 1 => bail!("{one}; nothing was written to it"),
        _ => bail!(
            "{} of {} device(s) refused; nothing was written to any card:\n  {}",
            refused.len(),
            devices.len(),
            refused.join("\n  ")
        ),
    }
}

/// Where the ranges to write came from, for stderr (the `--json` report has `map`).
fn describe_map(source: &Source) -> String {
    let what = match &source.origin {
        MapOrigin::FileSystems => "the file systems' block map".to_string(),
        MapOrigin::BmapAndFileSystems(p) => {
            format!("{} united with the file systems' block map", p.display())
        }
        MapOrigin::WholeImageWithBmap(p) => format!(
            "the whole image (compressed: its file systems cannot be mapped from a stream), checked against {}",
            p.display()
        ),
        MapOrigin::WholeImage => {
            "the whole image (compressed: its file systems cannot be mapped from a stream)"
                .to_string()
        }
    };
    let how = if source.decompressed_first {
        " (of the image decompressed into a temporary file)"
    } else {
        ""
    };
    format!(
        "map: {what}{how}: {} of {} bytes to write",
        source.mapped_bytes(),
        source.image_size
    )
}

/// The card specs of `planned`, with the debug-only per-device flip fault.
pub(super) fn specs(planned: &[Planned]) -> Vec<CardSpec<'_>> {
    let flip_on = flash::FaultInjection::flip_device_from_env();
    let flip = flash::FaultInjection::from_env().flip_byte_at;
    planned
        .iter()
        .map(|p| CardSpec {
            target: &p.target,
            patch: p.patch.as_ref(),
            node: p.node.as_deref(),
            flip_byte_at: flip_on.as_ref().filter(|d| **d == p.target.path).and(flip),
        })
        .collect()
}
