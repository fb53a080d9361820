//! The queue log and pending callbacks in the records database: round trips, replay without
//! duplicates, migration of an older database, and what a `kill -9` leaves.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use callgate::acd::log::{MissReason, QueueEvent, QueueEventKind as K};
use callgate::records::{
    read_callbacks, read_queue_log, read_records, CallRecord, CallbackRecord, Outcome, RecordWriter, RecordsReader, Row,
    MIGRATIONS, SCHEMA_VERSION,
};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "callgate-records-q-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn db(&self) -> PathBuf {
        self.0.join("calls.sqlite")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const T0: i64 = 1_714_521_600_000; // 2024-05-01T09:00+09:00

fn ev(at: i64, call: &str, agent: &str, kind: K) -> QueueEvent {
    QueueEvent { at_ms: at, tenant: "demo".into(), queue: "general".into(), call: call.into(), agent: agent.into(), kind }
}

/// One event of every kind, with values that test the encoding (quotes, non-ASCII, large numbers).
fn every_kind() -> Vec<QueueEvent> {
    vec![
        ev(T0, "cg-1", "", K::Enter { caller: "01012345678".into(), priority: 7, position: 3, skill: "en".into() }),
        ev(T0 + 1, "cg-2", "", K::Refused { caller: "0212345678".into(), reason: "full".into() }),
        ev(T0 + 2, "cg-1", "1001", K::Offer { wait_ms: 12_345 }),
        ev(T0 + 3, "cg-1", "1001", K::Miss { reason: MissReason::Unreachable, ring_ms: 15_000 }),
        ev(T0 + 4, "cg-1", "1002", K::Connect { wait_ms: 30_000, ring_ms: 2_500 }),
        ev(T0 + 5, "cg-3", "", K::Abandon { wait_ms: 4_999, position: 2 }),
        ev(T0 + 6, "cg-4", "", K::Timeout { wait_ms: 600_000 }),
        ev(T0 + 7, "cg-5", "", K::Overflow { to: "en".into(), wait_ms: 100_000 }),
        ev(T0 + 8, "cg-6", "", K::CallbackRequested { number: "01099998888".into(), due_ms: T0 + 3_600_000 }),
        ev(T0 + 9, "cg-6", "1003", K::CallbackConnect { wait_ms: u64::MAX / 4 }),
        ev(T0 + 10, "cg-7", "", K::CallbackFailed { attempt: 2, reason: "busy \"486\"".into() }),
        ev(T0 + 11, "cg-1", "1002", K::Transfer { to: "sip:welfare@dept.example".into(), talk_ms: 300_000 }),
        ev(T0 + 12, "cg-8", "1002", K::Complete { talk_ms: 180_000, hold_ms: 20_000, by: "caller".into() }),
        ev(T0 + 13, "", "1002", K::WrapupEnd { wrap_ms: 30_000 }),
        ev(T0 + 14, "cg-8", "1002", K::Disposition { subject: "여권 passports".into(), settled: true, flag: "praise".into() }),
        ev(T0 + 15, "", "1002", K::AgentState { state: "not_ready".into(), reason: "break".into() }),
    ]
}

#[test]
fn every_queue_event_kind_round_trips() {
    let tmp = TempDir::new("kinds");
    let path = tmp.db();
    let w = RecordWriter::open(&path).unwrap();
    let events = every_kind();
    for e in &events {
        w.sink().submit_queue(e.clone());
    }
    w.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(read_queue_log(&path, T0..T0 + 100).unwrap(), events);
    // Ranges are half-open and by time.
    assert_eq!(read_queue_log(&path, T0 + 2..T0 + 4).unwrap(), events[2..4]);
    let r = RecordsReader::open(&path).unwrap();
    assert_eq!(r.queue_log(T0..T0 + 100, Some("other")).unwrap(), []);
    let contacts = r.contacts(T0..T0 + 100, Some("demo")).unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!((contacts[0].call.as_str(), contacts[0].caller.as_str()), ("cg-1", "01012345678"));
    let s = w.stats();
    assert_eq!((s.queue_written, s.queue_duplicates, s.queued()), (16, 0, 0));
    w.close().unwrap();
}

