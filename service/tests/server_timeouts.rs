//! The connection watchdog's HTTP/1 head timeout, which replaced hyper's `header_read_timeout`:
//! a keep-alive connection waiting for its next request head is closed after the header
//! timeout, while an HTTP/2 connection (no request heads to wait for) is left to the idle rule.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use linkr::server::{ServeOptions, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(header_timeout: Duration) -> Server {
    let router = Router::new().route("/ok", get(|| async { "ok" }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Server::spawn(
        listener,
        Arc::new(router),
        ServeOptions {
            header_timeout,
            idle_timeout: None,
            connect_info: false,
        },
    )
    .unwrap()
}

/// Reads until the server closes the connection or `within` passes: what it sent, and when it
/// closed (`None`: still open).
async fn read_until_closed(
    stream: &mut TcpStream,
    within: Duration,
) -> (Vec<u8>, Option<Duration>) {
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

#[tokio::test]
async fn an_http2_connection_is_not_held_to_the_http1_head_timeout() {
    let server = serve(Duration::from_millis(200)).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    // The HTTP/2 connection preface and an empty SETTINGS frame.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(1)).await;
    assert!(!received.is_empty(), "the server's SETTINGS");
    assert_eq!(closed, None, "closed after {closed:?}");
    // A graceful shutdown waits for the client to end the HTTP/2 connection.
    drop(stream);
    server.shutdown().await;
}
