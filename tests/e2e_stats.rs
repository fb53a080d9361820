//! End to end, the statistics: SIPp citizens with different patience and two baresip counsellors,
//! and the figures callgate reports (`GET /stats/live`, `GET /stats/report` as JSON and CSV, the
//! call records and the queue log) against what SIPp's own traces say happened.
//!
//! The day is built so that every caller's fate is certain by construction and checked from SIPp's
//! traces (message times per Call-ID, the statistics CSV):
//! - (a) 5 callers dial 121, whose guidance is 13 s long, and hang up after 2 s: lost in the
//!   announcement, before any queue. Not offered; the tenant's `abandoned_before_queue`.
//! - (c) 4 callers dial 120 (no guidance: straight into the queue `general`), two at a time (SIPp
//!   `-l 2`), and stay 12 s on the line: the first two reach the two idle agents at once, the next two
//!   wait about a wrap-up (1 s) for an agent. All answered, all within 20 s.
//! - (b) 4 callers dial 120 once both agents talk (the queue log shows two `connect`s) and hang up
//!   after 2 s (2 callers: short abandons, under the 5 s threshold) or 7 s (2 callers): both agents
//!   stay busy for 12 s, so they all abandon in the queue. SIPp's trace must show every (b) hang-up
//!   between the start and the end of the first two (c) calls, and the next (c) calls starting after
//!   the last (b) caller left; otherwise the machine was too slow for the construction and the test
//!   says so.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::baresip::{Baresip, BaresipConfig};
use common::*;
use serde_json::Value;

/// The demo tenant's UTC offset (tenants/demo.toml: "+09:00"), for "today".
const TENANT_OFFSET_MS: i64 = 9 * 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// The queue's thresholds (defaults of the demo profile's queue `general`).
const SL_MS: i64 = 20_000;
const SHORT_ABANDON_MS: i64 = 5_000;
/// The number of the guidance-then-queue service the (a) callers dial.
const GUIDED: &str = "121";

const N_A: u32 = 5;
const N_B_SHORT: u32 = 2;
const N_B_LONG: u32 = 2;
const N_C: u32 = 4;
const PATIENCE_A_MS: u32 = 2_000;
const PATIENCE_B_SHORT_MS: u32 = 2_000;
const PATIENCE_B_LONG_MS: u32 = 7_000;
const TALK_C_MS: u32 = 12_000;
/// Second SIPp caller pair of ports (the harness names three; the block has room).
const P_UAC3: u16 = 8;
const P_UAC3_CTRL: u16 = 9;
const P_UAC3_MEDIA: u16 = 50;

// ---------------------------------------------------------------------------------------------
// SIPp's traces

/// One message of SIPp's -trace_msg file.
/// One call as SIPp saw it (times in Unix µs).
#[derive(Debug, Clone, Default)]
struct SippCall {
    call_id: String,
    invite_us: i64,
    /// The 200 to the INVITE arrived.
    answered_us: Option<i64>,
    /// Our BYE went out (the caller hung up).
    bye_us: Option<i64>,
    /// The 200 to our BYE arrived: the call is over for both sides.
    ended_us: Option<i64>,
}

impl SippCall {
    /// How long the caller stayed after callgate answered, until it hung up (ms).
    fn on_line_ms(&self) -> i64 {
        (self.bye_us.expect("hung up") - self.answered_us.expect("answered")) / 1000
    }
}

fn calls_of(run: &SippRun) -> Vec<SippCall> {
    let mut by_id: BTreeMap<String, SippCall> = BTreeMap::new();
    for m in trace(run) {
        if m.call_id.is_empty() {
            continue;
        }
        let c = by_id.entry(m.call_id.clone()).or_insert_with(|| SippCall { call_id: m.call_id.clone(), ..Default::default() });
        let is_response = m.start_line.starts_with("SIP/2.0 ");
        match (m.sent, is_response, m.cseq_method.as_str()) {
            (true, false, "INVITE") if c.invite_us == 0 => c.invite_us = m.at_us,
            (false, true, "INVITE") if m.start_line.starts_with("SIP/2.0 200") && c.answered_us.is_none() => {
                c.answered_us = Some(m.at_us)
            }
            (true, false, "BYE") if c.bye_us.is_none() => c.bye_us = Some(m.at_us),
            (false, true, "BYE") if m.start_line.starts_with("SIP/2.0 200") && c.ended_us.is_none() => c.ended_us = Some(m.at_us),
            _ => {}
        }
    }
    by_id.into_values().collect()
}

