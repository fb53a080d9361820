//! The records database on a real PostgreSQL server: the SQLite suite's round trips, replay without
//! duplicates, callbacks, migrations, `kill -9` of a writer, reconnecting, and the statistics day read
//! back — with the same answers as SQLite.
//!
//! The test starts its own server from Debian's packages (`postgresql`: initdb and postgres under
//! /usr/lib/postgresql/VERSION/bin) in a temporary directory: listening on 127.0.0.1 on a free port
//! and on a Unix socket in that directory, trust authentication, superuser `callgate`. PostgreSQL
//! refuses to run as root, so when the test runs as root (CI) initdb and postgres run as the `postgres`
//! system user (created by the package) and the directory belongs to that user. Each test gets its own
//! database. The server is stopped (and its directory removed) when the test process exits, also after
//! a failed test (a guard dropped at exit). Without the binaries every test FAILS, saying what to
//! install: these tests never skip.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use callgate::acd::log::{MissReason, QueueEvent, QueueEventKind as K};
use callgate::records::{
    read_callbacks, read_queue_log, read_records, schema_version, CallRecord, CallbackRecord, Database, Outcome,
    RecordWriter, RecordsError, RecordsReader, Row, WriterConfig, PG_MIGRATIONS, SCHEMA_VERSION,
};
use callgate::stats::{Date, IntervalLen, Scope, Stats, StatsConfig};

// ---------------------------------------------------------------------------------------------------
// The server.

const INSTALL: &str = "install PostgreSQL's server with `apt-get install -y postgresql` (Debian)";

/// A running test server. Dropping it stops the server (fast shutdown, then SIGKILL) and removes its
/// directory.
struct PgServer {
    dir: PathBuf,
    sock: PathBuf,
    port: u16,
    child: Child,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT: "fast" shutdown (aborts open transactions, disconnects clients, checkpoints).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// initdb and postgres: Debian's PostgreSQL 15 (what CI installs), else the newest installed.
fn bin_dir() -> Result<PathBuf, String> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if has(&preferred) {
        return Ok(preferred);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| has(d))
        .collect();
    found.sort();
    found.pop().map(|(_, d)| d).ok_or_else(|| {
        format!("PostgreSQL's initdb and postgres are not under /usr/lib/postgresql/*/bin: {INSTALL}")
    })
}

