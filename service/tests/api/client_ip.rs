//! The client behind a proxy: `X-Forwarded-For` / `Forwarded` from trusted proxies only, for
//! the per-IP redirect limit and the access log; IPv6 clients limited per /64; a bounded
//! limiter map.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use linkr::app::{AppState, api_router};
use linkr::client_ip::{ForwardedHeader, TrustedProxies};
use linkr::clock::Clock;
use linkr::config::Config;
use linkr::ratelimit::{LimiterClock, Quota};
use linkr::store::{Store, StoreConfig};
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::{ChildApp, T0, client, test_config};

/// A router limiting redirects to a burst of 2 per client (time stands still), and its state.
fn limited(configure: impl FnOnce(&mut Config)) -> (Router, AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.rate_limit = Quota {
        per_second: 1,
        burst: 2,
    };
    configure(&mut config);
    let clock = Clock::manual(T0);
    let store = Store::open(StoreConfig::new(dir.path()), clock.clone()).unwrap();
    let (limiter_clock, _time) = LimiterClock::mock();
    let state = AppState::new(&config, store, clock).with_limiter_clock(limiter_clock);
    (api_router(state.clone()), state, dir)
}

fn behind(networks: &str, header: ForwardedHeader) -> impl FnOnce(&mut Config) {
    let proxies = TrustedProxies {
        networks: TrustedProxies::parse_networks(networks).unwrap(),
        header,
    };
    move |c| c.trusted_proxies = proxies
}

async fn redirect(router: &Router, peer: &str, headers: &[(&str, &str)]) -> Response<Body> {
    let mut request = Request::get("/nosuch");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::empty()).unwrap();
    let peer: IpAddr = peer.parse().unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(peer, 40000)));
    router.clone().oneshot(request).await.unwrap()
}

/// How many of `n` redirects with these headers from `peer` pass the limiter (404: unknown code).
async fn admitted(router: &Router, peer: &str, headers: &[(&str, &str)], n: usize) -> usize {
    let mut passed = 0;
    for _ in 0..n {
        match redirect(router, peer, headers).await.status().as_u16() {
            404 => passed += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    passed
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let (router, _, _dir) = limited(behind("10.0.0.0/8", ForwardedHeader::XForwardedFor));
    let proxy = "10.0.0.2";
    let xff = |v| [("x-forwarded-for", v)];
    assert_eq!(admitted(&router, proxy, &xff("203.0.113.1"), 5).await, 2);
    assert_eq!(admitted(&router, proxy, &xff("203.0.113.2"), 5).await, 2);
    // The client cannot escape its bucket by forging entries on the left.
    let forged = xff("198.51.100.77, 203.0.113.1");
    assert_eq!(admitted(&router, proxy, &forged, 5).await, 0);
    // Nor through a second trusted hop.
    let chained = xff("203.0.113.1, 10.9.9.9");
    assert_eq!(admitted(&router, proxy, &chained, 5).await, 0);
}

#[tokio::test]
async fn an_untrusted_peer_is_limited_as_itself_whatever_its_headers_say() {
    let (router, _, _dir) = limited(behind("10.0.0.0/8", ForwardedHeader::XForwardedFor));
    let mut passed = 0;
    for i in 0..5 {
        let claimed = format!("203.0.113.{i}");
        passed += admitted(
            &router,
            "198.51.100.9",
            &[
                ("x-forwarded-for", &claimed),
                ("forwarded", &format!("for={claimed}")),
            ],
            1,
        )
        .await;
    }
    assert_eq!(
        passed, 2,
        "five forged addresses share the peer's burst of 2"
    );

    // Without any trusted proxy (the default) the header is never read.
    let (router, _, _dir) = limited(|_| {});
    let mut passed = 0;
    for i in 0..5 {
        let claimed = format!("203.0.113.{i}");
        passed += admitted(&router, "10.0.0.2", &[("x-forwarded-for", &claimed)], 1).await;
    }
    assert_eq!(passed, 2);
}

#[tokio::test]
async fn the_forwarded_header_is_read_when_configured() {
    let (router, _, _dir) = limited(behind("10.0.0.0/8", ForwardedHeader::Forwarded));
    let fwd = |v| [("forwarded", v)];
    assert_eq!(
        admitted(&router, "10.0.0.2", &fwd("for=203.0.113.1;proto=https"), 3).await,
        2
    );
    assert_eq!(
        admitted(&router, "10.0.0.2", &fwd(r#"for="[2001:db8::1]:4711""#), 3).await,
        2
    );
    // X-Forwarded-For is not what these proxies write: not believed.
    let xff = [("x-forwarded-for", "203.0.113.99")];
    assert_eq!(
        admitted(&router, "10.0.0.2", &xff, 3).await,
        2,
        "the proxy's own bucket"
    );
    assert_eq!(admitted(&router, "10.0.0.2", &xff, 3).await, 0);
}

#[tokio::test]
async fn ipv6_clients_share_a_bucket_per_slash_64() {
    let (router, _, _dir) = limited(|_| {});
    assert_eq!(admitted(&router, "2001:db8:1:2::1", &[], 1).await, 1);
    assert_eq!(
        admitted(&router, "2001:db8:1:2:ffff:ffff:ffff:fff0", &[], 1).await,
        1
    );
    assert_eq!(
        admitted(&router, "2001:db8:1:2:1234::9", &[], 3).await,
        0,
        "a third address of the same /64 finds the bucket empty"
    );
    assert_eq!(
        admitted(&router, "2001:db8:1:3::1", &[], 3).await,
        2,
        "another /64"
    );
}

#[tokio::test]
async fn many_source_addresses_cannot_grow_the_limiter_past_its_bound() {
    const CAP: usize = 200;
    let (router, state, _dir) = limited(|c| c.rate_limit_clients = CAP);
    let limiter = state.ip_limiter.as_ref().expect("limiting is on");
    assert_eq!(limiter.max_keys(), CAP);
    for i in 0..3000u32 {
        let [_, _, a, b] = i.to_be_bytes();
        let peer = if i.is_multiple_of(2) {
            format!("198.{}.{a}.{b}", (i >> 16) % 256)
        } else {
            format!("2001:db8:{i:x}::1")
        };
        assert_eq!(redirect(&router, &peer, &[]).await.status(), 404);
        assert!(
            limiter.len() <= CAP,
            "{} buckets after {i} clients",
            limiter.len()
        );
    }
    // Still limiting: a client's burst is 2.
    assert_eq!(admitted(&router, "192.0.2.1", &[], 5).await, 2);
}

/// The access log names the client: the peer, or the forwarded client when the peer is trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_forwarded_client_only_from_trusted_proxies() {
    for (trusted, expected) in [("127.0.0.1/32", "203.0.113.7"), ("", "127.0.0.1")] {
        let dir = tempfile::tempdir().unwrap();
        let mut linkr = ChildApp::spawn(dir.path(), &[("LINKR_TRUSTED_PROXIES", trusted)]);
        linkr.wait_started().await;
        let response = client()
            .get(linkr.url("/healthz"))
            .header("x-forwarded-for", "198.51.100.1, 203.0.113.7")
            .header("x-request-id", "via-proxy")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        linkr.signal(libc::SIGTERM);
        assert!(linkr.wait_exit(Duration::from_secs(20)).success());
        linkr.finish_output();
        let stdout = linkr.stdout();
        let line: Value = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["target"] == "linkr::access" && e["request_id"] == "via-proxy")
            .unwrap_or_else(|| panic!("no access line:\n{stdout}"));
        assert_eq!(line["client_ip"], expected, "trusted {trusted:?}: {line}");
    }
}
