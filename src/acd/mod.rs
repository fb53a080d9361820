//! The ACD: agents, queues and routing (sans-IO).
//!
//! The call core feeds the [`Acd`] with what happens (a caller enters a queue, an agent answers, a
//! phone unregisters, time passes) and drains what to do ([`Acd::poll_action`]) and what to record
//! ([`Acd::poll_log`], the [queue log](log)). No clocks, no sockets: every call takes `now`, wall
//! time is `wall_ms` at construction plus the time elapsed since, and randomness (the random
//! strategy) comes from a [`crate::sip::Rng`] seeded at construction.
//!
//! # Rules
//!
//! * **Tenants** are isolated: a queue is named by (tenant, name), an agent serves only queues of its
//!   own tenant (checked at construction) and overflow stays within the tenant.
//! * **Offers go to Ready agents only**, and an agent holds one offer at a time (it is Reserved while
//!   its phone rings), so two queues can never offer the same agent at once.
//! * **Fairness across queues:** when an agent becomes Ready it takes, among all callers of all the
//!   queues it serves whose skill requirement it meets *at this moment* (relaxation included), the one
//!   with the highest priority, then the earliest place in line. A caller's place is the time it first
//!   entered: kept across overflow, and kept by a callback ("press a key to hang up and keep your
//!   place"). When a caller enters, the queue's strategy picks among the Ready agents that qualify;
//!   lower penalty first. Invariant after every input: no Ready agent qualifies for a routable caller
//!   of a queue it serves.
//! * **Skills:** a caller must be served by an agent holding every skill of the queue at the required
//!   level; the menu's skill (e.g. "en") is added at level 1 unless the queue names it. A requirement
//!   relaxes with the caller's wait: `SkillReq::relax = [(30 s, 3)]` accepts level 3 after 30 s (a
//!   timer re-routes the caller the moment a relaxation applies).
//! * **Strategies** (the order among qualified Ready agents of the lowest penalty):
//!   longest-idle (Ready the longest; an agent keeps its idle time when an offer ends through no fault
//!   of its own, a miss sends it to the back), round-robin with memory (the next agent in spec order
//!   after the one offered last), fewest calls (answered from this queue), least talk time (in this
//!   queue), ring-all (every qualified agent rings; the first to answer takes it, the others get
//!   StopOffer), linear (spec order), random (uniform among the qualified, from the seed).
//! * **Ring timeout** (per queue) → Miss(NoAnswer) + StopOffer, and the caller is offered to the next
//!   agent (not the one who just missed, unless ring-all). Busy/declined/unreachable likewise. After
//!   `max_misses` consecutive misses (withdrawals do not count) the agent goes NotReady("missed").
//! * **Maximum wait** (from joining the queue): Overflow moves the caller inside the ACD (keeping its
//!   place; if the target refuses it, the caller is hung up), the others give [`Action::MaxWait`]. A
//!   caller whose agent is ringing is not interrupted: the rule applies if that offer fails.
//! * **Empty queues:** `join_empty = false` refuses callers while no agent of the queue is logged in;
//!   `leave_empty = true` evicts the waiting callers (not callbacks) when the last agent logs out.
//! * **Wrap-up** lasts the queue's `wrapup` unless the agent says ready (or not ready, or logs out)
//!   earlier; a not-ready asked for during a call applies at the end of the wrap-up; a logout asked for
//!   during a call (phone unregistered) applies when the call ends, without wrap-up.
//! * **Callbacks** keep their place in line; when one reaches the front an agent is Reserved for it and
//!   [`Action::CallbackDue`] asks the core to dial. A failed attempt is retried after
//!   [`CALLBACK_RETRY`] (keeping the place) up to [`CALLBACK_ATTEMPTS`] attempts; a dial that reports
//!   nothing within [`CALLBACK_DIAL_TIMEOUT`] counts as failed.
//! * **Expected wait** for the `k`-th in line: `W(k) = k · H / N`, where `H` is the queue's handle time
//!   (an EWMA, α = [`HANDLE_EWMA_ALPHA`], of talk + wrap-up of its calls, starting at
//!   [`DEFAULT_HANDLE_TIME`]) and `N` the queue's agents that are logged in and not NotReady. With
//!   `N` agents each finishing a call every `H` on average, a place frees up every `H / N`; the
//!   `k`-th caller is served at the `k`-th. `None` when `N = 0`.
//! * **Service level** (computed by the statistics from the log): answered within the queue's
//!   `sl_threshold` / offered, where "answered within" compares `Connect::wait_ms` (time since the
//!   caller first entered, ringing included) with the threshold; abandons shorter than `short_abandon`
//!   are reported apart. See [`erlang`] for the theoretical values.
//! * Every event goes to the queue log. Log `wait_ms` is always the time since the caller first entered
//!   a queue of the ACD (what the caller lived through), also after an overflow.
//!
//! # Agent states
//!
//! ```text
//!                  login("register")              login(other)
//!   LoggedOut ─────────────────────────► Ready ◄─────────┐ NotReady(reason) ◄── login(other)
//!      ▲  ▲                               │ ▲ ▲  ready() │   ▲   ▲
//!      │  │ logout (any state but         │ │ └──────────┘   │   │ not_ready() from Ready/Wrapup/Reserved
//!      │  │ Talking/Held: those log out   │ │ ready()/timer  │   │ N misses ("missed")
//!      │  │ when the call ends)           │ │                │   │
//!      │  │                        offer  ▼ │ miss / abandon / other ring-all agent answered
//!      │  └──────────────────────── Reserved(call) ─────────────┘ (withdrawn: not_ready/logout)
//!      │                                  │ answered / callback connected
//!      │                                  ▼
//!      │                 hold(true) Talking(call) ◄──► Held(call) hold(false)
//!      │                                  │ ended / transferred
//!      │ pending logout                   ▼
//!      └──────────────────────────────── Wrapup ── wrapup timer / ready() ──► Ready
//!                                         └── not_ready() or pending not-ready ──► NotReady
//! ```
//! (A queue with `wrapup = 0` goes from the end of the call straight to Ready or the pending NotReady.)

