//! The registrar (RFC 3261 §10) with digest authentication (RFC 7616 / RFC 8760), sans-IO.
//!
//! Agents' softphones REGISTER their extension (the To user) with callgate. [`Registrar::handle_register`]
//! takes a REGISTER that already passed [`Message::validate_request`] and returns the whole response to
//! send; bindings expire through [`Registrar::poll_timeout`] / [`Registrar::handle_timeout`]; what
//! changed comes out of [`Registrar::poll_event`] for the call core and the ACD.
//!
//! # Authentication
//! - Every REGISTER (queries too) must carry valid digest credentials. The 401 offers two challenges in
//!   one response, `algorithm=SHA-256` first, then `MD5` (RFC 8760 §2.4; the order and set can be
//!   changed with [`Registrar::set_challenge_order`] for clients that only read the first), with the same nonce, an
//!   `opaque` fixed for the life of this registrar and `qop="auth"`. Credentials without qop (RFC 2069
//!   style) are refused: the nonce count is what stops replays.
//! - Nonces are stateless: `hex(issue ms since start) hex(random 64 bits) hex(HMAC-SHA-256(secret,
//!   ms ‖ random ‖ realm)[..16])`, 64 characters, valid for `nonce_ttl`. Only a nonce whose digest was
//!   right gets state: the highest `nc` seen, kept until the nonce expires. An `nc` not above it is a
//!   replay and is answered with a fresh challenge (not counted as a failure: it may be a retransmission).
//! - An expired nonce with a right digest gets `stale=true` (RFC 7616 §3.3: only then); with a wrong
//!   one, a plain challenge.
//! - Checks on credentials: realm is one we serve (else: plain challenge, as if none were sent), username
//!   equals the To user (else 403, decided before any lookup), the digest `uri` names the Request-URI's
//!   host (else 400), opaque returned unchanged, algorithm MD5 or SHA-256 (absent = MD5), qop=auth with
//!   cnonce and nc, and the response computed over the method and the digest `uri` as sent.
//! - No user enumeration: an unknown user is checked against a dummy HA1 (same work), and fails exactly
//!   like a wrong password: the same 401, built by the same code, whose only varying part is the nonce.
//!   The realm of a first challenge never depends on whether the user exists when there is one realm, or
//!   when the To host names the realm (recommended with several tenants). Otherwise (several realms, To
//!   host not a realm) a known user is challenged in its own realm and an unknown one in a realm picked
//!   by a keyed hash of the name: a single probe cannot tell them apart, but statistics over a numbering
//!   plan might.
//!
//! # Guessing defence
//! Failures are counted per source address (IPv4 address; IPv6 /64 prefix, since a host may hold a
//! whole /64): credentials that were malformed, for an unknown user, with a wrong response, a forged or
//! wrong-realm-less nonce, a wrong opaque, a username other than the To user or a digest uri for another
//! host. After [`GUESS_LIMIT`] failures within [`GUESS_WINDOW`], every REGISTER from that source gets
//! `403 Forbidden` with `Retry-After` for [`LOCKOUT`]; then counting starts afresh. One exception, so that
//! one bad phone behind a call centre's NAT does not log out all its neighbours: a REGISTER whose Call-ID
//! is that of a live binding of its To user, registered from the same IP address and port, is still
//! processed (its failures still count). An attacker would need both a live Call-ID and the agent's NAT
//! mapping. At most [`MAX_TRACKED_SOURCES`] sources are tracked; beyond that, sources without a lockout
//! are forgotten first.
//!
//! # Bindings
//! - Each Contact's `expires` parameter beats the Expires header, which beats `default_expires`;
//!   malformed values count as absent; values are capped at `max_expires`. Anything from 1 to
//!   `min_expires - 1` makes the whole request fail with `423 Interval Too Brief` and `Min-Expires`.
//! - A binding is the same as an existing one when the Contact URIs are equal (RFC 3261 §19.1.4) or both
//!   carry the same `+sip.instance` (RFC 5627 §4.2; a rebooted phone replaces its old binding).
//! - RFC 3261 §10.3 step 7: for an existing binding with the same Call-ID, a CSeq not higher than the
//!   stored one aborts the whole request with `400 CSeq Out Of Order`; nothing changes.
//! - `Contact: *` must come alone and with `Expires: 0` (else 400); it removes all of the AOR's bindings
//!   (same Call-ID/CSeq rule).
//! - `max_contacts` (RFC 3261 leaves the policy open): a REGISTER that itself asks for more live contacts
//!   than `max_contacts` (or carries more than [`MAX_CONTACTS_PER_REQUEST`] Contact values at all) gets
//!   `403 Too Many Contacts` and changes nothing; otherwise, when the new
//!   contacts push the AOR over the limit, the least recently refreshed bindings not named in this
//!   request are dropped (reported as `Unregistered { expired: false }`). Dropping the oldest keeps a
//!   phone that rebooted onto a new port from being locked out until its stale bindings expire.
//! - The 200 lists all current bindings as `Contact: <uri>;expires=N[;q=..]` (N = whole seconds left,
//!   rounded up) and a `Date` header (RFC 3261 §10.3 step 8). Every final response carries a To tag
//!   derived from the Call-ID and From tag (a retransmission gets the same tag).
//! - [`Registrar::lookup`] returns the bindings best `q` first (no `q` ranks as 1.0), then most recently
//!   refreshed first. Bindings past their expiry stay listed until `handle_timeout` runs for that instant.
//! - [`Binding::source`] is where the REGISTER came from; [`Binding::behind_nat`] says whether the
//!   Contact differs from it, in which case the core sends requests to the source (RFC 5626-style
//!   symmetric response routing without the Path/flow machinery).
//!
//! # State of one binding
//! ```text
//!                  REGISTER, contact new, expires e > 0
//!   (no binding) ───────────────────────────────────────────▶ Active { expires = now + e }
//!        ▲                                                      │ ▲
//!        │                                                      │ │ REGISTER naming it (same URI or
//!        │                                                      │ │ +sip.instance; other Call-ID, or
//!        │                                                      │ │ same Call-ID and higher CSeq):
//!        │                                                      │ │ expires = now + e, source updated
//!        │                                                      ▼ │
//!        │  REGISTER expires=0 / Contact: * / evicted           Active
//!        ├───────────────── Unregistered { expired: false } ─────┤
//!        │  handle_timeout(now >= expires)                       │
//!        └───────────────── Unregistered { expired: true } ──────┘
//! ```
//! Events are per AOR: `Registered { first }` when a request added at least one new binding (`first`:
//! the AOR had none before); `Unregistered { last }` when bindings went away (`last`: none remain).
//! A request that both removes and adds reports Unregistered, then Registered.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::build::ResponseBuilder;
use super::digest::{self, ct_eq, hex, hmac_sha256, unhex, Algorithm, Challenge, Credentials};
use super::header::{params_iter, NameAddr};
use super::msg::{HeaderName, Message, Method};
use super::uri::{unescape, uri_param, Scheme, Uri};
use super::{Peer, Rng};

