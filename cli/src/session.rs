//! A connection to flagstaffd for one command: the endpoint, the token, the environment, and
//! turning the server's errors into one plain line each.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use flagstaff_proto::pb::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::args::{Global, Output};

/// The largest Admin message the server sends (whole environments, big segments).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Where the server writes a fresh data directory's admin token, relative to where it runs.
const DEFAULT_TOKEN_FILE: &str = "flagstaff-data/admin.token";

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// What every server command works with.
pub struct Session {
    pub admin: Admin,
    pub output: Output,
    endpoint: String,
    env: Option<String>,
    yes: bool,
}

impl Session {
    /// Connects to the endpoint of `global` with its token.
    pub async fn connect(global: &Global) -> anyhow::Result<Session> {
        let token = token(global)?;
        let bearer: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow!("the token holds characters that cannot be sent"))?;
        let endpoint = global.endpoint.clone();
        let channel = channel(&endpoint, global.ca_cert.as_deref())?
            .connect()
            .await
            .map_err(|e| connect_error(&endpoint, global.ca_cert.as_deref(), &e))?;
        let admin = AdminClient::with_interceptor(channel, Bearer(bearer))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Session {
            admin,
            output: global.output,
            endpoint,
            env: global.env.clone(),
            yes: global.yes,
        })
    }

    /// The environment the command works in.
    pub fn env(&self) -> anyhow::Result<String> {
        self.env
            .clone()
            .ok_or_else(|| anyhow!("no environment: pass --env NAME or set FLAGSTAFF_ENV"))
    }

    /// The server's error, as one plain sentence with the fix where there is one.
    pub fn error(&self, status: Status) -> anyhow::Error {
        explain(status, &self.endpoint)
    }

    /// Runs a write, confirming it first when the environment is protected: the write is
    /// tried unconfirmed (unless --yes was given), and when the server says the environment
    /// is protected, a person at a terminal is asked; a script must pass --yes.
    pub async fn write<T, F, Fut>(&mut self, what: &str, call: F) -> anyhow::Result<T>
    where
        F: FnMut(Admin, bool) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let env = self.env.clone().unwrap_or_default();
        self.write_in(&env, what, call).await
    }

    /// [`write`](Self::write) to environment `env` rather than --env's.
    pub async fn write_in<T, F, Fut>(
        &mut self,
        env: &str,
        what: &str,
        mut call: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut(Admin, bool) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match call(self.admin.clone(), self.yes).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if !self.yes && is_unconfirmed(&status) => {}
            Err(status) => return Err(self.error(status)),
        }
        if !confirm(&format!("{env} is a protected environment. {what}?"))? {
            bail!("not confirmed: nothing changed (pass --yes to confirm without asking)");
        }
        call(self.admin.clone(), true)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.error(status))
    }

    /// A deletion: asked about once (unless --yes was given), and that answer also confirms
    /// it for a protected environment, so a person is never asked twice.
    pub async fn delete<T, F, Fut>(&mut self, question: &str, mut call: F) -> anyhow::Result<T>
    where
        F: FnMut(Admin, bool) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.confirm_always(question)?;
        call(self.admin.clone(), true)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.error(status))
    }

    /// Asks before something that cannot be undone (deletions), unless --yes was given.
    pub fn confirm_always(&self, question: &str) -> anyhow::Result<()> {
        if self.yes || confirm(question)? {
            Ok(())
        } else {
            bail!("not confirmed: nothing changed (pass --yes to confirm without asking)")
        }
    }
}

