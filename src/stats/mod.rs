//! Live statistics, KS figures, interval reports and staffing advice, computed from the queue log (sans-IO).
//!
//! [`Stats`] is fed the ACD's [`QueueEvent`]s in the order they happened ([`Stats::push`]) and, for
//! repeat callers, the call records ([`Stats::push_call`]) or stored contacts ([`Stats::push_contact`]).
//! It does no I/O and reads no clock: times are the events' Unix milliseconds, and the live queries take
//! `now_ms`. The same code serves the wallboard (live, fed as events happen) and the reports (fed from
//! the records database, see `records::RecordsReader`).
//!
//! # Where a call's figures land
//! Counters are kept per tenant, per queue and per agent in 15-minute slots of the tenant's local time
//! (UTC offset per tenant, default +540 min = KST); 30/60-minute intervals and "today" (since local
//! midnight) are sums of slots.
//! - Queue and tenant figures belong to the slot in which the call **entered the queue** (its arrival):
//!   a call offered at 09:14:50 and answered at 09:15:30 is offered *and* answered in 09:00–09:15, so an
//!   interval's service level is the fate of the calls that arrived in it. Talk, hold and wrap-up time of a
//!   call, and its disposition, go to the same slot.
//! - Tenant figures count each call once: offered at its first `enter` in any queue of the tenant; an
//!   overflow or a transfer into another queue is offered again in that queue, not in the tenant.
//! - Agent figures belong to the slot of the agent's own event: offers (the agent's `offered`) when the
//!   phone rang, answers when it answered; the call's talk, hold, wrap-up and disposition go to the slot of
//!   the answer.
//! - Agent time (logged in, ready, busy, not ready) is cut at slot boundaries exactly; a queue's agent time
//!   is the time of the agents serving it ([`Stats::set_agent_queues`], else those it offered a call to).
//! - Callback connects and failures, refusals and agent events without a known call count at their own time.
//!
//! # Definitions
//! - **offered**: `enter` events (callers who reached the queue). Refusals at the door (`refused`: full,
//!   no agent, closed) are counted apart and are not offered.
//! - **answered**: `connect`; **answered in SL**: wait ≤ the queue's SL threshold (default 20 s).
//! - **abandoned**: `abandon` (hung up waiting or while an agent's phone rang), all of them;
//!   **short abandons**: the abandons with wait < the queue's short-abandon threshold (default 5 s), a
//!   subset, shown apart. Callers lost in the announcement before any queue are not in the queue log: they
//!   come from the call records (`abandoned_before_queue`, tenant only).
//! - **service level**: by the centre's [`SlFormula`], default [`SlFormula::AnsweredOfOffered`], the KS
//!   definition: answered within T / offered. The KS figure `ks_service_level_20s` is always that
//!   formula at T = 20 s, whatever the queue's threshold.
//! - **answer rate** = answered / offered; **abandonment** (KS) = abandoned / offered (short abandons
//!   included, as in the KS definition "callers who hang up before an agent / offered").
//! - **ASA** = Σ wait of answered calls / answered. **AHT** = (Σ talk + Σ hold + Σ wrap-up) / handled, where
//!   handled = `complete` + `transfer` events (one per agent conversation), talk and hold from those events
//!   (talk excludes hold), wrap-up from `wrapup_end`.
//! - **occupancy** = busy / (busy + ready), busy = reserved (ringing) + talking + held + wrap-up.
//! - **First-call resolution** (KS): denominator = calls answered by an agent (a `connect`) whose caller
//!   number is known (not empty, not "anonymous"; the others are `fcr_untracked`); numerator = those whose
//!   (latest) disposition says settled AND from whose number no other call reached the same tenant within
//!   [`StatsConfig::fcr_window_days`] (default 7) after this call's arrival. A repeat is any other call: a
//!   queue `enter` or `refused`, or a call record (calls that ended in the announcement count too). An
//!   answered call without disposition is not resolved. Until the window has passed (relative to the newest
//!   event seen) the figure is provisional: `fcr_open` counts the calls whose window is still open.

pub mod erlang;
mod report;
mod time;

pub use report::{IntervalLen, IntervalRow, Report};
pub use time::{local_stamp, slot, slot_start_ms, Date, DAY_MS, SLOTS_PER_DAY, SLOT_MS};

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::acd::log::{QueueEvent, QueueEventKind};
use crate::records::{CallRecord, Contact, Outcome};

/// How the service level is computed from an interval's counts (T = the queue's SL threshold).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlFormula {
    /// answered within T / offered. The Korean service standard (KS) definition and the default.
    #[default]
    AnsweredOfOffered,
    /// answered within T / (offered − short abandons): callers who hung up almost at once are left out.
    AnsweredOfOfferedLessShortAbandons,
    /// answered within T / (answered + abandoned): only calls that reached an end in the queue.
    AnsweredOfAnsweredAndAbandoned,
    /// (answered within T + abandoned within T) / offered: an abandon within T does not count against.
    AnsweredOrAbandonedWithinOfOffered,
}

impl SlFormula {
    pub fn name(self) -> &'static str {
        match self {
            SlFormula::AnsweredOfOffered => "answered_of_offered",
            SlFormula::AnsweredOfOfferedLessShortAbandons => "answered_of_offered_less_short_abandons",
            SlFormula::AnsweredOfAnsweredAndAbandoned => "answered_of_answered_and_abandoned",
            SlFormula::AnsweredOrAbandonedWithinOfOffered => "answered_or_abandoned_within_of_offered",
        }
    }

    pub fn from_name(s: &str) -> Option<SlFormula> {
        [
            SlFormula::AnsweredOfOffered,
            SlFormula::AnsweredOfOfferedLessShortAbandons,
            SlFormula::AnsweredOfAnsweredAndAbandoned,
            SlFormula::AnsweredOrAbandonedWithinOfOffered,
        ]
        .into_iter()
        .find(|f| f.name() == s)
    }

    /// The service level of these counts (None when the denominator is 0).
    pub fn compute(self, c: &Counts) -> Option<f64> {
        let (num, den) = match self {
            SlFormula::AnsweredOfOffered => (c.answered_in_sl, c.offered),
            SlFormula::AnsweredOfOfferedLessShortAbandons => {
                (c.answered_in_sl, c.offered.saturating_sub(c.short_abandoned))
            }
            SlFormula::AnsweredOfAnsweredAndAbandoned => (c.answered_in_sl, c.answered + c.abandoned),
            SlFormula::AnsweredOrAbandonedWithinOfOffered => (c.answered_in_sl + c.abandoned_in_sl, c.offered),
        };
        ratio(num, den)
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn avg_s(sum_ms: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum_ms as f64 / n as f64 / 1000.0)
}

