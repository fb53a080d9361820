//! The call core in virtual time: every call flow of the SIP edge, driven message by message with
//! no sockets and no sleeping. Time jumps to the core's own next deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use callgate::call::{Core, Leg, MediaCommand, MediaEvent, Output};
use callgate::config::Profile;
use callgate::metrics::{Metrics, Stage};
use callgate::records::{CallRecord, Outcome};
use callgate::sip::msg::{HeaderName, Message, Method};
use callgate::sip::{Peer, Transport};

const CARRIER: &str = "127.0.0.1:5070";
const DEPT: &str = "127.0.0.9:5092";

struct Harness {
    core: Core,
    now: Instant,
    metrics: Arc<Metrics>,
    sent: Vec<(Peer, Message)>,
    media: Vec<MediaCommand>,
    records: Vec<CallRecord>,
    queue_log: Vec<callgate::acd::log::QueueEvent>,
    cti: Vec<callgate::cti::Event>,
}

impl Harness {
    fn new() -> Harness {
        let profile = Arc::new(Profile::load(Path::new("tests/data/core-profile")).expect("test profile loads"));
        let metrics = Arc::new(Metrics::new());
        let now = Instant::now();
        let durations = HashMap::from([("guidance-ko".to_owned(), Duration::from_secs(13)), ("closed-ko".to_owned(), Duration::from_secs(9)), ("callback-offer-ko".to_owned(), Duration::from_secs(6)), ("callback-confirm-ko".to_owned(), Duration::from_secs(5))]);
        let core = Core::new(profile, metrics.clone(), durations, 42, now, SystemTime::UNIX_EPOCH).expect("core builds");
        Harness { core, now, metrics, sent: Vec::new(), media: Vec::new(), records: Vec::new(), queue_log: Vec::new(), cti: Vec::new() }
    }

    fn input(&mut self, from: &str, text: String) {
        let peer = Peer::udp(from.parse().unwrap());
        self.core.handle_datagram(self.now, Bytes::from(text), peer);
        self.drain();
    }

    fn input_tcp(&mut self, from: &str, text: String) {
        let peer = Peer { transport: Transport::Tcp, addr: from.parse().unwrap(), conn: Some(9) };
        self.core.handle_datagram(self.now, Bytes::from(text), peer);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Transmit(t) => {
                    if let Some(mark) = t.mark {
                        self.metrics.record(mark.stage, self.now - mark.since);
                    }
                    let m = Message::parse(t.data.clone()).expect("callgate sends parseable SIP");
                    self.sent.push((t.peer, m));
                }
                Output::Media(c) => self.media.push(c),
                Output::Record(r) => self.records.push(r),
                Output::QueueLog(e) => self.queue_log.push(e),
                Output::CallbackStore(_) | Output::CallbackDelete(_) => {}
                Output::Measured(mark) => self.metrics.record(mark.stage, self.now - mark.since),
                Output::Cti(ev) => self.cti.push(ev),
            }
        }
    }

    /// Advances virtual time by `d`, firing every deadline on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.core.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    fn media_event(&mut self, ev: MediaEvent) {
        self.core.handle_media(self.now, ev);
        self.drain();
    }

    fn take(&mut self) -> Vec<(Peer, Message)> {
        std::mem::take(&mut self.sent)
    }

    /// Status codes (or methods) of what was sent, in order.
    fn summary(msgs: &[(Peer, Message)]) -> Vec<String> {
        msgs.iter()
            .map(|(_, m)| match m.status() {
                Some(c) => c.to_string(),
                None => m.method().unwrap().as_str().to_owned(),
            })
            .collect()
    }
}

fn sdp(codecs: &str, port: u16) -> String {
    let mut maps = String::new();
    for pt in codecs.split(' ') {
        match pt {
            "0" => maps.push_str("a=rtpmap:0 PCMU/8000\r\n"),
            "8" => maps.push_str("a=rtpmap:8 PCMA/8000\r\n"),
            "18" => maps.push_str("a=rtpmap:18 G729/8000\r\n"),
            "101" => maps.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"),
            _ => {}
        }
    }
    format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {codecs}\r\n{maps}a=ptime:20\r\n"
    )
}

