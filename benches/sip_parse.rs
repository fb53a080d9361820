//! SIP codec benchmarks (divan): parse a realistic ~1 KB INVITE with SDP, a 200 OK, an ACK and a BYE;
//! frame a stream; look up the transaction keys; build a 200 with SDP.
//!
//! Run: `cargo bench --bench sip_parse`.

use bytes::Bytes;
use callgate::sip::build::ResponseBuilder;
use callgate::sip::msg::{frame, Framed, Message};
use divan::{black_box, Bencher};

fn main() {
    // The fixtures must be valid messages, or the figures mean nothing.
    for s in [INVITE, ACK, BYE] {
        let m = Message::parse(Bytes::from_static(s.as_bytes())).expect("fixture parses");
        assert_eq!(m.validate_request(), Ok(()), "{s}");
    }
    let m = Message::parse(Bytes::from_static(OK200.as_bytes())).expect("fixture parses");
    assert_eq!(m.validate_response(), Ok(()));
    assert_eq!(m.body().len(), m.content_length().unwrap_or(0));
    divan::main();
}

const INVITE: &str = "INVITE sip:120@edge.callgate.example.kr:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.17:5060;branch=z9hG4bK-524287-1---8a3c1f0b6d2e4f51;rport\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:203.0.113.17:5060;lr;ftag=as6f2a9c1b>\r\n\
From: \"Kim Minsu\" <sip:+82215550100@carrier.example.kr;user=phone>;tag=as6f2a9c1b\r\n\
To: <sip:120@edge.callgate.example.kr;user=phone>\r\n\
Call-ID: 7d3f6a2c41b94e8f9a0c5d1e2f3a4b5c@203.0.113.17\r\n\
CSeq: 102 INVITE\r\n\
Contact: <sip:+82215550100@203.0.113.17:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE, PRACK\r\n\
Supported: replaces, timer, 100rel\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
User-Agent: CarrierSBC/7.4.2\r\n\
P-Asserted-Identity: <sip:+82215550100@carrier.example.kr;user=phone>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 330\r\n\
\r\n\
v=0\r\n\
o=CarrierSBC 1716539811 1716539811 IN IP4 203.0.113.17\r\n\
s=SIP Call\r\n\
c=IN IP4 203.0.113.40\r\n\
t=0 0\r\n\
m=audio 31586 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=maxptime:40\r\n\
a=sendrecv\r\n\
a=rtcp:31587\r\n";

const OK200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 198.51.100.5:5060;branch=z9hG4bK8f2k1m3n;rport=5060;received=198.51.100.5\r\n\
Record-Route: <sip:203.0.113.17:5060;lr>\r\n\
From: <sip:gate@edge.callgate.example.kr>;tag=cg71x2b9\r\n\
To: <sip:+82215550199@carrier.example.kr;user=phone>;tag=sbc55a1\r\n\
Call-ID: cg-4f1e2d3c4b5a@198.51.100.5\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:+82215550199@203.0.113.17:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 133\r\n\
\r\n\
v=0\r\n\
o=- 1 1 IN IP4 203.0.113.40\r\n\
s=-\r\n\
c=IN IP4 203.0.113.40\r\n\
t=0 0\r\n\
m=audio 31590 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

const ACK: &str = "ACK sip:+82215550100@203.0.113.17:5060;transport=udp SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.17:5060;branch=z9hG4bK-524287-1---77aa01;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Kim Minsu\" <sip:+82215550100@carrier.example.kr;user=phone>;tag=as6f2a9c1b\r\n\
To: <sip:120@edge.callgate.example.kr;user=phone>;tag=cg9k2m1\r\n\
Call-ID: 7d3f6a2c41b94e8f9a0c5d1e2f3a4b5c@203.0.113.17\r\n\
CSeq: 102 ACK\r\n\
Content-Length: 0\r\n\
\r\n";

const BYE: &str = "BYE sip:120@198.51.100.5:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.17:5060;branch=z9hG4bK-524287-1---bye991;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:203.0.113.17:5060;lr>\r\n\
From: \"Kim Minsu\" <sip:+82215550100@carrier.example.kr;user=phone>;tag=as6f2a9c1b\r\n\
To: <sip:120@edge.callgate.example.kr;user=phone>;tag=cg9k2m1\r\n\
Call-ID: 7d3f6a2c41b94e8f9a0c5d1e2f3a4b5c@203.0.113.17\r\n\
CSeq: 103 BYE\r\n\
User-Agent: CarrierSBC/7.4.2\r\n\
Content-Length: 0\r\n\
\r\n";

const ANSWER_SDP: &[u8] = b"v=0\r\no=callgate 42 42 IN IP4 198.51.100.5\r\ns=callgate\r\nc=IN IP4 198.51.100.5\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

#[divan::bench(args = ["invite_1k", "ok200", "ack", "bye"])]
fn parse(bencher: Bencher, which: &str) {
    let data = Bytes::from_static(match which {
        "invite_1k" => INVITE.as_bytes(),
        "ok200" => OK200.as_bytes(),
        "ack" => ACK.as_bytes(),
        _ => BYE.as_bytes(),
    });
    bencher.bench(|| Message::parse(black_box(data.clone())).unwrap());
}

/// A TCP read buffer holding INVITE, ACK, BYE and 200 back to back with keep-alives: frame them all.
#[divan::bench]
fn frame_stream(bencher: Bencher) {
    let mut stream = Vec::new();
    for m in [INVITE, "\r\n\r\n", ACK, BYE, OK200] {
        stream.extend_from_slice(m.as_bytes());
    }
    bencher.bench(|| {
        let mut rest = black_box(&stream[..]);
        let mut n = 0;
        while let Ok(Some(f)) = frame(rest, 65536) {
            let len = match f {
                Framed::Message(l) => {
                    n += 1;
                    l
                }
                Framed::KeepAlive(l) => l,
            };
            rest = &rest[len..];
        }
        n
    });
}

/// Frame + parse the INVITE as the TCP path does.
#[divan::bench]
fn frame_and_parse_invite(bencher: Bencher) {
    let data = Bytes::from_static(INVITE.as_bytes());
    bencher.bench(|| {
        let Ok(Some(Framed::Message(n))) = frame(black_box(&data), 65536) else {
            unreachable!()
        };
        Message::parse(data.slice(..n)).unwrap()
    });
}

/// The transaction-matching keys of a parsed INVITE.
#[divan::bench]
fn txn_keys_lookup(bencher: Bencher) {
    let m = Message::parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
    bencher.bench(|| {
        let m = black_box(&m);
        let v = m.top_via().unwrap();
        let c = m.cseq().unwrap();
        (v.branch.map(str::len), c.seq, m.call_id().map(str::len))
    });
}

#[divan::bench]
fn build_200_with_sdp(bencher: Bencher) {
    let req = Message::parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
    bencher.bench(|| {
        ResponseBuilder::new(black_box(&req), 200, "OK")
            .to_tag("cg9k2m1")
            .header("Contact", "<sip:120@198.51.100.5:5060>")
            .header("Allow", "INVITE, ACK, CANCEL, OPTIONS, BYE")
            .body("application/sdp", ANSWER_SDP)
            .build()
    });
}
