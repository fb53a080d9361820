//! Unit tests, one rule each, in virtual time (Instants built from a base plus durations).

use super::log::{QueueEvent, QueueEventKind as K};
use super::*;

pub(super) struct H {
    pub acd: Acd,
    pub t0: Instant,
    pub now: Instant,
    pub actions: Vec<Action>,
    pub logs: Vec<QueueEvent>,
}

pub(super) const WALL0: i64 = 1_700_000_000_000;

impl H {
    pub fn new(spec: AcdSpec) -> H {
        let t0 = Instant::now();
        H { acd: Acd::new(spec, 7, t0, WALL0).expect("valid spec"), t0, now: t0, actions: vec![], logs: vec![] }
    }
    pub fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }
    /// Run the ACD's timers up to `secs` (in order), then stay there.
    pub fn to(&mut self, secs: f64) {
        let end = self.at(secs);
        while let Some(due) = self.acd.poll_timeout() {
            if due > end {
                break;
            }
            self.now = due.max(self.now);
            self.acd.handle_timeout(self.now);
        }
        self.now = end;
        self.drain();
    }
    pub fn drain(&mut self) {
        while let Some(a) = self.acd.poll_action() {
            self.actions.push(a);
        }
        while let Some(l) = self.acd.poll_log() {
            self.logs.push(l);
        }
    }
    pub fn take(&mut self) -> Vec<Action> {
        self.drain();
        std::mem::take(&mut self.actions)
    }
    pub fn take_logs(&mut self) -> Vec<QueueEvent> {
        self.drain();
        std::mem::take(&mut self.logs)
    }
    pub fn a(&self, id: &str) -> AgentRef {
        self.acd.agent(id).expect("agent")
    }
    pub fn st(&self, id: &str) -> AgentState {
        self.acd.agent_state(self.a(id)).clone()
    }
    pub fn login(&mut self, id: &str) {
        let a = self.a(id);
        self.acd.login(self.now, a, "register").unwrap();
    }
    pub fn call(&mut self, call: CallRef, queue: &str) -> Result<u32, Refusal> {
        self.call_in(call, "t", queue, 0, None)
    }
    pub fn call_in(&mut self, call: CallRef, tenant: &str, queue: &str, prio: u8, skill: Option<&str>) -> Result<u32, Refusal> {
        let info = CallInfo {
            cg_id: format!("cg{call}"),
            caller: format!("0101234{call:04}"),
            number: "120".into(),
            priority: prio,
            skill: skill.map(str::to_string),
            language: None,
        };
        self.acd.enqueue(self.now, call, tenant, queue, info)
    }
    /// Offers in the actions taken so far (and drops the other actions).
    pub fn offers(&mut self) -> Vec<(CallRef, String)> {
        let acts = self.take();
        acts.into_iter()
            .filter_map(|a| match a {
                Action::Offer { call, agent, .. } => Some((call, self.acd.agent_spec(agent).id.clone())),
                _ => None,
            })
            .collect()
    }
    pub fn answer(&mut self, call: CallRef, id: &str) {
        let a = self.a(id);
        self.acd.answered(self.now, call, a).expect("answer a live offer");
    }
}

pub(super) fn q(name: &str) -> QueueSpec {
    let mut q = QueueSpec::new("t", name);
    q.announce_every = None;
    q
}

pub(super) fn ag(id: &str, skills: &[(&str, u8)], queues: &[(&str, u32)]) -> AgentSpec {
    AgentSpec {
        tenant: "t".into(),
        id: id.into(),
        extension: id.into(),
        name: format!("Agent {id}"),
        skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
        queues: queues.iter().map(|(s, p)| (s.to_string(), *p)).collect(),
    }
}

fn spec(queues: Vec<QueueSpec>, agents: Vec<AgentSpec>) -> AcdSpec {
    AcdSpec { queues, agents }
}

fn kinds(logs: &[QueueEvent]) -> Vec<&'static str> {
    logs.iter().map(|l| l.kind.name()).collect()
}

