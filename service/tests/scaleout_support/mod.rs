//! Helpers of the scale-out tests (`scaleout.rs`, `reliability_faults.rs`): in-process linkr
//! instances on Postgres and Redis, a TCP proxy that can blackhole or slow a backend, and
//! private Postgres and Redis instances that a test may stop and start
//! (`scripts/services.sh` in a directory of its own).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use linkr::app::{AppError, Listeners, run};
use linkr::config::{ApiKey, Config, Secret};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

pub const ALICE: &str = "alice-key-0123456789";
pub const BOB: &str = "bob-key-0123456789";
/// Every wait on an observable result gives up after this.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn backend_urls() -> (String, String) {
    let get = |var: &str| {
        std::env::var(var).unwrap_or_else(|_| {
            panic!(
                "{var} is not set: the scale-out tests need a real Postgres and Redis; \
                 run scripts/services.sh, export the two variables it prints \
                 (`. /tmp/linkr-services/env`), then run them again"
            )
        })
    };
    (get("LINKR_TEST_DATABASE_URL"), get("LINKR_TEST_REDIS_URL"))
}

pub fn config(dir: &TempDir, database_url: &str, redis_url: Option<&str>) -> Config {
    let key = |name: &str, key: &str| ApiKey {
        name: name.into(),
        key: Secret::new(key.into()),
        admin: false,
    };
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        api_keys: vec![key("alice", ALICE), key("bob", BOB)],
        access_log: false,
        shutdown_delay: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(10),
        click_flush_interval: Duration::from_millis(50),
        database_url: Some(Secret::new(database_url.into())),
        redis_url: redis_url.map(|u| Secret::new(u.into())),
        ..Config::default()
    }
}

pub struct Instance {
    pub base: String,
    pub client: reqwest::Client,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), AppError>>,
}

