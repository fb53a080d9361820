//! The legs beside the caller (A) and the agent (B): a consulted party (C) and a supervisor (D).
//!
//! # Consultation ("the second counselling screen")
//!
//! The agent calls the department in charge while the caller hears music, talks to it, then joins
//! the caller to it (complete), goes back and forth (swap), makes it a three-way call (conference),
//! or hangs the department up (cancel). The department's INVITE carries the case (`X-Callgate-Case`,
//! subject, data) as a blind transfer's does.
//!
//! ```text
//!                 call.consult (connected call, agent on it)
//!   [A ⇄ B] ─────────────────────────────────────▶ Ringing      A: music, B: silence, C rings
//!      ▲  ▲                                          │  C 2xx
//!      │  │  C refuses / times out / cancel          ▼
//!      │  └─────────────────────────────────────── Talking      A: music, B ⇄ C (mixed)
//!      │       C hangs up / cancel / inactivity      │  ▲ swap
//!      │                                             ▼  │
//!      │                                           Caller       A ⇄ B (relay), C: music
//!      │                                             │  conference (from Talking or Caller)
//!      │                                             ▼
//!      │                                           Conference   A, B, C each hear the other two
//!      │
//!      └── complete, or the agent hangs up with C answered:  B leaves (BYE, wrap-up), C takes B's
//!          place (media `Rebind` C→B, then the zero-copy relay A ⇄ B): one case, the agent's talk in
//!          the queue log's transfer row, the department's talk after it in the call's record.
//!          complete while C still rings: the agent leaves at once, the caller keeps the music, C's
//!          answer bridges it; a refusal puts the caller back into the queue (as a blind transfer).
//! ```
//!
//! # Supervisor monitoring
//!
//! `call.monitor` rings the supervisor's phone (an extension of the tenant, `X-Callgate-Monitor`);
//! once it answers, what each leg hears is computed from the mode (and any consultation):
//!
//! | mode    | supervisor (D) hears  | D is heard by              |
//! |---------|-----------------------|----------------------------|
//! | listen  | everyone talking      | nobody                     |
//! | whisper | everyone talking      | the agent only             |
//! | barge   | everyone talking      | everyone talking           |
//!
//! `stop` (or the supervisor hanging up) ends it; the mode can change without a new call. Hold is
//! refused while a consultation or a monitoring runs (the plan below owns what every leg hears).
//!
//! # What every leg hears
//!
//! While a consultation or monitoring runs, [`Core::apply_plan`] derives from the call's state what
//! each open leg hears (music, or the voices of a set of legs) and sends the media commands for the
//! legs whose hearing changed: `Relay` for the plain caller ⇄ agent pair (the zero-copy path),
//! `Mix` for everything else, `Play` for music.

use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use super::*;
use super::flow::{leg_media, B_CODECS};
use crate::cti::events::{self, CallConferenced, CallConsult, CallTransferred};
use crate::cti::proto::MonitorMode;
use crate::cti::{CtiError, Event, Visibility};
use crate::media::command::MediaCommand;

/// Where the consultation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConsultMode {
    /// The consulted party's phone rings.
    Ringing,
    /// The agent talks to the consulted party; the caller hears music.
    Talking,
    /// The agent is back with the caller; the consulted party hears music.
    Caller,
    /// All three talk.
    Conference,
}

/// A leg callgate called beside A and B: its INVITE (dialog, port, our SDP) and, once answered, its media.
pub(super) struct SideLeg {
    offer: Offer,
    answered: Option<Instant>,
    media: Option<(LegMedia, sdp::Direction)>,
    /// What was dialled (department number or extension).
    to: String,
}

pub(super) struct Consult {
    leg: SideLeg,
    mode: ConsultMode,
    /// The agent left before the consulted party answered: its answer completes the transfer.
    complete_on_answer: bool,
}

impl Consult {
    pub(super) fn answered(&self) -> bool {
        self.leg.answered.is_some()
    }
}

pub(super) struct Monitor {
    leg: SideLeg,
    mode: MonitorMode,
}

/// What a leg hears while a plan is in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Hear {
    Music,
    /// The voices of these legs (sorted, without the leg itself).
    Voices(Vec<Leg>),
}

