//! What a command-line user expects of any tool: profile discovery, completions and
//! man pages, documented environment, quiet exits on a closed pipe, one error line
//! and one JSON document per run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The binary with a clean environment: its own HOME, no profile override.
fn piimg(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_piimg"));
    c.current_dir(cwd)
        .env("HOME", cwd)
        .env_remove("PIIMG_PROFILE")
        .env_remove("PIIMG_GITHUB_KEYS_URL")
        .env_remove("COLUMNS");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A scratch directory holding the reference profile at `rel`.
fn with_profile_at(rel: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(rel);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(repo_root().join("profiles/homelab.toml"), dest).unwrap();
    dir
}

fn validated_path(out: &Output) -> String {
    ok(out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["profile"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn profile_flag_is_global_before_or_after_the_subcommand() {
    let dir = with_profile_at("elsewhere/lab.toml");
    for args in [
        ["-p", "elsewhere/lab.toml", "validate", "--json"],
        ["validate", "--profile", "elsewhere/lab.toml", "--json"],
        ["--json", "validate", "-p", "elsewhere/lab.toml"],
    ] {
        let out = piimg(dir.path()).args(args).output().unwrap();
        assert_eq!(validated_path(&out), "elsewhere/lab.toml", "{args:?}");
    }
}

#[test]
fn profile_discovery_env_then_local_then_single_profiles_toml() {
    let dir = with_profile_at("profiles/only.toml");
    let out = piimg(dir.path())
        .args(["validate", "--json"])
        .output()
        .unwrap();
    assert_eq!(validated_path(&out), "profiles/only.toml");

    std::fs::copy(
        dir.path().join("profiles/only.toml"),
        dir.path().join("piimg.toml"),
    )
    .unwrap();
    let out = piimg(dir.path())
        .args(["validate", "--json"])
        .output()
        .unwrap();
    assert_eq!(validated_path(&out), "piimg.toml");

    let out = piimg(dir.path())
        .env("PIIMG_PROFILE", "profiles/only.toml")
        .args(["validate", "--json"])
        .output()
        .unwrap();
    assert_eq!(validated_path(&out), "profiles/only.toml");
}

#[test]
fn ambiguous_or_missing_profile_lists_what_was_looked_at() {
    let dir = with_profile_at("profiles/a.toml");
    std::fs::copy(
        dir.path().join("profiles/a.toml"),
        dir.path().join("profiles/b.toml"),
    )
    .unwrap();
    let out = piimg(dir.path()).arg("plan").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("several profiles"), "{err}");
    assert!(err.contains("profiles/a.toml, profiles/b.toml"), "{err}");
    assert!(err.contains("--profile"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let out = piimg(empty.path())
        .arg("build")
        .arg("--all")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no profile"), "{err}");
    assert!(
        err.contains("piimg.toml") && err.contains("PIIMG_PROFILE"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bash_completion_script_loads_and_completes_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_piimg");
    // Load the script as users do, then ask the completion function itself.
    let script = format!(
        "source <('{bin}' completions bash) && complete -p piimg && \
         COMP_WORDS=(piimg bu) COMP_CWORD=1 COMP_LINE='piimg bu' COMP_POINT=8 && \
         _piimg piimg bu piimg && printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    ok(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("complete -") && stdout.contains(" piimg"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l == "build"), "{stdout}");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}

#[test]
fn completions_for_every_shell_name_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = piimg(dir.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        ok(&out);
        let script = text(&out.stdout);
        for sub in ["build", "flash", "completions"] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
    }
    let out = piimg(dir.path())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// groff's own verdict on a page: no warnings at all (`-ww`), plain text output.
fn groff(page: &Path) -> Option<Output> {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
        .arg(page)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .ok()?;
    Some(out)
}

#[test]
fn man_pages_for_piimg_and_each_subcommand_render_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let out = piimg(dir.path())
        .args(["man", "--out", "pages"])
        .output()
        .unwrap();
    ok(&out);
    let pages = dir.path().join("pages");
    let mut names: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for want in ["piimg.1", "piimg-build.1", "piimg-plan.1", "piimg-man.1"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("partial")), "{names:?}");
    let Some(_) = groff(&pages.join("piimg.1")) else {
        eprintln!("groff not installed (scripts/setup installs groff-base): rendering not checked");
        return;
    };
    for n in &names {
        let r = groff(&pages.join(n)).unwrap();
        ok(&r);
        assert!(r.stderr.is_empty(), "{n}: {}", text(&r.stderr));
        let shown = text(&r.stdout);
        assert!(shown.contains("NAME") && shown.contains("SYNOPSIS"), "{n}");
    }
    let build = text(&groff(&pages.join("piimg-build.1")).unwrap().stdout);
    // The global options are on each subcommand's page too.
    assert!(
        build.contains("--profile") && build.contains("--json"),
        "{build}"
    );

    // Without --out: piimg(1) on stdout, the same page as the file.
    let out = piimg(dir.path()).arg("man").output().unwrap();
    ok(&out);
    assert_eq!(out.stdout, std::fs::read(pages.join("piimg.1")).unwrap());
}

/// Every variable the CLI reads, as the source spells it: `env::var*("NAME")`,
/// clap's `env = "NAME"`, and the constants naming variables.
fn env_vars_in_source() -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    let mut stack = vec![repo_root().join("builder/src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let src = std::fs::read_to_string(&p).unwrap();
            for pat in [
                "env::var(\"",
                "env::var_os(\"",
                "env = \"",
                "_ENV: &str = \"",
            ] {
                for (at, _) in src.match_indices(pat) {
                    let rest = &src[at + pat.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                        .collect();
                    // Fault injection of debug builds only, not a user setting.
                    if !name.is_empty() && !name.starts_with("PIIMG_FLASH_TEST_") {
                        found.insert(name);
                    }
                }
            }
            // Closures over a name list: `var("…")` / `nonempty("…")` calls.
            for pat in ["nonempty(\"", "var(\""] {
                for (at, _) in src.match_indices(pat) {
                    let rest = &src[at + pat.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                        .collect();
                    if !name.is_empty() && !name.starts_with("PIIMG_FLASH_TEST_") {
                        found.insert(name);
                    }
                }
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn every_environment_variable_is_in_help_and_readme() {
    let vars = env_vars_in_source();
    for must in [
        "PIIMG_CACHE",
        "PIIMG_PROFILE",
        "XDG_CACHE_HOME",
        "SOURCE_DATE_EPOCH",
        "PIIMG_API_PORT",
    ] {
        assert!(
            vars.iter().any(|v| v == must),
            "scan missed {must}: {vars:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = piimg(dir.path()).arg("--help").output().unwrap();
    ok(&out);
    let help = text(&out.stdout);
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for v in &vars {
        assert!(help.contains(v), "piimg --help does not mention {v}");
        assert!(
            readme.contains(&format!("`{v}`")),
            "README does not mention `{v}`"
        );
    }
    // A subcommand's help lists what it reads.
    let out = piimg(dir.path())
        .args(["build", "--help"])
        .output()
        .unwrap();
    let help = text(&out.stdout);
    for v in ["SOURCE_DATE_EPOCH", "PIIMG_CACHE", "PIIMG_PROFILE"] {
        assert!(help.contains(v), "build --help: no {v}");
    }
}

/// Runs `sh -c "piimg ARGS | READER"` with pipefail off and on: the producer's
/// status as the shell saw it, and what the reader and stderr got.
fn piped(cwd: &Path, args: &str, reader: &str) -> (i32, String, String) {
    let bin = env!("CARGO_BIN_EXE_piimg");
    // bash's PIPESTATUS gives the producer's status (128 + signal when killed).
    let script = format!("'{bin}' {args} | {reader}; echo \"status=${{PIPESTATUS[0]}}\" >&3");
    let status_file = cwd.join("pipestatus");
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c"])
        .arg(format!("exec 3>'{}'; {script}", status_file.display()))
        .current_dir(cwd)
        .env("HOME", cwd)
        .env_remove("PIIMG_PROFILE")
        .env_remove("COLUMNS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let status = std::fs::read_to_string(&status_file).unwrap();
    let code = status.trim().trim_start_matches("status=").parse().unwrap();
    (code, text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_closed_pipe_ends_the_run_quietly_like_coreutils() {
    let dir = with_profile_at("profiles/homelab.toml");
    // The reader exits at once: the first write after that meets a closed pipe.
    for args in ["plan", "plan --json", "completions bash", "man", "--help"] {
        let (code, _, err) = piped(dir.path(), args, "true");
        assert!(!err.contains("panicked"), "{args}: {err}");
        assert!(!err.contains("Broken pipe"), "{args}: {err}");
        // 141 = 128 + SIGPIPE when a write hit the closed pipe; 0 when all output
        // fit the pipe buffer before the reader was gone.
        assert!(
            code == 141 || code == 0,
            "{args}: status {code}, stderr {err}"
        );
    }
    // A reader that takes one line: the output is still right up to there.
    let (code, first, err) = piped(dir.path(), "plan", "head -1");
    assert!(first.starts_with("cluster homelab"), "{first}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(code == 141 || code == 0, "status {code}");
}

/// Runs piimg with stdout on a pipe whose read end is already closed: its first
/// write meets a closed pipe, whatever the timing.
fn with_closed_stdout(cwd: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fresh descriptors that we own from here on.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] and fds[1] are ours and open.
    let (read_end, write_end) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    drop(read_end);
    let out = piimg(cwd)
        .args(args)
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out.status, text(&out.stderr))
}

#[test]
fn writing_to_a_closed_pipe_is_sigpipe_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let dir = with_profile_at("profiles/homelab.toml");
    for args in [
        &["plan"][..],
        &["plan", "--json"],
        &["validate"],
        &["completions", "bash"],
        &["man"],
    ] {
        let (status, err) = with_closed_stdout(dir.path(), args);
        assert_eq!(
            status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {status:?} {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// The JSON documents on `stdout`, however many there are.
fn json_documents(stdout: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(stdout)))
}

/// Asserts a failed `--json` run printed exactly one document, with an error.
fn one_error_document(what: &str, out: &Output) -> serde_json::Value {
    assert!(!out.status.success(), "{what}: succeeded");
    let docs = json_documents(&out.stdout);
    assert_eq!(
        docs.len(),
        1,
        "{what}: {} documents: {}",
        docs.len(),
        text(&out.stdout)
    );
    let doc = docs.into_iter().next().unwrap();
    assert!(
        doc["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: no error in {doc}"
    );
    doc
}

#[test]
fn usage_errors_are_one_json_document_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    for sub in [
        "init",
        "validate",
        "plan",
        "fetch",
        "cache",
        "build",
        "inspect",
        "flash",
        "kubeconfig",
        "status",
        "completions",
        "man",
    ] {
        // --json before and after the subcommand.
        for args in [
            vec!["--json", sub, "--no-such-flag"],
            vec![sub, "--no-such-flag", "--json"],
        ] {
            let out = piimg(dir.path()).args(&args).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let doc = one_error_document(&format!("{args:?}"), &out);
            assert_eq!(doc["usage"], true, "{args:?}");
            assert!(
                doc["error"].as_str().unwrap().contains("--no-such-flag"),
                "{doc}"
            );
            // Humans still get clap's text on stderr.
            assert!(text(&out.stderr).contains("Usage:"), "{args:?}");
        }
    }
    // No subcommand at all; --help is still help.
    let out = piimg(dir.path()).arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    one_error_document("--json alone", &out);
    let out = piimg(dir.path())
        .args(["--json", "plan", "--help"])
        .output()
        .unwrap();
    ok(&out);
    assert!(text(&out.stdout).contains("Usage:"));
    // Without --json a usage error prints no JSON.
    let out = piimg(dir.path())
        .args(["plan", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

#[test]
fn failures_print_one_json_document_per_command() {
    let dir = with_profile_at("profiles/homelab.toml");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[cluster]\nname = 1\n").unwrap();
    std::fs::write(dir.path().join("not-an-image.img"), b"hello").unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["validate", "-p", "broken.toml"],
        vec!["plan", "-p", "missing.toml"],
        vec!["init", "-p", "profiles/homelab.toml"],
        vec!["fetch", "--offline", "--file", "missing.img.xz"],
        vec!["build", "--all", "--offline", "--base", "missing.img"],
        vec!["inspect", "missing.img"],
        vec!["flash", "not-an-image.img", "also-missing"],
        vec!["kubeconfig", "-p", "missing.toml"],
        vec!["status", "-p", "missing.toml"],
        vec!["man", "--out", "not-an-image.img"],
    ];
    for args in cases {
        let out = piimg(dir.path())
            .env("PIIMG_CACHE", dir.path().join("cache"))
            .arg("--json")
            .args(&args)
            .output()
            .unwrap();
        one_error_document(&format!("{args:?}"), &out);
    }
}

#[test]
fn an_os_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["plan", "-p", "missing.toml"][..],
        &["inspect", "missing.img"],
        &["build", "-p", "missing.toml", "--all"],
    ] {
        let out = piimg(dir.path()).args(args).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{args:?}: {err}"
        );
        assert!(err.contains("missing."), "{args:?} names no file: {err}");
        let out = piimg(dir.path()).arg("--json").args(args).output().unwrap();
        let doc = one_error_document(&format!("{args:?}"), &out);
        assert_eq!(
            doc["error"].as_str().unwrap().matches("os error 2").count(),
            1,
            "{doc}"
        );
    }
}

#[test]
fn plan_fits_80_columns_and_wide_keeps_one_line_per_node() {
    let dir = with_profile_at("profiles/homelab.toml");
    let out = piimg(dir.path())
        .env("COLUMNS", "80")
        .arg("plan")
        .output()
        .unwrap();
    ok(&out);
    let narrow = text(&out.stdout);
    for line in narrow.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    let out = piimg(dir.path())
        .env("COLUMNS", "80")
        .args(["plan", "--wide"])
        .output()
        .unwrap();
    ok(&out);
    let wide = text(&out.stdout);
    assert!(wide.lines().any(|l| l.chars().count() > 80), "{wide}");
    // Nothing lost: every node's row, and every word of the wide table, is there.
    let doc = piimg(dir.path()).args(["plan", "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
    let nodes = doc["nodes"].as_array().unwrap();
    assert!(nodes.len() > 1);
    for n in nodes {
        let name = n["name"].as_str().unwrap();
        let row = narrow
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{narrow}"));
        assert!(row.contains(n["ip"].as_str().unwrap()), "{row}");
        assert_eq!(wide.lines().filter(|l| l.starts_with(name)).count(), 1);
    }
    let words = |t: &str| {
        let mut w: Vec<String> = t
            .split_whitespace()
            .filter(|w| {
                ![
                    "first",
                    "boot:",
                    "re-flash:",
                    "BOOT",
                    "FIRST",
                    "RE-FLASH",
                    "·",
                ]
                .contains(w)
            })
            .map(str::to_string)
            .collect();
        w.sort();
        w
    };
    assert_eq!(words(&narrow), words(&wide));
}

mod support;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8 test@piimg";

/// A scratch directory with a two-node `piimg.toml` (found by discovery).
fn two_node_lab() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("piimg.toml"),
        format!(
            r#"[cluster]
name = "lab"
domain = "lan"

[network]
cidr = "192.168.86.0/24"
gateway = "192.168.86.1"
dns = ["192.168.86.1"]

[k3s]
version = "v1.31.4+k3s1"

[access]
admin_user = "admin"
ssh_keys = ["{KEY}"]

[[nodes]]
name = "pi5-master-1"
ip = "192.168.86.31"
role = "server"
hardware = "pi5-8gb"

[[nodes]]
name = "pi4-worker-1"
ip = "192.168.86.41"
role = "agent"
hardware = "pi4-2gb"
"#
        ),
    )
    .unwrap();
    dir
}

fn lab_piimg(dir: &Path) -> Command {
    let mut c = piimg(dir);
    c.env("SOURCE_DATE_EPOCH", "1700000000")
        .env("PIIMG_CACHE", dir.join("cache"));
    c
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_failed_build_prints_one_json_document_naming_the_failures() {
    let lab = two_node_lab();
    let base = support::image("bookworm", &[]);
    // An overlay file bigger than the boot partition: no card can fit.
    let overlay = lab.path().join("overlay/boot");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::File::create(overlay.join("huge.bin"))
        .unwrap()
        .set_len(513 << 20)
        .unwrap();
    let profile = lab.path().join("piimg.toml");
    let text_of = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(
        &profile,
        text_of.replace("[cluster]\n", "[cluster]\noverlay_dir = \"overlay\"\n"),
    )
    .unwrap();
    let out = lab_piimg(lab.path())
        .args(["build", "--all", "--offline", "--json", "--base"])
        .arg(&base.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let doc = one_error_document("build --all --json", &out);
    let failed = doc["failed"].as_array().expect("failed nodes listed");
    assert_eq!(failed.len(), 2, "{doc}");
    assert!(
        names_in(&lab.path().join("out"))
            .iter()
            .all(|n| !n.ends_with(".partial"))
    );
}

#[test]
fn ctrl_c_during_build_all_xz_exits_130_and_leaves_no_partial_files() {
    let lab = two_node_lab();
    // Incompressible data keeps xz busy long enough to be interrupted mid-way.
    let base = support::image("bookworm", &["--fill-mib", "200"]);
    let out_dir = lab.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    // A temp file an earlier killed run left behind: it goes too.
    std::fs::write(out_dir.join(".pi4-worker-1.img.xz.stale.partial"), b"x").unwrap();
    let mut child = lab_piimg(lab.path())
        .args(["build", "--all", "--xz", "--offline", "--quiet", "--base"])
        .arg(&base.path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the xz phase (its temp output exists), then interrupt.
    let t0 = std::time::Instant::now();
    let compressing = loop {
        let names = names_in(&out_dir);
        if names
            .iter()
            .any(|n| n.contains(".img.xz.") && n.ends_with(".partial") && !n.contains("stale"))
        {
            break true;
        }
        if t0.elapsed().as_secs() > 120 || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(
        compressing,
        "never saw the xz phase: {:?}",
        names_in(&out_dir)
    );
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let sent = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    eprintln!("exited {:.2} s after SIGINT", sent.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let left = names_in(&out_dir);
    assert!(left.iter().all(|n| !n.ends_with(".partial")), "{left:?}");
    assert!(left.iter().all(|n| !n.ends_with(".xz")), "{left:?}");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("interrupted"), "{err}");
}

#[test]
fn progress_bars_are_gone_from_the_terminal_when_the_build_ends() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 missing (scripts/setup installs it): pty test skipped");
        return;
    }
    let lab = two_node_lab();
    // Big enough for the bars to be drawn a few times.
    let base = support::image("bookworm", &["--fill-mib", "16"]);
    let script = repo_root().join("builder/tests/cli_conventions_support/pty_screen.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_piimg"))
        .args([
            "build",
            "--node",
            "pi4-worker-1",
            "--xz",
            "--offline",
            "--base",
        ])
        .arg(&base.path)
        .current_dir(lab.path())
        .env("HOME", lab.path())
        .env("TERM", "xterm")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("PIIMG_CACHE", lab.path().join("cache"))
        .env_remove("PIIMG_PROFILE")
        .env_remove("COLUMNS")
        .output()
        .unwrap();
    ok(&out);
    let report = text(&out.stdout);
    let mut lines = report.lines();
    assert_eq!(lines.next(), Some("status=0"), "{report}");
    let redraws: usize = lines
        .next()
        .and_then(|l| l.strip_prefix("raw-bars="))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        redraws > 0,
        "no bar was ever drawn, nothing tested:\n{report}"
    );
    let screen: Vec<&str> = lines.collect();
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("pi4-worker-1") && l.contains("out/pi4-worker-1.img")),
        "{report}"
    );
    assert!(
        screen
            .iter()
            .all(|l| !l.contains("ETA") && !l.contains("[=")),
        "bar left on screen:\n{report}"
    );
}

#[test]
fn build_removes_stale_temp_files_of_killed_runs_for_every_selected_node() {
    let lab = two_node_lab();
    let out_dir = lab.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let stale = [
        ".pi4-worker-1.img.xz.Ab12.partial",
        ".pi5-master-1.img.bmap.Cd34.partial",
        ".pi5-master-1.img.q9.partial",
    ];
    for s in stale {
        std::fs::write(out_dir.join(s), b"left by a killed run").unwrap();
    }
    // Not ours: another file's temp and an unrelated name stay.
    std::fs::write(out_dir.join(".other.img.Zz.partial"), b"x").unwrap();
    // The run fails before building anything (no such base): the cleanup came first.
    let out = lab_piimg(lab.path())
        .args(["build", "--all", "--offline", "--base", "missing.img"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(names_in(&out_dir), [".other.img.Zz.partial"]);
}
