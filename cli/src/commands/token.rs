//! `flagstaff token create|list|show|revoke`.
//!
//! JSON fields of a token: `id`, `name`, `role` (admin, editor, sdk or client), `environment`
//! (null for an admin token), `created` and `created_by` (null when unknown); `token create`
//! and `token show` (client tokens only) add `secret`.

use anyhow::anyhow;
use flagstaff_proto::pb;
use serde_json::{json, Value};

use crate::args::{Role, TokenCommand};
use crate::output;
use crate::session::Session;

pub async fn run(session: &mut Session, command: &TokenCommand) -> anyhow::Result<String> {
    match command {
        TokenCommand::Create {
            positional_name,
            name,
            role,
        } => {
            // Clap requires one of the two.
            let name = positional_name.as_ref().or(name.as_ref()).cloned();
            let name = name.unwrap_or_default();
            let (wire_role, environment) = match role {
                Role::Admin => (pb::Role::Admin, String::new()),
                Role::Editor => (pb::Role::Editor, session.env()?),
                Role::Sdk => (pb::Role::Sdk, session.env()?),
                Role::Client => (pb::Role::Client, session.env()?),
            };
            let created = session
                .admin
                .create_token(pb::CreateTokenRequest {
                    name,
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
            if *role == Role::Client {
                return Ok(format!(
                    "created client token {} (id {}) for {scope}\n\
                     {CLIENT_TOKEN_USE}; `flagstaff token show {}` prints it again:\n\
                     \n    {}\n",
                    token.name, token.id, token.id, created.secret
                ));
            }
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
        TokenCommand::Show { id } => {
            let shown = match session
                .admin
                .get_client_token(pb::GetClientTokenRequest { id: id.clone() })
                .await
            {
                Ok(shown) => shown.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => {
                    let listed = list(session).await?;
                    return Err(unknown_id(&listed, id));
                }
                Err(status) => return Err(session.error(status)),
            };
            let token = shown.token.unwrap_or_default();
            let mut document = token_json(&token);
            document["secret"] = json!(shown.secret);
            if let Some(text) = output::structured(&document, session.output) {
                return Ok(text);
            }
            let by = if token.created_by.is_empty() {
                String::new()
            } else {
                format!(" by {}", token.created_by)
            };
            Ok(format!(
                "client token {} (id {}) for environment {}, created {}{by}\n\
                 {CLIENT_TOKEN_USE}:\n\
                 \n    {}\n",
                token.name,
                token.id,
                token.environment,
                output::timestamp(token.created_unix_ms),
                shown.secret
            ))
        }
        TokenCommand::Revoke { id } => {
            // A name instead of an id is an easy slip: say which id it has.
            let listed = list(session).await?;
            let Some(token) = listed.iter().find(|t| &t.id == id) else {
                return Err(unknown_id(&listed, id));
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

/// What a client token is for, said wherever its secret is printed.
const CLIENT_TOKEN_USE: &str = "embed it in web pages and apps (OpenFeature's OFREP provider): \
it evaluates only this environment's client-side flags, and is not a secret";

/// The tokens that are not revoked.
async fn list(session: &Session) -> anyhow::Result<Vec<pb::Token>> {
    Ok(session
        .admin
        .clone()
        .list_tokens(pb::ListTokensRequest {})
        .await
        .map_err(|s| session.error(s))?
        .into_inner()
        .tokens)
}

/// No token has the id `id`; a name instead of an id is an easy slip: say which id it has.
fn unknown_id(listed: &[pb::Token], id: &str) -> anyhow::Error {
    let named: Vec<&str> = listed
        .iter()
        .filter(|t| t.name == id)
        .map(|t| t.id.as_str())
        .collect();
    if named.is_empty() {
        anyhow!("no token with id {id:?} (see `flagstaff token list`)")
    } else {
        anyhow!(
            "no token with id {id:?}; {id} is a token's name: its id is {}",
            named.join(" or ")
        )
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
