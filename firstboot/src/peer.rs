//! Talking to the cluster's servers over HTTPS through `curl` (via [`Exec`]):
//! the CA-pinned health probe, and the node-cleaner / server-auth requests a
//! re-imaged server makes before it joins. No TLS code in the agent: curl does it,
//! with `--cacert` (the card's pinned CA bundle), `--cert/--key` (the limited client
//! identity) and a 0600 config file for basic auth (never on the command line).

use crate::exec::Exec;
use crate::http::{Reply, parse_response};
use crate::runner::Cmd;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

/// A server (or the VIP) the node may join through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// What to call it in messages: a node name, or `VIP`.
    pub label: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its supervisor/API port.
    pub port: u16,
}

impl Peer {
    /// `https://ip:port<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.ip, self.port)
    }

    /// `name (ip:port)` for messages.
    pub fn shown(&self) -> String {
        format!("{} ({}:{})", self.label, self.ip, self.port)
    }
}

/// How a request authenticates and what it trusts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Auth<'a> {
    /// Trust only this CA bundle (`--cacert`); `None` means `-k` (no verification).
    pub ca_file: Option<&'a Path>,
    /// Client certificate and key.
    pub client: Option<(&'a Path, &'a Path)>,
    /// A curl config file with `user = "…"` (basic auth).
    pub config: Option<&'a Path>,
}

/// Why a request did not produce an HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurlError {
    /// curl's exit code (`None` if curl could not be run).
    pub code: Option<i32>,
    /// curl's last words.
    pub message: String,
}

impl CurlError {
    /// True when the failure was TLS verification of the server (curl 35, 51, 60).
    pub fn is_tls_trust(&self) -> bool {
        matches!(self.code, Some(35 | 51 | 60))
    }
}

impl std::fmt::Display for CurlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs one HTTPS request with curl and parses the answer.
pub fn request(
    exec: &Exec,
    method: &str,
    url: &str,
    auth: Auth,
    timeout: Duration,
) -> Result<Reply, CurlError> {
    let secs = timeout.as_secs().max(1).to_string();
    let mut args: Vec<String> = ["-sS", "-i", "--noproxy", "*", "--max-time", &secs]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match auth.ca_file {
        Some(ca) => {
            args.push("--cacert".into());
            args.push(ca.display().to_string());
        }
        None => args.push("-k".into()),
    }
    if let Some((cert, key)) = auth.client {
        args.extend([
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ]);
    }
    if let Some(cfg) = auth.config {
        args.extend(["-K".into(), cfg.display().to_string()]);
    }
    if method != "GET" {
        args.extend(["-X".into(), method.to_string()]);
    }
    args.push(url.to_string());
    let cmd = Cmd {
        program: "curl".into(),
        args,
        ..Cmd::default()
    };
    let out = exec.poll(&cmd).map_err(|e| CurlError {
        code: None,
        message: format!("cannot run curl: {e}"),
    })?;
    if !out.success() {
        return Err(CurlError {
            code: out.code,
            message: format!("{url}: {}", out.last_words()),
        });
    }
    parse_response(out.stdout.as_bytes()).ok_or_else(|| CurlError {
        code: out.code,
        message: format!("{url}: not an HTTP answer"),
    })
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Serves the pinned CA, its TLS certificate chains to it, `/ping` says pong.
    Healthy,
    /// Answers, but is not a server of this cluster: never join it.
    Refused(String),
    /// Does not answer (yet).
    Down(String),
}

/// The pinned cluster CA: the exact bundle bytes, the file curl trusts, k3s's hash.
#[derive(Debug, Clone, Copy)]
pub struct Pin<'a> {
    /// `server-ca.crt` as the card says k3s serves it.
    pub pem: &'a str,
    /// The same bundle on disk, for `--cacert`.
    pub file: &'a Path,
    /// k3s's token hash of it, for messages.
    pub hash: &'a str,
}

