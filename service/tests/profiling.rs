//! The profiler measured against what the kernel says independently: a thread in a busy loop and
//! a thread making system calls, their CPU time read from `/proc/self/task/*/stat` around the
//! capture window, and (where it can run) `perf record` sampling the same threads at once.
//! The tests take turns: a capture samples the whole process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use linkr::profiling::{Mode, ModeRequest, Profile, ProfileRequest, Session};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const BUSY: &str = "profiling_test_busy_loop";
const SYSCALLS: &str = "profiling_test_syscalls";

/// The two load threads; stopped and joined on drop.
struct Load {
    stop: Arc<AtomicBool>,
    busy: u32,
    syscalls: u32,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let spawn = |name: &str, work: fn(&AtomicBool)| {
            let (stop, tx) = (Arc::clone(&stop), tx.clone());
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    tx.send((work as usize, gettid())).unwrap();
                    work(&stop);
                })
                .unwrap()
        };
        let threads = vec![
            spawn("busy-loop", profiling_test_busy_loop),
            spawn("syscall-loop", profiling_test_syscalls),
        ];
        let mut busy = 0;
        let mut syscalls = 0;
        for _ in 0..2 {
            let (work, tid) = rx.recv().unwrap();
            if work == profiling_test_busy_loop as fn(&AtomicBool) as usize {
                busy = tid;
            } else {
                syscalls = tid;
            }
        }
        Self {
            stop,
            busy,
            syscalls,
            threads,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

#[inline(never)]
fn profiling_test_busy_loop(stop: &AtomicBool) {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
}

#[inline(never)]
fn profiling_test_syscalls(stop: &AtomicBool) {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        write_64_bytes(null.as_raw_fd());
        getppid();
    }
}

// The system calls go through one more function each: a frame-pointer walk (perf's and ours)
// from inside libc, which keeps no frame pointer, skips the function that called libc. The time
// still lands under the rest of the Rust stack, `profiling_test_syscalls` included.
#[inline(never)]
fn write_64_bytes(fd: libc::c_int) {
    let buf = [0u8; 64];
    // SAFETY: writing a live buffer to an open descriptor.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    assert_eq!(n, 64);
}

/// A system call with no vDSO shortcut.
#[inline(never)]
fn getppid() {
    // SAFETY: no preconditions.
    std::hint::black_box(unsafe { libc::getppid() });
}

fn gettid() -> u32 {
    // SAFETY: no preconditions.
    u32::try_from(unsafe { libc::syscall(libc::SYS_gettid) }).unwrap()
}

