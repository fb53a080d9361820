//! The media threads: they own every call's RTP (and RTCP) ports and carry out the call core's
//! [`MediaCommand`]s with the sans-IO [`Engine`] (pacer, bridges, mixers, DTMF, recorders). There is
//! no task and no timer per call (the mixers' 20 ms frames come from the engine's one schedule, like
//! the pacer's packets). Each shard (a share of the calls) has one engine and two threads, which take
//! it in turn under one mutex:
//!
//! ```text
//!   I/O thread (normal scheduling)          pacer thread (SCHED_RR by default)
//!   epoll ──▶ eventfd  : commands           epoll ──▶ timerfd : the engine's next deadline (pacer
//!         ──▶ RTP ports: edge-triggered;                        slot, mixer frame, digit packet,
//!             recvmmsg ──▶ Engine::on_datagram                  key-press end, inactivity check),
//!             ──▶ relayed packets: sendmmsg                     armed with an absolute time
//!             (or sendto) on the other leg                ──▶ eventfd : "the deadline moved earlier"
//!         ──▶ RTCP ports: read and dropped                Engine::handle_timeout ──▶ due packets,
//!                                                         copied out, sent after the lock is let go
//!            └──────── Arc<PiMutex<Shared>>: engine, ports, event/recording queues ────────┘
//!   events ──▶ MediaEvent to the sip task (unbounded channel)
//!   recording chunks ──▶ bounded channel ──▶ the recording writer thread (the only file I/O)
//! ```
//!
//! **Shards.** [`MediaConfig::threads`] shards; a call lives on the shard `call % threads` for its
//! whole life, so nothing is shared between shards but the event channel and the writer.
//!
//! **Why two threads per shard.** Deadlines and throughput pull apart. A prompt's next packet is
//! due at a fixed instant, and on a machine whose cores are busy (a co-located peer, the sip thread,
//! bridged calls) only real-time priority keeps it on time: under normal scheduling the
//! announcement bench's p99 send lateness was 78 ms, under `SCHED_RR` 1.5 ms. Relaying bridged
//! calls' RTP has no deadline (a packet goes out as soon as it is read) and is most of the CPU at
//! load; at real-time priority it took whole cores from everything else (the load generator's echo
//! lost 20 % of 200,000 packets/s to it, and the sip thread answered 503 under load). So the pacer
//! thread is real-time and sleeps between deadlines; the I/O thread competes fairly. The mutex
//! inherits priority ([`PiMutex`]): an I/O thread preempted while holding it runs at the pacer's
//! priority until it lets go, so the pacer waits at most for one critical section (a batch of
//! datagrams through the engine, or a command). The pacer sends its packets after letting the engine
//! go, holding only the ports' gate, under which a port is closed: a socket cannot be closed, and its
//! descriptor reused, under packets in flight. The I/O thread uses descriptors outside the lock
//! freely: it is the only thread that closes ports (commands run there).
//!
//! **Ports.** Each leg has its own UDP socket on (media address, `local_port`), *not connected*: the
//! bridge latches to whatever address the leg's RTP really comes from (NAT), so the socket must
//! receive from anyone and send with `sendto`. RTCP (RFC 3550: the next port, `local_port + 1`) is
//! bound too when it is free and every datagram on it is read and dropped, so that the peer's reports
//! reach a port that exists (no ICMP port-unreachable back at it) and are counted
//! ([`MediaStats::rtcp_received`]). callgate terminates RTCP rather than relaying it: the bridge
//! rewrites SSRCs, sequence numbers and timestamps and mixes in pacer segments, so the far side's
//! reports would describe a stream the receiver never saw (see [`crate::media::bridge`]). callgate
//! sends no reports of its own (RTCP is optional for the G.711 peers it serves).
//!
//! **Waking.** While RTP keeps arriving the I/O thread does not wake for each datagram: it sleeps to
//! the next millisecond ([`MediaConfig::coalesce`]) and then takes every reported port at once (at
//! most one wake-up per millisecond; relayed packets wait up to 1 ms). When a wake-up finds nothing to
//! read it waits in epoll again. After each wake-up it wakes the pacer if the engine's next deadline
//! is now earlier than the one the pacer sleeps to (a prompt just started, a digit to send).
//!
//! **Sending.** A packet goes out as soon as the engine emits it; consecutive packets for the same
//! socket (a burst after a stall, a batch of relayed packets) share one `sendmmsg`. Packets of
//! different calls cannot share a system call: `sendmmsg` takes one socket, and the source port
//! must be the call's own. Send lateness (the instant the packet left minus its due instant) goes to
//! `callgate_media_send_lateness`.
//!
//! The sip task talks to the threads through [`MediaTx`]; they end when the `MediaTx` is dropped, after
//! stopping every call (recordings are closed and reported).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::media::bridge::{BridgeConfig, ComfortNoise};
use crate::media::command::{CallKey, Leg, MediaCommand, MediaEvent, MediaFailure};
use crate::media::engine::{Engine, EngineConfig, EngineStats, Outgoing, RecordingOp, Sockets};
use crate::media::prompt::PromptSet;
use crate::media::recording::{patch_sizes, wav_header};
use crate::edge::pi::PiMutex;
use crate::metrics::{Counter, Metrics};

/// Kernel receive buffer of each RTP socket: a leg sends 50 packets a second.
const RECV_BUFFER: usize = 32 * 1024;
/// Datagrams one `recvmmsg` takes from a socket.
const READ_BATCH: usize = 8;
/// `recvmmsg` calls on one reported socket before the others get their turn.
const READ_ROUNDS: usize = 4;
/// Largest datagram read (larger ones are truncated and then refused by the bridge as malformed).
const DATAGRAM: usize = 1536;
/// Packets one `sendmmsg` carries at most.
const SEND_BATCH: usize = 8;
/// epoll tokens that are not ports.
const TOKEN_WAKE: u64 = u64::MAX;
const TOKEN_TIMER: u64 = u64::MAX - 1;

/// Settings of the recording writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordingSettings {
    /// Chunks in flight from the media threads to the writer thread.
    pub queue: usize,
    /// How often a recording's samples are handed to the writer (each chunk is this much audio).
    pub flush_every: Duration,
    /// Bytes a media thread holds back while the writer's queue is full; beyond this, samples are
    /// dropped (and counted in [`MediaStats::recording_bytes_dropped`]) rather than memory growing.
    pub max_backlog_bytes: usize,
}

impl Default for RecordingSettings {
    fn default() -> RecordingSettings {
        RecordingSettings { queue: 1024, flush_every: Duration::from_millis(500), max_backlog_bytes: 64 << 20 }
    }
}

/// Media engine settings (from the profile; see `spawn_with`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaConfig {
    /// No RTP from a `sendrecv` leg for this long: [`MediaEvent::Inactive`] (also before a bridge:
    /// a caller in the queue). Default 60 s.
    pub inactivity: Duration,
    /// Comfort noise (PT 13) from one leg: dropped (default) or relayed.
    pub comfort_noise: ComfortNoise,
    /// Media threads; 0 = one per core, at most 2 (the default).
    pub threads: usize,
    /// Bind `local_port + 1` for RTCP (read and dropped). Default true.
    pub rtcp: bool,
    /// Run the media threads under the real-time round-robin policy (`SCHED_RR`) at this priority
    /// (1-99), so that their 20 ms deadlines are met even when other processes keep every core busy.
    /// The threads sleep between deadlines and the kernel caps real-time threads at 95% of a core each
    /// (`sched_rt_runtime_us`). Without the permission (`CAP_SYS_NICE`) the threads run normally and
    /// say so once. `None`: normal scheduling. Default `Some(10)`.
    ///
    /// This is the priority of each shard's pacer thread, which sends the packets due at deadlines
    /// (prompts, music, mixed frames, digits) and otherwise sleeps. The shard's I/O thread, which
    /// reads the ports and relays bridged calls' RTP (most of the CPU at load, and no deadline of
    /// its own: a packet goes out as soon as it is read), runs under normal scheduling unless
    /// [`MediaConfig::relay_realtime`] is set.
    pub realtime_priority: Option<u8>,
    /// Run the I/O threads (reading and relaying) at the real-time priority too. Default false:
    /// under `SCHED_RR` they would take whole cores from every normal thread on the machine (the
    /// sip thread, a co-located peer) for as long as RTP keeps coming.
    pub relay_realtime: bool,
    /// While RTP keeps arriving, take it once per this period (aligned to the pacer's milliseconds;
    /// 1 ms or a divisor of it) instead of waking for every datagram (see the thread loop). `None`:
    /// wake for every datagram. Default 1 ms.
    pub coalesce: Option<Duration>,
    /// The media threads' nice value when they run without real-time priority (-20 to 19; lower runs
    /// first). Default 0.
    pub nice: i8,
    pub recordings: RecordingSettings,
}

impl Default for MediaConfig {
    fn default() -> MediaConfig {
        MediaConfig {
            inactivity: Duration::from_secs(60),
            comfort_noise: ComfortNoise::Drop,
            threads: 0,
            rtcp: true,
            realtime_priority: Some(10),
            relay_realtime: false,
            nice: 0,
            coalesce: Some(Duration::from_millis(1)),
            recordings: RecordingSettings::default(),
        }
    }
}

impl MediaConfig {
    fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(2),
            n => n,
        }
    }
}

