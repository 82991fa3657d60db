//! Admin calls on rollout plans: starting, reading, listing, pausing, resuming, rolling back
//! and promoting them.

use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

use super::service::{blocking, written_flag, AdminService, Writer};
use crate::auth::Access;
use crate::environments::{Environments, WriteContext};
use crate::error::ServerError;
use crate::rollout::{no_plan, GuardSpec, StartPlan, Step};
use crate::service::wire;
use crate::storage::{RolloutRecord, RolloutStage, Store};

/// Most stages of a rollout plan.
const MAX_STAGES: usize = 100;

/// Runs a plan's `step` that writes the flag `key`, as `writer`, on a blocking thread; returns
/// the revision, the flag as written (see [`written_flag`]) and the plan after the step.
async fn run_step<S: Store>(
    admin: &AdminService<S>,
    writer: Writer,
    key: String,
    step: impl FnOnce(&Environments<S>, WriteContext<'_>) -> Result<Step, ServerError> + Send + 'static,
) -> Result<(u64, pb::Flag, RolloutRecord), Status> {
    let envs = admin.envs.clone();
    blocking(move || {
        let step = step(&envs, writer.ctx())?;
        let flag = written_flag(&envs, &writer.environment, &key, &step.committed)?;
        Ok((step.committed.revision, flag, step.plan))
    })
    .await
}

pub(super) async fn start_rollout<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::StartRolloutRequest>,
) -> Result<Response<pb::StartRolloutResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.flag, "flag")?;
    wire::key(&req.target_variant, "target_variant")?;
    for (field, value) in [
        ("rule_id", &req.rule_id),
        ("baseline_variant", &req.baseline_variant),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            wire::key(value, field)?;
        }
    }
    if let Some(bucket_by) = req.bucket_by.as_deref().filter(|b| !b.is_empty()) {
        wire::name(bucket_by, "bucket_by")?;
    }
    if req.stages.len() > MAX_STAGES {
        return Err(Status::invalid_argument(format!(
            "stages: {} stages, at most {MAX_STAGES} allowed",
            req.stages.len()
        )));
    }
    let plan = StartPlan {
        flag: req.flag.clone(),
        rule_id: req.rule_id.filter(|r| !r.is_empty()),
        target: req.target_variant,
        baseline: req.baseline_variant.filter(|b| !b.is_empty()),
        bucket_by: req.bucket_by.filter(|b| !b.is_empty()),
        stages: req
            .stages
            .iter()
            .map(|s| RolloutStage {
                percent: s.percent,
                hold_ms: s.hold_ms,
            })
            .collect(),
        force: req.force,
        expected_version: wire::expected(req.expected_version),
        guard: req.guard.map(|g| GuardSpec {
            event: g.event,
            max_ratio: g.max_ratio,
            min_events: g.min_events,
        }),
    };
    let writer = Writer::new(
        &token,
        "StartRollout",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let key = plan.flag.clone();
    let (revision, flag, plan) = run_step(admin, writer, key, move |envs, ctx| {
        envs.start_rollout(ctx, &plan)
    })
    .await?;
    Ok(Response::new(pb::StartRolloutResponse {
        revision,
        flag: Some(flag),
        plan: Some(wire::rollout(&plan)),
    }))
}

pub(super) async fn get_rollout<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::GetRolloutRequest>,
) -> Result<Response<pb::GetRolloutResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.flag, "flag")?;
    let envs = admin.envs.clone();
    let environment = req.environment.clone();
    let mut plans = blocking(move || envs.plans_as_counted(&environment)).await?;
    let plan = plans
        .remove(&req.flag)
        .ok_or_else(|| no_plan(&req.flag, &req.environment))?;
    Ok(Response::new(pb::GetRolloutResponse {
        plan: Some(wire::rollout(&plan)),
    }))
}

pub(super) async fn list_rollouts<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::ListRolloutsRequest>,
) -> Result<Response<pb::ListRolloutsResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let envs = admin.envs.clone();
    let environment = req.environment.clone();
    let plans = blocking(move || envs.plans_as_counted(&environment))
        .await?
        .values()
        .filter(|p| req.include_finished || p.is_active())
        .map(wire::rollout)
        .collect();
    Ok(Response::new(pb::ListRolloutsResponse { plans }))
}

pub(super) async fn pause_rollout<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::PauseRolloutRequest>,
) -> Result<Response<pb::PauseRolloutResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.flag, "flag")?;
    let writer = Writer::new(
        &token,
        "PauseRollout",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let envs = admin.envs.clone();
    let plan = blocking(move || envs.pause_rollout(writer.ctx(), &req.flag)).await?;
    Ok(Response::new(pb::PauseRolloutResponse {
        plan: Some(wire::rollout(&plan)),
    }))
}

pub(super) async fn resume_rollout<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::ResumeRolloutRequest>,
) -> Result<Response<pb::ResumeRolloutResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.flag, "flag")?;
    let writer = Writer::new(
        &token,
        "ResumeRollout",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let envs = admin.envs.clone();
    let plan = blocking(move || envs.resume_rollout(writer.ctx(), &req.flag)).await?;
    Ok(Response::new(pb::ResumeRolloutResponse {
        plan: Some(wire::rollout(&plan)),
    }))
}

pub(super) async fn rollback_rollout<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::RollbackRolloutRequest>,
) -> Result<Response<pb::RollbackRolloutResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.flag, "flag")?;
    let writer = Writer::new(
        &token,
        "RollbackRollout",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let key = req.flag.clone();
    let (revision, flag, plan) = run_step(admin, writer, key, move |envs, ctx| {
        envs.rollback_rollout(ctx, &req.flag)
    })
    .await?;
    Ok(Response::new(pb::RollbackRolloutResponse {
        revision,
        flag: Some(flag),
        plan: Some(wire::rollout(&plan)),
    }))
}

pub(super) async fn promote_rollout<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::PromoteRolloutRequest>,
) -> Result<Response<pb::PromoteRolloutResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.flag, "flag")?;
    let writer = Writer::new(
        &token,
        "PromoteRollout",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let key = req.flag.clone();
    let (revision, flag, plan) = run_step(admin, writer, key, move |envs, ctx| {
        envs.promote_rollout(ctx, &req.flag)
    })
    .await?;
    Ok(Response::new(pb::PromoteRolloutResponse {
        revision,
        flag: Some(flag),
        plan: Some(wire::rollout(&plan)),
    }))
}
