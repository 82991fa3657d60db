//! `flagstaff import FILE [--dry-run]`: an export document applied to an environment.
//!
//! `import` creates or replaces the document's flags and segments in one revision and leaves
//! the environment's other flags and segments as they are. It reports what changed as
//! [`crate::documents::apply_report`] does (the same JSON fields as `segment apply`).

use anyhow::bail;
use flagstaff_engine::Input;
use flagstaff_proto::pb;

use crate::args::ImportArgs;
use crate::documents::{apply, read_input};
use crate::session::Session;

/// `flagstaff import FILE [--dry-run]`: one Apply, or its dry run.
pub async fn import(session: &mut Session, args: &ImportArgs) -> anyhow::Result<String> {
    let environment = session.env()?;
    let file = &args.file;
    let document = match read_input(file)? {
        Input::Document(document) => document,
        Input::Flag(flag) => bail!(
            "{} is a flag document ({}), not an export document: use `flagstaff flag apply -f {}`",
            file.display(),
            flag.key,
            file.display()
        ),
        Input::Segment(segment) => bail!(
            "{} is a segment document ({}), not an export document: use `flagstaff segment apply -f {}`",
            file.display(),
            segment.key,
            file.display()
        ),
    };
    let request = pb::ApplyRequest {
        environment: environment.clone(),
        source: Some(pb::apply_request::Source::Document(pb::Document::from(
            &document,
        ))),
        prune: false,
        dry_run: false,
        comment: args.message.clone().unwrap_or_default(),
        confirm_protected: false,
    };
    let what = format!("Import {}", file.display());
    apply(session, request, &what, args.dry_run).await
}
