//! The interface between the call core and the media thread: commands in, events out.
//!
//! A call has up to four legs, each with one RTP port of callgate's: [`Leg::A`] the caller, [`Leg::B`]
//! the agent (or department), [`Leg::C`] a consulted party, [`Leg::D`] a supervisor. Toward each leg
//! callgate sends exactly one stream at a time, with one RTP identity (SSRC, sequence, timestamp) kept
//! for the whole call (see [`bridge`](super::bridge)): a playlist from the pacer (guidance, menu, music,
//! position announcements, hold music), the other leg's audio relayed through the bridge (A ⇄ B only),
//! or a mix of other legs' audio made every 20 ms (conference, consultation, supervisor).
//!
//! ```text
//!            Open{A}                     Play{A, guidance}       Play{A, music, looped}
//!   (none) ─────────▶ A open, silent ───────────────▶ A hears prompts ───────────────▶ A hears music
//!                                                                                       │ Open{B}
//!                                                                                       ▼
//!          Play{X, music, looped} (hold)       Relay{A} + Relay{B}              B open (hears nothing)
//!   X hears music ◀──────────────────── A ⇄ B relayed ◀──────────────────────────────────┘
//!        └──────── Relay{X} (resume) ─────────▲  │
//!                                             │  │ Open{C}; Play{A, music}; Mix{B, [C]}; Mix{C, [B]}
//!                   CloseLeg{C}; Relay{A}+{B} │  ▼                                     (consultation)
//!                                  (cancel)   └── B ⇄ C mixed, A hears music
//!                                                │ Mix{A,[B,C]}; Mix{B,[A,C]}; Mix{C,[A,B]}  (conference)
//!                                                │ CloseLeg{B}; Rebind{C → B}; Relay{A}; Relay{B}
//!                                                ▼                                         (complete)
//!                                   A ⇄ B relayed (B: the former C, its stream continued)
//!
//!   supervisor (with A ⇄ B relayed):  Open{D}, then
//!     listen:  Mix{D, [A, B]}                          (A and B keep the relay; D's audio goes nowhere)
//!     whisper: Mix{B, [A, D]}; Mix{D, [A, B]}          (A keeps hearing B by the relay)
//!     barge:   Mix{A, [B, D]}; Mix{B, [A, D]}; Mix{D, [A, B]}
//!     leaves:  CloseLeg{D}; Relay{A}; Relay{B}
//!   CloseLeg{X}: X's port closed, the others keep what they hear.   Stop: everything of the call closed.
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

pub use super::bridge::{Leg, LegMedia};
pub use super::sdp::Direction;

/// callgate's own handle for a call, unique within one running edge.
pub type CallKey = u64;

