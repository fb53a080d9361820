//! The hub: every CTI connection's protocol state, the permission checks, the event sequence and
//! its replay ring, and the outbound accounting that cuts slow consumers off. Sans-IO: the shell
//! feeds it connection events and messages, the call core answers its commands and publishes
//! events, and the outputs say what to send, close and execute.
//!
//! One connection:
//! ```text
//!   on_open ──▶ Unauthenticated ── bad token (3×, or once in a header) / no auth in 10 s ──▶ closed
//!                  │ auth ok                 │ auth ok with "since" (events still kept)
//!                  │ ("snapshot":false ──────┼──────────────────────────────────────────▶ Live)
//!                  ▼                         ▼
//!   ┌───────▶ AwaitSnapshot ◀── gap ─── Replaying{next} ── next > seq ──▶ Live
//!   │ resume      │ snapshot result         ▲  (paced by on_sent)              │
//!   │ gap         └──────────▶ Live ────────┴─────────── resume ◀──────────────┘
//!   └──────────────────────────┘
//!   any state: queued bytes > max_queued_bytes, or the ring drops an event a replay still needs
//!              ──▶ closed "slow consumer";  on_close ──▶ forgotten
//!   any state: flooding (see below) ──▶ closed "too many messages"
//! ```
//! - Input rate: every message of a connection (commands, `ping`, `auth` alike) takes a token from
//!   its bucket (`command_rate` per second, `command_burst` at most, full at open). With none left
//!   the message is answered with `rate_limited` and not carried out; the first such refusal of an
//!   episode is logged. A connection whose messages reach `flood_factor` × `command_rate` per
//!   second in every one-second window for `flood_time` on end is closed ("too many messages").
//! ```text
//!   tokens ≥ 1 ──▶ carried out          tokens < 1 ──▶ rate_limited (logged once per episode)
//!   window of 1 s: count ≥ flood_factor × rate ──▶ flooding windows + 1 (else 0, and 0 after silence)
//!   flooding windows × 1 s ≥ flood_time ──▶ closed
//! ```
//! - Events get `seq` = 1, 2, 3 … in publish order; every published event is serialised once and
//!   the same `Arc<str>` goes to every connection that may see it and into the replay ring
//!   (at most `replay_events` events and `replay_bytes` bytes; the oldest go first).
//! - AwaitSnapshot: after authentication the hub asks the call core for the connection's snapshot
//!   (`Execute{id:"#snapshot", command: Snapshot}`) and sends no live event until the answer comes;
//!   the answer is sent as a `snapshot` event whose `seq` is the last seq published, so the state
//!   it describes includes every event up to `seq` and the next live event is `seq + 1`.
//! - Replaying: events after `since` come from the ring, filtered by what the principal may see,
//!   a half-limit of bytes at a time, then the connection is Live. Live events published meanwhile
//!   are in the ring and reach it the same way, in order, without a gap or a duplicate.
//! - Slow consumers: each `Send` adds its length to the connection's queued bytes; the shell
//!   subtracts what it wrote with `on_sent`. Beyond `max_queued_bytes` the hub closes the
//!   connection; it never waits for one, so the call core is never slowed by a client.
//! - Result ids starting with `#` are the server's own: `#auth` (a Bearer header's outcome),
//!   `#snapshot` (a failed initial snapshot).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::proto::{self, parse_command, parse_request, Args, Command};
use super::{ct_eq, events, token_hash, CtiError, PeerInfo, Principal, PrincipalRef, Visibility};

