//! The sans-IO RTP relay between a caller leg (A) and an agent leg (B), and the watch over every leg of
//! a call (A, B, and the consulted party C and supervisor D, whose audio only the mixer uses).
//!
//! callgate is a B2BUA that anchors media: each leg's RTP arrives on a socket the shell owns for that
//! leg, and the [`Bridge`] decides what becomes of every datagram. It rewrites the packet **in place in
//! the caller's receive buffer** (header, payload type, G.711 law) and says where to send it; it never
//! allocates per packet, reads no clock and touches no socket.
//!
//! ```text
//!   shell (media thread)                               Bridge
//!   recv on leg X's socket ── on_packet(now, X, src, &mut buf, n) ──▶ Verdict::Forward { to_leg, dst, len }
//!                                                                   │  send buf[..len] on to_leg's socket to dst
//!                                                                   └ Verdict::Drop(Dropped { leg, reason })
//!   after every input:   while let Some(ev) = bridge.poll_event() { ... }   (latches, inactivity)
//!   one timer:           bridge.poll_timeout() → handle_timeout(now)        (inactivity only)
//! ```
//!
//! # One continuous stream per side
//!
//! Each leg hears one RTP stream from callgate for the whole call: the guidance and the queue music from
//! the [`Pacer`](super::pacer::Pacer), then the other leg's voice through the bridge, then music again
//! while on hold, and so on. The outgoing SSRC toward a leg is fixed (the one it has been hearing: see
//! [`LegConfig::heard`]); sequence numbers continue +1 and timestamps advance by the elapsed wall time
//! (8 kHz) across every hand-over, and the first packet after one carries the marker bit. The hand-overs
//! are explicit, in both directions, and use one value, [`Continuation`] ("the next packet on this
//! stream has this SSRC and sequence number, and a packet sent at `at` has timestamp `ts`"):
//!
//! - pacer → relay: the shell removes the pacer stream, reads [`Pacer::position`](super::pacer::Pacer::position)
//!   and passes `Continuation { ssrc, seq: pos.seq, ts: pos.ts, at: now }` to [`Bridge::resume_relay`]
//!   (or in [`LegConfig::heard`] when the bridge is created);
//! - relay → pacer: [`Bridge::suspend_relay`] returns the continuation; the shell adds a pacer stream
//!   with `ssrc`, `seq`, `ts` from it at `now` (the pacer marks its first packet).
//!
//! Within the relay, the rewrite is an offset: `out_seq = in_seq + seq_off` and `out_ts = in_ts + ts_off`
//! (mod 2^16 and 2^32), so loss stays a gap, reordering stays reordering and duplicates stay duplicates:
//! the receiver's jitter buffer copes as it would end to end. The offsets are set ("re-based") on the
//! first packet relayed after a hand-over, when the incoming SSRC changes (a phone restarting its stream),
//! and when the incoming sequence jumps by more than [`MAX_DROPOUT`] ahead or [`MAX_MISORDER`] behind
//! (RFC 3550 A.1's limits: a restart without a new SSRC). A re-base continues from the newest packet sent
//! (seq + 1; ts + the elapsed time, at least one frame) and sets the marker bit. A late packet from before
//! a re-base is dropped ([`DropReason::BeforeRebase`]) since its rewritten number would collide with one
//! already sent, and so is a packet of the SSRC the leg's stream replaced while the replacing stream is
//! still alive (it sent within [`OLD_SSRC_HOLDOFF`]; [`DropReason::OldSsrc`]), rather than re-basing back and
//! forth between two streams; after that the old SSRC is welcome again (a PBX that returns to its own
//! stream, e.g. for its hold music). Packets dropped by payload policy (telephone-event the other leg
//! lacks, comfort noise) are squeezed out of the sequence when they arrive in order, so the receiver does
//! not count them lost.
//!
//! The outgoing packet is normalised to a 12-byte header and the payload: CSRCs, header extensions and
//! padding from the far leg are removed (their meaning was negotiated with the far leg, not this one).
//!
//! # What the shell and the call core do
//!
//! 1. Agent answers: remove the pacer stream toward the caller (keep its [`Continuation`]), build the
//!    bridge with [`Bridge::new`] (`heard` = that continuation for A; `None` for B unless B heard a prompt).
//! 2. Every datagram on either leg's RTP socket: RTCP ([`is_rtcp`]) to the RTCP handling; everything else
//!    to [`Bridge::on_packet`], then send on `Forward`, count on `Drop`, and drain [`Bridge::poll_event`]:
//!    on `Latched`/`Relatched` also move any pacer stream toward that leg (`Pacer::set_destination`);
//!    on `Inactive` end the call with that reason in its record.
//! 3. Hold of leg X (music to X): [`Bridge::suspend_relay`]`(X, now)` and add a looped pacer stream from
//!    the continuation to [`Bridge::send_addr`]`(X)`; resume: remove it, [`Bridge::resume_relay`]. After
//!    each re-INVITE: [`Bridge::set_direction`] and, if the SDP changed, [`Bridge::update_media`].
//! 4. Keep one timer at [`Bridge::poll_timeout`] (re-read after every input) and call
//!    [`Bridge::handle_timeout`] when it fires.
//!
//! # Payload types
//!
//! | incoming PT on leg X          | toward leg Y                                                          |
//! |-------------------------------|-----------------------------------------------------------------------|
//! | X's audio PT                  | Y's audio PT; A-law ↔ μ-law transcoded in place (same length) if the laws differ |
//! | X's telephone-event PT        | Y's telephone-event PT, payload untouched; dropped ([`DropReason::NoTelephoneEvent`]) if Y has none: the buffer is left as received so the shell can decode the digit and send SIP INFO |
//! | 13 (comfort noise, RFC 3389)  | passed as 13 or dropped, by [`BridgeConfig::comfort_noise`]           |
//! | anything else                 | dropped ([`DropReason::UnexpectedPayloadType`])                        |
//!
//! All three kinds are *valid* RTP from the leg: they latch and keep the leg alive.
//!
//! # RTCP is terminated, not relayed
//!
//! The bridge rewrites SSRCs, sequence numbers and timestamps, and each side's stream mixes pacer
//! segments the other side never saw. A relayed sender or receiver report would therefore name SSRCs the
//! receiver does not know, an extended highest sequence number and loss counts of a different numbering,
//! and an NTP↔RTP timestamp mapping that is wrong; fixing each report block up is more work than it is
//! worth for G.711 telephony. So RTCP ends at callgate on each leg (the shell consumes it, and may send its
//! own reports). [`is_rtcp`] tells an RTCP datagram from RTP on a multiplexed port (RFC 5761); one reaching
//! [`Bridge::on_packet`] is dropped with [`DropReason::Rtcp`].
//!
//! # Latching (symmetric RTP behind NAT)
//!
//! Per leg, the source address we send to:
//!
//! ```text
//!                  valid RTP from S (BridgeEvent::Latched)
//!   ┌────────────┐ ────────────────────────────────────────▶ ┌──────────────────┐
//!   │ Unlatched  │                                           │ Latched(S)       │ ◀─ valid RTP from S
//!   │ send to the│ ◀──────────────────────────────────────── │ send to S        │    (updates S's SSRC
//!   │ SDP address│   update_media() with a new SDP address   └──────────────────┘     and last arrival)
//!   └────────────┘                                             │            ▲   ▲
//!                                      valid RTP from T ≠ S    │            │   │ valid RTP from S:
//!                                      (dropped)               ▼            │   │ the probe is forgotten
//!                                                   ┌───────────────────────┴┐  │
//!                                                   │ Probing(S; T, n)       │──┘
//!                                                   │ send to S; T's packets │
//!                                                   │ dropped and counted    │
//!                                                   └────────────────────────┘
//!                  the n-th consecutive valid packet from T (same SSRC, n ≥ relatch_packets) with
//!                  T's SSRC ≠ S's SSRC, or S silent for ≥ relatch_silence ──▶ Latched(T)
//!                  (BridgeEvent::Relatched)
//! ```
//!
//! "Consecutive" means no valid packet from S in between, and a change of T's address or SSRC starts the
//! count again. So one stray (or a few stray packets while the real source keeps talking) never moves the
//! media; a phone that really moved (new NAT binding, restarted stream) gets there after
//! `relatch_packets` packets (60 ms at the default). The very first valid packet latches at once: that is
//! what symmetric RTP means, and a stray that won that race is replaced by the real source the same way.
//!
//! # Directions and inactivity
//!
//! [`Bridge::set_direction`] takes callgate's direction toward the leg, as [`sdp::Negotiated`] holds it
//! (the leg's own, mirrored). Nothing is relayed toward a leg we may not send to, nor from a leg we do not
//! receive from ([`DropReason::Direction`]). The inactivity timer of a leg runs only while the direction is
//! `sendrecv`: on hold either way (sendonly, recvonly, inactive) a phone may rightly be silent. It fires
//! once ([`BridgeEvent::Inactive`]) when no valid RTP has come from the leg's latched source for
//! [`BridgeConfig::inactivity`]; valid RTP re-arms it. Returning to `sendrecv` restarts the count.
//!
//! # Legs C and D
//!
//! A call has four leg states here. A and B are the relay pair. C (the consulted party) and D (the
//! supervisor) get exactly the same latching, direction and inactivity handling, but are never relayed:
//! their valid RTP is dropped with [`DropReason::NotRelayed`] *after* latching and liveness (the shell
//! hands the audio to the mixer), and [`Bridge::resume_relay`] toward them does nothing. Their outgoing
//! stream identity (SSRC, sequence, timestamp) is kept by the shell's mixer, not here.
//!
//! [`Bridge::rebind`] renames a leg (a completed consultation: C takes B's place): C's latch, media,
//! direction, inactivity count and outgoing stream become B's, C becomes a stand-in again, and the relay
//! toward B stays suspended until the shell resumes it with B's continuation (the same SSRC, sequence
//! continuing). The relay toward A re-bases on the new B's first packet (marker set).
//!
//! ```text
//!   legs[A] ◀── relay ──▶ legs[B]          legs[C]   legs[D]     (latch, direction, inactivity: all four)
//!                                             │ rebind(C, B): legs[B] = legs[C]; legs[C] = stand-in
//!                                             └──────────────────▶ B
//! ```
//!
//! [`sdp::Negotiated`]: super::sdp::Negotiated

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::g711::{ALAW_TO_ULAW, ULAW_TO_ALAW};
use super::rtp::{write_header, RtpError, RtpHeader, HEADER_LEN};
use super::sdp::Direction;
use super::{Codec, CLOCK_RATE};
use crate::sip::Rng;

