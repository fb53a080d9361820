//! The engine in virtual time: commands, datagrams and timeouts at chosen instants, no sockets.

use super::*;
use crate::media::dtmf::TelephoneEvent;
use crate::media::g711;
use crate::media::rtp::write_header;
use crate::media::Codec;

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

#[derive(Default)]
struct FakeSockets {
    next: u32,
    open: Vec<u32>,
    refuse_port: Option<u16>,
}

impl Sockets for FakeSockets {
    fn open(&mut self, _call: CallKey, _leg: Leg, port: u16) -> Result<u32, MediaFailure> {
        if self.refuse_port == Some(port) {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            return Err(MediaFailure::Bind { addr, kind: std::io::ErrorKind::AddrInUse });
        }
        let id = self.next;
        self.next += 1;
        self.open.push(id);
        Ok(id)
    }
    fn close(&mut self, socket: u32) {
        let before = self.open.len();
        self.open.retain(|s| *s != socket);
        assert_eq!(self.open.len() + 1, before, "socket {socket} closed twice or never opened");
    }
}

/// A prompt whose frame i holds the level (i % 50) * 400 + 400 (so frames can be told apart).
fn prompt(name: &str, frames: usize) -> Prompt {
    let pcm: Vec<i16> = (0..frames * 160).map(|s| ((s / 160) % 50) as i16 * 400 + 400).collect();
    Prompt::from_pcm(name, &pcm)
}

#[derive(Clone, Debug)]
struct Sent {
    at: Instant,
    socket: u32,
    dst: SocketAddr,
    h: RtpHeader,
    payload: Vec<u8>,
}

struct H {
    e: Engine,
    s: FakeSockets,
    now: Instant,
    sent: Vec<Sent>,
    events: Vec<MediaEvent>,
}

fn media(remote: SocketAddr, codec: Codec, dtmf_pt: Option<u8>) -> LegMedia {
    LegMedia { remote: Some(remote), codec, audio_pt: codec.payload_type(), dtmf_pt, ptime_ms: 20 }
}

impl H {
    fn new(config: EngineConfig) -> H {
        let now = Instant::now();
        let mut set = PromptSet::default();
        set.insert(prompt("guidance", 10));
        set.insert(prompt("menu", 50));
        set.insert(prompt("music", 7));
        H { e: Engine::new(now, config, Arc::new(set), 7), s: FakeSockets::default(), now, sent: Vec::new(), events: Vec::new() }
    }

    fn cmd(&mut self, c: MediaCommand) {
        self.e.command(self.now, c, &mut self.s);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(ev) = self.e.poll_event() {
            self.events.push(ev);
        }
    }

    fn take_events(&mut self) -> Vec<MediaEvent> {
        std::mem::take(&mut self.events)
    }

    fn open(&mut self, call: CallKey, leg: Leg, m: LegMedia, ssrc: u32, seq: u16) {
        let local_port = 20_000 + 2 * call as u16 + if leg == Leg::B { 1000 } else { 0 };
        self.cmd(MediaCommand::Open { call, leg, local_port, media: m, direction: Direction::SendRecv, ssrc, seq, ts: 1_000 });
    }

    fn play(&mut self, call: CallKey, leg: Leg, names: &[&str], looped: bool, barge_in: bool) {
        let playlist = names.iter().map(|s| s.to_string()).collect();
        self.cmd(MediaCommand::Play { call, leg, playlist, looped, barge_in });
    }

    /// Runs every deadline up to `until`, exactly when due.
    fn run_until(&mut self, until: Instant) {
        while let Some(t) = self.e.poll_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            let (now, sent) = (self.now, &mut self.sent);
            self.e.handle_timeout(now, &mut |o: Outgoing<'_>| {
                let mut pkt = o.header.to_vec();
                pkt.extend_from_slice(o.payload);
                let h = RtpHeader::parse(&pkt).unwrap();
                sent.push(Sent { at: now, socket: o.socket, dst: o.dst, h, payload: h.payload(&pkt).to_vec() });
            });
            self.drain();
        }
        self.now = self.now.max(until);
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// A datagram on `socket` at the current instant; a relayed one is recorded in `sent` too.
    fn feed(&mut self, socket: u32, src: SocketAddr, pkt: &[u8]) -> Option<Sent> {
        let mut buf = [0u8; 1500];
        buf[..pkt.len()].copy_from_slice(pkt);
        let f = self.e.on_datagram(self.now, socket, src, &mut buf, pkt.len());
        self.drain();
        let f = f?;
        let h = RtpHeader::parse(&buf[..f.len]).unwrap();
        let s = Sent { at: self.now, socket: f.socket, dst: f.dst, h, payload: h.payload(&buf[..f.len]).to_vec() };
        self.sent.push(s.clone());
        Some(s)
    }

    /// Everything sent on `socket`, in order.
    fn on(&self, socket: u32) -> Vec<&Sent> {
        self.sent.iter().filter(|s| s.socket == socket).collect()
    }
}

fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; HEADER_LEN];
    write_header(&mut h, pt, marker, seq, ts, ssrc);
    let mut p = h.to_vec();
    p.extend_from_slice(payload);
    p
}

#[allow(clippy::too_many_arguments)]
fn dtmf(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, event: u8, end: bool, duration: u16) -> Vec<u8> {
    let ev = TelephoneEvent { event, end, volume: 10, duration };
    rtp(pt, marker, seq, ts, ssrc, &ev.to_bytes())
}

/// One stream: same SSRC, sequence numbers +1 with no gap or repeat, timestamps never going back.
fn assert_one_stream(pkts: &[&Sent]) {
    assert!(!pkts.is_empty());
    for (k, w) in pkts.windows(2).enumerate() {
        assert_eq!(w[1].h.ssrc, w[0].h.ssrc, "SSRC changed at packet {k}");
        assert_eq!(w[1].h.seq, w[0].h.seq.wrapping_add(1), "sequence gap at packet {k}: {:?} -> {:?}", w[0].h, w[1].h);
        let dt = w[1].h.timestamp.wrapping_sub(w[0].h.timestamp);
        assert!(dt < 0x8000_0000, "timestamp went back at packet {k}");
    }
}

#[test]
fn guidance_then_music_is_one_stream_and_finished_is_reported_once() {
    let mut h = H::new(EngineConfig::default());
    h.open(1, Leg::A, media(a_sdp(), Codec::Pcma, Some(101)), 0xAAAA_0001, 100);
    assert_eq!(h.e.poll_timeout().map(|t| t > h.now), Some(true), "only housekeeping: nothing is sent after Open");
    h.run_for(Duration::from_millis(100));
    assert!(h.sent.is_empty(), "Open alone sends nothing");
    h.play(1, Leg::A, &["guidance"], false, false);
    h.run_for(Duration::from_secs(1));
    let g = h.on(0);
    assert_eq!(g.len(), 10);
    assert!(g.iter().all(|s| s.dst == a_sdp() && s.h.payload_type == 8 && s.h.ssrc == 0xAAAA_0001));
    assert_eq!((g[0].h.seq, g[9].h.seq), (100, 109));
    assert!(g[0].h.marker);
    assert_eq!(h.take_events(), vec![MediaEvent::Finished { call: 1, leg: Leg::A }]);
    h.run_for(Duration::from_millis(500));
    assert_eq!(h.sent.len(), 10, "nothing after the playlist");
    h.play(1, Leg::A, &["music"], true, false);
    h.run_for(Duration::from_secs(2));
    let all = h.on(0);
    assert_eq!(all.len(), 110);
    assert_one_stream(&all);
    // After the pause the timestamp jumped by the time that passed, not by one frame.
    let gap = all[10].h.timestamp.wrapping_sub(all[9].h.timestamp);
    let elapsed = samples(all[10].at - all[9].at);
    assert!(gap.abs_diff(elapsed) <= 8, "timestamp step over the pause: {gap}, time: {elapsed}");
    assert!(elapsed > 8 * 1000);
    assert!(h.take_events().is_empty(), "looped music never finishes");
}

