//! Several cards at once, cards composed on the fly, and the card-swap loop, against
//! scratch loop devices created (and detached) here and files; never a real disk.
//! Every card is checked with independent tools (fsck.vfat, e2fsck, sfdisk) and
//! byte for byte against the image (or `piimg build`'s image) on its mapped ranges.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use piimg::build::{self, BuildRequest, Nodes};
use piimg::flash::{
    self, CardSpec, CardState, FlashError, FlashOptions, Source, SystemView, Target, TargetPolicy,
    target,
};
use piimg::image::{Image, usage};
use piimg::output::write::{WriteOptions, write_image};
use piimg::progress::{OutputMode, Reporter};

mod support;

use support::loopdev::{Loop, loop_available, run};

const MIB: u64 = 1 << 20;
const FORCE: TargetPolicy = TargetPolicy {
    force: true,
    force_file: false,
};
const FILES: TargetPolicy = TargetPolicy {
    force: false,
    force_file: true,
};

// ---------------------------------------------------------------- helpers

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let size = format!("size={mib}m");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &size,
                "tmpfs",
                dir.path().to_str().unwrap(),
            ],
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A card backing file of `len` bytes, every one 0xFF (an erased flash medium).
fn ff_card(dest: &Path, len: u64) {
    use std::io::Write;
    let mut f = File::create(dest).unwrap();
    let block = vec![0xFFu8; 4 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

fn quiet() -> Reporter {
    Reporter::new(OutputMode::Quiet)
}

fn piimg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_piimg"))
}

/// Asserts `card` equals `image` on every range of the image's file-system map (and,
/// when it has one, its `.bmap`), and that both file systems are clean by fsck.
fn assert_card_matches(image: &Path, card: &Path, what: &str) {
    let ranges = usage::used_ranges(&Image::open(image).unwrap()).unwrap();
    assert!(!ranges.is_empty());
    let (a, b) = (File::open(image).unwrap(), File::open(card).unwrap());
    let mut x = vec![0u8; 4 << 20];
    let mut y = vec![0u8; 4 << 20];
    for (start, end) in ranges {
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(x.len());
            a.read_exact_at(&mut x[..n], pos).unwrap();
            b.read_exact_at(&mut y[..n], pos).unwrap();
            if x[..n] != y[..n] {
                let k = x[..n]
                    .iter()
                    .zip(&y[..n])
                    .position(|(p, q)| p != q)
                    .unwrap();
                panic!(
                    "{what}: card differs from the image at byte {}",
                    pos + k as u64
                );
            }
            pos += n as u64;
        }
    }
    let (ok, text) = support::fsck_vfat(card, 1);
    assert!(ok, "{what}: fsck.vfat -n:\n{text}");
    let (ok, text) = support::e2fsck(card, 2);
    assert!(ok, "{what}: e2fsck -fn:\n{text}");
}

/// The node named in the card's manifest (read with mtools, not piimg).
fn manifest_node(card: &Path) -> String {
    let bytes = support::mtype(card, 1, "piimg/manifest.json").expect("a manifest");
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["node"].as_str().unwrap().to_string()
}

/// A directory with the two-node lab profile.
fn lab_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("lab.toml"),
        support::lab_profile(&["192.168.86.1"], "pi4-2gb"),
    )
    .unwrap();
    dir
}

// ---------------------------------------------------------------- several at once

#[test]
fn three_cards_at_once_each_equal_to_the_image_and_clean() {
    if !loop_available() {
        return;
    }
    let img = support::image("bookworm", &[]);
    let len = file_len(&img.path);
    let dir = tempfile::tempdir().unwrap();
    let mut loops = Vec::new();
    for k in 0..3 {
        let backing = dir.path().join(format!("card{k}.bin"));
        ff_card(&backing, len + 4 * MIB);
        loops.push(Loop::new(&backing));
    }
    let (src, _) = Source::open(&img.path).unwrap();
    let targets: Vec<Target> = loops
        .iter()
        .map(|l| target::inspect(&l.dev, src.image_size, &SystemView::host(), FORCE).unwrap())
        .collect();
    let cards: Vec<CardSpec> = targets.iter().map(CardSpec::plain).collect();
    let results = flash::flash_many(&src, &cards, &FlashOptions::default(), &quiet());
    assert_eq!(results.len(), 3);
    for (l, r) in loops.iter().zip(results) {
        let rep = r.unwrap_or_else(|f| panic!("{}: {f}", l.dev.display()));
        assert!(rep.verified);
        assert_eq!(rep.bytes_written, src.mapped_bytes());
        assert_eq!(rep.bytes_verified, src.mapped_bytes());
        assert_card_matches(&img.path, &l.dev, &l.dev.display().to_string());
    }
}

