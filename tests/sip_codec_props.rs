//! Property tests of the SIP codec: no panics on any input, build→parse round trips, stream framing.

use bytes::Bytes;
use callgate::sip::build::{ack_for_non2xx, cancel_for, error_response_raw, RequestBuilder, ResponseBuilder};
use callgate::sip::header::{CSeq, NameAddr, Via};
use callgate::sip::msg::{frame, Framed, Framer, HeaderName, Message, Method};
use callgate::sip::uri::Uri;
use callgate::sip::Transport;
use proptest::prelude::*;

/// Calls every accessor and typed view; results are ignored: only panics matter.
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
        let _ = (h.name, h.raw_name.len(), h.value.len());
        let _ = m.header_by_name(h.raw_name);
        for v in callgate::sip::header::CommaSplit::new(h.value) {
            let _ = Via::parse(v);
            let _ = NameAddr::parse(v).map(|n| (n.tag(), n.display_unescaped(), n.parsed_uri().map(|u| u.number())));
            let _ = Uri::parse(v).map(|u| (u.number(), u.param("x"), u.host_port()));
            let _ = CSeq::parse(v);
        }
    }
    let _ = (
        m.call_id(),
        m.cseq(),
        m.max_forwards(),
        m.content_type(),
        m.content_length(),
    );
    if let Ok(v) = m.top_via() {
        let _ = (v.sent_by(), v.param("branch"), v.is_rfc3261_branch());
    }
    let _ = m.vias().count();
    let _ = m.from_hdr().map(|n| n.tag());
    let _ = m.to_hdr().map(|n| n.tag());
    let _ = m.contacts().count();
    let _ = m.name_addrs(HeaderName::Route).count();
    let _ = m.header_values(HeaderName::Accept).count();
    let _ = m.validate_request();
    let _ = m.validate_response();
    let _ = m.uas_checks(&["timer"], &["application/sdp"]);
    let _ = m.unsupported_required(&[]);
    let _ = m.forward_check();
    if let Some(u) = m.request_uri() {
        let _ = Uri::parse(u).map(|u| u.number());
    }
    if m.is_request() {
        let r = ResponseBuilder::new(m, 400, "Bad Request").to_tag("t").build();
        Message::parse(r).expect("a response built from a parsed request parses");
        let _ = cancel_for(m);
        let _ = ack_for_non2xx(m, m);
    }
}

fn corpus() -> Vec<Bytes> {
    let dir = format!("{}/tests/data/rfc4475", env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<Bytes> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
        .map(Bytes::from)
        .collect();
    v.sort();
    v
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Dup(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop_oneof![
        Just(b'\r'),
        Just(b'\n'),
        Just(b' '),
        Just(b':'),
        Just(b';'),
        Just(b','),
        Just(b'"'),
        Just(b'<'),
        Just(b'>'),
        Just(b'['),
        Just(b']'),
        Just(b'\\'),
        Just(b'%'),
        Just(0u8),
        Just(0xffu8),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), special.clone()).prop_map(|(p, b)| Mutation::Set(p, b)),
        (any::<usize>(), special).prop_map(|(p, b)| Mutation::Insert(p, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Dup(a, b)),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    if data.is_empty() {
        return;
    }
    let n = data.len();
    match *m {
        Mutation::Set(p, b) => data[p % n] = b,
        Mutation::Insert(p, b) => data.insert(p % (n + 1), b),
        Mutation::Delete(p) => {
            data.remove(p % n);
        }
        Mutation::Truncate(p) => data.truncate(p % n),
        Mutation::Dup(a, len) => {
            let a = a % n;
            let e = (a + len % 64).min(n);
            let chunk = data[a..e].to_vec();
            data.splice(a..a, chunk);
        }
    }
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,20}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
        (any::<[u8; 4]>()).prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        (any::<[u16; 8]>()).prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Bye),
        Just(Method::Options),
        Just(Method::Info),
        Just(Method::Register),
        "[A-Z]{3,12}".prop_map(|s| Method::from_token(s.as_bytes())),
    ]
}

