//! `piimg fetch` / `piimg cache` against a real HTTP server on 127.0.0.1 serving
//! generated images compressed like the official ones (xz -T0, multi-block).

#[allow(dead_code)]
#[path = "fetch_support/fixtures.rs"]
mod fixtures;
#[path = "fetch_support/server.rs"]
mod server;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fixtures::{BOOKWORM_PATH, TRIXIE_PATH, bookworm, sha, standard, trixie};
use piimg::fetch::{
    self, Cache, FetchError, FetchOptions, NetOptions, ReleaseChoice, Source, ensure_base,
};
use piimg::progress::{OutputMode, Reporter};
use server::{Fault, Server};

fn quiet() -> Reporter {
    Reporter::new(OutputMode::Quiet)
}

fn opts(list_url: &str, cache: &Path) -> FetchOptions {
    FetchOptions {
        source: Source::OsList {
            url: list_url.to_string(),
        },
        release: ReleaseChoice::Latest,
        cache_dir: cache.to_path_buf(),
        offline: false,
        net: NetOptions {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_millis(10),
            stall_window: Duration::from_secs(60),
        },
        bmap_url: None,
    }
}

/// Every file under `dir` (recursively), except lock files.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.extension().is_none_or(|x| x != "lock") {
            out.push(p.display().to_string());
        }
    }
    out
}

fn assert_nothing_cached(cache: &Path) {
    assert!(Cache::new(cache).list().unwrap().is_empty());
    assert_eq!(files(cache), Vec::<String>::new(), "leftovers in the cache");
}

fn piimg(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_piimg"));
    c.env("PIIMG_CACHE", cache).env_remove("PIIMG_OS_LIST_URL");
    c
}

#[test]
fn fetches_verifies_and_caches_a_multi_block_image() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();

    // The fixture is multi-block, as the official images are.
    let xz_file = dir.path().join("t.img.xz");
    std::fs::write(&xz_file, &trixie().xz).unwrap();
    let robot = Command::new("xz")
        .args(["--robot", "-l"])
        .arg(&xz_file)
        .output()
        .unwrap();
    let robot = String::from_utf8(robot.stdout).unwrap();
    let totals = robot.lines().find(|l| l.starts_with("totals")).unwrap();
    let blocks: u64 = totals.split('\t').nth(2).unwrap().parse().unwrap();
    assert!(blocks >= 8, "{robot}");

    let cache = dir.path().join("cache");
    let f = fetch::fetch(&opts(&list, &cache), &quiet()).unwrap();
    assert!(f.downloaded);
    assert_eq!(f.resumed_from, 0);
    let img = &f.image;
    assert_eq!(img.release, "trixie");
    assert_eq!(img.release_date, "2026-10-01");
    assert_eq!(img.name, "Raspberry Pi OS Lite (64-bit)");
    assert_eq!(img.init_format.as_deref(), Some("cloudinit-rpi"));
    assert_eq!(img.sha256, trixie().raw_sha);
    assert_eq!(img.download_sha256, trixie().xz_sha);
    let got = std::fs::read(&img.path).unwrap();
    assert_eq!(sha(&got), trixie().raw_sha);
    // No bmap in this list: the image is dense, its 2 MiB zero region included
    // (a zero block may matter; only a bmap may say otherwise).
    assert_dense(&img.path);
    assert_eq!(img.bmap, None);
    // No partial download left; one cache entry.
    assert_eq!(files(&cache.join("partial")), Vec::<String>::new());
    assert_eq!(Cache::new(&cache).list().unwrap(), vec![img.clone()]);
    // The cache's metadata on disk records the OS list's init_format with the image.
    let meta = cache
        .join("images")
        .join(format!("{}.json", trixie().xz_sha));
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(meta["init_format"], "cloudinit-rpi", "{meta}");
    let reqs = server.requests(TRIXIE_PATH);
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].range.is_none());

    // Fetching again uses the cache and downloads nothing.
    let again = fetch::fetch(&opts(&list, &cache), &quiet()).unwrap();
    assert!(!again.downloaded);
    assert_eq!(again.image, *img);
    assert_eq!(server.requests(TRIXIE_PATH).len(), 1);
}

#[test]
fn release_choice_reaches_the_legacy_submenu_via_subitems_url() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&list, dir.path());
    o.release = ReleaseChoice::Named("bookworm".into());
    let f = fetch::fetch(&o, &quiet()).unwrap();
    assert_eq!(f.image.release, "bookworm");
    assert_eq!(f.image.name, "Raspberry Pi OS (Legacy, 64-bit) Lite");
    assert_eq!(
        sha(&std::fs::read(&f.image.path).unwrap()),
        bookworm().raw_sha
    );
    assert!(server.requests(TRIXIE_PATH).is_empty());

    o.release = ReleaseChoice::Named("bullseye".into());
    let err = fetch::fetch(&o, &quiet()).unwrap_err().to_string();
    assert!(
        err.contains("no Raspberry Pi OS Lite (64-bit) image for release bullseye"),
        "{err}"
    );
    assert!(
        err.contains("trixie (2026-10-01)") && err.contains("bookworm (2025-05-13)"),
        "{err}"
    );
    assert!(err.contains(&list), "{err}");
}

