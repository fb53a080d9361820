//! The hub in virtual time: authentication, permissions, bad input, event sequence, resume and
//! slow consumers, as a client would see them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

const T0_MS: i64 = 1_718_000_000_000;

fn principals() -> Vec<Principal> {
    vec![
        Principal::with_token("kim", Role::Agent, Some("seoul"), Some("1001"), "tok-kim"),
        Principal::with_token("lee", Role::Agent, Some("seoul"), Some("1002"), "tok-lee"),
        Principal::with_token("park", Role::Agent, Some("goyang"), Some("2001"), "tok-park"),
        Principal::with_token("sup-seoul", Role::Supervisor, Some("seoul"), None, "tok-sup-seoul"),
        Principal::with_token("sup-goyang", Role::Supervisor, Some("goyang"), None, "tok-sup-goyang"),
        Principal::with_token("crm", Role::Integration, Some("seoul"), None, "tok-crm"),
        Principal::with_token("root", Role::Admin, None, None, "tok-root"),
    ]
}

struct T {
    hub: Hub,
    now: Instant,
    t0: Instant,
    /// Outputs not yet looked at.
    pending: Vec<HubOutput>,
}

fn peer() -> PeerInfo {
    PeerInfo { transport: Transport::WebSocket, remote: "127.0.0.1:40000".into(), bearer: None }
}

impl T {
    fn new() -> T {
        T::with(|_| {})
    }

    fn with(f: impl FnOnce(&mut HubConfig)) -> T {
        let t0 = Instant::now();
        let mut cfg = HubConfig::new(t0, T0_MS);
        cfg.epoch = 7;
        f(&mut cfg);
        let mut hub = Hub::new(principals(), cfg);
        hub.set_directory([("1001", "seoul"), ("1002", "seoul"), ("2001", "goyang")].map(|(a, t)| (a.to_owned(), t.to_owned())));
        T { hub, now: t0, t0, pending: Vec::new() }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.hub.poll_timeout().is_some_and(|t| t <= self.now) {
            self.hub.handle_timeout(self.now);
        }
    }

    fn collect(&mut self) {
        while let Some(o) = self.hub.poll_output() {
            self.pending.push(o);
        }
    }

    /// Messages sent to `conn` since the last look (parsed), leaving other outputs pending.
    fn sent(&mut self, conn: u64) -> Vec<Value> {
        self.collect();
        let mut got = Vec::new();
        self.pending.retain(|o| match o {
            HubOutput::Send { conn: c, text } if *c == conn => {
                got.push(serde_json::from_str(text).expect("the hub sends JSON"));
                false
            }
            _ => true,
        });
        got
    }

    fn closes(&mut self) -> Vec<(u64, CloseReason)> {
        self.collect();
        let mut got = Vec::new();
        self.pending.retain(|o| match o {
            HubOutput::Close { conn, reason } => {
                got.push((*conn, *reason));
                false
            }
            _ => true,
        });
        got
    }

    fn executes(&mut self) -> Vec<(u64, String, String, Command)> {
        self.collect();
        let mut got = Vec::new();
        self.pending.retain(|o| match o {
            HubOutput::Execute { conn, id, principal, command } => {
                got.push((*conn, id.clone(), principal.name.clone(), command.clone()));
                false
            }
            _ => true,
        });
        got
    }

    fn msg(&mut self, conn: u64, v: Value) {
        self.hub.on_message(self.now, conn, &v.to_string());
    }

    fn cmd(&mut self, conn: u64, id: &str, cmd: &str, args: Value) {
        self.msg(conn, json!({"v": 1, "id": id, "cmd": cmd, "args": args}));
    }

    /// The single reply to `conn`.
    fn reply(&mut self, conn: u64) -> Value {
        let mut s = self.sent(conn);
        assert_eq!(s.len(), 1, "expected one message, got {s:?}");
        s.pop().unwrap()
    }

    /// Opens `conn`, authenticates with `token`, answers the snapshot with `{"who": name}`.
    fn login(&mut self, conn: u64, token: &str) -> Value {
        self.hub.on_open(self.now, conn, peer());
        self.cmd(conn, "a", "auth", json!({"token": token}));
        let auth = self.reply(conn);
        assert_eq!(auth["ok"], true, "{auth}");
        let ex = self.executes();
        assert_eq!(ex.len(), 1);
        assert_eq!((ex[0].0, ex[0].1.as_str(), &ex[0].3), (conn, "#snapshot", &Command::Snapshot));
        self.hub.command_result(conn, "#snapshot", Ok(json!({"who": ex[0].2})));
        let snap = self.reply(conn);
        assert_eq!(snap["event"], "snapshot");
        auth
    }

    fn publish(&mut self, kind: &'static str, vis: Visibility, n: u64) {
        self.hub.publish(self.now, Event { kind: kind.into(), vis, data: json!({"n": n}) });
    }

