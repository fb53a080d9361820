//! Event kinds and their data, as published by the call core, the ACD and the statistics. The
//! JSON Schema (`docs/cti-schema.json`) describes the same shapes; a test keeps both in step.
//!
//! Every call event names the call by the call core's id (`cg-…`, the same id as in the call
//! records and the `X-Callgate-Call` header), the tenant, and the agent when there is one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A call is offered to an agent (ringing), with everything the counselling screen needs.
pub const CALL_OFFERED: &str = "call.offered";
/// The agent answered.
pub const CALL_ANSWERED: &str = "call.answered";
/// The caller was put on hold / taken off hold.
pub const CALL_HELD: &str = "call.held";
pub const CALL_RESUMED: &str = "call.resumed";
/// A consultation call started (the caller is held while the agent talks to `to`).
pub const CALL_CONSULT: &str = "call.consult";
/// The call went to another party (blind, or a completed consultation).
pub const CALL_TRANSFERRED: &str = "call.transferred";
/// Caller, agent and consulted party are in a three-way conference.
pub const CALL_CONFERENCED: &str = "call.conferenced";
/// A supervisor's monitoring of the call: ringing, answered, mode changed, ended, failed.
pub const CALL_MONITOR: &str = "call.monitor";
/// The call ended.
pub const CALL_ENDED: &str = "call.ended";
/// The call's attached data changed (the whole data after the change).
pub const CALL_DATA: &str = "call.data";
/// A wrap-up disposition was recorded.
pub const CALL_DISPOSITION: &str = "call.disposition";
/// An agent's state changed.
pub const AGENT_STATE: &str = "agent.state";
/// A queue's live figures (at most once a second per queue, while they change).
pub const QUEUE_STATS: &str = "queue.stats";
/// A callback was scheduled, dialled, or failed.
pub const CALLBACK: &str = "callback";
/// Sent by the hub, not published: what the connection may see, as of `seq`.
pub const SNAPSHOT: &str = "snapshot";

/// Every event kind, for the schema test.
pub const KINDS: [&str; 15] = [
    CALL_OFFERED,
    CALL_ANSWERED,
    CALL_HELD,
    CALL_RESUMED,
    CALL_CONSULT,
    CALL_TRANSFERRED,
    CALL_CONFERENCED,
    CALL_MONITOR,
    CALL_ENDED,
    CALL_DATA,
    CALL_DISPOSITION,
    AGENT_STATE,
    QUEUE_STATS,
    CALLBACK,
    SNAPSHOT,
];

/// `call.offered`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallOffered {
    pub call: String,
    pub tenant: String,
    pub queue: String,
    pub agent: String,
    /// The caller's number (From).
    pub caller: String,
    /// The number dialled (the service number).
    pub number: String,
    pub menu_choice: Option<String>,
    pub language: Option<String>,
    /// Time the caller waited in the queue so far.
    pub wait_ms: u64,
    /// Calls from the same number in the last 7 days before this one (a repeat caller was not
    /// settled the first time).
    pub repeat_7d: u32,
    /// The case: the call's attached data (for a transferred call, everything attached before).
    pub data: Map<String, Value>,
}

/// `call.answered`, `call.held`, `call.resumed`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallAgent {
    pub call: String,
    pub tenant: String,
    pub agent: Option<String>,
}

/// `call.consult`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallConsult {
    pub call: String,
    pub tenant: String,
    pub agent: String,
    /// The number or extension consulted.
    pub to: String,
    /// `started`, `answered`, `consulted` / `caller` (after a swap: whom the agent talks to),
    /// `cancelled`, `ended` (the consulted party hung up), `failed` (it did not answer).
    pub phase: String,
}

/// `call.transferred`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallTransferred {
    pub call: String,
    pub tenant: String,
    /// The agent who transferred.
    pub agent: Option<String>,
    pub to: String,
    /// `blind` or `consult`.
    pub kind: String,
}

/// `call.conferenced`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallConferenced {
    pub call: String,
    pub tenant: String,
    pub agent: String,
    /// Everyone in the conference (numbers or extensions).
    pub parties: Vec<String>,
}

/// `call.monitor` (supervisors and integrations of the tenant only; the agent is not told)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallMonitor {
    pub call: String,
    pub tenant: String,
    /// The supervisor's extension.
    pub supervisor: String,
    /// `listen`, `whisper` or `barge`.
    pub mode: String,
    /// `ringing`, `answered`, `mode`, `ended`, `failed`.
    pub phase: String,
}

/// `call.ended`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallEnded {
    pub call: String,
    pub tenant: String,
    pub agent: Option<String>,
    /// Why: `caller_hangup`, `agent_hangup`, `transferred`, `abandoned`, `closed`, `error`, ...
    pub reason: String,
    pub talk_ms: Option<u64>,
}

/// `call.data`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallData {
    pub call: String,
    pub tenant: String,
    pub data: Map<String, Value>,
}

/// `call.disposition`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallDisposition {
    pub call: String,
    pub tenant: String,
    pub agent: Option<String>,
    pub subject: String,
    pub settled: bool,
    /// `none`, `complaint`, `praise`.
    pub flag: String,
}

/// `agent.state`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub agent: String,
    pub tenant: String,
    /// `logged_out`, `ready`, `not_ready`, `reserved`, `talking`, `held`, `wrapup`.
    pub state: String,
    pub reason: String,
    /// The call for `reserved`, `talking`, `held`.
    pub call: Option<String>,
}

/// `queue.stats`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    pub tenant: String,
    pub queue: String,
    pub waiting: u32,
    pub longest_wait_ms: u64,
    pub expected_wait_ms: Option<u64>,
    pub agents_logged_in: u32,
    pub agents_ready: u32,
    pub agents_busy: u32,
    pub agents_not_ready: u32,
    /// Since midnight (tenant time).
    pub offered: u32,
    pub answered: u32,
    pub abandoned: u32,
    /// Answered within the queue's threshold / offered, 0..1 (`null` before the first call).
    pub service_level: Option<f64>,
}

/// `callback`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub callback: u64,
    pub tenant: String,
    pub queue: String,
    pub number: String,
    /// `scheduled`, `dialling`, `answered`, `failed`.
    pub status: String,
    pub at_ms: Option<i64>,
    pub agent: Option<String>,
}
