//! The server's errors. Each maps to one gRPC status code where the service layer answers.

use flagstaff_engine::ValidationError;

use crate::storage::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The request or a document in it is invalid (`INVALID_ARGUMENT`); nothing was stored.
    #[error("{0}")]
    Invalid(String),
    /// Documents failed validation (`INVALID_ARGUMENT`), every problem listed; nothing was
    /// stored.
    #[error("{0}")]
    Validation(#[from] ValidationError),
    /// What the request names does not exist (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// What the request creates exists already (`ALREADY_EXISTS`).
    #[error("{0}")]
    AlreadyExists(String),
    /// A document's expected version does not match (`ABORTED`); nothing was stored.
    #[error("{0}")]
    VersionConflict(String),
    /// The request cannot be done in the current state (`FAILED_PRECONDITION`): deleting
    /// something still used, an unconfirmed write to a protected environment.
    #[error("{0}")]
    Precondition(String),
    /// No valid token was presented (`UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The token may not do this (`PERMISSION_DENIED`).
    #[error("{0}")]
    PermissionDenied(String),
    /// What the request names cannot be served now (`UNAVAILABLE`): an environment holding
    /// a damaged record.
    #[error("{0}")]
    Unavailable(String),
    /// The storage failed (`INTERNAL`).
    #[error(transparent)]
    Store(#[from] StoreError),
}