/// Failures from one source within [`GUESS_WINDOW`] that trigger a lockout.
pub const GUESS_LIMIT: usize = 10;
/// The window failures are counted in.
pub const GUESS_WINDOW: Duration = Duration::from_secs(60);
/// How long a source gets 403 after [`GUESS_LIMIT`] failures.
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Most sources whose failures are tracked at once.
pub const MAX_TRACKED_SOURCES: usize = 65_536;
/// Most Contact values one REGISTER may carry (removals included); more get 403 before any work.
pub const MAX_CONTACTS_PER_REQUEST: usize = 32;
/// The realm used when no user is configured.
pub const DEFAULT_REALM: &str = "callgate";

/// One agent's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCred {
    pub tenant: String,
    /// The extension: the To user and the digest username.
    pub user: String,
    pub realm: String,
    pub ha1_md5: [u8; 16],
    pub ha1_sha256: [u8; 32],
}

impl UserCred {
    /// Credentials from a plain password (hashed here; the password is not kept).
    pub fn from_password(tenant: &str, user: &str, realm: &str, password: &str) -> UserCred {
        let mut ha1_md5 = [0u8; 16];
        ha1_md5.copy_from_slice(&digest::ha1(Algorithm::Md5, user, realm, password));
        let mut ha1_sha256 = [0u8; 32];
        ha1_sha256.copy_from_slice(&digest::ha1(Algorithm::Sha256, user, realm, password));
        UserCred {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            realm: realm.to_owned(),
            ha1_md5,
            ha1_sha256,
        }
    }

    fn ha1(&self, alg: Algorithm) -> &[u8] {
        match alg {
            Algorithm::Md5 => &self.ha1_md5,
            Algorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

/// Registrar limits.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrarConfig {
    /// How long a nonce stays fresh (300 s).
    pub nonce_ttl: Duration,
    /// Shortest accepted registration in seconds, except 0 (60).
    pub min_expires: u32,
    /// Longer requests are shortened to this (3600).
    pub max_expires: u32,
    /// When neither the Contact nor an Expires header says (3600).
    pub default_expires: u32,
    /// Bindings per AOR (5).
    pub max_contacts: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            nonce_ttl: Duration::from_secs(300),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 5,
        }
    }
}

/// One registered contact of an address of record.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// The Contact URI as registered.
    pub contact: String,
    /// Where the REGISTER came from (NAT): send requests here when [`Binding::behind_nat`].
    pub source: Peer,
    pub expires: Instant,
    pub q: Option<f32>,
    pub call_id: String,
    pub cseq: u32,
    /// The `+sip.instance` Contact parameter, without its quotes.
    pub instance: Option<String>,
    /// (Addition) When the binding was last created or refreshed.
    pub updated: Instant,
}

impl Binding {
    /// True unless the Contact's host is an IP address equal to the source's and its port (5060, or
    /// 5061 for sips, when absent) equals the source port: then requests must go to `source`.
    pub fn behind_nat(&self) -> bool {
        let Ok(u) = Uri::parse(&self.contact) else { return true };
        let Ok(ip) = u.host.parse::<IpAddr>() else { return true };
        let port = u.port.unwrap_or(if u.scheme == Scheme::Sips { 5061 } else { 5060 });
        canonical_ip(ip) != canonical_ip(self.source.addr.ip()) || port != self.source.addr.port()
    }

    fn rank_q(&self) -> f32 {
        self.q.unwrap_or(1.0)
    }
}

/// What changed, for the call core and the ACD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegEvent {
    /// A REGISTER added at least one binding; `first`: the AOR had none before.
    Registered { tenant: String, user: String, first: bool },
    /// Bindings went away; `last`: none remain; `expired`: by time (else by request or eviction).
    Unregistered {
        tenant: String,
        user: String,
        last: bool,
        expired: bool,
    },
}

/// A source address as counted by the guessing defence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SourceKey {
    V4(u32),
    V6Prefix(u64),
}

