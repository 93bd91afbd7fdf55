//! Token bucket per API key on `/v1/*` and per client IP on redirects, on a mock limiter
//! clock: time moves only when the test advances it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use linkr::app::{AppState, api_router};
use linkr::clock::Clock;
use linkr::ratelimit::{LimiterClock, MockClock, Quota};
use linkr::store::{Store, StoreConfig};
use tower::ServiceExt;

use crate::helpers::{ALICE, BOB, T0, test_config};

struct Limited {
    router: Router,
    time: Arc<MockClock>,
    _dir: tempfile::TempDir,
}

impl Limited {
    fn advance(&self, by: Duration) {
        self.time.increment(by);
    }
}

fn limited(per_second: u32, burst: u32) -> Limited {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.rate_limit = Quota { per_second, burst };
    let clock = Clock::manual(T0);
    let store = Store::open(StoreConfig::new(dir.path()), clock.clone()).unwrap();
    let (limiter_clock, time) = LimiterClock::mock();
    Limited {
        router: api_router(AppState::new(&config, store, clock).with_limiter_clock(limiter_clock)),
        time,
        _dir: dir,
    }
}

async fn api_get(router: &Router, key: &str) -> Response<Body> {
    let request = Request::get("/v1/links/whatever")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(request).await.unwrap()
}

async fn redirect_from(router: &Router, ip: [u8; 4]) -> Response<Body> {
    let mut request = Request::get("/whatever").body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
    router.clone().oneshot(request).await.unwrap()
}

fn header<'a>(r: &'a Response<Body>, name: &str) -> &'a str {
    r.headers()[name].to_str().unwrap()
}

#[tokio::test]
async fn per_key_bucket_refills_at_the_rate() {
    let l = limited(2, 3);
    for remaining in ["2", "1", "0"] {
        let r = api_get(&l.router, ALICE).await;
        assert_eq!(r.status(), 404, "allowed through to the handler");
        assert_eq!(header(&r, "ratelimit-limit"), "3");
        assert_eq!(header(&r, "ratelimit-remaining"), remaining);
    }
    let denied = api_get(&l.router, ALICE).await;
    assert_eq!(denied.status(), 429);
    assert_eq!(header(&denied, "retry-after"), "1", "500ms rounds up to 1s");
    assert_eq!(header(&denied, "ratelimit-limit"), "3");
    assert_eq!(header(&denied, "ratelimit-remaining"), "0");
    assert_eq!(
        header(&denied, "ratelimit-reset"),
        "2",
        "1.5s until full, rounded up"
    );
    let body = axum::body::to_bytes(denied.into_body(), 4096)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "rate_limited");

    assert_eq!(
        api_get(&l.router, BOB).await.status(),
        404,
        "bob has his own bucket"
    );

    l.advance(Duration::from_millis(499));
    assert_eq!(api_get(&l.router, ALICE).await.status(), 429);
    l.advance(Duration::from_millis(1));
    assert_eq!(
        api_get(&l.router, ALICE).await.status(),
        404,
        "one token after 500ms"
    );
    assert_eq!(api_get(&l.router, ALICE).await.status(), 429);

    l.advance(Duration::from_secs(60));
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(api_get(&l.router, ALICE).await.status().as_u16());
        }
        v
    };
    assert_eq!(
        statuses,
        [404, 404, 404, 429, 429],
        "never more than the burst"
    );
}

#[tokio::test]
async fn retry_after_is_whole_seconds_rounded_up() {
    let l = limited(1, 1);
    assert_eq!(api_get(&l.router, ALICE).await.status(), 404);
    l.advance(Duration::from_millis(100));
    let denied = api_get(&l.router, ALICE).await;
    assert_eq!(denied.status(), 429);
    assert_eq!(header(&denied, "retry-after"), "1", "900ms rounds up");
    l.advance(Duration::from_millis(900));
    assert_eq!(api_get(&l.router, ALICE).await.status(), 404);
}

#[tokio::test]
async fn unauthenticated_requests_are_401_not_counted() {
    let l = limited(1, 1);
    for _ in 0..3 {
        assert_eq!(api_get(&l.router, "wrong-key-0000000").await.status(), 401);
    }
    assert_eq!(api_get(&l.router, ALICE).await.status(), 404);
}

#[tokio::test]
async fn redirects_are_limited_per_client_ip() {
    let l = limited(10, 2);
    assert_eq!(redirect_from(&l.router, [10, 0, 0, 1]).await.status(), 404);
    assert_eq!(redirect_from(&l.router, [10, 0, 0, 1]).await.status(), 404);
    let denied = redirect_from(&l.router, [10, 0, 0, 1]).await;
    assert_eq!(denied.status(), 429);
    assert_eq!(header(&denied, "retry-after"), "1");
    assert_eq!(header(&denied, "ratelimit-limit"), "2");
    assert_eq!(
        redirect_from(&l.router, [10, 0, 0, 2]).await.status(),
        404,
        "other IP"
    );
    l.advance(Duration::from_millis(100));
    assert_eq!(redirect_from(&l.router, [10, 0, 0, 1]).await.status(), 404);
}

#[tokio::test]
async fn zero_rate_disables_limiting() {
    let l = limited(0, 0);
    for _ in 0..50 {
        let r = api_get(&l.router, ALICE).await;
        assert_eq!(r.status(), 404);
        assert!(r.headers().get("ratelimit-limit").is_none());
    }
}
