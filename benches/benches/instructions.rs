//! Instruction counts of linkr's hot functions under valgrind (gungraun/callgrind).
//!
//! Exact on a noisy machine, so these are the CI gate: `scripts/bench.sh gate` compares
//! them with `profiles/baseline/instructions.json`. Set-up (and warm-up, so pools and
//! lazy statics are initialised) happens in the `bench` arguments, outside the count.
//! Each function returns its inputs so that dropping them is not counted either.

use std::hint::black_box;

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::HOST;
use axum::http::{HeaderValue, Request};
use axum::response::Response;
use bytes::Bytes;
use gungraun::{library_benchmark, library_benchmark_group, main};
use linkr::AppState;
use linkr::clock::Clock;
use linkr::config::Config;
use linkr::domain::code::{decode_base62, encode_base62};
use linkr::domain::{ShortCode, TargetUrl};
use linkr::encode::{
    BUFFER_CAPACITY, BufferPool, encode_json, encode_json_zero_copy, write_json_copy,
    write_json_zero_copy,
};
use linkr::ratelimit::{self, Decision, Instant, KeyedLimiter, Quota, TokenBucket};
use linkr::routes::links::LinkCreated;
use linkr::routes::{Api, api};
use linkr::store::{Lookup, NewLink, Store, StoreConfig};
use linkr_benches::alternatives::{sample_link, to_string_copy, to_vec_bytes};
use tower::ServiceExt;

const QUOTA: Quota = Quota {
    per_second: 100,
    burst: 50,
};

#[library_benchmark]
#[bench::u64_max(u64::MAX)]
#[bench::seven_chars(3_000_000_000_000)]
fn base62_encode(n: u64) -> usize {
    let mut out = [0u8; 11];
    black_box(encode_base62(black_box(n), &mut out).len())
}

#[library_benchmark]
#[bench::eleven_chars("LygHa16AHYF")]
#[bench::seven_chars("q3Xz9bK")]
fn base62_decode(s: &str) -> Option<u64> {
    black_box(decode_base62(black_box(s)))
}

#[library_benchmark]
#[bench::seven_chars("q3Xz9bK")]
fn short_code_parse(s: &str) -> Option<ShortCode> {
    black_box(ShortCode::parse(black_box(s)).ok())
}

library_benchmark_group!(
    name = codes,
    benchmarks = [base62_encode, base62_decode, short_code_parse]
);

fn bucket() -> (TokenBucket, Instant) {
    let now = ratelimit::now();
    (TokenBucket::with_base(QUOTA, now), now)
}

fn empty_bucket() -> (TokenBucket, Instant) {
    let (bucket, now) = bucket();
    while bucket.check(now).is_allowed() {}
    (bucket, now)
}

/// Fixed keys for the map's hasher: std's random ones change the probe sequence, and with it the
/// count (301 or 319 instructions from one run to the next).
type FixedHasher = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;

fn keyed() -> (KeyedLimiter<u64, FixedHasher>, Instant) {
    let now = ratelimit::now();
    let limiter = KeyedLimiter::with_hasher(QUOTA, FixedHasher::default());
    for key in 0..64 {
        limiter.check(&key, now);
    }
    (limiter, now)
}

#[library_benchmark]
#[bench::allow(bucket())]
#[bench::deny(empty_bucket())]
fn token_bucket_check(input: (TokenBucket, Instant)) -> (Decision, (TokenBucket, Instant)) {
    let decision = black_box(input.0.check(black_box(input.1)));
    (decision, input)
}

#[library_benchmark]
#[bench::known_key(keyed())]
fn keyed_limiter_check(
    input: (KeyedLimiter<u64, FixedHasher>, Instant),
) -> (Decision, (KeyedLimiter<u64, FixedHasher>, Instant)) {
    let decision = black_box(input.0.check(black_box(&42), input.1));
    (decision, input)
}

library_benchmark_group!(
    name = rate_limit,
    benchmarks = [token_bucket_check, keyed_limiter_check]
);

type Link = LinkCreated<'static>;

fn warm_link() -> Link {
    let link = sample_link();
    for _ in 0..16 {
        drop(encode_json(&link));
        drop(encode_json_zero_copy(&link));
        drop(write_json_zero_copy(&link));
        drop(write_json_copy(&link));
    }
    link
}

fn warm_pool() -> (BufferPool, Link) {
    let pool = BufferPool::new(4, BUFFER_CAPACITY);
    let link = sample_link();
    for _ in 0..16 {
        drop(pool.encode_json(&link));
    }
    (pool, link)
}

// What the service does: hand-written JSON, zero-copy.
#[library_benchmark]
#[bench::linkr_zero_copy(warm_link())]
fn link_json(link: Link) -> (Bytes, Link) {
    (
        black_box(write_json_zero_copy(black_box(&link)).unwrap()),
        link,
    )
}

