//! The record writer: one std thread that owns the database connection (SQLite, or PostgreSQL: `pg.rs`).
//!
//! ```text
//!   SIP thread(s) ─ submit(CallRecord) ──┐
//!   ACD owner     ─ send(Row::Queue(..)) ┼─▶ unbounded mpsc ──▶ writer thread
//!   core          ─ upsert/delete cb  ───┘                     │ recv() one, try_recv() up to batch_max more
//!                                                              │ (a short batch: linger, then try_recv() again)
//!                                                              │ BEGIN (IMMEDIATE); the rows; COMMIT
//!                                                              │ on error: keep the batch, back off, retry
//!                                                              │ (PostgreSQL: on a new connection)
//!   close() ──closing flag + Close msg───────────────────────▶ │ drain until the channel is empty, commit, exit
//! ```
//!
//! # Channel policy
//! Unbounded, with a gauge: `submit`/`send` never block and never drop while the writer runs, so a slow
//! disk costs memory, not call-setup latency. [`RecordStats::queued`] is the gauge (rows accepted and not
//! yet written); export it and alarm on its growth. A bounded channel would have to either block the SIP
//! thread or drop records, and the domain rule is that no record is lost. A row is only lost if the writer
//! thread is gone (after close, or if it panicked) or if the database still refuses writes at close after
//! the retries; both are logged with `tracing::error!` and counted in [`RecordStats::dropped`] /
//! [`RecordStats::lost`] / reported by [`RecordWriter::close`].
//!
//! Rows are written in the order they were sent (one FIFO channel, one thread, one transaction per batch
//! executing the rows in order), so a callback upsert followed by its delete leaves no row.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection};

use std::collections::HashMap;

use super::log::{event_data, CallbackRecord};
use super::pg::PgWriter;
use super::{schema, sql_err, BackendError, CallRecord, Database, RecordsError};
use crate::acd::log::QueueEvent;

/// Tuning for the writer thread.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Most records inserted in one transaction.
    pub batch_max: usize,
    /// First wait after a failed batch; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Attempts at writing what is left once close() was called, before giving up.
    pub close_attempts: u32,
    /// After waking for a record, how long the writer lets more records gather before it
    /// commits a batch that is not full (unless a flush or close is waiting). Under load this
    /// turns one SQLite transaction and one thread wake-up per record into one per batch; the
    /// submitting side does not pay for a wake-up while the writer lingers.
    pub linger: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_max: 512,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            close_attempts: 3,
            linger: Duration::from_millis(50),
        }
    }
}

/// Counters shared by the writer and its sinks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Rows of every kind accepted by `submit` / `send`.
    pub submitted: u64,
    /// Call records inserted.
    pub written: u64,
    /// Call records whose call_id was already stored (INSERT OR IGNORE skipped them).
    pub duplicates: u64,
    /// Queue log rows inserted.
    pub queue_written: u64,
    /// Queue log rows already stored (a replay).
    pub queue_duplicates: u64,
    /// Callback upserts and deletes applied (a delete of a missing id counts too: it is done).
    pub callback_ops: u64,
    /// Rows refused by `submit` / `send` because the writer had stopped.
    pub dropped: u64,
    /// Rows accepted but still unwritable when close() gave up.
    pub lost: u64,
}

impl RecordStats {
    /// Rows submitted but not yet written, skipped or lost: the channel's gauge.
    pub fn queued(&self) -> u64 {
        self.submitted.saturating_sub(
            self.written + self.duplicates + self.queue_written + self.queue_duplicates + self.callback_ops + self.lost,
        )
    }
}

#[derive(Default)]
struct Shared {
    submitted: AtomicU64,
    written: AtomicU64,
    duplicates: AtomicU64,
    queue_written: AtomicU64,
    queue_duplicates: AtomicU64,
    callback_ops: AtomicU64,
    dropped: AtomicU64,
    lost: AtomicU64,
    closing: AtomicBool,
}

