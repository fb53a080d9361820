//! The end-to-end harness: a real callgate process, real SIPp peers, loopback only.
//!
//! - [`require_peer`]: a missing peer binary FAILS the test with the command that installs it
//!   (never a silent skip).
//! - [`PortBlock`]: each test locks a block of 200 loopback ports (an `flock`ed slot file under
//!   `CARGO_TARGET_TMPDIR`), below the kernel's ephemeral range, so that tests running side by
//!   side (nextest runs every test in its own process) never race for a port. Offsets are the
//!   `P_*` constants; callgate's RTP range is the block's upper half.
//! - [`ProfileBuilder`]: a copy of `sip-profiles/default` as TOML tables, edited per test and
//!   written to the test's directory (audio_dir made absolute, ports from the block).
//! - [`Callgate`]: starts the binary with `--profile/--sip/--http/--db`, waits for
//!   `callgate ready` on stderr (20 s), stops it with SIGTERM and returns its exit and output.
//! - [`Sipp`]: one bounded SIPp run (`-m`, `-timeout … -timeout_error`, `-nostdin`, traces in
//!   files) returning its verdict with everything needed to explain a failure.
//! - [`RtpSink`] and [`check_announcement`]: the caller's RTP port, and the checks a received
//!   G.711 stream must pass.
//! - [`records`]: the `calls` table read with rusqlite.
#![allow(dead_code)]

pub mod baresip;
pub mod desk;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const SIPP_HINT: &str = "apt-get install -y sip-tester";
/// The caller number the scenarios put in From.
pub const CALLER: &str = "0311112222";
const READY: &str = "callgate ready";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Paths and peers

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn callgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_callgate"))
}

pub fn scenario(name: &str) -> PathBuf {
    let p = repo().join("tests/sipp").join(name);
    assert!(p.is_file(), "SIPp scenario {} is missing", p.display());
    p
}

/// The path of `bin` on PATH (or in /usr/sbin, /sbin), or a panic naming what to install.
/// A test that needs a peer FAILS without it: nothing is skipped.
pub fn require_peer(bin: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "this test needs `{bin}`, which is not installed: run `{install}` \
         (as root or with sudo), or run scripts/test.sh, which installs every test peer"
    );
}

pub fn require_sipp() -> PathBuf {
    require_peer("sipp", SIPP_HINT)
}

/// A fresh directory for one test's files, under cargo's per-target temporary directory.
/// It is kept after the test so that a failure can be inspected.
pub fn test_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("e2e")
        .join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
    d
}

// ---------------------------------------------------------------------------------------------
// Ports

/// callgate SIP (UDP and TCP).
pub const P_SIP: u16 = 0;
/// callgate HTTP.
pub const P_HTTP: u16 = 1;
/// SIPp UAC SIP port, control port, media port (+2 also bound by SIPp).
pub const P_UAC: u16 = 2;
pub const P_UAC_CTRL: u16 = 3;
pub const P_UAC_MEDIA: u16 = 10;
/// SIPp UAS.
pub const P_UAS: u16 = 4;
pub const P_UAS_CTRL: u16 = 5;
pub const P_UAS_MEDIA: u16 = 20;
/// A second SIPp UAC (for tests with two callers).
pub const P_UAC2: u16 = 6;
pub const P_UAC2_CTRL: u16 = 7;
pub const P_UAC2_MEDIA: u16 = 30;
/// The RTP port the test's own offer names (an [`RtpSink`]); +2 for a second caller.
pub const P_RTP: u16 = 40;
pub const P_RTP2: u16 = 42;
/// Raw sockets the test opens itself.
pub const P_RAW: u16 = 50;
/// callgate's RTP range: the upper half of the block.
pub const P_CALLGATE_RTP: (u16, u16) = (100, 199);

const PORT_BASE: u16 = 10000;
const BLOCK: u16 = 200;
const SLOTS: u16 = 50; // 10000..20000: below the ephemeral range (32768+), above well-known ports

/// A block of 200 loopback ports this test holds for its lifetime.
pub struct PortBlock {
    pub base: u16,
    _lock: File,
}

impl PortBlock {
    pub fn acquire() -> PortBlock {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-ports");
        fs::create_dir_all(&dir).expect("create the port-lock directory");
        let start = (std::process::id() as u16) % SLOTS;
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            let path = dir.join(format!("slot-{slot}.lock"));
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .expect("open a port-lock file");
            // SAFETY: flock on a file descriptor we own.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r != 0 {
                continue;
            }
            let base = PORT_BASE + slot * BLOCK;
            // Something outside the tests may use a port of this block: check the fixed ones.
            let free = [P_SIP, P_HTTP, P_UAC, P_UAS, P_UAC2]
                .iter()
                .all(|&o| tcp_udp_free(base + o))
                && [P_UAC_MEDIA, P_UAS_MEDIA, P_UAC2_MEDIA, P_RTP, P_RTP2]
                    .iter()
                    .all(|&o| udp_free(base + o) && udp_free(base + o + 2));
            if free {
                return PortBlock { base, _lock: f };
            }
        }
        panic!(
            "no free block of {BLOCK} loopback ports in {PORT_BASE}..{}",
            PORT_BASE + SLOTS * BLOCK
        );
    }

    pub fn port(&self, offset: u16) -> u16 {
        assert!(offset < BLOCK);
        self.base + offset
    }

    pub fn addr(&self, offset: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port(offset)))
    }

    pub fn rtp_range(&self) -> String {
        format!(
            "{}-{}",
            self.port(P_CALLGATE_RTP.0),
            self.port(P_CALLGATE_RTP.1)
        )
    }
}

