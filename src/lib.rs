//! callgate: a SIP/RTP telephony edge with ACD and CTI for public civil-service call centres.
//!
//! # Layout
//!
//! The protocol and call logic are sans-IO state machines: they take `now` and inputs and
//! hand back outputs and their next deadline. Only [`edge`] owns sockets, tasks and timers.
//!
//! | module | what it holds | I/O? |
//! |---|---|---|
//! | [`sip`] | codec, URIs, typed headers, message building, transactions (RFC 3261 §17), the registrar with digest auth | no |
//! | [`media`] | G.711, WAV prompts, RTP, SDP offer/answer, the pacing engine, DTMF, menus, the RTP bridge, the audio mixer (conference, consultation, supervisor), recording, queue announcements, the per-thread media [`media::engine`], and the core ↔ media-thread interface [`media::command`] | no |
//! | [`call`] | the call core: trunk ACL, services, guidance, menus, queues and offers to agents, anchored bridges, hold, transfers, callbacks, opening hours; the CTI commands' effects | no |
//! | [`acd`] | agents, queues, routing strategies, skills, fairness, wrap-up, callbacks; the queue log event type; Erlang formulas | no |
//! | [`cti`] | the CTI protocol: messages, principals and roles, the hub (events with sequence numbers, resume, slow consumers), the WebSocket codec, the `callgate ctl` client | no |
//! | [`stats`] | live figures, KS figures, interval reports, Erlang C staffing advice, from the queue log and the call records | no |
//! | [`config`] | profiles under `sip-profiles/`: loading and validation with file:line errors | files |
//! | [`records`] | call records, queue log and pending callbacks in SQLite (WAL) or PostgreSQL, one writer thread, batched | database |
//! | [`metrics`] | hdrhistogram latency per call-setup stage, counters, Prometheus text | no |
//! | [`edge`] | the runtime shell: the sip thread (UDP with recvmmsg/sendmmsg, TCP, the CTI hub, the records' redo log), the media threads, HTTP (/metrics, /cti, /stats, /wallboard), signals, shutdown | yes |
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
