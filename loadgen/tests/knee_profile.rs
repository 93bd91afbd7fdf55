//! The profile at the knee against a fake linkr admin listener: two sequential captures (folded,
//! then pprof) while the knee rate is held, flamegraphs (plain and differential against a
//! baseline), allocations per request from `/metrics` deltas, and the allocator in the report.

mod knee_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use linkr_loadgen::knee::SearchEnd;

const FOLDED: &str = "linkr;tokio::worker;hyper::dispatch;linkr::routes::redirect 300\nlinkr;tokio::worker;hyper::encode 100\n";

#[derive(Default)]
struct Admin {
    capturing: AtomicBool,
    overlapped: AtomicBool,
    captures: std::sync::Mutex<Vec<String>>,
    scrapes: AtomicU64,
}

#[derive(serde::Deserialize)]
struct ProfileQuery {
    seconds: u64,
    frequency: u32,
    format: String,
}

async fn profile(State(admin): State<Arc<Admin>>, Query(q): Query<ProfileQuery>) -> Response {
    if admin.capturing.swap(true, Ordering::SeqCst) {
        admin.overlapped.store(true, Ordering::SeqCst);
        return (StatusCode::CONFLICT, "profile_in_progress").into_response();
    }
    admin
        .captures
        .lock()
        .unwrap()
        .push(format!("{}:{}:{}", q.format, q.seconds, q.frequency));
    tokio::time::sleep(Duration::from_secs(q.seconds)).await;
    admin.capturing.store(false, Ordering::SeqCst);
    match q.format.as_str() {
        "folded" => FOLDED.into_response(),
        "pprof" => vec![0x1f_u8, 0x8b, 8, 0, 0, 0, 0, 0].into_response(),
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Each scrape adds 1000 redirects (0 allocations) and 100 creates (12 allocations, 1500 bytes each).
async fn metrics(State(admin): State<Arc<Admin>>) -> String {
    let n = admin.scrapes.fetch_add(1, Ordering::SeqCst) + 1;
    format!(
        "# TYPE linkr_request_allocations histogram\n\
         linkr_request_allocations_sum{{route=\"/{{code}}\"}} 0\n\
         linkr_request_allocations_count{{route=\"/{{code}}\"}} {}\n\
         linkr_request_allocations_sum{{route=\"/v1/links\"}} {}\n\
         linkr_request_allocations_count{{route=\"/v1/links\"}} {}\n\
         linkr_request_allocated_bytes_sum{{route=\"/v1/links\"}} {}\n\
         linkr_allocations_total {}\n\
         linkr_http_requests_total{{route=\"/{{code}}\",method=\"GET\",status=\"3xx\"}} {}\n",
        1000 * n,
        1200 * n,
        100 * n,
        150_000 * n,
        2000 * n,
        1100 * n
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_at_the_knee_and_reads_allocations() {
    let admin_state = Arc::new(Admin::default());
    let admin = knee_support::serve(
        "fake-admin",
        Router::new()
            .route("/debug/pprof/profile", get(profile))
            .route("/metrics", get(metrics))
            .route(
                "/debug/allocs",
                get(|| async {
                    axum::Json(serde_json::json!({"allocator": "mimalloc", "counting": true}))
                }),
            )
            .with_state(admin_state.clone()),
    );
    let service = knee_support::serve("service", Router::new().route("/", get(|| async { "ok" })));
    let out = tempfile::tempdir().unwrap();
    let baseline = tempfile::tempdir().unwrap();
    std::fs::write(
        baseline.path().join("get.folded"),
        FOLDED.replace(" 300", " 100"),
    )
    .unwrap();
    let target = format!("http://{service}/");
    let admin_url = format!("http://{admin}");
    let outcome = knee_support::run_knee(
        &target,
        &[
            "--admin",
            &admin_url,
            "--scenario",
            "get",
            "--start-rate",
            "50",
            "--max-rate",
            "50",
            "--step",
            "1s",
            "--profile-seconds",
            "1",
            "--baseline-dir",
            baseline.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ],
    )
    .await;

    assert_eq!(outcome.knee_rate, Some(50.0));
    assert_eq!(outcome.end, SearchEnd::MaxRatePassed);
    assert!(
        !admin_state.overlapped.load(Ordering::SeqCst),
        "captures overlapped (the endpoint allows one)"
    );
    assert_eq!(
        *admin_state.captures.lock().unwrap(),
        vec!["folded:1:499".to_string(), "pprof:1:499".to_string()]
    );

    let dir = out.path();
    assert_eq!(
        std::fs::read_to_string(dir.join("cpu.folded")).unwrap(),
        FOLDED
    );
    assert_eq!(
        std::fs::read(dir.join("cpu.pb.gz")).unwrap()[..2],
        [0x1f, 0x8b]
    );
    let flame = std::fs::read_to_string(dir.join("flamegraph.svg")).unwrap();
    assert!(flame.contains("<svg") && flame.contains("linkr::routes::redirect"));
    assert!(
        std::fs::read_to_string(dir.join("flamegraph-diff.svg"))
            .unwrap()
            .contains("<svg")
    );

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["profile"]["status"], "captured");
    assert_eq!(summary["profile"]["pprof"], "cpu.pb.gz");
    let rows = summary["allocations"]["rows"].as_array().unwrap();
    let create = rows
        .iter()
        .find(|r| r["route"] == "/v1/links")
        .expect("create row");
    assert_eq!(create["allocs_per_request"].as_f64(), Some(12.0));
    assert_eq!(create["bytes_per_request"].as_f64(), Some(1500.0));
    let redirect = rows
        .iter()
        .find(|r| r["route"] == "/{code}")
        .expect("redirect row");
    assert_eq!(redirect["allocs_per_request"].as_f64(), Some(0.0));
    assert!(
        summary["environment"]["allocator"]
            .as_str()
            .unwrap()
            .starts_with("mimalloc")
    );
    assert!(summary["profile_window"]["requests"].as_u64().unwrap() > 0);

    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(
        html.contains(r#"data="flamegraph.svg""#) && html.contains(r#"data="flamegraph-diff.svg""#)
    );
    assert!(html.contains("12.00") && html.contains("1500"));
}
