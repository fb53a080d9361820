//! The audio mixer of a call and the engine's one mixing schedule, sans-IO.
//!
//! A leg that hears a *mix* (conference, consultation, supervisor listen / whisper / barge) hears the
//! sum of other legs' audio, made by callgate every 20 ms in the leg's own codec. The [`Mixer`] of a
//! call keeps one small jitter buffer of decoded PCM per input leg; the [`MixClock`] of the engine
//! says when each mixing call's next 20 ms frame is due (one clock for all calls: no task or timer
//! per call). The engine owns the RTP identity of the mixed streams (see
//! [`engine`](super::engine)); this module only turns packets in into frames out.
//!
//! ```text
//!   accepted audio of leg X (after latching, direction) ─▶ push(X, ssrc, seq, codec, payload)
//!        decode G.711 ─▶ jitter buffer X (≤ JITTER_FRAMES × 20 ms of i16; oldest dropped when full;
//!                        a late or repeated packet of the same stream dropped)
//!   every 20 ms (MixClock due):  advance()  ─ 160 samples out of every input buffer (zeros when short)
//!                                mix(to, from, codec, &mut out) ─ Σ frames of `from` minus `to`,
//!                                    saturated to i16, encoded in `codec` (for each mixing leg)
//! ```
//!
//! Every input is read exactly once per frame, whatever the number of legs that hear it, so a leg's
//! voice reaches all its listeners with the same delay. Buffers live inside the `Mixer`, allocated
//! once when the call's first mix starts: nothing is allocated per packet or per frame.
//!
//! # Jitter buffer
//!
//! Packets are appended as they arrive (the recorder does the same): network jitter within the buffer
//! does not tear the audio. A frame taken while the buffer holds less than 160 samples is completed
//! with silence (an *underrun*: the input fell silent, lost a packet, or arrived just after the frame's
//! instant); the buffer then holds about one frame more from there on, which absorbs the same jitter
//! next time. A buffer full at [`JITTER_FRAMES`] frames drops its oldest samples (a sender whose clock
//! runs fast, or a burst after a stall): so the added delay is bounded by `JITTER_FRAMES × 20 ms`.
//! Within one stream (same SSRC) a packet whose sequence number is at most [`MAX_MISORDER`] behind the
//! newest, or equal to it, is late or a duplicate and dropped; anything else (a new SSRC, a jump) is a
//! (re)started stream and appended.

use std::fmt;
use std::time::Instant;

use super::bridge::Leg;
use super::pacer::{SlotClock, SLOTS};
use super::{g711, Codec, FRAME_SAMPLES, PTIME_MS};

/// Frames (of 20 ms) an input's jitter buffer holds at most.
pub const JITTER_FRAMES: usize = 4;
const CAP: usize = JITTER_FRAMES * FRAME_SAMPLES;
/// A packet this far behind the newest of its stream (or equal to it) is late: dropped.
pub const MAX_MISORDER: u16 = super::bridge::MAX_MISORDER;
/// Most frames one call emits in one [`MixClock::due`] round when the engine fell behind; older frames
/// are skipped (their time passes in the RTP timestamps, as in the pacer).
pub const MAX_BURST: u64 = super::pacer::MAX_BURST;
const PERIOD: u64 = PTIME_MS as u64;

/// A set of legs (the inputs of a mix).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LegSet(u8);

impl LegSet {
    pub const EMPTY: LegSet = LegSet(0);

    /// The legs named (duplicates count once).
    pub fn of(legs: &[Leg]) -> LegSet {
        legs.iter().fold(LegSet::EMPTY, |s, &l| s.with(l))
    }

    pub fn contains(self, leg: Leg) -> bool {
        self.0 & (1 << leg.index()) != 0
    }

    pub fn with(self, leg: Leg) -> LegSet {
        LegSet(self.0 | (1 << leg.index()))
    }

    pub fn without(self, leg: Leg) -> LegSet {
        LegSet(self.0 & !(1 << leg.index()))
    }

