//! RFC 3261 section 17 transactions in virtual time: no sleeps. Each test starts at a fixed `Instant` and
//! jumps straight to `poll_timeout()`; two layers (UAC and UAS) talk through an in-memory channel that can
//! lose and delay messages, driven by a seeded `Rng`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callgate::sip::msg::{Message, Method};
use callgate::sip::txn::{Incoming, TxnConfig, TxnEvent, TxnId, TxnKind, TxnLayer, TxnState};
use callgate::sip::{Peer, Rng, Transmit, Transport};

const UAC: &str = "192.0.2.10:5060";
const UAS: &str = "198.51.100.1:5060";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn peer(addr: &str, transport: Transport) -> Peer {
    let addr: SocketAddr = addr.parse().unwrap();
    match transport {
        Transport::Udp => Peer::udp(addr),
        Transport::Tcp => Peer {
            transport,
            addr,
            conn: Some(1),
        },
    }
}

/// A request from the UAC. `branch: None` makes an RFC 2543 request (no Via branch).
struct Req<'a> {
    method: &'a str,
    branch: Option<&'a str>,
    call_id: &'a str,
    cseq: u32,
    to_tag: Option<&'a str>,
    transport: Transport,
}

impl Req<'_> {
    fn text(&self) -> String {
        let via_branch = self
            .branch
            .map(|b| format!(";branch={b}"))
            .unwrap_or_default();
        let to_tag = self.to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{m} sip:+4930123@edge.example SIP/2.0\r\n\
             Via: SIP/2.0/{tr} {UAC}{via_branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Alice\" <sip:alice@192.0.2.10>;tag=f-{ftag}\r\n\
             To: <sip:+4930123@edge.example>{to_tag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {m}\r\n\
             Content-Length: 0\r\n\r\n",
            m = self.method,
            tr = self.transport.as_via(),
            cid = self.call_id,
            ftag = self.call_id.replace('@', "."),
            cseq = self.cseq,
        )
    }
    fn bytes(&self) -> Bytes {
        Bytes::from(self.text())
    }
    fn msg(&self) -> Message {
        parse(self.bytes())
    }
}

fn invite<'a>(branch: &'a str, call_id: &'a str, transport: Transport) -> Req<'a> {
    Req {
        method: "INVITE",
        branch: Some(branch),
        call_id,
        cseq: 1,
        to_tag: None,
        transport,
    }
}

fn options<'a>(branch: &'a str, call_id: &'a str, transport: Transport) -> Req<'a> {
    Req {
        method: "OPTIONS",
        branch: Some(branch),
        call_id,
        cseq: 1,
        to_tag: None,
        transport,
    }
}

fn parse(b: Bytes) -> Message {
    Message::parse(b).expect("test message parses")
}

/// A response to `req` (copying Via, From, To, Call-ID, CSeq), adding `to_tag` if To has none.
fn resp_bytes(req: &Message, status: u16, to_tag: Option<&str>) -> Bytes {
    let text = std::str::from_utf8(req.raw()).unwrap();
    let mut out = format!("SIP/2.0 {status} Whatever\r\n");
    for line in text.split("\r\n").skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{line}\r\n")),
            "to" => match to_tag {
                Some(t) if !line.contains("tag=") => out.push_str(&format!("{line};tag={t}\r\n")),
                _ => out.push_str(&format!("{line}\r\n")),
            },
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Bytes::from(out)
}

fn resp(req: &Message, status: u16, to_tag: Option<&str>) -> Message {
    parse(resp_bytes(req, status, to_tag))
}

fn drain(l: &mut TxnLayer) -> Vec<Transmit> {
    std::iter::from_fn(|| l.poll_transmit()).collect()
}

fn events(l: &mut TxnLayer) -> Vec<TxnEvent> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

fn first_line(b: &Bytes) -> String {
    let s = String::from_utf8_lossy(b);
    s.split("\r\n").next().unwrap_or("").to_string()
}

fn new_request(l: &mut TxnLayer, now: Instant, m: Message, p: Peer) -> TxnId {
    match l.on_message(now, m, p) {
        Incoming::Request { txn, .. } => txn,
        other => panic!("expected a new request, got {other:?}"),
    }
}

/// Runs one layer alone until `until` (inclusive), jumping from deadline to deadline. Returns every
/// transmit and event with the offset from `t0` at which it happened.
struct Log {
    tx: Vec<(Duration, Transmit)>,
    ev: Vec<(Duration, TxnEvent)>,
}

fn run_alone(l: &mut TxnLayer, t0: Instant, until: Instant) -> Log {
    let mut log = Log {
        tx: Vec::new(),
        ev: Vec::new(),
    };
    for t in drain(l) {
        log.tx.push((Duration::ZERO, t));
    }
    for e in events(l) {
        log.ev.push((Duration::ZERO, e));
    }
    while let Some(at) = l.poll_timeout() {
        if at > until {
            break;
        }
        l.handle_timeout(at);
        for t in drain(l) {
            log.tx.push((at - t0, t));
        }
        for e in events(l) {
            log.ev.push((at - t0, e));
        }
    }
    log
}

fn secs(v: &[f64]) -> Vec<Duration> {
    v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
}

// ---------------------------------------------------------------------------------------------------
// Retransmission schedules

#[test]
fn timer_a_doubles_and_timer_b_fires_at_64_t1() {
    let t0 = Instant::now();
    let cfg = TxnConfig::default();
    let mut l = TxnLayer::new(cfg);
    let r = invite("z9hG4bK-a", "a@x", Transport::Udp);
    let id = l.request(
        t0,
        Method::Invite,
        "z9hG4bK-a",
        r.bytes(),
        peer(UAS, Transport::Udp),
    );
    assert_eq!(l.state(id), Some(TxnState::Calling));
    let log = run_alone(&mut l, t0, t0 + Duration::from_secs(100));
    let times: Vec<Duration> = log.tx.iter().map(|(t, _)| *t).collect();
    // Intervals 0.5, 1, 2, 4, 8, 16 s: Timer A is not capped at T2.
    assert_eq!(times, secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]));
    assert!(log
        .tx
        .iter()
        .all(|(_, t)| t.data == r.bytes() && t.mark.is_none()));
    assert_eq!(
        log.ev,
        vec![
            (cfg.t1 * 64, TxnEvent::Timeout { txn: id }),
            (cfg.t1 * 64, TxnEvent::Terminated { txn: id })
        ]
    );
    assert_eq!(l.len(), 0);
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn timer_e_doubles_to_t2_and_timer_f_fires_at_64_t1() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let r = options("z9hG4bK-e", "e@x", Transport::Udp);
    let id = l.request(
        t0,
        Method::Options,
        "z9hG4bK-e",
        r.bytes(),
        peer(UAS, Transport::Udp),
    );
    let log = run_alone(&mut l, t0, t0 + Duration::from_secs(100));
    let times: Vec<Duration> = log.tx.iter().map(|(t, _)| *t).collect();
    // Intervals 0.5, 1, 2, 4, 4, 4, ... s.
    assert_eq!(
        times,
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    let f = Duration::from_secs(32);
    assert_eq!(
        log.ev,
        vec![
            (f, TxnEvent::Timeout { txn: id }),
            (f, TxnEvent::Terminated { txn: id })
        ]
    );
    assert_eq!(l.len(), 0);
}

