//! DTMF against real captures: the RFC 2833/4733 key presses that SIPp ships in
//! `/usr/share/sip-tester/dtmf_2833_*.pcap` (Debian package `sip-tester`), replayed into
//! [`DtmfReceiver`] with their capture timing. Each capture is one key press (start with marker, updates,
//! three end packets that SIPp sends with one sequence number): the receiver must turn each into exactly
//! one digit, including when the capture is replayed, when its end packets are lost, and when its start
//! is lost.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callgate::media::dtmf::{DtmfEvent, DtmfReceiver};
use callgate::media::rtp::RtpHeader;

const SIPP_DIR: &str = "/usr/share/sip-tester";
/// The telephone-event payload type in SIPp's captures (its scenarios offer `101 telephone-event/8000`).
const EVENT_PT: u8 = 101;

/// One UDP payload of a capture and when it was captured (from the first record).
struct Datagram {
    at: Duration,
    data: Vec<u8>,
}

/// A pcap file's UDP payloads: classic pcap (either byte order, µs or ns timestamps), Ethernet link type,
/// optional 802.1Q tag, IPv4 or IPv6. Test-only: not a general pcap reader.
fn read_pcap_udp(path: &Path) -> Vec<Datagram> {
    let file = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        file.len() >= 24,
        "{}: shorter than a pcap global header",
        path.display()
    );
    let magic = u32::from_le_bytes(file[0..4].try_into().unwrap());
    let (le, nanos) = match magic {
        0xA1B2_C3D4 => (true, false),
        0xD4C3_B2A1 => (false, false),
        0xA1B2_3C4D => (true, true),
        0x4D3C_B2A1 => (false, true),
        m => panic!("{}: not a pcap file (magic {m:#010x})", path.display()),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a: [u8; 4] = b[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = u32_at(&file, 20);
    assert_eq!(
        link,
        1,
        "{}: link type {link}, expected 1 (Ethernet)",
        path.display()
    );
    let mut out = Vec::new();
    let mut off = 24;
    let mut first: Option<Duration> = None;
    while off + 16 <= file.len() {
        let secs = u32_at(&file, off) as u64;
        let frac = u32_at(&file, off + 4) as u64;
        let incl = u32_at(&file, off + 8) as usize;
        off += 16;
        assert!(
            off + incl <= file.len(),
            "{}: truncated record",
            path.display()
        );
        let frame = &file[off..off + incl];
        off += incl;
        let t = Duration::from_secs(secs)
            + if nanos {
                Duration::from_nanos(frac)
            } else {
                Duration::from_micros(frac)
            };
        let first = *first.get_or_insert(t);
        if let Some(udp) = udp_payload(frame) {
            out.push(Datagram {
                at: t - first,
                data: udp.to_vec(),
            });
        }
    }
    out
}

fn udp_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let mut l3 = 14;
    if ethertype == 0x8100 {
        ethertype = u16::from_be_bytes(frame.get(16..18)?.try_into().ok()?);
        l3 = 18;
    }
    let ip = frame.get(l3..)?;
    let l4 = match ethertype {
        0x0800 if *ip.get(9)? == 17 => (ip[0] & 0x0F) as usize * 4,
        0x86DD if *ip.get(6)? == 17 => 40,
        _ => return None,
    };
    let udp = ip.get(l4..)?;
    let len = u16::from_be_bytes(udp.get(4..6)?.try_into().ok()?) as usize;
    udp.get(8..len.max(8).min(udp.len()))
}

/// The capture's telephone-event packets as (arrival offset, header, payload).
fn telephone_events(name: &str) -> Vec<(Duration, RtpHeader, Vec<u8>)> {
    let dir = Path::new(SIPP_DIR);
    assert!(
        dir.is_dir(),
        "{SIPP_DIR} is missing: the SIPp DTMF captures come with SIPp; run `apt-get install -y sip-tester` \
         (scripts/test.sh does it)"
    );
    let path: PathBuf = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `apt-get install -y sip-tester`",
        path.display()
    );
    let pkts: Vec<_> = read_pcap_udp(&path)
        .into_iter()
        .filter_map(|d| {
            let h = RtpHeader::parse(&d.data).ok()?;
            (h.payload_type == EVENT_PT).then(|| (d.at, h, h.payload(&d.data).to_vec()))
        })
        .collect();
    assert!(
        pkts.len() >= 4,
        "{name}: expected a key press (start, updates, end packets), found {} telephone-event packets",
        pkts.len()
    );
    pkts
}

