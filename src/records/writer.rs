//! The record writer: one std thread that owns the SQLite connection.
//!
//! ```text
//!   SIP thread(s) ──submit()──▶ unbounded mpsc ──▶ writer thread
//!                                                 │ recv() one, try_recv() up to batch_max more
//!                                                 │ (a short batch: linger, then try_recv() again)
//!                                                 │ BEGIN IMMEDIATE; INSERT OR IGNORE ×n; COMMIT
//!                                                 │ on error: keep the batch, back off, retry
//!   close() ──closing flag + Close msg──────────▶ │ drain until the channel is empty, commit, exit
//! ```
//!
//! `submit` never blocks: the channel is unbounded, so a slow disk costs memory, not call setup latency.
//! A record is only lost if the writer thread is gone (after close, or if it panicked) or if the database
//! still refuses writes at close after the retries; both are logged with `tracing::error!` and counted in
//! [`RecordStats::dropped`] / [`RecordStats::lost`] / reported by [`RecordWriter::close`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection};

use super::{schema, sql_err, CallRecord, RecordsError};

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
    /// Accepted by `submit`.
    pub submitted: u64,
    /// Rows inserted.
    pub written: u64,
    /// Records whose call_id was already stored (INSERT OR IGNORE skipped them).
    pub duplicates: u64,
    /// Records refused by `submit` because the writer had stopped.
    pub dropped: u64,
    /// Records accepted but still unwritable when close() gave up.
    pub lost: u64,
}

impl RecordStats {
    /// Records submitted but not yet written, skipped or dropped.
    pub fn queued(&self) -> u64 {
        self.submitted.saturating_sub(self.written + self.duplicates + self.lost)
    }
}

#[derive(Default)]
struct Shared {
    submitted: AtomicU64,
    written: AtomicU64,
    duplicates: AtomicU64,
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
            dropped: self.dropped.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

// Records are moved, not boxed: the channel stores them in blocks, so boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(CallRecord),
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
    /// Queues a record for the writer thread. Never blocks. If the writer has already stopped, the record
    /// is dropped, logged with `tracing::error!` and counted in [`RecordStats::dropped`].
    #[inline]
    pub fn submit(&self, rec: CallRecord) {
        self.try_submit(rec);
    }

    /// [`RecordSink::submit`], telling whether the record was queued (false: the writer has stopped).
    pub fn try_submit(&self, rec: CallRecord) -> bool {
        // Counted before the send so that `queued()` never sees a write before its submit.
        self.shared.submitted.fetch_add(1, Ordering::Relaxed);
        match self.tx.send(Msg::Record(rec)) {
            Ok(()) => true,
            Err(mpsc::SendError(msg)) => {
                self.shared.submitted.fetch_sub(1, Ordering::Relaxed);
                let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Msg::Record(rec) = msg {
                    // Log the first drops and then every 1000th, to not flood the log.
                    if n <= 10 || n.is_multiple_of(1000) {
                        tracing::error!(path = %self.path.display(), call_id = %rec.call_id, dropped = n,
                            "call record dropped: the record writer has stopped");
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
    /// Opens (creating it and its parent directory if needed) the database, switches it to WAL,
    /// applies pending schema migrations, and starts the writer thread.
    pub fn open(path: &Path) -> Result<RecordWriter, RecordsError> {
        Self::open_with(path, WriterConfig::default())
    }

    pub fn open_with(path: &Path, cfg: WriterConfig) -> Result<RecordWriter, RecordsError> {
        let conn = open_db(path)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let path = Arc::new(path.to_path_buf());
        let worker = Worker { conn, rx, shared: shared.clone(), path: path.clone(), cfg };
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

    /// Submits through the writer's own sink.
    pub fn submit(&self, rec: CallRecord) {
        self.sink.submit(rec)
    }

    pub fn stats(&self) -> RecordStats {
        self.sink.stats()
    }

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
    source, transport, arrived_ms, answered_ms, ended_ms, outcome, sip_status, reason, digits)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// Inserts a batch in one transaction. Returns rows inserted (duplicates are skipped).
fn write_batch(conn: &mut Connection, batch: &[CallRecord]) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut n = 0u64;
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        for r in batch {
            n += stmt.execute(params![
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
            ])? as u64;
        }
    }
    tx.commit()?;
    Ok(n)
}

struct Worker {
    conn: Connection,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    path: Arc<PathBuf>,
    cfg: WriterConfig,
}

impl Worker {
    fn run(mut self) -> Result<(), RecordsError> {
        let batch_max = self.cfg.batch_max.max(1);
        let mut pending: Vec<CallRecord> = Vec::with_capacity(batch_max);
        let mut waiters: Vec<mpsc::SyncSender<()>> = Vec::new();
        let mut closing = false;
        let mut backoff = self.cfg.retry_initial;
        let mut close_failures = 0u32;
        loop {
            // 1. Wait for work when idle.
            if pending.is_empty() && !closing {
                match self.rx.recv() {
                    Ok(m) => closing |= take(m, &mut pending, &mut waiters),
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
                    Ok(m) => closing |= take(m, &mut pending, &mut waiters),
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
            // A short batch, nobody waiting on it: let more records gather, then take them too.
            if pending.len() < batch_max && !pending.is_empty() && waiters.is_empty() && !closing && !self.cfg.linger.is_zero() {
                std::thread::sleep(self.cfg.linger);
                closing |= self.shared.closing.load(Ordering::SeqCst);
                while pending.len() < batch_max {
                    match self.rx.try_recv() {
                        Ok(m) => closing |= take(m, &mut pending, &mut waiters),
                        Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                    }
                }
            }
            if pending.len() >= batch_max {
                more = true;
            }
            // 3. Write.
            if !pending.is_empty() {
                match write_batch(&mut self.conn, &pending) {
                    Ok(n) => {
                        let dup = pending.len() as u64 - n;
                        self.shared.written.fetch_add(n, Ordering::Relaxed);
                        self.shared.duplicates.fetch_add(dup, Ordering::Relaxed);
                        pending.clear();
                        backoff = self.cfg.retry_initial;
                    }
                    Err(e) => {
                        tracing::error!(path = %self.path.display(), error = %e, records = pending.len(),
                            retry_in = ?backoff, "writing call records failed; will retry");
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
        let path = self.path.clone();
        if let Err((_, e)) = self.conn.close() {
            tracing::error!(path = %path.display(), error = %e, "closing the records database failed");
        }
        Ok(())
    }

    /// Close was requested and the database keeps failing: count everything left as lost.
    fn give_up(self, pending: Vec<CallRecord>, source: rusqlite::Error) -> RecordsError {
        let mut lost = pending.len() as u64;
        while let Ok(m) = self.rx.try_recv() {
            if let Msg::Record(_) = m {
                lost += 1;
            }
        }
        self.shared.lost.fetch_add(lost, Ordering::Relaxed);
        tracing::error!(path = %self.path.display(), lost, error = %source, "call records lost at close");
        RecordsError::Lost { path: self.path.to_path_buf(), lost, source }
    }
}

/// Files one message; returns true if it asks the writer to close.
fn take(m: Msg, pending: &mut Vec<CallRecord>, waiters: &mut Vec<mpsc::SyncSender<()>>) -> bool {
    match m {
        Msg::Record(r) => {
            pending.push(r);
            false
        }
        Msg::Flush(w) => {
            waiters.push(w);
            false
        }
        Msg::Close => true,
    }
}
