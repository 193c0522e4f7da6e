//! The run's report: JSON for capacity planning, a summary for people.

use crate::engine::WorkerResult;
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

#[derive(Serialize, Debug)]
pub struct Errors {
    /// Final responses other than 2xx, by status code.
    pub by_status: BTreeMap<String, u64>,
    /// Transactions with no final response by Timer F.
    pub timeout: u64,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub users: usize,
    pub threads: usize,
    pub duration_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: Errors,
    pub throughput_per_s: f64,
    pub latency_us: Latency,
    pub retransmissions: u64,
    pub unmatched: u64,
    pub notifies: u64,
    /// The load generator's own CPU time (user + system).
    pub cpu_s: f64,
}

impl Report {
    pub fn build(scenario: &str, target: String, users: usize, results: &[WorkerResult], duration_s: f64, cpu_s: f64) -> Report {
        let mut latency: Histogram<u64> = Histogram::new_with_bounds(1, 120_000_000, 3).unwrap();
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        let (mut sent, mut timeouts, mut retrans, mut unmatched, mut notifies) = (0, 0, 0, 0, 0);
        for r in results {
            let _ = latency.add(&r.latency);
            for (s, n) in &r.statuses {
                *statuses.entry(*s).or_insert(0) += n;
            }
            sent += r.sent;
            timeouts += r.timeouts;
            retrans += r.retransmissions;
            unmatched += r.unmatched;
            notifies += r.notifies;
        }
        let ok: u64 = statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
        let by_status = statuses.iter().filter(|(s, _)| !(200..300).contains(*s)).map(|(s, n)| (s.to_string(), *n)).collect();
        Report {
            scenario: scenario.to_string(),
            target,
            users,
            threads: results.len(),
            duration_s,
            sent,
            ok,
            errors: Errors { by_status, timeout: timeouts },
            throughput_per_s: ok as f64 / duration_s.max(1e-9),
            latency_us: Latency {
                p50: latency.value_at_quantile(0.5),
                p90: latency.value_at_quantile(0.9),
                p99: latency.value_at_quantile(0.99),
                p999: latency.value_at_quantile(0.999),
                max: latency.max(),
            },
            retransmissions: retrans,
            unmatched,
            notifies,
            cpu_s,
        }
    }

    pub fn summary(&self) -> String {
        let errors: u64 = self.errors.by_status.values().sum::<u64>() + self.errors.timeout;
        format!(
            "{} against {}: {} sent, {} ok, {} errors ({:?}, {} timeouts) in {:.2} s\n\
throughput {:.0}/s; latency µs p50 {} p90 {} p99 {} p99.9 {} max {}\n\
retransmissions {}, unmatched {}, NOTIFYs answered {}, loadgen CPU {:.2} s",
            self.scenario,
            self.target,
            self.sent,
            self.ok,
            errors,
            self.errors.by_status,
            self.errors.timeout,
            self.duration_s,
            self.throughput_per_s,
            self.latency_us.p50,
            self.latency_us.p90,
            self.latency_us.p99,
            self.latency_us.p999,
            self.latency_us.max,
            self.retransmissions,
            self.unmatched,
            self.notifies,
            self.cpu_s
        )
    }
}

/// This process's CPU time so far (user + system), seconds.
pub fn process_cpu_s() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
