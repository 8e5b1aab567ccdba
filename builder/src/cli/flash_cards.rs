//! The cards of one `piimg flash` run: one confirmation listing them all, the flash
//! itself (all at once), and the summary per card (stderr, or `--json`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use piimg::flash::{self, FlashFailure, FlashReport, Patch, Source, Target, TargetKind};
use piimg::interrupt;
use piimg::progress::Reporter;

use super::flash::FlashArgs;

/// One card to write: its node (when flashed by node), its checked target, and its
/// own bytes (a node's composed boot partition).
pub struct Planned {
    /// The node, with --node/--all.
    pub node: Option<String>,
    /// The checked device.
    pub target: Target,
    /// The card's own bytes over the image.
    pub patch: Option<Patch>,
}

/// Confirms (once, listing every card), then writes `source` to every planned card at
/// once. Ctrl-C/SIGTERM stop every card between chunks.
pub fn flash_set(
    source: &Source,
    planned: &[Planned],
    args: &FlashArgs,
    out: Reporter,
) -> anyhow::Result<Vec<Result<FlashReport, FlashFailure>>> {
    let lines: Vec<String> = planned.iter().map(|p| describe(p, source)).collect();
    if args.confirm() {
        confirm(&lines, planned)?;
    } else {
        for l in &lines {
            out.info(l);
        }
    }
    // From here Ctrl-C/SIGTERM stop the flash between chunks, with each card's state.
    interrupt::install();
    let specs = super::flash::specs(planned);
    Ok(flash::flash_many(source, &specs, &args.options(), &out))
}

/// The one-card summary: the report as before (`--json`: the report itself).
pub fn report_single(
    mut results: Vec<Result<FlashReport, FlashFailure>>,
    out: Reporter,
) -> anyhow::Result<()> {
    let report = match results.pop() {
        Some(Ok(r)) => r,
        Some(Err(failure)) => {
            if failure.by_signal() && out.is_json() {
                out.json(
                    &serde_json::json!({ "error": failure.to_string(), "card": failure.card }),
                )?;
            }
            return Err(failure.into());
        }
        None => bail!("no card was flashed"),
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

/// The summary of several cards: one line per card on stderr, or `{"cards": [...]}`
/// with `--json`; an error naming every card that failed.
pub fn report_all(
    planned: &[Planned],
    results: Vec<Result<FlashReport, FlashFailure>>,
    out: Reporter,
) -> anyhow::Result<()> {
    let mut cards = Vec::new();
    let mut failed = Vec::new();
    for (p, r) in planned.iter().zip(&results) {
        let name = p.node.as_deref().unwrap_or("-");
        match r {
            Ok(rep) => {
                for w in &rep.warnings {
                    out.warn(format!("{}: {w}", p.target.path.display()));
                }
                out.info(format!(
                    "{name:<16} {:<14} {:>14} bytes {:>7.1} s  {}",
                    p.target.path.display(),
                    rep.bytes_written,
                    rep.seconds,
                    if rep.verified {
                        "verified"
                    } else {
                        "not verified (--no-verify)"
                    }
                ));
                let mut v = serde_json::to_value(rep)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("ok".into(), true.into());
                }
                cards.push(v);
            }
            Err(f) => {
                out.info(format!(
                    "{name:<16} {:<14} FAILED: {f}",
                    p.target.path.display()
                ));
                failed.push(format!("{} ({name}): {f}", p.target.path.display()));
                cards.push(serde_json::json!({
                    "node": p.node,
                    "target": p.target.path,
                    "ok": false,
                    "error": f.error.to_string(),
                    "card": f.card,
                }));
            }
        }
    }
    out.json(&serde_json::json!({ "cards": cards }))?;
    if failed.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "{} of {} card(s) failed:\n  {}",
        failed.len(),
        planned.len(),
        failed.join("\n  ")
    ))
}

fn describe(p: &Planned, source: &Source) -> String {
    let what = match &p.node {
        Some(n) => format!("{n} (from {})", source.path.display()),
        None => source.path.display().to_string(),
    };
    let t = &p.target;
    match t.kind {
        TargetKind::File => format!("{what} → file {}", t.path.display()),
        TargetKind::BlockDevice => format!(
            "{what} → {} ({}): {}, {:.1} GB ({} bytes), removable: {}",
            t.path.display(),
            t.name,
            t.model.as_deref().unwrap_or("unknown model"),
            t.size as f64 / 1e9,
            t.size,
            if t.removable { "yes" } else { "no" }
        ),
    }
}

/// Asks once for every card (not for empty files given with --force-file).
fn confirm(lines: &[String], planned: &[Planned]) -> anyhow::Result<()> {
    if planned
        .iter()
        .all(|p| p.target.kind == TargetKind::File && !path_has_data(&p.target.path))
    {
        return Ok(());
    }
    let names: Vec<String> = planned
        .iter()
        .map(|p| p.target.path.display().to_string())
        .collect();
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to flash {} without confirmation: stdin is not a terminal; pass --yes",
            names.join(", ")
        );
    }
    for l in lines {
        eprintln!("{l}");
    }
    ask_yes(&format!(
        "Everything on {} will be overwritten",
        names.join(", ")
    ))
}

/// Asks once before the card-swap loop: every removable card inserted while it runs
/// is overwritten.
pub fn confirm_swap(nodes: &[String]) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to start the card-swap loop without confirmation: stdin is not a terminal; pass --yes"
        );
    }
    eprintln!(
        "Each removable card inserted from now on becomes the next of: {}",
        nodes.join(", ")
    );
    ask_yes("Everything on those cards will be overwritten")
}

/// Prints `warning`, asks for `yes` on the terminal, and fails unless it was typed.
fn ask_yes(warning: &str) -> anyhow::Result<()> {
    eprint!("{warning}. Type 'yes' to continue: ");
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
