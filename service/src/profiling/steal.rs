//! The hypervisor's steal: CPU time the host gave to others while this VM had work to do, from
//! the `cpu` line of `/proc/stat`. The process's CPU clocks leave it out (the kernel's
//! paravirtual steal accounting), but the `cpu-clock` perf event runs on through it: a thread
//! preempted by the host keeps "running" for perf. So a `perf-events` profile can stand for up to
//! this much more CPU than the process used, and each profile says how much there was.

use std::time::Duration;

/// All CPUs' steal so far (None where `/proc/stat` or its steal field cannot be read).
pub(crate) fn machine_steal() -> Option<Duration> {
    // SAFETY: `sysconf` has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_s = u64::try_from(ticks_per_s).ok().filter(|&t| t > 0)?;
    let ticks = parse(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_s))
}

/// The steal field (the eighth number) of the all-CPUs `cpu` line, in clock ticks.
fn parse(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_ascii_whitespace().nth(8)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_all_cpus_line_s_steal_is_read() {
        let stat = "cpu  368282 0 71445 207584 1658 0 32699 7367 0 0\n\
                    cpu0 183634 0 35112 105703 478 0 17445 3680 0 0\n";
        assert_eq!(parse(stat), Some(7367));
        assert_eq!(parse("cpu  1 2 3\n"), None, "no steal field");
        assert_eq!(parse("cpu0 1 2 3 4 5 6 7 8\n"), None, "no all-CPUs line");
    }

    #[test]
    fn this_machine_s_steal_is_read_and_never_runs_back() {
        let before = machine_steal().expect("/proc/stat has the steal field");
        assert!(machine_steal().unwrap() >= before);
    }
}
