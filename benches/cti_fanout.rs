//! CTI event fan-out to 1,000 subscribed clients (issue 5: p99 < 5 ms with 1,000 clients).
//!
//! 1. Through the hub alone (sans-IO): `publish` plus draining every `Send`, per event, for
//!    1,000 connections that all see the event (supervisors of the tenant) and for a realistic
//!    mix (agent events seen by one agent and the supervisors; queue ticks seen by everyone).
//! 2. End to end over loopback: the HTTP server's `/cti` WebSocket, the shell, the hub in a core
//!    thread (a fake call core: `agent.ready` → result + an `agent.state` event, as the real one);
//!    1,000 WebSocket clients; each queue tick carries its publish instant and every client records
//!    publish → frame decoded. Beside them one more agent connection sends `agent.ready` commands
//!    and records command → result and command → its `agent.state` event (command → effect).
//!
//! The clients are real WebSocket clients over real sockets (upgrade with a Bearer token, frames
//! decoded with `cti::ws::Decoder`, pings answered) but cheap: by default all of them are served
//! by one thread with one epoll (level-triggered), which reads each event's `t_ns` field without
//! parsing the JSON. `CTI_BENCH_CLIENT=tokio` runs them as 1,000 tokio tasks on a one-worker
//! runtime instead (the earlier client; its own scheduling shows in the figures).
//!
//! Knobs (environment):
//! - `CTI_BENCH_RATE`    events/s, or a list run one after the other: `10,50,100` (default 50)
//! - `CTI_BENCH_SECS`    seconds of events per rate (default 5)
//! - `CTI_BENCH_CLIENTS` WebSocket clients (default 1000; at most 1000)
//! - `CTI_BENCH_CMD_RATE` `agent.ready` commands/s of the extra agent (default 20; 0: none)
//! - `CTI_BENCH_CLIENT`  `epoll` (default) or `tokio`
//! - `CTI_BENCH_AUX_WORKERS` workers of the server's aux runtime (default 1, as callgate runs it)
//! - `CTI_BENCH_PARTS`   `hub`, `ws` or `hub,ws` (default both)
//!
//! `cargo bench --bench cti_fanout` (harness = false). Figures: p50 / p99 / p99.9 / max.
//! Loopback only; every wait is bounded.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callgate::cti::client::Client;
use callgate::cti::proto::ServerMessage;
use callgate::cti::{events, ws, Command, Event, Hub, HubConfig, HubOutput, Principal, Role, Visibility};
use callgate::edge::cti::{CtiIn, CtiShell, CtiShellConfig};
use callgate::edge::http::{serve_with_cti, HttpConfig};
use callgate::metrics::Metrics;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

const CLIENTS: usize = 1000;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn main() {
    let parts = std::env::var("CTI_BENCH_PARTS").unwrap_or_else(|_| "hub,ws".into());
    if parts.contains("hub") {
        hub_only("1,000 supervisors, all see every event", true, |_| Visibility::tenant("seoul"));
        hub_only("900 agents + 100 supervisors, agent events and queue ticks 1:1", false, |n| {
            if n % 2 == 0 {
                Visibility::agent("seoul", &format!("a{}", n % 900))
            } else {
                Visibility::tenant_wide("seoul")
            }
        });
    }
    if parts.contains("ws") {
        let rates = std::env::var("CTI_BENCH_RATE").unwrap_or_else(|_| "50".into());
        for r in rates.split(',').filter_map(|r| r.trim().parse::<u64>().ok()) {
            end_to_end(r.max(1));
        }
    }
}

fn principals() -> Vec<Principal> {
    let mut p: Vec<Principal> = (0..900)
        .map(|i| Principal::with_token(&format!("agent{i}"), Role::Agent, Some("seoul"), Some(&format!("a{i}")), &format!("tok-a{i}")))
        .collect();
    p.extend((0..100).map(|i| Principal::with_token(&format!("sup{i}"), Role::Supervisor, Some("seoul"), None, &format!("tok-s{i}"))));
    p
}

