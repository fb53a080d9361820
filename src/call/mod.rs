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

mod dialog;
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

/// callgate's own handle for a call, unique within one running edge.
pub type CallKey = u64;

/// What the media engine must do.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaCommand {
    /// Open the call's RTP port and stream the playlist to `dst`.
    Play {
        call: CallKey,
        local_port: u16,
        dst: SocketAddr,
        codec: Codec,
        pt: u8,
        /// The caller's telephone-event payload type, if negotiated: its RTP is read for digits.
        dtmf_pt: Option<u8>,
        ssrc: u32,
        seq: u16,
        ts: u32,
        playlist: Vec<String>,
    },
    /// Stop the call's streams and close its RTP port.
    Stop { call: CallKey },
}

/// What the media engine reports back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// The playlist ran to its end.
    Finished { call: CallKey },
    /// The media for the call could not be set up.
    Failed { call: CallKey, failure: MediaFailure },
    /// The caller pressed a key (RFC 4733 telephone-event in its RTP).
    Digit { call: CallKey, digit: char },
}

/// Why the media engine could not serve a call.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MediaFailure {
    /// The call's RTP port could not be bound (another process holds it, or the address is gone).
    #[error("cannot bind RTP port {addr}: {kind}")]
    Bind { addr: SocketAddr, kind: std::io::ErrorKind },
    /// A prompt of the playlist was not loaded at start.
    #[error("prompt {name:?} is not loaded")]
    UnknownPrompt { name: String },
}

/// An output of the core for the shell.
#[derive(Debug)]
pub enum Output {
    Transmit(Transmit),
    Media(MediaCommand),
    Record(CallRecord),
}

/// Why the core could not be built from a profile.
#[derive(Debug, Error)]
pub enum CoreError {
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
    /// Guidance call: 200 sent, waiting for the ACK.
    Answered,
    /// Guidance call: the announcement is streaming.
    Playing,
    /// Bridge call: INVITE sent to B, no final answer yet.
    Ringing,
    /// Bridge call: both legs up.
    Connected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    BInvite,
    Bye,
    Cancel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// A guidance call whose caller gave no media address: end when the prompts would have.
    PlaybackEnd,
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
    b: Option<Dialog>,
    b_invite: Option<(TxnId, Message)>,
    tenant: String,
    trunk: String,
    service: String,
    caller: String,
    number: String,
    source: SocketAddr,
    transport: Transport,
    arrived: Instant,
    answered: Option<Instant>,
    media_port: Option<u16>,
    /// What to stream once the ACK arrives: to where, in which codec and payload type, and the
    /// caller's telephone-event payload type.
    pending_play: Option<(SocketAddr, Codec, u8, Option<u8>)>,
    /// The service's guidance playlist (prompt names).
    guidance: Vec<String>,
    /// Our SDP on the caller's leg (guidance calls): the answer to session refreshes.
    local_sdp: Option<Bytes>,
    /// The caller's (Call-ID, From tag): its entry in `Core::origins`.
    origin: Option<(String, String)>,
    /// Bridge with a delayed offer: the callee's 2xx held the offer, so its ACK waits for the
    /// caller's answer (in the caller's ACK). `Waiting` until then; `Sent` keeps the answer for
    /// re-ACKing retransmitted 2xx.
    b_ack: BAck,
    /// What the guidance call negotiated: codec and where we send (None: the caller takes nothing).
    negotiated: Option<(Codec, Option<SocketAddr>)>,
    /// Shutdown came before the caller's ACK: BYE once it arrives (RFC 3261 15).
    bye_on_ack: bool,
    /// The bridge target's 2xx, kept while its ACK waits for the caller's answer.
    b_2xx: Option<Message>,
    /// DTMF digits the caller pressed, in order (for the record and, later, menus).
    digits: String,
}

