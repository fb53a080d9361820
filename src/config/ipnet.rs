//! `IpNet`: an IPv4 or IPv6 prefix (CIDR block) for trunk access lists.
//!
//! Parsing is strict: `10.1.0.0/8` is refused (host bits set) because it is almost always a typo
//! for `10.1.0.0/16`, and an access list that silently admits more than was meant is a security bug.
//! A bare address (`192.0.2.7`, `::1`) is a single host (`/32`, `/128`).
//!
//! IPv4 on dual-stack sockets: an IPv4 peer may show up as the v4-mapped IPv6 address
//! `::ffff:a.b.c.d`. [`IpNet::contains`] treats such an address as the IPv4 address it carries, and a
//! prefix written inside `::ffff:0:0/96` (e.g. `::ffff:10.0.0.0/104`) is stored as the IPv4 prefix it
//! means (`10.0.0.0/8`). A plain IPv6 prefix such as `::/0` therefore does *not* admit IPv4 peers:
//! list `0.0.0.0/0` for that.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix: a network address with its host bits clear, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a text is not an IP prefix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    #[error("{text:?} is not an IPv4 or IPv6 address")]
    BadAddress { text: String },
    #[error("prefix length {text:?} is not a number")]
    BadPrefixLen { text: String },
    #[error("prefix length /{len} is longer than the {max} bits of an IPv{version} address")]
    PrefixTooLong { len: u32, max: u8, version: u8 },
    #[error("host bits are set after the /{prefix} (did you mean {network}?)")]
    HostBitsSet { prefix: u8, network: IpNet },
}

impl IpNet {
    /// A prefix from an address and a length. The address must have no bits set past `prefix`.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, IpNetError> {
        let (max, version) = match addr {
            IpAddr::V4(_) => (32u8, 4u8),
            IpAddr::V6(_) => (128u8, 6u8),
        };
        if prefix > max {
            return Err(IpNetError::PrefixTooLong { len: u32::from(prefix), max, version });
        }
        let net = IpNet { addr: mask(addr, prefix), prefix }.canonical();
        if mask(addr, prefix) != addr {
            return Err(IpNetError::HostBitsSet { prefix, network: net });
        }
        Ok(net)
    }

    /// The network address (host bits clear).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside this prefix. A v4-mapped IPv6 address is treated as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => mask(ip, self.prefix) == self.addr,
            _ => false,
        }
    }

    /// Whether every address of `other` lies inside this prefix.
    pub fn covers(&self, other: &IpNet) -> bool {
        self.prefix <= other.prefix && self.contains(other.addr)
    }

    /// `::ffff:a.b.c.d/96+n` is the IPv4 prefix `a.b.c.d/n`.
    fn canonical(self) -> IpNet {
        if let IpAddr::V6(v6) = self.addr {
            if self.prefix >= 96 {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return IpNet { addr: IpAddr::V4(v4), prefix: self.prefix - 96 };
                }
            }
        }
        self
    }
}

/// A v4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it carries; others unchanged.
pub(crate) fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<IpNet, IpNetError> {
        let s = s.trim();
        let (addr_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| IpNetError::BadAddress { text: addr_text.to_string() })?;
        let max = if addr.is_ipv4() { 32u8 } else { 128u8 };
        let prefix = match len_text {
            None => max,
            Some(l) => {
                if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IpNetError::BadPrefixLen { text: l.to_string() });
                }
                let n: u32 = l.parse().map_err(|_| IpNetError::BadPrefixLen { text: l.to_string() })?;
                if n > u32::from(max) {
                    let version = if addr.is_ipv4() { 4 } else { 6 };
                    return Err(IpNetError::PrefixTooLong { len: n, max, version });
                }
                n as u8
            }
        };
        IpNet::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_v4_and_v6() {
        let n: IpNet = "127.0.0.0/8".parse().unwrap();
        assert_eq!(n.addr(), ip("127.0.0.0"));
        assert_eq!(n.prefix_len(), 8);
        assert_eq!(n.to_string(), "127.0.0.0/8");
        let n: IpNet = "::1/128".parse().unwrap();
        assert_eq!(n.to_string(), "::1/128");
        let n: IpNet = "2001:db8::/32".parse().unwrap();
        assert_eq!(n.prefix_len(), 32);
        assert_eq!("192.0.2.7".parse::<IpNet>().unwrap().to_string(), "192.0.2.7/32");
        assert_eq!("::1".parse::<IpNet>().unwrap().to_string(), "::1/128");
        assert_eq!("0.0.0.0/0".parse::<IpNet>().unwrap().prefix_len(), 0);
    }

    #[test]
    fn rejects_bad_text() {
        assert!(matches!("10.0.0.300/8".parse::<IpNet>(), Err(IpNetError::BadAddress { .. })));
        assert!(matches!("10.0.0.0/".parse::<IpNet>(), Err(IpNetError::BadPrefixLen { .. })));
        assert!(matches!("10.0.0.0/x".parse::<IpNet>(), Err(IpNetError::BadPrefixLen { .. })));
        assert!(matches!("10.0.0.0/+8".parse::<IpNet>(), Err(IpNetError::BadPrefixLen { .. })));
        assert!(matches!("10.0.0.0/33".parse::<IpNet>(), Err(IpNetError::PrefixTooLong { len: 33, .. })));
        assert!(matches!("::/129".parse::<IpNet>(), Err(IpNetError::PrefixTooLong { len: 129, .. })));
        assert!(matches!("10.0.0.0/99999".parse::<IpNet>(), Err(IpNetError::BadPrefixLen { .. })));
        assert!(matches!("".parse::<IpNet>(), Err(IpNetError::BadAddress { .. })));
        assert!(matches!("example.com/8".parse::<IpNet>(), Err(IpNetError::BadAddress { .. })));
        match "10.1.0.0/8".parse::<IpNet>() {
            Err(e @ IpNetError::HostBitsSet { .. }) => {
                assert_eq!(e.to_string(), "host bits are set after the /8 (did you mean 10.0.0.0/8?)")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!("2001:db8::1/64".parse::<IpNet>(), Err(IpNetError::HostBitsSet { .. })));
    }

    #[test]
    fn contains_v4_v6_and_mapped() {
        let lo: IpNet = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(lo.contains(ip("127.255.255.255")));
        assert!(!lo.contains(ip("128.0.0.1")));
        assert!(!lo.contains(ip("::1")));
        // An IPv4 peer on a dual-stack socket.
        assert!(lo.contains(ip("::ffff:127.0.0.1")));
        assert!(!lo.contains(ip("::ffff:10.0.0.1")));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("127.0.0.1")));
        let any6: IpNet = "::/0".parse().unwrap();
        assert!(any6.contains(ip("::1")));
        assert!(!any6.contains(ip("::ffff:127.0.0.1")), "::/0 is IPv6 only");
        let any4: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(any4.contains(ip("203.0.113.9")));
        assert!(any4.contains(ip("::ffff:203.0.113.9")));
        let one: IpNet = "::1/128".parse().unwrap();
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
    }

    #[test]
    fn mapped_prefix_is_stored_as_v4() {
        let n: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(ip("10.9.9.9")));
        assert!(n.contains(ip("::ffff:10.9.9.9")));
    }

    #[test]
    fn covers() {
        let a: IpNet = "10.0.0.0/8".parse().unwrap();
        let b: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(a.covers(&b));
        assert!(!b.covers(&a));
        assert!(a.covers(&a));
        let c: IpNet = "::1/128".parse().unwrap();
        assert!(!a.covers(&c));
    }
}
