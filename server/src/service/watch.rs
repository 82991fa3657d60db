//! `flagstaff.v1.Sync/Watch`, the SDKs' stream, and `Admin/WatchChanges`, the audit tail.
//!
//! Each stream runs in its own task with its own position in the environment's
//! [`Feed`](crate::feed::Feed) and sends into a small bounded channel that tonic drains into
//! HTTP/2. Writers never wait for a stream: a stream that cannot keep up finds, when it next
//! looks, that the feed's ring no longer holds its position, and sends a fresh snapshot
//! instead of the deltas it missed. A stream's memory is the channel plus `Arc`s into the
//! shared ring.
//!
//! Watch ordering (DESIGN.md section 4): the stream subscribes to the feed *before* reading
//! the state it starts from, then skips every revision at or below what it has sent, so no
//! revision is missed or sent twice whatever commits in between.

use std::sync::Arc;
use std::time::Duration;

use flagstaff_engine::quote;
use flagstaff_proto::pb;
use flagstaff_proto::watch::WatchMessage;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{authenticate, oversize, permission_denied, wire};
use crate::auth::{Access, Tokens};
use crate::clients::{Clients, Connection, Identity};
use crate::environments::{Current, Environment, Environments};
use crate::error::ServerError;
use crate::feed::{delta_messages, Backlog, Event};
use crate::storage::{AuditEntry, Store, StoreError, TokenRecord};

/// The default interval between heartbeats on a quiet Watch stream.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// How long a new Watch stream may take to send its Subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages a stream may have waiting for HTTP/2; beyond that its task waits, and the feed's
/// ring decides whether it gets deltas or a snapshot when it can send again.
const STREAM_BUFFER: usize = 16;

/// How long a stream ending with an error waits to hand its status to a slow client.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Audit entries read from the store per step when an audit tail catches up.
const AUDIT_PAGE: usize = 500;

/// What ends every stream from outside: the server's shutdown and token revocation.
#[derive(Debug, Clone)]
pub struct Signals {
    stopping: watch::Receiver<bool>,
}

impl Signals {
    /// Streams end when `stopping` turns true.
    pub fn new(stopping: watch::Receiver<bool>) -> Signals {
        Signals { stopping }
    }

    /// Completes when the server begins to shut down.
    pub async fn stopped(&self) {
        let mut stopping = self.stopping.clone();
        // An error means the server is gone: stopped too.
        let _ = stopping.wait_for(|stop| *stop).await;
    }
}

/// A stream's view of the outside signals, for one token.
struct Interrupts<S> {
    stopping: watch::Receiver<bool>,
    revocations: watch::Receiver<u64>,
    tokens: Arc<Tokens<S>>,
    token_id: String,
}

impl<S: Store> Interrupts<S> {
    fn new(signals: &Signals, tokens: &Arc<Tokens<S>>, token: &TokenRecord) -> Interrupts<S> {
        Interrupts {
            stopping: signals.stopping.clone(),
            revocations: tokens.revocations(),
            tokens: tokens.clone(),
            token_id: token.id.clone(),
        }
    }