fn udp_free(port: u16) -> bool {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn tcp_udp_free(port: u16) -> bool {
    udp_free(port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Profiles

/// `sip-profiles/default` as TOML tables, to edit and write elsewhere.
pub struct ProfileBuilder {
    pub edge: toml::Table,
    pub trunks: toml::Table,
    /// file name -> table
    pub tenants: BTreeMap<String, toml::Table>,
}

fn read_toml(p: &Path) -> toml::Table {
    let s = fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    s.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    t.entry(key.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("[{key}] is not a table"))
}

fn strings(v: &[&str]) -> toml::Value {
    toml::Value::Array(
        v.iter()
            .map(|s| toml::Value::String(s.to_string()))
            .collect(),
    )
}

impl ProfileBuilder {
    pub fn default_profile() -> ProfileBuilder {
        let dir = repo().join("sip-profiles/default");
        let mut edge = read_toml(&dir.join("callgate.toml"));
        // audio_dir is relative to the profile directory: make it absolute for the copy.
        let audio = edge
            .get("audio_dir")
            .and_then(|v| v.as_str())
            .unwrap_or("audio")
            .to_string();
        let audio = dir.join(audio);
        let audio = audio.canonicalize().unwrap_or(audio);
        edge.insert(
            "audio_dir".into(),
            toml::Value::String(audio.display().to_string()),
        );
        let trunks = read_toml(&dir.join("trunks.toml"));
        let mut tenants = BTreeMap::new();
        if let Ok(rd) = fs::read_dir(dir.join("tenants")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".toml") {
                    tenants.insert(name, read_toml(&e.path()));
                }
            }
        }
        ProfileBuilder {
            edge,
            trunks,
            tenants,
        }
    }

    /// The default profile with its callers not queued: the guidance plays and callgate hangs up
    /// (for tests of the announcement itself).
    pub fn announcement_only() -> ProfileBuilder {
        let mut p = ProfileBuilder::default_profile();
        for t in p.tenants.values_mut() {
            if let Some(services) = t.get_mut("service").and_then(|v| v.as_array_mut()) {
                for s in services.iter_mut().filter(|s| s.get("menu").is_none()) {
                    s.as_table_mut().unwrap().remove("queue");
                }
            }
        }
        p
    }

    /// Set `[section] key = value` in callgate.toml.
    pub fn set(mut self, section: &str, key: &str, value: impl Into<toml::Value>) -> Self {
        table(&mut self.edge, section).insert(key.into(), value.into());
        self
    }

    fn trunk_list(&mut self) -> &mut Vec<toml::Value> {
        self.trunks
            .get_mut("trunk")
            .and_then(|v| v.as_array_mut())
            .expect("trunks.toml of the default profile has [[trunk]] tables")
    }

    /// Replace the source networks of every trunk.
    pub fn trunk_networks(mut self, nets: &[&str]) -> Self {
        for t in self.trunk_list() {
            t.as_table_mut()
                .unwrap()
                .insert("networks".into(), strings(nets));
        }
        self
    }

    /// Replace the codecs of every trunk.
    pub fn trunk_codecs(mut self, codecs: &[&str]) -> Self {
        for t in self.trunk_list() {
            t.as_table_mut()
                .unwrap()
                .insert("codecs".into(), strings(codecs));
        }
        self
    }

    /// Add a `[[service]]` to the first tenant file (and its number to every trunk that lists
    /// numbers).
    pub fn add_service(mut self, number: &str, name: &str, bridge_to: Option<&str>) -> Self {
        for t in self.trunk_list() {
            let t = t.as_table_mut().unwrap();
            if let Some(nums) = t.get_mut("numbers").and_then(|v| v.as_array_mut()) {
                if !nums.is_empty() {
                    nums.push(toml::Value::String(number.into()));
                }
            }
        }
        let (_, tenant) = self
            .tenants
            .iter_mut()
            .next()
            .expect("the default profile has a tenant");
        let services = tenant
            .entry("service".to_string())
            .or_insert_with(|| toml::Value::Array(vec![]))
            .as_array_mut()
            .expect("service is an array of tables");
        let mut s = toml::Table::new();
        s.insert("number".into(), number.into());
        s.insert("name".into(), name.into());
        if let Some(b) = bridge_to {
            s.insert("bridge_to".into(), b.into());
        }
        services.push(toml::Value::Table(s));
        self
    }

    /// Write the profile into `dir/profile`, with the block's ports and a database in `dir`.
    pub fn write(mut self, dir: &Path, ports: &PortBlock) -> PathBuf {
        let listen = table(&mut self.edge, "listen");
        listen.insert("sip".into(), ports.addr(P_SIP).to_string().into());
        listen.insert("http".into(), ports.addr(P_HTTP).to_string().into());
        let media = table(&mut self.edge, "media");
        media.insert("rtp_ports".into(), ports.rtp_range().into());
        let records = table(&mut self.edge, "records");
        records.insert(
            "database".into(),
            dir.join("calls.db").display().to_string().into(),
        );
        let p = dir.join("profile");
        fs::create_dir_all(p.join("tenants")).unwrap();
        let w = |f: &Path, t: &toml::Table| {
            fs::write(f, toml::to_string(t).expect("serialise TOML"))
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        };
        w(&p.join("callgate.toml"), &self.edge);
        w(&p.join("trunks.toml"), &self.trunks);
        for (name, t) in &self.tenants {
            w(&p.join("tenants").join(name), t);
        }
        p
    }
}

// ---------------------------------------------------------------------------------------------
// The callgate process

/// Output of a child process collected by a reader thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn spawn<R: Read + Send + 'static>(
        r: R,
        ready: Option<mpsc::Sender<()>>,
    ) -> (Captured, JoinHandle<()>) {
        let c = Captured::default();
        let c2 = c.clone();
        let h = std::thread::spawn(move || {
            let mut rd = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                match rd.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let s = String::from_utf8_lossy(&line);
                        c2.0.lock().unwrap().push_str(&s);
                        if let Some(tx) = &ready {
                            if s.contains(READY) {
                                let _ = tx.send(());
                            }
                        }
                    }
                }
            }
        });
        (c, h)
    }
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// A running callgate.
pub struct Callgate {
    child: Option<Child>,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    pub db: PathBuf,
    pub dir: PathBuf,
    pub profile: PathBuf,
    stderr: Captured,
    stdout: Captured,
    readers: Vec<JoinHandle<()>>,
}

