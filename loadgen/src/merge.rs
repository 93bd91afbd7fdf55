//! `loadgen merge`: segments of one step (see [`crate::segment`]) into one result, exactly: the
//! histograms are added (HdrHistogram `add`, same settings everywhere), the counts summed. The
//! merged result has the same JSON fields as a single process's, plus `workers`: each worker's
//! achieved rate, send lag and saturation. Saturation is judged per worker (each against its own
//! share of the rate): one saturated worker makes the merged step saturated.
//!
//! Segments that do not belong together are refused: another schedule (seed, rate, duration,
//! arrival, length, start), scenario or target, a different worker count, a missing or a
//! doubled segment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::driver::{ClientKind, SendLag, StepResult, TransportErrors};
use crate::error::LoadgenError;
use crate::scenarios::Scenario;
use crate::schedule::Arrival;
use crate::segment::{Histograms, SegmentInfo, decode};
use crate::stats::{Percentiles, new_histogram};

/// The fields of a segment's result that the merge reads.
#[derive(Debug, Clone, Deserialize)]
pub struct SegmentFile {
    pub client: String,
    pub engine: String,
    pub rate_target: f64,
    pub rate_achieved: f64,
    pub requests: u64,
    pub errors: u64,
    pub status: BTreeMap<String, u64>,
    pub generator_saturated: bool,
    pub saturation: Option<String>,
    pub transport_errors: TransportCounts,
    pub users: u64,
    pub max_in_flight: u64,
    pub pool_exhausted: bool,
    pub missed: u64,
    pub generator_cpu: f64,
    pub goose_metrics: bool,
    pub segment: SegmentInfo,
    pub histograms: Histograms,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct TransportCounts {
    pub timeout: u64,
    pub connect: u64,
    pub other: u64,
}

/// One worker's row of a merged result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRow {
    pub index: u64,
    /// This worker's share of the rate, and what it sent per second.
    pub rate_target: f64,
    pub rate_achieved: f64,
    pub requests: u64,
    pub send_lag_p99_us: u64,
    pub generator_lag_p99_us: u64,
    pub generator_cpu: f64,
    pub generator_saturated: bool,
    pub saturation: Option<String>,
}

/// A merged result: the single-process object plus the per-worker table.
#[derive(Serialize)]
pub struct Merged {
    #[serde(flatten)]
    pub result: StepResult,
    pub workers: Vec<WorkerRow>,
}

/// Reads a segment's result.
pub fn read(path: &Path) -> Result<SegmentFile, LoadgenError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadgenError::file(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        LoadgenError::Usage(format!(
            "{}: not a segment result (written by `loadgen run --segment I/N --json FILE`): {e}",
            path.display()
        ))
    })
}

fn refuse(msg: String) -> LoadgenError {
    LoadgenError::Usage(format!("merge refused: {msg}"))
}