/// A queue's service-level and short-abandon thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Answered within this wait counts for the service level (inclusive). Default 20 s.
    pub sl_ms: u64,
    /// Abandons with a wait below this are short abandons. Default 5 s.
    pub short_abandon_ms: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { sl_ms: 20_000, short_abandon_ms: 5_000 }
    }
}

/// The KS service-level threshold: 20 s.
pub const KS_SL_MS: u64 = 20_000;

/// Settings of the statistics.
#[derive(Clone, Debug)]
pub struct StatsConfig {
    pub sl_formula: SlFormula,
    /// For queues without their own.
    pub thresholds: Thresholds,
    /// Per (tenant, queue): the queue's `sl_threshold` and `short_abandon`.
    pub queue_thresholds: HashMap<(String, String), Thresholds>,
    /// Local time of a tenant without its own offset: minutes east of UTC. Default 540 (KST).
    pub utc_offset_min: i32,
    pub tenant_utc_offset_min: HashMap<String, i32>,
    /// Repeat-call window for first-call resolution. Default 7 days.
    pub fcr_window_days: u32,
    /// Length of the live "current interval". Default 30 minutes.
    pub live_interval: IntervalLen,
    /// Staffing advice: the service level to reach (0..=1, default 0.8) at the queue's SL threshold.
    pub target_sl: f64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            sl_formula: SlFormula::default(),
            thresholds: Thresholds::default(),
            queue_thresholds: HashMap::new(),
            utc_offset_min: 540,
            tenant_utc_offset_min: HashMap::new(),
            fcr_window_days: 7,
            live_interval: IntervalLen::M30,
            target_sl: 0.8,
        }
    }
}

impl StatsConfig {
    pub fn offset(&self, tenant: &str) -> i32 {
        self.tenant_utc_offset_min.get(tenant).copied().unwrap_or(self.utc_offset_min)
    }

    pub fn queue_thresholds(&self, tenant: &str, queue: &str) -> Thresholds {
        if self.queue_thresholds.is_empty() {
            return self.thresholds;
        }
        self.queue_thresholds.get(&(tenant.to_owned(), queue.to_owned())).copied().unwrap_or(self.thresholds)
    }
}

/// Additive counters of one scope (tenant, queue or agent) over one slot or a sum of slots.
/// Times are milliseconds. See the module doc for what each means and where it lands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Queue/tenant: calls entered. Agent: offers (its phone rang).
    pub offered: u64,
    pub refused: u64,
    pub answered: u64,
    pub answered_in_sl: u64,
    pub answered_in_20s: u64,
    /// All abandons (short ones included). Agent: callers who hung up while its phone rang.
    pub abandoned: u64,
    pub short_abandoned: u64,
    pub abandoned_in_sl: u64,
    pub timeouts: u64,
    pub overflows: u64,
    pub callbacks_requested: u64,
    pub callbacks_connected: u64,
    pub callbacks_failed: u64,
    /// Agent: offers it did not take.
    pub missed: u64,
    pub handled: u64,
    pub transfers: u64,
    pub wait_answered_ms: u64,
    pub max_wait_answered_ms: u64,
    pub wait_abandoned_ms: u64,
    pub talk_ms: u64,
    pub hold_ms: u64,
    pub wrap_ms: u64,
    pub wrapups: u64,
    pub dispositions: u64,
    pub settled: u64,
    pub complaints: u64,
    pub praise: u64,
    pub subjects: BTreeMap<String, u64>,
    /// The answered calls judged for first-call resolution (call ids).
    pub fcr_calls: Vec<String>,
    pub fcr_untracked: u64,
    /// Tenant: calls that ended before reaching any queue (from the call records).
    pub abandoned_before_queue: u64,
    pub staffed_ms: u64,
    pub ready_ms: u64,
    pub busy_ms: u64,
    pub not_ready_ms: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.offered += o.offered;
        self.refused += o.refused;
        self.answered += o.answered;
        self.answered_in_sl += o.answered_in_sl;
        self.answered_in_20s += o.answered_in_20s;
        self.abandoned += o.abandoned;
        self.short_abandoned += o.short_abandoned;
        self.abandoned_in_sl += o.abandoned_in_sl;
        self.timeouts += o.timeouts;
        self.overflows += o.overflows;
        self.callbacks_requested += o.callbacks_requested;
        self.callbacks_connected += o.callbacks_connected;
        self.callbacks_failed += o.callbacks_failed;
        self.missed += o.missed;
        self.handled += o.handled;
        self.transfers += o.transfers;
        self.wait_answered_ms += o.wait_answered_ms;
        self.max_wait_answered_ms = self.max_wait_answered_ms.max(o.max_wait_answered_ms);
        self.wait_abandoned_ms += o.wait_abandoned_ms;
        self.talk_ms += o.talk_ms;
        self.hold_ms += o.hold_ms;
        self.wrap_ms += o.wrap_ms;
        self.wrapups += o.wrapups;
        self.dispositions += o.dispositions;
        self.settled += o.settled;
        self.complaints += o.complaints;
        self.praise += o.praise;
        for (k, v) in &o.subjects {
            *self.subjects.entry(k.clone()).or_default() += v;
        }
        self.fcr_calls.extend(o.fcr_calls.iter().cloned());
        self.fcr_untracked += o.fcr_untracked;
        self.abandoned_before_queue += o.abandoned_before_queue;
        self.staffed_ms += o.staffed_ms;
        self.ready_ms += o.ready_ms;
        self.busy_ms += o.busy_ms;
        self.not_ready_ms += o.not_ready_ms;
    }
}

