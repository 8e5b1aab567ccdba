//! STAND-INS for what a node talks to and runs: k3s and its installer as recording
//! shell scripts, the Python k3s server stand-in (`standin/standin_k3s.py`), a
//! `systemctl` that starts it, and a TLS `/ping` server. None of them is k3s; they
//! play the few answers the agent's steps depend on.

use crate::files::put;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Airgap files on the card at `boot`: a k3s that records its arguments in `log` and
/// reports the node Ready, an install.sh that records its environment and arguments,
/// and an images tarball that is not one.
pub fn airgap_k3s(boot: &Path, log: &Path) {
    let log_s = log.display();
    put(
        &boot.join("piimg/airgap/k3s-arm64"),
        &format!(
            "#!/bin/sh\n# STAND-IN for k3s: records its arguments, reports the node Ready\necho \"k3s $*\" >> {log_s}\necho True\n"
        ),
        0o755,
    );
    put(
        &boot.join("piimg/airgap/install.sh"),
        &format!(
            "#!/bin/sh\n# STAND-IN for k3s install.sh: records environment and arguments\n{{ echo \"installer args: $*\"; env | grep -E '^(INSTALL_K3S|K3S_)' | sort; }} >> {log_s}\n"
        ),
        0o755,
    );
    put(
        &boot.join("piimg/airgap/k3s-airgap-images-arm64.tar.zst"),
        "not really images",
        0o755,
    );
}

/// The Python k3s server stand-in (see its docstring for what it plays).
pub fn standin_k3s_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("standin/standin_k3s.py")
}

/// One node of a stand-in cluster: where its root is, who it is, where it listens,
/// and the cluster state directory all stand-ins share.
#[derive(Debug, Clone, Copy)]
pub struct StandinNode<'a> {
    /// The node's root (`--root`).
    pub root: &'a Path,
    /// Its name.
    pub name: &'a str,
    /// Its loopback address.
    pub ip: &'a str,
    /// The supervisor/API port.
    pub port: u16,
    /// The shared cluster state directory.
    pub cluster: &'a Path,
}

/// Card airgap k3s at `boot` that runs [`standin_k3s_py`]: `server`/`agent` serve
/// (or register) as `node`, `kubectl ... get node` asks whether it registered.
pub fn cluster_k3s(boot: &Path, node: StandinNode) {
    put(
        &boot.join("piimg/airgap/k3s-arm64"),
        &format!(
            "#!/bin/sh\n# STAND-IN for k3s (tests only; not k3s): `server`/`agent` start the Python stand-in,\n# `kubectl ... get node` asks it whether this node registered.\ncase \"$1\" in\n  kubectl) exec python3 '{py}' ready --root '{root}' --cluster '{state}' --node {name} ;;\n  server|agent) exec python3 '{py}' serve --role \"$1\" --root '{root}' --ip {ip} --port {port} --cluster '{state}' --node {name} ;;\n  *) echo \"stand-in k3s: unexpected $*\" >&2; exit 2 ;;\nesac\n",
            py = standin_k3s_py().display(),
            root = node.root.display(),
            state = node.cluster.display(),
            name = node.name,
            ip = node.ip,
            port = node.port
        ),
        0o755,
    );
}

/// A `systemctl` at `path` for `start --no-block k3s.service|k3s-agent.service` that
/// records the call in `log` and starts the root's k3s in the background (its output
/// in `<root>/var/log/standin-k3s.log`).
pub fn systemctl(path: &Path, root: &Path, log: &Path) {
    put(
        path,
        &format!(
            "#!/bin/sh\n# STAND-IN for `systemctl start --no-block k3s.service|k3s-agent.service` (tests only)\ncase \"$3\" in k3s.service) role=server ;; k3s-agent.service) role=agent ;; *) echo \"unexpected: $*\" >&2; exit 1 ;; esac\necho \"systemctl $*\" >> '{log}'\nmkdir -p '{root}/var/log'\nsetsid '{root}/usr/local/bin/k3s' \"$role\" >> '{root}/var/log/standin-k3s.log' 2>&1 < /dev/null &\n",
            log = log.display(),
            root = root.display()
        ),
        0o755,
    );
}

/// A server's `https://127.0.0.1:PORT/ping` answering `pong`: `openssl s_server
/// -WWW` on loopback with a throwaway self-signed certificate. Stopped on drop.
pub struct PingServer {
    /// The port it listens on.
    pub port: u16,
    child: Child,
}

impl PingServer {
    /// Starts one serving from `dir` (created; it holds the certificate and `ping`).
    pub fn start(dir: &Path) -> PingServer {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        fs::write(dir.join("ping"), "pong").unwrap_or_else(|e| panic!("ping: {e}"));
        let certs = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=stand-in",
                "-keyout",
                "k.pem",
                "-out",
                "c.pem",
            ])
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        assert!(certs.status.success(), "openssl req failed");
        let port = crate::net::free_port(&["127.0.0.1"]);
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-WWW",
                "-cert",
                "c.pem",
                "-key",
                "k.pem",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("openssl s_server: {e}"));
        PingServer { port, child }
    }
}

impl Drop for PingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
