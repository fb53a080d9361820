//! The pacing engine: one sans-IO timer wheel that times every outgoing RTP stream of the edge.
//!
//! There is no task and no timer per call. All streams live in one slab; a ring of [`SLOTS`] slots of
//! 1 ms covers one 20 ms packet period, and each stream sits in the slot of its phase (the millisecond
//! within the period at which its packets are due). A tick visits only the slot that is due, so the work
//! per millisecond is proportional to the streams due in that millisecond, and streams added at random
//! times spread evenly over the period instead of all firing together.
//!
//! The shell drives it like every other sans-IO state machine in callgate:
//!
//! ```text
//!   loop {
//!       sleep_until(pacer.poll_timeout());             // next slot with streams in it
//!       pacer.handle_timeout(now, &mut |pkt| send(pkt)); // every packet due at or before `now`
//!       while let Some(ev) = pacer.poll_event() { ... }  // playlists that ran out
//!   }
//! ```
//!
//! Sending copies nothing and allocates nothing: the 12-byte header is written into the [`Packet`] by
//! value and the payload is a slice of the prompt's shared G.711 buffer.
//!
//! # Timing
//!
//! Time is counted in whole milliseconds ("ticks") from the `start` given to [`Pacer::new`]. A stream
//! added at `now` gets its first packet at the first tick at or after `now` (at most 1 ms later) and
//! then one packet every 20 ticks. `lateness` in a [`Packet`] is how long after its due instant it was
//! emitted, i.e. how late the shell called [`Pacer::handle_timeout`].
//!
//! # Catching up after a stall
//!
//! If `handle_timeout` comes more than a period late, a stream may owe several packets. It then sends at
//! most [`MAX_BURST`] of them, the most recent ones, back to back; the older frames are skipped: the
//! playlist position and the RTP timestamp advance over them (ts += 160 each, so the receiver sees the
//! gap in time) but the sequence number does not (seq counts packets sent, so no loss is signalled).
//! The announcement therefore stays in real time and ends when it would have ended. Skipped frames are
//! counted in [`PacerStats::skipped_frames`].
//!
//! # Muted streams
//!
//! A stream whose destination has port 0 (e.g. `0.0.0.0:0`: the peer gave no address yet, or its
//! direction does not let callgate send, as on hold) is *muted*: it keeps its timing, its playlist
//! position and its timestamps advance in real time, but nothing is emitted and its sequence number
//! does not advance (the receiver must not count the silence as loss). [`Pacer::set_destination`] to a
//! real address unmutes it; the first packet then carries the marker bit.
//!
//! # Stream lifecycle
//!
//! ```text
//!            add()                     every 20 ms: next frame
//!   ──────────────────▶ Playing ───────────────────────────────┐
//!                        │  ▲  │                               │
//!     replace_playlist() │  └──┘◀──────────────────────────────┘
//!                        │
//!        remove() ───────┤ playlist exhausted (not looped), at the tick its next frame would be due
//!                        ▼
//!                     Removed ── (exhausted only) ──▶ PacerEvent::Finished { id, user, end }
//! ```
//! A looped playlist (with at least one frame) never finishes. RTP: one SSRC per stream, consecutive
//! sequence numbers, timestamp +160 per frame, marker bit on the stream's first packet only; all of this
//! continues unchanged across the prompts of a playlist and across `replace_playlist`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::prompt::Prompt;
use super::rtp::{write_header, HEADER_LEN};
use super::{Codec, FRAME_SAMPLES, PTIME_MS};

/// Slots in the ring: one per millisecond of the 20 ms period.
pub const SLOTS: usize = PTIME_MS as usize;
const PERIOD: u64 = PTIME_MS as u64;
/// Most packets one stream sends in one `handle_timeout` call when it is behind.
pub const MAX_BURST: u64 = 3;

/// Handle of a stream. Generation-checked: a handle of a removed stream never reaches a newer stream that
/// reuses its slab entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamId {
    index: u32,
    gen: u32,
}

/// What to play, where, and with which RTP identity.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    pub dst: SocketAddr,
    /// Opaque id of the shell's RTP socket for this call.
    pub socket: u32,
    pub codec: Codec,
    pub pt: u8,
    pub ssrc: u32,
    /// Sequence number of the first packet.
    pub seq: u16,
    /// RTP timestamp of the first packet.
    pub ts: u32,
    /// Played in order.
    pub playlist: Vec<Arc<Prompt>>,
    /// Start again from the first prompt at the end (music on hold); never finishes.
    pub looped: bool,
    /// Opaque key the shell maps back to the call (returned in packets and events).
    pub user: u64,
}

