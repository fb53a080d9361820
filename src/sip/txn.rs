//! RFC 3261 section 17 transactions, with the RFC 6026 "Accepted" state, as a sans-IO state machine.
//!
//! [`TxnLayer`] holds every live transaction of one SIP endpoint. The shell feeds it parsed messages
//! ([`TxnLayer::on_message`]) and the time ([`TxnLayer::handle_timeout`] at [`TxnLayer::poll_timeout`]);
//! the transaction user (TU: the call core) starts client transactions ([`TxnLayer::request`]) and answers
//! server transactions ([`TxnLayer::respond`]). What must go on the wire comes out of
//! [`TxnLayer::poll_transmit`]; what the TU must learn about comes out of [`TxnLayer::poll_event`].
//! Nothing here reads a clock, a socket or a random source.
//!
//! # Timers (RFC 3261 table 4, RFC 6026)
//!
//! | timer | what | unreliable | reliable |
//! |---|---|---|---|
//! | A | INVITE request retransmit | T1, doubling (no cap) | — |
//! | B | INVITE client timeout (Calling) | 64·T1 | 64·T1 |
//! | D | INVITE client wait in Completed (absorb response retransmits) | 32 s | 0 |
//! | E | non-INVITE request retransmit | T1, doubling, capped at T2; T2 in Proceeding | — |
//! | F | non-INVITE client timeout | 64·T1 | 64·T1 |
//! | G | INVITE final non-2xx response retransmit | T1, doubling, capped at T2 | — |
//! | H | wait for the ACK of our non-2xx | 64·T1 | 64·T1 |
//! | I | INVITE server wait in Confirmed (absorb ACK retransmits) | T4 | 0 |
//! | J | non-INVITE server wait in Completed (absorb request retransmits) | 64·T1 | 0 |
//! | K | non-INVITE client wait in Completed (absorb response retransmits) | T4 | 0 |
//! | L | INVITE server in Accepted (absorb INVITE retransmits; ACK deadline) | 64·T1 | 64·T1 |
//! | M | INVITE client in Accepted (pass 2xx retransmits to the TU) | 64·T1 | 64·T1 |
//! | 2xx | our 2xx retransmit in Accepted until the ACK (RFC 3261 13.3.1.4) | T1, doubling, capped at T2 | — |
//!
//! A wait timer of length 0 (reliable transports) terminates the transaction at once, inside the call
//! that entered the state.
//!
//! Timers live in one binary heap of `(deadline, slot, txn, generation)` with lazy cancellation: each
//! transaction has two timer slots (`retransmit` and `lifetime`); re-arming or cancelling a slot bumps
//! its generation, so stale heap entries are skipped (and discarded from the top of the heap after every
//! call, so that [`TxnLayer::poll_timeout`] always reports a live deadline). A retransmission costs one
//! heap push and one `Bytes` clone (a reference count), nothing else.
//!
//! # Matching (RFC 3261 17.1.3, 17.2.3)
//!
//! - Responses match a client transaction by the top Via `branch` and the CSeq method.
//! - Requests whose top Via branch starts with `z9hG4bK` match a server transaction by branch, sent-by
//!   and method (ACK matches the INVITE). Branches are compared byte for byte, sent-by case-insensitively.
//! - Other (RFC 2543) requests match by Request-URI, From tag, Call-ID, CSeq number and method (ACK as
//!   INVITE) and top Via; a non-ACK request also needs the To tag of the request that created the
//!   transaction, an ACK needs the To tag of the final response the transaction sent.
//! - A request whose top Via (or, without the magic cookie, Request-URI, From, Call-ID or CSeq) cannot be
//!   parsed still gets a server transaction, so that the TU can answer it (e.g. 400), but no
//!   retransmission will ever match it. A response without a parseable Via branch or CSeq is
//!   [`Incoming::Stray`].
//!
//! # The TU's duties
//!
//! - Answer every server transaction: an INVITE with a `100 Trying` at once (this layer does not generate
//!   one by itself), every request eventually with a final response. [`TxnLayer::terminate`] drops a
//!   transaction the TU has given up on.
//! - Send the ACK for a 2xx itself (it is a new transaction-less request; [`TxnLayer::request`] with
//!   `Method::Ack` just transmits it), and again for every 2xx retransmission delivered as
//!   [`Incoming::Response`] while the INVITE client transaction is Accepted.
//! - Call [`TxnLayer::ack_received`] when the ACK for its 2xx arrives ([`Incoming::Ack2xx`]).
//! - Cancel a ringing INVITE it sent after its own timeout (Timer C is the TU's: in Proceeding the INVITE
//!   client transaction waits for a final response without a deadline, as RFC 3261 says); if even the
//!   CANCEL draws no final response to the INVITE within 64·T1, [`TxnLayer::terminate`] it (RFC 3261 9.1).
//!
//! # State machines
//!
//! "event / action" labels; "to TU" means [`Incoming::Response`]. A transaction that reaches
//! Terminated is removed and reported as [`TxnEvent::Terminated`]. "(0 rel.)": the wait is zero on
//! reliable transports (the transaction terminates at once).
//!
//! ## INVITE client (RFC 3261 figure 5 with RFC 6026 Accepted)
//!
//! ```text
//!                          | request(INVITE) / send INVITE; A = T1 (unreliable), B = 64*T1
//!                          v
//!                    +-----------+
//!                    |  Calling  |<-----+ Timer A / resend INVITE,
//!                    |           |------+ A = 2*A
//!                    |           |---- Timer B / Timeout event -----------------------------------+
//!                    +-----------+                                                                |
//!                      |   |   | 300-699 / send ACK, to TU                                        |
//!                      |   |   +------------------------------------+                             |
//!          +-----------+   |                                        |                             |
//!          | 2xx / to TU   |                                        |                             |
//!          |               | 1xx / to TU                            |                             |
//!          |               |                                        |                             |
//!          |               v                                        |                             |
//!          |         +------------+                                 |                             |
//!          |         | Proceeding |<-----+ 1xx / to TU              |                             |
//!          |         |            |------+                          |                             |
//!          |         +------------+                                 |                             |
//!          |           |       |                                    |                             |
//!          |           |       | 300-699 / send ACK, to TU          |                             |
//!          | +---------+       +--------------------------------+   |                             |
//!          | | 2xx / to TU                                      |   |                             |
//!          v v                                                  v   v                             |
//!     +------------+                                      +------------------+                    |
//!     |  Accepted  |<-----+ 2xx / to TU                   |    Completed     |<-----+ 300-699 /   |
//!     | M = 64*T1  |------+                               | D = 32s (0 rel.) |------+ resend ACK  |
//!     +------------+                                      +------------------+                    |
//!           |                                                     |                               |
//!           |                                                     |                               |
//!           | Timer M                                             | Timer D                       |
//!           |                                                     |                               |
//!           v                                                     v                               |
//!     +------------------------------------------------------------------------------+            |
//!     |                                  Terminated                                  |<-----------+
//!     +------------------------------------------------------------------------------+
//! ```
//!
//! ## Non-INVITE client (RFC 3261 figure 6)
//!
//! ```text
//!                        | request() / send; E = T1 (unreliable), F = 64*T1
//!                        v
//!                   +----------+
//!                   |  Trying  |<-----+ Timer E / resend,
//!                   |          |------+ E = min(2*E, T2)
//!                   |          |-------------------------- Timer F / Timeout event ---+
//!                   +----------+                                                      |
//!    200-699 / to TU  |  |                                                            |
//!       +-------------+  |                                                            |
//!       |                | 1xx / to TU                                                |
//!       |                |                                                            |
//!       |                v                                                            |
//!       |         +-------------+                                                     |
//!       |         |  Proceeding |<-----+ Timer E / resend, E = T2;                    |
//!       |         |             |------+ 1xx / to TU                                  |
//!       |         |             |------------------------- Timer F / Timeout event ---+
//!       |         +-------------+                                                     |
//!       |                |                                                            |
//!       |                |                                                            |
//!       |                | 200-699 / to TU                                            |
//!       |                |                                                            |
//!       |                v                                                            |
//!       |         +-----------------+                                                 |
//!       +-------->|    Completed    |<-----+ 200-699 /                                |
//!                 | K = T4 (0 rel.) |------+ absorbed                                 |
//!                 +-----------------+                                                 |
//!                        |                                                            |
//!                        |                                                            |
//!                        | Timer K                                                    |
//!                        |                                                            |
//!                        v                                                            |
//!     +----------------------------------------------------------------+              |
//!     |                           Terminated                           |<-------------+
//!     +----------------------------------------------------------------+
//! ```
//!
//! ## INVITE server (RFC 3261 figure 7 with RFC 6026 Accepted; the 2xx retransmission of 13.3.1.4)
//!
//! ```text
//!                           | INVITE / Incoming::Request (the TU answers 100 at once)
//!                           v
//!                     +------------+
//!                     | Proceeding |<-----+ INVITE / resend last 1xx;
//!                     |            |------+ respond(1xx) / send
//!                     |            |-- respond(2xx) / send; 2xx timer = T1, L = 64*T1 --+
//!                     +------------+                                                    |
//!                           |                                                           |
//!                           | respond(300-699) / send;                                  |
//!                           | G = T1 (unreliable), H = 64*T1                            |
//!                           |                                                           |
//!                           v                                                           |
//!                     +------------+                                                    |
//!                     | Completed  |<-----+ INVITE / resend final;                      |
//!                     |            |------+ Timer G / resend final, G = min(2*G, T2)    |
//!     +---------------|            |                                                    |
//!     |               +------------+                                                    |
//!     | Timer H /           |                                                           |
//!     | Timeout             | ACK / absorbed                                            |
//!     | event               v                                                           |
//!     |             +-----------------+                                                 |
//!     |             |    Confirmed    |<-----+ ACK / absorbed                           v
//!     |             | I = T4 (0 rel.) |------+                                  +--------------+
//!     |             +-----------------+         2xx timer / resend 2xx,  +----->|   Accepted   |
//!     |                     |          x2 up to T2, until ack_received;  +------|  L = 64*T1   |
//!     |                     |                        INVITE / absorbed;         +--------------+
//!     |                     |                   ACK / Incoming::Ack2xx;                 |
//!     |                     | Timer I               respond(2xx) / send                 |
//!     |                     |                                                           |
//!     |                     |                                 Timer L (AckTimeout event |
//!     |                     |                                     unless ack_received)  |
//!     |                     v                                                           v
//!     |   +------------------------------------------------------------------------------------+
//!     +-->|                                     Terminated                                     |
//!         +------------------------------------------------------------------------------------+
//! ```
//!
//! ## Non-INVITE server (RFC 3261 figure 8)
//!
//! ```text
//!                            | request / Incoming::Request
//!                            v
//!                       +----------+
//!                       |  Trying  |<-----+ request / absorbed
//!                       |          |------+
//!                       +----------+
//!                         |  |
//!       +-----------------+  |
//!       |                    | respond(1xx) / send
//!       | respond(200-699)   |
//!       | / send             |
//!       |                    v
//!       |             +-------------+
//!       |             |  Proceeding |<-----+ request / resend last 1xx;
//!       |             |             |------+ respond(1xx) / send
//!       |             +-------------+
//!       |                    |
//!       |                    |
//!       |                    | respond(200-699) / send
//!       |                    |
//!       |                    |
//!       |                    v
//!       |             +--------------------+
//!       +------------>|     Completed      |<-----+ request / resend final
//!                     | J = 64*T1 (0 rel.) |------+
//!                     +--------------------+
//!                            |
//!                            |
//!                            | Timer J
//!                            |
//!                            v
//!                     +--------------------+
//!                     |     Terminated     |
//!                     +--------------------+
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::metrics::Mark;
use crate::sip::build;
use crate::sip::msg::{Message, Method};
use crate::sip::{Peer, Transmit};

