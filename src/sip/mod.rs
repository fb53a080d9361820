//! SIP: the codec, transactions and the transport addressing they share. Sans-IO: no async runtime, sockets or clocks here.
//!
//! - [`msg`]: zero-copy message parsing and stream framing over `bytes::Bytes`.
//! - [`uri`]: `sip:`, `sips:`, `tel:` and other absolute URIs.
//! - [`header`]: typed views of Via, name-addr (From/To/Contact), CSeq.
//! - [`build`]: writing responses and requests.
//! - [`txn`]: RFC 3261 section 17 transactions as a sans-IO state machine.

pub mod build;
pub mod digest;
pub mod header;
pub mod msg;
pub mod registrar;
pub mod txn;
pub mod uri;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::metrics::Mark;

/// The transport a message came in on or goes out on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// Reliable transports need no retransmission timers (RFC 3261 17.1.1.2).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }
    /// The Via transport token.
    pub fn as_via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// Identifies one accepted or opened stream connection in the shell.
pub type ConnId = u64;

/// The far end of a message: where it came from, or where it must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// For stream transports, the connection the message arrived on (responses go back on it).
    pub conn: Option<ConnId>,
}

impl Peer {
    pub fn udp(addr: SocketAddr) -> Peer {
        Peer { transport: Transport::Udp, addr, conn: None }
    }
}

/// A datagram or stream write the shell must perform.
#[derive(Clone, Debug)]
pub struct Transmit {
    pub peer: Peer,
    pub data: Bytes,
    /// When set, the shell records `Instant::now() - mark.since` in `mark.stage`'s
    /// histogram right after the write: the real latency, including queueing in the shell.
    pub mark: Option<Mark>,
}

/// Where a response to the request `msg` from `peer` goes (RFC 3261 18.2.2 with RFC 3581): back
/// on the connection for streams; over UDP to the source address, at the source port when the top
/// Via asked for `rport`, else at the Via's port (5060 when it names none).
pub fn response_destination(msg: &msg::Message, peer: Peer) -> Peer {
    if peer.transport.is_reliable() {
        return peer;
    }
    let Ok(via) = msg.top_via() else { return peer };
    if via.rport.is_some() {
        return peer;
    }
    let port = via.port.unwrap_or(5060);
    Peer { addr: SocketAddr::new(peer.addr.ip(), port), ..peer }
}

/// A random source for branches, tags and SSRCs. Seedable so that tests are deterministic.
/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A token of `len` characters from [0-9a-z], for tags and branch suffixes.
    pub fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut s = String::with_capacity(len);
        let mut v = self.next_u64();
        for i in 0..len {
            if i % 12 == 11 {
                v = self.next_u64();
            }
            s.push(ALPHABET[(v % 36) as usize] as char);
            v /= 36;
        }
        s
    }
}

/// Shared by callers that only need "now" from tests or the shell.
pub type Now = Instant;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_per_seed_and_differs_across_seeds() {
        let mut a = Rng::seeded(7);
        let mut b = Rng::seeded(7);
        let mut c = Rng::seeded(8);
        let xa: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
        let t = a.token(20);
        assert_eq!(t.len(), 20);
        assert!(t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
}
