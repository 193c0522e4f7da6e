//! The run's report: JSON for capacity planning, a summary for people.

use crate::engine::{KindCount, SetupResult, WorkerResult, new_histogram};
use crate::scenario::Kind;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize, Debug)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency { p50: h.value_at_quantile(0.5), p90: h.value_at_quantile(0.9), p99: h.value_at_quantile(0.99), p999: h.value_at_quantile(0.999), max: h.max() }
    }
}

#[derive(Serialize, Debug)]
pub struct Errors {
    /// Final responses other than 2xx, by status code.
    pub by_status: BTreeMap<String, u64>,
    /// Transactions with no final response by Timer F.
    pub timeout: u64,
}

#[derive(Serialize, Debug)]
pub struct KindReport {
    pub sent: u64,
    pub ok: u64,
}

/// The standing subscriptions set up before the measured phase.
#[derive(Serialize, Debug)]
pub struct SetupReport {
    pub subscriptions: u64,
    pub ok: u64,
    pub failed: u64,
    pub duration_s: f64,
    /// When the last worker's setup ended (Unix seconds): the measured
    /// phase began then.
    pub ended_unix_s: f64,
}

impl SetupReport {
    fn add(total: &mut Option<SetupReport>, part: Option<SetupResult>) {
        if let Some(s) = part {
            let t = total.get_or_insert(SetupReport { subscriptions: 0, ok: 0, failed: 0, duration_s: 0.0, ended_unix_s: 0.0 });
            t.subscriptions += s.subscriptions;
            t.ok += s.ok;
            t.failed += s.failed;
            t.duration_s = t.duration_s.max(s.duration_s);
            t.ended_unix_s = t.ended_unix_s.max(s.ended_unix_s);
        }
    }
}

/// NOTIFYs of the measured phase and what their check found.
#[derive(Serialize, Debug)]
pub struct NotifyReport {
    pub received: u64,
    /// NOTIFYs received again (not in `received`).
    pub retransmitted: u64,
    /// Bodies fully parsed as PIDF (all, unless --pidf-sample).
    pub pidf_validated: u64,
    /// NOTIFYs that were wrong: for another presentity, invalid PIDF, a
    /// version never published or older than one already seen.
    pub mismatches: u64,
    pub mismatch_examples: Vec<String>,
    pub per_s: f64,
    /// From sending a PUBLISH to the first NOTIFY showing its version.
    pub publish_to_notify_us: Latency,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub scenario: String,
    /// The messages sent: the scenario's, or for `baseline` the scenario
    /// whose messages the responder answered.
    pub messages: String,
    pub target: String,
    pub transport: String,
    pub users: usize,
    pub threads: usize,
    /// Seconds of the measured phase (setup excluded).
    pub duration_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: Errors,
    pub throughput_per_s: f64,
    pub latency_us: Latency,
    /// Of 2xx answers only, and of 503s only (how fast overload answers).
    pub latency_2xx_us: Latency,
    pub latency_503_us: Latency,
    pub retransmissions: u64,
    /// New requests held back at the client on RFC 7339 feedback
    /// (`--overload-control`); offered = sent + throttled.
    pub throttled: u64,
    /// Open loop: the largest backlog of requests due and not yet sent
    /// (the generator fell behind and caught up in a burst).
    pub behind_max: u64,
    pub unmatched: u64,
    /// NOTIFYs answered in the measured phase.
    pub notifies: u64,
    pub notify: NotifyReport,
    pub by_kind: BTreeMap<String, KindReport>,
    /// PUBLISH refreshes (no body) among the PUBLISHes sent.
    pub publish_refreshes: u64,
    pub setup: Option<SetupReport>,
    /// Subscriptions ended after the measured phase (`subscriptions`
    /// counts the unsubscribes sent).
    pub teardown: Option<SetupReport>,
    pub connection_errors: u64,
    /// The load generator's own CPU time (user + system).
    pub cpu_s: f64,
    /// The load generator's peak resident memory.
    pub max_rss_mib: f64,
}

/// Who ran and how, for the report's header.
pub struct RunInfo {
    pub scenario: String,
    pub target: String,
    pub transport: String,
    pub users: usize,
    pub cpu_s: f64,
}

