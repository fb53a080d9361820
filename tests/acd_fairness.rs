//! Fairness and strategies: who gets which caller, in what order.

#[path = "acd_harness.rs"]
mod harness;

use std::time::Duration;

use callgate::acd::log::QueueEventKind as K;
use callgate::acd::*;
use harness::*;

fn no_wrap(mut q: QueueSpec) -> QueueSpec {
    q.wrapup = Duration::ZERO;
    q
}

/// Serve whatever agent `id` is offered now, `talk` seconds, and return the call.
fn serve_next(h: &mut H, id: &str, talk: f64) -> u64 {
    let offers = h.offers();
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_eq!(offers[0].1, id);
    let call = offers[0].0;
    h.serve(call, id, talk);
    call
}

#[test]
fn oldest_first_across_queues_with_priority() {
    let qs = ["a", "b", "c"].map(|n| no_wrap(queue("t", n, Strategy::LongestIdle))).to_vec();
    let mut h = H::new(AcdSpec { queues: qs, agents: vec![agent("t", "1", &[], &[("a", 0), ("b", 0), ("c", 0)])] });
    let a = h.a("1");
    h.acd.login(h.now, a, "cti").unwrap();
    h.call_full(1, "t", "a", 0, None).unwrap();
    h.to(5.0);
    h.call_full(2, "t", "b", 0, None).unwrap();
    h.to(10.0);
    h.call_full(3, "t", "c", 3, None).unwrap(); // priority: first, though youngest
    h.to(15.0);
    h.call_full(4, "t", "a", 0, None).unwrap();
    h.to(16.0);
    h.call_full(5, "t", "c", 0, None).unwrap();
    h.acd.ready(h.now, a).unwrap();
    let mut order = vec![];
    for _ in 0..5 {
        order.push(serve_next(&mut h, "1", 10.0));
    }
    assert_eq!(order, vec![3, 1, 2, 4, 5]);
}

#[test]
fn callback_keeps_its_original_place() {
    let qs = vec![no_wrap(queue("t", "a", Strategy::LongestIdle)), no_wrap(queue("t", "b", Strategy::LongestIdle))];
    let mut h = H::new(AcdSpec { queues: qs, agents: vec![agent("t", "1", &[], &[("a", 0), ("b", 0)])] });
    let a = h.a("1");
    h.acd.login(h.now, a, "cti").unwrap();
    h.call(1, "a").unwrap();
    h.to(10.0);
    h.call(2, "b").unwrap();
    h.to(20.0);
    let cb = h.acd.request_callback(h.now, 1, "01011112222").unwrap(); // at 20 s, but placed at 0 s
    h.to(25.0);
    h.call(3, "a").unwrap();
    assert_eq!(h.acd.position(3), Some(2), "the callback is counted ahead in its queue");
    h.to(30.0);
    h.acd.ready(h.now, a).unwrap();
    let acts = h.take();
    assert!(acts.iter().any(|x| matches!(x, Action::CallbackDue { callback, .. } if *callback == cb)), "{acts:?}");
    assert!(!acts.iter().any(|x| matches!(x, Action::Offer { .. })));
    h.acd.callback_result(h.now, cb, Some(100));
    h.to(60.0);
    h.acd.ended(h.now, 100, "agent");
    assert_eq!(serve_next(&mut h, "1", 5.0), 2);
    assert_eq!(serve_next(&mut h, "1", 5.0), 3);
}

#[test]
fn wrapup_lasts_the_full_queue_time_unless_ready() {
    let mut long = queue("t", "long", Strategy::LongestIdle);
    long.wrapup = Duration::from_secs(45);
    let mut short = queue("t", "short", Strategy::LongestIdle);
    short.wrapup = Duration::from_secs(5);
    let mut h = H::new(AcdSpec { queues: vec![long, short], agents: vec![agent("t", "1", &[], &[("long", 0), ("short", 0)])] });
    h.login("1");
    h.call(1, "long").unwrap();
    h.serve(1, "1", 60.0); // ends at 60 s: wrap-up of the call's queue, 45 s
    h.take();
    h.call(2, "short").unwrap();
    h.to(104.999);
    assert_eq!(h.st("1"), AgentState::Wrapup, "callers waiting do not cut the wrap-up short");
    assert!(h.offers().is_empty());
    h.to(105.0);
    assert_eq!(h.offers(), vec![(2, "1".into())]);
    h.serve(2, "1", 10.0); // ends at 115 s: 5 s wrap-up
    h.call(3, "long").unwrap();
    h.to(117.0);
    let a = h.a("1");
    h.acd.ready(h.now, a).unwrap(); // ends it early
    assert_eq!(h.offers(), vec![(3, "1".into())]);
    let wraps: Vec<_> = h.take_logs().into_iter().filter_map(|l| match l.kind {
        K::WrapupEnd { wrap_ms } => Some((l.queue, wrap_ms)),
        _ => None,
    }).collect();
    assert_eq!(wraps, vec![("long".to_string(), 45_000), ("short".to_string(), 2_000)]);
}

