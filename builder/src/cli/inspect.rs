//! `piimg inspect`: what is inside an image or card — partitions, labels, release and
//! first-boot mechanism, boot files, cmdline.txt, config.txt, the build manifest and
//! the first-boot agent's status. Reads metadata only, never writes (block devices are
//! opened read-only).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use piimg::image::{
    BootEvidence, BootFs, Image, Partition, PartitionTable, Release, Scheme, VintageMatch,
};
use piimg::manifest::Manifest;
use piimg::progress::{OutputMode, Reporter};
use piimg_contract::{AgentStatus, STATUS_FILE};
use serde::Serialize;

/// Arguments of `piimg inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image file or block device (e.g. out/cp-1.img, /dev/sdb); opened read-only.
    pub image: PathBuf,
}

/// Everything `inspect` found; sections that could not be read carry their error.
#[derive(Debug, Serialize)]
struct Inspection {
    image: PathBuf,
    size: u64,
    table: PartitionTable,
    boot: Option<BootInfo>,
    root: Option<RootInfo>,
    manifest: Option<Manifest>,
    agent_status: Option<AgentStatus>,
    warnings: Vec<String>,
    errors: Vec<String>,
}

#[derive(Debug, Serialize)]
struct BootInfo {
    partition: u32,
    label: String,
    cluster_size: u64,
    free_bytes: u64,
    files: Vec<BootFile>,
    cmdline: Option<String>,
    config: Option<String>,
}

#[derive(Debug, Serialize)]
struct BootFile {
    path: String,
    size: u64,
}

#[derive(Debug, Serialize)]
struct RootInfo {
    partition: u32,
    label: String,
    release: Option<Release>,
    /// The `upstream.toml` vintage the image matches best.
    vintage: Option<VintageMatch>,
}

/// Runs `piimg inspect`.
pub fn run(args: InspectArgs, out: Reporter) -> anyhow::Result<()> {
    let image = Image::open(&args.image)?;
    let mut report = Inspection {
        image: args.image.clone(),
        size: image.size(),
        table: image.table().clone(),
        boot: None,
        root: None,
        manifest: None,
        agent_status: None,
        warnings: image.warnings().to_vec(),
        errors: Vec::new(),
    };
    // What `build` would refuse the image for, as warnings.
    report.warnings.extend(
        piimg::image::sanity::findings(&image)
            .iter()
            .map(ToString::to_string),
    );
    match image.boot() {
        Ok(boot) => read_boot(&boot, &mut report),
        Err(e) => report.errors.push(e.to_string()),
    }
    match image.root() {
        Ok(root) => {
            let release = match root.detect_release() {
                Ok(r) => {
                    if let Err(e) = piimg::image::require_supported_arch(image.path(), &r) {
                        report.warnings.push(e.to_string());
                    }
                    if let Err(e) = piimg::image::choose_first_boot(image.path(), &r, None) {
                        report.warnings.push(e.to_string());
                    }
                    Some(r)
                }
                Err(e) => {
                    report.errors.push(e.to_string());
                    None
                }
            };
            let vintage = release
                .as_ref()
                .and_then(|r| piimg::image::vintage(r, boot_evidence(&report)));
            report.root = Some(RootInfo {
                partition: root.partition().index,
                label: root.label(),
                release,
                vintage,
            });
        }
        Err(e) => report.errors.push(e.to_string()),
    }

    match out.mode() {
        OutputMode::Json => out.json(&report).context("writing JSON")?,
        OutputMode::Human => print!("{}", human(&report)),
        OutputMode::Quiet => {}
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        if out.mode() != OutputMode::Json {
            for e in &report.errors {
                eprintln!("error: {e}");
            }
        }
        anyhow::bail!(
            "{}: {} part(s) of the image could not be read",
            args.image.display(),
            report.errors.len()
        )
    }
}

/// What the boot section read says about the vintage.
fn boot_evidence(report: &Inspection) -> BootEvidence {
    match &report.boot {
        Some(b) => BootEvidence {
            cluster_size: Some(b.cluster_size),
            seed_templates: Some(
                ["user-data", "meta-data", "network-config"]
                    .iter()
                    .any(|s| b.files.iter().any(|f| f.path.eq_ignore_ascii_case(s))),
            ),
        },
        None => BootEvidence::default(),
    }
}

fn read_boot(boot: &BootFs, report: &mut Inspection) {
    let section = || -> Result<BootInfo, piimg::image::ImageError> {
        let files = boot
            .walk("/")?
            .into_iter()
            .map(|(path, size)| BootFile { path, size })
            .collect();
        let text = |p: &str| -> Result<Option<String>, piimg::image::ImageError> {
            Ok(boot
                .read(p)?
                .map(|b| String::from_utf8_lossy(&b).into_owned()))
        };
        Ok(BootInfo {
            partition: boot.partition().index,
            label: boot.label()?,
            cluster_size: boot.cluster_size(),
            free_bytes: boot.free_bytes()?,
            files,
            cmdline: text("cmdline.txt")?,
            config: text("config.txt")?,
        })
    };
    match section() {
        Ok(info) => report.boot = Some(info),
        Err(e) => report.errors.push(e.to_string()),
    }
    match Manifest::read_from(boot) {
        Ok(m) => report.manifest = m,
        Err(e) => report.errors.push(e.to_string()),
    }
    match boot.read(STATUS_FILE) {
        Ok(Some(bytes)) => match AgentStatus::from_json(&String::from_utf8_lossy(&bytes)) {
            Ok(s) => report.agent_status = Some(s),
            Err(e) => report.errors.push(e.to_string()),
        },
        Ok(None) => {}
        Err(e) => report.errors.push(e.to_string()),
    }
}

