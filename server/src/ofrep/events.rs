//! The body of `GET /ofrep/v1/events`: Server-Sent Events telling OFREP providers when to
//! evaluate again (DESIGN.md section 10, OFREP ADR 0008).
//!
//! For every revision of the environment the stream sends one event:
//!
//! ```text
//! event: message
//! id: <epoch>.<revision>
//! data: {"type":"refetchEvaluation","etag":"<epoch>.<revision>","lastModified":<unix seconds>}
//! ```
//!
//! `lastModified` is the commit time of the revision, from its audit entry as the feed carries
//! it; for an event about the current revision sent without its feed entry (a stale
//! `Last-Event-ID`, below) it is the environment's creation time at revision 0 and otherwise
//! the time the event is sent. The stream opens with `retry: 5000` ([`RECONNECT_DELAY`]), and
//! a quiet stream gets a comment line (`: heartbeat`) every heartbeat interval (15 s,
//! [`HEARTBEAT`]), so proxies keep it open and a provider can tell it is alive.
//!
//! # Where a stream starts
//!
//! - **No `Last-Event-ID`** (or one that does not parse as `<epoch>.<revision>`): at the
//!   current revision, with no event, since a provider connects right after evaluating
//!   everything. A revision committed between that evaluation and the connection would go
//!   unannounced; a handler that wants to close that gap gives the URL it advertises the
//!   `<epoch>.<revision>` the evaluation was made at and passes it here when the request has no
//!   `Last-Event-ID`: it is then a resume like any other.
//! - **`Last-Event-ID` of this epoch, at or before the current revision, and still in the
//!   feed**: one event for each revision after it, in order, then live ones. Never a revision
//!   twice, never one left out.
//! - **Of this epoch but ahead of the current revision** (a provider moving between replicas
//!   that are not equally far): the events after it, as they come.
//! - **Of another epoch, or older than the feed keeps**: one event for the current revision
//!   at once; the provider evaluates everything again anyway, so the revisions in between need
//!   no events of their own.
//!
//! A stream that falls so far behind the feed's ring that it loses its place likewise gets one
//! event for the current revision. Several revisions waiting when the stream is polled go out
//! together, one event each, in one chunk.
//!
//! # How it ends
//!
//! As a Watch stream does (`crate::service::watch`): when the server shuts down
//! ([`Signals`]), when the token is revoked (the [`Tokens::revocations`] counter moves and
//! [`Tokens::is_revoked`] says so), or when the environment is deleted (its feed closes).
//! Browsers reconnect after the `retry` delay: a restarted server resumes them from
//! `Last-Event-ID`, a revoked token's ticket or a deleted environment's is refused (401).
//!
//! The stream is computed as it is polled: nothing is queued for a client that does not read,
//! and a stream's memory is its position plus, while a poll runs, `Arc`s of the feed's ring.
//! Serving it costs no task: dropping the response body drops everything.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt as _};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::auth::Tokens;
use crate::environments::Environment;
use crate::feed::{Backlog, Head};
use crate::service::watch::Signals;
use crate::storage::Store;

/// How often a quiet stream gets a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The reconnection delay the stream announces (`retry:`). Long enough that every browser of a
/// restarting server does not come back at the same instant with nothing to gain (a restart
/// loses no revision: they resume from `Last-Event-ID`), short enough that a change made
/// during a restart still arrives within seconds.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// The longest `Last-Event-ID` read: an epoch (32 hex digits; restored data dirs too), a dot
/// and a revision of at most 20 digits, with room to spare. Longer ones are treated as absent.
const MAX_EVENT_ID_LEN: usize = 128;

/// The `id` of an event, and what `Last-Event-ID` names: a revision of an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventId {
    /// The environment's epoch.
    pub epoch: String,
    /// The revision.
    pub revision: u64,
}