fn token(i: usize) -> String {
    if i < 900 {
        format!("tok-a{i}")
    } else {
        format!("tok-s{}", i - 900)
    }
}

fn summary(h: &Histogram<u64>, unit: &str, div: f64) -> String {
    format!(
        "p50 {:.2} {unit}  p99 {:.2} {unit}  p99.9 {:.2} {unit}  max {:.2} {unit}  (n={})",
        h.value_at_quantile(0.5) as f64 / div,
        h.value_at_quantile(0.99) as f64 / div,
        h.value_at_quantile(0.999) as f64 / div,
        h.max() as f64 / div,
        h.len()
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// Part 1: the hub alone.
fn hub_only(name: &str, supervisors_only: bool, vis: impl Fn(u64) -> Visibility) {
    let t0 = Instant::now();
    let mut hub = Hub::new(principals(), HubConfig::new(t0, 1_718_000_000_000));
    for c in 0..CLIENTS as u64 {
        let token = if supervisors_only { format!("tok-s{}", c % 100) } else { token(c as usize) };
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

/// What the clients measured.
struct Measured {
    /// publish → decoded, every (client, event).
    each: Histogram<u64>,
    /// Per event: publish → decoded by the last client.
    last: Histogram<u64>,
    delivered: u64,
}

/// Part 2: real WebSockets over loopback.
fn end_to_end(rate: u64) {
    let secs: u64 = env("CTI_BENCH_SECS", 5);
    let clients: usize = env("CTI_BENCH_CLIENTS", CLIENTS).clamp(1, CLIENTS);
    let cmd_rate: u64 = env("CTI_BENCH_CMD_RATE", 20);
    let client_kind = std::env::var("CTI_BENCH_CLIENT").unwrap_or_else(|_| "epoll".into());
    // The server as callgate runs it: one aux worker for connections; the core on its own thread.
    let workers: usize = env("CTI_BENCH_AUX_WORKERS", 1);
    let load = loadavg();
    let aux = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).thread_name("srv-aux").enable_all().build().unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = CtiShellConfig { max_connections: 2 * CLIENTS + 16, ..Default::default() };
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
    let core = std::thread::Builder::new()
        .name("srv-core".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(core_loop(shell, cti_rx, pub_rx))
        })
        .unwrap();
    let expected = rate * secs;
    let connected = Arc::new(AtomicUsize::new(0));
    let published: Arc<Vec<AtomicU64>> = Arc::new((0..expected).map(|_| AtomicU64::new(0)).collect());
    let clients_done = {
        let (connected, published) = (connected.clone(), published.clone());
        let kind = client_kind.clone();
        std::thread::Builder::new()
            .name("clients".into())
            .spawn(move || match kind.as_str() {
                "tokio" => tokio_clients(addr, clients, expected, base, connected, published),
                _ => epoll_clients(addr, clients, expected, base, connected, published),
            })
            .unwrap()
    };
    let t = Instant::now();
    while connected.load(Ordering::Acquire) < clients {
        assert!(t.elapsed() < Duration::from_secs(60), "clients did not connect");
        assert!(!clients_done.is_finished(), "the clients ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The commanding agent: `agent.ready` at `cmd_rate`/s while the events flow.
    let commander = (cmd_rate > 0).then(|| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        std::thread::Builder::new().name("commander".into()).spawn(move || commander(addr, cmd_rate, deadline)).unwrap()
    });
    let cpu_before = thread_cpu();
    // Publish: queue ticks every agent and supervisor sees, at a steady rate.
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let mut next = Instant::now();
    for n in 0..expected {
        next += period;
        while Instant::now() < next {
            std::thread::sleep(next - Instant::now());
        }
        let at = base.elapsed().as_nanos() as u64;
        published[n as usize].store(at, Ordering::Release);
        let data = json!({"tenant":"seoul","queue":"general","waiting": n % 7,"longest_wait_ms":12000,"agents_ready":12,"n": n,"t_ns": at});
        pub_tx.send(Event { kind: "queue.stats".into(), vis: Visibility::tenant_wide("seoul"), data }).unwrap();
    }
    let cmds = commander.map(|c| c.join().unwrap());
    let cpu_after = thread_cpu();
    let m = clients_done.join().unwrap();
    println!(
        "websocket fan-out, {clients} clients ({client_kind}), aux workers {workers}, {rate} events/s for {secs} s, load {load}: publish → client decoded {}",
        summary(&m.each, "ms", 1e6)
    );
    println!("    delivered {} of {} event messages", m.delivered, expected * clients as u64);
    println!("    per event, publish → the last of the {clients} clients decoded it: {}", summary(&m.last, "ms", 1e6));
    let mut cpu: Vec<(String, f64)> = Vec::new();
    for (name, ns) in &cpu_after {
        let before = cpu_before.iter().filter(|(n, _)| n == name).map(|(_, b)| *b).next().unwrap_or(0);
        let group = if name.starts_with("srv-aux") { "server aux (shell)" } else if name.starts_with("srv-core") { "server core (hub)" } else if name.starts_with("clients") { "clients" } else { "other" };
        match cpu.iter_mut().find(|(g, _)| g == group) {
            Some((_, v)) => *v += (ns - before) as f64,
            None => cpu.push((group.to_owned(), (ns - before) as f64)),
        }
    }
    cpu.sort_by(|a, b| a.0.cmp(&b.0));
    let per_msg = |ns: f64| ns / 1e3 / m.delivered.max(1) as f64;
    println!(
        "    CPU while publishing: {}",
        cpu.iter().map(|(g, ns)| format!("{g} {:.0} ms ({:.2} µs/message)", ns / 1e6, per_msg(*ns))).collect::<Vec<_>>().join(", ")
    );
    if let Some((result, effect)) = cmds {
        println!("    command agent.ready → its result ({cmd_rate}/s, at random points): {}", summary(&result, "ms", 1e6));
        println!("    command agent.ready → its agent.state event:     {}", summary(&effect, "ms", 1e6));
    }
    let _ = stop_tx.send(true);
    drop(pub_tx);
    let cost = core.join().unwrap();
    println!("    the core's time per event (publish + hand-over to the connections): {}", summary(&cost, "µs", 1e3));
    drop(aux);
}

/// CPU time (ns) of each thread of this process by name, from /proc/self/task/*/schedstat.
fn thread_cpu() -> Vec<(String, u64)> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return v };
    for t in dir.flatten() {
        let p = t.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default().trim().to_owned();
        let ns = std::fs::read_to_string(p.join("schedstat")).ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0);
        v.push((format!("{name}#{}", t.file_name().to_string_lossy()), ns));
    }
    v
}