/// Bytes as a short human figure (binary units).
fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn fs_label(p: &Partition, r: &Inspection) -> String {
    if let Some(b) = r.boot.as_ref().filter(|b| b.partition == p.index) {
        return format!("FAT32 \"{}\"", b.label);
    }
    if let Some(root) = r.root.as_ref().filter(|x| x.partition == p.index) {
        return format!("ext4 \"{}\"", root.label);
    }
    String::new()
}

fn human(r: &Inspection) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} ({} bytes)",
        r.image.display(),
        human_size(r.size),
        r.size
    );
    match &r.table.scheme {
        Scheme::Mbr { disk_id } => {
            let _ = writeln!(s, "partition table: MBR, disk id 0x{disk_id:08x}");
        }
        Scheme::Gpt { disk_guid } => {
            let _ = writeln!(s, "partition table: GPT, disk GUID {disk_guid}");
        }
    }
    let _ = writeln!(
        s,
        "  {:>2}  {:>12}  {:>10}  {:<8}  {:<38}  file system",
        "#", "start", "size", "type", "PARTUUID"
    );
    for p in &r.table.partitions {
        let ty = if p.type_code.len() > 8 {
            format!("{:?}", p.kind).to_lowercase()
        } else {
            p.type_code.clone()
        };
        let _ = writeln!(
            s,
            "  {:>2}  {:>12}  {:>10}  {:<8}  {:<38}  {}",
            p.index,
            p.start,
            human_size(p.size),
            ty,
            p.partuuid,
            fs_label(p, r)
        );
    }
    if let Some(root) = &r.root
        && let Some(rel) = &root.release
    {
        let name = if rel.pretty_name.contains(&rel.codename) {
            rel.pretty_name.clone()
        } else {
            format!("{} ({})", rel.pretty_name, rel.codename)
        };
        let _ = writeln!(s, "release: {}, {}", name.trim(), rel.arch);
        if let Some(v) = &root.vintage {
            let _ = writeln!(s, "vintage: {}", v.line());
        }
        let mechanism = match rel.first_boot {
            Some(piimg::image::FirstBoot::CloudInit) => {
                "cloud-init (NoCloud from the boot partition)"
            }
            Some(piimg::image::FirstBoot::SystemdRun) => "systemd.run= on cmdline.txt",
            None => "none piimg can use (see the warning below)",
        };
        let _ = writeln!(s, "first boot: {mechanism}");
        for sup in &rel.first_boot_support {
            let _ = writeln!(
                s,
                "  supports {}: {}",
                sup.mechanism.name(),
                sup.evidence.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "NetworkManager: {}; default user: {}",
            if rel.network_manager { "yes" } else { "no" },
            rel.default_user()
                .map(|u| u.name.as_str())
                .unwrap_or("(none)")
        );
    }
    if let Some(b) = &r.boot {
        let _ = writeln!(
            s,
            "boot files ({} files, {} free, {}-byte clusters):",
            b.files.len(),
            human_size(b.free_bytes),
            b.cluster_size
        );
        for f in &b.files {
            let _ = writeln!(s, "  {:>10}  {}", f.size, f.path);
        }
        if let Some(c) = &b.cmdline {
            let _ = writeln!(s, "cmdline.txt:\n  {}", c.trim_end());
        }
        if let Some(c) = &b.config {
            let _ = writeln!(s, "config.txt:");
            for line in c
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            {
                let _ = writeln!(s, "  {line}");
            }
        }
    }
    match &r.manifest {
        Some(m) => {
            let _ = writeln!(
                s,
                "built by piimg {} at {}: profile {}, cluster {}, node {}",
                m.piimg_version, m.built_at, m.profile, m.cluster, m.node
            );
            let _ = writeln!(
                s,
                "  base image: {}{}",
                m.base_image.file,
                m.base_image
                    .sha256
                    .as_ref()
                    .map(|h| format!(" (sha256 {h})"))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(s, "manifest: none (not customised by piimg)");
        }
    }
    if let Some(a) = &r.agent_status {
        let _ = writeln!(
            s,
            "first-boot agent on {}: step {} {:?}{}: {} (updated {})",
            a.node_name,
            a.step,
            a.result,
            if a.complete { ", complete" } else { "" },
            a.message,
            a.updated_at
        );
        for st in &a.steps {
            let _ = writeln!(
                s,
                "  {:<16} {:<8} {}",
                st.name,
                format!("{:?}", st.result).to_lowercase(),
                st.message
            );
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}
