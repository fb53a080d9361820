//! End to end: a real callgate process and SIPp as the carrier (and as the callee of bridged
//! calls), loopback only. Each test starts its own callgate on its own ports (see
//! tests/common/mod.rs), runs one scenario from tests/sipp/, and checks SIPp's verdict, what
//! reached the caller's RTP port, the call record in SQLite and /metrics.
//!
//! SIPp is required: without it these tests FAIL and say what to install
//! (`apt-get install -y sip-tester`; scripts/test.sh does it).

mod common;

use std::time::Duration;

use common::*;

fn uac(
    dir: &std::path::Path,
    cg: &Callgate,
    ports: &PortBlock,
    scenario: &str,
    number: &str,
) -> Sipp {
    Sipp::uac(dir, "uac", scenario, cg.sip, number)
        .ports(ports, P_UAC, P_UAC_CTRL, P_UAC_MEDIA)
        .key("rtp_port", &ports.port(P_RTP).to_string())
}

fn first_received_status(run: &SippRun) -> String {
    run.received()
        .first()
        .and_then(|m| m.lines().next())
        .unwrap_or("(nothing)")
        .to_string()
}

/// The guidance call, checked from the carrier's side end to end.
fn announcement_call(name: &str, tcp: bool) {
    let dir = test_dir(name);
    let ports = PortBlock::acquire();
    let frames = wav_frames(&default_guidance_wav());
    let cg = Callgate::start_with(&dir, &ports, ProfileBuilder::announcement_only());
    let (st, body) = cg.http_get("/healthz");
    assert_eq!(st, 200, "GET /healthz: {st} {body}");

    let sink = RtpSink::bind(ports.port(P_RTP));
    let mut sipp = uac(&dir, &cg, &ports, "uac_announcement.xml", "120");
    if tcp {
        sipp = sipp.tcp();
    }
    let run = sipp.run();
    std::thread::sleep(Duration::from_millis(300));
    let (pkts, junk) = sink.finish();
    run.assert_ok(Some(&cg));

    // 100 Trying at once, before anything else.
    let first = first_received_status(&run);
    assert!(
        first.starts_with("SIP/2.0 100 "),
        "the first answer to the INVITE was {first:?}, expected 100 Trying\n{}",
        run.explain()
    );

    // The announcement's RTP at the address our offer named.
    let (answer_port, pt) = answer_media(&run);
    assert!(
        pt == 0 || pt == 8,
        "answer chose payload type {pt}; we offered 0 8 101"
    );
    assert_eq!(
        junk, 0,
        "{junk} datagrams too short to be RTP arrived at the media port"
    );
    let report = check_stream(&pkts, pt).unwrap_or_else(|e| {
        panic!(
            "announcement RTP: {e}\n--- callgate stderr:\n{}",
            cg.stderr()
        )
    });
    assert_eq!(
        report.packets, frames,
        "the guidance prompt has {frames} frames of 20 ms; {} RTP packets arrived ({report:?})",
        report.packets
    );
    assert_eq!(
        report.from.port(),
        answer_port,
        "RTP came from port {}, the SDP answer's m= line says {answer_port} (symmetric RTP, RFC 4961)",
        report.from.port()
    );

    // Metrics: both setup stages measured, the outcome and the packets counted.
    let m = cg.metrics();
    for stage in ["invite_to_100", "invite_to_200"] {
        let n = m.must("callgate_setup_latency_seconds_count", &[("stage", stage)]);
        assert!(
            n >= 1.0,
            "callgate_setup_latency_seconds_count{{stage={stage}}} = {n} after a call\n{}",
            m.0
        );
    }
    assert_eq!(
        m.must("callgate_calls_total", &[("outcome", "completed")]),
        1.0,
        "{}",
        m.0
    );
    assert!(
        m.must("callgate_rtp_packets_sent_total", &[]) >= frames as f64,
        "{}",
        m.0
    );
    assert_eq!(m.must("callgate_active_calls", &[]), 0.0, "{}", m.0);

    // The record, written while callgate runs.
    let recs = cg.wait_records(1);
    let r = assert_one_record(&recs, "completed", 200, "120");
    assert_eq!(
        Some(r.text("sip_call_id")),
        run.call_id(),
        "sip_call_id is not the carrier's Call-ID"
    );
    let transport = r.text("transport").to_ascii_lowercase();
    assert_eq!(
        transport,
        if tcp { "tcp" } else { "udp" },
        "transport in {r:#?}"
    );
    let answered = r
        .int("answered_ms")
        .expect("a completed call has answered_ms");
    let played = r.int("ended_ms").unwrap() - answered;
    let expect_ms = frames as i64 * 20;
    assert!(
        (expect_ms - 1000..=expect_ms + 2000).contains(&played),
        "answered→ended took {played} ms; the announcement is {expect_ms} ms"
    );
    assert!(
        answered - r.int("arrived_ms").unwrap() < 1000,
        "INVITE→answer took over a second: {r:#?}"
    );

    // A clean stop prints the latency summary.
    let stopped = cg.stop_ok();
    let out = format!("{}{}", stopped.stderr, stopped.stdout);
    assert!(
        out.contains("invite_to_100") && out.contains("invite_to_200"),
        "no latency summary on shutdown:\n{out}"
    );
}