#[test]
fn consecutive_misses_make_the_agent_not_ready_missed() {
    let mut g = no_wrap(queue("t", "g", Strategy::Linear));
    g.max_misses = 3;
    let mut h = H::new(AcdSpec { queues: vec![g], agents: agents(2, &["g"]) });
    h.login("1");
    h.login("2");
    let a1 = h.a("1");
    for call in 1..=3u64 {
        h.call(call, "g").unwrap();
        assert_eq!(h.offers(), vec![(call, "1".to_string())], "linear: agent 1 first");
        if call == 2 {
            h.acd.missed(h.now, call, a1, MissReason::Busy);
        } else {
            let t = (h.now - h.t0).as_secs_f64() + 15.0;
            h.to(t);
        }
        assert_eq!(h.offers(), vec![(call, "2".to_string())], "the next agent");
        if call < 3 {
            assert_eq!(h.st("1"), AgentState::Ready, "{call} misses are not enough");
        }
        h.serve(call, "2", 1.0);
    }
    assert_eq!(h.st("1"), AgentState::NotReady("missed".into()));
    let logs = h.take_logs();
    assert!(logs.iter().any(|l| l.agent == "1" && l.kind == K::AgentState { state: "not_ready".into(), reason: "missed".into() }));
    assert_eq!(logs.iter().filter(|l| l.agent == "1" && l.kind.name() == "miss").count(), 3);
}

#[test]
fn relaxation_after_30_s_admits_a_level_3_agent() {
    let mut g = no_wrap(queue("t", "g", Strategy::LongestIdle));
    g.skills = vec![SkillReq { skill: "ko".into(), level: 8, relax: vec![(Duration::from_secs(30), 3), (Duration::from_secs(90), 1)] }];
    let agents = vec![
        agent("t", "expert", &[("ko", 9)], &[("g", 0)]),
        agent("t", "junior", &[("ko", 3)], &[("g", 0)]),
        agent("t", "trainee", &[("ko", 1)], &[("g", 0)]),
        agent("t", "nothing", &[("en", 9)], &[("g", 0)]),
    ];
    let mut h = H::new(AcdSpec { queues: vec![g], agents });
    for id in ["expert", "junior", "trainee", "nothing"] {
        h.login(id);
    }
    h.call(1, "g").unwrap();
    assert_eq!(h.offers(), vec![(1, "expert".into())]);
    h.answer(1, "expert");
    h.to(10.0);
    h.call(2, "g").unwrap();
    h.to(39.999);
    assert!(h.offers().is_empty(), "a level-3 agent does not qualify before 30 s");
    h.to(40.0);
    assert_eq!(h.offers(), vec![(2, "junior".into())]);
    h.answer(2, "junior");
    h.to(50.0);
    h.call(3, "g").unwrap();
    h.to(139.999);
    assert!(h.offers().is_empty());
    h.to(140.0);
    assert_eq!(h.offers(), vec![(3, "trainee".into())], "level 1 after 90 s; no skill at all never");
}

/// Three agents logged in in the order given (1 s apart), queue with this strategy and no wrap-up.
fn strategy_centre(strategy: Strategy, n: usize) -> H {
    let mut h = H::new(AcdSpec { queues: vec![no_wrap(queue("t", "g", strategy))], agents: agents(n, &["g"]) });
    for i in 1..=n {
        h.login(&i.to_string());
        h.to(i as f64);
    }
    h
}

