//! The reference of `scripts/redirect-vs-axum.sh`: a bare axum handler on the route `/{code}`
//! answering a fixed `302 Found` with a `Location` of the same length as the seeded link's, served
//! by `axum::serve` on a multi-thread tokio runtime (one worker per CPU it may run on: pinned to
//! one CPU with `taskset`, one worker, as linkr).
//!
//! Usage: `fixed-302 [--addr 127.0.0.1:18302] [--location URL]`

use axum::Router;
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::routing::get;

fn main() {
    let mut addr = "127.0.0.1:18302".to_string();
    let mut location =
        "https://www.example.com/articles/2024/06/how-we-measure-latency?ref=newsletter"
            .to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(v)) => addr = v,
            ("--location", Some(v)) => location = v,
            _ => {
                eprintln!("usage: fixed-302 [--addr HOST:PORT] [--location URL]");
                std::process::exit(2);
            }
        }
    }
    if HeaderValue::from_str(&location).is_err() || !location.is_ascii() {
        eprintln!("fixed-302: --location is not a header value");
        std::process::exit(2);
    }
    // A static header value, as the in-process bench's fixed 302: cloning it costs nothing.
    let location: &'static str = Box::leak(location.into_boxed_str());
    let app = Router::new().route(
        "/{code}",
        get(move || async move {
            (
                StatusCode::FOUND,
                [(LOCATION, HeaderValue::from_static(location))],
            )
        }),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .unwrap_or_else(|e| {
                eprintln!("fixed-302: cannot listen on {addr}: {e}");
                std::process::exit(1);
            });
        eprintln!("fixed-302 on http://{addr}/{{code}}");
        axum::serve(listener, app).await.expect("serve");
    });
}
