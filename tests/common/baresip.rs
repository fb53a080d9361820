//! baresip as a real softphone in tests: an agent that registers with digest and auto-answers, or
//! a citizen that dials. Each plays a tone WAV as its microphone and `sndfile` dumps what it sent
//! and received, so a test can check by frequency that the far end's audio came through.
//!
//! Config notes: `../shared/peers.md`. Everything binds 127.0.0.1 only.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_peer;

/// A running baresip.
pub struct Baresip {
    child: Child,
    pub dir: PathBuf,
    pub sip_port: u16,
    pub ctrl: SocketAddr,
}

/// How to set one baresip up.
pub struct BaresipConfig {
    /// Directory for its config, accounts, tone and dumps (created).
    pub dir: PathBuf,
    pub sip_port: u16,
    pub ctrl_port: u16,
    /// RTP ports `from-to` (inclusive, at least 4 wide).
    pub rtp: (u16, u16),
    /// The account line (see `accounts` in baresip's docs).
    pub account: String,
    /// The tone it sends, Hz, as 16-bit 8 kHz mono for `secs` seconds.
    pub tone_hz: f64,
    pub secs: u32,
}

impl BaresipConfig {
    /// An agent registering `ext` with `password` at callgate's `registrar` and answering at once.
    pub fn agent(dir: PathBuf, ext: &str, password: &str, registrar: SocketAddr, ports: (u16, u16, (u16, u16)), tone_hz: f64) -> Self {
        BaresipConfig {
            dir,
            sip_port: ports.0,
            ctrl_port: ports.1,
            rtp: ports.2,
            account: format!(
                "<sip:{ext}@{registrar};transport=udp>;auth_pass={password};regint=60;answermode=auto;audio_codecs=pcmu,pcma"
            ),
            tone_hz,
            secs: 60,
        }
    }

    /// A citizen's phone that does not register and dials through callgate as if from the carrier.
    pub fn citizen(dir: PathBuf, number: &str, ports: (u16, u16, (u16, u16)), tone_hz: f64, codecs: &str) -> Self {
        BaresipConfig {
            dir,
            sip_port: ports.0,
            ctrl_port: ports.1,
            rtp: ports.2,
            account: format!("<sip:{number}@127.0.0.1:{};transport=udp>;regint=0;audio_codecs={codecs}", ports.0),
            tone_hz,
            secs: 60,
        }
    }
}

