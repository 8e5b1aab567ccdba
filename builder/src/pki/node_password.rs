//! Deterministic k3s node passwords: a re-imaged node presents the same
//! `/etc/rancher/node/password`, so the server does not refuse it as a duplicate.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256(key = cluster secret, message = `piimg-node-password:<node>`), hex.
///
/// k3s generates 16 random bytes (32 hex digits) itself; any string works, and a
/// hex digest of 64 digits is as good and reproducible from the cluster secret.
pub fn node_password(cluster_secret: &str, node_name: &str) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(cluster_secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(b"piimg-node-password:");
    mac.update(node_name.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}
