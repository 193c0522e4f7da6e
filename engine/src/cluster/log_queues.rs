//! The queues that carry journal records between the shards and the
//! cluster thread: the shards' records on their way to the partition logs
//! (`replication`), how far each shard's records are settled, and the
//! records a take-over reads back from a log, on their way to the shards
//! that put them back.
//!
//! Bounded and lock-free on the shards' side. Unlike messages about
//! documents (`mail`), a record is never dropped: a shard keeps what does
//! not fit yet in a backlog of its own and refuses changes with 503 while
//! that backlog is full, and the cluster thread waits for room to hand a
//! shard what it replays.

use super::partition::Partition;
use crossbeam_queue::ArrayQueue;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Records in each direction's queue, per shard.
pub const QUEUE_ROOM: usize = 16_384;

/// A shard's record on its way to a partition log.
#[derive(Debug)]
pub struct Shipped {
    pub partition: Partition,
    /// The shard's number for it (1, 2, 3, ...).
    pub seq: u64,
    pub bytes: Box<[u8]>,
}

/// Per shard.
struct Lane {
    to_log: ArrayQueue<Shipped>,
    settled: AtomicU64,
    /// Record numbers abandoned (a lease lost with them unwritten); rare,
    /// so a lock behind a flag the shard reads without one.
    abandoned: Mutex<Vec<u64>>,
    any_abandoned: AtomicBool,
    replay: ArrayQueue<Box<[u8]>>,
    /// Records taken out of `replay` and put back.
    replayed: AtomicU64,
    /// The last checkpoint of the logs this shard has shipped, and the
    /// number of its last record (written before the generation).
    checkpoint_done: AtomicU64,
    checkpoint_last: AtomicU64,
}

pub struct LogQueues {
    lanes: Vec<Lane>,
    /// The checkpoint of the logs asked of every shard (0: none yet).
    checkpoint_asked: AtomicU64,
}

impl std::fmt::Debug for LogQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogQueues").field("shards", &self.lanes.len()).finish()
    }
}

impl LogQueues {
    pub fn new(shards: u16) -> LogQueues {
        Self::with_room(shards, QUEUE_ROOM)
    }

    /// Queues of `room` records each way (the simulations use tiny ones).
    pub fn with_room(shards: u16, room: usize) -> LogQueues {
        LogQueues {
            lanes: (0..shards)
                .map(|_| Lane {
                    to_log: ArrayQueue::new(room),
                    settled: AtomicU64::new(0),
                    abandoned: Mutex::new(Vec::new()),
                    any_abandoned: AtomicBool::new(false),
                    replay: ArrayQueue::new(room),
                    replayed: AtomicU64::new(0),
                    checkpoint_done: AtomicU64::new(0),
                    checkpoint_last: AtomicU64::new(0),
                })
                .collect(),
            checkpoint_asked: AtomicU64::new(0),
        }
    }

    pub fn shards(&self) -> u16 {
        self.lanes.len() as u16
    }

    // The shards' side.

    /// Hands a record to the cluster thread; gives it back if the queue is full.
    pub fn ship(&self, shard: u16, record: Shipped) -> Result<(), Shipped> {
        self.lanes[shard as usize].to_log.push(record)
    }

    /// Every record of `shard` numbered up to this is in its log or abandoned.
    pub fn settled(&self, shard: u16) -> u64 {
        self.lanes[shard as usize].settled.load(Ordering::Acquire)
    }

