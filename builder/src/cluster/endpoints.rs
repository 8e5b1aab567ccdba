//! Where a cluster's API answers: every server's address and the VIP, on k3s's
//! HTTPS port (the supervisor, which also proxies the Kubernetes API).

use super::ClusterError;
use crate::profile::Profile;
use crate::upstream;
use serde::Serialize;
use std::net::Ipv4Addr;

/// One address the API may answer on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The server's node name, or `VIP`.
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The HTTPS port.
    pub port: u16,
}

impl Endpoint {
    /// `https://IP:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.ip, self.port)
    }
}

/// Name of the VIP's endpoint.
pub const VIP: &str = "VIP";

/// The API port: `explicit` (the `--api-port` flag) if given, else the profile's
/// `k3s.server_args` `https-listen-port=N`, else k3s's default (upstream.toml
/// `[k3s] api_port`).
pub fn api_port(profile: &Profile, explicit: Option<u16>) -> Result<u16, ClusterError> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let facts = &upstream::facts().k3s;
    for (i, arg) in profile.k3s.server_args.iter().enumerate() {
        let Some((key, value)) = arg.split_once('=') else {
            continue;
        };
        if key.trim() != facts.api_port_arg {
            continue;
        }
        return match value.trim().trim_matches('"').parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(ClusterError::Setting {
                field: format!("k3s.server_args[{i}]"),
                message: format!(
                    "`{arg}` is not a port number (1-65535); fix it or pass --api-port"
                ),
            }),
        };
    }
    Ok(facts.api_port)
}

/// The servers' endpoints in profile order.
pub fn servers(profile: &Profile, port: u16) -> Vec<Endpoint> {
    profile
        .servers()
        .filter_map(|n| {
            Some(Endpoint {
                name: n.name.clone(),
                ip: n.ip?,
                port,
            })
        })
        .collect()
}

/// The VIP's endpoint, when the profile has one.
pub fn vip(profile: &Profile, port: u16) -> Option<Endpoint> {
    profile.k3s.vip.map(|ip| Endpoint {
        name: VIP.to_string(),
        ip,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(server_args: &str) -> Profile {
        let text = format!(
            r#"
[cluster]
name = "lab"
[network]
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
dns = ["10.0.0.1"]
[k3s]
version = "v1.31.4+k3s1"
vip = "10.0.0.10"
server_args = [{server_args}]
[access]
admin_user = "pi"
[[nodes]]
name = "s1"
ip = "10.0.0.11"
role = "server"
hardware = "pi5-8gb"
[[nodes]]
name = "w1"
ip = "10.0.0.21"
role = "agent"
hardware = "pi5-8gb"
"#
        );
        crate::profile::parse(&text, std::path::Path::new("lab.toml")).expect("profile")
    }

    #[test]
    fn the_port_comes_from_the_flag_then_the_profile_then_k3s() {
        assert_eq!(api_port(&profile(""), None).expect("port"), 6443);
        let p = profile(r#""https-listen-port=7443""#);
        assert_eq!(api_port(&p, None).expect("port"), 7443);
        assert_eq!(api_port(&p, Some(9000)).expect("port"), 9000);
        let err = api_port(&profile(r#""https-listen-port=x""#), None).expect_err("bad");
        assert!(err.to_string().starts_with("k3s.server_args[0]:"), "{err}");
    }

    #[test]
    fn servers_and_vip() {
        let p = profile("");
        let s = servers(&p, 6443);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].url(), "https://10.0.0.11:6443");
        assert_eq!(vip(&p, 6443).expect("vip").url(), "https://10.0.0.10:6443");
    }
}