#[test]
fn spec_errors_name_the_problem() {
    let t0 = Instant::now();
    let dup = spec(vec![q("a"), q("a")], vec![]);
    assert!(matches!(Acd::new(dup, 1, t0, 0), Err(AcdError::BadSpec(m)) if m.contains("twice")));
    let unknown = spec(vec![q("a")], vec![ag("1", &[], &[("b", 0)])]);
    assert!(matches!(Acd::new(unknown, 1, t0, 0), Err(AcdError::BadSpec(m)) if m.contains("\"b\"")));
    let mut over = q("a");
    over.on_max_wait = OnMaxWait::Overflow("nowhere".into());
    assert!(Acd::new(spec(vec![over], vec![]), 1, t0, 0).is_err());
    // an agent of another tenant cannot serve this tenant's queue
    let mut other = ag("1", &[], &[("a", 0)]);
    other.tenant = "u".into();
    assert!(Acd::new(spec(vec![q("a")], vec![other]), 1, t0, 0).is_err());
}

#[test]
fn login_register_is_ready_other_login_is_not_ready_and_states_are_logged() {
    let mut h = H::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)]), ag("2", &[], &[("g", 0)])]));
    h.login("1");
    let a2 = h.a("2");
    h.acd.login(h.now, a2, "cti").unwrap();
    assert_eq!(h.st("1"), AgentState::Ready);
    assert_eq!(h.st("2"), AgentState::NotReady("login".into()));
    assert!(matches!(h.acd.login(h.now, a2, "cti"), Err(AcdError::WrongState { wanted: "logged_out", .. })));
    h.acd.logout(h.now, a2, "cti").unwrap();
    assert!(matches!(h.acd.logout(h.now, a2, "cti"), Err(AcdError::WrongState { .. })));
    assert!(matches!(h.acd.ready(h.now, a2), Err(AcdError::WrongState { .. })));
    let logs = h.take_logs();
    let rows: Vec<(String, String, String)> = logs
        .iter()
        .map(|l| match &l.kind {
            K::AgentState { state, reason } => (l.agent.clone(), state.clone(), reason.clone()),
            k => panic!("unexpected {k:?}"),
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("1".into(), "ready".into(), "register".into()),
            ("2".into(), "not_ready".into(), "login".into()),
            ("2".into(), "logged_out".into(), "cti".into()),
        ]
    );
    assert!(logs.iter().all(|l| l.queue.is_empty() && l.call.is_empty() && l.tenant == "t"));
}

#[test]
fn wall_clock_is_construction_wall_plus_elapsed() {
    let mut h = H::new(spec(vec![q("g")], vec![]));
    h.to(12.345);
    h.call(1, "g").unwrap();
    let logs = h.take_logs();
    assert_eq!(logs[0].at_ms, WALL0 + 12_345);
}

#[test]
fn caller_with_a_ready_agent_is_offered_at_once() {
    let mut h = H::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)])]));
    h.login("1");
    h.take_logs();
    h.to(3.0);
    assert_eq!(h.call(10, "g"), Ok(1));
    assert_eq!(h.st("1"), AgentState::Reserved(10));
    let acts = h.take();
    assert!(acts.contains(&Action::Offer { call: 10, agent: h.a("1"), queue: "g".into(), wait: Duration::ZERO }));
    let logs = h.take_logs();
    assert_eq!(kinds(&logs), vec!["enter", "agent_state", "offer"]);
    assert_eq!(logs[0].call, "cg10");
    assert_eq!(logs[2].agent, "1");
}

#[test]
fn higher_priority_goes_ahead_in_line() {
    let mut h = H::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)])]));
    assert_eq!(h.call_in(1, "t", "g", 0, None), Ok(1));
    assert_eq!(h.call_in(2, "t", "g", 0, None), Ok(2));
    assert_eq!(h.call_in(3, "t", "g", 5, None), Ok(1));
    assert_eq!(h.acd.position(1), Some(2));
    h.login("1");
    assert_eq!(h.offers(), vec![(3, "1".to_string())]);
}

#[test]
fn maximum_length_refuses_and_logs() {
    let mut g = q("g");
    g.max_len = Some(2);
    let mut h = H::new(spec(vec![g], vec![]));
    h.call(1, "g").unwrap();
    h.call(2, "g").unwrap();
    assert_eq!(h.call(3, "g"), Err(Refusal::Full));
    assert_eq!(h.acd.waiting("t", "g"), 2);
    let logs = h.take_logs();
    assert!(matches!(&logs[2].kind, K::Refused { reason, .. } if reason == "full"));
    assert_eq!(h.call_in(4, "t", "nope", 0, None), Err(Refusal::UnknownQueue));
    assert_eq!(h.acd.queue_spec("t", "g").map(|q| q.sl_threshold), Some(Duration::from_secs(20)));
    assert!(h.acd.queue_spec("u", "g").is_none());
}

