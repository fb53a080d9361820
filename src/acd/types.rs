//! Public data types of the ACD: specifications, caller data, agent states, actions and errors.

use std::time::Duration;

pub use super::log::MissReason;

/// The call core's call key.
pub type CallRef = u64;

/// An agent: index into `AcdSpec::agents`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentRef(pub u32);

/// How a queue picks among its available agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The agent idle (ready) longest.
    LongestIdle,
    /// Round-robin with memory: the next agent after the one who got the last call, in spec order.
    RoundRobin,
    /// The agent who answered the fewest calls of this queue.
    FewestCalls,
    /// The agent with the least talk time in this queue.
    LeastTalk,
    /// Every suitable ready agent rings; the first to answer takes the call.
    RingAll,
    /// The first suitable agent in spec order (penalty first, then order in `AcdSpec::agents`).
    Linear,
    /// A random suitable agent (reproducible by the ACD's seed).
    Random,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LongestIdle => "longest_idle",
            Strategy::RoundRobin => "round_robin",
            Strategy::FewestCalls => "fewest_calls",
            Strategy::LeastTalk => "least_talk",
            Strategy::RingAll => "ring_all",
            Strategy::Linear => "linear",
            Strategy::Random => "random",
        }
    }
}

/// A skill requirement: the agent must hold `skill` at `level` or more; after the caller has waited `d`,
/// level `l` is enough (`relax` entries, any order; the lowest level whose time has come applies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillReq {
    pub skill: String,
    pub level: u8,
    pub relax: Vec<(Duration, u8)>,
}

/// What happens when a caller reaches the queue's maximum wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnMaxWait {
    /// Move to this queue of the same tenant (done inside the ACD; keeps the original enqueue time).
    Overflow(String),
    /// Play these prompts, then hang up.
    Message(Vec<String>),
    /// Offer a callback.
    Callback,
    /// Hang up.
    Hangup,
}

/// One queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    pub tenant: String,
    pub name: String,
    pub strategy: Strategy,
    /// All must hold (the caller's menu skill adds one at level 1 unless given).
    pub skills: Vec<SkillReq>,
    pub max_len: Option<usize>,
    pub max_wait: Option<Duration>,
    pub on_max_wait: OnMaxWait,
    /// May join when no agent of the queue is logged in.
    pub join_empty: bool,
    /// Waiting callers leave (Refused "empty") when the last agent logs out.
    pub leave_empty: bool,
    pub ring_timeout: Duration,
    pub wrapup: Duration,
    pub max_misses: u32,
    pub sl_threshold: Duration,
    pub short_abandon: Duration,
    /// Position/expected-wait announcement period.
    pub announce_every: Option<Duration>,
}

impl QueueSpec {
    /// A queue with the profile defaults (longest-idle, ring 15 s, wrap-up 10 s, 2 misses, SL 20 s,
    /// short abandon 5 s, announcements every 30 s, join when empty, no maximum).
    pub fn new(tenant: &str, name: &str) -> QueueSpec {
        QueueSpec {
            tenant: tenant.to_string(),
            name: name.to_string(),
            strategy: Strategy::LongestIdle,
            skills: Vec::new(),
            max_len: None,
            max_wait: None,
            on_max_wait: OnMaxWait::Hangup,
            join_empty: true,
            leave_empty: false,
            ring_timeout: Duration::from_secs(15),
            wrapup: Duration::from_secs(10),
            max_misses: 2,
            sl_threshold: Duration::from_secs(20),
            short_abandon: Duration::from_secs(5),
            announce_every: Some(Duration::from_secs(30)),
        }
    }
}

/// One agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    pub tenant: String,
    pub id: String,
    pub extension: String,
    pub name: String,
    pub skills: Vec<(String, u8)>,
    /// Queues served, with a penalty (lower first).
    pub queues: Vec<(String, u32)>,
}

/// The ACD's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcdSpec {
    pub queues: Vec<QueueSpec>,
    pub agents: Vec<AgentSpec>,
}

/// What the call core knows about a caller when it enqueues it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallInfo {
    /// callgate's call id (the call record's `call_id`), used in the queue log.
    pub cg_id: String,
    /// The caller's number.
    pub caller: String,
    /// The number dialled.
    pub number: String,
    /// Higher first.
    pub priority: u8,
    /// The menu's required skill, e.g. "en".
    pub skill: Option<String>,
    pub language: Option<String>,
}

