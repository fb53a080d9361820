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
//! End-to-end mixes (`CTI_BENCH_MIX`):
//! - `all` (default): every client sees every event (`queue.stats`, tenant-wide) at the given rate:
//!   1,000 writes per event, the worst case. The commanding agent is a 1,001st connection (a0).
//! - `centre`: a contact centre's day. 1,000 connections = 950 agents (a0..a949, each its own
//!   token) + 50 supervisors of tenant "seoul" (5 %, scaled with `CTI_BENCH_CLIENTS`). The rate is of
//!   agent/call events (`agent.state`, `call.offered`, `call.answered`, `call.ended` in turn) of
//!   random agents, with the call core's visibilities (`Visibility::agent`, `Visibility::call`): seen
//!   by that agent and the supervisors. Plus, once a second, `CTI_BENCH_QUEUES` `queue.stats` ticks
//!   (`Visibility::tenant_wide`: all 1,000). The commanding agent is the last agent (a949), one of
//!   the 1,000; its `agent.state` goes to it and the supervisors. Figures apart: (a) agent/call
//!   events, (b) the ticks, (c) command → result / → event.
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
//! - `CTI_BENCH_MIX`     `all` (default) or `centre` (end to end only; see above)
//! - `CTI_BENCH_QUEUES`  `centre`: `queue.stats` ticks per second, published together (default 1)
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

/// Who the principals are: `agents` agents (a0..), then `sups` supervisors, all of tenant "seoul".
#[derive(Clone, Copy, Debug, PartialEq)]
struct Mix {
    /// `centre`: agent/call events of single agents plus queue ticks; otherwise every event is seen
    /// by every connection.
    centre: bool,
    agents: usize,
    sups: usize,
}

impl Mix {
    /// The all-see-all mix (and the hub part's principals): 900 agents + 100 supervisors.
    fn all() -> Mix {
        Mix { centre: false, agents: 900, sups: 100 }
    }

    /// A centre of `clients` connections: 5 % supervisors, the rest agents.
    fn centre(clients: usize) -> Mix {
        let sups = clients / 20;
        Mix { centre: true, agents: clients - sups, sups }
    }

    fn principals(&self) -> Vec<Principal> {
        let mut p: Vec<Principal> = (0..self.agents)
            .map(|i| Principal::with_token(&format!("agent{i}"), Role::Agent, Some("seoul"), Some(&format!("a{i}")), &format!("tok-a{i}")))
            .collect();
        p.extend((0..self.sups).map(|i| Principal::with_token(&format!("sup{i}"), Role::Supervisor, Some("seoul"), None, &format!("tok-s{i}"))));
        p
    }

    /// The token of principal `i` (agents first).
    fn token(&self, i: usize) -> String {
        if self.is_agent(i) {
            format!("tok-a{i}")
        } else {
            format!("tok-s{}", i - self.agents)
        }
    }

