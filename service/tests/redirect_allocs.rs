//! linkr's own redirect path allocates nothing: `Store::resolve` and turning its answer into a
//! `Location` header value, for found, missing and expired codes, before and after click flushes.
//! (Counted by linkr's counting allocator on this test's thread.)

use std::hint::black_box;
use std::sync::Arc;

use axum::http::HeaderValue;
use linkr::alloc;
use linkr::clock::Clock;
use linkr::domain::{ShortCode, TargetUrl};
use linkr::store::{Lookup, NewLink, Store, StoreConfig};

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