#[test]
fn relay_hold_and_resume_keep_each_side_one_continuous_stream_and_transcode() {
    let mut h = H::new(EngineConfig::default());
    h.open(1, Leg::A, media(a_sdp(), Codec::Pcma, Some(101)), 0xAAAA_0001, 100);
    h.play(1, Leg::A, &["music"], true, false);
    h.run_for(Duration::from_millis(205));
    h.open(1, Leg::B, media(b_sdp(), Codec::Pcmu, Some(96)), 0xBBBB_0002, 7000);
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::B });
    let (sa, sb) = (0, 1);
    let tone_a = vec![g711::linear_to_alaw(5000); 160];
    let tone_b = vec![g711::linear_to_ulaw(-3000); 160];
    let mut seq_a = 500u16;
    let mut seq_b = 9000u16;
    let mut talk = |h: &mut H, frames: u32, expect_to_a: bool| {
        for _ in 0..frames {
            h.run_for(FRAME);
            let fa = h.feed(sa, a_nat(), &rtp(8, false, seq_a, seq_a as u32 * 160, 0x5151, &tone_a));
            let fb = h.feed(sb, b_sdp(), &rtp(0, false, seq_b, seq_b as u32 * 160, 0x6262, &tone_b));
            seq_a = seq_a.wrapping_add(1);
            seq_b = seq_b.wrapping_add(1);
            let fa = fa.expect("the caller is always heard by the agent");
            assert_eq!((fa.socket, fa.dst, fa.h.payload_type, fa.h.ssrc), (sb, b_sdp(), 0, 0xBBBB_0002));
            assert_eq!(fa.payload, vec![g711::ALAW_TO_ULAW[tone_a[0] as usize]; 160], "A-law caller transcoded to μ-law");
            if expect_to_a {
                let fb = fb.expect("the agent is relayed to the caller");
                assert_eq!((fb.socket, fb.dst, fb.h.payload_type, fb.h.ssrc), (sa, a_nat(), 8, 0xAAAA_0001));
                assert_eq!(fb.payload, vec![g711::ULAW_TO_ALAW[tone_b[0] as usize]; 160]);
            } else {
                assert!(fb.is_none(), "the held caller hears music, not the agent");
            }
        }
    };
    talk(&mut h, 25, true);
    let ev = h.take_events();
    assert!(ev.contains(&MediaEvent::Latched { call: 1, leg: Leg::A, addr: a_nat() }), "{ev:?}");
    assert!(ev.contains(&MediaEvent::Latched { call: 1, leg: Leg::B, addr: b_sdp() }), "{ev:?}");
    // Hold: the caller hears music again; resume: the agent again.
    h.play(1, Leg::A, &["music"], true, false);
    talk(&mut h, 25, false);
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A });
    talk(&mut h, 25, true);
    let to_a = h.on(sa);
    assert_eq!(to_a[0].h.seq, 100);
    assert_one_stream(&to_a);
    let music_after_hold = to_a.iter().filter(|s| s.at > h.now - Duration::from_millis(1000) && s.h.seq > 100).count();
    assert!(music_after_hold > 40, "{music_after_hold}");
    let to_b = h.on(sb);
    assert_eq!(to_b.len(), 75);
    assert_eq!(to_b[0].h.seq, 7000, "the agent's stream starts with the identity of its Open");
    assert_one_stream(&to_b);
    // Markers at each hand-over toward the caller: stream start, relay, music, relay.
    assert_eq!(to_a.iter().filter(|s| s.h.marker).count(), 4);
}

#[test]
fn barge_in_stops_the_playlist_at_key_down_and_reports_the_digit_without_finished() {
    let mut h = H::new(EngineConfig::default());
    h.open(1, Leg::A, media(a_sdp(), Codec::Pcmu, Some(101)), 1, 1);
    h.play(1, Leg::A, &["menu"], false, true);
    h.run_for(Duration::from_millis(290));
    let before = h.sent.len();
    assert_eq!(before, 15);
    h.feed(0, a_sdp(), &dtmf(101, true, 10, 8000, 0x77, 2, false, 160));
    h.run_for(Duration::from_millis(150)); // within the receiver's end timeout (200 ms)
    assert_eq!(h.sent.len(), before, "the menu stopped at key down");
    assert_eq!(
        h.take_events(),
        vec![MediaEvent::Latched { call: 1, leg: Leg::A, addr: a_sdp() }],
        "the digit is reported when the key is released"
    );
    for (i, end) in [(11u16, false), (12, true), (13, true), (14, true)] {
        h.feed(0, a_sdp(), &dtmf(101, false, i, 8000, 0x77, 2, end, 160 * (i - 9)));
    }
    h.run_for(Duration::from_secs(2));
    assert_eq!(h.take_events(), vec![MediaEvent::Digit { call: 1, leg: Leg::A, digit: '2' }]);
    // A menu without barge-in plays on through a key press; the digit is still reported.
    h.play(1, Leg::A, &["guidance"], false, false);
    h.feed(0, a_sdp(), &dtmf(101, true, 20, 16000, 0x77, 9, true, 800));
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.sent.len(), before + 10);
    assert_eq!(h.take_events(), vec![
        MediaEvent::Digit { call: 1, leg: Leg::A, digit: '9' },
        MediaEvent::Finished { call: 1, leg: Leg::A },
    ]);
    assert_one_stream(&h.on(0));
}

#[test]
fn a_silent_caller_in_the_queue_is_reported_inactive_but_a_talking_or_held_one_is_not() {
    let config = EngineConfig {
        bridge: BridgeConfig { inactivity: Duration::from_secs(2), ..BridgeConfig::default() },
        ..EngineConfig::default()
    };
    let mut h = H::new(config);
    h.open(1, Leg::A, media(a_sdp(), Codec::Pcmu, None), 1, 1); // silent
    h.open(2, Leg::A, media(a_sdp(), Codec::Pcmu, None), 2, 1); // talks
    h.cmd(MediaCommand::Open {
        call: 3,
        leg: Leg::A,
        local_port: 30_000,
        media: media(a_sdp(), Codec::Pcmu, None),
        direction: Direction::SendOnly, // the caller holds: may be silent
        ssrc: 3,
        seq: 1,
        ts: 1,
    });
    for c in [1, 2, 3] {
        h.play(c, Leg::A, &["music"], true, false);
    }
    let talker = h.e.calls.get(&2).unwrap().legs[0].as_ref().unwrap().socket;
    for i in 0..150u16 {
        h.run_for(FRAME);
        h.feed(talker, a_sdp(), &rtp(0, false, i, i as u32 * 160, 9, &[0xFF; 160]));
    }
    let inactive: Vec<MediaEvent> = h.take_events().into_iter().filter(|e| matches!(e, MediaEvent::Inactive { .. })).collect();
    assert_eq!(inactive, vec![MediaEvent::Inactive { call: 1, leg: Leg::A }]);
    h.run_for(Duration::from_secs(10));
    assert!(h.take_events().contains(&MediaEvent::Inactive { call: 2, leg: Leg::A }), "once the talker stops too");
    assert!(!h.take_events().contains(&MediaEvent::Inactive { call: 3, leg: Leg::A }));
}

