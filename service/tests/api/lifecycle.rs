//! Persistence, kill -9, graceful SIGTERM, shutdown deadline, second signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ALICE, ChildApp, client, spawn_app, spawn_app_in, spawn_app_with};

#[tokio::test]
async fn links_and_clicks_survive_a_graceful_restart() {
    let app = spawn_app().await;
    let a = app.create_url("https://example.com/a").await;
    let b = app
        .create_ok(json!({ "url": "https://example.com/b", "code": "bee", "ttl_seconds": 600 }))
        .await;
    for _ in 0..4 {
        assert_eq!(app.redirect(&a.code).await.status(), 302);
    }
    let (dir, result) = app.stop().await;
    result.unwrap();

    let app = spawn_app_in(dir, |_| {}).await;
    let response = app.redirect(&a.code).await;
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "https://example.com/a");
    let stats: Value = app.stats(ALICE, &a.code).await.json().await.unwrap();
    assert_eq!(stats["clicks"], 5, "4 clicks flushed on shutdown + 1 now");
    let stats: Value = app.stats(ALICE, "bee").await.json().await.unwrap();
    assert_eq!(stats["expires_at"], b.expires_at.unwrap().as_str());
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn a_request_still_in_flight_at_the_drain_deadline_is_cut_and_the_shutdown_completes() {
    let mut app = spawn_app_with(|c| {
        c.shutdown_timeout = Duration::from_millis(500);
        c.idle_timeout = None;
    })
    .await;
    // A request whose body never finishes keeps the drain waiting.
    let mut stuck = TcpStream::connect(app.addr).await.unwrap();
    stuck
        .write_all(
            format!(
                "POST /v1/links HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"url\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The request is in flight once its head is read: wait until the metrics show it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = client()
            .get(format!("http://{}/metrics", app.admin_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("linkr_http_requests_in_flight 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the request never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.signal_stop();
    let (_, result) = app.stop().await;
    // Cut at the drain deadline (server::Server::shutdown_within); clicks flushed, store closed.
    assert!(result.is_ok(), "{result:?}");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stuck.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the cut connection is closed without a response: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_link_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let linkr = ChildApp::spawn(dir.path(), &[("LINKR_ACCESS_LOG", "off")]);
    linkr.wait_started().await;

    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..8 {
        let (acked, killed, url) = (acked.clone(), killed.clone(), linkr.url("/v1/links"));
        writers.push(tokio::spawn(async move {
            let client = client();
            for i in 0.. {
                if killed.load(Ordering::Relaxed) {
                    break;
                }
                let target = format!("https://example.com/{writer}/{i}");
                let sent = client
                    .post(&url)
                    .bearer_auth(ALICE)
                    .json(&json!({ "url": target }))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 201 {
                    break;
                }
                let Ok(body) = response.json::<Value>().await else {
                    break;
                };
                acked
                    .lock()
                    .unwrap()
                    .push((body["code"].as_str().unwrap().to_string(), target));
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 60 {
        assert!(Instant::now() < deadline, "creates too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Kill while creates are in flight.
    let mut linkr = linkr;
    linkr.signal(libc::SIGKILL);
    let status = linkr.wait_exit(Duration::from_secs(10));
    killed.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(!status.success());
    let acked = acked.lock().unwrap().clone();

    let linkr = ChildApp::spawn(dir.path(), &[("LINKR_ACCESS_LOG", "off")]);
    linkr.wait_started().await;
    let client = client();
    for (code, target) in &acked {
        let response = client
            .get(linkr.url(&format!("/{code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            302,
            "acknowledged {code} lost after kill -9"
        );
        assert_eq!(response.headers()["location"], target.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_after_readiness_turns_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut linkr = ChildApp::spawn(
        dir.path(),
        &[
            ("LINKR_SHUTDOWN_DELAY", "2s"),
            ("LINKR_SHUTDOWN_TIMEOUT", "20s"),
        ],
    );
    linkr.wait_started().await;

    let body = br#"{"url":"https://example.com/in-flight","code":"inflight"}"#;
    let mut slow = TcpStream::connect(linkr.addr).await.unwrap();
    let head = format!(
        "POST /v1/links HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..10]).await.unwrap();

    linkr.signal(libc::SIGTERM);
    let readyz = linkr.url("/readyz");
    let probe = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = probe.get(&readyz).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    slow.write_all(&body[10..]).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 2048];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") || !response.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
            .await
            .expect("response to the in-flight request")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    assert!(text.contains(r#""code":"inflight""#), "{text}");

    let status = linkr.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "graceful exit");
    assert!(linkr.stdout().contains("shutdown complete"));

    let linkr = ChildApp::spawn(dir.path(), &[]);
    linkr.wait_started().await;
    let r = client().get(linkr.url("/inflight")).send().await.unwrap();
    assert_eq!(r.status(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_forces_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut linkr = ChildApp::spawn(dir.path(), &[("LINKR_SHUTDOWN_DELAY", "20s")]);
    linkr.wait_started().await;
    linkr.signal(libc::SIGTERM);
    let probe = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe
        .get(linkr.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 503
    {
        assert!(Instant::now() < deadline, "readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    linkr.signal(libc::SIGINT);
    let status = linkr.wait_exit(Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + libc::SIGINT));
}
