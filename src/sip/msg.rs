//! Zero-copy SIP messages over `bytes::Bytes`: parsing one datagram, framing a stream, and the
//! RFC 3261 8.2 / RFC 4475 checks a UAS makes before acting on a request.
//!
//! A [`Message`] owns exactly one `Bytes` (the message, without trailing junk) and an index of header
//! spans (`u32` offsets + [`HeaderName`]), kept inline for up to [`INLINE_HEADERS`] headers. Nothing is
//! copied or allocated per header; accessors return `&str` borrowed from the message. The header
//! section is checked to be UTF-8 once, at parse time.
//!
//! Leniency, decided here once:
//! - Structural faults (no start line, a header line without `:`, unusable Content-Length, headers not
//!   UTF-8) make [`Message::parse`] fail: nobody can answer such a message reliably.
//! - Request-line faults that still leave the headers usable (extra or trailing SP, whitespace or `<>` in
//!   the Request-URI, an unknown SIP version) and multiple Content-Length values are recorded, so the
//!   message parses and [`Message::validate_request`] returns the 400/505 to send.
//! - A datagram whose header section ends at the end of the datagram without the empty line is
//!   accepted with an empty body; streams ([`frame`]) always need the empty line.

use std::net::SocketAddr;

use bytes::Bytes;
use thiserror::Error;

use super::header::{self, is_token_char, CommaSplit, HeaderError, NameAddr, Via};
use super::uri::{Scheme, Uri};

/// A request method. Methods are case-sensitive (RFC 3261 7.1): `invite` is an extension method.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Extension(Bytes),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(b) => std::str::from_utf8(b).unwrap_or(""),
        }
    }

    /// Maps a method token; anything not standard becomes `Extension` (copied: 1 small allocation).
    pub fn from_token(b: &[u8]) -> Method {
        Self::known(b).unwrap_or_else(|| Method::Extension(Bytes::copy_from_slice(b)))
    }

    fn known(b: &[u8]) -> Option<Method> {
        Some(match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => return None,
        })
    }

    /// Like `from_token`, but an extension method shares `src` (zero-copy).
    fn from_slice_of(src: &Bytes, s: usize, e: usize) -> Method {
        match src.get(s..e) {
            Some(b) => Self::known(b).unwrap_or_else(|| Method::Extension(src.slice(s..e))),
            None => Method::Extension(Bytes::new()),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header names callgate looks at; everything else is `Other` (kept byte for byte, see `raw_name`).
/// Matching is case-insensitive and maps the compact forms (RFC 3261 7.3.3 and the IANA registry):
/// v f t i m l c e k s o r b. Compact forms of headers not listed here (a d j n u x y) are `Other`;
/// [`Message::header_by_name`] still matches them against their long names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    ContentType,
    ContentEncoding,
    Route,
    RecordRoute,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    Allow,
    Accept,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    Expires,
    UserAgent,
    Server,
    Subject,
    Event,
    ReferTo,
    ReferredBy,
    Date,
    RetryAfter,
    #[default]
    Other,
}

const LONG_NAMES: [(&str, HeaderName); 31] = [
    ("Via", HeaderName::Via),
    ("From", HeaderName::From),
    ("To", HeaderName::To),
    ("Call-ID", HeaderName::CallId),
    ("CSeq", HeaderName::CSeq),
    ("Contact", HeaderName::Contact),
    ("Max-Forwards", HeaderName::MaxForwards),
    ("Content-Length", HeaderName::ContentLength),
    ("Content-Type", HeaderName::ContentType),
    ("Content-Encoding", HeaderName::ContentEncoding),
    ("Route", HeaderName::Route),
    ("Record-Route", HeaderName::RecordRoute),
    ("Supported", HeaderName::Supported),
    ("Require", HeaderName::Require),
    ("Proxy-Require", HeaderName::ProxyRequire),
    ("Unsupported", HeaderName::Unsupported),
    ("Allow", HeaderName::Allow),
    ("Accept", HeaderName::Accept),
    ("Authorization", HeaderName::Authorization),
    ("Proxy-Authorization", HeaderName::ProxyAuthorization),
    ("WWW-Authenticate", HeaderName::WwwAuthenticate),
    ("Proxy-Authenticate", HeaderName::ProxyAuthenticate),
    ("Expires", HeaderName::Expires),
    ("User-Agent", HeaderName::UserAgent),
    ("Server", HeaderName::Server),
    ("Subject", HeaderName::Subject),
    ("Event", HeaderName::Event),
    ("Refer-To", HeaderName::ReferTo),
    ("Referred-By", HeaderName::ReferredBy),
    ("Date", HeaderName::Date),
    ("Retry-After", HeaderName::RetryAfter),
];

/// Compact forms of headers that have no `HeaderName` variant (IANA SIP parameters registry).
const OTHER_COMPACT: [(u8, &str); 7] = [
    (b'a', "Accept-Contact"),
    (b'd', "Request-Disposition"),
    (b'j', "Reject-Contact"),
    (b'n', "Identity-Info"),
    (b'u', "Allow-Events"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

impl HeaderName {
    /// Classifies a header name as it appears on the wire.
    pub fn from_bytes(n: &[u8]) -> HeaderName {
        if n.len() == 1 {
            return match n[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'e' => HeaderName::ContentEncoding,
                b'k' => HeaderName::Supported,
                b's' => HeaderName::Subject,
                b'o' => HeaderName::Event,
                b'r' => HeaderName::ReferTo,
                b'b' => HeaderName::ReferredBy,
                _ => HeaderName::Other,
            };
        }
        use HeaderName as H;
        // Dispatch on the first letter, then compare the few candidates.
        let cands: &[(&str, HeaderName)] = match n.first().map(u8::to_ascii_lowercase) {
            Some(b'v') => &[("Via", H::Via)],
            Some(b'f') => &[("From", H::From)],
            Some(b't') => &[("To", H::To)],
            Some(b'c') => &[
                ("Call-ID", H::CallId),
                ("CSeq", H::CSeq),
                ("Contact", H::Contact),
                ("Content-Length", H::ContentLength),
                ("Content-Type", H::ContentType),
                ("Content-Encoding", H::ContentEncoding),
            ],
            Some(b'm') => &[("Max-Forwards", H::MaxForwards)],
            Some(b'r') => &[
                ("Route", H::Route),
                ("Record-Route", H::RecordRoute),
                ("Require", H::Require),
                ("Refer-To", H::ReferTo),
                ("Referred-By", H::ReferredBy),
                ("Retry-After", H::RetryAfter),
            ],
            Some(b's') => &[
                ("Supported", H::Supported),
                ("Server", H::Server),
                ("Subject", H::Subject),
            ],
            Some(b'p') => &[
                ("Proxy-Require", H::ProxyRequire),
                ("Proxy-Authorization", H::ProxyAuthorization),
                ("Proxy-Authenticate", H::ProxyAuthenticate),
            ],
            Some(b'u') => &[("Unsupported", H::Unsupported), ("User-Agent", H::UserAgent)],
            Some(b'a') => &[
                ("Allow", H::Allow),
                ("Accept", H::Accept),
                ("Authorization", H::Authorization),
            ],
            Some(b'w') => &[("WWW-Authenticate", H::WwwAuthenticate)],
            Some(b'e') => &[("Expires", H::Expires), ("Event", H::Event)],
            Some(b'd') => &[("Date", H::Date)],
            _ => &[],
        };
        for (s, h) in cands {
            if s.len() == n.len() && s.as_bytes().eq_ignore_ascii_case(n) {
                return *h;
            }
        }
        HeaderName::Other
    }

    /// The canonical long name (`""` for `Other`).
    pub fn as_str(self) -> &'static str {
        LONG_NAMES
            .iter()
            .find(|(_, h)| *h == self)
            .map(|(s, _)| *s)
            .unwrap_or("")
    }
}

/// The long name a wire name stands for, expanding compact forms (for comparing `Other` headers).
fn expand_compact(n: &str) -> &str {
    if n.len() == 1 {
        let c = n.as_bytes()[0].to_ascii_lowercase();
        if let Some((_, long)) = OTHER_COMPACT.iter().find(|(k, _)| *k == c) {
            return long;
        }
    }
    n
}

/// One header as it appears in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    pub name: HeaderName,
    /// The name as written (e.g. `v`, `VIA`, `X-Custom`).
    pub raw_name: &'a str,
    /// The value, LWS-trimmed; folds inside are kept.
    pub value: &'a str,
}

/// What kind of fault a message has. Each says what was expected and what came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ParseErrorKind {
    #[error("empty message: expected a start line")]
    Empty,
    #[error("malformed start line: expected `METHOD SP Request-URI SP SIP/2.0` or `SIP/2.0 SP code SP reason`")]
    BadStartLine,
    #[error("method is not a token")]
    BadMethod,
    #[error("unsupported SIP version: expected SIP/2.0")]
    BadVersion,
    #[error("status code: expected 3 digits from 100 to 699")]
    BadStatusCode,
    #[error("malformed header on line {line}: expected `name: value`")]
    BadHeader { line: u32 },
    #[error("header section is not UTF-8")]
    NotUtf8,
    #[error("header section not terminated: expected an empty line")]
    MissingHeaderEnd,
    #[error("stream message without Content-Length")]
    MissingContentLength,
    #[error("Content-Length: expected decimal digits")]
    BadContentLength,
    #[error("Content-Length given more than once with different values")]
    ConflictingContentLength,
    #[error("Content-Length {declared} larger than the {available} body bytes received")]
    ContentLengthMismatch { declared: usize, available: usize },
    #[error("message longer than the {max}-byte limit")]
    TooLarge { max: usize },
    #[error("missing {0:?} header")]
    MissingHeader(HeaderName),
    #[error("{name:?} header: {err}")]
    BadHeaderValue { name: HeaderName, err: HeaderError },
    #[error("Max-Forwards: expected a number from 0 to 255")]
    BadMaxForwards,
    #[error("response with more than one Via (RFC 3261 8.1.3.3: a UAC discards it)")]
    MultipleViaInResponse,
    #[error("expected a response, got a request")]
    NotAResponse,
}