fn ticks_per_second() -> f64 {
    // SAFETY: no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime from a `/proc/.../stat` line, in seconds (the kernel's 10 ms ticks).
fn stat_cpu(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // After the command: state is field 3, utime field 14, stime field 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / ticks_per_second()
}

fn thread_cpu(tid: u32) -> f64 {
    stat_cpu(&format!("/proc/self/task/{tid}/stat"))
}

fn process_cpu() -> f64 {
    stat_cpu("/proc/self/stat")
}

/// CPU seconds from /proc over the inside of a capture window, and the profile.
struct Window {
    busy: f64,
    syscalls: f64,
    process: f64,
    profile: Profile,
}

fn capture_under_load(load: &Load, mode: ModeRequest, frequency: u32, seconds: f64) -> Window {
    let req = ProfileRequest {
        frequency,
        mode,
        ..ProfileRequest::default()
    };
    let session = Session::start(&req).expect("capture starts");
    let before = (
        thread_cpu(load.busy),
        thread_cpu(load.syscalls),
        process_cpu(),
    );
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let after = (
        thread_cpu(load.busy),
        thread_cpu(load.syscalls),
        process_cpu(),
    );
    let profile = session.finish().expect("capture finishes");
    Window {
        busy: after.0 - before.0,
        syscalls: after.1 - before.1,
        process: after.2 - before.2,
        profile,
    }
}

fn sampled(profile: &Profile, tid: u32) -> f64 {
    let t = profile
        .threads()
        .iter()
        .find(|t| t.tid == tid)
        .unwrap_or_else(|| panic!("thread {tid} not in the profile"));
    t.samples as f64 * profile.period().as_secs_f64()
}

/// Each load thread's sampled CPU within `tolerance` of its /proc CPU time, their shares of the
/// process within ±5 points, the whole process covered at least `min_coverage`.
fn check_coverage(w: &Window, load: &Load, min_coverage: f64) {
    let p = &w.profile;
    let total_sampled = p.sampled_time().as_secs_f64();
    let (busy, syscalls) = (sampled(p, load.busy), sampled(p, load.syscalls));
    let report = format!(
        "{}: busy {busy:.3} s sampled of {:.3} s (/proc), syscalls {syscalls:.3} of {:.3}, \
         process {total_sampled:.3} of {:.3} (/proc; profile's own figure {:.3})",
        p.mode().as_str(),
        w.busy,
        w.syscalls,
        w.process,
        p.cpu_time().as_secs_f64()
    );
    eprintln!("{report}");
    assert!(w.busy > 0.5 && w.syscalls > 0.5, "the load ran: {report}");
    // The /proc readings sit inside the sampled window (a few ms shorter), at 10 ms resolution.
    for (name, got, want) in [("busy", busy, w.busy), ("syscalls", syscalls, w.syscalls)] {
        assert!(
            got >= want * min_coverage - 0.02 && got <= want * 1.05 + 0.04,
            "{name} thread: {report}"
        );
    }
    for (name, got, want) in [("busy", busy, w.busy), ("syscalls", syscalls, w.syscalls)] {
        let (got, want) = (100.0 * got / total_sampled, 100.0 * want / w.process);
        assert!(
            (got - want).abs() <= 5.0,
            "{name} thread's share: {got:.1}% sampled vs {want:.1}% of the CPU: {report}"
        );
    }
    assert!(
        total_sampled >= w.process * min_coverage,
        "coverage: {report}"
    );
    assert!(
        total_sampled <= p.cpu_time().as_secs_f64() * 1.02 + 0.02,
        "sampled more than used: {report}"
    );
    assert!(
        (p.cpu_time().as_secs_f64() - w.process).abs() <= 0.05 * w.process + 0.05,
        "the profile's process CPU vs /proc: {report}"
    );
    let folded = p.folded();
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("busy-loop;") && l.contains(BUSY))
    );
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("syscall-loop;") && l.contains(SYSCALLS))
    );
}

#[test]
fn perf_events_cover_each_threads_cpu_time_kernel_included() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let load = Load::start();
    let w = capture_under_load(&load, ModeRequest::Auto, 999, 3.0);
    if w.profile.mode() != Mode::PerfEvents {
        eprintln!(
            "SKIPPED: perf events with kernel frames are refused here (auto ran {}); the \
             fallback is tested on its own",
            w.profile.mode().as_str()
        );
        return;
    }
    check_coverage(&w, &load, 0.95);
    // System-call time is under the Rust stack that made the call, kernel frames on top.
    let folded = w.profile.folded();
    let in_kernel: u64 = folded
        .lines()
        .filter(|l| l.starts_with("syscall-loop;") && l.contains(SYSCALLS))
        .filter(|l| l.rsplit_once(' ').unwrap().0.ends_with("_[k]"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    let syscall_thread = w
        .profile
        .threads()
        .iter()
        .find(|t| t.tid == load.syscalls)
        .unwrap()
        .samples;
    assert!(
        in_kernel * 2 > syscall_thread,
        "{in_kernel} of the system-call thread's {syscall_thread} samples end in the kernel"
    );
}

#[test]
fn thread_timers_cover_each_threads_cpu_time() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let load = Load::start();
    let w = capture_under_load(&load, ModeRequest::Timer, 999, 3.0);
    assert_eq!(w.profile.mode(), Mode::ThreadTimers);
    check_coverage(&w, &load, 0.90);
}

#[test]
fn thread_timers_at_a_low_rate_are_weighted_right() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let load = Load::start();
    let w = capture_under_load(&load, ModeRequest::Timer, 99, 3.0);
    check_coverage(&w, &load, 0.90);
}