impl Shared {
    fn snapshot(&self) -> RecordStats {
        RecordStats {
            submitted: self.submitted.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            queue_written: self.queue_written.load(Ordering::Relaxed),
            queue_duplicates: self.queue_duplicates.load(Ordering::Relaxed),
            callback_ops: self.callback_ops.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

/// One thing for the writer to write.
// Rows are moved, not boxed: the channel stores them in blocks, so boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// A call's record (`INSERT OR IGNORE` by call_id).
    Call(CallRecord),
    /// An ACD queue log event (`INSERT OR IGNORE` by its key, see `log.rs`).
    Queue(QueueEvent),
    /// A callback was taken or changed (attempts, due time): insert or replace the row with this id.
    CallbackUpsert(CallbackRecord),
    /// A callback is done (connected, given up, cancelled): remove its row.
    CallbackDelete { id: u64 },
}

impl Row {
    fn label(&self) -> String {
        match self {
            Row::Call(r) => format!("call record {}", r.call_id),
            Row::Queue(e) => format!("queue event {} of call {:?} at {}", e.kind.name(), e.call, e.at_ms),
            Row::CallbackUpsert(c) => format!("callback {} upsert", c.id),
            Row::CallbackDelete { id } => format!("callback {id} delete"),
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Msg {
    Row(Row),
    /// Answer once everything submitted before this message is committed.
    Flush(mpsc::SyncSender<()>),
    Close,
}

/// The submitting side: cheap to clone, `Send + Sync`, never blocks.
#[derive(Clone)]
pub struct RecordSink {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    path: Arc<PathBuf>,
}

impl RecordSink {
    /// Queues a call record for the writer thread. Never blocks. If the writer has already stopped, the
    /// record is dropped, logged with `tracing::error!` and counted in [`RecordStats::dropped`].
    #[inline]
    pub fn submit(&self, rec: CallRecord) {
        self.try_send(Row::Call(rec));
    }

    /// [`RecordSink::submit`], telling whether the record was queued (false: the writer has stopped).
    pub fn try_submit(&self, rec: CallRecord) -> bool {
        self.try_send(Row::Call(rec))
    }

    /// Queues an ACD queue log event. Never blocks (same policy as [`RecordSink::submit`]).
    #[inline]
    pub fn submit_queue(&self, ev: QueueEvent) {
        self.try_send(Row::Queue(ev));
    }

    /// Stores (or replaces, by id) a pending callback. Never blocks.
    #[inline]
    pub fn upsert_callback(&self, cb: CallbackRecord) {
        self.try_send(Row::CallbackUpsert(cb));
    }

    /// Removes a pending callback. Never blocks.
    #[inline]
    pub fn delete_callback(&self, id: u64) {
        self.try_send(Row::CallbackDelete { id });
    }

    /// Queues any row. Never blocks.
    #[inline]
    pub fn send(&self, row: Row) {
        self.try_send(row);
    }

    /// [`RecordSink::send`], telling whether the row was queued (false: the writer has stopped).
    pub fn try_send(&self, row: Row) -> bool {
        // Counted before the send so that `queued()` never sees a write before its submit.
        self.shared.submitted.fetch_add(1, Ordering::Relaxed);
        match self.tx.send(Msg::Row(row)) {
            Ok(()) => true,
            Err(mpsc::SendError(msg)) => {
                self.shared.submitted.fetch_sub(1, Ordering::Relaxed);
                let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Msg::Row(row) = msg {
                    // Log the first drops and then every 1000th, to not flood the log.
                    if n <= 10 || n.is_multiple_of(1000) {
                        tracing::error!(path = %self.path.display(), row = %row.label(), dropped = n,
                            "record dropped: the record writer has stopped");
                    }
                }
                false
            }
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> RecordStats {
        self.shared.snapshot()
    }
}

/// Owns the writer thread. Call [`RecordWriter::close`] at shutdown; dropping it also drains and joins
/// (logging any error) so that an early return loses nothing.
pub struct RecordWriter {
    sink: RecordSink,
    thread: Option<JoinHandle<Result<(), RecordsError>>>,
}

impl RecordWriter {
    /// Opens the database the profile names (`path` is `[records] database` as it stands, see
    /// [`Database::from_path`]), applies pending schema migrations, and starts the writer thread.
    /// SQLite: creates the file and its parent directory if needed, switches it to WAL. PostgreSQL:
    /// connects (the database must exist) and checks it stores UTF-8; fails if the server cannot be
    /// reached now (later outages are retried, see `pg.rs`).
    pub fn open(path: &Path) -> Result<RecordWriter, RecordsError> {
        Self::open_with(path, WriterConfig::default())
    }

    pub fn open_with(path: &Path, cfg: WriterConfig) -> Result<RecordWriter, RecordsError> {
        Self::open_database(&Database::from_path(path)?, cfg)
    }

    /// [`RecordWriter::open_with`] for an already classified database.
    pub fn open_database(db: &Database, cfg: WriterConfig) -> Result<RecordWriter, RecordsError> {
        let store = match db {
            Database::Sqlite(path) => Store::Sqlite(open_db(path)?),
            Database::Postgres(target) => Store::Postgres(Box::new(PgWriter::open(target)?)),
        };
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let path = Arc::new(db.label());
        let worker = Worker { store, rx, shared: shared.clone(), path: path.clone(), cfg };
        let thread = std::thread::Builder::new()
            .name("callgate-records".into())
            .spawn(move || worker.run())
            .map_err(|source| RecordsError::Spawn { path: path.to_path_buf(), source })?;
        Ok(RecordWriter { sink: RecordSink { tx, shared, path }, thread: Some(thread) })
    }

    /// A submitting handle for another thread or task.
    pub fn sink(&self) -> RecordSink {
        self.sink.clone()
    }

    /// Submits a call record through the writer's own sink.
    pub fn submit(&self, rec: CallRecord) {
        self.sink.submit(rec)
    }

    /// Sends any row through the writer's own sink.
    pub fn send(&self, row: Row) {
        self.sink.send(row)
    }

    pub fn stats(&self) -> RecordStats {
        self.sink.stats()
    }

    /// The SQLite file, or for PostgreSQL its label (`postgresql host=.. port=.. user=.. dbname=..`,
    /// no password).
    pub fn path(&self) -> &Path {
        &self.sink.path
    }

    /// Blocks until every record submitted before this call is committed (or `timeout` passes).
    /// For tests and the CLI; the SIP path never calls this.
    pub fn flush(&self, timeout: Duration) -> Result<(), RecordsError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let gone = || RecordsError::WriterGone { path: self.sink.path.to_path_buf() };
        self.sink.tx.send(Msg::Flush(tx)).map_err(|_| gone())?;
        match rx.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => {
                Err(RecordsError::FlushTimeout { path: self.sink.path.to_path_buf(), waited: timeout })
            }
            Err(RecvTimeoutError::Disconnected) => Err(gone()),
        }
    }

    /// Drains everything submitted so far (by any sink), commits, and joins the thread.
    /// Returns the number of rows this writer inserted. Records submitted after close are dropped.
    pub fn close(mut self) -> Result<u64, RecordsError> {
        self.shutdown()?;
        Ok(self.sink.shared.written.load(Ordering::Relaxed))
    }

    fn shutdown(&mut self) -> Result<(), RecordsError> {
        let Some(thread) = self.thread.take() else { return Ok(()) };
        self.sink.shared.closing.store(true, Ordering::SeqCst);
        let _ = self.sink.tx.send(Msg::Close);
        match thread.join() {
            Ok(res) => res,
            Err(_) => Err(RecordsError::WriterPanicked { path: self.sink.path.to_path_buf() }),
        }
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "record writer dropped without close()");
        }
    }
}

/// Opens the database for writing: parent dir, WAL, synchronous=NORMAL, migrations.
pub(crate) fn open_db(path: &Path) -> Result<Connection, RecordsError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|source| RecordsError::CreateDir {
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
                source,
            })?;
        }
    }
    let mut conn = Connection::open(path).map_err(sql_err(path, "open"))?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err(path, "set busy_timeout"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sql_err(path, "set journal_mode=WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(RecordsError::NotWal { path: path.to_path_buf(), got: mode });
    }
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql_err(path, "set synchronous=NORMAL"))?;
    schema::migrate(&mut conn, path)?;
    Ok(conn)
}

