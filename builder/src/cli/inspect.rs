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
use piimg_contract::status_slots::{self, STATUS_SLOTS_FILE};
use piimg_contract::{AgentStatus, STATUS_FILE, StepRecord, StepResult};
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
    /// The newest valid report of the first-boot agent.
    agent_status: Option<AgentStatus>,
    /// Where it came from and how old it is.
    agent_status_source: Option<StatusSource>,
    /// The last step that failed, with its message in full.
    last_failure: Option<StepRecord>,
    warnings: Vec<String>,
    errors: Vec<String>,
}

/// Where the shown agent status was read and how old it is.
#[derive(Debug, Serialize)]
struct StatusSource {
    /// The card file it was read from.
    file: &'static str,
    /// Status slot (`A`/`B`), for the slots file.
    slot: Option<char>,
    /// The write sequence number of that slot (1 for the agent's first report).
    sequence: Option<u64>,
    /// Seconds between its `updated_at` (the node's clock) and now (this machine's
    /// clock); negative when the node's clock was ahead. `None` if unparsable.
    age_secs: Option<i64>,
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
        agent_status_source: None,
        last_failure: None,
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
            report.warnings.extend(root.warnings().iter().cloned());
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
    match boot.dirty_warning() {
        Ok(Some(w)) => report.warnings.push(w),
        Ok(None) => {}
        Err(e) => report.warnings.push(e.to_string()),
    }
    read_agent_status(boot, report);
}

/// The agent's newest valid report: from the status slots, else (a card built before
/// them) from `status.json`. A damaged report is a warning, never an unreadable part:
/// it is exactly what a power cut leaves behind.
fn read_agent_status(boot: &BootFs, report: &mut Inspection) {
    let slots = match boot.read(STATUS_SLOTS_FILE) {
        Ok(Some(bytes)) => status_slots::read(&bytes),
        Ok(None) => return read_legacy_status(boot, report),
        Err(e) => {
            report.warnings.push(format!(
                "the first-boot agent's status could not be read: {e}"
            ));
            return;
        }
    };
    for p in &slots.problems {
        report.warnings.push(format!(
            "{p}; the other slot's report is shown if it is valid"
        ));
    }
    for slot in &slots.valid {
        match AgentStatus::from_json(&String::from_utf8_lossy(&slot.payload)) {
            Ok(status) => {
                report.agent_status_source = Some(StatusSource {
                    file: STATUS_SLOTS_FILE,
                    slot: Some(status_slots::slot_name(slot.slot)),
                    sequence: Some(slot.sequence),
                    age_secs: age_secs(&status.updated_at),
                });
                set_status(report, status);
                return;
            }
            Err(e) => report.warnings.push(format!(
                "{STATUS_SLOTS_FILE} slot {} (write {}): {e}",
                status_slots::slot_name(slot.slot),
                slot.sequence
            )),
        }
    }
    if !slots.problems.is_empty() {
        report.warnings.push(format!(
            "{STATUS_SLOTS_FILE} holds no valid report of the first-boot agent"
        ));
    }
}

fn read_legacy_status(boot: &BootFs, report: &mut Inspection) {
    let bytes = match boot.read(STATUS_FILE) {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => {
            report.warnings.push(format!(
                "{e} (a card built before power-cut-safe status slots; rebuild it with this piimg)"
            ));
            return;
        }
    };
    match AgentStatus::from_json(&String::from_utf8_lossy(&bytes)) {
        Ok(status) => {
            report.agent_status_source = Some(StatusSource {
                file: STATUS_FILE,
                slot: None,
                sequence: None,
                age_secs: age_secs(&status.updated_at),
            });
            set_status(report, status);
        }
        Err(e) => report.warnings.push(format!(
            "{e} (a card built before power-cut-safe status slots; rebuild it with this piimg)"
        )),
    }
}

fn set_status(report: &mut Inspection, status: AgentStatus) {
    report.last_failure = status
        .steps
        .iter()
        .rev()
        .find(|s| s.result == StepResult::Error)
        .cloned();
    report.agent_status = Some(status);
}

/// Seconds from `rfc3339` (as the agent writes it: `2026-11-24T10:05:00Z`, optional
/// fraction, `Z` or `+00:00`) to now.
fn age_secs(rfc3339: &str) -> Option<i64> {
    let then = parse_rfc3339_utc(rfc3339)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(i64::try_from(now).ok()? - then)
}

/// Seconds since the epoch of a UTC RFC 3339 time.
fn parse_rfc3339_utc(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    if !matches!(rest, "Z" | "z" | "+00:00" | "-00:00")
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || s > 60
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), the inverse of civil_from_days.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

/// An age as a short human figure (`3 min`, `2 h 5 min`, `4 d 3 h`).
fn human_age(secs: i64) -> String {
    let a = secs.unsigned_abs();
    let text = if a < 60 {
        format!("{a} s")
    } else if a < 3600 {
        format!("{} min", a / 60)
    } else if a < 86_400 {
        format!("{} h {} min", a / 3600, a / 60 % 60)
    } else {
        format!("{} d {} h", a / 86_400, a / 3600 % 24)
    };
    if secs < 0 {
        format!("{text} in the future: the node's clock was ahead of this machine's")
    } else {
        format!("{text} ago")
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
        let age = r
            .agent_status_source
            .as_ref()
            .and_then(|src| src.age_secs)
            .map(|secs| format!(", {} by the node's clock", human_age(secs)))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "first-boot agent on {}: step {} {:?}{}: {} (updated {}{age})",
            a.node_name,
            a.step,
            a.result,
            if a.complete { ", complete" } else { "" },
            a.message,
            a.updated_at
        );
        if let Some(src) = &r.agent_status_source
            && let (Some(slot), Some(seq)) = (src.slot, src.sequence)
        {
            let _ = writeln!(s, "  from {} slot {slot}, write {seq}", src.file);
        }
        for st in &a.steps {
            let _ = writeln!(
                s,
                "  {:<16} {:<8} {}",
                st.name,
                format!("{:?}", st.result).to_lowercase(),
                st.message
            );
        }
        if let Some(f) = &r.last_failure {
            let _ = writeln!(s, "last failed step: {} (at {}):", f.name, f.at);
            for line in f.message.lines() {
                let _ = writeln!(s, "  {line}");
            }
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_back_what_the_manifest_writes() {
        for secs in [0, 951_782_400, 1_700_000_000, 1_795_000_123, 4_102_444_800] {
            let text = piimg::manifest::rfc3339_utc(secs);
            assert_eq!(parse_rfc3339_utc(&text), Some(secs), "{text}");
        }
        assert_eq!(
            parse_rfc3339_utc("2023-11-14T22:13:20.123456+00:00"),
            Some(1_700_000_000)
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20+02:00",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(human_age(42), "42 s ago");
        assert_eq!(human_age(7_500), "2 h 5 min ago");
        assert_eq!(human_age(3 * 86_400 + 7_200), "3 d 2 h ago");
        assert!(human_age(-120).starts_with("2 min in the future"));
    }
}
