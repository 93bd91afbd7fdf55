//! The arrival schedule of one step, fixed before the step starts, and the pacer thread that
//! releases its slots on time.
//!
//! Slot `i` is due at `t0 + offset(i)`: `i / rate` for a constant rate, or the running sum of
//! exponential gaps (mean `1 / rate`) for Poisson arrivals, drawn before the step. tokio's timer
//! wheel has a 1 ms tick, which would send requests up to 1 ms late in bursts; instead one OS
//! thread (the pacer) sleeps with a 1 µs timer slack and adds one semaphore permit per slot as it
//! falls due (at most every [`QUANTUM`]), and the goose users wait on that semaphore. A slot's
//! latency is counted from its intended time whoever sends it and however late.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;

/// Shortest sleep of the pacer between two releases: slots falling due closer together than
/// this are released together (at 20,000 req/s, five per wake-up), so the pacer wakes at most
/// 4,000 times a second. Each wake-up costs two context switches and usually the unparking of a
/// runtime worker: against 100 µs, 250 µs cut the generator's CPU per request by about 30% at
/// 15,000–20,000 req/s on one core, for 0.1 ms more send lag at p50 (none below 4,000 req/s,
/// where slots are further apart). `LOADGEN_PACER_QUANTUM_US` overrides it.
pub const QUANTUM: Duration = Duration::from_micros(250);

fn quantum() -> Duration {
    static Q: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *Q.get_or_init(|| {
        std::env::var("LOADGEN_PACER_QUANTUM_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_micros)
            .unwrap_or(QUANTUM)
    })
}

/// How requests are spaced in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced: request `i` at `i / rate`.
    #[default]
    Constant,
    /// A Poisson process: exponential gaps with mean `1 / rate`.
    Poisson,
}

impl std::fmt::Display for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arrival::Constant => "constant",
            Arrival::Poisson => "poisson",
        })
    }
}

/// Intended send times of one step, as offsets from its start.
#[derive(Debug, Clone)]
pub enum Schedule {
    Constant {
        rate: f64,
        len: u64,
    },
    /// Offsets in nanoseconds, increasing.
    Poisson {
        offsets_ns: Vec<u64>,
    },
}

impl Schedule {
    pub fn new(arrival: Arrival, rate: f64, duration: Duration) -> Self {
        Self::seeded(arrival, rate, duration, rand::random())
    }

    /// The schedule drawn from `seed`: the same seed gives the same Poisson offsets, so that
    /// segments of one step run by separate processes share one schedule.
    pub fn seeded(arrival: Arrival, rate: f64, duration: Duration, seed: u64) -> Self {
        match arrival {
            Arrival::Constant => {
                let len = (duration.as_secs_f64() * rate - 1e-9).ceil().max(0.0) as u64;
                Schedule::Constant { rate, len }
            }
            Arrival::Poisson => {
                let exp = Exp::new(rate).expect("rate > 0");
                let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
                let end = duration.as_nanos() as f64;
                let mut t = 0.0f64;
                let mut offsets_ns =
                    Vec::with_capacity((rate * duration.as_secs_f64()) as usize + 16);
                loop {
                    let gap: f64 = exp.sample(&mut rng);
                    t += gap * 1e9;
                    if t >= end {
                        break;
                    }
                    offsets_ns.push(t as u64);
                }
                Schedule::Poisson { offsets_ns }
            }
        }
    }

