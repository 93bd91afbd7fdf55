//! The hypervisor's share of each CPU during a step: "steal" in `/proc/stat`, the time the host
//! ran other guests while this VM had work to do. Neither the generator's nor the service's own
//! figures show it: a stolen millisecond looks like a slow service (its queue grows) or a late
//! generator. A step with steal measured the host's stalls as well as the service.

use std::time::Duration;

use crate::service_cpu::ticks_per_second;

/// The share of a CPU from which the host's steal is worth a line, and a failed knee step a
/// second measurement. Low on purpose: steal counts in 10 ms ticks and reads below the stalls a
/// busy loop sees (README, "the host's steal"), and knee steps failed with 5.6–12% of a CPU
/// stolen while linkr used half of its own.
pub const NOTABLE: f64 = 0.01;

/// Each CPU's steal so far, in clock ticks, in the order of `/proc/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSteal(Vec<u64>);

impl CpuSteal {
    /// The machine's CPUs now (None where `/proc/stat` cannot be read, or has no steal field).
    pub fn read() -> Option<Self> {
        parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The largest share of one CPU's time that the host took between `self` and `later`, `wall`
    /// apart, at the kernel's clock-tick resolution (10 ms at the usual 100 ticks a second).
    pub fn largest_share(&self, later: &Self, wall: Duration) -> Option<f64> {
        Some(share(self, later, wall, ticks_per_second()?))
    }
}

fn share(before: &CpuSteal, after: &CpuSteal, wall: Duration, ticks_per_s: f64) -> f64 {
    let wall = wall.as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    let most = before
        .0
        .iter()
        .zip(&after.0)
        .map(|(b, a)| a.saturating_sub(*b))
        .max()
        .unwrap_or(0);
    most as f64 / ticks_per_s / wall
}

/// The steal field (the eighth number) of every `cpuN` line.
fn parse(stat: &str) -> Option<CpuSteal> {
    let steal: Option<Vec<u64>> = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| l.split_ascii_whitespace().nth(8)?.parse().ok())
        .collect();
    steal.filter(|s| !s.is_empty()).map(CpuSteal)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  368282 0 71445 207584 1658 0 32699 7367 0 0
cpu0 183634 0 35112 105703 478 0 17445 3680 0 0
cpu1 184648 0 36333 101881 1179 0 15254 3687 0 0
intr 123 4 5
";

    #[test]
    fn each_cpu_s_steal_is_read_and_the_total_line_left_out() {
        assert_eq!(parse(STAT), Some(CpuSteal(vec![3680, 3687])));
        assert_eq!(
            parse("cpu0 1 2 3\n"),
            None,
            "a line without the steal field"
        );
        assert_eq!(parse("intr 1\n"), None);
    }

    #[test]
    fn the_share_is_the_cpu_that_lost_most() {
        let before = CpuSteal(vec![100, 200]);
        let after = CpuSteal(vec![105, 230]);
        // 30 ticks of 10 ms over 10 s: 3% of CPU 1.
        let s = share(&before, &after, Duration::from_secs(10), 100.0);
        assert!((s - 0.03).abs() < 1e-9, "{s}");
        assert_eq!(share(&before, &after, Duration::ZERO, 100.0), 0.0);
    }

    #[test]
    fn this_machine_s_cpus_are_read() {
        let now = CpuSteal::read().expect("/proc/stat has the steal field");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(now.0.len() >= cpus, "{} CPUs in /proc/stat", now.0.len());
        let later = CpuSteal::read().unwrap();
        let s = now.largest_share(&later, Duration::from_secs(1)).unwrap();
        assert!(s >= 0.0, "{s}");
    }
}
