//! One open-model step on goose: a fixed arrival schedule shared by a pool of goose users.
//!
//! Goose users are a closed loop (each waits for its response). The step turns them into an open
//! model: the [pacer](crate::schedule) releases one slot per scheduled arrival, whatever the
//! server does, and whichever user is free takes it, sends it through goose, and records the
//! latency from the slot's *intended* time (coordinated omission corrected) and from the actual
//! send (uncorrected). The pool is sized so a slow server does not run it dry
//! ([`pool_size`]); if it does, the late slots still count from their intended time.
//!
//! One `GooseAttack` per step (`execute` consumes it), `--iterations 1`: each user runs one
//! transaction that loops over slots until the schedule ends, then the attack ends.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use goose::client::GooseClientBuilder;
use goose::goose::{
    GooseUser, Scenario as GooseScenario, Transaction, TransactionFunction, TransactionResult,
};
use goose::{GooseAttack, config::GooseConfiguration};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;

use crate::error::LoadgenError;
use crate::scenarios::{self, Plan, Scenario, Seeds};
use crate::schedule::{self, Arrival, Gate, Schedule};
use crate::service_cpu::ServiceCpu;
use crate::stats::{Percentiles, Recorder, Registry, Sample};

/// One step: drive `target` with `scenario` at `rate` requests/s for `duration`.
#[derive(Debug, Clone)]
pub struct StepConfig {
    /// Base URL (`http://host:port`; for `get`, the path to request too).
    pub target: String,
    pub scenario: Scenario,
    /// Requests per second.
    pub rate: f64,
    pub duration: Duration,
    pub arrival: Arrival,
    pub api_key: Option<String>,
    pub seeds: Arc<Seeds>,
    /// Where goose writes its HTML report for this step (turns goose's own metrics on).
    pub goose_report: Option<PathBuf>,
    /// The service's process on this machine (`knee --spawn`), whose CPU time the step reads.
    pub service_pid: Option<u32>,
}

/// The per-request path of a step: `lean` (a persistent HTTP/1.1 connection per user, the
/// engine's own or hyper's with `LOADGEN_H1=hyper`, requests built in advance, users on one
/// current-thread runtime) or `reqwest` (goose's own reqwest client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    #[default]
    Lean,
    Reqwest,
}

impl ClientKind {
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Lean => "lean",
            ClientKind::Reqwest => "reqwest",
        }
    }
}

impl std::fmt::Display for ClientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Send lag: from a request's intended send time to its actual send, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SendLag {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// Failures without an HTTP status.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TransportErrors {
    pub timeout: u64,
    pub connect: u64,
    pub other: u64,
}

/// The outcome of one step; serialises to the `run --json` object of the design.
#[derive(Clone, Serialize)]
pub struct StepResult {
    /// The per-request path that produced the step.
    pub client: ClientKind,
    /// How the step was driven, e.g. `lean-raw-h1/current-thread x1`.
    pub engine: String,
    pub scenario: Scenario,
    pub target: String,
    pub rate_target: f64,
    /// Requests sent per second of the step (`requests / duration_s`).
    pub rate_achieved: f64,
    pub duration_s: f64,
    /// Requests sent (every one completed or failed before the step returned).
    pub requests: u64,
    /// Requests without the expected status (transport failures included).
    pub errors: u64,
    /// Responses by HTTP status code.
    pub status: BTreeMap<String, u64>,
    /// Corrected latency: from the intended send time to the end of the response (for the lean
    /// client's own connection, when its last byte arrived in the socket, by the kernel's
    /// receive timestamp; otherwise when it was read).
    pub latency_us: Percentiles,
    /// Uncorrected latency: from the actual send to the end of the response.
    pub latency_uncorrected_us: Percentiles,
    /// The generator could not keep to the schedule: the result measures the generator, not the
    /// service. `saturation` says why.
    pub generator_saturated: bool,
    pub saturation: Option<String>,
    /// Every request's own lag was measured from when it could have left (the lean client, with
    /// a pool large enough for the rate), so no request was late by more than the largest own
    /// lag on the generator's account (see `knee::judge`).
    #[serde(skip)]
    pub own_lag_bounds_latency: bool,
    pub arrival: Arrival,
    pub send_lag_us: SendLag,
    /// The generator's own part of the send lag: from the later of the intended time and the
    /// moment the request's connection was free (its previous response arrived in the socket, by the
    /// kernel's timestamp; read, without one), to the send.
    pub generator_lag_us: SendLag,
    /// How late the generator's runtime ran a task due on a timer (a probe every 5 ms), in
    /// microseconds: high when the generator is short of CPU, whatever the server does.
    pub runtime_lag_us: SendLag,
    /// How long responses waited in their sockets before the generator had read them, from the
    /// kernel's receive timestamp (`SO_TIMESTAMPNS`) of their last byte, in microseconds (the
    /// lean client's own connection; null for the others, or when the kernel stamped fewer than
    /// 99% of the responses).
    pub read_delay_us: Option<SendLag>,
    pub transport_errors: TransportErrors,
    /// Goose users in the pool.
    pub users: u64,
    /// Most requests in flight at once.
    pub max_in_flight: u64,
    /// Every user was busy at some point: later arrivals left late (and count from their intended
    /// time). With the generator not saturated, the server held them.
    pub pool_exhausted: bool,
    /// Slots that fell due but were not sent before the step's end.
    pub missed: u64,
    /// Generator CPU time over the step, as a fraction of the CPUs it may run on.
    pub generator_cpu: f64,
    /// The service's CPU time over the step (every thread of its process, from `/proc`), as a
    /// fraction of the CPUs it may run on; null when its process is not known (`knee --spawn`
    /// knows it).
    pub service_cpu: Option<f64>,
    /// The largest share of one CPU's time that the hypervisor took during the schedule ("steal"
    /// in `/proc/stat`, every CPU of the machine): the host's stalls, which slow the service and
    /// the generator alike and show in neither's own figures. Null for the reqwest client and
    /// for merged steps.
    pub host_steal: Option<f64>,
    pub goose_metrics: bool,
    #[serde(skip)]
    pub corrected: Histogram<u64>,
    #[serde(skip)]
    pub uncorrected: Histogram<u64>,
    #[serde(skip)]
    pub send_lag: Histogram<u64>,
    #[serde(skip)]
    pub generator_lag: Histogram<u64>,
    /// Lateness of the runtime probe (µs).
    #[serde(skip)]
    pub runtime_lag: Histogram<u64>,
    /// How long responses waited in their sockets before they were read (µs).
    #[serde(skip)]
    pub read_delay: Option<Histogram<u64>>,
}

