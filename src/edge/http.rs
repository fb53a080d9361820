//! A minimal HTTP/1.1 server for operations: `GET /metrics` (Prometheus text 0.0.4), `GET /healthz`,
//! and `GET /cti`, the WebSocket (RFC 6455) upgrade for CTI clients.
//!
//! No HTTP crate: the surface is tiny and closed. One request per connection (`Connection: close`),
//! except `/cti`, whose connection becomes a WebSocket run by `edge::cti`.
//!
//! ```text
//!   accept loop ── acquire a permit (at most `max_connections` open) ── accept ── spawn:
//!       read the request head (≤ 8 KiB, ≤ 5 s)
//!         ├─ timeout            → 408, close
//!         ├─ head too large     → 431, close
//!         ├─ not HTTP/1.x       → 400 (505 for another version), close
//!         ├─ request → route()  → response, close
//!         └─ GET /cti upgrade   → 101, give the HTTP permit back, the connection (with any bytes read
//!                                 past the head) becomes a CTI WebSocket (a CTI connection slot)
//!   shutdown flips to true (or its sender is dropped) → stop accepting; connections in flight finish
//! ```
//!
//! Routes: `/metrics`, `/healthz` (GET and HEAD; other methods 405); `/cti` (GET with
//! `Upgrade: websocket`, `Connection: upgrade`, `Sec-WebSocket-Version: 13` and a valid
//! `Sec-WebSocket-Key`; 426 without the upgrade or with another version, 400 for a bad key, 503 at
//! the CTI connection limit; an `Authorization: Bearer` header authenticates the connection);
//! with a [`StatsSource`]: `/stats/live` (the live figures, JSON), `/stats/report` (an interval
//! report read from the records database off the async workers), `/wallboard` and `/` (the
//! supervisors' wallboard page, `web/wallboard.html`), GET and HEAD, other methods 405;
//! everything else 404.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::cti::{ConnPermit, CtiShell};
use crate::cti::ws;
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

/// What the handlers can see.
struct App {
    metrics: Arc<Metrics>,
    /// The CTI shell for `/cti` (`None`: 404).
    cti: Option<CtiShell>,
    /// Live figures and the records, for `/stats/*` and the wallboard (`None`: 404).
    stats: Option<StatsSource>,
}

/// Where the statistics endpoints read from.
#[derive(Clone)]
pub struct StatsSource {
    /// The sip task's latest live figures (refreshed once a second).
    pub live: Arc<std::sync::Mutex<serde_json::Value>>,
    /// The records database (SQLite path or PostgreSQL connection string).
    pub database: std::path::PathBuf,
    pub profile: Arc<crate::config::Profile>,
}

/// The wallboard page (static; it reads `/cti`, `/stats/live` and `/stats/report`).
const WALLBOARD: &str = include_str!("../../web/wallboard.html");

