//! The open-model driver against an in-test server over loopback: rate accuracy, coordinated
//! omission, redirects, the scenarios, goose's report.

mod driver_support;

use std::sync::Arc;
use std::time::Duration;

use driver_support::{self as support, API_KEY, count_at_or_above};
use linkr_loadgen::driver::{self, StepConfig};
use linkr_loadgen::engine::lean::{self, DispatchKind};
use linkr_loadgen::{Arrival, ClientKind, Scenario, Seeds, run_step, run_step_with, seed_links};
use tokio::sync::{Mutex, MutexGuard};

/// Steps run one at a time: they share two cores and measure timing.
async fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    driver::set_progress(false);
    SERIAL.lock().await
}

/// Selects the stack dispatch (the default; explicit, so that the tests relying on it hold
/// whatever `LOADGEN_DISPATCH` says) until dropped; taken under `serial()`.
struct StackDispatch;

impl StackDispatch {
    fn on() -> Self {
        lean::set_dispatch(Some(DispatchKind::Stack));
        Self
    }
}

impl Drop for StackDispatch {
    fn drop(&mut self) {
        lean::set_dispatch(None);
    }
}

fn step(target: String, scenario: Scenario, rate: f64, duration: Duration) -> StepConfig {
    StepConfig {
        target,
        scenario,
        rate,
        duration,
        arrival: Arrival::Constant,
        api_key: None,
        seeds: Arc::new(Seeds::default()),
        goose_report: None,
        service_pid: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn achieved_rate_is_within_one_percent_and_the_json_has_the_design_fields() {
    let _serial = serial().await;
    let server = support::start().await;
    let cfg = step(
        format!("{}/hello", server.base),
        Scenario::Get,
        2000.0,
        Duration::from_secs(3),
    );
    // The rate holds on every attempt; "not saturated" needs a machine that is not overloaded by
    // other work, so it gets three attempts.
    let mut attempts = 0;
    let r = loop {
        attempts += 1;
        let r = run_step(&cfg).await.unwrap();
        eprintln!("{}", linkr_loadgen::cli::summary(&r));
        assert!(
            (r.rate_achieved - 2000.0).abs() <= 20.0,
            "achieved {} of 2000/s: {r:?}",
            r.rate_achieved
        );
        assert!(
            r.requests >= 5980 && r.requests <= 6000,
            "{} requests",
            r.requests
        );
        if !r.generator_saturated || attempts == 3 {
            break r;
        }
    };
    assert!(
        !r.generator_saturated,
        "saturated at 2000/s on 3 attempts: {:?}",
        r.saturation
    );
    assert_eq!(r.errors, 0, "{:?}", r.status);
    assert_eq!(r.status.get("200"), Some(&r.requests));
    assert!(
        r.latency_us.p50 > 0
            && r.latency_us.p50 <= r.latency_us.p99
            && r.latency_us.p99 <= r.latency_us.max
    );
    assert!(r.latency_uncorrected_us.p50 <= r.latency_us.p50);
    assert_eq!(r.corrected.len(), r.requests);

    let v = serde_json::to_value(&r).unwrap();
    for key in [
        "scenario",
        "target",
        "rate_target",
        "rate_achieved",
        "duration_s",
        "requests",
        "errors",
        "status",
        "latency_us",
        "latency_uncorrected_us",
        "generator_saturated",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(v["latency_us"][key].is_number(), "latency_us.{key} in {v}");
        assert!(
            v["latency_uncorrected_us"][key].is_number(),
            "latency_uncorrected_us.{key}"
        );
    }
    assert_eq!(v["scenario"], "get");
    assert_eq!(v["rate_target"], 2000.0);
    assert_eq!(v["duration_s"], 3.0);
    assert_eq!(v["generator_saturated"], false);
    assert!(v["status"]["200"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_rate_is_accurate_too() {
    let _serial = serial().await;
    let server = support::start().await;
    let r = run_step(&step(
        format!("{}/hello", server.base),
        Scenario::Get,
        8000.0,
        Duration::from_secs(2),
    ))
    .await
    .unwrap();
    // Unless the generator says it could not keep up (a debug build on a busy machine), the
    // achieved rate is within 1%.
    if !r.generator_saturated {
        assert!(
            (r.rate_achieved - 8000.0).abs() <= 80.0,
            "achieved {}: {r:?}",
            r.rate_achieved
        );
    } else {
        eprintln!(
            "generator saturated at 8000/s in this build: {:?}",
            r.saturation
        );
        assert!(r.rate_achieved < 7920.0 || r.send_lag_us.p99 > 2000 || r.generator_cpu >= 0.9);
    }
    assert_eq!(r.errors, 0);
}

/// The server holds every response for P = 2 s while requests keep arriving at R = 400/s. The
/// pool holds 400 users (1 s of arrivals), so it runs dry halfway through the stall and the
/// second half of the stalled arrivals leave late, when the stall ends.
///
/// Corrected latency counts from the intended time: an arrival `t` into the stall is answered at
/// the stall's end, `P - t` later, whether it left on time or late. So at least R·(P - x)
/// requests show more than `x` (≈ 760 above 100 ms, ≈ 400 = R·P/2 above P/2), plus the few that
/// arrive while the backlog drains after the stall. Uncorrected latency hides the late half
/// (answered at once after leaving late): only the ~400 that left on time show more than 300 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_corrected_latency_of_about_rate_times_stall_requests() {
    let _serial = serial().await;
    let server = Arc::new(support::start().await);
    let rate = 400.0;
    let stalling = {
        let server = server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            server.set_stalled(true);
            let started = std::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            server.set_stalled(false);
            started.elapsed()
        })
    };
    let r = run_step(&step(
        format!("{}/hello", server.base),
        Scenario::Get,
        rate,
        Duration::from_secs(5),
    ))
    .await
    .unwrap();
    // The stall as it happened (a busy machine can stretch the 2 s sleep).
    let stall = stalling.await.unwrap().as_secs_f64();

    let count = |h, x_s: f64| count_at_or_above(h, (x_s * 1e6) as u64) as f64;
    // Lower bound R·(P - x), minus 10%; upper bound plus 250 ms of arrivals while the backlog drains.
    let check = |x_s: f64| {
        let n = count(&r.corrected, x_s);
        let expect = rate * (stall - x_s);
        eprintln!("corrected > {x_s} s: {n} (R·(P - x) = {expect:.0})");
        assert!(
            n >= 0.9 * expect && n <= expect + rate * 0.25 + 20.0,
            "corrected > {x_s} s: {n}, expected ~{expect:.0}; {r:?}"
        );
    };
    check(0.1);
    check(stall / 2.0);
    assert!(
        r.latency_us.max as f64 >= (stall - 0.05) * 1e6,
        "corrected max {} µs",
        r.latency_us.max
    );
    assert!(
        r.latency_us.p99 as f64 >= stall / 2.0 * 1e6,
        "corrected p99 {} µs",
        r.latency_us.p99
    );
    let uncorrected = count(&r.uncorrected, 0.3);
    let corrected = count(&r.corrected, 0.3);
    eprintln!(
        "> 300 ms: corrected {corrected}, uncorrected {uncorrected}, {} users",
        r.users
    );
    assert!(
        uncorrected <= r.users as f64 * 1.1,
        "uncorrected > 300 ms: {uncorrected} with {} users",
        r.users
    );
    assert!(
        uncorrected <= 0.7 * corrected,
        "uncorrected {uncorrected} vs corrected {corrected}"
    );
    // The server held every user: the service is the bound, not the generator.
    assert!(r.pool_exhausted);
    assert!(!r.generator_saturated, "{:?}", r.saturation);
    assert!(
        (r.rate_achieved - rate).abs() <= rate * 0.01,
        "achieved {}",
        r.rate_achieved
    );
    assert_eq!(r.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_a_302_is_a_success() {
    let _serial = serial().await;
    let server = support::start().await;
    let mut cfg = step(
        server.base.clone(),
        Scenario::Redirect,
        500.0,
        Duration::from_secs(1),
    );
    cfg.seeds = Arc::new(Seeds {
        codes: (0..50).map(|i| format!("code{i}")).collect(),
    });
    let r = run_step(&cfg).await.unwrap();
    assert_eq!(r.errors, 0, "{:?} {:?}", r.status, r.transport_errors);
    assert_eq!(r.status.len(), 1, "{:?}", r.status);
    assert_eq!(r.status.get("302"), Some(&r.requests));
    assert!(r.requests >= 495, "{}", r.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_seeds_creates_reads_and_redirects_with_the_api_key() {
    let _serial = serial().await;
    let server = support::start().await;
    let seeds = seed_links(&server.base, API_KEY, 200).await.unwrap();
    assert_eq!(seeds.codes.len(), 200);
    let distinct: std::collections::HashSet<_> = seeds.codes.iter().collect();
    assert_eq!(distinct.len(), 200);
    let mut cfg = step(
        server.base.clone(),
        Scenario::Mixed,
        1000.0,
        Duration::from_secs(2),
    );
    cfg.seeds = Arc::new(seeds);
    cfg.api_key = Some(API_KEY.into());
    let r = run_step(&cfg).await.unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.status);
    let n = r.requests as f64;
    let share = |code: &str| *r.status.get(code).unwrap_or(&0) as f64 / n;
    assert!((share("302") - 0.90).abs() < 0.01, "{:?}", r.status);
    assert!((share("201") - 0.05).abs() < 0.01, "{:?}", r.status);
    assert!((share("200") - 0.05).abs() < 0.01, "{:?}", r.status);

    // A wrong key: every create and stats request fails, redirects still pass.
    cfg.api_key = Some("wrong".into());
    cfg.duration = Duration::from_millis(500);
    let r = run_step(&cfg).await.unwrap();
    assert_eq!(r.errors, r.status.get("401").copied().unwrap_or(0));
    assert!(r.errors > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_fails_cleanly_on_a_bad_key() {
    let server = support::start().await;
    let e = seed_links(&server.base, "wrong", 10).await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisson_arrivals_average_the_rate() {
    let _serial = serial().await;
    let server = support::start().await;
    let mut cfg = step(
        format!("{}/hello", server.base),
        Scenario::Get,
        2000.0,
        Duration::from_secs(3),
    );
    cfg.arrival = Arrival::Poisson;
    let r = run_step(&cfg).await.unwrap();
    // 6000 expected, standard deviation ~77: 5% is about 4 standard deviations.
    assert!(
        (r.rate_achieved - 2000.0).abs() <= 100.0,
        "achieved {}",
        r.rate_achieved
    );
    assert_eq!(r.errors, 0);
    assert_eq!(serde_json::to_value(&r).unwrap()["arrival"], "poisson");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goose_writes_its_report_when_asked() {
    let _serial = serial().await;
    let server = support::start().await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("goose").join("step.html");
    let mut cfg = step(
        format!("{}/hello", server.base),
        Scenario::Get,
        200.0,
        Duration::from_secs(1),
    );
    cfg.goose_report = Some(report.clone());
    let r = run_step(&cfg).await.unwrap();
    assert!(r.goose_metrics);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("<html") && html.contains("GET"),
        "{}",
        &html[..html.len().min(300)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_usage_error() {
    use linkr_loadgen::LoadgenError;
    let mut cfg = step(
        "http://127.0.0.1:9".into(),
        Scenario::Redirect,
        10.0,
        Duration::from_secs(1),
    );
    assert!(matches!(run_step(&cfg).await, Err(LoadgenError::Usage(_))));
    cfg.scenario = Scenario::Get;
    cfg.rate = 0.0;
    assert!(matches!(run_step(&cfg).await, Err(LoadgenError::Usage(_))));
    cfg.rate = 10.0;
    cfg.target = "not a url".into();
    assert!(matches!(run_step(&cfg).await, Err(LoadgenError::Usage(_))));
}

/// The open model holds its rate from 100 to 20,000 req/s: every slot of the schedule is sent
/// (within 1%). At the top rate a debug build on a busy machine may not keep up: then the step
/// must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_holds_from_100_to_20k_per_second() {
    let _serial = serial().await;
    let server = support::start().await;
    for (rate, secs) in [(100.0, 3.0), (1000.0, 2.0), (5000.0, 2.0), (20_000.0, 2.0)] {
        let r = run_step(&step(
            format!("{}/hello", server.base),
            Scenario::Get,
            rate,
            Duration::from_secs_f64(secs),
        ))
        .await
        .unwrap();
        eprintln!("{}", linkr_loadgen::cli::summary(&r));
        assert_eq!(r.client, ClientKind::Lean);
        assert_eq!(r.errors, 0, "{:?}", r.transport_errors);
        let within = (r.rate_achieved - rate).abs() <= rate * 0.01;
        if rate <= 5000.0 {
            assert!(within, "achieved {} of {rate}/s: {r:?}", r.rate_achieved);
        } else if !within {
            // The in-test server shares this process's two cores: at 20k/s on a busy machine it
            // can be the one that falls behind (every connection held). A shortfall must be
            // explained either way: the generator saturated, or the server held the pool.
            assert!(
                r.generator_saturated || r.pool_exhausted,
                "achieved {} of {rate}/s without saying who could not keep up: {r:?}",
                r.rate_achieved
            );
        }
    }
}

/// Both clients send the same slots: the same status counts against the same server (mixed:
/// 90/5/5 by slot, so the counts are exact), no errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_and_reqwest_clients_give_the_same_status_counts() {
    let _serial = serial().await;
    let server = support::start().await;
    let seeds = seed_links(&server.base, API_KEY, 50).await.unwrap();
    let mut cfg = step(
        server.base.clone(),
        Scenario::Mixed,
        500.0,
        Duration::from_secs(2),
    );
    cfg.seeds = Arc::new(seeds);
    cfg.api_key = Some(API_KEY.into());
    let lean = run_step_with(&cfg, ClientKind::Lean).await.unwrap();
    let reqwest = run_step_with(&cfg, ClientKind::Reqwest).await.unwrap();
    assert_eq!(lean.client, ClientKind::Lean);
    assert_eq!(reqwest.client, ClientKind::Reqwest);
    assert!(lean.engine.contains("current-thread"), "{}", lean.engine);
    assert!(reqwest.engine.contains("reqwest"), "{}", reqwest.engine);
    assert_eq!(lean.errors, 0, "{:?}", lean.status);
    assert_eq!(reqwest.errors, 0, "{:?}", reqwest.status);
    assert_eq!(lean.requests, 1000);
    assert_eq!(lean.status, reqwest.status);
    let v = serde_json::to_value(&lean).unwrap();
    assert_eq!(v["client"], "lean");
    assert!(v["engine"].is_string());
}

/// A server that closes every connection after its response: the lean client reconnects (a
/// closed connection is not an error of the request it served) and every request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_client_reconnects_when_the_server_closes_connections() {
    let _serial = serial().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    let r = run_step(&step(
        format!("{base}/x"),
        Scenario::Get,
        200.0,
        Duration::from_secs(1),
    ))
    .await
    .unwrap();
    assert_eq!(
        r.status.get("200"),
        Some(&200),
        "{:?} {:?}",
        r.status,
        r.transport_errors
    );
    assert_eq!(r.errors, 0, "{:?}", r.transport_errors);
}

/// With the stack dispatch a slot waits only when every connection is busy: a slow response
/// holds its own request, not the slots after it on the same connection (wrk2's fixed slots per
/// connection would queue the next slot of that connection behind it). Every 20th request takes 300 ms at 500 req/s: with
/// fixed slots `j, j + 32, ...` the next slots of a slow connection are due every 64 ms and the
/// next four leave 236, 172, 108 and 44 ms late (about 200 requests 20 ms late or more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_response_delays_only_its_own_request() {
    let _serial = serial().await;
    let _stack = StackDispatch::on();
    let server = support::start_conn_server(20, Duration::from_millis(300)).await;
    let r = run_step(&step(
        format!("{}/x", server.base),
        Scenario::Get,
        500.0,
        Duration::from_secs(2),
    ))
    .await
    .unwrap();
    eprintln!("{}", linkr_loadgen::cli::summary(&r));
    assert_eq!(r.errors, 0, "{:?}", r.transport_errors);
    let slow = server.slow.load(std::sync::atomic::Ordering::Relaxed);
    assert!(slow >= 45, "{slow} slow answers");
    // A slot queued behind a slow response leaves 20 ms or more after its intended time; a busy
    // machine delays a few sends too (16 seen with a load average of 7 on the 2-core VM).
    let late = count_at_or_above(&r.send_lag, 20_000);
    assert!(
        late <= slow,
        "{late} requests left 20 ms or more late, with {slow} slow answers: slots queued behind slow responses"
    );
}

/// With the stack dispatch the connections that carry requests are as many as the requests in
/// flight (plus the one waiting for the next slot), however many are open: the most recently freed connection sends
/// next. At 2,000 req/s against a fast server the pool holds 32 connections and a handful work
/// (all 32 only if the server, sharing this machine's two cores, held them all at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_use_follow_the_requests_in_flight() {
    let _serial = serial().await;
    let _stack = StackDispatch::on();
    let server = support::start_conn_server(0, Duration::ZERO).await;
    let r = run_step(&step(
        format!("{}/x", server.base),
        Scenario::Get,
        2000.0,
        Duration::from_secs(2),
    ))
    .await
    .unwrap();
    eprintln!("{}", linkr_loadgen::cli::summary(&r));
    assert_eq!(r.errors, 0, "{:?}", r.transport_errors);
    let used = server.used.load(std::sync::atomic::Ordering::Relaxed);
    assert!(r.users >= 32, "{} users", r.users);
    assert!(
        used <= r.max_in_flight + 1,
        "{used} connections carried requests, with at most {} in flight",
        r.max_in_flight
    );
}
