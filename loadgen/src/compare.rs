//! `loadgen compare BASE.json NEW.json`: throughput and p99 side by side, from two `run --json`
//! results or two knee `summary.json` files.

use std::path::Path;

use serde_json::Value;

use crate::error::LoadgenError;

/// The two figures compared, read from either kind of file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    pub kind: Kind,
    /// Knee rate, or the achieved rate of a run (req/s): higher is better.
    pub rate: f64,
    /// p99 at the knee, or the run's corrected p99 (µs): lower is better.
    pub p99_us: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Knee,
    Run,
}

impl Figures {
    /// Reads a knee summary (`{"knee":{"rate","p99_us"},...}`) or a run result
    /// (`{"rate_achieved", "latency_us":{"p99"},...}`).
    pub fn from_json(v: &Value) -> Result<Self, String> {
        if let Some(knee) = v.get("knee") {
            let rate = knee.get("rate").and_then(Value::as_f64);
            let p99 = knee.get("p99_us").and_then(Value::as_f64);
            return match (rate, p99) {
                (Some(rate), Some(p99_us)) => Ok(Self {
                    kind: Kind::Knee,
                    rate,
                    p99_us,
                }),
                _ => {
                    Err("a knee summary without knee.rate and knee.p99_us (no knee found?)".into())
                }
            };
        }
        let rate = v.get("rate_achieved").and_then(Value::as_f64);
        let p99 = v
            .get("latency_us")
            .and_then(|l| l.get("p99"))
            .and_then(Value::as_f64);
        match (rate, p99) {
            (Some(rate), Some(p99_us)) => Ok(Self { kind: Kind::Run, rate, p99_us }),
            _ => Err("neither a knee summary (knee.rate) nor a run result (rate_achieved, latency_us.p99)".into()),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, LoadgenError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadgenError::file(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| LoadgenError::Usage(format!("{}: not JSON: {e}", path.display())))?;
        Self::from_json(&v).map_err(|e| LoadgenError::Usage(format!("{}: {e}", path.display())))
    }
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: &'static str,
    pub base: f64,
    pub new: f64,
    /// Change in percent, signed so that positive is worse.
    pub worse_pct: f64,
    pub regressed: bool,
}

/// The comparison of `new` against `base` with a tolerance of `max_regression_pct`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub rows: Vec<Row>,
}

impl Comparison {
    pub fn regressed(&self) -> bool {
        self.rows.iter().any(|r| r.regressed)
    }

    /// A table for the terminal.
    pub fn render(&self, max_regression_pct: f64) -> String {
        let mut out = format!("{:<10} {:>14} {:>14} {:>9}\n", "", "base", "new", "change");
        for r in &self.rows {
            let (base, new) = match r.name {
                "p99" => (ms(r.base), ms(r.new)),
                _ => (format!("{:.1}/s", r.base), format!("{:.1}/s", r.new)),
            };
            let change = if r.name == "p99" {
                r.worse_pct
            } else {
                -r.worse_pct
            };
            let verdict = if r.regressed {
                format!("REGRESSION (worse by more than {max_regression_pct}%)")
            } else {
                "ok".into()
            };
            out.push_str(&format!(
                "{:<10} {base:>14} {new:>14} {change:>+8.1}%  {verdict}\n",
                r.name
            ));
        }
        out
    }
}

fn ms(us: f64) -> String {
    format!("{:.3} ms", us / 1000.0)
}

/// Worse by more than `max_regression_pct`: the rate fell, or the p99 grew, by more than that.
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
    let rate_name = if base.kind == Kind::Knee {
        "knee rate"
    } else {
        "rate"
    };
    let worse = |b: f64, n: f64, higher_is_better: bool| {
        if b == 0.0 {
            return 0.0;
        }
        let pct = (n - b) / b * 100.0;
        if higher_is_better { -pct } else { pct }
    };
    let rate_worse = worse(base.rate, new.rate, true);
    let p99_worse = worse(base.p99_us, new.p99_us, false);
    Ok(Comparison {
        rows: vec![
            Row {
                name: rate_name,
                base: base.rate,
                new: new.rate,
                worse_pct: rate_worse,
                regressed: rate_worse > max_regression_pct,
            },
            Row {
                name: "p99",
                base: base.p99_us,
                new: new.p99_us,
                worse_pct: p99_worse,
                regressed: p99_worse > max_regression_pct,
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(rate: f64, p99: u64) -> Figures {
        Figures::from_json(&json!({"rate_achieved": rate, "latency_us": {"p99": p99}})).unwrap()
    }

    #[test]
    fn reads_both_kinds() {
        let k = Figures::from_json(&json!({"knee": {"rate": 1000.0, "p99_us": 900}, "steps": []}))
            .unwrap();
        assert_eq!(
            k,
            Figures {
                kind: Kind::Knee,
                rate: 1000.0,
                p99_us: 900.0
            }
        );
        assert_eq!(run(10.0, 5).kind, Kind::Run);
        assert!(Figures::from_json(&json!({"knee": null})).is_err());
        assert!(Figures::from_json(&json!({"x": 1})).is_err());
    }

    #[test]
    fn regression_when_rate_falls_or_p99_grows_past_the_threshold() {
        let c = compare(&run(1000.0, 1000), &run(950.0, 1080), 10.0).unwrap();
        assert!(!c.regressed(), "{c:?}");
        let c = compare(&run(1000.0, 1000), &run(850.0, 1000), 10.0).unwrap();
        assert!(c.regressed());
        let c = compare(&run(1000.0, 1000), &run(1000.0, 1200), 10.0).unwrap();
        assert!(c.regressed());
        // Better is never a regression.
        let c = compare(&run(1000.0, 1000), &run(3000.0, 100), 0.0).unwrap();
        assert!(!c.regressed());
        assert!(c.render(0.0).contains("ok"));
    }

    #[test]
    fn kinds_must_match() {
        let k = Figures {
            kind: Kind::Knee,
            rate: 1.0,
            p99_us: 1.0,
        };
        assert!(matches!(
            compare(&k, &run(1.0, 1), 5.0),
            Err(LoadgenError::Usage(_))
        ));
    }
}