impl EventId {
    /// Reads `<epoch>.<revision>`; `None` for anything else (an epoch is 1 or more ASCII
    /// letters and digits; the revision, decimal digits), so a malformed `Last-Event-ID`
    /// counts as absent.
    pub fn parse(text: &str) -> Option<EventId> {
        if text.len() > MAX_EVENT_ID_LEN {
            return None;
        }
        let (epoch, revision) = text.split_once('.')?;
        if epoch.is_empty()
            || !epoch.bytes().all(|b| b.is_ascii_alphanumeric())
            || revision.is_empty()
            || !revision.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(EventId {
            epoch: epoch.to_owned(),
            revision: revision.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.epoch, self.revision)
    }
}

/// What a stream needs besides its environment: who holds it and what ends it.
#[derive(Debug)]
pub struct Holder<S> {
    /// The tokens, to notice when the stream's is revoked.
    pub tokens: Arc<Tokens<S>>,
    /// The id of the token the stream was opened with (from its ticket).
    pub token_id: String,
    /// The server's shutdown.
    pub signals: Signals,
}

/// The event stream of `env` for the token in `holder`, resuming after `last_event_id` (the
/// request's `Last-Event-ID` header, unparsed), with a comment line after every `heartbeat`
/// of quiet (normally [`HEARTBEAT`]). Items are body chunks for `axum::body::Body::from_stream`.
///
/// Where it starts is decided here, when it is called (see the module docs), so nothing
/// committed between this call and the first poll is missed.
pub fn event_stream<S: Store>(
    env: Arc<Environment>,
    holder: Holder<S>,
    last_event_id: Option<&str>,
    heartbeat: Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    // Subscribe before reading the revision to start from, as Watch does.
    let head = env.feed().subscribe();
    let current = env.current().revision;
    let mut opening = format!("retry: {}\n\n", RECONNECT_DELAY.as_millis());
    let resume = match last_event_id.and_then(EventId::parse) {
        None => Resume::From(current),
        // Another epoch: what the provider holds means nothing here.
        Some(id) if id.epoch != env.epoch => Resume::Stale,
        Some(id) => match env.feed().since(id.revision) {
            // Also when it is ahead of this server: nothing is sent until the feed passes it.
            Backlog::Events(_) => Resume::From(id.revision),
            Backlog::Missing => Resume::Stale,
        },
    };
    let sent = match resume {
        Resume::From(revision) => revision,
        Resume::Stale => {
            opening.push_str(&frame(&env, current, current_time(&env, current)));
            current
        }
    };
    let revocations = holder.tokens.revocations();
    let events = Events {
        env,
        holder,
        revocations,
        head,
        sent,
        heartbeat,
        quiet: Box::pin(tokio::time::sleep(heartbeat)),
        opening: Some(opening),
        replay: true,
    };
    stream::unfold(events, |mut events| async move {
        let chunk = events.next().await?;
        Some((Ok(chunk), events))
    })
    .fuse()
}

/// Where a stream starts.
enum Resume {
    /// After this revision, which the provider knows.
    From(u64),
    /// From the current revision, with an event for it.
    Stale,
}

/// One stream's state between polls.
struct Events<S> {
    env: Arc<Environment>,
    holder: Holder<S>,
    revocations: watch::Receiver<u64>,
    head: watch::Receiver<Head>,
    /// The last revision announced (or known to the provider).
    sent: u64,
    heartbeat: Duration,
    /// Fires after `heartbeat` without a chunk sent.
    quiet: Pin<Box<Sleep>>,
    /// What goes first: the `retry:` line, and an event for a stale `Last-Event-ID`.
    opening: Option<String>,
    /// Whether the feed may hold revisions after `sent` the stream has not looked at yet.
    replay: bool,
}

impl<S: Store> Events<S> {
    /// The next chunk; `None` when the stream ends.
    async fn next(&mut self) -> Option<Bytes> {
        if self.ended() {
            return None;
        }
        if let Some(opening) = self.opening.take() {
            return Some(self.sending(opening));
        }
        // What was published since the last poll, and at the first poll what came after
        // `Last-Event-ID`.
        if std::mem::take(&mut self.replay) || self.head.has_changed().unwrap_or(true) {
            if let Some(chunk) = self.catch_up() {
                return Some(chunk);
            }
        }
        loop {
            tokio::select! {
                // Ending wins over anything else ready at the same time.
                biased;
                () = self.holder.signals.stopped() => return None,
                () = revoked(&mut self.revocations, &self.holder) => return None,
                changed = self.head.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    if let Some(chunk) = self.catch_up() {
                        return Some(chunk);
                    }
                    if self.head.borrow().closed {
                        return None;
                    }
                }
                () = self.quiet.as_mut() => return Some(self.sending(": heartbeat\n\n".to_owned())),
            }
        }
    }

    /// Whether the stream must end now: the server stops, the token is revoked, or the
    /// environment is gone.
    fn ended(&mut self) -> bool {
        let stopping = std::pin::pin!(self.holder.signals.stopped());
        let stopped = futures_util::FutureExt::now_or_never(stopping).is_some();
        stopped || self.holder.tokens.is_revoked(&self.holder.token_id) || self.head.borrow().closed
    }

