//! Profiles: the default profile, fixtures under tests/data/profiles/, and one test per validation
//! error, each asserting the exact file and line the error names.
//!
//! Bad profiles are made by copying the good `multi` fixture into a scratch directory and replacing
//! one file with the text in the test, so the line numbers asserted are visible right here.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use callgate::config::hash::{ha1_md5, ha1_sha256, to_hex};
use callgate::config::{
    check, normalise_number, CivilDate, Codec, ConfigError, DateError, HolidayDate, IpNet, MenuOptionCfg, NumberError,
    OnMaxWaitCfg, PortRangeError, Problem, Profile, ScheduleCfg, SkillReqCfg, Strategy, TimeRange, TimeRangeError,
};
use callgate::sip::Transport;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/data/profiles").join(name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A fresh copy of the `multi` fixture for one test case.
fn scratch(case: &str) -> PathBuf {
    scratch_of("multi", case)
}

/// A fresh copy of fixture `name` for one test case.
fn scratch_of(name: &str, case: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_profiles").join(case);
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&fixture(name), &dir);
    dir
}

fn write(dir: &Path, rel: &str, text: &str) {
    std::fs::write(dir.join(rel), text).unwrap();
}

/// Loads a profile that must fail, checks file and line, and returns the problem.
#[track_caller]
fn fails_at(dir: &Path, rel: &str, line: usize) -> Problem {
    let err = match Profile::load(dir) {
        Ok(_) => panic!("profile {} loaded but should not have", dir.display()),
        Err(e) => e,
    };
    assert_eq!(err.file(), dir.join(rel), "wrong file in: {err}");
    assert_eq!(err.line(), Some(line), "wrong line in: {err}");
    let text = err.to_string();
    let prefix = format!("{}:{line}: ", dir.join(rel).display());
    assert!(text.starts_with(&prefix), "{text:?} should start with {prefix:?}");
    err.problem().cloned().unwrap()
}

/// One case: copy `multi`, replace `rel` with `text`, expect an error at `rel:line`.
#[track_caller]
fn case(name: &str, rel: &str, text: &str, line: usize) -> Problem {
    let dir = scratch(name);
    write(&dir, rel, text);
    fails_at(&dir, rel, line)
}

/// One case on the `acd` fixture (which has menu, music and closed prompts in its audio dir).
#[track_caller]
fn acd_case(name: &str, rel: &str, text: &str, line: usize) -> Problem {
    let dir = scratch_of("acd", name);
    write(&dir, rel, text);
    fails_at(&dir, rel, line)
}

// ---------------------------------------------------------------------------------------------------
// Good profiles

#[test]
fn default_profile_loads_with_expected_values() {
    let dir = root().join("sip-profiles/default");
    let p = Profile::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.dir, dir);
    assert_eq!(p.listen.sip, "127.0.0.1:5060".parse().unwrap());
    assert_eq!(p.listen.http, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(p.listen.transports, vec![Transport::Udp, Transport::Tcp]);
    assert_eq!(p.media.address, ip("127.0.0.1"));
    assert_eq!(p.media.rtp_ports, (20000, 29999));
    assert_eq!(p.media.ptime_ms, 20);
    assert_eq!(p.records.database, PathBuf::from("var/callgate.db"));
    assert_eq!(p.limits.max_calls, 1000);
    assert_eq!(p.limits.retry_after_s, 5);
    assert_eq!(p.limits.max_message_bytes, 65535);
    assert_eq!((p.sip.t1_ms, p.sip.t2_ms, p.sip.t4_ms), (500, 4000, 5000));
    assert_eq!(p.sip.t1(), Duration::from_millis(500));
    assert!(p.sip.user_agent.starts_with("callgate/"), "{}", p.sip.user_agent);
    assert_eq!(p.audio_dir, dir.join("../../audio"));

    assert_eq!(p.trunks.len(), 1);
    let t = &p.trunks[0];
    assert_eq!(t.name, "demo-carrier");
    assert_eq!(t.tenant, None);
    assert_eq!(t.networks, vec!["127.0.0.0/8".parse::<IpNet>().unwrap(), "::1/128".parse().unwrap()]);
    assert_eq!(t.codecs, vec![Codec::Pcmu, Codec::Pcma]);
    assert_eq!(t.numbers, vec!["120".to_string(), "1200".to_string()]);

    assert_eq!(p.tenants.len(), 1);
    let demo = &p.tenants[0];
    assert_eq!(demo.id, "demo");
    assert_eq!(demo.name, "Demo 120 civil-service centre");
    assert_eq!(demo.services.len(), 2);
    let s = &demo.services[0];
    let m = &demo.services[1];
    assert_eq!((m.number.as_str(), m.menu.as_deref(), m.queue.as_deref()), ("1200", Some("language"), Some("general")));
    assert_eq!(s.tenant, "demo");
    assert_eq!(s.number, "120");
    assert_eq!(s.guidance, vec!["guidance-ko".to_string()]);
    assert_eq!(s.queue.as_deref(), Some("general"));
    assert_eq!(s.bridge_to, None);
    assert!(p.prompt_names().contains(&"guidance-ko".to_string()));
    assert!(p.prompt_path("guidance-ko").is_file());

    // The additions of the ACD issue: media inactivity, recordings, and the demo centre.
    assert_eq!(p.media.inactivity_s, 60);
    assert_eq!(p.media.inactivity(), Some(Duration::from_secs(60)));
    assert_eq!(p.records.recordings_dir, PathBuf::from("var/recordings"), "relative to the database's directory");
    assert_eq!(p.records.recording_retention_days, 90);
    assert_eq!(p.recordings_dir_for(demo), PathBuf::from("var/recordings/demo"));
    assert_eq!(demo.realm, "callgate");
    assert_eq!(demo.utc_offset_min, 540);
    assert_eq!(demo.recording_retention_days, 90);
    assert!(demo.schedules.is_empty(), "the demo is open 24/7");
    assert_eq!(demo.menus.len(), 1);
    let keys: Vec<char> = demo.menus[0].options.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ['1', '2']);
    assert_eq!(demo.queues[0].callback_key, Some('*'));
    assert!(!s.early_media && s.menu.is_none() && s.schedule.is_none() && s.closed.is_empty());
    assert!(!s.closed_callback && !s.record);
    assert_eq!(s.priority, 0);
    assert!(demo.is_open(s, 0) && demo.is_open(s, 1_759_100_340_000), "no schedule: always open");
    assert_eq!(demo.next_change(s, 0), None);

    assert_eq!(demo.queues.len(), 1);
    let q = demo.queue("general").unwrap();
    assert_eq!(q.tenant, "demo");
    assert_eq!(q.strategy, Strategy::LongestIdle);
    assert_eq!(q.ring_timeout, Duration::from_secs(15));
    assert_eq!(q.wrapup, Duration::from_secs(10));
    // Defaults of the contract.
    assert!(q.skills.is_empty());
    assert_eq!((q.max_len, q.max_wait, &q.on_max_wait), (None, None, &OnMaxWaitCfg::Hangup));
    assert!(q.join_empty && !q.leave_empty && q.announce_position);
    assert_eq!(q.max_misses, 2);
    assert_eq!(q.sl_threshold, Duration::from_secs(20));
    assert_eq!(q.short_abandon, Duration::from_secs(5));
    assert_eq!(q.announce_every, Some(Duration::from_secs(30)));
    assert_eq!(q.callback_key, Some('*'), "press * to be called back");
    let music_file = p.prompt_path("music").is_file();
    assert_eq!(q.music, if music_file { vec!["music".to_string()] } else { vec![] }, "music.wav exists: {music_file}");

    let ids: Vec<&str> = demo.agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010"]);
    for a in &demo.agents {
        assert_eq!(a.tenant, "demo");
        assert_eq!(a.extension, a.id);
        assert_eq!(a.skills, vec![("en".to_string(), 5), ("ko".to_string(), 10)]);
        assert_eq!(a.queues, vec![("general".to_string(), 0)]);
        assert!(a.login_on_register);
    }
    // Password demo1001, realm callgate, user 1001:
    //   printf '1001:callgate:demo1001' | md5sum     -> 9bf27cb60eaf5577521b9ee4a59bf9f2
    //   printf '1001:callgate:demo1001' | sha256sum  -> abc5b0be...
    let a = demo.agent_by_extension("1001").unwrap();
    assert_eq!(to_hex(&a.ha1_md5), "9bf27cb60eaf5577521b9ee4a59bf9f2");
    assert_eq!(to_hex(&a.ha1_sha256), "abc5b0bedc62f3619beed8b508b4112ade36e8585753ed13b11ee2a8ef7d2e4c");
    assert_ne!(demo.agent("1002").unwrap().ha1_md5, a.ha1_md5, "each agent has its own password");
    assert_eq!(p.agents().count(), 10);

    // Calls from loopback (v4, v4-mapped, v6) to 120 reach the demo service; others do not.
    for src in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
        let t = p.trunk_for(ip(src)).unwrap_or_else(|| panic!("no trunk for {src}"));
        assert_eq!(p.service_for(t, "120").map(|s| s.name.as_str()), Some("Civil-service enquiries"));
    }
    assert!(p.trunk_for(ip("192.0.2.1")).is_none());
    assert!(p.trunk_for(ip("::2")).is_none());
    assert!(p.service_for(t, "121").is_none());
}

#[test]
fn check_summarises_the_default_profile() {
    let s = check(&root().join("sip-profiles/default")).unwrap_or_else(|e| panic!("{e}"));
    // guidance-ko, the queue's music, and the language menu's prompt, invalid-key and timeout notices.
    assert_eq!((s.tenants, s.services, s.trunks, s.prompts), (1, 2, 1, 5));
    let text = s.to_string();
    assert!(text.contains("1 tenant(s), 2 service(s), 1 trunk(s)"), "{text}");
    assert!(text.contains("1200 Civil-service enquiries, language menu: guidance guidance-ko, queue general, menu language"), "{text}");
    assert!(text.contains("demo-carrier"), "{text}");
    assert!(text.contains("120 Civil-service enquiries: guidance guidance-ko, queue general, open 24/7"), "{text}");
    assert!(
        text.contains("demo (Demo 120 civil-service centre): realm callgate, UTC+09:00, 1 queue(s), 10 agent(s)"),
        "{text}"
    );
    assert!(text.contains("queue general: longest_idle, ring 15 s, wrap-up 10 s, 10 agent(s)"), "{text}");
    assert!(text.contains("inactivity ends a call after 60 s without RTP"), "{text}");
    assert_eq!(Profile::check(&root().join("sip-profiles/default")).unwrap(), s);
}