/// The time since `base`, in ns, of the `"t_ns":` and `"n":` fields of a queue tick; `None` for
/// other messages. Reads only these fields: the clients share the machine with the server.
fn stamp(t: &str) -> Option<(u64, u64)> {
    fn field(t: &str, name: &str) -> Option<u64> {
        let r = t.split(name).nth(1)?;
        r[..r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())].parse().ok()
    }
    Some((field(t, "\"t_ns\":")?, field(t, "\"n\":")?))
}

/// Sends the upgrade request of client `i` (Bearer token, so no `auth` round trip).
fn upgrade_request(i: usize) -> String {
    let key = ws::base64_encode(&(i as u128).to_be_bytes());
    format!(
        "GET /cti HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        token(i)
    )
}

struct EpollConn {
    s: std::net::TcpStream,
    dec: ws::Decoder,
    live: bool,
    got: u64,
}

/// All clients on this thread: one epoll, level-triggered, one read per ready socket per round.
fn epoll_clients(
    addr: std::net::SocketAddr,
    clients: usize,
    expected: u64,
    base: Instant,
    connected: Arc<AtomicUsize>,
    published: Arc<Vec<AtomicU64>>,
) -> Measured {
    use std::io::{Read, Write};
    // SAFETY: plain system calls on descriptors this function owns.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(upgrade_request(i).as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let rest = loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed during the handshake");
            head.extend_from_slice(&buf[..n]);
            if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
                break head.split_off(p + 4);
            }
        };
        let mut dec = ws::Decoder::new(ws::Role::Client, 1 << 20);
        dec.push(&rest);
        s.set_nonblocking(true).unwrap();
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        // SAFETY: `ev` outlives the call; the descriptor is open.
        let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl");
        conns.push(EpollConn { s, dec, live: false, got: 0 });
    }
    let mut each = Histogram::<u64>::new(3).unwrap();
    let mut last = vec![0u64; expected as usize];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut finished = 0usize;
    let mut progress = Instant::now();
    let process = |c: &mut EpollConn, now: u64, each: &mut Histogram<u64>, last: &mut [u64], finished: &mut usize| {
        while let Ok(Some(m)) = c.dec.decode() {
            match m {
                ws::Incoming::Text(t) => {
                    if !c.live {
                        if t.contains("\"event\":\"snapshot\"") {
                            c.live = true;
                            connected.fetch_add(1, Ordering::AcqRel);
                        }
                    } else if let Some((at, n)) = stamp(&t) {
                        each.record(now.saturating_sub(at)).unwrap();
                        if let Some(slot) = last.get_mut(n as usize) {
                            *slot = (*slot).max(now);
                        }
                        c.got += 1;
                        if c.got == expected {
                            *finished += 1;
                        }
                    }
                }
                ws::Incoming::Ping(p) => {
                    let mut f = Vec::new();
                    ws::encode(ws::Opcode::Pong, &p, Some([7, 1, 3, 9]), &mut f);
                    let _ = (&c.s).write_all(&f);
                }
                _ => {}
            }
        }
    };
    for c in conns.iter_mut() {
        process(c, base.elapsed().as_nanos() as u64, &mut each, &mut last, &mut finished);
    }
    while finished < clients && progress.elapsed() < Duration::from_secs(15) {
        // SAFETY: `events` is a valid buffer of its length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
        if n <= 0 {
            continue;
        }
        for e in &events[..n as usize] {
            let c = &mut conns[e.u64 as usize];
            match (&c.s).read(&mut buf) {
                Ok(0) => {
                    // SAFETY: the descriptor is registered and open.
                    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, c.s.as_raw_fd(), std::ptr::null_mut()) };
                    continue;
                }
                Ok(k) => {
                    let now = base.elapsed().as_nanos() as u64;
                    c.dec.push(&buf[..k]);
                    process(c, now, &mut each, &mut last, &mut finished);
                    progress = Instant::now();
                }
                Err(_) => continue,
            }
        }
    }
    // SAFETY: closing the epoll descriptor this function created.
    unsafe { libc::close(ep) };
    let delivered = conns.iter().map(|c| c.got).sum();
    Measured { each, last: last_hist(&published, &last), delivered }
}

