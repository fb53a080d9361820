//! The CTI shell: the connections of CTI clients, on the aux runtime. WebSocket connections come
//! from the HTTP server (`GET /cti`, see `http.rs`); JSON-lines connections from the Unix socket
//! (and, optionally, a TCP address). Every connection's messages go to the sip task as [`CtiIn`];
//! the hub's outputs come back through [`CtiShell::pump`] (or [`CtiShell::deliver`]), which never
//! blocks: the sip task hands all of a flush's messages over in one batch (one channel send) to a
//! dispatcher task on the aux runtime. Waking a thousand writer tasks from the sip thread one by
//! one cost it 1–10 ms per event (a cross-thread wake-up each).
//!
//! ```text
//!            reader task ── CtiIn::Message/Close ───────────────────────────────▶ sip task: Hub
//!   socket ─┤   │ pong, close echo, protocol error                                    │ pump()
//!            │   ▼                                                                    ▼
//!            ├◀── writev now ◀── ConnOut (queue) ◀── dispatcher task ◀── one batch per flush
//!            │   (socket took it: done)     │ the rest             each message's frame encoded
//!            │                              ▼                      once, shared by all connections
//!            └◀── writer task: await writable, pings, the close
//!                 CtiIn::Sent{bytes} every `ack_every` bytes written ──▶ Hub::on_sent
//! ```
//! The dispatcher writes each connection's messages of a batch with one non-blocking `writev`
//! itself; a connection's writer task is only woken when its socket buffer is full (it then waits
//! for the socket and writes the rest), for pings and for closing. Per event and connection that
//! is one system call and no task wake-up (see [`ConnOut`]); what remains of an event's cost to
//! 1,000 connections is the kernel's (`benches/README.md`, CTI event fan-out).
//!
//! Closing: the peer's close frame / EOF / protocol error (close code 1002, 1003, 1007, 1009) end
//! the reader; the hub's `Close` queues a close frame (WebSocket) or a final
//! `{"v":1,"closing":{..}}` line (JSON lines) after what is queued; once it is written the writer
//! waits up to `close_grace` for the peer and ends both tasks (a close that cannot be written within
//! `close_grace` is dropped); a slow consumer's `Close` aborts at once (whatever is queued is
//! dropped).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::cti::ws::{self, Decoder, Incoming, Opcode};
use crate::cti::{CloseReason, Command, Hub, HubOutput, PeerInfo, PrincipalRef, Transport};

/// What the connections tell the sip task, which hands it to the [`Hub`] (see [`CtiIn::apply`]).
#[derive(Debug)]
pub enum CtiIn {
    Open { conn: u64, peer: PeerInfo },
    Message { conn: u64, text: String },
    /// `bytes` (as the hub counted them: the message texts) were written to the socket.
    Sent { conn: u64, bytes: usize },
    Close { conn: u64 },
}

impl CtiIn {
    /// Passes the input to the hub.
    pub fn apply(self, hub: &mut Hub, now: Instant) {
        match self {
            CtiIn::Open { conn, peer } => hub.on_open(now, conn, peer),
            CtiIn::Message { conn, text } => hub.on_message(now, conn, &text),
            CtiIn::Sent { conn, bytes } => hub.on_sent(conn, bytes),
            CtiIn::Close { conn } => hub.on_close(conn),
        }
    }
}

/// Limits and addresses of the shell.
#[derive(Clone, Debug)]
pub struct CtiShellConfig {
    /// JSON lines over this Unix socket (created with mode 0660; a stale socket file is replaced).
    pub unix_socket: Option<PathBuf>,
    /// JSON lines over TCP (keep it on loopback; tokens travel in clear text).
    pub tcp: Option<SocketAddr>,
    /// Connections at once (all transports); beyond, WebSocket upgrades get 503 and socket
    /// connections are closed at once. Keep it at or below the hub's `max_connections`.
    pub max_connections: usize,
    /// The hard limit of one message (WebSocket message or line): beyond it the connection is
    /// closed (1009). Messages between the hub's `max_message` and this get a `too_large` result.
    pub max_message: usize,
    /// Written bytes are reported to the hub in steps of this size.
    pub ack_every: usize,
    /// WebSocket ping period; a peer silent for three periods is disconnected.
    pub ping_every: Duration,
    /// How long a closing connection waits for the peer's close before dropping it.
    pub close_grace: Duration,
}