#[test]
fn timer_e_uses_t2_once_proceeding() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let r = options("z9hG4bK-ep", "ep@x", Transport::Udp);
    let id = l.request(
        t0,
        Method::Options,
        "z9hG4bK-ep",
        r.bytes(),
        peer(UAS, Transport::Udp),
    );
    drain(&mut l);
    // Retransmissions at 0.5 and 1.5; a 100 Trying arrives at 2 s.
    l.handle_timeout(t0 + ms(500));
    l.handle_timeout(t0 + ms(1500));
    assert_eq!(drain(&mut l).len(), 2);
    let got = l.on_message(
        t0 + ms(2000),
        resp(&r.msg(), 100, None),
        peer(UAS, Transport::Udp),
    );
    assert!(matches!(got, Incoming::Response { txn, .. } if txn == id));
    assert_eq!(l.state(id), Some(TxnState::Proceeding));
    // The pending Timer E (due 3.5) still fires, and from then on the interval is T2.
    let log = run_alone(&mut l, t0, t0 + Duration::from_secs(100));
    let times: Vec<Duration> = log.tx.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, secs(&[3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]));
    assert_eq!(
        log.ev[0],
        (Duration::from_secs(32), TxnEvent::Timeout { txn: id })
    );
}

#[test]
fn timer_g_doubles_to_t2_and_timer_h_reports_the_missing_ack() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let inv = invite("z9hG4bK-g", "g@x", Transport::Udp).msg();
    let id = new_request(&mut l, t0, inv.clone(), peer(UAC, Transport::Udp));
    l.respond(t0, id, 486, resp_bytes(&inv, 486, Some("s1")), None);
    assert_eq!(l.state(id), Some(TxnState::Completed));
    let log = run_alone(&mut l, t0, t0 + Duration::from_secs(100));
    let times: Vec<Duration> = log.tx.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    assert!(log
        .tx
        .iter()
        .all(|(_, t)| first_line(&t.data) == "SIP/2.0 486 Whatever"));
    assert!(log
        .tx
        .iter()
        .all(|(_, t)| t.peer == peer(UAC, Transport::Udp)));
    let h = Duration::from_secs(32);
    assert_eq!(
        log.ev,
        vec![
            (h, TxnEvent::Timeout { txn: id }),
            (h, TxnEvent::Terminated { txn: id })
        ]
    );
    assert_eq!(l.len(), 0);
}

#[test]
fn ack_confirms_and_timer_i_terminates() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let inv = invite("z9hG4bK-i", "i@x", Transport::Udp).msg();
    let id = new_request(&mut l, t0, inv.clone(), peer(UAC, Transport::Udp));
    l.respond(t0, id, 603, resp_bytes(&inv, 603, Some("s1")), None);
    l.handle_timeout(t0 + ms(500));
    assert_eq!(drain(&mut l).len(), 2);
    let ack = Req {
        method: "ACK",
        branch: Some("z9hG4bK-i"),
        call_id: "i@x",
        cseq: 1,
        to_tag: Some("s1"),
        transport: Transport::Udp,
    };
    assert!(matches!(
        l.on_message(t0 + ms(900), ack.msg(), peer(UAC, Transport::Udp)),
        Incoming::Absorbed
    ));
    assert_eq!(l.state(id), Some(TxnState::Confirmed));
    // ACK retransmissions are absorbed; the INVITE is not answered any more.
    assert!(matches!(
        l.on_message(t0 + ms(1000), ack.msg(), peer(UAC, Transport::Udp)),
        Incoming::Absorbed
    ));
    assert!(matches!(
        l.on_message(t0 + ms(1000), inv.clone(), peer(UAC, Transport::Udp)),
        Incoming::Absorbed
    ));
    let log = run_alone(&mut l, t0, t0 + Duration::from_secs(100));
    assert!(log.tx.is_empty(), "Timer G stopped: {:?}", log.tx.len());
    // Timer I = T4 = 5 s after the ACK.
    assert_eq!(log.ev, vec![(ms(5900), TxnEvent::Terminated { txn: id })]);
    assert_eq!(l.len(), 0);
}

#[test]
fn timer_j_keeps_the_non_invite_server_for_64_t1() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let r = options("z9hG4bK-j", "j@x", Transport::Udp).msg();
    let id = new_request(&mut l, t0, r.clone(), peer(UAC, Transport::Udp));
    l.respond(t0 + ms(10), id, 200, resp_bytes(&r, 200, Some("s")), None);
    drain(&mut l);
    // Any retransmission in Completed gets the final response again.
    assert!(matches!(
        l.on_message(t0 + ms(31_000), r.clone(), peer(UAC, Transport::Udp)),
        Incoming::Absorbed
    ));
    let tx = drain(&mut l);
    assert_eq!(tx.len(), 1);
    assert_eq!(first_line(&tx[0].data), "SIP/2.0 200 Whatever");
    let log = run_alone(&mut l, t0, t0 + Duration::from_secs(100));
    assert_eq!(log.ev, vec![(ms(32_010), TxnEvent::Terminated { txn: id })]);
    // Once gone, a late retransmission is a new request again (the TU will see it).
    assert!(matches!(
        l.on_message(t0 + ms(40_000), r, peer(UAC, Transport::Udp)),
        Incoming::Request { .. }
    ));
}

