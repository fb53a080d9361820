//! Internal state of the ACD and the routing machinery. See the module documentation of
//! [`crate::acd`] for the rules; this file holds the indexes that make a decision cheap.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use super::types::*;

/// Virtual time: nanoseconds since the instant the [`super::Acd`] was built (negative before it).
pub(super) type Ticks = i64;

pub(super) const NS_PER_MS: i64 = 1_000_000;

pub(super) fn ticks(d: std::time::Duration) -> Ticks {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX / 4)
}

pub(super) fn ms(d: Ticks) -> u64 {
    (d.max(0) / NS_PER_MS) as u64
}

/// One skill requirement, interned.
#[derive(Clone, Debug)]
pub(super) struct Req {
    pub skill: u32,
    pub level: u8,
    /// (after this wait, accept this level), sorted by wait.
    pub relax: Vec<(Ticks, u8)>,
}

impl Req {
    /// The level required after waiting `waited`: the lowest of the base level and every relaxed level
    /// whose time has come.
    #[inline]
    pub fn level_at(&self, waited: Ticks) -> u8 {
        let mut l = self.level;
        for &(d, lv) in &self.relax {
            if waited < d {
                break;
            }
            l = l.min(lv);
        }
        l
    }
}

/// The callers of one queue that share one set of requirements (the queue's own plus the menu skill).
/// Within a priority, callers are ordered by their place in line (`line_t`, then id); the oldest has
/// waited longest and so has the most relaxed requirement: if an agent does not qualify for the
/// first caller of a priority, it qualifies for none of that priority.
pub(super) struct Group {
    pub skill: Option<u32>,
    pub reqs: Vec<Req>,
    /// Distinct relaxation times, ascending.
    pub relax_points: Vec<Ticks>,
    /// Routable callers (waiting, not being offered), by priority (highest first) then place.
    pub by_prio: BTreeMap<Reverse<u8>, BTreeSet<(Ticks, u64)>>,
}

/// An available agent's place in a queue's order: (penalty, key1, key2, agent). The smallest goes first.
pub(super) type ReadyKey = (u32, i64, i64, u32);

pub(super) struct Queue {
    pub spec: QueueSpec,
    pub groups: Vec<Group>,
    /// Everyone in line (waiting, ringing, callbacks keeping their place or being dialled):
    /// (priority desc, place, id).
    pub line: BTreeSet<(Reverse<u8>, Ticks, u64)>,
    /// The queue's Ready agents, in the order of the strategy.
    pub ready: BTreeSet<ReadyKey>,
    /// Round-robin memory: the agent offered the last call.
    pub rr_last: Option<u32>,
    pub members: Vec<u32>,
    pub logged_in: u32,
    /// EWMA of talk + wrap-up, milliseconds.
    pub handle_ms: f64,
    pub overflow_to: Option<u32>,
    pub max_wait: Option<Ticks>,
    pub ring: Ticks,
    pub wrap: Ticks,
    pub announce: Option<Ticks>,
}

pub(super) struct Member {
    pub queue: u32,
    pub penalty: u32,
    /// Calls answered from this queue (fewest-calls).
    pub calls: u64,
    /// Talk time in this queue, ms (least-talk).
    pub talk_ms: u64,
    /// The agent's key in the queue's ready set while Ready.
    pub key: Option<ReadyKey>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct OfferRef {
    pub uid: u64,
    pub since: Ticks,
    pub no: u64,
}

pub(super) struct Agent {
    pub spec: AgentSpec,
    pub state: AgentState,
    /// (skill, level), sorted by skill.
    pub skills: Vec<(u32, u8)>,
    pub members: Vec<Member>,
    pub idle_since: Ticks,
    pub misses: u32,
    pub offer: Option<OfferRef>,
    pub offer_no: u64,
    pub wrap_no: u64,
    pub wrap_start: Ticks,
    pub wrap_queue: u32,
    pub wrap_talk_ms: u64,
    pub pending_logout: Option<String>,
    pub pending_not_ready: Option<String>,
    /// The last call this agent talked on (for dispositions).
    pub last_call: Option<(String, u32)>,
}

impl Agent {
    #[inline]
    pub fn level(&self, skill: u32) -> u8 {
        match self.skills.binary_search_by_key(&skill, |s| s.0) {
            Ok(i) => self.skills[i].1,
            Err(_) => 0,
        }
    }

    #[inline]
    pub fn qualifies(&self, reqs: &[Req], waited: Ticks) -> bool {
        reqs.iter().all(|r| self.level(r.skill) >= r.level_at(waited))
    }