const INSERT: &str = "INSERT OR IGNORE INTO calls (call_id, sip_call_id, tenant, trunk, service, caller, number,
    source, transport, arrived_ms, answered_ms, ended_ms, outcome, sip_status, reason, digits,
    queue, agent, menu_choice, recording, wait_ms, talk_ms, end_reason)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)";

const INSERT_QUEUE: &str = "INSERT OR IGNORE INTO queue_log (at_ms, tenant, queue, call, agent, event, data, seq)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const UPSERT_CALLBACK: &str = "INSERT INTO callbacks (id, tenant, queue, number, requested_ms, due_ms, enqueued_ms, attempts, info)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT(id) DO UPDATE SET tenant = excluded.tenant, queue = excluded.queue, number = excluded.number,
        requested_ms = excluded.requested_ms, due_ms = excluded.due_ms, enqueued_ms = excluded.enqueued_ms,
        attempts = excluded.attempts, info = excluded.info";

const DELETE_CALLBACK: &str = "DELETE FROM callbacks WHERE id = ?1";

/// A row taken from the channel; queue events carry the `seq` the writer gave them.
pub(super) struct Pending {
    pub(super) row: Row,
    pub(super) seq: u32,
}

/// What one committed batch did.
#[derive(Default)]
pub(super) struct Written {
    pub(super) calls: u64,
    pub(super) call_dups: u64,
    pub(super) queue: u64,
    pub(super) queue_dups: u64,
    pub(super) callback_ops: u64,
}

