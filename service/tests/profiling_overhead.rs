//! What sampling costs the sampled code, measured in CPU time so that other processes on the
//! machine do not blur it: a loop's operations per second of its own thread's CPU time, without a
//! capture and with one at 99 Hz and at 999 Hz, for each sampler. A benchmark, not a check:
//!
//!     cargo test --release -p linkr --test profiling_overhead -- --ignored --nocapture

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use linkr::profiling::{ModeRequest, ProfileRequest, Session};

/// Runs `op` on its own thread for `seconds`, returning operations per CPU-second of that thread.
fn ops_per_cpu_second(op: fn(), seconds: f64, capture: Option<(ModeRequest, u32)>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = {
        let (stop, ops) = (Arc::clone(&stop), Arc::clone(&ops));
        std::thread::spawn(move || {
            let tid = linkr_tid();
            tx.send(tid).unwrap();
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..100 {
                    op();
                }
                ops.fetch_add(100, Ordering::Relaxed);
            }
        })
    };
    let tid = rx.recv().unwrap();
    let session = capture.map(|(mode, frequency)| {
        Session::start(&ProfileRequest {
            mode,
            frequency,
            ..ProfileRequest::default()
        })
        .unwrap()
    });
    let (cpu0, ops0) = (
        linkr::profiling::thread_cpu_time(tid).unwrap(),
        ops.load(Ordering::Relaxed),
    );
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (cpu1, ops1) = (
        linkr::profiling::thread_cpu_time(tid).unwrap(),
        ops.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    if let Some(s) = session {
        s.finish().unwrap();
    }
    (ops1 - ops0) as f64 / (cpu1 - cpu0).as_secs_f64()
}

fn linkr_tid() -> u32 {
    // SAFETY: no preconditions.
    u32::try_from(unsafe { libc::syscall(libc::SYS_gettid) }).unwrap()
}

fn compute() {
    let mut x = std::hint::black_box(0x9e37_79b9_u64);
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x);
}

fn syscall() {
    thread_local! {
        static NULL: std::fs::File =
            std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    }
    NULL.with(|f| {
        let buf = [0u8; 64];
        // SAFETY: a live buffer and an open descriptor.
        std::hint::black_box(unsafe { libc::write(f.as_raw_fd(), buf.as_ptr().cast(), 64) });
    });
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture, in release"]
fn sampling_overhead() {
    const SECONDS: f64 = 3.0;
    for (name, op) in [("compute", compute as fn()), ("write(2)", syscall as fn())] {
        // Interleaved, three rounds; the median of each configuration.
        let configs: [(&str, Option<(ModeRequest, u32)>); 5] = [
            ("none", None),
            ("perf-events 99 Hz", Some((ModeRequest::Auto, 99))),
            ("perf-events 999 Hz", Some((ModeRequest::Auto, 999))),
            ("thread-timers 99 Hz", Some((ModeRequest::Timer, 99))),
            ("thread-timers 999 Hz", Some((ModeRequest::Timer, 999))),
        ];
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
        for _ in 0..3 {
            for (i, (_, capture)) in configs.iter().enumerate() {
                results[i].push(ops_per_cpu_second(op, SECONDS, *capture));
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let base = median(&mut results[0].clone());
        for (i, (label, _)) in configs.iter().enumerate() {
            let m = median(&mut results[i]);
            println!(
                "{name:9} {label:21} {:>12.0} ops per CPU-second  {:+6.2}%  (runs: {})",
                m,
                100.0 * (m / base - 1.0),
                results[i]
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}
