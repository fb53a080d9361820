//! The mixer over real sockets: the media threads (`edge::media`) with UDP peers on loopback that each
//! say one tone (caller 440 Hz, agent 700 Hz, consulted party 1100 Hz, supervisor 1600 Hz; hold music
//! 300 Hz), and what each peer receives checked by frequency (Goertzel): who hears whom in a
//! conference, a consultation and its completion, supervisor listen, whisper and barge, in PCMA and
//! PCMU, and that every leg's stream keeps one identity through relay → mix → relay.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use callgate::edge::media::{spawn_with, MediaConfig, MediaTx};
use callgate::media::command::{Direction, Leg, LegMedia, MediaCommand, MediaEvent};
use callgate::media::prompt::{Prompt, PromptSet};
use callgate::media::rtp::{write_header, RtpHeader};
use callgate::media::{g711, Codec};
use callgate::metrics::Metrics;
use tokio::sync::mpsc::UnboundedReceiver;

mod common;
use common::baresip::tone_power;

const F_A: f64 = 440.0;
const F_B: f64 = 700.0;
const F_C: f64 = 1100.0;
const F_D: f64 = 1600.0;
const F_MUSIC: f64 = 300.0;
const AMP: f64 = 5000.0;

/// Powers are [`tone_power`]'s: a sine of amplitude X gives X²/4.
/// A tone this loud is heard (a sine of amplitude ~1000, a fifth of what the peers say).
const HEARD: f64 = 250_000.0;
/// A tone this quiet is not (amplitude ~280, 25 dB under a speaker: G.711 noise and the leakage of a
/// switch measure below 400 here).
const NOT_HEARD: f64 = 20_000.0;

fn encode(codec: Codec, x: i16) -> u8 {
    match codec {
        Codec::Pcmu => g711::linear_to_ulaw(x),
        Codec::Pcma => g711::linear_to_alaw(x),
    }
}

/// An even port whose pair (port, port + 1) is free now.
fn free_port_pair() -> u16 {
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p.is_multiple_of(2) && p < 65_000 {
            drop(s);
            if UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() && UdpSocket::bind(("127.0.0.1", p)).is_ok() {
                return p;
            }
        }
    }
}

/// A phone on loopback: says its tone to callgate's port for its leg, keeps what callgate sends it.
struct Peer {
    name: &'static str,
    sock: UdpSocket,
    /// callgate's RTP port for this leg.
    port: u16,
    codec: Codec,
    freq: f64,
    ssrc: u32,
    seq: u16,
    /// Samples said so far (the tone's phase).
    k: usize,
    got: Vec<(RtpHeader, Vec<u8>)>,
}

impl Peer {
    fn new(name: &'static str, codec: Codec, freq: f64, ssrc: u32) -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        Peer { name, sock, port: free_port_pair(), codec, freq, ssrc, seq: 1000, k: 0, got: Vec::new() }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn media(&self) -> LegMedia {
        LegMedia { remote: Some(self.addr()), codec: self.codec, audio_pt: self.codec.payload_type(), dtmf_pt: Some(101), ptime_ms: 20 }
    }

    /// One 20 ms frame of its tone.
    fn say(&mut self) {
        let mut pkt = [0u8; 12 + 160];
        let mut h = [0u8; 12];
        write_header(&mut h, self.codec.payload_type(), false, self.seq, self.k as u32, self.ssrc);
        pkt[..12].copy_from_slice(&h);
        for i in 0..160 {
            let t = (self.k + i) as f64 / 8000.0;
            pkt[12 + i] = encode(self.codec, (AMP * (2.0 * std::f64::consts::PI * self.freq * t).sin()) as i16);
        }
        self.k += 160;
        self.seq = self.seq.wrapping_add(1);
        let _ = self.sock.send_to(&pkt, ("127.0.0.1", self.port));
    }