/// Whose counters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Tenant(String),
    /// (tenant, queue)
    Queue(String, String),
    /// (tenant, agent id)
    Agent(String, String),
}

impl Scope {
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Tenant(_) => "tenant",
            Scope::Queue(..) => "queue",
            Scope::Agent(..) => "agent",
        }
    }
    pub fn tenant(&self) -> &str {
        match self {
            Scope::Tenant(t) | Scope::Queue(t, _) | Scope::Agent(t, _) => t,
        }
    }
    /// The queue or agent id; the tenant's name for a tenant.
    pub fn name(&self) -> &str {
        match self {
            Scope::Tenant(t) => t,
            Scope::Queue(_, n) | Scope::Agent(_, n) => n,
        }
    }
}

/// The figures of one scope over one period, derived from [`Counts`]. Rates are fractions (0..=1),
/// times seconds; `None` where the denominator is 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub offered: u64,
    pub refused: u64,
    pub answered: u64,
    pub answered_in_sl: u64,
    pub abandoned: u64,
    pub short_abandoned: u64,
    pub timeouts: u64,
    pub overflows: u64,
    pub transfers: u64,
    pub callbacks_requested: u64,
    pub callbacks_connected: u64,
    pub callbacks_failed: u64,
    pub missed: u64,
    pub handled: u64,
    pub abandoned_before_queue: u64,
    /// By the configured [`SlFormula`] at the queue's threshold.
    pub service_level: Option<f64>,
    /// KS: answered within 20 s / offered.
    pub ks_service_level_20s: Option<f64>,
    /// KS: abandoned / offered.
    pub ks_abandonment: Option<f64>,
    /// KS: first-call resolution, resolved / judged (see the module doc).
    pub ks_fcr: Option<f64>,
    pub answer_rate: Option<f64>,
    pub asa_s: Option<f64>,
    pub max_wait_answered_s: f64,
    pub aht_s: Option<f64>,
    pub avg_talk_s: Option<f64>,
    pub avg_wrap_s: Option<f64>,
    pub talk_s: f64,
    pub hold_s: f64,
    pub wrap_s: f64,
    pub fcr_calls: u64,
    pub fcr_resolved: u64,
    pub fcr_untracked: u64,
    pub fcr_open: u64,
    pub dispositions: u64,
    pub settled: u64,
    pub complaints: u64,
    pub praise: u64,
    pub subjects: BTreeMap<String, u64>,
    pub occupancy: Option<f64>,
    /// Average agents logged in over the period (logged-in time / period length).
    pub agents_staffed: f64,
}

/// Agents by state, now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AgentsByState {
    /// Every state but logged out.
    pub logged_in: u32,
    pub ready: u32,
    pub not_ready: u32,
    pub reserved: u32,
    pub talking: u32,
    pub held: u32,
    pub wrapup: u32,
}

/// A wallboard tile set: one queue or one tenant, now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Live {
    pub tenant: String,
    /// None for the whole tenant.
    pub queue: Option<String>,
    pub now_ms: i64,
    pub waiting: u32,
    pub longest_wait_s: Option<f64>,
    pub agents: AgentsByState,
    /// The local date "today" refers to.
    pub day: String,
    pub today: Figures,
    pub interval_start: String,
    pub interval_minutes: u32,
    pub interval: Figures,
}

#[derive(Default)]
struct CallState {
    tenant: String,
    /// The first slot of the call in the tenant (its first enter, or the first event seen).
    tenant_slot: i64,
    /// The queue it is in (or was answered from) and the slot it entered it.
    queue: String,
    queue_slot: i64,
    agent: String,
    agent_slot: i64,
    tenant_offered: bool,
    tenant_answered: bool,
    /// The disposition and where it was counted, to take it back if the agent changes it.
    disposition: Option<Disposition>,
    last_ms: i64,
}

struct Disposition {
    subject: String,
    settled: bool,
    flag: String,
    counted_in: Vec<(Scope, i64)>,
}

struct FcrCall {
    tenant: String,
    settled: bool,
}

struct AgentTrack {
    state: String,
    since_ms: i64,
    last_call: Option<String>,
}

/// The statistics engine. See the module doc.
pub struct Stats {
    cfg: StatsConfig,
    buckets: HashMap<Scope, BTreeMap<i64, Counts>>,
    calls: HashMap<String, CallState>,
    fcr: HashMap<String, FcrCall>,
    /// call id → (first contact time, caller)
    contact_ms: HashMap<String, (i64, String)>,
    /// tenant → caller → call ids
    contacts: HashMap<String, HashMap<String, Vec<String>>>,
    agents: HashMap<(String, String), AgentTrack>,
    /// (tenant, agent) → queues it serves (configured or learned from offers)
    agent_queues: HashMap<(String, String), HashSet<String>>,
    configured_agents: HashSet<(String, String)>,
    /// (tenant, queue) → waiting call → enter time
    waiting: HashMap<(String, String), HashMap<String, i64>>,
    newest_ms: i64,
}

fn trackable(caller: &str) -> bool {
    let c = caller.trim();
    !c.is_empty() && !c.eq_ignore_ascii_case("anonymous") && !c.eq_ignore_ascii_case("unknown")
}

fn is_busy(state: &str) -> bool {
    matches!(state, "reserved" | "talking" | "held" | "wrapup")
}

impl Stats {
    pub fn new(cfg: StatsConfig) -> Stats {
        Stats {
            cfg,
            buckets: HashMap::new(),
            calls: HashMap::new(),
            fcr: HashMap::new(),
            contact_ms: HashMap::new(),
            contacts: HashMap::new(),
            agents: HashMap::new(),
            agent_queues: HashMap::new(),
            configured_agents: HashSet::new(),
            waiting: HashMap::new(),
            newest_ms: i64::MIN,
        }
    }

    pub fn config(&self) -> &StatsConfig {
        &self.cfg
    }

