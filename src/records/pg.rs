//! The PostgreSQL backend: schema migrations, the writer thread's batches, and the readers' queries.
//!
//! Chosen by a PostgreSQL connection string in the profile (see [`Database::parse`]). The `postgres`
//! crate's synchronous client is used from the records writer thread (and from whichever thread owns a
//! [`RecordsReader`](super::RecordsReader)); nothing here is async and nothing runs on the call path.
//!
//! # Schema and versions
//! The tables, columns and unique keys of SQLite's [`MIGRATIONS`](super::MIGRATIONS), spelled for
//! PostgreSQL in [`PG_MIGRATIONS`] with the same numbers. `schema_version (version, applied_at)` holds
//! one row per applied migration. [`migrate`] runs at every open (and after every reconnect) in one
//! transaction under a transaction-scoped advisory lock, so two callgate processes starting against a
//! fresh database cannot both apply migration 1, and a failing migration leaves the previous version
//! intact (DDL is transactional in PostgreSQL).
//!
//! # Writing a batch
//! ```text
//!   BEGIN
//!   INSERT INTO calls (..) SELECT * FROM unnest($1::text[], ..)            ON CONFLICT (call_id) DO NOTHING
//!   INSERT INTO queue_log (..) SELECT .. FROM unnest(..) WITH ORDINALITY
//!          ORDER BY ordinality                                            ON CONFLICT (key) DO NOTHING
//!   each callback upsert / delete, in the order sent
//!   COMMIT
//! ```
//! One statement per table whatever the batch size (each column travels as one array), so a batch of
//! 512 rows costs about four round trips. The rows affected tell written from duplicates. The queue log
//! keeps the order rows were sent (`ORDER BY ordinality` feeds the identity column in that order), as
//! SQLite's rowid does. Calls and queue rows go to different tables, so writing all calls of a batch
//! before its queue rows changes nothing a reader can see; callback operations keep their order.
//!
//! Text: PostgreSQL's `text` cannot hold the NUL character (SQLite's can); a NUL in any field is
//! written as U+FFFD so that one odd record cannot block every batch behind it.
//!
//! # Failures
//! Any error in a batch rolls it back (the server does), drops the connection, and the writer retries
//! the same batch after its back-off on a new connection (which re-checks the schema). The unique keys
//! make a batch whose COMMIT did happen but whose answer was lost harmless: the retry writes nothing.

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};

use postgres::{Client, NoTls, Statement};

use super::log::{event_data, finish_call, finish_callback, finish_contact, finish_enter_contact, finish_event};
use super::log::{CallContact, CallbackRecord, Contact};
use super::schema::{PG_MIGRATIONS, SCHEMA_VERSION};
use super::writer::{Pending, Row, Written};
use super::{pg_err, CallRecord, PgTarget, RecordsError};
use crate::acd::log::QueueEvent;

/// The advisory lock taken while migrating: "callgate" in ASCII.
const MIGRATION_LOCK: i64 = 0x6361_6c6c_6761_7465;

/// Connects and checks that the database stores UTF-8.
pub(crate) fn connect(target: &PgTarget) -> Result<Client, RecordsError> {
    let path = PathBuf::from(target.label());
    let mut client = target.config().connect(NoTls).map_err(pg_err(&path, "connect"))?;
    let enc: String = client
        .query_one("SHOW server_encoding", &[])
        .and_then(|r| r.try_get(0))
        .map_err(pg_err(&path, "read server_encoding"))?;
    if !enc.eq_ignore_ascii_case("UTF8") {
        return Err(RecordsError::NotUtf8 { path, got: enc });
    }
    Ok(client)
}

/// Applies the migrations the database has not seen yet. Returns how many were applied.
pub(crate) fn migrate(client: &mut Client, path: &Path) -> Result<usize, RecordsError> {
    let mut tx = client.transaction().map_err(pg_err(path, "begin migration transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(pg_err(path, "take the migration lock"))?;
    // Looked up first rather than CREATE TABLE IF NOT EXISTS, whose NOTICE would be logged at every
    // start; the lock makes the two steps one.
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .and_then(|r| r.try_get(0))
        .map_err(pg_err(path, "look for schema_version"))?;
    if !exists {
        tx.batch_execute(
            "CREATE TABLE schema_version (
                version    BIGINT      PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .map_err(pg_err(path, "create schema_version"))?;
    }
    let current: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .and_then(|r| r.try_get(0))
        .map_err(pg_err(path, "read schema_version"))?;
    if !(0..=SCHEMA_VERSION).contains(&current) {
        return Err(RecordsError::UnknownSchema { path: path.to_path_buf(), found: current, known: SCHEMA_VERSION });
    }
    let mut applied = 0;
    for (i, sql) in PG_MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        tx.batch_execute(sql).map_err(pg_err(path, "apply a schema migration"))?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&version])
            .map_err(pg_err(path, "record the schema version"))?;
        tracing::info!(database = %path.display(), version, "records schema migrated");
        applied += 1;
    }
    tx.commit().map_err(pg_err(path, "commit schema migrations"))?;
    Ok(applied)
}