#[test]
fn timer_k_absorbs_response_retransmissions_for_t4() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let r = options("z9hG4bK-k", "k@x", Transport::Udp);
    let id = l.request(
        t0,
        Method::Options,
        "z9hG4bK-k",
        r.bytes(),
        peer(UAS, Transport::Udp),
    );
    drain(&mut l);
    let ok = resp(&r.msg(), 200, Some("s"));
    assert!(matches!(
        l.on_message(t0 + ms(100), ok.clone(), peer(UAS, Transport::Udp)),
        Incoming::Response { .. }
    ));
    assert_eq!(l.state(id), Some(TxnState::Completed));
    assert!(matches!(
        l.on_message(t0 + ms(200), ok.clone(), peer(UAS, Transport::Udp)),
        Incoming::Absorbed
    ));
    let log = run_alone(&mut l, t0, t0 + Duration::from_secs(100));
    assert!(log.tx.is_empty(), "Timer E stopped");
    assert_eq!(log.ev, vec![(ms(5100), TxnEvent::Terminated { txn: id })]);
    assert!(matches!(
        l.on_message(t0 + ms(6000), ok, peer(UAS, Transport::Udp)),
        Incoming::Stray { .. }
    ));
}

#[test]
fn twenty_thousand_live_transactions_keep_their_schedules() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let n = 20_000u64;
    let to = peer(UAS, Transport::Udp);
    let data = options("z9hG4bK-bulk", "bulk@x", Transport::Udp).bytes();
    for i in 0..n {
        // Staggered starts, 1 ms apart: 20 s of arrivals.
        let at = t0 + ms(i);
        l.handle_timeout(at);
        l.request(
            at,
            Method::Options,
            &format!("z9hG4bK-bulk-{i}"),
            data.clone(),
            to,
        );
    }
    assert_eq!(l.len(), n as usize);
    let (mut sent, mut timeouts, mut terminated) = (0u64, 0u64, 0u64);
    let mut last = t0;
    loop {
        sent += drain(&mut l).len() as u64;
        for e in events(&mut l) {
            match e {
                TxnEvent::Timeout { .. } => timeouts += 1,
                TxnEvent::Terminated { .. } => terminated += 1,
                TxnEvent::AckTimeout { .. } => panic!("no INVITE here"),
            }
        }
        let Some(at) = l.poll_timeout() else { break };
        assert!(at >= last, "deadlines come in order");
        last = at;
        l.handle_timeout(at);
    }
    // 11 transmissions each (0, 0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5), then Timer F.
    assert_eq!(sent, 11 * n);
    assert_eq!((timeouts, terminated), (n, n));
    assert_eq!(last, t0 + ms(n - 1) + Duration::from_secs(32));
    assert_eq!(l.len(), 0);
}

// ---------------------------------------------------------------------------------------------------
// Absorbed request retransmissions

#[test]
fn invite_retransmissions_get_the_last_provisional_then_the_final() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let from = peer(UAC, Transport::Udp);
    let inv = invite("z9hG4bK-r", "r@x", Transport::Udp).msg();
    let id = new_request(&mut l, t0, inv.clone(), from);
    // No response yet: absorbed silently.
    assert!(matches!(
        l.on_message(t0 + ms(500), inv.clone(), from),
        Incoming::Absorbed
    ));
    assert!(drain(&mut l).is_empty());
    l.respond(t0 + ms(600), id, 100, resp_bytes(&inv, 100, None), None);
    l.respond(
        t0 + ms(700),
        id,
        180,
        resp_bytes(&inv, 180, Some("s")),
        None,
    );
    assert_eq!(drain(&mut l).len(), 2);
    assert!(matches!(
        l.on_message(t0 + ms(1500), inv.clone(), from),
        Incoming::Absorbed
    ));
    let tx = drain(&mut l);
    assert_eq!(tx.len(), 1);
    assert_eq!(first_line(&tx[0].data), "SIP/2.0 180 Whatever");
    l.respond(
        t0 + ms(2000),
        id,
        480,
        resp_bytes(&inv, 480, Some("s")),
        None,
    );
    drain(&mut l);
    assert!(matches!(
        l.on_message(t0 + ms(2100), inv.clone(), from),
        Incoming::Absorbed
    ));
    let tx = drain(&mut l);
    assert_eq!(tx.len(), 1);
    assert_eq!(first_line(&tx[0].data), "SIP/2.0 480 Whatever");
    assert_eq!(l.len(), 1);
}

#[test]
fn non_invite_retransmissions_get_the_last_response() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let from = peer(UAC, Transport::Udp);
    let r = Req {
        method: "INFO",
        branch: Some("z9hG4bK-n"),
        call_id: "n@x",
        cseq: 2,
        to_tag: Some("s"),
        transport: Transport::Udp,
    }
    .msg();
    let id = new_request(&mut l, t0, r.clone(), from);
    assert_eq!(l.state(id), Some(TxnState::Trying));
    assert!(matches!(
        l.on_message(t0 + ms(500), r.clone(), from),
        Incoming::Absorbed
    ));
    assert!(drain(&mut l).is_empty(), "Trying: nothing to resend");
    l.respond(t0 + ms(600), id, 100, resp_bytes(&r, 100, None), None);
    assert_eq!(l.state(id), Some(TxnState::Proceeding));
    drain(&mut l);
    assert!(matches!(
        l.on_message(t0 + ms(1500), r.clone(), from),
        Incoming::Absorbed
    ));
    assert_eq!(first_line(&drain(&mut l)[0].data), "SIP/2.0 100 Whatever");
    l.respond(t0 + ms(1600), id, 200, resp_bytes(&r, 200, None), None);
    drain(&mut l);
    assert!(matches!(
        l.on_message(t0 + ms(3500), r.clone(), from),
        Incoming::Absorbed
    ));
    assert_eq!(first_line(&drain(&mut l)[0].data), "SIP/2.0 200 Whatever");
}

// ---------------------------------------------------------------------------------------------------
// 2xx to INVITE (RFC 6026 Accepted)

