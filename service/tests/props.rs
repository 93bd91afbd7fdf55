//! Property tests (proptest, stable Rust) of what hostile input reaches: URL validation, short
//! codes and base62, the create body from raw bytes to status code, and the token bucket's bound
//! (over any window of length t, at most burst + rate·t admitted). The fuzz targets in `fuzz/`
//! drive the same functions with coverage guidance; inputs they found are replayed at the end.

use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{Request, StatusCode, header};
use linkr::app::{AppState, api_router};
use linkr::clock::Clock;
use linkr::config::{ApiKey, Config, Secret};
use linkr::domain::code::{MAX_CODE_LEN, decode_base62, encode_base62, generate};
use linkr::domain::{MAX_URL_BYTES, ShortCode, TargetUrl, URL_PATTERN_BODY};
use linkr::ratelimit::{Instant, KeyedLimiter, LimiterClock, Quota, TokenBucket};
use linkr::routes::JsonBody;
use linkr::routes::links::{CreateLink, MAX_TTL_SECONDS};
use linkr::store::{Store, StoreConfig};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

/// `cases` cases; failures are not written to a file (a found failure becomes a named test).
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Route names a code must not shadow (the contract: compared ignoring ASCII case).
const RESERVED: &[&str] = &[
    "healthz", "readyz", "startupz", "v1", "metrics", "debug", "openapi",
];

fn is_code_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The contract's code rule, written out independently of `ShortCode::parse`.
fn code_is_valid(s: &str) -> bool {
    (1..=MAX_CODE_LEN).contains(&s.len())
        && s.chars().all(is_code_char)
        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s))
}

/// Strings shaped like URLs (schemes, hosts, ports, credentials, paths, odd bytes), plus
/// arbitrary text.
fn urlish() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("http"),
        Just("https"),
        Just("HTTP"),
        Just("hTtPs"),
        Just("ftp"),
        Just("file"),
        Just("javascript"),
        Just("data"),
        Just("mailto"),
        Just("ws"),
        Just(""),
    ];
    let sep = prop_oneof![Just("://"), Just(":"), Just(":/"), Just(":///"), Just("//")];
    let userinfo = prop_oneof![
        3 => Just(""),
        1 => Just("user@"),
        1 => Just("user:pw@"),
        1 => Just(":@"),
    ];
    let host = prop_oneof![
        "[a-z0-9-]{1,12}(\\.[a-z]{2,6}){0,2}",
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        Just("[::1]".to_owned()),
        "\\PC{0,8}",
        Just(String::new()),
    ];
    let port = prop_oneof![3 => Just(String::new()), 1 => ":[0-9]{0,6}"];
    let rest = "[/?#]?\\PC{0,40}";
    let shaped = (scheme, sep, userinfo, host, port, rest)
        .prop_map(|(s, sep, u, h, p, r)| format!("{s}{sep}{u}{h}{p}{r}"));
    prop_oneof![4 => shaped, 1 => any::<String>()]
}

/// Strings matching `^pattern$` (proptest generates from patterns without anchors).
fn unanchored(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
    let inner = pattern
        .strip_prefix('^')
        .unwrap()
        .strip_suffix('$')
        .unwrap();
    proptest::string::string_regex(inner).unwrap()
}