/// The schema version of a PostgreSQL database (0: no callgate tables). For tests and the CLI.
pub fn pg_schema_version(target: &PgTarget) -> Result<i64, RecordsError> {
    let path = PathBuf::from(target.label());
    let mut c = connect(target)?;
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .and_then(|r| r.try_get(0))
        .map_err(pg_err(&path, "look for schema_version"))?;
    if !exists {
        return Ok(0);
    }
    c.query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .and_then(|r| r.try_get(0))
        .map_err(pg_err(&path, "read schema_version"))
}

const INSERT_CALLS: &str = "INSERT INTO calls (call_id, sip_call_id, tenant, trunk, service, caller, number,
        source, transport, arrived_ms, answered_ms, ended_ms, outcome, sip_status, reason, digits,
        queue, agent, menu_choice, recording, wait_ms, talk_ms, end_reason)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::bigint[],
        $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::bigint[],
        $22::bigint[], $23::text[])
    ON CONFLICT (call_id) DO NOTHING";

const INSERT_QUEUE: &str = "INSERT INTO queue_log (at_ms, tenant, queue, call, agent, event, data, seq)
    SELECT at_ms, tenant, queue, call, agent, event, data, seq
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[])
        WITH ORDINALITY AS u(at_ms, tenant, queue, call, agent, event, data, seq, ord)
    ORDER BY ord
    ON CONFLICT (at_ms, tenant, queue, call, agent, event, seq) DO NOTHING";

const UPSERT_CALLBACK: &str = "INSERT INTO callbacks (id, tenant, queue, number, requested_ms, due_ms, enqueued_ms, attempts, info)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, queue = excluded.queue, number = excluded.number,
        requested_ms = excluded.requested_ms, due_ms = excluded.due_ms, enqueued_ms = excluded.enqueued_ms,
        attempts = excluded.attempts, info = excluded.info";

const DELETE_CALLBACK: &str = "DELETE FROM callbacks WHERE id = $1";

struct Stmts {
    calls: Statement,
    queue: Statement,
    upsert: Statement,
    delete: Statement,
}

fn prepare(c: &mut Client) -> Result<Stmts, postgres::Error> {
    Ok(Stmts {
        calls: c.prepare(INSERT_CALLS)?,
        queue: c.prepare(INSERT_QUEUE)?,
        upsert: c.prepare(UPSERT_CALLBACK)?,
        delete: c.prepare(DELETE_CALLBACK)?,
    })
}

/// Text as PostgreSQL can store it (no NUL).
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

fn ms(v: Option<u64>) -> Option<i64> {
    v.map(|v| v.min(i64::MAX as u64) as i64)
}

/// The calls of one batch, column by column.
#[derive(Default)]
struct CallColumns<'a> {
    call_id: Vec<Cow<'a, str>>,
    sip_call_id: Vec<Cow<'a, str>>,
    tenant: Vec<Option<Cow<'a, str>>>,
    trunk: Vec<Option<Cow<'a, str>>>,
    service: Vec<Option<Cow<'a, str>>>,
    caller: Vec<Cow<'a, str>>,
    number: Vec<Cow<'a, str>>,
    source: Vec<Cow<'a, str>>,
    transport: Vec<Cow<'a, str>>,
    arrived_ms: Vec<i64>,
    answered_ms: Vec<Option<i64>>,
    ended_ms: Vec<i64>,
    outcome: Vec<&'static str>,
    sip_status: Vec<i64>,
    reason: Vec<Cow<'a, str>>,
    digits: Vec<Cow<'a, str>>,
    queue: Vec<Option<Cow<'a, str>>>,
    agent: Vec<Option<Cow<'a, str>>>,
    menu_choice: Vec<Option<Cow<'a, str>>>,
    recording: Vec<Option<Cow<'a, str>>>,
    wait_ms: Vec<Option<i64>>,
    talk_ms: Vec<Option<i64>>,
    end_reason: Vec<Option<Cow<'a, str>>>,
}

