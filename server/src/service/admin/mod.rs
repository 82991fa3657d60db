//! `flagstaff.v1.Admin`: environments, flags, segments, documents and their history, evaluation,
//! tokens, SDK instances and rollout plans.
//!
//! Every call authorizes its token first, then maps the request to the domain, runs the
//! operation on [`Environments`] or [`Tokens`] and maps the result back. Work that blocks runs
//! in `spawn_blocking`, never on the runtime's threads: every write (validation, the sled
//! commit and its fsync), reads of the audit log, and whole-environment exports, listings and
//! evaluations. Versions on the wire follow admin.proto (0 means "no check"); they reach the
//! environments as `None` then, never as `Some(0)`, which there means "must not exist".
//!
//! The calls are grouped by what they act on, one file each: `environments`, `flags`,
//! `segments`, `documents` (apply, export, history), `evaluation`, `tokens`, `clients`
//! (SDK instances and propagation) and `rollouts`. This file holds what they share and the
//! service's trait implementation, which only hands each call to its file.

mod clients;
mod documents;
mod environments;
mod evaluation;
mod flags;
mod rollouts;
mod segments;
mod tokens;

use std::sync::Arc;

use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

use super::watch::{ChangesStream, Signals};
use super::{authorize, wire};
use crate::auth::{Access, Tokens};
use crate::clients::Clients;
use crate::environments::{Committed, Environments, WriteContext};
use crate::error::ServerError;
use crate::storage::{Store, TokenRecord};

/// The Admin service over the environments and tokens of one store.
#[derive(Debug)]
pub struct AdminService<S> {
    envs: Arc<Environments<S>>,
    tokens: Arc<Tokens<S>>,
    /// The SDK instances, for `ListClients` and `WaitForRevision`.
    clients: Arc<Clients>,
    /// Ends `WatchChanges` tails and waits on shutdown.
    signals: Signals,
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
    fn allow<T>(&self, request: &Request<T>, access: Access<'_>) -> Result<TokenRecord, Status> {
        let token = authorize(&self.tokens, request, access)?;
        if let Access::Read(environment) | Access::Write(environment) = access {
            wire::key(environment, "environment")?;
        }
        Ok(token)
    }

    /// The checks every promotion opens with, in this order: the token writes the environment
    /// and reads the one promoted from, which the request must name; the key; and two
    /// different environments (a `what`, flag or segment, is promoted to another one).
    fn allow_promotion<T: Promotion>(
        &self,
        request: Request<T>,
        what: &str,
    ) -> Result<(TokenRecord, T), Status> {
        let req = request.get_ref();
        let token = self.allow(&request, Access::Write(req.environment()))?;
        if req.source().is_empty() {
            return Err(wire::missing("from_environment").into());
        }
        self.allow(&request, Access::Read(req.source()))?;
        let req = request.into_inner();
        wire::key(req.key(), "key")?;
        same_environments(req.source(), req.environment(), what)?;
        Ok((token, req))
    }

