//! The knee's first step is judged on warm traffic: `--warm-up` sends unmeasured traffic first.
//!
//! The in-test server is slow (300 ms per request) for its first second after the first request
//! reaches it, then instant, like a service paying for cold caches and new connections. With a
//! 100 ms objective, one step at the start rate passes only if the warm-up absorbed that second.

mod knee_support;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;

const COLD_FOR: Duration = Duration::from_secs(1);

fn start_cold_server() -> SocketAddr {
    let first: Arc<OnceLock<Instant>> = Arc::default();
    knee_support::serve(
        "cold-server",
        Router::new().route("/work", get(work)).with_state(first),
    )
}

async fn work(State(first): State<Arc<OnceLock<Instant>>>) -> &'static str {
    if first.get_or_init(Instant::now).elapsed() < COLD_FOR {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    "ok"
}

async fn one_step(warm_up: &str) -> (Option<f64>, serde_json::Value) {
    let addr = start_cold_server();
    let out = tempfile::tempdir().unwrap();
    let target = format!("http://{addr}/work");
    let outcome = knee_support::run_knee(
        &target,
        &[
            "--scenario",
            "get",
            "--slo-p99",
            "100ms",
            "--start-rate",
            "50",
            "--max-steps",
            "1",
            "--step",
            "2s",
            "--warm-up",
            warm_up,
            "--out",
            out.path().to_str().unwrap(),
        ],
    )
    .await;
    (outcome.knee_rate, outcome.summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_step_is_not_judged_on_a_cold_start() {
    let (knee, summary) = one_step("0").await;
    assert_eq!(
        knee, None,
        "without a warm-up the cold second fails step 1: {}",
        summary["steps"]
    );
    assert_eq!(summary["search"]["warm_up_s"], 0.0);

    let (knee, summary) = one_step("1.5s").await;
    assert_eq!(knee, Some(50.0), "{}", summary["steps"]);
    assert_eq!(summary["search"]["warm_up_s"], 1.5);
    let notes = summary["search"]["notes"].to_string();
    assert!(
        notes.contains("1.5 s of unmeasured warm-up traffic at 50 req/s"),
        "{notes}"
    );
    // Only the judged step is in the report.
    assert_eq!(summary["steps"].as_array().unwrap().len(), 1);
}