#[test]
fn http_404_names_the_url_and_status() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // The list itself is missing.
    let missing = server.url("/nope.json");
    let err = fetch::fetch(&opts(&missing, dir.path()), &quiet()).unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 404, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&missing) && msg.contains("HTTP 404"), "{msg}");

    // The image is missing.
    let list = standard(&server);
    server.put(TRIXIE_PATH, Vec::new());
    server.fault(TRIXIE_PATH, Fault::Status(404));
    let msg = fetch::fetch(&opts(&list, dir.path()), &quiet())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&server.url(TRIXIE_PATH)) && msg.contains("HTTP 404"),
        "{msg}"
    );
    assert_eq!(server.requests(TRIXIE_PATH).len(), 1, "404 is not retried");
    assert!(Cache::new(dir.path()).list().unwrap().is_empty());
}

#[test]
fn http_500_is_retried_then_reported_with_url_and_status() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();
    // One transient failure: retried, succeeds.
    server.fault(TRIXIE_PATH, Fault::Status(503));
    let f = fetch::fetch(&opts(&list, dir.path()), &quiet()).unwrap();
    assert_eq!(f.image.sha256, trixie().raw_sha);
    assert_eq!(server.requests(TRIXIE_PATH).len(), 2);

    // Persistent 500: gives up after the retries, naming URL and status.
    let dir2 = tempfile::tempdir().unwrap();
    for _ in 0..4 {
        server.fault(TRIXIE_PATH, Fault::Status(500));
    }
    let err = fetch::fetch(&opts(&list, dir2.path()), &quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&server.url(TRIXIE_PATH)), "{err}");
    assert!(
        err.contains("HTTP 500") && err.contains("4 attempts"),
        "{err}"
    );
    assert!(Cache::new(dir2.path()).list().unwrap().is_empty());
}

#[test]
fn connection_closed_mid_body_resumes_with_a_range_request() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();
    server.fault(TRIXIE_PATH, Fault::CloseAfter(300_000));
    let f = fetch::fetch(&opts(&list, dir.path()), &quiet()).unwrap();
    assert_eq!(f.image.sha256, trixie().raw_sha);
    assert_eq!(
        sha(&std::fs::read(&f.image.path).unwrap()),
        trixie().raw_sha
    );
    let reqs = server.requests(TRIXIE_PATH);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=300000-"));
    assert_eq!(f.download_size, trixie().xz.len() as u64);
}

#[test]
fn server_ignoring_range_restarts_cleanly() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();
    server.fault(TRIXIE_PATH, Fault::CloseAfter(300_000));
    server.fault(TRIXIE_PATH, Fault::IgnoreRange);
    let f = fetch::fetch(&opts(&list, dir.path()), &quiet()).unwrap();
    assert_eq!(f.image.sha256, trixie().raw_sha);
    assert_eq!(
        sha(&std::fs::read(&f.image.path).unwrap()),
        trixie().raw_sha
    );
    let reqs = server.requests(TRIXIE_PATH);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[1].range.is_some());
}

#[test]
fn a_server_ignoring_range_and_dropping_every_connection_is_given_up_on() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();
    // Every request: the whole file from byte 0, cut after 300 kB. Progress within
    // one attempt never gets past the last one, so it must not renew the budget.
    for _ in 0..200 {
        server.fault(TRIXIE_PATH, Fault::IgnoreRangeCloseAfter(300_000));
    }
    let o = opts(&list, dir.path());
    let retries = o.net.retries;
    let e = fetch::fetch(&o, &quiet()).unwrap_err().to_string();
    assert!(
        e.contains("the server ignores Range requests and closed the connection")
            && e.contains(
                "try another mirror, or download the file another way and use `piimg fetch --file`"
            ),
        "{e}"
    );
    let reqs = server.requests(TRIXIE_PATH).len();
    assert!(
        reqs <= retries as usize + 2,
        "{reqs} requests for a retry budget of {retries}"
    );
}

#[test]
fn failures_without_progress_end_at_the_stall_window_whatever_the_retry_count() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..500 {
        server.fault(TRIXIE_PATH, Fault::Status(503));
    }
    let mut o = opts(&list, dir.path());
    o.net.retries = 400;
    o.net.stall_window = Duration::from_secs(1);
    let e = fetch::fetch(&o, &quiet()).unwrap_err().to_string();
    assert!(e.contains("giving up after") && e.contains("503"), "{e}");
    let reqs = server.requests(TRIXIE_PATH).len();
    assert!(reqs < 20, "{reqs} requests within a 1 s stall window");
}