impl Default for CtiShellConfig {
    fn default() -> Self {
        CtiShellConfig {
            unix_socket: None,
            tcp: None,
            max_connections: 2048,
            max_message: 1 << 20,
            ack_every: 64 * 1024,
            ping_every: Duration::from_secs(30),
            close_grace: Duration::from_secs(2),
        }
    }
}

impl CtiShellConfig {
    /// The default Unix socket: `callgate-cti.sock` in the directory of the records database.
    pub fn default_socket(database: &Path) -> PathBuf {
        database.parent().unwrap_or(Path::new(".")).join("callgate-cti.sock")
    }
}

/// What the hub's batch carries to a connection.
enum Out {
    Text(Arc<str>),
    /// The hub closes the connection.
    Close(CloseReason),
}

/// The write half of a connection's socket, shared by whoever writes to it (the dispatcher, the
/// reader for pongs and close echoes, the connection's writer task); writes are made with the
/// connection's [`OutState`] locked, so frames never interleave.
enum Sock {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(tokio::net::unix::OwnedWriteHalf),
}

impl Sock {
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Tcp(w) => w.try_write_vectored(bufs),
            Sock::Unix(w) => w.try_write_vectored(bufs),
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(w) => w.writable().await,
            Sock::Unix(w) => w.writable().await,
        }
    }

    /// Ends the sending direction (FIN); the reader goes on until the peer closes.
    fn shutdown(&self) {
        let r = match self {
            Sock::Tcp(w) => socket2::SockRef::from(w.as_ref()).shutdown(std::net::Shutdown::Write),
            Sock::Unix(w) => socket2::SockRef::from(w.as_ref()).shutdown(std::net::Shutdown::Write),
        };
        let _ = r;
    }
}

/// One connection's outgoing side.
///
/// ```text
///   enqueue(frames) ── queue was empty ──▶ write now (non-blocking, one writev) ─┬─ all taken: done
///        │                                                                      └─ the rest stays queued
///        └─ queue not empty: append (the writer task is on it)                      │ wake the writer
///   writer task: wake ──▶ writev what is queued ── would block ──▶ await writable ──┘
///                 └─ queue empty and a close frame written ──▶ wait for the peer's close (grace) ──▶ end
/// ```
/// Frames are encoded once per event and shared (`Bytes`) by every connection that gets it; an
/// event costs each connection one `writev` on the dispatcher, and no task wake-up unless its
/// socket buffer is full.
struct ConnOut {
    sock: Sock,
    framing: Framing,
    st: std::sync::Mutex<OutState>,
    /// Wakes the writer task: frames left queued, a close, an abort.
    wake: Notify,
}

#[derive(Default)]
struct OutState {
    /// Frames not yet written (the front one maybe in part) and the text bytes each carries (for
    /// the hub's accounting, counted when the frame is written whole).
    queue: VecDeque<(Bytes, usize)>,
    /// Text bytes written and not yet reported to the hub.
    unacked: usize,
    /// A close frame is queued or written: nothing more is taken.
    closing: bool,
    /// Drop everything and end (slow consumer, the peer is gone, a write failed).
    aborted: bool,
}

/// What the writer task finds after writing what it could.
#[derive(Debug, PartialEq, Eq)]
enum Flushed {
    /// Nothing left to write.
    Idle,
    /// The socket buffer is full.
    Blocked,
    /// Everything written, the close frame last.
    Closed,
    /// Aborted, or a write failed.
    Dead,
}

/// Frames gathered into one `writev`.
const MAX_IOV: usize = 64;

