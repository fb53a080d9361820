//! CTI event fan-out to 1,000 subscribed clients (issue 5: p99 < 5 ms with 1,000 clients).
//!
//! 1. Through the hub alone (sans-IO): `publish` plus draining every `Send`, per event, for
//!    1,000 connections that all see the event (supervisors of the tenant) and for a realistic
//!    mix (agent events seen by one agent and the supervisors; queue ticks seen by everyone).
//! 2. End to end over loopback: the HTTP server's `/cti` WebSocket, the shell, the hub in a core
//!    task; 1,000 WebSocket clients (tokio tasks); each event carries its publish instant and every
//!    client records publish → frame decoded. Events at `CTI_BENCH_RATE`/s (default 50) for
//!    `CTI_BENCH_SECS` (default 5).
//!
//! `cargo bench --bench cti_fanout` (harness = false). Figures: p50 / p99 / p99.9 / max.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callgate::cti::{ws, Event, Hub, HubConfig, HubOutput, Principal, Role, Visibility};
use callgate::edge::cti::{CtiIn, CtiShell, CtiShellConfig};
use callgate::edge::http::{serve_with_cti, HttpConfig};
use callgate::metrics::Metrics;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

const CLIENTS: usize = 1000;

fn main() {
    hub_only("1,000 supervisors, all see every event", true, |_| Visibility::tenant("seoul"));
    hub_only("900 agents + 100 supervisors, agent events and queue ticks 1:1", false, |n| {
        if n % 2 == 0 {
            Visibility::agent("seoul", &format!("a{}", n % 900))
        } else {
            Visibility::tenant_wide("seoul")
        }
    });
    end_to_end();
}

fn principals() -> Vec<Principal> {
    let mut p: Vec<Principal> = (0..900)
        .map(|i| Principal::with_token(&format!("agent{i}"), Role::Agent, Some("seoul"), Some(&format!("a{i}")), &format!("tok-a{i}")))
        .collect();
    p.extend((0..100).map(|i| Principal::with_token(&format!("sup{i}"), Role::Supervisor, Some("seoul"), None, &format!("tok-s{i}"))));
    p
}

fn summary(h: &Histogram<u64>, unit: &str, div: f64) -> String {
    format!(
        "p50 {:.1} {unit}  p99 {:.1} {unit}  p99.9 {:.1} {unit}  max {:.1} {unit}  (n={})",
        h.value_at_quantile(0.5) as f64 / div,
        h.value_at_quantile(0.99) as f64 / div,
        h.value_at_quantile(0.999) as f64 / div,
        h.max() as f64 / div,
        h.len()
    )
}

