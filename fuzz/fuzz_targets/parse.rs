//! Fuzz target: the SIP codec must never panic, whatever the bytes.
//!
//! Run with `cargo fuzz run parse` from `fuzz/` (seed corpus: `../tests/data/rfc4475/*.dat`, e.g.
//! `cargo fuzz run parse corpus/parse ../tests/data/rfc4475`).
#![no_main]

use bytes::Bytes;
use callgate::sip::build::{ack_for_non2xx, cancel_for, error_response_raw, ResponseBuilder};
use callgate::sip::header::{CSeq, CommaSplit, NameAddr, Via};
use callgate::sip::msg::{frame, is_keepalive, Framed, Framer, HeaderName, Message};
use callgate::sip::uri::{unescape, Uri};
use libfuzzer_sys::fuzz_target;

fn exercise(m: &Message) {
    let _ = (
        m.is_request(),
        m.method(),
        m.status(),
        m.reason(),
        m.request_uri(),
        m.version(),
    );
    let _ = (m.raw().len(), m.head().len(), m.body().len(), m.header_count());
    for h in m.headers() {
        let _ = m.header_by_name(h.raw_name);
        for v in CommaSplit::new(h.value) {
            let _ = Via::parse(v).map(|v| (v.sent_by(), v.is_rfc3261_branch(), v.param("maddr")));
            let _ = NameAddr::parse(v).map(|n| (n.tag(), n.display_unescaped(), n.parsed_uri().map(|u| u.number())));
            let _ = CSeq::parse(v);
            let _ = Uri::parse(v).map(|u| (u.number(), u.param("transport"), u.host_port()));
            let _ = unescape(v);
        }
    }
    let _ = (
        m.call_id(),
        m.cseq(),
        m.max_forwards(),
        m.content_type(),
        m.content_length(),
    );
    let _ = m.top_via();
    let _ = m.vias().count();
    let _ = (m.from_hdr(), m.to_hdr());
    let _ = m.contacts().count();
    let _ = m.name_addrs(HeaderName::Route).count();
    let _ = m.header_values(HeaderName::Require).count();
    let _ = m.validate_request();
    let _ = m.validate_response();
    let _ = m.uas_checks(&["timer"], &["application/sdp"]);
    let _ = m.unsupported_required(&[]);
    let _ = m.forward_check();
    if let Some(u) = m.request_uri() {
        let _ = Uri::parse(u).map(|u| u.number());
    }
    if m.is_request() {
        let r = ResponseBuilder::new(m, 400, "Bad Request").to_tag("fz").build();
        assert!(
            Message::parse(r).is_ok(),
            "a response built from a parsed request must parse"
        );
        let _ = cancel_for(m);
        let _ = ack_for_non2xx(m, m);
    }
}

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(m) = Message::parse(bytes.clone()) {
        exercise(&m);
    }
    let _ = error_response_raw(data, 400, "Bad Request");
    // Stream framing over the same bytes, consuming as a connection reader would.
    let mut rest = data;
    while let Ok(Some(f)) = frame(rest, 65536) {
        let n = match f {
            Framed::Message(n) => {
                if let Ok(m) = Message::parse_stream(Bytes::copy_from_slice(&rest[..n])) {
                    exercise(&m);
                }
                n
            }
            Framed::KeepAlive(n) => n,
        };
        assert!(n > 0 && n <= rest.len());
        rest = &rest[n..];
    }
    // The resuming framer, fed the bytes in two steps, must agree with the one-shot frame().
    let mut framer = Framer::new();
    let whole = frame(data, 65536);
    let first = framer.next(&data[..data.len() / 2], 65536);
    let resumed = if matches!(first, Ok(None)) {
        framer.next(data, 65536)
    } else {
        whole
    };
    assert_eq!(whole.ok(), resumed.ok(), "Framer and frame disagree");
    let _ = is_keepalive(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Uri::parse(s).map(|u| (u.number(), u.param("user"), u.host_port()));
    }
});
