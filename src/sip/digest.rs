//! Digest authentication (RFC 7616 / RFC 2617, as SIP uses it per RFC 3261 §22.4): MD5 and SHA-256,
//! qop=auth only.
//!
//! - [`ha1`], [`response`]: the hashes. `response = H(HA1:nonce:nc:cnonce:qop:H(method:uri))` with every
//!   intermediate hash written as lower-case hex ([`hex`]).
//! - [`Credentials`]: an `Authorization` / `Proxy-Authorization` value, parsed ([`Credentials::parse`],
//!   typed [`AuthError`]s) or built by a client ([`Credentials::answer`], for tests and UAC use).
//! - [`Challenge`]: a `WWW-Authenticate` value, written ([`Challenge::to_header_value`]) and parsed.
//! - [`hmac_sha256`] (RFC 2104) and [`ct_eq`]: for stateless nonces and comparing responses.
//!
//! Unsupported on purpose (a conforming client never sends them, since we never offer them): the
//! `-sess` algorithms, `qop=auth-int`, `userhash=true` and `username*` (RFC 7616 §3.4.4).

use md5::Md5;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// A digest hash algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The `algorithm=` token.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Maps an `algorithm=` token (case-insensitive); `None` for anything else (including `-sess`).
    pub fn from_token(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Output length in bytes (16 or 32).
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha256 => 32,
        }
    }

    /// H(data) over the concatenation of `parts`.
    pub fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Algorithm::Md5 => {
                let mut h = Md5::new();
                for p in parts {
                    h.update(p);
                }
                h.finalize().to_vec()
            }
            Algorithm::Sha256 => {
                let mut h = Sha256::new();
                for p in parts {
                    h.update(p);
                }
                h.finalize().to_vec()
            }
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.token())
    }
}

/// H(user:realm:password), raw bytes (16 for MD5, 32 for SHA-256).
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> Vec<u8> {
    alg.hash(&[user.as_bytes(), b":", realm.as_bytes(), b":", password.as_bytes()])
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

/// Decodes hex (either case); `None` on an odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    b.chunks(2).map(|p| Some(nib(p[0])? << 4 | nib(p[1])?)).collect()
}

/// The qop=auth request-digest (RFC 7616 §3.4.1):
/// `H(hex(HA1):nonce:nc:cnonce:qop:hex(H(method:uri)))`, as lower-case hex. `nc` is the 8-hex-digit
/// count as sent; `uri` the digest-uri as sent (not the Request-URI).
#[allow(clippy::too_many_arguments)]
pub fn response(
    alg: Algorithm,
    ha1: &[u8],
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = hex(&alg.hash(&[method.as_bytes(), b":", uri.as_bytes()]));
    let ha1 = hex(ha1);
    hex(&alg.hash(&[
        ha1.as_bytes(),
        b":",
        nonce.as_bytes(),
        b":",
        nc.as_bytes(),
        b":",
        cnonce.as_bytes(),
        b":",
        qop.as_bytes(),
        b":",
        ha2.as_bytes(),
    ]))
}

/// HMAC-SHA-256 (RFC 2104) of the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let ih = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(ih);
    outer.finalize().into()
}