    pub fn union(self, other: LegSet) -> LegSet {
        LegSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// `from` replaced by `to`, if the set holds `from`.
    pub fn renamed(self, from: Leg, to: Leg) -> LegSet {
        if self.contains(from) {
            self.without(from).with(to)
        } else {
            self
        }
    }

    /// The legs, in the order A, B, C, D.
    pub fn iter(self) -> impl Iterator<Item = Leg> {
        Leg::ALL.into_iter().filter(move |&l| self.contains(l))
    }
}

impl fmt::Debug for LegSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Counters of one mixer (all its inputs), since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MixerStats {
    /// Audio packets taken into an input buffer.
    pub packets_in: u64,
    /// Packets dropped as late or repeated.
    pub late: u64,
    /// Samples dropped from a full buffer (oldest first).
    pub overflow_samples: u64,
    /// Samples of silence put in for an input that had too little (counted only while it is an input).
    pub underrun_samples: u64,
    /// Frames made (one per `advance`).
    pub frames: u64,
}

/// One input's decoded audio, first in first out, at most [`CAP`] samples.
#[derive(Debug)]
struct JitterBuffer {
    ring: [i16; CAP],
    head: usize,
    len: usize,
    /// The newest packet's stream and sequence number.
    last: Option<(u32, u16)>,
}

impl JitterBuffer {
    const fn new() -> JitterBuffer {
        JitterBuffer { ring: [0; CAP], head: 0, len: 0, last: None }
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.last = None;
    }

    fn push(&mut self, ssrc: u32, seq: u16, codec: Codec, payload: &[u8], stats: &mut MixerStats) {
        if let Some((s, newest)) = self.last {
            if s == ssrc && newest.wrapping_sub(seq) <= MAX_MISORDER {
                stats.late += 1;
                return;
            }
        }
        self.last = Some((ssrc, seq));
        stats.packets_in += 1;
        // Only the newest CAP samples of an oversized packet can stay.
        let payload = &payload[payload.len().saturating_sub(CAP)..];
        let n = payload.len();
        if self.len + n > CAP {
            let drop = self.len + n - CAP;
            self.head = (self.head + drop) % CAP;
            self.len -= drop;
            stats.overflow_samples += drop as u64;
        }
        let table = match codec {
            Codec::Pcmu => &g711::ULAW_DECODE,
            Codec::Pcma => &g711::ALAW_DECODE,
        };
        // Two contiguous stretches of the ring: up to its end, then from its start.
        let at = (self.head + self.len) % CAP;
        let first = n.min(CAP - at);
        for (x, &b) in self.ring[at..at + first].iter_mut().zip(&payload[..first]) {
            *x = table[b as usize];
        }
        for (x, &b) in self.ring[..n - first].iter_mut().zip(&payload[first..]) {
            *x = table[b as usize];
        }
        self.len += n;
    }

    /// One frame out; the rest of it silence if the buffer holds less. Returns the samples short.
    fn pull(&mut self, out: &mut [i16; FRAME_SAMPLES]) -> usize {
        let n = self.len.min(FRAME_SAMPLES);
        let first = n.min(CAP - self.head);
        out[..first].copy_from_slice(&self.ring[self.head..self.head + first]);
        out[first..n].copy_from_slice(&self.ring[..n - first]);
        out[n..].fill(0);
        self.head = (self.head + n) % CAP;
        self.len -= n;
        FRAME_SAMPLES - n
    }
}

/// The mixer of one call: a jitter buffer per leg and the current frame of each. See the module docs.
#[derive(Debug)]
pub struct Mixer {
    inputs: [JitterBuffer; 4],
    /// Legs whose audio some mix uses; only these are buffered.
    wanted: LegSet,
    /// The frame of each leg for the current 20 ms (zeros for a leg that is not an input).
    frame: [[i16; FRAME_SAMPLES]; 4],
    stats: MixerStats,
}

#[inline]
fn encode_with(out: &mut [u8; FRAME_SAMPLES], enc: impl Fn(i16) -> u8, sample: impl Fn(usize) -> i16) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = enc(sample(i));
    }
}

