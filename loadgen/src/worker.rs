//! Remote workers: `loadgen worker --listen ADDR` runs one segment of a step per request, and a
//! coordinator (`loadgen knee --workers-at URL,URL,...`) sends each worker its segment, collects
//! the segments' results and merges them ([`crate::merge`]).
//!
//! - `GET /clock`: the worker's wall clock (`{"unix_us": ...}`). Before each step the coordinator
//!   compares it with its own at the round trip's midpoint and refuses a skew above its bound
//!   (`--max-clock-skew`, 50 ms by default). A skew shifts only when a worker's segment starts,
//!   not what it measures: each worker counts every request from its own intended time.
//! - `POST /segment` (a [`SegmentRequest`]): runs the segment from the agreed start and answers
//!   with its result (the `run --segment --json` object, histograms included); 409 while another
//!   segment runs, 400 for a request it cannot run.
//!
//! A worker that does not answer, or answers with an error, fails the step with its URL and the
//! reason: it is never left out of the merge (the merge would refuse a missing segment anyway).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::driver::{self, StepConfig};
use crate::error::LoadgenError;
use crate::merge::{self, Merged, SegmentFile};
use crate::scenarios::{Scenario, Seeds};
use crate::schedule::Arrival;
use crate::segment::{self, Segment};

/// What a coordinator asks a worker to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentRequest {
    pub target: String,
    pub scenario: String,
    pub arrival: String,
    pub rate: f64,
    pub duration_us: u64,
    pub index: u64,
    pub count: u64,
    pub seed: u64,
    pub start_at_unix_ms: u64,
    pub api_key: Option<String>,
    /// The seeded links' codes (redirect, stats, mixed).
    #[serde(default)]
    pub seed_codes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Clock {
    pub unix_us: u64,
}

fn unix_us_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

struct WorkerState {
    busy: tokio::sync::Mutex<()>,
}

/// The worker's HTTP API.
pub fn router() -> Router {
    let state = Arc::new(WorkerState {
        busy: tokio::sync::Mutex::new(()),
    });
    Router::new()
        .route(
            "/clock",
            get(|| async {
                Json(Clock {
                    unix_us: unix_us_now(),
                })
            }),
        )
        .route("/segment", post(run_segment))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

async fn run_segment(
    State(state): State<Arc<WorkerState>>,
    Json(req): Json<SegmentRequest>,
) -> Response {
    let Ok(_busy) = state.busy.try_lock() else {
        return error(
            StatusCode::CONFLICT,
            "this worker is running another segment",
        );
    };
    let (Ok(scenario), Ok(arrival)) = (
        Scenario::from_str(&req.scenario, false),
        Arrival::from_str(&req.arrival, false),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown scenario {:?} or arrival {:?}",
                req.scenario, req.arrival
            ),
        );
    };
    if req.count == 0 || req.index >= req.count || req.duration_us == 0 {
        return error(StatusCode::BAD_REQUEST, "invalid segment or duration");
    }
    let cfg = StepConfig {
        target: req.target.clone(),
        scenario,
        rate: req.rate,
        duration: Duration::from_micros(req.duration_us),
        arrival,
        api_key: req.api_key.clone(),
        seeds: Arc::new(Seeds {
            codes: req.seed_codes.clone(),
        }),
        goose_report: None,
        service_pid: None,
    };
    let seg = Segment {
        index: req.index,
        count: req.count,
        seed: req.seed,
        start_at_unix_ms: Some(req.start_at_unix_ms),
    };
    eprintln!(
        "worker: segment {}/{} of {} @ {}/s for {:.1}s against {}",
        seg.index,
        seg.count,
        req.scenario,
        req.rate,
        cfg.duration.as_secs_f64(),
        req.target
    );
    match driver::run_segment(&cfg, &seg).await {
        Ok(r) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            segment::to_json(&seg, &r, cfg.rate, cfg.duration),
        )
            .into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("the segment failed: {e}")),
    }
}