    fn ack_all(&mut self, conn: u64, msgs: &[Value]) {
        let bytes: usize = msgs.iter().map(|m| m.to_string().len()).sum();
        self.hub.on_sent(conn, bytes);
    }
}

fn err_code(v: &Value) -> &str {
    assert_eq!(v["ok"], false, "expected an error, got {v}");
    v["error"]["code"].as_str().unwrap()
}

#[test]
fn auth_with_good_and_bad_tokens() {
    let mut t = T::new();
    t.hub.on_open(t.now, 1, peer());
    // Anything before auth is refused, the connection stays.
    t.cmd(1, "q", "query.queues", json!({}));
    let r = t.reply(1);
    assert_eq!((err_code(&r), &r["id"]), ("unauthenticated", &json!("q")));
    // Two bad tokens: errors, still open; a missing token is a missing field.
    t.cmd(1, "a1", "auth", json!({"token": "tok-nope"}));
    assert_eq!(err_code(&t.reply(1)), "unauthenticated");
    t.cmd(1, "a2", "auth", json!({}));
    let r = t.reply(1);
    assert_eq!((err_code(&r), r["error"]["message"].as_str().unwrap()), ("missing_field", "missing field args.token"));
    t.cmd(1, "a3", "auth", json!({"token": "tok-kim "}));
    assert_eq!(err_code(&t.reply(1)), "unauthenticated");
    assert!(t.closes().is_empty());
    t.cmd(1, "a4", "auth", json!({"token": "TOK-KIM"}));
    assert_eq!(err_code(&t.reply(1)), "unauthenticated");
    assert_eq!(t.closes(), vec![(1, CloseReason::AuthFailed)]);
    assert_eq!(t.hub.stats().auth_failures, 3);
    // The closed connection is forgotten: later input is ignored.
    t.cmd(1, "a5", "auth", json!({"token": "tok-kim"}));
    assert!(t.sent(1).is_empty());

    // The right token: who it is, the epoch and seq, then a snapshot request.
    let auth = t.login(2, "tok-kim");
    assert_eq!(auth["result"]["principal"], "kim");
    assert_eq!(auth["result"]["role"], "agent");
    assert_eq!(auth["result"]["tenant"], "seoul");
    assert_eq!(auth["result"]["agent"], "1001");
    assert_eq!(auth["result"]["epoch"], 7);
    t.cmd(2, "again", "auth", json!({"token": "tok-kim"}));
    assert_eq!(err_code(&t.reply(2)), "wrong_state");
}

#[test]
fn auth_without_snapshot_goes_live_at_once() {
    let mut t = T::new();
    t.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), 1);
    t.hub.on_open(t.now, 1, peer());
    t.cmd(1, "a", "auth", json!({"token": "tok-sup-seoul", "snapshot": false}));
    assert_eq!(t.reply(1)["result"]["seq"], 1);
    assert!(t.executes().is_empty());
    t.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), 2);
    assert_eq!(t.reply(1)["seq"], 2);
    t.hub.on_open(t.now, 2, peer());
    t.cmd(2, "a", "auth", json!({"token": "tok-sup-seoul", "snapshot": "no"}));
    assert_eq!(err_code(&t.reply(2)), "bad_request");
}

#[test]
fn bearer_header_authenticates_and_a_bad_one_closes() {
    let mut t = T::new();
    let good = PeerInfo { bearer: Some("tok-sup-seoul".into()), ..peer() };
    t.hub.on_open(t.now, 1, good);
    let r = t.reply(1);
    assert_eq!((&r["id"], &r["result"]["principal"]), (&json!("#auth"), &json!("sup-seoul")));
    assert_eq!(t.executes().len(), 1, "snapshot requested");
    let bad = PeerInfo { bearer: Some("tok-wrong".into()), ..peer() };
    t.hub.on_open(t.now, 2, bad);
    assert_eq!(err_code(&t.reply(2)), "unauthenticated");
    assert_eq!(t.closes(), vec![(2, CloseReason::AuthFailed)]);
}

#[test]
fn no_auth_in_time_closes() {
    let mut t = T::new();
    t.hub.on_open(t.now, 1, peer());
    t.advance(Duration::from_secs(5));
    t.login(2, "tok-lee");
    t.advance(Duration::from_secs(5)); // conn 1 at 10 s
    let r = t.reply(1);
    assert_eq!((err_code(&r), &r["id"]), ("unauthenticated", &json!("#auth")));
    assert_eq!(t.closes(), vec![(1, CloseReason::AuthTimeout)]);
    t.advance(Duration::from_secs(60));
    assert!(t.closes().is_empty(), "the authenticated connection stays");
    assert_eq!(t.hub.poll_timeout(), None);
}