    fn receive(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            if let Ok(h) = RtpHeader::parse(&buf[..n]) {
                self.got.push((h, h.payload(&buf[..n]).to_vec()));
            }
        }
    }

    /// The audio received from packet `from` on (skipping the first `settle` of them), decoded.
    fn heard(&self, from: usize, settle: usize) -> Vec<f64> {
        self.got[(from + settle).min(self.got.len())..]
            .iter()
            .filter(|(h, _)| h.payload_type == 0 || h.payload_type == 8)
            .flat_map(|(h, p)| {
                let pt = h.payload_type;
                p.iter().map(move |&b| f64::from(if pt == 0 { g711::ulaw_to_linear(b) } else { g711::alaw_to_linear(b) }))
            })
            .collect()
    }

    /// Since packet `from`: every tone of `hears` is heard, none of `not`.
    #[track_caller]
    fn assert_hears(&self, from: usize, hears: &[f64], not: &[f64], what: &str) {
        let x = self.heard(from, 10);
        assert!(x.len() >= 20 * 160, "{what}: {} heard only {} samples", self.name, x.len());
        let p = |hz: f64| tone_power(&x, 8000, hz);
        let report = || {
            [F_A, F_B, F_C, F_D, F_MUSIC].iter().map(|&f| format!("{f} Hz: {:.0}", p(f))).collect::<Vec<_>>().join(", ")
        };
        if std::env::var_os("MIXER_TEST_VERBOSE").is_some() {
            eprintln!("{what}: {}: {}", self.name, report());
        }
        for &f in hears {
            assert!(p(f) > HEARD, "{what}: {} does not hear {f} Hz ({})", self.name, report());
        }
        for &f in not {
            assert!(p(f) < NOT_HEARD, "{what}: {} hears {f} Hz, it should not ({})", self.name, report());
        }
    }
}

struct Media {
    tx: Option<MediaTx>,
    handle: Option<JoinHandle<()>>,
    rx: UnboundedReceiver<MediaEvent>,
    seen: Vec<MediaEvent>,
}

impl Media {
    fn start(inactivity: Duration) -> Media {
        let mut set = PromptSet::default();
        let music: Vec<i16> = (0..8000).map(|k| (AMP * (2.0 * std::f64::consts::PI * F_MUSIC * k as f64 / 8000.0).sin()) as i16).collect();
        set.insert(Prompt::from_pcm("music", &music));
        // No real-time priority: the tests share the machine.
        let config = MediaConfig { realtime_priority: None, threads: 1, inactivity, ..MediaConfig::default() };
        let (tx, handle, rx) = spawn_with(Arc::new(set), "127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), config).unwrap();
        Media { tx: Some(tx), handle: Some(handle), rx, seen: Vec::new() }
    }

    fn send(&self, cmd: MediaCommand) {
        self.tx.as_ref().unwrap().send(cmd);
    }

    fn open(&self, call: u64, leg: Leg, p: &Peer, ssrc: u32, seq: u16) {
        self.send(MediaCommand::Open { call, leg, local_port: p.port, media: p.media(), direction: Direction::SendRecv, ssrc, seq, ts: 0 });
    }

    fn mix(&self, call: u64, to_leg: Leg, from: &[Leg]) {
        self.send(MediaCommand::Mix { call, to_leg, from: from.to_vec() });
    }

    fn relay(&self, call: u64, to_leg: Leg) {
        self.send(MediaCommand::Relay { call, to_leg });
    }

    fn poll(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.seen.push(ev);
        }
    }

