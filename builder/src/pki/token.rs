//! The secure k3s join token and its CA hash, computed exactly like k3s's `hashCA`
//! (pkg/clientaccess/token.go):
//!
//! - parse the PEM bundle (only `CERTIFICATE` blocks without headers; none at all is
//!   an error);
//! - one certificate: sha256 of the bundle's literal bytes;
//! - several: every certificate after the first whose AuthorityKeyId is empty or
//!   equals its SubjectKeyId is a root, the others intermediates; verify the FIRST
//!   certificate against them (as Go's `x509.Certificate.Verify` does: name chaining,
//!   signatures, CA flags, key usage, validity now, server-auth usage) and hash the
//!   DER of the last certificate of the first chain found; if verification fails,
//!   hash the literal bytes.

use super::PkiError;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

/// `K10<ca-hash>::server:<secret>` for the server CA bundle (`server-ca.crt`).
pub fn secure_token(server_ca_bundle_pem: &[u8], secret: &str) -> Result<String, PkiError> {
    token_for("server", server_ca_bundle_pem, secret)
}

/// `K10<ca-hash>::node:<secret>`: the secure form of k3s's `agent-token`. A server
/// keeps the part after `::node:` as the `node` user's password (`passwd.EnsureUser`,
/// pkg/passwd/passwd.go); an agent sends `node:<secret>` (pkg/clientaccess/token.go),
/// which k3s accepts only on the agent endpoints, never for `/v1-k3s/server-bootstrap`
/// (pkg/server/router.go: that route needs the `server` user).
pub fn secure_agent_token(server_ca_bundle_pem: &[u8], secret: &str) -> Result<String, PkiError> {
    token_for("node", server_ca_bundle_pem, secret)
}

fn token_for(user: &str, server_ca_bundle_pem: &[u8], secret: &str) -> Result<String, PkiError> {
    if secret.is_empty() {
        return Err(PkiError::BadSecret("is empty"));
    }
    if secret.contains("::") || secret.contains(char::is_whitespace) {
        return Err(PkiError::BadSecret("contains `::` or whitespace"));
    }
    Ok(format!(
        "K10{}::{user}:{secret}",
        ca_hash(server_ca_bundle_pem)?
    ))
}

/// The hex sha256 k3s pins in a secure token for this CA bundle (see the module doc).
pub fn ca_hash(bundle: &[u8]) -> Result<String, PkiError> {
    let ders = cert_ders(bundle)?;
    let mut hashed: &[u8] = bundle;
    let root;
    if ders.len() > 1 {
        if let Some(der) = chain_root(&ders) {
            root = der;
            hashed = &root;
        }
    }
    Ok(hex::encode(Sha256::digest(hashed)))
}

/// DER of every `CERTIFICATE` block without headers (like dynamiclistener's
/// `ParseCertsPEM`); a block that does not parse as X.509 is an error.
fn cert_ders(bundle: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    let blocks = pem::parse_many(bundle).map_err(|_| PkiError::NoCertificate)?;
    let mut out = Vec::new();
    for b in blocks {
        if b.tag() != "CERTIFICATE" || b.headers().iter().next().is_some() {
            continue;
        }
        X509Certificate::from_der(b.contents()).map_err(|_| PkiError::NoCertificate)?;
        out.push(b.contents().to_vec());
    }
    if out.is_empty() {
        return Err(PkiError::NoCertificate);
    }
    Ok(out)
}

struct Cert<'a> {
    raw: &'a [u8],
    x: X509Certificate<'a>,
}

