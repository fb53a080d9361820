//! End to end over loopback with real peers: citizens (baresip or SIPp) call the centre, wait in the
//! ACD queue and reach counsellors whose baresip softphones registered to callgate with digest auth
//! and answer automatically. Audio is checked both ways by tone frequency in what each phone
//! received (baresip's `sndfile` dumps): the citizen sends 440 Hz, the agents 1000 / 1500 Hz.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::baresip::{seconds_with_tone, Baresip, BaresipConfig};
use common::*;

const CITIZEN_HZ: f64 = 440.0;
const AGENT1_HZ: f64 = 1000.0;
const AGENT2_HZ: f64 = 1500.0;

/// Ports of the block for the phones: (sip, ctrl, (rtp from, rtp to)). callgate's RTP is 100..199.
fn agent_ports(ports: &PortBlock, i: u16) -> (u16, u16, (u16, u16)) {
    // baresip listens on sip (UDP, TCP) and sip + 1 (TLS).
    let b = 60 + 10 * i;
    (ports.port(b), ports.port(b + 5), (ports.port(b + 6), ports.port(b + 9)))
}

fn citizen_ports(ports: &PortBlock) -> (u16, u16, (u16, u16)) {
    (ports.port(90), ports.port(95), (ports.port(96), ports.port(99)))
}

/// The demo profile with the guidance cut (the tests are about the queue) and a short wrap-up.
fn profile(wrapup_s: i64) -> ProfileBuilder {
    let mut p = ProfileBuilder::default_profile().trunk_codecs(&["PCMU", "PCMA"]);
    let tenant = p.tenants.values_mut().next().unwrap();
    for s in tenant.get_mut("service").and_then(|v| v.as_array_mut()).unwrap() {
        s.as_table_mut().unwrap().insert("guidance".into(), toml::Value::Array(vec![]));
    }
    for q in tenant.get_mut("queue").and_then(|v| v.as_array_mut()).unwrap() {
        q.as_table_mut().unwrap().insert("wrapup".into(), wrapup_s.into());
    }
    p
}

fn agent(dir: &Path, ports: &PortBlock, cg: &Callgate, i: u16, ext: &str, hz: f64) -> Baresip {
    let cfg = BaresipConfig::agent(dir.join(format!("agent-{ext}")), ext, &format!("demo{ext}"), cg.sip, agent_ports(ports, i), hz);
    let b = Baresip::start(cfg);
    b.wait_registered(Duration::from_secs(10));
    b
}

fn citizen(dir: &Path, ports: &PortBlock, name: &str, codecs: &str) -> Baresip {
    Baresip::start(BaresipConfig::citizen(dir.join(name), "01012345678", citizen_ports(ports), CITIZEN_HZ, codecs))
}

/// Waits until `n` records exist and returns them.
fn records_after(cg: &Callgate, n: usize) -> Vec<Record> {
    cg.wait_records(n)
}

#[test]
fn citizen_reaches_a_registered_agent_and_both_hear_each_other() {
    let dir = test_dir("acd-audio");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(1));
    let a1 = agent(&dir, &ports, &cg, 0, "1001", AGENT1_HZ);
    let c = citizen(&dir, &ports, "citizen", "pcmu");
    c.dial(&format!("sip:120@{}", cg.sip));
    std::thread::sleep(Duration::from_secs(7));
    c.hangup();
    let recs = records_after(&cg, 1);
    let c_log = c.stop();
    let a_log = a1.stop();
    let rec = &recs[0];
    assert_eq!(rec.text("outcome"), "completed", "{rec:?}\n{}", cg.stderr());
    assert_eq!(rec.text("agent"), "1001", "the record names the agent");

    let heard_by_agent = common::baresip::read_dump_dir(&dir.join("agent-1001/dumps"));
    let heard_by_citizen = common::baresip::read_dump_dir(&dir.join("citizen/dumps"));
    let (a_file, c_file) = (heard_by_agent.expect("agent dump"), heard_by_citizen.expect("citizen dump"));
    let agent_hears = seconds_with_tone(&a_file, CITIZEN_HZ, &[AGENT1_HZ]);
    let citizen_hears = seconds_with_tone(&c_file, AGENT1_HZ, &[CITIZEN_HZ]);
    assert!(agent_hears >= 3, "the agent heard the citizen's 440 Hz for {agent_hears} s\n{a_log}");
    assert!(citizen_hears >= 3, "the citizen heard the agent's 1000 Hz for {citizen_hears} s\n{c_log}");
}

