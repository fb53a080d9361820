//! The CTI server over real sockets: the HTTP server's `/cti` WebSocket and the Unix socket, the
//! shell, and the hub, driven by a fake call core that answers commands the way the real one does
//! (including refusing another agent's call). Clients are `callgate::cti::client::Client` and raw
//! sockets for protocol violations. Loopback only; every wait is bounded.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use callgate::cti::client::{run_ctl_with, Client, ClientError};
use callgate::cti::proto::ServerMessage;
use callgate::cti::{events, ws, Command, CtiError, Event, Hub, HubConfig, HubStats, Principal, Role, Visibility};
use callgate::edge::cti::{CtiIn, CtiShell, CtiShellConfig, Execute};
use callgate::edge::http::{serve_with_cti, HttpConfig};
use callgate::metrics::Metrics;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

const T: Duration = Duration::from_secs(10);

fn principals() -> Vec<Principal> {
    vec![
        Principal::with_token("kim", Role::Agent, Some("seoul"), Some("1001"), "tok-kim"),
        Principal::with_token("lee", Role::Agent, Some("seoul"), Some("1002"), "tok-lee"),
        Principal::with_token("sup", Role::Supervisor, Some("seoul"), None, "tok-sup"),
        Principal::with_token("root", Role::Admin, None, None, "tok-root"),
    ]
}

const AGENTS: [(&str, &str, &str); 3] = [("1001", "seoul", "Kim"), ("1002", "seoul", "Lee"), ("2001", "goyang", "Park")];

enum Ctl {
    Publish(Event),
    Stats(oneshot::Sender<HubStats>),
}

/// The fake call core: answers each command as the real core would for a small fixed world.
fn execute(p: &Principal, cmd: Command) -> (Result<Value, CtiError>, Option<Event>) {
    let calls: HashMap<&str, Visibility> = [
        ("cg-kim", Visibility::call("seoul", "cg-kim", &["1001"])),
        ("cg-lee", Visibility::call("seoul", "cg-lee", &["1002"])),
    ]
    .into_iter()
    .collect();
    let agents = |tenant: Option<&str>| -> Vec<Value> {
        AGENTS
            .iter()
            .filter(|(id, t, _)| tenant.is_none_or(|x| x == *t) && p.may_see(&Visibility::agent(t, id)))
            .map(|(id, t, name)| json!({"agent": id, "tenant": t, "name": name, "state": "logged_out"}))
            .collect()
    };
    match cmd {
        Command::Snapshot => (Ok(json!({"agents": agents(None), "queues": [], "calls": []})), None),
        Command::QueryAgents { tenant } => (Ok(json!({"agents": agents(tenant.as_deref())})), None),
        Command::AgentReady { agent } => {
            let tenant = AGENTS.iter().find(|a| a.0 == agent).map(|a| a.1).unwrap_or("seoul");
            let ev = Event::new(
                events::AGENT_STATE,
                Visibility::agent(tenant, &agent),
                &events::AgentState { agent: agent.clone(), tenant: tenant.into(), state: "ready".into(), reason: String::new(), call: None },
            );
            (Ok(json!({"agent": agent, "state": "ready"})), Some(ev))
        }
        Command::Hangup { call } | Command::BlindTransfer { call, .. } if !calls.contains_key(call.as_str()) => {
            (Err(CtiError::NotFound(format!("no call {call}"))), None)
        }
        Command::Hangup { call } => {
            let vis = &calls[call.as_str()];
            if !p.may_act_on(vis) {
                return (Err(CtiError::Forbidden(format!("call {call} is not {}'s", p.name))), None);
            }
            let ev = Event::new(
                events::CALL_ENDED,
                vis.clone(),
                &events::CallEnded { call: call.clone(), tenant: "seoul".into(), agent: vis.agents.first().cloned(), reason: "agent_hangup".into(), talk_ms: Some(1000) },
            );
            (Ok(json!({})), Some(ev))
        }
        Command::BlindTransfer { .. } => (Err(CtiError::WrongState("agent 1001 is not talking".into())), None),
        _ => (Ok(json!({})), None),
    }
}

