//! The server's connection and request limits, over real sockets: the connection watchdog's
//! HTTP/1 head timeout (which replaced hyper's `header_read_timeout`), the HTTP/2 idle rule
//! (PINGs alone do not keep a connection), the body and request timeouts (408), the connection
//! cap and the in-flight limit (503), and the shutdown deadline that cuts what is left; then the
//! issue's stalled request against the `linkr` binary.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use linkr::server::{ServeOptions, Server, ServerMetrics};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use helpers::{ALICE, ChildApp, clicks, client, read_until_closed, stalled_post};

async fn serve(header_timeout: Duration) -> Server {
    serve_with(ServeOptions {
        header_timeout,
        ..ServeOptions::default()
    })
    .await
}

/// `/ok`; `/echo` (POST, reads the whole body); `/slow` (sleeps 30 s).
async fn serve_with(opts: ServeOptions) -> Server {
    let router = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Server::spawn(listener, Arc::new(router), opts).unwrap()
}

/// The status code and JSON body of a raw HTTP/1 response, and whether it asked to close.
fn parse_response(raw: &[u8]) -> (u16, Value, bool) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete response head");
    let status = head[9..12].parse().unwrap();
    let close = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("connection: close"));
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, body, close)
}

/// The value of the `listener="test"` series of the family `name`.
fn series(registry: &prometheus::Registry, name: &str) -> f64 {
    let family = (registry.gather().into_iter())
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no {name}"));
    let metric = &family.get_metric()[0];
    if metric.get_counter().has_value() {
        metric.get_counter().value()
    } else {
        metric.get_gauge().value()
    }
}

/// A registry with the listener series of one listener, `test`.
fn listener_metrics() -> (prometheus::Registry, Option<ServerMetrics>) {
    let registry = prometheus::Registry::new();
    let metrics = ServerMetrics::register(&registry, &["test"]).unwrap().pop();
    (registry, metrics)
}

