//! Call records, the ACD's queue log and pending callbacks in SQLite (the default) or PostgreSQL,
//! written off the hot path.
//!
//! Every call leaves exactly one [`CallRecord`] (domain rule: nothing a caller did may be lost, including
//! calls abandoned in the announcement). The SIP thread hands records to a [`RecordSink`], and the ACD's
//! [`QueueEvent`](crate::acd::log::QueueEvent)s and callback changes go the same way ([`Row`]); `submit`
//! only pushes onto an unbounded channel and never blocks. One writer thread ([`RecordWriter`]) drains
//! the channel in batches and writes each batch in one transaction, rows in the order they were sent.
//!
//! # Backends
//! The profile's `[records] database` chooses ([`Database::parse`]): a `postgres://` / `postgresql://`
//! URL or a libpq `key=value` connection string (`host=... dbname=...`) is a PostgreSQL server
//! (`pg.rs`); anything else is the path of an SQLite file. Both have the same tables, columns, keys
//! and migration versions, and every reader ([`RecordsReader`], [`read_records`], [`read_queue_log`],
//! [`read_callbacks`], [`RecordsReader::load_day`]) returns the same values from either. The writer
//! API is the same too: [`RecordWriter::open`] takes the profile value as a path.
//!
//! Storage, SQLite: WAL mode (`journal_mode=WAL`, `synchronous=NORMAL`). The schema is versioned
//! with `PRAGMA user_version` and evolved by the ordered list in [`MIGRATIONS`]:
//! 1 `calls`, 2 `calls.digits`, 3 `queue_log`, 4 `callbacks`, 5 `calls.queue/agent/menu_choice/recording/
//! wait_ms/talk_ms/end_reason` (nullable).
//!
//! Storage, PostgreSQL: the same migrations spelled for PostgreSQL ([`PG_MIGRATIONS`], same numbers),
//! versioned by a `schema_version` table (one row per applied migration, with its time), applied in one
//! transaction under an advisory lock. Rows are written with the same unique keys and
//! `ON CONFLICT DO NOTHING`; a batch is one transaction with one multi-row `INSERT .. SELECT FROM
//! unnest(..)` per table, so a batch of 512 rows costs a handful of round trips, not 512.
//!
//! # What survives a crash
//! - A batch is one transaction; once its COMMIT has returned it survives `kill -9` of callgate.
//!   SQLite: the WAL frames are in the OS page cache, and SQLite replays the WAL at the next open. With
//!   `synchronous=NORMAL` the WAL is not fsynced at every commit, so an OS crash or power loss may lose the
//!   transactions since the last checkpoint's fsync, never corrupting the file. PostgreSQL: with the
//!   server's default `synchronous_commit = on` a returned COMMIT is on the server's disk, so it also
//!   survives a crash of the database host; a transaction the server has not committed when callgate
//!   dies is rolled back by the server.
//! - Lost on `kill -9`: the rows still in the channel and the batch being gathered or written — at most
//!   what was submitted in the last [`WriterConfig::linger`] (50 ms) plus one batch. Calls end, and
//!   their records are submitted, after the BYE is answered, so "every call ended before the kill" means
//!   ended more than one linger + one commit earlier.
//! - Nothing is written twice: `calls.call_id` is the PRIMARY KEY, `queue_log` has a unique key over the
//!   event and a per-key sequence number (see `log.rs` for why that makes a replay a no-op),
//!   `callbacks.id` is the PRIMARY KEY with upsert/delete; rows are inserted with `INSERT OR IGNORE`
//!   (SQLite) / `ON CONFLICT DO NOTHING` (PostgreSQL). So a batch whose COMMIT answer was lost (the
//!   PostgreSQL connection broke) is simply written again after reconnecting.
//! - PostgreSQL unreachable: the writer keeps the batch and the channel keeps the rest (memory, see
//!   [`RecordStats::queued`]); it reconnects with back-off and writes them when the server is back.

mod log;
mod pg;
mod schema;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};

pub use schema::{MIGRATIONS, PG_MIGRATIONS, SCHEMA_VERSION};
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