/// Equality whose time depends only on the lengths, not on where the first difference is.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an `Authorization` (or `WWW-Authenticate`) value could not be used. The client sent it; each
/// variant says what was expected and what came (long values cut to 64 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("client sent an empty credentials value: expected `Digest` and parameters")]
    Empty,
    #[error("client used auth scheme `{found}`: expected `Digest`")]
    NotDigest { found: String },
    #[error("client credentials malformed at byte {at}: expected {expected}")]
    Syntax { at: usize, expected: &'static str },
    #[error("client credentials: quoted string opened at byte {at} is not closed")]
    UnterminatedQuote { at: usize },
    #[error("client credentials give `{param}` more than once")]
    Duplicate { param: String },
    #[error("client credentials lack `{param}`")]
    Missing { param: &'static str },
    #[error("client sent nc `{found}`: expected exactly 8 hex digits")]
    BadNonceCount { found: String },
    #[error("client sent algorithm `{found}`: expected MD5 or SHA-256")]
    UnsupportedAlgorithm { found: String },
    #[error("client sent qop `{found}`: expected auth")]
    UnsupportedQop { found: String },
    #[error("client sent response `{found}`: expected 32 (MD5) or 64 (SHA-256) hex digits")]
    BadResponse { found: String },
    #[error("client sent qop without cnonce and nc: both are required with qop (RFC 7616 §3.4)")]
    QopWithoutCnonce,
    #[error("client asked for {what}: not supported (expected a plain username, no userhash)")]
    Unsupported { what: &'static str },
}

/// Cuts a value to at most 64 bytes (on a char boundary) for an error message.
fn clip(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_token(b: u8) -> bool {
    super::header::is_token_char(b)
}

/// One `name=value` auth-param; the value unquoted (quoted-pair escapes resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
struct AuthParam<'a> {
    name: &'a str,
    value: String,
}

/// Splits `scheme 1*SP auth-param *(, auth-param)` (RFC 7235 §2.1, RFC 3261 §25.1 LWS allowed around
/// `=` and `,`; empty list elements tolerated).
fn parse_auth_params(v: &str) -> Result<(&str, Vec<AuthParam<'_>>), AuthError> {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() && is_lws(b[i]) {
        i += 1;
    }
    let s0 = i;
    while i < b.len() && is_token(b[i]) {
        i += 1;
    }
    if i == s0 {
        return if b[s0..].is_empty() {
            Err(AuthError::Empty)
        } else {
            Err(AuthError::Syntax {
                at: s0,
                expected: "an auth scheme token",
            })
        };
    }
    let scheme = &v[s0..i];
    let mut params = Vec::new();
    if i < b.len() && !is_lws(b[i]) {
        return Err(AuthError::Syntax {
            at: i,
            expected: "whitespace after the auth scheme",
        });
    }
    loop {
        while i < b.len() && (is_lws(b[i]) || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ns = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        if i == ns {
            return Err(AuthError::Syntax {
                at: i,
                expected: "a parameter name",
            });
        }
        let name = &v[ns..i];
        while i < b.len() && is_lws(b[i]) {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return Err(AuthError::Syntax {
                at: i,
                expected: "`=` after the parameter name",
            });
        }
        i += 1;
        while i < b.len() && is_lws(b[i]) {
            i += 1;
        }
        let value = if i < b.len() && b[i] == b'"' {
            let open = i;
            i += 1;
            let mut out = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err(AuthError::UnterminatedQuote { at: open }),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let Some(&c) = b.get(i + 1) else {
                            return Err(AuthError::UnterminatedQuote { at: open });
                        };
                        out.push(c);
                        i += 2;
                    }
                    Some(&c) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            // Bytes came from a &str and escapes only drop ASCII backslashes: still UTF-8.
            String::from_utf8(out).map_err(|_| AuthError::Syntax {
                at: open,
                expected: "UTF-8 text inside the quotes",
            })?
        } else {
            let vs = i;
            // token, or the unquoted nc / base64-ish nonce values some clients send.
            while i < b.len() && !is_lws(b[i]) && b[i] != b',' && b[i] != b'"' {
                i += 1;
            }
            if i == vs {
                return Err(AuthError::Syntax {
                    at: i,
                    expected: "a token or quoted-string value",
                });
            }
            v[vs..i].to_owned()
        };
        while i < b.len() && is_lws(b[i]) {
            i += 1;
        }
        if i < b.len() && b[i] != b',' {
            return Err(AuthError::Syntax {
                at: i,
                expected: "`,` between parameters",
            });
        }
        if params.iter().any(|p: &AuthParam<'_>| p.name.eq_ignore_ascii_case(name)) {
            return Err(AuthError::Duplicate { param: clip(name) });
        }
        params.push(AuthParam { name, value });
    }
    Ok((scheme, params))
}

/// A parsed `Authorization: Digest ...` value (RFC 3261 §25.1 `digest-response`, RFC 7616 §3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    /// The digest-uri exactly as sent: the response is computed over this string.
    pub uri: String,
    /// Lower-cased hex (32 or 64 digits).
    pub response: String,
    /// `None` when absent (MD5 by RFC 2617 §3.2.2).
    pub algorithm: Option<Algorithm>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    /// `Some("auth")` or `None` (only `auth` parses).
    pub qop: Option<String>,
    /// The nonce count as sent (8 hex digits) and its value.
    pub nc: Option<(String, u32)>,
}