/// `column` of the last line of SIPp's statistics CSV (-trace_stat).
fn stat(run: &SippRun, column: &str) -> u64 {
    let mut lines = run.stat.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_else(|| panic!("empty stat CSV\n{}", run.explain())).split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap_or_else(|| panic!("no data line in the stat CSV\n{}", run.explain())).split(';').collect();
    let i = header.iter().position(|h| *h == column).unwrap_or_else(|| panic!("no column {column} in {header:?}"));
    last[i].trim().parse().unwrap_or_else(|_| panic!("{column}: {:?}", last[i]))
}

/// What SIPp says of one group: every call created succeeded, and the calls' traces.
fn group(run: &SippRun, cg: &Callgate, expected: u32) -> Vec<SippCall> {
    run.assert_ok(Some(cg));
    let (created, ok, failed) = (stat(run, "TotalCallCreated"), stat(run, "SuccessfulCall(C)"), stat(run, "FailedCall(C)"));
    assert_eq!((created, ok, failed), (u64::from(expected), u64::from(expected), 0), "SIPp `{}`: created, successful, failed", run.name);
    let calls = calls_of(run);
    assert_eq!(calls.len(), expected as usize, "Call-IDs in `{}`'s trace: {calls:#?}", run.name);
    for c in &calls {
        assert!(c.answered_us.is_some() && c.bye_us.is_some() && c.ended_us.is_some(), "`{}`: {c:?}", run.name);
    }
    calls
}

// ---------------------------------------------------------------------------------------------
// callgate's side

fn agent_ports(ports: &PortBlock, i: u16) -> (u16, u16, (u16, u16)) {
    let b = 60 + 10 * i;
    (ports.port(b), ports.port(b + 5), (ports.port(b + 6), ports.port(b + 9)))
}

/// The demo profile: 120 goes straight into the queue (no guidance), 121 plays the 13 s Korean
/// guidance first; wrap-up 1 s.
fn profile() -> ProfileBuilder {
    let mut p = ProfileBuilder::default_profile().trunk_codecs(&["PCMU", "PCMA"]).add_service(GUIDED, "Guidance, then the queue", None);
    let tenant = p.tenants.values_mut().next().unwrap();
    for s in tenant.get_mut("service").and_then(|v| v.as_array_mut()).unwrap() {
        let s = s.as_table_mut().unwrap();
        let guided = s.get("number").and_then(|n| n.as_str()) == Some(GUIDED);
        let guidance = if guided { vec![toml::Value::String("guidance-ko".into())] } else { vec![] };
        s.insert("guidance".into(), toml::Value::Array(guidance));
        if guided {
            s.insert("queue".into(), "general".into());
        }
    }
    for q in tenant.get_mut("queue").and_then(|v| v.as_array_mut()).unwrap() {
        q.as_table_mut().unwrap().insert("wrapup".into(), 1i64.into());
    }
    p
}

fn agent(dir: &Path, ports: &PortBlock, cg: &Callgate, i: u16, ext: &str, hz: f64) -> Baresip {
    let cfg = BaresipConfig::agent(dir.join(format!("agent-{ext}")), ext, &format!("demo{ext}"), cg.sip, agent_ports(ports, i), hz);
    let b = Baresip::start(cfg);
    b.wait_registered(Duration::from_secs(10));
    b
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// "Today" is the tenant's local day: a day that ends during the test would split the figures.
fn avoid_local_midnight() {
    let into_day = (now_ms() + TENANT_OFFSET_MS).rem_euclid(DAY_MS);
    let left = DAY_MS - into_day;
    if left < 120_000 {
        eprintln!("waiting {left} ms for the tenant's local midnight to pass");
        std::thread::sleep(Duration::from_millis(left as u64 + 2_000));
    }
}

fn live(cg: &Callgate) -> Value {
    let (st, body) = cg.http_get("/stats/live");
    assert_eq!(st, 200, "GET /stats/live: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/stats/live is not JSON ({e}): {body}"))
}

fn live_queue<'a>(v: &'a Value, queue: &str) -> &'a Value {
    v["tenants"]["demo"]["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue"] == queue))
        .unwrap_or_else(|| panic!("no queue {queue} in /stats/live: {v:#}"))
}

