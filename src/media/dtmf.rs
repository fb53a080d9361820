//! DTMF: RFC 4733 telephone-events in and out, and SIP INFO bodies (`application/dtmf-relay`,
//! `application/dtmf`). No I/O and no clock: time comes in as `now`.
//!
//! # The telephone-event payload (RFC 4733 §2.3)
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Events 0-15 are the DTMF keys `0`-`9`, `*`, `#`, `A`-`D` ([`digit_from_event`]). One key press is one
//! *event*: every packet of it carries the RTP timestamp of the moment the key went down, and `duration`
//! (in timestamp units, 8000 per second) grows from packet to packet. The last packet has the E bit and is
//! sent three times. A payload may pack several consecutive events (§2.5.1.5); each then starts at the
//! RTP timestamp plus the durations of the events before it in the packet.
//!
//! # Receiving: [`DtmfReceiver`]
//!
//! The shell (or the bridge) hands every packet of the negotiated telephone-event payload type to
//! [`DtmfReceiver::handle_packet`]; digits come out of [`DtmfReceiver::poll_event`], exactly one per key
//! press, when the press is over. A press is identified by (SSRC, RTP timestamp, event code):
//!
//! - the three end packets and any duplicated or retransmitted packet of a press that is over do not emit
//!   again (the last few finished presses are remembered, and a packet older than the newest press is
//!   stale);
//! - a press whose first packets were lost but whose end packet arrives emits once, at the end packet;
//! - a press whose end packets were all lost emits when the next press starts, or when no packet of it has
//!   come for [`END_TIMEOUT`] (ask [`DtmfReceiver::poll_timeout`], then call
//!   [`DtmfReceiver::handle_timeout`]);
//! - packets of a press arriving out of order only ever lengthen it (the longest duration seen counts);
//! - two presses of the same key are two events (their timestamps differ);
//! - a press longer than the 16-bit duration (8.19 s) arrives in segments (§2.5.1.3): a packet of the same
//!   key without marker whose timestamp is the previous segment's start plus its (near-maximal) duration
//!   continues the press instead of starting a new one.
//!
//! ```text
//!                      packet of a new press, E=0
//!   ┌──────┐ ─────────────────────────────────────────▶ ┌─────────┐ ◀─┐ packet of this press, E=0:
//!   │ Idle │                                            │ InPress │ ──┘ duration = max(seen)
//!   └──────┘ ◀───────────────────────────────────────── └─────────┘
//!    ▲    │   packet of this press with E=1: emit         ▲     │ packet of another press (other
//!    │    │   no packet for END_TIMEOUT: emit             │     │ timestamp, event code or SSRC), E=0:
//!    └────┘                                               └─────┘ emit this press; the new one is in
//!   packet of a new press with E=1 (its start                     press (with E=1: emit both → Idle)
//!   was lost): emit at once
//!
//!   Every emitted press is remembered (the last 8); their packets and packets older than the newest
//!   press are counted and dropped in any state.
//! ```
//!
//! The digit's [`DtmfEvent::at`] is when the press was first seen here (key down as observed), and
//! [`DtmfEvent::duration_ms`] the longest duration any of its packets reported.
//!
//! Nothing allocates per packet: the state is a fixed array, and the output queue is allocated once.
//!
//! # Sending: [`DtmfSender`]
//!
//! An iterator over the packets of one key press, each stamped with the offset from the first packet at
//! which the shell must send it (every 20 ms): the first packet with the marker bit, updates with a growing
//! duration, and the final duration with the E bit three times. All carry the timestamp of the key down;
//! the sequence number increases on every packet. While a digit is sent, the leg's audio should pause, and
//! continue afterwards at [`DtmfSender::next_seq`] and [`DtmfSender::end_timestamp`].
//!
//! # SIP INFO: [`parse_dtmf_relay`]
//!
//! `application/dtmf-relay` bodies (`Signal=5\r\nDuration=160`) and `application/dtmf` bodies (a bare
//! `5`) into a digit and a duration in milliseconds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::rtp::{write_header, RtpHeader, HEADER_LEN};
use super::{CLOCK_RATE, FRAME_SAMPLES, PTIME_MS};

/// Bytes of one event in a telephone-event payload.
pub const EVENT_LEN: usize = 4;
/// A press with no packet for this long (and no end packet) is over.
pub const END_TIMEOUT: Duration = Duration::from_millis(200);
/// How many times the sender sends the final (E bit) packet (RFC 4733 §2.5.1.4).
pub const END_PACKETS: u32 = 3;
/// Longest digit [`DtmfSender`] sends: the 16-bit duration field at 8000 Hz.
pub const MAX_DURATION_MS: u32 = 0xFFFF * 1000 / CLOCK_RATE;
/// Duration given to a SIP INFO digit whose body has no `Duration` line.
pub const DEFAULT_INFO_DURATION_MS: u32 = 100;
/// Volume the sender writes (−10 dBm0, a typical DTMF level).
pub const DEFAULT_VOLUME: u8 = 10;

/// Finished presses remembered for duplicate suppression.
const RECENT: usize = 8;
/// Digits held for `poll_event` before the oldest is dropped (only if the caller never drains them).
const QUEUE: usize = 16;
/// A packet at most this far (in timestamp units) before the newest press is stale; further back, the
/// sender's timestamps are taken to have jumped (a restarted stream) and it starts a new press.
const STALE_WINDOW: u32 = CLOCK_RATE * 60;
/// A segment reporting at least this duration may be continued by a next segment (RFC 4733 §2.5.1.3).
const LONG_SEGMENT_MIN: u16 = 0xFFFF - 8 * FRAME_SAMPLES as u16;