/// Comfort noise (RFC 3389), a static payload type phones send without negotiating it.
pub const PT_COMFORT_NOISE: u8 = 13;
/// An incoming sequence number more than this far ahead of the newest is a restart (RFC 3550 A.1).
pub const MAX_DROPOUT: u16 = 3000;
/// An incoming sequence number more than this far behind the newest is a restart (RFC 3550 A.1).
pub const MAX_MISORDER: u16 = 100;
/// After an incoming SSRC change, packets of the replaced SSRC are refused while the new stream has sent
/// within this time.
pub const OLD_SSRC_HOLDOFF: Duration = Duration::from_millis(500);

/// One side of the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The caller (the citizen, via the carrier trunk).
    A,
    /// The agent (the counsellor's phone).
    B,
    /// The consulted party (a department's phone the agent calls while the caller is held).
    C,
    /// A supervisor's phone listening in, whispering or barging.
    D,
}

impl Leg {
    /// The two legs of the relay.
    pub const BOTH: [Leg; 2] = [Leg::A, Leg::B];
    /// Every leg a call can have.
    pub const ALL: [Leg; 4] = [Leg::A, Leg::B, Leg::C, Leg::D];

    /// The leg on the other side of the relay pair (A ⇄ B; C ⇄ D, which are never relayed, only mixed).
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
            Leg::C => Leg::D,
            Leg::D => Leg::C,
        }
    }

    /// Whether the leg is one of the relay pair (A, B); C and D are only ever mixed.
    pub fn relayed(self) -> bool {
        matches!(self, Leg::A | Leg::B)
    }

    /// 0-3 for A-D: the leg's slot in per-leg arrays.
    pub fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
            Leg::C => 2,
            Leg::D => 3,
        }
    }

    fn i(self) -> usize {
        self.index()
    }
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Leg::A => "A (caller)",
            Leg::B => "B (agent)",
            Leg::C => "C (consulted)",
            Leg::D => "D (supervisor)",
        })
    }
}

/// What a leg's SDP negotiation settled (see [`sdp::Negotiated`](super::sdp::Negotiated)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegMedia {
    /// Where the leg's SDP says it receives RTP; used until the leg's first valid packet latches.
    /// `None` when the SDP gave no usable address (0.0.0.0, port 0).
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    /// The payload type of `codec` on this leg (both directions).
    pub audio_pt: u8,
    /// The telephone-event payload type on this leg, if negotiated.
    pub dtmf_pt: Option<u8>,
    /// The leg's packet time; the minimum timestamp step across a re-base until an audio packet has
    /// shown the real frame size.
    pub ptime_ms: u32,
}

/// Where an outgoing stream toward a leg stands: the next packet has `ssrc` and `seq`, and a packet sent
/// at `at` carries timestamp `ts` (later packets: `ts` + elapsed time at 8 kHz).
///
/// From the pacer: `Continuation { ssrc: spec.ssrc, seq: pos.seq, ts: pos.ts, at: now }` with
/// `pos = pacer.position(id)` read when the stream is removed at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Continuation {
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub at: Instant,
}

/// One leg when the bridge is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegConfig {
    pub media: LegMedia,
    /// callgate's direction toward the leg (`Negotiated::direction`).
    pub direction: Direction,
    /// The stream the leg has been hearing from callgate (the pacer's guidance or music), to continue.
    /// `None` if it has heard nothing: the bridge draws a random SSRC, sequence number and timestamp.
    pub heard: Option<Continuation>,
}

/// What to do with comfort noise (PT 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComfortNoise {
    /// Drop it (callgate offers no CN, so the other leg did not negotiate it). The default.
    Drop,
    /// Relay it as PT 13.
    Pass,
}

/// Policy, the same for every call of an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// No valid RTP from a `sendrecv` leg for this long reports [`BridgeEvent::Inactive`]. Default 60 s.
    pub inactivity: Duration,
    /// Consecutive valid packets a new source must send before it replaces the latched one. Default 3
    /// (0 is taken as 1).
    pub relatch_packets: u32,
    /// A new source with the same SSRC as the latched one replaces it only after the latched source has
    /// been silent this long (a NAT rebinding); with a new SSRC it need not wait. Default 2 s.
    pub relatch_silence: Duration,
    pub comfort_noise: ComfortNoise,
}

impl Default for BridgeConfig {
    fn default() -> BridgeConfig {
        BridgeConfig {
            inactivity: Duration::from_secs(60),
            relatch_packets: 3,
            relatch_silence: Duration::from_secs(2),
            comfort_noise: ComfortNoise::Drop,
        }
    }
}

/// The outcome of [`Bridge::on_packet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send `buf[..len]` (rewritten in place) on `to_leg`'s socket to `dst`.
    Forward {
        to_leg: Leg,
        dst: SocketAddr,
        len: usize,
    },
    /// Do not send. The buffer is left exactly as received (the shell may still hand it to its DTMF
    /// receiver, e.g. for [`DropReason::NoTelephoneEvent`] or [`DropReason::Suspended`]).
    Drop(Dropped),
}

/// A datagram the bridge did not relay: on which leg it came, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("datagram on leg {leg} not relayed: {reason}")]
pub struct Dropped {
    /// The leg it arrived on.
    pub leg: Leg,
    pub reason: DropReason,
}

/// Why a datagram was not relayed. Every variant is counted in [`DropCounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("the datagram length {len} exceeds the {capacity}-byte buffer it was given in")]
    BadLength { len: usize, capacity: usize },
    #[error("RTCP (packet type {packet_type}) on the RTP port: RTCP is terminated at callgate, route it with is_rtcp()")]
    Rtcp { packet_type: u8 },
    #[error("not RTP: {0}")]
    Malformed(RtpError),
    #[error("payload type {found}, expected the leg's audio PT {audio}, its telephone-event PT {dtmf:?} or comfort noise 13")]
    UnexpectedPayloadType {
        found: u8,
        audio: u8,
        dtmf: Option<u8>,
    },
    #[error("from {src}, expected the latched source {latched}; a new source needs {needed} consecutive packets (this is {count})")]
    UnconfirmedSource {
        src: SocketAddr,
        latched: SocketAddr,
        count: u32,
        needed: u32,
    },
    #[error("telephone-event (PT {pt}) but leg {to} negotiated none: the shell may relay the digit by SIP INFO")]
    NoTelephoneEvent { pt: u8, to: Leg },
    #[error("comfort noise (PT 13) is dropped by policy")]
    ComfortNoise,
    #[error("leg {to} hears the pacer (music, announcement): the relay toward it is suspended")]
    Suspended { to: Leg },
    #[error("callgate's direction toward leg {leg} is {}, expected one that {}", .direction.as_str(), if *.sending { "sends" } else { "receives" })]
    Direction {
        leg: Leg,
        direction: Direction,
        /// Whether the relay needed to send toward `leg` (else: receive from it).
        sending: bool,
    },
    #[error("no address for leg {to}: its SDP gave none and it has sent no RTP yet")]
    NoDestination { to: Leg },
    #[error("sequence number {seq} is from before the re-base at {base} (a late packet of a restarted or handed-over stream)")]
    BeforeRebase { seq: u16, base: u16 },
    #[error("SSRC {ssrc:#010x} is the stream the leg replaced by {current:#010x}: a late packet of the old stream")]
    OldSsrc { ssrc: u32, current: u32 },
    #[error("leg {leg} is never relayed (legs C and D are only mixed): valid RTP, kept for the mixer")]
    NotRelayed { leg: Leg },
}

/// Reports for the shell and the call core; drained with [`Bridge::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeEvent {
    /// The leg's first valid RTP came from `addr`: packets to the leg now go there (and so must a pacer
    /// stream toward it: `Pacer::set_destination`).
    Latched { leg: Leg, addr: SocketAddr },
    /// The leg's source moved from `from` to `to` (see "Latching"); same consequence as `Latched`.
    Relatched {
        leg: Leg,
        from: SocketAddr,
        to: SocketAddr,
    },
    /// No valid RTP from the leg for `silent_for` (≥ the configured inactivity) while `sendrecv`: end the
    /// call and record why.
    Inactive { leg: Leg, silent_for: Duration },
}

/// Datagrams dropped, by reason (the variants of [`DropReason`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    pub bad_length: u64,
    pub rtcp: u64,
    pub malformed: u64,
    pub unexpected_payload_type: u64,
    pub unconfirmed_source: u64,
    pub no_telephone_event: u64,
    pub comfort_noise: u64,
    pub suspended: u64,
    pub direction: u64,
    pub no_destination: u64,
    pub before_rebase: u64,
    pub old_ssrc: u64,
    pub not_relayed: u64,
}

impl DropCounts {
    fn count(&mut self, r: &DropReason) {
        let c = match r {
            DropReason::BadLength { .. } => &mut self.bad_length,
            DropReason::Rtcp { .. } => &mut self.rtcp,
            DropReason::Malformed(_) => &mut self.malformed,
            DropReason::UnexpectedPayloadType { .. } => &mut self.unexpected_payload_type,
            DropReason::UnconfirmedSource { .. } => &mut self.unconfirmed_source,
            DropReason::NoTelephoneEvent { .. } => &mut self.no_telephone_event,
            DropReason::ComfortNoise => &mut self.comfort_noise,
            DropReason::Suspended { .. } => &mut self.suspended,
            DropReason::Direction { .. } => &mut self.direction,
            DropReason::NoDestination { .. } => &mut self.no_destination,
            DropReason::BeforeRebase { .. } => &mut self.before_rebase,
            DropReason::OldSsrc { .. } => &mut self.old_ssrc,
            DropReason::NotRelayed { .. } => &mut self.not_relayed,
        };
        *c += 1;
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.bad_length
            + self.rtcp
            + self.malformed
            + self.unexpected_payload_type
            + self.unconfirmed_source
            + self.no_telephone_event
            + self.comfort_noise
            + self.suspended
            + self.direction
            + self.no_destination
            + self.before_rebase
            + self.old_ssrc
            + self.not_relayed
    }
}

/// Counters of one leg, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegStats {
    /// Datagrams that arrived on the leg, and their bytes.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Of those, valid RTP from the accepted source (latched, or latching).
    pub valid_in: u64,
    /// Packets relayed toward the leg (sent on its socket), and their bytes.
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Audio packets toward the leg whose payload was transcoded.
    pub transcoded_out: u64,
    /// Datagrams that arrived on the leg and were dropped, by reason.
    pub dropped: DropCounts,
    /// Latches (the first) and re-latches of the leg's source.
    pub latches: u64,
    /// Re-bases caused by the leg's incoming stream (new SSRC, or a sequence jump).
    pub restarts: u64,
    /// Arrival of the last valid RTP from the leg.
    pub last_arrival: Option<Instant>,
}