/// Counters and gauges of the media threads (all threads together), for `/metrics`, tests and benches.
#[derive(Debug, Default)]
pub struct MediaStats {
    pub rtp_received: AtomicU64,
    pub rtp_relayed: AtomicU64,
    /// Datagrams on RTP ports that were not valid RTP from the leg (see `EngineStats::invalid`).
    pub rtp_invalid: AtomicU64,
    pub rtcp_received: AtomicU64,
    pub pacer_sent: AtomicU64,
    pub dtmf_sent: AtomicU64,
    /// Packets of the mixers (legs hearing a conference, consultation or supervisor mix).
    pub mixed_sent: AtomicU64,
    /// Packets the kernel refused to send (socket buffer full, no route).
    pub send_errors: AtomicU64,
    /// Frames the pacer skipped because its thread fell more than a period behind.
    pub skipped_frames: AtomicU64,
    pub recordings_written: AtomicU64,
    pub recording_failures: AtomicU64,
    pub recording_bytes_dropped: AtomicU64,
    /// Calls with media now, and open RTP + RTCP sockets now.
    pub calls: AtomicU64,
    pub sockets: AtomicU64,
    /// Wake-ups of the media threads (epoll_wait returns).
    pub wakeups: AtomicU64,
}

/// A copy of [`MediaStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(dead_code)] // read by tests; for /metrics once the shell renders it
pub struct MediaStatsSnapshot {
    pub rtp_received: u64,
    pub rtp_relayed: u64,
    pub rtp_invalid: u64,
    pub rtcp_received: u64,
    pub pacer_sent: u64,
    pub dtmf_sent: u64,
    pub mixed_sent: u64,
    pub send_errors: u64,
    pub skipped_frames: u64,
    pub recordings_written: u64,
    pub recording_failures: u64,
    pub recording_bytes_dropped: u64,
    pub calls: u64,
    pub sockets: u64,
    pub wakeups: u64,
}

#[allow(dead_code)] // read by tests; for /metrics once the shell renders it
impl MediaStats {
    pub fn snapshot(&self) -> MediaStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MediaStatsSnapshot {
            rtp_received: l(&self.rtp_received),
            rtp_relayed: l(&self.rtp_relayed),
            rtp_invalid: l(&self.rtp_invalid),
            rtcp_received: l(&self.rtcp_received),
            pacer_sent: l(&self.pacer_sent),
            dtmf_sent: l(&self.dtmf_sent),
            mixed_sent: l(&self.mixed_sent),
            send_errors: l(&self.send_errors),
            skipped_frames: l(&self.skipped_frames),
            recordings_written: l(&self.recordings_written),
            recording_failures: l(&self.recording_failures),
            recording_bytes_dropped: l(&self.recording_bytes_dropped),
            calls: l(&self.calls),
            sockets: l(&self.sockets),
            wakeups: l(&self.wakeups),
        }
    }
}

struct ShardTx {
    /// `None` only while dropping.
    tx: Option<Sender<MediaCommand>>,
    wake: Arc<OwnedFd>,
}

/// The sip task's handle on the media threads: commands in (each to its call's thread), and a
/// wake-up with each.
pub struct MediaTx {
    shards: Vec<ShardTx>,
    #[allow(dead_code)] // read by tests; for /metrics once the shell renders it
    stats: Arc<MediaStats>,
}

fn call_of(cmd: &MediaCommand) -> CallKey {
    match cmd {
        MediaCommand::Open { call, .. }
        | MediaCommand::Play { call, .. }
        | MediaCommand::Relay { call, .. }
        | MediaCommand::Update { call, .. }
        | MediaCommand::SendDigit { call, .. }
        | MediaCommand::Record { call, .. }
        | MediaCommand::CloseLeg { call, .. }
        | MediaCommand::Mix { call, .. }
        | MediaCommand::Rebind { call, .. }
        | MediaCommand::Stop { call } => *call,
    }
}

impl MediaTx {
    pub fn send(&self, cmd: MediaCommand) {
        let shard = &self.shards[(call_of(&cmd) % self.shards.len() as u64) as usize];
        if shard.tx.as_ref().is_some_and(|tx| tx.send(cmd).is_ok()) {
            wake(&shard.wake);
        }
    }

    /// The media threads' counters now.
    #[allow(dead_code)] // for the shell's /metrics and the benches
    pub fn stats(&self) -> MediaStatsSnapshot {
        self.stats.snapshot()
    }

    /// The shared counters (to read after the `MediaTx` is gone).
    #[allow(dead_code)] // for the shell's /metrics and the benches
    pub fn stats_handle(&self) -> Arc<MediaStats> {
        self.stats.clone()
    }

    /// Media threads running.
    #[allow(dead_code)] // for the shell's /metrics and the benches
    pub fn threads(&self) -> usize {
        self.shards.len()
    }
}

impl Drop for MediaTx {
    fn drop(&mut self) {
        // Close the channels first, then wake the threads so that they see the close and end.
        for s in &mut self.shards {
            drop(s.tx.take());
            wake(&s.wake);
        }
    }
}

