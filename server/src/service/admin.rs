//! `flagstaff.v1.Admin`: environments, flags, segments, history, evaluation and tokens.
//!
//! Every call authorizes its token first, then maps the request to the domain, runs the
//! operation on [`Environments`] or [`Tokens`] and maps the result back. Work that blocks runs
//! in `spawn_blocking`, never on the runtime's threads: every write (validation, the sled
//! commit and its fsync), reads of the audit log, and whole-environment exports, listings and
//! evaluations. Versions on the wire follow admin.proto (0 means "no check"); they reach the
//! environments as `None` then, never as `Some(0)`, which there means "must not exist".

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flagstaff_engine::{ChangeSet, Context, Flag, KeyPatch, Segment};
use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

use super::paging::{fit, page_size, Scope};
use super::watch::{watch_changes, ChangesStream, Signals};
use super::{authorize, wire};
use crate::auth::{Access, Tokens};
use crate::clients::{Clients, Instance};
use crate::environments::{unconfirmed, Committed, Environments, WriteContext};
use crate::error::ServerError;
use crate::operations::ApplyOptions;
use crate::rollout::{GuardSpec, StartPlan};
use crate::storage::{AuditChange, Role, RolloutStage, Store, TokenRecord};

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
}

/// Most stages of a rollout plan.
const MAX_STAGES: usize = 100;

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

/// One page of `items`, sorted by key, after the position of `page_token`: the page and the
/// token of the next one ("" on the last page).
fn page<'a, T>(
    mut items: Vec<&'a T>,
    key: impl Fn(&T) -> &str,
    scope: Scope<'_>,
    page_token: &str,
    requested_size: u32,
) -> Result<(Vec<&'a T>, String), ServerError> {
    items.sort_unstable_by(|a, b| key(a).cmp(key(b)));
    let start = match scope.position(page_token)? {
        Some(after) => items.partition_point(|item| key(item) <= after.as_str()),
        None => 0,
    };
    let size = page_size(requested_size);
    let rest = items.split_off(start);
    let more = rest.len() > size;
    let page: Vec<&T> = rest.into_iter().take(size).collect();
    let next = match page.last() {
        Some(last) if more => scope.token(key(last)),
        _ => String::new(),
    };
    Ok((page, next))
}

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

#[tonic::async_trait]
impl<S: Store> pb::admin_server::Admin for AdminService<S> {
    type WatchChangesStream = ChangesStream;

    // ---- Environments ----

    async fn create_environment(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> Result<Response<pb::CreateEnvironmentResponse>, Status> {
        self.allow(&request, Access::Admin)?;
        let pb::CreateEnvironmentRequest {
            environment,
            protected,
        } = request.into_inner();
        let envs = self.envs.clone();
        let env = blocking(move || envs.create(&environment, protected)).await?;
        Ok(Response::new(pb::CreateEnvironmentResponse {
            environment: Some(wire::environment(&env)),
        }))
    }

    async fn list_environments(
        &self,
        request: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
        self.allow(&request, Access::Admin)?;
        let environments = self
            .envs
            .list()
            .iter()
            .map(|e| wire::environment(e))
            .collect();
        Ok(Response::new(pb::ListEnvironmentsResponse { environments }))
    }

    async fn delete_environment(
        &self,
        request: Request<pb::DeleteEnvironmentRequest>,
    ) -> Result<Response<pb::DeleteEnvironmentResponse>, Status> {
        self.allow(&request, Access::Admin)?;
        let pb::DeleteEnvironmentRequest {
            environment,
            confirm_protected,
        } = request.into_inner();
        wire::key(&environment, "environment")?;
        if self.envs.get(&environment)?.protected && !confirm_protected {
            return Err(unconfirmed(&environment).into());
        }
        let (envs, tokens) = (self.envs.clone(), self.tokens.clone());
        // Its tokens belong to this environment, not to its name (DESIGN.md section 4a).
        blocking(move || {
            envs.delete_with(&environment, || {
                tokens.revoke_environment(&environment).map(|_| ())
            })
        })
        .await?;
        Ok(Response::new(pb::DeleteEnvironmentResponse {}))
    }

    // ---- Flags ----

    async fn create_flag(
        &self,
        request: Request<pb::CreateFlagRequest>,
    ) -> Result<Response<pb::CreateFlagResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let (revision, flag) = blocking(move || {
            let committed = envs.create_flag(writer.ctx(), flag)?;
            let flag = written_flag(&envs, &writer.environment, &key, &committed)?;
            Ok((committed.revision, flag))
        })
        .await?;
        Ok(Response::new(pb::CreateFlagResponse {
            revision,
            flag: Some(flag),
        }))
    }

