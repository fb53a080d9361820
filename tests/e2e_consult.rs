//! Consultation, conference and supervisor monitoring end to end over loopback, with real phones:
//! a baresip citizen (440 Hz), a baresip agent (1000 Hz), the department's phone (SIPp echoing the
//! RTP it gets, so whoever it hears hears themselves back) and a baresip supervisor (1800 Hz), all
//! driven by real WebSocket desktops. What each phone heard is checked by frequency, per phase.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::baresip::{read_wav, tone_power, Baresip, BaresipConfig};
use common::desk::{connect, profile_with_department as profile, wait_event_where};
use common::*;
use serde_json::{json, Value};

const CITIZEN_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 1000.0;
const SUPERVISOR_HZ: f64 = 1800.0;

fn phone(dir: &Path, ports: &PortBlock, cg: &Callgate, ext: &str, base: u16, hz: f64) -> Baresip {
    let cfg = BaresipConfig::agent(
        dir.join(format!("phone-{ext}")),
        ext,
        &format!("demo{ext}"),
        cg.sip,
        (ports.port(base), ports.port(base + 5), (ports.port(base + 6), ports.port(base + 9))),
        hz,
    );
    let b = Baresip::start(cfg);
    b.wait_registered(Duration::from_secs(10));
    b
}

fn ok(r: Result<Value, callgate::cti::proto::RemoteError>, what: &str) {
    assert!(r.is_ok(), "{what}: {r:?}");
}

/// Mean tone power of `hz` over seconds `from..to` of the phone's received audio.
struct Heard {
    x: Vec<f64>,
    rate: u32,
}

impl Heard {
    fn of(b: &Baresip) -> Heard {
        let wav = b.dump(true).expect("the phone's received-audio dump");
        let (x, rate, _) = read_wav(&wav);
        Heard { x, rate }
    }

    fn power(&self, from: f64, to: f64, hz: f64) -> f64 {
        let r = f64::from(self.rate);
        let (a, b) = ((from * r) as usize, ((to * r) as usize).min(self.x.len()));
        assert!(a + 800 < b, "the recording is {:.1} s long; wanted {from}..{to}", self.x.len() as f64 / r);
        // Whole 100 ms blocks only: a short tail block has no frequency resolution.
        let secs: Vec<f64> = self.x[a..b].chunks_exact(800).map(|c| tone_power(c, self.rate, hz)).collect();
        secs.iter().sum::<f64>() / secs.len() as f64
    }
}

