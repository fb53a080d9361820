//! The wire protocol, version 1: parsing client messages into typed commands, and writing results
//! and events. The JSON Schema of everything here is `docs/cti-schema.json`.
//!
//! ```text
//! client → server   {"v":1,"id":"c1","cmd":"agent.ready","args":{...}}          ("args" may be left out)
//! server → client   {"v":1,"id":"c1","ok":true,"result":{...}}
//!                   {"v":1,"id":"c1","ok":false,"error":{"code":"forbidden","message":"..."}}
//!                   {"v":1,"seq":123,"event":"call.offered","at_ms":1718000000000,"data":{...}}
//! ```
//! A result whose request could not be read far enough to find its id carries `"id":null`.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CtiError, Principal, Role};

/// The protocol version this server speaks.
pub const VERSION: u64 = 1;

/// Longest accepted command id.
pub const MAX_ID: usize = 64;

/// Every command name of version 1, the connection-level ones (`auth`, `resume`, `ping`) included.
pub const COMMANDS: [&str; 26] = [
    "auth",
    "resume",
    "ping",
    "snapshot",
    "agent.login",
    "agent.logout",
    "agent.ready",
    "agent.not_ready",
    "agent.force_state",
    "call.answer",
    "call.hangup",
    "call.hold",
    "call.resume",
    "call.transfer",
    "call.consult",
    "call.consult_complete",
    "call.consult_swap",
    "call.consult_cancel",
    "call.conference",
    "call.attach",
    "call.disposition",
    "call.monitor",
    "callback.schedule",
    "query.queues",
    "query.agents",
    "query.calls",
];

/// How a supervisor joins a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorMode {
    /// Hears both sides; nobody hears the supervisor.
    Listen,
    /// Hears both sides; only the agent hears the supervisor.
    Whisper,
    /// A three-way conversation.
    Barge,
    /// The supervisor leaves (callgate hangs up the supervisor's phone).
    Stop,
}

/// The VOC flag of a disposition: complaints and praise are forwarded to the departments concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VocFlag {
    None,
    Complaint,
    Praise,
}

impl VocFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            VocFlag::None => "none",
            VocFlag::Complaint => "complaint",
            VocFlag::Praise => "praise",
        }
    }
}

/// The state a supervisor forces an agent into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForcedState {
    LoggedOut,
    Ready,
    NotReady,
}

/// A command for the call core / ACD, typed and already checked against the principal's role and
/// scope as far as the hub can (see [`Command::authorize`]). Call ids are the call core's call ids
/// (`cg-…`), agent ids are the ACD's agent ids, tenants are tenant names.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    AgentLogin { agent: String },
    AgentLogout { agent: String, reason: String },
    AgentReady { agent: String },
    AgentNotReady { agent: String, reason: String },
    Answer { call: String },
    Hangup { call: String },
    Hold { call: String },
    Resume { call: String },
    /// Transfer to a number or extension, without consultation.
    BlindTransfer { call: String, to: String },
    /// Hold the caller and call `to` (the department) from the agent's phone.
    ConsultStart { call: String, to: String },
    /// Join the caller to the consulted party; the agent leaves.
    ConsultComplete { call: String },
    /// Toggle which party the agent talks to (the other one is held).
    ConsultSwap { call: String },
    /// Hang up the consulted party and return to the caller.
    ConsultCancel { call: String },
    /// Caller, agent and consulted party together.
    Conference { call: String },
    /// Add or replace keys of the call's attached data (case note, subject, any key/values);
    /// a key set to `null` is removed.
    AttachData { call: String, data: Map<String, Value> },
    /// Wrap-up disposition.
    Disposition { call: String, subject: String, settled: bool, flag: VocFlag },
    /// A callback at a set time (Unix ms), or as soon as an agent of the queue is free (`None`):
    /// integrations' outbound calls (originate) go this way, through the ACD.
    ScheduleCallback { tenant: String, queue: String, number: String, at_ms: Option<i64> },
    /// A supervisor joins a call from the phone at `extension` (callgate rings it), or changes the
    /// mode of the monitoring it started (then `extension` may be left out).
    Monitor { call: String, mode: MonitorMode, extension: Option<String> },
    ForceAgentState { agent: String, state: ForcedState, reason: String },
    /// `None`: every tenant (only principals without a tenant can ask that).
    QueryQueues { tenant: Option<String> },
    QueryAgents { tenant: Option<String> },
    QueryCalls { tenant: Option<String> },
    /// What the principal may see, now. Answered with the data of a `snapshot` event.
    Snapshot,
}

