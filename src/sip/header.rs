//! Typed, borrowing views of header values: Via, name-addr (From/To/Contact/Route), CSeq.
//!
//! Views are parsed on demand from the trimmed value text [`crate::sip::msg::Message`] hands out.
//! Folded lines (CRLF followed by SP/HT) are still inside that text; here they count as LWS.
//! Parameter lists allow LWS around `;` and `=` (RFC 3261 25.1 `SEMI`/`EQUAL`) and quoted values.

use thiserror::Error;

use super::msg::Method;
use super::uri::{Uri, UriError};

/// What is wrong with a header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("empty value")]
    Empty,
    #[error("expected a protocol token then `/` in the sent-protocol of a Via")]
    BadSentProtocol,
    #[error("expected SIP/2.0 as the Via sent-protocol")]
    BadViaVersion,
    #[error("expected a host (name, IPv4 or [IPv6]) in the Via sent-by")]
    BadSentBy,
    #[error("expected a port of 1 to 5 digits up to 65535")]
    BadPort,
    #[error("expected `;` or the end of the value after the sent-by or URI, found other text")]
    TrailingJunk,
    #[error("empty or invalid parameter in `;name[=value]` list")]
    BadParam,
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("display name must be tokens or a quoted string")]
    BadDisplayName,
    #[error("`<` without the closing `>`")]
    UnclosedAngle,
    #[error("whitespace inside <> around the URI")]
    SpaceInAngle,
    #[error("a URI holding `,` `?` or `;` must be enclosed in <>")]
    AddrSpecNeedsAngle,
    #[error("bad URI: {0}")]
    Uri(UriError),
    #[error("expected a sequence number (up to 2^32-1) then the method")]
    BadCSeqNumber,
    #[error("expected the method token after the CSeq number")]
    BadCSeqMethod,
}

#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 `token` characters.
#[inline]
pub fn is_token_char(b: u8) -> bool {
    TOKEN[b as usize]
}

const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~');
        i += 1;
    }
    t
};

/// Trims SP, HT, CR and LF from both ends (LWS including folds).
#[inline]
pub fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// Index just past a quoted string starting at `start` (which must hold `"`), honouring `\` escapes.
fn skip_quoted(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Splits a header value at commas that are outside quoted strings and `<>`. Elements are LWS-trimmed;
/// empty elements are skipped.
#[derive(Clone, Debug)]
pub struct CommaSplit<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> CommaSplit<'a> {
    pub fn new(s: &'a str) -> Self {
        CommaSplit { s, pos: 0 }
    }
}

impl<'a> Iterator for CommaSplit<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let b = self.s.as_bytes();
        while self.pos < b.len() {
            let start = self.pos;
            let mut i = start;
            let mut angle = false;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = skip_quoted(b, i).unwrap_or(b.len());
                        continue;
                    }
                    b'<' => angle = true,
                    b'>' => angle = false,
                    b',' if !angle => break,
                    _ => {}
                }
                i += 1;
            }
            let end = i.min(b.len());
            self.pos = end + 1;
            let elem = trim_lws(self.s.get(start..end).unwrap_or(""));
            if !elem.is_empty() {
                return Some(elem);
            }
        }
        None
    }
}

/// Splits a raw parameter list (`;a=1 ; b ;c="x;y"`) into LWS-trimmed elements, skipping text before
/// the first `;`. Elements may be empty (which [`check_params`] refuses).
fn split_semis(s: &str) -> impl Iterator<Item = &str> {
    let b = s.as_bytes();
    let mut pos = match b.iter().position(|&c| c == b';') {
        Some(p) => p + 1,
        None => b.len() + 1,
    };
    std::iter::from_fn(move || {
        if pos > b.len() {
            return None;
        }
        let start = pos;
        let mut i = start;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i = skip_quoted(b, i).unwrap_or(b.len());
                    continue;
                }
                b';' => break,
                _ => {}
            }
            i += 1;
        }
        let end = i.min(b.len());
        pos = end + 1;
        Some(trim_lws(s.get(start..end).unwrap_or("")))
    })
}