/// The RFC 3261 timer base values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnConfig {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum time a message remains in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Timer D on unreliable transports (RFC 3261 table 4: "> 32s for UDP").
pub const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

impl TxnConfig {
    /// 64·T1: Timers B, F, H, L, M, and J on unreliable transports.
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// A hasher for maps keyed by ids callgate allocates itself (transaction ids, call keys): a
/// multiply-and-fold of the one integer. Not for keys a peer chooses (Call-ID, branch, tags):
/// those maps keep std's randomly keyed SipHash, which resists hash flooding.
#[derive(Clone, Copy, Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only integers are hashed with this hasher; bytes still work, just not fast.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A `HashMap` keyed by an id callgate allocated (see [`IdHasher`]).
pub(crate) type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Identifies one transaction of a [`TxnLayer`]. Never reused within one layer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct TxnId(pub u64);

/// What [`TxnLayer::on_message`] made of a message.
pub enum Incoming {
    /// A new server transaction (including CANCEL: see [`TxnLayer::cancel_target`]). Answer it with
    /// [`TxnLayer::respond`]. `peer` is where the responses go.
    Request {
        txn: TxnId,
        msg: Message,
        peer: Peer,
    },
    /// An ACK that matched no INVITE server transaction (the ACK for a 2xx, end to end: the dialog's), or
    /// one that matched an INVITE server transaction in Accepted (also the 2xx's ACK).
    Ack2xx { msg: Message, peer: Peer },
    /// A response for a client transaction; includes 2xx retransmissions while the INVITE client
    /// transaction is Accepted (RFC 6026).
    Response { txn: TxnId, msg: Message },
    /// A response matching no client transaction (or one without a parseable Via / CSeq).
    Stray { msg: Message },
    /// A retransmission the layer handled itself.
    Absorbed,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn first_line(m: &Message) -> String {
            let raw = m.raw();
            let end = raw
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        }
        match self {
            Incoming::Request { txn, msg, peer } => f
                .debug_struct("Request")
                .field("txn", txn)
                .field("msg", &first_line(msg))
                .field("peer", peer)
                .finish(),
            Incoming::Ack2xx { msg, peer } => f
                .debug_struct("Ack2xx")
                .field("msg", &first_line(msg))
                .field("peer", peer)
                .finish(),
            Incoming::Response { txn, msg } => f
                .debug_struct("Response")
                .field("txn", txn)
                .field("msg", &first_line(msg))
                .finish(),
            Incoming::Stray { msg } => f
                .debug_struct("Stray")
                .field("msg", &first_line(msg))
                .finish(),
            Incoming::Absorbed => f.write_str("Absorbed"),
        }
    }
}

/// What the TU must learn about, from [`TxnLayer::poll_event`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TxnEvent {
    /// Timer B / F (no final response: for an INVITE, act as on a 408), or Timer H (no ACK came for our
    /// non-2xx final response: a server-side failure). `Terminated` follows.
    Timeout { txn: TxnId },
    /// Our 2xx to an INVITE was never ACKed within 64·T1 (Timer L): the TU should send BYE.
    /// `Terminated` follows.
    AckTimeout { txn: TxnId },
    /// The transaction is gone; its id matches nothing any more.
    Terminated { txn: TxnId },
}

/// Which of the four state machines a transaction runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TxnKind {
    InviteClient,
    NonInviteClient,
    InviteServer,
    NonInviteServer,
}

