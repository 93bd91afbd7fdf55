//! Load beyond one machine: remote workers (`loadgen worker --listen`) driven by a coordinator,
//! a worker that does not answer, a clock out of bounds; and a knee over `--workers 2` against a
//! server of known capacity (as in knee_truth.rs), within −10%/+5%.
//!
//! The workers and the knee run as processes of the built `loadgen` (a debug build) against
//! in-test loopback servers, at a few hundred requests a second.

mod knee_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use linkr_loadgen::schedule::{Arrival, Schedule};
use linkr_loadgen::worker::{Clock, run_remote};
use linkr_loadgen::{Scenario, Seeds, StepConfig};

/// One at a time: they measure on a shared 2-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `loadgen worker` process, killed when dropped.
struct Worker {
    child: Child,
    url: String,
    /// Its stderr, line by line.
    lines: mpsc::Receiver<String>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `loadgen worker --listen 127.0.0.1:0` and waits for the line naming its address.
fn worker() -> Worker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["worker", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the worker says where it listens")
            .unwrap();
        if let Some(url) = line.strip_prefix("loadgen worker listening on ") {
            break url.to_string();
        }
    };
    // Keep draining its stderr so that it never blocks on a full pipe.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Worker {
        child,
        url,
        lines: rx,
    }
}

fn ok_server() -> String {
    let addr = knee_support::serve(
        "remote-ok-server",
        Router::new().route("/ok", get(|| async { "ok" })),
    );
    format!("http://{addr}/ok")
}

fn step(target: String, rate: f64, duration: Duration) -> StepConfig {
    StepConfig {
        target,
        scenario: Scenario::Get,
        rate,
        duration,
        arrival: Arrival::Constant,
        api_key: None,
        seeds: Arc::new(Seeds::default()),
        goose_report: None,
        service_pid: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_workers_send_every_arrival_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (a, b) = (worker(), worker());
    let cfg = step(ok_server(), 800.0, Duration::from_secs(2));
    let merged = run_remote(
        &cfg,
        &[a.url.clone(), b.url.clone()],
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    let len = Schedule::new(Arrival::Constant, 800.0, Duration::from_secs(2)).len();
    let r = &merged.result;
    assert_eq!(r.requests, len, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert!((r.rate_achieved - 800.0).abs() <= 8.0, "{r:?}");
    assert_eq!(merged.workers.len(), 2);
    assert_eq!(merged.workers.iter().map(|w| w.requests).sum::<u64>(), len);
    assert!(r.engine.contains("x2 workers"), "{}", r.engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_does_not_answer_fails_the_step() {
    let _one = ONE_AT_A_TIME.lock().await;
    let live = worker();
    // A port with nothing listening on it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cfg = step(ok_server(), 200.0, Duration::from_secs(1));
    let err = run_remote(
        &cfg,
        &[live.url.clone(), dead.clone()],
        Duration::from_millis(50),
    )
    .await
    .err()
    .expect("a dead worker fails the step");
    let msg = err.to_string();
    assert!(
        msg.contains(&dead) && msg.contains("did not answer"),
        "{msg}"
    );

    // A worker that dies during its segment fails the step too.
    let mut dying = worker();
    let url = dying.url.clone();
    let cfg = step(ok_server(), 200.0, Duration::from_secs(3));
    let run =
        tokio::spawn(async move { run_remote(&cfg, &[url], Duration::from_millis(50)).await });
    // Killed once it has taken its segment (before the agreed start, 2 s later).
    let lines = std::mem::replace(&mut dying.lines, mpsc::channel().1);
    tokio::task::spawn_blocking(move || {
        lines
            .iter()
            .find(|l| l.starts_with("worker: segment"))
            .expect("the worker takes its segment")
    })
    .await
    .unwrap();
    dying.child.kill().unwrap();
    let err = run
        .await
        .unwrap()
        .err()
        .expect("a worker that died fails the step");
    assert!(err.to_string().contains("did not answer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_clock_off_by_more_than_the_bound_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A worker whose clock is 10 s ahead.
    let addr = knee_support::serve(
        "skewed-clock",
        Router::new().route(
            "/clock",
            get(|| async {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_micros() as u64;
                axum::Json(Clock {
                    unix_us: now + 10_000_000,
                })
            }),
        ),
    );
    let cfg = step(ok_server(), 200.0, Duration::from_secs(1));
    let err = run_remote(&cfg, &[format!("http://{addr}")], Duration::from_millis(50))
        .await
        .err()
        .expect("a skewed clock is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("clock is +") && msg.contains("--max-clock-skew 50 ms"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// The knee over two local workers, against one worker behind many connections (knee_truth.rs):
// capacity 1/S, a step of T passes up to c × (1 + L/T).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knee_over_two_workers_finds_the_known_capacity() {
    let _one = ONE_AT_A_TIME.lock().await;
    let addr = knee_support::one_worker("one-worker-server", Duration::from_micros(2_500));
    let out = tempfile::tempdir().unwrap();
    let target = format!("http://{addr}/work");
    let run = tokio::task::spawn_blocking({
        let out = out.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_loadgen"))
                .args([
                    "knee",
                    "--target",
                    &target,
                    "--scenario",
                    "get",
                    "--slo-p99",
                    "80ms",
                    "--start-rate",
                    "240",
                    "--step",
                    "2s",
                    "--workers",
                    "2",
                    "--out",
                ])
                .arg(&out)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("summary.json")).unwrap_or_else(|e| {
            panic!("no summary ({e}): {}", String::from_utf8_lossy(&run.stderr))
        }),
    )
    .unwrap();
    let steps = summary["steps"].to_string();
    let knee = summary["knee"]["rate"]
        .as_f64()
        .or_else(|| summary["knee_rate"].as_f64())
        .unwrap_or_else(|| panic!("no knee: {steps}"));
    let expected = 400.0;
    assert!(
        (expected * 0.9..=expected * 1.05).contains(&knee),
        "knee {knee} req/s not within -10%/+5% of {expected}: {steps}"
    );
    // Every step came from two workers, each in the step's table.
    for s in summary["steps"].as_array().unwrap() {
        assert_eq!(s["workers"].as_array().map(Vec::len), Some(2), "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knee_over_remote_workers_lists_them_per_step() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (a, b) = (worker(), worker());
    let target = ok_server();
    let out = tempfile::tempdir().unwrap();
    let at = format!("{},{}", a.url, b.url);
    let dir = out.path().to_path_buf();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args([
                "knee",
                "--target",
                &target,
                "--scenario",
                "get",
                "--workers-at",
                &at,
                "--step",
                "1s",
                "--max-steps",
                "2",
                "--start-rate",
                "200",
                "--warm-up",
                "0",
                "--out",
            ])
            .arg(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("summary.json"))
            .unwrap_or_else(|e| panic!("no summary ({e}): {stderr}")),
    )
    .unwrap();
    let steps = summary["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{stderr}");
    for s in steps {
        let workers = s["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 2, "{s}");
        let sent: u64 = workers
            .iter()
            .map(|w| w["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(Some(sent), s["requests"].as_u64(), "{s}");
    }
    let html = std::fs::read_to_string(out.path().join("index.html")).unwrap();
    assert!(html.contains("Workers per step"));
}