pub mod erlang;
mod internal;
pub mod log;
mod types;

pub use types::*;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::sip::Rng;
use internal::*;
use log::{QueueEvent, QueueEventKind};

/// Handle time assumed for a queue before its first call completes.
pub const DEFAULT_HANDLE_TIME: Duration = Duration::from_secs(240);
/// Weight of the newest call in the handle-time EWMA.
pub const HANDLE_EWMA_ALPHA: f64 = 0.1;
/// Delay before retrying a failed callback (it keeps its place in line).
pub const CALLBACK_RETRY: Duration = Duration::from_secs(300);
/// Attempts before a callback is given up.
pub const CALLBACK_ATTEMPTS: u32 = 3;
/// An agent reserved for a callback is released (attempt failed) if the core reports nothing by then.
pub const CALLBACK_DIAL_TIMEOUT: Duration = Duration::from_secs(90);

/// The ACD core. See the [module documentation](self) for the rules and the agent state diagram.
pub struct Acd {
    base: Instant,
    base_wall_ms: i64,
    rng: Rng,
    queues: Vec<Queue>,
    /// tenant → queue name → queue index
    queue_ix: HashMap<String, HashMap<String, u32>>,
    agents: Vec<Agent>,
    agent_ix: HashMap<String, Vec<u32>>,
    skill_ix: HashMap<String, u32>,
    entries: HashMap<u64, Entry>,
    calls: HashMap<CallRef, u64>,
    talks: HashMap<CallRef, Talk>,
    next_uid: u64,
    timers: BinaryHeap<Reverse<(Ticks, u64, Timer)>>,
    timer_seq: u64,
    actions: VecDeque<Action>,
    logs: VecDeque<QueueEvent>,
    scratch: Vec<u32>,
}

fn bad(msg: String) -> AcdError {
    AcdError::BadSpec(msg)
}

