//! The public API: one module per resource; [`api_router`] puts them together.

pub mod health;
pub mod links;
pub mod openapi;
pub mod redirect;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::handler::Handler;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method};
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::routing::{MethodRouter, get, get_service, post};
use bytes::Bytes;
use hyper::body::Incoming;
use serde::de::{DeserializeOwned, IgnoredAny};
use tower::{Layer, Service, ServiceBuilder};

use crate::app::AppState;
use crate::error::ApiError;
use crate::metrics::{KNOWN_ROUTES, Metrics, MetricsLayer, MetricsService};
use crate::middleware::{RequestContext, RequestContextLayer};
use crate::server::{App, BodyLimit};
use redirect::{Redirect, RedirectHead};

pub use health::Health;

/// Largest accepted request body (bytes); more is a 413.
pub const BODY_LIMIT: usize = 16 * 1024;

/// linkr's middleware, outermost first: metrics by route pattern, then the request context
/// (request id, panic to JSON 500, JSON error bodies, access log).
pub type Middleware = (MetricsLayer, RequestContextLayer);

/// [`Middleware`] recording into `metrics`, writing access log lines when `access_log`.
pub fn middleware(metrics: Arc<Metrics>, access_log: bool) -> Middleware {
    (
        MetricsLayer::new(metrics),
        RequestContextLayer::new(access_log),
    )
}

/// Every public route with its middleware. Used by [`crate::app::run`] and in-process by
/// benchmarks and tests (`tower::ServiceExt::oneshot`).
///
/// Every route gets [`Middleware`]: through one `Router::layer` call, except the redirect (see
/// `redirect_route`). The redirect route has nothing else; `/v1/*` adds the body limit and
/// authentication with the per-key rate limit inside it.
pub fn api_router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/links", post(links::create))
        .route("/v1/links/{code}", get(links::stats).delete(links::delete))
        .route_layer(
            ServiceBuilder::new()
                .layer(DefaultBodyLimit::max(BODY_LIMIT))
                .layer(from_fn_with_state(
                    state.clone(),
                    crate::auth::require_api_key,
                )),
        );
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/startupz", get(health::startupz))
        .route("/openapi.json", get(openapi::serve))
        .merge(v1);
    let middleware = (
        MetricsLayer::new(state.metrics.clone()),
        RequestContextLayer::new(state.access_log)
            .with_trusted_proxies(state.trusted_proxies.clone()),
    );
    // Added after `finish`, so `Router::layer` does not wrap it a second time.
    finish(routes, no_route, middleware.clone())
        .route("/{code}", redirect_route(state.clone(), middleware))
        .with_state(state)
}

/// `GET /{code}`, the hot path, with the middleware around the handler itself. Through
/// `Router::layer` it would cost three allocations more per request: the layer puts the
/// handler's boxed route inside another one, so the inner route is cloned twice and its future
/// boxed. The handler is called as a plain service, which also saves the box axum puts every
/// handler's future in. `HEAD` has a service of its own (the same answer, no click counted);
/// other methods get the same 405 as on every route, behind the same middleware.
fn redirect_route(state: AppState, middleware: Middleware) -> MethodRouter<AppState> {
    get_service(middleware.clone().layer(Redirect(state.clone())))
        .head_service(middleware.clone().layer(RedirectHead(state)))
        .fallback(method_not_allowed.layer(middleware))
}

/// The route pattern of the redirect.
pub const REDIRECT_ROUTE: &str = "/{code}";

/// The redirect handler behind linkr's middleware, recording under [`REDIRECT_ROUTE`].
pub type RedirectStack = MetricsService<RequestContext<Redirect>>;

/// What the main listener serves once the store is loaded: [`api_router`] with a fast path in
/// front of it for the requests its `/{code}` route would get with `GET` (one path segment
/// that is not a static route, no body). Those go straight to the redirect handler behind the
/// same middleware, recording the same route label, without axum's routing: no route lookup,
/// no request extensions (`OriginalUri`, `MatchedPath`, URL parameters: six allocations), no
/// boxed route clone and boxed future. Everything else, `HEAD /{code}` included, goes through
/// the router as before.
#[derive(Clone)]
pub struct Api {
    router: Router,
    redirect: RedirectStack,
}

