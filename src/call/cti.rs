//! The call core's side of the CTI server: commands from agent desktops, CRMs and supervisors, and
//! the events they see. The hub ([`crate::cti::Hub`]) has checked the principal's role and scope
//! as far as it can; whose *call* it is, is checked here.
//!
//! | command | effect |
//! |---|---|
//! | agent.login / logout / ready / not_ready, force_state | the ACD's agent state |
//! | hangup | the call ends (BYE / final answer), record `end_reason` = `cti` |
//! | hold / resume | the caller hears the queue's music and the agent hears nothing; resume relays again |
//! | transfer (blind) | the agent is released (wrap-up); the caller hears music while the target rings; the target gets `X-Callgate-Case` and the case's data; answered: bridged; refused: back into the queue |
//! | attach_data, disposition | the case's data (travels with transfers, in `call.data` events); the wrap-up disposition in the queue log |
//! | schedule_callback | a callback at a set time, through the tenant's carrier |
//! | query queues / agents / calls, snapshot | JSON views |
//! | consult, consult_swap, consult_complete, consult_cancel, conference | see [`consult`](super::consult): leg C, the department |
//! | monitor (listen / whisper / barge / stop) | see [`consult`](super::consult): leg D, the supervisor's phone |
//! | answer | `NOTIFY (Event: talk)` to the ringing phone (agents with `auto_answer = false`) |

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::*;
use crate::acd::AgentRef;
use crate::cti::events::{self, AgentState as AgentStateEv, CallAgent, CallData, CallDisposition, CallEnded, CallOffered, CallTransferred, QueueStats};
use crate::cti::proto::{Command, ForcedState};
use crate::cti::{CtiError, Event, Principal, Role, Visibility};
use crate::media::command::MediaCommand;

impl Core {
    /// The CTI principals of the profile.
    pub fn cti_principals(profile: &Profile) -> Vec<Principal> {
        profile
            .principals
            .iter()
            .filter_map(|p| {
                Some(Principal {
                    name: p.name.clone(),
                    role: Role::parse(&p.role)?,
                    tenant: p.tenant.clone(),
                    agent: p.agent.clone(),
                    token_sha256: p.token_sha256,
                })
            })
            .collect()
    }

    /// (agent id, tenant) of every agent, for the hub's directory.
    pub fn cti_directory(&self) -> Vec<(String, String)> {
        self.acd.agents().map(|(_, s, _)| (s.id.clone(), s.tenant.clone())).collect()
    }

    pub(super) fn publish(&mut self, ev: Event) {
        self.outputs.push_back(Output::Cti(ev));
    }

    fn agent_ref(&self, p: &Principal, id: &str) -> Result<AgentRef, CtiError> {
        let found = match &p.tenant {
            Some(t) => self.acd.agents().find(|(_, s, _)| &s.tenant == t && s.id == id).map(|(r, _, _)| r),
            None => self.acd.agent(id),
        };
        found.ok_or_else(|| CtiError::NotFound(format!("agent {id:?}")))
    }

    /// The live call with callgate id `cg`, if the principal may act on it.
    fn call_for(&self, p: &Principal, cg: &str) -> Result<CallKey, CtiError> {
        self.call_for_(p, cg, false)
    }

    /// As [`call_for`](Self::call_for); `ringing`: an agent's phone that rings for the call makes it
    /// the agent's too (to answer it).
    fn call_for_(&self, p: &Principal, cg: &str, ringing: bool) -> Result<CallKey, CtiError> {
        let (key, call) =
            self.calls.iter().find(|(_, c)| c.cg_id == cg).ok_or_else(|| CtiError::NotFound(format!("call {cg:?}")))?;
        if p.role != Role::Admin && p.tenant.as_ref().is_some_and(|t| t != &call.tenant) {
            return Err(CtiError::NotFound(format!("call {cg:?}")));
        }
        if p.role == Role::Agent {
            let is_me = |a: Option<crate::acd::AgentRef>| a.is_some() && a.map(|a| &self.acd.agent_spec(a).id) == p.agent.as_ref();
            let mine = is_me(call.agent) || (ringing && call.offers.iter().any(|o| is_me(o.agent)));
            if !mine {
                return Err(CtiError::Forbidden(format!("call {cg:?} is not {}'s call", p.agent.as_deref().unwrap_or("?"))));
            }
        }
        Ok(*key)
    }

