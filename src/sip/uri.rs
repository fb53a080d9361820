//! URIs: `sip:`, `sips:` (RFC 3261 19.1), `tel:` (RFC 3966) and any other absolute URI.
//!
//! [`Uri::parse`] borrows from its input and never allocates. SIP URIs are split into user, password,
//! host (IPv6 references without their brackets), port, `;params` and `?headers`; `tel:` URIs put the
//! telephone-subscriber number in `user` (host is empty); other schemes keep everything in `raw` only.

use thiserror::Error;

/// The scheme of a URI. Matching is case-insensitive (`SIP:` is `Sip`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme<'a> {
    Sip,
    Sips,
    Tel,
    /// Any other syntactically valid scheme, as written.
    Other(&'a str),
}

impl<'a> Scheme<'a> {
    pub fn as_str(&self) -> &'a str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }

    /// `sip:` or `sips:`.
    pub fn is_sip(&self) -> bool {
        matches!(self, Scheme::Sip | Scheme::Sips)
    }
}

/// Why a URI was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum UriError {
    #[error("empty URI")]
    Empty,
    #[error("no scheme: expected `scheme:` at the start of the URI")]
    NoScheme,
    #[error("invalid scheme: expected ALPHA *(ALPHA / DIGIT / + / - / .) before `:`")]
    BadScheme,
    #[error("whitespace or control character at byte {0} of the URI")]
    Whitespace(usize),
    #[error("character {ch:?} not allowed unescaped at byte {at} of a SIP URI")]
    BadChar { ch: char, at: usize },
    #[error("SIP URI without a host")]
    EmptyHost,
    #[error("invalid host: expected a hostname, IPv4 address or [IPv6] reference")]
    BadHost,
    #[error("IPv6 reference without its closing `]`")]
    UnclosedIpv6,
    #[error("invalid port: expected 1 to 5 digits up to 65535")]
    BadPort,
    #[error("tel: URI without a number")]
    EmptyNumber,
}

/// A parsed URI, borrowing from the text it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: Scheme<'a>,
    /// SIP: the user part (still %-escaped; may hold `;` user parameters). tel: the number.
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// SIP: hostname or IP address; IPv6 without the brackets. Empty for other schemes.
    pub host: &'a str,
    pub port: Option<u16>,
    /// Raw URI parameters including the leading `;` (empty if none).
    pub params: &'a str,
    /// Raw URI headers after the `?` (empty if none).
    pub headers: &'a str,
    /// The whole URI as given (added to the contract: the only field meaningful for other schemes).
    pub raw: &'a str,
}

fn is_scheme_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

impl<'a> Uri<'a> {
    /// Parses an absolute URI. Whitespace anywhere is refused (RFC 4475 3.1.2.8); so are `<`, `>`, `"`
    /// and `\` inside a SIP URI, where they must be escaped (RFC 4475 3.1.2.7).
    pub fn parse(s: &'a str) -> Result<Uri<'a>, UriError> {
        if s.is_empty() {
            return Err(UriError::Empty);
        }
        if let Some(at) = s.bytes().position(|b| b <= b' ' || b == 0x7f) {
            return Err(UriError::Whitespace(at));
        }
        let colon = s.find(':').ok_or(UriError::NoScheme)?;
        let scheme_txt = &s[..colon];
        let first = scheme_txt.as_bytes().first().copied().ok_or(UriError::BadScheme)?;
        if !first.is_ascii_alphabetic() || !scheme_txt.bytes().all(is_scheme_char) {
            return Err(UriError::BadScheme);
        }
        let rest = &s[colon + 1..];
        let scheme = if scheme_txt.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_txt.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme_txt.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            Scheme::Other(scheme_txt)
        };
        let mut uri = Uri {
            scheme,
            user: None,
            password: None,
            host: "",
            port: None,
            params: "",
            headers: "",
            raw: s,
        };
        match scheme {
            Scheme::Sip | Scheme::Sips => {
                parse_sip(rest, colon + 1, &mut uri)?;
            }
            Scheme::Tel => {
                let end = rest.find(';').unwrap_or(rest.len());
                let number = &rest[..end];
                if number.is_empty() {
                    return Err(UriError::EmptyNumber);
                }
                uri.user = Some(number);
                uri.params = &rest[end..];
            }
            Scheme::Other(_) => {}
        }
        Ok(uri)
    }

