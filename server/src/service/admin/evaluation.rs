//! The Admin call that evaluates flags for a context, as an SDK would.

use flagstaff_engine::Context;
use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

use super::service::{blocking, AdminService};
use crate::auth::Access;
use crate::error::ServerError;
use crate::service::wire;
use crate::storage::Store;

pub(super) async fn evaluate<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::EvaluateRequest>,
) -> Result<Response<pb::EvaluateResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let context = wire::required(req.context, "context")?;
    wire::context(&context)?;
    if !req.flag.is_empty() {
        wire::key(&req.flag, "flag")?;
    }
    let envs = admin.envs.clone();
    let response = blocking(move || {
        let current = envs.get(&req.environment)?.current();
        let snapshot = &current.snapshot;
        let keys: Vec<&str> = if req.flag.is_empty() {
            let mut keys: Vec<&str> = snapshot.flags().map(|f| f.key.as_str()).collect();
            keys.sort_unstable();
            keys
        } else if snapshot.flag(&req.flag).is_some() {
            vec![req.flag.as_str()]
        } else {
            return Err(ServerError::NotFound(format!(
                "no flag {:?} in environment {:?}",
                req.flag, req.environment
            )));
        };
        let ctx = Context::from(&context);
        let evaluations = keys
            .into_iter()
            .map(|key| {
                let detail = snapshot.evaluate(key, &ctx);
                pb::Evaluation {
                    flag: key.to_owned(),
                    value_json: detail.value.to_string(),
                    variant: detail.variant.unwrap_or_default().to_owned(),
                    reason: Some(pb::Reason::from(detail.reason)),
                    version: detail.version.unwrap_or_default(),
                    bucket: detail.bucket,
                }
            })
            .collect();
        Ok(pb::EvaluateResponse {
            revision: current.revision,
            evaluations,
        })
    })
    .await?;
    Ok(Response::new(response))
}