impl Instance {
    /// Starts an instance and waits until it has started (not necessarily ready).
    pub async fn start(database_url: &str, redis_url: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir, database_url, redis_url);
        let listeners = Listeners {
            main: TcpListener::bind(config.addr).await.unwrap(),
            admin: TcpListener::bind(config.admin_addr).await.unwrap(),
        };
        let addr: SocketAddr = listeners.main.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(config, listeners, async {
            let _ = stopped.await;
        }));
        let instance = Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            _dir: dir,
            stop: Some(stop),
            handle,
        };
        instance.wait_status("/startupz", 200).await;
        instance
    }

    /// Started on the shared backends and ready (Postgres answers, subscribed to invalidations).
    pub async fn ready() -> Self {
        let (database_url, redis_url) = backend_urls();
        Self::ready_on(&database_url, Some(&redis_url)).await
    }

    /// Started on these backends and fully ready (`status: ready`, not degraded).
    pub async fn ready_on(database_url: &str, redis_url: Option<&str>) -> Self {
        let instance = Self::start(database_url, redis_url).await;
        instance.wait_readiness("ready").await;
        instance
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Polls `path` until it answers `status` (bounded by [`WAIT`]).
    pub async fn wait_status(&self, path: &str, status: u16) -> reqwest::Response {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = self.client.get(self.url(path)).send().await {
                if response.status() == status {
                    return response;
                }
                if Instant::now() > deadline {
                    panic!(
                        "{path} still answers {} (wanted {status}): {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    );
                }
            } else if Instant::now() > deadline {
                panic!("{path} does not answer");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/readyz`: its HTTP status and body.
    pub async fn readiness(&self) -> (u16, Value) {
        let response = self.get("/readyz").await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `/readyz` until its body's `status` is `want` (bounded by [`WAIT`]); returns it.
    pub async fn wait_readiness(&self, want: &str) -> (u16, Value) {
        self.wait_readiness_for(want, WAIT).await
    }

    pub async fn wait_readiness_for(&self, want: &str, wait: Duration) -> (u16, Value) {
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(response) = self.client.get(self.url("/readyz")).send().await {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if body["status"] == want {
                    return (status, body);
                }
                if Instant::now() > deadline {
                    panic!("/readyz is still {status} {body} (wanted status {want})");
                }
            } else if Instant::now() > deadline {
                panic!("/readyz does not answer");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn create(&self, key: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/links"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn create_ok(&self, body: Value) -> String {
        let response = self.create(ALICE, body).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        let created: Value = response.json().await.unwrap();
        created["code"].as_str().unwrap().to_string()
    }

    pub async fn stats(&self, code: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/links/{code}")))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap()
    }

    pub async fn clicks(&self, code: &str) -> u64 {
        let response = self.stats(code).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["clicks"].as_u64().unwrap()
    }

    pub async fn delete(&self, key: &str, code: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/v1/links/{code}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("shutdown within 20s")
            .expect("run did not panic")
            .expect("clean shutdown");
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Polls `f` until it returns `want` (bounded by [`WAIT`]); returns the last value.
pub async fn eventually<F, Fut>(want: u64, mut f: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = u64>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let got = f().await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy in front of a backend, to break it in ways a real outage does: `freeze`
/// blackholes every connection (bytes are neither forwarded nor refused, new connections
/// hang), `freeze_subscribers` blackholes only the connections that sent `SUBSCRIBE` (Redis
/// pub/sub), and `delay_responses` holds every server-to-client chunk for a while.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    frozen: AtomicBool,
    delay_ms: AtomicU64,
    /// Client-to-server chunks forwarded.
    requests: AtomicU64,
    /// Server-to-client chunks received from upstream (before any delay).
    responses: AtomicU64,
    forwarded: Notify,
    thawed: Notify,
    connections: Mutex<Vec<Arc<ProxyConn>>>,
}

#[derive(Default)]
struct ProxyConn {
    subscriber: AtomicBool,
    frozen: AtomicBool,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let conn = Arc::new(ProxyConn::default());
                    state.wait_thawed(&conn).await;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    state.connections.lock().unwrap().push(conn.clone());
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pump(state.clone(), conn.clone(), cr, sw, true);
                    let down = pump(state, conn, sr, cw, false);
                    tokio::join!(up, down);
                });
            }
        });
        Self { addr, state, task }
    }

    /// A proxy in front of the host and port of `url` (`postgres://...`, `redis://...`);
    /// returns it and `url` pointing at it.
    pub async fn in_front_of(url: &str) -> (Self, String) {
        let parsed = url::Url::parse(url).unwrap();
        let host = parsed.host_str().unwrap();
        let port = parsed.port().unwrap();
        let upstream: SocketAddr = format!("{host}:{port}").parse().unwrap();
        let proxy = Self::start(upstream).await;
        let mut through = parsed.clone();
        through.set_port(Some(proxy.addr.port())).unwrap();
        (proxy, through.to_string())
    }

    pub fn freeze(&self) {
        self.state.frozen.store(true, Ordering::SeqCst);
    }

    pub fn thaw(&self) {
        self.state.frozen.store(false, Ordering::SeqCst);
        for conn in self.state.connections.lock().unwrap().iter() {
            conn.frozen.store(false, Ordering::SeqCst);
        }
        self.state.thawed.notify_waiters();
    }

    /// Blackholes the connections that have subscribed so far; returns how many.
    pub fn freeze_subscribers(&self) -> usize {
        let connections = self.state.connections.lock().unwrap();
        let mut n = 0;
        for conn in connections.iter() {
            if conn.subscriber.load(Ordering::SeqCst) {
                conn.frozen.store(true, Ordering::SeqCst);
                n += 1;
            }
        }
        n
    }

    /// Holds every server-to-client chunk for `delay` (zero: none).
    pub fn delay_responses(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Client-to-server chunks forwarded so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Server-to-client chunks received from the backend so far (counted before the delay).
    pub fn responses(&self) -> u64 {
        self.state.responses.load(Ordering::SeqCst)
    }

    /// Completes once the backend has sent more than `seen` chunks (it has answered).
    pub async fn wait_responses_past(&self, seen: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let forwarded = self.state.forwarded.notified();
            if self.responses() > seen {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no answer came through the proxy"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), forwarded).await;
        }
    }

    /// Completes once more than `seen` client-to-server chunks have been forwarded.
    pub async fn wait_requests_past(&self, seen: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let forwarded = self.state.forwarded.notified();
            if self.requests() > seen {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no request went through the proxy"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), forwarded).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProxyState {
    fn is_frozen(&self, conn: &ProxyConn) -> bool {
        self.frozen.load(Ordering::SeqCst) || conn.frozen.load(Ordering::SeqCst)
    }

    async fn wait_thawed(&self, conn: &ProxyConn) {
        loop {
            let thawed = self.thawed.notified();
            if !self.is_frozen(conn) {
                return;
            }
            // Also re-checked now and then, in case the notification came before `notified`.
            let _ = tokio::time::timeout(Duration::from_millis(50), thawed).await;
        }
    }
}

async fn pump(
    state: Arc<ProxyState>,
    conn: Arc<ProxyConn>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    upstream: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        state.wait_thawed(&conn).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if upstream {
            if contains(&buf[..n], b"SUBSCRIBE") || contains(&buf[..n], b"subscribe") {
                conn.subscriber.store(true, Ordering::SeqCst);
            }
        } else {
            state.responses.fetch_add(1, Ordering::SeqCst);
            state.forwarded.notify_waiters();
            let delay = state.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
        state.wait_thawed(&conn).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if upstream {
            state.requests.fetch_add(1, Ordering::SeqCst);
            state.forwarded.notify_waiters();
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A private Postgres and Redis (`scripts/services.sh` in a temporary directory), on ports of
/// their own, that a test may stop and start without disturbing other tests. Stopped on drop.
pub struct PrivateServices {
    dir: TempDir,
    pub database_url: String,
    pub redis_url: String,
}

impl PrivateServices {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = services(dir.path(), "start");
        let var = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("services.sh printed no {name}: {out}"))
                .to_string()
        };
        Self {
            database_url: var("LINKR_TEST_DATABASE_URL"),
            redis_url: var("LINKR_TEST_REDIS_URL"),
            dir,
        }
    }

    /// Runs `scripts/services.sh <command>` on these services (blocking: it returns once the
    /// service is down or answering).
    pub fn run(&self, command: &str) {
        services(self.dir.path(), command);
    }
}

impl Drop for PrivateServices {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script())
            .arg("stop")
            .env("LINKR_SERVICES_DIR", self.dir.path())
            .output();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh")
}

fn services(dir: &Path, command: &str) -> String {
    let out = std::process::Command::new(script())
        .arg(command)
        .env("LINKR_SERVICES_DIR", dir)
        .output()
        .expect("scripts/services.sh runs");
    assert!(
        out.status.success(),
        "scripts/services.sh {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
