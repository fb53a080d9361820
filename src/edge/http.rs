//! A minimal HTTP/1.1 server for operations: `GET /metrics` (Prometheus text 0.0.4) and `GET /healthz`.
//!
//! No HTTP crate: the surface is tiny and closed. One request per connection (`Connection: close`).
//!
//! ```text
//!   accept loop ── acquire a permit (at most `max_connections` open) ── accept ── spawn:
//!       read the request head (≤ 8 KiB, ≤ 5 s)
//!         ├─ timeout            → 408, close
//!         ├─ head too large     → 431, close
//!         ├─ not HTTP/1.x       → 400 (505 for another version), close
//!         └─ request → route()  → response, close
//!   shutdown flips to true (or its sender is dropped) → stop accepting; connections in flight finish
//! ```
//!
//! Routes: `/metrics`, `/healthz` (GET and HEAD; other methods 405), everything else 404.
//! Later issues hang more off `route`: `/cti` (a WebSocket upgrade for CTI integrations) and the
//! supervisors' wallboard page — see the comments there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::metrics::Metrics;

/// Limits of the HTTP server.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Largest request head (request line + headers) accepted.
    pub max_head: usize,
    /// Time allowed to send the whole request head.
    pub head_timeout: Duration,
    /// Time allowed to write the response.
    pub write_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 256,
            max_head: 8 * 1024,
            head_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// What the handlers can see. Later issues add the CTI hub and wallboard state here.
struct App {
    metrics: Arc<Metrics>,
}

/// Serves until `shutdown` becomes true (or its sender is dropped) with the default [`HttpConfig`].
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) {
    serve_with(listener, metrics, HttpConfig::default(), shutdown).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    cfg: HttpConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Arc::new(App { metrics });
    let cfg = Arc::new(cfg);
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, "http: serving /metrics and /healthz");
    loop {
        let permit = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let _permit = permit;
            handle(stream, peer, &app, &cfg).await;
        });
    }
    tracing::info!(addr = ?local, "http: stopped accepting");
}

/// Resolves once shutdown is requested: the value is true, or the sender is gone (nobody can ask us
/// to stop any more, so the owner has stopped).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// One connection: read one head, answer, close.
async fn handle(mut stream: TcpStream, peer: SocketAddr, app: &App, cfg: &HttpConfig) {
    let resp = match tokio::time::timeout(cfg.head_timeout, read_head(&mut stream, cfg.max_head)).await {
        Err(_) => Response::text(408, "Request Timeout", "request head not received in time\n"),
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::Io(e))) => {
            tracing::debug!(%peer, error = %e, "http: read failed");
            return;
        }
        Ok(Err(HeadError::TooLarge)) => {
            Response::text(431, "Request Header Fields Too Large", "request head too large\n")
        }
        Ok(Ok(head)) => match Request::parse(&head) {
            Ok(req) => route(&req, app),
            Err(RequestError::Version) => {
                Response::text(505, "HTTP Version Not Supported", "only HTTP/1.0 and HTTP/1.1\n")
            }
            Err(e) => {
                tracing::debug!(%peer, error = ?e, "http: bad request");
                Response::text(400, "Bad Request", "bad request\n")
            }
        },
    };
    let bytes = resp.encode();
    let write = async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(cfg.write_timeout, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "http: write failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "http: write timed out");
            return;
        }
    }
    // Lingering close: closing with unread input (a body, the rest of an oversized head) makes the
    // kernel send RST, which can destroy the response in the client's receive buffer. Read and discard
    // for a moment so the client sees our FIN after the response.
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while total < 256 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Maps a parsed request to a response.
///
/// Extension points for later issues:
/// - `/cti`: a WebSocket upgrade (RFC 6455). Check `Upgrade: websocket`, `Connection: upgrade`,
///   `Sec-WebSocket-Version: 13` and `Sec-WebSocket-Key` from `req.header(..)`, answer `101` with
///   `Sec-WebSocket-Accept`, and hand the `TcpStream` (plus any bytes read past the head) to the CTI hub
///   instead of closing. That needs `route` to return an enum { Respond(Response), Upgrade(..) } and
///   `read_head` to return the leftover bytes; both are local changes here.
/// - `/` or `/wallboard`: the supervisors' wallboard page (static HTML that connects to `/cti`).
fn route(req: &Request<'_>, app: &App) -> Response {
    let head_only = req.method == "HEAD";
    let get_like = req.method == "GET" || head_only;
    let resp = match req.path() {
        "/metrics" if get_like => {
            Response::new(200, "OK", "text/plain; version=0.0.4; charset=utf-8", app.metrics.render_prometheus())
        }
        "/healthz" if get_like => Response::text(200, "OK", "ok"),
        "/metrics" | "/healthz" => {
            let mut r = Response::text(405, "Method Not Allowed", "method not allowed\n");
            r.extra.push(("Allow", "GET, HEAD".into()));
            r
        }
        // "/cti" => upgrade (see above).
        // "/" | "/wallboard" => wallboard page (see above).
        _ => Response::text(404, "Not Found", "not found\n"),
    };
    if head_only {
        resp.without_body()
    } else {
        resp
    }
}

