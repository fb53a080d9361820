//! The RTP fixed header (RFC 3550 §5.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           synchronization source (SSRC) identifier            |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |            contributing source (CSRC) identifiers (CC × 32)   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | extension: profile-defined (16) | length in 32-bit words (16) | (if X)
//! |                        extension words ...                    |
//! ```
//! With P set, the last payload octet counts the padding octets (itself included).

/// Length of the fixed header callgate writes (no CSRC, no extension).
pub const HEADER_LEN: usize = 12;

/// Writes a version-2 header without padding, extension or CSRCs.
#[inline]
pub fn write_header(
    buf: &mut [u8; HEADER_LEN],
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
) {
    buf[0] = 0x80;
    buf[1] = (pt & 0x7F) | if marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Why a datagram is not a valid RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("RTP packet is {len} bytes, the fixed header needs 12")]
    TooShort { len: usize },
    #[error("RTP version {found}, expected 2")]
    Version { found: u8 },
    #[error(
        "RTP header declares {csrc_count} CSRCs ({need} header bytes), the packet is {len} bytes"
    )]
    CsrcOverrun {
        csrc_count: u8,
        need: usize,
        len: usize,
    },
    #[error("RTP header extension needs {need} bytes, the packet is {len} bytes")]
    ExtensionOverrun { need: usize, len: usize },
    #[error("RTP padding count {padding} does not fit the {available} bytes after the header")]
    BadPadding { padding: u8, available: usize },
}

/// A parsed RTP header. The payload is `&packet[payload_offset..payload_offset + payload_len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    pub padding: bool,
    pub extension: bool,
    pub csrc_count: u8,
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// The extension's profile-defined 16 bits, if X is set.
    pub extension_profile: Option<u16>,
    pub payload_offset: usize,
    /// Payload length with padding removed.
    pub payload_len: usize,
}

impl RtpHeader {
    /// Parses the header of one datagram. Never panics.
    pub fn parse(pkt: &[u8]) -> Result<RtpHeader, RtpError> {
        let len = pkt.len();
        if len < HEADER_LEN {
            return Err(RtpError::TooShort { len });
        }
        let version = pkt[0] >> 6;
        if version != 2 {
            return Err(RtpError::Version { found: version });
        }
        let padding = pkt[0] & 0x20 != 0;
        let extension = pkt[0] & 0x10 != 0;
        let csrc_count = pkt[0] & 0x0F;
        let mut off = HEADER_LEN + 4 * csrc_count as usize;
        if off > len {
            return Err(RtpError::CsrcOverrun {
                csrc_count,
                need: off,
                len,
            });
        }
        let mut extension_profile = None;
        if extension {
            if off + 4 > len {
                return Err(RtpError::ExtensionOverrun { need: off + 4, len });
            }
            extension_profile = Some(u16::from_be_bytes([pkt[off], pkt[off + 1]]));
            let words = u16::from_be_bytes([pkt[off + 2], pkt[off + 3]]) as usize;
            let need = off + 4 + 4 * words;
            if need > len {
                return Err(RtpError::ExtensionOverrun { need, len });
            }
            off = need;
        }
        let mut payload_len = len - off;
        if padding {
            let pad = pkt[len - 1];
            if pad == 0 || pad as usize > payload_len {
                return Err(RtpError::BadPadding {
                    padding: pad,
                    available: payload_len,
                });
            }
            payload_len -= pad as usize;
        }
        Ok(RtpHeader {
            padding,
            extension,
            csrc_count,
            marker: pkt[1] & 0x80 != 0,
            payload_type: pkt[1] & 0x7F,
            seq: u16::from_be_bytes([pkt[2], pkt[3]]),
            timestamp: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
            ssrc: u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
            extension_profile,
            payload_offset: off,
            payload_len,
        })
    }

