//! On-demand CPU profiles of the running process, as gzipped pprof protobuf, folded stacks or an
//! inferno flamegraph. One interface: a [`ProfileRequest`] goes in ([`capture`], or
//! [`Session::start`] and [`Session::finish`]), a [`Profile`] comes out, saying which sampler ran.
//!
//! Samplers ([`Mode`]), chosen per capture (`mode=auto` picks the first that works):
//! - `perf-events` ([`perf`]): one software `cpu-clock` perf event per thread with kernel and
//!   user callchains, read from mmap ring buffers on the profiler's own thread. System-call time
//!   sits under the Rust stack that made the call, with the kernel frames (`name_[k]`) on top.
//! - `thread-timers` ([`timer`]): where perf events are refused (a seccomp profile, a higher
//!   `perf_event_paranoid` for kernel frames), one POSIX CPU timer per thread as Go does since
//!   1.18; its `SIGPROF` handler walks frame pointers into a preallocated lock-free buffer.
//!   System calls end the stack at the libc wrapper that made them.
//! - `perf-events-user-only` (`mode=perf-user`, never picked by `auto`): the kernel drops a
//!   user-only event's samples taken in the kernel, so system-call time is missing from it.
//! - `itimer` (`mode=itimer`): the previous sampler (pprof-rs, process-wide `ITIMER_PROF`, libc
//!   samples dropped), kept only to compare with.
//!
//! Threads started during a capture are picked up by rescanning `/proc/self/task` every
//! [`RESCAN_EVERY`]. Every profile carries its coverage: the CPU time its samples stand for next
//! to the CPU time the process used over the same window (and per thread). Only one capture runs
//! at a time: a second one gets [`ProfileError::Busy`].

mod itimer;
mod perf;
mod render;
mod steal;
mod symbols;
mod threads;
mod timer;
mod unwind;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use threads::{process_cpu_time, thread_cpu_time};

pub const DEFAULT_SECONDS: u64 = 10;
pub const MIN_SECONDS: u64 = 1;
pub const MAX_SECONDS: u64 = 300;
pub const DEFAULT_FREQUENCY: u32 = 99;
pub const MIN_FREQUENCY: u32 = 1;
pub const MAX_FREQUENCY: u32 = 1000;
/// How often the profiler thread reads the samplers' buffers.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// How often it looks for threads started during the capture.
pub const RESCAN_EVERY: Duration = Duration::from_millis(100);

/// Output format of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Gzipped pprof protobuf, as Go's `/debug/pprof/profile` serves it.
    #[default]
    Pprof,
    /// Inferno SVG flamegraph.
    Svg,
    /// Folded stacks, one `thread;frame;... count` line per distinct stack, root first.
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

/// The sampler that ran (the `x-profile-mode` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    PerfEvents,
    PerfEventsUserOnly,
    ThreadTimers,
    Itimer,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerfEvents => "perf-events",
            Self::PerfEventsUserOnly => "perf-events-user-only",
            Self::ThreadTimers => "thread-timers",
            Self::Itimer => "itimer",
        }
    }
}

/// The sampler a request asks for (`mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModeRequest {
    /// perf events with kernel frames, else per-thread timers.
    #[default]
    Auto,
    /// perf events, user-only when kernel frames are refused; an error when perf is refused.
    Perf,
    /// perf events without kernel samples (to compare with).
    PerfUser,
    /// Per-thread CPU timers.
    Timer,
    /// pprof-rs's `ITIMER_PROF` sampler with its libc blocklist (the old default).
    Itimer,
}

impl FromStr for ModeRequest {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "perf" | "perf-events" => Ok(Self::Perf),
            "perf-user" | "perf-events-user-only" => Ok(Self::PerfUser),
            "timer" | "thread-timers" => Ok(Self::Timer),
            "itimer" => Ok(Self::Itimer),
            other => Err(ProfileError::InvalidParameter(format!(
                "unknown mode {other:?}: expected auto, perf, perf-user, timer or itimer"
            ))),
        }
    }
}

