//! The `loadgen` command line: `run`, `knee` and `compare`, their argument types and parsers.
//!
//! Exit codes: 0 pass, 1 a threshold or regression failed, 2 usage or set-up error (clap's usage
//! errors included, with clap's whole message), 130 interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::compare::{Figures, compare};
use crate::driver::{self, ClientKind, StepConfig, StepResult};
use crate::error::LoadgenError;
use crate::scenarios::{Scenario, Seeds};
use crate::schedule::Arrival;
use crate::seed::{DEFAULT_SEED_LINKS, seed_links};
use crate::spawn::{Spawned, spawn_linkr};
use crate::stats::{Percentiles, write_hgrm};

pub const EXIT_FAIL: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    arg_required_else_help = true,
    about = "Open-model load generator for linkr (and any HTTP server), on goose",
    long_about = "Open-model load generator for linkr (and any HTTP server), on goose.\n\n\
        Requests leave on a schedule fixed in advance (constant rate, or Poisson), whatever the\n\
        server does; latency is measured from each request's intended send time (coordinated\n\
        omission corrected) and, beside it, from the actual send.\n\n\
        Exit codes: 0 pass, 1 a threshold or regression failed, 2 usage or set-up error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Per-request path of `run` and `knee`: lean (a persistent HTTP/1.1 connection per user,
    /// requests built in advance, responses parsed in place, one current-thread runtime, precise
    /// timer) or reqwest (goose's own client, as before; for comparison, and for https targets).
    #[arg(long, global = true, value_enum, default_value_t = ClientKind::Lean)]
    pub client: ClientKind,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive a target at one rate for one duration and report latency and errors.
    Run(RunArgs),
    /// Find the knee: the highest rate served within the p99 objective; profile it; write the report.
    Knee(KneeArgs),
    /// Compare two run results or two knee summaries: throughput, and p99 at a rate both measured.
    Compare(CompareArgs),
    /// Merge the segments of one step (`run --segment I/N --json FILE`) into one result, exactly.
    Merge(MergeArgs),
    /// Serve as a remote worker: run the segments a coordinator (`knee --workers-at`) sends.
    Worker(WorkerArgs),
}

/// `loadgen worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Address to listen on, e.g. 0.0.0.0:7070.
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
}

/// `loadgen merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Segment results (`run --segment I/N --json FILE`), every one of the N exactly once.
    #[arg(value_name = "SEGMENT.json", required = true)]
    pub segments: Vec<PathBuf>,
    /// Write the merged result as JSON here (the `run --json` object plus `workers`).
    #[arg(long, value_name = "FILE")]
    pub json: PathBuf,
    /// Write the merged corrected latency distribution here (.hgrm).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
}

impl Command {
    /// Whether the command starts its own linkr (the generator is then pinned before the runtime).
    pub fn spawns(&self) -> bool {
        match self {
            Command::Run(a) => a.spawn,
            Command::Knee(a) => a.spawn,
            Command::Compare(_) | Command::Merge(_) | Command::Worker(_) => false,
        }
    }
}

