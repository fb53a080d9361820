//! A SIP dialog as one of callgate's legs sees it (RFC 3261 section 12): what is needed to send
//! requests inside it (ACK for a 2xx, BYE).
//!
//! ```text
//!  caller's leg (callgate is UAS):   INVITE received ──▶ [confirmed]  (our tag is in the 200;
//!                                                                      the ACK is the call core's)
//!  bridge leg (callgate is UAC):     INVITE sent ──▶ [early] ──first 2xx──▶ [confirmed]
//!                                                      (remote tag, target and route set from it;
//!                                                       a 2xx with another tag is another fork)
//! ```
//! A confirmed dialog sends BYE with the next local CSeq to the remote target, through the route
//! set (loose routing), on the leg's connection for stream transports.


use bytes::Bytes;

use super::{host_port, CoreConfig};
use crate::sip::build::RequestBuilder;
use crate::sip::msg::{HeaderName, Message, Method};

use crate::sip::{Peer, Rng, Transport};

/// One leg's dialog state.
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// Our party as written in From of our requests, without the tag.
    pub local_party: String,
    /// The far party as written in To of our requests, with its tag once known.
    pub remote_party: String,
    /// The far party's tag, once known.
    pub remote_tag: Option<String>,
    /// The Request-URI of requests inside the dialog.
    pub remote_target: String,
    /// Route header values for requests inside the dialog, in order.
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    /// Our Contact URI for this leg.
    pub local_contact: String,
    /// Where requests inside the dialog are sent.
    pub peer: Peer,
    confirmed: bool,
}

impl Dialog {
    /// The dialog callgate (as UAS) forms with the sender of `invite`.
    pub fn uas(invite: &Message, peer: Peer, local_tag: &str, local_contact: String) -> Option<Dialog> {
        let call_id = invite.call_id()?.to_owned();
        let from = invite.header(HeaderName::From)?.to_owned();
        let to = invite.header(HeaderName::To)?.to_owned();
        let target = invite
            .contacts()
            .next()
            .and_then(|c| c.ok())
            .map(|c| c.uri.to_owned())
            .or_else(|| invite.from_hdr().ok().map(|f| f.uri.to_owned()))?;
        let route_set: Vec<String> = invite.header_values(HeaderName::RecordRoute).map(str::to_owned).collect();
        let peer = request_destination(&route_set, &target, peer);
        Some(Dialog {
            call_id,
            local_tag: local_tag.to_owned(),
            local_party: to,
            remote_tag: invite.from_hdr().ok().and_then(|f| f.tag().map(str::to_owned)),
            remote_party: from,
            remote_target: target,
            route_set,
            local_cseq: 0,
            local_contact,
            peer,
            confirmed: true,
        })
    }

    /// The dialog callgate (as UAC) is forming by sending an INVITE; confirmed by the 2xx.
    pub fn uac(
        call_id: String,
        local_tag: String,
        local_party: String,
        remote_party: String,
        target: String,
        local_contact: String,
        peer: Peer,
    ) -> Dialog {
        Dialog {
            call_id,
            local_tag,
            local_party,
            remote_party,
            remote_tag: None,
            remote_target: target,
            route_set: Vec::new(),
            local_cseq: 1,
            local_contact,
            peer,
            confirmed: false,
        }
    }

    pub fn confirmed(&self) -> bool {
        self.confirmed
    }

    /// Takes the remote tag, target and route set from the first 2xx (RFC 3261 12.1.2).
    pub fn confirm_uac(&mut self, resp: &Message) {
        if let Some(to) = resp.header(HeaderName::To) {
            self.remote_party = to.to_owned();
        }
        self.remote_tag = resp.to_hdr().ok().and_then(|t| t.tag().map(str::to_owned));
        if let Some(c) = resp.contacts().next().and_then(|c| c.ok()) {
            self.remote_target = c.uri.to_owned();
        }
        let mut rr: Vec<String> = resp.header_values(HeaderName::RecordRoute).map(str::to_owned).collect();
        rr.reverse();
        self.route_set = rr;
        self.peer = request_destination(&self.route_set, &self.remote_target, self.peer);
        self.confirmed = true;
    }

    /// Takes the remote tag and target from a provisional answer with a tag: the early dialog
    /// (RFC 3261 12.1.2), in which a NOTIFY may go before the final answer. Where requests go is kept.
    pub fn early_uac(&mut self, resp: &Message) {
        let Some(tag) = resp.to_hdr().ok().and_then(|t| t.tag().map(str::to_owned)) else { return };
        if let Some(to) = resp.header(HeaderName::To) {
            self.remote_party = to.to_owned();
        }
        self.remote_tag = Some(tag);
        if let Some(c) = resp.contacts().next().and_then(|c| c.ok()) {
            self.remote_target = c.uri.to_owned();
        }
        let mut rr: Vec<String> = resp.header_values(HeaderName::RecordRoute).map(str::to_owned).collect();
        rr.reverse();
        self.route_set = rr;
    }