impl<'a> CallColumns<'a> {
    fn push(&mut self, r: &'a CallRecord) {
        self.call_id.push(text(&r.call_id));
        self.sip_call_id.push(text(&r.sip_call_id));
        self.tenant.push(opt_text(&r.tenant));
        self.trunk.push(opt_text(&r.trunk));
        self.service.push(opt_text(&r.service));
        self.caller.push(text(&r.caller));
        self.number.push(text(&r.number));
        self.source.push(text(&r.source));
        self.transport.push(text(&r.transport));
        self.arrived_ms.push(r.arrived_ms);
        self.answered_ms.push(r.answered_ms);
        self.ended_ms.push(r.ended_ms);
        self.outcome.push(r.outcome.as_str());
        self.sip_status.push(r.sip_status as i64);
        self.reason.push(text(&r.reason));
        self.digits.push(text(&r.digits));
        self.queue.push(opt_text(&r.queue));
        self.agent.push(opt_text(&r.agent));
        self.menu_choice.push(opt_text(&r.menu_choice));
        self.recording.push(opt_text(&r.recording));
        self.wait_ms.push(ms(r.wait_ms));
        self.talk_ms.push(ms(r.talk_ms));
        self.end_reason.push(opt_text(&r.end_reason));
    }
}

/// The queue events of one batch, column by column.
#[derive(Default)]
struct QueueColumns<'a> {
    at_ms: Vec<i64>,
    tenant: Vec<Cow<'a, str>>,
    queue: Vec<Cow<'a, str>>,
    call: Vec<Cow<'a, str>>,
    agent: Vec<Cow<'a, str>>,
    event: Vec<&'static str>,
    data: Vec<String>,
    seq: Vec<i64>,
}

impl<'a> QueueColumns<'a> {
    fn push(&mut self, e: &'a QueueEvent, seq: u32) {
        self.at_ms.push(e.at_ms);
        self.tenant.push(text(&e.tenant));
        self.queue.push(text(&e.queue));
        self.call.push(text(&e.call));
        self.agent.push(text(&e.agent));
        self.event.push(e.kind.name());
        // JSON escapes a NUL inside a string as \u0000, which text can hold.
        self.data.push(event_data(&e.kind));
        self.seq.push(seq as i64);
    }
}

fn write_batch(client: &mut Client, st: &Stmts, batch: &[Pending]) -> Result<Written, postgres::Error> {
    let mut calls = CallColumns::default();
    let mut queue = QueueColumns::default();
    for p in batch {
        match &p.row {
            Row::Call(r) => calls.push(r),
            Row::Queue(e) => queue.push(e, p.seq),
            Row::CallbackUpsert(_) | Row::CallbackDelete { .. } => {}
        }
    }
    let mut w = Written::default();
    let mut tx = client.transaction()?;
    let n_calls = calls.call_id.len() as u64;
    if n_calls > 0 {
        let c = &calls;
        let n = tx.execute(
            &st.calls,
            &[
                &c.call_id,
                &c.sip_call_id,
                &c.tenant,
                &c.trunk,
                &c.service,
                &c.caller,
                &c.number,
                &c.source,
                &c.transport,
                &c.arrived_ms,
                &c.answered_ms,
                &c.ended_ms,
                &c.outcome,
                &c.sip_status,
                &c.reason,
                &c.digits,
                &c.queue,
                &c.agent,
                &c.menu_choice,
                &c.recording,
                &c.wait_ms,
                &c.talk_ms,
                &c.end_reason,
            ],
        )?;
        w.calls = n;
        w.call_dups = n_calls - n.min(n_calls);
    }
    let n_queue = queue.at_ms.len() as u64;
    if n_queue > 0 {
        let q = &queue;
        let n = tx.execute(&st.queue, &[&q.at_ms, &q.tenant, &q.queue, &q.call, &q.agent, &q.event, &q.data, &q.seq])?;
        w.queue = n;
        w.queue_dups = n_queue - n.min(n_queue);
    }
    for p in batch {
        match &p.row {
            Row::CallbackUpsert(c) => {
                tx.execute(
                    &st.upsert,
                    &[
                        &(c.id as i64), // bit-for-bit, as in SQLite: every u64 round-trips
                        &text(&c.tenant),
                        &text(&c.queue),
                        &text(&c.number),
                        &c.requested_ms,
                        &c.due_ms,
                        &c.enqueued_ms,
                        &(c.attempts as i64),
                        &c.info.to_string(),
                    ],
                )?;
                w.callback_ops += 1;
            }
            Row::CallbackDelete { id } => {
                tx.execute(&st.delete, &[&(*id as i64)])?;
                w.callback_ops += 1;
            }
            Row::Call(_) | Row::Queue(_) => {}
        }
    }
    tx.commit()?;
    Ok(w)
}

