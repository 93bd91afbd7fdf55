//! The profiler measured against what the kernel says independently: a thread in a busy loop and
//! a thread making system calls, their CPU time read from `/proc/self/task/*/stat` around the
//! capture window, and (where it can run) `perf record` sampling the same threads at once.
//! The tests take turns: a capture samples the whole process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use linkr::profiling::{Mode, ModeRequest, Profile, ProfileRequest, Session};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// (utime, stime) from a `/proc/.../stat` line, in seconds (the kernel's 10 ms ticks).
fn stat_user_system(path: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(path).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // After the command: state is field 3, utime field 14, stime field 15.
    let seconds = |i: usize| fields[i].parse::<u64>().unwrap() as f64 / ticks_per_second();
    (seconds(11), seconds(12))
}

/// utime + stime, in seconds.
fn stat_cpu(path: &str) -> f64 {
    let (user, system) = stat_user_system(path);
    user + system
}

fn thread_cpu(tid: u32) -> f64 {
    stat_cpu(&format!("/proc/self/task/{tid}/stat"))
}

fn thread_system(tid: u32) -> f64 {
    stat_user_system(&format!("/proc/self/task/{tid}/stat")).1
}

fn process_cpu() -> f64 {
    stat_cpu("/proc/self/stat")
}

/// CPU seconds from /proc over the inside of a capture window, and the profile.
struct Window {
    busy: f64,
    syscalls: f64,
    /// The system-call thread's time in the kernel (stime).
    syscalls_in_kernel: f64,
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
        thread_system(load.syscalls),
    );
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let after = (
        thread_cpu(load.busy),
        thread_cpu(load.syscalls),
        process_cpu(),
        thread_system(load.syscalls),
    );
    let profile = session.finish().expect("capture finishes");
    Window {
        busy: after.0 - before.0,
        syscalls: after.1 - before.1,
        process: after.2 - before.2,
        syscalls_in_kernel: after.3 - before.3,
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
    // The perf samplers' clock runs on while the host steals a running thread's CPU, and the
    // CPU clocks do not: what the machine lost to steal in the window may be sampled on top.
    let steal = p
        .host_steal()
        .expect("/proc/stat's steal is read")
        .as_secs_f64();
    let report = format!(
        "{}: busy {busy:.3} s sampled of {:.3} s (/proc), syscalls {syscalls:.3} of {:.3}, \
         process {total_sampled:.3} of {:.3} (/proc; profile's own figure {:.3}); host steal \
         {steal:.2} s",
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
            got >= want * min_coverage - 0.02 && got <= want * 1.05 + 0.04 + steal,
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
        total_sampled <= p.cpu_time().as_secs_f64() * 1.02 + 0.02 + steal,
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
    let _turn = ONE_AT_A_TIME.blocking_lock();
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
    // The kernel's own split of the same thread's time (stime of utime + stime) is the second
    // opinion; how much of a write + getppid loop is kernel time depends on the CPU and kernel.
    let sampled_share = 100.0 * in_kernel as f64 / syscall_thread.max(1) as f64;
    let proc_share = 100.0 * w.syscalls_in_kernel / w.syscalls;
    let report = format!(
        "{in_kernel} of the system-call thread's {syscall_thread} samples end in the kernel \
         ({sampled_share:.1}%); /proc: {:.2} s of its {:.2} s in the kernel ({proc_share:.1}%)",
        w.syscalls_in_kernel, w.syscalls
    );
    eprintln!("{report}");
    assert!(
        proc_share >= 20.0,
        "the thread spent time in system calls: {report}"
    );
    assert!((sampled_share - proc_share).abs() <= 10.0, "{report}");
}

#[test]
fn thread_timers_cover_each_threads_cpu_time() {
    let _turn = ONE_AT_A_TIME.blocking_lock();
    let load = Load::start();
    let w = capture_under_load(&load, ModeRequest::Timer, 999, 3.0);
    assert_eq!(w.profile.mode(), Mode::ThreadTimers);
    check_coverage(&w, &load, 0.90);
}

#[test]
fn thread_timers_at_a_low_rate_are_weighted_right() {
    let _turn = ONE_AT_A_TIME.blocking_lock();
    let load = Load::start();
    let w = capture_under_load(&load, ModeRequest::Timer, 99, 3.0);
    check_coverage(&w, &load, 0.90);
}

/// Inclusive share (percent of samples whose stack holds it) of each function.
fn inclusive_shares(stacks: impl Iterator<Item = (Vec<String>, u64)>) -> Vec<(String, f64)> {
    let mut per_function: std::collections::HashMap<String, u64> = Default::default();
    let mut total = 0;
    for (frames, weight) in stacks {
        total += weight;
        let unique: std::collections::HashSet<String> = frames.into_iter().collect();
        for f in unique {
            *per_function.entry(f).or_default() += weight;
        }
    }
    let mut shares: Vec<(String, f64)> = per_function
        .into_iter()
        .map(|(f, w)| (f, 100.0 * w as f64 / total.max(1) as f64))
        .collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    shares
}

/// A function name as both tools print it: no Rust hash suffix, no kernel marker, and glibc's
/// aliases of one function (`__GI___getppid`, `__GI_getppid`, `__libc_write`) under one name.
fn normalise(name: &str) -> String {
    let name = name.strip_suffix("_[k]").unwrap_or(name);
    let name = match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    };
    let name = name
        .strip_prefix("__GI_")
        .unwrap_or(name)
        .trim_start_matches('_');
    name.strip_prefix("libc_").unwrap_or(name).to_string()
}

