//! Which profile a command uses when none is named: one rule for every subcommand.
//!
//! `--profile PATH`, else `$PIIMG_PROFILE`, else `./piimg.toml`, else the only
//! `profiles/*.toml` of the current directory. Anything else is an error that lists
//! what was looked at and what was found.

use super::PROFILE_ENV;
use std::path::{Path, PathBuf};

/// The profile file looked for in the current directory first.
pub const LOCAL_PROFILE: &str = "piimg.toml";
/// The directory whose single `*.toml` is used when there is no `piimg.toml`.
pub const PROFILES_DIR: &str = "profiles";

/// Why no single profile could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Nothing named and nothing found.
    #[error(
        "no profile: no --profile, no ${PROFILE_ENV}, no ./{LOCAL_PROFILE} and no {PROFILES_DIR}/*.toml in {dir}; pass --profile PATH, set {PROFILE_ENV}, or create one with `piimg init`"
    )]
    None {
        /// The directory searched.
        dir: String,
    },
    /// More than one `profiles/*.toml` and nothing to choose between them.
    #[error(
        "several profiles in {dir}/{PROFILES_DIR}: {}; pass --profile PATH or set {PROFILE_ENV}",
        .candidates.join(", ")
    )]
    Ambiguous {
        /// The directory searched.
        dir: String,
        /// The candidates found, sorted.
        candidates: Vec<String>,
    },
}

/// The profile to use: `explicit` (from `--profile`), else `env` (the value of
/// `$PIIMG_PROFILE`, ignored when empty), else what is found under `cwd`.
pub fn discover(
    explicit: Option<&Path>,
    env: Option<&std::ffi::OsStr>,
    cwd: &Path,
) -> Result<PathBuf, DiscoveryError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(v) = env.filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(v));
    }
    if cwd.join(LOCAL_PROFILE).is_file() {
        return Ok(PathBuf::from(LOCAL_PROFILE));
    }
    let mut candidates: Vec<String> = std::fs::read_dir(cwd.join(PROFILES_DIR))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_profile_name(n))
        .collect();
    candidates.sort();
    let dir = cwd.display().to_string();
    match candidates.len() {
        0 => Err(DiscoveryError::None { dir }),
        1 => Ok(Path::new(PROFILES_DIR).join(&candidates[0])),
        _ => Err(DiscoveryError::Ambiguous {
            dir,
            candidates: candidates
                .into_iter()
                .map(|c| format!("{PROFILES_DIR}/{c}"))
                .collect(),
        }),
    }
}

/// A `*.toml` that is not a profile's companion state file (`NAME.state.toml`,
/// see [`super::secrets::state_path`]).
fn is_profile_name(name: &str) -> bool {
    name.strip_suffix(".toml")
        .is_some_and(|stem| !stem.is_empty() && !stem.ends_with(".state"))
}

/// [`discover`] for this process: its `$PIIMG_PROFILE` and current directory.
pub fn discover_here(explicit: Option<&Path>) -> Result<PathBuf, DiscoveryError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    discover(explicit, std::env::var_os(PROFILE_ENV).as_deref(), &cwd)
}

/// Where `piimg init` writes when no profile is named: `$PIIMG_PROFILE`, else
/// `profiles/homelab.toml` (which [`discover`] then finds on its own).
pub fn init_target(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(PROFILE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(super::DEFAULT_PROFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    #[test]
    fn order_is_flag_env_local_then_single_profile() {
        let d = tempfile::tempdir().unwrap();
        let cwd = d.path();
        assert!(matches!(
            discover(None, None, cwd),
            Err(DiscoveryError::None { .. })
        ));
        touch(&cwd.join("profiles/a.toml"));
        touch(&cwd.join("profiles/notes.md"));
        touch(&cwd.join("profiles/a.state.toml"));
        assert_eq!(
            discover(None, None, cwd).unwrap(),
            Path::new("profiles/a.toml")
        );
        touch(&cwd.join("profiles/b.toml"));
        let err = discover(None, None, cwd).unwrap_err().to_string();
        assert!(err.contains("profiles/a.toml, profiles/b.toml"), "{err}");
        touch(&cwd.join("piimg.toml"));
        assert_eq!(discover(None, None, cwd).unwrap(), Path::new("piimg.toml"));
        let env = std::ffi::OsStr::new("e.toml");
        assert_eq!(discover(None, Some(env), cwd).unwrap(), Path::new("e.toml"));
        assert_eq!(
            discover(None, Some(std::ffi::OsStr::new("")), cwd).unwrap(),
            Path::new("piimg.toml")
        );
        assert_eq!(
            discover(Some(Path::new("x.toml")), Some(env), cwd).unwrap(),
            Path::new("x.toml")
        );
    }
}