/// The JSON object (the histograms are left out: they print as thousands of counts).
impl std::fmt::Debug for StepResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(self) {
            Ok(json) => write!(f, "StepResult {json}"),
            Err(_) => f.write_str("StepResult { .. }"),
        }
    }
}

impl StepResult {
    /// Errors as a percentage of requests.
    pub fn error_rate_pct(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }
}

/// Latency the user pool absorbs before it runs dry: the pool holds `rate × allowance` users.
/// A server slower than that holds every user; later arrivals then leave late (and count from
/// their intended time), and the result says `pool_exhausted`.
pub const LATENCY_ALLOWANCE: Duration = Duration::from_secs(1);
pub const MIN_USERS: u64 = 32;
/// Each busy user holds a connection. Past this the allowance shrinks (1 s up to 4,000 req/s,
/// 100 ms at 40,000 req/s, about the generator's ceiling on one core). With 10,000 users a
/// generator that fell behind sent its backlog over thousands of new connections at once, and
/// connection set-up (and the search for free ephemeral ports) took its CPU per request from
/// 20 µs to 180 µs: it collapsed instead of degrading.
pub const MAX_USERS: u64 = 4_000;

/// Users for `rate`: `rate × LATENCY_ALLOWANCE`, within `MIN_USERS..=MAX_USERS`.
pub fn pool_size(rate: f64) -> u64 {
    ((rate * LATENCY_ALLOWANCE.as_secs_f64()).ceil() as u64).clamp(MIN_USERS, MAX_USERS)
}

/// Send-lag p99 beyond which (and beyond half the corrected p99) the generator counts as
/// saturated when its pool was not exhausted.
pub const LAG_P99_LIMIT: Duration = Duration::from_millis(2);
/// Send-lag p50 beyond which the generator counts as saturated when its pool was not exhausted.
pub const LAG_P50_LIMIT: Duration = Duration::from_millis(1);
/// Runtime-probe lateness p90 beyond which the generator counts as saturated (tokio's timer
/// wheel ticks every millisecond, so an idle runtime shows 0–1 ms; p90, not p99, so that a
/// descheduled moment on a busy machine is not taken for a generator that cannot keep up).
pub const RUNTIME_LAG_LIMIT: Duration = Duration::from_millis(5);
/// How often the runtime probe wakes.
const PROBE_EVERY: Duration = Duration::from_millis(5);
/// Generator CPU use (fraction of its CPUs) from which it counts as saturated.
pub const CPU_LIMIT: f64 = 0.90;
/// With the lean client at or above [`CPU_LIMIT`], the own send-lag p99 from which it counts as
/// saturated.
pub const LEAN_CPU_LAG_P99: Duration = Duration::from_millis(1);

static GOOSE_METRICS: AtomicBool = AtomicBool::new(false);
static PROGRESS: AtomicBool = AtomicBool::new(true);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Turn goose's own per-request metrics on for every step (off by default: they cost the
/// generator CPU and we record our own histograms). A step with `goose_report` has them on.
pub fn set_goose_metrics(on: bool) {
    GOOSE_METRICS.store(on, Ordering::Relaxed);
}

/// Turn the progress output of [`run_step`] on or off (on by default; stderr).
pub fn set_progress(on: bool) {
    PROGRESS.store(on, Ordering::Relaxed);
}

/// Whether Ctrl-C was pressed (after [`install_interrupt_handler`]). A running step stops early
/// and returns [`LoadgenError::Interrupted`]; callers stop starting new steps.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn stop_requested() -> bool {
    interrupted() || goose::is_killswitch_triggered()
}

/// Installs the process's Ctrl-C handler (before goose's, which then does not install its own):
/// the first Ctrl-C stops the running step and marks the process interrupted; a second one exits
/// at once (a spawned linkr gets SIGTERM from the kernel as its parent dies).
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\nloadgen: interrupted again, exiting");
            std::process::exit(130);
        }
        eprintln!("\nloadgen: interrupted, stopping (Ctrl-C again to exit at once)");
        goose::trigger_killswitch("interrupted");
    });
}

/// Replaces goose's stdout logger (installed once per process, it prints a warning per failed
/// request) with one that passes goose's errors to stderr.
pub fn quiet_goose_logs() {
    struct ErrorsOnly;
    impl log::Log for ErrorsOnly {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Error
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                eprintln!("goose: {}", r.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: ErrorsOnly = ErrorsOnly;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Error);
    }
}

struct Step {
    gate: Gate,
    schedule: Schedule,
    plan: Plan,
    registry: Arc<Registry>,
    client: reqwest013::Client,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Lateness of the runtime probe (µs), written by the probe task only.
    probe: std::sync::Mutex<Histogram<u64>>,
}

static CLIENT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The client [`run_step`] uses (the lean one unless set; `--client` sets it).
pub fn set_client(client: ClientKind) {
    CLIENT.store(client as u8, Ordering::Relaxed);
}

/// The client [`run_step`] uses.
pub fn client() -> ClientKind {
    match CLIENT.load(Ordering::Relaxed) {
        0 => ClientKind::Lean,
        _ => ClientKind::Reqwest,
    }
}

