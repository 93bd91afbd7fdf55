//! `loadgen knee`: find the highest arrival rate the service sustains inside its latency objective,
//! profile it there, and write the report.
//!
//! The search ramps the rate up by doubling from `--start-rate` until a step fails, then bisects
//! (geometrically) between the highest passing and the lowest failing rate until they are within
//! 5% of each other; at most 10 steps. A step passes when the achieved rate is at least 99% of the
//! target, the corrected p99 is within the SLO and at most 0.1% of requests fail.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::cli::{parse_duration, parse_duration_or_zero};
use crate::driver::{self, StepConfig, StepResult, run_step};
use crate::environment::{self, ServiceFacts};
use crate::error::LoadgenError;
use crate::profile::{self, AdminClient};
use crate::report::{
    self, AllocationsView, DiffView, KneeView, Link, Percentiles, ProfileView, Report, StepView,
};
use crate::scenarios::{Scenario, Seeds};
use crate::schedule::Arrival;
use crate::seed::{DEFAULT_SEED_LINKS, seed_links};
use crate::spawn::{find_linkr, spawn_linkr};
use crate::stats::write_hgrm;

/// Hard cap on search steps.
pub const MAX_STEPS: u32 = 10;
/// Bisection stops when the lowest failing rate is within this fraction above the highest pass.
pub const TOLERANCE: f64 = 0.05;
/// A step must achieve this fraction of its target rate.
pub const MIN_ACHIEVED_RATIO: f64 = 0.99;
/// A step may fail at most this fraction of its requests.
pub const MAX_ERROR_RATIO: f64 = 0.001;

/// One-line help of `loadgen knee`.
pub const ABOUT: &str =
    "Find the knee: the highest arrival rate served within the p99 latency objective";
/// Long help of `loadgen knee` (the search, timing, files, exit codes).
pub const LONG_ABOUT: &str = "\
Find the knee: the highest arrival rate (open model: a fixed schedule, latency measured from each
request's intended send time) that the service sustains within the p99 latency objective.

The rate doubles from --start-rate until a step fails, then bisects between the highest passing
and the lowest failing rate until they are within 5%, in at most 10 steps. A step passes when the
achieved rate is >= 99% of the target, the corrected p99 <= --slo-p99, and errors <= 0.1%.
At the knee the rate is held for a profile window (2 x --profile-seconds + 2 s) while a CPU
profile is captured from the admin listener (folded stacks, then pprof).

Timing with the defaults: 10 steps x 8 s + a 12 s profile window + start-up and seeding: about
two minutes, under three.

Writes into --out: summary.json, index.html, step-NN-RATE.hgrm (corrected) and
step-NN-RATE.uncorrected.hgrm per step, cpu.folded, cpu.pb.gz, flamegraph.svg and, with
<--baseline-dir>/<scenario>.folded present, flamegraph-diff.svg. Against --target the profile
needs --admin (linkr's admin listener); without it the report says it was skipped.

Exit codes: 0 a knee was found (and is >= --min-knee-rate when given), 1 no step passed or the knee
is below --min-knee-rate, 2 usage or set-up error.";

/// Flags of `loadgen knee`.
#[derive(Debug, Clone, clap::Args)]
#[command(about = ABOUT, long_about = LONG_ABOUT)]
pub struct KneeArgs {
    /// Base URL of a running service to drive (any HTTP server with --scenario get).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "spawn",
        required_unless_present = "spawn"
    )]
    pub target: Option<String>,

    /// Start the release linkr (beside this executable, or --linkr), seed it, stop it at the end.
    #[arg(long)]
    pub spawn: bool,

    /// linkr binary for --spawn.
    #[arg(long, value_name = "PATH")]
    pub linkr: Option<PathBuf>,

    /// Traffic mix: redirect, create, stats, mixed (linkr), or get (a plain GET of the target URL).
    #[arg(long, value_enum, default_value = "mixed")]
    pub scenario: Scenario,

    /// Latency objective: corrected p99 of a step at most this. The 10 ms default is a
    /// user-facing redirect budget on loopback with room left for the network, and above a
    /// group-committed fsync so the creates of `mixed` fit it at moderate load.
    #[arg(long, value_name = "DUR", default_value = "10ms", value_parser = parse_duration)]
    pub slo_p99: Duration,

    /// Directory for the report (created; files of an earlier run there are replaced).
    #[arg(long, value_name = "DIR", default_value = "reports/latest")]
    pub out: PathBuf,

    /// First rate tried (requests/s); the search doubles it until a step fails.
    #[arg(long, value_name = "R", default_value_t = 2000.0)]
    pub start_rate: f64,

    /// Highest rate tried (requests/s).
    #[arg(long, value_name = "R", default_value_t = 100_000.0)]
    pub max_rate: f64,

    /// Duration of each step. With the defaults (at most 10 steps of 8 s, then a 12 s profile
    /// window at the knee, plus start-up and seeding) a run takes about two minutes, under three.
    #[arg(long, value_name = "D", default_value = "8s", value_parser = parse_duration)]
    pub step: Duration,

    /// Unmeasured traffic at --start-rate before step 1, so that step is not judged on cold
    /// start (new connections, cold caches, the service's allocator growing). 0 skips it.
    #[arg(long, value_name = "D", default_value = "2s", value_parser = parse_duration_or_zero)]
    pub warm_up: Duration,

    /// Step budget (at most 10).
    #[arg(long, value_name = "N", default_value_t = MAX_STEPS, value_parser = clap::value_parser!(u32).range(1..=MAX_STEPS as i64))]
    pub max_steps: u32,

    /// Arrival process of the schedule.
    #[arg(long, value_enum, default_value = "constant")]
    pub arrival: Arrival,

    /// API key used to seed links (and create) against a --target linkr.
    #[arg(
        long,
        value_name = "KEY",
        env = "LINKR_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// Admin listener of the --target linkr, for the CPU profile and allocation metrics
    /// (e.g. http://127.0.0.1:9090). Without it the profile is skipped.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,

    /// Length of each of the two profile captures at the knee (folded, then pprof); 0 skips them.
    #[arg(long, value_name = "S", default_value_t = 5)]
    pub profile_seconds: u64,

    /// Sampling frequency of the CPU profile (Hz; linkr allows 1 to 1000). 499, not 500, so the
    /// sampling does not run in lockstep with millisecond timers.
    #[arg(long, value_name = "HZ", default_value_t = 499, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub profile_frequency: u32,

    /// Links to seed for the redirect, stats and mixed scenarios.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SEED_LINKS)]
    pub seed_links: usize,

    /// Directory of baseline folded profiles (<scenario>.folded) for the differential flamegraph.
    #[arg(long, value_name = "DIR", default_value = "profiles/baseline")]
    pub baseline_dir: PathBuf,

    /// Exit 1 when the knee is below this rate (requests/s): a threshold for CI.
    #[arg(long, value_name = "R")]
    pub min_knee_rate: Option<f64>,

    /// Have goose write its HTML report for every step (costs generator CPU).
    #[arg(long)]
    pub goose_reports: bool,
}