/// http(s) URLs that the contract says must be accepted.
fn valid_url() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("http"), Just("https"), Just("HTTPS")],
        // An `xn--` label would have to be valid punycode; the contract leaves such hosts out.
        "[a-z][a-z0-9-]{0,15}(\\.[a-z]{2,6}){1,2}"
            .prop_filter("no xn-- label", |h| !h.contains("xn--")),
        prop_oneof![Just(String::new()), (1u16..).prop_map(|p| format!(":{p}"))],
        "(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,20}){0,6}",
        "(\\?[A-Za-z0-9=&_-]{0,30})?",
        "(#[A-Za-z0-9_-]{0,10})?",
    )
        .prop_map(|(s, h, p, path, q, f)| format!("{s}://{h}{p}{path}{q}{f}"))
}

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn an_accepted_url_is_an_http_url_within_the_limit_and_its_form_is_stable(input in urlish()) {
        if let Ok(url) = TargetUrl::parse(&input) {
            prop_assert!(input.len() <= MAX_URL_BYTES);
            let reparsed = url::Url::parse(&input).expect("accepted, so it parses");
            prop_assert!(matches!(reparsed.scheme(), "http" | "https"));
            let out = url.as_str();
            prop_assert!(out.starts_with("http://") || out.starts_with("https://"), "{out}");
            prop_assert!(out.len() <= MAX_URL_BYTES);
            prop_assert!(out.bytes().all(|b| b.is_ascii_graphic()), "{out:?}");
            // Idempotent: the normalised form is accepted and normalises to itself.
            prop_assert_eq!(TargetUrl::parse(out).map(TargetUrl::into_string), Ok(out.to_owned()));
        } else {
            let rejected_by_the_contract = input.len() > MAX_URL_BYTES
                || url::Url::parse(&input).map_or(true, |u| {
                    !matches!(u.scheme(), "http" | "https")
                        || u.host_str().is_none_or(str::is_empty)
                        || !u.username().is_empty()
                        || u.password().is_some()
                        || u.as_str().len() > MAX_URL_BYTES
                });
            prop_assert!(rejected_by_the_contract, "rejected {input:?}");
        }
    }

    #[test]
    fn well_formed_http_urls_are_accepted(input in valid_url()) {
        let url = TargetUrl::parse(&input);
        prop_assert!(url.is_ok(), "{input:?}: {url:?}");
    }

    #[test]
    fn urls_matching_the_openapi_pattern_are_accepted(input in unanchored(URL_PATTERN_BODY)) {
        // The document's pattern also refuses `xn--` in the host (a lookahead, which the regex
        // engine behind proptest lacks).
        let authority = input.split("://").nth(1).unwrap().split(['/', '?', '#']).next().unwrap();
        prop_assume!(!authority.to_ascii_lowercase().contains("xn--"));
        prop_assume!(input.len() <= MAX_URL_BYTES);
        let url = TargetUrl::parse(&input);
        prop_assert!(url.is_ok(), "{input:?}: {url:?}");
    }

    #[test]
    fn other_schemes_are_rejected(
        scheme in "[a-zA-Z][a-zA-Z0-9+.-]{0,10}",
        rest in "[a-z]{1,10}\\.[a-z]{2,4}(/[a-z]{0,8})?",
    ) {
        prop_assume!(!scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https"));
        let input = format!("{scheme}://{rest}");
        prop_assert!(TargetUrl::parse(&input).is_err(), "{input:?}");
    }

    #[test]
    fn the_length_limit_holds_around_2048_bytes(
        extra in 0usize..64,
        filler in prop_oneof![Just("a"), Just("é"), Just("%20"), Just(" "), Just("/")],
    ) {
        let head = "https://example.com/";
        let mut input = head.to_owned();
        while input.len() < MAX_URL_BYTES - 32 + extra {
            input.push_str(filler);
        }
        match TargetUrl::parse(&input) {
            Ok(url) => {
                prop_assert!(input.len() <= MAX_URL_BYTES);
                prop_assert!(url.as_str().len() <= MAX_URL_BYTES);
            }
            Err(_) => prop_assert!(
                input.len() > MAX_URL_BYTES
                    || url::Url::parse(&input).unwrap().as_str().len() > MAX_URL_BYTES,
                "{} bytes rejected", input.len()
            ),
        }
    }

    #[test]
    fn a_code_is_accepted_exactly_when_the_contract_allows_it(
        input in prop_oneof![
            "[A-Za-z0-9_-]{1,64}",
            "[A-Za-z0-9_-]{65,80}",
            "[A-Za-z0-9_./%~ -]{0,10}",
            Just("HealthZ".to_owned()),
            Just("V1".to_owned()),
            Just("openapi".to_owned()),
            any::<String>(),
        ]
    ) {
        let parsed = ShortCode::parse(&input);
        prop_assert_eq!(parsed.is_ok(), code_is_valid(&input), "{:?}", input);
        if let Ok(code) = parsed {
            prop_assert_eq!(code.as_str(), input.as_str());
            prop_assert_eq!(code.to_string(), input.clone());
            prop_assert_eq!(ShortCode::parse(code.as_str()), Ok(code));
        }
    }

    #[test]
    fn base62_round_trips_every_u64(n in any::<u64>()) {
        let mut buf = [0u8; 11];
        let s = encode_base62(n, &mut buf).to_owned();
        prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        prop_assert!(s == "0" || !s.starts_with('0'));
        prop_assert_eq!(decode_base62(&s), Some(n));
    }

    #[test]
    fn base62_decoding_inverts_encoding_up_to_leading_zeros(s in "[0-9A-Za-z]{1,12}|\\PC{0,12}") {
        let mut buf = [0u8; 11];
        match decode_base62(&s) {
            Some(n) => {
                let canonical = s.trim_start_matches('0');
                let canonical = if canonical.is_empty() { "0" } else { canonical };
                prop_assert_eq!(encode_base62(n, &mut buf), canonical);
            }
            None => prop_assert!(
                s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric())
                    || s.trim_start_matches('0').len() >= 11,
                "{s:?} refused"
            ),
        }
    }
}

