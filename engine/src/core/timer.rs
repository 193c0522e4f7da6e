//! A per-shard timer wheel: O(1) insert and expiry for the near future
//! (transaction timers, rate-control intervals), a heap for far deadlines
//! (registration and subscription expiry, hours away) that are moved into
//! the wheel when they come within its span, so a long timer is not
//! revisited every turn of the wheel.
//!
//! There is no cancel: an entry names the state it belongs to, and the
//! owner ignores a firing whose state has moved on (a refreshed binding, a
//! finished transaction). That keeps every table free of timer handles.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

pub struct TimerWheel<T> {
    epoch: Instant,
    tick: Duration,
    /// Ticks processed so far: every entry due at or before it has fired.
    now_tick: u64,
    slots: Vec<Vec<(u64, T)>>,
    far: BinaryHeap<Far<T>>,
    seq: u64,
    len: usize,
}

struct Far<T> {
    tick: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Far<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.tick, self.seq) == (o.tick, o.seq)
    }
}
impl<T> Eq for Far<T> {}
impl<T> PartialOrd for Far<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Far<T> {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.tick, o.seq).cmp(&(self.tick, self.seq))
    }
}

impl<T> TimerWheel<T> {
    /// A wheel of `slots` slots of `tick` each, starting at `epoch`.
    pub fn new(epoch: Instant, tick: Duration, slots: usize) -> Self {
        assert!(slots > 0 && !tick.is_zero());
        TimerWheel { epoch, tick, now_tick: 0, slots: (0..slots).map(|_| Vec::new()).collect(), far: BinaryHeap::new(), seq: 0, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Room for `n` far entries (expiries hours away, one per record),
    /// made now: the heap is one vector, and its doubling copies all of
    /// them inside one request (13 ms at half a million, measured by
    /// `bench/examples/growth_stall.rs`).
    pub fn reserve(&mut self, n: usize) {
        self.far.reserve(n);
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tick at which a deadline fires: rounded up, so never early.
    fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.epoch);
        let t = self.tick.as_nanos();
        d.as_nanos().div_ceil(t) as u64
    }

    /// Schedules `item` to fire at the first `advance` at or after `at`.
    pub fn insert(&mut self, at: Instant, item: T) {
        let tick = self.tick_of(at).max(self.now_tick + 1);
        self.len += 1;
        self.place(tick, item);
    }

    fn place(&mut self, tick: u64, item: T) {
        let span = self.slots.len() as u64;
        if tick - self.now_tick <= span {
            let slot = (tick % span) as usize;
            self.slots[slot].push((tick, item));
        } else {
            self.seq += 1;
            self.far.push(Far { tick, seq: self.seq, item });
        }
    }

    /// Fires everything due at `now` into `fired`, in no particular order
    /// within one tick.
    pub fn advance(&mut self, now: Instant, fired: &mut Vec<T>) {
        // The last tick boundary at or before `now`: an entry due at tick
        // `d` (deadline rounded up to `d`) has its deadline behind it.
        let target = (now.saturating_duration_since(self.epoch).as_nanos() / self.tick.as_nanos()) as u64;
        if target <= self.now_tick {
            return;
        }
        let span = self.slots.len() as u64;
        let steps = (target - self.now_tick).min(span);
        let before = fired.len();
        for step in 1..=steps {
            let tick = self.now_tick + step;
            let slot = (tick % span) as usize;
            let entries = &mut self.slots[slot];
            let mut i = 0;
            while i < entries.len() {
                if entries[i].0 <= target {
                    fired.push(entries.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
            // A slot is visited once a turn: after a burst (a NOTIFY storm
            // leaves hundreds of entries in each slot it touched) its room
            // goes back then, instead of being held for good (14 MiB after
            // 160,000 NOTIFYs, `bench/examples/storm_memory.rs`). At a
            // steady rate this is one reallocation per busy slot per turn.
            if let Some(to) = super::room::shrink_to(entries.len(), entries.capacity(), super::room::KEEP_PART) {
                entries.shrink_to(to);
            }
        }
        if let Some(to) = super::room::shrink_to(self.far.len(), self.far.capacity(), super::room::KEEP) {
            self.far.shrink_to(to);
        }
        self.now_tick = target;
        // Far entries now due fire; those now within the span move in.
        while let Some(top) = self.far.peek() {
            if top.tick > self.now_tick + span {
                break;
            }
            let Far { tick, item, .. } = self.far.pop().unwrap();
            if tick <= self.now_tick {
                fired.push(item);
            } else {
                self.place(tick, item);
            }
        }
        self.len -= fired.len() - before;
    }
}

/// When the wheel next looks at one record whose entries (bindings,
/// publications) each expire. A record keeps a single wheel entry, at its
/// earliest expiry, instead of one per refresh: a refresh every few
/// seconds would otherwise leave an entry per request for a whole expiry
/// period. Lazy like the wheel: an entry that fires before anything is due
/// just schedules the next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recheck {
    at: Option<Instant>,
}

impl Recheck {
    /// The record's entry fired at `now` (or an older, superseded one).
    pub fn fired(&mut self, now: Instant) {
        if self.at.is_some_and(|t| t <= now) {
            self.at = None;
        }
    }

    /// Makes sure the wheel looks at the record by `earliest`, the soonest
    /// expiry among its entries; `item` names the record in the wheel.
    pub fn ensure<T>(&mut self, wheel: &mut TimerWheel<T>, earliest: Option<Instant>, item: impl FnOnce() -> T) {
        let Some(earliest) = earliest else { return };
        if self.at.is_none_or(|t| earliest < t) {
            self.at = Some(earliest);
            wheel.insert(earliest, item());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fires_in_time_never_early() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, ms(10), 64);
        w.insert(t0 + ms(25), "a");
        w.insert(t0 + ms(5), "b");
        let mut out = vec![];
        w.advance(t0 + ms(9), &mut out);
        assert!(out.is_empty());
        w.advance(t0 + ms(10), &mut out);
        assert_eq!(out, vec!["b"]);
        out.clear();
        w.advance(t0 + ms(29), &mut out);
        assert!(out.is_empty(), "25 ms rounds up to the 30 ms tick");
        w.advance(t0 + ms(30), &mut out);
        assert_eq!(out, vec!["a"]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_timers_and_long_jumps() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, ms(10), 8); // span 80 ms
        for i in 0..100u64 {
            w.insert(t0 + ms(i * 37), i);
        }
        let mut out = vec![];
        w.advance(t0 + ms(1000), &mut out);
        let mut got = out.clone();
        got.sort();
        assert_eq!(got, (0..=27).collect::<Vec<_>>());
        out.clear();
        w.advance(t0 + ms(100_000), &mut out);
        assert_eq!(out.len(), 72);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadline_fires_on_next_advance() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, ms(10), 8);
        let mut out = vec![];
        w.advance(t0 + ms(500), &mut out);
        w.insert(t0, 1);
        w.advance(t0 + ms(500), &mut out);
        assert!(out.is_empty());
        w.advance(t0 + ms(510), &mut out);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn matches_a_sorted_reference() {
        // Every timer fires at the first advance at or after its deadline.
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, ms(4), 16);
        let mut x: u64 = 12345;
        let mut deadlines = vec![];
        for i in 0..2000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let d = (x >> 33) % 5000;
            deadlines.push(d);
            w.insert(t0 + ms(d), i);
        }
        let mut now = 0;
        let mut out = vec![];
        while now < 6000 {
            now += 7;
            out.clear();
            w.advance(t0 + ms(now), &mut out);
            for &i in &out {
                let d = deadlines[i as usize];
                assert!(d <= now, "timer {i} at {d} fired early at {now}");
                assert!(d + 7 + 4 > now, "timer {i} at {d} fired late at {now}");
            }
        }
        assert!(w.is_empty());
    }
}