/// Limits and identity of the hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Connections at once (authenticated or not); beyond, new ones are closed at once.
    pub max_connections: usize,
    /// Largest client message; larger ones get `too_large` (the connection stays open).
    pub max_message: usize,
    /// Events kept for `resume`.
    pub replay_events: usize,
    /// Bytes of serialised events kept for `resume`.
    pub replay_bytes: usize,
    /// Bytes sent to a connection and not yet written to its socket before it counts as a slow
    /// consumer and is closed.
    pub max_queued_bytes: usize,
    /// Commands of one connection waiting for their result at once; beyond: `busy`.
    pub max_inflight: usize,
    /// Time from open to a successful `auth`.
    pub auth_timeout: Duration,
    /// Bad tokens on one connection before it is closed.
    pub max_auth_failures: u32,
    /// Messages a connection may send per second on average (its token bucket's rate); `0`: no
    /// limit. Beyond it a message is answered with `rate_limited`.
    pub command_rate: u32,
    /// Messages it may send at once (the bucket's size; it starts full).
    pub command_burst: u32,
    /// A connection sending at least `flood_factor` × `command_rate` messages per second ...
    /// (`0`: none is closed for it)
    pub flood_factor: u32,
    /// ... for this long (whole seconds) is closed with [`CloseReason::Flooding`].
    pub flood_time: Duration,
    /// Identifies this run of the server: sequence numbers restart with each run, so a `resume`
    /// naming another epoch gets a gap and a snapshot.
    pub epoch: u64,
    /// Wall clock at `clock_at`, Unix ms (events carry `at_ms`).
    pub clock_unix_ms: i64,
    pub clock_at: Instant,
}

impl HubConfig {
    /// The default limits; `now` and `unix_ms` tie the hub's instants to the wall clock.
    pub fn new(now: Instant, unix_ms: i64) -> HubConfig {
        HubConfig {
            max_connections: 2048,
            max_message: 64 * 1024,
            replay_events: 50_000,
            replay_bytes: 64 << 20,
            max_queued_bytes: 4 << 20,
            max_inflight: 64,
            auth_timeout: Duration::from_secs(10),
            max_auth_failures: 3,
            command_rate: 50,
            command_burst: 100,
            flood_factor: 10,
            flood_time: Duration::from_secs(5),
            epoch: unix_ms as u64,
            clock_unix_ms: unix_ms,
            clock_at: now,
        }
    }
}

/// Why the hub closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// More than `max_queued_bytes` not written, or a replay overtaken by the ring.
    SlowConsumer,
    /// Too many bad tokens, or a bad Bearer header.
    AuthFailed,
    /// No `auth` in time.
    AuthTimeout,
    /// `max_connections` reached.
    TooManyConnections,
    /// Its principal was removed or changed by a configuration reload.
    Revoked,
    /// The server is stopping.
    Shutdown,
    /// It kept sending far more messages than its rate limit.
    Flooding,
}

impl CloseReason {
    /// The reason text (WebSocket close reason, log lines).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::AuthFailed => "authentication failed",
            CloseReason::AuthTimeout => "authentication timed out",
            CloseReason::TooManyConnections => "too many connections",
            CloseReason::Revoked => "credentials revoked",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::Flooding => "too many messages",
        }
    }

    /// The WebSocket close code (RFC 6455 7.4.1): 1008 policy violation, 1013 try again later,
    /// 1001 going away.
    pub fn ws_code(self) -> u16 {
        match self {
            CloseReason::TooManyConnections => 1013,
            CloseReason::Shutdown => 1001,
            _ => 1008,
        }
    }

    /// Whether what is still queued for the connection should be dropped rather than sent first
    /// (a slow consumer would never take it).
    pub fn abort(self) -> bool {
        self == CloseReason::SlowConsumer
    }
}

/// What the hub wants done.
#[derive(Clone, Debug)]
pub enum HubOutput {
    /// Send this message (one JSON text) to the connection.
    Send { conn: u64, text: Arc<str> },
    /// Close the connection (after the messages sent before, unless `reason.abort()`). The hub has
    /// forgotten it already.
    Close { conn: u64, reason: CloseReason },
    /// Carry this command out and answer with [`Hub::command_result`] (same `conn` and `id`).
    /// Permission checks the hub can make are done; whose call it is, is for the call core.
    Execute { conn: u64, id: String, principal: PrincipalRef, command: Command },
}

/// Counters for /metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    pub connections: usize,
    pub authenticated: usize,
    /// The last seq published.
    pub seq: u64,
    pub ring_events: usize,
    pub ring_bytes: usize,
    pub events_sent: u64,
    pub slow_consumers: u64,
    pub auth_failures: u64,
    pub forbidden: u64,
    pub refused_connections: u64,
    /// Messages answered with `rate_limited`.
    pub rate_limited: u64,
    /// Connections closed for flooding.
    pub floods: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Unauthenticated,
    AwaitSnapshot,
    Replaying { next: u64 },
    Live,
}

