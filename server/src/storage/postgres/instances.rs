//! The SDK instances of every replica (tables `replicas` and `sdk_instances`, migration 3):
//! each flagstaffd writes those whose streams it serves, and reads the others'.

use std::time::Duration;

use super::{revision_of, sql_revision};
use crate::storage::{Identity, Instance, MAX_SHARED_INSTANCES};

/// Records the replica alive (`$1`), and writes its instances, given as one array per column,
/// in one statement; answers whether the replica's row was new.
const WRITE: &str = "
    WITH alive AS (
        INSERT INTO replicas (id, seen_at) VALUES ($1, now())
        ON CONFLICT (id) DO UPDATE SET seen_at = now()
        RETURNING id, xmax = 0 AS fresh
    ), written AS (
        INSERT INTO sdk_instances (environment, instance_id, replica, application, sdk_version,
                                   host, token, streams, connected_ms, disconnected_ms, epoch,
                                   applied_revision, applied_ms)
        SELECT i.environment, i.instance_id, alive.id, i.application, i.sdk_version, i.host,
               i.token, i.streams, i.connected_ms, i.disconnected_ms, i.epoch,
               i.applied_revision, i.applied_ms
        FROM alive, unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                           $7::text[], $8::int[], $9::bigint[], $10::bigint[], $11::text[],
                           $12::bigint[], $13::bigint[])
            AS i (environment, instance_id, application, sdk_version, host, token, streams,
                  connected_ms, disconnected_ms, epoch, applied_revision, applied_ms)
        -- An environment deleted meanwhile takes its instances with it.
        WHERE EXISTS (SELECT 1 FROM environments e WHERE e.key = i.environment)
        ON CONFLICT (environment, instance_id, replica) DO UPDATE SET
            application = EXCLUDED.application,
            sdk_version = EXCLUDED.sdk_version,
            host = EXCLUDED.host,
            token = EXCLUDED.token,
            streams = EXCLUDED.streams,
            connected_ms = EXCLUDED.connected_ms,
            disconnected_ms = EXCLUDED.disconnected_ms,
            epoch = EXCLUDED.epoch,
            applied_revision = EXCLUDED.applied_revision,
            applied_ms = EXCLUDED.applied_ms
        RETURNING 1
    )
    SELECT fresh, (SELECT count(*) FROM written) FROM alive";

/// The instances of environment `$1` other replicas than `$2` wrote, with whether their
/// replica has been silent for `$3` milliseconds and when it last wrote; at most `$4`.
const READ: &str = "
    SELECT i.instance_id, i.application, i.sdk_version, i.host, i.token, i.streams,
           i.connected_ms, i.disconnected_ms, i.epoch, i.applied_revision, i.applied_ms,
           r.seen_at < now() - $3::bigint * interval '1 millisecond' AS silent,
           (extract(epoch FROM r.seen_at) * 1000)::bigint AS seen_ms
    FROM sdk_instances i JOIN replicas r ON r.id = i.replica
    WHERE i.environment = $1 AND i.replica <> $2
    ORDER BY i.streams > 0 DESC, i.instance_id, i.replica
    LIMIT $4";

/// Removes the instances disconnected for `$1` milliseconds, by the database's clock.
const PRUNE_INSTANCES: &str = "
    DELETE FROM sdk_instances
    WHERE disconnected_ms < (extract(epoch FROM now()) * 1000)::bigint - $1";

/// Removes the replicas silent for `$1` milliseconds, and with them their instances.
const PRUNE_REPLICAS: &str = "
    DELETE FROM replicas WHERE seen_at < now() - $1::bigint * interval '1 millisecond'";

/// A replica's instances as the columns of [`WRITE`].
pub(super) struct Rows {
    replica: String,
    environment: Vec<String>,
    instance_id: Vec<String>,
    application: Vec<String>,
    sdk_version: Vec<String>,
    host: Vec<String>,
    token: Vec<String>,
    streams: Vec<i32>,
    connected_ms: Vec<i64>,
    disconnected_ms: Vec<Option<i64>>,
    epoch: Vec<String>,
    applied_revision: Vec<i64>,
    applied_ms: Vec<i64>,
}

