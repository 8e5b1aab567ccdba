//! `piimg flash`: write an image (or a node's built image) to a card, verified.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use piimg::build::{self, BuildRequest, Nodes};
use piimg::flash::{self, FaultInjection, FlashOptions, MapOrigin, Source, SystemView, TargetKind};
use piimg::interrupt;
use piimg::progress::Reporter;

/// Arguments of `piimg flash`.
#[derive(Debug, Args)]
#[command(
    override_usage = "piimg flash [OPTIONS] IMAGE DEVICE\n       piimg flash [OPTIONS] --node NAME DEVICE"
)]
pub struct FlashArgs {
    /// IMAGE and DEVICE, or just DEVICE with --node. IMAGE is a disk image: raw, or
    /// .xz/.zst/.gz (decompressed once into a temporary file beside it); its .bmap is
    /// found where bmaptool looks for it.
    #[arg(value_name = "IMAGE DEVICE", num_args = 1..=2, required = true)]
    paths: Vec<PathBuf>,
    /// Flash the built image of this node (OUT/NAME.img).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Where `piimg build` put the node images.
    #[arg(long, value_name = "DIR", default_value = "out", requires = "node")]
    out: PathBuf,
    /// The profile (the global `--profile`, as discovered by `cli::run`): with --node,
    /// to check OUT/NAME.img against it and (re)build it when missing or stale; with
    /// IMAGE, to warn when IMAGE no longer matches it.
    #[arg(skip)]
    pub(super) profile: Option<PathBuf>,
    /// With --node, when OUT/NAME.img is missing or stale: the base image to build it from.
    #[arg(long, value_name = "IMAGE", requires = "node")]
    base: Option<PathBuf>,
    /// With --node, when OUT/NAME.img is missing: build without the network.
    #[arg(long, requires = "node")]
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
    /// Skip reading the card back.
    #[arg(long)]
    no_verify: bool,
}

/// Runs `piimg flash`.
pub fn run(args: FlashArgs, out: Reporter) -> anyhow::Result<()> {
    let (image, device) = resolve_paths(&args)?;
    if let Some(node) = &args.node {
        if !image.is_file() {
            out.info(format!(
                "no built image for node {node} at {}; building it first",
                image.display()
            ));
            build_first(&args, node, &image, out)?;
        } else {
            use super::stale::Staleness;
            match super::stale::node_image_changes(
                &image,
                node,
                args.profile.as_deref(),
                args.base.as_deref(),
            )? {
                Staleness::Current => {}
                Staleness::Stale(why) => {
                    out.info(format!(
                        "{} is stale ({}); rebuilding it first",
                        image.display(),
                        why.join("; ")
                    ));
                    build_first(&args, node, &image, out)?;
                }
                Staleness::Unknown(why) => out.warn(format!(
                    "cannot tell whether {} is current ({why}); flashing it as it is",
                    image.display()
                )),
            }
        }
    } else if let Some(w) = super::stale::image_warning(&image, args.profile.as_deref()) {
        out.warn(w);
    }
    let (source, warnings) =
        Source::open(&image).map_err(|e| anyhow!("{e}; nothing was written to the card"))?;
    for w in warnings {
        out.warn(w);
    }
    let policy = flash::TargetPolicy {
        force: args.force,
        force_file: args.force_file,
    };
    let target = flash::target::inspect(&device, source.image_size, &SystemView::host(), policy)
        .map_err(|r| anyhow!("{}; nothing was written to it", flash::FlashError::from(r)))?;
    out.info(describe_map(&source));

    let describe = describe(&target, &source);
    if !args.yes {
        confirm(&describe, &target)?;
    } else {
        out.info(&describe);
    }

    let opts = FlashOptions {
        verify: !args.no_verify,
        faults: FaultInjection::from_env(),
    };
    // From here Ctrl-C/SIGTERM stop the flash between chunks, with the card's state.
    interrupt::install();
    let report = match flash::flash(&source, &target, &opts, &out) {
        Ok(r) => r,
        Err(failure) if failure.by_signal() => {
            // 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
            let msg = format!("{failure}");
            if out.is_json() {
                println!(
                    "{}",
                    serde_json::json!({ "error": msg, "card": failure.card })
                );
            }
            eprintln!("error: {msg}");
            std::process::exit(130);
        }
        Err(failure) => return Err(failure.into()),
    };
    for w in &report.warnings {
        out.warn(w);
    }
    out.info(format!(
        "wrote {} of {} mapped bytes to {} in {:.1} s{}",
        report.bytes_written,
        report.mapped_bytes,
        report.target.display(),
        report.seconds,
        if report.verified {
            format!(", verified ({:.1} s)", report.verify_seconds)
        } else {
            ", not verified (--no-verify)".into()
        }
    ));
    out.json(&report)?;
    Ok(())
}

fn resolve_paths(args: &FlashArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    match (&args.node, args.paths.as_slice()) {
        (Some(node), [device]) => Ok((args.out.join(format!("{node}.img")), device.clone())),
        (Some(_), _) => bail!("with --node give only DEVICE (the image is OUT/NAME.img)"),
        (None, [image, device]) => Ok((image.clone(), device.clone())),
        (None, _) => bail!("give IMAGE and DEVICE (or --node NAME DEVICE)"),
    }
}

/// `--node NAME` with no or a stale OUT/NAME.img: build it, as `piimg build --node
/// NAME` would.
fn build_first(args: &FlashArgs, node: &str, image: &Path, out: Reporter) -> anyhow::Result<()> {
    let context = || format!("building {node}'s image before flashing it");
    let profile = super::build::profile_path(args.profile.as_deref()).with_context(context)?;
    let req = BuildRequest {
        base: args.base.clone(),
        out_dir: args.out.clone(),
        offline: args.offline,
        ..BuildRequest::new(profile, Nodes::Named(vec![node.to_string()]))
    };
    // One JSON document on stdout (flash's): the build talks like --quiet then.
    let build_out = if out.is_json() {
        Reporter::new(piimg::progress::OutputMode::Quiet)
    } else {
        out
    };
    let report = build::build(&req, &build_out).with_context(context)?;
    super::build::print(&report, &build_out)?;
    report.check().with_context(context)?;
    if !image.is_file() {
        bail!(
            "building node {node} did not produce {}; run `piimg build --node {node}` and check its output",
            image.display()
        );
    }
    Ok(())
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

fn describe(target: &flash::Target, source: &Source) -> String {
    match target.kind {
        TargetKind::File => format!(
            "{} → file {} ({} mapped of {} bytes)",
            source.path.display(),
            target.path.display(),
            source.mapped_bytes(),
            source.image_size
        ),
        TargetKind::BlockDevice => format!(
            "{} → {} ({}): {}, {:.1} GB ({} bytes), removable: {}",
            source.path.display(),
            target.path.display(),
            target.name,
            target.model.as_deref().unwrap_or("unknown model"),
            target.size as f64 / 1e9,
            target.size,
            if target.removable { "yes" } else { "no" }
        ),
    }
}

fn confirm(describe: &str, target: &flash::Target) -> anyhow::Result<()> {
    if target.kind == TargetKind::File && !path_has_data(&target.path) {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to flash {} without confirmation: stdin is not a terminal; pass --yes",
            target.path.display()
        );
    }
    eprintln!("{describe}");
    eprint!(
        "Everything on {} will be overwritten. Type 'yes' to continue: ",
        target.path.display()
    );
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the confirmation")?;
    if line.trim() != "yes" {
        bail!("not confirmed; nothing was written");
    }
    Ok(())
}

fn path_has_data(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false)
}
