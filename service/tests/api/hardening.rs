//! Slow and silent clients, idle connections, panicking handlers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use linkr::middleware::RequestContextLayer;
use linkr::server::{ServeOptions, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{assert_error, client, spawn_app_with};

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(within, stream.read(&mut buf))
            .await
            .expect("the server should have closed the connection");
        match read {
            Ok(0) | Err(_) => return (received, start.elapsed()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn half_a_request_line_is_disconnected_after_the_header_timeout() {
    let app = spawn_app_with(|c| {
        c.header_timeout = Duration::from_millis(300);
        c.idle_timeout = Some(Duration::from_secs(30));
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"GET /heal").await.unwrap();
    let (_, took) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "closed too late: {took:?}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|c| {
        c.header_timeout = Duration::from_millis(300);
        c.idle_timeout = None;
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let (received, took) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(received.is_empty());
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let app = spawn_app_with(|c| {
        c.header_timeout = Duration::from_secs(30);
        c.idle_timeout = Some(Duration::from_millis(400));
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Kept alive, then closed for idleness: well before the 30 s header timeout.
    let (_, took) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(350),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "closed too late: {took:?}");
}

#[tokio::test]
async fn a_slow_but_steady_body_is_not_cut_off() {
    let app = spawn_app_with(|c| {
        c.header_timeout = Duration::from_millis(500);
        c.idle_timeout = Some(Duration::from_millis(500));
    })
    .await;
    let body = br#"{"url":"https://example.com/slow"}"#;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/links HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        crate::helpers::ALICE,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Longer in total than both timeouts, but never silent for long.
    for chunk in body.chunks(4) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(chunk).await.unwrap();
    }
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
}

async fn boom() -> &'static str {
    panic!("secret internal detail")
}

#[tokio::test]
async fn a_panicking_handler_becomes_a_json_500_and_the_server_lives_on() {
    let router = Router::new()
        .route("/panic", get(boom))
        .route("/ok", get(|| async { "ok" }))
        .layer(RequestContextLayer::new(false));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::spawn(
        listener,
        Arc::new(router),
        ServeOptions {
            header_timeout: Duration::from_secs(5),
            ..ServeOptions::default()
        },
    )
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let client = client();
    for _ in 0..2 {
        let response = client.get(format!("{base}/panic")).send().await.unwrap();
        assert!(response.headers().contains_key("x-request-id"));
        let body = assert_error(response, 500, "internal").await;
        assert_eq!(body["message"], "internal server error");
        assert!(!body.to_string().contains("secret"));
    }
    let ok = client.get(format!("{base}/ok")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "ok");
    server.shutdown().await;
}