    /// Tells the engine that time has reached `now_ms` without an event (first-call resolution windows
    /// that have passed are then closed: `fcr_open` counts only windows still open at the newest time).
    pub fn observe(&mut self, now_ms: i64) {
        self.newest_ms = self.newest_ms.max(now_ms);
    }

    /// The newest event time seen.
    pub fn newest_ms(&self) -> Option<i64> {
        (self.newest_ms != i64::MIN).then_some(self.newest_ms)
    }

    /// Declares the queues an agent serves (from the ACD specification): its time counts in their
    /// occupancy and it shows in their agents-by-state. Without it, an agent joins a queue's group at
    /// the first call the queue offers it.
    pub fn set_agent_queues(&mut self, tenant: &str, agent: &str, queues: &[&str]) {
        let key = (tenant.to_owned(), agent.to_owned());
        self.agent_queues.insert(key.clone(), queues.iter().map(|q| q.to_string()).collect());
        self.configured_agents.insert(key);
    }

    fn counts(&mut self, scope: Scope, slot: i64) -> &mut Counts {
        self.buckets.entry(scope).or_default().entry(slot).or_default()
    }

    /// Registers a caller's contact (a call reaching the tenant), for repeat-caller detection.
    fn contact(&mut self, tenant: &str, caller: &str, call: &str, at_ms: i64) {
        self.newest_ms = self.newest_ms.max(at_ms);
        if !trackable(caller) || call.is_empty() {
            return;
        }
        match self.contact_ms.get_mut(call) {
            Some((t, _)) => *t = (*t).min(at_ms),
            None => {
                self.contact_ms.insert(call.to_owned(), (at_ms, caller.trim().to_owned()));
                let by_caller = match self.contacts.get_mut(tenant) {
                    Some(m) => m,
                    None => self.contacts.entry(tenant.to_owned()).or_default(),
                };
                match by_caller.get_mut(caller.trim()) {
                    Some(v) => v.push(call.to_owned()),
                    None => {
                        by_caller.insert(caller.trim().to_owned(), vec![call.to_owned()]);
                    }
                }
            }
        }
    }

    /// A stored contact (an `enter` row read for the days after a report's day).
    pub fn push_contact(&mut self, c: &Contact) {
        self.contact(&c.tenant, &c.caller, &c.call, c.at_ms);
    }

    /// A call record: the caller's contact for first-call resolution, and for a call that ended before
    /// reaching a queue (abandoned or cancelled in the announcement), the tenant's `abandoned_before_queue`.
    /// Push it after the call's queue events (records are written when the call ends).
    pub fn push_call(&mut self, rec: &CallRecord) {
        let Some(tenant) = rec.tenant.as_deref() else { return };
        self.push_call_summary(tenant, &rec.call_id, &rec.caller, rec.arrived_ms, rec.outcome);
    }

    /// [`Stats::push_call`] from the columns it needs (`records::RecordsReader::call_contacts`).
    pub fn push_call_summary(&mut self, tenant: &str, call_id: &str, caller: &str, arrived_ms: i64, outcome: Outcome) {
        self.contact(tenant, caller, call_id, arrived_ms);
        if matches!(outcome, Outcome::Abandoned | Outcome::Cancelled) && !self.calls.contains_key(call_id) {
            let slot = slot(arrived_ms, self.cfg.offset(tenant));
            self.counts(Scope::Tenant(tenant.to_owned()), slot).abandoned_before_queue += 1;
        }
    }

    /// The call's state, created for a call first seen in a later event (a callback, events after a
    /// restart): it then lands in the event's own slot and queue.
    fn call_state(&mut self, ev: &QueueEvent, slot: i64) -> &mut CallState {
        let cs = self.calls.entry(ev.call.clone()).or_insert_with(|| CallState {
            tenant: ev.tenant.clone(),
            tenant_slot: slot,
            queue: ev.queue.clone(),
            queue_slot: slot,
            agent: ev.agent.clone(),
            agent_slot: slot,
            ..Default::default()
        });
        cs.last_ms = ev.at_ms;
        cs
    }

    /// The scopes and slots a call's handling figures go to: its queue, its tenant, its agent.
    fn call_scopes(&self, call: &str, ev: &QueueEvent, slot: i64) -> Vec<(Scope, i64)> {
        let t = ev.tenant.clone();
        match self.calls.get(call) {
            Some(cs) => {
                let mut v = vec![(Scope::Tenant(cs.tenant.clone()), cs.tenant_slot)];
                if !cs.queue.is_empty() {
                    v.push((Scope::Queue(cs.tenant.clone(), cs.queue.clone()), cs.queue_slot));
                }
                let agent = if ev.agent.is_empty() { &cs.agent } else { &ev.agent };
                if !agent.is_empty() {
                    let aslot = if agent == &cs.agent { cs.agent_slot } else { slot };
                    v.push((Scope::Agent(cs.tenant.clone(), agent.clone()), aslot));
                }
                v
            }
            None => {
                let mut v = vec![(Scope::Tenant(t.clone()), slot)];
                if !ev.queue.is_empty() {
                    v.push((Scope::Queue(t.clone(), ev.queue.clone()), slot));
                }
                if !ev.agent.is_empty() {
                    v.push((Scope::Agent(t, ev.agent.clone()), slot));
                }
                v
            }
        }
    }

    fn remove_waiting(&mut self, tenant: &str, call: &str) {
        for ((t, _), m) in self.waiting.iter_mut() {
            if t == tenant {
                m.remove(call);
            }
        }
    }