// ---------------------------------------------------------------------------------------------
// Pass/fail of one step

/// What makes a step pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    pub slo_p99_us: u64,
    pub min_achieved_ratio: f64,
    pub max_error_ratio: f64,
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
        let mut reasons = Vec::new();
        let achieved = if o.rate_target > 0.0 {
            o.rate_achieved / o.rate_target
        } else {
            0.0
        };
        let error_ratio = if o.requests > 0 {
            o.errors as f64 / o.requests as f64
        } else {
            1.0
        };
        if o.requests == 0 {
            reasons.push("no request completed".to_string());
        }
        if achieved < self.min_achieved_ratio {
            reasons.push(format!(
                "achieved {} of {} req/s ({:.1}% < {}%)",
                report::fmt_rate(o.rate_achieved),
                report::fmt_rate(o.rate_target),
                achieved * 100.0,
                self.min_achieved_ratio * 100.0
            ));
        }
        if o.p99_us > self.slo_p99_us {
            reasons.push(format!(
                "p99 {} > SLO {}",
                report::fmt_us(o.p99_us),
                report::fmt_us(self.slo_p99_us)
            ));
        }
        if o.requests > 0 && error_ratio > self.max_error_ratio {
            reasons.push(format!(
                "errors {:.2}% > {}% ({} of {})",
                error_ratio * 100.0,
                self.max_error_ratio * 100.0,
                o.errors,
                o.requests
            ));
        }
        if reasons.is_empty() {
            Verdict {
                pass: true,
                reasons: vec![format!(
                    "achieved {:.1}%, p99 {} <= {}, errors {:.2}%",
                    achieved * 100.0,
                    report::fmt_us(o.p99_us),
                    report::fmt_us(self.slo_p99_us),
                    error_ratio * 100.0
                )],
            }
        } else {
            Verdict {
                pass: false,
                reasons,
            }
        }
    }
}

/// The figures of a step that decide pass or fail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub rate_target: f64,
    pub rate_achieved: f64,
    pub requests: u64,
    pub errors: u64,
    /// Corrected p99 (from the intended send time), microseconds.
    pub p99_us: u64,
    pub generator_saturated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub pass: bool,
    /// Why it failed; for a pass, one line of the figures that passed.
    pub reasons: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The search (pure: rates in, rates out)

/// Parameters of the rate search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchPlan {
    pub start_rate: f64,
    pub max_rate: f64,
    pub max_steps: u32,
    /// Stop when `lowest_fail <= highest_pass * (1 + tolerance)`.
    pub tolerance: f64,
    /// Ramp factor before the first failure.
    pub growth: f64,
    /// Do not go below this rate when even the start rate fails.
    pub min_rate: f64,
}

impl SearchPlan {
    pub fn new(start_rate: f64, max_rate: f64, max_steps: u32) -> Self {
        Self {
            start_rate,
            max_rate,
            max_steps,
            tolerance: TOLERANCE,
            growth: 2.0,
            min_rate: 1.0,
        }
    }
}

/// Why the search stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchEnd {
    /// Highest pass and lowest fail within the tolerance.
    Converged,
    /// `--max-rate` passed: the knee is at least that.
    MaxRatePassed,
    /// The step budget ran out before convergence.
    StepBudget,
    /// Even the lowest rate tried failed.
    NothingPassed,
}

/// Ramp-then-bisect state: feed it each step's result, ask it for the next rate.
#[derive(Debug, Clone)]
pub struct Search {
    plan: SearchPlan,
    steps: u32,
    highest_pass: Option<f64>,
    lowest_fail: Option<f64>,
}

impl Search {
    pub fn new(plan: SearchPlan) -> Self {
        Self {
            plan,
            steps: 0,
            highest_pass: None,
            lowest_fail: None,
        }
    }

    pub fn steps(&self) -> u32 {
        self.steps
    }

    pub fn highest_pass(&self) -> Option<f64> {
        self.highest_pass
    }

    pub fn lowest_fail(&self) -> Option<f64> {
        self.lowest_fail
    }

    /// The next rate to try, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        if self.steps >= self.plan.max_steps {
            return None;
        }
        let p = &self.plan;
        match (self.highest_pass, self.lowest_fail) {
            (None, None) => Some(p.start_rate.min(p.max_rate)),
            (Some(pass), None) => {
                (pass < p.max_rate).then(|| round_rate(pass * p.growth).min(p.max_rate))
            }
            (None, Some(fail)) => {
                let next = round_rate(fail / p.growth);
                (fail > p.min_rate).then_some(next.max(p.min_rate))
            }
            (Some(pass), Some(fail)) => {
                if fail <= pass * (1.0 + p.tolerance) {
                    return None;
                }
                let mid = (pass * fail).sqrt();
                let rounded = round_rate(mid);
                Some(if rounded > pass && rounded < fail {
                    rounded
                } else {
                    mid
                })
            }
        }
    }

    pub fn record(&mut self, rate: f64, pass: bool) {
        self.steps += 1;
        if pass {
            self.highest_pass = Some(self.highest_pass.map_or(rate, |p| p.max(rate)));
        } else {
            self.lowest_fail = Some(self.lowest_fail.map_or(rate, |f| f.min(rate)));
        }
    }

    /// Why the search is over (meaningful once `next_rate` is `None`).
    pub fn end(&self) -> SearchEnd {
        match (self.highest_pass, self.lowest_fail) {
            (None, _) => SearchEnd::NothingPassed,
            (Some(pass), None) if pass >= self.plan.max_rate => SearchEnd::MaxRatePassed,
            (Some(pass), Some(fail)) if fail <= pass * (1.0 + self.plan.tolerance) => {
                SearchEnd::Converged
            }
            _ => SearchEnd::StepBudget,
        }
    }

    /// `lowest_fail / highest_pass - 1`, when both exist.
    pub fn resolution(&self) -> Option<f64> {
        Some(self.lowest_fail? / self.highest_pass? - 1.0)
    }
}

