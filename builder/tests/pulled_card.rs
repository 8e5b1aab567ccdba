//! `piimg inspect` on a card pulled from a Pi that lost power: an ext4 root that needs
//! its journal replayed, a FAT with its dirty bit, status slots torn mid-write. Images
//! come from scripts/mkimage; the damage is made with the tools that make it for real
//! (debugfs's journal writer, in-place writes at the byte offsets mtools reports) and
//! the outcome is checked against e2fsck's own replay and fsck.vfat.

mod support;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use piimg_contract::status_slots::{
    self, HEADER_SIZE, SLOT_SIZE, SLOTS_FILE_SIZE, STATUS_SLOTS_FILE,
};
use support::*;

fn inspect(args: &[&str], image: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_piimg"))
        .arg("inspect")
        .args(args)
        .arg(image)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `inspect --json`, asserting exit 0 and no unreadable part.
fn inspect_ok(image: &Path) -> serde_json::Value {
    let o = inspect(&["--json"], image);
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status,
        text(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["errors"].as_array().unwrap().is_empty(), "{v:#}");
    v
}

fn warnings(v: &serde_json::Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

// ---- ext4 ------------------------------------------------------------------

/// `debugfs` on the root partition (e2fsprogs' `?offset=`), `-w` when `write`.
fn debugfs(image: &Path, write: bool, script: &str) -> String {
    let (start, _) = partition(image, 2);
    let dir = tempfile::tempdir().unwrap();
    let cmds = dir.path().join("cmds");
    std::fs::write(&cmds, script).unwrap();
    let mut c = Command::new("debugfs");
    if write {
        c.arg("-w");
    }
    run(c
        .arg("-f")
        .arg(&cmds)
        .arg(format!("{}?offset={start}", image.display())))
}

const OS_RELEASE: &str = "/usr/lib/os-release";

/// Leaves one committed journal transaction (debugfs's journal writer) that rewrites
/// os-release's data block so PRETTY_NAME reads "Journal GNU/Linux ..."; with
/// `revoke_after`, a second transaction revokes that block again.
fn journal_os_release(image: &Path, work: &Path, revoke_after: bool) -> String {
    let old = debugfs_cat(image, 2, OS_RELEASE);
    let old = text(&old);
    let new = old.replacen("Debian GNU/Linux", "Journal GNU/Linux", 1);
    assert_ne!(old, new, "{old}");
    let block: u64 = debugfs(image, false, &format!("bmap {OS_RELEASE} 0\n"))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next()
        .unwrap();
    let data = work.join("block");
    let mut bytes = new.clone().into_bytes();
    bytes.resize(4096, 0);
    std::fs::write(&data, bytes).unwrap();
    let mut script = format!("jo\njw -b {block} {}\njc\n", data.display());
    if revoke_after {
        script += &format!("jo\njw -r {block}\njc\n");
    }
    debugfs(image, true, &script);
    new.lines().next().unwrap().to_string()
}

/// What e2fsck's own journal replay makes of the root: os-release's first line after
/// `e2fsck -fy` on a copy of the partition.
fn os_release_after_e2fsck(image: &Path, work: &Path) -> String {
    let (start, size) = partition(image, 2);
    let copy = extract(image, start, size, work);
    let o = Command::new("e2fsck")
        .arg("-fy")
        .arg(&copy)
        .output()
        .unwrap();
    // 0: clean, 1: errors corrected (the replay itself counts).
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "e2fsck: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let cat = run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {OS_RELEASE}"))
        .arg(&copy));
    cat.lines().next().unwrap().to_string()
}

fn pretty_name(v: &serde_json::Value) -> String {
    format!(
        "PRETTY_NAME=\"{}\"",
        v["root"]["release"]["pretty_name"].as_str().unwrap()
    )
}

fn assert_one_unclean_warning(v: &serde_json::Value, partition: &str, how: &str) {
    let w = warnings(v);
    let unclean: Vec<_> = w
        .iter()
        .filter(|w| w.contains("not cleanly unmounted"))
        .collect();
    assert_eq!(unclean.len(), 1, "{w:#?}");
    assert!(
        unclean[0].contains(partition) && unclean[0].contains(how),
        "{}",
        unclean[0]
    );
    assert!(!w.iter().any(|w| w.contains("not an ext4")), "{w:#?}");
}