    /// Feeds one event. Events must come in the order they happened (as the ACD emits them and as
    /// `RecordsReader::queue_log` returns them).
    pub fn push(&mut self, ev: &QueueEvent) {
        let off = self.cfg.offset(&ev.tenant);
        let s = slot(ev.at_ms, off);
        self.newest_ms = self.newest_ms.max(ev.at_ms);
        let tenant = ev.tenant.clone();
        match &ev.kind {
            QueueEventKind::Enter { caller, .. } => {
                self.contact(&ev.tenant, caller, &ev.call, ev.at_ms);
                let cs = self.calls.entry(ev.call.clone()).or_insert_with(|| CallState {
                    tenant: tenant.clone(),
                    tenant_slot: s,
                    ..Default::default()
                });
                cs.last_ms = ev.at_ms;
                cs.queue = ev.queue.clone();
                cs.queue_slot = s;
                let first = !cs.tenant_offered;
                cs.tenant_offered = true;
                if first {
                    cs.tenant_slot = s;
                    self.counts(Scope::Tenant(tenant.clone()), s).offered += 1;
                }
                self.counts(Scope::Queue(tenant.clone(), ev.queue.clone()), s).offered += 1;
                self.waiting.entry((tenant, ev.queue.clone())).or_default().insert(ev.call.clone(), ev.at_ms);
            }
            QueueEventKind::Refused { caller, .. } => {
                self.contact(&ev.tenant, caller, &ev.call, ev.at_ms);
                let entered = self.calls.get(&ev.call).is_some_and(|c| c.tenant_offered);
                self.counts(Scope::Queue(tenant.clone(), ev.queue.clone()), s).refused += 1;
                if !entered {
                    self.counts(Scope::Tenant(tenant), s).refused += 1;
                }
            }
            QueueEventKind::Offer { .. } => {
                if !ev.agent.is_empty() {
                    self.counts(Scope::Agent(tenant.clone(), ev.agent.clone()), s).offered += 1;
                    let key = (tenant, ev.agent.clone());
                    if !self.configured_agents.contains(&key) && !ev.queue.is_empty() {
                        self.agent_queues.entry(key).or_default().insert(ev.queue.clone());
                    }
                }
            }
            QueueEventKind::Miss { .. } => {
                if !ev.agent.is_empty() {
                    self.counts(Scope::Agent(tenant, ev.agent.clone()), s).missed += 1;
                }
            }
            QueueEventKind::Connect { wait_ms, .. } => {
                let wait = *wait_ms;
                self.remove_waiting(&tenant, &ev.call);
                let cs = self.call_state(ev, s);
                let (qslot, tslot) = (cs.queue_slot, cs.tenant_slot);
                let queue = if cs.queue.is_empty() { ev.queue.clone() } else { cs.queue.clone() };
                let first = !cs.tenant_answered;
                cs.tenant_answered = true;
                cs.agent = ev.agent.clone();
                cs.agent_slot = s;
                let th = self.cfg.queue_thresholds(&tenant, &queue);
                let caller_known = self.contact_ms.contains_key(&ev.call);
                let call = ev.call.clone();
                let mut scopes = vec![(Scope::Queue(tenant.clone(), queue), qslot)];
                if first {
                    scopes.push((Scope::Tenant(tenant.clone()), tslot));
                }
                if !ev.agent.is_empty() {
                    scopes.push((Scope::Agent(tenant.clone(), ev.agent.clone()), s));
                    if let Some(a) = self.agents.get_mut(&(tenant.clone(), ev.agent.clone())) {
                        a.last_call = Some(call.clone());
                    }
                }
                for (scope, sl) in scopes {
                    let c = self.counts(scope, sl);
                    c.answered += 1;
                    c.answered_in_sl += (wait <= th.sl_ms) as u64;
                    c.answered_in_20s += (wait <= KS_SL_MS) as u64;
                    c.wait_answered_ms += wait;
                    c.max_wait_answered_ms = c.max_wait_answered_ms.max(wait);
                    if caller_known {
                        c.fcr_calls.push(call.clone());
                    } else {
                        c.fcr_untracked += 1;
                    }
                }
                if caller_known {
                    self.fcr.entry(call).or_insert(FcrCall { tenant: tenant.clone(), settled: false });
                }
            }
            QueueEventKind::Abandon { wait_ms, .. } => {
                let wait = *wait_ms;
                self.remove_waiting(&tenant, &ev.call);
                let cs = self.call_state(ev, s);
                let (qslot, tslot) = (cs.queue_slot, cs.tenant_slot);
                let queue = if cs.queue.is_empty() { ev.queue.clone() } else { cs.queue.clone() };
                let th = self.cfg.queue_thresholds(&tenant, &queue);
                let mut scopes = vec![(Scope::Queue(tenant.clone(), queue), qslot), (Scope::Tenant(tenant.clone()), tslot)];
                if !ev.agent.is_empty() {
                    scopes.push((Scope::Agent(tenant.clone(), ev.agent.clone()), s));
                }
                for (scope, sl) in scopes {
                    let c = self.counts(scope, sl);
                    c.abandoned += 1;
                    c.short_abandoned += (wait < th.short_abandon_ms) as u64;
                    c.abandoned_in_sl += (wait <= th.sl_ms) as u64;
                    c.wait_abandoned_ms += wait;
                }
            }
            QueueEventKind::Timeout { .. } => {
                self.remove_waiting(&tenant, &ev.call);
                let cs = self.call_state(ev, s);
                let (q, qs, ts) = (cs.queue.clone(), cs.queue_slot, cs.tenant_slot);
                self.counts(Scope::Queue(tenant.clone(), q), qs).timeouts += 1;
                self.counts(Scope::Tenant(tenant), ts).timeouts += 1;
            }
            QueueEventKind::Overflow { .. } => {
                self.remove_waiting(&tenant, &ev.call);
                let cs = self.call_state(ev, s);
                let (q, qs) = (cs.queue.clone(), cs.queue_slot);
                self.counts(Scope::Queue(tenant, q), qs).overflows += 1;
            }
            QueueEventKind::CallbackRequested { .. } => {
                self.remove_waiting(&tenant, &ev.call);
                let known = self.calls.contains_key(&ev.call);
                let cs = self.call_state(ev, s);
                let (q, qs, ts) = if known { (cs.queue.clone(), cs.queue_slot, cs.tenant_slot) } else { (ev.queue.clone(), s, s) };
                if !q.is_empty() {
                    self.counts(Scope::Queue(tenant.clone(), q), qs).callbacks_requested += 1;
                }
                self.counts(Scope::Tenant(tenant), ts).callbacks_requested += 1;
            }
            QueueEventKind::CallbackConnect { .. } => {
                for (scope, _) in self.call_scopes(&ev.call, ev, s) {
                    self.counts(scope, s).callbacks_connected += 1;
                }
                let cs = self.call_state(ev, s);
                if !ev.agent.is_empty() {
                    cs.agent = ev.agent.clone();
                    cs.agent_slot = s;
                    let call = ev.call.clone();
                    if let Some(a) = self.agents.get_mut(&(tenant, ev.agent.clone())) {
                        a.last_call = Some(call);
                    }
                }
            }
            QueueEventKind::CallbackFailed { .. } => {
                let mut scopes = vec![Scope::Tenant(tenant.clone())];
                if !ev.queue.is_empty() {
                    scopes.push(Scope::Queue(tenant, ev.queue.clone()));
                }
                for scope in scopes {
                    self.counts(scope, s).callbacks_failed += 1;
                }
            }
            QueueEventKind::Transfer { talk_ms, .. } => {
                for (scope, sl) in self.call_scopes(&ev.call, ev, s) {
                    let c = self.counts(scope, sl);
                    c.handled += 1;
                    c.transfers += 1;
                    c.talk_ms += talk_ms;
                }
            }
            QueueEventKind::Complete { talk_ms, hold_ms, .. } => {
                for (scope, sl) in self.call_scopes(&ev.call, ev, s) {
                    let c = self.counts(scope, sl);
                    c.handled += 1;
                    c.talk_ms += talk_ms;
                    c.hold_ms += hold_ms;
                }
            }
            QueueEventKind::WrapupEnd { wrap_ms } => {
                let call = if ev.call.is_empty() {
                    self.agents.get(&(tenant.clone(), ev.agent.clone())).and_then(|a| a.last_call.clone())
                } else {
                    Some(ev.call.clone())
                };
                let scopes = match call.as_deref().filter(|c| self.calls.contains_key(*c)) {
                    Some(c) => self.call_scopes(c, ev, s),
                    None if !ev.agent.is_empty() => vec![(Scope::Agent(tenant, ev.agent.clone()), s)],
                    None => Vec::new(),
                };
                for (scope, sl) in scopes {
                    let c = self.counts(scope, sl);
                    c.wrap_ms += wrap_ms;
                    c.wrapups += 1;
                }
            }
            QueueEventKind::Disposition { subject, settled, flag } => {
                let scopes = self.call_scopes(&ev.call, ev, s);
                let old = self.calls.get_mut(&ev.call).and_then(|cs| cs.disposition.take());
                if let Some(Disposition { subject: subj, settled: st, flag: fl, counted_in }) = old {
                    for (scope, sl) in counted_in {
                        let c = self.counts(scope, sl);
                        c.dispositions -= 1;
                        c.settled -= st as u64;
                        c.complaints -= (fl == "complaint") as u64;
                        c.praise -= (fl == "praise") as u64;
                        if let Some(n) = c.subjects.get_mut(&subj) {
                            *n -= 1;
                            if *n == 0 {
                                c.subjects.remove(&subj);
                            }
                        }
                    }
                }
                for (scope, sl) in &scopes {
                    let c = self.counts(scope.clone(), *sl);
                    c.dispositions += 1;
                    c.settled += *settled as u64;
                    c.complaints += (flag == "complaint") as u64;
                    c.praise += (flag == "praise") as u64;
                    *c.subjects.entry(subject.clone()).or_default() += 1;
                }
                if let Some(cs) = self.calls.get_mut(&ev.call) {
                    cs.disposition =
                        Some(Disposition { subject: subject.clone(), settled: *settled, flag: flag.clone(), counted_in: scopes });
                }
                if let Some(f) = self.fcr.get_mut(&ev.call) {
                    f.settled = *settled;
                }
            }
            QueueEventKind::AgentState { state, .. } => {
                if ev.agent.is_empty() {
                    return;
                }
                let key = (tenant, ev.agent.clone());
                if let Some(prev) = self.agents.get(&key) {
                    let (st, since) = (prev.state.clone(), prev.since_ms);
                    self.agent_time(&key, &st, since, ev.at_ms);
                }
                let a = self.agents.entry(key).or_insert(AgentTrack { state: String::new(), since_ms: 0, last_call: None });
                a.state = state.clone();
                a.since_ms = ev.at_ms;
            }
        }
    }