impl SourceKey {
    fn of(ip: IpAddr) -> SourceKey {
        match canonical_ip(ip) {
            IpAddr::V4(a) => SourceKey::V4(u32::from(a)),
            IpAddr::V6(a) => SourceKey::V6Prefix((u128::from(a) >> 64) as u64),
        }
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[derive(Clone, Debug, Default)]
struct Guesses {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

/// What a nonce turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NonceState {
    Fresh(Instant),
    Stale,
    Invalid,
}

/// The answer `handle_register` decided on.
#[derive(Debug)]
enum Reply {
    Ok(usize),
    Challenge {
        realm: String,
        stale: bool,
    },
    Reject {
        code: u16,
        reason: &'static str,
        warning: Option<String>,
    },
    IntervalTooBrief,
    Locked {
        retry_after: u64,
    },
}

fn reject(code: u16, reason: &'static str) -> Reply {
    Reply::Reject {
        code,
        reason,
        warning: None,
    }
}

/// One Contact of a REGISTER, evaluated.
#[derive(Debug)]
struct Wanted {
    uri: String,
    expires: u32,
    q: Option<f32>,
    instance: Option<String>,
}

/// The registrar. See the module documentation for the rules it follows.
#[derive(Debug)]
pub struct Registrar {
    cfg: RegistrarConfig,
    users: Vec<UserCred>,
    bindings: Vec<Vec<Binding>>,
    /// realm → user → index.
    by_realm: HashMap<String, HashMap<String, usize>>,
    /// tenant → user → index.
    by_tenant: HashMap<String, HashMap<String, usize>>,
    /// user → indexes (across realms).
    by_user: HashMap<String, Vec<usize>>,
    /// Distinct realms in order of first appearance.
    realms: Vec<String>,
    secret: [u8; 32],
    opaque: String,
    dummy_md5: [u8; 16],
    dummy_sha256: [u8; 32],
    rng: Rng,
    epoch: Option<Instant>,
    wall: Option<(Instant, i64)>,
    /// nonce → (issued, highest nc accepted).
    nonces: HashMap<String, (Instant, u32)>,
    nonce_prune_at: usize,
    /// The challenges offered, in order.
    offer: Vec<Algorithm>,
    guesses: HashMap<SourceKey, Guesses>,
    timers: BTreeSet<(Instant, usize)>,
    events: VecDeque<RegEvent>,
}

impl Registrar {
    /// A registrar for `users`. A (realm, user) or (tenant, user) pair given twice keeps the first.
    /// The nonce secret, opaque and nonce salts come from `rng`.
    pub fn new(cfg: RegistrarConfig, users: Vec<UserCred>, rng: &mut Rng) -> Registrar {
        let mut secret = [0u8; 32];
        for c in secret.chunks_mut(8) {
            c.copy_from_slice(&rng.next_u64().to_be_bytes());
        }
        let own = Rng::seeded(rng.next_u64());
        let opaque = hex(&hmac_sha256(&secret, &[b"opaque"])[..12]);
        let mut dummy_md5 = [0u8; 16];
        dummy_md5.copy_from_slice(&hmac_sha256(&secret, &[b"dummy-md5"])[..16]);
        let dummy_sha256 = hmac_sha256(&secret, &[b"dummy-sha256"]);
        let mut r = Registrar {
            cfg,
            users: Vec::new(),
            bindings: Vec::new(),
            by_realm: HashMap::new(),
            by_tenant: HashMap::new(),
            by_user: HashMap::new(),
            realms: Vec::new(),
            secret,
            opaque,
            dummy_md5,
            dummy_sha256,
            rng: own,
            epoch: None,
            wall: None,
            nonces: HashMap::new(),
            nonce_prune_at: 1024,
            offer: vec![Algorithm::Sha256, Algorithm::Md5],
            guesses: HashMap::new(),
            timers: BTreeSet::new(),
            events: VecDeque::new(),
        };
        for u in users {
            let dup_realm = r.by_realm.get(&u.realm).is_some_and(|m| m.contains_key(&u.user));
            let dup_tenant = r.by_tenant.get(&u.tenant).is_some_and(|m| m.contains_key(&u.user));
            if dup_realm || dup_tenant {
                continue;
            }
            let idx = r.users.len();
            if !r.realms.contains(&u.realm) {
                r.realms.push(u.realm.clone());
            }
            r.by_realm
                .entry(u.realm.clone())
                .or_default()
                .insert(u.user.clone(), idx);
            r.by_tenant
                .entry(u.tenant.clone())
                .or_default()
                .insert(u.user.clone(), idx);
            r.by_user.entry(u.user.clone()).or_default().push(idx);
            r.users.push(u);
            r.bindings.push(Vec::new());
        }
        if r.realms.is_empty() {
            r.realms.push(DEFAULT_REALM.to_owned());
        }
        r
    }

    /// (Addition) Anchors the wall clock for the `Date` header: `unix_ms` is the Unix time at `now`.
    /// Without it, the system clock is read once, at the first 200.
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: i64) {
        self.wall = Some((now, unix_ms));
    }

    /// (Addition) The algorithms challenged with, in this order (default: SHA-256, then MD5).
    /// Some clients answer only the first challenge and know only MD5 (SIPp before 3.7.2 stops with
    /// "authentication must use MD5 or AKAv1-MD5"): `[Md5, Sha256]` serves them; `[Sha256]` refuses
    /// MD5 altogether. Duplicates are dropped; an empty list keeps the current order. Credentials are
    /// accepted only for an algorithm offered.
    pub fn set_challenge_order(&mut self, algs: &[Algorithm]) {
        let mut v: Vec<Algorithm> = Vec::new();
        for &a in algs {
            if !v.contains(&a) {
                v.push(a);
            }
        }
        if !v.is_empty() {
            self.offer = v;
        }
    }

    /// (Addition) The configuration in force.
    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    /// A REGISTER (already past validate_request). Returns the complete response to send (401 challenge
    /// with both SHA-256 and MD5 WWW-Authenticate, qop="auth"; stale=true for an expired nonce; 200 with
    /// all current Contacts and ;expires=; 423 Interval Too Brief with Min-Expires; 400 for bad headers;
    /// 403 never reveals whether the user exists: unknown user and wrong password get the SAME 401 as a
    /// first attempt).
    pub fn handle_register(&mut self, now: Instant, req: &Message, source: Peer) -> Bytes {
        self.epoch.get_or_insert(now);
        let reply = self.decide(now, req, source);
        self.respond(now, req, source, reply)
    }

    fn decide(&mut self, now: Instant, req: &Message, source: Peer) -> Reply {
        if req.method() != Some(&Method::Register) {
            return reject(405, "Method Not Allowed");
        }
        let Ok(to) = req.to_hdr() else {
            return reject(400, "Malformed To");
        };
        let Ok(to_uri) = to.parsed_uri() else {
            return reject(400, "Malformed To");
        };
        let Some(raw_user) = to_uri.user.filter(|_| to_uri.scheme.is_sip()) else {
            return reject(400, "To Is Not A SIP AOR");
        };
        let aor_user = unescape(raw_user.split(';').next().unwrap_or(""));
        let Ok(cseq) = req.cseq() else {
            return reject(400, "Bad CSeq");
        };
        let call_id = req.call_id().unwrap_or("");
        let key = SourceKey::of(source.addr.ip());
        if let Some(until) = self.locked_until(now, key) {
            if !self.exempt(&aor_user, call_id, source) {
                let left = until.saturating_duration_since(now);
                return Reply::Locked {
                    retry_after: left.as_secs() + u64::from(left.subsec_nanos() > 0),
                };
            }
        }
        let idx = match self.authenticate(now, req, &aor_user, to_uri.host, key) {
            Ok(idx) => idx,
            Err(r) => return r,
        };
        self.update_bindings(now, req, source, idx, call_id, cseq.seq)
    }

    fn locked_until(&mut self, now: Instant, key: SourceKey) -> Option<Instant> {
        let g = self.guesses.get_mut(&key)?;
        match g.locked_until {
            Some(t) if t > now => Some(t),
            Some(_) => {
                g.locked_until = None;
                g.failures.clear();
                None
            }
            None => None,
        }
    }

    /// A refresh of a live binding of `aor_user` from the very address it was registered from.
    fn exempt(&self, aor_user: &str, call_id: &str, source: Peer) -> bool {
        self.by_user.get(aor_user).is_some_and(|idxs| {
            idxs.iter().any(|&i| {
                self.bindings[i]
                    .iter()
                    .any(|b| b.call_id == call_id && b.source.addr == source.addr)
            })
        })
    }

    fn record_failure(&mut self, now: Instant, key: SourceKey) {
        if self.guesses.len() >= MAX_TRACKED_SOURCES && !self.guesses.contains_key(&key) {
            self.prune_guesses(now);
            if self.guesses.len() >= MAX_TRACKED_SOURCES {
                self.guesses.retain(|_, g| g.locked_until.is_some_and(|t| t > now));
            }
            if self.guesses.len() >= MAX_TRACKED_SOURCES {
                return;
            }
        }
        let g = self.guesses.entry(key).or_default();
        while g
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= GUESS_WINDOW)
        {
            g.failures.pop_front();
        }
        g.failures.push_back(now);
        if g.failures.len() >= GUESS_LIMIT {
            g.failures.clear();
            g.locked_until = Some(now + LOCKOUT);
        }
    }