#[test]
fn replaying_events_writes_nothing_twice() {
    let tmp = TempDir::new("replay");
    let path = tmp.db();
    let mut events = every_kind();
    // Two identical events in the same millisecond are two facts: both are kept (seq 0 and 1).
    events.push(ev(T0 + 20, "cg-9", "1001", K::Miss { reason: MissReason::Busy, ring_ms: 0 }));
    events.push(ev(T0 + 20, "cg-9", "1001", K::Miss { reason: MissReason::Busy, ring_ms: 0 }));
    let w = RecordWriter::open(&path).unwrap();
    for e in &events {
        w.sink().submit_queue(e.clone());
    }
    w.flush(Duration::from_secs(10)).unwrap();
    let s = w.stats();
    assert_eq!((s.queue_written, s.queue_duplicates), (18, 0));
    w.close().unwrap();
    // After a restart (a new writer: its memory of keys is gone, as in a new process), the sender replays
    // everything from the start: each event maps to the row it already has.
    let w = RecordWriter::open(&path).unwrap();
    for e in &events {
        w.send(Row::Queue(e.clone()));
    }
    w.flush(Duration::from_secs(10)).unwrap();
    assert_eq!((w.stats().queue_written, w.stats().queue_duplicates), (0, 18));
    w.close().unwrap();
    let stored = read_queue_log(&path, T0..T0 + 100).unwrap();
    assert_eq!(stored, events, "each event exactly once, the identical pair twice, in order");
}

fn cb(id: u64, due: i64, attempts: u32) -> CallbackRecord {
    CallbackRecord {
        id,
        tenant: "demo".into(),
        queue: "general".into(),
        number: "01055556666".into(),
        requested_ms: T0,
        due_ms: due,
        enqueued_ms: T0 - 60_000,
        attempts,
        info: serde_json::json!({"cg_id": format!("cg-{id}"), "caller": "01055556666", "priority": 0, "skill": "ko"}),
    }
}

#[test]
fn pending_callbacks_survive_a_restart_and_follow_upserts_and_deletes() {
    let tmp = TempDir::new("callbacks");
    let path = tmp.db();
    let w = RecordWriter::open(&path).unwrap();
    let sink = w.sink();
    sink.upsert_callback(cb(1, T0 + 1000, 0));
    sink.upsert_callback(cb(2, T0 + 500, 0));
    sink.upsert_callback(cb(u64::MAX, T0 + 9000, 0)); // every u64 id round-trips
    sink.upsert_callback(cb(1, T0 + 2000, 1)); // a failed attempt: retried later
    sink.upsert_callback(cb(3, T0, 0));
    sink.delete_callback(3); // done within the same batch: the order is kept
    sink.delete_callback(42); // unknown: nothing to do, not an error
    w.close().unwrap();
    let got = read_callbacks(&path).unwrap();
    assert_eq!(got, vec![cb(2, T0 + 500, 0), cb(1, T0 + 2000, 1), cb(u64::MAX, T0 + 9000, 0)]);
    // Restart: the same rows; then the ACD finishes callback 2.
    let w = RecordWriter::open(&path).unwrap();
    assert_eq!(read_callbacks(&path).unwrap().len(), 3);
    w.sink().delete_callback(2);
    w.sink().delete_callback(2); // replayed delete: idempotent
    w.close().unwrap();
    assert_eq!(read_callbacks(&path).unwrap(), vec![cb(1, T0 + 2000, 1), cb(u64::MAX, T0 + 9000, 0)]);
}

fn user_version(path: &Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
}

