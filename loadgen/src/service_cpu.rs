//! How busy the service under test was during a step: its process's CPU time from `/proc`
//! (every thread's user and system time), as a fraction of the CPUs it may run on. Checked
//! against `perf stat -e task-clock -p PID` over the same runs (README, "Runs of 2026-11-30
//! night").

use std::time::Duration;

/// The CPU time of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCpu {
    pid: u32,
    cpus: usize,
}

impl ServiceCpu {
    /// The process `pid`, if it exists; its CPUs are those in its affinity mask.
    pub fn of(pid: u32) -> Option<Self> {
        let me = Self {
            pid,
            cpus: allowed_cpus(pid)?,
        };
        me.used().map(|_| me)
    }

    /// CPU time used so far (user and system, every thread), at the kernel's clock-tick
    /// resolution (10 ms at the usual 100 ticks a second).
    pub fn used(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let ticks = stat_cpu_ticks(&stat)?;
        Some(Duration::from_secs_f64(ticks as f64 / ticks_per_second()?))
    }

    /// `used` between two readings over `wall`, as a fraction of the process's CPUs.
    pub fn share(&self, before: Duration, after: Duration, wall: Duration) -> f64 {
        let wall = wall.as_secs_f64() * self.cpus as f64;
        if wall > 0.0 {
            after.saturating_sub(before).as_secs_f64() / wall
        } else {
            0.0
        }
    }
}

/// The kernel's clock ticks a second, the unit of the CPU times in `/proc` (None if unknown).
pub fn ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf only reads a system constant.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_s > 0).then_some(per_s as f64)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2) is
/// in parentheses and may hold spaces, so the fields are counted after its closing one.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn allowed_cpus(pid: u32) -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(pid as libc::pid_t, size_of::<libc::cpu_set_t>(), &mut set) != 0
        {
            return None;
        }
        Some((libc::CPU_COUNT(&set) as usize).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_s_own_work_shows_in_its_cpu_time() {
        let me = ServiceCpu::of(std::process::id()).expect("this process");
        let before = me.used().unwrap();
        let start = std::time::Instant::now();
        // Work until the kernel has counted 300 ms more (or give up after 20 s of a starved CPU).
        let mut x = 0u64;
        let mut after = before;
        while after - before < Duration::from_millis(300)
            && start.elapsed() < Duration::from_secs(20)
        {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            after = me.used().unwrap();
        }
        assert!(
            after - before >= Duration::from_millis(300),
            "{:?}",
            after - before
        );
        let share = me.share(before, after, start.elapsed());
        assert!(share > 0.0 && share <= 1.05, "{share}");
        assert_eq!(ServiceCpu::of(u32::MAX), None);
    }
}
