//! A shard's journal writer task: performs the journal's flushes on the
//! segment files (glommio DMA writes and `fdatasync` through io_uring, on
//! the shard's own thread), and keeps the journal from growing without
//! bound by moving it to a new segment file once the current one is
//! large, checkpointing every key into it, and removing the older
//! segments once that checkpoint is durable.
//!
//! Why a checkpoint makes the older segments redundant: a checkpoint
//! records every key the shard holds, and any key that changes while it
//! is written records itself again, later in the same segment. Once the
//! checkpoint's last record is durable, the segments from the checkpoint's
//! start on hold each live key's latest state; a key absent from them was
//! removed, which the older segments cannot contradict once they are gone.

use super::journal_io::{Checkpoints, segment_path};
use super::runtime::{Runtime, TICK};
use crate::storage::journal::Flush;
use crate::storage::segment::{SegmentHeader, SegmentWriter};
use glommio::channels::local_channel::LocalReceiver;
use glommio::io::DmaFile;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// The segment files of a shard's journal in this run's generation.
pub(crate) struct JournalFiles {
    dir: PathBuf,
    generation: u64,
    shard: u16,
    /// Open segments by number: the current one, and older ones until a
    /// checkpoint makes them redundant.
    files: RefCell<BTreeMap<u32, Rc<DmaFile>>>,
    /// The current segment's size past which the journal moves on
    /// (at least twice the last checkpoint's, so that checkpoints take at
    /// most half of what is written).
    compact_after: u64,
    last_checkpoint_bytes: std::cell::Cell<u64>,
    /// The start's checkpoint, which removes the older generations once
    /// every shard's is durable; taken when this shard's is.
    start: RefCell<Option<Arc<Checkpoints>>>,
    kicks: LocalReceiver<()>,
}

impl JournalFiles {
    pub fn new(dir: PathBuf, generation: u64, shard: u16, first: DmaFile, compact_after: u64, start: Arc<Checkpoints>, kicks: LocalReceiver<()>) -> Self {
        JournalFiles {
            dir,
            generation,
            shard,
            files: RefCell::new(BTreeMap::from([(1, Rc::new(first))])),
            compact_after,
            last_checkpoint_bytes: std::cell::Cell::new(0),
            start: RefCell::new(Some(start)),
            kicks,
        }
    }

    fn file(&self, segment: u32) -> Rc<DmaFile> {
        self.files.borrow().get(&segment).cloned().expect("a flush goes to an open segment")
    }

    fn path(&self, segment: u32) -> PathBuf {
        segment_path(&self.dir, self.generation, self.shard, segment)
    }
}

/// The writer task: performs each flush when the journal's policy says it
/// is due, one at a time; then finishes checkpoints and starts new
/// segments.
pub(crate) async fn journal_loop(rt: Rc<Runtime>, files: Rc<JournalFiles>) {
    loop {
        finish_checkpoint(&rt, &files).await;
        rotate_if_large(&rt, &files).await;
        let (deadline, checkpointing) = {
            let core = rt.core.borrow();
            (core.journal().and_then(|j| j.deadline()), core.checkpointing())
        };
        let now = Instant::now();
        match deadline {
            Some(at) if at <= now => {}
            wait => {
                // A checkpoint in progress is written by the timer ticks
                // without necessarily kicking: look again each tick.
                let until = wait.unwrap_or(now + if checkpointing { TICK } else { std::time::Duration::from_secs(3600) });
                let open = futures_lite::future::or(
                    async {
                        glommio::timer::sleep(until.saturating_duration_since(now)).await;
                        true
                    },
                    async { files.kicks.recv().await.is_some() },
                )
                .await;
                if !open {
                    // The shard is gone: nothing will be appended again.
                    return;
                }
                continue;
            }
        }
        let flush = rt.core.borrow_mut().journal_mut().and_then(|j| j.poll(Instant::now()));
        if let Some(flush) = flush {
            write_flush(&rt, &files, flush).await;
        }
    }
}

