//! Statistics query cost with a year of records (issue 6: "any interval report for a day < 100 ms").
//!
//! Setup writes a synthetic year into a SQLite file through the record writer: 1,000 calls a day for
//! 365 days, tenant "demo", queues general/en/tax, 40 agents; per answered call enter, offer, connect,
//! complete, disposition, wrap-up end and four agent-state rows (~3.4 million queue log rows and 365,000
//! call records). The file is kept in the temp dir and reused by later runs (delete it to regenerate).
//!
//! Benches: the whole path of a day report (open the database, read the day's rows and the following
//! 7 days' contacts, feed the statistics, 30-minute report, JSON), and the report alone from memory.
//!
//! `cargo bench --bench stats`

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use callgate::acd::log::{QueueEvent, QueueEventKind as K};
use callgate::records::{CallRecord, Outcome, RecordWriter, RecordsReader, WriterConfig};
use callgate::stats::{Date, IntervalLen, Stats, StatsConfig, DAY_MS};

fn main() {
    divan::main();
}

const DAYS: i64 = 365;
const CALLS_PER_DAY: i64 = 1000;
const AGENTS: u64 = 40;
/// 2024-01-01T00:00+09:00
fn first_day() -> Date {
    Date::parse("2024-01-01").unwrap()
}
/// The reported day: mid-year, with 7 days of contacts after it.
fn report_day() -> Date {
    Date::parse("2024-07-01").unwrap()
}

/// xorshift64*: deterministic synthetic data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn db() -> &'static PathBuf {
    static DB: OnceLock<PathBuf> = OnceLock::new();
    DB.get_or_init(|| {
        let path = std::env::temp_dir().join("callgate-bench-stats-year-v2.sqlite");
        let expected = DAYS * CALLS_PER_DAY;
        let complete = path.exists()
            && rusqlite::Connection::open(&path)
                .and_then(|c| c.query_row("SELECT count(*) FROM calls", [], |r| r.get::<_, i64>(0)))
                .is_ok_and(|n| n == expected);
        if !complete {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("sqlite-wal"));
            let _ = std::fs::remove_file(path.with_extension("sqlite-shm"));
            let started = Instant::now();
            generate(&path);
            eprintln!("generated a year of records in {:?}: {}", started.elapsed(), path.display());
        }
        path
    })
}

fn generate(path: &Path) {
    let w = RecordWriter::open_with(path, WriterConfig { batch_max: 8192, ..Default::default() }).unwrap();
    let sink = w.sink();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let queues = ["general", "general", "general", "en", "tax"];
    let subjects = ["traffic", "passports", "tax", "welfare", "environment", "water", "events"];
    let mut agent_free = vec![0i64; AGENTS as usize];
    for d in 0..DAYS {
        let start = Date::from_days(first_day().days() + d).start_ms(540);
        // Calls between 08:00 and 19:00 local, in time order.
        let mut arrivals: Vec<i64> =
            (0..CALLS_PER_DAY).map(|_| start + 8 * 3_600_000 + rng.below(11 * 3_600_000) as i64).collect();
        arrivals.sort_unstable();
        let mut events: Vec<QueueEvent> = Vec::with_capacity(CALLS_PER_DAY as usize * 10);
        for (i, &at) in arrivals.iter().enumerate() {
            let call = format!("cg-{d:03}-{i:04}");
            let caller = format!("010{:08}", rng.below(200_000));
            let queue = queues[rng.below(queues.len() as u64) as usize];
            let e = |at_ms: i64, agent: &str, kind: K| QueueEvent {
                at_ms,
                tenant: "demo".into(),
                queue: if matches!(kind, K::AgentState { .. }) { String::new() } else { queue.into() },
                call: if matches!(kind, K::AgentState { .. }) { String::new() } else { call.clone() },
                agent: agent.into(),
                kind,
            };
            events.push(e(at, "", K::Enter { caller: caller.clone(), priority: 0, position: 1, skill: String::new() }));
            let wait = rng.below(60_000) as i64;
            let outcome = if rng.below(10) == 0 {
                events.push(e(at + wait, "", K::Abandon { wait_ms: wait as u64, position: 1 }));
                Outcome::Abandoned
            } else {
                let a = rng.below(AGENTS) as usize;
                let agent = format!("{}", 1001 + a);
                let connect = (at + wait).max(agent_free[a] + 3000);
                let talk = 60_000 + rng.below(300_000) as i64;
                let wrap = 5_000 + rng.below(30_000) as i64;
                let wait = (connect - at) as u64;
                events.push(e(connect - 3000, &agent, K::AgentState { state: "reserved".into(), reason: String::new() }));
                events.push(e(connect - 3000, &agent, K::Offer { wait_ms: wait - 3000 }));
                events.push(e(connect, &agent, K::Connect { wait_ms: wait, ring_ms: 3000 }));
                events.push(e(connect, &agent, K::AgentState { state: "talking".into(), reason: String::new() }));
                events.push(e(connect + talk, &agent, K::Complete { talk_ms: talk as u64, hold_ms: 0, by: "caller".into() }));
                events.push(e(connect + talk, &agent, K::AgentState { state: "wrapup".into(), reason: String::new() }));
                events.push(e(
                    connect + talk + 2000,
                    &agent,
                    K::Disposition {
                        subject: subjects[rng.below(subjects.len() as u64) as usize].into(),
                        settled: rng.below(10) < 8,
                        flag: String::new(),
                    },
                ));
                events.push(e(connect + talk + wrap, &agent, K::WrapupEnd { wrap_ms: wrap as u64 }));
                events.push(e(connect + talk + wrap, &agent, K::AgentState { state: "ready".into(), reason: String::new() }));
                agent_free[a] = connect + talk + wrap;
                Outcome::Completed
            };
            sink.submit(CallRecord {
                call_id: call.clone(),
                sip_call_id: format!("{call}@carrier"),
                tenant: Some("demo".into()),
                caller,
                number: "120".into(),
                arrived_ms: at - 13_000,
                ended_ms: at + wait + 200_000,
                outcome,
                sip_status: 200,
                ..Default::default()
            });
        }
        events.sort_by_key(|e| e.at_ms);
        for e in events {
            sink.submit_queue(e);
        }
        // Bound the channel's memory while generating.
        w.flush(std::time::Duration::from_secs(600)).unwrap();
    }
    w.close().unwrap();
}

fn config() -> StatsConfig {
    StatsConfig::default()
}

/// Database → statistics → 30-minute report → JSON, for one day out of the year.
#[divan::bench(sample_count = 20)]
fn day_report_from_a_year_of_records(bencher: divan::Bencher) {
    let path = db();
    bencher.bench(|| {
        let reader = RecordsReader::open(path).unwrap();
        let mut stats = Stats::new(config());
        reader.load_day(&mut stats, "demo", report_day()).unwrap();
        let report = stats.report("demo", report_day(), IntervalLen::M30);
        divan::black_box(report.to_json())
    });
}

/// The report alone, from statistics already in memory (the HTTP handler's cost when live).
#[divan::bench(args = [15, 30, 60])]
fn report_from_memory(bencher: divan::Bencher, minutes: u32) {
    let path = db();
    let reader = RecordsReader::open(path).unwrap();
    let mut stats = Stats::new(config());
    reader.load_day(&mut stats, "demo", report_day()).unwrap();
    stats.observe(report_day().start_ms(540) + 30 * DAY_MS);
    let len = IntervalLen::from_minutes(minutes).unwrap();
    bencher.bench(|| divan::black_box(stats.report("demo", report_day(), len).to_csv()));
}