    /// Resolves with the status to end the stream with, once the server stops or the token
    /// is revoked.
    async fn interrupted(&mut self) -> Status {
        loop {
            if *self.stopping.borrow_and_update() {
                return Status::unavailable("flagstaffd is shutting down: reconnect and resume");
            }
            if self.tokens.is_revoked(&self.token_id) {
                return Status::unauthenticated("the token has been revoked");
            }
            tokio::select! {
                changed = self.stopping.changed() => {
                    if changed.is_err() {
                        // The server is gone without saying so: nothing will ever be sent.
                        return Status::unavailable("flagstaffd is shutting down");
                    }
                }
                changed = self.revocations.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

/// Why a stream stopped.
enum End {
    /// The client went away: nothing more to say.
    Gone,
    /// End the stream with this status.
    Status(Status),
}

impl From<Status> for End {
    fn from(status: Status) -> End {
        End::Status(status)
    }
}

impl From<ServerError> for End {
    fn from(err: ServerError) -> End {
        End::Status(err.into())
    }
}

/// What a stream's channel carries. Boxed, so that the channel's slots (allocated 32 at a
/// time, and kept by every idle stream) are a pointer each rather than a whole message and
/// status.
type Item<T> = Box<Result<T, Status>>;

/// A stream's receiving half, as tonic serves it.
pub type Outgoing<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// A bounded channel for a stream's messages, and the stream tonic serves from it.
fn channel<T: Send + 'static>() -> (mpsc::Sender<Item<T>>, Outgoing<T>) {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    (
        tx,
        Box::pin(ReceiverStream::new(rx).map(|item: Item<T>| *item)),
    )
}

/// The sending half of a stream, interruptible while it waits for a slow client.
struct Outbox<T, S> {
    tx: mpsc::Sender<Item<T>>,
    interrupts: Interrupts<S>,
}

impl<T, S: Store> Outbox<T, S> {
    async fn send(&mut self, message: T) -> Result<(), End> {
        tokio::select! {
            sent = self.tx.send(Box::new(Ok(message))) => sent.map_err(|_| End::Gone),
            status = self.interrupts.interrupted() => Err(End::Status(status)),
        }
    }

    /// Ends the stream with `end`.
    async fn close(self, end: End) {
        if let End::Status(status) = end {
            // A client that reads nothing is not waited for long.
            let closing = self.tx.send(Box::new(Err(status)));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
        }
    }
}

/// The `Sync/Watch` handler's state.
#[derive(Debug)]
pub struct Watcher<S> {
    envs: Arc<Environments<S>>,
    tokens: Arc<Tokens<S>>,
    clients: Arc<Clients>,
    signals: Signals,
    heartbeat: Duration,
}

/// The stream `Sync/Watch` returns.
pub type WatchStream = Outgoing<WatchMessage>;

impl<S: Store> Watcher<S> {
    /// Watch streams over `envs`, registering instances in `clients`, with a heartbeat every
    /// `heartbeat` on quiet streams.
    pub fn new(
        envs: Arc<Environments<S>>,
        tokens: Arc<Tokens<S>>,
        clients: Arc<Clients>,
        signals: Signals,
        heartbeat: Duration,
    ) -> Watcher<S> {
        Watcher {
            envs,
            tokens,
            clients,
            signals,
            heartbeat,
        }
    }

    /// The environments streamed.
    pub fn environments(&self) -> &Arc<Environments<S>> {
        &self.envs
    }

    /// The tokens requests are checked against.
    pub fn tokens(&self) -> &Arc<Tokens<S>> {
        &self.tokens
    }

    /// Authenticates the call and starts its stream task.
    pub async fn watch(
        self: &Arc<Self>,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let token = authenticate(&self.tokens, &request).await?;
        let (tx, outgoing) = channel();
        let outbox = Outbox {
            tx,
            interrupts: Interrupts::new(&self.signals, &self.tokens, &token),
        };
        let inbound = request.into_inner();
        // The task is `run` itself rather than a block calling it, which would hold every
        // argument twice for the life of the stream.
        tokio::spawn(Watcher::run(self.clone(), Box::new(token), inbound, outbox));
        Ok(Response::new(outgoing))
    }

    /// A Watch stream's task. What it holds while it waits is what every idle stream costs, so
    /// whatever is needed only at the start (the token, the Subscribe) is boxed and dropped
    /// once used, and the rarer paths are boxed where they are taken.
    async fn run(
        self: Arc<Self>,
        token: Box<TokenRecord>,
        mut inbound: Streaming<pb::WatchRequest>,
        mut outbox: Outbox<WatchMessage, S>,
    ) {
        let subscribed = Box::pin(self.subscribe(&token, &mut inbound)).await;
        drop(token);
        let end = match subscribed {
            Ok(Subscribed {
                env,
                start,
                connection,
            }) => {
                let mut stream = Subscription {
                    watcher: &self,
                    env,
                    connection,
                    outbox: &mut outbox,
                    sent: 0,
                };
                match stream.serve(start, &mut inbound).await {
                    Ok(never) => match never {},
                    Err(end) => end,
                }
            }
            Err(end) => end,
        };
        Box::pin(outbox.close(end)).await;
    }

    /// Reads and checks the Subscribe, and registers the instance.
    async fn subscribe(
        &self,
        token: &TokenRecord,
        inbound: &mut Streaming<pb::WatchRequest>,
    ) -> Result<Subscribed, End> {
        let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no Subscribe within {} s of opening the stream",
                    SUBSCRIBE_TIMEOUT.as_secs()
                ))
            })?;
        let subscribe = match first {
            Ok(Some(pb::WatchRequest {
                request: Some(pb::watch_request::Request::Subscribe(subscribe)),
            })) => subscribe,
            Ok(Some(_)) => {
                return Err(Status::invalid_argument(
                    "the first message of a Watch stream must be a Subscribe",
                )
                .into())
            }
            Ok(None) => return Err(End::Gone),
            Err(status) => return Err(inbound_failed(status)),
        };
        if subscribe.instance_id.trim().is_empty() {
            return Err(Status::from(wire::missing("subscribe.instance_id")).into());
        }
        for (field, value) in [
            ("subscribe.instance_id", &subscribe.instance_id),
            ("subscribe.application", &subscribe.application),
            ("subscribe.sdk_version", &subscribe.sdk_version),
            ("subscribe.host", &subscribe.host),
        ] {
            wire::identity(value, field)?;
        }
        let environment = match (&token.environment, subscribe.environment.as_str()) {
            (Some(own), "") => own.clone(),
            (_, "") => return Err(Status::from(wire::missing("subscribe.environment")).into()),
            (_, named) => named.to_owned(),
        };
        if !token.allows(Access::Sync(&environment)) {
            return Err(permission_denied(token, Access::Sync(&environment)).into());
        }
        let env = self.envs.get(&environment)?;
        // A client resuming from a revision another flagstaffd on the database committed (it
        // moved here from that one) resumes from it, once this one has it, rather than going
        // back to a snapshot of an older revision.
        if subscribe.epoch == env.epoch && subscribe.since_revision > env.current().revision {
            self.envs
                .reach(&environment, subscribe.since_revision)
                .await;
        }
        let start = Start {
            same_epoch: subscribe.epoch == env.epoch,
            since: subscribe.since_revision,
        };
        let connection = self.clients.connect(
            &environment,
            Identity {
                instance_id: subscribe.instance_id,
                application: subscribe.application,
                sdk_version: subscribe.sdk_version,
                host: subscribe.host,
            },
            &token.name,
        );
        Ok(Subscribed {
            env,
            start,
            connection,
        })
    }
}

