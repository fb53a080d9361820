//! Call records in SQLite, written off the hot path.
//!
//! Every call leaves exactly one [`CallRecord`] (domain rule: nothing a caller did may be lost, including
//! calls abandoned in the announcement). The SIP thread hands records to a [`RecordSink`]; `submit` only
//! pushes onto an unbounded channel and never blocks. One writer thread ([`RecordWriter`]) drains the
//! channel in batches and inserts each batch in one transaction.
//!
//! Storage: SQLite in WAL mode (`journal_mode=WAL`, `synchronous=NORMAL`: a commit survives a process
//! crash; an OS crash may lose the last transactions but never corrupts the file). The schema is versioned
//! with `PRAGMA user_version` and evolved by the ordered list in [`MIGRATIONS`].
//!
//! Crash safety: `call_id` (callgate's own id) is the PRIMARY KEY and rows are written with
//! `INSERT OR IGNORE`, so replaying records (e.g. from a future spill/journal file) never writes a call twice.

mod schema;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};

pub use schema::{MIGRATIONS, SCHEMA_VERSION};
pub use writer::{RecordSink, RecordStats, RecordWriter, WriterConfig};

/// How a call ended. Stored as [`Outcome::as_str`] in the `outcome` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered and ended normally (announcement played / conversation over).
    Completed,
    /// The caller hung up before being served (e.g. during the announcement or in the queue).
    Abandoned,
    /// Refused by policy: trunk ACL (403) or similar.
    Rejected,
    /// No service for the dialled number (404).
    NotFound,
    /// No common codec / unacceptable offer (488).
    NotAcceptable,
    /// An error on our side or the far side (5xx, timeouts).
    Failed,
    /// Refused because of load (503 / 486).
    Busy,
    /// Ended because callgate shut down.
    Shutdown,
    /// Handed through to a fixed destination (B2BUA bridge) and ended there.
    Bridged,
    /// CANCELled by the caller before a final response.
    Cancelled,
}

impl Outcome {
    /// Every outcome, in a fixed order (metrics render them in this order).
    pub const ALL: [Outcome; 10] = [
        Outcome::Completed,
        Outcome::Abandoned,
        Outcome::Rejected,
        Outcome::NotFound,
        Outcome::NotAcceptable,
        Outcome::Failed,
        Outcome::Busy,
        Outcome::Shutdown,
        Outcome::Bridged,
        Outcome::Cancelled,
    ];

