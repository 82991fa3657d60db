//! `flagstaff flag ...`: create, read, flip, roll out, edit and delete flags.

use anyhow::{anyhow, bail, Context as _};
use flagstaff_engine::{
    format_percent, move_boundary, pair_weight, parse_percent, Flag, Format, Input, Kind, Serve,
    Split, Weight, BUCKETS,
};
use flagstaff_proto::pb;
use serde_json::{json, Value};

use crate::args::{FlagCommand, FlagCreateArgs, RolloutArgs, WriteOptions};
use crate::fetch::{fetch_flag, list_flags, suggest_flag_keys, Listed};
use crate::output;
use crate::session::Session;
use crate::write_report::{paused_plans, wait};

pub async fn run(session: &mut Session, command: &FlagCommand) -> anyhow::Result<String> {
    match command {
        FlagCommand::Create(args) => create(session, args).await,
        FlagCommand::List { tag, search } => list(session, tag.as_deref(), search.as_deref()).await,
        FlagCommand::Get { key } => get(session, key).await,
        FlagCommand::Stale { days } => super::stale::stale(session, *days).await,
        FlagCommand::On { key, write } => set_enabled(session, key, true, write).await,
        FlagCommand::Off { key, write } => set_enabled(session, key, false, write).await,
        FlagCommand::Serve {
            key,
            variant,
            write,
        } => {
            let flag = fetch_flag(session, key).await?.0;
            if !flag.variants.0.iter().any(|(name, _)| name == variant) {
                bail!(
                    "flag {key} has no variant {variant:?}; its variants: {}",
                    variant_names(&flag)
                );
            }
            let serve = Serve::Variant(variant.clone());
            set_default(session, &flag, serve, false, write).await
        }
        FlagCommand::Rollout(args) => rollout(session, args).await,
        FlagCommand::Revert {
            key,
            to_version,
            message,
        } => {
            let environment = session.env()?;
            let (key, to_version) = (key.clone(), *to_version);
            let comment = message.clone().unwrap_or_default();
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
        FlagCommand::Delete { key } => {
            let environment = session.env()?;
            let key = key.clone();
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
        FlagCommand::Promote {
            key,
            from,
            to,
            with_segments,
            message,
        } => {
            let (key, from, to) = (key.clone(), from.clone(), to.clone());
            let comment = message.clone().unwrap_or_default();
            let what = if *with_segments {
                "Promote the flag and its segments"
            } else {
                "Promote the flag"
            };
            let response = session
                .write_in(&to, what, |mut admin, confirm_protected| {
                    let request = pb::PromoteFlagRequest {
                        environment: to.clone(),
                        from_environment: from.clone(),
                        key: key.clone(),
                        comment: comment.clone(),
                        confirm_protected,
                        with_segments: *with_segments,
                        ..Default::default()
                    };
                    async move { admin.promote_flag(request).await }
                })
                .await?;
            let segments: Vec<&str> = response
                .segments
                .iter()
                .filter_map(|s| s.segment.as_ref())
                .map(|s| s.key.as_str())
                .collect();
            let along = match segments.as_slice() {
                [] => String::new(),
                [one] => format!(" with segment {one}"),
                many => format!(" with segments {}", many.join(", ")),
            };
            Ok(format!(
                "{key} copied from {from} to {to}{along} (revision {} of {to})\n",
                response.revision
            ))
        }
        FlagCommand::Apply { file, message } => {
            apply(session, file, message.as_deref(), false).await
        }
        FlagCommand::Diff { file } => apply(session, file, None, true).await,
        FlagCommand::Edit { key, message } => edit(session, key, message.as_deref()).await,
    }
}

/// `flag create`: without variants, a boolean flag that is off and serves `off`.
async fn create(session: &mut Session, args: &FlagCreateArgs) -> anyhow::Result<String> {
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
        "created {} in {environment}: {} flag, off, serving {} when on (revision {})\n",
        flag.key,
        flag.kind.as_str(),
        serve_summary(&flag.default),
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

async fn list(
    session: &mut Session,
    tag: Option<&str>,
    search: Option<&str>,
) -> anyhow::Result<String> {
    let flags = list_flags(session, tag, search).await?;
    let document = Value::Array(
        flags
            .iter()
            .map(
                |Listed {
                     flag,
                     change,
                     usage,
                 }| {
                    json!({
                        "key": flag.key,
                        "kind": flag.kind.as_str(),
                        "enabled": flag.enabled,
                        "serves": serve_json(&flag.default),
                        "rules": flag.rules.len(),
                        "tags": flag.tags,
                        "temporary": flag.temporary,
                        "version": flag.version,
                        "last_change": change_json(change),
                        "usage": {
                            "evaluations": usage.evaluations,
                            "last_evaluated_unix_ms": usage.last_evaluated_unix_ms,
                        },
                    })
                },
            )
            .collect(),
    );
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    let rows: Vec<Vec<String>> = flags
        .iter()
        .map(
            |Listed {
                 flag,
                 change,
                 usage,
             }| {
                vec![
                    flag.key.clone(),
                    state(flag).to_owned(),
                    serve_summary(&flag.default),
                    flag.rules.len().to_string(),
                    flag.version.map_or("-".to_owned(), |v| v.to_string()),
                    output::timestamp(change.time_unix_ms),
                    change.actor.clone(),
                    usage.evaluations.to_string(),
                    if usage.last_evaluated_unix_ms == 0 {
                        "never".to_owned()
                    } else {
                        output::timestamp(usage.last_evaluated_unix_ms)
                    },
                ]
            },
        )
        .collect();
    Ok(output::table(
        &[
            "FLAG",
            "STATE",
            "DEFAULT",
            "RULES",
            "VERSION",
            "CHANGED",
            "BY",
            "EVALUATIONS",
            "LAST EVALUATED",
        ],
        &rows,
    ))
}

async fn get(session: &mut Session, key: &str) -> anyhow::Result<String> {
    let (flag, change) = fetch_flag(session, key).await?;
    let document = json!({
        "flag": flag,
        "last_change": change_json(&change),
    });
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    let by = if change.comment.is_empty() {
        change.actor.clone()
    } else {
        format!("{}: {}", change.actor, change.comment)
    };
    Ok(format!(
        "# {} is {}, default {}, {} rule(s); version {}, changed {} by {by}\n{}",
        flag.key,
        state(&flag),
        serve_summary(&flag.default),
        flag.rules.len(),
        flag.version.unwrap_or(0),
        output::timestamp(change.time_unix_ms),
        flagstaff_engine::to_text(
            &Flag {
                version: None,
                ..flag.clone()
            },
            Format::Yaml
        )
    ))
}

async fn set_enabled(
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
async fn rollout(session: &mut Session, args: &RolloutArgs) -> anyhow::Result<String> {
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

fn state(flag: &Flag) -> &'static str {
    if flag.enabled {
        "on"
    } else {
        "off"
    }
}

fn variant_names(flag: &Flag) -> String {
    flag.variants
        .0
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `on`, or `on 12.5% / off 87.5%`, or with another bucketing attribute `... by team`.
fn serve_summary(serve: &Serve) -> String {
    match serve {
        Serve::Variant(v) => v.clone(),
        Serve::Split(split) => {
            let shares: Vec<String> = split
                .weights
                .iter()
                .map(|w| format!("{} {}", w.variant, format_percent(w.weight)))
                .collect();
            let by = if split.bucket_by == "key" {
                String::new()
            } else {
                format!(" by {}", split.bucket_by)
            };
            format!("{}{by}", shares.join(" / "))
        }
    }
}

fn serve_json(serve: &Serve) -> Value {
    serde_json::to_value(serve).unwrap_or(Value::Null)
}

fn change_json(change: &pb::ChangeInfo) -> Value {
    json!({
        "revision": change.revision,
        "time_unix_ms": change.time_unix_ms,
        "actor": change.actor,
        "comment": change.comment,
    })
}

/// `flag apply -f FILE` (or with `dry_run`, `flag diff -f FILE`).
async fn apply(
    session: &mut Session,
    file: &std::path::Path,
    message: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<String> {
    let environment = session.env()?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let source = match flagstaff_engine::parse_input(&text)
        .map_err(|e| anyhow!("{} is not valid:\n{e}", file.display()))?
    {
        Input::Document(document) => {
            pb::apply_request::Source::Document(pb::Document::from(&document))
        }
        Input::Flag(flag) => pb::apply_request::Source::Documents(pb::DocumentSet {
            flags: vec![pb::Flag::from(&flag)],
            ..Default::default()
        }),
        Input::Segment(segment) => pb::apply_request::Source::Documents(pb::DocumentSet {
            segments: vec![pb::Segment::from(&segment)],
            ..Default::default()
        }),
    };
    let comment = message.unwrap_or_default().to_owned();
    let request = |confirm_protected: bool| pb::ApplyRequest {
        environment: environment.clone(),
        source: Some(source.clone()),
        dry_run,
        comment: comment.clone(),
        confirm_protected,
        ..Default::default()
    };
    let response = if dry_run {
        session
            .admin
            .apply(request(false))
            .await
            .map_err(|s| session.error(s))?
            .into_inner()
    } else {
        session
            .write("Apply the file", |mut admin, confirm| {
                let request = request(confirm);
                async move { admin.apply(request).await }
            })
            .await?
    };
    let document = json!({
        "changed": response.changed,
        "revision": response.revision,
        "changes": response.changes.iter().map(change_summary).collect::<Vec<_>>(),
        "unchanged_flags": response.unchanged_flags,
        "unchanged_segments": response.unchanged_segments,
    });
    if let Some(text) = output::structured(&document, session.output) {
        return Ok(text);
    }
    if !response.changed {
        return Ok(format!(
            "no changes: {environment} already matches {}\n",
            file.display()
        ));
    }
    let mut out = String::new();
    for change in &response.changes {
        out.push_str(&diff(change));
    }
    if dry_run {
        out.push_str(&format!(
            "{} document(s) would change; nothing was written\n",
            response.changes.len()
        ));
    } else {
        out.push_str(&format!(
            "applied {} change(s) to {environment} (revision {})\n",
            response.changes.len(),
            response.revision
        ));
    }
    Ok(out)
}

fn change_summary(change: &pb::Change) -> Value {
    match &change.document {
        Some(pb::change::Document::Flag(f)) => json!({
            "flag": f.key,
            "action": action(f.before.is_some(), f.after.is_some()),
        }),
        Some(pb::change::Document::Segment(s)) => json!({
            "segment": s.key,
            "action": action(s.before.is_some(), s.after.is_some()),
        }),
        None => Value::Null,
    }
}

fn action(before: bool, after: bool) -> &'static str {
    match (before, after) {
        (false, _) => "create",
        (_, false) => "delete",
        _ => "update",
    }
}

/// A change as a unified diff of the documents' YAML, versions left out.
fn diff(change: &pb::Change) -> String {
    let yaml_flag = |f: &Option<pb::Flag>| -> String {
        f.clone()
            .and_then(|f| Flag::try_from(f).ok())
            .map(|f| flagstaff_engine::to_text(&Flag { version: None, ..f }, Format::Yaml))
            .unwrap_or_default()
    };
    let yaml_segment = |s: &Option<pb::SegmentSummary>| -> String {
        s.as_ref()
            .and_then(|s| s.segment.clone())
            .and_then(|s| flagstaff_engine::Segment::try_from(s).ok())
            .map(|s| {
                flagstaff_engine::to_text(
                    &flagstaff_engine::Segment { version: None, ..s },
                    Format::Yaml,
                )
            })
            .unwrap_or_default()
    };
    let (what, key, before, after) = match &change.document {
        Some(pb::change::Document::Flag(f)) => {
            ("flag", &f.key, yaml_flag(&f.before), yaml_flag(&f.after))
        }
        Some(pb::change::Document::Segment(s)) => (
            "segment",
            &s.key,
            yaml_segment(&s.before),
            yaml_segment(&s.after),
        ),
        None => return String::new(),
    };
    let label = |exists: bool| {
        if exists {
            format!("{what} {key}")
        } else {
            "/dev/null".to_owned()
        }
    };
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header(&label(!before.is_empty()), &label(!after.is_empty()))
        .to_string()
}

/// `flag edit KEY`: the flag's YAML in $EDITOR, re-validated on save; reopened on error.
async fn edit(session: &mut Session, key: &str, message: Option<&str>) -> anyhow::Result<String> {
    let environment = session.env()?;
    let (flag, _) = fetch_flag(session, key).await?;
    let version = flag.version.unwrap_or(0);
    let original = flagstaff_engine::to_text(
        &Flag {
            version: None,
            ..flag
        },
        Format::Yaml,
    );
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let path = dir.path().join(format!("{key}.yaml"));
    let mut text = original.clone();
    let edited = loop {
        std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        run_editor(&path)?;
        text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if text == original {
            return Ok(format!("no changes to {key}\n"));
        }
        match flagstaff_engine::flag_from_value(
            &flagstaff_engine::parse_value(&text).map_err(|e| anyhow!("{e}"))?,
        ) {
            Ok(edited) if edited.key != key => {
                problem(&format!(
                    "the key must stay {key:?} (create a new flag to rename)"
                ))?;
            }
            // Checked by the server against the environment (variants, segments,
            // prerequisites), writing nothing.
            Ok(edited) => match session
                .admin
                .apply(pb::ApplyRequest {
                    environment: environment.clone(),
                    source: Some(pb::apply_request::Source::Documents(pb::DocumentSet {
                        flags: vec![pb::Flag::from(&edited)],
                        ..Default::default()
                    })),
                    dry_run: true,
                    ..Default::default()
                })
                .await
            {
                Ok(_) => break edited,
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    problem(status.message())?;
                }
                Err(status) => return Err(session.error(status)),
            },
            Err(e) => problem(&e.to_string())?,
        }
    };
    let comment = message.unwrap_or_default().to_owned();
    let document = pb::Flag::from(&edited);
    let response = session
        .write("Save the flag", |mut admin, confirm_protected| {
            let request = pb::UpdateFlagRequest {
                environment: environment.clone(),
                flag: Some(document.clone()),
                expected_version: version,
                comment: comment.clone(),
                confirm_protected,
            };
            async move { admin.update_flag(request).await }
        })
        .await?;
    let said = format!(
        "saved {key} in {environment} (revision {})\n",
        response.revision
    );
    Ok(said + &paused_plans(session, &response.paused_rollouts).await)
}

/// Reports what is wrong with an edit; asks to reopen the editor (on a terminal) or fails.
fn problem(message: &str) -> anyhow::Result<()> {
    eprintln!("the flag is not valid:\n{message}");
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("the edited flag is not valid; nothing was saved");
    }
    eprint!("reopen the editor? [Y/n] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "n" | "N" | "no") {
        bail!("nothing was saved");
    }
    Ok(())
}

/// Runs $VISUAL or $EDITOR (default `vi`) on `path`, through the shell so it may hold options.
fn run_editor(path: &std::path::Path) -> anyhow::Result<()> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".to_owned());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("flagstaff-edit")
        .arg(path)
        .status()
        .with_context(|| format!("cannot run the editor {editor:?}"))?;
    if !status.success() {
        bail!("the editor {editor:?} failed ({status}); nothing was saved");
    }
    Ok(())
}