impl Acd {
    /// Build the ACD. `wall_ms` is the Unix time in ms at `now`. All agents start LoggedOut.
    /// Errors: duplicate queue (tenant, name) or agent (tenant, id), an agent serving a queue unknown in
    /// its tenant, an overflow target unknown in the queue's tenant.
    pub fn new(spec: AcdSpec, seed: u64, now: Instant, wall_ms: i64) -> Result<Acd, AcdError> {
        let mut acd = Acd {
            base: now,
            base_wall_ms: wall_ms,
            rng: Rng::seeded(seed),
            queues: Vec::with_capacity(spec.queues.len()),
            queue_ix: HashMap::new(),
            agents: Vec::with_capacity(spec.agents.len()),
            agent_ix: HashMap::new(),
            skill_ix: HashMap::new(),
            entries: HashMap::new(),
            calls: HashMap::new(),
            talks: HashMap::new(),
            // ids unique across restarts (callback ids are persisted): start from the wall clock
            next_uid: (wall_ms.max(0) as u64).saturating_mul(1000).max(1),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            actions: VecDeque::new(),
            logs: VecDeque::new(),
            scratch: Vec::new(),
        };
        for qs in spec.queues {
            let ix = acd.queues.len() as u32;
            let by_name = acd.queue_ix.entry(qs.tenant.clone()).or_default();
            if by_name.insert(qs.name.clone(), ix).is_some() {
                return Err(bad(format!("queue {:?} defined twice in tenant {:?}", qs.name, qs.tenant)));
            }
            let mut reqs: Vec<Req> = Vec::new();
            for r in &qs.skills {
                let skill = intern(&mut acd.skill_ix, &r.skill);
                let mut relax: Vec<(Ticks, u8)> = r.relax.iter().map(|&(d, l)| (ticks(d), l)).collect();
                relax.sort();
                reqs.push(Req { skill, level: r.level, relax });
            }
            let relax_points = relax_points(&reqs);
            let g = Group { skill: None, reqs, relax_points, by_prio: Default::default() };
            acd.queues.push(Queue {
                max_wait: qs.max_wait.map(ticks),
                ring: ticks(qs.ring_timeout),
                wrap: ticks(qs.wrapup),
                announce: qs.announce_every.filter(|d| !d.is_zero()).map(ticks),
                spec: qs,
                groups: vec![g],
                line: Default::default(),
                ready: Default::default(),
                rr_last: None,
                members: Vec::new(),
                logged_in: 0,
                handle_ms: DEFAULT_HANDLE_TIME.as_millis() as f64,
                overflow_to: None,
            });
        }
        for i in 0..acd.queues.len() {
            if let OnMaxWait::Overflow(target) = &acd.queues[i].spec.on_max_wait {
                let t = acd
                    .queue_ix
                    .get(&acd.queues[i].spec.tenant)
                    .and_then(|m| m.get(target))
                    .copied()
                    .ok_or_else(|| {
                        bad(format!(
                            "queue {:?} overflows to {:?}, which is not a queue of tenant {:?}",
                            acd.queues[i].spec.name, target, acd.queues[i].spec.tenant
                        ))
                    })?;
                acd.queues[i].overflow_to = Some(t);
            }
        }
        for (i, a) in spec.agents.into_iter().enumerate() {
            let ix = i as u32;
            let same = acd.agent_ix.entry(a.id.clone()).or_default();
            if same.iter().any(|&o| acd.agents[o as usize].spec.tenant == a.tenant) {
                return Err(bad(format!("agent {:?} defined twice in tenant {:?}", a.id, a.tenant)));
            }
            same.push(ix);
            let mut skills: Vec<(u32, u8)> = Vec::new();
            for (s, l) in &a.skills {
                let id = intern(&mut acd.skill_ix, s);
                match skills.iter_mut().find(|x| x.0 == id) {
                    Some(x) => x.1 = x.1.max(*l),
                    None => skills.push((id, *l)),
                }
            }
            skills.sort();
            let mut members = Vec::new();
            for (qname, penalty) in &a.queues {
                let q = acd.queue_ix.get(&a.tenant).and_then(|m| m.get(qname)).copied().ok_or_else(|| {
                    bad(format!("agent {:?} serves {:?}, which is not a queue of tenant {:?}", a.id, qname, a.tenant))
                })?;
                if members.iter().any(|m: &Member| m.queue == q) {
                    continue;
                }
                acd.queues[q as usize].members.push(ix);
                members.push(Member { queue: q, penalty: *penalty, calls: 0, talk_ms: 0, key: None });
            }
            acd.agents.push(Agent {
                spec: a,
                state: AgentState::LoggedOut,
                skills,
                members,
                idle_since: 0,
                misses: 0,
                offer: None,
                offer_no: 0,
                wrap_no: 0,
                wrap_start: 0,
                wrap_queue: 0,
                wrap_talk_ms: 0,
                pending_logout: None,
                pending_not_ready: None,
                last_call: None,
            });
        }
        Ok(acd)
    }

    // ---------------------------------------------------------------- lookups

    /// The agent with this id (the first one if several tenants use the id; see [`Acd::agent_in`]).
    pub fn agent(&self, id: &str) -> Option<AgentRef> {
        self.agent_ix.get(id).and_then(|v| v.first()).map(|&i| AgentRef(i))
    }

    /// The agent with this id in this tenant.
    pub fn agent_in(&self, tenant: &str, id: &str) -> Option<AgentRef> {
        self.agent_ix
            .get(id)?
            .iter()
            .find(|&&i| self.agents[i as usize].spec.tenant == tenant)
            .map(|&i| AgentRef(i))
    }

    pub fn agent_by_extension(&self, tenant: Option<&str>, ext: &str) -> Option<AgentRef> {
        self.agents
            .iter()
            .position(|a| a.spec.extension == ext && tenant.is_none_or(|t| t == a.spec.tenant))
            .map(|i| AgentRef(i as u32))
    }

    /// Panics if `a` is not an agent of this ACD (an `AgentRef` only comes from it).
    pub fn agent_spec(&self, a: AgentRef) -> &AgentSpec {
        &self.agents[a.0 as usize].spec
    }

    /// Panics if `a` is not an agent of this ACD.
    pub fn agent_state(&self, a: AgentRef) -> &AgentState {
        &self.agents[a.0 as usize].state
    }

    /// Consecutive misses of this agent so far.
    pub fn agent_misses(&self, a: AgentRef) -> Option<u32> {
        self.agents.get(a.0 as usize).map(|x| x.misses)
    }

    pub fn agents(&self) -> impl Iterator<Item = (AgentRef, &AgentSpec, &AgentState)> {
        self.agents.iter().enumerate().map(|(i, a)| (AgentRef(i as u32), &a.spec, &a.state))
    }

    // ---------------------------------------------------------------- time and output plumbing