/// A validated capture request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileRequest {
    pub duration: Duration,
    pub frequency: u32,
    pub format: Format,
    pub mode: ModeRequest,
}

impl Default for ProfileRequest {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(DEFAULT_SECONDS),
            frequency: DEFAULT_FREQUENCY,
            format: Format::Pprof,
            mode: ModeRequest::Auto,
        }
    }
}

impl ProfileRequest {
    /// Validates raw query values (absent ones take the defaults). `include_libc` is accepted
    /// (true or false) so that old URLs keep working, and ignored: no sampler drops libc.
    pub fn parse(
        seconds: Option<&str>,
        frequency: Option<&str>,
        format: Option<&str>,
        include_libc: Option<&str>,
        mode: Option<&str>,
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
        if let Some(v) = include_libc
            && !matches!(v, "true" | "1" | "false" | "0")
        {
            return Err(ProfileError::InvalidParameter(format!(
                "include_libc must be true or false, got {v:?} (it is ignored: libc is always \
                 sampled now)"
            )));
        }
        if let Some(m) = mode {
            req.mode = m.parse()?;
        }
        Ok(req)
    }

    /// Nanoseconds of CPU time between two samples of one thread.
    fn period_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.frequency.max(1))
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
    #[error("the requested sampler is not available here: {0}")]
    Unavailable(String),
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

/// One stack of a finished capture: root first, leaf last (kernel frames end in `_[k]`).
#[derive(Debug, Clone)]
pub struct Stack {
    pub tid: u32,
    pub thread: Arc<str>,
    pub frames: Vec<Arc<str>>,
    /// Sampling periods this stack stands for.
    pub samples: u64,
}

/// CPU time one thread used over the capture window and the samples taken on it.
#[derive(Debug, Clone)]
pub struct ThreadUsage {
    pub tid: u32,
    pub name: Arc<str>,
    /// CPU time from when the thread was first watched to the end of the window (or its exit).
    pub cpu_time: Duration,
    pub samples: u64,
}

/// A finished capture.
#[derive(Debug)]
pub struct Profile {
    mode: Mode,
    frequency: u32,
    period: Duration,
    started: std::time::SystemTime,
    duration: Duration,
    cpu_time: Duration,
    host_steal: Option<Duration>,
    stacks: Vec<Stack>,
    threads: Vec<ThreadUsage>,
    lost: u64,
}

/// The most recent capture, so one capture can be fetched in every format.
static LAST: Mutex<Option<Arc<Profile>>> = Mutex::new(None);

/// The most recent finished capture, if any.
pub fn last() -> Option<Arc<Profile>> {
    LAST.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Samples the whole process for `req.duration` at `req.frequency` Hz with the sampler
/// `req.mode` asks for. The sampling runs on its own thread (`linkr-profiler`), and so does
/// symbolisation (blocking work that must not stall a runtime worker). Dropping the returned
/// future stops the capture early. The result is also kept as [`last`].
pub async fn capture(req: &ProfileRequest) -> Result<Arc<Profile>, ProfileError> {
    let req = *req;
    let session = tokio::task::spawn_blocking(move || Session::start(&req))
        .await
        .map_err(|e| ProfileError::Failed(e.to_string()))??;
    tokio::time::sleep(req.duration).await;
    let profile = tokio::task::spawn_blocking(move || session.finish())
        .await
        .map_err(|e| ProfileError::Failed(e.to_string()))??;
    let profile = Arc::new(profile);
    *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&profile));
    Ok(profile)
}

/// A running capture. [`Session::start`] returns once every thread of the process is being
/// sampled; [`Session::finish`] ends the window and builds the [`Profile`]. Dropping it cancels.
pub struct Session {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<Raw, ProfileError>>>,
    mode: Mode,
}

