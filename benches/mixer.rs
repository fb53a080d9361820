//! Mixer cost, sans-IO (no system call):
//!
//! - `mixer_frame_3party`: the DSP of one 20 ms frame of a 3-party conference: 3 packets into the
//!   jitter buffers (PCMA, PCMU, PCMA), one `advance`, 3 mixes of two inputs each, encoded.
//! - `engine_period_3party`: `n` 3-party conferences in the engine for one 20 ms period of virtual time:
//!   each leg's packet through `Engine::on_datagram` (latching, bridge, mixer), then every due
//!   `handle_timeout` (the MixClock's slots: 3 mixed packets per conference handed to `out`). Counter:
//!   conferences, so the figure is the CPU one conference costs per 20 ms.
//! - `engine_packet_in_mixed`: packets of conference legs through `Engine::on_datagram` (they go to the
//!   mixer only), 1000 conferences, per packet: compare with `relay`'s "engine alone" per relayed packet.
//!
//! `cargo bench --bench mixer` (needs `[[bench]] name = "mixer" harness = false` in Cargo.toml).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callgate::media::bridge::LegMedia;
use callgate::media::command::{CallKey, Leg, MediaCommand, MediaFailure};
use callgate::media::engine::{Engine, EngineConfig, Outgoing, Sockets};
use callgate::media::mixer::{LegSet, Mixer};
use callgate::media::prompt::PromptSet;
use callgate::media::rtp::write_header;
use callgate::media::sdp::Direction;
use callgate::media::{g711, Codec};

fn main() {
    divan::main();
}

const LEGS: [(Leg, Codec); 3] = [(Leg::A, Codec::Pcma), (Leg::B, Codec::Pcmu), (Leg::C, Codec::Pcma)];

fn voice(codec: Codec, freq: f64) -> [u8; 160] {
    std::array::from_fn(|i| {
        let x = (6000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin()) as i16;
        match codec {
            Codec::Pcmu => g711::linear_to_ulaw(x),
            Codec::Pcma => g711::linear_to_alaw(x),
        }
    })
}

#[divan::bench]
fn mixer_frame_3party(bencher: divan::Bencher) {
    let mut m = Mixer::new();
    let all = LegSet::of(&[Leg::A, Leg::B, Leg::C]);
    m.set_inputs(all);
    let payloads: Vec<[u8; 160]> = LEGS.iter().enumerate().map(|(i, &(_, c))| voice(c, 300.0 + 200.0 * i as f64)).collect();
    let mut seq = 0u16;
    let mut out = [0u8; 160];
    bencher.bench_local(|| {
        seq = seq.wrapping_add(1);
        for (i, &(leg, codec)) in LEGS.iter().enumerate() {
            m.push(leg, i as u32, seq, codec, &payloads[i]);
        }
        m.advance();
        let mut sum = 0u32;
        for &(leg, codec) in &LEGS {
            m.mix(leg, all, codec, &mut out);
            sum += u32::from(out[7]);
        }
        divan::black_box(sum)
    });
}

struct Ids(u32);
impl Sockets for Ids {
    fn open(&mut self, _: CallKey, _: Leg, _: u16) -> Result<u32, MediaFailure> {
        self.0 += 1;
        Ok(self.0 - 1)
    }
    fn close(&mut self, _: u32) {}
}

fn remote(call: u64, leg: Leg) -> SocketAddr {
    SocketAddr::from(([10, 1, (call >> 8) as u8, call as u8], 4000 + leg.index() as u16 * 2))
}

/// `n` 3-party conferences, spread over the period (calls start 20 ms / n apart).
fn conferences(n: u64) -> (Engine, Instant) {
    let t0 = Instant::now();
    let mut e = Engine::new(t0, EngineConfig::default(), Arc::new(PromptSet::default()), 1);
    let mut ids = Ids(0);
    for call in 0..n {
        let now = t0 + Duration::from_micros(call * 20_000 / n);
        for &(leg, codec) in &LEGS {
            let media = LegMedia { remote: Some(remote(call, leg)), codec, audio_pt: codec.payload_type(), dtmf_pt: Some(101), ptime_ms: 20 };
            e.command(now, MediaCommand::Open { call, leg, local_port: 0, media, direction: Direction::SendRecv, ssrc: 1, seq: 1, ts: 1 }, &mut ids);
        }
        for &(leg, _) in &LEGS {
            let from = LEGS.iter().map(|&(l, _)| l).filter(|&l| l != leg).collect();
            e.command(now, MediaCommand::Mix { call, to_leg: leg, from }, &mut ids);
        }
    }
    assert_eq!(e.mixers(), n as usize);
    (e, t0)
}

fn packet(buf: &mut [u8; 172], codec: Codec, seq: u16, payload: &[u8; 160]) {
    let mut h = [0u8; 12];
    write_header(&mut h, codec.payload_type(), false, seq, u32::from(seq) * 160, 0x5EED);
    buf[..12].copy_from_slice(&h);
    buf[12..].copy_from_slice(payload);
}

#[divan::bench(args = [1, 100, 1000])]
fn engine_period_3party(bencher: divan::Bencher, n: u64) {
    let (mut e, t0) = conferences(n);
    let payloads: Vec<[u8; 160]> = LEGS.iter().enumerate().map(|(i, &(_, c))| voice(c, 300.0 + 200.0 * i as f64)).collect();
    let mut now = t0 + Duration::from_millis(20);
    let mut seq = 0u16;
    let mut buf = [0u8; 172];
    bencher.counter(divan::counter::ItemsCount::new(n)).bench_local(|| {
        seq = seq.wrapping_add(1);
        for call in 0..n {
            for (i, &(leg, codec)) in LEGS.iter().enumerate() {
                packet(&mut buf, codec, seq, &payloads[i]);
                let socket = (call * 3) as u32 + i as u32;
                divan::black_box(e.on_datagram(now, socket, remote(call, leg), &mut buf, 172));
            }
        }
        let end = now + Duration::from_millis(20);
        let mut sent = 0usize;
        while let Some(t) = e.poll_timeout() {
            if t >= end {
                break;
            }
            now = now.max(t);
            e.handle_timeout(now, &mut |o: Outgoing<'_>| sent += o.payload.len());
        }
        now = end;
        while e.poll_event().is_some() {}
        divan::black_box(sent)
    });
}

#[divan::bench(args = [1000])]
fn engine_packet_in_mixed(bencher: divan::Bencher, n: u64) {
    let (mut e, t0) = conferences(n);
    let payload = voice(Codec::Pcma, 440.0);
    let mut seq = 0u16;
    let mut buf = [0u8; 172];
    // One packet from each conference's caller per iteration (their buffers stay full: the oldest
    // frame is dropped, as for a sender whose clock runs fast).
    bencher.counter(divan::counter::ItemsCount::new(n)).bench_local(|| {
        seq = seq.wrapping_add(1);
        for call in 0..n {
            packet(&mut buf, Codec::Pcma, seq, &payload);
            divan::black_box(e.on_datagram(t0, (call * 3) as u32, remote(call, Leg::A), &mut buf, 172));
        }
        while e.poll_event().is_some() {}
    });
}
