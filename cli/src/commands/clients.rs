//! `flagstaff clients`: the environment's SDK instances and the revision each has applied.

use flagstaff_proto::pb;
use serde_json::json;

use crate::output;
use crate::session::Session;

/// `flagstaff clients`: the environment's SDK instances and the revision each has applied.
pub async fn clients(session: &mut Session) -> anyhow::Result<String> {
    let environment = session.env()?;
    let listed = session
        .admin
        .list_clients(pb::ListClientsRequest {
            environment: environment.clone(),
        })
        .await
        .map_err(|s| session.error(s))?
        .into_inner();
    let current = listed.revision;
    let document = json!({
        "environment": environment,
        "revision": current,
        "clients": listed.clients.iter().map(|c| json!({
            "application": c.application,
            "host": c.host,
            "instance_id": c.instance_id,
            "sdk_version": c.sdk_version,
            "token": c.token,
            "connected": c.connected,
            "connected_since": (c.connected).then(|| output::timestamp(c.connected_unix_ms)),
            "disconnected_since": (!c.connected).then(|| output::timestamp(c.disconnected_unix_ms)),
            "applied_revision": c.applied_revision,
            "up_to_date": c.applied_revision >= current,
        })).collect::<Vec<_>>(),
    });
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    if listed.clients.is_empty() {
        return Ok(format!(
            "no SDK instance of {environment} seen in the last 24 hours (revision {current})\n"
        ));
    }
    let rows: Vec<Vec<String>> = listed
        .clients
        .iter()
        .map(|c| {
            vec![
                c.application.clone(),
                c.host.clone(),
                c.instance_id.clone(),
                c.sdk_version.clone(),
                if c.connected {
                    "connected".to_owned()
                } else {
                    format!(
                        "disconnected since {}",
                        output::timestamp(c.disconnected_unix_ms)
                    )
                },
                applied(c.applied_revision, current),
            ]
        })
        .collect();
    let mut text = format!("{environment} is at revision {current}\n");
    text.push_str(&output::table(
        &[
            "APPLICATION",
            "HOST",
            "INSTANCE",
            "SDK",
            "STATUS",
            "REVISION",
        ],
        &rows,
    ));
    Ok(text)
}

/// The revision an instance applied, against the current one: `12 (current)`, `10 (2
/// behind)`, `none`.
fn applied(revision: u64, current: u64) -> String {
    match revision {
        0 if current > 0 => "none".to_owned(),
        r if r >= current => format!("{r} (current)"),
        r => format!("{r} ({} behind)", current - r),
    }
}