fn side_of(c: &mut Call, leg: Leg) -> Option<&mut SideLeg> {
    match leg {
        Leg::C => c.consult.as_mut().map(|k| &mut k.leg),
        Leg::D => c.monitor.as_mut().map(|m| &mut m.leg),
        Leg::A | Leg::B => None,
    }
}

fn slot(leg: Leg) -> usize {
    match leg {
        Leg::A => 0,
        Leg::B => 1,
        Leg::C => 2,
        Leg::D => 3,
    }
}

/// What each leg hears, from the call's consultation and monitoring (`None`: the plan does not
/// decide for that leg: it is not open, or nothing beside A and B runs).
fn plan(c: &Call) -> [Option<Hear>; 4] {
    let mut out: [Option<Hear>; 4] = Default::default();
    let b_open = c.b_port.is_some() && c.agent.is_some();
    let c_up = c.consult.as_ref().filter(|k| k.answered()).map(|k| k.mode);
    let ringing = c.consult.as_ref().is_some_and(|k| !k.answered());
    let voices = |v: &[Leg]| Hear::Voices(v.to_vec());
    match (c_up, ringing) {
        (Some(ConsultMode::Talking), _) => {
            out[0] = Some(Hear::Music);
            out[1] = b_open.then(|| voices(&[Leg::C]));
            out[2] = Some(voices(if b_open { &[Leg::B] } else { &[] }));
        }
        (Some(ConsultMode::Caller), _) => {
            out[0] = Some(voices(&[Leg::B]));
            out[1] = b_open.then(|| voices(&[Leg::A]));
            out[2] = Some(Hear::Music);
        }
        (Some(ConsultMode::Conference), _) => {
            out[0] = Some(voices(&[Leg::B, Leg::C]));
            out[1] = b_open.then(|| voices(&[Leg::A, Leg::C]));
            out[2] = Some(voices(&[Leg::A, Leg::B]));
        }
        (Some(ConsultMode::Ringing) | None, true) => {
            out[0] = Some(Hear::Music);
            out[1] = b_open.then(|| voices(&[]));
        }
        (Some(ConsultMode::Ringing) | None, false) => {
            out[0] = Some(voices(&[Leg::B]));
            out[1] = b_open.then(|| voices(&[Leg::A]));
        }
    }
    if let Some(m) = c.monitor.as_ref().filter(|m| m.leg.answered.is_some()) {
        // Who is in the conversation: the legs that hear voices.
        let talkers: Vec<Leg> =
            [Leg::A, Leg::B, Leg::C].into_iter().filter(|l| matches!(out[slot(*l)], Some(Hear::Voices(_)))).collect();
        out[3] = Some(Hear::Voices(talkers.clone()));
        let heard_by: Vec<Leg> = match m.mode {
            MonitorMode::Listen | MonitorMode::Stop => Vec::new(),
            MonitorMode::Whisper => talkers.iter().copied().filter(|l| *l == Leg::B).collect(),
            MonitorMode::Barge => talkers,
        };
        for l in heard_by {
            if let Some(Hear::Voices(v)) = &mut out[slot(l)] {
                v.push(Leg::D);
            }
        }
    }
    for h in out.iter_mut().flatten() {
        if let Hear::Voices(v) = h {
            v.sort_by_key(|l| slot(*l));
            v.dedup();
        }
    }
    out
}

impl Core {
    /// Where `to` rings for tenant `tenant`: a department (a service number that bridges to a fixed
    /// SIP destination), a `sip:` URI, or an agent's extension (its registered phone).
    /// Also the agent whose extension it is, if it is one (that agent's desktop gets the case).
    pub(super) fn resolve_target(&self, tenant: &str, to: &str) -> Result<(String, Peer, Option<crate::acd::AgentRef>), CtiError> {
        let department = self
            .profile
            .tenants
            .iter()
            .find(|t| t.id == tenant)
            .and_then(|t| t.services.iter().find(|s| s.number == to && s.bridge_to.is_some()))
            .and_then(|s| s.bridge_to.clone());
        if let Some(uri) = department {
            let addr = dialog::uri_socket_addr(&uri).ok_or_else(|| CtiError::Internal(format!("department {to}: bad URI {uri:?}")))?;
            return Ok((uri.clone(), Peer { transport: bridge_transport(&uri), addr, conn: None }, None));
        }
        if to.starts_with("sip:") {
            let addr = dialog::uri_socket_addr(to).ok_or_else(|| CtiError::BadRequest(format!("{to:?}: expected sip:user@IP:port")))?;
            return Ok((to.to_owned(), Peer { transport: bridge_transport(to), addr, conn: None }, None));
        }
        let a = self
            .acd
            .agents()
            .find(|(_, s, _)| s.tenant == tenant && s.extension == to)
            .map(|(r, _, _)| r)
            .ok_or_else(|| CtiError::NotFound(format!("{to:?} is neither a department number nor an extension of tenant {tenant:?}")))?;
        let spec = self.acd.agent_spec(a);
        let b = self
            .registrar
            .lookup(&spec.tenant, &spec.extension)
            .first()
            .cloned()
            .ok_or_else(|| CtiError::WrongState(format!("extension {to} has no registered phone")))?;
        Ok((b.contact, b.source, Some(a)))
    }

