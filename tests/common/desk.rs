//! CTI desktops in end-to-end tests: the demo profile with a department, WebSocket clients, waiting
//! for events.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use callgate::cti::client::Client;
use serde_json::Value;

use super::{Callgate, ProfileBuilder};

/// The default (demo) profile without the guidance (callers go straight to the queue), plus
/// department number 2000 bridging to `dept`.
pub fn profile_with_department(dept: SocketAddr) -> ProfileBuilder {
    let mut p = ProfileBuilder::default_profile().add_service("2000", "Passport department", Some(&format!("sip:passport@{dept}")));
    let tenant = p.tenants.values_mut().next().unwrap();
    for s in tenant.get_mut("service").and_then(|v| v.as_array_mut()).unwrap() {
        let s = s.as_table_mut().unwrap();
        if s.get("bridge_to").is_none() {
            s.insert("guidance".into(), toml::Value::Array(vec![]));
        }
    }
    p
}

/// A WebSocket desktop authenticated with `token` (with the snapshot).
pub fn connect(cg: &Callgate, token: &str) -> Client {
    let mut c = Client::connect_ws(&cg.http.to_string(), None, Duration::from_secs(5)).expect("WebSocket to /cti");
    c.auth(token, true).expect("auth");
    c
}

/// Events until one of `kind` whose data satisfies `ok` comes: its seq and data, and the (seq, kind)
/// of the others before it.
pub fn wait_event_where(c: &mut Client, kind: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> (u64, Value, Vec<(u64, String)>) {
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        assert!(t0.elapsed() < within, "no {kind} event within {within:?}; saw {seen:?}");
        match c.next_event() {
            Ok((seq, ev, data)) if ev == kind && ok(&data) => return (seq, data, seen),
            Ok((seq, ev, _)) => seen.push((seq, ev)),
            Err(e) => panic!("waiting for {kind}: {e}; saw {seen:?}"),
        }
    }
}

/// The next event of `kind`.
pub fn wait_event(c: &mut Client, kind: &str, within: Duration) -> (u64, Value, Vec<(u64, String)>) {
    wait_event_where(c, kind, within, |_| true)
}
