//! The Watch stream that keeps a client's snapshot fresh from flagstaffd.
//!
//! One loop: connect, subscribe with the epoch and revision held, apply what arrives, and
//! acknowledge each applied revision; on any failure keep serving the last snapshot, mark the
//! client stale, and reconnect to the next endpoint or address ([`super::rotation`]) at once,
//! or after a capped, jittered exponential backoff ([`super::backoff`]) once every endpoint
//! has failed in a row. Any replica of the same database takes the subscription where the
//! last one left it. The protocol itself (framing, consecutive revisions, epochs) is checked
//! by [`Assembler`]; a violation makes the client resubscribe from revision 0, which always
//! converges.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flagstaff_engine::{Document, Snapshot};
use flagstaff_proto::pb;
use flagstaff_proto::watch::{Assembler, Update};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};
use tonic::Request;

use super::backoff::Jitter;
use super::rotation::{Next, Rotation};
use super::LatestChannel;
use crate::config::{Settings, Target};
use crate::core::{Core, Failure};
use crate::status::{Source, State};

/// The heartbeat interval assumed until a snapshot announces one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Silent heartbeat intervals after which a stream is taken for dead.
const SILENT_INTERVALS: u32 = 3;

/// Where the client stands: the epoch and revision it holds, and the interval to expect
/// heartbeats at.
#[derive(Debug, Clone)]
struct Position {
    epoch: String,
    revision: u64,
    heartbeat: Duration,
}

/// Why a stream ended.
#[derive(Debug)]
enum Ended {
    /// The client is closing.
    Closing,
    /// The connection failed or the server ended the stream; resume where we are.
    Lost(String),
    /// The server refused the sdk key (`UNAUTHENTICATED`, `PERMISSION_DENIED`).
    Refused(String),
    /// The server broke the protocol: start over from revision 0.
    Resync(String),
}

/// Keeps the snapshot fresh from the Watch stream until `stop` turns true.
pub(super) async fn keep_fresh(
    core: &Arc<Core>,
    settings: &Settings,
    latest: &LatestChannel,
    mut stop: watch::Receiver<bool>,
) {
    let mut endpoints = Vec::with_capacity(settings.endpoints.len());
    for target in &settings.endpoints {
        match endpoint(settings, target) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(e) => {
                tracing::error!(endpoint = %target.url, error = %causes(&e), "unusable endpoint: the client stays on its bootstrap data");
                return;
            }
        }
    }
    let status = core.status.borrow().clone();
    let mut position =
        (status.source != Source::Bootstrap && !status.epoch.is_empty()).then(|| Position {
            epoch: status.epoch.clone(),
            revision: status.revision,
            heartbeat: DEFAULT_HEARTBEAT,
        });
    let mut jitter = Jitter::new(&settings.instance_id);
    let mut rotation = Rotation::new(endpoints.len());
    loop {
        if *stop.borrow() {
            break;
        }
        let index = rotation.endpoint();
        let (target, endpoint) = (&settings.endpoints[index], &endpoints[index]);
        let ended = tokio::select! {
            ended = connect_and_stream(core, settings, target, endpoint, latest, &mut position, &mut rotation) => ended,
            _ = stop.wait_for(|s| *s) => Ended::Closing,
        };
        let has_data = core.status.borrow().has_data();
        let failure = match ended {
            Ended::Closing => break,
            Ended::Refused(why) => {
                tracing::error!(
                    endpoint = %target.url,
                    reason = %why,
                    "flagstaffd refused the sdk key: give the client the secret of an sdk token of \
                     its environment (`flagstaff token create --name NAME --role sdk --env ENV`); \
                     retrying with backoff"
                );
                Failure {
                    reason: why,
                    refused: true,
                }
            }
            Ended::Lost(why) => {
                let repeated = core
                    .failure
                    .borrow()
                    .as_ref()
                    .is_some_and(|f| f.reason == why);
                match (has_data, repeated) {
                    (_, true) => {
                        tracing::debug!(endpoint = %target.url, reason = %why, "flagstaff stream still down");
                    }
                    (true, false) => {
                        tracing::info!(endpoint = %target.url, reason = %why, "flagstaff stream lost; serving the last snapshot");
                    }
                    (false, false) => {
                        tracing::warn!(endpoint = %target.url, reason = %why, "flagstaff has no data yet: serving the callers' defaults; retrying");
                    }
                }
                Failure {
                    reason: why,
                    refused: false,
                }
            }
            Ended::Resync(why) => {
                tracing::warn!(endpoint = %target.url, reason = %why, "flagstaff stream out of step; resubscribing from scratch");
                core.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                position = None;
                Failure {
                    reason: why,
                    refused: false,
                }
            }
        };
        core.failure.send_replace(Some(failure));
        disconnected(core);
        let Next::Backoff { rounds } = rotation.failed() else {
            continue;
        };
        let delay = jitter.backoff(settings.backoff_base, settings.backoff_cap, rounds);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// `target` as tonic connects to it: over TLS for `https://` (checking the certificate against
/// the endpoint's host name, or the builder's TLS domain), whichever address it is reached at.
fn endpoint(settings: &Settings, target: &Target) -> Result<Endpoint, tonic::transport::Error> {
    let mut endpoint = Endpoint::from(target.uri.clone()).connect_timeout(settings.connect_timeout);
    if target.https {
        let mut tls = ClientTlsConfig::new();
        tls = match &settings.tls_ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
            None => tls.with_native_roots(),
        };
        if let Some(domain) = &settings.tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint)
}

