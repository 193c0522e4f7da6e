//! What a shard's once-a-second `tables` trace reports besides its table
//! sizes: how its service went over the last second. Each field is a
//! count or an extreme since the last trace, so that a tail (a late
//! timer, a late answer) is visible without a histogram per message.

use std::time::{Duration, Instant};

/// A refusal sent later than this after its request reached the socket is
/// counted apart (the RFC 7339 target for a 503 is 5 ms).
const LATE_REFUSAL: Duration = Duration::from_millis(5);

/// A queued message that took longer than this to serve straddled a turn
/// off the core, or stalled.
const SLOW_SERVE: Duration = Duration::from_millis(1);

/// Counts and extremes over one trace window.
#[derive(Debug, Default)]
pub(super) struct ServiceWindow {
    /// The longest gap between two timer steps.
    tick_gap: Duration,
    /// Overload refusals; those sent later than [`LATE_REFUSAL`]; the oldest.
    refused: u32,
    refused_late: u32,
    refused_oldest: Duration,
    /// Queued messages served past the deadline, the oldest served at all,
    /// and the largest predicted sojourn and queue ahead among the late.
    served_late: u32,
    served_oldest: Duration,
    late_predicted: Duration,
    late_ahead: usize,
    /// Wall time inside serve slices, and the longest gap between two
    /// while work waited.
    serving: Duration,
    slice_gap: Duration,
    /// The longest single serve, and how many took over [`SLOW_SERVE`].
    longest_serve: Duration,
    slow_serves: u32,
    /// Wall time spent taking datagrams in (reading, deciding, refusing),
    /// and the longest single turn of it with the datagrams it took.
    intake: Duration,
    longest_intake: (Duration, usize),
}

impl ServiceWindow {
    pub fn timer_step(&mut self, since_last: Duration) {
        self.tick_gap = self.tick_gap.max(since_last);
    }

    pub fn refused(&mut self, age: Duration) {
        self.refused += 1;
        self.refused_late += u32::from(age > LATE_REFUSAL);
        self.refused_oldest = self.refused_oldest.max(age);
    }

    /// A queued message served after `sojourn`, admitted on a `predicted`
    /// sojourn with `ahead` queued before it.
    pub fn served(&mut self, sojourn: Duration, deadline: Duration, predicted: Duration, ahead: usize) {
        if sojourn > deadline {
            self.served_late += 1;
            self.late_predicted = self.late_predicted.max(predicted);
            self.late_ahead = self.late_ahead.max(ahead);
        }
        self.served_oldest = self.served_oldest.max(sojourn);
    }

    pub fn serve_took(&mut self, took: Duration) {
        self.longest_serve = self.longest_serve.max(took);
        self.slow_serves += u32::from(took > SLOW_SERVE);
    }

    pub fn slice(&mut self, took: Duration) {
        self.serving += took;
    }

    pub fn intake(&mut self, took: Duration, taken: usize) {
        self.intake += took;
        if took > self.longest_intake.0 {
            self.longest_intake = (took, taken);
        }
    }

    pub fn slice_gap(&mut self, gap: Duration) {
        self.slice_gap = self.slice_gap.max(gap);
    }

    /// Logs the window beside `tables` (whose fields come first) and
    /// starts a new one.
    pub fn emit(&mut self, shard: u16, tables: Tables) {
        let w = std::mem::take(self);
        let us = |d: Duration| d.as_micros() as u64;
        tracing::debug!(
            target: "tables",
            shard,
            server_transactions = tables.server_transactions,
            server_timers = tables.server_timers,
            client_transactions = tables.client_transactions,
            bindings = tables.bindings,
            presentities = tables.presentities,
            subscriptions = tables.subscriptions,
            queued = tables.queued,
            tick_gap_us = us(w.tick_gap),
            refused = w.refused,
            refused_after_5ms = w.refused_late,
            refused_oldest_us = us(w.refused_oldest),
            served_past_deadline = w.served_late,
            served_oldest_us = us(w.served_oldest),
            late_predicted_us = us(w.late_predicted),
            late_ahead = w.late_ahead,
            serving_us = us(w.serving),
            slice_gap_us = us(w.slice_gap),
            longest_serve_us = us(w.longest_serve),
            serves_over_1ms = w.slow_serves,
            intake_us = us(w.intake),
            longest_intake_us = us(w.longest_intake.0),
            longest_intake_n = w.longest_intake.1,
            "tables"
        );
    }
}

/// Table sizes at the time of a trace.
pub(super) struct Tables {
    pub server_transactions: usize,
    pub server_timers: usize,
    pub client_transactions: usize,
    pub bindings: usize,
    pub presentities: usize,
    pub subscriptions: usize,
    pub queued: usize,
}

/// When the next trace is due: once a second, and only when the `tables`
/// target is enabled at debug level.
pub(super) fn due(now: Instant, next: &mut Instant) -> bool {
    if now < *next || !tracing::enabled!(target: "tables", tracing::Level::DEBUG) {
        return false;
    }
    *next = now + Duration::from_secs(1);
    true
}
