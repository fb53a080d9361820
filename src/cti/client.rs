//! A small blocking CTI client (WebSocket, or JSON lines over a Unix socket or TCP), and
//! `callgate ctl`, the operators' command line built on it ([`run_ctl`]).
//!
//! This is the one part of `cti` that does I/O; it runs in the `callgate ctl` process (and in
//! tests), never inside the server.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};

use super::proto::{RemoteError, ServerMessage};
use super::ws::{self, Decoder, Incoming, Opcode};

/// Why the client failed.
#[derive(Debug)]
pub enum ClientError {
    Io(io::Error),
    /// The server did not accept the WebSocket upgrade (the status line and body, or what is wrong).
    Handshake(String),
    /// The server broke the protocol.
    Protocol(String),
    /// The server closed the connection (close code and reason when it gave them).
    Closed { code: Option<u16>, reason: String },
    /// No answer in time.
    Timeout,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Handshake(s) => write!(f, "WebSocket upgrade refused: {s}"),
            ClientError::Protocol(s) => write!(f, "protocol error: {s}"),
            ClientError::Closed { code: Some(c), reason } => write!(f, "the server closed the connection ({c}: {reason})"),
            ClientError::Closed { code: None, reason } if !reason.is_empty() => {
                write!(f, "the server closed the connection ({reason})")
            }
            ClientError::Closed { .. } => f.write_str("the server closed the connection"),
            ClientError::Timeout => f.write_str("no answer from the server in time"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
            ClientError::Timeout
        } else {
            ClientError::Io(e)
        }
    }
}

enum Link {
    Ws { stream: TcpStream, dec: Decoder },
    Lines { stream: Box<dyn LineStream>, buf: Vec<u8> },
}

trait LineStream: Read + Write + Send {
    fn set_timeout(&self, d: Option<Duration>) -> io::Result<()>;
}

impl LineStream for UnixStream {
    fn set_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(d)
    }
}

impl LineStream for TcpStream {
    fn set_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(d)
    }
}

/// A connected client. Events that arrive while [`Client::call`] waits for its result are kept and
/// returned by the next [`Client::recv`].
pub struct Client {
    link: Link,
    rng: u64,
    next_id: u64,
    backlog: VecDeque<String>,
    /// What `recv` waits at most (`None`: forever).
    pub timeout: Option<Duration>,
}

/// Largest message the client accepts.
const MAX_MESSAGE: usize = 16 << 20;

