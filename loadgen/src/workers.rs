//! `--workers N`: one step's schedule sent by N local worker processes, each pinned to a CPU,
//! each sending a disjoint segment ([`crate::segment`]) from one agreed start, merged exactly
//! ([`crate::merge`]).
//!
//! Processes, not threads with a runtime each: the lean engine is one thread per process with
//! process-wide state (its connection pool, the process's CPU accounting, the interrupt flag),
//! so N engines in one process would share what must be each worker's own. A worker process is
//! this executable run as `loadgen run --segment I/N --start-at MS --json FILE`: the same path
//! as segments run by hand, and as remote workers. It costs a process start per step (a few
//! milliseconds, before the agreed start) and new connections per step.

use std::process::Stdio;
use std::time::Duration;

use crate::driver::{self, StepConfig, StepResult};
use crate::error::LoadgenError;
use crate::merge::{self, Merged, WorkerRow};
use crate::segment::unix_ms_now;

/// How far ahead of now the workers' agreed start is set: time for N processes to start, connect
/// their users and wait. `LOADGEN_WORKER_LEAD_MS` overrides it.
pub const LEAD: Duration = Duration::from_millis(1500);

fn lead() -> Duration {
    std::env::var("LOADGEN_WORKER_LEAD_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(LEAD, Duration::from_millis)
}

/// The arguments of worker `index` of `count` for `cfg`.
pub fn worker_args(
    cfg: &StepConfig,
    index: u64,
    count: u64,
    seed: u64,
    start_at_ms: u64,
) -> Vec<String> {
    vec![
        "run".into(),
        "--client".into(),
        driver::client().to_string(),
        "--target".into(),
        cfg.target.clone(),
        "--rate".into(),
        cfg.rate.to_string(),
        "--duration".into(),
        format!("{}us", cfg.duration.as_micros()),
        "--scenario".into(),
        cfg.scenario.to_string(),
        "--arrival".into(),
        cfg.arrival.to_string(),
        "--segment".into(),
        format!("{index}/{count}"),
        "--start-at".into(),
        start_at_ms.to_string(),
        "--schedule-seed".into(),
        seed.to_string(),
    ]
}

/// Runs `cfg` over `count` pinned worker processes and merges their segments.
pub async fn run_workers(
    cfg: &StepConfig,
    count: u64,
    cpus: Option<&[usize]>,
) -> Result<Merged, LoadgenError> {
    if driver::client() != driver::ClientKind::Lean {
        return Err(LoadgenError::Usage(
            "--workers needs the lean client".into(),
        ));
    }
    let cpus = match cpus {
        Some(c) => c.to_vec(),
        None => crate::spawn::allowed_cpus(),
    };
    let exe = std::env::current_exe().map_err(LoadgenError::Io)?;
    let dir = tempfile::tempdir().map_err(LoadgenError::Io)?;
    let codes = dir.path().join("codes.txt");
    std::fs::write(&codes, cfg.seeds.codes.join("\n"))
        .map_err(|e| LoadgenError::file(&codes, e))?;
    let seed: u64 = rand::random();
    let start_at = unix_ms_now() + lead().as_millis() as u64;
    let mut children = Vec::new();
    for i in 0..count {
        let json = dir.path().join(format!("worker-{i}.json"));
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(worker_args(cfg, i, count, seed, start_at))
            .arg("--json")
            .arg(&json)
            .arg("--seed-codes")
            .arg(&codes)
            .env("LOADGEN_NO_PROGRESS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match &cfg.api_key {
            Some(k) => cmd.env("LINKR_API_KEY", k),
            None => cmd.env_remove("LINKR_API_KEY"),
        };
        let cpu = (!cpus.is_empty()).then(|| cpus[i as usize % cpus.len()]);
        // SAFETY: only async-signal-safe calls (prctl, sched_setaffinity) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if let Some(cpu) = cpu {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(LoadgenError::Io)?;
        children.push((i, cpu, json, child));
    }
    let mut paths = Vec::new();
    let mut failures = Vec::new();
    for (i, cpu, json, child) in children {
        let out = child.wait_with_output().await.map_err(LoadgenError::Io)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(crate::cli::EXIT_INTERRUPTED as i32) || driver::interrupted() {
            return Err(LoadgenError::Interrupted);
        }
        // Exit 1 or 2 with a result written: thresholds (judged on the merged result), or a
        // saturated worker (shown in the table).
        if json.exists() {
            paths.push(json);
        } else {
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            failures.push(format!(
                "worker {i}/{count} (cpu {}) exited with {} and no result: {}",
                cpu.map_or("any".into(), |c| c.to_string()),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    if !failures.is_empty() {
        return Err(LoadgenError::Goose(failures.join("; ")));
    }
    merge::merge_files(&paths)
}

/// Whether the progress lines are off for this process (a worker of a coordinator).
pub fn quiet_worker() -> bool {
    std::env::var_os("LOADGEN_NO_PROGRESS").is_some_and(|v| v == "1")
}

/// Where a step's load comes from: this process, local worker processes, or remote workers.
#[derive(Debug, Clone, Default)]
pub enum Runner {
    /// One engine in this process.
    #[default]
    Local,
    /// `--workers N [--cpus LIST]`.
    Processes {
        count: u64,
        cpus: Option<Vec<usize>>,
    },
    /// `--workers-at URL,URL,...`.
    Remote {
        urls: Vec<String>,
        max_skew: Duration,
    },
}

impl Runner {
    /// The runner `loadgen knee`'s flags ask for.
    pub fn of_knee(args: &crate::cli::KneeArgs) -> Self {
        if !args.workers_at.is_empty() {
            Runner::Remote {
                urls: args.workers_at.clone(),
                max_skew: args.max_clock_skew,
            }
        } else if args.workers > 1 {
            Runner::Processes {
                count: args.workers,
                cpus: args.cpus.as_ref().map(|c| c.0.clone()),
            }
        } else {
            Runner::Local
        }
    }

    /// Runs one step; with workers, the merged result and the per-worker rows. Saturation is
    /// judged per worker: one saturated worker makes the step saturated.
    pub async fn run(
        &self,
        cfg: &StepConfig,
    ) -> Result<(StepResult, Vec<WorkerRow>), LoadgenError> {
        let merged = match self {
            Runner::Local => return Ok((driver::run_step(cfg).await?, Vec::new())),
            Runner::Processes { count, cpus } => run_workers(cfg, *count, cpus.as_deref()).await?,
            Runner::Remote { urls, max_skew } => {
                crate::worker::run_remote(cfg, urls, *max_skew).await?
            }
        };
        Ok((merged.result, merged.workers))
    }

    /// [`Runner::run`], the result only.
    pub async fn run_result(&self, cfg: &StepConfig) -> Result<StepResult, LoadgenError> {
        Ok(self.run(cfg).await?.0)
    }
}