/// A stream whose Subscribe was accepted.
struct Subscribed {
    env: Arc<Environment>,
    start: Start,
    connection: Connection,
}

/// What the Subscribe asked to start from.
#[derive(Debug, Clone, Copy)]
struct Start {
    /// Whether it names the environment's current epoch.
    same_epoch: bool,
    /// The revision the client has, of that epoch (0: none).
    since: u64,
}

/// One subscribed Watch stream.
struct Subscription<'a, S> {
    watcher: &'a Watcher<S>,
    env: Arc<Environment>,
    connection: Connection,
    outbox: &'a mut Outbox<WatchMessage, S>,
    /// The last revision sent in full.
    sent: u64,
}

impl<S: Store> Subscription<'_, S> {
    async fn serve(
        &mut self,
        start: Start,
        inbound: &mut Streaming<pb::WatchRequest>,
    ) -> Result<std::convert::Infallible, End> {
        // Subscribe to the feed before reading the state to start from.
        let mut head = self.env.feed().subscribe();
        let current = self.env.current();
        let since = start.since;
        if start.same_epoch && since > 0 && since <= current.revision {
            self.sent = since;
            // The client holds `since`: so it is shown, and counted by WaitForRevision, also
            // when it missed nothing and so acknowledges nothing.
            self.connection.applied(&self.env.epoch, since);
            // Boxed here and below: what runs once, or rarely, should not make every idle
            // stream's task as big as its largest path.
            Box::pin(self.resume()).await?;
            // Tells the client at once that it is current, rather than at the next heartbeat
            // (it may have missed nothing, and then got nothing).
            let heartbeat = pb::Heartbeat {
                revision: self.sent,
            };
            self.send(pb::watch_response::Response::Heartbeat(heartbeat))
                .await?;
        } else {
            Box::pin(self.snapshot(&current)).await?;
        }
        drop(current);

        let mut inbound_open = true;
        let quiet = tokio::time::sleep(self.watcher.heartbeat);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() || head.borrow_and_update().closed {
                        return Err(ServerError::NotFound(format!(
                            "environment {:?} was deleted", self.env.key
                        )).into());
                    }
                    Box::pin(self.catch_up()).await?;
                    quiet.as_mut().reset(tokio::time::Instant::now() + self.watcher.heartbeat);
                }
                message = inbound.message(), if inbound_open => match message {
                    Ok(Some(request)) => self.received(request)?,
                    // The client closed its half: it sends no more acknowledgements, but may
                    // still read.
                    Ok(None) => inbound_open = false,
                    Err(status) => return Err(inbound_failed(status)),
                },
                () = &mut quiet => {
                    let heartbeat = pb::Heartbeat { revision: self.sent };
                    Box::pin(self.send(pb::watch_response::Response::Heartbeat(heartbeat)))
                        .await?;
                    quiet.as_mut().reset(tokio::time::Instant::now() + self.watcher.heartbeat);
                }
                status = self.outbox.interrupts.interrupted() => return Err(status.into()),
                // The client reset the stream (or its connection went): hyper dropped our
                // response, which a client that half-closed first would otherwise only reveal
                // at the next heartbeat.
                () = self.outbox.tx.closed() => return Err(End::Gone),
            }
        }
    }

    fn received(&mut self, request: pb::WatchRequest) -> Result<(), End> {
        match request.request {
            Some(pb::watch_request::Request::Ack(ack)) => {
                // A client can only have applied what this stream sent it, of this
                // environment's epoch (a stream ends when its environment is deleted).
                if ack.epoch != self.env.epoch {
                    return Err(Status::invalid_argument(format!(
                        "ack of epoch {}, but this stream serves epoch {}",
                        quote(&ack.epoch),
                        self.env.epoch
                    ))
                    .into());
                }
                if ack.revision > self.sent {
                    return Err(Status::invalid_argument(format!(
                        "ack of revision {}, but this stream has sent up to revision {}",
                        ack.revision, self.sent
                    ))
                    .into());
                }
                self.connection.applied(&ack.epoch, ack.revision);
                Ok(())
            }
            Some(pb::watch_request::Request::Subscribe(_)) => Err(Status::invalid_argument(
                "a Watch stream takes one Subscribe, as its first message",
            )
            .into()),
            None => {
                Err(Status::invalid_argument("a WatchRequest must set subscribe or ack").into())
            }
        }
    }

    async fn send(&mut self, response: pb::watch_response::Response) -> Result<(), End> {
        self.outbox
            .send(WatchMessage::Message(pb::WatchResponse {
                response: Some(response),
            }))
            .await
    }

    /// Sends the revisions after `self.sent` the client missed while away: from the feed's
    /// ring, else from the stored change log, else as a snapshot. What is committed while the
    /// stored revisions go out comes from the feed, or the log again if the feed has moved on
    /// meanwhile: a resume inside the retained log never costs a snapshot, however many writes
    /// land while it is served.
    async fn resume(&mut self) -> Result<(), End> {
        loop {
            if let Backlog::Events(events) = self.env.feed().since(self.sent) {
                return self.send_events(events).await;
            }
            let (store, key, since) = (
                self.watcher.envs.store().clone(),
                self.env.key.clone(),
                self.sent,
            );
            let logged = tokio::task::spawn_blocking(move || store.changes_since(&key, since))
                .await
                .map_err(|e| Status::internal(format!("a blocking task failed: {e}")))?;
            let logged = match logged {
                // A damaged change-log entry: what it held is in the current state, which a
                // snapshot carries (and `flagstaffd repair` removes the entry).
                Err(StoreError::Corrupt { what, detail }) => {
                    tracing::warn!(record = %what, error = %detail, "a damaged change-log entry: sending a snapshot");
                    None
                }
                other => other.map_err(ServerError::from)?,
            };
            let changes = match logged {
                Some(changes) if !changes.is_empty() => changes,
                // Trimmed past `since` (or empty, which the feed says it cannot be).
                _ => return self.snapshot(&self.env.current()).await,
            };
            for change in changes {
                if change.revision != self.sent + 1 {
                    return self.snapshot(&self.env.current()).await;
                }
                for message in delta_messages(&change) {
                    self.outbox.send(message.into()).await?;
                }
                self.sent = change.revision;
            }
        }
    }

    /// Sends what the feed holds after `self.sent`, or a fresh snapshot when the stream fell
    /// too far behind for the feed to hold it.
    async fn catch_up(&mut self) -> Result<(), End> {
        match self.env.feed().since(self.sent) {
            Backlog::Events(events) => self.send_events(events).await,
            Backlog::Missing => {
                tracing::debug!(
                    environment = %self.env.key,
                    sent = self.sent,
                    "a Watch stream fell behind: sending a fresh snapshot"
                );
                self.snapshot(&self.env.current()).await
            }
        }
    }

    async fn send_events(&mut self, events: Vec<Arc<Event>>) -> Result<(), End> {
        for event in events {
            if event.revision() <= self.sent {
                continue;
            }
            if event.revision() != self.sent + 1 {
                return self.snapshot(&self.env.current()).await;
            }
            for message in &event.messages {
                self.outbox.send(message.clone()).await?;
            }
            self.sent = event.revision();
        }
        Ok(())
    }

    async fn snapshot(&mut self, current: &Current) -> Result<(), End> {
        let snapshot = &current.snapshot;
        self.send(pb::watch_response::Response::SnapshotBegin(
            pb::SnapshotBegin {
                epoch: self.env.epoch.clone(),
                revision: current.revision,
                heartbeat_interval_ms: self.watcher.heartbeat.as_millis() as u64,
                flag_count: snapshot.len() as u32,
                segment_count: snapshot.segments().count() as u32,
            },
        ))
        .await?;
        for chunk in current.snapshot_chunks().await {
            self.outbox.send(chunk.clone()).await?;
        }
        self.send(pb::watch_response::Response::SnapshotEnd(
            pb::SnapshotEnd {},
        ))
        .await?;
        self.sent = current.revision;
        Ok(())
    }
}