impl Client {
    /// Opens a WebSocket to `ws://addr/cti`; with `bearer`, the token goes in the
    /// `Authorization` header (the server then authenticates at once and answers with id `#auth`).
    pub fn connect_ws(addr: &str, bearer: Option<&str>, timeout: Duration) -> Result<Client, ClientError> {
        let sock = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| ClientError::Io(io::Error::new(io::ErrorKind::NotFound, format!("no address for {addr}"))))?;
        let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut rng = seed();
        let key_bytes: Vec<u8> = (0..16).map(|_| next_rand(&mut rng) as u8).collect();
        let key = ws::base64_encode(&key_bytes);
        let mut req = format!(
            "GET /cti HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: callgate-ctl/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(t) = bearer {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes())?;
        // The response head, and whatever follows it.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ClientError::Handshake("the server closed the connection during the handshake".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err(ClientError::Handshake("response head too large".into()));
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status = head.lines().next().unwrap_or_default().to_owned();
        if status.split(' ').nth(1) != Some("101") {
            // Show the body too (it says why), within reason.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut body = buf[end..].to_vec();
            let _ = (&stream).take(4096).read_to_end(&mut body);
            return Err(ClientError::Handshake(format!("{status}: {}", String::from_utf8_lossy(&body).trim())));
        }
        let accept = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("sec-websocket-accept").then(|| v.trim().to_owned())
        });
        if accept.as_deref() != Some(ws::accept_key(&key).as_str()) {
            return Err(ClientError::Handshake(format!("wrong Sec-WebSocket-Accept {accept:?}")));
        }
        let mut dec = Decoder::new(ws::Role::Client, MAX_MESSAGE);
        dec.push(&buf[end..]);
        Ok(Client { link: Link::Ws { stream, dec }, rng, next_id: 1, backlog: VecDeque::new(), timeout: Some(timeout) })
    }

    /// Connects to the Unix socket (JSON lines).
    pub fn connect_unix(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client::lines(Box::new(stream), timeout))
    }

    /// Connects to a JSON-lines TCP address.
    pub fn connect_tcp_lines(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client::lines(Box::new(stream), timeout))
    }

    fn lines(stream: Box<dyn LineStream>, timeout: Duration) -> Client {
        Client {
            link: Link::Lines { stream, buf: Vec::new() },
            rng: seed(),
            next_id: 1,
            backlog: VecDeque::new(),
            timeout: Some(timeout),
        }
    }

    /// Sends one message as it is (tests use this for malformed input).
    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        match &mut self.link {
            Link::Ws { stream, .. } => {
                let mut out = Vec::with_capacity(text.len() + 14);
                let mask = (next_rand(&mut self.rng) as u32).to_be_bytes();
                ws::encode(Opcode::Text, text.as_bytes(), Some(mask), &mut out);
                stream.write_all(&out)?;
            }
            Link::Lines { stream, .. } => {
                let mut out = Vec::with_capacity(text.len() + 1);
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
                stream.write_all(&out)?;
            }
        }
        Ok(())
    }

    /// Writes raw bytes to the socket (WebSocket protocol tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match &mut self.link {
            Link::Ws { stream, .. } => stream.write_all(bytes)?,
            Link::Lines { stream, .. } => stream.write_all(bytes)?,
        }
        Ok(())
    }

    /// Sends a command; returns its id.
    pub fn send(&mut self, cmd: &str, args: Value) -> Result<String, ClientError> {
        let id = format!("c{}", self.next_id);
        self.next_id += 1;
        let msg = json!({ "v": 1, "id": id, "cmd": cmd, "args": args });
        self.send_text(&msg.to_string())?;
        Ok(id)
    }

    /// Sends a command and waits for its result; events arriving meanwhile are kept for `recv`.
    pub fn call(&mut self, cmd: &str, args: Value) -> Result<Result<Value, RemoteError>, ClientError> {
        let id = self.send(cmd, args)?;
        self.wait_result(&id)
    }

    /// Waits for the result with this id, keeping everything else for `recv`.
    pub fn wait_result(&mut self, id: &str) -> Result<Result<Value, RemoteError>, ClientError> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut kept = Vec::new();
        let found = loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                break Err(ClientError::Timeout);
            }
            let text = match self.read_text(left) {
                Ok(t) => t,
                Err(e) => break Err(e),
            };
            match ServerMessage::parse(&text) {
                Ok(ServerMessage::Result { id: Some(got), result }) if got == id => break Ok(result),
                Ok(_) => kept.push(text),
                Err(e) => break Err(ClientError::Protocol(e)),
            }
        };
        // Keep the order: what was read while waiting goes before anything read later.
        for t in kept.into_iter().rev() {
            self.backlog.push_front(t);
        }
        found
    }

    /// Authenticates. `snapshot: false` skips the initial snapshot (command-only clients).
    pub fn auth(&mut self, token: &str, snapshot: bool) -> Result<Value, ClientError> {
        match self.call("auth", json!({ "token": token, "snapshot": snapshot }))? {
            Ok(v) => Ok(v),
            Err(e) => Err(ClientError::Handshake(format!("authentication failed: {e}"))),
        }
    }

    /// The next server message (as text), waiting up to `self.timeout`.
    pub fn recv_text(&mut self) -> Result<String, ClientError> {
        if let Some(t) = self.backlog.pop_front() {
            return Ok(t);
        }
        self.read_text(self.timeout)
    }

    /// The next server message.
    pub fn recv(&mut self) -> Result<ServerMessage, ClientError> {
        let t = self.recv_text()?;
        ServerMessage::parse(&t).map_err(ClientError::Protocol)
    }

    /// The next event, skipping results.
    pub fn next_event(&mut self) -> Result<(u64, String, Value), ClientError> {
        loop {
            if let ServerMessage::Event { seq, event, data, .. } = self.recv()? {
                return Ok((seq, event, data));
            }
        }
    }

    /// Closes politely (WebSocket close 1000).
    pub fn close(mut self) {
        if let Link::Ws { stream, .. } = &mut self.link {
            let mut out = Vec::new();
            let mask = (next_rand(&mut self.rng) as u32).to_be_bytes();
            ws::encode_close(1000, "bye", Some(mask), &mut out);
            let _ = stream.write_all(&out);
        }
    }

    fn read_text(&mut self, timeout: Option<Duration>) -> Result<String, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let left = || deadline.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        match &mut self.link {
            Link::Ws { stream, dec } => loop {
                match dec.decode() {
                    Ok(Some(Incoming::Text(t))) => return Ok(t),
                    Ok(Some(Incoming::Ping(p))) => {
                        let mut out = Vec::new();
                        let mask = (next_rand(&mut self.rng) as u32).to_be_bytes();
                        ws::encode(Opcode::Pong, &p, Some(mask), &mut out);
                        stream.write_all(&out)?;
                        continue;
                    }
                    Ok(Some(Incoming::Pong(_))) => continue,
                    Ok(Some(Incoming::Close(code, reason))) => {
                        let mut out = Vec::new();
                        let mask = (next_rand(&mut self.rng) as u32).to_be_bytes();
                        ws::encode_close(code.unwrap_or(1000), "", Some(mask), &mut out);
                        let _ = stream.write_all(&out);
                        return Err(ClientError::Closed { code, reason });
                    }
                    Ok(None) => {}
                    Err(e) => return Err(ClientError::Protocol(e.to_string())),
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(ClientError::Timeout);
                }
                stream.set_read_timeout(left())?;
                let mut chunk = [0u8; 16 * 1024];
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(ClientError::Closed { code: None, reason: String::new() });
                }
                dec.push(&chunk[..n]);
            },
            Link::Lines { stream, buf } => loop {
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if text.is_empty() {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        if let Some(c) = v.get("closing") {
                            return Err(ClientError::Closed {
                                code: c.get("code").and_then(Value::as_u64).map(|c| c as u16),
                                reason: c.get("reason").and_then(Value::as_str).unwrap_or("").to_owned(),
                            });
                        }
                    }
                    return Ok(text);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(ClientError::Timeout);
                }
                stream.set_timeout(left())?;
                let mut chunk = [0u8; 16 * 1024];
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(ClientError::Closed { code: None, reason: String::new() });
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_MESSAGE {
                    return Err(ClientError::Protocol("a line over 16 MiB".into()));
                }
            },
        }
    }
}

