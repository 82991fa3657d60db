//! TLS to the database, for a connection string with `sslmode=require`: a tokio-postgres
//! connector on the rustls (with ring) that serves flagstaffd's own TLS. The database's
//! certificate is always verified, its chain against the trust anchors and its names against
//! the connection string's host, as libpq's `sslmode=verify-full` does: the anchors are the
//! PEM certificates of `--database-ca`, or the system's roots without it.
//!
//! No channel binding is offered (`ChannelBinding::none()`): SCRAM then authenticates without
//! it, as libpq does with its default `channel_binding=prefer` when binding is unavailable.
//! The verified certificate is what ties the connection to the database.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{MapOk, TryFutureExt as _};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, InvalidDnsNameError, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;
use tokio_rustls::rustls;

use super::StoreError;

/// Makes a TLS connector for each connection the pool opens, all sharing one configuration.
#[derive(Clone)]
pub(super) struct MakeRustlsConnect {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeRustlsConnect").finish_non_exhaustive()
    }
}

impl MakeRustlsConnect {
    /// Trusts the PEM certificates of the file `ca`, or the system's roots without one. A file
    /// that cannot be read or holds no usable certificate is an error that names it, as is a
    /// system without roots.
    pub(super) fn new(ca: Option<&Path>) -> Result<MakeRustlsConnect, StoreError> {
        let roots = match ca {
            Some(path) => roots_of(path)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Invalid {
                detail: format!("cannot set up TLS to the database: {e}"),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // What libpq offers, and what PostgreSQL 17 requires of a client that starts with TLS
        // (`sslnegotiation=direct`); older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect {
            config: Arc::new(config),
        })
    }
}

/// The trust anchors of a PEM file of CA certificates.
fn roots_of(path: &Path) -> Result<rustls::RootCertStore, StoreError> {
    let invalid = |problem: String| StoreError::Invalid {
        detail: format!("{}: {problem}", path.display()),
    };
    let pem = std::fs::read(path).map_err(|e| StoreError::Invalid {
        detail: format!(
            "cannot read database CA certificate {}: {e}",
            path.display()
        ),
    })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
    if certificates.is_empty() {
        return Err(invalid(
            "no certificate found: expected a PEM block `-----BEGIN CERTIFICATE-----`".to_owned(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (n, certificate) in certificates.into_iter().enumerate() {
        roots.add(certificate).map_err(|e| {
            invalid(format!(
                "certificate {} cannot be a trust anchor: {e}",
                n + 1
            ))
        })?;
    }
    Ok(roots)
}

/// The system's trust anchors (its CA bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR`). A
/// certificate the system has but rustls cannot use is skipped, as browsers do; none at all
/// is an error, as no database could then be trusted.
fn system_roots() -> Result<rustls::RootCertStore, StoreError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(StoreError::Invalid {
            detail: format!(
                "the database URL asks for TLS (sslmode=require), and this system has no CA \
                 certificates to verify the database's certificate with{}: give the CA \
                 certificate with --database-ca",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({why})")
                }
            ),
        });
    }
    Ok(roots)
}

impl MakeTlsConnect<Socket> for MakeRustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = InvalidDnsNameError;

    /// A connector for the host `domain` of the connection string: its certificate must name
    /// it (a DNS name, or an IP address).
    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, InvalidDnsNameError> {
        Ok(RustlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

/// Starts TLS on one connection to the database.
pub(super) struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = std::io::Error;
    type Future = MapOk<
        tokio_rustls::Connect<Socket>,
        fn(tokio_rustls::client::TlsStream<Socket>) -> RustlsStream,
    >;

    fn connect(self, stream: Socket) -> Self::Future {
        self.connector
            .connect(self.name, stream)
            .map_ok(RustlsStream as fn(_) -> _)
    }
}

/// A connection to the database over TLS.
pub(super) struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