/// A parse or validation failure: what and where (byte offset into the input; 0 when not positional).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("{kind} (at byte {pos})")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub pos: usize,
}

impl ParseError {
    pub fn new(kind: ParseErrorKind, pos: usize) -> ParseError {
        ParseError { kind, pos }
    }

    fn value(name: HeaderName, err: HeaderError) -> ParseError {
        ParseError {
            kind: ParseErrorKind::BadHeaderValue { name, err },
            pos: 0,
        }
    }

    /// A short reason phrase for a `400` (or `505`/`513`) answer.
    pub fn reason(&self) -> &'static str {
        use ParseErrorKind::*;
        match self.kind {
            Empty | BadStartLine => "Malformed Start Line",
            BadMethod => "Malformed Method",
            BadVersion => "Version Not Supported",
            BadStatusCode => "Bad Status Code",
            BadHeader { .. } => "Malformed Header",
            NotUtf8 => "Headers Not UTF-8",
            MissingHeaderEnd => "Incomplete Header Section",
            MissingContentLength => "Missing Content-Length",
            BadContentLength => "Bad Content-Length",
            ConflictingContentLength => "Multiple Content-Length",
            ContentLengthMismatch { .. } => "Content-Length Mismatch",
            TooLarge { .. } => "Message Too Large",
            MissingHeader(h) => missing_reason(h),
            BadHeaderValue { name, .. } => malformed_reason(name),
            BadMaxForwards => "Bad Max-Forwards",
            MultipleViaInResponse => "Multiple Via In Response",
            NotAResponse => "Not A Response",
        }
    }

    /// The status code to answer a request that failed this way with (505 for the version, else 400;
    /// 513 when too large).
    pub fn status(&self) -> u16 {
        match self.kind {
            ParseErrorKind::BadVersion => 505,
            ParseErrorKind::TooLarge { .. } => 513,
            _ => 400,
        }
    }
}

fn missing_reason(h: HeaderName) -> &'static str {
    match h {
        HeaderName::Via => "Missing Via",
        HeaderName::From => "Missing From",
        HeaderName::To => "Missing To",
        HeaderName::CallId => "Missing Call-ID",
        HeaderName::CSeq => "Missing CSeq",
        HeaderName::ContentLength => "Missing Content-Length",
        _ => "Missing Required Header",
    }
}

fn malformed_reason(h: HeaderName) -> &'static str {
    match h {
        HeaderName::Via => "Malformed Via",
        HeaderName::From => "Malformed From",
        HeaderName::To => "Malformed To",
        HeaderName::CallId => "Malformed Call-ID",
        HeaderName::CSeq => "Bad CSeq",
        HeaderName::Contact => "Malformed Contact",
        HeaderName::MaxForwards => "Bad Max-Forwards",
        _ => "Malformed Header",
    }
}

fn multiple_reason(h: HeaderName) -> &'static str {
    match h {
        HeaderName::From => "Multiple From",
        HeaderName::To => "Multiple To",
        HeaderName::CallId => "Multiple Call-ID",
        HeaderName::CSeq => "Multiple CSeq",
        HeaderName::MaxForwards => "Multiple Max-Forwards",
        HeaderName::ContentLength => "Multiple Content-Length",
        HeaderName::ContentType => "Multiple Content-Type",
        _ => "Multiple Single-Value Header",
    }
}

/// The answer a UAS sends instead of acting on a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub reason: &'static str,
}

impl Rejection {
    pub const fn new(code: u16, reason: &'static str) -> Rejection {
        Rejection { code, reason }
    }
}

impl From<ParseError> for Rejection {
    fn from(e: ParseError) -> Rejection {
        Rejection {
            code: e.status(),
            reason: e.reason(),
        }
    }
}

/// Header spans kept inline up to this count; longer messages spill to one Vec.
pub const INLINE_HEADERS: usize = 24;

#[derive(Clone, Copy, Debug, Default)]
struct Hdr {
    name: HeaderName,
    ns: u32,
    ne: u32,
    vs: u32,
    ve: u32,
}

