//! The server's own types (environments, audit entries, tokens) as Admin messages, and the
//! request fields the service reads with the contract's conventions. Flags, segments,
//! documents, contexts and reasons convert in `flagstaff-proto`, the one place for the
//! engine's types; this module only applies what admin.proto adds around them.

use flagstaff_engine::{
    clip, quote, Flag, Segment, Serve, MAX_CONTEXT_ATTRIBUTES, MAX_CONTEXT_STRING_BYTES,
    MAX_NAME_BYTES, MAX_TEXT_BYTES,
};
use flagstaff_proto::pb;

use crate::environments::Environment;
use crate::error::ServerError;
use crate::storage::{AuditChange, AuditEntry, AuditHead, KeyCounts, Role, TokenRecord};

/// Milliseconds as the contract's `int64` times.
pub fn unix_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A count as the contract's `uint32` counts.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A request's `expected_version`, or a document's `version`: 0 means "no check", so it
/// becomes `None`, never `Some(0)` (which the environments read as "must not exist").
pub fn expected(version: u64) -> Option<u64> {
    (version != 0).then_some(version)
}

/// The refusal of a request that lacks a field it needs.
pub fn missing(field: &str) -> ServerError {
    ServerError::Invalid(format!("missing required field {field:?}"))
}

/// A message field the request must set.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, ServerError> {
    value.ok_or_else(|| missing(field))
}

/// A string field the request must set.
pub fn required_str(value: &str, field: &str) -> Result<(), ServerError> {
    if value.is_empty() {
        Err(missing(field))
    } else {
        Ok(())
    }
}

/// A field naming something by key (a flag, a segment, an environment): set, and a valid key,
/// so that a lookup of anything else is refused as such rather than quoted back as "not found".
pub fn key(value: &str, field: &str) -> Result<(), ServerError> {
    required_str(value, field)?;
    if flagstaff_engine::is_valid_key(value) {
        Ok(())
    } else {
        Err(ServerError::Invalid(format!(
            "{field}: {} is not a valid key: use 1 to 128 lower-case letters, digits, '.', '_' \
             or '-', starting with a letter or digit",
            quote(value)
        )))
    }
}

/// A field naming a context attribute (`bucket_by`): 1 to 256 bytes, no control characters.
pub fn name(value: &str, field: &str) -> Result<(), ServerError> {
    match flagstaff_engine::name_problem(value) {
        Some(problem) => Err(ServerError::Invalid(format!("{field}: {problem}"))),
        None => Ok(()),
    }
}

/// A field of an SDK's identity (instance id, application, host, SDK version): at most 256
/// bytes, no control characters.
pub fn identity(value: &str, field: &str) -> Result<(), ServerError> {
    if value.is_empty() {
        Ok(())
    } else {
        name(value, field)
    }
}