/// The agent's or tenant's scope a command acts in, for the hub's permission check.
#[derive(Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Acts on this agent's state.
    Agent(&'a str),
    /// Acts on a call: whose it is only the call core knows (it answers `forbidden` itself).
    Call(&'a str),
    /// Acts within this tenant (`None`: all tenants).
    Tenant(Option<&'a str>),
    /// Whatever the principal may see.
    Own,
}

impl Command {
    /// The wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Command::AgentLogin { .. } => "agent.login",
            Command::AgentLogout { .. } => "agent.logout",
            Command::AgentReady { .. } => "agent.ready",
            Command::AgentNotReady { .. } => "agent.not_ready",
            Command::Answer { .. } => "call.answer",
            Command::Hangup { .. } => "call.hangup",
            Command::Hold { .. } => "call.hold",
            Command::Resume { .. } => "call.resume",
            Command::BlindTransfer { .. } => "call.transfer",
            Command::ConsultStart { .. } => "call.consult",
            Command::ConsultComplete { .. } => "call.consult_complete",
            Command::ConsultSwap { .. } => "call.consult_swap",
            Command::ConsultCancel { .. } => "call.consult_cancel",
            Command::Conference { .. } => "call.conference",
            Command::AttachData { .. } => "call.attach",
            Command::Disposition { .. } => "call.disposition",
            Command::ScheduleCallback { .. } => "callback.schedule",
            Command::Monitor { .. } => "call.monitor",
            Command::ForceAgentState { .. } => "agent.force_state",
            Command::QueryQueues { .. } => "query.queues",
            Command::QueryAgents { .. } => "query.agents",
            Command::QueryCalls { .. } => "query.calls",
            Command::Snapshot => "snapshot",
        }
    }

    /// The call this command acts on, if any.
    pub fn call(&self) -> Option<&str> {
        match self {
            Command::Answer { call }
            | Command::Hangup { call }
            | Command::Hold { call }
            | Command::Resume { call }
            | Command::BlindTransfer { call, .. }
            | Command::ConsultStart { call, .. }
            | Command::ConsultComplete { call }
            | Command::ConsultSwap { call }
            | Command::ConsultCancel { call }
            | Command::Conference { call }
            | Command::AttachData { call, .. }
            | Command::Disposition { call, .. }
            | Command::Monitor { call, .. } => Some(call),
            _ => None,
        }
    }

    /// What the command acts on.
    pub fn scope(&self) -> Scope<'_> {
        match self {
            Command::AgentLogin { agent }
            | Command::AgentLogout { agent, .. }
            | Command::AgentReady { agent }
            | Command::AgentNotReady { agent, .. }
            | Command::ForceAgentState { agent, .. } => Scope::Agent(agent),
            Command::ScheduleCallback { tenant, .. } => Scope::Tenant(Some(tenant)),
            Command::QueryQueues { tenant } | Command::QueryAgents { tenant } | Command::QueryCalls { tenant } => {
                Scope::Tenant(tenant.as_deref())
            }
            Command::Snapshot => Scope::Own,
            c => Scope::Call(c.call().unwrap_or_default()),
        }
    }

    /// Whether `role` may issue this command at all (before looking at whose agent, call or tenant).
    ///
    /// | command | agent | supervisor | integration | admin |
    /// |---|---|---|---|---|
    /// | agent.login/logout/ready/not_ready | own agent | its tenant's agents | – | yes |
    /// | call.answer/hangup/hold/resume/transfer/consult*/conference | own calls | its tenant's calls | – | yes |
    /// | call.attach | own calls | its tenant | its tenant | yes |
    /// | call.disposition | own calls | its tenant | its tenant (the CRM records it) | yes |
    /// | callback.schedule | its tenant | its tenant | its tenant | yes |
    /// | call.monitor, agent.force_state | – | its tenant | – | yes |
    /// | query.queues, query.agents | its tenant | its tenant | its tenant | yes |
    /// | query.calls | – (callers' numbers are personal data) | its tenant | its tenant | yes |
    /// | snapshot | own view | its tenant | its tenant | everything |
    pub fn allowed_for(&self, role: Role) -> bool {
        use Role::*;
        match self {
            Command::AgentLogin { .. }
            | Command::AgentLogout { .. }
            | Command::AgentReady { .. }
            | Command::AgentNotReady { .. }
            | Command::Answer { .. }
            | Command::Hangup { .. }
            | Command::Hold { .. }
            | Command::Resume { .. }
            | Command::BlindTransfer { .. }
            | Command::ConsultStart { .. }
            | Command::ConsultComplete { .. }
            | Command::ConsultSwap { .. }
            | Command::ConsultCancel { .. }
            | Command::Conference { .. } => matches!(role, Agent | Supervisor | Admin),
            Command::AttachData { .. } | Command::Disposition { .. } | Command::ScheduleCallback { .. } => true,
            Command::Monitor { .. } | Command::ForceAgentState { .. } => matches!(role, Supervisor | Admin),
            Command::QueryQueues { .. } | Command::QueryAgents { .. } | Command::Snapshot => true,
            Command::QueryCalls { .. } => matches!(role, Supervisor | Integration | Admin),
        }
    }

    /// The hub's own permission check: the role may issue the command, an agent acts only on its own
    /// agent, a tenant-bound principal only within its tenant. `directory` maps agent ids to their
    /// tenant; with it, a supervisor's agent commands are checked against its tenant and unknown agents
    /// are `not_found`; without it (`None`) those two checks are left to the call core. Whose call
    /// it is, is the call core's to check (see [`Principal::may_act_on`]).
    pub fn authorize(&self, p: &Principal, directory: Option<&HashMap<String, String>>) -> Result<(), CtiError> {
        if !self.allowed_for(p.role) {
            return Err(CtiError::Forbidden(format!(
                "{} ({}) may not use {}",
                p.name,
                p.role.as_str(),
                self.name()
            )));
        }
        if p.role == Role::Admin {
            if let (Scope::Agent(a), Some(dir)) = (self.scope(), directory) {
                if !dir.contains_key(a) {
                    return Err(CtiError::NotFound(format!("no agent {a:?}")));
                }
            }
            return Ok(());
        }
        match self.scope() {
            Scope::Agent(a) => {
                if p.role == Role::Agent {
                    return match p.agent.as_deref() {
                        Some(own) if own == a => Ok(()),
                        Some(own) => Err(CtiError::Forbidden(format!(
                            "{} is agent {own:?} and may not act on agent {a:?}",
                            p.name
                        ))),
                        None => Err(CtiError::Forbidden(format!("{} has the agent role but no agent", p.name))),
                    };
                }
                let Some(dir) = directory else { return Ok(()) };
                let Some(tenant) = dir.get(a) else {
                    return Err(CtiError::NotFound(format!("no agent {a:?}")));
                };
                match p.tenant.as_deref() {
                    Some(t) if t != tenant.as_str() => Err(CtiError::Forbidden(format!(
                        "{} ({}) of tenant {t:?} may not act on agent {a:?} of tenant {tenant:?}",
                        p.name,
                        p.role.as_str()
                    ))),
                    _ => Ok(()),
                }
            }
            Scope::Tenant(t) => match (p.tenant.as_deref(), t) {
                (Some(own), Some(t)) if own != t => Err(CtiError::Forbidden(format!(
                    "{} ({}) of tenant {own:?} may not act in tenant {t:?}",
                    p.name,
                    p.role.as_str()
                ))),
                (Some(own), None) => Err(CtiError::Forbidden(format!(
                    "{} ({}) of tenant {own:?} may not act across all tenants",
                    p.name,
                    p.role.as_str()
                ))),
                _ => Ok(()),
            },
            Scope::Call(_) | Scope::Own => Ok(()),
        }
    }
}