// Inline on purpose: typical messages never allocate for their index.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Index {
    Inline { len: u8, items: [Hdr; INLINE_HEADERS] },
    Heap(Vec<Hdr>),
}

impl Index {
    fn new() -> Index {
        Index::Inline {
            len: 0,
            items: [Hdr::default(); INLINE_HEADERS],
        }
    }
    #[inline]
    fn push(&mut self, h: Hdr) {
        match self {
            Index::Inline { len, items } => {
                let n = *len as usize;
                if n < INLINE_HEADERS {
                    items[n] = h;
                    *len += 1;
                } else {
                    let mut v = Vec::with_capacity(INLINE_HEADERS * 2);
                    v.extend_from_slice(&items[..]);
                    v.push(h);
                    *self = Index::Heap(v);
                }
            }
            Index::Heap(v) => v.push(h),
        }
    }
    #[inline]
    fn as_slice(&self) -> &[Hdr] {
        match self {
            Index::Inline { len, items } => &items[..(*len as usize).min(INLINE_HEADERS)],
            Index::Heap(v) => v,
        }
    }
}

#[derive(Clone, Debug)]
enum StartLine {
    Request {
        method: Method,
        uri: (u32, u32),
        version: (u32, u32),
    },
    Response {
        status: u16,
        reason: (u32, u32),
    },
}

// Faults recorded at parse time and reported by `validate_request`.
const D_REQLINE_WS: u8 = 1;
const D_URI_LWS: u8 = 2;
const D_VERSION: u8 = 4;
const D_MULTI_CL: u8 = 8;
const D_NO_BLANK_LINE: u8 = 16;

/// A parsed SIP message. Cloning is cheap (one `Bytes` refcount plus the span index).
#[derive(Clone, Debug)]
pub struct Message {
    raw: Bytes,
    head_len: u32,
    body_start: u32,
    start: StartLine,
    defects: u8,
    index: Index,
    /// Where the message came from, when the receiver said so ([`Message::set_source`]).
    source: Option<SocketAddr>,
}

/// The result of [`frame`] when the buffer starts with something usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framed {
    /// The first `n` bytes are one whole message.
    Message(usize),
    /// The first `n` bytes are CR/LF keep-alives (RFC 5626 4.4.1) to discard.
    KeepAlive(usize),
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// First index of `needle` in `hay`, a word at a time.
#[inline]
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    let rep = LO.wrapping_mul(u64::from(needle));
    let mut i = 0;
    let mut chunks = hay.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w) ^ rep;
        let t = x.wrapping_sub(LO) & !x & HI;
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    chunks.remainder().iter().position(|&b| b == needle).map(|p| i + p)
}

#[inline]
fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Parses a Content-Length value (digits, surrounding LWS allowed).
fn parse_content_length(v: &[u8]) -> Option<usize> {
    let mut s = 0;
    let mut e = v.len();
    while s < e && header::is_lws(v[s]) {
        s += 1;
    }
    while e > s && header::is_lws(v[e - 1]) {
        e -= 1;
    }
    if s == e || e - s > 19 {
        return None;
    }
    let mut n: usize = 0;
    for &d in &v[s..e] {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
    }
    Some(n)
}

/// Parses `SIP/x.y`-prefixed text as the 2.0 version (the version string is case-insensitive).
fn is_sip20(v: &[u8]) -> bool {
    v.len() == 7 && v[..4].eq_ignore_ascii_case(b"SIP/") && &v[4..] == b"2.0"
}

struct Head {
    start: StartLine,
    defects: u8,
    index: Index,
    body_start: usize,
    content_length: Option<usize>,
}

/// Parses start line and headers of `b` (which starts at the start line).
fn parse_head(src: &Bytes, b: &[u8], stream: bool) -> Result<Head, ParseError> {
    use ParseErrorKind as K;
    if b.is_empty() {
        return Err(ParseError::new(K::Empty, 0));
    }
    let mut defects = 0u8;
    let nl = find_byte(b, b'\n').ok_or(ParseError::new(K::MissingHeaderEnd, b.len()))?;
    let mut le = nl;
    if le > 0 && b[le - 1] == b'\r' {
        le -= 1;
    }
    let line = &b[..le];
    let start = if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = find_byte(line, b' ').ok_or(ParseError::new(K::BadStartLine, 0))?;
        if !is_sip20(&line[..sp]) {
            return Err(ParseError::new(K::BadVersion, 0));
        }
        let rest = &line[sp + 1..];
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits != 3 || !matches!(rest.get(3), None | Some(b' ')) {
            return Err(ParseError::new(K::BadStatusCode, sp + 1));
        }
        let status = u16::from(rest[0] - b'0') * 100 + u16::from(rest[1] - b'0') * 10 + u16::from(rest[2] - b'0');
        if !(100..=699).contains(&status) {
            return Err(ParseError::new(K::BadStatusCode, sp + 1));
        }
        let rs = (sp + 1 + 4).min(le);
        StartLine::Response {
            status,
            reason: (rs as u32, le as u32),
        }
    } else {
        // Request-Line = Method SP Request-URI SP SIP-Version
        let mut te = le;
        while te > 0 && is_wsp(line[te - 1]) {
            te -= 1;
        }
        if te != le {
            defects |= D_REQLINE_WS;
        }
        let t = &line[..te];
        let sp1 = find_byte(t, b' ').ok_or(ParseError::new(K::BadStartLine, 0))?;
        let sp2 = t.iter().rposition(|&c| c == b' ').unwrap_or(sp1);
        if sp1 == 0 || !t[..sp1].iter().all(|&c| is_token_char(c)) {
            return Err(ParseError::new(K::BadMethod, 0));
        }
        if sp2 == sp1 {
            return Err(ParseError::new(K::BadStartLine, sp1));
        }
        let version = &t[sp2 + 1..];
        if version.len() < 4 || !version[..4].eq_ignore_ascii_case(b"SIP/") {
            return Err(ParseError::new(K::BadStartLine, sp2 + 1));
        }
        if !is_sip20(version) {
            defects |= D_VERSION;
        }
        let mut us = sp1 + 1;
        let mut ue = sp2;
        if us < ue && (is_wsp(t[us]) || is_wsp(t[ue - 1])) {
            defects |= D_REQLINE_WS;
        }
        while us < ue && is_wsp(t[us]) {
            us += 1;
        }
        while ue > us && is_wsp(t[ue - 1]) {
            ue -= 1;
        }
        if us == ue {
            return Err(ParseError::new(K::BadStartLine, sp1));
        }
        if t[us..ue].iter().any(|&c| is_wsp(c)) {
            defects |= D_URI_LWS;
        }
        StartLine::Request {
            method: Method::from_slice_of(src, 0, sp1),
            uri: (us as u32, ue as u32),
            version: ((sp2 + 1) as u32, te as u32),
        }
    };

    let mut index = Index::new();
    let mut pos = nl + 1;
    let mut line_no: u32 = 1;
    let mut cl: Option<usize> = None;
    let body_start;
    loop {
        let Some(&c0) = b.get(pos) else {
            if stream {
                return Err(ParseError::new(K::MissingHeaderEnd, pos));
            }
            // Datagram ending right after a header line: no empty line, no body.
            defects |= D_NO_BLANK_LINE;
            body_start = pos;
            break;
        };
        if c0 == b'\r' && b.get(pos + 1) == Some(&b'\n') {
            body_start = pos + 2;
            break;
        }
        if c0 == b'\n' {
            body_start = pos + 1;
            break;
        }
        line_no += 1;
        let ns = pos;
        while pos < b.len() && is_token_char(b[pos]) {
            pos += 1;
        }
        let ne = pos;
        while pos < b.len() && is_wsp(b[pos]) {
            pos += 1;
        }
        if ne == ns || b.get(pos) != Some(&b':') {
            return Err(ParseError::new(K::BadHeader { line: line_no }, ns));
        }
        pos += 1;
        let vs0 = pos;
        // Find the end of the logical line (folds continue it).
        let ve0;
        loop {
            let Some(rel) = b.get(pos..).and_then(|r| find_byte(r, b'\n')) else {
                return Err(ParseError::new(K::MissingHeaderEnd, b.len()));
            };
            let lf = pos + rel;
            pos = lf + 1;
            match b.get(pos) {
                Some(&c) if is_wsp(c) => {
                    line_no += 1;
                    continue;
                }
                _ => {
                    ve0 = lf;
                    break;
                }
            }
        }
        let mut vs = vs0;
        let mut ve = ve0;
        while vs < ve && header::is_lws(b[vs]) {
            vs += 1;
        }
        while ve > vs && header::is_lws(b[ve - 1]) {
            ve -= 1;
        }
        let name = HeaderName::from_bytes(&b[ns..ne]);
        if name == HeaderName::ContentLength {
            let n = parse_content_length(&b[vs..ve]).ok_or(ParseError::new(K::BadContentLength, vs))?;
            match cl {
                None => cl = Some(n),
                Some(prev) => {
                    if stream && prev != n {
                        return Err(ParseError::new(K::ConflictingContentLength, vs));
                    }
                    defects |= D_MULTI_CL;
                }
            }
        }
        index.push(Hdr {
            name,
            ns: ns as u32,
            ne: ne as u32,
            vs: vs as u32,
            ve: ve as u32,
        });
    }
    if std::str::from_utf8(&b[..body_start]).is_err() {
        return Err(ParseError::new(K::NotUtf8, 0));
    }
    Ok(Head {
        start,
        defects,
        index,
        body_start,
        content_length: cl,
    })
}