#[derive(Clone, Debug)]
struct Req {
    method: Method,
    user: String,
    host: String,
    port: Option<u16>,
    display: Option<String>,
    from_tag: String,
    to_tag: Option<String>,
    call_id: String,
    cseq: u32,
    branch: String,
    max_forwards: u32,
    body: Vec<u8>,
    extra: Vec<(String, String)>,
}

fn req() -> impl Strategy<Value = Req> {
    (
        (
            method(),
            "[a-z0-9+]{1,12}",
            host(),
            proptest::option::of(1u16..),
            proptest::option::of("[a-zA-Z ,;<>:]{0,20}"),
        ),
        (
            token(),
            proptest::option::of(token()),
            "[a-zA-Z0-9.@_-]{1,40}",
            any::<u32>(),
            token(),
            0u32..=255,
        ),
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(("X-[A-Za-z]{1,10}", "[ -~]{0,30}"), 0..4),
        ),
    )
        .prop_map(
            |((method, user, host, port, display), (from_tag, to_tag, call_id, cseq, branch, mf), (body, extra))| Req {
                method,
                user,
                host,
                port,
                display,
                from_tag,
                to_tag,
                call_id,
                cseq,
                branch: format!("z9hG4bK{branch}"),
                max_forwards: mf,
                body,
                extra,
            },
        )
}

