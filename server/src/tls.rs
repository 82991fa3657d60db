//! TLS for the one port that serves gRPC and HTTP: a certificate chain and its private key in
//! PEM, served with rustls. flagstaffd terminates TLS itself and offers both `h2` and
//! `http/1.1` by ALPN: tonic's own TLS setting offers only `h2`, which would turn away
//! HTTP/1.1 clients such as browsers' `fetch` over HTTP/1.1 or Python's requests. The files
//! are read and parsed when flagstaffd starts, so a wrong path or a wrong file is an error that
//! names the file, before anything is served.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// A certificate chain and private key to serve gRPC and HTTP over TLS with.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Why a certificate or key cannot be used. Each message names the file (or, for PEM given
/// in memory, which of the two it was).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    // The cause is said in the message and not exposed as a source, so that a report of the
    // error with its causes (anyhow's `{:#}`) says it once.
    #[error("cannot read {what} {}: {cause}", path.display())]
    Read {
        /// "TLS certificate" or "TLS private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A file (or PEM text) holds no usable certificate or key.
    #[error("{source_name}: {problem}")]
    Parse {
        /// The file, or "the TLS certificate" / "the TLS private key" for PEM in memory.
        source_name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Both parse, but rustls refuses the pair (for example, the key is not the
    /// certificate's).
    #[error("{cert} and {key} do not make a TLS identity: {detail}")]
    Identity {
        /// The certificate's file or name.
        cert: String,
        /// The key's file or name.
        key: String,
        /// What rustls said.
        detail: String,
    },
}

impl Tls {
    /// Reads a PEM certificate chain (the server's certificate first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1) from files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|cause| TlsError::Read {
                what,
                path: path.to_owned(),
                cause,
            })
        };
        let cert_pem = read("TLS certificate", cert)?;
        let key_pem = read("TLS private key", key)?;
        Tls::parse(
            &cert_pem,
            &key_pem,
            cert.display().to_string(),
            key.display().to_string(),
        )
    }

    /// A certificate chain and private key given as PEM text.
    pub fn from_pem(cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Tls, TlsError> {
        Tls::parse(
            cert.as_ref(),
            key.as_ref(),
            "the TLS certificate".to_owned(),
            "the TLS private key".to_owned(),
        )
    }

    /// The PEM certificate chain of the file `cert`, as flagstaffd would serve it, for a client
    /// on the same host that trusts it (`flagstaffd backup` asking the running flagstaffd):
    /// checked to hold certificates, so that a wrong file is named rather than met later as
    /// an untrusted certificate.
    pub fn read_certificate_chain(cert: &Path) -> Result<Vec<u8>, TlsError> {
        let pem = std::fs::read(cert).map_err(|cause| TlsError::Read {
            what: "TLS certificate",
            path: cert.to_owned(),
            cause,
        })?;
        certificates(&pem, &cert.display().to_string())?;
        Ok(pem)
    }

    /// Checks both PEM texts here, where the error can name them, then builds the rustls
    /// configuration, which catches a key that does not belong to the certificate.
    fn parse(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_name: String,
        key_name: String,
    ) -> Result<Tls, TlsError> {
        let certs = certificates(cert_pem, &cert_name)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            let problem = match e {
                pem::Error::NoItemsFound => "no private key found: expected a PEM block \
                     `-----BEGIN PRIVATE KEY-----` (or RSA PRIVATE KEY, EC PRIVATE KEY)"
                    .to_owned(),
                other => format!("not a PEM private key: {other}"),
            };
            TlsError::Parse {
                source_name: key_name.clone(),
                problem,
            }
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| TlsError::Identity {
                cert: cert_name,
                key: key_name,
                detail: error_chain(&e),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
        })
    }

    /// The rustls configuration connections are accepted with.
    pub(crate) fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

/// The certificates of a PEM chain named `name`: at least one.
fn certificates(pem: &[u8], name: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Parse {
            source_name: name.to_owned(),
            problem: format!("not a PEM certificate chain: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Parse {
            source_name: name.to_owned(),
            problem: "no certificate found: expected a PEM block `-----BEGIN CERTIFICATE-----`"
                .to_owned(),
        });
    }
    Ok(certs)
}

/// What rustls said, with its sources, `: `-separated.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("self-signed certificate");
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    fn message(result: Result<Tls, TlsError>) -> String {
        match result {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_certificate_and_its_key_make_an_identity() {
        let (cert, key) = self_signed();
        Tls::from_pem(cert, key).expect("accepted");
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, _) = self_signed();
        let cert_path = dir.path().join("cert.pem");
        std::fs::write(&cert_path, cert).expect("write");
        let key_path = dir.path().join("missing-key.pem");
        let text = message(Tls::from_pem_files(&cert_path, &key_path));
        assert!(
            text.starts_with(&format!(
                "cannot read TLS private key {}: ",
                key_path.display()
            )),
            "{text}"
        );
    }

    #[test]
    fn swapped_files_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = self_signed();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert).expect("write");
        std::fs::write(&key_path, key).expect("write");
        assert_eq!(
            message(Tls::from_pem_files(&key_path, &cert_path)),
            format!(
                "{}: no certificate found: expected a PEM block `-----BEGIN CERTIFICATE-----`",
                key_path.display()
            )
        );
        let (cert, _) = self_signed();
        assert_eq!(
            message(Tls::from_pem(&cert, &cert)),
            "the TLS private key: no private key found: expected a PEM block \
             `-----BEGIN PRIVATE KEY-----` (or RSA PRIVATE KEY, EC PRIVATE KEY)"
        );
    }

    #[test]
    fn a_certificate_chain_to_trust_is_read_and_a_wrong_file_named() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = self_signed();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, &cert).expect("write");
        std::fs::write(&key_path, key).expect("write");
        assert_eq!(
            Tls::read_certificate_chain(&cert_path).expect("read"),
            cert.as_bytes()
        );
        let missing = dir.path().join("missing.pem");
        let text = Tls::read_certificate_chain(&missing)
            .expect_err("missing")
            .to_string();
        assert!(
            text.starts_with(&format!(
                "cannot read TLS certificate {}: ",
                missing.display()
            )),
            "{text}"
        );
        assert_eq!(
            Tls::read_certificate_chain(&key_path)
                .expect_err("a key")
                .to_string(),
            format!(
                "{}: no certificate found: expected a PEM block `-----BEGIN CERTIFICATE-----`",
                key_path.display()
            )
        );
    }

    #[test]
    fn text_that_is_not_pem_is_refused() {
        let (_, key) = self_signed();
        assert_eq!(
            message(Tls::from_pem("hello", key)),
            "the TLS certificate: no certificate found: expected a PEM block \
             `-----BEGIN CERTIFICATE-----`"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let text = message(Tls::from_pem(cert, other_key));
        assert_eq!(
            text,
            "the TLS certificate and the TLS private key do not make a TLS identity: \
             keys may not be consistent: KeyMismatch"
        );
    }
}
