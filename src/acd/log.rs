//! The queue log: every ACD event, timestamped, as it is stored in the records database and read by
//! the statistics. Every KS figure (service level, abandonment, first-call resolution, ASA, AHT, ...)
//! is computed from these rows and the call records, nothing else.
//!
//! One row per event. `call` is callgate's call id (the `call_id` of the call's record) and is empty for
//! agent-only events; `queue` is empty for events that belong to no queue (agent state changes);
//! `agent` is empty for events without an agent.

/// One event of the queue log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEvent {
    /// Wall-clock time, Unix milliseconds.
    pub at_ms: i64,
    pub tenant: String,
    pub queue: String,
    pub call: String,
    pub agent: String,
    pub kind: QueueEventKind,
}

/// Why an offered agent did not take the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MissReason {
    /// Rang for the queue's ring timeout.
    NoAnswer,
    /// 486 / 600 from the phone.
    Busy,
    /// 603 or another refusal.
    Declined,
    /// No registered contact answered at all (408, 503, transport error).
    Unreachable,
    /// The agent logged out, went not-ready or unregistered while ringing.
    Withdrawn,
}

/// What happened. Durations are milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueEventKind {
    /// The caller joined the queue. `position` is 1-based; `skill` is the menu's required skill.
    Enter { caller: String, priority: u8, position: u32, skill: String },
    /// The caller was refused at the door: the queue is full, or no agent is logged in and the queue's
    /// policy says not to join. `reason`: "full" / "empty" / "closed".
    Refused { caller: String, reason: String },
    /// The call was offered to `agent` (its phone rings).
    Offer { wait_ms: u64 },
    /// The offer ended without an answer.
    Miss { reason: MissReason, ring_ms: u64 },
    /// The agent answered: caller and agent are connected.
    Connect { wait_ms: u64, ring_ms: u64 },
    /// The caller hung up while waiting (or while an agent's phone rang).
    Abandon { wait_ms: u64, position: u32 },
    /// The caller waited the queue's maximum wait.
    Timeout { wait_ms: u64 },
    /// The caller left for another queue (`to`), by the maximum-wait rule or a transfer to a queue.
    Overflow { to: String, wait_ms: u64 },
    /// The caller asked to be called back (and hung up, keeping the place), or a callback was scheduled.
    /// `due_ms`: when it is due (Unix ms; the request time for "keep my place").
    CallbackRequested { number: String, due_ms: i64 },
    /// callgate called the citizen back for a callback and the citizen answered.
    CallbackConnect { wait_ms: u64 },
    /// A callback attempt failed (no answer, busy); `attempt` counts from 1.
    CallbackFailed { attempt: u32, reason: String },
    /// The agent transferred the call to `to` (a number, an extension or a queue).
    Transfer { to: String, talk_ms: u64 },
    /// The conversation ended. `by`: "caller" / "agent" / "system".
    Complete { talk_ms: u64, hold_ms: u64, by: String },
    /// The agent's after-call work ended.
    WrapupEnd { wrap_ms: u64 },
    /// The agent's disposition of a call (CTI): subject code, settled or not, VOC flag
    /// ("complaint" / "praise" / "").
    Disposition { subject: String, settled: bool, flag: String },
    /// The agent's state changed; `state` is the state's name ("logged_out", "ready", "not_ready", "reserved",
    /// "talking", "held", "wrapup"), `reason` the
    /// not-ready reason code or what caused the change ("register", "missed", "cti", ...).
    AgentState { state: String, reason: String },
}

impl QueueEventKind {
    /// The stored event name (the `event` column).
    pub fn name(&self) -> &'static str {
        match self {
            QueueEventKind::Enter { .. } => "enter",
            QueueEventKind::Refused { .. } => "refused",
            QueueEventKind::Offer { .. } => "offer",
            QueueEventKind::Miss { .. } => "miss",
            QueueEventKind::Connect { .. } => "connect",
            QueueEventKind::Abandon { .. } => "abandon",
            QueueEventKind::Timeout { .. } => "timeout",
            QueueEventKind::Overflow { .. } => "overflow",
            QueueEventKind::CallbackRequested { .. } => "callback_requested",
            QueueEventKind::CallbackConnect { .. } => "callback_connect",
            QueueEventKind::CallbackFailed { .. } => "callback_failed",
            QueueEventKind::Transfer { .. } => "transfer",
            QueueEventKind::Complete { .. } => "complete",
            QueueEventKind::WrapupEnd { .. } => "wrapup_end",
            QueueEventKind::Disposition { .. } => "disposition",
            QueueEventKind::AgentState { .. } => "agent_state",
        }
    }
}

impl MissReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MissReason::NoAnswer => "no_answer",
            MissReason::Busy => "busy",
            MissReason::Declined => "declined",
            MissReason::Unreachable => "unreachable",
            MissReason::Withdrawn => "withdrawn",
        }
    }
}
