//! Races between the caller, the agent's phone and the timers: each one its own test. Whatever the
//! order, no agent is left Reserved/Talking for a call that is gone, no caller is lost, and the queue
//! log tells what happened.

#[path = "acd_harness.rs"]
mod harness;

use callgate::acd::log::QueueEventKind as K;
use callgate::acd::*;
use harness::*;

fn two_agents() -> H {
    let mut h = H::new(AcdSpec { queues: vec![queue("t", "g", Strategy::LongestIdle)], agents: agents(2, &["g"]) });
    h.login("1");
    h.to(1.0);
    h.login("2");
    h
}

#[test]
fn agent_logs_out_while_ringing() {
    let mut h = two_agents();
    h.call(1, "g").unwrap();
    assert_eq!(h.offers(), vec![(1, "1".into())]);
    h.to(3.0);
    let a1 = h.a("1");
    h.acd.logout(h.now, a1, "cti").unwrap();
    let acts = h.take();
    assert!(acts.contains(&Action::StopOffer { call: 1, agent: a1 }), "the core must CANCEL the INVITE");
    assert!(acts.iter().any(|a| matches!(a, Action::Offer { call: 1, agent, .. } if *agent == h.a("2"))));
    assert_eq!(h.st("1"), AgentState::LoggedOut);
    assert_eq!(h.st("2"), AgentState::Reserved(1));
    let logs = h.take_logs();
    assert!(logs.iter().any(|l| l.agent == "1" && l.kind == K::Miss { reason: MissReason::Withdrawn, ring_ms: 2_000 }));
    // the late 200 OK from the logged-out agent's phone is refused
    assert!(matches!(h.acd.answered(h.now, 1, a1), Err(AcdError::NotOffered { .. })));
    h.answer(1, "2");
    // withdrawals do not count as misses
    assert_eq!(h.acd.agent_misses(a1), Some(0));
}

#[test]
fn caller_hangs_up_while_ringing() {
    let mut h = two_agents();
    h.call(1, "g").unwrap();
    h.take();
    h.to(4.0);
    h.acd.abandon(h.now, 1);
    let a1 = h.a("1");
    assert_eq!(h.take().iter().filter(|a| **a == Action::StopOffer { call: 1, agent: a1 }).count(), 1);
    assert_eq!(h.st("1"), AgentState::Ready);
    assert_eq!(h.acd.waiting("t", "g"), 0);
    // the phone answers just after the CANCEL crossed it: error, the core sends BYE
    assert!(h.acd.answered(h.now, 1, a1).is_err());
    // the ring timer of the dead offer does nothing
    h.to(30.0);
    assert!(h.take().is_empty());
    let logs = h.take_logs();
    assert_eq!(logs.iter().filter(|l| l.kind.name() == "abandon").count(), 1);
    assert!(logs.iter().any(|l| l.kind == K::Abandon { wait_ms: 3_000, position: 1 }));
    assert!(!logs.iter().any(|l| l.kind.name() == "miss"), "the agent did not miss anything");
    // the agent kept its turn: it is still the longest idle
    h.call(2, "g").unwrap();
    assert_eq!(h.offers(), vec![(2, "1".into())]);
}

#[test]
fn two_queues_offer_the_same_agent_at_once() {
    let mut h = H::new(AcdSpec {
        queues: vec![queue("t", "a", Strategy::LongestIdle), queue("t", "b", Strategy::RingAll)],
        agents: vec![agent("t", "1", &[], &[("a", 0), ("b", 0)])],
    });
    h.call(1, "a").unwrap();
    h.call(2, "b").unwrap();
    h.login("1");
    h.call(3, "b").unwrap();
    h.call(4, "a").unwrap();
    let offers = h.offers();
    assert_eq!(offers, vec![(1, "1".into())], "an agent is offered one call only");
    assert_eq!(h.st("1"), AgentState::Reserved(1));
    // busy: no other agent, so the oldest caller comes back to it, still one offer at a time
    let a = h.a("1");
    h.acd.missed(h.now, 1, a, MissReason::Busy);
    assert_eq!(h.offers(), vec![(1, "1".into())]);
    h.answer(1, "1");
    assert_eq!(h.offers(), vec![]);
    assert_eq!(h.acd.waiting("t", "a") + h.acd.waiting("t", "b"), 3);
}