#[test]
fn mismatched_content_range_starts_over() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();
    server.fault(TRIXIE_PATH, Fault::CloseAfter(300_000));
    server.fault(TRIXIE_PATH, Fault::WrongContentRange);
    let f = fetch::fetch(&opts(&list, dir.path()), &quiet()).unwrap();
    assert_eq!(
        sha(&std::fs::read(&f.image.path).unwrap()),
        trixie().raw_sha
    );
    let reqs = server.requests(TRIXIE_PATH);
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(reqs[1].range.is_some());
    assert_eq!(
        reqs[2].range, None,
        "after a bad Content-Range, start from byte 0"
    );
}

#[test]
fn a_second_fetch_continues_an_interrupted_one() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&list, dir.path());
    o.net.retries = 0;
    server.fault(TRIXIE_PATH, Fault::CloseAfter(300_000));
    let err = fetch::fetch(&o, &quiet()).unwrap_err().to_string();
    assert!(err.contains("run again to resume"), "{err}");
    let partial = dir
        .path()
        .join(format!("partial/{}.img.xz.part", trixie().xz_sha));
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 300_000);
    assert!(Cache::new(dir.path()).list().unwrap().is_empty());

    let f = fetch::fetch(&o, &quiet()).unwrap();
    assert_eq!(f.resumed_from, 300_000);
    assert_eq!(f.download_size, trixie().xz.len() as u64 - 300_000);
    assert_eq!(
        sha(&std::fs::read(&f.image.path).unwrap()),
        trixie().raw_sha
    );
    assert_eq!(
        server.requests(TRIXIE_PATH)[1].range.as_deref(),
        Some("bytes=300000-")
    );
    assert!(!partial.exists());
}

/// Writes an OS list for the trixie image with some fields replaced.
fn list_with(server: &Server, patch: serde_json::Value) -> String {
    server.put(TRIXIE_PATH, trixie().xz.clone());
    let mut e = fixtures::entry(
        server,
        "Raspberry Pi OS Lite (64-bit)",
        TRIXIE_PATH,
        "2026-10-01",
        trixie(),
    );
    for (k, v) in patch.as_object().unwrap() {
        e[k] = v.clone();
    }
    let list = serde_json::json!({"os_list": [e]});
    server.put("/patched.json", list.to_string().into_bytes());
    server.url("/patched.json")
}

#[test]
fn download_hash_mismatch_shows_both_hashes_and_caches_nothing() {
    let server = Server::start();
    let wrong = "ab".repeat(32);
    let list = list_with(&server, serde_json::json!({"image_download_sha256": wrong}));
    let dir = tempfile::tempdir().unwrap();
    let err = fetch::fetch(&opts(&list, dir.path()), &quiet()).unwrap_err();
    assert!(
        matches!(err, FetchError::DownloadMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&wrong) && msg.contains(&trixie().xz_sha),
        "{msg}"
    );
    assert!(msg.contains(&server.url(TRIXIE_PATH)), "{msg}");
    assert_nothing_cached(dir.path());
}

#[test]
fn extracted_hash_mismatch_caches_nothing() {
    let server = Server::start();
    let wrong = "cd".repeat(32);
    let list = list_with(&server, serde_json::json!({"extract_sha256": wrong}));
    let dir = tempfile::tempdir().unwrap();
    let err = fetch::fetch(&opts(&list, dir.path()), &quiet()).unwrap_err();
    assert!(matches!(err, FetchError::ExtractMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&wrong) && msg.contains(&trixie().raw_sha),
        "{msg}"
    );
    assert_nothing_cached(dir.path());
}

#[test]
fn more_bytes_than_declared_is_refused() {
    let server = Server::start();
    let list = list_with(&server, serde_json::json!({"image_download_size": 100_000}));
    let dir = tempfile::tempdir().unwrap();
    let msg = fetch::fetch(&opts(&list, dir.path()), &quiet())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("more than the 100000 bytes"), "{msg}");
    assert_nothing_cached(dir.path());
}

