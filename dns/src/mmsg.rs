//! Batched UDP I/O: up to [`BATCH`] datagrams per `recvmmsg`/`sendmmsg` system call.
//!
//! Why: under a flood the UDP loop's cost is mostly system calls — one receive and one send per
//! query. `recvmmsg` with `MSG_WAITFORONE` blocks for the first datagram and then takes whatever
//! else is queued, so a busy socket is drained many queries per call while a quiet one still
//! answers each query at once; the answers of a batch leave in one `sendmmsg`.
//!
//! Owns the only foreign calls of the crate (and their `unsafe`); the buffers they fill are owned
//! by the batch structs and outlive every call. Linux only, like the rest of the node.

#![allow(unsafe_code)] // recvmmsg/sendmmsg; see the SAFETY notes

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call.
pub(crate) const BATCH: usize = 32;
/// The largest datagram read (longer ones are cut, as `recv_from` does).
pub(crate) const MAX_DATAGRAM: usize = 4096;

/// A datagram's source (and so its reply's destination), as the kernel wrote it.
#[derive(Clone, Copy)]
pub(crate) struct Peer {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peer({:?})", self.addr())
    }
}

impl Peer {
    fn empty() -> Self {
        // SAFETY: sockaddr_storage is plain old data; all zeros is a valid (AF_UNSPEC) value.
        Self { storage: unsafe { mem::zeroed() }, len: 0 }
    }

    /// The address, for IPv4 and IPv6 peers.
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        let len = self.len as usize;
        match libc::c_int::from(self.storage.ss_family) {
            libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a sockaddr_in (family AF_INET, length checked) at the
                // start of the storage, which is larger and at least as aligned.
                let sin: libc::sockaddr_in =
                    unsafe { std::ptr::read((&raw const self.storage).cast::<libc::sockaddr_in>()) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for a sockaddr_in6.
                let sin6: libc::sockaddr_in6 =
                    unsafe { std::ptr::read((&raw const self.storage).cast::<libc::sockaddr_in6>()) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let port = u16::from_be(sin6.sin6_port);
                Some(SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id)))
            }
            _ => None,
        }
    }
}

/// Receive buffers for one `recvmmsg` call, and what it received.
pub(crate) struct RecvBatch {
    buffers: Box<[[u8; MAX_DATAGRAM]]>,
    peers: Box<[Peer]>,
    lens: [usize; BATCH],
    count: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("count", &self.count).finish_non_exhaustive()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            buffers: vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice(),
            peers: vec![Peer::empty(); BATCH].into_boxed_slice(),
            lens: [0; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// Waits for at least one datagram on `fd` (as long as the socket's receive timeout lets it)
    /// and takes up to [`BATCH`] that are queued; returns how many.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        // SAFETY: iovec and mmsghdr are plain old data; zeros are null pointers and lengths.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, (iovec, header)) in iovecs.iter_mut().zip(headers.iter_mut()).enumerate() {
            iovec.iov_base = self.buffers[i].as_mut_ptr().cast();
            iovec.iov_len = MAX_DATAGRAM;
            header.msg_hdr.msg_name = (&raw mut self.peers[i].storage).cast();
            header.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `headers` holds BATCH valid message headers whose name and iovec pointers point
        // into `self.peers`, `self.buffers` and `iovecs`, all alive and unaliased for the call;
        // a null timeout means none (the socket's SO_RCVTIMEO applies).
        let received = unsafe {
            libc::recvmmsg(fd, headers.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        let Ok(count) = usize::try_from(received) else {
            return Err(io::Error::last_os_error());
        };
        for (i, header) in headers.iter().take(count).enumerate() {
            self.lens[i] = (header.msg_len as usize).min(MAX_DATAGRAM);
            self.peers[i].len = header.msg_hdr.msg_namelen;
        }
        self.count = count;
        Ok(count)
    }

    /// The datagrams of the last [`RecvBatch::recv`], with their sources.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &Peer)> {
        (0..self.count).map(|i| (&self.buffers[i][..self.lens[i]], &self.peers[i]))
    }
}

/// Replies gathered for one `sendmmsg` call: their bytes back to back, and where each goes.
#[derive(Debug, Default)]
pub(crate) struct SendBatch {
    bytes: Vec<u8>,
    /// End offset in `bytes` and destination of each reply.
    replies: Vec<(usize, Peer)>,
}

impl SendBatch {
    /// The buffer to append the next reply to; [`SendBatch::push`] then seals it.
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Seals the bytes appended since the last reply as one to `peer`.
    pub(crate) fn push(&mut self, peer: Peer) {
        self.replies.push((self.bytes.len(), peer));
    }