/// `--target URL` or `--spawn`, exactly one (named together in clap's message when missing).
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("where").required(true).args(["target", "spawn"])))]
pub struct RunArgs {
    /// Base URL of a running server (for --scenario get, the URL to GET).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Start the release linkr beside this executable (or --linkr), seed it, stop it at the end.
    #[arg(long)]
    pub spawn: bool,
    /// linkr binary for --spawn.
    #[arg(long, value_name = "PATH", requires = "spawn")]
    pub linkr: Option<PathBuf>,
    /// The --target server's process on this machine: the result then has its CPU over the
    /// schedule (`service_cpu`, from /proc; --spawn knows it).
    #[arg(long, value_name = "PID", conflicts_with = "spawn")]
    pub service_pid: Option<u32>,
    /// Arrival rate, requests per second.
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    pub rate: f64,
    /// How long requests are sent, e.g. 10s, 500ms, 2m.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Duration,
    /// Traffic mix: redirect, create, stats, mixed (linkr), or get (a plain GET of the target URL;
    /// of /healthz with --spawn).
    #[arg(long, value_enum, default_value_t = Scenario::Mixed)]
    pub scenario: Scenario,
    /// Arrival process.
    #[arg(long, value_enum, default_value_t = Arrival::Constant)]
    pub arrival: Arrival,
    /// Write the result as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the corrected latency distribution here (HdrHistogram .hgrm, milliseconds).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// API key of the --target linkr, to seed links and to create (not needed with --spawn).
    #[arg(
        long,
        value_name = "KEY",
        env = "LINKR_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Fail (exit 1) when the corrected p99 is above this, e.g. 5ms.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub max_p99: Option<Duration>,
    /// Fail (exit 1) when more than this percentage of requests fail.
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    pub max_error_rate: Option<f64>,
    /// Links to seed for the redirect, stats and mixed scenarios.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SEED_LINKS)]
    pub seed_links: usize,
    /// Write goose's HTML report of the step here (turns goose's per-request metrics on).
    #[arg(long, value_name = "FILE")]
    pub goose_report: Option<PathBuf>,
    /// Keep goose's own per-request metrics on (costs generator CPU; off by default).
    #[arg(long)]
    pub goose_metrics: bool,
    /// Send the step's schedule from N worker processes, each pinned to a CPU (see --cpus), each
    /// sending a disjoint segment; one merged result plus a per-worker table.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256), conflicts_with_all = ["segment", "goose_report"])]
    pub workers: u64,
    /// CPUs for the --workers, e.g. 0,1 or 0-3 (worker i on the i-th, round robin); default:
    /// the CPUs this process may run on.
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
    /// Send only segment I of N of the schedule (slots k with k % N == I); the JSON result then
    /// carries the step's histograms (HdrHistogram V2 + deflate) for `loadgen merge`.
    #[arg(long, value_name = "I/N", value_parser = crate::segment::parse_segment)]
    pub segment: Option<(u64, u64)>,
    /// Start the schedule at this wall-clock time (Unix milliseconds), agreed between segments.
    #[arg(long, value_name = "UNIX_MS", requires = "segment")]
    pub start_at: Option<u64>,
    /// Seed of the schedule with --segment (the same for every segment of a step: it draws the
    /// Poisson offsets); 0 when not given.
    #[arg(long, value_name = "N")]
    pub schedule_seed: Option<u64>,
    /// The seeded links' codes, one a line, instead of seeding (a --workers coordinator passes
    /// its own to its workers).
    #[arg(long, value_name = "FILE", hide = true)]
    pub seed_codes: Option<PathBuf>,
}

/// A list of CPUs (`--cpus 0,2,4-7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses `0,2,4-7`.
pub fn parse_cpus(s: &str) -> Result<CpuList, String> {
    let bad = || format!("invalid CPU list {s:?} (e.g. 0,1 or 0-3)");
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b || b >= 1024 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() || out.iter().any(|&c| c >= 1024) {
        return Err(bad());
    }
    Ok(CpuList(out))
}