/// A client message, split into its envelope and arguments.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub id: String,
    pub cmd: String,
    pub args: Map<String, Value>,
}

/// A request that failed before it could be executed; `id` is the request's id when it could be read.
#[derive(Debug, PartialEq)]
pub struct Rejected {
    pub id: Option<String>,
    pub error: CtiError,
}

/// Reads the envelope: an object with `"v":1`, a string `id` (1–64 characters, not starting with
/// `#`, which the server uses for its own requests), a string `cmd`, and an optional object `args`.
/// Unknown top-level members are ignored (later minor additions).
pub fn parse_request(text: &str) -> Result<Request, Rejected> {
    let value: Value = serde_json::from_str(text).map_err(|e| Rejected {
        id: None,
        error: CtiError::BadRequest(format!("expected a JSON object, got invalid JSON: {e}")),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(Rejected {
            id: None,
            error: CtiError::BadRequest(format!("expected a JSON object, got {}", type_name(&value))),
        });
    };
    let id = match obj.remove("id") {
        None => return Err(Rejected { id: None, error: CtiError::MissingField("id".into()) }),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(Rejected {
                id: None,
                error: CtiError::BadRequest(format!("id: expected a string, got {}", type_name(&other))),
            })
        }
    };
    let reject = |error| Err(Rejected { id: Some(id.clone()), error });
    if id.is_empty() || id.chars().count() > MAX_ID || id.starts_with('#') || id.chars().any(char::is_control) {
        return Err(Rejected {
            id: None,
            error: CtiError::BadRequest(format!(
                "id: expected 1 to {MAX_ID} printable characters not starting with '#', got {id:?}"
            )),
        });
    }
    match obj.get("v") {
        None => return reject(CtiError::MissingField("v".into())),
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => {
            return reject(CtiError::BadRequest(format!("v: this server speaks protocol version {VERSION}, got {v}")))
        }
    }
    let cmd = match obj.remove("cmd") {
        None => return reject(CtiError::MissingField("cmd".into())),
        Some(Value::String(s)) => s,
        Some(other) => return reject(CtiError::BadRequest(format!("cmd: expected a string, got {}", type_name(&other)))),
    };
    let args = match obj.remove("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return reject(CtiError::BadRequest(format!("args: expected an object, got {}", type_name(&other))))
        }
    };
    Ok(Request { id, cmd, args })
}