impl Cert<'_> {
    fn skid(&self) -> &[u8] {
        for ext in self.x.extensions() {
            if let ParsedExtension::SubjectKeyIdentifier(k) = ext.parsed_extension() {
                return k.0;
            }
        }
        &[]
    }

    fn akid(&self) -> &[u8] {
        for ext in self.x.extensions() {
            if let ParsedExtension::AuthorityKeyIdentifier(a) = ext.parsed_extension() {
                return a.key_identifier.as_ref().map_or(&[][..], |k| k.0);
            }
        }
        &[]
    }

    fn is_ca(&self) -> bool {
        matches!(self.x.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
    }

    fn valid_now(&self) -> bool {
        self.x.validity().is_valid()
    }

    /// Go's EKU rule with the default usage (server auth): a certificate without the
    /// extension allows anything; with it, it must list server auth or "any".
    fn allows_server_auth(&self) -> bool {
        match self.x.extended_key_usage() {
            Ok(Some(eku)) => eku.value.any || eku.value.server_auth,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Go's `CheckSignatureFrom(parent)`: parent must be a CA, allowed to sign
    /// certificates if it restricts key usage, and its key must verify the signature.
    fn signed_by(&self, parent: &Cert) -> bool {
        if !parent.is_ca() {
            return false;
        }
        if let Ok(Some(ku)) = parent.x.key_usage() {
            if !ku.value.key_cert_sign() {
                return false;
            }
        }
        self.x.verify_signature(Some(parent.x.public_key())).is_ok()
    }

    fn same_identity(&self, other: &Cert) -> bool {
        self.x.subject().as_raw() == other.x.subject().as_raw()
            && self.x.public_key().raw == other.x.public_key().raw
    }
}

/// The root DER of the first chain Go's `Verify` would build for `ders[0]`.
fn chain_root(ders: &[Vec<u8>]) -> Option<Vec<u8>> {
    let certs: Vec<Cert> = ders
        .iter()
        .filter_map(|d| {
            X509Certificate::from_der(d)
                .ok()
                .map(|(_, x)| Cert { raw: d, x })
        })
        .collect();
    let leaf = certs.first()?;
    let (mut roots, mut inters) = (Vec::new(), Vec::new());
    for c in certs.iter().skip(1) {
        let akid = c.akid();
        if akid.is_empty() || akid == c.skid() {
            roots.push(c);
        } else {
            inters.push(c);
        }
    }
    if !leaf.valid_now() {
        return None;
    }
    if roots.iter().any(|r| r.raw == leaf.raw) {
        return Some(leaf.raw.to_vec());
    }
    let mut chain = vec![leaf];
    let mut found = Vec::new();
    build(&mut chain, &roots, &inters, &mut found, 0);
    found
        .into_iter()
        .find(|ch| ch.iter().all(|c| c.allows_server_auth()))
        .and_then(|ch| ch.last().map(|c| c.raw.to_vec()))
}

/// Candidates whose subject is `c`'s issuer, in Go's order: matching key id first,
/// then those where only one side has a key id, then mismatches.
fn parents<'c, 'a>(c: &Cert, pool: &[&'c Cert<'a>]) -> Vec<&'c Cert<'a>> {
    let mut buckets: [Vec<&Cert>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let akid = c.akid();
    for p in pool {
        if p.x.subject().as_raw() != c.x.issuer().as_raw() {
            continue;
        }
        let skid = p.skid();
        let i = if skid == akid {
            0
        } else if skid.is_empty() != akid.is_empty() {
            1
        } else {
            2
        };
        buckets[i].push(p);
    }
    buckets.into_iter().flatten().collect()
}

fn build<'c, 'a>(
    chain: &mut Vec<&'c Cert<'a>>,
    roots: &[&'c Cert<'a>],
    inters: &[&'c Cert<'a>],
    found: &mut Vec<Vec<&'c Cert<'a>>>,
    depth: usize,
) {
    let Some(&cur) = chain.last() else { return };
    if depth > 8 {
        return;
    }
    for (is_root, pool) in [(true, roots), (false, inters)] {
        for cand in parents(cur, pool) {
            if chain.iter().any(|c| c.same_identity(cand)) {
                continue;
            }
            if !cur.signed_by(cand) || !cand.valid_now() {
                continue;
            }
            chain.push(cand);
            if is_root {
                found.push(chain.clone());
            } else {
                build(chain, roots, inters, found, depth + 1);
            }
            chain.pop();
        }
    }
}