#[test]
fn longest_idle_picks_the_agent_ready_longest() {
    let mut h = H::new(AcdSpec { queues: vec![no_wrap(queue("t", "g", Strategy::LongestIdle))], agents: agents(3, &["g"]) });
    for (i, id) in ["3", "1", "2"].iter().enumerate() {
        h.login(id);
        h.to(i as f64 + 1.0);
    }
    h.call(1, "g").unwrap();
    assert_eq!(serve_next(&mut h, "3", 10.0), 1); // 3 is ready again at 13 s: last
    h.call(2, "g").unwrap();
    assert_eq!(serve_next(&mut h, "1", 10.0), 2);
    h.call(3, "g").unwrap();
    assert_eq!(serve_next(&mut h, "2", 10.0), 3);
    h.call(4, "g").unwrap();
    assert_eq!(serve_next(&mut h, "3", 10.0), 4);
}

#[test]
fn round_robin_remembers_the_last_agent() {
    let mut h = strategy_centre(Strategy::RoundRobin, 3);
    let mut got = vec![];
    for call in 1..=7u64 {
        h.call(call, "g").unwrap();
        let o = h.offers();
        got.push(o[0].1.clone());
        h.serve(call, &o[0].1, 5.0); // all three are Ready again each time
    }
    assert_eq!(got, ["1", "2", "3", "1", "2", "3", "1"]);
    // a busy agent is skipped, and the memory continues after the one who got it
    h.call(10, "g").unwrap(); // → 2
    h.call(11, "g").unwrap(); // → 3
    h.call(12, "g").unwrap(); // → 1
    assert_eq!(h.offers().into_iter().map(|o| o.1).collect::<Vec<_>>(), ["2", "3", "1"]);
}

#[test]
fn fewest_calls_and_least_talk() {
    // fewest calls: agent 1 serves 2 calls, agent 2 one long call; 3 none but logged in last
    let mut h = strategy_centre(Strategy::FewestCalls, 3);
    let a3 = h.a("3");
    h.acd.not_ready(h.now, a3, "break").unwrap();
    for (call, id, talk) in [(1u64, "1", 10.0), (2, "2", 100.0), (3, "1", 10.0)] {
        h.call(call, "g").unwrap();
        let o = h.offers();
        assert_eq!(o[0].1, id, "call {call}");
        h.serve(call, id, talk);
    }
    h.acd.ready(h.now, a3).unwrap();
    h.call(4, "g").unwrap();
    assert_eq!(h.offers()[0].1, "3", "no call yet");
    h.call(5, "g").unwrap();
    assert_eq!(h.offers()[0].1, "2", "one call");

    // least talk: same history, but the agent with the least talk time wins: agent 1 (20 s in 2 calls)
    let mut h = strategy_centre(Strategy::LeastTalk, 2);
    for (call, id, talk) in [(1u64, "1", 10.0), (2, "2", 100.0), (3, "1", 10.0)] {
        h.call(call, "g").unwrap();
        assert_eq!(h.offers()[0].1, id, "call {call}");
        h.serve(call, id, talk);
    }
    h.call(4, "g").unwrap();
    assert_eq!(h.offers()[0].1, "1");
}

#[test]
fn ring_all_rings_everyone_qualified_and_stops_the_rest_on_answer() {
    let mut g = no_wrap(queue("t", "g", Strategy::RingAll));
    g.skills = vec![SkillReq { skill: "ko".into(), level: 5, relax: vec![] }];
    let mut ags = agents(4, &["g"]);
    for a in ags.iter_mut().take(3) {
        a.skills = vec![("ko".into(), 7)];
    }
    let mut h = H::new(AcdSpec { queues: vec![g], agents: ags });
    for id in ["1", "2", "3", "4"] {
        h.login(id);
    }
    h.call(1, "g").unwrap();
    let mut rung: Vec<String> = h.offers().into_iter().map(|o| o.1).collect();
    rung.sort();
    assert_eq!(rung, ["1", "2", "3"], "agent 4 lacks the skill");
    h.answer(1, "2");
    let acts = h.take();
    let mut stopped: Vec<String> = acts.iter().filter_map(|a| match a {
        Action::StopOffer { call: 1, agent } => Some(h.id(*agent)),
        _ => None,
    }).collect();
    stopped.sort();
    assert_eq!(stopped, ["1", "3"]);
    assert_eq!(h.st("1"), AgentState::Ready);
    assert_eq!(h.st("2"), AgentState::Talking(1));
    let logs = h.take_logs();
    assert_eq!(logs.iter().filter(|l| l.kind.name() == "offer").count(), 3);
    assert_eq!(logs.iter().filter(|l| l.kind.name() == "connect").map(|l| l.agent.clone()).collect::<Vec<_>>(), ["2"]);
    // nobody answers: all time out together, and all ring again
    h.call(2, "g").unwrap();
    assert_eq!(h.offers().len(), 2);
    let t = (h.now - h.t0).as_secs_f64() + 15.0;
    h.to(t);
    let acts = h.take();
    assert_eq!(acts.iter().filter(|a| matches!(a, Action::StopOffer { call: 2, .. })).count(), 2);
    assert_eq!(acts.iter().filter(|a| matches!(a, Action::Offer { call: 2, .. })).count(), 2);
}