    /// The ACK for a 2xx to our INVITE (RFC 3261 13.2.2.4): a new transaction of its own.
    pub fn ack(&self, resp: &Message, rng: &mut Rng, cfg: &CoreConfig) -> (Peer, Bytes) {
        self.ack_with(resp, rng, cfg, None)
    }

    /// The ACK for a 2xx, carrying the answer when the 2xx held the offer (a delayed offer).
    pub fn ack_with(&self, resp: &Message, rng: &mut Rng, cfg: &CoreConfig, body: Option<(&str, &[u8])>) -> (Peer, Bytes) {
        let seq = resp.cseq().map(|c| c.seq).unwrap_or(1);
        let branch = format!("z9hG4bK{}", rng.token(16));
        let sent_by = host_port(cfg.local_sip);
        let mut rb = RequestBuilder::new(Method::Ack, &self.remote_target)
            .via(self.peer.transport, &sent_by, &branch)
            .from(&self.local_party, &self.local_tag)
            .to(&self.remote_party, None)
            .call_id(&self.call_id)
            .cseq(seq)
            .max_forwards(70);
        for r in &self.route_set {
            rb = rb.route(r);
        }
        if let Some((ctype, body)) = body {
            rb = rb.body(ctype, body);
        }
        (self.peer, rb.build())
    }

    /// A BYE inside the dialog; returns where it goes, its branch and its bytes.
    pub fn bye(&mut self, rng: &mut Rng, cfg: &CoreConfig, reason: &str) -> (Peer, String, Bytes) {
        let reason = format!("SIP;cause=200;text=\"{}\"", reason.replace('"', "'"));
        self.request(Method::Bye, rng, cfg, &[("Reason", &reason)])
    }

    /// A request without a body inside the dialog (early or confirmed), with `extra` headers.
    pub fn request(&mut self, method: Method, rng: &mut Rng, cfg: &CoreConfig, extra: &[(&str, &str)]) -> (Peer, String, Bytes) {
        self.local_cseq += 1;
        let branch = format!("z9hG4bK{}", rng.token(16));
        let sent_by = host_port(cfg.local_sip);
        let mut rb = RequestBuilder::new(method, &self.remote_target)
            .via(self.peer.transport, &sent_by, &branch)
            .from(&self.local_party, &self.local_tag)
            .to(&self.remote_party, None)
            .call_id(&self.call_id)
            .cseq(self.local_cseq)
            .max_forwards(70)
            .header("User-Agent", &cfg.user_agent);
        for (name, value) in extra {
            rb = rb.header(name, value);
        }
        for r in &self.route_set {
            rb = rb.route(r);
        }
        (self.peer, branch, rb.build())
    }
}

/// Where a request inside the dialog goes: the first route (loose routing), else the target.
/// Stream legs stay on their connection.
fn request_destination(route_set: &[String], target: &str, peer: Peer) -> Peer {
    if peer.transport == Transport::Tcp && peer.conn.is_some() {
        return peer;
    }
    let next = route_set
        .first()
        .map(|r| r.trim().trim_start_matches('<').split('>').next().unwrap_or("").to_owned())
        .unwrap_or_else(|| target.to_owned());
    match uri_socket_addr(&next) {
        Some(addr) => Peer { addr, ..peer },
        None => peer,
    }
}

pub use crate::sip::uri::ip_socket_addr as uri_socket_addr;

/// A minimal dialog from a 2xx whose call is gone, so it can be ACKed and ended.
pub fn orphan_from_response(resp: &Message, local_contact: String) -> Option<Dialog> {
    let from = resp.from_hdr().ok()?;
    let tag = from.tag()?.to_owned();
    let party = resp.header(HeaderName::From)?;
    // The From value carries ";tag=..." already; strip it so `from()` can add it back once.
    let local_party = party.split(";tag=").next().unwrap_or(party).to_owned();
    let target = resp.contacts().next()?.ok()?.uri.to_owned();
    let addr = uri_socket_addr(&target)?;
    let mut d = Dialog::uac(
        resp.call_id()?.to_owned(),
        tag,
        local_party,
        resp.header(HeaderName::To)?.to_owned(),
        target,
        local_contact,
        Peer::udp(addr),
    );
    d.confirm_uac(resp);
    Some(d)
}