    fn is_agent(&self, i: usize) -> bool {
        i < self.agents
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
    let mix = Mix::all();
    let mut hub = Hub::new(mix.principals(), HubConfig::new(t0, 1_718_000_000_000));
    for c in 0..CLIENTS as u64 {
        let token = if supervisors_only { format!("tok-s{}", c % 100) } else { mix.token(c as usize) };
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

/// Whom a published event is for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// Every connection of the tenant (`queue.stats`, `Visibility::tenant_wide`).
    Wide,
    /// One agent (principal index) and the supervisors: its `agent.state` and call events.
    Agent(usize),
}

/// What the end-to-end part publishes, and who should get what; shared with the clients.
struct Plan {
    mix: Mix,
    /// Per event (its `n`): when, from the first publish, and for whom.
    events: Vec<(Duration, Target)>,
    /// Per event: the publish instant (ns since `base`).
    published: Vec<AtomicU64>,
    /// Per event: the instant (ns since `base`) the last of its receivers decoded it.
    last: Vec<AtomicU64>,
    /// The bench clients: the principal each connects as and how many events it must get.
    conns: Vec<(usize, u64)>,
    /// The principal of the commanding agent, if commands are sent.
    commander: Option<usize>,
}

impl Plan {
    fn new(mix: Mix, clients: usize, rate: u64, secs: u64, queues: u64, commands: bool) -> Plan {
        let period = Duration::from_nanos(1_000_000_000 / rate);
        let mut events: Vec<(Duration, Target)> = Vec::new();
        if mix.centre {
            // Agent events of random agents (a fixed xorshift: the same plan every run).
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            for k in 1..=rate * secs {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                events.push((period * k as u32, Target::Agent((rng % mix.agents as u64) as usize)));
            }
            // The core's once-a-second statistics: every queue at once, between two agent events.
            for s in 0..secs {
                for _ in 0..queues {
                    events.push((Duration::from_secs(s) + period / 2, Target::Wide));
                }
            }
            events.sort_by_key(|e| e.0); // stable: ticks of one second stay together
        } else {
            events.extend((1..=rate * secs).map(|k| (period * k as u32, Target::Wide)));
        }
        // In the centre the commanding agent is one of the connections; otherwise an extra one.
        let commander = commands.then(|| if mix.centre { mix.agents - 1 } else { 0 });
        let wide = events.iter().filter(|e| e.1 == Target::Wide).count() as u64;
        let mut own = vec![0u64; mix.agents];
        for e in &events {
            if let Target::Agent(a) = e.1 {
                own[a] += 1;
            }
        }
        let agent_events = events.len() as u64 - wide;
        let conns = (0..clients)
            .filter(|&p| !(mix.centre && Some(p) == commander))
            .map(|p| (p, wide + if mix.is_agent(p) { own[p] } else { agent_events }))
            .collect();
        let n = events.len();
        Plan {
            mix,
            events,
            published: (0..n).map(|_| AtomicU64::new(0)).collect(),
            last: (0..n).map(|_| AtomicU64::new(0)).collect(),
            conns,
            commander,
        }
    }

    /// Event `n` as the core would publish it, carrying `n` and its publish instant `at`.
    fn event(&self, n: usize, at: u64) -> Event {
        let (kind, vis, mut data) = match self.events[n].1 {
            Target::Wide => {
                let data = json!({"tenant":"seoul","queue":"general","waiting": n % 7,"longest_wait_ms":12000,"agents_ready":12});
                (events::QUEUE_STATS, Visibility::tenant_wide("seoul"), data)
            }
            Target::Agent(i) => {
                let agent = format!("a{i}");
                let call = format!("cg-{n}");
                let tenant = "seoul".to_owned();
                let on_call = Visibility::call("seoul", &call, std::slice::from_ref(&agent));
                match n % 4 {
                    0 => {
                        let d = events::AgentState { agent: agent.clone(), tenant, state: "wrapup".into(), reason: String::new(), call: None };
                        (events::AGENT_STATE, Visibility::agent("seoul", &agent), serde_json::to_value(d).unwrap())
                    }
                    1 => {
                        let d = events::CallOffered {
                            call,
                            tenant,
                            queue: "general".into(),
                            agent,
                            caller: "01012345678".into(),
                            number: "15881234".into(),
                            menu_choice: Some("2".into()),
                            language: Some("ko".into()),
                            wait_ms: 23_000,
                            repeat_7d: 1,
                            data: serde_json::Map::new(),
                        };
                        (events::CALL_OFFERED, on_call, serde_json::to_value(d).unwrap())
                    }
                    2 => {
                        let d = events::CallAgent { call, tenant, agent: Some(agent) };
                        (events::CALL_ANSWERED, on_call, serde_json::to_value(d).unwrap())
                    }
                    _ => {
                        let d = events::CallEnded { call, tenant, agent: Some(agent), reason: "caller_hangup".into(), talk_ms: Some(184_000) };
                        (events::CALL_ENDED, on_call, serde_json::to_value(d).unwrap())
                    }
                }
            }
        };
        data["n"] = json!(n);
        data["t_ns"] = json!(at);
        Event { kind: kind.into(), vis, data }
    }
}

/// Publish → decoded, per (client, event), by kind of event and receiver.
#[derive(Clone)]
struct Hists {
    /// Events every connection sees.
    wide: Histogram<u64>,
    /// Agent/call events, at the agent they are about.
    own: Histogram<u64>,
    /// Agent/call events, at a supervisor.
    sup: Histogram<u64>,
}

impl Hists {
    fn new() -> Hists {
        Hists { wide: Histogram::new(3).unwrap(), own: Histogram::new(3).unwrap(), sup: Histogram::new(3).unwrap() }
    }

    /// Client of `principal` decoded event `n` (published at `at`) at `now`; false if not ours.
    fn record(&mut self, plan: &Plan, principal: usize, n: u64, at: u64, now: u64) -> bool {
        let Some(&(_, target)) = plan.events.get(n as usize) else { return false };
        let d = now.saturating_sub(at);
        match target {
            Target::Wide => self.wide.record(d).unwrap(),
            Target::Agent(_) if plan.mix.is_agent(principal) => self.own.record(d).unwrap(),
            Target::Agent(_) => self.sup.record(d).unwrap(),
        }
        plan.last[n as usize].fetch_max(now, Ordering::AcqRel);
        true
    }

    fn add(&mut self, o: &Hists) {
        self.wide.add(&o.wide).unwrap();
        self.own.add(&o.own).unwrap();
        self.sup.add(&o.sup).unwrap();
    }
}

/// What the clients measured.
struct Measured {
    each: Hists,
    delivered: u64,
}

/// Part 2: real WebSockets over loopback.
fn end_to_end(rate: u64) {
    let secs: u64 = env("CTI_BENCH_SECS", 5);
    let clients: usize = env("CTI_BENCH_CLIENTS", CLIENTS).clamp(1, CLIENTS);
    let cmd_rate: u64 = env("CTI_BENCH_CMD_RATE", 20);
    let queues: u64 = env("CTI_BENCH_QUEUES", 1);
    let client_kind = std::env::var("CTI_BENCH_CLIENT").unwrap_or_else(|_| "epoll".into());
    let mix = match std::env::var("CTI_BENCH_MIX").as_deref().map(str::trim) {
        Ok("centre" | "center") => Mix::centre(clients.max(2)),
        _ => Mix::all(),
    };
    let plan = Arc::new(Plan::new(mix, if mix.centre { clients.max(2) } else { clients }, rate, secs, queues, cmd_rate > 0));
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
            rt.block_on(core_loop(shell, cti_rx, pub_rx, mix))
        })
        .unwrap();
    let connected = Arc::new(AtomicUsize::new(0));
    let clients_done = {
        let (connected, plan) = (connected.clone(), plan.clone());
        let kind = client_kind.clone();
        std::thread::Builder::new()
            .name("clients".into())
            .spawn(move || match kind.as_str() {
                "tokio" => tokio_clients(addr, &plan, base, connected),
                _ => epoll_clients(addr, &plan, base, connected),
            })
            .unwrap()
    };
    let t = Instant::now();
    while connected.load(Ordering::Acquire) < plan.conns.len() {
        assert!(t.elapsed() < Duration::from_secs(60), "clients did not connect");
        assert!(!clients_done.is_finished(), "the clients ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The commanding agent: `agent.ready` at `cmd_rate`/s while the events flow.
    let commander = plan.commander.map(|p| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let (token, agent) = (mix.token(p), format!("a{p}"));
        std::thread::Builder::new().name("commander".into()).spawn(move || commander(addr, &token, &agent, cmd_rate, deadline)).unwrap()
    });
    let cpu_before = thread_cpu();
    // Publish at the planned instants.
    let start = Instant::now();
    for (n, (due, _)) in plan.events.iter().enumerate() {
        let next = start + *due;
        while Instant::now() < next {
            std::thread::sleep(next - Instant::now());
        }
        let at = base.elapsed().as_nanos() as u64;
        plan.published[n].store(at, Ordering::Release);
        pub_tx.send(plan.event(n, at)).unwrap();
    }
    let cmds = commander.map(|c| c.join().unwrap());
    let cpu_after = thread_cpu();
    let m = clients_done.join().unwrap();
    let expected: u64 = plan.conns.iter().map(|c| c.1).sum();
    let (last_wide, last_agent) = last_hists(&plan);
    let n_conns = plan.conns.len() + usize::from(mix.centre && plan.commander.is_some());
    if mix.centre {
        let agent_events = plan.events.iter().filter(|e| e.1 != Target::Wide).count();
        println!(
            "websocket, centre: {n_conns} connections = {} agents + {} supervisors ({client_kind}; the commanding agent a{} is one of them), aux workers {workers}, {rate} agent/call events/s + {queues} queue.stats/s for {secs} s, load {load}",
            mix.agents,
            mix.sups,
            plan.commander.map_or(String::from("-"), |c| c.to_string()),
        );
        let mut agent = m.each.own.clone();
        agent.add(&m.each.sup).unwrap();
        println!("    (a) {agent_events} agent/call events (each to its agent + {} supervisors), publish → client decoded: {}", mix.sups, summary(&agent, "ms", 1e6));
        println!("        at the agent itself:  {}", summary(&m.each.own, "ms", 1e6));
        println!("        at the supervisors:   {}", summary(&m.each.sup, "ms", 1e6));
        println!("        per event, → the last of its receivers: {}", summary(&last_agent, "ms", 1e6));
        if queues > 0 {
            println!("    (b) queue.stats ticks (to all {n_conns}), publish → client decoded: {}", summary(&m.each.wide, "ms", 1e6));
            println!("        per tick, → the last client: {}", summary(&last_wide, "ms", 1e6));
        }
    } else {
        println!(
            "websocket fan-out, {} clients ({client_kind}), aux workers {workers}, {rate} events/s for {secs} s, load {load}: publish → client decoded {}",
            plan.conns.len(),
            summary(&m.each.wide, "ms", 1e6)
        );
        println!("    per event, publish → the last of the {} clients decoded it: {}", plan.conns.len(), summary(&last_wide, "ms", 1e6));
    }
    println!("    delivered {} of {expected} event messages to the bench clients", m.delivered);
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
        let c = if mix.centre { "(c) " } else { "" };
        println!("    {c}command agent.ready → its result ({cmd_rate}/s, at random points): {}", summary(&result, "ms", 1e6));
        println!("    {c}command agent.ready → its agent.state event:     {}", summary(&effect, "ms", 1e6));
    }
    let _ = stop_tx.send(true);
    drop(pub_tx);
    let (cost_wide, cost_agent) = core.join().unwrap();
    if mix.centre {
        println!("    the core's time (publish + hand-over to the connections) per agent/call event: {}", summary(&cost_agent, "µs", 1e3));
        if queues > 0 {
            println!("        per queue.stats tick: {}", summary(&cost_wide, "µs", 1e3));
        }
    } else {
        println!("    the core's time per event (publish + hand-over to the connections): {}", summary(&cost_wide, "µs", 1e3));
    }
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

/// The time since `base`, in ns, of the `"t_ns":` and `"n":` fields of a bench event; `None` for
/// other messages. Reads only these fields: the clients share the machine with the server.
fn stamp(t: &str) -> Option<(u64, u64)> {
    fn field(t: &str, name: &str) -> Option<u64> {
        let r = t.split(name).nth(1)?;
        r[..r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())].parse().ok()
    }
    Some((field(t, "\"t_ns\":")?, field(t, "\"n\":")?))
}

