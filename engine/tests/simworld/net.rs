//! The simulated network between UEs and shards: datagrams are lost,
//! duplicated and delayed (so reordered) by the seed; a TCP connection
//! delivers in order, without loss, after a delay.

use presence_engine::core::Peer;
use presence_engine::core::entropy::Entropy;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

/// Where a message goes.
#[derive(Clone, Debug)]
pub enum Dest {
    /// A shard's socket, with the peer the shard sees it come from.
    Shard(u16, Peer),
    /// A UE, by index.
    Ue(usize),
}

pub struct Flight {
    pub at: Duration,
    seq: u64,
    pub dest: Dest,
    pub bytes: Vec<u8>,
}

impl PartialEq for Flight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Flight {}
impl PartialOrd for Flight {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Flight {
    // Reversed: the heap pops the earliest first, ties in send order.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// How bad the datagram network is.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

pub struct Network {
    faults: Faults,
    flights: BinaryHeap<Flight>,
    seq: u64,
    /// The last delivery time of each TCP connection: later frames never
    /// overtake it.
    stream_tail: HashMap<u64, Duration>,
    pub lost: u64,
    pub duplicated: u64,
}

impl Network {
    pub fn new(faults: Faults) -> Network {
        Network { faults, flights: BinaryHeap::new(), seq: 0, stream_tail: HashMap::new(), lost: 0, duplicated: 0 }
    }

    fn delay(&self, rng: &mut Entropy) -> Duration {
        let span = (self.faults.max_delay - self.faults.min_delay).as_micros() as u64;
        self.faults.min_delay + Duration::from_micros(rng.below(span.max(1)))
    }

    fn push(&mut self, at: Duration, dest: Dest, bytes: Vec<u8>) {
        self.seq += 1;
        self.flights.push(Flight { at, seq: self.seq, dest, bytes });
    }

    /// A datagram: maybe lost, maybe twice, each copy with its own delay.
    pub fn datagram(&mut self, rng: &mut Entropy, now: Duration, dest: Dest, bytes: Vec<u8>) {
        if rng.chance(self.faults.loss) {
            self.lost += 1;
            return;
        }
        if rng.chance(self.faults.duplicate) {
            self.duplicated += 1;
            let at = now + self.delay(rng);
            self.push(at, dest.clone(), bytes.clone());
        }
        let at = now + self.delay(rng);
        self.push(at, dest, bytes);
    }

    /// A frame on TCP connection `conn`: in order, never lost.
    pub fn stream(&mut self, rng: &mut Entropy, now: Duration, conn: u64, dest: Dest, bytes: Vec<u8>) {
        let at = (now + self.delay(rng)).max(self.stream_tail.get(&conn).copied().unwrap_or_default());
        self.stream_tail.insert(conn, at);
        self.push(at, dest, bytes);
    }

    pub fn next_at(&self) -> Option<Duration> {
        self.flights.peek().map(|f| f.at)
    }

    /// The next flight due at `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<Flight> {
        if self.flights.peek()?.at <= now { self.flights.pop() } else { None }
    }
}
