//! `flag create`, `flag on`, `flag off`, `flag client-side`, `flag revert` and `flag delete`:
//! a flag's life, from its creation to its deletion. (What it serves by default is
//! [`super::serve`]'s.)

use anyhow::{anyhow, bail};
use flagstaff_engine::{Flag, Kind};
use flagstaff_proto::pb;
use serde_json::{json, Value};

use super::describe::serve_summary;
use crate::args::{FlagCreateArgs, WriteOptions};
use crate::documents::update_flag;
use crate::fetch::{fetch_flag, suggest_flag_keys};
use crate::session::Session;
use crate::write_report::{paused_plans, wait};

/// `flag create`: without variants, a boolean flag that is off and serves `off`.
pub async fn create(session: &mut Session, args: &FlagCreateArgs) -> anyhow::Result<String> {
    let environment = session.env()?;
    let flag = new_flag(args)?;
    let comment = args.message.clone().unwrap_or_default();
    let document = pb::Flag::from(&flag);
    let response = session
        .write("Create the flag", |mut admin, confirm_protected| {
            let request = pb::CreateFlagRequest {
                environment: environment.clone(),
                flag: Some(document.clone()),
                comment: comment.clone(),
                confirm_protected,
            };
            async move { admin.create_flag(request).await }
        })
        .await?;
    Ok(format!(
        "created {} in {environment}: {} flag, off, serving {} when on{} (revision {})\n",
        flag.key,
        flag.kind.as_str(),
        serve_summary(&flag.default),
        if flag.client_side {
            ", client-side"
        } else {
            ""
        },
        response.revision
    ))
}

/// The flag `flag create` describes, validated as the server validates it.
fn new_flag(args: &FlagCreateArgs) -> anyhow::Result<Flag> {
    let kind = args.kind.map_or(Kind::Boolean, |k| match k {
        crate::args::Kind::Boolean => Kind::Boolean,
        crate::args::Kind::String => Kind::String,
        crate::args::Kind::Number => Kind::Number,
        crate::args::Kind::Json => Kind::Json,
    });
    let mut variants = serde_json::Map::new();
    for variant in &args.variants {
        let (name, raw) = variant
            .split_once('=')
            .ok_or_else(|| anyhow!("--variant {variant:?} must look like NAME=VALUE"))?;
        let value = match kind {
            Kind::String => Value::String(raw.to_owned()),
            _ => serde_json::from_str(raw).map_err(|_| {
                anyhow!("--variant {name}: {raw:?} is not a {} value", kind.as_str())
            })?,
        };
        if variants.insert(name.to_owned(), value).is_some() {
            bail!("--variant {name} is given twice");
        }
    }
    if variants.is_empty() {
        if kind != Kind::Boolean {
            bail!(
                "a {} flag needs its variants: --variant NAME=VALUE, once per variant",
                kind.as_str()
            );
        }
        variants.insert("on".into(), json!(true));
        variants.insert("off".into(), json!(false));
    }
    // Off and served by default: the variant that is `false` for a boolean flag, else the
    // first one listed. A new flag never turns a feature on.
    let off = variants
        .iter()
        .find(|(_, v)| kind == Kind::Boolean && **v == json!(false))
        .or_else(|| variants.iter().next())
        .map(|(name, _)| name.clone())
        .unwrap_or_default();
    let mut document = json!({
        "key": args.key,
        "kind": kind.as_str(),
        "variants": variants,
        "off_variant": off,
        "enabled": false,
        "default": {"variant": off},
        "tags": args.tags,
        "temporary": args.temporary,
        "client_side": args.client_side,
    });
    if let Some(description) = &args.description {
        document["description"] = json!(description);
    }
    if let Some(owner) = &args.owner {
        document["owner"] = json!(owner);
    }
    flagstaff_engine::flag_from_value(&document)
        .map_err(|e| anyhow!("the flag would not be valid:\n{e}"))
}