/// How an authenticated connection starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// A snapshot, then live events (the default).
    Snapshot,
    /// `auth` with `since` (and maybe `epoch`): replay, or a snapshot after a gap.
    Resume(u64, Option<u64>),
    /// `auth` with `"snapshot": false`: live events from now on, no snapshot.
    Live,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Command,
    /// The client's own `snapshot` command.
    Snapshot,
    /// The snapshot after authentication or a resume gap (`#snapshot`).
    InitialSnapshot,
}

struct Conn {
    peer: PeerInfo,
    state: State,
    principal: Option<PrincipalRef>,
    queued: usize,
    failures: u32,
    pending: HashMap<String, Pending>,
    limiter: Limiter,
}

/// One connection's input rate: a token bucket, and the flood watch (see the module documentation).
struct Limiter {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
    /// The current one-second window: its start and the messages in it.
    window: Instant,
    count: u32,
    /// Consecutive windows at the flood rate.
    flooding: u32,
    /// Messages refused in the current episode (0: not limited).
    refused: u64,
}

/// What the limiter says of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admit {
    Yes,
    /// Refused: retry in this many ms.
    No(u64),
    /// Refused, and the connection must be closed.
    Close,
}

impl Limiter {
    fn new(now: Instant, cfg: &HubConfig) -> Limiter {
        Limiter { tokens: f64::from(cfg.command_burst), at: now, window: now, count: 0, flooding: 0, refused: 0 }
    }

