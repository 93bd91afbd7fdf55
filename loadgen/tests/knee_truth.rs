//! The knee found against servers of known capacity, three kinds, within −10%/+5% of the knee
//! their model gives for the objective; and the same knee whatever the start rate.
//!
//! Each server is in-test, on loopback, its service time slept on absolute deadlines so that a
//! late wake-up on a busy machine delays one response but does not lower the capacity:
//!
//! - **one worker** behind many connections: requests queue for a single worker that takes
//!   `S` each, so the capacity is `1/S`. Below it a constant-rate schedule meets no queue; above
//!   it the backlog grows by `(r - c) × t`, so the last requests of a step of `T` seconds wait
//!   `(r/c - 1) × T`: with the objective `L`, a step passes up to `c × (1 + L / T)`. With
//!   `L = 80 ms`, `T = 2 s` that is `1.04 c`, inside the +5% band; the search's 5% resolution
//!   keeps the knee above `c / 1.05`.
//! - **thread per connection**, `K` threads at a time doing the work (a pool of `K` slots, each
//!   `S` long): capacity `K/S`, the same queue with `K` servers.
//! - **latency that grows with concurrency**: every request is served at once, but takes
//!   `S0 + β × (requests already in flight)`. By Little's law the mean latency at rate `r` is
//!   `W = S0 / (1 - r β)`, so the throughput never passes `c = 1/β` and the objective `L` is met
//!   up to `r = c × (1 - S0 / L)`: with `S0 = 5 ms`, `β = 2 ms`, `L = 50 ms`, 450 of 500 req/s.
//!
//! The start-rate test runs the one-worker server, made to degrade after an overload (busy
//! without a break for a second, it then answers 150 ms later than it would until 3 s after the
//! overload ends, as a service paying for a backlog), from `--start-rate 250` and from the default
//! 2,000 req/s: the default start overloads it three times before the first rate it can serve,
//! and the knee must still agree within 5%, because every step after one that did not pass waits
//! for the target to recover. Without that wait the step after an overload fails.
//!
//! The tests take the generator (a debug build) through a few hundred requests a second, so the
//! server, not the generator's CPU, is the bound; they run one at a time.

mod knee_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use linkr_loadgen::knee::Outcome;
use tokio::sync::oneshot;

/// One knee search at a time: they measure latency on a shared 2-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `loadgen knee` against `addr` with `flags`; returns the outcome and the steps, for messages.
async fn knee(addr: SocketAddr, flags: &[&str]) -> (Outcome, String) {
    let out = tempfile::tempdir().unwrap();
    let mut all = vec!["--scenario", "get", "--out", out.path().to_str().unwrap()];
    all.extend_from_slice(flags);
    let outcome = knee_support::run_knee(&format!("http://{addr}/work"), &all).await;
    let steps = outcome.summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} req/s: {} p99 {} µs{}",
                s["rate_target"],
                s["outcome"],
                s["latency_us"]["p99"],
                if s.get("recovery").is_some() {
                    format!(", then {}", s["recovery"])
                } else {
                    String::new()
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    (outcome, steps)
}

fn assert_within(knee: Option<f64>, expected: f64, steps: &str) -> f64 {
    let knee = knee.unwrap_or_else(|| panic!("no knee:\n{steps}"));
    assert!(
        (expected * 0.9..=expected * 1.05).contains(&knee),
        "knee {knee} req/s not within -10%/+5% of {expected}:\n{steps}"
    );
    knee
}

// ---------------------------------------------------------------------------------------------
// One worker behind many connections

type Job = (Instant, oneshot::Sender<bool>);

/// A single worker taking `service` per request, in arrival order. With `degrade`, once it has
/// been busy without a break for a second (overloaded), every answer takes 150 ms more until 3 s
/// after the overload ends.
fn one_worker(service: Duration, degrade: bool) -> SocketAddr {
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("one-worker".into())
        .spawn(move || {
            let mut free_at = Instant::now();
            let mut busy_since = Instant::now();
            let mut slow_until = Instant::now();
            for (arrived, reply) in queue {
                if arrived > free_at {
                    busy_since = arrived;
                }
                let done = arrived.max(free_at) + service;
                free_at = done;
                if degrade && done - busy_since > Duration::from_secs(1) {
                    slow_until = done + Duration::from_secs(3);
                }
                let now = Instant::now();
                if done > now {
                    std::thread::sleep(done - now);
                }
                let _ = reply.send(done < slow_until);
            }
        })
        .unwrap();
    knee_support::serve(
        "one-worker-server",
        Router::new().route("/work", get(queued)).with_state(jobs),
    )
}

