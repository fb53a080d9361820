//! The relay's ceilings on this machine, so that callgate's figures (benches/load/run-bridge.sh,
//! run-announce.sh) read as a fraction of what the machine can do. All on loopback, all bounded.
//!
//! 1. `sendmmsg ceiling`: one thread, one socket, `sendmmsg` of 64 datagrams of 172 bytes (a G.711
//!    RTP packet) in a tight loop to a loopback socket nobody reads (the kernel delivers and drops).
//! 2. `sendto per call socket`: the same, one `sendto` per packet round-robin over N sockets (what a
//!    media engine with per-call ports must do: `sendmmsg` takes one socket).
//! 3. `minimal relay`: N socket pairs; a blaster thread sends 50 packets/s into each "A" socket; a
//!    relay thread waits in epoll, reads each readable socket with `recvmmsg` and sends every datagram
//!    on its pair's "B" socket with `sendto`: the least any relay with per-call ports does, with no
//!    RTP logic at all. Reported: the highest packet rate relayed with < 0.1% loss.
//! 4. `engine per packet`: callgate's sans-IO engine alone (`Engine::on_datagram` of a bridged call,
//!    PCMA -> PCMU): CPU per relayed packet without any system call.
//!
//! `cargo bench --bench relay` (needs `[[bench]] name = "relay" harness = false` in Cargo.toml), or
//! `RELAY_QUICK=1 cargo bench --bench relay` for a shorter run, or `RELAY_ENGINE_ONLY=1` for 4. alone.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callgate::media::bridge::LegMedia;
use callgate::media::command::{CallKey, Leg, MediaCommand, MediaFailure};
use callgate::media::engine::{Engine, EngineConfig, Sockets};
use callgate::media::prompt::PromptSet;
use callgate::media::rtp::write_header;
use callgate::media::sdp::Direction;
use callgate::media::Codec;

const PKT: usize = 172;

fn sink() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn raw(addr: SocketAddr) -> (libc::sockaddr_in, libc::socklen_t) {
    let SocketAddr::V4(a) = addr else { panic!("IPv4 only") };
    // SAFETY: plain data.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
    (s, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
}

/// Packets/s of `sendmmsg(64)` on one socket for `d`.
fn sendmmsg_ceiling(d: Duration) -> f64 {
    let dst = sink();
    let (mut sa, len) = raw(dst.local_addr().unwrap());
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut pkt = [0x80u8; PKT];
    let mut iov = libc::iovec { iov_base: pkt.as_mut_ptr() as *mut libc::c_void, iov_len: PKT };
    // SAFETY: plain data.
    let mut msgs: [libc::mmsghdr; 64] = unsafe { std::mem::zeroed() };
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_name = &mut sa as *mut _ as *mut libc::c_void;
        m.msg_hdr.msg_namelen = len;
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < d {
        // SAFETY: the headers point at live buffers.
        let rc = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), 64, 0) };
        n += rc.max(0) as u64;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Packets/s of one `sendto` per packet over `sockets` sockets, round-robin, for `d`.
