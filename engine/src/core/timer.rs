//! A per-shard timer wheel: O(1) insert and expiry for the near future
//! (transaction timers, rate-control intervals), and buckets for far
//! deadlines (registration and subscription expiry, hours away), each a
//! 64th of the wheel's span, that move into the wheel when they come
//! within it, so a long timer is not revisited every turn of the wheel.
//!
//! The far deadlines were one binary heap: one vector, whose doubling
//! copied every far timer inside one request (10 ms at half a million,
//! `bench/examples/growth_stall.rs`, and proportionally more beyond). A
//! bucket holds only the deadlines of its own stretch of time and moves in
//! whole, a 64th of a span at a time.
//!
//! There is no cancel: an entry names the state it belongs to, and the
//! owner ignores a firing whose state has moved on (a refreshed binding, a
//! finished transaction). That keeps every table free of timer handles.

use super::room::{GiveBack, KEEP_PART};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub struct TimerWheel<T> {
    epoch: Instant,
    tick: Duration,
    /// Ticks processed so far: every entry due at or before it has fired.
    now_tick: u64,
    slots: Vec<Vec<(u64, T)>>,
    /// Deadlines beyond the span, by bucket (tick / `bucket`): a bucket
    /// moves into the wheel once its last tick is within the span.
    far: BTreeMap<u64, Vec<(u64, T)>>,
    /// Ticks per far bucket.
    bucket: u64,
    len: usize,
}

impl<T> TimerWheel<T> {
    /// A wheel of `slots` slots of `tick` each, starting at `epoch`.
    pub fn new(epoch: Instant, tick: Duration, slots: usize) -> Self {
        assert!(slots > 0 && !tick.is_zero());
        let bucket = (slots as u64 / 64).max(1);
        TimerWheel { epoch, tick, now_tick: 0, slots: (0..slots).map(|_| Vec::new()).collect(), far: BTreeMap::new(), bucket, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
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
            self.far.entry(tick / self.bucket).or_default().push((tick, item));
        }
    }

    /// For a quiet shard: every slot gives back its room, an empty one all
    /// of it. A slot otherwise gives back only when the wheel passes it, and
    /// down to a little room of its own: after a burst, thousands of slots
    /// each kept a small block for good.
    pub fn give_back_room(&mut self) {
        for slot in &mut self.slots {
            if slot.is_empty() {
                *slot = Vec::new();
            } else {
                slot.give_back(KEEP_PART);
            }
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
            entries.give_back(KEEP_PART);
        }
        self.now_tick = target;
        // Buckets now wholly within the span move in; their entries that
        // are due (after a long jump) fire.
        while let Some(entry) = self.far.first_entry() {
            if (entry.key() + 1) * self.bucket - 1 > self.now_tick + span {
                break;
            }
            for (tick, item) in entry.remove() {
                if tick <= self.now_tick {
                    fired.push(item);
                } else {
                    self.slots[(tick % span) as usize].push((tick, item));
                }
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
    fn a_quiet_wheel_gives_back_every_slot_a_burst_grew() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, ms(10), 64);
        // A burst: 1,000 entries in each of 10 slots, then all fire; one
        // entry stays, in a slot that grew.
        for i in 0..10_000u64 {
            w.insert(t0 + ms(10 + (i % 10) * 10), i);
        }
        w.insert(t0 + ms(200), 99_999);
        let mut out = vec![];
        w.advance(t0 + ms(100), &mut out);
        assert_eq!(out.len(), 10_000);
        let held = |w: &TimerWheel<u64>| w.slots.iter().map(Vec::capacity).sum::<usize>();
        assert!(held(&w) > 0, "slots passed keep a little room");
        w.give_back_room();
        // A Vec's smallest allocation is 4 entries.
        assert!(held(&w) <= 4, "only the slot with an entry keeps room, and only for it: {}", held(&w));
        out.clear();
        w.advance(t0 + ms(200), &mut out);
        assert_eq!(out, vec![99_999]);
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

    /// Inserts interleaved with advances, near and far deadlines mixed
    /// (some inside the span in a bucket not yet moved in): each timer
    /// fires once, never early, and at the first advance after its tick.
    #[test]
    fn interleaved_inserts_fire_once_on_time() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, ms(4), 128); // span 512 ms, buckets of 2 ticks
        let mut rng = crate::core::entropy::Entropy::for_shard(7, 0);
        let mut deadlines = vec![];
        let mut fired = vec![false; 20_000];
        let (mut now, mut out) = (0u64, vec![]);
        while now < 40_000 {
            for _ in 0..rng.below(40) {
                let d = now + if rng.below(2) == 0 { rng.below(600) } else { rng.below(20_000) };
                w.insert(t0 + ms(d), deadlines.len());
                deadlines.push((d, now));
                if deadlines.len() == fired.len() {
                    break;
                }
            }
            let step = 1 + rng.below(30);
            let before = now;
            now += step;
            out.clear();
            w.advance(t0 + ms(now), &mut out);
            for &i in &out {
                let (d, inserted) = deadlines[i];
                assert!(!fired[i], "timer {i} fired twice");
                fired[i] = true;
                assert!(d <= now, "timer {i} at {d} fired early at {now}");
                // Its tick (the deadline rounded up to 4 ms, and at least
                // the tick after its insertion) had not come at the last
                // advance.
                let due = (d.div_ceil(4) * 4).max(inserted / 4 * 4 + 4);
                assert!(due > before, "timer {i} at {d} (inserted at {inserted}) fired late at {now}");
            }
            if deadlines.len() == fired.len() {
                break;
            }
        }
        out.clear();
        w.advance(t0 + ms(now + 30_000), &mut out);
        for &i in &out {
            fired[i] = true;
        }
        assert!(fired[..deadlines.len()].iter().all(|f| *f));
        assert!(w.is_empty());
    }

    /// Far deadlines are held in buckets of their own stretch of time, so
    /// no single vector holds them all (one that doubles copies them all).
    #[test]
    fn far_deadlines_wait_in_small_buckets() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, ms(10), 4096); // buckets of 64 ticks, 640 ms
        for i in 0..200_000u64 {
            w.insert(t0 + Duration::from_secs(3600) * (i % 1000) as u32 / 1000, i);
        }
        let largest = w.far.values().map(|b| b.len()).max().unwrap();
        assert!(largest <= 1_000, "a bucket holds {largest}");
        let mut out = vec![];
        w.advance(t0 + Duration::from_secs(3601), &mut out);
        assert_eq!(out.len(), 200_000);
        assert!(w.far.is_empty());
    }
}
