//! On-demand CPU profiles of the running process (pprof-rs), as gzipped pprof protobuf, folded
//! stacks or an inferno flamegraph.
//!
//! pprof-rs arms one process-wide `SIGPROF` timer, so only one capture runs at a time: a second
//! one gets [`ProfileError::Busy`]. Samples whose program counter lies in libc, libgcc,
//! libpthread or the vDSO are dropped rather than unwound (unwinding from inside the unwinder or
//! the dynamic loader can deadlock).

use std::fmt::Write as _;
use std::io::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pprof::protos::Message as _;

/// Shared objects in which a sample is dropped instead of unwound (the default): the unwinder
/// can deadlock when the signal lands while the interrupted thread holds a lock it needs
/// (libgcc's unwinder, libc's locks, the dynamic loader). The cost: CPU time spent in libc,
/// which includes every system call, does not appear in the profile.
pub const BLOCKLIST: &[&str] = &["libc", "libgcc", "pthread", "vdso", "ld-linux"];
/// The blocklist with `include_libc=true`: samples in libc (system calls, memcpy, ...) and the
/// vDSO (`clock_gettime`) are unwound too; on this platform (glibc >= 2.35, libgcc 12) libgcc
/// finds unwind tables with the lock-free `_dl_find_object`, so only a signal landing inside
/// the unwinder itself or the dynamic loader is still dropped. Under load this keeps several
/// times more samples: most of a network server's CPU time is spent in system calls.
pub const BLOCKLIST_WITH_LIBC: &[&str] = &["libgcc", "ld-linux"];

pub const DEFAULT_SECONDS: u64 = 10;
pub const MIN_SECONDS: u64 = 1;
pub const MAX_SECONDS: u64 = 300;
pub const DEFAULT_FREQUENCY: u32 = 99;
pub const MIN_FREQUENCY: u32 = 1;
pub const MAX_FREQUENCY: u32 = 1000;

/// Output format of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Gzipped pprof protobuf, as Go's `/debug/pprof/profile` serves it.
    #[default]
    Pprof,
    /// Inferno SVG flamegraph.
    Svg,
    /// Folded stacks, one `frame;frame;... count` line per distinct stack.
    Folded,
}

impl FromStr for Format {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pprof" | "proto" => Ok(Self::Pprof),
            "svg" | "flamegraph" => Ok(Self::Svg),
            "folded" | "collapsed" => Ok(Self::Folded),
            other => Err(ProfileError::InvalidParameter(format!(
                "unknown format {other:?}: expected pprof, svg or folded"
            ))),
        }
    }
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Pprof => "application/octet-stream",
            Self::Svg => "image/svg+xml",
            Self::Folded => "text/plain; charset=utf-8",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Self::Pprof => "cpu.pb.gz",
            Self::Svg => "flamegraph.svg",
            Self::Folded => "cpu.folded",
        }
    }
}

/// A validated capture request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileRequest {
    pub duration: Duration,
    pub frequency: u32,
    pub format: Format,
    /// Unwind samples taken inside libc as well (see [`BLOCKLIST_WITH_LIBC`]).
    pub include_libc: bool,
}

impl Default for ProfileRequest {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(DEFAULT_SECONDS),
            frequency: DEFAULT_FREQUENCY,
            format: Format::Pprof,
            include_libc: false,
        }
    }
}

impl ProfileRequest {
    /// Validates raw query values (absent ones take the defaults).
    pub fn parse(
        seconds: Option<&str>,
        frequency: Option<&str>,
        format: Option<&str>,
        include_libc: Option<&str>,
    ) -> Result<Self, ProfileError> {
        let mut req = Self::default();
        if let Some(s) = seconds {
            let n = bounded("seconds", s, MIN_SECONDS, MAX_SECONDS)?;
            req.duration = Duration::from_secs(n);
        }
        if let Some(f) = frequency {
            let n = bounded("frequency", f, MIN_FREQUENCY.into(), MAX_FREQUENCY.into())?;
            req.frequency = u32::try_from(n).expect("bounded above by MAX_FREQUENCY");
        }
        if let Some(f) = format {
            req.format = f.parse()?;
        }
        if let Some(v) = include_libc {
            req.include_libc = match v {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(ProfileError::InvalidParameter(format!(
                        "include_libc must be true or false, got {other:?}"
                    )));
                }
            };
        }
        Ok(req)
    }
}

