//! Admin access to a running cluster: a client certificate signed by the cluster's
//! client-ca (which k3s's API server trusts for client certificates), in the
//! Organization `system:masters` like k3s's own `k3s.yaml` admin (deps.go
//! `genClientCerts`; upstream.toml `[k3s] admin_user`/`admin_group`), with a bounded
//! validity: a client certificate cannot be revoked, so it must expire.
//!
//! The certificate is issued on the workstation and only ever written to the
//! kubeconfig the user asked for, never to a card.

use super::api::ClientIdentity;
use super::{ClusterError, io_err};
use crate::pki::ClusterCa;
use base64::Engine;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use time::OffsetDateTime;

/// Default validity of a kubeconfig's certificate, in days.
pub const DEFAULT_VALID_DAYS: u32 = 7;
/// Longest validity `piimg kubeconfig` issues, in days.
pub const MAX_VALID_DAYS: u32 = 365;
/// How far back a certificate's validity starts, for clocks slightly behind ours.
pub const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// An issued admin certificate.
#[derive(Debug, Clone)]
pub struct AdminCert {
    /// Certificate and key.
    pub identity: ClientIdentity,
    /// Subject CN (the Kubernetes user name).
    pub user: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// Issues an admin client certificate for Kubernetes user `user` (group
/// `system:masters`), signed by `ca`'s client-ca, valid from a few minutes ago for
/// `valid`.
pub fn issue_admin(
    ca: &ClusterCa,
    user: &str,
    valid: time::Duration,
) -> Result<AdminCert, ClusterError> {
    let key_path = ca.dir().join("client-ca.key");
    let ca_key = KeyPair::from_pem(ca.file("client-ca.key").unwrap_or_default()).map_err(|e| {
        ClusterError::Tls {
            path: key_path.clone(),
            message: format!("not a usable CA key ({e})"),
        }
    })?;
    let issuer = Issuer::from_ca_cert_pem(ca.file("client-ca.pem").unwrap_or_default(), &ca_key)
        .map_err(|e| ClusterError::Tls {
            path: ca.dir().join("client-ca.pem"),
            message: format!("not a usable CA certificate ({e})"),
        })?;
    let issue_err = |e: rcgen::Error| ClusterError::Issue {
        what: format!("the admin certificate for {user}"),
        message: e.to_string(),
    };
    let key = KeyPair::generate().map_err(issue_err)?;
    let facts = &crate::upstream::facts().k3s;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, facts.admin_group.as_str());
    dn.push(DnType::CommonName, user);
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    // Whole seconds: what the certificate can hold.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    p.not_before = now - CLOCK_SKEW;
    p.not_after = now + valid;
    let cert = p.signed_by(&key, &issuer).map_err(issue_err)?;
    Ok(AdminCert {
        identity: ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
        user: user.to_string(),
        not_before: p.not_before,
        not_after: p.not_after,
    })
}

/// A kubeconfig (client-go's `clientcmdapi/v1.Config`, the fields piimg writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kubeconfig {
    /// `v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `Config`.
    pub kind: String,
    /// Named clusters.
    pub clusters: Vec<NamedCluster>,
    /// Named users.
    pub users: Vec<NamedUser>,
    /// Named contexts.
    pub contexts: Vec<NamedContext>,
    /// The context used by default.
    #[serde(rename = "current-context")]
    pub current_context: String,
}

/// `clusters[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// Entry name.
    pub name: String,
    /// Server and CA.
    pub cluster: ClusterEntry,
}

/// `clusters[].cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterEntry {
    /// `https://HOST:PORT`.
    pub server: String,
    /// Base64 of the PEM CA bundle that verifies the server.
    #[serde(rename = "certificate-authority-data")]
    pub certificate_authority_data: String,
}

/// `users[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedUser {
    /// Entry name.
    pub name: String,
    /// Client certificate and key.
    pub user: UserEntry,
}

/// `users[].user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEntry {
    /// Base64 of the PEM client certificate.
    #[serde(rename = "client-certificate-data")]
    pub client_certificate_data: String,
    /// Base64 of the PEM client key.
    #[serde(rename = "client-key-data")]
    pub client_key_data: String,
}

/// `contexts[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedContext {
    /// Entry name.
    pub name: String,
    /// Which cluster and user.
    pub context: ContextEntry,
}

/// `contexts[].context`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextEntry {
    /// Cluster entry name.
    pub cluster: String,
    /// User entry name.
    pub user: String,
}

impl Kubeconfig {
    /// One cluster, one user and one context, all called `name` (the user
    /// `name-admin`), the context current.
    pub fn single(name: &str, server: &str, ca_bundle_pem: &str, cert: &AdminCert) -> Self {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let user = format!("{name}-admin");
        Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: name.to_string(),
                cluster: ClusterEntry {
                    server: server.to_string(),
                    certificate_authority_data: b64(ca_bundle_pem),
                },
            }],
            users: vec![NamedUser {
                name: user.clone(),
                user: UserEntry {
                    client_certificate_data: b64(&cert.identity.cert_pem),
                    client_key_data: b64(&cert.identity.key_pem),
                },
            }],
            contexts: vec![NamedContext {
                name: name.to_string(),
                context: ContextEntry {
                    cluster: name.to_string(),
                    user,
                },
            }],
            current_context: name.to_string(),
        }
    }

    /// The YAML text.
    pub fn to_yaml(&self) -> Result<String, ClusterError> {
        serde_yaml_ng::to_string(self).map_err(|e| ClusterError::Issue {
            what: "the kubeconfig".into(),
            message: e.to_string(),
        })
    }
}

/// Writes `text` to `path` atomically with mode 0600 (temp file, fsync, rename).
pub fn write_private(path: &Path, text: &str) -> Result<(), ClusterError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err(parent))?;
        }
    }
    crate::atomic::write_atomic(path, text.as_bytes(), 0o600).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_certificate_is_a_system_masters_client_of_client_ca() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::create(tmp.path(), "lab").expect("ca");
        let cert = issue_admin(&ca, "piimg-admin", time::Duration::days(3)).expect("issue");
        let der = pem::parse(&cert.identity.cert_pem).expect("pem");
        let (_, x) = x509_parser::parse_x509_certificate(der.contents()).expect("x509");
        let subject = x.subject().to_string();
        assert!(
            subject.contains("O=system:masters") && subject.contains("CN=piimg-admin"),
            "{subject}"
        );
        let ca_der = pem::parse(ca.file("client-ca.pem").expect("client-ca")).expect("pem");
        let (_, ca_x) = x509_parser::parse_x509_certificate(ca_der.contents()).expect("x509");
        assert_eq!(x.issuer(), ca_x.subject());
        x.verify_signature(Some(ca_x.public_key()))
            .expect("signed by client-ca");
        let days = (x.validity().not_after.timestamp() - x.validity().not_before.timestamp())
            as f64
            / 86400.0;
        assert!((days - 3.0).abs() < 0.01, "{days}");
    }

    #[test]
    fn the_kubeconfig_round_trips() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::create(tmp.path(), "lab").expect("ca");
        let cert = issue_admin(&ca, "u", time::Duration::days(1)).expect("issue");
        let kc = Kubeconfig::single(
            "lab",
            "https://10.0.0.10:6443",
            ca.server_ca_bundle(),
            &cert,
        );
        let text = kc.to_yaml().expect("yaml");
        assert!(text.contains("current-context: lab"), "{text}");
        let back: Kubeconfig = serde_yaml_ng::from_str(&text).expect("parse");
        assert_eq!(back, kc);
    }
}
