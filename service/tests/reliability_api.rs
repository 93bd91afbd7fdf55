//! Reliability cases of the API's defences, against the real `linkr` binary on loopback: a
//! flood of distinct forwarded client addresses through a trusted proxy (the per-IP limiter
//! stays bounded), and forged `X-Forwarded-For` from an untrusted peer (one bucket, whatever it
//! claims). Each prints one `RELIABILITY {json}` line (read by `scripts/reliability.sh`) before
//! it asserts.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use helpers::{ALICE, ChildApp, client, proc_status_bytes, reliability_report};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn long() -> bool {
    std::env::var("LINKR_RELIABILITY_LONG").is_ok_and(|v| v == "1")
}

async fn create(linkr: &ChildApp, code: &str) {
    let response = client()
        .post(linkr.url("/v1/links"))
        .bearer_auth(ALICE)
        .json(&json!({ "url": "https://example.com/flooded", "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// The `i`th distinct client: an IPv4 address for even `i`, an IPv6 /64 of its own for odd.
fn forwarded_client(i: u32) -> String {
    if i.is_multiple_of(2) {
        let [a, b, c, d] = (0x0b00_0000 + i).to_be_bytes();
        format!("{a}.{b}.{c}.{d}")
    } else {
        format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_forwarded_address_flood_keeps_the_limiter_bounded() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const CAP: &str = "1000";
    const WORKERS: u32 = 16;
    let clients: u32 = if long() { 400_000 } else { 40_000 };
    let dir = tempfile::tempdir().unwrap();
    let mut linkr = ChildApp::spawn(
        dir.path(),
        &[
            ("LINKR_ACCESS_LOG", "off"),
            ("LINKR_RATE_LIMIT", "5"),
            ("LINKR_RATE_BURST", "5"),
            ("LINKR_TRUSTED_PROXIES", "127.0.0.1"),
            ("LINKR_RATE_LIMIT_CLIENTS", CAP),
        ],
    );
    linkr.wait_started().await;
    create(&linkr, "flood").await;
    let pid = linkr.child.id();
    // Warm-up: connections, buffers, the first buckets.
    let http = client();
    for i in 0..2000 {
        let r = http
            .get(linkr.url("/flood"))
            .header("x-forwarded-for", format!("192.0.2.{}", i % 250))
            .send()
            .await
            .unwrap();
        assert!(matches!(r.status().as_u16(), 302 | 429));
    }
    let rss_before = proc_status_bytes(pid, "VmRSS");

    let next = Arc::new(AtomicU64::new(0));
    let (found, limited, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(if long() { 300 } else { 40 });
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (next, found, limited, other) =
                (next.clone(), found.clone(), limited.clone(), other.clone());
            let url = linkr.url("/flood");
            let http = http.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= u64::from(clients) || Instant::now() > deadline {
                        return;
                    }
                    let response = http
                        .get(&url)
                        .header("x-forwarded-for", forwarded_client(i as u32))
                        .send()
                        .await;
                    match response.map(|r| r.status().as_u16()) {
                        Ok(302) => found.fetch_add(1, Ordering::Relaxed),
                        Ok(429) => limited.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let rss_after = proc_status_bytes(pid, "VmRSS");
    let peak = proc_status_bytes(pid, "VmHWM");
    let ready = http
        .get(linkr.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status();
    let (found, limited, other) = (
        found.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    let sent = found + limited + other;
    let growth = rss_after.saturating_sub(rss_before);
    reliability_report(
        "api_forwarded_address_flood_keeps_the_limiter_bounded",
        &format!(
            "{sent} redirects through a trusted proxy (loopback), each from a different forwarded client (IPv4 addresses and IPv6 /64s), {WORKERS} connections, per-IP limit on, the limiter bounded to {CAP} clients"
        ),
        json!({
            "requests": sent,
            "clients": sent,
            "redirected": found,
            "rate_limited": limited,
            "server_errors": other,
            "requests_lost": other,
            "peak_rss_bytes": peak,
            "rss_growth_bytes": growth,
            "req_per_s": (sent as f64 / elapsed.as_secs_f64()).round(),
        }),
    );
    linkr.signal(libc::SIGTERM);
    assert!(linkr.wait_exit(Duration::from_secs(30)).success());
    assert_eq!(ready, 200);
    assert_eq!(other, 0, "every request answered 302 or 429");
    assert!(sent >= 5_000, "only {sent} requests in {elapsed:?}");
    assert_eq!(
        limited, 0,
        "every forwarded client is new: a full bucket each"
    );
    // Bounded, the map stays at 1000 entries. With the bound lifted (CAP "100000000") this run
    // grew RSS by 10.3 and 10.1 MB here (debug build, 40k clients), bounded 0 and 1.1 MB.
    assert!(
        growth < 4 * 1024 * 1024,
        "RSS grew by {growth} bytes over {sent} distinct clients"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_forged_forwarded_for_from_an_untrusted_peer_gets_one_bucket() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const RATE: u64 = 20;
    const REQUESTS: u32 = 400;
    let dir = tempfile::tempdir().unwrap();
    let mut linkr = ChildApp::spawn(
        dir.path(),
        &[
            ("LINKR_ACCESS_LOG", "off"),
            ("LINKR_RATE_LIMIT", "20"),
            ("LINKR_RATE_BURST", "20"),
            // A proxy network the test's loopback peer is not in.
            ("LINKR_TRUSTED_PROXIES", "10.0.0.0/8"),
        ],
    );
    linkr.wait_started().await;
    create(&linkr, "forged").await;
    let http = client();
    let started = Instant::now();
    let (mut admitted, mut limited, mut other) = (0u64, 0u64, 0u64);
    for i in 0..REQUESTS {
        let forged = forwarded_client(i);
        let status = http
            .get(linkr.url("/forged"))
            .header("x-forwarded-for", &forged)
            .header("forwarded", format!("for=\"{forged}\""))
            .send()
            .await
            .map(|r| r.status().as_u16());
        match status {
            Ok(302) => admitted += 1,
            Ok(429) => limited += 1,
            _ => other += 1,
        }
    }
    let elapsed = started.elapsed();
    let bound = RATE + (RATE as f64 * elapsed.as_secs_f64()).ceil() as u64;
    reliability_report(
        "api_forged_forwarded_for_from_an_untrusted_peer_gets_one_bucket",
        &format!(
            "{REQUESTS} redirects from one untrusted peer, each claiming another client in X-Forwarded-For and Forwarded, per-IP limit {RATE}/s burst {RATE}"
        ),
        json!({
            "requests": REQUESTS,
            "admitted": admitted,
            "admitted_bound": bound,
            "rate_limited": limited,
            "server_errors": other,
            "elapsed_ms": elapsed.as_millis() as u64,
        }),
    );
    linkr.signal(libc::SIGTERM);
    assert!(linkr.wait_exit(Duration::from_secs(30)).success());
    assert_eq!(other, 0);
    assert!(
        admitted <= bound,
        "admitted {admitted} > burst + rate x {elapsed:?} = {bound}: the forged headers were believed"
    );
    assert!(limited > 0);
}
