//! The client: a snapshot behind an `ArcSwap`, evaluated locally, kept fresh by a background
//! task when connected to flagstaffd, which also reports what the client evaluated.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use flagstaff_engine::{Context, Detail, ErrorKind, Reason, Snapshot};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cache;
use crate::detail::EvaluationDetail;
use crate::listeners::{FlagChange, Listeners, Subscription};
use crate::live::{self, Settings};
use crate::metrics::{Flush, Metrics};
use crate::status::{Source, State, Stats, Status};
use crate::tally::{self, Counting};
use crate::Error;

/// What the client and its background task share.
#[derive(Debug)]
pub(crate) struct Core {
    /// Readers load it without a lock; an update builds a new snapshot off the hot path and
    /// swaps it in (with [`Core::swap_snapshot`]), so no reader ever sees half of a change.
    /// `None` until there is data. Evaluating threads keep the snapshot of the current
    /// generation in a thread-local entry ([`crate::tally`]) and load it again only after a
    /// swap.
    pub(crate) snapshot: ArcSwapOption<Snapshot>,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) stats: Counters,
    pub(crate) listeners: Listeners,
    /// Evaluation counts and events, until reported.
    pub(crate) metrics: Metrics,
    /// Why the last attempt to get the server's data failed; `None` once data arrives.
    /// [`Client::wait_ready`] reports it.
    pub(crate) failure: watch::Sender<Option<Failure>>,
    /// Where the last good snapshot is kept between runs, if anywhere.
    cache: Option<cache::Writer>,
}

/// Why an attempt to get the server's data failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The error and its causes.
    pub(crate) reason: String,
    /// The server refused the sdk key: waiting longer will not help.
    pub(crate) refused: bool,
}

/// [`Stats`], counted by the background task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) snapshots: AtomicU64,
    pub(crate) deltas: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) resyncs: AtomicU64,
}

impl Core {
    pub(crate) fn new(
        snapshot: Option<Arc<Snapshot>>,
        status: Status,
        cache: Option<cache::Writer>,
        flushes: Option<mpsc::Sender<Flush>>,
    ) -> Core {
        Core {
            snapshot: ArcSwapOption::new(snapshot),
            status: watch::Sender::new(status),
            stats: Counters::default(),
            listeners: Listeners::default(),
            metrics: Metrics::new(flushes),
            failure: watch::Sender::new(None),
            cache,
        }
    }

    /// Serves `snapshot` from now on; returns the one it replaces.
    pub(crate) fn swap_snapshot(&self, snapshot: Arc<Snapshot>) -> Option<Arc<Snapshot>> {
        let before = self.snapshot.swap(Some(snapshot));
        // After the store: a thread that sees the new generation loads the new snapshot.
        self.metrics.advance();
        before
    }

    /// Records that the server confirmed (by a heartbeat) that the client holds its current
    /// `revision` of `epoch`: after a resume that missed nothing, the client is ready again.
    pub(crate) fn confirm(&self, epoch: &str, revision: u64) {
        self.status.send_if_modified(|s| {
            if s.state == State::Ready || s.epoch != epoch || s.revision != revision {
                return false;
            }
            tracing::info!(revision, epoch, "flagstaff client ready: up to date");
            self.failure.send_if_modified(|f| f.take().is_some());
            s.state = State::Ready;
            s.source = Source::Server;
            true
        });
    }

    /// Serves `snapshot`, the server's `revision` of `epoch`, from now on; returns the snapshot
    /// it replaces, for [`Listeners::changed`].
    pub(crate) fn publish(
        &self,
        snapshot: Arc<Snapshot>,
        epoch: &str,
        revision: u64,
    ) -> Option<Arc<Snapshot>> {
        let before = self.swap_snapshot(snapshot.clone());
        self.failure.send_if_modified(|f| f.take().is_some());
        if let Some(cache) = &self.cache {
            cache.save(snapshot, epoch, revision);
        }
        self.status.send_if_modified(|s| {
            let became_ready = s.state != State::Ready;
            if became_ready {
                tracing::info!(revision, epoch, "flagstaff client ready");
            }
            s.state = State::Ready;
            s.source = Source::Server;
            if s.epoch != epoch {
                s.epoch = epoch.to_owned();
            }
            s.revision = revision;
            true
        });
        before
    }
}