    /// Adds `[from, to)` spent in `state` to the agent's slots (and its tenant's and queues').
    fn agent_time(&mut self, key: &(String, String), state: &str, from: i64, to: i64) {
        for (scope, slot, ms) in self.agent_spans(key, state, from, to) {
            let c = self.counts(scope, slot);
            add_state_ms(c, state, ms);
        }
    }

    fn agent_spans(&self, key: &(String, String), state: &str, from: i64, to: i64) -> Vec<(Scope, i64, u64)> {
        let mut out = Vec::new();
        if to <= from || state == "logged_out" || state.is_empty() {
            return out;
        }
        let off = self.cfg.offset(&key.0);
        let mut scopes = vec![Scope::Agent(key.0.clone(), key.1.clone()), Scope::Tenant(key.0.clone())];
        if let Some(qs) = self.agent_queues.get(key) {
            let mut qs: Vec<&String> = qs.iter().collect();
            qs.sort();
            scopes.extend(qs.into_iter().map(|q| Scope::Queue(key.0.clone(), q.clone())));
        }
        let mut t = from;
        while t < to {
            let sl = slot(t, off);
            let end = slot_start_ms(sl + 1, off).min(to);
            for sc in &scopes {
                out.push((sc.clone(), sl, (end - t) as u64));
            }
            t = end;
        }
        out
    }

    fn merged(&self, scope: &Scope, slots: std::ops::Range<i64>) -> Counts {
        let mut c = Counts::default();
        if let Some(m) = self.buckets.get(scope) {
            for (_, b) in m.range(slots) {
                c.add(b);
            }
        }
        c
    }