/// The stream is down: no endpoint serves the client, whose data turns stale.
fn disconnected(core: &Core) {
    core.status.send_if_modified(|s| {
        let served = s.endpoint.take().is_some() | s.address.take().is_some();
        match s.state {
            State::Ready => {
                s.state = State::Stale {
                    since: SystemTime::now(),
                };
                tracing::warn!(
                    revision = s.revision,
                    "flagstaff client stale: disconnected"
                );
                true
            }
            _ => served,
        }
    });
}

/// Resolves the rotation's endpoint when it comes to it, then connects to the rotation's
/// address and streams until the stream ends.
async fn connect_and_stream(
    core: &Arc<Core>,
    settings: &Settings,
    target: &Target,
    endpoint: &Endpoint,
    latest: &LatestChannel,
    position: &mut Option<Position>,
    rotation: &mut Rotation,
) -> Ended {
    if rotation.address().is_none() {
        let resolving = tokio::time::timeout(
            settings.connect_timeout,
            tokio::net::lookup_host(target.authority.as_str()),
        );
        let addresses = match resolving.await {
            Ok(Ok(addresses)) => addresses.collect(),
            Ok(Err(e)) => {
                return Ended::Lost(format!("cannot resolve {}: {e}", target.authority));
            }
            Err(_) => {
                return Ended::Lost(format!("cannot resolve {}: timed out", target.authority));
            }
        };
        rotation.resolved(addresses);
    }
    let Some(address) = rotation.address() else {
        return Ended::Lost(format!("{} resolves to no address", target.authority));
    };
    let connecting = tokio::time::timeout(settings.connect_timeout, connect(endpoint, address));
    let channel = match connecting.await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => {
            return Ended::Lost(format!(
                "cannot connect to {} ({address}): {}",
                target.url,
                causes(&e)
            ))
        }
        Err(_) => {
            return Ended::Lost(format!(
                "cannot connect to {} ({address}): timed out",
                target.url
            ))
        }
    };
    let connection = Connection {
        target,
        address,
        channel,
    };
    stream(core, settings, connection, latest, position, rotation).await
}

/// A connection to an endpoint, at one of its addresses.
#[derive(Debug)]
struct Connection<'a> {
    target: &'a Target,
    address: SocketAddr,
    channel: Channel,
}

