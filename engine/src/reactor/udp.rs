//! Batched UDP on a shard's socket: `recvmmsg`/`sendmmsg` straight on the
//! file descriptor, non-blocking. glommio's own `UdpSocket` moves one
//! datagram per call through an internal copy; the reactor uses it only to
//! await readiness when the socket is drained (see ARCHITECTURE.md for the
//! measurement behind this).

use crate::core::peer::Transmit;
use socket2::SockAddr;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Room for one SCM_TIMESTAMPNS control message per datagram.
const CONTROL: usize = 64;

/// Asks the kernel to stamp each datagram with its arrival time
/// (SO_TIMESTAMPNS): the start of its queueing delay, which overload
/// control measures. Without it (an old kernel) the delay reads as zero.
pub fn enable_timestamps(s: &socket2::Socket) {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and an int option of the declared size.
    let rc = unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, (&on as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as u32)
    };
    if rc != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "no kernel receive timestamps: overload control sees no queueing delay");
    }
}

/// Receive buffers for one batch. Each slot is one byte longer than the
/// largest message accepted, so an oversize datagram is seen as such.
pub struct RecvBatch {
    slot: usize,
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
    controls: Vec<u8>,
    filled: usize,
    /// When the last batch was taken, in both clocks (the kernel's stamps
    /// are wall-clock time).
    taken: (Instant, SystemTime),
}

impl RecvBatch {
    pub fn new(batch: usize, max_message: usize) -> Self {
        let slot = max_message + 1;
        RecvBatch {
            slot,
            bufs: vec![0; batch * slot],
            iovs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; batch],
            addrs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; batch],
            hdrs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; batch],
            controls: vec![0; batch * CONTROL],
            filled: 0,
            taken: (Instant::now(), SystemTime::now()),
        }
    }

    /// Datagrams one receive takes at most.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to a batch without blocking; `Ok(0)` when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let batch = self.hdrs.len();
        for i in 0..batch {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i * self.slot..].as_mut_ptr().cast(), iov_len: self.slot };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.controls[i * CONTROL..].as_mut_ptr().cast();
            h.msg_controllen = CONTROL as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by self, sized as declared.
        let n = unsafe { libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), batch as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        self.filled = 0;
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        self.filled = n as usize;
        self.taken = (Instant::now(), SystemTime::now());
        Ok(self.filled)
    }

    /// When datagram `i` of the last receive reached the socket (the
    /// kernel's stamp, on the monotonic clock); when it was taken if it
    /// carries none.
    pub fn received(&self, i: usize) -> Instant {
        let (now, wall) = self.taken;
        let h = &self.hdrs[i].msg_hdr;
        // SAFETY: the kernel filled msg_control up to msg_controllen; the
        // CMSG macros stay within it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    let stamp = UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
                    // A stamp from the future (clock step) counts as no wait.
                    let waited = wall.duration_since(stamp).unwrap_or_default().min(Duration::from_secs(60));
                    return now.checked_sub(waited).unwrap_or(now);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        now
    }

    /// Datagram `i` of the last receive and its source. A datagram larger
    /// than the slot comes back cut to the slot (one byte over the limit),
    /// which the parser answers with 513.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.filled {
            return None;
        }
        let len = (self.hdrs[i].msg_len as usize).min(self.slot);
        let namelen = self.hdrs[i].msg_hdr.msg_namelen;
        // SAFETY: the kernel wrote a sockaddr of `namelen` bytes into addrs[i].
        let addr = unsafe { SockAddr::new(std::ptr::read(&self.addrs[i]), namelen) }.as_socket()?;
        Some((&self.bufs[i * self.slot..i * self.slot + len], addr))
    }
}

/// Datagrams waiting to leave, sent in one `sendmmsg` per flush. A
/// datagram in two parts (`Transmit::shared`, a NOTIFY's document) is
/// gathered by the kernel from two iovecs.
#[derive(Default)]
pub struct SendBatch {
    queue: Vec<Transmit>,
    /// Per flush, for the datagrams it sends: their addresses in the
    /// kernel's form, two iovecs each (the shared one empty when there is
    /// none), and their headers.
    names: Vec<SockAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    /// Queues a datagram to `t.to.addr`.
    pub fn push(&mut self, t: Transmit) {
        self.queue.push(t);
    }