#[test]
fn announcement_call_over_udp() {
    announcement_call("announcement_call_over_udp", false);
}

#[test]
fn announcement_call_over_tcp() {
    announcement_call("announcement_call_over_tcp", true);
}

#[test]
fn caller_hangs_up_during_the_announcement() {
    caller_hangs_up("caller_hangs_up_during_the_announcement", false);
}

#[test]
fn caller_hangs_up_during_the_announcement_over_tcp() {
    caller_hangs_up("caller_hangs_up_during_the_announcement_over_tcp", true);
}

fn caller_hangs_up(name: &str, tcp: bool) {
    let dir = test_dir(name);
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);
    let sink = RtpSink::bind(ports.port(P_RTP));
    let mut sipp = uac(&dir, &cg, &ports, "uac_hangup_early.xml", "120");
    if tcp {
        sipp = sipp.tcp();
    }
    let run = sipp.run();
    std::thread::sleep(Duration::from_millis(600));
    let (pkts, _) = sink.finish();
    run.assert_ok(Some(&cg));

    let (_, pt) = answer_media(&run);
    let report = check_stream(&pkts, pt).unwrap_or_else(|e| panic!("RTP before the hang-up: {e}"));
    // The caller hung up 3 s after the ACK: about 150 packets.
    assert!(
        (110..=200).contains(&report.packets),
        "{} RTP packets in the 3 s before the caller's BYE",
        report.packets
    );
    // And the stream stopped with the BYE (SIPp exits right after the 200 to its BYE).
    let late: Vec<_> = pkts
        .iter()
        .filter(|p| p.at > run.finished + Duration::from_millis(100))
        .collect();
    assert!(
        late.is_empty(),
        "{} RTP packets still arrived after the call ended (first: {:?})",
        late.len(),
        late.first()
    );

    let m = cg.metrics();
    assert_eq!(
        m.must("callgate_calls_total", &[("outcome", "abandoned")]),
        1.0,
        "{}",
        m.0
    );
    assert_eq!(m.must("callgate_active_calls", &[]), 0.0, "{}", m.0);
    let recs = cg.wait_records(1);
    let r = assert_one_record(&recs, "abandoned", 200, "120");
    assert!(
        r.int("answered_ms").is_some(),
        "an abandoned call was answered: {r:#?}"
    );
    cg.stop_ok();
}

#[test]
fn source_outside_the_trunk_acl_is_refused_with_403() {
    refused_with_403("source_outside_the_trunk_acl_is_refused_with_403", false);
}

#[test]
fn source_outside_the_trunk_acl_is_refused_with_403_over_tcp() {
    refused_with_403("source_outside_the_trunk_acl_is_refused_with_403_over_tcp", true);
}