impl ConnOut {
    fn new(sock: Sock, framing: Framing) -> ConnOut {
        ConnOut { sock, framing, st: std::sync::Mutex::new(OutState::default()), wake: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues frames (`closes`: the last one is a close frame) and, when nothing was queued before,
    /// writes them at once as far as the socket takes them; whatever is left is the writer task's.
    fn enqueue(&self, inner: &Inner, conn: u64, frames: impl IntoIterator<Item = (Bytes, usize)>, closes: bool) {
        let mut st = self.lock();
        if st.closing || st.aborted {
            return;
        }
        let was_empty = st.queue.is_empty();
        st.queue.extend(frames);
        st.closing = closes;
        if was_empty {
            self.write_queued(&mut st, inner, conn);
        }
        if !st.queue.is_empty() || st.closing || st.aborted {
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Drops what is queued and makes the writer task end.
    fn abort(&self) {
        let mut st = self.lock();
        st.aborted = true;
        st.queue.clear();
        drop(st);
        self.wake.notify_one();
    }

    /// Writes queued frames until the queue is empty or the socket would block.
    fn write_queued(&self, st: &mut OutState, inner: &Inner, conn: u64) {
        while !st.queue.is_empty() && !st.aborted {
            let iov: Vec<io::IoSlice<'_>> = st.queue.iter().take(MAX_IOV).map(|(b, _)| io::IoSlice::new(b)).collect();
            let r = self.sock.try_write_vectored(&iov);
            drop(iov);
            let mut n = match r {
                Ok(0) => {
                    st.aborted = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(conn, error = %e, "cti: write failed");
                    st.aborted = true;
                    break;
                }
            };
            while n > 0 {
                let front = st.queue.front_mut().expect("written bytes were queued");
                if n >= front.0.len() {
                    n -= front.0.len();
                    let (_, text) = st.queue.pop_front().expect("not empty");
                    st.unacked += text;
                } else {
                    front.0.advance(n);
                    n = 0;
                }
            }
        }
        if st.aborted {
            st.queue.clear();
        }
        if st.unacked >= inner.cfg.ack_every {
            let _ = inner.to_core.send(CtiIn::Sent { conn, bytes: st.unacked });
            st.unacked = 0;
        }
    }

    /// The writer task's turn: write what is queued.
    fn flush(&self, inner: &Inner, conn: u64) -> Flushed {
        let mut st = self.lock();
        self.write_queued(&mut st, inner, conn);
        match (st.aborted, st.queue.is_empty(), st.closing) {
            (true, _, _) => Flushed::Dead,
            (false, false, _) => Flushed::Blocked,
            (false, true, true) => Flushed::Closed,
            (false, true, false) => Flushed::Idle,
        }
    }
}

/// The frame of one text message.
fn text_frame(framing: Framing, text: &str) -> Bytes {
    let mut buf = Vec::with_capacity(text.len() + 10);
    match framing {
        Framing::WebSocket => ws::encode(Opcode::Text, text.as_bytes(), None, &mut buf),
        Framing::Lines => {
            buf.extend_from_slice(text.as_bytes());
            buf.push(b'\n');
        }
    }
    Bytes::from(buf)
}

fn control_frame(f: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::with_capacity(32);
    f(&mut buf);
    Bytes::from(buf)
}

struct Inner {
    cfg: CtiShellConfig,
    conns: DashMap<u64, Arc<ConnOut>>,
    next: AtomicU64,
    open: AtomicUsize,
    to_core: mpsc::UnboundedSender<CtiIn>,
    /// To the dispatcher: (connection, Send or Close) in hub order.
    dispatch: mpsc::UnboundedSender<Vec<(u64, Out)>>,
}

/// A command for the call core, from [`CtiShell::pump`]: answer it with
/// `hub.command_result(conn, &id, result)`.
#[derive(Debug)]
pub struct Execute {
    pub conn: u64,
    pub id: String,
    pub principal: PrincipalRef,
    pub command: Command,
}

/// The shell's handle: cheap to clone; the HTTP server holds one for `/cti`, the sip task one to
/// deliver the hub's outputs.
#[derive(Clone)]
pub struct CtiShell {
    inner: Arc<Inner>,
}

/// A connection slot; given back when dropped.
pub struct ConnPermit {
    inner: Arc<Inner>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    WebSocket = 0,
    Lines = 1,
}

impl CtiShell {
    /// Creates the shell; binds the Unix socket and the TCP address when configured (now, so that
    /// errors surface at start) and serves them on `aux` until `shutdown`. Returns the handle and
    /// the receiver of [`CtiIn`] that the sip task drains.
    pub fn spawn(
        aux: &tokio::runtime::Handle,
        cfg: CtiShellConfig,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<(CtiShell, mpsc::UnboundedReceiver<CtiIn>)> {
        let (to_core, rx) = mpsc::unbounded_channel();
        let (dispatch, batches) = mpsc::unbounded_channel();
        let shell = CtiShell {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                conns: DashMap::new(),
                next: AtomicU64::new(1),
                open: AtomicUsize::new(0),
                to_core,
                dispatch,
            }),
        };
        aux.spawn(dispatcher(Arc::downgrade(&shell.inner), batches));
        if let Some(path) = &cfg.unix_socket {
            let listener = bind_unix(path)?;
            let (shell, path, shutdown) = (shell.clone(), path.clone(), shutdown.clone());
            aux.spawn(async move {
                match tokio::net::UnixListener::from_std(listener) {
                    Ok(l) => shell.accept_unix(l, &path, shutdown).await,
                    Err(e) => tracing::error!(path = %path.display(), error = %e, "cti: unix socket"),
                }
            });
        }
        if let Some(addr) = cfg.tcp {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            let (shell, shutdown) = (shell.clone(), shutdown.clone());
            aux.spawn(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => shell.accept_tcp(l, shutdown).await,
                    Err(e) => tracing::error!(%addr, error = %e, "cti: tcp listener"),
                }
            });
        }
        Ok((shell, rx))
    }

    /// Drains the hub's outputs: every `Send` and `Close` goes to the connections in one batch
    /// (never waiting: the hub bounds what is queued); the commands for the call core are returned.
    /// Call it after each round of input; answering the commands produces more output, so loop
    /// until it returns none.
    pub fn pump(&self, hub: &mut Hub) -> Vec<Execute> {
        let mut batch = Vec::new();
        let mut exec = Vec::new();
        while let Some(out) = hub.poll_output() {
            match out {
                HubOutput::Send { conn, text } => batch.push((conn, Out::Text(text))),
                HubOutput::Close { conn, reason } => batch.push((conn, Out::Close(reason))),
                HubOutput::Execute { conn, id, principal, command } => exec.push(Execute { conn, id, principal, command }),
            }
        }
        if !batch.is_empty() {
            let _ = self.inner.dispatch.send(batch);
        }
        exec
    }

    /// Hands one hub output to its connection (a batch of one; prefer [`CtiShell::pump`]).
    /// `Execute` is not the shell's and is given back.
    pub fn deliver(&self, out: HubOutput) -> Option<HubOutput> {
        let item = match out {
            HubOutput::Send { conn, text } => (conn, Out::Text(text)),
            HubOutput::Close { conn, reason } => (conn, Out::Close(reason)),
            ex @ HubOutput::Execute { .. } => return Some(ex),
        };
        let _ = self.inner.dispatch.send(vec![item]);
        None
    }

    /// Open connections (all transports, including ones still being set up).
    pub fn connections(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// A connection slot, or `None` at `max_connections`.
    pub fn try_acquire(&self) -> Option<ConnPermit> {
        let max = self.inner.cfg.max_connections;
        self.inner.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(ConnPermit { inner: self.inner.clone() })
    }

    /// Closes every connection (1001 going away), e.g. at shutdown.
    pub fn close_all(&self) {
        let r = CloseReason::Shutdown;
        for c in self.inner.conns.iter() {
            let frame = control_frame(|b| encode_close(c.framing, r.ws_code(), r.as_str(), b));
            c.enqueue(&self.inner, *c.key(), [(frame, 0)], true);
        }
    }

    /// Runs an upgraded WebSocket connection (the 101 response has been written) until it ends.
    /// `leftover`: bytes read past the request head.
    pub async fn run_websocket(
        &self,
        stream: TcpStream,
        leftover: Vec<u8>,
        peer: SocketAddr,
        bearer: Option<String>,
        permit: ConnPermit,
    ) {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let info = PeerInfo { transport: Transport::WebSocket, remote: peer.to_string(), bearer };
        self.run(rd, Sock::Tcp(wr), Framing::WebSocket, leftover, info, permit).await;
    }

    async fn accept_unix(&self, listener: tokio::net::UnixListener, path: &Path, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(path = %path.display(), "cti: JSON lines on the unix socket");
        loop {
            let stream = tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => break,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cti: unix accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let remote = match stream.peer_cred() {
                Ok(c) => format!("unix:pid={},uid={}", c.pid().unwrap_or(0), c.uid()),
                Err(_) => "unix".to_owned(),
            };
            let Some(permit) = self.try_acquire() else {
                refuse_lines(stream).await;
                continue;
            };
            let shell = self.clone();
            tokio::spawn(async move {
                let (rd, wr) = stream.into_split();
                let info = PeerInfo { transport: Transport::Unix, remote, bearer: None };
                shell.run(rd, Sock::Unix(wr), Framing::Lines, Vec::new(), info, permit).await;
            });
        }
        drop(listener);
        let _ = std::fs::remove_file(path);
        self.close_all();
    }

    async fn accept_tcp(&self, listener: tokio::net::TcpListener, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(addr = ?listener.local_addr().ok(), "cti: JSON lines on TCP");
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "cti: tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Some(permit) = self.try_acquire() else {
                refuse_lines(stream).await;
                continue;
            };
            let shell = self.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let (rd, wr) = stream.into_split();
                let info = PeerInfo { transport: Transport::Tcp, remote: peer.to_string(), bearer: None };
                shell.run(rd, Sock::Tcp(wr), Framing::Lines, Vec::new(), info, permit).await;
            });
        }
        self.close_all();
    }

    /// One connection: registers it, runs the reader here and the writer beside it, and tells the
    /// sip task when it is gone.
    async fn run<R>(&self, rd: R, wr: Sock, framing: Framing, leftover: Vec<u8>, peer: PeerInfo, permit: ConnPermit)
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let conn = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let out = Arc::new(ConnOut::new(wr, framing));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = oneshot::channel::<()>();
        self.inner.conns.insert(conn, out.clone());
        if self.inner.to_core.send(CtiIn::Open { conn, peer }).is_err() {
            self.inner.conns.remove(&conn);
            return; // the sip task is gone: shutting down
        }
        let writer = tokio::spawn(writer(self.inner.clone(), conn, out.clone(), stop_tx, done_rx));
        let end = reader(&self.inner, conn, rd, framing, leftover, &out, stop_rx).await;
        drop(done_tx);
        self.inner.conns.remove(&conn);
        let _ = self.inner.to_core.send(CtiIn::Close { conn });
        if end == ReadEnd::Gone {
            out.abort(); // nobody reads what is still queued
        }
        let _ = writer.await;
        drop(permit);
    }
}