impl Session {
    /// Starts sampling (blocking for a few milliseconds while it arms every thread).
    pub fn start(req: &ProfileRequest) -> Result<Self, ProfileError> {
        let slot = CaptureSlot::acquire()?;
        let req = *req;
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Mode, ProfileError>>(1);
        let thread = std::thread::Builder::new()
            .name("linkr-profiler".into())
            .spawn(move || {
                // Released when the raw samples have been symbolised or dropped.
                let _slot = slot;
                run(&req, &stop_rx, &ready_tx)
            })
            .map_err(|e| ProfileError::Failed(format!("cannot start the profiler thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(mode)) => Ok(Self {
                stop: Some(stop_tx),
                thread: Some(thread),
                mode,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => ProfileError::Failed("the profiler thread ended before it started".into()),
            }),
        }
    }

    /// The sampler that runs.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Ends the window and symbolises the samples (blocking: loads debug information).
    pub fn finish(mut self) -> Result<Profile, ProfileError> {
        drop(self.stop.take());
        let thread = self.thread.take().expect("finish runs once");
        let raw = thread
            .join()
            .map_err(|_| ProfileError::Failed("the profiler thread panicked".into()))??;
        Ok(raw.into_profile())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing the channel stops the sampling loop; the thread then releases the slot.
        drop(self.stop.take());
    }
}

/// Samples before symbolisation: stacks of addresses (leaf first; return addresses already
/// moved back into their call instruction) with their weight in nanoseconds of CPU.
#[derive(Default)]
pub(crate) struct Samples {
    stacks: HashMap<(u32, Box<[u64]>), u64>,
    /// Samples the kernel or the signal handler could not store (buffer full).
    lost: u64,
}

impl Samples {
    pub(crate) fn add(&mut self, tid: u32, frames: &[u64], weight_ns: u64) {
        match self.stacks.get_mut(&(tid, Box::from(frames))) {
            Some(w) => *w += weight_ns,
            None => {
                self.stacks.insert((tid, frames.into()), weight_ns);
            }
        }
    }

    pub(crate) fn add_lost(&mut self, n: u64) {
        self.lost += n;
    }
}

/// The backend sampling this capture.
enum Sampler {
    Perf(perf::Sampler),
    Timer(timer::Sampler),
    Itimer(itimer::Sampler),
}

impl Sampler {
    fn open(req: &ProfileRequest) -> Result<(Self, Mode), ProfileError> {
        let period = req.period_ns();
        let perf = |kernel: perf::Kernel| perf::Sampler::open(period, kernel);
        let timers = || {
            timer::Sampler::open(period)
                .map(|s| (Self::Timer(s), Mode::ThreadTimers))
                .map_err(|e| ProfileError::Unavailable(format!("per-thread CPU timers: {e}")))
        };
        let perf_mode = |s: perf::Sampler| {
            let mode = if s.kernel() {
                Mode::PerfEvents
            } else {
                Mode::PerfEventsUserOnly
            };
            (Self::Perf(s), mode)
        };
        match req.mode {
            ModeRequest::Auto => match perf(perf::Kernel::Required) {
                Ok(s) => Ok(perf_mode(s)),
                Err(e) => {
                    tracing::debug!(error = %e, "perf events refused; per-thread CPU timers");
                    timers()
                }
            },
            ModeRequest::Perf => perf(perf::Kernel::IfAllowed)
                .map(perf_mode)
                .map_err(|e| ProfileError::Unavailable(format!("perf_event_open: {e}"))),
            ModeRequest::PerfUser => perf(perf::Kernel::Excluded)
                .map(perf_mode)
                .map_err(|e| ProfileError::Unavailable(format!("perf_event_open: {e}"))),
            ModeRequest::Timer => timers(),
            ModeRequest::Itimer => {
                let frequency = i32::try_from(req.frequency).unwrap_or(i32::MAX);
                itimer::Sampler::start(frequency).map(|s| (Self::Itimer(s), Mode::Itimer))
            }
        }
    }