/// The state of a live transaction ("Terminated" transactions are gone: [`TxnLayer::state`] is `None`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TxnState {
    /// INVITE client before any response.
    Calling,
    /// Non-INVITE client or server before any (client) / any provisional (server) response.
    Trying,
    Proceeding,
    Completed,
    /// RFC 6026: INVITE transaction after a 2xx.
    Accepted,
    /// INVITE server after the ACK for its non-2xx.
    Confirmed,
}

/// Why [`TxnLayer::try_respond`] refused (`respond` ignores these).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TxnError {
    #[error("transaction {0:?} is unknown or already terminated")]
    Unknown(TxnId),
    #[error(
        "transaction {txn:?} is a {kind:?} transaction: only server transactions take responses"
    )]
    NotServer { txn: TxnId, kind: TxnKind },
    #[error("status {0} is not a response code (expected 100..=699)")]
    InvalidStatus(u16),
    #[error(
        "transaction {txn:?} ({kind:?}) is {state:?}: a {status} response cannot be sent any more"
    )]
    WrongState {
        txn: TxnId,
        kind: TxnKind,
        state: TxnState,
        status: u16,
    },
}

/// Timer slots of a transaction. `Lifetime` sorts first, so that a timeout due at the same instant as a
/// retransmission wins (no pointless last retransmission).
const LIFETIME: usize = 0;
const RETRANSMIT: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct TimerEntry {
    at: Instant,
    slot: u8,
    id: u64,
    gen: u32,
}

