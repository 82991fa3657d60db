//! `/envs/{env}/clients`: propagation. The environment's latest change, "applied by N of M
//! instances", and the SDK instances watching it, from the same source as the Admin API's
//! `ListClients` ([`clients::of_environment`]: on a database several flagstaffd share, every
//! replica's instances, merged).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use crate::clients::{self, Instance};
use crate::environments::Environment;
use crate::feed::Backlog;
use crate::storage::{AuditHead, Change, Store};

use super::proxy::Proxied;
use super::{
    bad_query, environment_page, off_thread, page, unavailable, utc, Console, Paging, Who,
};

/// Instances shown on one page.
pub const INSTANCES_PER_PAGE: usize = 100;

/// Documents a change is named by; more are counted.
const NAMED: usize = 5;

/// What the propagation page is asked for.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ClientsQuery {
    #[serde(default)]
    page: Option<usize>,
}

/// The environment's latest change.
struct ChangeView {
    revision: u64,
    /// When, who and why, when the audit log has it.
    head: Option<AuditHead>,
    time: String,
    /// What it changed, when this flagstaffd still holds the change in memory: `flag
    /// checkout`, `segments beta, staff`.
    what: Option<String>,
}

/// An instance as the page lists it.
struct InstanceView {
    application: String,
    host: String,
    instance_id: String,
    sdk: String,
    token: String,
    /// The revision it applied in this environment's epoch; 0 for none.
    applied: u64,
    /// `up to date`, `behind`, `disconnected`.
    state: &'static str,
    /// The state as a class name.
    state_class: &'static str,
    /// `connected since …`, or when its last stream closed.
    seen: String,
}

#[derive(Template)]
#[template(path = "console/clients.html")]
struct ClientsPage {
    who: Option<Who>,
    environment: String,
    /// The environment's page this is, for its navigation.
    section: &'static str,
    change: Option<ChangeView>,
    /// Connected instances that applied the latest revision.
    applied: usize,
    /// Connected instances.
    connected: usize,
    /// Every instance seen in the last 24 hours.
    total: usize,
    instances: Vec<InstanceView>,
    shown_from: usize,
    shown_to: usize,
    paging: Paging,
    previous: Option<String>,
    next: Option<String>,
}

pub(super) async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    proxied: Option<Extension<Proxied>>,
    query: Result<Query<ClientsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (session, environment) = match environment_page(&console, &headers, proxied, &env).await {
        Ok(opened) => opened,
        Err(response) => return *response,
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return bad_query(&session, &e),
    };
    let revision = environment.current().revision;
    let instances =
        match clients::of_environment(&console.clients, console.envs.store(), &environment.key)
            .await
        {
            Ok(instances) => instances,
            Err(e) => return unavailable(&e),
        };
    let change = match latest_change(&console, &environment, revision).await {
        Ok(change) => change,
        Err(e) => return unavailable(&e),
    };
    let epoch = environment.epoch.as_str();
    let connected: Vec<&Instance> = instances.iter().filter(|i| i.streams > 0).collect();
    let applied = connected
        .iter()
        .filter(|i| clients::has_applied(i, epoch, revision))
        .count();
    let paging = Paging::of(instances.len(), INSTANCES_PER_PAGE, query.page);
    let shown: Vec<InstanceView> = paging
        .of_items(&instances)
        .map(|i| view(i, epoch, revision))
        .collect();
    let link = |n: usize| format!("/envs/{env}/clients?page={n}");
    page(
        StatusCode::OK,
        &ClientsPage {
            who: Some(Who::of(&session)),
            environment: env.clone(),
            section: "clients",
            change,
            applied,
            connected: connected.len(),
            total: instances.len(),
            shown_from: paging.skip() + usize::from(!shown.is_empty()),
            shown_to: paging.skip() + shown.len(),
            instances: shown,
            paging,
            previous: paging.previous().map(link),
            next: paging.next().map(link),
        },
    )
}

