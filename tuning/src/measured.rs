//! One host's measured capacity per kind of work, from loadgen reports of
//! one server configuration: `register`, `publish` and `subscribe` runs
//! give transactions per second, a `fanout` run gives NOTIFYs per second,
//! and a `baseline` run (optional) the host's packet ceiling.

use serde::Deserialize;
use std::path::Path;

/// The part of a loadgen report the plan reads.
#[derive(Deserialize, Debug, Clone)]
pub struct RunReport {
    pub scenario: String,
    pub target: String,
    pub sent: u64,
    pub ok: u64,
    pub errors: Errors,
    pub throughput_per_s: f64,
    pub notify: Option<Notify>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Errors {
    pub timeout: u64,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Notify {
    pub per_s: f64,
}

/// Per-second capacities of one host; `None` where no report measured it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Capacity {
    pub register: Option<f64>,
    pub publish: Option<f64>,
    pub subscribe: Option<f64>,
    pub notify: Option<f64>,
    /// The host's request/response ceiling (`loadgen baseline`).
    pub baseline: Option<f64>,
    /// Runs where more than 1 % of the requests failed or timed out: the
    /// server was pushed past what it sustains, so its figure is suspect.
    pub warnings: Vec<String>,
}

impl Capacity {
    /// Reads the reports; each scenario may appear once (one server
    /// configuration at a time).
    pub fn from_files(paths: &[impl AsRef<Path>]) -> Result<Capacity, String> {
        let mut reports = Vec::new();
        for p in paths {
            let p = p.as_ref();
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let r: RunReport = serde_json::from_str(&text).map_err(|e| format!("{}: not a loadgen report: {e}", p.display()))?;
            reports.push((p.display().to_string(), r));
        }
        Capacity::from_reports(&reports)
    }

    pub fn from_reports(reports: &[(String, RunReport)]) -> Result<Capacity, String> {
        let mut c = Capacity::default();
        for (name, r) in reports {
            let figure = match r.scenario.as_str() {
                "fanout" => r.notify.as_ref().map(|n| n.per_s).ok_or_else(|| format!("{name}: a fanout report without NOTIFY figures"))?,
                _ => r.throughput_per_s,
            };
            let slot = match r.scenario.as_str() {
                "register" => &mut c.register,
                "publish" => &mut c.publish,
                "subscribe" => &mut c.subscribe,
                "fanout" => &mut c.notify,
                "baseline" => &mut c.baseline,
                // A mixed run measures a blend, not one kind's cost.
                "mixed" => continue,
                other => return Err(format!("{name}: unknown scenario {other:?}")),
            };
            if slot.is_some() {
                return Err(format!("{name}: a second {} report; give the reports of one server configuration", r.scenario));
            }
            if !(figure.is_finite() && figure > 0.0) {
                return Err(format!("{name}: the {} run measured no throughput", r.scenario));
            }
            *slot = Some(figure);
            let failed = r.sent.saturating_sub(r.ok) + r.errors.timeout;
            if r.sent > 0 && failed as f64 > 0.01 * r.sent as f64 {
                c.warnings.push(format!("{name}: {failed} of {} {} requests failed; the server was past its capacity", r.sent, r.scenario));
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(scenario: &str, sent: u64, ok: u64, tput: f64, notify_per_s: Option<f64>) -> (String, RunReport) {
        let r = RunReport {
            scenario: scenario.into(),
            target: "127.0.0.1:5060".into(),
            sent,
            ok,
            errors: Errors { timeout: 0 },
            throughput_per_s: tput,
            notify: notify_per_s.map(|per_s| Notify { per_s }),
        };
        (format!("{scenario}.json"), r)
    }

    #[test]
    fn each_scenario_fills_its_kind() {
        let c = Capacity::from_reports(&[
            report("register", 10, 10, 80_000.0, None),
            report("publish", 10, 10, 60_000.0, Some(0.0)),
            report("subscribe", 10, 10, 30_000.0, Some(30_000.0)),
            report("fanout", 10, 10, 100.0, Some(90_000.0)),
            report("baseline", 10, 10, 100_000.0, None),
        ])
        .unwrap();
        assert_eq!(
            (c.register, c.publish, c.subscribe, c.notify, c.baseline),
            (Some(80_000.0), Some(60_000.0), Some(30_000.0), Some(90_000.0), Some(100_000.0))
        );
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn mixed_configurations_and_overload_are_called_out() {
        let e = Capacity::from_reports(&[report("publish", 10, 10, 1.0, None), report("publish", 10, 10, 2.0, None)]).unwrap_err();
        assert!(e.contains("second publish"), "{e}");
        let c = Capacity::from_reports(&[report("publish", 100, 90, 1.0, None)]).unwrap();
        assert!(c.warnings[0].contains("10 of 100"), "{:?}", c.warnings);
        assert!(Capacity::from_reports(&[report("fanout", 1, 1, 1.0, None)]).unwrap_err().contains("without NOTIFY"));
    }
}