/// Seconds since `t0`, as f64.
fn at(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

#[test]
fn a_consultation_holds_the_caller_then_conferences_and_completes_to_the_department() {
    let dir = test_dir("consult");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(ports.addr(P_UAS)));
    let agent = phone(&dir, &ports, &cg, "1001", 60, AGENT_HZ);
    let mut desk = connect(&cg, "demo-agent-1001");
    let mut sup = connect(&cg, "demo-supervisor-token");
    // The desktop takes the counsellor out and in again: logout → login → ready, each confirmed by
    // an agent.state event (the phone's registration had logged them in already).
    for (cmd, state) in [("agent.logout", "logged_out"), ("agent.login", "not_ready"), ("agent.ready", "ready")] {
        ok(desk.call(cmd, json!({})).unwrap(), cmd);
        let st = wait_event_where(&mut desk, "agent.state", Duration::from_secs(5), |_| true).1;
        assert_eq!((st["agent"].as_str(), st["state"].as_str()), (Some("1001"), Some(state)), "{cmd}: {st}");
    }
    // The department's phone answers and echoes what it hears.
    let dept = Sipp::uas(&dir, "dept", "uas_answer.xml").ports(&ports, P_UAS, P_UAS_CTRL, P_UAS_MEDIA).arg("-rtp_echo").calls(1).timeout_s(60).spawn();
    let citizen = Baresip::start(BaresipConfig::citizen(
        dir.join("citizen"),
        "01055556666",
        (ports.port(90), ports.port(95), (ports.port(96), ports.port(99))),
        CITIZEN_HZ,
        "pcmu",
    ));
    citizen.dial(&format!("sip:120@{}", cg.sip));
    let offered = wait_event_where(&mut desk, "call.offered", Duration::from_secs(10), |_| true).1;
    // The citizen's audio starts when it is answered (queue entry, the instant of the offer).
    let t0 = Instant::now();
    let call = offered["call"].as_str().unwrap().to_owned();
    wait_event_where(&mut desk, "call.answered", Duration::from_secs(10), |_| true);
    ok(desk.call("call.attach", json!({ "call": call, "data": { "subject": "passport", "note": "lost abroad" } })).unwrap(), "attach");
    std::thread::sleep(Duration::from_secs(3));

    // Consult the department: the citizen hears music, the agent talks to the department.
    let p2 = at(t0);
    ok(desk.call("call.consult", json!({ "call": call, "to": "2000" })).unwrap(), "consult");
    let ev = wait_event_where(&mut sup, "call.consult", Duration::from_secs(10), |d| d["phase"] == "answered").1;
    assert_eq!(ev["to"], "2000");
    std::thread::sleep(Duration::from_secs(4));
    // Back and forth: the agent with the citizen, the department on music.
    let p3 = at(t0);
    ok(desk.call("call.consult_swap", json!({ "call": call })).unwrap(), "swap");
    std::thread::sleep(Duration::from_secs(4));
    // All three.
    let p4 = at(t0);
    ok(desk.call("call.conference", json!({ "call": call })).unwrap(), "conference");
    wait_event_where(&mut sup, "call.conferenced", Duration::from_secs(5), |_| true);
    std::thread::sleep(Duration::from_secs(4));
    // The agent completes: the citizen stays with the department.
    let p5 = at(t0);
    ok(desk.call("call.consult_complete", json!({ "call": call })).unwrap(), "complete");
    let tr = wait_event_where(&mut sup, "call.transferred", Duration::from_secs(5), |_| true).1;
    assert_eq!((tr["to"].as_str(), tr["kind"].as_str()), (Some("2000"), Some("consult")));
    std::thread::sleep(Duration::from_secs(4));
    let p6 = at(t0);
    citizen.hangup();
    let recs = cg.wait_records(1);
    let dept_run = dept.wait();
    dept_run.assert_ok(Some(&cg));
    let invite = dept_run.messages.split("INVITE sip:").nth(1).unwrap_or_default().to_owned();
    assert!(invite.contains(&format!("X-Callgate-Case: {call}")), "the department's phone rang with the case:\n{invite}");
    assert!(invite.contains("X-Callgate-Subject: passport"), "{invite}");
    ok(desk.call("call.disposition", json!({ "call": call, "subject": "passport", "settled": true })).unwrap(), "disposition");

    std::thread::sleep(Duration::from_millis(500));
    let (c, a) = (Heard::of(&citizen), Heard::of(&agent));
    let _ = (citizen.stop(), agent.stop());
    // Windows inside each phase (0.8 s margin for the switches and the jitter buffers).
    let w = |from: f64, to: f64| (from + 0.8, to - 0.3);
    let (talk, consult, swap, conf, done) = (w(0.5, p2), w(p2, p3), w(p3, p4), w(p4, p5), w(p5, p6));
    let cp = |(f, t): (f64, f64), hz| c.power(f, t, hz);
    let ap = |(f, t): (f64, f64), hz| a.power(f, t, hz);
    let loud = cp(talk, AGENT_HZ);
    assert!(loud > 1e3, "the citizen hears the agent at first: {loud}");
    // Consultation: the citizen hears music, neither the agent nor itself; the agent hears the
    // department (its own voice echoed back), not the citizen.
    assert!(cp(consult, AGENT_HZ) < loud / 20.0, "the citizen must not hear the consultation: {} vs {loud}", cp(consult, AGENT_HZ));
    assert!(ap(consult, AGENT_HZ) > loud / 5.0, "the agent hears the department: {}", ap(consult, AGENT_HZ));
    assert!(ap(consult, CITIZEN_HZ) < ap(talk, CITIZEN_HZ) / 20.0, "the agent does not hear the held citizen");
    // Swap: agent and citizen again.
    assert!(cp(swap, AGENT_HZ) > loud / 5.0, "after the swap the citizen hears the agent: {}", cp(swap, AGENT_HZ));
    assert!(ap(swap, CITIZEN_HZ) > ap(talk, CITIZEN_HZ) / 5.0, "and the agent the citizen");
    // Conference: the citizen hears the agent, and the department (which echoes the citizen).
    assert!(cp(conf, AGENT_HZ) > loud / 10.0, "conference: the agent: {}", cp(conf, AGENT_HZ));
    assert!(cp(conf, CITIZEN_HZ) > loud / 10.0, "conference: the department's echo of the citizen: {}", cp(conf, CITIZEN_HZ));
    assert!(ap(conf, CITIZEN_HZ) > ap(talk, CITIZEN_HZ) / 10.0, "conference: the agent hears the citizen");
    // Completed: the citizen talks to the department (its echo), the agent is gone.
    assert!(cp(done, CITIZEN_HZ) > loud / 10.0, "the citizen is with the department: {}", cp(done, CITIZEN_HZ));
    assert!(cp(done, AGENT_HZ) < loud / 20.0, "the agent left: {}", cp(done, AGENT_HZ));

    // One case, the agent's and the department's handling times.
    let rec = recs.iter().find(|r| r.text("call_id") == call).expect("the call's record");
    assert_eq!(rec.text("agent"), "1001");
    let talk_ms = rec.int("talk_ms").unwrap_or(0);
    assert!((15_000..30_000).contains(&talk_ms), "agent + department talk: {talk_ms} ms ({rec:?})");
    std::thread::sleep(Duration::from_millis(300));
    let log = callgate::records::read_queue_log(&cg.db, 0..i64::MAX).unwrap();
    let rows: Vec<_> = log.iter().filter(|e| e.call == call).collect();
    let kinds: Vec<&str> = rows.iter().map(|e| e.kind.name()).collect();
    for want in ["enter", "offer", "connect", "transfer", "disposition"] {
        assert!(kinds.contains(&want), "{want} missing from {kinds:?}");
    }
    let transfer = format!("{:?}", rows.iter().find(|e| e.kind.name() == "transfer").unwrap().kind);
    let agent_ms: u64 = transfer.split("talk_ms: ").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()).and_then(|s| s.parse().ok()).unwrap();
    assert!((p5 - 1.0..p5 + 1.0).contains(&(agent_ms as f64 / 1000.0)), "the agent's handling time ends at the completion: {agent_ms} ms vs {p5:.1} s");
    assert_eq!(recs.iter().filter(|r| r.text("call_id") == call).count(), 1, "counted once");
}

