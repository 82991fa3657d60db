//! What the CLI says after a write beyond the write itself: the rollout plans it paused, and
//! with `--wait`, whether every connected SDK instance applied its revision.

use std::time::Duration;

use anyhow::{anyhow, bail};
use flagstaff_engine::format_percent;
use flagstaff_proto::pb;

use crate::args::WriteOptions;
use crate::session::Session;

/// A line for each flag whose running rollout plan the write paused (the server pauses a plan
/// whose flag is edited by hand, in the same commit, and says which in its answer).
pub async fn paused_plans(session: &mut Session, paused: &[String]) -> String {
    let mut said = String::new();
    for key in paused {
        said.push_str(&paused_plan(session, key).await);
    }
    said
}

/// The line of [`paused_plans`] for flag `key`, with its plan's stage.
async fn paused_plan(session: &mut Session, key: &str) -> String {
    let resume = format!(
        "`flagstaff rollout resume {key}` continues it, `flagstaff rollout rollback {key}` ends it"
    );
    let Ok(environment) = session.env() else {
        return format!("this paused the rollout plan of {key}: {resume}\n");
    };
    // A failed read of the plan still leaves the pause to say.
    let Ok(response) = session
        .admin
        .get_rollout(pb::GetRolloutRequest {
            environment,
            flag: key.to_owned(),
        })
        .await
    else {
        return format!("this paused the rollout plan of {key}: {resume}\n");
    };
    let Some(plan) = response.into_inner().plan else {
        return format!("this paused the rollout plan of {key}: {resume}\n");
    };
    format!(
        "this paused the rollout plan of {key} at stage {} of {} ({} {}): {resume}\n",
        plan.stage_index + 1,
        plan.stages.len(),
        plan.target_variant,
        format_percent(plan.percent)
    )
}

/// With `--wait`: `said`, then whether every connected SDK instance applied `revision`;
/// a failure (exit 1) naming the instances that did not.
pub async fn wait(
    session: &mut Session,
    said: String,
    revision: u64,
    options: &WriteOptions,
) -> anyhow::Result<String> {
    let (Some(timeout), allow_none) = (options.wait, options.allow_none) else {
        return Ok(said);
    };
    let environment = session.env()?;
    let response = session
        .admin
        .wait_for_revision(pb::WaitForRevisionRequest {
            environment: environment.clone(),
            revision,
            timeout_ms: u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        })
        .await
        .map_err(|s| session.error(s))?
        .into_inner();
    if response.connected == 0 {
        let mut report = format!("{said}no SDK instance of {environment} is connected");
        for i in &response.disconnected {
            report.push_str(&format!(
                "\n  disconnected in the last 10 minutes without revision {revision}: {}",
                instance(i)
            ));
        }
        // --allow-none allows none at all, never a partitioned one: an instance that left
        // without the revision still fails the wait.
        if allow_none && response.disconnected.is_empty() {
            return Ok(format!("{report}: nothing to wait for\n"));
        }
        println!("{report}");
        if !response.disconnected.is_empty() {
            bail!(
                "revision {revision} did not reach {} instance(s) that disconnected without it",
                response.disconnected.len()
            );
        }
        bail!(
            "no SDK instance has applied revision {revision}, as none is connected to \
             {environment} (pass --allow-none when none is expected)"
        );
    }
    let summary = format!(
        "applied by {}/{} instances in {} ms",
        response.applied, response.connected, response.elapsed_ms
    );
    if response.complete && response.disconnected.is_empty() {
        return Ok(format!("{said}{summary}\n"));
    }
    let mut report = format!("{said}{summary}");
    if !response.complete {
        report.push_str(&format!(
            "\nnot applied after {} by {} connected instance(s):",
            humantime(timeout),
            response.pending.len()
        ));
        for i in &response.pending {
            report.push_str(&format!("\n  {}", instance(i)));
        }
    }
    if !response.disconnected.is_empty() {
        report.push_str(&format!(
            "\ndisconnected in the last 10 minutes without it (may still serve revision {} or older):",
            revision.saturating_sub(1)
        ));
        for i in &response.disconnected {
            report.push_str(&format!("\n  {}", instance(i)));
        }
    }
    // The write itself succeeded: say so on stdout, and fail for the part that did not.
    println!("{report}");
    Err(anyhow!(
        "revision {revision} has not reached every SDK instance"
    ))
}

fn instance(i: &pb::ClientInstance) -> String {
    let name = if i.application.is_empty() {
        "(no application name)"
    } else {
        i.application.as_str()
    };
    format!(
        "{name} on {} ({}): at revision {}",
        if i.host.is_empty() { "?" } else { &i.host },
        i.instance_id,
        i.applied_revision
    )
}

fn humantime(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}
