//! SDP (RFC 4566) offer parsing and the RFC 3264 offer/answer for one audio stream.
//!
//! callgate answers the first usable `m=audio` (RTP/AVP, port ≠ 0) of an offer with one G.711 codec — the
//! first of the offer's payload types that is an allowed [`Codec`], by static type (0, 8) or by
//! `a=rtpmap` name (PCMU/8000, PCMA/8000) — plus `telephone-event/8000` when offered (same payload type,
//! `a=fmtp:<pt> 0-16`), `a=ptime:20`, and the direction mirrored (RFC 3264 §6.1). Every other `m=` line is
//! answered in order with port 0 (rejected). Lines may end in CRLF or LF; unknown lines and attributes are
//! ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use super::{Codec, PTIME_MS};

/// Why an offer (or answer) cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// No `m=audio` stream offers an allowed codec (or there is no usable audio stream at all): answer 488.
    #[error("no common codec: no usable m=audio stream offers an allowed codec")]
    NoCommonCodec,
    /// The description is not valid SDP: answer 400.
    #[error("SDP line {line}: {what}")]
    Malformed { line: usize, what: String },
}

fn malformed(line: usize, what: impl Into<String>) -> SdpError {
    SdpError::Malformed {
        line,
        what: what.into(),
    }
}

/// Stream direction (RFC 3264 §5.1, §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an answer gives to a stream offered with `self`.
    pub fn mirror(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    fn from_attr(a: &str) -> Option<Direction> {
        Some(match a {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
    /// Whether the side holding this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// `a=rtpmap:<pt> <name>/<rate>[/<channels>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpMap<'a> {
    pub pt: u8,
    pub name: &'a str,
    pub rate: u32,
    pub channels: Option<&'a str>,
}

/// One `m=` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDesc<'a> {
    /// Line number of the `m=` line (1-based).
    pub line: usize,
    pub media: &'a str,
    pub port: u16,
    pub proto: &'a str,
    /// Format tokens as written (payload type numbers for RTP profiles).
    pub fmts: Vec<&'a str>,
    /// Media-level `c=` address.
    pub connection: Option<IpAddr>,
    pub rtpmaps: Vec<RtpMap<'a>>,
    /// `a=fmtp:<pt> <params>`.
    pub fmtps: Vec<(u8, &'a str)>,
    pub ptime: Option<u32>,
    /// Media-level direction attribute.
    pub direction: Option<Direction>,
    /// `a=rtcp:<port> [IN IP4|IP6 <addr>]` (RFC 3605).
    pub rtcp: Option<(u16, Option<IpAddr>)>,
}

impl MediaDesc<'_> {
    /// Encoding name and clock rate of payload type `pt`: its rtpmap, or the static assignment of RFC 3551.
    pub fn encoding(&self, pt: u8) -> Option<(&str, u32)> {
        if let Some(m) = self.rtpmaps.iter().find(|m| m.pt == pt) {
            return Some((m.name, m.rate));
        }
        match pt {
            0 => Some(("PCMU", 8000)),
            8 => Some(("PCMA", 8000)),
            _ => None,
        }
    }
    /// Payload types of the `fmts` that are numbers.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.fmts
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|&p| p < 128)
    }
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.fmtps.iter().find(|(p, _)| *p == pt).map(|(_, v)| *v)
    }
}

/// A parsed session description (borrowing from the text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDesc<'a> {
    /// `o=` fields: username, sess-id, sess-version, nettype, addrtype, address.
    pub origin: Option<[&'a str; 6]>,
    pub session_name: Option<&'a str>,
    /// Session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute.
    pub direction: Option<Direction>,
    pub media: Vec<MediaDesc<'a>>,
}