    /// The agent a call is transferred or consulted to (by extension) sees the whole case on its
    /// desktop: a `call.data` event with the attached data, before its phone rings.
    pub(super) fn show_case_to(&mut self, key: CallKey, agent: Option<crate::acd::AgentRef>) {
        let (Some(a), Some(c)) = (agent, self.calls.get(&key)) else { return };
        let id = self.acd.agent_spec(a).id.clone();
        let (tenant, cg, data) = (c.tenant.clone(), c.cg_id.clone(), c.data.clone());
        self.publish(Event::new(
            events::CALL_DATA,
            Visibility::call(&tenant, &cg, std::slice::from_ref(&id)),
            &crate::cti::events::CallData { call: cg.clone(), tenant, data },
        ));
    }

    /// The headers that carry the case to another phone.
    pub(super) fn case_headers(&self, key: CallKey) -> Vec<(&'static str, String)> {
        let Some(c) = self.calls.get(&key) else { return Vec::new() };
        let mut extra = vec![("X-Callgate-Case", c.cg_id.clone()), ("X-Callgate-Caller", c.caller.clone())];
        if let Some(Value::String(s)) = c.data.get("subject") {
            extra.push(("X-Callgate-Subject", s.clone()));
        }
        if !c.data.is_empty() {
            extra.push(("X-Callgate-Data", serde_json::to_string(&c.data).unwrap_or_default()));
        }
        extra
    }

    fn ring_side(&mut self, now: Instant, key: CallKey, side: Side, to: &str, extra: &[(&str, String)]) -> Result<SideLeg, CtiError> {
        let tenant = self.calls[&key].tenant.clone();
        let (target, peer, agent) = self.resolve_target(&tenant, to)?;
        let offer = self
            .new_offer(now, key, &target, peer, None, 70, extra, side)
            .ok_or_else(|| CtiError::Internal("no RTP port for the new leg".into()))?;
        if side == Side::C {
            self.show_case_to(key, agent);
        }
        Ok(SideLeg { offer, answered: None, media: None, to: to.to_owned() })
    }

    fn publish_consult(&mut self, key: CallKey, phase: &str) {
        let Some(c) = self.calls.get(&key) else { return };
        let Some(k) = c.consult.as_ref() else { return };
        let agent = c.agent.or(c.last_agent).map(|a| self.acd.agent_spec(a).id.clone()).unwrap_or_default();
        let (tenant, cg, to) = (c.tenant.clone(), c.cg_id.clone(), k.leg.to.clone());
        let agents = self.call_agents(key);
        self.publish(Event::new(
            events::CALL_CONSULT,
            Visibility::call(&tenant, &cg, &agents),
            &CallConsult { call: cg.clone(), tenant, agent, to, phase: phase.to_owned() },
        ));
    }

    fn publish_monitor(&mut self, key: CallKey, phase: &str) {
        let Some(c) = self.calls.get(&key) else { return };
        let Some(m) = c.monitor.as_ref() else { return };
        let mode = match m.mode {
            MonitorMode::Listen => "listen",
            MonitorMode::Whisper => "whisper",
            MonitorMode::Barge => "barge",
            MonitorMode::Stop => "stop",
        };
        let (tenant, cg) = (c.tenant.clone(), c.cg_id.clone());
        let ev = crate::cti::events::CallMonitor {
            call: cg.clone(),
            tenant: tenant.clone(),
            supervisor: m.leg.to.clone(),
            mode: mode.to_owned(),
            phase: phase.to_owned(),
        };
        // Supervisors and integrations of the tenant see it; the agent does not.
        self.publish(Event::new(events::CALL_MONITOR, Visibility::tenant_wide(&tenant), &ev));
    }

