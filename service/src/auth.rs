//! API keys: `Authorization: Bearer <key>`, compared in constant time against every key.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::app::AppState;
use crate::config::ApiKey;
use crate::error::{ApiError, rate_limit_headers};

/// Who is calling: the key's name (the owner of the links it creates) and whether it is admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    pub admin: bool,
    /// Position of the key in the configuration (the rate limiter's key).
    pub key_index: usize,
}

/// The configured keys, ready for constant-time lookup.
pub struct ApiKeys {
    keys: Vec<(Box<[u8]>, Caller)>,
}

impl ApiKeys {
    pub fn new(keys: &[ApiKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    (
                        k.key.expose().as_bytes().into(),
                        Caller {
                            name: Arc::from(k.name.as_str()),
                            admin: k.admin,
                            key_index: i,
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The caller whose key is `presented`. Every configured key is compared, each in time that
    /// depends only on its own length, so neither the position of a match nor how many leading
    /// bytes matched shows in the timing.
    pub fn lookup(&self, presented: &[u8]) -> Option<&Caller> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, (key, _)) in self.keys.iter().enumerate() {
            let eq = ct_eq_fixed_work(key, presented);
            index = u64::conditional_select(&index, &(i as u64), eq);
            found |= eq;
        }
        bool::from(found).then(|| &self.keys[index as usize].1)
    }

    /// The caller of a request, from its `Authorization: Bearer` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<&Caller> {
        bearer_token(headers.get(AUTHORIZATION)?).and_then(|token| self.lookup(token))
    }
}

/// Equal length and content; the work done depends on `secret.len()` only.
pub(crate) fn ct_eq_fixed_work(secret: &[u8], presented: &[u8]) -> subtle::Choice {
    let mut eq = (secret.len() as u64).ct_eq(&(presented.len() as u64));
    for (i, s) in secret.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        eq &= s.ct_eq(&p);
    }
    eq
}

/// The token of `Bearer <token>` (scheme case-insensitive).
pub(crate) fn bearer_token(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let scheme = bytes.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = bytes[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Middleware on `/v1/*`: authenticates, applies the per-key rate limit, hands the [`Caller`]
/// to handlers, and adds `RateLimit-*` headers to the response.
pub async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(caller) = state.keys.authenticate(req.headers()).cloned() else {
        return ApiError::Unauthorized.into_response();
    };
    let decision = state
        .key_limiter
        .as_ref()
        .map(|limiter| limiter.check_now(&caller.key_index));
    if let Some(d) = &decision
        && !d.is_allowed()
    {
        if let Some(route) = req.extensions().get::<MatchedPath>() {
            state.metrics.rate_limited(route.as_str());
        }
        return ApiError::RateLimited(*d).into_response();
    }
    req.extensions_mut().insert(caller);
    let mut response = next.run(req).await;
    if let Some(d) = &decision {
        rate_limit_headers(response.headers_mut(), d);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn keys() -> ApiKeys {
        ApiKeys::new(&[
            ApiKey {
                name: "alice".into(),
                key: Secret::new("alice-key-123".into()),
                admin: false,
            },
            ApiKey {
                name: "root".into(),
                key: Secret::new("root-key-4567".into()),
                admin: true,
            },
        ])
    }

    #[test]
    fn finds_the_matching_key() {
        let k = keys();
        assert_eq!(&*k.lookup(b"alice-key-123").unwrap().name, "alice");
        let root = k.lookup(b"root-key-4567").unwrap();
        assert!(root.admin);
        assert_eq!(root.key_index, 1);
        for wrong in [
            &b"alice-key-12"[..],
            b"alice-key-1234",
            b"",
            b"root-key-4566",
        ] {
            assert!(k.lookup(wrong).is_none());
        }
    }

    #[test]
    fn parses_bearer_headers() {
        let k = keys();
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer alice-key-123"),
        );
        assert!(k.authenticate(&h).is_some());
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bearer   root-key-4567 "),
        );
        assert!(k.authenticate(&h).unwrap().admin);
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic alice-key-123"),
        );
        assert!(k.authenticate(&h).is_none());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert!(k.authenticate(&h).is_none());
    }
}
