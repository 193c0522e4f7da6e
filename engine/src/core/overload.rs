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
//!   the others are dropped unanswered, because an answer costs about half
//!   of serving the request and answering every one would leave no time to
//!   serve any (measured in `bench/e2e/overload.sh`). A client that takes
//!   RFC 7339 feedback always gets the 503: it backs off as told, while a
//!   drop only brings its retransmission back into the queue.
//! - Dialogs and responses are never shed: they finish work already paid
//!   for.
//!
//! - Clients that take RFC 7339 loss-based feedback (an `oc` in their Via)
//!   are told, in the Via of every response, what percentage of their new
//!   requests to hold back ([`LossRate`]): held back at the client, a
//!   request costs the shard nothing at all, which is what keeps goodput at
//!   capacity when the offered load is far above it. Shedding above stays
//!   the backstop for clients that do not listen.
//!
//! Why delay and not queue length: the work a request costs varies, while
//! the client's retransmission timer (T1, 500 ms) is about time.

use std::time::{Duration, Instant, SystemTime};

use crate::sip::oc::OcFeedback;

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
    /// Bounds of the admission queue (`core::ingress`), in messages and bytes.
    pub queue_messages: usize,
    pub queue_bytes: usize,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            target: Duration::from_millis(20),
            interval: Duration::from_millis(100),
            deadline: Duration::from_millis(40),
            refuse_every: 8,
            queue_messages: 16_384,
            queue_bytes: 16 << 20,
        }
    }
}

/// One shard's detector.
#[derive(Debug)]
pub struct Overload {
    cfg: OverloadConfig,
    /// Since the sojourn went above target: when to start shedding.
    above_until: Option<Instant>,
    shedding: bool,
    /// Wall time per served message (nanoseconds, a moving average over
    /// spans of [`PACE_SPAN`]), the shard's turns off its core included:
    /// how fast a queue drains.
    service_ns: f64,
    /// The span being summed: its time and messages.
    span: (Duration, u32),
    /// The pace the admission queue was actually drained at (nanoseconds
    /// per message ahead, a moving average): see [`Overload::drained`].
    queue_ns: f64,
    /// Shed requests so far (picks which get a 503).
    shed: u64,
    /// The largest sojourn seen (for stats).
    pub peak: Duration,
    /// The loss rate RFC 7339 clients are told.
    loss: LossRate,
}

/// How long RFC 7339 feedback holds at the client: long enough to span
/// the gaps between responses, short enough that a client that hears
/// nothing more (the shard recovered, or went away) soon stops holding
/// back. It is the RFC's default.
const OC_VALIDITY: Duration = Duration::from_millis(500);

/// The least share of new requests a client is told to send: some must
/// still get through, or it would never hear that the overload ended.
const MIN_SEND: f64 = 0.05;

/// How fast a standing queue above the setpoint is to be drained: the
/// admitted rate is cut by the excess over this time.
const DRAIN: Duration = Duration::from_millis(400);

/// The share of new requests RFC 7339 clients are told to send (and so
/// the loss rate they hear), steered every quarter interval from the smallest
/// sojourn (CoDel's measure of a standing queue: a stall or a burst that
/// drains does not count), in the manner of a fluid queue model:
///
/// - The change of that sojourn from one interval to the next says how
///   the arrival rate compares with the service rate (a queue that grows
///   by 10 ms in a 100 ms interval takes in 1.1 times what it serves).
/// - The share is scaled so that arrivals match service, less what drains
///   the excess over the setpoint (a quarter of `target`) within [`DRAIN`].
/// - A queue that stays under half the setpoint has room: the share grows
///   by 3 points each interval, and by a quarter each interval once it has
///   stayed there for a second, until clients send everything again.
///
/// A controller on the level alone (more loss above a threshold, less
/// below) overshoots: by the time the queue drains, the loss rate has
/// climbed far past what was needed, and the shard then idles. Measured
/// with `bench/e2e/overload.sh`: it swung between 16 % and 86 % at a load
/// that needed 50 %.
#[derive(Debug)]
pub struct LossRate {
    send: f64,
    window_end: Option<Instant>,
    window_min: Duration,
    /// The largest sojourn and the count of the interval (for the debug trace).
    window_max: Duration,
    window_n: u32,
    /// Intervals in a row with the queue under half the setpoint.
    quiet: u32,
    /// The smallest sojourn of the interval before.
    prev_min: Option<Duration>,
    /// Feedback is given until then (also the zero that ends it).
    tell_until: Option<Instant>,
    /// The last time seen, and the wall clock at construction: `oc-seq`
    /// is a timestamp that orders the feedback of all shards of one
    /// address.
    last_now: Option<Instant>,
    base: (Instant, u64),
}

