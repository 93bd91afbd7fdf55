//! The redirect fast path (`linkr::routes::api`): `GET /{code}` answered in front of axum's
//! router behind the same middleware. It takes exactly the requests the router would send to the
//! redirect handler with `GET`, answers them as the router does, and allocates nothing of its own:
//! in-process, and over a real keep-alive connection as the route's allocation histogram sees it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_LENGTH, HOST, LOCATION};
use axum::http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use linkr::alloc;
use linkr::app::{AppState, Listeners, api_router, run_with_clock};
use linkr::clock::Clock;
use linkr::config::{ApiKey, Config, Secret};
use linkr::domain::{ShortCode, TargetUrl};
use linkr::routes::{Api, api, is_redirect};
use linkr::store::{NewLink, Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

const TARGET: &str =
    "https://www.example.com/articles/2024/06/how-we-measure-latency?ref=newsletter";
const CODE: &str = "K7q2xNa";
const KEY: &str = "fast-path-key-0123456789";
const REQUESTS: u64 = 1000;
/// Request ids are minted in batches of this many (one allocation each).
const IDS_PER_BATCH: u64 = 128;

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[test]
fn the_fast_path_takes_what_the_router_sends_to_the_redirect_with_get() {
    let with_body = Request::get("/abc").body(Body::from("x")).unwrap();
    let head = Request::head("/abc").body(Body::empty()).unwrap();
    let post = Request::post("/abc").body(Body::empty()).unwrap();
    for (request, expected) in [
        (get("/abc"), true),
        (get("/K7q%32xNa"), true),
        (get("/abc?x=1"), true),
        (get("/HEALTHZ"), true),
        (get("/v1"), true),
        (get("/a.b"), true),
        (get("/"), false),
        (get("/abc/"), false),
        (get("/v1/links"), false),
        (get("/healthz"), false),
        (get("/readyz"), false),
        (get("/startupz"), false),
        (get("/openapi.json"), false),
        (head, false),
        (post, false),
        (with_body, false),
    ] {
        assert_eq!(is_redirect(&request), expected, "{request:?}");
    }
}

struct Seeded {
    store: Store,
    config: Config,
    clock: Clock,
    _dir: tempfile::TempDir,
}

async fn seeded() -> Seeded {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(1_700_000_000);
    let store = Store::open(StoreConfig::new(dir.path()), clock.clone()).unwrap();
    for (code, ttl) in [(CODE, None), ("expiring", Some(10))] {
        store
            .create(NewLink {
                url: TargetUrl::parse(TARGET).unwrap(),
                code: Some(ShortCode::parse(code).unwrap()),
                owner: Arc::from("tester"),
                ttl_seconds: ttl,
            })
            .await
            .unwrap();
    }
    clock.advance(60);
    let config = Config {
        data_dir: dir.path().to_owned(),
        access_log: false,
        ..Config::default()
    };
    Seeded {
        store,
        config,
        clock,
        _dir: dir,
    }
}

/// Status, headers and body; without the request id (a fresh one each time) and the
/// `Content-Length`, which axum's router sets in-process and hyper on the wire when it is missing
/// (the bytes sent are the same, checked with `curl -si`); when present it must be the body's
/// (but for `HEAD`, whose body is left out).
async fn parts(
    response: Response<Body>,
    method: &Method,
) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
    let status = response.status();
    let length = response.headers().get(CONTENT_LENGTH).cloned();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "x-request-id" && *name != CONTENT_LENGTH)
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    if let Some(length) = length.filter(|_| method != Method::HEAD) {
        assert_eq!(length.to_str().unwrap(), body.len().to_string());
    }
    (status, headers, body.to_vec())
}

#[tokio::test]
async fn the_fast_path_answers_as_the_router_does() {
    let s = seeded().await;
    let state = AppState::new(&s.config, s.store.clone(), s.clock.clone());
    let fast = api(state.clone());
    let router = api_router(state);
    let long = format!("/{}", "a".repeat(70));
    for uri in [
        &format!("/{CODE}"),
        "/K7q%32xNa",
        "/nosuchcode",
        "/expiring",
        "/v1",
        "/a.b",
        "/ab%6",
        &long,
        "/healthz",
        "/K7q2xNa/",
        "/",
    ] {
        for method in [Method::GET, Method::HEAD, Method::POST] {
            let request = || {
                Request::builder()
                    .method(&method)
                    .uri(uri)
                    .body(Body::empty())
            };
            let a = parts(
                fast.clone().oneshot(request().unwrap()).await.unwrap(),
                &method,
            )
            .await;
            let b = parts(
                router.clone().oneshot(request().unwrap()).await.unwrap(),
                &method,
            )
            .await;
            assert_eq!(a, b, "{method} {uri}");
        }
    }
    let found = fast
        .clone()
        .oneshot(get(&format!("/{CODE}")))
        .await
        .unwrap();
    assert_eq!(found.status(), StatusCode::FOUND);
    assert_eq!(found.headers()[LOCATION], TARGET);
    assert_eq!(found.headers()["x-request-id"].len(), 36);
    s.store.close().await.unwrap();
}

