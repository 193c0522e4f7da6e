//! Completed server transactions over UDP, held for Timer J (64*T1, 32 s)
//! to answer retransmissions of their request (RFC 3261 17.2.2).
//!
//! At load this is the largest table a shard has: 32 s of every request it
//! answered over UDP, a million and more at 40,000 a second. Every entry
//! lives exactly as long, so they expire in the order they were completed,
//! which lets them be kept as a log instead of as separate objects:
//!
//! - a ring of fixed records, appended at completion and taken off the
//!   front at expiry (no timer-wheel entry of their own);
//! - their bytes (the transaction key and the stored answer) appended to an
//!   arena of large chunks, freed a whole chunk at a time once every record
//!   in it has expired (no allocation per transaction);
//! - an index from the key's hash to the record's sequence number, split
//!   in [`INDEX_PARTS`] so that no single insert pays for rehashing a
//!   million entries.
//!
//! Held this way a transaction costs its record (32 bytes), its bytes
//! (about 100 for a PUBLISH) and an index slot (8 bytes and a control
//! byte, at hashbrown's load), where separate objects (the live table's
//! entry, a boxed key, a boxed answer and a wheel entry) took about 260,
//! spread over four cache lines that expiry had to touch again 32 s later.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::own_pages::OwnPages;

/// A block of the log's own memory (`core::own_pages`).
type Block<T> = allocator_api2::vec::Vec<T, OwnPages>;

/// Parts of the index: finer than other tables' 64 (`core::parted`), so
/// that at a burst's peak (a million NOTIFYs held for Timer K) a part
/// stays under 64 KiB. mimalloc keeps 64-512 KiB allocations in 4 MiB
/// pages and gives none of a page back while one block in it lives: the
/// 64 parts' 147 KiB arrays of a storm filled pages where one of
/// glommio's blocks lives for good, and kept 4 MiB resident after it
/// (found by walking the heap's areas 35 s after `notify-storm.sh`).
const INDEX_PARTS: usize = 512;

/// Room a part keeps however empty (`core::room`).
const KEEP_INDEX_PART: usize = crate::core::room::KEEP / INDEX_PARTS;

/// The part of a key with `hash`: from bits hashbrown uses neither to
/// place nor to tag (as `core::parted::part_of`).
fn part_of(hash: u64) -> usize {
    (hash >> 32) as usize % INDEX_PARTS
}

/// Arena chunk size: large enough that a chunk holds hundreds of entries,
/// small enough that the memory of expired ones is soon given back.
const CHUNK: usize = 64 << 10;

/// Freed chunks kept for reuse (the log's head recycles what its tail
/// frees, so a steady load allocates nothing).
const SPARE_CHUNKS: usize = 4;

/// One completed transaction. `key_len == 0` marks one forgotten before
/// its expiry (a key is never empty).
#[derive(Clone, Copy, Debug)]
struct Record {
    hash: u64,
    /// Nanoseconds since the epoch.
    expires: u64,
    /// The chunk (wrapping id) and offset of the key, followed by the answer.
    chunk: u32,
    offset: u32,
    key_len: u32,
    answer_len: u32,
}

pub struct Completed {
    hold: Duration,
    epoch: Instant,
    index: Vec<hashbrown::HashTable<u64, OwnPages>>,
    /// Each part's capacity when it last grew (no tombstones then).
    index_room: Vec<usize>,
    records: Ring<Record>,
    chunks: VecDeque<Block<u8>>,
    /// Wrapping id of `chunks[0]`.
    first_chunk: u32,
    spare: Vec<Block<u8>>,
    live: usize,
    /// The heap the ring's blocks, the chunks and the index are in: the
    /// log's pages empty as it moves on, whatever else was allocated
    /// among them.
    pages: OwnPages,
}

/// A first-in first-out queue addressed by sequence number, in blocks of
/// [`BLOCK`] elements: growing never moves what it holds (a `VecDeque` of a
/// million records would copy 32 MiB at once each time it doubled, a stall
/// of its own), and a block emptied at the front is reused at the back.
struct Ring<T> {
    blocks: VecDeque<Block<T>>,
    /// Sequence number of `blocks[0][0]`, and of the front element.
    base: u64,
    front: u64,
    spare: Option<Block<T>>,
    pages: OwnPages,
}

