//! The media thread: owns every call's RTP socket and drives the one [`Pacer`] for all
//! outgoing streams. It sleeps until the pacer's next slot or the next command, whichever
//! comes first: there is no task and no timer per call.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::call::{CallKey, MediaCommand, MediaEvent, MediaFailure};
use crate::media::MediaError;
use crate::media::pacer::{Pacer, PacerEvent, StreamId, StreamSpec};
use crate::media::prompt::PromptSet;
use crate::metrics::{Counter, Metrics};

/// Inbound RTP is not read yet (the bridge comes with the media engine): keep the kernel's
/// buffer for each call's socket small so unread packets cost little.
const RECV_BUFFER: usize = 4096;

struct Leg {
    socket: u32,
    stream: Option<StreamId>,
}

/// Starts the media thread. Commands go in through the returned sender; the thread ends when
/// every sender is dropped.
pub fn spawn(
    prompts: Arc<PromptSet>,
    local_ip: IpAddr,
    metrics: Arc<Metrics>,
) -> (Sender<MediaCommand>, JoinHandle<()>, UnboundedReceiver<MediaEvent>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ev_tx, ev_rx) = unbounded_channel();
    let handle = std::thread::Builder::new()
        .name("callgate-media".into())
        .spawn(move || MediaThread::new(prompts, local_ip, metrics, ev_tx).run(rx))
        .expect("spawning the media thread");
    (tx, handle, ev_rx)
}

struct MediaThread {
    prompts: Arc<PromptSet>,
    local_ip: IpAddr,
    metrics: Arc<Metrics>,
    events: UnboundedSender<MediaEvent>,
    pacer: Pacer,
    /// Sockets by the id the pacer carries in each packet.
    /// Each call's socket, with the peer it is connected to.
    sockets: Vec<Option<(UdpSocket, SocketAddr)>>,
    free_sockets: Vec<u32>,
    legs: HashMap<CallKey, Leg>,
}

impl MediaThread {
    fn new(prompts: Arc<PromptSet>, local_ip: IpAddr, metrics: Arc<Metrics>, events: UnboundedSender<MediaEvent>) -> Self {
        MediaThread {
            prompts,
            local_ip,
            metrics,
            events,
            pacer: Pacer::new(Instant::now()),
            sockets: Vec::new(),
            free_sockets: Vec::new(),
            legs: HashMap::new(),
        }
    }

    fn run(mut self, rx: Receiver<MediaCommand>) {
        loop {
            let wait = self
                .pacer
                .poll_timeout()
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(200));
            match rx.recv_timeout(wait) {
                Ok(cmd) => {
                    self.command(cmd);
                    while let Ok(cmd) = rx.try_recv() {
                        self.command(cmd);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.tick(Instant::now());
        }
        for key in self.legs.keys().copied().collect::<Vec<_>>() {
            self.stop(key);
        }
    }

    fn tick(&mut self, now: Instant) {
        let sockets = &self.sockets;
        let metrics = &self.metrics;
        let mut buf = [0u8; 1500];
        let mut sent = 0u64;
        self.pacer.handle_timeout(now, &mut |pkt| {
            let Some(Some((sock, peer))) = sockets.get(pkt.socket as usize) else { return };
            let len = 12 + pkt.payload.len();
            if len > buf.len() {
                return;
            }
            buf[..12].copy_from_slice(&pkt.header);
            buf[12..len].copy_from_slice(pkt.payload);
            // Connected sockets (see `bind`) skip the route lookup per packet; a stream whose
            // destination differs from the connected peer still gets there with send_to.
            let r = if *peer == pkt.dst { sock.send(&buf[..len]) } else { sock.send_to(&buf[..len], pkt.dst) };
            if r.is_ok() {
                sent += 1;
            }
            metrics.record_lateness(pkt.lateness);
        });
        if sent > 0 {
            self.metrics.add(Counter::RtpSent, sent);
        }
        while let Some(ev) = self.pacer.poll_event() {
            match ev {
                PacerEvent::Finished { user, .. } => {
                    if let Some(leg) = self.legs.get_mut(&user) {
                        leg.stream = None;
                    }
                    let _ = self.events.send(MediaEvent::Finished { call: user });
                }
            }
        }
    }

    fn command(&mut self, cmd: MediaCommand) {
        match cmd {
            MediaCommand::Play { call, local_port, dst, codec, pt, ssrc, seq, ts, playlist } => {
                let playlist = match self.prompts.playlist(&playlist) {
                    Ok(p) => p,
                    Err(missing) => {
                        let name = match missing {
                            MediaError::UnknownPrompt { name } => name,
                            other => other.to_string(),
                        };
                        let _ = self.events.send(MediaEvent::Failed { call, failure: MediaFailure::UnknownPrompt { name } });
                        return;
                    }
                };
                let socket = match self.bind(local_port, dst) {
                    Ok(s) => s,
                    Err(e) => {
                        let addr = SocketAddr::new(self.local_ip, local_port);
                        let _ = self.events.send(MediaEvent::Failed { call, failure: MediaFailure::Bind { addr, kind: e.kind() } });
                        return;
                    }
                };
                let spec = StreamSpec { dst, socket, codec, pt, ssrc, seq, ts, playlist, looped: false, user: call };
                let stream = self.pacer.add(Instant::now(), spec);
                self.legs.insert(call, Leg { socket, stream: Some(stream) });
            }
            MediaCommand::Stop { call } => self.stop(call),
        }
    }

    fn stop(&mut self, call: CallKey) {
        if let Some(leg) = self.legs.remove(&call) {
            if let Some(s) = leg.stream {
                self.pacer.remove(s);
            }
            if let Some(slot) = self.sockets.get_mut(leg.socket as usize) {
                *slot = None;
                self.free_sockets.push(leg.socket);
            }
        }
    }

    fn bind(&mut self, port: u16, dst: SocketAddr) -> std::io::Result<u32> {
        let addr = SocketAddr::new(self.local_ip, port);
        let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        let _ = sock.set_recv_buffer_size(RECV_BUFFER);
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        // The stream goes to the SDP address: connecting to it lets the kernel cache the route
        // (measured: p50 send lateness 8.3 ms -> 0.4 ms at 5,000 streams, benches/README.md).
        // NOTE for the media engine (issue 3): a connected UDP socket only receives from its
        // peer, so before reading RTP for latching (media::bridge) a socket must be disconnected
        // (connect to AF_UNSPEC) or bound unconnected, and sends go back to send_to.
        sock.connect(&dst.into())?;
        let sock: UdpSocket = sock.into();
        let id = match self.free_sockets.pop() {
            Some(id) => {
                self.sockets[id as usize] = Some((sock, dst));
                id
            }
            None => {
                self.sockets.push(Some((sock, dst)));
                (self.sockets.len() - 1) as u32
            }
        };
        Ok(id)
    }
}
