//! The call core: what callgate does with each call. Sans-IO: it takes `now` and inputs
//! (SIP messages, media events), and hands back outputs (datagrams to send, media commands,
//! call records) and its next deadline. It owns the transaction layer.
//!
//! # Contract
//! After every `handle_*` call, drain [`Core::poll_output`] until it returns `None`, then arm
//! one timer for [`Core::poll_timeout`] and call [`Core::handle_timeout`] when it fires.
//!
//! # What happens to a request
//! ```text
//!  datagram ──parse──▶ error ─────────────────────────────▶ 400 (stateless, when a response can be built)
//!     │
//!     ├── source in no trunk's networks, and not inside
//!     │   a dialog callgate holds ─────────────────────────▶ 403 (stateless; the record budget bounds floods)
//!     ├── validate_request / UAS checks fail ──────────────▶ 400 / 505 / 416 / 420 / 415 / 406 (stateless)
//!     └── transaction layer ──▶ new request ──▶ INVITE / BYE / CANCEL / OPTIONS / others
//! ```
//! Every response goes where RFC 3261 18.2.2 / RFC 3581 say (the source with `rport`, else the Via
//! port) and carries `received`/`rport` on its top Via.
//!
//! # An inbound call (the caller's leg, "A")
//! ```text
//!   INVITE ─▶ 100 Trying
//!     ├─ same Call-ID/From tag/CSeq as a live call ─▶ 482 (a merged request)
//!     ├─ number unknown ─────────────▶ 404                       (record: not_found)
//!     ├─ edge full / calls/s / backlog / shutting down ─▶ 503 + Retry-After (record: busy / shutdown)
//!     ├─ no codec in common ─────────▶ 488                       (record: not_acceptable)
//!     ├─ guidance service:
//!     │     200 OK + SDP ─▶ [Answered] ──ACK──▶ [Playing] ──prompts end──▶ BYE (record: completed)
//!     │                        │  no ACK in 64*T1 ──▶ BYE     (record: failed)
//!     │                        │  shutdown ──▶ BYE once the ACK comes (RFC 3261 15)
//!     │                        └─ caller BYE ──▶ 200          (record: abandoned)
//!     │     re-INVITE: same media ─▶ 200 (same SDP); changed media ─▶ 488, session unchanged
//!     └─ bridge service (B2BUA):
//!           INVITE ─▶ B  [Ringing]  B 1xx ─▶ A 1xx
//!             B 2xx ─▶ ACK B (delayed offer: after A's ACK, with A's answer), 200 ─▶ A  [Connected]
//!                ──BYE either side──▶ 200, BYE other                       (record: bridged)
//!             another fork's 2xx ─▶ ACK + BYE to that fork
//!             B 3xx-6xx / timeout ─▶ same code (3xx with Contact) / 408 ─▶ A  (record: failed or busy)
//!             ringing 60 s ─▶ CANCEL B, 480 ─▶ A                           (record: failed)
//!             A CANCEL or early BYE ─▶ 200, 487 ─▶ A, CANCEL ─▶ B          (record: cancelled)
//!             B 2xx after A left ─▶ ACK + BYE to B
//! ```

mod consult;
mod cti;
mod dialog;
mod flow;
mod journey;
mod ports;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use thiserror::Error;

use crate::config::{Profile, Service, Trunk};
use crate::media::{sdp, Codec};
use crate::metrics::{Counter, Mark, Metrics, Stage};
use crate::records::{CallRecord, Outcome};
use crate::sip::build::{RequestBuilder, ResponseBuilder};
use crate::sip::msg::{HeaderName, Message, Method};
use crate::sip::txn::{IdMap, Incoming, TxnConfig, TxnEvent, TxnId, TxnLayer};
use crate::sip::uri::Uri;
use crate::sip::{Peer, Rng, Transmit, Transport};

pub use dialog::Dialog;
pub use ports::PortPool;

pub use crate::media::command::{CallKey, Leg, LegMedia, MediaCommand, MediaEvent, MediaFailure};

/// An output of the core for the shell.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a record per call, moved once: boxing it would add an allocation per call
pub enum Output {
    Transmit(Transmit),
    Media(MediaCommand),
    Record(CallRecord),
    /// An ACD event for the queue log.
    QueueLog(crate::acd::log::QueueEvent),
    /// A pending callback to store (it survives restarts), or to delete (done or given up).
    CallbackStore(crate::records::CallbackRecord),
    CallbackDelete(u64),
    /// A latency measurement: record `since.elapsed()` once the outputs before it are handed on.
    Measured(Mark),
    /// An event for the CTI stream.
    Cti(crate::cti::Event),
}

/// Why the core could not be built from a profile.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("the ACD refused the profile: {0}")]
    Acd(#[from] crate::acd::AcdError),
    #[error("service {service:?} bridges to {target:?}, which is not a sip: URI with an IP address")]
    BadBridgeTarget { service: String, target: String },
}

/// The core's settings, derived once from the profile.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Our SIP address as written in Via, Contact and From.
    pub local_sip: SocketAddr,
    /// The address written in SDP `c=` lines.
    pub media_ip: IpAddr,
    pub rtp_ports: (u16, u16),
    pub max_calls: usize,
    /// New calls per second; 0 = no limit.
    pub max_cps: u32,
    pub retry_after_s: u32,
    pub user_agent: String,
    pub txn: TxnConfig,
}