#[test]
fn linear_follows_spec_order_and_penalty() {
    let mut h = H::new(AcdSpec {
        queues: vec![no_wrap(queue("t", "g", Strategy::Linear))],
        agents: vec![
            agent("t", "p1", &[], &[("g", 1)]),
            agent("t", "a", &[], &[("g", 0)]),
            agent("t", "b", &[], &[("g", 0)]),
        ],
    });
    for id in ["b", "p1", "a"] {
        h.login(id);
        let t = (h.now - h.t0).as_secs_f64() + 1.0;
        h.to(t);
    }
    h.call(1, "g").unwrap();
    h.call(2, "g").unwrap();
    h.call(3, "g").unwrap();
    let got: Vec<String> = h.offers().into_iter().map(|o| o.1).collect();
    assert_eq!(got, ["a", "b", "p1"], "spec order within penalty 0, penalty 1 last");
    h.serve(1, "a", 1.0);
    h.call(4, "g").unwrap();
    assert_eq!(h.offers()[0].1, "a", "linear always starts from the top");
}

fn random_picks(seed: u64) -> Vec<String> {
    let mut h = H::seeded(AcdSpec { queues: vec![no_wrap(queue("t", "g", Strategy::Random))], agents: agents(5, &["g"]) }, seed);
    for i in 1..=5 {
        h.login(&i.to_string());
    }
    let mut got = vec![];
    for call in 1..=40u64 {
        h.call(call, "g").unwrap();
        let o = h.offers();
        got.push(o[0].1.clone());
        h.serve(call, &o[0].1, 1.0);
    }
    got
}

#[test]
fn random_is_reproducible_by_seed_and_spreads() {
    let a = random_picks(42);
    assert_eq!(a, random_picks(42));
    assert_ne!(a, random_picks(43));
    for id in ["1", "2", "3", "4", "5"] {
        let n = a.iter().filter(|x| *x == id).count();
        assert!((2..=20).contains(&n), "agent {id} picked {n} times out of 40: {a:?}");
    }
}

#[test]
fn tenants_never_mix() {
    let spec = AcdSpec {
        queues: vec![queue("seoul", "general", Strategy::LongestIdle), queue("goyang", "general", Strategy::LongestIdle)],
        agents: vec![agent("seoul", "1001", &[], &[("general", 0)]), agent("goyang", "1001", &[], &[("general", 0)])],
    };
    let mut h = H::new(spec);
    let seoul = h.acd.agent_in("seoul", "1001").unwrap();
    let goyang = h.acd.agent_in("goyang", "1001").unwrap();
    assert_ne!(seoul, goyang);
    assert_eq!(h.acd.agent_by_extension(Some("goyang"), "1001"), Some(goyang));
    h.acd.login(h.now, seoul, "register").unwrap();
    h.acd.login(h.now, goyang, "cti").unwrap();
    h.call_full(1, "goyang", "general", 0, None).unwrap();
    assert!(h.offers().is_empty(), "Seoul's ready agent never gets Goyang's caller");
    assert_eq!(h.acd.waiting("goyang", "general"), 1);
    assert_eq!(h.acd.waiting("seoul", "general"), 0);
    h.call_full(2, "seoul", "general", 0, None).unwrap();
    let offers = h.take();
    assert!(offers.iter().any(|a| matches!(a, Action::Offer { call: 2, agent, .. } if *agent == seoul)));
    h.acd.ready(h.now, goyang).unwrap();
    assert!(h.take().iter().any(|a| matches!(a, Action::Offer { call: 1, agent, .. } if *agent == goyang)));
    assert_eq!(h.call_full(3, "busan", "general", 0, None), Err(Refusal::UnknownQueue));
    for l in h.take_logs() {
        if l.call == "cg1" {
            assert_eq!(l.tenant, "goyang");
        }
        if l.call == "cg2" {
            assert_eq!(l.tenant, "seoul");
        }
    }
}