/// The upgrade request of bench client `i` (Bearer token, so no `auth` round trip).
fn upgrade_request(i: usize, token: &str) -> String {
    let key = ws::base64_encode(&(i as u128).to_be_bytes());
    format!(
        "GET /cti HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
}

struct EpollConn {
    s: std::net::TcpStream,
    dec: ws::Decoder,
    live: bool,
    /// The principal it connected as, and how many events it must get.
    principal: usize,
    expected: u64,
    got: u64,
}

/// All clients on this thread: one epoll, level-triggered, one read per ready socket per round.
fn epoll_clients(addr: std::net::SocketAddr, plan: &Plan, base: Instant, connected: Arc<AtomicUsize>) -> Measured {
    use std::io::{Read, Write};
    // SAFETY: plain system calls on descriptors this function owns.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    let mut conns = Vec::with_capacity(plan.conns.len());
    for (i, &(principal, expected)) in plan.conns.iter().enumerate() {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(upgrade_request(i, &plan.mix.token(principal)).as_bytes()).unwrap();
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
        conns.push(EpollConn { s, dec, live: false, principal, expected, got: 0 });
    }
    let mut each = Hists::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut finished = conns.iter().filter(|c| c.expected == 0).count();
    let mut progress = Instant::now();
    let process = |c: &mut EpollConn, now: u64, each: &mut Hists, finished: &mut usize| {
        while let Ok(Some(m)) = c.dec.decode() {
            match m {
                ws::Incoming::Text(t) => {
                    if !c.live {
                        if t.contains("\"event\":\"snapshot\"") {
                            c.live = true;
                            connected.fetch_add(1, Ordering::AcqRel);
                        }
                    } else if let Some((at, n)) = stamp(&t) {
                        if each.record(plan, c.principal, n, at, now) {
                            c.got += 1;
                            if c.got == c.expected {
                                *finished += 1;
                            }
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
        process(c, base.elapsed().as_nanos() as u64, &mut each, &mut finished);
    }
    while finished < conns.len() && progress.elapsed() < Duration::from_secs(15) {
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
                    process(c, now, &mut each, &mut finished);
                    progress = Instant::now();
                }
                Err(_) => continue,
            }
        }
    }
    // SAFETY: closing the epoll descriptor this function created.
    unsafe { libc::close(ep) };
    let delivered = conns.iter().map(|c| c.got).sum();
    Measured { each, delivered }
}

/// Per event, publish → the last of its receivers decoded it: (tenant-wide events, agent events).
fn last_hists(plan: &Plan) -> (Histogram<u64>, Histogram<u64>) {
    let mut wide = Histogram::<u64>::new(3).unwrap();
    let mut agent = Histogram::<u64>::new(3).unwrap();
    for ((p, l), (_, target)) in plan.published.iter().zip(&plan.last).zip(&plan.events) {
        let (p, l) = (p.load(Ordering::Acquire), l.load(Ordering::Acquire));
        if l > 0 {
            let h = if *target == Target::Wide { &mut wide } else { &mut agent };
            h.record(l.saturating_sub(p)).unwrap();
        }
    }
    (wide, agent)
}

/// The earlier client: one tokio task per connection on a one-worker runtime.
fn tokio_clients(addr: std::net::SocketAddr, plan: &Arc<Plan>, base: Instant, connected: Arc<AtomicUsize>) -> Measured {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("clients-rt").enable_all().build().unwrap();
    let hist = Arc::new(Mutex::new(Hists::new()));
    let mut tasks = Vec::new();
    for (i, &(principal, expected)) in plan.conns.iter().enumerate() {
        let (hist, connected, plan) = (hist.clone(), connected.clone(), plan.clone());
        tasks.push(rt.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(upgrade_request(i, &plan.mix.token(principal)).as_bytes()).await.unwrap();
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
            let mut h = Hists::new();
            let mut got = 0u64;
            let mut live = false;
            while !live || got < expected {
                while let Some(m) = dec.decode().unwrap() {
                    if let ws::Incoming::Text(t) = m {
                        if !live && t.contains("\"event\":\"snapshot\"") {
                            live = true;
                            connected.fetch_add(1, Ordering::AcqRel);
                        } else if let Some((at, n)) = stamp(&t).filter(|_| live) {
                            let now = base.elapsed().as_nanos() as u64;
                            if h.record(&plan, principal, n, at, now) {
                                got += 1;
                            }
                        }
                    }
                }
                if live && got >= expected {
                    break;
                }
                let n = match tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                dec.push(&buf[..n]);
            }
            hist.lock().unwrap().add(&h);
            got
        }));
    }
    let mut delivered = 0;
    for t in tasks {
        delivered += rt.block_on(t).unwrap();
    }
    let each = hist.lock().unwrap().clone();
    Measured { each, delivered }
}

/// The commanding agent (`token`, agent id `agent`) sends `agent.ready` at `rate`/s until
/// `deadline`, one at a time; returns command → result and command → the `agent.state` event it
/// causes, as this client sees them. The bench's own events (with `t_ns`) are skipped.
fn commander(addr: std::net::SocketAddr, token: &str, agent: &str, rate: u64, deadline: Instant) -> (Histogram<u64>, Histogram<u64>) {
    let mut result = Histogram::<u64>::new(3).unwrap();
    let mut effect = Histogram::<u64>::new(3).unwrap();
    let mut c = Client::connect_ws(&addr.to_string(), None, Duration::from_secs(10)).unwrap();
    c.auth(token, false).unwrap();
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
                ServerMessage::Event { event, data, .. } if event == events::AGENT_STATE && data["agent"] == agent && data.get("t_ns").is_none() => {
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
/// Returns the time the core spent per published event (publish + handing every message over):
/// for tenant-wide events, and for the others.
async fn core_loop(
    shell: CtiShell,
    mut rx: mpsc::UnboundedReceiver<CtiIn>,
    mut events: mpsc::UnboundedReceiver<Event>,
    mix: Mix,
) -> (Histogram<u64>, Histogram<u64>) {
    let mut cost_wide = Histogram::<u64>::new(3).unwrap();
    let mut cost_agent = Histogram::<u64>::new(3).unwrap();
    let mut cfg = HubConfig::new(Instant::now(), 1_718_000_000_000);
    cfg.max_connections = 2 * CLIENTS + 16;
    let mut hub = Hub::new(mix.principals(), cfg);
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
                    started = Some((t, e.vis.tenant_agents));
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
        if let Some((t, wide)) = started {
            let h = if wide { &mut cost_wide } else { &mut cost_agent };
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    (cost_wide, cost_agent)
}
