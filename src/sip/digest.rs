//! Digest authentication (RFC 7616 / RFC 2617): MD5 and SHA-256, qop=auth.