#[test]
fn truncated_xz_is_reported_and_nothing_cached() {
    let server = Server::start();
    let xz = &trixie().xz;
    let cut = xz[..xz.len() / 2].to_vec();
    let cut_sha = sha(&cut);
    server.put("/cut.img.xz", cut);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts("unused", dir.path());
    o.source = Source::Direct {
        url: server.url("/cut.img.xz"),
        sha256: cut_sha,
    };
    let err = fetch::fetch(&o, &quiet()).unwrap_err();
    assert!(matches!(err, FetchError::Xz { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("truncated") && msg.contains("/cut.img.xz"),
        "{msg}"
    );
    assert_nothing_cached(dir.path());

    // Not xz at all.
    let junk = b"<html>captive portal</html>".repeat(100);
    let junk_sha = sha(&junk);
    server.put("/junk.img.xz", junk);
    o.source = Source::Direct {
        url: server.url("/junk.img.xz"),
        sha256: junk_sha,
    };
    let msg = fetch::fetch(&o, &quiet()).unwrap_err().to_string();
    assert!(msg.contains("not .xz data"), "{msg}");
    assert_nothing_cached(dir.path());
}

#[test]
fn direct_url_with_sha256_bypasses_the_list() {
    let server = Server::start();
    server.put(
        "/custom/2026-10-01-raspios-trixie-arm64-lite.img.xz",
        trixie().xz.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&server.url("/no-list-here.json"), dir.path());
    o.source = Source::Direct {
        url: server.url("/custom/2026-10-01-raspios-trixie-arm64-lite.img.xz"),
        sha256: trixie().xz_sha.to_uppercase(),
    };
    let f = fetch::fetch(&o, &quiet()).unwrap();
    assert_eq!(f.image.sha256, trixie().raw_sha);
    assert_eq!(f.image.release, "trixie");
    assert!(server.requests("/no-list-here.json").is_empty());

    o.source = Source::Direct {
        url: server.url("/x.img.xz"),
        sha256: "1234".into(),
    };
    let msg = fetch::fetch(&o, &quiet()).unwrap_err().to_string();
    assert!(
        msg.contains("--sha256") && msg.contains("64-digit"),
        "{msg}"
    );
}

#[test]
fn malformed_os_list_or_one_without_lite_arm64_is_a_clear_error() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    server.put("/bad.json", b"{\"os_list\": [ {\"name\": ".to_vec());
    let url = server.url("/bad.json");
    let msg = fetch::fetch(&opts(&url, dir.path()), &quiet())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&url) && msg.contains("not valid JSON") && msg.contains("line 1"),
        "{msg}"
    );

    server.put("/obj.json", b"{\"imager\": {}}".to_vec());
    let url = server.url("/obj.json");
    let msg = fetch::fetch(&opts(&url, dir.path()), &quiet())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no `os_list` array"), "{msg}");

    let list = serde_json::json!({"os_list": [
        {"name": "Raspberry Pi OS (64-bit)", "url": server.url("/2026-10-01-raspios-trixie-arm64.img.xz")},
        {"name": "Raspberry Pi OS Lite (32-bit)", "url": server.url("/2026-10-01-raspios-trixie-armhf-lite.img.xz")},
    ]});
    server.put("/nolite.json", list.to_string().into_bytes());
    let url = server.url("/nolite.json");
    let msg = fetch::fetch(&opts(&url, dir.path()), &quiet())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("has no Raspberry Pi OS Lite (64-bit) image") && msg.contains("found: none"),
        "{msg}"
    );
    assert!(msg.contains("--url URL --sha256 HEX"), "{msg}");

    // A Lite entry with a broken hash field names the field.
    let list = list_with(&server, serde_json::json!({"extract_sha256": "nope"}));
    let msg = fetch::fetch(&opts(&list, dir.path()), &quiet())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`extract_sha256`") && msg.contains("Raspberry Pi OS Lite (64-bit)"),
        "{msg}"
    );
    assert_nothing_cached(dir.path());
}

