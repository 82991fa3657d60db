//! `flag edit KEY`: the flag's YAML in $EDITOR, checked by the server before it is saved.

use anyhow::{anyhow, bail, Context as _};
use flagstaff_engine::{Flag, Format};
use flagstaff_proto::pb;

use crate::documents::update_flag;
use crate::fetch::fetch_flag;
use crate::session::Session;
use crate::write_report::paused_plans;

/// `flag edit KEY`: the flag's YAML in $EDITOR, re-validated on save; reopened on error.
pub async fn edit(
    session: &mut Session,
    key: &str,
    message: Option<&str>,
) -> anyhow::Result<String> {
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
    let response = update_flag(
        session,
        "Save the flag",
        &environment,
        document,
        version,
        comment,
    )
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
