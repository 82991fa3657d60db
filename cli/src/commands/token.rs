//! `flagstaff token create|list|revoke`.
//!
//! JSON fields of a token: `id`, `name`, `role` (admin, editor, sdk or client), `environment`
//! (null for an admin token), `created` and `created_by` (null when unknown); `token create`
//! adds `secret`.

use anyhow::bail;
use flagstaff_proto::pb;
use serde_json::{json, Value};

use crate::args::{Role, TokenCommand};
use crate::output;
use crate::session::Session;

pub async fn run(session: &mut Session, command: &TokenCommand) -> anyhow::Result<String> {
    match command {
        TokenCommand::Create { name, role } => {
            let (wire_role, environment) = match role {
                Role::Admin => (pb::Role::Admin, String::new()),
                Role::Editor => (pb::Role::Editor, session.env()?),
                Role::Sdk => (pb::Role::Sdk, session.env()?),
            };
            let created = session
                .admin
                .create_token(pb::CreateTokenRequest {
                    name: name.clone(),
                    role: wire_role as i32,
                    environment,
                })
                .await
                .map_err(|s| session.error(s))?
                .into_inner();
            let token = created.token.unwrap_or_default();
            let mut document = token_json(&token);
            document["secret"] = json!(created.secret);
            if let Some(text) = output::structured(&document, session.output) {
                return Ok(text);
            }
            let scope = if token.environment.is_empty() {
                "every environment".to_owned()
            } else {
                format!("environment {}", token.environment)
            };
            Ok(format!(
                "created {} token {} (id {}) for {scope}\n\
                 its secret, shown this once (store it now; the server keeps only a hash):\n\
                 \n    {}\n",
                role_name(token.role),
                token.name,
                token.id,
                created.secret
            ))
        }
        TokenCommand::List => {
            let listed = session
                .admin
                .list_tokens(pb::ListTokensRequest {})
                .await
                .map_err(|s| session.error(s))?
                .into_inner();
            let document = Value::Array(listed.tokens.iter().map(token_json).collect());
            if let Some(text) = output::structured(&document, session.output) {
                return Ok(text);
            }
            let rows: Vec<Vec<String>> = listed
                .tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.id.clone(),
                        role_name(t.role).to_owned(),
                        if t.environment.is_empty() {
                            "*".to_owned()
                        } else {
                            t.environment.clone()
                        },
                        output::timestamp(t.created_unix_ms),
                    ]
                })
                .collect();
            Ok(output::table(
                &["NAME", "ID", "ROLE", "ENVIRONMENT", "CREATED"],
                &rows,
            ))
        }
        TokenCommand::Revoke { id } => {
            // A name instead of an id is an easy slip: say which id it has.
            let listed = session
                .admin
                .list_tokens(pb::ListTokensRequest {})
                .await
                .map_err(|s| session.error(s))?
                .into_inner();
            let Some(token) = listed.tokens.iter().find(|t| &t.id == id) else {
                let named: Vec<&str> = listed
                    .tokens
                    .iter()
                    .filter(|t| &t.name == id)
                    .map(|t| t.id.as_str())
                    .collect();
                if named.is_empty() {
                    bail!("no token with id {id:?} (see `flagstaff token list`)");
                }
                bail!(
                    "no token with id {id:?}; {id} is a token's name: its id is {}",
                    named.join(" or ")
                );
            };
            session.confirm_always(&format!(
                "Revoke token {} ({}), stopping its calls and streams at once?",
                token.name,
                role_name(token.role)
            ))?;
            session
                .admin
                .revoke_token(pb::RevokeTokenRequest { id: id.clone() })
                .await
                .map_err(|s| session.error(s))?;
            Ok(format!("revoked token {} ({id})\n", token.name))
        }
    }
}

fn token_json(token: &pb::Token) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "role": role_name(token.role),
        "environment": (!token.environment.is_empty()).then_some(&token.environment),
        "created": output::timestamp(token.created_unix_ms),
        "created_by": (!token.created_by.is_empty()).then_some(&token.created_by),
    })
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::Editor) => "editor",
        Ok(pb::Role::Sdk) => "sdk",
        Ok(pb::Role::Client) => "client",
        _ => "unknown",
    }
}
