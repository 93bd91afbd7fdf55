//! The request context layer, one tower layer doing what every request needs:
//!
//! - marks `Authorization` sensitive (its `Debug` prints `Sensitive`), so nothing logs it;
//! - takes the request id from `X-Request-ID` (validated) or mints a UUID v4, echoes it;
//! - catches a panic in the handler and answers a JSON 500 (the process lives on);
//! - turns any error response that is not JSON yet (axum's own 404/405/rejections) into
//!   `{"error","message"}`;
//! - writes one access log line per request, when enabled, with the client's address
//!   (`client_ip`: the TCP peer, or what trusted proxies say, see [`crate::client_ip`]).
//!
//! It is a hand-written service with a concrete future: no boxing, no allocation per request
//! (request ids are minted in batches into one shared buffer), and with the access log off it
//! costs a header lookup and a branch.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tower::{Layer, Service};

use crate::client_ip::TrustedProxies;
use crate::error::error_response;
use crate::metrics::RouteLabel;
use crate::telemetry::ACCESS_TARGET;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client-supplied request id that is accepted (a longer one is replaced).
pub const MAX_REQUEST_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestContextLayer {
    access_log: bool,
    route: Option<&'static str>,
    proxies: Option<Arc<TrustedProxies>>,
}

impl RequestContextLayer {
    pub fn new(access_log: bool) -> Self {
        Self {
            access_log,
            route: None,
            proxies: None,
        }
    }

    /// Logs every request under the route pattern `route`, whatever axum matched (for a
    /// service that routes the request itself, in front of the router).
    pub fn for_route(access_log: bool, route: &'static str) -> Self {
        Self {
            route: Some(route),
            ..Self::new(access_log)
        }
    }

    /// Logs as `client_ip` the client `proxies` name (the TCP peer otherwise; nothing when the
    /// server does not pass the peer address).
    pub fn with_trusted_proxies(mut self, proxies: Arc<TrustedProxies>) -> Self {
        self.proxies = Some(proxies);
        self
    }
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            access_log: self.access_log,
            route: self.route,
            proxies: self.proxies.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestContext<S> {
    inner: S,
    access_log: bool,
    route: Option<&'static str>,
    proxies: Option<Arc<TrustedProxies>>,
}

/// The client of `req` for the access log: see [`RequestContextLayer::with_trusted_proxies`].
fn client_ip(req: &Request, proxies: Option<&TrustedProxies>) -> Option<IpAddr> {
    let ConnectInfo(peer) = req.extensions().get::<ConnectInfo<SocketAddr>>()?;
    Some(match proxies {
        Some(proxies) => proxies.client_ip(peer.ip(), req.headers()),
        None => peer.ip().to_canonical(),
    })
}

struct AccessLog {
    method: Method,
    route: RouteLabel,
    client_ip: Option<IpAddr>,
    start: Instant,
    span: tracing::Span,
    /// With `otel` every request gets a span; this says whether its access line is written.
    #[cfg(feature = "otel")]
    write: bool,
    #[cfg(feature = "otel")]
    trace_id: Option<opentelemetry::trace::TraceId>,
}

/// The request span of the `otel` build: named `METHOD route` for OpenTelemetry, a child of
/// the incoming W3C `traceparent`, carrying `trace_id` (so every log line inside has it).
#[cfg(feature = "otel")]
fn traced(
    req: &Request,
    id: &HeaderValue,
    write: bool,
    fixed_route: Option<&'static str>,
    proxies: Option<&TrustedProxies>,
) -> AccessLog {
    use tracing::field::Empty;
    let route = RouteLabel::of(req, fixed_route);
    let route_str = route.as_str();
    let span = tracing::info_span!(
        "request",
        request_id = request_id_str(id),
        trace_id = Empty,
        otel.name = format_args!("{} {route_str}", req.method()),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = req.method().as_str(),
        http.route = route_str,
        http.response.status_code = Empty,
    );
    let trace_id = crate::telemetry::otel::attach(&span, req.headers());
    AccessLog {
        method: req.method().clone(),
        route,
        client_ip: write.then(|| client_ip(req, proxies)).flatten(),
        start: Instant::now(),
        span,
        write,
        trace_id,
    }
}

impl<S> Service<Request> for RequestContext<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ContextFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if let Some(auth) = req.headers_mut().get_mut(AUTHORIZATION) {
            auth.set_sensitive(true);
        }
        let id = match req.headers().get(X_REQUEST_ID) {
            Some(v) if is_valid_request_id(v.as_bytes()) => v.clone(),
            _ => mint_request_id(),
        };
        #[cfg(not(feature = "otel"))]
        let log = self.access_log.then(|| AccessLog {
            method: req.method().clone(),
            route: RouteLabel::of(&req, self.route),
            client_ip: client_ip(&req, self.proxies.as_deref()),
            start: Instant::now(),
            span: tracing::info_span!("request", request_id = request_id_str(&id)),
        });
        #[cfg(feature = "otel")]
        let log = Some(traced(
            &req,
            &id,
            self.access_log,
            self.route,
            self.proxies.as_deref(),
        ));
        let inner = {
            let _entered = log.as_ref().map(|l| l.span.enter());
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
                Ok(fut) => Some(fut),
                Err(panic) => {
                    log_panic(&*panic);
                    None
                }
            }
        };
        ContextFuture {
            inner,
            id: Some(id),
            log,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ContextFuture<F> {
        #[pin]
        inner: Option<F>,
        id: Option<HeaderValue>,
        log: Option<AccessLog>,
    }
}

