//! The media engine of one media thread, sans-IO: it carries out [`MediaCommand`]s for many calls,
//! decides what becomes of every datagram that arrives on a call's RTP port, times every packet
//! callgate sends, and reports [`MediaEvent`]s. It owns the one [`Pacer`] and the one [`MixClock`] of
//! its thread, one [`Bridge`] per call (and a [`Mixer`] while a leg of the call hears a mix), the calls'
//! DTMF receivers and senders and their recorders; it touches no socket, file or clock. The shell
//! (`crate::edge::media`) binds ports through [`Sockets`], hands datagrams in with
//! [`Engine::on_datagram`], sends what [`Engine::handle_timeout`] emits, and writes the
//! [`RecordingOp`]s to disk on another thread.
//!
//! ```text
//!   command(now, cmd, sockets) ─┐                       ┌─▶ poll_event()     → MediaEvent to the call core
//!   on_datagram(now, sock, ..) ─┼─▶ Engine (per thread) ┼─▶ Forward{socket, dst, len} (the relayed packet)
//!   handle_timeout(now, out)  ──┘   Pacer, MixClock,    ├─▶ out(Outgoing)    (prompts, music, mixes, digits)
//!                                   Bridges, Mixers,    └─▶ poll_recording() → RecordingOp for the writer
//!                                   DTMF, recorders
//!   poll_timeout() → when handle_timeout is due next
//! ```
//!
//! A call has up to four legs, each with its own port: A (caller), B (agent), C (consulted party), D
//! (supervisor). A and B can be relayed to each other (the zero-copy path); every leg can hear a
//! playlist or a mix of other legs.
//!
//! # What a leg hears
//!
//! Toward each leg callgate sends one RTP stream for the whole call (one SSRC, sequence numbers +1,
//! timestamps on the wall clock; see [`bridge`](super::bridge)). At any moment exactly one source
//! writes it, and every hand-over passes a [`Continuation`] (the first packet after one has the marker):
//!
//! ```text
//!                    Play                                    Relay (A, B only)
//!   ┌─────────┐ ─────────────────────▶ ┌──────────┐ ─────────────────────▶ ┌─────────┐
//!   │ Nothing │ ◀───────────────────── │  Pacer   │ ◀───────────────────── │  Relay  │
//!   └─────────┘  Finished / barge-in   └──────────┘   Play (hold music)     └─────────┘
//!     │  │  ▲  ──────────────────────────── Relay ──────────────────────────▶  │  ▲  │
//!     │  │  │                                                                  │  │  │
//!     │  │  └──────────── SendDigit: Digit{then} (telephone-event packets) ◀───┘  │  │
//!     │  └─────────────────▶ after the last end packet: back to `then` ───────────┘  │
//!     │                                                                              │
//!     │  Mix{from}          ┌──────────────┐   Mix{from} (from Pacer, Relay too)     │
//!     └───────────────────▶ │  Mix(from)   │ ◀───────────────────────────────────────┘
//!                           │ every 20 ms  │ ── Mix{from'}: same stream, new inputs
//!                           └──────────────┘ ── Play / Relay / SendDigit: as from the other states
//! ```
//! - **Nothing**: the stream is paused (after `Open`, a finished playlist, a barge-in, or a relay whose
//!   other leg closed: then the bridge simply has nothing to relay). Its continuation is kept; a later
//!   stream continues it with the timestamp advanced by the time that passed.
//! - **Pacer**: a playlist (guidance, menu, music, position announcement, hold music) from the pacer.
//!   `Play` on a leg already in the pacer replaces the playlist in the same stream (same timing).
//! - **Relay**: the other leg's audio through the bridge (A hears B, B hears A; never C or D).
//! - **Mix**: the sum of the audio of the legs in `from` (never the leg itself), made by the call's
//!   [`Mixer`] every 20 ms when the [`MixClock`] says the call is due, in the leg's codec and payload
//!   type, with the timestamp of the frame's due instant (+160 per frame). A leg of `from` that is not
//!   open adds silence (and is heard as soon as it opens and sends); an empty `from` is a stream of
//!   silence. While the leg cannot be sent to (no address yet, a direction that does not send) frames
//!   pass without packets: the sequence number stays, the next packet has the marker.
//! - **Digit**: `SendDigit` takes the stream over for one RFC 4733 event (about 100 ms plus the three
//!   end packets), then gives it back to what it interrupted (`then`): the relay, the mix, the paused
//!   stream, or the playlist at the frame where it stopped ([`Pacer::seek`]). Commands for the leg
//!   meanwhile change `then`; further digits queue behind it with a short gap.
//!
//! # Mixing
//!
//! A call is on the [`MixClock`] and has a [`Mixer`] exactly while one of its legs hears a mix (or will
//! after its digit): the mixer is made (all its buffers at once) by the command that starts the first
//! mix and dropped by the one that ends the last (`Play`, `Relay`, `CloseLeg`, `Stop`). The mixer
//! buffers only the legs some mix uses. Each accepted audio packet of such a leg (valid RTP from its
//! latched source, while callgate receives from it) goes to the mixer *as well as* wherever the relay
//! sends it: whisper (`A Relay`, `B Mix[A, D]`) relays B to A and mixes A and D for B from the same
//! packets. On each due frame every input gives up one 20 ms frame once, then each mixing leg gets its
//! packet.
//!
//! # Rebind
//!
//! `Rebind{from, to}` (a completed consultation: C takes B's place) renames a leg: its port (the
//! socket's leg), the bridge's latch, media, direction and inactivity count ([`Bridge::rebind`]), its
//! DTMF state, what it hears and its stream (same SSRC, sequence continuing), its buffered mix input,
//! and its place in every other leg's mix (`from` replaced by `to` in each `from` set; a leg never
//! hears itself, so C's `Mix[B]` becomes B's `Mix[]`). A relay toward the moved leg names its pair and
//! does not survive the new name: the leg hears nothing until the next command (the core sends
//! `Relay{A}` and `Relay{B}`; the relay toward B then continues the stream the consulted party heard).
//!
//! ```text
//!   consult talking:  A Pacer(music)   B Mix{C}   C Mix{B}
//!   CloseLeg{B}:      A Pacer(music)              C Mix{}      (B's input: silence)
//!   Rebind{C → B}:    A Pacer(music)   B Mix{}                 (C's port, latch, stream now B's)
//!   Relay{A}, Relay{B}: A Relay ⇄ B Relay                        (mixer dropped; B's SSRC unchanged)
//! ```
//!
//! # One bridge per call, from the first `Open`
//!
//! Latching and inactivity follow one rule for every leg, bridged or not ("a caller in the queue who
//! sends nothing for the inactivity time is a dead call"): each call has its [`Bridge`] from its first
//! `Open`. A leg that is not open is a placeholder in it (no address, direction `inactive`, so it is
//! neither sent to nor watched), and the relay toward each leg stays suspended until a `Relay` names
//! it. RTP from an open leg therefore always goes through [`Bridge::on_packet`], which latches it and
//! keeps it alive, even when nothing is relayed (C and D: never).
//!
//! # DTMF and barge-in
//!
//! Telephone-events from the leg's accepted source go to the leg's [`DtmfReceiver`] (whether or not the
//! bridge relays them to the other leg, which it does when that leg negotiated telephone-event). A key
//! going down on a leg whose playlist was started with `barge_in` stops the playlist at once (no
//! `Finished`); the `Digit` event follows when the press ends. Digits are never mixed.
//!
//! # Recording
//!
//! From `Record` on, each accepted audio packet of a leg is decoded into the call's
//! [`StereoRecorder`]: the caller left; the agent, the consulted party, and the supervisor while the
//! caller hears them (barge), summed on the right. Every [`EngineConfig::record_flush`] the recorder is
//! drained into a chunk ([`RecordingOp::Data`]), and `Stop` ends it ([`RecordingOp::End`]). The shell
//! writes the chunks on another thread.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bridge::{Bridge, BridgeConfig, BridgeEvent, Continuation, DropReason, LegConfig, Verdict};
use super::command::{CallKey, Direction, Leg, LegMedia, MediaCommand, MediaEvent, MediaFailure};
use super::dtmf::{event_from_digit, DtmfPacket, DtmfReceiver, DtmfSender};
use super::mixer::{Due, LegSet, MixClock, Mixer, MAX_BURST};
use super::pacer::{Pacer, PacerEvent, StreamId, StreamSpec};
use super::prompt::{Prompt, PromptSet};
use super::recording::{Channel, StereoRecorder};
use super::rtp::{write_header, RtpHeader, HEADER_LEN};
use super::{MediaError, CLOCK_RATE, FRAME_SAMPLES, PTIME_MS};
use crate::sip::txn::IdMap;
use crate::sip::Rng;

