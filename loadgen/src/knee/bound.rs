//! What bound the knee, and the evidence for it.
//!
//! The step that decides is the lowest rate above the knee that did not pass (with no knee, the
//! lowest rate that did not pass). A failed step there means the service missed the objective
//! (the generator kept its schedule, or lagged by less than the miss: see `judge`): bound by the
//! service. An inconclusive step there means the generator could not keep its schedule, so
//! nothing above was judged: bound by the generator. Unless the service failed a step no more
//! than [`SERVICE_FAIL_WITHIN`] above the knee: then the knee is the service's, known to within
//! that much.
//! When every rate passed, the range this run generated (`--max-rate`) bound it.
//! A rate measured twice (the search retries an inconclusive bracket top) is judged by its
//! later step.

use serde_json::Value;

use super::judge::StepOutcome;
use super::search::SearchEnd;
use super::step::StepRecord;
use crate::report::{Percentiles, fmt_rate, fmt_us};

/// How far above the knee a step the service failed may be, with only inconclusive steps between,
/// for the knee to count as the service's: twice the search's 5% resolution.
pub const SERVICE_FAIL_WITHIN: f64 = 0.10;

/// What bound the knee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Service,
    Generator,
}

impl Bound {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Generator => "generator",
        }
    }
}

/// The bound of a finished search and the evidence, one sentence an item.
pub fn decide_bound(steps: &[StepRecord], end: SearchEnd, max_rate: f64) -> (Bound, Vec<String>) {
    let knee = steps
        .iter()
        .filter(|s| s.verdict.passed())
        .map(|s| s.observation.rate_target)
        .fold(None, |k: Option<f64>, r| Some(k.map_or(r, |k| k.max(r))));
    let Some(step) = lowest_above(steps, knee, |s| !s.verdict.passed()) else {
        return untested_above(end, max_rate);
    };
    let (bound, mut evidence) = from_deciding_step(steps, knee, step);
    evidence.extend(host_stalls(step));
    (bound, evidence)
}

/// The bound from `step`, the lowest rate above the knee that did not pass.
fn from_deciding_step(
    steps: &[StepRecord],
    knee: Option<f64>,
    step: &StepRecord,
) -> (Bound, Vec<String>) {
    let mut evidence = vec![lowest_not_passing(step), where_latency_went(step)];
    // The lowest failure above the knee, and how far above it is (percent).
    let service_failed_close = knee.and_then(|k| {
        lowest_above(steps, knee, |s| s.verdict.outcome == StepOutcome::Fail)
            .map(|s| (s, (s.observation.rate_target / k - 1.0) * 100.0))
            .filter(|&(_, above)| above <= SERVICE_FAIL_WITHIN * 100.0)
    });
    if step.verdict.outcome == StepOutcome::Inconclusive
        && let Some((failed, above)) = service_failed_close
    {
        evidence.push(format!(
            "That step was inconclusive ({}), but the service failed step {} at {} req/s, {above:.1}% above the \
             knee ({}): {}. The knee is the service's, known to within {above:.1}% (the search aims at 5%; the \
             generator could not judge the rates between).",
            step.saturation
                .as_deref()
                .unwrap_or_else(|| step.verdict.reasons.first().map_or("no reason given", String::as_str)),
            failed.index,
            fmt_rate(failed.observation.rate_target),
            generator_figures(&failed.run),
            failed.verdict.reasons.join("; "),
        ));
        (Bound::Service, evidence)
    } else if step.verdict.outcome == StepOutcome::Inconclusive {
        let twice = steps.iter().any(|s| {
            s.index != step.index
                && s.observation.rate_target == step.observation.rate_target
                && s.verdict.outcome == StepOutcome::Inconclusive
        });
        if twice {
            evidence.push(format!(
                "The search measured {} req/s twice, and the generator could not judge it either time.",
                fmt_rate(step.observation.rate_target)
            ));
        }
        evidence.push(match step.saturation.as_deref() {
            Some(why) => format!(
                "The generator flagged itself saturated in that step ({why}): it could not keep the schedule \
                 (achieved {} of {} req/s), so the step is inconclusive and rates from there up were not \
                 judged. The knee is the highest rate the generator could judge, and it is the generator's, \
                 not the service's.",
                fmt_rate(step.observation.rate_achieved),
                fmt_rate(step.observation.rate_target)
            ),
            None => format!(
                "The generator's own delays in that step could account for its miss ({}), so the step is \
                 inconclusive and rates from there up were not judged. The knee is the highest rate the \
                 generator could judge, and it is the generator's, not the service's.",
                step.verdict.reasons.join("; ")
            ),
        });
        evidence.push(format!(
            "Generator figures of that step: {}.",
            generator_figures(&step.run)
        ));
        (Bound::Generator, evidence)
    } else if let Some(why) = &step.saturation {
        evidence.push(format!(
            "The generator lagged in that step ({why}; {}), but by less than the miss: the objective was missed \
             by the service.",
            generator_figures(&step.run)
        ));
        (Bound::Service, evidence)
    } else {
        evidence.push(format!(
            "The generator kept its schedule (not flagged saturated: {}), so the objective was missed by the service.",
            generator_figures(&step.run)
        ));
        (Bound::Service, evidence)
    }
}