    fn prune_guesses(&mut self, now: Instant) {
        self.guesses.retain(|_, g| {
            g.locked_until.is_some_and(|t| t > now)
                || g.failures
                    .back()
                    .is_some_and(|&t| now.saturating_duration_since(t) < GUESS_WINDOW)
        });
    }

    /// The realm of a first challenge (see the module documentation).
    fn challenge_realm(&self, aor_user: &str, to_host: &str) -> String {
        if self.realms.len() == 1 {
            return self.realms[0].clone();
        }
        if let Some(r) = self.realms.iter().find(|r| r.eq_ignore_ascii_case(to_host)) {
            return r.clone();
        }
        if let Some(&i) = self.by_user.get(aor_user).and_then(|v| v.first()) {
            return self.users[i].realm.clone();
        }
        let h = hmac_sha256(&self.secret, &[b"realm", aor_user.as_bytes()]);
        let n = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        self.realms[(n % self.realms.len() as u64) as usize].clone()
    }

    fn make_nonce(&mut self, now: Instant, realm: &str) -> String {
        let epoch = *self.epoch.get_or_insert(now);
        let ms = now.saturating_duration_since(epoch).as_millis() as u64;
        let salt = self.rng.next_u64();
        let mac = hmac_sha256(
            &self.secret,
            &[&ms.to_be_bytes(), &salt.to_be_bytes(), realm.as_bytes()],
        );
        let mut s = String::with_capacity(64);
        s.push_str(&format!("{ms:016x}{salt:016x}"));
        s.push_str(&hex(&mac[..16]));
        s
    }

    fn check_nonce(&self, now: Instant, nonce: &str, realm: &str) -> NonceState {
        let Some(epoch) = self.epoch else {
            return NonceState::Invalid;
        };
        if nonce.len() != 64 {
            return NonceState::Invalid;
        }
        let Some(raw) = unhex(nonce) else {
            return NonceState::Invalid;
        };
        let mac = hmac_sha256(&self.secret, &[&raw[..16], realm.as_bytes()]);
        if !ct_eq(&mac[..16], &raw[16..32]) {
            return NonceState::Invalid;
        }
        let mut ms = [0u8; 8];
        ms.copy_from_slice(&raw[..8]);
        let Some(issued) = epoch.checked_add(Duration::from_millis(u64::from_be_bytes(ms))) else {
            return NonceState::Invalid;
        };
        if issued > now {
            return NonceState::Invalid;
        }
        if now.duration_since(issued) > self.cfg.nonce_ttl {
            return NonceState::Stale;
        }
        NonceState::Fresh(issued)
    }