fn invite(number: &str, call_id: &str, branch: &str, body: &str) -> String {
    format!(
        "INVITE sip:{number}@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CARRIER};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Citizen\" <sip:01012345678@127.0.0.1>;tag=caller1\r\n\
         To: <sip:{number}@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:citizen@{CARRIER}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn in_dialog(method: &str, call_id: &str, to_tag: &str, cseq: u32, branch: &str) -> String {
    format!(
        "{method} sip:callgate@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CARRIER};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Citizen\" <sip:01012345678@127.0.0.1>;tag=caller1\r\n\
         To: <sip:120@127.0.0.1>;tag={to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A response from the far end to a request callgate sent.
fn answer(req: &Message, code: u16, reason: &str, to_tag: Option<&str>, body: &str) -> String {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.header_values(HeaderName::Via) {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    s.push_str(&format!("From: {}\r\n", req.header(HeaderName::From).unwrap()));
    match to_tag {
        Some(t) => s.push_str(&format!("To: {};tag={t}\r\n", req.header(HeaderName::To).unwrap())),
        None => s.push_str(&format!("To: {}\r\n", req.header(HeaderName::To).unwrap())),
    }
    s.push_str(&format!("Call-ID: {}\r\n", req.call_id().unwrap()));
    s.push_str(&format!("CSeq: {}\r\n", req.header(HeaderName::CSeq).unwrap()));
    if (200..300).contains(&code) {
        s.push_str(&format!("Contact: <sip:dept@{DEPT}>\r\n"));
    }
    if !body.is_empty() {
        s.push_str("Content-Type: application/sdp\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s
}

fn to_tag(m: &Message) -> String {
    m.to_hdr().unwrap().tag().unwrap().to_owned()
}

/// INVITE to 120, answered; returns callgate's To tag.
fn answered_guidance_call(h: &mut Harness, call_id: &str) -> String {
    h.input(CARRIER, invite("120", call_id, "inv1", &sdp("0 8 101", 40000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "200"]);
    to_tag(&sent[1].1)
}

#[test]
fn guidance_call_is_answered_streams_the_announcement_and_ends_with_bye() {
    let mut h = Harness::new();
    h.input(CARRIER, invite("120", "c1", "inv1", &sdp("8 0 101", 40000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "200"]);
    let ok = &sent[1].1;
    assert_eq!(sent[1].0.addr, CARRIER.parse::<SocketAddr>().unwrap(), "responses follow rport to the source");
    assert_eq!(ok.content_type(), Some("application/sdp"));
    let sdp_answer = String::from_utf8(ok.body().to_vec()).unwrap();
    assert!(sdp_answer.contains("m=audio 30000 RTP/AVP 8 101"), "answer takes the caller's first codec: {sdp_answer}");
    assert!(h.media.is_empty(), "no media before the ACK");

    let tag = to_tag(ok);
    h.input(CARRIER, in_dialog("ACK", "c1", &tag, 1, "ack1"));
    match &h.media[..] {
        [MediaCommand::Open { leg: Leg::A, media, local_port, .. }, MediaCommand::Play { leg: Leg::A, playlist, looped: false, .. }] => {
            assert_eq!(media.remote, Some("127.0.0.1:40000".parse::<SocketAddr>().unwrap()));
            assert_eq!(media.audio_pt, 8);
            assert_eq!(*local_port, 30000);
            assert_eq!(playlist, &["guidance-ko".to_owned()]);
        }
        other => panic!("expected Open and Play, got {other:?}"),
    }
    assert_eq!(h.core.active_calls(), 1);

    h.advance(Duration::from_secs(13));
    let call = match &h.media[1] {
        MediaCommand::Play { call, .. } => *call,
        _ => unreachable!(),
    };
    h.media_event(MediaEvent::Finished { call, leg: Leg::A });
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["BYE"]);
    let bye = &sent[0].1;
    assert_eq!(bye.request_uri(), Some("sip:citizen@127.0.0.1:5070"), "BYE goes to the caller's Contact");
    assert_eq!(bye.from_hdr().unwrap().tag(), Some(tag.as_str()));
    assert_eq!(bye.to_hdr().unwrap().tag(), Some("caller1"));
    assert!(matches!(h.media.last(), Some(MediaCommand::Stop { .. })));
    assert_eq!(h.core.active_calls(), 0);

    let rec = &h.records[0];
    assert_eq!(rec.outcome, Outcome::Completed);
    assert_eq!((rec.caller.as_str(), rec.number.as_str()), ("01012345678", "120"));
    assert_eq!(rec.tenant.as_deref(), Some("test"));
    assert_eq!(rec.trunk.as_deref(), Some("test-carrier"));
    assert!(rec.answered_ms.is_some());
    assert_eq!(rec.ended_ms - rec.arrived_ms, 13_000);

    // The caller answers the BYE; every transaction then ends.
    let bye = bye.clone();
    h.input(CARRIER, answer(&bye, 200, "OK", None, ""));
    h.advance(Duration::from_secs(40));
    assert_eq!(h.core.live_transactions(), 0);
}

#[test]
fn caller_hanging_up_during_the_announcement_is_recorded_as_abandoned() {
    let mut h = Harness::new();
    let tag = answered_guidance_call(&mut h, "c2");
    h.input(CARRIER, in_dialog("ACK", "c2", &tag, 1, "ack1"));
    h.advance(Duration::from_secs(3));
    h.input(CARRIER, in_dialog("BYE", "c2", &tag, 2, "bye1"));
    assert_eq!(Harness::summary(&h.take()), ["200"]);
    assert!(matches!(h.media.last(), Some(MediaCommand::Stop { .. })));
    assert_eq!(h.records.len(), 1);
    assert_eq!(h.records[0].outcome, Outcome::Abandoned);
    assert_eq!(h.records[0].ended_ms - h.records[0].arrived_ms, 3_000);
    // A retransmitted BYE gets the same 200 again and no second record.
    h.input(CARRIER, in_dialog("BYE", "c2", &tag, 2, "bye1"));
    assert_eq!(Harness::summary(&h.take()), ["200"]);
    assert_eq!(h.records.len(), 1);
}

#[test]
fn invite_retransmissions_are_absorbed_and_make_no_second_call() {
    let mut h = Harness::new();
    let body = sdp("0", 40000);
    h.input(CARRIER, invite("120", "c3", "inv1", &body));
    h.take();
    h.input(CARRIER, invite("120", "c3", "inv1", &body));
    h.input(CARRIER, invite("120", "c3", "inv1", &body));
    assert_eq!(h.core.active_calls(), 1);
    // The 200 is retransmitted until the ACK (T1, 2*T1 ...), not a new answer per INVITE copy.
    h.advance(Duration::from_millis(600));
    let again = h.take();
    assert!(again.iter().all(|(_, m)| m.status() == Some(200)), "only 200 retransmissions: {:?}", Harness::summary(&again));
}

#[test]
fn no_ack_for_the_200_ends_the_call_with_bye_and_a_failed_record() {
    let mut h = Harness::new();
    answered_guidance_call(&mut h, "c4");
    h.advance(Duration::from_secs(40));
    let sent = Harness::summary(&h.take());
    assert!(sent.iter().filter(|s| *s == "200").count() >= 5, "the 200 was retransmitted: {sent:?}");
    assert!(sent.contains(&"BYE".to_owned()), "then BYE: {sent:?}");
    assert_eq!(h.records.len(), 1);
    assert_eq!(h.records[0].outcome, Outcome::Failed);
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn source_outside_every_trunk_gets_403_and_leaves_no_state() {
    let mut h = Harness::new();
    let inv = invite("120", "c5", "inv1", &sdp("0", 40000));
    h.input("10.9.8.7:5060", inv.clone());
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["403"]);
    assert_eq!(sent[0].0.addr, "10.9.8.7:5060".parse::<SocketAddr>().unwrap());
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.live_transactions(), 0, "a 403 to an unknown source keeps no transaction");
    assert_eq!(h.core.poll_timeout(), None);
    // A retransmission gets the same answer and maps onto the same record id.
    h.input("10.9.8.7:5060", inv);
    assert_eq!(Harness::summary(&h.take()), ["403"]);
    assert_eq!(h.records.len(), 2);
    assert_eq!(h.records[0].call_id, h.records[1].call_id);
    assert_eq!(h.records[0].outcome, Outcome::Rejected);
    assert_eq!(h.records[0].sip_status, 403);
}

#[test]
fn unknown_number_gets_404_with_a_record() {
    let mut h = Harness::new();
    h.input(CARRIER, invite("999", "c6", "inv1", &sdp("0", 40000)));
    assert_eq!(Harness::summary(&h.take()), ["100", "404"]);
    assert_eq!(h.records[0].outcome, Outcome::NotFound);
    assert_eq!(h.records[0].number, "999");
    // The caller's ACK for the 404 is absorbed by the transaction.
    let mut ack = in_dialog("ACK", "c6", "cg-x", 1, "inv1");
    ack = ack.replace("ACK sip:callgate@127.0.0.1:5060", "ACK sip:999@127.0.0.1:5060");
    h.input(CARRIER, ack);
    assert!(h.take().is_empty());
}

#[test]
fn offer_with_no_common_codec_gets_488() {
    let mut h = Harness::new();
    h.input(CARRIER, invite("120", "c7", "inv1", &sdp("18", 40000)));
    assert_eq!(Harness::summary(&h.take()), ["100", "488"]);
    assert_eq!(h.records[0].outcome, Outcome::NotAcceptable);
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn options_unknown_methods_and_malformed_requests() {
    let mut h = Harness::new();
    let options = in_dialog("OPTIONS", "o1", "x", 1, "o1").replace(";tag=x", "");
    h.input(CARRIER, options);
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["200"]);
    assert!(sent[0].1.header(HeaderName::Allow).unwrap().contains("INVITE"));

    let foo = in_dialog("FOO", "f1", "x", 1, "f1").replace(";tag=x", "");
    h.input(CARRIER, foo);
    assert_eq!(Harness::summary(&h.take()), ["501"]);

    // No Call-ID: 400 with a reason phrase.
    let bad = invite("120", "zz", "inv9", "").replace("Call-ID: zz\r\n", "");
    h.input(CARRIER, bad);
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["400"]);
    assert!(!sent[0].1.reason().unwrap_or("").is_empty());

    // Garbage that still names a Via gets a 400 too; pure garbage gets nothing, and the core lives on.
    h.input(CARRIER, "\u{1}\u{2}garbage\r\n\r\n".to_owned());
    assert!(h.take().is_empty());
    h.input(CARRIER, invite("120", "c8", "inv1", &sdp("0", 40000)));
    assert_eq!(Harness::summary(&h.take()), ["100", "200"]);
}

#[test]
fn a_full_edge_answers_503_with_retry_after() {
    let mut h = Harness::new();
    for i in 0..3 {
        h.input(CARRIER, invite("120", &format!("full{i}"), &format!("b{i}"), &sdp("0", 40000)));
    }
    h.take();
    h.input(CARRIER, invite("120", "full3", "b3", &sdp("0", 40000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "503"]);
    assert_eq!(sent[1].1.header(HeaderName::RetryAfter), Some("7"));
    assert_eq!(h.records.last().unwrap().outcome, Outcome::Busy);
}

#[test]
fn shutdown_ends_calls_with_bye_and_refuses_new_ones() {
    let mut h = Harness::new();
    let tag = answered_guidance_call(&mut h, "s1");
    h.input(CARRIER, in_dialog("ACK", "s1", &tag, 1, "ack1"));
    h.core.shutdown(h.now);
    h.drain();
    assert_eq!(Harness::summary(&h.take()), ["BYE"]);
    assert_eq!(h.records[0].outcome, Outcome::Shutdown);
    h.input(CARRIER, invite("120", "s2", "b2", &sdp("0", 40000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "503"]);
    assert!(sent[1].1.header(HeaderName::RetryAfter).is_some());
}

#[test]
fn caller_without_media_address_hears_nothing_but_the_call_still_ends_after_the_guidance() {
    let mut h = Harness::new();
    let body = sdp("0", 40000).replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
    h.input(CARRIER, invite("120", "m1", "inv1", &body));
    let tag = to_tag(&h.take()[1].1);
    h.input(CARRIER, in_dialog("ACK", "m1", &tag, 1, "ack1"));
    assert!(!h.media.iter().any(|c| matches!(c, MediaCommand::Play { .. })), "nothing is played to nowhere");
    h.advance(Duration::from_millis(12_900));
    assert!(h.take().iter().all(|(_, m)| m.method() != Some(&Method::Bye)));
    h.advance(Duration::from_millis(200));
    assert_eq!(Harness::summary(&h.take()), ["BYE"]);
    assert_eq!(h.records[0].outcome, Outcome::Completed);
}

#[test]
fn session_refresh_reinvite_on_a_guidance_call_gets_the_same_answer() {
    let mut h = Harness::new();
    h.input(CARRIER, invite("120", "r1", "inv1", &sdp("0", 40000)));
    let sent = h.take();
    let tag = to_tag(&sent[1].1);
    let first = sent[1].1.body();
    h.input(CARRIER, in_dialog("ACK", "r1", &tag, 1, "ack1"));
    let re = invite("120", "r1", "inv2", &sdp("0", 40000))
        .replace("To: <sip:120@127.0.0.1>", &format!("To: <sip:120@127.0.0.1>;tag={tag}"))
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE");
    h.input(CARRIER, re);
    let sent = h.take();
    // Answered at once, so no 100 is needed.
    assert_eq!(Harness::summary(&sent), ["200"]);
    assert_eq!(sent[0].1.body(), first);
    assert_eq!(h.core.active_calls(), 1, "the call goes on");
}

#[test]
fn latency_marks_cover_invite_to_100_and_invite_to_200() {
    let mut h = Harness::new();
    answered_guidance_call(&mut h, "l1");
    for stage in [Stage::InviteTo100, Stage::InviteTo200] {
        assert_eq!(h.metrics.stage_summary(stage).map(|s| s.count).unwrap_or(0), 1, "{stage:?}");
    }
}

// ---- the B2BUA bridge -------------------------------------------------------------------------

fn bridged_call_setup(h: &mut Harness, call_id: &str) -> (Message, String) {
    h.input(CARRIER, invite("200", call_id, "inv1", &sdp("0 101", 40000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "INVITE"]);
    let (peer, b_inv) = sent[1].clone();
    assert_eq!(peer.addr, DEPT.parse::<SocketAddr>().unwrap());
    assert_eq!(b_inv.request_uri(), Some("sip:dept@127.0.0.9:5092"));
    assert_ne!(b_inv.call_id(), Some(call_id), "a B2BUA leg has its own Call-ID");
    let offer = String::from_utf8_lossy(&b_inv.body()).into_owned();
    assert!(offer.contains("c=IN IP4 127.0.0.1") && !offer.contains("m=audio 40000"), "callgate anchors the media: its own offer, from its own port: {offer}");
    assert!(offer.contains("RTP/AVP 0 8 101"), "both laws and telephone-event offered: {offer}");
    assert_eq!(b_inv.max_forwards(), Some(69));
    h.input(DEPT, answer(&b_inv, 180, "Ringing", Some("dept1"), ""));
    assert_eq!(Harness::summary(&h.take()), ["180"]);
    (b_inv, call_id.to_owned())
}

#[test]
fn bridge_connects_both_legs_and_bye_passes_through() {
    let mut h = Harness::new();
    let (b_inv, _) = bridged_call_setup(&mut h, "b1");
    h.input(DEPT, answer(&b_inv, 200, "OK", Some("dept1"), &sdp("0", 41000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["ACK", "200"]);
    assert_eq!(sent[0].1.request_uri(), Some("sip:dept@127.0.0.9:5092"));
    let ok = &sent[1].1;
    let a_answer = String::from_utf8_lossy(&ok.body()).into_owned();
    assert!(!a_answer.contains("m=audio 41000") && a_answer.contains("m=audio 30000"), "the caller gets callgate's own answer: {a_answer}");
    let tag = to_tag(ok);
    // Media is anchored: both legs open on callgate's ports, each hears the other through the relay.
    let opened: Vec<(Leg, u16, Option<SocketAddr>)> = h
        .media
        .iter()
        .filter_map(|c| match c {
            MediaCommand::Open { leg, local_port, media, .. } => Some((*leg, *local_port, media.remote)),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 2, "{:?}", h.media);
    assert!(opened.contains(&(Leg::A, 30000, Some("127.0.0.1:40000".parse().unwrap()))), "{opened:?}");
    assert!(opened.iter().any(|(l, p, r)| *l == Leg::B && *p != 30000 && *r == Some("127.0.0.1:41000".parse().unwrap())), "{opened:?}");
    for leg in [Leg::A, Leg::B] {
        assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Relay { to_leg, .. } if *to_leg == leg)), "relay toward {leg:?}");
    }

    // B retransmits its 200 (our ACK was lost): it is ACKed again, the caller sees nothing new.
    h.input(DEPT, answer(&b_inv, 200, "OK", Some("dept1"), &sdp("0", 41000)));
    assert_eq!(Harness::summary(&h.take()), ["ACK"]);

    h.input(CARRIER, in_dialog("ACK", "b1", &tag, 1, "ack1"));
    h.input(CARRIER, in_dialog("BYE", "b1", &tag, 2, "bye1"));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["200", "BYE"]);
    assert_eq!(sent[1].0.addr, DEPT.parse::<SocketAddr>().unwrap());
    assert_eq!(sent[1].1.call_id(), b_inv.call_id());
    assert_eq!(sent[1].1.to_hdr().unwrap().tag(), Some("dept1"));
    assert_eq!(h.records[0].outcome, Outcome::Bridged);
}

#[test]
fn bridge_target_busy_is_relayed_to_the_caller() {
    let mut h = Harness::new();
    let (b_inv, _) = bridged_call_setup(&mut h, "b2");
    h.input(DEPT, answer(&b_inv, 486, "Busy Here", Some("dept1"), ""));
    let sent = h.take();
    // The transaction layer ACKs the 486 itself; the caller gets 486.
    assert_eq!(Harness::summary(&sent), ["ACK", "486"]);
    assert_eq!(h.records[0].outcome, Outcome::Busy);
    assert_eq!(h.records[0].sip_status, 486);
}

#[test]
fn caller_cancel_while_the_bridge_rings_cancels_the_other_leg() {
    let mut h = Harness::new();
    let (b_inv, _) = bridged_call_setup(&mut h, "b3");
    let cancel = invite("200", "b3", "inv1", "")
        .replace("INVITE sip:200", "CANCEL sip:200")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace("Content-Type: application/sdp\r\n", "");
    h.input(CARRIER, cancel);
    let sent = h.take();
    let s = Harness::summary(&sent);
    assert!(s.contains(&"CANCEL".to_owned()) && s.contains(&"487".to_owned()) && s.contains(&"200".to_owned()), "{s:?}");
    let cancel_out = sent.iter().find(|(_, m)| m.method() == Some(&Method::Cancel)).unwrap();
    assert_eq!(cancel_out.1.top_via().unwrap().branch, b_inv.top_via().unwrap().branch, "CANCEL matches B's INVITE");
    assert_eq!(h.records[0].outcome, Outcome::Cancelled);
    // B answers 487 after the CANCEL: ACKed by the transaction layer, nothing reaches the caller.
    h.input(DEPT, answer(&b_inv, 487, "Request Terminated", Some("dept1"), ""));
    assert_eq!(Harness::summary(&h.take()), ["ACK"]);
}

#[test]
fn bridge_target_that_never_answers_gives_the_caller_408() {
    let mut h = Harness::new();
    h.input(CARRIER, invite("200", "b4", "inv1", &sdp("0", 40000)));
    h.take();
    h.advance(Duration::from_secs(33));
    let s = Harness::summary(&h.take());
    assert!(s.iter().filter(|x| *x == "INVITE").count() >= 5, "INVITE retransmitted (Timer A): {s:?}");
    assert!(s.contains(&"408".to_owned()), "{s:?}");
    assert_eq!(h.records[0].outcome, Outcome::Failed);
}

#[test]
fn calls_over_tcp_answer_on_the_same_connection() {
    let mut h = Harness::new();
    let inv = invite("120", "t1", "inv1", &sdp("0", 40000)).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    h.input_tcp(CARRIER, inv);
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "200"]);
    assert!(sent.iter().all(|(p, _)| p.transport == Transport::Tcp && p.conn == Some(9)));
    // Over TCP there is no 200 retransmission.
    h.advance(Duration::from_secs(2));
    assert!(h.take().is_empty());
}

#[test]
fn calls_per_second_limit_refuses_the_excess_with_503_and_refills() {
    let mut h = Harness::new();
    // A core of its own with max_cps = 2 (burst 2) and room for plenty of calls.
    let mut profile = Profile::load(Path::new("tests/data/core-profile")).unwrap();
    profile.limits.max_cps = 2;
    profile.limits.max_calls = 100;
    let durations = HashMap::from([("guidance-ko".to_owned(), Duration::from_secs(13)), ("closed-ko".to_owned(), Duration::from_secs(9)), ("callback-offer-ko".to_owned(), Duration::from_secs(6)), ("callback-confirm-ko".to_owned(), Duration::from_secs(5))]);
    h.core = Core::new(Arc::new(profile), h.metrics.clone(), durations, 1, h.now, SystemTime::UNIX_EPOCH).unwrap();
    let mut finals = Vec::new();
    for i in 0..3 {
        h.input(CARRIER, invite("120", &format!("cps{i}"), &format!("b{i}"), &sdp("0", 40000)));
        finals.push(Harness::summary(&h.take()).pop().unwrap());
    }
    assert_eq!(finals, ["200", "200", "503"]);
    h.advance(Duration::from_millis(500));
    h.take();
    h.input(CARRIER, invite("120", "cps4", "b4", &sdp("0", 40000)));
    assert_eq!(Harness::summary(&h.take()).pop().unwrap(), "200", "half a second refills one token");
}

#[test]
fn a_backlogged_shell_makes_new_calls_fail_fast_with_503() {
    let mut h = Harness::new();
    h.core.set_backlogged(true);
    h.input(CARRIER, invite("120", "bl1", "b1", &sdp("0", 40000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "503"]);
    assert!(sent[1].1.header(HeaderName::RetryAfter).is_some());
    h.core.set_backlogged(false);
    h.input(CARRIER, invite("120", "bl2", "b2", &sdp("0", 40000)));
    assert_eq!(Harness::summary(&h.take()), ["100", "200"]);
}

#[test]
fn a_200_crossing_the_callers_cancel_is_acked_and_ended_with_bye() {
    let mut h = Harness::new();
    let (b_inv, _) = bridged_call_setup(&mut h, "x1");
    let cancel = invite("200", "x1", "inv1", "")
        .replace("INVITE sip:200", "CANCEL sip:200")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace("Content-Type: application/sdp\r\n", "");
    h.input(CARRIER, cancel);
    h.take();
    // B had already answered: its 200 arrives after the caller is gone.
    h.input(DEPT, answer(&b_inv, 200, "OK", Some("dept1"), &sdp("0", 41000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["ACK", "BYE"]);
    assert!(sent.iter().all(|(p, _)| p.addr == DEPT.parse::<SocketAddr>().unwrap()));
    assert_eq!(sent[1].1.to_hdr().unwrap().tag(), Some("dept1"));
    assert_eq!(h.records.len(), 1, "one record: the cancelled call");
}

#[test]
fn a_bridge_target_ringing_too_long_is_cancelled_and_the_caller_gets_480() {
    let mut h = Harness::new();
    bridged_call_setup(&mut h, "rt1");
    h.advance(callgate::call::RING_TIMEOUT - Duration::from_millis(1));
    assert!(h.take().is_empty(), "still ringing");
    h.advance(Duration::from_millis(2));
    let s = Harness::summary(&h.take());
    assert!(s.contains(&"CANCEL".to_owned()) && s.contains(&"480".to_owned()), "{s:?}");
    assert_eq!(h.records[0].outcome, Outcome::Failed);
    // Nobody answers the CANCEL or the INVITE: after the CANCEL times out, nothing is left.
    h.advance(Duration::from_secs(70));
    assert_eq!(h.core.live_transactions(), 0);
}

#[test]
fn require_of_an_unknown_extension_gets_420_with_unsupported() {
    let mut h = Harness::new();
    let inv = invite("120", "e1", "inv1", &sdp("0", 40000)).replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRequire: 100rel, foo\r\n");
    h.input(CARRIER, inv);
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["420"]);
    assert_eq!(sent[0].1.header(HeaderName::Unsupported), Some("100rel, foo"));
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn a_body_of_an_unknown_type_gets_415_and_an_unknown_scheme_416() {
    let mut h = Harness::new();
    let inv = invite("120", "e2", "inv1", &sdp("0", 40000)).replace("Content-Type: application/sdp", "Content-Type: application/x-nothing");
    h.input(CARRIER, inv);
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["415"]);
    assert!(sent[0].1.header(HeaderName::Accept).unwrap().contains("application/sdp"));
    let inv = invite("120", "e3", "inv2", &sdp("0", 40000)).replace("INVITE sip:120@127.0.0.1:5060", "INVITE im:120@127.0.0.1");
    h.input(CARRIER, inv);
    assert_eq!(Harness::summary(&h.take()), ["416"]);
}

// ---- findings of the review: routing, dialogs, refusals --------------------------------------

/// A request the bridge target sends inside its dialog with callgate (e.g. its BYE).
fn from_b(method: &str, b_inv: &Message, cseq: u32, branch: &str) -> String {
    let our = b_inv.header(HeaderName::From).unwrap();
    let theirs = b_inv.header(HeaderName::To).unwrap();
    format!(
        "{method} sip:callgate@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {DEPT};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: {theirs};tag=dept1\r\n\
         To: {our}\r\n\
         Call-ID: {}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        b_inv.call_id().unwrap()
    )
}

#[test]
fn the_bridge_targets_bye_is_served_although_it_is_no_trunk() {
    let mut h = Harness::new();
    let (b_inv, _) = bridged_call_setup(&mut h, "bb1");
    h.input(DEPT, answer(&b_inv, 200, "OK", Some("dept1"), &sdp("0", 41000)));
    let tag = to_tag(&h.take()[1].1);
    h.input(CARRIER, in_dialog("ACK", "bb1", &tag, 1, "ack1"));
    h.input(DEPT, from_b("BYE", &b_inv, 2, "byeb"));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["200", "BYE"], "the callee's BYE is answered and passed on");
    assert_eq!(sent[1].0.addr, CARRIER.parse::<SocketAddr>().unwrap());
    assert_eq!(h.records[0].outcome, Outcome::Bridged);
}

#[test]
fn responses_go_to_the_via_port_when_there_is_no_rport() {
    let mut h = Harness::new();
    // Sent from port 5071; the Via says 5070 and asks for no rport (RFC 3261 18.2.2).
    let inv = invite("120", "v1", "inv1", &sdp("0", 40000)).replace(";rport", "");
    h.input("127.0.0.1:5071", inv);
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "200"]);
    for (peer, m) in &sent {
        assert_eq!(peer.addr, "127.0.0.1:5070".parse::<SocketAddr>().unwrap(), "{:?}", m.status());
    }
}

#[test]
fn responses_carry_received_and_rport_for_a_caller_behind_nat() {
    let mut h = Harness::new();
    // The carrier's SBC writes its private address; the packet comes from 127.0.0.1:40001.
    let inv = invite("120", "v2", "inv1", &sdp("0", 40000)).replace(&format!("SIP/2.0/UDP {CARRIER}"), "SIP/2.0/UDP 10.0.0.5:5070");
    h.input("127.0.0.1:40001", inv);
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "200"]);
    for (peer, m) in &sent {
        assert_eq!(peer.addr, "127.0.0.1:40001".parse::<SocketAddr>().unwrap());
        let via = m.header(HeaderName::Via).unwrap();
        assert!(via.contains("received=127.0.0.1") && via.contains("rport=40001"), "{via}");
    }
}

#[test]
fn delayed_offer_from_the_caller_is_answered_in_its_ack_and_then_bridged() {
    let mut h = Harness::new();
    let inv = invite("200", "d1", "inv1", "");
    h.input(CARRIER, inv);
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "INVITE"]);
    let b_inv = sent[1].1.clone();
    assert!(!b_inv.body().is_empty(), "callgate anchors the media, so it always offers to the callee");
    h.input(DEPT, answer(&b_inv, 200, "OK", Some("dept1"), &sdp("0", 41000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["ACK", "200"], "the callee is ACKed at once; the caller gets our offer");
    let tag = to_tag(&sent[1].1);
    let offer = String::from_utf8_lossy(&sent[1].1.body()).into_owned();
    assert!(offer.contains("m=audio 30000"), "{offer}");
    assert!(!h.media.iter().any(|c| matches!(c, MediaCommand::Relay { .. })), "no relay before the caller's answer");
    let answer_sdp = sdp("8", 40000);
    let ack = in_dialog("ACK", "d1", &tag, 1, "ack1")
        .replace("Content-Length: 0\r\n\r\n", &format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer_sdp}", answer_sdp.len()));
    h.input(CARRIER, ack);
    assert!(h.take().is_empty());
    let a_open = h.media.iter().find_map(|c| match c {
        MediaCommand::Open { leg: Leg::A, media, .. } => Some(*media),
        _ => None,
    });
    let a = a_open.expect("the caller's leg opens with its answer");
    assert_eq!((a.remote, a.audio_pt), (Some("127.0.0.1:40000".parse().unwrap()), 8), "PCMA caller, PCMU callee: the bridge transcodes");
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Relay { to_leg: Leg::A, .. })));
}