/// A note when the host took a notable share of a CPU during the deciding step: its stalls
/// slowed the service (or the generator) in that step, so the knee may sit below the service's
/// own on a quiet host.
fn host_stalls(step: &StepRecord) -> Option<String> {
    let steal = step
        .observation
        .host_steal
        .filter(|s| *s >= crate::host_steal::NOTABLE)?;
    Some(format!(
        "The host took {:.1}% of a CPU during that step (steal in /proc/stat): its stalls are in the step's \
         latencies, so on a quiet host the knee may be higher. Run it again to tell.",
        steal * 100.0
    ))
}

/// The step at the lowest rate above `knee` (any, without a knee) for which `which` holds; of
/// two at the same rate, the later.
fn lowest_above(
    steps: &[StepRecord],
    knee: Option<f64>,
    which: impl Fn(&StepRecord) -> bool,
) -> Option<&StepRecord> {
    steps
        .iter()
        .filter(|s| which(s) && knee.is_none_or(|k| s.observation.rate_target > k))
        .min_by(|a, b| {
            a.observation
                .rate_target
                .total_cmp(&b.observation.rate_target)
                .then(b.index.cmp(&a.index))
        })
}

fn untested_above(end: SearchEnd, max_rate: f64) -> (Bound, Vec<String>) {
    let mut evidence = vec![format!(
        "No step failed up to --max-rate {} req/s: the knee is at or above what this run generated, so the load \
         generator's configured range bound the result, not the service. Raise --max-rate.",
        fmt_rate(max_rate)
    )];
    if end == SearchEnd::StepBudget {
        evidence.push("The step budget ran out during the ramp.".into());
    }
    (Bound::Generator, evidence)
}

fn lowest_not_passing(step: &StepRecord) -> String {
    format!(
        "The lowest rate above the knee that did not pass was step {} at {} req/s ({}): {}.",
        step.index,
        fmt_rate(step.observation.rate_target),
        step.verdict.outcome.as_str(),
        step.verdict.reasons.join("; ")
    )
}

fn where_latency_went(step: &StepRecord) -> String {
    let c = Percentiles::of(&step.corrected);
    let u = Percentiles::of(&step.uncorrected);
    format!(
        "There the corrected p99 was {} and the uncorrected p99 {}: {}",
        fmt_us(c.p99),
        fmt_us(u.p99),
        if c.p99 > u.p99.saturating_mul(3) {
            "requests left well after their intended time (queued in the generator or waiting for a connection)."
        } else {
            "requests left on time and waited in the service."
        }
    )
}