fn refused_with_403(name: &str, tcp: bool) {
    let dir = test_dir(name);
    let ports = PortBlock::acquire();
    // The only trunk is 127.0.0.2; SIPp sends from 127.0.0.1.
    let cg = Callgate::start_with(
        &dir,
        &ports,
        ProfileBuilder::default_profile().trunk_networks(&["127.0.0.2/32"]),
    );
    let mut sipp = uac(&dir, &cg, &ports, "uac_forbidden.xml", "120");
    if tcp {
        sipp = sipp.tcp();
    }
    let run = sipp.run();
    run.assert_ok(Some(&cg));
    let m = cg.metrics();
    let sent = m.must("callgate_sip_messages_total", &[("direction", "out")]);
    let rejected = m.must("callgate_sip_rejections_total", &[("code", "403")]);
    // Each copy of the INVITE that arrived got one 403 (over UDP SIPp may retransmit under load).
    assert!(
        sent >= 1.0 && rejected == sent,
        "INVITEs from outside the ACL (then an ACK): callgate sent {sent} messages and counts {rejected} 403 \
         rejections; expected every message sent to be a 403, counted once (an ACK is never answered)\n{}",
        m.0
    );
    assert_eq!(m.must("callgate_active_calls", &[]), 0.0, "{}", m.0);
    cg.stop_ok();
    let recs = records(&dir.join("calls.db"));
    let r = assert_one_record(&recs, "rejected", 403, "120");
    assert!(
        r.int("answered_ms").is_none(),
        "a refused call has no answer time: {r:#?}"
    );
}

#[test]
fn unknown_number_is_answered_404() {
    unknown_number("unknown_number_is_answered_404", false);
}

#[test]
fn unknown_number_is_answered_404_over_tcp() {
    unknown_number("unknown_number_is_answered_404_over_tcp", true);
}

fn unknown_number(name: &str, tcp: bool) {
    let dir = test_dir(name);
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);
    let mut sipp = uac(&dir, &cg, &ports, "uac_not_found.xml", "999");
    if tcp {
        sipp = sipp.tcp();
    }
    let run = sipp.run();
    run.assert_ok(Some(&cg));
    cg.stop_ok();
    let recs = records(&dir.join("calls.db"));
    assert_one_record(&recs, "not_found", 404, "999");
}

#[test]
fn offer_without_a_common_codec_is_answered_488() {
    let dir = test_dir("offer_without_a_common_codec_is_answered_488");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);
    let run = uac(&dir, &cg, &ports, "uac_no_codec.xml", "120").run();
    run.assert_ok(Some(&cg));
    cg.stop_ok();
    let recs = records(&dir.join("calls.db"));
    assert_one_record(&recs, "not_acceptable", 488, "120");
}

#[test]
fn options_ping_is_answered_200() {
    let dir = test_dir("options_ping_is_answered_200");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);
    let run = uac(&dir, &cg, &ports, "uac_options.xml", "120").run();
    run.assert_ok(Some(&cg));
    cg.stop_ok();
    let recs = records(&dir.join("calls.db"));
    assert!(
        recs.is_empty(),
        "an OPTIONS ping is not a call, yet it left records: {recs:#?}"
    );
}

#[test]
fn unknown_method_is_answered_501() {
    let dir = test_dir("unknown_method_is_answered_501");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);
    let run = uac(&dir, &cg, &ports, "uac_unknown_method.xml", "120").run();
    run.assert_ok(Some(&cg));
    cg.stop_ok();
}

