//! TCP: each shard accepts on its own listener; a connection belongs to
//! the shard that accepted it for its whole life. A reader task frames the
//! stream and feeds the core; a writer task drains the connection's queue,
//! which other shards reach through the mesh (the connection id names the
//! owning shard).

use super::runtime::Runtime;
use crate::core::{ConnId, Peer, Transmit};
use crate::sip::{Frame, StreamFramer};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Instant;

const READ_CHUNK: usize = 16 * 1024;

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
            tracing::warn!(shard = rt.id, "TCP connection limit reached; closing new connection");
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
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_unbounded::<Vec<u8>>();
    rt.conns.borrow_mut().insert(peer.conn, tx);
    tracing::debug!(shard = rt.id, peer = %peer.addr, "TCP connection open");
    let writer_task = glommio::spawn_local(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.close().await;
    });

    let mut framer = StreamFramer::new(rt.cfg.parse_limits());
    'read: loop {
        rt.wait_while_holding().await;
        let space = framer.read_space(READ_CHUNK);
        let n = match reader.read(space).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
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
                    rt.write_tcp(Transmit { to: peer, bytes: b"\r\n".to_vec() });
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
