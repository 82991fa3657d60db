//! Admin calls on flags: creating, reading, listing, updating, deleting, switching on and
//! off, setting the default serve, reverting and promoting them.

use flagstaff_engine::{Flag, Segment};
use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

use super::service::{blocking, contains_text, last_change, AdminService, Writer};
use crate::auth::Access;
use crate::error::ServerError;
use crate::service::paging::{fit, page, Scope};
use crate::service::wire;
use crate::storage::Store;

pub(super) async fn create_flag<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::CreateFlagRequest>,
) -> Result<Response<pb::CreateFlagResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let flag = wire::flag(wire::required(req.flag, "flag")?)?;
    let key = flag.key.clone();
    let writer = Writer::new(
        &token,
        "CreateFlag",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let (committed, flag) = admin
        .write_flag(writer, key, move |envs, ctx| envs.create_flag(ctx, flag))
        .await?;
    Ok(Response::new(pb::CreateFlagResponse {
        revision: committed.revision,
        flag: Some(flag),
    }))
}

pub(super) async fn get_flag<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::GetFlagRequest>,
) -> Result<Response<pb::GetFlagResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let pb::GetFlagRequest { environment, key } = request.into_inner();
    wire::key(&key, "key")?;
    let envs = admin.envs.clone();
    let response = blocking(move || {
        let current = envs.get(&environment)?.current();
        let flag = current.snapshot.flag(&key).ok_or_else(|| {
            ServerError::NotFound(format!("no flag {key:?} in environment {environment:?}"))
        })?;
        Ok(pb::GetFlagResponse {
            flag: Some(pb::Flag::from(flag)),
            last_change: last_change(&**envs.store(), &environment, flag.version)?,
        })
    })
    .await?;
    Ok(Response::new(response))
}

pub(super) async fn list_flags<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::ListFlagsRequest>,
) -> Result<Response<pb::ListFlagsResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let envs = admin.envs.clone();
    let response = blocking(move || {
        let current = envs.get(&req.environment)?.current();
        let matching: Vec<&Flag> = current
            .snapshot
            .flags()
            .filter(|f| req.tag.is_empty() || f.tags.contains(&req.tag))
            .filter(|f| {
                contains_text(
                    &req.text,
                    [
                        Some(f.key.as_str()),
                        f.description.as_deref(),
                        f.owner.as_deref(),
                    ],
                )
            })
            .collect();
        let scope = Scope(&["flags", &req.environment, &req.tag, &req.text]);
        let (flags, next_page_token) =
            page(matching, |f| &f.key, scope, &req.page_token, req.page_size)?;
        let env = envs.get(&req.environment)?;
        let keys: Vec<&str> = flags.iter().map(|f| f.key.as_str()).collect();
        let usage = envs.usage_of(&env, &keys)?;
        let mut flags: Vec<pb::FlagEntry> = flags
            .into_iter()
            .zip(usage)
            .map(|(flag, usage)| {
                Ok(pb::FlagEntry {
                    flag: Some(pb::Flag::from(flag)),
                    last_change: last_change(&**envs.store(), &req.environment, flag.version)?,
                    usage: Some(pb::FlagUsage {
                        evaluations: usage.evaluations,
                        last_evaluated_unix_ms: wire::unix_ms(usage.last_evaluated_ms),
                    }),
                })
            })
            .collect::<Result<_, ServerError>>()?;
        let cut = fit(&mut flags);
        let next_page_token = match flags.last().and_then(|e| e.flag.as_ref()) {
            Some(last) if cut => scope.token(&last.key),
            _ => next_page_token,
        };
        Ok(pb::ListFlagsResponse {
            flags,
            next_page_token,
            revision: current.revision,
        })
    })
    .await?;
    Ok(Response::new(response))
}