fn generator_figures(run: &Value) -> String {
    let get = |k: &str| run.get(k).cloned().unwrap_or(Value::Null);
    let us = |pointer: &str| {
        run.pointer(pointer)
            .and_then(Value::as_u64)
            .map_or("?".into(), |v| v.to_string())
    };
    format!(
        "generator CPU {}, send-lag p99 {} µs (its own part: {} µs; responses waited {} µs at p99 in their \
         sockets before it read them, by the kernel's receive timestamps), max in flight {} of {} users, \
         pool exhausted {}, service CPU {}",
        get("generator_cpu")
            .as_f64()
            .map_or("?".into(), |c| format!("{:.0}%", c * 100.0)),
        us("/send_lag_us/p99"),
        us("/generator_lag_us/p99"),
        us("/read_delay_us/p99"),
        get("max_in_flight"),
        get("users"),
        get("pool_exhausted"),
        get("service_cpu")
            .as_f64()
            .map_or("unknown".into(), |c| format!("{:.0}%", c * 100.0)),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::knee::judge::{Observation, Verdict};

    fn record(index: usize, rate: f64, outcome: StepOutcome) -> StepRecord {
        let mut h = crate::stats::new_histogram();
        h.record(if outcome == StepOutcome::Pass {
            1_000
        } else {
            50_000
        })
        .unwrap();
        let saturated = outcome == StepOutcome::Inconclusive;
        StepRecord {
            index,
            observation: Observation {
                rate_target: rate,
                rate_achieved: rate,
                requests: 100,
                errors: 0,
                p99_us: h.value_at_quantile(0.99),
                generator_saturated: saturated,
                generator_delay_us: 0,
                own_delay_max_us: None,
                service_cpu: None,
                host_steal: None,
            },
            verdict: Verdict {
                outcome,
                reasons: vec!["why".into()],
            },
            run: json!({"generator_cpu": 0.95, "send_lag_us": {"p99": 9000}, "users": 10, "max_in_flight": 3, "pool_exhausted": false}),
            corrected: h.clone(),
            uncorrected: h,
            hgrm: String::new(),
            hgrm_uncorrected: String::new(),
            goose_report: None,
            saturation: saturated.then(|| "generator CPU at 95% of its cores".to_string()),
            recovery: None,
        }
    }

    use StepOutcome::{Fail, Inconclusive, Pass};

    #[test]
    fn a_failure_just_above_the_knee_is_the_service() {
        // an inconclusive step higher up does not matter: the lowest one above the knee decides
        let steps = vec![
            record(1, 1000.0, Pass),
            record(2, 4000.0, Inconclusive),
            record(3, 2000.0, Fail),
        ];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::Converged, 1e5);
        assert_eq!(bound, Bound::Service);
        assert!(evidence[0].contains("step 3"), "{evidence:?}");
    }

    #[test]
    fn the_host_s_steal_in_the_deciding_step_is_in_the_evidence() {
        let mut steps = vec![record(1, 1000.0, Pass), record(2, 2000.0, Fail)];
        let quiet = decide_bound(&steps, SearchEnd::Converged, 1e5);
        assert!(!quiet.1.iter().any(|e| e.contains("host")), "{quiet:?}");
        steps[1].observation.host_steal = Some(0.034);
        steps[0].observation.host_steal = Some(0.5);
        let (bound, evidence) = decide_bound(&steps, SearchEnd::Converged, 1e5);
        assert_eq!(bound, Bound::Service, "the verdict stands");
        assert!(
            evidence.last().unwrap().contains("host took 3.4% of a CPU"),
            "{evidence:?}"
        );
        // Steal in a step that does not decide the bound is not evidence about it.
        steps[1].observation.host_steal = Some(0.001);
        let (_, evidence) = decide_bound(&steps, SearchEnd::Converged, 1e5);
        assert!(!evidence.iter().any(|e| e.contains("host")), "{evidence:?}");
    }

    #[test]
    fn a_failure_the_generator_s_lag_cannot_explain_is_the_service_and_says_it_lagged() {
        let mut failed = record(2, 2000.0, Fail);
        failed.saturation = Some("generator CPU at 94% of its cores".into());
        let steps = vec![record(1, 1000.0, Pass), failed];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::Converged, 1e5);
        assert_eq!(bound, Bound::Service);
        assert!(
            evidence
                .iter()
                .any(|e| e.contains("lagged in that step (generator CPU at 94%")
                    && e.contains("by less than the miss")),
            "{evidence:?}"
        );
        assert!(
            !evidence.iter().any(|e| e.contains("kept its schedule")),
            "{evidence:?}"
        );
    }

    #[test]
    fn an_inconclusive_step_just_above_the_knee_is_the_generator() {
        let steps = vec![
            record(1, 1000.0, Pass),
            record(2, 2000.0, Inconclusive),
            record(3, 4000.0, Fail),
        ];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::Converged, 1e5);
        assert_eq!(bound, Bound::Generator);
        assert!(
            evidence.iter().any(|e| e.contains("generator CPU at 95%")),
            "{evidence:?}"
        );
        assert!(evidence[0].contains("(inconclusive)"), "{evidence:?}");
    }

    #[test]
    fn a_service_failure_close_above_an_inconclusive_step_is_the_service() {
        // 128k passed, 133k the generator's, 139k the service's (8.6% above the knee)
        let steps = vec![
            record(1, 128_000.0, Pass),
            record(2, 152_000.0, Fail),
            record(3, 139_000.0, Fail),
            record(4, 133_000.0, Inconclusive),
        ];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::StepBudget, 1e6);
        assert_eq!(bound, Bound::Service);
        assert!(evidence[0].contains("step 4"), "{evidence:?}");
        assert!(
            evidence
                .iter()
                .any(|e| e.contains("step 3") && e.contains("within 8.6%")),
            "{evidence:?}"
        );
        // The service's failure too far above (more than 10%): the generator's.
        let steps = vec![
            record(1, 94_600.0, Pass),
            record(2, 128_000.0, Fail),
            record(3, 98_900.0, Inconclusive),
        ];
        assert_eq!(
            decide_bound(&steps, SearchEnd::StepBudget, 1e6).0,
            Bound::Generator
        );
    }

    #[test]
    fn a_retried_rate_is_judged_by_its_later_step() {
        // 139k inconclusive, then the same rate failed as the service's: bound by the service
        let steps = vec![
            record(1, 133_000.0, Pass),
            record(2, 139_000.0, Inconclusive),
            record(3, 139_000.0, Fail),
        ];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::Converged, 1e6);
        assert_eq!(bound, Bound::Service);
        assert!(evidence[0].contains("step 3"), "{evidence:?}");
        // inconclusive both times: the generator's, and the evidence says it was tried twice
        let steps = vec![
            record(1, 133_000.0, Pass),
            record(2, 139_000.0, Inconclusive),
            record(3, 139_000.0, Inconclusive),
        ];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::Converged, 1e6);
        assert_eq!(bound, Bound::Generator);
        assert!(evidence[0].contains("step 3"), "{evidence:?}");
        assert!(
            evidence
                .iter()
                .any(|e| e.contains("measured 139,000 req/s twice")),
            "{evidence:?}"
        );
        // the retry passed: the knee is there, and the earlier step at that rate does not count
        let steps = vec![
            record(1, 133_000.0, Pass),
            record(2, 139_000.0, Inconclusive),
            record(3, 139_000.0, Pass),
            record(4, 145_000.0, Fail),
        ];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::Converged, 1e6);
        assert_eq!(bound, Bound::Service);
        assert!(evidence[0].contains("step 4"), "{evidence:?}");
    }

    #[test]
    fn a_failure_below_the_knee_does_not_decide() {
        // noise: 1500 failed, 2000 passed, 2100 was the generator's
        let steps = vec![
            record(1, 1500.0, Fail),
            record(2, 2000.0, Pass),
            record(3, 2100.0, Inconclusive),
        ];
        let (bound, _) = decide_bound(&steps, SearchEnd::Converged, 1e5);
        assert_eq!(bound, Bound::Generator);
    }

    #[test]
    fn nothing_failed_up_to_max_rate_is_the_range_generated() {
        let steps = vec![record(1, 1000.0, Pass), record(2, 2000.0, Pass)];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::MaxRatePassed, 2000.0);
        assert_eq!(bound, Bound::Generator);
        assert!(evidence[0].contains("--max-rate"), "{evidence:?}");
    }
}