impl<'a> SessionDesc<'a> {
    /// Parses SDP text. Requires `v=0` first and `c=` (session or media level) for every `m=` with a port.
    pub fn parse(sdp: &'a [u8]) -> Result<SessionDesc<'a>, SdpError> {
        let mut desc = SessionDesc {
            origin: None,
            session_name: None,
            connection: None,
            direction: None,
            media: Vec::new(),
        };
        let mut saw_version = false;
        // A trailing newline leaves one empty piece; blank lines are skipped.
        for (i, raw) in sdp.split(|&b| b == b'\n').enumerate() {
            let n = i + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.is_empty() || raw.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if raw.len() < 2 || raw[1] != b'=' || !raw[0].is_ascii_lowercase() {
                return Err(malformed(
                    n,
                    format!(
                        "expected <type>=<value>, found {:?}",
                        String::from_utf8_lossy(raw)
                    ),
                ));
            }
            let kind = raw[0];
            let Ok(value) = std::str::from_utf8(&raw[2..]) else {
                // Free text (s=, i=, e=, ...) may come in other charsets; we do not use it.
                if matches!(kind, b'v' | b'o' | b'c' | b'm' | b'a' | b't') {
                    return Err(malformed(n, format!("{}= line is not UTF-8", kind as char)));
                }
                continue;
            };
            if !saw_version {
                if kind != b'v' {
                    return Err(malformed(
                        n,
                        format!("expected v=0 as the first line, found {}=", kind as char),
                    ));
                }
                if value.trim() != "0" {
                    return Err(malformed(n, format!("expected v=0, found v={value}")));
                }
                saw_version = true;
                continue;
            }
            match kind {
                b'o' => {
                    let f: Vec<&str> = value.split_ascii_whitespace().collect();
                    let Ok(o) = <[&str; 6]>::try_from(f.as_slice()) else {
                        return Err(malformed(
                            n,
                            format!("o= needs 6 fields, found {}", f.len()),
                        ));
                    };
                    desc.origin = Some(o);
                }
                b's' => desc.session_name = Some(value),
                b'c' => {
                    let addr = parse_connection(n, value)?;
                    match desc.media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => desc.connection = Some(addr),
                    }
                }
                b'm' => desc.media.push(parse_media(n, value)?),
                b'a' => {
                    let (name, val) = match value.split_once(':') {
                        Some((a, v)) => (a, Some(v)),
                        None => (value.trim_end(), None),
                    };
                    match desc.media.last_mut() {
                        None => {
                            if let Some(d) = Direction::from_attr(name) {
                                desc.direction = Some(d);
                            }
                        }
                        Some(m) => parse_media_attr(n, m, name, val)?,
                    }
                }
                _ => {} // t, b, i, u, e, p, z, k, r: not needed
            }
        }
        if !saw_version {
            return Err(malformed(1, "empty description: expected v=0"));
        }
        for m in &desc.media {
            if m.port != 0 && m.connection.is_none() && desc.connection.is_none() {
                return Err(malformed(
                    m.line,
                    format!("m={} has no c= line (session or media level)", m.media),
                ));
            }
        }
        Ok(desc)
    }

    /// The connection address of `m`: its own, or the session's.
    pub fn connection_of(&self, m: &MediaDesc<'_>) -> Option<IpAddr> {
        m.connection.or(self.connection)
    }

    /// The direction of `m`: its attribute, the session's, or sendrecv.
    pub fn direction_of(&self, m: &MediaDesc<'_>) -> Direction {
        m.direction
            .or(self.direction)
            .unwrap_or(Direction::SendRecv)
    }
}

fn parse_connection(n: usize, value: &str) -> Result<IpAddr, SdpError> {
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    let [nettype, addrtype, addr] = f.as_slice() else {
        return Err(malformed(
            n,
            format!("c= needs 3 fields (IN IP4|IP6 address), found {}", f.len()),
        ));
    };
    if *nettype != "IN" {
        return Err(malformed(
            n,
            format!("c= network type must be IN, found {nettype}"),
        ));
    }
    // Multicast: address/ttl[/count]; we only take the address.
    let host = addr.split('/').next().unwrap_or(addr);
    match *addrtype {
        "IP4" => host
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| malformed(n, format!("c= IP4 address expected, found {host:?}"))),
        "IP6" => host
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| malformed(n, format!("c= IP6 address expected, found {host:?}"))),
        other => Err(malformed(
            n,
            format!("c= address type must be IP4 or IP6, found {other}"),
        )),
    }
}