    async fn get_flag(
        &self,
        request: Request<pb::GetFlagRequest>,
    ) -> Result<Response<pb::GetFlagResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let pb::GetFlagRequest { environment, key } = request.into_inner();
        wire::key(&key, "key")?;
        let envs = self.envs.clone();
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

    async fn list_flags(
        &self,
        request: Request<pb::ListFlagsRequest>,
    ) -> Result<Response<pb::ListFlagsResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let req = request.into_inner();
        let envs = self.envs.clone();
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
            let mut flags: Vec<pb::FlagEntry> = flags
                .into_iter()
                .map(|flag| {
                    let usage = env.usage(&flag.key).unwrap_or_default();
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

    async fn update_flag(
        &self,
        request: Request<pb::UpdateFlagRequest>,
    ) -> Result<Response<pb::UpdateFlagResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let (revision, flag, paused_rollouts) = blocking(move || {
            let committed = envs.update_flag(writer.ctx(), flag)?;
            let flag = written_flag(&envs, &writer.environment, &key, &committed)?;
            Ok((committed.revision, flag, committed.paused_rollouts))
        })
        .await?;
        Ok(Response::new(pb::UpdateFlagResponse {
            revision,
            flag: Some(flag),
            paused_rollouts,
        }))
    }

    async fn delete_flag(
        &self,
        request: Request<pb::DeleteFlagRequest>,
    ) -> Result<Response<pb::DeleteFlagResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let committed =
            blocking(move || envs.delete_flag(writer.ctx(), &req.key, expected)).await?;
        Ok(Response::new(pb::DeleteFlagResponse {
            revision: committed.revision,
        }))
    }

