//! The caller's path after the answer, and the ACD and registrar glue.
//!
//! ```text
//!  [Answered] ──ACK──▶ [Playing] guidance ──end──▶ menu? ──▶ [Menu] prompt, key / timeout / invalid
//!                         │ (early media: 183, no ACK)              │ choice (queue, skill) or default
//!                         │                                         ▼
//!                         └────────── no menu ─────────────▶ queue? ──no──▶ BYE (completed)
//!                                                              │ yes: 200 if still early; ACD enqueue
//!                                         full / empty ◀───────┤
//!                                   [Closing] message, BYE     ▼
//!                                                           [Queued] music (looped); every announce
//!                                                              │     period: position, expected wait
//!                                        ACD Offer ──▶ INVITE to the agent's registered contact
//!                                        agent 2xx ──▶ ACK, [Connected]: caller ⇄ agent relayed
//!                                        agent 4xx/6xx, ring timeout ──▶ ACD: next agent
//!                                        max wait ──▶ overflow (inside the ACD) / message / BYE
//!  closed (schedule) ──▶ [Closing] closed message ──▶ BYE
//! ```

use std::cmp::Reverse;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::acd::{Action, AgentRef, CallInfo, OnMaxWait, Refusal};
use crate::media::announce::{self, Lang};
use crate::media::command::MediaCommand;
use crate::media::menu::{Menu, MenuAction};
use crate::acd::log::QueueEventKind;
use crate::sip::registrar::RegEvent;

/// How long a closed service waits for `*` after offering a callback.
pub const CLOSED_OFFER_WAIT: Duration = Duration::from_secs(8);

/// How to reach a callback's citizen again: the trunk (and its address) the call came in on.
#[derive(Clone, Debug)]
pub(super) struct CallbackRoute {
    pub peer: Peer,
    pub trunk: String,
    pub service: String,
    /// The centre's number the citizen dialled: callgate calls back from it.
    pub centre_number: String,
}

impl Core {
    /// The route of a call callgate places itself when none is known from an inbound call: the first
    /// trunk with `outbound` that may reach the tenant, calling from the tenant's service of `queue`
    /// (else its first queued service).
    pub(super) fn outbound_route(&self, tenant: &str, queue: &str) -> Option<CallbackRoute> {
        let trunk = self.profile.trunks.iter().find(|t| t.outbound.is_some() && t.tenant.as_deref().is_none_or(|x| x == tenant))?;
        let uri = trunk.outbound.as_deref()?;
        let addr = dialog::uri_socket_addr(uri)?;
        let t = self.profile.tenants.iter().find(|t| t.id == tenant)?;
        let service = t
            .services
            .iter()
            .find(|s| s.queue.as_deref() == Some(queue))
            .or_else(|| t.services.iter().find(|s| s.queue.is_some()))?;
        Some(CallbackRoute {
            peer: Peer { transport: bridge_transport(uri), addr, conn: None },
            trunk: trunk.name.clone(),
            service: service.name.clone(),
            centre_number: service.number.clone(),
        })
    }
}