/// A small tmpfs, unmounted when dropped (the tests run as root).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let d = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "piimg-test"])
            .arg(d.path())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs needs root (the test environment has it)"
        );
        Self(d)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn disk_full_while_decompressing_is_clear_and_leaves_nothing() {
    let server = Server::start();
    let list = standard(&server);
    // Room for the 1 MiB download, not for the 8 MiB image.
    let fs = Tmpfs::mount("3m");
    let err = fetch::fetch(&opts(&list, fs.0.path()), &quiet()).unwrap_err();
    assert!(matches!(err, FetchError::DiskFull { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no space left on device while writing the decompressed image"),
        "{msg}"
    );
    assert!(
        msg.contains(&fs.0.path().display().to_string())
            && msg.contains("MiB download and a 8 MiB image)"),
        "{msg}"
    );
    assert_nothing_cached(fs.0.path());
}

#[test]
fn disk_full_with_a_direct_url_counts_the_download_the_server_announced() {
    let server = Server::start();
    let fs = Tmpfs::mount("3m");
    let mut o = opts("unused", fs.0.path());
    o.source = Source::Direct {
        url: server.url(TRIXIE_PATH),
        sha256: sha(&trixie().xz),
    };
    standard(&server);
    let err = fetch::fetch(&o, &quiet()).unwrap_err();
    assert!(matches!(err, FetchError::DiskFull { .. }), "{err:?}");
    let msg = err.to_string();
    let mib = (trixie().xz.len() as u64).div_ceil(1 << 20);
    assert!(
        msg.contains(&format!(
            "needs more than {mib} MiB free (the {mib} MiB download, plus the decompressed image"
        )),
        "{msg}"
    );
    assert!(!msg.contains(" 0 MiB"), "{msg}");
    assert_nothing_cached(fs.0.path());
}

#[test]
fn two_concurrent_fetches_of_one_image_download_it_once() {
    let server = Server::start();
    let list = standard(&server);
    server.throttle(Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&list, dir.path());
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| fetch::fetch(&o, &quiet()));
        let b = s.spawn(|| fetch::fetch(&o, &quiet()));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert_eq!(a.image, b.image);
    assert!(
        a.downloaded != b.downloaded,
        "exactly one of them downloads"
    );
    assert_eq!(server.requests(TRIXIE_PATH).len(), 1);
    assert_eq!(
        sha(&std::fs::read(&a.image.path).unwrap()),
        trixie().raw_sha
    );
    assert_eq!(Cache::new(dir.path()).list().unwrap().len(), 1);
}

#[test]
fn offline_uses_only_the_cache_and_says_what_is_missing() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&list, dir.path());
    o.offline = true;
    let err = ensure_base(&o, &quiet()).unwrap_err();
    assert!(matches!(err, FetchError::Offline { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no cached Raspberry Pi OS Lite (64-bit) image"),
        "{msg}"
    );
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains("run `piimg fetch`") && msg.contains("--base FILE"),
        "{msg}"
    );
    o.release = ReleaseChoice::Named("bookworm".into());
    let msg = ensure_base(&o, &quiet()).unwrap_err().to_string();
    assert!(
        msg.contains("for release bookworm") && msg.contains("`piimg fetch --release bookworm`"),
        "{msg}"
    );
    assert!(
        server.requests("/os_list.json").is_empty(),
        "offline touched the network"
    );

    // Online, ensure_base fetches; then offline finds it without the network.
    o.offline = false;
    o.release = ReleaseChoice::Latest;
    let fetched = ensure_base(&o, &quiet()).unwrap();
    assert_eq!(fetched.release, "trixie");
    let n = server.requests("/os_list.json").len();
    o.offline = true;
    assert_eq!(ensure_base(&o, &quiet()).unwrap(), fetched);
    o.offline = false;
    assert_eq!(
        ensure_base(&o, &quiet()).unwrap(),
        fetched,
        "a cached image is used as is"
    );
    assert_eq!(server.requests("/os_list.json").len(), n);

    // The CLI says the same.
    let empty = tempfile::tempdir().unwrap();
    let out = piimg(empty.path())
        .args(["fetch", "--offline", "--os-list", &list])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("offline: no cached") && stderr.contains("--base FILE"),
        "{stderr}"
    );
}

#[test]
fn cache_list_and_prune_from_the_command_line() {
    let server = Server::start();
    let list = standard(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path();
    let mut o = opts(&list, cache);
    fetch::fetch(&o, &quiet()).unwrap();
    o.release = ReleaseChoice::Named("bookworm".into());
    fetch::fetch(&o, &quiet()).unwrap();
    // A leftover of some interrupted fetch.
    let stale = cache.join(format!("partial/{}.img.xz.part", "e".repeat(64)));
    std::fs::write(&stale, b"half").unwrap();

    let out = piimg(cache)
        .args(["--json", "cache", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = doc["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0]["release"], "trixie");
    assert_eq!(images[0]["sha256"], trixie().raw_sha.as_str());
    assert_eq!(images[1]["release"], "bookworm");
    assert_eq!(images[1]["release_date"], "2025-05-13");
    assert_eq!(images[1]["url"], server.url(BOOKWORM_PATH).as_str());

    let out = piimg(cache).args(["cache", "list"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("2026-10-01  trixie"),
        "{text}"
    );

    let out = piimg(cache)
        .args(["--json", "cache", "prune", "--keep", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["removed"].as_array().unwrap().len(), 1);
    assert_eq!(doc["removed"][0]["release"], "bookworm");
    assert_eq!(doc["leftovers"].as_array().unwrap().len(), 1);
    assert!(!stale.exists());
    let left = Cache::new(cache).list().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].release, "trixie");
    assert!(left[0].path.exists());
    assert_eq!(
        files(&cache.join("images")).len(),
        2,
        "one image + its metadata"
    );
}

#[test]
fn cli_fetch_interrupted_by_ctrl_c_continues_on_the_next_run() {
    let server = Server::start();
    let list = standard(&server);
    server.throttle(Duration::from_millis(40));
    let dir = tempfile::tempdir().unwrap();
    let partial = dir
        .path()
        .join(format!("partial/{}.img.xz.part", trixie().xz_sha));
    let child = piimg(dir.path())
        .args(["--quiet", "fetch", "--os-list", &list])
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 200_000 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "download did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait_with_output().unwrap().status;
    assert!(!st.success());
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept >= 200_000 && kept < trixie().xz.len() as u64, "{kept}");
    assert!(Cache::new(dir.path()).list().unwrap().is_empty());

    server.throttle(Duration::ZERO);
    let out = piimg(dir.path())
        .args(["--json", "fetch", "--os-list", &list])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["resumed_from"], kept);
    assert_eq!(doc["image"]["sha256"], trixie().raw_sha.as_str());
    let reqs = server.requests(TRIXIE_PATH);
    assert_eq!(reqs.last().unwrap().range, Some(format!("bytes={kept}-")));
    let path = doc["image"]["path"].as_str().unwrap();
    assert_eq!(sha(&std::fs::read(path).unwrap()), trixie().raw_sha);
    // The killed run's temp output was cleaned up: just the image and its metadata.
    assert_eq!(files(&dir.path().join("images")).len(), 2);
    assert_eq!(files(&dir.path().join("partial")), Vec::<String>::new());
}

#[test]
fn cli_imports_a_local_img_xz_with_file_and_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let xz = dir
        .path()
        .join("2026-10-01-raspios-trixie-arm64-lite.img.xz");
    std::fs::write(&xz, &trixie().xz).unwrap();
    let cache = dir.path().join("cache");
    let out = piimg(&cache)
        .args(["--json", "fetch", "--file"])
        .arg(&xz)
        .args(["--sha256", &trixie().xz_sha])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["image"]["sha256"], trixie().raw_sha.as_str());
    assert_eq!(doc["image"]["release"], "trixie");
    assert_eq!(doc["downloaded"], true);
    // A --file base has no OS-list init_format: its root alone decides the mechanism.
    let meta = cache
        .join("images")
        .join(format!("{}.json", trixie().xz_sha));
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(meta["init_format"], serde_json::Value::Null, "{meta}");

    // A wrong hash is refused, showing both.
    let other = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let out = piimg(other.path())
        .args(["fetch", "--file"])
        .arg(&xz)
        .args(["--sha256", &wrong])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&wrong) && err.contains(&trixie().xz_sha),
        "{err}"
    );
    assert!(Cache::new(other.path()).list().unwrap().is_empty());

    // --sha256 alone makes no sense.
    let out = piimg(other.path())
        .args(["fetch", "--sha256", &wrong])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url URL or --file PATH"));
}