    /// Starts sampling `tid` (a thread of this process).
    fn watch(&mut self, tid: u32) -> std::io::Result<()> {
        match self {
            Self::Perf(s) => s.watch(tid),
            Self::Timer(s) => s.watch(tid),
            Self::Itimer(_) => Ok(()),
        }
    }

    /// Stops sampling `tid` (it has exited).
    fn forget(&mut self, tid: u32, samples: &mut Samples) {
        match self {
            Self::Perf(s) => s.forget(tid, samples),
            Self::Timer(s) => s.forget(tid),
            Self::Itimer(_) => {}
        }
    }

    fn refresh(&mut self) {
        if let Self::Timer(s) = self {
            s.refresh_stacks();
        }
    }

    fn drain(&mut self, samples: &mut Samples) {
        match self {
            Self::Perf(s) => s.drain(samples),
            Self::Timer(s) => s.drain(samples),
            Self::Itimer(_) => {}
        }
    }

    /// Stops every sampler; samples still buffered stay readable by `drain`.
    fn stop(&mut self) {
        match self {
            Self::Perf(s) => s.stop(),
            Self::Timer(s) => s.stop(),
            Self::Itimer(_) => {}
        }
    }
}

struct WatchedThread {
    name: Arc<str>,
    cpu_start: Duration,
    cpu_last: Duration,
}

/// What the profiler thread hands back: samples not yet symbolised, plus the window's figures.
struct Raw {
    mode: Mode,
    req: ProfileRequest,
    started: std::time::SystemTime,
    duration: Duration,
    cpu_time: Duration,
    host_steal: Option<Duration>,
    samples: Samples,
    threads: Threads,
    /// Already symbolised (the `itimer` sampler).
    stacks: Vec<Stack>,
}

/// The profiler thread: arms every thread, then drains and rescans until told to stop.
fn run(
    req: &ProfileRequest,
    stop: &mpsc::Receiver<()>,
    ready: &mpsc::SyncSender<Result<Mode, ProfileError>>,
) -> Result<Raw, ProfileError> {
    // On an error `ready` is dropped unsent, and `Session::start` reads the error from `join`.
    let (mut sampler, mode) = Sampler::open(req)?;
    let started = std::time::SystemTime::now();
    let start = Instant::now();
    let cpu_before = process_cpu_time();
    let steal_before = steal::machine_steal();
    let mut samples = Samples::default();
    let mut threads = Threads::default();
    rescan(&mut sampler, &mut threads, &mut samples);
    let _ = ready.send(Ok(mode));

    let mut last_scan = Instant::now();
    // The sender never sends: the loop ends when the session is finished or dropped.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(DRAIN_EVERY) {
        sampler.drain(&mut samples);
        if last_scan.elapsed() >= RESCAN_EVERY {
            rescan(&mut sampler, &mut threads, &mut samples);
            last_scan = Instant::now();
        }
    }
    sampler.stop();
    let cpu_time = process_cpu_time().saturating_sub(cpu_before);
    let host_steal =
        Option::zip(steal_before, steal::machine_steal()).map(|(b, a)| a.saturating_sub(b));
    let duration = start.elapsed();
    for (&tid, t) in &mut threads.live {
        if let Some(cpu) = thread_cpu_time(tid) {
            t.cpu_last = cpu;
        }
    }
    sampler.drain(&mut samples);
    let stacks = match sampler {
        Sampler::Itimer(s) => s.finish()?,
        _ => Vec::new(),
    };
    Ok(Raw {
        mode,
        req: *req,
        started,
        duration,
        cpu_time,
        host_steal,
        samples,
        threads,
        stacks,
    })
}

/// Threads watched during a capture: those alive at the last scan, and those that exited.
#[derive(Default)]
struct Threads {
    live: HashMap<u32, WatchedThread>,
    exited: Vec<(u32, WatchedThread)>,
}