async fn core_loop(mut hub: Hub, shell: CtiShell, mut rx: mpsc::UnboundedReceiver<CtiIn>, mut ctl: mpsc::UnboundedReceiver<Ctl>) {
    loop {
        let deadline = hub.poll_timeout().map(tokio::time::Instant::from_std).unwrap_or_else(|| tokio::time::Instant::now() + T);
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m.apply(&mut hub, Instant::now()),
                None => break,
            },
            c = ctl.recv() => match c {
                Some(Ctl::Publish(ev)) => hub.publish(Instant::now(), ev),
                Some(Ctl::Stats(tx)) => { let _ = tx.send(hub.stats()); }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => hub.handle_timeout(Instant::now()),
        }
        // As the sip task does it: one batch to the connections, commands to the core, until quiet.
        loop {
            let commands = shell.pump(&mut hub);
            if commands.is_empty() {
                break;
            }
            for Execute { conn, id, principal, command } in commands {
                let (r, ev) = execute(&principal, command);
                hub.command_result(conn, &id, r);
                if let Some(ev) = ev {
                    hub.publish(Instant::now(), ev);
                }
            }
        }
    }
}

struct Server {
    rt: tokio::runtime::Runtime,
    http: SocketAddr,
    socket: PathBuf,
    ctl: mpsc::UnboundedSender<Ctl>,
    stop: watch::Sender<bool>,
    epoch: u64,
}

static N: AtomicUsize = AtomicUsize::new(0);

