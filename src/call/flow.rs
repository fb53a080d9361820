//! The caller's leg and the B legs: INVITE, ACK, re-INVITE (hold), INFO, CANCEL, BYE, offers to
//! agents and bridge targets, and ending calls. The path through guidance, menu and queue is in
//! [`journey`](super::journey).

use std::cmp::Reverse;
use std::time::Instant;

use super::*;
use crate::acd::log::MissReason;
use crate::acd::AgentRef;
use crate::media::command::MediaCommand;

/// What callgate offers on its B legs: both laws (the bridge transcodes if the caller chose the other).
pub(super) const B_CODECS: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

impl Core {
    pub(super) fn on_invite(&mut self, now: Instant, txn: TxnId, msg: Message, peer: Peer) {
        // The same request arriving again along another path (another branch): RFC 3261 8.2.2.2.
        let origin = origin_key(&msg);
        if let Some(&(key, seq)) = origin.as_ref().and_then(|o| self.origins.get(o)) {
            if self.calls.contains_key(&key) && msg.cseq().is_ok_and(|c| c.seq == seq) {
                let resp = self.response(&msg, 482, "Loop Detected").build();
                self.txn.respond(now, txn, 482, resp, None);
                return;
            }
        }
        let trying = self.response(&msg, 100, "Trying").build();
        self.txn.respond(now, txn, 100, trying, Some(Mark { stage: Stage::InviteTo100, since: now }));

        // A local handle on the profile, so lookups borrow from it rather than cloning per call.
        let profile = self.profile.clone();
        let Some(trunk) = profile.trunk_for(peer.addr.ip()) else {
            return; // checked before; unreachable in practice
        };
        let number = msg.request_uri().and_then(|u| Uri::parse(u).ok()).and_then(|u| u.number()).unwrap_or_default();
        let Some(service) = profile.service_for(trunk, &number) else {
            tracing::info!(%number, trunk = %trunk.name, "no service for the number: 404");
            self.reject(now, txn, &msg, peer, Some(trunk), None, 404, "Not Found", Outcome::NotFound);
            return;
        };
        if self.draining {
            self.reject(now, txn, &msg, peer, Some(trunk), Some(service), 503, "Service Unavailable", Outcome::Shutdown);
            return;
        }
        if self.calls.len() >= self.cfg.max_calls || self.backlogged || !self.admit_cps(now) {
            self.metrics.inc(Counter::Overload503);
            self.reject(now, txn, &msg, peer, Some(trunk), Some(service), 503, "Service Unavailable", Outcome::Busy);
            return;
        }
        if service.bridge_to.is_some() {
            // Forwarding to a bridge target: a request out of hops stops here (RFC 3261 16.3).
            if let Err(rej) = msg.forward_check() {
                self.reject(now, txn, &msg, peer, Some(trunk), Some(service), rej.code, rej.reason, Outcome::Failed);
                return;
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        let local_tag = self.rng.token(10);
        let a = match Dialog::uas(&msg, peer, &local_tag, self.contact_uri(peer.transport)) {
            Some(d) => d,
            None => {
                self.reject(now, txn, &msg, peer, Some(trunk), Some(service), 400, "Bad Request", Outcome::Failed);
                return;
            }
        };
        let caller = msg
            .from_hdr()
            .ok()
            .and_then(|f| Uri::parse(f.uri).ok().and_then(|u| u.number()))
            .unwrap_or_default();
        let call = Call {
            cg_id: format!("cg-{}", self.rng.token(16)),
            state: State::Answered,
            a,
            a_invite: txn,
            a_invite_msg: msg.clone(),
            b: None,
            offers: Vec::new(),
            tenant: service.tenant.clone(),
            trunk: trunk.name.clone(),
            service: service.name.clone(),
            caller,
            number,
            source: peer.addr,
            transport: peer.transport,
            arrived: now,
            answered: None,
            media_port: None,
            a_media: None,
            a_open: false,
            early: false,
            guidance: service.guidance.clone(),
            local_sdp: None,
            origin: origin.clone(),
            bye_on_ack: false,
            digits: String::new(),
            menu: None,
            choice: None,
            queue: None,
            queued_at: None,
            agent: None,
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
            callback: None,
            data: serde_json::Map::new(),
            last_agent: None,
            transfer_talk_ms: 0,
            transferred_to: None,
            closed_offer: false,
            consult: None,
            monitor: None,
            heard: Default::default(),
        };
        self.dialogs.insert((call.a.call_id.clone(), local_tag), (key, Side::A));
        if let (Some(o), Ok(cseq)) = (origin, msg.cseq()) {
            self.origins.insert(o, (key, cseq.seq));
        }
        self.a_invites.insert(txn, key);
        let arrived_ms = self.unix_ms(now);
        self.note_contact(&call.tenant, &call.caller, arrived_ms);
        self.last_route.insert(
            call.tenant.clone(),
            journey::CallbackRoute {
                peer: Peer { transport: peer.transport, addr: peer.addr, conn: None },
                trunk: call.trunk.clone(),
                service: call.service.clone(),
                centre_number: call.number.clone(),
            },
        );
        self.calls.insert(key, call);
        self.metrics.set_active_calls(self.calls.len());

        if !self.negotiate_a(now, key, &msg, trunk) {
            return;
        }
        if let Some(target) = &service.bridge_to {
            self.start_bridge(now, key, &msg, target);
            return;
        }
        let open = self.service_open(service, now);
        if service.early_media && self.calls.get(&key).is_some_and(|c| c.a_media.is_some()) {
            // Early media (RFC 3960 gateway model): the guidance and menu before the answer; the 200
            // comes when the caller enters the queue.
            self.send_a_provisional(now, key, 183, "Session Progress");
            if let Some(c) = self.calls.get_mut(&key) {
                c.early = true;
                c.state = State::Playing;
            }
            self.open_a(key);
            if open {
                self.begin_guidance(now, key);
            } else {
                self.closed(now, key);
            }
        } else {
            self.send_a_200(now, key);
            if !open {
                if let Some(c) = self.calls.get_mut(&key) {
                    c.end_reason = Some("closed".into());
                }
            }
        }
    }

    /// The caller's SDP: our answer to its offer, or our offer when it sent none (delayed offer, answered
    /// in the ACK). False when the call was refused (488, 400, 503 for RTP ports).
    fn negotiate_a(&mut self, now: Instant, key: CallKey, msg: &Message, trunk: &Trunk) -> bool {
        let Some(port) = self.ports.allocate() else {
            tracing::warn!("RTP port range exhausted: 503");
            self.metrics.inc(Counter::Overload503);
            self.fail_unanswered(now, key, 503, "Service Unavailable", Outcome::Busy);
            return false;
        };
        let sess_id = self.rng.next_u64() >> 2;
        let offer = msg.body();
        let has_offer = msg.content_type().is_some_and(|t| t.eq_ignore_ascii_case("application/sdp")) && !offer.is_empty();
        let (sdp_body, media) = if has_offer {
            match sdp::answer(&offer, &trunk.codecs, self.cfg.media_ip, port, sess_id) {
                Ok(n) => (n.sdp.clone(), Some((leg_media(&n), n.direction))),
                Err(e) => {
                    self.ports.release(port);
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.media_port = None;
                    }
                    tracing::info!(error = %e, "SDP offer refused");
                    let code = if matches!(e, sdp::SdpError::NoCommonCodec) { 488 } else { 400 };
                    let (reason, outcome) =
                        if code == 488 { ("Not Acceptable Here", Outcome::NotAcceptable) } else { ("Bad SDP", Outcome::Failed) };
                    self.fail_unanswered(now, key, code, reason, outcome);
                    return false;
                }
            }
        } else {
            (sdp::offer(&trunk.codecs, self.cfg.media_ip, port, sess_id), None)
        };
        let Some(call) = self.calls.get_mut(&key) else { return false };
        call.media_port = Some(port);
        call.a_media = media;
        call.local_sdp = Some(sdp_body);
        true
    }

    /// 200 OK with our SDP to the caller.
    pub(super) fn send_a_200(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        if call.answered.is_some() {
            return;
        }
        call.answered = Some(now);
        call.early = false;
        let mut rb = ResponseBuilder::new(&call.a_invite_msg, 200, "OK")
            .to_tag(&call.a.local_tag)
            .header("Contact", &format!("<{}>", call.a.local_contact))
            .header("Allow", ALLOW)
            .header("Supported", "")
            .header("Server", &self.cfg.user_agent);
        if let Some(sdp) = &call.local_sdp {
            rb = rb.body("application/sdp", sdp);
        }
        let resp = rb.build();
        let (txn, since) = (call.a_invite, call.arrived);
        self.txn.respond(now, txn, 200, resp, Some(Mark { stage: Stage::InviteTo200, since }));
    }

    fn send_a_provisional(&mut self, now: Instant, key: CallKey, code: u16, reason: &str) {
        let Some(call) = self.calls.get(&key) else { return };
        let mut rb = ResponseBuilder::new(&call.a_invite_msg, code, reason)
            .to_tag(&call.a.local_tag)
            .header("Contact", &format!("<{}>", call.a.local_contact));
        if code == 183 {
            if let Some(sdp) = &call.local_sdp {
                rb = rb.body("application/sdp", sdp);
            }
        }
        let resp = rb.build();
        let txn = call.a_invite;
        self.txn.respond(now, txn, code, resp, None);
    }

    /// Opens the caller's RTP port in the media engine once its media is known.
    pub(super) fn open_a(&mut self, key: CallKey) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        let (Some((media, direction)), Some(port), false) = (call.a_media, call.media_port, call.a_open) else { return };
        call.a_open = true;
        let cmd = MediaCommand::Open {
            call: key,
            leg: Leg::A,
            local_port: port,
            media,
            direction,
            ssrc: self.rng.next_u32(),
            seq: (self.rng.next_u32() & 0x7fff) as u16,
            ts: self.rng.next_u32(),
        };
        self.outputs.push_back(Output::Media(cmd));
    }

