//! Fuzz target: the media parsers (SDP offer/answer, RTP header, WAV, DTMF) must never panic.
//!
//! Run with `cargo fuzz run media` from `fuzz/`. The first byte picks the parser.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use callgate::media::dtmf::{parse_dtmf_relay, TelephoneEvent};
use callgate::media::rtp::RtpHeader;
use callgate::media::{sdp, wav, Codec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
                if let Ok(n) = sdp::answer(rest, &[Codec::Pcmu, Codec::Pcma], ip, 20000, 1) {
                    // Our own answer must always parse back.
                    assert!(sdp::parse_answer(&n.sdp).is_ok());
                }
            }
            let _ = sdp::parse_answer(rest);
        }
        1 => {
            if let Ok(h) = RtpHeader::parse(rest) {
                let _ = h.payload(rest);
            }
        }
        2 => {
            let _ = wav::parse(Path::new("fuzz.wav"), rest);
        }
        _ => {
            let _ = parse_dtmf_relay(rest);
            let _ = TelephoneEvent::parse(rest);
        }
    }
});
