//! Prometheus metrics: RED by route pattern, per-request allocations, process, store and
//! rate-limit counters.
//!
//! Routes are labelled by the pattern axum matched (`/{code}`), never by the concrete path, so a
//! million short codes are one series. Requests that matched no route are labelled `unmatched`.
//! The hot path neither allocates nor locks once a route, method and status class have been
//! seen: each route's labelled children are resolved once and kept in a small append-only
//! table that lookups only read.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tower::{Layer, Service, ServiceExt};

use crate::alloc::{self, AllocCount, Tracked};

/// Route label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";
/// Route label used once the route table is full (more distinct patterns than any router has).
pub const OTHER: &str = "other";

/// A route pattern of linkr's API, the methods it answers, and whether it rate-limits.
#[derive(Debug, Clone, Copy)]
pub struct KnownRoute {
    pub pattern: &'static str,
    pub methods: &'static [&'static str],
    pub rate_limited: bool,
}

/// linkr's API routes. When [`Metrics`] is created each is resolved and its counters with
/// known labels start at 0 (requests by method and status class, latency by method, 429s), so
/// that rates and ratios over them exist before the first such request.
pub const KNOWN_ROUTES: &[KnownRoute] = &[
    KnownRoute::new("/{code}", &["GET"], true),
    KnownRoute::new("/v1/links", &["POST"], true),
    KnownRoute::new("/v1/links/{code}", &["GET", "DELETE"], true),
    KnownRoute::new("/healthz", &["GET"], false),
    KnownRoute::new("/readyz", &["GET"], false),
    KnownRoute::new("/startupz", &["GET"], false),
    KnownRoute::new("/openapi.json", &["GET"], false),
];

impl KnownRoute {
    const fn new(
        pattern: &'static str,
        methods: &'static [&'static str],
        rate_limited: bool,
    ) -> Self {
        Self {
            pattern,
            methods,
            rate_limited,
        }
    }
}

/// Status classes a request counter starts at 0 with (a response is never 1xx).
const INITIAL_STATUS_CLASSES: std::ops::Range<usize> = 1..5;

/// Latency buckets in seconds: 25 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of allocation calls per request.
pub const ALLOC_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];
/// Buckets of allocated bytes per request.
pub const ALLOC_BYTES_BUCKETS: &[f64] = &[
    0.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
];

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "OTHER",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const ROUTE_CAPACITY: usize = 64;

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn status_index(s: StatusCode) -> usize {
    (usize::from(s.as_u16() / 100)).clamp(1, 5) - 1
}

/// Store counters fed at scrape time (field for field the store's `StoreStats`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreSample {
    pub links: u64,
    pub creates: u64,
    pub deletes: u64,
    pub commits: u64,
    pub clicks_flushed: u64,
    pub click_flushes: u64,
    pub flush_errors: u64,
    pub purged: u64,
}

/// One route's requests, allocations and rate limiting, as seen by [`Metrics::routes`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteAllocs {
    pub route: String,
    pub requests: u64,
    pub allocations: u64,
    pub bytes: u64,
    pub allocations_per_request: f64,
    pub bytes_per_request: f64,
}

struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    req_allocs: HistogramVec,
    req_bytes: HistogramVec,
    rate_limited: IntCounterVec,
}

struct RouteMetrics {
    pattern: Box<str>,
    requests: [[OnceLock<IntCounter>; STATUS_CLASSES.len()]; METHODS.len()],
    duration: [OnceLock<Histogram>; METHODS.len()],
    allocs: Histogram,
    bytes: Histogram,
    rate_limited: OnceLock<IntCounter>,
}

impl RouteMetrics {
    fn new(pattern: &str, f: &Families) -> Self {
        Self {
            pattern: pattern.into(),
            requests: Default::default(),
            duration: Default::default(),
            allocs: f.req_allocs.with_label_values(&[pattern]),
            bytes: f.req_bytes.with_label_values(&[pattern]),
            rate_limited: OnceLock::new(),
        }
    }

