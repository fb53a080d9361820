//! SIP over TCP: one reader task per connection frames messages by Content-Length and hands them
//! to the sip task; one writer task per connection drains a bounded queue. Connections are found
//! by their id (responses, requests inside a dialog that came over it) or by address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::metrics::{Counter, Metrics};
use crate::sip::msg::{Framed, Framer};
use crate::sip::{ConnId, Peer, Transport};

/// Outgoing writes queued per connection before it counts as stuck and is closed.
const WRITE_QUEUE: usize = 1024;
/// A connection that sends nothing (not even a keep-alive) for this long is closed.
const IDLE: Duration = Duration::from_secs(600);
/// Connections open at once; beyond it new ones are closed at accept. Each holds a socket, two
/// tasks and up to `max_message_bytes` of buffer, so strangers must not be able to open unlimited.
pub const MAX_CONNECTIONS: usize = 4096;

struct Conn {
    addr: SocketAddr,
    tx: mpsc::Sender<Bytes>,
}

/// The registry of live connections, shared by the accept loop, readers and the sip task.
#[derive(Clone)]
pub struct Conns {
    inner: Arc<Inner>,
}

struct Inner {
    by_id: DashMap<ConnId, Conn>,
    by_addr: DashMap<SocketAddr, ConnId>,
    next: AtomicU64,
    to_core: mpsc::Sender<(Bytes, Peer)>,
    max_message: usize,
    metrics: Arc<Metrics>,
}

impl Conns {
    pub fn new(to_core: mpsc::Sender<(Bytes, Peer)>, max_message: usize, metrics: Arc<Metrics>) -> Conns {
        Conns {
            inner: Arc::new(Inner {
                by_id: DashMap::new(),
                by_addr: DashMap::new(),
                next: AtomicU64::new(1),
                to_core,
                max_message: max_message.max(4096),
                metrics,
            }),
        }
    }

    /// Queues `data` for `peer`: on its connection if it has one, else on any connection to its
    /// address, else on a new connection.
    pub fn send(&self, peer: Peer, data: Bytes) {
        let id = peer
            .conn
            .filter(|id| self.inner.by_id.contains_key(id))
            .or_else(|| self.inner.by_addr.get(&peer.addr).map(|e| *e.value()));
        if let Some(id) = id {
            if let Some(conn) = self.inner.by_id.get(&id) {
                if conn.tx.try_send(data).is_err() {
                    tracing::warn!(conn = id, addr = %conn.addr, "TCP write queue full or closed: dropping the connection");
                    drop(conn);
                    self.remove(id);
                }
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(peer.addr)).await {
                Ok(Ok(stream)) => {
                    let id = this.register(stream, peer.addr);
                    if let Some(conn) = this.inner.by_id.get(&id) {
                        let _ = conn.tx.try_send(data);
                    }
                }
                _ => tracing::info!(dst = %peer.addr, "TCP connect failed"),
            }
        });
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.inner.by_id.len()
    }

    fn register(&self, stream: TcpStream, addr: SocketAddr) -> ConnId {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        self.inner.by_id.insert(id, Conn { addr, tx });
        self.inner.by_addr.insert(addr, id);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
            this.remove(id);
        });
        let this = self.clone();
        tokio::spawn(async move {
            this.read_loop(rd, id, addr).await;
            this.remove(id);
        });
        id
    }

    fn remove(&self, id: ConnId) {
        if let Some((_, conn)) = self.inner.by_id.remove(&id) {
            self.inner.by_addr.remove_if(&conn.addr, |_, v| *v == id);
        }
    }

    async fn read_loop(&self, mut rd: tokio::net::tcp::OwnedReadHalf, id: ConnId, addr: SocketAddr) {
        let peer = Peer { transport: Transport::Tcp, addr, conn: Some(id) };
        let mut buf = BytesMut::with_capacity(8192);
        let mut framer = Framer::new();
        loop {
            // Take every whole message already buffered (the framer resumes where it stopped).
            loop {
                match framer.next(&buf, self.inner.max_message) {
                    Ok(Some(Framed::Message(len))) => {
                        let data = buf.split_to(len).freeze();
                        if self.inner.to_core.send((data, peer)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(Framed::KeepAlive(n))) => {
                        // RFC 5626 4.4.1: a double-CRLF ping gets a single-CRLF pong.
                        if n >= 4 {
                            if let Some(conn) = self.inner.by_id.get(&id) {
                                let _ = conn.tx.try_send(Bytes::from_static(b"\r\n"));
                            }
                        }
                        buf.advance(n);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // The stream can no longer be framed (e.g. no Content-Length): answer 400 on
                        // this connection where a response can be built from what came, then close.
                        self.inner.metrics.inc(Counter::ParseErrors);
                        tracing::info!(%addr, error = %e, "unframeable SIP on TCP: closing the connection");
                        if let Some(resp) = crate::sip::build::error_response_raw(&buf, 400, e.reason()) {
                            self.inner.metrics.inc(Counter::BadRequest400);
                            if let Some(conn) = self.inner.by_id.get(&id) {
                                let _ = conn.tx.try_send(resp);
                            }
                        }
                        return;
                    }
                }
            }
            buf.reserve(8192);
            match tokio::time::timeout(IDLE, rd.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Accepts SIP/TCP connections until shutdown.
pub async fn accept_loop(listener: TcpListener, conns: Conns, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%addr, "too many SIP/TCP connections: refusing one");
                        drop(stream);
                    } else {
                        conns.register(stream, addr);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}