    fn tk(&self, now: Instant) -> Ticks {
        match now.checked_duration_since(self.base) {
            Some(d) => ticks(d),
            None => -ticks(self.base.saturating_duration_since(now)),
        }
    }

    fn wall(&self, t: Ticks) -> i64 {
        self.base_wall_ms + t.div_euclid(NS_PER_MS)
    }

    fn ticks_of_wall(&self, wall_ms: i64) -> Ticks {
        (wall_ms - self.base_wall_ms).saturating_mul(NS_PER_MS)
    }

    fn instant(&self, t: Ticks) -> Instant {
        self.base + Duration::from_nanos(t.max(0) as u64)
    }

    /// Whether a timer still means something (timers are never cancelled, they go stale).
    fn timer_live(&self, timer: &Timer) -> bool {
        match *timer {
            Timer::Offer { agent, no } => self.agents[agent as usize].offer.is_some_and(|o| o.no == no),
            Timer::Wrapup { agent, no } => {
                let a = &self.agents[agent as usize];
                a.state == AgentState::Wrapup && a.wrap_no == no
            }
            Timer::MaxWait { uid, join } | Timer::Announce { uid, join } => {
                self.entries.get(&uid).is_some_and(|e| e.join == join && e.call.is_some())
            }
            Timer::Relax { uid, join } => self.entries.get(&uid).is_some_and(|e| e.join == join),
            Timer::CallbackDue { uid, attempts } => self.entries.get(&uid).is_some_and(|e| {
                e.status == Status::Parked && e.callback.as_ref().map(|c| c.attempts) == Some(attempts)
            }),
        }
    }

    /// Drop stale timers from the head of the heap so that [`Acd::poll_timeout`] is exact.
    fn prune(&mut self) {
        while let Some(Reverse((_, _, t))) = self.timers.peek() {
            if self.timer_live(t) {
                break;
            }
            self.timers.pop();
        }
    }