/// One RTP packet to send now: `header` then `payload`.
#[derive(Debug)]
pub struct Packet<'a> {
    pub id: StreamId,
    pub user: u64,
    pub socket: u32,
    pub dst: SocketAddr,
    pub header: [u8; HEADER_LEN],
    /// 160 bytes of G.711 (20 ms), borrowed from the prompt.
    pub payload: &'a [u8],
    /// How long after its due instant the packet is emitted.
    pub lateness: Duration,
}

/// Reports for the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacerEvent {
    /// A non-looped playlist has been played out (20 ms after its last packet). The stream is removed;
    /// `end` is where it stood (the sequence number and timestamp its next packet would have had), so
    /// that whatever follows on the same RTP stream can continue it.
    Finished {
        id: StreamId,
        user: u64,
        end: StreamPosition,
    },
}

/// Counters since the pacer was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacerStats {
    pub packets: u64,
    pub skipped_frames: u64,
    /// Frames that passed while their stream was muted (see "Muted streams").
    pub muted_frames: u64,
    pub finished: u64,
    pub max_lateness: Duration,
}

/// Where a stream is (for continuing its RTP identity elsewhere, or for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPosition {
    /// Sequence number and timestamp of the next packet.
    pub seq: u16,
    pub ts: u32,
    /// Index of the playlist item and the frame within it that plays next.
    pub item: usize,
    pub frame: usize,
    /// Packets sent so far.
    pub sent: u64,
}

#[derive(Debug)]
struct Stream {
    dst: SocketAddr,
    socket: u32,
    codec: Codec,
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
    marker: bool,
    playlist: Vec<Arc<Prompt>>,
    total_frames: usize,
    looped: bool,
    user: u64,
    item: usize,
    frame: usize,
    sent: u64,
    /// Tick at which the next packet is due; `next_due % PERIOD == slot`.
    next_due: u64,
    slot: u8,
    /// Index of this stream in `ring[slot]`.
    slot_pos: u32,
}

