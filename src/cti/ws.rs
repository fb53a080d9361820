//! WebSocket (RFC 6455), sans-IO: the opening handshake's key, and a frame decoder/encoder for
//! both ends (the server in `edge::cti`, the client in [`super::client`]). SHA-1 (FIPS 180-4,
//! needed only for `Sec-WebSocket-Accept`) and base64 (RFC 4648) are here too.
//!
//! Decoder, per connection:
//! ```text
//!   bytes ──push──▶ buffer ──decode()──▶ one frame at a time:
//!     header: FIN, RSV (must be 0), opcode, MASK (required from clients, forbidden from servers),
//!             length (7 bit / 16 bit / 63 bit); length beyond the message limit → TooBig (1009)
//!     control (close/ping/pong): FIN set, ≤ 125 bytes, may arrive between fragments → returned
//!     text/binary: starts a message; continuation frames append; FIN completes it
//!             text must be valid UTF-8 (1007); binary is not part of the CTI protocol (1003)
//!   any violation → Err(WsError) with its close code; the connection is then closed.
//! ```

use std::fmt;

/// The GUID of RFC 6455 1.3.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut s = Vec::with_capacity(key.len() + GUID.len());
    s.extend_from_slice(key.trim().as_bytes());
    s.extend_from_slice(GUID.as_bytes());
    base64_encode(&sha1(&s))
}

/// Whether a `Sec-WebSocket-Key` is what RFC 6455 4.1 requires: base64 of 16 bytes.
pub fn valid_client_key(key: &str) -> bool {
    base64_decode(key.trim()).is_some_and(|k| k.len() == 16)
}

/// SHA-1 (FIPS 180-4 6.1).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut tail = Vec::with_capacity(128);
    let full = data.len() / 64 * 64;
    tail.extend_from_slice(&data[full..]);
    tail.push(0x80);
    while tail.len() % 64 != 56 {
        tail.push(0);
    }
    tail.extend_from_slice(&bit_len.to_be_bytes());
    for block in data[..full].chunks_exact(64).chain(tail.chunks_exact(64)) {
        let mut w = [0u32; 80];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 with padding (RFC 4648 4).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 { B64[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if c.len() > 2 { B64[n as usize & 63] as char } else { '=' });
    }
    out
}

/// Strict base64 with padding; `None` for anything else.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| B64.iter().position(|&x| x == c).map(|p| p as u32);
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, q) in b.chunks_exact(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Frame opcodes (RFC 6455 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

/// Which end this codec is: a server requires masked frames and sends unmasked ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// A complete message or control frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The peer's close: its code (if any) and reason.
    Close(Option<u16>, String),
}

/// Why the connection must be closed, with the close code to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsError {
    /// 1002: the frame breaks RFC 6455 (the text says how).
    Protocol(&'static str),
    /// 1009: a message larger than the limit.
    TooBig { len: u64, max: usize },
    /// 1007: a text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// 1003: a binary message (the CTI protocol is text only).
    Unsupported,
}

impl WsError {
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::TooBig { .. } => 1009,
            WsError::InvalidUtf8 => 1007,
            WsError::Unsupported => 1003,
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Protocol(why) => write!(f, "protocol error: {why}"),
            WsError::TooBig { len, max } => write!(f, "message of {len} bytes exceeds the limit of {max}"),
            WsError::InvalidUtf8 => f.write_str("text is not valid UTF-8"),
            WsError::Unsupported => f.write_str("binary messages are not supported: send JSON as text"),
        }
    }
}

impl std::error::Error for WsError {}

/// Incremental frame decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max_message: usize,
    buf: Vec<u8>,
    pos: usize,
    /// The message being reassembled from fragments: (is text, payload so far).
    frag: Option<(bool, Vec<u8>)>,
}