#[test]
fn minimal_profile_gets_defaults() {
    let p = Profile::load(&fixture("minimal")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.listen.sip, "127.0.0.1:5060".parse().unwrap());
    assert_eq!(p.listen.http, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(p.listen.transports, vec![Transport::Udp, Transport::Tcp]);
    assert_eq!(p.media.address, ip("127.0.0.1"), "media address defaults to the SIP address");
    assert_eq!(p.media.rtp_ports, (20000, 29999));
    assert_eq!(p.media.ptime_ms, 20);
    assert_eq!(p.records.database, PathBuf::from("var/callgate.db"));
    assert_eq!(p.limits.max_calls, 1000);
    assert_eq!(p.limits.retry_after_s, 5);
    assert_eq!(p.limits.max_message_bytes, 65535);
    assert_eq!((p.sip.t1_ms, p.sip.t2_ms, p.sip.t4_ms), (500, 4000, 5000));
    assert_eq!(p.sip.user_agent, format!("callgate/{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(p.audio_dir, fixture("minimal").join("audio"));
    let t = &p.trunks[0];
    assert_eq!(t.networks, vec!["127.0.0.1/32".parse::<IpNet>().unwrap()]);
    assert_eq!(t.codecs, vec![Codec::Pcmu, Codec::Pcma], "codecs default to PCMU, PCMA");
    assert!(t.numbers.is_empty());
    let s = &p.tenants[0].services[0];
    assert!(s.guidance.is_empty() && s.queue.is_none() && s.bridge_to.is_none());
    assert!(p.prompt_names().is_empty());
    // Defaults of the later additions.
    assert_eq!(p.media.inactivity_s, 60);
    assert_eq!(p.records.recordings_dir, PathBuf::from("var/recordings"));
    assert_eq!(p.records.recording_retention_days, 90);
    let t = &p.tenants[0];
    assert_eq!((t.realm.as_str(), t.utc_offset_min), ("callgate", 540));
    assert!(t.queues.is_empty() && t.agents.is_empty() && t.menus.is_empty() && t.schedules.is_empty());
    assert_eq!((t.recordings_dir.as_ref(), t.recording_retention_days), (None, 90));
    assert!(!s.early_media && !s.record && !s.closed_callback && s.priority == 0);
}

#[test]
fn multi_profile_loads() {
    let dir = fixture("multi");
    let p = Profile::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.listen.sip, "[::1]:5062".parse().unwrap());
    assert_eq!(p.listen.transports, vec![Transport::Udp]);
    assert_eq!(p.media.address, ip("::1"));
    assert_eq!(p.media.rtp_ports, (30000, 30099));
    assert_eq!(p.limits.max_calls, 50);
    assert_eq!(p.limits.retry_after_s, 2);
    assert_eq!(p.limits.max_message_bytes, 4096);
    assert_eq!((p.sip.t1_ms, p.sip.t2_ms, p.sip.t4_ms), (100, 800, 1000));
    assert_eq!(p.sip.user_agent, "callgate-test");
    assert_eq!(p.audio_dir, dir.join("audio"));
    // Tenants in file-name order; README.md in tenants/ is not a tenant.
    let ids: Vec<&str> = p.tenants.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["goyang", "seoul"]);
    let seoul = p.tenant("seoul").unwrap();
    assert_eq!(seoul.services[0].number, "02120");
    assert_eq!(seoul.services[1].number, "+82221330001");
    assert_eq!(seoul.services[1].bridge_to.as_deref(), Some("sip:water@10.1.5.5:5060"));
    let names: Vec<&str> = p.trunks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["kt-seoul", "kt-goyang", "shared"]);
    assert_eq!(p.trunks[0].codecs, vec![Codec::Pcma]);
    assert_eq!(p.trunks[1].numbers, vec!["0319099000".to_string(), "120".to_string()]);
    assert_eq!(p.trunks[2].codecs, vec![Codec::Pcmu, Codec::Pcma]);
    // A prefix written inside ::ffff:0:0/96 is the IPv4 prefix it means.
    assert_eq!(p.trunks[2].networks[2], "192.0.2.0/24".parse::<IpNet>().unwrap());
    assert_eq!(p.prompt_names(), vec!["guidance-ko".to_string(), "guidance-en".to_string()]);
}

#[test]
fn trunk_for_picks_the_first_matching_trunk() {
    let p = Profile::load(&fixture("multi")).unwrap();
    let name = |src: &str| p.trunk_for(ip(src)).map(|t| t.name.clone());
    assert_eq!(name("10.1.2.3").as_deref(), Some("kt-seoul"));
    assert_eq!(name("10.2.0.1").as_deref(), Some("kt-goyang"));
    assert_eq!(name("10.3.0.1").as_deref(), Some("shared"), "10.0.0.0/8 catches the rest");
    assert_eq!(name("192.0.2.55").as_deref(), Some("shared"));
    assert_eq!(name("192.0.3.1"), None);
    // IPv6
    assert_eq!(name("2001:db8:2::7").as_deref(), Some("kt-goyang"));
    assert_eq!(name("2001:db8:3::7").as_deref(), Some("shared"));
    assert_eq!(name("2001:db9::1"), None);
    assert_eq!(name("::1"), None);
    // IPv4 callers on a dual-stack socket
    assert_eq!(name("::ffff:10.1.2.3").as_deref(), Some("kt-seoul"));
    assert_eq!(name("::ffff:10.2.2.3").as_deref(), Some("kt-goyang"));
    assert_eq!(name("::ffff:192.0.2.1").as_deref(), Some("shared"));
    assert_eq!(name("::ffff:172.16.0.1"), None);
}

#[test]
fn service_for_respects_tenant_and_numbers() {
    let p = Profile::load(&fixture("multi")).unwrap();
    let trunk = |name: &str| p.trunks.iter().find(|t| t.name == name).unwrap();
    let svc = |t: &str, n: &str| p.service_for(trunk(t), n).map(|s| (s.tenant.clone(), s.name.clone()));
    let owned = |a: &str, b: &str| Some((a.to_string(), b.to_string()));

    // kt-seoul: tenant seoul only, any of its numbers.
    assert_eq!(svc("kt-seoul", "02120"), owned("seoul", "Dasan"));
    assert_eq!(svc("kt-seoul", "02-120"), owned("seoul", "Dasan"), "visual separators are ignored");
    assert_eq!(svc("kt-seoul", "(02) 120"), owned("seoul", "Dasan"));
    assert_eq!(svc("kt-seoul", "+82-2-2133-0001"), owned("seoul", "Transfer to the water department"));
    assert_eq!(svc("kt-seoul", "120"), None, "120 belongs to goyang: not reachable on a seoul trunk");
    assert_eq!(svc("kt-seoul", "0319099000"), None);

    // kt-goyang: tenant goyang, and only the numbers it lists.
    assert_eq!(svc("kt-goyang", "031-909-9000"), owned("goyang", "Goyang representative number"));
    assert_eq!(svc("kt-goyang", "031.909.9000"), owned("goyang", "Goyang representative number"));
    assert_eq!(svc("kt-goyang", "120"), owned("goyang", "Goyang 120"));
    assert_eq!(svc("kt-goyang", "02120"), None, "another tenant's number");
    assert_eq!(svc("kt-goyang", "0319099001"), None);

    // shared: no tenant, no numbers list: every tenant's services.
    assert_eq!(svc("shared", "120"), owned("goyang", "Goyang 120"));
    assert_eq!(svc("shared", "02-120"), owned("seoul", "Dasan"));
    assert_eq!(svc("shared", "999"), None);
    assert_eq!(svc("shared", ""), None);
}

#[test]
fn service_for_with_numbers_list_but_no_tenant() {
    let dir = scratch("numbers_only");
    write(
        &dir,
        "trunks.toml",
        r#"[[trunk]]
name = "only-dasan"
networks = ["10.0.0.0/8"]
numbers = ["02-120"]
"#,
    );
    let p = Profile::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let t = p.trunk_for(ip("10.9.9.9")).unwrap();
    assert_eq!(p.service_for(t, "02120").map(|s| s.name.as_str()), Some("Dasan"));
    assert_eq!(p.service_for(t, "120"), None, "not in the trunk's numbers");
}

#[test]
fn normalise_number_strips_visual_separators() {
    assert_eq!(normalise_number("031-909-9000"), "0319099000");
    assert_eq!(normalise_number("(031) 909.9000"), "0319099000");
    assert_eq!(normalise_number("+82-31-909-9000"), "+82319099000");
    assert_eq!(normalise_number("120"), "120");
    assert_eq!(normalise_number("*120#"), "*120#");
}

// ---------------------------------------------------------------------------------------------------
// Validation: each names the file and the line