/// `perf script -F tid,period,ip,sym` output: per sample, its thread, period and frames.
fn parse_perf_script(text: &str) -> Vec<(u32, u64, Vec<String>)> {
    let mut samples = Vec::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        let Some(head) = lines.next() else { continue };
        let mut fields = head.split_whitespace();
        let (Some(tid), Some(period)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (Ok(tid), Ok(period)) = (tid.parse(), period.parse()) else {
            continue;
        };
        let frames = lines
            .filter_map(|l| l.trim().split_once(' ').map(|(_, sym)| sym.trim()))
            .filter(|sym| *sym != "[unknown]")
            .map(normalise)
            .collect();
        samples.push((tid, period, frames));
    }
    samples
}

#[test]
fn perf_record_agrees_on_the_top_functions() {
    let _turn = ONE_AT_A_TIME.blocking_lock();
    let load = Load::start();
    let req = ProfileRequest {
        frequency: 999,
        mode: ModeRequest::Perf,
        ..ProfileRequest::default()
    };
    let session = match Session::start(&req) {
        Err(linkr::profiling::ProfileError::Unavailable(e)) => {
            eprintln!("SKIPPED: perf_event_open is refused here, so perf cannot run either: {e}");
            return;
        }
        other => other.expect("capture starts"),
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("perf.data");
    let threads = format!("{},{}", load.busy, load.syscalls);
    // The same event and period as ours (1001001 ns of a thread's CPU time).
    let recorded = std::process::Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-c",
            "1001001",
            "-g",
            "-t",
            &threads,
        ])
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep", "3"])
        .status()
        .expect("perf is not installed: scripts/setup.sh installs Debian's linux-perf");
    let profile = session.finish().expect("capture finishes");
    let load_tids = (load.busy, load.syscalls);
    drop(load);
    assert!(recorded.success(), "perf record failed: {recorded}");
    let script = std::process::Command::new("perf")
        .args(["script", "--no-inline", "-F", "tid,period,ip,sym", "-i"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(script.status.success(), "perf script failed");
    let perf_samples = parse_perf_script(&String::from_utf8_lossy(&script.stdout));
    assert!(
        perf_samples.len() > 1000,
        "perf took {} samples",
        perf_samples.len()
    );
    let perf = inclusive_shares(perf_samples.into_iter().map(|(_, p, f)| (f, p)));
    let ours = inclusive_shares(
        profile
            .stacks()
            .iter()
            .filter(|s| s.tid == load_tids.0 || s.tid == load_tids.1)
            .map(|s| (s.frames.iter().map(|f| normalise(f)).collect(), s.samples)),
    );
    let ours_of = |f: &str| ours.iter().find(|(g, _)| g == f).map_or(0.0, |(_, s)| *s);
    let mut table = String::new();
    for (f, share) in perf.iter().take(25) {
        table.push_str(&format!("{share:6.1}% {:6.1}%  {f}\n", ours_of(f)));
    }
    eprintln!("perf    ours    function (inclusive)\n{table}");
    // The top ten below the frames every sample has (thread start-up, the closures).
    for (f, share) in perf.iter().filter(|(_, s)| *s < 99.5).take(10) {
        let ours = ours_of(f);
        assert!(
            (ours - share).abs() <= 3.0,
            "{f}: {ours:.1}% in ours vs {share:.1}% in perf\n{table}"
        );
    }
}

/// The admin router on a loopback port.
async fn admin() -> std::net::SocketAddr {
    let router = linkr::admin::router(linkr::admin::AdminState {
        metrics: linkr::metrics::Metrics::new(),
        log_level: Arc::new(linkr::telemetry::LogLevel::detached("info")),
        store: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()[name].to_str().unwrap().to_string()
}

fn decode_pprof(gz: &[u8]) -> pprof::protos::Profile {
    use pprof::protos::Message as _;
    use std::io::Read as _;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("gzip");
    pprof::protos::Profile::decode(raw.as_slice()).expect("pprof protobuf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_capture_is_a_valid_empty_profile_in_every_format() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let admin = admin().await;
    let client = reqwest::Client::new();
    for mode in ["auto", "timer"] {
        // One sample per second of a thread's CPU time: an idle process earns none in 1 s.
        let url = format!(
            "http://{admin}/debug/pprof/profile?seconds=1&frequency=1&format=svg&mode={mode}"
        );
        let res = client.get(url).send().await.unwrap();
        assert_eq!(res.status(), 200, "{mode}");
        assert_eq!(header(&res, "x-profile-samples"), "0", "{mode}");
        assert_eq!(header(&res, "x-profile-sampled-cpu-seconds"), "0.000");
        let cpu: f64 = header(&res, "x-profile-process-cpu-seconds")
            .parse()
            .unwrap();
        assert!((0.0..0.5).contains(&cpu), "{cpu}");
        let svg = res.text().await.unwrap();
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("no samples: the process used"), "{svg}");
        assert!(
            svg.contains(&format!("{cpu:.3} s of CPU")),
            "{cpu} in {svg}"
        );
        assert!(!svg.contains("No valid input"));

        let last = format!("http://{admin}/debug/pprof/last?format=");
        let folded = client.get(format!("{last}folded")).send().await.unwrap();
        assert_eq!(folded.status(), 200);
        assert_eq!(folded.text().await.unwrap(), "");
        let res = client.get(format!("{last}pprof")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let p = decode_pprof(&res.bytes().await.unwrap());
        assert!(p.sample.is_empty());
        assert_eq!(p.sample_type.len(), 2);
        assert_eq!(p.period, 1_000_000_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_back_to_back_captures_under_load_with_a_409_during_each() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let _load = Load::start();
    let admin = admin().await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let mode = ["auto", "timer"][i % 2];
        let format = ["pprof", "folded", "svg"][i % 3];
        let url = format!(
            "http://{admin}/debug/pprof/profile?seconds=1&frequency=499&format={format}&mode={mode}"
        );
        let capture = tokio::spawn(client.get(url).send());
        let busy = format!("http://{admin}/debug/pprof/profile?seconds=1");
        let mut conflict = None;
        for _ in 0..100 {
            if linkr::profiling::is_capturing() {
                conflict = Some(client.get(&busy).send().await.unwrap().status());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(conflict, Some(reqwest::StatusCode::CONFLICT), "capture {i}");
        let res = tokio::time::timeout(Duration::from_secs(60), capture)
            .await
            .unwrap_or_else(|_| panic!("capture {i} hung"))
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), 200, "capture {i}");
        let sampled: f64 = header(&res, "x-profile-sampled-cpu-seconds")
            .parse()
            .unwrap();
        let cpu: f64 = header(&res, "x-profile-process-cpu-seconds")
            .parse()
            .unwrap();
        let steal: f64 = header(&res, "x-profile-host-steal-seconds")
            .parse()
            .unwrap();
        let mode = header(&res, "x-profile-mode");
        assert!(
            sampled >= 0.9 * cpu && sampled <= 1.02 * cpu + 0.01 + steal,
            "capture {i} ({mode}): {sampled} s sampled of {cpu} s, the host's steal {steal} s"
        );
        let body = res.bytes().await.unwrap();
        match format {
            "pprof" => assert!(!decode_pprof(&body).sample.is_empty()),
            "folded" => assert!(std::str::from_utf8(&body).unwrap().contains(BUSY)),
            _ => assert!(std::str::from_utf8(&body).unwrap().contains("</svg>")),
        }
    }
    assert!(!linkr::profiling::is_capturing());
}