impl Rows {
    /// The columns of `replica`'s `instances`.
    pub(super) fn of(replica: &str, instances: &[Instance]) -> Rows {
        let text = |f: fn(&Instance) -> &str| -> Vec<String> {
            instances.iter().map(|i| f(i).to_owned()).collect()
        };
        let number = |f: fn(&Instance) -> u64| -> Vec<i64> {
            instances.iter().map(|i| sql_revision(f(i))).collect()
        };
        Rows {
            replica: replica.to_owned(),
            environment: text(|i| &i.environment),
            instance_id: text(|i| &i.identity.instance_id),
            application: text(|i| &i.identity.application),
            sdk_version: text(|i| &i.identity.sdk_version),
            host: text(|i| &i.identity.host),
            token: text(|i| &i.token),
            streams: instances
                .iter()
                .map(|i| i32::try_from(i.streams).unwrap_or(i32::MAX))
                .collect(),
            connected_ms: number(|i| i.connected_ms),
            disconnected_ms: instances
                .iter()
                .map(|i| i.disconnected_ms.map(sql_revision))
                .collect(),
            epoch: text(|i| &i.epoch),
            applied_revision: number(|i| i.applied_revision),
            applied_ms: number(|i| i.applied_ms),
        }
    }

    /// Writes them in one statement; whether the replica's row was new.
    pub(super) async fn write(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<bool, tokio_postgres::Error> {
        let row = client
            .query_one(
                WRITE,
                &[
                    &self.replica,
                    &self.environment,
                    &self.instance_id,
                    &self.application,
                    &self.sdk_version,
                    &self.host,
                    &self.token,
                    &self.streams,
                    &self.connected_ms,
                    &self.disconnected_ms,
                    &self.epoch,
                    &self.applied_revision,
                    &self.applied_ms,
                ],
            )
            .await?;
        Ok(row.get(0))
    }
}

/// The instances of `environment` replicas other than `replica` wrote; those of a replica
/// silent for `silence` disconnected since its last write.
pub(super) async fn read(
    client: &tokio_postgres::Client,
    environment: &str,
    replica: &str,
    silence: Duration,
) -> Result<Vec<Instance>, tokio_postgres::Error> {
    let silence_ms = i64::try_from(silence.as_millis()).unwrap_or(i64::MAX);
    let limit = i64::try_from(MAX_SHARED_INSTANCES).unwrap_or(i64::MAX);
    let rows = client
        .query(READ, &[&environment, &replica, &silence_ms, &limit])
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let silent: bool = row.get(11);
            let seen_ms = revision_of(row.get(12));
            let streams = u32::try_from(row.get::<_, i32>(5)).unwrap_or(0);
            let disconnected_ms = row.get::<_, Option<i64>>(7).map(revision_of);
            Instance {
                environment: environment.to_owned(),
                identity: Identity {
                    instance_id: row.get(0),
                    application: row.get(1),
                    sdk_version: row.get(2),
                    host: row.get(3),
                },
                token: row.get(4),
                streams: if silent { 0 } else { streams },
                connected_ms: revision_of(row.get(6)),
                disconnected_ms: match (silent, disconnected_ms) {
                    (true, None) => Some(seen_ms),
                    (_, at) => at,
                },
                epoch: row.get(8),
                applied_revision: revision_of(row.get(9)),
                applied_ms: revision_of(row.get(10)),
            }
        })
        .collect())
}

/// Removes instances disconnected for `remember`, and replicas silent that long with theirs.
pub(super) async fn prune(
    client: &tokio_postgres::Client,
    remember: Duration,
) -> Result<(), tokio_postgres::Error> {
    let remember_ms = i64::try_from(remember.as_millis()).unwrap_or(i64::MAX);
    client.execute(PRUNE_INSTANCES, &[&remember_ms]).await?;
    client.execute(PRUNE_REPLICAS, &[&remember_ms]).await?;
    Ok(())
}
