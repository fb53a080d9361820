//! The CTI server end to end over loopback: a real WebSocket client (the agent's desktop) drives a
//! call from a baresip citizen answered by a baresip agent, attaches the case, transfers it to a
//! department (SIPp) that receives the case in its INVITE, records the wrap-up disposition; another
//! agent's token is refused on that call; a reconnect resumes without losing an event.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use callgate::cti::client::Client;
use common::baresip::{Baresip, BaresipConfig};
use common::desk::{connect, profile_with_department as profile, wait_event};
use common::*;
use serde_json::json;

fn agent(dir: &Path, ports: &PortBlock, cg: &Callgate, ext: &str) -> Baresip {
    let b = 60;
    let cfg = BaresipConfig::agent(
        dir.join(format!("agent-{ext}")),
        ext,
        &format!("demo{ext}"),
        cg.sip,
        (ports.port(b), ports.port(b + 5), (ports.port(b + 6), ports.port(b + 9))),
        1000.0,
    );
    let a = Baresip::start(cfg);
    a.wait_registered(Duration::from_secs(10));
    a
}

#[test]
fn an_agent_desktop_sees_the_call_attaches_the_case_transfers_it_and_records_the_disposition() {
    let dir = test_dir("cti-transfer");
    let ports = PortBlock::acquire();
    let dept_addr = ports.addr(P_UAS);
    let cg = Callgate::start_with(&dir, &ports, profile(dept_addr));
    let a = agent(&dir, &ports, &cg, "1001");
    let mut desk = connect(&cg, "demo-agent-1001");
    let mut supervisor = connect(&cg, "demo-supervisor-token");
    // The department's phone: SIPp answering, echoing RTP.
    let dept = Sipp::uas(&dir, "dept", "uas_answer.xml").ports(&ports, P_UAS, P_UAS_CTRL, P_UAS_MEDIA).arg("-rtp_echo").calls(1).timeout_s(40).spawn();

    let citizen = Baresip::start(BaresipConfig::citizen(
        dir.join("citizen"),
        "01033334444",
        (ports.port(90), ports.port(95), (ports.port(96), ports.port(99))),
        440.0,
        "pcmu",
    ));
    citizen.dial(&format!("sip:120@{}", cg.sip));

    // The desktop sees the offer with the call's data, then the answer.
    let (_, offered, _) = wait_event(&mut desk, "call.offered", Duration::from_secs(10));
    assert_eq!(offered["agent"], "1001");
    assert_eq!(offered["caller"], "01033334444");
    assert_eq!(offered["number"], "120");
    assert_eq!(offered["queue"], "general");
    assert_eq!(offered["repeat_7d"], 0, "first call of this citizen");
    let call = offered["call"].as_str().unwrap().to_owned();
    wait_event(&mut desk, "call.answered", Duration::from_secs(10));

    // Another agent may not touch it.
    let mut other = connect(&cg, "demo-agent-1002");
    let refused = other.call("call.hangup", json!({ "call": call })).expect("reply");
    let err = refused.expect_err("an agent hanging up another agent's call");
    assert_eq!(err.code, "forbidden", "{err:?}");
    // ... and the refusal is counted on /metrics, beside the open connections.
    cg.wait_metrics(Duration::from_secs(3), "the forbidden CTI command counted", |m| {
        m.get("callgate_cti_refusals_total", &[("reason", "forbidden")]).unwrap_or(0.0) >= 1.0
            && m.get("callgate_cti_connections", &[]).unwrap_or(0.0) >= 3.0
    });

    // The case, then the transfer to the department (number 2000).
    let r = desk.call("call.attach", json!({ "call": call, "data": { "subject": "passport", "note": "lost abroad" } })).unwrap();
    assert!(r.is_ok(), "{r:?}");
    std::thread::sleep(Duration::from_secs(2));
    let r = desk.call("call.transfer", json!({ "call": call, "to": "2000" })).unwrap();
    assert!(r.is_ok(), "transfer: {r:?}\n{}", cg.stderr());
    let (_, tr, _) = wait_event(&mut supervisor, "call.transferred", Duration::from_secs(5));
    assert_eq!((tr["to"].as_str(), tr["kind"].as_str()), (Some("2000"), Some("blind")));
    std::thread::sleep(Duration::from_secs(3));
    citizen.hangup();
    let recs = cg.wait_records(1);
    let dept_run = dept.wait();
    dept_run.assert_ok(Some(&cg));
    // The department's phone got the case with the INVITE.
    let invite = dept_run.messages.split("INVITE sip:").nth(1).unwrap_or_default().to_owned();
    assert!(invite.contains(&format!("X-Callgate-Case: {call}")), "the case id travels with the transfer:\n{invite}");
    assert!(invite.contains("X-Callgate-Subject: passport"), "{invite}");

    // Wrap-up disposition after the call.
    let r = desk.call("call.disposition", json!({ "call": call, "subject": "passport", "settled": true, "flag": "praise" })).unwrap();
    assert!(r.is_ok(), "{r:?}");
    citizen.stop();
    a.stop();

    // One record for the case: the agent, the talk with the agent and the department.
    let rec = recs.iter().find(|r| r.text("call_id") == call).expect("the call's record");
    assert_eq!(rec.text("agent"), "1001");
    assert!(rec.int("talk_ms").unwrap_or(0) >= 4000, "{rec:?}");
    std::thread::sleep(Duration::from_millis(300));
    let log = callgate::records::read_queue_log(&cg.db, 0..i64::MAX).unwrap();
    let kinds: Vec<&str> = log.iter().filter(|e| e.call == call).map(|e| e.kind.name()).collect();
    for want in ["enter", "offer", "connect", "transfer", "disposition"] {
        assert!(kinds.contains(&want), "{want} missing from {kinds:?}");
    }
}

