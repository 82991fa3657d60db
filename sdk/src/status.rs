//! What a client is doing: connecting, serving live data, or serving data that may be stale.

use std::net::SocketAddr;
use std::time::SystemTime;

/// The state of a client's connection to flagstaffd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected yet: serving a bootstrap or cached snapshot if it has one, else the
    /// caller's defaults (reason `ERROR(CLIENT_NOT_READY)`).
    Connecting,
    /// Connected, holding the server's latest revision.
    Ready,
    /// The connection was lost at `since`; the last snapshot keeps serving while the client
    /// reconnects.
    Stale {
        /// When the connection was lost.
        since: SystemTime,
    },
    /// Closed by [`Client::close`](crate::Client::close) (or every clone dropped).
    Closed,
}

/// Where the snapshot a client serves came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No snapshot yet: evaluations serve the caller's defaults.
    None,
    /// The bootstrap file or document given to the builder.
    Bootstrap,
    /// The cache file of an earlier run.
    Cache,
    /// The server.
    Server,
}

/// A client's state and the data it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// What the connection is doing.
    pub state: State,
    /// Where the snapshot served came from.
    pub source: Source,
    /// The epoch of the data served (empty for a bootstrap snapshot).
    pub epoch: String,
    /// The revision served (0 for a bootstrap snapshot or none).
    pub revision: u64,
    /// The endpoint whose server the stream is open to now, as given to the builder (its own
    /// or a [fallback](crate::ClientBuilder::fallback_endpoint)); `None` while no stream is
    /// open (connecting, stale, closed) and for a client without a server.
    pub endpoint: Option<String>,
    /// The address of that endpoint the stream is connected to: which of the addresses a
    /// host name resolves to serves the client.
    pub address: Option<SocketAddr>,
}

impl Status {
    pub(crate) fn starting(source: Source) -> Status {
        Status {
            state: State::Connecting,
            source,
            epoch: String::new(),
            revision: 0,
            endpoint: None,
            address: None,
        }
    }

    /// Whether the client serves server data (live or, while disconnected, the last it got)
    /// or a snapshot from a bootstrap or cache file.
    pub fn has_data(&self) -> bool {
        self.source != Source::None
    }
}

/// Counters of what a client received, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Full snapshots received and applied.
    pub snapshots: u64,
    /// Revisions applied from deltas.
    pub deltas: u64,
    /// Streams opened (the first and every reconnection).
    pub connections: u64,
    /// Streams abandoned because the server broke the protocol (a gap, an unexpected epoch,
    /// a malformed message): the client resubscribed from scratch.
    pub resyncs: u64,
    /// Streams opened on another endpoint, or another address of one, than the last stream
    /// that a server answered: the client moved after a failure. A client given one endpoint
    /// whose name resolves to one address never fails over.
    pub failovers: u64,
    /// Flag changes not passed to change listeners because their queue was full: a listener
    /// was too slow (see [`Client::on_change`](crate::Client::on_change)).
    pub dropped_notifications: u64,
    /// Usage reports the server accepted (`ReportMetrics` calls, periodic and
    /// [`flush_metrics`](crate::Client::flush_metrics)).
    pub metrics_reports: u64,
    /// Usage reports that failed; their counts were kept for the next report.
    pub metrics_report_failures: u64,
    /// Evaluation counts and events dropped because a bound was reached: windows kept too
    /// long while reports failed, too many distinct flags, variants or event keys in a window
    /// (docs/sdk.md, "Usage metrics and events").
    pub metrics_dropped: u64,
    /// Events not counted because their context had already tracked 10 events of that key in
    /// the minute.
    pub capped_events: u64,
}
