//! The runtime shell: the one module that owns sockets, tasks, threads and timers.
//!
//! ```text
//!               ┌── sip thread: current-thread runtime ──┐
//!  UDP :5060 ──▶│ sip task: owns the call Core           │──▶ UDP (sendmmsg per flush) / TCP writes
//!  (recvmmsg)   │  (one timer: Core::poll_timeout)       │──▶ records ──▶ writer thread ──▶ SQLite
//!               └────────────────────────────────────────┘──▶ media commands ─┐
//!               ┌── tokio runtime (1 worker) ────────────┐                    ▼
//!  TCP :5060 ──▶│ reader/writer per connection ─channel─▶│ sip task    media thread: the Pacer (one
//!               │ http task: /metrics, /healthz; signals │             slot ring for every stream)
//!               └────────────────────────────────────────┘
//!                         ▲ media events (prompt finished) ◀──── media thread
//! ```
//! The sip task polls its own UDP socket and timers on its own thread, so no datagram's
//! readiness is handed between threads; everything else talks to it over channels.
//! Shutdown (SIGTERM/Ctrl-C): the core answers new calls 503 and ends calls in progress with
//! BYE (after the caller's ACK where it is still due); when no call is left and every BYE/CANCEL
//! has its answer (or after a 5 s grace period) the tasks stop, the
//! media thread ends, the record writer drains into SQLite, and the latency summary is printed.

pub mod cti;
pub mod http;
pub mod media;
mod pi;
mod redo;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::call::{Core, CoreError, MediaEvent, Output};
use crate::config::{ConfigError, Profile};
use crate::media::prompt::PromptSet;
use crate::media::MediaError;
use crate::metrics::{Counter, Metrics};
use crate::records::{RecordSink, RecordWriter, RecordsError};
use crate::sip::{Peer, Transmit, Transport};

/// How the shell was asked to run: a profile and the command line's overrides.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub profile: PathBuf,
    pub sip: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub db: Option<PathBuf>,
}