#[test]
fn malformed_requests_get_400_and_do_not_hurt() {
    let dir = test_dir("malformed_requests_get_400_and_do_not_hurt");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);

    // 1. A Max-Forwards that is not a number, through SIPp.
    let run = uac(&dir, &cg, &ports, "uac_malformed.xml", "120").run();
    run.assert_ok(Some(&cg));

    // 2. Raw datagrams SIPp cannot send or match: each must get 400 with a reason phrase.
    let raw = ports.port(P_RAW);
    let sip = cg.sip;
    let req = |n: u32, method: &str, call_id: Option<&str>, cseq: &str, tail: &str| {
        let cid = call_id
            .map(|c| format!("Call-ID: {c}\r\n"))
            .unwrap_or_default();
        format!(
            "{method} sip:120@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{raw};branch=z9hG4bK-e2e-raw-{n};rport\r\n\
             From: <sip:{CALLER}@127.0.0.1>;tag=raw{n}\r\nTo: <sip:120@{sip}>\r\n{cid}CSeq: {cseq}\r\n\
             Max-Forwards: 70\r\n{tail}"
        )
    };
    let cases = [
        (
            "an INVITE without Call-ID",
            req(1, "INVITE", None, "1 INVITE", "Content-Length: 0\r\n\r\n"),
        ),
        (
            "a CSeq that is not a number",
            req(
                2,
                "OPTIONS",
                Some("raw2@e2e"),
                "one OPTIONS",
                "Content-Length: 0\r\n\r\n",
            ),
        ),
        (
            "a CSeq method that is not the request's",
            req(
                3,
                "OPTIONS",
                Some("raw3@e2e"),
                "1 INVITE",
                "Content-Length: 0\r\n\r\n",
            ),
        ),
        (
            "a Content-Length beyond the datagram",
            req(
                4,
                "OPTIONS",
                Some("raw4@e2e"),
                "1 OPTIONS",
                "Content-Length: 500\r\n\r\nshort",
            ),
        ),
    ];
    let mut wrong = String::new();
    for (what, msg) in &cases {
        match udp_exchange(raw, sip, msg.as_bytes(), Duration::from_secs(2)) {
            None => wrong.push_str(&format!("- {what}: no answer within 2 s\n")),
            Some(ans) => {
                let status = ans.lines().next().unwrap_or("");
                if !(status.starts_with("SIP/2.0 400 ")
                    && status.trim_end().len() > "SIP/2.0 400".len())
                {
                    wrong.push_str(&format!(
                        "- {what}: answered {status:?}, expected 400 with a reason phrase\n"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "malformed requests:\n{wrong}--- callgate stderr:\n{}",
        cg.stderr()
    );

    for junk in [
        &b"\x00\x01\x02garbage"[..],
        b"\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        &[0xffu8; 1400][..],
        b"INVITE",
    ] {
        let _ = udp_exchange(raw, sip, junk, Duration::from_millis(200));
    }

    // 3. Still alive and answering.
    let ping = format!(
        "OPTIONS sip:120@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{raw};branch=z9hG4bK-e2e-raw-9;rport\r\n\
         From: <sip:{CALLER}@127.0.0.1>;tag=raw9\r\nTo: <sip:120@{sip}>\r\nCall-ID: raw9@e2e\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let ans =
        udp_exchange(raw, sip, ping.as_bytes(), Duration::from_secs(2)).unwrap_or_else(|| {
            panic!(
                "no answer to OPTIONS after the malformed input\n--- callgate stderr:\n{}",
                cg.stderr()
            )
        });
    assert!(
        ans.starts_with("SIP/2.0 200 "),
        "OPTIONS after malformed input: {ans}"
    );
    let m = cg.metrics();
    assert!(
        m.must("callgate_sip_parse_errors_total", &[]) >= 1.0,
        "{}",
        m.0
    );
    cg.stop_ok();
}

fn bridge_profile(ports: &PortBlock) -> ProfileBuilder {
    let callee = format!("sip:callee@127.0.0.1:{}", ports.port(P_UAS));
    ProfileBuilder::default_profile().add_service(
        "200",
        "Bridge to a fixed destination (e2e)",
        Some(&callee),
    )
}

fn uas(dir: &std::path::Path, ports: &PortBlock, scenario: &str) -> SippChild {
    let c = Sipp::uas(dir, "uas", scenario)
        .ports(ports, P_UAS, P_UAS_CTRL, P_UAS_MEDIA)
        .spawn();
    std::thread::sleep(Duration::from_millis(300)); // let it bind
    c
}

#[test]
fn bridged_call_passes_through_the_b2bua() {
    let dir = test_dir("bridged_call_passes_through_the_b2bua");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, bridge_profile(&ports));
    let callee = uas(&dir, &ports, "uas_answer.xml");
    let run = Sipp::uac(&dir, "uac", "uac_b2bua.xml", cg.sip, "200")
        .ports(&ports, P_UAC, P_UAC_CTRL, P_UAC_MEDIA)
        .arg("-d")
        .arg("1000")
        .run();
    let callee = callee.wait();
    run.assert_ok(Some(&cg));
    callee.assert_ok(Some(&cg));

    // The callee saw callgate's own INVITE (a B2BUA: a new Call-ID), and the caller's BYE.
    let invite = callee
        .received()
        .into_iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("the callee got an INVITE");
    let caller_cid = run.call_id().unwrap();
    assert!(
        !invite.contains(&caller_cid),
        "the B-leg INVITE reuses the caller's Call-ID {caller_cid}:\n{invite}"
    );
    assert!(
        callee.received().iter().any(|m| m.starts_with("BYE ")),
        "the callee never got a BYE\n{}",
        callee.explain()
    );

    let m = cg.metrics();
    assert!(
        m.must(
            "callgate_setup_latency_seconds_count",
            &[("stage", "invite_to_200")]
        ) >= 1.0,
        "{}",
        m.0
    );
    cg.stop_ok();
    let recs = records(&dir.join("calls.db"));
    let r = assert_one_record(&recs, "bridged", 200, "200");
    assert!(r.int("answered_ms").is_some(), "{r:#?}");
}

#[test]
fn caller_cancels_while_the_callee_rings() {
    let dir = test_dir("caller_cancels_while_the_callee_rings");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, bridge_profile(&ports));
    let callee = uas(&dir, &ports, "uas_ring_cancel.xml");
    let run = uac(&dir, &cg, &ports, "uac_cancel.xml", "200").run();
    let callee = callee.wait();
    run.assert_ok(Some(&cg));
    callee.assert_ok(Some(&cg));
    cg.stop_ok();
    let recs = records(&dir.join("calls.db"));
    let r = assert_one_record(&recs, "cancelled", 487, "200");
    assert!(
        r.int("answered_ms").is_none(),
        "a cancelled call was never answered: {r:#?}"
    );
}

#[test]
fn over_the_call_limit_calls_get_503_with_retry_after() {
    let dir = test_dir("over_the_call_limit_calls_get_503_with_retry_after");
    let ports = PortBlock::acquire();
    let profile = ProfileBuilder::default_profile()
        .set("limits", "max_calls", 1)
        .set("limits", "retry_after", 7);
    let cg = Callgate::start_with(&dir, &ports, profile);
    let _sink = RtpSink::bind(ports.port(P_RTP));
    let first = uac(&dir, &cg, &ports, "uac_hangup_early.xml", "120").spawn();
    cg.wait_metrics(Duration::from_secs(3), "the first call to be up", |m| {
        m.get("callgate_active_calls", &[]) == Some(1.0)
    });
    let second = Sipp::uac(&dir, "uac2", "uac_busy.xml", cg.sip, "120")
        .ports(&ports, P_UAC2, P_UAC2_CTRL, P_UAC2_MEDIA)
        .key("rtp_port", &ports.port(P_RTP2).to_string())
        .run();
    second.assert_ok(Some(&cg));
    assert_eq!(
        second.log_value("retry_after").as_deref(),
        Some("7"),
        "Retry-After of the 503\n{}",
        second.explain()
    );
    let first = first.wait();
    first.assert_ok(Some(&cg));
    let m = cg.metrics();
    assert_eq!(
        m.must("callgate_sip_rejections_total", &[("code", "503")]),
        1.0,
        "{}",
        m.0
    );
    cg.stop_ok();
    let recs = records(&dir.join("calls.db"));
    assert_eq!(recs.len(), 2, "{recs:#?}");
    let busy = recs
        .iter()
        .find(|r| r.int("sip_status") == Some(503))
        .unwrap_or_else(|| panic!("no 503 record: {recs:#?}"));
    assert_eq!(busy.text("outcome"), "busy", "{busy:#?}");
    assert!(
        recs.iter().any(|r| r.text("outcome") == "abandoned"),
        "{recs:#?}"
    );
}

#[test]
fn sigterm_ends_calls_with_bye_refuses_new_ones_and_flushes_records() {
    let dir = test_dir("sigterm_ends_calls_with_bye_refuses_new_ones_and_flushes_records");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);
    let sip = cg.sip;
    let sink = RtpSink::bind(ports.port(P_RTP));
    // uac_shutdown answers callgate's BYE 400 ms late: callgate is still draining meanwhile.
    let caller = uac(&dir, &cg, &ports, "uac_shutdown.xml", "120").spawn();
    cg.wait_metrics(Duration::from_secs(3), "the call to be up", |m| {
        m.get("callgate_active_calls", &[]) == Some(1.0)
    });
    std::thread::sleep(Duration::from_secs(1));
    let t0 = std::time::Instant::now();
    cg.sigterm();
    std::thread::sleep(Duration::from_millis(150));

    // A new call while draining: 503 with Retry-After, at once.
    let raw = ports.port(P_RAW);
    let (cid, branch) = ("late-call@e2e", "z9hG4bK-e2e-late-1");
    let invite = raw_invite(raw, sip, "120", cid, branch, ports.port(P_RTP2));
    let answers = udp_request(raw, sip, invite.as_bytes(), Duration::from_secs(2));
    let last = answers.last().cloned().unwrap_or_default();
    if let Some(fin) = answers.iter().find(|a| !a.starts_with("SIP/2.0 1")) {
        let _ = udp_exchange(
            raw,
            sip,
            raw_ack(raw, sip, "120", cid, branch, fin).as_bytes(),
            Duration::from_millis(10),
        );
    }
    let stopped = cg.wait_exit(t0);
    let run = caller.wait();
    let (pkts, _) = sink.finish();

    assert!(
        last.starts_with("SIP/2.0 503 ") && header_value(&last, "Retry-After").is_some(),
        "an INVITE during the shutdown got {:?}, expected 503 with Retry-After\n--- answers:\n{}\n--- callgate stderr:\n{}",
        last.lines().next(),
        answers.join("\n----\n"),
        stopped.stderr
    );
    assert!(
        stopped.status.success(),
        "callgate exited {} after SIGTERM\n--- stderr:\n{}",
        stopped.status,
        stopped.stderr
    );
    assert!(
        stopped.took < Duration::from_secs(10),
        "shutdown took {:?}",
        stopped.took
    );
    if run.code() != Some(0) {
        panic!(
            "the caller did not get a BYE on shutdown\n{}\n--- callgate stderr:\n{}",
            run.explain(),
            stopped.stderr
        );
    }
    assert!(
        pkts.len() >= 40 && pkts.len() < 400,
        "{} RTP packets before the shutdown",
        pkts.len()
    );
    let out = format!("{}{}", stopped.stderr, stopped.stdout);
    assert!(
        out.contains("invite_to_200"),
        "no latency summary on shutdown:\n{out}"
    );

    // Both calls recorded: the one ended by the shutdown, and the one refused during it.
    let recs = records(&dir.join("calls.db"));
    assert_eq!(
        recs.len(),
        2,
        "expected the ended call and the refused one: {recs:#?}"
    );
    let (ended, refused): (Vec<_>, Vec<_>) =
        recs.into_iter().partition(|r| r.text("sip_call_id") != cid);
    let r = assert_one_record(&ended, "shutdown", 200, "120");
    assert!(r.int("answered_ms").is_some(), "{r:#?}");
    let r = assert_one_record(&refused, "shutdown", 503, "120");
    assert!(r.int("answered_ms").is_none(), "{r:#?}");
}

/// The guidance call over IPv6: the carrier on ::1, callgate listening on [::1], the SDP answer in
/// IP6 and the announcement's RTP at the caller's IPv6 media address.
#[test]
fn announcement_call_over_ipv6() {
    let dir = test_dir("announcement_call_over_ipv6");
    let ports = PortBlock::acquire();
    let frames = wav_frames(&default_guidance_wav());
    let profile = ProfileBuilder::announcement_only().write(&dir, &ports);
    let sip: std::net::SocketAddr = format!("[::1]:{}", ports.port(P_SIP)).parse().unwrap();
    let cg = Callgate::start_at(&dir, &ports, &profile, sip);
    let sink = RtpSink::bind_ip("::1".parse().unwrap(), ports.port(P_RTP));
    let run = uac(&dir, &cg, &ports, "uac_announcement.xml", "120").ipv6().run();
    std::thread::sleep(Duration::from_millis(300));
    let (pkts, _) = sink.finish();
    run.assert_ok(Some(&cg));
    let answer = run
        .received()
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("application/sdp"))
        .expect("a 200 with SDP");
    assert!(answer.contains("c=IN IP6 ::1"), "the answer's connection line is not IPv6:\n{answer}");
    let (_, pt) = answer_media(&run);
    let report = check_stream(&pkts, pt).unwrap_or_else(|e| panic!("IPv6 RTP: {e}"));
    assert_eq!(report.packets, frames);
    assert!(report.from.is_ipv6(), "RTP came from {}", report.from);
    let recs = cg.wait_records(1);
    let r = assert_one_record(&recs, "completed", 200, "120");
    assert!(r.text("source").starts_with("[::1]:"), "source in {r:#?}");
    cg.stop_ok();
}

/// On TCP a message without Content-Length cannot be framed: callgate answers 400 on the same
/// connection, closes it, and makes no call of it.
#[test]
fn unframeable_tcp_message_gets_400_on_its_connection() {
    use std::io::{Read, Write};
    let dir = test_dir("unframeable_tcp_message_gets_400_on_its_connection");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);
    let mut conn = std::net::TcpStream::connect(cg.sip).expect("connect to callgate over TCP");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let invite = format!(
        "INVITE sip:120@{sip} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKtcp1\r\n\
         From: <sip:0311112222@127.0.0.1>;tag=t1\r\nTo: <sip:120@{sip}>\r\nCall-ID: tcp-noframe\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n",
        sip = cg.sip
    );
    conn.write_all(invite.as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("SIP/2.0 400 "), "expected a 400 on the connection, got {got:?}");
    assert!(got.contains("Call-ID: tcp-noframe"), "{got}");
    let m = cg.metrics();
    assert_eq!(m.get("callgate_active_calls", &[]), Some(0.0), "{}", m.0);
    cg.stop_ok();
    assert!(records(&dir.join("calls.db")).is_empty(), "no call was made of it");
}