/// Who runs the server: nobody else when we are not root; the `postgres` user when we are.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!(
            "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` system user to run it as: {INSTALL} (the package creates the user)"
        ));
    }
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        // std drops root's supplementary groups, then setgid + setuid, in the child before exec
        // (what `setpriv --reuid --regid --clear-groups` would do).
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown(p: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgServer {
    fn start() -> Result<PgServer, String> {
        let bin = bin_dir()?;
        let user = server_user()?;
        let dir = std::env::temp_dir().join(format!("callgate-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (data, sock) = (dir.join("data"), dir.join("sock"));
        std::fs::create_dir_all(&sock).map_err(|e| format!("create {}: {e}", sock.display()))?;
        chown(&dir, user);
        chown(&sock, user);
        let log = dir.join("server.log");
        let t0 = Instant::now();
        let out = as_user(&mut Command::new(bin.join("initdb")), user)
            .args(["--no-sync", "--no-instructions", "-A", "trust", "-U", "callgate", "-E", "UTF8", "--locale=C.UTF-8", "-D"])
            .arg(&data)
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}: {INSTALL}", bin.join("initdb").display()))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let logf = std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
            chown(&log, user);
            let child = as_user(&mut Command::new(bin.join("postgres")), user)
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(&sock)
                .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=40"])
                .args(["-c", "shared_buffers=32MB", "-c", "unix_socket_permissions=0777"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.join("postgres").display()))?;
            let mut server = PgServer { dir: dir.clone(), sock: sock.clone(), port, child };
            // Ready when it accepts a connection; a port taken meanwhile makes it exit: try another.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = server.child.try_wait() {
                    last_err = format!(
                        "postgres exited ({status}) during start-up:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                if postgres::Client::connect(&server.admin_conninfo("postgres"), postgres::NoTls).is_ok() {
                    eprintln!("PostgreSQL test server on 127.0.0.1:{port} ready in {:?}", t0.elapsed());
                    return Ok(server);
                }
                if Instant::now() > deadline {
                    last_err = format!(
                        "postgres did not accept connections within 30 s:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Keep the data directory for the next attempt; only the process goes.
            let _ = server.child.kill();
            let _ = server.child.wait();
            std::mem::forget(server);
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_err)
    }

    /// Over the Unix socket, key/value form.
    fn admin_conninfo(&self, db: &str) -> String {
        format!("host={} port={} user=callgate dbname={db} connect_timeout=5", self.sock.display(), self.port)
    }
}

static SERVER: Mutex<Option<PgServer>> = Mutex::new(None);
static STARTED: OnceLock<Result<(u16, PathBuf), String>> = OnceLock::new();

/// Runs at process exit (the test harness exits through `exit`, also when tests failed): drops the
/// server guard, which stops the server.
extern "C" fn stop_server_at_exit() {
    if let Ok(mut g) = SERVER.lock() {
        drop(g.take());
    }
}

/// The shared server's port and socket directory, starting it on first use.
fn server() -> (u16, PathBuf) {
    let r = STARTED.get_or_init(|| {
        let s = PgServer::start()?;
        let info = (s.port, s.sock.clone());
        *SERVER.lock().unwrap() = Some(s);
        unsafe { libc::atexit(stop_server_at_exit) };
        Ok(info)
    });
    match r {
        Ok(info) => info.clone(),
        Err(e) => panic!("cannot start the PostgreSQL test server: {e}"),
    }
}

fn admin(db: &str) -> postgres::Client {
    let (port, sock) = server();
    let ci = format!("host={} port={port} user=callgate dbname={db} connect_timeout=5", sock.display());
    postgres::Client::connect(&ci, postgres::NoTls).unwrap_or_else(|e| panic!("connect to {db}: {e:?}"))
}

/// A new, empty database for one test, with ICU's root collation (so that an ORDER BY that forgot
/// `COLLATE "C"` would sort differently from SQLite). Returns its URL (TCP on 127.0.0.1).
fn fresh_db(name: &str) -> PathBuf {
    let (port, _) = server();
    let mut c = admin("postgres");
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
    c.batch_execute(&format!(
        "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'und'"
    ))
    .unwrap();
    PathBuf::from(format!("postgres://callgate@127.0.0.1:{port}/{name}"))
}

/// The same database, as a key/value connection string over the Unix socket.
fn socket_conninfo(name: &str) -> PathBuf {
    let (port, sock) = server();
    PathBuf::from(format!("host={} port={port} user=callgate dbname={name}", sock.display()))
}

/// A fresh SQLite file for the side-by-side comparisons (removed on drop).
struct TempSqlite(PathBuf);

impl TempSqlite {
    fn new(tag: &str) -> TempSqlite {
        let dir = std::env::temp_dir().join(format!("callgate-records-pg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempSqlite(dir)
    }
    fn db(&self) -> PathBuf {
        self.0.join("calls.sqlite")
    }
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------------
// Data.

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

/// Call records that exercise every column: all optional fields set or not, quotes, non-ASCII, ids
/// that sort differently byte-wise and in a human collation, several arriving in the same millisecond.
fn records() -> Vec<CallRecord> {
    let mut v = vec![
        CallRecord {
            call_id: "cg-full".into(),
            sip_call_id: "f@carrier".into(),
            tenant: Some("demo".into()),
            trunk: Some("kt-1".into()),
            service: Some("120 다산콜".into()),
            caller: "01012341234".into(),
            number: "120".into(),
            source: "192.0.2.10:5060".into(),
            transport: "udp".into(),
            arrived_ms: T0,
            answered_ms: Some(T0 + 13_000),
            ended_ms: T0 + 400_000,
            outcome: Outcome::Completed,
            sip_status: 200,
            reason: "BYE from caller; 'quoted' \"too\"".into(),
            digits: "12#".into(),
            queue: Some("general".into()),
            agent: Some("1001".into()),
            menu_choice: Some("2 passports".into()),
            recording: Some("demo/2024/05/01/cg-full.wav".into()),
            wait_ms: Some(17_500),
            talk_ms: Some(u64::MAX / 2),
            end_reason: Some("caller".into()),
        },
        CallRecord { call_id: "cg-bare".into(), arrived_ms: T0 + 1, ended_ms: T0 + 2, ..Default::default() },
    ];
    // Same millisecond: SQLite orders by call_id byte-wise: "cg-B" < "cg-_" < "cg-a" < "cg-é".
    for (i, id) in ["cg-a", "cg-B", "cg-é", "cg-_"].into_iter().enumerate() {
        v.push(CallRecord {
            call_id: id.into(),
            sip_call_id: format!("{i}@x"),
            tenant: Some("demo".into()),
            caller: format!("0101111000{i}"),
            arrived_ms: T0 + 5,
            ended_ms: T0 + 6,
            outcome: Outcome::ALL[i],
            sip_status: [487u16, 0, 65535, 503][i],
            ..Default::default()
        });
    }
    v
}

// ---------------------------------------------------------------------------------------------------
// The SQLite suite, on PostgreSQL.

#[test]
fn every_queue_event_kind_round_trips() {
    let db = fresh_db("kinds");
    let w = RecordWriter::open(&db).unwrap();
    let events = every_kind();
    for e in &events {
        w.sink().submit_queue(e.clone());
    }
    w.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(read_queue_log(&db, T0..T0 + 100).unwrap(), events);
    // Ranges are half-open and by time.
    assert_eq!(read_queue_log(&db, T0 + 2..T0 + 4).unwrap(), events[2..4]);
    let r = RecordsReader::open(&db).unwrap();
    assert_eq!(r.queue_log(T0..T0 + 100, Some("other")).unwrap(), []);
    assert_eq!(r.queue_log(T0..T0 + 100, Some("demo")).unwrap(), events);
    let contacts = r.contacts(T0..T0 + 100, Some("demo")).unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!((contacts[0].call.as_str(), contacts[0].caller.as_str()), ("cg-1", "01012345678"));
    assert_eq!(r.contacts(T0..T0 + 100, None).unwrap(), contacts);
    let s = w.stats();
    assert_eq!((s.queue_written, s.queue_duplicates, s.queued()), (16, 0, 0));
    w.close().unwrap();
}

#[test]
fn replaying_events_writes_nothing_twice() {
    let db = fresh_db("replay");
    let mut events = every_kind();
    // Two identical events in the same millisecond are two facts: both are kept (seq 0 and 1).
    events.push(ev(T0 + 20, "cg-9", "1001", K::Miss { reason: MissReason::Busy, ring_ms: 0 }));
    events.push(ev(T0 + 20, "cg-9", "1001", K::Miss { reason: MissReason::Busy, ring_ms: 0 }));
    let w = RecordWriter::open(&db).unwrap();
    for e in &events {
        w.sink().submit_queue(e.clone());
    }
    for r in records() {
        w.submit(r);
    }
    w.flush(Duration::from_secs(10)).unwrap();
    let s = w.stats();
    assert_eq!((s.queue_written, s.queue_duplicates, s.written, s.duplicates), (18, 0, 6, 0));
    w.close().unwrap();
    // After a restart (a new writer: a new process's memory), the sender replays everything.
    let w = RecordWriter::open(&db).unwrap();
    for e in &events {
        w.send(Row::Queue(e.clone()));
    }
    for r in records() {
        w.submit(r);
    }
    w.flush(Duration::from_secs(10)).unwrap();
    let s = w.stats();
    assert_eq!((s.queue_written, s.queue_duplicates, s.written, s.duplicates), (0, 18, 0, 6));
    w.close().unwrap();
    assert_eq!(read_queue_log(&db, T0..T0 + 100).unwrap(), events, "each event exactly once, the identical pair twice, in order");
    assert_eq!(read_records(&db).unwrap().len(), 6);
}

#[test]
fn pending_callbacks_survive_a_restart_and_follow_upserts_and_deletes() {
    fresh_db("callbacks");
    // Through the Unix socket with a key/value connection string, this time.
    let db = socket_conninfo("callbacks");
    let w = RecordWriter::open(&db).unwrap();
    let sink = w.sink();
    sink.upsert_callback(cb(1, T0 + 1000, 0));
    sink.upsert_callback(cb(2, T0 + 500, 0));
    sink.upsert_callback(cb(u64::MAX, T0 + 9000, 0)); // every u64 id round-trips
    sink.upsert_callback(cb(1, T0 + 2000, 1)); // a failed attempt: retried later
    sink.upsert_callback(cb(3, T0, 0));
    sink.delete_callback(3); // done within the same batch: the order is kept
    sink.delete_callback(42); // unknown: nothing to do, not an error
    w.close().unwrap();
    let got = read_callbacks(&db).unwrap();
    assert_eq!(got, vec![cb(2, T0 + 500, 0), cb(1, T0 + 2000, 1), cb(u64::MAX, T0 + 9000, 0)]);
    // Restart: the same rows; then the ACD finishes callback 2.
    let w = RecordWriter::open(&db).unwrap();
    assert_eq!(read_callbacks(&db).unwrap().len(), 3);
    w.sink().delete_callback(2);
    w.sink().delete_callback(2); // replayed delete: idempotent
    w.close().unwrap();
    assert_eq!(read_callbacks(&db).unwrap(), vec![cb(1, T0 + 2000, 1), cb(u64::MAX, T0 + 9000, 0)]);
}

#[test]
fn call_records_read_back_as_from_sqlite() {
    let db = fresh_db("calls");
    let tmp = TempSqlite::new("calls");
    let lite = tmp.db();
    for path in [&db, &lite] {
        let w = RecordWriter::open(path).unwrap();
        for r in records().into_iter().rev() {
            w.submit(r);
        }
        w.submit(records()[0].clone()); // a duplicate, in the same batch
        assert_eq!(w.close().unwrap(), 6);
    }
    let from_pg = read_records(&db).unwrap();
    assert_eq!(from_pg, read_records(&lite).unwrap(), "same records, same order");
    let mut want = records();
    want.sort_by(|a, b| (a.arrived_ms, a.call_id.as_bytes()).cmp(&(b.arrived_ms, b.call_id.as_bytes())));
    assert_eq!(from_pg, want);
    let r = RecordsReader::open(&db).unwrap();
    assert_eq!(r.records(T0 + 1..T0 + 5).unwrap(), want[1..2]);
    assert_eq!(
        r.call_contacts(T0..T0 + 10, "demo").unwrap(),
        RecordsReader::open(&lite).unwrap().call_contacts(T0..T0 + 10, "demo").unwrap()
    );
}

#[test]
fn a_nul_in_a_field_does_not_block_the_records_behind_it() {
    // PostgreSQL's text cannot hold NUL; SQLite's can. The record is kept with U+FFFD instead.
    let db = fresh_db("nul");
    let w = RecordWriter::open(&db).unwrap();
    let odd = CallRecord { call_id: "cg-odd".into(), reason: "a\0b".into(), arrived_ms: T0, ended_ms: T0, ..Default::default() };
    let next = CallRecord { call_id: "cg-next".into(), arrived_ms: T0 + 1, ended_ms: T0 + 1, ..Default::default() };
    w.submit(odd);
    w.sink().submit_queue(ev(T0, "cg-odd", "", K::Refused { caller: "x\0y".into(), reason: "full".into() }));
    w.submit(next.clone());
    w.flush(Duration::from_secs(10)).unwrap();
    w.close().unwrap();
    let got = read_records(&db).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].reason, "a\u{FFFD}b");
    assert_eq!(got[1], next);
    // The event's data is JSON, where a NUL is the escape \u0000: kept exactly.
    assert_eq!(
        read_queue_log(&db, T0..T0 + 1).unwrap()[0].kind,
        K::Refused { caller: "x\0y".into(), reason: "full".into() }
    );
}

#[test]
fn an_empty_database_is_migrated_once_and_a_newer_one_refused() {
    let db = fresh_db("migrate");
    assert_eq!(schema_version(&db).unwrap(), 0);
    RecordWriter::open(&db).unwrap().close().unwrap();
    assert_eq!(schema_version(&db).unwrap(), SCHEMA_VERSION);
    let mut c = admin("migrate");
    let versions: Vec<i64> =
        c.query("SELECT version FROM schema_version ORDER BY version", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>(), "one row per migration");
    // Reopening applies nothing (the rows would collide on the PRIMARY KEY if it tried).
    RecordWriter::open(&db).unwrap().close().unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM schema_version", &[]).unwrap().get(0);
    assert_eq!(n, SCHEMA_VERSION);
    // Two writers opening a fresh database at once: the advisory lock lets one migrate.
    let db2 = fresh_db("migrate_race");
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let db2 = db2.clone();
            std::thread::spawn(move || RecordWriter::open(&db2).map(|w| w.close()))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap().unwrap();
    }
    assert_eq!(schema_version(&db2).unwrap(), SCHEMA_VERSION);
    // Written by a newer callgate: refused, nothing changed.
    c.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(SCHEMA_VERSION + 1)]).unwrap();
    match RecordWriter::open(&db) {
        Err(RecordsError::UnknownSchema { found, known, .. }) => assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
        Err(e) => panic!("expected UnknownSchema, got {e}"),
        Ok(_) => panic!("expected UnknownSchema, the writer opened"),
    }
}

#[test]
fn a_version_2_database_is_migrated_and_keeps_its_calls() {
    let db = fresh_db("v2");
    {
        // The schema as a version-2 callgate left it (its migrations and version rows), with a call.
        let mut c = admin("v2");
        c.batch_execute("CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            .unwrap();
        for (i, sql) in PG_MIGRATIONS[..2].iter().enumerate() {
            c.batch_execute(sql).unwrap();
            c.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(i as i64 + 1)]).unwrap();
        }
        c.batch_execute(
            "INSERT INTO calls (call_id, sip_call_id, tenant, caller, number, source, transport, arrived_ms,
                                ended_ms, outcome, sip_status, reason, digits)
             VALUES ('old', 'x@y', 'demo', '0212345678', '120', '192.0.2.1:5060', 'UDP', 10, 20, 'abandoned', 487, 'CANCEL', '1')",
        )
        .unwrap();
    }
    assert_eq!(schema_version(&db).unwrap(), 2);
    let w = RecordWriter::open(&db).unwrap();
    assert_eq!(schema_version(&db).unwrap(), SCHEMA_VERSION);
    let new = CallRecord {
        call_id: "new".into(),
        tenant: Some("demo".into()),
        arrived_ms: 30,
        ended_ms: 40,
        outcome: Outcome::Completed,
        sip_status: 200,
        agent: Some("1001".into()),
        ..Default::default()
    };
    w.submit(new.clone());
    w.sink().submit_queue(every_kind().remove(0));
    w.sink().upsert_callback(cb(7, T0, 0));
    w.close().unwrap();
    let calls = read_records(&db).unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].call_id.as_str(), calls[0].outcome, calls[0].digits.as_str()), ("old", Outcome::Abandoned, "1"));
    assert_eq!((calls[0].queue.as_ref(), calls[0].wait_ms, calls[0].end_reason.as_ref()), (None, None, None));
    assert_eq!(calls[1], new);
    assert_eq!(read_queue_log(&db, T0..T0 + 1).unwrap(), vec![every_kind().remove(0)]);
    assert_eq!(read_callbacks(&db).unwrap(), vec![cb(7, T0, 0)]);
}

