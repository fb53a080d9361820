//! The runtime shell: the one module that owns sockets, tasks, threads and timers.
//!
//! ```text
//!               ┌──────────── tokio runtime ────────────┐
//!  UDP :5060 ──▶│ sip task: owns the call Core          │──▶ UDP / TCP writes
//!  TCP :5060 ──▶│  (one timer: Core::poll_timeout)       │──▶ records ──▶ writer thread ──▶ SQLite
//!  (reader per  │                                        │──▶ media commands ─┐
//!   connection) │ http task: /metrics, /healthz          │                    ▼
//!               └────────────────────────────────────────┘     media thread: the Pacer (one
//!                         ▲ media events (prompt finished) ◀──── slot ring for every stream)
//! ```
//! Shutdown (SIGTERM/Ctrl-C): the core answers new calls 503 and ends calls in progress with
//! BYE; when no call and no transaction is left (or after a grace period) the tasks stop, the
//! media thread ends, the record writer drains into SQLite, and the latency summary is printed.

pub mod http;
mod media;
mod tcp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::call::{Core, CoreError, MediaCommand, MediaEvent, Output};
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
    let prompts = Arc::new(PromptSet::load(&profile.audio_dir, &profile.prompt_names())?);
    let durations: HashMap<String, Duration> =
        profile.prompt_names().into_iter().filter_map(|n| prompts.get(&n).map(|p| (n, p.duration()))).collect();
    let metrics = Arc::new(Metrics::new());
    let writer = RecordWriter::open(&profile.records.database)?;
    let core = Core::new(
        profile.clone(),
        metrics.clone(),
        durations,
        entropy_seed(),
        Instant::now(),
        SystemTime::now(),
    )?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("callgate")
        .build()
        .map_err(EdgeError::Runtime)?;

    let (media_tx, media_thread, media_events) = media::spawn(prompts, profile.media.address, metrics.clone());
    let sink = writer.sink();
    let result = rt.block_on(serve(profile.clone(), core, metrics.clone(), media_tx, media_events, sink));
    // The sip task has ended: every command has been sent; the media thread ends when its queue closes.
    let _ = media_thread.join();
    rt.shutdown_timeout(Duration::from_secs(1));
    let written = writer.close()?;
    tracing::info!(records = written, "call records flushed");
    eprintln!("{}", metrics.summary());
    result
}

async fn serve(
    profile: Arc<Profile>,
    core: Core,
    metrics: Arc<Metrics>,
    media_tx: std::sync::mpsc::Sender<MediaCommand>,
    media_events: mpsc::UnboundedReceiver<MediaEvent>,
    sink: RecordSink,
) -> Result<(), EdgeError> {
    let sip_addr = profile.listen.sip;
    let udp = bind_udp(sip_addr).map_err(|source| EdgeError::Bind { what: "SIP/UDP", addr: sip_addr, source })?;
    let udp = Arc::new(udp);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (tcp_in_tx, tcp_in_rx) = mpsc::channel::<(Bytes, Peer)>(4096);
    let conns = tcp::Conns::new(tcp_in_tx.clone(), profile.limits.max_message_bytes, metrics.clone());
    if profile.listen.transports.contains(&Transport::Tcp) {
        let listener = tokio::net::TcpListener::bind(sip_addr)
            .await
            .map_err(|source| EdgeError::Bind { what: "SIP/TCP", addr: sip_addr, source })?;
        tokio::spawn(tcp::accept_loop(listener, conns.clone(), shutdown_rx.clone()));
    }
    let http_addr = profile.listen.http;
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| EdgeError::Bind { what: "HTTP", addr: http_addr, source })?;
    let http_task = tokio::spawn(http::serve(http, metrics.clone(), shutdown_rx.clone()));

    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: refusing new calls, ending calls in progress");
        let _ = shutdown_tx.send(true);
    });

    eprintln!(
        "callgate ready sip={} ({}) http={} profile={}",
        sip_addr,
        profile.listen.transports.iter().map(|t| t.as_via()).collect::<Vec<_>>().join(","),
        http_addr,
        profile.dir.display()
    );
    let shell = SipShell { udp, conns, media_tx, sink, metrics };
    shell.run(core, tcp_in_rx, media_events, shutdown_rx).await;
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
    udp: Arc<UdpSocket>,
    conns: tcp::Conns,
    media_tx: std::sync::mpsc::Sender<MediaCommand>,
    sink: RecordSink,
    metrics: Arc<Metrics>,
}

/// Datagrams read in one go before the core's outputs are flushed.
const UDP_BATCH: usize = 64;
/// How long receive batches must come back full (the socket never drained) before the input
/// counts as backlogged: new calls are then refused with 503 until a batch comes up short. Short
/// bursts do not trip it; an edge that cannot keep up does, within this time.
const BACKLOG_AFTER: Duration = Duration::from_millis(100);
/// Socket buffers for the SIP UDP socket: bursts of thousands of datagrams must not be dropped
/// by the kernel while the sip task is busy.
const SIP_SOCKET_BUFFER: usize = 8 << 20;

impl SipShell {
    async fn run(
        &self,
        mut core: Core,
        mut tcp_in: mpsc::Receiver<(Bytes, Peer)>,
        mut media_events: mpsc::UnboundedReceiver<MediaEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 65_536];
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        let sleep = tokio::time::sleep_until(far);
        tokio::pin!(sleep);
        let mut draining_since: Option<Instant> = None;
        let mut full_since: Option<Instant> = None;
        loop {
            let deadline = core.poll_timeout().map(tokio::time::Instant::from_std).unwrap_or(far);
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => {
                    match r {
                        Ok((n, from)) => {
                            let now = Instant::now();
                            core.handle_datagram(now, Bytes::copy_from_slice(&buf[..n]), Peer::udp(from));
                            // Take whatever else is already queued before flushing.
                            let mut got = 1;
                            while got < UDP_BATCH {
                                match self.udp.try_recv_from(&mut buf) {
                                    Ok((n, from)) => core.handle_datagram(Instant::now(), Bytes::copy_from_slice(&buf[..n]), Peer::udp(from)),
                                    Err(_) => break,
                                }
                                got += 1;
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
            self.flush(&mut core).await;
            if let Some(since) = draining_since {
                // Done when no call is left and every BYE/CANCEL has its answer, or at the grace's end.
                if (core.active_calls() == 0 && core.awaiting_answers() == 0) || since.elapsed() > SHUTDOWN_GRACE {
                    break;
                }
            }
        }
    }

    async fn flush(&self, core: &mut Core) {
        while let Some(out) = core.poll_output() {
            match out {
                Output::Transmit(t) => self.transmit(t).await,
                Output::Media(cmd) => {
                    let _ = self.media_tx.send(cmd);
                }
                Output::Record(rec) => self.sink.submit(rec),
            }
        }
    }

    async fn transmit(&self, t: Transmit) {
        self.metrics.inc(Counter::SipOut);
        match t.peer.transport {
            Transport::Udp => {
                let sent = match self.udp.try_send_to(&t.data, t.peer.addr) {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.udp.send_to(&t.data, t.peer.addr).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    tracing::debug!(dst = %t.peer.addr, error = %e, "UDP send failed");
                }
            }
            Transport::Tcp => self.conns.send(t.peer, t.data),
        }
        if let Some(mark) = t.mark {
            self.metrics.record(mark.stage, mark.since.elapsed());
        }
    }
}
