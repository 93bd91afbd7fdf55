//! Whole requests through linkr's API router in-process (`tower::ServiceExt::oneshot`),
//! beside a bare axum handler answering a fixed 302 as the reference.
//! Requests are built in the untimed set-up, so both sides are charged only for routing,
//! handling and the response.

use std::hint::black_box;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::handler::Handler;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, LOCATION};
use axum::http::{HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use linkr::app::AppState;
use linkr::clock::Clock;
use linkr::config::{ApiKey, Config, Secret};
use linkr::domain::{ShortCode, TargetUrl};
use linkr::metrics::Metrics;
use linkr::routes::{api, middleware};
use linkr::store::{NewLink, Store, StoreConfig};
use linkr_benches::support::{self, Group};
use tower::ServiceExt;

const API_KEY: &str = "bench-key-0123456789";
const TARGET: &str =
    "https://www.example.com/articles/2024/06/how-we-measure-latency?ref=newsletter";
/// A fixed code, so the redirect's allocations do not vary between runs: a code whose first
/// character starts a static route too (`h`, `o`, `r`, `s`, `v`) costs axum's router one more
/// allocation (matchit keeps the skipped static branch to backtrack to).
const CODE: &str = "K7q2xNa";
const CREATE_BODY: &str = r#"{"url":"https://www.example.com/articles/2024/06/new?ref=bench"}"#;

/// A `GET` as hyper hands it over: with its `Host` header, whose value shares a buffer (hyper's
/// are slices of its read buffer), so cloning it does not allocate.
fn get_request(uri: &Uri) -> Request<Body> {
    let mut request = Request::new(Body::empty());
    *request.uri_mut() = uri.clone();
    request
        .headers_mut()
        .insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
    request
}

fn authorized(method: Method, uri: &Uri, body: Body) -> Request<Body> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri.clone();
    let headers = request.headers_mut();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {API_KEY}")).expect("header"),
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    request
}

fn expect(response: Response, status: StatusCode) -> Response {
    assert_eq!(response.status(), status, "unexpected status");
    response
}

fn request(c: &mut Criterion) {
    let rt = support::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path()), Clock::system()).expect("open store");
    let config = Config {
        data_dir: dir.path().to_owned(),
        public_url: Some("http://127.0.0.1:8080".into()),
        api_keys: vec![ApiKey {
            name: "bench".into(),
            key: Secret::new(API_KEY.into()),
            admin: false,
        }],
        access_log: false,
        ..Config::default()
    };
    let link = rt
        .block_on(store.create(NewLink {
            url: TargetUrl::parse(TARGET).expect("url"),
            code: Some(ShortCode::parse(CODE).expect("code")),
            owner: Arc::from("bench"),
            ttl_seconds: None,
        }))
        .expect("seed link");
    let code = link.code.as_str().to_owned();
    // What the server runs: the redirect fast path in front of the router.
    let app = api(AppState::new(&config, store.clone(), Clock::system()));
    let fixed_302 = Router::new().route(
        "/{code}",
        get(|| async {
            (
                StatusCode::FOUND,
                [(LOCATION, HeaderValue::from_static(TARGET))],
            )
        }),
    );

    // The same fixed handler behind linkr's middleware (metrics by route, request context),
    // around the handler as `api_router` puts it around the redirect: separates what the
    // middleware costs from what the redirect handler costs.
    let fixed_302_middleware = Router::new().route(
        "/{code}",
        get((|| async {
            (
                StatusCode::FOUND,
                [(LOCATION, HeaderValue::from_static(TARGET))],
            )
        })
        .layer(middleware(Metrics::new(), false))),
    );

    let redirect_uri: Uri = format!("/{code}").parse().expect("uri");
    let stats_uri: Uri = format!("/v1/links/{code}").parse().expect("uri");
    let create_uri = Uri::from_static("/v1/links");

    let mut g = Group::new(c, "request");
    g.throughput(Throughput::Elements(1));
    g.bench_with_setup(
        "redirect/linkr",
        || get_request(&redirect_uri),
        |req| {
            expect(
                rt.block_on(app.clone().oneshot(black_box(req))).unwrap(),
                StatusCode::FOUND,
            )
        },
    );
    g.bench_with_setup(
        "redirect/axum_fixed_302",
        || get_request(&redirect_uri),
        |req| {
            expect(
                rt.block_on(fixed_302.clone().oneshot(black_box(req)))
                    .unwrap(),
                StatusCode::FOUND,
            )
        },
    );
    g.bench_with_setup(
        "redirect/axum_fixed_302_linkr_middleware",
        || get_request(&redirect_uri),
        |req| {
            expect(
                rt.block_on(fixed_302_middleware.clone().oneshot(black_box(req)))
                    .unwrap(),
                StatusCode::FOUND,
            )
        },
    );
    g.bench_with_setup(
        "stats/linkr",
        || authorized(Method::GET, &stats_uri, Body::empty()),
        |req| {
            expect(
                rt.block_on(app.clone().oneshot(black_box(req))).unwrap(),
                StatusCode::OK,
            )
        },
    );
    g.bench_with_setup(
        "create/linkr",
        || authorized(Method::POST, &create_uri, Body::from(CREATE_BODY)),
        |req| {
            expect(
                rt.block_on(app.clone().oneshot(black_box(req))).unwrap(),
                StatusCode::CREATED,
            )
        },
    );
    g.finish();
    rt.block_on(store.close()).expect("close store");
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = request
}
criterion_main!(benches);