/// Records per block: 32 KiB of them. mimalloc keeps allocations of 64-512
/// KiB in 4 MiB pages and does not give back part of a page, so one
/// long-lived block of such a size (one glommio allocates at start, of 128
/// KiB) kept a whole page resident once a burst's 128 KiB blocks had
/// filled it and gone (4 MiB after a NOTIFY storm, found by walking the
/// heap's areas). Blocks of 32 KiB live in pages of 512 KiB.
const BLOCK: usize = 1024;

impl<T: Copy> Ring<T> {
    fn new(pages: OwnPages) -> Self {
        Ring { blocks: VecDeque::new(), base: 0, front: 0, spare: None, pages }
    }

    fn len(&self) -> usize {
        (self.end() - self.front) as usize
    }

    fn end(&self) -> u64 {
        // Every block but the last is full; the first keeps the elements
        // already taken off, so it counts from `base`.
        self.base + self.blocks.len().saturating_sub(1) as u64 * BLOCK as u64 + self.blocks.back().map_or(0, |b| b.len() as u64)
    }

    /// Appends `item`; returns its sequence number.
    fn push(&mut self, item: T) -> u64 {
        if self.blocks.back().is_none_or(|b| b.len() == BLOCK) {
            let block = self.spare.take().unwrap_or_else(|| Block::with_capacity_in(BLOCK, self.pages.clone()));
            self.blocks.push_back(block);
        }
        let seq = self.end();
        self.blocks.back_mut().expect("a block with room").push(item);
        seq
    }

    fn front(&self) -> Option<&T> {
        (self.front < self.end()).then(|| self.get(self.front))
    }

    fn back(&self) -> Option<&T> {
        let end = self.end();
        (self.front < end).then(|| self.get(end - 1))
    }

    /// Takes the front element off; returns its sequence number. The
    /// caller has checked that there is one.
    fn pop(&mut self) -> u64 {
        debug_assert!(self.front < self.end(), "pop from an empty ring");
        let seq = self.front;
        self.front += 1;
        if self.front - self.base == BLOCK as u64 {
            let mut block = self.blocks.pop_front().expect("the front block");
            block.clear();
            self.spare = Some(block);
            self.base += BLOCK as u64;
        } else if self.front == self.end() && self.blocks.len() == 1 {
            // Empty: start the block again rather than keep its tail.
            self.blocks[0].clear();
            self.base = self.front;
        }
        seq
    }

    /// Drops the spare block, and with nothing held the last block too:
    /// each is a large allocation made during a burst, and one kept for
    /// good holds a whole page of the allocator's with it.
    fn give_back_room(&mut self) {
        self.spare = None;
        if self.len() == 0 {
            self.blocks = VecDeque::new();
            self.base = self.front;
        }
    }

    fn get(&self, seq: u64) -> &T {
        let at = (seq - self.base) as usize;
        &self.blocks[at / BLOCK][at % BLOCK]
    }

    fn get_mut(&mut self, seq: u64) -> &mut T {
        let at = (seq - self.base) as usize;
        &mut self.blocks[at / BLOCK][at % BLOCK]
    }
}

impl Completed {
    /// Holds each transaction `hold` (Timer J) after its completion.
    pub fn new(hold: Duration, epoch: Instant) -> Self {
        let pages = OwnPages::new();
        Completed {
            hold,
            epoch,
            index: (0..INDEX_PARTS).map(|_| hashbrown::HashTable::new_in(pages.clone())).collect(),
            index_room: vec![0; INDEX_PARTS],
            records: Ring::new(pages.clone()),
            chunks: VecDeque::new(),
            first_chunk: 0,
            spare: Vec::new(),
            live: 0,
            pages,
        }
    }

    /// Transactions held (forgotten ones not counted).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Records still in the log, forgotten ones included: each is taken off
    /// at its expiry (for leak checks).
    pub fn pending(&self) -> usize {
        self.records.len()
    }

    /// Bytes of arena held (for the memory table and tests).
    pub fn arena_bytes(&self) -> usize {
        self.chunks.iter().map(Block::capacity).sum()
    }