/// How callgate ended after [`Callgate::stop`].
pub struct Stopped {
    pub status: ExitStatus,
    pub stderr: String,
    pub stdout: String,
    pub took: Duration,
}

impl Callgate {
    /// Write `profile` for this test and start callgate on it.
    pub fn start_with(dir: &Path, ports: &PortBlock, profile: ProfileBuilder) -> Callgate {
        let p = profile.write(dir, ports);
        Callgate::start(dir, ports, &p)
    }

    /// The default profile (with this test's ports).
    pub fn start_default(dir: &Path, ports: &PortBlock) -> Callgate {
        Callgate::start_with(dir, ports, ProfileBuilder::default_profile())
    }

    pub fn start(dir: &Path, ports: &PortBlock, profile: &Path) -> Callgate {
        Callgate::start_at(dir, ports, profile, ports.addr(P_SIP))
    }

    /// As [`Callgate::start`], with SIP (and so media) on `sip` (e.g. `[::1]:PORT`).
    pub fn start_at(dir: &Path, ports: &PortBlock, profile: &Path, sip: SocketAddr) -> Callgate {
        let http = ports.addr(P_HTTP);
        let db = dir.join("calls.db");
        let mut cmd = Command::new(callgate_bin());
        cmd.arg("--profile")
            .arg(profile)
            .arg("--sip")
            .arg(sip.to_string())
            .arg("--http")
            .arg(http.to_string())
            .arg("--db")
            .arg(&db)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", callgate_bin().display()));
        let (tx, rx) = mpsc::channel();
        let err: ChildStderr = child.stderr.take().unwrap();
        let out: ChildStdout = child.stdout.take().unwrap();
        let (stderr, h1) = Captured::spawn(err, Some(tx));
        let (stdout, h2) = Captured::spawn(out, None);
        let mut cg = Callgate {
            child: Some(child),
            sip,
            http,
            db,
            dir: dir.to_path_buf(),
            profile: profile.to_path_buf(),
            stderr,
            stdout,
            readers: vec![h1, h2],
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => break,
                Err(_) => {
                    if let Some(st) = cg.child.as_mut().unwrap().try_wait().unwrap() {
                        std::thread::sleep(Duration::from_millis(100));
                        panic!(
                            "callgate exited ({st}) before printing `{READY}`\n--- command: {cmd:?}\n--- stderr:\n{}\n--- stdout:\n{}",
                            cg.stderr.text(),
                            cg.stdout.text()
                        );
                    }
                    if Instant::now() > deadline {
                        panic!(
                            "callgate did not print `{READY}` within {READY_TIMEOUT:?}\n--- command: {cmd:?}\n--- stderr:\n{}",
                            cg.stderr.text()
                        );
                    }
                }
            }
        }
        cg
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("callgate is running").id()
    }

    /// Everything callgate wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Send SIGTERM and wait (20 s) for the exit; returns the status and the whole output.
    pub fn stop(self) -> Stopped {
        let t0 = Instant::now();
        self.sigterm();
        self.wait_exit(t0)
    }

    /// Send SIGTERM only (see [`Callgate::wait_exit`]).
    pub fn sigterm(&self) {
        let pid = self.pid();
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }

    /// Wait (20 s from `since`) for the exit after [`Callgate::sigterm`].
    pub fn wait_exit(mut self, since: Instant) -> Stopped {
        let t0 = since;
        let mut child = self.child.take().expect("callgate is running");
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "callgate did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed)\n--- stderr:\n{}",
                    self.stderr.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = t0.elapsed();
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        self.save_output();
        Stopped {
            status,
            stderr: self.stderr.text(),
            stdout: self.stdout.text(),
            took,
        }
    }

    /// SIGTERM, expect exit status 0, and return the output.
    pub fn stop_ok(self) -> Stopped {
        let s = self.stop();
        assert!(
            s.status.success(),
            "callgate exited with {} after SIGTERM (expected 0)\n--- stderr:\n{}\n--- stdout:\n{}",
            s.status,
            s.stderr,
            s.stdout
        );
        s
    }

    /// GET a path on the HTTP address: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
    }

    /// The Prometheus text of /metrics.
    pub fn metrics(&self) -> Metrics {
        let (st, body) = self.http_get("/metrics");
        assert_eq!(st, 200, "GET /metrics answered {st}: {body}");
        Metrics(body)
    }

    /// Poll until `cond(metrics)` holds (up to `timeout`).
    pub fn wait_metrics(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let t0 = Instant::now();
        loop {
            let m = self.metrics();
            if cond(&m) {
                return m;
            }
            if t0.elapsed() > timeout {
                panic!("timed out after {timeout:?} waiting for {what}\n--- /metrics:\n{}\n--- stderr:\n{}", m.0, self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Records in the database now (the writer batches: see [`Callgate::wait_records`]).
    pub fn records(&self) -> Vec<Record> {
        records(&self.db)
    }

    /// Poll the database until it holds at least `n` records (up to 10 s).
    pub fn wait_records(&self, n: usize) -> Vec<Record> {
        let t0 = Instant::now();
        loop {
            let r = if self.db.exists() {
                records(&self.db)
            } else {
                vec![]
            };
            if r.len() >= n {
                return r;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                panic!(
                    "{} has {} call records after 10 s, expected {n}: {r:#?}\n--- stderr:\n{}",
                    self.db.display(),
                    r.len(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Callgate {
    /// Keep callgate's output next to the test's other files (callgate.stderr, callgate.stdout).
    fn save_output(&self) {
        let _ = fs::write(self.dir.join("callgate.stderr"), self.stderr.text());
        let _ = fs::write(self.dir.join("callgate.stdout"), self.stdout.text());
    }
}

impl Drop for Callgate {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.save_output();
        }
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Prometheus text exposition.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample `name{labels…}` (every given label must match; others may exist).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        for line in self.0.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let (n, l) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                continue;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| l.split(',').any(|kv| kv.trim() == format!("{k}=\"{v}\"")));
            if ok {
                return value.trim().parse().ok();
            }
        }
        None
    }

    pub fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("/metrics has no sample {name}{labels:?}:\n{}", self.0))
    }
}

// ---------------------------------------------------------------------------------------------
// SIPp

/// One SIPp invocation, bounded in calls and time, with its traces in files of the test dir.
pub struct Sipp {
    dir: PathBuf,
    name: String,
    args: Vec<String>,
    calls: u32,
    timeout_s: u32,
}

/// What a SIPp run left behind.
pub struct SippRun {
    pub name: String,
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// -trace_err: unexpected messages and why calls failed.
    pub errors: String,
    /// -trace_msg: every message sent and received.
    pub messages: String,
    /// -trace_logs: the scenario's <log> actions.
    pub logs: String,
    /// -trace_stat: the statistics CSV.
    pub stat: String,
    pub finished: Instant,
}

impl Sipp {
    fn new(dir: &Path, name: &str, scenario_file: &str) -> Sipp {
        require_sipp();
        let f = |s: &str| dir.join(format!("{name}_{s}")).display().to_string();
        let args = vec![
            "-sf".into(),
            scenario(scenario_file).display().to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-mi".into(),
            "127.0.0.1".into(),
            "-ci".into(),
            "127.0.0.1".into(),
            "-nostdin".into(),
            "-trace_msg".into(),
            "-message_file".into(),
            f("messages.log"),
            "-trace_err".into(),
            "-error_file".into(),
            f("errors.log"),
            "-trace_logs".into(),
            "-log_file".into(),
            f("logs.log"),
            "-trace_stat".into(),
            "-stf".into(),
            f("stat.csv"),
        ];
        Sipp {
            dir: dir.to_path_buf(),
            name: name.into(),
            args,
            calls: 1,
            timeout_s: 30,
        }
    }

    /// A caller: `scenario_file` from tests/sipp/, sending to `target`, dialling `service`.
    /// SIP, control and media ports come from `ports` at the given offsets.
    pub fn uac(
        dir: &Path,
        name: &str,
        scenario_file: &str,
        target: SocketAddr,
        service: &str,
    ) -> Sipp {
        let mut s = Sipp::new(dir, name, scenario_file);
        s.args.insert(0, target.to_string());
        s.args.extend([
            "-s".into(),
            service.into(),
            "-key".into(),
            "caller".into(),
            CALLER.into(),
        ]);
        s
    }

    /// A callee (UAS) listening on its own port.
    pub fn uas(dir: &Path, name: &str, scenario_file: &str) -> Sipp {
        Sipp::new(dir, name, scenario_file)
    }

    /// SIP port `sip`, control port `ctrl`, media port `media` (SIPp binds media and media+2).
    pub fn ports(mut self, ports: &PortBlock, sip: u16, ctrl: u16, media: u16) -> Sipp {
        self.args.extend([
            "-p".into(),
            ports.port(sip).to_string(),
            "-cp".into(),
            ports.port(ctrl).to_string(),
            "-mp".into(),
            ports.port(media).to_string(),
        ]);
        self
    }

    pub fn key(mut self, k: &str, v: &str) -> Sipp {
        self.args.extend(["-key".into(), k.into(), v.into()]);
        self
    }

    pub fn arg(mut self, a: &str) -> Sipp {
        self.args.push(a.into());
        self
    }

    /// SIPp's SIP and media on `::1` instead of 127.0.0.1 (its control socket is IPv4 only).
    pub fn ipv6(mut self) -> Sipp {
        for i in 1..self.args.len() {
            if (self.args[i - 1] == "-i" || self.args[i - 1] == "-mi") && self.args[i] == "127.0.0.1" {
                self.args[i] = "::1".into();
            }
        }
        self
    }

    pub fn tcp(self) -> Sipp {
        self.arg("-t").arg("t1")
    }

    pub fn calls(mut self, n: u32) -> Sipp {
        self.calls = n;
        self
    }

    pub fn timeout_s(mut self, s: u32) -> Sipp {
        self.timeout_s = s;
        self
    }

    fn command(&self) -> (Command, String) {
        let mut args = self.args.clone();
        args.extend([
            "-m".into(),
            self.calls.to_string(),
            "-timeout".into(),
            format!("{}s", self.timeout_s),
            "-timeout_error".into(),
        ]);
        let mut c = Command::new(require_sipp());
        c.args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        (c, format!("sipp {}", args.join(" ")))
    }

    /// Run to the end.
    pub fn run(self) -> SippRun {
        self.spawn().wait()
    }

    /// Start in the background (a UAS, or a caller running alongside the test).
    pub fn spawn(self) -> SippChild {
        let (mut c, cmdline) = self.command();
        let mut child = c.spawn().unwrap_or_else(|e| panic!("start sipp: {e}"));
        let (stdout, h1) = Captured::spawn(child.stdout.take().unwrap(), None);
        let (stderr, h2) = Captured::spawn(child.stderr.take().unwrap(), None);
        SippChild {
            child: Some(child),
            sipp: self,
            cmdline,
            stdout,
            stderr,
            readers: vec![h1, h2],
        }
    }
}

pub struct SippChild {
    child: Option<Child>,
    sipp: Sipp,
    cmdline: String,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<JoinHandle<()>>,
}

impl SippChild {
    /// Wait for the exit (SIPp bounds itself with -timeout).
    pub fn wait(mut self) -> SippRun {
        let mut child = self.child.take().unwrap();
        let limit = Duration::from_secs(u64::from(self.sipp.timeout_s) + 15);
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let finished = Instant::now();
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        let rd = |s: &str| {
            fs::read_to_string(self.sipp.dir.join(format!("{}_{s}", self.sipp.name)))
                .unwrap_or_default()
        };
        SippRun {
            name: self.sipp.name.clone(),
            cmdline: self.cmdline.clone(),
            status,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            errors: rd("errors.log"),
            messages: rd("messages.log"),
            logs: rd("logs.log"),
            stat: rd("stat.csv"),
            finished,
        }
    }
}

impl Drop for SippChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl SippRun {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// SIPp's exit codes, spelled out.
    pub fn verdict(&self) -> &'static str {
        match self.code() {
            Some(0) => "all calls succeeded",
            Some(1) => "at least one call failed",
            Some(97) => "exit on internal command",
            Some(99) => "normal exit without calls processed",
            Some(253) => "RTP validation failure",
            Some(254) => "could not bind a socket",
            Some(255) => "fatal error (or the global -timeout was reached)",
            _ => "killed or unknown exit",
        }
    }

    /// Everything about this run, for a failure message.
    pub fn explain(&self) -> String {
        let tail = |s: &str, n: usize| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "=== SIPp `{}`: exit {:?} ({})\n--- command: {}\n--- errors (-trace_err):\n{}\n--- stderr:\n{}\n--- logs:\n{}\n--- messages (last 120 lines):\n{}\n--- screen (last 25 lines):\n{}",
            self.name,
            self.code(),
            self.verdict(),
            self.cmdline,
            self.errors.trim(),
            self.stderr.trim(),
            self.logs.trim(),
            tail(&self.messages, 120),
            tail(&self.stdout, 25),
        )
    }

    /// Panic unless every call of the scenario succeeded. `cg` adds callgate's stderr.
    pub fn assert_ok(&self, cg: Option<&Callgate>) {
        if self.code() != Some(0) {
            let extra = cg
                .map(|c| format!("\n=== callgate stderr:\n{}", c.stderr()))
                .unwrap_or_default();
            panic!(
                "SIPp scenario `{}` failed\n{}{extra}",
                self.name,
                self.explain()
            );
        }
    }

    /// The value of `key=VALUE` written by the scenario's <log> actions.
    pub fn log_value(&self, key: &str) -> Option<String> {
        let pre = format!("{key}=");
        self.logs
            .lines()
            .find_map(|l| l.trim().strip_prefix(&pre).map(|v| v.trim().to_string()))
    }

    /// The Call-ID of the first message SIPp sent.
    pub fn call_id(&self) -> Option<String> {
        self.messages.lines().find_map(|l| {
            l.strip_prefix("Call-ID:")
                .or_else(|| l.strip_prefix("i:"))
                .map(|v| v.trim().to_string())
        })
    }

    /// Every message received (as logged by -trace_msg), in order.
    pub fn received(&self) -> Vec<String> {
        self.messages_where("received")
    }

    pub fn sent(&self) -> Vec<String> {
        self.messages_where("sent")
    }

    fn messages_where(&self, dir: &str) -> Vec<String> {
        let mut out = Vec::new();
        for block in self
            .messages
            .split("----------------------------------------------- ")
        {
            let mut lines = block.lines();
            let _stamp = lines.next();
            let head = lines.next().unwrap_or("");
            if head.contains(&format!("message {dir}")) {
                out.push(lines.collect::<Vec<_>>().join("\n").trim().to_string());
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// RTP

#[derive(Clone, Debug)]
pub struct RtpPacket {
    pub at: Instant,
    pub from: SocketAddr,
    pub len: usize,
    pub version: u8,
    pub padding: bool,
    pub extension: bool,
    pub csrc_count: u8,
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
}

impl RtpPacket {
    fn parse(b: &[u8], from: SocketAddr, at: Instant) -> Option<RtpPacket> {
        if b.len() < 12 {
            return None;
        }
        Some(RtpPacket {
            at,
            from,
            len: b.len(),
            version: b[0] >> 6,
            padding: b[0] & 0x20 != 0,
            extension: b[0] & 0x10 != 0,
            csrc_count: b[0] & 0x0f,
            marker: b[1] & 0x80 != 0,
            pt: b[1] & 0x7f,
            seq: u16::from_be_bytes([b[2], b[3]]),
            ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        })
    }
}

/// The caller's media port: every datagram that arrives is kept.
pub struct RtpSink {
    pub port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(Vec<RtpPacket>, usize)>>,
}

impl RtpSink {
    pub fn bind(port: u16) -> RtpSink {
        RtpSink::bind_ip(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    pub fn bind_ip(ip: std::net::IpAddr, port: u16) -> RtpSink {
        let sock = UdpSocket::bind((ip, port))
            .unwrap_or_else(|e| panic!("bind RTP port {ip} {port}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut pkts = Vec::new();
            let mut junk = 0;
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => match RtpPacket::parse(&buf[..n], from, Instant::now()) {
                        Some(p) => pkts.push(p),
                        None => junk += 1,
                    },
                    Err(_) => continue,
                }
            }
            (pkts, junk)
        });
        RtpSink {
            port,
            stop,
            handle: Some(handle),
        }
    }

    /// Stop listening; returns the packets and the count of datagrams too short to be RTP.
    pub fn finish(mut self) -> (Vec<RtpPacket>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for RtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The number of 20 ms G.711 frames in an 8 kHz 16-bit mono WAV (the last one padded).
pub fn wav_frames(path: &Path) -> usize {
    let b = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        b.len() > 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WAVE",
        "{} is not a RIFF WAVE file",
        path.display()
    );
    let mut i = 12;
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let size = u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
        if id == b"data" {
            let size = size.min(b.len() - i - 8);
            return (size / 2).div_ceil(160);
        }
        i += 8 + size + (size & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// The guidance prompt of the default profile's 120 service, as a file.
pub fn default_guidance_wav() -> PathBuf {
    let p = ProfileBuilder::default_profile();
    let audio = PathBuf::from(p.edge.get("audio_dir").unwrap().as_str().unwrap());
    let tenant = p.tenants.values().next().unwrap();
    let svc = tenant["service"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s.get("number").and_then(|n| n.as_str()) == Some("120"))
        .expect("the default profile has a 120 service");
    let names: Vec<&str> = svc["guidance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "the test expects one guidance prompt on 120, found {names:?}"
    );
    audio.join(format!("{}.wav", names[0]))
}

/// What a received announcement stream looked like.
#[derive(Debug)]
pub struct StreamReport {
    pub packets: usize,
    pub ssrc: u32,
    pub from: SocketAddr,
    pub span: Duration,
    pub max_gap: Duration,
}

/// Check a G.711 stream of 20 ms packets: every packet 12 + 160 bytes, RTP version 2, no
/// padding/extension/CSRC, payload type `pt`, one SSRC and one source address, sequence numbers
/// consecutive, timestamps +160, the marker bit on the first packet only, and paced at 20 ms.
/// Returns the first violation, described.
pub fn check_stream(pkts: &[RtpPacket], pt: u8) -> Result<StreamReport, String> {
    let first = pkts
        .first()
        .ok_or("no RTP packet arrived at the offered address")?;
    if !first.marker {
        return Err(format!("the first packet has no marker bit: {first:?}"));
    }
    let mut max_gap = Duration::ZERO;
    for (i, p) in pkts.iter().enumerate() {
        let bad = |what: String| Err(format!("packet {i} of {}: {what}: {p:?}", pkts.len()));
        if p.version != 2 || p.padding || p.extension || p.csrc_count != 0 {
            return bad("not a plain RTP v2 header (V=2, no P/X/CC)".into());
        }
        if p.len != 172 {
            return bad(format!(
                "{} bytes, expected 172 (12 header + 160 G.711 for 20 ms)",
                p.len
            ));
        }
        if p.pt != pt {
            return bad(format!("payload type {}, the SDP answer said {pt}", p.pt));
        }
        if p.ssrc != first.ssrc {
            return bad(format!(
                "SSRC {:#x}, the stream began with {:#x}",
                p.ssrc, first.ssrc
            ));
        }
        if p.from != first.from {
            return bad(format!(
                "from {}, the stream began from {}",
                p.from, first.from
            ));
        }
        if i > 0 {
            let prev = &pkts[i - 1];
            if p.seq != prev.seq.wrapping_add(1) {
                return bad(format!(
                    "sequence {} after {} (lost, duplicated or reordered)",
                    p.seq, prev.seq
                ));
            }
            if p.ts != prev.ts.wrapping_add(160) {
                return bad(format!(
                    "timestamp {} after {} (expected +160)",
                    p.ts, prev.ts
                ));
            }
            if p.marker {
                return bad(
                    "marker bit set after the first packet (no silence suppression in a prompt)"
                        .into(),
                );
            }
            max_gap = max_gap.max(p.at - prev.at);
        }
    }
    let span = pkts.last().unwrap().at - first.at;
    let expected = Duration::from_millis(20) * (pkts.len() as u32 - 1);
    let (lo, hi) = (
        expected.mul_f64(0.9),
        expected.mul_f64(1.1) + Duration::from_millis(200),
    );
    if pkts.len() > 10 && (span < lo || span > hi) {
        return Err(format!(
            "{} packets arrived over {span:?}; paced at 20 ms they take {expected:?} (allowed {lo:?}..{hi:?})",
            pkts.len()
        ));
    }
    if max_gap > Duration::from_millis(300) {
        return Err(format!(
            "a gap of {max_gap:?} between two packets (paced at 20 ms)"
        ));
    }
    Ok(StreamReport {
        packets: pkts.len(),
        ssrc: first.ssrc,
        from: first.from,
        span,
        max_gap,
    })
}

/// The address and payload type of an SDP answer's first audio line: from the scenario's
/// `answer_mline=m=audio PORT RTP/AVP PT` log line and the c= line of the 200 received.
pub fn answer_media(run: &SippRun) -> (u16, u8) {
    let mline = run
        .log_value("answer_mline")
        .unwrap_or_else(|| panic!("no answer_mline in SIPp's log\n{}", run.explain()));
    let parts: Vec<&str> = mline
        .trim_start_matches("m=audio")
        .split_whitespace()
        .collect();
    let port = parts
        .first()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad m= line {mline:?}"));
    let pt = parts
        .get(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad m= line {mline:?}"));
    (port, pt)
}

// ---------------------------------------------------------------------------------------------
// Records

/// One row of the `calls` table: every column, by name.
#[derive(Debug, Clone)]
pub struct Record(pub BTreeMap<String, rusqlite::types::Value>);

impl Record {
    pub fn text(&self, col: &str) -> String {
        match self.0.get(col) {
            Some(rusqlite::types::Value::Text(s)) => s.clone(),
            Some(rusqlite::types::Value::Integer(i)) => i.to_string(),
            Some(rusqlite::types::Value::Null) => String::new(),
            other => panic!("column {col}: {other:?} in {self:#?}"),
        }
    }
    pub fn int(&self, col: &str) -> Option<i64> {
        match self.0.get(col) {
            Some(rusqlite::types::Value::Integer(i)) => Some(*i),
            Some(rusqlite::types::Value::Null) => None,
            other => panic!("column {col}: {other:?} (expected an integer) in {self:#?}"),
        }
    }
}

/// Every row of the `calls` table, in arrival order.
pub fn records(db: &Path) -> Vec<Record> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut st = match conn.prepare("SELECT * FROM calls ORDER BY arrived_ms") {
        Ok(s) => s,
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => {
            return vec![]
        }
        Err(e) => panic!("query {}: {e}", db.display()),
    };
    let cols: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
    let rows = st
        .query_map([], |row| {
            let mut m = BTreeMap::new();
            for (i, c) in cols.iter().enumerate() {
                m.insert(c.clone(), row.get::<_, rusqlite::types::Value>(i)?);
            }
            Ok(Record(m))
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// The one record of a test's one call, with the fields every record must have checked.
pub fn assert_one_record(recs: &[Record], outcome: &str, status: i64, number: &str) -> Record {
    assert_eq!(
        recs.len(),
        1,
        "expected exactly one call record, found {}: {recs:#?}",
        recs.len()
    );
    let r = recs[0].clone();
    let mut problems = String::new();
    if r.text("outcome") != outcome {
        let _ = writeln!(
            problems,
            "outcome {:?}, expected {outcome:?}",
            r.text("outcome")
        );
    }
    if r.int("sip_status") != Some(status) {
        let _ = writeln!(
            problems,
            "sip_status {:?}, expected {status}",
            r.int("sip_status")
        );
    }
    if r.text("number") != number {
        let _ = writeln!(
            problems,
            "number {:?}, expected {number:?}",
            r.text("number")
        );
    }
    if !r.text("caller").contains(CALLER) {
        let _ = writeln!(
            problems,
            "caller {:?}, expected the From user {CALLER:?}",
            r.text("caller")
        );
    }
    if r.text("call_id").is_empty() || r.text("sip_call_id").is_empty() {
        let _ = writeln!(problems, "empty call_id or sip_call_id");
    }
    let arrived = r.int("arrived_ms").unwrap_or(0);
    let ended = r.int("ended_ms").unwrap_or(0);
    if arrived <= 0 || ended < arrived {
        let _ = writeln!(
            problems,
            "arrived_ms {arrived} / ended_ms {ended} out of order"
        );
    }
    if let Some(a) = r.int("answered_ms") {
        if a < arrived || a > ended {
            let _ = writeln!(
                problems,
                "answered_ms {a} not within arrived_ms {arrived}..ended_ms {ended}"
            );
        }
    }
    assert!(
        problems.is_empty(),
        "call record is wrong:\n{problems}record: {r:#?}"
    );
    r
}

// ---------------------------------------------------------------------------------------------
// Raw SIP over UDP (for what SIPp cannot send or match, e.g. a request without Call-ID)

/// Send one datagram to `to` from `from` and wait up to `wait` for one answer.
pub fn udp_exchange(from: u16, to: SocketAddr, data: &[u8], wait: Duration) -> Option<String> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, from))
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{from}: {e}"));
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(data, to).unwrap();
    let mut buf = vec![0u8; 65536];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).to_string()),
        Err(_) => None,
    }
}

/// Send one request from 127.0.0.1:`from` and collect the answers until a final one (>= 200)
/// or `wait` passes. Returns every answer, in order.
pub fn udp_request(from: u16, to: SocketAddr, data: &[u8], wait: Duration) -> Vec<String> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, from))
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{from}: {e}"));
    s.send_to(data, to).unwrap();
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.recv_from(&mut buf) {
            Ok((n, _)) => {
                let m = String::from_utf8_lossy(&buf[..n]).to_string();
                let code: u16 = m
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                out.push(m);
                if code >= 200 {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// A minimal INVITE with a PCMU offer, as a carrier would send it, from 127.0.0.1:`from`.
pub fn raw_invite(
    from: u16,
    to: SocketAddr,
    number: &str,
    call_id: &str,
    branch: &str,
    rtp_port: u16,
) -> String {
    let sdp = format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    format!(
        "INVITE sip:{number}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{from};branch={branch};rport\r\n\
         From: <sip:{CALLER}@127.0.0.1:{from}>;tag=raw-{branch}\r\nTo: <sip:{number}@{to}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:{CALLER}@127.0.0.1:{from}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The ACK for a non-2xx final `response` to [`raw_invite`] (RFC 3261 17.1.1.3).
pub fn raw_ack(
    from: u16,
    to: SocketAddr,
    number: &str,
    call_id: &str,
    branch: &str,
    response: &str,
) -> String {
    let to_hdr = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:") || l.starts_with("t:"))
        .map(|l| l.split_once(':').unwrap().1.trim().to_string())
        .unwrap_or_else(|| format!("<sip:{number}@{to}>"));
    format!(
        "ACK sip:{number}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{from};branch={branch};rport\r\n\
         From: <sip:{CALLER}@127.0.0.1:{from}>;tag=raw-{branch}\r\nTo: {to_hdr}\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The value of header `name` (case-insensitive) in a message's text.
pub fn header_value(msg: &str, name: &str) -> Option<String> {
    let want = name.to_ascii_lowercase();
    msg.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        (n.trim().to_ascii_lowercase() == want).then(|| v.trim().to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// SIPp's message traces (e2e_stats, e2e_kill9)

#[derive(Debug, Clone)]
pub struct TracedMsg {
    /// Unix microseconds.
    pub at_us: i64,
    pub sent: bool,
    pub start_line: String,
    pub call_id: String,
    pub cseq_method: String,
}

/// The seconds east of UTC of this machine's local time (SIPp stamps its trace in local time).
pub fn local_offset_s() -> i64 {
    // SAFETY: localtime_r writes into the tm we own.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm.tm_gmtoff
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// "2026-11-22 12:25:35.769393" (local time) → Unix microseconds.
pub fn parse_stamp(s: &str, offset_s: i64) -> Option<i64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.trim().split_once('.').unwrap_or((time.trim(), "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    let frac = format!("{frac:0<6}");
    let us: i64 = frac[..6].parse().ok()?;
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    Some(secs * 1_000_000 + us)
}

/// The messages of SIPp's `-trace_msg` log, with their times (Unix µs), direction, start line,
/// Call-ID and CSeq method.
pub fn trace(run: &SippRun) -> Vec<TracedMsg> {
    let off = local_offset_s();
    let mut out = Vec::new();
    for block in run.messages.split("----------------------------------------------- ").skip(1) {
        let mut lines = block.lines();
        let Some(at_us) = lines.next().and_then(|l| parse_stamp(l, off)) else { continue };
        let head = lines.next().unwrap_or("");
        let sent = head.contains("message sent");
        if !sent && !head.contains("message received") {
            continue;
        }
        let body: Vec<&str> = lines.map(str::trim).skip_while(|l| l.is_empty()).collect();
        let start_line = body.first().copied().unwrap_or("").to_string();
        let text = body.join("\r\n");
        let call_id = header_value(&text, "Call-ID").or_else(|| header_value(&text, "i")).unwrap_or_default();
        let cseq_method =
            header_value(&text, "CSeq").and_then(|c| c.split_whitespace().nth(1).map(str::to_string)).unwrap_or_default();
        out.push(TracedMsg { at_us, sent, start_line, call_id, cseq_method });
    }
    out
}

