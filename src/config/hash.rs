//! Agent passwords: the digest HA1 values stored instead of the password.
//!
//! HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2, RFC 2617 §3.2.2.2), with H = MD5 or
//! SHA-256, and the agent's extension as the username. A profile gives either the password, which is
//! hashed at load with the tenant's realm and then dropped, or both HA1 values in hex (as
//! `callgate hash-password` prints them). An HA1 is bound to its realm: changing a tenant's realm
//! invalidates the hex values written for it.

use md5::{Digest, Md5};
use sha2::Sha256;

/// MD5(user:realm:password).
pub fn ha1_md5(user: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(user.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// SHA-256(user:realm:password).
pub fn ha1_sha256(user: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Lower-case hex.
pub fn to_hex(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(HEX[usize::from(x >> 4)] as char);
        s.push(HEX[usize::from(x & 15)] as char);
    }
    s
}

/// Exactly `2 * N` hex digits (either case) → bytes.
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim().as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nibble(s[2 * i])? << 4 | nibble(s[2 * i + 1])?;
    }
    Some(out)
}

/// What `callgate hash-password EXTENSION REALM PASSWORD` prints: the two lines to paste into an
/// `[[agent]]` table instead of `password`.
pub fn hash_password_toml(extension: &str, realm: &str, password: &str) -> String {
    format!(
        "ha1_md5 = \"{}\"\nha1_sha256 = \"{}\"\n",
        to_hex(&ha1_md5(extension, realm, password)),
        to_hex(&ha1_sha256(extension, realm, password))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(to_hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(from_hex::<3>("00AB7f"), Some([0x00, 0xab, 0x7f]));
        assert_eq!(from_hex::<3>("00ab7"), None);
        assert_eq!(from_hex::<2>("0g00"), None);
    }

    #[test]
    fn rfc_2617_example_ha1() {
        // RFC 2617 §3.5: user Mufasa, realm testrealm@host.com, password "Circle Of Life". The RFC
        // prints only the response; HA1 here is from `printf 'Mufasa:testrealm@host.com:Circle Of Life' | md5sum`.
        assert_eq!(
            to_hex(&ha1_md5("Mufasa", "testrealm@host.com", "Circle Of Life")),
            "939e7578ed9e3c518a452acee763bce9"
        );
    }
}
