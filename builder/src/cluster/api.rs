//! The HTTPS client piimg talks to k3s with: only the cluster's server CA is trusted
//! (no system roots), every request is bounded by a timeout, and a failure becomes
//! a one-line reason ("no answer within 5 s", "connection refused", "HTTP 401 …").
//!
//! Two identities, as k3s separates them: the Kubernetes API gets an admin client
//! certificate (signed by client-ca, pkg/daemons/control/deps/deps.go); the
//! supervisor's `/db/info` gets basic auth `server:<token secret>` and no client
//! certificate (pkg/etcd/etcd.go `handler`: role `k3s:server`), like a joining server.

use super::endpoints::Endpoint;
use super::{ClusterError, k8s};
use crate::pki::ClusterCa;
use reqwest::blocking::Client;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A client certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// Certificate PEM.
    pub cert_pem: String,
    /// PKCS#8 key PEM.
    pub key_pem: String,
}

/// Talks to one cluster's servers.
#[derive(Debug, Clone)]
pub struct ApiClient {
    admin: Client,
    supervisor: Client,
    token_secret: Option<String>,
    timeout: Duration,
}

/// Why one request failed, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What went wrong.
    pub message: String,
    /// The HTTP status, when the server answered with an error.
    pub status: Option<u16>,
}

impl ApiError {
    /// A failure without an HTTP status.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: None,
        }
    }
}

impl ApiClient {
    /// A client trusting `ca`'s server CA bundle, presenting `identity` to the API,
    /// and using `token_secret` for `/db/info`. Each request gives up after `timeout`.
    pub fn new(
        ca: &ClusterCa,
        identity: &ClientIdentity,
        token_secret: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let bundle_path = ca.dir().join("server-ca.crt");
        let tls_err = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |e: reqwest::Error| ClusterError::Tls {
                path,
                message: chain(&e),
            }
        };
        let roots = reqwest::Certificate::from_pem_bundle(ca.server_ca_bundle().as_bytes())
            .map_err(tls_err(&bundle_path))?;
        let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
        let id = reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(tls_err(&ca.dir().join("client-ca.key")))?;
        let base = || {
            Client::builder()
                .tls_certs_only(roots.clone())
                .connect_timeout(timeout.min(Duration::from_secs(3)))
                .timeout(timeout)
                // A k3s API is never reached through a proxy from the LAN.
                .no_proxy()
        };
        let admin = base().identity(id).build().map_err(tls_err(&bundle_path))?;
        let supervisor = base().build().map_err(tls_err(&bundle_path))?;
        Ok(Self {
            admin,
            supervisor,
            token_secret,
            timeout,
        })
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET path` on the Kubernetes API at `ep`, as the admin identity.
    pub fn get<T: DeserializeOwned>(&self, ep: &Endpoint, path: &str) -> Result<T, ApiError> {
        self.fetch(self.admin.get(format!("{}{path}", ep.url())), path)
    }

    /// k3s's etcd member list from `ep`'s `/db/info` (server credentials).
    pub fn db_info(&self, ep: &Endpoint) -> Result<k8s::Members, ApiError> {
        let Some(secret) = &self.token_secret else {
            return Err(ApiError::new(
                "the secrets directory has no k3s-token, and /db/info needs the server token",
            ));
        };
        let path = &crate::upstream::facts().k3s.db_info_path;
        let req = self
            .supervisor
            .get(format!("{}{path}", ep.url()))
            .basic_auth("server", Some(secret));
        self.fetch(req, path)
    }

    fn fetch<T: DeserializeOwned>(
        &self,
        req: reqwest::blocking::RequestBuilder,
        path: &str,
    ) -> Result<T, ApiError> {
        let resp = req.send().map_err(|e| self.reason(&e))?;
        let status = resp.status();
        let body = resp.text().map_err(|e| self.reason(&e))?;
        if !status.is_success() {
            let detail: String = body.trim().chars().take(200).collect();
            let hint = match status.as_u16() {
                401 => {
                    " (the cluster does not accept piimg's credentials: is this the cluster's secrets directory?)"
                }
                403 => " (authenticated, but not allowed)",
                _ => "",
            };
            return Err(ApiError {
                message: format!("{path}: HTTP {status}{hint}: {detail}"),
                status: Some(status.as_u16()),
            });
        }
        serde_json::from_str(&body).map_err(|e| {
            ApiError::new(format!("{path}: the answer is not the JSON expected ({e})"))
        })
    }

    fn reason(&self, e: &reqwest::Error) -> ApiError {
        if e.is_timeout() {
            return ApiError::new(format!("no answer within {} s", self.timeout.as_secs_f64()));
        }
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        return ApiError::new("connection refused (k3s not running there?)");
                    }
                    std::io::ErrorKind::TimedOut => {
                        return ApiError::new(format!(
                            "no answer within {} s",
                            self.timeout.as_secs_f64()
                        ));
                    }
                    _ => {}
                }
            }
            src = s.source();
        }
        ApiError::new(chain(e))
    }
}

/// An error and its sources, `a: b: c`, without repeats.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}
