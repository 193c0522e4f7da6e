//! TCP: each shard accepts on its own listener; a connection belongs to
//! the shard that accepted it for its whole life. A reader task frames the
//! stream and feeds the core; a writer task drains the connection's queue,
//! which other shards reach through the mesh (the connection id names the
//! owning shard).

use super::runtime::Runtime;
use crate::core::{ConnId, Peer, Transmit};
use crate::sip::{Frame, StreamFramer};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;
use std::time::Instant;

const READ_CHUNK: usize = 16 * 1024;

/// The sending side of one connection: its queue, the bytes waiting in it
/// (a limit), and its socket, to close a peer that does not read.
pub(crate) struct ConnWriter {
    tx: LocalSender<Vec<u8>>,
    pub queued: Rc<Cell<usize>>,
    fd: RawFd,
}

impl ConnWriter {
    pub fn send(&self, bytes: Vec<u8>) {
        self.queued.set(self.queued.get() + bytes.len());
        let _ = self.tx.try_send(bytes);
    }

    /// Shuts the socket down both ways: the writer blocked on a peer that
    /// does not read fails, and the reader ends.
    pub fn close(&self) {
        // SAFETY: the fd is the connection's, open while its tasks run.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
    }
}

pub(crate) async fn accept_loop(rt: Rc<Runtime>, listener: socket2::Socket) {
    // SAFETY: the fd comes from a listening socket we own; ownership moves.
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(shard = rt.id, error = %e, "TCP accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if rt.conns.borrow().len() >= rt.cfg.limits.max_tcp_connections_per_shard {
            // Logged once per shard: a flood of connections must not
            // become a flood of log lines; the count says how many.
            if rt.tcp_limited.get().refused == 0 {
                tracing::warn!(shard = rt.id, limit = rt.cfg.limits.max_tcp_connections_per_shard, "TCP connection limit reached; new connections are closed");
            }
            rt.count_tcp_limit(|c| c.refused += 1);
            continue;
        }
        let Ok(remote) = stream.peer_addr() else { continue };
        let _ = stream.set_nodelay(true);
        let seq = rt.next_conn.get();
        rt.next_conn.set(seq + 1);
        let conn = ConnId::new(rt.id, seq);
        glommio::spawn_local(serve(rt.clone(), stream, Peer::tcp(remote, conn))).detach();
    }
}

async fn serve(rt: Rc<Runtime>, stream: TcpStream, peer: Peer) {
    let fd = stream.as_raw_fd();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_unbounded::<Vec<u8>>();
    let queued = Rc::new(Cell::new(0usize));
    rt.conns.borrow_mut().insert(peer.conn, ConnWriter { tx, queued: queued.clone(), fd });
    tracing::debug!(shard = rt.id, peer = %peer.addr, "TCP connection open");
    let writer_task = glommio::spawn_local(async move {
        while let Some(bytes) = rx.recv().await {
            let ok = writer.write_all(&bytes).await.is_ok();
            queued.set(queued.get().saturating_sub(bytes.len()));
            if !ok {
                break;
            }
        }
        let _ = writer.close().await;
    });
    let idle = Duration::from_secs(rt.cfg.limits.tcp_idle_timeout_seconds.max(1));

    let mut framer = StreamFramer::new(rt.cfg.parse_limits());
    'read: loop {
        rt.wait_while_holding().await;
        let space = framer.read_space(READ_CHUNK);
        // A connection silent for the idle timeout is closed (RFC 5626
        // keep-alives, a CRLF pair, count as traffic).
        let read = async { reader.read(space).await.unwrap_or(0) };
        let timed_out = async {
            glommio::timer::sleep(idle).await;
            usize::MAX
        };
        let n = match futures_lite::future::or(read, timed_out).await {
            usize::MAX => {
                tracing::debug!(shard = rt.id, peer = %peer.addr, "TCP connection idle; closed");
                rt.count_tcp_limit(|c| c.idle += 1);
                0
            }
            n => n,
        };
        framer.commit(n, READ_CHUNK);
        if n == 0 {
            break;
        }
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(raw))) => {
                    let bytes = raw.as_bytes();
                    rt.with_core(|core, out| core.on_message(Instant::now(), peer, bytes, out));
                }
                Ok(Some(Frame::Ping)) => {
                    // RFC 5626 4.4.1: a double-CRLF ping gets a CRLF pong.
                    rt.write_tcp(Transmit::new(peer, b"\r\n".to_vec()));
                }
                Ok(Some(Frame::Pong)) => {}
                Ok(None) => break,
                Err(e) => {
                    // The stream cannot be resynchronised: answer from what
                    // is buffered if it holds a head, then close.
                    let pending = framer.pending();
                    rt.with_core(|core, out| core.on_stream_error(std::time::Instant::now(), peer, pending, e, out));
                    break 'read;
                }
            }
        }
    }
    // Dropping the queue's sender ends the writer once it has written what
    // is queued (an answer to the last request included).
    rt.conns.borrow_mut().remove(&peer.conn);
    let _ = writer_task.await;
    tracing::debug!(shard = rt.id, peer = %peer.addr, "TCP connection closed");
}
