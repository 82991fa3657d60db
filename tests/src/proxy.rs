//! A TCP proxy that injects network faults between clients and the server: it drops
//! connections, stalls them silently, resets them in the middle of a message, delays them, or
//! refuses new ones.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards everything at once.
    Pass,
    /// Forwards nothing and closes nothing: bytes wait, as on a silently broken path.
    Stall,
    /// Forwards each chunk after this delay.
    Delay(Duration),
    /// Accepts new connections and closes them at once.
    Refuse,
    /// Forwards this many more bytes from the server, then resets the connection (RST).
    ResetAfter(u64),
    /// Forwards a chunk from the client holding these bytes, then closes the connection
    /// before the server's answer comes back: a request that arrived, whose reply is lost.
    CutAfterClientSends(&'static [u8]),
}

/// The proxy; it stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped to drop every open connection.
    cut: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy in front of the test harness's database at `url`
    /// ([`fresh_database`](crate::postgres::fresh_database)), and the URL of that database
    /// through it.
    pub async fn in_front_of_database(url: &str) -> (FaultProxy, String) {
        let rest = url
            .strip_prefix("postgres://postgres@")
            .expect("the harness's URL");
        let (host_port, database) = rest.split_once('/').expect("a database");
        let proxy = FaultProxy::start(host_port.parse().expect("host:port")).await;
        let proxied = format!("postgres://postgres@{}/{database}", proxy.addr);
        (proxy, proxied)
    }

    /// A proxy on a loopback port to `upstream`, passing traffic.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (mode, modes) = watch::channel(Mode::Pass);
        let (cut, cuts) = watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                if *modes.borrow() == Mode::Refuse {
                    drop(client);
                    continue;
                }
                let (modes, cuts) = (modes.clone(), cuts.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, modes, cuts).await;
                    }
                });
            }
        });
        FaultProxy {
            addr,
            mode,
            cut,
            accepted,
            task,
        }
    }

    /// The endpoint clients use, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how traffic is treated, for open connections and new ones.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes every open connection (FIN both ways); new ones are accepted as the mode says.
    pub fn drop_connections(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.send_modify(|n| *n += 1);
    }
}

/// Forwards both ways until either side closes, the proxy cuts the connection, or a reset is
/// due.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    modes: watch::Receiver<Mode>,
    mut cuts: watch::Receiver<u64>,
) {
    cuts.borrow_and_update();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, modes.clone(), false);
    let down = pump(server_read, client_write, modes, true);
    tokio::select! {
        kept = up => {
            if let Some(server) = kept {
                // A request went through and its answer is to be lost: the client's side
                // closes now, the server's a moment later, so that the server does not see
                // the client go before it has answered (into the void).
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    drop(server);
                });
            }
        }
        reset = down => {
            if let Some(stream) = reset {
                // SO_LINGER 0: closing sends RST instead of FIN.
                let _ = stream.as_ref().set_zero_linger();
            }
        }
        _ = cuts.changed() => {}
    }
}

/// Copies `from` to `to` as the mode says. The server-to-client direction (`resets`) returns
/// its writer when a reset is due, so the caller can reset the connection; the other returns
/// its writer when a request went through whose answer is to be lost, so the caller can keep
/// the server's side open a moment.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut modes: watch::Receiver<Mode>,
    resets: bool,
) -> Option<tokio::net::tcp::OwnedWriteHalf> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut budget: Option<u64> = None;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        loop {
            let mode = *modes.borrow_and_update();
            match mode {
                Mode::Pass | Mode::Refuse => break,
                Mode::Delay(delay) => {
                    // Real time: this is the network delay the proxy simulates.
                    tokio::time::sleep(delay).await;
                    break;
                }
                Mode::Stall => {
                    if modes.changed().await.is_err() {
                        return None;
                    }
                }
                Mode::ResetAfter(_) if !resets => break,
                Mode::CutAfterClientSends(_) if resets => break,
                Mode::CutAfterClientSends(pattern) => {
                    if !chunk.windows(pattern.len()).any(|w| w == pattern) {
                        break;
                    }
                    let _ = to.write_all(chunk).await;
                    let _ = to.flush().await;
                    return Some(to);
                }
                Mode::ResetAfter(bytes) => {
                    let left = budget.get_or_insert(bytes);
                    if (chunk.len() as u64) < *left {
                        *left -= chunk.len() as u64;
                        break;
                    }
                    let _ = to.write_all(&chunk[..*left as usize]).await;
                    return Some(to);
                }
            }
        }
        if to.write_all(chunk).await.is_err() {
            return None;
        }
    }
}