fn seed() -> u64 {
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let local = 0u8;
    (t ^ (u64::from(std::process::id()) << 32) ^ (&local as *const u8 as u64)) | 1
}

/// xorshift64*: enough for masking keys and handshake nonces (RFC 6455 asks for unpredictability
/// against proxies' cache poisoning, not for secrecy).
fn next_rand(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

// ---- callgate ctl ---------------------------------------------------------------------------

pub const CTL_USAGE: &str = "\
callgate ctl: the CTI command line (the same protocol as agent desktops and integrations)

USAGE:
    callgate ctl [--http ADDR:PORT | --socket PATH | --tcp ADDR:PORT] [--token T | --token-file F]
                 [--json] [--timeout SECS] COMMAND

COMMANDS:
    status                           who you are, the server, and a summary of what you may see
    agents [TENANT]                  agents and their states
    queues [TENANT]                  queue figures
    calls [TENANT]                   calls in progress
    agent-state AGENT ready          make an agent ready
    agent-state AGENT not-ready REASON
    agent-state AGENT login|logout
    hangup CALL                      hang a call up
    transfer CALL TO                 blind transfer to a number or extension
    tail [--since SEQ] [--snapshot]  print events as JSON lines until interrupted
    raw CMD [ARGS-JSON]              any command, e.g. raw call.hold '{\"call\":\"cg-1\"}'

OPTIONS:
    --http ADDR:PORT    the WebSocket at ws://ADDR:PORT/cti (default 127.0.0.1:8080)
    --socket PATH       the Unix socket (JSON lines), e.g. var/callgate-cti.sock
    --tcp ADDR:PORT     a JSON-lines TCP address
    --token T           the token (better: --token-file, or CALLGATE_CTI_TOKEN in the environment,
                        which other users cannot read from the process list)
    --json              print results as JSON instead of tables
    --timeout SECS      how long to wait for an answer (default 10)

EXIT STATUS: 0 done, 1 the server refused the command, 2 usage, 3 connection or authentication failed.
";

enum Target {
    Http(String),
    Unix(PathBuf),
    Tcp(String),
}

struct CtlArgs {
    target: Target,
    token: Option<String>,
    json: bool,
    timeout: Duration,
    rest: Vec<String>,
}

fn parse_ctl(args: &[String]) -> Result<CtlArgs, String> {
    let mut target = Target::Http("127.0.0.1:8080".into());
    let mut token = None;
    let mut json = false;
    let mut timeout = Duration::from_secs(10);
    let mut it = args.iter();
    let mut rest = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--http" => target = Target::Http(value("--http")?),
            "--socket" => target = Target::Unix(PathBuf::from(value("--socket")?)),
            "--tcp" => target = Target::Tcp(value("--tcp")?),
            "--token" => token = Some(value("--token")?),
            "--token-file" => {
                let f = value("--token-file")?;
                let t = std::fs::read_to_string(&f).map_err(|e| format!("--token-file {f}: {e}"))?;
                token = Some(t.trim().to_owned());
            }
            "--json" => json = true,
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: f64 = v.parse().map_err(|_| format!("--timeout takes seconds, not {v:?}"))?;
                if !(secs > 0.0 && secs < 86_400.0) {
                    return Err(format!("--timeout takes seconds between 0 and 86400, not {v:?}"));
                }
                timeout = Duration::from_secs_f64(secs);
            }
            "-h" | "--help" => return Err(String::new()),
            _ => {
                rest.push(a.clone());
                // Options after the command belong to it (tail --since).
                rest.extend(it.by_ref().cloned());
            }
        }
    }
    if token.is_none() {
        token = std::env::var("CALLGATE_CTI_TOKEN").ok().filter(|t| !t.is_empty());
    }
    if rest.is_empty() {
        return Err("no command given".into());
    }
    Ok(CtlArgs { target, token, json, timeout, rest })
}

