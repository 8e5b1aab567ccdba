//! Step `packages`: the card's `[packages]` installed with apt-get before k3s
//! (noninteractive, the node's own mirrors, existing configuration files kept).
//!
//! `apt-get update` then `apt-get install` are retried with backoff while apt cannot
//! reach a mirror, up to the packages timeout of the run; then the step fails with
//! the mirror and apt's words, and the next run (the phase-2 unit restarts after
//! 30 s, and every boot starts it) resumes here. A package apt does not know fails
//! at once: retrying cannot help. An install a power cut interrupted is finished
//! with `dpkg --configure -a` first (once per run).

use crate::error::Error;
use crate::exec::Exec;
use crate::retry::{Attempt, retry};
use crate::runner::{Cmd, Output};
use crate::time::human;
use std::path::Path;
use std::time::Duration;

/// Longest pause between two attempts.
const CAP: Duration = Duration::from_secs(60);

/// Longest one `apt-get update` or `apt-get install` may run: apt's own timeouts
/// cover a connection that stalls, not a mirror that trickles or a maintainer script
/// that waits for ever; 30 min is room for a large install on a Pi's SD card. A
/// killed install is finished by the next run's `dpkg --configure -a`.
pub const APT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest `dpkg --configure -a` may run (finishing an interrupted install), for the
/// same reasons as [`APT_TIMEOUT`].
pub const DPKG_CONFIGURE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What apt prints when it cannot reach a mirror.
const UNREACHABLE: &[&str] = &[
    "Failed to fetch",
    "Temporary failure resolving",
    "Could not resolve",
    "Could not connect",
    "Connection failed",
    "Network is unreachable",
    "Unable to connect",
    "Connection timed out",
];

/// A Debian package name (Debian Policy 5.6.1), as the builder checks it.
pub fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// apt's output says it could not reach a mirror.
pub fn unreachable(out: &Output) -> bool {
    UNREACHABLE
        .iter()
        .any(|w| out.stdout.contains(w) || out.stderr.contains(w))
}

/// apt refuses to work until an interrupted dpkg run is finished.
pub fn interrupted(out: &Output) -> bool {
    out.stderr.contains("dpkg --configure -a") || out.stdout.contains("dpkg --configure -a")
}

/// The mirror apt names in a fetch failure (`http://deb.debian.org`), else the
/// host it could not resolve.
pub fn mirror(out: &Output) -> Option<String> {
    let text = format!("{}\n{}", out.stdout, out.stderr);
    for word in text.split_whitespace() {
        if let Some((scheme, rest)) = word.split_once("://") {
            if ["http", "https"].contains(&scheme) {
                let host = rest.split('/').next().unwrap_or(rest);
                return Some(format!("{scheme}://{host}"));
            }
        }
    }
    text.split('\'').nth(1).map(str::to_string)
}

/// The line apt explains a fetch failure with, else its last words.
fn why(out: &Output) -> String {
    format!("{}\n{}", out.stderr, out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| UNREACHABLE.iter().any(|w| l.contains(w)))
        .map(|l| {
            l.trim_start_matches("W: ")
                .trim_start_matches("E: ")
                .to_string()
        })
        .unwrap_or_else(|| out.last_words())
}

fn apt(program: &str, args: &[&str]) -> Cmd {
    let mut all = vec![
        "-q",
        "-o",
        "DPkg::Lock::Timeout=120",
        "-o",
        "Acquire::Retries=3",
        "-o",
        "Acquire::http::Timeout=30",
    ];
    all.extend_from_slice(args);
    Cmd::new(program, &all)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("APT_LISTCHANGES_FRONTEND", "none")
        .timeout(APT_TIMEOUT)
}