impl Stream {
    /// Moves to the next frame that exists (over empty prompts, wrapping if looped). False when exhausted.
    #[inline]
    fn settle(&mut self) -> bool {
        loop {
            match self.playlist.get(self.item) {
                Some(p) if self.frame < p.frames() => return true,
                Some(_) => {
                    self.item += 1;
                    self.frame = 0;
                }
                None if self.looped && self.total_frames > 0 => {
                    self.item = 0;
                    self.frame = 0;
                }
                None => return false,
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    gen: u32,
    stream: Option<Stream>,
}

/// The millisecond clock of the engine's slot rings (the pacer's streams here, the mixer's calls in
/// [`crate::media::mixer::MixClock`]): tick `t` is `start + t` ms, a ring has one slot per millisecond
/// of the 20 ms period (slot `t % PERIOD`), and every tick below `processed` has been handled.
#[derive(Clone, Copy, Debug)]
pub struct SlotClock {
    start: Instant,
    processed: u64,
}

impl SlotClock {
    pub fn new(start: Instant) -> SlotClock {
        SlotClock { start, processed: 0 }
    }

    /// The instant of tick `tick`.
    pub fn instant_of(&self, tick: u64) -> Instant {
        self.start + Duration::from_millis(tick)
    }

    /// The first tick at or after `now` not handled yet: where a new entry's first frame is due.
    pub fn first_due(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.start);
        let ms = d.as_millis() as u64;
        (ms + u64::from(d > Duration::from_millis(ms))).max(self.processed)
    }

    /// The instant of the first unhandled tick (within one period) whose slot `busy` says holds
    /// something. May be in the past.
    pub fn next(&self, busy: impl Fn(usize) -> bool) -> Option<Instant> {
        (0..PERIOD)
            .map(|k| self.processed + k)
            .find(|t| busy((t % PERIOD) as usize))
            .map(|t| self.instant_of(t))
    }

    /// Marks every tick up to `now` handled. Returns `now`'s tick (whole milliseconds, rounded down)
    /// and the slots to visit, in time order (after a stall of a period or more, each slot once), or
    /// `None` when that tick was handled already.
    pub fn advance(&mut self, now: Instant) -> Option<(u64, impl Iterator<Item = usize>)> {
        let now_tick = now.saturating_duration_since(self.start).as_millis() as u64;
        if now_tick < self.processed {
            return None;
        }
        let first = self.processed;
        let ticks = (now_tick - first + 1).min(PERIOD);
        self.processed = now_tick + 1;
        Some((now_tick, (0..ticks).map(move |k| ((first + k) % PERIOD) as usize)))
    }
}

/// The pacing engine. See the module documentation.
#[derive(Debug)]
pub struct Pacer {
    clock: SlotClock,
    ring: [Vec<u32>; SLOTS],
    entries: Vec<Entry>,
    free: Vec<u32>,
    live: usize,
    events: VecDeque<PacerEvent>,
    stats: PacerStats,
}

fn total_frames(playlist: &[Arc<Prompt>]) -> usize {
    playlist.iter().map(|p| p.frames()).sum()
}

impl Pacer {
    pub fn new(start: Instant) -> Pacer {
        Pacer::with_capacity(start, 0)
    }

    /// Pre-allocates room for `streams` streams, so that adding them does not grow the slab.
    pub fn with_capacity(start: Instant, streams: usize) -> Pacer {
        let per_slot = streams.div_ceil(SLOTS) + streams.div_ceil(SLOTS * 4);
        Pacer {
            clock: SlotClock::new(start),
            ring: std::array::from_fn(|_| Vec::with_capacity(per_slot)),
            entries: Vec::with_capacity(streams),
            free: Vec::with_capacity(streams),
            live: 0,
            events: VecDeque::with_capacity(64),
            stats: PacerStats::default(),
        }
    }

    /// Starts a stream. Its first packet is due at the first tick at or after `now`.
    pub fn add(&mut self, now: Instant, spec: StreamSpec) -> StreamId {
        let next_due = self.clock.first_due(now);
        let slot = (next_due % PERIOD) as usize;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    gen: 0,
                    stream: None,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let total = total_frames(&spec.playlist);
        let entry = &mut self.entries[index as usize];
        entry.stream = Some(Stream {
            dst: spec.dst,
            socket: spec.socket,
            codec: spec.codec,
            pt: spec.pt,
            ssrc: spec.ssrc,
            seq: spec.seq,
            ts: spec.ts,
            marker: true,
            playlist: spec.playlist,
            total_frames: total,
            looped: spec.looped,
            user: spec.user,
            item: 0,
            frame: 0,
            sent: 0,
            next_due,
            slot: slot as u8,
            slot_pos: self.ring[slot].len() as u32,
        });
        self.ring[slot].push(index);
        self.live += 1;
        StreamId {
            index,
            gen: entry.gen,
        }
    }

    fn stream_mut(&mut self, id: StreamId) -> Option<&mut Stream> {
        let e = self.entries.get_mut(id.index as usize)?;
        if e.gen != id.gen {
            return None;
        }
        e.stream.as_mut()
    }

    fn stream(&self, id: StreamId) -> Option<&Stream> {
        let e = self.entries.get(id.index as usize)?;
        if e.gen != id.gen {
            return None;
        }
        e.stream.as_ref()
    }

    /// Takes the stream at `index` out of the ring and the slab.
    fn unlink(&mut self, index: u32) -> Stream {
        let entry = &mut self.entries[index as usize];
        let s = entry.stream.take().expect("unlink of a vacant entry");
        entry.gen = entry.gen.wrapping_add(1);
        let list = &mut self.ring[s.slot as usize];
        let pos = s.slot_pos as usize;
        list.swap_remove(pos);
        if let Some(&moved) = list.get(pos) {
            if let Some(m) = self.entries[moved as usize].stream.as_mut() {
                m.slot_pos = pos as u32;
            }
        }
        self.free.push(index);
        self.live -= 1;
        s
    }

    /// Stops a stream now (no event). False if `id` is not (or no longer) a live stream.
    pub fn remove(&mut self, id: StreamId) -> bool {
        if self.stream(id).is_none() {
            return false;
        }
        self.unlink(id.index);
        true
    }

    /// Replaces what a stream plays, from the first frame of `playlist`, keeping its timing, SSRC,
    /// sequence numbers and timestamps (no new marker). False if `id` is not live.
    pub fn replace_playlist(
        &mut self,
        id: StreamId,
        playlist: Vec<Arc<Prompt>>,
        looped: bool,
    ) -> bool {
        let Some(s) = self.stream_mut(id) else {
            return false;
        };
        s.total_frames = total_frames(&playlist);
        s.playlist = playlist;
        s.looped = looped;
        s.item = 0;
        s.frame = 0;
        true
    }

    /// Moves a stream's playlist position to frame `frame` of item `item` (e.g. to continue a playlist
    /// that was interrupted by a DTMF digit sent on the same RTP stream). A position past the end of an
    /// item moves on to the next one; past the end of the playlist the stream finishes (looped: starts
    /// again) at its next due tick. Timing and RTP identity are unchanged. False if `id` is not live.
    pub fn seek(&mut self, id: StreamId, item: usize, frame: usize) -> bool {
        let Some(s) = self.stream_mut(id) else {
            return false;
        };
        s.item = item;
        s.frame = frame;
        true
    }

    /// Changes where a stream's packets go (e.g. after a re-INVITE). False if `id` is not live.
    pub fn set_destination(&mut self, id: StreamId, dst: SocketAddr) -> bool {
        let Some(s) = self.stream_mut(id) else {
            return false;
        };
        s.dst = dst;
        true
    }

    pub fn contains(&self, id: StreamId) -> bool {
        self.stream(id).is_some()
    }

    pub fn position(&self, id: StreamId) -> Option<StreamPosition> {
        self.stream(id).map(|s| StreamPosition {
            seq: s.seq,
            ts: s.ts,
            item: s.item,
            frame: s.frame,
            sent: s.sent,
        })
    }

    /// When `handle_timeout` must next be called: the start of the next tick whose slot holds a stream.
    /// `None` when there are no streams. May be in the past (call at once).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.live == 0 {
            return None;
        }
        self.clock.next(|slot| !self.ring[slot].is_empty())
    }