fn wake(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: an eventfd and a pointer to 8 bytes.
    unsafe { libc::write(fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
}

fn os<T: PartialOrd + Default>(rc: T) -> std::io::Result<T> {
    if rc < T::default() {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Starts the media threads with the default [`MediaConfig`], except for two settings the benches
/// vary without a profile change: `CALLGATE_MEDIA_THREADS` (a number; 0 = automatic),
/// `CALLGATE_MEDIA_RT` (a priority 1-99, or 0 for normal scheduling), `CALLGATE_MEDIA_RT_RELAY` (1:
/// the I/O threads at that priority too), `CALLGATE_MEDIA_NICE`
/// (-20 to 19, without real-time priority) and `CALLGATE_MEDIA_COALESCE_US` (0 = off, up to 1000).
pub fn spawn(
    prompts: Arc<PromptSet>,
    local_ip: IpAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(MediaTx, JoinHandle<()>, UnboundedReceiver<MediaEvent>)> {
    spawn_with_inactivity(prompts, local_ip, metrics, MediaConfig::default().inactivity)
}

/// [`spawn`] with the profile's inactivity time (`[media] inactivity`; `None`: never).
pub fn spawn_with_inactivity(
    prompts: Arc<PromptSet>,
    local_ip: IpAddr,
    metrics: Arc<Metrics>,
    inactivity: impl Into<Option<Duration>>,
) -> std::io::Result<(MediaTx, JoinHandle<()>, UnboundedReceiver<MediaEvent>)> {
    // "Never" is ten years: an Instant that far ahead still adds without overflow.
    let never = Duration::from_secs(10 * 365 * 86_400);
    let mut config = MediaConfig { inactivity: inactivity.into().unwrap_or(never), ..MediaConfig::default() };
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u8>().ok());
    if let Some(n) = env("CALLGATE_MEDIA_THREADS") {
        config.threads = n as usize;
    }
    if let Some(p) = env("CALLGATE_MEDIA_RT") {
        config.realtime_priority = (p > 0).then_some(p.min(99));
    }
    if let Some(v) = env("CALLGATE_MEDIA_RT_RELAY") {
        config.relay_realtime = v > 0;
    }
    if let Some(us) = std::env::var("CALLGATE_MEDIA_COALESCE_US").ok().and_then(|v| v.trim().parse::<u64>().ok()) {
        config.coalesce = (us > 0).then(|| Duration::from_micros(us.min(1000)));
    }
    if let Some(n) = std::env::var("CALLGATE_MEDIA_NICE").ok().and_then(|v| v.trim().parse::<i8>().ok()) {
        config.nice = n.clamp(-20, 19);
    }
    spawn_with(prompts, local_ip, metrics, config)
}

/// Puts the calling thread under `SCHED_RR` at `priority`; false (and, with `log`, a log line) if
/// not permitted.
fn set_realtime(priority: u8, log: bool) -> bool {
    let param = libc::sched_param { sched_priority: i32::from(priority.clamp(1, 99)) };
    // SAFETY: the calling thread and a valid sched_param.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_RR, &param) };
    if rc != 0 {
        if log {
            let e = std::io::Error::from_raw_os_error(rc);
            tracing::info!(error = %e, priority, "media threads run without real-time priority");
        }
        return false;
    }
    true
}

/// The calling thread's nice value (Linux: per thread); 0 leaves it alone.
fn set_nice(nice: i8, log: bool) {
    if nice == 0 {
        return;
    }
    // SAFETY: setpriority on this thread's id.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, i32::from(nice)) };
    if rc != 0 && log {
        tracing::info!(error = %std::io::Error::last_os_error(), nice, "media threads keep their nice value");
    }
}

/// Starts the media threads and the recording writer. Commands go in through the returned
/// [`MediaTx`]; the threads end when it is dropped, and the returned handle when all of them (and the
/// writer, with every recording closed) have ended.
pub fn spawn_with(
    prompts: Arc<PromptSet>,
    local_ip: IpAddr,
    metrics: Arc<Metrics>,
    config: MediaConfig,
) -> std::io::Result<(MediaTx, JoinHandle<()>, UnboundedReceiver<MediaEvent>)> {
    let (ev_tx, ev_rx) = unbounded_channel();
    let stats = Arc::new(MediaStats::default());
    let (rec_tx, rec_rx) = std::sync::mpsc::sync_channel(config.recordings.queue.max(1));
    let writer = {
        let (events, stats) = (ev_tx.clone(), stats.clone());
        std::thread::Builder::new().name("callgate-recorder".into()).spawn(move || write_recordings(rec_rx, events, stats))?
    };
    let engine_config = EngineConfig {
        bridge: BridgeConfig { inactivity: config.inactivity, comfort_noise: config.comfort_noise, ..BridgeConfig::default() },
        record_flush: config.recordings.flush_every,
        housekeeping: (config.inactivity / 10).clamp(Duration::from_millis(10), Duration::from_millis(100)),
        ..EngineConfig::default()
    };
    let n = config.threads();
    let mut shards = Vec::with_capacity(n);
    let mut threads: Vec<(Shard, Pacer)> = Vec::with_capacity(n);
    for i in 0..n {
        let (shard, pacer, tx) = Shard::new(i, &prompts, local_ip, &metrics, &stats, &ev_tx, &rec_tx, config, engine_config)?;
        shards.push(ShardTx { tx: Some(tx), wake: shard.wake.clone() });
        threads.push((shard, pacer));
    }
    drop((ev_tx, rec_tx));
    let mut handles = Vec::with_capacity(2 * n);
    for (shard, pacer) in threads {
        let index = shard.index;
        let (rt, nice) = (config.realtime_priority, config.nice);
        let relay_rt = config.relay_realtime;
        handles.push(std::thread::Builder::new().name(format!("callgate-pacer{index}")).spawn(move || {
            if !rt.is_some_and(|p| set_realtime(p, index == 0)) {
                set_nice(nice, index == 0);
            }
            pacer.run()
        })?);
        handles.push(std::thread::Builder::new().name(format!("callgate-media{index}")).spawn(move || {
            if !(relay_rt && rt.is_some_and(|p| set_realtime(p, false))) {
                set_nice(nice, false);
            }
            shard.run()
        })?);
    }
    // One handle for all: a media thread never waits for another, so the first one to end may not be
    // the last; this one waits for all of them and then for the writer.
    let all = std::thread::Builder::new().name("callgate-media".into()).spawn(move || {
        for h in handles {
            let _ = h.join();
        }
        let _ = writer.join();
    })?;
    Ok((MediaTx { shards, stats }, all, ev_rx))
}

fn epoll_add(epoll: RawFd, fd: RawFd, token: u64) -> std::io::Result<()> {
    epoll_add_with(epoll, fd, token, libc::EPOLLIN as u32)
}

/// Ports are edge-triggered: epoll reports a socket once per arrival instead of re-checking every
/// ready socket on each wait; the thread therefore reads each reported socket until it is empty
/// (or puts it on its `unread` list when it stops early).
fn epoll_add_port(epoll: RawFd, fd: RawFd, token: u64) -> std::io::Result<()> {
    epoll_add_with(epoll, fd, token, (libc::EPOLLIN | libc::EPOLLET) as u32)
}

fn epoll_add_with(epoll: RawFd, fd: RawFd, token: u64, events: u32) -> std::io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: valid fds and a valid event struct.
    os(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(|_| ())
}

/// A sockaddr for the kernel, built on the stack.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn new(addr: SocketAddr) -> RawAddr {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
                let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr { storage, len: len as libc::socklen_t }
    }
}

/// The source address the kernel wrote into a receive's `msg_name`.
fn from_raw(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// One leg's ports.
struct Port {
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
}

/// The ports of one media thread, in a slab whose index is the engine's socket id. epoll tokens:
/// `id << 1` for RTP, `id << 1 | 1` for RTCP.
struct PortSlab {
    epoll: Arc<OwnedFd>,
    /// The pacer thread's sending gate (see [`Pacer`]): a port is closed only while holding it.
    gate: Arc<PiMutex<()>>,
    local_ip: IpAddr,
    rtcp: bool,
    ports: Vec<Option<Port>>,
    free: Vec<u32>,
    stats: Arc<MediaStats>,
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = sock.set_recv_buffer_size(RECV_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

impl Sockets for PortSlab {
    fn open(&mut self, call: CallKey, leg: Leg, port: u16) -> Result<u32, MediaFailure> {
        let addr = SocketAddr::new(self.local_ip, port);
        let fail = |e: std::io::Error| MediaFailure::Bind { addr, kind: e.kind() };
        let rtp = bind_udp(addr).map_err(fail)?;
        // RTCP on the next port, if it is free (it is terminated here: read and dropped). Port 0 asks
        // the kernel for any RTP port: there is no "next" one then.
        let rtcp = match port.checked_add(1).filter(|_| self.rtcp && port != 0) {
            Some(p) => match bind_udp(SocketAddr::new(self.local_ip, p)) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(call, %leg, port = p, error = %e, "RTCP port not bound: RTCP from the leg goes unanswered");
                    None
                }
            },
            None => None,
        };
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.ports.push(None);
                (self.ports.len() - 1) as u32
            }
        };
        let epoll = self.epoll.as_raw_fd();
        let registered = epoll_add_port(epoll, rtp.as_raw_fd(), u64::from(id) << 1)
            .and_then(|_| rtcp.as_ref().map_or(Ok(()), |s| epoll_add_port(epoll, s.as_raw_fd(), u64::from(id) << 1 | 1)));
        if let Err(e) = registered {
            self.free.push(id);
            return Err(fail(e)); // closing the sockets takes them out of the epoll set
        }
        self.stats.sockets.fetch_add(1 + u64::from(rtcp.is_some()), Ordering::Relaxed);
        self.ports[id as usize] = Some(Port { rtp, rtcp });
        Ok(id)
    }

    fn close(&mut self, socket: u32) {
        if let Some(slot) = self.ports.get_mut(socket as usize) {
            // The pacer thread may be sending on this port's socket outside the engine's lock: wait
            // for it, so that the descriptor cannot be reused under its packets.
            let _sending = self.gate.lock();
            if let Some(p) = slot.take() {
                // Closing a socket removes it from the epoll set.
                self.stats.sockets.fetch_sub(1 + u64::from(p.rtcp.is_some()), Ordering::Relaxed);
                self.free.push(socket);
            }
        }
    }
}

/// Receive buffers for one `recvmmsg`, allocated once.
struct RecvBatch {
    bufs: Vec<[u8; DATAGRAM]>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    fn new() -> Box<RecvBatch> {
        // SAFETY: plain data; all-zero is valid for these C structs.
        let zero_name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut b = Box::new(RecvBatch {
            bufs: vec![[0u8; DATAGRAM]; READ_BATCH],
            names: vec![zero_name; READ_BATCH],
            iovs: Vec::with_capacity(READ_BATCH),
            msgs: Vec::with_capacity(READ_BATCH),
        });
        for i in 0..READ_BATCH {
            let iov = libc::iovec { iov_base: b.bufs[i].as_mut_ptr() as *mut libc::c_void, iov_len: DATAGRAM };
            b.iovs.push(iov);
        }
        for i in 0..READ_BATCH {
            // SAFETY: as above.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut b.iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = &mut b.names[i] as *mut _ as *mut libc::c_void;
            b.msgs.push(m);
        }
        b
    }

    /// One `recvmmsg` on `fd`: the number of datagrams read (0 when none, or on an error).
    fn recv(&mut self, fd: RawFd) -> usize {
        for m in &mut self.msgs {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
        }
        // SAFETY: the headers point into buffers owned by self (boxed, not moved while in use).
        let n = unsafe {
            libc::recvmmsg(fd, self.msgs.as_mut_ptr(), READ_BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                tracing::debug!(error = %e, "RTP receive error");
            }
            return 0;
        }
        n as usize
    }
}

/// Outgoing packets gathered for one socket, sent with one `sendmmsg` (or `sendto` for one).
struct SendBatch {
    fd: RawFd,
    n: usize,
    bufs: [[u8; 512]; SEND_BATCH],
    lens: [usize; SEND_BATCH],
    addrs: [libc::sockaddr_storage; SEND_BATCH],
    addr_lens: [libc::socklen_t; SEND_BATCH],
    due: [Option<Instant>; SEND_BATCH],
    sent: u64,
    errors: u64,
}

impl SendBatch {
    fn new() -> Box<SendBatch> {
        // SAFETY: plain data.
        let zero_name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        Box::new(SendBatch {
            fd: -1,
            n: 0,
            bufs: [[0u8; 512]; SEND_BATCH],
            lens: [0; SEND_BATCH],
            addrs: [zero_name; SEND_BATCH],
            addr_lens: [0; SEND_BATCH],
            due: [None; SEND_BATCH],
            sent: 0,
            errors: 0,
        })
    }

    /// Queues one packet; flushes first if it is for another socket or the batch is full.
    fn push(&mut self, fd: RawFd, dst: SocketAddr, header: &[u8], payload: &[u8], due: Option<Instant>, metrics: &Metrics) {
        let len = header.len() + payload.len();
        if self.n > 0 && (self.fd != fd || self.n == SEND_BATCH) {
            self.flush(metrics);
        }
        if len > 512 {
            // Larger than any packet the pacer or a digit makes; relayed packets do not come here.
            send_one(fd, &[header, payload].concat(), dst, &mut self.sent, &mut self.errors);
            return;
        }
        let i = self.n;
        self.fd = fd;
        self.bufs[i][..header.len()].copy_from_slice(header);
        self.bufs[i][header.len()..len].copy_from_slice(payload);
        self.lens[i] = len;
        let a = RawAddr::new(dst);
        self.addrs[i] = a.storage;
        self.addr_lens[i] = a.len;
        self.due[i] = due;
        self.n += 1;
    }

    fn flush(&mut self, metrics: &Metrics) {
        let n = std::mem::take(&mut self.n);
        if n == 0 {
            return;
        }
        if n == 1 {
            // SAFETY: a valid buffer and sockaddr of the given lengths.
            let rc = unsafe {
                libc::sendto(
                    self.fd,
                    self.bufs[0].as_ptr() as *const libc::c_void,
                    self.lens[0],
                    0,
                    &self.addrs[0] as *const _ as *const libc::sockaddr,
                    self.addr_lens[0],
                )
            };
            if rc < 0 {
                self.errors += 1;
            } else {
                self.sent += 1;
            }
        } else {
            let mut iovs: [libc::iovec; SEND_BATCH] =
                std::array::from_fn(|i| libc::iovec { iov_base: self.bufs[i].as_mut_ptr() as *mut libc::c_void, iov_len: self.lens[i] });
            // SAFETY: plain data.
            let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
            for i in 0..n {
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
                msgs[i].msg_hdr.msg_namelen = self.addr_lens[i];
            }
            let mut done = 0;
            while done < n {
                // SAFETY: the headers point into arrays that live until the call returns.
                let rc = unsafe { libc::sendmmsg(self.fd, msgs[done..].as_mut_ptr(), (n - done) as libc::c_uint, 0) };
                if rc <= 0 {
                    // The first packet failed (EAGAIN: socket buffer full; no route): skip it, go on.
                    self.errors += 1;
                    done += 1;
                } else {
                    self.sent += rc as u64;
                    done += rc as usize;
                }
            }
        }
        let now = Instant::now();
        for d in self.due[..n].iter().flatten() {
            metrics.record_lateness(now.saturating_duration_since(*d));
        }
    }
}

fn send_one(fd: RawFd, pkt: &[u8], dst: SocketAddr, sent: &mut u64, errors: &mut u64) {
    let a = RawAddr::new(dst);
    // SAFETY: a valid buffer and sockaddr.
    let rc = unsafe {
        libc::sendto(fd, pkt.as_ptr() as *const libc::c_void, pkt.len(), 0, &a.storage as *const _ as *const libc::sockaddr, a.len)
    };
    if rc < 0 {
        *errors += 1;
    } else {
        *sent += 1;
    }
}

/// One media thread.
/// What a shard's two threads share, behind one priority-inheriting mutex ([`PiMutex`]): the engine
/// and the ports, and what goes out of them to the sip task, the recording writer and the metrics.
struct Shared {
    engine: Engine,
    ports: PortSlab,
    events: UnboundedSender<MediaEvent>,
    recordings: SyncSender<RecordingOp>,
    /// Recording work the writer's queue had no room for, and its bytes.
    rec_backlog: VecDeque<RecordingOp>,
    rec_backlog_bytes: usize,
    max_backlog: usize,
    metrics: Arc<Metrics>,
    stats: Arc<MediaStats>,
    calls_published: u64,
    skipped_published: u64,
    /// The deadline the pacer thread's timerfd is armed for (`None`: none; it waits for a kick).
    pacer_armed: Option<Instant>,
    /// Set by the I/O thread once it has shut the engine down: the pacer thread ends.
    stopped: bool,
}

/// A shard's I/O thread: the sip task's commands, and the ports (reading, relaying).
struct Shard {
    index: usize,
    shared: Arc<PiMutex<Shared>>,
    epoll: Arc<OwnedFd>,
    wake: Arc<OwnedFd>,
    /// The pacer thread's eventfd: written when the engine's next deadline moved earlier.
    kick: Arc<OwnedFd>,
    cmd_rx: Receiver<MediaCommand>,
    stats: Arc<MediaStats>,
    /// An `Instant` and the monotonic clock's reading at it.
    base: (Instant, libc::timespec),
    coalesce: Option<Duration>,
}

/// A shard's pacer thread: the engine's deadlines (pacer slots, mixer frames, digit packets,
/// key-press ends, inactivity checks) and the packets due at them.
struct Pacer {
    shared: Arc<PiMutex<Shared>>,
    /// Held while due packets are sent outside the engine's lock: a port closes only under it.
    gate: Arc<PiMutex<()>>,
    epoll: OwnedFd,
    timer: OwnedFd,
    kick: Arc<OwnedFd>,
    metrics: Arc<Metrics>,
    stats: Arc<MediaStats>,
    base: (Instant, libc::timespec),
}

/// The monotonic clock's reading at `t`, given an `Instant` and the clock's reading at it.
fn abs_timespec(base: (Instant, libc::timespec), t: Instant) -> libc::timespec {
    let d = t.saturating_duration_since(base.0);
    let nanos = base.1.tv_nsec as u64 + u64::from(d.subsec_nanos());
    libc::timespec {
        tv_sec: base.1.tv_sec + d.as_secs() as libc::time_t + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    }
}

/// One `epoll_wait` (`timeout` in ms, -1: none): the number of events, or `None` when interrupted or
/// failed (logged; a failure also pauses a millisecond, so that a broken epoll cannot spin a core).
fn wait_events(epoll: RawFd, events: &mut [libc::epoll_event], timeout: i32) -> Option<usize> {
    // SAFETY: a valid epoll fd and a buffer of `events.len()` entries.
    let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, timeout) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            tracing::error!(error = %e, "media thread: epoll_wait failed");
            std::thread::sleep(Duration::from_millis(1));
        }
        return None;
    }
    Some(n as usize)
}