#[test]
fn the_writer_reconnects_and_retries_after_losing_the_server() {
    let db = fresh_db("reconnect");
    let url = PathBuf::from(format!("{}?application_name=cg_reconnect", db.display()));
    let cfg = WriterConfig { retry_initial: Duration::from_millis(10), retry_max: Duration::from_millis(40), ..Default::default() };
    let w = RecordWriter::open_with(&url, cfg).unwrap();
    let rec = |i: i64| CallRecord { call_id: format!("cg-{i:03}"), arrived_ms: T0 + i, ended_ms: T0 + i, ..Default::default() };
    for i in 0..10 {
        w.submit(rec(i));
    }
    w.flush(Duration::from_secs(10)).unwrap();
    // The server drops the writer's connection (an administrator, a failover, a restart).
    let mut c = admin("reconnect");
    let killed: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cg_reconnect') t",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    for i in 10..20 {
        w.submit(rec(i));
    }
    w.flush(Duration::from_secs(10)).unwrap();
    // The table goes away under the writer: batches fail and are kept, nothing is confirmed ...
    c.batch_execute("ALTER TABLE calls RENAME TO calls_away").unwrap();
    for i in 20..30 {
        w.submit(rec(i));
    }
    assert!(matches!(w.flush(Duration::from_millis(300)), Err(RecordsError::FlushTimeout { .. })));
    assert_eq!(w.stats().written, 20);
    // ... until it is back.
    c.batch_execute("ALTER TABLE calls_away RENAME TO calls").unwrap();
    w.flush(Duration::from_secs(10)).unwrap();
    let s = w.stats();
    assert_eq!((s.written, s.duplicates, s.lost, s.queued()), (30, 0, 0, 0));
    w.close().unwrap();
    let got = read_records(&db).unwrap();
    assert_eq!(got, (0..30).map(rec).collect::<Vec<_>>());
}