/// Batches the dispatcher merges at most when it is behind.
const MERGE_BATCHES: usize = 64;
/// Connections written between two yields of the dispatcher (at ~5–10 µs each).
const YIELD_EVERY: usize = 64;
/// Connections a batch arriving during a pass may name to be served before the rest of the pass.
const URGENT_MAX: usize = 256;

/// Hands each output of a batch to its connection, on the aux runtime: the frame of each message
/// is encoded once and shared by every connection it goes to, and each connection's messages of
/// the batch are written with one `writev` right here (see [`ConnOut`]). Every [`YIELD_EVERY`]
/// connections it lets the runtime's other tasks run, and looks at what came meanwhile (see
/// [`replan`]): a command's result is not held up behind an event's fan-out. Ends with the shell.
async fn dispatcher(inner: std::sync::Weak<Inner>, mut batches: mpsc::UnboundedReceiver<Vec<(u64, Out)>>) {
    // The frames of the batch's messages by the address of their text, which the entry keeps
    // alive (so the address names that text while it is here): [WebSocket frame, JSON-lines frame].
    type Frames = (Arc<str>, [Option<Bytes>; 2]);
    let mut encoded: HashMap<usize, Frames> = HashMap::new();
    let mut frames: Vec<(Bytes, usize)> = Vec::new();
    // Messages for after the current pass (fan-outs that came during it).
    let mut deferred: Vec<(u64, Out)> = Vec::new();
    loop {
        let mut batch = if deferred.is_empty() {
            match batches.recv().await {
                Some(b) => b,
                None => return,
            }
        } else {
            std::mem::take(&mut deferred)
        };
        let Some(inner) = inner.upgrade() else { return };
        // Behind (the last pass took longer than the time between flushes): take the batches
        // waiting too, so each connection gets their messages in one write.
        let mut merged = 1;
        while merged < MERGE_BATCHES {
            match batches.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
            merged += 1;
        }
        encoded.clear();
        // One run per connection, in hub order within it (the sort is stable).
        batch.sort_by_key(|(conn, _)| *conn);
        let mut i = 0;
        let mut since_yield = 0;
        // batch[..urgent_end]: what `replan` put first; it does not count toward a yield.
        let mut urgent_end = 0;
        while i < batch.len() {
            if since_yield >= YIELD_EVERY && i >= urgent_end {
                since_yield = 0;
                // Let the runtime's other tasks in (readers, HTTP, SIP over TCP): an event to
                // 1,000 connections is milliseconds of system calls.
                tokio::task::yield_now().await;
                let mut newer = Vec::new();
                while let Ok(more) = batches.try_recv() {
                    newer.extend(more);
                }
                if !newer.is_empty() {
                    let rest = batch.split_off(i);
                    (batch, urgent_end) = replan(rest, &mut deferred, newer);
                    i = 0;
                }
            }
            let conn = batch[i].0;
            let j = i + batch[i..].iter().take_while(|(c, _)| *c == conn).count();
            if i >= urgent_end {
                since_yield += 1;
            }
            let Some(c) = inner.conns.get(&conn).map(|c| c.clone()) else {
                i = j;
                continue;
            };
            frames.clear();
            let mut close = None;
            for (_, out) in &batch[i..j] {
                match out {
                    Out::Text(text) => {
                        let (_, slots) = encoded.entry(Arc::as_ptr(text) as *const u8 as usize).or_insert_with(|| (text.clone(), [None, None]));
                        let frame = slots[c.framing as usize].get_or_insert_with(|| text_frame(c.framing, text)).clone();
                        frames.push((frame, text.len()));
                    }
                    Out::Close(reason) => {
                        close = Some(*reason);
                        break;
                    }
                }
            }
            match close {
                Some(r) if r.abort() => c.abort(),
                Some(r) => {
                    frames.push((control_frame(|b| encode_close(c.framing, r.ws_code(), r.as_str(), b)), 0));
                    c.enqueue(&inner, conn, frames.drain(..), true);
                }
                None => c.enqueue(&inner, conn, frames.drain(..), false),
            }
            i = j;
        }
    }
}