    fn admit(&mut self, now: Instant, cfg: &HubConfig) -> Admit {
        if cfg.command_rate == 0 {
            return Admit::Yes;
        }
        let rate = f64::from(cfg.command_rate);
        // The flood watch, in whole one-second windows.
        let since = now.saturating_duration_since(self.window);
        if since >= Duration::from_secs(1) {
            let flood = u64::from(cfg.command_rate) * u64::from(cfg.flood_factor);
            self.flooding = if since < Duration::from_secs(2) && u64::from(self.count) >= flood { self.flooding + 1 } else { 0 };
            self.window += Duration::from_secs(since.as_secs());
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if cfg.flood_factor > 0 && u64::from(self.flooding) >= cfg.flood_time.as_secs().max(1) {
            return Admit::Close;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(cfg.command_burst.max(1)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admit::Yes
        } else {
            Admit::No((((1.0 - self.tokens) / rate) * 1000.0).ceil() as u64)
        }
    }
}

struct Stored {
    seq: u64,
    vis: Visibility,
    text: Arc<str>,
}

const SNAPSHOT_ID: &str = "#snapshot";
const AUTH_ID: &str = "#auth";

/// The CTI hub. See the module documentation for the connection state machine.
pub struct Hub {
    cfg: HubConfig,
    principals: Vec<PrincipalRef>,
    directory: Option<HashMap<String, String>>,
    conns: HashMap<u64, Conn>,
    seq: u64,
    ring: VecDeque<Stored>,
    ring_bytes: usize,
    out: VecDeque<HubOutput>,
    /// (deadline, conn) in open order; entries of connections no longer unauthenticated are stale.
    auth_deadlines: VecDeque<(Instant, u64)>,
    /// Connections in Replaying.
    replaying: usize,
    last_now: Instant,
    stats: HubStats,
}

impl Hub {
    pub fn new(principals: Vec<Principal>, cfg: HubConfig) -> Hub {
        let last_now = cfg.clock_at;
        Hub {
            principals: principals.into_iter().map(Arc::new).collect(),
            cfg,
            directory: None,
            conns: HashMap::new(),
            seq: 0,
            ring: VecDeque::new(),
            ring_bytes: 0,
            out: VecDeque::new(),
            auth_deadlines: VecDeque::new(),
            replaying: 0,
            last_now,
            stats: HubStats::default(),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Agent id → tenant, for the hub's own checks of supervisors' agent commands (without it the
    /// call core must check an agent's tenant). Replaces the previous directory.
    pub fn set_directory(&mut self, agents: impl IntoIterator<Item = (String, String)>) {
        self.directory = Some(agents.into_iter().collect());
    }

    /// Replaces the principals (configuration reload). Connections whose principal is gone or
    /// changed are closed with [`CloseReason::Revoked`].
    pub fn set_principals(&mut self, principals: Vec<Principal>) {
        self.principals = principals.into_iter().map(Arc::new).collect();
        let revoked: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.principal.as_ref().is_some_and(|p| !self.principals.iter().any(|q| **q == **p)))
            .map(|(id, _)| *id)
            .collect();
        for id in revoked {
            self.close(id, CloseReason::Revoked);
        }
    }

    /// The last seq published (0 before the first event).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn stats(&self) -> HubStats {
        HubStats {
            connections: self.conns.len(),
            authenticated: self.conns.values().filter(|c| c.principal.is_some()).count(),
            seq: self.seq,
            ring_events: self.ring.len(),
            ring_bytes: self.ring_bytes,
            ..self.stats.clone()
        }
    }

    /// The principal of an authenticated connection.
    pub fn principal(&self, conn: u64) -> Option<&PrincipalRef> {
        self.conns.get(&conn)?.principal.as_ref()
    }

    /// Milliseconds of the wall clock at `now`.
    pub fn at_ms(&self, now: Instant) -> i64 {
        if now >= self.cfg.clock_at {
            self.cfg.clock_unix_ms + now.duration_since(self.cfg.clock_at).as_millis() as i64
        } else {
            self.cfg.clock_unix_ms - self.cfg.clock_at.duration_since(now).as_millis() as i64
        }
    }

    // ---- connections ----------------------------------------------------------------------------

    /// A new connection. With a Bearer token in `peer`, it is authenticated at once (the outcome is a
    /// result with id `#auth`; a bad header token closes the connection).
    pub fn on_open(&mut self, now: Instant, conn: u64, peer: PeerInfo) {
        self.last_now = now;
        if self.conns.len() >= self.cfg.max_connections || self.conns.contains_key(&conn) {
            self.stats.refused_connections += 1;
            tracing::warn!(conn, remote = %peer.remote, max = self.cfg.max_connections, "cti: connection refused: too many connections");
            self.out.push_back(HubOutput::Close { conn, reason: CloseReason::TooManyConnections });
            return;
        }
        let bearer = peer.bearer.clone();
        let peer = PeerInfo { bearer: None, ..peer };
        self.conns.insert(
            conn,
            Conn {
                peer,
                state: State::Unauthenticated,
                principal: None,
                queued: 0,
                failures: 0,
                pending: HashMap::new(),
                limiter: Limiter::new(now, &self.cfg),
            },
        );
        self.auth_deadlines.push_back((now + self.cfg.auth_timeout, conn));
        if let Some(token) = bearer {
            self.authenticate(conn, AUTH_ID, &token, Start::Snapshot, true);
        }
    }

    /// The connection is gone (the peer closed, or the shell closed it).
    pub fn on_close(&mut self, conn: u64) {
        if let Some(c) = self.conns.remove(&conn) {
            if matches!(c.state, State::Replaying { .. }) {
                self.replaying -= 1;
            }
            tracing::debug!(conn, remote = %c.peer.remote, "cti: connection closed");
        }
    }

    /// `bytes` of what was sent to `conn` have been written to its socket (or dropped with it).
    pub fn on_sent(&mut self, conn: u64, bytes: usize) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.queued = c.queued.saturating_sub(bytes);
        if matches!(c.state, State::Replaying { .. }) {
            self.pump(conn);
        }
    }

    /// One message (a JSON text) from the client.
    pub fn on_message(&mut self, now: Instant, conn: u64, text: &str) {
        self.last_now = now;
        let Some(c) = self.conns.get_mut(&conn) else { return };
        match c.limiter.admit(now, &self.cfg) {
            Admit::Yes => {
                if c.limiter.refused > 0 {
                    tracing::info!(conn, remote = %c.peer.remote, refused = c.limiter.refused, "cti: rate limit lifted");
                    c.limiter.refused = 0;
                }
            }
            Admit::No(retry_ms) => {
                self.stats.rate_limited += 1;
                c.limiter.refused += 1;
                if c.limiter.refused == 1 {
                    let who = c.principal.as_ref().map(|p| p.name.as_str()).unwrap_or("-");
                    tracing::warn!(conn, remote = %c.peer.remote, principal = %who, rate = self.cfg.command_rate, burst = self.cfg.command_burst, "cti: rate limited: messages refused until the connection slows down");
                }
                let (rate, burst) = (self.cfg.command_rate, self.cfg.command_burst);
                // The id, to match the refusal to its request (the message is read, not carried out).
                let id = if text.len() <= self.cfg.max_message {
                    match parse_request(text) {
                        Ok(r) => Some(r.id),
                        Err(rej) => rej.id,
                    }
                } else {
                    None
                };
                self.reply_err(conn, id.as_deref(), CtiError::RateLimited { rate, burst, retry_ms });
                return;
            }
            Admit::Close => {
                self.stats.floods += 1;
                let who = c.principal.as_ref().map(|p| p.name.as_str()).unwrap_or("-");
                tracing::warn!(conn, remote = %c.peer.remote, principal = %who, refused = c.limiter.refused, factor = self.cfg.flood_factor, secs = self.cfg.flood_time.as_secs(), "cti: closing a flooding connection: messages at many times the rate limit");
                self.close(conn, CloseReason::Flooding);
                return;
            }
        }
        if text.len() > self.cfg.max_message {
            self.reply_err(conn, None, CtiError::TooLarge { len: text.len(), max: self.cfg.max_message });
            return;
        }
        let req = match parse_request(text) {
            Ok(r) => r,
            Err(rej) => {
                self.reply_err(conn, rej.id.as_deref(), rej.error);
                return;
            }
        };
        let id = req.id.as_str();
        let args = Args(&req.args);
        let state = self.conns[&conn].state;
        match (req.cmd.as_str(), state) {
            ("ping", _) => {
                let v = json!({ "pong": true, "seq": self.seq, "epoch": self.cfg.epoch });
                self.reply_ok(conn, id, &v);
            }
            ("auth", State::Unauthenticated) => {
                let parsed = (|| {
                    let token = args.str("token", 1024)?;
                    let since = args.opt_u64("since")?;
                    let snapshot = match args.0.get("snapshot") {
                        None | Some(Value::Null) => true,
                        Some(_) => args.bool("snapshot")?,
                    };
                    Ok::<_, CtiError>((token, since, args.opt_u64("epoch")?, snapshot))
                })();
                match parsed {
                    Ok((token, since, epoch, snapshot)) => {
                        let start = match since {
                            Some(s) => Start::Resume(s, epoch),
                            None if snapshot => Start::Snapshot,
                            None => Start::Live,
                        };
                        self.authenticate(conn, id, token, start, false)
                    }
                    Err(e) => self.reply_err(conn, Some(id), e),
                }
            }
            ("auth", _) => {
                let who = self.conns[&conn].principal.as_ref().map(|p| p.name.clone()).unwrap_or_default();
                self.reply_err(conn, Some(id), CtiError::WrongState(format!("already authenticated as {who:?}")));
            }
            (_, State::Unauthenticated) => self.reply_err(
                conn,
                Some(id),
                CtiError::Unauthenticated(format!("send auth with a token before {:?}", truncate(&req.cmd, 64))),
            ),
            ("resume", _) => match (args.opt_u64("since"), args.opt_u64("epoch")) {
                (Ok(Some(since)), Ok(epoch)) => {
                    self.resume(conn, Some(id), since, epoch);
                }
                (Ok(None), _) => self.reply_err(conn, Some(id), CtiError::MissingField("args.since".into())),
                (Err(e), _) | (_, Err(e)) => self.reply_err(conn, Some(id), e),
            },
            (cmd, _) => self.command(conn, id, cmd, &req.args),
        }
    }

    fn command(&mut self, conn: u64, id: &str, cmd: &str, args: &serde_json::Map<String, Value>) {
        let c = self.conns.get_mut(&conn).expect("checked by on_message");
        let principal = c.principal.clone().expect("authenticated");
        let checked = parse_command(cmd, args, &principal).and_then(|command| {
            command.authorize(&principal, self.directory.as_ref())?;
            Ok(command)
        });
        let command = match checked {
            Ok(c) => c,
            Err(e) => {
                if let CtiError::Forbidden(why) = &e {
                    self.stats.forbidden += 1;
                    tracing::warn!(conn, remote = %c.peer.remote, principal = %principal.name, cmd, reason = %why, "cti: forbidden");
                }
                self.reply_err(conn, Some(id), e);
                return;
            }
        };
        if c.pending.contains_key(id) {
            self.reply_err(conn, Some(id), CtiError::BadRequest(format!("id {id:?} is still in use by a command in progress")));
            return;
        }
        if c.pending.len() >= self.cfg.max_inflight {
            let e = CtiError::Busy(format!("{} commands are waiting for their result; wait for one", c.pending.len()));
            self.reply_err(conn, Some(id), e);
            return;
        }
        let kind = if command == Command::Snapshot { Pending::Snapshot } else { Pending::Command };
        c.pending.insert(id.to_owned(), kind);
        tracing::debug!(conn, principal = %principal.name, cmd = command.name(), id, "cti: command");
        self.out.push_back(HubOutput::Execute { conn, id: id.to_owned(), principal, command });
    }

    /// The call core's answer to an `Execute`.
    pub fn command_result(&mut self, conn: u64, id: &str, result: Result<Value, CtiError>) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Some(kind) = c.pending.remove(id) else {
            tracing::debug!(conn, id, "cti: result for no pending command (cancelled or answered twice)");
            return;
        };
        match (kind, result) {
            (Pending::Command, Ok(v)) => self.reply_ok(conn, id, &v),
            (Pending::Command | Pending::Snapshot, Err(e)) => {
                if let CtiError::Forbidden(why) = &e {
                    // Refused by the call core (whose call it is): counted and logged as the hub's own.
                    self.stats.forbidden += 1;
                    tracing::warn!(conn, remote = %c.peer.remote, principal = %c.principal.as_ref().map(|p| p.name.as_str()).unwrap_or("?"), id, reason = %why, "cti: forbidden");
                }
                self.reply_err(conn, Some(id), e)
            }
            (Pending::Snapshot, Ok(v)) => {
                self.send_snapshot(conn, &v);
                let seq = json!({ "seq": self.seq });
                self.reply_ok(conn, id, &seq);
            }
            (Pending::InitialSnapshot, r) => {
                if c.state != State::AwaitSnapshot {
                    return;
                }
                c.state = State::Live;
                match r {
                    Ok(v) => self.send_snapshot(conn, &v),
                    Err(e) => self.reply_err(conn, Some(SNAPSHOT_ID), e),
                }
            }
        }
    }

    // ---- events ---------------------------------------------------------------------------------

    /// Publishes an event: it gets the next seq, is kept for replay, and goes to every live
    /// connection whose principal may see it.
    pub fn publish(&mut self, now: Instant, ev: super::Event) {
        self.last_now = now;
        self.seq += 1;
        let seq = self.seq;
        let text: Arc<str> = Arc::from(proto::write_event(seq, &ev.kind, self.at_ms(now), &ev.data));
        let limit = self.cfg.max_queued_bytes;
        let mut slow = Vec::new();
        for (&id, c) in self.conns.iter_mut() {
            if c.state != State::Live {
                continue;
            }
            let Some(p) = &c.principal else { continue };
            if !p.may_see(&ev.vis) {
                continue;
            }
            if c.queued + text.len() > limit {
                slow.push(id);
                continue;
            }
            c.queued += text.len();
            self.stats.events_sent += 1;
            self.out.push_back(HubOutput::Send { conn: id, text: text.clone() });
        }
        for id in slow {
            self.slow_consumer(id);
        }
        if self.cfg.replay_events == 0 {
            return;
        }
        while !self.ring.is_empty()
            && (self.ring.len() >= self.cfg.replay_events || self.ring_bytes + text.len() > self.cfg.replay_bytes)
        {
            let old = self.ring.pop_front().expect("not empty");
            self.ring_bytes -= old.text.len();
        }
        self.ring_bytes += text.len();
        self.ring.push_back(Stored { seq, vis: ev.vis, text });
        if self.replaying > 0 {
            // A replay the ring has overtaken cannot be completed: the client cannot keep up.
            let oldest = self.oldest_seq();
            let overrun: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(c.state, State::Replaying { next } if next < oldest))
                .map(|(id, _)| *id)
                .collect();
            for id in overrun {
                self.slow_consumer(id);
            }
        }
    }