/// Queue log events of `kind` so far.
fn queue_events(cg: &Callgate, kind: &str) -> usize {
    if !cg.db.exists() {
        return 0;
    }
    callgate::records::read_queue_log(&cg.db, 0..i64::MAX).map(|v| v.iter().filter(|e| e.kind.name() == kind).count()).unwrap_or(0)
}

fn wait_for(what: &str, within: Duration, cg: &Callgate, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < within, "timed out after {within:?} waiting for {what}\n--- callgate stderr:\n{}", cg.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} is not a count in {v:#}"))
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

/// The figures the test expects (from SIPp's traces), per queue or tenant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Expected {
    offered: u64,
    answered: u64,
    answered_in_sl: u64,
    abandoned: u64,
    short_abandoned: u64,
}

impl Expected {
    fn service_level(&self) -> f64 {
        self.answered_in_sl as f64 / self.offered as f64
    }
    fn abandonment(&self) -> f64 {
        self.abandoned as f64 / self.offered as f64
    }
    fn of(f: &Value) -> Expected {
        Expected {
            offered: num(f, "offered"),
            answered: num(f, "answered"),
            answered_in_sl: num(f, "answered_in_sl"),
            abandoned: num(f, "abandoned"),
            short_abandoned: num(f, "short_abandoned"),
        }
    }
}

/// Checks one `Figures` object (live `today`, or a day's sum) against the expectation.
fn check_figures(where_: &str, f: &Value, want: &Expected, ctx: &str) {
    assert_eq!(Expected::of(f), *want, "{where_}: offered/answered/in SL/abandoned/short abandoned\n{f:#}\n{ctx}");
    let sl = f["service_level"].as_f64();
    assert!(close(sl, want.service_level()), "{where_}: service_level {sl:?}, SIPp says {}/{} = {}\n{ctx}", want.answered_in_sl, want.offered, want.service_level());
    let ks = f["ks_service_level_20s"].as_f64();
    assert!(close(ks, want.service_level()), "{where_}: ks_service_level_20s {ks:?}, expected {}\n{ctx}", want.service_level());
    let ab = f["ks_abandonment"].as_f64();
    assert!(close(ab, want.abandonment()), "{where_}: ks_abandonment {ab:?}, SIPp says {}/{} = {}\n{ctx}", want.abandoned, want.offered, want.abandonment());
    let ar = f["answer_rate"].as_f64();
    assert!(close(ar, want.answered as f64 / want.offered as f64), "{where_}: answer_rate {ar:?}\n{ctx}");
    assert_eq!(num(f, "handled"), want.answered, "{where_}: handled (one `complete` per answered call)\n{ctx}");
}

