//! What a flag serves to everyone no rule matches: `flag serve KEY VARIANT` (one variant), and
//! `flag rollout KEY PERCENT` (a split whose target's share moves), both written as the flag's
//! default serve.

use anyhow::{anyhow, bail};
use flagstaff_engine::{
    format_percent, move_boundary, pair_weight, parse_percent, Flag, Serve, Split, Weight, BUCKETS,
};
use flagstaff_proto::pb;

use super::describe::{serve_summary, variant_names};
use crate::args::{RolloutArgs, WriteOptions};
use crate::fetch::fetch_flag;
use crate::session::Session;
use crate::write_report::{paused_plans, wait};

/// `flag serve KEY VARIANT`: one variant for everyone no rule matches.
pub async fn serve(
    session: &mut Session,
    key: &str,
    variant: &str,
    options: &WriteOptions,
) -> anyhow::Result<String> {
    let flag = fetch_flag(session, key).await?.0;
    if !flag.variants.0.iter().any(|(name, _)| name == variant) {
        bail!(
            "flag {key} has no variant {variant:?}; its variants: {}",
            variant_names(&flag)
        );
    }
    let serve = Serve::Variant(variant.to_owned());
    set_default(session, &flag, serve, false, options).await
}

/// Writes `serve` as the default serve of `flag`, checked against the version read.
async fn set_default(
    session: &mut Session,
    flag: &Flag,
    serve: Serve,
    force: bool,
    options: &WriteOptions,
) -> anyhow::Result<String> {
    let environment = session.env()?;
    let comment = options.message.clone().unwrap_or_default();
    let key = flag.key.clone();
    let expected_version = flag.version.unwrap_or(0);
    let wire = pb::Serve::from(&serve);
    let response = session
        .write(
            "Change what the flag serves",
            |mut admin, confirm_protected| {
                let request = pb::SetDefaultServeRequest {
                    environment: environment.clone(),
                    key: key.clone(),
                    serve: Some(wire.clone()),
                    force,
                    expected_version,
                    comment: comment.clone(),
                    confirm_protected,
                };
                async move { admin.set_default_serve(request).await }
            },
        )
        .await?;
    let off = if flag.enabled {
        ""
    } else {
        " (the flag is off: it serves its off variant until `flag on`)"
    };
    let mut said = format!(
        "{key} serves {} by default in {environment} (revision {}){off}\n",
        serve_summary(&serve),
        response.revision
    );
    said.push_str(&paused_plans(session, &response.paused_rollouts).await);
    wait(session, said, response.revision, options).await
}

/// `flag rollout KEY PERCENT`: the variant first in the default split, and only the boundary
/// between it and the next variant moves, so raising the percentage only adds contexts.
pub async fn rollout(session: &mut Session, args: &RolloutArgs) -> anyhow::Result<String> {
    let weight = parse_percent(&args.percent)?;
    let (flag, _) = fetch_flag(session, &args.key).await?;
    let serve = rollout_serve(
        &flag,
        args.variant.as_deref(),
        args.bucket_by.as_deref(),
        weight,
    )?;
    set_default(session, &flag, serve, args.force, &args.write).await
}

/// The default serve that gives `weight` (in 1/1000 %) to the rolled-out variant.
fn rollout_serve(
    flag: &Flag,
    variant: Option<&str>,
    bucket_by: Option<&str>,
    weight: u32,
) -> anyhow::Result<Serve> {
    let target = variant.unwrap_or("on");
    if !flag.variants.0.iter().any(|(name, _)| name == target) {
        bail!(
            "flag {} has no variant {target:?}{}; its variants: {}",
            flag.key,
            if variant.is_none() {
                " (the default; name one with --variant)"
            } else {
                ""
            },
            variant_names(flag)
        );
    }
    // Keep a split that already leads with the target: move its first boundary.
    if let Serve::Split(split) = &flag.default {
        if split.weights.first().map(|w| w.variant.as_str()) == Some(target)
            && split.weights.len() >= 2
        {
            let mut split = split.clone();
            if let Some(attr) = bucket_by {
                split.bucket_by = attr.to_owned();
            }
            return move_boundary(&split, weight).ok_or_else(|| {
                let movable = pair_weight(&split);
                anyhow!(
                    "the split also serves {} to {}: {target} can have at most {} without moving them",
                    split.weights[2..]
                        .iter()
                        .map(|w| w.variant.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    format_percent(BUCKETS - movable),
                    format_percent(movable)
                )
            });
        }
    }
    // Otherwise the baseline is what the default serves now (or, for a split, its first
    // variant other than the target), else the off variant.
    let baseline = match &flag.default {
        Serve::Variant(v) if v != target => v.clone(),
        Serve::Split(split) => split
            .weights
            .iter()
            .map(|w| w.variant.clone())
            .find(|v| v != target)
            .unwrap_or_else(|| flag.off_variant.clone()),
        _ => flag
            .variants
            .0
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| name != target && *name == flag.off_variant)
            .or_else(|| {
                flag.variants
                    .0
                    .iter()
                    .map(|(name, _)| name.clone())
                    .find(|name| name != target)
            })
            .ok_or_else(|| anyhow!("flag {} has no variant besides {target}", flag.key))?,
    };
    let split = Split {
        bucket_by: bucket_by
            .map(str::to_owned)
            .or_else(|| match &flag.default {
                Serve::Split(split) => Some(split.bucket_by.clone()),
                Serve::Variant(_) => None,
            })
            .unwrap_or_else(|| "key".to_owned()),
        weights: vec![
            Weight {
                variant: target.to_owned(),
                weight: 0,
            },
            Weight {
                variant: baseline,
                weight: BUCKETS,
            },
        ],
    };
    Ok(move_boundary(&split, weight).expect("a two-variant split can hand out up to 100%"))
}