/// A configuration the bridge cannot work with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    #[error("leg {leg}: {what} payload type {pt} is not usable (expected 0-63 or 96-127: RTP payload types are 7 bits, and 64-95 are kept free for RTCP multiplexing by RFC 5761)")]
    PayloadType {
        leg: Leg,
        what: &'static str,
        pt: u8,
    },
    #[error("leg {leg}: the audio and telephone-event payload types are both {pt}, expected two different numbers")]
    SamePayloadType { leg: Leg, pt: u8 },
    #[error("leg {leg}: ptime {ptime_ms} ms, expected 1 to 200 ms")]
    Ptime { leg: Leg, ptime_ms: u32 },
}

/// Whether a datagram on an RTP port is RTCP multiplexed onto it (RFC 5761 §4): version 2 and a second
/// byte in 192-223, the RTCP packet types (SR 200, RR 201, SDES 202, BYE 203, APP 204, and the feedback
/// and XR types 205-207 that share the range). RTP never has these there once payload types 64-95 are
/// kept free, which [`Bridge::new`] enforces.
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1])
}

fn check_media(leg: Leg, m: &LegMedia) -> Result<(), BridgeError> {
    let usable = |pt: u8| pt < 64 || (96..128).contains(&pt);
    if !usable(m.audio_pt) {
        return Err(BridgeError::PayloadType {
            leg,
            what: "audio",
            pt: m.audio_pt,
        });
    }
    if let Some(pt) = m.dtmf_pt {
        if !usable(pt) || pt == PT_COMFORT_NOISE {
            return Err(BridgeError::PayloadType {
                leg,
                what: "telephone-event",
                pt,
            });
        }
        if pt == m.audio_pt {
            return Err(BridgeError::SamePayloadType { leg, pt });
        }
    }
    if !(1..=200).contains(&m.ptime_ms) {
        return Err(BridgeError::Ptime {
            leg,
            ptime_ms: m.ptime_ms,
        });
    }
    Ok(())
}

/// Samples at 8 kHz in `d` (wrapping, as RTP timestamps do).
fn samples(d: Duration) -> u32 {
    (d.as_micros() * CLOCK_RATE as u128 / 1_000_000) as u32
}

#[derive(Clone, Copy, Debug)]
enum Latch {
    Unlatched,
    Latched {
        addr: SocketAddr,
        ssrc: u32,
        last: Instant,
    },
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    addr: SocketAddr,
    ssrc: u32,
    count: u32,
}

/// How the incoming stream of the far leg maps onto the outgoing stream toward this leg.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    in_ssrc: u32,
    /// The SSRC this one replaced, whose late packets are dropped rather than re-based back to.
    old_ssrc: Option<u32>,
    /// Arrival of the newest packet of `in_ssrc`.
    last_at: Instant,
    /// Incoming sequence number of the first packet after the re-base, and the newest so far.
    base_seq: u16,
    hi_seq: u16,
    seq_off: u16,
    ts_off: u32,
}

/// The newest packet sent on an outgoing stream (or a pacer hand-over point): the next packet has
/// `next_seq`, and its timestamp is at least `ts + max(elapsed since at, min_adv)`.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    next_seq: u16,
    ts: u32,
    at: Instant,
    min_adv: u32,
}

impl Anchor {
    fn ts_at(&self, now: Instant) -> u32 {
        self.ts
            .wrapping_add(samples(now.saturating_duration_since(self.at)).max(self.min_adv))
    }
}

/// The outgoing stream toward a leg.
#[derive(Clone, Copy, Debug)]
struct OutStream {
    ssrc: u32,
    relaying: bool,
    map: Option<Mapping>,
    anchor: Anchor,
}

#[derive(Clone, Copy, Debug)]
struct LegState {
    media: LegMedia,
    direction: Direction,
    latch: Latch,
    probe: Option<Probe>,
    /// Start of the current silence: the last valid arrival, or when monitoring (re)started.
    alive_since: Instant,
    inactive_reported: bool,
    /// Samples per packet of the leg's audio (from the last audio packet; ptime until then).
    frame: u32,
    stats: LegStats,
    /// The stream callgate sends toward this leg.
    out: OutStream,
}

impl LegState {
    fn send_addr(&self) -> Option<SocketAddr> {
        match self.latch {
            Latch::Latched { addr, .. } => Some(addr),
            Latch::Unlatched => self.media.remote,
        }
    }

    fn monitored(&self) -> bool {
        self.direction == Direction::SendRecv && !self.inactive_reported
    }
}

fn receives(d: Direction) -> bool {
    matches!(d, Direction::SendRecv | Direction::RecvOnly)
}

enum Kind {
    Audio,
    Dtmf,
    ComfortNoise,
}

/// The RTP relay of one bridged call. See the module documentation.
#[derive(Debug)]
pub struct Bridge {
    config: BridgeConfig,
    /// Indexed by [`Leg::index`]: A, B (relayed), C, D (watched only).
    legs: [LegState; 4],
    events: VecDeque<BridgeEvent>,
}

impl Bridge {
    /// A bridge relaying in both directions from `now` (the shell has removed any pacer stream toward
    /// either leg; see [`LegConfig::heard`]). `rng` draws the SSRC, sequence number and
    /// timestamp of a leg that has heard nothing yet (`heard: None`).
    pub fn new(
        now: Instant,
        config: BridgeConfig,
        a: LegConfig,
        b: LegConfig,
        rng: &mut Rng,
    ) -> Result<Bridge, BridgeError> {
        check_media(Leg::A, &a.media)?;
        check_media(Leg::B, &b.media)?;
        // C and D start as stand-ins: no address, inactive (neither sent to nor watched), not relayed.
        let absent = LegConfig {
            media: LegMedia { remote: None, ..b.media },
            direction: Direction::Inactive,
            heard: None,
        };
        let mut leg = |c: LegConfig| {
            let heard = c.heard.unwrap_or_else(|| Continuation {
                ssrc: rng.next_u32(),
                seq: rng.next_u32() as u16,
                ts: rng.next_u32(),
                at: now,
            });
            LegState {
                media: c.media,
                direction: c.direction,
                latch: Latch::Unlatched,
                probe: None,
                alive_since: now,
                inactive_reported: false,
                frame: c.media.ptime_ms * (CLOCK_RATE / 1000),
                stats: LegStats::default(),
                out: OutStream {
                    ssrc: heard.ssrc,
                    relaying: true,
                    map: None,
                    anchor: Anchor {
                        next_seq: heard.seq,
                        ts: heard.ts,
                        at: heard.at,
                        min_adv: 0,
                    },
                },
            }
        };
        let mut legs = [leg(a), leg(b), leg(absent), leg(absent)];
        legs[Leg::C.i()].out.relaying = false;
        legs[Leg::D.i()].out.relaying = false;
        Ok(Bridge {
            config,
            legs,
            events: VecDeque::with_capacity(8),
        })
    }