#[test]
fn latching_moves_the_announcement_to_where_the_caller_really_is() {
    let mut h = H::new(EngineConfig::default());
    h.open(1, Leg::A, media(a_sdp(), Codec::Pcmu, None), 1, 1);
    h.play(1, Leg::A, &["music"], true, false);
    h.run_for(Duration::from_millis(100));
    assert!(h.sent.iter().all(|s| s.dst == a_sdp()));
    h.feed(0, a_nat(), &rtp(0, false, 1, 160, 5, &[0xFF; 160]));
    assert_eq!(h.take_events(), vec![MediaEvent::Latched { call: 1, leg: Leg::A, addr: a_nat() }]);
    let n = h.sent.len();
    h.run_for(Duration::from_millis(100));
    assert!(h.sent[n..].iter().all(|s| s.dst == a_nat()));
    assert!(h.sent.len() >= n + 4);
    // A re-INVITE to sendonly from the caller (we must not send): nothing goes out, timing goes on.
    h.cmd(MediaCommand::Update { call: 1, leg: Leg::A, media: media(a_sdp(), Codec::Pcmu, None), direction: Direction::RecvOnly });
    let n = h.sent.len();
    h.run_for(Duration::from_millis(200));
    assert_eq!(h.sent.len(), n);
    // Back to sendrecv with a new address and the other law: the stream continues there, in A-law.
    let moved = addr("198.51.100.99:4100");
    h.cmd(MediaCommand::Update { call: 1, leg: Leg::A, media: media(moved, Codec::Pcma, None), direction: Direction::SendRecv });
    h.run_for(Duration::from_millis(200));
    let after = &h.sent[n..];
    assert!(after.len() >= 9);
    assert!(after.iter().all(|s| s.dst == moved && s.h.payload_type == 8), "{:?}", after[0]);
    assert_one_stream(&h.on(0));
}

#[test]
fn send_digit_takes_over_the_stream_then_gives_it_back() {
    let mut h = H::new(EngineConfig::default());
    h.open(1, Leg::A, media(a_sdp(), Codec::Pcmu, Some(101)), 0xA, 100);
    h.open(1, Leg::B, media(b_sdp(), Codec::Pcmu, Some(96)), 0xB, 200);
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::B });
    let mut seq = 0u16;
    let mut relayed = 0;
    let mut step = |h: &mut H| {
        h.run_for(FRAME);
        seq += 1;
        relayed += h.feed(0, a_sdp(), &rtp(0, false, seq, seq as u32 * 160, 0x99, &[0x55; 160])).is_some() as u32;
    };
    for _ in 0..10 {
        step(&mut h);
    }
    h.cmd(MediaCommand::SendDigit { call: 1, leg: Leg::B, digit: '5' });
    h.cmd(MediaCommand::SendDigit { call: 1, leg: Leg::B, digit: '#' });
    for _ in 0..40 {
        step(&mut h);
    }
    let to_b = h.on(1);
    assert_one_stream(&to_b);
    let events: Vec<(char, bool, bool)> = to_b
        .iter()
        .filter(|s| s.h.payload_type == 96)
        .map(|s| {
            let e = TelephoneEvent::parse(&s.payload).unwrap();
            (crate::media::dtmf::digit_from_event(e.event).unwrap(), e.end, s.h.marker)
        })
        .collect();
    // Each digit: 5 updates of 100 ms (the 5th already with E), then E twice more; marker on the first.
    let five: Vec<_> = events.iter().filter(|e| e.0 == '5').collect();
    let hash: Vec<_> = events.iter().filter(|e| e.0 == '#').collect();
    assert_eq!((five.len(), hash.len()), (7, 7), "{events:?}");
    assert!(five[0].2 && !five[1].2 && five[6].1 && !five[3].1);
    assert!(relayed < 50 && relayed > 30, "the relay paused during the digits: {relayed}");
    // The relay came back after the digits, in the same stream.
    assert_eq!(to_b.last().unwrap().h.payload_type, 0);
    let first_ev = to_b.iter().position(|s| s.h.payload_type == 96).unwrap();
    let ev_ts = to_b[first_ev].h.timestamp;
    assert!(to_b[first_ev - 1].h.timestamp.wrapping_sub(ev_ts) > 0x8000_0000 || to_b[first_ev - 1].h.timestamp == ev_ts);

    // A digit toward a leg hearing a playlist: the playlist goes on where it stopped.
    let mut h = H::new(EngineConfig::default());
    h.open(2, Leg::A, media(a_sdp(), Codec::Pcmu, Some(101)), 0xC, 1);
    h.play(2, Leg::A, &["menu"], false, false);
    h.run_for(Duration::from_millis(210)); // frames 0-10
    h.cmd(MediaCommand::SendDigit { call: 2, leg: Leg::A, digit: '1' });
    h.run_for(Duration::from_secs(2));
    let s = h.on(0);
    assert_one_stream(&s);
    let audio: Vec<u8> = s.iter().filter(|p| p.h.payload_type == 0).map(|p| p.payload[0]).collect();
    assert_eq!(audio.len(), 50, "every frame of the menu, none twice");
    let level = |i: usize| g711::linear_to_ulaw(((i % 50) as i16) * 400 + 400);
    assert!(audio.iter().enumerate().all(|(i, b)| *b == level(i)), "frames in order across the digit");
    assert_eq!(h.take_events(), vec![MediaEvent::Finished { call: 2, leg: Leg::A }]);
}

