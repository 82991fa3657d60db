//! The Admin service's state and what its calls share: authorizing a token, the write path
//! (who writes, on a blocking thread, answered with the document as written), a promotion's
//! opening checks, and what listings and reads show of a document's last change.

use std::sync::Arc;

use flagstaff_proto::pb;
use tonic::{Request, Status};

use crate::auth::{Access, Tokens};
use crate::clients::Clients;
use crate::environments::{Committed, Environments, WriteContext};
use crate::error::ServerError;
use crate::service::watch::Signals;
use crate::service::{authorize, wire};
use crate::storage::{Store, TokenRecord};

/// The Admin service over the environments and tokens of one store.
#[derive(Debug)]
pub struct AdminService<S> {
    pub(super) envs: Arc<Environments<S>>,
    pub(super) tokens: Arc<Tokens<S>>,
    /// The SDK instances, for `ListClients` and `WaitForRevision`.
    pub(super) clients: Arc<Clients>,
    /// Ends `WatchChanges` tails and waits on shutdown.
    pub(super) signals: Signals,
}

impl<S: Store> AdminService<S> {
    /// The service over `envs`, `tokens` and the SDK instances `clients`; its audit tails and
    /// waits end when `signals` say so.
    pub fn new(
        envs: Arc<Environments<S>>,
        tokens: Arc<Tokens<S>>,
        clients: Arc<Clients>,
        signals: Signals,
    ) -> AdminService<S> {
        AdminService {
            envs,
            tokens,
            clients,
            signals,
        }
    }

    /// The request's token, checked for `access`; an environment-scoped access must name an
    /// environment.
    pub(super) async fn allow<T>(
        &self,
        request: &Request<T>,
        access: Access<'_>,
    ) -> Result<TokenRecord, Status> {
        let token = authorize(&self.tokens, request, access).await?;
        if let Access::Read(environment) | Access::Write(environment) = access {
            wire::key(environment, "environment")?;
        }
        Ok(token)
    }

    /// The checks every promotion opens with, in this order: the token writes the environment
    /// and reads the one promoted from, which the request must name; the key; and two
    /// different environments (a `what`, flag or segment, is promoted to another one).
    pub(super) async fn allow_promotion<T: Promotion>(
        &self,
        request: Request<T>,
        what: &str,
    ) -> Result<(TokenRecord, T), Status> {
        let req = request.get_ref();
        let token = self
            .allow(&request, Access::Write(req.environment()))
            .await?;
        if req.source().is_empty() {
            return Err(wire::missing("from_environment").into());
        }
        self.allow(&request, Access::Read(req.source())).await?;
        let req = request.into_inner();
        wire::key(req.key(), "key")?;
        same_environments(req.source(), req.environment(), what)?;
        Ok((token, req))
    }

