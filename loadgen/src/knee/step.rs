//! One executed step of the search: what the driver measured, the verdict, its histogram files,
//! and the recovery probes that followed it.

use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::judge::{Criteria, Observation, StepOutcome, Verdict};
use super::recovery::Recovery;
use crate::driver::StepResult;
use crate::error::LoadgenError;
use crate::report::{Percentiles, ProbeView, RecoveryView, StepView};
use crate::stats::write_hgrm;

/// One executed step with everything the report needs.
pub struct StepRecord {
    pub index: usize,
    pub observation: Observation,
    pub verdict: Verdict,
    /// The driver's run object (as `loadgen run --json` writes it), extended with the step's
    /// number, outcome, file names and, once run, the recovery probes after it.
    pub run: Value,
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
    pub hgrm: String,
    pub hgrm_uncorrected: String,
    pub goose_report: Option<String>,
    /// Why the generator counted itself saturated (the driver's evidence).
    pub saturation: Option<String>,
    /// The drain and probes after this step (after a step that did not pass).
    pub recovery: Option<Recovery>,
}

/// The figures of `r` that decide its outcome.
pub fn observe(r: &StepResult) -> Observation {
    Observation {
        rate_target: r.rate_target,
        rate_achieved: r.rate_achieved,
        requests: r.requests,
        errors: r.errors,
        p99_us: p99(&r.corrected),
        generator_saturated: r.generator_saturated,
        // Its own send lag. Its read delay is not in the latency: with the kernel's receive
        // timestamps (the only source of a read delay) a response ends when it arrived, and a
        // late read that held a connection counts in the own lag.
        generator_delay_us: r.generator_lag_us.p99,
        own_delay_max_us: r.own_lag_bounds_latency.then_some(r.generator_lag_us.max),
        service_cpu: r.service_cpu,
        host_steal: r.host_steal,
    }
}

/// The corrected p99 of a histogram, 0 when it is empty.
pub fn p99(h: &Histogram<u64>) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(0.99)
    }
}

/// The driver's run object of `r`.
pub fn run_object(r: &StepResult) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

/// Judges `result`, writes its histograms into `out` as `STEM.hgrm` and `STEM.uncorrected.hgrm`.
pub fn record_step(
    index: usize,
    stem: &str,
    result: StepResult,
    criteria: &Criteria,
    out: &Path,
    goose_report: Option<String>,
) -> Result<StepRecord, LoadgenError> {
    let observation = observe(&result);
    let mut verdict = criteria.judge(&observation);
    if let (StepOutcome::Inconclusive, Some(why), Some(first)) = (
        verdict.outcome,
        &result.saturation,
        verdict.reasons.first_mut(),
    ) {
        *first = format!("{first} ({why})");
    }
    let hgrm = format!("{stem}.hgrm");
    let hgrm_uncorrected = format!("{stem}.uncorrected.hgrm");
    for (h, name) in [
        (&result.corrected, &hgrm),
        (&result.uncorrected, &hgrm_uncorrected),
    ] {
        let path = out.join(name);
        write_hgrm(h, &path).map_err(|e| LoadgenError::File { path, source: e })?;
    }
    let mut run = run_object(&result);
    if let Value::Object(m) = &mut run {
        m.insert("step".into(), json!(index));
        m.insert("pass".into(), json!(verdict.passed()));
        m.insert("outcome".into(), json!(verdict.outcome));
        m.insert("reasons".into(), json!(verdict.reasons));
        m.insert("hgrm".into(), json!(hgrm));
        m.insert("hgrm_uncorrected".into(), json!(hgrm_uncorrected));
        if let Some(g) = &goose_report {
            m.insert("goose_report".into(), json!(g));
        }
    }
    Ok(StepRecord {
        index,
        observation,
        verdict,
        run,
        saturation: result.saturation.clone(),
        corrected: result.corrected,
        uncorrected: result.uncorrected,
        hgrm,
        hgrm_uncorrected,
        goose_report,
        recovery: None,
    })
}

impl StepRecord {
    /// Attaches the recovery that followed this step (also to its run object).
    pub fn set_recovery(&mut self, recovery: Recovery) {
        if let Value::Object(m) = &mut self.run {
            m.insert("recovery".into(), json!(recovery));
        }
        self.recovery = Some(recovery);
    }

    pub fn view(&self) -> StepView {
        let status = self
            .run
            .get("status")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        StepView {
            index: self.index,
            rate_target: self.observation.rate_target,
            rate_achieved: self.observation.rate_achieved,
            requests: self.observation.requests,
            errors: self.observation.errors,
            status,
            corrected: Percentiles::of(&self.corrected),
            uncorrected: Percentiles::of(&self.uncorrected),
            generator_saturated: self.observation.generator_saturated,
            generator_cpu: self.run.get("generator_cpu").and_then(Value::as_f64),
            service_cpu: self.observation.service_cpu,
            pass: self.verdict.passed(),
            inconclusive: self.verdict.outcome == StepOutcome::Inconclusive,
            reasons: self.verdict.reasons.clone(),
            hgrm: self.hgrm.clone(),
            hgrm_uncorrected: self.hgrm_uncorrected.clone(),
            goose_report: self.goose_report.clone(),
            workers: self
                .run
                .get("workers")
                .and_then(|w| serde_json::from_value(w.clone()).ok())
                .unwrap_or_default(),
            recovery: self.recovery.as_ref().map(Recovery::view),
        }
    }
}

impl Recovery {
    pub fn view(&self) -> RecoveryView {
        RecoveryView {
            limit_us: self.limit_us,
            recovered: self.recovered,
            probes: self
                .probes
                .iter()
                .map(|p| ProbeView {
                    rate: p.rate,
                    quiet_s: p.quiet_s,
                    p99_us: p.p99_us,
                    errors: p.errors,
                    requests: p.requests,
                    recovered: p.recovered,
                })
                .collect(),
        }
    }
}
