//! `spawn_app()` and typed request helpers (in-process), and `ChildApp` (the real binary).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use linkr::app::{AppError, Listeners, run_with_clock};
use linkr::clock::Clock;
use linkr::config::{ApiKey, Config, Secret};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ALICE: &str = "alice-key-0123456789";
pub const BOB: &str = "bob-key-0123456789";
pub const ROOT: &str = "root-key-0123456789";
/// `LINKR_API_KEYS` for the three keys above.
pub const API_KEYS: &str =
    "alice:alice-key-0123456789,bob:bob-key-0123456789,root:root-key-0123456789:admin";

/// A unix time the manual clocks start at.
pub const T0: i64 = 1_750_000_000;

pub fn test_config(data_dir: &Path) -> Config {
    let key = |name: &str, key: &str, admin| ApiKey {
        name: name.into(),
        key: Secret::new(key.into()),
        admin,
    };
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        api_keys: vec![
            key("alice", ALICE, false),
            key("bob", BOB, false),
            key("root", ROOT, true),
        ],
        access_log: false,
        shutdown_delay: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

/// A linkr running in this process on port 0 with a fresh store in a temp dir.
pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Clock,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), AppError>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_in(tempfile::tempdir().unwrap(), configure).await
}

/// Starts on `dir` (e.g. the dir of a stopped app, to test persistence).
pub async fn spawn_app_in(dir: TempDir, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(dir.path());
    configure(&mut config);
    let listeners = Listeners {
        main: TcpListener::bind(config.addr).await.unwrap(),
        admin: TcpListener::bind(config.admin_addr).await.unwrap(),
    };
    let addr = listeners.main.local_addr().unwrap();
    let admin_addr = listeners.admin.local_addr().unwrap();
    let clock = Clock::manual(T0);
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(run_with_clock(
        config,
        listeners,
        async {
            let _ = stopped.await;
        },
        clock.clone(),
    ));
    let app = TestApp {
        addr,
        admin_addr,
        base: format!("http://{addr}"),
        client: client(),
        clock,
        dir,
        stop: Some(stop),
        handle,
    };
    app.wait_started().await;
    app
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A created link, as the 201 body describes it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Created {
    pub code: String,
    pub url: String,
    pub short_url: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Polls `/startupz` (the start-up signal) until it answers 200.
    pub async fn wait_started(&self) {
        wait_for_status(&self.client, &self.url("/startupz"), 200).await;
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

    /// Creates a link as alice and returns the 201 body.
    pub async fn create_ok(&self, body: Value) -> Created {
        let response = self.create(ALICE, body).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    pub async fn create_url(&self, url: &str) -> Created {
        let created = self.create_ok(json!({ "url": url })).await;
        assert_eq!(created.url, url);
        created
    }

    pub async fn redirect(&self, code: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/{code}")))
            .send()
            .await
            .unwrap()
    }

    pub async fn stats(&self, key: &str, code: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/links/{code}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, key: &str, code: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/v1/links/{code}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Sends the stop signal without waiting (the app keeps running its shutdown).
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops gracefully; returns the data dir and how `run` ended.
    pub async fn stop(mut self) -> (TempDir, Result<(), AppError>) {
        self.signal_stop();
        let result = tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("shutdown within 30s")
            .expect("run did not panic");
        (self.dir, result)
    }
}

/// Polls `url` until it answers `status` (30 s at most).
pub async fn wait_for_status(client: &reqwest::Client, url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status() == status
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a JSON error body `{"error": kind, "message": ...}` and returns it.
pub async fn assert_error(response: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    assert!(
        response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json")),
        "content-type of a {status}: {:?}",
        response.headers().get("content-type")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], kind, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// The `linkr` binary as a child process, with its stdout captured line by line.
pub struct ChildApp {
    pub child: Child,
    pub addr: SocketAddr,
    pub lines: Arc<Mutex<Vec<String>>>,
    /// Its stderr, when started with [`ChildApp::spawn_capturing_stderr`].
    pub stderr_lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ChildApp {
    /// Starts `linkr` with `LINKR_ADDR`/`LINKR_ADMIN_ADDR` on port 0 and `envs`, and waits for
    /// its "listening" log line (which names the bound addresses).
    pub fn spawn(data_dir: &Path, envs: &[(&str, &str)]) -> ChildApp {
        Self::start(data_dir, envs, false)
    }

    /// [`ChildApp::spawn`] with stderr captured too ([`ChildApp::stderr`]).
    pub fn spawn_capturing_stderr(data_dir: &Path, envs: &[(&str, &str)]) -> ChildApp {
        Self::start(data_dir, envs, true)
    }

    fn start(data_dir: &Path, envs: &[(&str, &str)], capture_stderr: bool) -> ChildApp {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_linkr"));
        cmd.env_clear()
            .env("LINKR_ADDR", "127.0.0.1:0")
            .env("LINKR_ADMIN_ADDR", "127.0.0.1:0")
            .env("LINKR_DATA_DIR", data_dir)
            .env("LINKR_API_KEYS", API_KEYS)
            .env("LINKR_SHUTDOWN_DELAY", "0s")
            .env("LINKR_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut app = ChildApp {
            child: cmd.spawn().expect("linkr starts"),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines: Arc::new(Mutex::new(Vec::new())),
            stderr_lines: Arc::new(Mutex::new(Vec::new())),
            readers: Vec::new(),
        };
        if let Some(stderr) = app.child.stderr.take() {
            let lines = app.stderr_lines.clone();
            app.readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }));
        }
        let stdout = app.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn({
            let lines = app.lines.clone();
            move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            }
        });
        app.readers.push(reader);
        // On a panic here, `app` is dropped, which kills and reaps the child.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("linkr logged its listening addresses");
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(main) = event["main_addr"].as_str() {
                app.addr = main.parse().unwrap();
                return app;
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn wait_started(&self) {
        wait_for_status(&client(), &self.url("/startupz"), 200).await;
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: plain kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Waits for the process to exit (polling its status, `within` at most).
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "linkr did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stdout(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until everything the exited process wrote has been read.
    pub fn finish_output(&mut self) {
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
    }

    /// What it wrote to stderr so far (empty unless captured).
    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }
}

impl Drop for ChildApp {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- Shared by the raw-socket timeout tests and the reliability cases (not the api binary) ----

/// Prints a reliability case's report line, the one `scripts/reliability.sh` reads per case.
#[allow(dead_code)] // the api binary has no use for it
pub fn reliability_report(case: &str, tried: &str, figures: Value) {
    println!(
        "RELIABILITY {}",
        json!({ "case": case, "tried": tried, "figures": figures })
    );
}

/// A field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
#[allow(dead_code)] // the api binary has no use for it
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb * 1024
}

/// A link's click count as alice sees it.
#[allow(dead_code)] // the api binary has no use for it
pub async fn clicks(app: &ChildApp, code: &str) -> u64 {
    let stats: Value = client()
        .get(app.url(&format!("/v1/links/{code}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["clicks"]
        .as_u64()
        .unwrap_or_else(|| panic!("{stats}"))
}

/// The stalled `POST /v1/links`: a valid key, `Content-Length: 100`, 7 bytes of body.
#[allow(dead_code)] // the api binary has no use for it
pub async fn stalled_post(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/links HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"url\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads until the server closes: what it sent and when (`None`: still open after `within`).
#[allow(dead_code)] // the api binary has no use for it
pub async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    within: Duration,
) -> (Vec<u8>, Option<Duration>) {
    use tokio::io::AsyncReadExt;
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (received, None),
            Ok(Ok(0) | Err(_)) => return (received, Some(start.elapsed())),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}
