//! The queue log and the pending callbacks in the records database: row encoding and the reading side.
//!
//! # `queue_log` (migration 3)
//! (Both backends; PostgreSQL's spelling of the tables is in `schema.rs`, its queries in `pg.rs`.)
//! One row per [`QueueEvent`]: `at_ms, tenant, queue, call, agent` as in the event, `event` =
//! [`QueueEventKind::name`], `data` = the kind's fields as a JSON object with the field names of
//! [`QueueEventKind`] (e.g. `{"wait_ms":12000,"ring_ms":3000}` for `connect`, `{"reason":"no_answer",
//! "ring_ms":15000}` for `miss`), and `seq`, see below. `id` is SQLite's rowid: the order rows were
//! committed in, which is the order the ACD emitted them (one writer thread, FIFO channel).
//!
//! **No duplicates on replay.** The unique key is `(at_ms, tenant, queue, call, agent, event, seq)`, and rows
//! are written with `INSERT OR IGNORE` (PostgreSQL: `ON CONFLICT DO NOTHING`). `seq` is assigned by the writer thread: the number of events with
//! the same `(at_ms, tenant, queue, call, agent, event)` it has taken before this one (almost always 0).
//! So two identical events in the same millisecond are two facts and both are stored (seq 0 and 1), while
//! a restarted process that submits the same sequence of events again (a replay from a journal or from
//! whatever the sender kept) gives every event the key it had the first time and writes nothing. The
//! writer's own retries of a failed batch keep the numbers they were given. Within one process the writer
//! cannot tell a resubmission from a new identical event: senders do not resubmit (the channel does not
//! lose rows while the writer runs). The writer remembers keys for 60 s of event time (see `writer.rs`),
//! far longer than the events of one millisecond arrive apart.
//!
//! # `callbacks` (migration 4)
//! The callbacks waiting for their turn, so that they survive a restart: the core upserts a row when
//! the ACD takes or reschedules a callback and deletes it when the callback is done or given up; at
//! start it reads them with [`read_callbacks`] and hands them back to the ACD. Upsert and delete are
//! idempotent, so replaying a sequence of them in order leaves the same table.

use std::ops::Range;
use std::path::{Path, PathBuf};

use std::cell::RefCell;

use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

use super::{pg, sql_err, CallRecord, Database, Outcome, RecordsError};
use crate::acd::log::{MissReason, QueueEvent, QueueEventKind};
use crate::stats::{Date, Stats, DAY_MS};

/// A pending callback as stored in the `callbacks` table. `id` is the ACD's callback id, the PRIMARY KEY
/// (stored as SQLite's signed INTEGER by a bit-for-bit cast, so every `u64` round-trips).
#[derive(Clone, Debug, PartialEq)]
pub struct CallbackRecord {
    pub id: u64,
    pub tenant: String,
    pub queue: String,
    /// The number to call back.
    pub number: String,
    /// When the citizen asked (Unix ms).
    pub requested_ms: i64,
    /// Not before this time (Unix ms).
    pub due_ms: i64,
    /// The place in the line: the caller's original enqueue time (Unix ms).
    pub enqueued_ms: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The caller's data (the ACD's `CallInfo`: cg_id, caller, number, priority, skill, language) as JSON.
    pub info: Value,
}

/// A call's arrival, from the `calls` table (the covering index `calls_contacts`), for repeat callers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContact {
    pub call_id: String,
    pub caller: String,
    pub arrived_ms: i64,
    pub outcome: Outcome,
}

/// A caller's contact with the centre, for first-call resolution (repeat callers): every `enter`
/// row of the queue log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub at_ms: i64,
    pub tenant: String,
    pub call: String,
    pub caller: String,
}

