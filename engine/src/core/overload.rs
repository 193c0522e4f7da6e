//! Overload control by queueing delay, after CoDel (RFC 8289) and RFC
//! 7339: each shard measures how long each request waited before it could
//! be worked on (its sojourn: the kernel's receive timestamp to the start
//! of its processing).
//!
//! - A standing queue, a sojourn above `target` for a whole `interval`,
//!   means the shard takes in more than it can serve: it is overloaded
//!   until a request waits less than `target` again. A burst that drains
//!   within the interval is a good queue and is served.
//! - Work that waited longer than `deadline` is not worth doing: its
//!   client has retransmitted or will before the answer arrives, and the
//!   queue behind it only grows. New initial requests (REGISTER, PUBLISH,
//!   out-of-dialog SUBSCRIBE) past the deadline are shed: one in
//!   `refuse_every` gets a 503 with Retry-After (the signal to back off),
//!   the others are dropped unanswered, because an answer costs a third of
//!   serving the request and answering every one would leave no time to
//!   serve any (measured in `bench/e2e/overload.sh`).
//! - Dialogs and responses are never shed: they finish work already paid
//!   for.
//!
//! Why delay and not queue length: the work a request costs varies, while
//! the client's retransmission timer (T1, 500 ms) is about time.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverloadConfig {
    /// Sojourn above which a queue is standing (0 disables shedding).
    pub target: Duration,
    /// How long the sojourn must stay above `target` to count as overload.
    pub interval: Duration,
    /// Sojourn past which a new initial request is shed while overloaded.
    pub deadline: Duration,
    /// One shed request in this many gets a 503; the rest are dropped.
    pub refuse_every: u32,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig { target: Duration::from_millis(20), interval: Duration::from_millis(100), deadline: Duration::from_millis(40), refuse_every: 8 }
    }
}

/// One shard's detector.
#[derive(Debug)]
pub struct Overload {
    cfg: OverloadConfig,
    /// Since the sojourn went above target: when to start shedding.
    above_until: Option<Instant>,
    shedding: bool,
    /// The wait of the last message seen.
    last: Duration,
    /// Shed requests so far (picks which get a 503).
    shed: u64,
    /// The largest sojourn seen (for stats).
    pub peak: Duration,
}

/// What to do with a new initial request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// A quick 503 with Retry-After.
    Refuse,
    /// Drop it unanswered: it waited so long that its client has
    /// retransmitted already, and answering costs what the shard lacks.
    Drop,
}

impl Overload {
    pub fn new(cfg: OverloadConfig) -> Self {
        Overload { cfg, above_until: None, shedding: false, last: Duration::ZERO, shed: 0, peak: Duration::ZERO }
    }

    /// A request that waited `sojourn`, seen at `now`.
    pub fn observe(&mut self, now: Instant, sojourn: Duration) {
        self.peak = self.peak.max(sojourn);
        self.last = sojourn;
        if self.cfg.target.is_zero() {
            return;
        }
        if sojourn < self.cfg.target {
            // The queue drained below target: it was a good queue.
            self.above_until = None;
            self.shedding = false;
            return;
        }
        match self.above_until {
            None => self.above_until = Some(now + self.cfg.interval),
            Some(t) if now >= t => self.shedding = true,
            Some(_) => {}
        }
    }

    /// Whether new initial requests are shed now.
    pub fn shedding(&self) -> bool {
        self.shedding
    }

    /// What to do with the new initial request seen last: served unless
    /// overloaded and past the deadline; then one in `refuse_every` gets a
    /// 503, the others are dropped.
    pub fn verdict(&mut self) -> Verdict {
        if !self.shedding || self.last <= self.cfg.deadline {
            return Verdict::Serve;
        }
        self.shed += 1;
        if self.shed % self.cfg.refuse_every.max(1) as u64 == 0 { Verdict::Refuse } else { Verdict::Drop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_standing_queue_sheds_a_burst_does_not() {
        let t0 = Instant::now();
        let mut o = Overload::new(OverloadConfig::default());
        // A burst: 50 ms of waiting that drains within the interval.
        o.observe(t0, ms(50));
        o.observe(t0 + ms(60), ms(30));
        o.observe(t0 + ms(80), ms(5));
        o.observe(t0 + ms(150), ms(40));
        assert!(!o.shedding(), "a queue that drains is served");
        // Above target for a whole interval: shed.
        for i in 0..=10 {
            o.observe(t0 + ms(200 + i * 10), ms(30));
        }
        assert!(o.shedding());
        // One request under target ends it.
        o.observe(t0 + ms(320), ms(2));
        assert!(!o.shedding());
        assert_eq!(o.peak, ms(50));
    }

    #[test]
    fn overloaded_work_past_the_deadline_is_shed_one_in_n_refused() {
        let t0 = Instant::now();
        let mut o = Overload::new(OverloadConfig { refuse_every: 4, ..OverloadConfig::default() });
        for i in 0..=10 {
            o.observe(t0 + ms(i * 10), ms(30));
        }
        assert!(o.shedding());
        assert_eq!(o.verdict(), Verdict::Serve, "overloaded, but this one is within the deadline");
        o.observe(t0 + ms(110), ms(60));
        let v: Vec<Verdict> = (0..8).map(|_| o.verdict()).collect();
        assert_eq!(v.iter().filter(|v| **v == Verdict::Refuse).count(), 2);
        assert_eq!(v.iter().filter(|v| **v == Verdict::Drop).count(), 6);
    }

    #[test]
    fn zero_target_never_sheds() {
        let t0 = Instant::now();
        let mut o = Overload::new(OverloadConfig { target: Duration::ZERO, interval: ms(1), ..OverloadConfig::default() });
        for i in 0..100 {
            o.observe(t0 + ms(i), Duration::from_secs(5));
        }
        assert!(!o.shedding());
    }
}