    /// The stored and exported name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Abandoned => "abandoned",
            Outcome::Rejected => "rejected",
            Outcome::NotFound => "not_found",
            Outcome::NotAcceptable => "not_acceptable",
            Outcome::Failed => "failed",
            Outcome::Busy => "busy",
            Outcome::Shutdown => "shutdown",
            Outcome::Bridged => "bridged",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The inverse of [`Outcome::as_str`].
    pub fn from_name(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Dense index 0..ALL.len() (for counter arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One call, as stored in the `calls` table (one column per field, same names).
/// Times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// callgate's own id for the call; unique; the PRIMARY KEY.
    pub call_id: String,
    /// The Call-ID header of the inbound INVITE.
    pub sip_call_id: String,
    pub tenant: Option<String>,
    pub trunk: Option<String>,
    pub service: Option<String>,
    /// The caller (From URI or number).
    pub caller: String,
    /// The dialled number (normalised).
    pub number: String,
    /// Where the INVITE came from, `ip:port`.
    pub source: String,
    /// `udp` / `tcp`.
    pub transport: String,
    pub arrived_ms: i64,
    pub answered_ms: Option<i64>,
    pub ended_ms: i64,
    pub outcome: Outcome,
    /// The final SIP status we sent or received (200, 403, 404, 487, ...).
    pub sip_status: u16,
    /// Free text: why it ended (BYE from caller, reason phrase, ...).
    pub reason: String,
    /// The DTMF digits the caller pressed during the call, in order (RFC 4733 or SIP INFO).
    pub digits: String,
}

/// Errors from the records store. Each names the database file and the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("records database {path}: cannot create directory {dir}: {source}", path = .path.display(), dir = .dir.display())]
    CreateDir { path: PathBuf, dir: PathBuf, source: std::io::Error },
    #[error("records database {path}: {op} failed: {source}", path = .path.display())]
    Sqlite { path: PathBuf, op: &'static str, source: rusqlite::Error },
    #[error("records database {path}: expected journal_mode wal, SQLite answered {got:?}", path = .path.display())]
    NotWal { path: PathBuf, got: String },
    #[error("records database {path}: expected schema version 0..={known} (user_version), found {found}: written by a newer callgate?", path = .path.display())]
    UnknownSchema { path: PathBuf, found: i64, known: i64 },
    #[error("records database {path}: call {call_id:?}: expected an outcome name, found {found:?}", path = .path.display())]
    BadOutcome { path: PathBuf, call_id: String, found: String },
    #[error("records database {path}: call {call_id:?}: expected sip_status in 0..=65535, found {found}", path = .path.display())]
    BadStatus { path: PathBuf, call_id: String, found: i64 },
    #[error("records database {path}: cannot start the writer thread: {source}", path = .path.display())]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("records database {path}: the writer thread has stopped", path = .path.display())]
    WriterGone { path: PathBuf },
    #[error("records database {path}: flush not confirmed within {waited:?}", path = .path.display())]
    FlushTimeout { path: PathBuf, waited: std::time::Duration },
    #[error("records database {path}: the writer thread panicked", path = .path.display())]
    WriterPanicked { path: PathBuf },
    #[error("records database {path}: {lost} records could not be written at close: {source}", path = .path.display())]
    Lost { path: PathBuf, lost: u64, source: rusqlite::Error },
}

pub(crate) fn sql_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> RecordsError + 'a {
    move |source| RecordsError::Sqlite { path: path.to_path_buf(), op, source }
}

/// Reads every record in the database, ordered by `arrived_ms` then `call_id`. For tests and the CLI.
/// Opens the file read-only; works while a writer has it open (WAL).
pub fn read_records(path: &Path) -> Result<Vec<CallRecord>, RecordsError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err(path, "open read-only"))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql_err(path, "set busy_timeout"))?;
    let mut stmt = conn
        .prepare(
            "SELECT call_id, sip_call_id, tenant, trunk, service, caller, number, source, transport,
                    arrived_ms, answered_ms, ended_ms, outcome, sip_status, reason, digits
             FROM calls ORDER BY arrived_ms, call_id",
        )
        .map_err(sql_err(path, "prepare SELECT from calls"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                CallRecord {
                    call_id: r.get(0)?,
                    sip_call_id: r.get(1)?,
                    tenant: r.get(2)?,
                    trunk: r.get(3)?,
                    service: r.get(4)?,
                    caller: r.get(5)?,
                    number: r.get(6)?,
                    source: r.get(7)?,
                    transport: r.get(8)?,
                    arrived_ms: r.get(9)?,
                    answered_ms: r.get(10)?,
                    ended_ms: r.get(11)?,
                    outcome: Outcome::Completed, // replaced below
                    sip_status: 0,
                    reason: r.get(14)?,
                    digits: r.get(15)?,
                },
                r.get::<_, String>(12)?,
                r.get::<_, i64>(13)?,
            ))
        })
        .map_err(sql_err(path, "query calls"))?;
    let mut out = Vec::new();
    for row in rows {
        let (mut rec, outcome, status) = row.map_err(sql_err(path, "read a row of calls"))?;
        rec.outcome = Outcome::from_name(&outcome).ok_or_else(|| RecordsError::BadOutcome {
            path: path.to_path_buf(),
            call_id: rec.call_id.clone(),
            found: outcome.clone(),
        })?;
        rec.sip_status = u16::try_from(status).map_err(|_| RecordsError::BadStatus {
            path: path.to_path_buf(),
            call_id: rec.call_id.clone(),
            found: status,
        })?;
        out.push(rec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
