//! The agent's error type: every message names the file, address or step involved.

use piimg_contract::ContractError;
use std::fmt::Display;

/// Why a step (or the agent) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file, as a path on the node (or the card).
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A card file was refused.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// A step could not do its job; the message says what and why.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// A [`Error::Failed`] from anything printable.
    pub fn failed(msg: impl Display) -> Self {
        Error::Failed(msg.to_string())
    }
}

/// Maps an `io::Error` to [`Error::Io`] naming `path`.
pub fn io(path: impl Display) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        path: path.to_string(),
        source,
    }
}
