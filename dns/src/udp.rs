//! The UDP side of the server: receive threads with an answer cache in front of
//! [`ClusterHandler`].
//!
//! Why not hickory's UDP server: it spawns a task and builds a full request and response per
//! packet, which held cluster DNS to about a third of an authoritative server's rate on the
//! same cores. Repeated queries are answered from the [`AnswerCache`] (`cache.rs`) instead.
//!
//! Why threads rather than tasks: a cache hit is a few hundred nanoseconds of work, so what
//! costs is around it — system calls and wake-ups. Each socket (`SO_REUSEPORT`, the kernel
//! spreads clients over them) gets a dedicated thread blocked in `recvmmsg` (`mmsg.rs`): a
//! flood is read up to [`BATCH`](crate::mmsg::BATCH) queries per call and the hits answered in
//! one `sendmmsg`, and a lone query wakes its thread directly instead of waiting for a runtime
//! worker that may be busy with the rest of the node (API server, controllers, pods).
//!
//! Misses go to the handler on the tokio runtime, one task each, at most [`MAX_IN_FLIGHT`] at
//! once (more are dropped: the client retries, as on a lost packet); the task caches the
//! response when it may ([`AnswerCache::insert`]) and sends it. Malformed queries get FORMERR
//! when their header is readable, as hickory answers them; responses and shorter garbage are
//! dropped. The threads notice cancellation within [`POLL`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_net::NetError;
use hickory_net::runtime::TokioTime;
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Header, Message, MessageType, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use socket2::{SockAddr, Socket};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::AnswerCache;
use crate::handler::ClusterHandler;
use crate::mmsg::{MAX_DATAGRAM, RecvBatch, SendBatch};

/// Queries answered by the handler at once; beyond, packets are dropped.
const MAX_IN_FLIGHT: usize = 1024;
/// How long a receive thread blocks before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Binds `addr` for UDP with `SO_REUSEPORT`, so that [`bind_more`] can add sockets the kernel
/// spreads queries over (by source address and port). Blocking, with a [`POLL`] receive timeout:
/// the socket is read by a thread of its own.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    socket.set_reuse_port(true)?;
    socket.set_read_timeout(Some(POLL))?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// The address `socket` is bound to.
pub(crate) fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))
}

/// `count` more sockets on the address `first` is bound to.
pub(crate) fn bind_more(first: &Socket, count: usize) -> io::Result<Vec<Socket>> {
    let addr = local_addr(first)?;
    (0..count).map(|_| bind(addr)).collect()
}

/// What the receive threads and miss tasks share.
#[derive(Debug)]
struct Shared {
    cache: AnswerCache,
    handler: ClusterHandler,
    runtime: Handle,
    misses: TaskTracker,
    in_flight: AtomicUsize,
    stop: AtomicBool,
    cancel: CancellationToken,
}

/// Starts serving UDP on `sockets` (one receive thread each, sharing one cache) on the current
/// tokio runtime; the returned task ends once `cancel` fired and every thread and miss task
/// has stopped.
pub(crate) fn spawn(
    sockets: Vec<Socket>,
    handler: ClusterHandler,
    cancel: CancellationToken,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let shared = Arc::new(Shared {
        cache: AnswerCache::new(handler.records().clone()),
        handler,
        runtime: Handle::current(),
        misses: TaskTracker::new(),
        in_flight: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        cancel,
    });
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let (thread_shared, socket) = (shared.clone(), Arc::new(socket));
        let started = std::thread::Builder::new()
            .name(format!("cluster-dns-udp-{i}"))
            .spawn(move || receive(&socket, &thread_shared));
        match started {
            Ok(thread) => threads.push(thread),
            Err(error) => {
                // The threads already started see the flag within POLL.
                shared.stop.store(true, Ordering::Release);
                return Err(error);
            }
        }
    }
    Ok(tokio::spawn(async move {
        shared.cancel.cancelled().await;
        shared.stop.store(true, Ordering::Release);
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
        shared.misses.close();
        shared.misses.wait().await;
    }))
}

/// One receive thread: batches of queries in, cache hits out in one batch, misses to the
/// runtime.
fn receive(socket: &Arc<Socket>, shared: &Arc<Shared>) {
    let fd = socket.as_raw_fd();
    let mut batch = RecvBatch::default();
    let mut replies = SendBatch::default();
    let mut scratch = Vec::with_capacity(MAX_DATAGRAM);
    while !shared.stop.load(Ordering::Acquire) {
        match batch.recv(fd) {
            Ok(_) => {}
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            Err(error) => {
                // ICMP errors of earlier sends surface here on Linux; the socket is fine.
                tracing::debug!(%error, "cluster DNS: UDP receive");
                continue;
            }
        }
        for (packet, peer) in batch.iter() {
            let Some(src) = peer.addr().filter(|src| src.port() != 0) else { continue };
            if shared.cache.answer_into(packet, &mut scratch, replies.buffer()) {
                replies.push(*peer);
            } else {
                miss(shared, socket, packet, src);
            }
        }
        if replies.len() > 0 {
            replies.flush(fd);
        }
    }
}

