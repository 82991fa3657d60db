//! Admin calls on an environment's documents as a whole and their history: applying a set of
//! documents, exporting them, listing the audit log and tailing it.

use std::collections::HashSet;

use flagstaff_engine::ChangeSet;
use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

use super::service::{blocking, AdminService, Writer};
use crate::auth::Access;
use crate::error::ServerError;
use crate::operations::ApplyOptions;
use crate::service::paging::{fit, page_size, Scope};
use crate::service::watch::ChangesStream;
use crate::service::wire;
use crate::storage::{AuditChange, Store};

/// The flags and segments of an Apply request, as a change.
fn apply_documents(
    flags: Vec<pb::Flag>,
    segments: Vec<pb::Segment>,
) -> Result<ChangeSet, ServerError> {
    Ok(ChangeSet {
        flags: flags
            .into_iter()
            .map(wire::flag)
            .collect::<Result<_, _>>()?,
        segments: segments
            .into_iter()
            .map(wire::segment)
            .collect::<Result<_, _>>()?,
        ..ChangeSet::default()
    })
}

/// The most bytes of documents an Apply response carries; beyond, it carries keys and
/// versions only. Half the message limit, so the rest of the response always fits.
const MAX_RESPONSE_DOCUMENT_BYTES: usize = crate::MAX_ADMIN_MESSAGE / 2;

/// Leaves the documents (and segments' key lists) out of `changes`, but their keys and
/// versions, when they take more than
/// [`MAX_RESPONSE_DOCUMENT_BYTES`]; returns whether it did.
fn abridge(changes: &mut [pb::Change]) -> bool {
    let bytes: usize = changes.iter().map(prost::Message::encoded_len).sum();
    if bytes <= MAX_RESPONSE_DOCUMENT_BYTES {
        return false;
    }
    let stub = |flag: &mut pb::Flag| {
        *flag = pb::Flag {
            key: std::mem::take(&mut flag.key),
            version: flag.version,
            ..pb::Flag::default()
        }
    };
    for change in changes {
        match &mut change.document {
            Some(pb::change::Document::Flag(flag)) => {
                flag.before.iter_mut().for_each(stub);
                flag.after.iter_mut().for_each(stub);
            }
            // The summaries keep the key counts; the keys themselves go.
            Some(pb::change::Document::Segment(segment)) => {
                if let Some(keys) = &mut segment.keys {
                    *keys = pb::SegmentKeyPatch {
                        segment: std::mem::take(&mut keys.segment),
                        ..pb::SegmentKeyPatch::default()
                    };
                }
            }
            None => {}
        }
    }
    true
}

/// The keys of `requested` that the write left out because they were identical to what is
/// stored, in request order.
fn unchanged<'a>(
    requested: impl Iterator<Item = &'a str>,
    written: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let written: HashSet<&str> = written.collect();
    requested
        .filter(|k| !written.contains(k))
        .map(str::to_owned)
        .collect()
}

