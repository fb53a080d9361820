//! Writing SIP messages: responses to a request, new requests, the ACK for a non-2xx and CANCEL.
//!
//! Everything is written into one `BytesMut` sized up front, with CRLF line ends and a
//! Content-Length header always (0 when there is no body), and returned as `Bytes`.

use bytes::{BufMut, Bytes, BytesMut};

use std::net::{IpAddr, SocketAddr};

use super::header::{params_iter, CommaSplit, NameAddr, Via};
use super::msg::{HeaderName, Message, Method};
use super::Transport;

#[inline]
fn put(buf: &mut BytesMut, s: &str) {
    buf.extend_from_slice(s.as_bytes());
}

fn put_u32(buf: &mut BytesMut, mut n: u32) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Writes caller-given text with any CR or LF turned into SP, so that no value can end its line early
/// and inject headers.
fn put_clean(buf: &mut BytesMut, s: &str) {
    if s.bytes().any(|b| b == b'\r' || b == b'\n') {
        buf.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    } else {
        buf.extend_from_slice(s.as_bytes());
    }
}

/// A header from the caller (sanitised).
fn put_header(buf: &mut BytesMut, name: &str, value: &str) {
    put_clean(buf, name);
    put(buf, ": ");
    put_clean(buf, value);
    put(buf, "\r\n");
}

/// A header value copied from a parsed message (folds kept: they are valid continuation lines).
fn put_copied(buf: &mut BytesMut, name: &str, value: &str) {
    put(buf, name);
    put(buf, ": ");
    put(buf, value);
    put(buf, "\r\n");
}

/// The top Via element rewritten per RFC 3261 18.2.1 / RFC 3581 4: `received` when the sent-by host
/// is not the source address (or rport was asked for), `rport` filled in when present. Other
/// parameters are kept in order; an unparseable element is copied unchanged.
fn put_top_via(buf: &mut BytesMut, elem: &str, src: SocketAddr) {
    let Ok(v) = Via::parse(elem) else {
        put(buf, elem);
        return;
    };
    put(buf, "SIP/2.0/");
    put(buf, v.transport);
    buf.put_u8(b' ');
    if v.host.contains(':') {
        buf.put_u8(b'[');
        put(buf, v.host);
        buf.put_u8(b']');
    } else {
        put(buf, v.host);
    }
    if let Some(p) = v.port {
        buf.put_u8(b':');
        put_u32(buf, u32::from(p));
    }
    for (n, val) in params_iter(v.params) {
        if n.eq_ignore_ascii_case("received") || n.eq_ignore_ascii_case("rport") {
            continue;
        }
        buf.put_u8(b';');
        put(buf, n);
        if let Some(val) = val {
            buf.put_u8(b'=');
            put(buf, val);
        }
    }
    let same_host = v.host.parse::<IpAddr>().is_ok_and(|ip| ip == src.ip());
    if !same_host || v.rport.is_some() {
        put(buf, ";received=");
        put(buf, &src.ip().to_string());
    }
    if v.rport.is_some() {
        put(buf, ";rport=");
        put_u32(buf, u32::from(src.port()));
    }
}

fn put_body(buf: &mut BytesMut, body: Option<(&str, &[u8])>) {
    match body {
        Some((ct, b)) => {
            put_header(buf, "Content-Type", ct);
            put(buf, "Content-Length: ");
            put_u32(buf, b.len() as u32);
            put(buf, "\r\n\r\n");
            buf.extend_from_slice(b);
        }
        None => put(buf, "Content-Length: 0\r\n\r\n"),
    }
}

/// True when a header value already carries a `tag` parameter.
fn has_tag(v: &str) -> bool {
    match NameAddr::parse(v) {
        Ok(na) => na.tag().is_some(),
        // Unparseable To: look for the parameter textually rather than add a second one.
        Err(_) => v.to_ascii_lowercase().contains(";tag="),
    }
}

/// A response to `req`: copies every Via value in order, From, To (adding the tag only when the
/// request's To has none), Call-ID and CSeq.
#[derive(Debug)]
pub struct ResponseBuilder<'r> {
    req: &'r Message,
    code: u16,
    reason: String,
    to_tag: Option<String>,
    received: Option<SocketAddr>,
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
}