fn sendto_ceiling(sockets: usize, d: Duration) -> f64 {
    let dst = sink();
    let (sa, len) = raw(dst.local_addr().unwrap());
    let socks: Vec<UdpSocket> = (0..sockets).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let pkt = [0x80u8; PKT];
    let t0 = Instant::now();
    let mut n = 0u64;
    'outer: loop {
        for s in &socks {
            // SAFETY: valid buffer and address.
            let rc = unsafe {
                libc::sendto(s.as_raw_fd(), pkt.as_ptr() as *const libc::c_void, PKT, 0, &sa as *const _ as *const libc::sockaddr, len)
            };
            n += (rc > 0) as u64;
        }
        if t0.elapsed() >= d {
            break 'outer;
        }
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// The minimal relay over `pairs` socket pairs at 50 packets/s per pair for `d`: (sent, relayed).
fn minimal_relay(pairs: usize, d: Duration) -> (u64, u64) {
    let a: Vec<UdpSocket> = (0..pairs).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let b: Vec<UdpSocket> = (0..pairs).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let dst = sink();
    let (sa, len) = raw(dst.local_addr().unwrap());
    for s in a.iter().chain(&b) {
        s.set_nonblocking(true).unwrap();
    }
    let targets: Vec<SocketAddr> = a.iter().map(|s| s.local_addr().unwrap()).collect();
    // SAFETY: plain system calls.
    let ep = unsafe { libc::epoll_create1(0) };
    for (i, s) in a.iter().enumerate() {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        // SAFETY: valid fds.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let blaster = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let tx: Vec<UdpSocket> = (0..16).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
            let pkt = [0x80u8; PKT];
            let t0 = Instant::now();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Spread the pairs over the 20 ms period, 1 ms at a time.
                let due = t0 + Duration::from_millis(k);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let slot = (k % 20) as usize;
                for (i, t) in targets.iter().enumerate().skip(slot).step_by(20) {
                    if tx[i % 16].send_to(&pkt, t).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                k += 1;
            }
        })
    };
    let mut relayed = 0u64;
    let mut bufs = vec![[0u8; 1536]; 8];
    // SAFETY: plain data.
    let mut msgs: Vec<libc::mmsghdr> = (0..8).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut iovs: Vec<libc::iovec> =
        bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr() as *mut libc::c_void, iov_len: 1536 }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let t0 = Instant::now();
    while t0.elapsed() < d {
        // SAFETY: valid epoll fd and buffer.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 512, 10) };
        for ev in &events[..n.max(0) as usize] {
            let i = ev.u64 as usize;
            // SAFETY: headers point at live buffers.
            let got = unsafe { libc::recvmmsg(a[i].as_raw_fd(), msgs.as_mut_ptr(), 8, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
            for m in &msgs[..got.max(0) as usize] {
                // SAFETY: valid buffer and address.
                let rc = unsafe {
                    libc::sendto(b[i].as_raw_fd(), (*m.msg_hdr.msg_iov).iov_base, m.msg_len as usize, 0, &sa as *const _ as *const libc::sockaddr, len)
                };
                relayed += (rc > 0) as u64;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    blaster.join().unwrap();
    // SAFETY: closing the epoll fd we created.
    unsafe { libc::close(ep) };
    (sent.load(Ordering::Relaxed), relayed)
}

struct Ids(u32);
impl Sockets for Ids {
    fn open(&mut self, _: CallKey, _: Leg, _: u16) -> Result<u32, MediaFailure> {
        self.0 += 1;
        Ok(self.0 - 1)
    }
    fn close(&mut self, _: u32) {}
}

/// ns of CPU per relayed packet in the sans-IO engine (no system call), over `calls` bridged calls.
fn engine_per_packet(calls: u64, rounds: u32) -> f64 {
    let t0 = Instant::now();
    let mut e = Engine::new(t0, EngineConfig::default(), Arc::new(PromptSet::default()), 1);
    let mut ids = Ids(0);
    let ma = LegMedia { remote: Some("10.0.0.1:4000".parse().unwrap()), codec: Codec::Pcma, audio_pt: 8, dtmf_pt: Some(101), ptime_ms: 20 };
    let mb = LegMedia { remote: Some("10.0.0.2:4000".parse().unwrap()), codec: Codec::Pcmu, audio_pt: 0, dtmf_pt: Some(101), ptime_ms: 20 };
    for call in 0..calls {
        for (leg, media) in [(Leg::A, ma), (Leg::B, mb)] {
            e.command(t0, MediaCommand::Open { call, leg, local_port: 0, media, direction: Direction::SendRecv, ssrc: 1, seq: 1, ts: 1 }, &mut ids);
        }
        e.command(t0, MediaCommand::Relay { call, to_leg: Leg::A }, &mut ids);
        e.command(t0, MediaCommand::Relay { call, to_leg: Leg::B }, &mut ids);
    }
    let src: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let mut buf = [0u8; 1536];
    let mut n = 0u64;
    let start = Instant::now();
    for r in 0..rounds {
        let now = t0 + Duration::from_millis(20 * u64::from(r));
        for call in 0..calls {
            let mut h = [0u8; 12];
            write_header(&mut h, 8, false, r as u16, r * 160, 7);
            buf[..12].copy_from_slice(&h);
            buf[12..PKT].fill(0xD5);
            let socket = (call * 2) as u32; // leg A's id
            if e.on_datagram(now, socket, src, &mut buf, PKT).is_some() {
                n += 1;
            }
        }
        while e.poll_event().is_some() {}
    }
    start.elapsed().as_nanos() as f64 / n.max(1) as f64
}

#[allow(dead_code)] // the entry point with `harness = false`
fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list
    }
    let quick = std::env::var_os("RELAY_QUICK").is_some();
    if std::env::var_os("RELAY_ENGINE_ONLY").is_some() {
        // Only the sans-IO figure (no sockets): to compare engine changes quickly.
        for calls in [1000, 5000] {
            println!("engine alone, {calls} bridged calls: {:.0} ns of CPU per relayed packet (PCMA -> PCMU)", engine_per_packet(calls, 200));
        }
        return;
    }
    let d = Duration::from_secs(if quick { 1 } else { 3 });
    println!("machine: {} cores", std::thread::available_parallelism().map_or(1, |n| n.get()));
    let c = sendmmsg_ceiling(d);
    println!("sendmmsg ceiling (1 thread, 1 socket, 64 per call):       {:>9.0} packets/s ({:.2} µs/packet)", c, 1e6 / c);
    for n in [1, 1000, 5000] {
        let r = sendto_ceiling(n, d);
        println!("sendto per call socket ({n:>4} sockets, 1 thread):           {:>9.0} packets/s ({:.2} µs/packet)", r, 1e6 / r);
    }
    for pairs in [500, 1000, 2000, 3000, 4000] {
        let (sent, relayed) = minimal_relay(pairs, d);
        let loss = 100.0 * (1.0 - relayed as f64 / sent.max(1) as f64);
        println!(
            "minimal relay, {pairs:>4} pairs x 50 packets/s:  offered {:>7.0}/s relayed {:>7.0}/s  loss {:>5.2}%",
            sent as f64 / d.as_secs_f64(),
            relayed as f64 / d.as_secs_f64(),
            loss.max(0.0)
        );
    }
    for calls in [1000, 5000] {
        println!("engine alone, {calls} bridged calls: {:.0} ns of CPU per relayed packet (PCMA -> PCMU)", engine_per_packet(calls, if quick { 50 } else { 200 }));
    }
}

/// Without `harness = false` (no `[[bench]]` entry yet) the file is a libtest target:
/// `cargo test --release --bench relay -- --nocapture` runs the same measurements.
#[cfg(test)]
mod run {
    #[test]
    fn relay_ceilings() {
        super::main()
    }
}