/// Runs one step with the process's client ([`set_client`]) and returns what it measured. The
/// step takes `duration` plus goose's start-up and the time the last responses take (bounded by
/// the 10 s request timeout).
pub async fn run_step(cfg: &StepConfig) -> Result<StepResult, LoadgenError> {
    run_step_with(cfg, client()).await
}

/// [`run_step`] with the given client.
pub async fn run_step_with(
    cfg: &StepConfig,
    client: ClientKind,
) -> Result<StepResult, LoadgenError> {
    run_segment_with(cfg, client, None).await
}

/// One segment of the step's schedule (see [`crate::segment`]): the slots `k` with
/// `k % count == index` of the schedule drawn from `segment.seed`, from the agreed start. The
/// result is judged against the segment's share of the rate.
pub async fn run_segment(
    cfg: &StepConfig,
    segment: &crate::segment::Segment,
) -> Result<StepResult, LoadgenError> {
    run_segment_with(cfg, client(), Some(segment)).await
}

async fn run_segment_with(
    cfg: &StepConfig,
    client: ClientKind,
    segment: Option<&crate::segment::Segment>,
) -> Result<StepResult, LoadgenError> {
    if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
        return Err(LoadgenError::Usage(format!(
            "rate must be > 0, got {}",
            cfg.rate
        )));
    }
    if cfg.duration.is_zero() {
        return Err(LoadgenError::Usage("duration must be > 0".into()));
    }
    if interrupted() {
        return Err(LoadgenError::Interrupted);
    }
    quiet_goose_logs();
    let measured = match (client, segment) {
        (ClientKind::Lean, _) => run_lean(cfg, segment).await?,
        (ClientKind::Reqwest, None) => run_reqwest(cfg).await?,
        (ClientKind::Reqwest, Some(_)) => {
            return Err(LoadgenError::Usage(
                "schedule segments (--segment, --workers) need the lean client".into(),
            ));
        }
    };
    if interrupted() {
        return Err(LoadgenError::Interrupted);
    }
    match segment {
        // Judged against this segment's share of the schedule.
        Some(seg) => {
            let share = seg.share(cfg.arrival, cfg.rate, cfg.duration);
            let judged = StepConfig {
                rate: cfg.rate * share,
                ..cfg.clone()
            };
            Ok(result(&judged, measured))
        }
        None => Ok(result(cfg, measured)),
    }
}

/// What a step's engine measured, before it is judged.
struct Measured {
    client: ClientKind,
    engine: String,
    rec: Recorder,
    probe: Histogram<u64>,
    /// CPU time of the generator over the schedule, as a fraction of the CPUs it drives from.
    generator_cpu: f64,
    /// The same for the service, when its process is known.
    service_cpu: Option<f64>,
    /// The largest share of one CPU the host took over the schedule (lean client only).
    host_steal: Option<f64>,
    users: u64,
    max_in_flight: u64,
    pool_exhausted: bool,
    /// The pool held fewer connections than [`crate::engine::lean::needed_connections`] (capped, or fixed by
    /// `LOADGEN_CONNECTIONS`): if it ran dry, too few connections may be why.
    pool_short: bool,
    /// How long responses waited in their sockets before the generator read them (the lean
    /// client's own connection, when the kernel stamped ≥ 99% of them).
    read_delay: Option<Histogram<u64>>,
    missed: u64,
    goose_metrics: bool,
}

/// goose's configuration for a step of `users` users that each run one transaction once.
fn goose_args(host: &str, users: u64, goose_metrics: bool, report: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--host",
        host,
        "--users",
        &users.to_string(),
        "--increase-rate",
        &(users * 100).to_string(),
        "--iterations",
        "1",
        "--quiet",
        "--no-print-metrics",
        "--no-error-summary",
        "--no-telnet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if goose_metrics {
        args.extend(["--no-transaction-metrics", "--no-scenario-metrics"].map(String::from));
    } else {
        args.push("--no-metrics".into());
    }
    if let Some(report) = report {
        args.push("--report-file".into());
        args.push(report.display().to_string());
    }
    args
}

fn goose_report_dir(report: Option<&Path>) -> Result<(), LoadgenError> {
    if let Some(dir) = report
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| LoadgenError::file(dir, e))?;
    }
    Ok(())
}

/// One goose attack of one scenario with one transaction.
fn attack(
    args: &[String],
    name: &'static str,
    transaction: TransactionFunction,
) -> Result<GooseAttack, LoadgenError> {
    let config = GooseConfiguration::parse_args_default(args)?;
    // One client built once and shared (goose otherwise builds a TLS-capable client per user,
    // seconds for thousands of users); each reqwest user then swaps in ours, which does not
    // redirect. Lean users do not use it.
    Ok(GooseAttack::initialize_with_config(config)?
        .set_client_builder_without_cookies(GooseClientBuilder::new().without_cookies())?
        .register_scenario(
            GooseScenario::new(name)
                .register_transaction(Transaction::new(transaction).set_name(name)),
        ))
}