impl<F> Future for ContextFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let polled = match this.inner.as_mut().as_pin_mut() {
            None => Err(()),
            Some(inner) => {
                let _entered = this.log.as_ref().map(|l| l.span.enter());
                match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => Ok(response),
                    Ok(Poll::Ready(Err(never))) => match never {},
                    Err(panic) => {
                        log_panic(&*panic);
                        Err(())
                    }
                }
            }
        };
        // The inner future panicked or finished: never poll it again.
        this.inner.set(None);
        let mut response = match polled {
            Ok(response) => json_errors(response),
            Err(()) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal server error",
            ),
        };
        let id = this.id.take().unwrap_or_else(mint_request_id);
        #[cfg(feature = "otel")]
        let log = this.log.take().and_then(|log| {
            let status = response.status();
            log.span
                .record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                log.span.record("otel.status_code", "error");
            }
            log.write.then_some(log)
        });
        #[cfg(not(feature = "otel"))]
        let log = this.log.take();
        if let Some(log) = log {
            let latency_us = u64::try_from(log.start.elapsed().as_micros()).unwrap_or(u64::MAX);
            #[cfg(not(feature = "otel"))]
            tracing::info!(
                target: ACCESS_TARGET,
                request_id = request_id_str(&id),
                method = log.method.as_str(),
                route = log.route.as_str(),
                status = response.status().as_u16(),
                latency_us,
                client_ip = log.client_ip.map(tracing::field::display),
                "request"
            );
            #[cfg(feature = "otel")]
            tracing::info!(
                target: ACCESS_TARGET,
                request_id = request_id_str(&id),
                trace_id = log.trace_id.map(tracing::field::display),
                method = log.method.as_str(),
                route = log.route.as_str(),
                status = response.status().as_u16(),
                latency_us,
                client_ip = log.client_ip.map(tracing::field::display),
                "request"
            );
        }
        response.headers_mut().insert(X_REQUEST_ID, id);
        Poll::Ready(Ok(response))
    }
}

fn log_panic(panic: &(dyn std::any::Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)");
    tracing::error!(panic = message, "request handler panicked");
}

/// Error responses that are not JSON yet (axum's 404/405 and extractor rejections) get a JSON
/// body named after their status. Headers such as `Allow` are kept.
fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let replacement = error_response(status, status_kind(status), status_message(status));
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, replacement.into_body())
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

fn status_kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "client_error",
    }
}

fn status_message(status: StatusCode) -> &'static str {
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        return "internal server error";
    }
    status.canonical_reason().unwrap_or("request failed")
}

/// 1 to [`MAX_REQUEST_ID_LEN`] characters of `A-Z a-z 0-9 - _ . : + / =`.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'=')
        })
}

fn request_id_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

const UUID_LEN: usize = 36;
const IDS_PER_BATCH: usize = 128;

thread_local! {
    static MINTED: RefCell<Bytes> = const { RefCell::new(Bytes::new()) };
}

/// A fresh UUID v4 request id. Ids are minted in batches into one buffer, and each id is an
/// O(1) slice of it, so minting allocates once per `IDS_PER_BATCH` ids, not per request.
pub fn mint_request_id() -> HeaderValue {
    MINTED.with(|minted| {
        let mut minted = minted.borrow_mut();
        if minted.len() < UUID_LEN {
            *minted = mint_batch();
        }
        let id = minted.split_to(UUID_LEN);
        HeaderValue::from_maybe_shared(id).expect("a UUID is a valid header value")
    })
}

fn mint_batch() -> Bytes {
    let mut ids = [0u8; UUID_LEN * IDS_PER_BATCH];
    for id in ids.chunks_exact_mut(UUID_LEN) {
        uuid::Uuid::new_v4().hyphenated().encode_lower(id);
    }
    // One allocation holding the ids and their reference count. (A frozen `BytesMut` takes a
    // second one for the count when the first id is split off.)
    Bytes::from_owner(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_distinct_uuids() {
        let ids: std::collections::HashSet<_> = (0..1000)
            .map(|_| mint_request_id().to_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in ids.iter().take(5) {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
        }
    }

    #[test]
    fn request_ids_are_validated() {
        assert!(is_valid_request_id(b"abc-123"));
        assert!(is_valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!is_valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"a b"));
        assert!(!is_valid_request_id(b"x\"}{"));
    }
}
