use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use linkr::admin::AdminState;
use linkr::metrics::{Metrics, track_request};

pub struct Harness {
    pub metrics: Arc<Metrics>,
    pub admin: SocketAddr,
    pub app: SocketAddr,
    pub client: reqwest::Client,
}

impl Harness {
    pub async fn start() -> Self {
        let metrics = Metrics::new();
        let admin = serve(linkr::admin::router(AdminState {
            metrics: Arc::clone(&metrics),
            log_level: Arc::new(linkr::telemetry::LogLevel::detached("info")),
            store: None,
        }))
        .await;
        let app = serve(test_app(Arc::clone(&metrics))).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Self {
            metrics,
            admin,
            app,
            client,
        }
    }

    pub fn admin_url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.admin)
    }

    pub fn app_url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.app)
    }

    /// Sends sequential requests to the app (at most `max_rate` per second) until dropped.
    pub fn drive_load(&self, max_rate: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (client, base) = (self.client.clone(), self.app_url(""));
        let (stop_in, sent_in) = (Arc::clone(&stop), Arc::clone(&sent));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / max_rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0u64;
            while !stop_in.load(Ordering::Relaxed) {
                tick.tick().await;
                let res = client.get(format!("{base}/code{}", i % 50)).send().await;
                assert_eq!(res.expect("app request").status(), StatusCode::FOUND);
                sent_in.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
        Load {
            stop,
            sent,
            task: Some(task),
        }
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub async fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.take().unwrap().await.expect("load task");
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// `/{code}` redirects after some CPU work (so profiles have something of ours to sample).
pub fn test_app(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/{code}", get(redirect))
        .route("/v1/links/{code}", get(|| async { "{}" }))
        .layer(axum::middleware::from_fn_with_state(metrics, track_request))
}

async fn redirect(Path(code): Path<String>) -> impl IntoResponse {
    let n = instrumentation_busy_work(code.len() as u64);
    (
        StatusCode::FOUND,
        [(
            header::LOCATION,
            format!("https://example.com/{code}?{}", n % 7),
        )],
    )
}

/// CPU work with a name to look for in profiles.
#[inline(never)]
pub fn instrumentation_busy_work(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

pub const BUSY_FN: &str = "instrumentation_busy_work";