impl LossRate {
    fn new() -> Self {
        let wall_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        LossRate {
            send: 1.0,
            window_end: None,
            window_min: Duration::MAX,
            window_max: Duration::ZERO,
            window_n: 0,
            quiet: 0,
            prev_min: None,
            tell_until: None,
            last_now: None,
            base: (Instant::now(), wall_ms),
        }
    }

    fn observe(&mut self, cfg: &OverloadConfig, now: Instant, sojourn: Duration) {
        self.last_now = Some(now);
        self.window_min = self.window_min.min(sojourn);
        self.window_max = self.window_max.max(sojourn);
        self.window_n += 1;
        let steer = cfg.interval / 4;
        let end = *self.window_end.get_or_insert(now + steer);
        if now < end {
            return;
        }
        let min = self.window_min;
        let setpoint = cfg.target / 4;
        // The window as it was (it ends at the first request past its end).
        let window = (now - (end - steer)).as_secs_f64().max(1e-3);
        // The rules below are per interval; a window is a share of one.
        let part = (window / cfg.interval.as_secs_f64().max(1e-3)).min(1.0);
        let quiet_second = (1.0 / steer.as_secs_f64().max(1e-3)).round() as u32;
        if min < setpoint / 2 {
            // Room: a little more at once, and a quarter more per interval
            // once the queue has stayed away for a second (the load went
            // down). One quiet interval is often only the shard's turn on
            // a shared core: a quarter more on each made the share swing
            // between 25 and 80 % at a load that needed 45 %.
            self.quiet += 1;
            self.send = if self.quiet >= quiet_second { self.send * 1.25f64.powf(part) + 0.02 * part } else { self.send + 0.03 * part }.min(1.0);
        } else {
            self.quiet = 0;
            // Arrivals over service, from the queue's growth.
            let growth = (min.as_secs_f64() - self.prev_min.unwrap_or(min).as_secs_f64()) / window;
            let arrivals = (1.0 + growth).clamp(0.2, 5.0);
            let wanted = (1.0 - (min.as_secs_f64() - setpoint.as_secs_f64()) / DRAIN.as_secs_f64()).clamp(0.5, 1.05);
            // At most a fifth less per interval: one reading can mislead,
            // and a deeper cut left the shard idle once the queue drained.
            let step = (wanted / arrivals).clamp(0.8, 1.25).powf(part);
            self.send = (self.send * step).clamp(MIN_SEND, 1.0);
        }
        tracing::debug!(target: "overload", min_us = min.as_micros() as u64, max_us = self.window_max.as_micros() as u64, n = self.window_n, send = self.send, "interval");
        if self.send < 1.0 {
            // Keep talking a while after it is back to all, so clients hear it.
            self.tell_until = Some(now + 2 * OC_VALIDITY);
        }
        self.prev_min = Some(min);
        self.window_end = Some(now + steer);
        self.window_min = Duration::MAX;
        self.window_max = Duration::ZERO;
        self.window_n = 0;
    }

    /// The loss rate in percent.
    fn loss_pct(&self) -> u8 {
        ((1.0 - self.send) * 100.0).round().clamp(0.0, 100.0) as u8
    }

    fn feedback(&self) -> Option<OcFeedback> {
        let now = self.last_now?;
        if self.tell_until.is_none_or(|t| now > t) {
            return None;
        }
        let seq_ms = self.base.1 + now.saturating_duration_since(self.base.0).as_millis() as u64;
        Some(OcFeedback { loss_pct: self.loss_pct(), validity_ms: OC_VALIDITY.as_millis() as u32, seq_ms })
    }
}

/// The service pace is measured over spans of this much busy time: several
/// of the scheduler's turns on a shared core.
const PACE_SPAN: Duration = Duration::from_millis(10);

