//! How a client connected to flagstaffd is configured: the [`ClientBuilder`] users fill in
//! (whose `build`, next to the client's other constructors, starts the client), and the [`Settings`] its background
//! task connects and reports with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flagstaff_engine::Snapshot;
use tonic::transport::Uri;

use crate::cache;
use crate::status::{Source, Status};
use crate::Error;

/// Configures a [`Client`](crate::Client) connected to flagstaffd; [`build`](Self::build)
/// starts it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct ClientBuilder {
    /// The builder's endpoint, then the fallbacks, in the order they are tried.
    endpoints: Vec<String>,
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

/// Where the data to serve until the server's arrives comes from.
#[derive(Debug, Clone)]
enum Bootstrap {
    File(PathBuf),
    Text(String),
}

impl ClientBuilder {
    /// The defaults, for [`Client::builder`](crate::Client::builder).
    pub(crate) fn new(endpoint: String, sdk_key: String) -> ClientBuilder {
        ClientBuilder {
            endpoints: vec![endpoint],
            sdk_key,
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
    /// Adds an endpoint to move to when the one in use fails, e.g. another flagstaffd replica
    /// on the same PostgreSQL database (docs/operations.md). Call it once per endpoint: the
    /// client starts with the endpoint given to [`Client::builder`](crate::Client::builder),
    /// and whenever its stream fails, is refused, or stays silent for three heartbeat
    /// intervals, it moves at once to the next endpoint in the order given (after the last,
    /// the first again), resuming from the epoch and revision it holds. It backs off (see
    /// [`backoff`](Self::backoff)) only once every endpoint has failed in a row.
    ///
    /// The builder's own endpoint stays the first one tried, so a client given one endpoint
    /// reads as before and a fallback is an addition, never a replacement. A host name that
    /// resolves to several addresses needs no fallback for each: the client tries each of its
    /// addresses in turn, checking TLS certificates against the name.
    pub fn fallback_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

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

    /// Trusts this PEM CA certificate for the server's TLS certificate (`https://` endpoints
    /// are required then).
    pub fn tls_ca_certificate(mut self, pem: impl Into<String>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// The name to check the servers' TLS certificates against, when it differs from the
    /// endpoints' hosts.
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

    /// Refuses what cannot work: an sdk key that cannot be sent (control characters,
    /// non-ASCII), an endpoint that is not an `http://` or `https://` URL, a TLS CA
    /// certificate with an endpoint that is not `https://`. Returns the endpoints, parsed.
    pub(crate) fn check(&self) -> Result<Vec<Target>, Error> {
        if self
            .sdk_key
            .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
            .is_err()
        {
            return Err(Error::InvalidSdkKey);
        }
        let targets = self
            .endpoints
            .iter()
            .map(|endpoint| Target::parse(endpoint))
            .collect::<Result<Vec<_>, _>>()?;
        if self.tls_ca.is_some() {
            if let Some(plain) = targets.iter().find(|t| !t.https) {
                return Err(Error::TlsWithoutHttps(plain.url.clone()));
            }
        }
        Ok(targets)
    }

    /// What to serve until the server answers: the cache file's snapshot, else the bootstrap
    /// document's, else none; with the status that says which. Fails only on an unreadable or
    /// invalid bootstrap document; an unusable cache file is logged and ignored.
    pub(crate) fn first_snapshot(&self) -> Result<(Option<Arc<Snapshot>>, Status), Error> {
        let bootstrap = match &self.bootstrap {
            None => None,
            Some(Bootstrap::File(path)) => Some(read_export(path)?),
            Some(Bootstrap::Text(text)) => Some(Snapshot::from_text(text)?),
        };
        let cached = self.cache_file.as_deref().and_then(cache::load);
        Ok(match (cached, bootstrap) {
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
        })
    }

    /// The cache file to keep the last good snapshot in, if any.
    pub(crate) fn cache_path(&self) -> Option<&Path> {
        self.cache_file.as_deref()
    }

    /// What the background task connects and reports with, given the endpoints
    /// [`check`](Self::check) parsed.
    pub(crate) fn into_settings(self, endpoints: Vec<Target>) -> Settings {
        Settings {
            endpoints,
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
        }
    }
}

/// How a client connects, and identifies itself to the server.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Never empty: the builder's endpoint comes first.
    pub endpoints: Vec<Target>,
    pub sdk_key: String,
    pub application: String,
    pub connect_timeout: Duration,
    pub tls_ca: Option<String>,
    pub tls_domain: Option<String>,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub instance_id: String,
    pub host: String,
    pub metrics_interval: Duration,
}

/// An endpoint, as given and as the client connects to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// As given, for logs and [`Status::endpoint`].
    pub url: String,
    pub uri: Uri,
    /// What to resolve: the host (bracketed if IPv6) and the port, the scheme's by default.
    pub authority: String,
    pub https: bool,
}

impl Target {
    /// `url` as an endpoint: an `http://` or `https://` URL with a host.
    pub(crate) fn parse(url: &str) -> Result<Target, Error> {
        let invalid = |reason: &str| Error::InvalidEndpoint {
            endpoint: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| invalid("not a URL such as http://127.0.0.1:7878"))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(_) => return Err(invalid("the scheme must be http:// or https://")),
            None => return Err(invalid("not a URL such as http://127.0.0.1:7878")),
        };
        let host = match uri.host() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(invalid("no host")),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Target {
            url: url.to_owned(),
            authority: format!("{host}:{port}"),
            uri,
            https,
        })
    }
}