    /// Creates the series of `known` at 0.
    fn init(&self, known: &KnownRoute, f: &Families) {
        for method in known.methods {
            let m = METHODS
                .iter()
                .position(|x| x == method)
                .unwrap_or(METHODS.len() - 1);
            for class in INITIAL_STATUS_CLASSES {
                self.requests(f, m, class);
            }
            self.duration(f, m);
        }
        if known.rate_limited {
            self.rate_limited(f);
        }
    }

    fn requests(&self, f: &Families, method: usize, class: usize) -> &IntCounter {
        self.requests[method][class].get_or_init(|| {
            f.requests
                .with_label_values(&[&*self.pattern, METHODS[method], STATUS_CLASSES[class]])
        })
    }

    fn duration(&self, f: &Families, method: usize) -> &Histogram {
        self.duration[method].get_or_init(|| {
            f.duration
                .with_label_values(&[&*self.pattern, METHODS[method]])
        })
    }

    fn rate_limited(&self, f: &Families) -> &IntCounter {
        self.rate_limited
            .get_or_init(|| f.rate_limited.with_label_values(&[&*self.pattern]))
    }

    fn observe(
        &self,
        f: &Families,
        method: usize,
        status: StatusCode,
        took: Duration,
        a: AllocCount,
    ) {
        self.requests(f, method, status_index(status)).inc();
        self.duration(f, method).observe(took.as_secs_f64());
        self.allocs.observe(a.allocs as f64);
        self.bytes.observe(a.bytes as f64);
    }
}

/// Append-only table of routes: lookups only load, inserts (first sight of a pattern) lock.
struct RouteTable {
    slots: [OnceLock<RouteMetrics>; ROUTE_CAPACITY],
    len: AtomicUsize,
    insert: Mutex<()>,
}

impl RouteTable {
    fn find(&self, pattern: &str) -> Option<&RouteMetrics> {
        let len = self.len.load(Ordering::Acquire);
        self.slots[..len]
            .iter()
            .filter_map(OnceLock::get)
            .find(|r| &*r.pattern == pattern)
    }

    fn get_or_insert(&self, pattern: &str, f: &Families) -> &RouteMetrics {
        if let Some(r) = self.find(pattern) {
            return r;
        }
        let other = || self.find(OTHER).expect("`other` is inserted first");
        if self.len.load(Ordering::Acquire) == ROUTE_CAPACITY {
            return other();
        }
        let guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self.find(pattern) {
            return r;
        }
        let len = self.len.load(Ordering::Acquire);
        if len == ROUTE_CAPACITY {
            return other();
        }
        let r = self.slots[len].get_or_init(|| RouteMetrics::new(pattern, f));
        self.len.store(len + 1, Ordering::Release);
        drop(guard);
        r
    }

    fn iter(&self) -> impl Iterator<Item = &RouteMetrics> {
        let len = self.len.load(Ordering::Acquire);
        self.slots[..len].iter().filter_map(OnceLock::get)
    }
}

/// Counters whose values are read from elsewhere at scrape time.
struct Pulled {
    allocs: IntCounter,
    bytes: IntCounter,
    store_links: IntGauge,
    store_creates: IntCounter,
    store_deletes: IntCounter,
    store_commits: IntCounter,
    clicks_flushed: IntCounter,
    click_flushes: IntCounter,
    flush_errors: IntCounter,
    purged: IntCounter,
}

/// Brings a counter up to an externally kept cumulative value (never down).
fn catch_up(c: &IntCounter, value: u64) {
    let cur = c.get();
    if value > cur {
        c.inc_by(value - cur);
    }
}

/// The service's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    families: Families,
    in_flight: IntGauge,
    routes: RouteTable,
    pulled: Mutex<Pulled>,
    started: Instant,
}

