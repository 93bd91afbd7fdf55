//! `/v1/links`: create, read (with clicks) and delete short links.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::{ShortCode, TargetUrl};
use crate::encode::json_response;
use crate::error::{ApiError, ErrorBody, Result};
use crate::routes::JsonBody;
use crate::store::{LinkInfo, NewLink};

/// Longest accepted `ttl_seconds` (100 years).
pub const MAX_TTL_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// `POST /v1/links` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateLink {
    /// Target: an absolute http(s) URL of at most 2048 bytes.
    #[schema(example = "https://example.com/a/long/path")]
    pub url: String,
    /// Custom alias, `[A-Za-z0-9_-]{1,64}`; a random base62 code when absent.
    #[schema(example = "my-alias")]
    pub code: Option<String>,
    /// Lifetime in seconds; the link never expires when absent.
    #[schema(minimum = 1, example = 86400)]
    pub ttl_seconds: Option<u64>,
}

/// `201` body of `POST /v1/links`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkCreated {
    pub code: String,
    pub url: String,
    /// The public short link.
    #[schema(example = "http://127.0.0.1:8080/my-alias")]
    pub short_url: String,
    /// RFC 3339.
    #[schema(example = "2025-01-01T12:00:00Z")]
    pub created_at: String,
    /// RFC 3339, or null for a link that never expires.
    pub expires_at: Option<String>,
}

/// `200` body of `GET /v1/links/{code}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkStats {
    pub code: String,
    pub url: String,
    /// Redirects served, including ones not yet flushed to disk.
    pub clicks: u64,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// Creates a link; answers only once it is durable.
#[utoipa::path(post, path = "/v1/links", tag = "links", request_body = CreateLink,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created (durable)", body = LinkCreated,
            headers(("Location" = String, description = "The link's resource, /v1/links/{code}"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 409, description = "The custom code is taken", body = ErrorBody),
        (status = 413, description = "Body larger than 16 KiB", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid URL, code or ttl_seconds", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateLink>,
) -> Result<Response> {
    let url = TargetUrl::parse(&body.url)?;
    let code = body.code.as_deref().map(ShortCode::parse).transpose()?;
    let ttl_seconds = match body.ttl_seconds {
        Some(0) => {
            return Err(ApiError::InvalidTtl(
                "ttl_seconds must be at least 1".into(),
            ));
        }
        Some(t) if t > MAX_TTL_SECONDS => {
            return Err(ApiError::InvalidTtl(format!(
                "ttl_seconds must be at most {MAX_TTL_SECONDS} (100 years)"
            )));
        }
        other => other,
    };
    let link = state
        .store
        .create(NewLink {
            url,
            code,
            owner: caller.name,
            ttl_seconds,
        })
        .await?;
    let code = link.code.as_str();
    let created = LinkCreated {
        code: code.to_string(),
        short_url: format!("{}/{code}", state.public_url),
        created_at: rfc3339(link.created_at)?,
        expires_at: link.expires_at.map(rfc3339).transpose()?,
        url: link.url.clone(),
    };
    let mut response = json_response(StatusCode::CREATED, &created);
    if let Ok(location) = HeaderValue::try_from(format!("/v1/links/{code}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// A link and its click count.
#[utoipa::path(get, path = "/v1/links/{code}", tag = "links",
    params(("code" = String, Path, description = "Short code")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The link", body = LinkStats),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "Unknown code", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    _caller: Caller,
    code: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let (_, link) = find(&state, code).await?;
    Ok(json_response(StatusCode::OK, &stats_body(&link)?))
}

/// The link named by the path; a path that cannot hold a code is a 404 like an unknown code.
async fn find(
    state: &AppState,
    code: std::result::Result<Path<String>, PathRejection>,
) -> Result<(String, LinkInfo)> {
    let Path(code) = code.map_err(|_| ApiError::NotFound)?;
    let link = state
        .store
        .link_info(&code)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((code, link))
}

fn stats_body(link: &LinkInfo) -> Result<LinkStats> {
    Ok(LinkStats {
        code: link.code.as_str().to_string(),
        url: link.url.clone(),
        clicks: link.clicks,
        created_at: rfc3339(link.created_at)?,
        expires_at: link.expires_at.map(rfc3339).transpose()?,
    })
}

/// Deletes a link: its owner or an admin key.
#[utoipa::path(delete, path = "/v1/links/{code}", tag = "links",
    params(("code" = String, Path, description = "Short code")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Not the owner and not an admin key", body = ErrorBody),
        (status = 404, description = "Unknown code", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    code: std::result::Result<Path<String>, PathRejection>,
) -> Result<StatusCode> {
    let (code, link) = find(&state, code).await?;
    if !caller.admin && link.owner != caller.name {
        return Err(ApiError::Forbidden);
    }
    state.store.delete(&code).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(unix: i64) -> Result<String> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| ApiError::Internal(format!("timestamp {unix} out of range")))
}