/// Encodes an event's kind-specific fields as the `data` JSON object.
pub fn event_data(kind: &QueueEventKind) -> String {
    let v = match kind {
        QueueEventKind::Enter { caller, priority, position, skill } => {
            json!({"caller": caller, "priority": priority, "position": position, "skill": skill})
        }
        QueueEventKind::Refused { caller, reason } => json!({"caller": caller, "reason": reason}),
        QueueEventKind::Offer { wait_ms } => json!({"wait_ms": wait_ms}),
        QueueEventKind::Miss { reason, ring_ms } => json!({"reason": reason.as_str(), "ring_ms": ring_ms}),
        QueueEventKind::Connect { wait_ms, ring_ms } => json!({"wait_ms": wait_ms, "ring_ms": ring_ms}),
        QueueEventKind::Abandon { wait_ms, position } => json!({"wait_ms": wait_ms, "position": position}),
        QueueEventKind::Timeout { wait_ms } => json!({"wait_ms": wait_ms}),
        QueueEventKind::Overflow { to, wait_ms } => json!({"to": to, "wait_ms": wait_ms}),
        QueueEventKind::CallbackRequested { number, due_ms } => json!({"number": number, "due_ms": due_ms}),
        QueueEventKind::CallbackConnect { wait_ms } => json!({"wait_ms": wait_ms}),
        QueueEventKind::CallbackFailed { attempt, reason } => json!({"attempt": attempt, "reason": reason}),
        QueueEventKind::Transfer { to, talk_ms } => json!({"to": to, "talk_ms": talk_ms}),
        QueueEventKind::Complete { talk_ms, hold_ms, by } => json!({"talk_ms": talk_ms, "hold_ms": hold_ms, "by": by}),
        QueueEventKind::WrapupEnd { wrap_ms } => json!({"wrap_ms": wrap_ms}),
        QueueEventKind::Disposition { subject, settled, flag } => {
            json!({"subject": subject, "settled": settled, "flag": flag})
        }
        QueueEventKind::AgentState { state, reason } => json!({"state": state, "reason": reason}),
    };
    v.to_string()
}

fn miss_reason(s: &str) -> Option<MissReason> {
    [MissReason::NoAnswer, MissReason::Busy, MissReason::Declined, MissReason::Unreachable, MissReason::Withdrawn]
        .into_iter()
        .find(|r| r.as_str() == s)
}

/// The union of every kind's `data` fields (decoding into it is faster than into a JSON tree).
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Data {
    caller: Option<String>,
    priority: Option<u64>,
    position: Option<u64>,
    skill: Option<String>,
    reason: Option<String>,
    wait_ms: Option<u64>,
    ring_ms: Option<u64>,
    to: Option<String>,
    number: Option<String>,
    due_ms: Option<i64>,
    attempt: Option<u64>,
    talk_ms: Option<u64>,
    hold_ms: Option<u64>,
    by: Option<String>,
    wrap_ms: Option<u64>,
    subject: Option<String>,
    settled: Option<bool>,
    flag: Option<String>,
    state: Option<String>,
}

fn need<T>(v: Option<T>, name: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("{name}: missing"))
}