impl Decoder {
    /// `max_message`: the largest message (all its fragments together) accepted.
    pub fn new(role: Role, max_message: usize) -> Decoder {
        Decoder { role, max_message, buf: Vec::new(), pos: 0, frag: None }
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos > self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete message or control frame, `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            let b = &self.buf[self.pos..];
            if b.len() < 2 {
                return Ok(None);
            }
            let fin = b[0] & 0x80 != 0;
            if b[0] & 0x70 != 0 {
                return Err(WsError::Protocol("reserved bits set without a negotiated extension"));
            }
            let opcode = b[0] & 0x0F;
            let masked = b[1] & 0x80 != 0;
            match (self.role, masked) {
                (Role::Server, false) => return Err(WsError::Protocol("client frames must be masked")),
                (Role::Client, true) => return Err(WsError::Protocol("server frames must not be masked")),
                _ => {}
            }
            let (len, mut off) = match b[1] & 0x7F {
                126 => {
                    if b.len() < 4 {
                        return Ok(None);
                    }
                    (u64::from(u16::from_be_bytes([b[2], b[3]])), 4)
                }
                127 => {
                    if b.len() < 10 {
                        return Ok(None);
                    }
                    let l = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                    if l >> 63 != 0 {
                        return Err(WsError::Protocol("64-bit length with the most significant bit set"));
                    }
                    (l, 10)
                }
                l => (u64::from(l), 2),
            };
            let control = opcode >= 8;
            if control {
                if !fin {
                    return Err(WsError::Protocol("fragmented control frame"));
                }
                if len > 125 {
                    return Err(WsError::Protocol("control frame payload over 125 bytes"));
                }
            }
            match opcode {
                0 if self.frag.is_none() => return Err(WsError::Protocol("continuation frame without a message")),
                1 | 2 if self.frag.is_some() => {
                    return Err(WsError::Protocol("new data frame before the fragmented message ended"))
                }
                0..=2 | 8..=10 => {}
                _ => return Err(WsError::Protocol("unknown opcode")),
            }
            if !control {
                let so_far = self.frag.as_ref().map_or(0, |(_, p)| p.len()) as u64;
                if so_far + len > self.max_message as u64 {
                    return Err(WsError::TooBig { len: so_far + len, max: self.max_message });
                }
            }
            let mask = if masked {
                if b.len() < off + 4 {
                    return Ok(None);
                }
                let m = [b[off], b[off + 1], b[off + 2], b[off + 3]];
                off += 4;
                Some(m)
            } else {
                None
            };
            let len = len as usize;
            if b.len() < off + len {
                return Ok(None);
            }
            let start = self.pos + off;
            self.pos = start + len;
            let payload = &mut self.buf[start..start + len];
            if let Some(m) = mask {
                for (i, x) in payload.iter_mut().enumerate() {
                    *x ^= m[i & 3];
                }
            }
            let payload = &self.buf[start..start + len];
            match opcode {
                8 => return close_payload(payload).map(Some),
                9 => return Ok(Some(Incoming::Ping(payload.to_vec()))),
                10 => return Ok(Some(Incoming::Pong(payload.to_vec()))),
                _ => {}
            }
            let (text, mut data) = match (opcode, self.frag.take()) {
                (0, Some((text, mut data))) => {
                    data.extend_from_slice(payload);
                    (text, data)
                }
                (op, _) => (op == 1, payload.to_vec()),
            };
            if !fin {
                self.frag = Some((text, data));
                continue;
            }
            if !text {
                return Err(WsError::Unsupported);
            }
            data.shrink_to_fit();
            return String::from_utf8(data).map(|s| Some(Incoming::Text(s))).map_err(|_| WsError::InvalidUtf8);
        }
    }
}

fn close_payload(p: &[u8]) -> Result<Incoming, WsError> {
    match p.len() {
        0 => Ok(Incoming::Close(None, String::new())),
        1 => Err(WsError::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(WsError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&p[2..]).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Incoming::Close(Some(code), reason.to_owned()))
        }
    }
}

/// Appends one frame (FIN set) to `out`; `mask` is required for a client and absent for a server.
pub fn encode(opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    out.push(0x80 | opcode as u8);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        None => out.extend_from_slice(payload),
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i & 3]));
        }
    }
}

/// Appends a close frame with `code` and `reason` (cut to fit the 125-byte control limit).
pub fn encode_close(code: u16, reason: &str, mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let mut p = code.to_be_bytes().to_vec();
    let mut r = reason;
    while r.len() > 123 {
        let mut cut = 123;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r = &r[..cut];
    }
    p.extend_from_slice(r.as_bytes());
    encode(Opcode::Close, &p, mask, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha1_known_answers() {
        // FIPS 180 examples and the empty string.
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        let million = vec![b'a'; 1_000_000];
        assert_eq!(hex(&sha1(&million)), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
        // Lengths around the padding boundary (55, 56, 64 bytes) agree with a block-by-block view:
        // the 64-byte message hashes differently from its 63- and 65-byte neighbours.
        let a = sha1(&[b'x'; 63]);
        let b = sha1(&[b'x'; 64]);
        let c = sha1(&[b'x'; 65]);
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn handshake_key_from_the_rfc() {
        // RFC 6455 1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(valid_client_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_client_key("dGhlIHNhbXBsZSBub25jZQ")); // no padding
        assert!(!valid_client_key("c2hvcnQ=")); // 5 bytes
        assert!(!valid_client_key("not base64 at all!!!===="));
    }

    #[test]
    fn base64_round_trip_and_rfc_vectors() {
        for (plain, enc) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64_decode("Zg="), None);
        assert_eq!(base64_decode("Z==="), None);
        assert_eq!(base64_decode("Zg==Zg=="), None);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
    }

    fn client_frame(op: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(op, payload, Some([1, 2, 3, 4]), &mut out);
        if !fin {
            out[0] &= 0x7F;
        }
        out
    }

    #[test]
    fn decodes_masked_text_in_pieces_and_all_length_forms() {
        for n in [0usize, 5, 125, 126, 65535, 65536, 70000] {
            let text: String = "가나다abc".chars().cycle().take(n).collect();
            let bytes = client_frame(Opcode::Text, true, text.as_bytes());
            let mut d = Decoder::new(Role::Server, 1 << 20);
            // One byte at a time for the header, then the rest.
            for (i, b) in bytes.iter().enumerate().take(16) {
                assert_eq!(d.decode(), Ok(None), "complete after {i} bytes of {n}");
                d.push(&[*b]);
            }
            d.push(&bytes[16.min(bytes.len())..]);
            assert_eq!(d.decode(), Ok(Some(Incoming::Text(text))), "length {n}");
            assert_eq!(d.decode(), Ok(None));
        }
    }

    #[test]
    fn fragmented_message_with_a_ping_between() {
        let mut d = Decoder::new(Role::Server, 1024);
        let mut bytes = client_frame(Opcode::Text, false, b"{\"v\":1,");
        bytes.extend(client_frame(Opcode::Ping, true, b"hi"));
        bytes.extend(client_frame(Opcode::Continuation, false, b"\"id\":"));
        bytes.extend(client_frame(Opcode::Continuation, true, b"\"x\"}"));
        d.push(&bytes);
        assert_eq!(d.decode(), Ok(Some(Incoming::Ping(b"hi".to_vec()))));
        assert_eq!(d.decode(), Ok(Some(Incoming::Text("{\"v\":1,\"id\":\"x\"}".into()))));
        assert_eq!(d.decode(), Ok(None));
    }

    #[test]
    fn protocol_violations_carry_their_close_codes() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            ({ let mut f = Vec::new(); encode(Opcode::Text, b"x", None, &mut f); f }, 1002), // unmasked
            ({ let mut f = client_frame(Opcode::Text, true, b"x"); f[0] |= 0x40; f }, 1002), // RSV1
            (client_frame(Opcode::Continuation, true, b"x"), 1002),
            (client_frame(Opcode::Ping, false, b"x"), 1002),
            (client_frame(Opcode::Ping, true, &[0u8; 126]), 1002),
            ({ let mut f = client_frame(Opcode::Text, true, b"x"); f[0] = 0x83; f }, 1002), // opcode 3
            ({ let mut f = client_frame(Opcode::Text, false, b"a"); f.extend(client_frame(Opcode::Text, true, b"b")); f }, 1002),
            (client_frame(Opcode::Text, true, &[0xff, 0xfe]), 1007),
            (client_frame(Opcode::Binary, true, b"x"), 1003),
            (client_frame(Opcode::Text, true, &[b'a'; 2000]), 1009),
            (client_frame(Opcode::Close, true, &[3]), 1002),
            (client_frame(Opcode::Close, true, &[0x03, 0xEE]), 1002), // 1006 may not be sent
        ];
        for (i, (bytes, code)) in cases.into_iter().enumerate() {
            let mut d = Decoder::new(Role::Server, 1024);
            d.push(&bytes);
            let e = d.decode().expect_err(&format!("case {i} accepted"));
            assert_eq!(e.close_code(), code, "case {i}: {e}");
        }
        // Too big is known from the header alone, before the payload arrives.
        let mut d = Decoder::new(Role::Server, 1024);
        d.push(&[0x81, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0]);
        assert!(matches!(d.decode(), Err(WsError::TooBig { len: 0x100000, .. })));
        // The client side refuses masked server frames.
        let mut d = Decoder::new(Role::Client, 1024);
        d.push(&client_frame(Opcode::Text, true, b"x"));
        assert_eq!(d.decode().unwrap_err().close_code(), 1002);
    }

    #[test]
    fn close_frames() {
        let mut out = Vec::new();
        encode_close(1008, &"느".repeat(100), None, &mut out);
        assert!(out.len() <= 127);
        let mut d = Decoder::new(Role::Client, 1024);
        d.push(&out);
        match d.decode().unwrap() {
            Some(Incoming::Close(Some(1008), reason)) => assert!(reason.len() <= 123 && reason.starts_with('느')),
            other => panic!("{other:?}"),
        }
        let mut d = Decoder::new(Role::Server, 1024);
        d.push(&client_frame(Opcode::Close, true, b""));
        assert_eq!(d.decode(), Ok(Some(Incoming::Close(None, String::new()))));
    }
}