/// Rounds a rate to three significant digits (readable step names).
pub fn round_rate(r: f64) -> f64 {
    if r <= 0.0 || !r.is_finite() {
        return r;
    }
    let digits = 2 - r.log10().floor() as i32;
    if digits >= 0 {
        let scale = 10f64.powi(digits);
        (r * scale).round() / scale
    } else {
        let scale = 10f64.powi(-digits);
        (r / scale).round() * scale
    }
}

/// One executed step with everything the report needs.
pub struct StepRecord {
    pub index: usize,
    pub observation: Observation,
    pub verdict: Verdict,
    /// The driver's run object (as `loadgen run --json` writes it), extended with the step's
    /// number, verdict and file names.
    pub run: Value,
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
    pub hgrm: String,
    pub hgrm_uncorrected: String,
    pub goose_report: Option<String>,
    /// Why the generator counted itself saturated (the driver's evidence).
    pub saturation: Option<String>,
}

impl StepRecord {
    fn view(&self) -> StepView {
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
            pass: self.verdict.pass,
            reasons: self.verdict.reasons.clone(),
            hgrm: self.hgrm.clone(),
            hgrm_uncorrected: self.hgrm_uncorrected.clone(),
            goose_report: self.goose_report.clone(),
        }
    }
}

/// What bound the knee and why we think so.
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

/// The bound of a finished search: the lowest failing step decides.
pub fn decide_bound(steps: &[StepRecord], end: SearchEnd, max_rate: f64) -> (Bound, Vec<String>) {
    let lowest_fail = steps.iter().filter(|s| !s.verdict.pass).min_by(|a, b| {
        a.observation
            .rate_target
            .total_cmp(&b.observation.rate_target)
    });
    let Some(f) = lowest_fail else {
        let mut ev = vec![format!(
            "No step failed up to --max-rate {} req/s: the knee is at or above what this run generated, so the load \
             generator's configured range bound the result, not the service. Raise --max-rate.",
            report::fmt_rate(max_rate)
        )];
        if end == SearchEnd::StepBudget {
            ev.push("The step budget ran out during the ramp.".into());
        }
        return (Bound::Generator, ev);
    };
    let o = &f.observation;
    let c = Percentiles::of(&f.corrected);
    let u = Percentiles::of(&f.uncorrected);
    let mut ev = vec![format!(
        "The lowest failing step was step {} at {} req/s: {}.",
        f.index,
        report::fmt_rate(o.rate_target),
        f.verdict.reasons.join("; ")
    )];
    ev.push(format!(
        "There the corrected p99 was {} and the uncorrected p99 {}: {}",
        report::fmt_us(c.p99),
        report::fmt_us(u.p99),
        if c.p99 > u.p99.saturating_mul(3) {
            "requests left well after their intended time (queued in the generator or waiting for a connection)."
        } else {
            "requests left on time and waited in the service."
        }
    ));
    let figures = |r: &Value| {
        let get = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
        format!(
            "generator CPU {}, send-lag p99 {} µs, max in flight {} of {} users, pool exhausted {}",
            get("generator_cpu")
                .as_f64()
                .map_or("?".into(), |c| format!("{:.0}%", c * 100.0)),
            r.pointer("/send_lag_us/p99")
                .and_then(Value::as_u64)
                .map_or("?".into(), |v| v.to_string()),
            get("max_in_flight"),
            get("users"),
            get("pool_exhausted")
        )
    };
    if o.generator_saturated {
        ev.push(format!(
            "The generator flagged itself saturated in that step ({}): it could not keep the schedule \
             (achieved {} of {} req/s), so the step measured the generator and the knee is the generator's, \
             not the service's.",
            f.saturation.as_deref().unwrap_or("no reason given"),
            report::fmt_rate(o.rate_achieved),
            report::fmt_rate(o.rate_target)
        ));
        ev.push(format!(
            "Generator figures of that step: {}.",
            figures(&f.run)
        ));
        (Bound::Generator, ev)
    } else {
        ev.push(format!(
            "The generator kept its schedule (not flagged saturated: {}), so the objective was missed by the service.",
            figures(&f.run)
        ));
        (Bound::Service, ev)
    }
}

// ---------------------------------------------------------------------------------------------
// Progress output

struct Progress {
    live: bool,
    max_steps: u32,
}

impl Progress {
    /// On a terminal the driver's own live line (sent, rate, running p99) runs during each step;
    /// elsewhere (CI, files) only one plain line per step is printed.
    fn new(max_steps: u32) -> Self {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        let live = std::io::stderr().is_terminal() && !ci;
        driver::set_progress(live);
        Self { live, max_steps }
    }

    fn start(&self, n: usize, rate: f64, duration: Duration) {
        if self.live {
            eprintln!(
                "step {n}/{}: {} req/s for {:.0?}",
                self.max_steps,
                report::fmt_rate(rate),
                duration
            );
        }
    }