/// Decodes `event` + `data` back into a kind. `Err(what)` names the field that is missing or the JSON
/// error (wrong type), or the unknown event name.
pub fn decode_event(event: &str, data: &str) -> Result<QueueEventKind, String> {
    let d: Data = serde_json::from_str(data).map_err(|e| format!("data does not parse as this event's fields ({e})"))?;
    let small = |v: Option<u64>, name: &str, max: u64| -> Result<u64, String> {
        let v = need(v, name)?;
        if v > max {
            return Err(format!("{name}: expected at most {max}, found {v}"));
        }
        Ok(v)
    };
    Ok(match event {
        "enter" => QueueEventKind::Enter {
            caller: need(d.caller, "caller")?,
            priority: small(d.priority, "priority", u8::MAX as u64)? as u8,
            position: small(d.position, "position", u32::MAX as u64)? as u32,
            skill: need(d.skill, "skill")?,
        },
        "refused" => QueueEventKind::Refused { caller: need(d.caller, "caller")?, reason: need(d.reason, "reason")? },
        "offer" => QueueEventKind::Offer { wait_ms: need(d.wait_ms, "wait_ms")? },
        "miss" => {
            let r = need(d.reason, "reason")?;
            QueueEventKind::Miss {
                reason: miss_reason(&r).ok_or_else(|| format!("reason: expected a miss reason, found {r:?}"))?,
                ring_ms: need(d.ring_ms, "ring_ms")?,
            }
        }
        "connect" => QueueEventKind::Connect { wait_ms: need(d.wait_ms, "wait_ms")?, ring_ms: need(d.ring_ms, "ring_ms")? },
        "abandon" => QueueEventKind::Abandon {
            wait_ms: need(d.wait_ms, "wait_ms")?,
            position: small(d.position, "position", u32::MAX as u64)? as u32,
        },
        "timeout" => QueueEventKind::Timeout { wait_ms: need(d.wait_ms, "wait_ms")? },
        "overflow" => QueueEventKind::Overflow { to: need(d.to, "to")?, wait_ms: need(d.wait_ms, "wait_ms")? },
        "callback_requested" => {
            QueueEventKind::CallbackRequested { number: need(d.number, "number")?, due_ms: need(d.due_ms, "due_ms")? }
        }
        "callback_connect" => QueueEventKind::CallbackConnect { wait_ms: need(d.wait_ms, "wait_ms")? },
        "callback_failed" => QueueEventKind::CallbackFailed {
            attempt: small(d.attempt, "attempt", u32::MAX as u64)? as u32,
            reason: need(d.reason, "reason")?,
        },
        "transfer" => QueueEventKind::Transfer { to: need(d.to, "to")?, talk_ms: need(d.talk_ms, "talk_ms")? },
        "complete" => QueueEventKind::Complete {
            talk_ms: need(d.talk_ms, "talk_ms")?,
            hold_ms: need(d.hold_ms, "hold_ms")?,
            by: need(d.by, "by")?,
        },
        "wrapup_end" => QueueEventKind::WrapupEnd { wrap_ms: need(d.wrap_ms, "wrap_ms")? },
        "disposition" => QueueEventKind::Disposition {
            subject: need(d.subject, "subject")?,
            settled: need(d.settled, "settled")?,
            flag: need(d.flag, "flag")?,
        },
        "agent_state" => QueueEventKind::AgentState { state: need(d.state, "state")?, reason: need(d.reason, "reason")? },
        other => return Err(format!("expected an event name, found {other:?}")),
    })
}

/// A read-only connection for the statistics, the CLI and HTTP. SQLite: works while the writer has
/// the file open (WAL readers do not block the writer, nor it them). PostgreSQL: one connection whose
/// session is read-only; each query sees the rows committed when it starts.
pub struct RecordsReader {
    conn: ReaderConn,
    path: PathBuf,
    /// What errors call the database: the SQLite path, or the PostgreSQL label (no password).
    label: PathBuf,
}

enum ReaderConn {
    Sqlite(Connection),
    // The client's methods take &mut self; the reader's take &self (it was never Sync: neither is
    // rusqlite's Connection).
    Postgres(Box<RefCell<postgres::Client>>),
}

impl RecordsReader {
    /// Opens the database `path` names: an SQLite file, or a PostgreSQL connection string (see
    /// [`Database::from_path`]), as the profile's `[records] database` holds it.
    pub fn open(path: &Path) -> Result<RecordsReader, RecordsError> {
        Self::open_database(&Database::from_path(path)?)
    }