/// The DTMF key of a telephone-event code: 0-9 → `'0'`-`'9'`, 10 → `'*'`, 11 → `'#'`, 12-15 → `'A'`-`'D'`;
/// other events (flash, tones) are not keys.
pub fn digit_from_event(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The telephone-event code of a DTMF key (`a`-`d` accepted for `A`-`D`).
pub fn event_from_digit(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// Why DTMF input (an event payload, a SIP INFO body) or a request to send a digit was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    #[error("telephone-event payload is {len} bytes, expected 4 bytes per event (RFC 4733 §2.3)")]
    EventPayloadLength { len: usize },
    #[error("{found:?} is not a DTMF key (expected 0-9, *, #, A-D)")]
    NotADigit { found: char },
    #[error("DTMF duration of {ms} ms is out of range (expected 1 to {max} ms)", max = MAX_DURATION_MS)]
    DurationOutOfRange { ms: u128 },
    #[error("DTMF INFO body is empty (expected \"Signal=5\" lines or a bare key)")]
    EmptyBody,
    #[error("dtmf-relay body has no Signal line (expected e.g. \"Signal=5\\r\\nDuration=160\")")]
    MissingSignal,
    #[error("DTMF signal {found:?} is not a key (expected 0-9, *, #, A-D, or an event code 0-15)")]
    BadSignal { found: String },
    #[error("dtmf-relay Duration {found:?} is not a whole number of milliseconds")]
    BadDuration { found: String },
}

/// One event of a telephone-event payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-15 are DTMF keys).
    pub event: u8,
    /// E bit: this is the final packet of the event.
    pub end: bool,
    /// 0-63: the power level, in −dBm0.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event of `payload`. Never panics.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(DtmfError::EventPayloadLength { len: payload.len() }),
        }
    }

    /// The 4 payload bytes (R bit zero).
    pub fn to_bytes(self) -> [u8; EVENT_LEN] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (self.volume & 0x3F) | if self.end { 0x80 } else { 0 },
            d[0],
            d[1],
        ]
    }
}

/// A key press, reported once when it is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfEvent {
    /// `0`-`9`, `*`, `#`, `A`-`D`.
    pub digit: char,
    /// How long the key was held, as the sender reported it.
    pub duration_ms: u32,
    /// When the first packet of the press arrived here.
    pub at: Instant,
}

/// Counters since the receiver was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DtmfStats {
    /// Packets handed in (including refused ones).
    pub packets: u64,
    /// Key presses emitted.
    pub digits: u64,
    /// Packets of a press already emitted (repeated end packets, duplicates, late retransmissions).
    pub repeats: u64,
    /// Packets older than the newest press (reordered across presses).
    pub stale: u64,
    /// Presses emitted without their end packet (next press or timeout).
    pub without_end: u64,
    /// Finished events that are not DTMF keys (codes above 15): tracked, never emitted.
    pub other_events: u64,
    /// Packets refused with an error.
    pub malformed: u64,
    /// Digits dropped because `poll_event` was not called.
    pub dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    ssrc: u32,
    ts: u32,
    event: u8,
}

#[derive(Clone, Copy, Debug)]
struct Press {
    key: Key,
    first_at: Instant,
    last_at: Instant,
    /// Timestamp units of the segments before the current one (long presses only).
    base: u32,
    /// Longest duration seen in the current segment.
    seg: u16,
}

/// RFC 4733 receiver: telephone-event packets in, one [`DtmfEvent`] per key press out. See the module
/// documentation for the rules and the state diagram.
///
/// After every [`handle_packet`](Self::handle_packet) and [`handle_timeout`](Self::handle_timeout), drain
/// [`poll_event`](Self::poll_event); then wait until [`poll_timeout`](Self::poll_timeout) (if any).
#[derive(Debug)]
pub struct DtmfReceiver {
    end_timeout: Duration,
    current: Option<Press>,
    /// (SSRC, timestamp) of the newest press started.
    newest: Option<(u32, u32)>,
    finished: [Option<Key>; RECENT],
    next_finished: usize,
    out: VecDeque<DtmfEvent>,
    stats: DtmfStats,
}

impl Default for DtmfReceiver {
    fn default() -> Self {
        DtmfReceiver::new()
    }
}

/// True if timestamp `a` is before `b` by at most `window` (RFC 3550 serial arithmetic).
fn ts_before(a: u32, b: u32, window: u32) -> bool {
    let d = b.wrapping_sub(a);
    d != 0 && d < 0x8000_0000 && d <= window
}

impl DtmfReceiver {
    pub fn new() -> DtmfReceiver {
        DtmfReceiver::with_end_timeout(END_TIMEOUT)
    }

    /// A receiver that ends a press without end packet after `end_timeout` without packets.
    pub fn with_end_timeout(end_timeout: Duration) -> DtmfReceiver {
        DtmfReceiver {
            end_timeout,
            current: None,
            newest: None,
            finished: [None; RECENT],
            next_finished: 0,
            out: VecDeque::with_capacity(QUEUE),
            stats: DtmfStats::default(),
        }
    }