#[test]
fn recording_has_the_caller_left_and_the_agent_right() {
    let mut h = H::new(EngineConfig::default());
    h.open(1, Leg::A, media(a_sdp(), Codec::Pcma, None), 1, 1);
    h.open(1, Leg::B, media(b_sdp(), Codec::Pcmu, None), 2, 1);
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::B });
    h.cmd(MediaCommand::Record { call: 1, path: "/rec/1.wav".into() });
    for i in 0..100u16 {
        h.run_for(FRAME);
        h.feed(0, a_sdp(), &rtp(8, false, i, i as u32 * 160, 7, &[g711::linear_to_alaw(8000); 160]));
        h.feed(1, b_sdp(), &rtp(0, false, i, i as u32 * 160, 8, &[g711::linear_to_ulaw(-4000); 160]));
    }
    h.cmd(MediaCommand::Stop { call: 1 });
    let ops: Vec<RecordingOp> = std::iter::from_fn(|| h.e.poll_recording()).collect();
    assert_eq!(ops[0], RecordingOp::Start { id: 1, call: 1, path: "/rec/1.wav".into() });
    assert_eq!(ops.last(), Some(&RecordingOp::End { id: 1, call: 1, path: "/rec/1.wav".into() }));
    let data: Vec<u8> = ops.iter().flat_map(|o| match o { RecordingOp::Data { bytes, .. } => bytes.clone(), _ => vec![] }).collect();
    assert!(ops.len() >= 5, "chunks every 500 ms, then the rest at Stop");
    let frames: Vec<(i16, i16)> =
        data.chunks_exact(4).map(|c| (i16::from_le_bytes([c[0], c[1]]), i16::from_le_bytes([c[2], c[3]]))).collect();
    assert!((frames.len() as i64 - 16_000).abs() <= 160, "two seconds: {}", frames.len());
    let good = frames.iter().filter(|(l, r)| (l - 8000).abs() < 400 && (r + 4000).abs() < 200).count();
    assert!(good > frames.len() * 95 / 100, "{good} of {}", frames.len());
}

#[test]
fn failures_name_what_is_missing() {
    let mut h = H::new(EngineConfig::default());
    h.play(1, Leg::A, &["music"], true, false);
    h.open(1, Leg::A, media(a_sdp(), Codec::Pcmu, None), 1, 1);
    h.play(1, Leg::A, &["music", "nosuch"], true, false);
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A });
    h.cmd(MediaCommand::CloseLeg { call: 1, leg: Leg::B });
    h.s.refuse_port = Some(20_000 + 2 * 2);
    h.open(2, Leg::A, media(a_sdp(), Codec::Pcmu, None), 1, 1);
    let bind = MediaFailure::Bind { addr: SocketAddr::from(([127, 0, 0, 1], 20_004)), kind: std::io::ErrorKind::AddrInUse };
    assert_eq!(h.take_events(), vec![
        MediaEvent::Failed { call: 1, failure: MediaFailure::NoLeg { leg: Leg::A } },
        MediaEvent::Failed { call: 1, failure: MediaFailure::UnknownPrompt { name: "nosuch".into() } },
        MediaEvent::Failed { call: 1, failure: MediaFailure::NoLeg { leg: Leg::B } },
        MediaEvent::Failed { call: 1, failure: MediaFailure::NoLeg { leg: Leg::B } },
        MediaEvent::Failed { call: 2, failure: bind },
    ]);
    assert_eq!(h.e.calls(), 1, "a call whose only port failed is not kept");
}

#[test]
fn close_leg_keeps_the_caller_and_stop_closes_everything() {
    let mut h = H::new(EngineConfig::default());
    for call in 1..=200u64 {
        h.open(call, Leg::A, media(a_sdp(), Codec::Pcmu, Some(101)), 1, 1);
        h.play(call, Leg::A, &["music"], true, false);
        h.open(call, Leg::B, media(b_sdp(), Codec::Pcmu, Some(101)), 2, 1);
        h.cmd(MediaCommand::Relay { call, to_leg: Leg::A });
        h.cmd(MediaCommand::Relay { call, to_leg: Leg::B });
    }
    assert_eq!((h.s.open.len(), h.e.calls()), (400, 200));
    h.cmd(MediaCommand::CloseLeg { call: 1, leg: Leg::B });
    h.play(1, Leg::A, &["music"], true, false);
    h.run_for(Duration::from_millis(100));
    assert!(h.on(0).len() >= 4, "the caller hears music after the agent left");
    assert_eq!(h.s.open.len(), 399);
    // The agent's socket id is reused by a new call; the first call's leg B stays closed.
    h.open(1000, Leg::A, media(a_sdp(), Codec::Pcmu, None), 3, 1);
    h.cmd(MediaCommand::Play { call: 1, leg: Leg::B, playlist: vec!["music".into()], looped: true, barge_in: false });
    assert_eq!(h.take_events(), vec![MediaEvent::Failed { call: 1, failure: MediaFailure::NoLeg { leg: Leg::B } }]);
    for call in (1..=200u64).chain([1000]) {
        h.cmd(MediaCommand::Stop { call });
    }
    h.cmd(MediaCommand::Stop { call: 5 }); // twice: nothing happens
    assert!(h.s.open.is_empty(), "{:?}", h.s.open);
    assert_eq!((h.e.calls(), h.e.streams()), (0, 0));
    let n = h.sent.len();
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.sent.len(), n, "nothing is sent after Stop");
    assert_eq!(h.e.poll_timeout(), None, "and nothing is timed");
    let _ = MS;
}

// ---- Legs C and D, mixing and rebinding -------------------------------------------------------------

fn c_sdp() -> SocketAddr {
    addr("10.0.0.30:6000")
}
fn d_sdp() -> SocketAddr {
    addr("10.0.0.40:7000")
}

/// The level of a frame of constant samples (the mean of its decoded samples).
fn level_of(codec: Codec, payload: &[u8]) -> i32 {
    let d = |b: u8| {
        i32::from(match codec {
            Codec::Pcmu => g711::ulaw_to_linear(b),
            Codec::Pcma => g711::alaw_to_linear(b),
        })
    };
    payload.iter().map(|&b| d(b)).sum::<i32>() / payload.len().max(1) as i32
}

/// Within the error of two or three G.711 quantisations.
fn about(got: i32, want: i32) -> bool {
    (got - want).abs() <= want.abs() / 16 + 24
}

/// A phone that says one constant level, one 20 ms packet per call of `packet`.
struct Talker {
    socket: u32,
    src: SocketAddr,
    codec: Codec,
    level: i16,
    ssrc: u32,
    seq: u16,
}

impl Talker {
    fn new(socket: u32, src: SocketAddr, codec: Codec, level: i16) -> Talker {
        Talker { socket, src, codec, level, ssrc: 0x7000 + socket, seq: 1 }
    }
    fn packet(&mut self) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let b = match self.codec {
            Codec::Pcmu => g711::linear_to_ulaw(self.level),
            Codec::Pcma => g711::linear_to_alaw(self.level),
        };
        rtp(self.codec.payload_type(), false, self.seq, u32::from(self.seq) * 160, self.ssrc, &[b; 160])
    }
}

/// `frames` × 20 ms: the engine's deadlines, then one packet from each talker.
fn talk(h: &mut H, talkers: &mut [&mut Talker], frames: usize) {
    for _ in 0..frames {
        h.run_for(FRAME);
        for t in talkers.iter_mut() {
            let p = t.packet();
            h.feed(t.socket, t.src, &p);
        }
    }
}

/// The levels heard on `socket` since `since` (in `codec`), packet by packet.
fn heard(h: &H, socket: u32, since: Instant, codec: Codec) -> Vec<i32> {
    h.on(socket).iter().filter(|s| s.at >= since && s.h.payload_type == codec.payload_type()).map(|s| level_of(codec, &s.payload)).collect()
}