/// Errors from the records store. Each names the database (the SQLite file, or for PostgreSQL its
/// host, port, user and database name, never the password) and the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("records database {path}: cannot create directory {dir}: {source}", path = .path.display(), dir = .dir.display())]
    CreateDir { path: PathBuf, dir: PathBuf, source: std::io::Error },
    #[error("records database {path}: {op} failed: {source}", path = .path.display())]
    Sqlite { path: PathBuf, op: &'static str, source: rusqlite::Error },
    #[error("records database {path}: {op} failed: {}", pg_text(.source), path = .path.display())]
    Postgres { path: PathBuf, op: &'static str, source: postgres::Error },
    #[error("records database {value}: expected a PostgreSQL connection string (postgres://USER@HOST:PORT/DBNAME or host=HOST port=PORT user=USER dbname=DBNAME): {}", pg_text(.source))]
    BadConninfo { value: String, source: postgres::Error },
    #[error("records database {path}: expected server_encoding UTF8, the server answered {got:?} (create the database with: createdb -E UTF8 -T template0 NAME)", path = .path.display())]
    NotUtf8 { path: PathBuf, got: String },
    #[error("records database {path}: expected journal_mode wal, SQLite answered {got:?}", path = .path.display())]
    NotWal { path: PathBuf, got: String },
    #[error("records database {path}: expected schema version 0..={known}, found {found}: written by a newer callgate?", path = .path.display())]
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
    Lost { path: PathBuf, lost: u64, source: BackendError },
}

/// The database's own error, from either backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_text(.0))]
    Postgres(#[from] postgres::Error),
}

/// A PostgreSQL error as a person needs it: the client's kind ("db error", "error connecting to
/// server") and the cause, which `postgres::Error`'s Display leaves out (the server's
/// `ERROR: relation "calls" does not exist`, the socket's `Connection refused`).
pub(crate) fn pg_text(e: &postgres::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

pub(crate) fn sql_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> RecordsError + 'a {
    move |source| RecordsError::Sqlite { path: path.to_path_buf(), op, source }
}

pub(crate) fn pg_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(postgres::Error) -> RecordsError + 'a {
    move |source| RecordsError::Postgres { path: path.to_path_buf(), op, source }
}

/// Where the records are kept: the profile's `[records] database`, classified by [`Database::parse`].
///
/// `Debug` and `Display` never show a PostgreSQL password.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (created with its directory if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL server and database (which must exist; callgate creates its tables).
    Postgres(Box<PgTarget>),
}

/// A parsed PostgreSQL connection string. See [`Database::parse`] for the defaults callgate adds.
#[derive(Clone)]
pub struct PgTarget {
    conninfo: String,
    config: postgres::Config,
    label: String,
}

impl PartialEq for PgTarget {
    fn eq(&self, other: &Self) -> bool {
        self.conninfo == other.conninfo
    }
}
impl Eq for PgTarget {}

impl PgTarget {
    /// The client configuration (with callgate's defaults applied).
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }
    /// `postgresql host=H port=P user=U dbname=D`: for logs and errors; no password.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// The libpq connection-string keywords (PostgreSQL 15, "Parameter Key Words"): a profile value that
/// starts with one of these followed by `=` is a PostgreSQL connection string.
const CONNINFO_KEYWORDS: &[&str] = &[
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "channel_binding", "connect_timeout",
    "client_encoding", "options", "application_name", "fallback_application_name", "keepalives",
    "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication",
    "gssencmode", "sslmode", "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword",
    "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "krbsrvname", "gsslib", "service", "target_session_attrs",
    "load_balance_hosts", "sslnegotiation",
];

/// Debian's (and PostgreSQL's default build's) Unix socket directory, used when a connection string
/// names no host (`postgres:///callgate`, `dbname=callgate`), as libpq does.
pub const PG_DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

impl Database {
    /// True if `value` is meant as a PostgreSQL connection string: it starts with `postgres://` or
    /// `postgresql://`, or with a libpq keyword and `=` (`host=db1 dbname=callgate`). Says nothing about
    /// whether it parses; [`Database::parse`] does.
    pub fn is_postgres(value: &str) -> bool {
        let v = value.trim_start();
        // Lower case only, as libpq reads them.
        if v.starts_with("postgres://") || v.starts_with("postgresql://") {
            return true;
        }
        match v.split_once('=') {
            Some((key, _)) => CONNINFO_KEYWORDS.contains(&key.trim_end()),
            None => false,
        }
    }