    /// Replies waiting.
    pub(crate) fn len(&self) -> usize {
        self.replies.len()
    }

    /// Sends every reply on `fd` (in calls of up to [`BATCH`]) and empties the batch. A reply
    /// the kernel refuses is skipped (UDP: the client retries); errors are counted, not returned.
    pub(crate) fn flush(&mut self, fd: RawFd) -> usize {
        let mut failed = 0;
        let mut next = 0;
        while next < self.replies.len() {
            let mut start = if next == 0 { 0 } else { self.replies[next - 1].0 };
            let chunk = &self.replies[next..(next + BATCH).min(self.replies.len())];
            // SAFETY: plain old data, as in `recv`.
            let mut iovecs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
            // SAFETY: as above.
            let mut headers: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
            for ((iovec, header), (end, peer)) in iovecs.iter_mut().zip(headers.iter_mut()).zip(chunk) {
                // The kernel only reads through these pointers (sendmmsg's buffers are const).
                iovec.iov_base = self.bytes[start..*end].as_ptr().cast_mut().cast();
                iovec.iov_len = *end - start;
                header.msg_hdr.msg_name = (&raw const peer.storage).cast_mut().cast();
                header.msg_hdr.msg_namelen = peer.len;
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
                start = *end;
            }
            let count = chunk.len();
            // SAFETY: the first `count` headers point into `self.bytes`, `self.replies` and
            // `iovecs`, alive and not otherwise used during the call; the kernel only reads them.
            let sent = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), count as libc::c_uint, 0) };
            match usize::try_from(sent) {
                Ok(sent) if sent > 0 => next += sent,
                _ => {
                    let error = io::Error::last_os_error();
                    if error.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    tracing::debug!(%error, "cluster DNS: UDP send");
                    failed += 1;
                    next += 1;
                }
            }
        }
        self.bytes.clear();
        self.replies.clear();
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_burst_is_received_in_batches_and_answered_in_one() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        client.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("timeout");
        let to = server.local_addr().expect("addr");
        let sent = BATCH + 5;
        for i in 0..sent {
            client.send_to(format!("datagram {i}").as_bytes(), to).expect("send");
        }
        let mut batch = RecvBatch::default();
        let mut replies = SendBatch::default();
        let mut received = Vec::new();
        while received.len() < sent {
            let count = batch.recv(server.as_raw_fd()).expect("recv");
            assert!((1..=BATCH).contains(&count));
            for (datagram, peer) in batch.iter() {
                assert_eq!(peer.addr(), Some(client.local_addr().expect("addr")));
                received.push(String::from_utf8(datagram.to_vec()).expect("utf8"));
                replies.buffer().extend_from_slice(b"re: ");
                replies.buffer().extend_from_slice(datagram);
                replies.push(*peer);
            }
        }
        assert_eq!(received, (0..sent).map(|i| format!("datagram {i}")).collect::<Vec<_>>());
        assert_eq!(replies.len(), sent);
        assert_eq!(replies.flush(server.as_raw_fd()), 0, "no send failed");
        assert_eq!(replies.len(), 0);
        let mut buffer = [0u8; 64];
        for i in 0..sent {
            let (len, _) = client.recv_from(&mut buffer).expect("reply");
            assert_eq!(&buffer[..len], format!("re: datagram {i}").as_bytes());
        }
    }
}