    /// Takes the oldest queued datagram, as one buffer (to send it by
    /// other means).
    pub fn pop_front(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        if self.queue.is_empty() {
            return None;
        }
        let t = self.queue.remove(0);
        Some((t.to.addr, t.into_contiguous()))
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Gives back the room a burst took (see `core::room::GiveBack`).
    pub fn give_back(&mut self, keep: usize) {
        use crate::core::room::GiveBack;
        self.queue.give_back(keep);
        self.names.give_back(keep);
        self.iovs.give_back(2 * keep);
        self.hdrs.give_back(keep);
    }

    /// Sends what the socket takes without blocking and keeps the rest
    /// queued (send buffer full). Datagrams the kernel refuses for good
    /// (an unreachable address) are dropped and counted in the result.
    pub fn flush(&mut self, fd: RawFd, max_batch: usize) -> io::Result<FlushResult> {
        let mut res = FlushResult::default();
        while !self.queue.is_empty() {
            let n = self.queue.len().min(max_batch);
            self.names.clear();
            self.iovs.clear();
            self.hdrs.clear();
            for t in &self.queue[..n] {
                let shared: &[u8] = t.shared.as_deref().unwrap_or_default();
                self.names.push(SockAddr::from(t.to.addr));
                self.iovs.push(libc::iovec { iov_base: t.bytes.as_ptr() as *mut _, iov_len: t.bytes.len() });
                self.iovs.push(libc::iovec { iov_base: shared.as_ptr() as *mut _, iov_len: shared.len() });
            }
            for (i, t) in self.queue[..n].iter().enumerate() {
                let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
                h.msg_hdr.msg_name = self.names[i].as_ptr() as *mut _;
                h.msg_hdr.msg_namelen = self.names[i].len();
                h.msg_hdr.msg_iov = &mut self.iovs[2 * i];
                h.msg_hdr.msg_iovlen = if t.shared.is_some() { 2 } else { 1 };
                self.hdrs.push(h);
            }
            // SAFETY: headers point into self.queue, self.names and
            // self.iovs, alive for the call.
            let sent = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
            if sent < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        res.blocked = true;
                        return Ok(res);
                    }
                    io::ErrorKind::Interrupted => continue,
                    // The first datagram is refused (unreachable, too big):
                    // drop it and go on with the rest.
                    _ => {
                        self.queue.remove(0);
                        res.dropped += 1;
                        continue;
                    }
                }
            }
            let sent = sent as usize;
            res.sent += sent;
            self.queue.drain(..sent);
        }
        Ok(res)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct FlushResult {
    pub sent: usize,
    pub dropped: usize,
    /// The send buffer is full: wait for writability and flush again.
    pub blocked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::peer::Peer;
    use std::net::UdpSocket;
    use std::sync::Arc;

    fn two_parts(to: SocketAddr, head: &[u8], doc: &Arc<[u8]>) -> Transmit {
        Transmit { to: Peer::udp(to), bytes: head.to_vec(), shared: Some(doc.clone()) }
    }

    /// Over a real socket: a datagram queued in two parts arrives as one,
    /// and one queued whole beside it is unchanged.
    #[test]
    fn a_datagram_in_two_parts_arrives_whole() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let doc: Arc<[u8]> = Arc::from(&b"<presence>shared</presence>"[..]);
        let mut batch = SendBatch::default();
        batch.push(two_parts(to, b"NOTIFY one\r\n\r\n", &doc));
        batch.push(Transmit::new(Peer::udp(to), b"SIP/2.0 200 OK\r\n\r\n".to_vec()));
        batch.push(two_parts(to, b"NOTIFY two\r\n\r\n", &doc));
        let res = batch.flush(tx.as_raw_fd(), 64).unwrap();
        assert_eq!((res.sent, res.dropped, batch.len()), (3, 0, 0));
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = rx.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got, ["NOTIFY one\r\n\r\n<presence>shared</presence>", "SIP/2.0 200 OK\r\n\r\n", "NOTIFY two\r\n\r\n<presence>shared</presence>"]);
    }

    /// A datagram taken out to be sent by other means is whole.
    #[test]
    fn pop_front_joins_the_parts() {
        let mut batch = SendBatch::default();
        let to: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        batch.push(two_parts(to, b"head|", &Arc::from(&b"body"[..])));
        assert_eq!(batch.pop_front(), Some((to, b"head|body".to_vec())));
        assert!(batch.is_empty());
    }
}