#[test]
fn errors_name_the_server_and_never_the_password() {
    let (port, _) = server();
    // Nothing listens on port 1: the open fails at once, naming where it tried.
    let e = RecordWriter::open(Path::new("postgresql://callgate:s3cret@127.0.0.1:1/records")).err().expect("must fail");
    let msg = e.to_string();
    assert!(matches!(e, RecordsError::Postgres { op: "connect", .. }), "{msg}");
    assert!(msg.contains("host=127.0.0.1 port=1 user=callgate dbname=records") && !msg.contains("s3cret"), "{msg}");
    // A database that does not exist: the server's own words come through.
    let e = RecordsReader::open(Path::new(&format!("postgres://callgate:s3cret@127.0.0.1:{port}/no_such_db")))
        .err()
        .expect("must fail");
    let msg = e.to_string();
    assert!(msg.contains("no_such_db") && msg.contains("does not exist") && !msg.contains("s3cret"), "{msg}");
    // A malformed connection string: refused before connecting, password cut out.
    let e = Database::parse("postgres://callgate:s3cret@127.0.0.1:notaport/records").unwrap_err().to_string();
    assert!(e.contains("expected a PostgreSQL connection string") && !e.contains("s3cret"), "{e}");
}

/// The default profile, copied to a scratch directory with `database` set to `value` (and the audio
/// directory made absolute so that the prompts are found). Returns the directory and the line of
/// `database =` in callgate.toml.
fn profile_with_database(tmp: &TempSqlite, value: &str) -> (PathBuf, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tmp.0.join("profile");
    std::fs::create_dir_all(dir.join("tenants")).unwrap();
    for rel in ["trunks.toml", "tenants/demo.toml"] {
        std::fs::copy(root.join("sip-profiles/default").join(rel), dir.join(rel)).unwrap();
    }
    let text = std::fs::read_to_string(root.join("sip-profiles/default/callgate.toml")).unwrap();
    let mut line = 0;
    let out: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if l.starts_with("database =") {
                line = i + 1;
                format!("database = {value:?}")
            } else if l.starts_with("audio_dir =") {
                format!("audio_dir = {:?}", root.join("audio").display().to_string())
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(line > 0, "the default profile sets [records] database");
    std::fs::write(dir.join("callgate.toml"), out.join("\n") + "\n").unwrap();
    (dir, line)
}

#[test]
fn the_profile_chooses_postgresql_and_checks_the_string_at_load() {
    use callgate::config::Profile;
    let tmp = TempSqlite::new("profile");
    let url = "postgres://callgate:s3cret@db1.example:5433/callgate";
    let (dir, _) = profile_with_database(&tmp, url);
    let p = Profile::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.records.database, PathBuf::from(url), "passed on as written, for RecordWriter::open");
    assert!(Database::from_path(&p.records.database).unwrap().is_postgres_db());
    // No directory to be relative to: recordings stay where the default puts them.
    assert_eq!(p.records.recordings_dir, PathBuf::from("var/recordings"));
    let summary = p.summary().to_string();
    assert!(summary.contains("postgresql host=db1.example port=5433 user=callgate dbname=callgate"), "{summary}");
    assert!(!summary.contains("s3cret"), "{summary}");
    // The key/value form, too.
    let (dir, _) = profile_with_database(&tmp, "host=/var/run/postgresql dbname=callgate");
    assert!(Database::from_path(&Profile::load(&dir).unwrap().records.database).unwrap().is_postgres_db());
    // A malformed string fails the profile at its line, without the password.
    let (dir, line) = profile_with_database(&tmp, "postgres://callgate:s3cret@db1.example:notaport/callgate");
    let e = Profile::load(&dir).expect_err("must fail");
    assert_eq!((e.file(), e.line()), (dir.join("callgate.toml").as_path(), Some(line)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("expected a PostgreSQL connection string") && !msg.contains("s3cret"), "{msg}");
    // Anything else is still an SQLite file.
    let (dir, _) = profile_with_database(&tmp, "/srv/callgate/records.db");
    let p = Profile::load(&dir).unwrap();
    assert_eq!(Database::from_path(&p.records.database).unwrap(), Database::Sqlite("/srv/callgate/records.db".into()));
    assert_eq!(p.records.recordings_dir, PathBuf::from("/srv/callgate/recordings"));
}

// ---------------------------------------------------------------------------------------------------
// kill -9 of a writer process.

/// The child side of `kill_9_loses_only_uncommitted_rows`: writes events and calls forever, printing
/// how many are committed after each confirmed flush. Only run by that test (as a child process).
#[test]
#[ignore = "the child process of kill_9_loses_only_uncommitted_rows"]
fn crash_child_pg_writer() {
    let Ok(db) = std::env::var("CALLGATE_PG_CRASH_CHILD_DB") else { return };
    let w = RecordWriter::open(Path::new(&db)).unwrap();
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
    let db = fresh_db("kill9");
    RecordWriter::open(&db).unwrap().close().unwrap(); // the schema, before the child starts
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_pg_writer", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CALLGATE_PG_CRASH_CHILD_DB", &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut committed = 0i64;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while committed < 3000 {
        let line = lines.next().expect("the child writes until killed").unwrap();
        if let Some(n) = line.strip_prefix("committed ") {
            committed = n.trim().parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no close, mid-batch
    child.wait().unwrap();
    // The server rolls back whatever transaction the dead client had open: once it has noticed, what
    // is there stays. Everything confirmed is there, once, in order.
    std::thread::sleep(Duration::from_millis(100));
    let events = read_queue_log(&db, T0..T0 + 10_000_000).unwrap();
    let calls = read_records(&db).unwrap();
    assert!(events.len() as i64 >= committed && calls.len() as i64 >= committed, "{} {} {committed}", events.len(), calls.len());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.at_ms, T0 + i as i64, "no gap, no duplicate");
    }
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(c.arrived_ms, T0 + i as i64, "no gap, no duplicate");
    }
    // The restarted sender replays from the start: nothing is written twice.
    let n = events.len().max(calls.len()) as i64 + 100;
    let w = RecordWriter::open(&db).unwrap();
    for i in 0..n {
        w.sink().submit_queue(ev(T0 + i, &format!("cg-{i}"), "", K::Offer { wait_ms: i as u64 }));
        w.submit(CallRecord { call_id: format!("cg-{i}"), arrived_ms: T0 + i, ended_ms: T0 + i, ..Default::default() });
    }
    w.flush(Duration::from_secs(30)).unwrap();
    let s = w.stats();
    assert!(s.queue_duplicates >= events.len() as u64 && s.duplicates >= calls.len() as u64, "{s:?}");
    assert_eq!((s.queue_written + s.queue_duplicates, s.written + s.duplicates), (n as u64, n as u64));
    w.close().unwrap();
    assert_eq!(read_queue_log(&db, T0..T0 + 10_000_000).unwrap().len() as i64, n);
    assert_eq!(read_records(&db).unwrap().len() as i64, n);
}

