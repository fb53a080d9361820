//! Property tests for the media parsers: whatever a peer sends (SDP in an INVITE, an RTP packet)
//! or a file holds (WAV), parsing returns an answer or a typed error and never panics, and the
//! SDP answers callgate writes always parse back. The same properties are the `media` fuzz target.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use callgate::media::dtmf::{parse_dtmf_relay, TelephoneEvent};
use callgate::media::rtp::RtpHeader;
use callgate::media::{sdp, wav, Codec};
use proptest::prelude::*;

/// SDP-shaped text: lines of known types with arbitrary values, shuffled and damaged.
fn sdp_like() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just("v=0".to_owned()),
        "o=[ -~]{0,40}".prop_map(|s| format!("o={s}")),
        "c=IN IP[46] [0-9a-f:.]{0,40}".prop_map(|s| s),
        "m=audio [0-9]{0,6} RTP/AVP( [0-9]{1,3}){0,6}".prop_map(|s| s),
        "m=(video|text|image) [0-9]{1,5} [A-Z/]{3,12} [0-9]{1,3}".prop_map(|s| s),
        "a=rtpmap:[0-9]{1,3} (PCMU|PCMA|telephone-event|G729|opus)/[0-9]{0,6}(/[0-9])?".prop_map(|s| s),
        "a=(sendrecv|sendonly|recvonly|inactive|ptime:[0-9]{0,4}|fmtp:[0-9]{1,3} [ -~]{0,20}|rtcp:[0-9]{0,6})".prop_map(|s| s),
        "[ -~]{0,30}".prop_map(|s| s),
    ];
    (proptest::collection::vec(line, 0..14), prop_oneof![Just("\r\n"), Just("\n")])
        .prop_map(|(lines, eol)| lines.join(eol).into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn sdp_answer_never_panics_and_our_answers_parse_back(offer in sdp_like()) {
        for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
            if let Ok(n) = sdp::answer(&offer, &[Codec::Pcmu, Codec::Pcma], ip, 20000, 7) {
                let back = sdp::parse_answer(&n.sdp);
                prop_assert!(back.is_ok(), "our answer does not parse: {:?}", String::from_utf8_lossy(&n.sdp));
                prop_assert_eq!(back.unwrap().codec, n.codec);
            }
        }
    }

    #[test]
    fn sdp_parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = sdp::answer(&bytes, &[Codec::Pcmu], IpAddr::V4(Ipv4Addr::LOCALHOST), 20000, 1);
        let _ = sdp::parse_answer(&bytes);
    }

    #[test]
    fn rtp_header_parse_never_panics_and_payload_stays_inside(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(h) = RtpHeader::parse(&bytes) {
            let p = h.payload(&bytes);
            prop_assert!(p.len() <= bytes.len().saturating_sub(12));
        }
    }

    #[test]
    fn wav_parse_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..400), riff in any::<bool>()) {
        if riff && bytes.len() >= 12 {
            bytes[..4].copy_from_slice(b"RIFF");
            bytes[8..12].copy_from_slice(b"WAVE");
        }
        let _ = wav::parse(Path::new("prop.wav"), &bytes);
    }

    #[test]
    fn dtmf_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), text in "(?s)[ -~\r\n]{0,80}") {
        let _ = parse_dtmf_relay(&bytes);
        let _ = parse_dtmf_relay(text.as_bytes());
        let _ = TelephoneEvent::parse(&bytes);
    }
}