    fn wait_for(&mut self, within: Duration, pred: impl Fn(&MediaEvent) -> bool) -> MediaEvent {
        let until = Instant::now() + within;
        loop {
            self.poll();
            if let Some(i) = self.seen.iter().position(&pred) {
                return self.seen.remove(i);
            }
            assert!(Instant::now() < until, "event not seen within {within:?}; seen: {:?}", self.seen);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(mut self) -> Vec<MediaEvent> {
        drop(self.tx.take());
        self.handle.take().unwrap().join().unwrap();
        self.poll();
        std::mem::take(&mut self.seen)
    }
}

/// `frames` × 20 ms in real time: the talkers say a frame each, everyone's socket is read.
fn run(peers: &mut [&mut Peer], talkers: &[&str], frames: usize) {
    let t0 = Instant::now();
    for i in 0..frames {
        for p in peers.iter_mut() {
            if talkers.contains(&p.name) {
                p.say();
            }
        }
        let next = t0 + Duration::from_millis(20 * (i as u64 + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        for p in peers.iter_mut() {
            p.receive();
        }
    }
}

/// One stream: same SSRC, sequence numbers +1 with no gap or repeat, timestamps never going back.
#[track_caller]
fn assert_one_stream(p: &Peer, ssrc: u32, seq: u16) {
    assert!(!p.got.is_empty(), "{} got nothing", p.name);
    assert_eq!((p.got[0].0.ssrc, p.got[0].0.seq), (ssrc, seq), "{}: the Open's identity", p.name);
    for (k, w) in p.got.windows(2).enumerate() {
        assert_eq!(w[1].0.ssrc, ssrc, "{}: SSRC changed at packet {k}", p.name);
        assert_eq!(w[1].0.seq, w[0].0.seq.wrapping_add(1), "{}: sequence gap or repeat at packet {k}", p.name);
        assert!(w[1].0.timestamp.wrapping_sub(w[0].0.timestamp) < 0x8000_0000, "{}: timestamp back at {k}", p.name);
    }
}

fn markers(p: &Peer) -> Vec<usize> {
    p.got.iter().enumerate().filter(|(_, (h, _))| h.marker).map(|(i, _)| i).collect()
}

const FRAMES: usize = 50;

#[test]
fn in_a_conference_of_pcma_and_pcmu_phones_each_hears_the_other_two_and_not_itself() {
    let m = Media::start(Duration::from_secs(60));
    let mut a = Peer::new("caller", Codec::Pcma, F_A, 0x1A);
    let mut b = Peer::new("agent", Codec::Pcmu, F_B, 0x1B);
    let mut c = Peer::new("department", Codec::Pcma, F_C, 0x1C);
    let call = 7;
    m.open(call, Leg::A, &a, 0xA, 100);
    m.open(call, Leg::B, &b, 0xB, 200);
    m.open(call, Leg::C, &c, 0xC, 300);
    m.mix(call, Leg::A, &[Leg::B, Leg::C]);
    m.mix(call, Leg::B, &[Leg::A, Leg::C]);
    // Naming the leg itself (and twice) changes nothing: a leg never hears itself.
    m.mix(call, Leg::C, &[Leg::A, Leg::C, Leg::B, Leg::C]);
    run(&mut [&mut a, &mut b, &mut c], &["caller", "agent", "department"], FRAMES);
    a.assert_hears(0, &[F_B, F_C], &[F_A, F_D], "conference");
    b.assert_hears(0, &[F_A, F_C], &[F_B, F_D], "conference");
    c.assert_hears(0, &[F_A, F_B], &[F_C, F_D], "conference");
    for (p, ssrc, seq) in [(&a, 0xA, 100), (&b, 0xB, 200), (&c, 0xC, 300)] {
        assert_one_stream(p, ssrc, seq);
        assert!(p.got.iter().all(|(h, _)| h.payload_type == p.codec.payload_type()), "{} hears its own codec", p.name);
        assert!((40..=55).contains(&p.got.len()), "{}: {} packets in a second", p.name, p.got.len());
        assert_eq!(markers(p), vec![0]);
    }
    let ev = m.stop();
    assert!(!ev.iter().any(|e| matches!(e, MediaEvent::Failed { .. } | MediaEvent::Inactive { .. })), "{ev:?}");
}

#[test]
fn consultation_then_completion_the_caller_ends_up_with_the_department_on_its_stream() {
    let m = Media::start(Duration::from_secs(60));
    let mut a = Peer::new("caller", Codec::Pcmu, F_A, 0x2A);
    let mut b = Peer::new("agent", Codec::Pcma, F_B, 0x2B);
    let mut c = Peer::new("department", Codec::Pcmu, F_C, 0x2C);
    let call = 8;
    m.open(call, Leg::A, &a, 0xA, 100);
    m.open(call, Leg::B, &b, 0xB, 200);
    m.relay(call, Leg::A);
    m.relay(call, Leg::B);
    run(&mut [&mut a, &mut b], &["caller", "agent"], 25);
    // Consult: the caller is held with music; the agent and the department talk.
    m.send(MediaCommand::Play { call, leg: Leg::A, playlist: vec!["music".into()], looped: true, barge_in: false });
    m.open(call, Leg::C, &c, 0xC, 300);
    m.mix(call, Leg::B, &[Leg::C]);
    m.mix(call, Leg::C, &[Leg::B]);
    let (ma, mb, mc) = (a.got.len(), b.got.len(), c.got.len());
    run(&mut [&mut a, &mut b, &mut c], &["caller", "agent", "department"], FRAMES);
    a.assert_hears(ma, &[F_MUSIC], &[F_B, F_C, F_A], "consult");
    b.assert_hears(mb, &[F_C], &[F_A, F_B, F_MUSIC], "consult");
    c.assert_hears(mc, &[F_B], &[F_A, F_C, F_MUSIC], "consult");
    // Complete: the agent leaves; the department takes its place; caller and department are relayed.
    m.send(MediaCommand::CloseLeg { call, leg: Leg::B });
    m.send(MediaCommand::Rebind { call, from: Leg::C, to: Leg::B });
    m.relay(call, Leg::A);
    m.relay(call, Leg::B);
    let (ma, mc) = (a.got.len(), c.got.len());
    let b_before = b.got.len();
    run(&mut [&mut a, &mut b, &mut c], &["caller", "department"], FRAMES);
    a.assert_hears(ma, &[F_C], &[F_MUSIC, F_B, F_A], "completed");
    c.assert_hears(mc, &[F_A], &[F_B, F_C, F_MUSIC], "completed");
    assert!(b.got.len() <= b_before + 1, "nothing more toward the agent who left");
    // The department's stream: one identity from its first mixed frame through the relay.
    assert_one_stream(&c, 0xC, 300);
    assert!(c.got[mc..].iter().all(|(h, _)| h.payload_type == 0));
    // (A mixed frame or two may still arrive after `mc` was read, before the engine took the commands.)
    let mk = markers(&c);
    assert!(mk.len() == 2 && mk[0] == 0 && (mc..=mc + 2).contains(&mk[1]), "a marker at its start and at the switch to the relay: {mk:?} ({mc})");
    // The caller's: the relay, the music, the relay again, one stream.
    assert_one_stream(&a, 0xA, 100);
    let ev = m.stop();
    assert!(!ev.iter().any(|e| matches!(e, MediaEvent::Failed { .. })), "{ev:?}");
}

#[test]
fn supervisor_listen_whisper_and_barge_and_the_agents_stream_stays_one() {
    let m = Media::start(Duration::from_secs(60));
    let mut a = Peer::new("caller", Codec::Pcma, F_A, 0x3A);
    let mut b = Peer::new("agent", Codec::Pcmu, F_B, 0x3B);
    let mut d = Peer::new("supervisor", Codec::Pcma, F_D, 0x3D);
    let call = 9;
    m.open(call, Leg::A, &a, 0xA, 100);
    m.open(call, Leg::B, &b, 0xB, 200);
    m.relay(call, Leg::A);
    m.relay(call, Leg::B);
    m.open(call, Leg::D, &d, 0xD, 400);
    let all = ["caller", "agent", "supervisor"];
    // Listen.
    m.mix(call, Leg::D, &[Leg::A, Leg::B]);
    let mark = |a: &Peer, b: &Peer, d: &Peer| (a.got.len(), b.got.len(), d.got.len());
    let (ma, mb, md) = mark(&a, &b, &d);
    run(&mut [&mut a, &mut b, &mut d], &all, FRAMES);
    a.assert_hears(ma, &[F_B], &[F_A, F_D], "listen");
    b.assert_hears(mb, &[F_A], &[F_B, F_D], "listen");
    d.assert_hears(md, &[F_A, F_B], &[F_D], "listen");
    // Whisper.
    m.mix(call, Leg::B, &[Leg::A, Leg::D]);
    let (ma, mb, md) = mark(&a, &b, &d);
    run(&mut [&mut a, &mut b, &mut d], &all, FRAMES);
    a.assert_hears(ma, &[F_B], &[F_A, F_D], "whisper");
    b.assert_hears(mb, &[F_A, F_D], &[F_B], "whisper");
    d.assert_hears(md, &[F_A, F_B], &[F_D], "whisper");
    // Barge.
    m.mix(call, Leg::A, &[Leg::B, Leg::D]);
    let (ma, mb, md) = mark(&a, &b, &d);
    run(&mut [&mut a, &mut b, &mut d], &all, FRAMES);
    a.assert_hears(ma, &[F_B, F_D], &[F_A], "barge");
    b.assert_hears(mb, &[F_A, F_D], &[F_B], "barge");
    d.assert_hears(md, &[F_A, F_B], &[F_D], "barge");
    // The supervisor leaves: caller and agent relayed again.
    m.send(MediaCommand::CloseLeg { call, leg: Leg::D });
    m.relay(call, Leg::A);
    m.relay(call, Leg::B);
    let (ma, mb, _) = mark(&a, &b, &d);
    run(&mut [&mut a, &mut b, &mut d], &all, FRAMES);
    a.assert_hears(ma, &[F_B], &[F_A, F_D], "after");
    b.assert_hears(mb, &[F_A], &[F_B, F_D], "after");
    // Relay → mix → relay: one stream toward the agent (and the caller), a marker at each switch.
    assert_one_stream(&a, 0xA, 100);
    assert_one_stream(&b, 0xB, 200);
    assert_eq!(markers(&b).len(), 3, "agent: relay start, mix (whisper), relay again: {:?}", markers(&b));
    assert_eq!(markers(&a).len(), 3, "caller: relay start, mix (barge), relay again: {:?}", markers(&a));
    assert!(b.got.iter().all(|(h, _)| h.payload_type == 0) && a.got.iter().all(|(h, _)| h.payload_type == 8));
    m.stop();
}

#[test]
fn a_consulted_party_that_sends_nothing_is_reported_inactive_as_leg_c() {
    let mut m = Media::start(Duration::from_secs(1));
    let mut b = Peer::new("agent", Codec::Pcmu, F_B, 0x4B);
    let mut c = Peer::new("department", Codec::Pcmu, F_C, 0x4C);
    m.open(10, Leg::B, &b, 0xB, 1);
    m.open(10, Leg::C, &c, 0xC, 1);
    m.mix(10, Leg::B, &[Leg::C]);
    m.mix(10, Leg::C, &[Leg::B]);
    run(&mut [&mut b, &mut c], &["agent"], 75);
    let ev = m.wait_for(Duration::from_secs(1), |e| matches!(e, MediaEvent::Inactive { .. }));
    assert_eq!(ev, MediaEvent::Inactive { call: 10, leg: Leg::C });
    // The silent department was heard as silence; it heard the agent.
    b.assert_hears(0, &[], &[F_B, F_C], "silent department");
    c.assert_hears(0, &[F_B], &[F_C], "silent department");
    let rest = m.stop();
    assert!(!rest.contains(&MediaEvent::Inactive { call: 10, leg: Leg::B }), "{rest:?}");
}