/// Builds the typed command from `cmd` and `args`. Missing agent arguments default to the
/// principal's own agent, missing tenants to its own tenant.
pub fn parse_command(cmd: &str, args: &Map<String, Value>, p: &Principal) -> Result<Command, CtiError> {
    let a = Args(args);
    let agent = || -> Result<String, CtiError> {
        match a.opt_str("agent", 64)? {
            Some(s) => ident("agent", s),
            None => p.agent.clone().ok_or_else(|| CtiError::MissingField("args.agent".into())),
        }
    };
    let tenant_opt = || -> Result<Option<String>, CtiError> {
        Ok(match a.opt_str("tenant", 64)? {
            Some(t) => Some(ident("tenant", t)?),
            None => p.tenant.clone(),
        })
    };
    let call = || a.str("call", 64).and_then(|c| ident("call", c));
    let reason = |default: &str| -> Result<String, CtiError> {
        match a.opt_str("reason", 32)? {
            Some(r) => ident("reason", r),
            None if default.is_empty() => Err(CtiError::MissingField("args.reason".into())),
            None => Ok(default.to_owned()),
        }
    };
    let dial = |key: &str| -> Result<String, CtiError> {
        let s = a.str(key, 64)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+*#._-".contains(&b)) {
            return Err(CtiError::BadRequest(format!(
                "args.{key}: expected a number or extension (letters, digits, + * # . _ -), got {s:?}"
            )));
        }
        Ok(s.to_owned())
    };
    Ok(match cmd {
        "agent.login" => Command::AgentLogin { agent: agent()? },
        "agent.logout" => Command::AgentLogout { agent: agent()?, reason: reason("cti")? },
        "agent.ready" => Command::AgentReady { agent: agent()? },
        "agent.not_ready" => Command::AgentNotReady { agent: agent()?, reason: reason("")? },
        "agent.force_state" => {
            let agent = ident("agent", a.str("agent", 64)?)?;
            let state = match a.str("state", 16)? {
                "logged_out" => ForcedState::LoggedOut,
                "ready" => ForcedState::Ready,
                "not_ready" => ForcedState::NotReady,
                other => {
                    return Err(CtiError::BadRequest(format!(
                        "args.state: expected \"logged_out\", \"ready\" or \"not_ready\", got {other:?}"
                    )))
                }
            };
            Command::ForceAgentState { agent, state, reason: reason("supervisor")? }
        }
        "call.answer" => Command::Answer { call: call()? },
        "call.hangup" => Command::Hangup { call: call()? },
        "call.hold" => Command::Hold { call: call()? },
        "call.resume" => Command::Resume { call: call()? },
        "call.transfer" => Command::BlindTransfer { call: call()?, to: dial("to")? },
        "call.consult" => Command::ConsultStart { call: call()?, to: dial("to")? },
        "call.consult_complete" => Command::ConsultComplete { call: call()? },
        "call.consult_swap" => Command::ConsultSwap { call: call()? },
        "call.consult_cancel" => Command::ConsultCancel { call: call()? },
        "call.conference" => Command::Conference { call: call()? },
        "call.attach" => {
            let call = call()?;
            let data = match args.get("data") {
                None => return Err(CtiError::MissingField("args.data".into())),
                Some(Value::Object(m)) => m.clone(),
                Some(v) => {
                    return Err(CtiError::BadRequest(format!("args.data: expected an object, got {}", type_name(v))))
                }
            };
            Command::AttachData { call, data }
        }
        "call.disposition" => {
            let call = call()?;
            let subject = a.str("subject", 64)?;
            if subject.is_empty() || subject.chars().any(char::is_control) {
                return Err(CtiError::BadRequest(format!(
                    "args.subject: expected 1 to 64 printable characters, got {subject:?}"
                )));
            }
            let settled = a.bool("settled")?;
            let flag = match a.opt_str("flag", 16)? {
                None | Some("none") => VocFlag::None,
                Some("complaint") => VocFlag::Complaint,
                Some("praise") => VocFlag::Praise,
                Some(other) => {
                    return Err(CtiError::BadRequest(format!(
                        "args.flag: expected \"none\", \"complaint\" or \"praise\", got {other:?}"
                    )))
                }
            };
            Command::Disposition { call, subject: subject.to_owned(), settled, flag }
        }
        "call.monitor" => {
            let call = call()?;
            let mode = match a.opt_str("mode", 16)? {
                None | Some("listen") => MonitorMode::Listen,
                Some("whisper") => MonitorMode::Whisper,
                Some("barge") => MonitorMode::Barge,
                Some("stop") => MonitorMode::Stop,
                Some(other) => {
                    return Err(CtiError::BadRequest(format!(
                        "args.mode: expected \"listen\", \"whisper\", \"barge\" or \"stop\", got {other:?}"
                    )))
                }
            };
            let extension = if args.get("extension").is_some() { Some(dial("extension")?) } else { None };
            Command::Monitor { call, mode, extension }
        }
        "callback.schedule" => Command::ScheduleCallback {
            tenant: tenant_opt()?.ok_or_else(|| CtiError::MissingField("args.tenant".into()))?,
            queue: ident("queue", a.str("queue", 64)?)?,
            number: dial("number")?,
            at_ms: if args.get("at_ms").is_some_and(|v| !v.is_null()) { Some(a.i64("at_ms")?) } else { None },
        },
        "query.queues" => Command::QueryQueues { tenant: tenant_opt()? },
        "query.agents" => Command::QueryAgents { tenant: tenant_opt()? },
        "query.calls" => Command::QueryCalls { tenant: tenant_opt()? },
        "snapshot" => Command::Snapshot,
        other => {
            return Err(CtiError::UnknownCommand(if other.chars().count() > 64 {
                format!("{}…", other.chars().take(64).collect::<String>())
            } else {
                other.to_owned()
            }))
        }
    })
}

