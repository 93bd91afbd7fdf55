use std::collections::BTreeSet;

use prometheus_parse::{Scrape, Value};

use crate::support::Harness;

/// The redirect route's label value as it comes out of [`parse`] (see there).
const CODE_ROUTE: &str = "/<code>";

/// Parses an exposition with prometheus-parse.
///
/// prometheus-parse 0.2 matches a label set with `\{[^}]+\}`, so it drops every sample whose
/// label values contain `}`, as axum 0.8 route patterns do (`/{code}`); the exposition itself
/// is valid (Prometheus reads any character in a quoted label value). Braces inside quoted
/// label values are therefore mapped to `<` `>` before parsing.
fn parse(body: &str) -> Scrape {
    let lines = body.lines().map(|line| {
        let mut quoted = false;
        let mut escaped = false;
        let mapped: String = line
            .chars()
            .map(|c| {
                let out = match c {
                    '{' if quoted => '<',
                    '}' if quoted => '>',
                    c => c,
                };
                if c == '"' && !escaped {
                    quoted = !quoted;
                }
                escaped = c == '\\' && !escaped;
                out
            })
            .collect();
        Ok(mapped)
    });
    Scrape::parse(lines).unwrap()
}

async fn scrape_text(h: &Harness) -> String {
    let res = h.client.get(h.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    res.text().await.unwrap()
}

async fn scrape(h: &Harness) -> Scrape {
    parse(&scrape_text(h).await)
}

fn routes_of(s: &Scrape, metric: &str) -> BTreeSet<String> {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter_map(|x| x.labels.get("route").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_codes_are_one_route_label() {
    let h = Harness::start().await;
    for i in 0..1000 {
        let res = h
            .client
            .get(h.app_url(&format!("/c{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
    }
    let res = h
        .client
        .get(h.app_url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let text = scrape_text(&h).await;
    assert!(text.contains(r#"route="/{code}""#));
    assert!(
        !text.contains(r#"route="/c"#),
        "a concrete path became a label"
    );
    let s = parse(&text);
    let mut expected: BTreeSet<String> = linkr::metrics::KNOWN_ROUTES
        .iter()
        .map(|r| r.pattern.replace('{', "<").replace('}', ">"))
        .collect();
    expected.insert("unmatched".into());
    assert_eq!(routes_of(&s, "linkr_http_requests_total"), expected);
    for x in s.samples.iter().filter(|x| x.metric.starts_with("linkr_")) {
        if let Some(route) = x.labels.get("route") {
            assert!(
                !route.starts_with("/c"),
                "concrete path leaked into {}: {route}",
                x.metric
            );
        }
    }

    let redirects = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "linkr_http_requests_total"
                && x.labels.get("route") == Some(CODE_ROUTE)
                && x.labels.get("method") == Some("GET")
                && x.labels.get("status") == Some("3xx")
        })
        .expect("redirect counter");
    assert_eq!(redirects.value, Value::Counter(1000.0));
    let unmatched = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "linkr_http_requests_total" && x.labels.get("route") == Some("unmatched")
        })
        .unwrap();
    assert_eq!(unmatched.labels.get("status"), Some("4xx"));

    let latency = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "linkr_http_request_duration_seconds"
                && x.labels.get("route") == Some(CODE_ROUTE)
        })
        .expect("latency histogram");
    let Value::Histogram(buckets) = &latency.value else {
        panic!("{:?}", latency.value)
    };
    assert!(
        buckets.first().unwrap().less_than <= 0.000_025,
        "{buckets:?}"
    );
    assert!(buckets.iter().any(|b| b.less_than >= 10.0));
    assert_eq!(buckets.last().unwrap().count, 1000.0);

    assert!(routes_of(&s, "linkr_request_allocations").contains(CODE_ROUTE));
    let allocs = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "linkr_request_allocations" && x.labels.get("route") == Some(CODE_ROUTE)
        })
        .unwrap();
    let Value::Histogram(buckets) = &allocs.value else {
        panic!()
    };
    assert_eq!(buckets.last().unwrap().count, 1000.0);
    // The handler formats a Location: every request allocates at least once.
    assert_eq!(
        buckets.iter().find(|b| b.less_than == 0.0).unwrap().count,
        0.0
    );

    for name in [
        "linkr_allocations_total",
        "linkr_allocated_bytes_total",
        "linkr_http_requests_in_flight",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(s.samples.iter().any(|x| x.metric == name), "missing {name}");
    }
    let total = |s: &Scrape| match s
        .samples
        .iter()
        .find(|x| x.metric == "linkr_allocations_total")
        .unwrap()
        .value
    {
        Value::Counter(v) => v,
        ref v => panic!("{v:?}"),
    };
    let first = total(&s);
    assert!(first > 1000.0);
    assert!(
        total(&scrape(&h).await) > first,
        "process allocation total moves"
    );
}

#[tokio::test]
async fn rate_limited_and_store_counters_are_exported() {
    let h = Harness::start().await;
    h.metrics.rate_limited("/v1/links");
    h.metrics.rate_limited("/v1/links");
    h.metrics.observe_store(&linkr::metrics::StoreSample {
        links: 7,
        creates: 9,
        clicks_flushed: 40,
        click_flushes: 3,
        ..Default::default()
    });
    let s = scrape(&h).await;
    let value = |name: &str| {
        s.samples
            .iter()
            .find(|x| x.metric == name && x.labels.get("route").is_none_or(|r| r == "/v1/links"))
            .unwrap_or_else(|| panic!("missing {name}"))
            .value
            .clone()
    };
    assert_eq!(value("linkr_rate_limited_total"), Value::Counter(2.0));
    assert_eq!(value("linkr_store_links"), Value::Gauge(7.0));
    assert_eq!(value("linkr_store_creates_total"), Value::Counter(9.0));
    assert_eq!(
        value("linkr_store_clicks_flushed_total"),
        Value::Counter(40.0)
    );
    assert_eq!(
        value("linkr_store_click_flushes_total"),
        Value::Counter(3.0)
    );
}

#[tokio::test]
async fn counters_with_known_labels_are_exported_at_zero_before_any_request() {
    let h = Harness::start().await;
    let s = scrape(&h).await;
    let sample = |metric: &str, labels: &[(&str, &str)]| {
        s.samples
            .iter()
            .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("missing {metric}{labels:?}"))
            .value
            .clone()
    };
    for route in [CODE_ROUTE, "/v1/links", "/v1/links/<code>"] {
        assert_eq!(
            sample("linkr_rate_limited_total", &[("route", route)]),
            Value::Counter(0.0),
            "{route}"
        );
    }
    assert!(
        !routes_of(&s, "linkr_rate_limited_total").contains("/healthz"),
        "probes are never rate limited"
    );
    for (route, method) in [
        (CODE_ROUTE, "GET"),
        ("/v1/links", "POST"),
        ("/v1/links/<code>", "DELETE"),
    ] {
        for status in ["2xx", "3xx", "4xx", "5xx"] {
            assert_eq!(
                sample(
                    "linkr_http_requests_total",
                    &[("route", route), ("method", method), ("status", status)]
                ),
                Value::Counter(0.0),
                "{method} {route} {status}"
            );
        }
        let Value::Histogram(buckets) = sample(
            "linkr_http_request_duration_seconds",
            &[("route", route), ("method", method)],
        ) else {
            panic!("latency of {method} {route} is not a histogram")
        };
        assert_eq!(buckets.last().unwrap().count, 0.0);
    }
}
