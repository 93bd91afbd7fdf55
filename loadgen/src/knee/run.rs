//! The orchestration of `loadgen knee`: start (or find) the target, seed it, warm it up and take
//! the baseline, run the search step by step with a recovery check after every step that did not
//! pass, profile at the knee, and write the report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::findings::{Outcome, Searched, Target, WarmUp};
use super::judge::{Criteria, StepOutcome};
use super::output::{self, Finished, ProfileOutcome};
use super::profile_window::{profile_at_knee, window_length};
use super::progress::Progress;
use super::recovery::{
    self, PROBE_DURATION, Probe, Recovery, RecoveryPlan, is_recovered, probe_rate,
};
use super::search::{Search, SearchPlan};
use super::step::{StepRecord, p99, record_step};
use crate::cli::KneeArgs;
use crate::driver::StepConfig;
use crate::environment::ServiceFacts;
use crate::error::LoadgenError;
use crate::profile::AdminClient;
use crate::report::{AllocationsView, ProfileView, fmt_rate, fmt_us};
use crate::scenarios::Seeds;
use crate::seed::seed_for;
use crate::spawn::{find_linkr, spawn_linkr};
use crate::workers::Runner;

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
            service: ServiceFacts {
                pid: args.service_pid,
                ..ServiceFacts::default()
            },
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

pub(super) fn validate(args: &KneeArgs) -> Result<(), LoadgenError> {
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
    for url in &args.workers_at {
        if !url.starts_with("http://") {
            return usage(format!(
                "--workers-at takes http:// URLs of `loadgen worker`s, got {url:?}"
            ));
        }
    }
    for (flag, url) in [("--target", &args.target), ("--admin", &args.admin)] {
        if let Some(u) = url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return usage(format!("{flag} must be an http(s) URL, got {u:?}"));
        }
    }
    Ok(())
}

pub(super) fn exit_code(o: &Outcome, min_knee_rate: Option<f64>) -> ExitCode {
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
            fmt_rate(r),
            fmt_us(p99),
            fmt_us(Criteria::new(args.slo_p99).slo_p99_us),
            o.bound.as_str()
        ),
        _ => println!("knee: none (no step passed; try a lower --start-rate)"),
    }
    if let (Some(r), Some(min)) = (o.knee_rate, args.min_knee_rate)
        && r < min
    {
        println!(
            "FAIL: knee {} req/s is below --min-knee-rate {}",
            fmt_rate(r),
            fmt_rate(min)
        );
    }
    println!("report: {}", o.out.join("index.html").display());
}

/// The knee search, profile and report against an already running target. Public so tests can
/// drive an in-process server.
pub async fn run_against(args: &KneeArgs, target: Target) -> Result<Outcome, LoadgenError> {
    let started = Instant::now();
    output::prepare_out_dir(&args.out)?;
    let mut session = Session::open(args, target).await?;
    let warm_up = session.warm_up().await?;
    let mut searched = session.search(warm_up.interrupted).await?;
    let profile = session.profile(&mut searched).await?;
    let finished = Finished {
        args,
        target: &session.target,
        criteria: session.criteria,
        allocator: session.allocator.clone(),
        warm_up,
        searched: &searched,
        profile,
        started,
    };
    let outcome = output::write(&finished)?;
    if searched.interrupted {
        eprintln!("partial report: {}", args.out.join("index.html").display());
        return Err(LoadgenError::Interrupted);
    }
    Ok(outcome)
}

struct Session<'a> {
    args: &'a KneeArgs,
    target: Target,
    criteria: Criteria,
    seeds: Arc<Seeds>,
    admin: Option<AdminClient>,
    allocator: Option<String>,
    progress: Progress,
    baseline_p99_us: Option<u64>,
}