    /// [`RecordsReader::open`] for an already classified database.
    pub fn open_database(db: &Database) -> Result<RecordsReader, RecordsError> {
        match db {
            Database::Sqlite(path) => {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(sql_err(path, "open read-only"))?;
                conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql_err(path, "set busy_timeout"))?;
                Ok(RecordsReader { conn: ReaderConn::Sqlite(conn), path: path.clone(), label: path.clone() })
            }
            Database::Postgres(target) => {
                let client = pg::open_reader(target)?;
                let label = db.label();
                Ok(RecordsReader { conn: ReaderConn::Postgres(Box::new(RefCell::new(client))), path: label.clone(), label })
            }
        }
    }

    /// The SQLite file, or for PostgreSQL its label (`postgresql host=.. port=.. user=.. dbname=..`,
    /// no password).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The call records with `range.start <= arrived_ms < range.end`, ordered by `arrived_ms` then `call_id`.
    pub fn records(&self, range: Range<i64>) -> Result<Vec<CallRecord>, RecordsError> {
        let path = &self.label;
        let conn = match &self.conn {
            ReaderConn::Sqlite(c) => c,
            ReaderConn::Postgres(c) => return pg::records(&mut c.borrow_mut(), path, range),
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT call_id, sip_call_id, tenant, trunk, service, caller, number, source, transport,
                        arrived_ms, answered_ms, ended_ms, outcome, sip_status, reason, digits,
                        queue, agent, menu_choice, recording, wait_ms, talk_ms, end_reason
                 FROM calls WHERE arrived_ms >= ?1 AND arrived_ms < ?2 ORDER BY arrived_ms, call_id",
            )
            .map_err(sql_err(path, "prepare SELECT from calls"))?;
        let mut rows = stmt.query([range.start, range.end]).map_err(sql_err(path, "query calls"))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sql_err(path, "read a row of calls"))? {
            let (rec, outcome, status) = (|| -> rusqlite::Result<_> {
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
                        reason: r.get(14)?,
                        digits: r.get(15)?,
                        queue: r.get(16)?,
                        agent: r.get(17)?,
                        menu_choice: r.get(18)?,
                        recording: r.get(19)?,
                        wait_ms: r.get::<_, Option<i64>>(20)?.map(|v| v.max(0) as u64),
                        talk_ms: r.get::<_, Option<i64>>(21)?.map(|v| v.max(0) as u64),
                        end_reason: r.get(22)?,
                        ..Default::default() // outcome and sip_status: below
                    },
                    r.get::<_, String>(12)?,
                    r.get::<_, i64>(13)?,
                ))
            })()
            .map_err(sql_err(path, "read a row of calls"))?;
            out.push(finish_call(path, rec, outcome, status)?);
        }
        Ok(out)
    }

    /// The calls of `tenant` with `range.start <= arrived_ms < range.end`: who called when and how it
    /// ended. Reads only the covering index (fast over weeks of records).
    pub fn call_contacts(&self, range: Range<i64>, tenant: &str) -> Result<Vec<CallContact>, RecordsError> {
        let path = &self.label;
        let conn = match &self.conn {
            ReaderConn::Sqlite(c) => c,
            ReaderConn::Postgres(c) => return pg::call_contacts(&mut c.borrow_mut(), path, range, tenant),
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT call_id, caller, arrived_ms, outcome FROM calls INDEXED BY calls_contacts
                 WHERE tenant = ?1 AND arrived_ms >= ?2 AND arrived_ms < ?3 ORDER BY arrived_ms",
            )
            .map_err(sql_err(path, "prepare SELECT contacts from calls"))?;
        let mut rows = stmt.query(rusqlite::params![tenant, range.start, range.end]).map_err(sql_err(path, "query calls"))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sql_err(path, "read a row of calls"))? {
            let (call_id, caller, arrived_ms, outcome): (String, String, i64, String) =
                (|| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))().map_err(sql_err(path, "read a row of calls"))?;
            out.push(finish_contact(path, call_id, caller, arrived_ms, outcome)?);
        }
        Ok(out)
    }

    /// The queue log rows with `range.start <= at_ms < range.end`, of one tenant or all, in the order they
    /// happened (`at_ms`, then the order they were written).
    pub fn queue_log(&self, range: Range<i64>, tenant: Option<&str>) -> Result<Vec<QueueEvent>, RecordsError> {
        let path = &self.label;
        let conn = match &self.conn {
            ReaderConn::Sqlite(c) => c,
            ReaderConn::Postgres(c) => return pg::queue_log(&mut c.borrow_mut(), path, range, tenant),
        };
        let sql_all = "SELECT id, at_ms, tenant, queue, call, agent, event, data FROM queue_log
                       WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms, id";
        let sql_tenant = "SELECT id, at_ms, tenant, queue, call, agent, event, data FROM queue_log
                          WHERE tenant = ?3 AND at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms, id";
        let mut stmt = conn
            .prepare_cached(if tenant.is_some() { sql_tenant } else { sql_all })
            .map_err(sql_err(path, "prepare SELECT from queue_log"))?;
        let mut rows = match tenant {
            Some(t) => stmt.query(rusqlite::params![range.start, range.end, t]),
            None => stmt.query(rusqlite::params![range.start, range.end]),
        }
        .map_err(sql_err(path, "query queue_log"))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sql_err(path, "read a row of queue_log"))? {
            let row = (|| -> rusqlite::Result<_> {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get_ref(6)?.as_str().map(str::to_owned).map_err(rusqlite::Error::from)?,
                    r.get_ref(7)?.as_str().map(str::to_owned).map_err(rusqlite::Error::from)?,
                ))
            })()
            .map_err(sql_err(path, "read a row of queue_log"))?;
            let (id, at_ms, tenant, queue, call, agent, event, data) = row;
            out.push(finish_event(path, id, at_ms, tenant, queue, call, agent, &event, &data)?);
        }
        Ok(out)
    }

    /// The callers' contacts (`enter` rows) with `range.start <= at_ms < range.end`, for repeat-caller
    /// detection (first-call resolution) over the days after a report's day.
    pub fn contacts(&self, range: Range<i64>, tenant: Option<&str>) -> Result<Vec<Contact>, RecordsError> {
        let path = &self.label;
        let conn = match &self.conn {
            ReaderConn::Sqlite(c) => c,
            ReaderConn::Postgres(c) => return pg::contacts(&mut c.borrow_mut(), path, range, tenant),
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, at_ms, tenant, call, data FROM queue_log
                 WHERE at_ms >= ?1 AND at_ms < ?2 AND event = 'enter' AND (?3 IS NULL OR tenant = ?3)
                 ORDER BY at_ms, id",
            )
            .map_err(sql_err(path, "prepare SELECT contacts from queue_log"))?;
        let mut rows = stmt.query(rusqlite::params![range.start, range.end, tenant]).map_err(sql_err(path, "query contacts"))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sql_err(path, "read a contact row"))? {
            let (id, at_ms, tenant, call, data): (i64, i64, String, String, String) =
                (|| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))()
                    .map_err(sql_err(path, "read a contact row"))?;
            out.push(finish_enter_contact(path, id, at_ms, tenant, call, &data)?);
        }
        Ok(out)
    }

    /// Every pending callback, by due time then id.
    pub fn callbacks(&self) -> Result<Vec<CallbackRecord>, RecordsError> {
        let path = &self.label;
        let conn = match &self.conn {
            ReaderConn::Sqlite(c) => c,
            ReaderConn::Postgres(c) => return pg::callbacks(&mut c.borrow_mut(), path),
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, tenant, queue, number, requested_ms, due_ms, enqueued_ms, attempts, info
                 FROM callbacks ORDER BY due_ms, id",
            )
            .map_err(sql_err(path, "prepare SELECT from callbacks"))?;
        let mut rows = stmt.query([]).map_err(sql_err(path, "query callbacks"))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sql_err(path, "read a row of callbacks"))? {
            #[allow(clippy::type_complexity)]
            let (id, tenant, queue, number, requested_ms, due_ms, enqueued_ms, attempts, info): (
                i64,
                String,
                String,
                String,
                i64,
                i64,
                i64,
                i64,
                String,
            ) = (|| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })()
            .map_err(sql_err(path, "read a row of callbacks"))?;
            out.push(finish_callback(path, id, tenant, queue, number, requested_ms, due_ms, enqueued_ms, attempts, info)?);
        }
        Ok(out)
    }
}