/// What the media engine must do.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaCommand {
    /// Bind the leg's RTP port (`local_port` on the media address) and keep it for the call. Nothing is
    /// sent until a `Play`, `Relay` or `Mix` names the leg. RTP from the leg is read from then on (latching,
    /// DTMF, inactivity, recording). `ssrc`/`seq`/`ts` start the leg's outgoing stream identity.
    Open {
        call: CallKey,
        leg: Leg,
        local_port: u16,
        media: LegMedia,
        direction: Direction,
        ssrc: u32,
        seq: u16,
        ts: u32,
    },
    /// The leg hears `playlist` from now on (replacing the relay or an earlier playlist; the stream
    /// identity continues). `looped`: start again at the end and never finish (music). Not looped:
    /// [`MediaEvent::Finished`] when played out. `barge_in`: a key pressed on this leg stops the
    /// playlist at once (the `Digit` event is sent; no `Finished`).
    Play {
        call: CallKey,
        leg: Leg,
        playlist: Vec<String>,
        looped: bool,
        barge_in: bool,
    },
    /// The leg hears the other leg (both must be open; A and B only: `Failed NoLeg` for C or D). Sent
    /// once per direction to bridge, and again for a leg to resume after hold.
    Relay { call: CallKey, to_leg: Leg },
    /// The leg hears the sum of `from`'s audio (the legs named, never itself), mixed by the engine
    /// every 20 ms in the leg's codec, continuing its stream identity (conference, consultation,
    /// supervisor listen / whisper / barge). Replaces what the leg heard (relay, playlist, silence).
    /// A leg of `from` that is not open (or closes later) adds nothing; an empty `from` sends silence.
    /// Duplicates and `to_leg` itself in `from` are ignored. `Mix` on a leg that hears a mix changes
    /// its inputs in the same stream. The first packet comes at the call's next 20 ms frame (the
    /// marker set). `Failed NoLeg{to_leg}` if `to_leg` is not open.
    Mix { call: CallKey, to_leg: Leg, from: Vec<Leg> },
    /// Leg `from` becomes leg `to` (which must be closed): its port, latching, media, DTMF and the
    /// stream toward it (same SSRC, sequence continuing) are named `to` from now on, and `from` is
    /// free again. A consultation completed: the consulted party (C) takes the agent's place (B).
    /// Its place in other legs' mixes moves too (`from` becomes `to` in each; a leg never hears
    /// itself). A leg that heard a relay hears nothing after (relays are by name: send `Relay`
    /// again). `Failed NoLeg{from}` (and nothing changes) if `from` is not open, or `to` is open.
    Rebind { call: CallKey, from: Leg, to: Leg },
    /// The leg's media changed (re-INVITE: new address, codec, or direction).
    Update {
        call: CallKey,
        leg: Leg,
        media: LegMedia,
        direction: Direction,
    },
    /// Send one RFC 4733 telephone-event toward the leg (needs its telephone-event payload type).
    SendDigit { call: CallKey, leg: Leg, digit: char },
    /// Record the call from now on: a stereo 8 kHz 16-bit WAV at `path`, caller left, agent right
    /// (summed with the consulted party, and with the supervisor while the caller hears them),
    /// written off the media thread. Ends at `Stop` (after `CloseLeg{B}` the agent side is silent).
    Record { call: CallKey, path: PathBuf },
    /// Close one leg's port; the other leg keeps what it hears (if it was the relay: silence, so the core
    /// follows with a `Play`).
    CloseLeg { call: CallKey, leg: Leg },
    /// Stop the call's streams and close all its ports.
    Stop { call: CallKey },
}

/// What the media engine reports back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// A non-looped playlist toward the leg ran to its end.
    Finished { call: CallKey, leg: Leg },
    /// The media for the call could not be set up.
    Failed { call: CallKey, failure: MediaFailure },
    /// A key was pressed on the leg (RFC 4733 telephone-event in its RTP).
    Digit { call: CallKey, leg: Leg, digit: char },
    /// No RTP from a `sendrecv` leg for the configured inactivity time.
    Inactive { call: CallKey, leg: Leg },
    /// The leg's RTP comes from `addr` (first packet, or a NAT rebinding).
    Latched { call: CallKey, leg: Leg, addr: SocketAddr },
    /// The recording was written and closed.
    Recorded { call: CallKey, path: PathBuf, seconds: u32 },
}

/// Why the media engine could not serve a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaFailure {
    /// The leg's RTP port could not be bound (another process holds it, or the address is gone).
    #[error("cannot bind RTP port {addr}: {kind}")]
    Bind { addr: SocketAddr, kind: std::io::ErrorKind },
    /// A prompt of the playlist was not loaded at start.
    #[error("prompt {name:?} is not loaded")]
    UnknownPrompt { name: String },
    /// A command named a leg that is not open.
    #[error("leg {leg} is not open")]
    NoLeg { leg: Leg },
    /// The recording file could not be written.
    #[error("cannot write recording {path:?}: {kind}")]
    Recording { path: PathBuf, kind: std::io::ErrorKind },
}