#[test]
fn agents_act_on_their_own_agent_only() {
    let mut t = T::new();
    t.login(1, "tok-kim");
    // Another agent's state: forbidden, counted, no Execute.
    t.cmd(1, "r1", "agent.ready", json!({"agent": "1002"}));
    let r = t.reply(1);
    assert_eq!((err_code(&r), &r["id"]), ("forbidden", &json!("r1")));
    assert!(r["error"]["message"].as_str().unwrap().contains("1002"), "{r}");
    assert!(t.executes().is_empty());
    assert_eq!(t.hub.stats().forbidden, 1);
    // Its own (explicit or by default).
    t.cmd(1, "r2", "agent.ready", json!({}));
    t.cmd(1, "r3", "agent.not_ready", json!({"agent": "1001", "reason": "lunch"}));
    let ex = t.executes();
    assert_eq!(ex[0].3, Command::AgentReady { agent: "1001".into() });
    assert_eq!(ex[1].3, Command::AgentNotReady { agent: "1001".into(), reason: "lunch".into() });
    t.hub.command_result(1, "r2", Ok(json!({"state": "ready"})));
    let r = t.reply(1);
    assert_eq!((&r["id"], &r["ok"], &r["result"]["state"]), (&json!("r2"), &json!(true), &json!("ready")));
    // Supervisor-only and privacy-restricted commands.
    for (cmd, args) in [
        ("call.monitor", json!({"call": "cg-1", "mode": "listen"})),
        ("agent.force_state", json!({"agent": "1001", "state": "ready"})),
        ("query.calls", json!({})),
        ("query.queues", json!({"tenant": "goyang"})),
    ] {
        t.cmd(1, "x", cmd, args);
        assert_eq!(err_code(&t.reply(1)), "forbidden", "{cmd}");
    }
    // A hangup goes to the call core, which knows whose call it is; its refusal reaches the client.
    t.cmd(1, "h", "call.hangup", json!({"call": "cg-of-lee"}));
    let ex = t.executes();
    assert_eq!(ex[0].3, Command::Hangup { call: "cg-of-lee".into() });
    t.hub.command_result(1, "h", Err(CtiError::Forbidden("call cg-of-lee is not yours".into())));
    let r = t.reply(1);
    assert_eq!((err_code(&r), &r["id"]), ("forbidden", &json!("h")));
}

#[test]
fn supervisors_stay_in_their_tenant() {
    let mut t = T::new();
    t.login(1, "tok-sup-goyang");
    t.cmd(1, "q", "query.queues", json!({"tenant": "seoul"}));
    assert_eq!(err_code(&t.reply(1)), "forbidden");
    t.cmd(1, "r", "agent.ready", json!({"agent": "1001"}));
    assert_eq!(err_code(&t.reply(1)), "forbidden");
    t.cmd(1, "f", "agent.force_state", json!({"agent": "1001", "state": "logged_out"}));
    assert_eq!(err_code(&t.reply(1)), "forbidden");
    t.cmd(1, "u", "agent.ready", json!({"agent": "9999"}));
    assert_eq!(err_code(&t.reply(1)), "not_found");
    // A supervisor must name the agent.
    t.cmd(1, "m", "agent.ready", json!({}));
    assert_eq!(err_code(&t.reply(1)), "missing_field");
    assert!(t.executes().is_empty());
    // Its own tenant: defaults to it.
    t.cmd(1, "ok1", "agent.force_state", json!({"agent": "2001", "state": "not_ready", "reason": "meeting"}));
    t.cmd(1, "ok2", "query.queues", json!({}));
    t.cmd(1, "ok3", "call.monitor", json!({"call": "cg-9", "mode": "whisper"}));
    let cmds: Vec<Command> = t.executes().into_iter().map(|e| e.3).collect();
    assert_eq!(
        cmds,
        vec![
            Command::ForceAgentState { agent: "2001".into(), state: ForcedState::NotReady, reason: "meeting".into() },
            Command::QueryQueues { tenant: Some("goyang".into()) },
            Command::Monitor { call: "cg-9".into(), mode: MonitorMode::Whisper, extension: None },
        ]
    );
    // An integration reads and attaches, but does not drive calls; an admin sees every tenant.
    t.login(2, "tok-crm");
    t.cmd(2, "a", "call.attach", json!({"call": "cg-1", "data": {"case": "C-17", "note": "여권 재발급"}}));
    t.cmd(2, "b", "call.hangup", json!({"call": "cg-1"}));
    assert_eq!(err_code(&t.reply(2)), "forbidden");
    let ex: Vec<Command> = t.executes().into_iter().map(|e| e.3).collect();
    assert!(matches!(&ex[..], [Command::AttachData { call, data }] if call == "cg-1" && data["case"] == "C-17"));
    t.login(3, "tok-root");
    t.cmd(3, "c", "query.agents", json!({}));
    assert_eq!(t.executes()[0].3, Command::QueryAgents { tenant: None });
}