impl Mixer {
    /// A mixer with no inputs yet (all its memory allocated here, once).
    pub fn new() -> Box<Mixer> {
        Box::new(Mixer {
            inputs: [JitterBuffer::new(), JitterBuffer::new(), JitterBuffer::new(), JitterBuffer::new()],
            wanted: LegSet::EMPTY,
            frame: [[0; FRAME_SAMPLES]; 4],
            stats: MixerStats::default(),
        })
    }

    /// The legs whose audio is needed from now on. A leg that becomes an input starts empty (no old
    /// audio from before it was wanted); one that stops being an input is emptied and silent.
    pub fn set_inputs(&mut self, legs: LegSet) {
        for leg in Leg::ALL {
            if legs.contains(leg) != self.wanted.contains(leg) {
                self.clear(leg);
            }
        }
        self.wanted = legs;
    }

    pub fn inputs(&self) -> LegSet {
        self.wanted
    }

    /// Whether audio of `leg` is buffered (it is an input of some mix).
    pub fn wants(&self, leg: Leg) -> bool {
        self.wanted.contains(leg)
    }

    /// One packet of `leg`'s audio (`payload` in `codec`). Ignored if the leg is not an input.
    /// Never allocates.
    pub fn push(&mut self, leg: Leg, ssrc: u32, seq: u16, codec: Codec, payload: &[u8]) {
        if self.wanted.contains(leg) {
            self.inputs[leg.index()].push(ssrc, seq, codec, payload, &mut self.stats);
        }
    }

    /// Forgets `leg`'s buffered audio (the leg closed): it is silent until it sends again.
    pub fn clear(&mut self, leg: Leg) {
        self.inputs[leg.index()].clear();
        self.frame[leg.index()].fill(0);
    }

    /// Leg `from` is called `to` from now on: its buffered audio and its place among the inputs move
    /// (`to`'s are dropped: it was closed).
    pub fn rebind(&mut self, from: Leg, to: Leg) {
        if from == to {
            return;
        }
        self.inputs.swap(from.index(), to.index());
        self.frame.swap(from.index(), to.index());
        self.clear(from);
        let moved = self.wanted.contains(from);
        self.wanted = self.wanted.without(from).without(to);
        if moved {
            self.wanted = self.wanted.with(to);
        } else {
            self.clear(to);
        }
    }

    /// Samples buffered for `leg`.
    pub fn buffered(&self, leg: Leg) -> usize {
        self.inputs[leg.index()].len
    }

    pub fn stats(&self) -> MixerStats {
        self.stats
    }

    /// The next 20 ms: one frame out of every input's buffer.
    pub fn advance(&mut self) {
        self.stats.frames += 1;
        for leg in self.wanted.iter() {
            let short = self.inputs[leg.index()].pull(&mut self.frame[leg.index()]);
            self.stats.underrun_samples += short as u64;
        }
    }

    /// The current frame as `to` hears it: the sum of the frames of `from` (without `to` itself),
    /// saturated to 16 bits, encoded in `codec` into `out`.
    pub fn mix(&self, to: Leg, from: LegSet, codec: Codec, out: &mut [u8; FRAME_SAMPLES]) {
        let set = from.without(to);
        let mut legs = set.iter();
        let (first, second) = (legs.next(), legs.next());
        let (ulaw, alaw) = (g711::linear_to_ulaw, g711::linear_to_alaw);
        match (first, second) {
            (None, _) => out.fill(codec.silence()),
            (Some(one), None) => {
                let f = &self.frame[one.index()];
                match codec {
                    Codec::Pcmu => encode_with(out, ulaw, |i| f[i]),
                    Codec::Pcma => encode_with(out, alaw, |i| f[i]),
                }
            }
            (Some(_), Some(_)) => {
                let mut acc = [0i32; FRAME_SAMPLES];
                for leg in set.iter() {
                    for (a, &x) in acc.iter_mut().zip(&self.frame[leg.index()]) {
                        *a += i32::from(x);
                    }
                }
                let sat = |i: usize| acc[i].clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
                match codec {
                    Codec::Pcmu => encode_with(out, ulaw, sat),
                    Codec::Pcma => encode_with(out, alaw, sat),
                }
            }
        }
    }
}