/// Why the edge could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum EdgeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("loading prompts: {0}")]
    Media(#[from] MediaError),
    #[error("call records: {0}")]
    Records(#[from] RecordsError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("CTI socket: {0}")]
    Cti(std::io::Error),
}

/// How long calls get to end after a shutdown signal before the edge stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Loads the profile, applies the overrides and runs until a shutdown signal.
pub fn run(opts: Options) -> Result<(), EdgeError> {
    let mut profile = Profile::load(&opts.profile)?;
    if let Some(sip) = opts.sip {
        // The media address defaults to the SIP address's IP: follow the override when it did.
        if profile.media.address == profile.listen.sip.ip() && !sip.ip().is_unspecified() {
            profile.media.address = sip.ip();
        }
        profile.listen.sip = sip;
    }
    if let Some(http) = opts.http {
        profile.listen.http = http;
    }
    if let Some(db) = &opts.db {
        profile.records.database = db.clone();
    }
    let profile = Arc::new(profile);
    // The profile's prompts (each must exist), and the ones callgate composes itself when their
    // files are there: position and expected-wait announcements, callback offers and confirmations,
    // the music of queues that name none.
    let mut names = profile.prompt_names();
    let optional = crate::media::announce::prompt_names().into_iter().chain(
        ["callback-offer-ko", "callback-offer-en", "callback-confirm-ko", "callback-confirm-en", "music"].map(String::from),
    );
    for n in optional {
        if !names.contains(&n) && profile.prompt_path(&n).is_file() {
            names.push(n);
        }
    }
    let prompts = Arc::new(PromptSet::load(&profile.audio_dir, &names)?);
    let durations: HashMap<String, Duration> =
        names.into_iter().filter_map(|n| prompts.get(&n).map(|p| (n, p.duration()))).collect();
    let metrics = Arc::new(Metrics::new());
    let writer = RecordWriter::open(&profile.records.database)?;
    // Rows a crashed run had not committed yet: into the database before anything else.
    let redo_path = redo::Redo::path_for(&profile.records.database);
    let replayed = redo::Redo::replay(&redo_path, &writer.sink());
    if replayed > 0 {
        let flushed = writer.flush(Duration::from_secs(30));
        tracing::info!(rows = replayed, ok = flushed.is_ok(), "replayed the records' redo log of the previous run");
        flushed?;
    }
    let mut redo = redo::Redo::open(redo_path);
    redo.clear();
    let mut core = Core::new(
        profile.clone(),
        metrics.clone(),
        durations,
        entropy_seed(),
        Instant::now(),
        SystemTime::now(),
    )?;
    // Callbacks citizens asked for before a restart keep their places.
    match crate::records::read_callbacks(&profile.records.database) {
        Ok(stored) => {
            if !stored.is_empty() {
                tracing::info!(callbacks = stored.len(), "restoring pending callbacks");
            }
            core.restore_callbacks(Instant::now(), stored);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read pending callbacks"),
    }
    seed_statistics(&mut core, &profile);

    // Two runtimes. The sip task runs alone on a current-thread runtime on this thread: it
    // polls its own UDP socket and timers, so a datagram's readiness never has to be handed
    // from a worker thread to another one. TCP connections, HTTP and signals run on a
    // multi-thread runtime beside it, and talk to the sip task over channels.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(AUX_WORKERS)
        .enable_all()
        .thread_name("callgate")
        .build()
        .map_err(EdgeError::Runtime)?;
    let sip_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(EdgeError::Runtime)?;

    let (media_tx, media_thread, media_events) =
        media::spawn_with_inactivity(prompts, profile.media.address, metrics.clone(), profile.media.inactivity())
            .map_err(EdgeError::Runtime)?;
    let sink = writer.sink();
    let aux = rt.handle().clone();
    let result = sip_rt.block_on(serve(profile.clone(), core, metrics.clone(), media_tx, media_events, sink, aux, redo));
    // The sip task has ended: every command has been sent; the media thread ends when its queue closes.
    let _ = media_thread.join();
    sip_rt.shutdown_timeout(Duration::from_secs(1));
    rt.shutdown_timeout(Duration::from_secs(1));
    let redo_path = redo::Redo::path_for(&profile.records.database);
    let written = writer.close()?;
    // Everything is committed: nothing to replay next time.
    let _ = std::fs::OpenOptions::new().write(true).truncate(true).open(&redo_path);
    tracing::info!(records = written, "call records flushed");
    eprintln!("{}", metrics.summary());
    result
}

/// Today's figures and the last 7 days' callers come from the records, so that the live statistics,
/// the wallboard and the repeat-caller count go on across a restart.
fn seed_statistics(core: &mut Core, profile: &Profile) {
    let reader = match crate::records::RecordsReader::open(&profile.records.database) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the records for today's statistics");
            return;
        }
    };
    let now_ms = SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    for t in &profile.tenants {
        let day = crate::stats::Date::of(now_ms, t.utc_offset_min);
        if let Err(e) = reader.load_day(core.stats_mut(), &t.id, day) {
            tracing::warn!(tenant = %t.id, error = %e, "cannot load today's statistics");
        }
        match reader.contacts(now_ms - 7 * crate::stats::DAY_MS..now_ms + 1, Some(&t.id)) {
            Ok(contacts) => {
                for c in contacts {
                    core.note_contact(&c.tenant, &c.caller, c.at_ms);
                }
            }
            Err(e) => tracing::warn!(tenant = %t.id, error = %e, "cannot load the last week's callers"),
        }
    }
}

/// Deletes recordings older than their tenant's retention (`recording_retention_days`; 0 keeps
/// them), once at start and then every hour, on the aux runtime's blocking pool.
async fn sweep_recordings(profile: Arc<Profile>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let p = profile.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for t in &p.tenants {
                let days = t.recording_retention_days;
                if days == 0 {
                    continue;
                }
                let dir = p.recordings_dir_for(t);
                let Ok(rd) = std::fs::read_dir(&dir) else { continue };
                let limit = Duration::from_secs(u64::from(days) * 86_400);
                let mut removed = 0;
                for e in rd.flatten() {
                    let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|m| m.elapsed().ok()).is_some_and(|age| age > limit);
                    if old && e.path().extension().is_some_and(|x| x == "wav") && std::fs::remove_file(e.path()).is_ok() {
                        removed += 1;
                    }
                }
                if removed > 0 {
                    tracing::info!(tenant = %t.id, removed, days, "recordings past their retention deleted");
                }
            }
        })
        .await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Workers of the runtime beside the sip task's (TCP connections, HTTP, signals).
const AUX_WORKERS: usize = 1;

