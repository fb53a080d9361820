//! Call recording, sans-IO: the caller's audio on the left channel and the agent's on the right,
//! as 8 kHz 16-bit stereo PCM WAV (issue 3: "per-call WAV (stereo: caller left, agent right)").
//! A channel may have several *sources* summed into it: the engine puts the agent, the consulted party
//! and a barging supervisor on the right (source 0, 1, 2), so a consultation or a conference has every
//! voice.
//!
//! The two legs' RTP clocks are unrelated, so each channel is placed on the call's wall clock:
//! a frame that arrives at `now` ends at sample `(now - start) × 8000`. Frames of a source arriving
//! back to back are written contiguously (network jitter does not tear the audio); when a source falls
//! behind the wall clock by more than [`RESYNC`] (a hold, loss, a stopped stream) it jumps to the wall
//! clock and silence fills the gap, so the channels stay aligned with each other and with time. Each
//! source has its own write position; where two sources of a channel overlap their samples are added
//! (saturated to 16 bits).
//!
//! ```text
//!   push(now, Left|Right, codec, payload) ──▶ decode G.711 ──▶ channel buffer (gap → silence)
//!   drain(now, out) ──▶ interleave every position both channels have, and pad a channel that is
//!                       more than LATENCY behind the wall clock with silence ──▶ out (LE bytes)
//!   finish(out) ──▶ the rest, the shorter channel padded
//! ```
//! The shell owns the file: it writes [`wav_header`] with the sizes unknown, appends what `drain`
//! gives off the hot path, and patches the sizes ([`patch_sizes`]) at the end.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{g711, Codec, CLOCK_RATE};

/// Sources one channel can sum.
pub const SOURCES: usize = 3;
/// A channel this far behind the wall clock at a push is resynchronised with silence.
pub const RESYNC: Duration = Duration::from_millis(120);
/// How long `drain` waits for the slower channel before writing silence in its place.
pub const LATENCY: Duration = Duration::from_millis(200);

/// Which side of the recording a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// The caller.
    Left,
    /// The agent.
    Right,
}

#[derive(Debug, Default)]
struct Track {
    /// Samples not yet written, starting at sample position `base`.
    buf: VecDeque<i16>,
    base: u64,
    /// Where each source writes next (`None` before its first frame).
    cursors: [Option<u64>; SOURCES],
}

impl Track {
    fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }
}

/// One call's recording in progress.
#[derive(Debug)]
pub struct StereoRecorder {
    start: Instant,
    tracks: [Track; 2],
    /// Stereo frames handed out by `drain` so far.
    written: u64,
}

fn samples_at(start: Instant, now: Instant) -> u64 {
    let d = now.saturating_duration_since(start);
    d.as_secs() * u64::from(CLOCK_RATE) + u64::from(d.subsec_nanos()) * u64::from(CLOCK_RATE) / 1_000_000_000
}

impl StereoRecorder {
    pub fn new(start: Instant) -> StereoRecorder {
        StereoRecorder { start, tracks: [Track::default(), Track::default()], written: 0 }
    }

    /// A frame of G.711 `payload` from `channel` that arrived at `now` (its first source).
    pub fn push(&mut self, now: Instant, channel: Channel, codec: Codec, payload: &[u8]) {
        self.push_source(now, channel, 0, codec, payload);
    }

    /// A frame of G.711 `payload` from source `source` (< [`SOURCES`]) of `channel` that arrived at
    /// `now`: added to what the channel's other sources put there.
    pub fn push_source(&mut self, now: Instant, channel: Channel, source: usize, codec: Codec, payload: &[u8]) {
        let t = &mut self.tracks[channel as usize];
        let source = source.min(SOURCES - 1);
        let arrived_end = samples_at(self.start, now);
        let begins = arrived_end.saturating_sub(payload.len() as u64);
        let resync = samples_at(self.start, self.start + RESYNC);
        let mut at = match t.cursors[source] {
            // Behind the wall clock by more than a burst of jitter: jump there; silence in between.
            Some(c) if c + resync >= begins => c,
            // The source's first frame: where the wall clock says.
            _ => begins,
        };
        // Written out already (the source was late by more than LATENCY): continue after.
        at = at.max(t.base);
        if at > t.end() {
            let gap = at - t.end();
            t.buf.extend(std::iter::repeat_n(0, gap as usize));
        }
        let table = match codec {
            Codec::Pcmu => &g711::ULAW_DECODE,
            Codec::Pcma => &g711::ALAW_DECODE,
        };
        let first = (at - t.base) as usize;
        let overlap = t.buf.len().saturating_sub(first).min(payload.len());
        for (k, &b) in payload[..overlap].iter().enumerate() {
            let x = &mut t.buf[first + k];
            *x = x.saturating_add(table[b as usize]);
        }
        t.buf.extend(payload[overlap..].iter().map(|&b| table[b as usize]));
        t.cursors[source] = Some(at + payload.len() as u64);
    }