    /// Handles one datagram that arrived on `from_leg`'s socket from `src`: `buf[..len]`. On
    /// [`Verdict::Forward`] the packet has been rewritten in place and is `buf[..len']`. Never panics,
    /// never allocates (except the rare event pushed on a latch). Drain [`Bridge::poll_event`] after it.
    pub fn on_packet(
        &mut self,
        now: Instant,
        from_leg: Leg,
        src: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Verdict {
        match self.relay(now, from_leg, src, buf, len) {
            Ok(v) => v,
            Err(reason) => {
                self.legs[from_leg.i()].stats.dropped.count(&reason);
                Verdict::Drop(Dropped {
                    leg: from_leg,
                    reason,
                })
            }
        }
    }

    fn relay(
        &mut self,
        now: Instant,
        from: Leg,
        src: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Verdict, DropReason> {
        let cfg = self.config;
        let to = from.other();
        {
            let st = &mut self.legs[from.i()].stats;
            st.packets_in += 1;
            st.bytes_in += len as u64;
        }
        let capacity = buf.len();
        let pkt = buf
            .get_mut(..len)
            .ok_or(DropReason::BadLength { len, capacity })?;
        if is_rtcp(pkt) {
            return Err(DropReason::Rtcp {
                packet_type: pkt[1],
            });
        }
        let h = RtpHeader::parse(pkt).map_err(DropReason::Malformed)?;
        let (fm, tm) = (self.legs[from.i()].media, self.legs[to.i()].media);
        let kind = if h.payload_type == fm.audio_pt {
            Kind::Audio
        } else if Some(h.payload_type) == fm.dtmf_pt {
            Kind::Dtmf
        } else if h.payload_type == PT_COMFORT_NOISE {
            Kind::ComfortNoise
        } else {
            return Err(DropReason::UnexpectedPayloadType {
                found: h.payload_type,
                audio: fm.audio_pt,
                dtmf: fm.dtmf_pt,
            });
        };

        // Valid RTP from the leg: latching, then liveness.
        self.accept_source(now, from, src, h.ssrc)?;
        {
            let l = &mut self.legs[from.i()];
            l.alive_since = now;
            l.inactive_reported = false;
            l.stats.valid_in += 1;
            l.stats.last_arrival = Some(now);
            if let Kind::Audio = kind {
                if h.payload_len > 0 {
                    l.frame = h.payload_len as u32; // G.711: one byte per sample
                }
            }
        }

        // May it go across?
        let (fd, td) = (self.legs[from.i()].direction, self.legs[to.i()].direction);
        if !receives(fd) {
            return Err(DropReason::Direction {
                leg: from,
                direction: fd,
                sending: false,
            });
        }
        if !from.relayed() {
            return Err(DropReason::NotRelayed { leg: from });
        }
        if !td.sends() {
            return Err(DropReason::Direction {
                leg: to,
                direction: td,
                sending: true,
            });
        }
        if !self.legs[to.i()].out.relaying {
            return Err(DropReason::Suspended { to });
        }
        let out_pt = match kind {
            Kind::Audio => tm.audio_pt,
            Kind::Dtmf => match tm.dtmf_pt {
                Some(pt) => pt,
                None => {
                    self.squeeze(to, h.ssrc, h.seq);
                    return Err(DropReason::NoTelephoneEvent {
                        pt: h.payload_type,
                        to,
                    });
                }
            },
            Kind::ComfortNoise => match cfg.comfort_noise {
                ComfortNoise::Pass => PT_COMFORT_NOISE,
                ComfortNoise::Drop => {
                    self.squeeze(to, h.ssrc, h.seq);
                    return Err(DropReason::ComfortNoise);
                }
            },
        };
        let dst = self.legs[to.i()]
            .send_addr()
            .ok_or(DropReason::NoDestination { to })?;

        // Sequence and timestamp: map, re-basing when needed.
        let from_frame = self.legs[from.i()].frame;
        let out = &mut self.legs[to.i()].out;
        let mut marker = h.marker;
        let rebase = match out.map {
            Some(m)
                if m.old_ssrc == Some(h.ssrc)
                    && now.saturating_duration_since(m.last_at) < OLD_SSRC_HOLDOFF =>
            {
                return Err(DropReason::OldSsrc {
                    ssrc: h.ssrc,
                    current: m.in_ssrc,
                });
            }
            Some(m) if m.in_ssrc == h.ssrc => {
                let ahead = h.seq.wrapping_sub(m.hi_seq);
                if ahead < MAX_DROPOUT {
                    false
                } else if ahead > u16::MAX - MAX_MISORDER {
                    let behind = ahead.wrapping_neg();
                    if behind > m.hi_seq.wrapping_sub(m.base_seq) {
                        return Err(DropReason::BeforeRebase {
                            seq: h.seq,
                            base: m.base_seq,
                        });
                    }
                    false
                } else {
                    true
                }
            }
            _ => true,
        };
        if rebase {
            let old_ssrc = match out.map {
                Some(m) if m.in_ssrc != h.ssrc => Some(m.in_ssrc),
                Some(m) => m.old_ssrc,
                None => None,
            };
            if out.map.is_some() {
                self.legs[from.i()].stats.restarts += 1;
            }
            let out = &mut self.legs[to.i()].out;
            let ts = out.anchor.ts_at(now);
            out.map = Some(Mapping {
                in_ssrc: h.ssrc,
                old_ssrc,
                last_at: now,
                base_seq: h.seq,
                hi_seq: h.seq,
                seq_off: out.anchor.next_seq.wrapping_sub(h.seq),
                ts_off: ts.wrapping_sub(h.timestamp),
            });
            marker = true;
        }
        let out = &mut self.legs[to.i()].out;
        let Some(map) = out.map.as_mut() else {
            return Err(DropReason::NoDestination { to }); // unreachable: set just above
        };
        if h.seq.wrapping_sub(map.hi_seq) < MAX_DROPOUT {
            map.hi_seq = h.seq;
        }
        map.last_at = now;
        let seq = h.seq.wrapping_add(map.seq_off);
        let ts = h.timestamp.wrapping_add(map.ts_off);
        if seq.wrapping_sub(out.anchor.next_seq) < 0x8000 {
            out.anchor = Anchor {
                next_seq: seq.wrapping_add(1),
                ts,
                at: now,
                min_adv: from_frame,
            };
        }
        let ssrc = out.ssrc;

        // Rewrite in place: payload to offset 12 (dropping CSRCs, extension, padding), then the header.
        let (off, plen) = (h.payload_offset, h.payload_len);
        if off != HEADER_LEN {
            pkt.copy_within(off..off + plen, HEADER_LEN);
        }
        let new_len = HEADER_LEN + plen;
        let mut transcoded = false;
        if let Kind::Audio = kind {
            if fm.codec != tm.codec {
                let map = match fm.codec {
                    Codec::Pcma => &ALAW_TO_ULAW,
                    Codec::Pcmu => &ULAW_TO_ALAW,
                };
                for b in &mut pkt[HEADER_LEN..new_len] {
                    *b = map[*b as usize];
                }
                transcoded = true;
            }
        }
        if let Some(hdr) = pkt.first_chunk_mut::<HEADER_LEN>() {
            write_header(hdr, out_pt, marker, seq, ts, ssrc);
        }
        let st = &mut self.legs[to.i()].stats;
        st.packets_out += 1;
        st.bytes_out += new_len as u64;
        st.transcoded_out += transcoded as u64;
        Ok(Verdict::Forward {
            to_leg: to,
            dst,
            len: new_len,
        })
    }

    /// Latching (see the module docs). Ok when the packet's source is (now) the leg's source.
    fn accept_source(
        &mut self,
        now: Instant,
        leg: Leg,
        src: SocketAddr,
        ssrc: u32,
    ) -> Result<(), DropReason> {
        let needed = self.config.relatch_packets.max(1);
        let silence = self.config.relatch_silence;
        let l = &mut self.legs[leg.i()];
        match l.latch {
            Latch::Unlatched => {
                l.latch = Latch::Latched {
                    addr: src,
                    ssrc,
                    last: now,
                };
                l.probe = None;
                l.stats.latches += 1;
                self.events
                    .push_back(BridgeEvent::Latched { leg, addr: src });
                Ok(())
            }
            Latch::Latched { addr, .. } if addr == src => {
                l.latch = Latch::Latched {
                    addr,
                    ssrc,
                    last: now,
                };
                l.probe = None;
                Ok(())
            }
            Latch::Latched {
                addr,
                ssrc: latched_ssrc,
                last,
            } => {
                let probe = match l.probe {
                    Some(p) if p.addr == src && p.ssrc == ssrc => Probe {
                        count: p.count.saturating_add(1),
                        ..p
                    },
                    _ => Probe {
                        addr: src,
                        ssrc,
                        count: 1,
                    },
                };
                let moved = probe.count >= needed
                    && (ssrc != latched_ssrc || now.saturating_duration_since(last) >= silence);
                if moved {
                    l.latch = Latch::Latched {
                        addr: src,
                        ssrc,
                        last: now,
                    };
                    l.probe = None;
                    l.stats.latches += 1;
                    self.events.push_back(BridgeEvent::Relatched {
                        leg,
                        from: addr,
                        to: src,
                    });
                    Ok(())
                } else {
                    l.probe = Some(probe);
                    Err(DropReason::UnconfirmedSource {
                        src,
                        latched: addr,
                        count: probe.count,
                        needed,
                    })
                }
            }
        }
    }

    /// A packet of the current incoming stream dropped by payload policy, in order: close the gap.
    fn squeeze(&mut self, to: Leg, ssrc: u32, seq: u16) {
        if let Some(m) = self.legs[to.i()].out.map.as_mut() {
            if m.in_ssrc == ssrc && seq == m.hi_seq.wrapping_add(1) {
                m.hi_seq = seq;
                m.seq_off = m.seq_off.wrapping_sub(1);
            }
        }
    }

    /// Stops relaying toward `to_leg` at `now` (the pacer takes over: hold music, a prompt) and returns
    /// where the pacer's stream must continue: add it with `ssrc`, `seq`, `ts` from the result, at `now`.
    /// Packets for `to_leg` are dropped ([`DropReason::Suspended`]) until [`Bridge::resume_relay`].
    pub fn suspend_relay(&mut self, to_leg: Leg, now: Instant) -> Continuation {
        let out = &mut self.legs[to_leg.i()].out;
        let ts = out.anchor.ts_at(now);
        out.anchor = Anchor {
            next_seq: out.anchor.next_seq,
            ts,
            at: now,
            min_adv: 0,
        };
        out.relaying = false;
        out.map = None;
        Continuation {
            ssrc: out.ssrc,
            seq: out.anchor.next_seq,
            ts,
            at: now,
        }
    }

    /// Relays toward `to_leg` again after the pacer's stream toward it, which the shell has just removed:
    /// `from` is where that stream stood (see [`Continuation`]). The next relayed packet continues it:
    /// same SSRC (`from.ssrc` is adopted), `from.seq`, `from.ts` + the time since `from.at`, marker set.
    pub fn resume_relay(&mut self, to_leg: Leg, from: Continuation) {
        if !to_leg.relayed() {
            return; // C and D are never relayed (see "Legs C and D")
        }
        let out = &mut self.legs[to_leg.i()].out;
        out.ssrc = from.ssrc;
        out.anchor = Anchor {
            next_seq: from.seq,
            ts: from.ts,
            at: from.at,
            min_adv: 0,
        };
        out.map = None;
        out.relaying = true;
    }

    /// Whether packets toward `to_leg` are relayed (false between `suspend_relay` and `resume_relay`).
    pub fn is_relaying(&self, to_leg: Leg) -> bool {
        self.legs[to_leg.i()].out.relaying
    }

    /// Sets callgate's direction toward `leg` after a re-INVITE (`Negotiated::direction`). The
    /// inactivity count of the leg restarts at `now` when it becomes `sendrecv`.
    pub fn set_direction(&mut self, now: Instant, leg: Leg, direction: Direction) {
        let l = &mut self.legs[leg.i()];
        if direction == Direction::SendRecv && l.direction != Direction::SendRecv {
            l.alive_since = now;
            l.inactive_reported = false;
        }
        l.direction = direction;
    }

    pub fn direction(&self, leg: Leg) -> Direction {
        self.legs[leg.i()].direction
    }

    /// Replaces a leg's negotiated media after a re-INVITE. If its SDP address changed, the latch is
    /// released: packets go to the new address until the leg's next valid packet latches again.
    pub fn update_media(&mut self, leg: Leg, media: LegMedia) -> Result<(), BridgeError> {
        check_media(leg, &media)?;
        let l = &mut self.legs[leg.i()];
        if media.remote != l.media.remote {
            l.latch = Latch::Unlatched;
            l.probe = None;
        }
        l.media = media;
        Ok(())
    }

    pub fn media(&self, leg: Leg) -> &LegMedia {
        &self.legs[leg.i()].media
    }

    /// Where packets to `leg` go now: its latched source, else its SDP address.
    pub fn send_addr(&self, leg: Leg) -> Option<SocketAddr> {
        self.legs[leg.i()].send_addr()
    }

    /// The latched source of `leg`, if it has sent valid RTP.
    pub fn latched(&self, leg: Leg) -> Option<SocketAddr> {
        match self.legs[leg.i()].latch {
            Latch::Latched { addr, .. } => Some(addr),
            Latch::Unlatched => None,
        }
    }

    /// The SSRC of the stream callgate sends toward `to_leg`.
    pub fn out_ssrc(&self, to_leg: Leg) -> u32 {
        self.legs[to_leg.i()].out.ssrc
    }

    pub fn stats(&self, leg: Leg) -> &LegStats {
        &self.legs[leg.i()].stats
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// When [`Bridge::handle_timeout`] must be called next: the earliest inactivity deadline of a leg
    /// that is `sendrecv` and not yet reported. `None`: no timer needed. Ask again after every input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.legs
            .iter()
            .filter(|l| l.monitored())
            .map(|l| l.alive_since + self.config.inactivity)
            .min()
    }

    /// Reports [`BridgeEvent::Inactive`] for each leg whose deadline is at or before `now` (once, until
    /// valid RTP comes again). Drain [`Bridge::poll_event`] after it.
    pub fn handle_timeout(&mut self, now: Instant) {
        let inactivity = self.config.inactivity;
        for leg in Leg::ALL {
            let l = &mut self.legs[leg.i()];
            if l.monitored() && l.alive_since + inactivity <= now {
                l.inactive_reported = true;
                self.events.push_back(BridgeEvent::Inactive {
                    leg,
                    silent_for: now.saturating_duration_since(l.alive_since),
                });
            }
        }
    }

    /// Leg `from` becomes leg `to` (see "Legs C and D"): its address and latch, media, direction,
    /// inactivity count, counters and the stream callgate sends toward it (SSRC, sequence, timestamp
    /// anchor) are `to`'s from now on, and `from` is a stand-in again (no address, `inactive`). A relay
    /// toward the rebound leg is suspended (the caller resumes it with a continuation); the relay toward
    /// its partner re-bases on the next packet (the new source's first packet carries the marker).
    pub fn rebind(&mut self, now: Instant, from: Leg, to: Leg) {
        if from == to {
            return;
        }
        let mut moved = self.legs[from.i()];
        moved.out.relaying = false;
        moved.out.map = None;
        let stand_in = &mut self.legs[from.i()];
        stand_in.media.remote = None;
        stand_in.direction = Direction::Inactive;
        stand_in.latch = Latch::Unlatched;
        stand_in.probe = None;
        stand_in.alive_since = now;
        stand_in.inactive_reported = false;
        stand_in.stats = LegStats::default();
        stand_in.out.relaying = false;
        stand_in.out.map = None;
        self.legs[to.i()] = moved;
        for leg in [from, to] {
            if leg.relayed() {
                self.legs[leg.other().i()].out.map = None;
            }
        }
    }

    /// The next report, if any. Call until `None` after every input and timeout.
    pub fn poll_event(&mut self) -> Option<BridgeEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711;
    use crate::media::pacer::{Pacer, Packet, StreamId, StreamSpec};
    use crate::media::prompt::Prompt;
    use std::sync::Arc;

    const MS: Duration = Duration::from_millis(1);
    const FRAME: Duration = Duration::from_millis(20);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn a_sdp() -> SocketAddr {
        addr("198.51.100.10:4000")
    }
    fn a_nat() -> SocketAddr {
        addr("203.0.113.7:61000")
    }
    fn b_sdp() -> SocketAddr {
        addr("10.0.0.20:5000")
    }
    fn stray() -> SocketAddr {
        addr("192.0.2.66:9999")
    }

    fn media(remote: SocketAddr, codec: Codec, dtmf_pt: Option<u8>) -> LegMedia {
        LegMedia {
            remote: Some(remote),
            codec,
            audio_pt: codec.payload_type(),
            dtmf_pt,
            ptime_ms: 20,
        }
    }

    fn leg(media: LegMedia, heard: Option<Continuation>) -> LegConfig {
        LegConfig {
            media,
            direction: Direction::SendRecv,
            heard,
        }
    }

    /// A PCMA caller with telephone-event 101 and a PCMU agent with telephone-event 96.
    fn pcma_caller_pcmu_agent(t0: Instant, config: BridgeConfig) -> Bridge {
        Bridge::new(
            t0,
            config,
            leg(media(a_sdp(), Codec::Pcma, Some(101)), None),
            leg(media(b_sdp(), Codec::Pcmu, Some(96)), None),
            &mut Rng::seeded(3),
        )
        .unwrap()
    }

    fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut h = [0u8; HEADER_LEN];
        write_header(&mut h, pt, marker, seq, ts, ssrc);
        let mut p = h.to_vec();
        p.extend_from_slice(payload);
        p
    }

    #[derive(Debug)]
    struct Out {
        to: Leg,
        dst: SocketAddr,
        h: RtpHeader,
        payload: Vec<u8>,
    }

    /// Feeds one datagram the way the shell does (in a larger receive buffer).
    fn feed(
        b: &mut Bridge,
        now: Instant,
        from: Leg,
        src: SocketAddr,
        pkt: &[u8],
    ) -> Result<Out, Dropped> {
        let mut buf = [0u8; 1500];
        buf[..pkt.len()].copy_from_slice(pkt);
        match b.on_packet(now, from, src, &mut buf, pkt.len()) {
            Verdict::Forward { to_leg, dst, len } => {
                let h = RtpHeader::parse(&buf[..len]).expect("forwarded packet parses");
                Ok(Out {
                    to: to_leg,
                    dst,
                    h,
                    payload: h.payload(&buf[..len]).to_vec(),
                })
            }
            Verdict::Drop(d) => Err(d),
        }
    }

    fn events(b: &mut Bridge) -> Vec<BridgeEvent> {
        std::iter::from_fn(|| b.poll_event()).collect()
    }

    /// 20 ms of a 1 kHz tone whose amplitude sweeps through every segment of both laws.
    fn tone(frame: usize) -> Vec<i16> {
        (0..160)
            .map(|i| {
                let k = frame * 160 + i;
                let amp = 30_000.0 * ((k % 800) as f64 / 800.0);
                (amp * (2.0 * std::f64::consts::PI * 1000.0 * k as f64 / 8000.0 + 0.3).sin()) as i16
            })
            .collect()
    }

    /// Two G.711 quantisations (one per law) stay within this of the original sample.
    fn within_g711(orig: i16, got: i16) -> bool {
        let (o, g) = (orig as i32, got as i32);
        (o - g).abs() <= 16 + o.abs() / 12
    }

    #[test]
    fn pcma_caller_heard_by_pcmu_agent_and_back_transcoded_with_pt_mapped() {
        let t0 = Instant::now();
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        let mut prev: Option<RtpHeader> = None;
        for f in 0..50 {
            let pcm = tone(f);
            let alaw: Vec<u8> = pcm.iter().map(|&x| g711::linear_to_alaw(x)).collect();
            let now = t0 + FRAME * f as u32;
            let o = feed(
                &mut b,
                now,
                Leg::A,
                a_nat(),
                &rtp(
                    8,
                    f == 0,
                    4000 + f as u16,
                    80_000 + 160 * f as u32,
                    0xCA11,
                    &alaw,
                ),
            )
            .unwrap();
            assert_eq!(
                (o.to, o.dst),
                (Leg::B, b_sdp()),
                "agent not latched yet: its SDP address"
            );
            assert_eq!(o.h.payload_type, 0, "PCMA 8 mapped to the agent's PCMU 0");
            assert_eq!(o.h.ssrc, b.out_ssrc(Leg::B));
            assert_eq!(o.payload.len(), 160);
            for (i, (&x, &u)) in pcm.iter().zip(&o.payload).enumerate() {
                let y = g711::ulaw_to_linear(u);
                assert!(
                    within_g711(x, y),
                    "frame {f} sample {i}: sent {x}, agent hears {y}"
                );
            }
            if let Some(p) = prev {
                assert_eq!(o.h.seq, p.seq.wrapping_add(1));
                assert_eq!(o.h.timestamp, p.timestamp.wrapping_add(160));
                assert!(!o.h.marker);
            } else {
                assert!(o.h.marker);
            }
            prev = Some(o.h);
        }
        // And back: the agent's μ-law reaches the caller as A-law PT 8, at the caller's NAT address.
        for f in 0..20u32 {
            let pcm = tone(f as usize + 7);
            let ulaw: Vec<u8> = pcm.iter().map(|&x| g711::linear_to_ulaw(x)).collect();
            let o = feed(
                &mut b,
                t0 + FRAME * f,
                Leg::B,
                b_sdp(),
                &rtp(0, false, f as u16, 160 * f, 0xA6E7, &ulaw),
            )
            .unwrap();
            assert_eq!((o.to, o.dst, o.h.payload_type), (Leg::A, a_nat(), 8));
            for (&x, &a) in pcm.iter().zip(&o.payload) {
                assert!(within_g711(x, g711::alaw_to_linear(a)));
            }
        }
        assert_eq!(b.stats(Leg::B).transcoded_out, 50);
        assert_eq!(b.stats(Leg::A).transcoded_out, 20);
        assert_eq!(b.stats(Leg::A).packets_in, 50);
        assert_eq!(b.stats(Leg::B).bytes_out, 50 * 172);
    }

    #[test]
    fn same_law_is_relayed_byte_for_byte() {
        let t0 = Instant::now();
        let mut b = Bridge::new(
            t0,
            BridgeConfig::default(),
            leg(media(a_sdp(), Codec::Pcmu, Some(101)), None),
            leg(media(b_sdp(), Codec::Pcmu, Some(101)), None),
            &mut Rng::seeded(1),
        )
        .unwrap();
        let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let o = feed(
            &mut b,
            t0,
            Leg::A,
            a_sdp(),
            &rtp(0, false, 1, 1, 1, &payload),
        )
        .unwrap();
        assert_eq!(o.payload, payload);
        assert_eq!(b.stats(Leg::B).transcoded_out, 0);
    }

    #[test]
    fn latches_to_the_nat_source_not_the_sdp_address() {
        let t0 = Instant::now();
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        let voice = [0xD5u8; 160];
        // The agent talks first: the caller has sent nothing, so its SDP address is used.
        let o = feed(&mut b, t0, Leg::B, b_sdp(), &rtp(0, false, 1, 0, 7, &voice)).unwrap();
        assert_eq!(o.dst, a_sdp());
        assert_eq!(
            events(&mut b),
            vec![BridgeEvent::Latched {
                leg: Leg::B,
                addr: b_sdp()
            }]
        );
        // The caller's first packet comes from its NAT binding: that is where it hears us from now on.
        feed(
            &mut b,
            t0 + MS,
            Leg::A,
            a_nat(),
            &rtp(8, false, 1, 0, 9, &voice),
        )
        .unwrap();
        assert_eq!(
            events(&mut b),
            vec![BridgeEvent::Latched {
                leg: Leg::A,
                addr: a_nat()
            }]
        );
        let o = feed(
            &mut b,
            t0 + FRAME,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 2, 160, 7, &voice),
        )
        .unwrap();
        assert_eq!(o.dst, a_nat());
        assert_eq!(
            (b.latched(Leg::A), b.send_addr(Leg::A)),
            (Some(a_nat()), Some(a_nat()))
        );
        assert_eq!(b.stats(Leg::A).latches, 1);

        // A leg whose SDP gave no address is reached only once it has sent.
        let mut nomedia = media(a_sdp(), Codec::Pcma, None);
        nomedia.remote = None;
        let mut b = Bridge::new(
            t0,
            BridgeConfig::default(),
            leg(nomedia, None),
            leg(media(b_sdp(), Codec::Pcmu, None), None),
            &mut Rng::seeded(2),
        )
        .unwrap();
        let e = feed(&mut b, t0, Leg::B, b_sdp(), &rtp(0, false, 1, 0, 7, &voice)).unwrap_err();
        assert_eq!(e.reason, DropReason::NoDestination { to: Leg::A });
        feed(&mut b, t0, Leg::A, a_nat(), &rtp(8, false, 1, 0, 9, &voice)).unwrap();
        assert_eq!(
            feed(
                &mut b,
                t0,
                Leg::B,
                b_sdp(),
                &rtp(0, false, 2, 160, 7, &voice)
            )
            .unwrap()
            .dst,
            a_nat()
        );

        // A re-INVITE with a new address releases the latch until the leg sends again.
        b.update_media(Leg::A, media(addr("198.51.100.77:4002"), Codec::Pcma, None))
            .unwrap();
        assert_eq!(b.send_addr(Leg::A), Some(addr("198.51.100.77:4002")));
    }

