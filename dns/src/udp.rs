//! The UDP side of the server: one receive loop with an answer cache in front of
//! [`ClusterHandler`].
//!
//! Why not hickory's UDP server: it spawns a task and builds a full request and response per
//! packet, which held cluster DNS to about a third of an authoritative server's rate on the
//! same cores. Cluster answers change only when the Service/Endpoints cache does, so the
//! encoded response of a query can be reused: the key is the query's bytes after its ID (the
//! question name lowercased; flags, EDNS and all else included), valid while the records'
//! serial is unchanged. A hit costs a copy and two patches — the client's ID, and the question
//! name as the client spelled it (0x20 case randomisation) — and one `send_to`.
//!
//! Only authoritative responses are cached (cluster names; forwarded answers carry upstream
//! TTLs that age); the rest, and every miss, goes through the handler on its own task, at most
//! [`MAX_IN_FLIGHT`] at once (more are dropped: the client retries, as on a lost packet).
//! Malformed queries get FORMERR when their header is readable, as hickory answers them;
//! responses and shorter garbage are dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use hickory_net::NetError;
use hickory_net::runtime::TokioTime;
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Header, Message, MessageType, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::handler::ClusterHandler;
use crate::records::ClusterRecords;

/// Queries answered by the handler at once; beyond, packets are dropped.
const MAX_IN_FLIGHT: usize = 1024;
/// Responses kept; the cache starts over when full (a flood of distinct names cannot grow it).
const MAX_CACHED: usize = 16 * 1024;
/// The largest datagram read.
const MAX_DATAGRAM: usize = 4096;
/// Header bytes.
const HEADER: usize = 12;
/// Authoritative-answer bit in the third header byte.
const AA: u8 = 0x04;

/// Encoded responses by [`key`].
type Responses = HashMap<Box<[u8]>, Box<[u8]>>;

/// Encoded authoritative responses by query, valid for one records serial.
#[derive(Debug)]
pub(crate) struct AnswerCache {
    records: ClusterRecords,
    entries: RwLock<(u32, Responses)>,
}

/// Where the question name ends in a query (offset after its terminating zero), if the packet
/// is a plain query: QR 0, opcode QUERY, one question, no answer or authority records, an
/// uncompressed name.
fn question_end(packet: &[u8]) -> Option<usize> {
    if packet.len() < HEADER + 5 || packet[2] & 0xf8 != 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 {
        return None;
    }
    let mut at = HEADER;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            return Some(at + 1);
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
}

/// The cache key of a query: every byte after the ID, with the question name lowercased.
fn key(packet: &[u8], name_end: usize) -> Box<[u8]> {
    let mut key = packet[2..].to_vec();
    key[HEADER - 2..name_end - 2].make_ascii_lowercase();
    key.into_boxed_slice()
}

impl AnswerCache {
    pub(crate) fn new(records: ClusterRecords) -> Self {
        let serial = records.serial();
        Self { records, entries: RwLock::new((serial, HashMap::new())) }
    }

    /// Writes the cached response to `packet`, patched for it, into `response` and says
    /// whether there was one for the current records (the hot path: no allocation).
    pub(crate) fn answer_into(&self, packet: &[u8], response: &mut Vec<u8>) -> bool {
        let Some(name_end) = question_end(packet) else { return false };
        let mut key = [0u8; MAX_DATAGRAM];
        let Some(key) = key.get_mut(..packet.len() - 2) else { return false };
        key.copy_from_slice(&packet[2..]);
        key[HEADER - 2..name_end - 2].make_ascii_lowercase();
        let serial = self.records.serial();
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        if entries.0 != serial {
            return false;
        }
        let Some(cached) = entries.1.get(&*key) else { return false };
        response.clear();
        response.extend_from_slice(cached);
        drop(entries);
        response[..2].copy_from_slice(&packet[..2]);
        // The question is the first name of the response, at the same offset and length
        // (checked when it was cached).
        response[HEADER..name_end].copy_from_slice(&packet[HEADER..name_end]);
        true
    }

    /// [`AnswerCache::answer_into`] into a new buffer.
    #[cfg(test)]
    fn answer(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let mut response = Vec::new();
        self.answer_into(packet, &mut response).then_some(response)
    }

