//! The `scale` scenario: a server loaded the way a carrier's node is, then
//! measured with that state in place.
//!
//! Load (uncounted, closed loop at --setup-outstanding): every user
//! REGISTERs once and PUBLISHes once; after `settle` (so that the server's
//! Timer J lets those transactions go) the server's memory is read; every
//! user then watches W others (`--watchers`), each first NOTIFY is
//! answered, and after another `settle` memory is read again.
//!
//! Then four measured phases, each bracketed by readings of the server's
//! CPU and memory (`--server-pid`): PUBLISH capacity (closed loop at
//! --max-outstanding), PUBLISH at half that rate (open loop), SUBSCRIBE
//! capacity (new dialogs), SUBSCRIBE at half that rate. Every PUBLISH
//! changes a watched document, so its cost includes the W NOTIFYs it
//! causes; those are answered and checked as in every scenario.
//!
//! With several worker threads each worker runs the same phases on its
//! share of the users; they meet at a barrier between phases, where worker
//! 0 reads the server. Half rate is half of each worker's own capacity.

use crate::engine::{End, Load, Source, Worker, WorkerConfig, WorkerResult};
use crate::report::{Report, RunInfo};
use crate::scenario::Kind;
use crate::server_stat::{self, ServerSample};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `--scenario scale` runs, from its flags.
#[derive(Clone, Debug)]
pub struct ScalePlan {
    /// Standing subscriptions per user (each watches this many others).
    pub watchers: usize,
    pub subscription_expires: u32,
    /// Idle time after each load step before the server's memory is read.
    pub settle: Duration,
    /// Length of each closed-loop capacity phase.
    pub capacity: Duration,
    /// Length of each open-loop phase at half capacity.
    pub steady: Duration,
    /// The server process (and its children) to read from /proc.
    pub server_pid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Capacity,
    Half,
}

const PHASES: [(&str, Kind, Mode); 4] = [
    ("publish capacity", Kind::Publish, Mode::Capacity),
    ("publish at half capacity", Kind::Publish, Mode::Half),
    ("subscribe capacity", Kind::Subscribe, Mode::Capacity),
    ("subscribe at half capacity", Kind::Subscribe, Mode::Half),
];

/// One load step of one worker.
#[derive(Serialize, Clone, Debug, Default)]
pub struct LoadStep {
    pub name: &'static str,
    pub sent: u64,
    pub ok: u64,
    pub seconds: f64,
}

/// A server reading at a named moment.
#[derive(Serialize, Clone, Debug)]
pub struct Reading {
    pub at: &'static str,
    pub server: ServerSample,
}

pub struct PhaseResult {
    name: &'static str,
    kind: Kind,
    offered_per_s: Option<f64>,
    res: WorkerResult,
}

/// What one worker brings back.
pub struct ScaleWorkerResult {
    steps: Vec<LoadStep>,
    readings: Vec<Reading>,
    phases: Vec<PhaseResult>,
}

pub fn run_worker(cfg: WorkerConfig, id: usize, shared: Arc<crate::engine::Shared>) -> Result<ScaleWorkerResult, String> {
    let plan = cfg.scale.clone().ok_or("the scale scenario needs its plan")?;
    let mut w = Worker::open(&cfg, id, &shared)?;
    let mut out = ScaleWorkerResult { steps: Vec::new(), readings: Vec::new(), phases: Vec::new() };
    let read = |w: &Worker<'_>, out: &mut ScaleWorkerResult, at: &'static str| {
        // Everyone has finished the step before worker 0 reads, and waits
        // until it has.
        w.shared.barrier.wait();
        if id == 0
            && let Some(server) = plan.server_pid.and_then(server_stat::sample)
        {
            out.readings.push(Reading { at, server });
        }
        w.shared.barrier.wait();
    };
    read(&w, &mut out, "start");
    let start = cfg.users.start;
    out.steps.push(w.load_step("register", Source::Once { kind: Kind::Register, next: start }));
    out.steps.push(w.load_step("publish", Source::Once { kind: Kind::Publish, next: start }));
    w.idle_for("settle", plan.settle);
    read(&w, &mut out, "presentities loaded");
    let standing = Source::Standing { user: start, j: 0, per_user: plan.watchers, expires: plan.subscription_expires };
    let t0 = Instant::now();
    let mut step = w.load_step("subscribe", standing);
    // Each accepted subscription gets an immediate NOTIFY (up to Timer F):
    // loading ends with the last one.
    let deadline = Instant::now() + 64 * cfg.t1;
    while Instant::now() < deadline && !w.first_notifies_in() {
        w.step(true);
    }
    step.seconds = t0.elapsed().as_secs_f64();
    out.steps.push(step);
    w.idle_for("settle", plan.settle);
    read(&w, &mut out, "subscriptions loaded");
    w.shared.setup_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    // Setup's NOTIFYs are not the first phase's; its mismatches stay.
    w.res.notify.reset_counts();
    let Load::Closed { outstanding } = cfg.load else {
        return Err("the scale scenario measures capacity closed loop: give --max-outstanding, not --rate".into());
    };
    for (name, kind, mode) in PHASES {
        w.shared.set_stage(name);
        let (load, offered_per_s) = match mode {
            Mode::Capacity => (Load::Closed { outstanding }, None),
            Mode::Half => {
                let capacity = out.phases.iter().find(|p| p.kind == kind).map_or(0.0, |p| p.res.ok_per_s());
                let rate = (capacity / 2.0).max(1.0);
                (Load::Open { rate }, Some(rate))
            }
        };
        let length = if mode == Mode::Capacity { plan.capacity } else { plan.steady };
        let source = match kind {
            Kind::Subscribe => Source::NewWatches { next: start },
            _ => Source::Users { kind, next: start },
        };
        read(&w, &mut out, name);
        w.measured(source, load, End::After(length));
        w.flush_progress();
        read(&w, &mut out, name);
        let mut res = std::mem::take(&mut w.res);
        res.connection_errors = w.net.connection_errors;
        w.reset_progress();
        out.phases.push(PhaseResult { name, kind, offered_per_s, res });
    }
    Ok(out)
}

