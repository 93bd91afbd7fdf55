//! The HTTP error type: every 4xx/5xx leaves as `{"error": "<kind>", "message": "..."}`.

use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::DomainError;
use crate::encode::json_response;
use crate::ratelimit::Decision;
use crate::store::StoreError;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// Machine-readable kind, e.g. `not_found`, `invalid_url`, `rate_limited`.
    #[schema(example = "not_found")]
    pub error: &'a str,
    /// Human-readable explanation.
    pub message: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Body is not valid JSON (or could not be read).
    #[error("{0}")]
    InvalidJson(String),
    /// Valid JSON of the wrong shape (missing field, wrong type).
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidUrl(String),
    #[error("{0}")]
    InvalidCode(String),
    #[error("{0}")]
    InvalidTtl(String),
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("only the owner of a link or an admin key may do this")]
    Forbidden,
    #[error("no such link")]
    NotFound,
    #[error("no route for this path")]
    NoRoute,
    #[error("method not allowed for this path")]
    MethodNotAllowed,
    #[error("the link has expired")]
    Gone,
    #[error("the code is already taken")]
    CodeTaken,
    #[error("rate limit exceeded; retry later")]
    RateLimited(Decision),
    #[error("{0}")]
    Unavailable(&'static str),
    /// Logged with its detail; the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidRequest(_)
            | ApiError::InvalidUrl(_)
            | ApiError::InvalidCode(_)
            | ApiError::InvalidTtl(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Gone => StatusCode::GONE,
            ApiError::CodeTaken => StatusCode::CONFLICT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidUrl(_) => "invalid_url",
            ApiError::InvalidCode(_) => "invalid_code",
            ApiError::InvalidTtl(_) => "invalid_ttl",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound | ApiError::NoRoute => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Gone => "gone",
            ApiError::CodeTaken => "code_taken",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal server error".to_string()
            }
            other => other.to_string(),
        };
        let mut response = error_response(status, self.kind(), &message);
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="linkr""#),
                );
            }
            ApiError::RateLimited(decision) => rate_limit_headers(headers, &decision),
            ApiError::Unavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// A JSON error body with `status`.
pub fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(
        status,
        &ErrorBody {
            error: kind,
            message,
        },
    )
}

/// `RateLimit-Limit/-Remaining/-Reset` (whole seconds), and `Retry-After` on a denial.
pub fn rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit()));
    headers.insert(
        "ratelimit-remaining",
        HeaderValue::from(decision.remaining()),
    );
    headers.insert("ratelimit-reset", HeaderValue::from(decision.reset_secs()));
    if let Some(secs) = decision.retry_after_secs() {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidUrl(m) => ApiError::InvalidUrl(format!("invalid url: {m}")),
            DomainError::InvalidCode(m) => ApiError::InvalidCode(format!("invalid code: {m}")),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::CodeTaken => ApiError::CodeTaken,
            StoreError::NotFound => ApiError::NotFound,
            StoreError::NotOwner => ApiError::Forbidden,
            StoreError::Closed => ApiError::Unavailable("the store is closed"),
            StoreError::Unavailable(detail) => {
                // Debug: during an outage every request would log it (readiness warns).
                tracing::debug!(error = %detail, "database unavailable");
                ApiError::Unavailable("the database is not available; retry later")
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_do_not_leak() {
        let response = ApiError::Internal("disk on fire at /var/lib/secret".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(
            body,
            r#"{"error":"internal","message":"internal server error"}"#
        );
    }
}
