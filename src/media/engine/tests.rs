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
