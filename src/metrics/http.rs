//! A minimal HTTP/1.1 responder for `/metrics` and `/health`: one request per
//! connection, answered and closed. Not a web server: no keep-alive, no
//! chunked bodies, no request bodies, GET only.
//!
//! Hostile clients are bounded, not trusted: a connection may send at most
//! [`MAX_REQUEST_BYTES`] of request head within [`REQUEST_TIMEOUT`] and must
//! take its answer within the same time; at most [`MAX_CONNECTIONS`] are
//! served at once, and more are closed as soon as they are accepted. So a
//! client that connects and says nothing, or sends a megabyte, costs one
//! slot and a few KiB for a few seconds, never the sessions' executor
//! (this runs on the metrics thread) nor unbounded memory.

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

/// Bytes of request line and headers read at most; Prometheus sends about 300.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client has to send its request, and again to take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once: a handful of scrapers.
pub const MAX_CONNECTIONS: usize = 8;

/// What a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Health,
    NotFound,
}

/// An answer, ready to send.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Why no request could be read.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The head did not end within [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// Not `METHOD TARGET HTTP/1.x`.
    Malformed,
}

/// The route of a complete request head (up to the blank line).
pub fn route(head: &[u8]) -> Result<Route, RequestError> {
    let line_end = head
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(RequestError::Malformed)?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| RequestError::Malformed)?;
    let mut words = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(RequestError::Malformed);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(RequestError::Malformed);
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        ("GET", "/health") => Route::Health,
        _ => Route::NotFound,
    })
}

/// Where the head ends (just past the blank line), if it has.
pub fn head_end(buffer: &[u8]) -> Option<usize> {
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4);
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The bytes on the wire: status line, headers, body; the connection closes after.
pub fn encode(response: &Response) -> Vec<u8> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut bytes = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(response.body.as_bytes());
    bytes
}

pub fn plain(status: u16, body: impl Into<String>) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

/// Listens on `address` and answers each request with `answer`, until the
/// future is dropped. A failed bind is logged and tried again every 10 s:
/// metrics are not worth stopping the gateway for.
pub async fn serve(address: SocketAddr, answer: &dyn Fn(Route) -> Response) {
    let listener = loop {
        match Async::<TcpListener>::bind(address) {
            Ok(listener) => break listener,
            Err(error) => {
                log::error!("metrics: cannot listen on {address}: {error}; trying again every 10s");
                Timer::after(Duration::from_secs(10)).await;
            }
        }
    };
    log::info!("metrics: serving /metrics and /health on http://{address}");
    let active = Cell::new(0usize);
    let executor = smol::LocalExecutor::new();
    executor
        .run(async {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors, say: do not spin.
                        log::debug!("metrics: accept failed: {error}");
                        Timer::after(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if active.get() >= MAX_CONNECTIONS {
                    // Closed at once: slots free up within REQUEST_TIMEOUT.
                    continue;
                }
                active.set(active.get() + 1);
                let active = &active;
                // Detached: each ends within two REQUEST_TIMEOUTs, and all end
                // with the executor when this future is dropped.
                executor
                    .spawn(async move {
                        answer_one(stream, answer).await;
                        active.set(active.get() - 1);
                    })
                    .detach();
            }
        })
        .await
}

async fn answer_one(mut stream: Async<TcpStream>, answer: &dyn Fn(Route) -> Response) {
    let read = future::or(read_head(&mut stream), async {
        Timer::after(REQUEST_TIMEOUT).await;
        None
    })
    .await;
    let response = match read {
        None => return,
        Some(Ok(route)) => answer(route),
        Some(Err(RequestError::TooLarge)) => plain(431, "request too large\n"),
        Some(Err(RequestError::Malformed)) => plain(400, "bad request\n"),
    };
    let bytes = encode(&response);
    let _ = future::or(
        async {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
        },
        async {
            Timer::after(REQUEST_TIMEOUT).await;
        },
    )
    .await;
    let _ = stream.get_ref().shutdown(std::net::Shutdown::Write);
}

/// Reads until the head ends; `None` when the client goes away first.
async fn read_head(stream: &mut Async<TcpStream>) -> Option<Result<Route, RequestError>> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buffer) {
            return Some(route(&buffer[..end]));
        }
        if buffer.len() >= MAX_REQUEST_BYTES {
            return Some(Err(RequestError::TooLarge));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(head: &str, expected: Result<Route, RequestError>) {
        assert_eq!(route(head.as_bytes()), expected, "{head:?}");
    }

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let ok = |route| Ok(route);
        check(
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            ok(Route::Metrics),
        );
        check("GET /metrics?x=1 HTTP/1.0\r\n\r\n", ok(Route::Metrics));
        check("GET /health HTTP/1.1\n\n", ok(Route::Health));
        check("GET / HTTP/1.1\r\n\r\n", ok(Route::NotFound));
        check("POST /metrics HTTP/1.1\r\n\r\n", ok(Route::NotFound));
        check("GET /metrics/x HTTP/1.1\r\n\r\n", ok(Route::NotFound));
        check("GET /metrics\r\n\r\n", Err(RequestError::Malformed));
        check("GET /metrics SPDY/3\r\n\r\n", Err(RequestError::Malformed));
        check("\r\n\r\n", Err(RequestError::Malformed));
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn a_response_says_its_length_and_closes() {
        let bytes = encode(&plain(503, "drain stuck\n"));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 12\r\nConnection: close\r\n\r\ndrain stuck\n"
        );
    }
}