/// Over the last `n` packets since `since` on `socket`, the leg heard `want` (and only that).
#[track_caller]
fn assert_hears(h: &H, socket: u32, since: Instant, codec: Codec, want: i32, what: &str) {
    let l = heard(h, socket, since, codec);
    assert!(l.len() >= 20, "{what}: only {} packets", l.len());
    let tail = &l[l.len() - 15..];
    assert!(tail.iter().all(|&x| about(x, want)), "{what}: heard {tail:?}, expected {want}");
}

fn open_leg(h: &mut H, call: CallKey, leg: Leg, m: LegMedia, ssrc: u32, seq: u16) {
    let local_port = 20_000 + 2 * call as u16 + 1000 * leg.index() as u16;
    h.cmd(MediaCommand::Open { call, leg, local_port, media: m, direction: Direction::SendRecv, ssrc, seq, ts: 1_000 });
}

fn mix(h: &mut H, call: CallKey, to_leg: Leg, from: &[Leg]) {
    h.cmd(MediaCommand::Mix { call, to_leg, from: from.to_vec() });
}

#[test]
fn a_conference_of_pcma_and_pcmu_legs_each_hears_the_other_two_summed_and_not_itself() {
    let mut h = H::new(EngineConfig::default());
    open_leg(&mut h, 1, Leg::A, media(a_sdp(), Codec::Pcma, Some(101)), 0xA, 100);
    open_leg(&mut h, 1, Leg::B, media(b_sdp(), Codec::Pcmu, Some(101)), 0xB, 200);
    open_leg(&mut h, 1, Leg::C, media(c_sdp(), Codec::Pcma, None), 0xC, 300);
    let (mut a, mut b, mut c) =
        (Talker::new(0, a_sdp(), Codec::Pcma, 1000), Talker::new(1, b_sdp(), Codec::Pcmu, 2000), Talker::new(2, c_sdp(), Codec::Pcma, 4000));
    // The duplicate and the leg itself in `from` are ignored.
    mix(&mut h, 1, Leg::A, &[Leg::B, Leg::C, Leg::A, Leg::B]);
    mix(&mut h, 1, Leg::B, &[Leg::A, Leg::C]);
    mix(&mut h, 1, Leg::C, &[Leg::A, Leg::B]);
    assert_eq!((h.e.mixers(), h.e.mixing_scheduled()), (1, 1));
    let t0 = h.now;
    talk(&mut h, &mut [&mut a, &mut b, &mut c], 50);
    assert_hears(&h, 0, t0, Codec::Pcma, 6000, "A (PCMA) hears B + C");
    assert_hears(&h, 1, t0, Codec::Pcmu, 5000, "B (PCMU) hears A + C");
    assert_hears(&h, 2, t0, Codec::Pcma, 3000, "C (PCMA) hears A + B");
    for (socket, ssrc, seq0) in [(0, 0xA, 100), (1, 0xB, 200), (2, 0xC, 300)] {
        let s = h.on(socket);
        assert!((49..=51).contains(&s.len()), "one packet per 20 ms: {}", s.len());
        assert_one_stream(&s);
        assert_eq!((s[0].h.ssrc, s[0].h.seq, s[0].h.marker), (ssrc, seq0, true), "the Open's identity, marker first");
        assert!(s[1..].iter().all(|p| !p.h.marker));
        assert!(s.windows(2).all(|w| w[1].h.timestamp.wrapping_sub(w[0].h.timestamp) == 160 && w[1].at - w[0].at == FRAME));
    }
    assert!(h.take_events().iter().all(|e| matches!(e, MediaEvent::Latched { .. })));
}

#[test]
fn a_stream_stays_one_across_relay_mix_and_relay_with_a_marker_at_each_switch() {
    let mut h = H::new(EngineConfig::default());
    open_leg(&mut h, 1, Leg::A, media(a_sdp(), Codec::Pcmu, None), 0xA, 100);
    open_leg(&mut h, 1, Leg::B, media(b_sdp(), Codec::Pcmu, None), 0xB, 60_000);
    open_leg(&mut h, 1, Leg::D, media(d_sdp(), Codec::Pcma, None), 0xD, 1);
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::B });
    let (mut a, mut b, mut d) =
        (Talker::new(0, a_sdp(), Codec::Pcmu, 1000), Talker::new(1, b_sdp(), Codec::Pcmu, 2000), Talker::new(2, d_sdp(), Codec::Pcma, 4000));
    talk(&mut h, &mut [&mut a, &mut b, &mut d], 25);
    let first_mixed = h.on(1).len();
    // Whisper: the agent hears the caller and the supervisor; the caller keeps hearing the agent.
    mix(&mut h, 1, Leg::B, &[Leg::A, Leg::D]);
    talk(&mut h, &mut [&mut a, &mut b, &mut d], 25);
    let first_relayed_again = h.on(1).len();
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::B });
    talk(&mut h, &mut [&mut a, &mut b, &mut d], 25);
    let to_b = h.on(1);
    assert_one_stream(&to_b);
    assert!(to_b.iter().all(|s| s.h.ssrc == 0xB));
    let markers: Vec<usize> = to_b.iter().enumerate().filter(|(_, s)| s.h.marker).map(|(i, _)| i).collect();
    assert_eq!(markers, vec![0, first_mixed, first_relayed_again], "a marker at the start and at each switch only");
    // Timestamps follow the wall clock across the switches: never back, never a jump.
    for w in to_b.windows(2) {
        let dt = w[1].h.timestamp.wrapping_sub(w[0].h.timestamp);
        assert!((160..=480).contains(&dt), "timestamp step {dt} at {:?}", w[1].h);
    }
    let lv: Vec<i32> = to_b.iter().map(|s| level_of(Codec::Pcmu, &s.payload)).collect();
    // The mix's first frame goes out at the switch instant (the next millisecond), so its 500 ms have a
    // frame at both ends; the relay sends as packets come.
    assert_eq!((first_mixed, first_relayed_again - first_mixed, to_b.len() - first_relayed_again), (25, 26, 25), "one packet per 20 ms");
    assert!(about(lv[first_mixed - 1], 1000) && about(lv[first_relayed_again - 1], 5000) && about(*lv.last().unwrap(), 1000), "{lv:?}");
    // The caller heard the agent by the relay the whole time, never the supervisor.
    let to_a = heard(&h, 0, h.now - Duration::from_secs(2), Codec::Pcmu);
    assert_eq!(to_a.len(), 75);
    assert!(to_a.iter().all(|&x| about(x, 2000)), "{to_a:?}");
    assert_eq!((h.e.mixers(), h.e.mixing_scheduled()), (0, 0), "no leg mixes: the mixer is gone");
}

