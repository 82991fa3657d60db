//! The SDK's errors.

use std::path::PathBuf;

/// What can go wrong setting up a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bootstrap file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A bootstrap document is not a valid export document.
    #[error("invalid bootstrap document:\n{0}")]
    Invalid(#[from] flagstaff_engine::ValidationError),
}
