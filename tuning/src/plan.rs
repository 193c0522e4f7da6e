//! The busy-hour demand of a subscriber base and the hosts it needs.
//!
//! The model is linear: one transaction of a kind costs a host
//! `1 / capacity` of its time, where the capacity is what one host
//! sustained for that kind alone (its loadgen report). A busy hour's
//! utilization of one host is the sum over kinds of demand / capacity, and
//! the plan adds hosts until each runs at no more than the target
//! utilization, keeping the rest as headroom for failover and peaks.
//!
//! Each PUBLISH changes the presentity's document, so it also costs one
//! NOTIFY per watcher (measured by a `fanout` run). A new SUBSCRIBE's
//! first NOTIFY is already in the `subscribe` run's figure. REGISTER
//! refreshes that leave the contacts as they were change no document.

use crate::measured::Capacity;
use loadgen::profile::Profile;
use serde::Serialize;

/// Per-second work of the busy hour, in real time (the profile's replay
/// speed does not apply).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Demand {
    pub register: f64,
    pub publish: f64,
    pub subscribe: f64,
    pub notify: f64,
}

impl Demand {
    pub fn of(profile: &Profile, subscribers: u64) -> Demand {
        let per_s = |per_hour: f64| per_hour * subscribers as f64 / 3600.0;
        let publish = per_s(profile.publications_per_hour);
        Demand {
            register: per_s(profile.registrations_per_hour),
            publish,
            subscribe: per_s(profile.subscriptions_per_hour),
            notify: publish * profile.watchers_per_presentity as f64,
        }
    }
}

/// One kind's line of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub kind: &'static str,
    pub demand_per_s: f64,
    pub capacity_per_s: f64,
    /// Share of one host's time this kind takes.
    pub host_share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub subscribers: u64,
    pub lines: Vec<Line>,
    /// Sum of the shares: the busy hour's load in hosts at 100 %.
    pub utilization: f64,
    pub target_utilization: f64,
    pub hosts: u64,
    /// Utilization of each host with `hosts` of them.
    pub per_host_utilization: f64,
    /// The busy hour's packet rate against the host's ceiling, if a
    /// baseline was measured: requests and NOTIFYs, each with its answer.
    pub of_baseline: Option<f64>,
    /// Nodes of a cluster, when failures to survive were asked for.
    pub cluster: Option<ClusterPlan>,
}

/// What a cluster behind a SIP front needs (issue 20): enough nodes that,
/// with `failures` of them down, the rest carry the busy hour at the target
/// utilization. A front that spreads requests without knowing the
/// partitions sends (n-1)/n of them to a node that forwards them to the
/// partition's owner; each forward costs the forwarding node `hop_cost` of
/// a transaction. Replicating the journal would cost `replication` more per
/// transaction on the owner (not measured: replication is not built).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClusterOptions {
    pub failures: u64,
    pub hop_cost: f64,
    pub replication: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterPlan {
    pub options: ClusterOptions,
    pub nodes: u64,
    /// Utilization of each node with every node up, and with `failures` down.
    pub per_node_all_up: f64,
    pub per_node_after_failures: f64,
}

impl ClusterPlan {
    /// The load of each of `up` nodes: the busy hour's, the forwards of
    /// the requests that arrive at a node that does not own them, and
    /// replication.
    fn per_node(utilization: f64, up: u64, o: ClusterOptions) -> f64 {
        let hopped = (up - 1) as f64 / up as f64;
        utilization * (1.0 + o.replication + o.hop_cost * hopped) / up as f64
    }

    pub fn build(utilization: f64, target: f64, o: ClusterOptions) -> Result<ClusterPlan, String> {
        if !(o.hop_cost >= 0.0 && o.replication >= 0.0) {
            return Err("hop cost and replication overhead must not be negative".into());
        }
        // Each node added takes a share; the forwards' cost tends to
        // hop_cost, so the search ends.
        let mut nodes = o.failures + 1;
        while Self::per_node(utilization, nodes - o.failures, o) > target {
            nodes += 1;
            if nodes > 100_000 {
                return Err("no cluster of up to 100,000 nodes meets the target".into());
            }
        }
        Ok(ClusterPlan {
            options: o,
            nodes,
            per_node_all_up: Self::per_node(utilization, nodes, o),
            per_node_after_failures: Self::per_node(utilization, nodes - o.failures, o),
        })
    }
}

impl Plan {
    /// Fails when a kind has demand but no measurement, naming the run to do.
    pub fn build(subscribers: u64, demand: Demand, capacity: &Capacity, target_utilization: f64) -> Result<Plan, String> {
        if !(target_utilization > 0.0 && target_utilization <= 1.0) {
            return Err(format!("target utilization {target_utilization} must be in (0, 1]"));
        }
        let kinds = [
            ("REGISTER", demand.register, capacity.register, "register"),
            ("PUBLISH", demand.publish, capacity.publish, "publish"),
            ("SUBSCRIBE", demand.subscribe, capacity.subscribe, "subscribe"),
            ("NOTIFY", demand.notify, capacity.notify, "fanout"),
        ];
        let mut lines = Vec::new();
        for (kind, demand, cap, scenario) in kinds {
            if demand <= 0.0 {
                continue;
            }
            let cap =
                cap.ok_or_else(|| format!("the busy hour has {kind} traffic but no report measured it: run `loadgen --scenario {scenario} --report ...`"))?;
            lines.push(Line { kind, demand_per_s: demand, capacity_per_s: cap, host_share: demand / cap });
        }
        let utilization: f64 = lines.iter().map(|l| l.host_share).sum();
        let hosts = ((utilization / target_utilization).ceil() as u64).max(1);
        let packets: f64 = lines.iter().map(|l| l.demand_per_s).sum();
        Ok(Plan {
            subscribers,
            lines,
            utilization,
            target_utilization,
            hosts,
            per_host_utilization: utilization / hosts as f64,
            of_baseline: capacity.baseline.map(|b| packets / b),
            cluster: None,
        })
    }