/// The writer thread's PostgreSQL connection, reconnecting after any failure.
pub(crate) struct PgWriter {
    target: PgTarget,
    path: PathBuf,
    conn: Option<(Client, Stmts)>,
}

impl PgWriter {
    /// Connects, checks the encoding and migrates (in the opening thread, so that a wrong profile fails
    /// at start, not in the background).
    pub(crate) fn open(target: &PgTarget) -> Result<PgWriter, RecordsError> {
        let path = PathBuf::from(target.label());
        let mut client = connect(target)?;
        migrate(&mut client, &path)?;
        let st = prepare(&mut client).map_err(pg_err(&path, "prepare the insert statements"))?;
        Ok(PgWriter { target: target.clone(), path, conn: Some((client, st)) })
    }

    pub(crate) fn write_batch(&mut self, batch: &[Pending]) -> Result<Written, super::BackendError> {
        if self.conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            self.conn = None;
            let mut client = self.target.config().connect(NoTls)?;
            if let Err(e) = migrate(&mut client, &self.path) {
                tracing::error!(database = %self.path.display(), error = %e, "records schema check after reconnecting failed");
            }
            let st = prepare(&mut client)?;
            tracing::info!(database = %self.path.display(), "records database reconnected");
            self.conn = Some((client, st));
        }
        let Some((client, st)) = self.conn.as_mut() else { unreachable!("connected above") };
        let res = write_batch(client, st, batch);
        if res.is_err() {
            // The server has rolled the transaction back; start the retry on a fresh connection (a
            // broken socket, a restarted server, a changed table: all look the same from here).
            self.conn = None;
        }
        Ok(res?)
    }

    pub(crate) fn close(self) {
        if let Some((client, _)) = self.conn {
            if let Err(e) = client.close() {
                tracing::error!(database = %self.path.display(), error = %super::pg_text(&e), "closing the records database failed");
            }
        }
    }
}

/// A reader's connection: the session is read-only.
pub(crate) fn open_reader(target: &PgTarget) -> Result<Client, RecordsError> {
    let path = PathBuf::from(target.label());
    let mut c = connect(target)?;
    c.batch_execute("SET default_transaction_read_only = on").map_err(pg_err(&path, "make the session read-only"))?;
    Ok(c)
}

// The readers' queries: the same rows, in the same order, as the SQLite ones in log.rs. Text sorts
// byte-wise (COLLATE "C"), as SQLite's BINARY collation does, whatever the database's locale.

