//! The gRPC services: thin layers that authenticate, map messages to the domain and call
//! [`Environments`](crate::Environments) and [`Tokens`](crate::auth::Tokens).

pub mod admin;
mod paging;
pub mod sync;
pub mod watch;
mod wire;

use tonic::{Code, Request, Status};

use crate::auth::{Access, Tokens};
use crate::error::ServerError;
use crate::storage::{Store, StoreError, TokenRecord};

impl From<ServerError> for Status {
    fn from(err: ServerError) -> Status {
        let code = match &err {
            ServerError::Invalid(_) | ServerError::Validation(_) => Code::InvalidArgument,
            ServerError::NotFound(_) => Code::NotFound,
            ServerError::AlreadyExists(_) => Code::AlreadyExists,
            ServerError::VersionConflict(_) => Code::Aborted,
            ServerError::Precondition(_) => Code::FailedPrecondition,
            ServerError::Unauthenticated(_) => Code::Unauthenticated,
            ServerError::PermissionDenied(_) => Code::PermissionDenied,
            // The environment was deleted while the request was under way.
            ServerError::Store(StoreError::NoEnvironment(_)) => Code::NotFound,
            ServerError::Store(e) => {
                tracing::error!(error = %e, "storage failed");
                Code::Internal
            }
        };
        Status::new(code, err.to_string())
    }
}

/// The token of a request's `authorization: Bearer <token>` metadata, checked for `access`.
pub fn authorize<S: Store, T>(
    tokens: &Tokens<S>,
    request: &Request<T>,
    access: Access<'_>,
) -> Result<TokenRecord, Status> {
    let token = authenticate(tokens, request)?;
    if !token.allows(access) {
        return Err(permission_denied(&token, access));
    }
    Ok(token)
}

/// The token of a request's `authorization: Bearer <token>` metadata, if it exists and is
/// not revoked; what it may do is checked separately.
pub fn authenticate<S: Store, T>(
    tokens: &Tokens<S>,
    request: &Request<T>,
) -> Result<TokenRecord, Status> {
    let header = request.metadata().get("authorization").ok_or_else(|| {
        Status::unauthenticated(
            "missing authorization metadata: send `authorization: Bearer <token>`",
        )
    })?;
    let secret = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Status::unauthenticated("the authorization metadata must be `Bearer <token>`")
        })?;
    Ok(tokens.authenticate(secret.trim())?)
}

/// The refusal of `access` to `token`.
pub fn permission_denied(token: &TokenRecord, access: Access<'_>) -> Status {
    let what = match access {
        Access::Admin => "manage environments and tokens".to_owned(),
        Access::Read(env) => format!("read environment {env:?}"),
        Access::Write(env) => format!("write to environment {env:?}"),
        Access::Sync(env) => format!("sync environment {env:?}"),
    };
    Status::permission_denied(format!(
        "token {:?} ({:?}) may not {what}",
        token.name, token.role
    ))
}