/// An identifier argument (agent, call, tenant, queue, reason code): printable, no spaces.
fn ident(key: &str, s: &str) -> Result<String, CtiError> {
    if s.is_empty() || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(CtiError::BadRequest(format!(
            "args.{key}: expected a non-empty name without spaces or control characters, got {s:?}"
        )));
    }
    Ok(s.to_owned())
}

/// JSON type name for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to `args`, with the error messages of the protocol.
pub struct Args<'a>(pub &'a Map<String, Value>);

impl<'a> Args<'a> {
    pub fn opt_str(&self, key: &str, max_chars: usize) -> Result<Option<&'a str>, CtiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().count() <= max_chars => Ok(Some(s)),
            Some(Value::String(s)) => Err(CtiError::BadRequest(format!(
                "args.{key}: expected at most {max_chars} characters, got {}",
                s.chars().count()
            ))),
            Some(v) => Err(CtiError::BadRequest(format!("args.{key}: expected a string, got {}", type_name(v)))),
        }
    }

    pub fn str(&self, key: &str, max_chars: usize) -> Result<&'a str, CtiError> {
        self.opt_str(key, max_chars)?.ok_or_else(|| CtiError::MissingField(format!("args.{key}")))
    }

    pub fn bool(&self, key: &str) -> Result<bool, CtiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Err(CtiError::MissingField(format!("args.{key}"))),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(CtiError::BadRequest(format!("args.{key}: expected a boolean, got {}", type_name(v)))),
        }
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, CtiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                CtiError::BadRequest(format!("args.{key}: expected a non-negative integer, got {v}"))
            }),
        }
    }

    pub fn i64(&self, key: &str) -> Result<i64, CtiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Err(CtiError::MissingField(format!("args.{key}"))),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| CtiError::BadRequest(format!("args.{key}: expected an integer, got {v}"))),
        }
    }
}

