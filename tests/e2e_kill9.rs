//! kill -9 under load, then restart on the same database: every call that ended before the kill has
//! exactly one record, and nothing is written twice.
//!
//! Two SIPp callers load a guidance-only service whose prompt is short (0.4 s): one lets callgate
//! play it and hang up (callgate's BYE), the other hangs up itself during it (the caller's BYE). In
//! the middle of the load callgate gets SIGKILL. From SIPp's message traces the test knows, per
//! Call-ID, when the call ended for SIPp (the BYE from callgate arrived, the 200 to the caller's BYE
//! arrived, or a final error answer to the INVITE arrived) and compares with the records the
//! restarted callgate finds in the database.
//!
//! What is guaranteed, and asserted: every call that ended before the kill has exactly one record.
//! The writer thread commits in batches (it lingers 50 ms, src/records/writer.rs), so the sip task
//! first appends each record to the redo log (src/edge/redo.rs) before the datagrams that end the
//! call leave; the restarted callgate replays it. The test also reports the calls that ended in the
//! last moments before the kill (stderr, and `kill9_report.txt` in the test directory). No
//! sip_call_id may ever have two records.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// A guidance-only service with a short prompt.
const SHORT: &str = "129";
/// audio/num-en-1.wav: 0.4 s.
const SHORT_PROMPT: &str = "num-en-1";
/// Calls per second of each caller, and calls each.
const RATE_ANNOUNCE: u32 = 40;
const RATE_HANGUP: u32 = 20;
const CALLS_ANNOUNCE: u32 = 200;
const CALLS_HANGUP: u32 = 100;
/// The caller's own hang-up, during the prompt.
const HANGUP_AFTER_MS: u32 = 200;
/// When callgate is killed, after the load started.
const KILL_AFTER: Duration = Duration::from_millis(2_500);
/// Calls that ended at least this long before the kill must have their record: all of them (the
/// redo log is written before a call's end is sent).
const GUARANTEED_AFTER: Duration = Duration::from_millis(0);

// ---------------------------------------------------------------------------------------------
// What each call's end looked like in SIPp's traces (common::trace)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// callgate's BYE arrived (callgate had written the record's row into its writer's channel
    /// just before sending it).
    CallgateBye,
    /// The 200 to the caller's BYE arrived.
    CallerBye,
    /// A final error response to the INVITE arrived (e.g. 503 when overloaded).
    Refused(u16),
}

#[derive(Debug, Clone)]
struct Ended {
    call_id: String,
    at_us: i64,
    how: Ending,
}

/// Every call of a run that SIPp saw end, with when and how; and every Call-ID SIPp sent.
fn endings(run: &SippRun) -> (Vec<Ended>, Vec<String>) {
    let mut ended: BTreeMap<String, Ended> = BTreeMap::new();
    let mut all: BTreeMap<String, ()> = BTreeMap::new();
    for m in trace(run) {
        if m.call_id.is_empty() {
            continue;
        }
        if m.sent {
            all.insert(m.call_id.clone(), ());
            continue;
        }
        let code: Option<u16> = m.start_line.strip_prefix("SIP/2.0 ").and_then(|r| r.split_whitespace().next()).and_then(|c| c.parse().ok());
        let how = match (code, m.cseq_method.as_str()) {
            (None, "BYE") if m.start_line.starts_with("BYE ") => Ending::CallgateBye,
            (Some(200), "BYE") => Ending::CallerBye,
            (Some(c), "INVITE") if c >= 300 => Ending::Refused(c),
            _ => continue,
        };
        ended.entry(m.call_id.clone()).or_insert(Ended { call_id: m.call_id.clone(), at_us: m.at_us, how });
    }
    (ended.into_values().collect(), all.into_keys().collect())
}

fn unix_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

fn profile() -> ProfileBuilder {
    let mut p = ProfileBuilder::default_profile().add_service(SHORT, "Short announcement", None);
    let tenant = p.tenants.values_mut().next().unwrap();
    for s in tenant.get_mut("service").and_then(|v| v.as_array_mut()).unwrap() {
        let s = s.as_table_mut().unwrap();
        if s.get("number").and_then(|n| n.as_str()) == Some(SHORT) {
            s.insert("guidance".into(), toml::Value::Array(vec![toml::Value::String(SHORT_PROMPT.into())]));
        }
    }
    p
}

fn announce_load(dir: &std::path::Path, ports: &PortBlock, cg: &Callgate, name: &str, calls: u32, rate: u32) -> SippChild {
    Sipp::uac(dir, name, "uac_short_announcement.xml", cg.sip, SHORT)
        .ports(ports, P_UAC, P_UAC_CTRL, P_UAC_MEDIA)
        .arg("-r")
        .arg(&rate.to_string())
        .arg("-l")
        .arg("100")
        .calls(calls)
        .timeout_s(12)
        .spawn()
}

