//! The S3 credentials of `[k3s.etcd_s3]` as a k3s config drop-in: a 0600 secret file
//! only server cards carry (`CardSecrets.files`), so the keys never appear in
//! `node.json` and leave the boot partition with `secrets.json`.

use crate::profile::secrets::S3Credentials;
use piimg_contract::RootFile;

/// The drop-in k3s reads after `config.yaml` (`config.yaml.d/*.yaml`, name order).
pub const ETCD_S3_DROP_IN: &str = "/etc/rancher/k3s/config.yaml.d/50-piimg-etcd-s3.yaml";

/// The drop-in holding `etcd-s3-access-key` and `etcd-s3-secret-key` (mode 0600).
pub fn credentials_drop_in(creds: &S3Credentials) -> RootFile {
    // JSON strings are YAML double-quoted scalars: any key survives quoting.
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    RootFile {
        path: ETCD_S3_DROP_IN.to_string(),
        mode: 0o600,
        content: format!(
            "# etcd snapshot upload credentials, written by piimg ([k3s.etcd_s3])\n\
             etcd-s3-access-key: {}\n\
             etcd-s3-secret-key: {}\n",
            quote(&creds.access_key),
            quote(&creds.secret_key)
        ),
        owner: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_quoted_yaml_in_an_owner_only_drop_in() {
        let f = credentials_drop_in(&S3Credentials {
            access_key: "AKIA\"1".into(),
            secret_key: "a/b+c:#d".into(),
        });
        assert_eq!(f.mode, 0o600);
        assert!(f.path.starts_with("/etc/rancher/k3s/config.yaml.d/") && f.path.ends_with(".yaml"));
        assert!(
            f.content
                .contains("etcd-s3-access-key: \"AKIA\\\"1\"\netcd-s3-secret-key: \"a/b+c:#d\"\n"),
            "{}",
            f.content
        );
    }
}