/// Serves until `shutdown` becomes true (or its sender is dropped) with the default [`HttpConfig`].
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) {
    serve_with(listener, metrics, HttpConfig::default(), shutdown).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(listener: TcpListener, metrics: Arc<Metrics>, cfg: HttpConfig, shutdown: watch::Receiver<bool>) {
    serve_with_cti(listener, metrics, cfg, None, shutdown).await
}

/// [`serve_with_cti`], and the statistics: `GET /stats/live`, `GET /stats/report`, `GET /wallboard`.
pub async fn serve_with_cti_stats(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    cfg: HttpConfig,
    cti: Option<CtiShell>,
    stats: Option<StatsSource>,
    shutdown: watch::Receiver<bool>,
) {
    serve_app(listener, App { metrics, cti, stats }, cfg, shutdown).await
}

/// [`serve_with`], and `GET /cti` upgrades to a CTI WebSocket run by `cti`. WebSocket connections
/// do not count against `cfg.max_connections` once upgraded (the CTI shell has its own limit).
pub async fn serve_with_cti(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    cfg: HttpConfig,
    cti: Option<CtiShell>,
    shutdown: watch::Receiver<bool>,
) {
    serve_app(listener, App { metrics, cti, stats: None }, cfg, shutdown).await
}

async fn serve_app(listener: TcpListener, app: App, cfg: HttpConfig, mut shutdown: watch::Receiver<bool>) {
    let app = Arc::new(app);
    let cfg = Arc::new(cfg);
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, cti = app.cti.is_some(), "http: serving /metrics and /healthz");
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
            handle(stream, peer, &app, &cfg, permit).await;
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

/// One connection: read one head, answer, close (or hand an upgraded `/cti` connection over).
async fn handle(mut stream: TcpStream, peer: SocketAddr, app: &App, cfg: &HttpConfig, permit: OwnedSemaphorePermit) {
    let mut leftover = Vec::new();
    let routed = match tokio::time::timeout(cfg.head_timeout, read_head(&mut stream, cfg.max_head)).await {
        Err(_) => Routed::Respond(Response::text(408, "Request Timeout", "request head not received in time\n")),
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::Io(e))) => {
            tracing::debug!(%peer, error = %e, "http: read failed");
            return;
        }
        Ok(Err(HeadError::TooLarge)) => {
            Routed::Respond(Response::text(431, "Request Header Fields Too Large", "request head too large\n"))
        }
        Ok(Ok((head, rest))) => {
            leftover = rest;
            match Request::parse(&head) {
                Ok(req) => route(&req, app),
                Err(RequestError::Version) => {
                    Routed::Respond(Response::text(505, "HTTP Version Not Supported", "only HTTP/1.0 and HTTP/1.1\n"))
                }
                Err(e) => {
                    tracing::debug!(%peer, error = ?e, "http: bad request");
                    Routed::Respond(Response::text(400, "Bad Request", "bad request\n"))
                }
            }
        }
    };
    let resp = match routed {
        Routed::Respond(r) => r,
        Routed::Blocking(job) => match tokio::task::spawn_blocking(job).await {
            Ok(r) => r,
            Err(_) => Response::text(500, "Internal Server Error", "report failed\n"),
        },
        Routed::Upgrade(up) => {
            let head = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                up.accept
            );
            match tokio::time::timeout(cfg.write_timeout, stream.write_all(head.as_bytes())).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::debug!(%peer, "http: writing the 101 failed");
                    return;
                }
            }
            drop(permit); // a long-lived CTI connection must not hold an HTTP slot
            tracing::debug!(%peer, "http: upgraded /cti to a WebSocket");
            up.cti.run_websocket(stream, leftover, peer, up.bearer, up.slot).await;
            return;
        }
    };
    let _permit = permit;
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

/// What to do with a request: answer it, answer it off the async workers (database reads), or
/// switch the connection to a CTI WebSocket.
enum Routed {
    Respond(Response),
    Blocking(Box<dyn FnOnce() -> Response + Send>),
    Upgrade(Upgrade),
}

/// An accepted WebSocket upgrade.
struct Upgrade {
    accept: String,
    bearer: Option<String>,
    cti: CtiShell,
    slot: ConnPermit,
}

/// Maps a parsed request to a response or an upgrade.
fn route(req: &Request<'_>, app: &App) -> Routed {
    if req.path() == "/stats/report" {
        return match &app.stats {
            Some(src) if req.method == "GET" || req.method == "HEAD" => {
                let (src, query, head_only) = (src.clone(), query_params(req.target), req.method == "HEAD");
                Routed::Blocking(Box::new(move || {
                    let r = report(&src, &query);
                    if head_only {
                        r.without_body()
                    } else {
                        r
                    }
                }))
            }
            Some(_) => Routed::Respond(method_not_allowed()),
            None => Routed::Respond(Response::text(404, "Not Found", "not found\n")),
        };
    }
    if req.path() == "/cti" {
        return match &app.cti {
            Some(cti) => cti_upgrade(req, cti),
            None => Routed::Respond(Response::text(404, "Not Found", "not found\n")),
        };
    }
    Routed::Respond(route_plain(req, app))
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `GET /cti`: the server side of the WebSocket opening handshake (RFC 6455 4.2).
fn cti_upgrade(req: &Request<'_>, cti: &CtiShell) -> Routed {
    let respond = Routed::Respond;
    if req.method != "GET" {
        let mut r = Response::text(405, "Method Not Allowed", "GET /cti with a WebSocket upgrade\n");
        r.extra.push(("Allow", "GET".into()));
        return respond(r);
    }
    let upgrade = req.header("upgrade").is_some_and(|v| has_token(v, "websocket"));
    let connection = req.header("connection").is_some_and(|v| has_token(v, "upgrade"));
    if !upgrade || !connection || req.minor < 1 {
        let mut r = Response::text(
            426,
            "Upgrade Required",
            "/cti is a WebSocket endpoint: GET over HTTP/1.1 with Upgrade: websocket and Connection: Upgrade (RFC 6455)\n",
        );
        r.extra.push(("Upgrade", "websocket".into()));
        return respond(r);
    }
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        let mut r = Response::text(426, "Upgrade Required", "only WebSocket version 13 is supported\n");
        r.extra.push(("Sec-WebSocket-Version", "13".into()));
        return respond(r);
    }
    let Some(key) = req.header("sec-websocket-key").filter(|k| ws::valid_client_key(k)) else {
        return respond(Response::text(400, "Bad Request", "missing or invalid Sec-WebSocket-Key\n"));
    };
    let bearer = req.header("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()).filter(|t| !t.is_empty())
    });
    let Some(slot) = cti.try_acquire() else {
        let mut r = Response::text(503, "Service Unavailable", "too many CTI connections\n");
        r.extra.push(("Retry-After", "5".into()));
        return respond(r);
    };
    Routed::Upgrade(Upgrade { accept: ws::accept_key(key), bearer, cti: cti.clone(), slot })
}