impl Message {
    /// Parses one datagram. Leading CR/LF are skipped. Content-Length absent => the body is the rest;
    /// bytes beyond Content-Length are dropped (RFC 4475 3.1.1.8); Content-Length larger than what is
    /// there => `Err(ContentLengthMismatch)`.
    pub fn parse(datagram: Bytes) -> Result<Message, ParseError> {
        Self::parse_inner(datagram, false)
    }

    /// Parses one message [`frame`] cut from a stream: Content-Length is required and must match.
    pub fn parse_stream(message: Bytes) -> Result<Message, ParseError> {
        Self::parse_inner(message, true)
    }

    /// Header bytes that are not UTF-8 (e.g. a carrier's EUC-KR display name) must not cost the
    /// citizen the call: the header section is copied with each invalid sequence replaced by U+FFFD
    /// and parsed again; the body is kept as it came. Only this rare path copies.
    fn parse_lossy(data: &Bytes, stream: bool) -> Result<Message, ParseError> {
        let end = data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .or_else(|| data.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
            .unwrap_or(data.len());
        let mut fixed = String::from_utf8_lossy(&data[..end]).into_owned().into_bytes();
        fixed.extend_from_slice(&data[end..]);
        let fixed = Bytes::from(fixed);
        match parse_head(&fixed, &fixed, stream) {
            // Cannot happen (the header section is UTF-8 now), but never loop.
            Err(e) if e.kind == ParseErrorKind::NotUtf8 => Err(e),
            _ => Self::parse_inner(fixed, stream),
        }
    }

    fn parse_inner(data: Bytes, stream: bool) -> Result<Message, ParseError> {
        let lead = data.iter().take_while(|&&c| c == b'\r' || c == b'\n').count();
        if data.len() > u32::MAX as usize {
            return Err(ParseError::new(ParseErrorKind::TooLarge { max: u32::MAX as usize }, 0));
        }
        let data = if lead > 0 { data.slice(lead..) } else { data };
        let head = match parse_head(&data, &data, stream) {
            Ok(h) => h,
            Err(e) if e.kind == ParseErrorKind::NotUtf8 => return Self::parse_lossy(&data, stream),
            Err(mut e) => {
                e.pos += lead;
                return Err(e);
            }
        };
        let available = data.len() - head.body_start;
        let body_len = match head.content_length {
            Some(n) if n > available => {
                return Err(ParseError::new(
                    ParseErrorKind::ContentLengthMismatch { declared: n, available },
                    lead + head.body_start,
                ))
            }
            Some(n) => n,
            None if stream => return Err(ParseError::new(ParseErrorKind::MissingContentLength, lead)),
            None => available,
        };
        let end = head.body_start + body_len;
        let raw = if end < data.len() { data.slice(..end) } else { data };
        Ok(Message {
            raw,
            head_len: head.body_start as u32,
            body_start: head.body_start as u32,
            start: head.start,
            defects: head.defects,
            index: head.index,
            source: None,
        })
    }

    /// Records the address the message arrived from. Responses built from a request that knows its
    /// source carry `received`/`rport` on their top Via (RFC 3261 18.2.1, RFC 3581 4).
    pub fn set_source(&mut self, addr: SocketAddr) {
        self.source = Some(addr);
    }

    /// The address the message arrived from, if the receiver recorded it.
    pub fn source(&self) -> Option<SocketAddr> {
        self.source
    }

    #[inline]
    fn head_str(&self) -> &str {
        let h = self.raw.get(..self.head_len as usize).unwrap_or(&[]);
        // SAFETY: parse_head checked that these bytes are UTF-8, and `Bytes` is immutable.
        unsafe { std::str::from_utf8_unchecked(h) }
    }

    #[inline]
    fn span(&self, s: u32, e: u32) -> &str {
        self.head_str().get(s as usize..e as usize).unwrap_or("")
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response (may be empty).
    pub fn reason(&self) -> Option<&str> {
        match self.start {
            StartLine::Response { reason: (s, e), .. } => Some(self.span(s, e)),
            StartLine::Request { .. } => None,
        }
    }

    /// The raw text of the Request-URI.
    pub fn request_uri(&self) -> Option<&str> {
        match self.start {
            StartLine::Request { uri: (s, e), .. } => Some(self.span(s, e)),
            StartLine::Response { .. } => None,
        }
    }

    /// The SIP-Version text of a request line as written (e.g. `SIP/2.0`).
    pub fn version(&self) -> &str {
        match self.start {
            StartLine::Request { version: (s, e), .. } => self.span(s, e),
            StartLine::Response { .. } => "SIP/2.0",
        }
    }

    /// The whole message as received (leading CRLF and trailing junk cut off).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The header section including the start line and the empty line.
    pub fn head(&self) -> &str {
        self.head_str()
    }

    /// All headers in order; unknown ones byte for byte.
    pub fn headers(&self) -> impl Iterator<Item = HeaderRef<'_>> {
        self.index.as_slice().iter().map(move |h| HeaderRef {
            name: h.name,
            raw_name: self.span(h.ns, h.ne),
            value: self.span(h.vs, h.ve),
        })
    }

    /// Number of header lines.
    pub fn header_count(&self) -> usize {
        self.index.as_slice().len()
    }

    /// First occurrence's value, trimmed (folds inside kept).
    pub fn header(&self, name: HeaderName) -> Option<&str> {
        self.index
            .as_slice()
            .iter()
            .find(|h| h.name == name)
            .map(|h| self.span(h.vs, h.ve))
    }

    /// How many header lines carry `name`.
    pub fn header_count_of(&self, name: HeaderName) -> usize {
        self.index.as_slice().iter().filter(|h| h.name == name).count()
    }

    /// Every occurrence's whole value (not comma-split), in order.
    pub fn header_all(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.index
            .as_slice()
            .iter()
            .filter(move |h| h.name == name)
            .map(move |h| self.span(h.vs, h.ve))
    }

    /// First header whose name matches `name` case-insensitively, compact forms included
    /// (e.g. `"Session-Expires"` also finds `x:`). Works for headers without a `HeaderName` variant.
    pub fn header_by_name(&self, name: &str) -> Option<&str> {
        let hn = HeaderName::from_bytes(name.as_bytes());
        if hn != HeaderName::Other {
            return self.header(hn);
        }
        let want = expand_compact(name);
        self.index
            .as_slice()
            .iter()
            .filter(|h| h.name == HeaderName::Other)
            .find(|h| expand_compact(self.span(h.ns, h.ne)).eq_ignore_ascii_case(want))
            .map(|h| self.span(h.vs, h.ve))
    }

    /// Comma-split elements of all occurrences (commas inside quotes or `<>` do not split), trimmed,
    /// empty elements skipped.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.header_all(name).flat_map(CommaSplit::new)
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header(HeaderName::CallId)
    }