    /// Holds a transaction completed at `now` with key `key` (hashed to
    /// `hash`) and answer `answer`. The caller has checked that the key is
    /// not held already.
    pub fn insert(&mut self, now: Instant, hash: u64, key: &[u8], answer: &[u8]) {
        debug_assert!(!key.is_empty(), "a transaction key is never empty");
        // Expiries never go backwards, so the log's front always expires
        // first (a caller's clock read a little earlier than the last one
        // only holds its entry that much longer).
        let due = self.nanos(now + self.hold).max(self.records.back().map_or(0, |r| r.expires));
        let (chunk, offset) = self.append(key, answer);
        let seq = self.records.push(Record { hash, expires: due, chunk, offset, key_len: key.len() as u32, answer_len: answer.len() as u32 });
        let records = &self.records;
        let p = part_of(hash);
        let part = &mut self.index[p];
        part.insert_unique(hash, seq, |&s| records.get(s).hash);
        // Removals leave tombstones, and a part more than half full
        // doubles when they have used up its free slots: at 45,000/s that
        // came 70 s into a steady load, 22 bytes per held transaction at
        // once (`bench/examples/completed_churn.rs`). Doubling as soon as it
        // is half full gives that memory while the log fills instead, after
        // which tombstones are cleared by rehashing in place.
        let room = &mut self.index_room[p];
        *room = (*room).max(part.capacity());
        if part.len() * 2 > *room {
            part.reserve(*room + 1 - part.len(), |&s| records.get(s).hash);
            *room = part.capacity();
        }
        self.live += 1;
    }

    /// The stored answer of the transaction with `key`, if held.
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<&[u8]> {
        let seq = *self.index[part_of(hash)].find(hash, |&s| self.matches(s, hash, key))?;
        let r = self.record(seq);
        let bytes = self.bytes(r);
        Some(&bytes[r.key_len as usize..])
    }

    /// Forgets the transaction with `key` before its expiry; whether it was held.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> bool {
        let found = self.index[part_of(hash)].find(hash, |&s| self.matches(s, hash, key)).copied();
        let Some(seq) = found else { return false };
        if let Ok(e) = self.index[part_of(hash)].find_entry(hash, |&s| s == seq) {
            e.remove();
        }
        self.records.get_mut(seq).key_len = 0;
        self.live -= 1;
        true
    }

    /// Ends every transaction whose Timer J has fired by `now`, and gives
    /// back the arena chunks no held transaction uses any more.
    pub fn expire(&mut self, now: Instant) {
        let now = self.nanos(now);
        while let Some(&r) = self.records.front() {
            if r.expires > now {
                break;
            }
            let seq = self.records.pop();
            if r.key_len > 0 {
                if let Ok(e) = self.index[part_of(r.hash)].find_entry(r.hash, |&s| s == seq) {
                    e.remove();
                }
                self.live -= 1;
            }
        }
        // Chunks before the front record's are free; with no record left,
        // all but the last (which the next insert appends to).
        let keep_from = self.records.front().map_or(self.first_chunk.wrapping_add(self.chunks.len().saturating_sub(1) as u32), |r| r.chunk);
        while self.first_chunk != keep_from && !self.chunks.is_empty() {
            let mut c = self.chunks.pop_front().expect("not empty");
            self.first_chunk = self.first_chunk.wrapping_add(1);
            if self.spare.len() < SPARE_CHUNKS && c.capacity() == CHUNK {
                c.clear();
                self.spare.push(c);
            }
        }
        // After a burst, each index part gives back its room (core::room).
        let records = &self.records;
        for (part, room) in self.index.iter_mut().zip(&mut self.index_room) {
            let held = crate::core::room::table_room(part.allocation_size(), std::mem::size_of::<u64>());
            if let Some(to) = crate::core::room::shrink_to(part.len(), held, KEEP_INDEX_PART) {
                part.shrink_to(to, |&s| records.get(s).hash);
                *room = part.capacity();
            }
        }
    }

    /// For a quiet shard: drops the spare chunks and blocks kept so that a
    /// steady load allocates nothing, and with nothing held, every chunk.
    /// Kept after a NOTIFY storm, they were the few live blocks each
    /// holding one of mimalloc's 4 MiB pages resident (found by tracking
    /// the live allocations of 40-600 KiB 35 s after `notify-storm.sh`).
    pub fn give_back_room(&mut self) {
        self.spare = Vec::new();
        self.records.give_back_room();
        if self.records.len() == 0 {
            self.first_chunk = self.first_chunk.wrapping_add(self.chunks.len() as u32);
            self.chunks = VecDeque::new();
        }
        self.pages.collect();
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn record(&self, seq: u64) -> &Record {
        self.records.get(seq)
    }

    fn bytes(&self, r: &Record) -> &[u8] {
        let chunk = &self.chunks[r.chunk.wrapping_sub(self.first_chunk) as usize];
        &chunk[r.offset as usize..r.offset as usize + r.key_len as usize + r.answer_len as usize]
    }

    fn matches(&self, seq: u64, hash: u64, key: &[u8]) -> bool {
        let r = self.record(seq);
        r.hash == hash && r.key_len as usize == key.len() && &self.bytes(r)[..key.len()] == key
    }

    /// Appends `key` then `answer` to the arena: to the last chunk when
    /// they fit, else to a new one (of their own size when larger than a
    /// chunk). Returns where they start.
    fn append(&mut self, key: &[u8], answer: &[u8]) -> (u32, u32) {
        let need = key.len() + answer.len();
        let fits = self.chunks.back().is_some_and(|c| c.capacity() - c.len() >= need);
        if !fits {
            let size = need.max(CHUNK);
            let chunk = if need <= CHUNK { self.spare.pop() } else { None };
            let chunk = chunk.unwrap_or_else(|| Block::with_capacity_in(size, self.pages.clone()));
            self.chunks.push_back(chunk);
        }
        let id = self.first_chunk.wrapping_add(self.chunks.len() as u32 - 1);
        let c = self.chunks.back_mut().expect("a chunk was just ensured");
        let offset = c.len() as u32;
        push_bytes(c, key);
        push_bytes(c, answer);
        (id, offset)
    }
}