/// Checks that `parts` are the `count` segments of one schedule, each once.
pub fn check(parts: &[(String, SegmentFile)]) -> Result<(), LoadgenError> {
    let Some((first_name, first)) = parts.first() else {
        return Err(refuse("no segments given".into()));
    };
    let a = &first.segment;
    for (name, p) in &parts[1..] {
        let b = &p.segment;
        let mut differ = Vec::new();
        let mut field = |what: &str, x: String, y: String| {
            if x != y {
                differ.push(format!("{what} {x} vs {y}"));
            }
        };
        field("seed", a.seed.to_string(), b.seed.to_string());
        field("rate", a.rate.to_string(), b.rate.to_string());
        field(
            "duration_s",
            a.duration_s.to_string(),
            b.duration_s.to_string(),
        );
        field("arrival", a.arrival.clone(), b.arrival.clone());
        field(
            "schedule length",
            a.schedule_len.to_string(),
            b.schedule_len.to_string(),
        );
        field("scenario", a.scenario.clone(), b.scenario.clone());
        field("target", a.target.clone(), b.target.clone());
        field(
            "start_at",
            format!("{:?}", a.start_at_unix_ms),
            format!("{:?}", b.start_at_unix_ms),
        );
        field("worker count", a.count.to_string(), b.count.to_string());
        if !differ.is_empty() {
            return Err(refuse(format!(
                "{name} is not a segment of the same schedule as {first_name}: {}",
                differ.join(", ")
            )));
        }
    }
    let mut seen: BTreeMap<u64, &str> = BTreeMap::new();
    for (name, p) in parts {
        if p.segment.index >= a.count {
            return Err(refuse(format!(
                "{name} is segment {}/{}: index out of range",
                p.segment.index, p.segment.count
            )));
        }
        if let Some(other) = seen.insert(p.segment.index, name) {
            return Err(refuse(format!(
                "segment {}/{} is doubled ({other} and {name})",
                p.segment.index, a.count
            )));
        }
    }
    let missing: Vec<String> = (0..a.count)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{}", a.count))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "segment(s) {} missing (every one of the {} is needed)",
            missing.join(", "),
            a.count
        )));
    }
    Ok(())
}

fn hist(name: &str, what: &str, text: &str) -> Result<Histogram<u64>, LoadgenError> {
    decode(text).map_err(|e| refuse(format!("{name}: {what}: {e}")))
}

fn add(total: &mut Histogram<u64>, h: &Histogram<u64>) {
    // Same settings everywhere and auto-resize: addition cannot fail.
    let _ = total.add(h);
}

fn lag(h: &Histogram<u64>) -> SendLag {
    let q = |q| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    SendLag {
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        max: h.max(),
    }
}