/// `loadgen merge`.
pub fn merge_cmd(args: &MergeArgs) -> Result<ExitCode, LoadgenError> {
    let merged = crate::merge::merge_files(&args.segments)?;
    print!("{}", summary(&merged.result));
    print!("{}", crate::merge::worker_table(&merged.workers));
    write_merged(&merged, Some(&args.json), args.hgrm.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a merged result's JSON and .hgrm.
pub fn write_merged(
    merged: &crate::merge::Merged,
    json: Option<&std::path::Path>,
    hgrm: Option<&std::path::Path>,
) -> Result<(), LoadgenError> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(merged).expect("a merged result serialises");
        std::fs::write(path, text + "\n").map_err(|e| LoadgenError::file(path, e))?;
    }
    if let Some(path) = hgrm {
        write_hgrm(&merged.result.corrected, path).map_err(|e| LoadgenError::file(path, e))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Baseline: a `run --json` result or a knee summary.json.
    #[arg(value_name = "BASE.json")]
    pub base: PathBuf,
    /// Candidate, of the same kind.
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,
    /// Fail (exit 1) when the rate falls, or the p99 at a common rate grows, by more than this
    /// percentage. Negative demands an improvement: -5 fails unless both got at least 5% better.
    #[arg(long, value_name = "PCT", default_value_t = 10.0, allow_negative_numbers = true, value_parser = parse_signed_pct)]
    pub max_regression: f64,
}

/// Default step budget of a knee search (`--max-steps`): from the default 2,000 req/s a knee
/// near 128k req/s takes 8 steps of ramp and 4 of bisection; from 8,000 (gen-ceiling) that leaves
/// one for measuring an inconclusive bracket top again.
pub const KNEE_MAX_STEPS: u32 = 12;
/// The largest `--max-steps` accepted.
pub const KNEE_STEP_LIMIT: u32 = 20;

/// Default `--max-rate`: more than one generator core sends (about 150k req/s on the 2-core VM),
/// so a search ends on a step the service fails or one the generator cannot keep, not on a cap.
pub const DEFAULT_MAX_RATE: f64 = 1_000_000.0;

/// One-line help of `loadgen knee`.
pub const KNEE_ABOUT: &str =
    "Find the knee: the highest arrival rate served within the p99 latency objective";
/// Long help of `loadgen knee` (the search, timing, files, exit codes).
pub const KNEE_LONG_ABOUT: &str = "\
Find the knee: the highest arrival rate (open model: a fixed schedule, latency measured from each
request's intended send time) that the service sustains within the p99 latency objective.

The rate doubles from --start-rate until a step does not pass, then bisects between the highest
passing rate and the lowest rate above it that did not pass until they are within 5%, in at most
10 steps. A step passes when the achieved rate is >= 99% of the target, the corrected p99 <=
--slo-p99, and errors <= 0.1%. A step in which the generator could not keep its schedule is
inconclusive: neither pass nor fail, never the knee; the search stays below it and the knee is then
bound by the generator. A step whose only miss is its p99, by less than the generator's largest
own delay, is inconclusive too; one that misses by more, with the rate sent, fails as the
service's even when the generator lagged. After a step that did not pass, the target drains and 1 s probes at a low
rate must show it back near its baseline (the p99 of the same probe around the --warm-up) before
the next step.
At the knee the rate is held for a profile window (2 x --profile-seconds + 2 s) while a CPU
profile is captured from the admin listener (folded stacks, then pprof).

Timing with the defaults: 10 steps x 8 s + a 12 s profile window + 4 s of warm-up and baseline
probes + start-up and seeding, plus 1.25 s (up to about 13 s when the target is slow to drain)
of recovery probes after each step that does not pass: about two minutes, under three.

Writes into --out: summary.json, index.html, step-NN-RATE.hgrm (corrected) and
step-NN-RATE.uncorrected.hgrm per step, cpu.folded, cpu.pb.gz, flamegraph.svg and, with
<--baseline-dir>/<scenario>.folded present, flamegraph-diff.svg. Against --target the profile
needs --admin (linkr's admin listener); without it the report says it was skipped.

Exit codes: 0 a knee was found (and is >= --min-knee-rate when given), 1 no step passed or the knee
is below --min-knee-rate, 2 usage or set-up error.";

/// Flags of `loadgen knee`.
#[derive(Debug, Clone, clap::Args)]
#[command(about = KNEE_ABOUT, long_about = KNEE_LONG_ABOUT)]
#[command(group(clap::ArgGroup::new("where").required(true).args(["target", "spawn"])))]
pub struct KneeArgs {
    /// Base URL of a running service to drive (any HTTP server with --scenario get).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,

    /// Start the release linkr (beside this executable, or --linkr), seed it, stop it at the end.
    #[arg(long)]
    pub spawn: bool,

    /// linkr binary for --spawn.
    #[arg(long, value_name = "PATH")]
    pub linkr: Option<PathBuf>,

    /// The --target service's process on this machine: each step then reads its CPU over the
    /// schedule (`service_cpu`, from /proc), and the report its pinning (--spawn knows it).
    #[arg(long, value_name = "PID", conflicts_with = "spawn")]
    pub service_pid: Option<u32>,

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

    /// Highest rate tried (requests/s). The default is above what one generator core can send,
    /// so the search ends where the service fails a step or the generator cannot keep up (an
    /// inconclusive step), not at a cap of its own.
    #[arg(long, value_name = "R", default_value_t = DEFAULT_MAX_RATE)]
    pub max_rate: f64,

    /// Duration of each step. With the defaults (at most 12 steps of 8 s, each that did not pass
    /// followed by recovery probes, then a 12 s profile window at the knee, plus start-up and
    /// seeding) a run takes about three minutes.
    #[arg(long, value_name = "D", default_value = "8s", value_parser = parse_duration)]
    pub step: Duration,

    /// Unmeasured traffic at --start-rate before step 1, so that step is not judged on cold
    /// start (new connections, cold caches, the service's allocator growing). 0 skips it.
    #[arg(long, value_name = "D", default_value = "2s", value_parser = parse_duration_or_zero)]
    pub warm_up: Duration,

    /// Step budget (at most 20).
    #[arg(long, value_name = "N", default_value_t = KNEE_MAX_STEPS, value_parser = clap::value_parser!(u32).range(1..=KNEE_STEP_LIMIT as i64))]
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

    /// Send each step from N local worker processes, each pinned (see --cpus), each sending a
    /// disjoint segment of the step's schedule; steps are judged on the merged result, and a
    /// step with any saturated worker is inconclusive. Each step (and probe) starts 1.5 s after
    /// it is asked for: the workers' lead to start and connect (remote workers: 2 s).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: u64,

    /// CPUs for --workers, e.g. 0,1 or 0-3 (worker i on the i-th, round robin).
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,

    /// Send each step from remote workers (`loadgen worker --listen ADDR`), one segment each.
    #[arg(
        long,
        value_name = "URL,URL,...",
        value_delimiter = ',',
        conflicts_with = "workers"
    )]
    pub workers_at: Vec<String>,

    /// Refuse remote workers whose clock is further than this from ours.
    #[arg(long, value_name = "DUR", default_value = "50ms", value_parser = parse_duration)]
    pub max_clock_skew: Duration,
}