    pub(super) fn on_ack(&mut self, now: Instant, msg: Message, _peer: Peer) {
        let Some(tag) = msg.to_hdr().ok().and_then(|t| t.tag().map(str::to_owned)) else { return };
        let Some(&(key, side)) = self.dialogs.get(dkey(&dialog_key(&msg, &tag))) else { return };
        if side != Side::A {
            return;
        }
        let Some(call) = self.calls.get_mut(&key) else { return };
        self.txn.ack_received(now, call.a_invite);
        if call.bye_on_ack {
            self.end_call(now, key, Outcome::Shutdown, 200, "edge shutting down", None);
            return;
        }
        if call.a_media.is_none() {
            // Delayed offer: the ACK carries the caller's answer.
            if let Ok(n) = sdp::parse_answer(&msg.body()) {
                call.a_media = Some((leg_media(&n), n.direction));
            }
        }
        match call.state {
            State::Answered => {
                if call.end_reason.as_deref() == Some("closed") {
                    self.open_a(key);
                    self.closed(now, key);
                } else {
                    self.open_a(key);
                    self.begin_guidance(now, key);
                }
            }
            State::Connected if !call.a_open => {
                // Bridge with a delayed offer from the caller: its answer came just now.
                self.open_a(key);
                self.relay_both(key);
            }
            _ => {}
        }
    }