#[test]
fn generated_codes_are_valid_base62_codes() {
    let mut buf = [0u8; 11];
    for _ in 0..20_000 {
        let code = generate();
        let s = code.as_str();
        assert_eq!(s.len(), 7);
        assert!(code_is_valid(s), "{s}");
        let n = decode_base62(s).expect("base62");
        let canonical = s.trim_start_matches('0');
        assert_eq!(
            encode_base62(n, &mut buf),
            if canonical.is_empty() { "0" } else { canonical }
        );
        assert_eq!(ShortCode::parse(s).as_ref(), Ok(&code));
    }
}

// ---- The create body ----

fn json_request(body: Vec<u8>) -> Request<Body> {
    Request::post("/v1/links")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// The extractor alone (one current-thread runtime for all cases).
fn parse_body(rt: &tokio::runtime::Runtime, body: Vec<u8>) -> Result<CreateLink, StatusCode> {
    rt.block_on(JsonBody::<CreateLink>::from_request(
        json_request(body),
        &(),
    ))
    .map(|JsonBody(b)| b)
    .map_err(|e| e.status())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// JSON values up to a small depth (deeper than serde_json's recursion limit is a 400).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        urlish().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}|url|code|ttl_seconds", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies shaped like a create: each field absent, of the right type with hostile values, or of
/// the wrong type.
fn create_body() -> impl Strategy<Value = Value> {
    let url = prop_oneof![
        3 => urlish().prop_map(Value::String),
        3 => valid_url().prop_map(Value::String),
        1 => json_value(),
    ];
    let code = prop_oneof![
        3 => "[A-Za-z0-9_-]{1,64}".prop_map(Value::String),
        1 => prop_oneof![Just("again"), Just("Again-2"), Just("_")].prop_map(Value::from),
        1 => "[A-Za-z0-9_-]{65,70}|\\PC{0,8}".prop_map(Value::String),
        1 => Just(Value::Null),
        1 => json_value(),
    ];
    let ttl = prop_oneof![
        3 => (0u64..=MAX_TTL_SECONDS + 2).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.95, url),
        prop::option::weighted(0.5, code),
        prop::option::weighted(0.5, ttl),
        prop::option::of(("\\PC{1,8}", json_value())),
    )
        .prop_map(|(url, code, ttl, extra)| {
            let mut m = serde_json::Map::new();
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            for (k, v) in [("url", url), ("code", code), ("ttl_seconds", ttl)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn any_bytes_are_a_body_or_a_400_or_422(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "\\PC{0,64}".prop_map(String::into_bytes),
            json_value().prop_map(|v| {
                let mut s = v.to_string().into_bytes();
                s.truncate(s.len() / 2);
                s
            }),
        ]
    ) {
        let rt = runtime();
        let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
        match parse_body(&rt, body) {
            Ok(_) => prop_assert!(well_formed),
            Err(status) if well_formed => prop_assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY),
            Err(status) => prop_assert_eq!(status, StatusCode::BAD_REQUEST),
        }
    }

    #[test]
    fn well_formed_json_is_a_body_or_a_422(value in prop_oneof![json_value(), create_body()]) {
        let rt = runtime();
        let status = parse_body(&rt, value.to_string().into_bytes()).err();
        prop_assert!(
            status.is_none() || status == Some(StatusCode::UNPROCESSABLE_ENTITY),
            "{value}: {status:?}"
        );
    }
}

/// The status the contract gives a create body, from the domain rules alone.
fn expected_status(body: &[u8]) -> StatusCode {
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        return StatusCode::BAD_REQUEST;
    }
    let Ok(create) = serde_json::from_slice::<CreateLink>(body) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    let url_ok = TargetUrl::parse(&create.url).is_ok();
    let code_ok = create.code.as_deref().is_none_or(code_is_valid);
    let ttl_ok = create
        .ttl_seconds
        .is_none_or(|t| (1..=MAX_TTL_SECONDS).contains(&t));
    if url_ok && code_ok && ttl_ok {
        StatusCode::CREATED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

const KEY: &str = "props-key-0123456789abcdef";

#[test]
fn the_create_endpoint_answers_what_the_contract_says_for_generated_bodies() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path()), Clock::system()).unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        access_log: false,
        api_keys: vec![ApiKey {
            name: "props".into(),
            key: Secret::new(KEY.into()),
            admin: false,
        }],
        ..Config::default()
    };
    let router = api_router(AppState::new(&config, store.clone(), Clock::system()));
    let taken = std::cell::RefCell::new(std::collections::HashSet::new());
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let mut runner = proptest::test_runner::TestRunner::new(cases(384));
    let bodies = prop_oneof![
        6 => create_body().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    runner
        .run(&bodies, |body| {
            let mut expected = expected_status(&body);
            let code = serde_json::from_slice::<CreateLink>(&body)
                .ok()
                .and_then(|c| c.code);
            if expected == StatusCode::CREATED
                && let Some(code) = &code
                && !taken.borrow_mut().insert(code.clone())
            {
                expected = StatusCode::CONFLICT;
            }
            let request = Request::post("/v1/links")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
                .body(Body::from(body.clone()))
                .unwrap();
            let response = rt.block_on(router.clone().oneshot(request)).unwrap();
            let status = response.status();
            *statuses.borrow_mut().entry(status.as_u16()).or_default() += 1;
            let bytes = rt
                .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
                .unwrap();
            let json: Value = serde_json::from_slice(&bytes).expect("every answer is JSON");
            prop_assert_eq!(
                status,
                expected,
                "{} -> {}",
                String::from_utf8_lossy(&body),
                json
            );
            if status == StatusCode::CREATED {
                let url = json["url"].as_str().unwrap();
                prop_assert!(TargetUrl::parse(url).is_ok());
                if let Some(code) = code {
                    prop_assert_eq!(json["code"].as_str(), Some(code.as_str()));
                }
            } else {
                prop_assert!(json["error"].is_string() && json["message"].is_string());
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(store.close()).unwrap();
    // The generator reaches every outcome, or the test proves little.
    let statuses = statuses.into_inner();
    for status in [201, 400, 409, 422] {
        assert!(statuses.contains_key(&status), "{statuses:?}");
    }
}

// ---- The token bucket ----

/// Admission instants (ns from the start) of a bucket driven by `steps` of (gap ns, tries).
fn admissions(bucket: &TokenBucket, t0: Instant, steps: &[(u64, u8)]) -> Vec<u64> {
    let mut t = 0u64;
    let mut admitted = Vec::new();
    for &(gap, tries) in steps {
        t += gap;
        for _ in 0..tries {
            if bucket.check(t0 + Duration::from_nanos(t)).is_allowed() {
                admitted.push(t);
            }
        }
    }
    admitted
}

/// Over every window `[a_i, a_j]` between two admissions: `j - i + 1 <= burst + rate * t`.
fn check_window_bound(quota: Quota, admitted: &[u64]) -> Result<(), TestCaseError> {
    let burst = u128::from(quota.effective_burst());
    let rate = u128::from(quota.per_second);
    for i in 0..admitted.len() {
        for j in i..admitted.len() {
            let count = (j - i + 1) as u128;
            let t = u128::from(admitted[j] - admitted[i]);
            // count <= burst + rate * t / 1e9, in integers.
            prop_assert!(
                count.saturating_sub(burst) * 1_000_000_000 <= rate * t,
                "{count} admitted within {t} ns at {quota:?}"
            );
        }
    }
    Ok(())
}

/// Gaps between checks: random, and whole multiples of the emission interval (where rounding
/// of the interval would show).
fn gaps(per_second: u32) -> impl Strategy<Value = Vec<(u64, u8)>> {
    let interval = 1_000_000_000 / u64::from(per_second).clamp(1, 1_000_000_000);
    let gap = prop_oneof![
        Just(0u64),
        0u64..1_000,
        0u64..10_000_000,
        0u64..2_000_000_000,
        (1u64..4).prop_map(move |k| k * interval),
        (1u64..4).prop_map(move |k| k * (interval + 1)),
    ];
    prop::collection::vec((gap, 1u8..6), 1..160)
}

/// Found by `no_window_admits_more_than_burst_plus_rate_times_its_length`: at 24/s the emission
/// interval rounded down (41,666,666 ns) let 11 requests through a window of two intervals with a
/// burst of 9, where 9 + 24 × 0.083333332 s < 11.
#[test]
fn a_rate_that_does_not_divide_a_second_does_not_round_in_the_clients_favour() {
    for per_second in [3, 7, 24, 999_999, 1_000_000_007] {
        let quota = Quota {
            per_second,
            burst: 9,
        };
        let t0 = linkr::ratelimit::now();
        let bucket = TokenBucket::with_base(quota, t0);
        let interval = 1_000_000_000 / u64::from(per_second);
        let steps = [(0, 10), (interval, 4), (interval, 4), (interval + 1, 4)];
        check_window_bound(quota, &admissions(&bucket, t0, &steps)).unwrap();
    }
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn no_window_admits_more_than_burst_plus_rate_times_its_length(
        (per_second, steps) in prop_oneof![
            1u32..20,
            1u32..100_000,
            Just(3),
            Just(7),
            Just(1_000_000_007),
        ]
        .prop_flat_map(|r| (Just(r), gaps(r))),
        burst in 0u32..40,
    ) {
        let quota = Quota { per_second, burst };
        let t0 = linkr::ratelimit::now();
        let bucket = TokenBucket::with_base(quota, t0);
        let admitted = admissions(&bucket, t0, &steps);
        check_window_bound(quota, &admitted)?;
    }

    #[test]
    fn a_bucket_left_alone_admits_its_whole_burst_and_retry_after_is_honest(
        (per_second, steps) in (1u32..1000).prop_flat_map(|r| (Just(r), gaps(r))),
        burst in 0u32..40,
    ) {
        let quota = Quota { per_second, burst };
        let t0 = linkr::ratelimit::now();
        let bucket = TokenBucket::with_base(quota, t0);
        let end: u64 = steps.iter().map(|s| s.0).sum();
        admissions(&bucket, t0, &steps);
        // Long enough to refill completely, whatever came before.
        let full = end + (u64::from(quota.effective_burst()) + 1) * 1_000_000_000;
        let at = t0 + Duration::from_nanos(full);
        for n in 0..quota.effective_burst() {
            let decision = bucket.check(at);
            prop_assert!(decision.is_allowed(), "request {n} of a full bucket denied");
        }
        let denied = bucket.check(at);
        prop_assert!(!denied.is_allowed());
        let wait = denied.retry_after().expect("a denial says when to retry");
        prop_assert!(!bucket.check(at + wait - Duration::from_nanos(1)).is_allowed());
        prop_assert!(bucket.check(at + wait).is_allowed(), "denied again after {wait:?}");
    }

    #[test]
    fn a_keyed_limiter_on_a_mock_clock_keeps_each_key_to_the_bound(
        per_second in 1u32..200,
        burst in 0u32..20,
        steps in prop::collection::vec((0u64..300_000_000, 0usize..3, 1u8..4), 1..120),
    ) {
        let quota = Quota { per_second, burst };
        let (clock, mock) = LimiterClock::mock();
        let limiter = KeyedLimiter::<usize>::with_clock(quota, clock);
        let start = limiter.now();
        let mut admitted = vec![Vec::new(); 3];
        for (gap, key, tries) in steps {
            mock.increment(gap);
            for _ in 0..tries {
                if limiter.check_now(&key).is_allowed() {
                    admitted[key].push((limiter.now() - start).as_nanos() as u64);
                }
            }
            if gap % 7 == 0 {
                // Forgetting idle buckets must not change any decision.
                limiter.retain_recent(limiter.now());
            }
        }
        for times in &admitted {
            check_window_bound(quota, times)?;
        }
    }
}

// ---- Inputs the fuzz targets found, replayed (see fuzz/README.md) ----

#[test]
fn fuzz_regressions_replay() {
    let rt = runtime();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let target = path.file_name().unwrap().to_string_lossy().into_owned();
        for input in std::fs::read_dir(&path).unwrap() {
            let input = std::fs::read(input.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&input);
            match target.as_str() {
                "url" => {
                    if let Ok(url) = TargetUrl::parse(&text) {
                        assert_eq!(
                            TargetUrl::parse(url.as_str()).map(TargetUrl::into_string),
                            Ok(url.as_str().to_owned())
                        );
                    }
                }
                "code" => {
                    assert_eq!(ShortCode::parse(&text).is_ok(), code_is_valid(&text));
                    let _ = decode_base62(&text);
                }
                "create_body" => {
                    let status = parse_body(&rt, input.clone()).err();
                    assert!(
                        matches!(
                            status,
                            None | Some(StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY)
                        ),
                        "{text:?}: {status:?}"
                    );
                }
                other => panic!("regressions for an unknown target {other}"),
            }
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} fuzz regression inputs");
}
