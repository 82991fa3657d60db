//! The metrics endpoint: `GET /metrics` over plain HTTP/1.1, answered by a few lines of tokio
//! rather than a web framework. One request per connection (`Connection: close`), which is
//! all a Prometheus scrape needs; `HEAD` too; 404 for any other path, 405 for any other
//! method, 400 for what is not an HTTP/1.x request head of at most 8 KiB.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Produces the metrics text when scraped.
pub(crate) type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// How long a client may take to send its request head, so that an idle connection does not
/// hold a task forever.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The content type of the Prometheus text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers scrapes on `listener` until `stop` completes; then stops accepting, abandons the
/// scrapes in flight (a scrape is safe to repeat) and closes the listener.
pub(crate) async fn serve(listener: TcpListener, render: Render, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    // One task per connection, so a slow client delays no one else; owned here, so that
    // returning (on stop) aborts them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(answer(stream, render.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, render: Render) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        // Timed out, or the client left: nothing to answer.
        Err(_) | Ok(Err(_)) => return,
    };
    let response = respond(head.as_deref(), &*render);
    // A client that leaves before reading its answer is no concern of the server's.
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// The request head up to its blank line; `None` when it is too long or the connection ends
/// first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// The whole response to a request head (`None`: not a request head at all).
fn respond(head: Option<&[u8]>, render: &dyn Fn() -> String) -> Vec<u8> {
    let request_line = head
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.lines().next());
    let Some((method, target)) = request_line.and_then(parse_request_line) else {
        return response("400 Bad Request", &[], "not an HTTP/1.1 request\n", true);
    };
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    if path != "/metrics" {
        return response(
            "404 Not Found",
            &[],
            "not found: flagstaffd serves its metrics at /metrics\n",
            true,
        );
    }
    match method {
        "GET" => response("200 OK", &[("Content-Type", CONTENT_TYPE)], &render(), true),
        "HEAD" => response(
            "200 OK",
            &[("Content-Type", CONTENT_TYPE)],
            &render(),
            false,
        ),
        _ => response(
            "405 Method Not Allowed",
            &[("Allow", "GET, HEAD")],
            "method not allowed: use GET\n",
            true,
        ),
    }
}

/// `METHOD SP TARGET SP HTTP/1.x` to method and target.
fn parse_request_line(line: &str) -> Option<(&str, &str)> {
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && !method.is_empty()
        && target.starts_with('/')
        && matches!(version, "HTTP/1.0" | "HTTP/1.1");
    valid.then_some((method, target))
}

/// A response with `Content-Length` and `Connection: close`; `send_body` is false for HEAD,
/// whose length is still that of the body it would get.
fn response(status: &str, headers: &[(&str, &str)], body: &str, send_body: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers.iter().any(|(name, _)| *name == "Content-Type") {
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    if send_body {
        out.push_str(body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_to(head: &str) -> String {
        let bytes = respond(Some(head.as_bytes()), &|| "m 1\n".to_owned());
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn get_metrics_answers_the_text() {
        assert_eq!(
            answer_to("GET /metrics HTTP/1.1\r\nHost: x"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\nm 1\n"
        );
        assert!(answer_to("GET /metrics?x=1 HTTP/1.0").starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn head_answers_without_a_body() {
        assert!(answer_to("HEAD /metrics HTTP/1.1")
            .ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn other_paths_methods_and_garbage_are_refused() {
        assert!(answer_to("GET / HTTP/1.1").starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(answer_to("GET /metricsx HTTP/1.1").starts_with("HTTP/1.1 404 Not Found\r\n"));
        let post = answer_to("POST /metrics HTTP/1.1");
        assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n"));
        for garbage in [
            "",
            "GET",
            "GET /metrics",
            "GET /metrics HTTP/2",
            "GET metrics HTTP/1.1",
        ] {
            assert!(
                answer_to(garbage).starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{garbage:?}"
            );
        }
        let none = String::from_utf8(respond(None, &String::new)).expect("utf-8");
        assert!(none.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }
}
