//! `flagstaff export`: an environment as one document (`flagstaff import` reads it back).

use anyhow::anyhow;
use flagstaff_engine::{Document, Format};
use flagstaff_proto::pb;

use crate::args::Output;
use crate::session::Session;

/// `flagstaff export`: YAML unless `-o json`.
pub async fn export(session: &mut Session) -> anyhow::Result<String> {
    let environment = session.env()?;
    let exported = session
        .admin
        .export(pb::ExportRequest { environment })
        .await
        .map_err(|s| session.error(s))?
        .into_inner();
    let document = Document::try_from(exported.document.unwrap_or_default())
        .map_err(|e| anyhow!("the server sent a document this CLI cannot read: {e}"))?;
    let format = match session.output {
        Output::Json => Format::Json,
        Output::Table | Output::Yaml => Format::Yaml,
    };
    Ok(flagstaff_engine::to_text(&document, format))
}
