//! The server's own cost, read from /proc: CPU time (user + system) and
//! memory of a process and all its descendants. Kamailio serves from
//! forked children; presenced from one process. Memory is the sum of the
//! processes' proportional set sizes (Pss): pages shared between them (a
//! shared-memory pool) count once in all, where a sum of RSS would count
//! them in every child that touched them.

use serde::Serialize;
use std::fs;

#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct ServerSample {
    /// User + system CPU of the process tree so far, seconds.
    pub cpu_s: f64,
    /// Proportional set size of the process tree, bytes.
    pub memory_bytes: u64,
    /// Processes in the tree.
    pub processes: usize,
}

/// Reads the process `pid` and its descendants now; `None` once the
/// process is gone.
pub fn sample(pid: u32) -> Option<ServerSample> {
    let tree = process_tree(pid);
    if tree.is_empty() {
        return None;
    }
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut s = ServerSample { processes: tree.len(), ..ServerSample::default() };
    for p in tree {
        if let Some((utime, stime)) = fs::read_to_string(format!("/proc/{p}/stat")).ok().as_deref().and_then(cpu_ticks) {
            s.cpu_s += (utime + stime) as f64 / ticks;
        }
        if let Some(pss) = fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok().as_deref().and_then(pss_kib) {
            s.memory_bytes += pss * 1024;
        }
    }
    Some(s)
}

/// `pid` (if it exists) and every process whose parent chain leads to it.
fn process_tree(pid: u32) -> Vec<u32> {
    if fs::metadata(format!("/proc/{pid}")).is_err() {
        return Vec::new();
    }
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(pp) = fs::read_to_string(format!("/proc/{p}/stat")).ok().as_deref().and_then(parent_of) {
                parents.push((p, pp));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// The fields after the command name, which is in parentheses and may
/// itself hold spaces and parentheses.
fn fields_after_comm(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace())
}

/// Field 4 of /proc/PID/stat.
fn parent_of(stat: &str) -> Option<u32> {
    fields_after_comm(stat)?.nth(1)?.parse().ok()
}

/// Fields 14 and 15 of /proc/PID/stat: utime and stime, in clock ticks.
/// User and system CPU ticks of a process, each with those of its
/// children it has waited for (`cutime`, `cstime`): a child that exits
/// between two samples leaves the tree, and without them the tree's CPU
/// went backwards (a test whose "server" was its own process, beside other
/// tests' exiting children, read -12 ms per request).
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let mut f = fields_after_comm(stat)?.skip(11);
    let mut next = || f.next()?.parse::<u64>().ok();
    let (utime, stime, cutime, cstime) = (next()?, next()?, next()?, next()?);
    Some((utime + cutime, stime + cstime))
}

fn pss_kib(rollup: &str) -> Option<u64> {
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_past_a_command_with_spaces_and_parentheses() {
        let stat = "4242 (odd (name) x) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 123 456 789";
        assert_eq!(parent_of(stat), Some(17));
        assert_eq!(cpu_ticks(stat), Some((250, 75)));
        let with_children = "4242 (presenced) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 30 5 20 0 1 0 123 456 789";
        assert_eq!(cpu_ticks(with_children), Some((280, 80)), "the CPU of children waited for counts");
    }

    #[test]
    fn pss_is_read_from_smaps_rollup() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:   10240 kB\nPss:    8192 kB\nPss_Anon: 100 kB\n";
        assert_eq!(pss_kib(rollup), Some(8192));
    }

    /// Tests that start children of this process, one at a time: each
    /// counts the processes of the tree.
    static CHILDREN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn this_process_and_a_child_are_sampled_together() {
        let _one = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
        let me = std::process::id();
        let alone = sample(me).expect("this process exists");
        assert!(alone.memory_bytes > 0 && alone.processes >= 1);
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep runs");
        let both = sample(me).expect("this process exists");
        child.kill().ok();
        child.wait().ok();
        assert_eq!(both.processes, alone.processes + 1);
        assert!(sample(u32::MAX).is_none(), "no such process");
    }

    #[test]
    fn a_child_that_exits_leaves_its_cpu_in_the_tree() {
        let _one = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
        let me = std::process::id();
        let before = sample(me).expect("this process exists");
        let status = std::process::Command::new("sh").args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"]).status().expect("sh runs");
        assert!(status.success());
        let after = sample(me).expect("this process exists");
        assert!(after.cpu_s - before.cpu_s >= 0.05, "the child's CPU stays counted: {before:?} -> {after:?}");
    }
}
