//! When a shard's journal writes and syncs: the `[storage] fsync` policy
//! over a segment's writer, sans-IO. The shard appends; its driver asks
//! [`Journal::poll`] for the next flush, performs it (a DMA write, then
//! `fdatasync` when asked) and reports it with [`Journal::completed`].
//!
//! One flush is in flight at a time. Whatever is appended meanwhile rides
//! the next one: that is the group commit of `fsync = "always"`, where a
//! response acknowledging a change waits for [`Journal::durable`] to pass
//! the change's position, and every change made while a sync ran shares
//! the next sync.

use super::segment::{SegmentHeader, SegmentWriter, Write};
use std::time::{Duration, Instant};

/// `[storage] fsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// A change is acknowledged only once it is synced.
    Always,
    /// Written and synced at most this long after it was made; responses
    /// do not wait.
    Interval(Duration),
    /// Written as often as `Interval` would, never synced: the kernel's
    /// page cache (or the device's) decides. A process crash loses at
    /// most one interval; a power loss loses what the device had not
    /// written.
    Never(Duration),
}

/// One flush for the driver: write to segment `segment`'s file, then
/// sync if `sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flush {
    pub segment: u32,
    pub write: Write,
    pub sync: bool,
}

pub struct Journal {
    seg: SegmentWriter,
    /// The segment before `seg`, after a rotation, until its last frames
    /// are written: its flushes come first, so positions become durable
    /// in order.
    retiring: Option<SegmentWriter>,
    fsync: Fsync,
    in_flight: Option<Flush>,
    /// The stream position on the file (and synced, under `Always` and
    /// `Interval`).
    durable: u64,
    /// When the oldest change not yet handed to a flush was appended.
    oldest_unflushed: Option<Instant>,
    /// Most bytes held in memory before [`Journal::is_backlogged`]: the
    /// device is not keeping up, and new changes are refused (503) rather
    /// than queued without bound.
    max_pending: usize,
    /// A flush failed: retried from `retry_at`, and until one succeeds
    /// the journal counts as backlogged.
    retry_at: Option<Instant>,
}

