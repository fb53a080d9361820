//! Pacer cost per 20 ms period: N looped streams spread over the period, one `handle_timeout` per due tick.
use std::sync::Arc;
use std::time::{Duration, Instant};

use callgate::media::pacer::{Packet, Pacer, StreamSpec};
use callgate::media::prompt::Prompt;
use callgate::media::Codec;

fn main() {
    divan::main();
}

fn pacer_with(n: usize) -> (Pacer, Instant) {
    let t0 = Instant::now();
    let mut p = Pacer::with_capacity(t0, n);
    let prompt = Arc::new(Prompt::from_pcm("moh", &vec![1000i16; 650 * 160]));
    for u in 0..n {
        // Spread evenly over the 20 ms period, in microseconds.
        let at = t0 + Duration::from_micros((u as u64 * 20_000) / n as u64);
        p.add(
            at,
            StreamSpec {
                dst: ([127, 0, 0, 1], 9).into(),
                socket: u as u32,
                codec: Codec::Pcma,
                pt: 8,
                ssrc: u as u32,
                seq: 0,
                ts: 0,
                playlist: vec![prompt.clone()],
                looped: true,
                user: u as u64,
            },
        );
    }
    (p, t0)
}

/// One 20 ms period of virtual time: every stream sends one packet.
#[divan::bench(args = [1_000, 5_000, 20_000])]
fn one_period(bencher: divan::Bencher, n: usize) {
    let (mut p, t0) = pacer_with(n);
    let mut now = t0;
    bencher.counter(divan::counter::ItemsCount::new(n)).bench_local(|| {
        let end = now + Duration::from_millis(20);
        let mut sent = 0usize;
        while let Some(t) = p.poll_timeout() {
            if t >= end {
                break;
            }
            now = now.max(t);
            p.handle_timeout(now, &mut |pkt: Packet<'_>| sent += pkt.payload.len());
        }
        now = end;
        divan::black_box(sent)
    });
}