// Row decoding shared by both backends: the same checks, the same errors.

pub(super) fn finish_call(path: &Path, mut rec: CallRecord, outcome: String, status: i64) -> Result<CallRecord, RecordsError> {
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
    Ok(rec)
}

pub(super) fn finish_contact(
    path: &Path,
    call_id: String,
    caller: String,
    arrived_ms: i64,
    outcome: String,
) -> Result<CallContact, RecordsError> {
    let outcome = Outcome::from_name(&outcome).ok_or_else(|| RecordsError::BadOutcome {
        path: path.to_path_buf(),
        call_id: call_id.clone(),
        found: outcome.clone(),
    })?;
    Ok(CallContact { call_id, caller, arrived_ms, outcome })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn finish_event(
    path: &Path,
    id: i64,
    at_ms: i64,
    tenant: String,
    queue: String,
    call: String,
    agent: String,
    event: &str,
    data: &str,
) -> Result<QueueEvent, RecordsError> {
    let kind = decode_event(event, data)
        .map_err(|what| RecordsError::BadQueueRow { path: path.to_path_buf(), id, event: event.to_owned(), what })?;
    Ok(QueueEvent { at_ms, tenant, queue, call, agent, kind })
}

pub(super) fn finish_enter_contact(
    path: &Path,
    id: i64,
    at_ms: i64,
    tenant: String,
    call: String,
    data: &str,
) -> Result<Contact, RecordsError> {
    let bad = |what: String| RecordsError::BadQueueRow { path: path.to_path_buf(), id, event: "enter".into(), what };
    let v: Value = serde_json::from_str(data).map_err(|e| bad(format!("data is not JSON ({e})")))?;
    let caller =
        v.get("caller").and_then(Value::as_str).ok_or_else(|| bad("caller: expected a string".into()))?.to_owned();
    Ok(Contact { at_ms, tenant, call, caller })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn finish_callback(
    path: &Path,
    id: i64,
    tenant: String,
    queue: String,
    number: String,
    requested_ms: i64,
    due_ms: i64,
    enqueued_ms: i64,
    attempts: i64,
    info: String,
) -> Result<CallbackRecord, RecordsError> {
    let bad = |field: &'static str, found: String| RecordsError::BadCallback { path: path.to_path_buf(), id: id as u64, field, found };
    let info: Value = serde_json::from_str(&info).map_err(|_| bad("info (JSON)", info.clone()))?;
    let attempts = u32::try_from(attempts).map_err(|_| bad("attempts (0..=4294967295)", attempts.to_string()))?;
    Ok(CallbackRecord { id: id as u64, tenant, queue, number, requested_ms, due_ms, enqueued_ms, attempts, info })
}

/// How far before local midnight [`RecordsReader::load_day`] reads, so that agents' states at midnight
/// are known (an agent changes state at every call), and how far after the day it reads the events of
/// calls that entered a queue before the day ended.
pub const LOAD_MARGIN_MS: i64 = 6 * 3_600_000;

impl RecordsReader {
    /// Feeds `stats` everything a report of `tenant`'s local `day` needs: the queue log from
    /// [`LOAD_MARGIN_MS`] before local midnight to that much after the day, and the call records from then
    /// to the end of the first-call-resolution window after the day (repeat callers, and calls lost before
    /// any queue). Then `stats.report(tenant, day, ..)` / `stats.day_figures(..)`.
    pub fn load_day(&self, stats: &mut Stats, tenant: &str, day: Date) -> Result<(), RecordsError> {
        let off = stats.config().offset(tenant);
        let start = day.start_ms(off);
        let end = start + DAY_MS;
        let window_end = end + stats.config().fcr_window_days as i64 * DAY_MS + 1;
        for ev in self.queue_log(start - LOAD_MARGIN_MS..end + LOAD_MARGIN_MS, Some(tenant))? {
            stats.push(&ev);
        }
        // Every call leaves a record, so the records give every later contact of a caller; they are
        // pushed after the queue events (calls that never reached a queue are told apart by that).
        for c in self.call_contacts(start - LOAD_MARGIN_MS..window_end, tenant)? {
            stats.push_call_summary(tenant, &c.call_id, &c.caller, c.arrived_ms, c.outcome);
        }
        Ok(())
    }
}

/// The queue log rows with `range.start <= at_ms < range.end` (all tenants), in the order they happened.
pub fn read_queue_log(path: &Path, range: Range<i64>) -> Result<Vec<QueueEvent>, RecordsError> {
    RecordsReader::open(path)?.queue_log(range, None)
}

/// Every pending callback (at start, to hand back to the ACD), by due time then id.
pub fn read_callbacks(path: &Path) -> Result<Vec<CallbackRecord>, RecordsError> {
    RecordsReader::open(path)?.callbacks()
}
