//! `--spawn`: start the release linkr for a load run, pinned away from the generator, and stop it
//! gracefully afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::LoadgenError;

/// How long linkr may take to answer 200 on `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long linkr may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which CPUs the generator and the service get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuPlan {
    pub generator: Vec<usize>,
    pub service: Vec<usize>,
}

impl CpuPlan {
    /// Splits `allowed` (at least 2 CPUs): the lower half for the generator, the upper half for
    /// the service (on 2 CPUs: loadgen on the first, linkr on the second).
    pub fn split(allowed: &[usize]) -> Option<Self> {
        if allowed.len() < 2 {
            return None;
        }
        let half = allowed.len() / 2;
        Some(Self {
            generator: allowed[..half].to_vec(),
            service: allowed[half..].to_vec(),
        })
    }
}

static PLAN: OnceLock<Option<CpuPlan>> = OnceLock::new();

/// Pins the calling thread (call it from `main` before the tokio runtime starts, so every thread
/// inherits it) to the generator's CPUs and remembers the plan for [`spawn_linkr`]. Returns what
/// it did, for the output.
pub fn pin_generator() -> String {
    let plan = PLAN.get_or_init(|| CpuPlan::split(&allowed_cpus()));
    match plan {
        Some(plan) => match set_affinity(0, &plan.generator) {
            Ok(()) => format!("loadgen pinned to CPU {}", list(&plan.generator)),
            Err(e) => format!("loadgen not pinned ({e})"),
        },
        None => "loadgen not pinned (one CPU: generator and linkr share it)".into(),
    }
}

fn current_plan() -> Option<CpuPlan> {
    match PLAN.get() {
        Some(plan) => plan.clone(),
        None => CpuPlan::split(&allowed_cpus()),
    }
}

/// A linkr started by [`spawn_linkr`]. Stop it with [`Spawned::stop`]; dropping it sends SIGTERM
/// and waits a little, as a last resort.
pub struct Spawned {
    /// `http://127.0.0.1:PORT` of the main listener.
    pub base_url: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin_url: String,
    /// An admin API key made up for this run.
    pub api_key: String,
    pub pid: u32,
    /// What was pinned where (e.g. "linkr pinned to CPU 1").
    pub pinning: String,
    /// linkr's stdout and stderr.
    pub log_path: PathBuf,
    child: Option<tokio::process::Child>,
    _data_dir: tempfile::TempDir,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned")
            .field("base_url", &self.base_url)
            .field("admin_url", &self.admin_url)
            .field("pid", &self.pid)
            .field("pinning", &self.pinning)
            .finish_non_exhaustive()
    }
}