/// Allocated size equals apparent size (no holes at all).
fn assert_dense(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).unwrap();
    assert!(md.blocks() * 512 >= md.len(), "not dense: {md:?}");
    assert_eq!(allocated(path), vec![(0, md.len())], "holes in {path:?}");
}

/// The allocated (data) byte ranges of `path`, found with SEEK_DATA/SEEK_HOLE.
fn allocated(path: &Path) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as i64;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0i64;
    while pos < len {
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        out.push((data as u64, hole as u64));
        pos = hole;
    }
    out
}

/// A `.bmap` made by `bmaptool create` (the independent tool) from a sparse copy of
/// `raw` with holes at `holes` (byte ranges, 4 KiB aligned, zeros in `raw`).
fn bmaptool_bmap(raw: &[u8], holes: &[(usize, usize)]) -> String {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let mut f = std::fs::File::create(&src).unwrap();
    let mut pos = 0;
    for &(a, b) in holes.iter().chain([(raw.len(), raw.len())].iter()) {
        assert!(raw[a..b].iter().all(|&x| x == 0));
        f.seek(SeekFrom::Start(pos as u64)).unwrap();
        f.write_all(&raw[pos..a]).unwrap();
        pos = b;
    }
    f.set_len(raw.len() as u64).unwrap();
    f.sync_all().unwrap();
    let out = Command::new("bmaptool")
        .arg("create")
        .arg(&src)
        .output()
        .expect("bmaptool (bmap-tools) is needed");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Mapped byte ranges of `path` as `bmaptool create` sees them (independent check).
fn bmaptool_mapped(path: &Path) -> Vec<(u64, u64)> {
    let out = Command::new("bmaptool")
        .arg("create")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bmap = piimg::bmap::Bmap::parse(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    bmap.ranges
        .iter()
        .map(|r| ((r.first * 4096), ((r.last + 1) * 4096).min(bmap.image_size)))
        .collect()
}

const MIB: usize = 1 << 20;
/// Unmapped in the test bmap: the middle of trixie's 2 MiB zero region (1..3 MiB),
/// leaving 256 KiB of zeros mapped on each side.
const HOLES: [(usize, usize); 1] = [(MIB + MIB / 4, 3 * MIB - MIB / 4)];

#[test]
fn bmap_url_punches_holes_exactly_at_unmapped_ranges() {
    let server = Server::start();
    server.put("/t.bmap", bmaptool_bmap(&trixie().raw, &HOLES).into_bytes());
    let list = list_with(
        &server,
        serde_json::json!({"bmap_url": server.url("/t.bmap")}),
    );
    let dir = tempfile::tempdir().unwrap();
    let f = fetch::fetch(&opts(&list, dir.path()), &quiet()).unwrap();
    let img = &f.image;
    assert_eq!(sha(&std::fs::read(&img.path).unwrap()), trixie().raw_sha);
    // Holes exactly at the unmapped range; the mapped zero runs
    // (1 MiB..1.25 MiB and 2.75 MiB..3 MiB, 256 KiB each) stay allocated.
    let (a, b) = (HOLES[0].0 as u64, HOLES[0].1 as u64);
    let len = trixie().raw.len() as u64;
    assert_eq!(allocated(&img.path), vec![(0, a), (b, len)]);
    assert_eq!(bmaptool_mapped(&img.path), vec![(0, a), (b, len)]);
    // The bmap is stored beside the image and recorded in the entry.
    let stored = img.bmap.clone().expect("bmap recorded");
    assert_eq!(stored.parent(), img.path.parent());
    assert_eq!(
        std::fs::read_to_string(&stored).unwrap(),
        bmaptool_bmap(&trixie().raw, &HOLES)
    );
    assert_eq!(
        img.bmap_url.as_deref(),
        Some(server.url("/t.bmap").as_str())
    );
    assert_eq!(Cache::new(dir.path()).list().unwrap(), vec![img.clone()]);
}

#[test]
fn direct_url_with_bmap_url_uses_it() {
    let server = Server::start();
    server.put(TRIXIE_PATH, trixie().xz.clone());
    server.put("/t.bmap", bmaptool_bmap(&trixie().raw, &HOLES).into_bytes());
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts("http://127.0.0.1:9/unused", dir.path());
    o.source = Source::Direct {
        url: server.url(TRIXIE_PATH),
        sha256: trixie().xz_sha.clone(),
    };
    o.bmap_url = Some(server.url("/t.bmap"));
    let img = fetch::fetch(&o, &quiet()).unwrap().image;
    let (a, b) = (HOLES[0].0 as u64, HOLES[0].1 as u64);
    assert_eq!(
        allocated(&img.path),
        vec![(0, a), (b, trixie().raw.len() as u64)]
    );
}

#[test]
fn bmap_of_other_data_is_a_range_mismatch_and_caches_nothing() {
    let server = Server::start();
    // Same size, same layout, different bytes in the first MiB.
    server.put(
        "/b.bmap",
        bmaptool_bmap(&bookworm().raw, &HOLES).into_bytes(),
    );
    let list = list_with(
        &server,
        serde_json::json!({"bmap_url": server.url("/b.bmap")}),
    );
    let dir = tempfile::tempdir().unwrap();
    let err = fetch::fetch(&opts(&list, dir.path()), &quiet()).unwrap_err();
    assert!(matches!(err, FetchError::BmapMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("blocks 0..="), "{msg}");
    assert!(msg.contains(&server.url("/b.bmap")), "{msg}");
    assert!(msg.contains("nothing was cached"), "{msg}");
    assert_nothing_cached(dir.path());
}

#[test]
fn corrupt_or_wrong_size_bmap_is_a_clear_error() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // The bmap's own checksum no longer matches once a range hash is edited.
    let good = bmaptool_bmap(&trixie().raw, &HOLES);
    let i = good.find("chksum=\"").unwrap() + 8;
    let mut bad = good.clone();
    let c = if &good[i..i + 1] == "0" { "1" } else { "0" };
    bad.replace_range(i..i + 1, c);
    server.put("/bad.bmap", bad.into_bytes());
    let list = list_with(
        &server,
        serde_json::json!({"bmap_url": server.url("/bad.bmap")}),
    );
    let err = fetch::fetch(&opts(&list, dir.path()), &quiet()).unwrap_err();
    assert!(matches!(err, FetchError::Bmap { .. }), "{err:?}");
    assert!(err.to_string().contains("/bad.bmap"), "{err}");
    assert_nothing_cached(dir.path());

    // A bmap of a 4 MiB image: refused against the list's extract_size...
    server.put(
        "/small.bmap",
        bmaptool_bmap(&trixie().raw[..4 * MIB], &[]).into_bytes(),
    );
    let list = list_with(
        &server,
        serde_json::json!({"bmap_url": server.url("/small.bmap")}),
    );
    let err = fetch::fetch(&opts(&list, dir.path()), &quiet()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::Bmap { .. }), "{err:?}");
    assert!(
        msg.contains("4194304-byte image") && msg.contains("8388608"),
        "{msg}"
    );
    assert_nothing_cached(dir.path());

    // ...and, for a direct URL (no extract_size), against the decompressed size.
    let mut o = opts("http://127.0.0.1:9/unused", dir.path());
    o.source = Source::Direct {
        url: server.url(TRIXIE_PATH),
        sha256: trixie().xz_sha.clone(),
    };
    o.bmap_url = Some(server.url("/small.bmap"));
    let err = fetch::fetch(&o, &quiet()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::Bmap { .. }), "{err:?}");
    assert!(msg.contains("decompressed to 8388608 bytes"), "{msg}");
    assert!(Cache::new(dir.path()).list().unwrap().is_empty());
    assert!(files(&dir.path().join("images")).is_empty());
}