/// The part of a client that stops its background task when the last clone is dropped.
#[derive(Debug)]
struct Owner {
    /// Turns true to stop the background task; `None` for a client without one.
    stop: Option<watch::Sender<bool>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            stop.send_replace(true);
        }
    }
}

/// Evaluates flags from the latest snapshot. Cheap to clone: clones share the snapshot and the
/// connection, which closes when the last clone is dropped (or on [`close`](Self::close)).
#[derive(Debug, Clone)]
pub struct Client {
    /// Held here rather than through `owner`: evaluations read it, one pointer closer.
    core: Arc<Core>,
    owner: Arc<Owner>,
}

impl Client {
    /// A builder of a client connected to flagstaffd at `endpoint` (e.g.
    /// `http://127.0.0.1:7878`) with an sdk token of the environment to serve.
    pub fn builder(endpoint: impl Into<String>, sdk_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            sdk_key: sdk_key.into(),
            application: String::new(),
            connect_timeout: Duration::from_secs(5),
            tls_ca: None,
            tls_domain: None,
            bootstrap: None,
            cache_file: None,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
            metrics_interval: Duration::from_secs(10),
        }
    }

    /// A client serving `snapshot`, with no server.
    pub fn from_snapshot(snapshot: Snapshot) -> Client {
        let status = Status {
            state: State::Ready,
            ..Status::starting(Source::Bootstrap)
        };
        Client::without_server(Core::new(Some(Arc::new(snapshot)), status, None, None))
    }

    fn without_server(core: Core) -> Client {
        Client::sharing(Arc::new(core))
    }

    /// A client without a background task, serving what `core` holds.
    pub(crate) fn sharing(core: Arc<Core>) -> Client {
        Client {
            core,
            owner: Arc::new(Owner { stop: None }),
        }
    }

    /// A client serving an export document (JSON or YAML) read from `path`, with no server.
    pub fn from_export_file(path: impl AsRef<Path>) -> Result<Client, Error> {
        Ok(Client::from_snapshot(read_export(path.as_ref())?))
    }

    /// A client serving an export document given as JSON or YAML text, with no server.
    pub fn from_export_text(text: &str) -> Result<Client, Error> {
        Ok(Client::from_snapshot(Snapshot::from_text(text)?))
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub(crate) fn listeners(&self) -> &Listeners {
        &self.core().listeners
    }

    /// Replaces the snapshot every clone of this client serves; evaluations in progress finish
    /// on the one they started with. (A connected client replaces it again with the server's
    /// next update.)
    pub fn replace_snapshot(&self, snapshot: Snapshot) {
        let core = self.core();
        let after = Arc::new(snapshot);
        let before = core.swap_snapshot(after.clone());
        let revision = core.status.borrow().revision;
        core.listeners.changed(before.as_deref(), &after, revision);
    }

    /// The snapshot now served, for detailed or repeated evaluations against one consistent
    /// state (`snapshot().bool_detail(...)`); an empty one before the client has any data.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.core()
            .snapshot
            .load_full()
            .unwrap_or_else(|| Arc::new(Snapshot::new()))
    }

    /// Calls `listener` for every flag that may now evaluate differently: added, edited,
    /// removed, or using a segment or prerequisite that changed. Calls run on a thread of the
    /// client's, one at a time, never on the caller's nor on the stream's (a slow listener
    /// delays other listeners, not updates: see [`Stats::dropped_notifications`]). The first
    /// data a client receives is not a change; data that differs from a bootstrap or cache
    /// file is. Dropping the returned [`Subscription`] unregisters the listener.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use flagstaff::TestData;
    ///
    /// let data = TestData::new();
    /// let client = data.client();
    /// let (tx, rx) = mpsc::channel();
    /// let _listening = client.on_change(move |change| tx.send(change.key.clone()).unwrap());
    /// data.set_bool("checkout-v2", true);
    /// let key = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    /// assert_eq!(key, "checkout-v2");
    /// ```
    pub fn on_change(
        &self,
        listener: impl Fn(&FlagChange) + Send + Sync + 'static,
    ) -> Subscription {
        self.listeners().on_flag(None, listener)
    }

    /// Like [`on_change`](Self::on_change), for the changes of flag `key` only.
    pub fn on_flag_change(
        &self,
        key: impl Into<String>,
        listener: impl Fn(&FlagChange) + Send + Sync + 'static,
    ) -> Subscription {
        self.listeners().on_flag(Some(key.into()), listener)
    }

    /// What the client is doing and what it serves.
    pub fn status(&self) -> Status {
        self.core().status.borrow().clone()
    }

    /// What the client has received so far.
    pub fn stats(&self) -> Stats {
        let counters = &self.core().stats;
        let metrics = self.core().metrics.totals();
        Stats {
            snapshots: counters.snapshots.load(Ordering::Relaxed),
            deltas: counters.deltas.load(Ordering::Relaxed),
            connections: counters.connections.load(Ordering::Relaxed),
            resyncs: counters.resyncs.load(Ordering::Relaxed),
            dropped_notifications: self.core().listeners.dropped.load(Ordering::Relaxed),
            metrics_reports: metrics.reports,
            metrics_report_failures: metrics.report_failures,
            metrics_dropped: metrics.dropped,
            capped_events: metrics.capped,
        }
    }

    /// Waits until the client holds the server's data, for at most `timeout`. Evaluations
    /// work before that (on defaults, or on bootstrap or cached data); this is for services
    /// that would rather not start serving until they have the live flags.
    ///
    /// Fails at once with [`Error::Unauthorized`] when flagstaffd refuses the sdk key; after
    /// `timeout`, with [`Error::NotReady`] naming why the last attempt failed (a TLS
    /// certificate not trusted, a connection refused...).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let mut status = self.core().status.subscribe();
        let mut failure = self.core().failure.subscribe();
        let ready = async {
            status
                .wait_for(|s| matches!(s.state, State::Ready | State::Closed))
                .await
                .map(|s| s.state == State::Ready)
                .unwrap_or(false)
        };
        // A refused key will not become valid by waiting: say so at once.
        let refused = async {
            let reason = failure
                .wait_for(|f| f.as_ref().is_some_and(|f| f.refused))
                .await
                .map(|f| f.as_ref().map(|f| f.reason.clone()).unwrap_or_default());
            match reason {
                Ok(reason) => reason,
                // The background task ended; `ready` answers.
                Err(_) => std::future::pending().await,
            }
        };
        let outcome = tokio::time::timeout(timeout, async {
            tokio::select! {
                ready = ready => if ready { Ok(()) } else { Err(Error::Closed) },
                reason = refused => Err(Error::Unauthorized { reason }),
            }
        });
        match outcome.await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::NotReady {
                waited: timeout,
                cause: self
                    .core()
                    .failure
                    .borrow()
                    .as_ref()
                    .map(|f| f.reason.clone()),
            }),
        }
    }

    /// Stops the background task: the client keeps serving its last snapshot, and no longer
    /// updates it. Dropping the last clone does the same. The task reports usage metrics a
    /// last time (waiting at most 2 s for the server) before the state turns `Closed`.
    pub fn close(&self) {
        if let Some(stop) = &self.owner.stop {
            stop.send_replace(true);
        }
    }

    /// The boolean value of flag `key` for `ctx`, or `default` when the flag is missing or not
    /// boolean (or the client has no data yet).
    // Out of line, with the thread-local access, the check, the engine's evaluation and the
    // count inlined into it: inlined into every caller instead, the thread-local access ends
    // up in a shared out-of-line copy, called with its arguments spilled to the stack, which
    // costs more. The rare path is a function of its own taking the same arguments (a jump),
    // so that the hot path builds nothing for it.
    #[inline(never)]
    pub fn bool_value(&self, key: &str, ctx: &Context<'_>, default: bool) -> bool {
        match tally::evaluate_quickly(self.core(), key, bool_value(key, ctx, default)) {
            Ok(value) => value,
            Err(_) => self.bool_value_slowly(key, ctx, default),
        }
    }

    #[cold]
    #[inline(never)]
    fn bool_value_slowly(&self, key: &str, ctx: &Context<'_>, default: bool) -> bool {
        tally::evaluate_slowly(self.core(), key, bool_value(key, ctx, default))
    }

    /// The number value of flag `key` for `ctx`, or `default`.
    #[inline(never)]
    pub fn number_value(&self, key: &str, ctx: &Context<'_>, default: f64) -> f64 {
        match tally::evaluate_quickly(self.core(), key, number_value(key, ctx, default)) {
            Ok(value) => value,
            Err(_) => self.number_value_slowly(key, ctx, default),
        }
    }

    #[cold]
    #[inline(never)]
    fn number_value_slowly(&self, key: &str, ctx: &Context<'_>, default: f64) -> f64 {
        tally::evaluate_slowly(self.core(), key, number_value(key, ctx, default))
    }

    /// The string value of flag `key` for `ctx`, or `default`. Allocates the returned string;
    /// [`Client::with_string`] does not.
    pub fn string_value(&self, key: &str, ctx: &Context<'_>, default: &str) -> String {
        self.with_string(key, ctx, default, str::to_owned)
    }

    /// Calls `f` with the string value of flag `key` for `ctx` (or `default`), borrowed from
    /// the snapshot: no allocation. `f` may evaluate flags itself.
    #[inline]
    pub fn with_string<R>(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: &str,
        f: impl FnOnce(&str) -> R,
    ) -> R {
        tally::evaluate(self.core(), key, |s, _, counting| {
            let (value, id) = s.string_value_id(key, ctx, default);
            counting.count(id);
            f(value)
        })
    }

    /// The JSON value of flag `key` for `ctx`, or `default`. Clones the value.
    pub fn json_value(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: serde_json::Value,
    ) -> serde_json::Value {
        tally::evaluate(self.core(), key, |s, _, counting| {
            let (value, id) = s.json_value_id(key, ctx, default);
            counting.count(id);
            value
        })
    }

    /// Calls `f` with the full detail of a boolean evaluation (variant, reason, version,
    /// bucket), borrowed from the snapshot. Before the client has data: the default, with
    /// reason `ERROR(CLIENT_NOT_READY)`. `f` may evaluate flags itself.
    pub fn with_bool_detail<R>(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: bool,
        f: impl FnOnce(Detail<'_, bool>) -> R,
    ) -> R {
        tally::evaluate(self.core(), key, |s, ready, counting| {
            let (detail, id) = if ready {
                s.bool_detail_id(key, ctx, default)
            } else {
                (not_ready(default), None)
            };
            counting.count(id);
            f(detail)
        })
    }

    /// Counts application event `event` (e.g. `checkout_error`) for `ctx`, for the rollout
    /// guards that watch it (DESIGN.md 6) and usage statistics; the next usage report sends
    /// it. At most 10 events of one key per context key per minute count; for every flag the
    /// server guards on `event`, the event is also attributed to the variant that flag serves
    /// `ctx` now. Takes a lock, and never blocks on I/O.
    pub fn track(&self, event: &str, ctx: &Context<'_>) {
        let core = self.core();
        let snapshot = core.snapshot.load();
        core.metrics.track(event, ctx, snapshot.as_deref());
    }

    /// Closes the current window of usage metrics and reports every window kept now, waiting
    /// for the server's answer, which also updates the flags whose guards `track` attributes
    /// events to. The client reports by itself every [`ClientBuilder::metrics_interval`];
    /// this is for tests and for services that want their counts in before they go on.
    ///
    /// A client without a server (from an export file, a snapshot or [`TestData`](crate::TestData))
    /// counts but never reports: this returns `Ok` at once. Fails when the server does not
    /// answer or refuses the report (the windows are kept for the next report), or when the
    /// client is closed.
    pub async fn flush_metrics(&self) -> Result<(), Error> {
        let Some(flushes) = self.core().metrics.flushes() else {
            return Ok(());
        };
        let (answer, answered) = oneshot::channel();
        flushes.send(answer).await.map_err(|_| Error::Closed)?;
        match answered.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(Error::Report(reason)),
            Err(_) => Err(Error::Closed),
        }
    }
}

