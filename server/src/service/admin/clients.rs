//! Admin calls on the SDK instances that watch an environment: listing them, and waiting
//! until they have a revision (`WaitForRevision`, with its [`Progress`]). On a database
//! several flagstaffd share, both see every replica's instances.

use std::time::Duration;

use flagstaff_proto::pb;
use tonic::{Request, Response, Status};

use super::service::AdminService;
use crate::auth::Access;
use crate::clients::{self, Instance};
use crate::service::wire;
use crate::storage::Store;

pub(super) async fn list_clients<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::ListClientsRequest>,
) -> Result<Response<pb::ListClientsResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let env = admin.envs.get(&request.get_ref().environment)?;
    let instances = everywhere(admin, &env.key).await?;
    Ok(Response::new(pb::ListClientsResponse {
        revision: env.current().revision,
        clients: instances
            .iter()
            .map(|i| wire::client_instance(i, &env.epoch))
            .collect(),
    }))
}

pub(super) async fn wait_for_revision<S: Store>(
    admin: &AdminService<S>,
    request: Request<pb::WaitForRevisionRequest>,
) -> Result<Response<pb::WaitForRevisionResponse>, Status> {
    admin
        .allow(&request, Access::Read(&request.get_ref().environment))
        .await?;
    let req = request.into_inner();
    let env = admin.envs.get(&req.environment)?;
    // A revision another flagstaffd on the database committed is brought here first.
    if req.revision > env.current().revision {
        admin.envs.reach(&env.key, req.revision).await;
    }
    let current = env.current().revision;
    let revision = match req.revision {
        0 => current,
        r if r > current => {
            return Err(Status::invalid_argument(format!(
                "revision {r} is ahead of environment {:?}, which is at revision {current}",
                env.key
            )))
        }
        r => r,
    };
    let timeout = match req.timeout_ms {
        0 => DEFAULT_WAIT,
        ms => Duration::from_millis(ms).min(MAX_WAIT),
    };
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let mut changes = admin.clients.changes();
    // Woken by this flagstaffd's instances; on a database several share, every instance is
    // read from it every SHARED_POLL instead (local changes then wait for the next read, so
    // that a burst of acknowledgements costs no more reads).
    let shared = admin.envs.store().is_shared();
    loop {
        changes.borrow_and_update();
        let instances = everywhere(admin, &env.key).await?;
        let progress = Progress::of(&instances, &env.epoch, revision);
        let complete = progress.pending.is_empty();
        let timed_out = tokio::time::Instant::now() >= deadline;
        if complete || timed_out {
            let elapsed = started.elapsed().as_millis() as u64;
            return Ok(Response::new(
                progress.response(&env.epoch, revision, elapsed),
            ));
        }
        let poll = match shared {
            true => (tokio::time::Instant::now() + SHARED_POLL).min(deadline),
            false => deadline,
        };
        tokio::select! {
            _ = changes.changed(), if !shared => {}
            () = tokio::time::sleep_until(poll) => {}
            () = admin.signals.stopped() => {
                return Err(Status::unavailable("flagstaffd is shutting down"));
            }
        }
    }
}

/// Every SDK instance of `environment`: this flagstaffd's, and on a database several share,
/// every other's too; connected ones first.
async fn everywhere<S: Store>(
    admin: &AdminService<S>,
    environment: &str,
) -> Result<Vec<Instance>, Status> {
    Ok(clients::of_environment(&admin.clients, admin.envs.store(), environment).await?)
}

/// How often `WaitForRevision` reads other replicas' instances while it waits, on a
/// database several flagstaffd share.
const SHARED_POLL: Duration = Duration::from_millis(100);

/// How long `WaitForRevision` waits when the request does not say.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The longest `WaitForRevision` waits.
const MAX_WAIT: Duration = Duration::from_secs(5 * 60);

/// How far back `WaitForRevision` reports instances that disconnected without the revision.
const RECENTLY_GONE_MS: u64 = 10 * 60 * 1000;

/// Where a revision stands among an environment's instances.
struct Progress<'a> {
    applied: usize,
    connected: usize,
    /// Connected, and not at the revision yet.
    pending: Vec<&'a Instance>,
    /// Disconnected in the last 10 minutes without having applied it.
    gone: Vec<&'a Instance>,
}

impl<'a> Progress<'a> {
    fn of(instances: &'a [Instance], epoch: &str, revision: u64) -> Progress<'a> {
        let has = |i: &Instance| clients::has_applied(i, epoch, revision);
        let now = crate::storage::now_ms();
        let connected: Vec<&Instance> = instances.iter().filter(|i| i.streams > 0).collect();
        Progress {
            applied: connected.iter().filter(|i| has(i)).count(),
            connected: connected.len(),
            pending: connected.iter().copied().filter(|i| !has(i)).collect(),
            gone: instances
                .iter()
                .filter(|i| {
                    i.disconnected_ms
                        .is_some_and(|at| now.saturating_sub(at) < RECENTLY_GONE_MS)
                        && !has(i)
                })
                .collect(),
        }
    }

    fn response(&self, epoch: &str, revision: u64, elapsed_ms: u64) -> pb::WaitForRevisionResponse {
        pb::WaitForRevisionResponse {
            revision,
            complete: self.pending.is_empty(),
            applied: self.applied as u32,
            connected: self.connected as u32,
            elapsed_ms,
            pending: self
                .pending
                .iter()
                .map(|i| wire::client_instance(i, epoch))
                .collect(),
            disconnected: self
                .gone
                .iter()
                .map(|i| wire::client_instance(i, epoch))
                .collect(),
        }
    }
}