#[allow(clippy::too_many_arguments)]
async fn serve(
    profile: Arc<Profile>,
    core: Core,
    metrics: Arc<Metrics>,
    media_tx: media::MediaTx,
    media_events: mpsc::UnboundedReceiver<MediaEvent>,
    sink: RecordSink,
    aux: tokio::runtime::Handle,
    redo: redo::Redo,
) -> Result<(), EdgeError> {
    let sip_addr = profile.listen.sip;
    // Registered with this (the sip task's) runtime.
    let udp = bind_udp(sip_addr).map_err(|source| EdgeError::Bind { what: "SIP/UDP", addr: sip_addr, source })?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // The CTI server: WebSocket on the HTTP address (GET /cti) and JSON lines on a Unix socket.
    let db = &profile.records.database;
    let socket = if db.to_string_lossy().contains('=') || db.to_string_lossy().contains("://") {
        PathBuf::from("var/callgate-cti.sock")
    } else {
        cti::CtiShellConfig::default_socket(db)
    };
    // A Unix socket path holds at most 107 bytes (sun_path): beyond that the CTI is WebSocket only.
    let unix_socket = if socket.as_os_str().len() < 100 {
        Some(socket)
    } else {
        tracing::warn!(path = %socket.display(), "CTI Unix socket path too long for sun_path: CTI on WebSocket only");
        None
    };
    let (cti_shell, cti_rx) =
        cti::CtiShell::spawn(&aux, cti::CtiShellConfig { unix_socket, tcp: profile.listen.cti_tcp, ..Default::default() }, shutdown_rx.clone())
            .map_err(EdgeError::Cti)?;
    let unix_ms = SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let mut hub = crate::cti::Hub::new(Core::cti_principals(&profile), crate::cti::HubConfig::new(Instant::now(), unix_ms));
    hub.set_directory(core.cti_directory());
    let live = Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    let (tcp_in_tx, tcp_in_rx) = mpsc::channel::<(Bytes, Peer)>(4096);
    let conns = tcp::Conns::new(tcp_in_tx.clone(), profile.limits.max_message_bytes, metrics.clone());
    // Everything else is bound and runs on the other runtime.
    let http_task = {
        let (profile, conns, metrics, shutdown_rx) = (profile.clone(), conns.clone(), metrics.clone(), shutdown_rx.clone());
        let (cti_shell, live) = (cti_shell.clone(), live.clone());
        aux.spawn(async move {
            if profile.listen.transports.contains(&Transport::Tcp) {
                let listener = tokio::net::TcpListener::bind(sip_addr)
                    .await
                    .map_err(|source| EdgeError::Bind { what: "SIP/TCP", addr: sip_addr, source })?;
                tokio::spawn(tcp::accept_loop(listener, conns, shutdown_rx.clone()));
            }
            let http_addr = profile.listen.http;
            let http = tokio::net::TcpListener::bind(http_addr)
                .await
                .map_err(|source| EdgeError::Bind { what: "HTTP", addr: http_addr, source })?;
            tokio::spawn(sweep_recordings(profile.clone(), shutdown_rx.clone()));
            let stats = http::StatsSource { live, database: profile.records.database.clone(), profile: profile.clone() };
            let http_task = tokio::spawn(http::serve_with_cti_stats(
                http,
                metrics,
                http::HttpConfig::default(),
                Some(cti_shell),
                Some(stats),
                shutdown_rx,
            ));
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutdown requested: refusing new calls, ending calls in progress");
                let _ = shutdown_tx.send(true);
            });
            Ok::<_, EdgeError>(http_task)
        })
        .await
        .map_err(|e| EdgeError::Runtime(std::io::Error::other(e)))??
    };

    eprintln!(
        "callgate ready sip={} ({}) http={} profile={}",
        sip_addr,
        profile.listen.transports.iter().map(|t| t.as_via()).collect::<Vec<_>>().join(","),
        profile.listen.http,
        profile.dir.display()
    );
    let shell = SipShell { udp, conns, media_tx, sink, metrics, aux, cti: cti_shell, live, redo: std::cell::RefCell::new(redo) };
    shell.run(core, hub, cti_rx, tcp_in_rx, media_events, shutdown_rx).await;
    drop(tcp_in_tx);
    let _ = http_task.await;
    Ok(())
}

/// A seed for the core's RNG (tags, branches, SSRCs): the clock, the process id and an address.
/// Only the shell reads clocks; tests seed the cores themselves.
fn entropy_seed() -> u64 {
    let t = SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let here = &t as *const u64 as u64;
    t ^ (u64::from(std::process::id()) << 32) ^ here.rotate_left(17)
}

/// The SIP UDP socket, with large kernel buffers (`SO_RCVBUFFORCE` where allowed, else as much
/// as `net.core.rmem_max` permits).
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    force_buffer(&sock, libc::SO_RCVBUFFORCE, SIP_SOCKET_BUFFER).or_else(|_| sock.set_recv_buffer_size(SIP_SOCKET_BUFFER))?;
    force_buffer(&sock, libc::SO_SNDBUFFORCE, SIP_SOCKET_BUFFER).or_else(|_| sock.set_send_buffer_size(SIP_SOCKET_BUFFER))?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// `SO_RCVBUFFORCE` / `SO_SNDBUFFORCE`: beyond the sysctl limit, for a privileged process.
