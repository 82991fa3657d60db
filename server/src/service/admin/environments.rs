//! Admin calls on environments: creating, listing and deleting them.

use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

use super::service::{blocking, AdminService};
use crate::auth::Access;
use crate::environments::unconfirmed;
use crate::service::wire;
use crate::storage::Store;

pub(super) async fn create_environment<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::CreateEnvironmentRequest>,
) -> Result<Response<pb::CreateEnvironmentResponse>, Status> {
    admin.allow(&request, Access::Admin).await?;
    let pb::CreateEnvironmentRequest {
        environment,
        protected,
    } = request.into_inner();
    let envs = admin.envs.clone();
    let env = blocking(move || envs.create(&environment, protected)).await?;
    Ok(Response::new(pb::CreateEnvironmentResponse {
        environment: Some(wire::environment(&env)),
    }))
}

pub(super) async fn list_environments<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::ListEnvironmentsRequest>,
) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
    admin.allow(&request, Access::Admin).await?;
    let environments = admin
        .envs
        .list()
        .iter()
        .map(|e| wire::environment(e))
        .collect();
    Ok(Response::new(pb::ListEnvironmentsResponse { environments }))
}

pub(super) async fn delete_environment<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::DeleteEnvironmentRequest>,
) -> Result<Response<pb::DeleteEnvironmentResponse>, Status> {
    admin.allow(&request, Access::Admin).await?;
    let pb::DeleteEnvironmentRequest {
        environment,
        confirm_protected,
    } = request.into_inner();
    wire::key(&environment, "environment")?;
    if admin.envs.get(&environment)?.protected && !confirm_protected {
        return Err(unconfirmed(&environment).into());
    }
    let (envs, tokens) = (admin.envs.clone(), admin.tokens.clone());
    // Its tokens belong to this environment, not to its name (DESIGN.md section 4a).
    blocking(move || {
        envs.delete_with(&environment, || {
            tokens.revoke_environment(&environment).map(|_| ())
        })
    })
    .await?;
    Ok(Response::new(pb::DeleteEnvironmentResponse {}))
}