fn bounded(name: &str, raw: &str, min: u64, max: u64) -> Result<u64, ProfileError> {
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ProfileError::InvalidParameter(format!(
            "{name} must be an integer from {min} to {max}, got {raw:?}"
        ))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}")]
    InvalidParameter(String),
    #[error("another CPU profile is being captured; retry when it finishes")]
    Busy,
    #[error("profiling failed: {0}")]
    Failed(String),
}

/// The one capture allowed at a time; released on drop, also when the request is cancelled.
struct CaptureSlot;

static CAPTURING: AtomicBool = AtomicBool::new(false);

impl CaptureSlot {
    fn acquire() -> Result<Self, ProfileError> {
        CAPTURING
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| Self)
            .map_err(|_| ProfileError::Busy)
    }
}

impl Drop for CaptureSlot {
    fn drop(&mut self) {
        CAPTURING.store(false, Ordering::Release);
    }
}

/// Whether a capture is running now.
pub fn is_capturing() -> bool {
    CAPTURING.load(Ordering::Relaxed)
}

/// A finished capture.
pub struct Profile {
    report: pprof::Report,
    cpu_time: Duration,
}

// SAFETY: a `Report` is never mutated after it is built, and nothing in it has interior
// mutability; it is `!Sync` only because pprof's `Symbol` keeps the symbol address as a raw
// pointer, which is plain data here (never dereferenced).
unsafe impl Sync for Profile {}

/// The most recent capture, so one capture can be fetched in every format.
static LAST: Mutex<Option<Arc<Profile>>> = Mutex::new(None);

/// The most recent finished capture, if any.
pub fn last() -> Option<Arc<Profile>> {
    LAST.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Samples the whole process for `duration` at `frequency` Hz.
///
/// The capture runs on its own thread (`linkr-pprof`): arming the profiler resolves a backtrace
/// and walks the loaded objects, and symbolising the samples loads debug information, all of
/// it blocking work that must not stall a runtime worker. Dropping the returned future stops
/// the capture early. The result is also kept as [`last`].
pub async fn capture(req: &ProfileRequest) -> Result<Arc<Profile>, ProfileError> {
    let duration = req.duration;
    let blocklist = if req.include_libc {
        BLOCKLIST_WITH_LIBC
    } else {
        BLOCKLIST
    };
    let frequency = i32::try_from(req.frequency)
        .map_err(|_| ProfileError::InvalidParameter("frequency too large".into()))?;
    let slot = CaptureSlot::acquire()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (cancel_tx, cancel_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("linkr-pprof".into())
        .spawn(move || {
            // Released only after the profiler guard inside `sample` has been dropped.
            let _slot = slot;
            let _ = done_tx.send(sample(duration, frequency, blocklist, &cancel_rx));
        })
        .map_err(|e| ProfileError::Failed(format!("cannot start the profiler thread: {e}")))?;
    let result = done_rx.await;
    drop(cancel_tx);
    let profile =
        Arc::new(result.map_err(|_| ProfileError::Failed("the profiler thread panicked".into()))??);
    *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&profile));
    Ok(profile)
}

fn sample(
    duration: Duration,
    frequency: i32,
    blocklist: &[&str],
    cancel: &std::sync::mpsc::Receiver<()>,
) -> Result<Profile, ProfileError> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(frequency)
        .blocklist(blocklist)
        .build()
        .map_err(|e| match e {
            pprof::Error::Running => ProfileError::Busy,
            e => ProfileError::Failed(e.to_string()),
        })?;
    // Measured once the timer runs: building the guard resolves a backtrace (debug info).
    let cpu_before = process_cpu_time();
    // The sender never sends: this returns on timeout, or early when the caller is gone.
    if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) | Ok(()) =
        cancel.recv_timeout(duration)
    {
        return Err(ProfileError::Failed("capture cancelled".into()));
    }
    let cpu_time = process_cpu_time().saturating_sub(cpu_before);
    let report = guard
        .report()
        .build()
        .map_err(|e| ProfileError::Failed(e.to_string()))?;
    drop(guard);
    Ok(Profile { report, cpu_time })
}

/// User plus system CPU time of the whole process so far.
fn process_cpu_time() -> Duration {
    // SAFETY: `getrusage` only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_usec).unwrap_or(0) * 1000,
        )
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

impl Profile {
    /// Total samples.
    pub fn samples(&self) -> u64 {
        self.report
            .data
            .values()
            .map(|&n| u64::try_from(n).unwrap_or(0))
            .sum()
    }