    /// The events for what the feed holds after `sent`, or one for the current revision when
    /// it no longer holds all of it; `None` (ending the stream) when the environment is gone,
    /// or when there is nothing new (then the caller waits again).
    fn catch_up(&mut self) -> Option<Bytes> {
        let head = *self.head.borrow_and_update();
        if head.closed {
            return None;
        }
        let mut chunk = String::new();
        match self.env.feed().since(self.sent) {
            Backlog::Events(events) => {
                for event in events {
                    let revision = event.revision();
                    if revision <= self.sent {
                        continue;
                    }
                    if revision != self.sent + 1 {
                        // Never so in a feed; if it were, the provider would miss nothing
                        // by evaluating the latest.
                        chunk.clear();
                        self.stale(&mut chunk);
                        break;
                    }
                    chunk.push_str(&frame(&self.env, revision, event.audit.time_ms / 1000));
                    self.sent = revision;
                }
            }
            Backlog::Missing => self.stale(&mut chunk),
        }
        if chunk.is_empty() {
            return None;
        }
        Some(self.sending(chunk))
    }

    /// One event for the current revision, in place of the ones the feed no longer holds.
    fn stale(&mut self, chunk: &mut String) {
        let current = self.env.current().revision;
        tracing::debug!(
            environment = %self.env.key,
            sent = self.sent,
            current,
            "an OFREP event stream fell behind: announcing the current revision"
        );
        chunk.push_str(&frame(&self.env, current, current_time(&self.env, current)));
        self.sent = current;
    }

    /// `text` as a chunk, restarting the quiet timer.
    fn sending(&mut self, text: String) -> Bytes {
        self.quiet.as_mut().reset(Instant::now() + self.heartbeat);
        Bytes::from(text)
    }
}

/// Resolves once the holder's token is revoked.
async fn revoked<S: Store>(revocations: &mut watch::Receiver<u64>, holder: &Holder<S>) {
    loop {
        if holder.tokens.is_revoked(&holder.token_id) {
            return;
        }
        if revocations.changed().await.is_err() {
            // The tokens are gone with the server, which ends the stream by its shutdown.
            std::future::pending::<()>().await;
        }
    }
}