#[test]
fn caller_bye_in_the_early_dialog_cancels_the_ringing_callee() {
    let mut hh = Harness::new();
    hh.input(CARRIER, invite("200", "eb2", "inv1", &sdp("0", 40000)));
    let b_inv = hh.take()[1].1.clone();
    hh.input(DEPT, answer(&b_inv, 180, "Ringing", Some("dept1"), ""));
    let ringing = hh.take();
    let tag = to_tag(&ringing[0].1);
    hh.input(CARRIER, in_dialog("BYE", "eb2", &tag, 2, "bye1"));
    let s = Harness::summary(&hh.take());
    for want in ["200", "487", "CANCEL"] {
        assert!(s.contains(&want.to_owned()), "{want} missing from {s:?}");
    }
    assert_eq!(hh.records.len(), 1);
    assert_eq!(hh.records[0].outcome, Outcome::Cancelled);
    hh.advance(Duration::from_secs(120));
    assert_eq!(hh.core.live_transactions(), 0, "nothing is left behind");
}

#[test]
fn shutdown_before_the_ack_waits_for_it_before_sending_bye() {
    let mut h = Harness::new();
    let tag = answered_guidance_call(&mut h, "sa1");
    h.core.shutdown(h.now);
    h.drain();
    assert!(Harness::summary(&h.take()).iter().all(|s| s != "BYE"), "no BYE before the ACK (RFC 3261 15)");
    assert!(h.core.awaiting_answers() > 0 || h.core.active_calls() > 0, "the edge is not done yet");
    h.input(CARRIER, in_dialog("ACK", "sa1", &tag, 1, "ack1"));
    assert_eq!(Harness::summary(&h.take()), ["BYE"]);
    assert_eq!(h.records[0].outcome, Outcome::Shutdown);
}