/// A call whose frames are due: the frame of tick `tick` and `owed - 1` more, one every 20 ms after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    pub key: u64,
    /// Millisecond (since the clock's start) the first owed frame was due.
    pub tick: u64,
    /// Frames owed (more than one only when the engine was late by a period or more).
    pub owed: u64,
}

/// The engine's schedule of mixing calls: a ring of [`SLOTS`] one-millisecond slots over the 20 ms
/// period, like the pacer's; a call sits in the slot of the millisecond its mixing started in, so the
/// work of many conferences spreads over the period. A call is added when its first leg starts hearing
/// a mix and removed when the last stops (or the call ends).
#[derive(Debug)]
pub struct MixClock {
    clock: SlotClock,
    ring: [Vec<(u64, u64)>; SLOTS],
    live: usize,
}

impl MixClock {
    pub fn new(start: Instant) -> MixClock {
        MixClock { clock: SlotClock::new(start), ring: std::array::from_fn(|_| Vec::new()), live: 0 }
    }

    /// The instant of millisecond `tick`.
    pub fn instant_of(&self, tick: u64) -> Instant {
        self.clock.instant_of(tick)
    }

    /// Schedules `key` from `now`: its first frame is due at the first millisecond at or after `now`.
    /// Returns its slot (for [`MixClock::remove`]).
    pub fn add(&mut self, now: Instant, key: u64) -> u8 {
        let next = self.clock.first_due(now);
        let slot = (next % PERIOD) as usize;
        self.ring[slot].push((key, next));
        self.live += 1;
        slot as u8
    }

    /// Unschedules `key` (in `slot`). False if it was not there.
    pub fn remove(&mut self, key: u64, slot: u8) -> bool {
        let Some(list) = self.ring.get_mut(slot as usize) else { return false };
        match list.iter().position(|&(k, _)| k == key) {
            Some(i) => {
                list.swap_remove(i);
                self.live -= 1;
                true
            }
            None => false,
        }
    }

