//! The SDK's errors.

use std::path::PathBuf;

/// What can go wrong setting up or waiting for a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bootstrap file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A bootstrap document is not a valid export document.
    #[error("invalid bootstrap document:\n{0}")]
    Invalid(#[from] flagstaff_engine::ValidationError),
    /// The client did not get the server's data in time.
    #[error("no data from flagstaffd within {waited:?}{}", cause.as_ref().map_or(String::new(), |c| format!(": {c}")))]
    NotReady {
        /// How long the caller waited.
        waited: std::time::Duration,
        /// Why the last attempt to get the data failed (TLS, connection, stream), when one
        /// did: the error and its causes.
        cause: Option<String>,
    },
    /// flagstaffd refused the sdk key (`UNAUTHENTICATED` or `PERMISSION_DENIED`): it is
    /// unknown, revoked, or not an sdk token of an environment. The client keeps retrying, backing
    /// off to its cap, in case the key becomes valid.
    #[error(
        "flagstaffd refused the sdk key: {reason}; give the client the secret of an sdk token \
         of its environment (`flagstaff token create --name NAME --role sdk --env ENV`)"
    )]
    Unauthorized {
        /// What the server said.
        reason: String,
    },
    /// The sdk key holds characters that cannot be sent in a request header.
    #[error("the sdk key must be printable ASCII")]
    InvalidSdkKey,
    /// An endpoint given to the builder is not an `http://` or `https://` URL with a host.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS CA certificate was given with an endpoint that is not `https://`, over which the
    /// client would talk plain text.
    #[error(
        "a TLS CA certificate was given, but the endpoint {0} is not https://: the connection \
         would not use TLS"
    )]
    TlsWithoutHttps(String),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// A usage report (`Client::flush_metrics`) did not reach the server or was refused; its
    /// counts are kept for the next report.
    #[error("usage metrics not reported: {0}")]
    Report(String),
    /// No thread or runtime could be started for the client's background task.
    #[error("cannot start the client's background task: {0}")]
    Runtime(std::io::Error),
}