/// A request to stand in for the caller's INVITE of a call callgate placed itself (callbacks).
fn placeholder_request() -> Message {
    Message::parse(bytes::Bytes::from_static(
        b"INVITE sip:callback@invalid SIP/2.0\r\nVia: SIP/2.0/UDP invalid;branch=z9hG4bKcallback\r\nFrom: <sip:callgate@invalid>;tag=cb\r\nTo: <sip:callback@invalid>\r\nCall-ID: callback\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    ))
    .expect("the placeholder request parses")
}

impl Core {
    /// Starts the guidance (or what follows it, if there is none).
    pub(super) fn begin_guidance(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        call.state = State::Playing;
        let guidance = call.guidance.clone();
        if guidance.is_empty() {
            self.after_guidance(now, key);
        } else {
            self.play_a(now, key, guidance, false, false);
        }
    }

    /// Plays a playlist to the caller. A caller without a media address (c=0.0.0.0, recvonly)
    /// hears nothing, and the playlist "ends" when it would have.
    pub(super) fn play_a(&mut self, now: Instant, key: CallKey, playlist: Vec<String>, looped: bool, barge_in: bool) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        let sends = call.a_media.is_some_and(|(m, d)| m.remote.is_some() && d.sends());
        if sends && call.a_open {
            call.play_deadline = None;
            self.outputs.push_back(Output::Media(MediaCommand::Play { call: key, leg: Leg::A, playlist, looped, barge_in }));
        } else if looped {
            call.play_deadline = None;
        } else {
            let total: Duration = playlist.iter().filter_map(|p| self.prompt_durations.get(p)).sum();
            let at = now + total;
            call.play_deadline = Some(at);
            self.timers.push(Reverse((at, key, TimerKind::PlaybackEnd)));
        }
    }

    /// What the caller does after a playlist toward it has ended.
    pub(super) fn playback_ended(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        match call.state {
            State::Playing => self.after_guidance(now, key),
            State::Menu => {
                if let Some(m) = call.menu.as_mut() {
                    m.prompt_finished(now);
                }
                self.drive_menu(now, key);
            }
            State::Queued => {
                let music = self.music_for(key);
                self.play_a(now, key, music, true, false);
            }
            State::Closing => {
                let reason = call.end_reason.clone().unwrap_or_else(|| "message played".into());
                let (tenant, service, offered) = (call.tenant.clone(), call.service.clone(), call.closed_offer);
                let offer = reason == "closed"
                    && !offered
                    && self.service_cfg(&tenant, &service).is_some_and(|s| s.closed_callback && s.queue.is_some());
                let prompts = self.existing(&["callback-offer-ko"]);
                if offer && !prompts.is_empty() {
                    // "Press * to be called back when we open."
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.closed_offer = true;
                    }
                    self.play_a(now, key, prompts, false, true);
                    self.timers.push(Reverse((now + CLOSED_OFFER_WAIT, key, TimerKind::ClosedOffer)));
                    return;
                }
                if offered {
                    return; // the offer has played: the key or the timer decides
                }
                self.hang_up(now, key, Outcome::Completed, 200, &reason);
            }
            _ => {}
        }
    }

    fn after_guidance(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get(&key) else { return };
        let spec = self.menus.get(&(call.tenant.clone(), call.service.clone())).cloned();
        match spec {
            Some(spec) => {
                let mut menu = Menu::new(spec);
                menu.start(now);
                if let Some(call) = self.calls.get_mut(&key) {
                    call.state = State::Menu;
                    call.menu = Some(menu);
                }
                self.drive_menu(now, key);
            }
            None => self.enter_queue(now, key),
        }
    }

    /// Carries out what the menu asks for and keeps its timer.
    fn drive_menu(&mut self, now: Instant, key: CallKey) {
        while let Some(action) = self.calls.get_mut(&key).and_then(|c| c.menu.as_mut()).and_then(Menu::poll_action) {
            match action {
                MenuAction::Play(prompt) => {
                    let barge = self.calls.get(&key).and_then(|c| c.menu.as_ref()).is_some_and(|m| m.spec().barge_in);
                    self.play_a(now, key, vec![prompt], false, barge);
                }
                // The media engine stops a barge-in playlist itself; a key by SIP INFO is followed
                // at once by the next Play (or the queue's music), which replaces it.
                MenuAction::StopPlayback => {}
                MenuAction::Chosen(choice) | MenuAction::Default(Some(choice)) => {
                    if let Some(c) = self.calls.get_mut(&key) {
                        tracing::info!(call = key, choice = %choice.key, "menu choice");
                        c.choice = Some(choice);
                        c.menu = None;
                    }
                    self.enter_queue(now, key);
                    return;
                }
                MenuAction::Default(None) => {
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.menu = None;
                    }
                    self.enter_queue(now, key);
                    return;
                }
            }
        }
        if let Some(t) = self.calls.get(&key).and_then(|c| c.menu.as_ref()).and_then(Menu::poll_timeout) {
            self.timers.push(Reverse((t, key, TimerKind::Menu)));
        }
    }

    pub(super) fn menu_timeout(&mut self, now: Instant, key: CallKey) {
        let Some(menu) = self.calls.get_mut(&key).filter(|c| c.state == State::Menu).and_then(|c| c.menu.as_mut()) else { return };
        if menu.poll_timeout().is_some_and(|t| t <= now) {
            menu.handle_timeout(now);
            self.drive_menu(now, key);
        }
    }

    /// A key pressed on a leg (RFC 4733 or SIP INFO).
    pub(super) fn on_digit(&mut self, now: Instant, key: CallKey, leg: Leg, digit: char) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        if leg != Leg::A {
            return;
        }
        // The digit itself is not logged: callers key in ID numbers and PINs.
        tracing::debug!(call = key, "caller pressed a key");
        push_digit(&mut call.digits, digit);
        match call.state {
            State::Menu => {
                if let Some(m) = call.menu.as_mut() {
                    m.digit(now, digit);
                }
                self.drive_menu(now, key);
            }
            State::Closing if call.closed_offer && digit == '*' => self.closed_callback(now, key),
            // (Not a caller whose transfer target rings: it is in no queue.)
            State::Queued if call.queued_at.is_some() => {
                let (tenant, queue) = (call.tenant.clone(), call.queue.clone());
                let wants = queue.and_then(|q| self.queue_cfg(&tenant, &q).and_then(|q| q.callback_key));
                if wants == Some(digit) {
                    self.keep_place(now, key);
                }
            }
            _ => {}
        }
    }

    /// The caller pressed the callback key: it hangs up and keeps its place; callgate calls back.
    fn keep_place(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get(&key) else { return };
        let number = call.caller.clone();
        let route = CallbackRoute {
            peer: Peer { transport: call.transport, addr: call.source, conn: None },
            trunk: call.trunk.clone(),
            service: call.service.clone(),
            centre_number: call.number.clone(),
        };
        match self.acd.request_callback(now, key, &number) {
            Ok(id) => {
                tracing::info!(call = key, callback = id, "caller keeps the place for a callback");
                self.callback_routes.insert(id, route);
                self.callbacks_dirty = true;
                if let Some(c) = self.calls.get_mut(&key) {
                    c.queued_at = None; // the place now belongs to the callback, not to this leg
                    c.state = State::Closing;
                    c.end_reason = Some("callback requested".into());
                }
                let lang = if self.calls.get(&key).and_then(|c| c.choice.as_ref()).is_some_and(|c| c.key == "en") { "en" } else { "ko" };
                let prompts = self.existing_owned(vec![format!("callback-confirm-{lang}")]);
                if prompts.is_empty() {
                    self.hang_up(now, key, Outcome::Completed, 200, "callback requested");
                } else {
                    self.play_a(now, key, prompts, false, false);
                }
            }
            Err(e) => tracing::info!(call = key, error = %e, "callback not possible"),
        }
    }

    /// A caller of a closed service asked to be called back: a scheduled callback for when the
    /// service opens, through the trunk the call came in on.
    fn closed_callback(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        call.closed_offer = false;
        let (tenant, service_name) = (call.tenant.clone(), call.service.clone());
        let Some(service) = self.service_cfg(&tenant, &service_name) else { return };
        let Some(queue) = service.queue.clone() else { return };
        let now_ms = self.unix_ms(now);
        let opens = self
            .profile
            .tenants
            .iter()
            .find(|t| t.id == tenant)
            .and_then(|t| t.next_change(&service, now_ms))
            .unwrap_or(now_ms);
        let Some(call) = self.calls.get(&key) else { return };
        let info = CallInfo {
            cg_id: call.cg_id.clone(),
            caller: call.caller.clone(),
            number: call.number.clone(),
            priority: service.priority,
            skill: None,
            language: None,
        };
        let route = CallbackRoute {
            peer: Peer { transport: call.transport, addr: call.source, conn: None },
            trunk: call.trunk.clone(),
            service: call.service.clone(),
            centre_number: call.number.clone(),
        };
        let number = call.caller.clone();
        match self.acd.schedule_callback(now, &tenant, &queue, &number, opens, info) {
            Ok(id) => {
                tracing::info!(call = key, callback = id, opens, "closed: callback scheduled for the opening");
                self.callback_routes.insert(id, route);
                self.callbacks_dirty = true;
                if let Some(c) = self.calls.get_mut(&key) {
                    c.end_reason = Some("callback requested".into());
                }
                let prompts = self.existing(&["callback-confirm-ko"]);
                if prompts.is_empty() {
                    self.hang_up(now, key, Outcome::Completed, 200, "callback requested");
                } else {
                    self.play_a(now, key, prompts, false, false);
                }
            }
            Err(e) => {
                tracing::info!(call = key, error = %e, "closed: callback not possible");
                self.hang_up(now, key, Outcome::Completed, 200, "closed");
            }
        }
    }

    /// After guidance and menu: into the service's (or the menu choice's) queue.
    pub(super) fn enter_queue(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get(&key) else { return };
        let service = self.service_cfg(&call.tenant, &call.service);
        let queue = call.choice.as_ref().and_then(|c| c.queue.clone()).or_else(|| service.as_ref().and_then(|s| s.queue.clone()));
        let Some(queue) = queue else {
            self.hang_up(now, key, Outcome::Completed, 200, "announcement completed");
            return;
        };
        if call.early {
            self.send_a_200(now, key);
        }
        let Some(call) = self.calls.get(&key) else { return };
        let info = CallInfo {
            cg_id: call.cg_id.clone(),
            caller: call.caller.clone(),
            number: call.number.clone(),
            priority: service.as_ref().map_or(0, |s| s.priority),
            skill: call.choice.as_ref().and_then(|c| c.skill.clone()),
            language: call.choice.as_ref().map(|c| c.key.clone()),
        };
        let tenant = call.tenant.clone();
        match self.acd.enqueue(now, key, &tenant, &queue, info) {
            Ok(position) => {
                tracing::info!(call = key, %queue, position, "caller queued");
                if let Some(c) = self.calls.get_mut(&key) {
                    c.state = State::Queued;
                    c.queue = Some(queue);
                    c.queued_at = Some(now);
                }
                let music = self.music_for(key);
                self.play_a(now, key, music, true, false);
            }
            Err(r) => {
                let reason = match r {
                    Refusal::Full => "queue full",
                    Refusal::Empty => "no agent logged in",
                    Refusal::UnknownQueue => "unknown queue",
                };
                tracing::info!(call = key, %queue, reason, "caller refused by the queue");
                if let Some(c) = self.calls.get_mut(&key) {
                    c.queue = Some(queue);
                }
                let prompts = service.map(|s| s.closed.clone()).unwrap_or_default();
                self.closing(now, key, prompts, reason);
            }
        }
    }

    /// Plays a last message, then hangs up with `reason`.
    fn closing(&mut self, now: Instant, key: CallKey, prompts: Vec<String>, reason: &str) {
        let Some(c) = self.calls.get_mut(&key) else { return };
        c.state = State::Closing;
        c.end_reason = Some(reason.to_owned());
        let prompts = self.existing_owned(prompts);
        if prompts.is_empty() {
            self.hang_up(now, key, Outcome::Completed, 200, reason);
        } else {
            self.play_a(now, key, prompts, false, false);
        }
    }

    /// Outside the service's hours: the closed message.
    pub(super) fn closed(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get(&key) else { return };
        let prompts = self.service_cfg(&call.tenant, &call.service).map(|s| s.closed.clone()).unwrap_or_default();
        self.closing(now, key, prompts, "closed");
    }

    pub(super) fn service_open(&self, service: &Service, now: Instant) -> bool {
        let Some(name) = &service.schedule else { return true };
        let Some(tenant) = self.profile.tenants.iter().find(|t| t.id == service.tenant) else { return true };
        let Some(s) = tenant.schedules.iter().find(|s| &s.name == name) else { return true };
        s.is_open(self.unix_ms(now), tenant.utc_offset_min)
    }

    fn service_cfg(&self, tenant: &str, service: &str) -> Option<Service> {
        self.profile.tenants.iter().find(|t| t.id == tenant)?.services.iter().find(|s| s.name == service).cloned()
    }

    fn queue_cfg(&self, tenant: &str, queue: &str) -> Option<&crate::config::QueueCfg> {
        self.profile.tenants.iter().find(|t| t.id == tenant)?.queues.iter().find(|q| q.name == queue)
    }

    /// The music of the caller's queue (or the default music), only prompts that are loaded.
    pub(super) fn music_for(&self, key: CallKey) -> Vec<String> {
        let configured = self
            .calls
            .get(&key)
            .and_then(|c| Some((c.tenant.clone(), c.queue.clone()?)))
            .and_then(|(t, q)| self.queue_cfg(&t, &q).map(|q| q.music.clone()))
            .unwrap_or_else(|| vec!["music".to_owned()]);
        let music = self.existing_owned(configured);
        if music.is_empty() {
            self.existing(&["music"])
        } else {
            music
        }
    }

    fn existing(&self, names: &[&str]) -> Vec<String> {
        names.iter().filter(|n| self.prompt_durations.contains_key(**n)).map(|n| (*n).to_owned()).collect()
    }

    fn existing_owned(&self, names: Vec<String>) -> Vec<String> {
        names.into_iter().filter(|n| self.prompt_durations.contains_key(n)).collect()
    }

    /// Where the service's calls are recorded, if it records.
    pub(super) fn recordings_for(&self, tenant: &str, service: &str) -> Option<PathBuf> {
        let s = self.service_cfg(tenant, service)?;
        if !s.record {
            return None;
        }
        let t = self.profile.tenants.iter().find(|t| t.id == tenant)?;
        Some(self.profile.recordings_dir_for(t))
    }

    // ---- the ACD ---------------------------------------------------------------------------------

    /// Carries out everything the ACD and the registrar have to say. Called after every input.
    pub(super) fn drive(&mut self, now: Instant) {
        for _ in 0..10_000 {
            let mut did = false;
            while let Some(ev) = self.registrar.poll_event() {
                did = true;
                self.on_reg_event(now, ev);
            }
            while let Some(action) = self.acd.poll_action() {
                did = true;
                self.on_acd_action(now, action);
            }
            while let Some(ev) = self.acd.poll_log() {
                did = true;
                if matches!(
                    ev.kind,
                    QueueEventKind::CallbackRequested { .. } | QueueEventKind::CallbackConnect { .. } | QueueEventKind::CallbackFailed { .. }
                ) {
                    self.callbacks_dirty = true;
                }
                self.stats.push(&ev);
                self.outputs.push_back(Output::QueueLog(ev));
                self.schedule_stats_tick(now);
            }
            if !did {
                break;
            }
        }
        if self.callbacks_dirty {
            self.callbacks_dirty = false;
            self.sync_callbacks();
        }
    }

    /// Writes every pending callback to the records database (with how to reach the citizen) and
    /// deletes the ones that are done, so that they survive a restart.
    fn sync_callbacks(&mut self) {
        let pending = self.acd.pending_callbacks();
        let live: std::collections::HashSet<u64> = pending.iter().map(|c| c.id).collect();
        for cb in pending {
            let route = self.callback_routes.get(&cb.id);
            let info = serde_json::json!({
                "cg_id": cb.info.cg_id,
                "caller": cb.info.caller,
                "number": cb.info.number,
                "priority": cb.info.priority,
                "skill": cb.info.skill,
                "language": cb.info.language,
                "route": route.map(|r| serde_json::json!({
                    "transport": r.peer.transport.as_via(),
                    "addr": r.peer.addr.to_string(),
                    "trunk": r.trunk,
                    "service": r.service,
                    "centre_number": r.centre_number,
                })),
            });
            self.callbacks_stored.insert(cb.id);
            self.outputs.push_back(Output::CallbackStore(crate::records::CallbackRecord {
                id: cb.id,
                tenant: cb.tenant,
                queue: cb.queue,
                number: cb.number,
                requested_ms: cb.enqueued_ms,
                due_ms: cb.due_ms,
                enqueued_ms: cb.enqueued_ms,
                attempts: cb.attempts,
                info,
            }));
        }
        let gone: Vec<u64> = self.callbacks_stored.iter().copied().filter(|id| !live.contains(id)).collect();
        for id in gone {
            self.callbacks_stored.remove(&id);
            self.callback_routes.remove(&id);
            self.outputs.push_back(Output::CallbackDelete(id));
        }
    }

    /// Callbacks stored before a restart: back in line, in their places.
    pub fn restore_callbacks(&mut self, now: Instant, stored: Vec<crate::records::CallbackRecord>) {
        for r in stored {
            let info = &r.info;
            let text = |k: &str| info.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            let call_info = CallInfo {
                cg_id: text("cg_id").unwrap_or_default(),
                caller: text("caller").unwrap_or_else(|| r.number.clone()),
                number: text("number").unwrap_or_default(),
                priority: info.get("priority").and_then(|v| v.as_u64()).unwrap_or(0).min(255) as u8,
                skill: text("skill"),
                language: text("language"),
            };
            if let Some(route) = info.get("route").filter(|v| !v.is_null()) {
                let s = |k: &str| route.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                if let Ok(addr) = s("addr").parse() {
                    let transport = if s("transport").eq_ignore_ascii_case("tcp") { Transport::Tcp } else { Transport::Udp };
                    self.callback_routes.insert(
                        r.id,
                        CallbackRoute {
                            peer: Peer { transport, addr, conn: None },
                            trunk: s("trunk"),
                            service: s("service"),
                            centre_number: s("centre_number"),
                        },
                    );
                }
            }
            self.callbacks_stored.insert(r.id);
            self.acd.restore_callback(
                now,
                crate::acd::PendingCallback {
                    id: r.id,
                    tenant: r.tenant,
                    queue: r.queue,
                    number: r.number,
                    info: call_info,
                    enqueued_ms: r.enqueued_ms,
                    due_ms: r.due_ms,
                    attempts: r.attempts,
                },
            );
        }
        self.drive(now);
    }

    /// A callback reached the front: the agent is reserved; callgate dials the citizen through the
    /// trunk the call came in on, plays music once the citizen answers, and rings the agent.
    fn dial_callback(&mut self, now: Instant, id: u64, agent: AgentRef, number: &str, tenant: &str, queue: &str) {
        let Some(route) = self.callback_routes.get(&id).cloned().or_else(|| self.outbound_route(tenant, queue)) else {
            tracing::warn!(callback = id, %tenant, "no route to the citizen (no call came in since the start and no trunk has `outbound`): attempt failed");
            self.acd.callback_result(now, id, None);
            return;
        };
        let key = self.next_key;
        self.next_key += 1;
        let placeholder = placeholder_request();
        let a = Dialog::uac(String::new(), String::new(), String::new(), String::new(), String::new(), String::new(), route.peer);
        let call = Call {
            cg_id: format!("cg-{}", self.rng.token(16)),
            state: State::Dialing,
            a,
            a_invite: TxnId(u64::MAX),
            a_invite_msg: placeholder,
            b: None,
            offers: Vec::new(),
            tenant: tenant.to_owned(),
            trunk: route.trunk.clone(),
            service: route.service.clone(),
            caller: number.to_owned(),
            number: route.centre_number.clone(),
            source: route.peer.addr,
            transport: route.peer.transport,
            arrived: now,
            answered: None,
            media_port: None,
            a_media: None,
            a_open: false,
            early: false,
            guidance: Vec::new(),
            local_sdp: None,
            origin: None,
            bye_on_ack: false,
            digits: String::new(),
            menu: None,
            choice: None,
            queue: Some(queue.to_owned()),
            queued_at: None,
            agent: Some(agent),
            b_port: None,
            b_media: None,
            b_sdp: None,
            talk_from: None,
            held: None,
            hold_ms: 0,
            recording: None,
            end_reason: None,
            sdp_version: 1,
            play_deadline: None,
            callback: Some((id, agent)),
            data: serde_json::Map::new(),
            last_agent: Some(agent),
            transfer_talk_ms: 0,
            transferred_to: None,
            closed_offer: false,
            consult: None,
            monitor: None,
            heard: Default::default(),
        };
        self.calls.insert(key, call);
        self.metrics.set_active_calls(self.calls.len());
        let target = format!("sip:{}@{}", number, host_port(route.peer.addr));
        tracing::info!(call = key, callback = id, "dialling the citizen back");
        if !self.send_offer(now, key, &target, route.peer, None, 70, &[("X-Callgate-Callback", id.to_string())]) {
            self.acd.callback_result(now, id, None);
            if let Some(mut c) = self.calls.remove(&key) {
                c.end_reason = Some("callback failed".into());
                self.finish(now, &c, Outcome::Failed, 503, "no RTP port for the callback");
            }
            return;
        }
        // Its A "invite" is the INVITE to the citizen: remember it for the record's Call-ID.
        if let Some(c) = self.calls.get_mut(&key) {
            if let Some(o) = c.offers.first() {
                c.a_invite_msg = o.invite.clone();
                c.a = o.dialog.clone();
            }
        }
    }

    /// The citizen answered the callback: its leg becomes the call's A leg; it hears music while the
    /// reserved agent's phone rings.
    pub(super) fn citizen_answered(&mut self, now: Instant, key: CallKey, idx: usize, msg: Message) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        let mut offer = call.offers.remove(idx);
        offer.dialog.confirm_uac(&msg);
        let (peer, ack) = offer.dialog.ack(&msg, &mut self.rng, &self.cfg);
        self.outputs.push_back(Output::Transmit(Transmit { peer, data: ack, mark: None }));
        let Some(answer) = sdp::parse_answer(&msg.body()).ok() else {
            tracing::info!(call = key, "citizen answered the callback without usable SDP: BYE");
            let (peer, branch, bye) = offer.dialog.bye(&mut self.rng, &self.cfg, "no usable media");
            let t = self.txn.request(now, Method::Bye, &branch, bye, peer);
            self.clients.insert(t, (key, Purpose::Bye));
            if let Some((id, _)) = call.callback {
                self.acd.callback_result(now, id, None);
            }
            self.ports.release(offer.port);
            self.dialogs.remove(dkey(&(offer.dialog.call_id.as_str(), offer.dialog.local_tag.as_str())));
            if let Some(mut c) = self.calls.remove(&key) {
                c.end_reason = Some("callback failed".into());
                self.finish(now, &c, Outcome::Failed, 488, "citizen's answer had no usable media");
            }
            return;
        };
        // The leg is now A: requests in its dialog are the caller's.
        self.dialogs.insert((offer.dialog.call_id.clone(), offer.dialog.local_tag.clone()), (key, Side::A));
        call.a = offer.dialog;
        call.media_port = Some(offer.port);
        call.local_sdp = Some(offer.sdp);
        call.a_media = Some((super::flow::leg_media(&answer), answer.direction));
        call.answered = Some(now);
        call.state = State::Queued;
        call.queued_at = Some(now);
        let agent = call.callback.map(|(_, a)| a);
        self.open_a(key);
        let music = self.music_for(key);
        self.play_a(now, key, music, true, false);
        let Some(agent) = agent else { return };
        let spec = self.acd.agent_spec(agent).clone();
        let binding = self.registrar.lookup(&spec.tenant, &spec.extension).first().cloned();
        let ok = match binding {
            Some(b) => {
                let mut extra = vec![
                    ("X-Callgate-Callback", "yes".to_owned()),
                    ("X-Callgate-Caller", self.calls.get(&key).map(|c| c.caller.clone()).unwrap_or_default()),
                ];
                if !self.manual_answer.contains(&agent) {
                    extra.push(("Call-Info", format!("<sip:{}>;answer-after=0", host_port(self.cfg.local_sip))));
                }
                self.send_offer(now, key, &b.contact, b.source, Some(agent), 70, &extra)
            }
            None => false,
        };
        if !ok {
            if let Some((id, _)) = self.calls.get(&key).and_then(|c| c.callback) {
                self.acd.callback_result(now, id, None);
            }
            if let Some(c) = self.calls.get_mut(&key) {
                c.end_reason = Some("callback failed".into());
            }
            self.hang_up(now, key, Outcome::Failed, 480, "agent unavailable for the callback");
        }
    }

    fn on_reg_event(&mut self, now: Instant, ev: RegEvent) {
        match ev {
            RegEvent::Registered { tenant, user, first } => {
                let Some(agent) = self.acd.agent_by_extension(Some(&tenant), &user) else { return };
                if first && self.login_on_register.contains(&agent) {
                    if let Err(e) = self.acd.login(now, agent, "register") {
                        tracing::info!(%tenant, %user, error = %e, "registration login refused");
                    }
                }
            }
            RegEvent::Unregistered { tenant, user, last, expired } => {
                let Some(agent) = self.acd.agent_by_extension(Some(&tenant), &user) else { return };
                if last && self.login_on_register.contains(&agent) {
                    let reason = if expired { "registration expired" } else { "unregister" };
                    if let Err(e) = self.acd.logout(now, agent, reason) {
                        tracing::info!(%tenant, %user, error = %e, "registration logout refused");
                    }
                }
            }
        }
    }

    fn on_acd_action(&mut self, now: Instant, action: Action) {
        match action {
            Action::Offer { call, agent, queue, wait } => self.offer_agent(now, call, agent, &queue, wait),
            Action::StopOffer { call, agent } => {
                let idx = self.calls.get(&call).and_then(|c| c.offers.iter().position(|o| o.agent == Some(agent)));
                if let Some(idx) = idx {
                    self.withdraw_offer(now, call, idx);
                }
            }
            Action::Announce { call, position, expected_wait } => {
                let Some(c) = self.calls.get(&call).filter(|c| c.state == State::Queued && c.held.is_none()) else { return };
                let lang = match c.choice.as_ref().map(|c| c.key.as_str()) {
                    Some("en") => Lang::En,
                    _ => Lang::Ko,
                };
                let mut prompts = announce::position(position, lang);
                if let Some(w) = expected_wait {
                    prompts.extend(announce::expected_wait(w, lang));
                }
                let offers_callback =
                    c.queue.as_ref().and_then(|q| self.queue_cfg(&c.tenant, q)).is_some_and(|q| q.callback_key.is_some());
                if offers_callback {
                    prompts.push(format!("callback-offer-{}", if lang == Lang::En { "en" } else { "ko" }));
                }
                let prompts = self.existing_owned(prompts);
                if !prompts.is_empty() {
                    self.play_a(now, call, prompts, false, false);
                }
            }
            Action::MaxWait { call, then } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.queued_at = None; // the ACD has let go of the caller
                }
                match then {
                    OnMaxWait::Message(prompts) => self.closing(now, call, prompts, "maximum wait"),
                    OnMaxWait::Callback => self.keep_place(now, call),
                    OnMaxWait::Hangup | OnMaxWait::Overflow(_) => self.closing(now, call, Vec::new(), "maximum wait"),
                }
            }
            Action::Evicted { call } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.queued_at = None;
                }
                let prompts = self
                    .calls
                    .get(&call)
                    .and_then(|c| self.service_cfg(&c.tenant, &c.service))
                    .map(|s| s.closed)
                    .unwrap_or_default();
                self.closing(now, call, prompts, "no agent logged in");
            }
            Action::CallbackDue { callback, agent, number, tenant, queue } => {
                self.dial_callback(now, callback, agent, &number, &tenant, &queue);
            }
            Action::AgentState { agent, state, reason } => {
                let spec = self.acd.agent_spec(agent);
                tracing::info!(agent = %spec.id, tenant = %spec.tenant, state = state.name(), %reason, "agent state");
                self.publish_agent_state(agent, &state, &reason);
            }
        }
    }

    /// Rings the agent's registered phone for the call.
    fn offer_agent(&mut self, now: Instant, key: CallKey, agent: AgentRef, queue: &str, wait: Duration) {
        let spec = self.acd.agent_spec(agent).clone();
        let Some(binding) = self.registrar.lookup(&spec.tenant, &spec.extension).first().cloned() else {
            tracing::info!(call = key, agent = %spec.id, "agent has no registered phone");
            self.acd.missed(now, key, agent, crate::acd::log::MissReason::Unreachable);
            return;
        };
        let Some(call) = self.calls.get(&key) else {
            self.acd.missed(now, key, agent, crate::acd::log::MissReason::Withdrawn);
            return;
        };
        let extra = vec![
            ("X-Callgate-Queue", queue.to_owned()),
            ("X-Callgate-Caller", call.caller.clone()),
            ("X-Callgate-Number", call.number.clone()),
            ("X-Callgate-Wait", wait.as_secs().to_string()),
            ("X-Callgate-Choice", call.choice.as_ref().map(|c| c.key.clone()).unwrap_or_default()),
        ];
        let mut extra = extra;
        if !self.manual_answer.contains(&agent) {
            extra.push(("Call-Info", format!("<sip:{}>;answer-after=0", host_port(self.cfg.local_sip))));
        }
        if self.send_offer(now, key, &binding.contact, binding.source, Some(agent), 70, &extra) {
            self.publish_offered(now, key, agent, queue);
        } else {
            self.acd.missed(now, key, agent, crate::acd::log::MissReason::Unreachable);
        }
    }

    // ---- the registrar ---------------------------------------------------------------------------

    pub(super) fn on_register(&mut self, now: Instant, txn: TxnId, msg: Message, peer: Peer) {
        let resp = self.registrar.handle_register(now, &msg, peer);
        let code = Message::parse(resp.clone()).ok().and_then(|m| m.status()).unwrap_or(500);
        self.txn.respond(now, txn, code, resp, None);
    }
}