    /// Runs `write` as `writer` on a blocking thread; returns what it committed and the flag
    /// `key` as written (see [`written_flag`]).
    pub(super) async fn write_flag(
        &self,
        writer: Writer,
        key: String,
        write: impl FnOnce(&Environments<S>, WriteContext<'_>) -> Result<Committed, ServerError>
            + Send
            + 'static,
    ) -> Result<(Committed, pb::Flag), Status> {
        self.write_document(writer, key, write, written_flag).await
    }

    /// Like [`write_flag`](Self::write_flag), for the segment `key` (see [`written_segment`]).
    pub(super) async fn write_segment(
        &self,
        writer: Writer,
        key: String,
        write: impl FnOnce(&Environments<S>, WriteContext<'_>) -> Result<Committed, ServerError>
            + Send
            + 'static,
    ) -> Result<(Committed, pb::SegmentSummary), Status> {
        self.write_document(writer, key, write, written_segment)
            .await
    }

    /// Runs `write` as `writer` on a blocking thread; returns what it committed and the
    /// document `key` as `written` reads it afterwards, on the same thread.
    async fn write_document<T: Send + 'static>(
        &self,
        writer: Writer,
        key: String,
        write: impl FnOnce(&Environments<S>, WriteContext<'_>) -> Result<Committed, ServerError>
            + Send
            + 'static,
        written: fn(&Environments<S>, &str, &str, &Committed) -> Result<T, ServerError>,
    ) -> Result<(Committed, T), Status> {
        let envs = self.envs.clone();
        blocking(move || {
            let committed = write(&envs, writer.ctx())?;
            let document = written(&envs, &writer.environment, &key, &committed)?;
            Ok((committed, document))
        })
        .await
    }
}

/// A request to promote a document: the environment written, the one the document is copied
/// from, and the document's key.
pub(super) trait Promotion {
    /// The environment written.
    fn environment(&self) -> &str;
    /// The environment the document is copied from (`from_environment`).
    fn source(&self) -> &str;
    /// The document's key.
    fn key(&self) -> &str;
}

impl Promotion for pb::PromoteFlagRequest {
    fn environment(&self) -> &str {
        &self.environment
    }
    fn source(&self) -> &str {
        &self.from_environment
    }
    fn key(&self) -> &str {
        &self.key
    }
}

impl Promotion for pb::PromoteSegmentRequest {
    fn environment(&self) -> &str {
        &self.environment
    }
    fn source(&self) -> &str {
        &self.from_environment
    }
    fn key(&self) -> &str {
        &self.key
    }
}

/// Who writes where and why, owned, so that a write can move to a blocking thread.
pub(super) struct Writer {
    pub(super) environment: String,
    actor: String,
    /// The rpc's name, for the audit log.
    operation: &'static str,
    comment: String,
    confirmed: bool,
}

impl Writer {
    /// A write by `token`: its name is the actor of the audit entry; the comment is checked
    /// against its limits.
    pub(super) fn new(
        token: &TokenRecord,
        operation: &'static str,
        environment: String,
        comment: String,
        confirmed: bool,
    ) -> Result<Writer, ServerError> {
        wire::comment(&comment)?;
        Ok(Writer {
            environment,
            actor: token.name.clone(),
            operation,
            comment,
            confirmed,
        })
    }

    pub(super) fn ctx(&self) -> WriteContext<'_> {
        WriteContext {
            environment: &self.environment,
            actor: &self.actor,
            operation: self.operation,
            comment: &self.comment,
            confirmed: self.confirmed,
            duty: false,
        }
    }
}

/// Runs `work` on a blocking thread.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("a blocking task failed: {e}")))?
        .map_err(Status::from)
}

/// A write's response document: the flag it wrote, or, when the write changed nothing, the
/// flag as stored.
pub(super) fn written_flag<S: Store>(
    envs: &Environments<S>,
    environment: &str,
    key: &str,
    committed: &Committed,
) -> Result<pb::Flag, ServerError> {
    if let Some(flag) = committed.flags.iter().find(|f| f.key == key) {
        return Ok(pb::Flag::from(flag));
    }
    let current = envs.get(environment)?.current();
    current
        .snapshot
        .flag(key)
        .map(pb::Flag::from)
        .ok_or_else(|| {
            ServerError::NotFound(format!("no flag {key:?} in environment {environment:?}"))
        })
}

/// Like [`written_flag`], for a segment, without its key lists.
fn written_segment<S: Store>(
    envs: &Environments<S>,
    environment: &str,
    key: &str,
    committed: &Committed,
) -> Result<pb::SegmentSummary, ServerError> {
    if let Some(segment) = committed.segments.iter().find(|s| s.key == key) {
        return Ok(wire::segment_summary(segment));
    }
    let current = envs.get(environment)?.current();
    current
        .snapshot
        .segment(key)
        .map(wire::segment_summary)
        .ok_or_else(|| {
            ServerError::NotFound(format!("no segment {key:?} in environment {environment:?}"))
        })
}

/// A promotion must copy a `what` (flag, segment) to another environment than its own.
fn same_environments(from: &str, to: &str, what: &str) -> Result<(), Status> {
    if from == to {
        return Err(Status::invalid_argument(format!(
            "from_environment and environment are both {to:?}: a {what} is promoted to another \
             environment"
        )));
    }
    Ok(())
}

/// Who made the change that gave a document `version`, from the audit log's heads (never
/// the documents of the change, which may be a whole environment's).
pub(super) fn last_change<S: Store>(
    store: &S,
    environment: &str,
    version: Option<u64>,
) -> Result<Option<pb::ChangeInfo>, ServerError> {
    let Some(version) = version else {
        return Ok(None);
    };
    Ok(Some(match store.audit_head(environment, version)? {
        Some(head) => wire::change_info(&head),
        None => pb::ChangeInfo {
            revision: version,
            ..pb::ChangeInfo::default()
        },
    }))
}

/// Whether `text` occurs in any of `fields`, ignoring case; an empty `text` always does.
pub(super) fn contains_text<'a>(
    text: &str,
    fields: impl IntoIterator<Item = Option<&'a str>>,
) -> bool {
    if text.is_empty() {
        return true;
    }
    let text = text.to_lowercase();
    fields
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(&text))
}