    /// Sends the media commands that make every open leg hear what [`plan`] says, for the legs whose
    /// hearing changed since the last call.
    pub(super) fn apply_plan(&mut self, key: CallKey) {
        let music = self.music_for(key);
        let Some(c) = self.calls.get_mut(&key) else { return };
        let want = plan(c);
        let open = [c.a_open, c.b_port.is_some(), c.consult.as_ref().is_some_and(|k| k.answered()), c.monitor.as_ref().is_some_and(|m| m.leg.answered.is_some())];
        for (i, leg) in [Leg::A, Leg::B, Leg::C, Leg::D].into_iter().enumerate() {
            let Some(h) = want[i].clone() else {
                c.heard[i] = None;
                continue;
            };
            if !open[i] || c.heard[i].as_ref() == Some(&h) {
                continue;
            }
            let cmd = match &h {
                Hear::Music => MediaCommand::Play { call: key, leg, playlist: music.clone(), looped: true, barge_in: false },
                Hear::Voices(v) if matches!(leg, Leg::A | Leg::B) && v.as_slice() == [leg.other()] => MediaCommand::Relay { call: key, to_leg: leg },
                Hear::Voices(v) => MediaCommand::Mix { call: key, to_leg: leg, from: v.clone() },
            };
            self.outputs.push_back(Output::Media(cmd));
            c.heard[i] = Some(h);
        }
    }

    /// A consultation or monitoring is about to begin: until now caller and agent were on the
    /// direct relay (the commands' preconditions: connected, not held).
    fn plan_begins(&mut self, key: CallKey) {
        let Some(c) = self.calls.get_mut(&key) else { return };
        if c.consult.is_none() && c.monitor.is_none() {
            c.heard = [Some(Hear::Voices(vec![Leg::B])), Some(Hear::Voices(vec![Leg::A])), None, None];
        }
    }

    /// Back to plain caller ⇄ agent once nothing beside them runs.
    fn plan_done(&mut self, key: CallKey) {
        let Some(c) = self.calls.get_mut(&key) else { return };
        if c.consult.is_some() || c.monitor.is_some() {
            self.apply_plan(key);
            return;
        }
        let relay = c.heard[0].as_ref() != Some(&Hear::Voices(vec![Leg::B])) || c.heard[1].as_ref() != Some(&Hear::Voices(vec![Leg::A]));
        c.heard = Default::default();
        if relay {
            self.relay_both(key);
        }
    }

    // ---- consultation -------------------------------------------------------------------------

