//! A shard asks the kernel's scheduler for a short time slice.
//!
//! Linux's fair scheduler (EEVDF, 6.6+) gives each task a virtual deadline
//! one slice after it becomes eligible; from 6.12 a task may ask for its
//! own slice (`sched_setattr` with `sched_runtime` under SCHED_OTHER), and
//! a waking task with a shorter slice preempts a running one sooner. A
//! shard is latency-bound: it runs for microseconds per datagram and then
//! sleeps. With the default slice (3 ms here) a shard sharing its core
//! with a CPU-bound process waits out whole slices of that process before
//! it answers; a short slice keeps the shard's share of the core the same
//! (fairness is by virtual runtime, not by slice) and cuts those waits.
//!
//! Older kernels ignore the field or refuse it: the shard then runs with
//! the default slice, and says so in the log.

use std::time::Duration;

/// `struct sched_attr`, as of SCHED_ATTR_SIZE_VER1 (56 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Asks for a slice of `slice` for the calling thread, keeping its policy
/// and nice value. The kernel clamps it to 0.1..100 ms.
pub fn request_slice(slice: Duration) -> Result<(), String> {
    let mut attr = this_thread()?;
    if attr.policy != libc::SCHED_OTHER as u32 && attr.policy != libc::SCHED_BATCH as u32 {
        return Err(format!("policy {} has no fair slice", attr.policy));
    }
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    attr.flags = 0;
    attr.runtime = slice.as_nanos() as u64;
    // SAFETY: sched_setattr on the calling thread (pid 0) with a whole
    // `sched_attr` of the size it names.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } != 0 {
        return Err(format!("sched_setattr: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The calling thread's scheduling attributes.
fn this_thread() -> Result<SchedAttr, String> {
    let mut attr = SchedAttr { size: std::mem::size_of::<SchedAttr>() as u32, ..Default::default() };
    // SAFETY: sched_getattr on the calling thread (pid 0) into a buffer of
    // the size passed.
    if unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, attr.size, 0) } != 0 {
        return Err(format!("sched_getattr: {}", std::io::Error::last_os_error()));
    }
    Ok(attr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_kernels() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_on_kernels_that_have_them() {
        std::thread::spawn(|| {
            match request_slice(Duration::from_micros(500)) {
                // The kernel reports the slice it keeps (6.12+).
                Ok(()) => {
                    let got = Duration::from_nanos(this_thread().unwrap().runtime);
                    assert!(got.is_zero() || got == Duration::from_micros(500), "slice {got:?}");
                }
                // A kernel without custom slices may refuse; it must say why.
                Err(e) => assert!(e.starts_with("sched_"), "{e}"),
            }
        })
        .join()
        .unwrap();
    }
}
