//! `piimg plan`: one row per node — what its card does on first boot and on a re-flash.
//!
//! Read-only: it neither creates secrets nor fetches GitHub keys; it reads the
//! cluster state recorded next to the profile.

use super::validate::{ProfileArg, print_findings};
use anyhow::Context;
use clap::Args;
use piimg::plan::{self, FirstBootAction, NodePlan};
use piimg::profile::keys::{self, KeySources};
use piimg::profile::{self, secrets};
use piimg::progress::{OutputMode, Reporter};
use piimg::storage::BootOrder;
use piimg_contract::Role;
use piimg_contract::storage::{BootDevice, DiskBus, SdWear, Storage};
use serde::Serialize;
use std::net::Ipv4Addr;

/// Arguments of `piimg plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The profile to plan.
    #[command(flatten)]
    pub profile: ProfileArg,
    /// The full table on one line per node, however wide the terminal.
    #[arg(long)]
    pub wide: bool,
}

/// One node of the plan, as shown.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    ip: Option<Ipv4Addr>,
    role: Role,
    bootstrap: bool,
    hardware: String,
    board: String,
    ram_mb: u32,
    /// Whether this node's card was issued before.
    issued: bool,
    first_boot: FirstBootAction,
    first_boot_text: String,
    reflash: FirstBootAction,
    reflash_text: String,
    /// Boot device, data disk and SD-wear level, as the card tells the agent.
    storage: Storage,
    /// `storage` in a few words, e.g. `sd + nvme data`.
    storage_text: String,
    /// The bootloader setting a disk-booting board needs.
    boot_order: Option<BootOrder>,
}

/// Where etcd snapshots go.
#[derive(Debug, Serialize)]
struct Snapshots {
    /// Cron schedule.
    schedule: String,
    /// Snapshots kept (per place).
    retention: u32,
    /// The off-card target (`[k3s.etcd_s3]`), in words; `None` when snapshots stay
    /// on each server's own disk only.
    s3: Option<String>,
    /// The whole sentence `plan` prints.
    text: String,
}

#[derive(Debug, Serialize)]
struct Doc {
    profile: std::path::PathBuf,
    cluster: String,
    k3s_version: String,
    vip: Option<Ipv4Addr>,
    cluster_exists: bool,
    bootstrap_issued: bool,
    /// When the bootstrap server's first card was issued, if recorded.
    bootstrap_issued_at: Option<String>,
    secrets_present: bool,
    /// What worker cards carry: `agent` (k3s's agent-token) or `server` (a cluster
    /// created before piimg made an agent token).
    worker_token: &'static str,
    /// Seconds a first-bring-up bootstrap card probes its peers before it initialises.
    init_window_seconds: u64,
    /// Validity of each server card's node-cleaner certificate (issued at build time).
    node_cleaner_days: u32,
    /// Where the servers' etcd snapshots go.
    etcd_snapshots: Snapshots,
    nodes: Vec<Row>,
}

/// A node's storage in a few words: the boot disk, a data disk, SD-wear off.
fn storage_text(s: &Storage) -> String {
    let disk = |b: BootDevice| match b {
        BootDevice::Sd => "sd",
        BootDevice::Usb => "usb",
        BootDevice::Nvme => "nvme",
    };
    let mut t = disk(s.boot_device).to_string();
    if let Some(d) = &s.data_disk {
        t.push_str(match d.bus {
            DiskBus::Usb => " + usb data",
            DiskBus::Nvme => " + nvme data",
        });
    }
    if s.boot_device == BootDevice::Sd && s.sd_wear == SdWear::Off {
        t.push_str(" (sd_wear off)");
    }
    t
}

/// Where the servers' snapshots go, in words.
fn snapshots(p: &piimg::profile::Profile, plans: &[NodePlan]) -> Snapshots {
    let s3 = plans
        .iter()
        .find_map(|n| n.k3s.etcd_s3.as_ref())
        .map(|s| s.describe());
    let mut text = format!(
        "etcd snapshots ({}, {} kept): on each server's own disk",
        p.k3s.etcd_snapshot_schedule, p.k3s.etcd_snapshot_retention
    );
    match &s3 {
        Some(t) => text.push_str(&format!(" and in {t}")),
        None => text.push_str(" only, lost with it (add [k3s.etcd_s3])"),
    }
    Snapshots {
        schedule: p.k3s.etcd_snapshot_schedule.clone(),
        retention: p.k3s.etcd_snapshot_retention,
        s3,
        text,
    }
}