/// Appends `bytes` to a chunk that has room for them, in one copy:
/// `allocator_api2`'s `extend_from_slice` copies element by element, which
/// took about 1,600 more instructions per transaction held (`publish_loop`
/// under callgrind).
fn push_bytes(chunk: &mut Block<u8>, bytes: &[u8]) {
    let spare = chunk.spare_capacity_mut();
    assert!(spare.len() >= bytes.len(), "the caller found room in the chunk");
    // SAFETY: MaybeUninit<u8> has u8's layout, the room was just checked,
    // and the bytes written are initialized before the length covers them.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), spare.as_mut_ptr().cast::<u8>(), bytes.len());
        chunk.set_len(chunk.len() + bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entropy::Entropy;
    use std::collections::HashMap;

    const HOLD: Duration = Duration::from_secs(32);

    fn hash(key: &[u8]) -> u64 {
        // Deliberately weak, so that different keys share hashes and the
        // key comparison is exercised.
        key.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64)) % 97 * 0x1_0000_0001
    }

    #[test]
    fn a_quiet_log_gives_back_its_spare_room_and_keeps_what_it_holds() {
        let t0 = Instant::now();
        let mut c = Completed::new(HOLD, t0);
        let key = |i: u32| format!("z9hG4bK-{i}\0host\0NOTIFY");
        for i in 0..20_000u32 {
            c.insert(t0, hash(key(i).as_bytes()), key(i).as_bytes(), b"200");
        }
        c.insert(t0 + Duration::from_secs(1), hash(key(20_000).as_bytes()), key(20_000).as_bytes(), b"200");
        c.expire(t0 + HOLD);
        assert_eq!(c.len(), 1);
        assert!(!c.spare.is_empty() && c.records.spare.is_some(), "a burst leaves spare chunks and a spare block");
        c.give_back_room();
        assert!(c.spare.is_empty() && c.records.spare.is_none());
        assert_eq!(c.find(hash(key(20_000).as_bytes()), key(20_000).as_bytes()), Some(&b"200"[..]), "what is held stays");
        // Empty: nothing is kept at all, and the log works on from there.
        c.expire(t0 + HOLD + Duration::from_secs(1));
        c.give_back_room();
        assert!(c.is_empty() && c.chunks.is_empty() && c.records.blocks.is_empty() && c.arena_bytes() == 0);
        c.insert(t0 + Duration::from_secs(40), hash(key(1).as_bytes()), key(1).as_bytes(), b"200");
        assert_eq!(c.find(hash(key(1).as_bytes()), key(1).as_bytes()), Some(&b"200"[..]));
        assert_eq!((c.len(), c.pending()), (1, 1));
        c.expire(t0 + Duration::from_secs(40) + HOLD);
        assert_eq!((c.len(), c.pending()), (0, 0));
    }

    #[test]
    fn held_until_the_hold_passes_then_gone_with_its_memory() {
        let t0 = Instant::now();
        let mut c = Completed::new(HOLD, t0);
        for i in 0..10_000u32 {
            let key = format!("z9hG4bK-{i}\0host\0PUBLISH");
            c.insert(t0 + Duration::from_millis(i as u64), hash(key.as_bytes()), key.as_bytes(), format!("answer {i}").as_bytes());
        }
        assert_eq!(c.len(), 10_000);
        assert!(c.arena_bytes() >= 10_000 * 30 && c.chunks.len() > 2);
        assert_eq!(c.find(hash(b"z9hG4bK-77\0host\0PUBLISH"), b"z9hG4bK-77\0host\0PUBLISH"), Some(&b"answer 77"[..]));
        assert_eq!(c.find(hash(b"z9hG4bK-77\0host\0SUBSCRIBE"), b"z9hG4bK-77\0host\0SUBSCRIBE"), None, "the method is part of the key");
        // Half of them expire: the first 5,000 ms of completions.
        c.expire(t0 + HOLD + Duration::from_millis(4_999));
        assert_eq!(c.len(), 5_000);
        assert_eq!(c.find(hash(b"z9hG4bK-77\0host\0PUBLISH"), b"z9hG4bK-77\0host\0PUBLISH"), None);
        assert_eq!(c.find(hash(b"z9hG4bK-7777\0host\0PUBLISH"), b"z9hG4bK-7777\0host\0PUBLISH"), Some(&b"answer 7777"[..]));
        c.expire(t0 + HOLD + Duration::from_secs(10));
        assert!(c.is_empty() && c.pending() == 0);
        assert!(c.chunks.len() <= 1 && c.arena_bytes() <= CHUNK, "expired chunks are given back ({} bytes held)", c.arena_bytes());
        assert!(c.index.iter().all(|p| p.is_empty()));
    }

    #[test]
    fn the_ring_keeps_order_and_numbers_across_blocks_and_reuses_them() {
        let mut r: Ring<u32> = Ring::new(OwnPages::new());
        let mut next_out = 0u64;
        for round in 0..3u64 {
            for i in 0..(BLOCK as u64 * 2 + 17) {
                let seq = r.push(i as u32);
                assert_eq!(*r.get(seq), i as u32);
                assert_eq!(*r.back().unwrap(), i as u32);
            }
            assert!(r.blocks.len() <= 3, "round {round}: {} blocks", r.blocks.len());
            while r.front().is_some() {
                let v = *r.front().unwrap();
                assert_eq!(r.pop(), next_out);
                assert_eq!(v as u64, (next_out - round * (BLOCK as u64 * 2 + 17)));
                next_out += 1;
            }
            assert_eq!(r.len(), 0);
            assert!(r.back().is_none());
        }
        let seq = r.push(5);
        *r.get_mut(seq) = 6;
        assert_eq!(r.front(), Some(&6));
    }

    #[test]
    fn the_index_stops_growing_once_the_log_has_filled() {
        let t0 = Instant::now();
        // Held 8 s: 160,000 at once, about 312 a part, as many as the
        // growth rule is meant for (a few dozen a part fluctuate past it).
        let mut c = Completed::new(Duration::from_secs(8), t0);
        let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let mut now = t0;
        let insert_for = |c: &mut Completed, from: u64, seconds: u64, now: &mut Instant| {
            // 20,000 a second, a timer step every 5 ms.
            for n in from..from + seconds * 20_000 {
                let key = n.to_be_bytes();
                c.insert(*now, hasher.hash_one(key), &key, b"a");
                *now += Duration::from_micros(50);
                if n % 100 == 0 {
                    c.expire(*now);
                }
            }
        };
        insert_for(&mut c, 0, 16, &mut now);
        let rooms = c.index_room.clone();
        // Ten more holds of churn at the same count: no part grows.
        insert_for(&mut c, 320_000, 80, &mut now);
        assert!((155_000..=165_000).contains(&c.len()), "{} held", c.len());
        assert_eq!(c.index_room, rooms, "no part grew under a steady churn");
    }

    #[test]
    fn a_forgotten_transaction_is_gone_at_once_and_its_record_leaves_at_expiry() {
        let t0 = Instant::now();
        let mut c = Completed::new(HOLD, t0);
        c.insert(t0, hash(b"a"), b"a", b"A");
        c.insert(t0, hash(b"b"), b"b", b"B");
        assert!(c.remove(hash(b"a"), b"a"));
        assert!(!c.remove(hash(b"a"), b"a"), "only once");
        assert_eq!((c.len(), c.pending()), (1, 2));
        assert_eq!(c.find(hash(b"a"), b"a"), None);
        assert_eq!(c.find(hash(b"b"), b"b"), Some(&b"B"[..]));
        c.expire(t0 + HOLD);
        assert_eq!((c.len(), c.pending()), (0, 0));
    }

    #[test]
    fn an_answer_larger_than_a_chunk_gets_a_chunk_of_its_own() {
        let t0 = Instant::now();
        let mut c = Completed::new(HOLD, t0);
        c.insert(t0, hash(b"small"), b"small", b"s");
        let big = vec![7u8; CHUNK * 2];
        c.insert(t0, hash(b"big"), b"big", &big);
        c.insert(t0, hash(b"after"), b"after", b"x");
        assert_eq!(c.find(hash(b"big"), b"big"), Some(&big[..]));
        assert_eq!(c.find(hash(b"small"), b"small"), Some(&b"s"[..]));
        assert_eq!(c.find(hash(b"after"), b"after"), Some(&b"x"[..]));
        c.expire(t0 + HOLD);
        assert!(c.is_empty() && c.arena_bytes() <= CHUNK, "the big chunk is freed, not kept as spare");
    }

    /// Random inserts, removals, lookups and clock steps against a plain
    /// map with expiry times: the log must agree with it at every step,
    /// over many seeds.
    #[test]
    fn agrees_with_a_map_under_random_churn() {
        for seed in 0..40u64 {
            let mut rng = Entropy::for_shard(seed, 0);
            let mut range = |lo: u64, hi: u64| lo + rng.below(hi - lo);
            let t0 = Instant::now();
            let hold = Duration::from_millis(range(1, 200));
            let mut c = Completed::new(hold, t0);
            let mut model: HashMap<Vec<u8>, (Vec<u8>, Instant)> = HashMap::new();
            let mut now = t0;
            for step in 0..3_000u32 {
                match range(0, 10) {
                    0..=4 => {
                        let key = format!("k{}", range(0, 400)).into_bytes();
                        if model.contains_key(&key) {
                            continue;
                        }
                        let answer = vec![b'a' + (step % 26) as u8; range(0, 300) as usize];
                        c.insert(now, hash(&key), &key, &answer);
                        model.insert(key, (answer, now + hold));
                    }
                    5 => {
                        let key = format!("k{}", range(0, 400)).into_bytes();
                        assert_eq!(c.remove(hash(&key), &key), model.remove(&key).is_some(), "seed {seed} step {step}");
                    }
                    6..=7 => {
                        now += Duration::from_millis(range(0, 20));
                        c.expire(now);
                        model.retain(|_, (_, due)| *due > now);
                    }
                    _ => {
                        let key = format!("k{}", range(0, 400)).into_bytes();
                        assert_eq!(c.find(hash(&key), &key), model.get(&key).map(|(a, _)| &a[..]), "seed {seed} step {step}");
                    }
                }
                assert_eq!(c.len(), model.len(), "seed {seed} step {step}");
            }
            now += hold;
            c.expire(now);
            assert!(c.is_empty() && c.pending() == 0 && c.arena_bytes() <= CHUNK, "seed {seed}");
        }
    }
}