    /// A URI parameter by name (case-insensitive): `Some(None)` for a parameter without a value.
    pub fn param(&self, n: &str) -> Option<Option<&'a str>> {
        uri_param(self.params, n)
    }

    /// The dialled number: the SIP user part (unescaped, without `;` user parameters, visual separators
    /// `- . ( )` and spaces removed) or the tel: number likewise. `None` if there is none.
    pub fn number(&self) -> Option<String> {
        let user = match self.scheme {
            Scheme::Sip | Scheme::Sips | Scheme::Tel => self.user?,
            Scheme::Other(_) => return None,
        };
        let user = user.split(';').next().unwrap_or("");
        let unescaped = unescape(user);
        let n: String = unescaped
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' ' | '\t'))
            .collect();
        if n.is_empty() {
            None
        } else {
            Some(n)
        }
    }

    /// `host[:port]` with IPv6 in brackets, as written in a Via or URI.
    pub fn host_port(&self) -> String {
        let mut out = String::with_capacity(self.host.len() + 8);
        if self.host.contains(':') {
            out.push('[');
            out.push_str(self.host);
            out.push(']');
        } else {
            out.push_str(self.host);
        }
        if let Some(p) = self.port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        out
    }
}

fn parse_sip<'a>(rest: &'a str, base: usize, uri: &mut Uri<'a>) -> Result<(), UriError> {
    for (i, b) in rest.bytes().enumerate() {
        if matches!(b, b'<' | b'>' | b'"' | b'\\' | b'{' | b'}' | b'|' | b'^') {
            return Err(UriError::BadChar {
                ch: b as char,
                at: base + i,
            });
        }
    }
    // userinfo: '@' may not appear unescaped anywhere else in a SIP URI.
    let hostpart = match rest.find('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(c) => {
                    uri.user = Some(&userinfo[..c]);
                    uri.password = Some(&userinfo[c + 1..]);
                }
                None => uri.user = Some(userinfo),
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    let (hostport, after) = if let Some(inner) = hostpart.strip_prefix('[') {
        let close = inner.find(']').ok_or(UriError::UnclosedIpv6)?;
        let v6 = &inner[..close];
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(UriError::BadHost);
        }
        uri.host = v6;
        let after = &inner[close + 1..];
        let end = after.find([';', '?']).unwrap_or(after.len());
        let (portpart, tail) = after.split_at(end);
        if !portpart.is_empty() {
            let p = portpart.strip_prefix(':').ok_or(UriError::BadHost)?;
            uri.port = Some(parse_port(p)?);
        }
        ("", tail)
    } else {
        let end = hostpart.find([';', '?']).unwrap_or(hostpart.len());
        hostpart.split_at(end)
    };
    if !hostport.is_empty() || uri.host.is_empty() {
        let (h, p) = match hostport.find(':') {
            Some(c) => (&hostport[..c], Some(&hostport[c + 1..])),
            None => (hostport, None),
        };
        if h.is_empty() {
            return Err(UriError::EmptyHost);
        }
        if !h.bytes().all(is_host_char) {
            return Err(UriError::BadHost);
        }
        uri.host = h;
        if let Some(p) = p {
            uri.port = Some(parse_port(p)?);
        }
    }
    let (params, headers) = match after.find('?') {
        Some(q) => (&after[..q], &after[q + 1..]),
        None => (after, ""),
    };
    uri.params = params;
    uri.headers = headers;
    Ok(())
}

fn parse_port(p: &str) -> Result<u16, UriError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::BadPort);
    }
    p.parse::<u16>().map_err(|_| UriError::BadPort)
}