/// Policy of an engine, the same for every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Latching, inactivity and comfort-noise policy of every call's bridge.
    pub bridge: BridgeConfig,
    /// How often a recording's samples are handed to the writer.
    pub record_flush: Duration,
    /// How often the calls' inactivity deadlines are checked (the error of an `Inactive` report).
    pub housekeeping: Duration,
    /// How long a key sent with `SendDigit` is held.
    pub digit_duration: Duration,
    /// Pause between two queued digits.
    pub digit_gap: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            bridge: BridgeConfig::default(),
            record_flush: Duration::from_millis(500),
            housekeeping: Duration::from_millis(100),
            digit_duration: Duration::from_millis(100),
            digit_gap: Duration::from_millis(60),
        }
    }
}

/// The shell's RTP ports. Ids are small integers the shell chooses (its socket slab index); the
/// engine hands them back in [`Outgoing::socket`] and [`Forward::socket`].
pub trait Sockets {
    /// Binds `port` on the media address for the leg (and, if it can, `port + 1` for RTCP, which the
    /// shell reads and drops itself). The error is reported to the call core as it is.
    fn open(&mut self, call: CallKey, leg: Leg, port: u16) -> Result<u32, MediaFailure>;
    /// Closes the leg's ports.
    fn close(&mut self, socket: u32);
}

/// One packet the engine sends: `header` then `payload`, on `socket`, to `dst`.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub socket: u32,
    pub dst: SocketAddr,
    pub header: &'a [u8],
    pub payload: &'a [u8],
    /// When the packet was due (pacer packets: for the send-lateness measurement).
    pub due: Option<Instant>,
}

/// A relayed datagram: send `buf[..len]` (rewritten in place) on `socket` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub socket: u32,
    pub dst: SocketAddr,
    pub len: usize,
}

/// Work for the recording writer, in order per recording.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordingOp {
    /// Create the file and write the WAV header.
    Start { id: u64, call: CallKey, path: PathBuf },
    /// Append 16-bit little-endian stereo samples.
    Data { id: u64, bytes: Vec<u8> },
    /// Patch the header's sizes, close the file, report `Recorded`.
    End { id: u64, call: CallKey, path: PathBuf },
}

/// Counters since the last [`Engine::take_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Datagrams handed to `on_datagram`.
    pub rtp_in: u64,
    /// Datagrams relayed to the other leg.
    pub relayed: u64,
    /// Datagrams refused as not valid RTP from the leg (malformed, unexpected payload type, RTCP on the
    /// RTP port, a stray source, a late packet of a replaced stream).
    pub invalid: u64,
    /// Packets of the pacer handed out for sending.
    pub pacer_sent: u64,
    /// Telephone-event packets sent (`SendDigit`).
    pub dtmf_sent: u64,
    /// Packets of the mixer sent (legs hearing a `Mix`).
    pub mixed: u64,
    /// Digits received.
    pub digits_in: u64,
}

/// A `Then` of a digit: what the leg hears again after it.
#[derive(Debug)]
enum Then {
    Nothing,
    Relay,
    Play { playlist: Vec<Arc<Prompt>>, looped: bool, barge_in: bool, item: usize, frame: usize },
    Mix { from: LegSet },
}

/// A leg hearing a mix: whom it hears, and its stream (`next`: the next packet's SSRC and sequence
/// number, and the timestamp a packet at `next.at` has).
#[derive(Debug)]
struct MixPlay {
    from: LegSet,
    next: Continuation,
    marker: bool,
}

#[derive(Debug)]
struct PacerPlay {
    stream: StreamId,
    ssrc: u32,
    playlist: Vec<Arc<Prompt>>,
    looped: bool,
    barge_in: bool,
}

#[derive(Debug)]
struct DigitJob {
    sender: DtmfSender,
    next: Option<DtmfPacket>,
    start: Instant,
    ssrc: u32,
    then: Then,
}

#[derive(Debug)]
enum Hears {
    Nothing(Continuation),
    Pacer(PacerPlay),
    Relay,
    Mix(MixPlay),
    Digit(Box<DigitJob>),
}

impl Hears {
    /// The legs this leg hears mixed (now, or after its digit).
    fn mixes(&self) -> Option<LegSet> {
        match self {
            Hears::Mix(m) => Some(m.from),
            Hears::Digit(j) => match &j.then {
                Then::Mix { from } => Some(*from),
                _ => None,
            },
            _ => None,
        }
    }