/// The endpoint to connect to: plain text for `http://`; TLS for `https://`, trusting the CA
/// certificate of `ca_cert` when given, else the system's roots.
fn channel(endpoint: &str, ca_cert: Option<&Path>) -> anyhow::Result<Endpoint> {
    let invalid =
        || anyhow!("{endpoint:?} is not a valid endpoint URL (e.g. http://127.0.0.1:7878)");
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|_| invalid())?
        .connect_timeout(Duration::from_secs(5));
    let https = match channel.uri().scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(invalid()),
    };
    if !https {
        if let Some(path) = ca_cert {
            bail!(
                "--ca-cert {} (or FLAGSTAFF_CA_CERT) is for TLS, but {endpoint} is plain text: \
                 use https://",
                path.display()
            );
        }
        return Ok(channel);
    }
    let tls = match ca_cert {
        Some(path) => ClientTlsConfig::new().ca_certificate(ca_certificate(path)?),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    channel.tls_config(tls).map_err(|e| {
        anyhow!(
            "cannot set up TLS for {endpoint}: {}{}",
            causes(&e),
            if ca_cert.is_none() {
                " (pass --ca-cert FILE or set FLAGSTAFF_CA_CERT)"
            } else {
                ""
            }
        )
    })
}

/// The PEM certificates of `path`, checked here so that a wrong file is named (tonic would
/// skip what it cannot parse and fail later with an untrusted certificate).
fn ca_certificate(path: &Path) -> anyhow::Result<Certificate> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
    if certificates.is_empty() {
        bail!(
            "{}: no certificate found: expected a PEM block `-----BEGIN CERTIFICATE-----`",
            path.display()
        );
    }
    Ok(Certificate::from_pem(pem))
}

/// One line for a connection that failed: TLS trust, a TLS handshake, or no server, with
/// what went wrong underneath (tonic's own message is only "transport error").
fn connect_error(
    endpoint: &str,
    ca_cert: Option<&Path>,
    error: &tonic::transport::Error,
) -> anyhow::Error {
    let cause = causes(error);
    let https = endpoint
        .get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https:"));
    if cause.contains("CaUsedAsEndEntity") {
        return anyhow!(
            "TLS: flagstaffd at {endpoint} presents a CA certificate as its own ({cause}): \
             serve a certificate signed by the CA, not the CA itself (docs/operations.md, TLS)"
        );
    }
    if cause.contains("invalid peer certificate") {
        let fix = match ca_cert {
            // Signed by a CA the client does not know: which one to trust is the fix.
            _ if !cause.contains("UnknownIssuer") => {
                "its certificate itself is the problem (expired, or not for this host name?)"
                    .to_owned()
            }
            Some(path) => format!(
                "is {} the CA certificate that signed it, and does the certificate name the \
                 endpoint's host?",
                path.display()
            ),
            None => "pass --ca-cert FILE (or set FLAGSTAFF_CA_CERT) with the CA certificate \
                     that signed it"
                .to_owned(),
        };
        return anyhow!(
            "TLS: flagstaffd's certificate at {endpoint} is not trusted ({cause}): {fix}"
        );
    }
    let refused = error_chain(error).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    if refused {
        return anyhow!(
            "cannot reach flagstaffd at {endpoint} (connection refused): is it running? \
             (--endpoint or FLAGSTAFF_ENDPOINT)"
        );
    }
    if cause.contains("timed out") || cause.contains("dns error") {
        return anyhow!(
            "cannot reach flagstaffd at {endpoint} ({cause}): is it running? (--endpoint or \
             FLAGSTAFF_ENDPOINT)"
        );
    }
    if https {
        return anyhow!(
            "TLS handshake with {endpoint} failed ({cause}): does flagstaffd serve TLS there? \
             (a plain-text server takes http://)"
        );
    }
    anyhow!(
        "cannot talk to flagstaffd at {endpoint} ({cause}): if it serves TLS, use https:// \
         (and --ca-cert FILE for a private CA)"
    )
}

/// `error` and its sources.
fn error_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// What went wrong, from the deepest useful cause up: the messages of `error`'s sources,
/// `: `-separated, without tonic's bare "transport error" and repeats.
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in error_chain(error) {
        let text = e.to_string();
        if text == "transport error" || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    if parts.is_empty() {
        return error.to_string();
    }
    parts.join(": ")
}