/// How long the users of a step may take to connect before the step gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The lean path: the step runs on the engine thread (see [`crate::engine`]).
async fn run_lean(
    cfg: &StepConfig,
    segment: Option<&crate::segment::Segment>,
) -> Result<Measured, LoadgenError> {
    use crate::engine::{self, lean};
    let (host, _) = scenarios::split_target(&cfg.target)?;
    let endpoint = lean::Endpoint::resolve(&cfg.target)?;
    let plan = Plan::new(
        cfg.scenario,
        &cfg.target,
        cfg.api_key.as_deref(),
        &cfg.seeds,
    )?;
    let requests = lean::Requests::new(&plan, &endpoint)?;
    let (schedule, slots, share, start_at) = match segment {
        Some(seg) => {
            let schedule = Schedule::seeded(cfg.arrival, cfg.rate, cfg.duration, seg.seed);
            let slots = seg.slots(schedule.len());
            (schedule, slots, seg.count, seg.start_instant()?)
        }
        None => {
            let schedule = Schedule::new(cfg.arrival, cfg.rate, cfg.duration);
            let slots = schedule.len();
            (schedule, slots, 1, None)
        }
    };
    let seg = segment.map_or((0, 1), |s| (s.index, s.count));
    let users = lean::connections(cfg.rate / share as f64).min(slots.max(1));
    let pool_short = users < lean::needed_connections(cfg.rate / share as f64).min(slots.max(1));
    let stride = lean::stride_dispatch();
    let goose_metrics = GOOSE_METRICS.load(Ordering::Relaxed) || cfg.goose_report.is_some();
    goose_report_dir(cfg.goose_report.as_deref())?;
    let args = goose_args(&host, users, goose_metrics, cfg.goose_report.as_deref());
    let registry = Arc::new(Registry::default());
    let start = Arc::new(std::sync::OnceLock::new());
    let progress = PROGRESS.load(Ordering::Relaxed).then(|| {
        tokio::spawn(progress_loop(
            registry.clone(),
            start.clone(),
            cfg.duration,
            format!("{} @ {}/s", cfg.scenario, cfg.rate),
        ))
    });
    let (duration, name, rate) = (cfg.duration, cfg.scenario.name(), cfg.rate);
    let service_pid = cfg.service_pid;
    let step_registry = registry.clone();
    let outcome = engine::run(move || async move {
        let timer = engine::timer::Timer::for_rate(rate)?;
        let step = Arc::new(lean::LeanStep {
            endpoint,
            schedule,
            plan,
            requests,
            registry: step_registry,
            users,
            duration,
            goose_metrics,
            timer: timer.clone(),
            start,
            started: tokio::sync::watch::Sender::new(None),
            all_ready: tokio::sync::Notify::new(),
            next_user: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            ended: std::sync::atomic::AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            behind: AtomicU64::new(0),
            unstamped: AtomicU64::new(0),
            read_delay: std::sync::Mutex::new(crate::stats::new_histogram()),
            dispatch: lean::Dispatch::new(users),
            stride,
            sent: AtomicU64::new(0),
            probe: std::sync::Mutex::new(crate::stats::new_histogram()),
            cpu_start_us: AtomicU64::new(0),
            cpu_end_us: AtomicU64::new(0),
            service: service_pid.and_then(ServiceCpu::of),
            service_start: std::sync::OnceLock::new(),
            service_end: std::sync::OnceLock::new(),
            steal_start: std::sync::OnceLock::new(),
            steal_end: std::sync::OnceLock::new(),
            segment: seg,
            start_at,
        });
        if !execute_lean(&step, &args, name, &timer).await? {
            return Err(LoadgenError::Goose(format!(
                "the step never started: {} of {users} goose users connected within {READY_TIMEOUT:?}",
                step.ready.load(Ordering::Relaxed)
            )));
        }
        Ok::<_, LoadgenError>(lean_measured(&step, slots, pool_short))
    })
    .await;
    stop_progress(progress).await;
    let mut measured = outcome??;
    measured.rec = registry.snapshot();
    Ok(measured)
}

/// Runs goose's attack for a lean step, with the timer's driver, the runtime probe and the
/// supervisor that starts and ends the schedule beside it: whether the schedule started.
async fn execute_lean(
    step: &Arc<crate::engine::lean::LeanStep>,
    args: &[String],
    name: &'static str,
    timer: &Arc<crate::engine::timer::Timer>,
) -> Result<bool, LoadgenError> {
    use crate::engine::lean;
    let for_users = step.clone();
    let transaction: TransactionFunction = Arc::new(move |user| {
        let step = for_users.clone();
        Box::pin(async move { lean::drive_user(step, user).await })
    });
    let attack = attack(args, name, transaction)?;
    let driver = tokio::spawn(timer.clone().drive());
    let probe = tokio::spawn(lean::probe(step.clone()));
    let supervisor = tokio::spawn(lean::supervise(step.clone(), READY_TIMEOUT, stop_requested));
    let executed = {
        let _stdout = StdoutAside::enter();
        attack.execute().await
    };
    // goose may stop before the schedule's end (Ctrl-C): end it.
    timer.abort();
    let started = supervisor.await.unwrap_or(false);
    probe.abort();
    let _ = probe.await;
    driver.abort();
    let _ = driver.await;
    executed?;
    Ok(started)
}

/// What a lean step measured, but its latencies (the caller takes them from the registry).
fn lean_measured(step: &crate::engine::lean::LeanStep, slots: u64, pool_short: bool) -> Measured {
    let cpu_us = step
        .cpu_end_us
        .load(Ordering::Relaxed)
        .saturating_sub(step.cpu_start_us.load(Ordering::Relaxed));
    let sent = step.sent.load(Ordering::Relaxed);
    Measured {
        client: ClientKind::Lean,
        engine: format!(
            "{}, {} dispatch",
            crate::engine::engine(),
            if step.stride { "stride" } else { "stack" }
        ),
        rec: Recorder::default(),
        probe: step.probe.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        generator_cpu: cpu_us as f64 / step.duration.as_micros() as f64,
        service_cpu: step.service_share(),
        host_steal: step.host_steal(),
        users: step.users,
        max_in_flight: step.max_in_flight.load(Ordering::Relaxed),
        pool_exhausted: step.behind.load(Ordering::Relaxed) > 0,
        pool_short,
        read_delay: (step.unstamped.load(Ordering::Relaxed) * 100 <= sent).then(|| {
            step.read_delay
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }),
        missed: slots.saturating_sub(sent),
        goose_metrics: step.goose_metrics,
    }
}