fn new_fd(rc: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: a descriptor just returned by the kernel, owned from here on.
    os(rc).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Shard {
    /// A shard's I/O thread, its pacer thread and the sender of its commands.
    #[allow(clippy::too_many_arguments)]
    fn new(
        index: usize,
        prompts: &Arc<PromptSet>,
        local_ip: IpAddr,
        metrics: &Arc<Metrics>,
        stats: &Arc<MediaStats>,
        events: &UnboundedSender<MediaEvent>,
        recordings: &SyncSender<RecordingOp>,
        config: MediaConfig,
        engine_config: EngineConfig,
    ) -> std::io::Result<(Shard, Pacer, Sender<MediaCommand>)> {
        // SAFETY: plain system calls.
        let epoll = Arc::new(new_fd(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?);
        let wake = Arc::new(new_fd(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?);
        let pacer_epoll = new_fd(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let kick = Arc::new(new_fd(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?);
        let timer = new_fd(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) })?;
        epoll_add(epoll.as_raw_fd(), wake.as_raw_fd(), TOKEN_WAKE)?;
        epoll_add(pacer_epoll.as_raw_fd(), kick.as_raw_fd(), TOKEN_WAKE)?;
        epoll_add(pacer_epoll.as_raw_fd(), timer.as_raw_fd(), TOKEN_TIMER)?;
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let now = Instant::now();
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid clock id and timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let base = (now, ts);
        let seed = crate::edge::entropy_seed() ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let gate = Arc::new(PiMutex::new(()));
        let shared = Arc::new(PiMutex::new(Shared {
            engine: Engine::new(now, engine_config, prompts.clone(), seed),
            ports: PortSlab {
                epoll: epoll.clone(),
                gate: gate.clone(),
                local_ip,
                rtcp: config.rtcp,
                ports: Vec::new(),
                free: Vec::new(),
                stats: stats.clone(),
            },
            events: events.clone(),
            recordings: recordings.clone(),
            rec_backlog: VecDeque::new(),
            rec_backlog_bytes: 0,
            max_backlog: config.recordings.max_backlog_bytes,
            metrics: metrics.clone(),
            stats: stats.clone(),
            calls_published: 0,
            skipped_published: 0,
            pacer_armed: None,
            stopped: false,
        }));
        if index == 0 && !shared.inherits() {
            tracing::warn!("media threads: no priority-inheriting mutex here; the pacer may wait for a preempted I/O thread");
        }
        let pacer = Pacer {
            shared: shared.clone(),
            gate,
            epoll: pacer_epoll,
            timer,
            kick: kick.clone(),
            metrics: metrics.clone(),
            stats: stats.clone(),
            base,
        };
        let shard = Shard { index, shared, epoll, wake, kick, cmd_rx, stats: stats.clone(), base, coalesce: config.coalesce };
        Ok((shard, pacer, cmd_tx))
    }

    fn run(mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        let mut recv = RecvBatch::new();
        let mut rtcp_scratch = RecvBatch::new();
        // Edge-triggered ports that were not read empty (a flood): read again next time round.
        let (mut pending, mut unread): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
        // Busy: the last wake-up found RTP to read. Then the thread does not wait for each datagram
        // (one wake-up and epoll_wait per packet) but sleeps to the next coalescing boundary and
        // takes everything that arrived meanwhile at once, at the cost of up to that period of added
        // delay on relayed packets.
        let mut busy = false;
        'outer: loop {
            if busy {
                self.sleep_to_next_period();
            }
            let Some(n) = wait_events(self.epoll.as_raw_fd(), &mut events, if busy { 0 } else { -1 }) else { continue };
            self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            let mut sockets_read = 0;
            for token in std::mem::take(&mut pending) {
                self.read_port(token, &mut recv, &mut rtcp_scratch, &mut unread);
                sockets_read += 1;
            }
            for ev in &events[..n] {
                let token = ev.u64; // (a packed struct: copy the field out)
                if token == TOKEN_WAKE {
                    drain_counter(self.wake.as_raw_fd());
                    let mut sh = self.shared.lock();
                    loop {
                        match self.cmd_rx.try_recv() {
                            Ok(cmd) => {
                                let Shared { engine, ports, .. } = &mut *sh;
                                engine.command(Instant::now(), cmd, ports);
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => break 'outer,
                        }
                    }
                } else {
                    self.read_port(token, &mut recv, &mut rtcp_scratch, &mut unread);
                    sockets_read += 1;
                }
            }
            {
                let mut sh = self.shared.lock();
                sh.publish();
                if sh.pacer_behind() {
                    wake(&self.kick);
                }
            }
            busy = (sockets_read > 0 && self.coalesce.is_some()) || !unread.is_empty();
            std::mem::swap(&mut pending, &mut unread);
        }
        let backlog = {
            let mut sh = self.shared.lock();
            let Shared { engine, ports, .. } = &mut *sh;
            engine.shutdown(Instant::now(), ports);
            sh.publish();
            sh.stopped = true;
            (std::mem::take(&mut sh.rec_backlog), sh.recordings.clone())
        };
        wake(&self.kick);
        // The writer must get the last chunks and the ends: wait for room now.
        let (ops, recordings) = backlog;
        for op in ops {
            let _ = recordings.send(op);
        }
    }

    /// Sleeps until the next boundary of the coalescing period (a whole millisecond of the shard's
    /// clock, or a fraction of one), half a period after the pacer's: the pacer's slots fall on
    /// whole milliseconds, and the two threads then take the engine's lock at different moments.
    fn sleep_to_next_period(&mut self) {
        let now = Instant::now();
        let period = self.coalesce.unwrap_or(Duration::from_millis(1)).as_nanos().max(2);
        let since = now.saturating_duration_since(self.base.0).as_nanos() + period / 2;
        let next = Duration::from_nanos(((since / period + 1) * period - period / 2) as u64);
        let value = abs_timespec(self.base, self.base.0 + next);
        // SAFETY: a valid clock id and timespec; an interrupted sleep just ends early.
        unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &value, std::ptr::null_mut()) };
    }

    /// Reads a reported port until it is empty, at most `READ_ROUNDS` batches; one that is still not
    /// empty goes on `unread`.
    fn read_port(&mut self, token: u64, recv: &mut RecvBatch, scratch: &mut RecvBatch, unread: &mut Vec<u64>) {
        let id = (token >> 1) as u32;
        for _ in 0..READ_ROUNDS {
            let n = if token & 1 == 1 { self.read_rtcp(id, scratch) } else { self.read_rtp(id, recv) };
            if n < READ_BATCH {
                return;
            }
        }
        unread.push(token);
    }

    /// A port's socket (RTP, or RTCP with `rtcp`). The descriptor stays valid until this thread
    /// closes the port (only the I/O thread runs commands), so it is used outside the lock.
    fn socket(&self, id: u32, rtcp: bool) -> Option<RawFd> {
        let sh = self.shared.lock();
        match sh.ports.ports.get(id as usize) {
            Some(Some(p)) if rtcp => p.rtcp.as_ref().map(|s| s.as_raw_fd()),
            Some(Some(p)) => Some(p.rtp.as_raw_fd()),
            _ => None,
        }
    }

    /// One batch from a leg's RTP port: each datagram to the engine (under the lock), the relayed
    /// ones out after it. Returns the number of datagrams read.
    fn read_rtp(&mut self, id: u32, recv: &mut RecvBatch) -> usize {
        let Some(fd) = self.socket(id, false) else { return 0 };
        let n = recv.recv(fd);
        if n == 0 {
            return 0;
        }
        // (datagram index, length, destination, destination length, socket) of the relayed packets.
        let mut fwd: [(usize, usize, libc::sockaddr_storage, libc::socklen_t); READ_BATCH] =
            // SAFETY: plain data.
            unsafe { std::mem::zeroed() };
        let mut fwd_fd = [-1 as RawFd; READ_BATCH];
        let mut k = 0;
        {
            let mut sh = self.shared.lock();
            let now = Instant::now();
            let Shared { engine, ports, .. } = &mut *sh;
            for i in 0..n {
                let len = (recv.msgs[i].msg_len as usize).min(DATAGRAM);
                let Some(src) = from_raw(&recv.names[i]) else { continue };
                if recv.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    continue; // larger than any RTP a G.711 leg sends
                }
                if let Some(f) = engine.on_datagram(now, id, src, &mut recv.bufs[i], len) {
                    let Some(Some(p)) = ports.ports.get(f.socket as usize) else { continue };
                    let a = RawAddr::new(f.dst);
                    fwd[k] = (i, f.len, a.storage, a.len);
                    fwd_fd[k] = p.rtp.as_raw_fd();
                    k += 1;
                }
            }
        }
        // Consecutive packets for one socket share a sendmmsg (a leg relays to the one other leg, so
        // in practice the whole batch).
        let mut start = 0;
        while start < k {
            let mut end = start + 1;
            while end < k && fwd_fd[end] == fwd_fd[start] {
                end += 1;
            }
            self.send_relayed(fwd_fd[start], &recv.bufs, &mut fwd[start..end]);
            start = end;
        }
        n
    }

    fn send_relayed(
        &self,
        fd: RawFd,
        bufs: &[[u8; DATAGRAM]],
        msgs: &mut [(usize, usize, libc::sockaddr_storage, libc::socklen_t)],
    ) {
        let k = msgs.len();
        let mut iovs: [libc::iovec; READ_BATCH] = std::array::from_fn(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
        // SAFETY: plain data.
        let mut hdrs: [libc::mmsghdr; READ_BATCH] = unsafe { std::mem::zeroed() };
        for (j, (i, len, addr, alen)) in msgs.iter_mut().enumerate() {
            iovs[j] = libc::iovec { iov_base: bufs[*i].as_ptr() as *mut libc::c_void, iov_len: *len };
            hdrs[j].msg_hdr.msg_iov = &mut iovs[j];
            hdrs[j].msg_hdr.msg_iovlen = 1;
            hdrs[j].msg_hdr.msg_name = addr as *mut _ as *mut libc::c_void;
            hdrs[j].msg_hdr.msg_namelen = *alen;
        }
        let mut done = 0;
        let mut errors = 0;
        while done < k {
            let rc = if k - done == 1 {
                // SAFETY: a valid buffer and sockaddr.
                let rc = unsafe {
                    libc::sendto(fd, iovs[done].iov_base, iovs[done].iov_len, 0, hdrs[done].msg_hdr.msg_name as *const libc::sockaddr, hdrs[done].msg_hdr.msg_namelen)
                };
                if rc < 0 { -1 } else { 1 }
            } else {
                // SAFETY: the headers point into arrays that live until the call returns.
                unsafe { libc::sendmmsg(fd, hdrs[done..k].as_mut_ptr(), (k - done) as libc::c_uint, 0) }
            };
            if rc <= 0 {
                errors += 1;
                done += 1;
            } else {
                done += rc as usize;
            }
        }
        if errors > 0 {
            self.stats.send_errors.fetch_add(errors, Ordering::Relaxed);
        }
    }

    fn read_rtcp(&mut self, id: u32, scratch: &mut RecvBatch) -> usize {
        let Some(fd) = self.socket(id, true) else { return 0 };
        let n = scratch.recv(fd);
        if n > 0 {
            self.stats.rtcp_received.fetch_add(n as u64, Ordering::Relaxed);
        }
        n
    }
}

/// The packets of one pacer wake-up, copied out of the engine so that they can be sent after its
/// lock is released. The buffers keep their size from one wake-up to the next (no allocation per
/// packet once they have grown to the busiest wake-up's).
struct OutQueue {
    bytes: Vec<u8>,
    packets: Vec<(RawFd, usize, usize, SocketAddr, Option<Instant>)>,
}

impl OutQueue {
    fn new() -> OutQueue {
        OutQueue { bytes: Vec::with_capacity(256 * 1024), packets: Vec::with_capacity(2048) }
    }

    fn push(&mut self, fd: RawFd, o: &Outgoing<'_>) {
        let off = self.bytes.len();
        self.bytes.extend_from_slice(o.header);
        self.bytes.extend_from_slice(o.payload);
        self.packets.push((fd, off, o.header.len() + o.payload.len(), o.dst, o.due));
    }

    /// Sends everything queued (consecutive packets for one socket in one `sendmmsg`) and empties the
    /// queue.
    fn send(&mut self, batch: &mut SendBatch, metrics: &Metrics) {
        for &(fd, off, len, dst, due) in &self.packets {
            batch.push(fd, dst, &self.bytes[off..off + len], &[], due, metrics);
        }
        batch.flush(metrics);
        self.packets.clear();
        self.bytes.clear();
    }
}

impl Pacer {
    fn run(self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let mut send = SendBatch::new();
        let mut out = OutQueue::new();
        loop {
            let Some(n) = wait_events(self.epoll.as_raw_fd(), &mut events, -1) else { continue };
            for ev in &events[..n] {
                let token = ev.u64;
                drain_counter(if token == TOKEN_TIMER { self.timer.as_raw_fd() } else { self.kick.as_raw_fd() });
            }
            self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            let next = {
                let mut sh = self.shared.lock();
                if sh.stopped {
                    return;
                }
                let now = Instant::now();
                let Shared { engine, ports, .. } = &mut *sh;
                let slots = &ports.ports;
                engine.handle_timeout(now, &mut |o: Outgoing<'_>| {
                    if let Some(Some(p)) = slots.get(o.socket as usize) {
                        out.push(p.rtp.as_raw_fd(), &o);
                    }
                });
                sh.publish();
                let next = sh.engine.poll_timeout();
                sh.pacer_armed = next;
                // Taken before the engine's lock is let go (the order PortSlab::close takes them in):
                // no port closes until these packets are out.
                let sending = self.gate.lock();
                drop(sh);
                out.send(&mut send, &self.metrics);
                drop(sending);
                next
            };
            self.arm(next);
        }
    }

    /// Arms the timerfd for the engine's next deadline (absolute, so a late wake does not shift the
    /// next one; a deadline already past fires at once), or disarms it (`None`).
    fn arm(&self, t: Option<Instant>) {
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let value = match t {
            Some(t) => {
                let v = abs_timespec(self.base, t);
                if v.tv_sec == 0 && v.tv_nsec == 0 { libc::timespec { tv_sec: 0, tv_nsec: 1 } } else { v }
            }
            None => zero,
        };
        let spec = libc::itimerspec { it_interval: zero, it_value: value };
        // SAFETY: a valid timerfd and itimerspec.
        let rc = unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            tracing::error!(error = %std::io::Error::last_os_error(), "media pacer thread: timerfd_settime failed");
        }
    }
}