    /// The counts of a scope over slots `[from, to)`, with the time agents have spent in their current
    /// state up to `now_ms` added (for live figures; pass `None` for closed periods).
    pub fn counts_between(&self, scope: &Scope, slots: std::ops::Range<i64>, now_ms: Option<i64>) -> Counts {
        let mut c = self.merged(scope, slots.clone());
        if let Some(now) = now_ms {
            for (key, a) in &self.agents {
                if key.0 != scope.tenant() {
                    continue;
                }
                for (sc, sl, ms) in self.agent_spans(key, &a.state, a.since_ms, now) {
                    if &sc == scope && slots.contains(&sl) {
                        add_state_ms(&mut c, &a.state, ms);
                    }
                }
            }
        }
        c
    }

    /// Whether an answered call counts as resolved, and whether its repeat window is still open.
    fn fcr_judge(&self, call: &str) -> (bool, bool) {
        let Some(f) = self.fcr.get(call) else { return (false, false) };
        let Some((t0, caller)) = self.contact_ms.get(call) else { return (false, false) };
        let t0 = *t0;
        let window = self.cfg.fcr_window_days as i64 * DAY_MS;
        let open = self.newest_ms < t0 + window;
        let repeated = self.contacts.get(&f.tenant).and_then(|m| m.get(caller)).is_some_and(|calls| {
            calls.iter().any(|c| c != call && self.contact_ms.get(c).is_some_and(|&(t, _)| t > t0 && t <= t0 + window))
        });
        (f.settled && !repeated, open)
    }

    /// Derives the figures of counts over a period of `period_ms`.
    pub fn figures(&self, c: &Counts, period_ms: i64) -> Figures {
        let mut resolved = 0;
        let mut open = 0;
        for call in &c.fcr_calls {
            let (r, o) = self.fcr_judge(call);
            resolved += r as u64;
            open += o as u64;
        }
        Figures {
            offered: c.offered,
            refused: c.refused,
            answered: c.answered,
            answered_in_sl: c.answered_in_sl,
            abandoned: c.abandoned,
            short_abandoned: c.short_abandoned,
            timeouts: c.timeouts,
            overflows: c.overflows,
            transfers: c.transfers,
            callbacks_requested: c.callbacks_requested,
            callbacks_connected: c.callbacks_connected,
            callbacks_failed: c.callbacks_failed,
            missed: c.missed,
            handled: c.handled,
            abandoned_before_queue: c.abandoned_before_queue,
            service_level: self.cfg.sl_formula.compute(c),
            ks_service_level_20s: ratio(c.answered_in_20s, c.offered),
            ks_abandonment: ratio(c.abandoned, c.offered),
            ks_fcr: ratio(resolved, c.fcr_calls.len() as u64),
            answer_rate: ratio(c.answered, c.offered),
            asa_s: avg_s(c.wait_answered_ms, c.answered),
            max_wait_answered_s: c.max_wait_answered_ms as f64 / 1000.0,
            aht_s: avg_s(c.talk_ms + c.hold_ms + c.wrap_ms, c.handled),
            avg_talk_s: avg_s(c.talk_ms, c.handled),
            avg_wrap_s: avg_s(c.wrap_ms, c.wrapups),
            talk_s: c.talk_ms as f64 / 1000.0,
            hold_s: c.hold_ms as f64 / 1000.0,
            wrap_s: c.wrap_ms as f64 / 1000.0,
            fcr_calls: c.fcr_calls.len() as u64,
            fcr_resolved: resolved,
            fcr_untracked: c.fcr_untracked,
            fcr_open: open,
            dispositions: c.dispositions,
            settled: c.settled,
            complaints: c.complaints,
            praise: c.praise,
            subjects: c.subjects.clone(),
            occupancy: ratio(c.busy_ms, c.busy_ms + c.ready_ms),
            agents_staffed: if period_ms > 0 { c.staffed_ms as f64 / period_ms as f64 } else { 0.0 },
        }
    }

    fn agents_by_state(&self, tenant: &str, queue: Option<&str>) -> AgentsByState {
        let mut a = AgentsByState::default();
        for (key, t) in &self.agents {
            if key.0 != tenant {
                continue;
            }
            if let Some(q) = queue {
                if !self.agent_queues.get(key).is_some_and(|qs| qs.contains(q)) {
                    continue;
                }
            }
            match t.state.as_str() {
                "logged_out" | "" => continue,
                "ready" => a.ready += 1,
                "not_ready" => a.not_ready += 1,
                "reserved" => a.reserved += 1,
                "talking" => a.talking += 1,
                "held" => a.held += 1,
                "wrapup" => a.wrapup += 1,
                _ => {}
            }
            a.logged_in += 1;
        }
        a
    }

    /// The wallboard figures of one queue now: waiting, longest wait, agents by state, and the figures
    /// since local midnight and of the current interval (both up to `now_ms`).
    pub fn live_queue(&self, tenant: &str, queue: &str, now_ms: i64) -> Live {
        self.live(Scope::Queue(tenant.to_owned(), queue.to_owned()), now_ms)
    }

    /// [`Stats::live_queue`] for a whole tenant (every queue; each call once).
    pub fn live_tenant(&self, tenant: &str, now_ms: i64) -> Live {
        self.live(Scope::Tenant(tenant.to_owned()), now_ms)
    }

