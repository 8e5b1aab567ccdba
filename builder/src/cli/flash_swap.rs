//! `piimg flash --swap`: the card-swap loop. It waits for a removable card to be
//! inserted (the kernel's uevents, then a sysfs rescan), says which node it will
//! become, composes and flashes it, ejects it where the reader can, prints the node
//! name to write on it, and waits for the next, until every node has its card.
//! Cards already in a reader when it starts are left alone until re-inserted; a card
//! that already holds a node flashed in this run is never rewritten; Ctrl-C stops
//! between cards.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use piimg::build::{self, BuildRequest};
use piimg::flash::{self, CardSpec, Source, SystemView, disks, eject, uevent::Uevents};
use piimg::image::Image;
use piimg::interrupt;
use piimg::manifest::Manifest;
use piimg::progress::{OutputMode, Reporter};

use super::flash::FlashArgs;

/// How often the wait wakes up to notice Ctrl-C (events wake it at once).
const TICK: Duration = Duration::from_millis(500);

/// Runs the card-swap loop for the nodes of `req`.
pub fn run(args: &FlashArgs, req: &BuildRequest, out: Reporter) -> anyhow::Result<()> {
    let mut prepared = build::prepare(req, &out)?;
    let (source, warnings) = Source::open(&prepared.base)
        .map_err(|e| anyhow!("the base image: {e}; nothing was written"))?;
    for w in warnings {
        out.warn(w);
    }
    let events =
        Uevents::open().context("cannot listen for cards being inserted (netlink uevents)")?;
    let names: Vec<String> = prepared.jobs.iter().map(|j| j.card.node.clone()).collect();
    if args.confirm() {
        super::flash_cards::confirm_swap(&names)?;
    }
    interrupt::install();
    let view = SystemView::host();
    let say = |msg: String| {
        if out.mode() != OutputMode::Quiet {
            eprintln!("{msg}");
        }
    };
    let mut present: HashSet<String> = disks::with_media(&view)
        .into_iter()
        .map(|m| m.name)
        .collect();
    let already: Vec<String> = disks::with_media(&view)
        .into_iter()
        .filter(|m| m.removable)
        .map(|m| m.path.display().to_string())
        .collect();
    if !already.is_empty() {
        say(format!(
            "already inserted, left alone (remove and re-insert to flash): {}",
            already.join(", ")
        ));
    }

    let mut done: Vec<usize> = Vec::new();
    let mut cards = Vec::new();
    let mut next = 0;
    while next < names.len() {
        let node = &names[next];
        say(format!(
            "insert a card for {node} ({} of {}); Ctrl-C to stop",
            next + 1,
            names.len()
        ));
        let Some(medium) = wait_for_card(&events, &view, &mut present)? else {
            break;
        };
        let dev = medium.path.clone();
        if let Some(holder) = card_node(&dev).filter(|h| done.iter().any(|&k| names[k] == *h)) {
            say(format!(
                "{} already holds {holder}, flashed in this run: not rewriting it; remove it and insert the next card",
                dev.display()
            ));
            continue;
        }
        let target = match flash::target::inspect(
            &dev,
            source.image_size,
            &view,
            flash::TargetPolicy::default(),
        ) {
            Ok(t) => t,
            Err(r) => {
                say(format!(
                    "{}; nothing was written to it: insert another card",
                    flash::FlashError::from(r)
                ));
                continue;
            }
        };
        say(format!(
            "{} ({}, {:.1} GB) becomes {node}",
            dev.display(),
            target.model.as_deref().unwrap_or("unknown model"),
            target.size as f64 / 1e9
        ));
        let job = &prepared.jobs[next];
        let patch = flash::compose(&prepared.base, &job.card, &job.extra, &std::env::temp_dir())
            .map_err(|e| anyhow!("composing {node}'s card: {e}"))?;
        let spec = CardSpec {
            target: &target,
            patch: Some(&patch),
            node: Some(node),
            flip_byte_at: None,
        };
        let result = flash::flash_many(&source, &[spec], &args.options(), &out).pop();
        match result {
            Some(Ok(rep)) => {
                if let Err(e) = prepared.mark_issued(node) {
                    out.warn(format!(
                        "{node}: flashed, but recording it as issued failed: {e}"
                    ));
                }
                let how = match eject::eject(&target) {
                    Ok(eject::Ejected::Ejected) => "ejected".to_string(),
                    Ok(eject::Ejected::NotSupported(why)) => format!("not ejected: {why}"),
                    Err(e) => format!("not ejected: {e}"),
                };
                say(format!(
                    "{} done ({} bytes, {:.1} s, {}; {how}): write \"{node}\" on this card and remove it",
                    dev.display(),
                    rep.bytes_written,
                    rep.seconds,
                    if rep.verified {
                        "verified"
                    } else {
                        "not verified"
                    }
                ));
                let mut v = serde_json::to_value(&rep)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("ok".into(), true.into());
                }
                cards.push(v);
                done.push(next);
                next += 1;
            }
            Some(Err(f)) => {
                say(format!("{node} on {}: FAILED: {f}", dev.display()));
                cards.push(serde_json::json!({
                    "node": node, "target": dev, "ok": false,
                    "error": f.error.to_string(), "card": f.card,
                }));
                if f.by_signal() {
                    break;
                }
            }
            None => bail!("no card was flashed"),
        }
    }
    out.json(&serde_json::json!({ "cards": cards }))?;
    if next < names.len() {
        let flashed: Vec<&str> = done.iter().map(|&k| names[k].as_str()).collect();
        return Err(anyhow!(
            "stopped: {} of {} node(s) flashed ({}); not yet: {}",
            flashed.len(),
            names.len(),
            if flashed.is_empty() {
                "none".to_string()
            } else {
                flashed.join(", ")
            },
            names[next..].join(", ")
        ));
    }
    say(format!("every node has its card: {}", names.join(", ")));
    Ok(())
}

/// Waits until a removable disk gains media that was not there before; `None` on
/// Ctrl-C/SIGTERM. `present` tracks the disks with media, so a card counts as new
/// only once it was removed (or ejected) and inserted again.
fn wait_for_card(
    events: &Uevents,
    view: &SystemView,
    present: &mut HashSet<String>,
) -> anyhow::Result<Option<disks::Medium>> {
    let mut look = true;
    loop {
        if look {
            let now = disks::with_media(view);
            present.retain(|n| now.iter().any(|m| m.name == *n));
            for m in now {
                if present.contains(&m.name) {
                    continue;
                }
                if !m.removable {
                    // Not a card (another loop device, a new internal disk): noted, ignored.
                    present.insert(m.name);
                    continue;
                }
                present.insert(m.name.clone());
                return Ok(Some(m));
            }
        }
        if interrupt::interrupted() {
            return Ok(None);
        }
        look = events.wait(TICK).context("waiting for a card")?;
    }
}

/// The node a card at `dev` holds, from its boot partition's manifest.
fn card_node(dev: &Path) -> Option<String> {
    let image = Image::open(dev).ok()?;
    let boot = image.boot().ok()?;
    Manifest::read_from(&boot).ok().flatten().map(|m| m.node)
}
