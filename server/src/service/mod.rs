//! The gRPC services: thin layers that authenticate, map messages to the domain and call
//! [`Environments`](crate::Environments) and [`Tokens`](crate::auth::Tokens).

pub mod admin;
pub(crate) mod oversize;
mod paging;
pub mod sync;
pub mod watch;
pub(crate) mod wire;

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
            ServerError::Unavailable(_) => Code::Unavailable,
            // The environment was deleted while the request was under way.
            ServerError::Store(StoreError::NoEnvironment(_)) => Code::NotFound,
            // The database is down or the connection broke: nothing was changed, or (at
            // COMMIT) the outcome is unknown. Either way worth retrying.
            ServerError::Store(
                StoreError::Unavailable { .. } | StoreError::OutcomeUnknown { .. },
            ) => Code::Unavailable,
            // A plan changed through another flagstaffd meanwhile: retry on what is stored.
            ServerError::Store(StoreError::PlanConflict { .. }) => Code::Aborted,
            // Another flagstaffd leads; this one's duty was not done, the leader's will be.
            ServerError::Store(StoreError::LeaseLost) => Code::Unavailable,
            ServerError::Store(e) => {
                tracing::error!(error = %e, "storage failed");
                Code::Internal
            }
        };
        Status::new(code, bounded_message(&err.to_string()))
    }
}

/// Quoted values longer than this are cut in a status message.
const LONGEST_QUOTE: usize = 128;
/// A status message longer than this keeps its first lines (problems) only.
const LONGEST_MESSAGE: usize = 4 * 1024;

/// `message` as a status message: every quoted value (`"..."`, as `{:?}` writes it) longer than
/// a key may be cut to its first 64 bytes, and a message of many lines (validation problems) cut
/// after the lines that fit in 4 KiB, saying how many more there were. So whatever a request
/// holds, an error quoting it stays small: a client's default limit on metadata is 8 to 16
/// KiB, and over it the client sees RESOURCE_EXHAUSTED instead of the error.
pub(crate) fn bounded_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(LONGEST_MESSAGE + 64));
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..open]);
        let quoted = &rest[open + 1..];
        // The closing quote: the first one not escaped by a backslash.
        let mut escaped = false;
        let close = quoted.char_indices().find_map(|(i, c)| {
            let end = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            end.then_some(i)
        });
        let Some(close) = close else {
            out.push('"');
            rest = quoted;
            break;
        };
        let content = &quoted[..close];
        if content.len() > LONGEST_QUOTE {
            out.push_str(&format!(
                "\"{}\" ({} bytes)",
                flagstaff_engine::clip(content),
                content.len()
            ));
        } else {
            out.push('"');
            out.push_str(content);
            out.push('"');
        }
        rest = &quoted[close + 1..];
    }
    out.push_str(rest);
    if out.len() <= LONGEST_MESSAGE {
        return out;
    }
    let mut kept = String::new();
    let lines: Vec<&str> = out.lines().collect();
    let mut shown = 0;
    for line in &lines {
        if kept.len() + line.len() + 1 > LONGEST_MESSAGE - 64 {
            break;
        }
        kept.push_str(line);
        kept.push('\n');
        shown += 1;
    }
    if shown == 0 {
        // One very long line: its start, cut at a character boundary.
        let mut end = (LONGEST_MESSAGE - 64).min(out.len());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        kept.push_str(&out[..end]);
        kept.push_str("…\n");
    }
    kept.push_str(&format!(
        "… and {} more lines ({} bytes in all)",
        lines.len() - shown.max(1),
        out.len()
    ));
    kept
}

/// The token of a request's `authorization: Bearer <token>` metadata, checked for `access`.
pub async fn authorize<S: Store, T>(
    tokens: &Tokens<S>,
    request: &Request<T>,
    access: Access<'_>,
) -> Result<TokenRecord, Status> {
    let token = authenticate(tokens, request).await?;
    if !token.allows(access) {
        return Err(permission_denied(&token, access));
    }
    Ok(token)
}

/// The token of a request's `authorization: Bearer <token>` metadata, if it exists and is
/// not revoked (looked up in a store other flagstaffd processes share when it is not held
/// here); what it may do is checked separately.
pub async fn authenticate<S: Store, T>(
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
    Ok(tokens.authenticate(secret.trim()).await?)
}

/// The refusal of `access` to `token`.
pub fn permission_denied(token: &TokenRecord, access: Access<'_>) -> Status {
    let what = match access {
        Access::Admin => "manage environments and tokens".to_owned(),
        Access::Read(env) => format!("read environment {env:?}"),
        Access::Write(env) => format!("write to environment {env:?}"),
        Access::Sync(env) => format!("sync environment {env:?}"),
    };
    Status::permission_denied(bounded_message(&format!(
        "token {:?} ({:?}) may not {what}",
        token.name, token.role
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quotes_are_cut_and_long_messages_keep_their_first_lines() {
        let key = "k".repeat(10_000);
        let message = bounded_message(&format!("no flag {key:?} in environment \"production\""));
        assert_eq!(
            message,
            format!(
                "no flag \"{}…\" (10000 bytes) in environment \"production\"",
                "k".repeat(64)
            )
        );
        // Escaped quotes inside a value do not end it.
        let tricky = format!("{:?}", format!("a\"{}", "b".repeat(200)));
        assert!(bounded_message(&format!("x {tricky} y")).ends_with("(203 bytes) y"));
        // A key of 128 bytes is quoted whole.
        let longest = "k".repeat(128);
        assert_eq!(
            bounded_message(&format!("{longest:?}")),
            format!("{longest:?}")
        );

        let problems: Vec<String> = (0..1000)
            .map(|i| format!("flags[f].rules[{i}]: bad"))
            .collect();
        let message = bounded_message(&problems.join("\n"));
        assert!(message.len() <= LONGEST_MESSAGE, "{}", message.len());
        assert!(message.starts_with("flags[f].rules[0]: bad\n"));
        assert!(
            message.ends_with("… and 835 more lines (24889 bytes in all)"),
            "{message}"
        );
    }
}