#[test]
fn consultation_then_completion_the_caller_hears_the_consulted_party_on_its_stream() {
    let mut h = H::new(EngineConfig::default());
    open_leg(&mut h, 1, Leg::A, media(a_sdp(), Codec::Pcma, None), 0xA, 100);
    open_leg(&mut h, 1, Leg::B, media(b_sdp(), Codec::Pcmu, None), 0xB, 200);
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::B });
    let (mut a, mut b) = (Talker::new(0, a_sdp(), Codec::Pcma, 1000), Talker::new(1, b_sdp(), Codec::Pcmu, 2000));
    talk(&mut h, &mut [&mut a, &mut b], 10);
    // Consultation: the caller on hold with music, the agent and the department hear each other.
    h.play(1, Leg::A, &["music"], true, false);
    open_leg(&mut h, 1, Leg::C, media(c_sdp(), Codec::Pcma, None), 0xC, 300);
    let mut c = Talker::new(2, c_sdp(), Codec::Pcma, 4000);
    mix(&mut h, 1, Leg::B, &[Leg::C]);
    mix(&mut h, 1, Leg::C, &[Leg::B]);
    let t0 = h.now;
    talk(&mut h, &mut [&mut a, &mut b, &mut c], 40);
    assert_hears(&h, 1, t0, Codec::Pcmu, 4000, "the agent hears the department (not the caller)");
    assert_hears(&h, 2, t0, Codec::Pcma, 2000, "the department hears the agent (not the caller)");
    let music_levels: Vec<i32> = (0..7).map(|i| i * 400 + 400).collect();
    let to_a = heard(&h, 0, t0, Codec::Pcma);
    assert!(to_a.len() >= 39 && to_a.iter().all(|&x| music_levels.iter().any(|&m| about(x, m))), "the caller hears music only: {to_a:?}");
    // Completion: the agent leaves, the department takes its place, caller and department are relayed.
    h.cmd(MediaCommand::CloseLeg { call: 1, leg: Leg::B });
    h.cmd(MediaCommand::Rebind { call: 1, from: Leg::C, to: Leg::B });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::B });
    assert_eq!((h.e.mixers(), h.e.mixing_scheduled()), (0, 0));
    let t1 = h.now;
    talk(&mut h, &mut [&mut a, &mut c], 25);
    let to_a = heard(&h, 0, t1, Codec::Pcma);
    assert!(to_a.len() >= 24 && to_a.iter().all(|&x| about(x, 4000)), "the caller hears the department: {to_a:?}");
    let to_c = h.on(2);
    assert_one_stream(&to_c);
    assert!(to_c.iter().all(|s| s.h.ssrc == 0xC && s.h.payload_type == 8), "the department's stream keeps its identity");
    assert_eq!(to_c[0].h.seq, 300);
    let relayed: Vec<&&Sent> = to_c.iter().filter(|s| s.at > t1).collect();
    assert!(relayed[0].h.marker && about(level_of(Codec::Pcma, &relayed[0].payload), 1000), "then the caller, from the switch on");
    assert!(h.on(1).iter().all(|s| s.at <= t1), "nothing toward the agent's closed port");
    assert!(!h.take_events().iter().any(|e| matches!(e, MediaEvent::Failed { .. })));
    // The department is leg B now: its commands and its events say B.
    h.cmd(MediaCommand::Play { call: 1, leg: Leg::C, playlist: vec!["music".into()], looped: true, barge_in: false });
    assert_eq!(h.take_events(), vec![MediaEvent::Failed { call: 1, failure: MediaFailure::NoLeg { leg: Leg::C } }]);
    h.cmd(MediaCommand::Stop { call: 1 });
    assert!(h.s.open.is_empty(), "every socket closed once: {:?}", h.s.open);
}

#[test]
fn supervisor_listen_whisper_and_barge_each_leg_hears_what_it_should() {
    let mut h = H::new(EngineConfig::default());
    open_leg(&mut h, 1, Leg::A, media(a_sdp(), Codec::Pcmu, None), 0xA, 1);
    open_leg(&mut h, 1, Leg::B, media(b_sdp(), Codec::Pcma, None), 0xB, 1);
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::B });
    open_leg(&mut h, 1, Leg::D, media(d_sdp(), Codec::Pcmu, None), 0xD, 1);
    let (mut a, mut b, mut d) =
        (Talker::new(0, a_sdp(), Codec::Pcmu, 1000), Talker::new(1, b_sdp(), Codec::Pcma, 2000), Talker::new(2, d_sdp(), Codec::Pcmu, 4000));
    // Listen.
    mix(&mut h, 1, Leg::D, &[Leg::A, Leg::B]);
    let t = h.now;
    talk(&mut h, &mut [&mut a, &mut b, &mut d], 30);
    assert_hears(&h, 0, t, Codec::Pcmu, 2000, "listen: the caller hears the agent only");
    assert_hears(&h, 1, t, Codec::Pcma, 1000, "listen: the agent hears the caller only");
    assert_hears(&h, 2, t, Codec::Pcmu, 3000, "listen: the supervisor hears both");
    // Whisper.
    mix(&mut h, 1, Leg::B, &[Leg::A, Leg::D]);
    let t = h.now;
    talk(&mut h, &mut [&mut a, &mut b, &mut d], 30);
    assert_hears(&h, 0, t, Codec::Pcmu, 2000, "whisper: the caller hears the agent only");
    assert_hears(&h, 1, t, Codec::Pcma, 5000, "whisper: the agent hears the caller and the supervisor");
    assert_hears(&h, 2, t, Codec::Pcmu, 3000, "whisper: the supervisor hears both");
    // Barge.
    mix(&mut h, 1, Leg::A, &[Leg::B, Leg::D]);
    let t = h.now;
    talk(&mut h, &mut [&mut a, &mut b, &mut d], 30);
    assert_hears(&h, 0, t, Codec::Pcmu, 6000, "barge: the caller hears the agent and the supervisor");
    assert_hears(&h, 1, t, Codec::Pcma, 5000, "barge: the agent hears the caller and the supervisor");
    assert_hears(&h, 2, t, Codec::Pcmu, 3000, "barge: the supervisor hears both");
    // The supervisor leaves.
    h.cmd(MediaCommand::CloseLeg { call: 1, leg: Leg::D });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::B });
    let t = h.now;
    talk(&mut h, &mut [&mut a, &mut b], 30);
    assert_hears(&h, 0, t, Codec::Pcmu, 2000, "after: the caller hears the agent");
    assert_hears(&h, 1, t, Codec::Pcma, 1000, "after: the agent hears the caller");
    assert_one_stream(&h.on(0));
    assert_one_stream(&h.on(1));
    assert_eq!((h.e.mixers(), h.e.mixing_scheduled()), (0, 0));
}

#[test]
fn a_closed_input_is_silence_and_a_silent_consulted_party_is_reported_inactive() {
    let config = EngineConfig {
        bridge: BridgeConfig { inactivity: Duration::from_secs(2), ..BridgeConfig::default() },
        ..EngineConfig::default()
    };
    let mut h = H::new(config);
    open_leg(&mut h, 1, Leg::B, media(b_sdp(), Codec::Pcmu, None), 0xB, 1);
    open_leg(&mut h, 1, Leg::C, media(c_sdp(), Codec::Pcmu, None), 0xC, 1);
    let (mut b, mut c) = (Talker::new(0, b_sdp(), Codec::Pcmu, 2000), Talker::new(1, c_sdp(), Codec::Pcmu, 4000));
    mix(&mut h, 1, Leg::B, &[Leg::C]);
    let t = h.now;
    talk(&mut h, &mut [&mut b, &mut c], 25);
    assert_hears(&h, 0, t, Codec::Pcmu, 4000, "the agent hears the department");
    h.cmd(MediaCommand::CloseLeg { call: 1, leg: Leg::C });
    let t = h.now;
    talk(&mut h, &mut [&mut b], 25);
    let after: Vec<&Sent> = h.on(0).into_iter().filter(|s| s.at > t).collect();
    assert!(after.len() >= 24, "the mix goes on");
    assert!(after.iter().all(|s| s.payload == [g711::ULAW_SILENCE; 160]), "a closed input is silence");
    assert_one_stream(&h.on(0));
    // A new consulted party that never sends: reported after the inactivity time, as leg C.
    open_leg(&mut h, 1, Leg::C, media(c_sdp(), Codec::Pcmu, None), 0xC2, 1);
    h.take_events();
    talk(&mut h, &mut [&mut b], 150);
    assert_eq!(h.take_events(), vec![MediaEvent::Inactive { call: 1, leg: Leg::C }]);
}