// ---------------------------------------------------------------------------------------------------
// The statistics day, read back from both backends.

const TENANT: &str = "demo";
/// 2024-05-01T00:00+09:00.
const MIDNIGHT: i64 = 1_714_489_200_000;

/// A small deterministic generator (64-bit LCG, Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A busy day of a small centre, generated: 300 calls from 08:00 to about 18:00 into `general`
/// (agents 1001-1003) and `en` (1004), answered, abandoned, refused, transferred, asking for a
/// callback or overflowing, with dispositions, holds, wrap-up and agent states; a pool of 150
/// callers so that some call again (first-call resolution); and calls lost before any queue.
fn generated_day() -> (Vec<QueueEvent>, Vec<CallRecord>) {
    let mut rng = Lcg(20240501);
    let mut events = Vec::new();
    let mut records = Vec::new();
    let ev = |events: &mut Vec<QueueEvent>, at: i64, queue: &str, call: &str, agent: &str, kind: K| {
        events.push(QueueEvent { at_ms: at, tenant: TENANT.into(), queue: queue.into(), call: call.into(), agent: agent.into(), kind })
    };
    let state = |events: &mut Vec<QueueEvent>, at: i64, agent: &str, s: &str| {
        events.push(QueueEvent {
            at_ms: at,
            tenant: TENANT.into(),
            queue: String::new(),
            call: String::new(),
            agent: agent.into(),
            kind: K::AgentState { state: s.into(), reason: "test".into() },
        })
    };
    let agents = [("1001", "general"), ("1002", "general"), ("1003", "general"), ("1004", "en")];
    let mut free_at = [0i64; 4];
    for (a, _) in agents {
        state(&mut events, MIDNIGHT + 7 * 3_600_000 + 55 * 60_000, a, "ready");
    }
    let subjects = ["traffic", "passports", "tax", "water", "welfare", "events"];
    for i in 0..300i64 {
        let enter = MIDNIGHT + 8 * 3_600_000 + i * 120_000 + rng.below(60_000) as i64;
        let mut queue = if rng.below(4) == 0 { "en" } else { "general" };
        let caller = format!("0101234{:04}", rng.below(150));
        let call = format!("g{i:03}");
        let roll = rng.below(100);
        let outcome = match roll {
            0..=14 => Outcome::Abandoned,
            15..=19 => Outcome::Busy,
            _ => Outcome::Completed,
        };
        records.push(CallRecord {
            call_id: call.clone(),
            tenant: Some(TENANT.into()),
            caller: caller.clone(),
            number: "120".into(),
            arrived_ms: enter - 12_000,
            ended_ms: enter + 600_000,
            outcome,
            ..Default::default()
        });
        if (15..20).contains(&roll) {
            ev(&mut events, enter, queue, &call, "", K::Refused { caller: caller.clone(), reason: "full".into() });
            continue;
        }
        ev(&mut events, enter, queue, &call, "", K::Enter { caller: caller.clone(), priority: 0, position: 1, skill: String::new() });
        if roll < 15 {
            let wait = 500 + rng.below(60_000);
            ev(&mut events, enter + wait as i64, queue, &call, "", K::Abandon { wait_ms: wait, position: 1 });
            continue;
        }
        if roll < 23 {
            let at = enter + 20_000;
            ev(&mut events, at, queue, &call, "", K::CallbackRequested { number: caller.clone(), due_ms: at });
            continue;
        }
        let mut base = enter;
        if roll < 28 && queue == "general" {
            let at = enter + 30_000;
            base = at;
            ev(&mut events, at, queue, &call, "", K::Overflow { to: "en".into(), wait_ms: 30_000 });
            queue = "en";
            ev(&mut events, at, queue, &call, "", K::Enter { caller: caller.clone(), priority: 0, position: 1, skill: String::new() });
        }
        // Answered by the queue's agent free first.
        let k = (0..4).filter(|&k| agents[k].1 == queue).min_by_key(|&k| free_at[k]).unwrap();
        let agent = agents[k].0;
        // Rings 3 s from the offer; the wait counts from the first enqueue (as for an overflow).
        let connect = (base + 3000 + rng.below(40_000) as i64).max(free_at[k] + 3000);
        let wait_ms = (connect - enter) as u64;
        state(&mut events, connect - 3000, agent, "reserved");
        ev(&mut events, connect - 3000, queue, &call, agent, K::Offer { wait_ms: wait_ms - 3000 });
        ev(&mut events, connect, queue, &call, agent, K::Connect { wait_ms, ring_ms: 3000 });
        state(&mut events, connect, agent, "talking");
        let talk = 30_000 + rng.below(300_000);
        let hold = if rng.below(5) == 0 { rng.below(30_000) } else { 0 };
        let end = connect + (talk + hold) as i64;
        if roll < 35 {
            ev(&mut events, end, queue, &call, agent, K::Transfer { to: "dept-welfare".into(), talk_ms: talk });
        } else {
            ev(&mut events, end, queue, &call, agent, K::Complete { talk_ms: talk, hold_ms: hold, by: "caller".into() });
        }
        state(&mut events, end, agent, "wrapup");
        let subject = subjects[rng.below(subjects.len() as u64) as usize];
        let settled = rng.below(4) != 0;
        ev(&mut events, end + 2000, queue, &call, agent, K::Disposition { subject: subject.into(), settled, flag: String::new() });
        let wrap = 5_000 + rng.below(40_000);
        ev(&mut events, end + wrap as i64, queue, &call, agent, K::WrapupEnd { wrap_ms: wrap });
        state(&mut events, end + wrap as i64, agent, "ready");
        free_at[k] = end + wrap as i64;
    }
    for (a, _) in agents {
        state(&mut events, MIDNIGHT + 20 * 3_600_000, a, "logged_out");
    }
    // Lost in the announcement, before any queue.
    for i in 0..10i64 {
        records.push(CallRecord {
            call_id: format!("r{i:02}"),
            tenant: Some(TENANT.into()),
            caller: format!("0101234{:04}", rng.below(150)),
            number: "120".into(),
            arrived_ms: MIDNIGHT + 9 * 3_600_000 + i * 1_800_000,
            ended_ms: MIDNIGHT + 9 * 3_600_000 + i * 1_800_000 + 8_000,
            outcome: Outcome::Abandoned,
            ..Default::default()
        });
    }
    events.sort_by_key(|e| e.at_ms);
    records.sort_by_key(|r| r.arrived_ms);
    (events, records)
}