/// `flag on KEY` (`enabled`) or `flag off KEY`, with `--wait` if asked.
pub async fn set_enabled(
    session: &mut Session,
    key: &str,
    enabled: bool,
    options: &WriteOptions,
) -> anyhow::Result<String> {
    let environment = session.env()?;
    let comment = options.message.clone().unwrap_or_default();
    let owned_key = key.to_owned();
    let result = session
        .write(
            if enabled {
                "Turn the flag on"
            } else {
                "Turn the flag off"
            },
            |mut admin, confirm_protected| {
                let request = pb::SetFlagEnabledRequest {
                    environment: environment.clone(),
                    key: owned_key.clone(),
                    enabled,
                    comment: comment.clone(),
                    confirm_protected,
                    ..Default::default()
                };
                async move { admin.set_flag_enabled(request).await }
            },
        )
        .await;
    let response = match result {
        Ok(response) => response,
        Err(e) => return Err(suggest_flag_keys(session, key, e).await),
    };
    let mut said = format!(
        "{key} is {} in {environment} (revision {})\n",
        if enabled { "on" } else { "off" },
        response.revision
    );
    said.push_str(&paused_plans(session, &response.paused_rollouts).await);
    wait(session, said, response.revision, options).await
}

/// `flag client-side KEY on|off`: whether client tokens may evaluate the flag over OFREP. The
/// flag is written whole with the version it was read at, so a change made meanwhile is
/// refused rather than overwritten; nothing is written when it is already so.
pub async fn set_client_side(
    session: &mut Session,
    key: &str,
    client_side: bool,
    message: Option<&str>,
) -> anyhow::Result<String> {
    let environment = session.env()?;
    let (flag, _) = fetch_flag(session, key).await?;
    if flag.client_side == client_side {
        return Ok(format!(
            "{key} is already {} in {environment}: nothing changed\n",
            if client_side {
                "client-side"
            } else {
                "not client-side"
            }
        ));
    }
    let version = flag.version.unwrap_or(0);
    let document = pb::Flag::from(&Flag {
        client_side,
        version: None,
        ..flag
    });
    let comment = message.unwrap_or_default().to_owned();
    let question = if client_side {
        "Let client tokens evaluate the flag"
    } else {
        "Stop client tokens from evaluating the flag"
    };
    let response = update_flag(session, question, &environment, document, version, comment).await?;
    let said = format!(
        "{key} is {} in {environment}: {} (revision {})\n",
        if client_side {
            "client-side"
        } else {
            "no longer client-side"
        },
        if client_side {
            "client tokens may evaluate it"
        } else {
            "client tokens get FLAG_NOT_FOUND for it"
        },
        response.revision
    );
    Ok(said + &paused_plans(session, &response.paused_rollouts).await)
}

/// `flag revert KEY --to-version N`: the flag as it was at version N, as a new version.
pub async fn revert(
    session: &mut Session,
    key: &str,
    to_version: u64,
    message: Option<&str>,
) -> anyhow::Result<String> {
    let environment = session.env()?;
    let key = key.to_owned();
    let comment = message.unwrap_or_default().to_owned();
    let response = session
        .write("Revert the flag", |mut admin, confirm_protected| {
            let request = pb::RevertFlagRequest {
                environment: environment.clone(),
                key: key.clone(),
                to_version,
                comment: comment.clone(),
                confirm_protected,
                ..Default::default()
            };
            async move { admin.revert_flag(request).await }
        })
        .await?;
    let said = format!(
        "{key} restored as of version {to_version} in {environment} (revision {})\n",
        response.revision
    );
    Ok(said + &paused_plans(session, &response.paused_rollouts).await)
}

/// `flag delete KEY`, asked about first (unless --yes).
pub async fn delete(session: &mut Session, key: &str) -> anyhow::Result<String> {
    let environment = session.env()?;
    let key = key.to_owned();
    let question = format!("Delete flag {key} from {environment}?");
    let result = session
        .delete(&question, |mut admin, confirm_protected| {
            let request = pb::DeleteFlagRequest {
                environment: environment.clone(),
                key: key.clone(),
                confirm_protected,
                ..Default::default()
            };
            async move { admin.delete_flag(request).await }
        })
        .await;
    let response = match result {
        Ok(response) => response,
        Err(e) => return Err(suggest_flag_keys(session, &key, e).await),
    };
    Ok(format!(
        "deleted {key} from {environment} (revision {})\n",
        response.revision
    ))
}