#[test]
fn syntax_error() {
    let p = case(
        "syntax",
        "trunks.toml",
        r#"[[trunk]]
name = "kt-seoul"
tenant = "seoul"
networks = ["10.1.0.0/16"
codecs = ["PCMA"]
"#,
        5,
    );
    assert!(matches!(p, Problem::Syntax { .. }), "{p:?}");

    let p = case("syntax2", "tenants/seoul.toml", "[tenant]\nid = \"seoul\nname = \"x\"\n", 2);
    assert!(matches!(p, Problem::Syntax { .. }), "{p:?}");
}

#[test]
fn wrong_type_is_a_syntax_error_at_its_line() {
    let p = case("wrong_type", "callgate.toml", "[limits]\n\nmax_calls = \"many\"\n", 3);
    assert!(matches!(p, Problem::Syntax { .. }), "{p:?}");
    let p = case("negative", "callgate.toml", "[media]\nptime = -20\n", 2);
    assert!(matches!(p, Problem::Syntax { .. }), "{p:?}");
}

#[test]
fn unknown_keys() {
    let p = case("unknown_edge", "callgate.toml", "[listen]\nsip = \"127.0.0.1:5060\"\nsip_port = 5060\n", 3);
    assert!(
        matches!(&p, Problem::UnknownKey { key, expected } if key == "sip_port" && expected.contains(&"sip".to_string())),
        "{p:?}"
    );

    let p = case("unknown_table", "callgate.toml", "# x\n[lisen]\nsip = \"127.0.0.1:5060\"\n", 2);
    assert!(matches!(&p, Problem::UnknownKey { key, .. } if key == "lisen"), "{p:?}");

    let p = case(
        "unknown_trunk",
        "trunks.toml",
        r#"[[trunk]]
name = "shared"
networks = ["10.0.0.0/8"]
codec = ["PCMU"]
"#,
        4,
    );
    assert!(matches!(&p, Problem::UnknownKey { key, .. } if key == "codec"), "{p:?}");

    let p = case(
        "unknown_service",
        "tenants/seoul.toml",
        r#"[tenant]
id = "seoul"
name = "Seoul"

[[service]]
number = "02-120"
name = "Dasan"
gudiance = ["guidance-ko"]
"#,
        8,
    );
    assert!(matches!(&p, Problem::UnknownKey { key, .. } if key == "gudiance"), "{p:?}");
    assert!(p.to_string().starts_with("unknown key `gudiance` (expected one of: number, name, guidance"), "{p}");

    // A misspelt table is an unknown key of the file, and the message lists the tables there are.
    let p = case(
        "unknown_table_tenant",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\n\n[[agents]]\nid = \"kim\"\n",
        5,
    );
    assert!(
        matches!(&p, Problem::UnknownKey { key, expected } if key == "agents" && expected.contains(&"agent".to_string()) && expected.contains(&"agent_range".to_string())),
        "{p:?}"
    );
    // Unknown keys inside the new tables too.
    let p = case(
        "unknown_queue_key",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\n[[queue]]\nname = \"dasan\"\nwrap_up = 10\n",
        6,
    );
    assert!(
        matches!(&p, Problem::UnknownKey { key, expected } if key == "wrap_up" && expected.contains(&"wrapup".to_string())),
        "{p:?}"
    );
}

#[test]
fn missing_required_key() {
    let p = case("missing_networks", "trunks.toml", "# c\n\n[[trunk]]\nname = \"x\"\n", 3);
    assert_eq!(p, Problem::MissingKey { key: "networks".into() });
}

#[test]
fn bad_socket_addresses() {
    let p = case("sock_noport", "callgate.toml", "[listen]\nsip = \"127.0.0.1\"\n", 2);
    assert_eq!(p, Problem::BadSocketAddr { key: "listen.sip", value: "127.0.0.1".into() });
    let p = case("sock_v6", "callgate.toml", "[listen]\nsip = \"127.0.0.1:5060\"\nhttp = \"::1:8080\"\n", 3);
    assert_eq!(p, Problem::BadSocketAddr { key: "listen.http", value: "::1:8080".into() });
    let p = case("sock_port", "callgate.toml", "[listen]\n\n\nsip = \"127.0.0.1:65536\"\n", 4);
    assert!(matches!(p, Problem::BadSocketAddr { .. }), "{p:?}");
    let p = case("media_ip", "callgate.toml", "[media]\naddress = \"localhost\"\n", 2);
    assert_eq!(p, Problem::BadIpAddr { key: "media.address", value: "localhost".into() });
}

#[test]
fn wildcard_sip_needs_a_media_address() {
    let p = case("wildcard", "callgate.toml", "[listen]\nsip = \"0.0.0.0:5060\"\n", 2);
    assert!(matches!(p, Problem::MediaAddressRequired { .. }), "{p:?}");
    let p = case("wildcard_media", "callgate.toml", "[media]\naddress = \"::\"\n", 2);
    assert!(matches!(p, Problem::WildcardMediaAddress { .. }), "{p:?}");
    // With an explicit media address a wildcard SIP address is fine.
    let dir = scratch("wildcard_ok");
    write(
        &dir,
        "callgate.toml",
        "audio_dir = \"audio\"\n[listen]\nsip = \"0.0.0.0:5060\"\n[media]\naddress = \"127.0.0.1\"\n",
    );
    let p = Profile::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.media.address, ip("127.0.0.1"));
}

#[test]
fn listening_addresses_must_not_clash() {
    let p = case("http_is_sip", "callgate.toml", "[listen]\nsip = \"127.0.0.1:5070\"\nhttp = \"127.0.0.1:5070\"\n", 3);
    assert!(matches!(p, Problem::HttpIsSip { .. }), "{p:?}");
    let p = case(
        "rtp_holds_sip",
        "callgate.toml",
        "[listen]\nsip = \"127.0.0.1:5060\"\n[media]\nrtp_ports = \"5000-6000\"\n",
        4,
    );
    assert!(matches!(p, Problem::RtpPortsHoldSip { lo: 5000, hi: 6000, .. }), "{p:?}");
}

#[test]
fn bad_transports() {
    let p = case("transport", "callgate.toml", "[listen]\ntransports = [\"udp\",\n  \"sctp\"]\n", 3);
    assert_eq!(p, Problem::UnknownTransport { value: "sctp".into() });
    let p = case("no_transport", "callgate.toml", "[listen]\ntransports = []\n", 2);
    assert_eq!(p, Problem::NoTransports);
}

#[test]
fn bad_cidrs() {
    // The example of the issue, in full.
    let dir = scratch("cidr");
    write(
        &dir,
        "trunks.toml",
        r#"# Carriers.

[[trunk]]
name = "kt"
networks = [
  "10.1.0.0/16",
  "10.0.0.300/8",
]
"#,
    );
    let p = fails_at(&dir, "trunks.toml", 7);
    let err = Profile::load(&dir).unwrap_err().to_string();
    let want =
        format!("{}:7: trunk \"kt\": network \"10.0.0.300/8\" is not an IP prefix", dir.join("trunks.toml").display());
    assert!(err.starts_with(&want), "{err:?} should start with {want:?}");
    assert!(matches!(p, Problem::BadNetwork { .. }), "{p:?}");

    for (name, net) in [
        ("cidr_len", "10.0.0.0/33"),
        ("cidr_host", "10.1.0.0/8"),
        ("cidr_v6", "2001:db8::/200"),
        ("cidr_word", "carrier"),
    ] {
        let p = case(name, "trunks.toml", &format!("[[trunk]]\nname = \"kt\"\nnetworks = [\"{net}\"]\n"), 3);
        assert!(matches!(&p, Problem::BadNetwork { trunk, value, .. } if trunk == "kt" && value == net), "{p:?}");
    }
}

#[test]
fn empty_networks() {
    let p = case("no_networks", "trunks.toml", "[[trunk]]\nname = \"kt\"\n\nnetworks = []\n", 4);
    assert_eq!(p, Problem::EmptyNetworks { trunk: "kt".into() });
}

#[test]
fn bad_port_ranges() {
    let p = case("ports_reversed", "callgate.toml", "[media]\nrtp_ports = \"30000-20000\"\n", 2);
    assert_eq!(
        p,
        Problem::BadPortRange { value: "30000-20000".into(), why: PortRangeError::Reversed { lo: 30000, hi: 20000 } }
    );
    let p = case("ports_single", "callgate.toml", "# x\n[media]\nrtp_ports = \"20000\"\n", 3);
    assert!(matches!(p, Problem::BadPortRange { why: PortRangeError::Syntax, .. }), "{p:?}");
    let p = case("ports_big", "callgate.toml", "[media]\nrtp_ports = \"60000-70000\"\n", 2);
    assert!(matches!(p, Problem::BadPortRange { why: PortRangeError::BadPort { .. }, .. }), "{p:?}");
    let p = case("ports_zero", "callgate.toml", "[media]\nrtp_ports = \"0-100\"\n", 2);
    assert!(matches!(p, Problem::BadPortRange { why: PortRangeError::BadPort { .. }, .. }), "{p:?}");
}

#[test]
fn out_of_range_values() {
    let p = case("ptime", "callgate.toml", "[media]\nptime = 25\n", 2);
    assert!(matches!(p, Problem::BadPtime { value: 25, .. }), "{p:?}");
    let p = case("max_calls", "callgate.toml", "[limits]\nmax_calls = 0\n", 2);
    assert!(matches!(p, Problem::OutOfRange { key: "limits.max_calls", value: 0, .. }), "{p:?}");
    let p = case("msg_bytes", "callgate.toml", "[limits]\nmax_message_bytes = 100\n", 2);
    assert!(matches!(p, Problem::OutOfRange { key: "limits.max_message_bytes", .. }), "{p:?}");
    let p = case("t2_t1", "callgate.toml", "[sip]\nt1 = 500\nt2 = 400\n", 3);
    assert_eq!(p, Problem::T2BelowT1 { t1: 500, t2: 400 });
    let p = case("ua", "callgate.toml", "[sip]\nuser_agent = \"x\\r\\nEvil: 1\"\n", 2);
    assert!(matches!(p, Problem::BadText { key: "sip.user_agent", .. }), "{p:?}");
}

#[test]
fn unknown_codec() {
    let p = case(
        "codec",
        "trunks.toml",
        "[[trunk]]\nname = \"kt\"\nnetworks = [\"10.0.0.0/8\"]\ncodecs = [\n  \"PCMU\",\n  \"G729\",\n]\n",
        6,
    );
    assert_eq!(p, Problem::UnknownCodec { trunk: "kt".into(), value: "G729".into() });
    let p = case(
        "codec_dup",
        "trunks.toml",
        "[[trunk]]\nname = \"kt\"\nnetworks = [\"10.0.0.0/8\"]\ncodecs = [\"PCMU\", \"pcmu\"]\n",
        4,
    );
    assert_eq!(p, Problem::DuplicateCodec { trunk: "kt".into(), codec: Codec::Pcmu });
    let p =
        case("codec_none", "trunks.toml", "[[trunk]]\nname = \"kt\"\nnetworks = [\"10.0.0.0/8\"]\ncodecs = []\n", 4);
    assert_eq!(p, Problem::NoCodecs { trunk: "kt".into() });
}

#[test]
fn duplicate_trunk_names() {
    let p = case(
        "dup_trunk",
        "trunks.toml",
        r#"[[trunk]]
name = "kt"
networks = ["10.1.0.0/16"]

[[trunk]]
name = "kt"
networks = ["10.2.0.0/16"]
"#,
        6,
    );
    assert_eq!(p, Problem::DuplicateTrunk { name: "kt".into(), first_line: 2 });
}

#[test]
fn service_number_used_twice() {
    // Across tenants: goyang.toml is read first and has 031-909-9000; seoul.toml writes it differently.
    let dir = scratch("dup_number");
    write(
        &dir,
        "tenants/seoul.toml",
        r#"[tenant]
id = "seoul"
name = "Seoul"

[[service]]
number = "02-120"
name = "Dasan"

[[service]]
number = "(031) 909 9000"
name = "Not ours"
"#,
    );
    let p = fails_at(&dir, "tenants/seoul.toml", 10);
    assert_eq!(
        p,
        Problem::DuplicateNumber {
            number: "0319099000".into(),
            tenant: "goyang".into(),
            file: dir.join("tenants/goyang.toml"),
            line: 6,
        }
    );

    // Within one tenant.
    let p = case(
        "dup_number_same",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\n[[service]]\nnumber = \"02120\"\nname = \"a\"\n[[service]]\nnumber = \"02-120\"\nname = \"b\"\n",
        8,
    );
    assert!(matches!(&p, Problem::DuplicateNumber { tenant, line: 5, .. } if tenant == "seoul"), "{p:?}");
}

#[test]
fn trunk_tenant_must_exist() {
    let p = case(
        "no_such_tenant",
        "trunks.toml",
        "[[trunk]]\nname = \"kt\"\ntenant = \"busan\"\nnetworks = [\"10.0.0.0/8\"]\n",
        3,
    );
    assert_eq!(
        p,
        Problem::UnknownTenant {
            trunk: "kt".into(),
            tenant: "busan".into(),
            known: vec!["goyang".into(), "seoul".into()]
        }
    );
}

