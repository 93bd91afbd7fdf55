//! `GET /{code}`: the hot path. No JSON, no allocation of ours, no per-request formatting: the
//! `Location` header is the `Bytes` the store keeps for the link, and the response's header map
//! is the request's, cleared (hyper hands each request the map of the connection's previous
//! response, so on a keep-alive connection the redirect allocates no header map at all).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tower::Service;

use crate::app::AppState;
use crate::domain::code::MAX_CODE_LEN;
use crate::error::{ApiError, ErrorBody};
use crate::ratelimit::client_key;
use crate::store::Lookup;

/// Redirects to the link's target and counts a click (`HEAD` counts none).
#[utoipa::path(get, path = "/{code}", tag = "links",
    params(("code" = String, Path, description = "Short code")),
    responses(
        (status = 302, description = "Redirect to the target URL",
            headers(("Location" = String, description = "The target URL"))),
        (status = 404, description = "Unknown code", body = ErrorBody),
        (status = 410, description = "The link has expired", body = ErrorBody),
        (status = 429, description = "Rate limit for this client IP exceeded", body = ErrorBody)))]
// The router serves `/{code}` with [`Redirect`] and [`RedirectHead`]; this function is the
// operation the OpenAPI document describes, answering as they do.
pub async fn redirect(State(state): State<AppState>, req: Request) -> Response {
    let answered = if req.method() == Method::HEAD {
        RedirectHead(state).call(req)
    } else {
        Redirect(state).call(req)
    };
    match answered.await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The redirect handler as a service whose future can be named (the fast path in front of the
/// router holds it unboxed): answered within `call`, except a miss of the scale-out store.
#[derive(Clone)]
pub struct Redirect(pub AppState);

/// `HEAD /{code}`: answered as [`Redirect`] answers `GET`, without counting a click (link
/// previews and monitors are not visits). A service of its own, so that `GET` pays no test.
#[derive(Clone)]
pub struct RedirectHead(pub AppState);

macro_rules! redirect_service {
    ($service:ty, $visit:literal) => {
        impl tower::Service<Request> for $service {
            type Response = Response;
            type Error = Infallible;
            type Future = RedirectFuture;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, req: Request) -> RedirectFuture {
                match answer::<$visit>(&self.0, req) {
                    Answer::Now(response) => RedirectFuture::Ready(Some(response)),
                    Answer::Remote(code) => {
                        let state = self.0.clone();
                        RedirectFuture::Remote(Box::pin(async move {
                            resolve_remote(&state, &code, $visit).await
                        }))
                    }
                }
            }
        }
    };
}

redirect_service!(Redirect, true);
redirect_service!(RedirectHead, false);

/// Response future of [`Redirect`].
pub enum RedirectFuture {
    Ready(Option<Response>),
    /// The scale-out store's miss path (Redis, then Postgres), boxed: not the hot path.
    Remote(Pin<Box<dyn Future<Output = Response> + Send>>),
}

impl Future for RedirectFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(response) => Poll::Ready(Ok(response
                .take()
                .expect("RedirectFuture polled after completion"))),
            Self::Remote(remote) => remote.as_mut().poll(cx).map(Ok),
        }
    }
}

enum Answer {
    Now(Response),
    /// Not in the index of the scale-out store: ask Redis and Postgres.
    Remote(String),
}

/// Everything the redirect does without waiting; a `VISIT` counts a click.
#[inline(always)]
fn answer<const VISIT: bool>(state: &AppState, req: Request) -> Answer {
    if let Some(limiter) = &state.ip_limiter
        && let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>()
    {
        let client = state.trusted_proxies.client_ip(peer.ip(), req.headers());
        let decision = limiter.check_now(&client_key(client));
        if !decision.is_allowed() {
            state.metrics.rate_limited("/{code}");
            return Answer::Now(ApiError::RateLimited(decision).into_response());
        }
    }
    let (parts, _body) = req.into_parts();
    let mut buf = [0u8; MAX_CODE_LEN];
    let Some(code) = code_from_path(parts.uri.path(), &mut buf) else {
        return Answer::Now(ApiError::NotFound.into_response());
    };
    let lookup = if VISIT {
        state.store.resolve(code)
    } else {
        state.store.peek(code)
    };
    Answer::Now(match lookup {
        Lookup::Found(location) => found(code, location, parts.headers),
        Lookup::Expired => ApiError::Gone.into_response(),
        Lookup::Missing if state.store.is_remote() => {
            return Answer::Remote(code.to_owned());
        }
        Lookup::Missing => ApiError::NotFound.into_response(),
    })
}

/// A 302 to the stored location, shared as the header's bytes, in `headers` (the request's
/// header map, cleared: its capacity is reused).
// Forced inline: as a call it cost the redirect 21 instructions (`scripts/bench.sh gate`).
#[inline(always)]
fn found(code: &str, location: Bytes, mut headers: HeaderMap) -> Response {
    match HeaderValue::from_maybe_shared(location) {
        Ok(location) => {
            headers.clear();
            headers.insert(LOCATION, location);
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::FOUND;
            *response.headers_mut() = headers;
            response
        }
        Err(_) => ApiError::Internal(format!("stored location of {code:?} is not a header value"))
            .into_response(),
    }
}

/// The miss path of the scale-out store: Redis, then Postgres (not the hot path).
async fn resolve_remote(state: &AppState, code: &str, visit: bool) -> Response {
    match state.store.lookup_remote(code, visit).await {
        Ok(Lookup::Found(location)) => found(code, location, HeaderMap::new()),
        Ok(Lookup::Expired) => ApiError::Gone.into_response(),
        Ok(Lookup::Missing) => ApiError::NotFound.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The code in `/{code}`, percent-decoded into `buf` only when it contains `%`.
/// `None` when it cannot be a code (too long, bad escape, not UTF-8).
pub fn code_from_path<'a>(path: &'a str, buf: &'a mut [u8; MAX_CODE_LEN]) -> Option<&'a str> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    if !raw.contains('%') {
        return (raw.len() <= MAX_CODE_LEN).then_some(raw);
    }
    let bytes = raw.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < bytes.len() {
        let b = if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            i += 3;
            u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?
        } else {
            i += 1;
            bytes[i - 1]
        };
        *buf.get_mut(n)? = b;
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_from_the_path() {
        let mut buf = [0; MAX_CODE_LEN];
        assert_eq!(code_from_path("/abc", &mut buf), Some("abc"));
        let mut buf = [0; MAX_CODE_LEN];
        assert_eq!(code_from_path("/ab%63", &mut buf), Some("abc"));
        let mut buf = [0; MAX_CODE_LEN];
        assert_eq!(code_from_path("/ab%6", &mut buf), None);
        let mut buf = [0; MAX_CODE_LEN];
        let long = format!("/{}", "a".repeat(MAX_CODE_LEN + 1));
        assert_eq!(code_from_path(&long, &mut buf), None);
    }
}