pub(super) async fn update_flag<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::UpdateFlagRequest>,
) -> Result<Response<pb::UpdateFlagResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let mut flag = wire::flag(wire::required(req.flag, "flag")?)?;
    flag.version = wire::expected_of(flag.version, req.expected_version, "flag")?;
    let key = flag.key.clone();
    let writer = Writer::new(
        &token,
        "UpdateFlag",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let (committed, flag) = admin
        .write_flag(writer, key, move |envs, ctx| envs.update_flag(ctx, flag))
        .await?;
    Ok(Response::new(pb::UpdateFlagResponse {
        revision: committed.revision,
        flag: Some(flag),
        paused_rollouts: committed.paused_rollouts,
    }))
}

pub(super) async fn delete_flag<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::DeleteFlagRequest>,
) -> Result<Response<pb::DeleteFlagResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.key, "key")?;
    let expected = wire::expected(req.expected_version);
    let writer = Writer::new(
        &token,
        "DeleteFlag",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let envs = admin.envs.clone();
    let committed = blocking(move || envs.delete_flag(writer.ctx(), &req.key, expected)).await?;
    Ok(Response::new(pb::DeleteFlagResponse {
        revision: committed.revision,
    }))
}

pub(super) async fn set_flag_enabled<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::SetFlagEnabledRequest>,
) -> Result<Response<pb::SetFlagEnabledResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.key, "key")?;
    let expected = wire::expected(req.expected_version);
    let writer = Writer::new(
        &token,
        "SetFlagEnabled",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let key = req.key.clone();
    let (committed, flag) = admin
        .write_flag(writer, key, move |envs, ctx| {
            envs.set_flag_enabled(ctx, &req.key, req.enabled, expected)
        })
        .await?;
    Ok(Response::new(pb::SetFlagEnabledResponse {
        revision: committed.revision,
        flag: Some(flag),
        paused_rollouts: committed.paused_rollouts,
    }))
}

pub(super) async fn set_default_serve<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::SetDefaultServeRequest>,
) -> Result<Response<pb::SetDefaultServeResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.key, "key")?;
    let serve = wire::serve(wire::required(req.serve, "serve")?)?;
    let expected = wire::expected(req.expected_version);
    let writer = Writer::new(
        &token,
        "SetDefaultServe",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let key = req.key.clone();
    let (committed, flag) = admin
        .write_flag(writer, key, move |envs, ctx| {
            envs.set_default_serve(ctx, &req.key, serve, req.force, expected)
        })
        .await?;
    Ok(Response::new(pb::SetDefaultServeResponse {
        revision: committed.revision,
        flag: Some(flag),
        paused_rollouts: committed.paused_rollouts,
    }))
}

pub(super) async fn revert_flag<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::RevertFlagRequest>,
) -> Result<Response<pb::RevertFlagResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.key, "key")?;
    if req.to_version == 0 {
        return Err(wire::missing("to_version").into());
    }
    let expected = wire::expected(req.expected_version);
    let writer = Writer::new(
        &token,
        "RevertFlag",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let key = req.key.clone();
    let (committed, flag) = admin
        .write_flag(writer, key, move |envs, ctx| {
            envs.revert_flag(ctx, &req.key, req.to_version, expected)
        })
        .await?;
    Ok(Response::new(pb::RevertFlagResponse {
        revision: committed.revision,
        flag: Some(flag),
        paused_rollouts: committed.paused_rollouts,
    }))
}

pub(super) async fn promote_flag<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::PromoteFlagRequest>,
) -> Result<Response<pb::PromoteFlagResponse>, Status> {
    let (token, req) = admin.allow_promotion(request, "flag").await?;
    let expected = wire::expected(req.expected_version);
    let writer = Writer::new(
        &token,
        "PromoteFlag",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let key = req.key.clone();
    let (committed, flag) = admin
        .write_flag(writer, key, move |envs, ctx| {
            envs.promote_flag(
                ctx,
                &req.key,
                &req.from_environment,
                expected,
                req.with_segments,
            )
        })
        .await?;
    let mut segments: Vec<&Segment> = committed.segments.iter().collect();
    segments.sort_by(|a, b| a.key.cmp(&b.key));
    let segments = segments.into_iter().map(wire::segment_summary).collect();
    Ok(Response::new(pb::PromoteFlagResponse {
        revision: committed.revision,
        flag: Some(flag),
        segments,
    }))
}
