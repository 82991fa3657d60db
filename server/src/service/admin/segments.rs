//! Admin calls on segments: creating, reading, listing, updating, deleting, patching their
//! key lists and promoting them.

use flagstaff_engine::{KeyPatch, Segment};
use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

use super::service::{blocking, contains_text, last_change, AdminService, Writer};
use crate::auth::Access;
use crate::error::ServerError;
use crate::service::paging::{fit, page, Scope};
use crate::service::wire;
use crate::storage::Store;

pub(super) async fn create_segment<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::CreateSegmentRequest>,
) -> Result<Response<pb::CreateSegmentResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let segment = wire::segment(wire::required(req.segment, "segment")?)?;
    let key = segment.key.clone();
    let writer = Writer::new(
        &token,
        "CreateSegment",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let (committed, segment) = admin
        .write_segment(writer, key, move |envs, ctx| {
            envs.create_segment(ctx, segment)
        })
        .await?;
    Ok(Response::new(pb::CreateSegmentResponse {
        revision: committed.revision,
        segment: Some(segment),
    }))
}

pub(super) async fn get_segment<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::GetSegmentRequest>,
) -> Result<Response<pb::GetSegmentResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let pb::GetSegmentRequest { environment, key } = request.into_inner();
    wire::key(&key, "key")?;
    let envs = admin.envs.clone();
    let response = blocking(move || {
        let current = envs.get(&environment)?.current();
        let segment = current.snapshot.segment(&key).ok_or_else(|| {
            ServerError::NotFound(format!("no segment {key:?} in environment {environment:?}"))
        })?;
        Ok(pb::GetSegmentResponse {
            segment: Some(pb::Segment::from(segment)),
            last_change: last_change(&**envs.store(), &environment, segment.version)?,
        })
    })
    .await?;
    Ok(Response::new(response))
}

pub(super) async fn list_segments<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::ListSegmentsRequest>,
) -> Result<Response<pb::ListSegmentsResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let envs = admin.envs.clone();
    let response = blocking(move || {
        let current = envs.get(&req.environment)?.current();
        let matching: Vec<&Segment> = current
            .snapshot
            .segments()
            .filter(|s| contains_text(&req.text, [Some(s.key.as_str()), s.description.as_deref()]))
            .collect();
        let scope = Scope(&["segments", &req.environment, &req.text]);
        let (segments, next_page_token) =
            page(matching, |s| &s.key, scope, &req.page_token, req.page_size)?;
        let mut segments: Vec<pb::SegmentEntry> = segments
            .into_iter()
            .map(|segment| {
                Ok(pb::SegmentEntry {
                    segment: Some(wire::segment_summary(segment)),
                    last_change: last_change(&**envs.store(), &req.environment, segment.version)?,
                })
            })
            .collect::<Result<_, ServerError>>()?;
        let cut = fit(&mut segments);
        let next_page_token = match segments
            .last()
            .and_then(|e| e.segment.as_ref())
            .and_then(|s| s.segment.as_ref())
        {
            Some(last) if cut => scope.token(&last.key),
            _ => next_page_token,
        };
        Ok(pb::ListSegmentsResponse {
            segments,
            next_page_token,
            revision: current.revision,
        })
    })
    .await?;
    Ok(Response::new(response))
}

pub(super) async fn update_segment<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::UpdateSegmentRequest>,
) -> Result<Response<pb::UpdateSegmentResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let mut segment = wire::segment(wire::required(req.segment, "segment")?)?;
    segment.version = wire::expected_of(segment.version, req.expected_version, "segment")?;
    let key = segment.key.clone();
    let writer = Writer::new(
        &token,
        "UpdateSegment",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let (committed, segment) = admin
        .write_segment(writer, key, move |envs, ctx| {
            envs.update_segment(ctx, segment)
        })
        .await?;
    Ok(Response::new(pb::UpdateSegmentResponse {
        revision: committed.revision,
        segment: Some(segment),
    }))
}

pub(super) async fn delete_segment<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::DeleteSegmentRequest>,
) -> Result<Response<pb::DeleteSegmentResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    wire::key(&req.key, "key")?;
    let expected = wire::expected(req.expected_version);
    let writer = Writer::new(
        &token,
        "DeleteSegment",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let envs = admin.envs.clone();
    let committed = blocking(move || envs.delete_segment(writer.ctx(), &req.key, expected)).await?;
    Ok(Response::new(pb::DeleteSegmentResponse {
        revision: committed.revision,
    }))
}

pub(super) async fn patch_segment_keys<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::PatchSegmentKeysRequest>,
) -> Result<Response<pb::PatchSegmentKeysResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let patch = wire::required(req.patch, "patch")?;
    wire::key(&patch.segment, "patch.segment")?;
    let expected = wire::expected(req.expected_version);
    let keys = KeyPatch {
        segment: patch.segment,
        add_included: patch.add_included,
        remove_included: patch.remove_included,
        add_excluded: patch.add_excluded,
        remove_excluded: patch.remove_excluded,
    };
    let writer = Writer::new(
        &token,
        "PatchSegmentKeys",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let key = keys.segment.clone();
    let (committed, segment) = admin
        .write_segment(writer, key, move |envs, ctx| {
            envs.patch_segment_keys(ctx, &keys, expected)
        })
        .await?;
    // What the patch did is the audit record's key diff; a patch that changed nothing
    // applied nothing.
    let applied = committed
        .changes
        .iter()
        .map(wire::change)
        .find_map(|change| match change.document {
            Some(pb::change::Document::Segment(s)) => s.keys,
            _ => None,
        })
        .unwrap_or_else(|| pb::SegmentKeyPatch {
            segment: segment
                .segment
                .as_ref()
                .map(|s| s.key.clone())
                .unwrap_or_default(),
            ..pb::SegmentKeyPatch::default()
        });
    Ok(Response::new(pb::PatchSegmentKeysResponse {
        revision: committed.revision,
        segment: Some(segment),
        applied: Some(applied),
    }))
}

pub(super) async fn promote_segment<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::PromoteSegmentRequest>,
) -> Result<Response<pb::PromoteSegmentResponse>, Status> {
    let (token, req) = admin.allow_promotion(request, "segment").await?;
    let expected = wire::expected(req.expected_version);
    let writer = Writer::new(
        &token,
        "PromoteSegment",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let key = req.key.clone();
    let (committed, segment) = admin
        .write_segment(writer, key, move |envs, ctx| {
            envs.promote_segment(ctx, &req.key, &req.from_environment, expected)
        })
        .await?;
    Ok(Response::new(pb::PromoteSegmentResponse {
        revision: committed.revision,
        segment: Some(segment),
    }))
}