/// The ACD's view of the profile.
pub(super) fn acd_spec(profile: &Profile) -> crate::acd::AcdSpec {
    use crate::acd::{AcdSpec, AgentSpec, QueueSpec, SkillReq, Strategy};
    use crate::config::{OnMaxWaitCfg, Strategy as S};
    let mut queues = Vec::new();
    let mut agents = Vec::new();
    for t in &profile.tenants {
        for q in &t.queues {
            queues.push(QueueSpec {
                tenant: t.id.clone(),
                name: q.name.clone(),
                strategy: match q.strategy {
                    S::LongestIdle => Strategy::LongestIdle,
                    S::RoundRobin => Strategy::RoundRobin,
                    S::FewestCalls => Strategy::FewestCalls,
                    S::LeastTalk => Strategy::LeastTalk,
                    S::RingAll => Strategy::RingAll,
                    S::Linear => Strategy::Linear,
                    S::Random => Strategy::Random,
                },
                skills: q
                    .skills
                    .iter()
                    .map(|s| SkillReq { skill: s.skill.clone(), level: s.level, relax: s.relax.clone() })
                    .collect(),
                max_len: q.max_len,
                max_wait: q.max_wait,
                on_max_wait: match &q.on_max_wait {
                    OnMaxWaitCfg::Overflow(to) => OnMaxWait::Overflow(to.clone()),
                    OnMaxWaitCfg::Message(p) => OnMaxWait::Message(p.clone()),
                    OnMaxWaitCfg::Callback => OnMaxWait::Callback,
                    OnMaxWaitCfg::Hangup => OnMaxWait::Hangup,
                },
                join_empty: q.join_empty,
                leave_empty: q.leave_empty,
                ring_timeout: q.ring_timeout,
                wrapup: q.wrapup,
                max_misses: q.max_misses,
                sl_threshold: q.sl_threshold,
                short_abandon: q.short_abandon,
                announce_every: q.announce_every,
            });
        }
        for a in &t.agents {
            agents.push(AgentSpec {
                tenant: t.id.clone(),
                id: a.id.clone(),
                extension: a.extension.clone(),
                name: a.name.clone(),
                skills: a.skills.clone(),
                queues: a.queues.clone(),
            });
        }
    }
    AcdSpec { queues, agents }
}