/// The writer thread's connection.
enum Store {
    Sqlite(Connection),
    Postgres(Box<PgWriter>),
}

impl Store {
    fn write_batch(&mut self, batch: &[Pending]) -> Result<Written, BackendError> {
        match self {
            Store::Sqlite(conn) => Ok(write_batch(conn, batch)?),
            Store::Postgres(pg) => pg.write_batch(batch),
        }
    }

    fn close(self, path: &Path) {
        match self {
            Store::Sqlite(conn) => {
                if let Err((_, e)) = conn.close() {
                    tracing::error!(path = %path.display(), error = %e, "closing the records database failed");
                }
            }
            Store::Postgres(pg) => pg.close(),
        }
    }
}

/// Writes a batch in one transaction, rows in order.
fn write_batch(conn: &mut Connection, batch: &[Pending]) -> rusqlite::Result<Written> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut w = Written::default();
    for p in batch {
        match &p.row {
            Row::Call(r) => {
                let n = tx.prepare_cached(INSERT)?.execute(params![
                    r.call_id,
                    r.sip_call_id,
                    r.tenant,
                    r.trunk,
                    r.service,
                    r.caller,
                    r.number,
                    r.source,
                    r.transport,
                    r.arrived_ms,
                    r.answered_ms,
                    r.ended_ms,
                    r.outcome.as_str(),
                    r.sip_status,
                    r.reason,
                    r.digits,
                    r.queue,
                    r.agent,
                    r.menu_choice,
                    r.recording,
                    r.wait_ms.map(|v| v.min(i64::MAX as u64) as i64),
                    r.talk_ms.map(|v| v.min(i64::MAX as u64) as i64),
                    r.end_reason,
                ])? as u64;
                w.calls += n;
                w.call_dups += 1 - n;
            }
            Row::Queue(e) => {
                let n = tx.prepare_cached(INSERT_QUEUE)?.execute(params![
                    e.at_ms,
                    e.tenant,
                    e.queue,
                    e.call,
                    e.agent,
                    e.kind.name(),
                    event_data(&e.kind),
                    p.seq,
                ])? as u64;
                w.queue += n;
                w.queue_dups += 1 - n;
            }
            Row::CallbackUpsert(c) => {
                tx.prepare_cached(UPSERT_CALLBACK)?.execute(params![
                    c.id as i64, // bit-for-bit: every u64 round-trips through SQLite's signed INTEGER
                    c.tenant,
                    c.queue,
                    c.number,
                    c.requested_ms,
                    c.due_ms,
                    c.enqueued_ms,
                    c.attempts,
                    c.info.to_string(),
                ])?;
                w.callback_ops += 1;
            }
            Row::CallbackDelete { id } => {
                tx.prepare_cached(DELETE_CALLBACK)?.execute(params![*id as i64])?;
                w.callback_ops += 1;
            }
        }
    }
    tx.commit()?;
    Ok(w)
}