impl CoreConfig {
    pub fn from_profile(p: &Profile) -> CoreConfig {
        CoreConfig {
            local_sip: p.listen.sip,
            media_ip: p.media.address,
            rtp_ports: p.media.rtp_ports,
            max_calls: p.limits.max_calls,
            max_cps: p.limits.max_cps,
            retry_after_s: p.limits.retry_after_s,
            user_agent: p.sip.user_agent.clone(),
            txn: TxnConfig {
                t1: Duration::from_millis(p.sip.t1_ms),
                t2: Duration::from_millis(p.sip.t2_ms),
                t4: Duration::from_millis(p.sip.t4_ms),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// 200 sent to the caller, waiting for the ACK (guidance services).
    Answered,
    /// The guidance plays.
    Playing,
    /// The service's DTMF menu runs.
    Menu,
    /// Waiting in an ACD queue: music and announcements; agents may be ringing.
    Queued,
    /// A last message plays (closed, queue full, maximum wait), then callgate hangs up.
    Closing,
    /// Bridge service: INVITE sent to the target, no final answer yet; the caller has none either.
    Ringing,
    /// Caller and agent (or bridge target) talk through callgate's media bridge.
    Connected,
    /// A callback: callgate dials the citizen (the A leg is callgate's own INVITE, ringing).
    Dialing,
}

/// A B leg being offered: an agent's phone ringing for a queued call, or a bridge target.
struct Offer {
    agent: Option<crate::acd::AgentRef>,
    txn: TxnId,
    invite: Message,
    dialog: Dialog,
    port: u16,
    sdp: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
    /// The consulted party (see [`consult`]).
    C,
    /// A supervisor's phone (see [`consult`]).
    D,
}

impl Side {
    fn leg(self) -> Leg {
        match self {
            Side::A => Leg::A,
            Side::B => Leg::B,
            Side::C => Leg::C,
            Side::D => Leg::D,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    BInvite,
    /// Our INVITE to a consulted party (C) or a supervisor (D).
    SideInvite(Leg),
    /// `NOTIFY (Event: talk)`: the desktop answers the ringing phone.
    Notify,
    Bye,
    Cancel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// A playlist toward a caller who gave no media address: its end, as if it had played.
    PlaybackEnd,
    /// The caller's menu waits for a key.
    Menu,
    /// Once a second: `queue.stats` to the CTI stream (call key 0).
    StatsTick,
    /// A closed service offered a callback and the caller pressed nothing.
    ClosedOffer,
    /// A bridge leg that rings too long (a 1xx stops Timer B, RFC 3261 17.1.1.2): CANCEL it.
    RingTimeout,
}

/// Records a second for INVITEs refused before any transaction exists (see `record_refused_invite`).
pub const REFUSED_RECORDS_PER_S: u32 = 50;

/// How long a bridge target may ring before callgate gives up (RFC 3261 leaves it to the UA).
pub const RING_TIMEOUT: Duration = Duration::from_secs(60);

struct Call {
    cg_id: String,
    state: State,
    a: Dialog,
    /// The caller's INVITE server transaction.
    a_invite: TxnId,
    a_invite_msg: Message,
    /// The connected B leg (agent or bridge target) once it answered.
    b: Option<Dialog>,
    /// B legs ringing.
    offers: Vec<Offer>,
    tenant: String,
    trunk: String,
    service: String,
    caller: String,
    number: String,
    source: SocketAddr,
    transport: Transport,
    arrived: Instant,
    /// When the caller got its 200.
    answered: Option<Instant>,
    /// The caller leg's RTP port.
    media_port: Option<u16>,
    /// What the caller leg negotiated (None until known: a delayed offer waits for the ACK).
    a_media: Option<(LegMedia, sdp::Direction)>,
    /// The caller leg's port is open in the media engine.
    a_open: bool,
    /// Early media: 183 with our SDP sent; the 200 (same SDP) comes when the caller enters the queue.
    early: bool,
    /// The service's guidance playlist (prompt names).
    guidance: Vec<String>,
    /// Our SDP on the caller's leg: the answer to session refreshes.
    local_sdp: Option<Bytes>,
    /// The caller's (Call-ID, From tag): its entry in `Core::origins`.
    origin: Option<(String, String)>,
    /// Shutdown came before the caller's ACK: BYE once it arrives (RFC 3261 15).
    bye_on_ack: bool,
    /// DTMF digits the caller pressed, in order (for the record and menus).
    digits: String,
    menu: Option<crate::media::menu::Menu>,
    /// The menu's choice, which travels with the call (queue, skill).
    choice: Option<crate::media::menu::MenuChoice>,
    /// The queue the caller waits or waited in.
    queue: Option<String>,
    queued_at: Option<Instant>,
    /// The agent who took the call.
    agent: Option<crate::acd::AgentRef>,
    /// The B leg's RTP port, what it negotiated, and our SDP toward it.
    b_port: Option<u16>,
    b_media: Option<(LegMedia, sdp::Direction)>,
    b_sdp: Option<Bytes>,
    /// When caller and agent were connected.
    talk_from: Option<Instant>,
    /// Which leg holds the other, since when; and the hold time so far.
    held: Option<(Leg, Instant)>,
    hold_ms: u64,
    /// The recording file, when the service records.
    recording: Option<String>,
    /// Why the call ended, beyond the outcome (e.g. "rtp timeout", "queue full").
    end_reason: Option<String>,
    /// The o= version of our next SDP toward the caller (RFC 3264 8: +1 per change).
    sdp_version: u32,
    /// When a playlist toward a caller without media "ends" (see `play_a`).
    play_deadline: Option<Instant>,
    /// A callback call: the ACD's callback id and the agent reserved for it. Its A leg is callgate's
    /// INVITE to the citizen, so there is no server transaction to answer.
    callback: Option<(u64, crate::acd::AgentRef)>,
    /// The case's data attached by the CTI (note, subject, ...): travels with transfers.
    data: serde_json::Map<String, serde_json::Value>,
    /// The agent who had the call before a transfer, and their talk time.
    last_agent: Option<crate::acd::AgentRef>,
    transfer_talk_ms: u64,
    transferred_to: Option<String>,
    /// Closed service: the callback offer after the closed message has been played.
    closed_offer: bool,
    /// The agent's consultation of a department (leg C), if any.
    consult: Option<consult::Consult>,
    /// A supervisor listening in, whispering or barging (leg D), if any.
    monitor: Option<consult::Monitor>,
    /// What legs A, B, C, D were last told to hear while a consultation or monitoring ran.
    heard: [Option<consult::Hear>; 4],
}

/// The call core. See the module docs for the state diagram.
pub struct Core {
    cfg: CoreConfig,
    profile: Arc<Profile>,
    metrics: Arc<Metrics>,
    txn: TxnLayer,
    rng: Rng,
    ports: PortPool,
    calls: IdMap<CallKey, Call>,
    /// (Call-ID, our tag) → call and side; looked up through [`dkey`] without allocating.
    dialogs: HashMap<(String, String), (CallKey, Side)>,
    /// The caller's INVITE server transaction → call.
    a_invites: IdMap<TxnId, CallKey>,
    /// Our client transactions → call and purpose.
    clients: IdMap<TxnId, (CallKey, Purpose)>,
    /// The budget of records for statelessly refused INVITEs: tokens, and when last filled.
    refused_budget: (f64, Instant),
    /// (Call-ID, From tag) of each caller's INVITE → call and CSeq, to spot merged requests.
    origins: HashMap<(String, String), (CallKey, u32)>,
    /// Our CANCEL transactions → the INVITE transaction they cancel.
    cancelled: IdMap<TxnId, TxnId>,
    timers: BinaryHeap<Reverse<(Instant, CallKey, TimerKind)>>,
    prompt_durations: HashMap<String, Duration>,
    outputs: VecDeque<Output>,
    next_key: CallKey,
    draining: bool,
    /// Set by the shell while its SIP input is backlogged: new calls get 503 at once.
    backlogged: bool,
    /// The calls-per-second bucket: tokens, and when it was last filled.
    cps_bucket: (f64, Instant),
    /// Instant ↔ wall clock, fixed at construction (records carry Unix milliseconds).
    epoch: (Instant, SystemTime),
    /// Every service's bridge target → where and how to send its INVITEs (parsed once).
    bridge_targets: HashMap<String, (SocketAddr, Transport)>,
    acd: crate::acd::Acd,
    registrar: crate::sip::registrar::Registrar,
    /// (tenant, service) → the service's menu.
    menus: HashMap<(String, String), Arc<crate::media::menu::MenuSpec>>,
    /// Agents whose registration logs them in and out.
    login_on_register: std::collections::HashSet<crate::acd::AgentRef>,
    /// Agents whose phones ring until answered (no `answer-after=0`): `call.answer` answers them.
    manual_answer: std::collections::HashSet<crate::acd::AgentRef>,
    /// How to reach each pending callback's citizen: the trunk the call came in on.
    callback_routes: HashMap<u64, journey::CallbackRoute>,
    /// Callback ids written to the records database (to delete the ones that are done).
    callbacks_stored: std::collections::HashSet<u64>,
    /// A callback changed since the last sync to the records database.
    callbacks_dirty: bool,
    /// Live statistics from the queue log and the records (queue.stats events, /stats/live).
    stats: crate::stats::Stats,
    /// Ended calls (tenant, agent) by callgate id, for wrap-up dispositions that come after.
    recent: HashMap<String, (String, Option<crate::acd::AgentRef>)>,
    /// Each tenant's last carrier route (scheduled callbacks go out the same way).
    last_route: HashMap<String, journey::CallbackRoute>,
    last_queue_stats: HashMap<(String, String), crate::cti::events::QueueStats>,
    /// (tenant, caller) → arrival times of the last 7 days (repeat callers).
    contacts: HashMap<(String, String), VecDeque<i64>>,
    /// A `StatsTick` is scheduled (ticks run while anything happens in the queues).
    stats_tick_pending: bool,
}

impl Core {
    /// `prompt_durations`: the length of every prompt a service may play (for calls without media).
    pub fn new(
        profile: Arc<Profile>,
        metrics: Arc<Metrics>,
        prompt_durations: HashMap<String, Duration>,
        seed: u64,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Core, CoreError> {
        let mut bridge_targets = HashMap::new();
        for t in &profile.tenants {
            for s in &t.services {
                if let Some(target) = &s.bridge_to {
                    let Some(dst) = dialog::uri_socket_addr(target) else {
                        return Err(CoreError::BadBridgeTarget { service: s.name.clone(), target: target.clone() });
                    };
                    bridge_targets.insert(target.clone(), (dst, bridge_transport(target)));
                }
            }
        }
        let cfg = CoreConfig::from_profile(&profile);
        let cfg_max_cps = cfg.max_cps;
        let mut rng = Rng::seeded(seed);
        let wall_ms = wall.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let acd = crate::acd::Acd::new(journey::acd_spec(&profile), rng.next_u64(), now, wall_ms)?;
        let mut registrar = crate::sip::registrar::Registrar::new(
            crate::sip::registrar::RegistrarConfig::default(),
            journey::credentials(&profile),
            &mut rng,
        );
        registrar.set_wall_clock(now, wall_ms);
        // Which digest algorithms the 401 offers: `[sip] digest_algorithms` (default MD5 only:
        // baresip 1.0 and SIPp 3.6 fail on any SHA-256 challenge in the 401, even beside MD5, instead
        // of answering the one they support as RFC 8760 asks). Credentials of either algorithm that
        // was offered are checked.
        let algs: Vec<crate::sip::digest::Algorithm> =
            profile.sip.digest_algorithms.iter().filter_map(|a| crate::sip::digest::Algorithm::from_token(a)).collect();
        registrar.set_challenge_order(&algs);
        let mut login_on_register = std::collections::HashSet::new();
        let mut manual_answer = std::collections::HashSet::new();
        for t in &profile.tenants {
            for a in &t.agents {
                if let Some(r) = acd.agent_by_extension(Some(&t.id), &a.extension) {
                    if a.login_on_register {
                        login_on_register.insert(r);
                    }
                    if !a.auto_answer {
                        manual_answer.insert(r);
                    }
                }
            }
        }
        let menus = journey::menus(&profile);
        let timers = BinaryHeap::new();
        Ok(Core {
            acd,
            registrar,
            menus,
            login_on_register,
            manual_answer,
            callback_routes: HashMap::new(),
            callbacks_stored: Default::default(),
            callbacks_dirty: false,
            stats: crate::stats::Stats::new(stats_config_for(&profile)),
            recent: HashMap::new(),
            last_route: HashMap::new(),
            last_queue_stats: HashMap::new(),
            contacts: HashMap::new(),
            stats_tick_pending: false,
            txn: TxnLayer::new(cfg.txn),
            ports: PortPool::new(cfg.rtp_ports.0, cfg.rtp_ports.1),
            cfg,
            profile,
            metrics,
            rng,
            calls: IdMap::default(),
            dialogs: HashMap::new(),
            a_invites: IdMap::default(),
            clients: IdMap::default(),
            cancelled: IdMap::default(),
            origins: HashMap::new(),
            refused_budget: (f64::from(REFUSED_RECORDS_PER_S), now),
            timers,
            prompt_durations,
            outputs: VecDeque::new(),
            next_key: 1,
            draining: false,
            backlogged: false,
            cps_bucket: (f64::from(cfg_max_cps), now),
            epoch: (now, wall),
            bridge_targets,
        })
    }

    /// The shell says whether its SIP input is backlogged. While it is, new calls are refused
    /// with 503 and Retry-After: a fast "no" rather than every call slowing down.
    pub fn set_backlogged(&mut self, backlogged: bool) {
        if backlogged != self.backlogged {
            tracing::warn!(backlogged, "SIP input backlog changed");
        }
        self.backlogged = backlogged;
    }

    /// Takes one token from the calls-per-second bucket (burst: one second's worth).
    fn admit_cps(&mut self, now: Instant) -> bool {
        let rate = self.cfg.max_cps;
        if rate == 0 {
            return true;
        }
        let (tokens, last) = self.cps_bucket;
        let refill = now.saturating_duration_since(last).as_secs_f64() * f64::from(rate);
        let tokens = (tokens + refill).min(f64::from(rate));
        if tokens >= 1.0 {
            self.cps_bucket = (tokens - 1.0, now);
            true
        } else {
            self.cps_bucket = (tokens, now);
            false
        }
    }

    /// True when `msg` carries a To tag of a dialog callgate holds.
    fn in_known_dialog(&self, msg: &Message) -> bool {
        let (Some(cid), Ok(to)) = (msg.call_id(), msg.to_hdr()) else { return false };
        to.tag().is_some_and(|tag| self.dialogs.contains_key(dkey(&(cid, tag))))
    }

    /// Requests callgate sent and still awaits a final answer to (BYE, CANCEL, INVITE to a bridge
    /// target). A draining edge stops when this and [`Core::active_calls`] are zero.
    pub fn awaiting_answers(&self) -> usize {
        self.clients.len()
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Live transactions (for shutdown: the core is idle when both are zero).
    pub fn live_transactions(&self) -> usize {
        self.txn.len()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(o) = self.outputs.pop_front() {
            return Some(o);
        }
        self.txn.poll_transmit().map(Output::Transmit)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.peek().map(|Reverse((t, _, _))| *t),
            self.txn.poll_timeout(),
            self.acd.poll_timeout(),
            self.registrar.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.txn.handle_timeout(now);
        self.drain_txn_events(now);
        if self.acd.poll_timeout().is_some_and(|t| t <= now) {
            self.acd.handle_timeout(now);
        }
        if self.registrar.poll_timeout().is_some_and(|t| t <= now) {
            self.registrar.handle_timeout(now);
        }
        while let Some(Reverse((t, key, kind))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match kind {
                TimerKind::PlaybackEnd => {
                    if self.calls.get(&key).is_some_and(|c| c.play_deadline == Some(t)) {
                        if let Some(c) = self.calls.get_mut(&key) {
                            c.play_deadline = None;
                        }
                        self.playback_ended(now, key);
                    }
                }
                TimerKind::Menu => self.menu_timeout(now, key),
                TimerKind::StatsTick => self.stats_tick(now),
                TimerKind::ClosedOffer => {
                    if self.calls.get(&key).is_some_and(|c| c.state == State::Closing && c.closed_offer) {
                        self.hang_up(now, key, Outcome::Completed, 200, "closed");
                    }
                }
                TimerKind::RingTimeout => {
                    if self.calls.get(&key).is_some_and(|c| c.state == State::Ringing) {
                        tracing::info!(call = key, "bridge target rang too long: CANCEL, 480 to the caller");
                        self.fail_unanswered(now, key, 480, "Temporarily Unavailable", Outcome::Failed);
                    }
                }
            }
            self.drive(now);
        }
        self.drive(now);
    }

    /// One datagram or framed stream message from `peer`.
    pub fn handle_datagram(&mut self, now: Instant, data: Bytes, peer: Peer) {
        if crate::sip::msg::is_keepalive(&data) {
            // RFC 5626 keep-alive: a double-CRLF ping gets a CRLF pong over UDP too.
            if data.len() >= 4 && peer.transport == Transport::Udp {
                self.send(peer, Bytes::from_static(b"\r\n"), None);
            }
            return;
        }
        self.metrics.inc(Counter::SipIn);
        match Message::parse(data.clone()) {
            Ok(msg) => self.handle_message(now, msg, peer),
            Err(e) => {
                self.metrics.inc(Counter::ParseErrors);
                tracing::debug!(%peer.addr, error = %e, "unparseable SIP message");
                if let Some(resp) = crate::sip::build::error_response_raw(&data, 400, e.reason()) {
                    self.metrics.inc(Counter::BadRequest400);
                    self.send(peer, resp, None);
                }
            }
        }
    }

    pub fn handle_message(&mut self, now: Instant, mut msg: Message, peer: Peer) {
        if msg.is_request() {
            msg.set_source(peer.addr);
            let is_ack = msg.method() == Some(&Method::Ack);
            // Trunks admit new calls; requests inside a dialog callgate holds (e.g. the bridge
            // target's BYE) come from whoever the dialog is with.
            let is_register = msg.method() == Some(&Method::Register);
            if !is_register && self.profile.trunk_for(peer.addr.ip()).is_none() && !self.in_known_dialog(&msg) {
                self.record_refused_invite(now, &msg, peer, 403, "source not allowed");
                if !is_ack {
                    self.metrics.inc(Counter::Forbidden403);
                    tracing::info!(src = %peer.addr, "request from a source no trunk allows: 403");
                    self.respond_stateless(&msg, peer, 403, "Forbidden", None);
                }
                return;
            }
            if let Err(rej) = msg.validate_request() {
                if !is_ack {
                    tracing::info!(src = %peer.addr, code = rej.code, reason = rej.reason, "request refused");
                    if rej.code == 400 {
                        self.metrics.inc(Counter::BadRequest400);
                    }
                    self.record_refused_invite(now, &msg, peer, rej.code, rej.reason);
                    self.respond_stateless(&msg, peer, rej.code, rej.reason, None);
                }
                return;
            }
            // 416 / 420 / 415 / 406 (RFC 3261 8.2.1-8.2.3); CANCEL and ACK are never refused for these.
            if !is_ack && msg.method() != Some(&Method::Cancel) {
                if let Err(rej) = msg.uas_checks(SUPPORTED, ACCEPTED) {
                    tracing::info!(src = %peer.addr, code = rej.code, reason = rej.reason, "request refused");
                    let unsupported = (rej.code == 420).then(|| msg.unsupported_required(SUPPORTED).join(", "));
                    let accept = (rej.code == 415 || rej.code == 406).then(|| ACCEPTED.join(", "));
                    let extra = unsupported.map(|v| ("Unsupported", v)).or(accept.map(|v| ("Accept", v)));
                    self.record_refused_invite(now, &msg, peer, rej.code, rej.reason);
                    self.respond_stateless(&msg, peer, rej.code, rej.reason, extra);
                    return;
                }
            }
        } else if let Err(e) = msg.validate_response() {
            tracing::debug!(src = %peer.addr, error = %e, "response dropped");
            return;
        }
        match self.txn.on_message(now, msg, peer) {
            Incoming::Request { txn, msg, peer } => self.on_request(now, txn, msg, peer),
            Incoming::Ack2xx { msg, peer } => self.on_ack(now, msg, peer),
            Incoming::Response { txn, msg } => self.on_response(now, txn, msg),
            Incoming::Stray { msg } => self.on_stray_response(msg),
            Incoming::Absorbed => {}
        }
        self.drain_txn_events(now);
        self.drive(now);
    }

    /// A report from the media engine.
    pub fn handle_media(&mut self, now: Instant, ev: MediaEvent) {
        match ev {
            MediaEvent::Finished { call, leg: Leg::A } => self.playback_ended(now, call),
            MediaEvent::Finished { .. } => {}
            MediaEvent::Digit { call, leg, digit } => self.on_digit(now, call, leg, digit),
            MediaEvent::Failed { call, failure: MediaFailure::NoLeg { leg: leg @ (Leg::C | Leg::D) } } => {
                // A consulted party's or supervisor's leg went wrong: that leg ends, the call goes on.
                tracing::warn!(call, %leg, "media of a side leg failed: ending that leg");
                self.side_gone(now, call, leg, true, "media failed");
            }
            MediaEvent::Failed { call, failure } => {
                tracing::warn!(call, %failure, "media failed");
                if self.calls.contains_key(&call) {
                    self.hang_up(now, call, Outcome::Failed, 500, "media failed");
                }
            }
            MediaEvent::Inactive { call, leg } => {
                tracing::info!(call, %leg, "no RTP for the inactivity time: ending the call");
                let reason = match leg {
                    Leg::A => "no RTP from the caller (inactivity)",
                    Leg::B => "no RTP from the agent (inactivity)",
                    Leg::C => "no RTP from the consulted party (inactivity)",
                    Leg::D => "no RTP from the supervisor (inactivity)",
                };
                if matches!(leg, Leg::C | Leg::D) {
                    // Only that leg ends; the call goes on.
                    self.side_gone(now, call, leg, true, reason);
                    return;
                }
                if let Some(c) = self.calls.get_mut(&call) {
                    c.end_reason = Some("rtp timeout".into());
                }
                self.hang_up(now, call, Outcome::Failed, 200, reason);
            }
            MediaEvent::Latched { call, leg, addr } => tracing::debug!(call, %leg, %addr, "RTP source latched"),
            MediaEvent::Recorded { call, path, seconds } => tracing::info!(call, path = %path.display(), seconds, "recording written"),
        }
        self.drive(now);
    }

    /// Graceful shutdown: from now on new calls get 503; calls in progress are ended.
    pub fn shutdown(&mut self, now: Instant) {
        self.draining = true;
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        for key in keys {
            // Answered calls end with BYE (status 200 in the record); ringing ones get 503. A call
            // whose caller has not ACKed our 200 yet gets its BYE when the ACK comes (RFC 3261 15).
            if let Some(call) = self.calls.get_mut(&key) {
                if call.state == State::Answered {
                    call.bye_on_ack = true;
                    continue;
                }
            }
            self.hang_up(now, key, Outcome::Shutdown, 200, "edge shutting down");
        }
        self.drive(now);
    }

    // ---- requests -------------------------------------------------------------------------

    fn on_request(&mut self, now: Instant, txn: TxnId, msg: Message, peer: Peer) {
        let method = match msg.method() {
            Some(m) => m.clone(),
            None => return,
        };
        let has_to_tag = msg.to_hdr().ok().and_then(|t| t.tag().map(str::to_owned));
        match (&method, has_to_tag) {
            (Method::Invite, None) => self.on_invite(now, txn, msg, peer),
            (Method::Invite, Some(tag)) => self.on_reinvite(now, txn, msg, tag),
            (Method::Register, _) => self.on_register(now, txn, msg, peer),
            (Method::Cancel, _) => self.on_cancel(now, txn, msg),
            (Method::Bye, Some(tag)) => self.on_bye(now, txn, msg, tag),
            (Method::Options, _) => {
                let resp = self
                    .response(&msg, 200, "OK")
                    .header("Allow", ALLOW)
                    .header("Accept", "application/sdp")
                    .header("Supported", "")
                    .build();
                self.txn.respond(now, txn, 200, resp, None);
            }
            (Method::Info, Some(tag)) if self.dialogs.contains_key(dkey(&dialog_key(&msg, &tag))) => {
                self.on_info(now, txn, msg, tag);
            }
            // Known to callgate but not served inside its dialogs (RFC 3261 8.2.1: 405 with Allow).
            (Method::Update | Method::Prack, Some(tag)) if self.dialogs.contains_key(dkey(&dialog_key(&msg, &tag))) => {
                let resp = self.response(&msg, 405, "Method Not Allowed").header("Allow", ALLOW).build();
                self.txn.respond(now, txn, 405, resp, None);
            }
            (Method::Bye | Method::Info | Method::Update | Method::Prack, _) => {
                let resp = self.response(&msg, 481, "Call/Transaction Does Not Exist").build();
                self.txn.respond(now, txn, 481, resp, None);
            }
            _ => {
                let resp = self.response(&msg, 501, "Not Implemented").header("Allow", ALLOW).build();
                self.txn.respond(now, txn, 501, resp, None);
            }
        }
    }

    fn finish(&mut self, now: Instant, call: &Call, outcome: Outcome, status: u16, reason: &str) {
        if let Some(o) = &call.origin {
            self.origins.remove(o);
        }
        self.metrics.outcome(outcome);
        self.metrics.set_active_calls(self.calls.len());
        let rec = CallRecord {
            call_id: call.cg_id.clone(),
            sip_call_id: call.a.call_id.clone(),
            tenant: Some(call.tenant.clone()),
            trunk: Some(call.trunk.clone()),
            service: Some(call.service.clone()),
            caller: call.caller.clone(),
            number: call.number.clone(),
            source: call.source.to_string(),
            transport: call.transport.as_via().to_owned(),
            arrived_ms: self.unix_ms(call.arrived),
            answered_ms: call.answered.map(|t| self.unix_ms(t)),
            ended_ms: self.unix_ms(now),
            outcome,
            sip_status: status,
            reason: reason.to_owned(),
            digits: call.digits.clone(),
            queue: call.queue.clone(),
            agent: call.agent.or(call.last_agent).map(|a| self.acd.agent_spec(a).id.clone()),
            menu_choice: call.choice.as_ref().map(|c| c.key.clone()),
            recording: call.recording.clone(),
            wait_ms: call.queued_at.map(|q| ms_between(q, call.talk_from.unwrap_or(now))),
            talk_ms: match (call.talk_from, call.transfer_talk_ms) {
                (None, 0) => None,
                (t, before) => Some((before + t.map_or(0, |t| ms_between(t, now))).saturating_sub(call.hold_ms)),
            },
            end_reason: call.end_reason.clone(),
        };
        self.stats.push_call(&rec);
        let why = rec.end_reason.clone().unwrap_or_else(|| reason.to_owned());
        self.outputs.push_back(Output::Record(rec));
        self.publish_ended(now, call, &why);
    }

    /// A refused INVITE that never became a call (404, 503, 483 ...): final answer and record.
    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        now: Instant,
        txn: TxnId,
        msg: &Message,
        peer: Peer,
        trunk: Option<&Trunk>,
        service: Option<&Service>,
        code: u16,
        reason: &str,
        outcome: Outcome,
    ) {
        let tag = self.rng.token(10);
        let mut rb = ResponseBuilder::new(msg, code, reason).to_tag(&tag);
        if code == 503 {
            rb = rb.header("Retry-After", &self.cfg.retry_after_s.to_string());
        }
        self.txn.respond(now, txn, code, rb.build(), None);
        let (trunk, service) = (trunk.map(|t| t.name.clone()), service.map(|s| (s.tenant.clone(), s.name.clone())));
        let cg_id = format!("cg-{}", self.rng.token(16));
        self.record_rejected_with(now, msg, peer, trunk, service, cg_id, outcome, code, reason);
    }

    /// The record of an INVITE refused before any transaction exists (403 to a stranger, 400,
    /// 415 ...). No call state is kept: the record's id derives from the message, so the INVITE's
    /// retransmissions map onto one record. A budget of [`REFUSED_RECORDS_PER_S`] such records a
    /// second (and as many in a burst) keeps a flood of spoofable datagrams from filling the disk;
    /// what is over it is counted in `callgate_records_suppressed_total`.
    fn record_refused_invite(&mut self, now: Instant, msg: &Message, peer: Peer, code: u16, reason: &str) {
        if msg.method() != Some(&Method::Invite) {
            return;
        }
        let (tokens, last) = self.refused_budget;
        let rate = f64::from(REFUSED_RECORDS_PER_S);
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * rate).min(rate);
        if tokens < 1.0 {
            self.refused_budget = (tokens, now);
            self.metrics.inc(Counter::RecordsSuppressed);
            return;
        }
        self.refused_budget = (tokens - 1.0, now);
        let profile = self.profile.clone();
        let trunk = profile.trunk_for(peer.addr.ip());
        self.record_rejected(now, msg, peer, trunk, Outcome::Rejected, code, reason);
    }

    #[allow(clippy::too_many_arguments)]
    fn record_rejected(&mut self, now: Instant, msg: &Message, peer: Peer, trunk: Option<&Trunk>, outcome: Outcome, code: u16, reason: &str) {
        // Derive the id from the INVITE itself so that its retransmissions map to one record.
        let branch = msg.top_via().ok().and_then(|v| v.branch.map(str::to_owned)).unwrap_or_default();
        let id = format!("cg-r{:016x}", fnv1a(&[msg.call_id().unwrap_or("").as_bytes(), branch.as_bytes()]));
        self.record_rejected_with(now, msg, peer, trunk.map(|t| t.name.clone()), None, id, outcome, code, reason);
    }

    #[allow(clippy::too_many_arguments)]
    fn record_rejected_with(
        &mut self,
        now: Instant,
        msg: &Message,
        peer: Peer,
        trunk: Option<String>,
        service: Option<(String, String)>,
        call_id: String,
        outcome: Outcome,
        code: u16,
        reason: &str,
    ) {
        self.metrics.outcome(outcome);
        let number = msg.request_uri().and_then(|u| Uri::parse(u).ok()).and_then(|u| u.number()).unwrap_or_default();
        let caller = msg.from_hdr().ok().and_then(|f| Uri::parse(f.uri).ok().and_then(|u| u.number())).unwrap_or_default();
        let (tenant, service) = match service {
            Some((t, s)) => (Some(t), Some(s)),
            None => (None, None),
        };
        let ms = self.unix_ms(now);
        self.outputs.push_back(Output::Record(CallRecord {
            call_id,
            sip_call_id: msg.call_id().unwrap_or("").to_owned(),
            tenant,
            trunk,
            service,
            caller,
            number,
            source: peer.addr.to_string(),
            transport: peer.transport.as_via().to_owned(),
            arrived_ms: ms,
            answered_ms: None,
            ended_ms: ms,
            outcome,
            sip_status: code,
            reason: reason.to_owned(),
            digits: String::new(),
            ..Default::default()
        }));
    }

    // ---- transaction events ---------------------------------------------------------------------

    fn drain_txn_events(&mut self, now: Instant) {
        while let Some(ev) = self.txn.poll_event() {
            match ev {
                TxnEvent::Timeout { txn } => {
                    if let Some(inv) = self.cancelled.remove(&txn) {
                        // Nobody answers the CANCEL: give up on the INVITE too (RFC 3261 9.1).
                        self.txn.terminate(inv);
                        self.clients.remove(&inv);
                    }
                    if let Some((key, purpose)) = self.clients.remove(&txn) {
                        if let Purpose::SideInvite(leg) = purpose {
                            self.side_failed(now, key, leg, txn, 408);
                            continue;
                        }
                        let idx = self.calls.get(&key).and_then(|c| c.offers.iter().position(|o| o.txn == txn));
                        if let (Purpose::BInvite, Some(idx)) = (purpose, idx) {
                            let Some(call) = self.calls.get_mut(&key) else { continue };
                            let offer = call.offers.remove(idx);
                            self.dialogs.remove(dkey(&(offer.dialog.call_id.as_str(), offer.dialog.local_tag.as_str())));
                            self.ports.release(offer.port);
                            match offer.agent {
                                Some(agent) => self.acd.missed(now, key, agent, crate::acd::log::MissReason::Unreachable),
                                None => {
                                    tracing::info!(call = key, "no answer from the bridge target: 408");
                                    self.fail_unanswered(now, key, 408, "Request Timeout", Outcome::Failed);
                                }
                            }
                        }
                    }
                }
                TxnEvent::AckTimeout { txn } => {
                    if let Some(&key) = self.a_invites.get(&txn) {
                        tracing::info!(call = key, "caller never ACKed our 200: hanging up");
                        let outcome = if self.draining { Outcome::Shutdown } else { Outcome::Failed };
                        self.end_call(now, key, outcome, 408, "no ACK from the caller", None);
                    }
                }
                TxnEvent::Terminated { txn } => {
                    self.clients.remove(&txn);
                    self.cancelled.remove(&txn);
                }
            }
        }
    }

    // ---- helpers -------------------------------------------------------------------------------

    /// A response from the transaction layer. Final answers get a To tag when the request had
    /// none (RFC 3261 8.2.6.2); `to_tag` leaves an existing tag alone.
    fn response<'m>(&self, msg: &'m Message, code: u16, reason: &str) -> ResponseBuilder<'m> {
        let mut rb = ResponseBuilder::new(msg, code, reason);
        if code >= 200 {
            rb = rb.to_tag(TAG_STATELESS);
        }
        rb.header("Server", &self.cfg.user_agent)
    }

    fn respond_stateless(&mut self, msg: &Message, peer: Peer, code: u16, reason: &str, extra: Option<(&str, String)>) {
        let mut rb = ResponseBuilder::new(msg, code, reason).to_tag(TAG_STATELESS);
        if let Some((name, value)) = &extra {
            rb = rb.header(name, value);
        }
        let data = rb.header("Server", &self.cfg.user_agent).build();
        let dst = crate::sip::response_destination(msg, peer);
        self.send(dst, data, None);
    }

    fn send(&mut self, peer: Peer, data: Bytes, mark: Option<Mark>) {
        self.outputs.push_back(Output::Transmit(Transmit { peer, data, mark }));
    }

    fn contact_uri(&self, transport: Transport) -> String {
        match transport {
            Transport::Udp => format!("sip:callgate@{}", host_port(self.cfg.local_sip)),
            Transport::Tcp => format!("sip:callgate@{};transport=tcp", host_port(self.cfg.local_sip)),
        }
    }

    fn unix_ms(&self, t: Instant) -> i64 {
        let (base_i, base_w) = self.epoch;
        let wall = if t >= base_i { base_w + (t - base_i) } else { base_w - (base_i - t) };
        wall.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REGISTER";
/// SIP extensions callgate supports (for `Require`): none yet.
const SUPPORTED: &[&str] = &[];
/// Body types callgate reads.
const ACCEPTED: &[&str] = &["application/sdp", "application/dtmf-relay", "application/dtmf"];
/// The To tag of stateless answers: a constant, so that every retransmission gets the same answer.
const TAG_STATELESS: &str = "cg-sl";

/// The key of `dialogs` for a message in a dialog: its Call-ID and the To tag (ours).
fn dialog_key<'a>(msg: &'a Message, to_tag: &'a str) -> (&'a str, &'a str) {
    (msg.call_id().unwrap_or(""), to_tag)
}

/// A `(Call-ID, tag)` of `dialogs`, owned or borrowed: lookups take `(&str, &str)` and build no
/// owned strings (the usual borrowed-tuple pattern: both forms hash and compare alike, so the
/// map keeps std's keyed SipHash against peer-chosen Call-IDs).
trait DialogKey {
    fn parts(&self) -> (&str, &str);
}

impl DialogKey for (String, String) {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl DialogKey for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn DialogKey + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn DialogKey + 'a) {
        self
    }
}

impl std::hash::Hash for dyn DialogKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        // Exactly what the derived Hash of (String, String) feeds the hasher.
        let (a, b) = self.parts();
        a.hash(h);
        b.hash(h);
    }
}

impl PartialEq for dyn DialogKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn DialogKey + '_ {}

/// A `(Call-ID, tag)` pair of `&str` as the map's borrowed key.
fn dkey<'a>(k: &'a (&'a str, &'a str)) -> &'a (dyn DialogKey + 'a) {
    k
}