    /// Number of slots in the step.
    pub fn len(&self) -> u64 {
        match self {
            Schedule::Constant { len, .. } => *len,
            Schedule::Poisson { offsets_ns } => offsets_ns.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Intended send time of slot `i` (`i < len`), from the step's start.
    pub fn offset(&self, i: u64) -> Duration {
        match self {
            Schedule::Constant { rate, .. } => Duration::from_nanos((i as f64 * 1e9 / rate) as u64),
            Schedule::Poisson { offsets_ns } => Duration::from_nanos(offsets_ns[i as usize]),
        }
    }

    /// Number of slots due at `elapsed` after the start (`offset <= elapsed`), at most `len`.
    pub fn due(&self, elapsed: Duration) -> u64 {
        match self {
            Schedule::Constant { rate, len } => {
                let n = (elapsed.as_nanos() as f64 * rate / 1e9).floor() as u64 + 1;
                n.min(*len)
            }
            Schedule::Poisson { offsets_ns } => {
                let e = elapsed.as_nanos() as u64;
                offsets_ns.partition_point(|&o| o <= e) as u64
            }
        }
    }
}

/// What the pacer shares with the users.
pub struct Gate {
    /// One permit per slot that fell due; after the end, one per user to wake them.
    pub permits: tokio::sync::Semaphore,
    /// Slots released so far.
    pub released: AtomicU64,
    /// Slots claimed by a user so far (the next slot's index).
    pub claimed: AtomicU64,
    /// Set once the step's time is up (or it was interrupted): users stop claiming slots.
    pub ended: AtomicBool,
    /// Users that reached the gate; the schedule starts when all have.
    pub ready: AtomicU64,
    /// Set by the driver when goose stopped on its own (so the pacer does not wait for users).
    pub abort: AtomicBool,
    /// Largest number of due slots no user had picked up yet, seen at a release.
    pub max_backlog: AtomicU64,
    pub start: std::sync::OnceLock<Instant>,
    pub end: std::sync::OnceLock<Instant>,
    /// Process CPU time (µs) when the schedule started and when it ended.
    pub cpu_start_us: AtomicU64,
    pub cpu_end_us: AtomicU64,
}

impl Gate {
    pub fn new() -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(0),
            released: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            ready: AtomicU64::new(0),
            abort: AtomicBool::new(false),
            max_backlog: AtomicU64::new(0),
            start: std::sync::OnceLock::new(),
            end: std::sync::OnceLock::new(),
            cpu_start_us: AtomicU64::new(0),
            cpu_end_us: AtomicU64::new(0),
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

/// The pacer (run it on its own thread): waits until `users` users reached the gate (or `abort`,
/// or `stop()`), then releases the schedule's slots on time until `duration` has passed, then
/// ends the step. Records the process's CPU time at the start and the end of the schedule.
pub fn pace(gate: &Gate, schedule: &Schedule, duration: Duration, users: u64, stop: fn() -> bool) {
    set_fine_timer_slack();
    let ready_deadline = Instant::now() + Duration::from_secs(30);
    while gate.ready.load(Ordering::Acquire) < users {
        if gate.abort.load(Ordering::Acquire) || stop() || Instant::now() > ready_deadline {
            finish(gate, users);
            return;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let t0 = Instant::now() + Duration::from_millis(1);
    let t_end = t0 + duration;
    let _ = gate.start.set(t0);
    let _ = gate.end.set(t_end);
    sleep_until(t0);
    gate.cpu_start_us.store(process_cpu_us(), Ordering::Relaxed);
    let total = schedule.len();
    let mut released = 0u64;
    let mut wakes = 0u32;
    let quantum = quantum();
    loop {
        let now = Instant::now();
        if now >= t_end || gate.abort.load(Ordering::Relaxed) {
            break;
        }
        wakes = wakes.wrapping_add(1);
        if wakes.is_multiple_of(64) && stop() {
            break;
        }
        let due = schedule.due(now - t0);
        if due > released {
            let backlog = gate.permits.available_permits() as u64;
            if backlog > 0 {
                gate.max_backlog.fetch_max(backlog, Ordering::Relaxed);
            }
            gate.released.store(due, Ordering::Release);
            gate.permits.add_permits((due - released) as usize);
            released = due;
        }
        let next = if released < total {
            t0 + schedule.offset(released)
        } else {
            t_end
        };
        let wake = next.min(t_end).max(now + quantum);
        sleep_until(wake.min(t_end));
    }
    finish(gate, users);
}

fn finish(gate: &Gate, users: u64) {
    gate.cpu_end_us.store(process_cpu_us(), Ordering::Relaxed);
    gate.ended.store(true, Ordering::SeqCst);
    // Wake every user waiting at the gate; each sees `ended` and leaves.
    gate.permits.add_permits(users as usize + 1);
}

/// CPU time (user + system) of the whole process, in microseconds.
pub fn process_cpu_us() -> u64 {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return 0;
        }
        let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

fn sleep_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(deadline - now);
    }
}

/// Linux delays a sleeping thread's wake-up by up to its timer slack (50 µs by default); the
/// pacer asks for 1 µs.
fn set_fine_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only affects the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_schedule_is_evenly_spaced() {
        let s = Schedule::new(Arrival::Constant, 2000.0, Duration::from_secs(3));
        assert_eq!(s.len(), 6000);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_micros(500));
        assert_eq!(s.offset(5999), Duration::from_micros(2_999_500));
        assert_eq!(s.due(Duration::ZERO), 1);
        assert_eq!(s.due(Duration::from_micros(499)), 1);
        assert_eq!(s.due(Duration::from_micros(500)), 2);
        assert_eq!(s.due(Duration::from_secs(10)), 6000);
    }

    #[test]
    fn fractional_rate_rounds_up_slots_inside_the_duration() {
        let s = Schedule::new(Arrival::Constant, 3.0, Duration::from_millis(1500));
        // 0, 0.333, 0.667, 1.0, 1.333 s
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn poisson_schedule_has_the_rate_on_average() {
        let s = Schedule::new(Arrival::Poisson, 10_000.0, Duration::from_secs(10));
        let n = s.len() as f64;
        // mean 100,000, standard deviation ~316
        assert!((n - 100_000.0).abs() < 2_000.0, "{n}");
        assert!(s.offset(s.len() - 1) < Duration::from_secs(10));
        assert_eq!(s.due(Duration::from_secs(10)), s.len());
        let mid = s.due(Duration::from_secs(5));
        assert!(s.offset(mid - 1) <= Duration::from_secs(5));
        assert!(s.offset(mid) > Duration::from_secs(5));
    }
}