/// Splits one parameter into its trimmed name and value (quotes kept on a quoted value).
fn split_param(p: &str) -> (&str, Option<&str>) {
    match p.find('=') {
        Some(e) => (trim_lws(&p[..e]), Some(trim_lws(&p[e + 1..]))),
        None => (p, None),
    }
}

fn is_gen_value_char(b: u8) -> bool {
    is_token_char(b) || matches!(b, b':' | b'[' | b']')
}

/// Validates a raw parameter list: LWS, then zero or more `; name [= value]` with a token name and a
/// token / host / quoted-string value.
pub fn check_params(s: &str) -> Result<(), HeaderError> {
    check_params_with(s, |_, _| {})
}

/// [`check_params`], handing every parameter (trimmed name, trimmed value with its quotes) to
/// `visit` as it goes, so that a caller can pick parameters out in the same pass.
fn check_params_with<'a>(s: &'a str, mut visit: impl FnMut(&'a str, Option<&'a str>)) -> Result<(), HeaderError> {
    let t = trim_lws(s);
    if t.is_empty() {
        return Ok(());
    }
    if !t.starts_with(';') {
        return Err(HeaderError::TrailingJunk);
    }
    for p in split_semis(t) {
        let (name, value) = split_param(p);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(HeaderError::BadParam);
        }
        if let Some(v) = value {
            let vb = v.as_bytes();
            if vb.first() == Some(&b'"') {
                if skip_quoted(vb, 0) != Some(vb.len()) {
                    return Err(HeaderError::BadParam);
                }
            } else if v.is_empty() || !vb.iter().all(|&c| is_gen_value_char(c)) {
                return Err(HeaderError::BadParam);
            }
        }
        visit(name, value);
    }
    Ok(())
}

/// A parameter value as [`param`] returns it: without the quotes of a quoted value.
fn unquote(v: &str) -> &str {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Iterates `(name, value)` pairs of a raw parameter list (LWS trimmed, quotes kept on quoted values).
pub fn params_iter(params: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    split_semis(params).filter(|p| !p.is_empty()).map(split_param)
}

/// Looks up a parameter (case-insensitive name) in a raw LWS-tolerant list. `Some(None)` when present
/// without a value; a quoted value is returned without its quotes (escapes kept).
pub fn param<'a>(params: &'a str, n: &str) -> Option<Option<&'a str>> {
    for p in split_semis(params) {
        let (name, value) = split_param(p);
        if name.eq_ignore_ascii_case(n) {
            return Some(value.map(unquote));
        }
    }
    None
}

/// `CSeq: seq method`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// Parses a CSeq value. The number must fit in 32 bits (RFC 4475 3.1.2.4 refuses more).
    pub fn parse(v: &str) -> Result<CSeq, HeaderError> {
        let t = trim_lws(v);
        let b = t.as_bytes();
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(HeaderError::BadCSeqNumber);
        }
        let mut seq: u64 = 0;
        for &d in &b[..digits] {
            seq = seq * 10 + u64::from(d - b'0');
            if seq > u64::from(u32::MAX) {
                return Err(HeaderError::BadCSeqNumber);
            }
        }
        let rest = &t[digits..];
        let m = trim_lws(rest);
        if m.len() == rest.len() {
            // no LWS between the number and the method
            return Err(HeaderError::BadCSeqNumber);
        }
        if m.is_empty() || !m.bytes().all(is_token_char) {
            return Err(HeaderError::BadCSeqMethod);
        }
        Ok(CSeq {
            seq: seq as u32,
            method: Method::from_token(m.as_bytes()),
        })
    }
}

/// One Via element: `SIP/2.0/transport sent-by *(; via-param)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: &'a str,
    /// Host as written; IPv6 without the brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    pub branch: Option<&'a str>,
    pub received: Option<&'a str>,
    /// `None`: no rport; `Some(None)`: `;rport` without a value (a request); `Some(Some(p))`: filled in.
    pub rport: Option<Option<u16>>,
    /// The raw `;...` parameter text (may hold LWS and folds).
    pub params: &'a str,
}

struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn skip_lws(&mut self) -> bool {
        let s = self.i;
        while self.i < self.b.len() && is_lws(self.b[self.i]) {
            self.i += 1;
        }
        self.i > s
    }
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> (usize, usize) {
        let s = self.i;
        while self.i < self.b.len() && f(self.b[self.i]) {
            self.i += 1;
        }
        (s, self.i)
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
}

impl<'a> Via<'a> {
    /// Parses one Via element (one comma-separated value).
    pub fn parse(v: &'a str) -> Result<Via<'a>, HeaderError> {
        let v = trim_lws(v);
        if v.is_empty() {
            return Err(HeaderError::Empty);
        }
        let mut c = Cur { b: v.as_bytes(), i: 0 };
        let (ps, pe) = c.take_while(is_token_char);
        c.skip_lws();
        if pe == ps || !c.eat(b'/') {
            return Err(HeaderError::BadSentProtocol);
        }
        c.skip_lws();
        let (vs, ve) = c.take_while(is_token_char);
        c.skip_lws();
        if ve == vs || !c.eat(b'/') {
            return Err(HeaderError::BadSentProtocol);
        }
        if !v[ps..pe].eq_ignore_ascii_case("SIP") || &v[vs..ve] != "2.0" {
            return Err(HeaderError::BadViaVersion);
        }
        c.skip_lws();
        let (ts, te) = c.take_while(is_token_char);
        if te == ts {
            return Err(HeaderError::BadSentProtocol);
        }
        if !c.skip_lws() {
            return Err(HeaderError::BadSentBy);
        }
        let host = if c.eat(b'[') {
            let (hs, he) = c.take_while(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if he == hs || !c.eat(b']') {
                return Err(HeaderError::BadSentBy);
            }
            &v[hs..he]
        } else {
            let (hs, he) = c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if he == hs {
                return Err(HeaderError::BadSentBy);
            }
            &v[hs..he]
        };
        c.skip_lws();
        let mut port = None;
        if c.eat(b':') {
            c.skip_lws();
            let (ds, de) = c.take_while(|b| b.is_ascii_digit());
            let p = &v[ds..de];
            if p.is_empty() || p.len() > 5 {
                return Err(HeaderError::BadPort);
            }
            port = Some(p.parse::<u16>().map_err(|_| HeaderError::BadPort)?);
            c.skip_lws();
        }
        let params = &v[c.i..];
        // One pass validates the list and picks out the first rport, branch and received (what
        // `param` would find).
        let (mut rport, mut branch, mut received) = (None, None, None);
        check_params_with(params, |name, value| {
            let slot = if name.eq_ignore_ascii_case("branch") {
                &mut branch
            } else if name.eq_ignore_ascii_case("rport") {
                &mut rport
            } else if name.eq_ignore_ascii_case("received") {
                &mut received
            } else {
                return;
            };
            if slot.is_none() {
                *slot = Some(value.map(unquote));
            }
        })?;
        let rport = match rport {
            None => None,
            Some(None) => Some(None),
            Some(Some(p)) => Some(Some(p.parse::<u16>().map_err(|_| HeaderError::BadPort)?)),
        };
        Ok(Via {
            transport: &v[ts..te],
            host,
            port,
            branch: branch.flatten(),
            received: received.flatten(),
            rport,
            params,
        })
    }

    /// `host[:port]`, host lower-cased, IPv6 in brackets: the canonical form to compare sent-by values.
    pub fn sent_by(&self) -> String {
        let mut out = String::with_capacity(self.host.len() + 8);
        let v6 = self.host.contains(':');
        if v6 {
            out.push('[');
        }
        out.extend(self.host.chars().map(|c| c.to_ascii_lowercase()));
        if v6 {
            out.push(']');
        }
        if let Some(p) = self.port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        out
    }

    /// A Via parameter by name (case-insensitive); `Some(None)` when it has no value.
    pub fn param(&self, n: &str) -> Option<Option<&'a str>> {
        param(self.params, n)
    }

    /// RFC 3261 17.2.3: the branch starts with the magic cookie `z9hG4bK` and has something after it.
    /// A bare `z9hG4bK` carries no transaction identifier (RFC 4475 3.2.1): treat it RFC 2543 style.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch.is_some_and(|b| b.len() > 7 && b.starts_with("z9hG4bK"))
    }
}

