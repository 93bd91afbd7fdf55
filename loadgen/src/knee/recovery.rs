//! Steps independent of their history: after a step that did not pass, the target drains and must
//! show that it has recovered before the next step is judged.
//!
//! A step returns only when every request it sent has completed or failed, so nothing of it is
//! in flight at the generator; what the target may still hold (work of requests whose clients
//! gave up, queues, a collector running behind) shows in its latency. So after a short quiet
//! period a probe sends a low rate for a second, and its corrected p99 must be back near the
//! baseline: at most twice the p99 of the same probe on the warmed-up target (or the lowest any
//! probe has shown since), or a quarter of the objective, whichever is larger, and never above
//! the objective. A probe that is not back is followed by a longer quiet period
//! and another probe, a bounded number of times.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use super::search::round_rate;
use crate::error::LoadgenError;

/// Length of one probe.
pub const PROBE_DURATION: Duration = Duration::from_secs(1);
/// Probes per recovery before the search goes on regardless (and says so).
pub const MAX_PROBES: u32 = 5;
/// The quiet period before the first probe; it doubles before each further one
/// (0.25 + 0.5 + 1 + 2 + 4 s, with the probes at most about 13 s in all).
pub const FIRST_QUIET: Duration = Duration::from_millis(250);
/// Probes run at a quarter of the start rate (and of the lowest rate that did not pass), at
/// most this many requests/s: low enough to leave an overloaded target room to drain.
pub const PROBE_MAX_RATE: f64 = 100.0;

/// How long to wait, and how often to probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecoveryPlan {
    pub first_quiet: Duration,
    pub max_probes: u32,
}

impl Default for RecoveryPlan {
    fn default() -> Self {
        Self {
            first_quiet: FIRST_QUIET,
            max_probes: MAX_PROBES,
        }
    }
}

/// One probe's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    pub rate: f64,
    /// The quiet period before it.
    pub quiet_s: f64,
    pub requests: u64,
    pub errors: u64,
    /// Corrected p99, microseconds.
    pub p99_us: u64,
    pub generator_saturated: bool,
    /// Back near the baseline: p99 within the limit, no errors, the generator on schedule.
    pub recovered: bool,
}

/// The probes after one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    pub baseline_p99_us: Option<u64>,
    pub limit_us: u64,
    pub probes: Vec<Probe>,
    pub recovered: bool,
}

/// The probe rate: a quarter of the start rate and of the lowest rate that did not pass, at most
/// [`PROBE_MAX_RATE`], at least 1 request/s.
pub fn probe_rate(start_rate: f64, upper: Option<f64>) -> f64 {
    let quarter = start_rate.min(upper.unwrap_or(f64::INFINITY)) / 4.0;
    round_rate(quarter.min(PROBE_MAX_RATE)).max(1.0)
}

/// The p99 a probe must be back under: twice the baseline or a quarter of the objective,
/// whichever is larger, and never above the objective (a baseline taken on a target still busy
/// must not let a busy target pass); a quarter of the objective without a baseline.
pub fn limit_us(baseline_p99_us: Option<u64>, slo_p99_us: u64) -> u64 {
    let floor = slo_p99_us / 4;
    baseline_p99_us.map_or(floor, |b| b.saturating_mul(2).min(slo_p99_us).max(floor))
}

/// Whether a probe's figures say the target is back.
pub fn is_recovered(p99_us: u64, errors: u64, generator_saturated: bool, limit_us: u64) -> bool {
    p99_us <= limit_us && errors == 0 && !generator_saturated
}

/// Waits and probes until a probe is back under `limit_us`, at most `plan.max_probes` times.
/// `probe(quiet)` waits `quiet` and runs one probe.
pub async fn recover<F, Fut>(
    plan: RecoveryPlan,
    baseline_p99_us: Option<u64>,
    limit_us: u64,
    mut probe: F,
) -> Result<Recovery, LoadgenError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<Probe, LoadgenError>>,
{
    let mut probes = Vec::new();
    let mut quiet = plan.first_quiet;
    for _ in 0..plan.max_probes {
        let p = probe(quiet).await?;
        let recovered = p.recovered;
        probes.push(p);
        if recovered {
            break;
        }
        quiet *= 2;
    }
    Ok(Recovery {
        baseline_p99_us,
        limit_us,
        recovered: probes.last().is_some_and(|p| p.recovered),
        probes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(p99_us: u64, limit: u64, quiet: Duration) -> Probe {
        Probe {
            rate: 100.0,
            quiet_s: quiet.as_secs_f64(),
            requests: 100,
            errors: 0,
            p99_us,
            generator_saturated: false,
            recovered: is_recovered(p99_us, 0, false, limit),
        }
    }

    #[tokio::test]
    async fn probes_until_the_target_is_back_with_growing_quiet_periods() {
        let plan = RecoveryPlan {
            first_quiet: Duration::from_millis(1),
            max_probes: 5,
        };
        let mut backlog = vec![2_000, 40_000, 90_000];
        let r = recover(plan, Some(1_000), 2_500, |quiet| {
            let p99 = backlog.pop().unwrap_or(0);
            async move { Ok(probe(p99, 2_500, quiet)) }
        })
        .await
        .unwrap();
        assert!(r.recovered);
        let p99s: Vec<u64> = r.probes.iter().map(|p| p.p99_us).collect();
        assert_eq!(p99s, [90_000, 40_000, 2_000]);
        let quiet: Vec<f64> = r.probes.iter().map(|p| p.quiet_s).collect();
        assert_eq!(quiet, [0.001, 0.002, 0.004]);
    }

    #[tokio::test]
    async fn gives_up_after_the_probe_budget_and_says_so() {
        let plan = RecoveryPlan {
            first_quiet: Duration::ZERO,
            max_probes: 3,
        };
        let r = recover(plan, None, 2_500, |quiet| async move {
            Ok(probe(50_000, 2_500, quiet))
        })
        .await
        .unwrap();
        assert!(!r.recovered);
        assert_eq!(r.probes.len(), 3);
    }

    #[test]
    fn limit_is_twice_the_baseline_or_a_quarter_of_the_objective() {
        assert_eq!(limit_us(Some(100), 10_000), 2_500);
        assert_eq!(limit_us(Some(4_000), 10_000), 8_000);
        assert_eq!(limit_us(None, 10_000), 2_500);
        assert_eq!(
            limit_us(Some(155_000), 80_000),
            80_000,
            "never above the objective"
        );
        assert!(!is_recovered(2_000, 1, false, 2_500), "errors");
        assert!(!is_recovered(2_000, 0, true, 2_500), "generator lagged");
        assert!(is_recovered(2_500, 0, false, 2_500));
    }

    #[test]
    fn probe_rate_is_low_next_to_what_failed() {
        assert_eq!(probe_rate(2_000.0, None), 100.0);
        assert_eq!(probe_rate(250.0, None), 62.5);
        assert_eq!(probe_rate(2_000.0, Some(120.0)), 30.0);
        assert_eq!(probe_rate(2.0, Some(2.0)), 1.0);
    }
}