#[test]
fn kill_9_under_load_loses_no_ended_call_and_writes_none_twice() {
    let dir = test_dir("kill9");
    let ports = PortBlock::acquire();
    let p = profile().write(&dir, &ports);
    let prompt = repo().join(format!("audio/{SHORT_PROMPT}.wav"));
    assert!(wav_frames(&prompt) * 20 < 1_000, "{} should be a short prompt", prompt.display());
    let cg = Callgate::start(&dir, &ports, &p);

    let announce = announce_load(&dir, &ports, &cg, "announce", CALLS_ANNOUNCE, RATE_ANNOUNCE);
    let hangup = Sipp::uac(&dir, "hangup", "uac_patience.xml", cg.sip, SHORT)
        .ports(&ports, P_UAC2, P_UAC2_CTRL, P_UAC2_MEDIA)
        .arg("-d")
        .arg(&HANGUP_AFTER_MS.to_string())
        .arg("-r")
        .arg(&RATE_HANGUP.to_string())
        .arg("-l")
        .arg("100")
        .calls(CALLS_HANGUP)
        .timeout_s(12)
        .spawn();
    std::thread::sleep(KILL_AFTER);
    let pid = cg.pid();
    let kill_us = unix_us();
    // SAFETY: signalling our own child by its pid.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(r, 0, "kill -9 {pid}");
    let killed = cg.wait_exit(Instant::now());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(killed.status.signal(), Some(libc::SIGKILL), "callgate died of the kill");
    let runs = [announce.wait(), hangup.wait()];

    // What SIPp saw end before the kill.
    let mut ended: Vec<Ended> = Vec::new();
    let mut sent_ids: Vec<String> = Vec::new();
    for run in &runs {
        let (e, all) = endings(run);
        assert!(!all.is_empty(), "SIPp `{}` sent nothing\n{}", run.name, run.explain());
        ended.extend(e);
        sent_ids.extend(all);
    }
    let before: Vec<&Ended> = ended.iter().filter(|e| e.at_us < kill_us).collect();
    let by_how = |h: fn(&Ending) -> bool| before.iter().filter(|e| h(&e.how)).count();
    let (n_cg_bye, n_caller_bye, n_refused) =
        (by_how(|h| *h == Ending::CallgateBye), by_how(|h| *h == Ending::CallerBye), by_how(|h| matches!(h, Ending::Refused(_))));
    assert!(
        n_cg_bye >= 20 && n_caller_bye >= 10,
        "too few calls ended before the kill for a load test: {n_cg_bye} by callgate's BYE, {n_caller_bye} by the caller's\n{}\n{}",
        runs[0].explain(),
        runs[1].explain()
    );

    // Restart on the same database: it opens, recovers the WAL and migrates cleanly.
    let cg = Callgate::start(&dir, &ports, &p);
    assert_eq!(
        callgate::records::schema_version(&cg.db).expect("schema version after the restart"),
        callgate::records::SCHEMA_VERSION,
        "the database is at the current schema version"
    );
    {
        let conn = rusqlite::Connection::open_with_flags(&cg.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok", "integrity_check after kill -9");
    }
    let recs = cg.records();
    let mut per_call: BTreeMap<String, usize> = BTreeMap::new();
    for r in &recs {
        *per_call.entry(r.text("sip_call_id")).or_default() += 1;
    }
    let twice: Vec<(&String, &usize)> = per_call.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "calls with more than one record: {twice:?}");
    let strangers: Vec<&String> = per_call.keys().filter(|id| !sent_ids.contains(id)).collect();
    assert!(strangers.is_empty(), "records of calls SIPp never made: {strangers:?}");

    // The calls that ended before the kill and have no record, by how long before the kill.
    let mut missing: Vec<(i64, &Ended)> =
        before.iter().filter(|e| !per_call.contains_key(&e.call_id)).map(|e| ((kill_us - e.at_us) / 1000, *e)).collect();
    missing.sort_by_key(|(ms, _)| *ms);
    let mut report = String::new();
    let _ = writeln!(
        report,
        "kill -9 at +{} ms of load: {} calls ended before it ({n_cg_bye} by callgate's BYE, {n_caller_bye} by the caller's BYE, {n_refused} refused); {} records after the restart; {} ended calls without a record",
        KILL_AFTER.as_millis(),
        before.len(),
        recs.len(),
        missing.len()
    );
    for (ms, e) in &missing {
        let _ = writeln!(report, "  no record: {} ({:?}), ended {ms} ms before the kill", e.call_id, e.how);
    }
    let lost_window = before.iter().filter(|e| kill_us - e.at_us < GUARANTEED_AFTER.as_micros() as i64).count();
    let _ = writeln!(report, "calls that ended within {GUARANTEED_AFTER:?} of the kill: {lost_window}");
    let _ = std::fs::write(dir.join("kill9_report.txt"), &report);
    eprintln!("{report}");
    let guaranteed_lost: Vec<&(i64, &Ended)> = missing.iter().filter(|(ms, _)| *ms >= GUARANTEED_AFTER.as_millis() as i64).collect();
    assert!(
        guaranteed_lost.is_empty(),
        "calls that ended at least {GUARANTEED_AFTER:?} before the kill have no record:\n{report}\n--- stderr before the kill:\n{}",
        killed.stderr
    );

    // The restarted callgate keeps writing, once per call.
    let after = announce_load(&dir, &ports, &cg, "after", 5, 10).wait();
    after.assert_ok(Some(&cg));
    let (after_ended, _) = endings(&after);
    let recs = cg.wait_records(recs.len() + after_ended.len());
    for e in &after_ended {
        let n = recs.iter().filter(|r| r.text("sip_call_id") == e.call_id).count();
        assert_eq!(n, 1, "records of {} after the restart", e.call_id);
    }
    let stopped = cg.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}