    pub fn cseq(&self) -> Result<header::CSeq, ParseError> {
        let v = self.header(HeaderName::CSeq).ok_or(missing(HeaderName::CSeq))?;
        header::CSeq::parse(v).map_err(|e| ParseError::value(HeaderName::CSeq, e))
    }

    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        let v = self
            .header_values(HeaderName::Via)
            .next()
            .ok_or(missing(HeaderName::Via))?;
        Via::parse(v).map_err(|e| ParseError::value(HeaderName::Via, e))
    }

    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ParseError>> {
        self.header_values(HeaderName::Via)
            .map(|v| Via::parse(v).map_err(|e| ParseError::value(HeaderName::Via, e)))
    }

    pub fn from_hdr(&self) -> Result<NameAddr<'_>, ParseError> {
        self.name_addr(HeaderName::From)
    }

    pub fn to_hdr(&self) -> Result<NameAddr<'_>, ParseError> {
        self.name_addr(HeaderName::To)
    }

    fn name_addr(&self, name: HeaderName) -> Result<NameAddr<'_>, ParseError> {
        let v = self.header(name).ok_or(missing(name))?;
        NameAddr::parse(v).map_err(|e| ParseError::value(name, e))
    }

    pub fn contacts(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> {
        self.name_addrs(HeaderName::Contact)
    }

    /// Route, Record-Route, Contact ... elements as name-addrs, in order.
    pub fn name_addrs(&self, name: HeaderName) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> {
        self.header_values(name)
            .map(move |v| NameAddr::parse(v).map_err(|e| ParseError::value(name, e)))
    }

    pub fn max_forwards(&self) -> Option<u32> {
        let v = self.header(HeaderName::MaxForwards)?;
        if v.is_empty() || v.len() > 10 || !v.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        v.parse().ok()
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header(HeaderName::ContentType)
    }

    /// The declared Content-Length (first occurrence), if present and valid.
    pub fn content_length(&self) -> Option<usize> {
        self.header(HeaderName::ContentLength)
            .and_then(|v| parse_content_length(v.as_bytes()))
    }

    /// The body: a zero-copy slice.
    pub fn body(&self) -> Bytes {
        self.raw.slice((self.body_start as usize).min(self.raw.len())..)
    }

    /// RFC 3261 8.2 / RFC 4475 checks a UAS makes before acting on a request; the answer to send if
    /// not OK. Order: version (505), request line, Request-URI, missing then duplicated mandatory
    /// headers, CSeq, Max-Forwards, Via, From, To, Contact (all 400).
    /// Not checked here: URI scheme, Require, Content-Type and Accept ([`Message::uas_checks`]);
    /// Date (ignored: callgate never uses it, so an invalid Date is accepted, RFC 4475 3.1.2.12).
    pub fn validate_request(&self) -> Result<(), Rejection> {
        let StartLine::Request { method, .. } = &self.start else {
            return Err(Rejection::new(400, "Not A Request"));
        };
        if self.defects & D_VERSION != 0 {
            return Err(Rejection::new(505, "Version Not Supported"));
        }
        if self.defects & D_REQLINE_WS != 0 {
            return Err(Rejection::new(400, "Malformed Request-Line"));
        }
        if self.defects & D_URI_LWS != 0 {
            return Err(Rejection::new(400, "Whitespace In Request-URI"));
        }
        let ruri = self.request_uri().unwrap_or("");
        match Uri::parse(ruri) {
            Err(_) => return Err(Rejection::new(400, "Malformed Request-URI")),
            Ok(u) if u.scheme.is_sip() && !u.headers.is_empty() => {
                return Err(Rejection::new(400, "Headers In Request-URI"))
            }
            Ok(_) => {}
        }
        for h in [
            HeaderName::To,
            HeaderName::From,
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::Via,
        ] {
            if self.header(h).is_none() {
                return Err(Rejection::new(400, missing_reason(h)));
            }
        }
        if self.defects & D_MULTI_CL != 0 {
            return Err(Rejection::new(400, "Multiple Content-Length"));
        }
        for h in [
            HeaderName::To,
            HeaderName::From,
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::MaxForwards,
            HeaderName::ContentLength,
            HeaderName::ContentType,
        ] {
            if self.header_count_of(h) > 1 {
                return Err(Rejection::new(400, multiple_reason(h)));
            }
        }
        let cseq = self.cseq().map_err(Rejection::from)?;
        if &cseq.method != method {
            return Err(Rejection::new(400, "CSeq Method Mismatch"));
        }
        if self.header(HeaderName::MaxForwards).is_some() && self.max_forwards().is_none_or(|n| n > 255) {
            return Err(Rejection::new(400, "Bad Max-Forwards"));
        }
        for v in self.vias() {
            v.map_err(Rejection::from)?;
        }
        self.from_hdr().map_err(Rejection::from)?;
        self.to_hdr().map_err(Rejection::from)?;
        for c in self.contacts() {
            c.map_err(Rejection::from)?;
        }
        Ok(())
    }

    /// The checks a UAS that only serves `sip:`/`sips:`/`tel:` makes after [`validate_request`]
    /// (RFC 3261 8.2.1-8.2.3): 416 for another Request-URI scheme, 420 when Require names an extension
    /// not in `supported_extensions` (answer with an `Unsupported` header listing
    /// [`Message::unsupported_required`]), 415 for a body whose Content-Type (parameters ignored) is not
    /// in `accepted_types` or a Content-Encoding other than identity, and, for INVITE, 406 when an Accept
    /// header admits none of `accepted_types` (the types our answers carry, e.g. `application/sdp`).
    /// Proxy-Require is for proxies and is ignored here. Comparisons are case-insensitive.
    /// An ACK always passes (it cannot be answered); a CANCEL is not refused over Require.
    ///
    /// [`validate_request`]: Message::validate_request
    pub fn uas_checks(&self, supported_extensions: &[&str], accepted_types: &[&str]) -> Result<(), Rejection> {
        // An ACK cannot be answered; a CANCEL is never refused over Require (RFC 3261 8.2.2.3).
        let method = self.method();
        if method == Some(&Method::Ack) {
            return Ok(());
        }
        if let Some(u) = self.request_uri() {
            match Uri::parse(u) {
                Ok(u) if matches!(u.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel) => {}
                _ => return Err(Rejection::new(416, "Unsupported URI Scheme")),
            }
        }
        if method != Some(&Method::Cancel) && !self.unsupported_required(supported_extensions).is_empty() {
            return Err(Rejection::new(420, "Bad Extension"));
        }
        if !self.body().is_empty() {
            let mt = self.content_type().map(media_type).unwrap_or("");
            if !accepted_types.iter().any(|a| a.eq_ignore_ascii_case(mt)) {
                return Err(Rejection::new(415, "Unsupported Media Type"));
            }
            for enc in self.header_values(HeaderName::ContentEncoding) {
                if !enc.eq_ignore_ascii_case("identity") {
                    return Err(Rejection::new(415, "Unsupported Media Type"));
                }
            }
        }
        if method == Some(&Method::Invite) && self.header(HeaderName::Accept).is_some() {
            let ok = self.header_values(HeaderName::Accept).any(|a| {
                let a = media_type(a);
                accepted_types.iter().any(|t| media_range_matches(a, t))
            });
            if !ok {
                return Err(Rejection::new(406, "Not Acceptable"));
            }
        }
        Ok(())
    }

    /// The option-tags of Require not in `supported` (for the `Unsupported` header of a 420).
    pub fn unsupported_required(&self, supported: &[&str]) -> Vec<&str> {
        self.header_values(HeaderName::Require)
            .filter(|t| !supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect()
    }

    /// Before forwarding a request (B2BUA bridging): 483 when Max-Forwards is 0. A UAS serving the
    /// request itself may ignore Max-Forwards 0 (RFC 4475 3.3.11).
    pub fn forward_check(&self) -> Result<(), Rejection> {
        if self.max_forwards() == Some(0) {
            return Err(Rejection::new(483, "Too Many Hops"));
        }
        Ok(())
    }

    /// Checks a UAC makes on a response: the status line was checked by `parse`; here CSeq, Call-ID,
    /// From, To and exactly one well-formed Via (RFC 3261 8.1.3.3; RFC 4475 3.1.2.5, 3.3.10). A failed
    /// check means: drop the response silently.
    pub fn validate_response(&self) -> Result<(), ParseError> {
        if self.is_request() {
            return Err(ParseError::new(ParseErrorKind::NotAResponse, 0));
        }
        self.cseq()?;
        self.call_id().ok_or(missing(HeaderName::CallId))?;
        self.from_hdr()?;
        self.to_hdr()?;
        let mut n = 0;
        for v in self.vias() {
            v?;
            n += 1;
        }
        match n {
            0 => Err(missing(HeaderName::Via)),
            1 => Ok(()),
            _ => Err(ParseError::new(ParseErrorKind::MultipleViaInResponse, 0)),
        }
    }
}

fn missing(h: HeaderName) -> ParseError {
    ParseError::new(ParseErrorKind::MissingHeader(h), 0)
}

/// `type/subtype` of a Content-Type or Accept element, parameters and LWS removed.
fn media_type(v: &str) -> &str {
    header::trim_lws(v.split(';').next().unwrap_or(""))
}

fn media_range_matches(range: &str, ty: &str) -> bool {
    if range == "*/*" {
        return true;
    }
    match (range.split_once('/'), ty.split_once('/')) {
        (Some((rt, "*")), Some((tt, _))) => rt.eq_ignore_ascii_case(tt),
        _ => range.eq_ignore_ascii_case(ty),
    }
}

/// Stream framing (TCP). `Ok(Some(Framed::Message(len)))` when `buf` starts with one whole message of
/// `len` bytes (headers + Content-Length body; Content-Length is mandatory on streams);
/// `Ok(Some(Framed::KeepAlive(n)))` for leading CR/LF; `Ok(None)` when more bytes are needed; `Err` when
/// it can never be a message (answer 400 where possible, then close the connection).
///
/// Each call rescans `buf` from its start; a connection reader that calls it after every small read
/// can use [`Framer`] instead, which resumes where it stopped.
pub fn frame(buf: &[u8], max_len: usize) -> Result<Option<Framed>, ParseError> {
    Framer::new().next(buf, max_len)
}

/// True when a datagram holds only CR/LF: an RFC 5626 keep-alive (`\r\n\r\n` ping, `\r\n` pong),
/// not a message to parse or count as an error.
pub fn is_keepalive(datagram: &[u8]) -> bool {
    !datagram.is_empty() && datagram.iter().all(|&c| c == b'\r' || c == b'\n')
}

/// Incremental stream framing: the same answers as [`frame`], but the scan resumes where the previous
/// call stopped, so a message arriving a few bytes at a time costs O(length) in total. Call `next` with
/// the connection buffer after every read; after it returns `Some(..)` the caller drains those bytes
/// and the framer starts afresh on the next call.
#[derive(Clone, Debug, Default)]
pub struct Framer {
    /// Offset of the next unscanned line.
    pos: usize,
    line_no: u32,
    cl: Option<usize>,
    /// Start of a Content-Length value whose (possibly folded) line is not finished yet.
    pending: Option<usize>,
    /// The header section ends here (the body may still be incomplete).
    head_end: Option<usize>,
}

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Forgets any partial scan (e.g. after the caller discarded its buffer).
    pub fn reset(&mut self) {
        *self = Framer::default();
    }

    pub fn next(&mut self, buf: &[u8], max_len: usize) -> Result<Option<Framed>, ParseError> {
        let r = self.scan(buf, max_len);
        if !matches!(r, Ok(None)) {
            self.reset();
        }
        r
    }

    fn scan(&mut self, buf: &[u8], max_len: usize) -> Result<Option<Framed>, ParseError> {
        use ParseErrorKind as K;
        if self.pos == 0 && self.head_end.is_none() {
            let lead = buf.iter().take_while(|&&c| c == b'\r' || c == b'\n').count();
            if lead > 0 {
                return Ok(Some(Framed::KeepAlive(lead)));
            }
            if buf.is_empty() {
                return Ok(None);
            }
        }
        if buf.len() < self.pos {
            // The caller's buffer shrank under us: start again.
            self.reset();
            return self.scan(buf, max_len);
        }
        let head_end = match self.head_end {
            Some(h) => h,
            None => loop {
                let pos = self.pos;
                let Some(rel) = buf.get(pos..).and_then(|r| find_byte(r, b'\n')) else {
                    if buf.len() > max_len {
                        return Err(ParseError::new(K::TooLarge { max: max_len }, max_len));
                    }
                    return Ok(None);
                };
                let lf = pos + rel;
                let mut le = lf;
                if le > pos && buf[le - 1] == b'\r' {
                    le -= 1;
                }
                let line = &buf[pos..le];
                self.line_no += 1;
                let line_no = self.line_no;
                let continuation = line_no > 1 && line.first().is_some_and(|&c| is_wsp(c));
                if !continuation {
                    if let Some(vs) = self.pending.take() {
                        let n = parse_content_length(&buf[vs..pos]).ok_or(ParseError::new(K::BadContentLength, vs))?;
                        match self.cl {
                            Some(prev) if prev != n => return Err(ParseError::new(K::ConflictingContentLength, vs)),
                            _ => self.cl = Some(n),
                        }
                    }
                }
                self.pos = lf + 1;
                if line.is_empty() {
                    self.head_end = Some(lf + 1);
                    break lf + 1;
                }
                if line_no > 1 && !continuation {
                    let n = line.iter().take_while(|&&c| is_token_char(c)).count();
                    let name = &line[..n];
                    if name.eq_ignore_ascii_case(b"Content-Length") || name.eq_ignore_ascii_case(b"l") {
                        let rest = &line[n..];
                        match rest.iter().position(|&c| c == b':') {
                            Some(c) if rest[..c].iter().all(|&x| is_wsp(x)) => self.pending = Some(pos + n + c + 1),
                            _ => return Err(ParseError::new(K::BadHeader { line: line_no }, pos)),
                        }
                    }
                }
                if self.pos > max_len {
                    return Err(ParseError::new(K::TooLarge { max: max_len }, max_len));
                }
            },
        };
        let cl = self.cl.ok_or(ParseError::new(K::MissingContentLength, 0))?;
        let total = head_end
            .checked_add(cl)
            .ok_or(ParseError::new(K::TooLarge { max: max_len }, 0))?;
        if total > max_len {
            return Err(ParseError::new(K::TooLarge { max: max_len }, 0));
        }
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some(Framed::Message(total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(s.as_bytes())).expect("parses")
    }

    const INVITE: &str = "INVITE sip:120@edge.example.kr SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK776asdhds;rport\r\n\
v: SIP/2.0/TCP proxy.example.kr;branch=z9hG4bKx\r\n\
Max-Forwards: 70\r\n\
t: <sip:120@edge.example.kr>\r\n\
f: \"Kim, Minsu\" <sip:+82-2-555-0100@carrier.example.kr>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.example.kr\r\n\
CSeq: 314159 INVITE\r\n\
m: <sip:caller@[2001:db8::1]:5060>\r\n\
X-Custom:   keep  this   \r\n\
Subject: folded\r\n  value here\r\n\
c: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\r\n";

    #[test]
    fn parses_request_and_accessors() {
        let m = msg(INVITE);
        assert!(m.is_request());
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.request_uri(), Some("sip:120@edge.example.kr"));
        assert_eq!(m.call_id(), Some("a84b4c76e66710@pc33.example.kr"));
        assert_eq!(m.cseq().unwrap().seq, 314159);
        let v = m.top_via().unwrap();
        assert_eq!(v.host, "2001:db8::1");
        assert_eq!(v.port, Some(5060));
        assert_eq!(m.vias().count(), 2);
        assert_eq!(m.from_hdr().unwrap().display, Some("Kim, Minsu"));
        assert_eq!(m.from_hdr().unwrap().tag(), Some("1928301774"));
        assert_eq!(m.to_hdr().unwrap().tag(), None);
        assert_eq!(
            m.contacts().next().unwrap().unwrap().uri,
            "sip:caller@[2001:db8::1]:5060"
        );
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.content_type(), Some("application/sdp"));
        assert_eq!(&m.body()[..], b"v=0\r");
        assert_eq!(m.header_by_name("x-custom"), Some("keep  this"));
        assert_eq!(m.header(HeaderName::Subject), Some("folded\r\n  value here"));
        let names: Vec<_> = m.headers().map(|h| h.raw_name).collect();
        assert_eq!(names[2], "Max-Forwards");
        assert_eq!(names[3], "t");
        assert_eq!(m.validate_request(), Ok(()));
        assert_eq!(m.uas_checks(&[], &["application/sdp"]), Ok(()));
    }

    #[test]
    fn every_long_name_round_trips() {
        for (name, h) in LONG_NAMES.iter() {
            assert_eq!(HeaderName::from_bytes(name.as_bytes()), *h, "{name}");
            assert_eq!(
                HeaderName::from_bytes(name.to_ascii_uppercase().as_bytes()),
                *h,
                "{name}"
            );
            assert_eq!(
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                *h,
                "{name}"
            );
            assert_eq!(h.as_str(), *name);
        }
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Vias"), HeaderName::Other);
        assert_eq!(HeaderName::Other.as_str(), "");
    }

    #[test]
    fn compact_forms_map() {
        for (c, h) in [
            ("v", HeaderName::Via),
            ("F", HeaderName::From),
            ("t", HeaderName::To),
            ("i", HeaderName::CallId),
            ("m", HeaderName::Contact),
            ("l", HeaderName::ContentLength),
            ("c", HeaderName::ContentType),
            ("e", HeaderName::ContentEncoding),
            ("k", HeaderName::Supported),
            ("s", HeaderName::Subject),
            ("o", HeaderName::Event),
            ("r", HeaderName::ReferTo),
            ("b", HeaderName::ReferredBy),
            ("x", HeaderName::Other),
            ("cAlL-iD", HeaderName::CallId),
            ("www-authenticate", HeaderName::WwwAuthenticate),
            ("X-Foo", HeaderName::Other),
        ] {
            assert_eq!(HeaderName::from_bytes(c.as_bytes()), h, "{c}");
        }
        let m = msg("OPTIONS sip:a@b SIP/2.0\r\nx: 1800;refresher=uas\r\nl: 0\r\n\r\n");
        assert_eq!(m.header_by_name("Session-Expires"), Some("1800;refresher=uas"));
        assert_eq!(m.header_by_name("X"), Some("1800;refresher=uas"));
        assert_eq!(HeaderName::CallId.as_str(), "Call-ID");
    }

    #[test]
    fn responses() {
        let m = msg("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.reason(), Some("Ringing"));
        assert!(!m.is_request());
        let m = msg("SIP/2.0 100\r\nl: 0\r\n\r\n");
        assert_eq!(m.reason(), Some(""));
        for bad in [
            "SIP/2.0 1000 x\r\n\r\n",
            "SIP/2.0 099 x\r\n\r\n",
            "SIP/2.0 20 x\r\n\r\n",
            "SIP/3.0 200 OK\r\n\r\n",
        ] {
            assert!(Message::parse(Bytes::from(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn datagram_content_length_rules() {
        let m = msg("OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nabcdef");
        assert_eq!(&m.body()[..], b"ab");
        assert_eq!(m.raw().len(), "OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nab".len());
        let m = msg("OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\nrest of body");
        assert_eq!(&m.body()[..], b"rest of body");
        let e = Message::parse(Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nl: 99\r\n\r\nab")).unwrap_err();
        assert_eq!(
            e.kind,
            ParseErrorKind::ContentLengthMismatch {
                declared: 99,
                available: 2
            }
        );
        let e = Message::parse(Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nl: -1\r\n\r\n")).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BadContentLength);
        assert_eq!(e.reason(), "Bad Content-Length");
        let e = Message::parse(Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nNoColon\r\n\r\n")).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BadHeader { line: 2 });
        let m = msg("\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n");
        assert!(m.raw().starts_with(b"OPTIONS"));
    }

    #[test]
    fn frame_stream() {
        let one = b"BYE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabc";
        let mut buf = Vec::new();
        buf.extend_from_slice(b"\r\n\r\n");
        buf.extend_from_slice(one);
        buf.extend_from_slice(one);
        assert_eq!(frame(&buf, 4096), Ok(Some(Framed::KeepAlive(4))));
        assert_eq!(frame(&buf[4..], 4096), Ok(Some(Framed::Message(one.len()))));
        assert_eq!(frame(&one[..10], 4096), Ok(None));
        assert_eq!(frame(&one[..one.len() - 1], 4096), Ok(None));
        assert_eq!(frame(b"", 4096), Ok(None));
        assert!(frame(b"BYE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", 4096).is_err());
        assert!(frame(one, 20).is_err());
        assert!(frame(b"BYE sip:a@b SIP/2.0\r\nl: 1\r\nl: 2\r\n\r\n", 4096).is_err());
        let m = Message::parse_stream(Bytes::from_static(one)).unwrap();
        assert_eq!(&m.body()[..], b"abc");
        let folded = b"BYE sip:a@b SIP/2.0\r\nContent-Length:\r\n  2\r\nVia: x\r\n\r\nab";
        assert_eq!(frame(folded, 4096), Ok(Some(Framed::Message(folded.len()))));
        assert_eq!(
            Message::parse(Bytes::from_static(folded)).unwrap().content_length(),
            Some(2)
        );
        assert!(frame(b"BYE sip:a@b SIP/2.0\r\nl: x\r\n\r\n", 4096).is_err());
        assert_eq!(
            frame(b"BYE sip:a@b SIP/2.0\nl: 0\n\n", 4096),
            Ok(Some(Framed::Message(26)))
        );
    }

    #[test]
    fn framer_resumes_and_matches_frame() {
        let one: &[u8] = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nContent-Length:\r\n 4\r\nX: y\r\n\r\nabcd";
        let mut stream = b"\r\n".to_vec();
        stream.extend_from_slice(one);
        stream.extend_from_slice(one);
        let mut f = Framer::new();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in &stream {
            buf.push(b);
            loop {
                let r = f.next(&buf, 4096).unwrap();
                assert_eq!(r.is_some(), frame(&buf, 4096).unwrap().is_some());
                match r {
                    Some(Framed::Message(n)) => got.push(buf.drain(..n).collect::<Vec<u8>>()),
                    Some(Framed::KeepAlive(n)) => {
                        buf.drain(..n);
                    }
                    None => break,
                }
            }
        }
        assert_eq!(got, vec![one.to_vec(), one.to_vec()]);
        assert!(buf.is_empty());
        assert!(is_keepalive(b"\r\n\r\n"));
        assert!(!is_keepalive(b""));
        assert!(!is_keepalive(b"\r\nX"));
    }

    #[test]
    fn request_line_defects_reported_by_validate() {
        let base = "\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
        let check = |line: &str| msg(&format!("{line}{base}")).validate_request();
        assert_eq!(check("OPTIONS sip:a@b SIP/2.0"), Ok(()));
        assert_eq!(check("OPTIONS  sip:a@b SIP/2.0").unwrap_err().code, 400);
        assert_eq!(check("OPTIONS sip:a@b SIP/2.0 ").unwrap_err().code, 400);
        assert_eq!(check("OPTIONS sip:a@b; lr SIP/2.0").unwrap_err().code, 400);
        assert_eq!(check("OPTIONS <sip:a@b> SIP/2.0").unwrap_err().code, 400);
        assert_eq!(check("OPTIONS sip:a@b SIP/7.0").unwrap_err().code, 505);
        assert_eq!(
            check("INVITE sip:a@b SIP/2.0").unwrap_err().reason,
            "CSeq Method Mismatch"
        );
    }

    #[test]
    fn find_byte_matches_naive() {
        let hay: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37)).collect();
        for n in 0..=255u8 {
            for start in 0..10 {
                assert_eq!(find_byte(&hay[start..], n), hay[start..].iter().position(|&b| b == n));
            }
        }
        assert_eq!(find_byte(b"\x80\x81\x0a", b'\n'), Some(2));
        assert_eq!(find_byte(b"\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0a", b'\n'), Some(8));
    }

    #[test]
    fn non_utf8_header_bytes_are_replaced_not_refused_and_binary_body_fine() {
        // An EUC-KR display name ("홍길동" is C8 AB B1 E6 B5 BF in EUC-KR) from a carrier.
        let m = Message::parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nFrom: \"\xc8\xab\xb1\xe6\xb5\xbf\" <sip:0212345678@carrier>;tag=1\r\nl: 2\r\n\r\n\xff\x00",
        ))
        .unwrap();
        let from = m.from_hdr().unwrap();
        assert_eq!(from.uri, "sip:0212345678@carrier");
        assert_eq!(from.tag(), Some("1"));
        assert!(m.header(HeaderName::From).unwrap().contains('\u{FFFD}'));
        assert_eq!(&m.body()[..], b"\xff\x00", "the body is kept as it came");
        let m = Message::parse(Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\n\xff\x00")).unwrap();
        assert_eq!(&m.body()[..], b"\xff\x00");
    }

    #[test]
    fn extension_method_is_zero_copy() {
        let m = msg("NEWMETHOD sip:a@b SIP/2.0\r\nl: 0\r\n\r\n");
        assert_eq!(m.method().unwrap().as_str(), "NEWMETHOD");
        assert_eq!(m.method(), Some(&Method::from_token(b"NEWMETHOD")));
        assert_ne!(Method::from_token(b"invite"), Method::Invite);
    }

    #[test]
    fn many_headers_spill_to_heap() {
        let mut s = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for i in 0..60 {
            s.push_str(&format!("Via: SIP/2.0/UDP h{i};branch=z9hG4bK{i}\r\n"));
        }
        s.push_str("l: 0\r\n\r\n");
        let m = msg(&s);
        assert_eq!(m.vias().count(), 60);
        assert_eq!(m.header_count(), 61);
        assert_eq!(m.vias().last().unwrap().unwrap().host, "h59");
    }
}