    /// Checks the credentials; the user's index, or the answer to send.
    fn authenticate(
        &mut self,
        now: Instant,
        req: &Message,
        aor_user: &str,
        to_host: &str,
        key: SourceKey,
    ) -> Result<usize, Reply> {
        let mut creds = None;
        let mut bad = None;
        for v in req.header_all(HeaderName::Authorization) {
            match Credentials::parse(v) {
                Ok(c) if self.realms.contains(&c.realm) => {
                    creds = Some(c);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    bad.get_or_insert(e);
                }
            }
        }
        let Some(c) = creds else {
            if let Some(e) = bad {
                self.record_failure(now, key);
                return Err(Reply::Reject {
                    code: 400,
                    reason: "Malformed Authorization",
                    warning: Some(e.to_string()),
                });
            }
            return Err(Reply::Challenge {
                realm: self.challenge_realm(aor_user, to_host),
                stale: false,
            });
        };
        let fail = |this: &mut Registrar, c: &Credentials| {
            this.record_failure(now, key);
            Err(Reply::Challenge {
                realm: c.realm.clone(),
                stale: false,
            })
        };
        if c.username != aor_user {
            self.record_failure(now, key);
            return Err(reject(403, "Username Does Not Match To"));
        }
        let ruri_host = req.request_uri().and_then(|u| Uri::parse(u).ok()).map(|u| u.host);
        let uri_ok = match (Uri::parse(&c.uri), ruri_host) {
            (Ok(d), Some(h)) => d.scheme.is_sip() && d.host.eq_ignore_ascii_case(h),
            _ => false,
        };
        if !uri_ok {
            self.record_failure(now, key);
            return Err(reject(400, "Digest URI Mismatch"));
        }
        let alg = c.algorithm_or_default();
        if !self.offer.contains(&alg) {
            return fail(self, &c);
        }
        let idx = self.by_realm.get(&c.realm).and_then(|m| m.get(&c.username)).copied();
        let ha1: &[u8] = match (idx, alg) {
            (Some(i), a) => self.users[i].ha1(a),
            (None, Algorithm::Md5) => &self.dummy_md5,
            (None, Algorithm::Sha256) => &self.dummy_sha256,
        };
        let method = req.method().map(Method::as_str).unwrap_or("REGISTER");
        let right = c
            .expected_response(ha1, method)
            .is_some_and(|e| ct_eq(e.as_bytes(), c.response.as_bytes()));
        let right = right && idx.is_some();
        if c.opaque.as_deref() != Some(self.opaque.as_str()) || c.qop.is_none() {
            return fail(self, &c);
        }
        match self.check_nonce(now, &c.nonce, &c.realm) {
            NonceState::Invalid => fail(self, &c),
            NonceState::Stale if right => Err(Reply::Challenge {
                realm: c.realm.clone(),
                stale: true,
            }),
            NonceState::Stale => fail(self, &c),
            NonceState::Fresh(_) if !right => fail(self, &c),
            NonceState::Fresh(issued) => {
                let nc = c.nc.as_ref().map_or(0, |(_, n)| *n);
                match self.nonces.get_mut(&c.nonce) {
                    Some((_, seen)) if *seen >= nc => {
                        return Err(Reply::Challenge {
                            realm: c.realm.clone(),
                            stale: false,
                        })
                    }
                    Some((_, seen)) => *seen = nc,
                    None => {
                        if self.nonces.len() >= self.nonce_prune_at {
                            self.prune_nonces(now);
                        }
                        self.nonces.insert(c.nonce.clone(), (issued, nc));
                    }
                }
                Ok(idx.unwrap_or(0))
            }
        }
    }

    fn prune_nonces(&mut self, now: Instant) {
        let ttl = self.cfg.nonce_ttl;
        self.nonces
            .retain(|_, (issued, _)| now.saturating_duration_since(*issued) <= ttl);
        self.nonce_prune_at = (self.nonces.len() * 2).max(1024);
    }

