//! Step `cgroup`: k3s needs the memory cgroup controller.

use crate::error::Error;
use crate::node_fs::NodeFs;

/// k3s's own words when the memory cgroup is missing.
pub const K3S_HINT: &str = "failed to find memory cgroup, you may need to add \"cgroup_memory=1 cgroup_enable=memory\" to your linux cmdline (/boot/firmware/cmdline.txt)";

/// Checks /sys/fs/cgroup/cgroup.controllers for `memory`.
pub fn check(fs: &NodeFs) -> Result<String, Error> {
    let path = "/sys/fs/cgroup/cgroup.controllers";
    let text = fs.read(path)?.ok_or_else(|| {
        Error::failed(format!(
            "{path} missing (no cgroup v2 unified hierarchy): {K3S_HINT}"
        ))
    })?;
    if text.split_whitespace().any(|c| c == "memory") {
        Ok("memory cgroup controller available".into())
    } else {
        Err(Error::failed(format!(
            "{path} lists no `memory` controller ({}): {K3S_HINT}",
            text.trim()
        )))
    }
}