#[test]
fn the_edge_is_done_draining_only_when_its_byes_are_answered() {
    let mut h = Harness::new();
    let tag = answered_guidance_call(&mut h, "sd1");
    h.input(CARRIER, in_dialog("ACK", "sd1", &tag, 1, "ack1"));
    h.core.shutdown(h.now);
    h.drain();
    let bye = h.take().pop().unwrap().1;
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.awaiting_answers(), 1, "the BYE is not answered yet");
    h.input(CARRIER, answer(&bye, 200, "OK", None, ""));
    assert_eq!(h.core.awaiting_answers(), 0);
}

#[test]
fn a_reoffer_that_changes_the_media_is_refused_and_the_call_goes_on() {
    let mut h = Harness::new();
    let tag = answered_guidance_call(&mut h, "ro1");
    h.input(CARRIER, in_dialog("ACK", "ro1", &tag, 1, "ack1"));
    let re = invite("120", "ro1", "inv2", &sdp("8", 41000).replace("a=ptime:20", "a=ptime:20\r\na=sendonly"))
        .replace("To: <sip:120@127.0.0.1>", &format!("To: <sip:120@127.0.0.1>;tag={tag}"))
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE");
    h.input(CARRIER, re);
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["488"], "an answer we cannot honour is refused (RFC 3264: session unchanged)");
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn a_merged_request_gets_482_and_makes_no_second_call() {
    let mut h = Harness::new();
    h.input(CARRIER, invite("120", "mg1", "m1", &sdp("0", 40000)));
    h.take();
    // The same request again through another path: another branch (RFC 3261 8.2.2.2).
    h.input(CARRIER, invite("120", "mg1", "m2", &sdp("0", 40000)));
    assert_eq!(Harness::summary(&h.take()), ["482"]);
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn a_second_forked_2xx_is_acked_on_its_own_dialog_and_ended() {
    let mut h = Harness::new();
    let (b_inv, _) = bridged_call_setup(&mut h, "fk1");
    h.input(DEPT, answer(&b_inv, 200, "OK", Some("fork1"), &sdp("0", 41000)));
    h.take();
    h.input(DEPT, answer(&b_inv, 200, "OK", Some("fork2"), &sdp("0", 41002)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["ACK", "BYE"]);
    for (_, m) in &sent {
        assert_eq!(m.to_hdr().unwrap().tag(), Some("fork2"));
    }
    assert_eq!(h.core.active_calls(), 1, "the first dialog stays up");
}

#[test]
fn invites_refused_before_the_transaction_layer_still_leave_a_record() {
    let mut h = Harness::new();
    let inv = invite("120", "rr1", "inv1", &sdp("0", 40000)).replace("Content-Type: application/sdp", "Content-Type: text/plain");
    h.input(CARRIER, inv);
    assert_eq!(Harness::summary(&h.take()), ["415"]);
    assert_eq!(h.records.len(), 1);
    assert_eq!(h.records[0].sip_status, 415);
    assert_eq!(h.records[0].outcome, Outcome::Rejected);
    let bad = invite("120", "rr2", "inv2", "").replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
    h.input(CARRIER, bad);
    assert_eq!(Harness::summary(&h.take()), ["400"]);
    assert_eq!(h.records.len(), 2);
    assert_eq!(h.records[1].sip_status, 400);
}

#[test]
fn cancel_after_a_final_answer_gets_200_and_update_gets_405() {
    let mut h = Harness::new();
    h.input(CARRIER, invite("999", "ca1", "inv1", &sdp("0", 40000)));
    assert_eq!(Harness::summary(&h.take()), ["100", "404"]);
    let cancel = invite("999", "ca1", "inv1", "")
        .replace("INVITE sip:999", "CANCEL sip:999")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace("Content-Type: application/sdp\r\n", "");
    h.input(CARRIER, cancel);
    assert_eq!(Harness::summary(&h.take()), ["200"], "the INVITE transaction exists: CANCEL is answered 200 (RFC 3261 9.2)");

    let mut h = Harness::new();
    let tag = answered_guidance_call(&mut h, "up1");
    h.input(CARRIER, in_dialog("UPDATE", "up1", &tag, 2, "up1"));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["405"]);
    assert!(sent[0].1.header(HeaderName::Allow).is_some());
}

#[test]
fn a_redirect_from_the_bridge_target_reaches_the_caller_with_its_contact() {
    let mut h = Harness::new();
    let (b_inv, _) = bridged_call_setup(&mut h, "rd1");
    let resp = answer(&b_inv, 302, "Moved Temporarily", Some("dept1"), "")
        .replace("Content-Length: 0", "Contact: <sip:other@127.0.0.9:5099>\r\nContent-Length: 0");
    h.input(DEPT, resp);
    let sent = h.take();
    let fwd = sent.iter().find(|(_, m)| m.status() == Some(302)).expect("302 relayed");
    assert_eq!(fwd.1.header(HeaderName::Contact), Some("<sip:other@127.0.0.9:5099>"));
}

#[test]
fn a_flood_from_a_stranger_writes_a_bounded_number_of_records() {
    let mut h = Harness::new();
    for i in 0..2_000 {
        h.input("10.9.8.7:5060", invite("120", &format!("fl{i}"), &format!("f{i}"), ""));
    }
    assert_eq!(h.take().len(), 2_000, "every one is answered 403");
    assert!(h.records.len() <= 100, "{} records written within one second for one stranger", h.records.len());
    assert!(!h.records.is_empty());
}

#[test]
fn a_tel_uri_and_compact_headers_reach_the_service() {
    let mut h = Harness::new();
    let body = sdp("0", 40000);
    // Compact forms (v f t i m c l), a tel: Request-URI with visual separators, lower-case names.
    let inv = format!(
        "INVITE tel:1-2-0;phone-context=+82 SIP/2.0\r\n\
         v: SIP/2.0/UDP {CARRIER};branch=z9hG4bKtel1;rport\r\n\
         max-forwards: 70\r\n\
         f: <tel:+82-31-909-9000>;tag=t1\r\n\
         t: <tel:120>\r\n\
         i: tel-call-1\r\n\
         CSeq: 1 INVITE\r\n\
         m: <sip:carrier@{CARRIER}>\r\n\
         c: application/sdp\r\n\
         l: {}\r\n\r\n{body}",
        body.len()
    );
    h.input(CARRIER, inv);
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "200"]);
    assert_eq!(sent[1].1.call_id(), Some("tel-call-1"));
    let tag = to_tag(&sent[1].1);
    let ack = in_dialog("ACK", "tel-call-1", &tag, 1, "telack").replace("tag=caller1", "tag=t1");
    h.input(CARRIER, ack);
    assert!(matches!(h.media.last(), Some(MediaCommand::Play { .. })), "the guidance starts after the ACK");
    h.core.shutdown(h.now);
    h.drain();
    let rec = &h.records[0];
    assert_eq!(rec.number, "120");
    assert_eq!(rec.caller, "+82319099000");
}