impl Metrics {
    /// A fresh registry with every linkr metric and the process collector.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::build().expect("metric definitions are valid and unique"))
    }

    fn build() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| registry.register(c);

        let requests = IntCounterVec::new(
            Opts::new(
                "linkr_http_requests_total",
                "HTTP requests by route pattern, method and status class.",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "linkr_http_request_duration_seconds",
                "Time from request to response head, by route pattern and method.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let req_allocs = HistogramVec::new(
            HistogramOpts::new(
                "linkr_request_allocations",
                "Heap allocations made while handling one request, by route pattern.",
            )
            .buckets(ALLOC_BUCKETS.to_vec()),
            &["route"],
        )?;
        let req_bytes = HistogramVec::new(
            HistogramOpts::new(
                "linkr_request_allocated_bytes",
                "Bytes allocated while handling one request, by route pattern.",
            )
            .buckets(ALLOC_BYTES_BUCKETS.to_vec()),
            &["route"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "linkr_rate_limited_total",
                "Requests refused with 429, by route pattern.",
            ),
            &["route"],
        )?;
        let in_flight = IntGauge::new("linkr_http_requests_in_flight", "Requests being handled.")?;

        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let pulled = Pulled {
            allocs: counter(
                "linkr_allocations_total",
                "Heap allocations (alloc, alloc_zeroed, realloc) since start, whole process.",
            )?,
            bytes: counter(
                "linkr_allocated_bytes_total",
                "Bytes requested from the allocator since start, whole process.",
            )?,
            store_links: IntGauge::new("linkr_store_links", "Links in the store.")?,
            store_creates: counter("linkr_store_creates_total", "Links created.")?,
            store_deletes: counter("linkr_store_deletes_total", "Links deleted.")?,
            store_commits: counter(
                "linkr_store_commits_total",
                "Durable store commits (one group commit may hold many creates).",
            )?,
            clicks_flushed: counter(
                "linkr_store_clicks_flushed_total",
                "Clicks written to the store by click flushes.",
            )?,
            click_flushes: counter("linkr_store_click_flushes_total", "Click flushes.")?,
            flush_errors: counter(
                "linkr_store_click_flush_errors_total",
                "Failed click flushes.",
            )?,
            purged: counter("linkr_store_purged_total", "Expired links purged.")?,
        };

        reg(Box::new(requests.clone()))?;
        reg(Box::new(duration.clone()))?;
        reg(Box::new(req_allocs.clone()))?;
        reg(Box::new(req_bytes.clone()))?;
        reg(Box::new(rate_limited.clone()))?;
        reg(Box::new(in_flight.clone()))?;
        reg(Box::new(pulled.allocs.clone()))?;
        reg(Box::new(pulled.bytes.clone()))?;
        reg(Box::new(pulled.store_links.clone()))?;
        reg(Box::new(pulled.store_creates.clone()))?;
        reg(Box::new(pulled.store_deletes.clone()))?;
        reg(Box::new(pulled.store_commits.clone()))?;
        reg(Box::new(pulled.clicks_flushed.clone()))?;
        reg(Box::new(pulled.click_flushes.clone()))?;
        reg(Box::new(pulled.flush_errors.clone()))?;
        reg(Box::new(pulled.purged.clone()))?;
        #[cfg(target_os = "linux")]
        reg(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let families = Families {
            requests,
            duration,
            req_allocs,
            req_bytes,
            rate_limited,
        };
        let routes = RouteTable {
            slots: [const { OnceLock::new() }; ROUTE_CAPACITY],
            len: AtomicUsize::new(0),
            insert: Mutex::new(()),
        };
        for pattern in [OTHER, UNMATCHED] {
            routes.get_or_insert(pattern, &families);
        }
        for known in KNOWN_ROUTES {
            routes
                .get_or_insert(known.pattern, &families)
                .init(known, &families);
        }
        Ok(Self {
            registry,
            families,
            in_flight,
            routes,
            pulled: Mutex::new(pulled),
            started: Instant::now(),
        })
    }

    /// The registry, for callers that register metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn route(&self, pattern: Option<&str>) -> &RouteMetrics {
        self.routes
            .get_or_insert(pattern.unwrap_or(UNMATCHED), &self.families)
    }

    /// Records one finished request (what [`MetricsLayer`] does after each response).
    pub fn observe_request(
        &self,
        route: Option<&str>,
        method: &Method,
        status: StatusCode,
        took: Duration,
        allocs: AllocCount,
    ) {
        self.route(route)
            .observe(&self.families, method_index(method), status, took, allocs);
    }

    /// Counts a request refused by the rate limiter; `route` is the matched route pattern.
    pub fn rate_limited(&self, route: &str) {
        self.route(Some(route)).rate_limited(&self.families).inc();
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Feeds the store's cumulative counters (called at scrape time by the admin router).
    pub fn observe_store(&self, s: &StoreSample) {
        let p = self.pulled.lock().unwrap_or_else(|e| e.into_inner());
        p.store_links
            .set(i64::try_from(s.links).unwrap_or(i64::MAX));
        catch_up(&p.store_creates, s.creates);
        catch_up(&p.store_deletes, s.deletes);
        catch_up(&p.store_commits, s.commits);
        catch_up(&p.clicks_flushed, s.clicks_flushed);
        catch_up(&p.click_flushes, s.click_flushes);
        catch_up(&p.flush_errors, s.flush_errors);
        catch_up(&p.purged, s.purged);
    }

    /// Prometheus text exposition of every metric (process allocation totals read now).
    pub fn render(&self) -> String {
        {
            let p = self.pulled.lock().unwrap_or_else(|e| e.into_inner());
            let t = alloc::total();
            catch_up(&p.allocs, t.allocs);
            catch_up(&p.bytes, t.bytes);
        }
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// Requests and allocations of every route that has served at least one request.
    pub fn routes(&self) -> Vec<RouteAllocs> {
        self.routes
            .iter()
            .filter_map(|r| {
                let requests = r.allocs.get_sample_count();
                let allocations = r.allocs.get_sample_sum() as u64;
                let bytes = r.bytes.get_sample_sum() as u64;
                (requests > 0).then(|| RouteAllocs {
                    route: r.pattern.to_string(),
                    requests,
                    allocations,
                    bytes,
                    allocations_per_request: allocations as f64 / requests as f64,
                    bytes_per_request: bytes as f64 / requests as f64,
                })
            })
            .collect()
    }

    /// Time since these metrics were created.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Counts a request as in flight until dropped (also when the request is cancelled).
struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The route label of one request: the pattern axum matched, or a pattern fixed by the
/// service that routed the request itself (the redirect fast path).
#[derive(Clone)]
pub enum RouteLabel {
    Matched(MatchedPath),
    Fixed(&'static str),
    Unmatched,
}

impl RouteLabel {
    /// The label of `req` for a service installed with `fixed` (see [`MetricsLayer::for_route`]).
    pub fn of<B>(req: &axum::http::Request<B>, fixed: Option<&'static str>) -> Self {
        match fixed {
            Some(pattern) => Self::Fixed(pattern),
            None => req
                .extensions()
                .get::<MatchedPath>()
                .map_or(Self::Unmatched, |m| Self::Matched(m.clone())),
        }
    }

    /// The pattern; `None` when no route matched.
    pub fn pattern(&self) -> Option<&str> {
        match self {
            Self::Matched(m) => Some(m.as_str()),
            Self::Fixed(p) => Some(p),
            Self::Unmatched => None,
        }
    }

    /// The pattern, or [`UNMATCHED`].
    pub fn as_str(&self) -> &str {
        self.pattern().unwrap_or(UNMATCHED)
    }
}

/// Middleware: RED metrics and per-request allocations by route pattern.
///
/// Install through `Router::layer` or on a handler, where routing has happened, so that the
/// matched path is known; or with [`MetricsLayer::for_route`] around a service that is only
/// ever called for one route. Allocations are charged from the call of the inner service to its
/// response head; a body streamed afterwards is not included. The middleware itself does not
/// allocate: its future holds the inner one unboxed.
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
    route: Option<&'static str>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            route: None,
        }
    }

    /// Records every request under the route pattern `route`, whatever axum matched (for a
    /// service that routes the request itself, in front of the router).
    pub fn for_route(metrics: Arc<Metrics>, route: &'static str) -> Self {
        Self {
            metrics,
            route: Some(route),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: Arc::clone(&self.metrics),
            route: self.route,
        }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    route: Option<&'static str>,
}

impl<S> Service<Request> for MetricsService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = RouteLabel::of(&req, self.route);
        let method = method_index(req.method());
        let in_flight = InFlight::enter(&self.metrics.in_flight);
        let start = Instant::now();
        let (inner, allocs_in_call) = alloc::count(|| self.inner.call(req));
        MetricsFuture {
            inner: alloc::track(inner),
            allocs_in_call,
            metrics: Arc::clone(&self.metrics),
            route,
            method,
            start,
            in_flight: Some(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`MetricsService`].
    pub struct MetricsFuture<F> {
        #[pin]
        inner: Tracked<F>,
        allocs_in_call: AllocCount,
        metrics: Arc<Metrics>,
        route: RouteLabel,
        method: usize,
        start: Instant,
        in_flight: Option<InFlight>,
    }
}

impl<F> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (Ok(response), allocs) = ready!(this.inner.poll(cx));
        this.metrics.route(this.route.pattern()).observe(
            &this.metrics.families,
            *this.method,
            response.status(),
            this.start.elapsed(),
            *this.allocs_in_call + allocs,
        );
        this.in_flight.take();
        Poll::Ready(Ok(response))
    }
}