/// Installs `packages` with `apt_get` (default `apt-get`, run on the live system
/// only unless given), retrying unreachable mirrors for up to `limit`.
pub fn install(
    packages: &[String],
    apt_get: Option<&Path>,
    limit: Duration,
    exec: &Exec,
) -> Result<String, Error> {
    if packages.is_empty() {
        return Ok("no [packages] on the card".into());
    }
    if let Some(bad) = packages.iter().find(|p| !is_package_name(p)) {
        return Err(Error::failed(format!(
            "node.json: customize.packages: {bad:?} is not a Debian package name"
        )));
    }
    let program = apt_get.map_or("apt-get".into(), |p| p.display().to_string());
    let list = packages.join(" ");
    if !exec.live() && !exec.dry() && apt_get.is_none() {
        return Ok(format!(
            "not the live system (--root): skipped apt-get install {list}"
        ));
    }
    let update = apt(&program, &["update"]);
    let mut install_args = vec![
        "-y",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        "install",
        "--",
    ];
    install_args.extend(packages.iter().map(String::as_str));
    let install = apt(&program, &install_args);
    let dpkg_configure = Cmd::new("dpkg", &["--configure", "-a"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .timeout(DPKG_CONFIGURE_TIMEOUT);
    let killed = |what: &str, cmd: &Cmd| {
        Error::failed(format!(
            "packages: `{what}` did not finish within {} (killed with its child processes); the next run tries again",
            human(cmd.timeout.unwrap_or_default())
        ))
    };
    let mut repaired = false;
    let mut attempts = 0;
    let mut last = (
        String::from("its mirrors"),
        String::from("no attempt finished"),
    );
    let result = retry(|b| {
        attempts += 1;
        let again = |b: &crate::retry::Backoff| {
            if b.elapsed() >= limit {
                Attempt::Stop(None)
            } else {
                Attempt::Again {
                    deadline: limit,
                    cap: CAP,
                }
            }
        };
        let out = match exec.run(&update) {
            Ok(o) => o,
            Err(e) => return Attempt::Stop(Some(e)),
        };
        if out.timed_out {
            return Attempt::Stop(Some(killed("apt-get update", &update)));
        }
        if !out.success() || unreachable(&out) {
            last = (mirror(&out).unwrap_or_else(|| last.0.clone()), why(&out));
            return again(b);
        }
        let out = match exec.run(&install) {
            Ok(o) => o,
            Err(e) => return Attempt::Stop(Some(e)),
        };
        if out.timed_out {
            return Attempt::Stop(Some(killed(&format!("apt-get install {list}"), &install)));
        }
        if out.success() {
            Attempt::Done(())
        } else if interrupted(&out) && !repaired {
            // A power cut during an earlier install: finish dpkg's work, then again.
            repaired = true;
            match exec.run_ok(&dpkg_configure) {
                Ok(_) => Attempt::Again {
                    deadline: limit,
                    cap: CAP,
                },
                Err(e) => Attempt::Stop(Some(e)),
            }
        } else if unreachable(&out) {
            last = (mirror(&out).unwrap_or_else(|| last.0.clone()), why(&out));
            again(b)
        } else {
            Attempt::Stop(Some(Error::failed(format!(
                "packages: `apt-get install {list}` exited with {}: {}",
                out.code.map_or("a signal".into(), |c| c.to_string()),
                out.last_words()
            ))))
        }
    });
    match result {
        Ok(()) => Ok(format!("installed {list} (apt-get, attempt {attempts})")),
        Err(Some(e)) => Err(e),
        Err(None) => Err(Error::failed(format!(
            "packages: apt could not reach {}: {}; gave up after {attempts} attempt(s) in {}, will retry on the next run",
            last.0,
            last.1,
            human(limit)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RecordingRunner;

    #[test]
    fn apt_runs_under_its_timeout_and_a_killed_apt_fails_the_step_at_once() {
        let r = RecordingRunner::new(|cmd: &Cmd| {
            assert_eq!(cmd.timeout, Some(APT_TIMEOUT), "{cmd}");
            Output {
                stdout: "Get:1 http://deb.debian.org/debian trixie InRelease\n".into(),
                timed_out: true,
                ..Output::default()
            }
        });
        let e = install(
            &["vim".into()],
            Some(Path::new("apt-get")),
            Duration::from_secs(3600),
            &Exec::new(&r, false, false),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "packages: `apt-get update` did not finish within 30 min (killed with its child processes); the next run tries again"
        );
        assert_eq!(r.calls().len(), 1, "no retry after a kill: {:?}", r.calls());
    }

    #[test]
    fn a_killed_install_names_the_packages() {
        let r = RecordingRunner::new(|cmd: &Cmd| {
            if cmd.args.iter().any(|a| a == "install") {
                Output {
                    timed_out: true,
                    ..Output::default()
                }
            } else {
                Output::ok("")
            }
        });
        let e = install(
            &["vim".into(), "git".into()],
            Some(Path::new("apt-get")),
            Duration::from_secs(3600),
            &Exec::new(&r, false, false),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("packages: `apt-get install vim git` did not finish within 30 min"),
            "{e}"
        );
    }
}