    /// The seq of the oldest event kept (`seq + 1` when none is).
    fn oldest_seq(&self) -> u64 {
        self.ring.front().map_or(self.seq + 1, |s| s.seq)
    }

    fn send_snapshot(&mut self, conn: u64, data: &Value) {
        let text = proto::write_event(self.seq, events::SNAPSHOT, self.at_ms(self.last_now), data);
        self.send(conn, text.into());
    }

    /// `resume` (or `auth` with `since`): replay from `since + 1`, or report the gap (`id` given)
    /// and start a snapshot. Returns whether the replay could start.
    fn resume(&mut self, conn: u64, id: Option<&str>, since: u64, epoch: Option<u64>) -> bool {
        let oldest = self.oldest_seq();
        let gap = epoch.is_some_and(|e| e != self.cfg.epoch) || since > self.seq || since + 1 < oldest;
        let c = self.conns.get_mut(&conn).expect("caller checked");
        if matches!(c.state, State::Replaying { .. }) {
            self.replaying -= 1;
        }
        if gap {
            if let Some(id) = id {
                self.reply_err(conn, Some(id), CtiError::ResumeGap { since, oldest });
            }
            self.start_snapshot(conn);
            return false;
        }
        c.pending.remove(SNAPSHOT_ID); // a pending snapshot is superseded: its answer is dropped
        c.state = State::Replaying { next: since + 1 };
        self.replaying += 1;
        if let Some(id) = id {
            let v = json!({ "from": since + 1, "last_seq": self.seq, "epoch": self.cfg.epoch });
            self.reply_ok(conn, id, &v);
        }
        self.pump(conn);
        true
    }