    /// Calls scheduled.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The start of the next millisecond whose slot holds a call; `None` when none is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.live == 0 {
            return None;
        }
        self.clock.next(|slot| !self.ring[slot].is_empty())
    }

    /// Appends to `out` every call with a frame due at or before `now`, and moves each one's next frame
    /// on past `now`. `out` is the caller's, reused (no allocation once it has grown).
    pub fn due(&mut self, now: Instant, out: &mut Vec<Due>) {
        let Some((now_tick, slots)) = self.clock.advance(now) else { return };
        for slot in slots {
            for (key, next) in &mut self.ring[slot] {
                if *next <= now_tick {
                    let owed = (now_tick - *next) / PERIOD + 1;
                    out.push(Due { key: *key, tick: *next, owed });
                    *next += owed * PERIOD;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame_of(codec: Codec, level: i16) -> Vec<u8> {
        let b = match codec {
            Codec::Pcmu => g711::linear_to_ulaw(level),
            Codec::Pcma => g711::linear_to_alaw(level),
        };
        vec![b; FRAME_SAMPLES]
    }

    fn decoded(codec: Codec, out: &[u8]) -> Vec<i16> {
        out.iter()
            .map(|&b| match codec {
                Codec::Pcmu => g711::ulaw_to_linear(b),
                Codec::Pcma => g711::alaw_to_linear(b),
            })
            .collect()
    }

    /// Within the quantisation error of two G.711 codings of `want`.
    fn near(got: i16, want: i16) -> bool {
        (i32::from(got) - i32::from(want)).abs() <= i32::from(want).abs() / 16 + 16
    }

    #[test]
    fn each_leg_hears_the_sum_of_the_others_in_its_own_law_and_never_itself() {
        let mut m = Mixer::new();
        let all = LegSet::of(&[Leg::A, Leg::B, Leg::C]);
        m.set_inputs(all);
        m.push(Leg::A, 1, 1, Codec::Pcma, &frame_of(Codec::Pcma, 1000));
        m.push(Leg::B, 2, 1, Codec::Pcmu, &frame_of(Codec::Pcmu, 2000));
        m.push(Leg::C, 3, 1, Codec::Pcma, &frame_of(Codec::Pcma, -4000));
        m.advance();
        let mut out = [0u8; FRAME_SAMPLES];
        for (to, codec, want) in [(Leg::A, Codec::Pcmu, -2000), (Leg::B, Codec::Pcma, -3000), (Leg::C, Codec::Pcmu, 3000)] {
            m.mix(to, all, codec, &mut out);
            let pcm = decoded(codec, &out);
            assert!(pcm.iter().all(|&x| near(x, want)), "{to} hears {} (want {want})", pcm[0]);
        }
        // One input: what it said, in the listener's law.
        m.mix(Leg::D, LegSet::of(&[Leg::B]), Codec::Pcma, &mut out);
        assert!(decoded(Codec::Pcma, &out).iter().all(|&x| near(x, 2000)));
        // Nothing to hear (only itself): silence in its law.
        m.mix(Leg::A, LegSet::of(&[Leg::A]), Codec::Pcma, &mut out);
        assert_eq!(out, [g711::ALAW_SILENCE; FRAME_SAMPLES]);
    }

    #[test]
    fn loud_voices_saturate_instead_of_wrapping() {
        let mut m = Mixer::new();
        let all = LegSet::of(&[Leg::A, Leg::B, Leg::C]);
        m.set_inputs(all);
        for (leg, ssrc) in [(Leg::A, 1), (Leg::B, 2)] {
            m.push(leg, ssrc, 1, Codec::Pcmu, &frame_of(Codec::Pcmu, 30_000));
        }
        m.push(Leg::C, 3, 1, Codec::Pcmu, &frame_of(Codec::Pcmu, -30_000));
        m.advance();
        let mut out = [0u8; FRAME_SAMPLES];
        m.mix(Leg::C, all, Codec::Pcmu, &mut out);
        assert!(decoded(Codec::Pcmu, &out).iter().all(|&x| x > 30_000), "clipped at the top, not wrapped to negative");
        m.mix(Leg::A, LegSet::of(&[Leg::C, Leg::D]), Codec::Pcmu, &mut out);
        assert!(decoded(Codec::Pcmu, &out).iter().all(|&x| x < -29_000));
    }

    #[test]
    fn the_jitter_buffer_is_bounded_drops_late_packets_and_fills_gaps_with_silence() {
        let mut m = Mixer::new();
        m.set_inputs(LegSet::of(&[Leg::C]));
        let mut out = [0u8; FRAME_SAMPLES];
        let to_b = LegSet::of(&[Leg::C]);
        // A burst of 10 frames (levels 100..1000): only the newest JITTER_FRAMES stay.
        for i in 0..10u16 {
            m.push(Leg::C, 9, 100 + i, Codec::Pcmu, &frame_of(Codec::Pcmu, 100 * (i as i16 + 1)));
        }
        assert_eq!(m.buffered(Leg::C), CAP);
        assert_eq!(m.stats().overflow_samples, ((10 - JITTER_FRAMES) * FRAME_SAMPLES) as u64);
        // A late packet and a duplicate are not taken.
        m.push(Leg::C, 9, 105, Codec::Pcmu, &frame_of(Codec::Pcmu, 5));
        m.push(Leg::C, 9, 109, Codec::Pcmu, &frame_of(Codec::Pcmu, 5));
        assert_eq!(m.stats().late, 2);
        let mut heard = Vec::new();
        for _ in 0..JITTER_FRAMES + 1 {
            m.advance();
            m.mix(Leg::B, to_b, Codec::Pcmu, &mut out);
            heard.push(decoded(Codec::Pcmu, &out)[0]);
        }
        assert!(near(heard[0], 700) && near(heard[3], 1000), "oldest first: {heard:?}");
        assert_eq!(heard[4], 0, "then silence");
        assert_eq!(m.stats().underrun_samples, FRAME_SAMPLES as u64);
        // A restarted stream (new SSRC, lower sequence number) is taken.
        m.push(Leg::C, 10, 3, Codec::Pcmu, &frame_of(Codec::Pcmu, 800));
        m.advance();
        m.mix(Leg::B, to_b, Codec::Pcmu, &mut out);
        assert!(near(decoded(Codec::Pcmu, &out)[0], 800));
        // Half a frame (10 ms packets): the rest of the frame is silence.
        m.push(Leg::C, 10, 4, Codec::Pcmu, &frame_of(Codec::Pcmu, 800)[..80]);
        m.advance();
        m.mix(Leg::B, to_b, Codec::Pcmu, &mut out);
        let pcm = decoded(Codec::Pcmu, &out);
        assert!(near(pcm[79], 800) && pcm[80] == 0);
    }

    #[test]
    fn only_inputs_are_buffered_and_a_new_input_starts_empty() {
        let mut m = Mixer::new();
        m.push(Leg::A, 1, 1, Codec::Pcmu, &frame_of(Codec::Pcmu, 1000));
        assert_eq!(m.buffered(Leg::A), 0, "not an input: nothing kept");
        m.set_inputs(LegSet::of(&[Leg::A]));
        m.push(Leg::A, 1, 2, Codec::Pcmu, &frame_of(Codec::Pcmu, 1000));
        m.set_inputs(LegSet::EMPTY);
        m.set_inputs(LegSet::of(&[Leg::A]));
        assert_eq!(m.buffered(Leg::A), 0, "old audio is not heard later");
        // Rebind moves an input's audio to its new name.
        m.set_inputs(LegSet::of(&[Leg::C]));
        m.push(Leg::C, 1, 1, Codec::Pcmu, &frame_of(Codec::Pcmu, 1000));
        m.rebind(Leg::C, Leg::B);
        assert_eq!((m.buffered(Leg::B), m.buffered(Leg::C)), (FRAME_SAMPLES, 0));
        assert_eq!(m.inputs(), LegSet::of(&[Leg::B]));
    }

    #[test]
    fn leg_sets_ignore_duplicates_and_rename() {
        let s = LegSet::of(&[Leg::B, Leg::B, Leg::D]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![Leg::B, Leg::D]);
        assert_eq!(s.renamed(Leg::D, Leg::A), LegSet::of(&[Leg::A, Leg::B]));
        assert_eq!(s.renamed(Leg::C, Leg::A), s);
        assert_eq!(format!("{:?}", LegSet::of(&[Leg::A])), "{A}");
    }

    #[test]
    fn the_clock_ticks_each_call_every_20_ms_in_its_own_slot() {
        let t0 = Instant::now();
        let mut c = MixClock::new(t0);
        let s1 = c.add(t0, 1);
        let s2 = c.add(t0 + Duration::from_micros(7_500), 2);
        assert_eq!((s1, s2), (0, 8));
        let mut due = Vec::new();
        let mut seen = Vec::new();
        while let Some(t) = c.poll_timeout() {
            if t > t0 + Duration::from_millis(100) {
                break;
            }
            due.clear();
            c.due(t, &mut due);
            seen.extend(due.iter().map(|d| (d.key, d.tick, d.owed)));
        }
        assert_eq!(seen, vec![(1, 0, 1), (2, 8, 1), (1, 20, 1), (2, 28, 1), (1, 40, 1), (2, 48, 1), (1, 60, 1), (2, 68, 1), (1, 80, 1), (2, 88, 1), (1, 100, 1)]);
        // Late by 70 ms: three more frames owed at once, then on time again.
        due.clear();
        c.due(t0 + Duration::from_millis(170), &mut due);
        assert_eq!(due.iter().find(|d| d.key == 1), Some(&Due { key: 1, tick: 120, owed: 3 }));
        assert!(c.remove(1, s1) && !c.remove(1, s1));
        assert_eq!(c.len(), 1);
        assert!(c.remove(2, s2));
        assert_eq!(c.poll_timeout(), None);
    }
}
