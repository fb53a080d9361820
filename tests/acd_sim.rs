//! A centre's busy day in virtual time, checked against queueing theory.
//!
//! The centre: 43 agents (the "2,200 calls a day with 43 agents" centre of the domain notes), one
//! longest-idle queue, no wrap-up, position announcements every 45 s, and 2,200 calls arriving as a
//! Poisson stream at the peak-hour rate: offered load A = 39 erlangs (λ = 39 / 240 s ≈ 585 calls an
//! hour, so the 2,200 calls take about 3 h 45 min, the busy block of the day; ρ = 39/43 ≈ 0.91).
//! Handling: the agent's phone rings 1 s, then they talk an exponential time of mean 239 s, so an
//! agent is busy 240 s per call on average. Patience: exponential, mean 90 s, running while the
//! caller is in line (a caller whose agent already rings stays: the ring is the start of service in
//! the model; hang-ups while ringing are tested in tests/acd_races.rs). A second day has no
//! abandonment, at 36 erlangs (ρ ≈ 0.84: without abandonment an M/M/N queue near 0.9 relaxes so
//! slowly that one day is a poor sample).
//!
//! The ACD runs as the call core drives it: an event queue of arrivals, patience expiries, agent
//! answers and hang-ups, plus the ACD's own timers. Every figure comes from the queue log alone.
//! The first half hour is served but not measured (the centre opens empty), and the theory is
//! evaluated at the day's *realized* arrival rate and mean handling time, so that the sampling noise
//! of the load itself (about ±3 %, to which SL near ρ = 0.9 is very sensitive) does not count.
//!
//! Expected values: Erlang A (M/M/N+M, [`erlang_a`]) for the day with patience, Erlang C
//! ([`service_level`]) for the day without. "Answered within 20 s" in the log (Connect::wait_ms, which
//! includes the 1 s ring) is the model's "an agent was seized within 19 s".
//!
//! Tolerances (absolute), from the spread over 20 other seeds (`cargo test --test acd_sim --
//! --ignored --nocapture` prints it; measured − theory, mean ± sd):
//! SL vs Erlang A −0.25 ± 2.2 points → ±3 points; abandonment vs Erlang A +0.16 ± 0.7 points →
//! ±1.5 points; SL vs Erlang C +1.9 ± 3.0 points → ±6 points; occupancy vs ρ → ±0.03.
//! Seed 120 (the test's) gives SL 91.0 % vs 92.7 %, abandonment 3.5 % vs 2.9 %, and without abandonment
//! SL 94.0 % vs 93.6 %.

#[path = "acd_harness.rs"]
mod harness;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use callgate::acd::erlang::{erlang_a, service_level};
use callgate::acd::log::QueueEventKind as K;
use callgate::acd::*;
use callgate::sip::Rng;

const AGENTS: u32 = 43;
const CALLS: u64 = 2_200;
/// Offered load of the day with patience, and of the day in which nobody abandons (lighter: without
/// abandonment an M/M/N queue near ρ = 0.9 relaxes so slowly that one day is a poor sample).
const LOAD: f64 = 39.0;
const LOAD_NO_ABANDON: f64 = 36.0;
const RING_S: f64 = 1.0;
const TALK_S: f64 = 239.0;
const AHT_S: f64 = RING_S + TALK_S;
const PATIENCE_S: f64 = 90.0;
const SL_S: f64 = 20.0;
/// Calls arriving in the first half hour are served but not measured: the centre opens empty.
const WARMUP_S: f64 = 1800.0;

fn exp(rng: &mut Rng, mean: f64) -> f64 {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    -mean * (1.0 - u).ln()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive(u64),
    Patience(u64),
    Answer { call: u64, agent: u32, token: u64 },
    HangUp(u64),
}