    #[test]
    fn a_stray_packet_does_not_hijack_the_media_but_a_moved_phone_does() {
        let t0 = Instant::now();
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        let voice = [0xD5u8; 160];
        let mut seq = 0u16;
        let mut t = t0;
        let caller = |b: &mut Bridge, t: Instant, src: SocketAddr, ssrc: u32, seq: &mut u16| {
            *seq += 1;
            feed(
                b,
                t,
                Leg::A,
                src,
                &rtp(8, false, *seq, *seq as u32 * 160, ssrc, &voice),
            )
        };
        caller(&mut b, t, a_nat(), 0x1111, &mut seq).unwrap();
        events(&mut b);
        // Strays from a third address, even several, while the caller keeps talking: dropped, nothing moves.
        for k in 0..10 {
            t += FRAME;
            let e = feed(
                &mut b,
                t,
                Leg::A,
                stray(),
                &rtp(8, false, 50_000 + k, 0, 0xBAD, &voice),
            )
            .unwrap_err();
            assert!(
                matches!(e.reason, DropReason::UnconfirmedSource { src, latched, .. } if src == stray() && latched == a_nat())
            );
            if k % 2 == 1 {
                caller(&mut b, t, a_nat(), 0x1111, &mut seq).unwrap();
            }
            let o = feed(&mut b, t, Leg::B, b_sdp(), &rtp(0, false, k, 0, 7, &voice)).unwrap();
            assert_eq!(o.dst, a_nat(), "the caller still hears the agent");
        }
        assert!(!events(&mut b)
            .iter()
            .any(|e| matches!(e, BridgeEvent::Relatched { .. })));
        assert_eq!(b.stats(Leg::A).dropped.unconfirmed_source, 10);

        // The phone really moves (new binding, restarted stream): the third packet in a row moves the media.
        let moved = addr("203.0.113.7:61234");
        for n in 1..=3u32 {
            t += FRAME;
            let r = caller(&mut b, t, moved, 0x2222, &mut seq);
            assert_eq!(r.is_ok(), n == 3, "packet {n} from the new source");
        }
        assert_eq!(
            events(&mut b),
            vec![BridgeEvent::Relatched {
                leg: Leg::A,
                from: a_nat(),
                to: moved
            }]
        );
        assert_eq!(b.send_addr(Leg::A), Some(moved));
        assert_eq!(b.stats(Leg::A).latches, 2);

        // A NAT rebinding keeps the SSRC: while the old binding still delivers, a copy from elsewhere never
        // wins; once the old one has been silent for relatch_silence (2 s), it does.
        let rebound = addr("203.0.113.7:62000");
        for _ in 0..10 {
            t += FRAME;
            assert!(caller(&mut b, t, rebound, 0x2222, &mut seq).is_err());
            assert!(caller(&mut b, t, rebound, 0x2222, &mut seq).is_err());
            assert!(caller(&mut b, t, moved, 0x2222, &mut seq).is_ok());
        }
        t += Duration::from_secs(2);
        for n in 1..=3u32 {
            t += FRAME;
            assert_eq!(caller(&mut b, t, rebound, 0x2222, &mut seq).is_ok(), n == 3);
        }
        assert_eq!(b.send_addr(Leg::A), Some(rebound));
    }

