//! The public operations of [`Acd`].

use super::*;

impl Acd {
    // ---------------------------------------------------------------- agent control

    /// Log an agent in: Ready when `reason == "register"` (the profile logs agents in on registration),
    /// NotReady("login") otherwise. Only from LoggedOut.
    pub fn login(&mut self, now: Instant, a: AgentRef, reason: &str) -> Result<(), AcdError> {
        let a = self.agent_ix(a)?;
        let t = self.tk(now);
        if self.agents[a as usize].state != AgentState::LoggedOut {
            return Err(self.wrong(a, "logged_out"));
        }
        let ag = &mut self.agents[a as usize];
        ag.misses = 0;
        ag.pending_logout = None;
        ag.pending_not_ready = None;
        if reason == "register" {
            self.become_ready(t, a, false, reason);
            self.route_agent(t, a);
        } else {
            self.set_state(t, a, AgentState::NotReady("login".into()), reason);
        }
        Ok(())
    }

    /// Log an agent out (CTI, or its phone unregistered). Allowed in any logged-in state: while
    /// Reserved the offer is withdrawn (Miss Withdrawn, StopOffer, the caller goes to the next agent);
    /// while Talking/Held it takes effect when the call ends (no wrap-up); in wrap-up it ends it.
    pub fn logout(&mut self, now: Instant, a: AgentRef, reason: &str) -> Result<(), AcdError> {
        let a = self.agent_ix(a)?;
        let t = self.tk(now);
        match self.agents[a as usize].state.clone() {
            AgentState::LoggedOut => Err(self.wrong(a, "logged in")),
            AgentState::Talking(_) | AgentState::Held(_) => {
                self.agents[a as usize].pending_logout = Some(reason.to_string());
                Ok(())
            }
            AgentState::Reserved(_) => {
                let back = self.withdraw(t, a);
                self.set_state(t, a, AgentState::LoggedOut, reason);
                if let Some(uid) = back {
                    self.reroute(t, uid, &[a]);
                }
                Ok(())
            }
            AgentState::Wrapup => {
                self.end_wrapup(t, a, Next::LoggedOut(reason.to_string()));
                Ok(())
            }
            AgentState::Ready | AgentState::NotReady(_) => {
                self.set_state(t, a, AgentState::LoggedOut, reason);
                Ok(())
            }
        }
    }

    /// The agent is ready: from NotReady, or from Wrapup (ends it early). While Talking/Held it cancels
    /// a pending not-ready. Ready already: nothing to do.
    pub fn ready(&mut self, now: Instant, a: AgentRef) -> Result<(), AcdError> {
        let a = self.agent_ix(a)?;
        let t = self.tk(now);
        match self.agents[a as usize].state {
            AgentState::Ready => Ok(()),
            AgentState::NotReady(_) => {
                self.become_ready(t, a, false, "cti");
                self.route_agent(t, a);
                Ok(())
            }
            AgentState::Wrapup => {
                self.end_wrapup(t, a, Next::Ready("cti"));
                Ok(())
            }
            AgentState::Talking(_) | AgentState::Held(_) => {
                self.agents[a as usize].pending_not_ready = None;
                Ok(())
            }
            AgentState::LoggedOut | AgentState::Reserved(_) => Err(self.wrong(a, "not_ready or wrapup")),
        }
    }