impl Baresip {
    pub fn start(cfg: BaresipConfig) -> Baresip {
        let bin = require_peer("baresip", "apt-get install -y baresip");
        let _ = fs::remove_dir_all(&cfg.dir);
        fs::create_dir_all(cfg.dir.join("dumps")).unwrap();
        let tone = cfg.dir.join("tone.wav");
        write_tone_wav(&tone, cfg.tone_hz, cfg.secs);
        let config = format!(
            "sip_listen 127.0.0.1:{sip}\n\
             net_interface 127.0.0.1\n\
             audio_source aufile,{tone}\n\
             audio_player aufile,{dumps}/played.wav\n\
             audio_alert aufile,{dumps}/alert.wav\n\
             rtp_ports {r0}-{r1}\n\
             rtcp_mux no\n\
             jitter_buffer_delay 1-20\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module sndfile.so\n\
             module aufile.so\n\
             module_tmp uuid.so\n\
             module_tmp account.so\n\
             module_app menu.so\n\
             module_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl}\n\
             snd_path {dumps}\n",
            sip = cfg.sip_port,
            tone = tone.display(),
            dumps = cfg.dir.join("dumps").display(),
            r0 = cfg.rtp.0,
            r1 = cfg.rtp.1,
            ctrl = cfg.ctrl_port,
        );
        fs::write(cfg.dir.join("config"), config).unwrap();
        fs::write(cfg.dir.join("accounts"), format!("{}\n", cfg.account)).unwrap();
        let log = fs::File::create(cfg.dir.join("baresip.log")).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start baresip");
        let ctrl: SocketAddr = format!("127.0.0.1:{}", cfg.ctrl_port).parse().unwrap();
        let b = Baresip { child, dir: cfg.dir, sip_port: cfg.sip_port, ctrl };
        // ctrl_tcp listens once the modules are loaded.
        let t0 = Instant::now();
        while TcpStream::connect(b.ctrl).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "baresip did not start: {}", b.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// One ctrl_tcp command (netstring JSON); returns the response text.
    pub fn command(&self, command: &str, params: &str) -> String {
        let mut s = TcpStream::connect(self.ctrl).expect("connect to baresip ctrl_tcp");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let body = format!(r#"{{"command":"{command}","params":"{params}","token":"t"}}"#);
        s.write_all(format!("{}:{},", body.len(), body).as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&out).contains("\"response\":true") {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Waits until the account is registered (baresip's `reginfo` says OK).
    pub fn wait_registered(&self, within: Duration) {
        let t0 = Instant::now();
        loop {
            let info = self.command("reginfo", "");
            if info.contains("OK") && !info.contains("ERR") {
                return;
            }
            assert!(t0.elapsed() < within, "baresip did not register: reginfo {info}\nlog:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn dial(&self, uri: &str) {
        let r = self.command("dial", uri);
        assert!(!r.contains("\"ok\":false"), "dial refused: {r}");
    }

    pub fn hangup(&self) {
        self.command("hangup", "");
    }

    /// The WAV `sndfile` wrote of what this phone received (`-dec`) or sent (`-enc`), the largest if
    /// several calls were dumped.
    pub fn dump(&self, received: bool) -> Option<PathBuf> {
        let suffix = if received { "-dec.wav" } else { "-enc.wav" };
        let mut best: Option<(u64, PathBuf)> = None;
        for e in fs::read_dir(self.dir.join("dumps")).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("dump") && name.ends_with(suffix) {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, e.path()));
                }
            }
        }
        best.map(|(_, p)| p)
    }

    pub fn dumps(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.dir.join("dumps"))
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with("-dec.wav")).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn stop(mut self) -> String {
        let _ = self.command("quit", "");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.log();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A 16-bit mono 8 kHz WAV of a sine at `hz`, amplitude about -10 dBFS.
pub fn write_tone_wav(path: &Path, hz: f64, secs: u32) {
    let n = 8000 * secs as usize;
    let mut data = Vec::with_capacity(n * 2);
    for i in 0..n {
        let v = (10000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16;
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut f = Vec::with_capacity(44 + data.len());
    f.extend_from_slice(b"RIFF");
    f.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    f.extend_from_slice(b"WAVEfmt ");
    f.extend_from_slice(&16u32.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes()); // PCM
    f.extend_from_slice(&1u16.to_le_bytes()); // mono
    f.extend_from_slice(&8000u32.to_le_bytes());
    f.extend_from_slice(&16000u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&16u16.to_le_bytes());
    f.extend_from_slice(b"data");
    f.extend_from_slice(&(data.len() as u32).to_le_bytes());
    f.extend_from_slice(&data);
    fs::write(path, f).unwrap();
}

/// The samples of a 16-bit PCM WAV (first channel), and its rate.
pub fn read_wav(path: &Path) -> (Vec<f64>, u32, u16) {
    let b = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WAVE", "{} is not a WAV", path.display());
    let (mut rate, mut channels, mut pos) = (8000u32, 1u16, 12usize);
    let mut samples = Vec::new();
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &b[pos + 8..(pos + 8 + len).min(b.len())];
        if id == b"fmt " && body.len() >= 16 {
            channels = u16::from_le_bytes([body[2], body[3]]);
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
        } else if id == b"data" {
            let step = 2 * channels as usize;
            samples = body.chunks_exact(step).map(|c| f64::from(i16::from_le_bytes([c[0], c[1]]))).collect();
        }
        pos += 8 + len + (len & 1);
    }
    (samples, rate, channels)
}

/// Goertzel power of `hz` in `x` (sampled at `rate`), normalised by the length.
pub fn tone_power(x: &[f64], rate: u32, hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = v + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len().max(1) as f64).powi(2)
}

/// Seconds of `path` in which `hz` clearly dominates (10× the power of each of `others`, and audible).
pub fn seconds_with_tone(path: &Path, hz: f64, others: &[f64]) -> usize {
    let (x, rate, _) = read_wav(path);
    x.chunks(rate as usize)
        .filter(|sec| {
            let p = tone_power(sec, rate, hz);
            p > 1e4 && others.iter().all(|&o| p > 10.0 * tone_power(sec, rate, o))
        })
        .count()
}

/// The largest `*-dec.wav` (what the phone received) in a dump directory.
pub fn read_dump_dir(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    for e in fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("dump") && name.ends_with("-dec.wav") {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            if best.as_ref().is_none_or(|(l, _)| len > *l) {
                best = Some((len, e.path()));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// Per second of `path`: whether `hz` clearly dominates (as in [`seconds_with_tone`]), and the
/// second's overall energy (mean square), to tell silence from other sound.
pub fn tone_timeline(path: &Path, hz: f64, others: &[f64]) -> Vec<(bool, f64)> {
    let (x, rate, _) = read_wav(path);
    x.chunks(rate as usize)
        .map(|sec| {
            let p = tone_power(sec, rate, hz);
            let tone = p > 1e4 && others.iter().all(|&o| p > 10.0 * tone_power(sec, rate, o));
            let energy = sec.iter().map(|v| v * v).sum::<f64>() / sec.len().max(1) as f64;
            (tone, energy)
        })
        .collect()
}