/// A caller presses 1 during the guidance (SIPp replays its RFC 4733 capture): callgate reads the
/// caller's RTP, decodes exactly one digit, and the call's record says so.
#[test]
fn a_key_pressed_during_the_guidance_is_in_the_record() {
    let dir = test_dir("a_key_pressed_during_the_guidance_is_in_the_record");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);
    let run = uac(&dir, &cg, &ports, "uac_dtmf.xml", "120").run();
    run.assert_ok(Some(&cg));
    let m = cg.metrics();
    assert_eq!(m.get("callgate_dtmf_digits_total", &[]), Some(1.0), "{}", m.0);
    let received = m.must("callgate_rtp_packets_received_total", &[]);
    assert!(received >= 5.0, "callgate read {received} RTP packets from the caller\n{}", m.0);
    let recs = cg.wait_records(1);
    let r = assert_one_record(&recs, "abandoned", 200, "120");
    assert_eq!(r.text("digits"), "1", "{r:#?}\n--- callgate:\n{}", cg.stderr());
    cg.stop_ok();
}

/// The same key press sent as SIP INFO (application/dtmf-relay) is answered 200 and recorded.
#[test]
fn a_key_pressed_by_sip_info_is_in_the_record() {
    let dir = test_dir("a_key_pressed_by_sip_info_is_in_the_record");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);
    let run = uac(&dir, &cg, &ports, "uac_info_dtmf.xml", "120").run();
    run.assert_ok(Some(&cg));
    let recs = cg.wait_records(1);
    let r = assert_one_record(&recs, "abandoned", 200, "120");
    assert_eq!(r.text("digits"), "5", "{r:#?}");
    cg.stop_ok();
}