fn parse_media(n: usize, value: &str) -> Result<MediaDesc<'_>, SdpError> {
    let mut f = value.split_ascii_whitespace();
    let (Some(media), Some(port), Some(proto)) = (f.next(), f.next(), f.next()) else {
        return Err(malformed(n, "m= needs <media> <port> <proto> <fmt> ..."));
    };
    // <port>[/<number of ports>]
    let port_s = port.split('/').next().unwrap_or(port);
    let port = port_s
        .parse::<u16>()
        .map_err(|_| malformed(n, format!("m= port must be 0-65535, found {port_s:?}")))?;
    let fmts: Vec<&str> = f.collect();
    if fmts.is_empty() {
        return Err(malformed(n, format!("m={media} lists no formats")));
    }
    Ok(MediaDesc {
        line: n,
        media,
        port,
        proto,
        fmts,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        direction: None,
        rtcp: None,
    })
}

fn parse_pt(n: usize, attr: &str, s: &str) -> Result<u8, SdpError> {
    match s.parse::<u8>() {
        Ok(p) if p < 128 => Ok(p),
        _ => Err(malformed(
            n,
            format!("a={attr}: payload type 0-127 expected, found {s:?}"),
        )),
    }
}

fn parse_media_attr<'a>(
    n: usize,
    m: &mut MediaDesc<'a>,
    name: &'a str,
    val: Option<&'a str>,
) -> Result<(), SdpError> {
    if let Some(d) = Direction::from_attr(name) {
        m.direction = Some(d);
        return Ok(());
    }
    let Some(val) = val else { return Ok(()) };
    match name {
        "rtpmap" => {
            let (pt, enc) = val
                .trim()
                .split_once(' ')
                .ok_or_else(|| malformed(n, "a=rtpmap: expected <pt> <name>/<rate>"))?;
            let pt = parse_pt(n, "rtpmap", pt)?;
            let mut parts = enc.trim().split('/');
            let name = parts.next().unwrap_or("");
            let rate = parts
                .next()
                .and_then(|r| r.parse::<u32>().ok())
                .ok_or_else(|| {
                    malformed(
                        n,
                        format!("a=rtpmap:{pt}: expected <name>/<clock rate>, found {enc:?}"),
                    )
                })?;
            m.rtpmaps.push(RtpMap {
                pt,
                name,
                rate,
                channels: parts.next(),
            });
        }
        "fmtp" => {
            let (pt, params) = val.split_once(' ').unwrap_or((val, ""));
            m.fmtps.push((parse_pt(n, "fmtp", pt)?, params.trim()));
        }
        "ptime" => {
            // Some agents write fractional ptime; keep the whole milliseconds.
            let ms = val.trim().split('.').next().unwrap_or("");
            m.ptime = Some(ms.parse().map_err(|_| {
                malformed(n, format!("a=ptime: milliseconds expected, found {val:?}"))
            })?);
        }
        "rtcp" => {
            let mut f = val.split_ascii_whitespace();
            let p = f.next().unwrap_or("");
            let port = p
                .parse::<u16>()
                .map_err(|_| malformed(n, format!("a=rtcp: port expected, found {p:?}")))?;
            let rest: Vec<&str> = f.collect();
            let addr = if rest.is_empty() {
                None
            } else {
                Some(parse_connection(n, &rest.join(" "))?)
            };
            m.rtcp = Some((port, addr));
        }
        _ => {}
    }
    Ok(())
}