/// An agent's state. See the diagram on [`crate::acd::Acd`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentState {
    LoggedOut,
    Ready,
    NotReady(String),
    /// Ringing for this call (or reserved for a callback; the `CallRef` is then the callback id).
    Reserved(CallRef),
    Talking(CallRef),
    Held(CallRef),
    Wrapup,
}

impl AgentState {
    /// The state's name as stored in the queue log.
    pub fn name(&self) -> &'static str {
        match self {
            AgentState::LoggedOut => "logged_out",
            AgentState::Ready => "ready",
            AgentState::NotReady(_) => "not_ready",
            AgentState::Reserved(_) => "reserved",
            AgentState::Talking(_) => "talking",
            AgentState::Held(_) => "held",
            AgentState::Wrapup => "wrapup",
        }
    }
}

/// Why a caller was not let into a queue.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no such queue in this tenant")]
    UnknownQueue,
    #[error("the queue is full")]
    Full,
    #[error("no agent of the queue is logged in and the queue does not let callers join when empty")]
    Empty,
}

/// Errors of the ACD's operations: what was expected, what came.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcdError {
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    #[error("unknown call {0} (not waiting, ringing or talking in the ACD)")]
    UnknownCall(CallRef),
    #[error("unknown callback {0}")]
    UnknownCallback(u64),
    #[error("agent {agent:?} is {state}, the operation wants {wanted}")]
    WrongState { agent: String, state: &'static str, wanted: &'static str },
    #[error("call {call} is not offered to agent {agent:?} (withdrawn, timed out or never offered): the core must hang up the agent's leg")]
    NotOffered { call: CallRef, agent: String },
    #[error("unknown queue {queue:?} in tenant {tenant:?}")]
    UnknownQueue { tenant: String, queue: String },
    #[error("invalid ACD specification: {0}")]
    BadSpec(String),
}

/// A callback waiting for its turn (persisted by the core so that it survives a restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCallback {
    pub id: u64,
    pub tenant: String,
    pub queue: String,
    pub number: String,
    pub info: CallInfo,
    /// Place in the line: the caller's original enqueue time (Unix ms). For a scheduled callback, its due time.
    pub enqueued_ms: i64,
    /// Not before this time (Unix ms).
    pub due_ms: i64,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// A queue as the wallboard and the announcements see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSnapshot {
    pub tenant: String,
    pub queue: String,
    /// Callers and due callbacks in line.
    pub waiting: usize,
    pub longest_wait: Option<Duration>,
    pub logged_in: usize,
    pub ready: usize,
    pub not_ready: usize,
    pub reserved: usize,
    pub talking: usize,
    pub held: usize,
    pub wrapup: usize,
    /// For a caller joining now (see [`crate::acd::Acd::expected_wait`]).
    pub expected_wait: Option<Duration>,
    /// The live handle time estimate (EWMA of talk + wrap-up).
    pub handle_time: Duration,
}

/// What the core must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ring this agent for this call (the core INVITEs the agent's contacts). RingAll: one Offer per agent.
    Offer { call: CallRef, agent: AgentRef, queue: String, wait: Duration },
    /// Stop ringing (ring timeout, another agent of a ring-all took it, agent withdrawn): the core CANCELs.
    /// For a callback being dialled (the agent was withdrawn, or the dial timed out) `call` is the
    /// callback id: the core hangs up the outbound leg.
    StopOffer { call: CallRef, agent: AgentRef },
    /// Tell the waiting caller where they stand (the core plays the announcement, then music again).
    Announce { call: CallRef, position: u32, expected_wait: Option<Duration> },
    /// The caller's maximum wait ran out with OnMaxWait::Message/Callback/Hangup (Overflow is done inside the ACD).
    MaxWait { call: CallRef, then: OnMaxWait },
    /// The last agent left a leave_empty queue: the caller must go (the core plays the closed message).
    Evicted { call: CallRef },
    /// A callback reached the front and `agent` is reserved for it: the core dials `number` via the trunk.
    CallbackDue { callback: u64, agent: AgentRef, number: String, tenant: String, queue: String },
    /// An agent's state changed (for the CTI stream). The log gets an AgentState row too.
    AgentState { agent: AgentRef, state: AgentState, reason: String },
}