/// Like [`parse_duration`], also accepting zero (`0`, `0s`, `0ms`) to turn a phase off.
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    match seconds(s)? {
        0.0 => Ok(Duration::ZERO),
        secs => positive(secs, s),
    }
}

/// Parses `10s`, `500ms`, `250us`, `2m`, `1h`, `1.5s`; a bare number is seconds. Must be > 0.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    positive(seconds(s)?, s)
}

fn positive(secs: f64, s: &str) -> Result<Duration, String> {
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("duration {:?} must be greater than zero", s.trim()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A number with an optional unit (us, ms, s, m, h), in seconds.
fn seconds(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 10s, 500ms, 2m)"))?;
    match unit {
        "" | "s" => Ok(n),
        "ms" => Ok(n / 1e3),
        "us" | "µs" => Ok(n / 1e6),
        "m" => Ok(n * 60.0),
        "h" => Ok(n * 3600.0),
        _ => Err(format!(
            "invalid duration unit in {s:?} (use us, ms, s, m or h)"
        )),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err(format!("invalid rate {s:?}: requests per second, > 0")),
    }
}

fn parse_signed_pct(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p.is_finite() => Ok(p),
        _ => Err(format!("invalid percentage {s:?}")),
    }
}

fn parse_pct(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(format!("invalid percentage {s:?}")),
    }
}

/// `loadgen compare`.
pub fn compare_cmd(args: &CompareArgs) -> Result<ExitCode, LoadgenError> {
    let base = Figures::from_file(&args.base)?;
    let new = Figures::from_file(&args.new)?;
    let c = compare(&base, &new, args.max_regression)?;
    print!("{}", c.render(args.max_regression));
    Ok(if c.regressed() {
        ExitCode::from(EXIT_FAIL)
    } else {
        ExitCode::SUCCESS
    })
}

/// `loadgen run`.
pub async fn run_cmd(args: RunArgs) -> Result<ExitCode, LoadgenError> {
    let spawned = if args.spawn {
        let s = spawn_linkr(args.linkr.clone()).await?;
        eprintln!(
            "spawned linkr (pid {}) at {}, admin {}; {}",
            s.pid, s.base_url, s.admin_url, s.pinning
        );
        Some(s)
    } else {
        None
    };
    let result = run_with(&args, spawned.as_ref()).await;
    let stopped = match spawned {
        Some(s) => s.stop().await,
        None => Ok(()),
    };
    let code = result?;
    stopped?;
    Ok(code)
}