    /// Classifies the profile's `[records] database`. PostgreSQL ([`Database::is_postgres`]): parsed
    /// with the `postgres` crate's rules (libpq's URL and key/value forms; a password may be given,
    /// or comes from nowhere else: no `.pgpass`); when it names no host, [`PG_DEFAULT_SOCKET_DIR`];
    /// unless given, `connect_timeout` 10 s, `tcp_user_timeout` 30 s (a write to a vanished server
    /// fails instead of hanging the writer) and `application_name` callgate. TLS is not supported:
    /// `sslmode=require` is refused at connect; use a local socket or a trusted network.
    /// Anything else is an SQLite file path.
    pub fn parse(value: &str) -> Result<Database, RecordsError> {
        if !Database::is_postgres(value) {
            return Ok(Database::Sqlite(PathBuf::from(value)));
        }
        let mut config: postgres::Config = value
            .trim()
            .parse()
            .map_err(|source| RecordsError::BadConninfo { value: redact(value), source })?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            config.host_path(PG_DEFAULT_SOCKET_DIR);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(std::time::Duration::from_secs(30));
        }
        if config.get_application_name().is_none() {
            config.application_name("callgate");
        }
        let label = pg_label(&config);
        Ok(Database::Postgres(Box::new(PgTarget { conninfo: value.to_owned(), config, label })))
    }

    /// [`Database::parse`] of a path as the profile holds it (`RecordsCfg::database`). A path that is
    /// not UTF-8 is an SQLite file.
    pub fn from_path(path: &Path) -> Result<Database, RecordsError> {
        match path.to_str() {
            Some(s) if Database::is_postgres(s) => Database::parse(s),
            _ => Ok(Database::Sqlite(path.to_path_buf())),
        }
    }

    pub fn is_postgres_db(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }

    /// What errors and logs call it: the SQLite path, or the PostgreSQL label (no password).
    pub fn label(&self) -> PathBuf {
        match self {
            Database::Sqlite(p) => p.clone(),
            Database::Postgres(t) => PathBuf::from(&t.label),
        }
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(t) => f.write_str(&t.label),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Database::Postgres(t) => f.debug_tuple("Postgres").field(&t.label).finish(),
        }
    }
}

/// `postgresql host=H port=P user=U dbname=D` from what the connection string set.
fn pg_label(c: &postgres::Config) -> String {
    let mut s = String::from("postgresql");
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .chain(if c.get_hosts().is_empty() { c.get_hostaddrs().iter().map(|a| a.to_string()).collect() } else { Vec::new() })
        .collect();
    if !hosts.is_empty() {
        s.push_str(&format!(" host={}", hosts.join(",")));
    }
    if !c.get_ports().is_empty() {
        let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
        s.push_str(&format!(" port={}", ports.join(",")));
    }
    if let Some(u) = c.get_user() {
        s.push_str(&format!(" user={u}"));
    }
    if let Some(d) = c.get_dbname() {
        s.push_str(&format!(" dbname={d}"));
    }
    s
}

/// A connection string that did not parse, with anything that may be a password cut out:
/// `user:SECRET@` in a URL, the value of `password=` in key/value form.
pub fn redact(value: &str) -> String {
    let mut out = value.to_owned();
    // URL userinfo: scheme://user:password@host
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let auth_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..auth_end].rfind('@') {
            let at = rest + at;
            if let Some(colon) = out[rest..at].find(':') {
                out.replace_range(rest + colon + 1..at, "***");
            }
        }
    }
    // password=... in key/value form (whitespace around '=' allowed, the value maybe 'quoted' with
    // \-escapes) or as a URL query parameter (up to the next '&').
    let mut from = 0;
    while let Some(i) = out[from..].find("password") {
        let mut j = from + i + "password".len();
        let bytes = out.as_bytes();
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= bytes.len() || bytes[j] != b'=' {
            from = j.max(from + i + 1);
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let start = j;
        let end = if bytes.get(j) == Some(&b'\'') {
            j += 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(bytes.len())
        } else {
            while j < bytes.len() && !bytes[j].is_ascii_whitespace() && bytes[j] != b'&' {
                j += 1;
            }
            j
        };
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

/// The schema version of the database `path` names (SQLite: `user_version`; PostgreSQL: the largest
/// `schema_version.version`); 0 for a database callgate has not written to. Compare with
/// [`SCHEMA_VERSION`].
pub fn schema_version(path: &Path) -> Result<i64, RecordsError> {
    match Database::from_path(path)? {
        Database::Sqlite(p) => {
            let c = rusqlite::Connection::open_with_flags(&p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(sql_err(&p, "open read-only"))?;
            c.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql_err(&p, "read user_version"))
        }
        Database::Postgres(t) => pg::pg_schema_version(&t),
    }
}

/// Reads every record in the database, ordered by `arrived_ms` then `call_id`. For tests and the CLI.
/// SQLite: opens the file read-only; works while a writer has it open (WAL). PostgreSQL: one
/// connection (`path` is then the connection string, see [`Database::from_path`]).
pub fn read_records(path: &Path) -> Result<Vec<CallRecord>, RecordsError> {
    RecordsReader::open(path)?.records(i64::MIN..i64::MAX)
}

#[cfg(test)]
mod tests;
