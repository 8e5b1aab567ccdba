//! Step `hostname`: /etc/hostname and the `127.0.1.1` line of /etc/hosts.

use crate::error::Error;
use crate::exec::Exec;
use crate::node_fs::NodeFs;
use crate::runner::Cmd;

/// Sets the hostname to the node name (and the running kernel's, when live).
pub fn apply(name: &str, domain: Option<&str>, fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    if name.is_empty()
        || name.len() > 63
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        || name.starts_with('-')
    {
        return Err(Error::failed(format!(
            "node.json: node_name {name:?} is not a valid hostname (letters, digits, '-', at most 63)"
        )));
    }
    fs.put("/etc/hostname", 0o644, format!("{name}\n").as_bytes(), None)?;
    let names = match domain {
        Some(d) if !d.is_empty() => format!("{name}.{d} {name}"),
        _ => name.to_string(),
    };
    let hosts = fs.read("/etc/hosts")?.unwrap_or_else(|| {
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n".into()
    });
    fs.put_like("/etc/hosts", hosts_with(&hosts, &names).as_bytes(), 0o644)?;
    if exec.live() && !exec.dry() {
        let current = fs
            .read("/proc/sys/kernel/hostname")
            .ok()
            .flatten()
            .unwrap_or_default();
        if current.trim() != name {
            exec.run_ok(&Cmd::new("hostname", &[name]))?;
        }
    }
    Ok(format!(
        "hostname {name}; /etc/hosts maps 127.0.1.1 to {names}"
    ))
}

/// /etc/hosts with exactly one `127.0.1.1` line naming `names`.
pub fn hosts_with(hosts: &str, names: &str) -> String {
    let line = format!("127.0.1.1\t{names}");
    let mut out = Vec::new();
    let mut placed = false;
    for l in hosts.lines() {
        if l.split_whitespace().next() == Some("127.0.1.1") {
            if !placed {
                out.push(line.clone());
                placed = true;
            }
        } else {
            out.push(l.to_string());
        }
    }
    if !placed {
        out.push(line);
    }
    out.join("\n") + "\n"
}
