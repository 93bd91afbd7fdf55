//! Judging one step: it passes, fails, or is inconclusive when the generator could not keep its
//! schedule (then the step measured the generator, and says nothing about the service), unless
//! the miss is plainly the service's: it ran out of CPU, or missed by more than the generator's
//! largest own delay could account for. A lagging generator never passes a step. A step it did
//! not flag is inconclusive too when only its p99 missed, by less than the generator's own delays
//! could account for: at p99, or its largest one (a stall).

use std::time::Duration;

use crate::report::{fmt_rate, fmt_us};

/// A step must achieve this fraction of its target rate.
pub const MIN_ACHIEVED_RATIO: f64 = 0.99;
/// A step may fail at most this fraction of its requests.
pub const MAX_ERROR_RATIO: f64 = 0.001;
/// A service that used at least this share of its CPUs in a step was at its limit (the share at
/// which a step's misses are its own even when the generator lagged; see [`Criteria::judge`]).
pub const SERVICE_CPU_FULL: f64 = 0.95;

/// What makes a step pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    pub slo_p99_us: u64,
    pub min_achieved_ratio: f64,
    pub max_error_ratio: f64,
}

/// The figures of a step that decide its outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub rate_target: f64,
    pub rate_achieved: f64,
    pub requests: u64,
    pub errors: u64,
    /// Corrected p99 (from the intended send time), microseconds.
    pub p99_us: u64,
    pub generator_saturated: bool,
    /// The generator's own delay at p99 (its send lag from when a connection was free, or from
    /// when that connection's answer arrived), microseconds: a p99 that misses the objective
    /// by less than this may have missed it by the generator's doing.
    pub generator_delay_us: u64,
    /// The generator's largest own delay (µs), when every request's own lag was measured from
    /// when it could have left: no request was late by more than this on its account.
    pub own_delay_max_us: Option<u64>,
    /// The service's CPU over the step, as a share of its CPUs (None when its process is not
    /// known).
    pub service_cpu: Option<f64>,
    /// The largest share of one CPU the host took during the step (None when not measured).
    pub host_steal: Option<f64>,
}

/// The three outcomes of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Pass,
    Fail,
    /// The generator lagged: neither pass nor fail, and the knee never lands on it.
    Inconclusive,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Inconclusive => "inconclusive",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: StepOutcome,
    /// Why it failed or was inconclusive; for a pass, one line of the figures that passed.
    pub reasons: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.outcome == StepOutcome::Pass
    }
}

impl Criteria {
    pub fn new(slo: Duration) -> Self {
        Self {
            slo_p99_us: u64::try_from(slo.as_micros()).unwrap_or(u64::MAX),
            min_achieved_ratio: MIN_ACHIEVED_RATIO,
            max_error_ratio: MAX_ERROR_RATIO,
        }
    }

    pub fn judge(&self, o: &Observation) -> Verdict {
        let misses = self.misses(o);
        if o.generator_saturated {
            // The generator lagged, but the miss may still be plainly the service's.
            if let Some(why) =
                service_out_of_cpu(o, &misses).or_else(|| self.service_miss_despite_lag(o, &misses))
            {
                let mut reasons = misses;
                reasons.push(why);
                return Verdict {
                    outcome: StepOutcome::Fail,
                    reasons,
                };
            }
            let mut reasons = vec![
                "the generator could not keep its schedule, so this step measured the generator, not the service"
                    .to_string(),
            ];
            reasons.extend(misses.into_iter().map(|m| format!("also {m}")));
            return Verdict {
                outcome: StepOutcome::Inconclusive,
                reasons,
            };
        }
        if let Some(why) = self.miss_within_own_delays(o, &misses) {
            return match service_out_of_cpu(o, &misses) {
                None => Verdict {
                    outcome: StepOutcome::Inconclusive,
                    reasons: vec![why],
                },
                Some(out_of_cpu) => Verdict {
                    outcome: StepOutcome::Fail,
                    reasons: misses.into_iter().chain([out_of_cpu]).collect(),
                },
            };
        }
        if !misses.is_empty() {
            return Verdict {
                outcome: StepOutcome::Fail,
                reasons: misses,
            };
        }
        Verdict {
            outcome: StepOutcome::Pass,
            reasons: vec![format!(
                "achieved {:.1}%, p99 {} <= {}, errors {:.2}%",
                achieved_ratio(o) * 100.0,
                fmt_us(o.p99_us),
                fmt_us(self.slo_p99_us),
                error_ratio(o) * 100.0
            )],
        }
    }

