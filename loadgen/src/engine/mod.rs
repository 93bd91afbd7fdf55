//! The lean engine: the step's goose users on one current-thread runtime, on a thread of its own
//! that lives as long as the process (so connections opened in one step serve the next).
//!
//! With `--spawn` the process is pinned to the generator's CPU before any thread starts, so this
//! thread runs there too: one runtime per pinned core, no work stealing, no cross-thread wake-ups.

pub mod h1;
pub mod lean;
pub mod timer;

use std::future::Future;
use std::sync::OnceLock;
use std::sync::mpsc;

use crate::error::LoadgenError;

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

/// Short description of the engine for results and reports.
pub fn engine() -> &'static str {
    if lean::hyper_connections() {
        "lean-hyper-h1/current-thread x1"
    } else {
        "lean-raw-h1/current-thread x1"
    }
}

fn jobs() -> &'static Mutex<mpsc::Sender<Job>> {
    static JOBS: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("loadgen-engine".into())
            .spawn(move || {
                fine_timer_slack();
                // I/O and timers only: the process and signal drivers would check for exited
                // children at every park.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                    .expect("the engine's runtime");
                while let Ok(job) = rx.recv() {
                    job(&rt);
                }
            })
            .expect("the engine thread");
        Mutex::new(tx)
    })
}

use std::sync::Mutex;

/// Runs `make()`'s future to completion on the engine's runtime and returns its output. One at a
/// time: a second call waits for the first.
pub async fn run<F, Fut, R>(make: F) -> Result<R, LoadgenError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R>,
    R: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |rt| {
        let _ = tx.send(rt.block_on(make()));
    });
    let gone = || LoadgenError::Goose("the engine thread stopped (a step panicked)".into());
    jobs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| gone())?;
    rx.await.map_err(|_| gone())
}

/// CPU time (user + system) of the calling thread, in microseconds.
pub fn thread_cpu_us() -> u64 {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut ru) != 0 {
            return 0;
        }
        let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// Linux delays a sleeping thread's wake-up by up to its timer slack (50 µs by default): the
/// engine asks for 1 µs.
fn fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only affects the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}