#[test]
fn join_empty_policy() {
    let mut closed = q("closed");
    closed.join_empty = false;
    let mut h = H::new(spec(vec![closed, q("open")], vec![ag("1", &[], &[("closed", 0)])]));
    assert_eq!(h.call(1, "closed"), Err(Refusal::Empty));
    assert_eq!(h.call(2, "open"), Ok(1));
    let a = h.a("1");
    h.acd.login(h.now, a, "cti").unwrap(); // logged in, not ready: joining is allowed
    assert_eq!(h.call(3, "closed"), Ok(1));
    let logs = h.take_logs();
    assert!(matches!(&logs[0].kind, K::Refused { reason, .. } if reason == "empty"));
}

#[test]
fn leave_empty_evicts_callers_but_keeps_callbacks() {
    let mut g = q("g");
    g.leave_empty = true;
    let mut h = H::new(spec(vec![g], vec![ag("1", &[], &[("g", 0)]), ag("2", &[], &[("g", 0)])]));
    for id in ["1", "2"] {
        let a = h.a(id);
        h.acd.login(h.now, a, "cti").unwrap();
    }
    h.call(1, "g").unwrap();
    h.call(2, "g").unwrap();
    let cb = h.acd.request_callback(h.now, 2, "01012345678").unwrap();
    let (a1, a2) = (h.a("1"), h.a("2"));
    h.acd.logout(h.now, a1, "cti").unwrap();
    assert!(!h.take().iter().any(|a| matches!(a, Action::Evicted { .. })), "one agent is still logged in");
    h.acd.logout(h.now, a2, "unregister").unwrap();
    let acts = h.take();
    assert!(acts.contains(&Action::Evicted { call: 1 }));
    assert!(!acts.contains(&Action::Evicted { call: 2 }));
    assert_eq!(h.acd.position(1), None);
    assert_eq!(h.acd.pending_callbacks().iter().map(|c| c.id).collect::<Vec<_>>(), vec![cb]);
    let logs = h.take_logs();
    assert!(logs.iter().any(|l| l.call == "cg1" && matches!(&l.kind, K::Refused { reason, .. } if reason == "empty")));
}

#[test]
fn max_wait_overflow_moves_the_caller_and_keeps_its_place() {
    let mut a = q("a");
    a.max_wait = Some(Duration::from_secs(60));
    a.on_max_wait = OnMaxWait::Overflow("b".into());
    let mut h = H::new(spec(vec![a, q("b")], vec![ag("1", &[], &[("b", 0)])]));
    h.call(1, "a").unwrap();
    h.to(10.0);
    h.call(2, "b").unwrap(); // joins b directly, later than caller 1 entered a
    h.to(60.0);
    assert_eq!(h.acd.waiting("t", "a"), 0);
    assert_eq!(h.acd.waiting("t", "b"), 2);
    assert_eq!(h.acd.position(1), Some(1), "the overflowed caller keeps its original place");
    let logs = h.take_logs();
    let ov = logs.iter().find(|l| l.kind.name() == "overflow").expect("overflow row");
    assert_eq!((ov.queue.as_str(), &ov.kind), ("a", &K::Overflow { to: "b".into(), wait_ms: 60_000 }));
    assert!(logs.iter().any(|l| l.queue == "b" && l.call == "cg1" && l.kind.name() == "enter"));
    h.login("1");
    assert_eq!(h.offers(), vec![(1, "1".to_string())]);
}