impl Server {
    fn start(hub_cfg: impl FnOnce(&mut HubConfig), shell_cfg: impl FnOnce(&mut CtiShellConfig)) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let socket = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cti-{}-{}.sock", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let mut hc = HubConfig::new(Instant::now(), 1_718_000_000_000);
        hub_cfg(&mut hc);
        let epoch = hc.epoch;
        let mut sc = CtiShellConfig { unix_socket: Some(socket.clone()), ping_every: Duration::from_millis(200), ..Default::default() };
        shell_cfg(&mut sc);
        let (stop, stop_rx) = watch::channel(false);
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let http = rt.block_on(async {
            let (shell, cti_rx) = CtiShell::spawn(&tokio::runtime::Handle::current(), sc, stop_rx.clone()).unwrap();
            let mut hub = Hub::new(principals(), hc);
            hub.set_directory(AGENTS.iter().map(|(a, t, _)| (a.to_string(), t.to_string())));
            tokio::spawn(core_loop(hub, shell.clone(), cti_rx, ctl_rx));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve_with_cti(listener, std::sync::Arc::new(Metrics::new()), HttpConfig::default(), Some(shell), stop_rx));
            addr
        });
        Server { rt, http, socket, ctl, stop, epoch }
    }

    fn addr(&self) -> String {
        self.http.to_string()
    }

    fn publish(&self, kind: &'static str, vis: Visibility, data: Value) {
        self.ctl.send(Ctl::Publish(Event { kind: kind.into(), vis, data })).unwrap();
    }

    fn stats(&self) -> HubStats {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Ctl::Stats(tx)).unwrap();
        self.rt.block_on(async { tokio::time::timeout(T, rx).await.unwrap().unwrap() })
    }

    /// Waits until the hub's stats satisfy `f`.
    fn wait_stats(&self, what: &str, f: impl Fn(&HubStats) -> bool) -> HubStats {
        let deadline = Instant::now() + T;
        loop {
            let s = self.stats();
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {s:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        std::thread::sleep(Duration::from_millis(50));
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn ok(r: Result<Result<Value, callgate::cti::proto::RemoteError>, ClientError>) -> Value {
    match r {
        Ok(Ok(v)) => v,
        other => panic!("expected an ok result, got {other:?}"),
    }
}

fn refused(r: Result<Result<Value, callgate::cti::proto::RemoteError>, ClientError>) -> String {
    match r {
        Ok(Err(e)) => e.code,
        other => panic!("expected an error result, got {other:?}"),
    }
}

#[test]
fn an_agent_session_over_websocket() {
    let srv = Server::start(|_| {}, |_| {});
    let mut c = Client::connect_ws(&srv.addr(), None, T).unwrap();
    // Before auth: a command is refused, the connection stays.
    assert_eq!(refused(c.call("query.agents", json!({}))), "unauthenticated");
    assert_eq!(refused(c.call("auth", json!({"token": "tok-nobody"}))), "unauthenticated");
    let who = ok(c.call("auth", json!({"token": "tok-kim"})));
    assert_eq!((&who["principal"], &who["role"], &who["agent"]), (&json!("kim"), &json!("agent"), &json!("1001")));
    // The snapshot holds what kim may see: kim alone.
    let (seq, kind, data) = c.next_event().unwrap();
    assert_eq!((seq, kind.as_str()), (0, "snapshot"));
    assert_eq!(data["agents"].as_array().unwrap().len(), 1);
    assert_eq!(data["agents"][0]["agent"], "1001");

    // Ready: the result, then the state event.
    assert_eq!(ok(c.call("agent.ready", json!({})))["state"], "ready");
    let (seq, kind, data) = c.next_event().unwrap();
    assert_eq!((seq, kind.as_str(), &data["agent"], &data["state"]), (1, "agent.state", &json!("1001"), &json!("ready")));
    // Someone else's agent or call: forbidden (the hub's check, then the core's).
    assert_eq!(refused(c.call("agent.ready", json!({"agent": "1002"}))), "forbidden");
    assert_eq!(refused(c.call("call.hangup", json!({"call": "cg-lee"}))), "forbidden");
    assert_eq!(refused(c.call("call.hangup", json!({"call": "cg-nobody"}))), "not_found");
    assert_eq!(refused(c.call("call.transfer", json!({"call": "cg-kim", "to": "2000"}))), "wrong_state");
    // Its own call.
    ok(c.call("call.hangup", json!({"call": "cg-kim"})));
    let (seq, kind, data) = c.next_event().unwrap();
    assert_eq!((seq, kind.as_str(), &data["reason"]), (2, "call.ended", &json!("agent_hangup")));

    // Bad input: typed errors, the connection stays open.
    c.send_text("{this is not json").unwrap();
    match c.recv().unwrap() {
        ServerMessage::Result { id: None, result: Err(e) } => assert_eq!(e.code, "bad_request"),
        other => panic!("{other:?}"),
    }
    assert_eq!(refused(c.call("call.teleport", json!({}))), "unknown_command");
    assert_eq!(refused(c.call("call.hold", json!({}))), "missing_field");
    let big = "x".repeat(100 * 1024);
    c.send_text(&format!(r#"{{"v":1,"id":"big","cmd":"call.attach","args":{{"call":"cg-kim","data":{{"note":"{big}"}}}}}}"#)).unwrap();
    match c.recv().unwrap() {
        ServerMessage::Result { id: None, result: Err(e) } => assert_eq!(e.code, "too_large"),
        other => panic!("{other:?}"),
    }
    // Idle for several ping periods: the client answers the server's pings and stays connected.
    c.timeout = Some(Duration::from_millis(900));
    assert!(matches!(c.recv(), Err(ClientError::Timeout)));
    c.timeout = Some(T);
    assert_eq!(ok(c.call("ping", json!({})))["pong"], true);
    // A Korean case note travels intact.
    ok(c.call("call.attach", json!({"call": "cg-kim", "data": {"note": "여권 재발급 문의, 부서 연결 요청"}})));
    c.close();
    srv.wait_stats("the connection to go", |s| s.connections == 0);
}

#[test]
fn resume_after_reconnect_loses_no_event() {
    let srv = Server::start(|_| {}, |_| {});
    let mut c = Client::connect_ws(&srv.addr(), Some("tok-sup"), T).unwrap();
    match c.recv().unwrap() {
        ServerMessage::Result { id: Some(id), result: Ok(v) } => assert_eq!((id.as_str(), &v["principal"]), ("#auth", &json!("sup"))),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.next_event().unwrap().1, "snapshot");
    for n in 1..=5 {
        srv.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), json!({"n": n}));
    }
    let seen: Vec<u64> = (0..5).map(|_| c.next_event().unwrap().0).collect();
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    drop(c); // no close frame: the connection just drops
    srv.wait_stats("the connection to go", |s| s.connections == 0);
    // While away: seoul events (visible) and goyang ones (not).
    for n in 6..=12 {
        let t = if n % 2 == 0 { "seoul" } else { "goyang" };
        srv.publish(events::QUEUE_STATS, Visibility::tenant(t), json!({"n": n}));
    }
    srv.wait_stats("the events", |s| s.seq == 12);
    let mut c = Client::connect_ws(&srv.addr(), None, T).unwrap();
    let who = ok(c.call("auth", json!({"token": "tok-sup", "since": 5, "epoch": srv.epoch})));
    assert_eq!(who["resumed"], true);
    let replayed: Vec<(u64, i64)> = (0..4)
        .map(|_| {
            let (seq, _, data) = c.next_event().unwrap();
            (seq, data["n"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(replayed, vec![(6, 6), (8, 8), (10, 10), (12, 12)]);
    srv.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), json!({"n": 13}));
    let (seq, kind, _) = c.next_event().unwrap();
    assert_eq!((seq, kind.as_str()), (13, "queue.stats"), "live right after the replay, nothing between");
    // Too far back for a fresh run: a gap, then a snapshot.
    let mut d = Client::connect_ws(&srv.addr(), None, T).unwrap();
    let who = ok(d.call("auth", json!({"token": "tok-sup", "since": 5, "epoch": srv.epoch + 1})));
    assert_eq!(who["resumed"], false);
    let (seq, kind, _) = d.next_event().unwrap();
    assert_eq!((seq, kind.as_str()), (13, "snapshot"));
}

/// Opens a WebSocket with a raw socket (for protocol violations and a client that never reads).
fn raw_ws(addr: SocketAddr, bearer: &str, rcvbuf: Option<usize>) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).unwrap();
    }
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(T)).unwrap();
    let key = ws::base64_encode(b"0123456789abcdef");
    write!(
        s,
        "GET /cti HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {bearer}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1);
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains(&ws::accept_key(&key)), "{head}");
    s
}

/// Reads frames until a close frame; returns its code.
fn close_code(s: &mut TcpStream) -> u16 {
    close_frame(s).0
}

/// Reads frames until a close frame; returns its code and reason.
fn close_frame(s: &mut TcpStream) -> (u16, String) {
    let mut dec = ws::Decoder::new(ws::Role::Client, 16 << 20);
    let mut buf = [0u8; 8192];
    loop {
        match dec.decode().unwrap() {
            Some(ws::Incoming::Close(code, reason)) => return (code.unwrap(), reason),
            Some(_) => continue,
            None => {}
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed without a close frame");
        dec.push(&buf[..n]);
    }
}

#[test]
fn websocket_protocol_violations_close_with_their_codes() {
    let srv = Server::start(|_| {}, |_| {});
    let cases: Vec<(Vec<u8>, u16)> = vec![
        ({ let mut f = Vec::new(); ws::encode(ws::Opcode::Text, b"{}", None, &mut f); f }, 1002), // unmasked
        ({ let mut f = Vec::new(); ws::encode(ws::Opcode::Binary, b"{}", Some([1, 2, 3, 4]), &mut f); f }, 1003),
        ({ let mut f = Vec::new(); ws::encode(ws::Opcode::Text, &[0xC3, 0x28], Some([1, 2, 3, 4]), &mut f); f }, 1007),
        (vec![0x81, 0xFF, 0, 0, 0, 0, 0, 0x20, 0, 0, 1, 2, 3, 4], 1009), // announces 2 MiB
    ];
    for (frame, want) in cases {
        let mut s = raw_ws(srv.http, "tok-sup", None);
        s.write_all(&frame).unwrap();
        assert_eq!(close_code(&mut s), want);
    }
    // The peer's close is answered with the same code.
    let mut s = raw_ws(srv.http, "tok-sup", None);
    let mut f = Vec::new();
    ws::encode_close(1000, "bye", Some([5, 6, 7, 8]), &mut f);
    s.write_all(&f).unwrap();
    assert_eq!(close_code(&mut s), 1000);
    srv.wait_stats("every connection to go", |s| s.connections == 0);
}

#[test]
fn a_peer_that_answers_no_ping_is_disconnected() {
    let srv = Server::start(|_| {}, |s| s.ping_every = Duration::from_millis(100));
    let started = Instant::now();
    let mut s = raw_ws(srv.http, "tok-sup", None);
    // Reads (pings and all) but never answers: closed after three silent periods.
    assert_eq!(close_code(&mut s), 1001);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
    srv.wait_stats("the connection to go", |s| s.connections == 0);
}

#[test]
fn commands_beyond_the_rate_limit_are_refused_and_a_flood_is_closed() {
    let srv = Server::start(
        |h| {
            h.command_rate = 20;
            h.command_burst = 20;
            h.flood_factor = 5;
            h.flood_time = Duration::from_secs(1);
        },
        |s| s.ping_every = Duration::from_secs(60), // the idle client must not be cut off for silence
    );
    // A burst of 30 pings at once: the bucket's 20 (less the auth's token) are answered, the rest
    // refused as rate_limited, each with its id; the connection stays.
    let mut c = Client::connect_ws(&srv.addr(), None, T).unwrap();
    c.auth("tok-sup", false).unwrap();
    let ids: Vec<String> = (0..30).map(|_| c.send("ping", json!({})).unwrap()).collect();
    let mut codes = Vec::new();
    for id in &ids {
        codes.push(match c.wait_result(id).unwrap() {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code,
        });
    }
    let served = codes.iter().filter(|c| *c == "ok").count();
    assert!((19..=21).contains(&served), "{codes:?}");
    assert!(codes[served..].iter().all(|c| c == "rate_limited"), "refusals come after the burst: {codes:?}");
    std::thread::sleep(Duration::from_millis(200)); // 4 tokens back
    assert!(ok(c.call("ping", json!({})))["pong"] == true);
    // A client flooding at ~1,000 messages/s (50× the limit) is closed within about two seconds
    // with 1008 "too many messages"; the well-behaved one stays.
    let mut flood = raw_ws(srv.http, "tok-sup", None);
    let mut frame = Vec::new();
    ws::encode(ws::Opcode::Text, br#"{"v":1,"id":"f","cmd":"ping"}"#, Some([9, 8, 7, 6]), &mut frame);
    let started = Instant::now();
    'send: while started.elapsed() < Duration::from_secs(4) {
        for _ in 0..10 {
            if flood.write_all(&frame).is_err() {
                break 'send;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
        if srv.stats().floods == 1 {
            break;
        }
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "{took:?}");
    assert_eq!(close_frame(&mut flood), (1008, "too many messages".to_owned()));
    let s = srv.wait_stats("the flood to be closed", |s| s.connections == 1);
    assert_eq!(s.floods, 1);
    assert!(s.rate_limited > 10);
    assert!(ok(c.call("ping", json!({})))["pong"] == true);
}

#[test]
fn a_slow_consumer_is_cut_off_and_the_others_get_everything() {
    // Pings far apart: the silent client must be cut off for not reading, not for not answering pings.
    let srv = Server::start(
        |h| h.max_queued_bytes = 256 * 1024,
        |s| {
            s.ack_every = 8 * 1024;
            s.ping_every = Duration::from_secs(60);
        },
    );
    let mut slow = raw_ws(srv.http, "tok-sup", Some(4096)); // reads nothing from here on
    let mut good = Client::connect_ws(&srv.addr(), Some("tok-sup"), T).unwrap();
    good.recv().unwrap(); // #auth
    assert_eq!(good.next_event().unwrap().1, "snapshot");
    srv.wait_stats("both connected", |s| s.authenticated == 2);
    let pad = "가".repeat(1300); // ~4 KB per event
    let mut next = 1u64;
    let mut cut = false;
    for _batch in 0..1000 {
        for _ in 0..16 {
            srv.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), json!({"pad": pad}));
        }
        for _ in 0..16 {
            let (seq, _, _) = good.next_event().unwrap();
            assert_eq!(seq, next, "the well-behaved client lost or reordered an event");
            next += 1;
        }
        if srv.stats().slow_consumers == 1 {
            cut = true;
            break;
        }
    }
    assert!(cut, "the client that never reads was never disconnected");
    let s = srv.wait_stats("the slow one to go", |s| s.connections == 1);
    assert_eq!(s.slow_consumers, 1);
    // The slow client, reading at last, finds its connection ended.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let ended = loop {
        match slow.read(&mut buf) {
            Ok(0) | Err(_) => break true,
            Ok(_) => continue,
        }
    };
    assert!(ended);
    // And the good one goes on.
    srv.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), json!({}));
    assert_eq!(good.next_event().unwrap().0, next);
}