#[test]
fn failing_cards_are_reported_while_the_others_complete() {
    if !loop_available() {
        return;
    }
    let img = support::image("bookworm", &[]);
    let len = file_len(&img.path);
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = Source::open(&img.path).unwrap();
    let view = SystemView::host();
    // Two good cards, one whose read-back will find a flipped byte mid-way.
    let mut good = Vec::new();
    for k in 0..3 {
        let backing = dir.path().join(format!("card{k}.bin"));
        ff_card(&backing, len);
        good.push(Loop::new(&backing));
    }
    // A read-only card: its target claims what a writable one would.
    let ro_backing = dir.path().join("ro.bin");
    ff_card(&ro_backing, len);
    let ro = Loop::with(&ro_backing, &["-r"]);
    // A card that runs out of space mid-way (a sparse file on a small tmpfs).
    let small = Tmpfs::new(8);
    let full = small.dir.path().join("full.img");
    File::create(&full).unwrap().set_len(len).unwrap();

    let mut targets: Vec<Target> = good
        .iter()
        .map(|l| target::inspect(&l.dev, src.image_size, &view, FORCE).unwrap())
        .collect();
    let mut ro_target = targets[0].clone();
    ro_target.path = ro.dev.clone();
    ro_target.resolved = ro.dev.clone();
    targets.push(ro_target);
    targets.push(target::inspect(&full, src.image_size, &view, FILES).unwrap());
    // Flip a byte well inside the root file system's used blocks.
    let flip = usage::used_ranges(&Image::open(&img.path).unwrap())
        .unwrap()
        .into_iter()
        .rev()
        .find(|(s, e)| e - s > 8192)
        .map(|(s, _)| s + 4096)
        .unwrap();
    let cards: Vec<CardSpec> = targets
        .iter()
        .enumerate()
        .map(|(k, t)| CardSpec {
            flip_byte_at: (k == 1).then_some(flip),
            ..CardSpec::plain(t)
        })
        .collect();
    let results = flash::flash_many(&src, &cards, &FlashOptions::default(), &quiet());
    assert_eq!(results.len(), 5);
    let mut it = results.into_iter();
    let ok0 = it.next().unwrap().unwrap();
    assert!(ok0.verified);
    let flipped = it.next().unwrap().unwrap_err();
    assert!(
        matches!(flipped.error, FlashError::VerifyMismatch { offset, .. } if offset == flip),
        "{flipped}"
    );
    assert_eq!(flipped.card, CardState::NoTable);
    let ok2 = it.next().unwrap().unwrap();
    assert!(ok2.verified);
    // A write-protected card: opening it for writing may succeed (root), the first
    // write (erasing its table) is refused; either way it is reported and untouched.
    let ro_fail = it.next().unwrap().unwrap_err();
    assert!(
        matches!(
            ro_fail.error,
            FlashError::Open { .. } | FlashError::Erase { offset: 0, .. }
        ),
        "{ro_fail}"
    );
    let full_fail = it.next().unwrap().unwrap_err();
    assert!(
        matches!(full_fail.error, FlashError::Write { .. }),
        "{full_fail}"
    );
    assert_eq!(full_fail.card, CardState::NoTable);

    assert_card_matches(&img.path, &good[0].dev, "first good card");
    assert_card_matches(&img.path, &good[2].dev, "second good card");
    for failed in [&good[1].dev, &full] {
        let o = Command::new("sfdisk")
            .arg("-d")
            .arg(failed)
            .output()
            .unwrap();
        assert!(
            !o.status.success(),
            "{} still has a table",
            failed.display()
        );
    }
    // The read-only card was never touched.
    let mut b = [0u8; 512];
    File::open(&ro.dev)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    assert!(b.iter().all(|&x| x == 0xFF));
}