impl<'a> Session<'a> {
    async fn open(args: &'a KneeArgs, target: Target) -> Result<Self, LoadgenError> {
        let criteria = Criteria::new(args.slo_p99);
        let admin = target.admin_url.as_deref().map(AdminClient::new);
        let seeds = seed_for(
            args.scenario,
            &target.base_url,
            target.api_key.as_deref(),
            args.seed_links,
        )
        .await?;
        let allocator = match &admin {
            Some(a) => a.allocator().await,
            None => None,
        };
        eprintln!(
            "knee: {} against {}, SLO p99 {}, steps of {:.0?} from {} req/s (max {} req/s, {} steps)",
            args.scenario.name(),
            target.base_url,
            fmt_us(criteria.slo_p99_us),
            args.step,
            fmt_rate(args.start_rate),
            fmt_rate(args.max_rate),
            args.max_steps
        );
        Ok(Self {
            args,
            target,
            criteria,
            seeds: Arc::new(seeds),
            admin,
            allocator,
            progress: Progress::new(args.max_steps),
            baseline_p99_us: None,
        })
    }

    fn config(&self, rate: f64, duration: Duration, goose_report: Option<PathBuf>) -> StepConfig {
        StepConfig {
            target: self.target.base_url.clone(),
            scenario: self.args.scenario,
            rate,
            duration,
            arrival: self.args.arrival,
            api_key: self.target.api_key.clone(),
            seeds: Arc::clone(&self.seeds),
            goose_report,
            service_pid: self.target.service.pid,
        }
    }

    /// Waits `quiet`, then sends `rate` for a second and judges the p99 against `limit_us`.
    async fn probe(
        &self,
        rate: f64,
        quiet: Duration,
        limit_us: u64,
    ) -> Result<Probe, LoadgenError> {
        tokio::time::sleep(quiet).await;
        let r = Runner::of_knee(self.args)
            .run_result(&self.config(rate, PROBE_DURATION, None))
            .await?;
        let p99_us = p99(&r.corrected);
        Ok(Probe {
            rate,
            quiet_s: quiet.as_secs_f64(),
            requests: r.requests,
            errors: r.errors,
            p99_us,
            generator_saturated: r.generator_saturated,
            recovered: is_recovered(p99_us, r.errors, r.generator_saturated, limit_us),
        })
    }

    /// A baseline probe, unmeasured traffic at the start rate, and a second baseline probe; the
    /// lower p99 of the two is the baseline (the first may be cold, the second may follow a warm-up
    /// that overloaded the target, and then the target must recover before step 1). `--warm-up 0`
    /// skips all of it.
    async fn warm_up(&mut self) -> Result<WarmUp, LoadgenError> {
        let mut warm = WarmUp {
            baseline_p99_us: None,
            probes: Vec::new(),
            recovery: None,
            interrupted: false,
        };
        if self.args.warm_up.is_zero() {
            return Ok(warm);
        }
        let rate = probe_rate(self.args.start_rate, None);
        eprintln!(
            "warm-up: {:.1?} at {} req/s (not judged), between two 1 s baseline probes at {} req/s",
            self.args.warm_up,
            fmt_rate(self.args.start_rate),
            fmt_rate(rate)
        );
        let phases = async {
            warm.probes.push(self.probe(rate, Duration::ZERO, 0).await?);
            Runner::of_knee(self.args)
                .run_result(&self.config(self.args.start_rate, self.args.warm_up, None))
                .await?;
            warm.probes
                .push(self.probe(rate, recovery::FIRST_QUIET, 0).await?);
            Ok::<_, LoadgenError>(())
        };
        if let Err(e) = phases.await {
            return interrupted_warm_up(e, warm);
        }
        warm.baseline_p99_us = warm.probes.iter().map(|p| p.p99_us).min();
        self.baseline_p99_us = warm.baseline_p99_us;
        let limit = self.limit_us();
        for p in &mut warm.probes {
            p.recovered = is_recovered(p.p99_us, p.errors, p.generator_saturated, limit);
        }
        if warm.probes.last().is_some_and(|p| !p.recovered) {
            match self.recover("after the warm-up", None).await {
                Ok(r) => warm.recovery = Some(r),
                Err(e) => return interrupted_warm_up(e, warm),
            }
        }
        Ok(warm)
    }