    /// The payload of `pkt` (the packet this header was parsed from).
    pub fn payload<'a>(&self, pkt: &'a [u8]) -> &'a [u8] {
        &pkt[self.payload_offset..self.payload_offset + self.payload_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let mut h = [0u8; 12];
        write_header(&mut h, 8, true, 0xBEEF, 0xDEAD_BEEF, 0x0102_0304);
        assert_eq!(
            h,
            [0x80, 0x88, 0xBE, 0xEF, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4]
        );
        let mut pkt = h.to_vec();
        pkt.extend_from_slice(&[0xD5; 160]);
        let p = RtpHeader::parse(&pkt).unwrap();
        assert!(p.marker && !p.padding && !p.extension);
        assert_eq!(
            (p.payload_type, p.seq, p.timestamp, p.ssrc),
            (8, 0xBEEF, 0xDEAD_BEEF, 0x0102_0304)
        );
        assert_eq!(p.payload(&pkt).len(), 160);
        write_header(&mut h, 0, false, 1, 2, 3);
        assert_eq!(&h[..2], &[0x80, 0x00]);
    }

    #[test]
    fn csrc_extension_and_padding() {
        // V=2 P=1 X=1 CC=2
        let mut pkt = vec![0xB2, 0x65, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        pkt.extend_from_slice(&[0, 0, 0, 10, 0, 0, 0, 11]); // CSRCs
        pkt.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // extension, 1 word
        pkt.extend_from_slice(&[9, 9, 9]); // payload
        pkt.extend_from_slice(&[0, 0, 3]); // padding of 3
        let p = RtpHeader::parse(&pkt).unwrap();
        assert_eq!(p.csrc_count, 2);
        assert_eq!(p.extension_profile, Some(0xBEDE));
        assert_eq!(p.payload_type, 101);
        assert_eq!(p.payload_offset, 12 + 8 + 8);
        assert_eq!(p.payload(&pkt), &[9, 9, 9]);
    }

    #[test]
    fn typed_errors() {
        assert_eq!(
            RtpHeader::parse(&[0x80; 11]),
            Err(RtpError::TooShort { len: 11 })
        );
        let mut pkt = [0u8; 12];
        pkt[0] = 0x40;
        assert_eq!(RtpHeader::parse(&pkt), Err(RtpError::Version { found: 1 }));
        pkt[0] = 0x81;
        assert_eq!(
            RtpHeader::parse(&pkt),
            Err(RtpError::CsrcOverrun {
                csrc_count: 1,
                need: 16,
                len: 12
            })
        );
        pkt[0] = 0x90;
        assert_eq!(
            RtpHeader::parse(&pkt),
            Err(RtpError::ExtensionOverrun { need: 16, len: 12 })
        );
        let mut ext = pkt.to_vec();
        ext.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(
            RtpHeader::parse(&ext),
            Err(RtpError::ExtensionOverrun { need: 24, len: 20 })
        );
        let mut pad = vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 5];
        assert_eq!(
            RtpHeader::parse(&pad),
            Err(RtpError::BadPadding {
                padding: 5,
                available: 2
            })
        );
        *pad.last_mut().unwrap() = 0;
        assert_eq!(
            RtpHeader::parse(&pad),
            Err(RtpError::BadPadding {
                padding: 0,
                available: 2
            })
        );
        *pad.last_mut().unwrap() = 2;
        assert_eq!(RtpHeader::parse(&pad).unwrap().payload_len, 0);
    }

    #[test]
    fn never_panics() {
        let mut x: u64 = 99;
        for len in 0..64 {
            for _ in 0..200 {
                let pkt: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (x >> 56) as u8
                    })
                    .map(|b| b | 0x80) // mostly version 2 (0x80..0xFF → versions 2 and 3)
                    .collect();
                if let Ok(h) = RtpHeader::parse(&pkt) {
                    assert!(h.payload_offset + h.payload_len <= pkt.len());
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_packets_parse_within_bounds(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            if let Ok(h) = RtpHeader::parse(&b) {
                proptest::prop_assert!(h.payload_offset + h.payload_len <= b.len());
            }
        }
    }
}