    fn start_snapshot(&mut self, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.state = State::AwaitSnapshot;
        let Some(principal) = c.principal.clone() else { return };
        if c.pending.insert(SNAPSHOT_ID.to_owned(), Pending::InitialSnapshot).is_none() {
            self.out.push_back(HubOutput::Execute {
                conn,
                id: SNAPSHOT_ID.to_owned(),
                principal,
                command: Command::Snapshot,
            });
        }
    }

    /// Moves a replay forward while the connection's queue is below half its limit.
    fn pump(&mut self, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let State::Replaying { mut next } = c.state else { return };
        let oldest = self.ring.front().map_or(self.seq + 1, |s| s.seq);
        if next < oldest {
            self.slow_consumer(conn);
            return;
        }
        let p = c.principal.clone().expect("authenticated");
        let budget = self.cfg.max_queued_bytes / 2;
        while next <= self.seq && c.queued < budget {
            let e = &self.ring[(next - oldest) as usize];
            debug_assert_eq!(e.seq, next);
            if p.may_see(&e.vis) {
                c.queued += e.text.len();
                self.stats.events_sent += 1;
                self.out.push_back(HubOutput::Send { conn, text: e.text.clone() });
            }
            next += 1;
        }
        if next > self.seq {
            c.state = State::Live;
            self.replaying -= 1;
        } else {
            c.state = State::Replaying { next };
        }
    }