#[test]
fn trunk_numbers_must_route() {
    let p = case(
        "unrouted",
        "trunks.toml",
        "[[trunk]]\nname = \"kt\"\ntenant = \"seoul\"\nnetworks = [\"10.0.0.0/8\"]\nnumbers = [\"02-120\",\n  \"120\"]\n",
        6,
    );
    assert_eq!(p, Problem::UnroutedNumber { trunk: "kt".into(), number: "120".into(), tenant: Some("seoul".into()) });
    let p = case(
        "unrouted_any",
        "trunks.toml",
        "[[trunk]]\nname = \"kt\"\nnetworks = [\"10.0.0.0/8\"]\nnumbers = [\"119\"]\n",
        4,
    );
    assert_eq!(p, Problem::UnroutedNumber { trunk: "kt".into(), number: "119".into(), tenant: None });
}

#[test]
fn shadowed_trunk() {
    let p = case(
        "shadowed",
        "trunks.toml",
        r#"[[trunk]]
name = "wide"
networks = ["10.0.0.0/8", "2001:db8::/32"]

[[trunk]]
name = "narrow"
networks = ["10.1.0.0/16", "2001:db8:1::/48"]
"#,
        6,
    );
    assert!(matches!(&p, Problem::ShadowedTrunk { trunk, by, .. } if trunk == "narrow" && by == "wide"), "{p:?}");
}

#[test]
fn missing_guidance_prompt() {
    let p = case(
        "no_prompt",
        "tenants/goyang.toml",
        r#"[tenant]
id = "goyang"
name = "Goyang"

[[service]]
number = "031-909-9000"
name = "Goyang representative number"
guidance = ["guidance-ko",
            "guidance-zh"]
"#,
        9,
    );
    assert!(
        matches!(&p, Problem::MissingPrompt { prompt, path, .. } if prompt == "guidance-zh" && path.ends_with("audio/guidance-zh.wav")),
        "{p:?}"
    );
    let p = case(
        "prompt_ext",
        "tenants/goyang.toml",
        "[tenant]\nid = \"goyang\"\nname = \"G\"\n[[service]]\nnumber = \"1\"\nname = \"x\"\nguidance = [\"guidance-ko.wav\"]\n",
        7,
    );
    assert!(matches!(p, Problem::PromptWithExtension { .. }), "{p:?}");
    let p = case(
        "prompt_path",
        "tenants/goyang.toml",
        "[tenant]\nid = \"goyang\"\nname = \"G\"\n[[service]]\nnumber = \"1\"\nname = \"x\"\nguidance = [\"../secret\"]\n",
        7,
    );
    assert!(matches!(p, Problem::BadName { what: "prompt", .. }), "{p:?}");
}

#[test]
fn bad_number_characters() {
    let p = case(
        "bad_service_number",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\n\n[[service]]\nname = \"Dasan\"\nnumber = \"02-120a\"\n",
        7,
    );
    assert_eq!(
        p,
        Problem::BadNumber {
            owner: "service \"Dasan\"".into(),
            value: "02-120a".into(),
            why: NumberError::BadChar { ch: 'a' }
        }
    );
    let p = case(
        "bad_trunk_number",
        "trunks.toml",
        "[[trunk]]\nname = \"kt\"\nnetworks = [\"10.0.0.0/8\"]\nnumbers = [\"12O\"]\n",
        4,
    );
    assert!(
        matches!(&p, Problem::BadNumber { owner, why: NumberError::BadChar { ch: 'O' }, .. } if owner == "trunk \"kt\""),
        "{p:?}"
    );
    let p = case(
        "plus_inside",
        "trunks.toml",
        "[[trunk]]\nname = \"kt\"\nnetworks = [\"10.0.0.0/8\"]\nnumbers = [\"82+2\"]\n",
        4,
    );
    assert!(matches!(p, Problem::BadNumber { why: NumberError::MisplacedPlus, .. }), "{p:?}");
    let p = case(
        "empty_number",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\n[[service]]\nname = \"Dasan\"\nnumber = \" - \"\n",
        6,
    );
    assert!(matches!(p, Problem::BadNumber { why: NumberError::Empty, .. }), "{p:?}");
}

#[test]
fn duplicate_tenant_id() {
    let dir = scratch("dup_tenant");
    write(
        &dir,
        "tenants/zz-copy.toml",
        "# A copy of seoul under another file name.\n[tenant]\nid = \"seoul\"\nname = \"Seoul again\"\n",
    );
    let p = fails_at(&dir, "tenants/zz-copy.toml", 3);
    assert_eq!(p, Problem::DuplicateTenant { id: "seoul".into(), file: dir.join("tenants/seoul.toml"), line: 2 });
}

#[test]
fn bridge_to_checks() {
    let p = case(
        "bridge_bad",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\n[[service]]\nnumber = \"02120\"\nname = \"x\"\nbridge_to = \"tel:+8221330001\"\n",
        7,
    );
    assert!(matches!(p, Problem::BadBridgeTo { .. }), "{p:?}");
    let p = case(
        "bridge_guidance",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\n[[service]]\nnumber = \"02120\"\nname = \"x\"\nguidance = [\"guidance-ko\"]\nbridge_to = \"sip:x@10.0.0.1\"\n",
        8,
    );
    assert!(matches!(p, Problem::GuidanceWithBridge { .. }), "{p:?}");
}

#[test]
fn bad_names() {
    let p = case("trunk_name", "trunks.toml", "[[trunk]]\nname = \"kt seoul\"\nnetworks = [\"10.0.0.0/8\"]\n", 2);
    assert!(matches!(p, Problem::BadName { what: "trunk name", .. }), "{p:?}");
    let p = case("tenant_id", "tenants/seoul.toml", "[tenant]\nid = \"seoul/1\"\nname = \"Seoul\"\n", 2);
    assert!(matches!(p, Problem::BadName { what: "tenant id", .. }), "{p:?}");
    let p = case("tenant_name", "tenants/seoul.toml", "[tenant]\nid = \"seoul\"\nname = \"  \"\n", 3);
    assert!(matches!(p, Problem::BadText { key: "tenant.name", .. }), "{p:?}");
}

#[test]
fn whole_file_problems() {
    // Missing files.
    let dir = scratch("no_trunks_file");
    std::fs::remove_file(dir.join("trunks.toml")).unwrap();
    let err = Profile::load(&dir).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert_eq!(err.file(), dir.join("trunks.toml"));
    assert_eq!(err.line(), None);

    let err = Profile::load(&fixture("no-such-profile")).unwrap_err();
    assert_eq!(err.file(), fixture("no-such-profile").join("callgate.toml"));

    // No trunks.
    let dir = scratch("zero_trunks");
    write(&dir, "trunks.toml", "# nobody may call\n");
    let err = Profile::load(&dir).unwrap_err();
    assert_eq!(err.file(), dir.join("trunks.toml"));
    assert_eq!(err.problem(), Some(&Problem::NoTrunks));

    // No tenants.
    let dir = scratch("zero_tenants");
    std::fs::remove_file(dir.join("tenants/seoul.toml")).unwrap();
    std::fs::remove_file(dir.join("tenants/goyang.toml")).unwrap();
    let err = Profile::load(&dir).unwrap_err();
    assert_eq!(err.file(), dir.join("tenants"));
    assert_eq!(err.problem(), Some(&Problem::NoTenants));
    assert_eq!(
        err.to_string(),
        format!("{}: no tenant files (*.toml): every call would be refused", dir.join("tenants").display())
    );
}