#[test]
fn a_root_marked_needs_recovery_is_read_with_one_warning() {
    let img = image("trixie", &[]);
    debugfs(&img.path, true, "feature needs_recovery\n");
    assert!(
        debugfs(&img.path, false, "stats\n").contains("needs_recovery"),
        "debugfs did not set the flag"
    );
    let before = sha256_file(&img.path);
    let v = inspect_ok(&img.path);
    assert_eq!(v["root"]["release"]["codename"], "trixie");
    assert_eq!(v["root"]["label"], "rootfs");
    assert_one_unclean_warning(
        &v,
        "partition 2 (the ext4 root)",
        "holds no committed transaction",
    );
    let human = inspect(&[], &img.path);
    assert!(human.status.success());
    let out = text(&human.stdout);
    assert!(
        out.contains("ext4 \"rootfs\"") && out.contains("(trixie)"),
        "{out}"
    );
    assert_eq!(sha256_file(&img.path), before, "inspect wrote to the image");
}

#[test]
fn a_committed_journal_transaction_is_replayed_in_memory_as_e2fsck_replays_it() {
    let img = image("trixie", &[]);
    let work = tempfile::tempdir().unwrap();
    let journaled = journal_os_release(&img.path, work.path(), false);
    // On the card itself the block still holds the old text: only a replay shows it.
    let on_disk = text(&debugfs_cat(&img.path, 2, OS_RELEASE));
    assert!(
        on_disk.starts_with("PRETTY_NAME=\"Debian GNU/Linux"),
        "{on_disk}"
    );
    let before = sha256_file(&img.path);
    let v = inspect_ok(&img.path);
    assert_eq!(pretty_name(&v), journaled);
    assert_eq!(os_release_after_e2fsck(&img.path, work.path()), journaled);
    assert_one_unclean_warning(
        &v,
        "partition 2",
        "replayed in memory, read-only (1 committed",
    );
    assert_eq!(sha256_file(&img.path), before, "inspect wrote to the image");
}

#[test]
fn a_block_revoked_by_a_later_transaction_is_not_replayed() {
    let img = image("trixie", &[]);
    let work = tempfile::tempdir().unwrap();
    journal_os_release(&img.path, work.path(), true);
    let v = inspect_ok(&img.path);
    let expected = os_release_after_e2fsck(&img.path, work.path());
    assert!(expected.contains("Debian GNU/Linux"), "{expected}");
    assert_eq!(pretty_name(&v), expected);
    assert_one_unclean_warning(
        &v,
        "partition 2",
        "(2 committed transaction(s), 0 block(s))",
    );
}

#[test]
fn a_journal_that_cannot_be_replayed_is_read_as_it_is_with_one_warning() {
    let img = image("trixie", &[]);
    let work = tempfile::tempdir().unwrap();
    journal_os_release(&img.path, work.path(), false);
    // Damage the journal superblock's magic: no replay is possible any more.
    let (start, _) = partition(&img.path, 2);
    let jblock: u64 = debugfs(&img.path, false, "bmap <8> 0\n")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next()
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.path)
        .unwrap();
    f.write_all_at(b"XXXX", start + jblock * 4096).unwrap();
    drop(f);
    let v = inspect_ok(&img.path);
    // The block on the card, unreplayed.
    assert!(pretty_name(&v).contains("Debian GNU/Linux"), "{v:#}");
    assert_one_unclean_warning(
        &v,
        "partition 2",
        "could not be replayed (the journal superblock has no JBD2 magic",
    );
}

#[test]
fn a_damaged_journal_never_makes_inspect_panic() {
    // Bytes of the journal's superblock, descriptor, data and commit blocks flipped at
    // pseudo-random places: every outcome is a read with the warning or a clean error.
    let img = image("trixie", &[]);
    let work = tempfile::tempdir().unwrap();
    journal_os_release(&img.path, work.path(), false);
    let (start, _) = partition(&img.path, 2);
    let jblock: u64 = debugfs(&img.path, false, "bmap <8> 0\n")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next()
        .unwrap();
    let at = start + jblock * 4096;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img.path)
        .unwrap();
    let mut original = vec![0u8; 4 * 4096];
    f.read_exact_at(&mut original, at).unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..60 {
        let mut damaged = original.clone();
        for _ in 0..1 + round % 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly the headers and tags, where the parser looks.
            let block = (x >> 20) as usize % 4;
            let byte = (x >> 40) as usize % if round % 2 == 0 { 64 } else { 4096 };
            damaged[block * 4096 + byte] ^= 1 << (x % 8);
        }
        f.write_all_at(&damaged, at).unwrap();
        let o = inspect(&["--json"], &img.path);
        let err = text(&o.stderr);
        assert!(!err.contains("panicked"), "round {round}: {err}");
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "round {round}: {o:?}"
        );
        if o.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert!(
                warnings(&v)
                    .iter()
                    .any(|w| w.contains("not cleanly unmounted")),
                "round {round}: {v:#}"
            );
        }
    }
}