    /// Emits, through `out`, every packet due at or before `now` (see "Catching up" in the module docs).
    /// Streams whose playlist is exhausted are removed and reported by [`Pacer::poll_event`].
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl FnMut(Packet<'_>)) {
        let Some((now_tick, slots)) = self.clock.advance(now) else { return };
        // Each due tick's slot in time order; after a stall of a period or more, each slot once.
        for slot in slots {
            self.visit_slot(slot, now, now_tick, out);
        }
    }

    fn visit_slot(
        &mut self,
        slot: usize,
        now: Instant,
        now_tick: u64,
        out: &mut impl FnMut(Packet<'_>),
    ) {
        let mut i = 0;
        while i < self.ring[slot].len() {
            let index = self.ring[slot][i];
            let gen = self.entries[index as usize].gen;
            let clock = self.clock;
            let s = self.entries[index as usize]
                .stream
                .as_mut()
                .expect("ring holds a vacant entry");
            if s.next_due > now_tick {
                i += 1;
                continue;
            }
            // Frames owed: the one due at next_due and every period since.
            let owed = (now_tick - s.next_due) / PERIOD + 1;
            let mut exhausted = false;
            if owed > MAX_BURST {
                for _ in 0..owed - MAX_BURST {
                    if !s.settle() {
                        exhausted = true;
                        break;
                    }
                    s.frame += 1;
                    s.ts = s.ts.wrapping_add(FRAME_SAMPLES as u32);
                    s.next_due += PERIOD;
                    self.stats.skipped_frames += 1;
                }
            }
            while !exhausted && s.next_due <= now_tick {
                if !s.settle() {
                    exhausted = true;
                    break;
                }
                if s.dst.port() == 0 {
                    // Muted: the frame passes in silence; the next packet sent starts a talkspurt.
                    s.marker = true;
                    self.stats.muted_frames += 1;
                } else {
                    let mut header = [0u8; HEADER_LEN];
                    write_header(&mut header, s.pt, s.marker, s.seq, s.ts, s.ssrc);
                    let due = clock.instant_of(s.next_due);
                    let lateness = now.saturating_duration_since(due);
                    if lateness > self.stats.max_lateness {
                        self.stats.max_lateness = lateness;
                    }
                    out(Packet {
                        id: StreamId { index, gen },
                        user: s.user,
                        socket: s.socket,
                        dst: s.dst,
                        header,
                        payload: s.playlist[s.item].frame(s.frame, s.codec),
                        lateness,
                    });
                    s.marker = false;
                    s.seq = s.seq.wrapping_add(1);
                    s.sent += 1;
                    self.stats.packets += 1;
                }
                s.frame += 1;
                s.ts = s.ts.wrapping_add(FRAME_SAMPLES as u32);
                s.next_due += PERIOD;
            }
            if exhausted {
                let s = self.unlink(index); // swaps another stream into position i: look at i again
                self.events.push_back(PacerEvent::Finished {
                    id: StreamId { index, gen },
                    user: s.user,
                    end: StreamPosition {
                        seq: s.seq,
                        ts: s.ts,
                        item: s.item,
                        frame: s.frame,
                        sent: s.sent,
                    },
                });
                self.stats.finished += 1;
                drop(s); // the playlist's Arcs
            } else {
                i += 1;
            }
        }
    }

    /// The next report, if any.
    pub fn poll_event(&mut self) -> Option<PacerEvent> {
        self.events.pop_front()
    }

    /// Live streams.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn stats(&self) -> PacerStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::RtpHeader;

    fn dst(n: u32) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10000 + (n % 50000) as u16))
    }

    fn prompt(name: &str, frames: usize) -> Arc<Prompt> {
        // Every sample of frame i holds frame_value(i), so tests can tell frames apart.
        let pcm: Vec<i16> = (0..frames * FRAME_SAMPLES)
            .map(|s| frame_value(s / FRAME_SAMPLES))
            .collect();
        Arc::new(Prompt::from_pcm(name, &pcm))
    }

    fn frame_value(i: usize) -> i16 {
        (i % 256) as i16 * 64
    }

    fn frame_byte(i: usize) -> u8 {
        crate::media::g711::linear_to_ulaw(frame_value(i))
    }

    fn spec(user: u64, playlist: Vec<Arc<Prompt>>, looped: bool) -> StreamSpec {
        StreamSpec {
            dst: dst(user as u32),
            socket: user as u32,
            codec: Codec::Pcmu,
            pt: 0,
            ssrc: 0xABCD_0000 + user as u32,
            seq: 65_000,
            ts: u32::MAX - 500,
            playlist,
            looped,
            user,
        }
    }

    #[derive(Clone, Debug)]
    struct Sent {
        at: Instant,
        user: u64,
        h: RtpHeader,
        payload0: u8,
        lateness: Duration,
    }

    /// Runs the pacer in virtual time until `until`, calling handle_timeout exactly at each poll_timeout.
    fn run(
        p: &mut Pacer,
        from: Instant,
        until: Instant,
        sent: &mut Vec<Sent>,
        events: &mut Vec<(Instant, PacerEvent)>,
    ) -> Instant {
        let mut now = from;
        while let Some(t) = p.poll_timeout() {
            if t > until {
                break;
            }
            now = now.max(t);
            p.handle_timeout(now, &mut |pkt: Packet<'_>| {
                let mut buf = pkt.header.to_vec();
                buf.extend_from_slice(pkt.payload);
                sent.push(Sent {
                    at: now,
                    user: pkt.user,
                    h: RtpHeader::parse(&buf).unwrap(),
                    payload0: pkt.payload[0],
                    lateness: pkt.lateness,
                });
            });
            while let Some(e) = p.poll_event() {
                events.push((now, e));
            }
        }
        until.max(now)
    }

    fn check_rtp_sequence(s: &[&Sent]) {
        for (k, w) in s.windows(2).enumerate() {
            assert_eq!(w[1].h.seq, w[0].h.seq.wrapping_add(1), "seq at {k}");
            assert_eq!(
                w[1].h.timestamp,
                w[0].h.timestamp.wrapping_add(160),
                "ts at {k}"
            );
            assert_eq!(w[1].h.ssrc, w[0].h.ssrc);
            assert!(!w[1].h.marker, "marker on packet {}", k + 1);
            assert_eq!(
                w[1].at - w[0].at,
                Duration::from_millis(20),
                "spacing at {k}"
            );
        }
        assert!(s[0].h.marker);
    }

    #[test]
    fn thirteen_second_prompt_is_650_packets_20ms_apart_then_finished_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let g = prompt("guidance", 650);
        assert_eq!(g.duration(), Duration::from_secs(13));
        let added = t0 + Duration::from_micros(3_250);
        let id = p.add(added, spec(7, vec![g.clone()], false));
        assert_eq!(p.len(), 1);
        let (mut sent, mut ev) = (Vec::new(), Vec::new());
        run(
            &mut p,
            added,
            t0 + Duration::from_secs(20),
            &mut sent,
            &mut ev,
        );
        assert_eq!(sent.len(), 650);
        let all: Vec<&Sent> = sent.iter().collect();
        check_rtp_sequence(&all);
        assert_eq!(
            sent[0].at,
            t0 + Duration::from_millis(4),
            "first packet at the next whole ms"
        );
        assert_eq!(
            (sent[0].h.seq, sent[0].h.timestamp, sent[0].h.payload_type),
            (65_000, u32::MAX - 500, 0)
        );
        assert_eq!(sent[649].h.seq, 65_000u16.wrapping_add(649));
        assert!(sent.iter().all(|s| s.lateness == Duration::ZERO));
        // Frames in order.
        for (i, s) in sent.iter().enumerate() {
            assert_eq!(s.payload0, frame_byte(i), "frame {i}");
        }
        assert_eq!(ev.len(), 1);
        assert!(
            matches!(ev[0].1, PacerEvent::Finished { id: i, user: 7, end } if i == id && end.seq == 65_000u16.wrapping_add(650) && end.ts == (u32::MAX - 500).wrapping_add(650 * 160) && end.sent == 650)
        );
        assert_eq!(
            ev[0].0,
            sent[649].at + Duration::from_millis(20),
            "finished when the last frame has played"
        );
        assert_eq!(p.len(), 0);
        assert!(!p.contains(id));
        assert!(!p.remove(id));
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.stats().packets, 650);
        assert_eq!(p.stats().finished, 1);
    }

    #[test]
    fn the_committed_guidance_prompt_plays_650_packets() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("audio");
        let set = crate::media::prompt::PromptSet::load(&dir, &["guidance-en"]).unwrap();
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let mut sp = spec(1, vec![set.get("guidance-en").unwrap()], false);
        sp.codec = Codec::Pcma;
        sp.pt = 8;
        p.add(t0, sp);
        let (mut sent, mut ev) = (Vec::new(), Vec::new());
        run(&mut p, t0, t0 + Duration::from_secs(14), &mut sent, &mut ev);
        assert_eq!(sent.len(), 650);
        assert!(sent.iter().all(|s| s.h.payload_type == 8));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0 - t0, Duration::from_secs(13));
    }

    #[test]
    fn five_thousand_streams_at_random_offsets_each_get_a_packet_every_20ms() {
        let t0 = Instant::now();
        let mut p = Pacer::with_capacity(t0, 5000);
        let looped = vec![prompt("moh", 7)];
        let mut rng = crate::sip::Rng::seeded(11);
        let mut adds: Vec<(Instant, u64)> = (0..5000u64)
            .map(|u| (t0 + Duration::from_micros(rng.next_u64() % 1_000_000), u))
            .collect();
        adds.sort();
        let (mut sent, mut ev) = (Vec::new(), Vec::new());
        let mut now = t0;
        let mut added_at = vec![t0; 5000];
        for (at, user) in adds {
            now = run(&mut p, now, at, &mut sent, &mut ev);
            p.add(at, spec(user, looped.clone(), true));
            added_at[user as usize] = at;
        }
        assert_eq!(p.len(), 5000);
        let end = t0 + Duration::from_secs(3);
        run(&mut p, now, end, &mut sent, &mut ev);
        assert!(ev.is_empty(), "looped streams never finish");
        let mut per: Vec<Vec<&Sent>> = vec![Vec::new(); 5000];
        for s in &sent {
            per[s.user as usize].push(s);
        }
        for (u, s) in per.iter().enumerate() {
            check_rtp_sequence(s);
            let first = s[0].at - added_at[u];
            assert!(
                first <= Duration::from_millis(1),
                "stream {u}: first packet {first:?} after add"
            );
            // Every stream runs to the end: nobody starved.
            assert!(
                end - s.last().unwrap().at < Duration::from_millis(20),
                "stream {u} stopped"
            );
        }
        // Emission is in time order and never late in virtual time.
        assert!(sent.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(sent.iter().all(|s| s.lateness == Duration::ZERO));
        // The load is spread: no 1 ms slot holds more than twice its share.
        let max_slot = p.ring.iter().map(Vec::len).max().unwrap();
        assert!(max_slot < 2 * 5000 / SLOTS, "slot of {max_slot} streams");
    }

    #[test]
    fn remove_mid_stream_stops_it_and_others_continue() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let g = prompt("g", 100);
        let a = p.add(t0, spec(1, vec![g.clone()], false));
        let b = p.add(t0, spec(2, vec![g.clone()], false)); // same slot as a
        let c = p.add(
            t0 + Duration::from_millis(5),
            spec(3, vec![g.clone()], false),
        );
        let (mut sent, mut ev) = (Vec::new(), Vec::new());
        let now = run(
            &mut p,
            t0,
            t0 + Duration::from_millis(500),
            &mut sent,
            &mut ev,
        );
        assert!(p.remove(a));
        assert!(!p.remove(a));
        assert_eq!(p.len(), 2);
        run(&mut p, now, t0 + Duration::from_secs(3), &mut sent, &mut ev);
        assert_eq!(sent.iter().filter(|s| s.user == 1).count(), 26); // ticks 0, 20, ..., 500
        assert_eq!(sent.iter().filter(|s| s.user == 2).count(), 100);
        assert_eq!(sent.iter().filter(|s| s.user == 3).count(), 100);
        let users: Vec<u64> = ev
            .iter()
            .map(|(_, PacerEvent::Finished { user, .. })| *user)
            .collect();
        assert_eq!(users, [2, 3], "no event for a removed stream");
        assert!(ev
            .iter()
            .any(|(_, e)| matches!(*e, PacerEvent::Finished { id, user: 2, .. } if id == b)));
        assert!(ev
            .iter()
            .any(|(_, e)| matches!(*e, PacerEvent::Finished { id, user: 3, .. } if id == c)));
    }

    #[test]
    fn stale_ids_do_not_reach_reused_entries() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let a = p.add(t0, spec(1, vec![prompt("g", 5)], false));
        assert!(p.remove(a));
        let b = p.add(t0, spec(2, vec![prompt("g", 5)], false));
        assert_ne!(a, b);
        assert!(!p.remove(a));
        assert!(!p.replace_playlist(a, vec![], false));
        assert!(p.contains(b));
    }

    #[test]
    fn playlist_of_two_prompts_continues_seq_and_ts() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let empty = Arc::new(Prompt::from_pcm("empty", &[]));
        let id = p.add(
            t0,
            spec(1, vec![prompt("a", 30), empty, prompt("b", 20)], false),
        );
        let (mut sent, mut ev) = (Vec::new(), Vec::new());
        run(&mut p, t0, t0 + Duration::from_secs(2), &mut sent, &mut ev);
        assert_eq!(sent.len(), 50);
        check_rtp_sequence(&sent.iter().collect::<Vec<_>>());
        // The second prompt starts again at frame 0.
        assert_eq!(sent[30].payload0, frame_byte(0));
        assert_eq!(sent[29].payload0, frame_byte(29));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0, t0 + Duration::from_millis(1000));
        let PacerEvent::Finished { id: fid, user, end } = ev[0].1;
        assert_eq!((fid, user), (id, 1));
        // Where the next packet on the same RTP stream continues.
        assert_eq!((end.seq, end.ts), (65_000u16.wrapping_add(50), (u32::MAX - 500).wrapping_add(50 * 160)));
        assert_eq!((end.item, end.sent), (3, 50));
    }

    #[test]
    fn looped_stream_never_finishes_and_replace_playlist_keeps_rtp_identity() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let id = p.add(t0, spec(1, vec![prompt("moh", 3)], true));
        let (mut sent, mut ev) = (Vec::new(), Vec::new());
        let now = run(&mut p, t0, t0 + Duration::from_secs(60), &mut sent, &mut ev);
        assert!(ev.is_empty());
        assert_eq!(sent.len(), 3001);
        assert_eq!(sent[3].payload0, sent[0].payload0, "loops back to frame 0");
        let pos = p.position(id).unwrap();
        assert_eq!(pos.sent, 3001);
        assert!(p.replace_playlist(id, vec![prompt("bye", 2)], false));
        run(
            &mut p,
            now,
            t0 + Duration::from_secs(61),
            &mut sent,
            &mut ev,
        );
        assert_eq!(sent.len(), 3003);
        check_rtp_sequence(&sent.iter().collect::<Vec<_>>());
        assert_eq!(ev.len(), 1);
        // A looped empty playlist cannot loop: it finishes at its first due tick.
        let e = p.add(
            now,
            spec(9, vec![Arc::new(Prompt::from_pcm("e", &[]))], true),
        );
        run(
            &mut p,
            now,
            now + Duration::from_millis(100),
            &mut sent,
            &mut ev,
        );
        assert!(matches!(ev.last().unwrap().1, PacerEvent::Finished { id, user: 9, .. } if id == e));
    }

    #[test]
    fn lateness_is_reported_and_a_stall_sends_a_bounded_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.add(t0, spec(1, vec![prompt("g", 200)], false));
        let mut got: Vec<(u16, u32, Duration, u8)> = Vec::new();
        let collect = |now: Instant, p: &mut Pacer, got: &mut Vec<(u16, u32, Duration, u8)>| {
            p.handle_timeout(now, &mut |pkt: Packet<'_>| {
                let h = RtpHeader::parse(&pkt.header).unwrap();
                got.push((h.seq, h.timestamp, pkt.lateness, pkt.payload[0]));
            })
        };
        collect(t0, &mut p, &mut got);
        assert_eq!(got.len(), 1);
        // 7 ms late for the packet due at 20 ms.
        collect(t0 + Duration::from_millis(27), &mut p, &mut got);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].2, Duration::from_millis(7));
        assert_eq!(p.stats().max_lateness, Duration::from_millis(7));
        // Calling again at the same instant emits nothing more.
        collect(t0 + Duration::from_millis(27), &mut p, &mut got);
        assert_eq!(got.len(), 2);
        // A 205 ms stall: packets due at 40, 60, ..., 220 are owed (10); the 3 most recent are sent.
        collect(t0 + Duration::from_millis(225), &mut p, &mut got);
        assert_eq!(got.len(), 5);
        assert_eq!(p.stats().skipped_frames, 7);
        let seqs: Vec<u16> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, [65_000, 65_001, 65_002, 65_003, 65_004], "no seq gap");
        let base = u32::MAX - 500;
        assert_eq!(
            got[2].1,
            base.wrapping_add(9 * 160),
            "ts jumps over the 7 skipped frames"
        );
        assert_eq!(got[4].1, base.wrapping_add(11 * 160));
        assert_eq!(got[2].2, Duration::from_millis(45)); // due at 180
        assert_eq!(got[4].2, Duration::from_millis(5)); // due at 220
        assert_eq!(got[4].3, frame_byte(11), "playlist stays in real time");
        // Back on schedule.
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_millis(240)));
    }

    #[test]
    fn add_after_the_tick_was_processed_is_not_delayed_a_period() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.add(t0, spec(1, vec![prompt("g", 10)], true));
        p.handle_timeout(t0 + Duration::from_micros(10_900), &mut |_| {});
        // Tick 10 is processed; a stream added at 10.5 ms is due at tick 11.
        let id = p.add(
            t0 + Duration::from_micros(10_500),
            spec(2, vec![prompt("g", 10)], false),
        );
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_millis(11)));
        let mut n = 0;
        p.handle_timeout(t0 + Duration::from_millis(11), &mut |pkt| {
            assert_eq!(pkt.id, id);
            n += 1
        });
        assert_eq!(n, 1);
    }

    #[test]
    fn set_destination_redirects_the_next_packets() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let id = p.add(t0, spec(1, vec![prompt("g", 10)], false));
        let mut dsts = Vec::new();
        p.handle_timeout(t0, &mut |pkt| dsts.push(pkt.dst));
        let moved: SocketAddr = "[::1]:4000".parse().unwrap();
        assert!(p.set_destination(id, moved));
        p.handle_timeout(t0 + Duration::from_millis(20), &mut |pkt| {
            dsts.push(pkt.dst)
        });
        assert_eq!(dsts, [dst(1), moved]);
    }

    #[test]
    fn seek_continues_a_playlist_where_it_was_interrupted() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let list = vec![prompt("a", 30), prompt("b", 20)];
        let id = p.add(t0, spec(1, list.clone(), false));
        let (mut sent, mut ev) = (Vec::new(), Vec::new());
        // 10 frames played, then the stream is taken off (a digit is sent on the RTP stream).
        let now = run(&mut p, t0, t0 + Duration::from_millis(190), &mut sent, &mut ev);
        assert_eq!(sent.len(), 10);
        let pos = p.position(id).unwrap();
        assert_eq!((pos.item, pos.frame), (0, 10));
        assert!(p.remove(id));
        // Back 100 ms later: a new stream of the same playlist, moved to where the old one stood.
        let later = now + Duration::from_millis(100);
        let id2 = p.add(later, spec(1, list.clone(), false));
        assert!(p.seek(id2, pos.item, pos.frame));
        run(&mut p, later, later + Duration::from_secs(2), &mut sent, &mut ev);
        assert_eq!(sent.len(), 50, "every frame of the playlist played once");
        assert_eq!(sent[10].payload0, frame_byte(10));
        assert_eq!(sent[30].payload0, frame_byte(0), "then the second prompt");
        // A position past the end of an item goes on with the next one.
        let id3 = p.add(later + Duration::from_secs(2), spec(2, list, false));
        assert!(p.seek(id3, 0, 99));
        let before = sent.len();
        run(&mut p, later + Duration::from_secs(2), later + Duration::from_secs(4), &mut sent, &mut ev);
        assert_eq!(sent.len() - before, 20);
        assert!(!p.seek(id, 0, 0), "a removed stream");
    }

    #[test]
    fn a_muted_stream_keeps_time_but_not_sequence_numbers() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let id = p.add(t0, spec(1, vec![prompt("g", 100)], false));
        let (mut sent, mut ev) = (Vec::new(), Vec::new());
        let now = run(&mut p, t0, t0 + Duration::from_millis(90), &mut sent, &mut ev);
        assert_eq!(sent.len(), 5);
        let nowhere: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert!(p.set_destination(id, nowhere));
        let now = run(&mut p, now, t0 + Duration::from_millis(290), &mut sent, &mut ev);
        assert_eq!(sent.len(), 5, "muted: nothing emitted");
        assert_eq!(p.stats().muted_frames, 10);
        assert!(p.set_destination(id, dst(1)));
        run(&mut p, now, t0 + Duration::from_secs(3), &mut sent, &mut ev);
        assert_eq!(sent.len(), 90, "the muted frames are not sent later");
        assert_eq!(sent[5].h.seq, sent[4].h.seq.wrapping_add(1), "no sequence gap");
        assert_eq!(sent[5].h.timestamp, sent[4].h.timestamp.wrapping_add(11 * 160), "time went on");
        assert!(sent[5].h.marker, "a new talkspurt");
        assert_eq!(sent[5].payload0, frame_byte(15), "the announcement went on in real time");
        assert_eq!(ev.len(), 1, "it finishes when it would have");
    }
}