#[library_benchmark]
#[bench::hand_written_copy(warm_link())]
fn link_json_hand_written_copy(link: Link) -> (Bytes, Link) {
    (black_box(write_json_copy(black_box(&link)).unwrap()), link)
}

#[library_benchmark]
#[bench::serde_scratch_copy(warm_link())]
fn link_json_serde_scratch_copy(link: Link) -> (Bytes, Link) {
    (black_box(encode_json(black_box(&link)).unwrap()), link)
}

#[library_benchmark]
#[bench::serde_zero_copy(warm_link())]
fn link_json_serde_zero_copy(link: Link) -> (Bytes, Link) {
    (
        black_box(encode_json_zero_copy(black_box(&link)).unwrap()),
        link,
    )
}

#[library_benchmark]
#[bench::serde_object_pool(warm_pool())]
fn link_json_object_pool(input: (BufferPool, Link)) -> (Bytes, (BufferPool, Link)) {
    (
        black_box(input.0.encode_json(black_box(&input.1)).unwrap()),
        input,
    )
}

#[library_benchmark]
#[bench::to_string_copy(sample_link())]
fn link_json_to_string_copy(link: Link) -> (Bytes, Link) {
    (black_box(to_string_copy(black_box(&link))), link)
}

#[library_benchmark]
#[bench::to_vec(sample_link())]
fn link_json_to_vec(link: Link) -> (Bytes, Link) {
    (black_box(to_vec_bytes(black_box(&link))), link)
}

#[library_benchmark]
#[bench::serde_serialize_only((Vec::with_capacity(1024), sample_link()))]
fn link_json_serialize_only(input: (Vec<u8>, Link)) -> (Vec<u8>, Link) {
    let (mut scratch, link) = input;
    serde_json::to_writer(&mut scratch, black_box(&link)).unwrap();
    (black_box(scratch), link)
}

#[library_benchmark]
#[bench::from_bytes(Bytes::from_static(sample_link().url.as_bytes()))]
fn location_header(url: Bytes) -> (axum::http::HeaderValue, Bytes) {
    let value = axum::http::HeaderValue::from_maybe_shared(black_box(&url).clone()).unwrap();
    (black_box(value), url)
}

library_benchmark_group!(
    name = encode,
    benchmarks = [
        link_json,
        link_json_hand_written_copy,
        link_json_serde_scratch_copy,
        link_json_serde_zero_copy,
        link_json_object_pool,
        link_json_to_string_copy,
        link_json_to_vec,
        link_json_serialize_only,
        location_header
    ]
);

/// A store with one link, the runtime that created it, and the link's code.
struct Seeded {
    store: Store,
    code: String,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn seeded_store() -> Seeded {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path()), Clock::system()).expect("store");
    let link = rt
        .block_on(store.create(NewLink {
            url: TargetUrl::parse(sample_link().url).expect("url"),
            code: None,
            owner: Arc::from("bench"),
            ttl_seconds: None,
        }))
        .expect("create");
    let code = link.code.as_str().to_owned();
    // The first click marks the link dirty (a push onto the flush list); measure a later one.
    store.resolve(&code);
    Seeded {
        store,
        code,
        rt,
        _dir: dir,
    }
}

#[library_benchmark]
#[bench::hit(seeded_store())]
fn store_resolve(seeded: Seeded) -> (Lookup, Seeded) {
    (
        black_box(seeded.store.resolve(black_box(&seeded.code))),
        seeded,
    )
}

fn redirect_setup() -> (Api, Request<Body>, Seeded) {
    let seeded = seeded_store();
    let config = Config {
        access_log: false,
        ..Config::default()
    };
    // What the server runs: the redirect fast path in front of the router.
    let app = api(AppState::new(
        &config,
        seeded.store.clone(),
        Clock::system(),
    ));
    // Warm the router and the middleware once.
    let warm = Request::get(format!("/{}", seeded.code))
        .body(Body::empty())
        .unwrap();
    drop(seeded.rt.block_on(app.clone().oneshot(warm)));
    // With its `Host` header, as hyper hands a request over (the value shares its buffer).
    let request = Request::get(format!("/{}", seeded.code))
        .header(HOST, HeaderValue::from_static("127.0.0.1:8080"))
        .body(Body::empty())
        .unwrap();
    (app, request, seeded)
}

#[library_benchmark]
#[bench::linkr(redirect_setup())]
fn request_redirect(input: (Api, Request<Body>, Seeded)) -> (Response, Api, Seeded) {
    let (app, request, seeded) = input;
    let response = seeded.rt.block_on(app.clone().oneshot(black_box(request)));
    (black_box(response.unwrap()), app, seeded)
}

library_benchmark_group!(
    name = redirect,
    benchmarks = [store_resolve, request_redirect]
);

main!(
    library_benchmark_groups = codes,
    rate_limit,
    encode,
    redirect
);