#[test]
fn max_wait_message_hangup_and_callback() {
    let mut qs = vec![];
    for (name, then) in [
        ("m", OnMaxWait::Message(vec!["sorry".into()])),
        ("h", OnMaxWait::Hangup),
        ("c", OnMaxWait::Callback),
    ] {
        let mut x = q(name);
        x.max_wait = Some(Duration::from_secs(30));
        x.on_max_wait = then;
        qs.push(x);
    }
    let mut h = H::new(spec(qs, vec![]));
    h.call(1, "m").unwrap();
    h.call(2, "h").unwrap();
    h.to(5.0);
    h.call(3, "c").unwrap();
    h.to(30.0);
    let acts = h.take();
    assert_eq!(
        acts,
        vec![
            Action::MaxWait { call: 1, then: OnMaxWait::Message(vec!["sorry".into()]) },
            Action::MaxWait { call: 2, then: OnMaxWait::Hangup },
        ]
    );
    h.to(35.0);
    assert_eq!(h.take(), vec![Action::MaxWait { call: 3, then: OnMaxWait::Callback }]);
    assert_eq!(h.acd.position(1), None);
    assert_eq!(h.acd.position(3), Some(1), "offered a callback, the caller still waits until it answers");
    let timeouts: Vec<_> = h.take_logs().into_iter().filter(|l| l.kind.name() == "timeout").collect();
    assert_eq!(timeouts.len(), 3);
    assert_eq!(timeouts[2].kind, K::Timeout { wait_ms: 30_000 });
}

#[test]
fn max_wait_during_ringing_applies_when_the_offer_fails() {
    let mut g = q("g");
    g.max_wait = Some(Duration::from_secs(20));
    g.on_max_wait = OnMaxWait::Hangup;
    let mut h = H::new(spec(vec![g], vec![ag("1", &[], &[("g", 0)])]));
    h.call(1, "g").unwrap();
    h.to(10.0);
    h.login("1");
    h.take();
    h.to(20.0);
    assert!(h.take().is_empty(), "the ringing agent is not interrupted");
    h.to(25.0); // ring timeout at 10 + 15
    let acts = h.take();
    assert!(acts.contains(&Action::StopOffer { call: 1, agent: h.a("1") }));
    assert!(acts.contains(&Action::MaxWait { call: 1, then: OnMaxWait::Hangup }));
    assert!(!acts.iter().any(|a| matches!(a, Action::Offer { .. })));
}

#[test]
fn ring_timeout_goes_to_the_next_agent() {
    let mut h = H::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)]), ag("2", &[], &[("g", 0)])]));
    h.login("1");
    h.to(1.0);
    h.login("2");
    h.call(1, "g").unwrap();
    assert_eq!(h.offers(), vec![(1, "1".into())]);
    h.take_logs();
    h.to(15.999);
    assert!(h.take().is_empty());
    h.to(16.0);
    let acts = h.take();
    assert!(acts.contains(&Action::StopOffer { call: 1, agent: h.a("1") }));
    assert!(acts.iter().any(|a| matches!(a, Action::Offer { call: 1, agent, .. } if *agent == h.a("2"))));
    assert_eq!(h.st("1"), AgentState::Ready);
    let logs = h.take_logs();
    assert!(logs.iter().any(|l| l.agent == "1" && l.kind == K::Miss { reason: MissReason::NoAnswer, ring_ms: 15_000 }));
}

#[test]
fn consecutive_misses_make_the_agent_not_ready_missed_and_an_answer_resets_the_count() {
    let mut h = H::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)])]));
    h.login("1");
    let a = h.a("1");
    h.call(1, "g").unwrap();
    h.acd.missed(h.now, 1, a, MissReason::Busy);
    assert_eq!(h.st("1"), AgentState::Reserved(1), "one miss: the only agent gets the caller again");
    h.answer(1, "1");
    h.acd.ended(h.now, 1, "caller");
    h.acd.ready(h.now, a).unwrap();
    h.call(2, "g").unwrap();
    h.acd.missed(h.now, 2, a, MissReason::Declined);
    assert_eq!(h.st("1"), AgentState::Reserved(2), "the answer in between reset the count");
    h.to(15.0);
    assert_eq!(h.st("1"), AgentState::NotReady("missed".into()));
    assert_eq!(h.acd.position(2), Some(1));
}