fn new_stats() -> Stats {
    let mut st = Stats::new(StatsConfig::default());
    st.set_agent_queues(TENANT, "1001", &["general"]);
    st.set_agent_queues(TENANT, "1002", &["general"]);
    st.set_agent_queues(TENANT, "1003", &["general"]);
    st.set_agent_queues(TENANT, "1004", &["en"]);
    st
}

#[test]
fn the_stats_day_reads_back_the_same_from_postgresql_as_from_sqlite() {
    let (events, records) = generated_day();
    let db = fresh_db("stats_day");
    let tmp = TempSqlite::new("stats-day");
    let lite = tmp.db();
    for path in [&db, &lite] {
        let w = RecordWriter::open_with(path, WriterConfig { batch_max: 256, ..Default::default() }).unwrap();
        for e in &events {
            w.sink().submit_queue(e.clone());
        }
        for r in &records {
            w.submit(r.clone());
        }
        // Another tenant's events on the same day stay out of demo's report.
        let mut other = events[40].clone();
        other.tenant = "goyang".into();
        w.sink().submit_queue(other);
        w.close().unwrap();
    }
    let day = Date::parse("2024-05-01").unwrap();
    let mut live = new_stats();
    for e in &events {
        live.push(e);
    }
    for r in &records {
        live.push_call(r);
    }
    let mut from_pg = new_stats();
    RecordsReader::open(&db).unwrap().load_day(&mut from_pg, TENANT, day).unwrap();
    let mut from_lite = new_stats();
    RecordsReader::open(&lite).unwrap().load_day(&mut from_lite, TENANT, day).unwrap();
    for len in [IntervalLen::M15, IntervalLen::M30, IntervalLen::M60] {
        let pg = from_pg.report(TENANT, day, len);
        assert_eq!(pg.to_json(), from_lite.report(TENANT, day, len).to_json(), "{len:?}: PostgreSQL vs SQLite");
        assert_eq!(pg.to_json(), live.report(TENANT, day, len).to_json(), "{len:?}: PostgreSQL vs live");
        assert_eq!(pg.to_csv(), from_lite.report(TENANT, day, len).to_csv());
    }
    // Not an empty report that trivially matches: every queued call of the day is offered.
    let general = Scope::Queue(TENANT.into(), "general".into());
    let figures = from_pg.day_figures(&general, day);
    assert_eq!(figures, from_lite.day_figures(&general, day));
    let entered = events.iter().filter(|e| e.queue == "general" && matches!(e.kind, K::Enter { .. })).count() as u64;
    assert_eq!(figures.offered, entered);
    assert!(figures.answered > 100 && figures.abandoned > 10 && figures.transfers > 5, "{figures:?}");
}

