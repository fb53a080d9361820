//! The records' redo log: every call record and queue-log row is appended here (one `write` per
//! flush of the sip task) *before* the datagrams that end the call leave (the 200 to a BYE, our BYE,
//! a final answer). The writer thread commits rows to the database in batches (up to 50 ms later),
//! so without this a `kill -9` could lose calls that had already ended. At start the file is
//! replayed into the database (the unique keys make rows already there a no-op) and emptied; while
//! running it is emptied whenever the writer has committed everything submitted.
//!
//! Guarantee: a call whose end was sent survives `kill -9` of callgate (the row is in the kernel's
//! page cache). Surviving a power loss as well needs `synchronous=FULL` and an fsync here too.
//!
//! Format: one JSON object per line: `{"t":"call",...}` or `{"t":"queue",...}`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::acd::log::QueueEvent;
use crate::records::{CallRecord, Outcome, RecordSink};

pub struct Redo {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
    /// Bytes in the file since it was last emptied.
    len: u64,
}

impl Redo {
    /// The redo file for a database: `DB.redo` next to an SQLite file; `var/callgate-records.redo`
    /// for a PostgreSQL connection string.
    pub fn path_for(database: &Path) -> PathBuf {
        let s = database.to_string_lossy();
        if s.contains("://") || s.contains('=') {
            PathBuf::from("var/callgate-records.redo")
        } else {
            let mut p = database.as_os_str().to_owned();
            p.push(".redo");
            PathBuf::from(p)
        }
    }

    /// Opens (creating) the redo file. Without one (read-only directory) callgate still runs, and
    /// says that ended calls may be lost on a crash.
    pub fn open(path: PathBuf) -> Redo {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the records' redo log: calls ended just before a crash may be lost");
                None
            }
        };
        let len = file.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
        Redo { path, file, buf: Vec::with_capacity(4096), len }
    }

    /// Replays what a previous run left (rows it may not have committed) into the writer; returns
    /// how many rows were replayed. The caller flushes the writer, then calls [`Redo::clear`].
    pub fn replay(path: &Path, sink: &RecordSink) -> usize {
        let Ok(f) = File::open(path) else { return 0 };
        let mut n = 0;
        for line in BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                // A line cut by the crash: everything before it was replayed.
                tracing::warn!(path = %path.display(), "redo log: a partial last line is skipped");
                continue;
            };
            match v.get("t").and_then(Value::as_str) {
                Some("call") => {
                    if let Some(r) = decode_call(&v) {
                        sink.submit(r);
                        n += 1;
                    }
                }
                Some("queue") => {
                    if let Some(e) = decode_queue(&v) {
                        sink.submit_queue(e);
                        n += 1;
                    }
                }
                _ => {}
            }
        }
        n
    }

    pub fn append_call(&mut self, r: &CallRecord) {
        if self.file.is_some() {
            let v = encode_call(r);
            let _ = serde_json::to_writer(&mut self.buf, &v);
            self.buf.push(b'\n');
        }
    }

    pub fn append_queue(&mut self, e: &QueueEvent) {
        if self.file.is_some() {
            let v = json!({
                "t": "queue", "at_ms": e.at_ms, "tenant": e.tenant, "queue": e.queue, "call": e.call,
                "agent": e.agent, "event": e.kind.name(), "data": crate::records::event_data(&e.kind),
            });
            let _ = serde_json::to_writer(&mut self.buf, &v);
            self.buf.push(b'\n');
        }
    }

    /// Writes what was appended since the last call: one `write` system call.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f.write_all(&self.buf) {
                tracing::warn!(path = %self.path.display(), error = %e, "redo log write failed");
            }
            self.len += self.buf.len() as u64;
        }
        self.buf.clear();
    }

    /// Empties the file (everything in it is committed to the database).
    pub fn clear(&mut self) {
        if self.len == 0 {
            return;
        }
        if let Some(f) = self.file.as_mut() {
            if f.set_len(0).is_ok() {
                self.len = 0;
            }
        }
    }

}

fn encode_call(r: &CallRecord) -> Value {
    json!({
        "t": "call", "call_id": r.call_id, "sip_call_id": r.sip_call_id, "tenant": r.tenant, "trunk": r.trunk,
        "service": r.service, "caller": r.caller, "number": r.number, "source": r.source, "transport": r.transport,
        "arrived_ms": r.arrived_ms, "answered_ms": r.answered_ms, "ended_ms": r.ended_ms, "outcome": r.outcome.as_str(),
        "sip_status": r.sip_status, "reason": r.reason, "digits": r.digits, "queue": r.queue, "agent": r.agent,
        "menu_choice": r.menu_choice, "recording": r.recording, "wait_ms": r.wait_ms, "talk_ms": r.talk_ms,
        "end_reason": r.end_reason,
    })
}

fn decode_call(v: &Value) -> Option<CallRecord> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let i = |k: &str| v.get(k).and_then(Value::as_i64);
    Some(CallRecord {
        call_id: s("call_id")?,
        sip_call_id: s("sip_call_id").unwrap_or_default(),
        tenant: s("tenant"),
        trunk: s("trunk"),
        service: s("service"),
        caller: s("caller").unwrap_or_default(),
        number: s("number").unwrap_or_default(),
        source: s("source").unwrap_or_default(),
        transport: s("transport").unwrap_or_default(),
        arrived_ms: i("arrived_ms")?,
        answered_ms: i("answered_ms"),
        ended_ms: i("ended_ms")?,
        outcome: Outcome::from_name(&s("outcome")?)?,
        sip_status: i("sip_status").unwrap_or(0) as u16,
        reason: s("reason").unwrap_or_default(),
        digits: s("digits").unwrap_or_default(),
        queue: s("queue"),
        agent: s("agent"),
        menu_choice: s("menu_choice"),
        recording: s("recording"),
        wait_ms: v.get("wait_ms").and_then(Value::as_u64),
        talk_ms: v.get("talk_ms").and_then(Value::as_u64),
        end_reason: s("end_reason"),
    })
}

fn decode_queue(v: &Value) -> Option<QueueEvent> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let kind = crate::records::decode_event(&s("event")?, &s("data")?).ok()?;
    Some(QueueEvent {
        at_ms: v.get("at_ms").and_then(Value::as_i64)?,
        tenant: s("tenant").unwrap_or_default(),
        queue: s("queue").unwrap_or_default(),
        call: s("call").unwrap_or_default(),
        agent: s("agent").unwrap_or_default(),
        kind,
    })
}
