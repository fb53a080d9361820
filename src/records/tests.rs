use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;

/// A fresh directory under the system temp dir (removed on drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "callgate-records-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
    fn db(&self) -> PathBuf {
        // A nested directory that does not exist yet: open() must create it.
        self.0.join("nested/dir/calls.sqlite")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rec(i: u64) -> CallRecord {
    let outcome = Outcome::ALL[(i % Outcome::ALL.len() as u64) as usize];
    CallRecord {
        call_id: format!("cg-{i:08}"),
        sip_call_id: format!("{i}@carrier.example"),
        tenant: if i.is_multiple_of(3) { None } else { Some(format!("tenant-{}", i % 5)) },
        trunk: Some("kt-1".into()),
        service: if i.is_multiple_of(2) { Some("120 dasan".into()) } else { None },
        caller: format!("sip:+8210{i:08}@carrier.example"),
        number: "120".into(),
        source: "192.0.2.10:5060".into(),
        transport: if i.is_multiple_of(4) { "tcp" } else { "udp" }.into(),
        arrived_ms: 1_700_000_000_000 + i as i64,
        answered_ms: if i.is_multiple_of(2) { Some(1_700_000_000_100 + i as i64) } else { None },
        ended_ms: 1_700_000_013_000 + i as i64,
        outcome,
        sip_status: [200u16, 403, 404, 487, 488, 503][(i % 6) as usize],
        reason: format!("reason \"{i}\" 'quoted' ; ünïcode"),
        digits: if i.is_multiple_of(5) { String::new() } else { format!("{}#", i % 10) },
        ..Default::default()
    }
}

fn user_version(path: &Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
}

#[test]
fn outcome_names_round_trip() {
    for o in Outcome::ALL {
        assert_eq!(Outcome::from_name(o.as_str()), Some(o));
        assert_eq!(Outcome::ALL[o.index()], o);
    }
    assert_eq!(Outcome::from_name("nope"), None);
}

#[test]
fn many_threads_write_exactly_n_records() {
    let tmp = TempDir::new("threads");
    let path = tmp.db();
    let w = RecordWriter::open_with(&path, WriterConfig { batch_max: 64, ..Default::default() }).unwrap();
    const THREADS: u64 = 4;
    const PER: u64 = 500;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let sink = w.sink();
            s.spawn(move || {
                for i in 0..PER {
                    assert!(sink.try_submit(rec(t * PER + i)));
                }
            });
        }
    });
    let written = w.close().unwrap();
    assert_eq!(written, THREADS * PER);
    let got = read_records(&path).unwrap();
    assert_eq!(got.len() as u64, THREADS * PER);
    let want: Vec<CallRecord> = (0..THREADS * PER).map(rec).collect();
    assert_eq!(got, want); // ordered by arrived_ms, which rises with i
}

#[test]
fn wal_mode_and_schema_version() {
    let tmp = TempDir::new("wal");
    let path = tmp.db();
    let w = RecordWriter::open(&path).unwrap();
    w.submit(rec(1));
    w.flush(Duration::from_secs(10)).unwrap();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode.to_ascii_lowercase(), "wal");
        // synchronous is per connection; check that the writer's setting is the documented one by
        // opening a connection the same way.
        let names: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='calls' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|n: &String| !n.starts_with("sqlite_autoindex"))
            .collect();
        assert_eq!(names, ["calls_arrived_ms", "calls_contacts", "calls_tenant"]);
    }
    // Readable while the writer is open (WAL readers do not block).
    assert_eq!(read_records(&path).unwrap(), vec![rec(1)]);
    assert_eq!(w.close().unwrap(), 1);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 5);
}

#[test]
fn a_version_1_database_gains_the_digits_column_and_keeps_its_rows() {
    let tmp = TempDir::new("v1_to_v2");
    let path = tmp.db();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        // A database as the first release wrote it: migration 1 only, one row.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO calls (call_id, sip_call_id, caller, number, source, transport, arrived_ms, ended_ms, outcome, sip_status, reason)
             VALUES ('old', 'x@y', '0212345678', '120', '127.0.0.1:5060', 'UDP', 1, 2, 'completed', 200, 'ok')",
            [],
        )
        .unwrap();
    }
    let w = RecordWriter::open(&path).unwrap();
    let mut r = rec(1);
    r.digits = "12#".into();
    w.sink().submit(r.clone());
    assert_eq!(w.close().unwrap(), 1);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let all = read_records(&path).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].call_id, "old");
    assert_eq!(all[0].digits, "", "old rows read as no digits");
    assert_eq!(all[1], r);
}

#[test]
fn synchronous_normal_on_writer_connection() {
    let tmp = TempDir::new("sync");
    let path = tmp.db();
    let c = writer::open_db(&path).unwrap();
    let sync: i64 = c.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
    assert_eq!(sync, 1, "synchronous=NORMAL is 1");
}