#[test]
fn key_presses_sent_as_sip_info_join_the_calls_digits() {
    let mut h = Harness::new();
    let tag = answered_guidance_call(&mut h, "in1");
    h.input(CARRIER, in_dialog("ACK", "in1", &tag, 1, "ack1"));
    let info = |cseq: u32, branch: &str, ctype: &str, body: &str| {
        in_dialog("INFO", "in1", &tag, cseq, branch)
            .replace("Content-Length: 0\r\n\r\n", &format!("Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}", body.len()))
    };
    h.input(CARRIER, info(2, "i1", "application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"));
    h.input(CARRIER, info(3, "i2", "application/dtmf", "#"));
    h.input(CARRIER, info(4, "i3", "application/dtmf-relay", "Signal=banana\r\n"));
    assert_eq!(Harness::summary(&h.take()), ["200", "200", "400"]);
    h.input(CARRIER, in_dialog("BYE", "in1", &tag, 5, "bye1"));
    assert_eq!(h.records[0].digits, "5#");
}

#[test]
fn a_flood_of_key_presses_keeps_a_bounded_number_of_digits() {
    let mut h = Harness::new();
    let tag = answered_guidance_call(&mut h, "fl1");
    h.input(CARRIER, in_dialog("ACK", "fl1", &tag, 1, "ack1"));
    for i in 0..100u32 {
        let body = "Signal=7\r\nDuration=100\r\n";
        let info = in_dialog("INFO", "fl1", &tag, 2 + i, &format!("f{i}"))
            .replace("Content-Length: 0\r\n\r\n", &format!("Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
        h.input(CARRIER, info);
    }
    h.input(CARRIER, in_dialog("BYE", "fl1", &tag, 200, "bye1"));
    assert_eq!(h.records[0].digits.len(), callgate::call::MAX_DIGITS);
}

// ---- the ACD: agents registered with digest, offers, bridging, wrap-up ---------------------------

const AGENT1: &str = "127.0.0.1:6001";
const AGENT2: &str = "127.0.0.1:6002";

fn register(ext: &str, from: &str, call_id: &str, cseq: u32, auth: Option<&str>) -> String {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!(
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKreg{cseq}{ext};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{ext}@127.0.0.1>;tag=r{ext}\r\n\
         To: <sip:{ext}@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{ext}@{from}>\r\n\
         Expires: 3600\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
}

/// Registers an agent's phone with digest auth (401, then the answer); asserts the 200.
fn register_agent(h: &mut Harness, ext: &str, password: &str, from: &str) {
    use callgate::sip::digest::{Challenge, Credentials};
    let cid = format!("reg-{ext}");
    h.input(from, register(ext, from, &cid, 1, None));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["401"]);
    let ch = Challenge::parse(sent[0].1.header(HeaderName::WwwAuthenticate).unwrap()).unwrap();
    let cred = Credentials::answer(&ch, "REGISTER", "sip:127.0.0.1:5060", ext, password, "abc", 1);
    h.input(from, register(ext, from, &cid, 2, Some(&cred.to_header_value())));
    assert_eq!(Harness::summary(&h.take()), ["200"], "agent {ext} registered");
}

/// A queued caller (service 130): answered, ACKed; returns the caller's To tag and what was sent.
fn queued_caller(h: &mut Harness, call_id: &str) -> (String, Vec<(Peer, Message)>) {
    h.input(CARRIER, invite("130", call_id, &format!("inv-{call_id}"), &sdp("0 101", 40000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "200"]);
    let tag = to_tag(&sent[1].1);
    h.input(CARRIER, in_dialog("ACK", call_id, &tag, 1, &format!("ack-{call_id}")));
    (tag, h.take())
}

fn agent_answer(req: &Message, code: u16, tag: &str, port: u16) -> String {
    let body = if code == 200 { sdp("0 101", port) } else { String::new() };
    answer(req, code, if code == 200 { "OK" } else { "Busy Here" }, Some(tag), &body)
}

#[test]
fn a_queued_caller_is_offered_to_the_registered_agent_bridged_and_the_agent_wraps_up() {
    let mut h = Harness::new();
    register_agent(&mut h, "2001", "secret2001", AGENT1);
    let (tag, sent) = queued_caller(&mut h, "q1");
    // The agent is ready: the INVITE leaves in the same input that queued the caller.
    assert_eq!(Harness::summary(&sent), ["INVITE"]);
    let (peer, inv) = &sent[0];
    assert_eq!(peer.addr, AGENT1.parse::<SocketAddr>().unwrap(), "sent where the phone registered from");
    assert_eq!(inv.request_uri(), Some(format!("sip:2001@{AGENT1}").as_str()));
    for (name, want) in [("X-Callgate-Queue", "agents"), ("X-Callgate-Caller", "01012345678"), ("X-Callgate-Number", "130")] {
        let got = inv.headers().find(|hh| hh.raw_name.eq_ignore_ascii_case(name)).map(|hh| hh.value.to_owned());
        assert_eq!(got.as_deref(), Some(want), "{name}");
    }
    assert!(inv.headers().any(|hh| hh.raw_name == "Call-Info" && hh.value.contains("answer-after=0")));
    assert_eq!(h.metrics.stage_summary(Stage::EnqueueToOffer).map(|s| s.count), Some(1));
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Play { leg: Leg::A, looped: true, .. })), "music while it rings");

    let inv = inv.clone();
    h.advance(Duration::from_secs(2));
    let s = Harness::summary(&h.take());
    assert!(s.iter().all(|m| m == "INVITE"), "only INVITE retransmissions while it rings: {s:?}");
    h.input(AGENT1, agent_answer(&inv, 200, "ag1", 42000));
    assert_eq!(Harness::summary(&h.take()), ["ACK"]);
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Relay { to_leg: Leg::A, .. })));
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Open { leg: Leg::B, media, .. } if media.remote == Some("127.0.0.1:42000".parse().unwrap()))));
    assert_eq!(h.metrics.stage_summary(Stage::AnswerToBridge).map(|s| s.count), Some(1));

    h.advance(Duration::from_secs(30));
    h.input(CARRIER, in_dialog("BYE", "q1", &tag, 2, "bye-q1"));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["200", "BYE"]);
    assert_eq!(sent[1].0.addr, AGENT1.parse::<SocketAddr>().unwrap());
    h.input(AGENT1, answer(&sent[1].1, 200, "OK", None, ""));
    let rec = h.records.last().unwrap();
    assert_eq!((rec.outcome, rec.agent.as_deref(), rec.queue.as_deref()), (Outcome::Completed, Some("2001"), Some("agents")));
    assert_eq!(rec.talk_ms, Some(30_000));
    assert_eq!(rec.wait_ms, Some(2_000));
    assert_eq!(rec.end_reason.as_deref(), Some("caller"));
    let kinds: Vec<&str> = h.queue_log.iter().map(|e| e.kind.name()).collect();
    for want in ["enter", "offer", "connect", "complete"] {
        assert!(kinds.contains(&want), "{want} in {kinds:?}");
    }

    // Wrap-up: a caller arriving 3 s later waits (the only agent is in after-call work, 5 s) ...
    h.advance(Duration::from_secs(3));
    let (_, sent) = queued_caller(&mut h, "q2");
    assert!(sent.is_empty(), "no offer during wrap-up: {:?}", Harness::summary(&sent));
    // ... and is offered when the wrap-up ends.
    h.advance(Duration::from_secs(3));
    let sent = h.take();
    assert!(Harness::summary(&sent).contains(&"INVITE".to_owned()), "offered after wrap-up: {:?}", Harness::summary(&sent));
    assert_eq!(h.metrics.stage_summary(Stage::ReadyToOffer).map(|s| s.count), Some(1));
}

