//! An in-test HTTP server on its own thread and single-threaded runtime, so the generator under
//! test does not share its runtime's workers with the server.

use std::net::SocketAddr;

use axum::Router;

/// Serves `app` on 127.0.0.1 from a thread named `name`; the listener is bound before this
/// returns, so the server is ready.
pub fn serve(name: &str, app: Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        })
        .unwrap();
    addr
}