#[test]
fn our_2xx_is_retransmitted_until_ack_received() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let from = peer(UAC, Transport::Udp);
    let inv = invite("z9hG4bK-2xx", "2xx@x", Transport::Udp).msg();
    let id = new_request(&mut l, t0, inv.clone(), from);
    l.respond(t0, id, 200, resp_bytes(&inv, 200, Some("s")), None);
    assert_eq!(l.state(id), Some(TxnState::Accepted));
    let log = run_alone(&mut l, t0, t0 + ms(7600));
    let times: Vec<Duration> = log.tx.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, secs(&[0.0, 0.5, 1.5, 3.5, 7.5]));
    // INVITE retransmissions are absorbed in Accepted (the 2xx timer does the resending).
    assert!(matches!(
        l.on_message(t0 + ms(8000), inv.clone(), from),
        Incoming::Absorbed
    ));
    assert!(drain(&mut l).is_empty());
    // The ACK for a 2xx is a new transaction: it reaches the TU, which says so.
    let ack = Req {
        method: "ACK",
        branch: Some("z9hG4bK-ack2xx"),
        call_id: "2xx@x",
        cseq: 1,
        to_tag: Some("s"),
        transport: Transport::Udp,
    };
    assert!(matches!(
        l.on_message(t0 + ms(9000), ack.msg(), from),
        Incoming::Ack2xx { .. }
    ));
    l.ack_received(t0 + ms(9000), id);
    let log = run_alone(&mut l, t0, t0 + Duration::from_secs(100));
    assert!(log.tx.is_empty(), "no more 2xx after the ACK");
    // Timer L (64*T1 from the 2xx) ends it, without AckTimeout.
    assert_eq!(
        log.ev,
        vec![(Duration::from_secs(32), TxnEvent::Terminated { txn: id })]
    );
    assert_eq!(l.len(), 0);
}

#[test]
fn unacked_2xx_reports_ack_timeout() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let inv = invite("z9hG4bK-noack", "noack@x", Transport::Udp).msg();
    let id = new_request(&mut l, t0, inv.clone(), peer(UAC, Transport::Udp));
    l.respond(t0, id, 200, resp_bytes(&inv, 200, Some("s")), None);
    let log = run_alone(&mut l, t0, t0 + Duration::from_secs(100));
    let times: Vec<Duration> = log.tx.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    let l_at = Duration::from_secs(32);
    assert_eq!(
        log.ev,
        vec![
            (l_at, TxnEvent::AckTimeout { txn: id }),
            (l_at, TxnEvent::Terminated { txn: id })
        ]
    );
}

#[test]
fn invite_client_passes_2xx_retransmissions_up_while_accepted() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let to = peer(UAS, Transport::Udp);
    let r = invite("z9hG4bK-m", "m@x", Transport::Udp);
    let id = l.request(t0, Method::Invite, "z9hG4bK-m", r.bytes(), to);
    drain(&mut l);
    let ok = resp(&r.msg(), 200, Some("s"));
    assert!(matches!(
        l.on_message(t0 + ms(100), resp(&r.msg(), 180, Some("s")), to),
        Incoming::Response { .. }
    ));
    assert!(
        matches!(l.on_message(t0 + ms(200), ok.clone(), to), Incoming::Response { txn, .. } if txn == id)
    );
    assert_eq!(l.state(id), Some(TxnState::Accepted));
    assert!(
        matches!(l.on_message(t0 + ms(700), ok.clone(), to), Incoming::Response { txn, .. } if txn == id)
    );
    // A late provisional is absorbed.
    assert!(matches!(
        l.on_message(t0 + ms(800), resp(&r.msg(), 180, Some("s")), to),
        Incoming::Absorbed
    ));
    let log = run_alone(&mut l, t0, t0 + Duration::from_secs(100));
    assert!(log.tx.is_empty(), "the layer never ACKs a 2xx: the TU does");
    // Timer M = 64*T1 after the first 2xx.
    assert_eq!(log.ev, vec![(ms(32_200), TxnEvent::Terminated { txn: id })]);
    assert!(matches!(
        l.on_message(t0 + ms(40_000), ok, to),
        Incoming::Stray { .. }
    ));
}

// ---------------------------------------------------------------------------------------------------
// ACK for non-2xx

#[test]
fn invite_client_acks_non_2xx_and_reacks_retransmissions() {
    let t0 = Instant::now();
    let cfg = TxnConfig::default();
    let mut uac = TxnLayer::new(cfg);
    let mut uas = TxnLayer::new(cfg);
    let r = invite("z9hG4bK-busy", "busy@x", Transport::Udp);
    let cid = uac.request(
        t0,
        Method::Invite,
        "z9hG4bK-busy",
        r.bytes(),
        peer(UAS, Transport::Udp),
    );
    let sent = drain(&mut uac);
    let sid = new_request(
        &mut uas,
        t0,
        parse(sent[0].data.clone()),
        peer(UAC, Transport::Udp),
    );
    uas.respond(
        t0 + ms(10),
        sid,
        486,
        resp_bytes(&r.msg(), 486, Some("srv")),
        None,
    );
    let busy = drain(&mut uas).remove(0);
    let got = uac.on_message(
        t0 + ms(20),
        parse(busy.data.clone()),
        peer(UAS, Transport::Udp),
    );
    assert!(matches!(got, Incoming::Response { txn, .. } if txn == cid));
    assert_eq!(uac.state(cid), Some(TxnState::Completed));
    let ack = drain(&mut uac);
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].peer, peer(UAS, Transport::Udp));
    let ack_msg = parse(ack[0].data.clone());
    assert_eq!(ack_msg.method(), Some(&Method::Ack));
    assert_eq!(
        ack_msg.top_via().unwrap().branch,
        Some("z9hG4bK-busy"),
        "same branch as the INVITE"
    );
    assert_eq!(
        ack_msg.to_hdr().unwrap().tag(),
        Some("srv"),
        "To tag of the response"
    );
    assert_eq!(ack_msg.cseq().unwrap().seq, 1);
    // The ACK is lost; Timer G resends the 486; the UAC absorbs it and resends the same ACK.
    uas.handle_timeout(t0 + ms(510));
    let again = drain(&mut uas).remove(0);
    assert_eq!(again.data, busy.data);
    let got = uac.on_message(t0 + ms(520), parse(again.data), peer(UAS, Transport::Udp));
    assert!(matches!(got, Incoming::Absorbed));
    let ack2 = drain(&mut uac);
    assert_eq!(ack2.len(), 1);
    assert_eq!(ack2[0].data, ack[0].data);
    // This one arrives: the UAS moves to Confirmed.
    assert!(matches!(
        uas.on_message(
            t0 + ms(530),
            parse(ack2[0].data.clone()),
            peer(UAC, Transport::Udp)
        ),
        Incoming::Absorbed
    ));
    assert_eq!(uas.state(sid), Some(TxnState::Confirmed));
    // Timer D: 32 s on UDP.
    let log = run_alone(&mut uac, t0, t0 + Duration::from_secs(100));
    assert_eq!(
        log.ev,
        vec![(ms(32_020), TxnEvent::Terminated { txn: cid })]
    );
    let log = run_alone(&mut uas, t0, t0 + Duration::from_secs(100));
    assert_eq!(log.ev, vec![(ms(5530), TxnEvent::Terminated { txn: sid })]);
}