    fn mixes_mut(&mut self) -> Option<&mut LegSet> {
        match self {
            Hears::Mix(m) => Some(&mut m.from),
            Hears::Digit(j) => match &mut j.then {
                Then::Mix { from } => Some(from),
                _ => None,
            },
            _ => None,
        }
    }
}

#[derive(Debug)]
struct LegSide {
    socket: u32,
    hears: Hears,
    dtmf: DtmfReceiver,
    queued_digits: VecDeque<char>,
}

#[derive(Debug)]
struct Recording {
    id: u64,
    path: PathBuf,
    rec: StereoRecorder,
}

/// The mixer of a call with a leg hearing a mix, and its slot in the engine's [`MixClock`].
#[derive(Debug)]
struct CallMix {
    mixer: Box<Mixer>,
    slot: u8,
}

#[derive(Debug)]
struct CallMedia {
    /// By [`Leg::index`]: A, B, C, D.
    legs: [Option<LegSide>; 4],
    bridge: Bridge,
    recording: Option<Recording>,
    /// While some leg hears a mix (or will after its digit).
    mix: Option<CallMix>,
}

impl CallMedia {
    /// Whether the caller hears the supervisor (barge): only then is the supervisor recorded.
    fn caller_hears(&self, leg: Leg) -> bool {
        self.legs[li(Leg::A)].as_ref().and_then(|s| s.hears.mixes()).is_some_and(|m| m.contains(leg))
    }
}

fn li(leg: Leg) -> usize {
    leg.index()
}

/// Where a leg's audio goes in the recording: the caller left; agent, consulted party and supervisor
/// summed on the right.
fn rec_place(leg: Leg) -> (Channel, usize) {
    match leg {
        Leg::A => (Channel::Left, 0),
        Leg::B => (Channel::Right, 0),
        Leg::C => (Channel::Right, 1),
        Leg::D => (Channel::Right, 2),
    }
}

const PTIME: Duration = Duration::from_millis(PTIME_MS as u64);

/// Samples at 8 kHz in `d` (wrapping, as RTP timestamps do).
fn samples(d: Duration) -> u32 {
    (d.as_micros() * CLOCK_RATE as u128 / 1_000_000) as u32
}

/// The timestamp of a stream continued from `c` at `now`.
fn ts_at(c: &Continuation, now: Instant) -> u32 {
    c.ts.wrapping_add(samples(now.saturating_duration_since(c.at)))
}

/// Where no packet goes: the pacer keeps timing a stream that must not be sent (no address yet, or a
/// direction that does not send) and the engine drops its packets.
const NOWHERE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Makes a leg's negotiated media usable by the bridge: an unusable telephone-event payload type is
/// dropped (digits then come only by SIP INFO), an unusable audio payload type falls back to the
/// codec's static one, and a ptime outside 1-200 ms to 20 ms. The SDP module does not produce these;
/// this keeps the engine total.
fn sanitize(mut m: LegMedia) -> LegMedia {
    let usable = |pt: u8| pt < 64 || (96..128).contains(&pt);
    if !usable(m.audio_pt) {
        tracing::warn!(pt = m.audio_pt, "unusable audio payload type, using the static one");
        m.audio_pt = m.codec.payload_type();
    }
    if let Some(pt) = m.dtmf_pt {
        if !usable(pt) || pt == super::bridge::PT_COMFORT_NOISE || pt == m.audio_pt {
            tracing::warn!(pt, "unusable telephone-event payload type, ignored");
            m.dtmf_pt = None;
        }
    }
    if !(1..=200).contains(&m.ptime_ms) {
        m.ptime_ms = PTIME_MS;
    }
    m
}

/// The stand-in for a leg that is not open.
fn placeholder(m: LegMedia) -> LegMedia {
    LegMedia { remote: None, ..m }
}

/// Where the pacer's stream toward `leg` goes now.
fn pacer_dst(bridge: &Bridge, leg: Leg) -> SocketAddr {
    if bridge.direction(leg).sends() {
        bridge.send_addr(leg).unwrap_or(NOWHERE)
    } else {
        NOWHERE
    }
}

/// The media engine of one thread. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    prompts: Arc<PromptSet>,
    pacer: Pacer,
    rng: Rng,
    calls: IdMap<CallKey, CallMedia>,
    /// (call, leg) by RTP socket id.
    by_socket: Vec<Option<(CallKey, Leg)>>,
    /// Sockets whose leg's DTMF receiver is inside a key press (it has a deadline).
    pressing: Vec<u32>,
    /// Sockets whose leg is sending a digit.
    digits: Vec<u32>,
    /// When each mixing call's next frame is due.
    clock: MixClock,
    /// The calls due in one `handle_timeout` (kept to reuse its memory).
    due: Vec<Due>,
    events: VecDeque<MediaEvent>,
    rec_ops: VecDeque<RecordingOp>,
    next_rec_id: u64,
    next_housekeeping: Instant,
    next_record_flush: Instant,
    stats: EngineStats,
}

impl Engine {
    /// An engine whose clock starts at `now`; `seed` draws the RTP identities of placeholder legs.
    pub fn new(now: Instant, config: EngineConfig, prompts: Arc<PromptSet>, seed: u64) -> Engine {
        Engine {
            config,
            prompts,
            pacer: Pacer::with_capacity(now, 1024),
            rng: Rng::seeded(seed),
            calls: IdMap::default(),
            by_socket: Vec::new(),
            pressing: Vec::new(),
            digits: Vec::new(),
            clock: MixClock::new(now),
            due: Vec::new(),
            events: VecDeque::with_capacity(64),
            rec_ops: VecDeque::new(),
            next_rec_id: 1,
            next_housekeeping: now + config.housekeeping,
            next_record_flush: now + config.record_flush,
            stats: EngineStats::default(),
        }
    }

    /// Calls with at least one open leg or a recording.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Streams the pacer is timing.
    pub fn streams(&self) -> usize {
        self.pacer.len()
    }

    /// Calls holding a mixer (some leg hears a mix).
    pub fn mixers(&self) -> usize {
        self.calls.values().filter(|c| c.mix.is_some()).count()
    }

    /// Calls on the mixing schedule (equal to [`Engine::mixers`]).
    pub fn mixing_scheduled(&self) -> usize {
        self.clock.len()
    }

    pub fn pacer_stats(&self) -> super::pacer::PacerStats {
        self.pacer.stats()
    }

    /// The counters since the last call, reset.
    pub fn take_stats(&mut self) -> EngineStats {
        std::mem::take(&mut self.stats)
    }

    /// The next report for the call core.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// The next piece of work for the recording writer.
    pub fn poll_recording(&mut self) -> Option<RecordingOp> {
        self.rec_ops.pop_front()
    }