    /// One telephone-event packet: its parsed header and its payload (`header.payload(packet)`). The
    /// payload type is not checked (the caller routes the negotiated one here). A payload that is not a
    /// whole number of 4-byte events is refused and changes nothing.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        header: &RtpHeader,
        payload: &[u8],
    ) -> Result<(), DtmfError> {
        self.stats.packets += 1;
        if payload.is_empty() || !payload.len().is_multiple_of(EVENT_LEN) {
            self.stats.malformed += 1;
            return Err(DtmfError::EventPayloadLength { len: payload.len() });
        }
        let mut ts = header.timestamp;
        let mut marker = header.marker;
        for chunk in payload.chunks_exact(EVENT_LEN) {
            let ev = TelephoneEvent::parse(chunk)?;
            self.on_event(now, header.ssrc, ts, marker, ev);
            // A packed event starts where the one before it ended (RFC 4733 §2.5.1.5).
            ts = ts.wrapping_add(ev.duration as u32);
            marker = false;
        }
        Ok(())
    }

    fn on_event(&mut self, now: Instant, ssrc: u32, ts: u32, marker: bool, ev: TelephoneEvent) {
        let key = Key {
            ssrc,
            ts,
            event: ev.event,
        };
        if let Some(p) = self.current.as_mut() {
            if p.key == key {
                p.seg = p.seg.max(ev.duration);
                p.last_at = now;
                if ev.end {
                    self.finish(true);
                }
                return;
            }
            let d = ts.wrapping_sub(p.key.ts);
            if p.key.ssrc == ssrc
                && p.key.event == ev.event
                && !marker
                && p.seg >= LONG_SEGMENT_MIN
                && d >= p.seg as u32
                && d <= 0xFFFF
            {
                // The next segment of a long press.
                p.base = p.base.saturating_add(d);
                p.key.ts = ts;
                p.seg = ev.duration;
                p.last_at = now;
                self.newest = Some((ssrc, ts));
                if ev.end {
                    self.finish(true);
                }
                return;
            }
        }
        if self.finished.contains(&Some(key)) {
            self.stats.repeats += 1;
            return;
        }
        if let Some((nssrc, nts)) = self.newest {
            if nssrc == ssrc && ts_before(ts, nts, STALE_WINDOW) {
                self.stats.stale += 1;
                return;
            }
        }
        if self.current.is_some() {
            self.finish(false);
        }
        self.current = Some(Press {
            key,
            first_at: now,
            last_at: now,
            base: 0,
            seg: ev.duration,
        });
        self.newest = Some((ssrc, ts));
        if ev.end {
            self.finish(true);
        }
    }

    /// Ends the current press and emits its digit.
    fn finish(&mut self, with_end: bool) {
        let Some(p) = self.current.take() else {
            return;
        };
        self.finished[self.next_finished] = Some(p.key);
        self.next_finished = (self.next_finished + 1) % RECENT;
        if !with_end {
            self.stats.without_end += 1;
        }
        let Some(digit) = digit_from_event(p.key.event) else {
            self.stats.other_events += 1;
            return;
        };
        let ticks = p.base as u64 + p.seg as u64;
        let duration_ms = (ticks * 1000 / CLOCK_RATE as u64).min(u32::MAX as u64) as u32;
        if self.out.len() == QUEUE {
            self.out.pop_front();
            self.stats.dropped += 1;
        }
        self.out.push_back(DtmfEvent {
            digit,
            duration_ms,
            at: p.first_at,
        });
        self.stats.digits += 1;
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called: the instant a press without end
    /// packet is given up on. `None` when no press is in progress.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.map(|p| p.last_at + self.end_timeout)
    }

    /// Ends a press that has had no packet for the end timeout (and emits its digit).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.poll_timeout() {
            if now >= deadline {
                self.finish(false);
            }
        }
    }

    /// The next finished key press, oldest first.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.out.pop_front()
    }

    /// True while a key press is in progress (key down, not yet emitted).
    pub fn in_press(&self) -> bool {
        self.current.is_some()
    }

    pub fn stats(&self) -> DtmfStats {
        self.stats
    }
}

/// One telephone-event packet to send, `offset` after the first one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfPacket {
    /// When to send it, counted from the first packet of the digit (a multiple of 20 ms).
    pub offset: Duration,
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: [u8; EVENT_LEN],
}

impl DtmfPacket {
    /// The 12-byte RTP header.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        write_header(
            &mut h,
            self.pt,
            self.marker,
            self.seq,
            self.timestamp,
            self.ssrc,
        );
        h
    }

    /// The whole datagram: header then payload.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN + EVENT_LEN] {
        let mut b = [0u8; HEADER_LEN + EVENT_LEN];
        let (h, p) = b.split_at_mut(HEADER_LEN);
        h.copy_from_slice(&self.header());
        p.copy_from_slice(&self.payload);
        b
    }

    /// The payload, parsed.
    pub fn event(&self) -> TelephoneEvent {
        let [event, flags, d0, d1] = self.payload;
        TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        }
    }
}

