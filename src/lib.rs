//! callgate: a SIP/RTP telephony edge with ACD and CTI for public civil-service call centres.
//!
//! # Layout
//!
//! The protocol and call logic are sans-IO state machines: they take `now` and inputs and
//! hand back outputs and their next deadline. Only [`edge`] owns sockets, tasks and timers.
//!
//! | module | what it holds | I/O? |
//! |---|---|---|
//! | [`sip`] | codec, URIs, typed headers, message building, transactions (RFC 3261 §17) | no |
//! | [`media`] | G.711, WAV prompts, RTP, SDP offer/answer, the pacing engine; DTMF, menus, the RTP bridge, recording, queue announcements (issue 3, not yet wired in) | no |
//! | [`call`] | the call core: trunk ACL, service lookup, answer, guidance, B2BUA bridge | no |
//! | [`config`] | profiles under `sip-profiles/`: loading and validation with file:line errors | files |
//! | [`records`] | call records in SQLite (WAL), one writer thread, batched | SQLite |
//! | [`metrics`] | hdrhistogram latency per call-setup stage, counters, Prometheus text | no |
//! | [`edge`] | the runtime shell: the sip thread (UDP with recvmmsg/sendmmsg, TCP), the media thread, HTTP, signals, shutdown | yes |
//!
//! `main.rs` parses the command line, sets up logging and runs [`edge`].

pub mod acd;
pub mod call;
pub mod config;
pub mod cti;
pub mod edge;
pub mod media;
pub mod metrics;
pub mod records;
pub mod sip;
pub mod stats;