    /// RFC 3261 §10.3 steps 6-7 for user `idx`, after authentication.
    fn update_bindings(
        &mut self,
        now: Instant,
        req: &Message,
        source: Peer,
        idx: usize,
        call_id: &str,
        cseq: u32,
    ) -> Reply {
        let expires_hdr = match req.header(HeaderName::Expires) {
            Some(v) => parse_delta(v),
            None => None,
        };
        if req.header_values(HeaderName::Contact).count() > MAX_CONTACTS_PER_REQUEST {
            return reject(403, "Too Many Contacts");
        }
        let mut contacts = Vec::new();
        for c in req.contacts() {
            match c {
                Ok(c) => contacts.push(c),
                Err(_) => return reject(400, "Malformed Contact"),
            }
        }
        if contacts.iter().any(NameAddr::is_star) {
            if contacts.len() != 1 || expires_hdr != Some(0) {
                return reject(400, "Invalid Wildcard Contact");
            }
            if self.bindings[idx]
                .iter()
                .any(|b| b.call_id == call_id && cseq <= b.cseq)
            {
                return reject(400, "CSeq Out Of Order");
            }
            let removed = self.bindings[idx].len();
            self.set_bindings(idx, Vec::new());
            if removed > 0 {
                self.push_unregistered(idx, true, false);
            }
            return Reply::Ok(idx);
        }
        let mut wanted: Vec<Wanted> = Vec::with_capacity(contacts.len());
        for c in &contacts {
            let own = match c.param("expires") {
                Some(Some(v)) => parse_delta(v),
                _ => None,
            };
            let e = own
                .or(expires_hdr)
                .unwrap_or(self.cfg.default_expires)
                .min(self.cfg.max_expires);
            if e != 0 && e < self.cfg.min_expires {
                return Reply::IntervalTooBrief;
            }
            let q = match c.param("q") {
                None => None,
                Some(Some(v)) => match parse_qvalue(v) {
                    Some(q) => Some(q),
                    None => return reject(400, "Bad q Value"),
                },
                Some(None) => return reject(400, "Bad q Value"),
            };
            let instance = c.param("+sip.instance").flatten().map(str::to_owned);
            let w = Wanted {
                uri: c.uri.to_owned(),
                expires: e,
                q,
                instance,
            };
            // The same contact twice in one request: the last one counts.
            wanted.retain(|o| !same_contact(&o.uri, o.instance.as_deref(), &w.uri, w.instance.as_deref()));
            wanted.push(w);
        }
        if wanted.iter().filter(|w| w.expires > 0).count() > self.cfg.max_contacts {
            return reject(403, "Too Many Contacts");
        }
        let old = &self.bindings[idx];
        for w in &wanted {
            if let Some(b) = old
                .iter()
                .find(|b| same_contact(&b.contact, b.instance.as_deref(), &w.uri, w.instance.as_deref()))
            {
                if b.call_id == call_id && cseq <= b.cseq {
                    return reject(400, "CSeq Out Of Order");
                }
            }
        }
        // Apply.
        let before = old.len();
        let mut next: Vec<Binding> = old.clone();
        let mut added = 0usize;
        let mut removed = 0usize;
        let mut touched: Vec<String> = Vec::new();
        for w in wanted {
            let pos = next
                .iter()
                .position(|b| same_contact(&b.contact, b.instance.as_deref(), &w.uri, w.instance.as_deref()));
            if w.expires == 0 {
                if let Some(p) = pos {
                    next.remove(p);
                    removed += 1;
                }
                continue;
            }
            let b = Binding {
                contact: w.uri,
                source,
                expires: now + Duration::from_secs(u64::from(w.expires)),
                q: w.q,
                call_id: call_id.to_owned(),
                cseq,
                instance: w.instance,
                updated: now,
            };
            touched.push(b.contact.clone());
            match pos {
                Some(p) => next[p] = b,
                None => {
                    next.push(b);
                    added += 1;
                }
            }
        }
        // Over the limit: drop the least recently refreshed bindings this request did not name.
        while next.len() > self.cfg.max_contacts {
            let victim = next
                .iter()
                .enumerate()
                .filter(|(_, b)| !touched.contains(&b.contact))
                .min_by_key(|(_, b)| b.updated)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    next.remove(i);
                    removed += 1;
                }
                None => break,
            }
        }
        let remaining = next.len();
        self.set_bindings(idx, next);
        if removed > 0 {
            self.push_unregistered(idx, remaining == 0, false);
        }
        if added > 0 {
            let u = &self.users[idx];
            self.events.push_back(RegEvent::Registered {
                tenant: u.tenant.clone(),
                user: u.user.clone(),
                first: before == 0,
            });
        }
        Reply::Ok(idx)
    }

    fn push_unregistered(&mut self, idx: usize, last: bool, expired: bool) {
        let u = &self.users[idx];
        self.events.push_back(RegEvent::Unregistered {
            tenant: u.tenant.clone(),
            user: u.user.clone(),
            last,
            expired,
        });
    }

    /// Replaces user `idx`'s bindings (sorted for `lookup`) and keeps the expiry index exact.
    fn set_bindings(&mut self, idx: usize, mut next: Vec<Binding>) {
        for b in &self.bindings[idx] {
            self.timers.remove(&(b.expires, idx));
        }
        next.sort_by(|a, b| b.rank_q().total_cmp(&a.rank_q()).then(b.updated.cmp(&a.updated)));
        for b in &next {
            self.timers.insert((b.expires, idx));
        }
        self.bindings[idx] = next;
    }

    fn respond(&mut self, now: Instant, req: &Message, source: Peer, reply: Reply) -> Bytes {
        let tag = self.to_tag(req);
        let rb = |code: u16, reason: &str| {
            ResponseBuilder::new(req, code, reason)
                .received(source.addr)
                .to_tag(&tag)
        };
        match reply {
            Reply::Ok(idx) => {
                let date = self.http_date(now);
                let mut r = rb(200, "OK");
                for b in &self.bindings[idx] {
                    let left = b.expires.saturating_duration_since(now);
                    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    let mut v = format!("<{}>;expires={secs}", b.contact);
                    if let Some(q) = b.q {
                        v.push_str(&format!(";q={}", format_q(q)));
                    }
                    if let Some(i) = &b.instance {
                        v.push_str(&format!(";+sip.instance=\"{i}\""));
                    }
                    r = r.header("Contact", &v);
                }
                r.header("Date", &date).build()
            }
            Reply::Challenge { realm, stale } => {
                let nonce = self.make_nonce(now, &realm);
                let mut r = rb(401, "Unauthorized");
                for &algorithm in &self.offer {
                    let ch = Challenge {
                        realm: realm.clone(),
                        nonce: nonce.clone(),
                        opaque: Some(self.opaque.clone()),
                        algorithm,
                        stale,
                    };
                    r = r.header("WWW-Authenticate", &ch.to_header_value());
                }
                r.build()
            }
            Reply::Reject { code, reason, warning } => {
                let mut r = rb(code, reason);
                if code == 405 {
                    r = r.header("Allow", "REGISTER");
                }
                if let Some(w) = warning {
                    r = r.header("Warning", &format!("399 callgate \"{}\"", w.replace(['"', '\\'], "'")));
                }
                r.build()
            }
            Reply::IntervalTooBrief => rb(423, "Interval Too Brief")
                .header("Min-Expires", &self.cfg.min_expires.to_string())
                .build(),
            Reply::Locked { retry_after } => rb(403, "Forbidden")
                .header("Retry-After", &retry_after.max(1).to_string())
                .build(),
        }
    }

    /// A To tag that depends only on the Call-ID and From tag.
    fn to_tag(&self, req: &Message) -> String {
        let call_id = req.call_id().unwrap_or("");
        let from_tag = req.from_hdr().ok().and_then(|f| f.tag()).unwrap_or("");
        hex(&hmac_sha256(
            &self.secret,
            &[b"to-tag", call_id.as_bytes(), b"\0", from_tag.as_bytes()],
        )[..5])
    }

    fn http_date(&mut self, now: Instant) -> String {
        let (at, ms) = *self.wall.get_or_insert_with(|| {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            (now, ms)
        });
        let delta = if now >= at {
            now.duration_since(at).as_millis() as i64
        } else {
            -(at.duration_since(now).as_millis() as i64)
        };
        http_date((ms + delta).div_euclid(1000))
    }

    /// Live bindings of `user` in `tenant`, best q first, then most recently refreshed.
    pub fn lookup(&self, tenant: &str, user: &str) -> &[Binding] {
        match self.by_tenant.get(tenant).and_then(|m| m.get(user)) {
            Some(&i) => &self.bindings[i],
            None => &[],
        }
    }

    /// (Addition) Number of AORs with at least one binding.
    pub fn registered_count(&self) -> usize {
        self.bindings.iter().filter(|b| !b.is_empty()).count()
    }

    pub fn poll_event(&mut self) -> Option<RegEvent> {
        self.events.pop_front()
    }

    /// The earliest binding expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// Removes the bindings whose expiry is at or before `now` (one `Unregistered { expired: true }`
    /// per AOR), and forgets expired nonce counts and idle guessing counters.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due: Vec<usize> = Vec::new();
        while let Some(&(t, idx)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if !due.contains(&idx) {
                due.push(idx);
            }
        }
        for idx in due {
            let before = self.bindings[idx].len();
            let next: Vec<Binding> = self.bindings[idx].iter().filter(|b| b.expires > now).cloned().collect();
            let left = next.len();
            // set_bindings removes timers by the old expiries; the popped ones are already gone.
            self.set_bindings(idx, next);
            if left < before {
                self.push_unregistered(idx, left == 0, true);
            }
        }
        if self.nonces.len() > 1024 {
            self.prune_nonces(now);
        }
        if self.guesses.len() > 1024 {
            self.prune_guesses(now);
        }
    }
}