/// The reqwest path: goose's own client on the caller's runtime, slots released by the pacer
/// thread.
async fn run_reqwest(cfg: &StepConfig) -> Result<Measured, LoadgenError> {
    let (host, _) = scenarios::split_target(&cfg.target)?;
    let plan = Plan::new(
        cfg.scenario,
        &cfg.target,
        cfg.api_key.as_deref(),
        &cfg.seeds,
    )?;
    let schedule = Schedule::new(cfg.arrival, cfg.rate, cfg.duration);
    let users = pool_size(cfg.rate).min(schedule.len().max(1));
    let pool_short =
        users < crate::engine::lean::needed_connections(cfg.rate).min(schedule.len().max(1));
    let goose_metrics = GOOSE_METRICS.load(Ordering::Relaxed) || cfg.goose_report.is_some();

    let step = Arc::new(Step {
        gate: Gate::new(),
        schedule,
        plan,
        registry: Arc::new(Registry::default()),
        client: scenarios::shared_client()?,
        in_flight: AtomicU64::new(0),
        max_in_flight: AtomicU64::new(0),
        probe: std::sync::Mutex::new(crate::stats::new_histogram()),
    });
    goose_report_dir(cfg.goose_report.as_deref())?;
    let args = goose_args(&host, users, goose_metrics, cfg.goose_report.as_deref());
    let for_users = step.clone();
    let transaction: TransactionFunction = Arc::new(move |user| {
        let step = for_users.clone();
        Box::pin(async move { drive_user(step, user).await })
    });
    let attack = attack(&args, cfg.scenario.name(), transaction)?;

    let pacer = {
        let step = step.clone();
        let duration = cfg.duration;
        std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(move || {
                schedule::pace(&step.gate, &step.schedule, duration, users, stop_requested)
            })
            .map_err(LoadgenError::Io)?
    };

    let probe = tokio::spawn(probe_runtime(step.clone()));
    let start = Arc::new(std::sync::OnceLock::new());
    let progress = PROGRESS.load(Ordering::Relaxed).then(|| {
        let registry = step.registry.clone();
        let (step, start) = (step.clone(), start.clone());
        let shown = start.clone();
        tokio::spawn(async move {
            loop {
                if let Some(&t0) = step.gate.start.get() {
                    let _ = start.set(t0);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        tokio::spawn(progress_loop(
            registry,
            shown,
            cfg.duration,
            format!("{} @ {}/s", cfg.scenario, cfg.rate),
        ))
    });

    let outcome = {
        let _stdout = StdoutAside::enter();
        attack.execute().await
    };
    step.gate.abort.store(true, Ordering::Release);
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    stop_progress(progress).await;
    outcome?;
    if interrupted() {
        return Err(LoadgenError::Interrupted);
    }
    if step.gate.start.get().is_none() {
        return Err(LoadgenError::Goose(format!(
            "the step never started: {} of {users} goose users reached the schedule",
            step.gate.ready.load(Ordering::Relaxed)
        )));
    }
    probe.abort();
    let _ = probe.await;
    let cpu_us = step
        .gate
        .cpu_end_us
        .load(Ordering::Relaxed)
        .saturating_sub(step.gate.cpu_start_us.load(Ordering::Relaxed));
    let released = step.gate.released.load(Ordering::Relaxed);
    let claimed = step.gate.claimed.load(Ordering::Relaxed).min(released);
    let max_in_flight = step.max_in_flight.load(Ordering::Relaxed);
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    Ok(Measured {
        client: ClientKind::Reqwest,
        engine: format!("goose-reqwest/multi-thread x{workers} + pacer thread"),
        rec: step.registry.snapshot(),
        probe: step.probe.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        generator_cpu: cpu_us as f64 / (cfg.duration.as_micros() as f64 * available_cpus() as f64),
        service_cpu: None,
        host_steal: None,
        users,
        max_in_flight,
        pool_exhausted: max_in_flight >= users,
        pool_short,
        read_delay: None,
        missed: released - claimed,
        goose_metrics,
    })
}

async fn stop_progress(progress: Option<tokio::task::JoinHandle<()>>) {
    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K");
        }
    }
}

fn lag(h: &Histogram<u64>) -> SendLag {
    SendLag {
        p50: quantile(h, 0.50),
        p90: quantile(h, 0.90),
        p99: quantile(h, 0.99),
        max: h.max(),
    }
}

/// The step's result: the measurements and the judgement whether the generator kept up.
fn result(cfg: &StepConfig, m: Measured) -> StepResult {
    let rec = m.rec;
    let runtime_lag = lag(&m.probe);
    let read_delay = m.read_delay.as_ref().map(lag);
    let duration_s = cfg.duration.as_secs_f64();
    let latency_us = Percentiles::of(&rec.corrected);
    let send_lag = lag(&rec.send_lag);
    let generator_lag = lag(&rec.generator_lag);
    let rate_achieved = rec.requests as f64 / duration_s;
    let saturation = saturation_reason(&Evidence {
        rate_target: cfg.rate,
        rate_achieved,
        lag_p50_us: generator_lag.p50,
        lag_p99_us: generator_lag.p99,
        late: rec
            .generator_lag
            .count_between(lag_limit_us(latency_us.p99) + 1, u64::MAX),
        corrected_p99_us: latency_us.p99,
        generator_cpu: m.generator_cpu,
        runtime_lag_p90_us: runtime_lag.p90,
        pool_exhausted: m.pool_exhausted,
        pool_short: m.pool_short,
        users: m.users,
        lag_is_generators: m.client == ClientKind::Lean,
        read_delay_p99_us: read_delay.map(|d| d.p99),
    });
    let status = rec
        .status
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(code, n)| (code.to_string(), *n))
        .collect();
    StepResult {
        client: m.client,
        engine: m.engine,
        scenario: cfg.scenario,
        target: cfg.target.clone(),
        rate_target: cfg.rate,
        rate_achieved: (rate_achieved * 10.0).round() / 10.0,
        duration_s,
        requests: rec.requests,
        errors: rec.errors,
        status,
        latency_uncorrected_us: Percentiles::of(&rec.uncorrected),
        latency_us,
        generator_saturated: saturation.is_some(),
        saturation,
        own_lag_bounds_latency: m.client == ClientKind::Lean && !(m.pool_exhausted && m.pool_short),
        arrival: cfg.arrival,
        send_lag_us: send_lag,
        generator_lag_us: generator_lag,
        runtime_lag_us: runtime_lag,
        read_delay_us: read_delay,
        transport_errors: TransportErrors {
            timeout: rec.timeouts,
            connect: rec.connect_errors,
            other: rec.other_errors,
        },
        users: m.users,
        max_in_flight: m.max_in_flight,
        pool_exhausted: m.pool_exhausted,
        missed: m.missed,
        generator_cpu: (m.generator_cpu * 1000.0).round() / 1000.0,
        service_cpu: m.service_cpu.map(|c| (c * 1000.0).round() / 1000.0),
        host_steal: m.host_steal.map(|c| (c * 1000.0).round() / 1000.0),
        goose_metrics: m.goose_metrics,
        corrected: rec.corrected,
        uncorrected: rec.uncorrected,
        send_lag: rec.send_lag,
        generator_lag: rec.generator_lag,
        runtime_lag: m.probe,
        read_delay: m.read_delay,
    }
}

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Let goose's own console lines ("N users launched.") through, to stderr (`LOADGEN_VERBOSE=1`
/// does too). Off by default: they are noise in the lab's output.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed) || std::env::var_os("LOADGEN_VERBOSE").is_some_and(|v| v == "1")
}