async fn run_with(args: &RunArgs, spawned: Option<&Spawned>) -> Result<ExitCode, LoadgenError> {
    let (target, api_key) = match spawned {
        // linkr answers `GET /` with 404: a `get` run against it requests its liveness probe.
        Some(s) if args.scenario == Scenario::Get => {
            (format!("{}/healthz", s.base_url), Some(s.api_key.clone()))
        }
        Some(s) => (s.base_url.clone(), Some(s.api_key.clone())),
        None => (
            args.target.clone().unwrap_or_default(),
            args.api_key.clone(),
        ),
    };
    let seeds = if let Some(file) = args.seed_codes.as_deref() {
        let text = std::fs::read_to_string(file).map_err(|e| LoadgenError::file(file, e))?;
        Seeds {
            codes: text
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        }
    } else if args.scenario.needs_seeds() {
        let Some(key) = api_key.as_deref() else {
            return Err(LoadgenError::Usage(format!(
                "scenario {} reads seeded links: pass --api-key KEY (or LINKR_API_KEY), or --spawn; for a server that is not linkr use --scenario get",
                args.scenario
            )));
        };
        if args.seed_links == 0 {
            return Err(LoadgenError::Usage(format!(
                "scenario {} needs --seed-links > 0",
                args.scenario
            )));
        }
        let started = std::time::Instant::now();
        let seeds = seed_links(&target, key, args.seed_links).await?;
        eprintln!(
            "seeded {} links in {:.1}s",
            seeds.codes.len(),
            started.elapsed().as_secs_f64()
        );
        seeds
    } else {
        Seeds::default()
    };
    driver::set_goose_metrics(args.goose_metrics);
    let cfg = StepConfig {
        target,
        scenario: args.scenario,
        rate: args.rate,
        duration: args.duration,
        arrival: args.arrival,
        api_key,
        seeds: Arc::new(seeds),
        goose_report: args.goose_report.clone(),
        service_pid: spawned.map(|s| s.pid).or(args.service_pid),
    };
    if args.workers > 1 {
        let cpus = args.cpus.as_ref().map(|c| c.0.as_slice());
        let merged = crate::workers::run_workers(&cfg, args.workers, cpus).await?;
        print!("{}", summary(&merged.result));
        print!("{}", crate::merge::worker_table(&merged.workers));
        write_merged(&merged, args.json.as_deref(), args.hgrm.as_deref())?;
        return Ok(verdict(&merged.result, args));
    }
    let result = match args.segment {
        Some((index, count)) => {
            let seg = crate::segment::Segment {
                index,
                count,
                seed: args.schedule_seed.unwrap_or_default(),
                start_at_unix_ms: args.start_at,
            };
            let result = driver::run_segment(&cfg, &seg).await?;
            print!("{}", summary(&result));
            if let Some(path) = &args.json {
                let text = crate::segment::to_json(&seg, &result, cfg.rate, cfg.duration);
                std::fs::write(path, text + "\n").map_err(|e| LoadgenError::file(path, e))?;
            }
            if let Some(path) = &args.hgrm {
                write_hgrm(&result.corrected, path).map_err(|e| LoadgenError::file(path, e))?;
            }
            return Ok(verdict(&result, args));
        }
        None => driver::run_step(&cfg).await?,
    };
    print!("{}", summary(&result));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result).expect("a step result serialises");
        std::fs::write(path, text + "\n").map_err(|e| LoadgenError::file(path, e))?;
    }
    if let Some(path) = &args.hgrm {
        write_hgrm(&result.corrected, path).map_err(|e| LoadgenError::file(path, e))?;
    }
    Ok(verdict(&result, args))
}

/// The exit code of a `run`: thresholds, and whether the generator kept up.
fn verdict(result: &StepResult, args: &RunArgs) -> ExitCode {
    let failures = threshold_failures(result, args.max_p99, args.max_error_rate);
    for f in &failures {
        eprintln!("FAIL: {f}");
    }
    if !failures.is_empty() && result.generator_saturated {
        eprintln!(
            "loadgen: a threshold failed but the generator was saturated ({}): the result measures the generator, not the service",
            result.saturation.as_deref().unwrap_or("")
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAIL)
    }
}