impl Credentials {
    /// Parses a credentials value. Unknown parameters are ignored (RFC 7616 §3.4); duplicates,
    /// missing required ones (username, realm, nonce, uri, response), a malformed nc or response, an
    /// algorithm other than MD5/SHA-256, a qop other than `auth`, qop without cnonce+nc, `username*`
    /// and `userhash=true` are errors.
    pub fn parse(v: &str) -> Result<Credentials, AuthError> {
        let (scheme, params) = parse_auth_params(v)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::NotDigest { found: clip(scheme) });
        }
        let mut username = None;
        let mut realm = None;
        let mut nonce = None;
        let mut uri = None;
        let mut response = None;
        let mut algorithm = None;
        let mut cnonce = None;
        let mut opaque = None;
        let mut qop = None;
        let mut nc = None;
        for p in params {
            let n = p.name.to_ascii_lowercase();
            match n.as_str() {
                "username" => username = Some(p.value),
                "realm" => realm = Some(p.value),
                "nonce" => nonce = Some(p.value),
                "uri" => uri = Some(p.value),
                "response" => {
                    let ok = matches!(p.value.len(), 32 | 64) && p.value.bytes().all(|c| c.is_ascii_hexdigit());
                    if !ok {
                        return Err(AuthError::BadResponse { found: clip(&p.value) });
                    }
                    response = Some(p.value.to_ascii_lowercase());
                }
                "algorithm" => {
                    algorithm = Some(
                        Algorithm::from_token(&p.value)
                            .ok_or_else(|| AuthError::UnsupportedAlgorithm { found: clip(&p.value) })?,
                    )
                }
                "cnonce" => cnonce = Some(p.value),
                "opaque" => opaque = Some(p.value),
                "qop" => {
                    if !p.value.eq_ignore_ascii_case("auth") {
                        return Err(AuthError::UnsupportedQop { found: clip(&p.value) });
                    }
                    qop = Some("auth".to_owned());
                }
                "nc" => {
                    let ok = p.value.len() == 8 && p.value.bytes().all(|c| c.is_ascii_hexdigit());
                    let n = if ok {
                        u32::from_str_radix(&p.value, 16).ok()
                    } else {
                        None
                    };
                    match n {
                        Some(n) => nc = Some((p.value, n)),
                        None => return Err(AuthError::BadNonceCount { found: clip(&p.value) }),
                    }
                }
                "username*" => {
                    return Err(AuthError::Unsupported {
                        what: "username* (RFC 8187 encoding)",
                    })
                }
                "userhash" if p.value.eq_ignore_ascii_case("true") => {
                    return Err(AuthError::Unsupported { what: "userhash=true" })
                }
                _ => {}
            }
        }
        if qop.is_some() && (cnonce.is_none() || nc.is_none()) {
            return Err(AuthError::QopWithoutCnonce);
        }
        Ok(Credentials {
            username: username.ok_or(AuthError::Missing { param: "username" })?,
            realm: realm.ok_or(AuthError::Missing { param: "realm" })?,
            nonce: nonce.ok_or(AuthError::Missing { param: "nonce" })?,
            uri: uri.ok_or(AuthError::Missing { param: "uri" })?,
            response: response.ok_or(AuthError::Missing { param: "response" })?,
            algorithm,
            cnonce,
            opaque,
            qop,
            nc,
        })
    }

    /// The algorithm in force: MD5 when the parameter is absent.
    pub fn algorithm_or_default(&self) -> Algorithm {
        self.algorithm.unwrap_or(Algorithm::Md5)
    }

    /// The response this client should have sent for `method` given `ha1` (raw bytes, the length of
    /// the algorithm's output); `None` without qop/cnonce/nc (RFC 2069 style is not accepted).
    pub fn expected_response(&self, ha1: &[u8], method: &str) -> Option<String> {
        let (nc, _) = self.nc.as_ref()?;
        Some(response(
            self.algorithm_or_default(),
            ha1,
            &self.nonce,
            nc,
            self.cnonce.as_deref()?,
            self.qop.as_deref()?,
            method,
            &self.uri,
        ))
    }

    /// A client's answer to `challenge` (qop=auth), for tests and UAC use.
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        challenge: &Challenge,
        method: &str,
        uri: &str,
        username: &str,
        password: &str,
        cnonce: &str,
        nc: u32,
    ) -> Credentials {
        let alg = challenge.algorithm;
        let h1 = ha1(alg, username, &challenge.realm, password);
        let nc_s = format!("{nc:08x}");
        let resp = response(alg, &h1, &challenge.nonce, &nc_s, cnonce, "auth", method, uri);
        Credentials {
            username: username.to_owned(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_owned(),
            response: resp,
            algorithm: Some(alg),
            cnonce: Some(cnonce.to_owned()),
            opaque: challenge.opaque.clone(),
            qop: Some("auth".to_owned()),
            nc: Some((nc_s, nc)),
        }
    }

    /// The header value (`Digest username="..", ...`).
    pub fn to_header_value(&self) -> String {
        let mut s = String::with_capacity(256);
        s.push_str("Digest username=");
        push_quoted(&mut s, &self.username);
        s.push_str(", realm=");
        push_quoted(&mut s, &self.realm);
        s.push_str(", nonce=");
        push_quoted(&mut s, &self.nonce);
        s.push_str(", uri=");
        push_quoted(&mut s, &self.uri);
        s.push_str(", response=");
        push_quoted(&mut s, &self.response);
        if let Some(a) = self.algorithm {
            s.push_str(", algorithm=");
            s.push_str(a.token());
        }
        if let Some(c) = &self.cnonce {
            s.push_str(", cnonce=");
            push_quoted(&mut s, c);
        }
        if let Some(o) = &self.opaque {
            s.push_str(", opaque=");
            push_quoted(&mut s, o);
        }
        if let Some(q) = &self.qop {
            s.push_str(", qop=");
            s.push_str(q);
        }
        if let Some((nc, _)) = &self.nc {
            s.push_str(", nc=");
            s.push_str(nc);
        }
        s
    }
}