impl Client {
    /// The boolean value of flag `key` for `ctx` with why it was served (variant, reason,
    /// version, bucket). Before the client has data: `default`, with reason
    /// `ERROR(CLIENT_NOT_READY)`.
    pub fn bool_detail(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: bool,
    ) -> EvaluationDetail<bool> {
        tally::evaluate(self.core(), key, |s, ready, counting| {
            let (detail, id) = if ready {
                s.bool_detail_id(key, ctx, default)
            } else {
                (not_ready(default), None)
            };
            counting.count(id);
            EvaluationDetail::from_engine(detail, |v| v)
        })
    }

    /// Like [`bool_detail`](Self::bool_detail), for a string flag.
    pub fn string_detail(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: &str,
    ) -> EvaluationDetail<String> {
        tally::evaluate(self.core(), key, |s, ready, counting| {
            let (detail, id) = if ready {
                s.string_detail_id(key, ctx, default)
            } else {
                (not_ready(default), None)
            };
            counting.count(id);
            EvaluationDetail::from_engine(detail, str::to_owned)
        })
    }

    /// Like [`bool_detail`](Self::bool_detail), for a number flag.
    pub fn number_detail(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: f64,
    ) -> EvaluationDetail<f64> {
        tally::evaluate(self.core(), key, |s, ready, counting| {
            let (detail, id) = if ready {
                s.number_detail_id(key, ctx, default)
            } else {
                (not_ready(default), None)
            };
            counting.count(id);
            EvaluationDetail::from_engine(detail, |v| v)
        })
    }