async fn queued(State(jobs): State<mpsc::Sender<Job>>) -> &'static str {
    let (tx, rx) = oneshot::channel();
    jobs.send((Instant::now(), tx)).expect("worker alive");
    if rx.await.expect("worker replies") {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    "done"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_behind_many_connections() {
    let _one = ONE_AT_A_TIME.lock().await;
    let addr = one_worker(Duration::from_micros(2_500), false);
    let (outcome, steps) = knee(
        addr,
        &["--slo-p99", "80ms", "--start-rate", "240", "--step", "2s"],
    )
    .await;
    assert_within(outcome.knee_rate, 400.0, &steps);
}

// ---------------------------------------------------------------------------------------------
// Thread per connection, K at a time doing the work

/// Each connection on its own thread; a request takes the slot (of `slots`) that frees first and
/// holds it for `service`.
fn thread_per_connection(slots: usize, service: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let free_at = Arc::new(Mutex::new(vec![Instant::now(); slots]));
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let free_at = Arc::clone(&free_at);
                std::thread::spawn(move || serve_connection(conn, &free_at, service));
            }
        })
        .unwrap();
    addr
}

/// HTTP/1.1 keep-alive, GET only: reads each request head, answers after its slot's deadline.
fn serve_connection(conn: TcpStream, free_at: &Mutex<Vec<Instant>>, service: Duration) {
    let _ = conn.set_nodelay(true);
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        // the request line and headers, up to the empty line
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let arrived = Instant::now();
        let done = {
            let mut slots = free_at.lock().unwrap();
            let slot = slots.iter_mut().min().unwrap();
            *slot = arrived.max(*slot) + service;
            *slot
        };
        let now = Instant::now();
        if done > now {
            std::thread::sleep(done - now);
        }
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-type: text/plain\r\n\r\ndone";
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_per_connection_with_a_fixed_service_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let addr = thread_per_connection(4, Duration::from_millis(10));
    let (outcome, steps) = knee(
        addr,
        &["--slo-p99", "80ms", "--start-rate", "240", "--step", "2s"],
    )
    .await;
    assert_within(outcome.knee_rate, 400.0, &steps);
}

// ---------------------------------------------------------------------------------------------
// Latency that grows with concurrency

const S0: Duration = Duration::from_millis(5);
const BETA: Duration = Duration::from_millis(2);

fn contended() -> SocketAddr {
    knee_support::serve(
        "contended-server",
        Router::new()
            .route("/work", get(contended_work))
            .with_state(Arc::new(AtomicU64::new(0))),
    )
}

async fn contended_work(State(in_flight): State<Arc<AtomicU64>>) -> &'static str {
    let arrived = tokio::time::Instant::now();
    let others = in_flight.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep_until(arrived + S0 + BETA * others as u32).await;
    in_flight.fetch_sub(1, Ordering::SeqCst);
    "done"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_that_grows_with_concurrency() {
    let _one = ONE_AT_A_TIME.lock().await;
    let slo = Duration::from_millis(50);
    let capacity = 1.0 / BETA.as_secs_f64();
    let expected = capacity * (1.0 - S0.as_secs_f64() / slo.as_secs_f64());
    assert_eq!(expected.round(), 450.0);
    let (outcome, steps) = knee(
        contended(),
        &["--slo-p99", "50ms", "--start-rate", "270", "--step", "3s"],
    )
    .await;
    assert_within(outcome.knee_rate, expected, &steps);
}

// ---------------------------------------------------------------------------------------------
// Independent of the start rate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_knee_does_not_depend_on_the_start_rate() {
    let _one = ONE_AT_A_TIME.lock().await;
    let addr = one_worker(Duration::from_micros(2_500), true);
    let flags = ["--slo-p99", "80ms", "--step", "2s"];
    let (low, low_steps) = knee(addr, &[&flags[..], &["--start-rate", "250"]].concat()).await;
    let (default, default_steps) = knee(addr, &flags).await;
    let steps = format!("from 250:\n{low_steps}\nfrom the default:\n{default_steps}");
    let low = assert_within(low.knee_rate, 400.0, &steps);
    let default_knee = assert_within(default.knee_rate, 400.0, &steps);
    assert!(
        (low - default_knee).abs() <= 0.05 * low.max(default_knee),
        "{low} vs {default_knee} req/s:\n{steps}"
    );
    // the default start overloaded the server before it found a rate it serves, and waited for
    // it to recover each time
    let first = &default.summary["steps"][0];
    assert_ne!(first["outcome"], "pass", "{steps}");
    let recovery = &first["recovery"];
    assert!(
        recovery["probes"].as_array().is_some_and(|p| !p.is_empty()),
        "{steps}"
    );
}