/// Polls `cond` every 5 ms, 5 s at most.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_keep_alive_connection_without_a_next_request_is_closed_after_the_header_timeout() {
    let server = serve(Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let took = closed.expect("the server should have closed the connection");
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "closed too late: {took:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_steady_stream_of_requests_is_not_cut_off() {
    let server = serve(Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        stream
            .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
const H2_SETTINGS_ACK: &[u8] = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00";
const H2_PING: &[u8] = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00linkr-pg";

#[tokio::test]
async fn an_http2_connection_is_not_held_to_the_http1_head_timeout() {
    let server = serve(Duration::from_millis(200)).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(1)).await;
    assert!(!received.is_empty(), "the server's SETTINGS");
    assert_eq!(closed, None, "closed after {closed:?}");
    // A graceful shutdown waits for the client to end the HTTP/2 connection.
    drop(stream);
    server.shutdown().await;
}

#[tokio::test]
async fn an_http2_connection_kept_alive_by_pings_alone_is_closed_after_the_idle_timeout() {
    let server = serve_with(ServeOptions {
        header_timeout: Duration::from_secs(30),
        idle_timeout: Some(Duration::from_millis(400)),
        ..ServeOptions::default()
    })
    .await;
    let stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(H2_PREFACE).await.unwrap();
    write.write_all(H2_SETTINGS_ACK).await.unwrap();
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let mut pongs = 0;
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return (start.elapsed(), pongs),
                // A PING frame with the ACK flag.
                Ok(n) => {
                    pongs += buf[..n]
                        .windows(5)
                        .filter(|w| w[..5] == [0, 0, 8, 6, 1])
                        .count()
                }
            }
        }
    });
    // A PING every 100 ms, for 4 s at most (ten times the idle timeout).
    while !reader.is_finished() && start.elapsed() < Duration::from_secs(4) {
        if write.write_all(H2_PING).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (closed, pongs) = tokio::time::timeout(Duration::from_secs(1), reader)
        .await
        .expect("the server should have closed the connection")
        .unwrap();
    assert!(pongs >= 1, "the server answered the PINGs");
    assert!(
        closed >= Duration::from_millis(350),
        "closed too early: {closed:?}"
    );
    assert!(
        closed < Duration::from_secs(2),
        "closed too late: {closed:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_after_the_body_timeout_and_the_connection_closed() {
    let server = serve_with(ServeOptions {
        header_timeout: Duration::from_secs(30),
        idle_timeout: Some(Duration::from_secs(30)),
        body_timeout: Some(Duration::from_millis(300)),
        ..ServeOptions::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    // The issue's client: a head announcing 100 bytes, 7 of them, then nothing.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"url\":")
        .await
        .unwrap();
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let took = closed.expect("the server should have closed the connection");
    let (status, body, close) = parse_response(&received);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&received));
    assert_eq!(body["error"], "request_timeout", "{body}");
    assert!(close, "asks the client to close");
    assert!(
        took >= Duration::from_millis(250),
        "answered too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "answered too late: {took:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_but_steady_body_is_not_cut_off_by_the_body_timeout() {
    let server = serve_with(ServeOptions {
        body_timeout: Some(Duration::from_millis(300)),
        ..ServeOptions::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    // 1.2 s in all, four times the body timeout, never silent for longer than 100 ms.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(b"x").await.unwrap();
    }
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("12"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_not_answered_within_the_request_timeout_gets_408() {
    let server = serve_with(ServeOptions {
        request_timeout: Some(Duration::from_millis(300)),
        ..ServeOptions::default()
    })
    .await;
    let start = Instant::now();
    let response = client()
        .get(format!("http://{}/slow", server.local_addr()))
        .send()
        .await
        .unwrap();
    let took = start.elapsed();
    let body = helpers::assert_error(response, 408, "request_timeout").await;
    assert!(body["message"].as_str().unwrap().contains("in time"));
    assert!(took >= Duration::from_millis(250), "too early: {took:?}");
    assert!(took < Duration::from_secs(3), "too late: {took:?}");
    // Fast requests on the same server are not affected.
    let ok = client()
        .get(format!("http://{}/ok", server.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_at_once_and_admitted_again_below_it() {
    let (registry, metrics) = listener_metrics();
    let router = Router::new().route("/ok", get(|| async { "ok" }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = ServeOptions {
        max_connections: Some(2),
        ..ServeOptions::default()
    };
    let server = Server::spawn_with_metrics(listener, Arc::new(router), opts, metrics).unwrap();
    let addr = server.local_addr();
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    wait_until("two connections open", || server.connections() == 2).await;

    let mut third = TcpStream::connect(addr).await.unwrap();
    let (received, closed) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    let took = closed.expect("the server should have closed the connection");
    assert!(
        took < Duration::from_millis(500),
        "refused too late: {took:?}"
    );
    if !received.is_empty() {
        let (status, body, _) = parse_response(&received);
        assert_eq!(status, 503);
        assert_eq!(body["error"], "overloaded");
    }
    assert_eq!(server.connections(), 2);
    assert_eq!(series(&registry, "linkr_connections_refused_total"), 1.0);
    assert_eq!(series(&registry, "linkr_connections_open"), 2.0);

    drop(first);
    wait_until("one connection open", || server.connections() == 1).await;
    let ok = client()
        .get(format!("http://{addr}/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed_with_503_and_retry_after() {
    let gate = Arc::new(Semaphore::new(0));
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let router = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "alive" }))
        .route(
            "/wait",
            get({
                let gate = gate.clone();
                move || async move {
                    let _ = entered_tx.send(());
                    gate.acquire().await.unwrap().forget();
                    "released"
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (registry, metrics) = listener_metrics();
    let server = Server::spawn_with_metrics(
        listener,
        Arc::new(router),
        ServeOptions {
            max_in_flight: Some(2),
            exempt_paths: &["/healthz"],
            ..ServeOptions::default()
        },
        metrics,
    )
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let http = client();
    // Fast requests complete on their first poll: never counted, never shed.
    for _ in 0..20 {
        let ok = http.get(format!("{base}/ok")).send().await.unwrap();
        assert_eq!(ok.status(), 200);
    }
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(http.get(format!("{base}/wait")).send()))
        .collect();
    for _ in 0..2 {
        entered.recv().await.unwrap();
    }
    // Counted once their first poll returned pending, just after they signalled.
    let deadline = Instant::now() + Duration::from_secs(2);
    let shed = loop {
        let start = Instant::now();
        let response = http.get(format!("{base}/ok")).send().await.unwrap();
        if response.status() == 503 {
            break (response, start.elapsed());
        }
        assert!(Instant::now() < deadline, "never shed");
    };
    let (response, took) = shed;
    assert!(series(&registry, "linkr_requests_shed_total") >= 1.0);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap(),
        "1"
    );
    helpers::assert_error(response, 503, "overloaded").await;
    assert!(took < Duration::from_millis(500), "shed slowly: {took:?}");
    let probe = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(probe.status(), 200, "the exempt path is served");

    gate.add_permits(2);
    for w in waiting {
        assert_eq!(w.await.unwrap().unwrap().status(), 200);
    }
    let ok = http.get(format!("{base}/ok")).send().await.unwrap();
    assert_eq!(ok.status(), 200, "served again below the limit");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_within_a_limit_cuts_the_connections_still_open() {
    let server = serve(Duration::from_secs(30)).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    wait_until("one connection open", || server.connections() == 1).await;
    let start = Instant::now();
    let cut = server
        .shutdown_within(Some(Duration::from_millis(300)))
        .await;
    let took = start.elapsed();
    assert_eq!(cut, 1);
    assert!(
        took >= Duration::from_millis(250),
        "cut too early: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "cut too late: {took:?}");
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "the client sees the connection end");
    assert!(received.is_empty(), "no response to the cut request");
}

/// A link with `n` clicks on `app`; returns its code.
async fn clicked_link(app: &ChildApp, n: u64) -> String {
    let http = client();
    let created: Value = http
        .post(app.url("/v1/links"))
        .bearer_auth(ALICE)
        .json(&json!({"url": "https://example.com/clicked"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = created["code"].as_str().unwrap().to_string();
    for _ in 0..n {
        let r = http.get(app.url(&format!("/{code}"))).send().await.unwrap();
        assert_eq!(r.status(), 302);
    }
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issues_stalled_post_is_answered_408_and_sigterm_then_exits_0_with_clicks_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        ("LINKR_IDLE_TIMEOUT", "3s"),
        ("LINKR_BODY_TIMEOUT", "1s"),
        ("LINKR_SHUTDOWN_TIMEOUT", "6s"),
    ];
    let mut app = ChildApp::spawn(dir.path(), &envs);
    app.wait_started().await;
    let code = clicked_link(&app, 3).await;

    let mut stream = stalled_post(app.addr).await;
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let took = closed.expect("the server should have closed the connection");
    let (status, body, _) = parse_response(&received);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&received));
    assert_eq!(body["error"], "request_timeout");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let admin = (app.stdout().lines())
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|e| e["admin_addr"].as_str().map(str::to_string))
        .expect("the listening line names the admin address");
    let metrics = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"linkr_requests_timed_out_total{listener="main"} 1"#),
        "{metrics}"
    );

    // Another stalled request in flight when SIGTERM arrives: cut by the body timeout.
    let _held = stalled_post(app.addr).await;
    let _ = clicked_link(&app, 0).await;
    let start = Instant::now();
    app.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| app.wait_exit(Duration::from_secs(10)));
    let exited = start.elapsed();
    assert!(status.success(), "{status:?}\n{}", app.stdout());
    assert!(exited < Duration::from_secs(6), "exited after {exited:?}");
    let log = app.stdout();
    assert!(log.contains("clicks flushed"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");

    let again = ChildApp::spawn(dir.path(), &envs);
    again.wait_started().await;
    assert_eq!(clicks(&again, &code).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_shutdown_deadline_open_connections_are_cut_and_clicks_still_flushed() {
    let dir = tempfile::tempdir().unwrap();
    // No time limit would end the stalled request before the shutdown deadline.
    let envs = [
        ("LINKR_IDLE_TIMEOUT", "60s"),
        ("LINKR_BODY_TIMEOUT", "60s"),
        ("LINKR_REQUEST_TIMEOUT", "60s"),
        ("LINKR_SHUTDOWN_TIMEOUT", "3s"),
    ];
    let mut app = ChildApp::spawn(dir.path(), &envs);
    app.wait_started().await;
    let _stalled = stalled_post(app.addr).await;
    // An HTTP/2 client that never closes its connection (a graceful shutdown waits for it).
    let mut h2 = TcpStream::connect(app.addr).await.unwrap();
    h2.write_all(H2_PREFACE).await.unwrap();
    let code = clicked_link(&app, 5).await;

    let start = Instant::now();
    app.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| app.wait_exit(Duration::from_secs(10)));
    let exited = start.elapsed();
    let log = app.stdout();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        exited >= Duration::from_millis(2000),
        "the drain lasted until its deadline: {exited:?}"
    );
    assert!(
        exited < Duration::from_secs(3),
        "exited after {exited:?}\n{log}"
    );
    assert!(log.contains("cut the connections still open"), "{log}");
    assert!(log.contains("clicks flushed"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");

    let again = ChildApp::spawn(dir.path(), &envs);
    again.wait_started().await;
    assert_eq!(clicks(&again, &code).await, 5);
}
