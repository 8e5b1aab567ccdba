//! The cluster profile: typed model, validation, hardware classes, secrets.
//!
//! `load()` reads a TOML profile, [`validate()`] reports every problem at once,
//! [`secrets::ClusterSecrets`] keeps the cluster's secrets next to it, and
//! [`crate::plan::plan`] turns the three into one `NodePlan` per node.

pub mod customize;
pub mod day_one;
pub mod discover;
pub mod hardware;
pub mod keys;
mod load;
pub mod model;
pub mod net;
pub mod password;
pub mod secrets;
pub mod suggest;
pub mod validate;
pub mod wifi;

pub use load::{load, parse};
pub use model::Profile;
pub use validate::{Finding, Findings, validate};

use std::path::PathBuf;

/// Default profile path, relative to the current directory.
pub const DEFAULT_PROFILE: &str = "profiles/homelab.toml";
/// Environment variable naming the profile when `--profile` is not given.
pub const PROFILE_ENV: &str = "PIIMG_PROFILE";

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read profile {path}: {source}")]
    Read {
        /// The profile path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid profile (syntax, type, unknown key).
    #[error("{path}:{line}:{col}: {message}")]
    Parse {
        /// The profile path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What is wrong (with the nearest valid key for an unknown one).
        message: String,
    },
}
