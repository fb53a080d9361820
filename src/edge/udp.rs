//! Batched UDP I/O for the SIP socket.
//!
//! On Linux, one `recvmmsg` takes up to [`BATCH`] queued datagrams and one `sendmmsg` sends up
//! to [`BATCH`] of a flush's datagrams: one system call (and one readiness check) per batch
//! instead of one per datagram. Elsewhere the same interface is served by `recv_from` /
//! `try_recv_from` / `send_to` one datagram at a time.
//!
//! Both sides use tokio's readiness (`UdpSocket::readable` / `writable` and `try_io`), so the
//! socket stays registered with the runtime like any other and `WouldBlock` clears readiness.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::UdpSocket;

/// Most datagrams taken or sent in one system call.
pub const BATCH: usize = 64;
/// Room for the largest UDP payload: a datagram is never truncated where it was not before.
const MAX_DATAGRAM: usize = 65_536;

/// Buffers for receiving a batch, allocated once and reused.
pub struct RecvBatch {
    /// `BATCH` slots of `MAX_DATAGRAM` bytes, back to back.
    data: Vec<u8>,
    #[cfg(target_os = "linux")]
    addrs: Vec<libc::sockaddr_storage>,
    #[cfg(target_os = "linux")]
    iovs: Vec<libc::iovec>,
    #[cfg(target_os = "linux")]
    hdrs: Vec<libc::mmsghdr>,
    /// Per datagram of the last batch: its length and source.
    got: Vec<(usize, SocketAddr)>,
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            data: vec![0u8; BATCH * MAX_DATAGRAM],
            #[cfg(target_os = "linux")]
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            #[cfg(target_os = "linux")]
            iovs: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            hdrs: Vec::with_capacity(BATCH),
            got: Vec::with_capacity(BATCH),
        }
    }

    /// The datagrams of the last batch, each copied into its own `Bytes`.
    pub fn datagrams(&self) -> impl Iterator<Item = (Bytes, SocketAddr)> + '_ {
        self.got
            .iter()
            .enumerate()
            .map(|(i, &(n, from))| (Bytes::copy_from_slice(&self.data[i * MAX_DATAGRAM..i * MAX_DATAGRAM + n]), from))
    }

    /// How many datagrams the last batch had.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.got.len()
    }
}