#[test]
fn wrapup_lasts_the_queue_time_or_until_ready() {
    let mut g = q("g");
    g.wrapup = Duration::from_secs(30);
    let mut h = H::new(spec(vec![g], vec![ag("1", &[], &[("g", 0)]), ag("2", &[], &[("g", 0)])]));
    h.login("1");
    h.login("2");
    h.call(1, "g").unwrap();
    h.answer(1, "1");
    h.to(100.0);
    h.acd.ended(h.now, 1, "agent");
    assert_eq!(h.st("1"), AgentState::Wrapup);
    h.to(129.999);
    assert_eq!(h.st("1"), AgentState::Wrapup);
    h.to(130.0);
    assert_eq!(h.st("1"), AgentState::Ready);
    h.call(2, "g").unwrap();
    h.answer(2, "2");
    h.to(140.0);
    h.acd.ended(h.now, 2, "caller");
    h.to(145.0);
    let a2 = h.a("2");
    h.acd.ready(h.now, a2).unwrap();
    assert_eq!(h.st("2"), AgentState::Ready);
    let ends: Vec<_> = h.take_logs().into_iter().filter(|l| l.kind.name() == "wrapup_end").collect();
    assert_eq!(ends.iter().map(|l| (&l.agent[..], &l.kind)).collect::<Vec<_>>(), vec![
        ("1", &K::WrapupEnd { wrap_ms: 30_000 }),
        ("2", &K::WrapupEnd { wrap_ms: 5_000 }),
    ]);
    h.to(200.0);
    assert_eq!(h.st("2"), AgentState::Ready, "the old wrap-up timer does nothing");
}

#[test]
fn not_ready_during_a_call_applies_after_wrapup_and_logout_after_the_call() {
    let mut h = H::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)]), ag("2", &[], &[("g", 0)])]));
    h.login("1");
    h.login("2");
    let (a1, a2) = (h.a("1"), h.a("2"));
    h.call(1, "g").unwrap();
    h.call(2, "g").unwrap();
    h.answer(1, "1");
    h.answer(2, "2");
    h.acd.not_ready(h.now, a1, "lunch").unwrap();
    h.acd.logout(h.now, a2, "unregister").unwrap();
    assert_eq!(h.st("1"), AgentState::Talking(1));
    assert_eq!(h.st("2"), AgentState::Talking(2));
    h.to(60.0);
    h.acd.ended(h.now, 1, "caller");
    h.acd.ended(h.now, 2, "caller");
    assert_eq!(h.st("1"), AgentState::Wrapup);
    assert_eq!(h.st("2"), AgentState::LoggedOut);
    h.to(70.0);
    assert_eq!(h.st("1"), AgentState::NotReady("lunch".into()));
    // ready() during a call cancels a pending not-ready
    h.acd.ready(h.now, a1).unwrap();
    h.call(3, "g").unwrap();
    h.answer(3, "1");
    h.acd.not_ready(h.now, a1, "break").unwrap();
    h.acd.ready(h.now, a1).unwrap();
    h.acd.ended(h.now, 3, "agent");
    h.to(80.0);
    assert_eq!(h.st("1"), AgentState::Ready);
}

#[test]
fn hold_and_transfer_are_recorded() {
    let mut h = H::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)])]));
    h.login("1");
    h.call(1, "g").unwrap();
    h.answer(1, "1");
    h.to(10.0);
    h.acd.hold(h.now, 1, true);
    assert_eq!(h.st("1"), AgentState::Held(1));
    h.to(25.0);
    h.acd.hold(h.now, 1, false);
    assert_eq!(h.st("1"), AgentState::Talking(1));
    h.to(40.0);
    h.acd.ended(h.now, 1, "agent");
    h.to(50.0);
    h.call(2, "g").unwrap();
    h.answer(2, "1");
    h.to(70.0);
    h.acd.transferred(h.now, 2, "passports");
    assert_eq!(h.st("1"), AgentState::Wrapup);
    let logs = h.take_logs();
    let ends: Vec<_> = logs.iter().filter(|l| matches!(l.kind, K::Complete { .. } | K::Transfer { .. })).map(|l| &l.kind).collect();
    assert_eq!(ends, vec![
        &K::Complete { talk_ms: 40_000, hold_ms: 15_000, by: "agent".into() },
        &K::Transfer { to: "passports".into(), talk_ms: 20_000 },
    ]);
}

#[test]
fn relaxation_admits_a_lower_level_after_the_wait() {
    let mut g = q("g");
    g.skills = vec![SkillReq { skill: "ko".into(), level: 8, relax: vec![(Duration::from_secs(30), 3)] }];
    let mut h = H::new(spec(vec![g], vec![ag("low", &[("ko", 3)], &[("g", 0)]), ag("none", &[], &[("g", 0)])]));
    h.login("low");
    h.login("none");
    h.call(1, "g").unwrap();
    h.to(29.999);
    assert_eq!(h.offers(), vec![]);
    h.to(30.0);
    assert_eq!(h.offers(), vec![(1, "low".into())], "at 30 s a level-3 agent qualifies, level 0 still does not");
}