impl Worker<'_> {
    /// Runs every transaction of `source`, uncounted.
    fn load_step(&mut self, name: &'static str, source: Source) -> LoadStep {
        self.shared.set_stage(name);
        let t0 = Instant::now();
        let ok_before = self.setup_ok;
        let sent = self.run_unmeasured(source);
        LoadStep { name, sent, ok: self.setup_ok - ok_before, seconds: t0.elapsed().as_secs_f64() }
    }

    /// Answers whatever arrives for `d`, shown as `stage`.
    fn idle_for(&mut self, stage: &'static str, d: Duration) {
        self.shared.set_stage(stage);
        self.answer_for(d);
    }
}

impl WorkerResult {
    /// 2xx answers per second of the measured phase.
    fn ok_per_s(&self) -> f64 {
        let ok: u64 = self.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
        ok as f64 / self.measured_s.max(1e-9)
    }
}

/// One measured phase, all workers together.
#[derive(Serialize, Debug)]
pub struct PhaseReport {
    pub name: &'static str,
    /// Half-capacity phases: the rate offered, per second.
    pub offered_per_s: Option<f64>,
    /// Server CPU over the phase (and its drain) per 2xx answer, µs.
    pub server_cpu_us_per_ok: Option<f64>,
    /// NOTIFYs the phase caused per 2xx answer.
    pub notifies_per_ok: f64,
    pub report: Report,
}

#[derive(Serialize, Debug)]
pub struct ScaleReport {
    pub scenario: &'static str,
    pub target: String,
    pub users: usize,
    pub watchers_per_user: usize,
    pub threads: usize,
    pub load: Vec<LoadStep>,
    /// Seconds from the first REGISTER to the last standing subscription's
    /// first NOTIFY.
    pub load_seconds: f64,
    pub readings: Vec<Reading>,
    /// Server memory added per presentity (registered, one publication),
    /// and per standing subscription, bytes.
    pub bytes_per_presentity: Option<f64>,
    pub bytes_per_subscription: Option<f64>,
    pub phases: Vec<PhaseReport>,
    pub loadgen_cpu_s: f64,
    pub loadgen_max_rss_mib: f64,
}