    // ---- authentication -------------------------------------------------------------------------

    fn authenticate(&mut self, conn: u64, id: &str, token: &str, start: Start, header: bool) {
        let hash = token_hash(token);
        // Compare with every principal, in constant time each.
        let mut found = None;
        for p in &self.principals {
            if ct_eq(&hash, &p.token_sha256) && found.is_none() {
                found = Some(p.clone());
            }
        }
        let c = self.conns.get_mut(&conn).expect("caller checked");
        let Some(p) = found else {
            c.failures += 1;
            self.stats.auth_failures += 1;
            tracing::warn!(conn, remote = %c.peer.remote, transport = c.peer.transport.as_str(), failures = c.failures, "cti: authentication failed: unknown token");
            let close = header || c.failures >= self.cfg.max_auth_failures;
            self.reply_err(conn, Some(id), CtiError::Unauthenticated("the token is not known".into()));
            if close {
                self.close(conn, CloseReason::AuthFailed);
            }
            return;
        };
        tracing::info!(conn, remote = %c.peer.remote, principal = %p.name, role = p.role.as_str(), "cti: authenticated");
        c.principal = Some(p.clone());
        let mut v = json!({
            "principal": p.name,
            "role": p.role.as_str(),
            "tenant": p.tenant,
            "agent": p.agent,
            "epoch": self.cfg.epoch,
            "seq": self.seq,
            "server": concat!("callgate/", env!("CARGO_PKG_VERSION")),
        });
        match start {
            Start::Snapshot => {
                self.reply_ok(conn, id, &v);
                self.start_snapshot(conn);
            }
            Start::Live => {
                c.state = State::Live;
                self.reply_ok(conn, id, &v);
            }
            Start::Resume(since, epoch) => {
                let oldest = self.oldest_seq();
                let can = epoch.is_none_or(|e| e == self.cfg.epoch) && since <= self.seq && since + 1 >= oldest;
                v["resumed"] = Value::Bool(can);
                self.reply_ok(conn, id, &v);
                self.resume(conn, None, since, epoch);
            }
        }
    }