#[test]
fn menu_skill_is_required_at_level_one_unless_the_queue_names_it() {
    let mut g = q("g");
    g.skills = vec![SkillReq { skill: "zh".into(), level: 5, relax: vec![] }];
    let agents = vec![ag("ko", &[("ko", 10)], &[("g", 0)]), ag("en", &[("en", 1)], &[("g", 0)]), ag("zh2", &[("zh", 2)], &[("g", 0)])];
    let mut h = H::new(spec(vec![g, q("plain")], agents.clone()));
    for id in ["ko", "en", "zh2"] {
        h.login(id);
    }
    // queue g requires zh 5: nobody qualifies for an "en" caller (en 1 + zh 5)
    h.call_in(1, "t", "g", 0, Some("en")).unwrap();
    assert_eq!(h.offers(), vec![]);
    // the menu naming the queue's own skill keeps the queue's level
    h.call_in(2, "t", "g", 0, Some("zh")).unwrap();
    assert_eq!(h.offers(), vec![]);
    let mut agents2 = agents;
    for a in agents2.iter_mut() {
        a.queues = vec![("plain".into(), 0)];
    }
    let mut h = H::new(spec(vec![q("plain")], agents2));
    for id in ["ko", "en", "zh2"] {
        h.login(id);
    }
    h.call_in(3, "t", "plain", 0, Some("en")).unwrap();
    assert_eq!(h.offers(), vec![(3, "en".into())]);
}

#[test]
fn expected_wait_is_position_times_handle_time_over_staffed_agents() {
    let mut g = q("g");
    g.wrapup = Duration::from_secs(20);
    let mut h = H::new(spec(vec![g], vec![ag("1", &[], &[("g", 0)]), ag("2", &[], &[("g", 0)]), ag("3", &[], &[("g", 0)])]));
    assert_eq!(h.acd.expected_wait("t", "g", 1), None, "nobody staffed");
    h.login("1");
    h.login("2");
    let a3 = h.a("3");
    h.acd.login(h.now, a3, "cti").unwrap(); // not ready: does not count
    let h0 = DEFAULT_HANDLE_TIME.as_millis() as u64;
    assert_eq!(h.acd.expected_wait("t", "g", 3), Some(Duration::from_millis(3 * h0 / 2)));
    h.call(1, "g").unwrap();
    h.answer(1, "1");
    h.to(100.0);
    h.acd.ended(h.now, 1, "caller");
    h.to(120.0);
    // one sample of talk 100 s + wrap 20 s
    let hnew = HANDLE_EWMA_ALPHA * 120_000.0 + (1.0 - HANDLE_EWMA_ALPHA) * h0 as f64;
    let snap = h.acd.queue_snapshot(h.now, "t", "g").unwrap();
    assert_eq!(snap.handle_time, Duration::from_millis(hnew.round() as u64));
    assert_eq!(h.acd.expected_wait("t", "g", 4), Some(Duration::from_millis((4.0 * hnew / 2.0).round() as u64)));
    assert_eq!((snap.ready, snap.not_ready, snap.logged_in), (2, 1, 3));
}

#[test]
fn announcements_repeat_with_position_and_skip_while_ringing() {
    let mut g = q("g");
    g.announce_every = Some(Duration::from_secs(30));
    let mut h = H::new(spec(vec![g], vec![ag("1", &[], &[("g", 0)])]));
    let a = h.a("1");
    h.acd.login(h.now, a, "cti").unwrap();
    h.call(1, "g").unwrap();
    h.call(2, "g").unwrap();
    h.to(30.0);
    let ann: Vec<_> = h.take().into_iter().filter(|a| matches!(a, Action::Announce { .. })).collect();
    let ew = |k: u32| h.acd.expected_wait("t", "g", k);
    assert_eq!(ann, vec![
        Action::Announce { call: 1, position: 1, expected_wait: ew(1) },
        Action::Announce { call: 2, position: 2, expected_wait: ew(2) },
    ]);
    assert!(ew(1).is_none(), "the only agent is not ready: no estimate");
    h.acd.ready(h.now, a).unwrap(); // caller 1 rings
    h.to(60.0);
    let ann: Vec<_> = h.take().into_iter().filter(|a| matches!(a, Action::Announce { .. })).collect();
    assert_eq!(ann.len(), 1);
    assert!(matches!(ann[0], Action::Announce { call: 2, position: 2, expected_wait: Some(_) }));
}