/// Hands `packet` to the handler on the runtime, unless [`MAX_IN_FLIGHT`] are there already.
fn miss(shared: &Arc<Shared>, socket: &Arc<Socket>, packet: &[u8], src: SocketAddr) {
    if shared.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
        shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let (task_shared, socket, packet) = (shared.clone(), socket.clone(), packet.to_vec());
    shared.misses.spawn_on(
        async move {
            let shared = task_shared;
            let _slot = InFlight(&shared.in_flight);
            let serial = shared.cache.records().serial();
            let answered = shared.cancel.run_until_cancelled(respond(&shared.handler, packet.clone(), src)).await;
            let Some(response) = answered.flatten() else { return };
            shared.cache.insert(&packet, &response, serial);
            if let Err(error) = socket.send_to_with_flags(&response, &SockAddr::from(src), libc::MSG_DONTWAIT) {
                tracing::debug!(%error, %src, "cluster DNS: UDP send");
            }
        },
        &shared.runtime,
    );
}

/// A handler slot, given back when the miss task ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The handler's encoded response to `packet`, FORMERR for an unreadable query, or nothing
/// (a response, or shorter than a header).
pub(crate) async fn respond(handler: &ClusterHandler, packet: Vec<u8>, src: SocketAddr) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(&packet)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    match Request::from_bytes(packet, src, Protocol::Udp) {
        Ok(request) => {
            let capture = Capture::default();
            handler.handle_request::<_, TokioTime>(&request, capture.clone()).await;
            capture.take()
        }
        Err(_) => Message::error_msg(header.metadata.id, header.metadata.op_code, ResponseCode::FormErr).to_vec().ok(),
    }
}

/// A [`ResponseHandler`] keeping the encoded response instead of sending it.
#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

impl Capture {
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // The handler already fitted the sections to the client's buffer.
        let mut bytes = Vec::with_capacity(512);
        let info = response.destructive_emit(&mut BinEncoder::new(&mut bytes))?;
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(bytes);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ZoneConfig;
    use crate::cache::tests::query;
    use crate::records::ClusterRecords;
    use crate::records::tests::service;
    use hickory_proto::rr::RData;
    use std::collections::HashMap;
    use std::time::Instant;

    /// Services `web-0` … `web-7` in namespace `d`, at 10.96.0.20 + i.
    fn records() -> ClusterRecords {
        let records = ClusterRecords::new(ZoneConfig::default());
        for i in 0..8u8 {
            records.upsert_service(&service("d", &format!("web-{i}"), &format!("10.96.0.{}", 20 + i), &[]));
        }
        records
    }

    /// `name` with every other letter upper case, as 0x20 randomisation might spell it.
    fn mixed_case(name: &str) -> String {
        name.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect()
    }

    /// Sends `packets` at once, alternating between two client sockets (so that both server
    /// sockets get some), and collects replies by ID until `expected` arrived or 5 s passed.
    fn burst(server: SocketAddr, packets: &[Vec<u8>], expected: usize) -> HashMap<u16, Message> {
        let clients: Vec<std::net::UdpSocket> =
            (0..2).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("client")).collect();
        for (i, packet) in packets.iter().enumerate() {
            clients[i % 2].send_to(packet, server).expect("send");
        }
        let mut replies = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buffer = [0u8; MAX_DATAGRAM];
        while replies.len() < expected && Instant::now() < deadline {
            for client in &clients {
                client.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
                while let Ok(len) = client.recv(&mut buffer) {
                    let message = Message::from_vec(&buffer[..len]).expect("a readable reply");
                    assert!(replies.insert(message.metadata.id, message).is_none(), "one reply per query");
                }
            }
        }
        replies
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bursts_with_garbage_get_every_answer_right() {
        let cancel = CancellationToken::new();
        let first = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let server = local_addr(&first).expect("addr");
        let mut sockets = bind_more(&first, 1).expect("bind more");
        sockets.push(first);
        let task = spawn(sockets, ClusterHandler::new(records(), None), cancel.clone()).expect("spawn");

        // Twice the same burst: first mostly answered by the handler, then from the cache.
        for round in 0..2u16 {
            let mut packets = Vec::new();
            let mut names = HashMap::new();
            for i in 0..40u16 {
                let id = round * 1000 + i;
                let name = format!("web-{}.d.svc.cluster.local", i % 8);
                let spelled = if i % 3 == 0 { mixed_case(&name) } else { name.clone() };
                packets.push(query(id, &spelled));
                names.insert(id, (spelled, format!("10.96.0.{}", 20 + i % 8)));
                if i % 10 == 0 {
                    // A readable header and garbage after it: FORMERR.
                    let id = round * 1000 + 500 + i;
                    packets.push([&id.to_be_bytes()[..], &[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff]].concat());
                    // Shorter than a header, and a response: dropped.
                    packets.push(vec![0xde, 0xad, 0xbe]);
                    let mut response = query(round * 1000 + 900 + i, &name);
                    response[2] |= 0x80;
                    packets.push(response);
                }
            }
            let expected = names.len() + 4;
            let replies = tokio::task::spawn_blocking(move || burst(server, &packets, expected)).await.expect("burst");
            assert_eq!(replies.len(), expected, "round {round}: every query answered once, garbage not");
            for (id, (spelled, ip)) in &names {
                let reply = &replies[id];
                assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{spelled}");
                assert!(reply.metadata.authoritative);
                assert_eq!(reply.queries[0].name().to_ascii().trim_end_matches('.'), spelled, "the client's spelling");
                let RData::A(a) = &reply.answers[0].data else { panic!("{spelled}: not an A answer") };
                assert_eq!(a.to_string(), *ip);
            }
            for i in (0..40u16).step_by(10) {
                let reply = &replies[&(round * 1000 + 500 + i)];
                assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
            }
        }
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops promptly").expect("task");
    }
}
