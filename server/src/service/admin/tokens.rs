//! Admin calls on tokens: creating, listing and revoking them, and showing a client token again.

use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

use super::service::{blocking, AdminService};
use crate::auth::Access;
use crate::error::ServerError;
use crate::service::wire;
use crate::storage::{Role, Store, TokenRecord};

pub(super) async fn create_token<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::CreateTokenRequest>,
) -> Result<Response<pb::CreateTokenResponse>, Status> {
    let creator = admin.allow(&request, Access::Admin).await?;
    let req = request.into_inner();
    let role = wire::role(req.role)?;
    let environment = Some(req.environment).filter(|e| !e.is_empty());
    if let Some(environment) = &environment {
        wire::key(environment, "environment")?;
    }
    let (envs, tokens) = (admin.envs.clone(), admin.tokens.clone());
    let (token, secret) = blocking(move || {
        let create = || tokens.create_named(&req.name, role, environment.as_deref(), &creator.name);
        match (role, &environment) {
            // Created while the environment cannot be deleted: a deletion revokes its
            // tokens, and one created during it would outlive it.
            (Role::Editor | Role::Sdk | Role::Client, Some(key)) => envs.while_exists(key, create),
            _ => create(),
        }
    })
    .await?;
    Ok(Response::new(pb::CreateTokenResponse {
        token: Some(wire::token(&token)),
        secret,
    }))
}

pub(super) async fn get_client_token<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::GetClientTokenRequest>,
) -> Result<Response<pb::GetClientTokenResponse>, Status> {
    admin.allow(&request, Access::Admin).await?;
    let id = request.into_inner().id;
    wire::required_str(&id, "id")?;
    // Created through another flagstaffd of the database, perhaps not heard of here yet: held
    // from now on if so.
    find(admin, &id).await?;
    let (token, secret) = admin.tokens.client_token(&id)?;
    Ok(Response::new(pb::GetClientTokenResponse {
        token: Some(wire::token(&token)),
        secret,
    }))
}

pub(super) async fn list_tokens<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::ListTokensRequest>,
) -> Result<Response<pb::ListTokensResponse>, Status> {
    admin.allow(&request, Access::Admin).await?;
    let mut live: Vec<TokenRecord> = admin
        .tokens
        .list()
        .into_iter()
        .filter(|t| !t.revoked)
        .collect();
    // By name; oldest first among the same name (the offline admin-token tool reuses one).
    live.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Response::new(pb::ListTokensResponse {
        tokens: live.iter().map(wire::token).collect(),
    }))
}

pub(super) async fn revoke_token<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::RevokeTokenRequest>,
) -> Result<Response<pb::RevokeTokenResponse>, Status> {
    admin.allow(&request, Access::Admin).await?;
    let id = request.into_inner().id;
    wire::required_str(&id, "id")?;
    // As for get_client_token.
    find(admin, &id).await?;
    let tokens = admin.tokens.clone();
    blocking(move || tokens.revoke(&id)).await?;
    Ok(Response::new(pb::RevokeTokenResponse {}))
}

/// Makes sure the token `id` is held if the store has it. A lookup that cannot be made now
/// (the database is unreachable, or too many unknown tokens are being looked up) is
/// `UNAVAILABLE`: the token may exist, so "not found" would mislead.
async fn find<S: Store>(admin: &AdminService<S>, id: &str) -> Result<(), ServerError> {
    match admin.tokens.find(id).await {
        Ok(_) => Ok(()),
        Err(ServerError::Unauthenticated(busy)) => Err(ServerError::Unavailable(busy)),
        Err(e) => Err(e),
    }
}