/// [`MetricsLayer`] as a function for `axum::middleware::from_fn_with_state(metrics,
/// track_request)`, for apps that assemble their middleware that way. It records the same
/// metrics; `from_fn` itself boxes and clones per request.
pub async fn track_request(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(response) = MetricsLayer::new(metrics).layer(next).oneshot(req).await;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_index(StatusCode::FOUND)], "3xx");
        assert_eq!(STATUS_CLASSES[status_index(StatusCode::CONTINUE)], "1xx");
        assert_eq!(
            STATUS_CLASSES[status_index(StatusCode::INTERNAL_SERVER_ERROR)],
            "5xx"
        );
    }

    #[test]
    fn known_route_lookup_does_not_allocate() {
        let m = Metrics::new();
        m.observe_request(
            Some("/{code}"),
            &Method::GET,
            StatusCode::FOUND,
            Duration::ZERO,
            AllocCount::default(),
        );
        let ((), n) = alloc::count(|| {
            for _ in 0..100 {
                m.observe_request(
                    Some("/{code}"),
                    &Method::GET,
                    StatusCode::FOUND,
                    Duration::from_micros(40),
                    AllocCount {
                        allocs: 0,
                        bytes: 0,
                    },
                );
            }
        });
        assert_eq!(n.allocs, 0);
    }

    #[test]
    fn route_table_overflows_into_other() {
        let m = Metrics::new();
        for i in 0..2 * ROUTE_CAPACITY {
            m.observe_request(
                Some(&format!("/r{i}")),
                &Method::GET,
                StatusCode::OK,
                Duration::ZERO,
                AllocCount::default(),
            );
        }
        let routes = m.routes();
        assert!(routes.len() <= ROUTE_CAPACITY);
        assert!(routes.iter().any(|r| r.route == OTHER));
    }

    #[test]
    fn counters_with_known_labels_start_at_zero() {
        let text = Metrics::new().render();
        for series in [
            r#"linkr_rate_limited_total{route="/{code}"} 0"#,
            r#"linkr_rate_limited_total{route="/v1/links"} 0"#,
            r#"linkr_rate_limited_total{route="/v1/links/{code}"} 0"#,
            r#"linkr_http_requests_total{method="GET",route="/{code}",status="5xx"} 0"#,
            r#"linkr_http_requests_total{method="DELETE",route="/v1/links/{code}",status="4xx"} 0"#,
            r#"linkr_http_requests_total{method="GET",route="/healthz",status="2xx"} 0"#,
            r#"linkr_http_request_duration_seconds_count{method="POST",route="/v1/links"} 0"#,
            r#"linkr_request_allocations_count{route="/openapi.json"} 0"#,
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
        assert!(!text.contains(r#"linkr_rate_limited_total{route="/healthz"}"#));
        assert!(!text.contains(r#"status="1xx""#));
    }

    #[test]
    fn render_has_families() {
        let m = Metrics::new();
        m.rate_limited("/v1/links");
        m.observe_store(&StoreSample {
            links: 3,
            creates: 5,
            ..Default::default()
        });
        let text = m.render();
        for name in [
            "linkr_allocations_total",
            "linkr_allocated_bytes_total",
            "linkr_rate_limited_total{route=\"/v1/links\"} 1",
            "linkr_store_links 3",
            "linkr_store_creates_total 5",
            "linkr_http_requests_in_flight 0",
            "process_cpu_seconds_total",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