#[test]
fn callback_keeps_its_place_and_is_dialled_with_a_reserved_agent() {
    let mut h = H::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)])]));
    h.call(1, "g").unwrap();
    h.to(5.0);
    h.call(2, "g").unwrap();
    let cb = h.acd.request_callback(h.now, 1, "01099998888").unwrap();
    assert_eq!(h.acd.position(1), None, "the caller leg may go");
    assert_eq!(h.acd.position(2), Some(2), "the callback stays ahead");
    h.to(50.0);
    h.login("1");
    let acts = h.take();
    assert!(acts.contains(&Action::CallbackDue { callback: cb, agent: h.a("1"), number: "01099998888".into(), tenant: "t".into(), queue: "g".into() }));
    assert_eq!(h.st("1"), AgentState::Reserved(cb));
    h.to(60.0);
    h.acd.callback_result(h.now, cb, Some(77));
    assert_eq!(h.st("1"), AgentState::Talking(77));
    assert!(h.acd.pending_callbacks().is_empty());
    h.acd.ended(h.now, 77, "caller");
    let logs = h.take_logs();
    assert!(logs.iter().any(|l| l.kind == K::CallbackRequested { number: "01099998888".into(), due_ms: WALL0 + 5_000 }));
    assert!(logs.iter().any(|l| l.agent == "1" && l.kind == K::CallbackConnect { wait_ms: 60_000 }));
    assert!(logs.iter().any(|l| l.call == "cg1" && matches!(l.kind, K::Complete { .. })));
}

#[test]
fn failed_callbacks_retry_keeping_their_place_then_give_up() {
    let mut g = q("g");
    g.wrapup = Duration::ZERO;
    let mut h = H::new(spec(vec![g], vec![ag("1", &[], &[("g", 0)])]));
    h.call(1, "g").unwrap();
    let cb = h.acd.request_callback(h.now, 1, "010").unwrap();
    h.to(1.0);
    h.call(2, "g").unwrap();
    h.login("1");
    assert_eq!(h.st("1"), AgentState::Reserved(cb));
    h.acd.callback_result(h.now, cb, None);
    // released, the agent takes caller 2 meanwhile
    assert_eq!(h.st("1"), AgentState::Reserved(2));
    assert_eq!(h.acd.pending_callbacks()[0].attempts, 1);
    h.answer(2, "1");
    h.to(10.0);
    h.call(3, "g").unwrap(); // arrives after the callback's place but before its retry
    h.acd.ended(h.now, 2, "caller");
    assert_eq!(h.st("1"), AgentState::Reserved(3));
    h.answer(3, "1");
    h.call(4, "g").unwrap();
    h.to(1.0 + CALLBACK_RETRY.as_secs_f64());
    h.acd.ended(h.now, 3, "caller");
    assert_eq!(h.st("1"), AgentState::Reserved(cb), "due again, the callback is ahead of caller 4");
    h.acd.callback_result(h.now, cb, None);
    h.acd.missed(h.now, 4, h.a("1"), MissReason::Busy); // (keep the agent free of caller 4)
    h.acd.abandon(h.now, 4);
    h.to(1.0 + 2.0 * CALLBACK_RETRY.as_secs_f64() + 1.0);
    assert_eq!(h.st("1"), AgentState::Reserved(cb));
    h.acd.callback_result(h.now, cb, None);
    assert!(h.acd.pending_callbacks().is_empty(), "given up after {CALLBACK_ATTEMPTS} attempts");
    let fails: Vec<u32> = h
        .take_logs()
        .iter()
        .filter_map(|l| match l.kind {
            K::CallbackFailed { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(fails, vec![1, 2, 3]);
}

#[test]
fn callbacks_survive_a_restart_and_scheduled_ones_wait_for_their_time() {
    let mut h = H::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)])]));
    h.call(1, "g").unwrap();
    let kept = h.acd.request_callback(h.now, 1, "010").unwrap();
    let info = CallInfo { cg_id: "sched".into(), caller: "011".into(), ..Default::default() };
    let sched = h.acd.schedule_callback(h.now, "t", "g", "011", WALL0 + 3_600_000, info).unwrap();
    assert!(h.acd.schedule_callback(h.now, "t", "x", "011", 0, CallInfo::default()).is_err());
    let saved = h.acd.pending_callbacks();
    assert_eq!(saved.len(), 2);
    // restart: a new ACD later
    let t1 = h.at(600.0);
    let mut b = Acd::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)])]), 9, t1, WALL0 + 600_000).unwrap();
    for c in saved.clone() {
        b.restore_callback(t1, c);
    }
    assert_eq!(b.pending_callbacks(), saved);
    let info = CallInfo { cg_id: "new".into(), ..Default::default() };
    b.enqueue(t1, 50, "t", "g", info).unwrap();
    assert_eq!(b.position(50), Some(2), "the restored callback is still ahead");
    let a = b.agent("1").unwrap();
    b.login(t1, a, "register").unwrap();
    assert_eq!(b.agent_state(a), &AgentState::Reserved(kept));
    b.callback_result(t1, kept, Some(90));
    b.ended(t1, 90, "agent");
    b.ready(t1, a).unwrap();
    assert_eq!(b.agent_state(a), &AgentState::Reserved(50), "the scheduled callback is not due yet");
    b.answered(t1, 50, a).unwrap();
    b.ended(t1, 50, "agent");
    b.ready(t1, a).unwrap();
    while b.poll_action().is_some() {}
    assert_eq!(b.poll_timeout(), Some(h.at(3600.0)));
    b.handle_timeout(h.at(3600.0));
    assert_eq!(b.agent_state(a), &AgentState::Reserved(sched));
    // a new ACD starts its ids past the old ones
    let next = b.schedule_callback(t1, "t", "g", "1", 0, CallInfo::default()).unwrap();
    assert!(next > kept && next > sched);
}