    fn finish(&self, r: &StepRecord) {
        let c = Percentiles::of(&r.corrected);
        let u = Percentiles::of(&r.uncorrected);
        let o = &r.observation;
        eprintln!(
            "step {}/{}: target {} req/s, achieved {}, p99 {} (uncorrected {}), errors {}{} -> {}{}",
            r.index,
            self.max_steps,
            report::fmt_rate(o.rate_target),
            report::fmt_rate(o.rate_achieved),
            report::fmt_us(c.p99),
            report::fmt_us(u.p99),
            o.errors,
            if o.generator_saturated {
                ", generator saturated"
            } else {
                ""
            },
            if r.verdict.pass { "pass" } else { "FAIL: " },
            if r.verdict.pass {
                String::new()
            } else {
                r.verdict.reasons.join("; ")
            }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// Where the load goes and what we know about it.
#[derive(Debug, Clone)]
pub struct Target {
    pub base_url: String,
    pub admin_url: Option<String>,
    pub api_key: Option<String>,
    pub service: ServiceFacts,
}

/// Entry point of `loadgen knee`.
pub async fn run(args: KneeArgs) -> Result<ExitCode, LoadgenError> {
    validate(&args)?;
    let spawned = if args.spawn {
        Some(spawn_linkr(args.linkr.clone()).await?)
    } else {
        None
    };
    let target = match &spawned {
        Some(s) => Target {
            base_url: s.base_url.clone(),
            admin_url: Some(s.admin_url.clone()),
            api_key: Some(s.api_key.clone()),
            service: ServiceFacts {
                pid: Some(s.pid),
                binary: find_linkr(args.linkr.clone()).ok(),
                allocator: None,
                pinning: Some(s.pinning.clone()),
            },
        },
        None => Target {
            base_url: args.target.clone().unwrap_or_default(),
            admin_url: args.admin.clone(),
            api_key: args.api_key.clone(),
            service: ServiceFacts::default(),
        },
    };
    let outcome = run_against(&args, target).await;
    if let Some(s) = spawned {
        let tail = s.log_tail();
        if let Err(e) = s.stop().await {
            // The measurements stand; a service that did not stop cleanly is reported, not hidden.
            eprintln!("knee: linkr did not stop cleanly: {e} (log: {tail})");
        }
    }
    let outcome = outcome?;
    print_outcome(&args, &outcome);
    Ok(exit_code(&outcome, args.min_knee_rate))
}

fn validate(args: &KneeArgs) -> Result<(), LoadgenError> {
    let usage = |m: String| Err(LoadgenError::Usage(m));
    if !(args.start_rate.is_finite() && args.start_rate > 0.0) {
        return usage(format!(
            "--start-rate must be a positive rate, got {}",
            args.start_rate
        ));
    }
    if !(args.max_rate.is_finite() && args.max_rate >= args.start_rate) {
        return usage(format!(
            "--max-rate ({}) must be at least --start-rate ({})",
            args.max_rate, args.start_rate
        ));
    }
    if args.linkr.is_some() && !args.spawn {
        return usage("--linkr goes with --spawn".into());
    }
    if let Some(t) = &args.target
        && !(t.starts_with("http://") || t.starts_with("https://"))
    {
        return usage(format!("--target must be an http(s) URL, got {t:?}"));
    }
    if let Some(a) = &args.admin
        && !(a.starts_with("http://") || a.starts_with("https://"))
    {
        return usage(format!("--admin must be an http(s) URL, got {a:?}"));
    }
    Ok(())
}

/// What a finished knee run found (also what `summary.json` holds).
pub struct Outcome {
    pub summary: Value,
    pub knee_rate: Option<f64>,
    pub knee_p99_us: Option<u64>,
    pub bound: Bound,
    pub end: SearchEnd,
    pub out: PathBuf,
}

fn exit_code(o: &Outcome, min_knee_rate: Option<f64>) -> ExitCode {
    match (o.knee_rate, min_knee_rate) {
        (None, _) => ExitCode::from(1),
        (Some(k), Some(min)) if k < min => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

fn print_outcome(args: &KneeArgs, o: &Outcome) {
    match (o.knee_rate, o.knee_p99_us) {
        (Some(r), Some(p99)) => println!(
            "knee: {} req/s at p99 {} (SLO {}), bound by the {}",
            report::fmt_rate(r),
            report::fmt_us(p99),
            report::fmt_us(Criteria::new(args.slo_p99).slo_p99_us),
            o.bound.as_str()
        ),
        _ => println!("knee: none (no step passed; try a lower --start-rate)"),
    }
    if let (Some(r), Some(min)) = (o.knee_rate, args.min_knee_rate)
        && r < min
    {
        println!(
            "FAIL: knee {} req/s is below --min-knee-rate {}",
            report::fmt_rate(r),
            report::fmt_rate(min)
        );
    }
    println!("report: {}", o.out.join("index.html").display());
}

/// The knee search, profile and report against an already running target. Public so tests can
/// drive an in-process server.
pub async fn run_against(args: &KneeArgs, target: Target) -> Result<Outcome, LoadgenError> {
    let started = Instant::now();
    let out = args.out.clone();
    prepare_out_dir(&out)?;
    let criteria = Criteria::new(args.slo_p99);
    let scenario_name = args.scenario.name();
    let admin = target.admin_url.as_deref().map(AdminClient::new);

    let seeds = Arc::new(seed(args, &target).await?);
    let mut allocator = None;
    if let Some(a) = &admin {
        allocator = a.allocator().await;
    }

    eprintln!(
        "knee: {scenario_name} against {}, SLO p99 {}, steps of {:.0?} from {} req/s (max {} req/s, {} steps)",
        target.base_url,
        report::fmt_us(criteria.slo_p99_us),
        args.step,
        report::fmt_rate(args.start_rate),
        report::fmt_rate(args.max_rate),
        args.max_steps
    );
    let step_config = |rate: f64, duration: Duration, goose_report: Option<PathBuf>| StepConfig {
        target: target.base_url.clone(),
        scenario: args.scenario,
        rate,
        duration,
        arrival: args.arrival,
        api_key: target.api_key.clone(),
        seeds: Arc::clone(&seeds),
        goose_report,
    };

    let progress = Progress::new(args.max_steps);
    let mut search = Search::new(SearchPlan::new(
        args.start_rate,
        args.max_rate,
        args.max_steps,
    ));
    let mut steps: Vec<StepRecord> = Vec::new();
    let mut interrupted = false;
    if !args.warm_up.is_zero() {
        eprintln!(
            "warm-up: {:.1?} at {} req/s (not judged)",
            args.warm_up,
            report::fmt_rate(args.start_rate)
        );
        // On an interrupt the loop below stops at once and writes the (empty) report.
        if let Err(e) = run_step(&step_config(args.start_rate, args.warm_up, None)).await
            && !matches!(e, LoadgenError::Interrupted)
        {
            return Err(e);
        }
    }
    while let Some(rate) = search.next_rate() {
        let index = steps.len() + 1;
        let stem = format!("step-{index:02}-{}", rate.round() as u64);
        let goose_report = args.goose_reports.then(|| format!("goose/{stem}.html"));
        if goose_report.is_some() {
            std::fs::create_dir_all(out.join("goose")).map_err(|e| LoadgenError::File {
                path: out.join("goose"),
                source: e,
            })?;
        }
        let cfg = step_config(rate, args.step, goose_report.as_ref().map(|g| out.join(g)));
        progress.start(index, rate, args.step);
        let result = match run_step(&cfg).await {
            Err(LoadgenError::Interrupted) => {
                interrupted = true;
                eprintln!(
                    "knee: interrupted after {} steps; writing the report of those",
                    steps.len()
                );
                break;
            }
            r => r?,
        };
        let record = record_step(index, &stem, result, &criteria, &out, goose_report)?;
        progress.finish(&record);
        search.record(rate, record.verdict.pass);
        steps.push(record);
    }
    let end = search.end();

    let knee_index = search.highest_pass().and_then(|rate| {
        steps
            .iter()
            .filter(|s| s.verdict.pass && s.observation.rate_target == rate)
            .map(|s| s.index)
            .next_back()
    });
    let knee_step = knee_index.map(|i| &steps[i - 1]);
    let (bound, bound_evidence) = decide_bound(&steps, end, args.max_rate);

    // Profile at the knee.
    let skipped = |reason: &str, alloc_note: &str| {
        let allocations = AllocationsView {
            note: Some(alloc_note.into()),
            ..Default::default()
        };
        (
            ProfileView::Skipped {
                reason: reason.into(),
            },
            allocations,
            Value::Null,
        )
    };
    let (profile_view, allocations, profile_window) = match (knee_step, &admin) {
        _ if interrupted => skipped(
            "the run was interrupted.",
            "The run was interrupted: allocations not measured.",
        ),
        (None, _) => skipped(
            "no knee: no step passed.",
            "No knee, no profile window: allocations not measured.",
        ),
        (Some(_), None) => {
            let reason = "no admin listener known (--target without --admin): CPU profile and allocation metrics \
                          were not captured. Pass --admin http://HOST:PORT of linkr's admin listener.";
            skipped(reason, reason)
        }
        (Some(_), Some(_)) if args.profile_seconds == 0 => skipped(
            "--profile-seconds 0.",
            "Profile window skipped (--profile-seconds 0): allocations not measured.",
        ),
        (Some(k), Some(admin)) => {
            let rate = k.observation.rate_target;
            eprintln!(
                "profile: holding {} req/s for {} s while capturing 2 x {} s of CPU profile at {} Hz from {}",
                report::fmt_rate(rate),
                2 * args.profile_seconds + 2,
                args.profile_seconds,
                args.profile_frequency,
                admin.base()
            );
            let cfg = step_config(
                rate,
                Duration::from_secs(2 * args.profile_seconds + 2),
                None,
            );
            let window = profile_at_knee(admin, &cfg, args, scenario_name, &out).await;
            let mut load = Value::Null;
            if let Some(r) = &window.load {
                load = run_object(r);
                let verdict = criteria.judge(&observe(r));
                if let Value::Object(m) = &mut load {
                    m.insert("pass".into(), json!(verdict.pass));
                    m.insert("reasons".into(), json!(verdict.reasons));
                }
            }
            (window.profile, window.allocations, load)
        }
    };

    let environment = environment::collect(&ServiceFacts {
        allocator,
        ..target.service.clone()
    });
    let mut search_notes = Vec::new();
    match end {
        SearchEnd::Converged => search_notes.push(format!(
            "Converged: the lowest failing rate is within {:.1}% of the knee (target 5%).",
            search.resolution().unwrap_or(0.0) * 100.0
        )),
        SearchEnd::MaxRatePassed => search_notes.push(format!(
            "Every rate up to --max-rate {} req/s passed: the knee is at least that.",
            report::fmt_rate(args.max_rate)
        )),
        SearchEnd::StepBudget => search_notes.push(format!(
            "The step budget ({} steps) ran out before the 5% resolution{}.",
            args.max_steps,
            search
                .resolution()
                .map(|r| format!(
                    ": the knee lies within {:.1}% above the value shown",
                    r * 100.0
                ))
                .unwrap_or_default()
        )),
        SearchEnd::NothingPassed => search_notes.push("No step passed.".into()),
    }
    if !args.warm_up.is_zero() {
        search_notes.push(format!(
            "Step 1 followed {:.1} s of unmeasured warm-up traffic at {} req/s (--warm-up).",
            args.warm_up.as_secs_f64(),
            report::fmt_rate(args.start_rate)
        ));
    }
    if interrupted {
        search_notes.insert(
            0,
            "Interrupted (Ctrl-C): the search did not finish; this is a partial report.".into(),
        );
    }

    let knee_view = knee_step.map(|k| KneeView {
        step_index: k.index,
        rate: k.observation.rate_target,
        rate_achieved: k.observation.rate_achieved,
        p99_us: k.observation.p99_us,
        p99_uncorrected_us: Percentiles::of(&k.uncorrected).p99,
        distribution: report::quantile_points(&k.corrected, &k.uncorrected),
    });
    let generated_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report = Report {
        scenario: scenario_name.to_string(),
        target: target.base_url.clone(),
        generated_unix,
        slo_p99_us: criteria.slo_p99_us,
        min_achieved_ratio: criteria.min_achieved_ratio,
        max_error_ratio: criteria.max_error_ratio,
        steps: steps.iter().map(StepRecord::view).collect(),
        knee: knee_view,
        bound: bound.as_str().to_string(),
        bound_evidence: bound_evidence.clone(),
        search_notes: search_notes.clone(),
        profile: profile_view.clone(),
        allocations: allocations.clone(),
        environment: environment.clone(),
        goose_reports: steps
            .iter()
            .filter_map(|s| {
                s.goose_report
                    .as_ref()
                    .filter(|g| out.join(g).exists())
                    .map(|g| Link {
                        label: format!("step {}", s.index),
                        href: g.clone(),
                    })
            })
            .collect(),
        bench_report: bench_report(&out),
        duration_s: started.elapsed().as_secs_f64(),
    };

    let summary = json!({
        "knee": {
            "rate": knee_step.map_or(0.0, |k| k.observation.rate_target),
            "p99_us": knee_step.map_or(0, |k| k.observation.p99_us),
            "rate_achieved": knee_step.map(|k| k.observation.rate_achieved),
            "p99_uncorrected_us": report.knee.as_ref().map(|k| k.p99_uncorrected_us),
            "step": knee_index,
            "found": knee_step.is_some(),
        },
        "slo_p99_us": criteria.slo_p99_us,
        "steps": steps.iter().map(|s| s.run.clone()).collect::<Vec<_>>(),
        "bound": bound.as_str(),
        "bound_evidence": bound_evidence,
        "scenario": scenario_name,
        "target": target.base_url,
        "criteria": {
            "slo_p99_us": criteria.slo_p99_us,
            "min_achieved_ratio": criteria.min_achieved_ratio,
            "max_error_ratio": criteria.max_error_ratio,
        },
        "search": {
            "end": end,
            "resolution": search.resolution(),
            "start_rate": args.start_rate,
            "max_rate": args.max_rate,
            "max_steps": args.max_steps,
            "step_s": args.step.as_secs_f64(),
            "warm_up_s": args.warm_up.as_secs_f64(),
            "arrival": format!("{:?}", args.arrival).to_lowercase(),
            "notes": search_notes,
        },
        "profile": profile_view,
        "profile_window": profile_window,
        "allocations": allocations,
        "environment": environment.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<serde_json::Map<String, Value>>(),
        "interrupted": interrupted,
        "generated_unix": generated_unix,
        "duration_s": report.duration_s,
    });
    write_json(&out.join("summary.json"), &summary)?;
    report::write_html(&out, &report).map_err(|e| LoadgenError::File {
        path: out.join("index.html"),
        source: e,
    })?;
    if interrupted {
        eprintln!("partial report: {}", out.join("index.html").display());
        return Err(LoadgenError::Interrupted);
    }

    Ok(Outcome {
        summary,
        knee_rate: knee_step.map(|k| k.observation.rate_target),
        knee_p99_us: knee_step.map(|k| k.observation.p99_us),
        bound,
        end,
        out,
    })
}

async fn seed(args: &KneeArgs, target: &Target) -> Result<Seeds, LoadgenError> {
    let scenario = args.scenario;
    if !(scenario.needs_seeds() || scenario.needs_api_key()) {
        return Ok(Seeds::default());
    }
    let Some(key) = &target.api_key else {
        return Err(LoadgenError::Usage(format!(
            "scenario {scenario} needs an API key against --target (--api-key or LINKR_API_KEY), or use --spawn"
        )));
    };
    if !scenario.needs_seeds() {
        return Ok(Seeds::default());
    }
    eprintln!("seeding {} links", args.seed_links);
    seed_links(&target.base_url, key, args.seed_links).await
}

fn observe(r: &StepResult) -> Observation {
    Observation {
        rate_target: r.rate_target,
        rate_achieved: r.rate_achieved,
        requests: r.requests,
        errors: r.errors,
        p99_us: if r.corrected.is_empty() {
            0
        } else {
            r.corrected.value_at_quantile(0.99)
        },
        generator_saturated: r.generator_saturated,
    }
}

fn run_object(r: &StepResult) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

fn record_step(
    index: usize,
    stem: &str,
    result: StepResult,
    criteria: &Criteria,
    out: &Path,
    goose_report: Option<String>,
) -> Result<StepRecord, LoadgenError> {
    let observation = observe(&result);
    let verdict = criteria.judge(&observation);
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
        m.insert("pass".into(), json!(verdict.pass));
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
    })
}

struct ProfileWindow {
    profile: ProfileView,
    allocations: AllocationsView,
    load: Option<StepResult>,
}

/// Holds the knee rate while capturing folded stacks then a pprof profile (the endpoint serves
/// one capture at a time), with `/metrics` scraped before and after for allocation deltas.
async fn profile_at_knee(
    admin: &AdminClient,
    cfg: &StepConfig,
    args: &KneeArgs,
    scenario: &str,
    out: &Path,
) -> ProfileWindow {
    let seconds = args.profile_seconds;
    let before = admin.metrics().await;
    let captures = async {
        // Let the users connect before sampling.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let folded = admin
            .capture(seconds, args.profile_frequency, "folded")
            .await;
        let pprof = admin
            .capture(seconds, args.profile_frequency, "pprof")
            .await;
        (folded, pprof)
    };
    let (load, (folded, pprof)) = tokio::join!(run_step(cfg), captures);
    let after = admin.metrics().await;

    let allocations = match (&before, &after) {
        (Ok(b), Ok(a)) => {
            profile::allocations_delta(&profile::parse_prometheus(b), &profile::parse_prometheus(a))
        }
        (Err(e), _) | (_, Err(e)) => AllocationsView {
            note: Some(format!("could not scrape /metrics: {e}")),
            ..Default::default()
        },
    };
    let mut notes = Vec::new();
    let load = match load {
        Ok(r) => {
            let o = observe(&r);
            notes.push(format!(
                "During the window the generator achieved {} of {} req/s.",
                report::fmt_rate(o.rate_achieved),
                report::fmt_rate(o.rate_target)
            ));
            Some(r)
        }
        Err(e) => {
            notes.push(format!("The load of the profile window failed: {e}"));
            None
        }
    };

    let pprof_file = match pprof {
        Ok(bytes) => match std::fs::write(out.join("cpu.pb.gz"), &bytes) {
            Ok(()) => Some("cpu.pb.gz".to_string()),
            Err(e) => {
                notes.push(format!("writing cpu.pb.gz: {e}"));
                None
            }
        },
        Err(e) => {
            notes.push(format!("pprof capture failed: {e}"));
            None
        }
    };
    let folded = match folded {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            return ProfileWindow {
                profile: ProfileView::Failed {
                    reason: format!("folded capture: {e}"),
                },
                allocations,
                load,
            };
        }
    };
    if let Err(e) = std::fs::write(out.join("cpu.folded"), &folded) {
        notes.push(format!("writing cpu.folded: {e}"));
    }
    let title = format!(
        "linkr CPU at the knee: {scenario}, {} req/s",
        report::fmt_rate(cfg.rate)
    );
    if let Err(e) = profile::render_flamegraph(&folded, &title, &out.join("flamegraph.svg")) {
        return ProfileWindow {
            profile: ProfileView::Failed {
                reason: format!("flamegraph: {e}"),
            },
            allocations,
            load,
        };
    }
    notes.push(format!(
        "{} samples in the folded capture ({} s at {} Hz).",
        profile::folded_samples(&folded),
        seconds,
        args.profile_frequency
    ));

    let baseline = args.baseline_dir.join(format!("{scenario}.folded"));
    let diff = if baseline.is_file() {
        let diff_title = format!("linkr CPU at the knee against {}", baseline.display());
        match profile::render_diff_flamegraph(
            &baseline,
            &folded,
            &diff_title,
            &out.join("flamegraph-diff.svg"),
        ) {
            Ok(()) => Some(DiffView {
                flamegraph: "flamegraph-diff.svg".into(),
                baseline: baseline.display().to_string(),
            }),
            Err(e) => {
                notes.push(format!(
                    "differential flamegraph against {}: {e}",
                    baseline.display()
                ));
                None
            }
        }
    } else {
        None
    };
    ProfileWindow {
        profile: ProfileView::Captured {
            seconds,
            rate: cfg.rate,
            flamegraph: "flamegraph.svg".into(),
            folded: Some("cpu.folded".into()),
            pprof: pprof_file,
            diff,
            notes,
        },
        allocations,
        load,
    }
}

/// Creates `out` and removes the files an earlier knee run left there (only ours).
fn prepare_out_dir(out: &Path) -> Result<(), LoadgenError> {
    std::fs::create_dir_all(out).map_err(|e| LoadgenError::File {
        path: out.to_path_buf(),
        source: e,
    })?;
    let ours = |name: &str| {
        (name.starts_with("step-") && name.ends_with(".hgrm"))
            || matches!(
                name,
                "summary.json"
                    | "index.html"
                    | "cpu.pb.gz"
                    | "cpu.folded"
                    | "flamegraph.svg"
                    | "flamegraph-diff.svg"
            )
    };
    for entry in std::fs::read_dir(out)
        .map_err(|e| LoadgenError::File {
            path: out.to_path_buf(),
            source: e,
        })?
        .flatten()
    {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if ours(&name) {
            let _ = std::fs::remove_file(entry.path());
        } else if name == "goose" && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

fn bench_report(out: &Path) -> Option<String> {
    let candidate = out.parent()?.join("bench").join("index.html");
    candidate
        .is_file()
        .then(|| "../bench/index.html".to_string())
}

fn write_json(path: &Path, v: &Value) -> Result<(), LoadgenError> {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
    std::fs::write(path, text + "\n").map_err(|e| LoadgenError::File {
        path: path.to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a service whose steps pass exactly below `capacity`.
    fn simulate(plan: SearchPlan, pass: impl Fn(f64) -> bool) -> (Search, Vec<f64>) {
        let mut s = Search::new(plan);
        let mut tried = Vec::new();
        while let Some(r) = s.next_rate() {
            assert!(tried.len() < 100, "runaway search");
            tried.push(r);
            s.record(r, pass(r));
        }
        (s, tried)
    }

    #[test]
    fn ramps_then_bisects_to_five_percent_within_ten_steps() {
        for capacity in [
            2_500.0, 3_700.0, 9_999.0, 20_000.0, 33_000.0, 50_000.0, 63_000.0,
        ] {
            let (s, tried) = simulate(SearchPlan::new(2000.0, 100_000.0, 10), |r| r <= capacity);
            assert!(tried.len() <= 10, "{capacity}: {tried:?}");
            assert_eq!(s.end(), SearchEnd::Converged, "{capacity}: {tried:?}");
            let knee = s.highest_pass().unwrap();
            assert!(
                knee <= capacity && knee >= capacity / 1.05,
                "{capacity}: knee {knee}, {tried:?}"
            );
            assert!(s.resolution().unwrap() <= TOLERANCE);
        }
    }

    #[test]
    fn ramp_doubles_from_the_start_rate() {
        let (_, tried) = simulate(SearchPlan::new(1000.0, 1e6, 10), |r| r <= 5000.0);
        assert_eq!(&tried[..4], &[1000.0, 2000.0, 4000.0, 8000.0]);
        // then geometric bisection between 4000 and 8000
        assert_eq!(tried[4], round_rate((4000.0_f64 * 8000.0).sqrt()));
    }

    #[test]
    fn everything_passes_up_to_max_rate() {
        let (s, tried) = simulate(SearchPlan::new(1000.0, 5000.0, 10), |_| true);
        assert_eq!(tried, vec![1000.0, 2000.0, 4000.0, 5000.0]);
        assert_eq!(s.end(), SearchEnd::MaxRatePassed);
        assert_eq!(s.highest_pass(), Some(5000.0));
    }

    #[test]
    fn start_rate_too_high_walks_down_then_bisects() {
        let (s, tried) = simulate(SearchPlan::new(8000.0, 100_000.0, 10), |r| r <= 1100.0);
        assert_eq!(&tried[..4], &[8000.0, 4000.0, 2000.0, 1000.0]);
        assert_eq!(s.end(), SearchEnd::Converged, "{tried:?}");
        assert!(s.highest_pass().unwrap() >= 1100.0 / 1.05);
    }

    #[test]
    fn nothing_passes() {
        let (s, tried) = simulate(SearchPlan::new(8.0, 100.0, 10), |_| false);
        assert_eq!(s.end(), SearchEnd::NothingPassed);
        assert_eq!(tried, vec![8.0, 4.0, 2.0, 1.0]);
    }

    #[test]
    fn step_budget_is_respected() {
        let (s, tried) = simulate(SearchPlan::new(10.0, 1e9, 10), |r| r <= 123_456.0);
        assert_eq!(tried.len(), 10);
        assert_eq!(s.end(), SearchEnd::StepBudget);
        let (_, tried) = simulate(SearchPlan::new(2000.0, 1e6, 3), |r| r <= 5000.0);
        assert_eq!(tried.len(), 3);
    }

    #[test]
    fn noisy_non_monotonic_results_still_terminate_in_bracket() {
        // passes at 3000 but fails at 2600 (noise): the bracket only ever shrinks
        let (s, tried) = simulate(SearchPlan::new(1000.0, 1e5, 10), |r| {
            r <= 2500.0 || (2900.0..3100.0).contains(&r)
        });
        assert!(tried.len() <= 10);
        assert!(s.lowest_fail().unwrap() > s.highest_pass().unwrap());
    }

    #[test]
    fn round_rate_keeps_three_digits() {
        assert_eq!(round_rate(45_254.8), 45_300.0);
        assert_eq!(round_rate(14.142), 14.1);
        assert_eq!(round_rate(1000.0), 1000.0);
        assert_eq!(round_rate(0.5), 0.5);
    }

    #[test]
    fn judge_each_criterion() {
        let c = Criteria::new(Duration::from_millis(10));
        let ok = Observation {
            rate_target: 1000.0,
            rate_achieved: 995.0,
            requests: 10_000,
            errors: 10,
            p99_us: 9_000,
            generator_saturated: false,
        };
        assert!(c.judge(&ok).pass);
        let slow = Observation {
            p99_us: 10_001,
            ..ok
        };
        assert!(!c.judge(&slow).pass);
        assert!(c.judge(&slow).reasons[0].contains("p99"));
        let short = Observation {
            rate_achieved: 989.0,
            ..ok
        };
        assert!(c.judge(&short).reasons[0].contains("achieved"));
        let errors = Observation { errors: 11, ..ok };
        assert!(c.judge(&errors).reasons[0].contains("errors"));
        let empty = Observation {
            requests: 0,
            errors: 0,
            ..ok
        };
        assert!(!c.judge(&empty).pass);
    }

    fn record(index: usize, rate: f64, pass: bool, saturated: bool) -> StepRecord {
        let mut h = crate::stats::new_histogram();
        h.record(if pass { 1_000 } else { 50_000 }).unwrap();
        StepRecord {
            index,
            observation: Observation {
                rate_target: rate,
                rate_achieved: rate,
                requests: 100,
                errors: 0,
                p99_us: h.value_at_quantile(0.99),
                generator_saturated: saturated,
            },
            verdict: Verdict {
                pass,
                reasons: vec![if pass {
                    "ok".into()
                } else {
                    "p99 50 ms > SLO 10 ms".into()
                }],
            },
            run: json!({"generator_cpu": 0.95, "send_lag_us": {"p99": 9000}, "users": 10, "max_in_flight": 3, "pool_exhausted": false}),
            corrected: h.clone(),
            uncorrected: h,
            hgrm: String::new(),
            hgrm_uncorrected: String::new(),
            goose_report: None,
            saturation: saturated.then(|| "generator CPU at 95% of its cores".to_string()),
        }
    }

    #[test]
    fn bound_follows_the_lowest_failing_step() {
        // a saturated failure above a clean one does not matter: the lowest failure decides
        let steps = vec![
            record(1, 1000.0, true, false),
            record(2, 4000.0, false, true),
            record(3, 2000.0, false, false),
        ];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::Converged, 1e5);
        assert_eq!(bound, Bound::Service);
        assert!(evidence[0].contains("step 3"), "{evidence:?}");

        let steps = vec![
            record(1, 1000.0, true, false),
            record(2, 2000.0, false, true),
            record(3, 4000.0, false, false),
        ];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::Converged, 1e5);
        assert_eq!(bound, Bound::Generator);
        assert!(
            evidence.iter().any(|e| e.contains("generator CPU at 95%")),
            "{evidence:?}"
        );

        // nothing failed: the range this run generated bound the result, not the service
        let steps = vec![
            record(1, 1000.0, true, false),
            record(2, 2000.0, true, false),
        ];
        let (bound, evidence) = decide_bound(&steps, SearchEnd::MaxRatePassed, 2000.0);
        assert_eq!(bound, Bound::Generator);
        assert!(evidence[0].contains("--max-rate"), "{evidence:?}");
    }

    #[test]
    fn exit_codes() {
        let outcome = |knee: Option<f64>| Outcome {
            summary: Value::Null,
            knee_rate: knee,
            knee_p99_us: knee.map(|_| 1),
            bound: Bound::Service,
            end: SearchEnd::Converged,
            out: PathBuf::new(),
        };
        assert_eq!(exit_code(&outcome(Some(5000.0)), None), ExitCode::SUCCESS);
        assert_eq!(
            exit_code(&outcome(Some(5000.0)), Some(4000.0)),
            ExitCode::SUCCESS
        );
        assert_eq!(
            exit_code(&outcome(Some(3000.0)), Some(4000.0)),
            ExitCode::from(1)
        );
        assert_eq!(exit_code(&outcome(None), None), ExitCode::from(1));
    }

    #[test]
    fn cli_defaults_and_conflicts() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            knee: KneeArgs,
        }
        use clap::Parser as _;
        let a = Cli::try_parse_from(["knee", "--spawn"]).unwrap().knee;
        assert_eq!(a.slo_p99, Duration::from_millis(10));
        assert_eq!(a.step, Duration::from_secs(8));
        assert_eq!(a.out, PathBuf::from("reports/latest"));
        assert_eq!(a.max_steps, 10);
        assert_eq!(a.scenario, Scenario::Mixed);
        // the default run's budget: steps plus the profile window stay well inside 3 minutes
        let budget = a.step.as_secs() * u64::from(a.max_steps) + 2 * a.profile_seconds + 2;
        assert!(budget <= 120, "{budget} s");
        assert!(
            Cli::try_parse_from(["knee"]).is_err(),
            "--target or --spawn required"
        );
        assert!(Cli::try_parse_from(["knee", "--spawn", "--target", "http://x"]).is_err());
        assert!(Cli::try_parse_from(["knee", "--spawn", "--max-steps", "11"]).is_err());
        let a = Cli::try_parse_from(["knee", "--target", "http://x", "--linkr", "/bin/linkr"])
            .unwrap()
            .knee;
        assert!(
            matches!(validate(&a), Err(LoadgenError::Usage(_))),
            "--linkr without --spawn"
        );
        let a = Cli::try_parse_from([
            "knee",
            "--spawn",
            "--start-rate",
            "5000",
            "--max-rate",
            "100",
        ])
        .unwrap()
        .knee;
        assert!(matches!(validate(&a), Err(LoadgenError::Usage(_))));
        let a = Cli::try_parse_from(["knee", "--target", "localhost:8080"])
            .unwrap()
            .knee;
        assert!(matches!(validate(&a), Err(LoadgenError::Usage(_))));
    }
}
