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
        assert!(!(info.contains("OK") && !info.contains("ERR")), "a wrong password must not register: {info}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = bad.stop();
    assert!(log.contains("401") || log.contains("403") || log.to_lowercase().contains("unauthorized"), "{log}");
}