/// Probes `peer`: `/cacerts` must be exactly the pinned bundle, and `/ping` must
/// answer `pong` over TLS verified against it. Without a pin, only `/ping` (`-k`).
pub fn probe(exec: &Exec, peer: &Peer, pin: Option<Pin>, timeout: Duration) -> Health {
    let trust = Auth {
        ca_file: pin.map(|p| p.file),
        ..Auth::default()
    };
    if let Some(pin) = pin {
        let url = peer.url("/cacerts");
        match request(exec, "GET", &url, Auth::default(), timeout) {
            Err(e) => return Health::Down(e.to_string()),
            Ok(r) if r.status != 200 => {
                return Health::Down(format!("{url} answered HTTP {}", r.status));
            }
            Ok(r) if r.body != pin.pem => {
                return Health::Refused(format!(
                    "{} presents a different cluster CA: its /cacerts is not the bundle this card pins (k3s CA hash {}); join refused",
                    peer.shown(),
                    pin.hash
                ));
            }
            Ok(_) => {}
        }
    }
    let url = peer.url("/ping");
    match request(exec, "GET", &url, trust, timeout) {
        Ok(r) if r.status == 200 && r.body.trim() == "pong" => Health::Healthy,
        Ok(r) => Health::Down(format!(
            "{url} answered HTTP {} {:?}",
            r.status,
            r.body.trim()
        )),
        Err(e) if e.is_tls_trust() && pin.is_some() => Health::Refused(format!(
            "{}'s TLS certificate does not verify against the pinned cluster CA ({e}; a clock far off also does this); join refused",
            peer.shown()
        )),
        Err(e) => Health::Down(e.to_string()),
    }
}

/// The etcd members named for `node` (`<node>-<8 chars>`, as k3s names them) in a
/// `/db/info` answer (etcd's MemberListResponse as JSON).
pub fn members_of(node: &str, db_info: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_str(db_info).map_err(|e| format!("/db/info is not JSON: {e}"))?;
    let members = v
        .get("members")
        .and_then(|m| m.as_array())
        .ok_or("/db/info has no members list")?;
    Ok(members
        .iter()
        .filter_map(|m| m.get("name").and_then(|n| n.as_str()))
        .filter(|n| {
            n.strip_prefix(node)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|suffix| suffix.chars().count() == 8 && !suffix.contains('-'))
        })
        .map(String::from)
        .collect())
}

/// The password part of a k3s token (`K10<hash>::<user>:<password>`, or a bare
/// password), which joining servers send as `server:<password>`.
pub fn token_password(token: &str) -> &str {
    let t = token.trim();
    let Some(rest) = t.strip_prefix("K10") else {
        return t;
    };
    let creds = rest.split_once("::").map_or(rest, |(_, c)| c);
    creds.split_once(':').map_or(creds, |(_, p)| p)
}

/// A curl config line setting basic-auth credentials, quoted for curl.
pub fn curl_user_config(user: &str, password: &str) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("user = \"{}:{}\"\n", esc(user), esc(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_nodes_members_only() {
        let info = r#"{"header":{},"members":[
            {"ID":1,"name":"pi5-master-1-1a2b3c4d"},
            {"ID":2,"name":"pi5-master-10-deadbeef"},
            {"ID":3,"name":"pi5-master-1-extra-12345678"},
            {"ID":4,"name":"pi5-master-2-0badcafe"}]}"#;
        assert_eq!(
            members_of("pi5-master-1", info).unwrap(),
            ["pi5-master-1-1a2b3c4d"]
        );
        assert!(members_of("pi5-master-3", info).unwrap().is_empty());
        assert!(members_of("x", "nope").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn token_passwords() {
        assert_eq!(token_password("K10abc::server:s3cret"), "s3cret");
        assert_eq!(token_password("K10::node:a:b"), "a:b");
        assert_eq!(token_password("plain"), "plain");
        assert_eq!(
            curl_user_config("server", "a\"b"),
            "user = \"server:a\\\"b\"\n"
        );
    }
}