/// The fewest messages ahead for a queue wait to count as a pace sample.
const MIN_AHEAD: usize = 16;

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
        Overload {
            cfg,
            above_until: None,
            shedding: false,
            service_ns: 0.0,
            span: (Duration::ZERO, 0),
            queue_ns: 0.0,
            shed: 0,
            peak: Duration::ZERO,
            loss: LossRate::new(),
        }
    }

    /// A request that waited `sojourn`, seen at `now`.
    pub fn observe(&mut self, now: Instant, sojourn: Duration) {
        self.peak = self.peak.max(sojourn);
        if self.cfg.target.is_zero() {
            return;
        }
        self.loss.observe(&self.cfg, now, sojourn);
        if sojourn < self.cfg.target {
            // Below target: a queue that was building was a good queue.
            // Overload ends only well below it: while overloaded, the
            // admission queue is held near the deadline, and a sojourn a
            // little under target is a lucky turn, not the end of the
            // overload (ending there let the queue build for a whole
            // interval before shedding began again).
            self.above_until = None;
            if sojourn < self.cfg.target / 2 {
                self.shedding = false;
            }
            return;
        }
        self.above_target(now);
    }

    /// A datagram taken off the socket after waiting there `age`. A wait
    /// past the target in the socket alone is a standing queue too, and
    /// may be the only sign of one: when every request is refused at
    /// intake, none is served and [`Self::observe`] sees nothing. Without
    /// this, plain clients at twice the capacity kept the shard refusing
    /// every request with a 503 (which costs about half a service) and
    /// serving none: goodput 1 %, the socket full, the kernel dropping.
    /// So it can start shedding, never end it.
    pub fn waited_in_socket(&mut self, now: Instant, age: Duration) {
        if self.cfg.target.is_zero() || age < self.cfg.target {
            return;
        }
        self.peak = self.peak.max(age);
        self.above_target(now);
    }

    /// A wait above target seen at `now`: overload once waits have stayed
    /// above it for a whole interval (CoDel's rule).
    fn above_target(&mut self, now: Instant) {
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

    /// What RFC 7339 clients are told now (`None`: nothing to say).
    pub fn feedback(&self) -> Option<OcFeedback> {
        self.loss.feedback()
    }

    /// One message served in `took` of wall time.
    pub fn served(&mut self, took: Duration) {
        // A turn off the core (milliseconds) lands on one message; summed
        // over a span of several turns it is spread as the queue sees it.
        self.span.0 += took.min(PACE_SPAN);
        self.span.1 += 1;
        if self.span.0 < PACE_SPAN {
            return;
        }
        let ns = self.span.0.as_nanos() as f64 / self.span.1 as f64;
        self.service_ns = if self.service_ns == 0.0 { ns } else { self.service_ns + (ns - self.service_ns) / 4.0 };
        self.span = (Duration::ZERO, 0);
    }

    /// Busy time between served messages that went to other work (reading
    /// and refusing): part of the pace, but no message of its own.
    pub fn busy(&mut self, took: Duration) {
        self.span.0 += took.min(PACE_SPAN);
    }

    /// A queued message is served after `waited` in the queue, behind the
    /// `ahead` that were queued when it arrived: the pace the queue really
    /// drained at. It counts what the served pace misses: the
    /// socket's drain and its refusals, which grow with the burst, and
    /// turns off a shared core, which the served pace sees only when
    /// they fall inside its spans. Measured on a half core: predictions
    /// from the served pace alone let a tenth of a second's admitted
    /// requests be served at 40-118 ms against a 40 ms deadline.
    pub fn drained(&mut self, ahead: usize, waited: Duration) {
        // Too few ahead say more about one turn than about the pace.
        if ahead < MIN_AHEAD {
            return;
        }
        let ns = waited.as_nanos() as f64 / ahead as f64;
        self.queue_ns = if self.queue_ns == 0.0 { ns } else { self.queue_ns + (ns - self.queue_ns) / 32.0 };
    }

    /// The sojourn a message that has waited `age` will have when served
    /// after the `queued` messages ahead of it: at the slower of the two
    /// paces measured, the served one (known from the first slice on) and
    /// the queue's own.
    pub fn predicted(&self, age: Duration, queued: usize) -> Duration {
        age + Duration::from_nanos((self.service_ns.max(self.queue_ns) * queued as f64) as u64)
    }

    /// Whether a sojourn of `wait` is past the deadline (never, with
    /// overload control off).
    pub fn past_deadline(&self, wait: Duration) -> bool {
        !self.cfg.target.is_zero() && wait > self.cfg.deadline
    }

    /// What to do with a new initial request whose sojourn is (or will
    /// be) `wait`. Within the deadline it is served. Past it, it is not
    /// worth serving: a burst's excess is refused with a 503 each (few,
    /// and each client backs off); while overloaded, one in
    /// `refuse_every` gets a 503 and the others are dropped, because
    /// answering each would leave no time to serve any.
    pub fn verdict(&mut self, wait: Duration) -> Verdict {
        if !self.past_deadline(wait) {
            return Verdict::Serve;
        }
        if !self.shedding {
            return Verdict::Refuse;
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
        // A request a little under target does not end it; one well under
        // (half the target) does.
        o.observe(t0 + ms(315), ms(15));
        assert!(o.shedding(), "a lucky turn is not the end of the overload");
        o.observe(t0 + ms(320), ms(2));
        assert!(!o.shedding());
        assert_eq!(o.peak, ms(50));
    }

    #[test]
    fn a_standing_queue_in_the_socket_alone_starts_shedding() {
        let t0 = Instant::now();
        let mut o = Overload::new(OverloadConfig::default());
        // Every request waited 60 ms in the socket and none was served.
        for i in 0..=10 {
            o.waited_in_socket(t0 + ms(i * 10), ms(60));
        }
        assert!(o.shedding(), "a whole interval above target, in the socket alone");
        // Short waits in the socket say nothing about the queue behind it.
        o.waited_in_socket(t0 + ms(120), ms(1));
        assert!(o.shedding());
        // Service well under target ends it, as always.
        o.observe(t0 + ms(130), ms(2));
        assert!(!o.shedding());
        // A burst that waits less than an interval does not start it.
        let mut b = Overload::new(OverloadConfig::default());
        b.waited_in_socket(t0, ms(60));
        b.waited_in_socket(t0 + ms(50), ms(60));
        assert!(!b.shedding());
    }

    #[test]
    fn overloaded_work_past_the_deadline_is_shed_one_in_n_refused() {
        let t0 = Instant::now();
        let mut o = Overload::new(OverloadConfig { refuse_every: 4, ..OverloadConfig::default() });
        assert_eq!(o.verdict(ms(60)), Verdict::Refuse, "past the deadline in a burst: refused, not dropped");
        assert_eq!(o.verdict(ms(40)), Verdict::Serve);
        for i in 0..=10 {
            o.observe(t0 + ms(i * 10), ms(30));
        }
        assert!(o.shedding());
        assert_eq!(o.verdict(ms(30)), Verdict::Serve, "overloaded, but this one is within the deadline");
        let v: Vec<Verdict> = (0..8).map(|_| o.verdict(ms(60))).collect();
        assert_eq!(v.iter().filter(|v| **v == Verdict::Refuse).count(), 2);
        assert_eq!(v.iter().filter(|v| **v == Verdict::Drop).count(), 6);
    }

    #[test]
    fn the_predicted_wait_is_the_age_plus_the_queue_ahead_at_the_measured_pace() {
        let mut o = Overload::new(OverloadConfig::default());
        assert_eq!(o.predicted(ms(3), 100), ms(3), "nothing measured yet: the age alone");
        for _ in 0..1000 {
            o.served(Duration::from_micros(20));
        }
        let p = o.predicted(ms(3), 1000);
        assert!(p > ms(22) && p < ms(24), "{p:?}");
        // Half the core: 3 ms turns off it, each landing on one message of
        // 150 served at 10 us. The pace is the wall time per message, 30 us.
        for _ in 0..20 {
            o.served(ms(3));
            for _ in 0..149 {
                o.served(Duration::from_micros(10));
            }
        }
        let q = o.predicted(ms(3), 1000);
        assert!(q > ms(28) && q < ms(38), "{q:?}");
        // The queue drained slower than that (its socket's drain, turns
        // off the core between spans): 60 us per message ahead. The
        // prediction follows the slower pace; a few ahead say nothing.
        for _ in 0..200 {
            o.drained(500, ms(30));
            o.drained(2, ms(30));
        }
        let r = o.predicted(ms(3), 1000);
        assert!(r > ms(60) && r < ms(64), "{r:?}");
    }

    /// Feeds `n` intervals of requests that each waited `sojourn`.
    fn intervals(o: &mut Overload, t: &mut Instant, n: u32, sojourn: Duration) {
        for _ in 0..n * 10 {
            *t += ms(10);
            o.observe(*t, sojourn);
        }
    }

    #[test]
    fn the_loss_rate_rises_with_a_standing_queue_and_falls_as_it_drains() {
        let mut t = Instant::now();
        let mut o = Overload::new(OverloadConfig::default());
        intervals(&mut o, &mut t, 3, ms(2));
        assert_eq!(o.feedback(), None, "no overload, nothing to say");
        // Within two intervals (the first may have begun before the queue).
        intervals(&mut o, &mut t, 2, ms(30));
        let first = o.feedback().expect("overloaded: feedback").loss_pct;
        assert!(first >= 5);
        intervals(&mut o, &mut t, 50, ms(30));
        let high = o.feedback().unwrap();
        assert_eq!(high.loss_pct, 95, "a queue that never drains asks for the most");
        // At the setpoint (target/4), neither growing nor shrinking, the
        // rate holds.
        intervals(&mut o, &mut t, 5, ms(5));
        intervals(&mut o, &mut t, 5, ms(5));
        let held = o.feedback().unwrap().loss_pct;
        intervals(&mut o, &mut t, 5, ms(5));
        assert_eq!(o.feedback().unwrap().loss_pct, held);
        // Draining: it comes down, to zero, and zero is said before silence.
        intervals(&mut o, &mut t, 3, ms(1));
        let lower = o.feedback().unwrap();
        assert!(lower.loss_pct < high.loss_pct && lower.seq_ms > high.seq_ms);
        intervals(&mut o, &mut t, 30, ms(1));
        assert_eq!(o.feedback(), None);
        // The last word before silence was zero.
        let mut o2 = Overload::new(OverloadConfig::default());
        let mut t2 = Instant::now();
        intervals(&mut o2, &mut t2, 2, ms(30));
        let mut said = Vec::new();
        for _ in 0..40 {
            intervals(&mut o2, &mut t2, 1, ms(1));
            said.extend(o2.feedback().map(|f| f.loss_pct));
        }
        assert_eq!(said.last(), Some(&0));
    }

    #[test]
    fn a_quiet_interval_raises_the_share_a_little_a_quiet_second_a_lot() {
        let mut t = Instant::now();
        let mut o = Overload::new(OverloadConfig::default());
        intervals(&mut o, &mut t, 12, ms(30));
        let loaded = o.feedback().unwrap().loss_pct;
        assert!(loaded >= 47, "{loaded}");
        // The shard's turn on a shared core can empty the queue for an
        // interval: that is no sign of room for a quarter more.
        intervals(&mut o, &mut t, 1, ms(1));
        let after_one = o.feedback().unwrap().loss_pct;
        assert!(loaded - after_one <= 5, "{loaded} -> {after_one}");
        // Quiet for over a second: the load went down, and the share
        // climbs faster than a step at a time would take it.
        intervals(&mut o, &mut t, 13, ms(1));
        assert!(loaded >= 14 * 3 + 5, "one step at a time would still hold back: {loaded}");
        assert_eq!(o.feedback().map_or(0, |f| f.loss_pct), 0);
    }

    #[test]
    fn zero_target_never_sheds() {
        let t0 = Instant::now();
        let mut o = Overload::new(OverloadConfig { target: Duration::ZERO, interval: ms(1), ..OverloadConfig::default() });
        for i in 0..100 {
            o.observe(t0 + ms(i), Duration::from_secs(5));
        }
        assert!(!o.shedding());
        assert_eq!(o.verdict(Duration::from_secs(5)), Verdict::Serve, "off: nothing is past a deadline");
        assert_eq!(o.feedback(), None);
    }
}