#[test]
fn a_pcma_citizen_and_a_pcmu_agent_hear_each_other_through_transcoding() {
    let dir = test_dir("acd-transcode");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(1));
    let cfg = BaresipConfig::agent(dir.join("agent-1002"), "1002", "demo1002", cg.sip, agent_ports(&ports, 0), AGENT1_HZ);
    let mut cfg = cfg;
    cfg.account = cfg.account.replace("audio_codecs=pcmu,pcma", "audio_codecs=pcmu");
    let a = Baresip::start(cfg);
    a.wait_registered(Duration::from_secs(10));
    let c = citizen(&dir, &ports, "citizen", "pcma");
    c.dial(&format!("sip:120@{}", cg.sip));
    std::thread::sleep(Duration::from_secs(7));
    c.hangup();
    records_after(&cg, 1);
    let (c_log, a_log) = (c.stop(), a.stop());
    assert!(c_log.contains("PCMA") || c_log.to_ascii_lowercase().contains("pcma"), "the citizen used A-law:\n{c_log}");
    let a_file = common::baresip::read_dump_dir(&dir.join("agent-1002/dumps")).expect("agent dump");
    let c_file = common::baresip::read_dump_dir(&dir.join("citizen/dumps")).expect("citizen dump");
    assert!(seconds_with_tone(&a_file, CITIZEN_HZ, &[AGENT1_HZ]) >= 3, "agent (PCMU) hears the A-law citizen\n{a_log}");
    assert!(seconds_with_tone(&c_file, AGENT1_HZ, &[CITIZEN_HZ]) >= 3, "citizen (PCMA) hears the μ-law agent\n{c_log}");
}

#[test]
fn the_next_call_goes_to_the_longest_idle_agent_after_wrap_up() {
    let dir = test_dir("acd-longest-idle");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(2));
    // 1001 registers (and becomes ready) first: it has been idle longest.
    let a1 = agent(&dir, &ports, &cg, 0, "1001", AGENT1_HZ);
    std::thread::sleep(Duration::from_millis(300));
    let a2 = agent(&dir, &ports, &cg, 1, "1002", AGENT2_HZ);
    let mut seen = Vec::new();
    for i in 0..3 {
        let c = citizen(&dir, &ports, &format!("citizen-{i}"), "pcmu");
        c.dial(&format!("sip:120@{}", cg.sip));
        std::thread::sleep(Duration::from_secs(4));
        c.hangup();
        let recs = records_after(&cg, i + 1);
        c.stop();
        seen.push(recs[i].text("agent"));
        // Let the wrap-up (2 s) end before the next call.
        std::thread::sleep(Duration::from_secs(3));
    }
    a1.stop();
    a2.stop();
    // 1001 idle longest → call 1; then 1002 is idle longer → call 2; then 1001 again.
    assert_eq!(seen, ["1001", "1002", "1001"], "{}", cg.stderr());
}

#[test]
fn an_unregistered_phone_gets_no_calls_and_a_wrong_password_is_refused() {
    let dir = test_dir("acd-auth");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(1));
    let cfg = BaresipConfig::agent(dir.join("agent-bad"), "1003", "wrong", cg.sip, agent_ports(&ports, 0), AGENT1_HZ);
    let bad = Baresip::start(cfg);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let info = bad.command("reginfo", "");
        assert!(!info.contains("OK") || info.contains("ERR"), "a wrong password must not register: {info}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = bad.stop();
    assert!(log.contains("401") || log.contains("403") || log.to_lowercase().contains("unauthorized"), "{log}");
}

