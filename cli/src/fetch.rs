//! Reading flags and segments from the server, for the commands that need them: one flag
//! (with the closest keys when it does not exist), every flag across pages with its last
//! change and usage, and every segment key.

use anyhow::anyhow;
use flagstaff_engine::Flag;
use flagstaff_proto::pb;

use crate::session::{did_you_mean, Session};

/// The most entries one list page returns.
const MAX_PAGE: u32 = 1000;

/// A flag as `flag list` shows it: with its last change and its usage.
pub struct Listed {
    pub flag: Flag,
    pub change: pb::ChangeInfo,
    pub usage: pb::FlagUsage,
}

/// Every flag of the session's environment with `tag` and containing `search`, by key.
pub async fn list_flags(
    session: &mut Session,
    tag: Option<&str>,
    search: Option<&str>,
) -> anyhow::Result<Vec<Listed>> {
    let environment = session.env()?;
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = session
            .admin
            .list_flags(pb::ListFlagsRequest {
                environment: environment.clone(),
                tag: tag.unwrap_or_default().to_owned(),
                text: search.unwrap_or_default().to_owned(),
                page_size: MAX_PAGE,
                page_token,
            })
            .await
            .map_err(|s| session.error(s))?
            .into_inner();
        entries.extend(page.flags);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    entries
        .into_iter()
        .map(|e| {
            let flag = Flag::try_from(e.flag.unwrap_or_default())
                .map_err(|e| anyhow!("the server sent an invalid flag: {e}"))?;
            Ok(Listed {
                flag,
                change: e.last_change.unwrap_or_default(),
                usage: e.usage.unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads flag `key`, with the closest keys in the error when there is no such flag.
pub async fn fetch_flag(
    session: &mut Session,
    key: &str,
) -> anyhow::Result<(Flag, pb::ChangeInfo)> {
    let environment = session.env()?;
    let response = session
        .admin
        .get_flag(pb::GetFlagRequest {
            environment,
            key: key.to_owned(),
        })
        .await;
    let response = match response {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let error = session.error(status);
            return Err(suggest_flag_keys(session, key, error).await);
        }
    };
    let flag = Flag::try_from(response.flag.unwrap_or_default())
        .map_err(|e| anyhow!("the server sent an invalid flag: {e}"))?;
    Ok((flag, response.last_change.unwrap_or_default()))
}

/// `error`, with "did you mean" keys when it says flag `key` does not exist.
pub async fn suggest_flag_keys(
    session: &mut Session,
    key: &str,
    error: anyhow::Error,
) -> anyhow::Error {
    let text = error.to_string();
    if !text.contains("not found") && !text.contains("no flag") {
        return error;
    }
    let Ok(environment) = session.env() else {
        return error;
    };
    let keys: Vec<String> = match session
        .admin
        .list_flags(pb::ListFlagsRequest {
            environment,
            page_size: MAX_PAGE,
            ..Default::default()
        })
        .await
    {
        Ok(page) => page
            .into_inner()
            .flags
            .into_iter()
            .filter_map(|e| e.flag.map(|f| f.key))
            .collect(),
        Err(_) => return error,
    };
    anyhow!("{text}{}", did_you_mean(key, &keys))
}

/// Every segment key of the environment, for "did you mean" hints.
pub async fn segment_keys(session: &mut Session, environment: &str) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = session
            .admin
            .list_segments(pb::ListSegmentsRequest {
                environment: environment.to_owned(),
                page_size: MAX_PAGE,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(|s| session.error(s))?
            .into_inner();
        keys.extend(
            page.segments
                .into_iter()
                .filter_map(|e| e.segment.and_then(|s| s.segment).map(|s| s.key)),
        );
        if page.next_page_token.is_empty() {
            return Ok(keys);
        }
        page_token = page.next_page_token;
    }
}