/// What worker cards carry, and the note `plan` prints about it (if any).
fn worker_token(
    state: &secrets::ClusterState,
    secrets_dir: &std::path::Path,
) -> (&'static str, Option<String>) {
    let agent_file = secrets_dir.join(secrets::AGENT_TOKEN_FILE);
    if !state.cluster_exists() || agent_file.exists() {
        return ("agent", None);
    }
    (
        "server",
        Some(format!(
            "{} does not exist: this cluster was created before piimg made an agent token, so its servers run without \
             `agent-token` and worker cards keep carrying the server token (a rebuild changes nothing here). To narrow it: \
             put the same `agent-token: <secret>` in /etc/rancher/k3s/config.yaml on every server, restart them, write \
             <secret> to {} (mode 0600), then rebuild and re-flash the workers (see profiles/README.md)",
            agent_file.display(),
            agent_file.display()
        )),
    )
}

/// What a re-flash of `p` does, in words.
fn reflash_text(p: &NodePlan, action: &FirstBootAction) -> String {
    match (action, p.role) {
        (FirstBootAction::InitCluster, _) => {
            "init cluster again (the only server: the cluster's data is lost)".to_string()
        }
        (FirstBootAction::JoinServers { .. }, _) => format!(
            "{}; removes its stale etcd member first, same node password",
            action.describe()
        ),
        (FirstBootAction::JoinAgent { .. }, _) => {
            format!("{}; same node password", action.describe())
        }
    }
}

/// What the first boot of `p` does, in words: an initialising card waits out its
/// init window first and joins any server of the cluster that answers in it.
fn first_boot_text(p: &NodePlan, init_window_seconds: u64) -> String {
    match &p.first_boot {
        FirstBootAction::InitCluster if p.servers.len() > 1 => format!(
            "{} if no other server answers within {} s (one that does is joined)",
            p.first_boot.describe(),
            init_window_seconds
        ),
        other => other.describe(),
    }
}

/// Runs `piimg plan`.
pub fn run(args: PlanArgs, out: Reporter) -> anyhow::Result<()> {
    let path = &args.profile.profile;
    let p = args.profile.load()?;
    let findings = profile::validate(&p);
    print_findings(&findings, &out);
    if !findings.is_ok() {
        anyhow::bail!("{} has {} error(s)", path.display(), findings.errors.len());
    }
    let state = secrets::peek_state(path)?.unwrap_or_default();
    let secrets_present = secrets::secrets_dir(path).is_dir();
    if state.cluster_exists() && !secrets_present {
        out.warn(format!(
            "{} is missing but the cluster exists: builds will refuse until it is restored",
            secrets::secrets_dir(path).display()
        ));
    }
    let (worker_token, worker_note) = worker_token(&state, &secrets::secrets_dir(path));
    if let Some(note) = worker_note {
        out.warn(note);
    }
    if p.k3s.etcd_s3.is_some() {
        for name in [
            secrets::ETCD_S3_ACCESS_KEY_FILE,
            secrets::ETCD_S3_SECRET_KEY_FILE,
        ] {
            let file = secrets::secrets_dir(path).join(name);
            if !file.is_file() {
                out.warn(format!(
                    "{} is missing: server cards need it for [k3s.etcd_s3] and builds of them will refuse (one line, mode 0600)",
                    file.display()
                ));
            }
        }
    }
    // A key file that cannot be read was warned about above; the plan goes on
    // without its keys.
    let local_keys = keys::resolve_readable(&p, KeySources::Local).context("SSH keys")?;
    let plans = plan::plan_with(&p, &state, local_keys)?;
    let nodes: Vec<Row> = plans
        .iter()
        .map(|n| {
            let reflash = plan::reflash_action(n);
            Row {
                name: n.name.clone(),
                ip: n.network.address,
                role: n.role,
                bootstrap: n.bootstrap,
                hardware: n.hardware.class.clone(),
                board: n.hardware.board.clone(),
                ram_mb: n.hardware.ram_mb,
                issued: state.issued.contains(&n.name),
                first_boot_text: first_boot_text(n, p.k3s.init_window_seconds),
                reflash_text: reflash_text(n, &reflash),
                first_boot: n.first_boot.clone(),
                reflash,
                storage_text: storage_text(&n.storage.card),
                storage: n.storage.card.clone(),
                boot_order: n.storage.boot_order.clone(),
            }
        })
        .collect();
    let doc = Doc {
        profile: path.clone(),
        cluster: p.cluster.name.clone(),
        k3s_version: p.k3s.version.clone().unwrap_or_default(),
        vip: p.k3s.vip,
        cluster_exists: state.cluster_exists(),
        bootstrap_issued: state.bootstrap_issued,
        bootstrap_issued_at: state.bootstrap_issued_at.clone(),
        secrets_present,
        worker_token,
        init_window_seconds: p.k3s.init_window_seconds,
        node_cleaner_days: p.k3s.node_cleaner_days,
        etcd_snapshots: snapshots(&p, &plans),
        nodes,
    };
    match out.mode() {
        OutputMode::Json => out.json(&doc).context("writing JSON")?,
        OutputMode::Quiet => {}
        OutputMode::Human => print_table(&doc, super::table::width(args.wide)),
    }
    Ok(())
}