// ---------------------------------------------------------------------------------------------------
// Figures (not run by default): `cargo test --test records_pg -- --ignored --nocapture write_rates`.

#[test]
#[ignore = "a measurement, run by hand"]
fn write_rates() {
    let db = fresh_db("rates");
    let tmp = TempSqlite::new("rates");
    let lite = tmp.db();
    const N: i64 = 50_000;
    for (name, path) in [("PostgreSQL", &db), ("SQLite", &lite)] {
        let w = RecordWriter::open(path).unwrap();
        let t = Instant::now();
        for i in 0..N {
            w.sink().submit_queue(ev(T0 + i, &format!("cg-{i}"), "1001", K::Connect { wait_ms: i as u64, ring_ms: 3000 }));
            w.submit(CallRecord {
                call_id: format!("cg-{i:08}"),
                caller: "01012345678".into(),
                tenant: Some("demo".into()),
                queue: Some("general".into()),
                arrived_ms: T0 + i,
                ended_ms: T0 + i + 60_000,
                ..Default::default()
            });
        }
        let submitted = t.elapsed();
        w.flush(Duration::from_secs(120)).unwrap();
        let all = t.elapsed();
        w.close().unwrap();
        eprintln!(
            "{name}: {} rows submitted in {submitted:?} ({:.0} ns/row on the sending side), written in {all:?}: {:.0} rows/s",
            2 * N,
            submitted.as_nanos() as f64 / (2 * N) as f64,
            (2 * N) as f64 / all.as_secs_f64()
        );
    }
}