    /// The agent is not ready with a reason code: from Ready, NotReady (changes the reason) or Wrapup
    /// (ends it); while Reserved the offer is withdrawn; while Talking/Held it applies at the end of the
    /// wrap-up after the call.
    pub fn not_ready(&mut self, now: Instant, a: AgentRef, reason: &str) -> Result<(), AcdError> {
        let a = self.agent_ix(a)?;
        let t = self.tk(now);
        match self.agents[a as usize].state {
            AgentState::LoggedOut => Err(self.wrong(a, "logged in")),
            AgentState::Ready | AgentState::NotReady(_) => {
                self.set_state(t, a, AgentState::NotReady(reason.to_string()), reason);
                Ok(())
            }
            AgentState::Reserved(_) => {
                let back = self.withdraw(t, a);
                self.set_state(t, a, AgentState::NotReady(reason.to_string()), reason);
                if let Some(uid) = back {
                    self.reroute(t, uid, &[a]);
                }
                Ok(())
            }
            AgentState::Talking(_) | AgentState::Held(_) => {
                self.agents[a as usize].pending_not_ready = Some(reason.to_string());
                Ok(())
            }
            AgentState::Wrapup => {
                self.end_wrapup(t, a, Next::NotReady(reason.to_string()));
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------- callers

    /// A caller enters a queue. Returns its 1-based position (everyone in line counts: waiting, ringing,
    /// callbacks keeping their place). Refused (and logged) when the queue is full or empty by policy.
    /// A call already waiting in another queue moves (an Overflow row, keeping its place); a call still
    /// connected to an agent is first ended as a transfer to this queue.
    pub fn enqueue(&mut self, now: Instant, call: CallRef, tenant: &str, queue: &str, info: CallInfo) -> Result<u32, Refusal> {
        let t = self.tk(now);
        let Some(q) = self.lookup(tenant, queue) else { return Err(Refusal::UnknownQueue) };
        if self.talks.contains_key(&call) {
            self.finish_talk(t, call, |talk_ms| QueueEventKind::Transfer { to: queue.to_string(), talk_ms });
        }
        let moving = self.calls.get(&call).copied();
        if let Some(uid) = moving {
            if self.entries[&uid].queue == q {
                return Ok(self.rank(uid).unwrap_or(1));
            }
        }
        if let Some(r) = self.refusal(q) {
            let reason = match r {
                Refusal::Full => "full",
                _ => "empty",
            };
            self.log_q(t, q, &info.cg_id, None, QueueEventKind::Refused { caller: info.caller.clone(), reason: reason.into() });
            return Err(r);
        }
        let uid = match moving {
            Some(uid) => {
                let freed = self.release_offers(t, uid, None, "moved");
                let e = &self.entries[&uid];
                let (from, wait, cg) = (e.queue, ms(t - e.line_t), e.info.cg_id.clone());
                self.log_q(t, from, &cg, None, QueueEventKind::Overflow { to: queue.to_string(), wait_ms: wait });
                if self.entries[&uid].status == Status::Waiting {
                    self.idx_remove(uid);
                }
                self.line_remove(uid);
                let e = self.entries.get_mut(&uid).expect("entry");
                e.info = info;
                e.prio = e.info.priority;
                let position = self.join(t, uid, q);
                self.route_entry(t, uid, &[]);
                for a in freed {
                    self.route_agent(t, a);
                }
                return Ok(position);
            }
            None => {
                let uid = self.next_uid;
                self.next_uid += 1;
                uid
            }
        };
        self.entries.insert(
            uid,
            Entry {
                uid,
                call: Some(call),
                callback: None,
                queue: q,
                group: 0,
                prio: info.priority,
                info,
                line_t: t,
                queue_t: t,
                join: 0,
                status: Status::Parked,
                max_wait_pending: false,
            },
        );
        self.calls.insert(call, uid);
        let position = self.join(t, uid, q);
        self.route_entry(t, uid, &[]);
        Ok(position)
    }

    /// The caller hung up while waiting or while an agent rang (Abandon row; StopOffer for the ringing
    /// agents, which go back to Ready keeping their idle time). A connected call is ended "by caller".
    pub fn abandon(&mut self, now: Instant, call: CallRef) {
        let t = self.tk(now);
        if self.talks.contains_key(&call) {
            self.ended(now, call, "caller");
            return;
        }
        let Some(&uid) = self.calls.get(&call) else { return };
        let position = self.rank(uid).unwrap_or(0);
        let e = &self.entries[&uid];
        let (q, wait, cg) = (e.queue, ms(t - e.line_t), e.info.cg_id.clone());
        let freed = self.release_offers(t, uid, None, "abandon");
        self.log_q(t, q, &cg, None, QueueEventKind::Abandon { wait_ms: wait, position });
        self.drop_entry(uid);
        for a in freed {
            self.route_agent(t, a);
        }
    }

    /// The waiting caller asks to be called back on `number` and hangs up: the entry becomes a callback
    /// that keeps its place in line. Returns the callback id.
    pub fn request_callback(&mut self, now: Instant, call: CallRef, number: &str) -> Result<u64, AcdError> {
        let t = self.tk(now);
        let uid = *self.calls.get(&call).ok_or(AcdError::UnknownCall(call))?;
        let freed = self.release_offers(t, uid, None, "callback_requested");
        self.back_in_line(uid);
        self.calls.remove(&call);
        let wall = self.wall(t);
        let e = self.entries.get_mut(&uid).expect("entry");
        e.call = None;
        e.callback = Some(Cb { number: number.to_string(), attempts: 0, due_t: t });
        e.join += 1; // the caller's max-wait and announcement timers no longer apply
        e.max_wait_pending = false;
        let (q, cg) = (e.queue, e.info.cg_id.clone());
        self.log_q(t, q, &cg, None, QueueEventKind::CallbackRequested { number: number.to_string(), due_ms: wall });
        self.schedule_entry_timers(t, uid);
        for a in freed {
            self.route_agent(t, a);
        }
        Ok(uid)
    }

    /// A callback reservation for a set time (the citizen's or the agent's choice). Its place in line is
    /// its due time. Returns the callback id.
    pub fn schedule_callback(
        &mut self,
        now: Instant,
        tenant: &str,
        queue: &str,
        number: &str,
        due_wall_ms: i64,
        info: CallInfo,
    ) -> Result<u64, AcdError> {
        let t = self.tk(now);
        let q = self
            .lookup(tenant, queue)
            .ok_or_else(|| AcdError::UnknownQueue { tenant: tenant.into(), queue: queue.into() })?;
        let uid = self.next_uid;
        self.next_uid += 1;
        let due_t = self.ticks_of_wall(due_wall_ms);
        self.log_q(t, q, &info.cg_id, None, QueueEventKind::CallbackRequested { number: number.to_string(), due_ms: due_wall_ms });
        self.add_callback(t, uid, q, number, info, due_t, due_t, 0);
        Ok(uid)
    }

    /// Put back a callback stored before a restart (no log row: it was logged when requested).
    /// Ignored if the queue no longer exists or the id is already known.
    pub fn restore_callback(&mut self, now: Instant, cb: PendingCallback) {
        let t = self.tk(now);
        let Some(q) = self.lookup(&cb.tenant, &cb.queue) else { return };
        if self.entries.contains_key(&cb.id) {
            return;
        }
        self.next_uid = self.next_uid.max(cb.id + 1);
        let line_t = self.ticks_of_wall(cb.enqueued_ms);
        let due_t = self.ticks_of_wall(cb.due_ms);
        self.add_callback(t, cb.id, q, &cb.number, cb.info, line_t, due_t, cb.attempts);
    }

    #[allow(clippy::too_many_arguments)]
    fn add_callback(&mut self, t: Ticks, uid: u64, q: u32, number: &str, info: CallInfo, line_t: Ticks, due_t: Ticks, attempts: u32) {
        let group = self.group_for(q, info.skill.as_deref());
        self.entries.insert(
            uid,
            Entry {
                uid,
                call: None,
                callback: Some(Cb { number: number.to_string(), attempts, due_t }),
                queue: q,
                group,
                prio: info.priority,
                info,
                line_t,
                queue_t: t,
                join: 0,
                status: Status::Parked,
                max_wait_pending: false,
            },
        );
        if due_t <= t {
            self.callback_in_line(t, uid);
        } else {
            self.timer(due_t, Timer::CallbackDue { uid, attempts });
        }
    }

    fn callback_in_line(&mut self, t: Ticks, uid: u64) {
        let e = self.entries.get_mut(&uid).expect("entry");
        e.status = Status::Waiting;
        e.join += 1;
        self.line_insert(uid);
        self.idx_insert(uid);
        self.schedule_entry_timers(t, uid);
        self.route_entry(t, uid, &[]);
    }

    /// Every callback not yet completed, for the core to persist.
    pub fn pending_callbacks(&self) -> Vec<PendingCallback> {
        let mut v: Vec<PendingCallback> = self
            .entries
            .values()
            .filter_map(|e| {
                let cb = e.callback.as_ref()?;
                let q = &self.queues[e.queue as usize].spec;
                Some(PendingCallback {
                    id: e.uid,
                    tenant: q.tenant.clone(),
                    queue: q.name.clone(),
                    number: cb.number.clone(),
                    info: e.info.clone(),
                    enqueued_ms: self.wall(e.line_t),
                    due_ms: self.wall(cb.due_t),
                    attempts: cb.attempts,
                })
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// The outcome of dialling a due callback. `Some(call)`: the citizen answered on `call`, which is
    /// now connected to the reserved agent (CallbackConnect row; the call then ends with
    /// [`Acd::ended`]). `None`: the attempt failed (CallbackFailed row; the agent is released; retried
    /// after [`CALLBACK_RETRY`], keeping the place, up to [`CALLBACK_ATTEMPTS`] attempts).
    pub fn callback_result(&mut self, now: Instant, callback: u64, answered: Option<CallRef>) {
        let t = self.tk(now);
        let Some(e) = self.entries.get(&callback) else { return };
        let Status::Dialing { agent: a, .. } = e.status else { return };
        match answered {
            Some(call) => {
                let (q, wait, cg) = (e.queue, ms(t - e.line_t), e.info.cg_id.clone());
                self.agents[a as usize].offer = None;
                self.log_q(t, q, &cg, Some(a), QueueEventKind::CallbackConnect { wait_ms: wait });
                self.drop_entry(callback);
                self.connect(t, a, q, call, cg, "callback");
            }
            None => self.callback_failed(t, callback, "failed"),
        }
    }

    fn callback_failed(&mut self, t: Ticks, uid: u64, reason: &str) {
        let Some(e) = self.entries.get(&uid) else { return };
        let Status::Dialing { agent: a, .. } = e.status else { return };
        self.agents[a as usize].offer = None;
        self.line_remove(uid);
        let e = self.entries.get_mut(&uid).expect("entry");
        e.status = Status::Parked;
        let cb = e.callback.as_mut().expect("callback");
        cb.attempts += 1;
        let attempts = cb.attempts;
        let (q, cg) = (e.queue, e.info.cg_id.clone());
        self.log_q(t, q, &cg, Some(a), QueueEventKind::CallbackFailed { attempt: attempts, reason: reason.into() });
        if attempts >= CALLBACK_ATTEMPTS {
            self.entries.remove(&uid);
        } else {
            let due = t + ticks(CALLBACK_RETRY);
            let e = self.entries.get_mut(&uid).expect("entry");
            e.callback.as_mut().expect("callback").due_t = due;
            self.timer(due, Timer::CallbackDue { uid, attempts });
        }
        self.become_ready(t, a, true, "callback_failed");
        self.route_agent(t, a);
    }

    // ---------------------------------------------------------------- offers and calls

    /// The agent answered the offer: it talks with the caller (Connect row); the other agents of a
    /// ring-all get StopOffer. Error (the core hangs up the agent's leg) when the offer is not live:
    /// timed out, withdrawn, taken by another agent, or the caller left.
    pub fn answered(&mut self, now: Instant, call: CallRef, agent: AgentRef) -> Result<(), AcdError> {
        let a = self.agent_ix(agent)?;
        let t = self.tk(now);
        let not_offered = || AcdError::NotOffered { call, agent: self.agents[a as usize].spec.id.clone() };
        let Some(&uid) = self.calls.get(&call) else {
            return Err(if self.talks.contains_key(&call) { not_offered() } else { AcdError::UnknownCall(call) });
        };
        let e = &self.entries[&uid];
        let on = matches!(&e.status, Status::Offered { agents, .. } if agents.contains(&a));
        let off = self.agents[a as usize].offer;
        let Some(off) = off.filter(|o| on && o.uid == uid) else { return Err(not_offered()) };
        let (q, wait, cg) = (e.queue, ms(t - e.line_t), e.info.cg_id.clone());
        let freed = self.release_offers(t, uid, Some(a), "answered_elsewhere");
        self.agents[a as usize].offer = None;
        self.log_q(t, q, &cg, Some(a), QueueEventKind::Connect { wait_ms: wait, ring_ms: ms(t - off.since) });
        self.drop_entry(uid);
        self.connect(t, a, q, call, cg, "answer");
        for b in freed {
            self.route_agent(t, b);
        }
        Ok(())
    }

    fn connect(&mut self, t: Ticks, a: u32, q: u32, call: CallRef, cg_id: String, reason: &str) {
        let ag = &mut self.agents[a as usize];
        ag.misses = 0;
        if let Some(m) = ag.member(q) {
            ag.members[m].calls += 1;
        }
        ag.last_call = Some((cg_id.clone(), q));
        self.talks.insert(call, Talk { agent: a, queue: q, cg_id, since: t, hold_ms: 0, held_since: None });
        self.set_state(t, a, AgentState::Talking(call), reason);
    }

    /// The offer failed at the agent's side (busy, declined, unreachable, or no answer reported by the
    /// core): Miss row, the caller goes to the next agent, the consecutive-miss rule applies. Ignored if
    /// the offer is no longer live.
    pub fn missed(&mut self, now: Instant, call: CallRef, agent: AgentRef, reason: MissReason) {
        let t = self.tk(now);
        let Ok(a) = self.agent_ix(agent) else { return };
        let Some(&uid) = self.calls.get(&call) else { return };
        if self.agents[a as usize].offer.map(|o| o.uid) != Some(uid) {
            return;
        }
        self.miss_agents(t, uid, &[a], reason, false);
    }

    /// The agent put the caller on hold (`held`) or took it back.
    pub fn hold(&mut self, now: Instant, call: CallRef, held: bool) {
        let t = self.tk(now);
        let Some(talk) = self.talks.get_mut(&call) else { return };
        let a = talk.agent;
        match (held, talk.held_since) {
            (true, None) => {
                talk.held_since = Some(t);
                self.set_state(t, a, AgentState::Held(call), "hold");
            }
            (false, Some(since)) => {
                talk.hold_ms += ms(t - since);
                talk.held_since = None;
                self.set_state(t, a, AgentState::Talking(call), "unhold");
            }
            _ => {}
        }
    }

    /// The agent transferred the call to `to` (a number, an extension, a queue): Transfer row, the agent
    /// goes to wrap-up. (To queue the caller again, the core calls [`Acd::enqueue`].)
    pub fn transferred(&mut self, now: Instant, call: CallRef, to: &str) {
        let t = self.tk(now);
        let to = to.to_string();
        self.finish_talk(t, call, move |talk_ms| QueueEventKind::Transfer { to, talk_ms });
    }

    /// The conversation ended (`by`: "caller" / "agent" / "system"): Complete row, the agent goes to
    /// wrap-up. For a call still waiting or ringing this is an abandon.
    pub fn ended(&mut self, now: Instant, call: CallRef, by: &str) {
        let t = self.tk(now);
        if !self.talks.contains_key(&call) {
            if self.calls.contains_key(&call) {
                self.abandon(now, call);
            }
            return;
        }
        let hold = self.talks[&call].hold_ms
            + self.talks[&call].held_since.map(|s| ms(t - s)).unwrap_or(0);
        let by = by.to_string();
        self.finish_talk(t, call, move |talk_ms| QueueEventKind::Complete { talk_ms, hold_ms: hold, by });
    }

    fn finish_talk(&mut self, t: Ticks, call: CallRef, kind: impl FnOnce(u64) -> QueueEventKind) {
        let Some(talk) = self.talks.remove(&call) else { return };
        let a = talk.agent;
        let talk_ms = ms(t - talk.since);
        self.log_q(t, talk.queue, &talk.cg_id, Some(a), kind(talk_ms));
        let ag = &mut self.agents[a as usize];
        if let Some(m) = ag.member(talk.queue) {
            ag.members[m].talk_ms += talk_ms;
        }
        if let Some(reason) = ag.pending_logout.take() {
            ag.pending_not_ready = None;
            self.sample_handle(talk.queue, talk_ms);
            self.set_state(t, a, AgentState::LoggedOut, &reason);
            return;
        }
        let wrap = self.queues[talk.queue as usize].wrap;
        if wrap > 0 {
            let ag = &mut self.agents[a as usize];
            ag.wrap_no += 1;
            ag.wrap_start = t;
            ag.wrap_queue = talk.queue;
            ag.wrap_talk_ms = talk_ms;
            let no = ag.wrap_no;
            self.set_state(t, a, AgentState::Wrapup, "call_end");
            self.timer(t + wrap, Timer::Wrapup { agent: a, no });
        } else {
            self.sample_handle(talk.queue, talk_ms);
            match self.agents[a as usize].pending_not_ready.take() {
                Some(r) => self.set_state(t, a, AgentState::NotReady(r.clone()), &r),
                None => {
                    self.become_ready(t, a, false, "call_end");
                    self.route_agent(t, a);
                }
            }
        }
    }

    fn end_wrapup(&mut self, t: Ticks, a: u32, next: Next) {
        let ag = &mut self.agents[a as usize];
        let wrap_ms = ms(t - ag.wrap_start);
        let (q, talk_ms) = (ag.wrap_queue, ag.wrap_talk_ms);
        let pending = ag.pending_not_ready.take();
        let cg = ag.last_call.as_ref().map(|c| c.0.clone()).unwrap_or_default();
        self.log_q(t, q, &cg, Some(a), QueueEventKind::WrapupEnd { wrap_ms });
        self.sample_handle(q, talk_ms + wrap_ms);
        let next = match (next, pending) {
            (Next::Ready("wrapup_end"), Some(r)) => Next::NotReady(r),
            (n, _) => n,
        };
        match next {
            Next::Ready(reason) => {
                self.become_ready(t, a, false, reason);
                self.route_agent(t, a);
            }
            Next::NotReady(r) => self.set_state(t, a, AgentState::NotReady(r.clone()), &r),
            Next::LoggedOut(r) => self.set_state(t, a, AgentState::LoggedOut, &r),
        }
    }

    /// The agent's disposition of a call (subject, settled, VOC flag) for the log.
    pub fn disposition(&mut self, now: Instant, call_cg_id: &str, agent: AgentRef, subject: &str, settled: bool, flag: &str) {
        let t = self.tk(now);
        let Ok(a) = self.agent_ix(agent) else { return };
        let kind = QueueEventKind::Disposition { subject: subject.into(), settled, flag: flag.into() };
        match self.agents[a as usize].last_call.clone() {
            Some((cg, q)) if cg == call_cg_id => self.log_q(t, q, call_cg_id, Some(a), kind),
            _ => {
                let ag = &self.agents[a as usize].spec;
                self.logs.push_back(QueueEvent {
                    at_ms: self.wall(t),
                    tenant: ag.tenant.clone(),
                    queue: String::new(),
                    call: call_cg_id.to_string(),
                    agent: ag.id.clone(),
                    kind,
                });
            }
        }
    }

    // ---------------------------------------------------------------- queries

    /// A queue's specification (e.g. its `sl_threshold` and `short_abandon` for the statistics).
    pub fn queue_spec(&self, tenant: &str, queue: &str) -> Option<&QueueSpec> {
        self.lookup(tenant, queue).map(|q| &self.queues[q as usize].spec)
    }

    /// Everyone in line in the queue (waiting, ringing, callbacks keeping their place).
    pub fn waiting(&self, tenant: &str, queue: &str) -> usize {
        self.lookup(tenant, queue).map(|q| self.queues[q as usize].line.len()).unwrap_or(0)
    }

    /// A waiting caller's 1-based position in its queue (priority first, then place in line).
    pub fn position(&self, call: CallRef) -> Option<u32> {
        self.rank(*self.calls.get(&call)?)
    }

    /// The longest wait of anyone in line in the queue.
    pub fn longest_wait(&self, now: Instant, tenant: &str, queue: &str) -> Option<Duration> {
        let q = self.lookup(tenant, queue)?;
        let oldest = self.queues[q as usize].line.iter().map(|k| k.1).min()?;
        Some(Duration::from_nanos((self.tk(now) - oldest).max(0) as u64))
    }

    /// Expected wait for the `position`-th in line of the queue (see the module documentation).
    pub fn expected_wait(&self, tenant: &str, queue: &str, position: u32) -> Option<Duration> {
        self.expected_wait_at(self.lookup(tenant, queue)?, position)
    }

    pub fn queue_snapshot(&self, now: Instant, tenant: &str, queue: &str) -> Option<QueueSnapshot> {
        let q = self.lookup(tenant, queue)?;
        let queue_ = &self.queues[q as usize];
        let mut s = QueueSnapshot {
            tenant: tenant.to_string(),
            queue: queue.to_string(),
            waiting: queue_.line.len(),
            longest_wait: self.longest_wait(now, tenant, queue),
            logged_in: queue_.logged_in as usize,
            ready: 0,
            not_ready: 0,
            reserved: 0,
            talking: 0,
            held: 0,
            wrapup: 0,
            expected_wait: self.expected_wait_at(q, queue_.line.len() as u32 + 1),
            handle_time: Duration::from_millis(queue_.handle_ms.round() as u64),
        };
        for &a in &queue_.members {
            match self.agents[a as usize].state {
                AgentState::LoggedOut => {}
                AgentState::Ready => s.ready += 1,
                AgentState::NotReady(_) => s.not_ready += 1,
                AgentState::Reserved(_) => s.reserved += 1,
                AgentState::Talking(_) => s.talking += 1,
                AgentState::Held(_) => s.held += 1,
                AgentState::Wrapup => s.wrapup += 1,
            }
        }
        Some(s)
    }

    // ---------------------------------------------------------------- timers

    /// Run every timer due at `now`: ring timeouts, wrap-up ends, maximum waits, announcements,
    /// relaxations, callbacks coming due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.tk(now);
        while let Some(&Reverse((at, _, timer))) = self.timers.peek() {
            if at > t {
                break;
            }
            self.timers.pop();
            if self.timer_live(&timer) {
                self.fire(t, timer);
            }
        }
        self.prune();
    }

    fn fire(&mut self, t: Ticks, timer: Timer) {
        match timer {
            Timer::Offer { agent: a, no } => {
                let Some(off) = self.agents[a as usize].offer.filter(|o| o.no == no) else { return };
                let uid = off.uid;
                let Some(e) = self.entries.get(&uid) else { return };
                match &e.status {
                    Status::Dialing { .. } => {
                        self.actions.push_back(Action::StopOffer { call: uid, agent: AgentRef(a) });
                        self.callback_failed(t, uid, "timeout");
                    }
                    Status::Offered { agents, .. } => {
                        let ring = self.queues[e.queue as usize].ring;
                        // a ring-all rang everyone at once: they all time out together
                        let due: Vec<u32> = agents
                            .iter()
                            .copied()
                            .filter(|&b| self.agents[b as usize].offer.is_some_and(|o| o.uid == uid && o.since + ring <= t))
                            .collect();
                        self.miss_agents(t, uid, &due, MissReason::NoAnswer, true);
                    }
                    _ => {}
                }
            }
            Timer::Wrapup { agent: a, no } => {
                let ag = &self.agents[a as usize];
                if ag.state == AgentState::Wrapup && ag.wrap_no == no {
                    self.end_wrapup(t, a, Next::Ready("wrapup_end"));
                }
            }
            Timer::MaxWait { uid, join } => {
                let Some(e) = self.entries.get_mut(&uid) else { return };
                if e.join != join || e.call.is_none() {
                    return;
                }
                match e.status {
                    Status::Waiting => self.apply_max_wait(t, uid),
                    Status::Offered { .. } => e.max_wait_pending = true,
                    _ => {}
                }
            }
            Timer::Announce { uid, join } => {
                let Some(e) = self.entries.get(&uid) else { return };
                if e.join != join {
                    return;
                }
                let Some(call) = e.call else { return };
                let q = e.queue;
                if e.status == Status::Waiting {
                    let position = self.rank(uid).unwrap_or(1);
                    let expected_wait = self.expected_wait_at(q, position);
                    self.actions.push_back(Action::Announce { call, position, expected_wait });
                }
                if let Some(every) = self.queues[q as usize].announce {
                    self.timer(t + every, Timer::Announce { uid, join });
                }
            }
            Timer::Relax { uid, join } => {
                let Some(e) = self.entries.get(&uid) else { return };
                if e.join != join {
                    return;
                }
                let g = &self.queues[e.queue as usize].groups[e.group as usize];
                let next = next_relax(g, t - e.line_t).map(|p| e.line_t + p);
                if let Some(at) = next {
                    self.timer(at, Timer::Relax { uid, join });
                }
                self.route_entry(t, uid, &[]);
            }
            Timer::CallbackDue { uid, attempts } => {
                let Some(e) = self.entries.get(&uid) else { return };
                if e.status != Status::Parked || e.callback.as_ref().map(|c| c.attempts) != Some(attempts) {
                    return;
                }
                self.callback_in_line(t, uid);
            }
        }
    }
}

/// Where an agent goes at the end of a wrap-up.
pub(super) enum Next {
    Ready(&'static str),
    NotReady(String),
    LoggedOut(String),
}