/// The kernel's crc32c(~0, data), as JBD2 stores its superblock checksum.
fn crc32c_raw(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[test]
fn a_journal_with_checksum_v3_tags_is_replayed_too() {
    // The kernel turns on journal_checksum_v3 when it mounts a metadata_csum root (as
    // Raspberry Pi OS's is; torvalds/linux fs/ext4/super.c set_journal_csum_feature_set),
    // so a real pulled card's journal has 16-byte v3 tags.
    let img = image("trixie", &[]);
    let work = tempfile::tempdir().unwrap();
    let (start, _) = partition(&img.path, 2);
    let jblock: u64 = debugfs(&img.path, false, "bmap <8> 0\n")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next()
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img.path)
        .unwrap();
    let at = start + jblock * 4096;
    let mut jsb = vec![0u8; 1024];
    f.read_exact_at(&mut jsb, at).unwrap();
    assert_eq!(jsb[..4], 0xC03B_3998u32.to_be_bytes());
    let incompat = u32::from_be_bytes(jsb[0x28..0x2C].try_into().unwrap()) | 0x10;
    jsb[0x28..0x2C].copy_from_slice(&incompat.to_be_bytes());
    jsb[0x50] = 4; // crc32c
    jsb[0xFC..0x100].fill(0);
    let crc = crc32c_raw(&jsb);
    jsb[0xFC..0x100].copy_from_slice(&crc.to_be_bytes());
    f.write_all_at(&jsb, at).unwrap();
    drop(f);
    let dump = run(Command::new("dumpe2fs")
        .arg("-h")
        .arg(format!("{}?offset={start}", img.path.display())));
    assert!(dump.contains("journal_checksum_v3"), "{dump}");
    let journaled = journal_os_release(&img.path, work.path(), false);
    let v = inspect_ok(&img.path);
    assert_eq!(pretty_name(&v), journaled);
    assert_eq!(os_release_after_e2fsck(&img.path, work.path()), journaled);
}

// ---- FAT -------------------------------------------------------------------

/// Byte offsets of partition 1's boot sector and of its FATs, per `minfo`.
struct FatLayout {
    start: u64,
    sector: u64,
    cluster: u64,
    reserved: u64,
    fats: u64,
    fat_sectors: u64,
}

fn fat_layout(image: &Path) -> FatLayout {
    let (start, _) = partition(image, 1);
    let info = run(Command::new("minfo")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{start}", image.display())));
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|r| {
                r.trim_start_matches([':', '=', ' '])
                    .split_whitespace()
                    .next()
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("minfo has no {name}:\n{info}"))
    };
    let sector = field("sector size");
    FatLayout {
        start,
        sector,
        cluster: field("cluster size") * sector,
        reserved: field("reserved (boot) sectors"),
        fats: field("fats"),
        fat_sectors: field("Big fatlen"),
    }
}

impl FatLayout {
    fn fat(&self, n: u64) -> u64 {
        self.start + (self.reserved + n * self.fat_sectors) * self.sector
    }
    fn cluster_offset(&self, c: u64) -> u64 {
        self.start
            + (self.reserved + self.fats * self.fat_sectors) * self.sector
            + (c - 2) * self.cluster
    }
}

#[test]
fn a_fat_with_its_dirty_bit_set_is_read_with_one_warning() {
    // Microsoft's FAT spec: FAT[1] bit 0x08000000 clear = not cleanly unmounted.
    // Linux's vfat marks the boot sector's state byte (0x41 on FAT32) instead.
    for how in ["fat1", "boot sector"] {
        let img = image("bookworm", &[]);
        let l = fat_layout(&img.path);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img.path)
            .unwrap();
        if how == "fat1" {
            for n in 0..l.fats {
                let mut e = [0u8; 4];
                f.read_exact_at(&mut e, l.fat(n) + 4).unwrap();
                let v = u32::from_le_bytes(e) & !0x0800_0000;
                f.write_all_at(&v.to_le_bytes(), l.fat(n) + 4).unwrap();
            }
        } else {
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, l.start + 0x41).unwrap();
            f.write_all_at(&[b[0] | 1], l.start + 0x41).unwrap();
            let (_, fsck) = fsck_vfat(&img.path, 1);
            assert!(fsck.to_lowercase().contains("dirty bit"), "{fsck}");
        }
        drop(f);
        let v = inspect_ok(&img.path);
        assert_one_unclean_warning(&v, "partition 1 (the FAT boot partition)", "read as it is");
        assert_eq!(v["boot"]["label"], "bootfs", "{how}");
        assert!(
            v["boot"]["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["path"] == "cmdline.txt"),
            "{how}"
        );
    }
}

