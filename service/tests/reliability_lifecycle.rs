//! Reliability cases for the process's lifecycle, each against the real `linkr` binary under a
//! bounded loopback load: `kill -9` during creates, SIGTERM during a steady load, and many
//! back-to-back CPU profile captures. Each prints one `RELIABILITY {json}` line (read by
//! `scripts/reliability.sh`) before it asserts. The cases take turns: each measures one process.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pprof::protos::Message as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use helpers::{ALICE, ChildApp, client, proc_status_bytes, reliability_report};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `LINKR_RELIABILITY_LONG=1` runs the longer variants.
fn long() -> bool {
    std::env::var("LINKR_RELIABILITY_LONG").is_ok_and(|v| v == "1")
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The admin address from linkr's "listening" log line.
fn admin_addr(linkr: &ChildApp) -> SocketAddr {
    linkr
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|e| e["admin_addr"].as_str().map(|a| a.parse().unwrap()))
        .expect("linkr logged its admin address")
}

/// Creates `n` links as alice; returns their codes.
async fn seed(linkr: &ChildApp, n: usize) -> Vec<String> {
    let client = client();
    let mut codes = Vec::with_capacity(n);
    for i in 0..n {
        let response = client
            .post(linkr.url("/v1/links"))
            .bearer_auth(ALICE)
            .json(&json!({ "url": format!("https://example.com/seed/{i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        codes.push(body["code"].as_str().unwrap().to_string());
    }
    codes
}

/// What a steady load saw.
#[derive(Default)]
struct Outcomes {
    sent: AtomicU64,
    ok: AtomicU64,
    /// No response (transport error) or an unexpected status.
    lost: AtomicU64,
    server_errors: AtomicU64,
    /// Answered as expected after `mark` was set (e.g. after the SIGTERM).
    ok_after_mark: AtomicU64,
}

/// A steady open-loop load at a fixed rate per worker (three redirects to one create), until
/// `stop` is set. Each worker keeps its own keep-alive connections.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    mark: Arc<AtomicBool>,
    outcomes: Arc<Outcomes>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SteadyLoad {
    fn start(linkr: &ChildApp, codes: &[String], workers: usize, rate_per_worker: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mark = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Outcomes::default());
        let codes = Arc::new(codes.to_vec());
        let tasks = (0..workers)
            .map(|w| {
                let (stop, mark, outcomes, codes) =
                    (stop.clone(), mark.clone(), outcomes.clone(), codes.clone());
                let base = linkr.url("");
                tokio::spawn(async move {
                    let client = client();
                    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate_per_worker);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    for i in 0usize.. {
                        tick.tick().await;
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        outcomes.sent.fetch_add(1, Ordering::Relaxed);
                        let (sent, expected) = if i % 4 == 3 {
                            let request = client
                                .post(format!("{base}/v1/links"))
                                .bearer_auth(ALICE)
                                .json(&json!({ "url": format!("https://example.com/{w}/{i}") }));
                            (request.send().await, 201)
                        } else {
                            let code = &codes[(w + i) % codes.len()];
                            (client.get(format!("{base}/{code}")).send().await, 302)
                        };
                        let status = match sent {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                // The whole body must arrive too.
                                if response.bytes().await.is_ok() {
                                    Some(status)
                                } else {
                                    None
                                }
                            }
                            Err(_) => None,
                        };
                        if status.is_some_and(|s| s >= 500) {
                            outcomes.server_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        if status == Some(expected) {
                            outcomes.ok.fetch_add(1, Ordering::Relaxed);
                            if mark.load(Ordering::SeqCst) {
                                outcomes.ok_after_mark.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            outcomes.lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            mark,
            outcomes,
            tasks,
        }
    }

    async fn finish(mut self) -> Arc<Outcomes> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks.drain(..) {
            task.await.expect("load worker");
        }
        self.outcomes.clone()
    }
}

impl Drop for SteadyLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_kill9_during_creates_loses_no_acknowledged_link() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let writers = 8;
    let kill_after = if long() { 2_000 } else { 300 };
    let dir = tempfile::tempdir().unwrap();
    let linkr = ChildApp::spawn(dir.path(), &[("LINKR_ACCESS_LOG", "off")]);
    linkr.wait_started().await;

    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let unanswered = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (acked, unanswered, killed) = (acked.clone(), unanswered.clone(), killed.clone());
            let url = linkr.url("/v1/links");
            tokio::spawn(async move {
                let client = client();
                for i in 0.. {
                    if killed.load(Ordering::SeqCst) {
                        break;
                    }
                    let target = format!("https://example.com/kill9/{writer}/{i}");
                    let sent = client
                        .post(&url)
                        .bearer_auth(ALICE)
                        .json(&json!({ "url": target }))
                        .send()
                        .await;
                    let body = match sent {
                        Ok(r) if r.status() == 201 => r.json::<Value>().await.ok(),
                        _ => None,
                    };
                    let Some(body) = body else {
                        unanswered.fetch_add(1, Ordering::Relaxed);
                        break;
                    };
                    let code = body["code"].as_str().unwrap().to_string();
                    acked.lock().unwrap().push((code, target));
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < kill_after {
        assert!(Instant::now() < deadline, "creates too slow");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut linkr = linkr;
    linkr.signal(libc::SIGKILL);
    let status = linkr.wait_exit(Duration::from_secs(10));
    killed.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(!status.success(), "killed: {status}");
    let acked = acked.lock().unwrap().clone();

    let restarted = Instant::now();
    let linkr = ChildApp::spawn(dir.path(), &[("LINKR_ACCESS_LOG", "off")]);
    linkr.wait_started().await;
    let restart = restarted.elapsed();
    let client = client();
    let mut lost = Vec::new();
    for (code, target) in &acked {
        let response = client
            .get(linkr.url(&format!("/{code}")))
            .send()
            .await
            .unwrap();
        let location = response.headers().get("location").cloned();
        if response.status() != 302 || location.is_none_or(|l| l != target.as_str()) {
            lost.push(code.clone());
        }
    }
    reliability_report(
        "lifecycle_kill9_during_creates_loses_no_acknowledged_link",
        &format!(
            "{writers} clients created links as fast as linkr acknowledged them; linkr was killed \
             with SIGKILL after {kill_after} 201s and restarted on the same data dir; every \
             acknowledged code was then requested"
        ),
        json!({
            "links_counted": acked.len(),
            "acknowledged_lost": lost.len(),
            "unanswered_at_kill": unanswered.load(Ordering::Relaxed),
            "restart_ms": ms(restart),
        }),
    );
    assert!(acked.len() >= kill_after);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged links lost after kill -9: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

/// A create whose body is held back: head and part of the body now, the rest on `finish`.
struct SlowCreate {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowCreate {
    async fn start(addr: SocketAddr, code: &str) -> Self {
        let body = format!(r#"{{"url":"https://example.com/slow/{code}","code":"{code}"}}"#);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/links HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body.as_bytes()[..10]).await.unwrap();
        Self {
            stream,
            rest: body.as_bytes()[10..].to_vec(),
        }
    }

    /// Sends the rest of the body; the status line's code, or `None` if no response came.
    async fn finish(mut self) -> Option<u16> {
        self.stream.write_all(&self.rest).await.ok()?;
        let mut response = Vec::new();
        let mut buf = [0u8; 2048];
        while !(response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}")) {
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&response);
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_sigterm_under_load_loses_no_accepted_request() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (workers, rate) = (4, 100);
    let (delay, timeout) = (Duration::from_millis(1500), Duration::from_secs(10));
    // Shorter than the shutdown delay: the traffic stops before the listener closes.
    const BALANCER_LAG: Duration = Duration::from_millis(600);
    let dir = tempfile::tempdir().unwrap();
    let mut linkr = ChildApp::spawn(
        dir.path(),
        &[
            ("LINKR_ACCESS_LOG", "off"),
            ("LINKR_SHUTDOWN_DELAY", "1500ms"),
            ("LINKR_SHUTDOWN_TIMEOUT", "10s"),
            // The half-sent bodies wait a few seconds on purpose: not a stalled client.
            ("LINKR_BODY_TIMEOUT", "30s"),
        ],
    );
    linkr.wait_started().await;
    let codes = seed(&linkr, 50).await;

    let load = SteadyLoad::start(&linkr, &codes, workers, rate);
    // Requests in flight across the listener's close: their bodies finish after it.
    let mut slow = Vec::new();
    for i in 0..3 {
        slow.push(SlowCreate::start(linkr.addr, &format!("slow{i}")).await);
    }
    let steady = Instant::now() + Duration::from_secs(if long() { 10 } else { 1 });
    while Instant::now() < steady {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent_before = load.outcomes.sent.load(Ordering::Relaxed);

    // The prober opens a new connection per probe: a refused connection is a closed listener.
    let prober = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    load.mark.store(true, Ordering::SeqCst);
    let sigterm = Instant::now();
    linkr.signal(libc::SIGTERM);
    let (mut readiness_503, mut listener_closed) = (None, None);
    let mut probe_statuses = Vec::new();
    while listener_closed.is_none() {
        assert!(
            sigterm.elapsed() < delay + timeout,
            "the listener never closed; probes: {probe_statuses:?}"
        );
        match prober.get(linkr.url("/readyz")).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                if probe_statuses.last() != Some(&status) {
                    probe_statuses.push(status);
                }
                if status == 503 && readiness_503.is_none() {
                    readiness_503 = Some(sigterm.elapsed());
                    // A load balancer takes the instance out of rotation a while after its
                    // probe sees the 503: no new requests from then on.
                    let stop = load.stop.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(BALANCER_LAG).await;
                        stop.store(true, Ordering::SeqCst);
                    });
                }
            }
            Err(e) if e.is_connect() => listener_closed = Some(sigterm.elapsed()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut slow_statuses = Vec::new();
    for s in slow {
        slow_statuses.push(s.finish().await);
    }
    let outcomes = load.finish().await;
    let status = linkr.wait_exit(delay + timeout + Duration::from_secs(2));
    let exited = sigterm.elapsed();

    let slow_lost = slow_statuses.iter().filter(|s| **s != Some(201)).count() as u64;
    let lost = outcomes.lost.load(Ordering::Relaxed) + slow_lost;
    let server_errors = outcomes.server_errors.load(Ordering::Relaxed);
    reliability_report(
        "lifecycle_sigterm_under_load_loses_no_accepted_request",
        &format!(
            "a steady load of {} req/s (3 redirects : 1 create) and 3 creates with half-sent \
             bodies; SIGTERM with a {} ms shutdown delay; /readyz probed every 10 ms on fresh \
             connections; the load stops {} ms after the first 503 (as a load balancer \
             would), the half-sent bodies are finished after the listener closed",
            workers as u32 * rate,
            delay.as_millis(),
            BALANCER_LAG.as_millis()
        ),
        json!({
            "requests_lost": lost,
            "server_errors": server_errors,
            "requests_sent": outcomes.sent.load(Ordering::Relaxed) + 3,
            "requests_ok_after_sigterm": outcomes.ok_after_mark.load(Ordering::Relaxed),
            "readiness_503_ms": readiness_503.map(ms),
            "listener_closed_ms": listener_closed.map(ms),
            "exit_ms": ms(exited),
            "exit_code": status.code(),
        }),
    );
    assert!(sent_before > 0, "the load ran before the SIGTERM");
    let readiness_503 = readiness_503.unwrap_or_else(|| {
        panic!("readiness never answered 503 before the listener closed: {probe_statuses:?}")
    });
    assert!(readiness_503 < listener_closed.unwrap());
    assert_eq!(slow_statuses, [Some(201); 3], "half-sent creates drained");
    assert_eq!(lost, 0, "accepted requests failed");
    assert_eq!(server_errors, 0);
    assert!(
        outcomes.ok_after_mark.load(Ordering::Relaxed) > 0,
        "requests were served between the SIGTERM and the 503"
    );
    assert_eq!(status.code(), Some(0), "graceful exit");
    assert!(exited < delay + timeout, "exit before the deadline");
    assert!(linkr.stdout().contains("shutdown complete"));
}

fn check_profile(format: &str, body: &[u8]) -> Result<u64, String> {
    match format {
        "pprof" => {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut raw)
                .map_err(|e| format!("gzip: {e}"))?;
            let p = pprof::protos::Profile::decode(raw.as_slice())
                .map_err(|e| format!("protobuf: {e}"))?;
            let types: Vec<&str> = p
                .sample_type
                .iter()
                .map(|t| p.string_table[t.ty as usize].as_str())
                .collect();
            if types != ["samples", "cpu"] {
                return Err(format!("sample types {types:?}"));
            }
            Ok(p.sample.iter().map(|s| s.value[0] as u64).sum())
        }
        "folded" => {
            let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
            let mut samples = 0;
            for line in text.lines() {
                let (stack, count) = line
                    .rsplit_once(' ')
                    .ok_or_else(|| format!("no count: {line}"))?;
                let count: u64 = count.parse().map_err(|_| format!("bad count: {line}"))?;
                if stack.is_empty() || count == 0 {
                    return Err(format!("bad line: {line}"));
                }
                samples += count;
            }
            Ok(samples)
        }
        _ => {
            let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
            if text.starts_with("<?xml") && text.trim_end().ends_with("</svg>") {
                Ok(0)
            } else {
                Err(format!("not an SVG: {}", &text[..text.len().min(100)]))
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_back_to_back_cpu_profiles_under_load_do_not_crash() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let captures = if long() { 60 } else { 12 };
    let (workers, rate) = (2, 150);
    let dir = tempfile::tempdir().unwrap();
    let mut linkr = ChildApp::spawn(
        dir.path(),
        &[
            ("LINKR_ACCESS_LOG", "off"),
            ("LINKR_SHUTDOWN_TIMEOUT", "10s"),
        ],
    );
    linkr.wait_started().await;
    let admin = admin_addr(&linkr);
    let codes = seed(&linkr, 50).await;
    let load = SteadyLoad::start(&linkr, &codes, workers, rate);

    let admin_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = Instant::now();
    let (mut valid, mut samples, mut problems) = (0u64, 0u64, Vec::new());
    for i in 0..captures {
        let format = ["pprof", "folded", "svg"][i % 3];
        let libc = i % 2 == 1;
        let url = format!(
            "http://{admin}/debug/pprof/profile?seconds=1&frequency=997&format={format}&include_libc={libc}"
        );
        match admin_client.get(url).send().await {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(body) => match check_profile(format, &body) {
                    Ok(n) => {
                        valid += 1;
                        samples += n;
                    }
                    Err(e) => problems.push(format!("capture {i} ({format}): {e}")),
                },
                Err(e) => problems.push(format!("capture {i} ({format}): body: {e}")),
            },
            Ok(r) => problems.push(format!("capture {i} ({format}): status {}", r.status())),
            Err(e) => problems.push(format!("capture {i} ({format}): {e}")),
        }
        if linkr.child.try_wait().unwrap().is_some() {
            problems.push(format!("linkr exited during capture {i}"));
            break;
        }
    }
    let took = started.elapsed();
    let outcomes = load.finish().await;
    let alive = linkr.child.try_wait().unwrap().is_none();
    let peak_rss = if alive {
        Some(proc_status_bytes(linkr.child.id(), "VmHWM"))
    } else {
        None
    };
    let healthy = alive
        && client()
            .get(linkr.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
    let exit_code = if alive {
        linkr.signal(libc::SIGTERM);
        linkr.wait_exit(Duration::from_secs(20)).code()
    } else {
        linkr.child.try_wait().unwrap().and_then(|s| s.code())
    };
    reliability_report(
        "lifecycle_back_to_back_cpu_profiles_under_load_do_not_crash",
        &format!(
            "{captures} back-to-back 1 s CPU captures from the admin /debug/pprof/profile \
             (pprof, folded and SVG in turn, libc unwinding every other one) while a steady load \
             of {} req/s ran; each profile decoded and checked; then SIGTERM",
            workers as u32 * rate
        ),
        json!({
            "captures": captures,
            "valid_profiles": valid,
            "samples": samples,
            "requests_sent": outcomes.sent.load(Ordering::Relaxed),
            "requests_lost": outcomes.lost.load(Ordering::Relaxed),
            "server_errors": outcomes.server_errors.load(Ordering::Relaxed),
            "peak_rss_bytes": peak_rss,
            "captures_ms": ms(took),
        }),
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(valid, captures as u64);
    assert!(samples > 0, "the captures sampled the load");
    assert!(healthy, "linkr alive and healthy after the captures");
    assert_eq!(outcomes.lost.load(Ordering::Relaxed), 0);
    assert_eq!(outcomes.server_errors.load(Ordering::Relaxed), 0);
    assert_eq!(exit_code, Some(0), "graceful exit after the captures");
}