/// While alive, file descriptor 1 points at /dev/null (at stderr when verbose): goose prints
/// "N users launched." to stdout whatever it is told, and stdout carries our results (nothing
/// of ours is printed to stdout while a step runs).
struct StdoutAside;

static STDOUT_REDIRECT: std::sync::Mutex<(u32, i32)> = std::sync::Mutex::new((0, -1));

impl StdoutAside {
    fn enter() -> Self {
        use std::io::Write;
        let mut state = STDOUT_REDIRECT.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 == 0 {
            let _ = std::io::stdout().flush();
            let target = if verbose() {
                2
            } else {
                // SAFETY: open(2) of a constant path; the descriptor is closed below.
                unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) }
            };
            // SAFETY: dup/dup2 on the process's own standard descriptors.
            unsafe {
                let saved = libc::dup(1);
                if saved >= 0 && target >= 0 && libc::dup2(target, 1) >= 0 {
                    state.1 = saved;
                } else if saved >= 0 {
                    libc::close(saved);
                }
                if target > 2 {
                    libc::close(target);
                }
            }
        }
        state.0 += 1;
        Self
    }
}

impl Drop for StdoutAside {
    fn drop(&mut self) {
        use std::io::Write;
        let mut state = STDOUT_REDIRECT.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        if state.0 == 0 && state.1 >= 0 {
            let _ = std::io::stdout().flush();
            // SAFETY: restores the descriptor saved by `enter`.
            unsafe {
                libc::dup2(state.1, 1);
                libc::close(state.1);
            }
            state.1 = -1;
        }
    }
}

