//! The process's threads as the profiler sees them: ids from `/proc/self/task`, names, and CPU
//! clocks read with `clock_gettime` (nanoseconds, where `/proc/*/stat` counts 10 ms ticks).

use std::time::Duration;

/// Ids of the process's threads now.
pub(crate) fn list() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return vec![gettid()];
    };
    let mut tids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// The thread's name (`comm`, at most 15 bytes), or `thread-TID`.
pub(crate) fn name(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end().replace(';', ","))
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("thread-{tid}"))
}

pub(crate) fn gettid() -> u32 {
    // SAFETY: `gettid` has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u32::try_from(tid).unwrap_or(0)
}

/// The CPU-time clock of thread `tid` of this process (Linux's `MAKE_THREAD_CPUCLOCK(tid,
/// CPUCLOCK_SCHED)`, what `pthread_getcpuclockid` returns, but for any thread id).
pub(crate) fn thread_clock(tid: u32) -> libc::clockid_t {
    const CPUCLOCK_SCHED: libc::clockid_t = 2;
    const CPUCLOCK_PERTHREAD: libc::clockid_t = 4;
    let tid = libc::clockid_t::try_from(tid).unwrap_or(0);
    (!tid << 3) | CPUCLOCK_SCHED | CPUCLOCK_PERTHREAD
}

fn clock(id: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` only writes the struct it is given.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// CPU time (user + system) thread `tid` of this process has used; `None` once it has exited.
pub fn thread_cpu_time(tid: u32) -> Option<Duration> {
    clock(thread_clock(tid))
}

/// CPU time (user + system) of the whole process so far, exited threads included.
pub fn process_cpu_time() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_clock_reads_this_threads_cpu_time() {
        let tid = gettid();
        assert!(list().contains(&tid));
        let before = thread_cpu_time(tid).unwrap();
        // Spin until the thread's clock has advanced 10 ms; on a busy machine that takes longer
        // in wall time, so the bound is generous and only a clock that never moves fails.
        let mut x = 1u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let used = loop {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            let used = thread_cpu_time(tid).unwrap() - before;
            if used >= Duration::from_millis(10) {
                break used;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "thread clock stuck at {used:?}"
            );
        };
        assert!(process_cpu_time() >= used);
        // Above any pid_max: no such thread.
        assert!(thread_cpu_time(4_194_305).is_none());
    }
}