    /// The search loop: a step per rate the search asks for, each after the target recovered from
    /// a step that did not pass.
    async fn search(&mut self, interrupted: bool) -> Result<Searched, LoadgenError> {
        let args = self.args;
        let mut searched = Searched {
            steps: Vec::new(),
            search: Search::new(SearchPlan::new(
                args.start_rate,
                args.max_rate,
                args.max_steps,
            )),
            interrupted,
        };
        while !searched.interrupted
            && let Some(rate) = searched.search.next_rate()
        {
            if let Err(e) = self.recover_after_last(&mut searched).await {
                interrupt_or(e, &mut searched)?;
                break;
            }
            match self.step(searched.steps.len() + 1, rate).await {
                Ok(record) => {
                    searched.search.record(rate, record.verdict.outcome);
                    if record.verdict.outcome == StepOutcome::Fail {
                        let o = &record.observation;
                        searched.search.note_failure(rate, o.p99_us, o.host_steal);
                    }
                    if record.verdict.outcome == StepOutcome::Inconclusive
                        && self.criteria.met_objective(&record.observation)
                    {
                        searched.search.note_met_while_lagging(rate);
                    }
                    searched.steps.push(record);
                }
                Err(e) => interrupt_or(e, &mut searched)?,
            }
        }
        Ok(searched)
    }

    async fn step(&self, index: usize, rate: f64) -> Result<StepRecord, LoadgenError> {
        let out = &self.args.out;
        let stem = format!("step-{index:02}-{}", rate.round() as u64);
        let goose_report = self
            .args
            .goose_reports
            .then(|| format!("goose/{stem}.html"));
        if goose_report.is_some() {
            let dir = out.join("goose");
            std::fs::create_dir_all(&dir).map_err(|e| LoadgenError::file(dir, e))?;
        }
        let cfg = self.config(
            rate,
            self.args.step,
            goose_report.as_ref().map(|g| out.join(g)),
        );
        self.progress.start(index, rate, self.args.step);
        let (result, workers) = Runner::of_knee(self.args).run(&cfg).await?;
        let mut record = record_step(index, &stem, result, &self.criteria, out, goose_report)?;
        if !workers.is_empty() {
            record.run["workers"] = serde_json::to_value(&workers).unwrap_or_default();
        }
        self.progress.finish(&record);
        Ok(record)
    }

    /// After a step that did not pass: wait and probe until the target is back near its baseline.
    async fn recover_after_last(&mut self, searched: &mut Searched) -> Result<(), LoadgenError> {
        let upper = searched.search.upper();
        let Some(last) = searched.steps.last_mut() else {
            return Ok(());
        };
        if last.verdict.passed() || last.recovery.is_some() {
            return Ok(());
        }
        let recovery = self
            .recover(&format!("after step {}", last.index), upper)
            .await?;
        last.set_recovery(recovery);
        Ok(())
    }

    /// The p99 a probe must be back under, from the baseline so far.
    fn limit_us(&self) -> u64 {
        recovery::limit_us(self.baseline_p99_us, self.criteria.slo_p99_us)
    }

    /// Waits and probes until the target is back under the limit. Every probe that is lower than
    /// the baseline so far lowers it (a baseline taken on a target still busy with an earlier run
    /// would otherwise stay too lax).
    async fn recover(&mut self, after: &str, upper: Option<f64>) -> Result<Recovery, LoadgenError> {
        let rate = probe_rate(self.args.start_rate, upper);
        let limit = self.limit_us();
        let this = &*self;
        let mut n = 0;
        let recovery = recovery::recover(
            RecoveryPlan::default(),
            this.baseline_p99_us,
            limit,
            |quiet| {
                n += 1;
                let n = n;
                async move {
                    let p = this.probe(rate, quiet, limit).await?;
                    this.progress.probe(after, n, &p, limit);
                    Ok(p)
                }
            },
        )
        .await?;
        if !recovery.recovered {
            eprintln!(
                "recovery {after}: the target is not back under {} after {} probes; going on",
                fmt_us(limit),
                recovery.probes.len()
            );
        }
        let lowest = recovery.probes.iter().map(|p| p.p99_us).min();
        self.baseline_p99_us = match (self.baseline_p99_us, lowest) {
            (Some(b), Some(l)) => Some(b.min(l)),
            (b, l) => b.or(l),
        };
        Ok(recovery)
    }