fn print_table(doc: &Doc, width: Option<usize>) {
    let title = format!(
        "cluster {} · k3s {} · {}{} · workers carry the {} token · server cards: own node-cleaner certificate, {} days",
        doc.cluster,
        doc.k3s_version,
        if doc.bootstrap_issued {
            "cluster brought up before: no card initialises"
        } else {
            "new cluster: the bootstrap server initialises it"
        },
        match &doc.bootstrap_issued_at {
            Some(at) if doc.bootstrap_issued => format!(" (bootstrap card first issued {at})"),
            _ => String::new(),
        },
        doc.worker_token,
        doc.node_cleaner_days
    );
    println!("{}", super::table::wrap_parts(&title, " · ", width));
    let header = [
        "NODE",
        "IP",
        "ROLE",
        "HARDWARE",
        "STORAGE",
        "FIRST BOOT",
        "RE-FLASH",
    ];
    let rows: Vec<[String; 7]> = doc
        .nodes
        .iter()
        .map(|r| {
            let role = match (r.role, r.bootstrap) {
                (Role::Server, true) => "server (bootstrap)".to_string(),
                (Role::Server, false) => "server".to_string(),
                (Role::Agent, _) => "agent".to_string(),
            };
            [
                r.name.clone(),
                r.ip.map_or_else(|| "dhcp".to_string(), |ip| ip.to_string()),
                role,
                r.hardware.clone(),
                r.storage_text.clone(),
                r.first_boot_text.clone(),
                r.reflash_text.clone(),
            ]
        })
        .collect();
    // NODE, IP, ROLE, HARDWARE and STORAGE stay a table; the two long ones move
    // under the row.
    print!("{}", super::table::render(header, &rows, 5, width));
    let mut notes: Vec<String> = Vec::new();
    let disk_boot: Vec<&Row> = doc
        .nodes
        .iter()
        .filter(|r| r.boot_order.is_some())
        .collect();
    if !disk_boot.is_empty() {
        notes.push(
            "boot from a disk: flash the image to it (`piimg flash`, through a USB adapter), then set each board's bootloader once:"
                .to_string(),
        );
        for r in disk_boot {
            if let Some(b) = &r.boot_order {
                notes.push(format!("  {} ({}): {}", r.name, r.board, b.how));
            }
        }
    }
    notes.push(doc.etcd_snapshots.text.clone());
    for note in notes {
        match width {
            Some(w) => {
                let indent = if note.starts_with("  ") {
                    "      "
                } else {
                    "  "
                };
                for l in super::table::wrap_words(
                    &note,
                    w,
                    if note.starts_with("  ") { "  " } else { "" },
                    indent,
                ) {
                    println!("{l}");
                }
            }
            None => println!("{note}"),
        }
    }
}