#[derive(Debug)]
#[allow(dead_code)] // printed with {:?}
struct Outcome {
    /// Calls entering after the warm-up, and what became of them.
    offered: u64,
    answered: u64,
    answered_in_sl: u64,
    abandoned: u64,
    sl: f64,
    abandon_rate: f64,
    /// Agent busy time (reserved + talking) over agent time, within the measured window.
    occupancy: f64,
    /// The day's realized arrival rate (1/s) and mean handling time (s): the theory is evaluated at
    /// these, so that the sampling noise of the load itself does not count against the ACD.
    lambda: f64,
    aht: f64,
    log_digest: u64,
}

fn simulate(seed: u64, patience: Option<f64>) -> Outcome {
    let mut queue = QueueSpec::new("city", "general");
    queue.wrapup = Duration::ZERO;
    queue.announce_every = Some(Duration::from_secs(45));
    let agents = (0..AGENTS)
        .map(|i| AgentSpec {
            tenant: "city".into(),
            id: format!("{}", 1001 + i),
            extension: format!("{}", 1001 + i),
            name: String::new(),
            skills: vec![("ko".into(), 10)],
            queues: vec![("general".into(), 0)],
        })
        .collect();
    let t0 = Instant::now();
    let mut acd = Acd::new(AcdSpec { queues: vec![queue], agents }, seed, t0, harness::WALL0).unwrap();
    for i in 0..AGENTS {
        acd.login(t0, AgentRef(i), "register").unwrap();
    }
    let mut rng = Rng::seeded(seed ^ 0x5eed);
    let lambda = if patience.is_some() { LOAD } else { LOAD_NO_ABANDON } / AHT_S;
    let mut heap: BinaryHeap<Reverse<(Duration, u64, Ev)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<Reverse<(Duration, u64, Ev)>>, at: Duration, ev: Ev| {
        seq += 1;
        heap.push(Reverse((at, seq, ev)));
    };
    // arrivals, talk times and patience drawn up front: the same callers whatever the routing does
    let mut t = 0.0;
    let mut talk = HashMap::new();
    let mut arrival = HashMap::new();
    for call in 1..=CALLS {
        t += exp(&mut rng, 1.0 / lambda);
        talk.insert(call, exp(&mut rng, TALK_S));
        arrival.insert(format!("c{call}"), t);
        let at = Duration::from_secs_f64(t);
        push(&mut heap, at, Ev::Arrive(call));
        if let Some(p) = patience {
            push(&mut heap, at + Duration::from_secs_f64(exp(&mut rng, p)), Ev::Patience(call));
        }
    }
    let mut waiting: HashMap<u64, bool> = HashMap::new(); // call → still in the ACD (not connected/gone)
    let mut offers: HashMap<(u64, u32), u64> = HashMap::new();
    let mut token = 0u64;
    let mut ringing: HashMap<u64, u32> = HashMap::new();
    let mut logs = Vec::new();
    let mut busy = Duration::ZERO;
    let window = (Duration::from_secs_f64(WARMUP_S), Duration::from_secs_f64(t));
    let mut busy_since: HashMap<u32, Duration> = HashMap::new();
    loop {
        // the ACD's own timers first when they are due no later than the next event
        let next_ev = heap.peek().map(|Reverse((at, _, _))| *at);
        let next_acd = acd.poll_timeout().map(|i| i - t0);
        let horizon = Duration::from_secs(24 * 3600);
        assert!(
            next_ev.unwrap_or(Duration::ZERO) < horizon && next_acd.unwrap_or(Duration::ZERO) < horizon,
            "the day never ends: callers stuck in line ({} waiting)",
            acd.waiting("city", "general")
        );
        let now_d = match (next_ev, next_acd) {
            (None, None) => break,
            (Some(e), Some(a)) if a <= e => {
                acd.handle_timeout(t0 + a);
                a
            }
            (None, Some(a)) => {
                acd.handle_timeout(t0 + a);
                a
            }
            (Some(e), _) => {
                let Reverse((_, _, ev)) = heap.pop().unwrap();
                let now = t0 + e;
                match ev {
                    Ev::Arrive(call) => {
                        let info = CallInfo { cg_id: format!("c{call}"), caller: format!("010{call:08}"), number: "120".into(), ..Default::default() };
                        acd.enqueue(now, call, "city", "general", info).expect("the queue takes everyone");
                        waiting.insert(call, true);
                    }
                    Ev::Patience(call) => {
                        // patience runs out in line; a caller whose agent already rings stays
                        // (the ring is the start of service in the model)
                        if waiting.get(&call) == Some(&true) && !ringing.contains_key(&call) {
                            acd.abandon(now, call);
                            waiting.insert(call, false);
                        }
                    }
                    Ev::Answer { call, agent, token: tk } => {
                        if offers.get(&(call, agent)) == Some(&tk) {
                            offers.remove(&(call, agent));
                            ringing.remove(&call);
                            acd.answered(now, call, AgentRef(agent)).expect("a live offer can be answered");
                            waiting.insert(call, false);
                            push(&mut heap, e + Duration::from_secs_f64(talk[&call]), Ev::HangUp(call));
                        }
                    }
                    Ev::HangUp(call) => acd.ended(now, call, "caller"),
                }
                e
            }
        };
        while let Some(action) = acd.poll_action() {
            match action {
                Action::Offer { call, agent, .. } => {
                    token += 1;
                    offers.insert((call, agent.0), token);
                    ringing.insert(call, agent.0);
                    push(&mut heap, now_d + Duration::from_secs_f64(RING_S), Ev::Answer { call, agent: agent.0, token });
                }
                Action::StopOffer { call, agent } => {
                    offers.remove(&(call, agent.0));
                    ringing.remove(&call);
                }
                Action::AgentState { agent, state, .. } => match state {
                    AgentState::Reserved(_) => {
                        busy_since.insert(agent.0, now_d);
                    }
                    AgentState::Ready => {
                        if let Some(s) = busy_since.remove(&agent.0) {
                            // the part of the busy period inside the measured window
                            let (a, b) = (s.max(window.0), now_d.min(window.1));
                            if b > a {
                                busy += b - a;
                            }
                        }
                    }
                    _ => {}
                },
                Action::Announce { .. } => {}
                other => panic!("unexpected action {other:?}"),
            }
        }
        while let Some(l) = acd.poll_log() {
            logs.push(l);
        }
    }
    // nothing stuck at the end of the day
    assert_eq!(acd.waiting("city", "general"), 0);
    assert!(acd.agents().all(|(_, _, s)| *s == AgentState::Ready), "every agent is Ready again");
    assert!(offers.is_empty());

    // every figure from the queue log alone
    let measured = |call: &str| arrival[call] >= WARMUP_S;
    let mut offered = 0;
    let (mut entered, mut answered, mut in_sl, mut abandoned, mut completed) = (0, 0, 0, 0, 0);
    let mut outcome_of: HashMap<String, &'static str> = HashMap::new();
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    for l in &logs {
        for b in format!("{}{}{}{:?}", l.at_ms, l.call, l.agent, l.kind).bytes() {
            digest = (digest ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        let m = !l.call.is_empty() && measured(&l.call);
        match &l.kind {
            K::Enter { .. } => {
                entered += 1;
                offered += m as u64;
            }
            K::Connect { wait_ms, .. } => {
                assert!(outcome_of.insert(l.call.clone(), "connect").is_none(), "one outcome per call");
                if m {
                    answered += 1;
                    if *wait_ms <= (SL_S * 1000.0) as u64 {
                        in_sl += 1;
                    }
                }
            }
            K::Abandon { .. } => {
                assert!(outcome_of.insert(l.call.clone(), "abandon").is_none(), "one outcome per call");
                abandoned += m as u64;
            }
            K::Complete { .. } => completed += 1,
            _ => {}
        }
    }
    assert_eq!(entered, CALLS);
    assert_eq!(outcome_of.len() as u64, CALLS, "every caller connected or abandoned");
    assert_eq!(completed, outcome_of.values().filter(|v| **v == "connect").count() as u64);
    assert_eq!(answered + abandoned, offered);
    assert!(in_sl <= answered);
    let first_measured = arrival.values().copied().filter(|&a| a >= WARMUP_S).fold(f64::MAX, f64::min);
    let lambda = (offered - 1) as f64 / (t - first_measured);
    let aht = RING_S + talk.values().sum::<f64>() / CALLS as f64;
    Outcome {
        offered,
        answered,
        answered_in_sl: in_sl,
        abandoned,
        sl: in_sl as f64 / offered as f64,
        abandon_rate: abandoned as f64 / offered as f64,
        occupancy: busy.as_secs_f64() / (AGENTS as f64 * (window.1 - window.0).as_secs_f64()),
        lambda,
        aht,
        log_digest: digest,
    }
}

/// Erlang A at the day's realized load.
fn theory_a(run: &Outcome) -> erlang::ErlangA {
    let d = Duration::from_secs_f64;
    erlang_a(run.lambda, d(run.aht), d(PATIENCE_S), AGENTS, d(SL_S - RING_S))
}

/// Erlang C at the day's realized load.
fn theory_c(run: &Outcome) -> f64 {
    service_level(run.lambda * run.aht, AGENTS, Duration::from_secs_f64(run.aht), Duration::from_secs_f64(SL_S - RING_S))
}

const SEED: u64 = 120;

#[test]
fn a_day_with_patience_agrees_with_erlang_a() {
    let run = simulate(SEED, Some(PATIENCE_S));
    let th = theory_a(&run);
    eprintln!("measured {run:?}\nErlang A {th:?}");
    assert!(th.service_level > 0.5 && th.service_level < 0.95, "the parameters make a meaningful test: {th:?}");
    assert!((run.sl - th.service_level).abs() <= 0.03, "SL {:.4} vs Erlang A {:.4}", run.sl, th.service_level);
    assert!((run.abandon_rate - th.p_abandon).abs() <= 0.015, "abandonment {:.4} vs Erlang A {:.4}", run.abandon_rate, th.p_abandon);
    // deterministic: the same seed gives the same day, to the log row
    assert_eq!(simulate(SEED, Some(PATIENCE_S)).log_digest, run.log_digest);
}

#[test]
fn a_day_without_abandonment_agrees_with_erlang_c() {
    let run = simulate(SEED, None);
    let th = theory_c(&run);
    eprintln!("measured {run:?}\nErlang C SL {th:.4}");
    assert_eq!(run.abandoned, 0);
    assert!((run.sl - th).abs() <= 0.06, "SL {:.4} vs Erlang C {:.4}", run.sl, th);
    // occupancy of an M/M/N queue is A/N (every call is served)
    let rho = run.lambda * run.aht / AGENTS as f64;
    assert!((run.occupancy - rho).abs() <= 0.03, "occupancy {:.4} vs {rho:.4}", run.occupancy);
}

#[test]
#[ignore = "calibration: prints the spread of the measured figures over seeds"]
fn calibration() {
    let (mut da, mut dab, mut dc) = (vec![], vec![], vec![]);
    for seed in 100..120 {
        let p = simulate(seed, Some(PATIENCE_S));
        let n = simulate(seed, None);
        let (a, c) = (theory_a(&p), theory_c(&n));
        println!(
            "seed {seed}: A={:.2} with patience SL {:.4} ({:+.4}) abandon {:.4} ({:+.4}) | A={:.2} no abandonment SL {:.4} ({:+.4}) occ {:.3} (rho {:.3})",
            p.lambda * p.aht, p.sl, p.sl - a.service_level, p.abandon_rate, p.abandon_rate - a.p_abandon,
            n.lambda * n.aht, n.sl, n.sl - c, n.occupancy, n.lambda * n.aht / AGENTS as f64
        );
        da.push(p.sl - a.service_level);
        dab.push(p.abandon_rate - a.p_abandon);
        dc.push(n.sl - c);
    }
    let ms = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
    };
    println!("SL − Erlang A: mean {:+.4} sd {:.4}", ms(&da).0, ms(&da).1);
    println!("abandon − Erlang A: mean {:+.4} sd {:.4}", ms(&dab).0, ms(&dab).1);
    println!("SL − Erlang C: mean {:+.4} sd {:.4}", ms(&dc).0, ms(&dc).1);
}
