//! Listening for other processes' commits: a connection of its own, outside the pool, that
//! `LISTEN`s on [`NOTIFY_CHANNEL`] and hands each notification on as an
//! [`Announcement`]. It reconnects by itself, and says so ([`Announcement::Listening`]), since
//! whatever was notified while it was away is lost.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, NoTls, Socket};

use super::tls::MakeRustlsConnect;
use super::{with_sources, NOTIFY_CHANNEL};

/// The notification of a change to the environments themselves (created, deleted, settings).
pub(super) const ENVIRONMENTS: &str = "environments";
/// The notification of a change to tokens (created, revoked).
pub(super) const TOKENS: &str = "tokens";
/// After `<environment>:`, the notification of a change to the environment's rollout plans
/// that made no revision (a pause, a resume).
pub(super) const ROLLOUTS: &str = "rollouts";
use crate::storage::Announcement;

/// The wait before reconnecting, doubled after each failure up to [`MOST_PATIENT`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MOST_PATIENT: Duration = Duration::from_secs(2);

/// Listens until `announce` is closed (its receiver dropped) or the runtime stops.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    database: String,
    announce: UnboundedSender<Announcement>,
) {
    // A connection whose peer vanished without closing it (a network cut, the database's host
    // lost) is noticed by TCP keepalives within about 15 s, not the system's two hours.
    let mut config = config;
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(5);
    let mut retry = FIRST_RETRY;
    // Whether the database is reachable as far as this connection knows: told when it stops
    // being so, once per outage.
    let mut reachable = true;
    while !announce.is_closed() {
        let mut listened = false;
        let ended = match &tls {
            Some(tls) => listen_once(&config, tls.clone(), &announce, &mut listened).await,
            None => listen_once(&config, NoTls, &announce, &mut listened).await,
        };
        if announce.is_closed() {
            // flagstaffd stopped following: nothing to report.
            return;
        }
        if listened {
            retry = FIRST_RETRY;
            reachable = true;
        }
        match ended {
            Ok(()) => {
                tracing::warn!(%database, "the connection listening for commits closed; reconnecting")
            }
            Err(e) if reachable => {
                tracing::warn!(%database, error = %with_sources(&e), "cannot listen for commits; retrying")
            }
            Err(_) => {}
        }
        if reachable {
            reachable = false;
            let _ = announce.send(Announcement::Lost);
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MOST_PATIENT);
    }
}

/// Connects, listens and announces until the connection ends (`Ok`) or fails; `listened`
/// turns true once it listens.
async fn listen_once<T: MakeTlsConnect<Socket>>(
    config: &tokio_postgres::Config,
    tls: T,
    announce: &UnboundedSender<Announcement>,
    listened: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    // The client lives as long as this function: dropped, it would close the connection.
    let (client, mut connection) = config.connect(tls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {NOTIFY_CHANNEL}");
    let listening = client.batch_execute(&statement);
    tokio::pin!(listening);
    // The connection makes progress only while its messages are read: read them while
    // LISTEN is answered.
    loop {
        tokio::select! {
            listened = &mut listening => {
                listened?;
                break;
            }
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
    *listened = true;
    if announce.send(Announcement::Listening).is_err() {
        return Ok(());
    }
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            // Nobody follows any more (flagstaffd stopped).
            () = announce.closed() => return Ok(()),
        };
        let Some(message) = message else { break };
        let notification = match message? {
            AsyncMessage::Notification(n) => n,
            _ => continue,
        };
        let Some(announcement) = parse(notification.payload()) else {
            tracing::warn!(
                payload = notification.payload(),
                "an unreadable commit notification"
            );
            continue;
        };
        if announce.send(announcement).is_err() {
            break;
        }
    }
    Ok(())
}

/// `<environment>:<revision>` (a commit), `<environment>:`[`ROLLOUTS`], or one of the words
/// naming what is not an environment's revision: [`ENVIRONMENTS`], [`TOKENS`]. Environment
/// keys hold no `:`, so the last one splits.
fn parse(payload: &str) -> Option<Announcement> {
    match payload {
        ENVIRONMENTS => return Some(Announcement::Environments),
        TOKENS => return Some(Announcement::Tokens),
        _ => {}
    }
    let (environment, what) = payload.rsplit_once(':')?;
    let environment = environment.to_owned();
    if what == ROLLOUTS {
        return Some(Announcement::Rollouts { environment });
    }
    Some(Announcement::Committed {
        environment,
        revision: what.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_an_environment_and_a_revision() {
        assert_eq!(
            parse("production:42"),
            Some(Announcement::Committed {
                environment: "production".into(),
                revision: 42
            })
        );
        assert_eq!(parse("tokens"), Some(Announcement::Tokens));
        assert_eq!(parse("environments"), Some(Announcement::Environments));
        assert_eq!(
            parse("rollouts:rollouts"),
            Some(Announcement::Rollouts {
                environment: "rollouts".into()
            })
        );
        assert_eq!(
            parse("rollouts:7"),
            Some(Announcement::Committed {
                environment: "rollouts".into(),
                revision: 7
            })
        );
        assert_eq!(parse("production"), None);
        assert_eq!(parse("production:x"), None);
        assert_eq!(parse("production:-1"), None);
    }
}
