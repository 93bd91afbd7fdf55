//! What a knee run prints while it runs (stderr): a line per step and per recovery probe.

use std::io::IsTerminal;
use std::time::Duration;

use super::recovery::Probe;
use super::step::StepRecord;
use crate::driver;
use crate::report::{Percentiles, fmt_rate, fmt_us};

pub struct Progress {
    live: bool,
    max_steps: u32,
}

impl Progress {
    /// On a terminal the driver's own live line (sent, rate, running p99) runs during each step;
    /// elsewhere (CI, files) only one plain line per step is printed.
    pub fn new(max_steps: u32) -> Self {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        let live = std::io::stderr().is_terminal() && !ci;
        driver::set_progress(live);
        Self { live, max_steps }
    }

    pub fn start(&self, n: usize, rate: f64, duration: Duration) {
        if self.live {
            eprintln!(
                "step {n}/{}: {} req/s for {:.0?}",
                self.max_steps,
                fmt_rate(rate),
                duration
            );
        }
    }

    pub fn finish(&self, r: &StepRecord) {
        let c = Percentiles::of(&r.corrected);
        let u = Percentiles::of(&r.uncorrected);
        let o = &r.observation;
        let verdict = if r.verdict.passed() {
            "pass".to_string()
        } else {
            format!(
                "{}: {}",
                r.verdict.outcome.as_str().to_uppercase(),
                r.verdict.reasons.join("; ")
            )
        };
        eprintln!(
            "step {}/{}: target {} req/s, achieved {}, p99 {} (uncorrected {}), errors {}{}{}{} -> {verdict}",
            r.index,
            self.max_steps,
            fmt_rate(o.rate_target),
            fmt_rate(o.rate_achieved),
            fmt_us(c.p99),
            fmt_us(u.p99),
            o.errors,
            o.service_cpu.map_or(String::new(), |c| format!(
                ", service CPU {:.0}%",
                c * 100.0
            )),
            if o.generator_saturated {
                ", generator saturated"
            } else {
                ""
            },
            steal_shown(o.host_steal),
        );
    }

    pub fn probe(&self, after: &str, n: usize, p: &Probe, limit_us: u64) {
        eprintln!(
            "recovery {after}: probe {n} after {:.2} s quiet, {} req/s: p99 {} (limit {}), errors {} -> {}",
            p.quiet_s,
            fmt_rate(p.rate),
            fmt_us(p.p99_us),
            fmt_us(limit_us),
            p.errors,
            if p.recovered { "recovered" } else { "not yet" }
        );
    }
}

/// ", host steal 3.1%" when the host took a notable share of a CPU during the step.
fn steal_shown(steal: Option<f64>) -> String {
    match steal {
        Some(s) if s >= crate::host_steal::NOTABLE => format!(", host steal {:.1}%", s * 100.0),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notable_steal_is_shown_and_the_rest_left_out() {
        assert_eq!(steal_shown(Some(0.031)), ", host steal 3.1%");
        assert_eq!(steal_shown(Some(0.002)), "");
        assert_eq!(steal_shown(None), "");
    }
}