#[test]
fn a_desktop_that_reconnects_resumes_without_losing_an_event() {
    let dir = test_dir("cti-resume");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile(ports.addr(P_UAS)));
    let mut sup = connect(&cg, "demo-supervisor-token");
    let r = sup.call("agent.login", json!({ "agent": "1003" })).unwrap();
    assert!(r.is_ok(), "{r:?}");
    let (seq, st, _) = wait_event(&mut sup, "agent.state", Duration::from_secs(5));
    assert_eq!(st["agent"], "1003");
    sup.close();
    // While nobody watches, the agent gets ready and then takes a break.
    let mut admin = connect(&cg, "demo-admin-token");
    assert!(admin.call("agent.ready", json!({ "agent": "1003" })).unwrap().is_ok());
    assert!(admin.call("agent.not_ready", json!({ "agent": "1003", "reason": "lunch" })).unwrap().is_ok());
    // The supervisor comes back, asking for what came after `seq`.
    let mut back = Client::connect_ws(&cg.http.to_string(), None, Duration::from_secs(5)).unwrap();
    let r = back.call("auth", json!({ "token": "demo-supervisor-token", "since": seq })).unwrap();
    assert!(r.is_ok(), "{r:?}");
    let (_, ready, _) = wait_event(&mut back, "agent.state", Duration::from_secs(5));
    assert_eq!(ready["state"], "ready", "{ready}");
    let (_, brk, _) = wait_event(&mut back, "agent.state", Duration::from_secs(5));
    assert_eq!((brk["state"].as_str(), brk["reason"].as_str()), (Some("not_ready"), Some("lunch")), "{brk}");
    // callgate ctl sees the same.
    let out = std::process::Command::new(callgate_bin())
        .args(["ctl", "--http", &cg.http.to_string(), "--token", "demo-admin-token", "agents"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("1003") && text.contains("not_ready"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_desktop_answers_a_desk_phone_that_rings_with_a_talk_notify() {
    let dir = test_dir("cti-remote-answer");
    let ports = PortBlock::acquire();
    // Extension 1100: a desk phone (SIPp) that rings until told to answer.
    let mut p = profile(ports.addr(P_UAS));
    let tenant = p.tenants.values_mut().next().unwrap();
    let mut agent = toml::Table::new();
    for (k, v) in [("id", "1100"), ("extension", "1100"), ("name", "Desk phone 1100"), ("password", "demo1100")] {
        agent.insert(k.into(), toml::Value::String(v.into()));
    }
    agent.insert("queues".into(), toml::Value::Table(toml::Table::from_iter([("general".to_owned(), toml::Value::Integer(0))])));
    agent.insert("login_on_register".into(), toml::Value::Boolean(true));
    agent.insert("auto_answer".into(), toml::Value::Boolean(false));
    tenant.insert("agent".into(), toml::Value::Array(vec![toml::Value::Table(agent)]));
    let cg = Callgate::start_with(&dir, &ports, p);
    let mut sup = connect(&cg, "demo-supervisor-token");
    register_from(ports.addr(P_UAC2), cg.sip, "1100", "demo1100");
    let phone = Sipp::uas(&dir, "phone", "uas_remote_answer.xml")
        .ports(&ports, P_UAC2, P_UAC2_CTRL, P_UAC2_MEDIA)
        .arg("-rtp_echo")
        .calls(1)
        .timeout_s(40)
        .spawn();
    let (_, st, _) = wait_event(&mut sup, "agent.state", Duration::from_secs(10));
    assert_eq!((st["agent"].as_str(), st["state"].as_str()), (Some("1100"), Some("ready")), "{st}");

    let citizen = Baresip::start(BaresipConfig::citizen(
        dir.join("citizen"),
        "01012121212",
        (ports.port(90), ports.port(95), (ports.port(96), ports.port(99))),
        440.0,
        "pcmu",
    ));
    citizen.dial(&format!("sip:120@{}", cg.sip));
    let (_, offered, _) = wait_event(&mut sup, "call.offered", Duration::from_secs(10));
    assert_eq!(offered["agent"], "1100");
    let call = offered["call"].as_str().unwrap().to_owned();
    // The phone rings and stays ringing: nobody answers by hand.
    std::thread::sleep(Duration::from_secs(2));
    let snapshot = sup.call("query.calls", json!({})).unwrap().unwrap();
    assert!(!snapshot.to_string().contains("\"talking\""), "not answered before the desktop says so: {snapshot}");
    let t0 = Instant::now();
    let r = sup.call("call.answer", json!({ "call": call })).unwrap();
    assert!(r.is_ok(), "{r:?}");
    let (_, ans, _) = wait_event(&mut sup, "call.answered", Duration::from_secs(5));
    assert_eq!(ans["call"].as_str(), Some(call.as_str()));
    assert!(t0.elapsed() < Duration::from_secs(2), "answered on the desktop's word: {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    citizen.hangup();
    let recs = cg.wait_records(1);
    let run = phone.wait();
    run.assert_ok(Some(&cg));
    let _ = citizen.stop();
    let rec = recs.iter().find(|r| r.text("call_id") == call).expect("the call's record");
    assert_eq!(rec.text("agent"), "1100");
    assert!(rec.int("talk_ms").unwrap_or(0) >= 2500, "{rec:?}");
    assert!(rec.int("wait_ms").unwrap_or(0) >= 2000, "the ringing counted as waiting: {rec:?}");
}

/// Registers `ext` at callgate from `from` (a UDP socket bound there for the exchange), answering
/// the digest challenge; the binding then sends INVITEs to `from`.
fn register_from(from: std::net::SocketAddr, registrar: std::net::SocketAddr, ext: &str, password: &str) {
    use callgate::sip::digest::{Challenge, Credentials};
    use callgate::sip::msg::{HeaderName, Message};
    let sock = std::net::UdpSocket::bind(from).expect("bind the phone's port");
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let req = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{registrar} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKreg{cseq};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{ext}@{registrar}>;tag=r{ext}\r\nTo: <sip:{ext}@{registrar}>\r\nCall-ID: reg-{ext}@test\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{ext}@{from}>\r\nExpires: 300\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let mut buf = [0u8; 4096];
    sock.send_to(req(1, "").as_bytes(), registrar).unwrap();
    let n = sock.recv(&mut buf).expect("401");
    let resp = Message::parse(bytes::Bytes::copy_from_slice(&buf[..n])).unwrap();
    assert_eq!(resp.status(), Some(401));
    let ch = Challenge::parse(resp.header(HeaderName::WwwAuthenticate).unwrap()).unwrap();
    let cred = Credentials::answer(&ch, "REGISTER", &format!("sip:{registrar}"), ext, password, "0a4f113b", 1);
    sock.send_to(req(2, &format!("Authorization: {}\r\n", cred.to_header_value())).as_bytes(), registrar).unwrap();
    let n = sock.recv(&mut buf).expect("200");
    let resp = Message::parse(bytes::Bytes::copy_from_slice(&buf[..n])).unwrap();
    assert_eq!(resp.status(), Some(200), "{}", String::from_utf8_lossy(&buf[..n]));
}

#[test]
fn local_integrations_speak_json_lines_over_tcp_when_configured() {
    let dir = test_dir("cti-tcp");
    let ports = PortBlock::acquire();
    let tcp = ports.addr(P_RAW);
    let cg = Callgate::start_with(&dir, &ports, profile(ports.addr(P_UAS)).set("listen", "cti_tcp", tcp.to_string()));
    let out = std::process::Command::new(callgate_bin())
        .args(["ctl", "--tcp", &tcp.to_string(), "--token", "demo-admin-token", "queues"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("general"), "{text}\n{}\n{}", String::from_utf8_lossy(&out.stderr), cg.stderr());
    // A wrong token is refused there too.
    let out = std::process::Command::new(callgate_bin()).args(["ctl", "--tcp", &tcp.to_string(), "--token", "nope", "queues"]).output().unwrap();
    assert!(!out.status.success(), "a bad token must fail");
}