    fn timer(&mut self, at: Ticks, t: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, t)));
    }

    fn log_q(&mut self, t: Ticks, q: u32, call: &str, agent: Option<u32>, kind: QueueEventKind) {
        let qs = &self.queues[q as usize].spec;
        let ev = QueueEvent {
            at_ms: self.wall(t),
            tenant: qs.tenant.clone(),
            queue: qs.name.clone(),
            call: call.to_string(),
            agent: agent.map(|a| self.agents[a as usize].spec.id.clone()).unwrap_or_default(),
            kind,
        };
        self.logs.push_back(ev);
    }

    /// The next action for the core.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.prune();
        self.actions.pop_front()
    }

    /// The next queue-log row.
    pub fn poll_log(&mut self) -> Option<QueueEvent> {
        self.logs.pop_front()
    }

    /// When [`Acd::handle_timeout`] wants to run next. Exact once the pending actions have been drained
    /// with [`Acd::poll_action`] (stale timers are dropped then); before that it may be early, and
    /// `handle_timeout` then finds nothing to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| self.instant(*at))
    }

    // ---------------------------------------------------------------- agent state and indexes

    /// Change an agent's state: keeps the ready indexes and the logged-in counts, emits the CTI action
    /// and the log row, evicts the callers of leave-empty queues that lost their last agent.
    fn set_state(&mut self, t: Ticks, a: u32, state: AgentState, reason: &str) {
        let ai = a as usize;
        let was_ready = self.agents[ai].state == AgentState::Ready;
        let was_out = self.agents[ai].state == AgentState::LoggedOut;
        let is_ready = state == AgentState::Ready;
        let is_out = state == AgentState::LoggedOut;
        if was_ready && !is_ready {
            self.remove_ready(a);
        }
        self.agents[ai].state = state.clone();
        if is_ready && !was_ready {
            self.insert_ready(a);
        }
        let reason = match &state {
            AgentState::NotReady(r) => r.clone(),
            _ => reason.to_string(),
        };
        let agent = &self.agents[ai].spec;
        self.logs.push_back(QueueEvent {
            at_ms: self.wall(t),
            tenant: agent.tenant.clone(),
            queue: String::new(),
            call: String::new(),
            agent: agent.id.clone(),
            kind: QueueEventKind::AgentState { state: state.name().to_string(), reason: reason.clone() },
        });
        self.actions.push_back(Action::AgentState { agent: AgentRef(a), state, reason });
        if was_out != is_out {
            let mut emptied = Vec::new();
            for m in 0..self.agents[ai].members.len() {
                let q = self.agents[ai].members[m].queue as usize;
                if is_out {
                    self.queues[q].logged_in -= 1;
                    if self.queues[q].logged_in == 0 && self.queues[q].spec.leave_empty {
                        emptied.push(q as u32);
                    }
                } else {
                    self.queues[q].logged_in += 1;
                }
            }
            for q in emptied {
                self.evict(t, q);
            }
        }
    }

    fn ready_key(&self, a: u32, m: usize) -> ReadyKey {
        let ag = &self.agents[a as usize];
        let mem = &ag.members[m];
        let p = mem.penalty;
        match self.queues[mem.queue as usize].spec.strategy {
            Strategy::LongestIdle => (p, ag.idle_since, 0, a),
            Strategy::RoundRobin | Strategy::Linear | Strategy::RingAll | Strategy::Random => (p, a as i64, 0, a),
            Strategy::FewestCalls => (p, mem.calls as i64, ag.idle_since, a),
            Strategy::LeastTalk => (p, mem.talk_ms as i64, ag.idle_since, a),
        }
    }

    fn insert_ready(&mut self, a: u32) {
        for m in 0..self.agents[a as usize].members.len() {
            let key = self.ready_key(a, m);
            let q = self.agents[a as usize].members[m].queue as usize;
            self.queues[q].ready.insert(key);
            self.agents[a as usize].members[m].key = Some(key);
        }
    }

    fn remove_ready(&mut self, a: u32) {
        let ag = &mut self.agents[a as usize];
        for m in ag.members.iter_mut() {
            if let Some(k) = m.key.take() {
                self.queues[m.queue as usize].ready.remove(&k);
            }
        }
    }

    /// Make an agent Ready and give it the best caller it qualifies for, if any.
    fn become_ready(&mut self, t: Ticks, a: u32, keep_idle: bool, reason: &str) {
        if !keep_idle {
            self.agents[a as usize].idle_since = t;
        }
        self.set_state(t, a, AgentState::Ready, reason);
    }

    // ---------------------------------------------------------------- line and routing indexes

    fn group_for(&mut self, q: u32, skill: Option<&str>) -> u32 {
        let sid = skill.filter(|s| !s.is_empty()).map(|s| intern(&mut self.skill_ix, s));
        let queue = &mut self.queues[q as usize];
        let sid = sid.filter(|s| !queue.groups[0].reqs.iter().any(|r| r.skill == *s));
        if let Some(i) = queue.groups.iter().position(|g| g.skill == sid) {
            return i as u32;
        }
        let mut reqs = queue.groups[0].reqs.clone();
        reqs.push(Req { skill: sid.expect("group 0 holds the skill-less callers"), level: 1, relax: Vec::new() });
        let relax_points = relax_points(&reqs);
        queue.groups.push(Group { skill: sid, reqs, relax_points, by_prio: Default::default() });
        (queue.groups.len() - 1) as u32
    }

    fn line_key(e: &Entry) -> (Reverse<u8>, Ticks, u64) {
        (Reverse(e.prio), e.line_t, e.uid)
    }

    fn line_insert(&mut self, uid: u64) {
        let e = &self.entries[&uid];
        self.queues[e.queue as usize].line.insert(Self::line_key(e));
    }

    fn line_remove(&mut self, uid: u64) {
        let e = &self.entries[&uid];
        self.queues[e.queue as usize].line.remove(&Self::line_key(e));
    }

    fn idx_insert(&mut self, uid: u64) {
        let e = &self.entries[&uid];
        let g = &mut self.queues[e.queue as usize].groups[e.group as usize];
        g.by_prio.entry(Reverse(e.prio)).or_default().insert((e.line_t, e.uid));
    }

    fn idx_remove(&mut self, uid: u64) {
        let e = &self.entries[&uid];
        let g = &mut self.queues[e.queue as usize].groups[e.group as usize];
        if let Some(set) = g.by_prio.get_mut(&Reverse(e.prio)) {
            set.remove(&(e.line_t, e.uid));
            if set.is_empty() {
                g.by_prio.remove(&Reverse(e.prio));
            }
        }
    }

    /// Remove an entry from everything (line, index, maps).
    fn drop_entry(&mut self, uid: u64) -> Option<Entry> {
        let e = self.entries.get(&uid)?;
        match e.status {
            Status::Waiting => {
                self.idx_remove(uid);
                self.line_remove(uid);
            }
            Status::Offered { .. } | Status::Dialing { .. } => self.line_remove(uid),
            Status::Parked => {}
        }
        let e = self.entries.remove(&uid)?;
        if let Some(c) = e.call {
            if self.calls.get(&c) == Some(&uid) {
                self.calls.remove(&c);
            }
        }
        Some(e)
    }

    fn rank(&self, uid: u64) -> Option<u32> {
        let e = self.entries.get(&uid)?;
        if e.status == Status::Parked {
            return None;
        }
        let q = &self.queues[e.queue as usize];
        Some(q.line.range(..Self::line_key(e)).count() as u32 + 1)
    }

    /// Offer a routable caller to the agents the queue's strategy picks. True if offered.
    fn route_entry(&mut self, t: Ticks, uid: u64, exclude: &[u32]) -> bool {
        let Some(e) = self.entries.get(&uid) else { return false };
        if e.status != Status::Waiting {
            return false;
        }
        let q = &self.queues[e.queue as usize];
        let reqs = &q.groups[e.group as usize].reqs;
        let mut picks = std::mem::take(&mut self.scratch);
        picks.clear();
        select(q, reqs, t - e.line_t, exclude, &self.agents, &mut self.rng, &mut picks);
        let found = !picks.is_empty();
        if found {
            self.offer(t, uid, &picks);
        }
        self.scratch = picks;
        found
    }

    /// An agent is Ready: give it callers (the best first) until it is no longer Ready or none fits.
    fn route_agent(&mut self, t: Ticks, a: u32) {
        loop {
            let ag = &self.agents[a as usize];
            if ag.state != AgentState::Ready {
                return;
            }
            let mut best: Option<(Reverse<u8>, Ticks, u64)> = None;
            for m in &ag.members {
                let q = &self.queues[m.queue as usize];
                for g in &q.groups {
                    for (prio, set) in &g.by_prio {
                        if let Some(b) = best {
                            if *prio > b.0 {
                                break; // lower priority than the best found: cannot win
                            }
                        }
                        let Some(&(lt, uid)) = set.first() else { continue };
                        let key = (*prio, lt, uid);
                        if best.is_none_or(|b| key < b) && ag.qualifies(&g.reqs, t - lt) {
                            best = Some(key);
                            break;
                        }
                        // the oldest of this priority does not fit this agent: none of it does
                    }
                }
            }
            let Some((_, _, uid)) = best else { return };
            if !self.route_entry(t, uid, &[]) {
                return; // cannot happen (the agent qualifies); never loop
            }
        }
    }

    fn offer(&mut self, t: Ticks, uid: u64, picks: &[u32]) {
        self.idx_remove(uid);
        let e = self.entries.get_mut(&uid).expect("routable entry");
        let q = e.queue;
        let wait = t - e.line_t;
        let cg = e.info.cg_id.clone();
        if let Some(cb) = &e.callback {
            let a = picks[0];
            e.status = Status::Dialing { agent: a, since: t };
            let number = cb.number.clone();
            self.reserve(t, a, uid, uid, t + ticks(CALLBACK_DIAL_TIMEOUT), "callback");
            self.log_q(t, q, &cg, Some(a), QueueEventKind::Offer { wait_ms: ms(wait) });
            let qs = &self.queues[q as usize].spec;
            self.actions.push_back(Action::CallbackDue {
                callback: uid,
                agent: AgentRef(a),
                number,
                tenant: qs.tenant.clone(),
                queue: qs.name.clone(),
            });
        } else {
            let call = e.call.expect("a caller entry has a call");
            e.status = Status::Offered { agents: picks.to_vec(), since: t };
            let ring = self.queues[q as usize].ring;
            for &a in picks {
                self.reserve(t, a, uid, call, t + ring, "offer");
                self.log_q(t, q, &cg, Some(a), QueueEventKind::Offer { wait_ms: ms(wait) });
                self.actions.push_back(Action::Offer {
                    call,
                    agent: AgentRef(a),
                    queue: self.queues[q as usize].spec.name.clone(),
                    wait: Duration::from_nanos(wait.max(0) as u64),
                });
            }
        }
        if let Some(&last) = picks.last() {
            self.queues[q as usize].rr_last = Some(last);
        }
    }

    fn reserve(&mut self, t: Ticks, a: u32, uid: u64, shown: CallRef, deadline: Ticks, reason: &str) {
        let ag = &mut self.agents[a as usize];
        ag.offer_no += 1;
        let no = ag.offer_no;
        ag.offer = Some(OfferRef { uid, since: t, no });
        self.set_state(t, a, AgentState::Reserved(shown), reason);
        self.timer(deadline, Timer::Offer { agent: a, no });
    }

    /// End agent `a`'s offer of entry `uid`: logs Miss (if a reason is given), emits StopOffer (if
    /// `stop`), takes `a` off the entry. The agent's state is the caller's business. True when the
    /// entry has no agent left on it.
    fn end_offer(&mut self, t: Ticks, uid: u64, a: u32, reason: Option<MissReason>, stop: bool) -> bool {
        let off = self.agents[a as usize].offer.take();
        let Some(e) = self.entries.get_mut(&uid) else { return true };
        let shown = e.call.unwrap_or(uid);
        let q = e.queue;
        let cg = e.info.cg_id.clone();
        let empty = match &mut e.status {
            Status::Offered { agents, .. } => {
                agents.retain(|&x| x != a);
                agents.is_empty()
            }
            _ => true,
        };
        if let Some(r) = reason {
            let ring = off.map(|o| t - o.since).unwrap_or(0);
            self.log_q(t, q, &cg, Some(a), QueueEventKind::Miss { reason: r, ring_ms: ms(ring) });
        }
        if stop {
            self.actions.push_back(Action::StopOffer { call: shown, agent: AgentRef(a) });
        }
        empty
    }

    /// Put an entry whose offers all ended back into the routable line (without routing).
    fn back_in_line(&mut self, uid: u64) {
        if let Some(e) = self.entries.get_mut(&uid) {
            if matches!(e.status, Status::Offered { .. } | Status::Dialing { .. }) {
                e.status = Status::Waiting;
                self.idx_insert(uid);
            }
        }
    }

    /// After an entry is back in line: apply a maximum wait that ran out meanwhile, else route it.
    fn reroute(&mut self, t: Ticks, uid: u64, exclude: &[u32]) {
        let Some(e) = self.entries.get_mut(&uid) else { return };
        if e.status != Status::Waiting {
            return;
        }
        if e.max_wait_pending {
            e.max_wait_pending = false;
            self.apply_max_wait(t, uid);
            return;
        }
        self.route_entry(t, uid, exclude);
    }

    /// Agents that missed an offer (timeout, busy, declined, unreachable): Miss rows, consecutive-miss
    /// rule, the caller to the next agent, then the agents (if Ready) to the next caller.
    fn miss_agents(&mut self, t: Ticks, uid: u64, agents: &[u32], reason: MissReason, stop: bool) {
        let Some(e) = self.entries.get(&uid) else { return };
        let q = e.queue as usize;
        let ring_all = self.queues[q].spec.strategy == Strategy::RingAll;
        let max_misses = self.queues[q].spec.max_misses;
        let mut empty = false;
        for &a in agents {
            empty = self.end_offer(t, uid, a, Some(reason), stop);
            let ag = &mut self.agents[a as usize];
            if reason != MissReason::Withdrawn {
                ag.misses += 1;
            }
            if max_misses > 0 && ag.misses >= max_misses {
                ag.misses = 0;
                self.set_state(t, a, AgentState::NotReady("missed".into()), "missed");
            } else {
                self.become_ready(t, a, false, reason.as_str());
            }
        }
        if empty {
            self.back_in_line(uid);
            self.reroute(t, uid, if ring_all { &[] } else { agents });
        }
        for &a in agents {
            self.route_agent(t, a);
        }
    }

    /// Withdraw the offer an agent holds (it logs out or goes not ready while ringing): Miss(Withdrawn),
    /// StopOffer. Returns the entry to re-route once the agent's new state is set.
    fn withdraw(&mut self, t: Ticks, a: u32) -> Option<u64> {
        let off = self.agents[a as usize].offer?;
        let empty = self.end_offer(t, off.uid, a, Some(MissReason::Withdrawn), true);
        if empty {
            self.back_in_line(off.uid);
            Some(off.uid)
        } else {
            None
        }
    }

    /// Offers ended by the caller's side (abandon, answered elsewhere, callback requested): the agents
    /// go back to Ready keeping their idle time. Returns them for routing.
    fn release_offers(&mut self, t: Ticks, uid: u64, except: Option<u32>, reason: &str) -> Vec<u32> {
        let agents = match self.entries.get(&uid).map(|e| &e.status) {
            Some(Status::Offered { agents, .. }) => agents.clone(),
            Some(Status::Dialing { agent, .. }) => vec![*agent],
            _ => Vec::new(),
        };
        let mut freed = Vec::new();
        for a in agents {
            if Some(a) == except {
                continue;
            }
            self.end_offer(t, uid, a, None, true);
            self.become_ready(t, a, true, reason);
            freed.push(a);
        }
        freed
    }

    fn evict(&mut self, t: Ticks, q: u32) {
        let uids: Vec<u64> = self.queues[q as usize]
            .line
            .iter()
            .map(|k| k.2)
            .filter(|u| self.entries.get(u).is_some_and(|e| e.call.is_some()))
            .collect();
        for uid in uids {
            let freed = self.release_offers(t, uid, None, "evicted");
            let e = self.drop_entry(uid).expect("in line");
            let caller = e.info.caller.clone();
            self.log_q(t, q, &e.info.cg_id, None, QueueEventKind::Refused { caller, reason: "empty".into() });
            self.actions.push_back(Action::Evicted { call: e.call.expect("caller") });
            for a in freed {
                self.route_agent(t, a);
            }
        }
    }

    fn schedule_entry_timers(&mut self, t: Ticks, uid: u64) {
        let e = &self.entries[&uid];
        let q = &self.queues[e.queue as usize];
        let (join, queue_t) = (e.join, e.queue_t);
        let mut todo: Vec<(Ticks, Timer)> = Vec::new();
        if e.call.is_some() {
            if let Some(mw) = q.max_wait {
                todo.push((queue_t + mw, Timer::MaxWait { uid, join }));
            }
            if let Some(every) = q.announce {
                todo.push((queue_t + every, Timer::Announce { uid, join }));
            }
        }
        if let Some(at) = next_relax(&q.groups[e.group as usize], t - e.line_t) {
            todo.push((e.line_t + at, Timer::Relax { uid, join }));
        }
        for (at, tm) in todo {
            self.timer(at, tm);
        }
    }

    /// Whether queue `q` takes another caller now.
    fn refusal(&self, q: u32) -> Option<Refusal> {
        let queue = &self.queues[q as usize];
        if queue.spec.max_len.is_some_and(|m| queue.line.len() >= m) {
            return Some(Refusal::Full);
        }
        if !queue.spec.join_empty && queue.logged_in == 0 {
            return Some(Refusal::Empty);
        }
        None
    }

    /// Put an existing entry (already out of any line) into queue `q` as a new join.
    fn join(&mut self, t: Ticks, uid: u64, q: u32) -> u32 {
        let skill = self.entries[&uid].info.skill.clone();
        let group = self.group_for(q, skill.as_deref());
        let e = self.entries.get_mut(&uid).expect("entry");
        e.queue = q;
        e.group = group;
        e.queue_t = t;
        e.join += 1;
        e.status = Status::Waiting;
        e.max_wait_pending = false;
        self.line_insert(uid);
        self.idx_insert(uid);
        let position = self.rank(uid).unwrap_or(1);
        let e = &self.entries[&uid];
        let kind = QueueEventKind::Enter {
            caller: e.info.caller.clone(),
            priority: e.prio,
            position,
            skill: e.info.skill.clone().unwrap_or_default(),
        };
        let cg = e.info.cg_id.clone();
        self.log_q(t, q, &cg, None, kind);
        self.schedule_entry_timers(t, uid);
        position
    }

    fn apply_max_wait(&mut self, t: Ticks, uid: u64) {
        let e = &self.entries[&uid];
        let q = e.queue;
        let wait = ms(t - e.line_t);
        let cg = e.info.cg_id.clone();
        let Some(call) = e.call else { return };
        let then = self.queues[q as usize].spec.on_max_wait.clone();
        if let (OnMaxWait::Overflow(to), Some(target)) = (&then, self.queues[q as usize].overflow_to) {
            if self.refusal(target).is_none() && target != q {
                self.log_q(t, q, &cg, None, QueueEventKind::Overflow { to: to.clone(), wait_ms: wait });
                self.idx_remove(uid);
                self.line_remove(uid);
                self.join(t, uid, target);
                self.route_entry(t, uid, &[]);
                return;
            }
            self.log_q(t, q, &cg, None, QueueEventKind::Timeout { wait_ms: wait });
            self.drop_entry(uid);
            self.actions.push_back(Action::MaxWait { call, then: OnMaxWait::Hangup });
            return;
        }
        self.log_q(t, q, &cg, None, QueueEventKind::Timeout { wait_ms: wait });
        if then != OnMaxWait::Callback {
            // the core plays the message / hangs up: the caller leaves the line now
            self.drop_entry(uid);
        }
        self.actions.push_back(Action::MaxWait { call, then });
    }

    fn expected_wait_at(&self, q: u32, position: u32) -> Option<Duration> {
        let queue = &self.queues[q as usize];
        let staffed = queue
            .members
            .iter()
            .filter(|&&a| !matches!(self.agents[a as usize].state, AgentState::LoggedOut | AgentState::NotReady(_)))
            .count();
        if staffed == 0 {
            return None;
        }
        let ms = position as f64 * queue.handle_ms / staffed as f64;
        Some(Duration::from_millis(ms.round() as u64))
    }

    fn sample_handle(&mut self, q: u32, handle_ms: u64) {
        let h = &mut self.queues[q as usize].handle_ms;
        *h = HANDLE_EWMA_ALPHA * handle_ms as f64 + (1.0 - HANDLE_EWMA_ALPHA) * *h;
    }

    fn lookup(&self, tenant: &str, queue: &str) -> Option<u32> {
        self.queue_ix.get(tenant)?.get(queue).copied()
    }

    fn agent_ix(&self, a: AgentRef) -> Result<u32, AcdError> {
        if (a.0 as usize) < self.agents.len() {
            Ok(a.0)
        } else {
            Err(AcdError::UnknownAgent(format!("#{}", a.0)))
        }
    }

    fn wrong(&self, a: u32, wanted: &'static str) -> AcdError {
        let ag = &self.agents[a as usize];
        AcdError::WrongState { agent: ag.spec.id.clone(), state: ag.state.name(), wanted }
    }
}

fn intern(ix: &mut HashMap<String, u32>, s: &str) -> u32 {
    if let Some(&i) = ix.get(s) {
        return i;
    }
    let i = ix.len() as u32;
    ix.insert(s.to_string(), i);
    i
}

fn relax_points(reqs: &[Req]) -> Vec<Ticks> {
    let mut v: Vec<Ticks> = reqs.iter().flat_map(|r| r.relax.iter().map(|x| x.0)).collect();
    v.sort();
    v.dedup();
    v
}

/// The first relaxation time strictly after `waited`.
fn next_relax(g: &Group, waited: Ticks) -> Option<Ticks> {
    g.relax_points.iter().copied().find(|&p| p > waited)
}

mod api;

#[cfg(test)]
mod tests;