// ---- writing ------------------------------------------------------------------------------------

#[derive(Serialize)]
struct OkOut<'a> {
    v: u64,
    id: Option<&'a str>,
    ok: bool,
    result: &'a Value,
}

#[derive(Serialize)]
struct ErrOut<'a> {
    v: u64,
    id: Option<&'a str>,
    ok: bool,
    error: ErrBody<'a>,
}

#[derive(Serialize)]
struct ErrBody<'a> {
    code: &'a str,
    message: String,
}

#[derive(Serialize)]
struct EventOut<'a> {
    v: u64,
    seq: u64,
    event: &'a str,
    at_ms: i64,
    data: &'a Value,
}

/// `{"v":1,"id":..,"ok":true,"result":..}`
pub fn write_ok(id: Option<&str>, result: &Value) -> String {
    serde_json::to_string(&OkOut { v: VERSION, id, ok: true, result }).unwrap_or_default()
}

/// `{"v":1,"id":..,"ok":false,"error":{"code":..,"message":..}}`
pub fn write_err(id: Option<&str>, e: &CtiError) -> String {
    serde_json::to_string(&ErrOut { v: VERSION, id, ok: false, error: ErrBody { code: e.code(), message: e.to_string() } })
        .unwrap_or_default()
}

/// `{"v":1,"seq":..,"event":..,"at_ms":..,"data":..}`
pub fn write_event(seq: u64, event: &str, at_ms: i64, data: &Value) -> String {
    serde_json::to_string(&EventOut { v: VERSION, seq, event, at_ms, data }).unwrap_or_default()
}

/// A server message as a client reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage {
    /// A command's result (`id` is `None` when the request's id could not be read).
    Result { id: Option<String>, result: Result<Value, RemoteError> },
    Event { seq: u64, event: String, at_ms: i64, data: Value },
}

/// An error result as the client sees it: the wire code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteError {
    pub code: String,
    pub message: String,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RemoteError {}

impl ServerMessage {
    /// Reads one server message.
    pub fn parse(text: &str) -> Result<ServerMessage, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON from the server: {e}"))?;
        if v.get("v").and_then(Value::as_u64) != Some(VERSION) {
            return Err(format!("expected protocol version {VERSION} from the server, got {:?}", v.get("v")));
        }
        if let Some(event) = v.get("event").and_then(Value::as_str) {
            return Ok(ServerMessage::Event {
                seq: v.get("seq").and_then(Value::as_u64).ok_or("an event without seq")?,
                event: event.to_owned(),
                at_ms: v.get("at_ms").and_then(Value::as_i64).unwrap_or(0),
                data: v.get("data").cloned().unwrap_or(Value::Null),
            });
        }
        let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
        match v.get("ok").and_then(Value::as_bool) {
            Some(true) => Ok(ServerMessage::Result { id, result: Ok(v.get("result").cloned().unwrap_or(Value::Null)) }),
            Some(false) => {
                let e = v.get("error").ok_or("a failed result without error")?;
                Ok(ServerMessage::Result {
                    id,
                    result: Err(RemoteError {
                        code: e.get("code").and_then(Value::as_str).unwrap_or("internal").to_owned(),
                        message: e.get("message").and_then(Value::as_str).unwrap_or("").to_owned(),
                    }),
                })
            }
            None => Err(format!("a server message that is neither an event nor a result: {text}")),
        }
    }
}