/// The commit time of `revision` if the feed still holds it, in Unix seconds; else the
/// environment's creation time at revision 0, and the time now otherwise.
fn current_time(env: &Environment, revision: u64) -> u64 {
    if revision == 0 {
        return env.created_ms / 1000;
    }
    if let Backlog::Events(events) = env.feed().since(revision - 1) {
        if let Some(event) = events.iter().find(|e| e.revision() == revision) {
            return event.audit.time_ms / 1000;
        }
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The event announcing `revision`.
fn frame(env: &Environment, revision: u64, last_modified: u64) -> String {
    let id = EventId {
        epoch: env.epoch.clone(),
        revision,
    }
    .to_string();
    let data = serde_json::json!({
        "type": "refetchEvaluation",
        "etag": id,
        "lastModified": last_modified,
    });
    format!("event: message\nid: {id}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use flagstaff_engine::{flag_from_value, ChangeSet, Flag};
    use serde_json::json;

    use super::*;
    use crate::environments::{Environments, WriteContext};
    use crate::storage::{Role, SledStore};

    const ENV: &str = "production";

    struct Fixture {
        envs: Environments<SledStore>,
        tokens: Arc<Tokens<SledStore>>,
        token_id: String,
        stop: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    fn fixture_with(feed_capacity: usize) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(SledStore::open(dir.path(), 100).expect("store"));
        let envs = Environments::load_with(store.clone(), feed_capacity).expect("load");
        envs.create(ENV, false).expect("create");
        let tokens = Arc::new(Tokens::load(store).expect("tokens"));
        let (token, _) = tokens.create("web", Role::Sdk, Some(ENV)).expect("token");
        Fixture {
            envs,
            tokens,
            token_id: token.id,
            stop: watch::Sender::new(false),
            _dir: dir,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(crate::feed::DEFAULT_FEED_CAPACITY)
    }

    fn flag(key: &str, enabled: bool) -> Flag {
        flag_from_value(&json!({
            "key": key, "kind": "boolean", "variants": {"on": true, "off": false},
            "off_variant": "off", "enabled": enabled, "default": {"variant": "on"},
        }))
        .expect("flag")
    }

    impl Fixture {
        fn env(&self) -> Arc<Environment> {
            self.envs.get(ENV).expect("environment")
        }

        /// Commits a change through the one commit path; returns its revision.
        fn write(&self, enabled: bool) -> u64 {
            self.envs
                .write(
                    WriteContext {
                        environment: ENV,
                        actor: "alice",
                        operation: "Test",
                        comment: "",
                        confirmed: false,
                        duty: false,
                    },
                    |_| {
                        Ok(ChangeSet {
                            flags: vec![flag("checkout", enabled)],
                            ..ChangeSet::default()
                        })
                    },
                )
                .expect("write")
                .revision
        }

        fn stream(
            &self,
            last_event_id: Option<&str>,
        ) -> Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>> {
            Box::pin(event_stream(
                self.env(),
                Holder {
                    tokens: self.tokens.clone(),
                    token_id: self.token_id.clone(),
                    signals: Signals::new(self.stop.subscribe()),
                },
                last_event_id,
                HEARTBEAT,
            ))
        }

        /// The exact event for `revision`, with its commit time from the audit log.
        fn event(&self, revision: u64) -> String {
            let env = self.env();
            let time_ms = self
                .envs
                .store()
                .audit_head(ENV, revision)
                .expect("read")
                .expect("an audit entry")
                .time_ms;
            let id = format!("{}.{revision}", env.epoch);
            format!(
                "event: message\nid: {id}\ndata: {{\"type\":\"refetchEvaluation\",\
                 \"etag\":\"{id}\",\"lastModified\":{}}}\n\n",
                time_ms / 1000
            )
        }

        fn epoch(&self) -> String {
            self.env().epoch.clone()
        }
    }

    async fn next(
        stream: &mut Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>,
    ) -> Option<String> {
        let chunk = stream.next().await?;
        let Ok(bytes) = chunk;
        Some(String::from_utf8(bytes.to_vec()).expect("UTF-8"))
    }

    const OPENING: &str = "retry: 5000\n\n";
    const HEARTBEAT_LINE: &str = ": heartbeat\n\n";

    #[tokio::test(start_paused = true)]
    async fn every_commit_gets_one_event_in_order() {
        let f = fixture();
        let mut events = f.stream(None);
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        let one = f.write(true);
        assert_eq!(next(&mut events).await, Some(f.event(one)));
        // Two commits before the stream is polled again: both, in one chunk.
        let two = f.write(false);
        let three = f.write(true);
        assert_eq!((one, two, three), (1, 2, 3));
        assert_eq!(
            next(&mut events).await,
            Some(format!("{}{}", f.event(2), f.event(3)))
        );
        // Nothing more but the heartbeat.
        assert_eq!(next(&mut events).await.as_deref(), Some(HEARTBEAT_LINE));
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_between_opening_and_the_first_poll_is_announced() {
        let f = fixture();
        f.write(true);
        let mut events = f.stream(None);
        f.write(false);
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        assert_eq!(next(&mut events).await, Some(f.event(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_a_comment_every_15_seconds() {
        let f = fixture();
        let mut events = f.stream(None);
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        let opened = Instant::now();
        assert_eq!(next(&mut events).await.as_deref(), Some(HEARTBEAT_LINE));
        assert_eq!(opened.elapsed(), HEARTBEAT);
        assert_eq!(next(&mut events).await.as_deref(), Some(HEARTBEAT_LINE));
        assert_eq!(opened.elapsed(), 2 * HEARTBEAT);
        // An event restarts the wait.
        tokio::time::advance(Duration::from_secs(10)).await;
        f.write(true);
        assert_eq!(next(&mut events).await, Some(f.event(1)));
        let evented = Instant::now();
        assert_eq!(next(&mut events).await.as_deref(), Some(HEARTBEAT_LINE));
        assert_eq!(evented.elapsed(), HEARTBEAT);
    }

    #[tokio::test(start_paused = true)]
    async fn last_event_id_replays_what_came_after_it() {
        let f = fixture();
        for enabled in [true, false, true, false] {
            f.write(enabled);
        }
        let mut events = f.stream(Some(&format!("{}.1", f.epoch())));
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        assert_eq!(
            next(&mut events).await,
            Some(format!("{}{}{}", f.event(2), f.event(3), f.event(4)))
        );
        f.write(true);
        assert_eq!(next(&mut events).await, Some(f.event(5)));
        assert_eq!(next(&mut events).await.as_deref(), Some(HEARTBEAT_LINE));

        // Resuming at the current revision: nothing until the next commit.
        let mut events = f.stream(Some(&format!("{}.5", f.epoch())));
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        f.write(false);
        assert_eq!(next(&mut events).await, Some(f.event(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_last_event_id_ahead_of_this_server_waits_for_it() {
        let f = fixture();
        f.write(true);
        let mut events = f.stream(Some(&format!("{}.2", f.epoch())));
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        f.write(false);
        f.write(true);
        assert_eq!(next(&mut events).await, Some(f.event(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_last_event_id_gets_one_event_for_the_current_revision() {
        let f = fixture_with(2);
        for enabled in [true, false, true, false] {
            f.write(enabled);
        }
        let current = format!("{OPENING}{}", f.event(4));
        // Another epoch (a recreated environment, another data dir).
        let mut events = f.stream(Some("0123456789abcdef0123456789abcdef.3"));
        assert_eq!(next(&mut events).await, Some(current.clone()));
        // Older than the feed's ring of 2 keeps.
        let mut events = f.stream(Some(&format!("{}.1", f.epoch())));
        assert_eq!(next(&mut events).await, Some(current.clone()));
        // Then live events, without a duplicate of 4.
        f.write(true);
        assert_eq!(next(&mut events).await, Some(f.event(5)));
        // Still in the ring: a replay.
        let mut events = f.stream(Some(&format!("{}.3", f.epoch())));
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        assert_eq!(
            next(&mut events).await,
            Some(format!("{}{}", f.event(4), f.event(5)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_falls_out_of_the_feed_gets_the_current_revision() {
        let f = fixture_with(2);
        let mut events = f.stream(None);
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        for enabled in [true, false, true, false, true] {
            f.write(enabled);
        }
        assert_eq!(next(&mut events).await, Some(f.event(5)));
        f.write(false);
        assert_eq!(next(&mut events).await, Some(f.event(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_event_at_revision_0_is_dated_by_the_environment() {
        let f = fixture();
        let mut events = f.stream(Some("ffff.9"));
        let env = f.env();
        let id = format!("{}.0", env.epoch);
        let expected = format!(
            "{OPENING}event: message\nid: {id}\ndata: {{\"type\":\"refetchEvaluation\",\
             \"etag\":\"{id}\",\"lastModified\":{}}}\n\n",
            env.created_ms / 1000
        );
        assert_eq!(next(&mut events).await, Some(expected));
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_last_event_id_counts_as_absent() {
        let f = fixture();
        f.write(true);
        for malformed in [
            "",
            "garbage",
            "1",
            ".1",
            "abc.",
            "abc.-1",
            "abc.1.2",
            "abc.99999999999999999999999",
            "ab c.1",
        ] {
            let mut events = f.stream(Some(malformed));
            assert_eq!(
                next(&mut events).await.as_deref(),
                Some(OPENING),
                "{malformed:?}"
            );
            assert_eq!(
                next(&mut events).await.as_deref(),
                Some(HEARTBEAT_LINE),
                "{malformed:?}"
            );
        }
        let long = format!("{}.1", "a".repeat(MAX_EVENT_ID_LEN));
        assert_eq!(EventId::parse(&long), None);
    }

    #[test]
    fn event_ids_read_back() {
        let id = EventId {
            epoch: "0123456789abcdef0123456789abcdef".to_owned(),
            revision: u64::MAX,
        };
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        assert_eq!(
            EventId::parse("e.0"),
            Some(EventId {
                epoch: "e".to_owned(),
                revision: 0
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_ends_when_its_token_is_revoked() {
        let f = fixture();
        let mut events = f.stream(None);
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        // Another token's revocation changes nothing.
        let (other, _) = f
            .tokens
            .create("other", Role::Sdk, Some(ENV))
            .expect("token");
        f.tokens.revoke(&other.id).expect("revoke");
        f.write(true);
        assert_eq!(next(&mut events).await, Some(f.event(1)));
        let waiting = tokio::spawn(async move { next(&mut events).await });
        tokio::task::yield_now().await;
        f.tokens.revoke(&f.token_id).expect("revoke");
        assert_eq!(waiting.await.expect("no panic"), None);
        // A stream opened with a revoked token ends at once.
        let mut events = f.stream(None);
        assert_eq!(next(&mut events).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_ends_when_the_environment_is_deleted() {
        let f = fixture();
        let mut events = f.stream(None);
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        let waiting = tokio::spawn(async move {
            let first = next(&mut events).await;
            (first, next(&mut events).await)
        });
        tokio::task::yield_now().await;
        f.envs.delete(ENV).expect("delete");
        assert_eq!(waiting.await.expect("no panic"), (None, None));
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_ends_at_shutdown() {
        let f = fixture();
        let mut events = f.stream(None);
        assert_eq!(next(&mut events).await.as_deref(), Some(OPENING));
        let waiting = tokio::spawn(async move { next(&mut events).await });
        tokio::task::yield_now().await;
        f.stop.send_replace(true);
        assert_eq!(waiting.await.expect("no panic"), None);
        // Committed revisions do not keep a stream open past shutdown.
        f.write(true);
        let mut events = f.stream(None);
        assert_eq!(next(&mut events).await, None);
    }
}