/// Two contacts are the same binding: equal URIs (RFC 3261 §19.1.4) or the same `+sip.instance`.
fn same_contact(a: &str, ai: Option<&str>, b: &str, bi: Option<&str>) -> bool {
    if let (Some(x), Some(y)) = (ai, bi) {
        if x == y {
            return true;
        }
    }
    uri_eq(a, b)
}

/// SIP URI comparison (RFC 3261 §19.1.4): scheme, user and password exact (after unescaping); host
/// case-insensitive; port equal (absent ≠ 5060); `user`, `ttl`, `method`, `maddr`, `transport` must
/// agree when either has them; other parameters only when both do; headers exact. Other schemes: the
/// whole text, case-insensitively.
pub fn uri_eq(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (Ok(x), Ok(y)) = (Uri::parse(a), Uri::parse(b)) else {
        return false;
    };
    if !x.scheme.is_sip() || !y.scheme.is_sip() {
        return a.eq_ignore_ascii_case(b);
    }
    if x.scheme != y.scheme
        || x.user.map(unescape) != y.user.map(unescape)
        || x.password.map(unescape) != y.password.map(unescape)
        || !x.host.eq_ignore_ascii_case(y.host)
        || x.port != y.port
        || x.headers != y.headers
    {
        return false;
    }
    let eq_val = |p: Option<&str>, q: Option<&str>| match (p, q) {
        (Some(p), Some(q)) => unescape(p).eq_ignore_ascii_case(&unescape(q)),
        (None, None) => true,
        _ => false,
    };
    for n in ["user", "ttl", "method", "maddr", "transport"] {
        match (uri_param(x.params, n), uri_param(y.params, n)) {
            (None, None) => {}
            (Some(p), Some(q)) if eq_val(p, q) => {}
            _ => return false,
        }
    }
    for (n, v) in params_iter(x.params) {
        if let Some(w) = uri_param(y.params, n) {
            if !eq_val(v, w) {
                return false;
            }
        }
    }
    true
}