/// What becomes of the rest of a dispatcher pass (`rest`: each connection's messages together, in
/// hub order) when `newer` messages arrive in the middle of it; `deferred` holds messages for after
/// the pass. Returns the new plan and how many of its messages come first.
/// - `newer` names few connections (a command's result and the events it caused): they come first,
///   each after its messages still in `rest` and `deferred` (taken along), so nothing is reordered.
/// - many (another event's fan-out): the pass goes on, taking `newer`'s messages for the
///   connections it has not reached yet along (after theirs); the others wait in `deferred`.
///
/// `rest` is sorted by connection (a pass yields only outside what a replan put first), and
/// `deferred` only holds connections before `rest`'s first, so no connection is reordered.
fn replan<T>(rest: Vec<(u64, T)>, deferred: &mut Vec<(u64, T)>, mut newer: Vec<(u64, T)>) -> (Vec<(u64, T)>, usize) {
    let mut conns: Vec<u64> = newer.iter().map(|(c, _)| *c).collect();
    conns.sort_unstable();
    conns.dedup();
    if conns.len() > URGENT_MAX {
        newer.sort_by_key(|(c, _)| *c);
        let at = rest.first().map_or(u64::MAX, |(c, _)| *c);
        let split = newer.partition_point(|(c, _)| *c < at);
        let later = newer.split_off(split);
        deferred.extend(newer);
        // Merge the two sorted runs; for a connection in both, what was in `rest` goes first.
        let mut plan = Vec::with_capacity(rest.len() + later.len());
        let mut later = later.into_iter().peekable();
        for item in rest {
            while later.peek().is_some_and(|(c, _)| *c < item.0) {
                plan.push(later.next().expect("peeked"));
            }
            plan.push(item);
        }
        plan.extend(later);
        return (plan, 0);
    }
    let urgent = |c: &u64| conns.binary_search(c).is_ok();
    let (mut first, others): (Vec<_>, Vec<_>) = rest.into_iter().partition(|(c, _)| urgent(c));
    let (waiting, kept): (Vec<_>, Vec<_>) = std::mem::take(deferred).into_iter().partition(|(c, _)| urgent(c));
    *deferred = kept;
    first.extend(waiting);
    first.extend(newer);
    // Stable: per connection, what was in `rest`, then in `deferred`, then `newer`.
    first.sort_by_key(|(c, _)| *c);
    let n = first.len();
    first.extend(others);
    (first, n)
}