// ---- status slots ----------------------------------------------------------

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn status(step: &str, result: &str, message: &str, updated: i64) -> Vec<u8> {
    let at = piimg::manifest::rfc3339_utc(updated);
    serde_json::to_vec_pretty(&serde_json::json!({
        "contract_version": 2,
        "node_name": "cp-1",
        "agent_version": "0.1.0",
        "step": step,
        "result": result,
        "message": message,
        "complete": false,
        "started_at": piimg::manifest::rfc3339_utc(updated - 600),
        "updated_at": at,
        "steps": [
            {"name": "hostname", "result": "ok", "message": "set to cp-1", "at": at},
            {"name": step, "result": result, "message": message, "at": at}
        ]
    }))
    .unwrap()
}

/// A card whose boot partition holds a zero-filled status slots file written by mtools
/// (as the builder preallocates it); returns its byte offset in the image, from the
/// cluster chain `mshowfat` reports (one contiguous run).
fn card_with_slots(img: &Path) -> u64 {
    let work = tempfile::tempdir().unwrap();
    let zeros = work.path().join("zeros");
    std::fs::write(&zeros, vec![0u8; SLOTS_FILE_SIZE]).unwrap();
    let (start, _) = partition(img, 1);
    let target = format!("{}@@{start}", img.display());
    let m = |tool: &str, args: &[&str]| {
        run(Command::new(tool)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&target)
            .args(args))
    };
    m("mmd", &["::/piimg"]);
    m(
        "mcopy",
        &[zeros.to_str().unwrap(), &format!("::/{STATUS_SLOTS_FILE}")],
    );
    let chain = m("mshowfat", &[&format!("::/{STATUS_SLOTS_FILE}")]);
    let range = chain
        .split('<')
        .nth(1)
        .and_then(|r| r.split('>').next())
        .unwrap_or_else(|| panic!("{chain}"));
    assert!(!range.contains(','), "not one run of clusters: {chain}");
    let (a, b) = range.split_once('-').unwrap_or((range, range));
    let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
    let l = fat_layout(img);
    assert_eq!((b - a + 1) * l.cluster, SLOTS_FILE_SIZE as u64, "{chain}");
    l.cluster_offset(a)
}