#[test]
fn bad_input_gets_typed_errors_and_the_connection_stays() {
    let mut t = T::new();
    t.login(1, "tok-kim");
    let cases: Vec<(String, &str, Value)> = vec![
        ("{not json".into(), "bad_request", Value::Null),
        ("[1,2]".into(), "bad_request", Value::Null),
        (r#"{"v":1,"cmd":"ping"}"#.into(), "missing_field", Value::Null),
        (r#"{"v":1,"id":5,"cmd":"ping"}"#.into(), "bad_request", Value::Null),
        (r##"{"v":1,"id":"#x","cmd":"ping"}"##.into(), "bad_request", Value::Null),
        (r#"{"id":"a","cmd":"ping"}"#.into(), "missing_field", json!("a")),
        (r#"{"v":2,"id":"b","cmd":"ping"}"#.into(), "bad_request", json!("b")),
        (r#"{"v":1,"id":"c"}"#.into(), "missing_field", json!("c")),
        (r#"{"v":1,"id":"d","cmd":"call.teleport","args":{}}"#.into(), "unknown_command", json!("d")),
        (r#"{"v":1,"id":"e","cmd":"call.hangup","args":{}}"#.into(), "missing_field", json!("e")),
        (r#"{"v":1,"id":"f","cmd":"call.hangup","args":{"call":7}}"#.into(), "bad_request", json!("f")),
        (r#"{"v":1,"id":"g","cmd":"call.hangup","args":[]}"#.into(), "bad_request", json!("g")),
        (r#"{"v":1,"id":"h","cmd":"call.transfer","args":{"call":"cg-1","to":"1001>;x"}}"#.into(), "bad_request", json!("h")),
        (r#"{"v":1,"id":"i","cmd":"call.disposition","args":{"call":"cg-1","subject":"tax"}}"#.into(), "missing_field", json!("i")),
        (r#"{"v":1,"id":"j","cmd":"call.monitor","args":{"call":"cg-1","mode":"spy"}}"#.into(), "bad_request", json!("j")),
        (r#"{"v":1,"id":"k","cmd":"resume","args":{"since":-1}}"#.into(), "bad_request", json!("k")),
        (format!(r#"{{"v":1,"id":"l","cmd":"call.attach","args":{{"call":"cg-1","data":{{"note":"{}"}}}}}}"#, "x".repeat(70_000)), "too_large", Value::Null),
    ];
    for (text, code, id) in cases {
        t.hub.on_message(t.now, 1, &text);
        let r = t.reply(1);
        assert_eq!((err_code(&r), &r["id"]), (code, &id), "for {:.80}: {r}", text);
        assert!(r["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(t.closes().is_empty() && t.executes().is_empty());
    // Still alive and well.
    t.cmd(1, "p", "ping", json!({}));
    assert_eq!(t.reply(1)["result"]["pong"], true);
    t.cmd(1, "d", "call.disposition", json!({"call": "cg-1", "subject": "passport", "settled": true, "flag": "praise"}));
    assert_eq!(
        t.executes()[0].3,
        Command::Disposition { call: "cg-1".into(), subject: "passport".into(), settled: true, flag: VocFlag::Praise }
    );
}

#[test]
fn in_flight_limits_and_duplicate_ids() {
    let mut t = T::with(|c| c.max_inflight = 2);
    t.login(1, "tok-kim");
    t.cmd(1, "x", "call.hold", json!({"call": "cg-1"}));
    t.cmd(1, "x", "call.hold", json!({"call": "cg-1"}));
    assert_eq!(err_code(&t.reply(1)), "bad_request");
    t.cmd(1, "y", "call.hold", json!({"call": "cg-1"}));
    t.cmd(1, "z", "call.hold", json!({"call": "cg-1"}));
    assert_eq!(err_code(&t.reply(1)), "busy");
    assert_eq!(t.executes().len(), 2);
    t.hub.command_result(1, "x", Err(CtiError::WrongState("agent 1001 is not talking".into())));
    assert_eq!(err_code(&t.reply(1)), "wrong_state");
    // A result for an unknown id (answered twice) is dropped.
    t.hub.command_result(1, "x", Ok(json!({})));
    assert!(t.sent(1).is_empty());
    t.cmd(1, "z", "call.hold", json!({"call": "cg-1"}));
    assert_eq!(t.executes().len(), 1);
}

#[test]
fn messages_beyond_the_rate_limit_are_refused_with_rate_limited_and_not_carried_out() {
    // 50 per second, bursts of 100 (the defaults, spelt out).
    let mut t = T::with(|c| {
        c.command_rate = 50;
        c.command_burst = 100;
    });
    t.login(1, "tok-kim"); // the auth message takes a token: 99 left
    for i in 0..99 {
        t.cmd(1, &format!("p{i}"), "ping", json!({}));
    }
    let replies = t.sent(1);
    assert_eq!(replies.len(), 99);
    assert!(replies.iter().all(|r| r["ok"] == true), "the burst is served");
    // The 101st message at the same instant: refused with its id, and the command is not executed.
    t.cmd(1, "r1", "agent.ready", json!({}));
    let r = t.reply(1);
    assert_eq!((err_code(&r), &r["id"]), ("rate_limited", &json!("r1")));
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("50 messages per second") && msg.contains("bursts of 100") && msg.contains("retry in 20 ms"), "{msg}");
    assert!(t.executes().is_empty(), "a refused command reaches no one");
    // Refused messages do not drain the bucket further: 20 ms later exactly one token is back.
    t.advance(Duration::from_millis(20));
    t.cmd(1, "r2", "agent.ready", json!({}));
    assert_eq!(t.executes().len(), 1);
    t.hub.command_result(1, "r2", Ok(json!({})));
    assert_eq!(t.reply(1)["ok"], true);
    t.cmd(1, "r3", "ping", json!({}));
    assert_eq!(err_code(&t.reply(1)), "rate_limited");
    // A second later: 50 more, not a full burst.
    t.advance(Duration::from_secs(1));
    for i in 0..51 {
        t.cmd(1, &format!("q{i}"), "ping", json!({}));
    }
    let replies = t.sent(1);
    assert_eq!(replies.iter().filter(|r| r["ok"] == true).count(), 50);
    assert_eq!(err_code(&replies[50]), "rate_limited");
    // Another connection has its own bucket; a limited one is not closed for it.
    t.login(2, "tok-lee");
    t.cmd(2, "p", "ping", json!({}));
    assert_eq!(t.reply(2)["ok"], true);
    assert!(t.closes().is_empty());
    assert_eq!(t.hub.stats().rate_limited, 3);
    // Malformed input is refused as rate limited too (without an id when none can be read).
    t.msg(1, json!("not an object"));
    let r = t.reply(1);
    assert_eq!((err_code(&r), &r["id"]), ("rate_limited", &Value::Null));

    // command_rate 0: no limit.
    let mut t = T::with(|c| c.command_rate = 0);
    t.login(1, "tok-kim");
    for i in 0..1000 {
        t.cmd(1, &format!("p{i}"), "ping", json!({}));
    }
    assert!(t.sent(1).iter().all(|r| r["ok"] == true));
}

#[test]
fn a_connection_that_keeps_flooding_is_closed_and_one_that_only_exceeds_the_limit_is_not() {
    let mut t = T::with(|c| {
        c.command_rate = 50;
        c.command_burst = 100;
        c.flood_factor = 10;
        c.flood_time = Duration::from_secs(5);
        c.max_queued_bytes = 64 << 20; // the refusals are never acknowledged here
    });
    t.login(1, "tok-kim"); // floods: 1,000 messages/s (20× the limit)
    t.login(2, "tok-lee"); // 250 messages/s (5×): limited, never closed
    t.login(3, "tok-sup-seoul"); // floods 4 s, pauses 2 s, floods 4 s: never 5 s on end
    let start = t.now;
    let mut closed_at = None;
    let mut served2 = 0;
    for ms in 0..12_000u64 {
        let at = Duration::from_millis(ms);
        if closed_at.is_none() {
            t.cmd(1, "f", "ping", json!({}));
        }
        if ms % 4 == 0 {
            t.cmd(2, "e", "ping", json!({}));
        }
        if !(4_000..6_000).contains(&ms) && ms < 10_000 {
            t.cmd(3, "s", "ping", json!({}));
        }
        let closes = t.closes();
        if !closes.is_empty() {
            assert_eq!(closes, vec![(1, CloseReason::Flooding)], "at {at:?}");
            assert!(closed_at.is_none());
            closed_at = Some(at);
        }
        if ms % 100 == 99 {
            served2 += t.sent(2).iter().filter(|r| r["ok"] == true).count();
            t.pending.clear();
        }
        t.advance(Duration::from_millis(1));
    }
    let closed_at = closed_at.expect("the flooding connection was closed");
    assert!(closed_at >= Duration::from_secs(5) && closed_at < Duration::from_millis(5_100), "closed after {closed_at:?}");
    assert_eq!(t.now - start, Duration::from_secs(12));
    let s = t.hub.stats();
    assert_eq!((s.connections, s.floods), (2, 1));
    // The one that only exceeded its limit was served at the limit: the burst, then 50/s.
    assert!((695..=701).contains(&served2), "served {served2} of conn 2's 3,000 messages in 12 s");
    t.advance(Duration::from_secs(2));
    t.cmd(2, "last", "ping", json!({}));
    assert_eq!(t.reply(2)["ok"], true);
    assert_eq!(CloseReason::Flooding.ws_code(), 1008);
    assert!(!CloseReason::Flooding.abort(), "the refusals already queued are sent before the close");
}

#[test]
fn events_reach_whoever_may_see_them() {
    let mut t = T::new();
    let tokens = ["tok-kim", "tok-lee", "tok-park", "tok-sup-seoul", "tok-sup-goyang", "tok-crm", "tok-root"];
    for (i, tok) in tokens.iter().enumerate() {
        t.login(i as u64, tok);
    }
    let who = |t: &mut T| -> Vec<usize> { (0..tokens.len()).filter(|&i| !t.sent(i as u64).is_empty()).collect() };
    t.publish(events::AGENT_STATE, Visibility::agent("seoul", "1001"), 1);
    assert_eq!(who(&mut t), vec![0, 3, 5, 6]);
    t.publish(events::QUEUE_STATS, Visibility::tenant_wide("seoul"), 2);
    assert_eq!(who(&mut t), vec![0, 1, 3, 5, 6]);
    t.publish(events::CALL_OFFERED, Visibility::call("goyang", "cg-7", &["2001"]), 3);
    assert_eq!(who(&mut t), vec![2, 4, 6]);
    t.publish(events::CALL_TRANSFERRED, Visibility::call("seoul", "cg-8", &["1001", "1002"]), 4);
    assert_eq!(who(&mut t), vec![0, 1, 3, 5, 6]);
    t.publish(events::CALLBACK, Visibility::platform(), 5);
    assert_eq!(who(&mut t), vec![6]);
    // The call core's ownership rule is the same.
    let kim = &principals()[0];
    assert!(kim.may_act_on(&Visibility::call("seoul", "cg-8", &["1001"])));
    assert!(!kim.may_act_on(&Visibility::call("seoul", "cg-9", &["1002"])));
    assert!(!kim.may_act_on(&Visibility::tenant_wide("seoul")));
}

#[test]
fn seq_is_monotonic_and_events_are_well_formed() {
    let mut t = T::new();
    t.login(1, "tok-kim");
    t.login(2, "tok-sup-seoul");
    t.advance(Duration::from_millis(1500));
    for n in 0..200u64 {
        let vis = if n % 3 == 0 { Visibility::agent("seoul", "1001") } else { Visibility::agent("seoul", "1002") };
        t.publish(events::AGENT_STATE, vis, n);
    }
    let sup = t.sent(2);
    let seqs: Vec<u64> = sup.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let e = &sup[0];
    assert_eq!((&e["v"], &e["event"], &e["at_ms"], &e["data"]["n"]), (&json!(1), &json!("agent.state"), &json!(T0_MS + 1500), &json!(0)));
    let kim: Vec<u64> = t.sent(1).iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(kim.len(), 67);
    assert!(kim.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(t.hub.seq(), 200);
}

#[test]
fn no_live_event_before_the_snapshot_and_the_snapshot_names_its_seq() {
    let mut t = T::new();
    t.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), 1);
    t.hub.on_open(t.now, 1, peer());
    t.cmd(1, "a", "auth", json!({"token": "tok-sup-seoul"}));
    assert_eq!(t.reply(1)["result"]["seq"], 1);
    assert_eq!(t.executes().len(), 1);
    // Events while the core works on the snapshot: not sent (the snapshot will include them).
    t.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), 2);
    assert!(t.sent(1).is_empty());
    t.hub.command_result(1, "#snapshot", Ok(json!({"queues": []})));
    let s = t.reply(1);
    assert_eq!((&s["event"], &s["seq"], &s["data"]), (&json!("snapshot"), &json!(2), &json!({"queues": []})));
    t.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), 3);
    assert_eq!(t.reply(1)["seq"], 3);
    // A snapshot asked for later: the event, then the result naming its seq.
    t.cmd(1, "s", "snapshot", json!({}));
    assert_eq!(t.executes()[0].1, "s");
    t.hub.command_result(1, "s", Ok(json!({"n": 1})));
    let got = t.sent(1);
    assert_eq!(got.len(), 2);
    assert_eq!((&got[0]["event"], &got[0]["seq"]), (&json!("snapshot"), &json!(3)));
    assert_eq!((&got[1]["id"], &got[1]["result"]), (&json!("s"), &json!({"seq": 3})));
}

#[test]
fn resume_after_reconnect_replays_exactly_the_missing_events() {
    let mut t = T::new();
    t.login(1, "tok-kim");
    t.login(9, "tok-lee");
    for n in 1..=5 {
        t.publish(events::AGENT_STATE, Visibility::agent("seoul", "1001"), n);
    }
    let seen: Vec<u64> = t.sent(1).iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    t.hub.on_close(1);
    // While kim is away: events for kim, for lee only, and tenant-wide.
    for n in 6..=12 {
        let vis = match n % 3 {
            0 => Visibility::agent("seoul", "1001"),
            1 => Visibility::agent("seoul", "1002"),
            _ => Visibility::tenant_wide("seoul"),
        };
        t.publish(events::AGENT_STATE, vis, n);
    }
    // Reconnect with since=5: no snapshot, exactly the events kim may see after 5.
    t.hub.on_open(t.now, 2, peer());
    t.cmd(2, "a", "auth", json!({"token": "tok-kim", "since": 5, "epoch": 7}));
    let got = t.sent(2);
    assert_eq!(got[0]["result"]["resumed"], true);
    let replayed: Vec<u64> = got[1..].iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(replayed, vec![6, 8, 9, 11, 12]);
    assert!(t.executes().is_empty(), "no snapshot when resuming");
    // Then live, no gap, no duplicate.
    t.publish(events::AGENT_STATE, Visibility::agent("seoul", "1001"), 13);
    assert_eq!(t.reply(2)["seq"], 13);

    // The same with a header-authenticated connection: the resume command supersedes the snapshot.
    t.hub.on_close(2);
    t.publish(events::AGENT_STATE, Visibility::agent("seoul", "1001"), 14);
    t.hub.on_open(t.now, 3, PeerInfo { bearer: Some("tok-kim".into()), ..peer() });
    assert_eq!(t.reply(3)["id"], "#auth");
    t.cmd(3, "r", "resume", json!({"since": 13}));
    let got = t.sent(3);
    assert_eq!((&got[0]["id"], &got[0]["result"]["from"], &got[0]["result"]["last_seq"]), (&json!("r"), &json!(14), &json!(14)));
    assert_eq!(got[1]["seq"], 14);
    assert_eq!(got.len(), 2);
    // The core's late snapshot answer is dropped.
    assert_eq!(t.executes().len(), 1);
    t.hub.command_result(3, "#snapshot", Ok(json!({})));
    assert!(t.sent(3).is_empty());
}

#[test]
fn resume_beyond_the_ring_or_from_another_epoch_gets_a_gap_and_a_snapshot() {
    let mut t = T::with(|c| c.replay_events = 10);
    t.login(1, "tok-root");
    for n in 1..=30 {
        t.publish(events::CALLBACK, Visibility::platform(), n);
    }
    t.sent(1);
    assert_eq!(t.hub.stats().ring_events, 10);
    for (since, epoch) in [(2, 7), (19, 7), (1000, 7), (25, 6)] {
        t.cmd(1, "r", "resume", json!({"since": since, "epoch": epoch}));
        let r = t.reply(1);
        assert_eq!(err_code(&r), "resume_gap", "since {since} epoch {epoch}");
        let ex = t.executes();
        assert_eq!((ex.len(), &ex[0].3), (1, &Command::Snapshot));
        // Until the snapshot comes, no live event.
        t.publish(events::CALLBACK, Visibility::platform(), 0);
        assert!(t.sent(1).is_empty());
        t.hub.command_result(1, "#snapshot", Ok(json!({})));
        let s = t.reply(1);
        assert_eq!((&s["event"], &s["seq"]), (&json!("snapshot"), &json!(t.hub.seq())));
    }
    // 20 is the last one still resumable: events 21.. are kept.
    let last = t.hub.seq();
    t.cmd(1, "r", "resume", json!({"since": last - 10}));
    let got = t.sent(1);
    assert_eq!(got[0]["ok"], true);
    assert_eq!(got.len(), 11);
}

#[test]
fn a_slow_consumer_is_disconnected_and_the_others_go_on() {
    let mut t = T::with(|c| c.max_queued_bytes = 16 * 1024);
    t.login(1, "tok-sup-seoul"); // never reads
    t.login(2, "tok-sup-seoul"); // reads everything
    t.hub.on_sent(1, 1 << 20);
    t.hub.on_sent(2, 1 << 20);
    let mut closed_at = None;
    for n in 0..1000 {
        t.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), n);
        let got = t.sent(2);
        assert_eq!(got.len(), 1);
        t.ack_all(2, &got);
        if closed_at.is_none() {
            let c = t.closes();
            if !c.is_empty() {
                assert_eq!(c, vec![(1, CloseReason::SlowConsumer)]);
                closed_at = Some(n);
            }
        }
    }
    let n = closed_at.expect("the slow consumer was never cut off");
    let sent_to_1 = t.sent(1);
    let bytes: usize = sent_to_1.iter().map(|m| m.to_string().len()).sum();
    assert!(bytes <= 16 * 1024, "{bytes} bytes queued beyond the limit");
    assert!(bytes > 15 * 1024, "cut off early at {bytes} bytes");
    assert_eq!(sent_to_1.len() as u64, n);
    assert_eq!(t.hub.stats().slow_consumers, 1);
    assert_eq!(t.hub.stats().connections, 1);
    // Late acknowledgements or input for the closed connection are ignored.
    t.hub.on_sent(1, 100);
    t.hub.on_close(1);
}

#[test]
fn a_long_replay_is_paced_by_what_the_client_reads() {
    let mut t = T::with(|c| c.max_queued_bytes = 8 * 1024);
    for n in 0..500 {
        t.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), n);
    }
    t.hub.on_open(t.now, 1, peer());
    t.cmd(1, "a", "auth", json!({"token": "tok-sup-seoul", "since": 0}));
    let mut got: Vec<u64> = Vec::new();
    let mut rounds = 0;
    loop {
        let batch = t.sent(1);
        if batch.is_empty() {
            break;
        }
        let bytes: usize = batch.iter().map(|m| m.to_string().len()).sum();
        assert!(bytes <= 8 * 1024);
        got.extend(batch.iter().filter_map(|e| e["seq"].as_u64()));
        // Live events keep coming while replaying; they join the replay in order.
        if rounds % 3 == 0 {
            t.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), 1000 + rounds);
        }
        t.ack_all(1, &batch);
        rounds += 1;
    }
    assert!(rounds > 5, "not paced: {rounds} rounds");
    assert_eq!(got, (1..=t.hub.seq()).collect::<Vec<_>>());
    assert!(t.closes().is_empty());
}

#[test]
fn a_replay_the_ring_overtakes_is_cut_off() {
    let mut t = T::with(|c| {
        c.max_queued_bytes = 4 * 1024;
        c.replay_events = 100;
    });
    for n in 0..100 {
        t.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), n);
    }
    t.hub.on_open(t.now, 1, peer());
    t.cmd(1, "a", "auth", json!({"token": "tok-sup-seoul", "since": 0}));
    assert!(!t.sent(1).is_empty());
    // The client reads nothing while 100 more events push the unsent ones out of the ring.
    for n in 0..100 {
        t.publish(events::QUEUE_STATS, Visibility::tenant("seoul"), n);
    }
    assert_eq!(t.closes(), vec![(1, CloseReason::SlowConsumer)]);
}

#[test]
fn connection_limit_and_revocation() {
    let mut t = T::with(|c| c.max_connections = 2);
    t.login(1, "tok-kim");
    t.login(2, "tok-lee");
    t.hub.on_open(t.now, 3, peer());
    assert_eq!(t.closes(), vec![(3, CloseReason::TooManyConnections)]);
    assert_eq!(t.hub.stats().refused_connections, 1);
    t.hub.on_close(2);
    t.login(4, "tok-lee");
    // kim's token is removed by a reload: kim's connection ends, lee's stays.
    let rest: Vec<Principal> = principals().into_iter().filter(|p| p.name != "kim").collect();
    t.hub.set_principals(rest);
    assert_eq!(t.closes(), vec![(1, CloseReason::Revoked)]);
    t.hub.close_all();
    assert_eq!(t.closes(), vec![(4, CloseReason::Shutdown)]);
}

#[test]
fn at_ms_follows_the_clock_anchor() {
    let t = T::new();
    assert_eq!(t.hub.at_ms(t.t0 + Duration::from_millis(2500)), T0_MS + 2500);
}

/// The published JSON Schema names every command, event and error code the code knows, and no other.
#[test]
fn schema_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cti-schema.json");
    let text = std::fs::read_to_string(&path).expect("docs/cti-schema.json");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    let defs = &schema["$defs"];
    let consts = |v: &Value| -> Vec<String> {
        v["oneOf"]
            .as_array()
            .expect("oneOf")
            .iter()
            .map(|r| {
                let name = r["$ref"].as_str().expect("$ref").rsplit('/').next().unwrap();
                let d = &defs[name];
                let key = if d["properties"]["cmd"].is_object() { "cmd" } else { "event" };
                d["properties"][key]["const"].as_str().unwrap_or_else(|| panic!("{name} has no const {key}")).to_owned()
            })
            .collect()
    };
    let mut cmds = consts(&defs["command"]);
    cmds.sort();
    let mut known: Vec<String> = proto::COMMANDS.iter().map(|s| s.to_string()).collect();
    known.sort();
    assert_eq!(cmds, known, "commands in the schema vs proto::COMMANDS");
    let mut evs = consts(&defs["event"]);
    evs.sort();
    let mut known: Vec<String> = events::KINDS.iter().map(|s| s.to_string()).collect();
    known.sort();
    assert_eq!(evs, known, "events in the schema vs events::KINDS");
    let codes: Vec<&str> = defs["error"]["properties"]["code"]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(codes, CtiError::CODES.to_vec());
    // Every command the parser accepts is in the list, and no listed name is unknown to it.
    let root = Principal::with_token("r", Role::Admin, None, None, "x");
    for c in proto::COMMANDS {
        let r = proto::parse_command(c, &serde_json::Map::new(), &root);
        assert!(!matches!(r, Err(CtiError::UnknownCommand(_))) || ["auth", "resume", "ping"].contains(&c), "{c}");
    }
}