    pub fn live(&self, scope: Scope, now_ms: i64) -> Live {
        let tenant = scope.tenant().to_owned();
        let off = self.cfg.offset(&tenant);
        let now_slot = slot(now_ms, off);
        let day = now_slot.div_euclid(SLOTS_PER_DAY);
        let day_start = day * SLOTS_PER_DAY;
        let per = self.cfg.live_interval.slots();
        let int_start = day_start + (now_slot - day_start) / per * per;
        let today = self.counts_between(&scope, day_start..now_slot + 1, Some(now_ms));
        let interval = self.counts_between(&scope, int_start..now_slot + 1, Some(now_ms));
        let (queue, waits): (Option<String>, Vec<i64>) = match &scope {
            Scope::Queue(t, q) => (
                Some(q.clone()),
                self.waiting.get(&(t.clone(), q.clone())).map(|m| m.values().copied().collect()).unwrap_or_default(),
            ),
            _ => (
                None,
                self.waiting.iter().filter(|((t, _), _)| *t == tenant).flat_map(|(_, m)| m.values().copied()).collect(),
            ),
        };
        let agents = match &scope {
            Scope::Queue(t, q) => self.agents_by_state(t, Some(q)),
            _ => self.agents_by_state(&tenant, None),
        };
        Live {
            tenant: tenant.clone(),
            queue,
            now_ms,
            waiting: waits.len() as u32,
            longest_wait_s: waits.iter().min().map(|&t| (now_ms - t).max(0) as f64 / 1000.0),
            agents,
            day: Date::from_days(day).to_string(),
            today: self.figures(&today, now_ms - slot_start_ms(day_start, off)),
            interval_start: local_stamp(int_start, off),
            interval_minutes: self.cfg.live_interval.minutes(),
            interval: self.figures(&interval, now_ms - slot_start_ms(int_start, off)),
        }
    }

    /// Every scope of a tenant with counters in the slots `[from, to)`: the tenant, its queues, its agents.
    pub fn scopes(&self, tenant: &str, slots: std::ops::Range<i64>) -> Vec<Scope> {
        let mut v: Vec<Scope> = self
            .buckets
            .iter()
            .filter(|(s, m)| s.tenant() == tenant && m.range(slots.clone()).next().is_some())
            .map(|(s, _)| s.clone())
            .collect();
        v.sort();
        v
    }

    /// The interval report of one local day of a tenant: a row per interval of the day for the tenant and
    /// each queue with activity that day, and for each agent a row per interval in which it was logged in
    /// or had calls; staffing advice on the tenant and queue rows.
    pub fn report(&self, tenant: &str, day: Date, len: IntervalLen) -> Report {
        let off = self.cfg.offset(tenant);
        let first = day.first_slot();
        let per = len.slots();
        let mut rows = Vec::new();
        for scope in self.scopes(tenant, first..first + SLOTS_PER_DAY) {
            let day_counts = self.merged(&scope, first..first + SLOTS_PER_DAY);
            let day_aht = avg_s(day_counts.talk_ms + day_counts.hold_ms + day_counts.wrap_ms, day_counts.handled);
            let th = match &scope {
                Scope::Queue(t, q) => self.cfg.queue_thresholds(t, q),
                _ => self.cfg.thresholds,
            };
            let is_agent = matches!(scope, Scope::Agent(..));
            let mut s = first;
            while s < first + SLOTS_PER_DAY {
                if is_agent && self.buckets.get(&scope).is_none_or(|m| m.range(s..s + per).next().is_none()) {
                    s += per;
                    continue; // an agent's table lists the intervals it was logged in or active
                }
                let c = self.merged(&scope, s..s + per);
                let period_ms = per * SLOT_MS;
                let f = self.figures(&c, period_ms);
                let (traffic, needed) = match scope {
                    Scope::Agent(..) => (None, None),
                    _ => {
                        let aht = f.aht_s.or(day_aht);
                        match aht {
                            Some(aht) if c.offered > 0 => {
                                let a = erlang::traffic(c.offered as f64, period_ms as f64 / 1000.0, aht);
                                (Some(a), Some(erlang::agents_needed(a, aht, th.sl_ms as f64 / 1000.0, self.cfg.target_sl)))
                            }
                            _ => (Some(0.0), Some(0)),
                        }
                    }
                };
                rows.push(IntervalRow {
                    scope: scope.kind(),
                    name: scope.name().to_owned(),
                    start: local_stamp(s, off),
                    start_ms: slot_start_ms(s, off),
                    minutes: len.minutes(),
                    figures: f,
                    traffic_erlangs: traffic,
                    agents_needed: needed,
                });
                s += per;
            }
        }
        Report {
            tenant: tenant.to_owned(),
            day: day.to_string(),
            utc_offset_min: off,
            interval_minutes: len.minutes(),
            sl_formula: self.cfg.sl_formula.name(),
            sl_threshold_s: self.cfg.thresholds.sl_ms as f64 / 1000.0,
            target_sl: self.cfg.target_sl,
            fcr_window_days: self.cfg.fcr_window_days,
            rows,
        }
    }

    /// The figures of one scope over a whole local day (closed period).
    pub fn day_figures(&self, scope: &Scope, day: Date) -> Figures {
        let first = day.first_slot();
        let c = self.merged(scope, first..first + SLOTS_PER_DAY);
        self.figures(&c, DAY_MS)
    }

    /// Forgets everything that happened before `before_ms` (slots, calls, contacts older than the repeat
    /// window), to bound memory in a long-running process. Call it once a day.
    pub fn prune(&mut self, before_ms: i64) {
        for (scope, m) in self.buckets.iter_mut() {
            let off = self.cfg.offset(scope.tenant());
            let keep = slot(before_ms, off);
            *m = m.split_off(&keep);
        }
        self.buckets.retain(|_, m| !m.is_empty());
        self.calls.retain(|_, c| c.last_ms >= before_ms);
        let window = self.cfg.fcr_window_days as i64 * DAY_MS;
        let old: HashSet<String> =
            self.contact_ms.iter().filter(|(_, (t, _))| *t < before_ms - window).map(|(c, _)| c.clone()).collect();
        self.contact_ms.retain(|c, _| !old.contains(c));
        self.fcr.retain(|c, _| !old.contains(c) && self.contact_ms.contains_key(c));
        for by_caller in self.contacts.values_mut() {
            for calls in by_caller.values_mut() {
                calls.retain(|c| !old.contains(c));
            }
            by_caller.retain(|_, v| !v.is_empty());
        }
        self.contacts.retain(|_, m| !m.is_empty());
    }
}

fn add_state_ms(c: &mut Counts, state: &str, ms: u64) {
    if state == "logged_out" || state.is_empty() {
        return;
    }
    c.staffed_ms += ms;
    if state == "ready" {
        c.ready_ms += ms;
    } else if is_busy(state) {
        c.busy_ms += ms;
    } else {
        c.not_ready_ms += ms;
    }
}