/// The method a request matches transactions under: ACK matches the INVITE.
fn match_method(m: &Method) -> Method {
    if *m == Method::Ack {
        Method::Invite
    } else {
        m.clone()
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct ServerKey {
    branch: Box<str>,
    sent_by: Box<str>,
    method: Method,
}

/// RFC 2543 (no magic cookie) matching key; the To tag is checked separately.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct LegacyKey {
    request_uri: Box<str>,
    from_tag: Option<Box<str>>,
    call_id: Box<str>,
    cseq: u32,
    method: Method,
    via: Box<str>,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct ClientKey {
    branch: Box<str>,
    method: Method,
}

enum RequestKey {
    Rfc3261(ServerKey),
    Rfc2543(LegacyKey, Option<Box<str>>),
    Unmatchable,
}

/// Where a transaction is indexed (to unindex it on termination).
enum Index {
    None,
    Client(ClientKey),
    Server(ServerKey),
    Legacy(Box<Legacy>),
}

struct Legacy {
    key: LegacyKey,
    /// To tag of the request that created the transaction.
    req_to_tag: Option<Box<str>>,
    /// To tag of the final response we sent (an RFC 2543 ACK must carry it; for a 2xx, the ACK then
    /// reaches the TU as [`Incoming::Ack2xx`]).
    resp_to_tag: Option<Box<str>>,
}

struct Txn {
    kind: TxnKind,
    state: TxnState,
    peer: Peer,
    reliable: bool,
    /// Client: the request, retransmitted by Timer A / E. Server: empty.
    request: Bytes,
    /// Server: the last response sent. INVITE client in Completed: the ACK for the non-2xx.
    last: Option<Bytes>,
    /// The current retransmit interval (A, E, G, 2xx).
    interval: Duration,
    /// The generation of the armed heap entry per slot.
    timers: [Option<u32>; 2],
    gen: u32,
    ack_received: bool,
    index: Index,
}

impl Txn {
    fn arm(
        &mut self,
        id: u64,
        slot: usize,
        at: Instant,
        heap: &mut BinaryHeap<Reverse<TimerEntry>>,
    ) {
        self.gen = self.gen.wrapping_add(1);
        self.timers[slot] = Some(self.gen);
        heap.push(Reverse(TimerEntry {
            at,
            slot: slot as u8,
            id,
            gen: self.gen,
        }));
    }
    fn disarm(&mut self, slot: usize) {
        self.timers[slot] = None;
    }
    fn disarm_all(&mut self) {
        self.timers = [None, None];
    }
}

/// What a state transition leaves for the layer to do after the transaction borrow ends.
#[must_use]
enum Step {
    Stay,
    Terminate,
}

/// All live transactions of one endpoint, their timers, and their output queues.
pub struct TxnLayer {
    cfg: TxnConfig,
    next_id: u64,
    txns: IdMap<u64, Txn>,
    server: HashMap<ServerKey, TxnId>,
    legacy: HashMap<LegacyKey, Vec<TxnId>>,
    client: HashMap<ClientKey, TxnId>,
    heap: BinaryHeap<Reverse<TimerEntry>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
}

fn send(q: &mut VecDeque<Transmit>, peer: Peer, data: Bytes, mark: Option<Mark>) {
    q.push_back(Transmit { peer, data, mark });
}

impl TxnLayer {
    pub fn new(cfg: TxnConfig) -> Self {
        TxnLayer {
            cfg,
            next_id: 1,
            txns: IdMap::default(),
            server: HashMap::new(),
            legacy: HashMap::new(),
            client: HashMap::new(),
            heap: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.cfg
    }

    /// Live transactions (for tests and metrics).
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// The state of a live transaction; `None` once it has terminated.
    pub fn state(&self, txn: TxnId) -> Option<TxnState> {
        self.txns.get(&txn.0).map(|t| t.state)
    }

    /// Which state machine a live transaction runs.
    pub fn kind(&self, txn: TxnId) -> Option<TxnKind> {
        self.txns.get(&txn.0).map(|t| t.kind)
    }

    /// The earliest live timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    fn alloc_id(&mut self) -> TxnId {
        let id = self.next_id;
        self.next_id += 1;
        TxnId(id)
    }

    // ----------------------------------------------------------------------------------------------
    // Incoming messages

    /// Feed one parsed message received from `from`.
    pub fn on_message(&mut self, now: Instant, msg: Message, from: Peer) -> Incoming {
        let r = if msg.is_request() {
            self.on_request(now, msg, from)
        } else {
            self.on_response(now, msg)
        };
        self.prune();
        r
    }

    fn on_request(&mut self, now: Instant, msg: Message, from: Peer) -> Incoming {
        let Some(method) = msg.method().cloned() else {
            return Incoming::Stray { msg };
        };
        let key = request_key(&msg, &method);
        if let Some(id) = self.find_server(&key, &method) {
            return self.server_retransmit(now, id, &method, msg, from);
        }
        if method == Method::Ack {
            return Incoming::Ack2xx { msg, peer: from };
        }
        let id = self.alloc_id();
        let (kind, state) = if method == Method::Invite {
            (TxnKind::InviteServer, TxnState::Proceeding)
        } else {
            (TxnKind::NonInviteServer, TxnState::Trying)
        };
        let index = match key {
            RequestKey::Rfc3261(k) => {
                self.server.insert(k.clone(), id);
                Index::Server(k)
            }
            RequestKey::Rfc2543(k, req_to_tag) => {
                self.legacy.entry(k.clone()).or_default().push(id);
                Index::Legacy(Box::new(Legacy {
                    key: k,
                    req_to_tag,
                    resp_to_tag: None,
                }))
            }
            RequestKey::Unmatchable => Index::None,
        };
        self.txns.insert(
            id.0,
            Txn {
                kind,
                state,
                // Responses follow RFC 3261 18.2.2 / RFC 3581: the source with rport, else the Via port.
                peer: crate::sip::response_destination(&msg, from),
                reliable: from.transport.is_reliable(),
                request: Bytes::new(),
                last: None,
                interval: self.cfg.t1,
                timers: [None, None],
                gen: 0,
                ack_received: false,
                index,
            },
        );
        Incoming::Request {
            txn: id,
            msg,
            peer: from,
        }
    }

    /// The live server transaction `key` designates. For RFC 2543 keys, the key carries the request's
    /// To tag, and `method` decides which To tag it must equal (ACK: our final response's).
    fn find_server(&self, key: &RequestKey, method: &Method) -> Option<TxnId> {
        match key {
            RequestKey::Rfc3261(k) => self.server.get(k).copied(),
            RequestKey::Rfc2543(k, to_tag) => self.legacy.get(k)?.iter().copied().find(|id| {
                let Some(t) = self.txns.get(&id.0) else {
                    return false;
                };
                let Index::Legacy(l) = &t.index else {
                    return false;
                };
                if *method == Method::Ack {
                    l.resp_to_tag == *to_tag
                } else {
                    l.req_to_tag == *to_tag
                }
            }),
            RequestKey::Unmatchable => None,
        }
    }

    /// A request that matched the live server transaction `id`.
    fn server_retransmit(
        &mut self,
        now: Instant,
        id: TxnId,
        method: &Method,
        msg: Message,
        from: Peer,
    ) -> Incoming {
        let cfg = self.cfg;
        let Some(t) = self.txns.get_mut(&id.0) else {
            return Incoming::Absorbed;
        };
        if *method == Method::Ack {
            if t.kind != TxnKind::InviteServer {
                return Incoming::Absorbed;
            }
            match t.state {
                TxnState::Completed => {
                    // RFC 3261 17.2.1: ACK in Completed → Confirmed, Timer G and H stop, Timer I starts.
                    t.state = TxnState::Confirmed;
                    t.disarm_all();
                    if !t.reliable {
                        t.arm(id.0, LIFETIME, now + cfg.t4, &mut self.heap);
                    } else {
                        self.terminate_inner(id);
                    }
                    Incoming::Absorbed
                }
                TxnState::Accepted => {
                    // RFC 6026 8.7: ACK in Accepted is passed to the TU; it is our 2xx's ACK.
                    t.ack_received = true;
                    t.disarm(RETRANSMIT);
                    Incoming::Ack2xx { msg, peer: from }
                }
                // Confirmed: absorbed. Proceeding: no final response yet, nothing to acknowledge.
                _ => Incoming::Absorbed,
            }
        } else {
            let resend = match (t.kind, t.state) {
                (_, TxnState::Proceeding) | (_, TxnState::Completed) => t.last.clone(),
                // Trying: the TU has not answered yet. Accepted: RFC 6026 says absorb; Timer 2xx resends.
                _ => None,
            };
            if let Some(data) = resend {
                send(&mut self.transmits, t.peer, data, None);
            }
            Incoming::Absorbed
        }
    }

    fn on_response(&mut self, now: Instant, msg: Message) -> Incoming {
        let Some(id) = self.find_client(&msg) else {
            return Incoming::Stray { msg };
        };
        let Some(status) = msg.status() else {
            return Incoming::Stray { msg };
        };
        let cfg = self.cfg;
        let Some(t) = self.txns.get_mut(&id.0) else {
            return Incoming::Stray { msg };
        };
        // true: pass the response to the TU; false: absorbed.
        let deliver = match (t.kind, t.state, status / 100) {
            // INVITE client (RFC 3261 17.1.1.2, RFC 6026 7.2).
            (TxnKind::InviteClient, TxnState::Calling | TxnState::Proceeding, 1) => {
                // Retransmissions stop; Timer B only matters in Calling (RFC 3261 figure 5).
                t.state = TxnState::Proceeding;
                t.disarm_all();
                true
            }
            (TxnKind::InviteClient, TxnState::Calling | TxnState::Proceeding, 2) => {
                t.state = TxnState::Accepted;
                t.disarm_all();
                t.arm(id.0, LIFETIME, now + cfg.timeout(), &mut self.heap);
                true
            }
            (TxnKind::InviteClient, TxnState::Calling | TxnState::Proceeding, 3..=6) => {
                t.state = TxnState::Completed;
                t.disarm_all();
                t.last = match Message::parse(t.request.clone()) {
                    Ok(invite) => Some(build::ack_for_non2xx(&invite, &msg)),
                    Err(e) => {
                        tracing::warn!(txn = id.0, error = %e, "cannot parse our own INVITE to build its ACK");
                        None
                    }
                };
                if let Some(ack) = &t.last {
                    send(&mut self.transmits, t.peer, ack.clone(), None);
                }
                if t.reliable {
                    self.terminate_inner(id);
                } else {
                    t.arm(id.0, LIFETIME, now + TIMER_D_UNRELIABLE, &mut self.heap);
                }
                true
            }
            // 2xx retransmissions (or other 2xx) while Accepted go to the TU, which ACKs each.
            (TxnKind::InviteClient, TxnState::Accepted, 2) => true,
            (TxnKind::InviteClient, TxnState::Completed, 3..=6) => {
                if let Some(ack) = &t.last {
                    send(&mut self.transmits, t.peer, ack.clone(), None);
                }
                false
            }
            // Non-INVITE client (RFC 3261 17.1.2.2).
            (TxnKind::NonInviteClient, TxnState::Trying | TxnState::Proceeding, 1) => {
                t.state = TxnState::Proceeding;
                true
            }
            (TxnKind::NonInviteClient, TxnState::Trying | TxnState::Proceeding, 2..=6) => {
                t.state = TxnState::Completed;
                t.disarm_all();
                if t.reliable {
                    self.terminate_inner(id);
                } else {
                    t.arm(id.0, LIFETIME, now + cfg.t4, &mut self.heap);
                }
                true
            }
            // Late provisionals, retransmitted finals in Completed, anything odd.
            _ => false,
        };
        if deliver {
            Incoming::Response { txn: id, msg }
        } else {
            Incoming::Absorbed
        }
    }

    /// The client transaction a response belongs to (RFC 3261 17.1.3: top Via branch + CSeq method).
    fn find_client(&self, msg: &Message) -> Option<TxnId> {
        let branch = msg.top_via().ok()?.branch?;
        let method = msg.cseq().ok()?.method;
        self.client
            .get(&ClientKey {
                branch: branch.into(),
                method,
            })
            .copied()
    }

    /// The INVITE server transaction a CANCEL refers to (same branch & sent-by, RFC 3261 9.2; for RFC 2543
    /// requests, the 17.2.3 fallback with the method taken as INVITE).
    pub fn cancel_target(&self, cancel: &Message) -> Option<TxnId> {
        let key = request_key(cancel, &Method::Invite);
        let id = self.find_server(&key, &Method::Invite)?;
        (self.txns.get(&id.0)?.kind == TxnKind::InviteServer).then_some(id)
    }

    // ----------------------------------------------------------------------------------------------
    // The TU's side

    /// Server side: send a response (see the state diagrams in the module documentation). 1xx:
    /// Proceeding. INVITE 2xx: RFC 6026 Accepted — the layer retransmits the 2xx over unreliable
    /// transports (T1 doubling to T2) until [`ack_received`](Self::ack_received) or 64·T1
    /// ([`TxnEvent::AckTimeout`]). INVITE 3xx–6xx: Completed (Timer G/H), then Confirmed on the ACK.
    /// `mark` is copied into the first [`Transmit`] of this response only.
    ///
    /// A response the transaction cannot take (unknown or terminated transaction, a client transaction,
    /// a final response already sent, a status outside 100..=699) is ignored;
    /// [`try_respond`](Self::try_respond) says why.
    pub fn respond(
        &mut self,
        now: Instant,
        txn: TxnId,
        status: u16,
        data: Bytes,
        mark: Option<Mark>,
    ) {
        let _ = self.try_respond(now, txn, status, data, mark);
    }

    /// [`respond`](Self::respond), reporting what was refused. Nothing is sent on `Err`.
    pub fn try_respond(
        &mut self,
        now: Instant,
        txn: TxnId,
        status: u16,
        data: Bytes,
        mark: Option<Mark>,
    ) -> Result<(), TxnError> {
        if !(100..=699).contains(&status) {
            return Err(TxnError::InvalidStatus(status));
        }
        let cfg = self.cfg;
        let t = self.txns.get_mut(&txn.0).ok_or(TxnError::Unknown(txn))?;
        let wrong = TxnError::WrongState {
            txn,
            kind: t.kind,
            state: t.state,
            status,
        };
        let class = status / 100;
        let step = match t.kind {
            TxnKind::InviteClient | TxnKind::NonInviteClient => {
                return Err(TxnError::NotServer { txn, kind: t.kind });
            }
            TxnKind::InviteServer => match (t.state, class) {
                (TxnState::Proceeding, 1) => {
                    t.last = Some(data.clone());
                    send(&mut self.transmits, t.peer, data, mark);
                    Step::Stay
                }
                (TxnState::Proceeding | TxnState::Accepted, 2) => {
                    t.state = TxnState::Accepted;
                    record_resp_to_tag(t, &data);
                    t.last = Some(data.clone());
                    send(&mut self.transmits, t.peer, data, mark);
                    if t.timers[LIFETIME].is_none() {
                        t.arm(txn.0, LIFETIME, now + cfg.timeout(), &mut self.heap);
                    }
                    if !t.reliable && !t.ack_received {
                        t.interval = cfg.t1;
                        t.arm(txn.0, RETRANSMIT, now + cfg.t1, &mut self.heap);
                    }
                    Step::Stay
                }
                (TxnState::Proceeding, 3..=6) => {
                    t.state = TxnState::Completed;
                    record_resp_to_tag(t, &data);
                    t.last = Some(data.clone());
                    send(&mut self.transmits, t.peer, data, mark);
                    t.arm(txn.0, LIFETIME, now + cfg.timeout(), &mut self.heap);
                    if !t.reliable {
                        t.interval = cfg.t1;
                        t.arm(txn.0, RETRANSMIT, now + cfg.t1, &mut self.heap);
                    }
                    Step::Stay
                }
                _ => return Err(wrong),
            },
            TxnKind::NonInviteServer => match (t.state, class) {
                (TxnState::Trying | TxnState::Proceeding, 1) => {
                    t.state = TxnState::Proceeding;
                    t.last = Some(data.clone());
                    send(&mut self.transmits, t.peer, data, mark);
                    Step::Stay
                }
                (TxnState::Trying | TxnState::Proceeding, 2..=6) => {
                    t.state = TxnState::Completed;
                    t.last = Some(data.clone());
                    send(&mut self.transmits, t.peer, data, mark);
                    if t.reliable {
                        Step::Terminate
                    } else {
                        t.arm(txn.0, LIFETIME, now + cfg.timeout(), &mut self.heap);
                        Step::Stay
                    }
                }
                _ => return Err(wrong),
            },
        };
        if let Step::Terminate = step {
            self.terminate_inner(txn);
        }
        self.prune();
        Ok(())
    }

    /// The TU received the ACK for the 2xx it sent on INVITE server transaction `txn`: stop retransmitting
    /// the 2xx. The transaction stays Accepted (absorbing INVITE retransmissions) until Timer L, and
    /// [`TxnEvent::AckTimeout`] will not be reported. Ignored for any other transaction or state.
    pub fn ack_received(&mut self, _now: Instant, txn: TxnId) {
        if let Some(t) = self.txns.get_mut(&txn.0) {
            if t.kind == TxnKind::InviteServer && t.state == TxnState::Accepted {
                t.ack_received = true;
                t.disarm(RETRANSMIT);
            }
        }
        self.prune();
    }

    /// Client side: start a transaction for a request we built (its top Via carries `branch`) and send it
    /// to `peer`. Responses match it by `branch` and the CSeq method.
    ///
    /// `Method::Ack` (the ACK for a 2xx, which is no transaction) is transmitted once and nothing is kept:
    /// the returned id is never live.
    pub fn request(
        &mut self,
        now: Instant,
        method: Method,
        branch: &str,
        data: Bytes,
        peer: Peer,
    ) -> TxnId {
        self.request_marked(now, method, branch, data, peer, None)
    }

    /// [`request`](Self::request) whose first transmission carries a latency `mark`.
    pub fn request_marked(
        &mut self,
        now: Instant,
        method: Method,
        branch: &str,
        data: Bytes,
        peer: Peer,
        mark: Option<Mark>,
    ) -> TxnId {
        let id = self.alloc_id();
        send(&mut self.transmits, peer, data.clone(), mark);
        if method == Method::Ack {
            return id;
        }
        let (kind, state) = if method == Method::Invite {
            (TxnKind::InviteClient, TxnState::Calling)
        } else {
            (TxnKind::NonInviteClient, TxnState::Trying)
        };
        let key = ClientKey {
            branch: branch.into(),
            method,
        };
        if let Some(old) = self.client.insert(key.clone(), id) {
            // The TU reused a branch: the old transaction can no longer be matched.
            tracing::warn!(
                old = old.0,
                new = id.0,
                branch,
                "client transaction branch reused"
            );
            if let Some(t) = self.txns.get_mut(&old.0) {
                t.index = Index::None;
            }
        }
        let reliable = peer.transport.is_reliable();
        let mut t = Txn {
            kind,
            state,
            peer,
            reliable,
            request: data,
            last: None,
            interval: self.cfg.t1,
            timers: [None, None],
            gen: 0,
            ack_received: false,
            index: Index::Client(key),
        };
        t.arm(id.0, LIFETIME, now + self.cfg.timeout(), &mut self.heap);
        if !reliable {
            t.arm(id.0, RETRANSMIT, now + self.cfg.t1, &mut self.heap);
        }
        self.txns.insert(id.0, t);
        self.prune();
        id
    }

    /// Drop a live transaction at once, without sending anything (e.g. an INVITE client transaction
    /// whose CANCEL drew no final response within 64·T1, RFC 3261 9.1). Reports
    /// [`TxnEvent::Terminated`]; ignored for unknown ids.
    pub fn terminate(&mut self, txn: TxnId) {
        self.terminate_inner(txn);
        self.prune();
    }

    // ----------------------------------------------------------------------------------------------
    // Time

    /// Run every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse(e)) = self.heap.peek() {
            if e.at > now {
                break;
            }
            self.heap.pop();
            let slot = e.slot as usize;
            let Some(t) = self.txns.get_mut(&e.id) else {
                continue;
            };
            if t.timers[slot] != Some(e.gen) {
                continue;
            }
            t.timers[slot] = None;
            if slot == RETRANSMIT {
                self.fire_retransmit(now, TxnId(e.id));
            } else {
                self.fire_lifetime(TxnId(e.id));
            }
        }
        self.prune();
        // Lazy cancellation leaves dead entries inside the heap; rebuild when they dominate.
        if self.heap.len() > 1024 + 4 * self.txns.len() {
            let txns = &self.txns;
            self.heap.retain(|Reverse(e)| {
                txns.get(&e.id)
                    .is_some_and(|t| t.timers[e.slot as usize] == Some(e.gen))
            });
        }
    }

    fn fire_retransmit(&mut self, now: Instant, id: TxnId) {
        let cfg = self.cfg;
        let Some(t) = self.txns.get_mut(&id.0) else {
            return;
        };
        let (data, next) = match (t.kind, t.state) {
            // Timer A: doubles without a cap (RFC 3261 17.1.1.2).
            (TxnKind::InviteClient, TxnState::Calling) => {
                (t.request.clone(), t.interval.saturating_mul(2))
            }
            // Timer E.
            (TxnKind::NonInviteClient, TxnState::Trying) => {
                (t.request.clone(), t.interval.saturating_mul(2).min(cfg.t2))
            }
            (TxnKind::NonInviteClient, TxnState::Proceeding) => (t.request.clone(), cfg.t2),
            // Timer G, and the 2xx retransmission (RFC 3261 13.3.1.4).
            (TxnKind::InviteServer, TxnState::Completed) => match &t.last {
                Some(d) => (d.clone(), t.interval.saturating_mul(2).min(cfg.t2)),
                None => return,
            },
            (TxnKind::InviteServer, TxnState::Accepted) if !t.ack_received => match &t.last {
                Some(d) => (d.clone(), t.interval.saturating_mul(2).min(cfg.t2)),
                None => return,
            },
            _ => return,
        };
        send(&mut self.transmits, t.peer, data, None);
        t.interval = next;
        t.arm(id.0, RETRANSMIT, now + next, &mut self.heap);
    }

    fn fire_lifetime(&mut self, id: TxnId) {
        let Some(t) = self.txns.get(&id.0) else {
            return;
        };
        match (t.kind, t.state) {
            // Timer B, F, H.
            (TxnKind::InviteClient, TxnState::Calling)
            | (TxnKind::NonInviteClient, TxnState::Trying | TxnState::Proceeding)
            | (TxnKind::InviteServer, TxnState::Completed) => {
                self.events.push_back(TxnEvent::Timeout { txn: id });
            }
            // Timer L.
            (TxnKind::InviteServer, TxnState::Accepted) if !t.ack_received => {
                self.events.push_back(TxnEvent::AckTimeout { txn: id });
            }
            // Timer D, I, J, K, L (ACKed), M.
            _ => {}
        }
        self.terminate_inner(id);
    }

    fn terminate_inner(&mut self, id: TxnId) {
        let Some(t) = self.txns.remove(&id.0) else {
            return;
        };
        match t.index {
            Index::None => {}
            Index::Client(k) => {
                if self.client.get(&k) == Some(&id) {
                    self.client.remove(&k);
                }
            }
            Index::Server(k) => {
                if self.server.get(&k) == Some(&id) {
                    self.server.remove(&k);
                }
            }
            Index::Legacy(l) => {
                if let Some(v) = self.legacy.get_mut(&l.key) {
                    v.retain(|x| *x != id);
                    if v.is_empty() {
                        self.legacy.remove(&l.key);
                    }
                }
            }
        }
        self.events.push_back(TxnEvent::Terminated { txn: id });
    }

    /// Drop dead entries from the top of the timer heap, so that `poll_timeout` reports a live deadline.
    fn prune(&mut self) {
        while let Some(Reverse(e)) = self.heap.peek() {
            let live = self
                .txns
                .get(&e.id)
                .is_some_and(|t| t.timers[e.slot as usize] == Some(e.gen));
            if live {
                break;
            }
            self.heap.pop();
        }
    }
}