/// The thresholds `result` fails, as messages.
pub fn threshold_failures(
    result: &StepResult,
    max_p99: Option<Duration>,
    max_error_pct: Option<f64>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(limit) = max_p99
        && result.latency_us.p99 as u128 > limit.as_micros()
    {
        out.push(format!(
            "corrected p99 {:.3} ms is above --max-p99 {:.3} ms",
            result.latency_us.p99 as f64 / 1000.0,
            limit.as_secs_f64() * 1000.0
        ));
    }
    if let Some(limit) = max_error_pct
        && result.error_rate_pct() > limit
    {
        out.push(format!(
            "error rate {:.3}% ({} of {}) is above --max-error-rate {limit}%",
            result.error_rate_pct(),
            result.errors,
            result.requests
        ));
    }
    out
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn percentile_line(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {} ms",
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.p999),
        ms(p.p9999),
        ms(p.max)
    )
}

/// The human-readable result.
pub fn summary(r: &StepResult) -> String {
    let status: Vec<String> = r.status.iter().map(|(c, n)| format!("{c}:{n}")).collect();
    let t = &r.transport_errors;
    let transport = if t.timeout + t.connect + t.other > 0 {
        format!(
            "  (timeouts {}, connect {}, other {})",
            t.timeout, t.connect, t.other
        )
    } else {
        String::new()
    };
    let read_delay = r.read_delay_us.as_ref().map_or(String::new(), |d| {
        format!("; read delay p99 {} ms", ms(d.p99))
    });
    format!(
        "{} @ {}/s for {}s against {} ({} arrivals, {} users)\n\
         \x20 sent       {} ({:.1}/s, {:.2}% of target), missed {}\n\
         \x20 errors     {} ({:.3}%){transport}   status {}\n\
         \x20 latency    {}   (corrected: from the intended send time)\n\
         \x20 uncorrected {}\n\
         \x20 send lag   p50 {}  p99 {}  max {} ms   (the generator's own: p50 {}  p99 {} ms; runtime lag p90 {} ms{read_delay})\n\
         \x20 generator  {} client, {}: cpu {:.0}%  max in flight {}/{}{}  saturated: {}\n",
        r.scenario,
        r.rate_target,
        r.duration_s,
        r.target,
        r.arrival,
        r.users,
        r.requests,
        r.rate_achieved,
        r.rate_achieved / r.rate_target * 100.0,
        r.missed,
        r.errors,
        r.error_rate_pct(),
        status.join(" "),
        percentile_line(&r.latency_us),
        percentile_line(&r.latency_uncorrected_us),
        ms(r.send_lag_us.p50),
        ms(r.send_lag_us.p99),
        ms(r.send_lag_us.max),
        ms(r.generator_lag_us.p50),
        ms(r.generator_lag_us.p99),
        ms(r.runtime_lag_us.p90),
        r.client,
        r.engine,
        r.generator_cpu * 100.0,
        r.max_in_flight,
        r.users,
        if r.pool_exhausted {
            " (pool exhausted)"
        } else {
            ""
        },
        match &r.saturation {
            Some(why) => format!("YES, {why}"),
            None => "no".into(),
        },
    ) + &r.service_cpu.map_or(String::new(), |c| {
        format!(
            "\x20 service    cpu {:.0}% of its CPUs (its process, from /proc)\n",
            c * 100.0
        )
    }) + &r
        .host_steal
        .filter(|s| *s >= crate::host_steal::NOTABLE)
        .map_or(String::new(), |s| {
            format!(
                "\x20 host       took {:.1}% of a CPU (steal in /proc/stat): its stalls are in the latencies\n",
                s * 100.0
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());

        for zero in ["0", "0s", "0ms", "0.0s"] {
            assert_eq!(parse_duration_or_zero(zero), Ok(Duration::ZERO), "{zero}");
        }
        assert_eq!(parse_duration_or_zero("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration_or_zero("0d").is_err());
        assert!(parse_duration_or_zero("-1s").is_err());
    }

    #[test]
    fn workers_and_cpus_parse() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "run",
            "--target",
            "http://x",
            "--rate",
            "1",
            "--duration",
            "1s",
            "--workers",
            "3",
            "--cpus",
            "0,2-3",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.workers, 3);
        assert_eq!(run.cpus, Some(CpuList(vec![0, 2, 3])));
        let cli = Cli::try_parse_from([
            "loadgen",
            "knee",
            "--target",
            "http://x",
            "--workers",
            "2",
            "--cpus",
            "1",
        ])
        .unwrap();
        let Command::Knee(knee) = cli.command else {
            panic!("not knee")
        };
        assert_eq!(knee.cpus, Some(CpuList(vec![1])));
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