// ---------------------------------------------------------------------------------------------------
// Call-centre tables: queues, agents, menus, schedules (the `acd` fixture)

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn acd_profile_loads_every_table() {
    let dir = fixture("acd");
    let p = Profile::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.media.inactivity_s, 0);
    assert_eq!(p.media.inactivity(), None, "0 = never");
    assert_eq!(p.records.recordings_dir, PathBuf::from("/srv/callgate/rec"), "relative to the database's directory");
    assert_eq!(p.records.recording_retention_days, 30);

    let busan = p.tenant("busan").unwrap();
    assert_eq!((busan.realm.as_str(), busan.utc_offset_min), ("callgate", 540));
    assert_eq!(busan.recording_retention_days, 30, "the [records] value");
    assert_eq!(p.recordings_dir_for(busan), PathBuf::from("/srv/callgate/rec/busan"));

    let t = p.tenant("seoul").unwrap();
    assert_eq!(t.realm, "seoul.example");
    assert_eq!(t.utc_offset_min, 540);
    assert_eq!(t.recordings_dir, Some(PathBuf::from("/data/seoul-rec")));
    assert_eq!(p.recordings_dir_for(t), PathBuf::from("/data/seoul-rec"));
    assert_eq!(t.recording_retention_days, 365);

    // Services.
    let dasan = &t.services[0];
    assert_eq!(dasan.number, "02120");
    assert_eq!(dasan.menu.as_deref(), Some("language"));
    assert_eq!(dasan.queue.as_deref(), Some("general"));
    assert_eq!(dasan.schedule.as_deref(), Some("office"));
    assert_eq!(dasan.closed, strings(&["closed-ko"]));
    assert!(dasan.closed_callback && dasan.record && dasan.early_media);
    assert_eq!(dasan.priority, 3);
    let night = &t.services[1];
    assert_eq!(night.schedule.as_deref(), Some("night"));
    assert!(!night.record && !night.early_media && night.closed.is_empty());

    // Queues.
    let names: Vec<&str> = t.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["general", "english", "callback-only"]);
    let g = t.queue("general").unwrap();
    assert_eq!(g.strategy, Strategy::RoundRobin);
    assert_eq!(g.max_len, Some(50));
    assert_eq!(g.max_wait, Some(Duration::from_secs(600)));
    assert_eq!(g.on_max_wait, OnMaxWaitCfg::Overflow("english".into()));
    assert!(!g.join_empty && g.leave_empty && !g.announce_position);
    assert_eq!((g.ring_timeout, g.wrapup), (Duration::from_secs(20), Duration::from_secs(30)));
    assert_eq!(g.max_misses, 0);
    assert_eq!((g.sl_threshold, g.short_abandon), (Duration::from_secs(30), Duration::from_secs(3)));
    assert_eq!(g.announce_every, None, "0 = never");
    assert_eq!(g.music, strings(&["music", "guidance-ko"]));
    assert_eq!(g.callback_key, Some('*'));
    let e = t.queue("english").unwrap();
    assert_eq!(e.strategy, Strategy::RingAll);
    assert_eq!(
        e.skills,
        vec![SkillReqCfg {
            skill: "en".into(),
            level: 6,
            relax: vec![(Duration::from_secs(30), 3), (Duration::from_secs(90), 0)],
        }]
    );
    assert_eq!(e.on_max_wait, OnMaxWaitCfg::Message(strings(&["queue-full"])));
    assert_eq!(e.music, strings(&["music"]), "default music: music.wav exists in this fixture");
    let c = t.queue("callback-only").unwrap();
    assert_eq!(c.on_max_wait, OnMaxWaitCfg::Callback);
    assert!(c.music.is_empty(), "music = [] is silence (comfort stream), not the default");

    // Agents: [[agent]] tables first, then the range.
    let ids: Vec<&str> = t.agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["kim", "2002", "3001", "3002", "3003"]);
    let kim = t.agent("kim").unwrap();
    assert_eq!((kim.extension.as_str(), kim.name.as_str()), ("2001", "Kim Minji"));
    assert_eq!(kim.skills, vec![("en".to_string(), 6), ("ko".to_string(), 10)]);
    assert_eq!(kim.queues, vec![("general".to_string(), 0), ("english".to_string(), 5)], "by penalty");
    assert_eq!((kim.skill("ko"), kim.skill("zh")), (Some(10), None));
    assert_eq!((kim.penalty("english"), kim.penalty("callback-only")), (Some(5), None));
    assert!(kim.login_on_register);
    // printf '2001:seoul.example:s3cret' | md5sum ; ... | sha256sum
    assert_eq!(to_hex(&kim.ha1_md5), "f73b835b2c81aa8cf7930ba6df484c17");
    assert_eq!(to_hex(&kim.ha1_sha256), "a6809a61de3ef4033d3331a3c18f24c038b2b5ab7e3d6453445e6a27a3961f50");
    let a2 = t.agent_by_extension("2002").unwrap();
    assert_eq!((a2.id.as_str(), a2.name.as_str()), ("2002", "2002"), "id and name default to the extension");
    assert_eq!(to_hex(&a2.ha1_md5), "00112233445566778899aabbccddeeff", "hex in either case");
    assert_eq!(to_hex(&a2.ha1_sha256), "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    assert!(!a2.login_on_register);
    let r = t.agent("3002").unwrap();
    assert_eq!((r.extension.as_str(), r.name.as_str()), ("3002", "Night 3002"));
    assert_eq!(r.queues, vec![("callback-only".to_string(), 0), ("general".to_string(), 2)]);
    assert!(r.skills.is_empty() && !r.login_on_register);
    // printf '3002:seoul.example:night3002' | md5sum
    assert_eq!(to_hex(&r.ha1_md5), "65f777af85b4cf2360e72246a182b391");
    // Same extension, other realm: busan's 2001 is another user. printf '2001:callgate:pw-2001' | md5sum
    assert_eq!(to_hex(&busan.agent_by_extension("2001").unwrap().ha1_md5), "2ff25e91e14e6f83c87ddd58dbb2de65");
    // The hashes are not printed.
    let debug = format!("{kim:?}");
    assert!(!debug.contains("f73b835b") && debug.contains("redacted"), "{debug}");

    // Menu.
    let m = t.menu("language").unwrap();
    assert_eq!(m.prompt, "menu-language");
    assert_eq!(m.timeout, Duration::from_secs(4));
    assert_eq!(m.max_attempts, 2);
    assert_eq!(m.invalid_prompt.as_deref(), Some("menu-invalid"));
    assert_eq!(m.timeout_prompt.as_deref(), Some("menu-timeout"));
    assert_eq!(m.default, Some('1'));
    assert!(!m.barge_in);
    let keys: Vec<char> = m.options.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ['1', '2', '*']);
    assert_eq!(
        m.option('2'),
        Some(&MenuOptionCfg { key: "en".into(), queue: Some("english".into()), skill: Some("en".into()) })
    );
    assert_eq!(m.option('1'), Some(&MenuOptionCfg { key: "ko".into(), queue: None, skill: Some("ko".into()) }));

    // Schedules.
    let office = t.schedule("office").unwrap();
    assert_eq!(office.weekly[0], vec![TimeRange { start: 8 * 60, end: 19 * 60 }]);
    assert_eq!(
        office.weekly[2],
        vec![TimeRange { start: 8 * 60, end: 12 * 60 }, TimeRange { start: 11 * 60, end: 19 * 60 }],
        "sorted by start; overlapping ranges are allowed"
    );
    assert!(office.weekly[6].is_empty(), "a weekday not written is closed");
    assert_eq!(
        office.holidays,
        vec![
            HolidayDate::Date(CivilDate { year: 2025, month: 10, day: 3 }),
            HolidayDate::Yearly { month: 12, day: 25 }
        ]
    );
    assert_eq!(office.overrides.len(), 2);
    assert_eq!(office.overrides[0], (CivilDate { year: 2025, month: 10, day: 6 }, vec![]));

    // Every prompt, once, for preloading.
    let prompts = p.prompt_names();
    for n in ["guidance-ko", "closed-ko", "menu-language", "menu-invalid", "menu-timeout", "music", "queue-full"] {
        assert!(prompts.contains(&n.to_string()), "{n} missing from {prompts:?}");
    }
    assert_eq!(prompts.iter().filter(|n| *n == "guidance-ko").count(), 1);

    let text = p.summary().to_string();
    assert!(text.contains("02120 Dasan: guidance guidance-ko, queue general, menu language, schedule office, early media, recorded, priority 3"), "{text}");
    assert!(text.contains("media    inactivity never ends a call"), "{text}");
    assert!(text.contains("recordings in /srv/callgate/rec, kept 30 days"), "{text}");
}

#[test]
fn ha1_is_md5_and_sha256_of_extension_realm_password() {
    // Expected values computed outside callgate:
    //   printf '1001:callgate:demo1001' | md5sum
    //   printf '1001:callgate:demo1001' | sha256sum
    assert_eq!(to_hex(&ha1_md5("1001", "callgate", "demo1001")), "9bf27cb60eaf5577521b9ee4a59bf9f2");
    assert_eq!(
        to_hex(&ha1_sha256("1001", "callgate", "demo1001")),
        "abc5b0bedc62f3619beed8b508b4112ade36e8585753ed13b11ee2a8ef7d2e4c"
    );
    // The realm is part of it.
    assert_ne!(ha1_md5("1001", "callgate", "demo1001"), ha1_md5("1001", "other", "demo1001"));
    let toml = callgate::config::hash::hash_password_toml("1001", "callgate", "demo1001");
    assert_eq!(
        toml,
        "ha1_md5 = \"9bf27cb60eaf5577521b9ee4a59bf9f2\"\nha1_sha256 = \"abc5b0bedc62f3619beed8b508b4112ade36e8585753ed13b11ee2a8ef7d2e4c\"\n"
    );
}

#[test]
fn hashes_written_by_hash_password_log_in_like_the_password() {
    // An agent given as password and the same agent given as ha1_* hex end up with the same credentials.
    let dir = scratch_of("acd", "ha1_equivalent");
    let hex = callgate::config::hash::hash_password_toml("2001", "seoul.example", "s3cret");
    let text = std::fs::read_to_string(dir.join("tenants/seoul.toml")).unwrap();
    write(&dir, "tenants/seoul.toml", &text.replace("password = \"s3cret\"\n", &hex));
    let p = Profile::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let orig = Profile::load(&fixture("acd")).unwrap();
    let kim = |p: &Profile| p.tenant("seoul").unwrap().agent("kim").unwrap().clone();
    assert_eq!(kim(&p), kim(&orig));
}

// Unix times below are from `TZ=Asia/Seoul date -d 'YYYY-MM-DD HH:MM' +%s` (then x1000), never from
// callgate's own calendar code.
const KST: i32 = 540;
/// Mon 2025-09-29 07:59 KST (= Sun 22:59 UTC).
const MON_0759: i64 = 1_759_100_340_000;
/// Mon 2025-09-29 08:00 KST (= Sun 23:00 UTC).
const MON_0800: i64 = 1_759_100_400_000;
const MON_1200: i64 = 1_759_114_800_000;
const MON_1859: i64 = 1_759_139_940_000;
const MON_1900: i64 = 1_759_140_000_000;
const TUE_0800: i64 = 1_759_186_800_000;
/// Wed 2025-10-01, ranges 08:00-12:00 and 11:00-19:00.
const WED_1000: i64 = 1_759_280_400_000;
const WED_1900: i64 = 1_759_312_800_000;
/// Fri 2025-10-03: a holiday (hours 10:00-14:00).
const HOLIDAY_0900: i64 = 1_759_449_600_000;
const HOLIDAY_0959: i64 = 1_759_453_140_000;
const HOLIDAY_1000: i64 = 1_759_453_200_000;
const HOLIDAY_1400: i64 = 1_759_467_600_000;
/// Sat 2025-10-04 (09:00-13:00).
const SAT_0900: i64 = 1_759_536_000_000;
const SAT_1300: i64 = 1_759_550_400_000;
/// Sun 2025-10-05 (closed), Mon 2025-10-06 (override: closed), Tue 2025-10-07.
const SUN_1200: i64 = 1_759_633_200_000;
const OVERRIDE_MON_0800: i64 = 1_759_705_200_000;
const OVERRIDE_MON_1200: i64 = 1_759_719_600_000;
const TUE2_0800: i64 = 1_759_791_600_000;
/// Wed 2025-12-24 (override 08:00-12:00), Thu 2025-12-25 and Fri 2026-12-25 (yearly holiday).
const XMAS_EVE_0800: i64 = 1_766_530_800_000;
const XMAS_EVE_1159: i64 = 1_766_545_140_000;
const XMAS_EVE_1200: i64 = 1_766_545_200_000;
const XMAS_1000: i64 = 1_766_624_400_000;
const XMAS_1400: i64 = 1_766_638_800_000;
const XMAS_2026_1000: i64 = 1_798_160_400_000;
/// The night schedule: Fri 22:00-06:00 (into Saturday) and Sat 06:00-08:00.
const THU_2300: i64 = 1_758_808_800_000; // Thu 2025-09-25
const FRI_2159: i64 = 1_758_891_540_000; // Fri 2025-09-26
const FRI_2200: i64 = 1_758_891_600_000;
const FRI_2230: i64 = 1_758_893_400_000;
const SAT_0559: i64 = 1_758_920_340_000; // Sat 2025-09-27
const SAT_0600: i64 = 1_758_920_400_000;
const SAT_0759: i64 = 1_758_927_540_000;
const SAT_0800: i64 = 1_758_927_600_000;
const NEXT_FRI_2200: i64 = 1_759_496_400_000; // Fri 2025-10-03 22:00

fn schedules() -> (ScheduleCfg, ScheduleCfg) {
    let p = Profile::load(&fixture("acd")).unwrap_or_else(|e| panic!("{e}"));
    let t = p.tenant("seoul").unwrap();
    (t.schedule("office").unwrap().clone(), t.schedule("night").unwrap().clone())
}