#[test]
fn reopen_runs_no_migration_twice() {
    let tmp = TempDir::new("reopen");
    let path = tmp.db();
    let w = RecordWriter::open(&path).unwrap();
    w.submit(rec(1));
    w.close().unwrap();
    // Migration 1 is a plain CREATE TABLE: running it again would fail with "table calls already exists".
    for round in 2..4u64 {
        let w = RecordWriter::open(&path).unwrap();
        w.submit(rec(round));
        assert_eq!(w.close().unwrap(), 1);
        assert_eq!(user_version(&path), SCHEMA_VERSION);
    }
    // migrate() itself reports zero applied on an up-to-date file.
    let mut c = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(schema::migrate(&mut c, &path).unwrap(), 0);
    drop(c);
    assert_eq!(read_records(&path).unwrap().len(), 3);
}

#[test]
fn newer_schema_is_refused() {
    let tmp = TempDir::new("newer");
    let path = tmp.db();
    RecordWriter::open(&path).unwrap().close().unwrap();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    }
    match RecordWriter::open(&path) {
        Err(RecordsError::UnknownSchema { found, known, path: p }) => {
            assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            assert_eq!(p, path);
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

#[test]
fn duplicate_call_id_written_once() {
    let tmp = TempDir::new("dup");
    let path = tmp.db();
    let w = RecordWriter::open(&path).unwrap();
    let first = rec(7);
    let mut replay = rec(7);
    replay.reason = "a replay must not overwrite".into();
    w.submit(first.clone());
    w.submit(replay.clone()); // same batch
    w.flush(Duration::from_secs(10)).unwrap();
    w.submit(replay); // a later batch
    let stats_before_close = w.stats();
    assert_eq!(w.close().unwrap(), 1);
    assert!(stats_before_close.submitted == 3);
    assert_eq!(read_records(&path).unwrap(), vec![first.clone()]);
    // And across a reopen (crash replay).
    let w = RecordWriter::open(&path).unwrap();
    w.submit(first.clone());
    assert_eq!(w.close().unwrap(), 0);
    assert_eq!(read_records(&path).unwrap(), vec![first]);
}

#[test]
fn close_with_queued_records_loses_none() {
    let tmp = TempDir::new("queued");
    let path = tmp.db();
    let w = RecordWriter::open_with(&path, WriterConfig { batch_max: 16, ..Default::default() }).unwrap();
    let sink = w.sink();
    const N: u64 = 5000;
    for i in 0..N {
        sink.submit(rec(i));
    }
    // Submitted much faster than 16-record transactions commit: most are still queued at close.
    let stats = sink.stats();
    assert_eq!(stats.submitted, N);
    assert_eq!(w.close().unwrap(), N);
    let s = sink.stats();
    assert_eq!((s.written, s.queued(), s.dropped, s.lost), (N, 0, 0, 0));
    assert_eq!(read_records(&path).unwrap().len() as u64, N);
    // After close, a submit is refused and counted, not blocked.
    assert!(!sink.try_submit(rec(N)));
    sink.submit(rec(N + 1));
    assert_eq!(sink.stats().dropped, 2);
}

#[test]
fn drop_without_close_still_drains() {
    let tmp = TempDir::new("drop");
    let path = tmp.db();
    {
        let w = RecordWriter::open(&path).unwrap();
        for i in 0..100 {
            w.submit(rec(i));
        }
    }
    assert_eq!(read_records(&path).unwrap().len(), 100);
}

#[test]
fn errors_name_the_path_and_operation() {
    let tmp = TempDir::new("err");
    std::fs::create_dir_all(&tmp.0).unwrap();
    // A regular file where the parent directory should be.
    let blocker = tmp.0.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("sub/calls.sqlite");
    let e = RecordWriter::open(&path).err().expect("must fail");
    let msg = e.to_string();
    assert!(matches!(e, RecordsError::CreateDir { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");

    // Not a database at all.
    let junk = tmp.0.join("junk.sqlite");
    std::fs::write(&junk, vec![b'j'; 4096]).unwrap();
    let e = RecordWriter::open(&junk).err().expect("must fail");
    let msg = e.to_string();
    assert!(matches!(e, RecordsError::Sqlite { .. }), "{msg}");
    assert!(msg.contains("junk.sqlite") && msg.contains("failed"), "{msg}");

    // Reading a missing file names it.
    let e = read_records(&tmp.0.join("missing.sqlite")).unwrap_err();
    assert!(e.to_string().contains("missing.sqlite"), "{e}");
}

#[test]
fn failed_batches_are_retried_not_lost() {
    let tmp = TempDir::new("retry");
    let path = tmp.db();
    let cfg = WriterConfig { retry_initial: Duration::from_millis(10), retry_max: Duration::from_millis(40), ..Default::default() };
    let w = RecordWriter::open_with(&path, cfg).unwrap();
    w.submit(rec(0));
    w.flush(Duration::from_secs(10)).unwrap();
    // Make inserts fail: the table disappears under the writer.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.busy_timeout(Duration::from_secs(10)).unwrap(); // the writer's retries take the lock briefly
    other.execute_batch("ALTER TABLE calls RENAME TO calls_away").unwrap();
    for i in 1..=20 {
        w.submit(rec(i));
    }
    // Still failing: a flush cannot be confirmed.
    assert!(matches!(w.flush(Duration::from_millis(150)), Err(RecordsError::FlushTimeout { .. })));
    assert_eq!(w.stats().written, 1);
    other.execute_batch("ALTER TABLE calls_away RENAME TO calls").unwrap();
    drop(other);
    w.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(w.close().unwrap(), 21);
    assert_eq!(read_records(&path).unwrap().len(), 21);
}

#[test]
fn close_reports_records_it_could_not_write() {
    let tmp = TempDir::new("lost");
    let path = tmp.db();
    let cfg = WriterConfig {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(10),
        close_attempts: 2,
        ..Default::default()
    };
    let w = RecordWriter::open_with(&path, cfg).unwrap();
    let sink = w.sink();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.busy_timeout(Duration::from_secs(10)).unwrap(); // the writer's retries take the lock briefly
    other.execute_batch("ALTER TABLE calls RENAME TO calls_away").unwrap();
    for i in 0..5 {
        sink.submit(rec(i));
    }
    match w.close() {
        Err(RecordsError::Lost { lost, path: p, .. }) => {
            assert_eq!(lost, 5);
            assert_eq!(p, path);
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    let s = sink.stats();
    assert_eq!((s.submitted, s.written, s.lost, s.queued()), (5, 0, 5, 0));
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<RecordSink>();
    send::<RecordWriter>();
    send_sync::<RecordsError>();
}

#[test]
fn the_profile_value_chooses_the_backend() {
    for pg in [
        "postgres://callgate@127.0.0.1:5432/callgate",
        "postgresql://callgate:pw@db1/callgate?application_name=x",
        "host=/var/run/postgresql dbname=callgate",
        "dbname=callgate",
        "  host = db1 port=5433 user=callgate dbname=callgate",
    ] {
        assert!(Database::is_postgres(pg), "{pg}");
        assert!(Database::parse(pg).unwrap().is_postgres_db(), "{pg}");
    }
    for file in ["var/callgate.db", "/srv/a=b.db", "postgres.db", "hosts=x", "./host=x", "C:\\records.db", ""] {
        assert!(!Database::is_postgres(file), "{file}");
        assert_eq!(Database::parse(file).unwrap(), Database::Sqlite(PathBuf::from(file)));
        assert_eq!(Database::from_path(Path::new(file)).unwrap(), Database::Sqlite(PathBuf::from(file)));
    }
}

#[test]
fn postgresql_defaults_and_labels_never_show_the_password() {
    let db = Database::parse("postgres://callgate:s3cret@db1.example:5433/records").unwrap();
    assert_eq!(db.to_string(), "postgresql host=db1.example port=5433 user=callgate dbname=records");
    assert!(!format!("{db:?}").contains("s3cret"));
    assert_eq!(db.label(), PathBuf::from("postgresql host=db1.example port=5433 user=callgate dbname=records"));
    let Database::Postgres(t) = &db else { unreachable!() };
    assert_eq!(t.config().get_connect_timeout(), Some(&Duration::from_secs(10)));
    assert_eq!(t.config().get_application_name(), Some("callgate"));
    // No host: Debian's socket directory, as libpq would.
    let Database::Postgres(t) = Database::parse("dbname=records password='a b'").unwrap() else { unreachable!() };
    assert_eq!(t.config().get_hosts(), [postgres::config::Host::Unix(PG_DEFAULT_SOCKET_DIR.into())]);
    assert_eq!(t.config().get_password(), Some(&b"a b"[..]));
    assert_eq!(t.label(), "postgresql host=/var/run/postgresql dbname=records");
    // Given values win over callgate's defaults.
    let Database::Postgres(t) = Database::parse("host=h connect_timeout=3 application_name=cg2").unwrap() else { unreachable!() };
    assert_eq!(t.config().get_connect_timeout(), Some(&Duration::from_secs(3)));
    assert_eq!(t.config().get_application_name(), Some("cg2"));
}

#[test]
fn malformed_connection_strings_are_refused_with_the_password_cut_out() {
    for (bad, secret) in [
        ("postgres://callgate:s3cret@db1:notaport/records", "s3cret"),
        ("host=db1 port=x password=s3cret", "s3cret"),
        ("host=db1 password = 's3 \\'cret' sslmode=bogus", "cret"),
        ("postgresql://u@db1/records?password=s3cret&sslmode=bogus", "s3cret"),
    ] {
        let e = Database::parse(bad).unwrap_err();
        assert!(matches!(e, RecordsError::BadConninfo { .. }), "{bad}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("expected a PostgreSQL connection string") && !msg.contains(secret), "{msg}");
    }
    assert_eq!(redact("postgres://u:pw@h:1/d"), "postgres://u:***@h:1/d");
    assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
}
