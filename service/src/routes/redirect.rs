//! `GET /{code}`: the hot path. No JSON, no allocation of ours, no per-request formatting: the
//! `Location` header is the `Bytes` the store keeps for the link.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::app::AppState;
use crate::domain::code::MAX_CODE_LEN;
use crate::error::{ApiError, ErrorBody};
use crate::store::Lookup;

/// Redirects to the link's target and counts a click.
#[utoipa::path(get, path = "/{code}", tag = "links",
    params(("code" = String, Path, description = "Short code")),
    responses(
        (status = 302, description = "Redirect to the target URL",
            headers(("Location" = String, description = "The target URL"))),
        (status = 404, description = "Unknown code", body = ErrorBody),
        (status = 410, description = "The link has expired", body = ErrorBody),
        (status = 429, description = "Rate limit for this client IP exceeded", body = ErrorBody)))]
pub async fn redirect(State(state): State<AppState>, req: Request) -> Response {
    if let Some(limiter) = &state.ip_limiter
        && let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>()
    {
        let decision = limiter.check_now(&peer.ip());
        if !decision.is_allowed() {
            state.metrics.rate_limited("/{code}");
            return ApiError::RateLimited(decision).into_response();
        }
    }
    let mut buf = [0u8; MAX_CODE_LEN];
    let Some(code) = code_from_path(req.uri().path(), &mut buf) else {
        return ApiError::NotFound.into_response();
    };
    match state.store.resolve(code) {
        Lookup::Found(location) => found(code, location),
        Lookup::Expired => ApiError::Gone.into_response(),
        Lookup::Missing if state.store.is_remote() => resolve_remote(&state, code).await,
        Lookup::Missing => ApiError::NotFound.into_response(),
    }
}

/// A 302 to the stored location, shared as the header's bytes.
// Forced inline: as a call it cost the redirect 21 instructions (`scripts/bench.sh gate`).
#[inline(always)]
fn found(code: &str, location: Bytes) -> Response {
    match HeaderValue::from_maybe_shared(location) {
        Ok(location) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::FOUND;
            response.headers_mut().insert(LOCATION, location);
            response
        }
        Err(_) => ApiError::Internal(format!("stored location of {code:?} is not a header value"))
            .into_response(),
    }
}

/// The miss path of the scale-out store: Redis, then Postgres (not the hot path).
async fn resolve_remote(state: &AppState, code: &str) -> Response {
    match state.store.resolve_remote(code).await {
        Ok(Lookup::Found(location)) => found(code, location),
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