    pub(super) fn consult_start(&mut self, now: Instant, key: CallKey, to: &str) -> Result<(), CtiError> {
        let c = &self.calls[&key];
        if c.state != State::Connected || c.agent.is_none() {
            return Err(CtiError::WrongState("consultation needs a call connected to an agent".into()));
        }
        if c.consult.is_some() {
            return Err(CtiError::WrongState("a consultation is already running on this call".into()));
        }
        if c.held.is_some() {
            return Err(CtiError::WrongState("resume the call first: the consultation holds the caller itself".into()));
        }
        let extra = self.case_headers(key);
        let refs: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.clone())).collect();
        let leg = self.ring_side(now, key, Side::C, to, &refs)?;
        self.plan_begins(key);
        let c = self.calls.get_mut(&key).expect("found");
        c.consult = Some(Consult { leg, mode: ConsultMode::Ringing, complete_on_answer: false });
        self.apply_plan(key);
        self.publish_consult(key, "started");
        Ok(())
    }

    pub(super) fn consult_swap(&mut self, key: CallKey) -> Result<(), CtiError> {
        let c = self.calls.get_mut(&key).expect("found");
        let Some(k) = c.consult.as_mut().filter(|k| k.answered() && c.agent.is_some()) else {
            return Err(CtiError::WrongState("swap needs an answered consultation".into()));
        };
        k.mode = match k.mode {
            ConsultMode::Talking => ConsultMode::Caller,
            ConsultMode::Caller => ConsultMode::Talking,
            ConsultMode::Conference | ConsultMode::Ringing => {
                return Err(CtiError::WrongState("swap needs a consultation with one party on hold (not a conference)".into()))
            }
        };
        let phase = if k.mode == ConsultMode::Caller { "caller" } else { "consulted" };
        self.apply_plan(key);
        self.publish_consult(key, phase);
        Ok(())
    }

    pub(super) fn conference(&mut self, key: CallKey) -> Result<(), CtiError> {
        let c = self.calls.get_mut(&key).expect("found");
        let Some(k) = c.consult.as_mut().filter(|k| k.answered() && c.agent.is_some()) else {
            return Err(CtiError::WrongState("a conference needs an answered consultation (call.consult first)".into()));
        };
        if k.mode == ConsultMode::Conference {
            return Err(CtiError::WrongState("the call is a conference already".into()));
        }
        k.mode = ConsultMode::Conference;
        let to = k.leg.to.clone();
        self.apply_plan(key);
        let c = &self.calls[&key];
        let agent = c.agent.map(|a| self.acd.agent_spec(a).id.clone()).unwrap_or_default();
        let (tenant, cg, caller) = (c.tenant.clone(), c.cg_id.clone(), c.caller.clone());
        let ext = c.agent.map(|a| self.acd.agent_spec(a).extension.clone()).unwrap_or_default();
        let agents = self.call_agents(key);
        self.publish(Event::new(
            events::CALL_CONFERENCED,
            Visibility::call(&tenant, &cg, &agents),
            &CallConferenced { call: cg.clone(), tenant, agent, parties: vec![caller, ext, to] },
        ));
        Ok(())
    }

    pub(super) fn consult_cancel(&mut self, now: Instant, key: CallKey) -> Result<(), CtiError> {
        if self.calls[&key].consult.is_none() || self.calls[&key].agent.is_none() {
            return Err(CtiError::WrongState("no consultation to cancel".into()));
        }
        self.publish_consult(key, "cancelled");
        self.drop_side(now, key, Leg::C, true, "consultation cancelled");
        Ok(())
    }

    pub(super) fn consult_complete(&mut self, now: Instant, key: CallKey) -> Result<(), CtiError> {
        let c = &self.calls[&key];
        let Some(k) = c.consult.as_ref().filter(|_| c.agent.is_some()) else {
            return Err(CtiError::WrongState("no consultation to complete".into()));
        };
        if k.answered() {
            self.complete(now, key, true);
        } else {
            self.leave_before_answer(now, key, true);
        }
        Ok(())
    }

    /// The agent hung up during a consultation: a transfer to the consulted party (at once if it
    /// answered, else when it does).
    pub(super) fn agent_left_consult(&mut self, now: Instant, key: CallKey) {
        if self.calls.get(&key).and_then(|c| c.consult.as_ref()).is_some_and(|k| k.answered()) {
            self.complete(now, key, false);
        } else {
            self.leave_before_answer(now, key, false);
        }
    }

    /// The agent leaves while the consulted party still rings: its answer bridges the caller, who
    /// keeps the music meanwhile.
    fn leave_before_answer(&mut self, now: Instant, key: CallKey, bye: bool) {
        self.agent_leaves(now, key, bye);
        let Some(c) = self.calls.get_mut(&key) else { return };
        if let Some(k) = c.consult.as_mut() {
            k.complete_on_answer = true;
        }
        c.state = State::Queued;
        c.queued_at = None;
        self.apply_plan(key);
    }

    /// The agent's part ends for a consult transfer: the ACD's transfer row and wrap-up, BYE (unless
    /// the agent hung up), leg B closed, the agent's talk kept for the record.
    fn agent_leaves(&mut self, now: Instant, key: CallKey, bye: bool) {
        let Some(to) = self.calls.get(&key).and_then(|c| c.consult.as_ref()).map(|k| k.leg.to.clone()) else { return };
        self.acd.transferred(now, key, &to);
        let c = self.calls.get_mut(&key).expect("found");
        let agent_id = c.agent.map(|a| self.acd.agent_spec(a).id.clone());
        c.transfer_talk_ms += c.talk_from.map(|t| ms_between(t, now)).unwrap_or(0);
        c.talk_from = None;
        c.transferred_to = Some(to.clone());
        if let Some(mut b) = c.b.take() {
            self.dialogs.remove(dkey(&(b.call_id.as_str(), b.local_tag.as_str())));
            if bye {
                let (peer, branch, msg) = b.bye(&mut self.rng, &self.cfg, "transferred");
                let t = self.txn.request(now, Method::Bye, &branch, msg, peer);
                self.clients.insert(t, (key, Purpose::Bye));
            }
        }
        c.agent = None;
        if let Some(port) = c.b_port.take() {
            self.ports.release(port);
            self.outputs.push_back(Output::Media(MediaCommand::CloseLeg { call: key, leg: Leg::B }));
        }
        c.b_media = None;
        c.b_sdp = None;
        c.heard[1] = None;
        let (tenant, cg) = (c.tenant.clone(), c.cg_id.clone());
        self.publish(Event::new(
            events::CALL_TRANSFERRED,
            Visibility::call(&tenant, &cg, &agent_id.iter().cloned().collect::<Vec<_>>()),
            &CallTransferred { call: cg.clone(), tenant, agent: agent_id, to, kind: "consult".into() },
        ));
        // The supervisor was there for the agent's conversation.
        if self.calls.get(&key).is_some_and(|c| c.monitor.is_some()) {
            self.drop_side(now, key, Leg::D, true, "agent left");
        }
    }

    /// The consulted party (answered) takes the agent's place: C becomes the call's B leg.
    fn complete(&mut self, now: Instant, key: CallKey, bye_agent: bool) {
        if self.calls.get(&key).is_some_and(|c| c.agent.is_some()) {
            self.agent_leaves(now, key, bye_agent);
        }
        let Some(c) = self.calls.get_mut(&key) else { return };
        let Some(k) = c.consult.take() else { return };
        let offer = k.leg.offer;
        self.dialogs.insert((offer.dialog.call_id.clone(), offer.dialog.local_tag.clone()), (key, Side::B));
        self.outputs.push_back(Output::Media(MediaCommand::Rebind { call: key, from: Leg::C, to: Leg::B }));
        c.b_port = Some(offer.port);
        c.b_media = k.leg.media;
        c.b_sdp = Some(offer.sdp.clone());
        c.b = Some(offer.dialog);
        c.state = State::Connected;
        c.talk_from = Some(now);
        c.heard = Default::default();
        self.relay_both(key);
    }

    // ---- supervisor ---------------------------------------------------------------------------

    pub(super) fn monitor(&mut self, now: Instant, key: CallKey, mode: MonitorMode, extension: Option<&str>) -> Result<(), CtiError> {
        let c = &self.calls[&key];
        if mode == MonitorMode::Stop {
            if c.monitor.is_none() {
                return Err(CtiError::WrongState("nobody monitors this call".into()));
            }
            self.publish_monitor(key, "ended");
            self.drop_side(now, key, Leg::D, true, "monitoring stopped");
            return Ok(());
        }
        if c.state != State::Connected || c.agent.is_none() {
            return Err(CtiError::WrongState("monitoring needs a call connected to an agent".into()));
        }
        if c.held.is_some() {
            return Err(CtiError::WrongState("the call is on hold".into()));
        }
        if let Some(m) = self.calls.get_mut(&key).expect("found").monitor.as_mut() {
            m.mode = mode;
            self.apply_plan(key);
            self.publish_monitor(key, "mode");
            return Ok(());
        }
        let Some(ext) = extension else { return Err(CtiError::MissingField("args.extension (the supervisor's phone)".into())) };
        let mode_s = match mode {
            MonitorMode::Listen => "listen",
            MonitorMode::Whisper => "whisper",
            _ => "barge",
        };
        let mut extra = self.case_headers(key);
        extra.push(("X-Callgate-Monitor", mode_s.to_owned()));
        let refs: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.clone())).collect();
        let leg = self.ring_side(now, key, Side::D, ext, &refs)?;
        self.plan_begins(key);
        self.calls.get_mut(&key).expect("found").monitor = Some(Monitor { leg, mode });
        self.publish_monitor(key, "ringing");
        Ok(())
    }

    // ---- SIP of the side legs -----------------------------------------------------------------

    fn side_leg_mut(&mut self, key: CallKey, leg: Leg) -> Option<&mut SideLeg> {
        side_of(self.calls.get_mut(&key)?, leg)
    }

    pub(super) fn on_side_response(&mut self, now: Instant, txn: TxnId, key: CallKey, leg: Leg, msg: Message) {
        let code = msg.status().unwrap_or(0);
        let ours = self.side_leg_mut(key, leg).is_some_and(|s| s.offer.txn == txn);
        if !ours {
            if (200..300).contains(&code) {
                self.ack_and_bye_orphan(now, &msg);
            }
            if code >= 200 {
                self.clients.remove(&txn);
            }
            return;
        }
        match code {
            0..=199 => {}
            200..=299 => {
                let Some(s) = self.calls.get_mut(&key).and_then(|c| side_of(c, leg)) else { return };
                if s.answered.is_some() {
                    // A retransmitted 2xx: ACK it again.
                    let (peer, ack) = s.offer.dialog.ack(&msg, &mut self.rng, &self.cfg);
                    self.outputs.push_back(Output::Transmit(Transmit { peer, data: ack, mark: None }));
                    return;
                }
                let keep_peer = s.offer.dialog.peer;
                s.offer.dialog.confirm_uac(&msg);
                s.offer.dialog.peer = keep_peer;
                let (peer, ack) = s.offer.dialog.ack(&msg, &mut self.rng, &self.cfg);
                self.outputs.push_back(Output::Transmit(Transmit { peer, data: ack, mark: None }));
                let Some(answer) = sdp::parse_answer(&msg.body()).ok() else {
                    tracing::info!(call = key, %leg, "leg answered without a usable SDP answer: BYE");
                    self.drop_side(now, key, leg, true, "no usable media");
                    return;
                };
                let s = self.side_leg_mut(key, leg).expect("ours");
                s.answered = Some(now);
                s.media = Some((leg_media(&answer), answer.direction));
                let port = s.offer.port;
                self.open_leg(key, leg, port, &answer);
                match leg {
                    Leg::C => {
                        let c = self.calls.get_mut(&key).expect("found");
                        let k = c.consult.as_mut().expect("ours");
                        k.mode = ConsultMode::Talking;
                        if k.complete_on_answer {
                            self.complete(now, key, false);
                            return;
                        }
                        self.apply_plan(key);
                        self.publish_consult(key, "answered");
                    }
                    _ => {
                        self.apply_plan(key);
                        self.publish_monitor(key, "answered");
                    }
                }
            }
            _ => {
                self.clients.remove(&txn);
                self.side_failed(now, key, leg, txn, code);
            }
        }
    }

    /// The side leg's INVITE got a failure (or no answer at all).
    pub(super) fn side_failed(&mut self, now: Instant, key: CallKey, leg: Leg, txn: TxnId, code: u16) {
        if !self.side_leg_mut(key, leg).is_some_and(|s| s.offer.txn == txn && s.answered.is_none()) {
            return;
        }
        tracing::info!(call = key, %leg, code, "the leg did not answer");
        match leg {
            Leg::C => self.publish_consult(key, "failed"),
            _ => self.publish_monitor(key, "failed"),
        }
        let after_agent = leg == Leg::C && self.calls[&key].consult.as_ref().is_some_and(|k| k.complete_on_answer);
        if let Some(s) = self.take_side(key, leg) {
            // A failed INVITE: its transaction is over, no CANCEL; only the dialog and the port go.
            self.dialogs.remove(dkey(&(s.offer.dialog.call_id.as_str(), s.offer.dialog.local_tag.as_str())));
            self.ports.release(s.offer.port);
        }
        if after_agent {
            self.requeue(now, key);
            return;
        }
        self.plan_done(key);
    }

    /// Ends a side leg from callgate's side (`bye`: BYE if answered, CANCEL if ringing) or after the
    /// far end's BYE (`bye` false), and puts the others back together.
    pub(super) fn drop_side(&mut self, now: Instant, key: CallKey, leg: Leg, bye: bool, reason: &str) {
        let Some(s) = self.take_side(key, leg) else { return };
        self.release_side(now, key, leg, s, bye, reason);
        let agentless = self.calls.get(&key).is_some_and(|c| c.agent.is_none() && c.b.is_none());
        if agentless && leg == Leg::C {
            // The transfer's target went away before the agent's seat was taken.
            self.requeue(now, key);
            return;
        }
        self.plan_done(key);
    }

    /// The side leg out of the call (its hearing forgotten).
    fn take_side(&mut self, key: CallKey, leg: Leg) -> Option<SideLeg> {
        let c = self.calls.get_mut(&key)?;
        c.heard[slot(leg)] = None;
        match leg {
            Leg::C => c.consult.take().map(|k| k.leg),
            Leg::D => c.monitor.take().map(|m| m.leg),
            Leg::A | Leg::B => None,
        }
    }

    /// Closes a side leg taken out of the call: its port and dialog, with a BYE (`bye`, when answered)
    /// or a CANCEL (still ringing).
    fn release_side(&mut self, now: Instant, key: CallKey, leg: Leg, mut s: SideLeg, bye: bool, reason: &str) {
        if s.answered.is_none() {
            self.cancel_offer(now, key, s.offer);
            return;
        }
        self.outputs.push_back(Output::Media(MediaCommand::CloseLeg { call: key, leg }));
        self.dialogs.remove(dkey(&(s.offer.dialog.call_id.as_str(), s.offer.dialog.local_tag.as_str())));
        self.ports.release(s.offer.port);
        if bye {
            let (peer, branch, msg) = s.offer.dialog.bye(&mut self.rng, &self.cfg, reason);
            let t = self.txn.request(now, Method::Bye, &branch, msg, peer);
            self.clients.insert(t, (key, Purpose::Bye));
        }
    }

    /// The agent had left for a transfer whose target is gone: as after a refused blind transfer,
    /// the caller goes back into the queue.
    fn requeue(&mut self, now: Instant, key: CallKey) {
        if let Some(c) = self.calls.get_mut(&key) {
            c.transferred_to = None;
            c.heard = Default::default();
        }
        self.enter_queue(now, key);
    }

    /// The side leg hung up (BYE) or went silent (`inactive`: callgate sends the BYE).
    pub(super) fn side_gone(&mut self, now: Instant, key: CallKey, leg: Leg, inactive: bool, reason: &str) {
        match leg {
            Leg::C => self.publish_consult(key, "ended"),
            _ => self.publish_monitor(key, "ended"),
        }
        self.drop_side(now, key, leg, inactive, reason);
    }

    /// A re-INVITE from a side leg: a session refresh gets our SDP again; a changed description is
    /// applied.
    pub(super) fn side_reinvite(&mut self, now: Instant, txn: TxnId, msg: Message, key: CallKey, leg: Leg) {
        let body = msg.body();
        let Some(s) = self.side_leg_mut(key, leg).filter(|s| s.answered.is_some()) else {
            let resp = self.response(&msg, 491, "Request Pending").build();
            self.txn.respond(now, txn, 491, resp, None);
            return;
        };
        let (port, contact, ours) = (s.offer.port, s.offer.dialog.local_contact.clone(), s.offer.sdp.clone());
        let current = s.media;
        let codecs: Vec<crate::media::Codec> = match current {
            Some((m, _)) => vec![m.codec],
            None => B_CODECS.to_vec(),
        };
        let n = if body.is_empty() {
            None
        } else {
            match sdp::answer(&body, &codecs, self.cfg.media_ip, port, key << 8 | 0xcc) {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::info!(call = key, %leg, error = %e, "re-offer refused");
                    let resp = self.response(&msg, 488, "Not Acceptable Here").build();
                    self.txn.respond(now, txn, 488, resp, None);
                    return;
                }
            }
        };
        let changed = n.as_ref().filter(|n| current != Some((leg_media(n), n.direction)));
        // A refresh gets our description unchanged (RFC 3264 8); a change gets the new answer.
        let reply: Bytes = changed.map(|n| n.sdp.clone()).unwrap_or(ours);
        let resp = self.response(&msg, 200, "OK").header("Contact", &format!("<{contact}>")).body("application/sdp", &reply).build();
        self.txn.respond(now, txn, 200, resp, None);
        if let Some(n) = changed {
            let (media, direction) = (leg_media(n), n.direction);
            if let Some(s) = self.side_leg_mut(key, leg) {
                s.media = Some((media, direction));
            }
            self.outputs.push_back(Output::Media(MediaCommand::Update { call: key, leg, media, direction }));
        }
    }

    /// The call ends: CANCEL or BYE every side leg.
    pub(super) fn end_side_legs(&mut self, now: Instant, key: CallKey, reason: &str) {
        for leg in [Leg::C, Leg::D] {
            if let Some(s) = self.take_side(key, leg) {
                self.release_side(now, key, leg, s, true, reason);
            }
        }
    }

    /// Whether hold is refused because a consultation or monitoring owns what the legs hear.
    pub(super) fn plan_running(&self, key: CallKey) -> bool {
        self.calls.get(&key).is_some_and(|c| c.consult.is_some() || c.monitor.is_some())
    }
}