/// Waits for at least one datagram and takes up to [`BATCH`] that are queued. Returns how many
/// ([`RecvBatch::datagrams`] has them). Cancel safe: nothing is read until the socket is ready.
pub async fn recv_batch(sock: &UdpSocket, b: &mut RecvBatch) -> io::Result<usize> {
    b.got.clear();
    #[cfg(target_os = "linux")]
    {
        loop {
            sock.readable().await?;
            // A short batch leaves the readiness set: under load the next call usually finds
            // more datagrams without a trip through epoll; when the queue is empty, recvmmsg
            // answers WouldBlock and `try_io` clears the readiness.
            match sock.try_io(tokio::io::Interest::READABLE, || recvmmsg(sock, b)) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (n, from) = sock.recv_from(&mut b.data[..MAX_DATAGRAM]).await?;
        b.got.push((n, from));
        while b.got.len() < BATCH {
            let i = b.got.len();
            match sock.try_recv_from(&mut b.data[i * MAX_DATAGRAM..(i + 1) * MAX_DATAGRAM]) {
                Ok((n, from)) => b.got.push((n, from)),
                Err(_) => break,
            }
        }
        Ok(b.got.len())
    }
}

#[cfg(target_os = "linux")]
fn recvmmsg(sock: &UdpSocket, b: &mut RecvBatch) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // The headers point into `data` and `addrs`; they are rebuilt for every call so that they
    // never outlive or dangle from the buffers they point into.
    b.iovs.clear();
    b.hdrs.clear();
    let base = b.data.as_mut_ptr();
    for i in 0..BATCH {
        // SAFETY: slot i lies within `data` (BATCH * MAX_DATAGRAM bytes).
        b.iovs.push(libc::iovec { iov_base: unsafe { base.add(i * MAX_DATAGRAM) }.cast(), iov_len: MAX_DATAGRAM });
    }
    for i in 0..BATCH {
        // SAFETY: msghdr is plain old data; the fields that matter are set below.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &mut b.iovs[i];
        h.msg_iovlen = 1;
        b.hdrs.push(libc::mmsghdr { msg_hdr: h, msg_len: 0 });
    }
    // SAFETY: `hdrs` holds BATCH valid headers whose buffers live as long as `b`, which is
    // borrowed mutably for the whole call.
    let n = unsafe {
        libc::recvmmsg(sock.as_raw_fd(), b.hdrs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for i in 0..n {
        let len = (b.hdrs[i].msg_len as usize).min(MAX_DATAGRAM);
        match sockaddr_to_std(&b.addrs[i], b.hdrs[i].msg_hdr.msg_namelen) {
            Some(from) => b.got.push((len, from)),
            // Not an IP source (cannot happen on an IP socket): skip it, but keep the slot
            // numbering right by pushing nothing and compacting below.
            None => b.got.push((usize::MAX, SocketAddr::from(([0, 0, 0, 0], 0)))),
        }
    }
    if b.got.iter().any(|&(n, _)| n == usize::MAX) {
        // Rare: move the good datagrams' slots so that slot i holds the i-th kept datagram.
        let mut kept = Vec::with_capacity(n);
        for (i, &(len, from)) in b.got.iter().enumerate() {
            if len != usize::MAX {
                let k = kept.len();
                if k != i {
                    b.data.copy_within(i * MAX_DATAGRAM..i * MAX_DATAGRAM + len, k * MAX_DATAGRAM);
                }
                kept.push((len, from));
            }
        }
        b.got = kept;
    }
    Ok(n)
}

#[cfg(target_os = "linux")]
fn sockaddr_to_std(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in, and it is large enough.
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

#[cfg(target_os = "linux")]
fn std_to_sockaddr(a: SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let s: &mut libc::sockaddr_in = unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = v4.port().to_be();
            s.sin_addr = libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let s: &mut libc::sockaddr_in6 = unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = v6.port().to_be();
            s.sin6_flowinfo = v6.flowinfo();
            s.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            s.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Scratch space for sending batches, reused across flushes.
#[derive(Default)]
pub struct SendBatch {
    #[cfg(target_os = "linux")]
    addrs: Vec<libc::sockaddr_storage>,
    #[cfg(target_os = "linux")]
    iovs: Vec<libc::iovec>,
    #[cfg(target_os = "linux")]
    hdrs: Vec<libc::mmsghdr>,
}

/// Sends every datagram in `out` (payload, destination), in order, [`BATCH`] per system call.
/// Waits for the socket to become writable when its buffer is full. A datagram the kernel
/// refuses is logged and skipped; the others still go.
pub async fn send_all(sock: &UdpSocket, scratch: &mut SendBatch, out: &[(&[u8], SocketAddr)]) {
    let mut i = 0;
    while i < out.len() {
        let chunk = &out[i..out.len().min(i + BATCH)];
        match try_send_batch(sock, scratch, chunk) {
            Ok(n) => i += n.max(1).min(chunk.len()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = sock.writable().await {
                    tracing::debug!(error = %e, "UDP socket not writable");
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(dst = %chunk[0].1, error = %e, "UDP send failed");
                i += 1;
            }
        }
    }
}

/// Sends what it can of `chunk` without waiting: how many went (at least one), or the error of the first.
fn try_send_batch(sock: &UdpSocket, scratch: &mut SendBatch, chunk: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        sock.try_io(tokio::io::Interest::WRITABLE, || sendmmsg(sock, scratch, chunk))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = scratch;
        sock.try_send_to(chunk[0].0, chunk[0].1).map(|_| 1)
    }
}

#[cfg(target_os = "linux")]
fn sendmmsg(sock: &UdpSocket, s: &mut SendBatch, chunk: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let n = chunk.len();
    s.iovs.clear();
    s.hdrs.clear();
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    s.addrs.resize(n.max(s.addrs.len()), unsafe { std::mem::zeroed() });
    let mut lens = [0 as libc::socklen_t; BATCH];
    for ((len, (data, dst)), addr) in lens.iter_mut().zip(chunk).zip(s.addrs.iter_mut()) {
        *len = std_to_sockaddr(*dst, addr);
        s.iovs.push(libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() });
    }
    // `iovs` is complete: pointers into it stay valid while the headers are built.
    for (i, &len) in lens.iter().enumerate().take(n) {
        // SAFETY: msghdr is plain old data; the fields that matter are set below.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_name = (&mut s.addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = len;
        h.msg_iov = &mut s.iovs[i];
        h.msg_iovlen = 1;
        s.hdrs.push(libc::mmsghdr { msg_hdr: h, msg_len: 0 });
    }
    // SAFETY: n valid headers pointing at `chunk`'s payloads and `addrs`, all borrowed for the call.
    let sent = unsafe { libc::sendmmsg(sock.as_raw_fd(), s.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_round_trip_in_order() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..100).map(|i| format!("datagram {i}").into_bytes()).collect();
        let out: Vec<(&[u8], SocketAddr)> = payloads.iter().map(|p| (p.as_slice(), to)).collect();
        let mut scratch = SendBatch::default();
        send_all(&a, &mut scratch, &out).await;
        let mut rb = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < 100 {
            let n = recv_batch(&b, &mut rb).await.unwrap();
            assert!((1..=BATCH).contains(&n));
            assert_eq!(rb.len(), n);
            for (d, from) in rb.datagrams() {
                assert_eq!(from, a.local_addr().unwrap());
                got.push(d.to_vec());
            }
        }
        assert_eq!(got, payloads);
    }

    #[tokio::test]
    async fn ipv6_sources_survive() {
        let Ok(a) = UdpSocket::bind("[::1]:0").await else { return };
        let b = UdpSocket::bind("[::1]:0").await.unwrap();
        let mut scratch = SendBatch::default();
        send_all(&a, &mut scratch, &[(b"x".as_slice(), b.local_addr().unwrap())]).await;
        let mut rb = RecvBatch::new();
        assert_eq!(recv_batch(&b, &mut rb).await.unwrap(), 1);
        let (d, from) = rb.datagrams().next().unwrap();
        assert_eq!((&d[..], from), (&b"x"[..], a.local_addr().unwrap()));
    }
}
