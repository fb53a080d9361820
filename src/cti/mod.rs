//! The CTI server (issue 5): a control socket for agent desktops, CRMs, supervisors and
//! integrations. This module is the sans-IO core: the protocol ([`proto`]), the [`Hub`] that
//! authenticates connections, checks permissions, turns messages into typed [`Command`]s for the call
//! core and fans events out, and a WebSocket codec ([`ws`]) shared by the server shell
//! (`edge::cti`) and the blocking client ([`client`], used by `callgate ctl`; the one part of this
//! module that does I/O, on the command line's side only).
//!
//! ```text
//!  WebSocket GET /cti ─┐                      ┌─────────────── sip task ────────────────┐
//!  (--http address)    ├─ edge::cti (aux rt) ─▶ CtiIn ─▶ Hub ─▶ Execute{command} ─▶ call core / ACD
//!  Unix socket, JSON   ┘   reader/writer per   ◀─ Send/Close ◀─┘ ◀── command_result ──┘
//!  lines                   connection                      ◀── publish(Event) ◀── core / ACD / stats
//! ```
//!
//! Who may do what: every connection authenticates with a token (the `auth` command, or an
//! `Authorization: Bearer` header on the WebSocket upgrade). Tokens are kept as SHA-256 hashes and
//! compared in constant time. See [`Role`] and [`Command::allowed_for`]; the hub refuses what it can
//! decide alone (the role, another agent, another tenant); whose call a call command touches is
//! decided by the call core, with [`Principal::may_act_on`].

pub mod client;
mod error;
pub mod events;
mod hub;
pub mod proto;
pub mod ws;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

pub use error::CtiError;
pub use hub::{CloseReason, Hub, HubConfig, HubOutput, HubStats};
pub use proto::{Command, ForcedState, MonitorMode, VocFlag};

/// What a principal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A counsellor: its own state and its own calls only.
    Agent,
    /// Its tenant's agents, queues and calls (all tenants when it has none).
    Supervisor,
    /// CRM, complaint tracking, wallboards: read, attach data, dispositions, callbacks.
    Integration,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Integration => "integration",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "agent" => Role::Agent,
            "supervisor" => Role::Supervisor,
            "integration" => Role::Integration,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

/// Someone allowed to connect, as the profile defines it. The token itself is never kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// The tenant it is bound to; `None`: all tenants (admins, platform-wide integrations).
    pub tenant: Option<String>,
    /// For the agent role: the ACD agent id it acts as.
    pub agent: Option<String>,
    /// SHA-256 of the token.
    pub token_sha256: [u8; 32],
}

/// A principal as the hub hands it to the call core with each command.
pub type PrincipalRef = Arc<Principal>;

impl Principal {
    /// A principal with the hash of `token` (for tests and for profiles that hold plain tokens).
    pub fn with_token(name: &str, role: Role, tenant: Option<&str>, agent: Option<&str>, token: &str) -> Principal {
        Principal {
            name: name.to_owned(),
            role,
            tenant: tenant.map(str::to_owned),
            agent: agent.map(str::to_owned),
            token_sha256: token_hash(token),
        }
    }

    /// Whether an event with this visibility reaches the principal: admins see everything; others
    /// only their tenant's events (all tenants' when they have none); agents, within that, only the
    /// events naming their agent or meant for all the tenant's agents.
    pub fn may_see(&self, v: &Visibility) -> bool {
        self.in_scope(v, true)
    }

    /// Whether the principal may act on what `v` describes (a call: its tenant and the agents on it).
    /// The call core uses this for call commands: an agent acts only on calls it is on, a supervisor
    /// on its tenant's calls, an admin on all.
    pub fn may_act_on(&self, v: &Visibility) -> bool {
        self.in_scope(v, false)
    }

    fn in_scope(&self, v: &Visibility, broadcast: bool) -> bool {
        if self.role == Role::Admin {
            return true;
        }
        if let Some(t) = &self.tenant {
            if v.tenant.as_deref() != Some(t.as_str()) {
                return false;
            }
        }
        match self.role {
            Role::Agent => {
                (broadcast && v.tenant_agents)
                    || self.agent.as_deref().is_some_and(|a| v.agents.iter().any(|x| x == a))
            }
            _ => true,
        }
    }
}

/// SHA-256 of a token, as stored in [`Principal::token_sha256`].
pub fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Equality of two hashes in time independent of where they differ.
pub(crate) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut d = 0u8;
    for i in 0..32 {
        d |= a[i] ^ b[i];
    }
    // Keep the optimiser from turning the loop into an early-exit comparison.
    std::hint::black_box(d) == 0
}

/// How a connection reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    /// JSON lines over the Unix socket.
    Unix,
    /// JSON lines over TCP.
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Unix => "unix",
            Transport::Tcp => "tcp",
        }
    }
}

/// What the shell knows about a new connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub transport: Transport,
    /// The remote address (or the Unix peer's pid/uid), for log lines.
    pub remote: String,
    /// The token of an `Authorization: Bearer` header on the WebSocket upgrade.
    pub bearer: Option<String>,
}

/// Who may see an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visibility {
    /// The tenant the event belongs to; `None`: platform-wide (admins and untenanted principals only).
    pub tenant: Option<String>,
    /// The agents concerned (the agent whose state changed; the agents on a call, consulted ones too).
    pub agents: Vec<String>,
    /// The call concerned, if any (informative: lets the call core build a call's visibility once).
    pub call: Option<String>,
    /// Every agent of the tenant sees it too (queue statistics for the agents' desktops).
    pub tenant_agents: bool,
}

impl Visibility {
    /// Supervisors, integrations and admins of the tenant.
    pub fn tenant(tenant: &str) -> Visibility {
        Visibility { tenant: Some(tenant.to_owned()), ..Default::default() }
    }

    /// As [`Visibility::tenant`], and every agent of the tenant.
    pub fn tenant_wide(tenant: &str) -> Visibility {
        Visibility { tenant: Some(tenant.to_owned()), tenant_agents: true, ..Default::default() }
    }

    /// As [`Visibility::tenant`], and this agent.
    pub fn agent(tenant: &str, agent: &str) -> Visibility {
        Visibility { tenant: Some(tenant.to_owned()), agents: vec![agent.to_owned()], ..Default::default() }
    }

    /// A call of the tenant with the agents on it.
    pub fn call<S: AsRef<str>>(tenant: &str, call: &str, agents: &[S]) -> Visibility {
        Visibility {
            tenant: Some(tenant.to_owned()),
            agents: agents.iter().map(|a| a.as_ref().to_owned()).collect(),
            call: Some(call.to_owned()),
            tenant_agents: false,
        }
    }

    /// Admins and untenanted principals only.
    pub fn platform() -> Visibility {
        Visibility::default()
    }
}

/// An event to publish: its kind (see [`events`]), who may see it, and its data.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: Cow<'static, str>,
    pub vis: Visibility,
    pub data: Value,
}

impl Event {
    /// An event with typed data (the structs of [`events`]).
    pub fn new<T: Serialize>(kind: &'static str, vis: Visibility, data: &T) -> Event {
        Event { kind: Cow::Borrowed(kind), vis, data: serde_json::to_value(data).unwrap_or(Value::Null) }
    }
}
