//! Steps `install-agent` (copy the agent to the root fs and enable its phase-2 unit)
//! and `disable` (the end: the unit no longer starts).

use crate::error::{Error, io};
use crate::node_fs::NodeFs;
use piimg_contract::{AGENT_INSTALL_PATH, AGENT_UNIT, RootFile};
use std::path::Path;

/// Where the builder's rendered unit is laid down (from `NodeConfig.files`).
pub fn unit_path() -> String {
    format!("/etc/systemd/system/{AGENT_UNIT}")
}

/// The unit's `WantedBy=` targets (default `multi-user.target`).
pub fn wanted_by(unit: &str) -> Vec<String> {
    let mut in_install = false;
    let mut targets = Vec::new();
    for l in unit.lines().map(str::trim) {
        if l.starts_with('[') {
            in_install = l == "[Install]";
        } else if in_install {
            if let Some(v) = l.strip_prefix("WantedBy=") {
                targets.extend(v.split_whitespace().map(String::from));
            }
        }
    }
    if targets.is_empty() {
        targets.push("multi-user.target".into());
    }
    targets
}

fn unit_text(files: &[RootFile], fs: &NodeFs) -> Result<String, Error> {
    let path = unit_path();
    if let Some(t) = fs.read(&path)? {
        return Ok(t);
    }
    if let Some(f) = files.iter().find(|f| f.path == path) {
        return Ok(f.content.clone());
    }
    Err(Error::failed(format!(
        "{path} missing: the builder must render the phase-2 unit into node.json files"
    )))
}

/// Step `install-agent`: copies `self_exe` (default: the running executable) and
/// enables the unit the card's `files` rendered.
pub fn install(self_exe: Option<&Path>, files: &[RootFile], fs: &NodeFs) -> Result<String, Error> {
    let exe = match self_exe {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().map_err(io("the running agent binary"))?,
    };
    let unit = unit_text(files, fs)?;
    if !unit.contains(&format!("ExecStart={AGENT_INSTALL_PATH}")) {
        return Err(Error::failed(format!(
            "{}: ExecStart must run {AGENT_INSTALL_PATH} (without arguments)",
            unit_path()
        )));
    }
    let dest = fs.path(AGENT_INSTALL_PATH);
    let same = std::fs::canonicalize(&exe).ok() == std::fs::canonicalize(&dest).ok();
    if !same {
        let data = std::fs::read(&exe).map_err(io(exe.display()))?;
        fs.put(AGENT_INSTALL_PATH, 0o755, &data, Some((0, 0)))?;
    }
    let targets = wanted_by(&unit);
    for t in &targets {
        fs.link(
            &unit_path(),
            &format!("/etc/systemd/system/{t}.wants/{AGENT_UNIT}"),
        )?;
    }
    Ok(format!(
        "{AGENT_INSTALL_PATH} installed; {AGENT_UNIT} enabled for {}",
        targets.join(", ")
    ))
}

/// Step `disable`: remove the unit's wants-symlinks so it never starts again.
pub fn disable(files: &[RootFile], fs: &NodeFs) -> Result<String, Error> {
    let unit = unit_text(files, fs).unwrap_or_default();
    for t in wanted_by(&unit) {
        fs.rm(&format!("/etc/systemd/system/{t}.wants/{AGENT_UNIT}"))?;
    }
    Ok(format!("{AGENT_UNIT} disabled; provisioning complete"))
}
