//! A Watch client for tests: subscribes, assembles what the server sends with
//! [`Assembler`], applies it to plain maps (independently of the engine's snapshots, so a
//! test compares two implementations), acknowledges each revision and counts what it got.

use std::collections::BTreeMap;
use std::time::Duration;

use flagstaff_engine::{Flag, Segment, Snapshot};
use flagstaff_proto::pb;
use flagstaff_proto::watch::{Assembler, Update};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::Sync;

/// What a watcher holds: an environment's documents at a revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// The epoch of the state.
    pub epoch: String,
    /// The revision it is at.
    pub revision: u64,
    /// Flags by key.
    pub flags: BTreeMap<String, Flag>,
    /// Segments by key.
    pub segments: BTreeMap<String, Segment>,
}

impl State {
    /// The state of a server-side snapshot.
    pub fn of(epoch: &str, revision: u64, snapshot: &Snapshot) -> State {
        State {
            epoch: epoch.to_owned(),
            revision,
            flags: snapshot
                .flags()
                .map(|f| (f.key.clone(), f.clone()))
                .collect(),
            segments: snapshot
                .segments()
                .map(|s| (s.key.clone(), s.clone()))
                .collect(),
        }
    }
}

/// What a watcher has received, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// Snapshots applied.
    pub snapshots: usize,
    /// Revisions applied from deltas, in order.
    pub deltas: Vec<u64>,
    /// Heartbeats.
    pub heartbeats: usize,
    /// Messages, of any kind.
    pub messages: usize,
    /// The largest message, encoded.
    pub largest_message: usize,
    /// Whether the stream's first update was a snapshot (`None` before its first update).
    pub first_was_snapshot: Option<bool>,
}

/// One Watch stream.
#[derive(Debug)]
pub struct Watcher {
    acks: mpsc::UnboundedSender<pb::WatchRequest>,
    inbound: Streaming<pb::WatchResponse>,
    assembler: Assembler,
    /// What it holds.
    pub state: State,
    /// What it received.
    pub received: Received,
    /// The heartbeat interval the last snapshot announced.
    pub heartbeat_interval_ms: u64,
}

/// The Subscribe of an instance resuming from `state` (or starting fresh from the default).
pub fn subscribe(instance_id: &str, environment: &str, state: &State) -> pb::Subscribe {
    pb::Subscribe {
        epoch: state.epoch.clone(),
        since_revision: state.revision,
        instance_id: instance_id.to_owned(),
        application: "flagstaff-tests".to_owned(),
        sdk_version: "flagstaff-tests/0".to_owned(),
        host: "localhost".to_owned(),
        environment: environment.to_owned(),
    }
}

impl Watcher {
    /// Opens a Watch stream with `subscribe`, starting from `state` (what the client holds).
    pub async fn open(
        client: &mut Sync,
        subscribe: pb::Subscribe,
        state: State,
    ) -> Result<Watcher, Status> {
        let (acks, outbound) = mpsc::unbounded_channel();
        let first = pb::WatchRequest {
            request: Some(pb::watch_request::Request::Subscribe(subscribe)),
        };
        acks.send(first).expect("the stream is open");
        let inbound = client
            .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(
                outbound,
            ))
            .await?
            .into_inner();
        let assembler = if state.epoch.is_empty() {
            Assembler::new()
        } else {
            Assembler::resume(state.epoch.clone(), state.revision)
        };
        Ok(Watcher {
            acks,
            inbound,
            assembler,
            state,
            received: Received::default(),
            heartbeat_interval_ms: 0,
        })
    }

    /// Sends a raw request on the stream (for protocol tests).
    pub fn send(&self, request: pb::WatchRequest) {
        let _ = self.acks.send(request);
    }

    /// Receives the next message and applies it; `Ok(None)` when the stream ended cleanly.
    /// A protocol violation panics: the server must never send one.
    pub async fn step(&mut self) -> Result<Option<()>, Status> {
        let Some(message) = self.inbound.message().await? else {
            return Ok(None);
        };
        self.received.messages += 1;
        self.received.largest_message = self
            .received
            .largest_message
            .max(prost::Message::encoded_len(&message));
        let update = self
            .assembler
            .receive(message)
            .unwrap_or_else(|e| panic!("the server broke the Watch protocol: {e}"));
        match update {
            None => {}
            Some(Update::Snapshot {
                epoch,
                revision,
                heartbeat_interval_ms,
                flags,
                segments,
            }) => {
                self.state = State {
                    epoch,
                    revision,
                    flags: flags.into_iter().map(|f| (f.key.clone(), f)).collect(),
                    segments: segments.into_iter().map(|s| (s.key.clone(), s)).collect(),
                };
                self.heartbeat_interval_ms = heartbeat_interval_ms;
                self.received.snapshots += 1;
                self.received.first_was_snapshot.get_or_insert(true);
                self.ack();
            }
            Some(Update::Delta(delta)) => {
                assert_eq!(
                    delta.revision,
                    self.state.revision + 1,
                    "deltas must be consecutive"
                );
                for key in &delta.deleted_flags {
                    self.state.flags.remove(key);
                }
                for key in &delta.deleted_segments {
                    self.state.segments.remove(key);
                }
                for flag in delta.flags {
                    self.state.flags.insert(flag.key.clone(), flag);
                }
                for segment in delta.segments {
                    self.state.segments.insert(segment.key.clone(), segment);
                }
                for patch in &delta.patches {
                    let segment = self
                        .state
                        .segments
                        .get_mut(&patch.segment)
                        .unwrap_or_else(|| panic!("a patch of unknown segment {}", patch.segment));
                    *segment = Segment {
                        version: Some(delta.revision),
                        ..patch.apply(segment)
                    };
                }
                self.state.revision = delta.revision;
                self.received.deltas.push(delta.revision);
                self.received.first_was_snapshot.get_or_insert(false);
                self.ack();
            }
            Some(Update::Heartbeat { revision }) => {
                assert_eq!(
                    revision, self.state.revision,
                    "a heartbeat ahead of the deltas"
                );
                self.received.heartbeats += 1;
            }
        }
        Ok(Some(()))
    }

    fn ack(&self) {
        let ack = pb::Ack {
            epoch: self.state.epoch.clone(),
            revision: self.state.revision,
        };
        let _ = self.acks.send(pb::WatchRequest {
            request: Some(pb::watch_request::Request::Ack(ack)),
        });
    }

    /// Steps until the watcher holds `revision` of the current epoch; panics after `limit`.
    pub async fn until(&mut self, revision: u64, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.state.revision != revision || self.state.epoch.is_empty() {
            match tokio::time::timeout_at(deadline, self.step()).await {
                Ok(Ok(Some(()))) => {}
                Ok(Ok(None)) => panic!("the stream ended at revision {}", self.state.revision),
                Ok(Err(status)) => panic!("the stream failed: {status}"),
                Err(_) => panic!(
                    "revision {revision} did not arrive within {limit:?} (at {})",
                    self.state.revision
                ),
            }
        }
    }

    /// Steps until the stream ends; returns its final status (OK when it ended cleanly).
    pub async fn until_end(&mut self, limit: Duration) -> Status {
        loop {
            match tokio::time::timeout(limit, self.step()).await {
                Ok(Ok(Some(()))) => {}
                Ok(Ok(None)) => return Status::ok(""),
                Ok(Err(status)) => return status,
                Err(_) => panic!("the stream did not end within {limit:?}"),
            }
        }
    }
}