    /// Remembers `response` to `packet` when it is authoritative and the records have not
    /// changed since `serial` (read before the handler ran).
    pub(crate) fn insert(&self, packet: &[u8], response: &[u8], serial: u32) {
        let Some(name_end) = question_end(packet) else { return };
        if response.len() < name_end || response[2] & AA == 0 || response[HEADER..name_end] != packet[HEADER..name_end]
        {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let now = self.records.serial();
        if now != serial {
            // The records changed while the handler ran: this response may be stale already.
            return;
        }
        if entries.0 != now {
            entries.0 = now;
            entries.1.clear();
        }
        if entries.1.len() >= MAX_CACHED {
            entries.1.clear();
        }
        entries.1.insert(key(packet, name_end), response.into());
    }
}

/// Binds `addr` for UDP with `SO_REUSEPORT`, so that [`bind_more`] can add sockets the kernel
/// spreads queries over (by source address and port).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// `count` more sockets on the address `first` is bound to.
pub(crate) fn bind_more(first: &UdpSocket, count: usize) -> std::io::Result<Vec<UdpSocket>> {
    let addr = first.local_addr()?;
    (0..count).map(|_| bind(addr)).collect()
}

/// Serves UDP on `sockets` (one receive loop each, sharing one cache) until `cancel` fires.
pub(crate) async fn serve(sockets: Vec<UdpSocket>, handler: ClusterHandler, cancel: CancellationToken) {
    let cache = Arc::new(AnswerCache::new(handler.records().clone()));
    let per_loop = MAX_IN_FLIGHT / sockets.len().max(1);
    let mut loops = JoinSet::new();
    for socket in sockets {
        loops.spawn(serve_socket(socket, handler.clone(), cache.clone(), per_loop, cancel.clone()));
    }
    while loops.join_next().await.is_some() {}
}

/// One receive loop.
async fn serve_socket(
    socket: UdpSocket,
    handler: ClusterHandler,
    cache: Arc<AnswerCache>,
    max_in_flight: usize,
    cancel: CancellationToken,
) {
    let socket = Arc::new(socket);
    let mut misses = JoinSet::new();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut response = Vec::with_capacity(MAX_DATAGRAM);
    // Registered once: a fresh `cancelled()` per packet would lock the token's tree each time.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let received = tokio::select! {
            biased;
            received = socket.recv_from(&mut buffer) => received,
            () = &mut cancelled => break,
        };
        while misses.try_join_next().is_some() {}
        let (len, src) = match received {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors of earlier sends surface here on Linux; the socket is fine.
                tracing::debug!(%error, "cluster DNS: UDP receive");
                continue;
            }
        };
        if src.port() == 0 {
            continue;
        }
        let packet = &buffer[..len];
        if cache.answer_into(packet, &mut response) {
            if let Err(error) = socket.send_to(&response, src).await {
                tracing::debug!(%error, %src, "cluster DNS: UDP send");
            }
            continue;
        }
        if misses.len() >= max_in_flight {
            continue;
        }
        let (socket, cache, handler, packet) = (socket.clone(), cache.clone(), handler.clone(), packet.to_vec());
        misses.spawn(async move {
            let serial = cache.records.serial();
            let Some(response) = respond(&handler, packet.clone(), src).await else { return };
            cache.insert(&packet, &response, serial);
            if let Err(error) = socket.send_to(&response, src).await {
                tracing::debug!(%error, %src, "cluster DNS: UDP send");
            }
        });
    }
    misses.shutdown().await;
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

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut packet = id.to_be_bytes().to_vec();
        packet.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            packet.push(u8::try_from(label.len()).expect("label"));
            packet.extend(label.as_bytes());
        }
        packet.extend([0, 0, 1, 0, 1]);
        packet
    }

    #[test]
    fn keys_ignore_the_id_and_the_case_of_the_name_only() {
        let a = query(1, "Web.D.svc");
        let b = query(2, "web.d.SVC");
        let end = question_end(&a).expect("a plain query");
        assert_eq!(end, HEADER + 1 + 3 + 1 + 1 + 1 + 3 + 1);
        assert_eq!(key(&a, end), key(&b, end));
        let mut aaaa = b.clone();
        let at = aaaa.len() - 3;
        aaaa[at] = 28;
        assert_ne!(key(&aaaa, end), key(&b, end), "the type is part of the key");
        let mut response = a.clone();
        response[2] |= 0x80;
        assert_eq!(question_end(&response), None, "responses are not queries");
        let mut compressed = a.clone();
        compressed[HEADER] = 0xc0;
        assert_eq!(question_end(&compressed), None);
        assert_eq!(question_end(&a[..a.len() - 6]), None, "cut short");
    }

    #[test]
    fn cached_answers_are_patched_and_dropped_on_change() {
        use k8s_openapi::api::core::v1::{Service, ServiceSpec};
        let records = ClusterRecords::new(crate::ZoneConfig::default());
        let cache = AnswerCache::new(records.clone());
        let asked = query(7, "web.d.svc");
        let end = question_end(&asked).expect("query");
        let mut response = asked.clone();
        response[2] = 0x84; // QR + AA
        response.extend([0xc0, 0x0c]);
        let serial = records.serial();
        cache.insert(&asked, &response, serial);
        let again = query(9, "WEB.d.svc");
        let answer = cache.answer(&again).expect("cached");
        assert_eq!(&answer[..2], &[0, 9], "the client's ID");
        assert_eq!(&answer[HEADER..end], &again[HEADER..end], "the client's spelling");
        assert_eq!(&answer[end..], &response[end..]);

        let mut not_authoritative = response.clone();
        not_authoritative[2] = 0x80;
        let other = query(1, "other.d.svc");
        cache.insert(&other, &not_authoritative, serial);
        assert!(cache.answer(&other).is_none(), "only authoritative answers are kept");

        let service = Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("x".into()),
                namespace: Some("d".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec::default()),
            ..Service::default()
        };
        records.upsert_service(&service);
        assert!(cache.answer(&again).is_none(), "a change of the records empties the cache");
        cache.insert(&asked, &response, serial);
        assert!(cache.answer(&asked).is_none(), "an answer computed before the change is not kept");
    }
}