/// Appends `v` as a quoted-string (escaping `"` and `\`; CR/LF become spaces).
fn push_quoted(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            '\r' | '\n' => s.push(' '),
            _ => s.push(c),
        }
    }
    s.push('"');
}

/// A `WWW-Authenticate: Digest` challenge with qop="auth".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The previous request's nonce was stale but its digest right: retry without asking the user.
    pub stale: bool,
}

impl Challenge {
    /// `Digest realm="..", nonce="..", opaque="..", algorithm=SHA-256, qop="auth"[, stale=true]`.
    pub fn to_header_value(&self) -> String {
        let mut s = String::with_capacity(160);
        s.push_str("Digest realm=");
        push_quoted(&mut s, &self.realm);
        s.push_str(", nonce=");
        push_quoted(&mut s, &self.nonce);
        if let Some(o) = &self.opaque {
            s.push_str(", opaque=");
            push_quoted(&mut s, o);
        }
        s.push_str(", algorithm=");
        s.push_str(self.algorithm.token());
        s.push_str(", qop=\"auth\"");
        if self.stale {
            s.push_str(", stale=true");
        }
        s
    }

    /// Parses a challenge (client side; tests). Requires realm and nonce; an absent algorithm is MD5;
    /// a qop list must include `auth`.
    pub fn parse(v: &str) -> Result<Challenge, AuthError> {
        let (scheme, params) = parse_auth_params(v)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::NotDigest { found: clip(scheme) });
        }
        let get = |n: &str| {
            params
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(n))
                .map(|p| p.value.as_str())
        };
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_token(a).ok_or_else(|| AuthError::UnsupportedAlgorithm { found: clip(a) })?,
        };
        if let Some(q) = get("qop") {
            if !q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) {
                return Err(AuthError::UnsupportedQop { found: clip(q) });
            }
        }
        Ok(Challenge {
            realm: get("realm").ok_or(AuthError::Missing { param: "realm" })?.to_owned(),
            nonce: get("nonce").ok_or(AuthError::Missing { param: "nonce" })?.to_owned(),
            opaque: get("opaque").map(str::to_owned),
            algorithm,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1 (password with a lower-case "of", errata 4495).
    const R7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const R7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const R7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    #[test]
    fn rfc7616_example_md5_and_sha256() {
        for (alg, want) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let h1 = ha1(alg, "Mufasa", "http-auth@example.org", "Circle of Life");
            assert_eq!(h1.len(), alg.output_len());
            let got = response(
                alg,
                &h1,
                R7616_NONCE,
                "00000001",
                R7616_CNONCE,
                "auth",
                "GET",
                "/dir/index.html",
            );
            assert_eq!(got, want, "{alg}");
        }
    }

    #[test]
    fn rfc7616_authorization_parses_and_verifies() {
        let v = format!(
            "Digest username=\"Mufasa\",\r\n    realm=\"http-auth@example.org\",\r\n    uri=\"/dir/index.html\",\r\n    \
             algorithm=SHA-256,\r\n    nonce=\"{R7616_NONCE}\",\r\n    nc=00000001,\r\n    cnonce=\"{R7616_CNONCE}\",\r\n    \
             qop=auth,\r\n    response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\",\r\n    \
             opaque=\"{R7616_OPAQUE}\""
        );
        let c = Credentials::parse(&v).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.algorithm, Some(Algorithm::Sha256));
        assert_eq!(c.nc, Some(("00000001".to_owned(), 1)));
        assert_eq!(c.opaque.as_deref(), Some(R7616_OPAQUE));
        let h1 = ha1(Algorithm::Sha256, "Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(c.expected_response(&h1, "GET").as_deref(), Some(c.response.as_str()));
        let wrong = ha1(Algorithm::Sha256, "Mufasa", "http-auth@example.org", "Circle Of Life");
        assert_ne!(c.expected_response(&wrong, "GET").as_deref(), Some(c.response.as_str()));
        // Round trip through the writer.
        assert_eq!(Credentials::parse(&c.to_header_value()).unwrap(), c);
    }

    #[test]
    fn rfc2617_example() {
        // RFC 2617 §3.5 (password "Circle Of Life").
        let v =
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
                 uri=\"/dir/index.html\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
                 response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let c = Credentials::parse(v).unwrap();
        assert_eq!(c.algorithm, None);
        assert_eq!(c.algorithm_or_default(), Algorithm::Md5);
        let h1 = ha1(Algorithm::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(
            c.expected_response(&h1, "GET").unwrap(),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    #[test]
    fn sip_register_style_example() {
        // draft-smith-sipping-auth-examples §3.2: bob / zanzibar in biloxi.com, HA1 12af6046...
        let h1 = ha1(Algorithm::Md5, "bob", "biloxi.com", "zanzibar");
        assert_eq!(hex(&h1), "12af60467a33e8518da5c68bbff12b11");
        let r = response(
            Algorithm::Md5,
            &h1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "auth",
            "INVITE",
            "sip:bob@biloxi.com",
        );
        assert_eq!(r, "89eb0059246c02b2f6ee02c7961d5ea3");
    }

    #[test]
    fn hmac_rfc4231_case_2_and_long_key() {
        let m = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&m),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // RFC 4231 case 6: a 131-byte key is hashed first.
        let key = [0xaau8; 131];
        let m = hmac_sha256(&key, &[b"Test Using Larger Than Block-Size Key - Hash Key First"]);
        assert_eq!(
            hex(&m),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn hex_round_trip_and_ct_eq() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn parse_errors_say_what_was_wrong() {
        let base =
            "username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"0123456789abcdef0123456789abcdef\"";
        assert_eq!(Credentials::parse(""), Err(AuthError::Empty));
        assert_eq!(Credentials::parse("   "), Err(AuthError::Empty));
        assert_eq!(
            Credentials::parse(&format!("Basic {base}")),
            Err(AuthError::NotDigest { found: "Basic".into() })
        );
        assert!(Credentials::parse(&format!("Digest {base}")).is_ok());
        assert!(Credentials::parse(&format!("digest {base},,")).is_ok());
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, realm=\"x\"")),
            Err(AuthError::Duplicate { param: "realm".into() })
        );
        assert_eq!(
            Credentials::parse(
                "Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0123456789abcdef0123456789abcdef\""
            ),
            Err(AuthError::Missing { param: "username" })
        );
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, nc=1, cnonce=\"c\", qop=auth")),
            Err(AuthError::BadNonceCount { found: "1".into() })
        );
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, algorithm=MD5-sess")),
            Err(AuthError::UnsupportedAlgorithm {
                found: "MD5-sess".into()
            })
        );
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, qop=auth-int, nc=00000001, cnonce=\"c\"")),
            Err(AuthError::UnsupportedQop {
                found: "auth-int".into()
            })
        );
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, qop=auth")),
            Err(AuthError::QopWithoutCnonce)
        );
        assert_eq!(
            Credentials::parse("Digest username=\"u"),
            Err(AuthError::UnterminatedQuote { at: 16 })
        );
        assert!(matches!(
            Credentials::parse("Digest username"),
            Err(AuthError::Syntax {
                expected: "`=` after the parameter name",
                ..
            })
        ));
        assert!(matches!(
            Credentials::parse("Digest username=\"u\" realm=\"r\""),
            Err(AuthError::Syntax {
                expected: "`,` between parameters",
                ..
            })
        ));
        assert!(matches!(
            Credentials::parse(&format!("Digest {base}, response=\"xyz\"")),
            Err(AuthError::Duplicate { .. })
        ));
        assert_eq!(
            Credentials::parse("Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"xyz\""),
            Err(AuthError::BadResponse { found: "xyz".into() })
        );
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, userhash=true")),
            Err(AuthError::Unsupported { what: "userhash=true" })
        );
        // The message names the side and the expectation.
        let msg = AuthError::BadNonceCount { found: "1".into() }.to_string();
        assert!(msg.contains("client") && msg.contains("8 hex digits"), "{msg}");
        // Long junk is clipped in errors.
        let long = format!("Digest {base}, algorithm={}", "A".repeat(500));
        match Credentials::parse(&long) {
            Err(AuthError::UnsupportedAlgorithm { found }) => assert_eq!(found.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn quoted_escapes_and_unknown_params() {
        let c = Credentials::parse(
            "Digest username=\"a\\\"b\", realm=\"r\\\\\", nonce=n1, uri=\"sip:x\", \
             response=\"0123456789ABCDEF0123456789ABCDEF\", x-future=\"1,2\"",
        )
        .unwrap();
        assert_eq!(c.username, "a\"b");
        assert_eq!(c.realm, "r\\");
        assert_eq!(c.nonce, "n1");
        assert_eq!(c.response, "0123456789abcdef0123456789abcdef");
        assert_eq!(Credentials::parse(&c.to_header_value()).unwrap(), c);
    }

    #[test]
    fn challenge_round_trip_and_answer() {
        let ch = Challenge {
            realm: "callgate".into(),
            nonce: "abc".into(),
            opaque: Some("op".into()),
            algorithm: Algorithm::Sha256,
            stale: true,
        };
        let v = ch.to_header_value();
        assert_eq!(
            v,
            "Digest realm=\"callgate\", nonce=\"abc\", opaque=\"op\", algorithm=SHA-256, qop=\"auth\", stale=true"
        );
        assert_eq!(Challenge::parse(&v).unwrap(), ch);
        let c = Credentials::answer(&ch, "REGISTER", "sip:callgate", "1001", "demo1001", "cn", 1);
        let h1 = ha1(Algorithm::Sha256, "1001", "callgate", "demo1001");
        assert_eq!(c.expected_response(&h1, "REGISTER").unwrap(), c.response);
        assert_eq!(c.opaque.as_deref(), Some("op"));
        let parsed = Credentials::parse(&c.to_header_value()).unwrap();
        assert_eq!(parsed, c);
        // RFC 7616 challenge with a qop list and an unquoted algorithm.
        let ch = Challenge::parse(&format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=MD5, nonce=\"{R7616_NONCE}\", opaque=\"{R7616_OPAQUE}\""
        ))
        .unwrap();
        assert_eq!(ch.algorithm, Algorithm::Md5);
        assert!(!ch.stale);
        let c = Credentials::answer(
            &ch,
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle of Life",
            R7616_CNONCE,
            1,
        );
        assert_eq!(c.response, "8ca523f5e9506fed4657c9700eebdbec");
    }
}
