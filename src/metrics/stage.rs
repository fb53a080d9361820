//! The stages of the call-setup path that callgate measures. Add variants; do not rename.
use std::time::Instant;

/// A measured stage of the call-setup path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// INVITE received → `100 Trying` sent.
    InviteTo100,
    /// INVITE received → final `200 OK` sent.
    InviteTo200,
    /// The input that put a caller in a queue with an agent free → the INVITE to the agent sent.
    EnqueueToOffer,
    /// The input that made an agent available (registration, wrap-up end, CTI ready) → the INVITE
    /// for the longest-waiting caller sent.
    ReadyToOffer,
    /// The agent's 200 received → the media bridge commanded (both relays handed to the media thread).
    AnswerToBridge,
    /// A CTI command received → its effect (result sent).
    CtiCommand,
}

impl Stage {
    pub const ALL: [Stage; 6] =
        [Stage::InviteTo100, Stage::InviteTo200, Stage::EnqueueToOffer, Stage::ReadyToOffer, Stage::AnswerToBridge, Stage::CtiCommand];

    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            Stage::InviteTo100 => "invite_to_100",
            Stage::InviteTo200 => "invite_to_200",
            Stage::EnqueueToOffer => "enqueue_to_offer",
            Stage::ReadyToOffer => "ready_to_offer",
            Stage::AnswerToBridge => "answer_to_bridge",
            Stage::CtiCommand => "cti_command",
        }
    }
}

/// A latency measurement in flight: the stage, and when it began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub stage: Stage,
    pub since: Instant,
}
