//! The wallboard end to end, as the room's screen shows it: callgate, a baresip agent, SIPp citizens
//! and Debian's headless Chromium (driven by npm `playwright-core`, tests/web/wallboard.mjs) all in
//! one loopback-only network namespace. While calls flow and after they end, the tiles must show the
//! figures of the statistics API (`GET /stats/live`), and those figures must be the scenario's; a
//! 1920×1080 screenshot is kept in the test's directory (and copied to docs/wallboard.png for the
//! README when CALLGATE_UPDATE_DOCS=1).
//!
//! How the namespace is made: the normal test (`the_wallboard_…`) checks the peers, installs the node
//! module if needed (it has the network), then runs this same test binary again under
//! `unshare -n sh -c 'ip link set lo up; exec …'` (`unshare -rn`, a user namespace, when not root)
//! with only `wallboard_in_a_loopback_namespace` selected and `WALLBOARD_INNER=1`; that inner test
//! starts everything inside, so every process sees only its own `lo`. The inner test is `#[ignore]`d:
//! only the outer one runs it.
//!
//! The day, with one agent (1001, wrap-up 1 s) and five citizens (SIPp, each hanging up after a set
//! time in the call, whether or not an agent answered):
//! ```text
//!   t=0     A calls  ── answered at once by 1001, talks 12 s
//!   t≈1.5   B calls  ── waits (1001 busy) ...................... answered after A + wrap-up, talks ~4 s
//!   t≈2     C calls  ── waits, gives up after 7 s (abandoned in the queue)
//!           sample "two waiting":   waiting 2, on call 1, offered 3, answered 1, abandoned 0
//!           sample "one abandoned": waiting 1, offered 3, answered 1, abandoned 1
//!           sample "B answered":    waiting 0, offered 3, answered 2, abandoned 1
//!   then D and E, one after the other, answered at once, 3 s each
//!           sample "day done":      waiting 0, offered 5, answered 4, abandoned 1, SL 80 %, abandonment 20 %
//! ```

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::baresip::{Baresip, BaresipConfig};
use common::*;
use serde_json::Value;

const INNER_ENV: &str = "WALLBOARD_INNER";
const INNER_TEST: &str = "wallboard_in_a_loopback_namespace";
const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "demo-wallboard-token";
const TENANT: &str = "demo";

// ---------------------------------------------------------------------------------------------
// The outer test: preconditions, then the scenario in a new network namespace.