/// The outcome of an offer/answer exchange for the audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Our SDP: the answer [`answer`] built, or for [`parse_answer`] the peer's answer as received.
    pub sdp: Bytes,
    pub codec: Codec,
    /// The payload type to send `codec` with (the offer's number for it).
    pub pt: u8,
    /// telephone-event payload type, if the peer offered it.
    pub dtmf_pt: Option<u8>,
    /// Where the peer receives RTP; `None` when its address is unspecified (0.0.0.0 / ::, old-style hold)
    /// or its port is 0.
    pub remote: Option<SocketAddr>,
    /// Our direction for the stream (the peer's, mirrored). Send only if `direction.sends()`.
    pub direction: Direction,
    /// Packetisation we send with (always 20 ms).
    pub ptime_ms: u32,
    /// The peer's `a=ptime`, if given.
    pub remote_ptime_ms: Option<u32>,
}

impl Negotiated {
    /// Where to send RTP: `remote`, if our direction allows sending.
    pub fn send_to(&self) -> Option<SocketAddr> {
        self.remote.filter(|_| self.direction.sends())
    }
}

/// What an audio section offers: codec choice and telephone-event.
struct Choice {
    codec: Codec,
    pt: u8,
    dtmf_pt: Option<u8>,
}

fn choose(m: &MediaDesc<'_>, allowed: &[Codec]) -> Option<Choice> {
    let mut chosen: Option<(Codec, u8)> = None;
    let mut dtmf_pt = None;
    for pt in m.payload_types() {
        let Some((name, rate)) = m.encoding(pt) else {
            continue;
        };
        if rate != 8000 {
            continue;
        }
        if chosen.is_none() {
            if let Some(c) = Codec::from_name(name).filter(|c| allowed.contains(c)) {
                chosen = Some((c, pt));
            }
        }
        if dtmf_pt.is_none() && name.eq_ignore_ascii_case("telephone-event") {
            dtmf_pt = Some(pt);
        }
    }
    chosen.map(|(codec, pt)| Choice { codec, pt, dtmf_pt })
}

fn is_rtp_avp(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("RTP/AVP")
}

fn addr_fields(ip: IpAddr) -> (&'static str, String) {
    match ip {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    }
}

fn remote_of(addr: Option<IpAddr>, port: u16) -> Option<SocketAddr> {
    let addr = addr?;
    (port != 0 && !addr.is_unspecified()).then(|| SocketAddr::new(addr, port))
}

fn write_session_head(s: &mut String, local_ip: IpAddr, sess_id: u64) {
    use std::fmt::Write;
    let (fam, a) = addr_fields(local_ip);
    let _ = write!(s, "v=0\r\no=callgate {sess_id} {sess_id} IN {fam} {a}\r\ns=callgate\r\nc=IN {fam} {a}\r\nt=0 0\r\n");
}

fn write_audio(
    s: &mut String,
    port: u16,
    codecs: &[(Codec, u8)],
    dtmf_pt: Option<u8>,
    dir: Direction,
) {
    use std::fmt::Write;
    let _ = write!(s, "m=audio {port} RTP/AVP");
    for (_, pt) in codecs {
        let _ = write!(s, " {pt}");
    }
    if let Some(d) = dtmf_pt {
        let _ = write!(s, " {d}");
    }
    s.push_str("\r\n");
    for (c, pt) in codecs {
        let _ = write!(s, "a=rtpmap:{pt} {}/8000\r\n", c.name());
    }
    if let Some(d) = dtmf_pt {
        let _ = write!(
            s,
            "a=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-16\r\n"
        );
    }
    let _ = write!(s, "a=ptime:{PTIME_MS}\r\na={}\r\n", dir.as_str());
}