#[test]
fn cli_says_once_when_there_is_no_bmap_and_takes_bmap_url() {
    let server = Server::start();
    server.put(TRIXIE_PATH, trixie().xz.clone());
    server.put("/t.bmap", bmaptool_bmap(&trixie().raw, &HOLES).into_bytes());
    let dir = tempfile::tempdir().unwrap();

    // No bmap: human output says the image is cached dense, once.
    let cache = dir.path().join("dense");
    let out = piimg(&cache)
        .args(["fetch", "--url", &server.url(TRIXIE_PATH)])
        .args(["--sha256", &trixie().xz_sha])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("no .bmap published").count(), 1, "{err}");
    let img = Cache::new(&cache).list().unwrap().remove(0);
    assert_dense(&img.path);

    // --bmap-url: holes at its unmapped range, and no such message.
    let cache = dir.path().join("sparse");
    let out = piimg(&cache)
        .args(["fetch", "--url", &server.url(TRIXIE_PATH)])
        .args(["--sha256", &trixie().xz_sha])
        .args(["--bmap-url", &server.url("/t.bmap")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("no .bmap"), "{err}");
    let img = Cache::new(&cache).list().unwrap().remove(0);
    let (a, b) = (HOLES[0].0 as u64, HOLES[0].1 as u64);
    assert_eq!(
        allocated(&img.path),
        vec![(0, a), (b, trixie().raw.len() as u64)]
    );
    assert!(img.bmap.is_some());
}

