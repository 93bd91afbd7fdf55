//! An in-test HTTP server that looks like linkr from the outside, and can stall on command.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

pub const API_KEY: &str = "test-key";

#[derive(Clone)]
struct Shared {
    stalled: watch::Receiver<bool>,
    created: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
}

pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    stall: watch::Sender<bool>,
    pub created: Arc<AtomicU64>,
    pub hits: Arc<AtomicU64>,
}

impl TestServer {
    /// While stalled, every request is held until the stall ends.
    pub fn set_stalled(&self, on: bool) {
        self.stall.send_replace(on);
    }
}

async fn wait_unstalled(s: &Shared) {
    s.hits.fetch_add(1, Ordering::Relaxed);
    let mut rx = s.stalled.clone();
    let _ = rx.wait_for(|stalled| !*stalled).await;
}

fn authorized(h: &HeaderMap) -> bool {
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {API_KEY}"))
}

async fn hello(State(s): State<Shared>) -> &'static str {
    wait_unstalled(&s).await;
    "ok"
}

/// `GET /{code}`: a 302 to an address nothing listens on (following it would fail).
async fn redirect(State(s): State<Shared>, Path(code): Path<String>) -> Response {
    wait_unstalled(&s).await;
    (
        StatusCode::FOUND,
        [(header::LOCATION, format!("http://127.0.0.1:9/{code}"))],
    )
        .into_response()
}

async fn create(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    wait_unstalled(&s).await;
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if !body.contains("\"url\"") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let n = s.created.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"code":"c{n}","url":"https://example.com/","short_url":"x","created_at":0,"expires_at":null}}"#),
    )
        .into_response()
}

async fn stats(State(s): State<Shared>, headers: HeaderMap, Path(code): Path<String>) -> Response {
    wait_unstalled(&s).await;
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"code":"{code}","url":"https://example.com/","clicks":1,"created_at":0,"expires_at":null}}"#),
    )
        .into_response()
}

/// Starts the server on a free loopback port in the current runtime.
pub async fn start() -> TestServer {
    let (stall, stalled) = watch::channel(false);
    let created = Arc::new(AtomicU64::new(0));
    let hits = Arc::new(AtomicU64::new(0));
    let shared = Shared {
        stalled,
        created: created.clone(),
        hits: hits.clone(),
    };
    let app = Router::new()
        .route("/hello", get(hello))
        .route("/v1/links", axum::routing::post(create))
        .route("/v1/links/{code}", get(stats))
        .route("/{code}", get(redirect))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestServer {
        base,
        stall,
        created,
        hits,
    }
}

/// Starts the server on its own thread and runtime (for tests that block on a child process).
pub fn start_in_background() -> TestServer {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tx.send(start().await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

/// Number of recorded values at or above `at`.
pub fn count_at_or_above(h: &hdrhistogram::Histogram<u64>, at: u64) -> u64 {
    h.iter_recorded()
        .filter(|v| v.value_iterated_to() >= at)
        .map(|v| v.count_at_value())
        .sum()
}

/// A keep-alive HTTP/1.1 server on raw sockets, for tests of how the generator uses its
/// connections: it answers every request `200 ok`, every `slow_every`-th one (counted over all
/// connections; 0: none) after `slow_for`, and counts the connections that carried at least one
/// request (`used`) and the slow answers (`slow`).
pub struct ConnServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub used: Arc<AtomicU64>,
    pub slow: Arc<AtomicU64>,
}

pub async fn start_conn_server(slow_every: u64, slow_for: std::time::Duration) -> ConnServer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (used, slow) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let requests = Arc::new(AtomicU64::new(0));
    let (u, sl) = (used.clone(), slow.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let _ = s.set_nodelay(true);
            let (used, slow, requests) = (u.clone(), sl.clone(), requests.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                let mut served = 0u64;
                loop {
                    let end = loop {
                        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    };
                    got.drain(..end);
                    if served == 0 {
                        used.fetch_add(1, Ordering::Relaxed);
                    }
                    served += 1;
                    let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
                    if slow_every > 0 && n % slow_every == 0 {
                        slow.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(slow_for).await;
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    ConnServer { base, used, slow }
}

/// [`start_conn_server`] on its own thread and runtime (for tests that run the binary).
pub fn start_conn_server_in_background(
    slow_every: u64,
    slow_for: std::time::Duration,
) -> ConnServer {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tx.send(start_conn_server(slow_every, slow_for).await)
                .unwrap_or_else(|_| panic!("test gone"));
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}