/// A connection to `endpoint` at `address`. The endpoint's URI keeps its host name, which
/// tonic sends as the `:authority` and checks the TLS certificate against; only the TCP
/// connection goes to the address. (tonic's own connector tries a name's addresses in order
/// when connecting, but always the first that accepts: a replica that accepts and then stalls
/// would be chosen again at every reconnection.)
async fn connect(
    endpoint: &Endpoint,
    address: SocketAddr,
) -> Result<Channel, tonic::transport::Error> {
    let to_address = tower::service_fn(move |_: Uri| async move {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(TokioIo::new(stream))
    });
    endpoint.connect_with_connector(to_address).await
}

/// One stream on `connection`, until it ends.
async fn stream(
    core: &Arc<Core>,
    settings: &Settings,
    connection: Connection<'_>,
    latest: &LatestChannel,
    position: &mut Option<Position>,
    rotation: &mut Rotation,
) -> Ended {
    let Connection {
        target,
        address,
        channel,
    } = connection;
    let heartbeat = position.as_ref().map_or(DEFAULT_HEARTBEAT, |p| p.heartbeat);
    // Usage reports share the connection (and, while the stream is down, reconnect it).
    latest.set(channel.clone());
    let mut client = pb::sync_client::SyncClient::new(channel);
    let (requests, outbound) = mpsc::unbounded_channel();
    let (epoch, since) = position
        .as_ref()
        .map_or((String::new(), 0), |p| (p.epoch.clone(), p.revision));
    let subscribe = pb::Subscribe {
        epoch: epoch.clone(),
        since_revision: since,
        instance_id: settings.instance_id.clone(),
        application: settings.application.clone(),
        sdk_version: concat!("flagstaff-rust/", env!("CARGO_PKG_VERSION")).to_owned(),
        host: settings.host.clone(),
        environment: String::new(),
    };
    let _ = requests.send(pb::WatchRequest {
        request: Some(pb::watch_request::Request::Subscribe(subscribe)),
    });
    let mut request = Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(
        outbound,
    ));
    match format!("Bearer {}", settings.sdk_key).parse() {
        Ok(value) => {
            request.metadata_mut().insert("authorization", value);
        }
        // `build` checked the key; this cannot happen.
        Err(_) => return Ended::Lost("the sdk key cannot be sent".to_owned()),
    }
    core.stats.connections.fetch_add(1, Ordering::Relaxed);
    // A path that accepts connections but carries nothing must not hang the client.
    let answer = settings.connect_timeout + heartbeat * SILENT_INTERVALS;
    let mut inbound = match tokio::time::timeout(answer, client.watch(request)).await {
        Ok(Ok(response)) => {
            // The server took the key: a refusal of it is over, whatever the data does next.
            core.failure
                .send_if_modified(|f| f.take_if(|f| f.refused).is_some());
            answered(core, target, address, rotation);
            response.into_inner()
        }
        Ok(Err(status)) => return ended(&status),
        Err(_) => return Ended::Lost(format!("no answer to the subscription within {answer:?}")),
    };
    let mut assembler = match position {
        Some(p) => Assembler::resume(p.epoch.clone(), p.revision),
        None => Assembler::new(),
    };
    let opened = Instant::now();
    let mut lasted = false;
    loop {
        let heartbeat = position.as_ref().map_or(DEFAULT_HEARTBEAT, |p| p.heartbeat);
        let silence = heartbeat * SILENT_INTERVALS;
        let message = match tokio::time::timeout(silence, inbound.message()).await {
            Err(_) => {
                return Ended::Lost(format!(
                    "no message from {} ({address}) for {silence:?}",
                    target.url
                ))
            }
            Ok(Err(status)) => return ended(&status),
            Ok(Ok(None)) => return Ended::Lost("the server ended the stream".to_owned()),
            Ok(Ok(Some(message))) => message,
        };
        // A server that answers a heartbeat interval after the stream opened is serving: its
        // failure later starts a new round. One that drops each stream as soon as it has sent
        // something does not, so that a client going round such servers backs off.
        if !lasted && opened.elapsed() >= heartbeat {
            lasted = true;
            rotation.lasted();
        }
        let update = match assembler.receive(message) {
            Ok(Some(update)) => update,
            Ok(None) => continue,
            Err(e) => return Ended::Resync(e.to_string()),
        };
        let applied = match update {
            Update::Heartbeat { .. } => {
                // The server confirms the client holds its current revision.
                if let Some(p) = position.as_ref() {
                    core.confirm(&p.epoch, p.revision);
                }
                continue;
            }
            Update::Snapshot {
                epoch,
                revision,
                heartbeat_interval_ms,
                flags,
                segments,
            } => {
                let document = Document {
                    environment: String::new(),
                    flags,
                    segments,
                };
                let snapshot = match build_snapshot(document).await {
                    Ok(snapshot) => snapshot,
                    Err(why) => return Ended::Resync(why),
                };
                core.stats.snapshots.fetch_add(1, Ordering::Relaxed);
                *position = Some(Position {
                    epoch,
                    revision,
                    heartbeat: Duration::from_millis(heartbeat_interval_ms.max(1)),
                });
                snapshot
            }
            Update::Delta(delta) => {
                let Some(current) = core.snapshot.load_full() else {
                    return Ended::Resync("a delta before any snapshot".to_owned());
                };
                let revision = delta.revision;
                let next = delta
                    .resolve(&current)
                    .map_err(|e| e.to_string())
                    .and_then(|changes| current.apply(changes).map_err(|e| e.to_string()));
                let next = match next {
                    Ok(next) => next,
                    Err(why) => return Ended::Resync(format!("revision {revision}: {why}")),
                };
                core.stats.deltas.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = position.as_mut() {
                    p.revision = revision;
                }
                next
            }
        };
        let Some(p) = position.as_ref() else {
            return Ended::Resync("no position after an update".to_owned());
        };
        let applied = Arc::new(applied);
        let before = core.publish(applied.clone(), &p.epoch, p.revision);
        let ack = pb::Ack {
            epoch: p.epoch.clone(),
            revision: p.revision,
        };
        let _ = requests.send(pb::WatchRequest {
            request: Some(pb::watch_request::Request::Ack(ack)),
        });
        // After the acknowledgement: what changed is for listeners, not for the server.
        core.listeners
            .changed(before.as_deref(), &applied, p.revision);
    }
}