/// Merges the segments of one step (checked with [`check`]).
pub fn merge(parts: &[(String, SegmentFile)]) -> Result<Merged, LoadgenError> {
    check(parts)?;
    let mut parts: Vec<&(String, SegmentFile)> = parts.iter().collect();
    parts.sort_by_key(|(_, p)| p.segment.index);
    let first = &parts[0].1;
    let info = &first.segment;
    let (mut corrected, mut uncorrected, mut send_lag, mut generator_lag, mut runtime_lag) = (
        new_histogram(),
        new_histogram(),
        new_histogram(),
        new_histogram(),
        new_histogram(),
    );
    // The read delays merge only if every segment has them.
    let mut read_delay = Some(new_histogram());
    let mut status: BTreeMap<String, u64> = BTreeMap::new();
    let mut transport = TransportErrors::default();
    let (mut requests, mut errors, mut users, mut max_in_flight, mut missed) = (0, 0, 0, 0, 0);
    let (mut pool_exhausted, mut goose_metrics, mut cpu) = (false, false, 0.0);
    let mut workers = Vec::new();
    let mut reasons = Vec::new();
    for (name, p) in &parts {
        let h = &p.histograms;
        let gen_lag = hist(name, "generator_lag", &h.generator_lag)?;
        let s_lag = hist(name, "send_lag", &h.send_lag)?;
        add(&mut corrected, &hist(name, "corrected", &h.corrected)?);
        add(
            &mut uncorrected,
            &hist(name, "uncorrected", &h.uncorrected)?,
        );
        add(
            &mut runtime_lag,
            &hist(name, "runtime_lag", &h.runtime_lag)?,
        );
        add(&mut send_lag, &s_lag);
        add(&mut generator_lag, &gen_lag);
        read_delay = match (read_delay, &h.read_delay) {
            (Some(mut all), Some(text)) => {
                add(&mut all, &hist(name, "read_delay", text)?);
                Some(all)
            }
            _ => None,
        };
        for (code, n) in &p.status {
            *status.entry(code.clone()).or_default() += n;
        }
        transport.timeout += p.transport_errors.timeout;
        transport.connect += p.transport_errors.connect;
        transport.other += p.transport_errors.other;
        requests += p.requests;
        errors += p.errors;
        users += p.users;
        max_in_flight += p.max_in_flight;
        missed += p.missed;
        pool_exhausted |= p.pool_exhausted;
        goose_metrics |= p.goose_metrics;
        cpu += p.generator_cpu;
        if let Some(why) = &p.saturation {
            reasons.push(format!("worker {}: {why}", p.segment.index));
        }
        workers.push(WorkerRow {
            index: p.segment.index,
            rate_target: p.rate_target,
            rate_achieved: p.rate_achieved,
            requests: p.requests,
            send_lag_p99_us: lag(&s_lag).p99,
            generator_lag_p99_us: lag(&gen_lag).p99,
            generator_cpu: p.generator_cpu,
            generator_saturated: p.generator_saturated,
            saturation: p.saturation.clone(),
        });
    }
    let parse = |what: &str, s: &str| refuse(format!("unknown {what} {s:?}"));
    let scenario =
        Scenario::from_str(&info.scenario, false).map_err(|_| parse("scenario", &info.scenario))?;
    let arrival =
        Arrival::from_str(&info.arrival, false).map_err(|_| parse("arrival", &info.arrival))?;
    let client =
        ClientKind::from_str(&first.client, false).map_err(|_| parse("client", &first.client))?;
    let n = parts.len();
    let rate_achieved = requests as f64 / info.duration_s;
    let saturated = workers.iter().any(|w| w.generator_saturated);
    let result = StepResult {
        client,
        engine: format!("{} x{n} workers (segments of one schedule)", first.engine),
        scenario,
        target: info.target.clone(),
        rate_target: info.rate,
        rate_achieved: (rate_achieved * 10.0).round() / 10.0,
        duration_s: info.duration_s,
        requests,
        errors,
        status,
        latency_us: Percentiles::of(&corrected),
        latency_uncorrected_us: Percentiles::of(&uncorrected),
        generator_saturated: saturated,
        saturation: saturated.then(|| reasons.join("; ")),
        // The workers' pools are not in their files: a saturated merged step stays inconclusive.
        own_lag_bounds_latency: false,
        arrival,
        send_lag_us: lag(&send_lag),
        generator_lag_us: lag(&generator_lag),
        runtime_lag_us: lag(&runtime_lag),
        read_delay_us: read_delay.as_ref().map(lag),
        transport_errors: transport,
        users,
        max_in_flight,
        pool_exhausted,
        missed,
        generator_cpu: (cpu / n as f64 * 1000.0).round() / 1000.0,
        service_cpu: None,
        host_steal: None,
        goose_metrics,
        corrected,
        uncorrected,
        send_lag,
        generator_lag,
        runtime_lag,
        read_delay,
    };
    Ok(Merged { result, workers })
}

/// Merges the segment files at `paths`.
pub fn merge_files(paths: &[PathBuf]) -> Result<Merged, LoadgenError> {
    let parts = paths
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect::<Result<Vec<_>, LoadgenError>>()?;
    merge(&parts)
}

/// The per-worker table, for the terminal.
pub fn worker_table(workers: &[WorkerRow]) -> String {
    let mut out = String::from(
        "  worker  target/s  achieved/s  requests  send-lag p99 ms  own lag p99 ms  cpu   saturated\n",
    );
    for w in workers {
        out.push_str(&format!(
            "  {:>6}  {:>8.1}  {:>10.1}  {:>8}  {:>15.3}  {:>14.3}  {:>3.0}%  {}\n",
            w.index,
            w.rate_target,
            w.rate_achieved,
            w.requests,
            w.send_lag_p99_us as f64 / 1000.0,
            w.generator_lag_p99_us as f64 / 1000.0,
            w.generator_cpu * 100.0,
            match &w.saturation {
                Some(why) => format!("YES, {why}"),
                None => "no".into(),
            }
        ));
    }
    out
}