/// What one ctl command sends.
enum Plan {
    Status,
    Call { cmd: &'static str, args: Value, table: Option<(&'static str, &'static [&'static str])> },
    Raw { cmd: String, args: Value },
    Tail { since: Option<u64>, snapshot: bool },
}

fn plan(rest: &[String]) -> Result<Plan, String> {
    let s: Vec<&str> = rest.iter().map(String::as_str).collect();
    let tenant = |i: usize| match s.get(i) {
        Some(t) => json!({ "tenant": t }),
        None => json!({}),
    };
    const AGENT_COLS: &[&str] = &["agent", "tenant", "name", "extension", "state", "reason", "call"];
    const QUEUE_COLS: &[&str] = &["tenant", "queue", "waiting", "longest_wait_ms", "expected_wait_ms", "agents_ready", "agents_busy"];
    const CALL_COLS: &[&str] = &["call", "tenant", "queue", "agent", "caller", "number", "state"];
    Ok(match s.as_slice() {
        ["status"] => Plan::Status,
        ["agents"] | ["agents", _] => Plan::Call { cmd: "query.agents", args: tenant(1), table: Some(("agents", AGENT_COLS)) },
        ["queues"] | ["queues", _] => Plan::Call { cmd: "query.queues", args: tenant(1), table: Some(("queues", QUEUE_COLS)) },
        ["calls"] | ["calls", _] => Plan::Call { cmd: "query.calls", args: tenant(1), table: Some(("calls", CALL_COLS)) },
        ["agent-state", agent, "ready"] => Plan::Call { cmd: "agent.ready", args: json!({ "agent": agent }), table: None },
        ["agent-state", agent, "not-ready", reason] => {
            Plan::Call { cmd: "agent.not_ready", args: json!({ "agent": agent, "reason": reason }), table: None }
        }
        ["agent-state", agent, "login"] => Plan::Call { cmd: "agent.login", args: json!({ "agent": agent }), table: None },
        ["agent-state", agent, "logout"] => Plan::Call { cmd: "agent.logout", args: json!({ "agent": agent }), table: None },
        ["agent-state", ..] => return Err("agent-state AGENT ready | not-ready REASON | login | logout".into()),
        ["hangup", call] => Plan::Call { cmd: "call.hangup", args: json!({ "call": call }), table: None },
        ["transfer", call, to] => Plan::Call { cmd: "call.transfer", args: json!({ "call": call, "to": to }), table: None },
        ["tail", opts @ ..] => {
            let mut since = None;
            let mut snapshot = false;
            let mut i = 0;
            while i < opts.len() {
                match opts[i] {
                    "--since" => {
                        let v = opts.get(i + 1).ok_or("--since needs a sequence number")?;
                        since = Some(v.parse().map_err(|_| format!("--since takes a sequence number, not {v:?}"))?);
                        i += 2;
                    }
                    "--snapshot" => {
                        snapshot = true;
                        i += 1;
                    }
                    other => return Err(format!("tail: unknown option {other:?}")),
                }
            }
            Plan::Tail { since, snapshot }
        }
        ["raw", cmd] => Plan::Raw { cmd: cmd.to_string(), args: json!({}) },
        ["raw", cmd, args] => {
            let args: Value = serde_json::from_str(args).map_err(|e| format!("raw: ARGS must be a JSON object: {e}"))?;
            Plan::Raw { cmd: cmd.to_string(), args }
        }
        [cmd, ..] => return Err(format!("unknown or incomplete command {cmd:?}")),
        [] => return Err("no command given".into()),
    })
}