    pub fn member(&self, q: u32) -> Option<usize> {
        self.members.iter().position(|m| m.queue == q)
    }
}

pub(super) struct Cb {
    pub number: String,
    pub attempts: u32,
    pub due_t: Ticks,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// In line and routable.
    Waiting,
    /// In line, ringing these agents.
    Offered { agents: Vec<u32>, since: Ticks },
    /// A callback in line whose agent is reserved while the core dials the citizen.
    Dialing { agent: u32, since: Ticks },
    /// A callback not yet due (scheduled, or waiting for a retry): not in line.
    Parked,
}

/// A caller in line, or a callback.
pub(super) struct Entry {
    pub uid: u64,
    pub call: Option<CallRef>,
    pub callback: Option<Cb>,
    pub queue: u32,
    pub group: u32,
    pub info: CallInfo,
    pub prio: u8,
    /// Place in line: when the caller first entered (kept across overflow and callback).
    pub line_t: Ticks,
    /// When it joined the current queue (maximum wait, announcements).
    pub queue_t: Ticks,
    /// Bumped on each join/conversion: invalidates the timers of the previous one.
    pub join: u32,
    pub status: Status,
    /// The maximum wait ran out while an agent rang: apply it if the offer fails.
    pub max_wait_pending: bool,
}

/// A connected conversation.
pub(super) struct Talk {
    pub agent: u32,
    pub queue: u32,
    pub cg_id: String,
    pub since: Ticks,
    pub hold_ms: u64,
    pub held_since: Option<Ticks>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// Ring timeout (or callback dial timeout) of an agent's offer number `no`.
    Offer { agent: u32, no: u64 },
    Wrapup { agent: u32, no: u64 },
    MaxWait { uid: u64, join: u32 },
    Announce { uid: u64, join: u32 },
    Relax { uid: u64, join: u32 },
    CallbackDue { uid: u64, attempts: u32 },
}

/// Pick the agents to offer a caller to, by the queue's strategy, among its Ready agents that qualify
/// for `reqs` after `waited`, skipping `exclude`. Lower penalty always first. RingAll returns every
/// qualified agent of the lowest penalty that has one; the others one agent at most. Cost: the
/// Ready agents scanned until the first qualified one (Random: all of the lowest penalty level).
pub(super) fn select(
    q: &Queue,
    reqs: &[Req],
    waited: Ticks,
    exclude: &[u32],
    agents: &[Agent],
    rng: &mut crate::sip::Rng,
    out: &mut Vec<u32>,
) {
    let ok = |a: u32| !exclude.contains(&a) && agents[a as usize].qualifies(reqs, waited);
    match q.spec.strategy {
        Strategy::Random => {
            // uniform among the qualified agents of the lowest penalty that has one: count, then draw
            let Some(&(p, _, _, first)) = q.ready.iter().find(|k| ok(k.3)) else { return };
            let level = q.ready.range((p, i64::MIN, i64::MIN, 0)..).take_while(|k| k.0 == p);
            let n = level.clone().filter(|k| ok(k.3)).count() as u64;
            let pick = if n <= 1 { 0 } else { rng.next_u64() % n };
            out.push(level.filter(|k| ok(k.3)).nth(pick as usize).map(|k| k.3).unwrap_or(first));
        }
        Strategy::RingAll => {
            let mut pen = None;
            for &(p, _, _, a) in &q.ready {
                if let Some(pp) = pen {
                    if p != pp {
                        break;
                    }
                }
                if ok(a) {
                    pen = Some(p);
                    out.push(a);
                }
            }
        }
        Strategy::RoundRobin => {
            let last = q.rr_last.map(|a| a as i64).unwrap_or(-1);
            let mut level = q.ready.first().map(|k| k.0);
            while let Some(p) = level {
                let after = q.ready.range((p, last + 1, i64::MIN, 0)..(p, i64::MAX, i64::MAX, u32::MAX));
                let before = q.ready.range((p, i64::MIN, i64::MIN, 0)..(p, last + 1, i64::MIN, 0));
                if let Some(&(_, _, _, a)) = after.chain(before).find(|k| ok(k.3)) {
                    out.push(a);
                    return;
                }
                level = match p.checked_add(1) {
                    Some(np) => q.ready.range((np, i64::MIN, i64::MIN, 0)..).next().map(|k| k.0),
                    None => None,
                };
            }
        }
        _ => {
            if let Some(&(_, _, _, a)) = q.ready.iter().find(|k| ok(k.3)) {
                out.push(a);
            }
        }
    }
}