    /// Carries out one CTI command.
    pub fn cti_execute(&mut self, now: Instant, p: &Principal, cmd: Command) -> Result<Value, CtiError> {
        let acd_err = |e: crate::acd::AcdError| CtiError::WrongState(e.to_string());
        let r = match cmd {
            Command::AgentLogin { agent } => {
                let a = self.agent_ref(p, &agent)?;
                self.acd.login(now, a, "cti").map_err(acd_err)?;
                Ok(self.agent_json(a))
            }
            Command::AgentLogout { agent, reason } => {
                let a = self.agent_ref(p, &agent)?;
                self.acd.logout(now, a, if reason.is_empty() { "cti" } else { &reason }).map_err(acd_err)?;
                Ok(self.agent_json(a))
            }
            Command::AgentReady { agent } => {
                let a = self.agent_ref(p, &agent)?;
                self.acd.ready(now, a).map_err(acd_err)?;
                Ok(self.agent_json(a))
            }
            Command::AgentNotReady { agent, reason } => {
                let a = self.agent_ref(p, &agent)?;
                self.acd.not_ready(now, a, &reason).map_err(acd_err)?;
                Ok(self.agent_json(a))
            }
            Command::ForceAgentState { agent, state, reason } => {
                let a = self.agent_ref(p, &agent)?;
                let reason = if reason.is_empty() { "supervisor".to_owned() } else { reason };
                match state {
                    ForcedState::LoggedOut => self.acd.logout(now, a, &reason),
                    ForcedState::Ready => {
                        if matches!(self.acd.agent_state(a), crate::acd::AgentState::LoggedOut) {
                            self.acd.login(now, a, "supervisor").and_then(|_| self.acd.ready(now, a))
                        } else {
                            self.acd.ready(now, a)
                        }
                    }
                    ForcedState::NotReady => self.acd.not_ready(now, a, &reason),
                }
                .map_err(acd_err)?;
                Ok(self.agent_json(a))
            }
            Command::Hangup { call } => {
                let key = self.call_for(p, &call)?;
                if let Some(c) = self.calls.get_mut(&key) {
                    c.end_reason = Some("cti".into());
                }
                let outcome = match self.calls.get(&key).map(|c| c.state) {
                    Some(State::Connected) => Outcome::Completed,
                    _ => Outcome::Abandoned,
                };
                self.hang_up(now, key, outcome, 200, &format!("hung up by {}", p.name));
                Ok(json!({ "call": call }))
            }
            Command::Hold { call } => {
                let key = self.call_for(p, &call)?;
                self.cti_hold(now, key, true)?;
                Ok(json!({ "call": call, "held": true }))
            }
            Command::Resume { call } => {
                let key = self.call_for(p, &call)?;
                self.cti_hold(now, key, false)?;
                Ok(json!({ "call": call, "held": false }))
            }
            Command::BlindTransfer { call, to } => {
                let key = self.call_for(p, &call)?;
                self.blind_transfer(now, key, &to)?;
                Ok(json!({ "call": call, "to": to }))
            }
            Command::AttachData { call, data } => {
                let key = self.call_for(p, &call)?;
                let c = self.calls.get_mut(&key).expect("found");
                for (k, v) in data {
                    if v.is_null() {
                        c.data.remove(&k);
                    } else {
                        c.data.insert(k, v);
                    }
                }
                let (tenant, cg, d) = (c.tenant.clone(), c.cg_id.clone(), c.data.clone());
                let agents = self.call_agents(key);
                self.publish(Event::new(events::CALL_DATA, Visibility::call(&tenant, &cg, &agents), &CallData { call: cg.clone(), tenant, data: d.clone() }));
                Ok(json!({ "call": cg, "data": d }))
            }
            Command::Disposition { call, subject, settled, flag } => {
                // The wrap-up comes after the hang-up: the call may be over already.
                let (tenant, agent) = match self.call_for(p, &call) {
                    Ok(key) => {
                        let c = &self.calls[&key];
                        (c.tenant.clone(), c.agent)
                    }
                    Err(e) => match self.recent.get(&call) {
                        Some((t, a)) => {
                            if p.tenant.as_ref().is_some_and(|pt| pt != t) && p.role != Role::Admin {
                                return Err(e);
                            }
                            if p.role == Role::Agent && a.map(|a| &self.acd.agent_spec(a).id) != p.agent.as_ref() {
                                return Err(CtiError::Forbidden(format!("call {call:?} is not {}'s call", p.agent.as_deref().unwrap_or("?"))));
                            }
                            (t.clone(), *a)
                        }
                        None => return Err(e),
                    },
                };
                let Some(agent) = agent else {
                    return Err(CtiError::WrongState(format!("call {call:?} was never answered by an agent")));
                };
                self.acd.disposition(now, &call, agent, &subject, settled, flag.as_str());
                let id = self.acd.agent_spec(agent).id.clone();
                self.publish(Event::new(
                    events::CALL_DISPOSITION,
                    Visibility::call(&tenant, &call, std::slice::from_ref(&id)),
                    &CallDisposition { call: call.clone(), tenant, agent: Some(id), subject, settled, flag: flag.as_str().to_owned() },
                ));
                Ok(json!({ "call": call, "recorded": true }))
            }
            Command::ScheduleCallback { tenant, queue, number, at_ms } => {
                let at_ms = at_ms.unwrap_or_else(|| self.unix_ms(now));
                let info = crate::acd::CallInfo {
                    cg_id: format!("cg-{}", self.rng.token(16)),
                    caller: number.clone(),
                    number: String::new(),
                    priority: 0,
                    skill: None,
                    language: None,
                };
                let id = self.acd.schedule_callback(now, &tenant, &queue, &number, at_ms, info).map_err(acd_err)?;
                if let Some(route) = self.last_route.get(&tenant).cloned() {
                    self.callback_routes.insert(id, route);
                }
                self.callbacks_dirty = true;
                Ok(json!({ "callback": id, "at_ms": at_ms }))
            }
            Command::QueryQueues { tenant } => Ok(self.queues_json(now, p, tenant.as_deref())),
            Command::QueryAgents { tenant } => Ok(self.agents_json(p, tenant.as_deref())),
            Command::QueryCalls { tenant } => Ok(self.calls_json(now, p, tenant.as_deref())),
            Command::Snapshot => Ok(json!({
                "agents": self.agents_json(p, None),
                "queues": self.queues_json(now, p, None),
                "calls": self.calls_json(now, p, None),
            })),
            Command::Answer { call } => {
                let key = self.call_for_(p, &call, true)?;
                self.remote_answer(now, p, key)?;
                Ok(json!({ "call": call, "requested": true }))
            }
            Command::ConsultStart { call, to } => {
                let key = self.call_for(p, &call)?;
                self.consult_start(now, key, &to)?;
                Ok(json!({ "call": call, "to": to }))
            }
            Command::ConsultComplete { call } => {
                let key = self.call_for(p, &call)?;
                self.consult_complete(now, key)?;
                Ok(json!({ "call": call }))
            }
            Command::ConsultSwap { call } => {
                let key = self.call_for(p, &call)?;
                self.consult_swap(key)?;
                Ok(json!({ "call": call }))
            }
            Command::ConsultCancel { call } => {
                let key = self.call_for(p, &call)?;
                self.consult_cancel(now, key)?;
                Ok(json!({ "call": call }))
            }
            Command::Conference { call } => {
                let key = self.call_for(p, &call)?;
                self.conference(key)?;
                Ok(json!({ "call": call }))
            }
            Command::Monitor { call, mode, extension } => {
                if !matches!(p.role, Role::Supervisor | Role::Admin) {
                    return Err(CtiError::Forbidden(format!("{} may not monitor calls (supervisors only)", p.name)));
                }
                let key = self.call_for(p, &call)?;
                self.monitor(now, key, mode, extension.as_deref())?;
                Ok(json!({ "call": call }))
            }
        };
        self.drive(now);
        r
    }

