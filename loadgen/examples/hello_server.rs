//! A minimal HTTP server for measuring the generator itself (rate accuracy, ceiling vs wrk):
//! `GET /` answers "ok". Usage: `hello_server [ADDR]` (default 127.0.0.1:18081); one worker
//! thread, so `taskset -c 1 hello_server` keeps it on one core.

use axum::Router;
use axum::routing::get;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        eprintln!("hello_server on http://{addr}/");
        let app = Router::new().route("/", get(|| async { "ok" }));
        axum::serve(listener, app).await.expect("serve");
    });
}
