//! The knee search against an in-test server of known capacity finds that capacity.
//!
//! The server serialises every request through one worker with a fixed 4 ms service time, its
//! completions scheduled on absolute deadlines (`max(arrival, previous completion) + 4 ms`), so
//! sleep overshoot delays single responses but never lowers the capacity: exactly 250 req/s.
//! Below it a constant-rate schedule sees no queue; above it the backlog grows by
//! `(rate - 250) × t`, so at `r ×` capacity the last requests of a step of `T` seconds wait
//! `(r - 1) × T`: with 3 s steps and a 200 ms objective every rate 7% or more above capacity fails,
//! while a scheduling hiccup of up to ~150 ms below capacity does not. The capacity is kept low so
//! that the HTTP handling (a debug build, on a shared 2-core machine) costs little CPU next to the
//! service time: the worker, not the CPU, is the bound.

mod knee_support;

use std::time::{Duration, Instant};

use linkr_loadgen::knee::{Bound, SearchEnd};

const SERVICE_TIME: Duration = Duration::from_millis(4);
const CAPACITY: f64 = 250.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knee_lies_within_ten_percent_of_a_known_capacity() {
    let addr = knee_support::one_worker("capacity-server", SERVICE_TIME);
    let out = tempfile::tempdir().unwrap();
    let target = format!("http://{addr}/work");
    let started = Instant::now();
    let outcome = knee_support::run_knee(
        &target,
        &[
            "--scenario",
            "get",
            "--slo-p99",
            "200ms",
            "--start-rate",
            "60",
            "--max-rate",
            "1000",
            "--step",
            "3s",
            "--out",
            out.path().to_str().unwrap(),
        ],
    )
    .await;
    let elapsed = started.elapsed();

    let knee_rate = outcome.knee_rate.expect("a knee");
    assert!(
        (CAPACITY * 0.9..=CAPACITY * 1.1).contains(&knee_rate),
        "knee {knee_rate} req/s not within 10% of the capacity {CAPACITY}: {}",
        serde_json::to_string_pretty(&outcome.summary["steps"]).unwrap()
    );
    assert_eq!(outcome.end, SearchEnd::Converged);
    // the bound follows the lowest step above the knee that did not pass: the service when it
    // failed, the generator when it was inconclusive (the generator, starved of CPU on a busy
    // machine, flagged itself saturated there)
    let lowest_not_passing = outcome.summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pass"] == false && s["rate_target"].as_f64().unwrap() > knee_rate)
        .min_by(|a, b| {
            a["rate_target"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["rate_target"].as_f64().unwrap())
        })
        .expect("a step above the knee that did not pass");
    let expected = if lowest_not_passing["outcome"] == "inconclusive" {
        Bound::Generator
    } else {
        Bound::Service
    };
    assert_eq!(
        outcome.bound, expected,
        "{}",
        outcome.summary["bound_evidence"]
    );
    assert!(elapsed < Duration::from_secs(90), "took {elapsed:?}");

    // summary.json as the design says, and a histogram pair per step
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["knee"]["rate"].as_f64(), Some(knee_rate));
    assert!(summary["knee"]["p99_us"].as_u64().unwrap() <= 200_000);
    assert_eq!(summary["slo_p99_us"].as_u64(), Some(200_000));
    assert_eq!(summary["bound"], expected.as_str());
    let steps = summary["steps"].as_array().unwrap();
    assert!(!steps.is_empty() && steps.len() <= 10);
    for s in steps {
        for key in [
            "rate_target",
            "rate_achieved",
            "requests",
            "errors",
            "latency_us",
            "latency_uncorrected_us",
            "generator_saturated",
            "pass",
            "outcome",
            "client",
            "engine",
        ] {
            assert!(s.get(key).is_some(), "step lacks {key}: {s}");
        }
        for key in ["hgrm", "hgrm_uncorrected"] {
            let f = out.path().join(s[key].as_str().unwrap());
            assert!(
                std::fs::read_to_string(&f).unwrap().contains("Percentile"),
                "{}",
                f.display()
            );
        }
    }
    // the search narrowed to 5%: some step failed just above the knee
    let lowest_fail = steps
        .iter()
        .filter(|s| s["pass"] == false)
        .filter_map(|s| s["rate_target"].as_f64())
        .fold(f64::INFINITY, f64::min);
    assert!(
        lowest_fail <= knee_rate * 1.05 + 1e-9,
        "lowest fail {lowest_fail}, knee {knee_rate}"
    );

    // a step that did not pass is followed by recovery probes, in the summary and the report
    let failed = steps.iter().find(|s| s["pass"] == false).unwrap();
    assert!(
        failed["recovery"]["probes"][0]["p99_us"].as_u64().is_some(),
        "{failed}"
    );
    assert_eq!(summary["client"], "lean");
    let html = std::fs::read_to_string(out.path().join("index.html")).unwrap();
    assert!(
        html.contains("generated by loadgen, client lean, engine "),
        "names the client and engine"
    );
    assert!(html.contains("recovered in "), "shows the recovery");
    assert!(html.contains(&format!("What bound the knee: {}", expected.as_str())));
    assert!(
        html.contains("Profile skipped"),
        "no admin listener: profile skipped with a note"
    );
}