    /// Why a step the generator did not flag may still have missed by the generator's doing, if
    /// it may: only the p99 missed, and by less than the generator's own delays at p99, or by
    /// less than its largest own delay. The second is the bound of
    /// [`Self::service_miss_despite_lag`]: one stall of the generator (a 32 ms one failed a step
    /// at p99 19 ms, its own delays' p99 323 µs) delays every request sent during it, and the
    /// service's queue passes that delay on to those behind them.
    fn miss_within_own_delays(&self, o: &Observation, misses: &[String]) -> Option<String> {
        if misses.len() != 1 || o.p99_us <= self.slo_p99_us {
            return None;
        }
        let within = |delay: u64| o.p99_us.saturating_sub(delay) <= self.slo_p99_us;
        let (p99, slo) = (fmt_us(o.p99_us), fmt_us(self.slo_p99_us));
        if within(o.generator_delay_us) {
            return Some(format!(
                "p99 {p99} > SLO {slo} by less than the generator's own delays at p99 ({}): the \
                 miss may be the generator's",
                fmt_us(o.generator_delay_us)
            ));
        }
        let max = o.own_delay_max_us.filter(|&max| within(max))?;
        Some(format!(
            "p99 {p99} > SLO {slo} by less than the generator's largest own delay ({}): a stall \
             of the generator may be the miss",
            fmt_us(max)
        ))
    }

    /// Why a step in which the generator lagged still failed by the service's doing, if it did:
    /// the rate was sent, only the p99 missed, and it missed by more than the generator's largest
    /// own delay. A queue that gets each request at most D late answers each at most D late
    /// (departures of a FIFO queue shift by no more than its arrivals do), so with a generator
    /// that never lagged every latency would have been at most D shorter, and the p99 would
    /// still miss.
    fn service_miss_despite_lag(&self, o: &Observation, misses: &[String]) -> Option<String> {
        let max = o.own_delay_max_us?;
        let without = o.p99_us.saturating_sub(max);
        (misses.len() == 1 && o.p99_us > self.slo_p99_us && without > self.slo_p99_us).then(|| {
            format!(
                "the generator lagged, but by at most {} on its own account (its largest own delay); \
                 without it the p99 would still be at least {} > SLO {}: the miss is the service's",
                fmt_us(max),
                fmt_us(without),
                fmt_us(self.slo_p99_us)
            )
        })
    }

    /// The step's figures met the objective (rate sent, p99 and errors within it), whoever
    /// lagged.
    pub fn met_objective(&self, o: &Observation) -> bool {
        self.misses(o).is_empty()
    }

    /// The criteria `o` misses, as messages.
    fn misses(&self, o: &Observation) -> Vec<String> {
        let mut reasons = Vec::new();
        let achieved = achieved_ratio(o);
        if o.requests == 0 {
            reasons.push("no request completed".to_string());
        }
        if achieved < self.min_achieved_ratio {
            reasons.push(format!(
                "achieved {} of {} req/s ({:.1}% < {}%)",
                fmt_rate(o.rate_achieved),
                fmt_rate(o.rate_target),
                achieved * 100.0,
                self.min_achieved_ratio * 100.0
            ));
        }
        if o.p99_us > self.slo_p99_us {
            reasons.push(format!(
                "p99 {} > SLO {}",
                fmt_us(o.p99_us),
                fmt_us(self.slo_p99_us)
            ));
        }
        if o.requests > 0 && error_ratio(o) > self.max_error_ratio {
            reasons.push(format!(
                "errors {:.2}% > {}% ({} of {})",
                error_ratio(o) * 100.0,
                self.max_error_ratio * 100.0,
                o.errors,
                o.requests
            ));
        }
        reasons
    }
}

/// Why a step in which the generator lagged still failed by the service's doing, if it did: the
/// service ran out of CPU. It used at least [`SERVICE_CPU_FULL`] of its CPUs at the rate it got,
/// and at that cost per request the target rate needs all of them or more, so the service could
/// not have served it, whatever the generator did.
fn service_out_of_cpu(o: &Observation, misses: &[String]) -> Option<String> {
    let cpu = o.service_cpu?;
    let needed = cpu * o.rate_target / o.rate_achieved.max(1.0);
    (!misses.is_empty() && cpu >= SERVICE_CPU_FULL && needed >= 1.0).then(|| {
        format!(
            "the generator lagged, but the service used {:.0}% of its CPUs at {} req/s: the target \
             needs {:.0}% of them at that cost per request, so the service ran out of CPU and the miss \
             is the service's",
            cpu * 100.0,
            fmt_rate(o.rate_achieved),
            needed * 100.0
        )
    })
}