    /// A seeded network: loss, adjacent swaps and duplicates.
    fn netem(rng: &mut Rng, n: u16) -> Vec<u16> {
        let mut order: Vec<u16> = (0..n)
            .filter(|&i| i == 0 || rng.next_u32() % 100 >= 5)
            .collect();
        for i in 2..order.len() {
            if rng.next_u32() % 100 < 10 {
                order.swap(i - 1, i);
            }
        }
        let mut out = Vec::new();
        for i in order {
            out.push(i);
            if rng.next_u32() % 100 < 3 {
                out.push(i);
            }
        }
        out
    }

    #[test]
    fn loss_reordering_and_duplicates_pass_through_as_they_came() {
        let t0 = Instant::now();
        for seed in 0..20 {
            let mut rng = Rng::seeded(seed);
            let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
            let (seq0, ts0) = (65_480u16, u32::MAX - 3_000); // both wrap during the call
            let arrivals = netem(&mut rng, 300);
            let mut seen = Vec::new();
            for (k, &i) in arrivals.iter().enumerate() {
                let (seq, ts) = (seq0.wrapping_add(i), ts0.wrapping_add(160 * i as u32));
                let o = feed(
                    &mut b,
                    t0 + FRAME * k as u32,
                    Leg::B,
                    b_sdp(),
                    &rtp(0, false, seq, ts, 0x5EED, &[0xFF; 160]),
                )
                .unwrap();
                seen.push((seq, ts, o.h.seq, o.h.timestamp));
            }
            // One offset for the whole stream: every gap, swap and duplicate reaches the caller unchanged.
            let (s0, t0_, o0, p0) = seen[0];
            for &(s, t, o, p) in &seen {
                assert_eq!(o.wrapping_sub(o0), s.wrapping_sub(s0), "seed {seed}");
                assert_eq!(p.wrapping_sub(p0), t.wrapping_sub(t0_), "seed {seed}");
            }
            let lost = 300 - {
                let mut u: Vec<u16> = arrivals.clone();
                u.sort();
                u.dedup();
                u.len()
            };
            let mut outs: Vec<u16> = seen.iter().map(|x| x.2.wrapping_sub(o0)).collect();
            outs.sort();
            outs.dedup();
            assert_eq!(outs.len() + lost, 300, "seed {seed}: losses stay gaps");
        }
    }