/// Arms threads that appeared since the last scan and lets go of those that exited.
fn rescan(sampler: &mut Sampler, threads: &mut Threads, samples: &mut Samples) {
    let now = threads::list();
    let mut exited = Vec::new();
    for (&tid, t) in &mut threads.live {
        match thread_cpu_time(tid) {
            Some(cpu) if now.contains(&tid) => t.cpu_last = cpu,
            _ => exited.push(tid),
        }
    }
    for tid in exited {
        sampler.forget(tid, samples);
        if let Some(t) = threads.live.remove(&tid) {
            threads.exited.push((tid, t));
        }
    }
    let new: Vec<u32> = now
        .into_iter()
        .filter(|tid| !threads.live.contains_key(tid))
        .collect();
    if !new.is_empty() && !threads.live.is_empty() {
        // New threads have new stacks the timer handler must know about.
        sampler.refresh();
    }
    for tid in new {
        let cpu = thread_cpu_time(tid);
        match (cpu, sampler.watch(tid)) {
            (Some(cpu), Ok(())) => {
                let name = threads::name(tid).into();
                threads.live.insert(
                    tid,
                    WatchedThread {
                        name,
                        cpu_start: cpu,
                        cpu_last: cpu,
                    },
                );
            }
            // Exited in between: nothing to sample.
            (None, _) => {}
            (Some(_), Err(e)) => tracing::debug!(tid, error = %e, "cannot sample thread"),
        }
    }
}

impl Raw {
    fn into_profile(self) -> Profile {
        let period_ns = self.req.period_ns();
        let watched = || {
            let exited = self.threads.exited.iter().map(|(tid, t)| (*tid, t, false));
            exited.chain(self.threads.live.iter().map(|(tid, t)| (*tid, t, true)))
        };
        // A live thread's name wins over an exited one's whose id it reuses (rare).
        let names: HashMap<u32, Arc<str>> = watched()
            .map(|(tid, t, _)| (tid, Arc::clone(&t.name)))
            .collect();
        let mut stacks = self.stacks;
        if !self.samples.stacks.is_empty() {
            let mut symbolizer = symbols::Symbolizer::new();
            for ((tid, addrs), weight_ns) in &self.samples.stacks {
                let mut frames = Vec::with_capacity(addrs.len() + 4);
                for &addr in addrs.iter().rev() {
                    // Root first: callers before callees (and inlined frames, if any, likewise).
                    frames.extend(symbolizer.frames(addr).iter().rev().cloned());
                }
                stacks.push(Stack {
                    tid: *tid,
                    thread: names
                        .get(tid)
                        .cloned()
                        .unwrap_or_else(|| format!("thread-{tid}").into()),
                    frames,
                    samples: (weight_ns + period_ns / 2) / period_ns,
                });
            }
        }
        stacks.retain(|s| s.samples > 0);
        stacks.sort_by(|a, b| (&a.thread, &a.frames, a.tid).cmp(&(&b.thread, &b.frames, b.tid)));
        let mut per_thread: HashMap<u32, u64> = HashMap::new();
        for s in &stacks {
            *per_thread.entry(s.tid).or_default() += s.samples;
        }
        let mut threads: Vec<ThreadUsage> = watched()
            .map(|(tid, t, live)| ThreadUsage {
                tid,
                name: Arc::clone(&t.name),
                cpu_time: t.cpu_last.saturating_sub(t.cpu_start),
                // Samples are kept by thread id: an exited thread whose id was reused has its
                // samples counted under the live one (rare; the total is unaffected).
                samples: if live || !self.threads.live.contains_key(&tid) {
                    per_thread.get(&tid).copied().unwrap_or(0)
                } else {
                    0
                },
            })
            .collect();
        threads.sort_by(|a, b| b.cpu_time.cmp(&a.cpu_time).then(a.tid.cmp(&b.tid)));
        for t in &threads {
            tracing::debug!(
                tid = t.tid,
                thread = %t.name,
                cpu_s = t.cpu_time.as_secs_f64(),
                sampled_s = (t.samples * period_ns) as f64 / 1e9,
                "profiled thread"
            );
        }
        Profile {
            mode: self.mode,
            frequency: self.req.frequency,
            period: Duration::from_nanos(period_ns),
            started: self.started,
            duration: self.duration,
            cpu_time: self.cpu_time,
            host_steal: self.host_steal,
            stacks,
            threads,
            lost: self.samples.lost,
        }
    }
}

