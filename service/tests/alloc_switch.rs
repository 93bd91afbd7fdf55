//! `PUT /debug/allocs?counting=off|on` stops and restarts counting process-wide (its own test
//! binary: switching counting off would disturb exact counts measured elsewhere).

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use linkr::admin::{AdminState, LogLevelControl};
use linkr::alloc::{self, AllocCount};
use linkr::metrics::Metrics;
use tower::ServiceExt;

struct Fixed(Mutex<String>);

impl LogLevelControl for Fixed {
    fn set(&self, d: &str) -> Result<(), String> {
        *self.0.lock().unwrap() = d.into();
        Ok(())
    }
    fn current(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

async fn put(app: &axum::Router, query: &str) -> (StatusCode, serde_json::Value) {
    let res = app
        .clone()
        .oneshot(
            Request::builder()
                .method(Method::PUT)
                .uri(format!("/debug/allocs{query}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn counting_can_be_switched_off_and_on() {
    let app = linkr::admin::router(AdminState {
        metrics: Metrics::new(),
        log_level: Arc::new(Fixed(Mutex::new("info".into()))),
        store: None,
    });
    let (status, body) = put(&app, "?counting=off").await;
    assert_eq!(status, 200);
    assert_eq!(body["counting"], false);
    assert!(!alloc::counting_enabled());
    let ((), n) = alloc::count(|| drop(black_box(vec![1u8; 64])));
    assert_eq!(n, AllocCount::default());

    let (status, body) = put(&app, "?counting=on").await;
    assert_eq!(status, 200);
    assert_eq!(body["counting"], true);
    let ((), n) = alloc::count(|| drop(black_box(vec![1u8; 64])));
    assert_eq!(
        n,
        AllocCount {
            allocs: 1,
            bytes: 64
        }
    );

    for q in ["", "?counting=maybe"] {
        let (status, body) = put(&app, q).await;
        assert_eq!(status, 400, "{q}");
        assert_eq!(body["error"], "invalid_parameter");
    }
    assert!(alloc::counting_enabled());
}