/// Allocations of `REQUESTS` redirects through `api` in-process; requests as hyper hands them
/// over (a `Host` header; values that share their buffer, as hyper's are slices of its read
/// buffer), built outside the count, with a client request id when `with_id`.
async fn in_process_allocs(api: &Api, with_id: bool) -> u64 {
    let request = || {
        let mut request = Request::get(format!("/{CODE}"))
            .header(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        if with_id {
            request = request.header("x-request-id", HeaderValue::from_static("client-id-1"));
        }
        request.body(Body::empty()).unwrap()
    };
    for _ in 0..16 {
        api.clone().oneshot(request()).await.unwrap();
    }
    let mut allocs = 0;
    for _ in 0..REQUESTS {
        let request = request();
        let (response, n) = alloc::track(api.clone().oneshot(request)).await;
        assert_eq!(response.unwrap().status(), StatusCode::FOUND);
        allocs += n.allocs;
    }
    allocs
}

#[tokio::test]
async fn a_whole_in_process_redirect_allocates_only_request_id_batches() {
    let s = seeded().await;
    let api = api(AppState::new(&s.config, s.store.clone(), s.clock.clone()));
    // The client's id is echoed: nothing at all is allocated.
    assert_eq!(in_process_allocs(&api, true).await, 0);
    // Minted ids: one allocation per batch of 128, nothing else.
    let minted = in_process_allocs(&api, false).await;
    assert!(
        (REQUESTS / IDS_PER_BATCH..=REQUESTS.div_ceil(IDS_PER_BATCH)).contains(&minted),
        "{minted} allocations in {REQUESTS} redirects"
    );
    s.store.close().await.unwrap();
}

/// Sends `n` keep-alive redirects on one connection; every answer must be the 302.
async fn keep_alive_redirects(stream: &mut TcpStream, n: u64, request_id: bool) {
    let request = if request_id {
        format!("GET /{CODE} HTTP/1.1\r\nhost: x\r\nx-request-id: client-id-1\r\n\r\n")
    } else {
        format!("GET /{CODE} HTTP/1.1\r\nhost: x\r\n\r\n")
    };
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut have = 0;
        while !buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
            let read = stream.read(&mut buf[have..]).await.unwrap();
            assert!(read > 0, "connection closed");
            have += read;
        }
        let head = String::from_utf8_lossy(&buf[..have]);
        assert!(head.starts_with("HTTP/1.1 302 Found\r\n"), "{head}");
        assert!(head.contains(&format!("location: {TARGET}\r\n")), "{head}");
    }
}

/// `(requests, allocations)` of the route `/{code}` from the admin listener.
async fn route_allocs(admin: &str) -> (u64, u64) {
    let body: serde_json::Value = reqwest::get(format!("http://{admin}/debug/allocs"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let route = body["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/{code}")
        .cloned()
        .unwrap_or_default();
    (
        route["requests"].as_u64().unwrap_or(0),
        route["allocations"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn served_redirects_allocate_nothing_on_their_route() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        api_keys: vec![ApiKey {
            name: "tester".into(),
            key: Secret::new(KEY.into()),
            admin: false,
        }],
        access_log: false,
        shutdown_delay: Duration::ZERO,
        ..Config::default()
    };
    let listeners = Listeners {
        main: TcpListener::bind(config.addr).await.unwrap(),
        admin: TcpListener::bind(config.admin_addr).await.unwrap(),
    };
    let addr = listeners.main.local_addr().unwrap();
    let admin = listeners.admin.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run_with_clock(
        config,
        listeners,
        async {
            let _ = stopped.await;
        },
        Clock::system(),
    ));
    let client = reqwest::Client::new();
    let created = loop {
        let response = client
            .post(format!("http://{addr}/v1/links"))
            .bearer_auth(KEY)
            .json(&serde_json::json!({"url": TARGET, "code": CODE}))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::SERVICE_UNAVAILABLE {
            break response.status();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(created, StatusCode::CREATED);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The connection's first request allocates its header maps; from then on hyper hands each
    // request the map of the previous response, which the redirect reuses.
    keep_alive_redirects(&mut stream, 2, true).await;
    let (requests0, allocs0) = route_allocs(&admin).await;
    keep_alive_redirects(&mut stream, REQUESTS, true).await;
    let (requests1, allocs1) = route_allocs(&admin).await;
    assert_eq!(requests1 - requests0, REQUESTS);
    assert_eq!(
        allocs1 - allocs0,
        0,
        "client request ids: nothing allocated"
    );
    keep_alive_redirects(&mut stream, REQUESTS, false).await;
    let (requests2, allocs2) = route_allocs(&admin).await;
    assert_eq!(requests2 - requests1, REQUESTS);
    let minted = allocs2 - allocs1;
    assert!(
        (REQUESTS / IDS_PER_BATCH..=REQUESTS.div_ceil(IDS_PER_BATCH)).contains(&minted),
        "{minted} allocations in {REQUESTS} redirects with minted ids"
    );

    drop(stream);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