/// RFC 4733 sender for one key press: an iterator over its packets, in sending order.
///
/// ```text
///   offset   0 ms   20 ms  ...  (n-1)·20 ms        n·20 ms   (n+1)·20 ms
///           marker  update      E, full duration   E again   E again      n = ⌈duration / 20 ms⌉
///           dur 160 dur 320     dur = duration·8
/// ```
/// All packets carry timestamp `ts` (the key down); `seq` increases by one per packet. Nothing is
/// allocated: each packet is built by value.
#[derive(Clone, Debug)]
pub struct DtmfSender {
    event: u8,
    volume: u8,
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// Full duration in timestamp units.
    total: u16,
    /// Packets carrying a new duration (the last of them is the first end packet).
    updates: u32,
    /// Packets produced so far.
    index: u32,
}

impl DtmfSender {
    /// The packets of `digit` held for `duration` (rounded down to whole milliseconds; 1 ms to
    /// [`MAX_DURATION_MS`]), with payload type `pt`, starting at sequence number `seq` and timestamp `ts`
    /// (the sending leg's current ones).
    pub fn new(
        digit: char,
        duration: Duration,
        pt: u8,
        ssrc: u32,
        seq: u16,
        ts: u32,
    ) -> Result<DtmfSender, DtmfError> {
        let event = event_from_digit(digit).ok_or(DtmfError::NotADigit { found: digit })?;
        let ms = duration.as_millis();
        if ms == 0 || ms > MAX_DURATION_MS as u128 {
            return Err(DtmfError::DurationOutOfRange { ms });
        }
        let total = (ms as u32 * CLOCK_RATE / 1000) as u16;
        let updates = (total as u32).div_ceil(FRAME_SAMPLES as u32);
        Ok(DtmfSender {
            event,
            volume: DEFAULT_VOLUME,
            pt,
            ssrc,
            seq,
            ts,
            total,
            updates,
            index: 0,
        })
    }

    /// Sets the volume written in every packet (0-63, −dBm0; larger values are cut to 63).
    pub fn with_volume(mut self, volume: u8) -> DtmfSender {
        self.volume = volume.min(63);
        self
    }

    /// The sequence number after the last packet produced so far (after the whole iteration: the next
    /// packet of the leg).
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// The timestamp at which the leg's audio continues after the digit: `ts` plus its duration.
    pub fn end_timestamp(&self) -> u32 {
        self.ts.wrapping_add(self.total as u32)
    }

    /// Offset of the last packet from the first.
    pub fn span(&self) -> Duration {
        Duration::from_millis(PTIME_MS as u64 * (self.updates + END_PACKETS - 2) as u64)
    }
}

impl Iterator for DtmfSender {
    type Item = DtmfPacket;

    fn next(&mut self) -> Option<DtmfPacket> {
        let count = self.updates + END_PACKETS - 1;
        if self.index >= count {
            return None;
        }
        let i = self.index;
        let duration = ((i + 1) * FRAME_SAMPLES as u32).min(self.total as u32) as u16;
        let ev = TelephoneEvent {
            event: self.event,
            end: i + 1 >= self.updates,
            volume: self.volume,
            duration,
        };
        let pkt = DtmfPacket {
            offset: Duration::from_millis(PTIME_MS as u64 * i as u64),
            marker: i == 0,
            pt: self.pt,
            seq: self.seq,
            timestamp: self.ts,
            ssrc: self.ssrc,
            payload: ev.to_bytes(),
        };
        self.seq = self.seq.wrapping_add(1);
        self.index += 1;
        Some(pkt)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.updates + END_PACKETS - 1 - self.index.min(self.updates + END_PACKETS - 1))
            as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for DtmfSender {}

/// True for the SIP INFO content types [`parse_dtmf_relay`] reads: `application/dtmf-relay` and
/// `application/dtmf`, case-insensitive, parameters ignored.
pub fn is_dtmf_info_content_type(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or("").trim();
    base.eq_ignore_ascii_case("application/dtmf-relay")
        || base.eq_ignore_ascii_case("application/dtmf")
}

/// A SIP INFO DTMF body into (key, duration in ms).
///
/// - `application/dtmf-relay`: `Key=Value` lines; `Signal` (a key, or an event code 0-15) is required,
///   `Duration` (ms) is optional ([`DEFAULT_INFO_DURATION_MS`]); other lines are ignored. Keys and values
///   are case-insensitive and may be surrounded by spaces; lines end in CRLF or LF.
/// - `application/dtmf`: the body is the key alone (surrounding whitespace allowed).
///
/// A body with a `=` is read as dtmf-relay, otherwise as a bare key.
pub fn parse_dtmf_relay(body: &[u8]) -> Result<(char, u32), DtmfError> {
    let body = body.trim_ascii();
    if body.is_empty() {
        return Err(DtmfError::EmptyBody);
    }
    if !body.contains(&b'=') {
        return Ok((parse_signal(body)?, DEFAULT_INFO_DURATION_MS));
    }
    let mut signal = None;
    let mut duration = DEFAULT_INFO_DURATION_MS;
    for line in body.split(|&b| b == b'\n') {
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            continue;
        };
        let name = line[..eq].trim_ascii();
        let value = line[eq + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"signal") {
            signal = Some(parse_signal(value)?);
        } else if name.eq_ignore_ascii_case(b"duration") {
            duration = parse_u32(value).ok_or_else(|| DtmfError::BadDuration {
                found: shown(value),
            })?;
        }
    }
    signal
        .map(|s| (s, duration))
        .ok_or(DtmfError::MissingSignal)
}