#[test]
fn json_lines_over_the_unix_socket() {
    let srv = Server::start(|_| {}, |_| {});
    let mut c = Client::connect_unix(&srv.socket, T).unwrap();
    c.send_text("not json at all").unwrap();
    match c.recv().unwrap() {
        ServerMessage::Result { id: None, result: Err(e) } => assert_eq!(e.code, "bad_request"),
        other => panic!("{other:?}"),
    }
    ok(c.call("auth", json!({"token": "tok-kim", "snapshot": false})));
    assert_eq!(ok(c.call("agent.ready", json!({})))["state"], "ready");
    let (seq, kind, _) = c.next_event().unwrap();
    assert_eq!((seq, kind.as_str()), (1, "agent.state"));
    assert_eq!(refused(c.call("query.calls", json!({}))), "forbidden");
    // Several commands in one write, answered in order.
    c.send_raw(b"{\"v\":1,\"id\":\"p1\",\"cmd\":\"ping\"}\n\r\n{\"v\":1,\"id\":\"p2\",\"cmd\":\"ping\"}\n").unwrap();
    for want in ["p1", "p2"] {
        match c.recv().unwrap() {
            ServerMessage::Result { id: Some(id), result: Ok(_) } => assert_eq!(id, want),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn ctl_speaks_the_same_protocol() {
    let srv = Server::start(|_| {}, |_| {});
    let run = |args: &[&str]| -> (i32, String) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let code = run_ctl_with(&args, &mut out);
        (code, String::from_utf8(out).unwrap())
    };
    let addr = srv.addr();
    let (code, out) = run(&["--http", &addr, "--token", "tok-sup", "agents"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("AGENT") && lines[0].contains("STATE"), "{out}");
    assert_eq!(lines.len(), 3, "seoul's two agents: {out}");
    assert!(lines[1].starts_with("1001") && lines[2].starts_with("1002"), "{out}");
    let sock = srv.socket.to_str().unwrap();
    let (code, out) = run(&["--socket", sock, "--token", "tok-sup", "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" as sup (supervisor, tenant seoul)"), "{out}");
    assert!(out.contains("agents: 2"), "{out}");
    let (code, _) = run(&["--http", &addr, "--token", "tok-sup", "agent-state", "1002", "ready"]);
    assert_eq!(code, 0);
    let (code, _) = run(&["--http", &addr, "--token", "tok-kim", "hangup", "cg-lee"]);
    assert_eq!(code, 1, "another agent's call is refused");
    let (code, _) = run(&["--http", &addr, "--token", "tok-kim", "hangup", "cg-kim"]);
    assert_eq!(code, 0);
    let (code, _) = run(&["--http", &addr, "--token", "wrong", "agents"]);
    assert_eq!(code, 3);
    let (code, _) = run(&["--http", &addr, "--token", "tok-sup", "frobnicate"]);
    assert_eq!(code, 2);
    let (code, _) = run(&["--http", "127.0.0.1:1", "--token", "tok-sup", "agents"]);
    assert_eq!(code, 3);
}
