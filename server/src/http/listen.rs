//! Accepting connections on the one port: plain TCP, or TLS that flagstaffd terminates itself
//! (offering `h2` and `http/1.1`, [`Tls`]).

use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt as _};

use crate::tls::Tls;

/// How long a client may take to complete its TLS handshake before the connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted TLS connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// How long accepting pauses after an error: when the process is out of file descriptors,
/// accepting again at once would only spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Plain TCP connections, with Nagle's algorithm off: small responses (an evaluation, a Watch
/// delta) go out at once.
pub(crate) fn plain(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> {
    TcpListenerStream::new(listener).then(|accepted| async move {
        match &accepted {
            // A socket that refuses the option still works, only with more latency.
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
            }
            Err(_) => tokio::time::sleep(ACCEPT_ERROR_PAUSE).await,
        }
        accepted
    })
}

/// TLS connections: each handshake runs in its own task, so a slow or silent client holds up
/// nobody, and is dropped after [`HANDSHAKE_TIMEOUT`]. Failed handshakes are logged at debug
/// level and never reach the server. The listening socket closes when the stream is dropped.
pub(crate) fn tls(
    listener: TcpListener,
    tls: &Tls,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> {
    let acceptor = TlsAcceptor::from(tls.config());
    let (sender, receiver) = mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server stopped taking connections: close the listening socket.
                () = sender.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "a TLS handshake failed"),
                    Err(_) => tracing::debug!("a TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
