//! `loadgen compare BASE.json NEW.json`: throughput, and latency at a rate both runs measured,
//! from two `run --json` results or two knee `summary.json` files.
//!
//! Latency is compared only at one rate: a p99 measured at a higher rate is not worse for being
//! higher. For knee summaries that rate is the base's knee: the new run's p99 there is its step
//! at that rate, or interpolated between the steps around it (inconclusive steps, where the
//! generator lagged, are left out). When the new run measured nothing around it, the new knee is
//! tried against the base's curve; failing both, latency is not compared and the output says so.
//! Two runs compare latency only when they ran at the same target rate.

use std::path::Path;

use serde_json::Value;

use crate::error::LoadgenError;

/// Two rates within this fraction of each other are the same rate.
pub const SAME_RATE: f64 = 0.005;

/// What is compared, read from either kind of file.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub kind: Kind,
    /// Knee rate, or the achieved rate of a run (req/s): higher is better.
    pub rate: f64,
    /// The rate its headline p99 was measured at: the knee, or the run's target rate.
    pub p99_rate: f64,
    /// p99 (µs) by target rate, ascending, from the steps the generator kept up with.
    pub curve: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Knee,
    Run,
}

/// A p99 read off a curve, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub p99_us: f64,
    pub how: How,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum How {
    /// A step at this rate.
    Measured(f64),
    /// Between the steps at these two rates.
    Interpolated(f64, f64),
}

impl Figures {
    /// Reads a knee summary (`{"knee":{"rate","p99_us"},"steps":[...]}`) or a run result
    /// (`{"rate_target","rate_achieved","latency_us":{"p99"},...}`).
    pub fn from_json(v: &Value) -> Result<Self, String> {
        if let Some(knee) = v.get("knee") {
            let rate = knee.get("rate").and_then(Value::as_f64);
            let p99 = knee.get("p99_us").and_then(Value::as_f64);
            let (Some(rate), Some(p99)) = (rate, p99) else {
                return Err(
                    "a knee summary without knee.rate and knee.p99_us (no knee found?)".into(),
                );
            };
            let steps = v.get("steps").and_then(Value::as_array);
            let mut curve: Vec<(f64, f64)> = steps
                .into_iter()
                .flatten()
                .filter(|s| judged(s))
                .filter_map(|s| Some((s.get("rate_target")?.as_f64()?, step_p99(s)?)))
                .collect();
            if !curve.iter().any(|(r, _)| same_rate(*r, rate)) {
                curve.push((rate, p99));
            }
            return Ok(Self {
                kind: Kind::Knee,
                rate,
                p99_rate: rate,
                curve: sorted(curve),
            });
        }
        let achieved = v.get("rate_achieved").and_then(Value::as_f64);
        let p99 = step_p99(v);
        match (achieved, p99) {
            (Some(rate), Some(p99)) => {
                let target = v.get("rate_target").and_then(Value::as_f64).unwrap_or(rate);
                Ok(Self {
                    kind: Kind::Run,
                    rate,
                    p99_rate: target,
                    curve: vec![(target, p99)],
                })
            }
            _ => Err(
                "neither a knee summary (knee.rate) nor a run result (rate_achieved, latency_us.p99)"
                    .into(),
            ),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, LoadgenError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadgenError::file(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| LoadgenError::Usage(format!("{}: not JSON: {e}", path.display())))?;
        Self::from_json(&v).map_err(|e| LoadgenError::Usage(format!("{}: {e}", path.display())))
    }

    /// The p99 at `rate`: a step there, or interpolated between the steps around it.
    pub fn p99_at(&self, rate: f64) -> Option<Reading> {
        if let Some(&(r, p)) = self.curve.iter().rev().find(|(r, _)| same_rate(*r, rate)) {
            return Some(Reading {
                p99_us: p,
                how: How::Measured(r),
            });
        }
        let hi = self.curve.iter().position(|(r, _)| *r > rate)?;
        let (r1, p1) = *self.curve.get(hi.checked_sub(1)?)?;
        let (r2, p2) = self.curve[hi];
        Some(Reading {
            p99_us: p1 + (p2 - p1) * (rate - r1) / (r2 - r1),
            how: How::Interpolated(r1, r2),
        })
    }
}

/// A step the generator kept up with (not inconclusive, not flagged saturated).
fn judged(step: &Value) -> bool {
    match step.get("outcome").and_then(Value::as_str) {
        Some(o) => o != "inconclusive",
        None => step.get("generator_saturated") != Some(&Value::Bool(true)),
    }
}

fn step_p99(step: &Value) -> Option<f64> {
    step.get("latency_us")?.get("p99")?.as_f64()
}

fn same_rate(a: f64, b: f64) -> bool {
    (a - b).abs() <= SAME_RATE * a.abs().max(b.abs())
}

fn sorted(mut curve: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    curve
}

/// The throughput row.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRow {
    pub name: &'static str,
    pub base: f64,
    pub new: f64,
    /// Change in percent, signed so that positive is worse.
    pub worse_pct: f64,
    pub regressed: bool,
}