/// Once the checkpoint in progress is durable: the start's tells the
/// older generations they can go; any checkpoint removes this shard's
/// older segments of this generation.
async fn finish_checkpoint(rt: &Rc<Runtime>, files: &JournalFiles) {
    let current = {
        let mut core = rt.core.borrow_mut();
        let Some(end) = core.checkpoint_end() else { return };
        let Some(j) = core.journal() else { return };
        if j.durable() < end {
            return;
        }
        let current = j.header().segment;
        files.last_checkpoint_bytes.set(end.saturating_sub(j.header().base_lsn));
        core.clear_checkpoint();
        current
    };
    if let Some(start) = files.start.borrow_mut().take() {
        start.done();
    }
    let older: Vec<(u32, Rc<DmaFile>)> = {
        let mut open = files.files.borrow_mut();
        let keep = open.split_off(&current);
        std::mem::replace(&mut *open, keep).into_iter().collect()
    };
    for (segment, file) in older {
        if let Ok(file) = Rc::try_unwrap(file) {
            let _ = file.close().await;
        }
        super::journal_io::remove_in_background(files.path(segment), "older journal segment");
    }
}

/// Moves the journal to a new segment once the current one passes
/// `compact_after` bytes, and starts a checkpoint into it.
async fn rotate_if_large(rt: &Rc<Runtime>, files: &JournalFiles) {
    let next = {
        let core = rt.core.borrow();
        let Some(j) = core.journal() else { return };
        let threshold = files.compact_after.max(2 * files.last_checkpoint_bytes.get());
        if core.checkpointing() || !j.can_rotate() || j.segment_len() <= threshold {
            return;
        }
        j.header().segment + 1
    };
    let path = files.path(next);
    let file = match DmaFile::create(&path).await {
        Ok(f) => f,
        Err(e) => {
            // The journal goes on in the current segment; the next flush
            // tries again.
            tracing::warn!(shard = rt.id, path = %path.display(), error = %e, "cannot start a new journal segment");
            return;
        }
    };
    files.files.borrow_mut().insert(next, Rc::new(file));
    let mut core = rt.core.borrow_mut();
    let j = core.journal_mut().expect("a journal");
    let now = Instant::now();
    let created_unix_ms = crate::shard::durable::UnixClock::system(now).to_unix_ms(now);
    let header = SegmentHeader { segment: next, base_lsn: j.appended(), created_unix_ms, ..*j.header() };
    j.rotate(SegmentWriter::new(header));
    core.start_checkpoint();
    tracing::info!(shard = rt.id, segment = next, "journal moved to a new segment; checkpointing into it");
}

/// Performs one flush of the journal: the DMA write, then the sync if
/// asked. A failure is logged and the journal retries it later, refusing
/// changes meanwhile (`Limit::Journal`).
async fn write_flush(rt: &Rc<Runtime>, files: &JournalFiles, flush: Flush) {
    let w = flush.write;
    let file = files.file(flush.segment);
    let mut buf = file.alloc_dma_buffer(w.padded_len);
    {
        let core = rt.core.borrow();
        let bytes = core.journal().expect("a journal").bytes(&flush);
        let dst = buf.as_bytes_mut();
        dst[..w.len].copy_from_slice(bytes);
        dst[w.len..].fill(0);
    }
    let result = match file.write_at(buf, w.offset).await {
        Ok(n) if n == w.padded_len => {
            if flush.sync {
                file.fdatasync().await.map_err(|e| e.to_string())
            } else {
                Ok(())
            }
        }
        Ok(n) => Err(format!("short write: {n} of {} bytes", w.padded_len)),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &result {
        tracing::error!(shard = rt.id, segment = flush.segment, offset = w.offset, error = %e, "journal write failed; changes are refused until a retry succeeds");
    }
    rt.core.borrow_mut().journal_mut().expect("a journal").completed(Instant::now(), &flush, result.map_err(|_| ()));
    rt.release_held();
}

/// At a clean stop: everything appended is written and synced.
pub(crate) async fn flush_at_stop(rt: &Rc<Runtime>, files: &JournalFiles) {
    for _ in 0..1000 {
        let flush = rt.core.borrow_mut().journal_mut().and_then(|j| j.poll_now());
        match flush {
            Some(f) => write_flush(rt, files, f).await,
            None if rt.core.borrow().journal().is_some_and(|j| j.durable() < j.appended()) => glommio::timer::sleep(TICK).await,
            None => break,
        }
    }
    if let Some(j) = rt.core.borrow().journal() {
        tracing::info!(shard = rt.id, durable = j.durable(), appended = j.appended(), "journal closed");
    }
}
