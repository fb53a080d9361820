//! The typed error a command can end with. Each variant has a stable wire `code` (see
//! [`CtiError::code`]) and a message written for the person reading the client's log: what was
//! expected, what came, and whose side is wrong.

use serde_json::{json, Value};

/// Why a command failed. Sent as `{"ok":false,"error":{"code":..,"message":..}}`.
///
/// The client's fault: `BadRequest`, `UnknownCommand`, `MissingField`, `TooLarge`, `Unauthenticated`,
/// `Forbidden`, `RateLimited`. The state of the world's: `WrongState`, `NotFound`, `ResumeGap`, `Busy`.
/// Ours: `Internal`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CtiError {
    /// The principal may not do this (role, tenant, another agent's state or call).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Not JSON, not an object, wrong version, a field of the wrong type or an invalid value.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// `cmd` names no command of this protocol version.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A required field is absent (the path, e.g. `args.call`).
    #[error("missing field {0}")]
    MissingField(String),
    /// The command does not fit the current state (e.g. a transfer while not talking).
    #[error("wrong state: {0}")]
    WrongState(String),
    /// The call, agent, queue or tenant named does not exist (or is not visible to the principal).
    #[error("not found: {0}")]
    NotFound(String),
    /// No `auth` yet, or the token is not known.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The message is larger than the server accepts.
    #[error("message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// `resume` asked for events that are no longer kept; a snapshot follows.
    #[error("events after seq {since} are no longer kept (oldest kept: {oldest}); a snapshot follows")]
    ResumeGap { since: u64, oldest: u64 },
    /// Too many commands of this connection are still waiting for their result.
    #[error("busy: {0}")]
    Busy(String),
    /// The connection sends messages faster than its limit (`rate` per second on average, bursts of
    /// `burst`); the message was not carried out. A connection that keeps it up is closed.
    #[error("rate limited: more than {rate} messages per second (bursts of {burst}) on this connection; this one was not carried out, retry in {retry_ms} ms")]
    RateLimited { rate: u32, burst: u32, retry_ms: u64 },
    /// A failure on the server's side; the message says which part.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CtiError {
    /// The stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            CtiError::Forbidden(_) => "forbidden",
            CtiError::BadRequest(_) => "bad_request",
            CtiError::UnknownCommand(_) => "unknown_command",
            CtiError::MissingField(_) => "missing_field",
            CtiError::WrongState(_) => "wrong_state",
            CtiError::NotFound(_) => "not_found",
            CtiError::Unauthenticated(_) => "unauthenticated",
            CtiError::TooLarge { .. } => "too_large",
            CtiError::ResumeGap { .. } => "resume_gap",
            CtiError::Busy(_) => "busy",
            CtiError::RateLimited { .. } => "rate_limited",
            CtiError::Internal(_) => "internal",
        }
    }

    /// Every code, for the schema test and documentation.
    pub const CODES: [&'static str; 12] = [
        "forbidden",
        "bad_request",
        "unknown_command",
        "missing_field",
        "wrong_state",
        "not_found",
        "unauthenticated",
        "too_large",
        "resume_gap",
        "busy",
        "rate_limited",
        "internal",
    ];

    /// The `error` object of a failed result.
    pub fn to_json(&self) -> Value {
        json!({ "code": self.code(), "message": self.to_string() })
    }
}