#[test]
fn the_wallboard_shows_the_statistics_apis_figures_while_calls_flow() {
    // Every peer, or a failure naming what to install (nothing is skipped).
    assert!(
        Path::new(CHROMIUM).is_file(),
        "this test needs Debian's Chromium at {CHROMIUM}, which is not installed: run `apt-get install -y chromium` \
         (as root or with sudo), or run scripts/test.sh, which installs every test peer"
    );
    require_peer("node", "apt-get install -y nodejs npm");
    require_peer("npm", "apt-get install -y nodejs npm");
    require_peer("unshare", "apt-get install -y util-linux");
    require_peer("ip", "apt-get install -y iproute2");
    require_peer("baresip", "apt-get install -y baresip");
    require_sipp();
    // The labels are Korean: without a Korean font they are boxes on the screen.
    let fonts = Command::new("fc-list").args([":lang=ko", "family"]).output();
    let korean = fonts.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    assert!(
        !korean.is_empty(),
        "no font with Korean glyphs (fc-list :lang=ko is empty): the wallboard's labels would not show; \
         run `apt-get install -y fonts-noto-cjk` (as root or with sudo)"
    );
    npm_install();

    let ns = namespace_command();
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new("unshare");
    cmd.args(&ns)
        .args(["sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(&exe)
        .args([INNER_TEST, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, "1")
        .current_dir(repo())
        .stdin(Stdio::null());
    let t0 = Instant::now();
    let out = run_bounded(cmd, Duration::from_secs(150));
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("--- the scenario in the namespace (unshare {}) took {:?}:\n{text}", ns.join(" "), t0.elapsed());
    assert!(out.status.success(), "the wallboard scenario failed in its namespace ({}); its output is above", out.status);
    assert!(
        text.contains(&format!("test {INNER_TEST} ... ok")) && text.contains("1 passed"),
        "the inner test did not run (filtered out?); its output is above"
    );
}

/// `-n` as root; `-rn` (a user namespace mapping us to root) otherwise or where `-n` is refused.
fn namespace_command() -> Vec<String> {
    for args in [&["-n"][..], &["-r", "-n"][..]] {
        let ok = Command::new("unshare")
            .args(args)
            .args(["sh", "-c", "ip link set lo up"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return args.iter().map(|s| s.to_string()).collect();
        }
    }
    panic!(
        "cannot make a network namespace: `unshare -n` (as root) and `unshare -rn` (user namespaces) both failed; \
         run the test as root, or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
    );
}

/// tests/web/node_modules from package-lock.json (`npm ci`), never a browser download.
fn npm_install() {
    let web = repo().join("tests/web");
    if web.join("node_modules/playwright-core/package.json").is_file() {
        return;
    }
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&web)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::null());
    let out = run_bounded(cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "`npm ci` in {} failed ({}): {}{}",
        web.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` to its end, killed (its whole process group) after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.unwrap_or_else(|e| panic!("wait for {cmd:?}: {e}")),
        Err(_) => {
            // SAFETY: signalling the process group this function created.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let out = rx.recv_timeout(Duration::from_secs(10)).ok().and_then(|r| r.ok());
            panic!(
                "{cmd:?} did not finish within {limit:?} (killed)\n{}",
                out.map(|o| format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
                    .unwrap_or_default()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The inner test: the whole scenario, inside the namespace.

/// A citizen who calls the centre and hangs up `ms` after callgate answers (with the guidance cut,
/// callgate answers at once and the caller waits in the queue until an agent takes the call).
const CALLER_XML: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="wallboard citizen: calls, stays PAUSE_MS ms, hangs up">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Citizen" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]-[call_number]-uac
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[caller]@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      User-Agent: callgate-e2e wallboard (SIPp)
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=carrier 1 1 IN IP[local_ip_type] [local_ip]
      s=callgate e2e
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 8 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Citizen" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]-[call_number]-uac
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="PAUSE_MS"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Citizen" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]-[call_number]-uac
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"#;

/// The SIPp ports (sip, control, media) of the citizens who call at the same time.
const CALLER_PORTS: [(u16, u16, u16); 3] = [(P_UAC, P_UAC_CTRL, P_UAC_MEDIA), (P_UAC2, P_UAC2_CTRL, P_UAC2_MEDIA), (P_UAS, P_UAS_CTRL, P_UAS_MEDIA)];

/// Starts a citizen: `name`, staying `stay_ms` after the answer, on the `slot`th set of ports.
fn citizen(dir: &Path, ports: &PortBlock, cg: &Callgate, name: &str, stay_ms: u64, slot: usize) -> SippChild {
    let file = dir.join(format!("{name}.xml"));
    fs::write(&file, CALLER_XML.replace("PAUSE_MS", &stay_ms.to_string())).unwrap();
    let (sip, ctrl, media) = CALLER_PORTS[slot];
    // An absolute scenario path replaces tests/sipp/ in the harness's join.
    Sipp::uac(dir, name, &file.display().to_string(), cg.sip, "120").ports(ports, sip, ctrl, media).timeout_s(40).spawn()
}

/// The demo profile with the guidance cut (the test is about the queue) and a 1 s wrap-up.
fn profile() -> ProfileBuilder {
    let mut p = ProfileBuilder::default_profile().trunk_codecs(&["PCMU", "PCMA"]);
    let tenant = p.tenants.values_mut().next().unwrap();
    for s in tenant.get_mut("service").and_then(|v| v.as_array_mut()).unwrap() {
        s.as_table_mut().unwrap().insert("guidance".into(), toml::Value::Array(vec![]));
    }
    for q in tenant.get_mut("queue").and_then(|v| v.as_array_mut()).unwrap() {
        q.as_table_mut().unwrap().insert("wrapup".into(), 1.into());
    }
    p
}

/// tests/web/wallboard.mjs in Chromium: one JSON line per command.
struct Board {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Board {
    fn start(dir: &Path, url: &str) -> (Board, Value) {
        let log = dir.join("wallboard-node.stderr");
        let mut child = Command::new("node")
            .arg(repo().join("tests/web/wallboard.mjs"))
            .args(["--url", url, "--chromium", CHROMIUM, "--tenant", TENANT])
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .expect("start node tests/web/wallboard.mjs");
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut b = Board { child, stdin, lines, log };
        let ready = b.next(Duration::from_secs(40), "the page to show numbers");
        assert_eq!(ready["ready"], true, "the wallboard never showed its figures: {ready:#}\n{}", b.stderr());
        (b, ready)
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn next(&mut self, within: Duration, what: &str) -> Value {
        match self.lines.recv_timeout(within) {
            Ok(l) => serde_json::from_str(&l).unwrap_or_else(|e| panic!("wallboard.mjs printed {l:?}: {e}")),
            Err(_) => panic!("no answer from wallboard.mjs within {within:?} ({what})\n--- its stderr:\n{}", self.stderr()),
        }
    }

    fn ask(&mut self, cmd: &str) -> Value {
        writeln!(self.stdin, "{cmd}").expect("write to wallboard.mjs");
        let v = self.next(Duration::from_secs(30), cmd);
        assert!(v.get("error").is_none(), "wallboard.mjs: {cmd}: {v:#}\n{}", self.stderr());
        v
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // node and the Chromium it started share the process group made at spawn.
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

fn live(cg: &Callgate) -> Value {
    let (st, body) = cg.http_get("/stats/live");
    assert_eq!(st, 200, "GET /stats/live: {st} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /stats/live is not JSON ({e}): {body}"))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("expected an integer, found {v}"))
}

/// What the statistics API (and so the wallboard) must show at a point of the scenario.
#[derive(Clone, Copy, Debug, Default)]
struct Want {
    waiting: i64,
    oncall: i64,
    ready: i64,
    offered: i64,
    answered: i64,
    abandoned: i64,
}

fn matches(api: &Value, w: &Want) -> bool {
    let t = &api["tenants"][TENANT];
    let a = &t["agents"];
    let f = &t["today"];
    int(&t["waiting"]) == w.waiting
        && int(&a["reserved"]) + int(&a["talking"]) + int(&a["held"]) == w.oncall
        && int(&a["ready"]) == w.ready
        && int(&f["offered"]) == w.offered
        && int(&f["answered"]) == w.answered
        && int(&f["abandoned"]) == w.abandoned
}

/// Polls the statistics API until it shows `w` (the scenario reached that point), up to `within`.
fn wait_api(cg: &Callgate, w: &Want, within: Duration, what: &str) {
    let t0 = Instant::now();
    loop {
        let api = live(cg);
        if matches(&api, w) {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "the statistics API never showed {what} {w:?} within {within:?}: {:#}\n--- callgate:\n{}",
            api["tenants"][TENANT],
            cg.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pct(x: &Value) -> String {
    match x.as_f64() {
        Some(f) => format!("{}%", (f * 100.0).round() as i64),
        None => "–".into(),
    }
}

/// One sample of the page: the tiles must show the API's figures, and those must be `w`.
fn check_sample(board: &mut Board, name: &str, w: &Want) -> Value {
    let s = board.ask(&format!("sample {name}"));
    let ctx = format!("sample {name:?}: {s:#}");
    assert_eq!(s["errors"], Value::Array(vec![]), "the page had errors: {ctx}");
    assert_eq!(s["layout"], Value::Array(vec![]), "something does not fit the 1920×1080 screen: {ctx}");
    let api = &s["api"];
    let t = &api["tenants"][TENANT];
    let f = &t["today"];
    let a = &t["agents"];
    let acd: Vec<&Value> = t["queues"].as_array().expect("queues").iter().map(|q| &q["acd"]).collect();
    let sum = |k: &str| acd.iter().map(|q| int(&q[k])).sum::<i64>();
    // The API agrees with itself: the ACD's queue figures and the statistics' tenant figures.
    assert_eq!(sum("waiting"), int(&t["waiting"]), "ACD and statistics disagree on waiting: {ctx}");
    assert_eq!(sum("agents_ready"), int(&a["ready"]), "ACD and statistics disagree on ready agents: {ctx}");
    assert_eq!(sum("offered"), int(&f["offered"]), "queue and tenant disagree on offered: {ctx}");
    // The tiles show the API's figures.
    let tiles = &s["tiles"];
    let tile = |k: &str| tiles[k].as_str().unwrap_or_else(|| panic!("no tile {k}: {ctx}")).to_owned();
    let shown = [
        ("waiting", tile("waiting"), int(&t["waiting"]).to_string()),
        ("handled", tile("handled"), int(&f["answered"]).to_string()),
        ("offered", tile("offered"), int(&f["offered"]).to_string()),
        ("abandoned", tile("abandoned"), int(&f["abandoned"]).to_string()),
        ("transferred", tile("transferred"), int(&f["transfers"]).to_string()),
        ("sl", tile("sl"), pct(&f["service_level"])),
        ("answer-rate", tile("answer-rate"), pct(&f["answer_rate"])),
        ("abandonment", tile("abandonment"), pct(&f["ks_abandonment"])),
        ("agents-ready", tile("agents-ready"), int(&a["ready"]).to_string()),
        ("agents-oncall", tile("agents-oncall"), (int(&a["reserved"]) + int(&a["talking"]) + int(&a["held"])).to_string()),
        ("agents-loggedin", tile("agents-loggedin"), int(&a["logged_in"]).to_string()),
    ];
    for (k, tile, api) in &shown {
        assert_eq!(tile, api, "tile {k} shows {tile:?}, the statistics API says {api:?}: {ctx}");
    }
    // The body's data-* attributes say the same.
    let data = &s["data"];
    for (attr, v) in [("waiting", &t["waiting"]), ("answered", &f["answered"]), ("offered", &f["offered"]), ("abandoned", &f["abandoned"]), ("agentsReady", &a["ready"])] {
        assert_eq!(data[attr].as_str(), Some(v.to_string().as_str()), "data-{attr}: {ctx}");
    }
    assert_eq!(s["agree"], true, "the page never settled on the API's figures: {ctx}");
    // Live from the CTI stream: authenticated, waiting from queue.stats, agents from agent.state.
    assert_eq!((data["connected"].as_str(), data["waitingSource"].as_str(), data["agentsSource"].as_str()), (Some("true"), Some("cti"), Some("cti")), "{ctx}");
    // And they are the scenario's.
    assert!(matches(api, w), "at {name:?} the figures should be {w:?}: {ctx}");
    eprintln!("sample {name}: tiles {}", s["tiles"]);
    s
}

fn png_size(b: &[u8]) -> Option<(u32, u32)> {
    (b.len() > 24 && &b[..8] == b"\x89PNG\r\n\x1a\n" && &b[12..16] == b"IHDR").then(|| {
        (u32::from_be_bytes([b[16], b[17], b[18], b[19]]), u32::from_be_bytes([b[20], b[21], b[22], b[23]]))
    })
}

#[test]
#[ignore = "run by the_wallboard_shows_the_statistics_apis_figures_while_calls_flow inside a loopback-only network namespace"]
fn wallboard_in_a_loopback_namespace() {
    if std::env::var_os(INNER_ENV).is_none() {
        eprintln!("{INNER_TEST} runs only inside the namespace made by the_wallboard_shows_the_statistics_apis_figures_while_calls_flow");
        return;
    }
    let t0 = Instant::now();
    let dir = test_dir("wallboard");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_with(&dir, &ports, profile());
    let agent_cfg = BaresipConfig::agent(
        dir.join("agent-1001"),
        "1001",
        "demo1001",
        cg.sip,
        (ports.port(60), ports.port(65), (ports.port(66), ports.port(69))),
        1000.0,
    );
    let agent = Baresip::start(agent_cfg);
    agent.wait_registered(Duration::from_secs(10));
    let idle = Want { ready: 1, ..Want::default() };
    wait_api(&cg, &idle, Duration::from_secs(10), "the agent ready");

    let url = format!("http://{}/wallboard?token={TOKEN}&tenant={TENANT}", cg.http);
    let (mut board, ready) = Board::start(&dir, &url);
    eprintln!("wallboard ready after {:?}: {}", t0.elapsed(), ready["tiles"]);
    check_sample(&mut board, "idle", &idle);

    // A is answered at once; B and C wait while 1001 talks to A; C gives up after 7 s.
    let a = citizen(&dir, &ports, &cg, "citizen-a", 12_000, 0);
    wait_api(&cg, &Want { oncall: 1, offered: 1, answered: 1, ..Want::default() }, Duration::from_secs(10), "A answered");
    let b = citizen(&dir, &ports, &cg, "citizen-b", 18_000, 1);
    std::thread::sleep(Duration::from_millis(500));
    let c = citizen(&dir, &ports, &cg, "citizen-c", 7_000, 2);
    let two_waiting = Want { waiting: 2, oncall: 1, offered: 3, answered: 1, ..Want::default() };
    wait_api(&cg, &two_waiting, Duration::from_secs(5), "B and C waiting");
    std::thread::sleep(Duration::from_millis(1500)); // let the longest wait grow a little
    let s = check_sample(&mut board, "two waiting", &two_waiting);
    // B has waited about 2 s (more on a slow machine): the tile shows it as min:s.
    let longest = s["tiles"]["longest"].as_str().unwrap_or("").to_owned();
    let secs = longest.split_once(':').and_then(|(m, s)| Some(m.parse::<u32>().ok()? * 60 + s.parse::<u32>().ok()?));
    assert!(matches!(secs, Some(1..=20)), "the longest wait shows {longest:?} with B waiting for about 2 s: {s:#}");

    c.wait().assert_ok(Some(&cg));
    let one_abandoned = Want { waiting: 1, oncall: 1, offered: 3, answered: 1, abandoned: 1, ..Want::default() };
    wait_api(&cg, &one_abandoned, Duration::from_secs(5), "C abandoned");
    check_sample(&mut board, "one abandoned", &one_abandoned);
    // A picture while a caller waits and the agent talks (kept in the test's directory).
    let flowing = board.ask(&format!("shot {}", dir.join("wallboard-flowing.png").display()));
    assert_eq!(flowing["layout"], Value::Array(vec![]), "something does not fit the 1920×1080 screen: {flowing:#}");

    a.wait().assert_ok(Some(&cg));
    let b_answered = Want { oncall: 1, offered: 3, answered: 2, abandoned: 1, ..Want::default() };
    wait_api(&cg, &b_answered, Duration::from_secs(8), "B answered after A's wrap-up");
    check_sample(&mut board, "B answered", &b_answered);
    b.wait().assert_ok(Some(&cg));

    // D and E, one after the other, are answered at once.
    for (i, name) in ["citizen-d", "citizen-e"].iter().enumerate() {
        let free = Want { ready: 1, offered: 3 + i as i64, answered: 2 + i as i64, abandoned: 1, ..Want::default() };
        wait_api(&cg, &free, Duration::from_secs(8), "1001 ready again");
        citizen(&dir, &ports, &cg, name, 3_000, 0).wait().assert_ok(Some(&cg));
    }
    let done = Want { ready: 1, offered: 5, answered: 4, abandoned: 1, ..Want::default() };
    wait_api(&cg, &done, Duration::from_secs(8), "the day done");
    let s = check_sample(&mut board, "day done", &done);
    let f = &s["api"]["tenants"][TENANT]["today"];
    // 4 of 5 answered within 20 s (B waited ~12 s), 1 of 5 abandoned: the KS figures, by hand.
    assert_eq!((s["tiles"]["sl"].as_str(), s["tiles"]["abandonment"].as_str()), (Some("80%"), Some("20%")), "{f:#}");
    assert_eq!(s["data"]["slGrade"], "good", "SL 80 % meets the KS target: {s:#}");
    assert_eq!(s["data"]["abandonmentGrade"], "bad", "abandonment 20 % misses the KS 5 %: {s:#}");

    // The records agree: four calls completed with 1001, one abandoned.
    let recs = cg.wait_records(5);
    let outcomes: Vec<(String, String)> = recs.iter().map(|r| (r.text("outcome"), r.text("agent"))).collect();
    assert_eq!(outcomes.iter().filter(|(o, a)| o == "completed" && a == "1001").count(), 4, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|(o, _)| o == "abandoned").count(), 1, "{outcomes:?}");

    // The screenshot, once the chart has the interval's service level (the page reads the report a
    // few seconds after a call ends).
    std::thread::sleep(Duration::from_millis(3500));
    let shot = dir.join("wallboard.png");
    let r = board.ask(&format!("shot {}", shot.display()));
    assert_eq!(r["errors"], Value::Array(vec![]), "the page had errors: {r:#}");
    assert_eq!(r["layout"], Value::Array(vec![]), "something does not fit the 1920×1080 screen: {r:#}");
    let png = fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert_eq!(png_size(&png), Some((1920, 1080)), "{} is not a 1920×1080 PNG", shot.display());
    // The chart: the interval's service level from GET /stats/report, and the waiting curve that
    // peaked at 2 (B and C).
    let data = &board.ask("sample chart")["data"];
    let bars: u32 = data["chartSlBars"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(bars >= 1, "the chart drew no service-level bar from /stats/report: {data:#}");
    assert_eq!(data["chartWaitingPeak"], "2", "the waiting curve's peak: {data:#}");
    let docs = repo().join("docs/wallboard.png");
    if std::env::var_os("CALLGATE_UPDATE_DOCS").is_some_and(|v| v == "1") {
        fs::create_dir_all(docs.parent().unwrap()).unwrap();
        fs::copy(&shot, &docs).unwrap_or_else(|e| panic!("copy the screenshot to {}: {e}", docs.display()));
    }
    eprintln!("screenshot: {} (and {}), {} bytes, scenario took {:?}", shot.display(), docs.display(), png.len(), t0.elapsed());
    board.quit();
    agent.stop();
    cg.stop_ok();
}