#[test]
fn an_agent_who_does_not_answer_is_cancelled_and_the_next_agent_rings() {
    let mut h = Harness::new();
    register_agent(&mut h, "2001", "secret2001", AGENT1);
    h.advance(Duration::from_secs(1));
    register_agent(&mut h, "2002", "secret2002", AGENT2);
    let (_, sent) = queued_caller(&mut h, "r1");
    let (p1, inv1) = sent[0].clone();
    assert_eq!(p1.addr, AGENT1.parse::<SocketAddr>().unwrap(), "longest idle first");
    h.input(AGENT1, answer(&inv1, 180, "Ringing", Some("ag1"), ""));
    h.take();
    h.advance(Duration::from_secs(15));
    let sent = h.take();
    let s = Harness::summary(&sent);
    assert!(s.contains(&"CANCEL".to_owned()) && s.contains(&"INVITE".to_owned()), "{s:?}");
    let inv2 = sent.iter().find(|(_, m)| m.method() == Some(&Method::Invite)).unwrap();
    assert_eq!(inv2.0.addr, AGENT2.parse::<SocketAddr>().unwrap(), "the next agent rings");
    let misses: Vec<_> = h.queue_log.iter().filter(|e| e.kind.name() == "miss").collect();
    assert_eq!(misses.len(), 1, "{:?}", h.queue_log);
    assert_eq!(misses[0].agent, "2001");
}

#[test]
fn a_busy_agent_passes_the_call_on_and_a_late_answer_after_the_caller_left_is_ended() {
    let mut h = Harness::new();
    register_agent(&mut h, "2001", "secret2001", AGENT1);
    register_agent(&mut h, "2002", "secret2002", AGENT2);
    let (tag, sent) = queued_caller(&mut h, "b1");
    let (first, inv1) = sent[0].clone();
    h.input(first.addr.to_string().as_str(), agent_answer(&inv1, 486, "ag1", 0));
    let sent = h.take();
    let inv2 = sent.iter().find(|(_, m)| m.method() == Some(&Method::Invite)).expect("next agent offered").clone();
    assert_ne!(inv2.0.addr, first.addr, "the busy agent is not rung again at once");
    assert!(h.queue_log.iter().any(|e| e.kind.name() == "miss" && e.agent == if first.addr.port() == 6001 { "2001" } else { "2002" }));
    // The caller hangs up while the second agent rings: CANCEL to it.
    h.input(CARRIER, in_dialog("BYE", "b1", &tag, 2, "bye-b1"));
    let s = Harness::summary(&h.take());
    assert!(s.contains(&"CANCEL".to_owned()), "{s:?}");
    assert_eq!(h.records.last().unwrap().outcome, Outcome::Abandoned);
    // Its 200 crosses the CANCEL: ACK and BYE, so no agent is left on a dead call.
    h.input(inv2.0.addr.to_string().as_str(), agent_answer(&inv2.1, 200, "ag2", 42002));
    let s = Harness::summary(&h.take());
    assert!(s.contains(&"ACK".to_owned()) && s.contains(&"BYE".to_owned()), "{s:?}");
}

#[test]
fn outside_the_schedule_the_caller_hears_the_closed_message_and_is_hung_up_on() {
    let mut h = Harness::new();
    h.input(CARRIER, invite("140", "cl1", "inv1", &sdp("0", 40000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "200"]);
    let tag = to_tag(&sent[1].1);
    h.input(CARRIER, in_dialog("ACK", "cl1", &tag, 1, "ack1"));
    match h.media.iter().find(|c| matches!(c, MediaCommand::Play { .. })) {
        Some(MediaCommand::Play { playlist, looped: false, .. }) => assert_eq!(playlist, &["closed-ko".to_owned()]),
        other => panic!("expected the closed message, got {other:?}"),
    }
    let call = match h.media.iter().find(|c| matches!(c, MediaCommand::Play { .. })) {
        Some(MediaCommand::Play { call, .. }) => *call,
        _ => unreachable!(),
    };
    h.media_event(MediaEvent::Finished { call, leg: Leg::A });
    assert_eq!(Harness::summary(&h.take()), ["BYE"]);
    let rec = h.records.last().unwrap();
    assert_eq!(rec.end_reason.as_deref(), Some("closed"), "{rec:?}");
    assert!(h.queue_log.is_empty(), "a closed service queues nobody");
}

#[test]
fn a_closed_service_offers_a_callback_for_the_opening_and_stores_it() {
    let mut h = Harness::new();
    h.input(CARRIER, invite("141", "cc1", "inv1", &sdp("0 101", 40000)));
    let tag = to_tag(&h.take()[1].1);
    h.input(CARRIER, in_dialog("ACK", "cc1", &tag, 1, "ack1"));
    let plays = |h: &Harness| -> Vec<Vec<String>> {
        h.media.iter().filter_map(|c| match c { MediaCommand::Play { playlist, .. } => Some(playlist.clone()), _ => None }).collect()
    };
    assert_eq!(plays(&h), [vec!["closed-ko".to_owned()]]);
    let call = match h.media.iter().find(|c| matches!(c, MediaCommand::Play { .. })) {
        Some(MediaCommand::Play { call, .. }) => *call,
        _ => unreachable!(),
    };
    h.media_event(MediaEvent::Finished { call, leg: Leg::A });
    assert_eq!(plays(&h).last().unwrap(), &vec!["callback-offer-ko".to_owned()], "the offer follows the closed message");
    assert!(h.take().is_empty(), "no BYE while the caller may still press *");
    h.media_event(MediaEvent::Digit { call, leg: Leg::A, digit: '*' });
    assert_eq!(plays(&h).last().unwrap(), &vec!["callback-confirm-ko".to_owned()]);
    assert!(h.queue_log.iter().any(|e| e.kind.name() == "callback_requested"), "{:?}", h.queue_log);
    h.media_event(MediaEvent::Finished { call, leg: Leg::A });
    assert_eq!(Harness::summary(&h.take()), ["BYE"]);
    assert_eq!(h.records.last().unwrap().end_reason.as_deref(), Some("callback requested"));
}

#[test]
fn early_media_plays_the_guidance_in_a_183_and_answers_when_the_caller_enters_the_queue() {
    let mut h = Harness::new();
    h.input(CARRIER, invite("150", "em1", "inv1", &sdp("0 101", 40000)));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["100", "183"], "no answer yet: the guidance is free of charge");
    assert!(String::from_utf8_lossy(&sent[1].1.body()).contains("m=audio 30000"), "the 183 carries callgate's answer");
    let early_sdp = sent[1].1.body();
    let call = match &h.media[..] {
        [MediaCommand::Open { leg: Leg::A, .. }, MediaCommand::Play { call, playlist, .. }] => {
            assert_eq!(playlist, &["guidance-ko".to_owned()]);
            *call
        }
        other => panic!("the guidance starts at once: {other:?}"),
    };
    assert!(h.records.is_empty());
    h.advance(Duration::from_secs(13));
    h.media_event(MediaEvent::Finished { call, leg: Leg::A });
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["200"], "answered on entering the queue");
    assert_eq!(sent[0].1.body(), early_sdp, "the 200 repeats the 183's answer (RFC 3261 13.2.1)");
    assert!(h.queue_log.iter().any(|e| e.kind.name() == "enter"));
}