#[test]
fn figures_callgate_reports_equal_what_sipp_counted() {
    let dir = test_dir("stats-e2e");
    let ports = PortBlock::acquire();
    avoid_local_midnight();
    let cg = Callgate::start_with(&dir, &ports, profile());
    let a1 = agent(&dir, &ports, &cg, 0, "1001", 1000.0);
    let a2 = agent(&dir, &ports, &cg, 1, "1002", 1500.0);
    wait_for("both agents ready on /stats/live", Duration::from_secs(10), &cg, || {
        live(&cg)["tenants"]["demo"]["agents"]["ready"].as_u64() == Some(2)
    });
    let guidance_ms = wav_frames(&repo().join("audio/guidance-ko.wav")) as i64 * 20;

    // (a) lost in the announcement, and (c) answered: started together.
    let a_run = Sipp::uac(&dir, "a_announcement", "uac_patience.xml", cg.sip, GUIDED)
        .ports(&ports, P_UAC, P_UAC_CTRL, P_UAC_MEDIA)
        .arg("-d")
        .arg(&PATIENCE_A_MS.to_string())
        .arg("-r")
        .arg("2")
        .calls(N_A)
        .timeout_s(30)
        .spawn();
    let c_run = Sipp::uac(&dir, "c_answered", "uac_patience.xml", cg.sip, "120")
        .ports(&ports, P_UAS, P_UAS_CTRL, P_UAS_MEDIA)
        .arg("-d")
        .arg(&TALK_C_MS.to_string())
        .arg("-l")
        .arg("2")
        .arg("-r")
        .arg("10")
        .calls(N_C)
        .timeout_s(50)
        .spawn();
    // (b) once both agents talk.
    wait_for("two callers connected to agents (queue log `connect`)", Duration::from_secs(10), &cg, || queue_events(&cg, "connect") >= 2);
    let b_short = Sipp::uac(&dir, "b_short", "uac_patience.xml", cg.sip, "120")
        .ports(&ports, P_UAC2, P_UAC2_CTRL, P_UAC2_MEDIA)
        .arg("-d")
        .arg(&PATIENCE_B_SHORT_MS.to_string())
        .arg("-r")
        .arg("10")
        .calls(N_B_SHORT)
        .timeout_s(30)
        .spawn();
    let b_long = Sipp::uac(&dir, "b_long", "uac_patience.xml", cg.sip, "120")
        .ports(&ports, P_UAC3, P_UAC3_CTRL, P_UAC3_MEDIA)
        .arg("-d")
        .arg(&PATIENCE_B_LONG_MS.to_string())
        .arg("-r")
        .arg("10")
        .calls(N_B_LONG)
        .timeout_s(30)
        .spawn();
    let (a_run, b_short, b_long, c_run) = (a_run.wait(), b_short.wait(), b_long.wait(), c_run.wait());

    // ---- What SIPp counted --------------------------------------------------------------------
    let a_calls = group(&a_run, &cg, N_A);
    let bs_calls = group(&b_short, &cg, N_B_SHORT);
    let bl_calls = group(&b_long, &cg, N_B_LONG);
    let mut c_calls = group(&c_run, &cg, N_C);
    c_calls.sort_by_key(|c| c.invite_us);
    let b_calls: Vec<SippCall> = bs_calls.iter().chain(&bl_calls).cloned().collect();
    let timeline = {
        let t0 = c_calls[0].invite_us;
        let show = |name: &str, cs: &[SippCall]| {
            cs.iter()
                .map(|c| {
                    format!(
                        "{name} {}: invite {:+} ms, answered {:+}, bye {:+}\n",
                        c.call_id,
                        (c.invite_us - t0) / 1000,
                        (c.answered_us.unwrap() - t0) / 1000,
                        (c.bye_us.unwrap() - t0) / 1000
                    )
                })
                .collect::<String>()
        };
        format!("{}{}{}", show("a", &a_calls), show("b", &b_calls), show("c", &c_calls))
    };
    // (a): every caller hung up before the guidance could end: nobody of them reached a queue.
    for c in &a_calls {
        assert!(c.on_line_ms() < guidance_ms - 2_000, "an (a) caller stayed {} ms; the guidance is {guidance_ms} ms\n{timeline}", c.on_line_ms());
    }
    // The construction held: the (b) callers came after the first two (c) calls were answered and
    // left before either ended (so both agents were busy the whole time); the later (c) calls came
    // after the last (b) caller had left (so nobody was ahead of them).
    let first_two_answered = c_calls[..2].iter().map(|c| c.answered_us.unwrap()).max().unwrap();
    let first_two_end = c_calls[..2].iter().map(|c| c.bye_us.unwrap()).min().unwrap();
    let b_first = b_calls.iter().map(|c| c.invite_us).min().unwrap();
    let b_last = b_calls.iter().map(|c| c.bye_us.unwrap()).max().unwrap();
    assert!(
        first_two_answered < b_first && b_last + 500_000 < first_two_end && c_calls[2..].iter().all(|c| c.invite_us > b_last),
        "the machine was too slow for the test's construction (timeline from SIPp's traces, ms from the first (c) INVITE):\n{timeline}"
    );
    // Each (c) caller's time on the line bounds its wait: all answered within the SL threshold.
    let c_in_sl = c_calls.iter().filter(|c| c.on_line_ms() <= SL_MS).count() as u64;
    // Short abandons by the caller's patience as SIPp kept it (clear of the threshold either way).
    for c in &b_calls {
        assert!((c.on_line_ms() - SHORT_ABANDON_MS).abs() > 1_000, "a (b) caller's wait {} ms is too close to the short-abandon threshold", c.on_line_ms());
    }
    let b_short_n = b_calls.iter().filter(|c| c.on_line_ms() < SHORT_ABANDON_MS).count() as u64;
    let want = Expected {
        offered: (b_calls.len() + c_calls.len()) as u64,
        answered: c_calls.len() as u64,
        answered_in_sl: c_in_sl,
        abandoned: b_calls.len() as u64,
        short_abandoned: b_short_n,
    };
    let lost_in_announcement = a_calls.len() as u64;
    eprintln!("SIPp counted: {want:?}, lost in the announcement {lost_in_announcement}\n{timeline}");

    // ---- The records --------------------------------------------------------------------------
    let total = a_calls.len() + b_calls.len() + c_calls.len();
    let recs = cg.wait_records(total);
    let ctx = format!("{timeline}--- callgate stderr (tail):\n{}", {
        let e = cg.stderr();
        e.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    });
    assert_eq!(recs.len(), total, "one record per call SIPp made: {recs:#?}");
    let by_sip: BTreeMap<String, &Record> = recs.iter().map(|r| (r.text("sip_call_id"), r)).collect();
    assert_eq!(by_sip.len(), total, "sip_call_ids are unique");
    let events = callgate::records::read_queue_log(&cg.db, 0..i64::MAX).expect("queue log");
    let kinds_of = |cg_id: &str| -> Vec<&'static str> { events.iter().filter(|e| e.call == cg_id).map(|e| e.kind.name()).collect() };
    let rec = |c: &SippCall| -> &Record { by_sip.get(&c.call_id).unwrap_or_else(|| panic!("no record with sip_call_id {}\n{ctx}", c.call_id)) };
    for c in &a_calls {
        let r = rec(c);
        assert_eq!((r.text("outcome"), r.text("number")), ("abandoned".into(), GUIDED.into()), "{r:?}");
        assert_eq!(r.int("wait_ms"), None, "never queued: {r:?}");
        assert!(kinds_of(&r.text("call_id")).is_empty(), "an (a) call is not in the queue log: {:?}", kinds_of(&r.text("call_id")));
    }
    let mut answered_by: BTreeMap<String, u64> = BTreeMap::new();
    for c in &b_calls {
        let r = rec(c);
        assert_eq!((r.text("outcome"), r.text("agent"), r.text("queue")), ("abandoned".into(), String::new(), "general".into()), "{r:?}");
        let wait = r.int("wait_ms").unwrap_or(-1);
        assert!((wait - c.on_line_ms()).abs() < 1_000, "record wait_ms {wait}, SIPp's caller was {} ms on the line: {r:?}", c.on_line_ms());
        let k = kinds_of(&r.text("call_id"));
        assert!(k.contains(&"enter") && k.contains(&"abandon") && !k.contains(&"connect"), "{k:?}");
    }
    for c in &c_calls {
        let r = rec(c);
        assert_eq!(r.text("outcome"), "completed", "{r:?}\n{ctx}");
        let agent = r.text("agent");
        assert!(agent == "1001" || agent == "1002", "{r:?}");
        *answered_by.entry(agent).or_default() += 1;
        let (wait, talk) = (r.int("wait_ms").unwrap_or(-1), r.int("talk_ms").unwrap_or(0));
        assert!((0..=SL_MS).contains(&wait) && talk > 0 && wait + talk <= c.on_line_ms() + 1_000, "{r:?} (on the line {} ms)", c.on_line_ms());
        let k = kinds_of(&r.text("call_id"));
        for want in ["enter", "offer", "connect", "complete"] {
            assert!(k.contains(&want), "{want} missing from {k:?}");
        }
    }
    // The agents' own count: one received-audio dump per call baresip answered.
    let a_logs = [a1.stop(), a2.stop()];
    for (ext, b) in [("1001", 0), ("1002", 1)] {
        let dumps = std::fs::read_dir(dir.join(format!("agent-{ext}/dumps")))
            .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with("-dec.wav")).count())
            .unwrap_or(0) as u64;
        assert_eq!(dumps, answered_by.get(ext).copied().unwrap_or(0), "calls agent {ext}'s phone answered (its dumps) vs records\n{}", a_logs[b]);
    }

    // ---- /stats/live ----------------------------------------------------------------------------
    let t0 = Instant::now();
    let v = loop {
        let v = live(&cg);
        let q = &live_queue(&v, "general")["today"];
        let settled = Expected::of(q) == want && num(q, "handled") == want.answered;
        if settled || t0.elapsed() > Duration::from_secs(5) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = std::fs::write(dir.join("stats_live.json"), format!("{v:#}"));
    let tenant = &v["tenants"]["demo"];
    let queue = live_queue(&v, "general");
    let lctx = format!("{v:#}\n{ctx}");
    check_figures("/stats/live queue general today", &queue["today"], &want, &lctx);
    check_figures("/stats/live tenant demo today", &tenant["today"], &want, &lctx);
    assert_eq!(num(&tenant["today"], "abandoned_before_queue"), lost_in_announcement, "callers lost in the announcement\n{lctx}");
    assert_eq!(queue["waiting"].as_u64(), Some(0), "{lctx}");
    assert_eq!(queue["today"]["max_wait_answered_s"].as_f64().map(|s| s <= SL_MS as f64 / 1000.0), Some(true), "{lctx}");
    let day = tenant["day"].as_str().expect("live names its day").to_string();

    // ---- /stats/report (JSON and CSV) ----------------------------------------------------------
    let (st, body) = cg.http_get(&format!("/stats/report?tenant=demo&date={day}&interval=30&format=json"));
    assert_eq!(st, 200, "{body}");
    let _ = std::fs::write(dir.join("stats_report.json"), &body);
    let rep: Value = serde_json::from_str(&body).expect("report JSON");
    assert_eq!(rep["sl_formula"], "answered_of_offered", "{rep:#}");
    let rows = rep["rows"].as_array().expect("rows");
    let sum = |scope: &str, name: Option<&str>, k: &str| -> u64 {
        rows.iter().filter(|r| r["scope"] == scope && name.is_none_or(|n| r["name"] == n)).map(|r| num(r, k)).sum()
    };
    let day_of = |scope: &str, name: Option<&str>| {
        let mut m = serde_json::Map::new();
        for k in ["offered", "answered", "answered_in_sl", "abandoned", "short_abandoned", "handled", "abandoned_before_queue"] {
            m.insert(k.into(), sum(scope, name, k).into());
        }
        Value::Object(m)
    };
    let rctx = format!("{rep:#}\n{ctx}");
    for (scope, name) in [("queue", Some("general")), ("tenant", None)] {
        let d = day_of(scope, name);
        assert_eq!(Expected::of(&d), want, "/stats/report {scope} {name:?}, summed over the day's rows\n{rctx}");
        assert_eq!(num(&d, "handled"), want.answered, "{rctx}");
    }
    assert_eq!(sum("tenant", None, "abandoned_before_queue"), lost_in_announcement, "{rctx}");
    assert_eq!(sum("agent", None, "answered"), want.answered, "agents' answered\n{rctx}");
    for (ext, n) in &answered_by {
        assert_eq!(sum("agent", Some(ext), "answered"), *n, "agent {ext}\n{rctx}");
    }
    // Every row's rates follow from its own counts (the KS formula).
    for r in rows.iter().filter(|r| r["scope"] != "agent" && num(r, "offered") > 0) {
        let (o, sl, ab) = (num(r, "offered") as f64, num(r, "answered_in_sl") as f64, num(r, "abandoned") as f64);
        assert!(close(r["service_level"].as_f64(), sl / o) && close(r["ks_abandonment"].as_f64(), ab / o), "{r:#}");
    }
    // When all of the test's calls fell into one interval (nearly always), that row is the day.
    let busy: Vec<&Value> = rows.iter().filter(|r| r["scope"] == "queue" && num(r, "offered") > 0).collect();
    if busy.len() == 1 {
        check_figures("/stats/report queue general, the busy interval", busy[0], &want, &rctx);
    }
    // CSV: the same numbers.
    let (st, csv) = cg.http_get(&format!("/stats/report?tenant=demo&date={day}&interval=30&format=csv"));
    assert_eq!(st, 200, "{csv}");
    let _ = std::fs::write(dir.join("stats_report.csv"), &csv);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("CSV header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("CSV column {name} missing: {header:?}"));
    let csv_rows: Vec<Vec<&str>> = lines.filter(|l| !l.is_empty()).map(|l| l.split(',').collect()).collect();
    let csv_sum = |k: &str| -> u64 {
        csv_rows.iter().filter(|r| r[col("scope")] == "queue" && r[col("name")] == "general").map(|r| r[col(k)].parse::<u64>().unwrap()).sum()
    };
    let from_csv = Expected {
        offered: csv_sum("offered"),
        answered: csv_sum("answered"),
        answered_in_sl: csv_sum("answered_in_sl"),
        abandoned: csv_sum("abandoned"),
        short_abandoned: csv_sum("short_abandoned"),
    };
    assert_eq!(from_csv, want, "/stats/report CSV, queue general summed\n{csv}");
    let distinct: BTreeSet<&str> = csv_rows.iter().map(|r| r[col("scope")]).collect();
    assert!(distinct.contains("tenant") && distinct.contains("agent"), "{csv}");

    let stopped = cg.stop();
    assert!(stopped.status.success(), "callgate exit {}\n{}", stopped.status, stopped.stderr);
}