// ---- reading the head ---------------------------------------------------------------------------

#[derive(Debug)]
enum HeadError {
    /// The peer closed before sending a complete head (including: sent nothing at all).
    Closed,
    TooLarge,
    Io(std::io::Error),
}

/// Reads until the blank line ending the head. Returns the head without the final empty line.
async fn read_head(stream: &mut TcpStream, max: usize) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[scan_from..]) {
            let end = scan_from + end;
            if end > max {
                return Err(HeadError::TooLarge);
            }
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > max {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Index just past the head's terminating blank line (`\r\n\r\n`, or bare `\n\n` as RFC 9112 2.2 allows).
fn head_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if b[i..].starts_with(b"\n\n") || b[i..].starts_with(b"\n\r\n") {
            Some(i + if b[i + 1] == b'\r' { 3 } else { 2 })
        } else {
            None
        }
    })
}

// ---- parsing ------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
enum RequestError {
    NotUtf8,
    RequestLine,
    Method,
    Target,
    Version,
    HeaderLine,
    MissingHost,
}

/// A parsed request head, borrowing from the bytes read.
#[derive(Debug)]
struct Request<'a> {
    method: &'a str,
    /// The request-target as sent (origin-form, absolute-form or `*`).
    target: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

impl<'a> Request<'a> {
    fn parse(head: &'a [u8]) -> Result<Request<'a>, RequestError> {
        let text = std::str::from_utf8(head).map_err(|_| RequestError::NotUtf8)?;
        // RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line.
        let text = text.trim_start_matches(['\r', '\n']);
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let line = lines.next().ok_or(RequestError::RequestLine)?;
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(RequestError::RequestLine);
        };
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return Err(RequestError::Method);
        }
        if target.is_empty() || !target.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(RequestError::Target);
        }
        let minor = match version.strip_prefix("HTTP/") {
            Some("1.1") => 1,
            Some("1.0") => 0,
            Some(v) if v.len() == 3 && v.as_bytes()[0].is_ascii_digit() && v.as_bytes()[1] == b'.' && v.as_bytes()[2].is_ascii_digit() => {
                return Err(RequestError::Version)
            }
            _ => return Err(RequestError::RequestLine),
        };
        let mut headers = Vec::new();
        for l in lines {
            if l.is_empty() {
                break;
            }
            if l.starts_with([' ', '\t']) {
                return Err(RequestError::HeaderLine); // obsolete line folding: RFC 9112 5.2 allows 400
            }
            let (name, value) = l.split_once(':').ok_or(RequestError::HeaderLine)?;
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(RequestError::HeaderLine);
            }
            headers.push((name, value.trim_matches([' ', '\t'])));
        }
        let req = Request { method, target, headers };
        // RFC 9112 3.2: a server MUST respond 400 to an HTTP/1.1 request without Host.
        if minor == 1 && req.header("host").is_none() {
            return Err(RequestError::MissingHost);
        }
        Ok(req)
    }

    /// The first header of that name (case-insensitive).
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    /// The path of the target, without query; absolute-form targets reduced to their path.
    fn path(&self) -> &'a str {
        let mut t = self.target;
        if let Some(rest) = t.strip_prefix("http://").or_else(|| t.strip_prefix("https://")) {
            t = rest.find('/').map_or("/", |i| &rest[i..]);
        }
        t.split(['?', '#']).next().unwrap_or(t)
    }
}

// ---- responses ----------------------------------------------------------------------------------

struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    /// Content-Length to announce (differs from `body.len()` for HEAD).
    length: usize,
    extra: Vec<(&'static str, String)>,
}

