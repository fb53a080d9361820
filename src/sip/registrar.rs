//! The registrar (RFC 3261 §10) with digest authentication, sans-IO.