/// The change of `revision` (the latest) of `environment`: who and when from the audit log,
/// what from this flagstaffd's feed while it holds it; `None` before the first change.
async fn latest_change<S: Store>(
    console: &Console<S>,
    environment: &Environment,
    revision: u64,
) -> Result<Option<ChangeView>, crate::error::ServerError> {
    if revision == 0 {
        return Ok(None);
    }
    let (store, key) = (console.envs.store().clone(), environment.key.clone());
    let head = off_thread(move || Ok(store.audit_head(&key, revision)?)).await?;
    let what = match environment.feed().since(revision - 1) {
        Backlog::Events(events) => events
            .iter()
            .find(|e| e.revision() == revision)
            .map(|e| what_changed(&e.change)),
        Backlog::Missing => None,
    };
    Ok(Some(ChangeView {
        revision,
        time: head.as_ref().map(|h| utc(h.time_ms)).unwrap_or_default(),
        head,
        what,
    }))
}

/// The documents `change` touched, named: `flag checkout; segment beta (keys)`, the first
/// few of each kind, the others counted.
fn what_changed(change: &Change) -> String {
    let mut parts = Vec::new();
    let mut name = |kind: &str, keys: Vec<&str>| {
        if keys.is_empty() {
            return;
        }
        let plural = if keys.len() == 1 { "" } else { "s" };
        let mut text = format!(
            "{kind}{plural} {}",
            keys.iter()
                .take(NAMED)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
        if keys.len() > NAMED {
            text.push_str(&format!(" and {} more", keys.len() - NAMED));
        }
        parts.push(text);
    };
    name(
        "flag",
        change.flags.iter().map(|f| f.key.as_str()).collect(),
    );
    name(
        "deleted flag",
        change.deleted_flags.iter().map(String::as_str).collect(),
    );
    name(
        "segment",
        change
            .segments
            .iter()
            .map(|s| s.key.as_str())
            .chain(change.segment_patches.iter().map(|p| p.segment.as_str()))
            .collect(),
    );
    name(
        "deleted segment",
        change.deleted_segments.iter().map(String::as_str).collect(),
    );
    if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join("; ")
    }
}

/// `instance` as the page lists it, against the latest `revision` of `epoch`.
fn view(instance: &Instance, epoch: &str, revision: u64) -> InstanceView {
    let connected = instance.streams > 0;
    let (state, state_class) = match (connected, clients::has_applied(instance, epoch, revision)) {
        (false, _) => ("disconnected", "off"),
        (true, true) => ("up to date", "on"),
        (true, false) => ("behind", "behind"),
    };
    let seen = match instance.disconnected_ms {
        Some(at) if !connected => format!("disconnected {}", utc(at)),
        _ => format!("connected since {}", utc(instance.connected_ms)),
    };
    InstanceView {
        application: instance.identity.application.clone(),
        host: instance.identity.host.clone(),
        instance_id: instance.identity.instance_id.clone(),
        sdk: instance.identity.sdk_version.clone(),
        token: instance.token.clone(),
        applied: if instance.epoch == epoch {
            instance.applied_revision
        } else {
            0
        },
        state,
        state_class,
        seen,
    }
}

#[cfg(test)]
mod tests {
    use flagstaff_engine::KeyPatch;

    use super::*;

    #[test]
    fn a_change_is_named_by_its_documents() {
        let change = Change {
            revision: 7,
            deleted_flags: (0..8).map(|i| format!("old-{i}")).collect(),
            segment_patches: vec![KeyPatch {
                segment: "beta".into(),
                ..KeyPatch::default()
            }],
            ..Change::default()
        };
        assert_eq!(
            what_changed(&change),
            "deleted flags old-0, old-1, old-2, old-3, old-4 and 3 more; segment beta"
        );
        assert_eq!(what_changed(&Change::default()), "nothing");
    }
}