/// `delta-seconds`: digits only; more than 2^32-1 saturates. `None` when malformed.
fn parse_delta(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits = v.trim_start_matches('0');
    if digits.len() > 10 {
        return Some(u32::MAX);
    }
    Some(digits.parse::<u64>().unwrap_or(0).min(u64::from(u32::MAX)) as u32)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn parse_qvalue(v: &str) -> Option<f32> {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    match int {
        "0" => {
            let mut thousandths = 0u32;
            for (k, c) in frac.bytes().enumerate() {
                thousandths += u32::from(c - b'0') * [100, 10, 1][k];
            }
            Some(thousandths as f32 / 1000.0)
        }
        "1" if frac.bytes().all(|c| c == b'0') => Some(1.0),
        _ => None,
    }
}

/// A q value as written back: up to three decimals, no trailing zeros.
fn format_q(q: f32) -> String {
    let t = (q * 1000.0).round() as u32;
    if t >= 1000 {
        return "1".to_owned();
    }
    let s = format!("0.{t:03}");
    let s = s.trim_end_matches('0');
    if s == "0." {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// RFC 1123 date (`Sun, 06 Nov 1994 08:49:37 GMT`) for Unix seconds.
pub fn http_date(unix_secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian; eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_289_690_940), "Sat, 13 Nov 2010 23:29:00 GMT");
        assert_eq!(http_date(-1), "Wed, 31 Dec 1969 23:59:59 GMT");
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue("0"), Some(0.0));
        assert_eq!(parse_qvalue("0.5"), Some(0.5));
        assert_eq!(parse_qvalue("0.125"), Some(0.125));
        assert_eq!(parse_qvalue("1"), Some(1.0));
        assert_eq!(parse_qvalue("1.000"), Some(1.0));
        for bad in ["", "1.1", "0.1234", "2", "0.x", ".5", "-0"] {
            assert_eq!(parse_qvalue(bad), None, "{bad}");
        }
        assert_eq!(format_q(0.5), "0.5");
        assert_eq!(format_q(0.125), "0.125");
        assert_eq!(format_q(1.0), "1");
        assert_eq!(format_q(0.0), "0");
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse_delta("3600"), Some(3600));
        assert_eq!(parse_delta(" 0 "), Some(0));
        assert_eq!(parse_delta("000060"), Some(60));
        assert_eq!(parse_delta("99999999999999999999"), Some(u32::MAX));
        assert_eq!(parse_delta("4294967296"), Some(u32::MAX));
        assert_eq!(parse_delta("-1"), None);
        assert_eq!(parse_delta("Thu, 01 Dec 1994 16:00:00 GMT"), None);
        assert_eq!(parse_delta(""), None);
    }

    #[test]
    fn uri_equality_rfc3261_19_1_4() {
        assert!(uri_eq("sip:1001@10.0.0.5:5062", "sip:1001@10.0.0.5:5062"));
        assert!(uri_eq("sip:1001@Host.Example:5062", "SIP:1001@host.example:5062"));
        assert!(uri_eq("sip:%61lice@h", "sip:alice@h"));
        assert!(!uri_eq("sip:Alice@h", "sip:alice@h"));
        assert!(!uri_eq("sip:a@h", "sip:a@h:5060"));
        assert!(!uri_eq("sip:a@h", "sips:a@h"));
        assert!(!uri_eq("sip:a@h;transport=tcp", "sip:a@h"));
        assert!(uri_eq("sip:a@h;transport=TCP", "sip:a@h;transport=tcp"));
        assert!(uri_eq("sip:a@h;ob", "sip:a@h"));
        assert!(uri_eq("sip:a@h;x=1;y=2", "sip:a@h;y=2;x=1"));
        assert!(!uri_eq("sip:a@h;x=1", "sip:a@h;x=2"));
        assert!(!uri_eq("sip:a@h", "sip:b@h"));
    }

    #[test]
    fn nonces_verify_expire_and_resist_forgery() {
        let mut rng = Rng::seeded(1);
        let mut r = Registrar::new(RegistrarConfig::default(), Vec::new(), &mut rng);
        let t0 = Instant::now();
        r.epoch = Some(t0);
        let n = r.make_nonce(t0 + Duration::from_secs(1), "callgate");
        assert_eq!(n.len(), 64);
        let n2 = r.make_nonce(t0 + Duration::from_secs(1), "callgate");
        assert_ne!(n, n2, "two nonces issued at the same instant differ");
        let at = t0 + Duration::from_secs(100);
        assert_eq!(
            r.check_nonce(at, &n, "callgate"),
            NonceState::Fresh(t0 + Duration::from_secs(1))
        );
        assert_eq!(
            r.check_nonce(at, &n, "other"),
            NonceState::Invalid,
            "bound to the realm"
        );
        assert_eq!(
            r.check_nonce(t0 + Duration::from_millis(301_001), &n, "callgate"),
            NonceState::Stale
        );
        // Any change of the issue time breaks the MAC.
        let mut forged = n.clone().into_bytes();
        forged[15] = if forged[15] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(r.check_nonce(at, &forged, "callgate"), NonceState::Invalid);
        assert_eq!(r.check_nonce(at, "short", "callgate"), NonceState::Invalid);
        assert_eq!(r.check_nonce(at, &"z".repeat(64), "callgate"), NonceState::Invalid);
        // Issued "in the future": invalid.
        let later = r.make_nonce(t0 + Duration::from_secs(200), "callgate");
        assert_eq!(r.check_nonce(at, &later, "callgate"), NonceState::Invalid);
    }

    #[test]
    fn source_keys_group_ipv6_by_64_and_map_v4_in_v6() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourceKey::of(a), SourceKey::of(b));
        assert_ne!(SourceKey::of(a), SourceKey::of(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(SourceKey::of(v4), SourceKey::of(mapped));
    }

    #[test]
    fn behind_nat_compares_contact_with_source() {
        let b = |contact: &str, src: &str| Binding {
            contact: contact.to_owned(),
            source: Peer::udp(src.parse::<SocketAddr>().unwrap()),
            expires: Instant::now(),
            q: None,
            call_id: String::new(),
            cseq: 1,
            instance: None,
            updated: Instant::now(),
        };
        assert!(!b("sip:1001@203.0.113.5:5062", "203.0.113.5:5062").behind_nat());
        assert!(!b("sip:1001@203.0.113.5", "203.0.113.5:5060").behind_nat());
        assert!(b("sip:1001@192.168.1.20:5060", "203.0.113.5:40312").behind_nat());
        assert!(b("sip:1001@203.0.113.5:5060", "203.0.113.5:40312").behind_nat());
        assert!(b("sip:1001@phone.invalid", "203.0.113.5:5060").behind_nat());
    }
}