pub(crate) fn records(c: &mut Client, path: &Path, range: Range<i64>) -> Result<Vec<CallRecord>, RecordsError> {
    let rows = c
        .query(
            "SELECT call_id, sip_call_id, tenant, trunk, service, caller, number, source, transport,
                    arrived_ms, answered_ms, ended_ms, outcome, sip_status, reason, digits,
                    queue, agent, menu_choice, recording, wait_ms, talk_ms, end_reason
             FROM calls WHERE arrived_ms >= $1 AND arrived_ms < $2 ORDER BY arrived_ms, call_id COLLATE \"C\"",
            &[&range.start, &range.end],
        )
        .map_err(pg_err(path, "query calls"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (rec, outcome, status) = (|| -> Result<_, postgres::Error> {
            Ok((
                CallRecord {
                    call_id: r.try_get(0)?,
                    sip_call_id: r.try_get(1)?,
                    tenant: r.try_get(2)?,
                    trunk: r.try_get(3)?,
                    service: r.try_get(4)?,
                    caller: r.try_get(5)?,
                    number: r.try_get(6)?,
                    source: r.try_get(7)?,
                    transport: r.try_get(8)?,
                    arrived_ms: r.try_get(9)?,
                    answered_ms: r.try_get(10)?,
                    ended_ms: r.try_get(11)?,
                    reason: r.try_get(14)?,
                    digits: r.try_get(15)?,
                    queue: r.try_get(16)?,
                    agent: r.try_get(17)?,
                    menu_choice: r.try_get(18)?,
                    recording: r.try_get(19)?,
                    wait_ms: r.try_get::<_, Option<i64>>(20)?.map(|v| v.max(0) as u64),
                    talk_ms: r.try_get::<_, Option<i64>>(21)?.map(|v| v.max(0) as u64),
                    end_reason: r.try_get(22)?,
                    ..Default::default()
                },
                r.try_get::<_, String>(12)?,
                r.try_get::<_, i64>(13)?,
            ))
        })()
        .map_err(pg_err(path, "read a row of calls"))?;
        out.push(finish_call(path, rec, outcome, status)?);
    }
    Ok(out)
}

pub(crate) fn call_contacts(
    c: &mut Client,
    path: &Path,
    range: Range<i64>,
    tenant: &str,
) -> Result<Vec<CallContact>, RecordsError> {
    // The order of SQLite's covering index (tenant, arrived_ms, caller, call_id).
    let rows = c
        .query(
            "SELECT call_id, caller, arrived_ms, outcome FROM calls
             WHERE tenant = $1 AND arrived_ms >= $2 AND arrived_ms < $3
             ORDER BY arrived_ms, caller COLLATE \"C\", call_id COLLATE \"C\"",
            &[&tenant, &range.start, &range.end],
        )
        .map_err(pg_err(path, "query calls"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (call_id, caller, arrived_ms, outcome): (String, String, i64, String) =
            (|| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))()
                .map_err(pg_err(path, "read a row of calls"))?;
        out.push(finish_contact(path, call_id, caller, arrived_ms, outcome)?);
    }
    Ok(out)
}

pub(crate) fn queue_log(
    c: &mut Client,
    path: &Path,
    range: Range<i64>,
    tenant: Option<&str>,
) -> Result<Vec<QueueEvent>, RecordsError> {
    let rows = c
        .query(
            "SELECT id, at_ms, tenant, queue, call, agent, event, data FROM queue_log
             WHERE at_ms >= $1 AND at_ms < $2 AND ($3::text IS NULL OR tenant = $3) ORDER BY at_ms, id",
            &[&range.start, &range.end, &tenant],
        )
        .map_err(pg_err(path, "query queue_log"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        #[allow(clippy::type_complexity)]
        let (id, at_ms, tenant, queue, call, agent, event, data): (i64, i64, String, String, String, String, String, String) =
            (|| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                    r.try_get(6)?,
                    r.try_get(7)?,
                ))
            })()
            .map_err(pg_err(path, "read a row of queue_log"))?;
        out.push(finish_event(path, id, at_ms, tenant, queue, call, agent, &event, &data)?);
    }
    Ok(out)
}

pub(crate) fn contacts(
    c: &mut Client,
    path: &Path,
    range: Range<i64>,
    tenant: Option<&str>,
) -> Result<Vec<Contact>, RecordsError> {
    let rows = c
        .query(
            "SELECT id, at_ms, tenant, call, data FROM queue_log
             WHERE at_ms >= $1 AND at_ms < $2 AND event = 'enter' AND ($3::text IS NULL OR tenant = $3)
             ORDER BY at_ms, id",
            &[&range.start, &range.end, &tenant],
        )
        .map_err(pg_err(path, "query contacts"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (id, at_ms, tenant, call, data): (i64, i64, String, String, String) =
            (|| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)))()
                .map_err(pg_err(path, "read a contact row"))?;
        out.push(finish_enter_contact(path, id, at_ms, tenant, call, &data)?);
    }
    Ok(out)
}

pub(crate) fn callbacks(c: &mut Client, path: &Path) -> Result<Vec<CallbackRecord>, RecordsError> {
    let rows = c
        .query(
            "SELECT id, tenant, queue, number, requested_ms, due_ms, enqueued_ms, attempts, info
             FROM callbacks ORDER BY due_ms, id",
            &[],
        )
        .map_err(pg_err(path, "query callbacks"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
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
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                r.try_get(6)?,
                r.try_get(7)?,
                r.try_get(8)?,
            ))
        })()
        .map_err(pg_err(path, "read a row of callbacks"))?;
        out.push(finish_callback(path, id, tenant, queue, number, requested_ms, due_ms, enqueued_ms, attempts, info)?);
    }
    Ok(out)
}