/// Digits a call keeps for its record: enough for any menu or number, bounded against a peer
/// that floods key presses.
pub const MAX_DIGITS: usize = 64;

fn push_digit(digits: &mut String, digit: char) {
    if digits.len() < MAX_DIGITS {
        digits.push(digit);
    }
}

/// (Call-ID, From tag) of a request: with the CSeq, what identifies it across paths.
fn origin_key(msg: &Message) -> Option<(String, String)> {
    let tag = msg.from_hdr().ok()?.tag()?.to_owned();
    Some((msg.call_id()?.to_owned(), tag))
}

fn top_branch(data: &Bytes) -> Option<String> {
    Message::parse(data.clone()).ok()?.top_via().ok()?.branch.map(str::to_owned)
}

/// The transport a bridge target's `transport` parameter names (UDP unless it says TCP).
fn bridge_transport(target: &str) -> Transport {
    match Uri::parse(target).ok().and_then(|u| u.param("transport").flatten().map(str::to_ascii_lowercase)) {
        Some(t) if t == "tcp" => Transport::Tcp,
        _ => Transport::Udp,
    }
}

pub(crate) fn host_port(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// The statistics' settings from the profile: each tenant's clock and each queue's thresholds (the
/// core's live figures, and reports computed outside the core).
pub fn stats_config_for(p: &Profile) -> crate::stats::StatsConfig {
    let mut c = crate::stats::StatsConfig::default();
    for t in &p.tenants {
        c.tenant_utc_offset_min.insert(t.id.clone(), t.utc_offset_min);
        for q in &t.queues {
            c.queue_thresholds.insert(
                (t.id.clone(), q.name.clone()),
                crate::stats::Thresholds { sl_ms: q.sl_threshold.as_millis() as u64, short_abandon_ms: q.short_abandon.as_millis() as u64 },
            );
        }
    }
    c
}

fn ms_between(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_millis() as u64
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