fn quantile(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

/// What [`saturation_reason`] judges from.
#[derive(Debug, Clone, Copy)]
pub struct Evidence {
    pub rate_target: f64,
    pub rate_achieved: f64,
    pub lag_p50_us: u64,
    pub lag_p99_us: u64,
    /// Requests whose send lag exceeded [`lag_limit_us`].
    pub late: u64,
    pub corrected_p99_us: u64,
    pub generator_cpu: f64,
    /// p90 lateness of the runtime probe (µs).
    pub runtime_lag_p90_us: u64,
    pub pool_exhausted: bool,
    /// The pool had fewer connections than the rate needs ([`crate::engine::lean::needed_connections`]).
    pub pool_short: bool,
    pub users: u64,
    /// The lags are the generator's own (measured from when the request's connection was free,
    /// as the lean client does): they judge the generator even when the server held every
    /// connection.
    pub lag_is_generators: bool,
    /// p99 of how long responses waited in their sockets before the generator read them (the
    /// lean client's own connection, from the kernel's receive timestamps; None without them).
    pub read_delay_p99_us: Option<u64>,
}

/// Send lag above which a request counts as late: 2 ms, or half the corrected p99 if larger.
pub fn lag_limit_us(corrected_p99_us: u64) -> u64 {
    (LAG_P99_LIMIT.as_micros() as u64).max(corrected_p99_us / 2)
}

/// Late requests (see [`lag_limit_us`]) below this many are a hiccup (a descheduled thread on a
/// busy machine delays a few), not a generator that cannot keep up.
pub const MIN_LATE: u64 = 50;

/// Why the generator, not the service, limited the step (None: it kept up).
///
/// - It used ≥ 90% of its CPUs: whatever else happened, its own delays are in the numbers (the
///   lean client, which measures its own lateness to the µs, only once its own send-lag p99 is
///   over 1 ms as well).
/// - Its runtime ran a timer-woken probe more than 5 ms late at p90: ready work waited for CPU
///   (its own backlog, or other processes on its cores). This holds even when the pool ran dry:
///   a generator that falls behind sends its backlog late, all at once, and exhausts the pool.
/// - Its pool was not exhausted (a user was free whenever a slot fell due), and yet it sent
///   short (< 99% of the rate), or systematically late (send-lag p50 over 1 ms), or the lag made
///   up most of the tail (send-lag p99 over 2 ms and over half the corrected p99, for at least
///   [`MIN_LATE`] requests). That lag is the generator's own (CPU, scheduling, a busy machine),
///   not the server's. The lean client measures its lag from when the request's connection was
///   free, so its lag judges it whether or not the pool was exhausted.
///
/// An exhausted pool with CPU to spare means the server held every user: the service is the
/// bound, and the late arrivals count from their intended time.
pub fn saturation_reason(e: &Evidence) -> Option<String> {
    let free = |e: &Evidence| {
        if e.lag_is_generators {
            "its own (from when the connection was free)"
        } else {
            "with free users"
        }
    };
    // The lean client measures its own lateness to the µs (a precise timer, lag from when the
    // connection was free): near its CPU limit it counts as saturated once that lateness shows
    // (p99 over 1 ms), not on the CPU figure alone. When every connection was busy, a
    // generator short of CPU reads its responses late, which holds their connections (a knee
    // step at 86,700 req/s with the generator at 99% CPU, every connection busy and an
    // uncorrected p99 of 3.4 ms had a corrected p50 of 41 ms). With the kernel's receive
    // timestamps its own lag runs from when the connection's answer arrived, so that wait is
    // in it; without them, a dry pool counts against it.
    let busy_and_late = !e.lag_is_generators
        || e.lag_p99_us > LEAN_CPU_LAG_P99.as_micros() as u64
        || (e.pool_exhausted && e.read_delay_p99_us.is_none());
    if e.generator_cpu >= CPU_LIMIT && busy_and_late {
        return Some(format!(
            "generator CPU at {:.0}% of its cores",
            e.generator_cpu * 100.0
        ));
    }
    if e.runtime_lag_p90_us > RUNTIME_LAG_LIMIT.as_micros() as u64 {
        return Some(format!(
            "the generator's runtime ran timers {:.1} ms late at p90 (short of CPU: its own work or other processes on its cores)",
            e.runtime_lag_p90_us as f64 / 1000.0
        ));
    }
    if e.pool_exhausted && e.pool_short {
        return Some(format!(
            "all {} connections were busy, fewer than the rate needs (rate x {} ms): too few connections, \
             not evidence about the service",
            e.users,
            crate::engine::lean::allowance().as_millis()
        ));
    }
    if e.pool_exhausted && !e.lag_is_generators {
        return None;
    }
    if !e.pool_exhausted && e.rate_achieved < 0.99 * e.rate_target {
        return Some(format!(
            "sent {:.1}/s of {:.1}/s with free users in a pool of {}",
            e.rate_achieved, e.rate_target, e.users
        ));
    }
    if e.lag_p50_us > LAG_P50_LIMIT.as_micros() as u64 {
        return Some(format!(
            "send lag p50 {:.2} ms {} (the generator sent late throughout)",
            e.lag_p50_us as f64 / 1000.0,
            free(e)
        ));
    }
    if e.lag_p99_us > lag_limit_us(e.corrected_p99_us) && e.late >= MIN_LATE {
        return Some(format!(
            "send lag p99 {:.2} ms of a corrected p99 of {:.2} ms, {} (the generator fell behind its schedule)",
            e.lag_p99_us as f64 / 1000.0,
            e.corrected_p99_us as f64 / 1000.0,
            free(e)
        ));
    }
    None
}

/// Wakes every [`PROBE_EVERY`] during the schedule and records how late it ran: the delay a
/// ready task waits for the generator's runtime. A server that is slow leaves the runtime idle (the
/// probe is punctual); a generator short of CPU, or with a backlog of ready users, makes it late.
async fn probe_runtime(step: Arc<Step>) {
    let t0 = loop {
        if let Some(&t0) = step.gate.start.get() {
            break t0;
        }
        if step.gate.ended.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mut next = tokio::time::Instant::from_std(t0);
    loop {
        next += PROBE_EVERY;
        tokio::time::sleep_until(next).await;
        if step.gate.ended.load(Ordering::Relaxed) {
            return;
        }
        let late = tokio::time::Instant::now().saturating_duration_since(next);
        step.probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(late.as_micros() as u64);
    }
}

/// One goose user: take due slots until the schedule ends, send each, record it.
async fn drive_user(step: Arc<Step>, user: &mut GooseUser) -> TransactionResult {
    user.client = step.client.clone();
    let mut rng = SmallRng::seed_from_u64(user.weighted_users_index as u64 ^ 0x9E37_79B9_7F4A_7C15);
    step.gate.ready.fetch_add(1, Ordering::AcqRel);
    loop {
        match step.gate.permits.try_acquire() {
            Ok(p) => p.forget(),
            Err(tokio::sync::TryAcquireError::Closed) => break,
            Err(tokio::sync::TryAcquireError::NoPermits) => match step.gate.permits.acquire().await
            {
                Ok(p) => p.forget(),
                Err(_) => break,
            },
        }
        if step.gate.ended.load(Ordering::Acquire) {
            break;
        }
        let slot = step.gate.claimed.fetch_add(1, Ordering::AcqRel);
        let Some(&t0) = step.gate.start.get() else {
            break;
        };
        if slot >= step.schedule.len() {
            break;
        }
        let intended = t0 + step.schedule.offset(slot);
        let op = step.plan.pick(&mut rng, slot);
        let in_flight = step.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        step.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
        let sent = Instant::now();
        let outcome = step.plan.send(user, op, slot, &mut rng).await;
        let done = Instant::now();
        step.in_flight.fetch_sub(1, Ordering::Relaxed);
        step.registry.record(&Sample {
            corrected_us: done.saturating_duration_since(intended).as_micros() as u64,
            uncorrected_us: done.saturating_duration_since(sent).as_micros() as u64,
            send_lag_us: sent.saturating_duration_since(intended).as_micros() as u64,
            // The user was free when it claimed the slot: all of its lag is the generator's.
            generator_lag_us: sent.saturating_duration_since(intended).as_micros() as u64,
            outcome,
        });
    }
    Ok(())
}

async fn progress_loop(
    registry: Arc<Registry>,
    start: Arc<std::sync::OnceLock<Instant>>,
    duration: Duration,
    label: String,
) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(2)
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(&t0) = start.get() else {
            continue;
        };
        let elapsed = t0.elapsed().min(duration);
        let (n, errors, p99) = registry.progress();
        let line = format!(
            "[{label}] {:5.1}s/{:.0}s  sent {:>8}  {:>9.1}/s  p99 {:>9.3} ms  errors {errors}",
            elapsed.as_secs_f64(),
            duration.as_secs_f64(),
            n,
            n as f64 / elapsed.as_secs_f64().max(1e-3),
            p99 as f64 / 1000.0,
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        if elapsed >= duration {
            if tty {
                eprintln!();
            }
            return;
        }
    }
}

/// CPUs this process may run on (its affinity mask).
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Evidence {
        Evidence {
            rate_target: 1000.0,
            rate_achieved: 1000.0,
            lag_p50_us: 50,
            lag_p99_us: 300,
            late: 0,
            corrected_p99_us: 900,
            generator_cpu: 0.3,
            runtime_lag_p90_us: 800,
            pool_exhausted: false,
            pool_short: false,
            users: 1000,
            lag_is_generators: false,
            read_delay_p99_us: None,
        }
    }

    #[test]
    fn a_generator_that_keeps_up_is_not_saturated() {
        assert_eq!(saturation_reason(&ok()), None);
        // A slow server with some generator lag: the lag is a small part of the latency.
        assert_eq!(
            saturation_reason(&Evidence {
                lag_p99_us: 5_000,
                corrected_p99_us: 80_000,
                ..ok()
            }),
            None
        );
    }

    #[test]
    fn cpu_shortfall_or_lag_with_free_users_is_saturation() {
        assert!(
            saturation_reason(&Evidence {
                generator_cpu: 0.95,
                ..ok()
            })
            .unwrap()
            .contains("CPU")
        );
        assert!(
            saturation_reason(&Evidence {
                rate_achieved: 980.0,
                ..ok()
            })
            .unwrap()
            .contains("sent")
        );
        assert!(
            saturation_reason(&Evidence {
                lag_p50_us: 1_500,
                ..ok()
            })
            .unwrap()
            .contains("p50")
        );
        let late = Evidence {
            lag_p99_us: 3_000,
            corrected_p99_us: 4_000,
            late: 200,
            ..ok()
        };
        assert!(saturation_reason(&late).unwrap().contains("p99"));
        // A few late requests are a hiccup.
        assert_eq!(saturation_reason(&Evidence { late: 5, ..late }), None);
        assert!(
            saturation_reason(&Evidence {
                runtime_lag_p90_us: 40_000,
                ..ok()
            })
            .unwrap()
            .contains("runtime")
        );
        // An overloaded generator exhausts its pool too: the runtime lag still tells.
        assert!(
            saturation_reason(&Evidence {
                runtime_lag_p90_us: 40_000,
                pool_exhausted: true,
                ..ok()
            })
            .is_some()
        );
        // The lean client near its CPU limit: saturated once its own lag shows, not before.
        let lean_busy = Evidence {
            generator_cpu: 0.95,
            lag_is_generators: true,
            lag_p99_us: 120,
            ..ok()
        };
        assert_eq!(saturation_reason(&lean_busy), None);
        // ... or, without the kernel's timestamps, once every connection was busy: its lag may
        // hide in the wait for one,
        let dry = Evidence {
            pool_exhausted: true,
            ..lean_busy
        };
        assert!(saturation_reason(&dry).unwrap().contains("CPU"));
        // but with them, its own lag runs from when each connection's answer arrived, so late
        // reads that held connections are in it: the lag decides.
        let stamped = Evidence {
            read_delay_p99_us: Some(1_500),
            ..dry
        };
        assert_eq!(saturation_reason(&stamped), None);
        assert!(
            saturation_reason(&Evidence {
                lag_p99_us: 1_500,
                ..stamped
            })
            .unwrap()
            .contains("CPU")
        );
        assert!(
            saturation_reason(&Evidence {
                lag_p99_us: 1_500,
                ..lean_busy
            })
            .unwrap()
            .contains("CPU")
        );
        // CPU saturation counts even with an exhausted pool.
        assert!(
            saturation_reason(&Evidence {
                generator_cpu: 0.97,
                pool_exhausted: true,
                ..ok()
            })
            .is_some()
        );
    }

    #[test]
    fn an_exhausted_pool_with_cpu_to_spare_is_the_service() {
        let e = Evidence {
            pool_exhausted: true,
            rate_achieved: 500.0,
            lag_p50_us: 400_000,
            lag_p99_us: 900_000,
            ..ok()
        };
        assert_eq!(saturation_reason(&e), None);
        // The lean client's lag is its own, measured from when the connection was free: a
        // server that held every connection does not excuse it (and lag from the server's
        // backlog never shows in it).
        let lean = Evidence {
            lag_is_generators: true,
            ..e
        };
        assert!(saturation_reason(&lean).unwrap().contains("p50"));
        assert_eq!(
            saturation_reason(&Evidence {
                lag_p50_us: 20,
                lag_p99_us: 150,
                ..lean
            }),
            None
        );
    }

    #[test]
    fn a_pool_short_of_what_the_rate_needs_that_ran_dry_is_the_generator() {
        let e = Evidence {
            pool_exhausted: true,
            pool_short: true,
            lag_is_generators: true,
            ..ok()
        };
        assert!(
            saturation_reason(&e)
                .unwrap()
                .contains("too few connections")
        );
        // Deep enough, or not run dry: no verdict from the pool's size.
        assert_eq!(
            saturation_reason(&Evidence {
                pool_short: false,
                ..e
            }),
            None
        );
        assert_eq!(
            saturation_reason(&Evidence {
                pool_exhausted: false,
                ..e
            }),
            None
        );
    }

    #[test]
    fn the_pool_covers_a_second_of_arrivals_within_bounds() {
        assert_eq!(pool_size(1.0), MIN_USERS);
        assert_eq!(pool_size(2000.0), 2000);
        assert_eq!(pool_size(1e6), MAX_USERS);
    }
}