fn parse_signal(v: &[u8]) -> Result<char, DtmfError> {
    let digit = match v {
        [b] => event_from_digit(*b as char).and_then(digit_from_event),
        _ => parse_u32(v)
            .and_then(|n| u8::try_from(n).ok())
            .and_then(digit_from_event),
    };
    digit.ok_or_else(|| DtmfError::BadSignal { found: shown(v) })
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u32, |n, &b| n * 10 + (b - b'0') as u32))
}

/// At most 32 bytes of `v`, for an error message.
fn shown(v: &[u8]) -> String {
    String::from_utf8_lossy(&v[..v.len().min(32)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PT: u8 = 101;
    const SSRC: u32 = 0x1234_5678;

    fn hdr(seq: u16, ts: u32, marker: bool) -> RtpHeader {
        RtpHeader {
            padding: false,
            extension: false,
            csrc_count: 0,
            marker,
            payload_type: PT,
            seq,
            timestamp: ts,
            ssrc: SSRC,
            extension_profile: None,
            payload_offset: HEADER_LEN,
            payload_len: EVENT_LEN,
        }
    }

    fn ev(event: u8, end: bool, duration: u16) -> [u8; 4] {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    fn ms(t0: Instant, m: u64) -> Instant {
        t0 + Duration::from_millis(m)
    }

    fn drain(rx: &mut DtmfReceiver) -> Vec<(char, u32)> {
        std::iter::from_fn(|| rx.poll_event())
            .map(|e| (e.digit, e.duration_ms))
            .collect()
    }

    /// A typical press of `event` at timestamp `ts`: start, updates every 20 ms, three end packets.
    /// Returns (arrival ms, header, payload) triples.
    fn press(
        event: u8,
        seq0: u16,
        ts: u32,
        at_ms: u64,
        updates: u16,
    ) -> Vec<(u64, RtpHeader, [u8; 4])> {
        let mut v = Vec::new();
        for i in 0..updates {
            v.push((
                at_ms + 20 * i as u64,
                hdr(seq0.wrapping_add(i), ts, i == 0),
                ev(event, false, 160 * (i + 1)),
            ));
        }
        for k in 0..3 {
            v.push((
                at_ms + 20 * (updates + k) as u64,
                hdr(seq0.wrapping_add(updates + k), ts, false),
                ev(event, true, 160 * (updates + 1)),
            ));
        }
        v
    }

    fn feed(rx: &mut DtmfReceiver, t0: Instant, pkts: &[(u64, RtpHeader, [u8; 4])]) {
        for (at, h, p) in pkts {
            rx.handle_timeout(ms(t0, *at));
            rx.handle_packet(ms(t0, *at), h, p).unwrap();
        }
    }

    #[test]
    fn event_codes_and_digits() {
        let keys = "0123456789*#ABCD";
        for (code, c) in keys.chars().enumerate() {
            assert_eq!(digit_from_event(code as u8), Some(c));
            assert_eq!(event_from_digit(c), Some(code as u8));
            assert_eq!(event_from_digit(c.to_ascii_lowercase()), Some(code as u8));
        }
        assert_eq!(digit_from_event(16), None);
        assert_eq!(digit_from_event(255), None);
        assert_eq!(event_from_digit('E'), None);
        assert_eq!(event_from_digit('x'), None);
    }

    #[test]
    fn payload_round_trip_and_short_payload() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 63,
            duration: 0x08C0,
        };
        assert_eq!(e.to_bytes(), [0x0B, 0xBF, 0x08, 0xC0]);
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()), Ok(e));
        // The R bit is ignored on receipt.
        assert_eq!(
            TelephoneEvent::parse(&[1, 0x40 | 10, 0, 160]).unwrap(),
            TelephoneEvent {
                event: 1,
                end: false,
                volume: 10,
                duration: 160
            }
        );
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::EventPayloadLength { len: 3 })
        );
    }

    #[test]
    fn one_press_one_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        feed(&mut rx, t0, &press(5, 100, 8000, 0, 5));
        assert_eq!(drain(&mut rx), vec![('5', 120)]);
        assert_eq!(
            rx.poll_timeout(),
            None,
            "nothing pending after the end packet"
        );
        let s = rx.stats();
        assert_eq!((s.digits, s.repeats, s.without_end), (1, 2, 0));
    }

    #[test]
    fn digit_is_emitted_at_the_first_end_packet_with_key_down_time() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let p = press(9, 1, 500, 40, 3);
        feed(&mut rx, t0, &p[..3]);
        assert_eq!(rx.poll_event(), None, "no digit while the key is held");
        assert!(rx.in_press());
        feed(&mut rx, t0, &p[3..4]);
        let e = rx.poll_event().unwrap();
        assert_eq!((e.digit, e.duration_ms, e.at), ('9', 80, ms(t0, 40)));
    }

    #[test]
    fn duplicated_packets_do_not_repeat_the_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let p = press(1, 10, 1000, 0, 4);
        let mut doubled = Vec::new();
        for x in &p {
            doubled.push(*x);
            doubled.push(*x);
        }
        feed(&mut rx, t0, &doubled);
        // The whole press again, later (a looping retransmitter).
        let replay: Vec<_> = p.iter().map(|(a, h, b)| (a + 500, *h, *b)).collect();
        feed(&mut rx, t0, &replay);
        assert_eq!(drain(&mut rx), vec![('1', 100)]);
    }

    #[test]
    fn lost_start_packets_still_give_one_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let p = press(3, 10, 1000, 0, 4);
        // Only the three end packets arrive.
        feed(&mut rx, t0, &p[4..]);
        assert_eq!(drain(&mut rx), vec![('3', 100)]);
        assert_eq!(rx.stats().repeats, 2);
    }

    #[test]
    fn lost_end_packets_emit_after_the_timeout() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let p = press(7, 10, 1000, 0, 4);
        feed(&mut rx, t0, &p[..4]); // last update at 60 ms, duration 640 = 80 ms
        assert_eq!(rx.poll_timeout(), Some(ms(t0, 60 + 200)));
        rx.handle_timeout(ms(t0, 259));
        assert_eq!(rx.poll_event(), None, "not before the deadline");
        rx.handle_timeout(ms(t0, 260));
        assert_eq!(drain(&mut rx), vec![('7', 80)]);
        assert_eq!(rx.poll_timeout(), None);
        assert_eq!(rx.stats().without_end, 1);
        // The end packets arriving very late emit nothing more.
        feed(
            &mut rx,
            t0,
            &p[4..]
                .iter()
                .map(|(a, h, b)| (a + 300, *h, *b))
                .collect::<Vec<_>>(),
        );
        assert_eq!(rx.poll_event(), None);
    }

    #[test]
    fn lost_end_packets_emit_when_the_next_press_starts() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let a = press(1, 10, 1000, 0, 4);
        let b = press(2, 20, 3000, 150, 4);
        feed(&mut rx, t0, &a[..4]);
        feed(&mut rx, t0, &b);
        assert_eq!(drain(&mut rx), vec![('1', 80), ('2', 100)]);
    }

    #[test]
    fn reordering_within_a_press() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let p = press(0, 10, 1000, 0, 4);
        // Order: update 2, start, update 4, update 3, end, end, update 1 (late), end.
        let order = [2, 0, 3, 2, 4, 5, 1, 6];
        let pkts: Vec<_> = order
            .iter()
            .enumerate()
            .map(|(k, &i)| (k as u64 * 20, p[i].1, p[i].2))
            .collect();
        feed(&mut rx, t0, &pkts);
        assert_eq!(drain(&mut rx), vec![('0', 100)]);
    }

    #[test]
    fn end_packet_before_the_updates_keeps_the_full_duration() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let p = press(4, 10, 1000, 0, 4);
        feed(&mut rx, t0, &[p[4], p[0], p[1], p[5]]);
        assert_eq!(drain(&mut rx), vec![('4', 100)]);
    }

    #[test]
    fn a_late_packet_of_an_older_press_is_stale() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let a = press(1, 10, 1000, 0, 4);
        let b = press(2, 20, 3000, 200, 4);
        // a's start is delayed until after b has begun; a's other packets were lost.
        feed(&mut rx, t0, &b[..2]);
        feed(&mut rx, t0, &[(250, a[0].1, a[0].2)]);
        feed(&mut rx, t0, &b[2..]);
        assert_eq!(drain(&mut rx), vec![('2', 100)]);
        assert_eq!(rx.stats().stale, 1);
    }

    #[test]
    fn the_same_key_twice_gives_two_digits() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        feed(&mut rx, t0, &press(5, 10, 1000, 0, 4));
        feed(&mut rx, t0, &press(5, 20, 3000, 250, 4));
        assert_eq!(drain(&mut rx), vec![('5', 100), ('5', 100)]);
        // Even when the first press lost its end packets.
        let mut rx = DtmfReceiver::new();
        feed(&mut rx, t0, &press(5, 10, 1000, 0, 4)[..4]);
        feed(&mut rx, t0, &press(5, 20, 2600, 100, 4)[1..]);
        assert_eq!(drain(&mut rx), vec![('5', 80), ('5', 100)]);
    }

    #[test]
    fn an_event_code_change_at_the_same_timestamp_is_a_new_press() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        rx.handle_packet(t0, &hdr(1, 1000, true), &ev(6, false, 160))
            .unwrap();
        rx.handle_packet(ms(t0, 20), &hdr(2, 1000, true), &ev(8, false, 160))
            .unwrap();
        rx.handle_packet(ms(t0, 40), &hdr(3, 1000, false), &ev(8, true, 320))
            .unwrap();
        assert_eq!(drain(&mut rx), vec![('6', 20), ('8', 40)]);
    }

    #[test]
    fn timestamps_wrap_around() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        feed(&mut rx, t0, &press(1, 65530, u32::MAX - 100, 0, 3));
        feed(&mut rx, t0, &press(2, 10, 2000, 200, 3));
        // A late packet of the first press, across the wrap: stale, not a new press.
        rx.handle_packet(
            ms(t0, 400),
            &hdr(65531, u32::MAX - 100, false),
            &ev(1, false, 320),
        )
        .unwrap();
        assert_eq!(drain(&mut rx), vec![('1', 80), ('2', 80)]);
    }

    #[test]
    fn a_new_ssrc_starts_afresh() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        feed(&mut rx, t0, &press(1, 10, 5000, 0, 3));
        let mut h = hdr(1, 100, true); // far older timestamp, but another source
        h.ssrc = 99;
        rx.handle_packet(ms(t0, 200), &h, &ev(2, true, 800))
            .unwrap();
        assert_eq!(drain(&mut rx), vec![('1', 80), ('2', 100)]);
    }

    #[test]
    fn non_key_events_are_tracked_but_not_emitted() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        // Flash (16), then a key.
        rx.handle_packet(t0, &hdr(1, 1000, true), &ev(16, false, 160))
            .unwrap();
        rx.handle_packet(ms(t0, 20), &hdr(2, 1000, false), &ev(16, true, 320))
            .unwrap();
        feed(&mut rx, t0, &press(2, 3, 2000, 100, 2));
        assert_eq!(drain(&mut rx), vec![('2', 60)]);
        assert_eq!(rx.stats().other_events, 1);
    }

    #[test]
    fn packed_events_in_one_payload() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        // '1' for 400 units then '2' for 800, in one packet (RFC 4733 §2.5.1.5).
        let mut payload = [0u8; 8];
        payload[..4].copy_from_slice(&ev(1, true, 400));
        payload[4..].copy_from_slice(&ev(2, true, 800));
        rx.handle_packet(t0, &hdr(1, 1000, true), &payload).unwrap();
        rx.handle_packet(ms(t0, 20), &hdr(2, 1000, false), &payload)
            .unwrap();
        assert_eq!(drain(&mut rx), vec![('1', 50), ('2', 100)]);
    }

    #[test]
    fn long_press_in_segments_is_one_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let mut t = 0;
        let mut seq = 0u16;
        // Segment 1: duration grows to 0xFFFF (the last packets of it E-less, as RFC 4733 §2.5.1.3
        // allows), then segment 2 at ts + 0xFFFF, ending at 8000 units.
        let mut d = 0u32;
        while d < 0xFFFF {
            d = (d + 160).min(0xFFFF);
            rx.handle_packet(ms(t0, t), &hdr(seq, 0, seq == 0), &ev(5, false, d as u16))
                .unwrap();
            seq += 1;
            t += 20;
        }
        for k in 1..=50u32 {
            let end = k == 50;
            rx.handle_packet(
                ms(t0, t),
                &hdr(seq, 0xFFFF, false),
                &ev(5, end, (160 * k) as u16),
            )
            .unwrap();
            seq += 1;
            t += 20;
        }
        assert_eq!(drain(&mut rx), vec![('5', (0xFFFF + 8000) * 1000 / 8000)]);
    }

    #[test]
    fn malformed_payloads_are_refused_without_changing_state() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        for len in [0usize, 1, 3, 5, 7] {
            assert_eq!(
                rx.handle_packet(t0, &hdr(1, 1, true), &[0u8; 8][..len]),
                Err(DtmfError::EventPayloadLength { len })
            );
        }
        assert!(!rx.in_press());
        assert_eq!(rx.stats().malformed, 5);
    }

    #[test]
    fn never_panics_on_arbitrary_payloads() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let mut x: u64 = 7;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        for i in 0..20_000u64 {
            let mut h = hdr(next() as u16, next() % 4000, next() % 2 == 0);
            h.ssrc = next() % 3;
            let len = (next() % 3 * 4) as usize;
            let p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = rx.handle_packet(ms(t0, i), &h, &p);
            rx.handle_timeout(ms(t0, i));
        }
        assert!(rx.stats().digits > 0);
    }

    #[test]
    fn sender_packet_sequence() {
        let tx = DtmfSender::new('#', Duration::from_millis(100), PT, SSRC, 65534, 42).unwrap();
        assert_eq!(tx.len(), 7);
        assert_eq!(tx.span(), Duration::from_millis(120));
        assert_eq!(tx.end_timestamp(), 842);
        let pkts: Vec<_> = tx.clone().collect();
        let summary: Vec<_> = pkts
            .iter()
            .map(|p| {
                let e = p.event();
                (p.offset.as_millis(), p.marker, p.seq, e.end, e.duration)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, true, 65534, false, 160),
                (20, false, 65535, false, 320),
                (40, false, 0, false, 480),
                (60, false, 1, false, 640),
                (80, false, 2, true, 800),
                (100, false, 3, true, 800),
                (120, false, 4, true, 800),
            ]
        );
        for p in &pkts {
            assert_eq!(
                (p.pt, p.ssrc, p.timestamp, p.payload[0]),
                (PT, SSRC, 42, 11)
            );
            let bytes = p.to_bytes();
            let h = RtpHeader::parse(&bytes).unwrap();
            assert_eq!(
                (h.seq, h.marker, h.payload(&bytes)),
                (p.seq, p.marker, &p.payload[..])
            );
        }
        let mut tx = tx;
        tx.by_ref().for_each(drop);
        assert_eq!(tx.next_seq(), 5);
        assert_eq!(tx.next(), None);
    }

    #[test]
    fn sender_short_and_odd_durations() {
        // 10 ms: one packet, both start and end, then two repeats.
        let v: Vec<_> = DtmfSender::new('1', Duration::from_millis(10), PT, 1, 0, 0)
            .unwrap()
            .collect();
        assert_eq!(v.len(), 3);
        assert!(v[0].marker && v.iter().all(|p| p.event().end && p.event().duration == 80));
        // 50 ms: durations 160, 320, then 400 three times.
        let v: Vec<_> = DtmfSender::new('1', Duration::from_millis(50), PT, 1, 0, 0)
            .unwrap()
            .collect();
        let d: Vec<_> = v
            .iter()
            .map(|p| (p.event().duration, p.event().end))
            .collect();
        assert_eq!(
            d,
            vec![
                (160, false),
                (320, false),
                (400, true),
                (400, true),
                (400, true)
            ]
        );
        assert_eq!(
            DtmfSender::new('x', Duration::from_millis(100), PT, 1, 0, 0).unwrap_err(),
            DtmfError::NotADigit { found: 'x' }
        );
        assert_eq!(
            DtmfSender::new('1', Duration::ZERO, PT, 1, 0, 0).unwrap_err(),
            DtmfError::DurationOutOfRange { ms: 0 }
        );
        assert_eq!(
            DtmfSender::new('1', Duration::from_secs(9), PT, 1, 0, 0).unwrap_err(),
            DtmfError::DurationOutOfRange { ms: 9000 }
        );
        let v: Vec<_> = DtmfSender::new(
            'D',
            Duration::from_millis(MAX_DURATION_MS as u64),
            PT,
            1,
            0,
            0,
        )
        .unwrap()
        .with_volume(200)
        .collect();
        assert_eq!(v.last().unwrap().event().duration, 65528);
        assert_eq!(v[0].event().volume, 63);
    }

    #[test]
    fn sender_to_receiver_round_trip_for_every_key() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new();
        let mut seq = 1000u16;
        let mut ts = 160_000u32;
        let mut at = 0u64;
        for c in "0123456789*#ABCD".chars() {
            let mut tx = DtmfSender::new(c, Duration::from_millis(160), PT, SSRC, seq, ts).unwrap();
            for p in tx.by_ref() {
                let bytes = p.to_bytes();
                let h = RtpHeader::parse(&bytes).unwrap();
                rx.handle_packet(
                    ms(t0, at + p.offset.as_millis() as u64),
                    &h,
                    h.payload(&bytes),
                )
                .unwrap();
            }
            seq = tx.next_seq();
            ts = tx.end_timestamp() + 800; // 100 ms of audio between keys
            at += 300;
            let e = rx.poll_event().expect("one digit per key");
            assert_eq!((e.digit, e.duration_ms), (c, 160));
            assert_eq!(rx.poll_event(), None);
        }
        assert_eq!(rx.stats().digits, 16);
    }

    #[test]
    fn info_dtmf_relay_bodies() {
        assert_eq!(
            parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n"),
            Ok(('5', 160))
        );
        assert_eq!(
            parse_dtmf_relay(b"signal = #\nduration = 250\n"),
            Ok(('#', 250))
        );
        assert_eq!(
            parse_dtmf_relay(b"SIGNAL=*"),
            Ok(('*', DEFAULT_INFO_DURATION_MS))
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal= a \r\nDuration= 80"),
            Ok(('A', 80))
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=11\r\nDuration=100"),
            Ok(('#', 100))
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=10"),
            Ok(('*', DEFAULT_INFO_DURATION_MS))
        );
        assert_eq!(
            parse_dtmf_relay(b"Duration=160\r\nSignal=9\r\nVolume=10\r\n\r\n"),
            Ok(('9', 160))
        );
        // application/dtmf: the bare key.
        assert_eq!(parse_dtmf_relay(b"7"), Ok(('7', DEFAULT_INFO_DURATION_MS)));
        assert_eq!(
            parse_dtmf_relay(b" #\r\n"),
            Ok(('#', DEFAULT_INFO_DURATION_MS))
        );
        assert_eq!(parse_dtmf_relay(b"11"), Ok(('#', DEFAULT_INFO_DURATION_MS)));
    }

    #[test]
    fn info_bodies_refused_with_what_came() {
        assert_eq!(parse_dtmf_relay(b" \r\n"), Err(DtmfError::EmptyBody));
        assert_eq!(
            parse_dtmf_relay(b"Duration=160"),
            Err(DtmfError::MissingSignal)
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=E\r\nDuration=160"),
            Err(DtmfError::BadSignal { found: "E".into() })
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=16"),
            Err(DtmfError::BadSignal { found: "16".into() })
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=\r\nDuration=160"),
            Err(DtmfError::BadSignal { found: "".into() })
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=1\r\nDuration=-5"),
            Err(DtmfError::BadDuration { found: "-5".into() })
        );
        assert_eq!(
            parse_dtmf_relay(b"Signal=1\r\nDuration=99999999999"),
            Err(DtmfError::BadDuration {
                found: "99999999999".into()
            })
        );
        assert_eq!(
            parse_dtmf_relay(b"hello"),
            Err(DtmfError::BadSignal {
                found: "hello".into()
            })
        );
        let e = parse_dtmf_relay(b"Signal=\xff\xfe").unwrap_err();
        assert!(e.to_string().contains("is not a key"), "{e}");
        assert_eq!(
            DtmfError::MissingSignal.to_string(),
            "dtmf-relay body has no Signal line (expected e.g. \"Signal=5\\r\\nDuration=160\")"
        );
    }

    #[test]
    fn info_content_types() {
        assert!(is_dtmf_info_content_type("application/dtmf-relay"));
        assert!(is_dtmf_info_content_type(
            "Application/DTMF-Relay; charset=utf-8"
        ));
        assert!(is_dtmf_info_content_type(" application/dtmf "));
        assert!(!is_dtmf_info_content_type("application/sdp"));
        assert!(!is_dtmf_info_content_type(""));
    }
}
