//! A fixed-302 HTTP server for measuring the generator (`scripts/gen-ceiling.sh`): every `GET`
//! answers `302 Found` with the same `Location`, as linkr's redirect does, at a cost close to
//! nothing. Usage: `redirect_server [--addr 127.0.0.1:18082] [--threads 1]`; pin it with
//! `taskset -c 0`.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

async fn found() -> impl IntoResponse {
    (
        StatusCode::FOUND,
        [(header::LOCATION, "https://example.com/fixed")],
    )
}

fn main() {
    let mut addr = "127.0.0.1:18082".to_string();
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(v)) => addr = v,
            ("--threads", Some(v)) => threads = v.parse().expect("--threads N"),
            _ => {
                eprintln!("usage: redirect_server [--addr HOST:PORT] [--threads N]");
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        eprintln!("redirect_server on http://{addr}/ ({threads} thread(s))");
        let app = Router::new().fallback(found);
        axum::serve(listener, app).await.expect("serve");
    });
}