    /// Agents on the call (for the visibility of its events).
    pub(super) fn call_agents(&self, key: CallKey) -> Vec<String> {
        let Some(c) = self.calls.get(&key) else { return Vec::new() };
        let mut v: Vec<String> = c.agent.iter().map(|a| self.acd.agent_spec(*a).id.clone()).collect();
        v.extend(c.offers.iter().filter_map(|o| o.agent).map(|a| self.acd.agent_spec(a).id.clone()));
        v
    }

    /// Remote answer: a `NOTIFY` with `Event: talk` in the early dialog of the ringing offer (the
    /// convention of BroadWorks-style phones: Yealink, Polycom, Grandstream, Cisco MPP ...); the
    /// phone then answers the INVITE, and `call.answered` follows as for a hand answer.
    fn remote_answer(&mut self, now: Instant, p: &Principal, key: CallKey) -> Result<(), CtiError> {
        let me = p.agent.as_ref().and_then(|id| self.acd.agents().find(|(_, s, _)| &s.id == id).map(|(r, _, _)| r));
        let c = self.calls.get_mut(&key).expect("found");
        let Some(o) = c.offers.iter_mut().find(|o| o.agent.is_some() && (me.is_none() || o.agent == me)) else {
            return Err(CtiError::WrongState("no phone of this call is ringing".into()));
        };
        if o.dialog.remote_tag.is_none() {
            return Err(CtiError::WrongState("the phone has not sent a ringing answer with a tag yet: try again".into()));
        }
        let peer = o.dialog.peer;
        let (_, branch, notify) = o.dialog.request(Method::Notify, &mut self.rng, &self.cfg, &[("Event", "talk"), ("Subscription-State", "terminated;reason=noresource")]);
        let t = self.txn.request(now, Method::Notify, &branch, notify, peer);
        self.clients.insert(t, (key, Purpose::Notify));
        Ok(())
    }