/// The latency row: both p99s at one rate, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum LatencyRow {
    Compared {
        rate: f64,
        base: Reading,
        new: Reading,
        worse_pct: f64,
        regressed: bool,
    },
    NotCompared {
        why: String,
    },
}

/// The comparison of `new` against `base`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub rate: RateRow,
    pub latency: LatencyRow,
}

impl Comparison {
    pub fn regressed(&self) -> bool {
        self.rate.regressed
            || matches!(
                self.latency,
                LatencyRow::Compared {
                    regressed: true,
                    ..
                }
            )
    }

    /// A table for the terminal.
    pub fn render(&self, max_regression_pct: f64) -> String {
        let verdict = |regressed: bool| {
            if regressed && max_regression_pct < 0.0 {
                format!(
                    "REGRESSION (not better by at least {}%)",
                    -max_regression_pct
                )
            } else if regressed {
                format!("REGRESSION (worse by more than {max_regression_pct}%)")
            } else {
                "ok".into()
            }
        };
        let r = &self.rate;
        let mut out = format!("{:<22} {:>30} {:>30} {:>9}\n", "", "base", "new", "change");
        out.push_str(&format!(
            "{:<22} {:>30} {:>30} {:>+8.1}%  {}\n",
            r.name,
            per_s(r.base),
            per_s(r.new),
            -r.worse_pct,
            verdict(r.regressed)
        ));
        match &self.latency {
            LatencyRow::Compared {
                rate,
                base,
                new,
                worse_pct,
                regressed,
            } => out.push_str(&format!(
                "{:<22} {:>30} {:>30} {worse_pct:>+8.1}%  {}\n",
                format!("p99 at {}", per_s(*rate)),
                reading(base),
                reading(new),
                verdict(*regressed)
            )),
            LatencyRow::NotCompared { why } => {
                out.push_str(&format!("{:<22} not compared: {why}\n", "p99"));
            }
        }
        out
    }
}

fn per_s(r: f64) -> String {
    format!("{r:.1}/s")
}

fn reading(r: &Reading) -> String {
    let ms = format!("{:.3} ms", r.p99_us / 1000.0);
    match r.how {
        How::Measured(at) => format!("{ms} (at {})", per_s(at)),
        How::Interpolated(lo, hi) => format!("{ms} (interp. {}-{})", lo.round(), hi.round()),
    }
}

/// Worse by more than `max_regression_pct`: the rate fell, or the p99 at a common rate grew, by
/// more than that.
pub fn compare(
    base: &Figures,
    new: &Figures,
    max_regression_pct: f64,
) -> Result<Comparison, LoadgenError> {
    if base.kind != new.kind {
        return Err(LoadgenError::Usage(
            "cannot compare a knee summary with a run result: give two of the same kind".into(),
        ));
    }
    let rate_worse = worse_pct(base.rate, new.rate, true);
    let rate = RateRow {
        name: if base.kind == Kind::Knee {
            "knee rate"
        } else {
            "rate"
        },
        base: base.rate,
        new: new.rate,
        worse_pct: rate_worse,
        regressed: rate_worse > max_regression_pct,
    };
    Ok(Comparison {
        rate,
        latency: latency(base, new, max_regression_pct),
    })
}

fn latency(base: &Figures, new: &Figures, max_regression_pct: f64) -> LatencyRow {
    let at = |rate: f64| Some((rate, base.p99_at(rate)?, new.p99_at(rate)?));
    let common = match base.kind {
        Kind::Knee => at(base.p99_rate).or_else(|| at(new.p99_rate)),
        Kind::Run if same_rate(base.p99_rate, new.p99_rate) => at(base.p99_rate),
        Kind::Run => None,
    };
    let Some((rate, b, n)) = common else {
        return LatencyRow::NotCompared {
            why: match base.kind {
                Kind::Knee => format!(
                    "no rate measured by both runs around either knee (base steps {}, new steps {})",
                    span(&base.curve),
                    span(&new.curve)
                ),
                Kind::Run => format!(
                    "the runs were at different rates ({} and {})",
                    per_s(base.p99_rate),
                    per_s(new.p99_rate)
                ),
            },
        };
    };
    let worse = worse_pct(b.p99_us, n.p99_us, false);
    LatencyRow::Compared {
        rate,
        base: b,
        new: n,
        worse_pct: worse,
        regressed: worse > max_regression_pct,
    }
}

fn span(curve: &[(f64, f64)]) -> String {
    match (curve.first(), curve.last()) {
        (Some(lo), Some(hi)) => format!("{}-{}", per_s(lo.0), per_s(hi.0)),
        _ => "none".into(),
    }
}