#[test]
fn cli_lists_every_refused_device_and_writes_nothing() {
    if !loop_available() {
        return;
    }
    let img = support::image("bookworm", &[]);
    let len = file_len(&img.path);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.bin");
    let small = dir.path().join("small.bin");
    ff_card(&a, len);
    ff_card(&small, len / 2);
    let la = Loop::new(&a);
    let ls = Loop::new(&small);
    let o = piimg()
        .args(["flash", "--yes", "--force"])
        .arg(&img.path)
        .args([&la.dev, &ls.dev, &la.dev])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("2 of 3 device(s) refused"), "{err}");
    assert!(err.contains("too small"), "{err}");
    assert!(err.contains("are the same device"), "{err}");
    assert!(err.contains("nothing was written to any card"), "{err}");
    let mut b = [0u8; 512];
    File::open(&la.dev)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    assert!(b.iter().all(|&x| x == 0xFF), "untouched");
}

#[test]
fn cli_several_cards_json_summary_with_one_failing() {
    if !loop_available() {
        return;
    }
    let img = support::image("bookworm", &[]);
    let len = file_len(&img.path);
    let dir = tempfile::tempdir().unwrap();
    let loops: Vec<Loop> = (0..2)
        .map(|k| {
            let b = dir.path().join(format!("c{k}.bin"));
            ff_card(&b, len);
            Loop::new(&b)
        })
        .collect();
    let flip = usage::used_ranges(&Image::open(&img.path).unwrap())
        .unwrap()
        .into_iter()
        .rev()
        .find(|(s, e)| e - s > 8192)
        .map(|(s, _)| s + 100)
        .unwrap();
    let o = piimg()
        .env("PIIMG_FLASH_TEST_FLIP_OFFSET", flip.to_string())
        .env("PIIMG_FLASH_TEST_FLIP_DEVICE", &loops[1].dev)
        .args(["--json", "flash", "--yes", "--force"])
        .arg(&img.path)
        .args([&loops[0].dev, &loops[1].dev])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cards = v["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 2);
    assert_eq!(cards[0]["ok"], true);
    assert_eq!(cards[0]["verified"], true);
    assert_eq!(cards[0]["target"], loops[0].dev.display().to_string());
    assert_eq!(cards[1]["ok"], false);
    assert_eq!(cards[1]["card"], "no-table");
    assert!(
        cards[1]["error"]
            .as_str()
            .unwrap()
            .contains(&format!("at byte {flip}")),
        "{}",
        cards[1]
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 of 2 card(s) failed"), "{err}");
    assert_card_matches(&img.path, &loops[0].dev, "the card that did not fail");
}

// ---------------------------------------------------------------- composed cards

#[test]
fn composed_cards_equal_builds_images_on_every_mapped_range() {
    let base = support::image("bookworm", &[]);
    let dir = lab_dir();
    let req = BuildRequest {
        base: Some(base.path.clone()),
        offline: true,
        out_dir: dir.path().join("out"),
        ..BuildRequest::new(dir.path().join("lab.toml"), Nodes::All)
    };
    let prepared = build::prepare(&req, &quiet()).unwrap();
    assert_eq!(prepared.jobs.len(), 2);
    let tmp = tempfile::tempdir().unwrap();
    let (src, _) = Source::open(&prepared.base).unwrap();
    let mut patches = Vec::new();
    let mut images = Vec::new();
    for job in &prepared.jobs {
        let written = write_image(
            &prepared.base,
            &job.card,
            &job.extra,
            &req.out_dir,
            &WriteOptions::default(),
            &mut |_, _, _| {},
        )
        .unwrap();
        images.push(written.path);
        patches.push(flash::compose(&prepared.base, &job.card, &job.extra, tmp.path()).unwrap());
    }
    // No file per node: the composed bytes live in unnamed temporary files.
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    // Both cards at once, each with its own boot partition, into 0xFF-filled files.
    let cards_dir = tempfile::tempdir().unwrap();
    let mut targets = Vec::new();
    for k in 0..2 {
        let p = cards_dir.path().join(format!("card{k}.img"));
        ff_card(&p, src.image_size);
        targets.push(target::inspect(&p, src.image_size, &SystemView::host(), FILES).unwrap());
    }
    let cards: Vec<CardSpec> = targets
        .iter()
        .zip(&patches)
        .zip(&prepared.jobs)
        .map(|((t, p), j)| CardSpec {
            patch: Some(p),
            node: Some(&j.card.node),
            ..CardSpec::plain(t)
        })
        .collect();
    let results = flash::flash_many(&src, &cards, &FlashOptions::default(), &quiet());
    for ((r, t), image) in results.into_iter().zip(&targets).zip(&images) {
        let rep = r.unwrap();
        assert!(rep.verified);
        assert_card_matches(image, &t.path, &t.path.display().to_string());
        // (Not on build's .bmap ranges: they are whole 4 KiB blocks, and a 2 KiB
        // FAT cluster that is free may share a block with a used one; the card
        // holds 0xFF there, build's image whatever the base had. Every byte the file
        // systems need is compared above.)
    }
    assert_eq!(manifest_node(&targets[0].path), "pi5-master-1");
    assert_eq!(manifest_node(&targets[1].path), "pi4-worker-1");
}

#[test]
fn cli_flash_all_composes_each_node_as_build_writes_it() {
    if !loop_available() {
        return;
    }
    let base = support::image("bookworm", &[]);
    let dir = lab_dir();
    let cache = dir.path().join("cache");
    let common = |c: &mut Command| {
        c.current_dir(dir.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("PIIMG_CACHE", &cache)
            .env_remove("PIIMG_PROFILE");
    };
    let len = file_len(&base.path);
    let loops: Vec<Loop> = (0..2)
        .map(|k| {
            let b = dir.path().join(format!("c{k}.bin"));
            ff_card(&b, len + MIB);
            Loop::new(&b)
        })
        .collect();
    // build first (it records both cards as issued, which their manifests reflect),
    // then flash with the same secrets, state and time: the worker's card is
    // byte-identical to build's image on every mapped range (a server's card differs
    // only in its per-build node-cleaner certificate: its file systems are checked).
    let mut c = piimg();
    common(&mut c);
    let o = c
        .args([
            "-q",
            "build",
            "--profile",
            "lab.toml",
            "--offline",
            "--all",
            "--base",
        ])
        .arg(&base.path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out_files = fs::read_dir(dir.path().join("out")).unwrap().count();
    let mut c = piimg();
    common(&mut c);
    let o = c
        .args([
            "--json",
            "flash",
            "--profile",
            "lab.toml",
            "--offline",
            "--yes",
            "--force",
            "--all",
            "--base",
        ])
        .arg(&base.path)
        .args([&loops[0].dev, &loops[1].dev])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cards"][0]["node"], "pi5-master-1");
    assert_eq!(v["cards"][1]["node"], "pi4-worker-1");
    assert_eq!(v["cards"][1]["ok"], true);
    assert_eq!(
        fs::read_dir(dir.path().join("out")).unwrap().count(),
        out_files,
        "flash wrote no image file"
    );
    let worker = dir.path().join("out/pi4-worker-1.img");
    assert_card_matches(&worker, &loops[1].dev, "pi4-worker-1");
    assert_eq!(manifest_node(&loops[0].dev), "pi5-master-1");
    let (ok, text) = support::fsck_vfat(&loops[0].dev, 1);
    assert!(ok, "{text}");
    let (ok, text) = support::e2fsck(&loops[0].dev, 2);
    assert!(ok, "{text}");
}

#[test]
fn cli_node_count_must_match_devices() {
    let dir = lab_dir();
    let o = piimg()
        .current_dir(dir.path())
        .env_remove("PIIMG_PROFILE")
        .args([
            "flash",
            "--profile",
            "lab.toml",
            "--offline",
            "--yes",
            "--force-file",
            "--all",
            "--base",
            "/nonexistent.img",
            "x.img",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    // The base is checked first; with a base the count is.
    assert!(err.contains("/nonexistent.img"), "{err}");
    let base = support::image("bookworm", &[]);
    let o = piimg()
        .current_dir(dir.path())
        .env_remove("PIIMG_PROFILE")
        .args([
            "flash",
            "--profile",
            "lab.toml",
            "--offline",
            "--yes",
            "--force-file",
            "--all",
            "--base",
        ])
        .arg(&base.path)
        .arg("x.img")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("2 node(s) (pi5-master-1, pi4-worker-1) but 1 DEVICE(s)"),
        "{err}"
    );
    assert!(err.contains("--swap"), "{err}");
    assert!(!dir.path().join("x.img").exists());
}

// ---------------------------------------------------------------- card-swap loop

/// A running `piimg flash --swap` whose stderr lines arrive on a channel.
struct Swap {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Swap {
    fn start(dir: &Path, base: &Path, cards: &Path) -> Swap {
        let mut child = piimg()
            .current_dir(dir)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("PIIMG_CACHE", dir.join("cache"))
            .env("PIIMG_FLASH_TEST_REMOVABLE_UNDER", cards)
            .env_remove("PIIMG_PROFILE")
            .args([
                "flash",
                "--profile",
                "lab.toml",
                "--offline",
                "--yes",
                "--all",
                "--swap",
                "--base",
            ])
            .arg(base)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Swap {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 3 minutes) for a line containing `want`.
    fn expect(&mut self, want: &str) -> String {
        let until = Instant::now() + Duration::from_secs(180);
        while Instant::now() < until {
            match self.lines.recv_timeout(Duration::from_secs(1)) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(want) {
                        return l;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.child.kill();
        panic!("no line with {want:?}; seen:\n{}", self.seen.join("\n"));
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn swap_loop_flashes_each_inserted_card_and_never_rewrites_a_done_one() {
    if !loop_available() {
        return;
    }
    let base = support::image("bookworm", &[]);
    let dir = lab_dir();
    let cards = dir.path().join("cards");
    fs::create_dir(&cards).unwrap();
    let len = file_len(&base.path) + MIB;
    let (a, b) = (cards.join("a.bin"), cards.join("b.bin"));
    ff_card(&a, len);
    ff_card(&b, len);
    // A disk that is no card (not under the removable stand-in's directory) appearing
    // meanwhile is left alone.
    let other = dir.path().join("other.bin");
    ff_card(&other, len);

    let mut swap = Swap::start(dir.path(), &base.path, &cards);
    swap.expect("insert a card for pi5-master-1 (1 of 2)");
    let lo_other = Loop::new(&other);
    let lo_a = Loop::new(&a);
    let line = swap.expect("becomes pi5-master-1");
    assert!(line.contains(&lo_a.dev.display().to_string()), "{line}");
    swap.expect("write \"pi5-master-1\" on this card");
    swap.expect("insert a card for pi4-worker-1 (2 of 2)");
    // The same card removed and inserted again is not rewritten.
    let a_dev = lo_a.dev.clone();
    drop(lo_a);
    std::thread::sleep(Duration::from_secs(1));
    let lo_a = Loop::new(&a);
    let line = swap.expect("already holds pi5-master-1, flashed in this run");
    assert!(
        line.contains(&lo_a.dev.display().to_string()),
        "{line} ({a_dev:?})"
    );
    let lo_b = Loop::new(&b);
    swap.expect("write \"pi4-worker-1\" on this card");
    swap.expect("every node has its card");
    let status = swap.child.wait().unwrap();
    assert!(status.success(), "{}", swap.seen.join("\n"));
    assert!(
        !swap
            .seen
            .iter()
            .any(|l| l.contains(&lo_other.dev.display().to_string())),
        "{}",
        swap.seen.join("\n")
    );
    assert_eq!(manifest_node(&lo_a.dev), "pi5-master-1");
    assert_eq!(manifest_node(&lo_b.dev), "pi4-worker-1");
    for d in [&lo_a.dev, &lo_b.dev] {
        let (ok, text) = support::fsck_vfat(d, 1);
        assert!(ok, "{text}");
        let (ok, text) = support::e2fsck(d, 2);
        assert!(ok, "{text}");
    }
    let mut o = [0u8; 512];
    File::open(&lo_other.dev)
        .unwrap()
        .read_exact_at(&mut o, 0)
        .unwrap();
    assert!(
        o.iter().all(|&x| x == 0xFF),
        "the other disk was not touched"
    );
}

#[test]
fn swap_loop_stops_cleanly_on_ctrl_c_between_cards() {
    let base = support::image("bookworm", &[]);
    let dir = lab_dir();
    let cards = dir.path().join("cards");
    fs::create_dir(&cards).unwrap();
    let mut swap = Swap::start(dir.path(), &base.path, &cards);
    swap.expect("insert a card for pi5-master-1");
    // SAFETY: sending SIGINT to our own child process.
    unsafe {
        libc::kill(swap.child.id() as libc::pid_t, libc::SIGINT);
    }
    let line = swap.expect("stopped: 0 of 2 node(s) flashed");
    assert!(
        line.contains("not yet: pi5-master-1, pi4-worker-1"),
        "{line}"
    );
    let status = swap.child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
}
