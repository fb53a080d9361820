//! Call records, the ACD's queue log and pending callbacks in SQLite, written off the hot path.
//!
//! Every call leaves exactly one [`CallRecord`] (domain rule: nothing a caller did may be lost, including
//! calls abandoned in the announcement). The SIP thread hands records to a [`RecordSink`], and the ACD's
//! [`QueueEvent`](crate::acd::log::QueueEvent)s and callback changes go the same way ([`Row`]); `submit`
//! only pushes onto an unbounded channel and never blocks. One writer thread ([`RecordWriter`]) drains
//! the channel in batches and writes each batch in one transaction, rows in the order they were sent.
//!
//! Storage: SQLite in WAL mode (`journal_mode=WAL`, `synchronous=NORMAL`). The schema is versioned
//! with `PRAGMA user_version` and evolved by the ordered list in [`MIGRATIONS`]:
//! 1 `calls`, 2 `calls.digits`, 3 `queue_log`, 4 `callbacks`, 5 `calls.queue/agent/menu_choice/recording/
//! wait_ms/talk_ms/end_reason` (nullable).
//!
//! # What survives a crash
//! - A batch is one transaction; once its COMMIT has returned it survives `kill -9` of callgate (the WAL
//!   frames are in the OS page cache, and SQLite replays the WAL at the next open). With
//!   `synchronous=NORMAL` the WAL is not fsynced at every commit, so an OS crash or power loss may lose the
//!   transactions since the last checkpoint's fsync, never corrupting the file.
//! - Lost on `kill -9`: the rows still in the channel and the batch being gathered or written — at most
//!   what was submitted in the last [`WriterConfig::linger`] (50 ms) plus one batch. Calls end, and
//!   their records are submitted, after the BYE is answered, so "every call ended before the kill" means
//!   ended more than one linger + one commit earlier.
//! - Nothing is written twice: `calls.call_id` is the PRIMARY KEY, `queue_log` has a unique key over the
//!   event and a per-key sequence number (see `log.rs` for why that makes a replay a no-op),
//!   `callbacks.id` is the PRIMARY KEY with upsert/delete; rows are inserted with `INSERT OR IGNORE`.

mod log;
mod schema;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};

pub use schema::{MIGRATIONS, SCHEMA_VERSION};
pub use log::{decode_event, event_data, read_callbacks, read_queue_log, CallContact, CallbackRecord, Contact, RecordsReader, LOAD_MARGIN_MS};
pub use writer::{RecordSink, RecordStats, RecordWriter, Row, WriterConfig};

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
    // Since schema version 5: what the ACD and the media path add. None when the call never had it (and
    // for every row written before version 5).
    /// The ACD queue the call was last in.
    pub queue: Option<String>,
    /// The id of the agent who answered (the last one, after transfers inside the ACD).
    pub agent: Option<String>,
    /// The menu option the caller chose (its key or label).
    pub menu_choice: Option<String>,
    /// The recording's file (relative to the tenant's recordings directory).
    pub recording: Option<String>,
    /// Time in queue until answered or abandoned, ms.
    pub wait_ms: Option<u64>,
    /// Time talking with an agent (hold excluded), ms.
    pub talk_ms: Option<u64>,
    /// Who or what ended the call: "caller", "agent", "system", "max_wait", ...
    pub end_reason: Option<String>,
}

impl Default for CallRecord {
    /// An empty record (all text empty, times 0, no optional field set). The outcome is
    /// [`Outcome::Failed`]: a record nobody filled in is not a success. For `..Default::default()` in
    /// constructors, so that fields added later (all optional) need no change there.
    fn default() -> Self {
        CallRecord {
            call_id: String::new(),
            sip_call_id: String::new(),
            tenant: None,
            trunk: None,
            service: None,
            caller: String::new(),
            number: String::new(),
            source: String::new(),
            transport: String::new(),
            arrived_ms: 0,
            answered_ms: None,
            ended_ms: 0,
            outcome: Outcome::Failed,
            sip_status: 0,
            reason: String::new(),
            digits: String::new(),
            queue: None,
            agent: None,
            menu_choice: None,
            recording: None,
            wait_ms: None,
            talk_ms: None,
            end_reason: None,
        }
    }
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
    #[error("records database {path}: queue_log row {id} ({event}): {what}", path = .path.display())]
    BadQueueRow { path: PathBuf, id: i64, event: String, what: String },
    #[error("records database {path}: callback {id}: expected {field}, found {found:?}", path = .path.display())]
    BadCallback { path: PathBuf, id: u64, field: &'static str, found: String },
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
    RecordsReader::open(path)?.records(i64::MIN..i64::MAX)
}

#[cfg(test)]
mod tests;