    /// Sampling frequency in Hz.
    pub fn frequency(&self) -> i32 {
        self.report.timing.frequency
    }

    /// CPU time (user + system) the whole process used during the capture.
    pub fn cpu_time(&self) -> Duration {
        self.cpu_time
    }

    /// CPU time the samples stand for (samples / frequency). Less than [`Profile::cpu_time`]
    /// by the time spent in blocklisted code (by default libc, including system calls), whose
    /// samples are dropped.
    pub fn sampled_time(&self) -> Duration {
        let hz = u64::try_from(self.frequency()).unwrap_or(1).max(1);
        Duration::from_secs_f64(self.samples() as f64 / hz as f64)
    }

    /// Wall time the capture covered.
    pub fn duration(&self) -> Duration {
        self.report.timing.duration
    }

    /// Renders the profile in `format`.
    pub fn render(&self, format: Format) -> Result<Vec<u8>, ProfileError> {
        match format {
            Format::Pprof => self.pprof_gz(),
            Format::Folded => Ok(self.folded().into_bytes()),
            Format::Svg => self.svg(),
        }
    }

    /// Gzipped pprof protobuf.
    pub fn pprof_gz(&self) -> Result<Vec<u8>, ProfileError> {
        let profile = self
            .report
            .pprof()
            .map_err(|e| ProfileError::Failed(e.to_string()))?;
        let raw = profile.encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 3),
            flate2::Compression::default(),
        );
        gz.write_all(&raw)
            .and_then(|()| gz.finish())
            .map_err(|e| ProfileError::Failed(e.to_string()))
    }

    /// Folded stacks, root first, the thread name as the root frame; sorted, one stack a line.
    pub fn folded(&self) -> String {
        let mut lines: Vec<String> = self
            .report
            .data
            .iter()
            .filter(|&(_, &count)| count > 0)
            .map(|(frames, count)| {
                let mut line = frames.thread_name_or_id().replace(';', ",");
                for frame in frames.frames.iter().rev() {
                    for symbol in frame.iter().rev() {
                        line.push(';');
                        // `;` separates frames: Rust names such as `[u8; 8]` must not split.
                        line.push_str(&symbol.name().replace(';', ","));
                    }
                }
                let _ = write!(line, " {count}");
                line
            })
            .collect();
        lines.sort_unstable();
        let mut out = lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }

    /// Inferno flamegraph of [`Profile::folded`]; an SVG saying so when there are no samples.
    pub fn svg(&self) -> Result<Vec<u8>, ProfileError> {
        let folded = self.folded();
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = format!(
            "linkr CPU profile: {:.1} s at {} Hz, {} samples",
            self.duration().as_secs_f64(),
            self.frequency(),
            self.samples()
        );
        opts.subtitle = Some(format!(
            "samples stand for {:.2} s of the {:.2} s of CPU the process used (samples in \
             blocklisted libraries are dropped)",
            self.sampled_time().as_secs_f64(),
            self.cpu_time().as_secs_f64()
        ));
        opts.count_name = "samples".into();
        let mut out = Vec::with_capacity(64 * 1024);
        match inferno::flamegraph::from_lines(&mut opts, folded.lines(), &mut out) {
            Ok(()) => Ok(out),
            // inferno writes an SVG that says "no valid input" before returning this error.
            Err(_) if folded.is_empty() => Ok(out),
            Err(e) => Err(ProfileError::Failed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_defaults_and_bounds() {
        assert_eq!(
            ProfileRequest::parse(None, None, None, None).unwrap(),
            ProfileRequest::default()
        );
        let r = ProfileRequest::parse(Some("2"), Some("250"), Some("svg"), Some("true")).unwrap();
        assert_eq!(r.duration, Duration::from_secs(2));
        assert_eq!(r.frequency, 250);
        assert_eq!(r.format, Format::Svg);
        assert!(r.include_libc);
        for (s, f, fmt) in [
            (Some("0"), None, None),
            (Some("301"), None, None),
            (Some("x"), None, None),
            (None, Some("0"), None),
            (None, Some("1001"), None),
            (None, Some("-5"), None),
            (None, None, Some("png")),
        ] {
            let err = ProfileRequest::parse(s, f, fmt, None).unwrap_err();
            assert!(matches!(err, ProfileError::InvalidParameter(_)), "{err}");
        }
        let err = ProfileRequest::parse(None, None, None, Some("maybe")).unwrap_err();
        assert!(err.to_string().contains("include_libc"), "{err}");
    }
}