/// A context to evaluate for (DESIGN.md section 4a): at most 1,000 attributes, names of at
/// most 256 bytes, strings (the key, values, list elements) of at most 64 KiB.
pub fn context(context: &pb::Context) -> Result<(), ServerError> {
    use pb::attribute_value::Value as V;
    let long_string = |s: &str, field: String| -> Result<(), ServerError> {
        if s.len() > MAX_CONTEXT_STRING_BYTES {
            return Err(ServerError::Invalid(format!(
                "{field}: {} is {} bytes, over the limit of {} KiB",
                quote(s),
                s.len(),
                MAX_CONTEXT_STRING_BYTES >> 10
            )));
        }
        Ok(())
    };
    long_string(&context.key, "context.key".to_owned())?;
    if context.attributes.len() > MAX_CONTEXT_ATTRIBUTES {
        return Err(ServerError::Invalid(format!(
            "context.attributes: {} attributes, at most {MAX_CONTEXT_ATTRIBUTES} allowed",
            context.attributes.len()
        )));
    }
    for (i, attribute) in context.attributes.iter().enumerate() {
        if attribute.name.len() > MAX_NAME_BYTES {
            return Err(ServerError::Invalid(format!(
                "context.attributes[{i}].name: {} is {} bytes, over the limit of {MAX_NAME_BYTES}",
                quote(&attribute.name),
                attribute.name.len()
            )));
        }
        let field = || format!("context.attributes[{}]", clip(&attribute.name));
        match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(V::StringValue(s)) => long_string(s, field())?,
            Some(V::ListValue(list)) => {
                for element in &list.values {
                    if let Some(V::StringValue(s)) = &element.value {
                        long_string(s, field())?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A change's comment: at most 4 KiB, no NUL character.
pub fn comment(value: &str) -> Result<(), ServerError> {
    match flagstaff_engine::text_problem(value, MAX_TEXT_BYTES) {
        Some(problem) => Err(ServerError::Invalid(format!("comment: {problem}"))),
        None => Ok(()),
    }
}

/// A flag from a request: converted (an error names the field), its version read as an
/// expected version.
pub fn flag(flag: pb::Flag) -> Result<Flag, ServerError> {
    let mut flag = Flag::try_from(flag).map_err(|e| ServerError::Invalid(e.to_string()))?;
    flag.version = flag.version.and_then(expected);
    Ok(flag)
}

/// A segment from a request, like [`flag`].
pub fn segment(segment: pb::Segment) -> Result<Segment, ServerError> {
    let mut segment =
        Segment::try_from(segment).map_err(|e| ServerError::Invalid(e.to_string()))?;
    segment.version = segment.version.and_then(expected);
    Ok(segment)
}

/// A serve from a request's field `serve` (an error names it).
pub fn serve(serve: pb::Serve) -> Result<Serve, ServerError> {
    Serve::try_from(serve).map_err(|e| ServerError::Invalid(e.to_string()))
}

/// The version a write request expects: `expected_version`, or the document's own version;
/// when both are set they must agree.
pub fn expected_of(
    document_version: Option<u64>,
    expected_version: u64,
    document: &str,
) -> Result<Option<u64>, ServerError> {
    match (document_version, expected(expected_version)) {
        (Some(a), Some(b)) if a != b => Err(ServerError::Invalid(format!(
            "expected_version {b} and {document}.version {a} differ; set one of them, or both \
             to the same version"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

/// A token role from a request.
pub fn role(role: i32) -> Result<Role, ServerError> {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Editor) => Ok(Role::Editor),
        Ok(pb::Role::Sdk) => Ok(Role::Sdk),
        Ok(pb::Role::Client) => Ok(Role::Client),
        Ok(pb::Role::Unspecified) => Err(ServerError::Invalid(
            "role: must be set, got ROLE_UNSPECIFIED".to_owned(),
        )),
        Err(_) => Err(ServerError::Invalid(format!("role: unknown value {role}"))),
    }
}

/// An environment as listings show it.
pub fn environment(env: &Environment) -> pb::Environment {
    let current = env.current();
    pb::Environment {
        key: env.key.clone(),
        protected: env.protected,
        epoch: env.epoch.clone(),
        revision: current.revision,
        flag_count: count(current.snapshot.len()),
        segment_count: count(current.snapshot.segments().count()),
        created_unix_ms: unix_ms(env.created_ms),
    }
}

/// A segment without its key lists, with their sizes.
pub fn segment_summary(segment: &Segment) -> pb::SegmentSummary {
    summary(Some(segment), KeyCounts::of(Some(segment))).unwrap_or_default()
}

fn summary(segment: Option<&Segment>, counts: KeyCounts) -> Option<pb::SegmentSummary> {
    segment.map(|segment| {
        // Built field by field so the key lists, up to 200,000 keys, are never copied.
        let without_keys = Segment {
            key: segment.key.clone(),
            description: segment.description.clone(),
            included: Vec::new(),
            excluded: Vec::new(),
            rules: segment.rules.clone(),
            version: segment.version,
        };
        pb::SegmentSummary {
            segment: Some(pb::Segment::from(&without_keys)),
            included_count: count(counts.included),
            excluded_count: count(counts.excluded),
        }
    })
}

/// How one document changed, as audit entries and apply responses report it.
pub fn change(change: &AuditChange) -> pb::Change {
    let document = match change {
        AuditChange::Flag { key, before, after } => pb::change::Document::Flag(pb::FlagChange {
            key: key.clone(),
            before: before.as_deref().map(pb::Flag::from),
            after: after.as_deref().map(pb::Flag::from),
        }),
        AuditChange::Segment {
            key,
            before,
            after,
            included_added,
            included_removed,
            excluded_added,
            excluded_removed,
            counts_before,
            counts_after,
        } => pb::change::Document::Segment(pb::SegmentChange {
            key: key.clone(),
            before: summary(before.as_deref(), *counts_before),
            after: summary(after.as_deref(), *counts_after),
            keys: Some(pb::SegmentKeyPatch {
                segment: key.clone(),
                add_included: included_added.clone(),
                remove_included: included_removed.clone(),
                add_excluded: excluded_added.clone(),
                remove_excluded: excluded_removed.clone(),
            }),
        }),
    };
    pb::Change {
        document: Some(document),
    }
}

/// An audit entry of `environment`, with the changes `keep` selects.
pub fn audit_entry(
    environment: &str,
    entry: &AuditEntry,
    keep: impl Fn(&AuditChange) -> bool,
) -> pb::AuditEntry {
    pb::AuditEntry {
        environment: environment.to_owned(),
        revision: entry.revision,
        time_unix_ms: unix_ms(entry.time_ms),
        actor: entry.actor.clone(),
        comment: entry.comment.clone(),
        operation: entry.operation.clone(),
        changes: entry
            .changes
            .iter()
            .filter(|c| keep(c))
            .map(change)
            .collect(),
    }
}

/// Who made a change, and when.
pub fn change_info(entry: &AuditHead) -> pb::ChangeInfo {
    pb::ChangeInfo {
        revision: entry.revision,
        time_unix_ms: unix_ms(entry.time_ms),
        actor: entry.actor.clone(),
        comment: entry.comment.clone(),
    }
}

/// A token, without its secret or hash.
pub fn token(token: &TokenRecord) -> pb::Token {
    let role = match token.role {
        Role::Admin => pb::Role::Admin,
        Role::Editor => pb::Role::Editor,
        Role::Sdk => pb::Role::Sdk,
        Role::Client => pb::Role::Client,
    };
    pb::Token {
        id: token.id.clone(),
        name: token.name.clone(),
        role: role as i32,
        environment: token.environment.clone().unwrap_or_default(),
        created_unix_ms: unix_ms(token.created_ms),
        created_by: token.created_by.clone(),
    }
}

/// An SDK instance, with the revision it applied in `epoch` (0 when it applied none there).
pub fn client_instance(instance: &crate::clients::Instance, epoch: &str) -> pb::ClientInstance {
    let applied = instance.epoch == epoch;
    pb::ClientInstance {
        instance_id: instance.identity.instance_id.clone(),
        application: instance.identity.application.clone(),
        sdk_version: instance.identity.sdk_version.clone(),
        host: instance.identity.host.clone(),
        token: instance.token.clone(),
        connected: instance.streams > 0,
        connected_unix_ms: unix_ms(instance.connected_ms),
        disconnected_unix_ms: instance.disconnected_ms.map_or(0, unix_ms),
        applied_revision: if applied {
            instance.applied_revision
        } else {
            0
        },
        applied_unix_ms: if applied {
            unix_ms(instance.applied_ms)
        } else {
            0
        },
    }
}

/// A stored rollout plan as the Admin API's `RolloutPlan`.
pub fn rollout(plan: &crate::storage::RolloutRecord) -> pb::RolloutPlan {
    use crate::storage::{RolloutEventKind as K, RolloutState as S};
    let state = match plan.state {
        S::Running => pb::RolloutState::Running,
        S::Paused => pb::RolloutState::Paused,
        S::Completed => pb::RolloutState::Completed,
        S::RolledBack => pb::RolloutState::RolledBack,
    };
    pb::RolloutPlan {
        flag: plan.flag.clone(),
        rule_id: plan.rule_id.clone(),
        target_variant: plan.target.clone(),
        baseline_variant: plan.baseline.clone(),
        bucket_by: plan.bucket_by.clone(),
        stages: plan
            .stages
            .iter()
            .map(|s| pb::RolloutStage {
                percent: s.percent,
                hold_ms: s.hold_ms,
            })
            .collect(),
        guard: plan.guard.as_ref().map(|g| pb::RolloutGuard {
            event: g.event.clone(),
            max_ratio: g.max_ratio,
            min_events: g.min_events,
        }),
        guard_status: crate::rollout::guard::of_plan(plan).map(|(tally, v)| pb::GuardStatus {
            flag_version: tally.flag_version,
            target_exposures: tally.target_exposures,
            baseline_exposures: tally.baseline_exposures,
            target_events: tally.target_events,
            baseline_events: tally.baseline_events,
            null_share: v.null_share,
            observed_share: v.observed_share,
            statistic: v.statistic,
            threshold: v.threshold,
            state: match v.state {
                crate::rollout::guard::State::Collecting => pb::GuardState::Collecting,
                crate::rollout::guard::State::Monitoring => pb::GuardState::Monitoring,
                crate::rollout::guard::State::Rejected => pb::GuardState::Rejected,
            } as i32,
        }),
        state: state as i32,
        stage_index: count(plan.stage_index),
        percent: plan.percent,
        stage_started_unix_ms: unix_ms(plan.stage_started_ms),
        next_stage_unix_ms: unix_ms(plan.next_stage_ms),
        state_message: plan.state_message.clone(),
        flag_version: plan.flag_version,
        created_unix_ms: unix_ms(plan.created_ms),
        created_by: plan.created_by.clone(),
        history: plan
            .history
            .iter()
            .map(|e| pb::RolloutEvent {
                time_unix_ms: unix_ms(e.time_ms),
                actor: e.actor.clone(),
                kind: match e.kind {
                    K::Started => pb::RolloutEventKind::Started,
                    K::Advanced => pb::RolloutEventKind::Advanced,
                    K::Paused => pb::RolloutEventKind::Paused,
                    K::Resumed => pb::RolloutEventKind::Resumed,
                    K::RolledBack => pb::RolloutEventKind::RolledBack,
                    K::Promoted => pb::RolloutEventKind::Promoted,
                    K::Completed => pb::RolloutEventKind::Completed,
                } as i32,
                stage_index: count(e.stage_index),
                percent: e.percent,
                revision: e.revision,
                comment: e.comment.clone(),
            })
            .collect(),
    }
}