/// How a stream ends when reading the client's next message failed: a message that does not
/// decode or is over its size limit is the client's protocol error (`INVALID_ARGUMENT`, as
/// sync.proto says); anything else means the client or its connection went away.
fn inbound_failed(status: Status) -> End {
    let status = oversize::inbound_error(status, Code::InvalidArgument);
    match status.code() {
        Code::InvalidArgument | Code::ResourceExhausted => {
            Status::invalid_argument(status.message().to_owned()).into()
        }
        _ => End::Gone,
    }
}

/// The stream `Admin/WatchChanges` returns.
pub type ChangesStream = Outgoing<pb::WatchChangesResponse>;

/// Starts the audit tail of `environment` for `token` (already authorized to read it):
/// the stored entries after `since` (none when it is 0), then every new one.
pub fn watch_changes<S: Store>(
    envs: &Arc<Environments<S>>,
    tokens: &Arc<Tokens<S>>,
    signals: &Signals,
    token: &TokenRecord,
    environment: &str,
    since: u64,
) -> Result<Response<ChangesStream>, Status> {
    let env = envs.get(environment)?;
    let (tx, outgoing) = channel();
    let mut outbox = Outbox {
        tx,
        interrupts: Interrupts::new(signals, tokens, token),
    };
    // Subscribe before reading the position, as Watch does.
    let head = env.feed().subscribe();
    let start = if since == 0 {
        env.current().revision
    } else {
        since
    };
    let envs = envs.clone();
    tokio::spawn(async move {
        let end = tail(&envs, &env, head, start, &mut outbox).await;
        outbox.close(end).await;
    });
    Ok(Response::new(outgoing))
}