#[test]
fn a_version_2_database_is_migrated_and_keeps_its_calls() {
    let tmp = TempDir::new("v2");
    let path = tmp.db();
    {
        // The schema as version 2 wrote it (the migrations of that release, spelled out), with a row.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE calls (
                call_id TEXT PRIMARY KEY NOT NULL, sip_call_id TEXT NOT NULL, tenant TEXT, trunk TEXT,
                service TEXT, caller TEXT NOT NULL, number TEXT NOT NULL, source TEXT NOT NULL,
                transport TEXT NOT NULL, arrived_ms INTEGER NOT NULL, answered_ms INTEGER,
                ended_ms INTEGER NOT NULL, outcome TEXT NOT NULL, sip_status INTEGER NOT NULL,
                reason TEXT NOT NULL);
             CREATE INDEX calls_arrived_ms ON calls(arrived_ms);
             CREATE INDEX calls_tenant ON calls(tenant, arrived_ms);
             ALTER TABLE calls ADD COLUMN digits TEXT NOT NULL DEFAULT '';
             PRAGMA journal_mode=WAL;
             PRAGMA user_version=2;",
        )
        .unwrap();
        c.execute(
            "INSERT INTO calls (call_id, sip_call_id, tenant, caller, number, source, transport, arrived_ms,
                                ended_ms, outcome, sip_status, reason, digits)
             VALUES ('old', 'x@y', 'demo', '0212345678', '120', '192.0.2.1:5060', 'UDP', 10, 20, 'abandoned', 487, 'CANCEL', '1')",
            [],
        )
        .unwrap();
    }
    assert_eq!(MIGRATIONS.len(), 5);
    let w = RecordWriter::open(&path).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let new = CallRecord {
        call_id: "new".into(),
        sip_call_id: "n@y".into(),
        tenant: Some("demo".into()),
        caller: "01011112222".into(),
        number: "120".into(),
        arrived_ms: 30,
        ended_ms: 40,
        outcome: Outcome::Completed,
        sip_status: 200,
        ..Default::default()
    };
    w.submit(new.clone());
    w.sink().submit_queue(every_kind().remove(0));
    w.sink().upsert_callback(cb(7, T0, 0));
    w.close().unwrap();
    let calls = read_records(&path).unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].call_id.as_str(), calls[0].outcome, calls[0].digits.as_str()), ("old", Outcome::Abandoned, "1"));
    assert_eq!(calls[1], new);
    assert_eq!(read_queue_log(&path, T0..T0 + 1).unwrap(), vec![every_kind().remove(0)]);
    assert_eq!(read_callbacks(&path).unwrap(), vec![cb(7, T0, 0)]);
    // Migration 5's columns exist and are NULL for the old row.
    let c = rusqlite::Connection::open(&path).unwrap();
    let nulls: i64 = c
        .query_row(
            "SELECT (queue IS NULL) + (agent IS NULL) + (menu_choice IS NULL) + (recording IS NULL)
                    + (wait_ms IS NULL) + (talk_ms IS NULL) + (end_reason IS NULL) FROM calls WHERE call_id = 'old'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(nulls, 7);
}

/// The child side of `kill_9_loses_only_uncommitted_rows`: writes events forever, printing how many
/// are committed after each confirmed flush. Only run by that test (as a child process).
#[test]
#[ignore = "the child process of kill_9_loses_only_uncommitted_rows"]
fn crash_child_writer() {
    let Ok(path) = std::env::var("CALLGATE_CRASH_CHILD_DB") else { return };
    let w = RecordWriter::open(Path::new(&path)).unwrap();
    let sink = w.sink();
    let mut i: i64 = 0;
    loop {
        for _ in 0..50 {
            sink.submit_queue(ev(T0 + i, &format!("cg-{i}"), "", K::Offer { wait_ms: i as u64 }));
            sink.submit(CallRecord { call_id: format!("cg-{i}"), arrived_ms: T0 + i, ended_ms: T0 + i, ..Default::default() });
            i += 1;
        }
        w.flush(Duration::from_secs(30)).unwrap();
        println!("committed {i}");
    }
}