/// The linkr binary: `explicit`, or `linkr` beside the running executable (or beside its parent
/// directory when it runs from `target/*/deps`, as tests do).
pub fn find_linkr(explicit: Option<PathBuf>) -> Result<PathBuf, LoadgenError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(LoadgenError::LinkrNotFound(p))
        };
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut candidates = vec![dir.join("linkr")];
    if dir.file_name().is_some_and(|n| n == "deps")
        && let Some(up) = dir.parent()
    {
        candidates.push(up.join("linkr"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| LoadgenError::LinkrNotFound(candidates[0].clone()))
}

/// Starts linkr (`linkr` or the one beside this executable) on free loopback ports with a fresh
/// data dir, a made-up admin key, no rate limit and no access log, pinned to the service's CPUs;
/// returns once `/readyz` answers 200.
pub async fn spawn_linkr(linkr: Option<PathBuf>) -> Result<Spawned, LoadgenError> {
    let bin = find_linkr(linkr)?;
    let mut last_err = None;
    // A port picked free can be taken before linkr binds it: try again with new ones.
    for _ in 0..3 {
        match spawn_once(&bin).await {
            Ok(s) => return Ok(s),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.expect("three attempts"))
}

async fn spawn_once(bin: &Path) -> Result<Spawned, LoadgenError> {
    let data_dir = tempfile::Builder::new()
        .prefix("loadgen-linkr-")
        .tempdir()?;
    let log_path = data_dir.path().join("linkr.log");
    let log = std::fs::File::create(&log_path).map_err(|e| LoadgenError::file(&log_path, e))?;
    let (addr, admin) = (free_port()?, free_port()?);
    let api_key = random_key();
    let plan = current_plan();
    let service_cpus = plan.as_ref().map(|p| p.service.clone());

    let mut cmd = tokio::process::Command::new(bin);
    cmd.env("LINKR_ADDR", format!("127.0.0.1:{addr}"))
        .env("LINKR_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env("LINKR_DATA_DIR", data_dir.path().join("data"))
        .env("LINKR_API_KEYS", format!("loadgen:{api_key}:admin"))
        .env_remove("LINKR_API_KEYS_FILE")
        .env("LINKR_RATE_LIMIT", "0")
        .env("LINKR_ACCESS_LOG", "off")
        .env("LINKR_LOG", "warn")
        .env("LINKR_SHUTDOWN_DELAY", "0s")
        .env("LINKR_SHUTDOWN_TIMEOUT", "10s")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (prctl, sched_setaffinity) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // If loadgen dies without stopping linkr, the kernel sends linkr SIGTERM.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
            if let Some(cpus) = &service_cpus {
                let _ = set_affinity(0, cpus);
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| LoadgenError::Spawn(format!("{}: {e}", bin.display())))?;
    let pid = child.id().unwrap_or_default();
    let pinning = match &plan {
        Some(p) => format!("linkr pinned to CPU {}", list(&p.service)),
        None => "linkr not pinned (one CPU)".into(),
    };
    let mut spawned = Spawned {
        base_url: format!("http://127.0.0.1:{addr}"),
        admin_url: format!("http://127.0.0.1:{admin}"),
        api_key,
        pid,
        pinning,
        log_path,
        child: Some(child),
        _data_dir: data_dir,
    };
    match spawned.wait_ready().await {
        Ok(()) => Ok(spawned),
        Err(e) => {
            let _ = spawned.stop().await;
            Err(e)
        }
    }
}

impl Spawned {
    async fn wait_ready(&mut self) -> Result<(), LoadgenError> {
        let client = reqwest013::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/readyz", self.base_url);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(LoadgenError::Spawn(format!(
                    "linkr exited before it was ready ({status}): {}",
                    self.log_tail()
                )));
            }
            if let Ok(resp) = client.get(&url).send().await
                && resp.status().as_u16() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LoadgenError::Spawn(format!(
                    "/readyz not 200 within {READY_TIMEOUT:?}: {}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of linkr's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() {
            "(no output)".into()
        } else {
            tail
        }
    }

    /// SIGTERM, then waits for linkr to exit (SIGKILL after [`STOP_TIMEOUT`]). Fails unless it
    /// exited with status 0.
    pub async fn stop(mut self) -> Result<(), LoadgenError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(status) = child.try_wait()? {
            return Err(LoadgenError::Spawn(format!(
                "linkr had already exited ({status}): {}",
                self.log_tail()
            )));
        }
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(LoadgenError::Spawn(format!(
                "linkr exited with {status} after SIGTERM: {}",
                self.log_tail()
            ))),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let _ = child.kill().await;
                Err(LoadgenError::Spawn(format!(
                    "linkr did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed"
                )))
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: as in `stop`.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.start_kill();
        }
    }
}

fn free_port() -> Result<u16, LoadgenError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn random_key() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// CPUs the calling thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the zeroed cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins thread `tid` (0: the calling thread) to `cpus`.
fn set_affinity(tid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity reads the cpu_set_t we built.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_plan_splits_generator_low_service_high() {
        assert_eq!(CpuPlan::split(&[0]), None);
        assert_eq!(
            CpuPlan::split(&[0, 1]),
            Some(CpuPlan {
                generator: vec![0],
                service: vec![1]
            })
        );
        assert_eq!(
            CpuPlan::split(&[2, 3, 4, 5, 6]),
            Some(CpuPlan {
                generator: vec![2, 3],
                service: vec![4, 5, 6]
            })
        );
    }

    #[test]
    fn missing_linkr_is_reported_with_its_path() {
        let e = find_linkr(Some("/nonexistent/linkr".into())).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/linkr"), "{e}");
    }
}
