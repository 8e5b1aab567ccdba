//! Power cuts and failures at every step: inject one, rerun until done, and the node
//! ends up exactly like an uninterrupted run, with no duplicated lines anywhere.

use piimg_contract::Role;
use piimg_firstboot::agent::{CRASH_ENV, CRASH_EXIT};
use piimg_firstboot::step_id::StepId;
use piimg_test_support::*;

/// The agent binary under test.
const AGENT: &str = env!("CARGO_BIN_EXE_piimg-firstboot");

#[test]
fn every_step_survives_a_crash_or_failure_and_converges() {
    let cfg = node_config(Role::Server, true, bookworm_hook());
    let reference = Fixture::new(AGENT.as_ref(), &cfg);
    reference.run_to_completion(2);
    let want = reference.snapshot();
    let rootless =
        |s: &std::collections::BTreeMap<String, String>, f: &Fixture| -> Vec<(String, String)> {
            let r = f.dir.path().display().to_string();
            s.iter()
                .map(|(k, v)| (k.clone(), v.replace(&r, "TMP")))
                .collect()
        };
    let want = rootless(&want, &reference);
    for step in StepId::ALL {
        for when in ["fail", "unsaved", "after"] {
            let f = Fixture::new(AGENT.as_ref(), &cfg);
            let mut injected = false;
            for _ in 0..3 {
                let out = f
                    .cmd()
                    .env(CRASH_ENV, format!("{}:{when}", step.name()))
                    .output()
                    .unwrap();
                let code = out.status.code();
                if code == Some(CRASH_EXIT) || (when == "fail" && code == Some(1)) {
                    injected = true;
                    break;
                }
                assert!(
                    out.status.success(),
                    "{}:{when}: {}",
                    step.name(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(injected, "{}:{when} never hit", step.name());
            f.run_to_completion(3);
            let got = rootless(&f.snapshot(), &f);
            let diff: Vec<_> = got
                .iter()
                .filter(|e| !want.contains(e))
                .chain(want.iter().filter(|e| !got.contains(e)))
                .collect();
            assert!(
                diff.is_empty(),
                "{}:{when}: final tree differs: {diff:?}",
                step.name()
            );
            for (path, content) in &got {
                // Line-oriented files the agent edits or writes.
                let lined = path.starts_with("/etc/")
                    || path.starts_with("/home/")
                    || path.ends_with("cmdline.txt");
                if !lined || content.starts_with("link") || content.starts_with("dir") {
                    continue;
                }
                let mut seen = std::collections::HashSet::new();
                for l in content
                    .lines()
                    .skip(1)
                    .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                {
                    assert!(
                        seen.insert(l),
                        "{}:{when}: duplicated line in {path}: {l}",
                        step.name()
                    );
                }
            }
            // The stand-in installer ran once, or twice only if killed before its
            // step was saved (re-running install.sh is what a real resume does).
            let log = std::fs::read_to_string(&f.log).unwrap();
            let runs = log.matches("installer args").count();
            let allowed = if step.name() == "k3s-install" && when == "unsaved" {
                2
            } else {
                1
            };
            assert_eq!(
                runs,
                allowed,
                "{}:{when}: installer ran {runs} times",
                step.name()
            );
        }
    }
}