    /// Runs `write` as `writer` on a blocking thread; returns what it committed and the flag
    /// `key` as written (see [`written_flag`]).
    async fn write_flag(
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
    async fn write_segment(
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
trait Promotion {
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
struct Writer {
    environment: String,
    actor: String,
    /// The rpc's name, for the audit log.
    operation: &'static str,
    comment: String,
    confirmed: bool,
}

impl Writer {
    /// A write by `token`: its name is the actor of the audit entry; the comment is checked
    /// against its limits.
    fn new(
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

    fn ctx(&self) -> WriteContext<'_> {
        WriteContext {
            environment: &self.environment,
            actor: &self.actor,
            operation: self.operation,
            comment: &self.comment,
            confirmed: self.confirmed,
        }
    }
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("a blocking task failed: {e}")))?
        .map_err(Status::from)
}

/// A write's response document: the flag it wrote, or, when the write changed nothing, the
/// flag as stored.
fn written_flag<S: Store>(
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
fn last_change<S: Store>(
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
fn contains_text<'a>(text: &str, fields: impl IntoIterator<Item = Option<&'a str>>) -> bool {
    if text.is_empty() {
        return true;
    }
    let text = text.to_lowercase();
    fields
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(&text))
}

#[tonic::async_trait]
impl<S: Store> pb::admin_server::Admin for AdminService<S> {
    type WatchChangesStream = ChangesStream;

    async fn create_environment(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> Result<Response<pb::CreateEnvironmentResponse>, Status> {
        environments::create_environment(self, request).await
    }

    async fn list_environments(
        &self,
        request: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
        environments::list_environments(self, request).await
    }

    async fn delete_environment(
        &self,
        request: Request<pb::DeleteEnvironmentRequest>,
    ) -> Result<Response<pb::DeleteEnvironmentResponse>, Status> {
        environments::delete_environment(self, request).await
    }

    async fn create_flag(
        &self,
        request: Request<pb::CreateFlagRequest>,
    ) -> Result<Response<pb::CreateFlagResponse>, Status> {
        flags::create_flag(self, request).await
    }

    async fn get_flag(
        &self,
        request: Request<pb::GetFlagRequest>,
    ) -> Result<Response<pb::GetFlagResponse>, Status> {
        flags::get_flag(self, request).await
    }

    async fn list_flags(
        &self,
        request: Request<pb::ListFlagsRequest>,
    ) -> Result<Response<pb::ListFlagsResponse>, Status> {
        flags::list_flags(self, request).await
    }

    async fn update_flag(
        &self,
        request: Request<pb::UpdateFlagRequest>,
    ) -> Result<Response<pb::UpdateFlagResponse>, Status> {
        flags::update_flag(self, request).await
    }

    async fn delete_flag(
        &self,
        request: Request<pb::DeleteFlagRequest>,
    ) -> Result<Response<pb::DeleteFlagResponse>, Status> {
        flags::delete_flag(self, request).await
    }

    async fn set_flag_enabled(
        &self,
        request: Request<pb::SetFlagEnabledRequest>,
    ) -> Result<Response<pb::SetFlagEnabledResponse>, Status> {
        flags::set_flag_enabled(self, request).await
    }

    async fn set_default_serve(
        &self,
        request: Request<pb::SetDefaultServeRequest>,
    ) -> Result<Response<pb::SetDefaultServeResponse>, Status> {
        flags::set_default_serve(self, request).await
    }

    async fn revert_flag(
        &self,
        request: Request<pb::RevertFlagRequest>,
    ) -> Result<Response<pb::RevertFlagResponse>, Status> {
        flags::revert_flag(self, request).await
    }

    async fn promote_flag(
        &self,
        request: Request<pb::PromoteFlagRequest>,
    ) -> Result<Response<pb::PromoteFlagResponse>, Status> {
        flags::promote_flag(self, request).await
    }

    async fn create_segment(
        &self,
        request: Request<pb::CreateSegmentRequest>,
    ) -> Result<Response<pb::CreateSegmentResponse>, Status> {
        segments::create_segment(self, request).await
    }

    async fn get_segment(
        &self,
        request: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::GetSegmentResponse>, Status> {
        segments::get_segment(self, request).await
    }

    async fn list_segments(
        &self,
        request: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        segments::list_segments(self, request).await
    }

    async fn update_segment(
        &self,
        request: Request<pb::UpdateSegmentRequest>,
    ) -> Result<Response<pb::UpdateSegmentResponse>, Status> {
        segments::update_segment(self, request).await
    }

    async fn delete_segment(
        &self,
        request: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<pb::DeleteSegmentResponse>, Status> {
        segments::delete_segment(self, request).await
    }

    async fn patch_segment_keys(
        &self,
        request: Request<pb::PatchSegmentKeysRequest>,
    ) -> Result<Response<pb::PatchSegmentKeysResponse>, Status> {
        segments::patch_segment_keys(self, request).await
    }

    async fn promote_segment(
        &self,
        request: Request<pb::PromoteSegmentRequest>,
    ) -> Result<Response<pb::PromoteSegmentResponse>, Status> {
        segments::promote_segment(self, request).await
    }

    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        documents::apply(self, request).await
    }

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        documents::export(self, request).await
    }

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        documents::list_history(self, request).await
    }

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        documents::watch_changes(self, request).await
    }

    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        evaluation::evaluate(self, request).await
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        tokens::create_token(self, request).await
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        tokens::list_tokens(self, request).await
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        tokens::revoke_token(self, request).await
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        clients::list_clients(self, request).await
    }

    async fn wait_for_revision(
        &self,
        request: Request<pb::WaitForRevisionRequest>,
    ) -> Result<Response<pb::WaitForRevisionResponse>, Status> {
        clients::wait_for_revision(self, request).await
    }

    async fn start_rollout(
        &self,
        request: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::StartRolloutResponse>, Status> {
        rollouts::start_rollout(self, request).await
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::GetRolloutResponse>, Status> {
        rollouts::get_rollout(self, request).await
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        rollouts::list_rollouts(self, request).await
    }

    async fn pause_rollout(
        &self,
        request: Request<pb::PauseRolloutRequest>,
    ) -> Result<Response<pb::PauseRolloutResponse>, Status> {
        rollouts::pause_rollout(self, request).await
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::ResumeRolloutRequest>,
    ) -> Result<Response<pb::ResumeRolloutResponse>, Status> {
        rollouts::resume_rollout(self, request).await
    }

    async fn rollback_rollout(
        &self,
        request: Request<pb::RollbackRolloutRequest>,
    ) -> Result<Response<pb::RollbackRolloutResponse>, Status> {
        rollouts::rollback_rollout(self, request).await
    }

    async fn promote_rollout(
        &self,
        request: Request<pb::PromoteRolloutRequest>,
    ) -> Result<Response<pb::PromoteRolloutResponse>, Status> {
        rollouts::promote_rollout(self, request).await
    }
}