    /// Like [`bool_detail`](Self::bool_detail), for a JSON flag.
    pub fn json_detail(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: serde_json::Value,
    ) -> EvaluationDetail<serde_json::Value> {
        tally::evaluate(self.core(), key, |s, ready, counting| {
            if !ready {
                counting.count(None);
                return EvaluationDetail::from_engine(not_ready(default), |v| v);
            }
            let (detail, id) = s.json_detail_id(key, ctx, &default);
            counting.count(id);
            EvaluationDetail::from_engine(detail, Clone::clone)
        })
    }
}

/// The detail of an evaluation before the client has any data.
fn not_ready<T>(default: T) -> Detail<'static, T> {
    Detail {
        value: default,
        variant: None,
        reason: Reason::Error(ErrorKind::ClientNotReady),
        version: None,
        bucket: None,
    }
}

fn read_export(path: &Path) -> Result<Snapshot, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Snapshot::from_text(&text)?)
}

/// Configures a [`Client`] connected to flagstaffd; [`build`](Self::build) starts it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct ClientBuilder {
    endpoint: String,
    sdk_key: String,
    application: String,
    connect_timeout: Duration,
    tls_ca: Option<String>,
    tls_domain: Option<String>,
    bootstrap: Option<Bootstrap>,
    cache_file: Option<PathBuf>,
    backoff_base: Duration,
    backoff_cap: Duration,
    metrics_interval: Duration,
}