// ---------------------------------------------------------------------------------------------------
// CANCEL

#[test]
fn cancel_finds_its_invite_and_both_complete() {
    let t0 = Instant::now();
    let cfg = TxnConfig::default();
    let mut uac = TxnLayer::new(cfg);
    let mut uas = TxnLayer::new(cfg);
    let to_uas = peer(UAS, Transport::Udp);
    let to_uac = peer(UAC, Transport::Udp);
    let r = invite("z9hG4bK-cx", "cx@x", Transport::Udp);
    let inv_c = uac.request(t0, Method::Invite, "z9hG4bK-cx", r.bytes(), to_uas);
    let inv_s = new_request(&mut uas, t0, parse(drain(&mut uac).remove(0).data), to_uac);
    uas.respond(t0, inv_s, 180, resp_bytes(&r.msg(), 180, Some("s")), None);
    uac.on_message(t0 + ms(5), parse(drain(&mut uas).remove(0).data), to_uas);
    // CANCEL: same branch, its own client transaction.
    let c = Req {
        method: "CANCEL",
        branch: Some("z9hG4bK-cx"),
        call_id: "cx@x",
        cseq: 1,
        to_tag: None,
        transport: Transport::Udp,
    };
    let can_c = uac.request(
        t0 + ms(1000),
        Method::Cancel,
        "z9hG4bK-cx",
        c.bytes(),
        to_uas,
    );
    assert_ne!(can_c, inv_c);
    let cancel = parse(drain(&mut uac).remove(0).data);
    assert_eq!(uas.cancel_target(&cancel), Some(inv_s));
    let can_s = new_request(&mut uas, t0 + ms(1000), cancel.clone(), to_uac);
    assert_ne!(can_s, inv_s);
    uas.respond(
        t0 + ms(1000),
        can_s,
        200,
        resp_bytes(&cancel, 200, Some("s")),
        None,
    );
    uas.respond(
        t0 + ms(1000),
        inv_s,
        487,
        resp_bytes(&r.msg(), 487, Some("s")),
        None,
    );
    let out = drain(&mut uas);
    assert_eq!(out.len(), 2);
    let mut finals = HashMap::new();
    for t in out {
        match uac.on_message(t0 + ms(1010), parse(t.data), to_uas) {
            Incoming::Response { txn, msg } => {
                finals.insert(txn, msg.status().unwrap());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(finals[&can_c], 200);
    assert_eq!(finals[&inv_c], 487);
    // ACK for the 487 goes to the UAS and confirms the INVITE transaction.
    let ack = parse(drain(&mut uac).remove(0).data);
    assert!(matches!(
        uas.on_message(t0 + ms(1020), ack, to_uac),
        Incoming::Absorbed
    ));
    assert_eq!(uas.state(inv_s), Some(TxnState::Confirmed));
    run_alone(&mut uac, t0, t0 + Duration::from_secs(100));
    run_alone(&mut uas, t0, t0 + Duration::from_secs(100));
    assert_eq!(uac.len() + uas.len(), 0);
}

// ---------------------------------------------------------------------------------------------------
// Reliable transport

#[test]
fn tcp_has_no_retransmissions_and_zero_wait_timers() {
    let t0 = Instant::now();
    let cfg = TxnConfig::default();
    let mut uac = TxnLayer::new(cfg);
    let mut uas = TxnLayer::new(cfg);
    let to_uas = peer(UAS, Transport::Tcp);
    let to_uac = peer(UAC, Transport::Tcp);

    // Non-INVITE: no Timer E; Timer F still bounds it; K = 0 and J = 0.
    let o = options("z9hG4bK-to", "to@x", Transport::Tcp);
    let oc = uac.request(t0, Method::Options, "z9hG4bK-to", o.bytes(), to_uas);
    assert_eq!(uac.poll_timeout(), Some(t0 + cfg.timeout()), "only Timer F");
    let os = new_request(&mut uas, t0, parse(drain(&mut uac).remove(0).data), to_uac);
    uas.respond(t0, os, 200, resp_bytes(&o.msg(), 200, Some("s")), None);
    assert_eq!(uas.state(os), None, "Timer J = 0");
    let ok = drain(&mut uas).remove(0);
    assert_eq!(ok.peer, to_uac);
    assert!(
        matches!(uac.on_message(t0, parse(ok.data), to_uas), Incoming::Response { txn, .. } if txn == oc)
    );
    assert_eq!(uac.state(oc), None, "Timer K = 0");
    assert_eq!(events(&mut uac), vec![TxnEvent::Terminated { txn: oc }]);

    // INVITE rejected: no A, no G; D = 0 and I = 0.
    let r = invite("z9hG4bK-ti", "ti@x", Transport::Tcp);
    let ic = uac.request(t0, Method::Invite, "z9hG4bK-ti", r.bytes(), to_uas);
    assert_eq!(uac.poll_timeout(), Some(t0 + cfg.timeout()), "only Timer B");
    let is = new_request(&mut uas, t0, parse(drain(&mut uac).remove(0).data), to_uac);
    uas.respond(t0, is, 486, resp_bytes(&r.msg(), 486, Some("s")), None);
    assert_eq!(uas.poll_timeout(), Some(t0 + cfg.timeout()), "only Timer H");
    uac.on_message(t0, parse(drain(&mut uas).remove(0).data), to_uas);
    assert_eq!(uac.state(ic), None, "Timer D = 0");
    let ack = drain(&mut uac).remove(0);
    uas.on_message(t0, parse(ack.data), to_uac);
    assert_eq!(uas.state(is), None, "Timer I = 0");

    // INVITE accepted: no 2xx retransmission, but Timer L still waits for the ACK.
    let r = invite("z9hG4bK-t2", "t2@x", Transport::Tcp);
    let _ = uac.request(t0, Method::Invite, "z9hG4bK-t2", r.bytes(), to_uas);
    let is = new_request(&mut uas, t0, parse(drain(&mut uac).remove(0).data), to_uac);
    uas.respond(t0, is, 200, resp_bytes(&r.msg(), 200, Some("s")), None);
    drain(&mut uas);
    events(&mut uas);
    let log = run_alone(&mut uas, t0, t0 + Duration::from_secs(100));
    assert!(log.tx.is_empty());
    assert_eq!(
        log.ev[0],
        (Duration::from_secs(32), TxnEvent::AckTimeout { txn: is }),
        "{:?}",
        log.ev
    );
    let log = run_alone(&mut uac, t0, t0 + Duration::from_secs(100));
    assert!(log.tx.is_empty(), "no Timer A on TCP");
    assert_eq!(uac.len() + uas.len(), 0);
}

// ---------------------------------------------------------------------------------------------------
// RFC 2543

#[test]
fn rfc2543_invite_retransmission_and_ack_match_without_branch() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TxnConfig::default());
    let from = peer(UAC, Transport::Udp);
    let r = Req {
        method: "INVITE",
        branch: None,
        call_id: "old@x",
        cseq: 7,
        to_tag: None,
        transport: Transport::Udp,
    };
    let id = new_request(&mut l, t0, r.msg(), from);
    l.respond(t0, id, 100, resp_bytes(&r.msg(), 100, None), None);
    drain(&mut l);
    assert!(matches!(
        l.on_message(t0 + ms(500), r.msg(), from),
        Incoming::Absorbed
    ));
    assert_eq!(first_line(&drain(&mut l)[0].data), "SIP/2.0 100 Whatever");
    let cancel = Req {
        method: "CANCEL",
        branch: None,
        call_id: "old@x",
        cseq: 7,
        to_tag: None,
        transport: Transport::Udp,
    };
    assert_eq!(l.cancel_target(&cancel.msg()), Some(id));
    l.respond(
        t0 + ms(600),
        id,
        404,
        resp_bytes(&r.msg(), 404, Some("srv")),
        None,
    );
    drain(&mut l);
    let ack = Req {
        method: "ACK",
        branch: None,
        call_id: "old@x",
        cseq: 7,
        to_tag: Some("srv"),
        transport: Transport::Udp,
    };
    assert!(matches!(
        l.on_message(t0 + ms(700), ack.msg(), from),
        Incoming::Absorbed
    ));
    assert_eq!(l.state(id), Some(TxnState::Confirmed));
    // Another CSeq is another transaction.
    let r8 = Req { cseq: 8, ..r };
    assert!(matches!(
        l.on_message(t0 + ms(800), r8.msg(), from),
        Incoming::Request { .. }
    ));
}

// ---------------------------------------------------------------------------------------------------
// Happy path through two layers on a perfect channel

#[test]
fn invite_happy_path_two_layers() {
    let t0 = Instant::now();
    let cfg = TxnConfig::default();
    let mut uac = TxnLayer::new(cfg);
    let mut uas = TxnLayer::new(cfg);
    let to_uas = peer(UAS, Transport::Udp);
    let to_uac = peer(UAC, Transport::Udp);
    let r = invite("z9hG4bK-hp", "hp@x", Transport::Udp);
    let c = uac.request(t0, Method::Invite, "z9hG4bK-hp", r.bytes(), to_uas);
    let (s, peer_seen) =
        match uas.on_message(t0 + ms(10), parse(drain(&mut uac).remove(0).data), to_uac) {
            Incoming::Request { txn, msg, peer } => {
                assert_eq!(msg.method(), Some(&Method::Invite));
                (txn, peer)
            }
            other => panic!("{other:?}"),
        };
    assert_eq!(peer_seen, to_uac);
    for (at, code) in [(10, 100), (20, 180), (2000, 200)] {
        uas.respond(
            t0 + ms(at),
            s,
            code,
            resp_bytes(&r.msg(), code, Some("s")),
            None,
        );
        let m = parse(drain(&mut uas).remove(0).data);
        match uac.on_message(t0 + ms(at + 10), m, to_uas) {
            Incoming::Response { txn, msg } => {
                assert_eq!(txn, c);
                assert_eq!(msg.status(), Some(code));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(uac.state(c), Some(TxnState::Accepted));
    let ack = Req {
        method: "ACK",
        branch: Some("z9hG4bK-hp-ack"),
        call_id: "hp@x",
        cseq: 1,
        to_tag: Some("s"),
        transport: Transport::Udp,
    };
    uac.request(
        t0 + ms(2010),
        Method::Ack,
        "z9hG4bK-hp-ack",
        ack.bytes(),
        to_uas,
    );
    let m = parse(drain(&mut uac).remove(0).data);
    assert!(matches!(
        uas.on_message(t0 + ms(2020), m, to_uac),
        Incoming::Ack2xx { .. }
    ));
    uas.ack_received(t0 + ms(2020), s);
    let a = run_alone(&mut uac, t0, t0 + Duration::from_secs(100));
    let b = run_alone(&mut uas, t0, t0 + Duration::from_secs(100));
    assert!(
        a.tx.is_empty() && b.tx.is_empty(),
        "nothing resent on a perfect channel"
    );
    assert_eq!(uac.len() + uas.len(), 0);
}

#[test]
fn non_invite_happy_path_two_layers() {
    let t0 = Instant::now();
    let cfg = TxnConfig::default();
    let mut uac = TxnLayer::new(cfg);
    let mut uas = TxnLayer::new(cfg);
    let to_uas = peer(UAS, Transport::Udp);
    let to_uac = peer(UAC, Transport::Udp);
    let r = Req {
        method: "BYE",
        branch: Some("z9hG4bK-bye"),
        call_id: "bye@x",
        cseq: 2,
        to_tag: Some("s"),
        transport: Transport::Udp,
    };
    let c = uac.request(t0, Method::Bye, "z9hG4bK-bye", r.bytes(), to_uas);
    assert_eq!(uac.kind(c), Some(TxnKind::NonInviteClient));
    let s = new_request(
        &mut uas,
        t0 + ms(10),
        parse(drain(&mut uac).remove(0).data),
        to_uac,
    );
    assert_eq!(uas.kind(s), Some(TxnKind::NonInviteServer));
    assert_eq!(uas.state(s), Some(TxnState::Trying));
    for (at, code, client_state, server_state) in [
        (20, 100, TxnState::Proceeding, TxnState::Proceeding),
        (30, 200, TxnState::Completed, TxnState::Completed),
    ] {
        uas.respond(t0 + ms(at), s, code, resp_bytes(&r.msg(), code, None), None);
        assert_eq!(uas.state(s), Some(server_state));
        let m = parse(drain(&mut uas).remove(0).data);
        match uac.on_message(t0 + ms(at + 5), m, to_uas) {
            Incoming::Response { txn, msg } => {
                assert_eq!(txn, c);
                assert_eq!(msg.status(), Some(code));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(uac.state(c), Some(client_state));
    }
    let a = run_alone(&mut uac, t0, t0 + Duration::from_secs(100));
    let b = run_alone(&mut uas, t0, t0 + Duration::from_secs(100));
    assert!(
        a.tx.is_empty() && b.tx.is_empty(),
        "nothing resent on a perfect channel"
    );
    assert_eq!(
        a.ev,
        vec![(ms(5035), TxnEvent::Terminated { txn: c })],
        "Timer K = T4"
    );
    assert_eq!(
        b.ev,
        vec![(ms(32_030), TxnEvent::Terminated { txn: s })],
        "Timer J = 64*T1"
    );
}

// ---------------------------------------------------------------------------------------------------
// Lossy path

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Side {
    Uac,
    Uas,
}

enum Action {
    Deliver(Side, Bytes),
    /// UAS TU: send the final response for this server transaction.
    Final(TxnId, u16, Bytes),
    /// UAC TU: start transaction number n.
    Start(usize),
}

#[derive(Default, Debug, Clone)]
struct ClientRecord {
    method: &'static str,
    expect: u16,
    finals: Vec<u16>,
    timeouts: usize,
}

struct Sim {
    rng: Rng,
    now: Instant,
    loss_percent: u32,
    seq: u64,
    actions: BTreeMap<(Instant, u64), Action>,
    uac: TxnLayer,
    uas: TxnLayer,
    sent: usize,
    dropped: usize,
}

impl Sim {
    fn at(&mut self, when: Instant, a: Action) {
        self.seq += 1;
        self.actions.insert((when, self.seq), a);
    }

    fn ship(&mut self, from: Side) {
        loop {
            let t = match from {
                Side::Uac => self.uac.poll_transmit(),
                Side::Uas => self.uas.poll_transmit(),
            };
            let Some(t) = t else { break };
            let to = if t.peer.addr == UAS.parse().unwrap() {
                Side::Uas
            } else {
                Side::Uac
            };
            assert_ne!(to, from);
            self.sent += 1;
            let lost = self.rng.next_u32() % 100 < self.loss_percent;
            // Debugging aid: TXN_TRACE=call-35-10 prints every message containing that text.
            if let Ok(w) = std::env::var("TXN_TRACE") {
                if String::from_utf8_lossy(&t.data).contains(&w) {
                    eprintln!(
                        "{:?} {:?}->{:?} {} {}",
                        self.now,
                        from,
                        to,
                        first_line(&t.data),
                        if lost { "LOST" } else { "" }
                    );
                }
            }
            if lost {
                self.dropped += 1;
                continue;
            }
            let delay = ms(5 + u64::from(self.rng.next_u32() % 200));
            self.at(self.now + delay, Action::Deliver(to, t.data));
        }
    }

    fn next_time(&self) -> Option<Instant> {
        [
            self.uac.poll_timeout(),
            self.uas.poll_timeout(),
            self.actions.keys().next().map(|k| k.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// One seeded run: `n` client transactions (INVITE answered 200 or 486, OPTIONS/INFO answered 200) through
/// a channel losing `loss_percent` of messages in both directions with 5–205 ms delays (so reordering).
fn lossy_run(seed: u64, n: usize, loss_percent: u32) -> (Vec<ClientRecord>, usize, usize) {
    let t0 = Instant::now();
    let cfg = TxnConfig::default();
    let mut sim = Sim {
        rng: Rng::seeded(seed),
        now: t0,
        loss_percent,
        seq: 0,
        actions: BTreeMap::new(),
        uac: TxnLayer::new(cfg),
        uas: TxnLayer::new(cfg),
        sent: 0,
        dropped: 0,
    };
    let to_uas = peer(UAS, Transport::Udp);
    let to_uac = peer(UAC, Transport::Udp);
    let mut records: Vec<ClientRecord> = Vec::new();
    let mut client_txn: HashMap<TxnId, usize> = HashMap::new();
    let mut requests: Vec<Req<'static>> = Vec::new();
    let mut server_invites: HashMap<String, TxnId> = HashMap::new();
    let mut server_timeouts = 0usize;
    let mut ack_timeouts = 0usize;
    for i in 0..n {
        let (method, expect) = match i % 4 {
            0 => ("INVITE", 200),
            1 => ("INVITE", 486),
            2 => ("OPTIONS", 200),
            _ => ("INFO", 200),
        };
        records.push(ClientRecord {
            method,
            expect,
            ..Default::default()
        });
        let call_id: &'static str = Box::leak(format!("call-{seed}-{i}").into_boxed_str());
        let branch: &'static str = Box::leak(format!("z9hG4bK-{seed}-{i}").into_boxed_str());
        requests.push(Req {
            method,
            branch: Some(branch),
            call_id,
            cseq: 1,
            to_tag: None,
            transport: Transport::Udp,
        });
        let start = t0 + ms(u64::from(sim.rng.next_u32() % 3000));
        sim.at(start, Action::Start(i));
    }

    let mut steps = 0usize;
    while let Some(next) = sim.next_time() {
        steps += 1;
        assert!(steps < 1_000_000, "simulation does not settle");
        assert!(next >= sim.now, "time never goes back");
        sim.now = next;
        let now = sim.now;
        sim.uac.handle_timeout(now);
        sim.uas.handle_timeout(now);
        while let Some(k) = sim.actions.keys().next().copied().filter(|k| k.0 <= now) {
            let action = sim.actions.remove(&k).unwrap();
            match action {
                Action::Start(i) => {
                    let r = &requests[i];
                    let m = Method::from_token(r.method.as_bytes());
                    let id = sim
                        .uac
                        .request(now, m, r.branch.unwrap(), r.bytes(), to_uas);
                    client_txn.insert(id, i);
                }
                Action::Final(txn, code, data) => {
                    sim.uas.respond(now, txn, code, data, None);
                    let _ = code;
                }
                Action::Deliver(Side::Uas, data) => {
                    match sim.uas.on_message(now, parse(data), to_uac) {
                        Incoming::Request { txn, msg, .. } => {
                            let cid = msg.call_id().unwrap().to_string();
                            let i: usize = cid.rsplit('-').next().unwrap().parse().unwrap();
                            let code = records[i].expect;
                            if msg.method() == Some(&Method::Invite) {
                                server_invites.insert(cid, txn);
                                sim.uas
                                    .respond(now, txn, 100, resp_bytes(&msg, 100, None), None);
                                let think = ms(u64::from(sim.rng.next_u32() % 2000));
                                sim.at(
                                    now + think,
                                    Action::Final(txn, code, resp_bytes(&msg, code, Some("uas"))),
                                );
                            } else if sim.rng.next_u32() < u32::MAX / 2 {
                                sim.uas.respond(
                                    now,
                                    txn,
                                    code,
                                    resp_bytes(&msg, code, Some("uas")),
                                    None,
                                );
                            } else {
                                let think = ms(u64::from(sim.rng.next_u32() % 300));
                                sim.at(
                                    now + think,
                                    Action::Final(txn, code, resp_bytes(&msg, code, Some("uas"))),
                                );
                            }
                        }
                        Incoming::Ack2xx { msg, .. } => {
                            if let Some(&txn) = server_invites.get(msg.call_id().unwrap()) {
                                sim.uas.ack_received(now, txn);
                            }
                        }
                        Incoming::Absorbed => {}
                        other => panic!("UAS got {other:?}"),
                    }
                }
                Action::Deliver(Side::Uac, data) => {
                    match sim.uac.on_message(now, parse(data), to_uas) {
                        Incoming::Response { txn, msg } => {
                            let i = client_txn[&txn];
                            let code = msg.status().unwrap();
                            if code >= 200 {
                                records[i].finals.push(code);
                            }
                            if records[i].method == "INVITE" && (200..300).contains(&code) {
                                // The TU's ACK for the 2xx (again for each retransmission).
                                let r = &requests[i];
                                let ack_branch = format!("{}-ack", r.branch.unwrap());
                                let ack = Req {
                                    method: "ACK",
                                    branch: Some(&ack_branch),
                                    call_id: r.call_id,
                                    cseq: 1,
                                    to_tag: Some("uas"),
                                    transport: Transport::Udp,
                                };
                                sim.uac
                                    .request(now, Method::Ack, &ack_branch, ack.bytes(), to_uas);
                            }
                        }
                        Incoming::Absorbed | Incoming::Stray { .. } => {}
                        other => panic!("UAC got {other:?}"),
                    }
                }
            }
        }
        while let Some(e) = sim.uac.poll_event() {
            if let TxnEvent::Timeout { txn } = e {
                records[client_txn[&txn]].timeouts += 1;
            }
        }
        while let Some(e) = sim.uas.poll_event() {
            match e {
                TxnEvent::Timeout { .. } => server_timeouts += 1,
                TxnEvent::AckTimeout { .. } => ack_timeouts += 1,
                TxnEvent::Terminated { .. } => {}
            }
        }
        sim.ship(Side::Uac);
        sim.ship(Side::Uas);
    }
    assert_eq!(sim.uac.len(), 0, "seed {seed}: UAC transactions left live");
    assert_eq!(sim.uas.len(), 0, "seed {seed}: UAS transactions left live");
    assert!(sim.actions.is_empty());
    assert!(sim.dropped > 0 || loss_percent == 0);
    (records, server_timeouts, ack_timeouts)
}

/// Each client transaction has exactly one outcome: its final response (once; an accepted INVITE may see
/// 2xx retransmissions too, all 200) or a Timeout (Timer B / F), never both. Returns how many timed out.
fn check_records(seed: u64, records: &[ClientRecord]) -> usize {
    let mut timed_out = 0;
    for (i, r) in records.iter().enumerate() {
        assert!(r.timeouts <= 1, "seed {seed} txn {i}: {r:?}");
        if r.timeouts == 1 {
            assert!(
                r.finals.is_empty(),
                "seed {seed} txn {i}: both a final and a timeout: {r:?}"
            );
            eprintln!("seed {seed} txn {i} ({}) timed out", r.method);
            timed_out += 1;
            continue;
        }
        assert!(
            !r.finals.is_empty(),
            "seed {seed} txn {i}: neither a final nor a timeout: {r:?}"
        );
        assert!(
            r.finals.iter().all(|&c| c == r.expect),
            "seed {seed} txn {i}: {r:?}"
        );
        if r.method != "INVITE" || r.expect >= 300 {
            assert_eq!(
                r.finals.len(),
                1,
                "seed {seed} txn {i}: final delivered more than once: {r:?}"
            );
        }
    }
    timed_out
}

/// 15% loss each way with reordering: every transaction completes on both sides (with RFC timers a
/// transaction fails only after ~11 consecutive lost round trips: p ~ 0.28^11 ~ 1e-6 here).
#[test]
fn lossy_path_15_percent_every_transaction_completes() {
    for seed in 0..200u64 {
        let (records, server_timeouts, ack_timeouts) = lossy_run(seed, 12, 15);
        assert_eq!(
            check_records(seed, &records),
            0,
            "seed {seed}: a client transaction timed out: {records:?}"
        );
        assert_eq!(
            server_timeouts, 0,
            "seed {seed}: Timer H fired (every ACK lost)"
        );
        assert_eq!(ack_timeouts, 0, "seed {seed}: a 2xx was never ACKed");
    }
}

/// 30% loss each way: a run of ~11 lost round trips (p ~ 0.51^11 ~ 6e-4 per transaction) legitimately
/// ends in Timer F / B / H / L, so here every transaction must end exactly once — final response or
/// Timeout, nothing left live — and all but a handful must complete.
#[test]
fn lossy_path_30_percent_every_transaction_ends_exactly_once() {
    let (mut total, mut client_timeouts, mut server_side) = (0usize, 0usize, 0usize);
    for seed in 0..200u64 {
        let (records, server_timeouts, ack_timeouts) = lossy_run(seed, 12, 30);
        total += records.len();
        client_timeouts += check_records(seed, &records);
        server_side += server_timeouts + ack_timeouts;
    }
    eprintln!("30% loss: {total} transactions, {client_timeouts} client timeouts, {server_side} server-side timeouts");
    assert!(
        client_timeouts * 200 <= total,
        "more than 0.5% timed out: {client_timeouts} of {total}"
    );
    assert!(
        server_side * 200 <= total,
        "more than 0.5% server-side timeouts: {server_side} of {total}"
    );
}

#[test]
fn perfect_path_delivers_each_final_once() {
    for seed in 0..20u64 {
        let (records, server_timeouts, ack_timeouts) = lossy_run(seed, 40, 0);
        assert_eq!(check_records(seed, &records), 0);
        assert!(
            records.iter().all(|r| r.finals.len() == 1),
            "seed {seed}: {records:?}"
        );
        assert_eq!((server_timeouts, ack_timeouts), (0, 0));
    }
}