#[test]
fn a_supervisor_listens_whispers_and_barges_from_a_phone() {
    let dir = test_dir("monitor");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(ports.addr(P_UAS)));
    // The supervisor's phone is extension 1010, kept out of the queue.
    let supervisor = phone(&dir, &ports, &cg, "1010", 70, SUPERVISOR_HZ);
    let mut sup = connect(&cg, "demo-supervisor-token");
    ok(sup.call("agent.not_ready", json!({ "agent": "1010", "reason": "supervising" })).unwrap(), "1010 not ready");
    let agent = phone(&dir, &ports, &cg, "1001", 60, AGENT_HZ);
    let citizen = Baresip::start(BaresipConfig::citizen(
        dir.join("citizen"),
        "01077778888",
        (ports.port(90), ports.port(95), (ports.port(96), ports.port(99))),
        CITIZEN_HZ,
        "pcma",
    ));
    citizen.dial(&format!("sip:120@{}", cg.sip));
    let offered = wait_event_where(&mut sup, "call.offered", Duration::from_secs(10), |_| true).1;
    let t0 = Instant::now();
    assert_eq!(offered["agent"], "1001");
    let call = offered["call"].as_str().unwrap().to_owned();
    wait_event_where(&mut sup, "call.answered", Duration::from_secs(10), |_| true);
    std::thread::sleep(Duration::from_secs(2));
    // An agent may not monitor.
    let mut desk = connect(&cg, "demo-agent-1001");
    let r = desk.call("call.monitor", json!({ "call": call, "mode": "listen", "extension": "1010" })).unwrap();
    assert_eq!(r.expect_err("agents may not monitor").code, "forbidden");

    ok(sup.call("call.monitor", json!({ "call": call, "mode": "listen", "extension": "1010" })).unwrap(), "listen");
    wait_event_where(&mut sup, "call.monitor", Duration::from_secs(10), |d| d["phase"] == "answered");
    // The supervisor's phone audio starts at its answer.
    let s0 = at(t0);
    std::thread::sleep(Duration::from_secs(4));
    let p2 = at(t0);
    ok(sup.call("call.monitor", json!({ "call": call, "mode": "whisper" })).unwrap(), "whisper");
    std::thread::sleep(Duration::from_secs(4));
    let p3 = at(t0);
    ok(sup.call("call.monitor", json!({ "call": call, "mode": "barge" })).unwrap(), "barge");
    std::thread::sleep(Duration::from_secs(4));
    let p4 = at(t0);
    ok(sup.call("call.monitor", json!({ "call": call, "mode": "stop" })).unwrap(), "stop");
    std::thread::sleep(Duration::from_secs(3));
    let p5 = at(t0);
    citizen.hangup();
    cg.wait_records(1);
    std::thread::sleep(Duration::from_millis(500));
    let (c, a, s) = (Heard::of(&citizen), Heard::of(&agent), Heard::of(&supervisor));
    let _ = (citizen.stop(), agent.stop(), supervisor.stop());

    let w = |from: f64, to: f64| (from + 0.8, to - 0.3);
    let (listen, whisper, barge, after) = (w(s0, p2), w(p2, p3), w(p3, p4), w(p4, p5));
    let c_agent = c.power(listen.0, listen.1, AGENT_HZ);
    let a_citizen = a.power(listen.0, listen.1, CITIZEN_HZ);
    assert!(c_agent > 1e3 && a_citizen > 1e3, "caller and agent talk while the supervisor listens: {c_agent} {a_citizen}");
    // Listen: the supervisor hears both; nobody hears the supervisor.
    let (sl0, sl1) = (listen.0 - s0, listen.1 - s0);
    assert!(s.power(sl0, sl1, CITIZEN_HZ) > c_agent / 10.0, "the supervisor hears the citizen");
    assert!(s.power(sl0, sl1, AGENT_HZ) > c_agent / 10.0, "the supervisor hears the agent");
    let quiet = |h: &Heard, (f, t): (f64, f64)| h.power(f, t, SUPERVISOR_HZ);
    assert!(
        quiet(&c, listen) < c_agent / 20.0 && quiet(&a, listen) < c_agent / 20.0,
        "nobody hears a listening supervisor: citizen {} agent {} (the agent's voice at the citizen: {c_agent})",
        quiet(&c, listen),
        quiet(&a, listen),
    );
    // Whisper: only the agent hears the supervisor.
    assert!(quiet(&a, whisper) > c_agent / 10.0, "the agent hears the whisper: {}", quiet(&a, whisper));
    assert!(quiet(&c, whisper) < c_agent / 20.0, "the citizen does not: {}", quiet(&c, whisper));
    assert!(a.power(whisper.0, whisper.1, CITIZEN_HZ) > a_citizen / 5.0, "the agent still hears the citizen");
    // Barge: everyone hears the supervisor.
    assert!(quiet(&c, barge) > c_agent / 10.0, "the citizen hears the barging supervisor: {}", quiet(&c, barge));
    assert!(quiet(&a, barge) > c_agent / 10.0, "so does the agent");
    // Stopped: back to two.
    assert!(quiet(&c, after) < c_agent / 20.0 && quiet(&a, after) < c_agent / 20.0, "the supervisor left");
    assert!(c.power(after.0, after.1, AGENT_HZ) > c_agent / 5.0, "caller and agent go on");
}