#[derive(Debug, Clone)]
enum Bootstrap {
    File(PathBuf),
    Text(String),
}

impl ClientBuilder {
    /// The name of the application embedding the client, which the server lists among its
    /// SDK instances (e.g. `checkout-service`).
    pub fn application(mut self, name: impl Into<String>) -> Self {
        self.application = name.into();
        self
    }

    /// How long one connection attempt may take (5 s by default).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Trusts this PEM CA certificate for the server's TLS certificate (an `https://`
    /// endpoint is required then).
    pub fn tls_ca_certificate(mut self, pem: impl Into<String>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// The name to check the server's TLS certificate against, when it differs from the
    /// endpoint's host.
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.tls_domain = Some(domain.into());
        self
    }

    /// An export file (DESIGN.md 6a) to serve until the server's data arrives.
    pub fn bootstrap_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.bootstrap = Some(Bootstrap::File(path.into()));
        self
    }

    /// An export document (JSON or YAML) to serve until the server's data arrives.
    pub fn bootstrap_text(mut self, text: impl Into<String>) -> Self {
        self.bootstrap = Some(Bootstrap::Text(text.into()));
        self
    }

    /// Keeps the last good snapshot in `path` (written atomically), and serves it at the next
    /// start until the server answers; the client then resumes from its revision, without a
    /// full snapshot when the server still holds the revisions since.
    pub fn cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache_file = Some(path.into());
        self
    }

    /// The reconnection backoff: the first retry within `base`, doubling to at most `cap`,
    /// each delay drawn at random below that (200 ms and 30 s by default).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base.max(Duration::from_millis(1));
        self.backoff_cap = cap.max(self.backoff_base);
        self
    }

    /// How often the client reports usage metrics (evaluation counts and tracked events) to
    /// the server: 10 s by default, at least 10 ms.
    pub fn metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Starts the client: its one background task connects, keeps the snapshot fresh,
    /// reconnects as needed and reports usage metrics. Runs on the current Tokio runtime when there is one, else on a
    /// thread of its own. Fails only on an unreadable or invalid bootstrap file; an unusable
    /// cache file is logged and ignored. An sdk key that cannot be sent (control characters,
    /// non-ASCII) is refused here, and so is a TLS CA certificate with an endpoint that is not
    /// `https://`.
    pub fn build(self) -> Result<Client, Error> {
        if self
            .sdk_key
            .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
            .is_err()
        {
            return Err(Error::InvalidSdkKey);
        }
        if self.tls_ca.is_some()
            && !self
                .endpoint
                .get(..8)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        {
            return Err(Error::TlsWithoutHttps(self.endpoint));
        }
        let bootstrap = match &self.bootstrap {
            None => None,
            Some(Bootstrap::File(path)) => Some(read_export(path)?),
            Some(Bootstrap::Text(text)) => Some(Snapshot::from_text(text)?),
        };
        let cached = self.cache_file.as_deref().and_then(cache::load);
        let (snapshot, status) = match (cached, bootstrap) {
            (Some(cached), _) => (
                Some(Arc::new(cached.snapshot)),
                Status {
                    epoch: cached.epoch,
                    revision: cached.revision,
                    ..Status::starting(Source::Cache)
                },
            ),
            (None, Some(bootstrap)) => (
                Some(Arc::new(bootstrap)),
                Status::starting(Source::Bootstrap),
            ),
            (None, None) => (None, Status::starting(Source::None)),
        };
        let cache = self.cache_file.clone().map(cache::Writer::start);
        // Flush requests wait for the reporter; a few at a time is plenty.
        let (flushes, flushing) = mpsc::channel(8);
        let core = Arc::new(Core::new(snapshot, status, cache, Some(flushes)));
        let (stop, stopping) = watch::channel(false);
        let settings = Settings {
            endpoint: self.endpoint,
            sdk_key: self.sdk_key,
            application: self.application,
            connect_timeout: self.connect_timeout,
            tls_ca: self.tls_ca,
            tls_domain: self.tls_domain,
            backoff_base: self.backoff_base,
            backoff_cap: self.backoff_cap,
            instance_id: instance_id(),
            host: host(),
            metrics_interval: self.metrics_interval,
        };
        let task = live::run(core.clone(), settings, stopping, flushing);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(task);
            }
            Err(_) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::Runtime)?;
                std::thread::Builder::new()
                    .name("flagstaff".to_owned())
                    .spawn(move || runtime.block_on(task))
                    .map_err(Error::Runtime)?;
            }
        }
        Ok(Client {
            core,
            owner: Arc::new(Owner { stop: Some(stop) }),
        })
    }
}

/// What [`Client::bool_value`] runs on a snapshot: the evaluation, counted.
#[inline(always)]
fn bool_value<'a, 'c>(
    key: &'a str,
    ctx: &'a Context<'c>,
    default: bool,
) -> impl FnOnce(&Snapshot, bool, Counting<'_>) -> bool + use<'a, 'c> {
    move |s, _, counting| {
        let (value, id) = s.bool_value_id(key, ctx, default);
        counting.count(id);
        value
    }
}

/// What [`Client::number_value`] runs on a snapshot: the evaluation, counted.
#[inline(always)]
fn number_value<'a, 'c>(
    key: &'a str,
    ctx: &'a Context<'c>,
    default: f64,
) -> impl FnOnce(&Snapshot, bool, Counting<'_>) -> f64 + use<'a, 'c> {
    move |s, _, counting| {
        let (value, id) = s.number_value_id(key, ctx, default);
        counting.count(id);
        value
    }
}

/// A random id for this client, e.g. for the server's list of instances.
fn instance_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: time and process id still tell instances apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host name, from `HOSTNAME` or `/etc/hostname`; empty when neither says.
fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