/// The server at `address` took the subscription: it serves the client now, and if the last
/// stream was elsewhere, the client failed over.
fn answered(core: &Core, target: &Target, address: SocketAddr, rotation: &mut Rotation) {
    if rotation.answered() {
        core.stats.failovers.fetch_add(1, Ordering::Relaxed);
        tracing::info!(endpoint = %target.url, %address, "flagstaff stream moved to another endpoint");
    }
    core.status.send_modify(|s| {
        s.endpoint = Some(target.url.clone());
        s.address = Some(address);
    });
}

/// A stream that failed with `status`: refused for a key the server does not accept, else
/// lost, with what failed underneath (tonic's own message for a broken connection is only
/// "transport error").
fn ended(status: &tonic::Status) -> Ended {
    use std::error::Error as _;
    let mut reason = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = status.source() {
        reason = format!("{reason}: {}", causes(source));
    }
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Ended::Refused(reason),
        _ => Ended::Lost(reason),
    }
}

/// `error`'s message and those of its sources, `: `-separated, leaving out tonic's bare
/// "transport error" and messages that repeat one already said: a TLS failure reads
/// `invalid peer certificate: UnknownIssuer`, not `transport error`.
pub(crate) fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in std::iter::successors(Some(error), |e| e.source()) {
        let text = e.to_string();
        if text == "transport error" || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    if parts.is_empty() {
        return error.to_string();
    }
    parts.join(": ")
}

/// Compiles a snapshot document off the async threads (10,000 flags take milliseconds).
async fn build_snapshot(document: Document) -> Result<Snapshot, String> {
    tokio::task::spawn_blocking(move || Snapshot::from_document(document))
        .await
        .map_err(|e| format!("snapshot compilation failed: {e}"))?
        .map_err(|e| format!("the server sent an invalid snapshot: {e}"))
}