impl ScaleReport {
    pub fn build(info: RunInfo, watchers: usize, results: Vec<ScaleWorkerResult>) -> ScaleReport {
        let mut load: Vec<LoadStep> = Vec::new();
        for r in &results {
            for (i, s) in r.steps.iter().enumerate() {
                match load.get_mut(i) {
                    Some(t) => {
                        t.sent += s.sent;
                        t.ok += s.ok;
                        t.seconds = t.seconds.max(s.seconds);
                    }
                    None => load.push(s.clone()),
                }
            }
        }
        let readings = results.iter().flat_map(|r| r.readings.iter().cloned()).collect::<Vec<_>>();
        let memory_at = |at: &str| readings.iter().find(|r| r.at == at).map(|r| r.server.memory_bytes as f64);
        let ok_of = |name: &str| load.iter().find(|s| s.name == name).map_or(0, |s| s.ok) as f64;
        let per = |from: Option<f64>, to: Option<f64>, n: f64| Some((to? - from?) / n).filter(|_| n > 0.0);
        let bytes_per_presentity = per(memory_at("start"), memory_at("presentities loaded"), ok_of("publish"));
        let bytes_per_subscription = per(memory_at("presentities loaded"), memory_at("subscriptions loaded"), ok_of("subscribe"));
        let threads = results.len();
        let mut per_phase: Vec<Vec<WorkerResult>> = Vec::new();
        let mut meta = Vec::new();
        for r in results {
            for (i, p) in r.phases.into_iter().enumerate() {
                if per_phase.len() <= i {
                    per_phase.push(Vec::new());
                    meta.push((p.name, 0.0, p.offered_per_s.is_some()));
                }
                meta[i].1 += p.offered_per_s.unwrap_or(0.0);
                per_phase[i].push(p.res);
            }
        }
        let phases = per_phase
            .into_iter()
            .zip(meta)
            .map(|(res, (name, offered, open))| {
                let info = RunInfo { scenario: name.into(), target: info.target.clone(), transport: info.transport.clone(), users: info.users, cpu_s: 0.0 };
                let report = Report::build(info, &res);
                let cpu = Self::cpu_over(&readings, name);
                PhaseReport {
                    name,
                    offered_per_s: open.then_some(offered),
                    server_cpu_us_per_ok: cpu.map(|s| s * 1e6 / report.ok.max(1) as f64),
                    notifies_per_ok: report.notify.received as f64 / report.ok.max(1) as f64,
                    report,
                }
            })
            .collect();
        let load_seconds = load.iter().map(|s| s.seconds).sum();
        ScaleReport {
            scenario: "scale",
            target: info.target,
            users: info.users,
            watchers_per_user: watchers,
            threads,
            load,
            load_seconds,
            readings,
            bytes_per_presentity,
            bytes_per_subscription,
            phases,
            loadgen_cpu_s: info.cpu_s,
            loadgen_max_rss_mib: crate::report::max_rss_mib(),
        }
    }

    /// The server CPU between the two readings a phase is bracketed by.
    fn cpu_over(readings: &[Reading], phase: &str) -> Option<f64> {
        let mut at = readings.iter().filter(|r| r.at == phase);
        let (a, b) = (at.next()?, at.next()?);
        Some(b.server.cpu_s - a.server.cpu_s)
    }

    pub fn summary(&self) -> String {
        let mut out = format!("scale against {}: {} users, each watching {}\n", self.target, self.users, self.watchers_per_user);
        for s in &self.load {
            out += &format!("load {:9}: {:>9} sent, {:>9} ok in {:7.1} s ({:.0}/s)\n", s.name, s.sent, s.ok, s.seconds, s.ok as f64 / s.seconds.max(1e-9));
        }
        out += &format!("load time {:.1} s\n", self.load_seconds);
        if let (Some(p), Some(s)) = (self.bytes_per_presentity, self.bytes_per_subscription) {
            let mib = |at: &str| self.readings.iter().find(|r| r.at == at).map_or(0.0, |r| r.server.memory_bytes as f64 / (1 << 20) as f64);
            out += &format!(
                "server memory (Pss): {:.0} MiB at start, {:.0} MiB with the presentities, {:.0} MiB with the subscriptions: {:.0} B per presentity, {:.0} B per subscription\n",
                mib("start"),
                mib("presentities loaded"),
                mib("subscriptions loaded"),
                p,
                s
            );
        }
        for p in &self.phases {
            let r = &p.report;
            let l = &r.latency_2xx_us;
            let offered = p.offered_per_s.map_or(String::new(), |o| format!(" (offered {o:.0}/s)"));
            let cpu = p.server_cpu_us_per_ok.map_or(String::new(), |c| format!("; server CPU {c:.1} µs per 2xx"));
            let errors: u64 = r.errors.by_status.values().sum::<u64>() + r.errors.timeout;
            out += &format!(
                "{:27}{offered}: {:.0}/s, {} errors, {:.1} NOTIFYs each{cpu}; 2xx latency ms p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}\n",
                p.name,
                r.throughput_per_s,
                errors,
                p.notifies_per_ok,
                l.p50 as f64 / 1e3,
                l.p99 as f64 / 1e3,
                l.p999 as f64 / 1e3,
                l.max as f64 / 1e3
            );
            if r.notify.mismatches > 0 {
                out += &format!("  NOTIFY mismatches {}: {:?}\n", r.notify.mismatches, r.notify.mismatch_examples);
            }
        }
        out += &format!("loadgen CPU {:.1} s, peak RSS {:.0} MiB", self.loadgen_cpu_s, self.loadgen_max_rss_mib);
        out
    }
}