impl Profile {
    /// The sampler that ran.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Samples taken, in sampling periods (a timer sample that stands for three periods counts
    /// three): [`Profile::sampled_time`] is this times [`Profile::period`].
    pub fn samples(&self) -> u64 {
        self.stacks.iter().map(|s| s.samples).sum()
    }

    /// Sampling frequency in Hz (per thread, of its CPU time).
    pub fn frequency(&self) -> u32 {
        self.frequency
    }

    /// CPU time between two samples of one thread.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// CPU time (user + system) the whole process used during the capture window.
    pub fn cpu_time(&self) -> Duration {
        self.cpu_time
    }

    /// CPU time the hypervisor took from this machine's CPUs during the window, all CPUs together
    /// (`/proc/stat`'s steal, in 10 ms ticks; None where it cannot be read). The process's CPU
    /// time leaves it out; the `perf-events` samplers' clock counts what of it fell while a
    /// thread was running, so their sampled time can exceed the process's CPU by up to this.
    pub fn host_steal(&self) -> Option<Duration> {
        self.host_steal
    }

    /// CPU time the samples stand for.
    pub fn sampled_time(&self) -> Duration {
        self.period * u32::try_from(self.samples()).unwrap_or(u32::MAX)
    }

    /// Samples lost because a buffer was full (not in [`Profile::samples`]).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Wall time the capture covered.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The stacks, sorted by thread name then frames.
    pub fn stacks(&self) -> &[Stack] {
        &self.stacks
    }

    /// Every thread watched during the window, the busiest first.
    pub fn threads(&self) -> &[ThreadUsage] {
        &self.threads
    }

    /// Renders the profile in `format`.
    pub fn render(&self, format: Format) -> Result<Vec<u8>, ProfileError> {
        match format {
            Format::Pprof => self.pprof_gz(),
            Format::Folded => Ok(self.folded().into_bytes()),
            Format::Svg => self.svg(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_defaults_and_bounds() {
        assert_eq!(
            ProfileRequest::parse(None, None, None, None, None).unwrap(),
            ProfileRequest::default()
        );
        let r =
            ProfileRequest::parse(Some("2"), Some("250"), Some("svg"), Some("true"), None).unwrap();
        assert_eq!(r.duration, Duration::from_secs(2));
        assert_eq!(r.frequency, 250);
        assert_eq!(r.format, Format::Svg);
        let r = ProfileRequest::parse(None, None, None, None, Some("timer")).unwrap();
        assert_eq!(r.mode, ModeRequest::Timer);
        for (s, f, fmt, mode) in [
            (Some("0"), None, None, None),
            (Some("301"), None, None, None),
            (Some("x"), None, None, None),
            (None, Some("0"), None, None),
            (None, Some("1001"), None, None),
            (None, Some("-5"), None, None),
            (None, None, Some("png"), None),
            (None, None, None, Some("dtrace")),
        ] {
            let err = ProfileRequest::parse(s, f, fmt, None, mode).unwrap_err();
            assert!(matches!(err, ProfileError::InvalidParameter(_)), "{err}");
        }
        let err = ProfileRequest::parse(None, None, None, Some("maybe"), None).unwrap_err();
        assert!(err.to_string().contains("include_libc"), "{err}");
    }
}