    fn fail(&mut self, call: CallKey, failure: MediaFailure) {
        tracing::debug!(call, %failure, "media command failed");
        self.events.push_back(MediaEvent::Failed { call, failure });
    }

    /// Carries out one command at `now`.
    pub fn command(&mut self, now: Instant, cmd: MediaCommand, sockets: &mut impl Sockets) {
        let call = command_call(&cmd);
        self.carry_out(now, cmd, sockets);
        self.sync_mix(now, call);
    }

    fn carry_out(&mut self, now: Instant, cmd: MediaCommand, sockets: &mut impl Sockets) {
        match cmd {
            MediaCommand::Open { call, leg, local_port, media, direction, ssrc, seq, ts } => {
                self.open(now, call, leg, local_port, sanitize(media), direction, Continuation { ssrc, seq, ts, at: now }, sockets)
            }
            MediaCommand::Play { call, leg, playlist, looped, barge_in } => {
                let list = match self.prompts.playlist(&playlist) {
                    Ok(l) => l,
                    Err(e) => {
                        let name = match e {
                            MediaError::UnknownPrompt { name } => name,
                            other => other.to_string(),
                        };
                        return self.fail(call, MediaFailure::UnknownPrompt { name });
                    }
                };
                self.play(now, call, leg, list, looped, barge_in)
            }
            MediaCommand::Relay { call, to_leg } => self.relay(now, call, to_leg),
            MediaCommand::Update { call, leg, media, direction } => self.update(now, call, leg, sanitize(media), direction),
            MediaCommand::SendDigit { call, leg, digit } => self.send_digit(now, call, leg, digit),
            MediaCommand::Record { call, path } => self.record(now, call, path),
            MediaCommand::CloseLeg { call, leg } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    if c.legs[li(leg)].is_some() {
                        close_leg(now, call, c, leg, &mut self.pacer, &mut self.by_socket, sockets);
                        self.pressing.retain(|s| self.by_socket.get(*s as usize).is_some_and(Option::is_some));
                        self.digits.retain(|s| self.by_socket.get(*s as usize).is_some_and(Option::is_some));
                        return;
                    }
                }
                self.fail(call, MediaFailure::NoLeg { leg })
            }
            MediaCommand::Stop { call } => self.stop(now, call, sockets),
            MediaCommand::Mix { call, to_leg, from } => self.mix(now, call, to_leg, LegSet::of(&from)),
            MediaCommand::Rebind { call, from, to } => self.rebind(now, call, from, to),
        }
    }

    /// After a command: the call has a mixer and is on the clock exactly while a leg hears a mix, and
    /// the mixer buffers exactly the legs some mix uses.
    fn sync_mix(&mut self, now: Instant, call: CallKey) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let mut mixing = false;
        let mut wanted = LegSet::EMPTY;
        for side in c.legs.iter().flatten() {
            if let Some(from) = side.hears.mixes() {
                mixing = true;
                wanted = wanted.union(from);
            }
        }
        match (mixing, c.mix.is_some()) {
            (true, false) => {
                let slot = self.clock.add(now, call);
                c.mix = Some(CallMix { mixer: Mixer::new(), slot });
            }
            (false, true) => {
                if let Some(m) = c.mix.take() {
                    self.clock.remove(call, m.slot);
                }
            }
            _ => {}
        }
        if let Some(m) = c.mix.as_mut() {
            m.mixer.set_inputs(wanted);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        now: Instant,
        call: CallKey,
        leg: Leg,
        port: u16,
        media: LegMedia,
        direction: Direction,
        cont: Continuation,
        sockets: &mut impl Sockets,
    ) {
        if let Some(c) = self.calls.get_mut(&call) {
            if c.legs[li(leg)].is_some() {
                tracing::warn!(call, %leg, "Open of a leg that is open: the old port is closed first");
                close_leg(now, call, c, leg, &mut self.pacer, &mut self.by_socket, sockets);
                self.pressing.retain(|s| self.by_socket.get(*s as usize).is_some_and(Option::is_some));
                self.digits.retain(|s| self.by_socket.get(*s as usize).is_some_and(Option::is_some));
            }
        }
        let socket = match sockets.open(call, leg, port) {
            Ok(s) => s,
            Err(f) => return self.fail(call, f),
        };
        if !self.calls.contains_key(&call) {
            // Every leg a stand-in until it opens (no address, inactive: neither sent to nor watched).
            let absent = LegConfig { media: placeholder(media), direction: Direction::Inactive, heard: None };
            let mut bridge = match Bridge::new(now, self.config.bridge, absent, absent, &mut self.rng) {
                Ok(b) => b,
                Err(e) => {
                    // Unreachable after `sanitize`; never leave a socket behind.
                    tracing::error!(call, error = %e, "media of the leg refused");
                    sockets.close(socket);
                    return;
                }
            };
            bridge.suspend_relay(Leg::A, now);
            bridge.suspend_relay(Leg::B, now);
            self.calls.insert(call, CallMedia { legs: [None, None, None, None], bridge, recording: None, mix: None });
        }
        let c = self.calls.get_mut(&call).expect("inserted above");
        // A stand-in until now: it takes the leg's media (a new address releases any latch).
        let _ = c.bridge.update_media(leg, media);
        c.bridge.set_direction(now, leg, direction);
        if c.bridge.is_relaying(leg) {
            c.bridge.suspend_relay(leg, now);
        }
        c.legs[li(leg)] = Some(LegSide {
            socket,
            hears: Hears::Nothing(cont),
            dtmf: DtmfReceiver::new(),
            queued_digits: VecDeque::new(),
        });
        let i = socket as usize;
        if self.by_socket.len() <= i {
            self.by_socket.resize(i + 1, None);
        }
        self.by_socket[i] = Some((call, leg));
    }

    fn play(&mut self, now: Instant, call: CallKey, leg: Leg, list: Vec<Arc<Prompt>>, looped: bool, barge_in: bool) {
        let Some(c) = self.calls.get_mut(&call) else { return self.fail(call, MediaFailure::NoLeg { leg }) };
        let Some(side) = c.legs[li(leg)].as_mut() else { return self.fail(call, MediaFailure::NoLeg { leg }) };
        match &mut side.hears {
            Hears::Pacer(p) => {
                self.pacer.replace_playlist(p.stream, list.clone(), looped);
                p.playlist = list;
                p.looped = looped;
                p.barge_in = barge_in;
            }
            Hears::Digit(job) => job.then = Then::Play { playlist: list, looped, barge_in, item: 0, frame: 0 },
            Hears::Nothing(_) | Hears::Relay | Hears::Mix(_) => {
                let cont = take_stream(now, &mut c.bridge, leg, side, &mut self.pacer);
                side.hears = start_play(now, &c.bridge, leg, side.socket, cont, list, looped, barge_in, (0, 0), &mut self.pacer);
            }
        }
    }

    fn relay(&mut self, now: Instant, call: CallKey, to_leg: Leg) {
        if !to_leg.relayed() {
            // The relay is A ⇄ B only; C and D hear mixes.
            return self.fail(call, MediaFailure::NoLeg { leg: to_leg });
        }
        let Some(c) = self.calls.get_mut(&call) else { return self.fail(call, MediaFailure::NoLeg { leg: to_leg }) };
        if c.legs[li(to_leg.other())].is_none() {
            return self.fail(call, MediaFailure::NoLeg { leg: to_leg.other() });
        }
        let Some(side) = c.legs[li(to_leg)].as_mut() else { return self.fail(call, MediaFailure::NoLeg { leg: to_leg }) };
        match &mut side.hears {
            Hears::Relay => {}
            Hears::Digit(job) => job.then = Then::Relay,
            Hears::Nothing(_) | Hears::Pacer(_) | Hears::Mix(_) => {
                let cont = take_stream(now, &mut c.bridge, to_leg, side, &mut self.pacer);
                c.bridge.resume_relay(to_leg, cont);
                side.hears = Hears::Relay;
            }
        }
    }

    fn mix(&mut self, now: Instant, call: CallKey, to_leg: Leg, from: LegSet) {
        let Some(c) = self.calls.get_mut(&call) else { return self.fail(call, MediaFailure::NoLeg { leg: to_leg }) };
        let Some(side) = c.legs[li(to_leg)].as_mut() else { return self.fail(call, MediaFailure::NoLeg { leg: to_leg }) };
        let from = from.without(to_leg);
        match &mut side.hears {
            Hears::Mix(m) => m.from = from,
            Hears::Digit(job) => job.then = Then::Mix { from },
            Hears::Nothing(_) | Hears::Pacer(_) | Hears::Relay => {
                let cont = take_stream(now, &mut c.bridge, to_leg, side, &mut self.pacer);
                side.hears = Hears::Mix(MixPlay { from, next: cont, marker: true });
            }
        }
    }

    fn rebind(&mut self, now: Instant, call: CallKey, from: Leg, to: Leg) {
        let Some(c) = self.calls.get_mut(&call) else { return self.fail(call, MediaFailure::NoLeg { leg: from }) };
        if from == to || c.legs[li(to)].is_some() {
            tracing::warn!(call, %from, %to, "Rebind onto a leg that is open: refused");
            return self.fail(call, MediaFailure::NoLeg { leg: from });
        }
        let Some(mut side) = c.legs[li(from)].take() else { return self.fail(call, MediaFailure::NoLeg { leg: from }) };
        // A relay names its pair (A ⇄ B): under a new name the leg hears nothing until told again.
        match &mut side.hears {
            Hears::Relay => {
                take_stream(now, &mut c.bridge, from, &mut side, &mut self.pacer);
            }
            Hears::Digit(job) if matches!(job.then, Then::Relay) => job.then = Then::Nothing,
            _ => {}
        }
        c.bridge.rebind(now, from, to);
        if let Some(slot) = self.by_socket.get_mut(side.socket as usize) {
            *slot = Some((call, to));
        }
        c.legs[li(to)] = Some(side);
        // Mix memberships follow the leg; a leg never hears itself.
        for leg in Leg::ALL {
            if let Some(set) = c.legs[li(leg)].as_mut().and_then(|s| s.hears.mixes_mut()) {
                *set = set.renamed(from, to).without(leg);
            }
        }
        if let Some(m) = c.mix.as_mut() {
            m.mixer.rebind(from, to);
        }
        tracing::trace!(call, %from, %to, "leg rebound");
    }

    fn update(&mut self, now: Instant, call: CallKey, leg: Leg, media: LegMedia, direction: Direction) {
        let Some(c) = self.calls.get_mut(&call) else { return self.fail(call, MediaFailure::NoLeg { leg }) };
        let Some(side) = c.legs[li(leg)].as_mut() else { return self.fail(call, MediaFailure::NoLeg { leg }) };
        let old = *c.bridge.media(leg);
        if let Err(e) = c.bridge.update_media(leg, media) {
            tracing::warn!(call, %leg, error = %e, "re-INVITE media refused");
        }
        c.bridge.set_direction(now, leg, direction);
        if let Hears::Pacer(p) = &side.hears {
            let new = *c.bridge.media(leg);
            if new.codec != old.codec || new.audio_pt != old.audio_pt {
                // The pacer's stream is built for one law: continue it in a new one, same position.
                let (list, looped, barge_in) = (p.playlist.clone(), p.looped, p.barge_in);
                let pos = self.pacer.position(p.stream);
                let cont = take_stream(now, &mut c.bridge, leg, side, &mut self.pacer);
                let at = pos.map_or((0, 0), |p| (p.item, p.frame));
                side.hears = start_play(now, &c.bridge, leg, side.socket, cont, list, looped, barge_in, at, &mut self.pacer);
            }
        }
        refresh_dst(c, leg, &mut self.pacer);
    }

    fn send_digit(&mut self, now: Instant, call: CallKey, leg: Leg, digit: char) {
        let Some(c) = self.calls.get_mut(&call) else { return self.fail(call, MediaFailure::NoLeg { leg }) };
        let Some(side) = c.legs[li(leg)].as_mut() else { return self.fail(call, MediaFailure::NoLeg { leg }) };
        let Some(pt) = c.bridge.media(leg).dtmf_pt else {
            tracing::warn!(call, %leg, "SendDigit toward a leg without telephone-event: not sent");
            return;
        };
        if event_from_digit(digit).is_none() {
            tracing::warn!(call, %leg, "SendDigit of a character that is not a DTMF key: not sent");
            return;
        }
        if let Hears::Digit(_) = side.hears {
            side.queued_digits.push_back(digit);
            return;
        }
        let then = match &side.hears {
            Hears::Nothing(_) => Then::Nothing,
            Hears::Relay => Then::Relay,
            Hears::Mix(m) => Then::Mix { from: m.from },
            Hears::Pacer(p) => {
                let pos = self.pacer.position(p.stream);
                Then::Play {
                    playlist: p.playlist.clone(),
                    looped: p.looped,
                    barge_in: p.barge_in,
                    item: pos.map_or(0, |p| p.item),
                    frame: pos.map_or(0, |p| p.frame),
                }
            }
            Hears::Digit(_) => unreachable!("handled above"),
        };
        let cont = take_stream(now, &mut c.bridge, leg, side, &mut self.pacer);
        match digit_job(now, digit, self.config.digit_duration, pt, cont, then) {
            Some(job) => {
                side.hears = Hears::Digit(Box::new(job));
                if !self.digits.contains(&side.socket) {
                    self.digits.push(side.socket);
                }
            }
            None => side.hears = Hears::Nothing(cont),
        }
    }

    fn record(&mut self, now: Instant, call: CallKey, path: PathBuf) {
        let Some(c) = self.calls.get_mut(&call) else {
            let kind = std::io::ErrorKind::NotFound;
            return self.fail(call, MediaFailure::Recording { path, kind });
        };
        if c.recording.is_some() {
            tracing::warn!(call, "Record of a call that is being recorded: ignored");
            return;
        }
        let id = self.next_rec_id;
        self.next_rec_id += 1;
        self.rec_ops.push_back(RecordingOp::Start { id, call, path: path.clone() });
        c.recording = Some(Recording { id, path, rec: StereoRecorder::new(now) });
    }

    fn stop(&mut self, now: Instant, call: CallKey, sockets: &mut impl Sockets) {
        let Some(mut c) = self.calls.remove(&call) else { return };
        if let Some(m) = c.mix.take() {
            self.clock.remove(call, m.slot);
        }
        for leg in Leg::ALL {
            if c.legs[li(leg)].is_some() {
                close_leg(now, call, &mut c, leg, &mut self.pacer, &mut self.by_socket, sockets);
            }
        }
        self.pressing.retain(|s| self.by_socket.get(*s as usize).is_some_and(Option::is_some));
        self.digits.retain(|s| self.by_socket.get(*s as usize).is_some_and(Option::is_some));
        if let Some(mut r) = c.recording.take() {
            let mut bytes = Vec::new();
            r.rec.finish(&mut bytes);
            if !bytes.is_empty() {
                self.rec_ops.push_back(RecordingOp::Data { id: r.id, bytes });
            }
            self.rec_ops.push_back(RecordingOp::End { id: r.id, call, path: r.path });
        }
    }

    /// Stops every call (the thread is ending): recordings are finished.
    pub fn shutdown(&mut self, now: Instant, sockets: &mut impl Sockets) {
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        for k in keys {
            self.stop(now, k, sockets);
        }
    }

    /// One datagram that arrived at `now` on RTP socket `socket` from `src`, in `buf[..len]`. Returns
    /// the relayed packet to send (rewritten in place in `buf`), if any. Never panics, never allocates.
    pub fn on_datagram(&mut self, now: Instant, socket: u32, src: SocketAddr, buf: &mut [u8], len: usize) -> Option<Forward> {
        self.stats.rtp_in += 1;
        let (key, from) = (*self.by_socket.get(socket as usize)?)?;
        let c = self.calls.get_mut(&key)?;
        let len = len.min(buf.len());
        let header = RtpHeader::parse(&buf[..len]).ok();
        let verdict = c.bridge.on_packet(now, from, src, buf, len);
        // accepted: valid RTP from the leg's source (it latched and keeps the leg alive); stale: not to be
        // recorded (a late packet of a replaced stream, or a leg we do not receive from).
        let (accepted, stale) = match verdict {
            Verdict::Forward { .. } => (true, false),
            Verdict::Drop(d) => match d.reason {
                DropReason::BadLength { .. }
                | DropReason::Rtcp { .. }
                | DropReason::Malformed(_)
                | DropReason::UnexpectedPayloadType { .. }
                | DropReason::UnconfirmedSource { .. } => {
                    self.stats.invalid += 1;
                    (false, true)
                }
                DropReason::OldSsrc { .. } | DropReason::BeforeRebase { .. } => {
                    self.stats.invalid += 1;
                    (true, true)
                }
                DropReason::Direction { sending: false, .. } => (true, true),
                _ => (true, false),
            },
        };
        let mut forward = None;
        if let Verdict::Forward { to_leg, dst, len } = verdict {
            if let Some(to) = &c.legs[li(to_leg)] {
                forward = Some(Forward { socket: to.socket, dst, len });
                self.stats.relayed += 1;
            }
        }
        if let (true, Some(h)) = (accepted, header) {
            let fm = *c.bridge.media(from);
            // On Forward the payload moved to offset 12 (telephone-event untouched, audio in the other law).
            let (payload, codec) = match verdict {
                Verdict::Forward { to_leg, len, .. } => (&buf[HEADER_LEN..len], c.bridge.media(to_leg).codec),
                Verdict::Drop(_) => (h.payload(&buf[..len]), fm.codec),
            };
            if Some(h.payload_type) == fm.dtmf_pt {
                if let Some(side) = c.legs[li(from)].as_mut() {
                    let _ = side.dtmf.handle_packet(now, &h, payload);
                    let pressed = side.dtmf.in_press();
                    let mut any = pressed;
                    while let Some(ev) = side.dtmf.poll_event() {
                        any = true;
                        self.stats.digits_in += 1;
                        self.events.push_back(MediaEvent::Digit { call: key, leg: from, digit: ev.digit });
                    }
                    if any {
                        barge_in(now, c, from, &mut self.pacer);
                    }
                    if pressed && !self.pressing.contains(&socket) {
                        self.pressing.push(socket);
                    }
                }
            } else if h.payload_type == fm.audio_pt && !stale {
                if let Some(m) = c.mix.as_mut() {
                    m.mixer.push(from, h.ssrc, h.seq, codec, payload);
                }
                if c.recording.is_some() && (from != Leg::D || c.caller_hears(Leg::D)) {
                    let (ch, source) = rec_place(from);
                    if let Some(r) = c.recording.as_mut() {
                        r.rec.push_source(now, ch, source, codec, payload);
                    }
                }
            }
        }
        drain_bridge(key, c, &mut self.pacer, &mut self.events);
        forward
    }

    /// When [`Engine::handle_timeout`] is due next (may be in the past: call it at once).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.pacer.poll_timeout();
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for &s in &self.digits {
            min(self.leg(s).and_then(|l| match &l.hears {
                Hears::Digit(j) => j.next.map(|p| j.start + p.offset),
                _ => None,
            }));
        }
        for &s in &self.pressing {
            min(self.leg(s).and_then(|l| l.dtmf.poll_timeout()));
        }
        min(self.clock.poll_timeout());
        if !self.calls.is_empty() {
            min(Some(self.next_housekeeping.min(self.next_record_flush)));
        }
        t
    }

    fn leg(&self, socket: u32) -> Option<&LegSide> {
        let (k, leg) = (*self.by_socket.get(socket as usize)?)?;
        self.calls.get(&k)?.legs[li(leg)].as_ref()
    }

    /// Emits through `out` every packet due at or before `now` (prompts, music, digits), ends key
    /// presses whose end packets never came, and checks inactivity and recordings when due.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl FnMut(Outgoing<'_>)) {
        let mut sent = 0;
        self.pacer.handle_timeout(now, &mut |pkt| {
            if pkt.dst.port() == 0 {
                return;
            }
            sent += 1;
            out(Outgoing { socket: pkt.socket, dst: pkt.dst, header: &pkt.header, payload: pkt.payload, due: now.checked_sub(pkt.lateness) });
        });
        self.stats.pacer_sent += sent;
        while let Some(PacerEvent::Finished { id, user, end }) = self.pacer.poll_event() {
            let Some(Some((key, leg))) = self.by_socket.get(user as usize).copied() else { continue };
            let Some(side) = self.calls.get_mut(&key).and_then(|c| c.legs[li(leg)].as_mut()) else { continue };
            if let Hears::Pacer(p) = &side.hears {
                if p.stream == id {
                    side.hears = Hears::Nothing(Continuation { ssrc: p.ssrc, seq: end.seq, ts: end.ts, at: now });
                    self.events.push_back(MediaEvent::Finished { call: key, leg });
                }
            }
        }
        if !self.clock.is_empty() {
            self.send_mixes(now, out);
        }
        if !self.digits.is_empty() {
            self.send_digits(now, out);
        }
        if !self.pressing.is_empty() {
            let pressing = std::mem::take(&mut self.pressing);
            for s in pressing {
                let Some(Some((key, leg))) = self.by_socket.get(s as usize).copied() else { continue };
                let Some(c) = self.calls.get_mut(&key) else { continue };
                let Some(side) = c.legs[li(leg)].as_mut() else { continue };
                side.dtmf.handle_timeout(now);
                while let Some(ev) = side.dtmf.poll_event() {
                    self.stats.digits_in += 1;
                    self.events.push_back(MediaEvent::Digit { call: key, leg, digit: ev.digit });
                }
                if side.dtmf.in_press() {
                    self.pressing.push(s);
                }
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + self.config.housekeeping;
            for (&key, c) in self.calls.iter_mut() {
                if c.bridge.poll_timeout().is_some_and(|t| t <= now) {
                    c.bridge.handle_timeout(now);
                    drain_bridge(key, c, &mut self.pacer, &mut self.events);
                }
            }
        }
        if now >= self.next_record_flush {
            self.next_record_flush = now + self.config.record_flush;
            for c in self.calls.values_mut() {
                if let Some(r) = c.recording.as_mut() {
                    let mut bytes = Vec::new();
                    r.rec.drain(now, &mut bytes);
                    if !bytes.is_empty() {
                        self.rec_ops.push_back(RecordingOp::Data { id: r.id, bytes });
                    }
                }
            }
        }
    }

    /// Every mixing call whose frame is due: one frame out of each input, one packet to each leg
    /// hearing a mix (at most [`MAX_BURST`] frames per call after a stall; the older ones are skipped,
    /// their time passing in the timestamps).
    fn send_mixes(&mut self, now: Instant, out: &mut impl FnMut(Outgoing<'_>)) {
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.clock.due(now, &mut due);
        for d in &due {
            let Some(c) = self.calls.get_mut(&d.key) else { continue };
            let Some(cm) = c.mix.as_mut() else { continue };
            for k in d.owed.saturating_sub(MAX_BURST)..d.owed {
                let at = self.clock.instant_of(d.tick + k * u64::from(PTIME_MS));
                cm.mixer.advance();
                for leg in Leg::ALL {
                    let Some(side) = c.legs[li(leg)].as_mut() else { continue };
                    let Hears::Mix(m) = &mut side.hears else { continue };
                    let media = c.bridge.media(leg);
                    let dst = pacer_dst(&c.bridge, leg);
                    let ts = ts_at(&m.next, at);
                    let step = ts.wrapping_add(FRAME_SAMPLES as u32);
                    if dst.port() == 0 {
                        // Muted (no address yet, or not ours to send): time passes, the sequence does not.
                        m.marker = true;
                        m.next = Continuation { ts: step, at: at + PTIME, ..m.next };
                        continue;
                    }
                    let mut payload = [0u8; FRAME_SAMPLES];
                    cm.mixer.mix(leg, m.from, media.codec, &mut payload);
                    let mut header = [0u8; HEADER_LEN];
                    write_header(&mut header, media.audio_pt, m.marker, m.next.seq, ts, m.next.ssrc);
                    out(Outgoing { socket: side.socket, dst, header: &header, payload: &payload, due: Some(at) });
                    self.stats.mixed += 1;
                    m.marker = false;
                    m.next = Continuation { ssrc: m.next.ssrc, seq: m.next.seq.wrapping_add(1), ts: step, at: at + PTIME };
                }
            }
        }
        self.due = due;
    }

    fn send_digits(&mut self, now: Instant, out: &mut impl FnMut(Outgoing<'_>)) {
        let digits = std::mem::take(&mut self.digits);
        for s in digits {
            let Some(Some((key, leg))) = self.by_socket.get(s as usize).copied() else { continue };
            let Some(c) = self.calls.get_mut(&key) else { continue };
            let dst = pacer_dst(&c.bridge, leg);
            let Some(side) = c.legs[li(leg)].as_mut() else { continue };
            let Hears::Digit(job) = &mut side.hears else { continue };
            while let Some(p) = job.next.filter(|p| job.start + p.offset <= now) {
                if dst.port() != 0 {
                    let h = p.header();
                    out(Outgoing { socket: s, dst, header: &h, payload: &p.payload, due: None });
                    self.stats.dtmf_sent += 1;
                }
                job.next = job.sender.next();
            }
            if job.next.is_some() {
                self.digits.push(s);
                continue;
            }
            // The digit is out: continue the stream after its end.
            let cont = Continuation {
                ssrc: job.ssrc,
                seq: job.sender.next_seq(),
                ts: job.sender.end_timestamp(),
                at: job.start + self.config.digit_duration,
            };
            if let Some(d) = side.queued_digits.pop_front() {
                let then = std::mem::replace(&mut job.then, Then::Nothing);
                let pt = c.bridge.media(leg).dtmf_pt;
                match pt.and_then(|pt| digit_job(now + self.config.digit_gap, d, self.config.digit_duration, pt, cont, then)) {
                    Some(j) => {
                        side.hears = Hears::Digit(Box::new(j));
                        self.digits.push(s);
                        continue;
                    }
                    None => side.hears = Hears::Nothing(cont),
                }
                continue;
            }
            let Hears::Digit(job) = std::mem::replace(&mut side.hears, Hears::Nothing(cont)) else { unreachable!() };
            match job.then {
                Then::Nothing => {}
                Then::Relay => {
                    if leg.relayed() && c.legs[li(leg.other())].is_some() {
                        c.bridge.resume_relay(leg, cont);
                        if let Some(side) = c.legs[li(leg)].as_mut() {
                            side.hears = Hears::Relay;
                        }
                    }
                }
                Then::Play { playlist, looped, barge_in, item, frame } => {
                    let side = c.legs[li(leg)].as_mut().expect("checked above");
                    side.hears = start_play(now, &c.bridge, leg, s, cont, playlist, looped, barge_in, (item, frame), &mut self.pacer);
                }
                Then::Mix { from } => {
                    if let Some(side) = c.legs[li(leg)].as_mut() {
                        side.hears = Hears::Mix(MixPlay { from, next: cont, marker: true });
                    }
                }
            }
        }
    }
}

/// Stops whatever writes the stream toward `leg` and returns where the next writer continues.
fn take_stream(now: Instant, bridge: &mut Bridge, leg: Leg, side: &mut LegSide, pacer: &mut Pacer) -> Continuation {
    match &side.hears {
        Hears::Nothing(c) => *c,
        Hears::Pacer(p) => {
            let cont = match pacer.position(p.stream) {
                Some(pos) => Continuation { ssrc: p.ssrc, seq: pos.seq, ts: pos.ts, at: now },
                None => bridge.suspend_relay(leg, now),
            };
            pacer.remove(p.stream);
            side.hears = Hears::Nothing(cont);
            cont
        }
        Hears::Relay => {
            let cont = bridge.suspend_relay(leg, now);
            side.hears = Hears::Nothing(cont);
            cont
        }
        Hears::Mix(m) => {
            let cont = m.next;
            side.hears = Hears::Nothing(cont);
            cont
        }
        Hears::Digit(j) => {
            // Mid-digit (only when the leg closes): the stream continues after the packets sent so far.
            Continuation { ssrc: j.ssrc, seq: j.sender.next_seq(), ts: j.sender.end_timestamp(), at: now }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn start_play(
    now: Instant,
    bridge: &Bridge,
    leg: Leg,
    socket: u32,
    cont: Continuation,
    playlist: Vec<Arc<Prompt>>,
    looped: bool,
    barge_in: bool,
    (item, frame): (usize, usize),
    pacer: &mut Pacer,
) -> Hears {
    let m = bridge.media(leg);
    let spec = StreamSpec {
        dst: pacer_dst(bridge, leg),
        socket,
        codec: m.codec,
        pt: m.audio_pt,
        ssrc: cont.ssrc,
        seq: cont.seq,
        ts: ts_at(&cont, now),
        playlist: playlist.clone(),
        looped,
        user: socket as u64,
    };
    let stream = pacer.add(now, spec);
    if (item, frame) != (0, 0) {
        pacer.seek(stream, item, frame);
    }
    Hears::Pacer(PacerPlay { stream, ssrc: cont.ssrc, playlist, looped, barge_in })
}

fn digit_job(start: Instant, digit: char, duration: Duration, pt: u8, cont: Continuation, then: Then) -> Option<DigitJob> {
    let mut sender = DtmfSender::new(digit, duration, pt, cont.ssrc, cont.seq, ts_at(&cont, start)).ok()?;
    let next = sender.next();
    Some(DigitJob { sender, next, start, ssrc: cont.ssrc, then })
}

/// A key went down on `leg`: a barge-in playlist toward it stops.
fn barge_in(now: Instant, c: &mut CallMedia, leg: Leg, pacer: &mut Pacer) {
    let Some(side) = c.legs[li(leg)].as_mut() else { return };
    match &mut side.hears {
        Hears::Pacer(p) if p.barge_in => {
            take_stream(now, &mut c.bridge, leg, side, pacer);
        }
        Hears::Digit(j) => {
            if matches!(j.then, Then::Play { barge_in: true, .. }) {
                j.then = Then::Nothing;
            }
        }
        _ => {}
    }
}

fn refresh_dst(c: &mut CallMedia, leg: Leg, pacer: &mut Pacer) {
    if let Some(LegSide { hears: Hears::Pacer(p), .. }) = &c.legs[li(leg)] {
        pacer.set_destination(p.stream, pacer_dst(&c.bridge, leg));
    }
}

fn drain_bridge(key: CallKey, c: &mut CallMedia, pacer: &mut Pacer, events: &mut VecDeque<MediaEvent>) {
    while let Some(ev) = c.bridge.poll_event() {
        match ev {
            BridgeEvent::Latched { leg, addr } | BridgeEvent::Relatched { leg, to: addr, .. } => {
                refresh_dst(c, leg, pacer);
                events.push_back(MediaEvent::Latched { call: key, leg, addr });
            }
            BridgeEvent::Inactive { leg, .. } => {
                if c.legs[li(leg)].is_some() {
                    events.push_back(MediaEvent::Inactive { call: key, leg });
                }
            }
        }
    }
}

fn close_leg(
    now: Instant,
    call: CallKey,
    c: &mut CallMedia,
    leg: Leg,
    pacer: &mut Pacer,
    by_socket: &mut [Option<(CallKey, Leg)>],
    sockets: &mut impl Sockets,
) {
    let Some(mut side) = c.legs[li(leg)].take() else { return };
    take_stream(now, &mut c.bridge, leg, &mut side, pacer);
    if let Some(m) = c.mix.as_mut() {
        m.mixer.clear(leg);
    }
    if c.bridge.is_relaying(leg) {
        c.bridge.suspend_relay(leg, now);
    }
    c.bridge.set_direction(now, leg, Direction::Inactive);
    let _ = c.bridge.update_media(leg, placeholder(*c.bridge.media(leg)));
    if let Some(slot) = by_socket.get_mut(side.socket as usize) {
        *slot = None;
    }
    sockets.close(side.socket);
    tracing::trace!(call, %leg, "leg closed");
}

fn command_call(cmd: &MediaCommand) -> CallKey {
    match cmd {
        MediaCommand::Open { call, .. }
        | MediaCommand::Play { call, .. }
        | MediaCommand::Relay { call, .. }
        | MediaCommand::Mix { call, .. }
        | MediaCommand::Rebind { call, .. }
        | MediaCommand::Update { call, .. }
        | MediaCommand::SendDigit { call, .. }
        | MediaCommand::Record { call, .. }
        | MediaCommand::CloseLeg { call, .. }
        | MediaCommand::Stop { call } => *call,
    }
}

#[cfg(test)]
mod tests;