fn last_hist(published: &[AtomicU64], last: &[u64]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for (p, l) in published.iter().zip(last) {
        let p = p.load(Ordering::Acquire);
        if *l > 0 {
            h.record(l.saturating_sub(p)).unwrap();
        }
    }
    h
}

/// The earlier client: one tokio task per connection on a one-worker runtime.
fn tokio_clients(
    addr: std::net::SocketAddr,
    clients: usize,
    expected: u64,
    base: Instant,
    connected: Arc<AtomicUsize>,
    published: Arc<Vec<AtomicU64>>,
) -> Measured {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("clients-rt").enable_all().build().unwrap();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..expected).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (hist, connected, last) = (hist.clone(), connected.clone(), last.clone());
        tasks.push(rt.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(upgrade_request(i).as_bytes()).await.unwrap();
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
                    if let ws::Incoming::Text(t) = m {
                        if !live && t.contains("\"event\":\"snapshot\"") {
                            live = true;
                            connected.fetch_add(1, Ordering::AcqRel);
                        } else if let Some((at, n)) = stamp(&t).filter(|_| live) {
                            let now = base.elapsed().as_nanos() as u64;
                            h.record(now.saturating_sub(at)).unwrap();
                            if let Some(slot) = last.get(n as usize) {
                                slot.fetch_max(now, Ordering::AcqRel);
                            }
                            got += 1;
                        }
                    }
                }
                let n = match tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                dec.push(&buf[..n]);
            }
            hist.lock().unwrap().add(&h).unwrap();
            got
        }));
    }
    let mut delivered = 0;
    for t in tasks {
        delivered += rt.block_on(t).unwrap();
    }
    let each = hist.lock().unwrap().clone();
    let last: Vec<u64> = last.iter().map(|a| a.load(Ordering::Acquire)).collect();
    Measured { each, last: last_hist(&published, &last), delivered }
}

