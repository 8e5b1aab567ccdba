//! `--merge`: adding piimg's cluster, user and context to the user's kubeconfig,
//! replacing only entries of the same names and keeping everything else (other
//! contexts, preferences, extensions) as it was.
//!
//! Which file, as kubectl decides for a new entry (client-go
//! tools/clientcmd/config.go `GetDefaultFilename`): with `KUBECONFIG` naming one
//! file, that file; naming several, the first that exists, else the last; without
//! `KUBECONFIG`, `~/.kube/config`.

use super::kubeconfig::{Kubeconfig, write_private};
use super::{ClusterError, io_err};
use serde_yaml_ng::{Mapping, Value};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The kubeconfig `--merge` writes to, given the `KUBECONFIG` and `HOME` values.
pub fn target(
    kubeconfig_env: Option<&OsStr>,
    home: Option<&OsStr>,
) -> Result<PathBuf, ClusterError> {
    let files: Vec<PathBuf> = kubeconfig_env
        .map(|v| {
            std::env::split_paths(v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    match files.len() {
        0 => {}
        1 => return Ok(files[0].clone()),
        _ => {
            return Ok(files
                .iter()
                .find(|f| f.exists())
                .or(files.last())
                .cloned()
                .unwrap_or_default());
        }
    }
    match home.filter(|h| !h.is_empty()) {
        Some(h) => Ok(Path::new(h).join(".kube").join("config")),
        None => Err(ClusterError::Setting {
            field: "HOME".into(),
            message: "is not set, so there is no ~/.kube/config to merge into; set KUBECONFIG or use --out".into(),
        }),
    }
}

/// Merges `ours` into the kubeconfig at `path` (created when missing) and writes it
/// back atomically, mode 0600. The current context is set only when the file has
/// none. Returns whether the file existed.
pub fn merge_into(path: &Path, ours: &Kubeconfig) -> Result<bool, ClusterError> {
    // Write through a symlink (a dotfiles checkout) rather than replacing it.
    let path = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(_) => path.to_path_buf(),
    };
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&path)(e)),
    };
    let existed = existing.is_some();
    let bad = |message: String| ClusterError::BadKubeconfig {
        path: path.clone(),
        message,
    };
    let mut doc = match existing.as_deref().map(str::trim) {
        None | Some("") => Mapping::new(),
        Some(text) => match serde_yaml_ng::from_str::<Value>(text) {
            Ok(Value::Mapping(m)) => m,
            Ok(Value::Null) => Mapping::new(),
            Ok(_) => return Err(bad("is not a kubeconfig (not a YAML mapping)".into())),
            Err(e) => return Err(bad(format!("is not valid YAML ({e})"))),
        },
    };
    let ours_value = serde_yaml_ng::to_value(ours).map_err(|e| bad(e.to_string()))?;
    for key in ["clusters", "users", "contexts"] {
        let new_entries = match ours_value.get(key) {
            Some(Value::Sequence(s)) => s.clone(),
            _ => Vec::new(),
        };
        let list = doc
            .entry(Value::from(key))
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if list.is_null() {
            *list = Value::Sequence(Vec::new());
        }
        let Value::Sequence(items) = list else {
            return Err(bad(format!("`{key}` is not a list")));
        };
        for entry in new_entries {
            let name = entry.get("name").cloned();
            match items.iter_mut().find(|i| i.get("name") == name.as_ref()) {
                Some(slot) => *slot = entry,
                None => items.push(entry),
            }
        }
    }
    for (key, value) in [("apiVersion", "v1"), ("kind", "Config")] {
        doc.entry(Value::from(key))
            .or_insert_with(|| Value::from(value));
    }
    let current = doc
        .entry(Value::from("current-context"))
        .or_insert_with(|| Value::from(""));
    if current.as_str().is_none_or(str::is_empty) {
        *current = Value::from(ours.current_context.clone());
    }
    let text = serde_yaml_ng::to_string(&Value::Mapping(doc)).map_err(|e| bad(e.to_string()))?;
    write_private(&path, &text)?;
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_follows_kubectl() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        assert_eq!(
            target(None, Some(home.as_os_str())).expect("home"),
            home.join(".kube/config")
        );
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let list = std::env::join_paths([&a, &b]).expect("join");
        assert_eq!(target(Some(&list), None).expect("last"), b);
        std::fs::write(&a, "").expect("a");
        assert_eq!(target(Some(&list), None).expect("first existing"), a);
        assert_eq!(target(Some(b.as_os_str()), None).expect("one"), b);
        assert!(target(None, None).is_err());
    }
}