/// `callgate ctl ARGS…` (the arguments after `ctl`). Returns the process exit code.
pub fn run_ctl(args: &[String]) -> i32 {
    run_ctl_with(args, &mut io::stdout().lock())
}

/// [`run_ctl`] writing its output to `out` (errors still go to stderr).
pub fn run_ctl_with(args: &[String], out: &mut dyn Write) -> i32 {
    let a = match parse_ctl(args) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            let _ = write!(out, "{CTL_USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("callgate ctl: {e}\n\n{CTL_USAGE}");
            return 2;
        }
    };
    let plan = match plan(&a.rest) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("callgate ctl: {e}\n\n{CTL_USAGE}");
            return 2;
        }
    };
    let Some(token) = a.token.clone() else {
        eprintln!("callgate ctl: no token: give --token, --token-file or CALLGATE_CTI_TOKEN");
        return 2;
    };
    let connected = match &a.target {
        Target::Http(addr) => Client::connect_ws(addr, None, a.timeout),
        Target::Unix(p) => Client::connect_unix(p, a.timeout),
        Target::Tcp(addr) => Client::connect_tcp_lines(addr, a.timeout),
    };
    let mut client = match connected {
        Ok(c) => c,
        Err(e) => {
            eprintln!("callgate ctl: cannot connect: {e}");
            return 3;
        }
    };
    match run_plan(&mut client, &token, plan, a.json, out) {
        Ok(code) => {
            client.close();
            code
        }
        Err(e) => {
            eprintln!("callgate ctl: {e}");
            3
        }
    }
}

