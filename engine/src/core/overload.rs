//! Overload detection by queueing delay, after CoDel (RFC 8289) and the
//! SIP overload control of RFC 7339: each shard measures how long each
//! request waited before it could be worked on (its sojourn: the kernel's
//! receive timestamp to the start of its processing). A standing queue,
//! a sojourn above `target` for a whole `interval`, means the shard takes
//! in more than it can serve; it then sheds new initial requests (a quick
//! 503 with Retry-After) until a request waits less than `target` again.
//!
//! Why delay and not a queue length: the work a request costs varies
//! (a REGISTER, a PUBLISH with PIDF, a SUBSCRIBE with its NOTIFY), while
//! the client's retransmission timer (T1, 500 ms) is about time. Why a
//! minimum over an interval: a burst that drains within the interval is a
//! good queue and is served; only a queue that never drains is shed.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverloadConfig {
    /// Sojourn above which a queue is standing (0 disables shedding).
    pub target: Duration,
    /// How long the sojourn must stay above `target` to shed.
    pub interval: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig { target: Duration::from_millis(20), interval: Duration::from_millis(100) }
    }
}

/// One shard's detector.
#[derive(Debug)]
pub struct Overload {
    cfg: OverloadConfig,
    /// Since the sojourn went above target: when to start shedding.
    above_until: Option<Instant>,
    shedding: bool,
    /// The largest sojourn seen (for stats).
    pub peak: Duration,
}

impl Overload {
    pub fn new(cfg: OverloadConfig) -> Self {
        Overload { cfg, above_until: None, shedding: false, peak: Duration::ZERO }
    }

    /// A request that waited `sojourn`, seen at `now`.
    pub fn observe(&mut self, now: Instant, sojourn: Duration) {
        self.peak = self.peak.max(sojourn);
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
    fn zero_target_never_sheds() {
        let t0 = Instant::now();
        let mut o = Overload::new(OverloadConfig { target: Duration::ZERO, interval: ms(1) });
        for i in 0..100 {
            o.observe(t0 + ms(i), Duration::from_secs(5));
        }
        assert!(!o.shedding());
    }
}