/// A name-addr or addr-spec with header parameters: From, To, Contact, Route, Record-Route, Refer-To.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name: inside the quotes for a quoted one (backslash escapes kept, see
    /// [`NameAddr::display_unescaped`]), else the tokens as written. `None` if absent.
    pub display: Option<&'a str>,
    /// The URI text (without `<>`); `*` for a wildcard Contact.
    pub uri: &'a str,
    /// Raw header parameters (`;tag=...`), possibly with LWS.
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// Parses one name-addr / addr-spec element. The URI must parse as an absolute URI; in the addr-spec
    /// form, `;` starts header parameters and a `?` or `,` is refused (RFC 3261 20.10).
    pub fn parse(v: &'a str) -> Result<NameAddr<'a>, HeaderError> {
        let v = trim_lws(v);
        let b = v.as_bytes();
        if b.is_empty() {
            return Err(HeaderError::Empty);
        }
        let display;
        let lt;
        if b[0] == b'"' {
            let end = skip_quoted(b, 0).ok_or(HeaderError::UnterminatedQuote)?;
            display = Some(&v[1..end - 1]);
            let mut c = Cur { b, i: end };
            c.skip_lws();
            if !c.eat(b'<') {
                return Err(HeaderError::BadDisplayName);
            }
            lt = c.i - 1;
        } else {
            // name-addr if a '<' comes before any ';' (a '<' cannot appear in an addr-spec).
            match b.iter().position(|&x| x == b'<' || x == b';') {
                Some(p) if b[p] == b'<' => {
                    let d = trim_lws(&v[..p]);
                    // Tokens and LWS; non-ASCII UTF-8 is tolerated too (unambiguous, and sent unquoted by
                    // some carriers), while ASCII separators such as `,` `"` `@` are refused (RFC 4475 3.1.2.15).
                    if !d.bytes().all(|x| is_token_char(x) || is_lws(x) || x >= 0x80) {
                        return Err(HeaderError::BadDisplayName);
                    }
                    display = if d.is_empty() { None } else { Some(d) };
                    lt = p;
                }
                _ => {
                    if b.contains(&b'"') {
                        return Err(HeaderError::UnterminatedQuote);
                    }
                    let end = b.iter().position(|&x| x == b';').unwrap_or(b.len());
                    let uri = trim_lws(&v[..end]);
                    if uri == "*" {
                        let params = &v[end..];
                        check_params(params)?;
                        return Ok(NameAddr {
                            display: None,
                            uri,
                            params,
                        });
                    }
                    if uri.bytes().any(|x| x == b'?' || x == b',') {
                        return Err(HeaderError::AddrSpecNeedsAngle);
                    }
                    if uri.bytes().any(|x| is_lws(x) || x == b'>') {
                        return Err(HeaderError::BadDisplayName);
                    }
                    Uri::parse(uri).map_err(HeaderError::Uri)?;
                    let params = &v[end..];
                    check_params(params)?;
                    return Ok(NameAddr {
                        display: None,
                        uri,
                        params,
                    });
                }
            }
        }
        let rel = b[lt + 1..]
            .iter()
            .position(|&x| x == b'>')
            .ok_or(HeaderError::UnclosedAngle)?;
        let gt = lt + 1 + rel;
        let uri = &v[lt + 1..gt];
        if uri.bytes().any(is_lws) {
            return Err(HeaderError::SpaceInAngle);
        }
        Uri::parse(uri).map_err(HeaderError::Uri)?;
        let params = &v[gt + 1..];
        check_params(params)?;
        Ok(NameAddr { display, uri, params })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        param(self.params, "tag").flatten()
    }

    /// A header parameter by name (case-insensitive); `Some(None)` when it has no value.
    pub fn param(&self, n: &str) -> Option<Option<&'a str>> {
        param(self.params, n)
    }

    /// The URI, parsed.
    pub fn parsed_uri(&self) -> Result<Uri<'a>, UriError> {
        Uri::parse(self.uri)
    }

    /// A wildcard `Contact: *`.
    pub fn is_star(&self) -> bool {
        self.uri == "*"
    }

    /// The display name with quoted-pair escapes resolved.
    pub fn display_unescaped(&self) -> Option<String> {
        let d = self.display?;
        let mut out = String::with_capacity(d.len());
        let mut esc = false;
        for ch in d.chars() {
            if esc {
                out.push(ch);
                esc = false;
            } else if ch == '\\' {
                esc = true;
            } else {
                out.push(ch);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_basic_and_ipv6() {
        let v = Via::parse("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKabc;rport;received=2001:db8::9").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "2001:db8::1");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch, Some("z9hG4bKabc"));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.received, Some("2001:db8::9"));
        assert_eq!(v.sent_by(), "[2001:db8::1]:5060");
        assert!(v.is_rfc3261_branch());
        let v = Via::parse("SIP/2.0/TCP Host.Example.COM;rport=5070;branch=1").unwrap();
        assert_eq!(v.sent_by(), "host.example.com");
        assert_eq!(v.rport, Some(Some(5070)));
        assert!(!v.is_rfc3261_branch());
        assert_eq!(v.param("RPORT"), Some(Some("5070")));
    }

    #[test]
    fn via_lws_everywhere() {
        let v = Via::parse("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.branch, Some("390skdjuw"));
        let v = Via::parse("SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239").unwrap();
        assert_eq!(v.branch, Some("z9hG4bK30239"));
        let v = Via::parse("SIP/2.0/UDP h : 5080 ; maddr = 1.2.3.4").unwrap();
        assert_eq!(v.port, Some(5080));
        assert_eq!(v.param("maddr"), Some(Some("1.2.3.4")));
    }

    #[test]
    fn via_errors() {
        assert_eq!(Via::parse("SIP/2.0/UDP 192.0.2.15;;"), Err(HeaderError::BadParam));
        assert_eq!(Via::parse(";"), Err(HeaderError::BadSentProtocol));
        assert_eq!(Via::parse("SIP/7.0/UDP h"), Err(HeaderError::BadViaVersion));
        assert_eq!(Via::parse("SIP/2.0/UDP"), Err(HeaderError::BadSentBy));
        assert_eq!(Via::parse("SIP/2.0/UDP [::1"), Err(HeaderError::BadSentBy));
        assert_eq!(Via::parse("SIP/2.0/UDP h:70000"), Err(HeaderError::BadPort));
        assert_eq!(Via::parse("SIP/2.0/UDP h junk"), Err(HeaderError::TrailingJunk));
        assert_eq!(Via::parse(""), Err(HeaderError::Empty));
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423").unwrap();
        assert_eq!(n.display, Some("Bell, Alexander"));
        assert_eq!(n.uri, "sip:a.g.bell@example.com");
        assert_eq!(n.tag(), Some("433423"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display, Some("caller"));
        let n = NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.display, None);
        assert_eq!(n.uri, "sip:vivekg@chair-dnrc.example.com");
        assert_eq!(n.tag(), Some("1918181833n"));
        let n = NameAddr::parse("\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8")
            .unwrap();
        assert_eq!(n.display, Some("J Rosenberg \\\\\\\""));
        assert_eq!(n.display_unescaped().as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert_eq!(n.params, "");
        assert_eq!(n.parsed_uri().unwrap().param("unknownparam"), Some(None));
        let n = NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert_eq!(n.param("unknownparam"), Some(None));
        assert_eq!(n.uri, "sip:+19725552222@gw1.example.net");
        let n = NameAddr::parse("*").unwrap();
        assert!(n.is_star());
        let n = NameAddr::parse("A  B <tel:+82-2-120>;x=\"a;b\";tag=1").unwrap();
        assert_eq!(n.display, Some("A  B"));
        assert_eq!(n.param("x"), Some(Some("a;b")));
        assert_eq!(n.tag(), Some("1"));
    }

    #[test]
    fn name_addr_errors() {
        assert_eq!(
            NameAddr::parse("\"Mr. J. User <sip:j.user@example.com>"),
            Err(HeaderError::UnterminatedQuote)
        );
        assert_eq!(
            NameAddr::parse("Bell, Alexander <sip:a@b>"),
            Err(HeaderError::BadDisplayName)
        );
        assert_eq!(NameAddr::parse("a@b <sip:a@b>"), Err(HeaderError::BadDisplayName));
        // Unquoted UTF-8 display names are tolerated.
        assert_eq!(NameAddr::parse("김민수 <sip:a@b>").unwrap().display, Some("김민수"));
        assert_eq!(
            NameAddr::parse("\"W\" < sip:t.watson@example.org >"),
            Err(HeaderError::SpaceInAngle)
        );
        assert_eq!(
            NameAddr::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
            Err(HeaderError::AddrSpecNeedsAngle)
        );
        assert_eq!(
            NameAddr::parse("\"Joe\" <sip:joe@example.org>;;;;"),
            Err(HeaderError::BadParam)
        );
        assert_eq!(NameAddr::parse("<sip:a@b"), Err(HeaderError::UnclosedAngle));
        assert!(matches!(NameAddr::parse("<nope>"), Err(HeaderError::Uri(_))));
        assert_eq!(NameAddr::parse(""), Err(HeaderError::Empty));
    }

    #[test]
    fn comma_split_respects_quotes_and_angles() {
        let v: Vec<_> = CommaSplit::new("\"a,b\" <sip:x@y;p=1,2>, <sip:z@w> ,, ,\r\n <sip:q@r>").collect();
        assert_eq!(v, vec!["\"a,b\" <sip:x@y;p=1,2>", "<sip:z@w>", "<sip:q@r>"]);
        let v: Vec<_> = CommaSplit::new("\"unterminated, x").collect();
        assert_eq!(v, vec!["\"unterminated, x"]);
        let v: Vec<_> = CommaSplit::new("\"esc \\\" , q\", b").collect();
        assert_eq!(v, vec!["\"esc \\\" , q\"", "b"]);
        assert_eq!(CommaSplit::new(";;,,;;,;").count(), 3);
    }

    #[test]
    fn cseq_values() {
        assert_eq!(
            CSeq::parse("0009\r\n  INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert_eq!(CSeq::parse("4294967295 BYE").unwrap().seq, u32::MAX);
        assert_eq!(CSeq::parse("4294967296 BYE"), Err(HeaderError::BadCSeqNumber));
        assert_eq!(
            CSeq::parse("36893488147419103232 REGISTER"),
            Err(HeaderError::BadCSeqNumber)
        );
        assert_eq!(CSeq::parse("1INVITE"), Err(HeaderError::BadCSeqNumber));
        assert_eq!(CSeq::parse("1 "), Err(HeaderError::BadCSeqNumber));
        assert_eq!(CSeq::parse("1 IN VITE"), Err(HeaderError::BadCSeqMethod));
        assert!(matches!(CSeq::parse("5 FOO").unwrap().method, Method::Extension(_)));
    }

    #[test]
    fn params_without_values() {
        assert_eq!(param(";lr;transport=udp", "lr"), Some(None));
        assert_eq!(param(" ; q = 0.33", "q"), Some(Some("0.33")));
        assert!(check_params(";a;b=c ; d = \"x y\"").is_ok());
        let all: Vec<_> = params_iter(";lr ; maddr = 10.0.0.1;x=\"q;r\"").collect();
        assert_eq!(all, [("lr", None), ("maddr", Some("10.0.0.1")), ("x", Some("\"q;r\""))]);
        assert_eq!(check_params(";a=\"x"), Err(HeaderError::BadParam));
        assert_eq!(check_params("x"), Err(HeaderError::TrailingJunk));
        assert_eq!(check_params(";a="), Err(HeaderError::BadParam));
    }
}