impl Report {
    pub fn build(info: RunInfo, results: &[WorkerResult]) -> Report {
        let mut latency = new_histogram();
        let mut notify_latency = new_histogram();
        let (mut lat_2xx, mut lat_503) = (new_histogram(), new_histogram());
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        let (mut sent, mut timeouts, mut retrans, mut unmatched, mut conn_errors, mut throttled) = (0, 0, 0, 0, 0, 0);
        let mut behind_max = 0;
        let mut notify_retrans = 0;
        let refreshes: u64 = results.iter().map(|r| r.publish_refreshes).sum();
        let (mut received, mut validated, mut mismatches, mut examples) = (0, 0, 0, Vec::new());
        let mut kinds = [KindCount::default(); 4];
        let mut setup: Option<SetupReport> = None;
        let mut teardown: Option<SetupReport> = None;
        let mut duration_s: f64 = 0.0;
        for r in results {
            let _ = latency.add(&r.latency);
            let _ = notify_latency.add(&r.notify.latency);
            let _ = lat_2xx.add(&r.latency_2xx);
            let _ = lat_503.add(&r.latency_503);
            for (s, n) in &r.statuses {
                *statuses.entry(*s).or_insert(0) += n;
            }
            sent += r.sent;
            timeouts += r.timeouts;
            retrans += r.retransmissions;
            throttled += r.throttled;
            behind_max = behind_max.max(r.behind_max);
            unmatched += r.unmatched;
            conn_errors += r.connection_errors;
            received += r.notify.received;
            notify_retrans += r.notify.retransmitted;
            validated += r.notify.validated;
            mismatches += r.notify.mismatches;
            examples.extend(r.notify.examples.iter().cloned());
            for (k, c) in kinds.iter_mut().zip(&r.kinds) {
                k.sent += c.sent;
                k.ok += c.ok;
            }
            SetupReport::add(&mut setup, r.setup);
            SetupReport::add(&mut teardown, r.teardown);
            duration_s = duration_s.max(r.measured_s);
        }
        examples.truncate(5);
        let duration_s = duration_s.max(1e-9);
        let ok: u64 = statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
        let by_status = statuses.iter().filter(|(s, _)| !(200..300).contains(*s)).map(|(s, n)| (s.to_string(), *n)).collect();
        let by_kind =
            Kind::ALL.iter().zip(kinds).filter(|(_, c)| c.sent > 0).map(|(k, c)| (k.name().to_string(), KindReport { sent: c.sent, ok: c.ok })).collect();
        Report {
            messages: info.scenario.clone(),
            scenario: info.scenario,
            target: info.target,
            transport: info.transport,
            users: info.users,
            threads: results.len(),
            duration_s,
            sent,
            ok,
            errors: Errors { by_status, timeout: timeouts },
            throughput_per_s: ok as f64 / duration_s,
            latency_us: Latency::of(&latency),
            latency_2xx_us: Latency::of(&lat_2xx),
            latency_503_us: Latency::of(&lat_503),
            retransmissions: retrans,
            throttled,
            behind_max,
            unmatched,
            notifies: received,
            notify: NotifyReport {
                received,
                retransmitted: notify_retrans,
                pidf_validated: validated,
                mismatches,
                mismatch_examples: examples,
                per_s: received as f64 / duration_s,
                publish_to_notify_us: Latency::of(&notify_latency),
            },
            by_kind,
            publish_refreshes: refreshes,
            setup,
            teardown,
            connection_errors: conn_errors,
            cpu_s: info.cpu_s,
            max_rss_mib: max_rss_mib(),
        }
    }

    pub fn summary(&self) -> String {
        let errors: u64 = self.errors.by_status.values().sum::<u64>() + self.errors.timeout;
        let l = &self.latency_us;
        let mut out = String::new();
        if let Some(s) = &self.setup {
            out += &format!("setup: {} standing subscriptions, {} accepted, {} failed, in {:.2} s\n", s.subscriptions, s.ok, s.failed, s.duration_s);
        }
        out += &format!(
            "{} over {} against {}: {} sent, {} ok, {} errors ({:?}, {} timeouts) in {:.2} s\n\
throughput {:.0}/s; latency µs p50 {} p90 {} p99 {} p99.9 {} max {}\n",
            self.scenario,
            self.transport,
            self.target,
            self.sent,
            self.ok,
            errors,
            self.errors.by_status,
            self.errors.timeout,
            self.duration_s,
            self.throughput_per_s,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        );
        if self.by_kind.len() > 1 {
            let kinds: Vec<String> = self.by_kind.iter().map(|(k, c)| format!("{k} {}/{}", c.ok, c.sent)).collect();
            out += &format!("by kind (ok/sent): {}\n", kinds.join(", "));
        }
        let n = &self.notify;
        if n.received > 0 || n.mismatches > 0 {
            let t = &n.publish_to_notify_us;
            out += &format!(
                "NOTIFYs {} ({:.0}/s), PIDF validated {}, mismatches {}; publish→NOTIFY µs p50 {} p99 {} max {}\n",
                n.received, n.per_s, n.pidf_validated, n.mismatches, t.p50, t.p99, t.max
            );
            for e in &n.mismatch_examples {
                out += &format!("  mismatch: {e}\n");
            }
        }
        if self.behind_max > 64 {
            out += &format!("the generator fell behind its schedule by up to {} requests, and sent them in a burst to catch up\n", self.behind_max);
        }
        if self.throttled > 0 {
            out += &format!("held back at the client on the server's overload feedback (RFC 7339): {}\n", self.throttled);
        }
        if let Some(t) = &self.teardown {
            out += &format!("teardown: {} subscriptions ended, {} left open\n", t.ok, t.failed);
        }
        out += &format!(
            "retransmissions {}, unmatched {}, connection errors {}, loadgen CPU {:.2} s, peak RSS {:.0} MiB",
            self.retransmissions, self.unmatched, self.connection_errors, self.cpu_s, self.max_rss_mib
        );
        out
    }
}

fn rusage() -> libc::rusage {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru
}

/// This process's CPU time so far (user + system), seconds.
pub fn process_cpu_s() -> f64 {
    let ru = rusage();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// This process's peak resident set, MiB.
pub fn max_rss_mib() -> f64 {
    rusage().ru_maxrss as f64 / 1024.0
}