    /// Appends to `out` (16-bit little-endian, left then right) every stereo frame both channels
    /// have, and, where one channel is more than [`LATENCY`] behind the wall clock, silence for it.
    pub fn drain(&mut self, now: Instant, out: &mut Vec<u8>) {
        let due = samples_at(self.start, now).saturating_sub(samples_at(self.start, self.start + LATENCY));
        let both = self.tracks[0].end().min(self.tracks[1].end());
        let upto = both.max(due.min(self.tracks[0].end().max(self.tracks[1].end())));
        self.emit(upto, out);
    }

    /// Appends everything left, the shorter channel padded with silence.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let upto = self.tracks[0].end().max(self.tracks[1].end());
        self.emit(upto, out);
    }

    /// Stereo frames written so far (the recording's length is this / 8000 seconds).
    pub fn frames_written(&self) -> u64 {
        self.written
    }

    fn emit(&mut self, upto: u64, out: &mut Vec<u8>) {
        if upto <= self.written {
            return;
        }
        out.reserve(((upto - self.written) * 4) as usize);
        for pos in self.written..upto {
            for t in &mut self.tracks {
                // A track that starts later than `pos`, or is shorter, is silent there.
                let s = if pos >= t.base && !t.buf.is_empty() {
                    t.base += 1;
                    t.buf.pop_front().unwrap_or(0)
                } else {
                    if pos >= t.base {
                        t.base = pos + 1;
                    }
                    0
                };
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        self.written = upto;
    }
}

/// The 44-byte header of an 8 kHz 16-bit stereo PCM WAV holding `data_len` bytes of samples.
/// Write it with `data_len` 0 at the start and patch it with [`patch_sizes`] at the end.
pub fn wav_header(data_len: u32) -> [u8; 44] {
    let channels: u16 = 2;
    let bits: u16 = 16;
    let rate = CLOCK_RATE;
    let block = channels * bits / 8;
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36u32.saturating_add(data_len)).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * u32::from(block)).to_le_bytes());
    h[32..34].copy_from_slice(&block.to_le_bytes());
    h[34..36].copy_from_slice(&bits.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// The two size fields to rewrite in a header written by [`wav_header`]: (offset, bytes) pairs.
pub fn patch_sizes(data_len: u32) -> [(u64, [u8; 4]); 2] {
    [(4, 36u32.saturating_add(data_len).to_le_bytes()), (40, data_len.to_le_bytes())]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    fn tone(codec: Codec, level: i16) -> Vec<u8> {
        let enc = match codec {
            Codec::Pcmu => g711::linear_to_ulaw,
            Codec::Pcma => g711::linear_to_alaw,
        };
        vec![enc(level); 160]
    }

    fn stereo(out: &[u8]) -> Vec<(i16, i16)> {
        out.chunks_exact(4)
            .map(|c| (i16::from_le_bytes([c[0], c[1]]), i16::from_le_bytes([c[2], c[3]])))
            .collect()
    }

    #[test]
    fn caller_left_agent_right_aligned_in_time() {
        let t0 = Instant::now();
        let mut r = StereoRecorder::new(t0);
        let mut out = Vec::new();
        for i in 1..=50 {
            let now = t0 + FRAME * i;
            r.push(now, Channel::Left, Codec::Pcma, &tone(Codec::Pcma, 8000));
            r.push(now, Channel::Right, Codec::Pcmu, &tone(Codec::Pcmu, -4000));
            r.drain(now, &mut out);
        }
        r.finish(&mut out);
        let s = stereo(&out);
        assert_eq!(s.len(), 50 * 160, "one second of stereo");
        assert!(s.iter().all(|&(l, r)| (l - 8000).abs() < 300 && (r + 4000).abs() < 200), "{:?}", &s[..4]);
        assert_eq!(r.frames_written(), 8000);
    }

    #[test]
    fn a_silent_stretch_on_one_side_is_filled_so_both_stay_aligned() {
        let t0 = Instant::now();
        let mut r = StereoRecorder::new(t0);
        let mut out = Vec::new();
        // The caller talks throughout; the agent is on hold for 20 frames in the middle.
        for i in 1..=60 {
            let now = t0 + FRAME * i;
            r.push(now, Channel::Left, Codec::Pcmu, &tone(Codec::Pcmu, 1000));
            if !(20..40).contains(&i) {
                r.push(now, Channel::Right, Codec::Pcmu, &tone(Codec::Pcmu, 2000));
            }
            r.drain(now, &mut out);
        }
        r.finish(&mut out);
        let s = stereo(&out);
        assert_eq!(s.len(), 60 * 160);
        // Frames 20..40 of the right channel are silence; frame 45 has the agent again.
        assert!(s[(21 * 160)..(38 * 160)].iter().all(|&(_, r)| r == 0));
        assert!(s[(45 * 160)..(46 * 160)].iter().all(|&(_, r)| (r - 2000).abs() < 100));
        assert!(s.iter().all(|&(l, _)| (l - 1000).abs() < 100), "the caller's channel never tears");
    }

    #[test]
    fn jitter_does_not_tear_the_audio_and_drain_waits_for_the_slow_side() {
        let t0 = Instant::now();
        let mut r = StereoRecorder::new(t0);
        let mut out = Vec::new();
        // Two frames arrive together (jitter), then one late: still contiguous, no silence inserted.
        r.push(t0 + FRAME, Channel::Left, Codec::Pcmu, &tone(Codec::Pcmu, 500));
        r.push(t0 + FRAME * 3, Channel::Left, Codec::Pcmu, &tone(Codec::Pcmu, 500));
        r.push(t0 + FRAME * 3, Channel::Left, Codec::Pcmu, &tone(Codec::Pcmu, 500));
        r.drain(t0 + FRAME * 3, &mut out);
        assert!(out.is_empty(), "the right channel has nothing yet and is within the latency");
        r.drain(t0 + FRAME * 3 + LATENCY, &mut out);
        let s = stereo(&out);
        assert!(s.len() >= 3 * 160 - 1, "{}", s.len());
        assert!(s.iter().take(3 * 160).all(|&(l, r)| l != 0 && r == 0));
    }

    #[test]
    fn sources_of_one_channel_are_summed_each_contiguous_on_its_own() {
        let t0 = Instant::now();
        let mut r = StereoRecorder::new(t0);
        let mut out = Vec::new();
        // The agent talks throughout; the consulted party joins at frame 20 with 10 ms of jitter.
        for i in 1..=40u32 {
            let now = t0 + FRAME * i;
            r.push(now, Channel::Left, Codec::Pcmu, &tone(Codec::Pcmu, 0));
            r.push_source(now, Channel::Right, 0, Codec::Pcmu, &tone(Codec::Pcmu, 1000));
            if i >= 20 {
                let jitter = Duration::from_millis(u64::from(i % 2) * 10);
                r.push_source(now + jitter, Channel::Right, 1, Codec::Pcma, &tone(Codec::Pcma, 2000));
            }
            r.drain(now, &mut out);
        }
        r.finish(&mut out);
        let s = stereo(&out);
        assert_eq!(s.len(), 40 * 160);
        assert!(s[..18 * 160].iter().all(|&(_, r)| (r - 1000).abs() < 60), "the agent alone");
        assert!(s[20 * 160..40 * 160].iter().all(|&(_, r)| (r - 3000).abs() < 120), "both, summed: {:?}", &s[20 * 160]);
    }

    #[test]
    fn the_header_describes_8k_16_bit_stereo_and_patches_to_the_length() {
        let h = wav_header(0);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(&h[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([h[22], h[23]]), 2);
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 8000);
        assert_eq!(u32::from_le_bytes([h[28], h[29], h[30], h[31]]), 32_000);
        let mut file = h.to_vec();
        file.extend_from_slice(&[0u8; 400]);
        for (off, bytes) in patch_sizes(400) {
            file[off as usize..off as usize + 4].copy_from_slice(&bytes);
        }
        assert_eq!(file, [wav_header(400).as_slice(), &[0u8; 400]].concat());
    }
}