    #[test]
    fn an_incoming_ssrc_change_keeps_the_callers_stream_continuous() {
        let t0 = Instant::now();
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        let mut last = None;
        for i in 0..10u16 {
            let o = feed(
                &mut b,
                t0 + FRAME * i as u32,
                Leg::B,
                b_sdp(),
                &rtp(
                    0,
                    false,
                    1000 + i,
                    5000 + 160 * i as u32,
                    0xAAAA,
                    &[0xFF; 160],
                ),
            )
            .unwrap();
            last = Some(o.h);
        }
        let last = last.unwrap();
        // The agent's phone restarts its stream 30 ms after its last packet: new SSRC, seq, ts.
        let t = t0 + FRAME * 9 + 30 * MS;
        let o = feed(
            &mut b,
            t,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 7, 123_456, 0xBBBB, &[0xFF; 160]),
        )
        .unwrap();
        assert_eq!(o.h.ssrc, last.ssrc, "the caller still sees one SSRC");
        assert_eq!(o.h.seq, last.seq.wrapping_add(1));
        assert_eq!(
            o.h.timestamp,
            last.timestamp.wrapping_add(240),
            "30 ms later"
        );
        assert!(o.h.marker);
        let o2 = feed(
            &mut b,
            t + FRAME,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 8, 123_616, 0xBBBB, &[0xFF; 160]),
        )
        .unwrap();
        assert_eq!(
            (o2.h.seq, o2.h.timestamp, o2.h.marker),
            (
                o.h.seq.wrapping_add(1),
                o.h.timestamp.wrapping_add(160),
                false
            )
        );
        // A late packet of the old stream is not allowed to re-base back.
        let e = feed(
            &mut b,
            t + FRAME,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 1009, 5000 + 160 * 9, 0xAAAA, &[0xFF; 160]),
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            DropReason::OldSsrc {
                ssrc: 0xAAAA,
                current: 0xBBBB
            }
        );
        // The old stream coming back for good after the new one has stopped is followed (a PBX's own music).
        let back = t + FRAME + Duration::from_secs(1);
        let o = feed(
            &mut b,
            back,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 1010, 5000 + 160 * 10, 0xAAAA, &[0xFF; 160]),
        )
        .unwrap();
        assert_eq!((o.h.seq, o.h.marker), (o2.h.seq.wrapping_add(1), true));
        assert_eq!(
            o.h.timestamp,
            o2.h.timestamp.wrapping_add(8000),
            "one second later"
        );
        let o2 = feed(
            &mut b,
            back + FRAME,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 1011, 5000 + 160 * 11, 0xAAAA, &[0xFF; 160]),
        )
        .unwrap();
        let t = back;
        // A restart that keeps the SSRC but jumps the sequence: also re-based, at least one frame on.
        let o3 = feed(
            &mut b,
            t + FRAME + MS,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 40_000, 9, 0xAAAA, &[0xFF; 160]),
        )
        .unwrap();
        assert_eq!(
            (o3.h.seq, o3.h.timestamp, o3.h.marker),
            (
                o2.h.seq.wrapping_add(1),
                o2.h.timestamp.wrapping_add(160),
                true
            )
        );
        assert_eq!(b.stats(Leg::B).restarts, 3);
        // A packet reordered from before that re-base would collide: dropped.
        let e = feed(
            &mut b,
            t + FRAME + 2 * MS,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 39_999, 0, 0xAAAA, &[0xFF; 160]),
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            DropReason::BeforeRebase {
                seq: 39_999,
                base: 40_000
            }
        );
    }

    fn music(frames: usize) -> Arc<Prompt> {
        let pcm: Vec<i16> = (0..frames).flat_map(tone).collect();
        Arc::new(Prompt::from_pcm("music", &pcm))
    }

    /// Runs the pacer in virtual time until `until`, collecting (when, header) of each packet.
    fn run_pacer(p: &mut Pacer, until: Instant, sent: &mut Vec<(Instant, RtpHeader)>) {
        while let Some(t) = p.poll_timeout() {
            if t > until {
                break;
            }
            p.handle_timeout(t, &mut |pkt: Packet<'_>| {
                let mut buf = pkt.header.to_vec();
                buf.extend_from_slice(pkt.payload);
                sent.push((t, RtpHeader::parse(&buf).unwrap()));
            });
        }
    }

    fn music_spec(c: Continuation) -> StreamSpec {
        StreamSpec {
            dst: a_nat(),
            socket: 1,
            codec: Codec::Pcma,
            pt: 8,
            ssrc: c.ssrc,
            seq: c.seq,
            ts: c.ts,
            playlist: vec![music(50)],
            looped: true,
            user: 1,
        }
    }

    /// Hands a pacer stream over to the relay as the shell does: read the position, remove, continue.
    fn take_over(p: &mut Pacer, id: StreamId, ssrc: u32, now: Instant) -> Continuation {
        let pos = p.position(id).unwrap();
        assert!(p.remove(id));
        Continuation {
            ssrc,
            seq: pos.seq,
            ts: pos.ts,
            at: now,
        }
    }

    #[test]
    fn caller_hears_one_stream_from_music_to_agent_to_hold_music_and_back() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0);
        let mut sent = Vec::new();
        // Queue music toward the caller (the call core started it with its own SSRC, seq and ts).
        let start = Continuation {
            ssrc: 0xA11CE,
            seq: 65_530,
            ts: u32::MAX - 1_000,
            at: t0,
        };
        let id = pacer.add(t0, music_spec(start));
        run_pacer(&mut pacer, t0 + Duration::from_millis(1_000), &mut sent);
        let (last_at, last) = *sent.last().unwrap();

        // The agent answers 7 ms into a frame period: the bridge takes the caller's stream over.
        let now = t0 + Duration::from_millis(1_007);
        let heard = take_over(&mut pacer, id, 0xA11CE, now);
        let mut b = Bridge::new(
            now,
            BridgeConfig::default(),
            leg(media(a_sdp(), Codec::Pcma, Some(101)), Some(heard)),
            leg(media(b_sdp(), Codec::Pcmu, Some(96)), None),
            &mut Rng::seeded(5),
        )
        .unwrap();
        let first_at = now + 13 * MS;
        let o = feed(
            &mut b,
            first_at,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 333, 777, 0xA6E7, &[0xFF; 160]),
        )
        .unwrap();
        assert_eq!(o.h.ssrc, 0xA11CE, "the same SSRC as the music");
        assert_eq!(o.h.seq, last.seq.wrapping_add(1), "sequence continues +1");
        assert!(o.h.marker, "marker on the first packet after the switch");
        let advance = o.h.timestamp.wrapping_sub(last.timestamp);
        let elapsed = samples(first_at - last_at);
        assert!(
            advance >= 160 && advance.abs_diff(elapsed) < 160,
            "ts advanced {advance}, wall time {elapsed} samples"
        );
        let mut prev = o.h;
        for i in 1..10u16 {
            let o = feed(
                &mut b,
                first_at + FRAME * i as u32,
                Leg::B,
                b_sdp(),
                &rtp(
                    0,
                    false,
                    333 + i,
                    777 + 160 * i as u32,
                    0xA6E7,
                    &[0xFF; 160],
                ),
            )
            .unwrap();
            assert_eq!(
                (o.h.seq, o.h.timestamp, o.h.marker),
                (
                    prev.seq.wrapping_add(1),
                    prev.timestamp.wrapping_add(160),
                    false
                )
            );
            prev = o.h;
        }
        let prev_at = first_at + FRAME * 9;

        // The agent puts the caller on hold: the pacer plays music to the caller, continuing the stream.
        let hold_at = prev_at + 5 * MS;
        let c = b.suspend_relay(Leg::A, hold_at);
        assert!(!b.is_relaying(Leg::A));
        let e = feed(
            &mut b,
            hold_at + MS,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 400, 0, 0xA6E7, &[0xFF; 160]),
        )
        .unwrap_err();
        assert_eq!(e.reason, DropReason::Suspended { to: Leg::A });
        let id = pacer.add(hold_at, music_spec(c));
        sent.clear();
        run_pacer(&mut pacer, hold_at + Duration::from_millis(500), &mut sent);
        let (m_at, m) = sent[0];
        assert_eq!(
            (m.ssrc, m.seq, m.marker),
            (0xA11CE, prev.seq.wrapping_add(1), true)
        );
        let advance = m.timestamp.wrapping_sub(prev.timestamp);
        assert!(advance >= 160 && advance.abs_diff(samples(m_at - prev_at)) < 160);
        let (last_at, last) = *sent.last().unwrap();

        // Resume: the agent's voice again, right after the music's last packet.
        let resume_at = hold_at + Duration::from_millis(503);
        b.resume_relay(Leg::A, take_over(&mut pacer, id, 0xA11CE, resume_at));
        let t = resume_at + 4 * MS;
        let o = feed(
            &mut b,
            t,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 401, 64_000, 0xA6E7, &[0xFF; 160]),
        )
        .unwrap();
        assert_eq!(
            (o.h.ssrc, o.h.seq, o.h.marker),
            (0xA11CE, last.seq.wrapping_add(1), true)
        );
        let advance = o.h.timestamp.wrapping_sub(last.timestamp);
        assert!(advance >= 160 && advance.abs_diff(samples(t - last_at)) < 160);
    }

    fn event(digit: u8, end: bool, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [digit, if end { 0x8A } else { 0x0A }, d[0], d[1]]
    }

    #[test]
    fn dtmf_passes_through_with_pt_101_mapped_to_96() {
        let t0 = Instant::now();
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        let voice = [0xD5u8; 160];
        let mut outs = Vec::new();
        let mut k = 0u32;
        let mut send = |b: &mut Bridge, pkt: Vec<u8>| {
            k += 1;
            feed(b, t0 + FRAME * k, Leg::A, a_nat(), &pkt)
        };
        for s in 100..105u16 {
            outs.push(send(&mut b, rtp(8, false, s, 160 * s as u32, 0x51, &voice)).unwrap());
        }
        // Digit 5: start (marker), updates, and the end packet three times, all with the event's start ts.
        let ts = 160 * 105;
        let mut evs = vec![rtp(101, true, 105, ts, 0x51, &event(5, false, 160))];
        for (i, d) in [320u16, 480, 640].iter().enumerate() {
            evs.push(rtp(
                101,
                false,
                106 + i as u16,
                ts,
                0x51,
                &event(5, false, *d),
            ));
        }
        for i in 0..3u16 {
            evs.push(rtp(101, false, 109 + i, ts, 0x51, &event(5, true, 800)));
        }
        for e in evs {
            let o = send(&mut b, e.clone()).unwrap();
            assert_eq!(o.h.payload_type, 96);
            assert_eq!(
                o.payload,
                &e[12..],
                "event payload untouched (not transcoded)"
            );
            outs.push(o);
        }
        outs.push(send(&mut b, rtp(8, false, 112, 160 * 112, 0x51, &voice)).unwrap());
        for w in outs.windows(2) {
            assert_eq!(w[1].h.seq, w[0].h.seq.wrapping_add(1));
        }
        let ev_ts: Vec<u32> = outs[5..12].iter().map(|o| o.h.timestamp).collect();
        assert!(
            ev_ts.iter().all(|&t| t == ev_ts[0]),
            "one event, one timestamp"
        );
        assert_eq!(ev_ts[0], outs[4].h.timestamp.wrapping_add(160));
        let markers: Vec<bool> = outs.iter().map(|o| o.h.marker).collect();
        assert_eq!(
            markers.iter().filter(|&&m| m).count(),
            2,
            "stream start and event start"
        );
        assert!(markers[5]);
    }

    #[test]
    fn dtmf_toward_a_leg_without_telephone_event_is_reported_and_the_stream_stays_gapless() {
        let t0 = Instant::now();
        let mut b = Bridge::new(
            t0,
            BridgeConfig::default(),
            leg(media(a_sdp(), Codec::Pcma, Some(101)), None),
            leg(media(b_sdp(), Codec::Pcmu, None), None),
            &mut Rng::seeded(4),
        )
        .unwrap();
        let o1 = feed(
            &mut b,
            t0,
            Leg::A,
            a_nat(),
            &rtp(8, false, 10, 1600, 1, &[0xD5; 160]),
        )
        .unwrap();
        for s in 11..14u16 {
            let pkt = rtp(101, s == 11, s, 1760, 1, &event(9, s == 13, 160));
            let mut buf = [0u8; 256];
            buf[..pkt.len()].copy_from_slice(&pkt);
            let v = b.on_packet(t0 + FRAME, Leg::A, a_nat(), &mut buf, pkt.len());
            assert_eq!(
                v,
                Verdict::Drop(Dropped {
                    leg: Leg::A,
                    reason: DropReason::NoTelephoneEvent {
                        pt: 101,
                        to: Leg::B
                    }
                })
            );
            assert_eq!(
                &buf[..pkt.len()],
                &pkt[..],
                "left as received, for the shell's DTMF decoder"
            );
        }
        let o2 = feed(
            &mut b,
            t0 + 4 * FRAME,
            Leg::A,
            a_nat(),
            &rtp(8, false, 14, 2240, 1, &[0xD5; 160]),
        )
        .unwrap();
        assert_eq!(o2.h.seq, o1.h.seq.wrapping_add(1), "the agent sees no loss");
        assert_eq!(b.stats(Leg::A).dropped.no_telephone_event, 3);
    }

    #[test]
    fn comfort_noise_follows_the_policy() {
        let t0 = Instant::now();
        let cn = rtp(13, false, 1, 0, 5, &[40]);
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        assert_eq!(
            feed(&mut b, t0, Leg::A, a_nat(), &cn).unwrap_err().reason,
            DropReason::ComfortNoise
        );
        assert_eq!(
            b.latched(Leg::A),
            Some(a_nat()),
            "CN is valid RTP: it latches"
        );
        let mut b = pcma_caller_pcmu_agent(
            t0,
            BridgeConfig {
                comfort_noise: ComfortNoise::Pass,
                ..BridgeConfig::default()
            },
        );
        let o = feed(&mut b, t0, Leg::A, a_nat(), &cn).unwrap();
        assert_eq!((o.h.payload_type, o.payload.as_slice()), (13, &[40u8][..]));
    }

    #[test]
    fn inactivity_ends_a_silent_leg_but_not_one_on_hold() {
        let t0 = Instant::now();
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        // The agent talks for 10 s; the caller's phone sends nothing at all.
        let mut last = t0;
        for i in 0..500u16 {
            last = t0 + FRAME * i as u32;
            feed(
                &mut b,
                last,
                Leg::B,
                b_sdp(),
                &rtp(0, false, i, 160 * i as u32, 2, &[0xFF; 160]),
            )
            .unwrap();
        }
        events(&mut b);
        assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        b.handle_timeout(t0 + Duration::from_secs(60) - MS);
        assert_eq!(events(&mut b), vec![]);
        b.handle_timeout(t0 + Duration::from_secs(60));
        assert_eq!(
            events(&mut b),
            vec![BridgeEvent::Inactive {
                leg: Leg::A,
                silent_for: Duration::from_secs(60)
            }]
        );
        assert_eq!(
            b.poll_timeout(),
            Some(last + Duration::from_secs(60)),
            "reported once; the agent's deadline next"
        );
        b.handle_timeout(last + Duration::from_secs(60));
        assert_eq!(
            events(&mut b),
            vec![BridgeEvent::Inactive {
                leg: Leg::B,
                silent_for: Duration::from_secs(60)
            }]
        );
        assert_eq!(b.poll_timeout(), None);

        // On hold the held or holding phone may be silent for as long as it likes.
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        b.set_direction(t0 + Duration::from_secs(5), Leg::A, Direction::RecvOnly); // the caller holds (sendonly)
        b.set_direction(t0 + Duration::from_secs(5), Leg::B, Direction::SendOnly); // we hold the agent
        assert_eq!(b.poll_timeout(), None);
        b.handle_timeout(t0 + Duration::from_secs(600));
        assert_eq!(events(&mut b), vec![]);
        // Resumed at 600 s: a full minute from then.
        b.set_direction(t0 + Duration::from_secs(600), Leg::A, Direction::SendRecv);
        assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(660)));
        // RTP re-arms it.
        let _ = feed(
            &mut b,
            t0 + Duration::from_secs(630),
            Leg::A,
            a_nat(),
            &rtp(8, false, 1, 0, 3, &[0xD5; 160]),
        );
        assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(690)));
    }

    #[test]
    fn directions_gate_the_relay() {
        let t0 = Instant::now();
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        b.set_direction(t0, Leg::B, Direction::RecvOnly); // the agent holds us: it sends, we may not send to it
        let e = feed(
            &mut b,
            t0,
            Leg::A,
            a_nat(),
            &rtp(8, false, 1, 0, 3, &[0xD5; 160]),
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            DropReason::Direction {
                leg: Leg::B,
                direction: Direction::RecvOnly,
                sending: true
            }
        );
        assert!(e.to_string().contains("recvonly"), "{e}");
        feed(
            &mut b,
            t0,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 1, 0, 4, &[0xFF; 160]),
        )
        .unwrap();
        b.set_direction(t0, Leg::B, Direction::SendOnly);
        let e = feed(
            &mut b,
            t0,
            Leg::B,
            b_sdp(),
            &rtp(0, false, 2, 160, 4, &[0xFF; 160]),
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            DropReason::Direction {
                leg: Leg::B,
                direction: Direction::SendOnly,
                sending: false
            }
        );
        assert_eq!(b.stats(Leg::B).dropped.direction, 1);
    }

    #[test]
    fn garbage_is_dropped_with_a_reason_and_latches_nothing() {
        let t0 = Instant::now();
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        let mut csrc = rtp(8, false, 1, 0, 1, &[]);
        csrc[0] |= 0x03;
        let mut bad_pad = rtp(8, false, 1, 0, 1, &[1, 2, 9]);
        bad_pad[0] |= 0x20;
        let cases: Vec<(Vec<u8>, DropReason)> = vec![
            (vec![], DropReason::Malformed(RtpError::TooShort { len: 0 })),
            (
                vec![0x80],
                DropReason::Malformed(RtpError::TooShort { len: 1 }),
            ),
            (
                vec![0x80; 11],
                DropReason::Malformed(RtpError::TooShort { len: 11 }),
            ),
            (
                b"INVITE sip:120@x SIP/2.0\r\n".to_vec(),
                DropReason::Malformed(RtpError::Version { found: 1 }),
            ),
            (
                vec![0x81, 200, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0],
                DropReason::Rtcp { packet_type: 200 },
            ),
            (
                csrc,
                DropReason::Malformed(RtpError::CsrcOverrun {
                    csrc_count: 3,
                    need: 24,
                    len: 12,
                }),
            ),
            (
                bad_pad,
                DropReason::Malformed(RtpError::BadPadding {
                    padding: 9,
                    available: 3,
                }),
            ),
            (
                rtp(18, false, 1, 0, 1, &[0; 20]),
                DropReason::UnexpectedPayloadType {
                    found: 18,
                    audio: 8,
                    dtmf: Some(101),
                },
            ),
            (
                rtp(0, false, 1, 0, 1, &[0; 160]),
                DropReason::UnexpectedPayloadType {
                    found: 0,
                    audio: 8,
                    dtmf: Some(101),
                },
            ),
        ];
        for (pkt, reason) in &cases {
            let e = feed(&mut b, t0, Leg::A, stray(), pkt).unwrap_err();
            assert_eq!((&e.leg, &e.reason), (&Leg::A, reason), "{pkt:02x?}");
            assert!(
                e.to_string()
                    .starts_with("datagram on leg A (caller) not relayed: "),
                "{e}"
            );
        }
        let mut small = [0u8; 8];
        assert_eq!(
            b.on_packet(t0, Leg::A, stray(), &mut small, 20),
            Verdict::Drop(Dropped {
                leg: Leg::A,
                reason: DropReason::BadLength {
                    len: 20,
                    capacity: 8
                }
            })
        );
        assert_eq!(b.latched(Leg::A), None);
        assert_eq!(events(&mut b), vec![]);
        let d = b.stats(Leg::A).dropped;
        assert_eq!(
            (
                d.malformed,
                d.rtcp,
                d.unexpected_payload_type,
                d.bad_length,
                d.total()
            ),
            (6, 1, 2, 1, 10)
        );
        assert_eq!(b.stats(Leg::A).packets_in, 10);
    }

    #[test]
    fn csrcs_extension_and_padding_are_not_passed_to_the_other_leg() {
        let t0 = Instant::now();
        let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
        let mut pkt = rtp(8, false, 1, 0, 1, &[]);
        pkt[0] = 0xB1; // V=2 P X CC=1
        pkt.extend_from_slice(&[0, 0, 0, 42]); // CSRC
        pkt.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0x7F, 0, 0]); // one-byte extension, 1 word
        pkt.extend_from_slice(&[0xD5; 160]);
        pkt.extend_from_slice(&[0, 0, 3]);
        let o = feed(&mut b, t0, Leg::A, a_nat(), &pkt).unwrap();
        assert_eq!(
            (
                o.h.csrc_count,
                o.h.extension,
                o.h.padding,
                o.h.payload_offset
            ),
            (0, false, false, 12)
        );
        assert_eq!(o.payload, vec![g711::ALAW_TO_ULAW[0xD5]; 160]);
    }

    #[test]
    fn rtcp_is_told_from_rtp() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 201, 0, 7]));
        assert!(is_rtcp(&[0x81, 203, 0, 1]));
        assert!(is_rtcp(&[0x81, 206, 0, 1])); // PSFB
        assert!(!is_rtcp(&[0x80, 0]));
        assert!(!is_rtcp(&[0x80, 0x80 | 8])); // PCMA with marker
        assert!(!is_rtcp(&[0x80, 0x80 | 101])); // telephone-event with marker
        assert!(!is_rtcp(&[0x40, 200])); // not version 2
        assert!(!is_rtcp(&[0x80]));
    }

    #[test]
    fn configuration_errors_name_the_leg_and_what_was_expected() {
        let t0 = Instant::now();
        let mut m = media(b_sdp(), Codec::Pcmu, Some(0));
        let e = Bridge::new(
            t0,
            BridgeConfig::default(),
            leg(media(a_sdp(), Codec::Pcma, None), None),
            leg(m, None),
            &mut Rng::seeded(1),
        )
        .unwrap_err();
        assert_eq!(e, BridgeError::SamePayloadType { leg: Leg::B, pt: 0 });
        assert!(e.to_string().starts_with("leg B (agent): "), "{e}");
        m.dtmf_pt = Some(72);
        let e = Bridge::new(
            t0,
            BridgeConfig::default(),
            leg(media(a_sdp(), Codec::Pcma, None), None),
            leg(m, None),
            &mut Rng::seeded(1),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("telephone-event payload type 72"),
            "{e}"
        );
        m.dtmf_pt = None;
        m.ptime_ms = 0;
        assert_eq!(
            Bridge::new(
                t0,
                BridgeConfig::default(),
                leg(m, None),
                leg(m, None),
                &mut Rng::seeded(1)
            )
            .unwrap_err(),
            BridgeError::Ptime {
                leg: Leg::A,
                ptime_ms: 0
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            rtpish in proptest::prelude::any::<bool>(),
            from_a in proptest::prelude::any::<bool>(),
        ) {
            let t0 = Instant::now();
            let mut b = pcma_caller_pcmu_agent(t0, BridgeConfig::default());
            let from = if from_a { Leg::A } else { Leg::B };
            let mut buf = [0u8; 320];
            buf[..bytes.len()].copy_from_slice(&bytes);
            if rtpish && bytes.len() >= 2 {
                buf[0] = 0x80 | (buf[0] & 0x3F); // version 2, any P/X/CC
                buf[1] = (buf[1] & 0x80) | b.media(from).audio_pt;
            }
            for i in 0..3u32 {
                match b.on_packet(t0 + FRAME * i, from, stray(), &mut buf, bytes.len()) {
                    Verdict::Forward { to_leg, len, .. } => {
                        proptest::prop_assert!(len <= bytes.len());
                        let h = RtpHeader::parse(&buf[..len]).unwrap();
                        proptest::prop_assert_eq!(h.ssrc, b.out_ssrc(to_leg));
                        let m = b.media(to_leg);
                        proptest::prop_assert!(h.payload_type == m.audio_pt || Some(h.payload_type) == m.dtmf_pt || h.payload_type == 13);
                        break;
                    }
                    Verdict::Drop(d) => { let _ = d.to_string(); }
                }
            }
        }
    }
}
