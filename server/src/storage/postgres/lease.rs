//! The leader's lease (DESIGN.md section 7): the row `duties` of the `leases` table, taken
//! and renewed every [`RENEW`] on a connection of its own, outside the pool, so that a busy
//! pool never delays a renewal. It expires [`TERM`] after its last renewal by the database's
//! clock; then another flagstaffd takes it with the next generation, and every duty's write
//! of the old holder fails (`flagstaff_hold_lease` in migration 0002).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{NoTls, Socket};

use super::tls::MakeRustlsConnect;
use super::with_sources;
use crate::storage::Lease;

/// The lease of the exactly-one duties.
pub(super) const DUTIES: &str = "duties";
/// How often the lease is renewed, or tried for.
pub(super) const RENEW: Duration = Duration::from_secs(2);
/// How long a renewal holds the lease.
const TERM: Duration = Duration::from_secs(6);

/// Takes the lease (or renews it): the generation held afterwards, or `None` when another
/// holds it. A lapsed lease, even one's own, is taken with the next generation, since a
/// duty of the lapsed term may have been refused meanwhile.
const TAKE: &str = "INSERT INTO leases AS l (name, holder, generation, expires_at)
     VALUES ($1, $2, 1, clock_timestamp() + $3::bigint * interval '1 millisecond')
     ON CONFLICT (name) DO UPDATE SET
         holder = EXCLUDED.holder,
         generation = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp()
                           THEN l.generation ELSE l.generation + 1 END,
         expires_at = EXCLUDED.expires_at
     WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp()
     RETURNING generation";

/// Gives the lease up at once, so that another flagstaffd takes it without waiting for it
/// to expire.
const GIVE_UP: &str =
    "UPDATE leases SET expires_at = clock_timestamp() WHERE name = $1 AND holder = $2";

/// Holds the lease for `holder` whenever it can, telling `leading` whether it does, until
/// every receiver of `leading` is dropped; then gives it up.
pub(super) async fn lead(
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    database: String,
    holder: String,
    leading: watch::Sender<Option<Lease>>,
) {
    let mut config = config;
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(2)
        .connect_timeout(RENEW);
    let mut reported = false;
    while !leading.is_closed() {
        let ended = match &tls {
            Some(tls) => hold(&config, tls.clone(), &holder, &leading).await,
            None => hold(&config, NoTls, &holder, &leading).await,
        };
        leading.send_if_modified(|held| held.take().is_some());
        match ended {
            Err(e) if !reported => {
                tracing::warn!(%database, error = %with_sources(&e), "cannot hold the leader's lease; retrying");
                reported = true;
            }
            Err(_) => {}
            Ok(()) => reported = false,
        }
        tokio::select! {
            () = tokio::time::sleep(RENEW) => {}
            () = leading.closed() => {}
        }
    }
}

/// How renewing ended without an error.
enum Ended {
    /// Nobody listens any more.
    Stopped,
    /// A renewal got no answer in time: the connection is made again.
    Stalled,
}

/// Connects, and takes or renews the lease every [`RENEW`] until the connection fails or
/// stalls, or nobody listens any more (then gives the lease up).
async fn hold<T: MakeTlsConnect<Socket>>(
    config: &tokio_postgres::Config,
    tls: T,
    holder: &str,
    leading: &watch::Sender<Option<Lease>>,
) -> Result<(), tokio_postgres::Error>
where
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    let running = tokio::spawn(connection);
    let result = renew(&client, holder, leading).await;
    if let Ok(Ended::Stopped) = result {
        // Stopped following: let another flagstaffd lead at once.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&DUTIES, &holder];
        let gave_up = tokio::time::timeout(RENEW, client.execute(GIVE_UP, &params)).await;
        if let Ok(Err(e)) = gave_up {
            tracing::warn!(error = %e, "cannot give up the leader's lease; it expires by itself");
        }
    }
    drop(client);
    running.abort();
    result.map(drop)
}

/// Renews until nobody listens, a renewal stalls or one fails.
async fn renew(
    client: &tokio_postgres::Client,
    holder: &str,
    leading: &watch::Sender<Option<Lease>>,
) -> Result<Ended, tokio_postgres::Error> {
    let take = client.prepare(TAKE).await?;
    let term = i64::try_from(TERM.as_millis()).unwrap_or(i64::MAX);
    loop {
        let sent = Instant::now();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&DUTIES, &holder, &term];
        let answer = tokio::time::timeout(RENEW, client.query_opt(&take, &params)).await;
        let Ok(row) = answer else {
            // The lease may lapse before an answer comes: this flagstaffd stops leading now,
            // before another can start (the lease runs TERM, three renewals).
            return Ok(Ended::Stalled);
        };
        let now = row?.map(|row| Lease {
            generation: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        });
        leading.send_if_modified(|held| {
            let changed = *held != now;
            *held = now;
            changed
        });
        tokio::select! {
            () = tokio::time::sleep_until(sent + RENEW) => {}
            () = leading.closed() => return Ok(Ended::Stopped),
        }
    }
}