/// Answers `offer` (RFC 3264 §6): see the module documentation.
pub fn answer(
    offer: &[u8],
    allowed: &[Codec],
    local_ip: IpAddr,
    local_port: u16,
    sess_id: u64,
) -> Result<Negotiated, SdpError> {
    use std::fmt::Write;
    let desc = SessionDesc::parse(offer)?;
    let accepted = desc.media.iter().enumerate().find_map(|(i, m)| {
        if m.media != "audio" || m.port == 0 || !is_rtp_avp(m.proto) {
            return None;
        }
        choose(m, allowed).map(|c| (i, c))
    });
    let Some((idx, choice)) = accepted else {
        return Err(SdpError::NoCommonCodec);
    };
    let m = &desc.media[idx];
    let direction = desc.direction_of(m).mirror();
    let remote = remote_of(desc.connection_of(m), m.port);

    let mut s = String::with_capacity(320);
    write_session_head(&mut s, local_ip, sess_id);
    for (i, other) in desc.media.iter().enumerate() {
        if i == idx {
            write_audio(
                &mut s,
                local_port,
                &[(choice.codec, choice.pt)],
                choice.dtmf_pt,
                direction,
            );
        } else {
            // Rejected stream: port 0, same media and proto, the offered formats (RFC 3264 §6).
            let _ = write!(
                s,
                "m={} 0 {} {}\r\n",
                other.media,
                other.proto,
                other.fmts.join(" ")
            );
        }
    }
    Ok(Negotiated {
        sdp: Bytes::from(s),
        codec: choice.codec,
        pt: choice.pt,
        dtmf_pt: choice.dtmf_pt,
        remote,
        direction,
        ptime_ms: PTIME_MS,
        remote_ptime_ms: m.ptime,
    })
}

/// Our offer for an outbound leg (or a delayed-offer answer): `codecs` in order with their static payload
/// types, telephone-event as 101, ptime 20, sendrecv.
pub fn offer(codecs: &[Codec], local_ip: IpAddr, local_port: u16, sess_id: u64) -> Bytes {
    let mut s = String::with_capacity(320);
    write_session_head(&mut s, local_ip, sess_id);
    let list: Vec<(Codec, u8)> = codecs.iter().map(|&c| (c, c.payload_type())).collect();
    write_audio(&mut s, local_port, &list, Some(101), Direction::SendRecv);
    Bytes::from(s)
}