    /// Adds the cluster's nodes for `o`.
    pub fn with_cluster(mut self, o: ClusterOptions) -> Result<Plan, String> {
        self.cluster = Some(ClusterPlan::build(self.utilization, self.target_utilization, o)?);
        Ok(self)
    }

    pub fn summary(&self) -> String {
        let mut out = format!("busy hour of {} subscribers, per second:\n", self.subscribers);
        out += &format!("{:<10} {:>12} {:>16} {:>11}\n", "kind", "demand", "one host can", "host share");
        for l in &self.lines {
            out += &format!("{:<10} {:>12.0} {:>16.0} {:>10.1}%\n", l.kind, l.demand_per_s, l.capacity_per_s, 100.0 * l.host_share);
        }
        out += &format!(
            "one host at 100% would be {:.0}% loaded; at a {:.0}% target: {} host(s), each {:.0}% loaded",
            100.0 * self.utilization,
            100.0 * self.target_utilization,
            self.hosts,
            100.0 * self.per_host_utilization
        );
        if let Some(b) = self.of_baseline {
            out += &format!("\nthe busy hour's transactions are {:.0}% of one host's packet ceiling (loadgen baseline)", 100.0 * b);
        }
        if let Some(c) = &self.cluster {
            out += &format!(
                "\ncluster surviving {} node failure(s): {} node(s), each {:.0}% loaded with all up and {:.0}% with {} down \
(a forward between nodes costs {:.2} of a transaction, assumed; replication {:.2} more, assumed: it is not built)",
                c.options.failures,
                c.nodes,
                100.0 * c.per_node_all_up,
                100.0 * c.per_node_after_failures,
                c.options.failures,
                c.options.hop_cost,
                c.options.replication
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            registrations_per_hour: 2.0,
            publications_per_hour: 6.0,
            subscriptions_per_hour: 1.0,
            watchers_per_presentity: 4,
            time_scale: 60.0,
            subscription_expires: 3600,
        }
    }

    #[test]
    fn demand_is_per_subscriber_hour_in_real_time() {
        let d = Demand::of(&profile(), 3_600_000);
        assert_eq!(d, Demand { register: 2000.0, publish: 6000.0, subscribe: 1000.0, notify: 24_000.0 });
    }

    #[test]
    fn hosts_cover_the_sum_of_shares_at_the_target() {
        let cap = Capacity {
            register: Some(40_000.0),
            publish: Some(30_000.0),
            subscribe: Some(10_000.0),
            notify: Some(60_000.0),
            baseline: Some(100_000.0),
            warnings: vec![],
        };
        let d = Demand::of(&profile(), 36_000_000); // 20k REGISTER, 60k PUBLISH, 10k SUBSCRIBE, 240k NOTIFY per second
        let p = Plan::build(36_000_000, d, &cap, 0.5).unwrap();
        // 0.5 + 2 + 1 + 4 = 7.5 hosts at 100 %; 15 at 50 %.
        assert!((p.utilization - 7.5).abs() < 1e-9, "{}", p.utilization);
        assert_eq!(p.hosts, 15);
        assert!((p.per_host_utilization - 0.5).abs() < 1e-9);
        assert!((p.of_baseline.unwrap() - 3.3).abs() < 1e-9);
        assert!(p.summary().contains("15 host(s)"));
    }

    #[test]
    fn a_cluster_adds_the_failed_nodes_and_the_forwards_cost() {
        let o = |failures, hop_cost| ClusterOptions { failures, hop_cost, replication: 0.0 };
        // 1.5 hosts of work at 100 %, target 60 %: without forwards 3 nodes
        // carry it (50 % each); forwards at a full transaction's cost make
        // each of 3 carry 1.5 * (1 + 2/3) / 3 = 83 %, so 5 are needed (54 %).
        let c = ClusterPlan::build(1.5, 0.6, o(0, 0.0)).unwrap();
        assert_eq!(c.nodes, 3);
        let c = ClusterPlan::build(1.5, 0.6, o(0, 1.0)).unwrap();
        assert_eq!(c.nodes, 5);
        assert!((c.per_node_all_up - 1.5 * 1.8 / 5.0).abs() < 1e-9);
        // Surviving one failure: the nodes left must carry it.
        let c = ClusterPlan::build(1.5, 0.6, o(1, 1.0)).unwrap();
        assert_eq!(c.nodes, 6);
        assert!((c.per_node_after_failures - 1.5 * 1.8 / 5.0).abs() < 1e-9);
        assert!(c.per_node_all_up < c.per_node_after_failures);
        // A single small node needs no forwards.
        assert_eq!(ClusterPlan::build(0.3, 0.6, o(0, 1.0)).unwrap().nodes, 1);
        assert!(ClusterPlan::build(1.0, 0.6, o(0, -1.0)).is_err());
    }

    #[test]
    fn a_missing_measurement_names_the_run_to_do() {
        let cap = Capacity { register: Some(1.0), publish: Some(1.0), subscribe: Some(1.0), ..Capacity::default() };
        let e = Plan::build(1000, Demand::of(&profile(), 1000), &cap, 0.6).unwrap_err();
        assert!(e.contains("NOTIFY") && e.contains("--scenario fanout"), "{e}");
        assert!(Plan::build(1000, Demand::of(&profile(), 1000), &cap, 1.5).is_err());
    }
}