#[test]
fn no_mixer_state_is_left_after_relay_close_leg_or_stop() {
    let mut h = H::new(EngineConfig::default());
    for call in 1..=100u64 {
        open_leg(&mut h, call, Leg::A, media(a_sdp(), Codec::Pcmu, None), 1, 1);
        open_leg(&mut h, call, Leg::B, media(b_sdp(), Codec::Pcmu, None), 2, 1);
        open_leg(&mut h, call, Leg::C, media(c_sdp(), Codec::Pcmu, None), 3, 1);
        mix(&mut h, call, Leg::A, &[Leg::B, Leg::C]);
        mix(&mut h, call, Leg::B, &[Leg::A, Leg::C]);
        mix(&mut h, call, Leg::C, &[Leg::A, Leg::B]);
    }
    h.run_for(Duration::from_millis(100));
    assert_eq!((h.e.mixers(), h.e.mixing_scheduled(), h.s.open.len()), (100, 100, 300));
    assert!(h.sent.len() >= 100 * 3 * 4, "{}", h.sent.len());
    // Calls 1-50: the conference ends by closing C and relaying A and B (no mixer left);
    // calls 51-60: C closes but A and B still hear mixes (the mixer stays); the rest: Stop.
    for call in 1..=60u64 {
        h.cmd(MediaCommand::CloseLeg { call, leg: Leg::C });
        if call <= 50 {
            h.cmd(MediaCommand::Relay { call, to_leg: Leg::A });
            h.cmd(MediaCommand::Relay { call, to_leg: Leg::B });
        }
    }
    assert_eq!((h.e.mixers(), h.e.mixing_scheduled()), (50, 50));
    for call in 51..=100u64 {
        h.cmd(MediaCommand::CloseLeg { call, leg: Leg::A });
        h.cmd(MediaCommand::CloseLeg { call, leg: Leg::B });
    }
    assert_eq!((h.e.mixers(), h.e.mixing_scheduled()), (40, 40), "calls 61-100 still have C hearing a mix");
    for call in 1..=100u64 {
        h.cmd(MediaCommand::Stop { call });
    }
    assert_eq!((h.e.mixers(), h.e.mixing_scheduled(), h.e.calls(), h.e.streams()), (0, 0, 0, 0));
    assert!(h.s.open.is_empty());
    assert_eq!(h.e.poll_timeout(), None, "nothing is timed");
    let n = h.sent.len();
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.sent.len(), n);
}

#[test]
fn mix_relay_and_rebind_refuse_what_the_contract_refuses() {
    let mut h = H::new(EngineConfig::default());
    open_leg(&mut h, 1, Leg::A, media(a_sdp(), Codec::Pcmu, None), 1, 1);
    open_leg(&mut h, 1, Leg::C, media(c_sdp(), Codec::Pcmu, None), 3, 1);
    open_leg(&mut h, 1, Leg::D, media(d_sdp(), Codec::Pcmu, None), 4, 1);
    h.take_events();
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::C });
    h.cmd(MediaCommand::Relay { call: 1, to_leg: Leg::A }); // B not open
    mix(&mut h, 1, Leg::B, &[Leg::A]);
    mix(&mut h, 2, Leg::A, &[Leg::B]);
    h.cmd(MediaCommand::Rebind { call: 1, from: Leg::B, to: Leg::C }); // from not open
    h.cmd(MediaCommand::Rebind { call: 1, from: Leg::C, to: Leg::D }); // to open
    h.cmd(MediaCommand::Rebind { call: 1, from: Leg::C, to: Leg::C });
    let no = |leg| MediaEvent::Failed { call: 1, failure: MediaFailure::NoLeg { leg } };
    assert_eq!(h.take_events(), vec![
        no(Leg::C),
        no(Leg::B),
        no(Leg::B),
        MediaEvent::Failed { call: 2, failure: MediaFailure::NoLeg { leg: Leg::A } },
        no(Leg::B),
        no(Leg::C),
        no(Leg::C),
    ]);
    assert_eq!((h.e.mixers(), h.s.open.len()), (0, 3), "nothing changed");
    // A mix of only absent legs is a comfort stream of silence; the absent leg is heard once it opens.
    mix(&mut h, 1, Leg::A, &[Leg::B]);
    h.run_for(Duration::from_millis(200));
    assert!(h.on(0).len() >= 9 && h.on(0).iter().all(|s| s.payload == [g711::ULAW_SILENCE; 160]));
    open_leg(&mut h, 1, Leg::B, media(b_sdp(), Codec::Pcmu, None), 2, 1);
    let mut b = Talker::new(3, b_sdp(), Codec::Pcmu, 3000);
    let t = h.now;
    talk(&mut h, &mut [&mut b], 25);
    assert_hears(&h, 0, t, Codec::Pcmu, 3000, "the caller hears B once B is open");
}

#[test]
fn a_digit_toward_a_mixing_leg_takes_the_stream_then_gives_the_mix_back() {
    let mut h = H::new(EngineConfig::default());
    open_leg(&mut h, 1, Leg::B, media(b_sdp(), Codec::Pcmu, Some(101)), 0xB, 1);
    open_leg(&mut h, 1, Leg::C, media(c_sdp(), Codec::Pcmu, None), 0xC, 1);
    let mut c = Talker::new(1, c_sdp(), Codec::Pcmu, 4000);
    mix(&mut h, 1, Leg::B, &[Leg::C]);
    talk(&mut h, &mut [&mut c], 10);
    h.cmd(MediaCommand::SendDigit { call: 1, leg: Leg::B, digit: '7' });
    assert_eq!(h.e.mixers(), 1, "the mix is kept for after the digit");
    talk(&mut h, &mut [&mut c], 30);
    let to_b = h.on(0);
    assert_one_stream(&to_b);
    let kinds: Vec<u8> = to_b.iter().map(|s| s.h.payload_type).collect();
    let first_ev = kinds.iter().position(|&p| p == 101).unwrap();
    let last_ev = kinds.iter().rposition(|&p| p == 101).unwrap();
    assert_eq!(kinds[first_ev..=last_ev].iter().filter(|&&p| p == 101).count(), 7, "{kinds:?}");
    assert!(kinds[first_ev..=last_ev].iter().all(|&p| p == 101), "no mix packet inside the digit");
    let back = &to_b[last_ev + 1..];
    assert!(back.len() >= 15 && back[0].h.marker && back.iter().all(|s| s.h.payload_type == 0 && about(level_of(Codec::Pcmu, &s.payload), 4000)));
    assert!(back[0].h.timestamp.wrapping_sub(to_b[last_ev].h.timestamp) < 0x8000_0000);
}