#[test]
fn agent_answers_after_the_ring_timeout() {
    let mut h = two_agents();
    h.call(1, "g").unwrap();
    h.take();
    h.to(15.999);
    assert!(h.take().is_empty());
    h.to(16.0); // ring timeout: offered at 1 s, 15 s ring
    let acts = h.take();
    let (a1, a2) = (h.a("1"), h.a("2"));
    assert!(acts.contains(&Action::StopOffer { call: 1, agent: a1 }));
    assert_eq!(h.st("2"), AgentState::Reserved(1));
    // the 200 OK from agent 1 crosses the CANCEL
    let err = h.acd.answered(h.now, 1, a1).unwrap_err();
    assert!(matches!(err, AcdError::NotOffered { call: 1, ref agent } if agent == "1"), "{err}");
    assert_eq!(h.st("1"), AgentState::Ready, "the late answer changes nothing");
    h.acd.answered(h.now, 1, a2).unwrap();
    assert_eq!(h.st("2"), AgentState::Talking(1));
    let logs = h.take_logs();
    assert_eq!(logs.iter().filter(|l| l.kind.name() == "connect").map(|l| l.agent.as_str()).collect::<Vec<_>>(), vec!["2"]);
}

#[test]
fn phone_unregisters_mid_call() {
    let mut h = two_agents();
    h.call(1, "g").unwrap();
    h.answer(1, "1");
    h.take();
    h.to(30.0);
    let a1 = h.a("1");
    h.acd.logout(h.now, a1, "unregister").unwrap();
    assert_eq!(h.st("1"), AgentState::Talking(1), "the call goes on");
    h.call(2, "g").unwrap();
    assert_eq!(h.offers(), vec![(2, "2".into())], "a logging-out agent gets nothing new");
    h.to(90.0);
    h.acd.ended(h.now, 1, "caller");
    assert_eq!(h.st("1"), AgentState::LoggedOut, "logged out when the call ended, no wrap-up");
    let logs = h.take_logs();
    assert!(logs.iter().any(|l| l.agent == "1" && matches!(&l.kind, K::Complete { talk_ms: 89_000, .. })));
    assert!(logs.iter().any(|l| l.agent == "1" && l.kind == K::AgentState { state: "logged_out".into(), reason: "unregister".into() }));
    assert!(!logs.iter().any(|l| l.agent == "1" && l.kind.name() == "wrapup_end"));

    // while Reserved: Miss(Withdrawn), and the caller goes to the next agent
    h.to(100.0);
    h.login("1");
    h.acd.ended(h.now, 2, "caller");
    let a2 = h.a("2");
    h.acd.ready(h.now, a2).unwrap(); // end wrap-up
    h.take();
    h.call(3, "g").unwrap();
    assert_eq!(h.offers(), vec![(3, "1".into())]);
    h.acd.logout(h.now, a1, "unregister").unwrap();
    let acts = h.take();
    assert!(acts.contains(&Action::StopOffer { call: 3, agent: a1 }));
    assert!(acts.iter().any(|a| matches!(a, Action::Offer { call: 3, agent, .. } if *agent == a2)));
    assert!(h.take_logs().iter().any(|l| l.agent == "1" && matches!(l.kind, K::Miss { reason: MissReason::Withdrawn, .. })));
}

#[test]
fn callback_due_while_no_agent_is_ready() {
    let mut h = H::new(AcdSpec { queues: vec![queue("t", "g", Strategy::LongestIdle)], agents: agents(1, &["g"]) });
    let a = h.a("1");
    h.acd.login(h.now, a, "cti").unwrap(); // logged in, not ready
    let due = WALL0 + 60_000;
    let cb = h.acd.schedule_callback(h.now, "t", "g", "01055556666", due, info(900, 0, None)).unwrap();
    h.to(30.0);
    h.call(1, "g").unwrap();
    h.to(60.0);
    assert!(h.take().iter().all(|a| !matches!(a, Action::CallbackDue { .. })), "nobody ready: it waits");
    assert_eq!(h.acd.waiting("t", "g"), 2);
    h.to(90.0);
    h.call(2, "g").unwrap();
    h.to(120.0);
    h.acd.ready(h.now, a).unwrap();
    // caller 1 entered at 30 s, before the callback's due time (60 s): it goes first
    assert_eq!(h.offers(), vec![(1, "1".into())]);
    h.serve(1, "1", 60.0);
    h.acd.ready(h.now, a).unwrap();
    // then the callback, which kept its place ahead of caller 2 (entered at 90 s)
    let acts = h.take();
    assert!(acts.contains(&Action::CallbackDue { callback: cb, agent: a, number: "01055556666".into(), tenant: "t".into(), queue: "g".into() }), "{acts:?}");
    assert_eq!(h.acd.position(2), Some(2));
    h.acd.callback_result(h.now, cb, Some(1000));
    assert_eq!(h.st("1"), AgentState::Talking(1000));
}
