//! Profiles: the default profile, fixtures under tests/data/profiles/, and one test per validation
//! error, each asserting the exact file and line the error names.
//!
//! Bad profiles are made by copying the good `multi` fixture into a scratch directory and replacing
//! one file with the text in the test, so the line numbers asserted are visible right here.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use callgate::config::{
    check, normalise_number, Codec, ConfigError, IpNet, NumberError, PortRangeError, Problem, Profile,
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
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_profiles").join(case);
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&fixture("multi"), &dir);
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
    assert_eq!(t.numbers, vec!["120".to_string()]);

    assert_eq!(p.tenants.len(), 1);
    let demo = &p.tenants[0];
    assert_eq!(demo.id, "demo");
    assert_eq!(demo.name, "Demo 120 civil-service centre");
    assert_eq!(demo.services.len(), 1);
    let s = &demo.services[0];
    assert_eq!(s.tenant, "demo");
    assert_eq!(s.number, "120");
    assert_eq!(s.guidance, vec!["guidance-ko".to_string()]);
    assert_eq!(s.queue.as_deref(), Some("general"));
    assert_eq!(s.bridge_to, None);
    assert_eq!(p.prompt_names(), vec!["guidance-ko".to_string()]);
    assert!(p.prompt_path("guidance-ko").is_file());

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
    assert_eq!((s.tenants, s.services, s.trunks, s.prompts), (1, 1, 1, 1));
    let text = s.to_string();
    assert!(text.contains("1 tenant(s), 1 service(s), 1 trunk(s)"), "{text}");
    assert!(text.contains("demo-carrier"), "{text}");
    assert!(text.contains("120 Civil-service enquiries: guidance guidance-ko, queue general"), "{text}");
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

    // Tables later versions will add are unknown today.
    let p = case(
        "unknown_later_table",
        "tenants/seoul.toml",
        "[tenant]\nid = \"seoul\"\nname = \"Seoul\"\n\n[[agent]]\nid = \"kim\"\n",
        5,
    );
    assert!(matches!(&p, Problem::UnknownKey { key, .. } if key == "agent"), "{p:?}");
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