pub(super) async fn apply<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::ApplyRequest>,
) -> Result<Response<pb::ApplyResponse>, Status> {
    let token = admin
        .allow(&request, Access::Write(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let changes = match req.source {
        Some(pb::apply_request::Source::Documents(set)) => {
            if req.prune {
                return Err(Status::invalid_argument(
                    "prune: only allowed with a whole document (source document), not \
                     with documents",
                ));
            }
            apply_documents(set.flags, set.segments)?
        }
        Some(pb::apply_request::Source::Document(document)) => {
            // Informational, but a key like any environment's (an export's is empty
            // nowhere, so empty is let through for documents built by hand).
            if !document.environment.is_empty() {
                wire::key(&document.environment, "document.environment")?;
            }
            apply_documents(document.flags, document.segments)?
        }
        None => return Err(wire::missing("documents or document").into()),
    };
    let options = ApplyOptions {
        prune: req.prune,
        dry_run: req.dry_run,
    };
    let flag_keys: Vec<String> = changes.flags.iter().map(|f| f.key.clone()).collect();
    let segment_keys: Vec<String> = changes.segments.iter().map(|s| s.key.clone()).collect();
    let writer = Writer::new(
        &token,
        "Apply",
        req.environment,
        req.comment,
        req.confirm_protected,
    )?;
    let envs = admin.envs.clone();
    let committed = blocking(move || envs.apply_with(writer.ctx(), changes, options)).await?;
    let mut changes: Vec<pb::Change> = committed.changes.iter().map(wire::change).collect();
    let changes_abridged = abridge(&mut changes);
    Ok(Response::new(pb::ApplyResponse {
        revision: committed.revision,
        changed: committed.changed(),
        changes,
        changes_abridged,
        paused_rollouts: committed.paused_rollouts.clone(),
        unchanged_flags: unchanged(
            flag_keys.iter().map(String::as_str),
            committed.flags.iter().map(|f| f.key.as_str()),
        ),
        unchanged_segments: unchanged(
            segment_keys.iter().map(String::as_str),
            committed.segments.iter().map(|s| s.key.as_str()),
        ),
    }))
}

pub(super) async fn export<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::ExportRequest>,
) -> Result<Response<pb::ExportResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let environment = request.into_inner().environment;
    let envs = admin.envs.clone();
    let response = blocking(move || {
        let current = envs.get(&environment)?.current();
        Ok(pb::ExportResponse {
            document: Some(pb::Document::from(
                &current.snapshot.to_document(&environment),
            )),
            revision: current.revision,
        })
    })
    .await?;
    Ok(Response::new(response))
}

pub(super) async fn list_history<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::ListHistoryRequest>,
) -> Result<Response<pb::ListHistoryResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    if !req.flag.is_empty() && !req.segment.is_empty() {
        return Err(Status::invalid_argument(
            "flag and segment are both set: ask for the history of at most one document",
        ));
    }
    for (field, value) in [("flag", &req.flag), ("segment", &req.segment)] {
        if !value.is_empty() {
            wire::key(value, field)?;
        }
    }
    let size = page_size(req.page_size);
    let envs = admin.envs.clone();
    let response = blocking(move || {
        let scope = Scope(&["history", &req.environment, &req.flag, &req.segment]);
        // The position is the revision of the last entry of the previous page.
        let before = match scope.position(&req.page_token)? {
            Some(revision) => Some(revision.parse::<u64>().map_err(|_| {
                ServerError::Invalid("page_token: not a next_page_token".to_owned())
            })?),
            None => None,
        };
        envs.get(&req.environment)?;
        let store = envs.store();
        // One more than asked, to know whether another page follows.
        let mut entries = if !req.segment.is_empty() {
            store.segment_history(&req.environment, &req.segment, before, size + 1)?
        } else {
            let flag = Some(req.flag.as_str()).filter(|f| !f.is_empty());
            store.history(&req.environment, flag, before, size + 1)?
        };
        let mut more = entries.len() > size;
        entries.truncate(size);
        let keep = |change: &AuditChange| {
            if !req.flag.is_empty() {
                change.is_flag(&req.flag)
            } else if !req.segment.is_empty() {
                change.is_segment(&req.segment)
            } else {
                true
            }
        };
        let mut entries: Vec<pb::AuditEntry> = entries
            .iter()
            .map(|entry| wire::audit_entry(&req.environment, entry, keep))
            .collect();
        more |= fit(&mut entries);
        let next_page_token = match entries.last() {
            Some(last) if more => scope.token(&last.revision.to_string()),
            _ => String::new(),
        };
        Ok(pb::ListHistoryResponse {
            entries,
            next_page_token,
        })
    })
    .await?;
    Ok(Response::new(response))
}

pub(super) async fn watch_changes<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::WatchChangesRequest>,
) -> Result<Response<ChangesStream>, Status> {
    let token = admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let req = request.get_ref();
    crate::service::watch::watch_changes(
        &admin.envs,
        &admin.tokens,
        &admin.signals,
        &token,
        &req.environment,
        req.since_revision,
    )
}