// ---- consultation, conference, supervisor (legs C and D) --------------------------------------

fn header(m: &Message, name: &str) -> Option<String> {
    m.headers().find(|hh| hh.raw_name.eq_ignore_ascii_case(name)).map(|hh| hh.value.to_owned())
}

/// A queued caller bridged to agent 2001: returns the caller's To tag, the callgate id, the agent's INVITE.
fn connected_call(h: &mut Harness, call_id: &str) -> (String, String, Message) {
    register_agent(h, "2001", "secret2001", AGENT1);
    let (tag, sent) = queued_caller(h, call_id);
    let inv = sent.iter().find(|(_, m)| m.method() == Some(&Method::Invite)).expect("offered").1.clone();
    let cg = header(&inv, "X-Callgate-Call").expect("call id header");
    h.input(AGENT1, agent_answer(&inv, 200, "ag1", 42000));
    assert_eq!(Harness::summary(&h.take()), ["ACK"]);
    h.media.clear();
    (tag, cg, inv)
}

fn cti(h: &mut Harness, role: callgate::cti::Role, cmd: callgate::cti::Command) -> Result<serde_json::Value, callgate::cti::CtiError> {
    let agent = (role == callgate::cti::Role::Agent).then_some("2001");
    let p = callgate::cti::Principal::with_token("p", role, Some("test"), agent, "t");
    let r = h.core.cti_execute(h.now, &p, cmd);
    h.drain();
    r
}

fn mixes(h: &Harness) -> Vec<(Leg, Vec<Leg>)> {
    h.media.iter().filter_map(|c| match c { MediaCommand::Mix { to_leg, from, .. } => Some((*to_leg, from.clone())), _ => None }).collect()
}

fn relays(h: &Harness) -> Vec<Leg> {
    h.media.iter().filter_map(|c| match c { MediaCommand::Relay { to_leg, .. } => Some(*to_leg), _ => None }).collect()
}

#[test]
fn a_consultation_holds_the_caller_talks_to_the_department_swaps_conferences_and_completes() {
    use callgate::cti::{Command, Role};
    let mut h = Harness::new();
    let (tag, cg, _) = connected_call(&mut h, "k1");
    h.advance(Duration::from_secs(20));
    let _ = cti(&mut h, Role::Agent, Command::AttachData { call: cg.clone(), data: serde_json::json!({"subject": "passport"}).as_object().unwrap().clone() });
    cti(&mut h, Role::Agent, Command::ConsultStart { call: cg.clone(), to: "200".into() }).expect("consult starts");
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["INVITE"]);
    let (peer, dinv) = sent[0].clone();
    assert_eq!(peer.addr, DEPT.parse::<SocketAddr>().unwrap());
    assert_eq!(header(&dinv, "X-Callgate-Case").as_deref(), Some(cg.as_str()), "the department's phone sees the case");
    assert_eq!(header(&dinv, "X-Callgate-Subject").as_deref(), Some("passport"));
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Play { leg: Leg::A, looped: true, .. })), "the caller hears music");
    assert_eq!(mixes(&h), [(Leg::B, vec![])], "the agent hears the ringing department's silence, not the caller");
    h.media.clear();
    // Swap and conference need the department to answer first.
    assert!(matches!(cti(&mut h, Role::Agent, Command::ConsultSwap { call: cg.clone() }), Err(callgate::cti::CtiError::WrongState(_))));

    h.advance(Duration::from_secs(3));
    h.take();
    h.input(DEPT, answer(&dinv, 200, "OK", Some("dept1"), &sdp("8 101", 44000)));
    assert_eq!(Harness::summary(&h.take()), ["ACK"]);
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Open { leg: Leg::C, media, .. } if media.remote == Some("127.0.0.1:44000".parse().unwrap()))));
    assert_eq!(mixes(&h), [(Leg::B, vec![Leg::C]), (Leg::C, vec![Leg::B])], "agent and department talk");
    assert!(h.cti.iter().any(|e| e.kind == "call.consult" && e.data["phase"] == "answered"));
    h.media.clear();

    cti(&mut h, Role::Agent, Command::ConsultSwap { call: cg.clone() }).unwrap();
    assert_eq!(relays(&h), [Leg::A, Leg::B], "back with the caller on the direct relay");
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Play { leg: Leg::C, looped: true, .. })), "the department hears music");
    h.media.clear();

    cti(&mut h, Role::Agent, Command::Conference { call: cg.clone() }).unwrap();
    assert_eq!(mixes(&h), [(Leg::A, vec![Leg::B, Leg::C]), (Leg::B, vec![Leg::A, Leg::C]), (Leg::C, vec![Leg::A, Leg::B])]);
    let ev = h.cti.iter().find(|e| e.kind == "call.conferenced").expect("conferenced event");
    assert_eq!(ev.data["parties"], serde_json::json!(["01012345678", "2001", "200"]));
    h.media.clear();
    h.advance(Duration::from_secs(10));
    h.take();

    cti(&mut h, Role::Agent, Command::ConsultComplete { call: cg.clone() }).unwrap();
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["BYE"]);
    assert_eq!(sent[0].0.addr, AGENT1.parse::<SocketAddr>().unwrap(), "the agent leaves");
    h.input(AGENT1, answer(&sent[0].1, 200, "OK", None, ""));
    let cmds: Vec<String> = h.media.iter().map(|c| format!("{c:?}").split_whitespace().next().unwrap().to_owned()).collect();
    assert_eq!(cmds, ["CloseLeg", "Rebind", "Relay", "Relay"], "{:?}", h.media);
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Rebind { from: Leg::C, to: Leg::B, .. })));
    let tr = h.queue_log.iter().find(|e| e.kind.name() == "transfer").expect("transfer row");
    assert!(format!("{:?}", tr.kind).contains("33000"), "the agent's talk (20 + 3 + 10 s) in the transfer row: {:?}", tr.kind);
    assert!(h.cti.iter().any(|e| e.kind == "call.transferred" && e.data["kind"] == "consult"));

    // The department's BYE now ends the call as the B leg's would, and the caller is hung up.
    h.advance(Duration::from_secs(15));
    h.input(DEPT, from_b("BYE", &dinv, 2, "dbye"));
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["200", "BYE"]);
    assert_eq!(sent[1].0.addr, CARRIER.parse::<SocketAddr>().unwrap());
    let _ = tag;
    let rec = h.records.last().unwrap();
    assert_eq!(rec.call_id, cg, "one case across the legs");
    assert_eq!(rec.agent.as_deref(), Some("2001"));
    assert_eq!(rec.talk_ms, Some(33_000 + 15_000), "agent's talk and the department's");
}

#[test]
fn a_cancelled_or_refused_consultation_returns_the_agent_to_the_caller() {
    use callgate::cti::{Command, Role};
    let mut h = Harness::new();
    let (_, cg, _) = connected_call(&mut h, "k2");
    cti(&mut h, Role::Agent, Command::ConsultStart { call: cg.clone(), to: "200".into() }).unwrap();
    let dinv = h.take()[0].1.clone();
    h.input(DEPT, answer(&dinv, 486, "Busy Here", Some("d2"), ""));
    assert_eq!(Harness::summary(&h.take()), ["ACK"], "the failure is ACKed by the transaction layer");
    assert_eq!(relays(&h), [Leg::A, Leg::B], "busy department: caller and agent talk again");
    assert!(h.cti.iter().any(|e| e.kind == "call.consult" && e.data["phase"] == "failed"));
    h.media.clear();

    // Again, answered this time, then cancelled by the agent: BYE to the department.
    cti(&mut h, Role::Agent, Command::ConsultStart { call: cg.clone(), to: "200".into() }).unwrap();
    let dinv = h.take()[0].1.clone();
    h.input(DEPT, answer(&dinv, 200, "OK", Some("d3"), &sdp("0", 44002)));
    h.take();
    h.media.clear();
    cti(&mut h, Role::Agent, Command::ConsultCancel { call: cg.clone() }).unwrap();
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["BYE"]);
    assert_eq!(sent[0].0.addr, DEPT.parse::<SocketAddr>().unwrap());
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::CloseLeg { leg: Leg::C, .. })));
    assert_eq!(relays(&h), [Leg::A, Leg::B]);
    // Hold works again once the consultation is over (it was refused during it) ...
    cti(&mut h, Role::Agent, Command::Hold { call: cg.clone() }).expect("hold after the consultation");
    cti(&mut h, Role::Agent, Command::Resume { call: cg.clone() }).unwrap();
    h.take();
    // ... and a department answering just as the agent cancels is not left up: ACK and BYE.
    cti(&mut h, Role::Agent, Command::ConsultStart { call: cg.clone(), to: "200".into() }).unwrap();
    let dinv = h.take()[0].1.clone();
    cti(&mut h, Role::Agent, Command::ConsultCancel { call: cg.clone() }).unwrap();
    assert_eq!(Harness::summary(&h.take()), ["CANCEL"]);
    h.input(DEPT, answer(&dinv, 200, "OK", Some("d9"), &sdp("0", 44006)));
    assert_eq!(Harness::summary(&h.take()), ["ACK", "BYE"], "the crossing 2xx is ended");
}