#[test]
fn the_recording_has_the_consulted_party_and_a_barging_supervisor_on_the_right() {
    let mut h = H::new(EngineConfig::default());
    open_leg(&mut h, 1, Leg::A, media(a_sdp(), Codec::Pcma, None), 1, 1);
    open_leg(&mut h, 1, Leg::B, media(b_sdp(), Codec::Pcmu, None), 2, 1);
    open_leg(&mut h, 1, Leg::C, media(c_sdp(), Codec::Pcmu, None), 3, 1);
    open_leg(&mut h, 1, Leg::D, media(d_sdp(), Codec::Pcmu, None), 4, 1);
    h.cmd(MediaCommand::Record { call: 1, path: "/rec/1.wav".into() });
    let mut t: Vec<Talker> = [(0, a_sdp(), Codec::Pcma, 1000), (1, b_sdp(), Codec::Pcmu, 2000), (2, c_sdp(), Codec::Pcmu, 4000), (3, d_sdp(), Codec::Pcmu, 8000)]
        .into_iter()
        .map(|(s, a, c, l)| Talker::new(s, a, c, l))
        .collect();
    // One second of conference with the supervisor listening, then one second of barge.
    mix(&mut h, 1, Leg::A, &[Leg::B, Leg::C]);
    mix(&mut h, 1, Leg::B, &[Leg::A, Leg::C]);
    mix(&mut h, 1, Leg::C, &[Leg::A, Leg::B]);
    mix(&mut h, 1, Leg::D, &[Leg::A, Leg::B, Leg::C]);
    let [a, b, c, d] = &mut t[..] else { unreachable!() };
    talk(&mut h, &mut [a, b, c, d], 50);
    mix(&mut h, 1, Leg::A, &[Leg::B, Leg::C, Leg::D]);
    talk(&mut h, &mut [a, b, c, d], 50);
    h.cmd(MediaCommand::Stop { call: 1 });
    let ops: Vec<RecordingOp> = std::iter::from_fn(|| h.e.poll_recording()).collect();
    let data: Vec<u8> = ops.iter().flat_map(|o| match o { RecordingOp::Data { bytes, .. } => bytes.clone(), _ => vec![] }).collect();
    let frames: Vec<(i16, i16)> =
        data.chunks_exact(4).map(|c| (i16::from_le_bytes([c[0], c[1]]), i16::from_le_bytes([c[2], c[3]]))).collect();
    assert!((frames.len() as i64 - 16_000).abs() <= 320, "two seconds: {}", frames.len());
    let (listen, barge) = (&frames[1000..7000], &frames[9000..15_000]);
    assert!(listen.iter().all(|&(l, r)| about(l.into(), 1000) && about(r.into(), 6000)), "listening: B + C right, not D: {:?}", listen[0]);
    let bad: Vec<(usize, (i16, i16))> = barge.iter().copied().enumerate().filter(|&(_, (l, r))| !(about(l.into(), 1000) && about(r.into(), 14_000))).collect();
    assert!(bad.is_empty(), "barging: B + C + D right: {} bad, {:?} .. {:?}", bad.len(), bad.first(), bad.last());
}

#[test]
fn a_late_engine_sends_at_most_a_short_burst_and_the_timestamps_keep_to_the_clock() {
    let mut h = H::new(EngineConfig::default());
    open_leg(&mut h, 1, Leg::B, media(b_sdp(), Codec::Pcmu, None), 0xB, 1);
    mix(&mut h, 1, Leg::B, &[Leg::C]);
    h.run_for(Duration::from_millis(100));
    let n = h.sent.len();
    // The thread stalls for 200 ms: one handle_timeout at the end.
    h.now += Duration::from_millis(200);
    let now = h.now;
    let mut burst = Vec::new();
    h.e.handle_timeout(now, &mut |o: Outgoing<'_>| burst.push(RtpHeader::parse(&[o.header, o.payload].concat()).unwrap()));
    assert_eq!(burst.len(), 3, "MAX_BURST frames, not ten");
    assert!(burst.windows(2).all(|w| w[1].seq == w[0].seq.wrapping_add(1) && w[1].timestamp.wrapping_sub(w[0].timestamp) == 160));
    let last_before = h.sent[n - 1].h;
    let skipped = burst[0].timestamp.wrapping_sub(last_before.timestamp);
    assert_eq!(skipped, 8 * 160, "the skipped frames' time passes in the timestamp");
    assert_eq!(burst[0].seq, last_before.seq.wrapping_add(1), "but not in the sequence");
}

#[test]
fn after_a_rebind_the_mixes_that_named_the_leg_hear_it_by_its_new_name() {
    let mut h = H::new(EngineConfig::default());
    open_leg(&mut h, 1, Leg::A, media(a_sdp(), Codec::Pcmu, None), 0xA, 1);
    open_leg(&mut h, 1, Leg::C, media(c_sdp(), Codec::Pcmu, None), 0xC, 1);
    open_leg(&mut h, 1, Leg::D, media(d_sdp(), Codec::Pcmu, None), 0xD, 1);
    let (mut a, mut c, mut d) =
        (Talker::new(0, a_sdp(), Codec::Pcmu, 1000), Talker::new(1, c_sdp(), Codec::Pcmu, 4000), Talker::new(2, d_sdp(), Codec::Pcmu, 8000));
    mix(&mut h, 1, Leg::A, &[Leg::C]);
    mix(&mut h, 1, Leg::C, &[Leg::A, Leg::D]);
    mix(&mut h, 1, Leg::D, &[Leg::A, Leg::C]);
    talk(&mut h, &mut [&mut a, &mut c, &mut d], 25);
    h.cmd(MediaCommand::Rebind { call: 1, from: Leg::C, to: Leg::B });
    let t = h.now;
    talk(&mut h, &mut [&mut a, &mut c, &mut d], 25);
    assert_hears(&h, 0, t, Codec::Pcmu, 4000, "the caller still hears the former C, now B");
    assert_hears(&h, 1, t, Codec::Pcmu, 9000, "the former C still hears A and D");
    assert_hears(&h, 2, t, Codec::Pcmu, 5000, "the supervisor still hears A and the former C");
    for s in 0..3 {
        assert_one_stream(&h.on(s));
    }
    // Commands name it B now; C is free for a new consulted party.
    mix(&mut h, 1, Leg::B, &[Leg::A]);
    open_leg(&mut h, 1, Leg::C, media(c_sdp(), Codec::Pcmu, None), 0xC2, 1);
    let t = h.now;
    talk(&mut h, &mut [&mut a, &mut c, &mut d], 25);
    assert_hears(&h, 1, t, Codec::Pcmu, 1000, "B hears A only now");
    assert!(!h.take_events().iter().any(|e| matches!(e, MediaEvent::Failed { .. })));
}