#[derive(PartialEq, Eq)]
enum ReadEnd {
    /// EOF, a read error, silence, or the writer ended the connection.
    Gone,
    /// A close or an error frame is queued for the writer.
    Closing,
}

async fn reader<R: AsyncRead + Unpin>(
    inner: &Inner,
    conn: u64,
    mut rd: R,
    framing: Framing,
    leftover: Vec<u8>,
    out: &ConnOut,
    mut stop: watch::Receiver<bool>,
) -> ReadEnd {
    let max = inner.cfg.max_message;
    let mut dec = Decoder::new(ws::Role::Server, max);
    let mut lines = Vec::new();
    let idle = match framing {
        Framing::WebSocket => inner.cfg.ping_every * 3,
        Framing::Lines => Duration::from_secs(86_400 * 365),
    };
    let fail = |code: u16, reason: &str| {
        let frame = control_frame(|b| encode_close(framing, code, reason, b));
        out.enqueue(inner, conn, [(frame, 0)], true);
    };
    let mut chunk = vec![0u8; 16 * 1024];
    let mut input = leftover;
    loop {
        match framing {
            Framing::WebSocket => {
                dec.push(&input);
                loop {
                    match dec.decode() {
                        Ok(None) => break,
                        Ok(Some(Incoming::Text(text))) => {
                            let _ = inner.to_core.send(CtiIn::Message { conn, text });
                        }
                        Ok(Some(Incoming::Ping(p))) => {
                            let frame = control_frame(|b| ws::encode(Opcode::Pong, &p, None, b));
                            out.enqueue(inner, conn, [(frame, 0)], false);
                        }
                        Ok(Some(Incoming::Pong(_))) => {}
                        Ok(Some(Incoming::Close(code, _))) => {
                            let frame = control_frame(|b| ws::encode_close(code.unwrap_or(1000), "", None, b));
                            out.enqueue(inner, conn, [(frame, 0)], true);
                            return ReadEnd::Closing;
                        }
                        Err(e) => {
                            tracing::debug!(conn, error = %e, "cti: websocket protocol error");
                            fail(e.close_code(), &e.to_string());
                            return ReadEnd::Closing;
                        }
                    }
                }
            }
            Framing::Lines => {
                let mut start = 0;
                let scan_from = lines.len();
                lines.extend_from_slice(&input);
                let mut i = scan_from;
                while let Some(p) = lines[i..].iter().position(|&b| b == b'\n') {
                    let end = i + p;
                    let mut line = &lines[start..end];
                    if line.last() == Some(&b'\r') {
                        line = &line[..line.len() - 1];
                    }
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        let text = String::from_utf8_lossy(line).into_owned();
                        let _ = inner.to_core.send(CtiIn::Message { conn, text });
                    }
                    start = end + 1;
                    i = start;
                }
                lines.drain(..start);
                if lines.len() > max {
                    fail(1009, &format!("a line longer than {max} bytes"));
                    return ReadEnd::Closing;
                }
            }
        }
        input.clear();
        let n = tokio::select! {
            biased;
            _ = stop.changed() => return ReadEnd::Gone,
            r = tokio::time::timeout(idle, rd.read(&mut chunk)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => return ReadEnd::Gone,
                Ok(Ok(n)) => n,
                Err(_) => {
                    tracing::debug!(conn, "cti: peer silent, closing");
                    fail(1001, "no traffic from the peer");
                    return ReadEnd::Closing;
                }
            },
        };
        input.extend_from_slice(&chunk[..n]);
    }
}