/// The state of the ACK callgate owes the bridge target.
#[derive(Clone, Debug, Default)]
enum BAck {
    #[default]
    Immediate,
    Waiting,
    Sent(Option<(String, Bytes)>),
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
        Ok(Core {
            txn: TxnLayer::new(cfg.txn.clone()),
            ports: PortPool::new(cfg.rtp_ports.0, cfg.rtp_ports.1),
            cfg,
            profile,
            metrics,
            rng: Rng::seeded(seed),
            calls: IdMap::default(),
            dialogs: HashMap::new(),
            a_invites: IdMap::default(),
            clients: IdMap::default(),
            cancelled: IdMap::default(),
            origins: HashMap::new(),
            refused_budget: (f64::from(REFUSED_RECORDS_PER_S), now),
            timers: BinaryHeap::new(),
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
        let call = self.timers.peek().map(|Reverse((t, _, _))| *t);
        match (call, self.txn.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.txn.handle_timeout(now);
        self.drain_txn_events(now);
        while let Some(Reverse((t, key, kind))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match kind {
                TimerKind::PlaybackEnd => {
                    if self.calls.get(&key).is_some_and(|c| c.state == State::Playing) {
                        self.hang_up(now, key, Outcome::Completed, 200, "announcement completed");
                    }
                }
                TimerKind::RingTimeout => {
                    if self.calls.get(&key).is_some_and(|c| c.state == State::Ringing) {
                        tracing::info!(call = key, "bridge target rang too long: CANCEL, 480 to the caller");
                        self.cancel_b(now, key);
                        self.fail_unanswered(now, key, 480, "Temporarily Unavailable", Outcome::Failed);
                    }
                }
            }
        }
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
            if self.profile.trunk_for(peer.addr.ip()).is_none() && !self.in_known_dialog(&msg) {
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
    }

    /// A report from the media engine.
    pub fn handle_media(&mut self, now: Instant, ev: MediaEvent) {
        match ev {
            MediaEvent::Finished { call } => {
                if self.calls.get(&call).is_some_and(|c| c.state == State::Playing) {
                    self.hang_up(now, call, Outcome::Completed, 200, "announcement completed");
                }
            }
            MediaEvent::Digit { call, digit } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    // The digit itself is not logged: callers key in ID numbers and PINs.
                    tracing::debug!(call, "caller pressed a key");
                    self.metrics.inc(Counter::DtmfDigits);
                    push_digit(&mut c.digits, digit);
                }
            }
            MediaEvent::Failed { call, failure } => {
                tracing::warn!(call, %failure, "media failed");
                if self.calls.contains_key(&call) {
                    self.hang_up(now, call, Outcome::Failed, 500, "media failed");
                }
            }
        }
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

    fn on_invite(&mut self, now: Instant, txn: TxnId, msg: Message, peer: Peer) {
        // The same request arriving again along another path (another branch): RFC 3261 8.2.2.2.
        let origin = origin_key(&msg);
        if let Some(&(key, seq)) = origin.as_ref().and_then(|o| self.origins.get(o)) {
            if self.calls.contains_key(&key) && msg.cseq().is_ok_and(|c| c.seq == seq) {
                let resp = self.response(&msg, 482, "Loop Detected").build();
                self.txn.respond(now, txn, 482, resp, None);
                return;
            }
        }
        let trying = self.response(&msg, 100, "Trying").build();
        self.txn.respond(now, txn, 100, trying, Some(Mark { stage: Stage::InviteTo100, since: now }));

        // A local handle on the profile, so lookups borrow from it rather than cloning per call.
        let profile = self.profile.clone();
        let Some(trunk) = profile.trunk_for(peer.addr.ip()) else {
            return; // checked before; unreachable in practice
        };
        let number = msg.request_uri().and_then(|u| Uri::parse(u).ok()).and_then(|u| u.number()).unwrap_or_default();
        let Some(service) = profile.service_for(trunk, &number) else {
            tracing::info!(%number, trunk = %trunk.name, "no service for the number: 404");
            self.reject(now, txn, &msg, peer, Some(trunk), None, 404, "Not Found", Outcome::NotFound);
            return;
        };
        if self.draining {
            self.reject(now, txn, &msg, peer, Some(trunk), Some(service), 503, "Service Unavailable", Outcome::Shutdown);
            return;
        }
        if self.calls.len() >= self.cfg.max_calls || self.backlogged || !self.admit_cps(now) {
            self.metrics.inc(Counter::Overload503);
            self.reject(now, txn, &msg, peer, Some(trunk), Some(service), 503, "Service Unavailable", Outcome::Busy);
            return;
        }
        if service.bridge_to.is_some() {
            // Forwarding to a bridge target: a request out of hops stops here (RFC 3261 16.3).
            if let Err(rej) = msg.forward_check() {
                self.reject(now, txn, &msg, peer, Some(trunk), Some(service), rej.code, rej.reason, Outcome::Failed);
                return;
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        let local_tag = self.rng.token(10);
        let a = match Dialog::uas(&msg, peer, &local_tag, self.contact_uri(peer.transport)) {
            Some(d) => d,
            None => {
                self.reject(now, txn, &msg, peer, Some(trunk), Some(service), 400, "Bad Request", Outcome::Failed);
                return;
            }
        };
        let caller = msg
            .from_hdr()
            .ok()
            .and_then(|f| Uri::parse(f.uri).ok().and_then(|u| u.number()))
            .unwrap_or_default();
        let call = Call {
            cg_id: format!("cg-{}", self.rng.token(16)),
            state: State::Answered,
            a,
            a_invite: txn,
            a_invite_msg: msg.clone(),
            b: None,
            b_invite: None,
            tenant: service.tenant.clone(),
            trunk: trunk.name.clone(),
            service: service.name.clone(),
            caller,
            number,
            source: peer.addr,
            transport: peer.transport,
            arrived: now,
            answered: None,
            media_port: None,
            pending_play: None,
            guidance: service.guidance.clone(),
            local_sdp: None,
            origin: origin.clone(),
            b_ack: BAck::Immediate,
            negotiated: None,
            bye_on_ack: false,
            b_2xx: None,
            digits: String::new(),
        };
        self.dialogs.insert((call.a.call_id.clone(), local_tag), (key, Side::A));
        if let (Some(o), Ok(cseq)) = (origin, msg.cseq()) {
            self.origins.insert(o, (key, cseq.seq));
        }
        self.a_invites.insert(txn, key);
        self.calls.insert(key, call);
        self.metrics.set_active_calls(self.calls.len());

        if let Some(target) = &service.bridge_to {
            self.start_bridge(now, key, &msg, target);
        } else {
            self.answer_guidance(now, key, &msg, trunk);
        }
    }

    fn answer_guidance(&mut self, now: Instant, key: CallKey, msg: &Message, trunk: &Trunk) {
        let Some(port) = self.ports.allocate() else {
            tracing::warn!("RTP port range exhausted: 503");
            self.metrics.inc(Counter::Overload503);
            self.fail_unanswered(now, key, 503, "Service Unavailable", Outcome::Busy);
            return;
        };
        let sess_id = self.rng.next_u64() >> 2;
        let offer = msg.body();
        let has_offer = msg.content_type().is_some_and(|t| t.eq_ignore_ascii_case("application/sdp")) && !offer.is_empty();
        let mut negotiated = None;
        let (sdp_body, play) = if has_offer {
            match sdp::answer(&offer, &trunk.codecs, self.cfg.media_ip, port, sess_id) {
                Ok(n) => {
                    let play = n.send_to().map(|dst| (dst, n.codec, n.pt, n.dtmf_pt));
                    negotiated = Some((n.codec, n.send_to()));
                    (n.sdp, play)
                }
                Err(e) => {
                    self.ports.release(port);
                    tracing::info!(error = %e, "SDP offer refused");
                    let code = if matches!(e, sdp::SdpError::NoCommonCodec) { 488 } else { 400 };
                    let (reason, outcome) = if code == 488 {
                        ("Not Acceptable Here", Outcome::NotAcceptable)
                    } else {
                        ("Bad SDP", Outcome::Failed)
                    };
                    self.fail_unanswered(now, key, code, reason, outcome);
                    return;
                }
            }
        } else {
            // Delayed offer: we offer, the ACK answers. Until the ACK comes, nothing to stream.
            (sdp::offer(&trunk.codecs, self.cfg.media_ip, port, sess_id), None)
        };
        let Some(call) = self.calls.get_mut(&key) else { return };
        call.media_port = Some(port);
        call.answered = Some(now);
        call.negotiated = negotiated;
        call.local_sdp = Some(sdp_body.clone());
        call.pending_play = play;
        let resp = ResponseBuilder::new(msg, 200, "OK")
            .to_tag(&call.a.local_tag)
            .header("Contact", &format!("<{}>", call.a.local_contact))
            .header("Allow", ALLOW)
            .header("Supported", "")
            .header("Server", &self.cfg.user_agent)
            .body("application/sdp", &sdp_body)
            .build();
        let txn = call.a_invite;
        self.txn.respond(now, txn, 200, resp, Some(Mark { stage: Stage::InviteTo200, since: call.arrived }));
    }

    fn on_ack(&mut self, now: Instant, msg: Message, _peer: Peer) {
        let Some(tag) = msg.to_hdr().ok().and_then(|t| t.tag().map(str::to_owned)) else { return };
        let Some(&(key, side)) = self.dialogs.get(dkey(&dialog_key(&msg, &tag))) else { return };
        if side != Side::A {
            return;
        }
        let Some(call) = self.calls.get_mut(&key) else { return };
        self.txn.ack_received(now, call.a_invite);
        if matches!(call.b_ack, BAck::Waiting) {
            // Delayed offer across the bridge: the caller's answer goes to the callee in its ACK.
            let body = msg.body();
            let answer = (!body.is_empty()).then(|| (msg.content_type().unwrap_or("application/sdp").to_owned(), body));
            if let (Some(b), Some(b2xx)) = (call.b.as_ref(), call.b_2xx.take()) {
                let (peer, data) = b.ack_with(&b2xx, &mut self.rng, &self.cfg, answer.as_ref().map(|(c, b)| (c.as_str(), &b[..])));
                self.outputs.push_back(Output::Transmit(Transmit { peer, data, mark: None }));
            }
            call.b_ack = BAck::Sent(answer);
            return;
        }
        if call.bye_on_ack {
            self.end_call(now, key, Outcome::Shutdown, 200, "edge shutting down", None);
            return;
        }
        if call.state != State::Answered {
            return;
        }
        call.state = State::Playing;
        if call.pending_play.is_none() {
            // Delayed offer: the ACK carries the answer.
            if let Ok(n) = sdp::parse_answer(&msg.body()) {
                call.negotiated = Some((n.codec, n.send_to()));
                call.pending_play = n.send_to().map(|dst| (dst, n.codec, n.pt, n.dtmf_pt));
            }
        }
        match (call.pending_play.take(), call.media_port) {
            (Some((dst, codec, pt, dtmf_pt)), Some(local_port)) => {
                let play = MediaCommand::Play {
                    call: key,
                    local_port,
                    dst,
                    codec,
                    pt,
                    dtmf_pt,
                    ssrc: self.rng.next_u32(),
                    seq: (self.rng.next_u32() & 0x7fff) as u16,
                    ts: self.rng.next_u32(),
                    playlist: call.guidance.clone(),
                };
                self.outputs.push_back(Output::Media(play));
            }
            _ => {
                // Nowhere to send (c=0.0.0.0, recvonly, or no answer): end when the guidance would.
                let total: Duration = call.guidance.iter().filter_map(|p| self.prompt_durations.get(p)).sum();
                self.timers.push(Reverse((now + total, key, TimerKind::PlaybackEnd)));
            }
        }
    }

    fn on_reinvite(&mut self, now: Instant, txn: TxnId, msg: Message, tag: String) {
        let found = self.dialogs.get(dkey(&dialog_key(&msg, &tag))).copied();
        let offer = msg.body();
        let sdp = found.and_then(|(key, side)| {
            let call = self.calls.get(&key)?;
            let sdp = (side == Side::A).then(|| call.local_sdp.clone()).flatten()?;
            // A session refresh re-offers what was agreed; a re-offer that would change the codec,
            // the address or the direction cannot be honoured until the media engine can follow.
            if !offer.is_empty() {
                let (codec, dst) = call.negotiated?;
                let port = call.media_port?;
                let n = sdp::answer(&offer, &[codec], self.cfg.media_ip, port, 0).ok()?;
                if n.codec != codec || n.send_to() != dst {
                    return None;
                }
            }
            Some((sdp, call.a.local_contact.clone()))
        });
        let (code, resp) = match (found, sdp) {
            (None, _) => (481, self.response(&msg, 481, "Call/Transaction Does Not Exist").build()),
            // A session refresh on a guidance call: our media description is unchanged
            // (RFC 3264 8: the same o= version says so).
            (Some(_), Some((sdp, contact))) => (
                200,
                self.response(&msg, 200, "OK")
                    .header("Contact", &format!("<{contact}>"))
                    .body("application/sdp", &sdp)
                    .build(),
            ),
            // Re-offers that change the media, and re-INVITEs across a bridge, wait for the media
            // engine; refusing one leaves the session as it was (RFC 3264 8).
            (Some(_), None) => (
                488,
                self.response(&msg, 488, "Not Acceptable Here")
                    .header("Warning", "399 callgate \"this change of media is not supported yet\"")
                    .build(),
            ),
        };
        self.txn.respond(now, txn, code, resp, None);
    }

    /// INFO inside a dialog: a key press as `application/dtmf-relay` or `application/dtmf` (the
    /// way some carriers send DTMF instead of RFC 4733) joins the digits of a guidance call; other
    /// INFO (e.g. an empty keep-alive) is answered 200; a DTMF body that does not parse gets 400.
    /// On a bridged call the INFO is not relayed to the other leg yet (that comes with relaying
    /// in-dialog requests across the bridge), so its digit is not recorded either.
    fn on_info(&mut self, now: Instant, txn: TxnId, msg: Message, tag: String) {
        let is_dtmf = msg.content_type().is_some_and(crate::media::dtmf::is_dtmf_info_content_type);
        let (code, reason) = if is_dtmf {
            match crate::media::dtmf::parse_dtmf_relay(&msg.body()) {
                Ok((digit, _duration_ms)) => {
                    if let Some(&(key, Side::A)) = self.dialogs.get(dkey(&dialog_key(&msg, &tag))) {
                        if let Some(call) = self.calls.get_mut(&key).filter(|c| c.b.is_none()) {
                            tracing::debug!(call = key, "caller pressed a key (SIP INFO)");
                            self.metrics.inc(Counter::DtmfDigits);
                            push_digit(&mut call.digits, digit);
                        }
                    }
                    (200, "OK")
                }
                Err(e) => {
                    tracing::debug!(error = %e, "SIP INFO with a DTMF body that does not parse");
                    (400, "Bad DTMF Body")
                }
            }
        } else {
            (200, "OK")
        };
        let resp = self.response(&msg, code, reason).build();
        self.txn.respond(now, txn, code, resp, None);
    }

    fn on_cancel(&mut self, now: Instant, txn: TxnId, msg: Message) {
        let target = self.txn.cancel_target(&msg);
        let key = target.and_then(|t| self.a_invites.get(&t).copied());
        let Some(key) = key else {
            // The INVITE transaction still exists but has had its final answer: the CANCEL has
            // no effect and is answered 200 (RFC 3261 9.2); with no such transaction, 481.
            let (code, reason) = if target.is_some() { (200, "OK") } else { (481, "Call/Transaction Does Not Exist") };
            let resp = self.response(&msg, code, reason).build();
            self.txn.respond(now, txn, code, resp, None);
            return;
        };
        let resp = self.response(&msg, 200, "OK").build();
        self.txn.respond(now, txn, 200, resp, None);
        let Some(call) = self.calls.get(&key) else { return };
        // A CANCEL only affects a call with no final answer yet (RFC 3261 9.2).
        if call.state == State::Ringing {
            self.cancel_b(now, key);
            self.fail_unanswered(now, key, 487, "Request Terminated", Outcome::Cancelled);
        }
    }

    fn on_bye(&mut self, now: Instant, txn: TxnId, msg: Message, tag: String) {
        let Some(&(key, side)) = self.dialogs.get(dkey(&dialog_key(&msg, &tag))) else {
            let resp = self.response(&msg, 481, "Call/Transaction Does Not Exist").build();
            self.txn.respond(now, txn, 481, resp, None);
            return;
        };
        let resp = self.response(&msg, 200, "OK").build();
        self.txn.respond(now, txn, 200, resp, None);
        let Some(call) = self.calls.get(&key) else { return };
        if call.state == State::Ringing && side == Side::A {
            // A BYE in the early dialog (RFC 3261 15): the caller gives up like with CANCEL.
            self.cancel_b(now, key);
            self.fail_unanswered(now, key, 487, "Request Terminated", Outcome::Cancelled);
            return;
        }
        let outcome = match call.state {
            State::Answered | State::Playing => Outcome::Abandoned,
            State::Connected | State::Ringing => Outcome::Bridged,
        };
        let reason = if side == Side::A { "caller hung up" } else { "callee hung up" };
        // Hang up the other side only.
        self.end_call(now, key, outcome, 200, reason, Some(side));
    }

    // ---- bridging (B2BUA) --------------------------------------------------------------------

    fn start_bridge(&mut self, now: Instant, key: CallKey, msg: &Message, target: &str) {
        let (dst, transport) = match self.bridge_targets.get(target) {
            Some(&t) => t,
            None => match dialog::uri_socket_addr(target) {
                Some(dst) => (dst, bridge_transport(target)),
                None => return,
            },
        };
        let peer = Peer { transport, addr: dst, conn: None };
        let call_id = format!("{}@{}", self.rng.token(20), self.cfg.local_sip.ip());
        let local_tag = self.rng.token(10);
        let branch = format!("z9hG4bK{}", self.rng.token(16));
        let Some(call) = self.calls.get(&key) else { return };
        let from_user = if call.caller.is_empty() { "anonymous".to_owned() } else { call.caller.clone() };
        let from = format!("<sip:{}@{}>", from_user, host_port(self.cfg.local_sip));
        let to = format!("<{}>", target);
        let contact = self.contact_uri(transport);
        let mf = msg.max_forwards().unwrap_or(70).saturating_sub(1).min(70);
        let mut rb = RequestBuilder::new(Method::Invite, target)
            .via(transport, &host_port(self.cfg.local_sip), &branch)
            .from(&from, &local_tag)
            .to(&to, None)
            .call_id(&call_id)
            .cseq(1)
            .max_forwards(mf)
            .contact(&contact)
            .header("Allow", ALLOW)
            .header("User-Agent", &self.cfg.user_agent)
            .header("X-Callgate-Call", &call.cg_id);
        let body = msg.body();
        if !body.is_empty() {
            let ctype = msg.content_type().unwrap_or("application/sdp").to_owned();
            rb = rb.body(&ctype, &body);
        }
        let invite = rb.build();
        let Ok(invite_msg) = Message::parse(invite.clone()) else {
            self.fail_unanswered(now, key, 500, "Server Internal Error", Outcome::Failed);
            return;
        };
        let t = self.txn.request(now, Method::Invite, &branch, invite, peer);
        self.clients.insert(t, (key, Purpose::BInvite));
        let b = Dialog::uac(call_id.clone(), local_tag.clone(), from, to, target.to_owned(), contact, peer);
        self.dialogs.insert((call_id, local_tag), (key, Side::B));
        let Some(call) = self.calls.get_mut(&key) else { return };
        call.state = State::Ringing;
        call.b = Some(b);
        call.b_invite = Some((t, invite_msg));
        self.timers.push(Reverse((now + RING_TIMEOUT, key, TimerKind::RingTimeout)));
    }

    /// CANCELs the INVITE ringing at the bridge target (RFC 3261 9.1). If even the CANCEL gets no
    /// answer, the INVITE transaction is dropped when the CANCEL times out.
    fn cancel_b(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get(&key) else { return };
        let (Some((inv_txn, inv)), Some(b)) = (&call.b_invite, &call.b) else { return };
        let cancel = crate::sip::build::cancel_for(inv);
        if let Some(branch) = top_branch(&cancel) {
            let (peer, inv_txn) = (b.peer, *inv_txn);
            let t = self.txn.request(now, Method::Cancel, &branch, cancel, peer);
            self.clients.insert(t, (key, Purpose::Cancel));
            self.cancelled.insert(t, inv_txn);
        }
    }

    fn on_response(&mut self, now: Instant, txn: TxnId, msg: Message) {
        let Some(&(key, purpose)) = self.clients.get(&txn) else { return };
        let code = msg.status().unwrap_or(0);
        if code >= 200 && purpose != Purpose::BInvite {
            self.clients.remove(&txn);
        }
        if purpose != Purpose::BInvite {
            return;
        }
        if !self.calls.contains_key(&key) {
            // The caller is gone (e.g. CANCEL crossed B's 200): end B's dialog too.
            if (200..300).contains(&code) {
                self.ack_and_bye_orphan(now, &msg);
            }
            if code >= 200 {
                self.clients.remove(&txn);
            }
            return;
        }
        match code {
            100 => {}
            101..=199 => {
                let Some(call) = self.calls.get(&key) else { return };
                if call.state != State::Ringing {
                    return;
                }
                let mut rb = ResponseBuilder::new(&call.a_invite_msg, code, msg.reason().unwrap_or("Ringing"))
                    .to_tag(&call.a.local_tag)
                    .header("Contact", &format!("<{}>", call.a.local_contact));
                let body = msg.body();
                if !body.is_empty() {
                    rb = rb.body(msg.content_type().unwrap_or("application/sdp"), &body);
                }
                let resp = rb.build();
                let t = call.a_invite;
                self.txn.respond(now, t, code, resp, None);
            }
            200..=299 => {
                let Some(call) = self.calls.get_mut(&key) else { return };
                let first = call.state == State::Ringing;
                if !first {
                    let theirs = msg.to_hdr().ok().and_then(|t| t.tag().map(str::to_owned));
                    let ours = call.b.as_ref().and_then(|b| b.remote_tag.clone());
                    if theirs != ours {
                        // Another fork answered too (RFC 3261 13.2.2.4): ACK it and end it.
                        self.ack_and_bye_orphan(now, &msg);
                        return;
                    }
                    // A retransmission: our ACK was lost. ACK again, unless the answer is pending.
                    let body = match &call.b_ack {
                        BAck::Waiting => return,
                        BAck::Sent(body) => body.clone(),
                        BAck::Immediate => None,
                    };
                    if let Some(b) = call.b.as_ref() {
                        let (peer, data) = b.ack_with(&msg, &mut self.rng, &self.cfg, body.as_ref().map(|(c, b)| (c.as_str(), &b[..])));
                        self.outputs.push_back(Output::Transmit(Transmit { peer, data, mark: None }));
                    }
                    return;
                }
                if let Some(b) = call.b.as_mut() {
                    b.confirm_uac(&msg);
                }
                let delayed_offer = call.a_invite_msg.body().is_empty() && !msg.body().is_empty();
                if delayed_offer {
                    call.b_ack = BAck::Waiting;
                    call.b_2xx = Some(msg.clone());
                } else if let Some(b) = call.b.as_ref() {
                    let (peer, data) = b.ack(&msg, &mut self.rng, &self.cfg);
                    self.outputs.push_back(Output::Transmit(Transmit { peer, data, mark: None }));
                }
                call.state = State::Connected;
                call.answered = Some(now);
                let mut rb = ResponseBuilder::new(&call.a_invite_msg, 200, "OK")
                    .to_tag(&call.a.local_tag)
                    .header("Contact", &format!("<{}>", call.a.local_contact))
                    .header("Allow", ALLOW)
                    .header("Server", &self.cfg.user_agent);
                let body = msg.body();
                if !body.is_empty() {
                    rb = rb.body(msg.content_type().unwrap_or("application/sdp"), &body);
                }
                let resp = rb.build();
                let (t, since) = (call.a_invite, call.arrived);
                self.txn.respond(now, t, 200, resp, Some(Mark { stage: Stage::InviteTo200, since }));
            }
            _ => {
                self.clients.remove(&txn);
                let reason = msg.reason().unwrap_or("Failed").to_owned();
                let outcome = match code {
                    486 | 600 | 603 => Outcome::Busy,
                    487 => Outcome::Cancelled,
                    _ => Outcome::Failed,
                };
                // The caller gets the callee's answer (codes a UA would not forward are mapped).
                let (fwd, fwd_reason) = match code {
                    401 | 407 => (503, "Service Unavailable".to_owned()),
                    _ => (code, reason),
                };
                if let Some(call) = self.calls.get_mut(&key) {
                    call.b = None;
                }
                // A redirect is useful to the caller only with where to go.
                let contacts: Vec<&str> =
                    if (300..400).contains(&code) { msg.header_values(HeaderName::Contact).collect() } else { Vec::new() };
                let extra = (!contacts.is_empty()).then(|| ("Contact", contacts.join(", ")));
                self.fail_unanswered_with(now, key, fwd, &fwd_reason, outcome, extra);
            }
        }
    }

    fn on_stray_response(&mut self, msg: Message) {
        // A 2xx retransmission to an INVITE whose transaction is gone: ACK it if it belongs to a call.
        if !(msg.status().is_some_and(|c| (200..300).contains(&c)) && msg.cseq().is_ok_and(|c| c.method == Method::Invite)) {
            return;
        }
        let tag = msg.from_hdr().ok().and_then(|f| f.tag().map(str::to_owned));
        let (Some(tag), Some(cid)) = (tag, msg.call_id()) else { return };
        if let Some(&(key, Side::B)) = self.dialogs.get(dkey(&(cid, tag.as_str()))) {
            if let Some(b) = self.calls.get(&key).and_then(|c| c.b.as_ref()) {
                let (peer, ack) = b.ack(&msg, &mut self.rng, &self.cfg);
                self.send(peer, ack, None);
            }
        }
    }

    /// A 2xx to our INVITE whose call is already gone (the caller's CANCEL crossed it): ACK it
    /// and end the dialog with BYE (RFC 3261 15: the callee must not be left up). The client
    /// transaction mapping is what tells that the 2xx is ours.
    fn ack_and_bye_orphan(&mut self, now: Instant, resp: &Message) {
        if let Some(mut d) = dialog::orphan_from_response(resp, self.contact_uri(Transport::Udp)) {
            let (peer, ack) = d.ack(resp, &mut self.rng, &self.cfg);
            self.send(peer, ack, None);
            let (peer, branch, bye) = d.bye(&mut self.rng, &self.cfg, "caller left");
            self.txn.request(now, Method::Bye, &branch, bye, peer);
        }
    }

    // ---- ending calls ---------------------------------------------------------------------------

    /// Ends an answered or unanswered call from callgate's side, whatever its state.
    fn hang_up(&mut self, now: Instant, key: CallKey, outcome: Outcome, status: u16, reason: &str) {
        let Some(call) = self.calls.get(&key) else { return };
        match call.state {
            State::Ringing => {
                self.cancel_b(now, key);
                self.fail_unanswered(now, key, 503, "Service Unavailable", outcome);
            }
            _ => self.end_call(now, key, outcome, status, reason, None),
        }
    }

    /// Ends an answered call: BYE to every leg except `except` (the side that hung up), media stop, record.
    fn end_call(&mut self, now: Instant, key: CallKey, outcome: Outcome, status: u16, reason: &str, except: Option<Side>) {
        let Some(mut call) = self.calls.remove(&key) else { return };
        self.a_invites.remove(&call.a_invite);
        self.dialogs.remove(dkey(&(call.a.call_id.as_str(), call.a.local_tag.as_str())));
        if except != Some(Side::A) {
            let (peer, branch, bye) = call.a.bye(&mut self.rng, &self.cfg, reason);
            let t = self.txn.request(now, Method::Bye, &branch, bye, peer);
            self.clients.insert(t, (key, Purpose::Bye));
        }
        if let Some(b) = call.b.as_mut() {
            self.dialogs.remove(dkey(&(b.call_id.as_str(), b.local_tag.as_str())));
            if let Some(b2xx) = call.b_2xx.take() {
                // Its 2xx is still unacknowledged (delayed offer): ACK before BYE (RFC 3261 15).
                let (peer, data) = b.ack(&b2xx, &mut self.rng, &self.cfg);
                self.outputs.push_back(Output::Transmit(Transmit { peer, data, mark: None }));
            }
            if except != Some(Side::B) && b.confirmed() {
                let (peer, branch, bye) = b.bye(&mut self.rng, &self.cfg, reason);
                let t = self.txn.request(now, Method::Bye, &branch, bye, peer);
                self.clients.insert(t, (key, Purpose::Bye));
            }
        }
        if let Some(port) = call.media_port.take() {
            self.outputs.push_back(Output::Media(MediaCommand::Stop { call: key }));
            self.ports.release(port);
        }
        self.finish(now, &call, outcome, status, reason);
    }

    /// Ends a call whose caller has had no final answer: the final answer is `code`.
    fn fail_unanswered(&mut self, now: Instant, key: CallKey, code: u16, reason: &str, outcome: Outcome) {
        self.fail_unanswered_with(now, key, code, reason, outcome, None);
    }

    fn fail_unanswered_with(
        &mut self,
        now: Instant,
        key: CallKey,
        code: u16,
        reason: &str,
        outcome: Outcome,
        extra: Option<(&str, String)>,
    ) {
        let Some(mut call) = self.calls.remove(&key) else { return };
        self.a_invites.remove(&call.a_invite);
        self.dialogs.remove(dkey(&(call.a.call_id.as_str(), call.a.local_tag.as_str())));
        if let Some(b) = &call.b {
            self.dialogs.remove(dkey(&(b.call_id.as_str(), b.local_tag.as_str())));
        }
        let mut rb = ResponseBuilder::new(&call.a_invite_msg, code, reason).to_tag(&call.a.local_tag);
        if code == 503 {
            rb = rb.header("Retry-After", &self.cfg.retry_after_s.to_string());
        }
        if let Some((name, value)) = &extra {
            rb = rb.header(name, value);
        }
        let resp = rb.build();
        self.txn.respond(now, call.a_invite, code, resp, None);
        if let Some(port) = call.media_port.take() {
            self.ports.release(port);
        }
        call.answered = None;
        self.finish(now, &call, outcome, code, reason);
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
        };
        self.outputs.push_back(Output::Record(rec));
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
                        if purpose == Purpose::BInvite && self.calls.contains_key(&key) {
                            tracing::info!(call = key, "no answer from the bridge target: 408");
                            if let Some(call) = self.calls.get_mut(&key) {
                                call.b = None;
                            }
                            self.fail_unanswered(now, key, 408, "Request Timeout", Outcome::Failed);
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

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO";
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