#[test]
fn kill_9_loses_only_uncommitted_rows() {
    let tmp = TempDir::new("kill9");
    let path = tmp.db();
    RecordWriter::open(&path).unwrap().close().unwrap(); // create the schema before the child races
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CALLGATE_CRASH_CHILD_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut committed = 0i64;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while committed < 2000 {
        let line = lines.next().expect("the child writes until killed").unwrap();
        if let Some(n) = line.strip_prefix("committed ") {
            committed = n.trim().parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no close, mid-batch
    child.wait().unwrap();
    // Everything confirmed is there, once.
    let events = read_queue_log(&path, T0..T0 + 10_000_000).unwrap();
    let calls = read_records(&path).unwrap();
    assert!(events.len() as i64 >= committed && calls.len() as i64 >= committed, "{} {} {committed}", events.len(), calls.len());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.at_ms, T0 + i as i64, "no gap, no duplicate");
    }
    // The restarted sender replays from the start: nothing is written twice.
    let n = events.len().max(calls.len()) as i64 + 100;
    let w = RecordWriter::open(&path).unwrap();
    for i in 0..n {
        w.sink().submit_queue(ev(T0 + i, &format!("cg-{i}"), "", K::Offer { wait_ms: i as u64 }));
        w.submit(CallRecord { call_id: format!("cg-{i}"), arrived_ms: T0 + i, ended_ms: T0 + i, ..Default::default() });
    }
    w.close().unwrap();
    assert_eq!(read_queue_log(&path, T0..T0 + 10_000_000).unwrap().len() as i64, n);
    assert_eq!(read_records(&path).unwrap().len() as i64, n);
}

#[test]
fn the_acd_fields_of_a_call_record_round_trip() {
    let tmp = TempDir::new("fields");
    let path = tmp.db();
    let full = CallRecord {
        call_id: "cg-full".into(),
        sip_call_id: "f@carrier".into(),
        tenant: Some("demo".into()),
        caller: "01012341234".into(),
        number: "120".into(),
        arrived_ms: T0,
        answered_ms: Some(T0 + 13_000),
        ended_ms: T0 + 400_000,
        outcome: Outcome::Completed,
        sip_status: 200,
        queue: Some("general".into()),
        agent: Some("1001".into()),
        menu_choice: Some("2 passports".into()),
        recording: Some("demo/2024/05/01/cg-full.wav".into()),
        wait_ms: Some(17_500),
        talk_ms: Some(312_000),
        end_reason: Some("caller".into()),
        ..Default::default()
    };
    let bare = CallRecord { call_id: "cg-bare".into(), arrived_ms: T0 + 1, ended_ms: T0 + 2, ..Default::default() };
    let w = RecordWriter::open(&path).unwrap();
    w.submit(full.clone());
    w.submit(bare.clone());
    w.close().unwrap();
    assert_eq!(read_records(&path).unwrap(), vec![full, bare]);
}

#[test]
fn a_damaged_queue_row_is_reported_with_its_id_and_field() {
    let tmp = TempDir::new("damaged");
    let path = tmp.db();
    let w = RecordWriter::open(&path).unwrap();
    w.sink().submit_queue(ev(T0, "cg-1", "1001", K::Connect { wait_ms: 5, ring_ms: 1 }));
    w.close().unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("UPDATE queue_log SET data = '{\"ring_ms\":1}'", []).unwrap();
    let e = read_queue_log(&path, T0..T0 + 1).unwrap_err().to_string();
    assert!(e.contains("queue_log row 1 (connect)") && e.contains("wait_ms: missing"), "{e}");
    c.execute("UPDATE queue_log SET event = 'teleport'", []).unwrap();
    let e = read_queue_log(&path, T0..T0 + 1).unwrap_err().to_string();
    assert!(e.contains("\"teleport\""), "{e}");
}