impl Shared {
    /// Whether the pacer thread must be woken: the engine's next deadline is earlier than the one
    /// it waits for.
    fn pacer_behind(&self) -> bool {
        match self.engine.poll_timeout() {
            Some(t) => self.pacer_armed.is_none_or(|a| t < a),
            None => false,
        }
    }

    /// Events to the sip task, recording work to the writer, counters to the metrics.
    fn publish(&mut self) {
        while let Some(ev) = self.engine.poll_event() {
            let _ = self.events.send(ev);
        }
        while let Some(op) = self.engine.poll_recording() {
            self.rec_backlog_bytes += op_bytes(&op);
            self.rec_backlog.push_back(op);
        }
        while let Some(op) = self.rec_backlog.pop_front() {
            let bytes = op_bytes(&op);
            match self.recordings.try_send(op) {
                Ok(()) => self.rec_backlog_bytes -= bytes,
                Err(TrySendError::Full(op)) => {
                    self.rec_backlog.push_front(op);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.rec_backlog_bytes -= bytes;
                }
            }
        }
        if self.rec_backlog_bytes > self.max_backlog {
            // The writer cannot keep up: drop samples (never a Start or an End) rather than grow.
            let mut dropped = 0;
            self.rec_backlog.retain(|op| match op {
                RecordingOp::Data { bytes, .. } => {
                    dropped += bytes.len();
                    false
                }
                _ => true,
            });
            self.rec_backlog_bytes -= dropped;
            self.stats.recording_bytes_dropped.fetch_add(dropped as u64, Ordering::Relaxed);
            tracing::warn!(bytes = dropped, "recording writer behind: samples dropped");
        }
        let s: EngineStats = self.engine.take_stats();
        let st = &self.stats;
        let sent = s.pacer_sent + s.relayed + s.dtmf_sent + s.mixed;
        if sent > 0 {
            self.metrics.add(Counter::RtpSent, sent);
        }
        if s.rtp_in > 0 {
            self.metrics.add(Counter::RtpReceived, s.rtp_in);
            st.rtp_received.fetch_add(s.rtp_in, Ordering::Relaxed);
        }
        if s.digits_in > 0 {
            self.metrics.add(Counter::DtmfDigits, s.digits_in);
        }
        st.rtp_relayed.fetch_add(s.relayed, Ordering::Relaxed);
        st.rtp_invalid.fetch_add(s.invalid, Ordering::Relaxed);
        st.pacer_sent.fetch_add(s.pacer_sent, Ordering::Relaxed);
        st.dtmf_sent.fetch_add(s.dtmf_sent, Ordering::Relaxed);
        st.mixed_sent.fetch_add(s.mixed, Ordering::Relaxed);
        let calls = self.engine.calls() as u64;
        if calls != self.calls_published {
            st.calls.fetch_add(calls.wrapping_sub(self.calls_published), Ordering::Relaxed);
            self.calls_published = calls;
        }
        let skipped = self.engine.pacer_stats().skipped_frames;
        if skipped != self.skipped_published {
            st.skipped_frames.fetch_add(skipped - self.skipped_published, Ordering::Relaxed);
            self.skipped_published = skipped;
        }
    }
}