/// Every agent's digest credentials, for the registrar.
pub(super) fn credentials(profile: &Profile) -> Vec<crate::sip::registrar::UserCred> {
    let mut out = Vec::new();
    for t in &profile.tenants {
        for a in &t.agents {
            out.push(crate::sip::registrar::UserCred {
                tenant: t.id.clone(),
                user: a.extension.clone(),
                realm: t.realm.clone(),
                ha1_md5: a.ha1_md5,
                ha1_sha256: a.ha1_sha256,
            });
        }
    }
    out
}

/// Each service's menu, as the media menu wants it.
pub(super) fn menus(profile: &Profile) -> HashMap<(String, String), Arc<crate::media::menu::MenuSpec>> {
    use crate::media::menu::{MenuChoice, MenuSpec};
    let mut out = HashMap::new();
    for t in &profile.tenants {
        for s in &t.services {
            let Some(name) = &s.menu else { continue };
            let Some(m) = t.menus.iter().find(|m| &m.name == name) else { continue };
            let choice = |o: &crate::config::MenuOptionCfg| {
                let mut c = MenuChoice::new(o.key.clone());
                c.queue = o.queue.clone();
                c.skill = o.skill.clone();
                c
            };
            let mut spec = MenuSpec::new(m.prompt.clone(), m.options.iter().map(|(k, o)| (*k, choice(o))).collect());
            spec.timeout = m.timeout;
            spec.max_attempts = m.max_attempts;
            spec.invalid_prompt = m.invalid_prompt.clone();
            spec.timeout_prompt = m.timeout_prompt.clone();
            spec.default = m.default.and_then(|k| m.options.iter().find(|(kk, _)| *kk == k)).map(|(_, o)| choice(o));
            spec.barge_in = m.barge_in;
            out.insert((t.id.clone(), s.name.clone()), Arc::new(spec));
        }
    }
    out
}