impl fmt::Debug for TxnLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxnLayer")
            .field("cfg", &self.cfg)
            .field("live", &self.txns.len())
            .field("timers", &self.heap.len())
            .field("transmits", &self.transmits.len())
            .field("events", &self.events.len())
            .finish()
    }
}

fn to_tag(msg: &Message) -> Option<Box<str>> {
    msg.to_hdr().ok().and_then(|n| n.tag().map(Box::from))
}

/// Remember the To tag of the final response of an RFC 2543 transaction (its ACK must carry it).
fn record_resp_to_tag(t: &mut Txn, data: &Bytes) {
    if let Index::Legacy(l) = &mut t.index {
        if let Ok(resp) = Message::parse(data.clone()) {
            l.resp_to_tag = to_tag(&resp);
        }
    }
}

/// The server-transaction key of a request, matched under `method` (ACK counts as INVITE).
fn request_key(msg: &Message, method: &Method) -> RequestKey {
    let Ok(via) = msg.top_via() else {
        return RequestKey::Unmatchable;
    };
    let method = match_method(method);
    let sent_by = via.sent_by().to_ascii_lowercase();
    if via.is_rfc3261_branch() {
        if let Some(branch) = via.branch {
            return RequestKey::Rfc3261(ServerKey {
                branch: branch.into(),
                sent_by: sent_by.into(),
                method,
            });
        }
    }
    let (Some(uri), Some(call_id), Ok(cseq), Ok(from)) =
        (msg.request_uri(), msg.call_id(), msg.cseq(), msg.from_hdr())
    else {
        return RequestKey::Unmatchable;
    };
    let key = LegacyKey {
        request_uri: uri.into(),
        from_tag: from.tag().map(Box::from),
        call_id: call_id.into(),
        cseq: cseq.seq,
        method,
        via: format!(
            "{}/{};{}",
            via.transport.to_ascii_uppercase(),
            sent_by,
            via.params
        )
        .into(),
    };
    RequestKey::Rfc2543(key, to_tag(msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Stage;
    use crate::sip::Transport;

    const UA: &str = "192.0.2.10:5060";

    fn udp() -> Peer {
        Peer::udp(UA.parse().unwrap())
    }

    fn tcp() -> Peer {
        Peer {
            transport: Transport::Tcp,
            addr: UA.parse().unwrap(),
            conn: Some(7),
        }
    }

    /// A request as a UA at 192.0.2.10 would send it. `branch: None` makes an RFC 2543 request.
    fn req_text(
        method: &str,
        branch: Option<&str>,
        cseq: u32,
        cseq_method: &str,
        to_tag: Option<&str>,
    ) -> String {
        let via_branch = branch.map(|b| format!(";branch={b}")).unwrap_or_default();
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:+4930123@edge.example SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060{via_branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@192.0.2.10>;tag=from1\r\n\
             To: <sip:+4930123@edge.example>{to_tag}\r\n\
             Call-ID: call-1@192.0.2.10\r\n\
             CSeq: {cseq} {cseq_method}\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    fn msg(text: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(text.as_bytes())).expect("test message parses")
    }

    fn invite(branch: &str) -> Message {
        msg(&req_text("INVITE", Some(branch), 1, "INVITE", None))
    }

    /// A response to `req` (copying Via, From, To, Call-ID, CSeq), with `to_tag` added if To has none.
    fn resp_bytes(req: &Message, status: u16, to_tag: Option<&str>) -> Bytes {
        let text = std::str::from_utf8(req.raw()).unwrap();
        let mut out = format!("SIP/2.0 {status} Whatever\r\n");
        for line in text.split("\r\n").skip(1) {
            let name = line
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match name.as_str() {
                "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{line}\r\n")),
                "to" => match to_tag {
                    Some(t) if !line.contains("tag=") => {
                        out.push_str(&format!("{line};tag={t}\r\n"))
                    }
                    _ => out.push_str(&format!("{line}\r\n")),
                },
                _ => {}
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        Bytes::from(out)
    }

    fn drain(l: &mut TxnLayer) -> Vec<Transmit> {
        std::iter::from_fn(|| l.poll_transmit()).collect()
    }

    fn events(l: &mut TxnLayer) -> Vec<TxnEvent> {
        std::iter::from_fn(|| l.poll_event()).collect()
    }

    fn new_request(l: &mut TxnLayer, now: Instant, m: Message, p: Peer) -> TxnId {
        match l.on_message(now, m, p) {
            Incoming::Request { txn, .. } => txn,
            other => panic!("expected a new request, got {other:?}"),
        }
    }

    #[test]
    fn mark_goes_on_the_first_transmit_only() {
        let t0 = Instant::now();
        let mut l = TxnLayer::new(TxnConfig::default());
        let inv = invite("z9hG4bK-m1");
        let id = new_request(&mut l, t0, inv.clone(), udp());
        let mark = Mark {
            stage: Stage::InviteTo100,
            since: t0,
        };
        l.respond(t0, id, 100, resp_bytes(&inv, 100, None), Some(mark));
        let tx = drain(&mut l);
        assert_eq!(tx.len(), 1);
        assert_eq!(tx[0].mark, Some(mark));
        assert_eq!(tx[0].peer, udp());
        // The retransmitted INVITE gets the 100 again, unmarked.
        assert!(matches!(
            l.on_message(t0, inv.clone(), udp()),
            Incoming::Absorbed
        ));
        let tx = drain(&mut l);
        assert_eq!(tx.len(), 1);
        assert_eq!(tx[0].mark, None);
        // 2xx: first marked, retransmissions not.
        let mark2 = Mark {
            stage: Stage::InviteTo200,
            since: t0,
        };
        l.respond(t0, id, 200, resp_bytes(&inv, 200, Some("x")), Some(mark2));
        assert_eq!(drain(&mut l)[0].mark, Some(mark2));
        let at = l.poll_timeout().unwrap();
        l.handle_timeout(at);
        let tx = drain(&mut l);
        assert_eq!(tx.len(), 1);
        assert_eq!(tx[0].mark, None);
    }

    #[test]
    fn respond_on_unknown_or_finished_txn_is_ignored_and_try_respond_says_why() {
        let t0 = Instant::now();
        let mut l = TxnLayer::new(TxnConfig::default());
        l.respond(t0, TxnId(999), 200, Bytes::from_static(b"x"), None);
        assert!(drain(&mut l).is_empty());
        assert_eq!(
            l.try_respond(t0, TxnId(999), 200, Bytes::new(), None),
            Err(TxnError::Unknown(TxnId(999)))
        );

        let m = msg(&req_text("OPTIONS", Some("z9hG4bK-o1"), 5, "OPTIONS", None));
        let id = new_request(&mut l, t0, m.clone(), udp());
        assert_eq!(
            l.try_respond(t0, id, 99, Bytes::new(), None),
            Err(TxnError::InvalidStatus(99))
        );
        assert_eq!(
            l.try_respond(t0, id, 700, Bytes::new(), None),
            Err(TxnError::InvalidStatus(700))
        );
        l.respond(t0, id, 200, resp_bytes(&m, 200, Some("t")), None);
        assert_eq!(drain(&mut l).len(), 1);
        let err = l
            .try_respond(t0, id, 500, resp_bytes(&m, 500, Some("t")), None)
            .unwrap_err();
        assert!(
            matches!(
                err,
                TxnError::WrongState {
                    state: TxnState::Completed,
                    status: 500,
                    ..
                }
            ),
            "{err}"
        );
        assert!(drain(&mut l).is_empty());

        let c = l.request(
            t0,
            Method::Options,
            "z9hG4bK-c1",
            Bytes::from_static(b"OPTIONS"),
            udp(),
        );
        assert!(matches!(
            l.try_respond(t0, c, 200, Bytes::new(), None),
            Err(TxnError::NotServer { .. })
        ));
    }

    #[test]
    fn unmatched_ack_goes_to_the_tu_and_stray_responses_are_reported() {
        let t0 = Instant::now();
        let mut l = TxnLayer::new(TxnConfig::default());
        let ack = msg(&req_text("ACK", Some("z9hG4bK-a2xx"), 1, "ACK", Some("tt")));
        assert!(matches!(
            l.on_message(t0, ack, udp()),
            Incoming::Ack2xx { .. }
        ));
        let inv = invite("z9hG4bK-nobody");
        let r = msg(std::str::from_utf8(&resp_bytes(&inv, 200, Some("q"))).unwrap());
        assert!(matches!(l.on_message(t0, r, udp()), Incoming::Stray { .. }));
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn matching_uses_branch_sent_by_and_method() {
        let t0 = Instant::now();
        let mut l = TxnLayer::new(TxnConfig::default());
        let id = new_request(&mut l, t0, invite("z9hG4bK-b1"), udp());
        // Same branch, other sent-by: a different transaction.
        let other = req_text("INVITE", Some("z9hG4bK-b1"), 1, "INVITE", None)
            .replace("192.0.2.10:5060;", "192.0.2.11:5060;");
        let id2 = new_request(&mut l, t0, msg(&other), udp());
        assert_ne!(id, id2);
        // Same branch and sent-by, other method (CANCEL): its own transaction.
        let cancel = msg(&req_text("CANCEL", Some("z9hG4bK-b1"), 1, "CANCEL", None));
        assert_eq!(l.cancel_target(&cancel), Some(id));
        let cid = new_request(&mut l, t0, cancel, udp());
        assert_ne!(cid, id);
        assert_eq!(l.kind(cid), Some(TxnKind::NonInviteServer));
        assert_eq!(l.len(), 3);
        // A CANCEL with another branch targets nothing.
        assert_eq!(
            l.cancel_target(&msg(&req_text(
                "CANCEL",
                Some("z9hG4bK-zz"),
                1,
                "CANCEL",
                None
            ))),
            None
        );
        // Retransmission of the first INVITE matches it.
        assert!(matches!(
            l.on_message(t0, invite("z9hG4bK-b1"), udp()),
            Incoming::Absorbed
        ));
        assert_eq!(l.len(), 3);
        // sent-by hosts compare case-insensitively.
        let named = req_text("INVITE", Some("z9hG4bK-h"), 1, "INVITE", None)
            .replace("192.0.2.10:5060;", "ua.example:5060;");
        let hid = new_request(&mut l, t0, msg(&named), udp());
        let upper = named.replace("ua.example:5060;", "UA.Example:5060;");
        assert!(matches!(
            l.on_message(t0, msg(&upper), udp()),
            Incoming::Absorbed
        ));
        assert_eq!(l.len(), 4);
        assert_eq!(l.state(hid), Some(TxnState::Proceeding));
    }

    #[test]
    fn reliable_transport_wait_timers_are_zero() {
        let t0 = Instant::now();
        let mut l = TxnLayer::new(TxnConfig::default());
        // Non-INVITE server: Timer J = 0.
        let m = msg(&req_text("OPTIONS", Some("z9hG4bK-t1"), 1, "OPTIONS", None));
        let id = new_request(&mut l, t0, m.clone(), tcp());
        l.respond(t0, id, 200, resp_bytes(&m, 200, Some("t")), None);
        assert_eq!(drain(&mut l).len(), 1);
        assert_eq!(l.state(id), None);
        // INVITE server: no Timer G; ACK → Confirmed → Timer I = 0.
        let inv = invite("z9hG4bK-t2");
        let id = new_request(&mut l, t0, inv.clone(), tcp());
        l.respond(t0, id, 486, resp_bytes(&inv, 486, Some("t")), None);
        assert_eq!(drain(&mut l)[0].peer, tcp());
        assert_eq!(
            l.poll_timeout(),
            Some(t0 + TxnConfig::default().timeout()),
            "only Timer H"
        );
        let ack = msg(&req_text("ACK", Some("z9hG4bK-t2"), 1, "ACK", Some("t")));
        assert!(matches!(l.on_message(t0, ack, tcp()), Incoming::Absorbed));
        assert_eq!(l.state(id), None);
        assert_eq!(l.len(), 0);
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn rfc2543_requests_match_by_the_fallback_rule() {
        let t0 = Instant::now();
        let mut l = TxnLayer::new(TxnConfig::default());
        let inv = msg(&req_text("INVITE", None, 1, "INVITE", None));
        let id = new_request(&mut l, t0, inv.clone(), udp());
        // A retransmission (same everything) is absorbed.
        assert!(matches!(
            l.on_message(t0, inv.clone(), udp()),
            Incoming::Absorbed
        ));
        // A different CSeq is a new transaction.
        let inv2 = msg(&req_text("INVITE", None, 2, "INVITE", None));
        let id2 = new_request(&mut l, t0, inv2, udp());
        assert_ne!(id, id2);
        // CANCEL (no cookie) finds the INVITE.
        assert_eq!(
            l.cancel_target(&msg(&req_text("CANCEL", None, 1, "CANCEL", None))),
            Some(id)
        );
        // Final non-2xx with To tag "srv"; the ACK must carry that tag to match.
        l.respond(t0, id, 486, resp_bytes(&inv, 486, Some("srv")), None);
        drain(&mut l);
        let wrong_ack = msg(&req_text("ACK", None, 1, "ACK", Some("other")));
        assert!(matches!(
            l.on_message(t0, wrong_ack, udp()),
            Incoming::Ack2xx { .. }
        ));
        assert_eq!(l.state(id), Some(TxnState::Completed));
        let ack = msg(&req_text("ACK", None, 1, "ACK", Some("srv")));
        assert!(matches!(l.on_message(t0, ack, udp()), Incoming::Absorbed));
        assert_eq!(l.state(id), Some(TxnState::Confirmed));
        // A 2xx to an RFC 2543 INVITE: its ACK (same Via, the 2xx's To tag) matches the Accepted
        // transaction, goes to the TU, and stops the 2xx retransmissions.
        let inv3 = msg(&req_text("INVITE", None, 3, "INVITE", None));
        let id3 = new_request(&mut l, t0, inv3.clone(), udp());
        l.respond(t0, id3, 200, resp_bytes(&inv3, 200, Some("ok3")), None);
        drain(&mut l);
        let ack3 = msg(&req_text("ACK", None, 3, "ACK", Some("ok3")));
        assert!(matches!(
            l.on_message(t0, ack3, udp()),
            Incoming::Ack2xx { .. }
        ));
        l.handle_timeout(t0 + Duration::from_secs(8));
        assert!(
            drain(&mut l).is_empty(),
            "2xx retransmission stopped by the matching ACK"
        );
        assert_eq!(l.state(id3), Some(TxnState::Accepted));
        // A non-cookie branch is treated as RFC 2543 too (it is part of the compared Via).
        let odd = msg(&req_text("OPTIONS", Some("1234"), 9, "OPTIONS", None));
        let oid = new_request(&mut l, t0, odd.clone(), udp());
        assert!(matches!(l.on_message(t0, odd, udp()), Incoming::Absorbed));
        let odd2 = msg(&req_text("OPTIONS", Some("5678"), 9, "OPTIONS", None));
        assert_ne!(new_request(&mut l, t0, odd2, udp()), oid);
    }

    #[test]
    fn cancel_is_a_normal_non_invite_server_transaction() {
        let t0 = Instant::now();
        let mut l = TxnLayer::new(TxnConfig::default());
        let inv = invite("z9hG4bK-c");
        let iid = new_request(&mut l, t0, inv.clone(), udp());
        let cancel = msg(&req_text("CANCEL", Some("z9hG4bK-c"), 1, "CANCEL", None));
        let cid = new_request(&mut l, t0, cancel.clone(), udp());
        assert_eq!(l.cancel_target(&cancel), Some(iid));
        l.respond(t0, cid, 200, resp_bytes(&cancel, 200, Some("x")), None);
        l.respond(t0, iid, 487, resp_bytes(&inv, 487, Some("x")), None);
        assert_eq!(drain(&mut l).len(), 2);
        assert_eq!(l.state(cid), Some(TxnState::Completed));
        assert_eq!(l.state(iid), Some(TxnState::Completed));
        // A retransmitted CANCEL gets its 200 again, not the 487.
        assert!(matches!(
            l.on_message(t0, cancel, udp()),
            Incoming::Absorbed
        ));
        let tx = drain(&mut l);
        assert_eq!(tx.len(), 1);
        assert!(tx[0].data.starts_with(b"SIP/2.0 200"));
    }

    #[test]
    fn unparseable_request_still_gets_a_transaction_the_tu_can_answer() {
        let t0 = Instant::now();
        let mut l = TxnLayer::new(TxnConfig::default());
        let text = req_text("OPTIONS", Some("z9hG4bK-x"), 1, "OPTIONS", None)
            .replace("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-x\r\n", "");
        let m = msg(&text);
        let id = new_request(&mut l, t0, m.clone(), udp());
        let id2 = new_request(&mut l, t0, m, udp());
        assert_ne!(id, id2, "no retransmission can match a request without Via");
        l.respond(
            t0,
            id,
            400,
            Bytes::from_static(b"SIP/2.0 400 Bad Request\r\n\r\n"),
            None,
        );
        assert_eq!(drain(&mut l).len(), 1);
    }

    #[test]
    fn stale_timers_do_not_show_in_poll_timeout() {
        let t0 = Instant::now();
        let cfg = TxnConfig::default();
        let mut l = TxnLayer::new(cfg);
        let inv = invite("z9hG4bK-s");
        let id = new_request(&mut l, t0, inv.clone(), udp());
        assert_eq!(l.poll_timeout(), None);
        l.respond(t0, id, 200, resp_bytes(&inv, 200, Some("x")), None);
        assert_eq!(l.poll_timeout(), Some(t0 + cfg.t1));
        l.ack_received(t0, id);
        // The 2xx retransmit timer is cancelled: the next live deadline is Timer L.
        assert_eq!(l.poll_timeout(), Some(t0 + cfg.timeout()));
        l.terminate(id);
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(events(&mut l), vec![TxnEvent::Terminated { txn: id }]);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn ack_for_2xx_is_sent_once_without_a_transaction() {
        let t0 = Instant::now();
        let mut l = TxnLayer::new(TxnConfig::default());
        let ack = req_text("ACK", Some("z9hG4bK-ack"), 1, "ACK", Some("t"));
        let id = l.request(t0, Method::Ack, "z9hG4bK-ack", Bytes::from(ack), udp());
        assert_eq!(drain(&mut l).len(), 1);
        assert_eq!(l.state(id), None);
        assert_eq!(l.len(), 0);
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn many_transactions_keep_the_heap_bounded() {
        let t0 = Instant::now();
        let cfg = TxnConfig::default();
        let mut l = TxnLayer::new(cfg);
        for i in 0..20_000u32 {
            let m = msg(&req_text(
                "OPTIONS",
                Some(&format!("z9hG4bK-{i}")),
                i,
                "OPTIONS",
                None,
            ));
            let id = new_request(&mut l, t0, m.clone(), udp());
            l.respond(t0, id, 200, resp_bytes(&m, 200, Some("t")), None);
        }
        assert_eq!(l.len(), 20_000);
        drain(&mut l);
        assert_eq!(l.poll_timeout(), Some(t0 + cfg.timeout()));
        l.handle_timeout(t0 + cfg.timeout());
        assert_eq!(l.len(), 0);
        assert_eq!(l.heap.len(), 0);
        assert_eq!(l.server.len(), 0);
    }
}