/// Looks up a `;name[=value]` parameter in a raw URI parameter list (no LWS inside URIs).
pub fn uri_param<'a>(params: &'a str, n: &str) -> Option<Option<&'a str>> {
    for p in params.split(';') {
        if p.is_empty() {
            continue;
        }
        let (name, value) = match p.find('=') {
            Some(e) => (&p[..e], Some(&p[e + 1..])),
            None => (p, None),
        };
        if name.eq_ignore_ascii_case(n) {
            return Some(value);
        }
    }
    None
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as is (RFC 4475 3.1.1.5).
/// Invalid UTF-8 after decoding is replaced with U+FFFD.
pub fn unescape(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&x| hex(x)), b.get(i + 2).and_then(|&x| hex(x))) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The socket address of a `sip:`/`sips:` URI whose host is an IP literal (default port 5060/5061);
/// `None` for other schemes and for host names (callgate does no DNS).
pub fn ip_socket_addr(uri: &str) -> Option<std::net::SocketAddr> {
    let u = Uri::parse(uri.trim()).ok()?;
    let default = match u.scheme {
        Scheme::Sip => 5060,
        Scheme::Sips => 5061,
        _ => return None,
    };
    let ip: std::net::IpAddr = u.host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(std::net::SocketAddr::new(ip, u.port.unwrap_or(default)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_full() {
        let u = Uri::parse("sip:alice:secret@Example.COM:5070;transport=tcp;lr?subject=x&h=y").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("secret"));
        assert_eq!(u.host, "Example.COM");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params, ";transport=tcp;lr");
        assert_eq!(u.headers, "subject=x&h=y");
        assert_eq!(u.param("TRANSPORT"), Some(Some("tcp")));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.param("maddr"), None);
    }

    #[test]
    fn ipv6_reference() {
        let u = Uri::parse("sips:bob@[2001:db8::1]:5061;transport=tls").unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.host, "2001:db8::1");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.host_port(), "[2001:db8::1]:5061");
        let u = Uri::parse("sip:[::1]").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, None);
        assert_eq!(Uri::parse("sip:[2001:db8::1"), Err(UriError::UnclosedIpv6));
        assert_eq!(Uri::parse("sip:[2001:db8::1]x"), Err(UriError::BadHost));
        assert_eq!(Uri::parse("sip:[zz]"), Err(UriError::BadHost));
    }

    #[test]
    fn tel_uri_and_numbers() {
        let u = Uri::parse("tel:+82-2-120;phone-context=example.kr").unwrap();
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user, Some("+82-2-120"));
        assert_eq!(u.host, "");
        assert_eq!(u.param("phone-context"), Some(Some("example.kr")));
        assert_eq!(u.number().as_deref(), Some("+822120"));
        let u = Uri::parse("sip:+1.(650)555-0100;npdi@gw.example.net;user=phone").unwrap();
        assert_eq!(u.number().as_deref(), Some("+16505550100"));
        assert_eq!(u.param("user"), Some(Some("phone")));
        let u = Uri::parse("sip:%31%32%30@example.com").unwrap();
        assert_eq!(u.number().as_deref(), Some("120"));
        assert_eq!(Uri::parse("sip:example.com").unwrap().number(), None);
        assert_eq!(Uri::parse("tel:;x"), Err(UriError::EmptyNumber));
    }

    #[test]
    fn escaped_users() {
        let u = Uri::parse("sip:sips%3Auser%40example.com@example.net").unwrap();
        assert_eq!(u.user, Some("sips%3Auser%40example.com"));
        assert_eq!(u.host, "example.net");
        assert_eq!(unescape(u.user.unwrap()), "sips:user@example.com");
        assert_eq!(unescape("I%20have%20spaces"), "I have spaces");
        assert_eq!(unescape("%Z%45"), "%ZE");
        assert_eq!(unescape("null-%00-null"), "null-\0-null");
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host, "example.com");
    }

    #[test]
    fn other_schemes_and_errors() {
        let u = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(u.scheme, Scheme::Other("soap.beep"));
        assert_eq!(u.raw, "soap.beep://192.0.2.103:3002");
        assert_eq!(u.host, "");
        assert!(matches!(
            Uri::parse("nobodyKnowsThisScheme:x").unwrap().scheme,
            Scheme::Other(_)
        ));
        assert_eq!(Uri::parse("SIP:a@b").unwrap().scheme, Scheme::Sip);
        assert_eq!(Uri::parse(""), Err(UriError::Empty));
        assert_eq!(Uri::parse("<sip:a@b>"), Err(UriError::BadScheme));
        assert_eq!(Uri::parse("no-colon"), Err(UriError::NoScheme));
        assert_eq!(Uri::parse("sip:user@example.com; lr"), Err(UriError::Whitespace(21)));
        assert_eq!(Uri::parse("sip:a@b:99999"), Err(UriError::BadPort));
        assert_eq!(Uri::parse("sip:a@b:"), Err(UriError::BadPort));
        assert_eq!(Uri::parse("sip:a@"), Err(UriError::EmptyHost));
        assert_eq!(Uri::parse("sip:a@b c"), Err(UriError::Whitespace(7)));
        assert!(matches!(Uri::parse("sip:a@b>"), Err(UriError::BadChar { .. })));
    }

    #[test]
    fn unusual_but_valid_user_and_password() {
        let s = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
        let u = Uri::parse(s).unwrap();
        assert_eq!(u.user, Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
        assert_eq!(u.password, Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"));
        assert_eq!(u.host, "example.com");
    }
}