fn op_bytes(op: &RecordingOp) -> usize {
    match op {
        RecordingOp::Data { bytes, .. } => bytes.len(),
        _ => 0,
    }
}

/// Empties an eventfd or timerfd counter (non-blocking).
fn drain_counter(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: a valid fd and 8 writable bytes.
    unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
}

struct OpenRecording {
    file: Option<BufWriter<File>>,
    call: CallKey,
    path: PathBuf,
    bytes: u64,
}

/// The recording writer thread: the only place recordings touch the file system. It ends when every
/// media thread has dropped its sender.
fn write_recordings(rx: Receiver<RecordingOp>, events: UnboundedSender<MediaEvent>, stats: Arc<MediaStats>) {
    let mut open: HashMap<u64, OpenRecording> = HashMap::new();
    let fail = |r: &mut OpenRecording, e: std::io::Error| {
        tracing::warn!(call = r.call, path = %r.path.display(), error = %e, "recording failed");
        stats.recording_failures.fetch_add(1, Ordering::Relaxed);
        let _ = events.send(MediaEvent::Failed {
            call: r.call,
            failure: MediaFailure::Recording { path: r.path.clone(), kind: e.kind() },
        });
        r.file = None;
    };
    for op in rx {
        match op {
            RecordingOp::Start { id, call, path } => {
                let mut r = OpenRecording { file: None, call, path, bytes: 0 };
                let created = (|| {
                    if let Some(dir) = r.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)?;
                    }
                    let mut f = BufWriter::with_capacity(64 * 1024, File::create(&r.path)?);
                    f.write_all(&wav_header(0))?;
                    Ok::<_, std::io::Error>(f)
                })();
                match created {
                    Ok(f) => r.file = Some(f),
                    Err(e) => fail(&mut r, e),
                }
                open.insert(id, r);
            }
            RecordingOp::Data { id, bytes } => {
                let Some(r) = open.get_mut(&id) else { continue };
                let Some(f) = r.file.as_mut() else { continue };
                match f.write_all(&bytes) {
                    Ok(()) => r.bytes += bytes.len() as u64,
                    Err(e) => fail(r, e),
                }
            }
            RecordingOp::End { id, .. } => {
                let Some(mut r) = open.remove(&id) else { continue };
                let Some(mut f) = r.file.take() else { continue };
                let data_len = u32::try_from(r.bytes).unwrap_or(u32::MAX);
                let closed = (|| {
                    f.flush()?;
                    let mut file = f.into_inner().map_err(|e| e.into_error())?;
                    for (off, bytes) in patch_sizes(data_len) {
                        file.seek(SeekFrom::Start(off))?;
                        file.write_all(&bytes)?;
                    }
                    Ok(())
                })();
                match closed {
                    Ok(()) => {
                        stats.recordings_written.fetch_add(1, Ordering::Relaxed);
                        let seconds = (r.bytes / (4 * u64::from(crate::media::CLOCK_RATE))) as u32;
                        let _ = events.send(MediaEvent::Recorded { call: r.call, path: r.path.clone(), seconds });
                    }
                    Err(e) => fail(&mut r, e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The real media threads over loopback UDP: fake callers and agents are plain sockets.

    use super::*;
    use crate::media::bridge::LegMedia;
    use crate::media::g711;
    use crate::media::prompt::Prompt;
    use crate::media::rtp::{write_header, RtpHeader};
    use crate::media::sdp::Direction;
    use crate::media::Codec;
    use std::sync::Mutex;

    /// The /proc/self/fd test must not run beside the others of this module.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn tone(freq: f64, amp: f64, samples: usize, from: usize) -> Vec<i16> {
        (from..from + samples).map(|k| (amp * (2.0 * std::f64::consts::PI * freq * k as f64 / 8000.0).sin()) as i16).collect()
    }

    fn prompts() -> Arc<PromptSet> {
        let mut set = PromptSet::default();
        set.insert(Prompt::from_pcm("guidance", &tone(600.0, 8000.0, 8000, 0))); // 1 s
        set.insert(Prompt::from_pcm("music", &tone(300.0, 6000.0, 1600, 0)));
        set.insert(Prompt::from_pcm("menu", &tone(800.0, 6000.0, 40_000, 0))); // 5 s
        Arc::new(set)
    }

    /// Frequency of a tone from its zero crossings.
    fn frequency(pcm: &[i16]) -> f64 {
        let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        crossings as f64 / 2.0 / (pcm.len() as f64 / 8000.0)
    }

    /// An even port whose pair (port, port + 1) is free now.
    fn free_port_pair() -> u16 {
        loop {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = s.local_addr().unwrap().port();
            if p.is_multiple_of(2) && p < 65_000 {
                drop(s);
                if UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() && UdpSocket::bind(("127.0.0.1", p)).is_ok() {
                    return p;
                }
            }
        }
    }

    struct Peer {
        sock: UdpSocket,
    }

    impl Peer {
        fn new() -> Peer {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            Peer { sock }
        }
        fn addr(&self) -> SocketAddr {
            self.sock.local_addr().unwrap()
        }
        fn send(&self, to: u16, pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) {
            let mut h = [0u8; 12];
            write_header(&mut h, pt, false, seq, ts, ssrc);
            let mut p = h.to_vec();
            p.extend_from_slice(payload);
            self.sock.send_to(&p, ("127.0.0.1", to)).unwrap();
        }
        /// The datagrams waiting now (until none comes for 5 ms, at most for 200 ms): (header, payload).
        fn drain(&self, into: &mut Vec<(RtpHeader, Vec<u8>)>) {
            let mut buf = [0u8; 2048];
            let until = Instant::now() + Duration::from_millis(200);
            while let (true, Ok((n, _))) = (Instant::now() < until, self.sock.recv_from(&mut buf)) {
                if let Ok(h) = RtpHeader::parse(&buf[..n]) {
                    into.push((h, h.payload(&buf[..n]).to_vec()));
                }
            }
        }
    }

    struct Engine {
        tx: Option<MediaTx>,
        handle: Option<JoinHandle<()>>,
        rx: UnboundedReceiver<MediaEvent>,
        seen: Vec<MediaEvent>,
    }

    impl Engine {
        fn start(config: MediaConfig) -> Engine {
            // Tests share the machine with other tests: no real-time priority here.
            let config = MediaConfig { realtime_priority: None, ..config };
            let (tx, handle, rx) = spawn_with(prompts(), "127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), config).unwrap();
            Engine { tx: Some(tx), handle: Some(handle), rx, seen: Vec::new() }
        }
        fn send(&self, cmd: MediaCommand) {
            self.tx.as_ref().unwrap().send(cmd);
        }
        fn stats(&self) -> MediaStatsSnapshot {
            self.tx.as_ref().unwrap().stats()
        }
        fn poll(&mut self) {
            while let Ok(ev) = self.rx.try_recv() {
                self.seen.push(ev);
            }
        }
        /// Waits up to `within` for an event `pred` accepts.
        fn wait_for(&mut self, within: Duration, pred: impl Fn(&MediaEvent) -> bool) -> MediaEvent {
            let until = Instant::now() + within;
            loop {
                self.poll();
                if let Some(i) = self.seen.iter().position(&pred) {
                    return self.seen.remove(i);
                }
                assert!(Instant::now() < until, "event not seen within {within:?}; seen: {:?}", self.seen);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        fn stop(mut self) -> Vec<MediaEvent> {
            drop(self.tx.take());
            self.handle.take().unwrap().join().unwrap();
            self.poll();
            std::mem::take(&mut self.seen)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open(e: &Engine, call: u64, leg: Leg, port: u16, remote: SocketAddr, codec: Codec, ssrc: u32, seq: u16) {
        let media = LegMedia { remote: Some(remote), codec, audio_pt: codec.payload_type(), dtmf_pt: Some(101), ptime_ms: 20 };
        e.send(MediaCommand::Open { call, leg, local_port: port, media, direction: Direction::SendRecv, ssrc, seq, ts: 0 });
    }

    fn play(e: &Engine, call: u64, leg: Leg, name: &str, looped: bool, barge_in: bool) {
        e.send(MediaCommand::Play { call, leg, playlist: vec![name.into()], looped, barge_in });
    }

    fn assert_continuous(pkts: &[(RtpHeader, Vec<u8>)]) {
        for (k, w) in pkts.windows(2).enumerate() {
            assert_eq!(w[1].0.ssrc, w[0].0.ssrc, "SSRC changed at packet {k}");
            assert_eq!(w[1].0.seq, w[0].0.seq.wrapping_add(1), "sequence gap at packet {k}");
            assert!(w[1].0.timestamp.wrapping_sub(w[0].0.timestamp) < 0x8000_0000, "timestamp back at {k}");
        }
    }

    #[test]
    fn pcma_caller_and_pcmu_agent_hear_each_other_through_hold_and_resume() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = Engine::start(MediaConfig { threads: 2, ..MediaConfig::default() });
        let (caller, agent_sdp, agent) = (Peer::new(), Peer::new(), Peer::new());
        let (pa, pb) = (free_port_pair(), free_port_pair());
        let call = 41;
        open(&e, call, Leg::A, pa, caller.addr(), Codec::Pcma, 0xCA11, 1000);
        play(&e, call, Leg::A, "guidance", false, false);
        e.wait_for(Duration::from_secs(3), |ev| *ev == MediaEvent::Finished { call, leg: Leg::A });
        // The agent's SDP names one port but its RTP comes from another (NAT): callgate latches to it.
        open(&e, call, Leg::B, pb, agent_sdp.addr(), Codec::Pcmu, 0xB0B, 5000);
        e.send(MediaCommand::Relay { call, to_leg: Leg::A });
        e.send(MediaCommand::Relay { call, to_leg: Leg::B });
        let (mut at_caller, mut at_agent) = (Vec::new(), Vec::new());
        let talk = |frames: usize, start: usize, at_caller: &mut Vec<(RtpHeader, Vec<u8>)>, at_agent: &mut Vec<(RtpHeader, Vec<u8>)>| {
            let t0 = Instant::now();
            for i in 0..frames {
                let k = start + i;
                let a: Vec<u8> = tone(1000.0, 8000.0, 160, k * 160).iter().map(|&x| g711::linear_to_alaw(x)).collect();
                let b: Vec<u8> = tone(400.0, 8000.0, 160, k * 160).iter().map(|&x| g711::linear_to_ulaw(x)).collect();
                caller.send(pa, 8, k as u16, (k * 160) as u32, 0x1111, &a);
                agent.send(pb, 0, k as u16, (k * 160) as u32, 0x2222, &b);
                let next = t0 + Duration::from_millis(20 * (i as u64 + 1));
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                caller.drain(at_caller);
                agent.drain(at_agent);
            }
        };
        talk(50, 0, &mut at_caller, &mut at_agent);
        let latched = e.wait_for(Duration::from_secs(1), |ev| matches!(ev, MediaEvent::Latched { leg: Leg::B, .. }));
        assert_eq!(latched, MediaEvent::Latched { call, leg: Leg::B, addr: agent.addr() });
        // Before the agent's first packet the caller's went to the SDP address; after it, none.
        let mut sdp_got = Vec::new();
        agent_sdp.drain(&mut sdp_got);
        let to_sdp = sdp_got.len() as u16;
        assert!(to_sdp <= 3, "{to_sdp} packets to the SDP address");
        sdp_got.clear();
        // The agent hears the caller's 1 kHz tone, in μ-law, with its own stream identity.
        let voice: Vec<&(RtpHeader, Vec<u8>)> = at_agent.iter().filter(|(h, _)| h.payload_type == 0).collect();
        assert!(voice.len() >= 40, "{} packets reached the agent", voice.len());
        assert!(voice.iter().all(|(h, _)| h.ssrc == 0xB0B));
        assert_eq!(voice[0].0.seq, 5000 + to_sdp, "the stream continues from the packets sent to the SDP address");
        let pcm: Vec<i16> = voice.iter().flat_map(|(_, p)| p.iter().map(|&b| g711::ulaw_to_linear(b))).collect();
        let f = frequency(&pcm);
        assert!((f - 1000.0).abs() < 15.0, "the agent hears {f} Hz");
        // The caller hears the guidance (600 Hz), then the agent's 400 Hz in A-law.
        let relayed: Vec<i16> = at_caller.iter().filter(|(h, _)| h.seq >= 1050).flat_map(|(_, p)| p.iter().map(|&b| g711::alaw_to_linear(b))).collect();
        let f = frequency(&relayed);
        assert!((f - 400.0).abs() < 10.0, "the caller hears {f} Hz");
        // Hold (music to the caller) and resume.
        play(&e, call, Leg::A, "music", true, false);
        talk(25, 50, &mut at_caller, &mut at_agent);
        e.send(MediaCommand::Relay { call, to_leg: Leg::A });
        talk(25, 75, &mut at_caller, &mut at_agent);
        agent_sdp.drain(&mut sdp_got);
        assert!(sdp_got.is_empty(), "after latching nothing goes to the SDP address: {}", sdp_got.len());
        assert!(at_caller.len() >= 140, "{}", at_caller.len());
        assert_eq!(at_caller[0].0.seq, 1000);
        assert!(at_caller.iter().all(|(h, _)| h.ssrc == 0xCA11 && h.payload_type == 8));
        assert_continuous(&at_caller);
        let music: Vec<i16> = at_caller[at_caller.len() - 40..at_caller.len() - 30].iter().flat_map(|(_, p)| p.iter().map(|&b| g711::alaw_to_linear(b))).collect();
        let tail: Vec<i16> = at_caller[at_caller.len() - 10..].iter().flat_map(|(_, p)| p.iter().map(|&b| g711::alaw_to_linear(b))).collect();
        assert!((frequency(&tail) - 400.0).abs() < 25.0, "resumed: {} Hz", frequency(&tail));
        let _ = music;
        assert_continuous(&at_agent);
        e.send(MediaCommand::Stop { call });
        let stats = e.stats();
        // 100 frames each way, less the 25 the held caller did not hear.
        assert!((165..=175).contains(&stats.rtp_relayed), "{stats:?}");
        e.stop();
    }

    #[test]
    fn a_caller_who_sends_nothing_in_the_queue_is_reported_inactive() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = Engine::start(MediaConfig { inactivity: Duration::from_millis(300), threads: 1, ..MediaConfig::default() });
        let (silent, talker) = (Peer::new(), Peer::new());
        let (p1, p2) = (free_port_pair(), free_port_pair());
        open(&e, 1, Leg::A, p1, silent.addr(), Codec::Pcmu, 1, 1);
        open(&e, 2, Leg::A, p2, talker.addr(), Codec::Pcmu, 2, 1);
        play(&e, 1, Leg::A, "music", true, false);
        play(&e, 2, Leg::A, "music", true, false);
        let t0 = Instant::now();
        for i in 0..40u16 {
            talker.send(p2, 0, i, i as u32 * 160, 9, &[0xFF; 160]);
            std::thread::sleep(Duration::from_millis(20));
        }
        let ev = e.wait_for(Duration::from_millis(10), |ev| matches!(ev, MediaEvent::Inactive { .. }));
        assert_eq!(ev, MediaEvent::Inactive { call: 1, leg: Leg::A });
        assert!(t0.elapsed() >= Duration::from_millis(300));
        e.poll();
        assert!(!e.seen.iter().any(|ev| matches!(ev, MediaEvent::Inactive { call: 2, .. })), "{:?}", e.seen);
        e.wait_for(Duration::from_secs(1), |ev| *ev == MediaEvent::Inactive { call: 2, leg: Leg::A });
        e.stop();
    }

    #[test]
    fn a_key_on_a_barge_in_menu_stops_it_and_is_reported() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = Engine::start(MediaConfig { threads: 1, ..MediaConfig::default() });
        let caller = Peer::new();
        let p = free_port_pair();
        open(&e, 7, Leg::A, p, caller.addr(), Codec::Pcmu, 3, 1);
        play(&e, 7, Leg::A, "menu", false, true);
        std::thread::sleep(Duration::from_millis(300));
        for (i, end) in [(0u16, false), (1, false), (2, true), (3, true), (4, true)] {
            let ev = crate::media::dtmf::TelephoneEvent { event: 3, end, volume: 10, duration: 160 * (i.min(2) + 1) };
            caller.send(p, 101, 100 + i, 4000, 0x33, &ev.to_bytes());
        }
        e.wait_for(Duration::from_secs(1), |ev| *ev == MediaEvent::Digit { call: 7, leg: Leg::A, digit: '3' });
        let mut got = Vec::new();
        caller.drain(&mut got);
        std::thread::sleep(Duration::from_millis(200));
        let n = got.len();
        caller.drain(&mut got);
        assert_eq!(got.len(), n, "the menu stopped");
        assert!((10..30).contains(&n), "{n} packets of the menu before the key");
        e.poll();
        assert!(!e.seen.contains(&MediaEvent::Finished { call: 7, leg: Leg::A }));
        e.send(MediaCommand::Stop { call: 7 });
        e.stop();
    }

    #[test]
    fn the_recording_has_the_caller_on_the_left_and_the_agent_on_the_right() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = std::env::temp_dir().join(format!("callgate-rec-{}", std::process::id()));
        let path = dir.join("sub").join("call-9.wav");
        let mut e = Engine::start(MediaConfig { threads: 1, ..MediaConfig::default() });
        let (caller, agent) = (Peer::new(), Peer::new());
        let (pa, pb) = (free_port_pair(), free_port_pair());
        open(&e, 9, Leg::A, pa, caller.addr(), Codec::Pcma, 1, 1);
        open(&e, 9, Leg::B, pb, agent.addr(), Codec::Pcmu, 2, 1);
        e.send(MediaCommand::Relay { call: 9, to_leg: Leg::A });
        e.send(MediaCommand::Relay { call: 9, to_leg: Leg::B });
        e.send(MediaCommand::Record { call: 9, path: path.clone() });
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        for k in 0..100usize {
            let a: Vec<u8> = tone(1000.0, 8000.0, 160, k * 160).iter().map(|&x| g711::linear_to_alaw(x)).collect();
            let b: Vec<u8> = tone(400.0, 8000.0, 160, k * 160).iter().map(|&x| g711::linear_to_ulaw(x)).collect();
            caller.send(pa, 8, k as u16, (k * 160) as u32, 0x1111, &a);
            agent.send(pb, 0, k as u16, (k * 160) as u32, 0x2222, &b);
            std::thread::sleep((t0 + Duration::from_millis(20 * (k as u64 + 1))).saturating_duration_since(Instant::now()));
        }
        e.send(MediaCommand::Stop { call: 9 });
        let ev = e.wait_for(Duration::from_secs(2), |ev| matches!(ev, MediaEvent::Recorded { .. }));
        assert_eq!(ev, MediaEvent::Recorded { call: 9, path: path.clone(), seconds: 2 });
        let wav = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()) as usize, wav.len() - 44, "sizes patched");
        assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 2, "stereo");
        let frames: Vec<(i16, i16)> =
            wav[44..].chunks_exact(4).map(|c| (i16::from_le_bytes([c[0], c[1]]), i16::from_le_bytes([c[2], c[3]]))).collect();
        assert!(frames.len() >= 15_000, "{} frames", frames.len());
        // The middle second: each side's tone on its own channel.
        let mid = &frames[4000..12_000];
        let left: Vec<i16> = mid.iter().map(|f| f.0).collect();
        let right: Vec<i16> = mid.iter().map(|f| f.1).collect();
        assert!((frequency(&left) - 1000.0).abs() < 20.0, "left {} Hz", frequency(&left));
        assert!((frequency(&right) - 400.0).abs() < 20.0, "right {} Hz", frequency(&right));
        assert!(e.stats().recordings_written >= 1);
        e.stop();
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// The scheduling policy of this process's thread named `name` (41st field of its stat).
    fn policy_of(name: &str) -> Option<i32> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the command name in parentheses (which may hold spaces): state is the 3rd.
            let rest = &stat[stat.rfind(')')? + 2..];
            return rest.split(' ').nth(38)?.parse().ok();
        }
        None
    }

    fn policies_settle(pacer: i32, io: i32) -> (Option<i32>, Option<i32>) {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let got = (policy_of("callgate-pacer0"), policy_of("callgate-media0"));
            if got == (Some(pacer), Some(io)) || Instant::now() > until {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_pacer_thread_runs_real_time_and_the_relaying_thread_does_not() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        // Real-time priority needs CAP_SYS_NICE (CI runs as root); without it both threads stay
        // under normal scheduling, which is what is checked then.
        let root = unsafe { libc::geteuid() } == 0;
        let rr = if root { libc::SCHED_RR } else { libc::SCHED_OTHER };
        for relay_realtime in [false, true] {
            let config = MediaConfig { threads: 1, realtime_priority: Some(10), relay_realtime, ..MediaConfig::default() };
            let (tx, handle, _rx) = spawn_with(prompts(), "127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), config).unwrap();
            let io = if relay_realtime { rr } else { libc::SCHED_OTHER };
            assert_eq!(policies_settle(rr, io), (Some(rr), Some(io)), "relay_realtime {relay_realtime}, root {root}");
            drop(tx);
            handle.join().unwrap();
        }
    }

    #[test]
    fn a_thousand_calls_stopped_leave_no_socket_behind() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = Engine::start(MediaConfig { threads: 2, ..MediaConfig::default() });
        let peer = Peer::new();
        let before = open_fds();
        let base = 1_000_000u64;
        for call in base..base + 1000 {
            // Port 0: any free RTP port (no RTCP then); two legs per call.
            let media = LegMedia { remote: Some(peer.addr()), codec: Codec::Pcmu, audio_pt: 0, dtmf_pt: None, ptime_ms: 20 };
            for leg in Leg::BOTH {
                e.send(MediaCommand::Open { call, leg, local_port: 0, media, direction: Direction::SendRecv, ssrc: 1, seq: 1, ts: 1 });
            }
            play(&e, call, Leg::A, "music", true, false);
            e.send(MediaCommand::Relay { call, to_leg: Leg::B });
        }
        let until = Instant::now() + Duration::from_secs(10);
        while e.stats().sockets < 2000 {
            assert!(Instant::now() < until, "{:?}", e.stats());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(open_fds() >= before + 2000);
        std::thread::sleep(Duration::from_millis(100));
        let mut got = Vec::new();
        peer.drain(&mut got);
        assert!(got.len() >= 1000, "music reaches the peer: {}", got.len());
        for call in base..base + 1000 {
            e.send(MediaCommand::Stop { call });
        }
        let until = Instant::now() + Duration::from_secs(10);
        while e.stats().sockets > 0 || e.stats().calls > 0 {
            assert!(Instant::now() < until, "{:?}", e.stats());
            std::thread::sleep(Duration::from_millis(10));
        }
        // (Other tests of this process may open a few files meanwhile; 2,000 would be ours.)
        let after = open_fds();
        assert!(after < before + 100, "fds before {before}, after {after}");
        std::thread::sleep(Duration::from_millis(60));
        peer.drain(&mut Vec::new());
        std::thread::sleep(Duration::from_millis(60));
        let mut late = Vec::new();
        peer.drain(&mut late);
        assert!(late.is_empty(), "{} packets after Stop", late.len());
        e.poll();
        assert!(!e.seen.iter().any(|ev| matches!(ev, MediaEvent::Failed { .. })), "{:?}", &e.seen[..e.seen.len().min(3)]);
        e.stop();
    }

    #[test]
    fn rtcp_is_read_and_counted_and_an_unwritable_recording_is_reported() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = Engine::start(MediaConfig { threads: 1, ..MediaConfig::default() });
        let caller = Peer::new();
        let p = free_port_pair();
        open(&e, 3, Leg::A, p, caller.addr(), Codec::Pcmu, 1, 1);
        // A receiver report (PT 201) on the RTCP port, and one on the RTP port (RFC 5761 style).
        let rr = [0x81u8, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let until = Instant::now() + Duration::from_secs(2);
        while e.stats().sockets < 2 {
            assert!(Instant::now() < until);
            std::thread::sleep(Duration::from_millis(5));
        }
        caller.sock.send_to(&rr, ("127.0.0.1", p + 1)).unwrap();
        caller.sock.send_to(&rr, ("127.0.0.1", p)).unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        while e.stats().rtcp_received < 1 || e.stats().rtp_invalid < 1 {
            assert!(Instant::now() < until, "{:?}", e.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        // A recording whose directory cannot be created: Failed, and no Recorded.
        let path = PathBuf::from("/proc/callgate-no-such-dir/rec.wav");
        e.send(MediaCommand::Record { call: 3, path: path.clone() });
        let ev = e.wait_for(Duration::from_secs(2), |ev| matches!(ev, MediaEvent::Failed { .. }));
        let MediaEvent::Failed { call: 3, failure: MediaFailure::Recording { path: p2, .. } } = ev else { panic!("{ev:?}") };
        assert_eq!(p2, path);
        e.send(MediaCommand::Stop { call: 3 });
        let rest = e.stop();
        assert!(!rest.iter().any(|ev| matches!(ev, MediaEvent::Recorded { .. })), "{rest:?}");
    }
}