fn route_plain(req: &Request<'_>, app: &App) -> Response {
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
        "/stats/live" if get_like && app.stats.is_some() => {
            let v = app.stats.as_ref().and_then(|s| s.live.lock().ok().map(|v| v.clone())).unwrap_or_default();
            Response::new(200, "OK", "application/json", v.to_string())
        }
        "/wallboard" | "/" if get_like && app.stats.is_some() => {
            Response::new(200, "OK", "text/html; charset=utf-8", WALLBOARD.to_owned())
        }
        "/stats/live" | "/wallboard" | "/" if app.stats.is_some() => method_not_allowed(),
        // "/cti" => upgrade, "/stats/report" => a database read (see `route`).
        _ => Response::text(404, "Not Found", "not found\n"),
    };
    if head_only {
        resp.without_body()
    } else {
        resp
    }
}

/// 405 for the statistics and wallboard resources (GET and HEAD only).
fn method_not_allowed() -> Response {
    let mut r = Response::text(405, "Method Not Allowed", "method not allowed\n");
    r.extra.push(("Allow", "GET, HEAD".into()));
    r
}

// ---- reading the head ---------------------------------------------------------------------------

#[derive(Debug)]
enum HeadError {
    /// The peer closed before sending a complete head (including: sent nothing at all).
    Closed,
    TooLarge,
    Io(std::io::Error),
}

