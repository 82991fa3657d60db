//! An authenticating reverse proxy in front of flagstaffd's web console, as oauth2-proxy
//! behind nginx would be, for the tests of single sign-on in a browser: every request to it is
//! forwarded to flagstaffd with the header naming the person it has signed in, replacing any
//! the browser sent, and flagstaffd's answer (its status, `Set-Cookie` and `Location` among
//! its headers, its body) is passed back.
//!
//! The browser's `Host` passes on, as nginx's `proxy_set_header Host $host` does, so that
//! flagstaffd takes the proxy's address for its own when it checks a form's `Origin`.
//!
//! It speaks plain HTTP/1.1 on loopback, one request a connection, with the `reqwest` client
//! the tests already have towards flagstaffd. Requests and answers have limits (a head of
//! [`MAX_HEAD`], a body of [`MAX_BODY`]); a request beyond them is answered 400 or 502.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The most bytes of a request's head (its request line and headers) the proxy reads.
pub const MAX_HEAD: usize = 64 * 1024;

/// The most bytes of a request's or an answer's body the proxy passes on.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Headers of one connection alone, never forwarded (RFC 9110 section 7.6.1), with the
/// lengths the proxy writes itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The proxy; it stops when dropped.
#[derive(Debug)]
pub struct SignOnProxy {
    /// Where browsers connect, on loopback.
    pub addr: SocketAddr,
    person: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

/// A request as the browser sent it.
struct Incoming {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl SignOnProxy {
    /// A proxy on a fresh loopback port forwarding to `upstream` over plain HTTP, naming
    /// people in `header`; it names no one until [`sign_in`](Self::sign_in).
    pub async fn start(upstream: SocketAddr, header: &str) -> SignOnProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let person = Arc::new(Mutex::new(None));
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        let forward = Arc::new(Forward {
            upstream: format!("http://{upstream}"),
            header: header.to_ascii_lowercase(),
            person: person.clone(),
            client,
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let forward = forward.clone();
                tokio::spawn(async move { forward.serve(stream).await });
            }
        });
        SignOnProxy { addr, person, task }
    }

    /// From now on, names `person` on every request, as the proxy does once someone signed in
    /// at the identity provider.
    pub fn sign_in(&self, person: &str) {
        *self.person.lock().unwrap_or_else(PoisonError::into_inner) = Some(person.to_owned());
    }

    /// The console's address through the proxy: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SignOnProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What each connection forwards to, and how.
struct Forward {
    upstream: String,
    /// The header naming the person, in lower case.
    header: String,
    person: Arc<Mutex<Option<String>>>,
    client: reqwest::Client,
}

impl Forward {
    /// Reads one request from `stream`, forwards it and writes back the answer.
    async fn serve(&self, mut stream: TcpStream) {
        let answer = match read_request(&mut stream).await {
            Ok(request) => self.forward(request).await,
            Err(why) => plain(400, &why),
        };
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    }

    /// flagstaffd's answer to `request`, with the person named, as bytes to send back.
    async fn forward(&self, request: Incoming) -> Vec<u8> {
        let person = self
            .person
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Ok(method) = reqwest::Method::from_bytes(request.method.as_bytes()) else {
            return plain(400, "not an HTTP method");
        };
        let mut sent = self
            .client
            .request(method, format!("{}{}", self.upstream, request.target));
        for (name, value) in &request.headers {
            let lower = name.to_ascii_lowercase();
            // The browser's own word on who it is never passes.
            if lower != self.header && !HOP_BY_HOP.contains(&lower.as_str()) {
                sent = sent.header(name.as_str(), value.as_str());
            }
        }
        if let Some(person) = person {
            sent = sent.header(self.header.as_str(), person);
        }
        let answer = match sent.body(request.body).send().await {
            Ok(answer) => answer,
            Err(e) => return plain(502, &format!("flagstaffd did not answer: {e}")),
        };
        let status = answer.status();
        let headers = answer.headers().clone();
        let body = match answer.bytes().await {
            Ok(body) if body.len() <= MAX_BODY => body,
            Ok(body) => return plain(502, &format!("an answer of {} bytes", body.len())),
            Err(e) => return plain(502, &format!("flagstaffd's answer broke off: {e}")),
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        for (name, value) in &headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                if let Ok(value) = value.to_str() {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
            }
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        let mut out = out.into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

/// Reads a request's head and its body (of `Content-Length` bytes) from `stream`.
async fn read_request(stream: &mut TcpStream) -> Result<Incoming, String> {
    let mut data = Vec::new();
    let mut chunk = [0; 8192];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if data.len() > MAX_HEAD {
            return Err(format!("a request head over {MAX_HEAD} bytes"));
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err("the request broke off".to_owned()),
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (request_line.next(), request_line.next()) else {
        return Err("no request line".to_owned());
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(Ok(0), |(_, value)| value.parse::<usize>())
        .map_err(|e| format!("Content-Length: {e}"))?;
    if length > MAX_BODY {
        return Err(format!("a request body of {length} bytes, over {MAX_BODY}"));
    }
    let mut body = data.split_off(head_end + 4);
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err("the request's body broke off".to_owned()),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    Ok(Incoming {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body,
    })
}

/// An answer of the proxy's own: `status` with `why` as text.
fn plain(status: u16, why: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} Proxy\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \
         {}\r\nConnection: close\r\n\r\n{why}",
        why.len()
    )
    .into_bytes()
}
