//! The public API: one module per resource; [`api_router`] puts them together.

pub mod health;
pub mod links;
pub mod openapi;
pub mod redirect;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::handler::Handler;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, get, get_service, post};
use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use tower::{Layer, ServiceBuilder, service_fn};

use crate::app::AppState;
use crate::error::ApiError;
use crate::metrics::{Metrics, MetricsLayer};
use crate::middleware::RequestContextLayer;

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
    let middleware = middleware(state.metrics.clone(), state.access_log);
    // Added after `finish`, so `Router::layer` does not wrap it a second time.
    finish(routes, no_route, middleware.clone())
        .route("/{code}", redirect_route(state.clone(), middleware))
        .with_state(state)
}

/// `GET /{code}`, the hot path, with the middleware around the handler itself. Through
/// `Router::layer` it would cost three allocations more per request: the layer puts the
/// handler's boxed route inside another one, so the inner route is cloned twice and its future
/// boxed. The handler is called as a plain service, which also saves the box axum puts every
/// handler's future in. Other methods get the same 405 as on every route, behind the same
/// middleware.
fn redirect_route(state: AppState, middleware: Middleware) -> MethodRouter<AppState> {
    let redirect = service_fn(move |req: Request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(redirect::redirect(State(state), req).await) }
    });
    get_service(middleware.layer(redirect)).fallback(method_not_allowed.layer(middleware))
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
