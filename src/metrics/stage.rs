//! The stages of the call-setup path that callgate measures. Add variants; do not rename.
use std::time::Instant;

/// A measured stage of the call-setup path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// INVITE received → `100 Trying` sent.
    InviteTo100,
    /// INVITE received → final `200 OK` sent.
    InviteTo200,
}

impl Stage {
    pub const ALL: [Stage; 2] = [Stage::InviteTo100, Stage::InviteTo200];

    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            Stage::InviteTo100 => "invite_to_100",
            Stage::InviteTo200 => "invite_to_200",
        }
    }
}

/// A latency measurement in flight: the stage, and when it began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub stage: Stage,
    pub since: Instant,
}