fn run_plan(c: &mut Client, token: &str, plan: Plan, as_json: bool, out: &mut dyn Write) -> Result<i32, ClientError> {
    let refused = |e: RemoteError| {
        eprintln!("callgate ctl: {e}");
        Ok(1)
    };
    let unauthenticated = |e: RemoteError| {
        eprintln!("callgate ctl: authentication failed: {e}");
        Ok(3)
    };
    match plan {
        Plan::Tail { since, snapshot } => {
            let mut args = json!({ "token": token, "snapshot": snapshot || since.is_some() });
            if let Some(s) = since {
                args["since"] = json!(s);
            }
            match c.call("auth", args)? {
                Ok(_) => {}
                Err(e) => return unauthenticated(e),
            }
            c.timeout = None;
            loop {
                let text = c.recv_text()?;
                let msg = ServerMessage::parse(&text).map_err(ClientError::Protocol)?;
                let show = match &msg {
                    ServerMessage::Event { event, .. } => snapshot || event != "snapshot",
                    ServerMessage::Result { result: Err(_), .. } => true,
                    ServerMessage::Result { .. } => false,
                };
                if show && writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
                    return Ok(0); // stdout closed (| head)
                }
            }
        }
        Plan::Status => {
            let who = match c.call("auth", json!({ "token": token, "snapshot": false }))? {
                Ok(v) => v,
                Err(e) => return unauthenticated(e),
            };
            let snap = match c.call("snapshot", json!({}))? {
                Ok(_) => loop {
                    match c.recv()? {
                        ServerMessage::Event { event, data, .. } if event == "snapshot" => break data,
                        _ => continue,
                    }
                },
                Err(e) => return refused(e),
            };
            if as_json {
                let _ = writeln!(out, "{}", json!({ "auth": who, "snapshot": snap }));
                return Ok(0);
            }
            let s = |v: &Value| match v {
                Value::Null => "-".to_owned(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let _ = writeln!(
                out,
                "{} as {} ({}{}{})\nepoch {}  seq {}",
                s(&who["server"]),
                s(&who["principal"]),
                s(&who["role"]),
                who["tenant"].as_str().map(|t| format!(", tenant {t}")).unwrap_or_default(),
                who["agent"].as_str().map(|t| format!(", agent {t}")).unwrap_or_default(),
                s(&who["epoch"]),
                s(&who["seq"]),
            );
            let _ = write!(out, "{}", summary(&snap));
            Ok(0)
        }
        Plan::Call { cmd, args, table } => {
            match c.call("auth", json!({ "token": token, "snapshot": false }))? {
                Ok(_) => {}
                Err(e) => return unauthenticated(e),
            }
            match c.call(cmd, args)? {
                Ok(v) => {
                    let rows = table.and_then(|(key, cols)| Some((v.get(key)?.as_array()?, cols)));
                    match rows {
                        Some((rows, cols)) if !as_json => {
                            let _ = write!(out, "{}", render_table(rows, cols));
                        }
                        _ if !as_json && v.as_object().is_some_and(Map::is_empty) => {
                            let _ = writeln!(out, "ok");
                        }
                        _ => {
                            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                        }
                    }
                    Ok(0)
                }
                Err(e) => refused(e),
            }
        }
        Plan::Raw { cmd, args } => {
            match c.call("auth", json!({ "token": token, "snapshot": false }))? {
                Ok(_) => {}
                Err(e) => return unauthenticated(e),
            }
            match c.call(&cmd, args)? {
                Ok(v) => {
                    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    Ok(0)
                }
                Err(e) => refused(e),
            }
        }
    }
}

/// Counts of a snapshot's agents by state, its queues, and its calls.
fn summary(snap: &Value) -> String {
    let mut s = String::new();
    if let Some(agents) = snap.get("agents").and_then(Value::as_array) {
        let mut by: Vec<(String, usize)> = Vec::new();
        for a in agents {
            let st = a.get("state").and_then(Value::as_str).unwrap_or("?").to_owned();
            match by.iter_mut().find(|(k, _)| *k == st) {
                Some((_, n)) => *n += 1,
                None => by.push((st, 1)),
            }
        }
        by.sort();
        let parts: Vec<String> = by.iter().map(|(k, n)| format!("{k} {n}")).collect();
        s.push_str(&format!("agents: {}{}{}\n", agents.len(), if parts.is_empty() { "" } else { " — " }, parts.join(", ")));
    }
    if let Some(queues) = snap.get("queues").and_then(Value::as_array) {
        let waiting: u64 = queues.iter().filter_map(|q| q.get("waiting")?.as_u64()).sum();
        s.push_str(&format!("queues: {} — {waiting} callers waiting\n", queues.len()));
    }
    if let Some(calls) = snap.get("calls").and_then(Value::as_array) {
        s.push_str(&format!("calls: {}\n", calls.len()));
    }
    if s.is_empty() {
        s = format!("{}\n", serde_json::to_string_pretty(snap).unwrap_or_default());
    }
    s
}

/// A plain-text table: the preferred columns first (those present), then any other keys.
pub fn render_table(rows: &[Value], preferred: &[&str]) -> String {
    if rows.is_empty() {
        return "(none)\n".to_owned();
    }
    let mut cols: Vec<String> = preferred
        .iter()
        .filter(|c| rows.iter().any(|r| r.get(**c).is_some()))
        .map(|c| c.to_string())
        .collect();
    let mut extra: Vec<String> = rows
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys().cloned())
        .filter(|k| !cols.contains(k))
        .collect();
    extra.sort();
    extra.dedup();
    cols.extend(extra);
    let cell = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let grid: Vec<Vec<String>> = rows.iter().map(|r| cols.iter().map(|c| cell(r.get(c))).collect()).collect();
    let width = |i: usize| grid.iter().map(|r| r[i].chars().count()).chain([cols[i].chars().count()]).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols.len()).map(width).collect();
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut s = line(&cols.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>());
    for r in &grid {
        s.push_str(&line(r));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn ctl_commands_map_to_protocol_commands() {
        let cmd = |s: &str| match plan(&args(s)).unwrap() {
            Plan::Call { cmd, args, .. } => (cmd.to_owned(), args),
            Plan::Raw { cmd, args } => (cmd, args),
            Plan::Status => ("status".into(), Value::Null),
            Plan::Tail { since, snapshot } => ("tail".into(), json!({ "since": since, "snapshot": snapshot })),
        };
        assert_eq!(cmd("agents"), ("query.agents".into(), json!({})));
        assert_eq!(cmd("queues seoul"), ("query.queues".into(), json!({"tenant": "seoul"})));
        assert_eq!(cmd("agent-state 1001 not-ready lunch"), ("agent.not_ready".into(), json!({"agent": "1001", "reason": "lunch"})));
        assert_eq!(cmd("transfer cg-1 2000"), ("call.transfer".into(), json!({"call": "cg-1", "to": "2000"})));
        assert_eq!(cmd("tail --since 42"), ("tail".into(), json!({"since": 42, "snapshot": false})));
        assert_eq!(cmd("raw call.hold {\"call\":\"cg-1\"}"), ("call.hold".into(), json!({"call": "cg-1"})));
        for bad in ["agent-state 1001", "agent-state 1001 not-ready", "hangup", "tail --since x", "frobnicate"] {
            assert!(plan(&args(bad)).is_err(), "{bad}");
        }
        let a = parse_ctl(&args("--socket /tmp/x.sock --token t --json agents")).unwrap();
        assert!(matches!(a.target, Target::Unix(ref p) if p == Path::new("/tmp/x.sock")));
        assert_eq!((a.token.as_deref(), a.json, a.rest), (Some("t"), true, args("agents")));
        assert!(parse_ctl(&args("--timeout 0 status")).is_err());
        assert!(parse_ctl(&args("--token t")).is_err());
    }

    #[test]
    fn tables_put_the_preferred_columns_first() {
        let rows = vec![
            json!({"state": "ready", "agent": "1001", "zone": 3}),
            json!({"agent": "1002", "state": "talking", "call": "cg-123456"}),
        ];
        let t = render_table(&rows, &["agent", "state", "call"]);
        assert_eq!(t, "AGENT  STATE    CALL       ZONE\n1001   ready    -          3\n1002   talking  cg-123456  -\n");
        assert_eq!(render_table(&[], &["agent"]), "(none)\n");
    }
}
