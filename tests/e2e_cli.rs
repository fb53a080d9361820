//! End to end: the command line. `callgate check` on good and bad profiles, a bad profile
//! refusing to start, and the HTTP endpoints of a running instance.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;

fn check(profile: &std::path::Path) -> std::process::Output {
    Command::new(callgate_bin())
        .arg("check")
        .arg("--profile")
        .arg(profile)
        .output()
        .expect("run callgate check")
}

#[test]
fn check_accepts_the_default_profile() {
    let out = check(&repo().join("sip-profiles/default"));
    assert!(
        out.status.success(),
        "callgate check --profile sip-profiles/default: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A profile with one line broken, and what the error must name.
fn broken(name: &str, file: &str, from: &str, to: &str) -> (std::path::PathBuf, usize) {
    let dir = test_dir(name);
    let ports = PortBlock::acquire();
    let p = ProfileBuilder::default_profile().write(&dir, &ports);
    let path = p.join(file);
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(from),
        "{file} as written by the harness has no {from:?}:\n{text}"
    );
    let text = text.replacen(from, to, 1);
    let line = text
        .lines()
        .position(|l| l.contains(to.lines().next().unwrap()))
        .unwrap()
        + 1;
    fs::write(&path, text).unwrap();
    (p, line)
}

fn assert_refused(out: &std::process::Output, file: &str, line: usize) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a broken profile was accepted: {}\n{err}",
        out.status
    );
    assert!(
        err.contains(&format!("{file}:{line}")),
        "the error does not name {file}:{line} (FILE:LINE: problem):\n{err}"
    );
}

#[test]
fn check_names_file_and_line_of_a_bad_trunk_network() {
    let (p, line) = broken(
        "check_bad_network",
        "trunks.toml",
        "\"127.0.0.0/8\"",
        "\"10.1.0.0/8\"",
    );
    assert_refused(&check(&p), "trunks.toml", line);
}

#[test]
fn check_names_file_and_line_of_an_unknown_key() {
    let (p, line) = broken(
        "check_unknown_key",
        "callgate.toml",
        "[limits]\n",
        "[limits]\nmax_callz = 3\n",
    );
    assert_refused(&check(&p), "callgate.toml", line + 1);
}

#[test]
fn a_bad_profile_refuses_to_start() {
    let (p, line) = broken(
        "bad_profile_refuses_to_start",
        "trunks.toml",
        "\"127.0.0.0/8\"",
        "\"10.1.0.0/8\"",
    );
    let mut child = Command::new(callgate_bin())
        .arg("--profile")
        .arg(&p)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("callgate started on a broken profile (still running after 10 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_refused(&child.wait_with_output().unwrap(), "trunks.toml", line);
}

#[test]
fn unknown_argument_is_an_error() {
    let out = Command::new(callgate_bin())
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown argument was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn http_serves_healthz_and_metrics_and_404s_the_rest() {
    let dir = test_dir("http_serves_healthz_and_metrics");
    let ports = PortBlock::acquire();
    let cg = Callgate::start_default(&dir, &ports);
    let (st, _) = cg.http_get("/healthz");
    assert_eq!(st, 200);
    let m = cg.metrics();
    for stage in ["invite_to_100", "invite_to_200"] {
        assert_eq!(
            m.get("callgate_setup_latency_seconds_count", &[("stage", stage)]),
            Some(0.0),
            "{}",
            m.0
        );
    }
    let (st, _) = cg.http_get("/nope");
    assert_eq!(st, 404);
    let stopped = cg.stop_ok();
    assert!(
        stopped.took < Duration::from_secs(5),
        "an idle callgate took {:?} to stop",
        stopped.took
    );
}
