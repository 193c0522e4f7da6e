//! The echo server over io_uring, with no executor in between: one
//! multishot RECVMSG feeds datagrams into a ring of provided buffers, and
//! each is answered with a SENDMSG straight from the buffer it arrived in,
//! all the SENDMSGs of one round of completions going to the kernel in the
//! one `io_uring_enter` that also waits for the next round. A buffer goes
//! back to the ring when its SENDMSG completes.
//!
//! `defer` sets IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN: completion work
//! then runs only when this thread enters the kernel, in batches, rather
//! than interrupting it whenever a datagram arrives.

use super::{is_stop, thread_cpu};
use io_uring::{IoUring, cqueue, opcode, types};
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Provided buffers: more than the client ever has in flight, so the
/// multishot receive never runs dry (it is re-armed if it does).
const BUFFERS: u16 = 256;
const BUF_SIZE: usize = 2048;
const GROUP: u16 = 7;
/// user_data of the receive; a send carries its buffer id.
const RECV: u64 = u64::MAX;

/// The provided-buffer ring shared with the kernel: a page-aligned array of
/// entries whose tail we advance, and the buffers they point into.
struct BufRing {
    entries: *mut types::BufRingEntry,
    layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    tail: u16,
}

impl BufRing {
    fn new() -> Self {
        let layout = Layout::from_size_align(BUFFERS as usize * std::mem::size_of::<types::BufRingEntry>(), 4096).unwrap();
        let bufs_layout = Layout::from_size_align(BUFFERS as usize * BUF_SIZE, 4096).unwrap();
        // SAFETY: non-zero sizes; freed in Drop with the same layouts.
        let (entries, bufs) = unsafe { (alloc_zeroed(layout).cast::<types::BufRingEntry>(), alloc_zeroed(bufs_layout)) };
        assert!(!entries.is_null() && !bufs.is_null());
        let mut ring = BufRing { entries, layout, bufs, bufs_layout, tail: 0 };
        for bid in 0..BUFFERS {
            ring.provide(bid);
        }
        ring.publish();
        ring
    }

    /// Queues buffer `bid` for the kernel; visible after `publish`.
    fn provide(&mut self, bid: u16) {
        // SAFETY: the index is masked into the array; the entry's `resv`
        // field (the ring's tail, in entry 0) is not touched by the setters.
        let e = unsafe { &mut *self.entries.add((self.tail & (BUFFERS - 1)) as usize) };
        e.set_addr(self.bufs as u64 + bid as u64 * BUF_SIZE as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail is a u16 inside entry 0, which the kernel reads
        // with acquire semantics.
        let tail = unsafe { &*types::BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < BUFFERS && len <= BUF_SIZE);
        // SAFETY: inside the allocation; the kernel has finished writing it
        // (its completion has been reaped).
        unsafe { std::slice::from_raw_parts(self.bufs.add(bid as usize * BUF_SIZE), len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring was
        // unregistered (or the io_uring dropped) before.
        unsafe {
            dealloc(self.entries.cast(), self.layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}

/// What one SENDMSG needs to stay alive until it completes: one per buffer.
#[derive(Clone, Copy)]
struct SendSlot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    to: libc::sockaddr_in,
}

/// Returns (datagrams echoed, server-thread CPU).
pub fn serve(sock: socket2::Socket, defer: bool) -> (u64, Duration) {
    let fd = types::Fd(sock.as_raw_fd());
    let mut builder = IoUring::builder();
    if defer {
        builder.setup_single_issuer().setup_defer_taskrun();
    }
    // Declared first so it is dropped after the ring that points into it.
    let mut bufs = BufRing::new();
    let mut ring = builder.build(1024).expect("io_uring setup");
    // SAFETY: the ring memory outlives the registration (dropped after `ring`).
    unsafe { ring.submitter().register_buf_ring_with_flags(bufs.entries as u64, BUFFERS, GROUP, 0) }.expect("provided buffer ring (kernel 5.19+)");

    // The multishot receive reads only the name and control lengths here.
    // SAFETY: all-zero is a valid msghdr.
    let mut recv_hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    recv_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    let recv = opcode::RecvMsgMulti::new(fd, &recv_hdr, GROUP).build().user_data(RECV);
    // SAFETY: zeroed slots are valid; pointers are set before each use.
    let mut slots: Vec<SendSlot> = vec![unsafe { std::mem::zeroed() }; BUFFERS as usize];
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(2 * BUFFERS as usize);

    // SAFETY: `recv_hdr` lives until the end of this function.
    unsafe { ring.submission().push(&recv) }.unwrap();
    let cpu0 = thread_cpu();
    let mut n = 0u64;
    loop {
        ring.submit_and_wait(1).expect("io_uring_enter");
        done.clear();
        done.extend(ring.completion().map(|c: cqueue::Entry| (c.user_data(), c.result(), c.flags())));
        let (mut rearm, mut recycled) = (false, false);
        for &(what, res, flags) in &done {
            if what != RECV {
                bufs.provide(what as u16);
                recycled = true;
                assert!(res >= 0, "sendmsg: {}", std::io::Error::from_raw_os_error(-res));
                continue;
            }
            rearm |= !cqueue::more(flags);
            if res == -libc::ENOBUFS {
                continue;
            }
            assert!(res >= 0, "recvmsg: {}", std::io::Error::from_raw_os_error(-res));
            let bid = cqueue::buffer_select(flags).expect("a received datagram names its buffer");
            let out = types::RecvMsgOut::parse(bufs.buf(bid, res as usize), &recv_hdr).expect("recvmsg_out header");
            let payload = out.payload_data();
            if is_stop(payload) {
                return (n, thread_cpu() - cpu0);
            }
            let slot = &mut slots[bid as usize];
            // SAFETY: the name is a sockaddr_in (IPv4 socket) of the
            // length asked for; copied unaligned out of the buffer.
            slot.to = unsafe { std::ptr::read_unaligned(out.name_data().as_ptr().cast::<libc::sockaddr_in>()) };
            slot.iov = libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() };
            slot.hdr.msg_name = (&mut slot.to as *mut libc::sockaddr_in).cast();
            slot.hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            slot.hdr.msg_iov = &mut slot.iov;
            slot.hdr.msg_iovlen = 1;
            let send = opcode::SendMsg::new(fd, &slot.hdr).build().user_data(bid as u64);
            // SAFETY: the slot and the buffer stay untouched until this
            // send's completion returns the buffer. The queue holds every
            // buffer's send plus the receive.
            unsafe { ring.submission().push(&send) }.expect("submission queue has room for every buffer");
            n += 1;
        }
        if recycled {
            bufs.publish();
        }
        if rearm {
            // SAFETY: as for the first receive.
            unsafe { ring.submission().push(&recv) }.unwrap();
        }
    }
}