/// Reads the peer's answer to our [`offer`]: the first accepted `m=audio` (port ≠ 0) and the first PCMU/PCMA
/// payload type in it. `NoCommonCodec` if the peer rejected audio or chose no G.711 law.
pub fn parse_answer(sdp: &[u8]) -> Result<Negotiated, SdpError> {
    let desc = SessionDesc::parse(sdp)?;
    let found = desc
        .media
        .iter()
        .filter(|m| m.media == "audio" && m.port != 0 && is_rtp_avp(m.proto))
        .find_map(|m| choose(m, &Codec::ALL).map(|c| (m, c)));
    let Some((m, choice)) = found else {
        return Err(SdpError::NoCommonCodec);
    };
    Ok(Negotiated {
        sdp: Bytes::copy_from_slice(sdp),
        codec: choice.codec,
        pt: choice.pt,
        dtmf_pt: choice.dtmf_pt,
        remote: remote_of(desc.connection_of(m), m.port),
        direction: desc.direction_of(m).mirror(),
        ptime_ms: PTIME_MS,
        remote_ptime_ms: m.ptime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

    fn text(n: &Negotiated) -> &str {
        std::str::from_utf8(&n.sdp).unwrap()
    }

    const TYPICAL: &str =
        "v=0\r\no=- 123 456 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

    #[test]
    fn typical_offer() {
        let n = answer(
            TYPICAL.as_bytes(),
            &[Codec::Pcmu, Codec::Pcma],
            LOCAL4,
            20000,
            42,
        )
        .unwrap();
        assert_eq!((n.codec, n.pt, n.dtmf_pt), (Codec::Pcmu, 0, Some(101)));
        assert_eq!(n.remote, Some("198.51.100.7:40000".parse().unwrap()));
        assert_eq!(n.direction, Direction::SendRecv);
        assert_eq!(n.ptime_ms, 20);
        assert_eq!(n.remote_ptime_ms, Some(20));
        assert_eq!(
            text(&n),
            "v=0\r\no=callgate 42 42 IN IP4 192.0.2.10\r\ns=callgate\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        // The answer is itself valid SDP that parse_answer reads back.
        let back = parse_answer(&n.sdp).unwrap();
        assert_eq!(
            (back.codec, back.pt, back.dtmf_pt),
            (Codec::Pcmu, 0, Some(101))
        );
        assert_eq!(back.remote, Some("192.0.2.10:20000".parse().unwrap()));
    }

    #[test]
    fn allowed_list_filters_but_offer_order_decides() {
        let n = answer(TYPICAL.as_bytes(), &[Codec::Pcma], LOCAL4, 20000, 1).unwrap();
        assert_eq!((n.codec, n.pt), (Codec::Pcma, 8));
        let n = answer(
            TYPICAL.as_bytes(),
            &[Codec::Pcma, Codec::Pcmu],
            LOCAL4,
            20000,
            1,
        )
        .unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
    }

    #[test]
    fn pcma_only_offer_with_lf_endings_and_no_rtpmap() {
        let offer =
            "v=0\no=x 1 1 IN IP4 10.0.0.1\ns=x\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 8\n";
        let n = answer(
            offer.as_bytes(),
            &[Codec::Pcmu, Codec::Pcma],
            LOCAL4,
            30000,
            7,
        )
        .unwrap();
        assert_eq!((n.codec, n.pt, n.dtmf_pt), (Codec::Pcma, 8, None));
        assert!(text(&n).contains(
            "m=audio 30000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        ));
        assert!(!text(&n).contains("telephone-event"));
    }

    #[test]
    fn no_common_codec() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 18 9 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        assert_eq!(
            answer(offer.as_bytes(), &Codec::ALL, LOCAL4, 1, 1),
            Err(SdpError::NoCommonCodec)
        );
        assert_eq!(
            answer(TYPICAL.as_bytes(), &[], LOCAL4, 1, 1),
            Err(SdpError::NoCommonCodec)
        );
        // PCMU at the wrong clock rate is not PCMU/8000.
        let offer =
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 96\r\na=rtpmap:96 PCMU/16000\r\n";
        assert_eq!(
            answer(offer.as_bytes(), &Codec::ALL, LOCAL4, 1, 1),
            Err(SdpError::NoCommonCodec)
        );
        // No audio at all.
        let offer = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 5006 RTP/AVP 96\r\n";
        assert_eq!(
            answer(offer.as_bytes(), &Codec::ALL, LOCAL4, 1, 1),
            Err(SdpError::NoCommonCodec)
        );
        // SRTP-only audio is not usable.
        let offer = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5006 RTP/SAVP 0\r\n";
        assert_eq!(
            answer(offer.as_bytes(), &Codec::ALL, LOCAL4, 1, 1),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn dynamic_telephone_event_and_dynamic_pcmu() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 97 96\r\na=rtpmap:97 telephone-event/8000\r\na=fmtp:97 0-16\r\na=rtpmap:96 pcmu/8000\r\n";
        let n = answer(offer.as_bytes(), &Codec::ALL, LOCAL4, 20002, 9).unwrap();
        assert_eq!((n.codec, n.pt, n.dtmf_pt), (Codec::Pcmu, 96, Some(97)));
        let t = text(&n);
        assert!(t.contains("m=audio 20002 RTP/AVP 96 97\r\n"), "{t}");
        assert!(
            t.contains(
                "a=rtpmap:96 PCMU/8000\r\na=rtpmap:97 telephone-event/8000\r\na=fmtp:97 0-16\r\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn ipv6_offer_and_answer() {
        let offer = "v=0\r\no=- 1 1 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let local6: IpAddr = "2001:db8::1".parse().unwrap();
        let n = answer(offer.as_bytes(), &Codec::ALL, local6, 20004, 5).unwrap();
        assert_eq!(n.remote, Some("[2001:db8::5]:6000".parse().unwrap()));
        let t = text(&n);
        assert!(t.contains("o=callgate 5 5 IN IP6 2001:db8::1\r\n"), "{t}");
        assert!(t.contains("c=IN IP6 2001:db8::1\r\n"), "{t}");
        // IP4 in the answer when our address is IPv4.
        assert!(
            text(&answer(offer.as_bytes(), &Codec::ALL, LOCAL4, 1, 1).unwrap())
                .contains("c=IN IP4 192.0.2.10")
        );
    }

    #[test]
    fn multiple_m_lines_are_answered_in_order() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=video 5008 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\n\
m=audio 5004 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n\
m=audio 5006 RTP/AVP 8 0\r\nc=IN IP4 10.0.0.2\r\na=sendonly\r\n\
m=audio 5010 RTP/AVP 0\r\n\
m=application 5012 UDP/BFCP *\r\n";
        let n = answer(offer.as_bytes(), &Codec::ALL, LOCAL4, 20006, 3).unwrap();
        assert_eq!((n.codec, n.pt), (Codec::Pcma, 8));
        assert_eq!(n.remote, Some("10.0.0.2:5006".parse().unwrap()));
        assert_eq!(n.direction, Direction::RecvOnly);
        assert_eq!(n.send_to(), None);
        let t = text(&n);
        let ms: Vec<&str> = t.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            ms,
            [
                "m=video 0 RTP/AVP 96 97",
                "m=audio 0 RTP/AVP 18",
                "m=audio 20006 RTP/AVP 8",
                "m=audio 0 RTP/AVP 0",
                "m=application 0 UDP/BFCP *"
            ]
        );
        assert!(t.contains("a=recvonly\r\n"));
    }

    #[test]
    fn directions_are_mirrored_and_session_level_applies() {
        for (offered, answered) in [
            ("sendonly", "recvonly"),
            ("recvonly", "sendonly"),
            ("inactive", "inactive"),
            ("sendrecv", "sendrecv"),
        ] {
            let media_level =
                format!("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\na={offered}\r\n");
            let n = answer(media_level.as_bytes(), &Codec::ALL, LOCAL4, 1, 1).unwrap();
            assert!(
                text(&n).ends_with(&format!("a={answered}\r\n")),
                "{offered}"
            );
            let session_level =
                format!("v=0\r\nc=IN IP4 10.0.0.1\r\na={offered}\r\nm=audio 5004 RTP/AVP 0\r\n");
            let n = answer(session_level.as_bytes(), &Codec::ALL, LOCAL4, 1, 1).unwrap();
            assert_eq!(n.direction.as_str(), answered);
        }
    }

    #[test]
    fn hold_address_gives_no_remote() {
        let offer = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 5004 RTP/AVP 0\r\n";
        let n = answer(offer.as_bytes(), &Codec::ALL, LOCAL4, 1, 1).unwrap();
        assert_eq!(n.remote, None);
    }

    #[test]
    fn parses_attributes() {
        let offer = "v=0\r\no=alice 2890844526 2890844527 IN IP4 host.example.com\r\ns=\r\nc=IN IP4 233.252.0.1/127\r\nt=0 0\r\n\
m=audio 49170/2 RTP/AVP 0 101\r\na=rtcp:53020 IN IP6 2001:db8::9\r\na=ptime:30.0\r\na=fmtp:101 0-15,66\r\na=rtpmap:101 telephone-event/8000/1\r\n";
        let d = SessionDesc::parse(offer.as_bytes()).unwrap();
        assert_eq!(d.origin.unwrap()[1], "2890844526");
        assert_eq!(d.connection, Some("233.252.0.1".parse().unwrap()));
        let m = &d.media[0];
        assert_eq!(m.port, 49170);
        assert_eq!(m.rtcp, Some((53020, Some("2001:db8::9".parse().unwrap()))));
        assert_eq!(m.ptime, Some(30));
        assert_eq!(m.fmtp(101), Some("0-15,66"));
        assert_eq!(m.rtpmaps[0].channels, Some("1"));
        assert_eq!(m.encoding(0), Some(("PCMU", 8000)));
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "expected v=0"),
            ("o=- 1 1 IN IP4 1.2.3.4\r\n", 1, "first line"),
            ("v=1\r\n", 1, "v=1"),
            ("v=0\r\nhello\r\n", 2, "<type>=<value>"),
            ("v=0\r\nc=IN IP4 1.2.3\r\n", 2, "IP4 address"),
            ("v=0\r\nc=IN IP6 1.2.3.4\r\n", 2, "IP6 address"),
            ("v=0\r\nc=IN IP4\r\n", 2, "3 fields"),
            (
                "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
                3,
                "port",
            ),
            (
                "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 7000 RTP/AVP\r\n",
                3,
                "no formats",
            ),
            (
                "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 7000 RTP/AVP 0\r\na=rtpmap:300 X/8000\r\n",
                4,
                "payload type",
            ),
            (
                "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n",
                4,
                "clock rate",
            ),
            (
                "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 7000 RTP/AVP 0\r\na=ptime:x\r\n",
                4,
                "ptime",
            ),
            ("v=0\r\nm=audio 7000 RTP/AVP 0\r\n", 2, "no c= line"),
            ("v=0\r\no=a b\r\n", 2, "6 fields"),
        ];
        for (sdp, line, what) in cases {
            match answer(sdp.as_bytes(), &Codec::ALL, LOCAL4, 1, 1) {
                Err(SdpError::Malformed { line: l, what: w }) => {
                    assert_eq!(l, *line, "{sdp:?}: {w}");
                    assert!(w.contains(what), "{sdp:?}: {w}");
                }
                other => panic!("{sdp:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn offer_for_outbound_legs() {
        let o = offer(&[Codec::Pcma, Codec::Pcmu], LOCAL4, 20010, 77);
        let t = std::str::from_utf8(&o).unwrap();
        assert!(t.contains("m=audio 20010 RTP/AVP 8 0 101\r\n"), "{t}");
        assert!(t.contains("a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"));
        // Our offer answered by ourselves picks the offer's first codec.
        let n = answer(&o, &Codec::ALL, "192.0.2.99".parse().unwrap(), 30000, 1).unwrap();
        assert_eq!(
            (n.codec, n.dtmf_pt, n.remote),
            (
                Codec::Pcma,
                Some(101),
                Some("192.0.2.10:20010".parse().unwrap())
            )
        );
        let back = parse_answer(&n.sdp).unwrap();
        assert_eq!(back.codec, Codec::Pcma);
        // A peer that rejected the audio stream.
        let rejected = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n";
        assert_eq!(
            parse_answer(rejected.as_bytes()),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        let base = TYPICAL.as_bytes();
        let mut x: u64 = 5;
        for _ in 0..3000 {
            let mut b = base.to_vec();
            for _ in 0..4 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (x >> 33) as usize % b.len();
                b[i] = (x >> 13) as u8;
            }
            let _ = answer(&b, &Codec::ALL, LOCAL4, 1, 1);
            let _ = parse_answer(&b);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = answer(&b, &Codec::ALL, LOCAL4, 1, 1);
            let _ = parse_answer(&b);
        }

        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec("[vocmats]=[ -~]{0,40}", 0..12)) {
            let text = format!("v=0\r\n{}", lines.join("\r\n"));
            let _ = answer(text.as_bytes(), &Codec::ALL, LOCAL4, 1, 1);
        }
    }
}
