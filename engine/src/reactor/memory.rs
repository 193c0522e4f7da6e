//! Process-wide memory behaviour that shapes the latency tail.
//!
//! Transparent huge pages are off for the server by default. With them,
//! the allocator's arenas (mimalloc asks for huge pages on Linux) are
//! faulted in 2 MiB at a time, and the first touch of each zeroes the whole
//! page inside the request that touched it. Measured on this project's
//! 2-vCPU VM (ARCHITECTURE.md, "Latency tail"): `perf sched timehist` showed
//! the shard running 3 to 18 ms at a stretch at 13k PUBLISH/s, and `perf`
//! put 70 % of those stretches in `clear_page_erms` under
//! `do_huge_pmd_anonymous_page`; PUBLISH p99 was 5.0 ms, and 0.49 ms with
//! huge pages off, at the same throughput and slightly lower RSS.

/// How often a shard looks whether it has been quiet.
pub const QUIET_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Messages a second (requests and responses alike: during a NOTIFY storm
/// a shard takes in few requests and a great many answers) under which a
/// shard counts as quiet.
const QUIET_MESSAGES: u64 = 1000;

/// After a burst, the allocator holds the pages it freed until its own
/// calls on that thread purge them, and a quiet shard makes few calls:
/// after a NOTIFY storm, RSS stayed at 2-5 times its level before for tens
/// of seconds after every transaction had ended (`bench/e2e/notify-storm.sh`).
/// A shard that served fewer than `QUIET_MESSAGES` in the last
/// `QUIET_CHECK` asks mimalloc to collect and purge its thread's heap: a
/// walk of its pages, paid only when there is little else to do. Before
/// that, `trim` gives back the room a burst made the shard's work queues
/// take: without it, a NOTIFY storm left 20-28 MiB of empty queue room
/// live (counted with a counting allocator over `notify-storm.sh`; the
/// window queue also held each waiting watcher once per document).
pub fn give_back_when_quiet(messages_in_last_check: u64, trim: impl FnOnce()) {
    if messages_in_last_check < QUIET_MESSAGES {
        trim();
        // SAFETY: mi_collect only walks the calling thread's heap.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// Turns transparent huge pages off for this process (PR_SET_THP_DISABLE):
/// the kernel checks the flag at each fault, so it also covers what was
/// mapped before. Inherited by threads started later.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Huge pages for a start only. Putting millions of journal records back
/// into the tables faults in gigabytes, and zeroing them 4 KiB at a time
/// was the largest single cost of a start (perf: `clear_page_erms`). With
/// huge pages during the start, 1M presentities and 5M subscriptions on 2
/// shards were back in 13.2-15.6 s (four runs, this VM) against 17.5 s and
/// 22.2 s with them off from exec; reading the journals took 1-2 s instead
/// of 3.5-5 s. A shard serves nothing while it restores, so the stalls of
/// huge first touches cost nothing there (a shard that finished first may
/// serve a few seconds with them on). Once the last shard has restored they
/// are turned off, as without a journal: the flag is the process's and
/// checked at each fault, so what was faulted stays huge.
pub(crate) struct HugePagesForStart {
    all: super::LastShard,
    off_after: bool,
}

impl HugePagesForStart {
    /// For `shards` shards; `off_after`: turn them off once all restored
    /// (`[io] transparent_huge_pages = false`).
    pub fn new(shards: usize, off_after: bool) -> Self {
        HugePagesForStart { all: super::LastShard::new(shards), off_after }
    }

    /// A shard has put its records back; the last one turns huge pages off.
    pub fn shard_restored(&self) {
        if self.all.arrive() && self.off_after {
            match disable_transparent_huge_pages() {
                Ok(()) => tracing::info!("every shard restored: transparent huge pages off"),
                Err(e) => tracing::warn!(error = %e, "cannot turn transparent huge pages off: first touches of memory may stall a shard for milliseconds"),
            }
        }
    }
}

/// Whether transparent huge pages are on for process `pid` (this one if
/// `None`), from `THP_enabled` in its /proc status; `None` where the kernel
/// does not report it.
pub fn transparent_huge_pages_enabled(pid: Option<u32>) -> Option<bool> {
    let path = pid.map_or_else(|| "/proc/self/status".to_string(), |p| format!("/proc/{p}/status"));
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
    Some(line.split_whitespace().nth(1)? == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_can_be_turned_off() {
        disable_transparent_huge_pages().expect("prctl");
        // Kernels before 6.x do not report it; where they do, it says off.
        if let Some(on) = transparent_huge_pages_enabled(None) {
            assert!(!on);
        }
    }
}