/// [`Api`] for `state`.
pub fn api(state: AppState) -> Api {
    let redirect = (
        MetricsLayer::for_route(state.metrics.clone(), REDIRECT_ROUTE),
        RequestContextLayer::for_route(state.access_log, REDIRECT_ROUTE)
            .with_trusted_proxies(state.trusted_proxies.clone()),
    )
        .layer(Redirect(state.clone()));
    Api {
        router: api_router(state),
        redirect,
    }
}

/// Whether the router would send `req` to the redirect handler: `GET` on `/{code}` (one
/// non-empty path segment, not one of the static single-segment routes) with no body.
pub fn is_redirect<B: HttpBody>(req: &axum::http::Request<B>) -> bool {
    if req.method() != Method::GET || !req.body().is_end_stream() {
        return false;
    }
    let Some(code) = req.uri().path().strip_prefix('/') else {
        return false;
    };
    !code.is_empty()
        && !code.contains('/')
        && !KNOWN_ROUTES
            .iter()
            .any(|r| r.pattern.strip_prefix('/') == Some(code))
}

impl Api {
    /// Serves one request: the fast path for redirects, the router otherwise.
    pub fn serve_request<B>(&self, req: axum::http::Request<B>) -> ApiFuture
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if is_redirect(&req) {
            self.redirect_now(req)
        } else {
            self.route(req)
        }
    }

    /// The fast path, for a request [`is_redirect`] accepted.
    fn redirect_now<B>(&self, req: axum::http::Request<B>) -> ApiFuture {
        // No body (checked): dropping it now is what the handler did with it.
        let req = req.map(|_| Body::empty());
        ApiFuture::Redirect {
            inner: self.redirect.clone().call(req),
        }
    }

    fn route<B>(&self, req: axum::http::Request<B>) -> ApiFuture
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        ApiFuture::Router {
            inner: self.router.clone().call(req),
        }
    }

    /// The router behind the fast path.
    pub fn router(&self) -> &Router {
        &self.router
    }
}

impl App for Api {
    type Future = ApiFuture;

    /// [`Api::serve_request`]; the body gets its limit only off the fast path, which drops it
    /// unread (so a redirect's request is not rebuilt around a new body type).
    fn serve(&self, req: axum::http::Request<Incoming>, body: BodyLimit) -> ApiFuture {
        if is_redirect(&req) {
            self.redirect_now(req)
        } else {
            self.route(req.map(|b| body.wrap(b)))
        }
    }
}

impl<B> Service<axum::http::Request<B>> for Api
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ApiFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> ApiFuture {
        self.serve_request(req)
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`Api`].
    #[project = ApiFutureProj]
    pub enum ApiFuture {
        Redirect { #[pin] inner: <RedirectStack as Service<Request>>::Future },
        Router { #[pin] inner: RouteFuture<Infallible> },
    }
}

impl Future for ApiFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ApiFutureProj::Redirect { inner } => inner.poll(cx),
            ApiFutureProj::Router { inner } => inner.poll(cx),
        }
    }
}

/// What the main listener serves while the store loads: probes answer, everything else is 503.
pub fn startup_router(health: Arc<Health>, metrics: Arc<Metrics>, access_log: bool) -> Router {
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz_starting))
        .route("/startupz", get(health::startupz_starting))
        .route("/openapi.json", get(openapi::serve));
    finish(routes, starting, middleware(metrics, access_log)).with_state(health)
}

fn finish<S, H, T>(routes: Router<S>, fallback: H, middleware: Middleware) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    routes
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware)
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn starting() -> ApiError {
    ApiError::Unavailable("the service is starting")
}

/// A JSON request body, told apart precisely: a wrong content type is 415, more than
/// [`BODY_LIMIT`] bytes is 413, malformed JSON is 400, well-formed JSON of the wrong shape 422.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(BODY_LIMIT)
            } else {
                ApiError::InvalidJson(e.body_text())
            }
        })?;
        if let Err(e) = serde_json::from_slice::<IgnoredAny>(&bytes) {
            return Err(ApiError::InvalidJson(format!("malformed JSON: {e}")));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::InvalidRequest(format!("invalid request body: {e}")))
    }
}

/// `application/json` or `application/<anything>+json`, parameters ignored.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some(subtype) = essence
        .get(..12)
        .filter(|t| t.eq_ignore_ascii_case("application/"))
        .map(|_| &essence[12..])
    else {
        return false;
    };
    subtype.eq_ignore_ascii_case("json")
        || subtype
            .len()
            .checked_sub(5)
            .and_then(|i| subtype.get(i..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"))
}
