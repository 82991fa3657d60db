//! `flagstaff env create|list|delete`.

use flagstaff_proto::pb;
use serde_json::json;

use crate::args::EnvCommand;
use crate::output;
use crate::session::Session;

pub async fn run(session: &mut Session, command: &EnvCommand) -> anyhow::Result<String> {
    match command {
        EnvCommand::Create { name, protected } => {
            let created = session
                .admin
                .create_environment(pb::CreateEnvironmentRequest {
                    environment: name.clone(),
                    protected: *protected,
                })
                .await
                .map_err(|s| session.error(s))?
                .into_inner();
            let env = created.environment.unwrap_or_default();
            let note = if env.protected {
                " (protected: writes need confirmation)"
            } else {
                ""
            };
            Ok(format!("created environment {}{note}\n", env.key))
        }
        EnvCommand::List => {
            let listed = session
                .admin
                .list_environments(pb::ListEnvironmentsRequest {})
                .await
                .map_err(|s| session.error(s))?
                .into_inner();
            let document = json!(listed
                .environments
                .iter()
                .map(|e| json!({
                    "key": e.key,
                    "protected": e.protected,
                    "revision": e.revision,
                    "flags": e.flag_count,
                    "segments": e.segment_count,
                    "created": output::timestamp(e.created_unix_ms),
                }))
                .collect::<Vec<_>>());
            if let Some(text) = output::structured(&document, session.output) {
                return Ok(text);
            }
            let rows: Vec<Vec<String>> = listed
                .environments
                .iter()
                .map(|e| {
                    vec![
                        e.key.clone(),
                        if e.protected { "yes" } else { "no" }.to_owned(),
                        e.revision.to_string(),
                        e.flag_count.to_string(),
                        e.segment_count.to_string(),
                        output::timestamp(e.created_unix_ms),
                    ]
                })
                .collect();
            Ok(output::table(
                &[
                    "ENVIRONMENT",
                    "PROTECTED",
                    "REVISION",
                    "FLAGS",
                    "SEGMENTS",
                    "CREATED",
                ],
                &rows,
            ))
        }
        EnvCommand::Delete { name } => {
            let name = name.clone();
            session
                .delete(
                    &format!("Delete environment {name}?"),
                    |mut admin, confirm_protected| {
                        let environment = name.clone();
                        async move {
                            admin
                                .delete_environment(pb::DeleteEnvironmentRequest {
                                    environment,
                                    confirm_protected,
                                })
                                .await
                        }
                    },
                )
                .await?;
            Ok(format!("deleted environment {name}\n"))
        }
    }
}