    /// The profile window at the knee (after the target recovered from the last step).
    async fn profile(&mut self, searched: &mut Searched) -> Result<ProfileOutcome, LoadgenError> {
        let args = self.args;
        let skipped = |reason: &str, alloc_note: &str| ProfileOutcome {
            profile: ProfileView::Skipped {
                reason: reason.into(),
            },
            allocations: AllocationsView {
                note: Some(alloc_note.into()),
                ..Default::default()
            },
            load: None,
        };
        let knee_rate = searched.knee().map(|k| k.observation.rate_target);
        let (rate, admin) = match (knee_rate, self.admin.clone()) {
            _ if searched.interrupted => {
                return Ok(skipped(
                    "the run was interrupted.",
                    "The run was interrupted: allocations not measured.",
                ));
            }
            (None, _) => {
                return Ok(skipped(
                    "no knee: no step passed.",
                    "No knee, no profile window: allocations not measured.",
                ));
            }
            (Some(_), None) => {
                let reason = "no admin listener known (--target without --admin): CPU profile and allocation metrics \
                              were not captured. Pass --admin http://HOST:PORT of linkr's admin listener.";
                return Ok(skipped(reason, reason));
            }
            (Some(_), Some(_)) if args.profile_seconds == 0 => {
                return Ok(skipped(
                    "--profile-seconds 0.",
                    "Profile window skipped (--profile-seconds 0): allocations not measured.",
                ));
            }
            (Some(rate), Some(admin)) => (rate, admin),
        };
        if let Err(e) = self.recover_after_last(searched).await {
            interrupt_or(e, searched)?;
            return Ok(skipped(
                "the run was interrupted.",
                "The run was interrupted: allocations not measured.",
            ));
        }
        eprintln!(
            "profile: holding {} req/s for {} s while capturing 2 x {} s of CPU profile at {} Hz from {}",
            fmt_rate(rate),
            window_length(args.profile_seconds).as_secs(),
            args.profile_seconds,
            args.profile_frequency,
            admin.base()
        );
        let cfg = self.config(rate, window_length(args.profile_seconds), None);
        let window = profile_at_knee(&admin, &cfg, args, args.scenario.name(), &args.out).await;
        Ok(ProfileOutcome {
            profile: window.profile,
            allocations: window.allocations,
            load: window.load,
        })
    }
}

/// Ctrl-C during the warm-up: the search does not start and the (empty) report is written.
fn interrupted_warm_up(e: LoadgenError, mut warm: WarmUp) -> Result<WarmUp, LoadgenError> {
    match e {
        LoadgenError::Interrupted => {
            warm.interrupted = true;
            Ok(warm)
        }
        e => Err(e),
    }
}

/// Ctrl-C marks the search interrupted (its report is still written); other errors end the run.
fn interrupt_or(e: LoadgenError, searched: &mut Searched) -> Result<(), LoadgenError> {
    match e {
        LoadgenError::Interrupted => {
            eprintln!(
                "knee: interrupted after {} steps; writing the report of those",
                searched.steps.len()
            );
            searched.interrupted = true;
            Ok(())
        }
        e => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::knee::bound::Bound;
    use crate::knee::search::SearchEnd;
    use crate::scenarios::Scenario;

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
        assert_eq!(a.max_steps, 12);
        assert_eq!(a.scenario, Scenario::Mixed);
        // the default run's budget: steps plus the profile window stay well inside 3 minutes
        let budget = a.step.as_secs() * u64::from(a.max_steps) + 2 * a.profile_seconds + 2;
        assert!(budget <= 120, "{budget} s");
        assert!(
            Cli::try_parse_from(["knee"]).is_err(),
            "--target or --spawn required"
        );
        assert!(Cli::try_parse_from(["knee", "--spawn", "--target", "http://x"]).is_err());
        assert!(Cli::try_parse_from(["knee", "--spawn", "--max-steps", "21"]).is_err());
        let a = Cli::try_parse_from(["knee", "--spawn", "--max-steps", "20"]).unwrap();
        assert_eq!(a.knee.max_steps, 20);
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