/// Reads until the blank line ending the head. Returns the head (with its final empty line) and the
/// bytes read past it (a WebSocket client may send its first frame right behind the request).
async fn read_head(stream: &mut TcpStream, max: usize) -> Result<(Vec<u8>, Vec<u8>), HeadError> {
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
            let rest = buf.split_off(end);
            return Ok((buf, rest));
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
    /// The minor version: HTTP/1.`minor`.
    minor: u8,
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
        let req = Request { method, target, minor, headers };
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

// ---- statistics ----------------------------------------------------------------------------------

/// `a=b&c=d` of the target's query, percent-decoded (`+` is a space).
fn query_params(target: &str) -> Vec<(String, String)> {
    let Some(q) = target.split_once('?').map(|(_, q)| q.split('#').next().unwrap_or(q)) else { return Vec::new() };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /stats/report?tenant=T&date=YYYY-MM-DD&interval=15|30|60&format=json|csv`: the interval
/// report of one day (default: the first tenant, today in its time, 30 minutes, JSON), computed
/// from the records database.
fn report(src: &StatsSource, q: &[(String, String)]) -> Response {
    let get = |k: &str| q.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str());
    let tenant = match get("tenant").or_else(|| src.profile.tenants.first().map(|t| t.id.as_str())) {
        Some(t) if src.profile.tenants.iter().any(|x| x.id == t) => t.to_owned(),
        Some(t) => return Response::text(404, "Not Found", &format!("no tenant {t:?}\n")),
        None => return Response::text(404, "Not Found", "no tenant\n"),
    };
    let minutes: u32 = match get("interval").unwrap_or("30").parse() {
        Ok(m) => m,
        Err(_) => return Response::text(400, "Bad Request", "interval: expected 15, 30 or 60\n"),
    };
    let Some(len) = crate::stats::IntervalLen::from_minutes(minutes) else {
        return Response::text(400, "Bad Request", "interval: expected 15, 30 or 60\n");
    };
    let cfg = crate::call::stats_config_for(&src.profile);
    let off = cfg.offset(&tenant);
    let day = match get("date") {
        Some(d) => match crate::stats::Date::parse(d) {
            Some(d) => d,
            None => return Response::text(400, "Bad Request", "date: expected YYYY-MM-DD\n"),
        },
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
            crate::stats::Date::of(now, off)
        }
    };
    let mut stats = crate::stats::Stats::new(cfg);
    let loaded = crate::records::RecordsReader::open(&src.database).and_then(|r| r.load_day(&mut stats, &tenant, day));
    if let Err(e) = loaded {
        tracing::warn!(error = %e, "report: reading the records failed");
        return Response::text(500, "Internal Server Error", &format!("reading the records failed: {e}\n"));
    }
    let rep = stats.report(&tenant, day, len);
    match get("format").unwrap_or("json") {
        "csv" => Response::new(200, "OK", "text/csv; charset=utf-8", rep.to_csv()),
        "json" => Response::new(200, "OK", "application/json", rep.to_json()),
        other => Response::text(400, "Bad Request", &format!("format {other:?}: expected json or csv\n")),
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

    /// Reads a response head (up to the blank line) without waiting for the connection to close.
    async fn read_response_head(s: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await.unwrap().unwrap();
            assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&buf));
            buf.push(b[0]);
        }
        String::from_utf8(buf).unwrap()
    }

    #[tokio::test]
    async fn cti_websocket_upgrade() {
        use crate::edge::cti::{CtiIn, CtiShell, CtiShellConfig};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let cfg = CtiShellConfig { max_connections: 1, ..Default::default() };
        let (shell, mut cti_rx) = CtiShell::spawn(&tokio::runtime::Handle::current(), cfg, rx.clone()).unwrap();
        let task = tokio::spawn(serve_with_cti(listener, Arc::new(Metrics::new()), HttpConfig::default(), Some(shell.clone()), rx));
        let up = "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n";
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        type Case = (String, u16, Option<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            ("GET /cti HTTP/1.1\r\nHost: x\r\n\r\n".into(), 426, Some(("upgrade", "websocket"))),
            (format!("GET /cti HTTP/1.1\r\nHost: x\r\n{up}{key}Sec-WebSocket-Version: 8\r\n\r\n"), 426, Some(("sec-websocket-version", "13"))),
            (format!("GET /cti HTTP/1.1\r\nHost: x\r\n{up}Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"), 400, None),
            (format!("GET /cti HTTP/1.1\r\nHost: x\r\n{up}Sec-WebSocket-Version: 13\r\n\r\n"), 400, None),
            (format!("GET /cti HTTP/1.0\r\n{up}{key}Sec-WebSocket-Version: 13\r\n\r\n"), 426, None),
            (format!("POST /cti HTTP/1.1\r\nHost: x\r\n{up}{key}Sec-WebSocket-Version: 13\r\n\r\n"), 405, Some(("allow", "GET"))),
        ];
        for (req, want, hdr) in cases {
            let (status, head, _) = exchange(addr, req.as_bytes()).await;
            assert_eq!(status, want, "{req:?} -> {head}");
            if let Some((name, value)) = hdr {
                assert_eq!(header(&head, name), Some(value), "{head}");
            }
        }
        // A good upgrade (the RFC's example key), a Bearer token, and a first frame sent right behind
        // the head: it must not be lost.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = format!("GET /cti?x=1 HTTP/1.1\r\nHost: x\r\n{up}{key}Sec-WebSocket-Version: 13\r\nAuthorization: Bearer tok-1\r\n\r\n").into_bytes();
        ws::encode(ws::Opcode::Text, b"{\"v\":1}", Some([9, 8, 7, 6]), &mut req);
        s.write_all(&req).await.unwrap();
        let head = read_response_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
        assert_eq!(header(&head, "sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert_eq!(header(&head, "upgrade"), Some("websocket"));
        async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<CtiIn>) -> CtiIn {
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap()
        }
        let conn = match next(&mut cti_rx).await {
            CtiIn::Open { conn, peer } => {
                assert_eq!(peer.bearer.as_deref(), Some("tok-1"));
                assert_eq!(peer.transport, crate::cti::Transport::WebSocket);
                conn
            }
            other => panic!("{other:?}"),
        };
        match next(&mut cti_rx).await {
            CtiIn::Message { conn: c, text } => assert_eq!((c, text.as_str()), (conn, "{\"v\":1}")),
            other => panic!("{other:?}"),
        }
        assert_eq!(shell.connections(), 1);
        // The CTI connection limit (1) is reached: the next upgrade gets 503, plain routes still work.
        let (status, head, _) = exchange(addr, format!("GET /cti HTTP/1.1\r\nHost: x\r\n{up}{key}Sec-WebSocket-Version: 13\r\n\r\n").as_bytes()).await;
        assert_eq!((status, header(&head, "retry-after")), (503, Some("5")));
        let (status, _, _) = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 200);
        // The client closes: the shell reports it and frees the slot.
        drop(s);
        match next(&mut cti_rx).await {
            CtiIn::Close { conn: c } => assert_eq!(c, conn),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(shell.connections(), 0);
        stop.send(true).unwrap();
        task.await.unwrap();
        // Without a CTI shell, /cti is not there.
        let srv = start(HttpConfig::default()).await;
        let (status, _, _) = exchange(srv.addr, format!("GET /cti HTTP/1.1\r\nHost: x\r\n{up}{key}Sec-WebSocket-Version: 13\r\n\r\n").as_bytes()).await;
        assert_eq!(status, 404);
        srv.stop.send(true).unwrap();
    }

    #[tokio::test]
    async fn stats_routes_and_the_wallboard() {
        let profile = crate::config::Profile::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-profiles/default"))
            .expect("the default profile loads");
        let live = serde_json::json!({ "now_ms": 1, "tenants": { "demo": { "waiting": 2 } } });
        let dir = std::env::temp_dir().join(format!("callgate-http-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stats = StatsSource {
            live: Arc::new(std::sync::Mutex::new(live.clone())),
            database: dir.join("calls.db"),
            profile: Arc::new(profile),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(serve_with_cti_stats(listener, Arc::new(Metrics::new()), HttpConfig::default(), None, Some(stats), rx));

        // The page: HTML with its tiles; HEAD has the length and no body; "/" is the same page.
        let (status, head, body) = exchange(addr, b"GET /wallboard?token=t&tenant=demo HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "content-type"), Some("text/html; charset=utf-8"));
        assert!(body.contains("data-tile=\"waiting\"") && body.contains("/stats/live") && body.contains("/cti"), "{body}");
        let (status, head, empty) = exchange(addr, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!((status, header(&head, "content-length"), empty.as_str()), (200, Some(body.len().to_string().as_str()), ""));
        // The live figures, as the sip task left them.
        let (status, head, body) = exchange(addr, b"GET /stats/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!((status, header(&head, "content-type")), (200, Some("application/json")));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), live);
        // Reports: no database yet is a server error that says so; then an empty day from a fresh
        // database, bad arguments, HEAD.
        let (status, _, body) = exchange(addr, b"GET /stats/report HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(status == 500 && body.contains("reading the records failed"), "{status} {body}");
        let writer = crate::records::RecordWriter::open(&dir.join("calls.db")).expect("create the records database");
        let (status, _, body) = exchange(addr, b"GET /stats/report?tenant=demo&interval=15&format=json HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 200, "{body}");
        let rep: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((rep["tenant"].as_str(), rep["interval_minutes"].as_u64()), (Some("demo"), Some(15)), "{body}");
        let (status, head, body) = exchange(addr, b"HEAD /stats/report?format=csv HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!((status, header(&head, "content-type"), body.as_str()), (200, Some("text/csv; charset=utf-8"), ""));
        for (req, want) in [
            (&b"GET /stats/report?interval=20 HTTP/1.1\r\nHost: x\r\n\r\n"[..], 400),
            (b"GET /stats/report?date=yesterday HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /stats/report?format=xml HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /stats/report?tenant=nobody HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        ] {
            let (status, _, body) = exchange(addr, req).await;
            assert_eq!(status, want, "{:?}: {body}", String::from_utf8_lossy(req));
        }
        // Other methods: 405 with Allow.
        for req in [&b"POST /wallboard HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"[..], b"DELETE /stats/live HTTP/1.1\r\nHost: x\r\n\r\n", b"PUT /stats/report HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"] {
            let (status, head, _) = exchange(addr, req).await;
            assert_eq!((status, header(&head, "allow")), (405, Some("GET, HEAD")), "{:?}", String::from_utf8_lossy(req));
        }
        drop(writer);
        stop.send(true).unwrap();
        task.await.unwrap();
        // Without a statistics source none of them is there.
        let srv = start(HttpConfig::default()).await;
        for path in ["/wallboard", "/stats/live", "/stats/report"] {
            let (status, _, _) = exchange(srv.addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await;
            assert_eq!(status, 404, "{path}");
        }
        srv.stop.send(true).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn head_end_variants() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nbody"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\r\n"), Some(17));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\nHost: x\r\n"), None);
    }
}