    /// Record numbers of `shard` abandoned since the last call (none
    /// without taking the lock, the usual case).
    pub fn take_abandoned(&self, shard: u16) -> Vec<u64> {
        let lane = &self.lanes[shard as usize];
        if !lane.any_abandoned.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *lane.abandoned.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The next record to put back.
    pub fn next_replayed(&self, shard: u16) -> Option<Box<[u8]>> {
        self.lanes[shard as usize].replay.pop()
    }

    /// `n` more records of `shard`'s replay are back in its tables.
    pub fn put_back(&self, shard: u16, n: u64) {
        self.lanes[shard as usize].replayed.fetch_add(n, Ordering::AcqRel);
    }

    /// The checkpoint of the logs asked of the shards (a generation; 0: none).
    pub fn checkpoint_asked(&self) -> u64 {
        self.checkpoint_asked.load(Ordering::Acquire)
    }

    /// `shard` has shipped every key of checkpoint `generation`, the last
    /// as its record number `last`.
    pub fn checkpoint_shipped(&self, shard: u16, generation: u64, last: u64) {
        let lane = &self.lanes[shard as usize];
        lane.checkpoint_last.store(last, Ordering::Release);
        lane.checkpoint_done.store(generation, Ordering::Release);
    }

    // The cluster thread's side.

    /// Asks every shard for checkpoint `generation` of the logs.
    pub fn ask_checkpoint(&self, generation: u64) {
        self.checkpoint_asked.store(generation, Ordering::Release);
    }

    /// Whether `shard` has shipped checkpoint `generation`, and the number
    /// of its last record if so.
    pub fn checkpoint_of(&self, shard: u16, generation: u64) -> Option<u64> {
        let lane = &self.lanes[shard as usize];
        (lane.checkpoint_done.load(Ordering::Acquire) >= generation).then(|| lane.checkpoint_last.load(Ordering::Acquire))
    }

    pub fn next_shipped(&self, shard: u16) -> Option<Shipped> {
        self.lanes[shard as usize].to_log.pop()
    }

    pub fn set_settled(&self, shard: u16, seq: u64) {
        self.lanes[shard as usize].settled.store(seq, Ordering::Release);
    }

    pub fn abandon(&self, shard: u16, seqs: Vec<u64>) {
        if seqs.is_empty() {
            return;
        }
        let lane = &self.lanes[shard as usize];
        lane.abandoned.lock().unwrap_or_else(|e| e.into_inner()).extend(seqs);
        lane.any_abandoned.store(true, Ordering::Release);
    }

    /// Hands `shard` a record to put back; gives it back if the queue is full.
    pub fn replay(&self, shard: u16, record: Box<[u8]>) -> Result<(), Box<[u8]>> {
        self.lanes[shard as usize].replay.push(record)
    }

    /// How many records `shard` has put back so far.
    pub fn replayed(&self, shard: u16) -> u64 {
        self.lanes[shard as usize].replayed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_go_both_ways_and_abandoned_numbers_are_taken_once() {
        let q = LogQueues::new(2);
        q.ship(1, Shipped { partition: Partition(3), seq: 1, bytes: b"r".to_vec().into() }).unwrap();
        assert!(q.next_shipped(0).is_none());
        assert_eq!(q.next_shipped(1).map(|s| (s.partition, s.seq)), Some((Partition(3), 1)));
        q.set_settled(1, 1);
        assert_eq!((q.settled(0), q.settled(1)), (0, 1));
        assert!(q.take_abandoned(0).is_empty());
        q.abandon(0, vec![4, 5]);
        assert_eq!(q.take_abandoned(0), vec![4, 5]);
        assert!(q.take_abandoned(0).is_empty());
        for i in 0..QUEUE_ROOM {
            q.replay(0, vec![i as u8].into()).unwrap();
        }
        assert!(q.replay(0, b"full".to_vec().into()).is_err(), "bounded");
        assert_eq!(q.next_replayed(0).as_deref(), Some(&[0u8][..]));
        q.put_back(0, 1);
        assert_eq!(q.replayed(0), 1);
        assert_eq!((q.checkpoint_asked(), q.checkpoint_of(1, 1)), (0, None));
        q.ask_checkpoint(1);
        q.checkpoint_shipped(1, 1, 9);
        assert_eq!((q.checkpoint_asked(), q.checkpoint_of(1, 1), q.checkpoint_of(0, 1)), (1, Some(9), None));
    }
}
