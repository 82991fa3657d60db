//! Each environment's feed of committed revisions, for Watch streams and audit tails.
//!
//! A writer publishes every committed revision into a ring of the most recent ones and bumps
//! a `tokio::sync::watch` value; it never waits for a reader. Each stream keeps its own
//! position and, when woken, copies the `Arc`s of the revisions after it out of the ring.
//! Memory is bounded by the ring, shared by every stream: a stream that falls out of the
//! ring is told so ([`Backlog::Missing`]) and catches up another way (a fresh snapshot for
//! Watch, the stored audit log for audit tails).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use flagstaff_proto::pb;
use flagstaff_proto::watch::{pack_delta, DeltaParts, WatchMessage, CHUNK_BUDGET};
use tokio::sync::watch;

use crate::storage::{AuditEntry, Change};

/// How many recent revisions each environment's feed keeps in memory by default.
pub const DEFAULT_FEED_CAPACITY: usize = 1024;

/// One committed revision, as streams receive it.
#[derive(Debug)]
pub struct Event {
    /// The change-log entry.
    pub change: Change,
    /// The audit entry.
    pub audit: AuditEntry,
    /// The Watch messages of the revision, encoded once for every stream.
    pub messages: Vec<WatchMessage>,
}

impl Event {
    /// The event of a committed change, with its Watch messages.
    pub fn new(change: Change, audit: AuditEntry) -> Event {
        let messages = delta_messages(&change)
            .iter()
            .map(WatchMessage::encoded)
            .collect();
        Event {
            change,
            audit,
            messages,
        }
    }

    /// The revision it made.
    pub fn revision(&self) -> u64 {
        self.change.revision
    }
}

/// The Watch messages of a change-log entry.
pub fn delta_messages(change: &Change) -> Vec<pb::WatchResponse> {
    pack_delta(
        &DeltaParts {
            revision: change.revision,
            flags: &change.flags,
            deleted_flags: &change.deleted_flags,
            segments: &change.segments,
            deleted_segments: &change.deleted_segments,
            patches: &change.segment_patches,
        },
        CHUNK_BUDGET,
    )
}

/// What a feed's watchers are told when it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The last revision published.
    pub revision: u64,
    /// The environment was deleted: streams end.
    pub closed: bool,
}

/// The revisions after a position.
#[derive(Debug)]
pub enum Backlog {
    /// Every revision after the position, oldest first (empty when it is current).
    Events(Vec<Arc<Event>>),
    /// Some are no longer in memory.
    Missing,
}

/// One environment's feed.
#[derive(Debug)]
pub struct Feed {
    ring: Mutex<VecDeque<Arc<Event>>>,
    capacity: usize,
    head: watch::Sender<Head>,
}

impl Feed {
    /// A feed at `revision` (what the store holds), keeping up to `capacity` revisions.
    pub fn new(revision: u64, capacity: usize) -> Feed {
        Feed {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            capacity: capacity.max(1),
            head: watch::Sender::new(Head {
                revision,
                closed: false,
            }),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Event>>> {
        // Pushing and popping `Arc`s cannot leave the ring half-changed.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the next revision. Writers call it in revision order (under the
    /// environment's writer lock), after the revision is committed and readable.
    pub fn publish(&self, event: Event) {
        let revision = event.revision();
        {
            let mut ring = self.ring();
            ring.push_back(Arc::new(event));
            while ring.len() > self.capacity {
                ring.pop_front();
            }
        }
        self.head.send_modify(|head| head.revision = revision);
    }

    /// Ends every stream on this feed: the environment is gone.
    pub fn close(&self) {
        self.head.send_modify(|head| head.closed = true);
    }

    /// A receiver woken whenever the feed moves. Subscribe before reading the state a stream
    /// starts from, so that nothing published after that read is missed.
    pub fn subscribe(&self) -> watch::Receiver<Head> {
        self.head.subscribe()
    }

    /// The last revision published.
    pub fn head(&self) -> Head {
        *self.head.borrow()
    }

    /// The revisions after `revision`, if the ring still holds all of them.
    pub fn since(&self, revision: u64) -> Backlog {
        let head = self.head().revision;
        if revision >= head {
            return Backlog::Events(Vec::new());
        }
        let ring = self.ring();
        match ring.front() {
            Some(first) if first.revision() <= revision + 1 => {
                let skip = (revision + 1 - first.revision()) as usize;
                Backlog::Events(ring.iter().skip(skip).cloned().collect())
            }
            _ => Backlog::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: u64) -> Event {
        Event::new(
            Change {
                revision,
                ..Change::default()
            },
            AuditEntry {
                revision,
                time_ms: 0,
                actor: String::new(),
                comment: String::new(),
                operation: String::new(),
                changes: Vec::new(),
            },
        )
    }

    fn revisions(backlog: Backlog) -> Option<Vec<u64>> {
        match backlog {
            Backlog::Events(events) => Some(events.iter().map(|e| e.revision()).collect()),
            Backlog::Missing => None,
        }
    }

    #[test]
    fn serves_what_the_ring_holds_and_reports_what_it_lost() {
        let feed = Feed::new(10, 3);
        assert_eq!(revisions(feed.since(10)), Some(vec![]));
        // Revisions before the feed started were never in it.
        assert_eq!(revisions(feed.since(9)), None);
        for revision in 11..=14 {
            feed.publish(event(revision));
        }
        assert_eq!(feed.head().revision, 14);
        assert_eq!(revisions(feed.since(11)), Some(vec![12, 13, 14]));
        assert_eq!(revisions(feed.since(13)), Some(vec![14]));
        assert_eq!(revisions(feed.since(14)), Some(vec![]));
        // 11 fell out of the ring of 3.
        assert_eq!(revisions(feed.since(10)), None);
    }

    #[tokio::test]
    async fn wakes_subscribers_on_publish_and_close() {
        let feed = Feed::new(0, 8);
        let mut head = feed.subscribe();
        feed.publish(event(1));
        head.changed().await.expect("open");
        assert_eq!(head.borrow_and_update().revision, 1);
        feed.close();
        head.changed().await.expect("open");
        assert!(head.borrow_and_update().closed);
    }
}