impl Response {
    fn new(status: u16, reason: &'static str, content_type: &'static str, body: String) -> Response {
        let length = body.len();
        Response { status, reason, content_type, body, length, extra: Vec::new() }
    }

    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        Response::new(status, reason, "text/plain; charset=utf-8", body.to_owned())
    }

    fn without_body(mut self) -> Response {
        self.body.clear();
        self
    }

    fn encode(&self) -> Vec<u8> {
        use std::fmt::Write;
        let mut head = String::with_capacity(160);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status, self.reason, self.content_type, self.length
        );
        for (k, v) in &self.extra {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Counter, Stage};

    struct Server {
        addr: SocketAddr,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        metrics: Arc<Metrics>,
    }

    async fn start(cfg: HttpConfig) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(serve_with(listener, metrics.clone(), cfg, rx));
        Server { addr, stop, task, metrics }
    }

    /// Sends raw bytes, reads until the server closes; returns (status, head, body).
    async fn exchange(addr: SocketAddr, req: &[u8]) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head end in {text:?}"));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[tokio::test]
    async fn metrics_and_healthz() {
        let srv = start(HttpConfig::default()).await;
        srv.metrics.inc(Counter::SipIn);
        srv.metrics.set_active_calls(3);
        srv.metrics.record(Stage::InviteTo100, Duration::from_micros(300));
        let (status, head, body) = exchange(srv.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").await;
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        assert_eq!(header(&head, "content-length"), Some(body.len().to_string().as_str()));
        assert_eq!(header(&head, "connection"), Some("close"));
        assert!(body.contains("\ncallgate_active_calls 3\n"), "{body}");
        assert!(body.contains("callgate_sip_messages_total{direction=\"in\"} 1\n"));
        crate::metrics::tests::check_exposition(&body).unwrap();

        let (status, _, body) = exchange(srv.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        // Query strings, HTTP/1.0 without Host, bare LF line ends, absolute-form.
        let (status, _, _) = exchange(srv.addr, b"GET /healthz?full=1 HTTP/1.0\n\n").await;
        assert_eq!(status, 200);
        let (status, _, _) = exchange(srv.addr, b"GET http://h:9/metrics HTTP/1.1\r\nHost: h:9\r\n\r\n").await;
        assert_eq!(status, 200);
        // HEAD: headers with the GET length, no body.
        let (status, head, body) = exchange(srv.addr, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!((status, header(&head, "content-length"), body.as_str()), (200, Some("2"), ""));

        srv.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), srv.task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn not_found_method_and_bad_requests() {
        let srv = start(HttpConfig::default()).await;
        let (status, _, _) = exchange(srv.addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 404);
        let (status, head, _) = exchange(srv.addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(status, 405);
        assert_eq!(header(&head, "allow"), Some("GET, HEAD"));
        for garbage in [
            &b"\x00\x01\x02hello\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\nHost: x\r\n\r\n",
            b"GET /metrics FTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n\r\n", // no Host
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"G(T /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /m\xffx HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let (status, _, _) = exchange(srv.addr, garbage).await;
            assert_eq!(status, 400, "{:?}", String::from_utf8_lossy(garbage));
        }
        let (status, _, _) = exchange(srv.addr, b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 505);
        // Head over 8 KiB.
        let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..400 {
            big.extend_from_slice(format!("X-Filler-{i}: abcdefghij\r\n").as_bytes());
        }
        big.extend_from_slice(b"\r\n");
        assert!(big.len() > 8 * 1024);
        let (status, _, _) = exchange(srv.addr, &big).await;
        assert_eq!(status, 431);
        // A head sent in small pieces is still read.
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        for piece in [&b"GET /hea"[..], b"lthz HTTP/1.1\r", b"\nHost: x\r\n\r", b"\n"] {
            s.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("\r\n\r\nok"), "{out:?}");
        srv.stop.send(true).unwrap();
        srv.task.await.unwrap();
    }

    #[tokio::test]
    async fn slow_client_gets_408() {
        let cfg = HttpConfig { head_timeout: Duration::from_millis(200), ..Default::default() };
        let srv = start(cfg).await;
        let (status, _, _) = exchange(srv.addr, b"GET /metrics HTTP/1.1\r\n").await;
        assert_eq!(status, 408);
        srv.stop.send(true).unwrap();
        srv.task.await.unwrap();
    }

    #[tokio::test]
    async fn connection_cap_holds_back_extra_clients() {
        let cfg = HttpConfig { max_connections: 1, ..Default::default() };
        let srv = start(cfg).await;
        // A holds the only permit by sending nothing.
        let a = TcpStream::connect(srv.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut b = TcpStream::connect(srv.addr).await.unwrap(); // sits in the backlog
        b.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(300), b.read(&mut buf)).await;
        assert!(early.is_err(), "served beyond the cap");
        drop(a); // A closes: its permit returns, B is accepted.
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), b.read_to_end(&mut out)).await.unwrap().unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200 OK"), "{:?}", String::from_utf8_lossy(&out));
        srv.stop.send(true).unwrap();
        srv.task.await.unwrap();
    }

    #[tokio::test]
    async fn stops_accepting_on_shutdown() {
        let srv = start(HttpConfig::default()).await;
        let (status, _, _) = exchange(srv.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 200);
        srv.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), srv.task).await.unwrap().unwrap();
        // The listener is dropped with the serve future: new connections are refused.
        assert!(TcpStream::connect(srv.addr).await.is_err());

        // Already true at start: returns at once. Sender dropped: returns too.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_tx, rx) = watch::channel(true);
        tokio::time::timeout(Duration::from_secs(5), serve(listener, Arc::new(Metrics::new()), rx)).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = watch::channel(false);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), serve(listener, Arc::new(Metrics::new()), rx)).await.unwrap();
    }

    #[test]
    fn head_end_variants() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nbody"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\r\n"), Some(17));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\nHost: x\r\n"), None);
    }
}