/// Part 1: the hub alone.
fn hub_only(name: &str, supervisors_only: bool, vis: impl Fn(u64) -> Visibility) {
    let t0 = Instant::now();
    let mut hub = Hub::new(principals(), HubConfig::new(t0, 1_718_000_000_000));
    for c in 0..CLIENTS as u64 {
        let token = if supervisors_only { format!("tok-s{}", c % 100) } else if c < 900 { format!("tok-a{c}") } else { format!("tok-s{}", c - 900) };
        hub.on_open(t0, c, callgate::cti::PeerInfo { transport: callgate::cti::Transport::WebSocket, remote: String::new(), bearer: None });
        hub.on_message(t0, c, &json!({"v":1,"id":"a","cmd":"auth","args":{"token": token, "snapshot": false}}).to_string());
    }
    while hub.poll_output().is_some() {}
    let data = json!({"tenant":"seoul","queue":"general","waiting":3,"longest_wait_ms":12000,"agents_ready":12,"agents_busy":40});
    let mut queued = vec![0usize; CLIENTS];
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut msgs = 0u64;
    let events = 20_000u64;
    let start = Instant::now();
    for n in 0..events {
        let ev = Event { kind: "queue.stats".into(), vis: vis(n), data: data.clone() };
        let t = Instant::now();
        hub.publish(t, ev);
        while let Some(o) = hub.poll_output() {
            match o {
                HubOutput::Send { conn, text } => {
                    queued[conn as usize] += text.len();
                    msgs += 1;
                    std::hint::black_box(text);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        h.record(t.elapsed().as_nanos() as u64).unwrap();
        // The shell acknowledges what it wrote (outside the measured time).
        if n % 64 == 63 {
            for (c, q) in queued.iter_mut().enumerate() {
                if *q > 0 {
                    hub.on_sent(c as u64, *q);
                    *q = 0;
                }
            }
        }
    }
    let total = start.elapsed();
    assert_eq!(hub.stats().slow_consumers, 0);
    println!("hub fan-out, {name}: per event {}", summary(&h, "µs", 1000.0));
    println!(
        "    {} messages to {CLIENTS} connections, {:.0} events/s, {:.2} M messages/s",
        msgs,
        events as f64 / total.as_secs_f64(),
        msgs as f64 / total.as_secs_f64() / 1e6
    );
}

/// Part 2: real WebSockets over loopback.
fn end_to_end() {
    let rate: u64 = std::env::var("CTI_BENCH_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let secs: u64 = std::env::var("CTI_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    // The server as callgate runs it: one aux worker for connections; the core on its own thread.
    let workers: usize = std::env::var("CTI_BENCH_AUX_WORKERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let aux = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap();
    let clients_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = CtiShellConfig { max_connections: 2 * CLIENTS, ..Default::default() };
    let (shell, cti_rx) = CtiShell::spawn(aux.handle(), cfg, stop_rx.clone()).unwrap();
    let addr = aux.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let http = HttpConfig { max_connections: 4096, ..Default::default() };
        tokio::spawn(serve_with_cti(l, Arc::new(Metrics::new()), http, Some(shell.clone()), stop_rx));
        addr
    });
    let (pub_tx, pub_rx) = mpsc::unbounded_channel::<Event>();
    let base = Instant::now();
    let core = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(core_loop(shell, cti_rx, pub_rx))
    });
    // Clients.
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let expected = rate * secs;
    // Per event: when the last client decoded it (ns since `base`), to get the fan-out completion time.
    let last: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new((0..expected).map(|_| std::sync::atomic::AtomicU64::new(0)).collect());
    let published: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new((0..expected).map(|_| std::sync::atomic::AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (hist, connected, last) = (hist.clone(), connected.clone(), last.clone());
        tasks.push(clients_rt.spawn(async move {
            let token = if i < 900 { format!("tok-a{i}") } else { format!("tok-s{}", i - 900) };
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let key = ws::base64_encode(&(i as u128).to_be_bytes());
            let req = format!("GET /cti HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut dec = ws::Decoder::new(ws::Role::Client, 1 << 20);
            let mut buf = vec![0u8; 16 * 1024];
            let mut head = Vec::new();
            loop {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                head.extend_from_slice(&buf[..n]);
                if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    assert!(head.starts_with(b"HTTP/1.1 101"));
                    dec.push(&head[p + 4..]);
                    break;
                }
            }
            let mut h = Histogram::<u64>::new(3).unwrap();
            let mut got = 0u64;
            let mut live = false;
            while got < expected {
                while let Some(m) = dec.decode().unwrap() {
                    // The client side shares the machine with the server: read the one field
                    // needed instead of parsing each event.
                    if let ws::Incoming::Text(t) = m {
                        if !live && t.contains("\"event\":\"snapshot\"") {
                            live = true;
                            connected.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        } else if let Some(at) = t.split("\"t_ns\":").nth(1).and_then(|r| {
                            r[..r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())].parse::<u64>().ok()
                        }) {
                            let now = base.elapsed().as_nanos() as u64;
                            h.record(now.saturating_sub(at)).unwrap();
                            if let Some(slot) = last.get(got as usize) {
                                slot.fetch_max(now, std::sync::atomic::Ordering::AcqRel);
                            }
                            got += 1;
                        }
                    }
                }
                let n = match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                dec.push(&buf[..n]);
            }
            hist.lock().unwrap().add(&h).unwrap();
            got
        }));
    }
    let t = Instant::now();
    while connected.load(std::sync::atomic::Ordering::Acquire) < CLIENTS {
        assert!(t.elapsed() < Duration::from_secs(60), "clients did not connect");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Publish: queue ticks every agent and supervisor sees, at a steady rate.
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let mut next = Instant::now();
    for n in 0..expected {
        next += period;
        while Instant::now() < next {
            std::thread::sleep(next - Instant::now());
        }
        let at = base.elapsed().as_nanos() as u64;
        published[n as usize].store(at, std::sync::atomic::Ordering::Release);
        let data = json!({"tenant":"seoul","queue":"general","waiting": n % 7,"longest_wait_ms":12000,"agents_ready":12,"t_ns": at});
        pub_tx.send(Event { kind: "queue.stats".into(), vis: Visibility::tenant_wide("seoul"), data }).unwrap();
    }
    let mut delivered = 0;
    for t in tasks {
        delivered += clients_rt.block_on(t).unwrap();
    }
    let h = hist.lock().unwrap();
    println!(
        "websocket fan-out, {CLIENTS} clients, {rate} events/s for {secs} s: publish → client decoded {}",
        summary(&h, "ms", 1e6)
    );
    println!("    delivered {delivered} of {} event messages", expected * CLIENTS as u64);
    let mut done = Histogram::<u64>::new(3).unwrap();
    for (p, l) in published.iter().zip(last.iter()) {
        let (p, l) = (p.load(std::sync::atomic::Ordering::Acquire), l.load(std::sync::atomic::Ordering::Acquire));
        if l > 0 {
            done.record(l.saturating_sub(p)).unwrap();
        }
    }
    println!("    per event, publish → the last of the {CLIENTS} clients decoded it: {}", summary(&done, "ms", 1e6));
    let _ = stop_tx.send(true);
    drop(pub_tx);
    let cost = core.join().unwrap();
    println!("    the core's time per event (publish + queue to 1,000 connections): {}", summary(&cost, "µs", 1e3));
}

/// The sip task's part: the hub, and handing its outputs to the shell. Returns the time the core
/// spent per published event (publish + delivering every message to its connection's queue).
async fn core_loop(shell: CtiShell, mut rx: mpsc::UnboundedReceiver<CtiIn>, mut events: mpsc::UnboundedReceiver<Event>) -> Histogram<u64> {
    let mut cost = Histogram::<u64>::new(3).unwrap();
    let mut cfg = HubConfig::new(Instant::now(), 1_718_000_000_000);
    cfg.max_connections = 2 * CLIENTS;
    let mut hub = Hub::new(principals(), cfg);
    loop {
        let mut started = None;
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m.apply(&mut hub, Instant::now()),
                None => break,
            },
            e = events.recv() => match e {
                Some(e) => {
                    let t = Instant::now();
                    started = Some(t);
                    hub.publish(t, e);
                }
                None => break,
            },
        }
        loop {
            let commands = shell.pump(&mut hub);
            if commands.is_empty() {
                break;
            }
            for c in commands {
                hub.command_result(c.conn, &c.id, Ok(json!({})));
            }
        }
        if let Some(t) = started {
            cost.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    cost
}