#[test]
fn answered_errors_for_unknown_and_withdrawn_offers() {
    let mut h = H::new(spec(vec![q("g")], vec![ag("1", &[], &[("g", 0)]), ag("2", &[], &[("g", 0)])]));
    h.login("1");
    let (a1, a2) = (h.a("1"), h.a("2"));
    assert_eq!(h.acd.answered(h.now, 99, a1), Err(AcdError::UnknownCall(99)));
    h.call(1, "g").unwrap();
    assert!(matches!(h.acd.answered(h.now, 1, a2), Err(AcdError::NotOffered { call: 1, .. })));
    assert!(h.acd.answered(h.now, 1, a1).is_ok());
    assert!(matches!(h.acd.answered(h.now, 1, a1), Err(AcdError::NotOffered { .. })), "a second answer");
    assert!(h.acd.answered(h.now, 1, AgentRef(999)).is_err());
}

#[test]
fn enqueue_again_moves_a_waiting_caller_keeping_its_place() {
    let mut h = H::new(spec(vec![q("a"), q("b")], vec![]));
    h.call(1, "a").unwrap();
    h.to(5.0);
    h.call(2, "b").unwrap();
    assert_eq!(h.call(1, "b"), Ok(1));
    assert_eq!(h.acd.waiting("t", "a"), 0);
    assert_eq!(h.acd.position(2), Some(2));
    assert!(h.take_logs().iter().any(|l| l.queue == "a" && l.kind == K::Overflow { to: "b".into(), wait_ms: 5_000 }));
}

#[test]
fn abandon_is_logged_with_wait_and_position() {
    let mut h = H::new(spec(vec![q("g")], vec![]));
    h.call(1, "g").unwrap();
    h.call(2, "g").unwrap();
    h.to(3.5);
    h.acd.abandon(h.now, 2);
    h.acd.abandon(h.now, 2); // twice: nothing more
    assert_eq!(h.acd.waiting("t", "g"), 1);
    let ab: Vec<_> = h.take_logs().into_iter().filter(|l| l.kind.name() == "abandon").collect();
    assert_eq!(ab.len(), 1);
    assert_eq!(ab[0].kind, K::Abandon { wait_ms: 3_500, position: 2 });
    assert_eq!(h.acd.longest_wait(h.now, "t", "g"), Some(Duration::from_millis(3_500)));
}