/// Whether the server refused a write because the environment is protected and the write
/// was not confirmed.
fn is_unconfirmed(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition && status.message().contains("is protected")
}

/// Asks `question` on the terminal; without one, the answer is no, and says how to confirm.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question} Not asked (no terminal): pass --yes to confirm");
    }
    let mut err = std::io::stderr().lock();
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// The token: --token / FLAGSTAFF_TOKEN, else --token-file, else the server's default admin
/// token file in the current directory when readable.
fn token(global: &Global) -> anyhow::Result<String> {
    if let Some(token) = &global.token {
        return Ok(token.trim().to_owned());
    }
    let read = |path: &Path| -> anyhow::Result<String> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        Ok(text.trim().to_owned())
    };
    if let Some(path) = &global.token_file {
        return read(path);
    }
    let default = PathBuf::from(DEFAULT_TOKEN_FILE);
    if default.is_file() {
        return read(&default);
    }
    bail!("no token: pass --token, set FLAGSTAFF_TOKEN, or pass --token-file (flagstaffd writes an admin token to <data-dir>/admin.token)")
}

/// One line for a server error: what went wrong, and the fix where there is one.
pub fn explain(status: Status, endpoint: &str) -> anyhow::Error {
    use std::error::Error as _;
    let message = status.message().trim();
    match status.code() {
        // A failure of the connection itself (the server's own errors carry no source).
        _ if status.source().is_some()
            || (matches!(status.code(), Code::Unavailable | Code::Unknown)
                && (message.contains("transport") || message.contains("connect"))
                // flagstaffd's own: its database cannot be reached, or went away at COMMIT.
                && !message.starts_with("the database ")
                && !message.starts_with("outcome unknown")) =>
        {
            let cause = status.source().map_or_else(|| message.to_owned(), causes);
            if endpoint.starts_with("http:") {
                anyhow!(
                    "cannot talk to flagstaffd at {endpoint} ({cause}): if it serves TLS, use \
                     https:// (and --ca-cert FILE for a private CA)"
                )
            } else {
                anyhow!("cannot reach flagstaffd at {endpoint}: {cause}")
            }
        }
        Code::Unavailable => anyhow!("flagstaffd at {endpoint} is unavailable: {message}"),
        Code::Unauthenticated => {
            anyhow!("not authenticated: {message} (check --token, FLAGSTAFF_TOKEN or --token-file)")
        }
        Code::PermissionDenied => anyhow!("not allowed: {message}"),
        // A version conflict: the server names both versions, whether someone changed the
        // document meanwhile, and what to do.
        Code::Aborted => anyhow!("{message}"),
        Code::InvalidArgument => anyhow!("{message}"),
        _ => anyhow!("{message}"),
    }
}

/// Up to three of `candidates` closest to `key`, for "did you mean" hints.
pub fn closest<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .map(|c| (distance(key, c), c))
        .filter(|(d, c)| *d <= key.len().max(c.len()) / 2 || c.contains(key) || key.contains(c))
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

/// ` (did you mean a or b?)`, or nothing when no key is close.
pub fn did_you_mean(key: &str, candidates: &[String]) -> String {
    let near = closest(key, candidates.iter().map(String::as_str));
    match near.as_slice() {
        [] => String::new(),
        [one] => format!(" (did you mean {one}?)"),
        [init @ .., last] => format!(" (did you mean {} or {last}?)", init.join(", ")),
    }
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(row[j + 1])
            };
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_keys_are_the_near_ones() {
        let keys = ["checkout-v2", "checkout-v3", "banner", "dark-mode"];
        assert_eq!(closest("checkout-v1", keys), ["checkout-v2", "checkout-v3"]);
        assert_eq!(closest("baner", keys), ["banner"]);
        assert!(closest("zzzzzzzz", keys).is_empty());
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