/// The connection's writer task: writes what the dispatcher could not write at once (a full socket
/// buffer), pings a WebSocket peer, and carries out the close. Mostly asleep: an event whose frame
/// the socket takes at once never wakes it.
async fn writer(inner: Arc<Inner>, conn: u64, out: Arc<ConnOut>, stop: watch::Sender<bool>, reader_done: oneshot::Receiver<()>) {
    let cfg = &inner.cfg;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + cfg.ping_every, cfg.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the close frame was queued: the close completes within `close_grace` of it or is dropped.
    let mut closing_since: Option<tokio::time::Instant> = None;
    loop {
        let state = out.flush(&inner, conn);
        if state != Flushed::Dead && closing_since.is_none() && out.lock().closing {
            closing_since = Some(tokio::time::Instant::now());
        }
        let grace_end = closing_since.map(|t| t + cfg.close_grace);
        match state {
            Flushed::Dead => break,
            Flushed::Closed => {
                // Give the peer a moment to answer the close (the reader sees it and ends).
                let _ = tokio::time::timeout(cfg.close_grace, reader_done).await;
                break;
            }
            Flushed::Idle => {
                tokio::select! {
                    _ = out.wake.notified() => {}
                    _ = ping.tick(), if out.framing == Framing::WebSocket => {
                        let frame = control_frame(|b| ws::encode(Opcode::Ping, b"", None, b));
                        out.enqueue(&inner, conn, [(frame, 0)], false);
                    }
                }
            }
            Flushed::Blocked => {
                tokio::select! {
                    _ = out.wake.notified() => {}
                    r = out.sock.writable() => if r.is_err() { break },
                    _ = tokio::time::sleep_until(grace_end.unwrap_or_else(tokio::time::Instant::now)), if grace_end.is_some() => break,
                }
            }
        }
    }
    out.abort();
    out.sock.shutdown();
    let _ = stop.send(true);
}