#[test]
fn an_agent_holds_the_citizen_hears_music_then_the_agent_again() {
    let dir = test_dir("acd-hold");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(1));
    let a = agent(&dir, &ports, &cg, 0, "1001", AGENT1_HZ);
    let c = citizen(&dir, &ports, "citizen", "pcmu");
    c.dial(&format!("sip:120@{}", cg.sip));
    std::thread::sleep(Duration::from_secs(4));
    let r = a.command("hold", "");
    std::thread::sleep(Duration::from_secs(5));
    let r2 = a.command("resume", "");
    std::thread::sleep(Duration::from_secs(4));
    c.hangup();
    let recs = records_after(&cg, 1);
    let (c_log, a_log) = (c.stop(), a.stop());
    let file = common::baresip::read_dump_dir(&dir.join("citizen/dumps")).expect("citizen dump");
    let t = common::baresip::tone_timeline(&file, AGENT1_HZ, &[CITIZEN_HZ]);
    let agent_secs: Vec<usize> = t.iter().enumerate().filter(|(_, (tone, _))| *tone).map(|(i, _)| i).collect();
    let ctx = format!("hold: {r}\nresume: {r2}\ntimeline {t:?}\n{a_log}\n{c_log}\n{}", cg.stderr());
    // Before the hold and after the resume the citizen hears the agent; in between, music (sound,
    // but not the agent's tone).
    let before = agent_secs.iter().filter(|&&s| s < 4).count();
    let after = agent_secs.iter().filter(|&&s| s >= 10).count();
    assert!(before >= 2 && after >= 2, "agent heard before {before} s, after {after} s\n{ctx}");
    let held: Vec<&(bool, f64)> = t.iter().skip(6).take(2).collect();
    assert!(held.iter().all(|(tone, energy)| !tone && *energy > 1e4), "music, not the agent, while held: {held:?}\n{ctx}");
    assert!(recs[0].int("talk_ms").unwrap_or(0) > 0, "{:?}", recs[0]);
}

#[test]
fn a_caller_choosing_english_in_the_menu_by_rfc4733_reaches_an_agent_with_the_choice_recorded() {
    let dir = test_dir("acd-menu");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(1));
    let a = agent(&dir, &ports, &cg, 0, "1001", AGENT1_HZ);
    let run = Sipp::uac(&dir, "uac", "uac_menu_en.xml", cg.sip, "1200")
        .ports(&ports, P_UAC, P_UAC_CTRL, P_UAC_MEDIA)
        .run();
    run.assert_ok(Some(&cg));
    let recs = records_after(&cg, 1);
    let a_log = a.stop();
    let r = &recs[0];
    assert_eq!(r.text("menu_choice"), "en", "{r:?}\n{a_log}\n{}", cg.stderr());
    assert_eq!(r.text("digits"), "2");
    assert_eq!(r.text("agent"), "1001", "{r:?}");
    assert_eq!(r.text("outcome"), "completed");
    assert!(r.int("talk_ms").unwrap_or(0) >= 3000, "{r:?}");
    // The queue log has the whole path: enter (with the skill), offer, connect, complete.
    let events = callgate::records::read_queue_log(&cg.db, 0..i64::MAX).expect("queue log");
    let names: Vec<&str> = events.iter().filter(|e| e.call == r.text("call_id")).map(|e| e.kind.name()).collect();
    for want in ["enter", "offer", "connect", "complete"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[test]
fn a_caller_hanging_up_while_the_agent_rings_cancels_the_agents_phone() {
    let dir = test_dir("acd-ring-cancel");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(1));
    let mut cfg = BaresipConfig::agent(dir.join("agent-1001"), "1001", "demo1001", cg.sip, agent_ports(&ports, 0), AGENT1_HZ);
    cfg.account = cfg.account.replace("answermode=auto", "answermode=manual");
    let a = Baresip::start(cfg);
    a.wait_registered(Duration::from_secs(10));
    let c = citizen(&dir, &ports, "citizen", "pcmu");
    c.dial(&format!("sip:120@{}", cg.sip));
    std::thread::sleep(Duration::from_secs(3));
    let ringing = a.command("listcalls", "");
    eprintln!("listcalls while ringing: {ringing}");
    c.hangup();
    let recs = records_after(&cg, 1);
    std::thread::sleep(Duration::from_millis(500));
    let calls_after = a.command("listcalls", "");
    let (_, a_log) = (c.stop(), a.stop());
    let r = &recs[0];
    assert_eq!(r.text("outcome"), "abandoned", "{r:?}");
    assert_eq!(r.text("agent"), "", "nobody answered");
    assert!(ringing.contains("1001") || ringing.to_lowercase().contains("incoming") || ringing.contains("sip:"), "the agent's phone rang: {ringing}\n{a_log}");
    assert!(!calls_after.contains("sip:0"), "the agent's phone stopped ringing: {calls_after}\n{a_log}");
    let events = callgate::records::read_queue_log(&cg.db, 0..i64::MAX).expect("queue log");
    let names: Vec<&str> = events.iter().filter(|e| e.call == r.text("call_id")).map(|e| e.kind.name()).collect();
    assert!(names.contains(&"offer") && names.contains(&"abandon"), "{names:?}");
    assert!(!names.contains(&"connect"), "{names:?}");
}