/// Reads an export document (JSON or YAML) from `path`.
pub(crate) fn read_export(path: &Path) -> Result<Snapshot, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Snapshot::from_text(&text)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_the_schemes_default_port_and_keep_the_host_name() {
        let name = Target::parse("https://flags.internal").expect("valid");
        assert_eq!(name.authority, "flags.internal:443");
        assert!(name.https);
        assert_eq!(name.uri.host(), Some("flags.internal"), "the name stays");
        let plain = Target::parse("http://127.0.0.1:7878").expect("valid");
        assert_eq!(
            (plain.authority.as_str(), plain.https),
            ("127.0.0.1:7878", false)
        );
        let v6 = Target::parse("HTTP://[::1]").expect("valid");
        assert_eq!(v6.authority, "[::1]:80");
        assert_eq!(v6.url, "HTTP://[::1]", "as given");
    }

    #[test]
    fn an_endpoint_that_is_not_an_http_url_is_refused_with_its_reason() {
        for (endpoint, reason) in [
            ("", "not a URL"),
            ("127.0.0.1:7878", "not a URL"),
            ("flags.internal", "not a URL"),
            ("http://", "not a URL"),
            ("http://exa mple", "not a URL"),
            (
                "grpc://flags.internal:7878",
                "the scheme must be http:// or https://",
            ),
        ] {
            match Target::parse(endpoint) {
                Err(Error::InvalidEndpoint {
                    endpoint: named,
                    reason: said,
                }) => {
                    assert_eq!(named, endpoint);
                    assert!(said.starts_with(reason), "{endpoint:?}: {said}");
                }
                other => panic!("{endpoint:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_builder_checks_every_endpoint_in_the_order_given() {
        let builder = ClientBuilder::new("http://a:1".into(), "fs_key".into())
            .fallback_endpoint("https://b:2")
            .fallback_endpoint("http://c:3");
        let targets = builder.check().expect("valid");
        let authorities: Vec<&str> = targets.iter().map(|t| t.authority.as_str()).collect();
        assert_eq!(authorities, ["a:1", "b:2", "c:3"]);

        let broken = builder.clone().fallback_endpoint("not a url").check();
        let error = broken.expect_err("refused");
        assert_eq!(
            error.to_string(),
            "invalid endpoint \"not a url\": not a URL such as http://127.0.0.1:7878"
        );

        // A CA certificate is for TLS: every endpoint must use it.
        let mixed = builder.tls_ca_certificate("PEM").check();
        assert!(
            matches!(&mixed, Err(Error::TlsWithoutHttps(plain)) if plain == "http://a:1"),
            "{mixed:?}"
        );
    }
}