    // ---- timers ---------------------------------------------------------------------------------

    /// When [`Hub::handle_timeout`] is due (an authentication deadline), if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.auth_deadlines.front().map(|(t, _)| *t)
    }

    /// Closes the connections that did not authenticate in time.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        while let Some(&(t, conn)) = self.auth_deadlines.front() {
            if t > now {
                break;
            }
            self.auth_deadlines.pop_front();
            if self.conns.get(&conn).is_some_and(|c| c.state == State::Unauthenticated) {
                let secs = self.cfg.auth_timeout.as_secs_f64();
                self.reply_err(conn, Some(AUTH_ID), CtiError::Unauthenticated(format!("no auth within {secs} s")));
                self.close(conn, CloseReason::AuthTimeout);
            }
        }
    }

    /// Closes every connection (server shutdown).
    pub fn close_all(&mut self) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, CloseReason::Shutdown);
        }
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<HubOutput> {
        self.out.pop_front()
    }

    // ---- sending --------------------------------------------------------------------------------

    fn reply_ok(&mut self, conn: u64, id: &str, v: &Value) {
        self.send(conn, proto::write_ok(Some(id), v).into());
    }

    fn reply_err(&mut self, conn: u64, id: Option<&str>, e: CtiError) {
        self.send(conn, proto::write_err(id, &e).into());
    }

    fn send(&mut self, conn: u64, text: Arc<str>) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.queued + text.len() > self.cfg.max_queued_bytes {
            self.slow_consumer(conn);
            return;
        }
        c.queued += text.len();
        self.out.push_back(HubOutput::Send { conn, text });
    }

    fn slow_consumer(&mut self, conn: u64) {
        if let Some(c) = self.conns.get(&conn) {
            self.stats.slow_consumers += 1;
            let who = c.principal.as_ref().map(|p| p.name.as_str()).unwrap_or("-");
            tracing::warn!(conn, remote = %c.peer.remote, principal = %who, queued = c.queued, "cti: slow consumer disconnected");
        }
        self.close(conn, CloseReason::SlowConsumer);
    }

    fn close(&mut self, conn: u64, reason: CloseReason) {
        if let Some(c) = self.conns.remove(&conn) {
            if matches!(c.state, State::Replaying { .. }) {
                self.replaying -= 1;
            }
            self.out.push_back(HubOutput::Close { conn, reason });
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