/// Writes `bytes` over the slots file in place at `at`, as the agent does on the card.
fn put_slots(img: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn a_status_write_cut_at_every_sector_of_either_slot_shows_the_newest_valid_report() {
    let img = image("trixie", &[]);
    let at = card_with_slots(&img.path);
    let t = now() - 3600;
    let older = status("hostname", "ok", "set to cp-1", t);
    let newer = status("network", "running", "running", t + 60);
    let newest = status("k3s-install", "running", "running", t + 120);
    // Round 1: A holds write 1, write 2 to B is cut. Round 2: B holds write 2, write 3
    // to A (over write 1) is cut.
    let rounds = [
        (
            0usize,
            1u64,
            &older,
            1usize,
            2u64,
            &newer,
            None::<(u64, &Vec<u8>)>,
        ),
        (1, 2, &newer, 0, 3, &newest, Some((1, &older))),
    ];
    for (valid, vseq, vpayload, torn, tseq, tpayload, previous) in rounds {
        let mut file = vec![0u8; SLOTS_FILE_SIZE];
        file[valid * SLOT_SIZE..][..SLOT_SIZE]
            .copy_from_slice(&status_slots::encode(vseq, vpayload).unwrap());
        if let Some((seq, p)) = previous {
            file[torn * SLOT_SIZE..][..SLOT_SIZE]
                .copy_from_slice(&status_slots::encode(seq, p).unwrap());
        }
        put_slots(&img.path, at, &file);
        assert_eq!(
            mtype(&img.path, 1, STATUS_SLOTS_FILE).unwrap(),
            file,
            "the in-place write did not land in the slots file"
        );
        let new_slot = status_slots::encode(tseq, tpayload).unwrap();
        let complete = HEADER_SIZE + tpayload.len();
        let slot_name = ["A", "B"][torn];
        for cut in (0..=SLOT_SIZE).step_by(512) {
            let mut cut_file = file.clone();
            cut_file[torn * SLOT_SIZE..][..cut].copy_from_slice(&new_slot[..cut]);
            put_slots(&img.path, at, &cut_file);
            let v = inspect_ok(&img.path);
            let (step, seq, slot) = if cut >= complete {
                (tpayload, tseq, torn)
            } else {
                (vpayload, vseq, valid)
            };
            let want: serde_json::Value = serde_json::from_slice(step).unwrap();
            assert_eq!(v["agent_status"], want, "cut at {cut} of slot {slot_name}");
            assert_eq!(v["agent_status_source"]["sequence"], seq, "cut {cut}");
            assert_eq!(
                v["agent_status_source"]["slot"],
                ["A", "B"][slot],
                "cut {cut}"
            );
            let torn_warning = warnings(&v)
                .into_iter()
                .filter(|w| w.contains(&format!("slot {slot_name} (bytes")))
                .collect::<Vec<_>>();
            if cut > 0 && cut < complete {
                assert_eq!(torn_warning.len(), 1, "cut {cut}: {v:#}");
                assert!(
                    torn_warning[0].contains(&format!("write {tseq} is torn")),
                    "{torn_warning:?}"
                );
            } else {
                assert!(torn_warning.is_empty(), "cut {cut}: {torn_warning:?}");
            }
        }
    }
    // Only file contents changed in place: the FAT is as sound as before.
    assert_fat_clean(&img.path, 1);
}

#[test]
fn human_output_shows_the_reports_age_slot_and_the_last_failure_in_full() {
    let img = image("bookworm", &[]);
    let at = card_with_slots(&img.path);
    let failure = "k3s not ready after 300 s\nk3s.service: Main process exited, status=1/FAILURE\n\
                   level=fatal msg=\"starting kubernetes: preparing server: bootstrap data already \
                   found and encrypted with different token\"";
    let updated = now() - 7200;
    let mut file =
        status_slots::encode(1, &status("hostname", "ok", "set to cp-1", updated - 60)).unwrap();
    file.extend(status_slots::encode(2, &status("k3s-ready", "error", failure, updated)).unwrap());
    put_slots(&img.path, at, &file);
    let o = inspect(&[], &img.path);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("step k3s-ready Error: k3s not ready after 300 s"),
        "{out}"
    );
    assert!(out.contains("2 h 0 min ago by the node's clock"), "{out}");
    assert!(
        out.contains(&format!("from {STATUS_SLOTS_FILE} slot B, write 2")),
        "{out}"
    );
    let tail = out
        .split("last failed step: k3s-ready")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    for line in failure.lines() {
        assert!(
            tail.contains(&format!("  {line}\n")),
            "{line} missing:\n{out}"
        );
    }
    let v = inspect_ok(&img.path);
    assert_eq!(v["last_failure"]["message"], failure);
    let age = v["agent_status_source"]["age_secs"].as_i64().unwrap();
    assert!((7200..7200 + 600).contains(&age), "{age}");
}

#[test]
fn a_card_cut_off_mid_provisioning_reads_with_every_warning_and_exit_0() {
    // All three at once, as a real pulled card may have them.
    let img = image("trixie", &[]);
    let at = card_with_slots(&img.path);
    let mut file = status_slots::encode(7, &status("join", "running", "running", now())).unwrap();
    let mut torn = status_slots::encode(8, &status("join", "ok", "joined", now())).unwrap();
    // The cut lands inside the payload (which is longer than 100 bytes).
    torn[HEADER_SIZE + 100..].fill(0);
    file.extend(torn);
    put_slots(&img.path, at, &file);
    let l = fat_layout(&img.path);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img.path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, l.start + 0x41).unwrap();
    f.write_all_at(&[b[0] | 1], l.start + 0x41).unwrap();
    drop(f);
    debugfs(&img.path, true, "feature needs_recovery\n");
    let v = inspect_ok(&img.path);
    let w = warnings(&v);
    assert_eq!(
        w.iter()
            .filter(|w| w.contains("not cleanly unmounted"))
            .count(),
        2,
        "{w:#?}"
    );
    assert!(w.iter().any(|w| w.contains("write 8 is torn")), "{w:#?}");
    assert_eq!(v["agent_status"]["step"], "join");
    assert_eq!(v["agent_status"]["message"], "running");
}