    /// callgate puts the caller on hold (music) and mutes the agent's side, or takes them off hold.
    fn cti_hold(&mut self, now: Instant, key: CallKey, on: bool) -> Result<(), CtiError> {
        let c = self.calls.get(&key).expect("found");
        if c.state != State::Connected {
            return Err(CtiError::WrongState("hold needs a connected call".into()));
        }
        let Some((media, dir)) = c.b_media else { return Err(CtiError::WrongState("the agent's leg has no media".into())) };
        if self.plan_running(key) {
            return Err(CtiError::WrongState("a consultation or a supervisor is on the call: use consult_swap, or stop the monitoring".into()));
        }
        match (c.held, on) {
            (None, true) => {
                let music = self.music_for(key);
                let c = self.calls.get_mut(&key).expect("found");
                c.held = Some((Leg::B, now));
                self.outputs.push_back(Output::Media(MediaCommand::Play { call: key, leg: Leg::A, playlist: music, looped: true, barge_in: false }));
                self.outputs.push_back(Output::Media(MediaCommand::Update { call: key, leg: Leg::B, media, direction: sdp::Direction::RecvOnly }));
                self.acd.hold(now, key, true);
                self.publish_call_event(key, events::CALL_HELD);
                Ok(())
            }
            (Some(_), false) => {
                let c = self.calls.get_mut(&key).expect("found");
                if let Some((_, since)) = c.held.take() {
                    c.hold_ms += now.saturating_duration_since(since).as_millis() as u64;
                }
                self.outputs.push_back(Output::Media(MediaCommand::Update { call: key, leg: Leg::B, media, direction: dir }));
                self.outputs.push_back(Output::Media(MediaCommand::Relay { call: key, to_leg: Leg::A }));
                self.acd.hold(now, key, false);
                self.publish_call_event(key, events::CALL_RESUMED);
                Ok(())
            }
            (Some(_), true) => Err(CtiError::WrongState("the call is on hold already".into())),
            (None, false) => Err(CtiError::WrongState("the call is not on hold".into())),
        }
    }

    pub(super) fn publish_call_event(&mut self, key: CallKey, kind: &'static str) {
        let Some(c) = self.calls.get(&key) else { return };
        let agent = c.agent.map(|a| self.acd.agent_spec(a).id.clone());
        let (tenant, cg) = (c.tenant.clone(), c.cg_id.clone());
        let agents = self.call_agents(key);
        self.publish(Event::new(kind, Visibility::call(&tenant, &cg, &agents), &CallAgent { call: cg.clone(), tenant, agent }));
    }