// ---------------------------------------------------------------------------
// First run: a host that does not resolve or refuses is not retried.
// ---------------------------------------------------------------------------

/// A loopback port nobody listens on (bound, then released).
fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Options whose retries, were they made, would take at least 6 s.
fn slow_retry_opts(source: Source, cache: &Path) -> FetchOptions {
    let mut o = opts("unused", cache);
    o.source = source;
    o.net.retries = 6;
    o.net.backoff = Duration::from_secs(2);
    o
}

#[test]
fn an_unresolvable_os_list_host_fails_at_once_with_the_next_steps() {
    let cache = tempfile::tempdir().unwrap();
    let url = "http://piimg-first-run.invalid/os_list.json";
    let o = slow_retry_opts(Source::OsList { url: url.into() }, cache.path());
    let t = std::time::Instant::now();
    let e = ensure_base(&o, &quiet()).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        matches!(
            &e,
            FetchError::Unreachable {
                kind: "does not resolve",
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    for next in [
        "--base FILE.img",
        "piimg fetch --file",
        "--offline",
        "not retried",
    ] {
        assert!(msg.contains(next), "{msg}");
    }
    assert!(msg.starts_with(&format!("cannot reach {url}: ")), "{msg}");
    assert_nothing_cached(cache.path());
}

#[test]
fn a_refused_connection_fails_at_once_for_the_list_and_the_image() {
    let cache = tempfile::tempdir().unwrap();
    let port = refused_port();
    for source in [
        Source::OsList {
            url: format!("http://127.0.0.1:{port}/os_list.json"),
        },
        Source::Direct {
            url: format!("http://127.0.0.1:{port}/image.img.xz"),
            sha256: "0".repeat(64),
        },
    ] {
        let o = slow_retry_opts(source, cache.path());
        let t = std::time::Instant::now();
        let e = ensure_base(&o, &quiet()).unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
        assert!(
            matches!(
                &e,
                FetchError::Unreachable {
                    kind: "refused the connection",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_nothing_cached(cache.path());
    }
}

#[test]
fn piimg_fetch_names_the_way_forward_when_the_list_host_is_unknown() {
    let cache = tempfile::tempdir().unwrap();
    let out = piimg(cache.path())
        .env(
            "PIIMG_OS_LIST_URL",
            "http://piimg-first-run.invalid/os_list.json",
        )
        .arg("fetch")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach http://piimg-first-run.invalid/os_list.json"),
        "{err}"
    );
    assert!(err.contains("`piimg build --base FILE.img`"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
}

#[test]
fn a_refused_connection_with_a_partial_download_is_retried_and_the_partial_kept() {
    // An earlier run got part of the image: the host existed, so a refusal now may
    // be a blip (a restarting mirror) and the partial is worth keeping.
    let cache = tempfile::tempdir().unwrap();
    let sha = "ab".repeat(32);
    let partial = cache.path().join(format!("partial/{sha}.img.xz.part"));
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, vec![7u8; 4096]).unwrap();
    let mut o = opts("unused", cache.path());
    o.source = Source::Direct {
        url: format!("http://127.0.0.1:{}/image.img.xz", refused_port()),
        sha256: sha,
    };
    o.net.retries = 1;
    let e = ensure_base(&o, &quiet()).unwrap_err();
    assert!(
        matches!(e, FetchError::RetriesExhausted { attempts: 2, .. }),
        "{e:?}"
    );
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 4096);
}