/// Replays packets at `base` + their capture offsets, firing the receiver's timer in between as the shell
/// would, then runs the clock 1 s on. Returns every digit emitted.
fn replay(
    rx: &mut DtmfReceiver,
    base: Instant,
    pkts: &[(Duration, RtpHeader, Vec<u8>)],
) -> Vec<DtmfEvent> {
    let mut out = Vec::new();
    let mut last = base;
    for (at, h, p) in pkts {
        let now = base + *at;
        while let Some(t) = rx.poll_timeout().filter(|t| *t <= now) {
            rx.handle_timeout(t);
        }
        rx.handle_packet(now, h, p)
            .expect("a valid telephone-event payload");
        out.extend(std::iter::from_fn(|| rx.poll_event()));
        last = now;
    }
    if let Some(t) = rx
        .poll_timeout()
        .filter(|t| *t <= last + Duration::from_secs(1))
    {
        rx.handle_timeout(t);
    }
    out.extend(std::iter::from_fn(|| rx.poll_event()));
    out
}

fn digits(events: &[DtmfEvent]) -> String {
    events.iter().map(|e| e.digit).collect()
}

const CAPTURES: [(&str, char); 12] = [
    ("dtmf_2833_0.pcap", '0'),
    ("dtmf_2833_1.pcap", '1'),
    ("dtmf_2833_2.pcap", '2'),
    ("dtmf_2833_3.pcap", '3'),
    ("dtmf_2833_4.pcap", '4'),
    ("dtmf_2833_5.pcap", '5'),
    ("dtmf_2833_6.pcap", '6'),
    ("dtmf_2833_7.pcap", '7'),
    ("dtmf_2833_8.pcap", '8'),
    ("dtmf_2833_9.pcap", '9'),
    ("dtmf_2833_star.pcap", '*'),
    ("dtmf_2833_pound.pcap", '#'),
];

#[test]
fn sipp_capture_of_key_1_gives_exactly_one_1() {
    let pkts = telephone_events("dtmf_2833_1.pcap");
    let base = Instant::now();
    let mut rx = DtmfReceiver::new();
    let ev = replay(&mut rx, base, &pkts);
    assert_eq!(digits(&ev), "1");
    // SIPp reports 2240 timestamp units = 280 ms; the key went down with the first packet.
    assert_eq!(ev[0].duration_ms, 280);
    assert_eq!(ev[0].at, base);
    assert_eq!(rx.stats().repeats, 2, "the two repeated end packets");
}

#[test]
fn sipp_capture_of_pound_gives_exactly_one_pound() {
    let pkts = telephone_events("dtmf_2833_pound.pcap");
    let mut rx = DtmfReceiver::new();
    let ev = replay(&mut rx, Instant::now(), &pkts);
    assert_eq!(digits(&ev), "#");
    assert_eq!(ev[0].duration_ms, 280);
}

#[test]
fn every_sipp_capture_gives_its_key_once_even_replayed_twice() {
    for (name, key) in CAPTURES {
        let pkts = telephone_events(name);
        let mut rx = DtmfReceiver::new();
        let base = Instant::now();
        let mut ev = replay(&mut rx, base, &pkts);
        // The same packets again 2 s later (a duplicating network or a looping sender): same press.
        ev.extend(replay(&mut rx, base + Duration::from_secs(2), &pkts));
        assert_eq!(digits(&ev), key.to_string(), "{name}");
    }
}

#[test]
fn sipp_captures_in_a_row_spell_the_keys() {
    // The twelve captures come from one SIPp source (one SSRC): sent as one stream in timestamp order,
    // one key press after another, every key comes out once, in order.
    let mut captures: Vec<_> = CAPTURES
        .iter()
        .map(|(name, key)| (telephone_events(name), *key))
        .collect();
    captures.sort_by_key(|(pkts, _)| pkts[0].1.timestamp);
    let expected: String = captures.iter().map(|(_, k)| *k).collect();
    assert_eq!(expected, "1023456789*#");
    let mut rx = DtmfReceiver::new();
    let base = Instant::now();
    let mut spelled = String::new();
    for (i, (pkts, _)) in captures.iter().enumerate() {
        let ev = replay(&mut rx, base + Duration::from_secs(i as u64), pkts);
        spelled.push_str(&digits(&ev));
    }
    assert_eq!(spelled, expected);
}

#[test]
fn sipp_capture_with_its_end_packets_lost_gives_the_key_after_the_timeout() {
    let pkts = telephone_events("dtmf_2833_pound.pcap");
    let without_end: Vec<_> = pkts
        .iter()
        .filter(|(_, _, p)| p[1] & 0x80 == 0)
        .cloned()
        .collect();
    assert!(without_end.len() < pkts.len());
    let mut rx = DtmfReceiver::new();
    let base = Instant::now();
    let ev = replay(&mut rx, base, &without_end);
    assert_eq!(digits(&ev), "#");
    // The last update said 0x0780 = 1920 units.
    assert_eq!(ev[0].duration_ms, 240);
    assert_eq!(rx.stats().without_end, 1);
}

#[test]
fn sipp_capture_with_its_start_lost_gives_the_key_once() {
    let pkts = telephone_events("dtmf_2833_1.pcap");
    let mut rx = DtmfReceiver::new();
    let ev = replay(&mut rx, Instant::now(), &pkts[3..]);
    assert_eq!(digits(&ev), "1");
    assert_eq!(ev[0].duration_ms, 280);
}