fn encode_close(framing: Framing, code: u16, reason: &str, buf: &mut Vec<u8>) {
    match framing {
        Framing::WebSocket => ws::encode_close(code, reason, None, buf),
        Framing::Lines => {
            let v = serde_json::json!({ "v": 1, "closing": { "code": code, "reason": reason } });
            buf.extend_from_slice(v.to_string().as_bytes());
            buf.push(b'\n');
        }
    }
}

/// Tells a JSON-lines client beyond the connection limit why, and closes.
async fn refuse_lines<S: AsyncWrite + Unpin>(mut s: S) {
    tracing::warn!("cti: connection refused: too many connections");
    let mut buf = Vec::new();
    let r = CloseReason::TooManyConnections;
    encode_close(Framing::Lines, r.ws_code(), r.as_str(), &mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(1), s.write_all(&buf)).await;
    let _ = s.shutdown().await;
}

/// Binds the Unix socket: a stale socket file (nobody listening) is replaced, a live one is an
/// error; the socket gets mode 0660.
fn bind_unix(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind the CTI socket {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{replan, URGENT_MAX};

    fn conns<T>(v: &[(u64, T)]) -> Vec<u64> {
        v.iter().map(|(c, _)| *c).collect()
    }

    /// One connection's messages, in the order they would be written.
    fn of(plan: &[(u64, &'static str)], conn: u64) -> Vec<&'static str> {
        plan.iter().filter(|(c, _)| *c == conn).map(|(_, m)| *m).collect()
    }

    #[test]
    fn a_small_late_batch_goes_first_and_no_connection_is_reordered() {
        // The rest of a pass (connections 5..8), a deferred fan-out, and a command's result for 7
        // with an event for 7 and for 2 (a connection the pass has written already).
        let rest = vec![(5, "e1"), (6, "e1"), (7, "e1"), (7, "e2"), (8, "e1")];
        let mut deferred = vec![(5, "f1"), (7, "f1"), (2, "f1")];
        let newer = vec![(7, "result"), (7, "state"), (2, "state")];
        let (plan, first) = replan(rest, &mut deferred, newer);
        assert_eq!(conns(&plan), vec![2, 2, 7, 7, 7, 7, 7, 5, 6, 8]);
        assert_eq!(first, 7);
        assert_eq!(of(&plan, 7), vec!["e1", "e2", "f1", "result", "state"]);
        assert_eq!(of(&plan, 2), vec!["f1", "state"]);
        assert_eq!(deferred, vec![(5, "f1")], "the others' deferred messages stay for after the pass");
    }

    #[test]
    fn another_fan_out_joins_the_pass_where_it_is_and_the_rest_waits() {
        // The pass is at connection 500 of 0..1000; the next event goes to every connection.
        let rest: Vec<(u64, &str)> = (500..1000).flat_map(|c| [(c, "e1"), (c, "e1b")]).collect();
        let mut deferred = vec![(7, "d")];
        let newer: Vec<(u64, &str)> = (0..1000).rev().map(|c| (c, "e2")).collect();
        assert!(newer.len() > URGENT_MAX);
        let (plan, first) = replan(rest, &mut deferred, newer);
        assert_eq!(first, 0);
        assert_eq!(plan.len(), 1500);
        assert!(plan.windows(2).all(|w| w[0].0 <= w[1].0), "the pass goes on in order");
        assert_eq!(of(&plan, 500), vec!["e1", "e1b", "e2"]);
        assert_eq!(of(&plan, 999), vec!["e1", "e1b", "e2"]);
        assert_eq!(deferred.len(), 501);
        assert_eq!(of(&deferred, 7), vec!["d", "e2"]);
        assert!(deferred.iter().all(|(c, _)| *c < 500));
    }
}
