//! The ACD: agents, queues and routing (sans-IO). Being written; see the queue log in [`log`].

pub mod log;
