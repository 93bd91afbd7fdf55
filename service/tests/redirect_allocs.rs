//! linkr's own redirect path allocates nothing: `Store::resolve` and turning its answer into a
//! `Location` header value, for found, missing and expired codes, before and after click flushes.
//! And a whole redirect request through the API router (routing, middleware, handler) allocates
//! no more than axum's own router answering a fixed 302.
//! (Counted by linkr's counting allocator on this test's thread.)

use std::hint::black_box;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, Request, StatusCode, Uri};
use axum::routing::get;
use linkr::alloc;
use linkr::app::{AppState, api_router};
use linkr::clock::Clock;
use linkr::config::Config;
use linkr::domain::{ShortCode, TargetUrl};
use linkr::store::{Lookup, NewLink, Store, StoreConfig};
use tower::ServiceExt;

const LINKS: usize = 200;
const ROUNDS: usize = 20;

/// What the redirect handler does with the store's answer.
#[inline(never)]
fn redirect_location(store: &Store, code: &str) -> Option<HeaderValue> {
    match store.resolve(code) {
        Lookup::Found(location) => Some(HeaderValue::from_maybe_shared(location).expect("valid")),
        Lookup::Expired | Lookup::Missing => None,
    }
}

#[tokio::test]
async fn redirect_path_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(1_700_000_000);
    let store = Store::open(StoreConfig::new(dir.path()), clock.clone()).unwrap();
    let owner: Arc<str> = Arc::from("tester");
    let mut codes = Vec::with_capacity(LINKS);
    for i in 0..LINKS {
        let code = format!("c{i}");
        store
            .create(NewLink {
                url: TargetUrl::parse(&format!("https://example.com/page/{i}?q=x")).unwrap(),
                code: Some(ShortCode::parse(&code).unwrap()),
                owner: Arc::clone(&owner),
                ttl_seconds: None,
            })
            .await
            .unwrap();
        codes.push(code);
    }
    store
        .create(NewLink {
            url: TargetUrl::parse("https://example.com/soon-gone").unwrap(),
            code: Some(ShortCode::parse("expiring").unwrap()),
            owner: Arc::clone(&owner),
            ttl_seconds: Some(10),
        })
        .await
        .unwrap();
    clock.advance(60);

    for phase in ["fresh", "after flush", "after second flush"] {
        let (found, n) = alloc::count(|| {
            let mut found = 0usize;
            for _ in 0..ROUNDS {
                for code in &codes {
                    found += usize::from(black_box(redirect_location(&store, code)).is_some());
                }
                assert!(redirect_location(&store, "nosuchcode").is_none());
                assert!(redirect_location(&store, "expiring").is_none());
            }
            found
        });
        assert_eq!(found, LINKS * ROUNDS, "{phase}");
        assert_eq!(
            n.allocs,
            0,
            "{phase}: {} allocations ({} bytes) in {} lookups",
            n.allocs,
            n.bytes,
            (LINKS + 2) * ROUNDS
        );
        store.flush_clicks().await.unwrap();
    }

    let clicks = store.info("c0").unwrap().clicks;
    assert_eq!(clicks, 3 * ROUNDS as u64);
    store.close().await.unwrap();
}

const TARGET: &str =
    "https://www.example.com/articles/2024/06/how-we-measure-latency?ref=newsletter";
/// Not starting like a static route (`h`, `o`, `r`, `s`, `v`): such a code costs axum's router
/// one more allocation (matchit keeps the skipped static branch to backtrack to).
const CODE: &str = "K7q2xNa";
const REQUESTS: u64 = 1000;

/// Allocations made by `REQUESTS` redirects through `router` (requests built outside the count).
async fn redirect_allocs(router: &Router, uri: &Uri) -> u64 {
    let request = || {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = uri.clone();
        request
    };
    // Lazy statics, the first request-id batch.
    for _ in 0..16 {
        router.clone().oneshot(request()).await.unwrap();
    }
    let mut allocs = 0;
    for _ in 0..REQUESTS {
        let request = request();
        let (response, n) = alloc::track(router.clone().oneshot(request)).await;
        assert_eq!(response.unwrap().status(), StatusCode::FOUND);
        allocs += n.allocs;
    }
    allocs
}

#[tokio::test]
async fn whole_redirect_request_allocates_no_more_than_axum_fixed_302() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(1_700_000_000);
    let store = Store::open(StoreConfig::new(dir.path()), clock.clone()).unwrap();
    store
        .create(NewLink {
            url: TargetUrl::parse(TARGET).unwrap(),
            code: Some(ShortCode::parse(CODE).unwrap()),
            owner: Arc::from("tester"),
            ttl_seconds: None,
        })
        .await
        .unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        access_log: false,
        ..Config::default()
    };
    let linkr = api_router(AppState::new(&config, store.clone(), clock));
    let fixed_302 = Router::new().route(
        "/{code}",
        get(|| async {
            (
                StatusCode::FOUND,
                [(LOCATION, HeaderValue::from_static(TARGET))],
            )
        }),
    );
    let uri: Uri = format!("/{CODE}").parse().unwrap();

    let linkr_allocs = redirect_allocs(&linkr, &uri).await;
    let fixed_allocs = redirect_allocs(&fixed_302, &uri).await;
    // linkr's count includes one request-id batch per 128 requests, so one more allocation per
    // request anywhere on the path fails this.
    assert!(
        linkr_allocs <= fixed_allocs,
        "{REQUESTS} redirects: linkr {linkr_allocs} allocations, axum fixed 302 {fixed_allocs}"
    );
    store.close().await.unwrap();
}