    async fn set_flag_enabled(
        &self,
        request: Request<pb::SetFlagEnabledRequest>,
    ) -> Result<Response<pb::SetFlagEnabledResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let (revision, flag, paused_rollouts) = blocking(move || {
            let committed = envs.set_flag_enabled(writer.ctx(), &req.key, req.enabled, expected)?;
            let flag = written_flag(&envs, &writer.environment, &req.key, &committed)?;
            Ok((committed.revision, flag, committed.paused_rollouts))
        })
        .await?;
        Ok(Response::new(pb::SetFlagEnabledResponse {
            revision,
            flag: Some(flag),
            paused_rollouts,
        }))
    }

    async fn set_default_serve(
        &self,
        request: Request<pb::SetDefaultServeRequest>,
    ) -> Result<Response<pb::SetDefaultServeResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let (revision, flag, paused_rollouts) = blocking(move || {
            let committed =
                envs.set_default_serve(writer.ctx(), &req.key, serve, req.force, expected)?;
            let flag = written_flag(&envs, &writer.environment, &req.key, &committed)?;
            Ok((committed.revision, flag, committed.paused_rollouts))
        })
        .await?;
        Ok(Response::new(pb::SetDefaultServeResponse {
            revision,
            flag: Some(flag),
            paused_rollouts,
        }))
    }

    async fn revert_flag(
        &self,
        request: Request<pb::RevertFlagRequest>,
    ) -> Result<Response<pb::RevertFlagResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let (revision, flag, paused_rollouts) = blocking(move || {
            let committed = envs.revert_flag(writer.ctx(), &req.key, req.to_version, expected)?;
            let flag = written_flag(&envs, &writer.environment, &req.key, &committed)?;
            Ok((committed.revision, flag, committed.paused_rollouts))
        })
        .await?;
        Ok(Response::new(pb::RevertFlagResponse {
            revision,
            flag: Some(flag),
            paused_rollouts,
        }))
    }

    async fn promote_flag(
        &self,
        request: Request<pb::PromoteFlagRequest>,
    ) -> Result<Response<pb::PromoteFlagResponse>, Status> {
        let req = request.get_ref();
        let token = self.allow(&request, Access::Write(&req.environment))?;
        if req.from_environment.is_empty() {
            return Err(wire::missing("from_environment").into());
        }
        self.allow(&request, Access::Read(&req.from_environment))?;
        let req = request.into_inner();
        wire::key(&req.key, "key")?;
        same_environments(&req.from_environment, &req.environment, "flag")?;
        let expected = wire::expected(req.expected_version);
        let writer = Writer::new(
            &token,
            "PromoteFlag",
            req.environment,
            req.comment,
            req.confirm_protected,
        )?;
        let envs = self.envs.clone();
        let (revision, flag, segments) = blocking(move || {
            let committed = envs.promote_flag(
                writer.ctx(),
                &req.key,
                &req.from_environment,
                expected,
                req.with_segments,
            )?;
            let flag = written_flag(&envs, &writer.environment, &req.key, &committed)?;
            let mut segments: Vec<&Segment> = committed.segments.iter().collect();
            segments.sort_by(|a, b| a.key.cmp(&b.key));
            let segments = segments.into_iter().map(wire::segment_summary).collect();
            Ok((committed.revision, flag, segments))
        })
        .await?;
        Ok(Response::new(pb::PromoteFlagResponse {
            revision,
            flag: Some(flag),
            segments,
        }))
    }

    // ---- Segments ----

    async fn create_segment(
        &self,
        request: Request<pb::CreateSegmentRequest>,
    ) -> Result<Response<pb::CreateSegmentResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let (revision, segment) = blocking(move || {
            let committed = envs.create_segment(writer.ctx(), segment)?;
            let segment = written_segment(&envs, &writer.environment, &key, &committed)?;
            Ok((committed.revision, segment))
        })
        .await?;
        Ok(Response::new(pb::CreateSegmentResponse {
            revision,
            segment: Some(segment),
        }))
    }

    async fn get_segment(
        &self,
        request: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::GetSegmentResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let pb::GetSegmentRequest { environment, key } = request.into_inner();
        wire::key(&key, "key")?;
        let envs = self.envs.clone();
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

    async fn list_segments(
        &self,
        request: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let req = request.into_inner();
        let envs = self.envs.clone();
        let response = blocking(move || {
            let current = envs.get(&req.environment)?.current();
            let matching: Vec<&Segment> = current
                .snapshot
                .segments()
                .filter(|s| {
                    contains_text(&req.text, [Some(s.key.as_str()), s.description.as_deref()])
                })
                .collect();
            let scope = Scope(&["segments", &req.environment, &req.text]);
            let (segments, next_page_token) =
                page(matching, |s| &s.key, scope, &req.page_token, req.page_size)?;
            let mut segments: Vec<pb::SegmentEntry> = segments
                .into_iter()
                .map(|segment| {
                    Ok(pb::SegmentEntry {
                        segment: Some(wire::segment_summary(segment)),
                        last_change: last_change(
                            &**envs.store(),
                            &req.environment,
                            segment.version,
                        )?,
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

    async fn update_segment(
        &self,
        request: Request<pb::UpdateSegmentRequest>,
    ) -> Result<Response<pb::UpdateSegmentResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let (revision, segment) = blocking(move || {
            let committed = envs.update_segment(writer.ctx(), segment)?;
            let segment = written_segment(&envs, &writer.environment, &key, &committed)?;
            Ok((committed.revision, segment))
        })
        .await?;
        Ok(Response::new(pb::UpdateSegmentResponse {
            revision,
            segment: Some(segment),
        }))
    }

    async fn delete_segment(
        &self,
        request: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<pb::DeleteSegmentResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let committed =
            blocking(move || envs.delete_segment(writer.ctx(), &req.key, expected)).await?;
        Ok(Response::new(pb::DeleteSegmentResponse {
            revision: committed.revision,
        }))
    }

    async fn patch_segment_keys(
        &self,
        request: Request<pb::PatchSegmentKeysRequest>,
    ) -> Result<Response<pb::PatchSegmentKeysResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let (committed, segment) = blocking(move || {
            let committed = envs.patch_segment_keys(writer.ctx(), &keys, expected)?;
            let segment = written_segment(&envs, &writer.environment, &keys.segment, &committed)?;
            Ok((committed, segment))
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

    async fn promote_segment(
        &self,
        request: Request<pb::PromoteSegmentRequest>,
    ) -> Result<Response<pb::PromoteSegmentResponse>, Status> {
        let req = request.get_ref();
        let token = self.allow(&request, Access::Write(&req.environment))?;
        if req.from_environment.is_empty() {
            return Err(wire::missing("from_environment").into());
        }
        self.allow(&request, Access::Read(&req.from_environment))?;
        let req = request.into_inner();
        wire::key(&req.key, "key")?;
        same_environments(&req.from_environment, &req.environment, "segment")?;
        let expected = wire::expected(req.expected_version);
        let writer = Writer::new(
            &token,
            "PromoteSegment",
            req.environment,
            req.comment,
            req.confirm_protected,
        )?;
        let envs = self.envs.clone();
        let (revision, segment) = blocking(move || {
            let committed =
                envs.promote_segment(writer.ctx(), &req.key, &req.from_environment, expected)?;
            let segment = written_segment(&envs, &writer.environment, &req.key, &committed)?;
            Ok((committed.revision, segment))
        })
        .await?;
        Ok(Response::new(pb::PromoteSegmentResponse {
            revision,
            segment: Some(segment),
        }))
    }

    // ---- Documents ----

    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
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

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let environment = request.into_inner().environment;
        let envs = self.envs.clone();
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

    // ---- History ----

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
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

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let token = self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let req = request.get_ref();
        watch_changes(
            &self.envs,
            &self.tokens,
            &self.signals,
            &token,
            &req.environment,
            req.since_revision,
        )
    }

    // ---- Evaluation ----

    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let req = request.into_inner();
        let context = wire::required(req.context, "context")?;
        wire::context(&context)?;
        if !req.flag.is_empty() {
            wire::key(&req.flag, "flag")?;
        }
        let envs = self.envs.clone();
        let response = blocking(move || {
            let current = envs.get(&req.environment)?.current();
            let snapshot = &current.snapshot;
            let keys: Vec<&str> = if req.flag.is_empty() {
                let mut keys: Vec<&str> = snapshot.flags().map(|f| f.key.as_str()).collect();
                keys.sort_unstable();
                keys
            } else if snapshot.flag(&req.flag).is_some() {
                vec![req.flag.as_str()]
            } else {
                return Err(ServerError::NotFound(format!(
                    "no flag {:?} in environment {:?}",
                    req.flag, req.environment
                )));
            };
            let ctx = Context::from(&context);
            let evaluations = keys
                .into_iter()
                .map(|key| {
                    let detail = snapshot.evaluate(key, &ctx);
                    pb::Evaluation {
                        flag: key.to_owned(),
                        value_json: detail.value.to_string(),
                        variant: detail.variant.unwrap_or_default().to_owned(),
                        reason: Some(pb::Reason::from(detail.reason)),
                        version: detail.version.unwrap_or_default(),
                        bucket: detail.bucket,
                    }
                })
                .collect();
            Ok(pb::EvaluateResponse {
                revision: current.revision,
                evaluations,
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    // ---- Tokens ----

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let creator = self.allow(&request, Access::Admin)?;
        let req = request.into_inner();
        let role = wire::role(req.role)?;
        let environment = Some(req.environment).filter(|e| !e.is_empty());
        if let Some(environment) = &environment {
            wire::key(environment, "environment")?;
        }
        let (envs, tokens) = (self.envs.clone(), self.tokens.clone());
        let (token, secret) = blocking(move || {
            let create =
                || tokens.create_named(&req.name, role, environment.as_deref(), &creator.name);
            match (role, &environment) {
                // Created while the environment cannot be deleted: a deletion revokes its
                // tokens, and one created during it would outlive it.
                (Role::Editor | Role::Sdk, Some(key)) => envs.while_exists(key, create),
                _ => create(),
            }
        })
        .await?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(wire::token(&token)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.allow(&request, Access::Admin)?;
        let mut live: Vec<TokenRecord> = self
            .tokens
            .list()
            .into_iter()
            .filter(|t| !t.revoked)
            .collect();
        // By name; oldest first among the same name (the offline admin-token tool reuses one).
        live.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListTokensResponse {
            tokens: live.iter().map(wire::token).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.allow(&request, Access::Admin)?;
        let id = request.into_inner().id;
        wire::required_str(&id, "id")?;
        let tokens = self.tokens.clone();
        blocking(move || tokens.revoke(&id)).await?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    // ---- Propagation: served once SDKs connect through the Watch stream ----

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let env = self.envs.get(&request.get_ref().environment)?;
        let mut instances = self.clients.list(&env.key);
        instances.sort_by(|a, b| {
            (
                b.streams > 0,
                &a.identity.application,
                &a.identity.host,
                &a.identity.instance_id,
            )
                .cmp(&(
                    a.streams > 0,
                    &b.identity.application,
                    &b.identity.host,
                    &b.identity.instance_id,
                ))
        });
        Ok(Response::new(pb::ListClientsResponse {
            revision: env.current().revision,
            clients: instances
                .iter()
                .map(|i| wire::client_instance(i, &env.epoch))
                .collect(),
        }))
    }

    async fn wait_for_revision(
        &self,
        request: Request<pb::WaitForRevisionRequest>,
    ) -> Result<Response<pb::WaitForRevisionResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let req = request.into_inner();
        let env = self.envs.get(&req.environment)?;
        let current = env.current().revision;
        let revision = match req.revision {
            0 => current,
            r if r > current => {
                return Err(Status::invalid_argument(format!(
                    "revision {r} is ahead of environment {:?}, which is at revision {current}",
                    env.key
                )))
            }
            r => r,
        };
        let timeout = match req.timeout_ms {
            0 => DEFAULT_WAIT,
            ms => Duration::from_millis(ms).min(MAX_WAIT),
        };
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let mut changes = self.clients.changes();
        loop {
            changes.borrow_and_update();
            let instances = self.clients.list(&env.key);
            let progress = Progress::of(&instances, &env.epoch, revision);
            let complete = progress.pending.is_empty();
            let timed_out = tokio::time::Instant::now() >= deadline;
            if complete || timed_out {
                let elapsed = started.elapsed().as_millis() as u64;
                return Ok(Response::new(
                    progress.response(&env.epoch, revision, elapsed),
                ));
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.signals.stopped() => {
                    return Err(Status::unavailable("flagstaffd is shutting down"));
                }
            }
        }
    }

    // ---- Rollout plans ----

    async fn start_rollout(
        &self,
        request: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::StartRolloutResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
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
        let envs = self.envs.clone();
        let (revision, flag, plan) = blocking(move || {
            let step = envs.start_rollout(writer.ctx(), &plan)?;
            let flag = written_flag(&envs, &writer.environment, &plan.flag, &step.committed)?;
            Ok((step.committed.revision, flag, step.plan))
        })
        .await?;
        Ok(Response::new(pb::StartRolloutResponse {
            revision,
            flag: Some(flag),
            plan: Some(wire::rollout(&plan)),
        }))
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::GetRolloutResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let req = request.into_inner();
        wire::key(&req.flag, "flag")?;
        let env = self.envs.get(&req.environment)?;
        let plan = env.rollout(&req.flag).ok_or_else(|| {
            ServerError::NotFound(format!(
                "flag {:?} has no rollout plan in environment {:?}",
                req.flag, req.environment
            ))
        })?;
        Ok(Response::new(pb::GetRolloutResponse {
            plan: Some(wire::rollout(&plan)),
        }))
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        self.allow(&request, Access::Read(&request.get_ref().environment))?;
        let req = request.into_inner();
        let env = self.envs.get(&req.environment)?;
        let plans = env
            .rollouts()
            .values()
            .filter(|p| req.include_finished || p.is_active())
            .map(wire::rollout)
            .collect();
        Ok(Response::new(pb::ListRolloutsResponse { plans }))
    }

    async fn pause_rollout(
        &self,
        request: Request<pb::PauseRolloutRequest>,
    ) -> Result<Response<pb::PauseRolloutResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
        let req = request.into_inner();
        wire::key(&req.flag, "flag")?;
        let writer = Writer::new(
            &token,
            "PauseRollout",
            req.environment,
            req.comment,
            req.confirm_protected,
        )?;
        let envs = self.envs.clone();
        let plan = blocking(move || envs.pause_rollout(writer.ctx(), &req.flag)).await?;
        Ok(Response::new(pb::PauseRolloutResponse {
            plan: Some(wire::rollout(&plan)),
        }))
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::ResumeRolloutRequest>,
    ) -> Result<Response<pb::ResumeRolloutResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
        let req = request.into_inner();
        wire::key(&req.flag, "flag")?;
        let writer = Writer::new(
            &token,
            "ResumeRollout",
            req.environment,
            req.comment,
            req.confirm_protected,
        )?;
        let envs = self.envs.clone();
        let plan = blocking(move || envs.resume_rollout(writer.ctx(), &req.flag)).await?;
        Ok(Response::new(pb::ResumeRolloutResponse {
            plan: Some(wire::rollout(&plan)),
        }))
    }

    async fn rollback_rollout(
        &self,
        request: Request<pb::RollbackRolloutRequest>,
    ) -> Result<Response<pb::RollbackRolloutResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
        let req = request.into_inner();
        wire::key(&req.flag, "flag")?;
        let writer = Writer::new(
            &token,
            "RollbackRollout",
            req.environment,
            req.comment,
            req.confirm_protected,
        )?;
        let envs = self.envs.clone();
        let (revision, flag, plan) = blocking(move || {
            let step = envs.rollback_rollout(writer.ctx(), &req.flag)?;
            let flag = written_flag(&envs, &writer.environment, &req.flag, &step.committed)?;
            Ok((step.committed.revision, flag, step.plan))
        })
        .await?;
        Ok(Response::new(pb::RollbackRolloutResponse {
            revision,
            flag: Some(flag),
            plan: Some(wire::rollout(&plan)),
        }))
    }

    async fn promote_rollout(
        &self,
        request: Request<pb::PromoteRolloutRequest>,
    ) -> Result<Response<pb::PromoteRolloutResponse>, Status> {
        let token = self.allow(&request, Access::Write(&request.get_ref().environment))?;
        let req = request.into_inner();
        wire::key(&req.flag, "flag")?;
        let writer = Writer::new(
            &token,
            "PromoteRollout",
            req.environment,
            req.comment,
            req.confirm_protected,
        )?;
        let envs = self.envs.clone();
        let (revision, flag, plan) = blocking(move || {
            let step = envs.promote_rollout(writer.ctx(), &req.flag)?;
            let flag = written_flag(&envs, &writer.environment, &req.flag, &step.committed)?;
            Ok((step.committed.revision, flag, step.plan))
        })
        .await?;
        Ok(Response::new(pb::PromoteRolloutResponse {
            revision,
            flag: Some(flag),
            plan: Some(wire::rollout(&plan)),
        }))
    }
}

/// How long `WaitForRevision` waits when the request does not say.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The longest `WaitForRevision` waits.
const MAX_WAIT: Duration = Duration::from_secs(5 * 60);

/// How far back `WaitForRevision` reports instances that disconnected without the revision.
const RECENTLY_GONE_MS: u64 = 10 * 60 * 1000;

/// Where a revision stands among an environment's instances.
struct Progress<'a> {
    applied: usize,
    connected: usize,
    /// Connected, and not at the revision yet.
    pending: Vec<&'a Instance>,
    /// Disconnected in the last 10 minutes without having applied it.
    gone: Vec<&'a Instance>,
}

impl<'a> Progress<'a> {
    fn of(instances: &'a [Instance], epoch: &str, revision: u64) -> Progress<'a> {
        let has = |i: &Instance| i.epoch == epoch && i.applied_revision >= revision;
        let now = crate::storage::now_ms();
        let connected: Vec<&Instance> = instances.iter().filter(|i| i.streams > 0).collect();
        Progress {
            applied: connected.iter().filter(|i| has(i)).count(),
            connected: connected.len(),
            pending: connected.iter().copied().filter(|i| !has(i)).collect(),
            gone: instances
                .iter()
                .filter(|i| {
                    i.disconnected_ms
                        .is_some_and(|at| now.saturating_sub(at) < RECENTLY_GONE_MS)
                        && !has(i)
                })
                .collect(),
        }
    }

    fn response(&self, epoch: &str, revision: u64, elapsed_ms: u64) -> pb::WaitForRevisionResponse {
        pb::WaitForRevisionResponse {
            revision,
            complete: self.pending.is_empty(),
            applied: self.applied as u32,
            connected: self.connected as u32,
            elapsed_ms,
            pending: self
                .pending
                .iter()
                .map(|i| wire::client_instance(i, epoch))
                .collect(),
            disconnected: self
                .gone
                .iter()
                .map(|i| wire::client_instance(i, epoch))
                .collect(),
        }
    }
}