impl<'r> ResponseBuilder<'r> {
    /// Note: a `100 Trying` should not get a To tag (do not call [`ResponseBuilder::to_tag`]).
    pub fn new(req: &'r Message, code: u16, reason: &str) -> Self {
        ResponseBuilder {
            req,
            code,
            reason: reason.to_owned(),
            to_tag: None,
            received: req.source(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// (Addition) The request came from `src`: the top Via gets `;received=` (RFC 3261 18.2.1) and a
    /// `;rport` without value is filled in (RFC 3581), so the response can be routed back through NAT.
    pub fn received(mut self, src: SocketAddr) -> Self {
        self.received = Some(src);
        self
    }

    /// Added to To when the request's To has no tag.
    pub fn to_tag(mut self, tag: &str) -> Self {
        self.to_tag = Some(tag.to_owned());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.body = Some((content_type.to_owned(), body.to_vec()));
        self
    }

    pub fn build(self) -> Bytes {
        let req = self.req;
        let head = req.head().len();
        let extra: usize = self.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        let body_len = self.body.as_ref().map_or(0, |(c, b)| c.len() + b.len() + 16);
        let mut buf = BytesMut::with_capacity(head + extra + body_len + self.reason.len() + 64);
        put(&mut buf, "SIP/2.0 ");
        put_u32(&mut buf, u32::from(self.code.clamp(100, 699)));
        buf.put_u8(b' ');
        put_clean(&mut buf, &self.reason);
        put(&mut buf, "\r\n");
        let mut first_via = true;
        for h in req.headers() {
            if h.name != HeaderName::Via {
                continue;
            }
            match (first_via, self.received, CommaSplit::new(h.value).next()) {
                (true, Some(src), Some(top)) => {
                    // `top` is a sub-slice of `h.value`: keep what precedes and follows it.
                    let off = (top.as_ptr() as usize).saturating_sub(h.value.as_ptr() as usize);
                    put(&mut buf, "Via: ");
                    put(&mut buf, h.value.get(..off).unwrap_or(""));
                    put_top_via(&mut buf, top, src);
                    put(&mut buf, h.value.get(off + top.len()..).unwrap_or(""));
                    put(&mut buf, "\r\n");
                }
                _ => put_copied(&mut buf, "Via", h.value),
            }
            first_via = false;
        }
        if let Some(v) = req.header(HeaderName::From) {
            put_copied(&mut buf, "From", v);
        }
        if let Some(v) = req.header(HeaderName::To) {
            put(&mut buf, "To: ");
            put(&mut buf, v);
            if let Some(tag) = &self.to_tag {
                if !has_tag(v) {
                    put(&mut buf, ";tag=");
                    put_clean(&mut buf, tag);
                }
            }
            put(&mut buf, "\r\n");
        }
        if let Some(v) = req.call_id() {
            put_copied(&mut buf, "Call-ID", v);
        }
        if let Some(v) = req.header(HeaderName::CSeq) {
            put_copied(&mut buf, "CSeq", v);
        }
        for (n, v) in &self.headers {
            put_header(&mut buf, n, v);
        }
        put_body(&mut buf, self.body.as_ref().map(|(c, b)| (c.as_str(), b.as_slice())));
        buf.freeze()
    }
}

/// A new request (UAC side). Max-Forwards defaults to 70; CSeq's method is the one given to `new`.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: Method,
    uri: String,
    vias: Vec<String>,
    from: Option<String>,
    to: Option<String>,
    call_id: Option<String>,
    cseq: u32,
    max_forwards: u32,
    contact: Option<String>,
    routes: Vec<String>,
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
}

/// Wraps a bare URI in `<>` so that header parameters appended after it cannot be read as URI ones.
fn as_name_addr(s: &str) -> String {
    let t = s.trim();
    if t.contains('<') {
        t.to_owned()
    } else {
        format!("<{t}>")
    }
}

impl RequestBuilder {
    pub fn new(method: Method, uri: &str) -> Self {
        RequestBuilder {
            method,
            uri: uri.to_owned(),
            vias: Vec::new(),
            from: None,
            to: None,
            call_id: None,
            cseq: 1,
            max_forwards: 70,
            contact: None,
            routes: Vec::new(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a Via (`SIP/2.0/T sent_by;branch=...;rport`). The first one added is the top Via.
    pub fn via(mut self, transport: Transport, sent_by: &str, branch: &str) -> Self {
        self.vias.push(format!(
            "SIP/2.0/{} {};branch={};rport",
            transport.as_via(),
            sent_by,
            branch
        ));
        self
    }

    pub fn from(mut self, name_addr: &str, tag: &str) -> Self {
        self.from = Some(format!("{};tag={}", as_name_addr(name_addr), tag));
        self
    }

    pub fn to(mut self, name_addr: &str, tag: Option<&str>) -> Self {
        self.to = Some(match tag {
            Some(t) => format!("{};tag={}", as_name_addr(name_addr), t),
            None => as_name_addr(name_addr),
        });
        self
    }

    pub fn call_id(mut self, id: &str) -> Self {
        self.call_id = Some(id.to_owned());
        self
    }

    pub fn cseq(mut self, seq: u32) -> Self {
        self.cseq = seq;
        self
    }

    pub fn max_forwards(mut self, n: u32) -> Self {
        self.max_forwards = n;
        self
    }

    /// A Contact URI (wrapped in `<>` unless it already is a name-addr).
    pub fn contact(mut self, uri: &str) -> Self {
        self.contact = Some(as_name_addr(uri));
        self
    }

    /// Adds a Route header value (in order).
    pub fn route(mut self, v: &str) -> Self {
        self.routes.push(v.to_owned());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.body = Some((content_type.to_owned(), body.to_vec()));
        self
    }

    pub fn build(self) -> Bytes {
        let m = self.method.as_str();
        let est = 64
            + m.len() * 2
            + self.uri.len()
            + self.vias.iter().map(|v| v.len() + 7).sum::<usize>()
            + self.from.as_ref().map_or(0, |s| s.len() + 8)
            + self.to.as_ref().map_or(0, |s| s.len() + 6)
            + self.call_id.as_ref().map_or(0, |s| s.len() + 11)
            + self.contact.as_ref().map_or(0, |s| s.len() + 11)
            + self.routes.iter().map(|v| v.len() + 9).sum::<usize>()
            + self.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>()
            + self.body.as_ref().map_or(0, |(c, b)| c.len() + b.len() + 16);
        let mut buf = BytesMut::with_capacity(est + 48);
        put_clean(&mut buf, m);
        buf.put_u8(b' ');
        put_clean(&mut buf, &self.uri);
        put(&mut buf, " SIP/2.0\r\n");
        for v in &self.vias {
            put_header(&mut buf, "Via", v);
        }
        put(&mut buf, "Max-Forwards: ");
        put_u32(&mut buf, self.max_forwards);
        put(&mut buf, "\r\n");
        for r in &self.routes {
            put_header(&mut buf, "Route", r);
        }
        if let Some(v) = &self.from {
            put_header(&mut buf, "From", v);
        }
        if let Some(v) = &self.to {
            put_header(&mut buf, "To", v);
        }
        if let Some(v) = &self.call_id {
            put_header(&mut buf, "Call-ID", v);
        }
        put(&mut buf, "CSeq: ");
        put_u32(&mut buf, self.cseq);
        buf.put_u8(b' ');
        put(&mut buf, m);
        put(&mut buf, "\r\n");
        if let Some(v) = &self.contact {
            put_header(&mut buf, "Contact", v);
        }
        for (n, v) in &self.headers {
            put_header(&mut buf, n, v);
        }
        put_body(&mut buf, self.body.as_ref().map(|(c, b)| (c.as_str(), b.as_slice())));
        buf.freeze()
    }
}

/// Writes the parts shared by ACK-for-non-2xx and CANCEL: request line, the INVITE's top Via only,
/// Max-Forwards 70, its Route set, From, the given To, Call-ID and `CSeq: n METHOD`.
fn in_txn_request(invite: &Message, method: &str, to: Option<&str>) -> Bytes {
    let mut buf = BytesMut::with_capacity(invite.head().len() + 32);
    put(&mut buf, method);
    buf.put_u8(b' ');
    put(&mut buf, invite.request_uri().unwrap_or(""));
    put(&mut buf, " SIP/2.0\r\n");
    if let Some(v) = invite.header_values(HeaderName::Via).next() {
        put_copied(&mut buf, "Via", v);
    }
    put(&mut buf, "Max-Forwards: 70\r\n");
    for h in invite.headers() {
        if h.name == HeaderName::Route {
            put_copied(&mut buf, "Route", h.value);
        }
    }
    if let Some(v) = invite.header(HeaderName::From) {
        put_copied(&mut buf, "From", v);
    }
    if let Some(v) = to {
        put_copied(&mut buf, "To", v);
    }
    if let Some(v) = invite.call_id() {
        put_copied(&mut buf, "Call-ID", v);
    }
    put(&mut buf, "CSeq: ");
    put_u32(&mut buf, invite.cseq().map(|c| c.seq).unwrap_or(0));
    buf.put_u8(b' ');
    put(&mut buf, method);
    put(&mut buf, "\r\n");
    put(&mut buf, "Content-Length: 0\r\n\r\n");
    buf.freeze()
}

/// RFC 3261 17.1.1.3: the ACK a client INVITE transaction sends for a non-2xx final response: same
/// Request-URI, Call-ID, From, CSeq number and top Via (same branch) as the INVITE, the To of the
/// response (with its tag), the INVITE's Route headers.
pub fn ack_for_non2xx(invite: &Message, response: &Message) -> Bytes {
    let to = response
        .header(HeaderName::To)
        .or_else(|| invite.header(HeaderName::To));
    in_txn_request(invite, "ACK", to)
}

/// RFC 3261 9.1: CANCEL for an INVITE we sent: same Request-URI, Call-ID, From, To, CSeq number and
/// top Via as the INVITE, method CANCEL, the INVITE's Route headers.
pub fn cancel_for(invite: &Message) -> Bytes {
    in_txn_request(invite, "CANCEL", invite.header(HeaderName::To))
}

/// A best-effort stateless answer (e.g. `400`) to bytes that did not parse as a [`Message`]: scans the
/// header lines for Via, From, To, Call-ID and CSeq (long or compact names, folds joined) and, if the
/// text looks like a request other than ACK with all five present, writes a response copying them (all
/// Vias in order). `None` when no sensible response can be built (a response, an ACK, or a field missing).
pub fn error_response_raw(data: &[u8], code: u16, reason: &str) -> Option<Bytes> {
    const LIMIT: usize = 64 * 1024;
    let data = &data[..data.len().min(LIMIT)];
    let text = String::from_utf8_lossy(data);
    let text = text.trim_start_matches(['\r', '\n']);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next()?;
    let method = start.split(' ').next()?;
    if start.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) || method == "ACK" || method.is_empty() {
        return None;
    }
    // (name, value) of the interesting headers, folds joined with a space.
    let mut found: Vec<(HeaderName, String)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(i) = current {
                if let Some((_, v)) = found.get_mut(i) {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            }
            continue;
        }
        current = None;
        let Some((n, v)) = line.split_once(':') else { continue };
        let name = HeaderName::from_bytes(n.trim_end_matches([' ', '\t']).as_bytes());
        if matches!(
            name,
            HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
        ) {
            found.push((name, v.trim().to_owned()));
            current = Some(found.len() - 1);
        }
    }
    let first = |h: HeaderName| found.iter().find(|(n, _)| *n == h).map(|(_, v)| v.as_str());
    let (from, to, call_id, cseq) = (
        first(HeaderName::From)?,
        first(HeaderName::To)?,
        first(HeaderName::CallId)?,
        first(HeaderName::CSeq)?,
    );
    first(HeaderName::Via)?;
    let mut buf = BytesMut::with_capacity(512);
    put(&mut buf, "SIP/2.0 ");
    put_u32(&mut buf, u32::from(code.clamp(100, 699)));
    buf.put_u8(b' ');
    put(&mut buf, reason);
    put(&mut buf, "\r\n");
    for (n, v) in &found {
        if *n == HeaderName::Via {
            put_header(&mut buf, "Via", v);
        }
    }
    put_header(&mut buf, "From", from);
    put_header(&mut buf, "To", to);
    put_header(&mut buf, "Call-ID", call_id);
    put_header(&mut buf, "CSeq", cseq);
    put_body(&mut buf, None);
    Some(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: Bytes) -> Message {
        Message::parse(b).expect("built message parses")
    }

    fn invite() -> Message {
        let b = RequestBuilder::new(Method::Invite, "sip:120@edge.example.kr")
            .via(Transport::Udp, "192.0.2.7:5060", "z9hG4bKabc")
            .from("\"Kim, Minsu\" <sip:caller@example.kr>", "ft1")
            .to("sip:120@edge.example.kr", None)
            .call_id("cid-1@192.0.2.7")
            .cseq(7)
            .contact("sip:caller@192.0.2.7:5060")
            .route("<sip:proxy.example.kr;lr>")
            .header("Supported", "timer")
            .body("application/sdp", b"v=0\r\n")
            .build();
        parse(b)
    }

    #[test]
    fn request_builder_writes_everything() {
        let m = invite();
        let s = std::str::from_utf8(m.raw()).unwrap();
        assert!(s.starts_with("INVITE sip:120@edge.example.kr SIP/2.0\r\n"), "{s}");
        assert!(s.contains("\r\nContent-Length: 5\r\n\r\nv=0\r\n"));
        let v = m.top_via().unwrap();
        assert_eq!(v.branch, Some("z9hG4bKabc"));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.sent_by(), "192.0.2.7:5060");
        assert_eq!(m.from_hdr().unwrap().tag(), Some("ft1"));
        assert_eq!(m.from_hdr().unwrap().display, Some("Kim, Minsu"));
        assert_eq!(m.to_hdr().unwrap().uri, "sip:120@edge.example.kr");
        assert_eq!(m.to_hdr().unwrap().tag(), None);
        assert_eq!(m.cseq().unwrap().seq, 7);
        assert_eq!(m.cseq().unwrap().method, Method::Invite);
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.contacts().next().unwrap().unwrap().uri, "sip:caller@192.0.2.7:5060");
        assert_eq!(m.header(HeaderName::Route), Some("<sip:proxy.example.kr;lr>"));
        assert_eq!(m.header(HeaderName::Supported), Some("timer"));
        assert_eq!(m.validate_request(), Ok(()));
        let empty = parse(RequestBuilder::new(Method::Options, "sip:a@b").build());
        assert_eq!(empty.content_length(), Some(0));
        assert_eq!(empty.max_forwards(), Some(70));
    }

    #[test]
    fn response_copies_and_tags() {
        let req = Message::parse(Bytes::from_static(
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP p1;branch=z9hG4bK1\r\nv: SIP/2.0/UDP p2;branch=z9hG4bK2, SIP/2.0/UDP p3\r\nt: <sip:a@b>\r\nf: <sip:c@d>;tag=9\r\ni: cid\r\nCSeq: 3 INVITE\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        let r = parse(
            ResponseBuilder::new(&req, 200, "OK")
                .to_tag("tt")
                .body("application/sdp", b"v=0\r\n")
                .build(),
        );
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.reason(), Some("OK"));
        let vias: Vec<_> = r.vias().map(|v| v.unwrap().host).collect();
        assert_eq!(vias, ["p1", "p2", "p3"]);
        assert_eq!(r.to_hdr().unwrap().tag(), Some("tt"));
        assert_eq!(r.from_hdr().unwrap().tag(), Some("9"));
        assert_eq!(r.call_id(), Some("cid"));
        assert_eq!(r.cseq().unwrap().seq, 3);
        assert_eq!(&r.body()[..], b"v=0\r\n");
        assert_eq!(r.content_type(), Some("application/sdp"));
        // A To that already has a tag keeps it.
        let r2 = parse(ResponseBuilder::new(&r, 200, "OK").to_tag("zz").build());
        assert_eq!(r2.to_hdr().unwrap().tag(), Some("tt"));
        assert_eq!(r2.content_length(), Some(0));
        let trying = parse(
            ResponseBuilder::new(&req, 100, "Trying")
                .header("Server", "callgate")
                .build(),
        );
        assert_eq!(trying.to_hdr().unwrap().tag(), None);
        assert_eq!(trying.header(HeaderName::Server), Some("callgate"));
    }

    #[test]
    fn received_and_rport_on_top_via() {
        let req = Message::parse(Bytes::from_static(
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport , SIP/2.0/UDP p2;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP p3\r\nt: <sip:a@b>\r\nf: <sip:c@d>;tag=9\r\ni: cid\r\nCSeq: 3 INVITE\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        let src: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let r = parse(ResponseBuilder::new(&req, 180, "Ringing").received(src).build());
        let vias: Vec<_> = r.vias().map(|v| v.unwrap()).collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].received, Some("203.0.113.9"));
        assert_eq!(vias[0].rport, Some(Some(40000)));
        assert_eq!(vias[0].branch, Some("z9hG4bK1"));
        assert_eq!(vias[0].sent_by(), "10.0.0.5:5060");
        assert_eq!((vias[1].host, vias[2].host), ("p2", "p3"));
        // Same host, no rport: unchanged apart from normalisation.
        let req6 = Message::parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKx\r\nt: <sip:a@b>\r\nf: <sip:c@d>;tag=9\r\ni: cid\r\nCSeq: 3 OPTIONS\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        let src6: SocketAddr = "[2001:db8::1]:5070".parse().unwrap();
        let r = parse(ResponseBuilder::new(&req6, 200, "OK").received(src6).build());
        let v = r.top_via().unwrap();
        assert_eq!(
            (v.host, v.port, v.received, v.rport),
            ("2001:db8::1", Some(5070), None, None)
        );
        let other: SocketAddr = "[2001:db8::2]:5070".parse().unwrap();
        let r = parse(ResponseBuilder::new(&req6, 200, "OK").received(other).build());
        assert_eq!(r.top_via().unwrap().received, Some("2001:db8::2"));
    }

    #[test]
    fn caller_text_cannot_inject_lines() {
        let req = invite();
        let r = parse(
            ResponseBuilder::new(&req, 486, "Busy\r\nX-Evil: 1")
                .header("X-A", "b\r\nX-Evil: 2")
                .build(),
        );
        assert_eq!(r.reason(), Some("Busy  X-Evil: 1"));
        assert_eq!(r.header_by_name("X-Evil"), None);
        assert_eq!(r.header_by_name("X-A"), Some("b  X-Evil: 2"));
    }

    #[test]
    fn ack_and_cancel() {
        let inv = invite();
        let resp = parse(ResponseBuilder::new(&inv, 486, "Busy Here").to_tag("bt").build());
        let ack = parse(ack_for_non2xx(&inv, &resp));
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.request_uri(), inv.request_uri());
        assert_eq!(ack.top_via().unwrap().branch, Some("z9hG4bKabc"));
        assert_eq!(ack.vias().count(), 1);
        assert_eq!(ack.to_hdr().unwrap().tag(), Some("bt"));
        assert_eq!(ack.from_hdr().unwrap().tag(), Some("ft1"));
        assert_eq!(
            ack.cseq().unwrap(),
            crate::sip::header::CSeq {
                seq: 7,
                method: Method::Ack
            }
        );
        assert_eq!(ack.header(HeaderName::Route), Some("<sip:proxy.example.kr;lr>"));
        assert_eq!(ack.call_id(), Some("cid-1@192.0.2.7"));
        assert_eq!(ack.validate_request(), Ok(()));
        let cancel = parse(cancel_for(&inv));
        assert_eq!(cancel.method(), Some(&Method::Cancel));
        assert_eq!(cancel.top_via().unwrap().branch, Some("z9hG4bKabc"));
        assert_eq!(cancel.to_hdr().unwrap().tag(), None);
        assert_eq!(cancel.cseq().unwrap().seq, 7);
        assert_eq!(cancel.content_length(), Some(0));
        assert_eq!(cancel.validate_request(), Ok(()));
    }

    #[test]
    fn error_response_from_unparseable_bytes() {
        let raw = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h1;branch=z9hG4bK1\r\nv: SIP/2.0/UDP h2\r\nf: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\ni: cid\r\nCSeq: 1\r\n INVITE\r\nContent-Length: -5\r\n\r\n";
        assert!(Message::parse(Bytes::from_static(raw)).is_err());
        let r = Message::parse(error_response_raw(raw, 400, "Bad Content-Length").unwrap()).unwrap();
        assert_eq!(r.status(), Some(400));
        assert_eq!(r.reason(), Some("Bad Content-Length"));
        assert_eq!(r.vias().count(), 2);
        assert_eq!(r.call_id(), Some("cid"));
        assert_eq!(r.cseq().unwrap().seq, 1);
        assert_eq!(error_response_raw(b"SIP/2.0 200 OK\r\n\r\n", 400, "x"), None);
        assert_eq!(
            error_response_raw(b"ACK sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", 400, "x"),
            None
        );
        assert_eq!(
            error_response_raw(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", 400, "x"),
            None
        );
        assert_eq!(error_response_raw(b"", 400, "x"), None);
        assert_eq!(error_response_raw(b"\xff\xfe", 400, "x"), None);
    }
}
