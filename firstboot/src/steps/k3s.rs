//! Steps `k3s-config`, `k3s-install`, `k3s-start` and `k3s-ready`.

use crate::error::Error;
use crate::exec::Exec;
use crate::join::Join;
use crate::log::would;
use crate::node_fs::NodeFs;
use crate::retry::wait_for;
use crate::runner::Cmd;
use crate::secrets::SecretStore;
use crate::time::human;
use piimg_contract::{K3s, NODE_CONFIG_FILE, Role};
use std::path::Path;
use std::time::Duration;

/// k3s's configuration file (0600: it carries the token).
pub const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
/// Where k3s's binary goes (airgap or installer).
pub const K3S_BIN: &str = "/usr/local/bin/k3s";
/// Where bundled airgap images go.
pub const IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";
/// Where the agent keeps the install script it runs.
pub const INSTALL_SCRIPT: &str = "/var/lib/piimg/k3s-install.sh";

/// Longest the k3s install script may run: it downloads the k3s binary (~70 MB) with
/// a curl that has no time limit of its own, so a stalled download would wait for
/// ever; 30 min lets a slow link finish, then the step fails and the next run retries.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest one `k3s kubectl get node` of the readiness check may take: kubectl sets
/// no request timeout by default, so an API server that accepts the connection and
/// never answers would stall the check past `--ready-timeout`; the next attempt
/// follows.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// `config_yaml` plus `token:`, on servers with an agent token `agent-token:`, and
/// `cluster-init: true` or `server: <url>`.
pub fn render_config(
    base: &str,
    token: &str,
    agent_token: Option<&str>,
    join: &Join,
) -> Result<String, String> {
    for l in base.lines() {
        if l.starts_with([' ', '\t', '#', '-']) {
            continue;
        }
        let key = l.split(':').next().unwrap_or("").trim();
        if [
            "token",
            "token-file",
            "agent-token",
            "agent-token-file",
            "server",
            "cluster-init",
        ]
        .contains(&key)
        {
            return Err(format!(
                "{NODE_CONFIG_FILE}: k3s.config_yaml sets `{key}:`, which the agent owns; remove it from the template"
            ));
        }
    }
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut out = base.trim_end().to_string();
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("# added by piimg-firstboot\n");
    out.push_str(&format!("token: {}\n", quote(token)));
    if let Some(agent) = agent_token {
        // k3s's `agent-token` (docs/cli/server.md): the `node` user's password, the
        // same on every server; agents present it instead of the server token.
        out.push_str(&format!("agent-token: {}\n", quote(agent)));
    }
    match (join, join.url()) {
        (Join::ClusterInit, _) => out.push_str("cluster-init: true\n"),
        (_, Some(url)) => out.push_str(&format!("server: {}\n", quote(&url))),
        (_, None) => {}
    }
    Ok(out)
}

/// Step `k3s-config`.
///
/// `join` is the decision the `join` step recorded; the token comes from `secrets`,
/// the rest from the card's `config_yaml`.
pub fn config(
    join: Option<&Join>,
    secrets: &SecretStore,
    role: Role,
    config_yaml: &str,
    fs: &NodeFs,
) -> Result<String, Error> {
    let join = join.cloned().ok_or_else(|| {
        Error::failed("no join decision recorded; the `join` step must run first")
    })?;
    let secrets = secrets.load()?;
    let token = secrets.token;
    if token.trim().is_empty() {
        return Err(Error::failed("secrets.json: token is empty"));
    }
    let agent_token = match (role, secrets.agent_token.as_deref().map(str::trim)) {
        (_, Some("")) => return Err(Error::failed("secrets.json: agent_token is empty")),
        (Role::Server, a) => a,
        (Role::Agent, _) => None,
    };
    let text =
        render_config(config_yaml, token.trim(), agent_token, &join).map_err(Error::failed)?;
    fs.mkdir("/etc/rancher/k3s", 0o755, Some((0, 0)))?;
    fs.put(K3S_CONFIG, 0o600, text.as_bytes(), Some((0, 0)))?;
    Ok(format!(
        "{K3S_CONFIG} (0600) written: {}",
        match (&join, join.url()) {
            (Join::ClusterInit, _) => "cluster-init".to_string(),
            (_, Some(u)) => format!("server {u}"),
            (_, None) => "existing etcd data, no join".to_string(),
        }
    ))
}

fn card_rel(rel: &str, field: &str) -> Result<(), Error> {
    if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
        return Err(Error::failed(format!(
            "{NODE_CONFIG_FILE}: k3s.airgap.{field} {rel:?} must be a path relative to the boot partition"
        )));
    }
    Ok(())
}

/// The k3s version, checked to be a plain release tag (it ends up in a URL).
pub fn checked_version(v: &str) -> Result<&str, Error> {
    if v.starts_with('v')
        && v.len() > 1
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-".contains(c))
    {
        Ok(v)
    } else {
        Err(Error::failed(format!(
            "{NODE_CONFIG_FILE}: k3s.version {v:?} is not a k3s release tag like v1.31.4+k3s1"
        )))
    }
}

fn service(role: Role) -> (&'static str, &'static str) {
    match role {
        Role::Server => ("server", "k3s.service"),
        Role::Agent => ("agent", "k3s-agent.service"),
    }
}

