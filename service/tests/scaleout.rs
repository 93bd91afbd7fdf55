//! The scale-out backends: two in-process linkr instances on one Postgres and one Redis.
//!
//! Needs a real Postgres and Redis: `LINKR_TEST_DATABASE_URL` and `LINKR_TEST_REDIS_URL`
//! (`scripts/services.sh` starts throwaway ones and prints both). Without them these tests
//! fail rather than pass silently.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkr::app::{AppError, Listeners, run};
use linkr::config::{ApiKey, Config, Secret};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ALICE: &str = "alice-key-0123456789";
const BOB: &str = "bob-key-0123456789";
/// Every wait on an observable result gives up after this.
const WAIT: Duration = Duration::from_secs(10);

fn backend_urls() -> (String, String) {
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

fn config(dir: &TempDir, database_url: &str, redis_url: Option<&str>) -> Config {
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

struct Instance {
    base: String,
    client: reqwest::Client,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), AppError>>,
}

impl Instance {
    /// Starts an instance and waits until it has started (not necessarily ready).
    async fn start(database_url: &str, redis_url: Option<&str>) -> Self {
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
    async fn ready() -> Self {
        let (database_url, redis_url) = backend_urls();
        let instance = Self::start(&database_url, Some(&redis_url)).await;
        instance.wait_status("/readyz", 200).await;
        instance
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Polls `path` until it answers `status` (bounded by [`WAIT`]).
    async fn wait_status(&self, path: &str, status: u16) -> reqwest::Response {
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

    async fn create(&self, key: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/links"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn create_ok(&self, body: Value) -> String {
        let response = self.create(ALICE, body).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        let created: Value = response.json().await.unwrap();
        created["code"].as_str().unwrap().to_string()
    }

    async fn stats(&self, code: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/links/{code}")))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap()
    }

    async fn clicks(&self, code: &str) -> u64 {
        let response = self.stats(code).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["clicks"].as_u64().unwrap()
    }

    async fn delete(&self, key: &str, code: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/v1/links/{code}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
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

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Polls `f` until it returns `want` (bounded by [`WAIT`]); returns the last value.
async fn eventually<F, Fut>(want: u64, mut f: F) -> u64
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_created_on_a_redirects_on_b_and_a_delete_reaches_b() {
    let (a, b) = tokio::join!(Instance::ready(), Instance::ready());
    let url = format!("https://example.com/{}", unique("page"));
    let code = a.create_ok(json!({ "url": url })).await;

    let redirect = b.get(&format!("/{code}")).await;
    assert_eq!(redirect.status(), 302);
    assert_eq!(redirect.headers()["location"], url.as_str());
    let stats: Value = b.stats(&code).await.json().await.unwrap();
    assert_eq!(stats["url"], url.as_str());

    // Not the owner, on B: refused there too.
    assert_eq!(b.delete(BOB, &code).await.status(), 403);
    assert_eq!(a.delete(ALICE, &code).await.status(), 204);
    assert_eq!(a.get(&format!("/{code}")).await.status(), 404);
    // B held the link in its index: the invalidation (pub/sub) removes it.
    b.wait_status(&format!("/{code}"), 404).await;
    assert_eq!(b.stats(&code).await.status(), 404);
    assert_eq!(b.delete(ALICE, &code).await.status(), 404);

    // Unknown codes: 404 on both, also when asked again (negative cache).
    for _ in 0..3 {
        assert_eq!(b.get("/no-such-code-here").await.status(), 404);
    }
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_on_both_instances_are_counted_after_the_flush() {
    let (a, b) = tokio::join!(Instance::ready(), Instance::ready());
    let code = a
        .create_ok(json!({ "url": "https://example.com/clicks" }))
        .await;
    for _ in 0..3 {
        assert_eq!(a.get(&format!("/{code}")).await.status(), 302);
    }
    for _ in 0..2 {
        assert_eq!(b.get(&format!("/{code}")).await.status(), 302);
    }
    // Each instance sees its own clicks at once and the other's after its flush (50 ms).
    assert_eq!(eventually(5, || a.clicks(&code)).await, 5);
    assert_eq!(eventually(5, || b.clicks(&code)).await, 5);
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_code_taken_on_a_is_409_on_b() {
    let (a, b) = tokio::join!(Instance::ready(), Instance::ready());
    let code = unique("mine");
    let body = json!({ "url": "https://example.com/a", "code": code });
    assert_eq!(a.create(ALICE, body.clone()).await.status(), 201);
    let taken = b.create(BOB, body).await;
    assert_eq!(taken.status(), 409);
    let error: Value = taken.json().await.unwrap();
    assert_eq!(error["error"], "code_taken", "{error}");
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_with_a_failing_postgres_check_when_the_database_is_down() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let database_url = format!("postgres://linkr@127.0.0.1:{port}/linkr");
    let instance = Instance::start(&database_url, None).await;

    let started = Instant::now();
    let response = instance.get("/readyz").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "readiness is bounded"
    );
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["store"]["ok"], true, "{body}");
    assert!(body["checks"].get("redis").is_none(), "{body}");
    assert!(
        !body.to_string().contains(&port.to_string()),
        "no internals in the body: {body}"
    );
    // Liveness never looks at dependencies.
    assert_eq!(instance.get("/healthz").await.status(), 200);
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_clicks_survive_a_restart() {
    let a = Instance::ready().await;
    let body: Value = a.get("/readyz").await.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"]["ok"], true, "{body}");
    assert_eq!(body["checks"]["redis"]["ok"], true, "{body}");
    let code = a
        .create_ok(json!({ "url": "https://example.com/kept" }))
        .await;
    for _ in 0..2 {
        assert_eq!(a.get(&format!("/{code}")).await.status(), 302);
    }
    a.stop().await;

    // A new instance with a fresh data dir: everything comes from Postgres (and Redis).
    let a = Instance::ready().await;
    let redirect = a.get(&format!("/{code}")).await;
    assert_eq!(redirect.status(), 302);
    assert_eq!(redirect.headers()["location"], "https://example.com/kept");
    assert_eq!(eventually(3, || a.clicks(&code)).await, 3);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_an_instance_reads_postgres_and_drops_deleted_links() {
    let (database_url, _) = backend_urls();
    let (a, c) = tokio::join!(Instance::ready(), async {
        let c = Instance::start(&database_url, None).await;
        c.wait_status("/readyz", 200).await;
        c
    });
    let code = a
        .create_ok(json!({ "url": "https://example.com/no-redis" }))
        .await;
    assert_eq!(c.get(&format!("/{code}")).await.status(), 302);
    assert_eq!(a.delete(ALICE, &code).await.status(), 204);
    // No invalidation channel: the periodic revalidation (every 5 s) drops it.
    c.wait_status(&format!("/{code}"), 404).await;
    tokio::join!(a.stop(), c.stop());
}