fn achieved_ratio(o: &Observation) -> f64 {
    if o.rate_target > 0.0 {
        o.rate_achieved / o.rate_target
    } else {
        0.0
    }
}

fn error_ratio(o: &Observation) -> f64 {
    if o.requests > 0 {
        o.errors as f64 / o.requests as f64
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Observation = Observation {
        rate_target: 1000.0,
        rate_achieved: 995.0,
        requests: 10_000,
        errors: 10,
        p99_us: 9_000,
        generator_saturated: false,
        generator_delay_us: 0,
        own_delay_max_us: None,
        service_cpu: None,
        host_steal: None,
    };

    #[test]
    fn each_criterion_fails_a_step() {
        let c = Criteria::new(Duration::from_millis(10));
        assert_eq!(c.judge(&OK).outcome, StepOutcome::Pass);
        let slow = Observation {
            p99_us: 10_001,
            ..OK
        };
        assert_eq!(c.judge(&slow).outcome, StepOutcome::Fail);
        assert!(c.judge(&slow).reasons[0].contains("p99"));
        let short = Observation {
            rate_achieved: 989.0,
            ..OK
        };
        assert!(c.judge(&short).reasons[0].contains("achieved"));
        let errors = Observation { errors: 11, ..OK };
        assert!(c.judge(&errors).reasons[0].contains("errors"));
        let empty = Observation {
            requests: 0,
            errors: 0,
            ..OK
        };
        assert_eq!(c.judge(&empty).outcome, StepOutcome::Fail);
    }

    #[test]
    fn a_p99_miss_smaller_than_the_generator_s_own_delays_is_inconclusive() {
        let c = Criteria::new(Duration::from_millis(10));
        let close = Observation {
            p99_us: 10_300,
            generator_delay_us: 2_100,
            ..OK
        };
        let v = c.judge(&close);
        assert_eq!(v.outcome, StepOutcome::Inconclusive);
        assert!(v.reasons[0].contains("generator's own delays"), "{v:?}");
        // Missed by more than the generator's delays: the service's.
        let far = Observation {
            p99_us: 12_500,
            ..close
        };
        assert_eq!(c.judge(&far).outcome, StepOutcome::Fail);
        // A miss of another criterion as well is not explained by the delays.
        let short = Observation {
            rate_achieved: 900.0,
            ..close
        };
        assert_eq!(c.judge(&short).outcome, StepOutcome::Fail);
    }

    #[test]
    fn a_p99_miss_smaller_than_the_generator_s_largest_own_delay_is_inconclusive() {
        let c = Criteria::new(Duration::from_millis(10));
        // The 45,300 req/s step of 2026-12-02 10:17: linkr at 54% of its CPU, the generator's
        // own delays 323 µs at p99 and 31.9 ms at most (one stall), corrected p99 19 ms.
        let stalled = Observation {
            rate_target: 45_300.0,
            rate_achieved: 45_280.0,
            requests: 135_840,
            errors: 0,
            p99_us: 19_000,
            generator_saturated: false,
            generator_delay_us: 323,
            own_delay_max_us: Some(31_900),
            service_cpu: Some(0.54),
            host_steal: Some(0.004),
        };
        let v = c.judge(&stalled);
        assert_eq!(v.outcome, StepOutcome::Inconclusive, "{v:?}");
        assert!(
            v.reasons[0].contains("largest own delay (31.9 ms)"),
            "{v:?}"
        );
        // Missed by more than the stall: the service's.
        let far = Observation {
            p99_us: 45_000,
            ..stalled
        };
        assert_eq!(c.judge(&far).outcome, StepOutcome::Fail);
        // The lag not measured request by request: no bound, the service's.
        let unbounded = Observation {
            own_delay_max_us: None,
            ..stalled
        };
        assert_eq!(c.judge(&unbounded).outcome, StepOutcome::Fail);
        // Another criterion missed as well: the service's.
        let short = Observation {
            rate_achieved: 40_000.0,
            ..stalled
        };
        assert_eq!(c.judge(&short).outcome, StepOutcome::Fail);
        // The service out of CPU: its miss, whatever the generator's stall.
        let full = Observation {
            rate_achieved: 45_000.0,
            service_cpu: Some(1.0),
            ..stalled
        };
        let v = c.judge(&full);
        assert_eq!(v.outcome, StepOutcome::Fail, "{v:?}");
        assert!(v.reasons[1].contains("ran out of CPU"), "{v:?}");
        // A pass is still a pass.
        let met = Observation {
            p99_us: 9_000,
            ..stalled
        };
        assert_eq!(c.judge(&met).outcome, StepOutcome::Pass);
    }

    #[test]
    fn a_lagging_generator_s_step_fails_only_when_its_largest_own_delay_cannot_explain_the_miss() {
        let c = Criteria::new(Duration::from_millis(10));
        // A knee step against linkr at 139,000 req/s: the generator at 94% CPU, own lag p99
        // 1.6 ms and at most 9.0 ms, corrected p99 27.6 ms.
        let lagged = Observation {
            generator_saturated: true,
            p99_us: 27_600,
            own_delay_max_us: Some(8_959),
            ..OK
        };
        let v = c.judge(&lagged);
        assert_eq!(v.outcome, StepOutcome::Fail, "{v:?}");
        assert!(v.reasons[0].contains("p99 27.6 ms > SLO 10 ms"), "{v:?}");
        assert!(v.reasons[1].contains("the miss is the service's"), "{v:?}");
        // Its largest delay could account for the miss: the generator's step.
        let close = Observation {
            own_delay_max_us: Some(17_700),
            ..lagged
        };
        assert_eq!(c.judge(&close).outcome, StepOutcome::Inconclusive);
        // A pass stays inconclusive: a lagging generator never certifies a rate.
        let met = Observation {
            p99_us: 8_000,
            ..lagged
        };
        assert_eq!(c.judge(&met).outcome, StepOutcome::Inconclusive);
        // The rate was not sent, or the lag was not measured request by request.
        let short = Observation {
            rate_achieved: 900.0,
            ..lagged
        };
        assert_eq!(c.judge(&short).outcome, StepOutcome::Inconclusive);
        let unmeasured = Observation {
            own_delay_max_us: None,
            ..lagged
        };
        assert_eq!(c.judge(&unmeasured).outcome, StepOutcome::Inconclusive);
    }

    #[test]
    fn a_lagging_generator_s_step_fails_when_the_service_ran_out_of_cpu() {
        let c = Criteria::new(Duration::from_millis(10));
        // The generator at 98% CPU sent 114,907 of 133,000 req/s; the service used 97% of its
        // core for those, so 133,000 needs 112% of it.
        let lagged = Observation {
            rate_target: 133_000.0,
            rate_achieved: 114_907.0,
            requests: 919_256,
            errors: 0,
            p99_us: 1_081_343,
            generator_saturated: true,
            generator_delay_us: 2_633,
            own_delay_max_us: Some(9_799),
            service_cpu: Some(0.97),
            host_steal: None,
        };
        let v = c.judge(&lagged);
        assert_eq!(v.outcome, StepOutcome::Fail, "{v:?}");
        assert!(v.reasons[0].contains("achieved"), "{v:?}");
        assert!(
            v.reasons.last().unwrap().contains("used 97% of its CPUs")
                && v.reasons.last().unwrap().contains("needs 112%"),
            "{v:?}"
        );
        // The service with CPU to spare: the generator's step.
        let spare = Observation {
            service_cpu: Some(0.80),
            ..lagged
        };
        assert_eq!(c.judge(&spare).outcome, StepOutcome::Inconclusive);
        // Busy, but the target is within what it did: a lagging generator may be why it missed.
        let within = Observation {
            rate_achieved: 133_000.0,
            p99_us: 12_000,
            service_cpu: Some(0.96),
            ..lagged
        };
        assert_eq!(c.judge(&within).outcome, StepOutcome::Inconclusive);
        // Nothing missed: a lagging generator still passes nothing.
        let met = Observation {
            rate_achieved: 133_000.0,
            p99_us: 8_000,
            service_cpu: Some(1.0),
            ..lagged
        };
        assert_eq!(c.judge(&met).outcome, StepOutcome::Inconclusive);
    }

    #[test]
    fn a_saturated_step_is_inconclusive_whether_it_met_the_objective_or_not() {
        let c = Criteria::new(Duration::from_millis(10));
        let saturated = Observation {
            generator_saturated: true,
            ..OK
        };
        let v = c.judge(&saturated);
        assert_eq!(v.outcome, StepOutcome::Inconclusive);
        assert!(!v.passed());
        // Its figures met the objective all the same (what the search's retry of a failure
        // below it asks).
        assert!(c.met_objective(&saturated));
        let slow = Observation {
            p99_us: 50_000,
            ..saturated
        };
        let v = c.judge(&slow);
        assert_eq!(v.outcome, StepOutcome::Inconclusive);
        assert!(v.reasons[1].contains("also p99"), "{v:?}");
        assert!(!c.met_objective(&slow));
    }
}