fn build(r: &Req) -> Bytes {
    let hostport = match r.port {
        Some(p) => format!("{}:{p}", r.host),
        None => r.host.clone(),
    };
    let uri = format!("sip:{}@{hostport}", r.user);
    let from = match &r.display {
        Some(d) => format!("\"{}\" <sip:caller@{hostport}>", d),
        None => format!("sip:caller@{hostport}"),
    };
    let mut b = RequestBuilder::new(r.method.clone(), &uri)
        .via(Transport::Udp, &hostport, &r.branch)
        .from(&from, &r.from_tag)
        .to(&uri, r.to_tag.as_deref())
        .call_id(&r.call_id)
        .cseq(r.cseq)
        .max_forwards(r.max_forwards)
        .contact(&format!("sip:{}@{hostport};transport=udp", r.user));
    for (n, v) in &r.extra {
        b = b.header(n, v);
    }
    if !r.body.is_empty() {
        b = b.body("application/sdp", &r.body);
    }
    b.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let b = Bytes::from(data);
        if let Ok(m) = Message::parse(b.clone()) {
            exercise(&m);
        }
        let _ = frame(&b, 1024);
        let _ = error_response_raw(&b, 400, "Bad Request");
    }

    #[test]
    fn parse_never_panics_on_sip_like_text(lines in proptest::collection::vec("[A-Za-z:;,<>\"\\\\ \t@=/.\\[\\]0-9%-]{0,40}", 0..20), sep in prop_oneof![Just("\r\n"), Just("\n"), Just("\r\n ")]) {
        let text = format!("INVITE sip:a@b SIP/2.0\r\n{}\r\n\r\n", lines.join(sep));
        let b = Bytes::from(text);
        if let Ok(m) = Message::parse(b.clone()) {
            exercise(&m);
        }
        let _ = frame(&b, 4096);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_mutated_valid_messages(idx in any::<usize>(), muts in proptest::collection::vec(mutation(), 1..8)) {
        let corpus = corpus();
        let mut data = corpus[idx % corpus.len()].to_vec();
        for m in &muts {
            apply(&mut data, m);
        }
        let b = Bytes::from(data);
        if let Ok(m) = Message::parse(b.clone()) {
            exercise(&m);
        }
        let _ = Message::parse_stream(b.clone());
        // The resuming Framer agrees with frame() wherever the bytes are split.
        let whole = frame(&b, 4096);
        let mut framer = Framer::new();
        let cut = if b.is_empty() { 0 } else { idx % b.len() };
        let resumed = match framer.next(&b[..cut], 4096) {
            Ok(None) => framer.next(&b, 4096),
            _ => whole,
        };
        prop_assert_eq!(whole.ok(), resumed.ok());
        let _ = error_response_raw(&b, 400, "Bad Request");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn build_then_parse_round_trips(r in req()) {
        let bytes = build(&r);
        let m = Message::parse(bytes.clone()).expect("built request parses");
        prop_assert_eq!(m.method(), Some(&r.method));
        prop_assert_eq!(m.call_id(), Some(r.call_id.as_str()));
        let cseq = m.cseq().unwrap();
        prop_assert_eq!(cseq.seq, r.cseq);
        prop_assert_eq!(&cseq.method, &r.method);
        prop_assert_eq!(m.max_forwards(), Some(r.max_forwards));
        let v = m.top_via().unwrap();
        prop_assert_eq!(v.branch, Some(r.branch.as_str()));
        prop_assert_eq!(v.port, r.port);
        prop_assert_eq!(v.host, r.host.trim_start_matches('[').trim_end_matches(']'));
        prop_assert_eq!(v.rport, Some(None));
        let from = m.from_hdr().unwrap();
        prop_assert_eq!(from.tag(), Some(r.from_tag.as_str()));
        prop_assert_eq!(from.display, r.display.as_deref());
        let to = m.to_hdr().unwrap();
        prop_assert_eq!(to.tag(), r.to_tag.as_deref());
        let tu = to.parsed_uri().unwrap();
        prop_assert_eq!(tu.user, Some(r.user.as_str()));
        prop_assert_eq!(m.request_uri(), Some(to.uri));
        prop_assert_eq!(&m.body()[..], &r.body[..]);
        prop_assert_eq!(m.content_length(), Some(r.body.len()));
        for (i, (n, v)) in r.extra.iter().enumerate() {
            if r.extra[..i].iter().all(|(k, _)| !k.eq_ignore_ascii_case(n)) {
                prop_assert_eq!(m.header_by_name(n), Some(v.trim_matches([' ', '\t'])));
            }
        }
        prop_assert_eq!(m.validate_request(), Ok(()));

        // The response to it echoes the dialog fields and adds the To tag only when absent.
        let resp = ResponseBuilder::new(&m, 200, "OK").to_tag("srv1").body("application/sdp", b"v=0\r\n").build();
        let p = Message::parse(resp).unwrap();
        prop_assert_eq!(p.status(), Some(200));
        prop_assert_eq!(p.call_id(), m.call_id());
        prop_assert_eq!(p.cseq().unwrap(), m.cseq().unwrap());
        prop_assert_eq!(p.top_via().unwrap(), m.top_via().unwrap());
        prop_assert_eq!(p.from_hdr().unwrap(), m.from_hdr().unwrap());
        prop_assert_eq!(p.to_hdr().unwrap().tag(), Some(r.to_tag.as_deref().unwrap_or("srv1")));
        prop_assert_eq!(p.validate_response(), Ok(()));
        // And the stream framer agrees with the datagram parser about its length.
        prop_assert_eq!(frame(&bytes, 1 << 20), Ok(Some(Framed::Message(bytes.len()))));
    }

    #[test]
    fn frame_yields_exactly_the_messages_of_a_split_stream(
        reqs in proptest::collection::vec(req(), 1..6),
        keepalives in proptest::collection::vec(0usize..3, 6),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let msgs: Vec<Bytes> = reqs.iter().map(build).collect();
        let mut stream = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            for _ in 0..keepalives[i] {
                stream.extend_from_slice(b"\r\n\r\n");
            }
            stream.extend_from_slice(m);
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort();
        // Both the stateless `frame` and the resuming `Framer` must cut the same messages.
        for incremental in [false, true] {
            let mut framer = Framer::new();
            let mut buf: Vec<u8> = Vec::new();
            let mut got: Vec<Bytes> = Vec::new();
            let mut prev = 0;
            for &p in &points {
                buf.extend_from_slice(&stream[prev..p]);
                prev = p;
                loop {
                    let r = if incremental { framer.next(&buf, 1 << 20) } else { frame(&buf, 1 << 20) };
                    match r {
                        Ok(Some(Framed::Message(n))) => {
                            got.push(Bytes::copy_from_slice(&buf[..n]));
                            buf.drain(..n);
                        }
                        Ok(Some(Framed::KeepAlive(n))) => {
                            buf.drain(..n);
                        }
                        Ok(None) => break,
                        Err(e) => return Err(TestCaseError::fail(format!("frame error {e}"))),
                    }
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&got, &msgs);
        }
        let got = msgs;
        for g in &got {
            let m = Message::parse_stream(g.clone()).unwrap();
            prop_assert_eq!(m.raw(), g);
        }
    }
}