#[test]
fn schedule_is_open_across_a_week() {
    let (office, _) = schedules();
    let open = |t| office.is_open(t, KST);
    assert!(!open(MON_0759));
    assert!(open(MON_0800), "start included");
    assert!(open(MON_1200) && open(MON_1859));
    assert!(!open(MON_1900), "end excluded");
    assert!(open(TUE_0800));
    assert!(open(WED_1000), "overlapping ranges: their union");
    assert!(!open(WED_1900));
    assert!(open(SAT_0900) && !open(SAT_1300));
    assert!(!open(SUN_1200), "sunday is not written: closed");
    // The local date and weekday come from the tenant's offset: Mon 08:00 KST is still Sunday in UTC.
    assert!(!office.is_open(MON_0800, 0), "Sun 23:00 UTC: closed on a UTC clock");
    assert!(office.is_open(MON_0800 + 9 * 3_600_000, 0), "Mon 08:00 UTC");
}

#[test]
fn schedule_holidays_and_overrides() {
    let (office, _) = schedules();
    let open = |t| office.is_open(t, KST);
    // Fri 2025-10-03 is a holiday: holiday_hours 10:00-14:00 instead of Friday's 08:00-19:00.
    assert!(!open(HOLIDAY_0900) && !open(HOLIDAY_0959));
    assert!(open(HOLIDAY_1000));
    assert!(!open(HOLIDAY_1400));
    // Mon 2025-10-06 has an override with no hours: closed all day although it is a Monday.
    assert!(!open(OVERRIDE_MON_0800) && !open(OVERRIDE_MON_1200));
    assert!(open(TUE2_0800));
    // Wed 2025-12-24: override 08:00-12:00.
    assert!(open(XMAS_EVE_0800) && open(XMAS_EVE_1159));
    assert!(!open(XMAS_EVE_1200));
    // "12-25" holds every year.
    assert!(open(XMAS_1000) && !open(XMAS_1400));
    assert!(open(XMAS_2026_1000));
}

#[test]
fn schedule_range_past_midnight_with_kst_offset() {
    let (_, night) = schedules();
    let open = |t| night.is_open(t, KST);
    assert!(!open(THU_2300));
    assert!(!open(FRI_2159));
    assert!(open(FRI_2200));
    // Sat 05:59 KST is Fri 20:59 UTC: still Friday's range, after local midnight.
    assert!(open(SAT_0559));
    assert!(open(SAT_0600) && open(SAT_0759), "Saturday's own range continues it");
    assert!(!open(SAT_0800));
}

#[test]
fn schedule_next_change() {
    let (office, night) = schedules();
    let next = |s: &ScheduleCfg, t| s.next_change(t, KST);
    assert_eq!(next(&office, MON_1200), Some(MON_1900), "open: when it closes");
    assert_eq!(next(&office, MON_0759), Some(MON_0800), "closed: when it opens");
    assert_eq!(next(&office, MON_0759 + 59_999), Some(MON_0800));
    assert_eq!(next(&office, MON_1900), Some(TUE_0800), "at the boundary itself: the next one");
    assert_eq!(next(&office, WED_1000), Some(WED_1900), "overlapping ranges merge");
    assert_eq!(next(&office, HOLIDAY_0900), Some(HOLIDAY_1000));
    assert_eq!(next(&office, HOLIDAY_1000), Some(HOLIDAY_1400));
    // Saturday 13:00 → Sunday closed → Monday overridden closed → Tuesday 08:00.
    assert_eq!(next(&office, SAT_1300), Some(TUE2_0800));
    assert_eq!(next(&office, XMAS_EVE_0800), Some(XMAS_EVE_1200));
    // Past midnight and into the next day's own range: one opening, Fri 22:00 to Sat 08:00.
    assert_eq!(next(&night, FRI_2230), Some(SAT_0800));
    assert_eq!(next(&night, FRI_2159), Some(FRI_2200));
    assert_eq!(next(&night, SAT_0800), Some(NEXT_FRI_2200));
    // Never changing: open 24/7, never open.
    assert_eq!(ScheduleCfg::always_open("x").next_change(MON_1200, KST), None);
    assert_eq!(ScheduleCfg::default().next_change(MON_1200, KST), None);
    // And through the tenant, for a service.
    let p = Profile::load(&fixture("acd")).unwrap();
    let t = p.tenant("seoul").unwrap();
    assert!(t.is_open(&t.services[0], MON_1200) && !t.is_open(&t.services[0], SUN_1200));
    assert_eq!(t.next_change(&t.services[1], FRI_2230), Some(SAT_0800));
}