/// The change from `b` to `n` in percent, positive when worse.
fn worse_pct(b: f64, n: f64, higher_is_better: bool) -> f64 {
    if b == 0.0 {
        return 0.0;
    }
    let pct = (n - b) / b * 100.0;
    if higher_is_better { -pct } else { pct }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(rate: f64, p99: u64) -> Figures {
        Figures::from_json(
            &json!({"rate_target": rate, "rate_achieved": rate, "latency_us": {"p99": p99}}),
        )
        .unwrap()
    }

    fn step(rate: f64, p99: u64, outcome: &str) -> Value {
        json!({"rate_target": rate, "latency_us": {"p99": p99}, "outcome": outcome})
    }

    fn knee(rate: f64, p99: u64, steps: Vec<Value>) -> Figures {
        Figures::from_json(&json!({"knee": {"rate": rate, "p99_us": p99}, "steps": steps})).unwrap()
    }

    #[test]
    fn reads_both_kinds() {
        let k = knee(1000.0, 900, vec![]);
        assert_eq!(k.kind, Kind::Knee);
        assert_eq!(k.curve, vec![(1000.0, 900.0)]);
        assert_eq!(run(10.0, 5).kind, Kind::Run);
        assert!(Figures::from_json(&json!({"knee": null})).is_err());
        assert!(Figures::from_json(&json!({"x": 1})).is_err());
    }

    #[test]
    fn regression_when_rate_falls_or_p99_grows_past_the_threshold() {
        let c = compare(&run(1000.0, 1000), &run(1000.0, 1080), 10.0).unwrap();
        assert!(!c.regressed(), "{c:?}");
        let c = compare(&run(1000.0, 1000), &run(1000.0, 1200), 10.0).unwrap();
        assert!(c.regressed());
        let c = compare(&run(1000.0, 1000), &run(1000.0, 100), 0.0).unwrap();
        assert!(!c.regressed());
        assert!(c.render(0.0).contains("ok"));
    }

    #[test]
    fn a_better_knee_is_not_a_latency_regression_for_its_higher_p99() {
        // the case: knee 30,600 -> 47,300 req/s, p99 at the knees 4.0 -> 8.8 ms
        let base = knee(
            30_600.0,
            4_000,
            vec![
                step(16_000.0, 900, "pass"),
                step(30_600.0, 4_000, "pass"),
                step(32_000.0, 25_000, "fail"),
            ],
        );
        let new = knee(
            47_300.0,
            8_800,
            vec![
                step(16_000.0, 700, "pass"),
                step(32_000.0, 1_900, "pass"),
                step(47_300.0, 8_800, "pass"),
                step(64_000.0, 90_000, "fail"),
            ],
        );
        let c = compare(&base, &new, 10.0).unwrap();
        assert!(!c.regressed(), "{c:?}");
        let LatencyRow::Compared {
            rate, base, new, ..
        } = c.latency
        else {
            panic!("{c:?}")
        };
        assert_eq!(rate, 30_600.0);
        assert_eq!(base.how, How::Measured(30_600.0));
        assert_eq!(new.how, How::Interpolated(16_000.0, 32_000.0));
        assert!((new.p99_us - (700.0 + 1_200.0 * 14_600.0 / 16_000.0)).abs() < 1e-6);
        assert_eq!(reading(&base), "4.000 ms (at 30600.0/s)");
        assert!(
            reading(&new).contains("interp. 16000-32000"),
            "{}",
            reading(&new)
        );
    }

    #[test]
    fn a_worse_curve_at_the_base_knee_is_a_regression() {
        let base = knee(10_000.0, 2_000, vec![step(5_000.0, 800, "pass")]);
        let new = knee(
            10_000.0,
            2_000,
            vec![
                step(5_000.0, 800, "pass"),
                step(10_000.0, 3_000, "pass"),
                step(11_000.0, 20_000, "fail"),
            ],
        );
        assert!(compare(&base, &new, 10.0).unwrap().regressed());
    }

    #[test]
    fn inconclusive_steps_are_not_on_the_curve() {
        let k = knee(
            10_000.0,
            2_000,
            vec![
                step(10_000.0, 2_000, "pass"),
                step(12_000.0, 90_000, "inconclusive"),
                json!({"rate_target": 14_000.0, "latency_us": {"p99": 1}, "generator_saturated": true}),
            ],
        );
        assert_eq!(k.curve, vec![(10_000.0, 2_000.0)]);
    }

    #[test]
    fn no_common_rate_means_no_latency_verdict() {
        let base = knee(10_000.0, 2_000, vec![]);
        let new = knee(20_000.0, 3_000, vec![]);
        let c = compare(&base, &new, 10.0).unwrap();
        assert!(matches!(c.latency, LatencyRow::NotCompared { .. }), "{c:?}");
        assert!(!c.regressed());
        assert!(c.render(10.0).contains("not compared"));
        let c = compare(&run(1000.0, 1000), &run(2000.0, 5000), 10.0).unwrap();
        assert!(c.render(10.0).contains("different rates"), "{c:?}");
    }

    #[test]
    fn kinds_must_match() {
        assert!(matches!(
            compare(&knee(1.0, 1, vec![]), &run(1.0, 1), 5.0),
            Err(LoadgenError::Usage(_))
        ));
    }
}