async fn tail<S: Store>(
    envs: &Arc<Environments<S>>,
    env: &Arc<Environment>,
    mut head: watch::Receiver<crate::feed::Head>,
    mut sent: u64,
    outbox: &mut Outbox<pb::WatchChangesResponse, S>,
) -> End {
    let send_entry = |entry: &AuditEntry| pb::WatchChangesResponse {
        entry: Some(wire::audit_entry(&env.key, entry, |_| true)),
    };
    loop {
        // Catch up: from the ring when it holds everything after `sent`, else from the store
        // (the audit log is never trimmed).
        loop {
            match env.feed().since(sent) {
                Backlog::Events(events) => {
                    let from = sent;
                    for event in events.iter().filter(|e| e.revision() > from) {
                        if let Err(end) = outbox.send(send_entry(&event.audit)).await {
                            return end;
                        }
                        sent = event.revision();
                    }
                    break;
                }
                Backlog::Missing => {
                    let entries = match stored_entries(envs, &env.key, sent).await {
                        Ok(entries) => entries,
                        Err(status) => return End::Status(status),
                    };
                    if entries.is_empty() {
                        break;
                    }
                    for entry in &entries {
                        if let Err(end) = outbox.send(send_entry(entry)).await {
                            return end;
                        }
                        sent = entry.revision;
                    }
                }
            }
        }
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() || head.borrow_and_update().closed {
                    return End::Status(Status::not_found(format!(
                        "environment {:?} was deleted", env.key
                    )));
                }
            }
            status = outbox.interrupts.interrupted() => return End::Status(status),
            () = outbox.tx.closed() => return End::Gone,
        }
    }
}

/// Up to [`AUDIT_PAGE`] stored audit entries after `after`, oldest first.
async fn stored_entries<S: Store>(
    envs: &Arc<Environments<S>>,
    environment: &str,
    after: u64,
) -> Result<Vec<AuditEntry>, Status> {
    let (store, key) = (envs.store().clone(), environment.to_owned());
    let upto = after.saturating_add(AUDIT_PAGE as u64 + 1);
    let mut entries =
        tokio::task::spawn_blocking(move || store.history(&key, None, Some(upto), AUDIT_PAGE))
            .await
            .map_err(|e| Status::internal(format!("a blocking task failed: {e}")))?
            .map_err(ServerError::from)?;
    entries.retain(|e| e.revision > after);
    entries.reverse();
    Ok(entries)
}