/// `loadgen worker --listen ADDR`: serves until interrupted.
pub async fn serve(listen: SocketAddr) -> Result<std::process::ExitCode, LoadgenError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| LoadgenError::Usage(format!("cannot listen on {listen}: {e}")))?;
    eprintln!(
        "loadgen worker listening on http://{}",
        listener.local_addr().map_err(LoadgenError::Io)?
    );
    driver::set_progress(false);
    axum::serve(listener, router())
        .with_graceful_shutdown(async {
            while !driver::interrupted() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .map_err(LoadgenError::Io)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Default bound on a worker's clock skew.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_millis(50);

/// How far ahead the coordinator sets the agreed start of a remote step.
pub const REMOTE_LEAD: Duration = Duration::from_millis(2000);

fn client() -> Result<reqwest::Client, LoadgenError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| LoadgenError::Client(e.to_string()))
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// The skew of `url`'s clock against ours, in µs (positive: the worker is ahead), from the
/// midpoint of the request's round trip; an error when it does not answer in time.
pub async fn clock_skew_us(http: &reqwest::Client, url: &str) -> Result<i64, LoadgenError> {
    let before = unix_us_now();
    let clock: Clock = http
        .get(format!("{}/clock", base(url)))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| worker_gone(url, &e))?
        .json()
        .await
        .map_err(|e| worker_gone(url, &e))?;
    let after = unix_us_now();
    let mid = before / 2 + after / 2;
    Ok(clock.unix_us as i64 - mid as i64)
}

fn worker_gone(url: &str, e: &dyn std::fmt::Display) -> LoadgenError {
    LoadgenError::Goose(format!(
        "remote worker {url} did not answer: {e} (the step fails: a worker is never left out)"
    ))
}

/// Runs `cfg` over the remote workers at `urls` and merges their segments. Fails when a worker
/// does not answer, answers with an error, or its clock is off by more than `max_skew`.
pub async fn run_remote(
    cfg: &StepConfig,
    urls: &[String],
    max_skew: Duration,
) -> Result<Merged, LoadgenError> {
    if urls.is_empty() {
        return Err(LoadgenError::Usage(
            "--workers-at needs at least one URL".into(),
        ));
    }
    let http = client()?;
    for url in urls {
        let skew = clock_skew_us(&http, url).await?;
        if skew.unsigned_abs() > max_skew.as_micros() as u64 {
            return Err(LoadgenError::Usage(format!(
                "remote worker {url}: its clock is {:+.1} ms off ours, more than --max-clock-skew {} ms (synchronise the clocks, e.g. with NTP)",
                skew as f64 / 1000.0,
                max_skew.as_millis()
            )));
        }
    }
    let count = urls.len() as u64;
    let seed: u64 = rand::random();
    let start_at = segment::unix_ms_now() + REMOTE_LEAD.as_millis() as u64;
    let wait =
        REMOTE_LEAD + cfg.duration + crate::scenarios::REQUEST_TIMEOUT + Duration::from_secs(30);
    let requests = urls.iter().enumerate().map(|(i, url)| {
        let req = SegmentRequest {
            target: cfg.target.clone(),
            scenario: cfg.scenario.to_string(),
            arrival: cfg.arrival.to_string(),
            rate: cfg.rate,
            duration_us: cfg.duration.as_micros() as u64,
            index: i as u64,
            count,
            seed,
            start_at_unix_ms: start_at,
            api_key: cfg.api_key.clone(),
            seed_codes: cfg.seeds.codes.clone(),
        };
        let (http, url) = (http.clone(), url.clone());
        async move {
            let url = url.as_str();
            let resp = http
                .post(format!("{}/segment", base(url)))
                .json(&req)
                .timeout(wait)
                .send()
                .await
                .map_err(|e| worker_gone(url, &e))?;
            let status = resp.status();
            let body = resp.text().await.map_err(|e| worker_gone(url, &e))?;
            if !status.is_success() {
                return Err(LoadgenError::Goose(format!(
                    "remote worker {url} failed its segment {i}/{count}: {status}: {}",
                    body.trim()
                )));
            }
            let file: SegmentFile = serde_json::from_str(&body).map_err(|e| {
                LoadgenError::Goose(format!(
                    "remote worker {url} answered with something other than a segment result: {e}"
                ))
            })?;
            Ok::<_, LoadgenError>((url.to_string(), file))
        }
    });
    let parts = futures_join_all(requests).await?;
    merge::merge(&parts)
}

/// Awaits every future (all run at once); the first error, after all have ended.
async fn futures_join_all<F, T>(futs: impl Iterator<Item = F>) -> Result<Vec<T>, LoadgenError>
where
    F: std::future::Future<Output = Result<T, LoadgenError>> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(LoadgenError::Goose(format!(
                    "a worker request panicked: {e}"
                )));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