    /// Session refresh, hold and resume (RFC 3264 8, RFC 6337 5): a re-offer from either leg is
    /// answered with the same port and codec; the direction decides who hears music.
    pub(super) fn on_reinvite(&mut self, now: Instant, txn: TxnId, msg: Message, tag: String) {
        let Some(&(key, side)) = self.dialogs.get(dkey(&dialog_key(&msg, &tag))) else {
            let resp = self.response(&msg, 481, "Call/Transaction Does Not Exist").build();
            self.txn.respond(now, txn, 481, resp, None);
            return;
        };
        let leg = side.leg();
        if matches!(leg, Leg::C | Leg::D) {
            self.side_reinvite(now, txn, msg, key, leg);
            return;
        }
        let offer = msg.body();
        let Some(call) = self.calls.get(&key) else { return };
        let (port, current, contact) = match leg {
            Leg::A => (call.media_port, call.a_media, call.a.local_contact.clone()),
            Leg::B => (call.b_port, call.b_media, call.b.as_ref().map(|b| b.local_contact.clone()).unwrap_or_default()),
            Leg::C | Leg::D => return,
        };
        let (Some(port), Some((cur_media, _))) = (port, current) else {
            let resp = self
                .response(&msg, 488, "Not Acceptable Here")
                .header("Warning", "399 callgate \"no media to change yet\"")
                .build();
            self.txn.respond(now, txn, 488, resp, None);
            return;
        };
        if offer.is_empty() {
            // A refresh without an offer: our description, unchanged.
            let sdp = if leg == Leg::A { call.local_sdp.clone() } else { call.b_sdp.clone() };
            let mut rb = self.response(&msg, 200, "OK").header("Contact", &format!("<{contact}>"));
            if let Some(sdp) = &sdp {
                rb = rb.body("application/sdp", sdp);
            }
            let resp = rb.build();
            self.txn.respond(now, txn, 200, resp, None);
            return;
        }
        let sess = u64::from(call.sdp_version) << 8 | key & 0xff;
        let n = match sdp::answer(&offer, &[cur_media.codec], self.cfg.media_ip, port, sess) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(call = key, error = %e, "re-offer refused");
                let resp = self
                    .response(&msg, 488, "Not Acceptable Here")
                    .header("Warning", "399 callgate \"the re-offer drops the call's codec\"")
                    .build();
                self.txn.respond(now, txn, 488, resp, None);
                return;
            }
        };
        let media = leg_media(&n);
        let unchanged = current.is_some_and(|(m, d)| m == media && d == n.direction);
        if unchanged {
            // A session refresh: our description, with its version unchanged (RFC 3264 8).
            let sdp = if leg == Leg::A { call.local_sdp.clone() } else { call.b_sdp.clone() };
            let sdp = sdp.unwrap_or_else(|| n.sdp.clone());
            let resp = self.response(&msg, 200, "OK").header("Contact", &format!("<{contact}>")).body("application/sdp", &sdp).build();
            self.txn.respond(now, txn, 200, resp, None);
            return;
        }
        let resp = self.response(&msg, 200, "OK").header("Contact", &format!("<{contact}>")).body("application/sdp", &n.sdp).build();
        self.txn.respond(now, txn, 200, resp, None);
        let Some(call) = self.calls.get_mut(&key) else { return };
        call.sdp_version += 1;
        match leg {
            Leg::A => {
                call.a_media = Some((media, n.direction));
                call.local_sdp = Some(n.sdp.clone());
            }
            Leg::B => {
                call.b_media = Some((media, n.direction));
                call.b_sdp = Some(n.sdp.clone());
            }
            Leg::C | Leg::D => {}
        }
        let opened = if leg == Leg::A { call.a_open } else { call.b_port.is_some() };
        if opened {
            self.outputs.push_back(Output::Media(MediaCommand::Update { call: key, leg, media, direction: n.direction }));
        }
        // The offerer stops receiving (sendonly / inactive): it holds the other party.
        let holds = !n.direction.sends();
        self.set_hold(now, key, leg, holds);
    }

    /// Leg `by` put the other on hold (`on`) or took it off.
    fn set_hold(&mut self, now: Instant, key: CallKey, by: Leg, on: bool) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        if call.state != State::Connected || call.consult.is_some() || call.monitor.is_some() {
            // A consultation or a supervisor owns what the legs hear (see `consult`).
            return;
        }
        let held_leg = by.other();
        match (call.held, on) {
            (None, true) => {
                call.held = Some((by, now));
                let music = self.music_for(key);
                self.outputs.push_back(Output::Media(MediaCommand::Play {
                    call: key,
                    leg: held_leg,
                    playlist: music,
                    looped: true,
                    barge_in: false,
                }));
                self.acd.hold(now, key, true);
                self.publish_call_event(key, crate::cti::events::CALL_HELD);
            }
            (Some((who, since)), false) if who == by => {
                call.held = None;
                call.hold_ms += now.saturating_duration_since(since).as_millis() as u64;
                self.outputs.push_back(Output::Media(MediaCommand::Relay { call: key, to_leg: held_leg }));
                self.acd.hold(now, key, false);
                self.publish_call_event(key, crate::cti::events::CALL_RESUMED);
            }
            _ => {}
        }
    }

    /// INFO inside a dialog: a key press as `application/dtmf-relay` or `application/dtmf` (the
    /// way some carriers send DTMF instead of RFC 4733). The caller's digits drive the menu and join
    /// the record; across a bridge they go on to the other leg as RFC 4733 telephone-events. Other
    /// INFO (e.g. an empty keep-alive) is answered 200; a DTMF body that does not parse gets 400.
    pub(super) fn on_info(&mut self, now: Instant, txn: TxnId, msg: Message, tag: String) {
        let is_dtmf = msg.content_type().is_some_and(crate::media::dtmf::is_dtmf_info_content_type);
        let mut digit_for = None;
        let (code, reason) = if is_dtmf {
            match crate::media::dtmf::parse_dtmf_relay(&msg.body()) {
                Ok((digit, _duration_ms)) => {
                    if let Some(&(key, side)) = self.dialogs.get(dkey(&dialog_key(&msg, &tag))) {
                        digit_for = Some((key, side.leg(), digit));
                    }
                    (200, "OK")
                }
                Err(e) => {
                    tracing::debug!(error = %e, "SIP INFO with a DTMF body that does not parse");
                    (400, "Bad DTMF Body")
                }
            }
        } else {
            (200, "OK")
        };
        let resp = self.response(&msg, code, reason).build();
        self.txn.respond(now, txn, code, resp, None);
        if let Some((key, leg, digit)) = digit_for.filter(|(_, leg, _)| matches!(leg, Leg::A | Leg::B)) {
            // RFC 4733 digits are counted by the media engine; these came by SIP INFO.
            self.metrics.inc(Counter::DtmfDigits);
            if self.calls.get(&key).is_some_and(|c| c.state == State::Connected) {
                self.outputs.push_back(Output::Media(MediaCommand::SendDigit { call: key, leg: leg.other(), digit }));
            }
            self.on_digit(now, key, leg, digit);
        }
    }

    pub(super) fn on_cancel(&mut self, now: Instant, txn: TxnId, msg: Message) {
        let target = self.txn.cancel_target(&msg);
        let key = target.and_then(|t| self.a_invites.get(&t).copied());
        let Some(key) = key else {
            // The INVITE transaction still exists but has had its final answer: the CANCEL has
            // no effect and is answered 200 (RFC 3261 9.2); with no such transaction, 481.
            let (code, reason) = if target.is_some() { (200, "OK") } else { (481, "Call/Transaction Does Not Exist") };
            let resp = self.response(&msg, code, reason).build();
            self.txn.respond(now, txn, code, resp, None);
            return;
        };
        let resp = self.response(&msg, 200, "OK").build();
        self.txn.respond(now, txn, 200, resp, None);
        // A CANCEL only affects a call with no final answer yet (RFC 3261 9.2).
        if self.calls.get(&key).is_some_and(|c| c.answered.is_none()) {
            self.caller_gave_up(now, key);
        }
    }

    /// The caller left before its final answer (CANCEL, or BYE in the early dialog).
    fn caller_gave_up(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get(&key) else { return };
        let outcome = if call.state == State::Ringing { Outcome::Cancelled } else { Outcome::Abandoned };
        self.fail_unanswered(now, key, 487, "Request Terminated", outcome);
    }

    pub(super) fn on_bye(&mut self, now: Instant, txn: TxnId, msg: Message, tag: String) {
        let Some(&(key, side)) = self.dialogs.get(dkey(&dialog_key(&msg, &tag))) else {
            let resp = self.response(&msg, 481, "Call/Transaction Does Not Exist").build();
            self.txn.respond(now, txn, 481, resp, None);
            return;
        };
        let resp = self.response(&msg, 200, "OK").build();
        self.txn.respond(now, txn, 200, resp, None);
        if matches!(side, Side::C | Side::D) {
            self.side_gone(now, key, side.leg(), false, "hung up");
            return;
        }
        if side == Side::B && self.calls.get(&key).is_some_and(|c| c.consult.is_some() && c.agent.is_some()) {
            // The agent hangs up during a consultation: the transfer completes (as on a PBX's
            // attended transfer; while the consulted party still rings, when it answers).
            self.agent_left_consult(now, key);
            return;
        }
        let Some(call) = self.calls.get(&key) else { return };
        if side == Side::A && call.answered.is_none() {
            // A BYE in the early dialog (RFC 3261 15): the caller gives up like with CANCEL.
            self.caller_gave_up(now, key);
            return;
        }
        let outcome = match call.state {
            State::Connected if call.agent.is_some() => Outcome::Completed,
            State::Connected | State::Ringing => Outcome::Bridged,
            _ => Outcome::Abandoned,
        };
        let reason = match (side, call.agent.is_some()) {
            (Side::A, _) => "caller hung up",
            (Side::B, true) => "agent hung up",
            (Side::B, false) => "callee hung up",
            (Side::C | Side::D, _) => "hung up",
        };
        // Hang up the other side only.
        self.end_call(now, key, outcome, 200, reason, Some(side));
    }

    // ---- B legs: bridge targets and agents -------------------------------------------------------

    fn start_bridge(&mut self, now: Instant, key: CallKey, msg: &Message, target: &str) {
        let (dst, transport) = match self.bridge_targets.get(target) {
            Some(&t) => t,
            None => match dialog::uri_socket_addr(target) {
                Some(dst) => (dst, bridge_transport(target)),
                None => return,
            },
        };
        let peer = Peer { transport, addr: dst, conn: None };
        let mf = msg.max_forwards().unwrap_or(70).saturating_sub(1).min(70);
        if self.send_offer(now, key, target, peer, None, mf, &[]) {
            if let Some(call) = self.calls.get_mut(&key) {
                call.state = State::Ringing;
            }
            self.timers.push(Reverse((now + RING_TIMEOUT, key, TimerKind::RingTimeout)));
        } else {
            self.fail_unanswered(now, key, 503, "Service Unavailable", Outcome::Busy);
        }
    }

    /// Rings a B leg: INVITE with callgate's own SDP offer from a new RTP port. False if no port.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_offer(
        &mut self,
        now: Instant,
        key: CallKey,
        target: &str,
        peer: Peer,
        agent: Option<AgentRef>,
        max_forwards: u32,
        extra: &[(&str, String)],
    ) -> bool {
        let Some(offer) = self.new_offer(now, key, target, peer, agent, max_forwards, extra, Side::B) else { return false };
        let Some(call) = self.calls.get_mut(&key) else { return false };
        call.offers.push(offer);
        true
    }

    /// Sends an INVITE with callgate's own SDP offer from a new RTP port toward leg `side` of the
    /// call; the dialog is known as that side from now on. `None` if no port (or the call is gone).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_offer(
        &mut self,
        now: Instant,
        key: CallKey,
        target: &str,
        peer: Peer,
        agent: Option<AgentRef>,
        max_forwards: u32,
        extra: &[(&str, String)],
        side: Side,
    ) -> Option<Offer> {
        let Some(port) = self.ports.allocate() else {
            tracing::warn!(call = key, ?side, "RTP port range exhausted: cannot ring the leg");
            return None;
        };
        let call_id = format!("{}@{}", self.rng.token(20), self.cfg.local_sip.ip());
        let local_tag = self.rng.token(10);
        let branch = format!("z9hG4bK{}", self.rng.token(16));
        let sess_id = self.rng.next_u64() >> 2;
        let sdp = sdp::offer(&B_CODECS, self.cfg.media_ip, port, sess_id);
        let Some(call) = self.calls.get(&key) else {
            self.ports.release(port);
            return None;
        };
        // A callback calls the citizen from the centre's number; everyone else sees the caller.
        let from_user = if call.callback.is_some() && agent.is_none() {
            call.number.clone()
        } else if call.caller.is_empty() {
            "anonymous".to_owned()
        } else {
            call.caller.clone()
        };
        let from = format!("<sip:{}@{}>", from_user, host_port(self.cfg.local_sip));
        let to = format!("<{}>", target);
        let contact = self.contact_uri(peer.transport);
        let mut rb = RequestBuilder::new(Method::Invite, target)
            .via(peer.transport, &host_port(self.cfg.local_sip), &branch)
            .from(&from, &local_tag)
            .to(&to, None)
            .call_id(&call_id)
            .cseq(1)
            .max_forwards(max_forwards)
            .contact(&contact)
            .header("Allow", ALLOW)
            .header("User-Agent", &self.cfg.user_agent)
            .header("X-Callgate-Call", &call.cg_id);
        for (name, value) in extra {
            rb = rb.header(name, value);
        }
        let invite = rb.body("application/sdp", &sdp).build();
        let Ok(invite_msg) = Message::parse(invite.clone()) else {
            self.ports.release(port);
            return None;
        };
        // An agent's offer is measured from the input that caused it: the caller entering the queue
        // (in this very input), or an agent becoming available.
        let mark = agent.filter(|_| side == Side::B).map(|_| {
            let entered_now = self.calls.get(&key).is_some_and(|c| c.queued_at == Some(now));
            Mark { stage: if entered_now { Stage::EnqueueToOffer } else { Stage::ReadyToOffer }, since: now }
        });
        let t = self.txn.request_marked(now, Method::Invite, &branch, invite, peer, mark);
        let purpose = if side == Side::B { Purpose::BInvite } else { Purpose::SideInvite(side.leg()) };
        self.clients.insert(t, (key, purpose));
        let dialog = Dialog::uac(call_id.clone(), local_tag.clone(), from, to, target.to_owned(), contact, peer);
        self.dialogs.insert((call_id, local_tag), (key, side));
        Some(Offer { agent, txn: t, invite: invite_msg, dialog, port, sdp })
    }

    /// CANCELs one ringing offer (RFC 3261 9.1) and forgets it; a 2xx that crosses the CANCEL is
    /// ACKed and ended with BYE as an orphan.
    pub(super) fn withdraw_offer(&mut self, now: Instant, key: CallKey, idx: usize) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        if idx >= call.offers.len() {
            return;
        }
        let offer = call.offers.remove(idx);
        self.cancel_offer(now, key, offer);
    }

    /// CANCELs a ringing INVITE of ours and forgets its dialog and port.
    pub(super) fn cancel_offer(&mut self, now: Instant, key: CallKey, offer: Offer) {
        self.dialogs.remove(dkey(&(offer.dialog.call_id.as_str(), offer.dialog.local_tag.as_str())));
        self.ports.release(offer.port);
        let cancel = crate::sip::build::cancel_for(&offer.invite);
        if let Some(branch) = top_branch(&cancel) {
            let t = self.txn.request(now, Method::Cancel, &branch, cancel, offer.dialog.peer);
            self.clients.insert(t, (key, Purpose::Cancel));
            self.cancelled.insert(t, offer.txn);
        }
    }

    /// CANCELs every ringing offer of a call.
    pub(super) fn withdraw_all(&mut self, now: Instant, key: CallKey) {
        while self.calls.get(&key).is_some_and(|c| !c.offers.is_empty()) {
            self.withdraw_offer(now, key, 0);
        }
    }

    pub(super) fn on_response(&mut self, now: Instant, txn: TxnId, msg: Message) {
        let Some(&(key, purpose)) = self.clients.get(&txn) else { return };
        if let Purpose::SideInvite(leg) = purpose {
            self.on_side_response(now, txn, key, leg, msg);
            return;
        }
        let code = msg.status().unwrap_or(0);
        if code >= 200 && purpose != Purpose::BInvite {
            self.clients.remove(&txn);
        }
        if purpose == Purpose::Notify && code >= 300 {
            tracing::info!(call = key, code, "the phone refused the remote answer (NOTIFY Event: talk)");
        }
        if purpose != Purpose::BInvite {
            return;
        }
        let idx = self.calls.get(&key).and_then(|c| c.offers.iter().position(|o| o.txn == txn));
        let Some(idx) = idx else {
            // Not (or no longer) an offer of a live call: the caller left, or the offer was
            // withdrawn, or this is a retransmitted 2xx of the connected leg.
            if (200..300).contains(&code) {
                self.on_late_2xx(now, key, &msg);
            }
            if code >= 200 {
                self.clients.remove(&txn);
            }
            return;
        };
        match code {
            100 => {}
            101..=199 => {
                // An agent's phone rings with a tag: the early dialog, for a remote answer (NOTIFY).
                if let Some(o) = self.calls.get_mut(&key).and_then(|c| c.offers.get_mut(idx)) {
                    if o.agent.is_some() && o.dialog.remote_tag.is_none() {
                        o.dialog.early_uac(&msg);
                    }
                }
                let Some(call) = self.calls.get(&key) else { return };
                if call.state == State::Ringing && code == 180 {
                    // The bridge target rings: so does the caller (no early media relayed).
                    self.send_a_provisional(now, key, 180, "Ringing");
                }
            }
            200..=299 => self.offer_answered(now, key, idx, msg),
            _ => {
                self.clients.remove(&txn);
                let Some(call) = self.calls.get_mut(&key) else { return };
                let offer = call.offers.remove(idx);
                self.dialogs.remove(dkey(&(offer.dialog.call_id.as_str(), offer.dialog.local_tag.as_str())));
                self.ports.release(offer.port);
                if let Some((id, _)) = call.callback {
                    // The citizen did not answer the callback, or the reserved agent did not: the
                    // ACD retries later (the place is kept).
                    tracing::info!(call = key, callback = id, code, "callback attempt failed");
                    self.acd.callback_result(now, id, None);
                    let reason = if offer.agent.is_some() { "agent unavailable for the callback" } else { "citizen did not answer the callback" };
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.end_reason = Some("callback failed".into());
                    }
                    self.hang_up(now, key, Outcome::Failed, code, reason);
                    return;
                }
                if offer.agent.is_none() && call.answered.is_some() {
                    // A transfer target refused: the caller goes back into the queue.
                    tracing::info!(call = key, code, "transfer target refused: back into the queue");
                    call.transferred_to = None;
                    self.enter_queue(now, key);
                    return;
                }
                if let Some(agent) = offer.agent {
                    let reason = match code {
                        486 | 600 => MissReason::Busy,
                        603 | 403 => MissReason::Declined,
                        408 | 480 | 487 => MissReason::NoAnswer,
                        _ => MissReason::Unreachable,
                    };
                    tracing::info!(call = key, code, "agent did not take the call");
                    self.acd.missed(now, key, agent, reason);
                    return;
                }
                let reason = msg.reason().unwrap_or("Failed").to_owned();
                let outcome = match code {
                    486 | 600 | 603 => Outcome::Busy,
                    487 => Outcome::Cancelled,
                    _ => Outcome::Failed,
                };
                // The caller gets the callee's answer (codes a UA would not forward are mapped).
                let (fwd, fwd_reason) = match code {
                    401 | 407 => (503, "Service Unavailable".to_owned()),
                    _ => (code, reason),
                };
                // A redirect is useful to the caller only with where to go.
                let contacts: Vec<&str> =
                    if (300..400).contains(&code) { msg.header_values(HeaderName::Contact).collect() } else { Vec::new() };
                let extra = (!contacts.is_empty()).then(|| ("Contact", contacts.join(", ")));
                self.fail_unanswered_with(now, key, fwd, &fwd_reason, outcome, extra);
            }
        }
    }

    /// A 2xx that belongs to no ringing offer: a retransmission for the connected leg (ACK again), or
    /// the answer of a leg callgate no longer wants (another fork, a withdrawn offer, a caller who
    /// left): ACK and BYE it (RFC 3261 13.2.2.4, 15).
    fn on_late_2xx(&mut self, now: Instant, key: CallKey, msg: &Message) {
        if let Some(b) = self.calls.get(&key).and_then(|c| c.b.as_ref()) {
            let theirs = msg.to_hdr().ok().and_then(|t| t.tag().map(str::to_owned));
            if theirs == b.remote_tag && msg.call_id() == Some(b.call_id.as_str()) {
                let (peer, data) = b.ack(msg, &mut self.rng, &self.cfg);
                self.outputs.push_back(Output::Transmit(Transmit { peer, data, mark: None }));
                return;
            }
        }
        tracing::info!(call = key, "a B leg answered that is no longer wanted: ACK and BYE");
        self.ack_and_bye_orphan(now, msg);
    }

    /// An offer's 2xx: the B leg is connected; every other offer of the call is withdrawn.
    fn offer_answered(&mut self, now: Instant, key: CallKey, idx: usize, msg: Message) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        if call.state == State::Dialing {
            self.citizen_answered(now, key, idx, msg);
            return;
        }
        let mut offer = call.offers.remove(idx);
        let keep_peer = offer.dialog.peer;
        offer.dialog.confirm_uac(&msg);
        if offer.agent.is_some() {
            // Agents' phones are reached where they registered from (NAT): keep that.
            offer.dialog.peer = keep_peer;
        }
        let (peer, ack) = offer.dialog.ack(&msg, &mut self.rng, &self.cfg);
        self.outputs.push_back(Output::Transmit(Transmit { peer, data: ack, mark: None }));
        let answer = sdp::parse_answer(&msg.body()).ok();
        let callback = self.calls.get(&key).and_then(|c| c.callback);
        let accepted = match offer.agent {
            Some(_) if callback.is_some() => {
                if let Some((id, _)) = callback {
                    self.acd.callback_result(now, id, Some(key));
                }
                true
            }
            Some(agent) => match self.acd.answered(now, key, agent) {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(call = key, error = %e, "agent answered an offer the ACD withdrew: BYE");
                    false
                }
            },
            None => true,
        };
        let Some(answer) = answer.filter(|_| accepted) else {
            if accepted {
                tracing::info!(call = key, "B leg answered without a usable SDP answer: BYE");
                if let Some(agent) = offer.agent {
                    self.acd.missed(now, key, agent, MissReason::Unreachable);
                }
            }
            let (peer, branch, bye) = offer.dialog.bye(&mut self.rng, &self.cfg, "no usable media");
            let t = self.txn.request(now, Method::Bye, &branch, bye, peer);
            self.clients.insert(t, (key, Purpose::Bye));
            self.dialogs.remove(dkey(&(offer.dialog.call_id.as_str(), offer.dialog.local_tag.as_str())));
            self.ports.release(offer.port);
            return;
        };
        self.withdraw_all(now, key);
        let Some(call) = self.calls.get_mut(&key) else { return };
        call.state = State::Connected;
        if offer.agent.is_some() {
            call.last_agent = offer.agent;
        }
        call.agent = offer.agent;
        call.talk_from = Some(now);
        call.b_port = Some(offer.port);
        call.b_media = Some((leg_media(&answer), answer.direction));
        call.b_sdp = Some(offer.sdp.clone());
        call.b = Some(offer.dialog);
        self.open_leg(key, Leg::B, offer.port, &answer);
        // The bridge service answers the caller only now.
        self.send_a_200(now, key);
        self.open_a(key);
        self.relay_both(key);
        self.outputs.push_back(Output::Measured(Mark { stage: Stage::AnswerToBridge, since: now }));
        self.publish_call_event(key, crate::cti::events::CALL_ANSWERED);
        self.start_recording(key);
    }

    /// Opens a leg callgate called, on its port, with what its answer negotiated and a fresh stream
    /// identity toward it.
    pub(super) fn open_leg(&mut self, key: CallKey, leg: Leg, port: u16, answer: &sdp::Negotiated) {
        let cmd = MediaCommand::Open {
            call: key,
            leg,
            local_port: port,
            media: leg_media(answer),
            direction: answer.direction,
            ssrc: self.rng.next_u32(),
            seq: (self.rng.next_u32() & 0x7fff) as u16,
            ts: self.rng.next_u32(),
        };
        self.outputs.push_back(Output::Media(cmd));
    }

    /// Both legs hear each other, once both are open.
    pub(super) fn relay_both(&mut self, key: CallKey) {
        let Some(call) = self.calls.get(&key) else { return };
        if !(call.a_open && call.b_port.is_some()) {
            return;
        }
        self.outputs.push_back(Output::Media(MediaCommand::Relay { call: key, to_leg: Leg::A }));
        self.outputs.push_back(Output::Media(MediaCommand::Relay { call: key, to_leg: Leg::B }));
    }

    fn start_recording(&mut self, key: CallKey) {
        let Some(call) = self.calls.get(&key) else { return };
        let Some(dir) = self.recordings_for(&call.tenant, &call.service) else { return };
        let path = dir.join(format!("{}.wav", call.cg_id));
        let shown = path.display().to_string();
        self.outputs.push_back(Output::Media(MediaCommand::Record { call: key, path }));
        if let Some(call) = self.calls.get_mut(&key) {
            call.recording = Some(shown);
        }
    }

    pub(super) fn on_stray_response(&mut self, msg: Message) {
        // A 2xx retransmission to an INVITE whose transaction is gone: ACK it if it belongs to a call.
        if !(msg.status().is_some_and(|c| (200..300).contains(&c)) && msg.cseq().is_ok_and(|c| c.method == Method::Invite)) {
            return;
        }
        let tag = msg.from_hdr().ok().and_then(|f| f.tag().map(str::to_owned));
        let (Some(tag), Some(cid)) = (tag, msg.call_id()) else { return };
        if let Some(&(key, Side::B)) = self.dialogs.get(dkey(&(cid, tag.as_str()))) {
            if let Some(b) = self.calls.get(&key).and_then(|c| c.b.as_ref()) {
                let (peer, ack) = b.ack(&msg, &mut self.rng, &self.cfg);
                self.send(peer, ack, None);
            }
        }
    }

    /// A 2xx to our INVITE whose call is already gone (the caller's CANCEL crossed it): ACK it
    /// and end the dialog with BYE (RFC 3261 15: the callee must not be left up).
    pub(super) fn ack_and_bye_orphan(&mut self, now: Instant, resp: &Message) {
        if let Some(mut d) = dialog::orphan_from_response(resp, self.contact_uri(Transport::Udp)) {
            let (peer, ack) = d.ack(resp, &mut self.rng, &self.cfg);
            self.send(peer, ack, None);
            let (peer, branch, bye) = d.bye(&mut self.rng, &self.cfg, "caller left");
            self.txn.request(now, Method::Bye, &branch, bye, peer);
        }
    }

    // ---- ending calls ---------------------------------------------------------------------------

    /// Ends an answered or unanswered call from callgate's side, whatever its state.
    pub(super) fn hang_up(&mut self, now: Instant, key: CallKey, outcome: Outcome, status: u16, reason: &str) {
        let Some(call) = self.calls.get(&key) else { return };
        if call.answered.is_none() {
            let code = if status >= 300 { status } else { 480 };
            let phrase = if code == 503 { "Service Unavailable" } else if code == 480 { "Temporarily Unavailable" } else { reason };
            self.fail_unanswered(now, key, code, phrase, outcome);
        } else {
            self.end_call(now, key, outcome, status, reason, None);
        }
    }

    /// Ends an answered call: BYE to every leg except `except` (the side that hung up), offers
    /// withdrawn, the ACD told, media stopped, record written.
    pub(super) fn end_call(&mut self, now: Instant, key: CallKey, outcome: Outcome, status: u16, reason: &str, except: Option<Side>) {
        self.withdraw_all(now, key);
        self.end_side_legs(now, key, reason);
        self.tell_acd_gone(now, key, except);
        let Some(mut call) = self.calls.remove(&key) else { return };
        self.a_invites.remove(&call.a_invite);
        self.dialogs.remove(dkey(&(call.a.call_id.as_str(), call.a.local_tag.as_str())));
        if except != Some(Side::A) {
            let (peer, branch, bye) = call.a.bye(&mut self.rng, &self.cfg, reason);
            let t = self.txn.request(now, Method::Bye, &branch, bye, peer);
            self.clients.insert(t, (key, Purpose::Bye));
        }
        if let Some(b) = call.b.as_mut() {
            self.dialogs.remove(dkey(&(b.call_id.as_str(), b.local_tag.as_str())));
            if except != Some(Side::B) && b.confirmed() {
                let (peer, branch, bye) = b.bye(&mut self.rng, &self.cfg, reason);
                let t = self.txn.request(now, Method::Bye, &branch, bye, peer);
                self.clients.insert(t, (key, Purpose::Bye));
            }
        }
        self.release_media(now, key, &mut call);
        let by = match except {
            Some(Side::A) => "caller",
            Some(Side::B) if call.agent.is_some() => "agent",
            Some(Side::B) => "callee",
            Some(Side::C | Side::D) | None => "system",
        };
        call.end_reason.get_or_insert_with(|| by.to_owned());
        self.finish(now, &call, outcome, status, reason);
    }

    fn release_media(&mut self, now: Instant, key: CallKey, call: &mut Call) {
        let a = call.media_port.take();
        let b = call.b_port.take();
        if a.is_some() || b.is_some() {
            if call.a_open || b.is_some() {
                self.outputs.push_back(Output::Media(MediaCommand::Stop { call: key }));
            }
            for p in [a, b].into_iter().flatten() {
                self.ports.release(p);
            }
        }
        if let Some((_, since)) = call.held.take() {
            call.hold_ms += now.saturating_duration_since(since).as_millis() as u64;
        }
    }

    /// The ACD learns that the call is over: a talk ended (`by` whom), or a waiting caller left.
    fn tell_acd_gone(&mut self, now: Instant, key: CallKey, except: Option<Side>) {
        let Some(call) = self.calls.get(&key) else { return };
        if call.agent.is_some() && call.talk_from.is_some() {
            let by = match except {
                Some(Side::A) => "caller",
                Some(Side::B) => "agent",
                Some(Side::C | Side::D) | None => "system",
            };
            self.acd.ended(now, key, by);
        } else if call.queued_at.is_some() {
            self.acd.abandon(now, key);
        }
    }

    /// Ends a call whose caller has had no final answer: the final answer is `code`.
    pub(super) fn fail_unanswered(&mut self, now: Instant, key: CallKey, code: u16, reason: &str, outcome: Outcome) {
        self.fail_unanswered_with(now, key, code, reason, outcome, None);
    }

    pub(super) fn fail_unanswered_with(
        &mut self,
        now: Instant,
        key: CallKey,
        code: u16,
        reason: &str,
        outcome: Outcome,
        extra: Option<(&str, String)>,
    ) {
        self.withdraw_all(now, key);
        self.end_side_legs(now, key, reason);
        self.tell_acd_gone(now, key, Some(Side::A));
        let Some(mut call) = self.calls.remove(&key) else { return };
        self.a_invites.remove(&call.a_invite);
        self.dialogs.remove(dkey(&(call.a.call_id.as_str(), call.a.local_tag.as_str())));
        if call.callback.is_none() {
            let mut rb = ResponseBuilder::new(&call.a_invite_msg, code, reason).to_tag(&call.a.local_tag);
            if code == 503 {
                rb = rb.header("Retry-After", &self.cfg.retry_after_s.to_string());
            }
            if let Some((name, value)) = &extra {
                rb = rb.header(name, value);
            }
            let resp = rb.build();
            self.txn.respond(now, call.a_invite, code, resp, None);
        }
        self.release_media(now, key, &mut call);
        call.answered = None;
        let by = if code == 487 { "caller" } else { "system" };
        call.end_reason.get_or_insert_with(|| by.to_owned());
        self.finish(now, &call, outcome, code, reason);
    }
}

/// What the media engine needs of a leg's negotiation.
pub(super) fn leg_media(n: &sdp::Negotiated) -> LegMedia {
    LegMedia { remote: n.remote, codec: n.codec, audio_pt: n.pt, dtmf_pt: n.dtmf_pt, ptime_ms: n.remote_ptime_ms.unwrap_or(n.ptime_ms) }
}