/// How long after a failed flush the same flush is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Journal {
    pub fn new(seg: SegmentWriter, fsync: Fsync, max_pending: usize) -> Self {
        let durable = seg.lsn();
        Journal { seg, retiring: None, fsync, in_flight: None, durable, oldest_unflushed: None, max_pending, retry_at: None }
    }

    /// The header of the segment appended to.
    pub fn header(&self) -> &SegmentHeader {
        self.seg.header()
    }

    /// Bytes in the segment appended to.
    pub fn segment_len(&self) -> u64 {
        self.seg.file_len()
    }

    /// Whether [`Journal::rotate`] may start a new segment: the previous
    /// rotation's segment is all written.
    pub fn can_rotate(&self) -> bool {
        self.retiring.is_none()
    }

    /// Appends go to `next` from now on (a new file); the current segment
    /// is written to its end first. `next` continues the stream where the
    /// current one ends.
    pub fn rotate(&mut self, next: SegmentWriter) {
        assert!(self.can_rotate(), "one rotation at a time");
        assert_eq!(next.header().base_lsn, self.seg.lsn(), "the next segment continues the stream");
        assert!(next.header().segment > self.seg.header().segment, "segments are numbered upwards");
        self.retiring = Some(std::mem::replace(&mut self.seg, next));
    }

    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// Appends one record whose payload `write` produces; returns the
    /// stream position after it (what a response waits for under
    /// `Always`).
    pub fn append(&mut self, now: Instant, write: impl FnOnce(&mut Vec<u8>)) -> u64 {
        self.oldest_unflushed.get_or_insert(now);
        self.seg.append(write)
    }

    /// The position after the last appended record.
    pub fn appended(&self) -> u64 {
        self.seg.lsn()
    }

    /// The position up to which records are on the file (synced unless
    /// the policy is `Never`).
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// The device is behind (or failing): refuse new changes.
    pub fn is_backlogged(&self) -> bool {
        self.retry_at.is_some() || self.pending_len() > self.max_pending
    }

    /// Whether background writers (a checkpoint) may append: less than
    /// half the backlog limit is held, so that they never bring the
    /// journal to refuse changes, nor grow its buffer while the device
    /// is behind.
    pub fn has_room_for_background(&self) -> bool {
        self.retry_at.is_none() && self.pending_len() < self.max_pending / 2
    }

    /// Bytes held in memory.
    pub fn pending_len(&self) -> usize {
        self.seg.pending_len() + self.retiring.as_ref().map_or(0, SegmentWriter::pending_len)
    }

    /// When [`Journal::poll`] will next have a flush, if nothing else is
    /// appended (for the shard's timer).
    pub fn deadline(&self) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        let oldest = self.oldest_unflushed?;
        Some(match self.fsync {
            Fsync::Always => oldest,
            Fsync::Interval(d) | Fsync::Never(d) => oldest + d,
        })
    }

    /// The next flush, if one is due and none is in flight. The driver
    /// copies [`Journal::bytes`] of it before the next append.
    pub fn poll(&mut self, now: Instant) -> Option<Flush> {
        if self.in_flight.is_some() || self.deadline().is_none_or(|at| at > now) {
            return None;
        }
        self.take_flush()
    }

    /// The next flush whatever the policy's deadline (a clean stop).
    pub fn poll_now(&mut self) -> Option<Flush> {
        if self.in_flight.is_some() {
            return None;
        }
        self.take_flush()
    }

    fn take_flush(&mut self) -> Option<Flush> {
        let retrying = self.retry_at.take().is_some();
        // The retiring segment first: its positions come before.
        let from_retiring = self.retiring.is_some();
        let seg = self.retiring.as_mut().unwrap_or(&mut self.seg);
        let write = match seg.next_write() {
            Some(w) => w,
            // A retry with nothing new: the failed write again (the
            // writer hands out everything from the partial block).
            None if retrying || from_retiring => seg.rewrite(),
            None => return None,
        };
        let segment = seg.header().segment;
        if !(from_retiring && self.seg.has_unsubmitted()) {
            self.oldest_unflushed = None;
        }
        let flush = Flush { segment, write, sync: !matches!(self.fsync, Fsync::Never(_)) };
        self.in_flight = Some(flush);
        Some(flush)
    }

    /// The writer of segment `segment`: the retiring one, or the current.
    fn writer(&self, segment: u32) -> &SegmentWriter {
        match &self.retiring {
            Some(r) if r.header().segment == segment => r,
            _ => &self.seg,
        }
    }

    fn writer_mut(&mut self, segment: u32) -> &mut SegmentWriter {
        match &mut self.retiring {
            Some(r) if r.header().segment == segment => r,
            _ => &mut self.seg,
        }
    }

    /// Performs every flush due at `now` (every one, if `all`) onto
    /// `file`, an in-memory device that never fails: for simulations and
    /// offline tools, where the reactor would write and sync.
    pub fn flush_into(&mut self, now: Instant, all: bool, file: &mut Vec<u8>) {
        while let Some(f) = if all { self.poll_now() } else { self.poll(now) } {
            let w = f.write;
            let (at, end) = (w.offset as usize, w.offset as usize + w.padded_len);
            if file.len() < end {
                file.resize(end, 0);
            }
            file[at..at + w.len].copy_from_slice(self.bytes(&f));
            file[at + w.len..end].fill(0);
            self.completed(now, &f, Ok(()));
        }
    }

    /// The bytes of the flush in flight.
    pub fn bytes(&self, flush: &Flush) -> &[u8] {
        self.writer(flush.segment).bytes(&flush.write)
    }

    /// The flush in flight is done: on the file (and synced, if asked),
    /// or failed. Returns the new durable position.
    pub fn completed(&mut self, now: Instant, flush: &Flush, result: Result<(), ()>) -> u64 {
        assert_eq!(self.in_flight.take().as_ref(), Some(flush), "the flush completed is the one in flight");
        match result {
            Ok(()) => {
                self.writer_mut(flush.segment).written(&flush.write);
                if self.retiring.as_ref().is_some_and(|r| !r.has_unsubmitted()) {
                    // All of it is on its file: done with it.
                    self.retiring = None;
                }
                self.durable = self.durable.max(flush.write.upto);
            }
            Err(()) => {
                self.retry_at = Some(now + RETRY_AFTER);
            }
        }
        self.durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(segment: u32, base_lsn: u64) -> SegmentHeader {
        SegmentHeader { shard: 0, shards: 1, segment, base_lsn, created_unix_ms: 0 }
    }

    fn journal(fsync: Fsync) -> Journal {
        let seg = SegmentWriter::new(header(1, 0));
        Journal::new(seg, fsync, 1 << 20)
    }

    #[test]
    fn always_flushes_at_once_and_groups_what_comes_during_a_flush() {
        let t0 = Instant::now();
        let mut j = journal(Fsync::Always);
        assert!(j.poll(t0).is_none(), "nothing to flush");
        let a = j.append(t0, |o| o.extend_from_slice(b"a"));
        let f1 = j.poll(t0).expect("due at once");
        assert!(f1.sync);
        assert_eq!(f1.write.upto, a);
        // Three more while the first sync runs: no second flush yet.
        let mut last = 0;
        for p in [b"b", b"c", b"d"] {
            last = j.append(t0, |o| o.extend_from_slice(p));
        }
        assert!(j.poll(t0).is_none());
        assert_eq!(j.completed(t0, &f1, Ok(())), a);
        assert!(j.durable() < last);
        // All three share the next one.
        let f2 = j.poll(t0).unwrap();
        assert_eq!(f2.write.upto, last);
        j.completed(t0, &f2, Ok(()));
        assert_eq!(j.durable(), last);
        assert!(j.poll(t0).is_none());
    }

    #[test]
    fn interval_waits_for_the_oldest_change_to_age() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut j = journal(Fsync::Interval(ms(10)));
        j.append(t0, |o| o.extend_from_slice(b"a"));
        j.append(t0 + ms(4), |o| o.extend_from_slice(b"b"));
        assert_eq!(j.deadline(), Some(t0 + ms(10)));
        assert!(j.poll(t0 + ms(9)).is_none());
        let f = j.poll(t0 + ms(10)).unwrap();
        assert!(f.sync);
        j.completed(t0 + ms(11), &f, Ok(()));
        assert_eq!(j.durable(), j.appended());
        assert_eq!(j.deadline(), None);
        let mut n = journal(Fsync::Never(ms(10)));
        n.append(t0, |o| o.extend_from_slice(b"a"));
        assert!(!n.poll(t0 + ms(10)).unwrap().sync, "never syncs");
    }

    #[test]
    fn a_failed_flush_is_retried_and_backlogs_until_it_succeeds() {
        let t0 = Instant::now();
        let mut j = journal(Fsync::Always);
        let a = j.append(t0, |o| o.extend_from_slice(b"a"));
        let f = j.poll(t0).unwrap();
        j.completed(t0, &f, Err(()));
        assert!(j.is_backlogged());
        assert_eq!(j.durable(), 0);
        assert!(j.poll(t0 + Duration::from_millis(999)).is_none());
        let again = j.poll(t0 + RETRY_AFTER).unwrap();
        assert_eq!(again.write, f.write, "the same bytes again");
        j.completed(t0 + RETRY_AFTER, &again, Ok(()));
        assert!(!j.is_backlogged());
        assert_eq!(j.durable(), a);
    }

    #[test]
    fn a_device_that_falls_behind_backlogs_the_journal() {
        let t0 = Instant::now();
        let seg = SegmentWriter::new(header(1, 0));
        let mut j = Journal::new(seg, Fsync::Always, 10_000);
        let f = {
            j.append(t0, |o| o.extend_from_slice(&[1; 100]));
            j.poll(t0).unwrap()
        };
        while !j.is_backlogged() {
            j.append(t0, |o| o.extend_from_slice(&[2; 100]));
        }
        assert!(j.pending_len() > 10_000);
        j.completed(t0, &f, Ok(()));
        let rest = j.poll(t0).unwrap();
        j.completed(t0, &rest, Ok(()));
        assert!(!j.is_backlogged(), "caught up: {} bytes held", j.pending_len());
    }

    #[test]
    fn a_rotation_writes_the_old_segment_to_its_end_first() {
        let t0 = Instant::now();
        let mut j = journal(Fsync::Always);
        let a = j.append(t0, |o| o.extend_from_slice(b"in the first segment"));
        let f1 = j.poll(t0).unwrap();
        // More for the first segment while its flush runs, then the
        // rotation, then appends to the second.
        let b = j.append(t0, |o| o.extend_from_slice(b"also in the first"));
        j.rotate(SegmentWriter::new(header(2, b)));
        assert!(!j.can_rotate());
        let c = j.append(t0, |o| o.extend_from_slice(b"in the second segment"));
        j.completed(t0, &f1, Ok(()));
        assert_eq!(j.durable(), a);
        let f2 = j.poll(t0).unwrap();
        assert_eq!((f2.segment, f2.write.upto), (1, b), "the first segment's rest first");
        j.completed(t0, &f2, Ok(()));
        assert!(j.can_rotate(), "the first segment is done");
        let f3 = j.poll(t0).unwrap();
        assert_eq!((f3.segment, f3.write.upto), (2, c));
        assert!(j.bytes(&f3).starts_with(&header(2, b).encode()), "the second file starts with its header");
        j.completed(t0, &f3, Ok(()));
        assert_eq!(j.durable(), c);
        assert!(j.poll(t0).is_none());
    }
}
