//! Virtual-time driver shared by the ACD integration tests (`#[path = "acd_harness.rs"] mod harness;`).
//! Compiled alone it is an empty test crate.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use callgate::acd::log::QueueEvent;
use callgate::acd::*;

pub const WALL0: i64 = 1_700_000_000_000;

pub struct H {
    pub acd: Acd,
    pub t0: Instant,
    pub now: Instant,
    pub actions: Vec<Action>,
    pub logs: Vec<QueueEvent>,
}

impl H {
    pub fn new(spec: AcdSpec) -> H {
        H::seeded(spec, 7)
    }
    pub fn seeded(spec: AcdSpec, seed: u64) -> H {
        let t0 = Instant::now();
        H { acd: Acd::new(spec, seed, t0, WALL0).expect("valid spec"), t0, now: t0, actions: vec![], logs: vec![] }
    }
    pub fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }
    /// Run the ACD's timers in order up to `secs`, then stay there.
    pub fn to(&mut self, secs: f64) {
        let end = self.at(secs);
        loop {
            self.drain();
            match self.acd.poll_timeout() {
                Some(due) if due <= end => {
                    self.now = due.max(self.now);
                    self.acd.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = end;
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
    pub fn id(&self, a: AgentRef) -> String {
        self.acd.agent_spec(a).id.clone()
    }
    pub fn st(&self, id: &str) -> AgentState {
        self.acd.agent_state(self.a(id)).clone()
    }
    pub fn login(&mut self, id: &str) {
        let a = self.a(id);
        self.acd.login(self.now, a, "register").unwrap();
    }
    pub fn call(&mut self, call: u64, queue: &str) -> Result<u32, Refusal> {
        self.call_full(call, "t", queue, 0, None)
    }
    pub fn call_full(&mut self, call: u64, tenant: &str, queue: &str, prio: u8, skill: Option<&str>) -> Result<u32, Refusal> {
        self.acd.enqueue(self.now, call, tenant, queue, info(call, prio, skill))
    }
    /// The Offers among the actions so far, as (call, agent id); the other actions are dropped.
    pub fn offers(&mut self) -> Vec<(u64, String)> {
        let acts = self.take();
        acts.into_iter()
            .filter_map(|a| match a {
                Action::Offer { call, agent, .. } => Some((call, self.id(agent))),
                _ => None,
            })
            .collect()
    }
    pub fn answer(&mut self, call: u64, id: &str) {
        let a = self.a(id);
        self.acd.answered(self.now, call, a).expect("answer a live offer");
    }
    /// Answer, talk `talk` seconds, hang up: the agent goes to wrap-up.
    pub fn serve(&mut self, call: u64, id: &str, talk: f64) {
        self.answer(call, id);
        let end = self.now + Duration::from_secs_f64(talk);
        let secs = (end - self.t0).as_secs_f64();
        self.to(secs);
        self.acd.ended(self.now, call, "caller");
    }
}

pub fn info(call: u64, prio: u8, skill: Option<&str>) -> CallInfo {
    CallInfo {
        cg_id: format!("cg{call}"),
        caller: format!("010{call:08}"),
        number: "120".into(),
        priority: prio,
        skill: skill.map(str::to_string),
        language: None,
    }
}

pub fn queue(tenant: &str, name: &str, strategy: Strategy) -> QueueSpec {
    let mut q = QueueSpec::new(tenant, name);
    q.strategy = strategy;
    q.announce_every = None;
    q
}

pub fn agent(tenant: &str, id: &str, skills: &[(&str, u8)], queues: &[(&str, u32)]) -> AgentSpec {
    AgentSpec {
        tenant: tenant.into(),
        id: id.into(),
        extension: id.into(),
        name: format!("Agent {id}"),
        skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
        queues: queues.iter().map(|(s, p)| (s.to_string(), *p)).collect(),
    }
}

/// `n` agents "1".."n" of tenant "t" serving `queues` at penalty 0.
pub fn agents(n: usize, queues: &[&str]) -> Vec<AgentSpec> {
    let qs: Vec<(&str, u32)> = queues.iter().map(|q| (*q, 0)).collect();
    (1..=n).map(|i| agent("t", &i.to_string(), &[], &qs)).collect()
}