/// One more agent (a0) sends `agent.ready` at `rate`/s until `deadline`, one at a time; returns
/// command → result and command → the `agent.state` event it causes, as this client sees them.
fn commander(addr: std::net::SocketAddr, rate: u64, deadline: Instant) -> (Histogram<u64>, Histogram<u64>) {
    let mut result = Histogram::<u64>::new(3).unwrap();
    let mut effect = Histogram::<u64>::new(3).unwrap();
    let mut c = Client::connect_ws(&addr.to_string(), None, Duration::from_secs(10)).unwrap();
    c.auth("tok-a0", false).unwrap();
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let mut next = Instant::now();
    // Each command at a pseudo-random point of its period: not in step with the events.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    while next < deadline {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let at = next + Duration::from_nanos(rng % period.as_nanos() as u64);
        next += period;
        while Instant::now() < at {
            std::thread::sleep(at - Instant::now());
        }
        let t = Instant::now();
        let id = c.send("agent.ready", json!({})).unwrap();
        let (mut got_result, mut got_event) = (false, false);
        while !(got_result && got_event) {
            match c.recv().unwrap() {
                ServerMessage::Result { id: Some(r), result: res } if r == id => {
                    res.unwrap();
                    result.record(t.elapsed().as_nanos() as u64).unwrap();
                    got_result = true;
                }
                ServerMessage::Event { event, data, .. } if event == events::AGENT_STATE && data["agent"] == "a0" => {
                    effect.record(t.elapsed().as_nanos() as u64).unwrap();
                    got_event = true;
                }
                _ => {}
            }
        }
    }
    (result, effect)
}

/// The sip task's part: the hub, a fake call core and handing the hub's outputs to the shell.
/// Returns the time the core spent per published event (publish + handing every message over).
async fn core_loop(shell: CtiShell, mut rx: mpsc::UnboundedReceiver<CtiIn>, mut events: mpsc::UnboundedReceiver<Event>) -> Histogram<u64> {
    let mut cost = Histogram::<u64>::new(3).unwrap();
    let mut cfg = HubConfig::new(Instant::now(), 1_718_000_000_000);
    cfg.max_connections = 2 * CLIENTS + 16;
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
                match c.command {
                    Command::AgentReady { agent } => {
                        hub.command_result(c.conn, &c.id, Ok(json!({"agent": agent, "state": "ready"})));
                        let ev = Event::new(
                            events::AGENT_STATE,
                            Visibility::agent("seoul", &agent),
                            &events::AgentState { agent: agent.clone(), tenant: "seoul".into(), state: "ready".into(), reason: String::new(), call: None },
                        );
                        hub.publish(Instant::now(), ev);
                    }
                    _ => hub.command_result(c.conn, &c.id, Ok(json!({}))),
                }
            }
        }
        if let Some(t) = started {
            cost.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    cost
}