fn force_buffer(sock: &socket2::Socket, opt: libc::c_int, size: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = size as libc::c_int;
    // SAFETY: a valid socket fd and a pointer to an int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The sip task's I/O side: where the core's outputs go.
struct SipShell {
    udp: UdpSocket,
    conns: tcp::Conns,
    media_tx: media::MediaTx,
    sink: RecordSink,
    metrics: Arc<Metrics>,
    /// The runtime of the TCP connections: new outgoing ones are started there.
    aux: tokio::runtime::Handle,
    /// The CTI connections (the hub itself lives in `run`, beside the core).
    cti: cti::CtiShell,
    /// The latest live statistics, for `GET /stats/live` (refreshed once a second).
    live: Arc<std::sync::Mutex<serde_json::Value>>,
    /// Records and queue rows are written here before the datagrams that end their calls leave.
    redo: std::cell::RefCell<redo::Redo>,
}

/// Datagrams read in one go before the core's outputs are flushed.
const UDP_BATCH: usize = udp::BATCH;
/// How long receive batches must come back full (the socket never drained) before the input
/// counts as backlogged: new calls are then refused with 503 until a batch comes up short. Short
/// bursts do not trip it; an edge that cannot keep up does, within this time.
const BACKLOG_AFTER: Duration = Duration::from_millis(100);
/// Socket buffers for the SIP UDP socket: bursts of thousands of datagrams must not be dropped
/// by the kernel while the sip task is busy.
const SIP_SOCKET_BUFFER: usize = 8 << 20;

impl SipShell {
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        mut core: Core,
        mut hub: crate::cti::Hub,
        mut cti_rx: mpsc::UnboundedReceiver<cti::CtiIn>,
        mut tcp_in: mpsc::Receiver<(Bytes, Peer)>,
        mut media_events: mpsc::UnboundedReceiver<MediaEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut rx = udp::RecvBatch::new();
        let mut tx = Flush::default();
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        let sleep = tokio::time::sleep_until(far);
        tokio::pin!(sleep);
        let cti_sleep = tokio::time::sleep_until(far);
        tokio::pin!(cti_sleep);
        let mut live_tick = tokio::time::interval(Duration::from_secs(1));
        live_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining_since: Option<Instant> = None;
        let mut full_since: Option<Instant> = None;
        loop {
            let deadline = core.poll_timeout().map(tokio::time::Instant::from_std).unwrap_or(far);
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            let d = hub.poll_timeout().map(tokio::time::Instant::from_std).unwrap_or(far);
            if cti_sleep.deadline() != d {
                cti_sleep.as_mut().reset(d);
            }
            tokio::select! {
                r = udp::recv_batch(&self.udp, &mut rx) => {
                    match r {
                        Ok(got) => {
                            let now = Instant::now();
                            // Each datagram's arrival instant is taken when the core gets it, as
                            // when they were read one by one (the latency marks start there).
                            for (data, from) in rx.datagrams() {
                                core.handle_datagram(Instant::now(), data, Peer::udp(from));
                            }
                            if got == UDP_BATCH {
                                let since = *full_since.get_or_insert(now);
                                core.set_backlogged(now.duration_since(since) >= BACKLOG_AFTER);
                            } else {
                                full_since = None;
                                core.set_backlogged(false);
                            }
                        }
                        // ICMP errors from earlier sends surface here on Linux; the socket stays up.
                        Err(e) => tracing::debug!(error = %e, "UDP receive error"),
                    }
                }
                Some((data, peer)) = tcp_in.recv() => core.handle_datagram(Instant::now(), data, peer),
                Some(ev) = media_events.recv() => core.handle_media(Instant::now(), ev),
                _ = &mut sleep => core.handle_timeout(Instant::now()),
                Some(m) = cti_rx.recv() => {
                    let now = Instant::now();
                    m.apply(&mut hub, now);
                    while let Ok(m) = cti_rx.try_recv() {
                        m.apply(&mut hub, now);
                    }
                }
                _ = &mut cti_sleep => hub.handle_timeout(Instant::now()),
                _ = live_tick.tick() => {
                    let hs = hub.stats();
                    for (c, n) in [
                        (Counter::CtiRateLimited, hs.rate_limited),
                        (Counter::CtiFloods, hs.floods),
                        (Counter::CtiSlowConsumers, hs.slow_consumers),
                        (Counter::CtiForbidden, hs.forbidden),
                        (Counter::CtiAuthFailures, hs.auth_failures),
                    ] {
                        self.metrics.set_total(c, n);
                    }
                    self.metrics.set_cti_connections(hs.connections);
                    let v = core.live_json(Instant::now());
                    if let Ok(mut l) = self.live.lock() {
                        *l = v;
                    }
                    // Everything submitted so far is committed: the redo log can be emptied.
                    if self.sink.stats().queued() == 0 {
                        self.redo.borrow_mut().clear();
                    }
                }
                // While draining, wake up to check whether the edge may stop.
                _ = tokio::time::sleep(Duration::from_millis(100)), if draining_since.is_some() => {}
                r = shutdown.changed(), if draining_since.is_none() => {
                    if r.is_err() || *shutdown.borrow() {
                        let now = Instant::now();
                        draining_since = Some(now);
                        core.shutdown(now);
                    }
                }
            }
            self.flush(&mut core, &mut hub, &mut tx).await;
            if let Some(since) = draining_since {
                // Done when no call is left and every BYE/CANCEL has its answer, or at the grace's end.
                if (core.active_calls() == 0 && core.awaiting_answers() == 0) || since.elapsed() > SHUTDOWN_GRACE {
                    break;
                }
            }
        }
        hub.close_all();
        let _ = self.cti.pump(&mut hub);
    }

    /// Drains the core's outputs: UDP datagrams are collected and sent in batches at the end
    /// (one `sendmmsg` per [`udp::BATCH`] on Linux); their latency marks are recorded once sent.
    async fn flush(&self, core: &mut Core, hub: &mut crate::cti::Hub, f: &mut Flush) {
        f.udp.clear();
        loop {
            // CTI: the hub's messages go to the connections in one batch; its commands come back.
            let commands = self.cti.pump(hub);
            let n = commands.len();
            for ex in commands {
                let since = Instant::now();
                let r = core.cti_execute(since, &ex.principal, ex.command);
                hub.command_result(ex.conn, &ex.id, r);
                self.metrics.record(crate::metrics::Stage::CtiCommand, since.elapsed());
            }
            let mut produced = false;
            while let Some(out) = core.poll_output() {
                produced = true;
                self.output(out, hub, f);
            }
            if n == 0 && !produced {
                break;
            }
        }
        // The rows of calls that ended in this flush reach the redo log before the datagrams
        // that end them leave (see redo.rs).
        self.redo.borrow_mut().flush();
        for (peer, data) in f.tcp.drain(..) {
            // A new connection's tasks belong on the TCP runtime.
            let _rt = self.aux.enter();
            self.conns.send(peer, data);
        }
        for mark in f.tcp_marks.drain(..) {
            self.metrics.record(mark.stage, mark.since.elapsed());
        }
        if f.udp.is_empty() {
            return;
        }
        {
            let out: Vec<(&[u8], SocketAddr)> = f.udp.iter().map(|t| (&t.data[..], t.peer.addr)).collect();
            udp::send_all(&self.udp, &mut f.scratch, &out).await;
        }
        for t in f.udp.drain(..) {
            if let Some(mark) = t.mark {
                self.metrics.record(mark.stage, mark.since.elapsed());
            }
        }
    }

    fn output(&self, out: Output, hub: &mut crate::cti::Hub, f: &mut Flush) {
        {
            match out {
                Output::Transmit(t) => {
                    self.metrics.inc(Counter::SipOut);
                    match t.peer.transport {
                        Transport::Udp => f.udp.push(t),
                        Transport::Tcp => {
                            f.tcp.push((t.peer, t.data));
                            if let Some(mark) = t.mark {
                                f.tcp_marks.push(mark);
                            }
                        }
                    }
                }
                Output::Media(cmd) => {
                    self.media_tx.send(cmd);
                }
                Output::Record(rec) => {
                    self.redo.borrow_mut().append_call(&rec);
                    self.sink.submit(rec);
                }
                Output::QueueLog(ev) => {
                    self.redo.borrow_mut().append_queue(&ev);
                    self.sink.submit_queue(ev);
                }
                Output::CallbackStore(cb) => self.sink.upsert_callback(cb),
                Output::CallbackDelete(id) => self.sink.delete_callback(id),
                Output::Measured(mark) => self.metrics.record(mark.stage, mark.since.elapsed()),
                Output::Cti(ev) => hub.publish(Instant::now(), ev),
            }
        }
    }
}

/// The sip task's per-flush scratch space, reused.
#[derive(Default)]
struct Flush {
    udp: Vec<Transmit>,
    /// Stream sends, made after the redo log is written (like the UDP batch).
    tcp: Vec<(Peer, Bytes)>,
    tcp_marks: Vec<crate::metrics::Mark>,
    scratch: udp::SendBatch,
}