#[test]
fn a_caller_who_presses_star_is_called_back_when_an_agent_is_ready_and_bridged() {
    let dir = test_dir("acd-callback");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(1));
    // No agent yet: the caller waits, presses *, hears the confirmation and is hung up on.
    let run = Sipp::uac(&dir, "uac", "uac_callback_request.xml", cg.sip, "120")
        .ports(&ports, P_UAC, P_UAC_CTRL, P_UAC_MEDIA)
        .run();
    run.assert_ok(Some(&cg));
    let first = cg.wait_records(1);
    assert_eq!(first[0].text("end_reason"), "callback requested", "{:?}", first[0]);
    // The citizen's phone (the carrier's address the call came from) now waits for the callback.
    let uas = Sipp::uas(&dir, "citizen", "uas_answer.xml")
        .ports(&ports, P_UAC, P_UAC_CTRL, P_UAC_MEDIA)
        .arg("-rtp_echo")
        .calls(1)
        .timeout_s(40)
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    // An agent becomes ready: callgate reserves them, dials the citizen, then rings the agent.
    let a = agent(&dir, &ports, &cg, 0, "1001", AGENT1_HZ);
    let t0 = Instant::now();
    while a.command("listcalls", "").contains("(0)") {
        assert!(t0.elapsed() < Duration::from_secs(15), "the agent never got the callback\n{}", cg.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    a.hangup();
    let recs = cg.wait_records(2);
    let uas_run = uas.wait();
    let a_log = a.stop();
    uas_run.assert_ok(Some(&cg));
    let cb = &recs[1];
    assert_eq!(cb.text("agent"), "1001", "{cb:?}\n{a_log}");
    assert_eq!(cb.text("outcome"), "completed", "{cb:?}");
    assert!(cb.int("talk_ms").unwrap_or(0) >= 2000, "{cb:?}");
    // The agent heard the citizen's side (SIPp echoes what it hears, i.e. the agent's own tone back).
    let heard = common::baresip::read_dump_dir(&dir.join("agent-1001/dumps")).expect("agent dump");
    assert!(seconds_with_tone(&heard, AGENT1_HZ, &[CITIZEN_HZ]) >= 1, "the agent heard the citizen's echo");
    let events = callgate::records::read_queue_log(&cg.db, 0..i64::MAX).expect("queue log");
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    for want in ["callback_requested", "callback_connect"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[test]
fn a_callback_request_survives_a_restart() {
    let dir = test_dir("acd-callback-restart");
    let ports = PortBlock::acquire();
    let p = profile(1).write(&dir, &ports);
    let cg = Callgate::start(&dir, &ports, &p);
    Sipp::uac(&dir, "uac", "uac_callback_request.xml", cg.sip, "120")
        .ports(&ports, P_UAC, P_UAC_CTRL, P_UAC_MEDIA)
        .run()
        .assert_ok(Some(&cg));
    cg.wait_records(1);
    let stopped = cg.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // A new process on the same database: the callback is still in line.
    let cg = Callgate::start(&dir, &ports, &p);
    let uas = Sipp::uas(&dir, "citizen", "uas_answer.xml")
        .ports(&ports, P_UAC, P_UAC_CTRL, P_UAC_MEDIA)
        .arg("-rtp_echo")
        .calls(1)
        .timeout_s(40)
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let a = agent(&dir, &ports, &cg, 0, "1001", AGENT1_HZ);
    let t0 = Instant::now();
    while a.command("listcalls", "").contains("(0)") {
        assert!(t0.elapsed() < Duration::from_secs(15), "no callback after the restart\n{}", cg.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    a.hangup();
    let recs = cg.wait_records(2);
    uas.wait().assert_ok(Some(&cg));
    a.stop();
    assert_eq!(recs[1].text("agent"), "1001", "{:?}", recs[1]);
    assert!(cg.stderr().contains("restoring pending callbacks"), "{}", cg.stderr());
}