/// The key of a queue event without its sequence number.
type SeqKey = (i64, String, String, String, String, &'static str);

/// Gives each queue event its `seq`: how many events with the same key came before it. Keys are
/// forgotten once the newest event seen is [`SEQ_MEMORY_MS`] later than them (checked when the map holds
/// more than [`SEQ_PRUNE_AT`] keys, or twice what the last pruning kept), so memory stays bounded while
/// events of one millisecond, which arrive together, are always counted together. Deterministic: the
/// same events in the same order get the same numbers in any process, which is what makes a replay
/// write nothing. The threshold grows with what pruning keeps, so that a busy minute (more than 8192
/// events within 60 s: about 1,000 calls a minute) costs amortised O(1) per event, not a scan of the
/// map per event.
#[derive(Default)]
struct Sequencer {
    seen: HashMap<SeqKey, u32>,
    newest_ms: i64,
    /// Prune when `seen` reaches this many keys (0: [`SEQ_PRUNE_AT`]).
    prune_at: usize,
}

const SEQ_MEMORY_MS: i64 = 60_000;
const SEQ_PRUNE_AT: usize = 8192;

impl Sequencer {
    fn next(&mut self, e: &QueueEvent) -> u32 {
        self.newest_ms = self.newest_ms.max(e.at_ms);
        if self.seen.len() >= self.prune_at.max(SEQ_PRUNE_AT) {
            let keep_from = self.newest_ms - SEQ_MEMORY_MS;
            self.seen.retain(|k, _| k.0 >= keep_from);
            self.prune_at = (2 * self.seen.len()).max(SEQ_PRUNE_AT);
        }
        let key = (e.at_ms, e.tenant.clone(), e.queue.clone(), e.call.clone(), e.agent.clone(), e.kind.name());
        let n = self.seen.entry(key).or_insert(0);
        let seq = *n;
        *n += 1;
        seq
    }
}

struct Worker {
    store: Store,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    path: Arc<PathBuf>,
    cfg: WriterConfig,
}

impl Worker {
    fn run(mut self) -> Result<(), RecordsError> {
        let batch_max = self.cfg.batch_max.max(1);
        let mut pending: Vec<Pending> = Vec::with_capacity(batch_max);
        let mut seqs = Sequencer::default();
        let mut waiters: Vec<mpsc::SyncSender<()>> = Vec::new();
        let mut closing = false;
        let mut backoff = self.cfg.retry_initial;
        let mut close_failures = 0u32;
        loop {
            // 1. Wait for work when idle.
            if pending.is_empty() && !closing {
                match self.rx.recv() {
                    Ok(m) => closing |= take(m, &mut pending, &mut waiters, &mut seqs),
                    Err(_) => closing = true, // every sender is gone
                }
            }
            // 2. Take whatever else is queued, up to a batch. The closing flag is read first: once it is
            //    set, every record submitted before close() is already in the channel, so draining to
            //    Empty after reading it cannot miss one.
            closing |= self.shared.closing.load(Ordering::SeqCst);
            let mut more = false;
            while pending.len() < batch_max {
                match self.rx.try_recv() {
                    Ok(m) => closing |= take(m, &mut pending, &mut waiters, &mut seqs),
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
            // A short batch, nobody waiting on it: let more records gather, then take them too.
            if pending.len() < batch_max && !pending.is_empty() && waiters.is_empty() && !closing && !self.cfg.linger.is_zero() {
                std::thread::sleep(self.cfg.linger);
                closing |= self.shared.closing.load(Ordering::SeqCst);
                while pending.len() < batch_max {
                    match self.rx.try_recv() {
                        Ok(m) => closing |= take(m, &mut pending, &mut waiters, &mut seqs),
                        Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                    }
                }
            }
            if pending.len() >= batch_max {
                more = true;
            }
            // 3. Write.
            if !pending.is_empty() {
                match self.store.write_batch(&pending) {
                    Ok(w) => {
                        self.shared.written.fetch_add(w.calls, Ordering::Relaxed);
                        self.shared.duplicates.fetch_add(w.call_dups, Ordering::Relaxed);
                        self.shared.queue_written.fetch_add(w.queue, Ordering::Relaxed);
                        self.shared.queue_duplicates.fetch_add(w.queue_dups, Ordering::Relaxed);
                        self.shared.callback_ops.fetch_add(w.callback_ops, Ordering::Relaxed);
                        pending.clear();
                        backoff = self.cfg.retry_initial;
                    }
                    Err(e) => {
                        tracing::error!(path = %self.path.display(), error = %e, rows = pending.len(),
                            retry_in = ?backoff, "writing records failed; will retry");
                        if closing {
                            close_failures += 1;
                            if close_failures >= self.cfg.close_attempts {
                                return Err(self.give_up(pending, e));
                            }
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(self.cfg.retry_max);
                        continue;
                    }
                }
            }
            // 4. Everything taken so far is committed: answer flushes.
            if !more {
                for w in waiters.drain(..) {
                    let _ = w.try_send(());
                }
            }
            // 5. Exit once closing and the channel was seen empty.
            if closing && !more {
                break;
            }
        }
        for w in waiters.drain(..) {
            let _ = w.try_send(());
        }
        self.store.close(&self.path);
        Ok(())
    }

    /// Close was requested and the database keeps failing: count everything left as lost.
    fn give_up(self, pending: Vec<Pending>, source: BackendError) -> RecordsError {
        let mut lost = pending.len() as u64;
        while let Ok(m) = self.rx.try_recv() {
            if let Msg::Row(_) = m {
                lost += 1;
            }
        }
        self.shared.lost.fetch_add(lost, Ordering::Relaxed);
        tracing::error!(path = %self.path.display(), lost, error = %source, "records lost at close");
        RecordsError::Lost { path: self.path.to_path_buf(), lost, source }
    }
}

/// Files one message; returns true if it asks the writer to close.
fn take(m: Msg, pending: &mut Vec<Pending>, waiters: &mut Vec<mpsc::SyncSender<()>>, seqs: &mut Sequencer) -> bool {
    match m {
        Msg::Row(row) => {
            let seq = if let Row::Queue(e) = &row { seqs.next(e) } else { 0 };
            pending.push(Pending { row, seq });
            false
        }
        Msg::Flush(w) => {
            waiters.push(w);
            false
        }
        Msg::Close => true,
    }
}