#[test]
fn is_open_agrees_with_next_change_minute_by_minute() {
    // Walk two weeks in minutes (across the holiday and the override), at three UTC offsets: the
    // state flips exactly at the instants next_change announces, and nowhere else.
    let (office, night) = schedules();
    for off in [KST, 0, -330] {
        for s in [&office, &night] {
            let mut t = MON_0759 - 7 * 86_400_000 + 30_000;
            let end = t + 14 * 86_400_000;
            let mut state = s.is_open(t, off);
            let mut change = s.next_change(t, off).unwrap();
            while t < end {
                t += 60_000;
                let now = s.is_open(t, off);
                if t - 30_000 == change {
                    assert_ne!(now, state, "{} at {off}: no flip at the announced change {change}", s.name);
                    state = now;
                    change = s.next_change(t, off).unwrap();
                } else {
                    assert_eq!(now, state, "{} at {off}: flipped at {t}, next_change said {change}", s.name);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Validation of the call-centre tables: each names the file and the line

/// Lines 1-7 of a test tenant: a tenant "seoul" with queue "general". The text of a case starts at
/// line 8.
const HEAD: &str = "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\n\n[[queue]]\nname = \"general\"\n\n";

fn tenant(rest: &str) -> String {
    format!("{HEAD}{rest}")
}

/// A case on the `acd` fixture replacing tenants/seoul.toml with HEAD + `rest`.
#[track_caller]
fn seoul(name: &str, rest: &str, line: usize) -> Problem {
    acd_case(name, "tenants/seoul.toml", &tenant(rest), line)
}

/// A valid agent serving `general` (5 lines).
const AGENT: &str =
    "[[agent]]\nextension = \"2101\"\npassword = \"pw\"\nskills = { ko = 5 }\nqueues = { general = 0 }\n";

#[test]
fn tenant_realm_and_offset() {
    let p = acd_case(
        "bad_realm",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\nrealm = \"a\\\"b\"\n",
        4,
    );
    assert!(matches!(&p, Problem::BadRealm { value } if value == "a\"b"), "{p:?}");
    let p = acd_case(
        "bad_offset",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\n\nutc_offset = \"KST\"\n",
        5,
    );
    assert!(matches!(&p, Problem::BadUtcOffset { value } if value == "KST"), "{p:?}");
    assert!(p.to_string().contains("expected \"+HH:MM\""), "{p}");
    let p = acd_case(
        "far_offset",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\nutc_offset = \"+15:00\"\n",
        4,
    );
    assert!(matches!(p, Problem::BadUtcOffset { .. }), "{p:?}");
}

#[test]
fn queue_values() {
    let p = seoul("strategy", "[[queue]]\nname = \"b\"\nstrategy = \"longest-idle\"\n", 10);
    assert!(
        matches!(&p, Problem::UnknownValue { value, expected } if value == "longest-idle" && expected.contains(&"longest_idle".to_string())),
        "{p:?}"
    );
    assert!(p.to_string().contains("expected one of: longest_idle, round_robin"), "{p}");
    let p = seoul("dup_queue", "[[queue]]\nname = \"general\"\n", 9);
    assert_eq!(p, Problem::DuplicateName { what: "queue", name: "general".into(), first_line: 6 });
    let p = seoul("ring0", "[[queue]]\nname = \"b\"\nring_timeout = 0\n", 10);
    assert_eq!(p, Problem::OutOfRange { key: "queue.ring_timeout", value: 0, min: 1, max: 600 });
    let p = seoul("queue_name", "[[queue]]\nname = \"a b\"\n", 9);
    assert!(matches!(p, Problem::BadName { what: "queue", .. }), "{p:?}");
    let p = seoul("cb_key", "[[queue]]\nname = \"b\"\ncallback_key = \"**\"\n", 10);
    assert!(matches!(&p, Problem::BadDtmfKey { value, .. } if value == "**"), "{p:?}");
    assert!(p.to_string().contains("expected one character of 0-9, *, #, A-D"), "{p}");
    let p = seoul("music_missing", "[[queue]]\nname = \"b\"\nmusic = [\"music\", \"jazz\"]\n", 10);
    assert!(
        matches!(&p, Problem::NoPromptFile { key: "music", prompt, path, .. } if prompt == "jazz" && path.ends_with("audio/jazz.wav")),
        "{p:?}"
    );
}

#[test]
fn max_wait_policies() {
    let p = seoul("omw_no_max", "[[queue]]\nname = \"b\"\non_max_wait = \"callback\"\n", 10);
    assert_eq!(p, Problem::OnMaxWaitWithoutMaxWait { queue: "b".into() });
    let p = seoul("omw_value", "[[queue]]\nname = \"b\"\nmax_wait = 9\non_max_wait = \"voicemail\"\n", 11);
    assert!(matches!(&p, Problem::UnknownValue { value, .. } if value == "voicemail"), "{p:?}");
    let p = seoul("overflow_needs", "[[queue]]\nname = \"b\"\nmax_wait = 9\non_max_wait = \"overflow\"\n", 11);
    assert_eq!(p, Problem::OnMaxWaitNeeds { queue: "b".into(), on_max_wait: "overflow", key: "overflow_queue" });
    let p = seoul("message_needs", "[[queue]]\nname = \"b\"\nmax_wait = 9\non_max_wait = \"message\"\n", 11);
    assert_eq!(p, Problem::OnMaxWaitNeeds { queue: "b".into(), on_max_wait: "message", key: "max_wait_prompts" });
    let p = seoul("overflow_unused", "[[queue]]\nname = \"b\"\nmax_wait = 9\noverflow_queue = \"general\"\n", 11);
    assert_eq!(
        p,
        Problem::OnMaxWaitUnused { queue: "b".into(), key: "overflow_queue", needs: "overflow", on_max_wait: "hangup" }
    );
    let p = seoul(
        "overflow_unknown",
        "[[queue]]\nname = \"b\"\nmax_wait = 9\non_max_wait = \"overflow\"\noverflow_queue = \"c\"\n",
        12,
    );
    assert!(
        matches!(&p, Problem::UnknownQueue { queue, known, .. } if queue == "c" && known == &strings(&["general", "b"])),
        "{p:?}"
    );
    let p = seoul(
        "overflow_self",
        "[[queue]]\nname = \"b\"\nmax_wait = 9\non_max_wait = \"overflow\"\noverflow_queue = \"b\"\n",
        12,
    );
    assert_eq!(p, Problem::OverflowLoop { queue: "b".into(), path: strings(&["b", "b"]) });
    let p = seoul(
        "overflow_loop",
        "[[queue]]\nname = \"a\"\nmax_wait = 9\non_max_wait = \"overflow\"\noverflow_queue = \"b\"\n\n[[queue]]\nname = \"b\"\nmax_wait = 9\non_max_wait = \"overflow\"\noverflow_queue = \"a\"\n",
        12,
    );
    assert_eq!(p, Problem::OverflowLoop { queue: "a".into(), path: strings(&["a", "b", "a"]) });
    assert!(p.to_string().contains("a -> b -> a"), "{p}");
}

#[test]
fn skill_requirements() {
    let q = |skills: &str| format!("{AGENT}\n[[queue]]\nname = \"b\"\nskills = [{skills}]\n");
    // Agent lines 8-12, blank 13, queue 14-16.
    let p = seoul("skill_unknown", &q("{ skill = \"en\", level = 1 }"), 16);
    assert_eq!(
        p,
        Problem::UnknownSkill {
            owner: "queue \"b\"".into(),
            skill: "en".into(),
            tenant: "seoul".into(),
            known: strings(&["ko"])
        }
    );
    let p = seoul("skill_level", &q("{ skill = \"ko\", level = 101 }"), 16);
    assert_eq!(
        p,
        Problem::LevelOutOfRange { owner: "queue \"b\"".into(), skill: "ko".into(), value: 101, min: 1, max: 100 }
    );
    let p = seoul(
        "relax_higher",
        &q("{ skill = \"ko\", level = 5, relax = [{ after = 30, level = 3 }, { after = 60, level = 4 }] }"),
        16,
    );
    assert_eq!(p, Problem::RelaxNotLower { queue: "b".into(), skill: "ko".into(), level: 3, relax: 4 });
    let p = seoul(
        "relax_earlier",
        &q("{ skill = \"ko\", level = 5, relax = [{ after = 30, level = 3 }, { after = 30, level = 1 }] }"),
        16,
    );
    assert_eq!(p, Problem::RelaxNotLater { queue: "b".into(), skill: "ko".into(), after: 30, previous: 30 });
    let p = seoul("relax_same_level", &q("{ skill = \"ko\", level = 5, relax = [{ after = 30, level = 5 }] }"), 16);
    assert!(matches!(p, Problem::RelaxNotLower { level: 5, relax: 5, .. }), "{p:?}");
    let p = seoul(
        "skill_twice",
        &format!("{AGENT}\n[[queue]]\nname = \"b\"\n[[queue.skills]]\nskill = \"ko\"\nlevel = 1\n[[queue.skills]]\nskill = \"ko\"\nlevel = 2\n"),
        20,
    );
    assert_eq!(p, Problem::DuplicateName { what: "skill requirement", name: "ko".into(), first_line: 17 });
}

#[test]
fn agents_credentials() {
    let agent = |extra: &str| format!("[[agent]]\nextension = \"2001\"\nqueues = {{ general = 0 }}\n{extra}");
    let p = seoul("no_credentials", &agent(""), 9);
    assert_eq!(p, Problem::NoCredentials { agent: "2001".into() });
    assert!(p.to_string().contains("expected password"), "{p}");
    let p = seoul("pw_and_hash", &agent("password = \"x\"\nha1_md5 = \"00\"\n"), 11);
    assert_eq!(p, Problem::PasswordAndHash { agent: "2001".into() });
    let p = seoul("md5_only", &agent("ha1_md5 = \"00112233445566778899aabbccddeeff\"\n"), 11);
    assert_eq!(p, Problem::IncompleteHa1 { agent: "2001".into(), missing: "ha1_sha256" });
    let p = seoul(
        "bad_hex",
        &agent("ha1_md5 = \"00112233445566778899aabbccddeefg\"\nha1_sha256 = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n"),
        11,
    );
    assert_eq!(p, Problem::BadHa1 { agent: "2001".into(), key: "ha1_md5", digits: 32 });
    let p = seoul("short_sha", &agent("ha1_md5 = \"00112233445566778899aabbccddeeff\"\nha1_sha256 = \"0011\"\n"), 12);
    assert_eq!(p, Problem::BadHa1 { agent: "2001".into(), key: "ha1_sha256", digits: 64 });
    let p = seoul("pw_control", &agent("password = \"sec\\tret\"\n"), 11);
    assert_eq!(p, Problem::BadPassword { agent: "2001".into() });
    assert!(!p.to_string().contains("sec"), "the password is never printed: {p}");
}

#[test]
fn agents_queues_and_skills() {
    let p = seoul("agent_no_queue", "[[agent]]\nextension = \"2001\"\npassword = \"pw\"\n", 9);
    assert_eq!(p, Problem::AgentWithoutQueues { agent: "2001".into() });
    let p = seoul(
        "agent_unknown_queue",
        "[[agent]]\nid = \"kim\"\nextension = \"2001\"\npassword = \"pw\"\nqueues = { general = 0, genral = 1 }\n",
        12,
    );
    assert_eq!(
        p,
        Problem::UnknownQueue {
            owner: "agent \"kim\"".into(),
            queue: "genral".into(),
            tenant: "seoul".into(),
            known: strings(&["general"])
        }
    );
    let p = seoul(
        "agent_level",
        "[[agent]]\nextension = \"2001\"\npassword = \"pw\"\nqueues = { general = 0 }\nskills = { ko = 0 }\n",
        12,
    );
    assert!(matches!(p, Problem::LevelOutOfRange { value: 0, min: 1, .. }), "{p:?}");
    let p = seoul("agent_ext", "[[agent]]\nextension = \"20 01\"\npassword = \"pw\"\nqueues = { general = 0 }\n", 9);
    assert!(matches!(p, Problem::BadName { what: "agent extension", .. }), "{p:?}");
}

#[test]
fn duplicate_agents_and_extensions() {
    // Within the tenant: the same id, then the same extension.
    let p = seoul(
        "dup_id",
        &format!(
            "{AGENT}\n[[agent]]\nid = \"2101\"\nextension = \"2102\"\npassword = \"pw\"\nqueues = {{ general = 0 }}\n"
        ),
        15,
    );
    assert!(
        matches!(&p, Problem::DuplicateAgent { id, realm, tenant, line: 9, .. } if id == "2101" && realm == "callgate" && tenant == "seoul"),
        "{p:?}"
    );
    let p = seoul(
        "dup_ext",
        &format!(
            "{AGENT}\n[[agent]]\nid = \"kim\"\nextension = \"2101\"\npassword = \"pw\"\nqueues = {{ general = 0 }}\n"
        ),
        16,
    );
    assert!(matches!(&p, Problem::DuplicateExtension { extension, line: 9, .. } if extension == "2101"), "{p:?}");
    // A range overlapping an agent.
    let p = seoul(
        "dup_range",
        &format!(
            "{AGENT}\n[[agent_range]]\nfrom = 2099\nto = 2105\npassword_prefix = \"x\"\nqueues = {{ general = 0 }}\n"
        ),
        15,
    );
    assert!(matches!(&p, Problem::DuplicateAgent { id, .. } if id == "2101"), "{p:?}");
    // Across tenants sharing the default realm: busan.toml (read first) has extension 2001.
    let dir = scratch_of("acd", "dup_ext_realm");
    write(
        &dir,
        "tenants/seoul.toml",
        &tenant("[[agent]]\nid = \"kim\"\nextension = \"2001\"\npassword = \"pw\"\nqueues = { general = 0 }\n"),
    );
    let p = fails_at(&dir, "tenants/seoul.toml", 10);
    assert_eq!(
        p,
        Problem::DuplicateExtension {
            extension: "2001".into(),
            realm: "callgate".into(),
            tenant: "busan".into(),
            file: dir.join("tenants/busan.toml"),
            line: 15,
        }
    );
    // With a realm of its own, the same extension is another user.
    write(
        &dir,
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"S\"\nrealm = \"seoul\"\n[[queue]]\nname = \"q\"\n[[agent]]\nextension = \"2001\"\npassword = \"pw\"\nqueues = { q = 0 }\n",
    );
    Profile::load(&dir).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn agent_ranges() {
    let range = |from: u64, to: u64, prefix: &str| {
        format!(
            "[[agent_range]]\nfrom = {from}\nto = {to}\npassword_prefix = \"{prefix}\"\nqueues = {{ general = 0 }}\n"
        )
    };
    let p = seoul("range_reversed", &range(1010, 1001, "demo"), 10);
    assert!(matches!(p, Problem::BadAgentRange { from: 1010, to: 1001, .. }), "{p:?}");
    let p = seoul("range_huge", &range(1, 20_000, "demo"), 10);
    assert!(matches!(p, Problem::BadAgentRange { from: 1, to: 20_000, .. }), "{p:?}");
    let p = seoul("range_prefix", &range(1001, 1002, ""), 11);
    assert!(matches!(p, Problem::BadPassword { .. }), "{p:?}");
    let p = seoul("range_missing", "[[agent_range]]\nfrom = 1\nto = 2\nqueues = { general = 0 }\n", 8);
    assert_eq!(p, Problem::MissingKey { key: "password_prefix".into() });
}

/// A menu "m" (lines 8-10) with `options` after it (from line 11).
fn menu(options: &str) -> String {
    format!("[[menu]]\nname = \"m\"\nprompt = \"menu-language\"\n{options}")
}

const OPT1: &str = "[[menu.option]]\nkey = \"1\"\nlabel = \"ko\"\n";

#[test]
fn menus() {
    let p = seoul("menu_key", &menu("[[menu.option]]\nkey = \"E\"\nlabel = \"x\"\n"), 12);
    assert!(matches!(&p, Problem::BadDtmfKey { value, .. } if value == "E"), "{p:?}");
    let p = seoul("menu_key_long", &menu("[[menu.option]]\nkey = \"12\"\nlabel = \"x\"\n"), 12);
    assert!(matches!(p, Problem::BadDtmfKey { .. }), "{p:?}");
    let p = seoul("menu_dup_key", &menu(&format!("{OPT1}[[menu.option]]\nkey = \"1\"\nlabel = \"en\"\n")), 15);
    assert_eq!(p, Problem::DuplicateMenuKey { menu: "m".into(), key: '1', first_line: 12 });
    let p = seoul(
        "menu_dup_letter",
        &menu("[[menu.option]]\nkey = \"a\"\nlabel = \"x\"\n[[menu.option]]\nkey = \"A\"\nlabel = \"y\"\n"),
        15,
    );
    assert_eq!(p, Problem::DuplicateMenuKey { menu: "m".into(), key: 'A', first_line: 12 });
    let p = seoul("menu_no_options", &menu(""), 9);
    assert_eq!(p, Problem::NoMenuOptions { menu: "m".into() });
    let p = seoul("menu_default", &menu(&format!("default = \"2\"\n{OPT1}")), 11);
    assert_eq!(p, Problem::MenuDefaultNotAnOption { menu: "m".into(), key: '2', keys: "1".into() });
    let p = seoul("menu_queue", &menu("[[menu.option]]\nkey = \"1\"\nlabel = \"ko\"\nqueue = \"korean\"\n"), 14);
    assert_eq!(
        p,
        Problem::UnknownQueue {
            owner: "menu \"m\" key '1'".into(),
            queue: "korean".into(),
            tenant: "seoul".into(),
            known: strings(&["general"])
        }
    );
    let p = seoul("menu_skill", &menu("[[menu.option]]\nkey = \"1\"\nlabel = \"ko\"\nskill = \"ko\"\n"), 14);
    assert!(matches!(&p, Problem::UnknownSkill { skill, known, .. } if skill == "ko" && known.is_empty()), "{p:?}");
    let p = seoul(
        "menu_prompt",
        "[[menu]]\nname = \"m\"\nprompt = \"menu-zh\"\n[[menu.option]]\nkey = \"1\"\nlabel = \"x\"\n",
        10,
    );
    assert!(
        matches!(&p, Problem::NoPromptFile { owner, key: "prompt", prompt, .. } if owner == "menu \"m\"" && prompt == "menu-zh"),
        "{p:?}"
    );
    assert!(p.to_string().contains("has no file"), "{p}");
    let p = seoul("menu_prompt_ext", &menu(&format!("invalid_prompt = \"menu-invalid.wav\"\n{OPT1}")), 11);
    assert!(matches!(p, Problem::PromptNameWithExtension { key: "invalid_prompt", .. }), "{p:?}");
    let p = seoul("menu_timeout", &menu(&format!("timeout = 0\n{OPT1}")), 11);
    assert_eq!(p, Problem::OutOfRange { key: "menu.timeout", value: 0, min: 1, max: 60 });
    let p = seoul("menu_dup", &format!("{}\n{}", menu(OPT1), menu(OPT1)), 16);
    assert_eq!(p, Problem::DuplicateName { what: "menu", name: "m".into(), first_line: 9 });
}

/// A service "s" (lines 8-10) followed by `extra` (from line 11).
fn service(extra: &str) -> String {
    format!("[[service]]\nnumber = \"02120\"\nname = \"s\"\n{extra}")
}

#[test]
fn service_references() {
    let p = seoul("svc_queue", &service("queue = \"genral\"\n"), 11);
    assert_eq!(
        p,
        Problem::UnknownQueue {
            owner: "service \"s\"".into(),
            queue: "genral".into(),
            tenant: "seoul".into(),
            known: strings(&["general"])
        }
    );
    assert!(p.to_string().contains("(queues: \"general\")"), "{p}");
    let p = seoul("svc_menu", &service("menu = \"lang\"\n"), 11);
    assert_eq!(p, Problem::UnknownMenu { service: "s".into(), menu: "lang".into(), known: vec![] });
    let p = seoul("svc_schedule", &service("schedule = \"office\"\n"), 11);
    assert_eq!(p, Problem::UnknownSchedule { service: "s".into(), schedule: "office".into(), known: vec![] });
    // Another tenant's queue is unknown here: nothing routes across tenants.
    let p = seoul("svc_other_tenant", &service("queue = \"main\"\n"), 11);
    assert!(matches!(&p, Problem::UnknownQueue { queue, .. } if queue == "main"), "{p:?}");
    let p = seoul("svc_priority", &service("priority = 256\n"), 11);
    assert_eq!(p, Problem::OutOfRange { key: "service.priority", value: 256, min: 0, max: 255 });
}

#[test]
fn service_menu_and_closed_rules() {
    let m = menu(OPT1); // lines 8-13
    let p = seoul(
        "svc_menu_no_queue",
        &format!("{m}\n{}", "[[service]]\nnumber = \"1\"\nname = \"s\"\nmenu = \"m\"\n"),
        18,
    );
    assert_eq!(p, Problem::MenuOptionWithoutQueue { service: "s".into(), menu: "m".into(), key: '1' });
    let p = seoul(
        "svc_menu_bridge",
        &format!(
            "{m}\n{}",
            "[[service]]\nnumber = \"1\"\nname = \"s\"\nbridge_to = \"sip:x@10.0.0.1\"\nmenu = \"m\"\n"
        ),
        19,
    );
    assert_eq!(p, Problem::MenuWithBridge { service: "s".into() });
    let p = seoul("svc_closed", &service("queue = \"general\"\nclosed = [\"closed-ko\"]\n"), 12);
    assert_eq!(p, Problem::ClosedWithoutSchedule { service: "s".into(), key: "closed" });
    let p = seoul("svc_closed_cb", &service("closed_callback = true\n"), 11);
    assert_eq!(p, Problem::ClosedWithoutSchedule { service: "s".into(), key: "closed_callback" });
    let sched = "[[schedule]]\nname = \"o\"\nmon = [\"08:00-19:00\"]\n\n"; // lines 8-11
    let p = seoul(
        "svc_cb_no_queue",
        &format!("{sched}[[service]]\nnumber = \"1\"\nname = \"s\"\nschedule = \"o\"\nclosed_callback = true\n"),
        16,
    );
    assert_eq!(p, Problem::CallbackWithoutQueue { service: "s".into() });
    let p = seoul(
        "svc_closed_prompt",
        &format!("{sched}[[service]]\nnumber = \"1\"\nname = \"s\"\nschedule = \"o\"\nclosed = [\"closed-ko\",\n  \"closed-zh\"]\n"),
        17,
    );
    assert!(
        matches!(&p, Problem::NoPromptFile { owner, key: "closed", prompt, .. } if owner == "service \"s\"" && prompt == "closed-zh"),
        "{p:?}"
    );
}

#[test]
fn schedule_values() {
    let p = seoul("sched_time", "[[schedule]]\nname = \"o\"\nmon = [\"08:00-19:00\",\n  \"20:00-25:00\"]\n", 11);
    assert_eq!(
        p,
        Problem::BadTimeRange {
            schedule: "o".into(),
            key: "mon".into(),
            value: "20:00-25:00".into(),
            why: TimeRangeError::BadTime { text: "25:00".into() }
        }
    );
    assert!(p.to_string().contains("expected HH:MM from 00:00 to 23:59"), "{p}");
    let p = seoul("sched_syntax", "[[schedule]]\nname = \"o\"\nsat = [\"9-18\"]\n", 10);
    assert!(
        matches!(&p, Problem::BadTimeRange { key, why: TimeRangeError::BadTime { .. }, .. } if key == "sat"),
        "{p:?}"
    );
    let p = seoul("sched_empty", "[[schedule]]\nname = \"o\"\nholiday_hours = [\"09:00-09:00\"]\n", 10);
    assert!(matches!(p, Problem::BadTimeRange { why: TimeRangeError::Empty, .. }), "{p:?}");
    let p = seoul("sched_date", "[[schedule]]\nname = \"o\"\nholidays = [\"2025-02-29\"]\n", 10);
    assert!(
        matches!(&p, Problem::BadDate { key: "holidays", why: DateError::BadDay { day: 29, max: 28, .. }, .. }),
        "{p:?}"
    );
    let p = seoul("sched_date2", "[[schedule]]\nname = \"o\"\nholidays = [\"12/25\"]\n", 10);
    assert!(matches!(p, Problem::BadDate { why: DateError::Syntax { .. }, .. }), "{p:?}");
    let p = seoul(
        "sched_override_dup",
        "[[schedule]]\nname = \"o\"\n[[schedule.override]]\ndate = \"2025-12-24\"\nhours = []\n[[schedule.override]]\ndate = \"2025-12-24\"\nhours = [\"08:00-12:00\"]\n",
        14,
    );
    assert_eq!(
        p,
        Problem::DuplicateDate { schedule: "o".into(), key: "override", date: "2025-12-24".into(), first_line: 11 }
    );
    let p =
        seoul("sched_override_hours", "[[schedule]]\nname = \"o\"\n[[schedule.override]]\ndate = \"2025-12-24\"\n", 10);
    assert_eq!(p, Problem::MissingKey { key: "hours".into() });
    let p = seoul("sched_day", "[[schedule]]\nname = \"o\"\nmonday = [\"08:00-19:00\"]\n", 10);
    assert!(
        matches!(&p, Problem::UnknownKey { key, expected } if key == "monday" && expected.contains(&"mon".to_string())),
        "{p:?}"
    );
    let p = seoul("sched_dup", "[[schedule]]\nname = \"o\"\n[[schedule]]\nname = \"o\"\n", 11);
    assert_eq!(p, Problem::DuplicateName { what: "schedule", name: "o".into(), first_line: 9 });
}

#[test]
fn edge_media_and_records_values() {
    let p = case("inactivity", "callgate.toml", "[media]\ninactivity = 100000\n", 2);
    assert_eq!(p, Problem::OutOfRange { key: "media.inactivity", value: 100_000, min: 0, max: 86_400 });
    let p = case("retention", "callgate.toml", "[records]\n\nrecording_retention_days = 40000\n", 3);
    assert!(matches!(p, Problem::OutOfRange { key: "records.recording_retention_days", .. }), "{p:?}");
    let p = case("rec_dir", "callgate.toml", "[records]\nrecordings_dir = \" \"\n", 2);
    assert!(matches!(p, Problem::BadText { key: "records.recordings_dir", .. }), "{p:?}");
    let p = acd_case(
        "tenant_retention",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"S\"\nrecording_retention_days = -1\n",
        4,
    );
    assert!(matches!(p, Problem::Syntax { .. }), "{p:?}");
}

#[test]
fn schedule_types_parse_on_their_own() {
    // The library's date arithmetic against `date` (see the constants above): 2025-09-29 is a Monday,
    // 20360 days after 1970-01-01 (`echo $(( $(date -ud 2025-09-29 +%s) / 86400 ))`).
    let d = CivilDate { year: 2025, month: 9, day: 29 };
    assert_eq!(d.to_days(), 20360);
    assert_eq!(CivilDate::from_days(20360), d);
    assert_eq!(d.weekday(), callgate::config::Weekday::Mon);
    assert_eq!(callgate::config::local_date(MON_0800, KST), d);
    assert_eq!(callgate::config::local_date(MON_0800, 0), CivilDate { year: 2025, month: 9, day: 28 });
    assert_eq!(TimeRange::parse("22:00-06:00").map(|r| r.wraps()), Ok(true));
}

#[test]
fn a_trunks_outbound_must_be_a_sip_uri_with_an_ip_address() {
    let p = case("outbound_host", "trunks.toml", "[[trunk]]\nname = \"kt\"\nnetworks = [\"10.0.0.0/8\"]\noutbound = \"sip:carrier.example\"\n", 4);
    assert_eq!(p, Problem::BadOutbound { trunk: "kt".into(), value: "sip:carrier.example".into() });
}
