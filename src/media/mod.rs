//! Media: G.711, WAV prompts, RTP, SDP and the pacing engine. Sans-IO: no async runtime, sockets or clocks here.
//!
//! - [`g711`]: μ-law / A-law encode and decode, A-law ↔ μ-law byte maps.
//! - [`wav`]: loading 8 kHz 16-bit mono PCM WAV files, with errors naming the file and what was found.
//! - [`prompt`]: announcements encoded once at load into both laws, served as 20 ms frames without copying.
//! - [`rtp`]: the 12-byte RTP header (RFC 3550 §5.1): writing, and parsing with typed errors.
//! - [`sdp`]: SDP offer parsing and the RFC 3264 answer (codec, telephone-event, direction, address).
//! - [`pacer`]: the sans-IO pacing engine that times every outgoing RTP stream from one slot ring.
//! - [`announce`]: queue announcements (position, expected wait) composed from recorded number words.
//! - [`dtmf`]: RFC 4733 telephone-events in and out, and SIP INFO `application/dtmf-relay` bodies.
//! - [`menu`]: the DTMF menu after a guidance (choice, timeout, invalid digit, re-prompt, default).
//! - [`recording`]: per-call stereo recording (caller left; agent, consulted party, barging supervisor
//!   right) aligned on the wall clock.
//! - [`bridge`]: the sans-IO RTP relay between a caller leg and an agent leg, and the watch (latching,
//!   direction, inactivity) over all four legs of a call.
//! - [`mixer`]: per-call audio mixing (conference, consultation, supervisor) and its 20 ms schedule.
//! - [`engine`]: one media thread's calls, sans-IO: commands, the pacer, bridges, mixers, DTMF, recording.
//!
//! [`Codec`] is defined here (not in `config`) so that `config` can use it without `media` depending on
//! `config`.

pub mod announce;
pub mod bridge;
pub mod command;
pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod menu;
pub mod mixer;
pub mod pacer;
pub mod prompt;
pub mod recording;
pub mod rtp;
pub mod sdp;
pub mod wav;

use std::fmt;

/// RTP clock rate of both G.711 laws (and of telephone-event as callgate uses it).
pub const CLOCK_RATE: u32 = 8000;
/// Samples (= bytes of G.711 payload, = RTP timestamp increment) in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 160;
/// The packetisation interval callgate sends with.
pub const PTIME_MS: u32 = 20;

/// An audio codec callgate can send and receive. Telephone-event (RFC 4733) is not a codec here: it is
/// always offered and accepted beside the one chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    pub const ALL: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

    /// The static RTP payload type (RFC 3551 table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name as used in `a=rtpmap` (and in profiles).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// From an encoding name, case-insensitive (RFC 4566: encoding names are case-insensitive).
    pub fn from_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }

    /// From a static payload type (0 or 8).
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The byte that encodes digital silence (linear 0) in this law.
    pub fn silence(self) -> u8 {
        match self {
            Codec::Pcmu => g711::ULAW_SILENCE,
            Codec::Pcma => g711::ALAW_SILENCE,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors loading media (prompts) at start-up.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Wav(#[from] wav::WavError),
    #[error("{file}: the WAV file holds no samples (an empty prompt cannot be played)")]
    EmptyPrompt { file: std::path::PathBuf },
    #[error("prompt name {name:?} is not a plain file name (expected letters, digits, '-', '_' or '.', no path)")]
    BadPromptName { name: String },
    #[error("prompt {name:?} was not loaded (expected one of the prompts named in the profile)")]
    UnknownPrompt { name: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_and_payload_types() {
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::from_name("pcmu"), Some(Codec::Pcmu));
        assert_eq!(Codec::from_name("PCMA"), Some(Codec::Pcma));
        assert_eq!(Codec::from_name("G729"), None);
        for c in Codec::ALL {
            assert_eq!(Codec::from_name(c.name()), Some(c));
            assert_eq!(Codec::from_payload_type(c.payload_type()), Some(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!(Codec::Pcmu.silence(), 0xFF);
        assert_eq!(Codec::Pcma.silence(), 0xD5);
    }
}
