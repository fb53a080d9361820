//! Routing decision cost with 10,000 agents and 1,000 queues (aim: < 10 µs per decision).
//!
//! The centre: 1,000 queues of one tenant, 10,000 agents, each serving 3 queues (penalties 0, 1, 2;
//! about 30 agents a queue), skill "ko" at levels 1–10 against a queue requirement of ko ≥ 3 (relaxed
//! to 1 after 30 s), a third of the callers also needing "en" from the menu (agents: every fourth
//! speaks it). Every iteration is one full input through the public API, log rows and actions drained:
//!
//! * `caller_enters`: all agents Ready, no one waiting. A caller enters a queue → the strategy picks an
//!   agent → Offer; then the caller hangs up while it rings (StopOffer, the agent back to Ready with its
//!   idle time kept) to restore the state. Two routing inputs per iteration.
//! * `agent_ready`: all agents NotReady, 10 callers waiting in every queue (10,000 in all). An agent
//!   becomes Ready → it takes the best caller across its 3 queues → Offer; then it goes NotReady again
//!   (Miss Withdrawn: the caller is re-routed, finds nobody, keeps its place). Two routing inputs.
//!
//! Run: `cargo bench --bench acd_route` (needs `[[bench]] name = "acd_route", harness = false`).

use std::time::{Duration, Instant};

use callgate::acd::*;

fn main() {
    divan::main();
}

const AGENTS: u32 = 10_000;
const QUEUES: u32 = 1_000;

fn strategy(name: &str) -> Strategy {
    match name {
        "longest_idle" => Strategy::LongestIdle,
        "round_robin" => Strategy::RoundRobin,
        "fewest_calls" => Strategy::FewestCalls,
        "least_talk" => Strategy::LeastTalk,
        "linear" => Strategy::Linear,
        "random" => Strategy::Random,
        "ring_all" => Strategy::RingAll,
        other => panic!("unknown strategy {other}"),
    }
}

struct World {
    acd: Acd,
    t0: Instant,
    tick: u64,
    next_call: u64,
}

impl World {
    fn new(strategy: Strategy, agents_ready: bool, waiting_per_queue: u32) -> World {
        let queues = (0..QUEUES)
            .map(|q| {
                let mut s = QueueSpec::new("city", &format!("q{q}"));
                s.strategy = strategy;
                s.skills = vec![SkillReq { skill: "ko".into(), level: 3, relax: vec![(Duration::from_secs(30), 1)] }];
                s
            })
            .collect();
        let agents = (0..AGENTS)
            .map(|i| {
                let mut skills = vec![("ko".to_string(), (1 + i % 10) as u8)];
                if i % 4 == 0 {
                    skills.push(("en".to_string(), 5));
                }
                AgentSpec {
                    tenant: "city".into(),
                    id: format!("a{i}"),
                    extension: format!("{}", 10_000 + i),
                    name: String::new(),
                    skills,
                    queues: vec![
                        (format!("q{}", i % QUEUES), 0),
                        (format!("q{}", (i * 7 + 3) % QUEUES), 1),
                        (format!("q{}", (i * 13 + 5) % QUEUES), 2),
                    ],
                }
            })
            .collect();
        let t0 = Instant::now();
        let mut w = World { acd: Acd::new(AcdSpec { queues, agents }, 1, t0, 0).unwrap(), t0, tick: 0, next_call: 1 };
        let now = w.now();
        for i in 0..AGENTS {
            let reason = if agents_ready { "register" } else { "cti" };
            w.acd.login(now, AgentRef(i), reason).unwrap();
        }
        for k in 0..waiting_per_queue {
            for q in 0..QUEUES {
                let call = w.next_call;
                w.next_call += 1;
                let info = info(call, (k % 3) as u8, k % 3 == 0);
                w.acd.enqueue(now, call, "city", &format!("q{q}"), info).unwrap();
            }
        }
        w.drain();
        w
    }

    fn now(&mut self) -> Instant {
        self.tick += 1;
        self.t0 + Duration::from_micros(self.tick)
    }

    fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.acd.poll_action().is_some() {
            n += 1;
        }
        while self.acd.poll_log().is_some() {
            n += 1;
        }
        n
    }
}

fn info(call: u64, priority: u8, en: bool) -> CallInfo {
    CallInfo {
        cg_id: format!("cg{call}"),
        caller: "01012345678".into(),
        number: "120".into(),
        priority,
        skill: en.then(|| "en".to_string()),
        language: None,
    }
}

const STRATEGIES: [&str; 7] = ["longest_idle", "round_robin", "fewest_calls", "least_talk", "linear", "random", "ring_all"];

#[divan::bench(args = STRATEGIES, sample_count = 500, sample_size = 20)]
fn caller_enters(bencher: divan::Bencher, strategy_name: &str) {
    let mut w = World::new(strategy(strategy_name), true, 0);
    let names: Vec<String> = (0..QUEUES).map(|q| format!("q{q}")).collect();
    let infos: Vec<CallInfo> = (0..64).map(|i| info(i, 0, i % 3 == 0)).collect();
    let mut i = 0usize;
    bencher.bench_local(|| {
        i += 1;
        let call = 1_000_000 + i as u64;
        let now = w.now();
        let pos = w.acd.enqueue(now, call, "city", &names[(i * 37) % names.len()], infos[i % 64].clone()).unwrap();
        w.acd.abandon(now, call);
        divan::black_box(pos + w.drain() as u32)
    });
}

#[divan::bench(args = STRATEGIES, sample_count = 500, sample_size = 20)]
fn agent_ready(bencher: divan::Bencher, strategy_name: &str) {
    let mut w = World::new(strategy(strategy_name), false, 10);
    let mut i = 0u32;
    bencher.bench_local(|| {
        i += 1;
        let a = AgentRef((i * 7919) % AGENTS);
        let now = w.now();
        w.acd.ready(now, a).unwrap();
        let offered = matches!(w.acd.agent_state(a), AgentState::Reserved(_));
        w.acd.not_ready(now, a, "bench").unwrap();
        divan::black_box((offered, w.drain()))
    });
}
