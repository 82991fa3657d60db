//! The client users embed: [`Client`], its constructors (with or without a server) and its
//! public API. The typed evaluation methods are thin: each is [`crate::evaluation`]'s one
//! generic path for its type.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use flagstaff_engine::{Context, Detail, Snapshot};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::cache;
use crate::config::{read_export, ClientBuilder};
use crate::core::Core;
use crate::detail::EvaluationDetail;
use crate::evaluation::per_thread::{evaluate, evaluate_quickly, evaluate_slowly};
use crate::evaluation::{counted, with_detail, with_value, Bool, FlagType, Json, Number, Str};
use crate::listeners::{FlagChange, Listeners, Subscription};
use crate::status::{Source, State, Stats, Status};
use crate::sync;
use crate::Error;

/// A client's background task, as its clones share it: stopped when the last clone drops this
/// (or on [`Client::close`]).
#[derive(Debug)]
struct BackgroundTask {
    /// Turns true to stop the background task; `None` for a client without one.
    stop: Option<watch::Sender<bool>>,
}

impl BackgroundTask {
    fn stop(&self) {
        if let Some(stop) = &self.stop {
            stop.send_replace(true);
        }
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Evaluates flags from the latest snapshot. Cheap to clone: clones share the snapshot and the
/// connection, which closes when the last clone is dropped (or on [`close`](Self::close)).
#[derive(Debug, Clone)]
pub struct Client {
    /// Held here rather than through `task`: evaluations read it, one pointer closer.
    core: Arc<Core>,
    task: Arc<BackgroundTask>,
}

impl Client {
    /// A builder of a client connected to flagstaffd at `endpoint` (e.g.
    /// `http://127.0.0.1:7878`) with an sdk token of the environment to serve. More endpoints
    /// to move to when this one fails: [`ClientBuilder::fallback_endpoint`].
    pub fn builder(endpoint: impl Into<String>, sdk_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint.into(), sdk_key.into())
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
            task: Arc::new(BackgroundTask { stop: None }),
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
        let metrics = self.core().usage.totals();
        Stats {
            snapshots: counters.snapshots.load(Ordering::Relaxed),
            deltas: counters.deltas.load(Ordering::Relaxed),
            connections: counters.connections.load(Ordering::Relaxed),
            resyncs: counters.resyncs.load(Ordering::Relaxed),
            failovers: counters.failovers.load(Ordering::Relaxed),
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
        self.task.stop();
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
        self.copied_value::<Bool>(key, ctx, default)
    }

    /// The number value of flag `key` for `ctx`, or `default`.
    #[inline(never)]
    pub fn number_value(&self, key: &str, ctx: &Context<'_>, default: f64) -> f64 {
        self.copied_value::<Number>(key, ctx, default)
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
        with_value::<Str, R>(self.core(), key, ctx, default, f)
    }

    /// The JSON value of flag `key` for `ctx`, or `default`. Clones the value.
    pub fn json_value(&self, key: &str, ctx: &Context<'_>, default: Value) -> Value {
        // The one form that owns its default: it is returned as it is, not cloned.
        static NONE: Value = Value::Null;
        evaluate(self.core(), key, |s, _, counter| {
            let (value, id) = flagstaff_engine::counting::evaluate::<&Value>(s, key, ctx, &NONE);
            counter.count(id);
            match id {
                Some(_) => value.clone(),
                None => default,
            }
        })
    }

    /// The boolean value of flag `key` for `ctx` with why it was served (variant, reason,
    /// version, bucket). Before the client has data: `default`, with reason
    /// `ERROR(CLIENT_NOT_READY)`.
    pub fn bool_detail(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: bool,
    ) -> EvaluationDetail<bool> {
        self.owned_detail::<Bool>(key, ctx, default)
    }

    /// Like [`bool_detail`](Self::bool_detail), for a string flag.
    pub fn string_detail(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: &str,
    ) -> EvaluationDetail<String> {
        self.owned_detail::<Str>(key, ctx, default)
    }

    /// Like [`bool_detail`](Self::bool_detail), for a number flag.
    pub fn number_detail(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: f64,
    ) -> EvaluationDetail<f64> {
        self.owned_detail::<Number>(key, ctx, default)
    }

    /// Like [`bool_detail`](Self::bool_detail), for a JSON flag. Clones the value.
    pub fn json_detail(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: Value,
    ) -> EvaluationDetail<Value> {
        self.owned_detail::<Json>(key, ctx, &default)
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
        with_detail::<Bool, R>(self.core(), key, ctx, default, f)
    }

    /// Like [`with_bool_detail`](Self::with_bool_detail), for a string flag: the value, like
    /// the variant and the reason, borrowed from the snapshot.
    pub fn with_string_detail<R>(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: &str,
        f: impl FnOnce(Detail<'_, &str>) -> R,
    ) -> R {
        with_detail::<Str, R>(self.core(), key, ctx, default, f)
    }

    /// Like [`with_bool_detail`](Self::with_bool_detail), for a number flag.
    pub fn with_number_detail<R>(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: f64,
        f: impl FnOnce(Detail<'_, f64>) -> R,
    ) -> R {
        with_detail::<Number, R>(self.core(), key, ctx, default, f)
    }

    /// Like [`with_bool_detail`](Self::with_bool_detail), for a JSON flag: the value borrowed
    /// from the snapshot, not cloned.
    pub fn with_json_detail<R>(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: &Value,
        f: impl FnOnce(Detail<'_, &Value>) -> R,
    ) -> R {
        with_detail::<Json, R>(self.core(), key, ctx, default, f)
    }

    /// The value of flag `key` as a `T` that is a plain copy (`bool`, `f64`): the hot path,
    /// with the rare path a function of its own taking the same arguments.
    #[inline(always)]
    fn copied_value<T>(&self, key: &str, ctx: &Context<'_>, default: T::Value<'_>) -> T::Owned
    where
        T: FlagType,
    {
        match evaluate_quickly(
            self.core(),
            key,
            counted::<T, _, _>(key, ctx, default, T::to_owned),
        ) {
            Ok(value) => value,
            Err(_) => self.copied_value_slowly::<T>(key, ctx, default),
        }
    }

    #[cold]
    #[inline(never)]
    fn copied_value_slowly<T>(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: T::Value<'_>,
    ) -> T::Owned
    where
        T: FlagType,
    {
        evaluate_slowly(
            self.core(),
            key,
            counted::<T, _, _>(key, ctx, default, T::to_owned),
        )
    }

    /// The detail of flag `key` as a `T`, owned.
    fn owned_detail<T: FlagType>(
        &self,
        key: &str,
        ctx: &Context<'_>,
        default: T::Value<'_>,
    ) -> EvaluationDetail<T::Owned> {
        with_detail::<T, _>(self.core(), key, ctx, default, |detail| {
            EvaluationDetail::from_engine(detail, T::to_owned)
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
        core.usage.track(event, ctx, snapshot.as_deref());
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
        let Some(flushes) = self.core().usage.flushes() else {
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

impl ClientBuilder {
    /// Starts the client: its one background task connects, keeps the snapshot fresh,
    /// reconnects as needed and reports usage metrics. Runs on the current Tokio runtime when
    /// there is one, else on a thread of its own. Fails only on an unreadable or invalid
    /// bootstrap file; an unusable cache file is logged and ignored. An sdk key that cannot be
    /// sent (control characters, non-ASCII) is refused here, and so is an endpoint that is not
    /// an `http://` or `https://` URL ([`Error::InvalidEndpoint`]) or a TLS CA certificate
    /// with an endpoint that is not `https://`.
    pub fn build(self) -> Result<Client, Error> {
        let endpoints = self.check()?;
        let (snapshot, status) = self.first_snapshot()?;
        let cache = self
            .cache_path()
            .map(|path| cache::Writer::start(path.to_owned()));
        // Flush requests wait for the reporter; a few at a time is plenty.
        let (flushes, flushing) = mpsc::channel(8);
        let core = Arc::new(Core::new(snapshot, status, cache, Some(flushes)));
        let (stop, stopping) = watch::channel(false);
        let task = sync::run(
            core.clone(),
            self.into_settings(endpoints),
            stopping,
            flushing,
        );
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
            task: Arc::new(BackgroundTask { stop: Some(stop) }),
        })
    }
}