#[test]
fn the_agent_hanging_up_during_a_consultation_transfers_the_caller() {
    use callgate::cti::{Command, Role};
    let mut h = Harness::new();
    let (_, cg, ainv) = connected_call(&mut h, "k3");
    cti(&mut h, Role::Agent, Command::ConsultStart { call: cg.clone(), to: "200".into() }).unwrap();
    let dinv = h.take()[0].1.clone();
    // The agent hangs up while the department still rings: the caller keeps the music ...
    h.input(AGENT1, from_b("BYE", &ainv, 2, "abye"));
    assert_eq!(Harness::summary(&h.take()), ["200"], "the caller is not hung up on");
    assert!(h.records.is_empty());
    h.media.clear();
    // ... and the department's answer bridges it.
    h.input(DEPT, answer(&dinv, 200, "OK", Some("d4"), &sdp("0", 44004)));
    assert_eq!(Harness::summary(&h.take()), ["ACK"]);
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Rebind { from: Leg::C, to: Leg::B, .. })));
    assert_eq!(relays(&h), [Leg::A, Leg::B]);
}

#[test]
fn a_supervisor_listens_whispers_barges_and_leaves() {
    use callgate::cti::{Command, MonitorMode, Role};
    let mut h = Harness::new();
    let (_, cg, _) = connected_call(&mut h, "k5");
    register_agent(&mut h, "2002", "secret2002", AGENT2);
    assert!(
        matches!(
            cti(&mut h, Role::Agent, Command::Monitor { call: cg.clone(), mode: MonitorMode::Listen, extension: Some("2002".into()) }),
            Err(callgate::cti::CtiError::Forbidden(_))
        ),
        "agents may not monitor"
    );
    assert!(matches!(
        cti(&mut h, Role::Supervisor, Command::Monitor { call: cg.clone(), mode: MonitorMode::Listen, extension: None }),
        Err(callgate::cti::CtiError::MissingField(_))
    ));
    cti(&mut h, Role::Supervisor, Command::Monitor { call: cg.clone(), mode: MonitorMode::Listen, extension: Some("2002".into()) }).unwrap();
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["INVITE"]);
    assert_eq!(sent[0].0.addr, AGENT2.parse::<SocketAddr>().unwrap(), "the supervisor's phone rings");
    assert_eq!(header(&sent[0].1, "X-Callgate-Monitor").as_deref(), Some("listen"));
    let sinv = sent[0].1.clone();
    assert!(h.media.is_empty(), "nothing changes for caller and agent while it rings");
    h.input(AGENT2, agent_answer(&sinv, 200, "sup", 42002));
    assert_eq!(Harness::summary(&h.take()), ["ACK"]);
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::Open { leg: Leg::D, .. })));
    assert_eq!(mixes(&h), [(Leg::D, vec![Leg::A, Leg::B])], "the supervisor hears both; nobody hears the supervisor");
    assert!(relays(&h).is_empty(), "caller and agent keep the direct relay");
    h.media.clear();

    cti(&mut h, Role::Supervisor, Command::Monitor { call: cg.clone(), mode: MonitorMode::Whisper, extension: None }).unwrap();
    assert_eq!(mixes(&h), [(Leg::B, vec![Leg::A, Leg::D])], "only the agent hears the whisper");
    h.media.clear();
    cti(&mut h, Role::Supervisor, Command::Monitor { call: cg.clone(), mode: MonitorMode::Barge, extension: None }).unwrap();
    assert_eq!(mixes(&h), [(Leg::A, vec![Leg::B, Leg::D])], "the caller hears the supervisor too");
    assert!(matches!(cti(&mut h, Role::Agent, Command::Hold { call: cg.clone() }), Err(callgate::cti::CtiError::WrongState(_))));
    h.media.clear();

    cti(&mut h, Role::Supervisor, Command::Monitor { call: cg.clone(), mode: MonitorMode::Stop, extension: None }).unwrap();
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["BYE"]);
    assert_eq!(sent[0].0.addr, AGENT2.parse::<SocketAddr>().unwrap());
    assert!(h.media.iter().any(|c| matches!(c, MediaCommand::CloseLeg { leg: Leg::D, .. })));
    assert_eq!(relays(&h), [Leg::A, Leg::B], "back to the direct relay");
    let phases: Vec<String> = h.cti.iter().filter(|e| e.kind == "call.monitor").map(|e| e.data["phase"].as_str().unwrap().to_owned()).collect();
    assert_eq!(phases, ["ringing", "answered", "mode", "mode", "ended"]);
}

#[test]
fn the_desktop_answers_a_ringing_phone_with_a_talk_notify() {
    use callgate::cti::{Command, Principal, Role};
    let mut h = Harness::new();
    register_agent(&mut h, "2003", "secret2003", AGENT1);
    let (_, sent) = queued_caller(&mut h, "ra1");
    let inv = sent.iter().find(|(_, m)| m.method() == Some(&Method::Invite)).expect("offered").1.clone();
    assert!(header(&inv, "Call-Info").is_none(), "a phone without auto-answer is not asked to answer at once");
    let cg = header(&inv, "X-Callgate-Call").unwrap();
    let desk = Principal::with_token("d", Role::Agent, Some("test"), Some("2003"), "t");
    // Before the phone rings with a tag there is no dialog to NOTIFY in.
    let r = h.core.cti_execute(h.now, &desk, Command::Answer { call: cg.clone() });
    assert!(matches!(r, Err(callgate::cti::CtiError::WrongState(_))), "{r:?}");
    h.input(AGENT1, answer(&inv, 180, "Ringing", Some("ph3"), ""));
    h.take();
    h.core.cti_execute(h.now, &desk, Command::Answer { call: cg.clone() }).expect("answer");
    h.drain();
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["NOTIFY"]);
    let (peer, notify) = &sent[0];
    assert_eq!(peer.addr, AGENT1.parse::<SocketAddr>().unwrap());
    assert_eq!(header(notify, "Event").as_deref(), Some("talk"));
    assert!(header(notify, "To").unwrap().contains("tag=ph3"), "in the early dialog");
    assert_eq!(notify.call_id(), inv.call_id());
    h.input(AGENT1, answer(notify, 200, "OK", None, ""));
    h.input(AGENT1, agent_answer(&inv, 200, "ph3", 42010));
    assert_eq!(Harness::summary(&h.take()), ["ACK"]);
    assert!(h.cti.iter().any(|e| e.kind == "call.answered"));
}

#[test]
fn an_outbound_call_placed_before_any_call_came_in_goes_out_through_the_trunks_outbound() {
    use callgate::cti::{Command, Role};
    let mut h = Harness::new();
    register_agent(&mut h, "2001", "secret2001", AGENT1);
    h.take();
    let r = cti(
        &mut h,
        Role::Integration,
        Command::ScheduleCallback { tenant: "test".into(), queue: "agents".into(), number: "01099998888".into(), at_ms: None },
    );
    assert!(r.is_ok(), "{r:?}");
    h.advance(Duration::from_secs(2));
    let sent = h.take();
    let inv = sent.iter().find(|(_, m)| m.method() == Some(&Method::Invite)).unwrap_or_else(|| panic!("an INVITE: {:?}", Harness::summary(&sent)));
    assert_eq!(inv.0.addr, CARRIER.parse::<SocketAddr>().unwrap(), "through the trunk's outbound address");
    assert!(inv.1.request_uri().unwrap().contains("01099998888"), "{:?}", inv.1.request_uri());
    assert!(header(&inv.1, "From").unwrap().contains("130"), "from the centre's number of the queue: {:?}", header(&inv.1, "From"));
}

#[test]
fn an_agent_consulted_by_extension_sees_the_case_on_the_desktop_before_the_phone_rings() {
    use callgate::cti::{Command, Role};
    let mut h = Harness::new();
    let (_, cg, _) = connected_call(&mut h, "k6");
    register_agent(&mut h, "2002", "secret2002", AGENT2);
    let data = serde_json::json!({"subject": "tax", "note": "second counselling screen"});
    cti(&mut h, Role::Agent, Command::AttachData { call: cg.clone(), data: data.as_object().unwrap().clone() }).unwrap();
    h.cti.clear();
    cti(&mut h, Role::Agent, Command::ConsultStart { call: cg.clone(), to: "2002".into() }).unwrap();
    let sent = h.take();
    assert_eq!(Harness::summary(&sent), ["INVITE"]);
    assert_eq!(sent[0].0.addr, AGENT2.parse::<SocketAddr>().unwrap(), "the extension's registered phone rings");
    let ev = h.cti.iter().find(|e| e.kind == "call.data" && e.vis.agents.iter().any(|a| a == "2002")).expect("the case for agent 2002's desktop");
    assert_eq!(ev.data["data"], data);
    assert_eq!(ev.data["call"], cg.as_str());
}