    /// Blind transfer: the agent leaves at once (wrap-up); the caller hears music while `to` rings.
    fn blind_transfer(&mut self, now: Instant, key: CallKey, to: &str) -> Result<(), CtiError> {
        let c = self.calls.get(&key).expect("found");
        if c.state != State::Connected || c.agent.is_none() {
            return Err(CtiError::WrongState("transfer needs a call connected to an agent".into()));
        }
        if c.consult.is_some() {
            return Err(CtiError::WrongState("a consultation is running: complete or cancel it".into()));
        }
        let tenant = c.tenant.clone();
        let (target, peer, target_agent) = self.resolve_target(&tenant, to)?;
        let c = self.calls.get(&key).expect("found");
        let agent_id = c.agent.map(|a| self.acd.agent_spec(a).id.clone());
        let cg = c.cg_id.clone();
        let extra = self.case_headers(key);
        if self.calls[&key].monitor.is_some() {
            self.drop_side(now, key, Leg::D, true, "agent transferred the call");
        }
        // The agent leaves now: BYE, wrap-up; the caller hears music.
        self.acd.transferred(now, key, to);
        let music = self.music_for(key);
        let c = self.calls.get_mut(&key).expect("found");
        let talked = c.talk_from.map(|t| ms_between(t, now)).unwrap_or(0);
        c.transfer_talk_ms += talked;
        c.talk_from = None;
        c.transferred_to = Some(to.to_owned());
        if let Some(mut b) = c.b.take() {
            self.dialogs.remove(dkey(&(b.call_id.as_str(), b.local_tag.as_str())));
            let (peer, branch, bye) = b.bye(&mut self.rng, &self.cfg, "transferred");
            let t = self.txn.request(now, Method::Bye, &branch, bye, peer);
            self.clients.insert(t, (key, Purpose::Bye));
        }
        c.agent = None;
        c.held = None;
        c.state = State::Queued;
        c.queued_at = None;
        if let Some(port) = c.b_port.take() {
            self.ports.release(port);
            self.outputs.push_back(Output::Media(MediaCommand::CloseLeg { call: key, leg: Leg::B }));
        }
        c.b_media = None;
        self.play_a(now, key, music, true, false);
        self.show_case_to(key, target_agent);
        let extra_refs: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.clone())).collect();
        if !self.send_offer(now, key, &target, peer, None, 70, &extra_refs) {
            return Err(CtiError::Internal("no RTP port for the transfer leg".into()));
        }
        self.publish(Event::new(
            events::CALL_TRANSFERRED,
            Visibility::call(&tenant, &cg, &agent_id.iter().cloned().collect::<Vec<_>>()),
            &CallTransferred { call: cg.clone(), tenant, agent: agent_id, to: to.to_owned(), kind: "blind".into() },
        ));
        Ok(())
    }

    fn agent_json(&self, a: AgentRef) -> Value {
        let s = self.acd.agent_spec(a);
        let st = self.acd.agent_state(a);
        let reason = match st {
            crate::acd::AgentState::NotReady(r) => r.clone(),
            _ => String::new(),
        };
        json!({ "agent": s.id, "tenant": s.tenant, "name": s.name, "extension": s.extension, "state": st.name(), "reason": reason })
    }

    fn agents_json(&self, p: &Principal, tenant: Option<&str>) -> Value {
        let v: Vec<Value> = self
            .acd
            .agents()
            .filter(|(_, s, _)| visible_tenant(p, tenant, &s.tenant))
            .filter(|(_, s, _)| p.role != Role::Agent || p.agent.as_ref() == Some(&s.id))
            .map(|(r, _, _)| self.agent_json(r))
            .collect();
        Value::Array(v)
    }

    fn queues_json(&self, now: Instant, p: &Principal, tenant: Option<&str>) -> Value {
        let mut v = Vec::new();
        for t in self.profile.tenants.iter().filter(|t| visible_tenant(p, tenant, &t.id)) {
            for q in &t.queues {
                if let Some(s) = self.queue_stats(now, &t.id, &q.name) {
                    v.push(serde_json::to_value(s).unwrap_or(Value::Null));
                }
            }
        }
        Value::Array(v)
    }

    fn calls_json(&self, now: Instant, p: &Principal, tenant: Option<&str>) -> Value {
        let v: Vec<Value> = self
            .calls
            .iter()
            .filter(|(_, c)| visible_tenant(p, tenant, &c.tenant))
            .filter(|(_, c)| p.role != Role::Agent || c.agent.map(|a| &self.acd.agent_spec(a).id) == p.agent.as_ref())
            .map(|(_, c)| {
                json!({
                    "call": c.cg_id, "tenant": c.tenant, "state": format!("{:?}", c.state).to_lowercase(),
                    "caller": c.caller, "number": c.number, "queue": c.queue,
                    "agent": c.agent.map(|a| self.acd.agent_spec(a).id.clone()),
                    "menu_choice": c.choice.as_ref().map(|m| m.key.clone()),
                    "wait_ms": c.queued_at.map(|q| ms_between(q, c.talk_from.unwrap_or(now))),
                    "talk_ms": c.talk_from.map(|t| ms_between(t, now)),
                    "held": c.held.is_some(), "data": c.data,
                })
            })
            .collect();
        Value::Array(v)
    }

    /// A queue's live figures: the ACD's now, the statistics' since midnight.
    pub(super) fn queue_stats(&self, now: Instant, tenant: &str, queue: &str) -> Option<QueueStats> {
        let s = self.acd.queue_snapshot(now, tenant, queue)?;
        let live = self.stats.live_queue(tenant, queue, self.unix_ms(now));
        let today = serde_json::to_value(&live.today).unwrap_or(Value::Null);
        let n = |k: &str| today.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
        Some(QueueStats {
            tenant: tenant.to_owned(),
            queue: queue.to_owned(),
            waiting: s.waiting as u32,
            longest_wait_ms: s.longest_wait.map_or(0, |d| d.as_millis() as u64),
            expected_wait_ms: s.expected_wait.map(|d| d.as_millis() as u64),
            agents_logged_in: s.logged_in as u32,
            agents_ready: s.ready as u32,
            agents_busy: (s.reserved + s.talking + s.held + s.wrapup) as u32,
            agents_not_ready: s.not_ready as u32,
            offered: n("offered"),
            answered: n("answered"),
            abandoned: n("abandoned"),
            service_level: today.get("service_level").and_then(Value::as_f64),
        })
    }

    /// Once a second: `queue.stats` for every queue whose figures changed.
    pub(super) fn stats_tick(&mut self, now: Instant) {
        let mut out = Vec::new();
        for t in &self.profile.tenants {
            for q in &t.queues {
                if let Some(s) = self.queue_stats(now, &t.id, &q.name) {
                    let k = (t.id.clone(), q.name.clone());
                    if self.last_queue_stats.get(&k) != Some(&s) {
                        out.push((k, s));
                    }
                }
            }
        }
        let changed = !out.is_empty();
        for ((t, q), s) in out {
            self.publish(Event::new(events::QUEUE_STATS, Visibility::tenant_wide(&t), &s));
            self.last_queue_stats.insert((t, q), s);
        }
        // Keep ticking while figures move or callers wait (their longest wait grows); an idle edge
        // has no timer.
        self.stats_tick_pending = false;
        if changed || !self.calls.is_empty() {
            self.schedule_stats_tick(now);
        }
    }

    pub(super) fn schedule_stats_tick(&mut self, now: Instant) {
        if !self.stats_tick_pending {
            self.stats_tick_pending = true;
            self.timers.push(Reverse((now + Duration::from_secs(1), 0, TimerKind::StatsTick)));
        }
    }

    /// `agent.state` for the CTI stream.
    pub(super) fn publish_agent_state(&mut self, agent: AgentRef, state: &crate::acd::AgentState, reason: &str) {
        let s = self.acd.agent_spec(agent);
        let call = match state {
            crate::acd::AgentState::Reserved(c) | crate::acd::AgentState::Talking(c) | crate::acd::AgentState::Held(c) => {
                self.calls.get(c).map(|c| c.cg_id.clone())
            }
            _ => None,
        };
        let ev = AgentStateEv { agent: s.id.clone(), tenant: s.tenant.clone(), state: state.name().to_owned(), reason: reason.to_owned(), call };
        let vis = Visibility::agent(&s.tenant, &s.id);
        self.publish(Event::new(events::AGENT_STATE, vis, &ev));
    }

    /// `call.offered` to the agent whose phone rings.
    pub(super) fn publish_offered(&mut self, now: Instant, key: CallKey, agent: AgentRef, queue: &str) {
        let Some(c) = self.calls.get(&key) else { return };
        let id = self.acd.agent_spec(agent).id.clone();
        let repeat = self.repeat_count(&c.tenant, &c.caller, self.unix_ms(c.arrived));
        let ev = CallOffered {
            call: c.cg_id.clone(),
            tenant: c.tenant.clone(),
            queue: queue.to_owned(),
            agent: id.clone(),
            caller: c.caller.clone(),
            number: c.number.clone(),
            menu_choice: c.choice.as_ref().map(|m| m.key.clone()),
            language: c.choice.as_ref().and_then(|m| m.skill.clone()),
            wait_ms: c.queued_at.map_or(0, |q| ms_between(q, now)),
            repeat_7d: repeat,
            data: c.data.clone(),
        };
        let vis = Visibility::call(&c.tenant, &c.cg_id, &[id]);
        self.publish(Event::new(events::CALL_OFFERED, vis, &ev));
    }

    /// `call.ended`, and the call kept a while for its wrap-up disposition.
    pub(super) fn publish_ended(&mut self, now: Instant, call: &Call, reason: &str) {
        let agent = call.agent.map(|a| self.acd.agent_spec(a).id.clone());
        let mut agents: Vec<String> = agent.iter().cloned().collect();
        agents.extend(call.offers.iter().filter_map(|o| o.agent).map(|a| self.acd.agent_spec(a).id.clone()));
        let ev = CallEnded {
            call: call.cg_id.clone(),
            tenant: call.tenant.clone(),
            agent,
            reason: reason.to_owned(),
            talk_ms: call.talk_from.map(|t| ms_between(t, now)),
        };
        self.publish(Event::new(events::CALL_ENDED, Visibility::call(&call.tenant, &call.cg_id, &agents), &ev));
        if self.recent.len() > 10_000 {
            self.recent.clear();
        }
        self.recent.insert(call.cg_id.clone(), (call.tenant.clone(), call.agent.or(call.last_agent)));
    }

    /// Calls from `caller` to the tenant in the 7 days before `before_ms`.
    fn repeat_count(&self, tenant: &str, caller: &str, before_ms: i64) -> u32 {
        if caller.is_empty() {
            return 0;
        }
        let from = before_ms - 7 * 86_400_000;
        self.contacts
            .get(&(tenant.to_owned(), caller.to_owned()))
            .map_or(0, |v| v.iter().filter(|&&t| t >= from && t < before_ms).count() as u32)
    }

    /// Remembers a call's arrival for the repeat-caller count (and seeds it from the records at start).
    pub fn note_contact(&mut self, tenant: &str, caller: &str, at_ms: i64) {
        if caller.is_empty() {
            return;
        }
        let v = self.contacts.entry((tenant.to_owned(), caller.to_owned())).or_default();
        v.push_back(at_ms);
        let horizon = at_ms - 7 * 86_400_000;
        while v.front().is_some_and(|&t| t < horizon) {
            v.pop_front();
        }
    }

    /// Feeds the live statistics (the shell passes records loaded at start too).
    pub fn stats_mut(&mut self) -> &mut crate::stats::Stats {
        &mut self.stats
    }

    /// The live figures of every tenant and queue, for `GET /stats/live` and the wallboard.
    pub fn live_json(&self, now: Instant) -> Value {
        let now_ms = self.unix_ms(now);
        let mut tenants = Map::new();
        for t in &self.profile.tenants {
            let queues: Vec<Value> = t
                .queues
                .iter()
                .map(|q| {
                    let mut v = serde_json::to_value(self.stats.live_queue(&t.id, &q.name, now_ms)).unwrap_or(Value::Null);
                    if let (Some(obj), Some(s)) = (v.as_object_mut(), self.queue_stats(now, &t.id, &q.name)) {
                        obj.insert("acd".into(), serde_json::to_value(s).unwrap_or(Value::Null));
                    }
                    v
                })
                .collect();
            let mut tenant = serde_json::to_value(self.stats.live_tenant(&t.id, now_ms)).unwrap_or(Value::Null);
            if let Some(obj) = tenant.as_object_mut() {
                obj.insert("queues".into(), Value::Array(queues));
                obj.insert("name".into(), Value::String(t.name.clone()));
                obj.insert("utc_offset_min".into(), json!(t.utc_offset_min));
                let cfg = self.stats.config();
                obj.insert("sl_threshold_s".into(), json!(cfg.thresholds.sl_ms / 1000));
                obj.insert("sl_formula".into(), json!(cfg.sl_formula.name()));
            }
            tenants.insert(t.id.clone(), tenant);
        }
        json!({ "now_ms": now_ms, "tenants": tenants })
    }
}

fn visible_tenant(p: &Principal, asked: Option<&str>, tenant: &str) -> bool {
    let allowed = p.role == Role::Admin || p.tenant.as_deref().is_none_or(|t| t == tenant);
    allowed && asked.is_none_or(|a| a == tenant)
}