/// Step `k3s-install`: from the card's airgap files, else the install script of the
/// pinned release tag; the script runs with `INSTALL_K3S_SKIP_START=true` (the
/// `k3s-start` step starts it) and without inherited `K3S_*` variables (the script
/// would persist them into the service's env file).
pub fn install(k3s: &K3s, role: Role, fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    let version = checked_version(&k3s.version)?.to_string();
    let (server_or_agent, _) = service(role);
    fs.mkdir("/var/lib/piimg", 0o700, Some((0, 0)))?;
    let mut cmd = Cmd::new("sh", &[&fs.path(INSTALL_SCRIPT).to_string_lossy()]);
    let how = if let Some(air) = &k3s.airgap {
        card_rel(&air.binary, "binary")?;
        card_rel(&air.install_script, "install_script")?;
        fs.copy_from_card(&air.binary, K3S_BIN, 0o755)?;
        if let Some(images) = &air.images {
            card_rel(images, "images")?;
            let name = images.rsplit('/').next().unwrap_or(images);
            fs.mkdir(IMAGES_DIR, 0o755, Some((0, 0)))?;
            fs.copy_from_card(images, &format!("{IMAGES_DIR}/{name}"), 0o644)?;
        }
        fs.copy_from_card(&air.install_script, INSTALL_SCRIPT, 0o755)?;
        cmd = cmd.env("INSTALL_K3S_SKIP_DOWNLOAD", "true");
        "airgap files from the card"
    } else {
        let url = format!(
            "https://raw.githubusercontent.com/k3s-io/k3s/{}/install.sh",
            version.replace('+', "%2B")
        );
        let dest = fs.path(INSTALL_SCRIPT).to_string_lossy().into_owned();
        exec.run_ok(&Cmd::new(
            "curl",
            &[
                "-sSfL",
                "--retry",
                "5",
                "--max-time",
                "300",
                "-o",
                &dest,
                &url,
            ],
        ))?;
        "the install script of the pinned release"
    };
    cmd = cmd
        .env("INSTALL_K3S_VERSION", version.clone())
        .env("INSTALL_K3S_EXEC", server_or_agent)
        .env("INSTALL_K3S_SKIP_START", "true");
    cmd.env_remove_prefixes = vec!["K3S_".into(), "CONTAINERD_".into()];
    exec.run_ok(&cmd.timeout(INSTALL_TIMEOUT))?;
    Ok(format!(
        "k3s {version} installed as {server_or_agent} from {how}"
    ))
}

/// Step `k3s-start`: `systemctl start --no-block` the k3s unit (live system only,
/// or with the `systemctl` given by `--systemctl`).
pub fn start(role: Role, systemctl: Option<&Path>, exec: &Exec) -> Result<String, Error> {
    let (_, unit) = service(role);
    let program = systemctl.map_or("systemctl".into(), |p| p.display().to_string());
    let cmd = Cmd::new(program, &["start", "--no-block", unit]);
    if exec.live() || exec.dry() || systemctl.is_some() {
        exec.run_ok(&cmd)?;
        Ok(format!("{unit} started"))
    } else {
        Ok(format!("not the live system (--root): skipped `{cmd}`"))
    }
}

/// The kubeconfig the readiness check uses: the admin kubeconfig k3s writes on
/// servers; on agents the kubelet's own, which the node authorizer allows to read
/// its own Node object.
pub fn kubeconfig(role: Role) -> &'static str {
    match role {
        Role::Server => "/etc/rancher/k3s/k3s.yaml",
        Role::Agent => "/var/lib/rancher/k3s/agent/kubelet.kubeconfig",
    }
}

/// Step `k3s-ready`: `k3s kubectl get node NAME` until its Ready condition is True,
/// with backoff, bounded by `--ready-timeout`.
pub fn ready(
    name: &str,
    role: Role,
    limit: Duration,
    fs: &NodeFs,
    exec: &Exec,
) -> Result<String, Error> {
    let kc = fs.path(kubeconfig(role)).to_string_lossy().into_owned();
    let cmd = Cmd::new(
        fs.path(K3S_BIN).to_string_lossy(),
        &[
            "kubectl",
            "--kubeconfig",
            &kc,
            "get",
            "node",
            name,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ],
    )
    .timeout(KUBECTL_TIMEOUT);
    if exec.dry() {
        would(&format!(
            "repeat until it prints True (up to {}): {cmd}",
            human(limit)
        ));
        return Ok("dry run".into());
    }
    wait_for(limit, || {
        let out = exec
            .poll(&cmd)
            .map_err(|e| format!("cannot run {K3S_BIN}: {e}"))?;
        match out.stdout.trim() {
            _ if out.timed_out => Err(format!(
                "kubectl did not answer within {}",
                human(KUBECTL_TIMEOUT)
            )),
            "True" if out.success() => Ok(Some(())),
            _ if !out.success() => Err(out.last_words()),
            other => Err(format!("Ready={other:?}")),
        }
    })
    .map_err(|last| {
        Error::failed(format!(
            "node {name} not Ready after {}; last answer: {last}",
            human(limit)
        ))
    })?;
    Ok(format!("node {name} is Ready"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Output, RecordingRunner};

    #[test]
    fn a_kubectl_that_never_answers_is_cut_off_and_named_in_the_readiness_error() {
        let r = RecordingRunner::new(|cmd: &Cmd| {
            assert_eq!(cmd.timeout, Some(KUBECTL_TIMEOUT), "{cmd}");
            Output {
                timed_out: true,
                ..Output::default()
            }
        });
        let fs = NodeFs::new("/nonexistent".into(), "/nonexistent".into(), false);
        let e = ready(
            "node-1",
            Role::Server,
            Duration::from_millis(1),
            &fs,
            &Exec::new(&r, false, false),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("last answer: kubectl did not answer within 60 s"),
            "{e}"
        );
    }
}
