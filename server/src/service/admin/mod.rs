//! `flagstaff.v1.Admin`: environments, flags, segments, documents and their history, evaluation,
//! tokens, SDK instances and rollout plans.
//!
//! Every call authorizes its token first, then maps the request to the domain, runs the
//! operation on [`Environments`](crate::Environments) or [`Tokens`](crate::auth::Tokens) and maps the result back. Work that blocks runs
//! in `spawn_blocking`, never on the runtime's threads: every write (validation, the sled
//! commit and its fsync), reads of the audit log, and whole-environment exports, listings and
//! evaluations. Versions on the wire follow admin.proto (0 means "no check"); they reach the
//! environments as `None` then, never as `Some(0)`, which there means "must not exist".
//!
//! The calls are grouped by what they act on, one file each: `environments`, `flags`,
//! `segments`, `documents` (apply, export, history), `evaluation`, `tokens`, `clients`
//! (SDK instances and propagation) and `rollouts`; `service` holds the service's state and
//! what they share. This file holds the service's trait implementation, which only hands each
//! call to its file.

mod backup;
mod clients;
mod documents;
mod environments;
mod evaluation;
mod flags;
mod rollouts;
mod segments;
mod service;
mod tokens;

use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

pub use self::service::AdminService;
use crate::service::watch::ChangesStream;
use crate::storage::Store;

#[tonic::async_trait]
impl<S: Store> pb::admin_server::Admin for AdminService<S> {
    type WatchChangesStream = ChangesStream;
    type BackupStream = backup::BackupStream;

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

    async fn get_client_token(
        &self,
        request: Request<pb::GetClientTokenRequest>,
    ) -> Result<Response<pb::GetClientTokenResponse>, Status> {
        tokens::get_client_token(self, request).await
    }

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        backup::backup(self, request).await
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
